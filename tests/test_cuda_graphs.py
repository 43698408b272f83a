"""Tests of the samplers' fixed-shape passes (nanodllm/cuda_graphs.py).

On the CPU the fixed-shape passes run eagerly: they must give exactly the tokens of the ordinary passes, with
rows finishing at different times (finished rows ride along instead of leaving the batch). On a CUDA device the
same passes are recorded as graphs and replayed; that test skips without CUDA.
"""

import pytest
import torch

from nanodllm import cuda_graphs
from nanodllm.cuda_graphs import GraphedForward, recordings
from nanodllm.model import KVCache
from nanodllm.sampler import CommitBlock, autoregressive_generate, block_diffusion_generate, llada_generate
from nanodllm.system import inference_weights
from tests.test_sampler import EOS, PROMPTS, assert_clean, no_eos, tiny_model, wrap_forward


CUDA = pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"))


def eos_at_12(logits, positions):
    """EOS at RoPE position 12: the rows' prompts have different lengths, so they stop after different numbers
    of generated tokens, and at different steps."""
    logits[..., EOS] = torch.where(positions == 12, 1e4, logits[..., EOS])  # no boolean indexing: no GPU sync
    return logits


def run_both(generate, model, **kw):
    """(eager run, fixed-shape run) of one sampler, same seed."""
    device = next(model.parameters()).device
    return [generate(model, PROMPTS, cuda_graphs=graphs, generator=torch.Generator(device).manual_seed(0), **kw)
            for graphs in (False, True)]


def model_on(device, attention, seed=0, sharpen=30.0, output_shift=False):
    return tiny_model(attention, seed=seed, sharpen=sharpen, output_shift=output_shift).to(device)


def check_same(runs):
    (eager, s_eager), (fixed, s_fixed) = runs
    assert fixed == eager
    assert s_fixed.finished == s_eager.finished and s_fixed.nfe == s_eager.nfe
    assert s_fixed.row_nfe == s_eager.row_nfe  # rows riding along are not counted
    assert_clean(fixed, s_fixed)
    return s_eager


@pytest.mark.parametrize("attention, output_shift", [("block_causal", False), ("bidirectional", False),
                                                     ("block_causal", True)])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("knobs", [dict(threshold=0.3), dict(steps_per_block=4), dict(eos_frontier=True)])
def test_block_sampler_fixed_shapes_same_tokens(attention, output_shift, seed, knobs):
    model = model_on("cpu", attention, seed, output_shift=output_shift)
    wrap_forward(model, eos_at_12)
    stats = check_same(run_both(block_diffusion_generate, model, block_size=8, max_new_tokens=44, **knobs))
    assert 0 < sum(stats.finished) and len(set(stats.tokens)) > 1  # rows did stop, at different places


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_slots_replay_one_graph_with_the_eager_tokens(device):
    """slots: every pass has one shape (each slot's two blocks over the whole cache, the columns per row), so one
    recording of the whole pass, its inputs and bookkeeping included, serves the whole call; its replays give the
    eager run's tokens and pass counts."""
    model = model_on(device, "block_causal")
    wrap_forward(model, eos_at_12)
    stats = check_same(run_both(block_diffusion_generate, model, threshold=0.3, max_new_tokens=30, slots=2))
    assert sum(stats.finished) > 0 and len(set(stats.tokens)) > 1  # rows did stop, at different places
    if device == "cuda":
        graphs = [g for g in model.__dict__["_decoding_recordings"].values() if g.kv_cache is not None]
        assert [(len(g.graphs), len(g.loops)) for g in graphs] == [(0, 1)]


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_compiled_slots_give_the_eager_tokens(device):
    """compile=True: the slots' pass through torch.compile (one graph: fullgraph), then recorded; the same tokens
    and pass counts as the eager pass. On the CPU it compiles for the CPU and runs without graphs."""
    model = model_on(device, "block_causal")
    wrap_forward(model, eos_at_12)
    knobs = dict(threshold=0.3, max_new_tokens=30, slots=2, generator=torch.Generator(device).manual_seed(0))
    runs = [block_diffusion_generate(model, PROMPTS, **knobs),
            block_diffusion_generate(model, PROMPTS, cuda_graphs=True, compile=True, **knobs)]
    stats = check_same(runs)
    assert sum(stats.finished) > 0 and len(set(stats.tokens)) > 1


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_compiled_ar_gives_the_eager_tokens_with_one_compilation(device):
    """compile=True: the AR model's one-token pass through torch.compile, then recorded; the same tokens and pass
    counts as the eager passes, rows stopping at different steps. The prompts are padded to one canvas width, so
    that calls on prompts of every length at batch 1 share one KV cache shape and one compiled pass."""
    torch._dynamo.reset()
    causal = model_on(device, "causal", sharpen=1.0)
    runs = [autoregressive_generate(causal, PROMPTS, max_new_tokens=30, cuda_graphs=graphs, compile=graphs)
            for graphs in (False, True)]
    check_same(runs)
    for prompt in PROMPTS:  # lengths 1 to 7
        alone = [autoregressive_generate(causal, [prompt], max_new_tokens=30, cuda_graphs=graphs, compile=graphs)
                 for graphs in (False, True)]
        assert alone[0][0] == alone[1][0]
    one_row = [g for key, g in causal._decoding_recordings.items() if key[1][0][1] == 1]  # batch 1's caches
    assert len(one_row) == 1 and sum(key[-1] for key in {**one_row[0].graphs, **one_row[0].compiled}) == 1
    with pytest.raises(ValueError, match="cuda_graphs"):
        autoregressive_generate(causal, PROMPTS, max_new_tokens=4, compile=True)


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_ar_slots_replay_one_graph_with_the_eager_tokens(device):
    """AR slots: every pass has one shape (one token per row, the whole cache), so one recording of the whole
    pass, its inputs and bookkeeping included, serves the whole call; its replays give the eager run's tokens and
    pass counts, rows stopping at different steps. Compiled too, on a model without the test's wrapper (whose log
    of calls torch.compile would recompile for at every pass)."""
    causal = model_on(device, "causal", sharpen=1.0)
    wrap_forward(causal, eos_at_12)
    stats = check_same(run_both(autoregressive_generate, causal, max_new_tokens=30, slots=2))
    assert sum(stats.finished) > 0 and len(set(stats.tokens)) > 1
    if device == "cuda":
        graphs = [g for g in causal.__dict__["_decoding_recordings"].values() if g.kv_cache is not None]
        assert [(len(g.graphs), len(g.loops)) for g in graphs] == [(0, 1)]
    causal = model_on(device, "causal", sharpen=1.0)
    runs = [autoregressive_generate(causal, PROMPTS, max_new_tokens=30, slots=2, cuda_graphs=graphs,
                                    compile=graphs) for graphs in (False, True)]
    check_same(runs)


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_each_flag_is_read_while_the_next_run_goes(device):
    """flags_one_ahead: every run's flag in order, each read after the next run was queued, so that one more run
    has been made when the caller stops; the flags are the runs' own, though every run overwrites its output."""
    count = torch.zeros((), dtype=torch.long, device=device)
    output = torch.zeros((), dtype=torch.bool, device=device)
    runs, seen = [], []

    def step():
        count.add_(1)
        runs.append(len(seen))  # how many flags the host had read when this run was queued
        return output.copy_(count < 4)  # the same memory every run, as a replay's output
    for flag in cuda_graphs.flags_one_ahead(step, device):
        seen.append(flag)
        if not flag:
            break
    assert seen == [True, True, True, False] and count.item() == 5 and runs == [0, 0, 1, 2, 3]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_a_loop_replays_its_step_on_its_own_state():
    """GraphedForward.loop: the step updates the state in place at every replay (recording it does not), and a
    later loop with the same key decodes on the recorded tensors, holding its own values."""
    def step(n, total):
        n += 1
        total += n
        return total * 10
    graphed = recordings(model_on("cuda", "block_causal"), None)
    state, run = graphed.loop(step, dict(n=torch.zeros(2, device="cuda"), total=torch.zeros(2, device="cuda")),
                              key="count")
    assert state["n"].tolist() == [0, 0]  # recorded, not run
    outputs = [run().tolist() for _ in range(3)]
    assert outputs == [[10, 10], [30, 30], [60, 60]] and state["total"].tolist() == [6, 6]
    fresh = dict(n=torch.tensor([5.0, 0.0], device="cuda"), total=torch.zeros(2, device="cuda"))
    again, run = graphed.loop(step, fresh, key="count")
    assert again["n"] is state["n"] and run().tolist() == [60, 10] and len(graphed.loops) == 1


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("generate, attention, knobs", [
    (block_diffusion_generate, "bidirectional", dict(block_size=8, threshold=0.3, max_new_tokens=20)),
    (block_diffusion_generate, "block_causal", dict(threshold=0.3, max_new_tokens=20, slots=1)),
    (autoregressive_generate, "causal", dict(max_new_tokens=20))])
def test_sampling_from_a_generator_stays_outside_the_graph(device, generate, attention, knobs):
    """With temperature > 0 the bookkeeping draws from the caller's generator, which a replay would repeat: it
    runs after the (fixed-shape) pass instead. One prompt, so that no row leaves the eager batch and both runs
    draw noise of the same shapes: the same seed gives the same tokens."""
    model = model_on(device, attention, sharpen=1.0)
    runs = [generate(model, PROMPTS[:1], cuda_graphs=graphs, temperature=1.0,
                     generator=torch.Generator(device).manual_seed(0), **knobs) for graphs in (False, True)]
    assert runs[0][0] == runs[1][0]
    commit = dict(mask_id=0, eos_id=1, threshold=0.9)
    assert not CommitBlock(**commit, temperature=1.0).graphable and CommitBlock(**commit).graphable


def test_the_bookkeeping_is_part_of_a_recordings_key():
    """Recorded into the graph, the commit's settings are frozen into it: another threshold needs another
    recording, the same settings (a new object, as each sampler call makes) reuse it; the generator is no
    setting (a graphable commit draws nothing from it)."""
    x = torch.zeros(2, 8, dtype=torch.long)
    inputs = dict(idx=x, positions=None, attn_mask=torch.ones(2, 1, 8, 8, dtype=torch.bool), write_at=None)
    key, block = GraphedForward.shapes_key, (slice(None), slice(0, 4))
    commit = CommitBlock(mask_id=3, eos_id=1, threshold=0.9)
    assert key(inputs, block, commit) == key(inputs, block, CommitBlock(mask_id=3, eos_id=1, threshold=0.9,
                                                                    generator=torch.Generator()))
    assert key(inputs, block, commit) != key(inputs, block, CommitBlock(mask_id=3, eos_id=1, threshold=0.7))
    assert key(inputs, block, commit) != key(inputs, block)  # the forward alone


def test_ar_and_llada_fixed_shapes_same_tokens():
    causal = model_on("cpu", "causal", sharpen=1.0)
    wrap_forward(causal, eos_at_12)
    # greedy: with sampling, rows that leave the batch change the shape of the noise drawn for the others
    stats = check_same(run_both(autoregressive_generate, causal, max_new_tokens=30))
    assert sum(stats.finished) > 0 and len(set(stats.tokens)) > 1
    model = model_on("cpu", "bidirectional")
    check_same(run_both(llada_generate, model, gen_length=32, steps=16, block_length=8))


def test_fixed_shapes_need_the_cache():
    with pytest.raises(ValueError, match="cache"):
        block_diffusion_generate(tiny_model(), PROMPTS, cache=False, cuda_graphs=True)
    with pytest.raises(ValueError, match="cache"):
        autoregressive_generate(tiny_model("causal"), PROMPTS, max_new_tokens=4, cache=False, cuda_graphs=True)


def test_recordings_are_kept_per_model_and_cache_shape():
    """A later sampler call finds the earlier call's GraphedForward (and its recordings) when the weights and the
    KV cache's shape are the same, and its cache adopts the buffers the recordings froze; another shape, another
    model or moved weights get their own."""
    model, other = tiny_model(), tiny_model()
    first, second = KVCache.for_model(model, 2, 40), KVCache.for_model(model, 2, 40)
    graphed = recordings(model, first)
    assert recordings(model, second) is graphed and graphed.kv_cache is second
    assert second.k is first.k and second.v is first.v
    assert recordings(model, KVCache.for_model(model, 3, 40)) is not graphed  # another batch size
    assert recordings(model) is recordings(model) is not graphed  # passes without a cache
    assert recordings(other, KVCache.for_model(other, 2, 40)) is not graphed
    model.double()  # new weight tensors: recordings of the old addresses would read freed memory
    assert recordings(model, KVCache.for_model(model, 2, 40)) is not graphed


def test_a_recording_per_logits_block_and_input_shape():
    x = torch.zeros(2, 8, dtype=torch.long)
    inputs = dict(idx=x, positions=None, attn_mask=torch.ones(2, 1, 8, 8, dtype=torch.bool), write_at=None)
    key = GraphedForward.shapes_key
    block = (slice(None), slice(0, 4))
    assert key(inputs, block) == key(dict(inputs, idx=x + 1), (slice(None), slice(0, 4)))  # values do not count
    assert key(inputs, block) != key(inputs, (slice(None), slice(4, 8)))  # LLaDA's blocks: one recording each
    assert key(inputs, block) != key(dict(inputs, idx=x[:1]), block)
    assert key(inputs, block) != key(dict(inputs, positions=torch.zeros(2, 8, dtype=torch.long)), block)


def test_a_second_fixed_shape_call_reuses_the_first_ones_cache_and_gives_its_tokens():
    model = model_on("cpu", "bidirectional")
    wrap_forward(model, eos_at_12)
    runs = [block_diffusion_generate(model, PROMPTS, block_size=8, threshold=0.3, max_new_tokens=44, cuda_graphs=True)
            for _ in range(2)]
    assert runs[0][0] == runs[1][0] and len(model._decoding_recordings) == 1


def graphed_sampler_calls(device):
    """((causal model, diffusion model, block_causal model), a call of each graphed sampler on them: block,
    LLaDA's vanilla, AR, the block sampler's slots), the rows stopping at different steps (eos_at_12)."""
    models = causal, model, blocks = [model_on(device, attention, sharpen=1.0 if attention == "causal" else 30.0)
                                      for attention in ("causal", "bidirectional", "block_causal")]
    for m in models:
        wrap_forward(m, eos_at_12)
    return models, [
        lambda: block_diffusion_generate(model, PROMPTS, block_size=8, threshold=0.3, max_new_tokens=44,
                                         cuda_graphs=True),
        lambda: llada_generate(model, PROMPTS, gen_length=32, steps=16, block_length=8, cuda_graphs=True),
        lambda: autoregressive_generate(causal, PROMPTS, max_new_tokens=30, cuda_graphs=True),
        lambda: block_diffusion_generate(blocks, PROMPTS, threshold=0.3, max_new_tokens=30, slots=2,
                                         cuda_graphs=True)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_a_second_call_records_nothing_and_gives_the_same_tokens(monkeypatch):
    """What bench_sampler times: a call that replays only. Every graphed sampler, alike."""
    recorded = []
    record = cuda_graphs.record
    monkeypatch.setattr(cuda_graphs, "record", lambda fn, tensors, pool: recorded.append(1) or record(fn, tensors, pool))
    _, calls = graphed_sampler_calls("cuda")
    for call in calls:
        recorded.clear()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            first = call()
            n = len(recorded)
            second = call()
        assert n > 0 and len(recorded) == n  # the second call only replayed
        assert second[0] == first[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_linear_weights_stored_in_bf16_replay_the_same_tokens():
    """system.inference_weights takes the weight casts out of the recorded passes; the tokens stay the same, for
    every graphed sampler. (The weights move, so the bf16 model gets recordings of its own.)"""
    models, calls = graphed_sampler_calls("cuda")
    model = models[1]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        fp32_weights = [call()[0] for call in calls]
        for m in models:
            inference_weights(m, torch.device("cuda"), "bfloat16")
        assert model.transformer.ff_out.weight.dtype == torch.bfloat16
        assert [call()[0] for call in calls] == fp32_weights


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_cuda_graphs_recorded_once_and_replayed(monkeypatch):
    """On the GPU: the replays give the eager tokens, and each pass shape is recorded once, however many steps
    take it: the block sampler has at most two (a block alone, a finished block with the next one)."""
    recorded = []
    record = GraphedForward._record
    monkeypatch.setattr(GraphedForward, "_record",
                        lambda self, inputs, *at: recorded.append(inputs["idx"].shape) or record(self, inputs, *at))
    model = model_on("cuda", "block_causal")
    wrap_forward(model, no_eos)  # no row stops: seven blocks of 8 (the model's own), the first holding the prompt
    stats = check_same(run_both(block_diffusion_generate, model, block_size=8, threshold=0.3, max_new_tokens=49))
    P = max(len(p) for p in PROMPTS) // 8 * 8 + 8  # the prefill: the prompts' whole blocks and the first masks
    assert len(recorded) == len(set(recorded)) and {shape[1] for shape in recorded} <= {P, 8, 16}
    assert stats.nfe > len(recorded)  # every pass replays a recording, the bookkeeping inside

    recorded.clear()
    causal = model_on("cuda", "causal", sharpen=1.0)
    wrap_forward(causal, eos_at_12)
    stats = check_same(run_both(autoregressive_generate, causal, max_new_tokens=30))
    assert len(recorded) == 2 and stats.nfe > 3  # the prefill, then one token per row
    model = model_on("cuda", "bidirectional")
    check_same(run_both(llada_generate, model, gen_length=32, steps=16, block_length=8))
    same_length = [p[:1] for p in PROMPTS]  # no padding: positions and key mask are None
    runs = [llada_generate(model, same_length, gen_length=32, steps=16, block_length=8, cuda_graphs=graphs)
            for graphs in (False, True)]
    assert runs[0][0] == runs[1][0]
