"""Samplers: how a masked-diffusion model (and, for comparison, an autoregressive one) writes text.

A masked-diffusion LM does not write left to right. It is handed a canvas of [MASK] tokens after the prompt and
fills it in over several forward passes ("steps"), committing some positions each step. The samplers here differ
in which positions they commit and in how much work each step repeats:

  block_diffusion_generate  dLLM-Var ("Let [EOS] Lead the Way"): blocks of masks after the prompt, decoded left
                            to right; inside a block every position the model is sure of (probability > a
                            threshold) is committed each step; a KV cache keeps the prompt's and the finished
                            blocks' keys/values; a row stops as soon as it has committed its EOS.
  llada_generate            LLaDA's vanilla sampler (ML-GSAI/LLaDA generate.py): a fixed canvas of gen_length
                            masks, a fixed number of steps, no cache, no early stop. The slow baseline.
  length_bound_generate     the DiffuGPT student project's idea: one pass reads where the model puts EOS, the
                            canvas is cut to the next power of two above it, then decoded as LLaDA does.
  autoregressive_generate   the causal baseline: one token per forward pass with a KV cache.

All of them take prompts of different lengths in one batch: prompts are left-padded with the pad id, padding is
hidden from attention with a key-padding mask, and each row gets its own RoPE positions, starting at 0 at its
first real token, so a row's tokens are computed exactly as if it were alone.

All of them return (completions, GenerationStats): completions[i] is row i's generated tokens up to and including
its first EOS (nothing after it, never the prompt), and the stats count forward passes, tokens and time.

Read it top to bottom: the stats, the shared helpers (padding, sampling a token from logits, LLaDA's step
schedule), then one function per sampler.
"""

import functools
import itertools
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from nanodllm.cuda_graphs import GraphedForward
from nanodllm.model import KVCache, block_causal_mask

__all__ = ["GenerationStats", "block_diffusion_generate", "llada_generate", "length_bound_generate",
           "autoregressive_generate", "sample_tokens", "num_transfer_tokens", "left_pad", "trim_at_eos",
           "next_power_of_two"]


# -----------------------------------------------------------------------------
# Generation statistics

@dataclass
class GenerationStats:
    """What one call of a sampler cost and produced.

    nfe counts forward passes of the model, whatever the batch size. row_nfe counts them per row (a pass over 5
    rows counts 5), so nfe_per_token = row_nfe / tokens is "passes per generated token" for one sequence: 1.0
    for autoregressive decoding, gen_length / answer length for LLaDA, well under 1 when dLLM-Var commits many
    tokens per pass. It is comparable across batch sizes, which nfe / tokens would not be.
    tokens[i] is how many tokens row i generated up to and including its EOS: positions after EOS are dropped
    output, not generated text, and counting them (as dLLM-Var's own speed metric does) inflates tokens/s.
    """

    tokens: list[int] = field(default_factory=list)  # per row: generated tokens, EOS included
    finished: list[bool] = field(default_factory=list)  # per row: the row reached EOS before the length cap
    nfe: int = 0  # forward passes
    row_nfe: int = 0  # forward passes summed over the rows they carried
    seconds: float = 0.0  # wall time, GPU work included (synchronised on CUDA)
    info: dict = field(default_factory=dict)  # sampler-specific facts (e.g. length_bound's canvas lengths)

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens)

    @property
    def tokens_per_s(self) -> float:
        return self.total_tokens / self.seconds if self.seconds > 0 else float("nan")

    @property
    def nfe_per_token(self) -> float:
        return self.row_nfe / self.total_tokens if self.total_tokens else float("nan")

    @property
    def mean_length(self) -> float:
        return self.total_tokens / len(self.tokens) if self.tokens else float("nan")

    @property
    def termination_rate(self) -> float:
        return sum(self.finished) / len(self.finished) if self.finished else float("nan")

    @classmethod
    def combine(cls, parts) -> "GenerationStats":
        """Stats of several calls (e.g. the batches of one run) added together."""
        out = cls()
        for s in parts:
            out.tokens += s.tokens
            out.finished += s.finished
            out.nfe += s.nfe
            out.row_nfe += s.row_nfe
            out.seconds += s.seconds
        return out

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(total_tokens=self.total_tokens, tokens_per_s=self.tokens_per_s, nfe_per_token=self.nfe_per_token,
                 mean_length=self.mean_length, termination_rate=self.termination_rate)
        return d

    def __str__(self) -> str:
        return (f"{len(self.tokens)} rows, {self.total_tokens} tokens (mean {self.mean_length:.1f}), "
                f"{self.nfe} forward passes, {self.nfe_per_token:.3f} NFE/token, {self.seconds:.3f} s, "
                f"{self.tokens_per_s:.1f} tokens/s, {self.termination_rate:.0%} ended with EOS")


class _Timer:
    """Wall time of a block of code. CUDA kernels run asynchronously, so without a synchronize at both ends we
    would time how fast Python queues work, not how fast the GPU does it."""

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"
        self.device = device

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize(self.device)
        self.seconds = time.perf_counter() - self.t0


# -----------------------------------------------------------------------------
# Shared helpers

# Attention kernels the samplers allow. Left to itself, SDPA picks cuDNN's attention for bf16 on H100, and cuDNN
# builds an execution plan for every new pair of (query, key) lengths: about 5 ms of CPU time each on the H100
# host we measured. Autoregressive decoding meets a new key length at every token, the block sampler at every
# block, LLaDA's fixed canvas never: left in, it made the AR baseline look 8x slower than it is. Flash,
# memory-efficient and math attention need no plan.
ATTENTION_KERNELS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def _sampling_mode(fn):
    """What every sampler runs under: no autograd (nothing is trained) and ATTENTION_KERNELS."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with torch.no_grad(), sdpa_kernel(ATTENTION_KERNELS):
            return fn(*args, **kwargs)
    return wrapped


def _device(model) -> torch.device:
    return next(model.parameters()).device


def left_pad(prompts, pad_id: int, device):
    """Token-id lists of different lengths -> (idx (B, P) left-padded with pad_id, n_pad (B,), padded: bool).

    Left, not right, padding: every row's generated text then starts at the same column P, so one canvas
    holds the whole batch and blocks line up across rows. A (B, P) tensor is accepted as is (no padding).
    """
    if isinstance(prompts, torch.Tensor):
        if prompts.dim() != 2:
            raise ValueError(f"a prompt tensor must be (batch, length), got shape {tuple(prompts.shape)}")
        prompts = prompts.tolist()
    if not prompts or not all(isinstance(p, (list, tuple)) for p in prompts):
        raise ValueError("prompts must be a non-empty list of token-id lists")
    lengths = [len(p) for p in prompts]
    P = max(lengths)
    rows = [[pad_id] * (P - len(p)) + [int(t) for t in p] for p in prompts]
    idx = torch.tensor(rows, dtype=torch.long, device=device).view(len(rows), P)
    n_pad = torch.tensor([P - n for n in lengths], dtype=torch.long, device=device)
    return idx, n_pad, min(lengths) < P


def _padding(n_pad, total: int, padded: bool):
    """(key_mask (B, total), positions (B, total)), or (None, None) when no row is padded: then the model's
    defaults (all keys real, positions 0..T-1) are exact and attention keeps its fastest kernels."""
    if not padded:
        return None, None
    cols = torch.arange(total, device=n_pad.device)
    key_mask = cols >= n_pad[:, None]  # True = a real token
    positions = (cols - n_pad[:, None]).clamp(min=0)  # 0 at each row's first real token
    return key_mask, positions


def make_canvas(model, prompts, n_new: int, fill_id: int, caller: str):
    """The prompts checked, left-padded and followed by n_new `fill_id` tokens, with the key mask and per-row
    positions that make every row compute as if it were alone -> (x (B, P + n_new), P, key_mask, positions);
    key_mask and positions are None when no row is padded."""
    cfg = model.config
    _check_prompts(prompts, cfg, caller)
    idx, n_pad, padded = left_pad(prompts, cfg.pad_id, _device(model))
    B, P = idx.shape
    _check_length(P + n_new, cfg, caller)
    x = torch.cat([idx, idx.new_full((B, n_new), fill_id)], dim=1)
    key_mask, positions = _padding(n_pad, P + n_new, padded)
    return x, P, key_mask, positions


def _keep_unfinished(done_rows, rows, x, key_mask, positions, kv, keep_shape=False):
    """Drops finished rows from everything a forward pass reads (canvas, masks, cache), so they stop costing
    compute -> (rows, live, x, key_mask, positions) of the rows still running; rows is [] once none runs, and
    live (B,) bool marks the batch rows still running.

    keep_shape (CUDA graphs, which replay fixed shapes): finished rows stay in the batch and ride along, their
    output already taken; only their entry in `rows` becomes None, and live is False there."""
    if keep_shape:
        rows = [None if done else r for r, done in zip(rows, done_rows)]
        live = torch.tensor([r is not None for r in rows], device=x.device)
        return (rows if any(r is not None for r in rows) else []), live, x, key_mask, positions
    keep = [j for j, done in enumerate(done_rows) if not done]
    rows = [rows[j] for j in keep]
    if rows:
        keep_t = torch.tensor(keep, device=x.device)
        x = x.index_select(0, keep_t)
        key_mask = None if key_mask is None else key_mask.index_select(0, keep_t)
        positions = None if positions is None else positions.index_select(0, keep_t)
        if kv is not None:
            kv.keep_rows(keep_t)
    return rows, torch.ones(len(rows), dtype=torch.bool, device=x.device), x, key_mask, positions


def _window(t, a: int, b: int):
    return None if t is None else t[:, a:b]


def _fixed_shape_pass(x, key_mask, positions, segments, a: int, end: int):
    """Inputs of a pass over columns [a, end) of the canvas x (B, W) whose shapes do not depend on how far
    decoding has got, as a CUDA graph needs (nanodllm/cuda_graphs.py) -> (positions (B, T),
    attn_mask (B, 1, T, W), slots (T,)).

    The keys are the whole cache (W columns); the mask hides the columns not written yet (>= end), keeps key
    padding and block-causal segments as _block_attention does, and lets each token see itself."""
    B, W = x.shape
    cols = torch.arange(W, device=x.device)
    q = cols[a:end]
    mask = (cols < end)[None, :]  # (1, W)
    if segments is not None:
        mask = mask & block_causal_mask(segments[a:end], segments)  # (T, W)
    mask = mask[None, None]  # (1, 1, T or 1, W)
    if key_mask is not None:
        mask = mask & key_mask[:, None, None, :]
    mask = mask | (cols[None, :] == q[:, None])  # (B or 1, 1, T, W)
    pos = _window(positions, a, end) if positions is not None else q.expand(B, -1)
    return pos, mask.expand(B, 1, end - a, W), q


def _check_prompts(prompts, config, sampler: str):
    rows = prompts.tolist() if isinstance(prompts, torch.Tensor) else prompts
    for row in rows:
        for t in row:
            if not 0 <= int(t) < config.vocab_size:
                raise ValueError(f"{sampler}: prompt token {t} is outside the model's vocabulary "
                                 f"[0, {config.vocab_size})")
            if int(t) == config.mask_id:
                raise ValueError(f"{sampler}: a prompt holds the mask id {config.mask_id}; prompts are given, "
                                 "not generated (encode user text with tokenizer.encode, which never makes one)")


def _check_length(total: int, config, sampler: str):
    if total > config.max_seq_len:
        raise ValueError(f"{sampler}: prompt + generation = {total} tokens exceeds the model's max_seq_len "
                         f"{config.max_seq_len}; shorten the prompt or the generation length")


def _check_sampling(temperature, top_k, top_p):
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def _last_columns(a: int, b: int):
    """A `logits_at` index that keeps columns [a, b) of every row. The model does `x[logits_at]`, and a tuple of
    slices is a plain view, where a boolean mask would need a GPU sync (its output size depends on the data).
    Computing the output head only where the sampler reads it matters: it is a small model's largest matmul."""
    return (slice(None), slice(a, b))


def filter_logits(logits, top_k=None, top_p=None):
    """Sets logits outside the top_k tokens, or outside the smallest set whose probability reaches top_p (the
    nucleus), to -inf. The most likely token always survives."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        remove = probs.cumsum(dim=-1) - probs >= top_p  # the mass before this token already reaches top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(remove, float("-inf")))
    return logits


def sample_tokens(logits, temperature=0.0, top_k=None, top_p=None, generator=None):
    """logits (..., V) -> (tokens (...), confidence (...)).

    temperature 0 is greedy. Otherwise the Gumbel-max trick: argmax(logits / T + Gumbel noise) is a sample of
    softmax(logits / T). LLaDA writes it as argmax(exp(logits) / (-log u)^T), the same argmax for the same
    uniform u (take the log and divide by T), and draws u in float64: arXiv:2409.02908 shows that low-precision
    Gumbel noise truncates the distribution's tail, which lowers perplexity but hurts generation quality.

    confidence is the model's own probability of the chosen token, softmax of the raw logits (no temperature,
    no filtering), as LLaDA and Fast-dLLM rank positions; pass float64 logits for a float64 softmax.
    """
    probs = F.softmax(logits if logits.dtype == torch.float64 else logits.float(), dim=-1)
    if temperature == 0:
        confidence, tokens = probs.max(dim=-1)
        return tokens, confidence
    scores = filter_logits(logits.double() / temperature, top_k, top_p)
    u = torch.rand(scores.shape, dtype=torch.float64, device=scores.device, generator=generator)
    tokens = (scores - torch.log(-torch.log(u))).argmax(dim=-1)  # -log(-log u) ~ Gumbel(0, 1)
    return tokens, probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def num_transfer_tokens(mask_count, steps: int):
    """LLaDA's step schedule: how many masked tokens to commit at each of `steps` steps.

    LLaDA's noise schedule is linear in t, and the steps cut [0, 1] into equal intervals, so each step should
    unmask the same expected number of tokens: mask_count // steps each, the remainder one each to the first
    steps. mask_count: an int (-> list of steps ints) or a (B,) tensor (-> (B, steps) int64 tensor).
    """
    if isinstance(mask_count, int):
        base, rem = divmod(mask_count, steps)
        return [base + (i < rem) for i in range(steps)]
    mask_count = mask_count.long()
    base, rem = mask_count // steps, mask_count % steps
    return base[:, None] + (torch.arange(steps, device=mask_count.device) < rem[:, None]).long()


def _top_k_mask(confidence, k):
    """(B, n) bool, True at the k most confident positions of each row; k is an int or a (B,) tensor. Ranks
    instead of torch.topk, because topk needs one k for the whole batch and a per-row loop would sync."""
    order = confidence.argsort(dim=-1, descending=True, stable=True)
    ranks = torch.empty_like(order).scatter_(-1, order, torch.arange(order.shape[-1], device=order.device)
                                            .expand_as(order))
    return ranks < (k[:, None] if isinstance(k, torch.Tensor) else k)


def trim_at_eos(ids: list[int], eos_id: int) -> list[int]:
    """ids up to and including the first EOS (all of them if there is none)."""
    return ids[:ids.index(eos_id) + 1] if eos_id in ids else ids


def _first_true(b):
    """Column of the first True of each row of b (B, n), n where there is none."""
    n = b.shape[-1]
    return torch.where(b, torch.arange(n, device=b.device), n).min(dim=-1).values


def predicted_eos_position(eos_score, eos_is_top1):
    """Where the model puts EOS after one pass, per row: the first position whose top token is EOS, else the
    position where EOS is most likely. eos_score (B, n): P(EOS) or any increasing function of it; eos_is_top1
    (B, n) bool.

    Why the first EOS-top-1: a model trained on [text + EOS + EOS...] (LLaDA's SFT) puts P(EOS) near 1 at every
    tail position, so the most likely position lands anywhere in the tail; the first EOS-top-1 is the boundary
    itself. A model trained with a single EOS (dLLM-Var) spreads P(EOS) over the plausible ends and may never
    make it the top token: then its most likely end is its guess."""
    return torch.where(eos_is_top1.any(dim=-1), _first_true(eos_is_top1), eos_score.argmax(dim=-1))


def next_power_of_two(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


# -----------------------------------------------------------------------------
# dLLM-Var: block diffusion with a KV cache, stopping at EOS

def _block_attention(key_mask, segments, a: int, end: int):
    """The attention mask of queries at columns [a, end) over keys [0, end).

    segments is None unless the model is block_causal: then a query sees keys of its own segment and earlier
    ones, with the prompt as segment 0 and the k-th generated block as segment k + 1. Segments follow the
    sampler's blocks, not the model's training attn_block_size, and are the same whether the keys come from the
    cache or are recomputed, which is what makes cached and uncached decoding give the same tokens.
    """
    if segments is None:
        return _window(key_mask, 0, end)  # (B, end) key padding, or None
    mask = block_causal_mask(segments[a:end], segments[:end])[None, None]  # (1, 1, T, end)
    if key_mask is not None:
        q = torch.arange(a, end, device=segments.device)
        k = torch.arange(end, device=segments.device)
        # each token always sees itself, so a padding query (which sees no real key) stays finite
        mask = (mask & key_mask[:, None, None, :end]) | (k[None, :] == q[:, None])
    return mask


@_sampling_mode
def block_diffusion_generate(model, prompts, *, block_size=64, threshold=0.9, steps_per_block=None,
                             max_new_tokens=1024, temperature=0.0, top_k=None, top_p=None, cache=True,
                             cuda_graphs=False, generator=None, trace=None):
    """dLLM-Var's sampler: decode blocks of block_size masks left to right until each row commits its EOS.

    Inside a block, each step is one forward pass and commits:
      threshold mode (default): every masked position whose confidence exceeds `threshold`, and at least the
        single most confident one per row, so a block never takes more than block_size steps. A model that is
        sure of a whole phrase writes it in one pass: this is where the speed comes from.
      fixed-steps mode (steps_per_block=S): LLaDA's schedule, the block's masks divided evenly over S steps.

    KV cache (cache=True), as dLLM-Var does it:
      - the first pass holds the prompt and the first all-mask block; the prompt's keys/values are committed;
      - steps inside a block feed only that block, attending to the cached prefix;
      - when a block is complete, the next pass holds it together with the next all-mask block: the finished
        block's keys/values are computed there, once, with its final tokens, and committed. No pass is spent on
        the cache alone, and nothing committed is ever recomputed.
    With bidirectional attention this is an approximation (a cached prompt never sees the tokens generated after
    it); with block_causal attention it is exact. A block_causal model (the block_diffusion recipe) is decoded in
    the blocks it was trained on: attn_block_size columns each, counted from the canvas's first column (RoPE only
    sees distances, so where the left padding puts a prompt does not matter), block_size is ignored, and the
    first block is the one that holds the prompt's end, its masks after the prompt's last tokens. cache=False recomputes everything (prompt + finished blocks +
    current block) every step: the reference the cache is tested against.

    cuda_graphs (needs the cache): every pass after the first has one of two shapes, a block alone or a finished
    block with the next one, so each is recorded once as a CUDA graph and replayed (nanodllm/cuda_graphs.py):
    a small model then stops waiting on Python to launch its kernels. Finished rows stay in the batch (a
    replay cannot change its shape); they ride along, uncounted. On the CPU the same fixed-shape passes run
    eagerly: same tokens, no speed-up.

    Stopping: a row is finished once its first EOS is committed and every position before it is committed too
    (nothing earlier can still turn into an earlier EOS). That can happen mid-block; the row's output is cut
    after the EOS, the row is dropped from the batch and from the cache, and it costs nothing more. Rows of a
    batch still move from block to block together (they share the cache length): a row that completes its
    block early idles until the others do. max_new_tokens caps every row; a row that hits it is not finished.

    prompts: list of token-id lists (any lengths) or a (B, P) tensor. trace: called after every step with a
    list, per row, of its generated tokens so far (mask id where still masked; final output once finished).
    Returns (completions, stats).
    """
    cfg = model.config
    if block_size < 1 or max_new_tokens < 1:
        raise ValueError(f"block_size and max_new_tokens must be >= 1, got {block_size} and {max_new_tokens}")
    if steps_per_block is None and not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if steps_per_block is not None and steps_per_block < 1:
        raise ValueError(f"steps_per_block must be >= 1, got {steps_per_block}")
    if cuda_graphs and not cache:
        raise ValueError("cuda_graphs needs cache=True: without the cache every pass is longer than the last")
    _check_sampling(temperature, top_k, top_p)
    device = _device(model)
    x, P, key_mask, positions = make_canvas(model, prompts, max_new_tokens, cfg.mask_id,
                                            "block_diffusion_generate")
    B, total = x.shape
    first, segments = P, None
    if cfg.attention == "block_causal":  # decode in the model's own blocks, on the columns it was trained on
        block_size = cfg.attn_block_size
        segments = torch.arange(total, device=device) // block_size  # (total,) the block of each column
        first = P - P % block_size  # the block that holds the prompt's end comes first: its masks follow it
    kv = KVCache.for_model(model, B, total) if cache else None
    graphed = GraphedForward(model, kv) if cuda_graphs else None

    rows = list(range(B))  # the original row of each batch row; None once it finished (cuda_graphs only)
    live = torch.ones(B, dtype=torch.bool, device=device)  # the batch rows still running
    out, finished = [None] * B, [False] * B
    canvas = [[] for _ in range(B)]
    nfe = row_nfe = 0
    with _Timer(device) as timer:
        for start in range(first, total, block_size):
            if not rows:
                break
            end = min(start + block_size, total)  # the last block is shorter if the cap says so
            n = end - start
            schedule = num_transfer_tokens(n, steps_per_block) if steps_per_block else None
            for step in itertools.count():
                a = kv.length if kv is not None else 0  # first column fed: everything not cached
                at = _last_columns(end - n - a, end - a)  # the output head on this block only
                if graphed is None or a == 0:  # the first pass (prompt + block) is run eagerly: one of a kind
                    logits = model(x[:, a:end], positions=_window(positions, a, end),
                                   attn_mask=_block_attention(key_mask, segments, a, end), kv_cache=kv,
                                   logits_at=at)  # (B, n, V)
                else:
                    pos, mask, slots = _fixed_shape_pass(x, key_mask, positions, segments, a, end)
                    logits = graphed(x[:, a:end], positions=pos, attn_mask=mask, slots=slots, logits_at=at)
                nfe, row_nfe = nfe + 1, row_nfe + sum(r is not None for r in rows)
                if kv is not None:
                    kv.commit(start - kv.length)  # everything before this block: prompt, or the finished block

                block = x[:, start:end]
                masked = block == cfg.mask_id
                x0, confidence = sample_tokens(logits, temperature, top_k, top_p, generator)
                confidence = confidence.masked_fill(~masked, float("-inf"))
                if schedule is None:
                    commit = masked & (confidence > threshold)
                    commit |= F.one_hot(confidence.argmax(dim=-1), n).bool() & masked  # at least one per row
                else:
                    commit = _top_k_mask(confidence, schedule[step]) & masked
                block = torch.where(commit, x0, block)
                x[:, start:end] = block

                # Stop check. Earlier blocks are complete and EOS-free (else the row would have stopped there),
                # so looking at this block is enough.
                masked = block == cfg.mask_id
                eos = (block == cfg.eos_id) & (torch.arange(start, end, device=device) >= P)  # not a prompt's
                by_eos = _first_true(eos) < _first_true(masked)  # an EOS with nothing masked before it
                done = (by_eos | ~masked.any(dim=-1)) if end == total else by_eos  # or the cap is reached
                done &= live
                block_open = (masked.any(dim=-1) & ~done & live).any()
                any_done, block_open = torch.stack([done.any(), block_open]).tolist()  # the step's one sync

                if any_done:
                    done_rows, by_eos = done.tolist(), by_eos.tolist()
                    generated = x[:, P:end].tolist()
                    for j, r in enumerate(rows):
                        if done_rows[j]:
                            out[r], finished[r] = trim_at_eos(generated[j], cfg.eos_id), by_eos[j]
                            canvas[r] = out[r]
                    rows, live, x, key_mask, positions = _keep_unfinished(done_rows, rows, x, key_mask,
                                                                          positions, kv, graphed is not None)
                if trace is not None:
                    generated = x[:, P:end].tolist()
                    for j, r in enumerate(rows):
                        if r is not None:
                            canvas[r] = generated[j]
                    trace(canvas)
                if not rows or not block_open:
                    break
    assert all(o is not None for o in out), "every row ends: by EOS or at max_new_tokens"
    stats = GenerationStats([len(o) for o in out], finished, nfe, row_nfe, timer.seconds)
    return out, stats


# -----------------------------------------------------------------------------
# LLaDA's vanilla sampler: the slow baseline

@_sampling_mode
def llada_generate(model, prompt, *, gen_length=128, steps=128, block_length=128, temperature=0.0,
                   remasking="low_confidence", cuda_graphs=False, generator=None, trace=None):
    """LLaDA's sampler (ML-GSAI/LLaDA generate.py), same semantics, written afresh.

    The canvas is the prompt plus gen_length masks, split into gen_length / block_length blocks decoded left to
    right (semi-autoregressive), steps / num_blocks steps each. Every step is one forward pass over the WHOLE
    canvas (no cache: that is what makes it the slow baseline) and commits k tokens of the current block, k
    from LLaDA's schedule (num_transfer_tokens). Which k: a candidate x0 is drawn at every position (argmax,
    or Gumbel-max in float64 when temperature > 0); with remasking="low_confidence" the masked positions of the
    block are ranked by the float64 softmax probability of x0, with "random" by a uniform random number, and the
    top k are committed. There is no early stop: all gen_length positions are filled, and a model trained on
    [text + EOS + EOS...] fills the tail with EOS. The output is cut after the first EOS for the stats.

    LLaDA computes logits at every position and then sets the confidence of positions beyond the block to -inf;
    the prompt holds no mask (checked) and earlier blocks are complete (each block's schedule sums to its mask
    count), so only the current block is ever eligible, and we compute the output head there only. The tokens
    are the same; the baseline is, if anything, a little faster than LLaDA's own code.

    cuda_graphs: the passes of a block all have the same shapes, so each block's pass is recorded once as a CUDA
    graph and replayed (nanodllm/cuda_graphs.py); that gives the baseline the same launch savings as
    block_diffusion_generate(cuda_graphs=True) when the two are compared.

    prompt: a (B, L) tensor as in LLaDA, or a list of token-id lists (left-padded, with a key-padding mask).
    """
    cfg = model.config
    if remasking not in ("low_confidence", "random"):
        raise ValueError(f"remasking must be 'low_confidence' or 'random', got {remasking!r}")
    if gen_length < 1 or block_length < 1 or steps < 1:
        raise ValueError("gen_length, block_length and steps must be >= 1")
    if gen_length % block_length:
        raise ValueError(f"gen_length ({gen_length}) must be a multiple of block_length ({block_length})")
    num_blocks = gen_length // block_length
    if steps % num_blocks:
        raise ValueError(f"steps ({steps}) must be a multiple of the number of blocks ({num_blocks})")
    steps_per_block = steps // num_blocks
    _check_sampling(temperature, None, None)
    device = _device(model)
    x, P, key_mask, positions = make_canvas(model, prompt, gen_length, cfg.mask_id, "llada_generate")
    B, total = x.shape
    forward = GraphedForward(model) if cuda_graphs else model

    nfe = 0
    with _Timer(device) as timer:
        for b in range(num_blocks):
            s, e = P + b * block_length, P + (b + 1) * block_length
            schedule = num_transfer_tokens((x[:, s:e] == cfg.mask_id).sum(dim=-1), steps_per_block)  # (B, S)
            for i in range(steps_per_block):
                logits = forward(x, positions=positions, attn_mask=key_mask, logits_at=_last_columns(s, e))
                nfe += 1
                block = x[:, s:e]
                masked = block == cfg.mask_id
                x0, p = sample_tokens(logits.double(), temperature, generator=generator)
                if remasking == "random":
                    p = torch.rand(p.shape, dtype=torch.float64, device=device, generator=generator)
                confidence = p.masked_fill(~masked, float("-inf"))
                commit = _top_k_mask(confidence, schedule[:, i]) & masked
                x[:, s:e] = torch.where(commit, x0, block)
                if trace is not None:
                    trace(x[:, P:].tolist())
    out = [trim_at_eos(row, cfg.eos_id) for row in x[:, P:].tolist()]
    finished = [bool(o) and o[-1] == cfg.eos_id for o in out]
    return out, GenerationStats([len(o) for o in out], finished, nfe, nfe * B, timer.seconds)


# -----------------------------------------------------------------------------
# The DiffuGPT project's idea: predict a length bound from the first step, then decode a shorter canvas

@_sampling_mode
def length_bound_generate(model, prompts, *, max_length=1024, steps=None, temperature=0.0,
                          remasking="low_confidence", generator=None, trace=None):
    """One forward pass on prompt + max_length masks reads where the model expects the answer to end; the canvas
    is cut to the next power of two above that, then decoded by llada_generate as one block.

    Where the answer ends: the first position whose argmax is EOS. Why not argmax over positions of P(EOS)? A
    model trained on [text + EOS + EOS...] (LLaDA's SFT, the project's "eoseos") predicts EOS with probability
    near 1 at every position of the tail, so the argmax over positions lands anywhere in it, often far from the
    end of the text; the first EOS-argmax marks the boundary itself. A model trained with a single EOS
    (dLLM-Var) spreads P(EOS) over the possible end positions and may never make EOS the top-1 anywhere: then,
    and only then, we fall back to the most likely end position, argmax over positions of P(EOS).
    Why a power of two: it leaves slack above a prediction that is only an estimate (up to 2x), and it leaves
    few distinct canvas lengths, so rows with the same bound decode together as one batch.

    steps: steps of the decode, None = one token per step (LLaDA's default steps = gen_length); capped at the
    canvas length. stats.info["length_bound"] holds each row's canvas length; nfe includes the extra pass.
    """
    cfg = model.config
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    device = _device(model)
    x, P, key_mask, positions = make_canvas(model, prompts, max_length, cfg.mask_id, "length_bound_generate")
    B, total = x.shape
    prompt_rows = prompts.tolist() if isinstance(prompts, torch.Tensor) else [list(p) for p in prompts]

    with _Timer(device) as timer:
        logits = model(x, positions=positions, attn_mask=key_mask, logits_at=_last_columns(P, total)).float()
        eos_top1 = logits.argmax(dim=-1) == cfg.eos_id  # (B, max_length)
        log_p_eos = logits[..., cfg.eos_id] - logits.logsumexp(dim=-1)
        end = predicted_eos_position(log_p_eos, eos_top1)
        bounds = [min(next_power_of_two(e + 1), max_length) for e in end.tolist()]  # +1: the EOS itself
        del logits, log_p_eos

        out, parts = [None] * B, []
        canvas = [[] for _ in range(B)]
        for bound in sorted(set(bounds)):
            group = [r for r in range(B) if bounds[r] == bound]

            def group_trace(rows_canvas, group=group):
                for r, c in zip(group, rows_canvas):
                    canvas[r] = c
                trace(canvas)

            n_steps = bound if steps is None else min(steps, bound)
            group_out, s = llada_generate(model, [prompt_rows[r] for r in group], gen_length=bound,
                                          steps=n_steps, block_length=bound, temperature=temperature,
                                          remasking=remasking, generator=generator,
                                          trace=None if trace is None else group_trace)
            for r, o in zip(group, group_out):
                out[r] = o
            parts.append(s)
    finished = [bool(o) and o[-1] == cfg.eos_id for o in out]
    nfe = 1 + sum(s.nfe for s in parts)
    row_nfe = B + sum(s.row_nfe for s in parts)
    return out, GenerationStats([len(o) for o in out], finished, nfe, row_nfe, timer.seconds,
                                info={"length_bound": bounds})


# -----------------------------------------------------------------------------
# The autoregressive baseline

@_sampling_mode
def autoregressive_generate(model, prompts, *, max_new_tokens, temperature=0.0, top_k=None, top_p=None,
                            cache=True, cuda_graphs=False, generator=None, trace=None):
    """Ordinary left-to-right decoding of a causal model: one token per forward pass.

    With cache=True (the baseline) the prompt is prefilled once into a preallocated KVCache, then each pass
    feeds only the newest token and commits it. cache=False recomputes the whole sequence every pass (the
    reference the cache is tested against). Rows stop independently at EOS and leave the batch and the cache.
    cuda_graphs (needs the cache): every pass after the prefill has the same shape, one token per row, so it is
    recorded once as a CUDA graph and replayed, as block_diffusion_generate does; finished rows ride along.
    """
    cfg = model.config
    if cfg.attention != "causal":
        raise ValueError(f"autoregressive_generate needs a causal model, this one is {cfg.attention!r}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    _check_sampling(temperature, top_k, top_p)
    rows_in = prompts.tolist() if isinstance(prompts, torch.Tensor) else prompts
    if any(len(p) == 0 for p in rows_in):
        raise ValueError("autoregressive_generate: every prompt needs at least one token to condition on")
    if cuda_graphs and not cache:
        raise ValueError("cuda_graphs needs cache=True: without the cache every pass is longer than the last")
    device = _device(model)
    x, P, key_mask, positions = make_canvas(model, prompts, max_new_tokens, cfg.pad_id,
                                            "autoregressive_generate")
    B, total = x.shape
    kv = KVCache.for_model(model, B, total) if cache else None
    graphed = GraphedForward(model, kv) if cuda_graphs else None

    rows = list(range(B))  # the original row of each batch row; None once it finished (cuda_graphs only)
    live = torch.ones(B, dtype=torch.bool, device=device)  # the batch rows still running
    out, finished = [None] * B, [False] * B
    nfe = row_nfe = 0
    with _Timer(device) as timer:
        t = P  # the column the next token goes to
        logits = model(x[:, :P], positions=_window(positions, 0, P), attn_mask=_window(key_mask, 0, P),
                       kv_cache=kv, logits_at=_last_columns(P - 1, P))[:, 0]  # the prefill
        nfe, row_nfe = 1, len(rows)
        if kv is not None:
            kv.commit(P)
        while True:
            tokens, _ = sample_tokens(logits, temperature, top_k, top_p, generator)
            x[:, t] = tokens
            t += 1
            done = tokens == cfg.eos_id
            if t == total:
                done = torch.ones_like(done)
            done &= live
            if done.any():  # the step's one sync
                done_rows, generated = done.tolist(), x[:, P:t].tolist()
                for j, r in enumerate(rows):
                    if done_rows[j]:
                        out[r] = trim_at_eos(generated[j], cfg.eos_id)
                        finished[r] = out[r][-1] == cfg.eos_id
                rows, live, x, key_mask, positions = _keep_unfinished(done_rows, rows, x, key_mask, positions,
                                                                      kv, graphed is not None)
            if trace is not None:
                canvas = [o or [] for o in out]
                for j, r in enumerate(rows):
                    if r is not None:
                        canvas[r] = x[j, P:t].tolist()
                trace(canvas)
            if not rows:
                break
            a = t - 1 if kv is not None else 0  # with the cache, only the newest token is new
            at = _last_columns(t - 1 - a, t - a)
            if graphed is None:
                logits = model(x[:, a:t], positions=_window(positions, a, t), attn_mask=_window(key_mask, 0, t),
                               kv_cache=kv, logits_at=at)[:, 0]
            else:
                pos, mask, slots = _fixed_shape_pass(x, key_mask, positions, None, a, t)
                logits = graphed(x[:, a:t], positions=pos, attn_mask=mask, slots=slots, logits_at=at)[:, 0]
            nfe, row_nfe = nfe + 1, row_nfe + sum(r is not None for r in rows)
            if kv is not None:
                kv.commit(1)
    stats = GenerationStats([len(o) for o in out], finished, nfe, row_nfe, timer.seconds)
    return out, stats
