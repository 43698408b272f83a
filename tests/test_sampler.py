"""Tests of nanodllm/sampler.py on tiny random models (CPU, a few seconds).

A random model's predictions are near uniform, so its confidences never pass dLLM-Var's threshold. We sharpen it
by scaling the output head: predictions become peaky and input-dependent, and the threshold commits several
tokens in some steps and one in others, which exercises every path of the block sampler. Where a test needs a
specific behaviour (an EOS at a chosen place, never an EOS) it wraps model.forward and edits the logits.
"""

import random

import pytest
import torch
import torch.nn.functional as F

from nanodllm.model import ModelConfig, Transformer
from nanodllm.sampler import (SAMPLERS, autoregressive_generate, batches, block_diffusion_generate, block_offset,
                              decoding_block_size, generate, knobs, knobs_from_flags, left_pad, length_bound_generate,
                              llada_generate, make_canvas, next_power_of_two, num_transfer_tokens, trim_at_eos)

MASK, EOS, PAD = 63, 62, 61
PROMPTS = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10], [11], [12, 13, 14, 15, 16]]  # several lengths: left padding


def tiny_model(attention="block_causal", seed=0, sharpen=30.0, vocab_size=64, output_shift=False, **ids):
    torch.manual_seed(seed)
    ids = ids or dict(mask_id=MASK, eos_id=EOS, pad_id=PAD)
    cfg = ModelConfig(vocab_size=vocab_size, n_layer=2, n_head=4, n_kv_head=2, d_model=64, mlp_hidden=128,
                      max_seq_len=256, attention=attention, attn_block_size=8, output_shift=output_shift, **ids)
    model = Transformer(cfg).eval()
    with torch.no_grad():
        model.transformer.ff_out.weight.mul_(sharpen)
    return model


def wrap_forward(model, edit=None, log=None):
    """Replaces model.forward by one that logs each call's input shape in `log` and lets `edit(logits,
    positions)` change the full (B, T, V) logits; positions are each row's RoPE positions (B, T)."""
    orig = model.forward
    log = [] if log is None else log

    def forward(idx, *, positions=None, attn_mask=None, kv_cache=None, write_at=None, logits_at=None):
        log.append(("forward", tuple(idx.shape)))
        if edit is None:
            return orig(idx, positions=positions, attn_mask=attn_mask, kv_cache=kv_cache, write_at=write_at,
                        logits_at=logits_at)
        B, T = idx.shape
        offset = kv_cache.length if kv_cache is not None else 0
        if positions is None:
            positions = torch.arange(offset, offset + T, device=idx.device).expand(B, T)
        logits = edit(orig(idx, positions=positions, attn_mask=attn_mask, kv_cache=kv_cache, write_at=write_at),
                      positions)
        return logits if logits_at is None else logits[logits_at]

    model.forward = forward
    return log


def no_eos(logits, positions):
    logits[..., EOS] = float("-inf")
    return logits


def assert_clean(out, stats, eos=EOS):
    """Nothing after EOS, and the stats agree with the output."""
    assert stats.tokens == [len(o) for o in out]
    for o, fin in zip(out, stats.finished):
        assert eos not in o[:-1], "a token after EOS"
        assert fin == (len(o) > 0 and o[-1] == eos)


# -----------------------------------------------------------------------------
# The block sampler's KV cache

@pytest.mark.parametrize("kwargs", [
    dict(threshold=0.3),  # threshold mode: 1 to several tokens a step
    dict(threshold=0.9, block_size=6),  # max_new_tokens not a multiple of block_size: a short last block
    dict(steps_per_block=3),  # fixed-steps mode
    dict(threshold=0.3, temperature=1.0, top_k=20, top_p=0.9),  # sampling: same generator seed, same noise
])
@pytest.mark.parametrize("output_shift", [False, True])  # True: every pass also feeds the column before the block
def test_block_causal_cache_is_exact(kwargs, output_shift):
    model = tiny_model("block_causal", output_shift=output_shift)
    kw = dict(block_size=8, max_new_tokens=40) | kwargs
    runs = []
    for cache in (True, False):
        gen = torch.Generator().manual_seed(0)
        runs.append(block_diffusion_generate(model, PROMPTS, cache=cache, generator=gen, **kw))
    (cached, s_cached), (uncached, s_uncached) = runs
    assert cached == uncached
    assert s_cached.nfe == s_uncached.nfe
    assert_clean(cached, s_cached)


def test_cache_filled_once_and_reused():
    model = tiny_model("bidirectional")
    events = wrap_forward(model, no_eos)
    bs, P, n_blocks = 8, max(map(len, PROMPTS)), 4
    trace = lambda canvas: events.append(("trace", sum(t == MASK for row in canvas for t in row)))
    out, stats = block_diffusion_generate(model, PROMPTS, block_size=bs, threshold=0.3, max_new_tokens=n_blocks * bs,
                                          trace=trace)
    fed = [shape[1] for kind, shape in events if kind == "forward"]
    assert len(fed) == stats.nfe
    assert fed[0] == P + bs  # one prefill: the prompt and the first all-mask block
    assert fed.count(2 * bs) == n_blocks - 1  # each finished block is fed once more, with the next block
    assert all(t in (bs, 2 * bs) for t in fed[1:])  # inner steps feed only the block
    # the 2 * block_size pass comes right after the step that completed a block, and only then
    for i, (kind, shape) in enumerate(events):
        if kind == "forward" and i > 0:
            masks_before = events[i - 1][1]  # the trace of the previous step
            assert (shape[1] == 2 * bs) == (masks_before == 0)
    assert stats.tokens == [n_blocks * bs] * len(PROMPTS) and not any(stats.finished)

    # without the cache every step recomputes prompt + finished blocks + current block
    events.clear()
    block_diffusion_generate(model, PROMPTS, block_size=bs, threshold=0.3, max_new_tokens=n_blocks * bs,
                             cache=False, trace=trace)
    fed = [shape[1] for kind, shape in events if kind == "forward"]
    assert set(fed) == {P + (k + 1) * bs for k in range(n_blocks)} and fed == sorted(fed)


@pytest.mark.parametrize("attention,output_shift", [("block_causal", False), ("block_causal", True),
                                                    ("bidirectional", False)])
def test_batch_equals_each_prompt_alone(attention, output_shift):
    """Left padding, the key-padding mask and per-row positions make a row's tokens independent of its batch.
    A block_causal model decodes in blocks of the canvas's columns: each row is padded by whole blocks, so that
    its prompt starts on a block boundary as when it is alone, whatever the lengths of the others (here 3, 7, 1,
    5 and 11: the prompts end at four different columns of one block, one of them a block later)."""
    model = tiny_model(attention, output_shift=output_shift)
    prompts = PROMPTS + [list(range(20, 31))]
    for kw in (dict(block_size=8, threshold=0.3, max_new_tokens=24), dict(threshold=0.3, max_new_tokens=21),
               dict(threshold=0.3, max_new_tokens=21, cache=False), dict(steps_per_block=3, max_new_tokens=20),
               dict(threshold=0.3, max_new_tokens=21, cuda_graphs=True)):  # on the CPU: the fixed-shape passes
        batch, stats = block_diffusion_generate(model, prompts, **kw)
        alone = [block_diffusion_generate(model, [p], **kw) for p in prompts]
        assert batch == [out[0] for out, _ in alone], kw
        assert max(s.nfe for _, s in alone) <= stats.nfe < sum(s.nfe for _, s in alone)  # the rows move together


def eos_every(period: int):
    """An edit that makes EOS a sure token at every position that is a multiple of `period` (and never elsewhere):
    rows of different prompt lengths then stop after different numbers of tokens, wherever they are decoded."""
    def edit(logits, positions):
        logits[..., EOS] = float("-inf")
        at = (positions > 0) & (positions % period == 0)  # (B, T)
        logits[at] = -1e4
        logits[..., EOS][at] = 1e4
        return logits
    return edit


@pytest.mark.parametrize("kwargs", [{}, dict(cuda_graphs=True), dict(output_shift=True), dict(eos_frontier=True)])
def test_slots_write_what_each_prompt_writes_alone(kwargs):
    """slots: 12 prompts of 1 to 12 tokens in 3 slots, blocks of 8, each row at its own block; rows stop at an
    EOS at position 19 or at the cap of 14 tokens, and a finished row's slot takes the next prompt. Every pass
    feeds the 3 slots 2 blocks each, and every prompt gets the tokens it gets alone: the pass after the last,
    made while the host read the last one's flag, changes nothing."""
    kwargs = dict(kwargs)
    model = tiny_model("block_causal", output_shift=kwargs.pop("output_shift", False))
    log = wrap_forward(model, eos_every(19))
    prompts = [list(range(1, n + 1)) for n in range(1, 13)]
    knobs = dict(max_new_tokens=14, threshold=0.3, **kwargs)
    out, stats = block_diffusion_generate(model, prompts, slots=3, **knobs)
    assert {shape for _, shape in log} == {(3, 16)}
    assert len(log) == stats.nfe + 1  # one more pass ran while the host read the last one's flag
    assert out == [block_diffusion_generate(model, [p], **knobs)[0][0] for p in prompts]
    assert 0 < sum(stats.finished) < len(prompts)  # some rows end by EOS, some at the cap
    assert_clean(out, stats)


def paced(block: int):
    """An edit that makes the model sure of every token in even blocks of positions (a block in one pass) and of
    one token per pass in odd ones, and never of EOS: rows whose prompts end in different blocks need different
    numbers of passes for the blocks they decode side by side."""
    def edit(logits, positions):
        logits = no_eos(logits, positions)
        sure = (positions // block) % 2 == 0  # (B, T)
        logits[sure] = logits[sure] * 100
        return logits
    return edit


def test_slots_let_no_row_wait_for_another():
    """24 prompts of 1 to 19 tokens, 8 rows in flight, paced: in a batch a row that has written its block waits
    for the slowest row's, and the batch for its longest row; in slots a row moves on, and a finished row's slot
    takes the next prompt. The same tokens as alone, in fewer passes than batches of 8."""
    model = tiny_model("block_causal", sharpen=3.0)
    wrap_forward(model, paced(8))
    rng = random.Random(0)
    prompts = [[rng.randrange(1, 60) for _ in range(rng.randrange(1, 20))] for _ in range(24)]
    knobs = dict(max_new_tokens=32, threshold=0.9)
    out, stats = block_diffusion_generate(model, prompts, slots=8, **knobs)
    alone = [block_diffusion_generate(model, [p], **knobs) for p in prompts]
    assert out == [o[0] for o, _ in alone]
    batches_of_8 = [block_diffusion_generate(model, prompts[i:i + 8], **knobs)[1] for i in range(0, 24, 8)]
    assert stats.nfe < 0.7 * sum(s.nfe for s in batches_of_8)
    assert stats.row_nfe < sum(s.nfe for _, s in alone) + len(prompts) * 3  # + at most 3 prompt blocks each


def test_slots_need_an_exact_cache_and_threshold_commits():
    model = tiny_model("block_causal")
    for bad, message in [(dict(slots=0), "slots must be >= 1"), (dict(slots=2, cache=False), "block_causal model"),
                         (dict(slots=2, steps_per_block=2), "threshold"),
                         (dict(slots=2, trace=print), "trace"), (dict(compile=True), "needs slots"),
                         (dict(slots=2, compile=True), "cuda_graphs=True"),
                         (dict(slots=2, compile=True, cuda_graphs=True, temperature=1.0), "temperature=0")]:
        with pytest.raises(ValueError, match=message):
            block_diffusion_generate(model, PROMPTS, **bad)
    with pytest.raises(ValueError, match="block_causal model"):
        block_diffusion_generate(tiny_model("bidirectional"), PROMPTS, slots=2)
    with pytest.raises(ValueError, match="max_seq_len"):
        block_diffusion_generate(model, PROMPTS, slots=2, max_new_tokens=250)


def test_block_causal_model_decodes_in_the_blocks_it_was_trained_on():
    """A block_causal model (the block_diffusion recipe) is decoded in blocks of its attn_block_size (8 here)
    on the canvas's columns, whatever block_size is asked: for a 7-token prompt the first block is columns 0-7
    (the prompt's end and one mask), then 8-15 and 16-23; a bidirectional model takes blocks of 5 after the
    prompt."""
    for attention, expected in (("block_causal", {1, 9, 17}), ("bidirectional", {5, 10, 15, 17})):
        model = tiny_model(attention)
        wrap_forward(model, no_eos)
        written = set()  # how far the canvas reaches after each step: the end of the block being decoded
        block_diffusion_generate(model, [PROMPTS[1]], block_size=5, threshold=0.3, max_new_tokens=17,
                                 trace=lambda canvas: written.add(len(canvas[0])))
        assert written == expected, attention


@pytest.mark.parametrize("sampler", ["llada", "autoregressive"])
def test_baselines_batch_equals_each_prompt_alone(sampler):
    """The same for the baselines: LLaDA's vanilla sampler (whose full-canvas passes see the padding as keys)
    and the AR sampler with its cache, eager and with the fixed-shape passes of cuda_graphs."""
    if sampler == "llada":
        model, runs = tiny_model("bidirectional"), [dict(gen_length=16, steps=8, block_length=8)]
        generate = llada_generate
    else:
        model, runs = tiny_model("causal"), [dict(max_new_tokens=12), dict(max_new_tokens=12, cuda_graphs=True)]
        generate = autoregressive_generate
    for kw in runs:
        batch, _ = generate(model, PROMPTS, **kw)
        alone = [generate(model, [p], **kw)[0][0] for p in PROMPTS]
        assert batch == alone


# -----------------------------------------------------------------------------
# Stopping

@pytest.mark.parametrize("cache", [True, False])
def test_rows_stop_independently(cache):
    """Row 0 is made to write EOS at generated index 10 (and to be sure of every token); the others never
    write EOS. Row 0 must stop there, leave the batch, and the others must run to the cap."""
    model = tiny_model("block_causal")
    B, p0, g = len(PROMPTS), len(PROMPTS[0]), 10

    def edit(logits, positions):
        logits[..., EOS] = float("-inf")
        if logits.shape[0] == B:  # row 0 is still in the batch, as row 0
            logits[0] = -1e4
            logits[0, :, 5] = 1e4
            logits[0, positions[0] == p0 + g, :] = -1e4
            logits[0, positions[0] == p0 + g, EOS] = 1e4
        return logits

    log = wrap_forward(model, edit)
    out, stats = block_diffusion_generate(model, PROMPTS, block_size=8, threshold=0.9, max_new_tokens=32,
                                          cache=cache)
    assert out[0] == [5] * g + [EOS]
    assert stats.finished == [True] + [False] * (B - 1)
    assert [len(o) for o in out[1:]] == [32] * (B - 1)
    batch_sizes = [shape[0] for _, shape in log]
    # row 0 leaves first, in block 1, whatever the others still do in block 0; the others leave in their last
    # block, each when it is complete (each row's 32 columns follow its own prompt: they end at different columns)
    assert batch_sizes == sorted(batch_sizes, reverse=True) and batch_sizes.count(B - 1) > 1
    assert stats.row_nfe == sum(batch_sizes)
    assert_clean(out, stats)


def test_cap_holds_without_eos():
    """A model that never writes EOS: every sampler stops at its length cap."""
    model = tiny_model("block_causal")
    wrap_forward(model, no_eos)
    out, stats = block_diffusion_generate(model, PROMPTS, block_size=8, threshold=0.9, max_new_tokens=20)
    assert [len(o) for o in out] == [20] * len(PROMPTS) and not any(stats.finished)
    # at most one pass per mask of the row with the most in each block: the prompts (3, 7, 1, 5 tokens) end in
    # block 0, where the 1-token one has 7 masks; then 8, 8, and 3 (the 7-token one's last)
    assert stats.nfe <= 7 + 8 + 8 + 3 and MASK not in sum(out, [])
    out, stats = llada_generate(model, PROMPTS, gen_length=16, steps=8, block_length=8)
    assert [len(o) for o in out] == [16] * len(PROMPTS) and stats.nfe == 8 and stats.termination_rate == 0

    causal = tiny_model("causal")
    log = wrap_forward(causal, no_eos)
    out, stats = autoregressive_generate(causal, PROMPTS, max_new_tokens=12)
    assert [len(o) for o in out] == [12] * len(PROMPTS) and stats.nfe == 12 == len(log)
    assert stats.nfe_per_token == 1.0


def test_nothing_after_eos():
    """A model that likes EOS writes it at random places; every sampler cuts the output right after it."""
    def likes_eos(logits, positions):
        logits[..., EOS] += 3.0
        return logits

    for attention in ("block_causal", "bidirectional"):
        for seed in range(3):
            model = tiny_model(attention, seed=seed)
            wrap_forward(model, likes_eos)
            for cache in (True, False):
                out, stats = block_diffusion_generate(model, PROMPTS, block_size=8, threshold=0.3,
                                                      max_new_tokens=48, cache=cache)
                assert_clean(out, stats)
            out, stats = llada_generate(model, PROMPTS, gen_length=32, steps=16, block_length=8)
            assert_clean(out, stats)
            out, stats = length_bound_generate(model, PROMPTS, max_length=32)
            assert_clean(out, stats)
    causal = tiny_model("causal", sharpen=1.0)
    wrap_forward(causal, likes_eos)
    out, stats = autoregressive_generate(causal, PROMPTS, max_new_tokens=30, temperature=1.0,
                                         generator=torch.Generator().manual_seed(0))
    assert_clean(out, stats)
    assert any(stats.finished)


def test_trim_at_eos():
    assert trim_at_eos([1, 2, EOS, 3, EOS], EOS) == [1, 2, EOS]
    assert trim_at_eos([1, 2], EOS) == [1, 2]
    assert trim_at_eos([], EOS) == []


# -----------------------------------------------------------------------------
# Determinism, schedules, prompts

def test_deterministic():
    model = tiny_model("bidirectional")
    kw = dict(block_size=8, threshold=0.3, max_new_tokens=24)
    assert block_diffusion_generate(model, PROMPTS, **kw)[0] == block_diffusion_generate(model, PROMPTS, **kw)[0]
    a = llada_generate(model, PROMPTS, gen_length=16, steps=8, block_length=8)[0]
    assert a == llada_generate(model, PROMPTS, gen_length=16, steps=8, block_length=8)[0]
    sampled = [block_diffusion_generate(model, PROMPTS, temperature=1.0, generator=torch.Generator().manual_seed(1),
                                        **kw)[0] for _ in range(2)]
    assert sampled[0] == sampled[1]
    sampled = [llada_generate(model, PROMPTS, gen_length=16, steps=8, block_length=8, temperature=1.0,
                              remasking="random", generator=torch.Generator().manual_seed(1))[0] for _ in range(2)]
    assert sampled[0] == sampled[1]


# (masked count, steps) -> LLaDA's get_num_transfer_tokens, written out by hand
LLADA_SCHEDULES = [
    (32, 4, [8, 8, 8, 8]),
    (10, 4, [3, 3, 2, 2]),
    (7, 3, [3, 2, 2]),
    (5, 8, [1, 1, 1, 1, 1, 0, 0, 0]),
    (32, 32, [1] * 32),
    (64, 5, [13, 13, 13, 13, 12]),
    (1, 1, [1]),
    (0, 3, [0, 0, 0]),
]


@pytest.mark.parametrize("count,steps,expected", LLADA_SCHEDULES)
def test_step_schedule_matches_llada(count, steps, expected):
    assert num_transfer_tokens(torch.tensor([count, count]), steps).tolist() == [expected, expected]


def test_llada_commits_per_schedule():
    """The number of masks left after each step of llada_generate follows LLaDA's schedule, block by block."""
    model = tiny_model("bidirectional")
    masks = []
    llada_generate(model, PROMPTS, gen_length=16, steps=6, block_length=8,
                   trace=lambda canvas: masks.append([row.count(MASK) for row in canvas]))
    per_block = [3, 3, 2]  # 3 steps per block of 8: LLaDA's schedule (LLADA_SCHEDULES)
    left, expected = 16, []
    for _ in range(2):
        for k in per_block:
            left -= k
            expected.append([left] * len(PROMPTS))
    assert masks == expected


def test_llada_matches_reference_loop():
    """Our llada_generate computes logits only on the current block; a literal transcription of LLaDA's loop
    (logits everywhere, -inf confidence beyond the block, torch.topk row by row) gives the same tokens."""
    model = tiny_model("bidirectional", sharpen=5.0)
    prompt = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    gen_length, steps, block_length = 24, 12, 8
    x = torch.cat([prompt, torch.full((2, gen_length), MASK)], dim=1)
    P, n_blocks = prompt.shape[1], gen_length // block_length
    with torch.no_grad():
        for b in range(n_blocks):
            block_masks = (x[:, P + b * block_length:P + (b + 1) * block_length] == MASK).sum(1)
            schedule = num_transfer_tokens(block_masks, steps // n_blocks).tolist()
            for i in range(steps // n_blocks):
                masked = x == MASK
                logits = model(x)
                x0 = logits.argmax(-1)
                p = torch.softmax(logits.double(), -1).gather(-1, x0[..., None]).squeeze(-1)
                p[:, P + (b + 1) * block_length:] = float("-inf")
                x0 = torch.where(masked, x0, x)
                confidence = torch.where(masked, p, torch.tensor(float("-inf"), dtype=torch.float64))
                for j in range(2):
                    chosen = confidence[j].topk(schedule[j][i]).indices
                    x[j, chosen] = x0[j, chosen]
    ours, _ = llada_generate(model, prompt, gen_length=gen_length, steps=steps, block_length=block_length)
    assert ours == [trim_at_eos(row, EOS) for row in x[:, P:].tolist()]


def test_llada_rejects_bad_shapes():
    model = tiny_model("bidirectional")
    with pytest.raises(ValueError, match="multiple of block_length"):
        llada_generate(model, PROMPTS, gen_length=20, block_length=8)
    with pytest.raises(ValueError, match="multiple of the number of blocks"):
        llada_generate(model, PROMPTS, gen_length=16, steps=5, block_length=8)
    with pytest.raises(ValueError, match="max_seq_len"):
        block_diffusion_generate(model, PROMPTS, max_new_tokens=300)
    with pytest.raises(ValueError, match="mask id"):
        block_diffusion_generate(model, [[1, MASK, 2]], max_new_tokens=8)


def test_special_token_text_in_prompts_is_ordinary_text():
    from nanodllm.tokenizer import get_tokenizer
    tok = get_tokenizer()
    texts = ["Once upon a time <|endoftext|> there was", "The [MASK] sat on the [PAD] mat."]
    prompts = [tok.encode(t) for t in texts]
    special = {tok.eos_id, tok.mask_id, tok.pad_id}
    assert not special & set(sum(prompts, []))
    assert [tok.decode(p) for p in prompts] == texts
    model = tiny_model("bidirectional", vocab_size=tok.vocab_size, sharpen=1.0, mask_id=tok.mask_id,
                       eos_id=tok.eos_id, pad_id=tok.pad_id)  # GPT-2's vocabulary, tiny layers
    out, stats = block_diffusion_generate(model, prompts, block_size=8, max_new_tokens=16)
    assert len(out) == 2 and all(0 < len(o) <= 16 and tok.mask_id not in o for o in out)
    assert all(isinstance(tok.decode(o), str) for o in out)
    out, stats = llada_generate(model, prompts, gen_length=8, steps=4, block_length=8)
    assert len(out) == 2 and stats.nfe == 4


def test_left_pad():
    assert left_pad([[1, 2], [3], []], PAD) == ([[1, 2], [PAD, 3], [PAD, PAD]], [0, 1, 2])
    assert left_pad(torch.tensor([[1], [2]]), PAD) == ([[1], [2]], [0, 0])
    # by whole blocks of 4: every prompt starts on a block boundary and ends in the last block (at 2, 1, 0, 3)
    rows, n_pad = left_pad([[1, 2], list(range(10, 19)), [3, 4, 5, 6], [7, 8, 9]], PAD, block=4)
    assert n_pad == [8, 0, 4, 8] and rows[0] == [PAD] * 8 + [1, 2] and rows[2] == [PAD] * 4 + [3, 4, 5, 6]
    assert [len(r) for r in rows] == [10, 9, 8, 11]


def test_a_prompt_multiple_pads_the_canvas_to_one_width():
    """prompt_multiple: prompts of different lengths give canvases of one width (more left padding), and each row
    keeps the positions and real keys it had: it still computes as if alone."""
    model = tiny_model("causal")
    widths = set()
    for prompts in ([[5, 6, 7]], [[5] * 11], [[5, 6], [7, 8, 9, 10, 11]]):
        x, starts, key_mask, positions = make_canvas(model, prompts, 4, PAD, "test", prompt_multiple=16)
        plain = make_canvas(model, prompts, 4, PAD, "test")
        widths.add(x.shape[1])
        extra = x.shape[1] - plain[0].shape[1]
        assert starts == [s + extra for s in plain[1]] and torch.equal(x[:, extra:], plain[0])
        assert not key_mask[:, :extra].any() and key_mask[:, extra:].sum() == sum(map(len, prompts)) + 4 * len(prompts)
        real = key_mask[:, extra:]
        plain_positions = plain[3] if plain[3] is not None else torch.arange(plain[0].shape[1]).expand_as(real)
        assert torch.equal(positions[:, extra:][real], plain_positions[real])
    assert widths == {16 + 4}


# -----------------------------------------------------------------------------
# The autoregressive baseline and the length bound

@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_ar_cache_equals_recompute(temperature):
    model = tiny_model("causal", sharpen=3.0)
    runs = [autoregressive_generate(model, PROMPTS, max_new_tokens=20, temperature=temperature, top_p=0.95,
                                    cache=cache, generator=torch.Generator().manual_seed(0))
            for cache in (True, False)]
    assert runs[0][0] == runs[1][0]
    assert_clean(*runs[0])
    if temperature == 0:  # and a row's tokens do not depend on its batch
        assert runs[0][0] == [autoregressive_generate(model, [p], max_new_tokens=20)[0][0] for p in PROMPTS]


@pytest.mark.parametrize("kwargs", [{}, dict(cuda_graphs=True)])
def test_ar_slots_write_what_each_prompt_writes_alone(kwargs):
    """AR slots: 12 prompts of 1 to 12 tokens in 3 rows, each at its own column; rows stop at an EOS at position
    19 or at the cap of 14 tokens, and a finished row's slot takes the next prompt. The prompts' keys and values
    come from one batched pass first (12 rows of the longest prompt's 12 columns); then every pass feeds one
    token per row. Every prompt gets the tokens it gets alone, and the rows never wait for each other: a prompt
    costs its row of the prefill and one row-pass per token it writes, none for walking through its prompt."""
    model = tiny_model("causal", sharpen=3.0)
    log = wrap_forward(model, eos_every(19))
    prompts = [list(range(1, n + 1)) for n in range(1, 13)]
    out, stats = autoregressive_generate(model, prompts, max_new_tokens=14, slots=3, **kwargs)
    assert [shape for _, shape in log[:1]] == [(12, 12)] and {shape for _, shape in log[1:]} == {(3, 1)}
    assert len(log) == stats.nfe + 1  # one more pass ran while the host read the last one's flag
    assert out == [autoregressive_generate(model, [p], max_new_tokens=14)[0][0] for p in prompts]
    assert 0 < sum(stats.finished) < len(prompts)  # some rows end by EOS, some at the cap
    assert stats.row_nfe == len(prompts) + sum(len(o) for o in out)
    assert stats.nfe < 1.1 * stats.row_nfe / 3  # the 3 rows stay busy to the end
    assert_clean(out, stats)
    wrap_forward(model, no_eos)  # every row to the cap: the longest one ends at the canvas's last column
    out, stats = autoregressive_generate(model, prompts, max_new_tokens=14, slots=3, **kwargs)
    assert out == [autoregressive_generate(model, [p], max_new_tokens=14)[0][0] for p in prompts]
    assert not any(stats.finished) and {len(o) for o in out} == {14}
    for bad, message in [(dict(slots=0), "slots must be >= 1"), (dict(slots=2, cache=False), "cache=True"),
                         (dict(slots=2, trace=print), "trace"), (dict(slots=2, max_new_tokens=250), "max_seq_len"),
                         (dict(slots=2, compile=True, cuda_graphs=True, temperature=1.0), "temperature=0")]:
        with pytest.raises(ValueError, match=message):
            autoregressive_generate(model, prompts, **bad)


def test_ar_slots_prefill_the_prompts_in_passes_of_prefill_rows(monkeypatch):
    """More prompts than PREFILL_ROWS: their keys and values come from several prefill passes (5, 5 and 2 rows
    of the longest prompt's columns), each counted, and the tokens are those of one prefill pass."""
    from nanodllm import sampler
    model = tiny_model("causal", sharpen=3.0)
    prompts = [list(range(1, n + 1)) for n in range(1, 13)]
    one_pass = autoregressive_generate(model, prompts, max_new_tokens=6, slots=3)
    monkeypatch.setattr(sampler, "PREFILL_ROWS", 5)
    log = wrap_forward(model)
    out, stats = autoregressive_generate(model, prompts, max_new_tokens=6, slots=3)
    assert [shape for _, shape in log[:4]] == [(5, 12), (5, 12), (2, 12), (3, 1)]
    assert out == one_pass[0] and stats.nfe == one_pass[1].nfe + 2 and stats.row_nfe == one_pass[1].row_nfe


def test_ar_needs_a_causal_model():
    with pytest.raises(ValueError, match="causal"):
        autoregressive_generate(tiny_model("bidirectional"), PROMPTS, max_new_tokens=4)


def test_length_bound_rounds_to_power_of_two():
    assert [next_power_of_two(n) for n in (1, 2, 3, 5, 8, 9, 100)] == [1, 2, 4, 8, 8, 16, 128]
    model = tiny_model("bidirectional")
    P, max_length = max(map(len, PROMPTS)), 64
    ends = [9, 20, 0, 40]  # where each row's EOS is made the top-1 in the first pass

    def edit(logits, positions):
        if logits.shape[1] == P + max_length:  # the length-probing pass
            logits[..., EOS] = float("-inf")
            for r, e in enumerate(ends):
                logits[r, P + e, EOS] = 1e4
        return logits

    log = wrap_forward(model, edit)
    out, stats = length_bound_generate(model, PROMPTS, max_length=max_length)
    assert stats.info["length_bound"] == [16, 32, 1, 64]  # EOS at index e -> length e + 1 -> power of two
    assert all(len(o) <= b for o, b in zip(out, stats.info["length_bound"]))
    assert stats.nfe == 1 + 16 + 32 + 1 + 64 == len(log)  # the probing pass, then one step per token
    # rows decode in groups of equal bound (here one row each): its own prompt + a canvas of its bound
    expected = [len(p) + b for p, b in zip(PROMPTS, (16, 32, 1, 64)) for _ in range(b)]
    assert sorted(shape[1] for _, shape in log[1:]) == sorted(expected)

    # EOS never the top-1: fall back to the position where P(EOS) is largest
    def edit_soft(logits, positions):
        if logits.shape[1] == P + max_length:
            logits[..., EOS] = float("-inf")
            top = logits.max(dim=-1).values
            logits[:, P + 12, EOS] = top[:, P + 12] - 0.5
        return logits

    model = tiny_model("bidirectional")
    wrap_forward(model, edit_soft)
    _, stats = length_bound_generate(model, PROMPTS, max_length=max_length, steps=4)
    assert stats.info["length_bound"] == [16] * len(PROMPTS) and stats.nfe == 1 + 4


# -----------------------------------------------------------------------------
# Pinned tokens: what every sampler wrote for a fixed seed before the sampler was reorganised as a lesson. A
# refactor must give the same tokens and the same number of forward passes, token for token. (The block_causal
# rows were pinned again when block_causal models began to decode in their own trained blocks, and again when the
# block sampler began to pad each row by whole blocks: each greedy row is now that prompt decoded alone.)

PINNED = [  # (sampler, attention, knobs, forward passes, tokens)
    ('block', 'block_causal', {'block_size': 8, 'threshold': 0.3, 'max_new_tokens': 40}, 10, [
        [59, 59, 59, 59, 59, 62],
        [62],
        [59, 59, 59, 59, 59, 59, 59, 24, 62],
        [62],
    ]),
    ('block', 'block_causal', {'block_size': 8, 'threshold': 0.3, 'max_new_tokens': 40, 'cache': False}, 10, [
        [59, 59, 59, 59, 59, 62],
        [62],
        [59, 59, 59, 59, 59, 59, 59, 24, 62],
        [62],
    ]),
    ('block', 'block_causal', {'block_size': 8, 'threshold': 0.3, 'max_new_tokens': 40, 'cuda_graphs': True}, 10, [
        [59, 59, 59, 59, 59, 62],
        [62],
        [59, 59, 59, 59, 59, 59, 59, 24, 62],
        [62],
    ]),
    ('block', 'block_causal', {'block_size': 6, 'steps_per_block': 3, 'max_new_tokens': 40}, 5, [
        [59, 59, 59, 62],
        [62],
        [24, 24, 59, 59, 59, 59, 59, 62],
        [62],
    ]),
    ('block', 'block_causal', {'block_size': 8, 'threshold': 0.3, 'max_new_tokens': 40, 'temperature': 1.0, 'top_k': 20, 'top_p': 0.9}, 20, [
        [24, 59, 59, 11, 59, 54, 24, 59, 24, 24, 59, 59, 59, 26, 59, 62],
        [62],
        [59, 4, 59, 19, 59, 59, 59, 24, 62],
        [58, 58, 4, 59, 62],
    ]),
    ('block', 'bidirectional', {'block_size': 8, 'threshold': 0.3, 'max_new_tokens': 40}, 14, [
        [59, 59, 59, 59, 59, 59, 59, 59, 24, 24, 24, 62],
        [24, 24, 62],
        [59, 59, 59, 59, 59, 59, 59, 59, 24, 24, 24, 59, 62],
        [62],
    ]),
    ('block', 'bidirectional', {'block_size': 8, 'threshold': 0.3, 'max_new_tokens': 40, 'cuda_graphs': True}, 14, [
        [59, 59, 59, 59, 59, 59, 59, 59, 24, 24, 24, 62],
        [24, 24, 62],
        [59, 59, 59, 59, 59, 59, 59, 59, 24, 24, 24, 59, 62],
        [62],
    ]),
    ('block', 'bidirectional', {'block_size': 8, 'threshold': 0.5, 'max_new_tokens': 40, 'cuda_graphs': True, 'temperature': 1.0}, 16, [
        [24, 59, 59, 58, 59, 59, 59, 59, 54, 24, 4, 59, 59, 24, 62],
        [59, 62],
        [59, 59, 59, 11, 30, 59, 24, 4, 59, 11, 59, 59, 24, 62],
        [11, 62],
    ]),
    ('length_bound', 'bidirectional', {'max_length': 32, 'steps': 8, 'temperature': 1.0}, 17, [
        [62],
        [24, 59, 5, 59, 24, 59, 24, 19, 59, 62],
        [24, 59, 59, 59, 59, 59, 59, 62],
        [59, 59, 59, 19, 19, 62],
    ]),
    ('llada', 'bidirectional', {'gen_length': 16, 'steps': 8, 'block_length': 8}, 8, [
        [59, 59, 59, 59, 59, 59, 59, 59, 24, 24, 62],
        [59, 59, 59, 59, 59, 59, 59, 59, 62],
        [59, 59, 59, 59, 59, 59, 59, 59, 24, 24, 59, 59, 62],
        [59, 59, 59, 59, 59, 59, 59, 59, 62],
    ]),
    ('llada', 'bidirectional', {'gen_length': 16, 'steps': 8, 'block_length': 8, 'cuda_graphs': True}, 8, [
        [59, 59, 59, 59, 59, 59, 59, 59, 24, 24, 62],
        [59, 59, 59, 59, 59, 59, 59, 59, 62],
        [59, 59, 59, 59, 59, 59, 59, 59, 24, 24, 59, 59, 62],
        [59, 59, 59, 59, 59, 59, 59, 59, 62],
    ]),
    ('llada', 'bidirectional', {'gen_length': 16, 'steps': 8, 'block_length': 8, 'temperature': 1.0, 'remasking': 'random'}, 8, [
        [59, 59, 24, 54, 59, 49, 59, 63, 59, 38, 59, 51, 4, 37, 62],
        [24, 59, 62],
        [59, 4, 22, 4, 59, 59, 30, 59, 19, 54, 37, 21, 59, 36, 24, 37],
        [4, 4, 38, 59, 35, 59, 59, 0, 59, 62],
    ]),
    ('length_bound', 'bidirectional', {'max_length': 32}, 49, [
        [62],
        [24, 62],
        [24, 24, 24, 24, 62],
        [62],
    ]),
    ('ar', 'causal', {'max_new_tokens': 20}, 20, [
        [34, 56, 13, 62],
        [28, 3, 34, 56, 54, 5, 46, 56, 54, 5, 46, 56, 54, 0, 21, 55, 24, 27, 31, 16],
        [55, 55, 55, 55, 55, 55, 55, 55, 55, 57, 17, 7, 58, 39, 32, 44, 55, 57, 42, 45],
        [4, 33, 36, 13, 33, 36, 13, 33, 36, 13, 33, 36, 13, 62],
    ]),
    ('ar', 'causal', {'max_new_tokens': 20, 'cache': False}, 20, [
        [34, 56, 13, 62],
        [28, 3, 34, 56, 54, 5, 46, 56, 54, 5, 46, 56, 54, 0, 21, 55, 24, 27, 31, 16],
        [55, 55, 55, 55, 55, 55, 55, 55, 55, 57, 17, 7, 58, 39, 32, 44, 55, 57, 42, 45],
        [4, 33, 36, 13, 33, 36, 13, 33, 36, 13, 33, 36, 13, 62],
    ]),
    ('ar', 'causal', {'max_new_tokens': 20, 'cuda_graphs': True}, 20, [
        [34, 56, 13, 62],
        [28, 3, 34, 56, 54, 5, 46, 56, 54, 5, 46, 56, 54, 0, 21, 55, 24, 27, 31, 16],
        [55, 55, 55, 55, 55, 55, 55, 55, 55, 57, 17, 7, 58, 39, 32, 44, 55, 57, 42, 45],
        [4, 33, 36, 13, 33, 36, 13, 33, 36, 13, 33, 36, 13, 62],
    ]),
    ('ar', 'causal', {'max_new_tokens': 20, 'temperature': 1.0, 'top_p': 0.95}, 20, [
        [63, 9, 62],
        [28, 10, 41, 18, 27, 6, 14, 28, 23, 31, 56, 17, 27, 31, 12, 63, 5, 21, 36, 36],
        [58, 11, 4, 12, 53, 6, 32, 53, 35, 37, 39, 32, 44, 6, 59, 33, 36, 45, 60, 46],
        [20, 45, 32, 31, 34, 18, 36, 35, 5, 22, 52, 61, 61, 29, 0, 6, 13, 45, 36, 36],
    ]),
]


@pytest.mark.parametrize("name,attention,knobs,nfe,expected", PINNED)
def test_pinned_tokens(name, attention, knobs, nfe, expected):
    causal = attention == "causal"
    model = tiny_model(attention, seed=9 if causal else 5, sharpen=5.0 if causal else 10.0)
    generate = {"block": block_diffusion_generate, "llada": llada_generate, "length_bound": length_bound_generate,
                "ar": autoregressive_generate}[name]
    out, stats = generate(model, PROMPTS, generator=torch.Generator().manual_seed(0), **knobs)
    assert out == expected
    assert stats.nfe == nfe


# -----------------------------------------------------------------------------
# One entry point: generate(name, ...) with one set of defaults

DEFAULTS = {
    "llada": dict(gen_length=128, steps=128, block_length=128, temperature=0.0, remasking="low_confidence",
                  cuda_graphs=False),  # steps and block_length: None in the signature, standing for gen_length
    "block": dict(block_size=32, threshold=0.9, steps_per_block=None, max_new_tokens=1024, temperature=0.0,
                  top_k=None, top_p=None, cache=True, eos_frontier=False, cuda_graphs=False, slots=None,
                  compile=False),
    "length_bound": dict(max_length=1024, steps=None, temperature=0.0, remasking="low_confidence"),
    "ar": dict(max_new_tokens=1024, temperature=0.0, top_k=None, top_p=None, cache=True, cuda_graphs=False,
           slots=None, compile=False),
}


def test_one_set_of_defaults():
    assert {name: knobs(name) for name in SAMPLERS} == DEFAULTS
    given = knobs("block", block_size=None, threshold=0.5, gen_length=16)  # None: the default; llada's: ignored
    assert given == DEFAULTS["block"] | dict(threshold=0.5)
    assert knobs("llada", gen_length=64, steps=None) == DEFAULTS["llada"] | dict(gen_length=64, steps=64,
                                                                                 block_length=64)
    with pytest.raises(TypeError, match="blok_size"):
        knobs("block", blok_size=8)
    with pytest.raises(ValueError, match="unknown sampler 'beam'"):
        generate("beam", tiny_model(), PROMPTS)


@pytest.mark.parametrize("name,attention,given", [
    ("llada", "bidirectional", dict(gen_length=16, steps=8, block_length=8, max_new_tokens=99)),
    ("block", "block_causal", dict(block_size=8, threshold=0.3, max_new_tokens=24, gen_length=99)),
    ("length_bound", "bidirectional", dict(max_length=16, steps=4, block_size=99)),
    ("ar", "causal", dict(max_new_tokens=8, top_k=5, temperature=1.0, remasking="random")),
])
def test_generate_dispatches_every_sampler_by_name(name, attention, given):
    model = tiny_model(attention)
    out, stats = generate(name, model, PROMPTS, generator=torch.Generator().manual_seed(0), **given)
    own = {k: v for k, v in given.items() if k in DEFAULTS[name]}
    prompts = [[EOS] + p for p in PROMPTS] if name == "ar" else PROMPTS  # an ar prompt starts as in training
    direct, direct_stats = SAMPLERS[name](model, prompts, generator=torch.Generator().manual_seed(0), **own)
    assert out == direct and stats.nfe == direct_stats.nfe and stats.tokens == direct_stats.tokens


def test_the_ar_prompt_starts_as_in_training():
    """The AR baseline saw every document right after the previous one's EOS; its prompts get that EOS, which
    changes what it writes (the evaluation used to give it prompts without)."""
    model = tiny_model("causal", seed=9, sharpen=5.0)
    with_eos = [[EOS] + p for p in PROMPTS]
    out, _ = generate("ar", model, PROMPTS, max_new_tokens=12)
    assert out == autoregressive_generate(model, with_eos, max_new_tokens=12)[0]
    assert out != autoregressive_generate(model, PROMPTS, max_new_tokens=12)[0]
    assert generate("ar", model, [[]], max_new_tokens=4)[0] == autoregressive_generate(model, [[EOS]],
                                                                                       max_new_tokens=4)[0]


def test_llada_steps_and_block_length_default_to_gen_length():
    model = tiny_model("bidirectional")
    out, stats = generate("llada", model, PROMPTS, gen_length=16)
    assert stats.nfe == 16 and out == llada_generate(model, PROMPTS, gen_length=16, steps=16, block_length=16)[0]


def test_knobs_from_flags():
    import argparse
    flags = argparse.Namespace(block_size=8, no_cache=True, gen_length=None, seed=3, prompt="hi")
    assert knobs_from_flags(flags) == dict(block_size=8, cache=False, gen_length=None)



def test_batches_of_a_block_causal_model_hold_prompts_of_equal_length_modulo_its_block():
    """...unless the sampler pads each row by whole blocks (block_aligned: the block sampler)."""
    prompts = [[1, 2, 3], [4], list(range(5, 14)), [10, 11], list(range(20, 31))]  # lengths 3 1 9 2 11
    assert batches(tiny_model("block_causal"), prompts, 2) == [[1, 2], [3], [0, 4]]  # mod 8: 1, 2, 3; input order
    assert batches(tiny_model("block_causal"), prompts, 5) == [[1, 2], [3], [0, 4]]
    assert batches(tiny_model("block_causal"), prompts, 2, block_aligned=True) == [[0, 1], [2, 3], [4]]
    assert batches(tiny_model("bidirectional"), prompts, 2) == [[0, 1], [2, 3], [4]]  # others: in order


def test_each_row_must_fit_the_model_not_the_canvas():
    """A block_causal model's rows are padded by whole blocks: prompts of 9 and 7 tokens end at columns 9 and 15
    of the canvas (blocks of 8). Each row decodes on its own positions, so 256 - 9 new tokens fit (a canvas of
    262 columns, rows of 256 and 254 positions), each row writing what it writes alone; 256 - 8 do not."""
    model = tiny_model("block_causal")  # max_seq_len 256
    wrap_forward(model, no_eos)
    prompts = [list(range(1, 10)), list(range(1, 8))]
    x, starts, _, positions = make_canvas(model, prompts, 256 - 9, MASK, "test", block=8)
    assert starts == [9, 15] and x.shape[1] == 262 and positions.max(dim=1).values.tolist() == [255, 253]
    together, _ = block_diffusion_generate(model, prompts, threshold=0.9, max_new_tokens=256 - 9)
    alone = [block_diffusion_generate(model, [p], threshold=0.9, max_new_tokens=256 - 9)[0][0] for p in prompts]
    assert together == alone and [len(o) for o in together] == [247, 247]
    with pytest.raises(ValueError, match="max_seq_len"):
        block_diffusion_generate(model, prompts, threshold=0.9, max_new_tokens=256 - 8)


def test_where_a_prompt_ends_in_its_decoding_blocks():
    block_causal, other = tiny_model("block_causal"), tiny_model("bidirectional")  # attn_block_size 8
    assert [block_offset(block_causal, n) for n in (3, 8, 11)] == [3, 0, 3]  # blocks from the row's start
    assert [block_offset(other, n) for n in (3, 8, 11)] == [0, 0, 0]  # blocks from the prompt's end
    assert (decoding_block_size(block_causal, 32), decoding_block_size(other, 32)) == (8, 32)


def fill_cascade(model, prompt_len: int, block: int):
    """Replaces model.forward by a model that writes block_pad's fill: sure of an EOS at a block's last slot and
    at every slot whose right neighbour holds an EOS, sure of no EOS elsewhere, and unsure of any text."""
    orig = model.forward

    def forward(idx, *, positions=None, attn_mask=None, kv_cache=None, write_at=None, logits_at=None):
        logits = orig(idx, positions=positions, attn_mask=attn_mask, kv_cache=kv_cache, write_at=write_at) * 0.01
        offset = kv_cache.length if kv_cache is not None else 0
        columns = torch.arange(offset, offset + idx.shape[1])
        last = ((columns - prompt_len) % block == block - 1) & (columns >= prompt_len)
        right_is_eos = F.pad(idx[:, 1:] == EOS, (0, 1))
        logits[..., EOS] = torch.where(last | right_is_eos, 1e4, -1e4)
        return logits if logits_at is None else logits[logits_at]

    model.forward = forward


@pytest.mark.parametrize("cache", [True, False])
def test_eos_frontier_decides_the_stop_left_to_right(cache):
    prompt = [[5, 6, 7]]
    model = tiny_model("bidirectional")
    fill_cascade(model, len(prompt[0]), 8)
    kw = dict(block_size=8, threshold=0.9, max_new_tokens=16, cache=cache)
    out, stats = block_diffusion_generate(model, prompt, **kw)
    assert out == [[EOS]]  # the fill committed from the block's end leftwards, down to its first slot
    out, stats = block_diffusion_generate(model, prompt, eos_frontier=True, **kw)
    assert len(out[0]) == 8 and out[0][-1] == EOS  # text up to the block's last slot, then the EOS
    assert_clean(out, stats)
