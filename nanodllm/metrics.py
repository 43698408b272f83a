"""Metrics of "does the model know where to stop?": pure functions on arrays, used by eval_eos.py and the samplers.

Three groups, in the order eval_eos.py reports them:

  First-step EOS   Before any token is written, a masked-diffusion model already holds a belief about where its
                   answer ends: one forward pass over prompt + an all-mask canvas gives P(EOS) at every canvas
                   position. The DiffuGPT student project scored that belief (mean P(EOS), top-1 accuracy, MRR);
                   dLLM-Var's claim, that block decoding can stop by itself, needs it to be right.
  Generation       What the samplers actually produce: how often they stop before the cap, and how the lengths
                   they choose compare with the reference lengths (per sample and as distributions), plus a
                   degeneration check (repeated n-grams).
  Quality          Generative perplexity: how likely a judge (a causal LM) finds the generated responses.

Conventions: a "canvas position" j is the j-th token after the prompt, so a response of n tokens has its EOS at
position n; "length" always means response tokens without the EOS.
"""

import math
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F

# generative_perplexity scores this many positions at a time (their float logits: 8192 x 50k x 4 bytes, 1.6 GB)
CE_ROWS = 8192

__all__ = ["predicted_eos_position", "first_true", "true_position_rank", "eos_position_metrics", "ended_with_eos",
           "termination_rate", "response_length", "mean_absolute_error", "mean_relative_error", "pearson",
           "wasserstein_1d", "length_metrics", "accuracy", "repetition_rate", "generative_perplexity",
           "judge_perplexity"]


def _numpy(x) -> np.ndarray:
    """A numpy view of an array-like (a CPU torch tensor included)."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _mean(a) -> float:
    """The mean as a Python float; nan for no samples (numpy would warn and return nan)."""
    return float(np.mean(a)) if len(a) else float("nan")


# -----------------------------------------------------------------------------
# First-step EOS prediction

def predicted_eos_position(eos_score, eos_is_top1):
    """Where the model puts EOS after one pass, per row: the first position whose top token is EOS, else the
    position where EOS is most likely. eos_score (N, L): P(EOS) or any increasing function of it; eos_is_top1
    (N, L) bool. Tensors in, a (N,) tensor out; arrays in, an array out. The length-bound sampler cuts its canvas
    by it, and the first-step EOS test scores it.

    Why the first EOS-top-1: a model trained on [text + EOS + EOS...] (LLaDA's SFT) puts P(EOS) near 1 at every
    tail position, so the most likely position lands anywhere in the tail; the first EOS-top-1 is the boundary
    itself. A model trained with a single EOS (dLLM-Var) spreads P(EOS) over the plausible ends and may never
    make it the top token: then its most likely end is its guess."""
    arrays = not isinstance(eos_score, torch.Tensor)
    score, top1 = torch.as_tensor(eos_score), torch.as_tensor(eos_is_top1).bool()  # arrays become CPU tensors
    guess = torch.where(top1.any(dim=-1), first_true(top1), score.argmax(dim=-1))
    return guess.numpy() if arrays else guess


def first_true(flags):
    """(N,) the first position of each row of flags (N, L) that is True; L where none is."""
    n = flags.shape[-1]
    return torch.where(flags, torch.arange(n, device=flags.device), n).min(dim=-1).values


def true_position_rank(eos_prob, true_len) -> np.ndarray:
    """(N,) rank of the true EOS position when the positions of a row are sorted by P(EOS), 1 = the most likely.
    Ties are counted in the model's favour (1 + the number of positions with a strictly higher P(EOS))."""
    eos_prob, true_len = _numpy(eos_prob), _numpy(true_len).astype(np.int64)
    at_true = eos_prob[np.arange(len(true_len)), true_len]
    return 1 + (eos_prob > at_true[:, None]).sum(axis=1)


def eos_position_metrics(eos_prob, eos_is_argmax, true_len, k: int = 2) -> dict:
    """How well one forward pass places EOS, for N samples on a canvas of L positions.

    eos_prob (N, L): P(EOS) at each canvas position; eos_is_argmax (N, L): EOS is the argmax token there;
    true_len (N,): the response length, i.e. the true EOS position (must be < L: the canvas must hold it).
    Returns n; exact_acc and acc_within_k (|predicted - true| <= k), with predicted_eos_position's rule; mae of
    that position; p_eos_true, the mean P(EOS) at the true position; mrr, the mean of 1 / true_position_rank.
    """
    eos_prob, true_len = _numpy(eos_prob).astype(np.float64), _numpy(true_len).astype(np.int64)
    if eos_prob.ndim != 2 or len(true_len) != len(eos_prob):
        raise ValueError(f"eos_prob must be (N, L) and true_len (N,), got {eos_prob.shape} and {true_len.shape}")
    if len(true_len) and not (0 <= true_len.min() and true_len.max() < eos_prob.shape[1]):
        raise ValueError(f"true EOS positions must lie on the canvas [0, {eos_prob.shape[1]}), got "
                         f"{true_len.min()}..{true_len.max()}")
    error = np.abs(predicted_eos_position(eos_prob, eos_is_argmax) - true_len)
    return dict(n=len(true_len), k=k, exact_acc=_mean(error == 0), acc_within_k=_mean(error <= k),
                mae=_mean(error), p_eos_true=_mean(eos_prob[np.arange(len(true_len)), true_len]),
                mrr=_mean(1.0 / true_position_rank(eos_prob, true_len)))


# -----------------------------------------------------------------------------
# Generation: stopping and lengths

def ended_with_eos(completion, eos_id: int) -> bool:
    """A completion terminated: it ends with EOS, so the sampler stopped before the length cap. (Samplers cut a
    completion after its first EOS, so a completion holds an EOS if and only if it ends with one.)"""
    return bool(completion) and completion[-1] == eos_id


def termination_rate(completions, eos_id: int) -> float:
    """Fraction of completions that ended with EOS."""
    return accuracy([ended_with_eos(c, eos_id) for c in completions])


def response_length(completion, eos_id: int) -> int:
    """Tokens of a completion without its final EOS: the length to compare with a reference response."""
    return len(completion) - (1 if len(completion) and completion[-1] == eos_id else 0)


def mean_absolute_error(predicted, reference) -> float:
    predicted, reference = _numpy(predicted).astype(np.float64), _numpy(reference).astype(np.float64)
    return _mean(np.abs(predicted - reference))


def mean_relative_error(predicted, reference) -> float:
    """mean |predicted - reference| / reference; a reference of 0 counts as 1, so an empty reference answered
    with n tokens is off by n."""
    predicted, reference = _numpy(predicted).astype(np.float64), _numpy(reference).astype(np.float64)
    return _mean(np.abs(predicted - reference) / np.maximum(reference, 1.0))


def pearson(a, b) -> float:
    """Pearson correlation of two equal-length samples; nan when either is constant (it is undefined)."""
    a, b = _numpy(a).astype(np.float64), _numpy(b).astype(np.float64)
    if len(a) < 2:
        return float("nan")
    da, db = a - a.mean(), b - b.mean()
    denom = math.sqrt((da * da).sum() * (db * db).sum())
    return float((da * db).sum() / denom) if denom > 0 else float("nan")


def wasserstein_1d(a, b) -> float:
    """Earth mover's distance between the empirical distributions of two samples (any sizes).

    In one dimension it is the area between the two CDFs: integral |F_a(x) - F_b(x)| dx. Both CDFs are step
    functions that only change at the pooled sample values, so the integral is a sum over the gaps between
    consecutive pooled values. It is in the samples' unit (tokens): shifting every length by c costs exactly c,
    and unlike comparing means it sees a model that gets the mean right with the wrong spread.
    """
    a, b = np.sort(_numpy(a).astype(np.float64)), np.sort(_numpy(b).astype(np.float64))
    if not len(a) or not len(b):
        return float("nan")
    pooled = np.sort(np.concatenate([a, b]))
    gaps = np.diff(pooled)
    cdf_a = np.searchsorted(a, pooled[:-1], side="right") / len(a)
    cdf_b = np.searchsorted(b, pooled[:-1], side="right") / len(b)
    return float((np.abs(cdf_a - cdf_b) * gaps).sum())


def length_metrics(generated, reference) -> dict:
    """Generated vs reference response lengths of the same samples: per sample (mae, rel_error, pearson) and as
    distributions (wasserstein), with both means."""
    generated, reference = _numpy(generated), _numpy(reference)
    return dict(mean_generated=_mean(generated), mean_reference=_mean(reference),
                mae=mean_absolute_error(generated, reference), rel_error=mean_relative_error(generated, reference),
                pearson=pearson(generated, reference), wasserstein=wasserstein_1d(generated, reference))


def eos_block_slots(offsets, lengths, finished, block_size: int) -> dict:
    """Where in its decoding block each finished answer's EOS fell: slot (offset + length) mod block_size, where
    offset is where the prompt ends inside its block (sampler.block_offset) and length the answer's tokens before
    the EOS. A model that learned "EOS at the end of what I can see" puts it in the block's last slot whatever the
    answer (dllm_var with sample attention: 80% of its length-suite answers); one that learned it from the content
    puts it where the answer's length falls. Returns the histogram over the block's slots and the last slot's share
    (None with no finished answer)."""
    slots = [(o + n) % block_size for o, n, done in zip(offsets, lengths, finished) if done]
    histogram = np.bincount(np.array(slots, dtype=np.int64), minlength=block_size)
    return dict(histogram=histogram.tolist(), last_slot=float(histogram[-1] / len(slots)) if slots else None)


def accuracy(flags) -> float:
    """Fraction of True among per-sample booleans (exact match, exact length, ...); nan for no samples."""
    return _mean(_numpy(flags).astype(bool))


def repetition_rate(sequences, n: int = 4) -> float:
    """Mean over sequences of the fraction of their n-grams that repeat an earlier n-gram of the same sequence:
    1 - distinct / total. 0 for text that never repeats itself, near 1 for a loop. Sequences shorter than n
    have no n-gram and are left out; nan if none is left."""
    rates = []
    for seq in sequences:
        seq = [int(t) for t in seq]
        grams = [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]
        if grams:
            rates.append(1.0 - len(set(grams)) / len(grams))
    return _mean(rates)


# -----------------------------------------------------------------------------
# Quality: generative perplexity under a judge

@torch.no_grad()
def generative_perplexity(judge, prompts, responses, batch_size: int = 16, autocast_ctx=None) -> dict:
    """How likely a causal judge finds the responses given their prompts: exp(mean NLL per response token).

    prompts, responses: lists of token-id lists (a prompt needs at least one token: the first response token is
    predicted from the last prompt token). Each batch is one forward pass over the (prompt + response) rows,
    right-padded: under causal attention a real token never sees the padding that follows it, so no attention
    mask is needed, and only positions that predict a response token are scored (logits are computed only
    there). A row longer than the judge's context keeps its first max_seq_len tokens; the dropped response
    tokens are counted in `truncated`. autocast_ctx: e.g. nanodllm.system.autocast(device, dtype).
    Returns ppl, nll (nats per token), tokens (scored), truncated, and per row row_nll (nats, summed) and
    row_tokens, for intervals over the prompts (stats.perplexity_ratio_with_interval).
    """
    cfg = judge.config
    if cfg.attention != "causal":
        raise ValueError(f"the judge must be a causal (autoregressive) model, this one is {cfg.attention!r}")
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    device = next(judge.parameters()).device
    rows, truncated = [], 0
    for p, r in zip(prompts, responses):
        if not p and r:
            raise ValueError("generative_perplexity: a prompt needs at least one token to condition on")
        seq = [int(t) for t in p] + [int(t) for t in r]
        truncated += max(0, len(seq) - cfg.max_seq_len)
        rows.append((seq[:cfg.max_seq_len], len(p)))
    row_nll, row_tokens = [], []
    for b in range(0, len(rows), batch_size):
        chunk = rows[b:b + batch_size]
        T = max(len(seq) for seq, _ in chunk)
        idx = torch.full((len(chunk), T), cfg.pad_id, dtype=torch.long)
        scored = torch.zeros(len(chunk), T, dtype=torch.bool)  # True at positions that predict a response token
        for i, (seq, p) in enumerate(chunk):
            idx[i, :len(seq)] = torch.tensor(seq)
            if p > 0:
                scored[i, p - 1:len(seq) - 1] = True
        counts = scored[:, :-1].sum(dim=1).tolist()  # (B,) response tokens scored per row
        row_tokens += counts
        if not scored.any():
            row_nll += [0.0] * len(chunk)
            continue
        idx, scored = idx.to(device), scored.to(device)
        targets = idx[:, 1:][scored[:, :-1]]  # the token after each scored position
        with autocast_ctx or nullcontext():
            logits = judge(idx, logits_at=scored)
        # in float, a slice at a time: 100 answers of 512 tokens are 51k x 50k logits, 10 GB as float32 alone
        token_nll = torch.cat([F.cross_entropy(part.float(), target, reduction="none")
                               for part, target in zip(logits.split(CE_ROWS), targets.split(CE_ROWS))])
        per_position = torch.zeros(scored[:, :-1].shape, device=device)  # (B, T-1) each scored position's NLL
        per_position[scored[:, :-1]] = token_nll
        row_nll += per_position.sum(dim=1).tolist()  # one copy to the host per batch, not one per row
    nll, tokens = sum(row_nll), sum(row_tokens)
    mean_nll = nll / tokens if tokens else float("nan")
    return dict(ppl=math.exp(min(mean_nll, 50.0)) if tokens else float("nan"), nll=mean_nll, tokens=tokens,
                truncated=truncated, row_nll=row_nll, row_tokens=row_tokens)


def judge_perplexity(judge, prompts, responses, batch_size: int = 16, autocast_ctx=None) -> dict:
    """generative_perplexity with each prompt preceded by EOS: in its packed training stream the judge saw every
    document start right after the previous one's EOS, so that is the context it knows a prompt in."""
    eos = judge.config.eos_id
    return generative_perplexity(judge, [[eos] + list(p) for p in prompts], responses, batch_size, autocast_ctx)
