"""Samplers: how a masked-diffusion model (and, for comparison, an autoregressive one) writes text.

A masked-diffusion LM does not write left to right. It is handed a canvas of [MASK] tokens after the prompt and
fills it in over several forward passes ("steps"), committing some positions each step. The samplers differ
in which positions they commit and in how much work each step repeats:

  llada_generate            LLaDA's vanilla sampler (ML-GSAI/LLaDA generate.py): a fixed canvas of gen_length
                            masks, a fixed number of steps, each committing the k most confident positions; no
                            cache, no early stop. The slow baseline, and the simplest: read it first.
  block_diffusion_generate  dLLM-Var ("Let [EOS] Lead the Way"): blocks of masks after the prompt, decoded left
                            to right; inside a block every position the model is sure of (probability > a
                            threshold) is committed each step; a KV cache keeps the prompt's and the finished
                            blocks' keys/values; a row stops as soon as it has committed its EOS.
  length_bound_generate     the DiffuGPT student project's idea: one pass reads where the model puts EOS, the
                            canvas is cut to the next power of two above it, then decoded as LLaDA does.
  autoregressive_generate   the causal baseline: one token per forward pass with a KV cache.

  generate(name, model, prompts, **knobs) runs any of them by name ("llada", "block", "length_bound", "ar")
  with one set of defaults, the keyword defaults of the functions: the scripts all call it.

All of them take prompts of different lengths in one batch: prompts are left-padded with the pad id, padding is
hidden from attention with a key-padding mask, and each row gets its own RoPE positions, starting at 0 at its
first real token, so a row's tokens are computed exactly as if it were alone. (A block_causal model counts its
blocks by column: the block sampler pads its rows by whole blocks, so that every prompt starts on a block
boundary; with the others a batch holds prompts of equal length modulo the block, see batches.)

All of them return (completions, GenerationStats): completions[i] is row i's generated tokens up to and including
its first EOS (nothing after it, never the prompt), and the stats count forward passes, tokens and time
(nanodllm/sampler_stats.py). How a pass runs, eagerly or replayed as a CUDA graph, is nanodllm/cuda_graphs.py.

Read it top to bottom: the pieces every sampler is made of (sampling a token, LLaDA's step schedule, the two
commit rules, the canvas), then one function per sampler, then `generate`, then the checks of the caller's input.
"""

import inspect
import itertools
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from nanodllm.cuda_graphs import DecodingStep, flags_one_ahead, recordings
from nanodllm.metrics import predicted_eos_position
from nanodllm.model import KVCache, attention_mask
from nanodllm.sampler_stats import GenerationStats, Timer, sampling_mode

__all__ = ["generate", "knobs", "knobs_from_flags", "SAMPLERS", "llada_generate", "block_diffusion_generate",
           "length_bound_generate", "autoregressive_generate", "sample_tokens", "num_transfer_tokens", "left_pad",
           "make_canvas", "trim_at_eos", "next_power_of_two", "GenerationStats"]


# -----------------------------------------------------------------------------
# The pieces: a token from logits, LLaDA's schedule, the commit rules

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


def num_transfer_tokens(mask_count, steps: int):
    """LLaDA's step schedule: how many masked tokens to commit at each of `steps` steps.

    LLaDA's noise schedule is linear in t, and the steps cut [0, 1] into equal intervals, so each step should
    unmask the same expected number of tokens: mask_count // steps each, the remainder one each to the first
    steps. mask_count: (B,) tensor, each row's masks -> (B, steps) int64 tensor.
    """
    mask_count = mask_count.long()
    base, rem = mask_count // steps, mask_count % steps
    return base[:, None] + (torch.arange(steps, device=mask_count.device) < rem[:, None]).long()


def most_confident(confidence, masked, k):
    """LLaDA's commit rule: (B, n) bool, True at the k most confident masked positions of each row; k (B,) is each
    row's step of its schedule. Ranks instead of torch.topk, because topk needs one k for the whole batch and a
    per-row loop would sync."""
    confidence = confidence.masked_fill(~masked, float("-inf"))
    order = confidence.argsort(dim=-1, descending=True, stable=True)
    ranks = torch.empty_like(order).scatter_(-1, order, torch.arange(order.shape[-1], device=order.device)
                                            .expand_as(order))
    return (ranks < k[:, None]) & masked


def above_threshold(confidence, masked, threshold: float):
    """dLLM-Var's commit rule: (B, n) bool, True at every masked position whose confidence exceeds threshold,
    and at the most confident masked one of each row in any case, so a block never takes more steps than it has
    positions. A model that is sure of a whole phrase writes it in one pass: this is where the speed comes from."""
    confidence = confidence.masked_fill(~masked, float("-inf"))
    surest = F.one_hot(confidence.argmax(dim=-1), confidence.shape[-1]).bool()  # (B, n)
    return masked & ((confidence > threshold) | surest)


def trim_at_eos(ids: list[int], eos_id: int) -> list[int]:
    """ids up to and including the first EOS (all of them if there is none)."""
    return ids[:ids.index(eos_id) + 1] if eos_id in ids else ids


def next_power_of_two(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _last_columns(a: int, b: int):
    """A `logits_at` index that keeps columns [a, b) of every row. The model does `x[logits_at]`, and a tuple of
    slices is a plain view, where a boolean mask would need a GPU sync (its output size depends on the data).
    Computing the output head only where the sampler reads it matters: it is a small model's largest matmul."""
    return (slice(None), slice(a, b))


# -----------------------------------------------------------------------------
# The canvas: prompts of different lengths in one batch

def left_pad(prompts, pad_id: int, block: int = 1) -> tuple[list[list[int]], list[int]]:
    """Token-id lists of different lengths (or a (B, P) tensor) -> (each list left-padded with pad_id, how many
    pads each got).

    Left, not right, padding: every prompt then ends in the same column, so the generated text of every row starts
    there and one canvas holds the whole batch. A block_causal model is decoded in blocks counted from the canvas's
    first column, and trained on samples that start on a block boundary: with block > 1 each row is padded by a
    whole number of blocks, so that its prompt starts on a boundary too. The prompts then end in the same block,
    each at its own column (its length modulo the block), and the rows have different lengths.
    """
    prompts = prompt_rows(prompts)
    n_pad = padding([len(p) for p in prompts], block)
    return [[pad_id] * n + [int(t) for t in p] for n, p in zip(n_pad, prompts)], n_pad


def prompt_rows(prompts) -> list[list[int]]:
    """Token-id lists or a (B, P) tensor -> a list of lists; a ValueError for anything else, or for none."""
    if isinstance(prompts, torch.Tensor):
        if prompts.dim() != 2:
            raise ValueError(f"a prompt tensor must be (batch, length), got shape {tuple(prompts.shape)}")
        prompts = prompts.tolist()
    if not prompts or not all(isinstance(p, (list, tuple)) for p in prompts):
        raise ValueError("prompts must be a non-empty list of token-id lists")
    return [list(p) for p in prompts]


def padding(lengths, block: int = 1) -> list[int]:
    """How many pads left_pad puts before prompts of these lengths: enough to give every prompt as many whole
    blocks as the one with the most (block=1: as many tokens as the longest)."""
    whole_blocks = [n // block for n in lengths]
    return [(max(whole_blocks) - q) * block for q in whole_blocks]


def make_canvas(model, prompts, n_new: int, fill_id: int, caller: str, block: int = 1, prompt_multiple: int = 1):
    """The prompts checked, left-padded (left_pad) and each followed by n_new `fill_id` tokens, with the key mask
    and per-row positions that make every row compute as if it were alone -> (x (B, W), starts, key_mask,
    positions).

    starts[r] is row r's first generated column: the same for every row with block=1; with block > 1 each row's
    n_new columns follow its own prompt, and the columns after them, up to the canvas's width, are padding.
    key_mask (B, W) is True at real tokens (the prompt and the n_new columns); positions (B, W) start at 0 at each
    row's first real token. Both are None when no row is padded: the model's defaults (all keys real, positions
    0..W-1) are then exact, and attention keeps its fastest kernels.
    prompt_multiple: more left padding, up to a multiple of it, so that calls on prompts of different lengths
    build canvases of the same width (a compiled pass is compiled once per shape)."""
    cfg = model.config
    _check_prompts(prompts, cfg, caller)
    rows, n_pad = left_pad(prompts, cfg.pad_id, block)
    extra = -max(map(len, rows)) % prompt_multiple
    rows, n_pad = [[cfg.pad_id] * extra + r for r in rows], [n + extra for n in n_pad]
    starts = [len(r) for r in rows]
    # every row computes as if it were alone, on its own positions (below), so each row must fit the model, not
    # the canvas: whole-block padding makes the canvas wider than its longest row by up to a block
    _check_length(max(s - pad for s, pad in zip(starts, n_pad)) + n_new, cfg, caller)
    W = max(starts) + n_new
    device = next(model.parameters()).device
    x = torch.tensor([r + [fill_id] * n_new + [cfg.pad_id] * (W - len(r) - n_new) for r in rows], device=device)
    if not any(n_pad) and len(set(starts)) == 1:
        return x, starts, None, None
    columns = torch.arange(W, device=device)
    first_real = torch.tensor(n_pad, device=device)[:, None]  # (B, 1)
    ends = torch.tensor(starts, device=device)[:, None] + n_new  # (B, 1)
    key_mask = (columns >= first_real) & (columns < ends)
    return x, starts, key_mask, row_positions(columns, first_real, ends)  # (B, W)


def row_positions(columns, first_real, ends):
    """The RoPE positions of a row's canvas columns, its tokens being columns [first_real, ends): 0 at its first
    token. Padding takes a real neighbour's position (it is never attended to), so no position passes the row's
    last one, and a row computes as if it were alone. Any shapes that broadcast: (W,) columns and (B, 1) bounds,
    or each row's own (B, T) columns."""
    return (torch.minimum(columns, ends - 1) - first_real).clamp(min=0)


# -----------------------------------------------------------------------------
# LLaDA's vanilla sampler: the slow baseline

@sampling_mode
def llada_generate(model, prompt, *, gen_length=128, steps=None, block_length=None, temperature=0.0,
                   remasking="low_confidence", cuda_graphs=False, generator=None, trace=None):
    """LLaDA's sampler (ML-GSAI/LLaDA generate.py), same semantics, written afresh.

    The canvas is the prompt plus gen_length masks, split into gen_length / block_length blocks decoded left to
    right (semi-autoregressive), steps / num_blocks steps each (steps and block_length default to gen_length, as
    in LLaDA's generate.py). Every step is one forward pass over the WHOLE canvas (no cache: that is what makes
    it the slow baseline) and commits k tokens of the current block, k from LLaDA's schedule. Which k: a
    candidate x0 is drawn at every position (argmax, or Gumbel-max in float64 when temperature > 0); with
    remasking="low_confidence" the block's masked positions are ranked by the float64 softmax probability of x0,
    with "random" by a uniform random number, and the top k are committed. There is no early stop: all
    gen_length positions are filled, and a model trained on [text + EOS + EOS...] fills the tail with EOS.

    LLaDA computes logits at every position and sets the confidence beyond the block to -inf; the prompt holds
    no mask (checked) and earlier blocks are complete (each block's schedule sums to its mask count), so only
    the current block is ever eligible, and we compute the output head there only: the same tokens, a little
    faster. cuda_graphs: every pass has the canvas's shape, so each block's pass is recorded once as a CUDA
    graph and replayed, the same launch savings block_diffusion_generate(cuda_graphs=True) gets.

    prompt: a (B, L) tensor as in LLaDA, or a list of token-id lists (left-padded, with a key-padding mask).
    """
    cfg = model.config
    steps, block_length = _llada_defaults(gen_length, steps, block_length)
    _check_llada(gen_length, steps, block_length, remasking, temperature)
    x, starts, key_mask, positions = make_canvas(model, prompt, gen_length, cfg.mask_id, "llada_generate")
    P = starts[0]  # every row's first generated column (block=1)
    step = DecodingStep(model, graphs=cuda_graphs)
    num_blocks = gen_length // block_length
    steps_per_block = steps // num_blocks

    with Timer(x.device) as timer:
        for b in range(num_blocks):
            s, e = P + b * block_length, P + (b + 1) * block_length
            schedule = num_transfer_tokens((x[:, s:e] == cfg.mask_id).sum(dim=-1), steps_per_block)  # (B, S)
            for i in range(steps_per_block):
                logits = step(x, key_mask, positions, 0, x.shape[1], _last_columns(s, e))  # (B, block_length, V)
                block = x[:, s:e]
                x0, confidence = sample_tokens(logits.double(), temperature, generator=generator)
                if remasking == "random":
                    confidence = torch.rand(confidence.shape, dtype=torch.float64, device=x.device,
                                            generator=generator)
                commit = most_confident(confidence, block == cfg.mask_id, schedule[:, i])
                x[:, s:e] = torch.where(commit, x0, block)
                if trace is not None:
                    trace(x[:, P:].tolist())
    out = [trim_at_eos(row, cfg.eos_id) for row in x[:, P:].tolist()]
    nfe = num_blocks * steps_per_block
    return out, GenerationStats.of(out, cfg.eos_id, nfe, nfe * len(out), timer.seconds)


def _llada_defaults(gen_length: int, steps, block_length):
    """(steps, block_length): as given, or gen_length where None, as in LLaDA's generate.py (one block, one token
    per step)."""
    return gen_length if steps is None else steps, gen_length if block_length is None else block_length


# -----------------------------------------------------------------------------
# dLLM-Var: block diffusion with a KV cache, stopping at EOS

@sampling_mode
def block_diffusion_generate(model, prompts, *, block_size=32, threshold=0.9, steps_per_block=None,
                             max_new_tokens=1024, temperature=0.0, top_k=None, top_p=None, cache=True,
                             eos_frontier=False, cuda_graphs=False, slots=None, compile=False, generator=None,
                             trace=None):
    """dLLM-Var's sampler: decode blocks of block_size masks left to right until each row commits its EOS.

    Inside a block, each step is one forward pass and commits (above_threshold) every masked position whose
    confidence exceeds `threshold`, at least one per row; with steps_per_block=S, LLaDA's schedule instead
    (most_confident), the block's masks divided evenly over S steps.

    eos_frontier=True lets an EOS be committed only at a row's first masked position, so the stop is decided left
    to right, at the edge of the text written so far. Why: a model trained to fill a sample with EOS up to its
    block's end (block_pad) is surest of that fill, so a threshold sampler commits it first, from the block's
    end leftwards, each EOS making the one before it likelier, until the EOS lands near the block's start
    (docs/study.md). Off by default: dLLM-Var's sampler commits an EOS wherever it is sure of it. (The fixed-steps
    schedule still takes barred EOSs, last, when it needs more positions than the others.)

    KV cache (cache=True), as dLLM-Var does it: the first pass holds the prompt and the first all-mask block, and
    the prompt's keys/values are committed; steps inside a block feed only that block, attending to the cached
    prefix; when a block is complete, the next pass holds it together with the next all-mask block, so its
    keys/values are computed there, once, with its final tokens, and committed. No pass is spent on the cache
    alone and nothing committed is recomputed. With bidirectional attention this is an approximation (a cached
    prompt never sees what is generated after it); with block_causal attention it is exact. A model with
    output_shift predicts a block's first token from the token before it, so that one column stays out of the
    cache and every pass computes it again. cache=False recomputes everything (prompt, finished blocks, current
    block) every step: the reference for the cache.

    A block_causal model (the block_diffusion recipe) is decoded in the blocks it was trained on: attn_block_size
    columns each, counted from the canvas's first column, whatever block_size says. Every row is padded by whole
    blocks (make_canvas with block=attn_block_size), so that its prompt starts on a block boundary as every
    training sample did (RoPE sees only distances: padding changes nothing else). The prompts of a batch then end
    in one block, each at its own column; that block, with each row's first masks after its prompt, is decoded
    first, and every row's max_new_tokens columns follow its own prompt.

    Stopping (stopped_rows): a row is finished once it has committed an EOS with nothing masked before it. That
    can happen mid-block; the row's output is cut after the EOS and the row leaves the batch and the cache
    (DecodingBatch). Rows still move from block to block together (they share the cache length; with slots=R,
    below, each moves on its own). max_new_tokens caps every row.

    cuda_graphs (needs the cache): every pass after the first has one of two shapes, a block alone or a finished
    block with the next one, so each is recorded once as a CUDA graph and replayed (nanodllm/cuda_graphs.py),
    as is the first (per prompt length). The step's bookkeeping (CommitBlock: sampling, the commit, the stop
    test) is recorded into the same graph when decoding is greedy, so a step is one launch and one wait.
    Finished rows then stay in the batch, riding along uncounted: a replay cannot change its shape.

    slots=R (continuous batching; a block_causal model with the cache, threshold commits): the prompts, as many as
    there are, in R rows, each row decoding its own block. Why: in a batch, a row that has committed its block
    waits, pass after pass, for the block's slowest row, and the batch runs until its longest row has ended. Here
    every pass feeds each row the block it is at, a row moves on as soon as its block is complete, and a finished
    row's slot takes the next prompt in the same pass, on the GPU (_decode_slots). On the length suite's 500
    held-out prompts at R=16 (H200): 265 passes, where batches of 16 took 1655, and batches whose finished rows
    gave their place to new prompts at each block's end 1094 (docs/speed.md).

    compile=True (with slots and cuda_graphs): the slots' pass goes through torch.compile before it is recorded,
    which fuses its few hundred small kernels (norms, rotary, masks, the commit) into fewer; the first call
    compiles, for seconds to minutes (docs/speed.md has what it gains).

    prompts: token-id lists (any lengths) or a (B, P) tensor. trace: called after every step with, per row, its
    generated tokens so far (mask id where still masked; the final output once finished).
    """
    cfg = model.config
    _check_block(block_size, threshold, steps_per_block, max_new_tokens, cache, cuda_graphs)
    _check_sampling(temperature, top_k, top_p)
    _check_slots(slots, steps_per_block, cfg, cache, trace, cuda_graphs, compile, temperature)
    commit = CommitBlock(mask_id=cfg.mask_id, eos_id=cfg.eos_id, threshold=threshold, eos_frontier=eos_frontier,
                         temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
    if slots is None:
        done = _decode_blocks(model, prompts, max_new_tokens, block_size=decoding_block_size(model, block_size),
                              steps_per_block=steps_per_block, cache=cache, cuda_graphs=cuda_graphs, commit=commit,
                              trace=trace)
    else:
        done = _decode_slots(model, prompts, max_new_tokens, slots=slots, cuda_graphs=cuda_graphs, commit=commit,
                             compile=compile)
    assert None not in done.out, "every row ends: by EOS or at max_new_tokens"
    return done.out, GenerationStats.of(done.out, cfg.eos_id, done.nfe, done.row_nfe, done.seconds)


@dataclass
class Decoded:
    """What _decode_blocks or _decode_slots did with the prompts: out[i] is prompt i's completion; the forward
    passes, counted per pass and per row (GenerationStats), and the seconds of the decoding loop."""
    out: list
    nfe: int = 0
    row_nfe: int = 0
    seconds: float = 0.0


def _decode_blocks(model, prompts, n_new: int, *, block_size, steps_per_block, cache, cuda_graphs, commit,
                   trace) -> Decoded:
    """block_diffusion_generate's decoding of one batch, each row writing at most n_new tokens, in blocks of
    block_size that every row moves through together."""
    cfg = model.config
    block_causal = cfg.attention == "block_causal"  # decoded in the blocks it was trained on (recipes.two_stream)
    x, starts, key_mask, positions = make_canvas(model, prompts, n_new, cfg.mask_id, "block_diffusion_generate",
                                                 block=block_size if block_causal else 1)
    total = x.shape[1]
    kv = KVCache.for_model(model, len(x), total) if cache else None
    first = starts[0]
    if block_causal:  # the block that holds every prompt's end comes first, their masks after them
        first -= first % block_size
    step = DecodingStep(model, kv, graphs=cuda_graphs, then=commit)
    batch = DecodingBatch(x, key_mask, positions, kv, keep_shape=cuda_graphs, starts=starts, n_new=n_new)

    nfe = row_nfe = 0
    with Timer(x.device) as timer:
        for start in range(first, total, block_size):
            end = min(start + block_size, total)  # the last block is shorter if the cap says so
            writes, last = batch.columns(start, end)  # the block's columns each row writes; its last one in it?
            for i in itertools.count():
                a = kv.length if kv is not None else 0  # the first column fed: everything not cached
                k = (None if steps_per_block is None else  # fixed steps: the row's masks in the block, over them
                     num_transfer_tokens(writes.sum(dim=-1), steps_per_block)[:, i])
                block, done, stop_flags = step(batch.x, batch.key_mask, batch.positions, a, end,
                                               _last_columns(start - a, end - a),  # the output head on the block
                                               block=batch.x[:, start:end], writes=writes, last=last,
                                               live=batch.live, k=k)
                batch.x[:, start:end] = block
                nfe, row_nfe = nfe + 1, row_nfe + batch.running
                if kv is not None:  # the prompt, or the block finished before this one; with output_shift all
                    # but its last column, whose output predicts the block's first token: every pass feeds it again
                    kv.commit(max(start - cfg.output_shift, 0) - kv.length)

                any_done, block_open = stop_flags.tolist()  # the step's one GPU sync
                if any_done:
                    batch.finish(done, end, cfg.eos_id)
                    writes, last = batch.columns(start, end)  # for the rows left
                if trace is not None:
                    trace(batch.canvas(end))
                if not batch.running or not block_open:
                    break
            if not batch.running:
                break
    return Decoded(batch.out, nfe, row_nfe, timer.seconds)


def _decode_slots(model, prompts, max_new_tokens: int, *, slots: int, cuda_graphs: bool, commit,
                  compile: bool = False) -> Decoded:
    """block_diffusion_generate's slots=R: every prompt decoded in one of R rows (slots), each row at its own block.

    Row j of the canvas holds one block of padding, then its prompt, its max_new_tokens masks, and padding up to
    the canvas's width; its positions start at 0 at the prompt, so its blocks are the ones it has alone. start[j]
    is the first column of the block it is at. Every pass feeds each row two blocks, the one before its block and
    its block, writing their keys and values at the row's own columns of the KV cache (write_at (R, 2 blocks)):
    the earlier block's are thereby computed with its final tokens right after it is complete (and again, to the
    same values, until the row moves on: with block_causal attention no column sees a later one). The pass
    commits the row's block (CommitBlock); a row whose block is then complete moves to the next one.
    A prompt's own blocks hold no mask: a new row walks through them, one pass each, which puts them in the cache,
    so there is no prefill and every pass has one shape.

    The host takes no part in a pass. Every prompt's row waits on the GPU in a queue; a pass (slot_pass) first
    gives the free slots the next rows of the queue, and copies the rows it finishes into their prompts' outputs,
    all in place on the GPU. With CUDA graphs the whole pass, its inputs and this bookkeeping included, is then
    one recorded graph (GraphedForward.loop), and the loop is a replay and a read of one flag, whether anything is
    left (a row decoding, a prompt waiting): the pass's one GPU sync, made while the next pass runs
    (flags_one_ahead; the pass after the last changes nothing). The outputs come back in one copy at the end."""
    cfg = model.config
    prompts = prompt_rows(prompts)
    _check_prompts(prompts, cfg, "block_diffusion_generate")
    _check_length(max(len(p) for p in prompts) + max_new_tokens, cfg, "block_diffusion_generate")
    bs, R, N = cfg.attn_block_size, min(slots, len(prompts)), len(prompts)  # the blocks the model was trained on
    W = bs + max(-(-(len(p) + max_new_tokens) // bs) * bs for p in prompts)  # the padding block, then whole blocks
    device = next(model.parameters()).device
    kv = KVCache.for_model(model, R, W)
    firsts = [bs + len(p) for p in prompts]  # each prompt's first generated column
    rows = [[cfg.pad_id] * bs + p + [cfg.mask_id] * max_new_tokens + [cfg.pad_id] * (W - first - max_new_tokens)
            for p, first in zip(prompts, firsts)]
    state = _slots_state(rows, firsts, R, cfg.pad_id, device)
    state["start"] = torch.zeros(R, dtype=torch.long, device=device)  # the first column of each row's block

    def slot_pass(x, start, first_new, holds, live, taken, row_passes, queue, queue_first_new, outputs):
        """One pass of every row, the state updated in place -> whether anything is left (0-dim bool)."""
        take = _fill_free_rows(x, first_new, holds, live, taken, queue, queue_first_new)
        start.masked_fill_(take, bs)  # the padding block is complete: a new row's first block is its prompt's
        row_passes += live.sum()
        # the pass: each row's block and the one before it, at the row's own columns
        after_last = first_new + max_new_tokens  # (R,)
        # made inside the pass, so that its recording holds them: a tensor made outside, freed when this call
        # returns, would leave a later call's replay reading freed memory
        columns = torch.arange(W, device=device)
        fed = start[:, None] + torch.arange(-bs, bs, device=device)  # (R, 2 * bs): the block before, the block
        real = (columns >= bs) & (columns < after_last[:, None])  # (R, W): the prompt and the generated columns
        logits = model(x.gather(1, fed), kv_cache=kv, write_at=fed,  # each row's own columns of the cache
                       positions=row_positions(fed, bs, after_last[:, None]),  # (R, 2 * bs)
                       attn_mask=attention_mask(fed, columns, segments=model.segments(columns), real_keys=real),
                       logits_at=_last_columns(bs, 2 * bs))  # the mask (R, 1, 2 * bs, W), over the whole cache
        block_columns = fed[:, bs:]  # (R, bs)
        writes = (block_columns >= first_new[:, None]) & (block_columns < after_last[:, None])
        block, done, _ = commit(logits, block=x.gather(1, block_columns), writes=writes,
                                last=after_last <= start + bs, live=live)
        # the commit, and its consequences: a complete block moves its row on, a finished row leaves its output
        x.scatter_(1, block_columns, block)
        start += bs * (live & ~done & (block != cfg.mask_id).all(dim=-1))
        live &= ~done
        outputs.index_copy_(0, torch.where(done, holds, N), x)
        return live.any() | (taken < N)

    return _run_slots(model, kv, slot_pass, state, ("slots", commit, max_new_tokens), cuda_graphs and
                      commit.graphable, compile, firsts, max_new_tokens, cfg.eos_id)


# The slots' shared parts: every prompt's row in a queue on the GPU, free rows refilled from it inside the pass, the
# loop of passes replayed with one flag read per pass (block_diffusion_generate's slots, autoregressive_generate's)

def _slots_state(rows, firsts, R: int, pad_id: int, device) -> dict:
    """The GPU state of R slots decoding these prompt rows (each padded to the canvas's width W), firsts[i] being
    row i's first generated column -> the tensors every pass reads and updates in place."""
    N, W = len(rows), len(rows[0])
    per_row = lambda dtype=torch.long: torch.zeros(R, dtype=dtype, device=device)
    counter = lambda: torch.zeros((), dtype=torch.long, device=device)
    return dict(x=torch.full((R, W), pad_id, device=device),  # (R, W): the rows in flight
                first_new=per_row(),  # the first generated column of the prompt each slot holds
                holds=per_row(), live=per_row(torch.bool),  # the prompt it holds; whether it decodes one
                taken=counter(), row_passes=counter(),  # prompts taken so far; rows fed, summed over passes
                queue=torch.tensor(rows, device=device),  # (N, W): every prompt's row, taken in order
                queue_first_new=torch.tensor(firsts, device=device),  # (N,)
                outputs=torch.zeros(N + 1, W, dtype=torch.long, device=device))  # (N + 1, W): each prompt's
    # finished row; the last one is where the rows that did not finish write theirs (a fixed shape: no branch)


def _fill_free_rows(x, first_new, holds, live, taken, queue, queue_first_new):
    """The free slots (finished, or not filled yet) take the next prompts of the queue, in slot order, all in
    place and without a branch on the data -> which slots took one (R,) bool."""
    i = taken + (~live).cumsum(dim=0) - 1  # (R,): the prompt each free row takes, if there is one left
    take = ~live & (i < len(queue))
    i = i.clamp(max=len(queue) - 1)
    x.copy_(torch.where(take[:, None], queue[i], x))
    first_new.copy_(torch.where(take, queue_first_new[i], first_new))
    holds.copy_(torch.where(take, i, holds))
    live |= take
    taken += take.sum()
    return take


def _run_slots(model, kv, slot_pass, state, key, graphs: bool, compile: bool, firsts, max_new_tokens: int,
               eos_id: int) -> Decoded:
    """slot_pass(**state) again and again until it says nothing is left -> Decoded. With graphs, the whole pass
    is one recorded graph (GraphedForward.loop; compiled first if asked), and each pass's one sync, the flag, is
    read while the next pass runs (flags_one_ahead; the pass after the last changes nothing). The outputs come
    back in one copy at the end."""
    device = state["x"].device
    if graphs:
        state, run = recordings(model, kv).loop(slot_pass, state, key=key, compile=compile)
    else:
        run = lambda: slot_pass(**state)
    nfe = 0
    with Timer(device) as timer:
        for left in flags_one_ahead(run, device):
            nfe += 1
            if not left:
                break
        outputs = state["outputs"].tolist()  # one copy back
    out = [trim_at_eos(outputs[i][first:first + max_new_tokens], eos_id) for i, first in enumerate(firsts)]
    return Decoded(out, nfe, state["row_passes"].item(), timer.seconds)


@dataclass(frozen=True, kw_only=True)
class Sampling:
    """How a sampler's bookkeeping draws its tokens from a pass's logits (sample_tokens' settings). The base of
    CommitBlock and CommitToken: what a step does after its pass, with no GPU sync and no Python branch on the data
    inside, so that with CUDA graphs DecodingStep can record it into the pass's graph. It can when decoding is
    greedy (graphable); a draw from the caller's generator cannot be recorded, since a replay would repeat it.
    Frozen dataclasses: their settings are part of a recording's key; the generator is not."""
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    generator: torch.Generator | None = field(default=None, compare=False)

    @property
    def graphable(self) -> bool:
        return self.temperature == 0

    def sample(self, logits):
        return sample_tokens(logits, self.temperature, self.top_k, self.top_p, self.generator)


@dataclass(frozen=True)
class CommitBlock(Sampling):
    """What block_diffusion_generate does with a pass's logits, its step's bookkeeping:
    commit(logits (B, n, V), block (B, n), writes, last, live, k) -> (block after the commit, done, stop_flags).

    Sample a token at every position; commit some of the block's masked ones (above_threshold, or with k (B,)
    most_confident, each row k of them); then stopped_rows."""
    mask_id: int
    eos_id: int
    threshold: float
    eos_frontier: bool = False

    def __call__(self, logits, block, writes, last, live, k=None):
        x0, confidence = self.sample(logits)
        masked = block == self.mask_id
        if self.eos_frontier:  # no EOS behind a masked position: its row's first masked one is never barred
            behind = masked & (masked.long().cumsum(dim=-1) > 1)
            confidence = confidence.masked_fill(behind & (x0 == self.eos_id), -1.0)
        commit = above_threshold(confidence, masked, self.threshold) if k is None else \
            most_confident(confidence, masked, k)
        block = torch.where(commit, x0, block)
        return (block,) + stopped_rows(block, live, writes, last, self.mask_id, self.eos_id)


def stopped_rows(block, live, writes, last, mask_id: int, eos_id: int):
    """Which rows are done after a commit, read from the current block alone -> (done (B,) bool, stop_flags (2,)
    bool: whether any row is done, whether a running row still has masks in the block).

    A row is done once it has committed an EOS with nothing masked before it: nothing earlier can still turn into
    an earlier EOS. Earlier blocks are complete and EOS-free (else the row would have stopped there), so the
    block is enough. A row is also done once the block that holds its last column (max_new_tokens reached) is
    complete. writes (B, n): the block's columns the row writes, not its prompt's end nor the padding after its
    last column; last (B,): whether its last column is in the block (DecodingBatch.columns).
    The two flags come back to the host together, in the step's one GPU sync."""
    masked = block == mask_id
    eos = (block == eos_id) & writes
    by_eos = (eos & (masked.cumsum(dim=-1) == 0)).any(dim=-1)  # an EOS with nothing masked before it
    done = (by_eos | (last & ~masked.any(dim=-1))) & live
    block_open = (masked.any(dim=-1) & ~done & live).any()
    return done, torch.stack([done.any(), block_open])


class DecodingBatch:
    """The rows a sampler is still writing, and what the finished ones wrote.

    x (B, W) is the canvas, key_mask and positions its padding (None without), kv the KV cache (or None);
    starts[j] is batch row j's first generated column, and it writes n_new columns from there (make_canvas).
    rows[j] is the caller's row that batch row j holds; out[r] is caller row r's completion once it finished.
    A finished row leaves the batch: x, the masks and the cache lose it, so it costs nothing more. With
    keep_shape (CUDA graphs replay fixed shapes) it stays and rides along instead, its `rows` entry None; live
    (B,) bool marks the batch rows still running, for the GPU-side checks.
    """

    def __init__(self, x, key_mask, positions, kv, keep_shape: bool, starts: list[int], n_new: int):
        self.x, self.key_mask, self.positions, self.kv, self.keep_shape = x, key_mask, positions, kv, keep_shape
        self.starts, self.n_new = starts, n_new
        self.rows = list(range(len(x)))
        self.out = [None] * len(x)
        self.live = torch.ones(len(x), dtype=torch.bool, device=x.device)

    @property
    def running(self) -> int:
        return sum(r is not None for r in self.rows)

    def columns(self, start: int, end: int):
        """-> (writes (B, end - start) bool: which of the columns [start, end) each row writes, last (B,) bool:
        whether its last column is among them)."""
        first = torch.tensor(self.starts, device=self.x.device)[:, None]  # (B, 1)
        columns = torch.arange(start, end, device=self.x.device)
        return (columns >= first) & (columns < first + self.n_new), first[:, 0] + self.n_new <= end

    def finish(self, done, end: int, eos_id: int):
        """The rows marked in done (B,) bool are finished: what each wrote before column `end`, cut after its first
        EOS, is their output, and they leave."""
        done, canvas = done.tolist(), self.x[:, :end].tolist()
        for j, r in enumerate(self.rows):
            if done[j]:
                self.out[r] = trim_at_eos(canvas[j][self.starts[j]:self.starts[j] + self.n_new], eos_id)
        if self.keep_shape:
            self.rows = [None if d else r for r, d in zip(self.rows, done)]
        else:
            keep = [j for j, d in enumerate(done) if not d]
            self.rows, self.starts = [self.rows[j] for j in keep], [self.starts[j] for j in keep]
            if not self.rows:
                return
            keep = torch.tensor(keep, device=self.x.device)
            self.x = self.x.index_select(0, keep)
            self.key_mask = None if self.key_mask is None else self.key_mask.index_select(0, keep)
            self.positions = None if self.positions is None else self.positions.index_select(0, keep)
            if self.kv is not None:
                self.kv.keep_rows(keep)
        self.live = torch.tensor([r is not None for r in self.rows], device=self.x.device)

    def canvas(self, end: int) -> list[list[int]]:
        """Every caller row's text so far, for a trace: the output of a finished row, what a running one has
        before column `end`."""
        canvas = [o or [] for o in self.out]
        written = self.x[:, :end].tolist()
        for j, r in enumerate(self.rows):
            if r is not None:
                canvas[r] = written[j][self.starts[j]:self.starts[j] + self.n_new]
        return canvas


# -----------------------------------------------------------------------------
# The DiffuGPT project's idea: predict a length bound from the first step, then decode a shorter canvas

@sampling_mode
def length_bound_generate(model, prompts, *, max_length=1024, steps=None, temperature=0.0,
                          remasking="low_confidence", generator=None, trace=None):
    """One forward pass on prompt + max_length masks reads where the model expects the answer to end; the canvas
    is cut to the next power of two above that, then decoded by llada_generate as one block.

    Where the answer ends: metrics.predicted_eos_position, the first position whose argmax is EOS, else the most
    likely EOS position (its docstring says why). Why a power of two: it leaves slack above a prediction that is
    only an estimate (up to 2x), and few distinct canvas lengths, so rows with the same bound decode together.

    steps: steps of the decode, None = one token per step (LLaDA's default steps = gen_length); capped at the
    canvas length. stats.info["length_bound"] holds each row's canvas length; nfe includes the extra pass.
    """
    cfg = model.config
    _check_length_bound(max_length, steps)
    x, starts, key_mask, positions = make_canvas(model, prompts, max_length, cfg.mask_id, "length_bound_generate")
    P = starts[0]  # every row's first generated column (block=1)
    prompt_rows = prompts.tolist() if isinstance(prompts, torch.Tensor) else [list(p) for p in prompts]

    with Timer(x.device) as timer:
        logits = model(x, positions=positions, attn_mask=key_mask, logits_at=_last_columns(P, x.shape[1])).float()
        log_p_eos = logits[..., cfg.eos_id] - logits.logsumexp(dim=-1)  # (B, max_length)
        end = predicted_eos_position(log_p_eos, logits.argmax(dim=-1) == cfg.eos_id)
        bounds = [min(next_power_of_two(e + 1), max_length) for e in end.tolist()]  # +1: the EOS itself
        del logits, log_p_eos

        out, parts, canvas = [None] * len(bounds), [], [[] for _ in bounds]
        for bound in sorted(set(bounds)):
            group = [r for r in range(len(bounds)) if bounds[r] == bound]

            def group_trace(rows_canvas, group=group):
                for r, c in zip(group, rows_canvas):
                    canvas[r] = c
                trace(canvas)

            group_out, s = llada_generate(model, [prompt_rows[r] for r in group], gen_length=bound,
                                          steps=bound if steps is None else min(steps, bound), block_length=bound,
                                          temperature=temperature, remasking=remasking, generator=generator,
                                          trace=None if trace is None else group_trace)
            for r, o in zip(group, group_out):
                out[r] = o
            parts.append(s)
    nfe, row_nfe = 1 + sum(s.nfe for s in parts), len(out) + sum(s.row_nfe for s in parts)
    return out, GenerationStats.of(out, cfg.eos_id, nfe, row_nfe, timer.seconds, info={"length_bound": bounds})


# -----------------------------------------------------------------------------
# The autoregressive baseline

COMPILED_PROMPT_COLUMNS = 128  # compile=True: the prompts' columns, a multiple of this (one canvas width)


@sampling_mode
def autoregressive_generate(model, prompts, *, max_new_tokens=1024, temperature=0.0, top_k=None, top_p=None,
                            cache=True, cuda_graphs=False, slots=None, compile=False, generator=None, trace=None):
    """Ordinary left-to-right decoding of a causal model: one token per forward pass.

    With cache=True (the baseline) the prompt is prefilled once into a preallocated KVCache, then each pass
    feeds only the newest token and commits it. cache=False recomputes the whole sequence every pass (the
    reference the cache is tested against). Rows stop independently at EOS and leave the batch and the cache.
    cuda_graphs (needs the cache): every pass after the prefill has the same shape, one token per row, so it is
    recorded once as a CUDA graph and replayed (the prefill once per prompt length), with the step's bookkeeping
    (CommitToken) inside when greedy, as block_diffusion_generate does; finished rows ride along.
    compile=True (with cuda_graphs): the one-token pass goes through torch.compile before it is recorded, as the
    block sampler's slots' pass does with compile=True, so that a benchmark compares compiled with compiled. A
    pass is compiled once per shape, and the KV cache's width is the canvas's: the prompts are left-padded to a
    multiple of COMPILED_PROMPT_COLUMNS, so that prompts of different lengths share one compilation. The prefill
    is not compiled: it runs once per call.
    slots=R: continuous batching, as the block sampler's slots: the prompts, as many as there are, in R rows, each
    at its own column, a finished row taking the next prompt in the same pass, the whole pass one CUDA graph over
    a state on the GPU (_decode_ar_slots). Why: a batch runs until its longest row ends, its finished rows riding
    along, and each pass waits for its stop flag before the next is launched; the block sampler's slots do
    neither, and a baseline should not be slower than it needs to be.
    """
    cfg = model.config
    _check_autoregressive(cfg, prompts, max_new_tokens, cache, cuda_graphs, compile)
    _check_sampling(temperature, top_k, top_p)
    commit = CommitToken(eos_id=cfg.eos_id, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
    if slots is not None:
        _check_ar_slots(slots, cache, trace, compile, temperature)
        done = _decode_ar_slots(model, prompts, max_new_tokens, slots=slots, cuda_graphs=cuda_graphs, commit=commit,
                                compile=compile)
        return done.out, GenerationStats.of(done.out, cfg.eos_id, done.nfe, done.row_nfe, done.seconds)
    x, starts, key_mask, positions = make_canvas(model, prompts, max_new_tokens, cfg.pad_id, "autoregressive_generate",
                                                 prompt_multiple=COMPILED_PROMPT_COLUMNS if compile else 1)
    P = starts[0]  # every row's first generated column (block=1)
    total = x.shape[1]
    kv = KVCache.for_model(model, len(x), total) if cache else None
    step = DecodingStep(model, kv, graphs=cuda_graphs, then=commit, compile=compile)  # each one-token pass
    prefill = DecodingStep(model, kv, graphs=cuda_graphs, then=commit) if compile else step  # not compiled
    batch = DecodingBatch(x, key_mask, positions, kv, keep_shape=cuda_graphs, starts=starts, n_new=max_new_tokens)

    nfe = row_nfe = 0
    with Timer(x.device) as timer:
        for t in range(P, total):  # t: the column the next token goes to
            a = kv.length if kv is not None else 0  # with the cache: the prompt (the prefill), then one token
            run = prefill if t == P else step
            tokens, done, any_done = run(batch.x, batch.key_mask, batch.positions, a, t,
                                         _last_columns(t - 1 - a, t - a), live=batch.live)  # (B,), (B,), ()
            batch.x[:, t] = tokens
            nfe, row_nfe = nfe + 1, row_nfe + batch.running
            if kv is not None:
                kv.commit(t - kv.length)
            if t + 1 == total:  # max_new_tokens: every row still running ends here
                batch.finish(batch.live, t + 1, cfg.eos_id)
            elif any_done.item():  # the step's one sync
                batch.finish(done, t + 1, cfg.eos_id)
            if trace is not None:
                trace(batch.canvas(t + 1))
            if not batch.running:
                break
    return batch.out, GenerationStats.of(batch.out, cfg.eos_id, nfe, row_nfe, timer.seconds)


def _decode_ar_slots(model, prompts, max_new_tokens: int, *, slots: int, cuda_graphs: bool, commit,
                     compile: bool = False) -> Decoded:
    """autoregressive_generate's slots=R: every prompt decoded in one of R rows, each at its own column.

    Row j holds its prompt from column 0, then room for max_new_tokens; at[j] is the column it feeds. Every pass
    feeds each row one token, at its own column and position, writing its key and value at that column of the
    row's KV cache (write_at (R, 1)); causal attention hides the columns after it, whatever an earlier prompt left
    there. The prompts' keys and values are computed first, all prompts in a few batched passes (_prefill_prompts,
    timed with the loop); a row taking a prompt copies them into its cache and feeds the prompt's last token
    next, whose logits give the first new token. So every pass of the loop has one shape, and a prompt costs no
    pass of it: a row that walked through its prompt one token a pass (as it did until 2026-12-04) spent 6.5%
    of the AR model's passes on TinyStories' first sentences (docs/speed.md). A row is done at its EOS or at its
    last column. The queue, the refill and the loop are the block sampler's slots' (_slots_state,
    _fill_free_rows, _run_slots)."""
    cfg = model.config
    prompts = prompt_rows(prompts)
    _check_prompts(prompts, cfg, "autoregressive_generate")
    _check_length(max(len(p) for p in prompts) + max_new_tokens, cfg, "autoregressive_generate")
    R, N = min(slots, len(prompts)), len(prompts)
    W = max(len(p) for p in prompts) + max_new_tokens
    device = next(model.parameters()).device
    kv = KVCache.for_model(model, R, W)
    firsts = [len(p) for p in prompts]  # each prompt's first generated column
    state = _slots_state([p + [cfg.pad_id] * (W - len(p)) for p in prompts], firsts, R, cfg.pad_id, device)
    state["at"] = torch.zeros(R, dtype=torch.long, device=device)  # the column each row feeds
    with Timer(device) as prefill:  # timed with the loop: it is part of the work
        prompt_k, prompt_v, prefill_passes = _prefill_prompts(model, state["queue"][:, :max(firsts)])
    state.update(prompt_k=prompt_k, prompt_v=prompt_v)  # (n_layer, N, K, P, D) each

    def ar_pass(x, at, first_new, holds, live, taken, row_passes, queue, queue_first_new, outputs, prompt_k,
                prompt_v):
        """One token of every row, the state updated in place -> whether anything is left (0-dim bool)."""
        take = _fill_free_rows(x, first_new, holds, live, taken, queue, queue_first_new)
        # a new row's prompt, from the prefill. Every pass copies all R rows' prefixes (no branch on `take`): at
        # the gpt2 preset and prompts of 24 tokens, compiled and timed alone, 3 us of a 1 ms pass on an H200 at
        # batch 1, 8 us at batch 16 (scripts/bench_kv_write.py, in its slice-assignment form before 6749b3c)
        kv.write_prefix(take, prompt_k[:, holds], prompt_v[:, holds])
        at.copy_(torch.where(take, first_new - 1, at))  # it feeds its prompt's last token: the first new one next
        row_passes += live.sum()
        columns = torch.arange(W, device=device)  # made inside the pass, as _decode_slots says why
        fed = at[:, None]  # (R, 1)
        logits = model(x.gather(1, fed), kv_cache=kv, write_at=fed, positions=fed,
                       attn_mask=attention_mask(fed, columns, segments=model.segments(columns)))  # (R, 1, V)
        token, _ = commit.sample(logits[:, 0])  # (R,)
        after = at + 1  # (R,): the column the token is for
        x.scatter_(1, after[:, None], torch.where(live, token, x.gather(1, after[:, None])[:, 0])[:, None])
        done = live & ((token == cfg.eos_id) | (after == first_new + max_new_tokens - 1))
        at += live & ~done
        live &= ~done
        outputs.index_copy_(0, torch.where(done, holds, N), x)
        return live.any() | (taken < N)

    done = _run_slots(model, kv, ar_pass, state, ("ar_slots", commit, max_new_tokens), cuda_graphs and
                      commit.graphable, compile, firsts, max_new_tokens, cfg.eos_id)
    return Decoded(done.out, done.nfe + prefill_passes, done.row_nfe + len(prompts), done.seconds + prefill.seconds)


PREFILL_ROWS = 64  # prompts per prefill pass: bounds its activations (64 x P tokens) however many prompts there are


def _prefill_prompts(model, prompts):
    """Every prompt's keys and values, for the AR slots: prompts (N, P) token ids, each from column 0 and padded
    after it (causal attention: a prompt's columns never see the padding) -> (k, v), each (n_layer, N, K, P, D),
    and the passes it took. The output head is skipped (logits_at picks no position): only the cache is needed.
    They are held for the whole call: TinyStories' 200 first sentences (at most 24 tokens) at the gpt2 preset in
    bf16 are 177 MB."""
    ks, vs = [], []
    for rows in prompts.split(PREFILL_ROWS):
        kv = KVCache.for_model(model, len(rows), rows.shape[1])
        model(rows, kv_cache=kv, logits_at=(slice(None), slice(0, 0)))  # writes columns [0, P) of kv
        ks.append(kv.k)
        vs.append(kv.v)
    return torch.cat(ks, dim=1), torch.cat(vs, dim=1), len(ks)


@dataclass(frozen=True)
class CommitToken(Sampling):
    """What autoregressive_generate does with a pass's logits (B, 1, V): sample the next token of every row ->
    (tokens (B,), done (B,): the running rows that wrote EOS, any_done ()). Recorded into the pass's graph when
    greedy, as CommitBlock is for the block sampler (Sampling)."""
    eos_id: int

    def __call__(self, logits, live):
        tokens, _ = self.sample(logits[:, 0])
        done = (tokens == self.eos_id) & live
        return tokens, done, done.any()


# -----------------------------------------------------------------------------
# One entry point

SAMPLERS = {"llada": llada_generate, "block": block_diffusion_generate, "length_bound": length_bound_generate,
            "ar": autoregressive_generate}
KNOBS = {name for fn in SAMPLERS.values() for name, p in inspect.signature(fn).parameters.items()
         if p.kind == p.KEYWORD_ONLY and name not in ("generator", "trace")}


def knobs(name: str, **given) -> dict:
    """Every knob of sampler `name` with the value it runs with: the given one, or the sampler's default where
    it is not given or is None (for llada, steps and block_length then follow gen_length). Knobs of the other
    samplers are ignored, so a script can pass all its flags to whichever sampler is chosen; a knob no sampler has
    is an error."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}")
    unknown = set(given) - KNOBS
    if unknown:
        raise TypeError(f"no sampler has the knob(s) {sorted(unknown)}; the knobs are {sorted(KNOBS)}")
    params = inspect.signature(SAMPLERS[name]).parameters
    chosen = {k: p.default if given.get(k) is None else given[k] for k, p in params.items()
              if p.kind == p.KEYWORD_ONLY and k not in ("generator", "trace")}
    if name == "llada":  # the values its None defaults stand for, so a trace can say how its tokens were made
        chosen["steps"], chosen["block_length"] = _llada_defaults(chosen["gen_length"], chosen["steps"],
                                                                  chosen["block_length"])
    return chosen


def generate(name: str, model, prompts, *, generator=None, trace=None, **given):
    """Sampler `name` ("llada", "block", "length_bound" or "ar") on a batch of prompts -> (completions, stats),
    with the knobs given and the sampler's defaults for the rest (see knobs).

    "ar" prompts are given the context the causal model was trained in: its packed stream puts every document
    right after the previous one's EOS, so each prompt is preceded by an EOS (an empty prompt becomes just EOS)."""
    chosen = knobs(name, **given)  # first: it names an unknown sampler
    if name == "ar":
        rows = prompts.tolist() if isinstance(prompts, torch.Tensor) else prompts
        prompts = [[model.config.eos_id] + [int(t) for t in p] for p in rows]
    return SAMPLERS[name](model, prompts, generator=generator, trace=trace, **chosen)


def block_offset(model, prompt_length: int) -> int:
    """Where a prompt ends inside the blocks block_diffusion_generate decodes it in: a block_causal model counts
    its blocks from the row's first column (attn_block_size, as it was trained), so the prompt ends at its length
    modulo the block; any other model's first block starts right after the prompt (offset 0)."""
    cfg = model.config
    return prompt_length % cfg.attn_block_size if cfg.attention == "block_causal" else 0


def decoding_block_size(model, block_size: int) -> int:
    """The blocks block_diffusion_generate decodes in: a block_causal model's own, any other's block_size."""
    return model.config.attn_block_size if model.config.attention == "block_causal" else block_size


def batches(model, prompts, batch_size: int, block_aligned: bool = False) -> list[list[int]]:
    """The indices of `prompts` in batches of at most batch_size, to decode together.

    block_aligned: the sampler pads each row by whole blocks (block_diffusion_generate does, make_canvas(block=)),
    so prompts of any lengths batch together, each row computed exactly as if it were alone. The other samplers
    (and eval_eos's first-step probe) left-pad so that every prompt ends in the same column, and a block_causal
    model cuts attention into blocks by column: a prompt padded by a number of columns that is not a whole number
    of blocks would start mid-block, where every sample block_pad trains on starts on a block boundary, and its
    answer would depend on the other prompts of its batch. So for such a model a batch then holds only prompts of
    equal length modulo the block, and there are more, smaller batches (200 TinyStories prompts fall into 19 of 32
    residues: 19 batches where batch_size 100 made 2)."""
    def offset(i):
        return 0 if block_aligned else block_offset(model, len(prompts[i]))
    out = []
    for _, group in itertools.groupby(sorted(range(len(prompts)), key=offset), key=offset):  # stable: input order
        group = list(group)
        out += [group[j:j + batch_size] for j in range(0, len(group), batch_size)]
    return out


def knobs_from_flags(args) -> dict:
    """The sampler knobs among a script's parsed flags: sample.py and eval_eos.py name their flags after the
    knobs, and --no_cache is cache=False."""
    given = {k: getattr(args, k) for k in KNOBS if hasattr(args, k)}
    if hasattr(args, "no_cache"):
        given["cache"] = not args.no_cache
    return given


# -----------------------------------------------------------------------------
# Checks of the caller's input: a clear ValueError before any forward pass

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


def _check_llada(gen_length, steps, block_length, remasking, temperature):
    if remasking not in ("low_confidence", "random"):
        raise ValueError(f"remasking must be 'low_confidence' or 'random', got {remasking!r}")
    if gen_length < 1 or block_length < 1 or steps < 1:
        raise ValueError("gen_length, block_length and steps must be >= 1")
    if gen_length % block_length:
        raise ValueError(f"gen_length ({gen_length}) must be a multiple of block_length ({block_length})")
    if steps % (gen_length // block_length):
        raise ValueError(f"steps ({steps}) must be a multiple of the number of blocks ({gen_length // block_length})")
    _check_sampling(temperature, None, None)


def _check_block(block_size, threshold, steps_per_block, max_new_tokens, cache, cuda_graphs):
    if block_size < 1 or max_new_tokens < 1:
        raise ValueError(f"block_size and max_new_tokens must be >= 1, got {block_size} and {max_new_tokens}")
    if steps_per_block is None and not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if steps_per_block is not None and steps_per_block < 1:
        raise ValueError(f"steps_per_block must be >= 1, got {steps_per_block}")
    _check_graphs(cache, cuda_graphs)


def _check_slots(slots, steps_per_block, config, cache, trace, cuda_graphs, compile, temperature):
    """block_diffusion_generate's continuous batching: how many rows (slots) it keeps in flight."""
    if compile and (slots is None or not cuda_graphs or temperature > 0):
        raise ValueError("compile compiles the slots' pass that cuda_graphs records, which records greedy "
                         "decoding only: it needs slots, cuda_graphs=True and temperature=0")
    if slots is None:
        return
    _check_rows_in_flight(slots, trace)
    if steps_per_block is not None:
        raise ValueError("slots commits by threshold, each row on its own: it does not go with steps_per_block")
    if config.attention != "block_causal" or not cache:
        raise ValueError("slots needs a block_causal model and cache=True: a row's finished blocks get their keys "
                         "and values computed again, which gives the ones the cache held only when nothing attends "
                         f"forward (this model's attention is {config.attention!r})")


def _check_rows_in_flight(slots, trace):
    """What the slots of either sampler need: at least one row, and no trace, which follows one batch's rows."""
    if slots < 1:
        raise ValueError(f"slots must be >= 1, got {slots}")
    if trace is not None:
        raise ValueError("trace follows the rows of one batch: it does not go with slots")


def _check_length_bound(max_length, steps):
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")


def _check_autoregressive(config, prompts, max_new_tokens, cache, cuda_graphs, compile):
    if config.attention != "causal":
        raise ValueError(f"autoregressive_generate needs a causal model, this one is {config.attention!r}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    rows = prompts.tolist() if isinstance(prompts, torch.Tensor) else prompts
    if any(len(p) == 0 for p in rows):
        raise ValueError("autoregressive_generate: every prompt needs at least one token to condition on")
    _check_graphs(cache, cuda_graphs)
    if compile and not cuda_graphs:
        raise ValueError("compile compiles the pass that cuda_graphs records: it needs cuda_graphs=True")


def _check_ar_slots(slots, cache, trace, compile, temperature):
    """autoregressive_generate's continuous batching: how many rows (slots) it keeps in flight."""
    _check_rows_in_flight(slots, trace)
    if not cache:
        raise ValueError("slots keep each row's keys and values at its own columns of the KV cache: they need "
                         "cache=True")
    if compile and temperature > 0:
        raise ValueError("compile compiles the slots' pass that cuda_graphs records, which records greedy "
                         "decoding only: it needs temperature=0")


def _check_graphs(cache, cuda_graphs):
    if cuda_graphs and not cache:
        raise ValueError("cuda_graphs needs cache=True: without the cache every pass is longer than the last")
