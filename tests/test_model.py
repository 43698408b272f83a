from dataclasses import replace

import pytest
import torch

from nanodllm import recipes
from nanodllm.config import TrainConfig
from nanodllm import model as model_module
from nanodllm.model import KVCache, RMSNorm, Transformer, attention_bias, attention_mask, preset
from nanodllm.tokenizer import EOS_ID
from tests.conftest import tiny_model

V = 50304


def test_shapes_and_logits_only_where_asked():
    model = tiny_model()
    idx = torch.randint(0, 50257, (2, 12))
    full = model(idx)
    assert full.shape == (2, 12, V)
    where = torch.zeros(2, 12, dtype=torch.bool)
    where[0, 3] = where[1, 7] = where[1, 11] = True
    picked = model(idx, logits_at=where)
    assert picked.shape == (3, V)
    torch.testing.assert_close(picked, full[where])


# -----------------------------------------------------------------------------
# The one mask builder, on a hand-made row of 5 columns: [pad, a, b, EOS, c]

O, X = False, True
COLUMNS = torch.arange(5)


@pytest.mark.filterwarnings("ignore:Mismatch dtype")  # bf16 input, fp32 weight: right, but not the fused kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_is_computed_in_float32_and_returned_in_the_input_dtype(dtype):
    norm = RMSNorm(16, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2.0, 16))
    x = (torch.randn(2, 3, 16) * 100).to(dtype)
    x32 = x.float()
    expected = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight  # LLaDA's, in fp32
    y = norm(x)
    assert y.dtype == dtype
    assert torch.allclose(y.float(), expected.to(dtype).float(), rtol=1e-6, atol=1e-6)


def test_rms_norm_decoding_under_autocast_casts_once_for_its_linears_with_the_same_bits():
    """Without autograd, under autocast, the norm comes out in bf16, so that its three readers (q, k, v) need no
    cast each; they compute what they computed from the float32 output they cast themselves. With autograd it
    stays float32 (its readers' gradients are then summed in float32)."""
    torch.manual_seed(0)
    norm, linear = RMSNorm(16, eps=1e-5), torch.nn.Linear(16, 8, bias=False)
    x = torch.randn(2, 3, 16) * 10
    with torch.autocast("cpu", dtype=torch.bfloat16):
        training = norm(x)
        with torch.no_grad():
            decoding = norm(x)
            assert torch.equal(linear(decoding), linear(training))
    assert training.dtype == torch.float32 and decoding.dtype == torch.bfloat16
    assert torch.equal(decoding, training.to(torch.bfloat16))
    with torch.no_grad():
        assert norm(x).dtype == torch.float32  # no autocast: x's dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotary_is_llada_rotate_half_in_float32_bit_for_bit(dtype):
    """apply_rotary with the table's signed sin and a roll gives LLaMA's/LLaDA's rotate-half formula exactly."""
    from nanodllm.model import Rotary, apply_rotary
    rotary = Rotary(head_dim=8, max_seq_len=32, theta=10000.0)
    positions = torch.tensor([[0, 3, 7, 31], [1, 2, 5, 9]])
    cos, sin = rotary(positions)  # (B, 1, T, D)
    x = torch.randn(2, 3, 4, 8).to(dtype)
    x32 = x.float()
    x1, x2 = x32.chunk(2, dim=-1)
    angles = torch.outer(positions.flatten().float(), 1 / 10000.0 ** (torch.arange(0, 8, 2) / 8)).view(2, 1, 4, 4)
    c, s = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
    expected = (x32 * c + torch.cat([-x2, x1], dim=-1) * s).to(dtype)
    assert torch.equal(apply_rotary(x, cos, sin), expected)


def test_mask_row_attention_hides_only_padding_and_a_pad_sees_itself():
    real = torch.tensor([[O, X, X, X, X]])  # column 0 is left padding
    assert attention_mask(COLUMNS, COLUMNS, real_keys=real)[0, 0].tolist() == [
        [X, X, X, X, X],  # the pad query: the real keys and itself (a query is never left with no key)
        [O, X, X, X, X],
        [O, X, X, X, X],
        [O, X, X, X, X],
        [O, X, X, X, X],
    ]
    assert attention_mask(COLUMNS, COLUMNS).shape == (1, 1, 5, 5) and attention_mask(COLUMNS, COLUMNS).all()


def test_mask_sample_scope_keeps_each_token_in_its_own_sample():
    """Two samples packed in one row, the first ending with its EOS: [a b EOS | c d]."""
    samples = torch.tensor([[0, 0, 0, 1, 1]])
    assert attention_mask(COLUMNS, COLUMNS, samples=samples)[0, 0].tolist() == [
        [X, X, X, O, O],
        [X, X, X, O, O],
        [X, X, X, O, O],
        [O, O, O, X, X],
        [O, O, O, X, X],
    ]
    # the same mask as training's attention_scope="sample" (recipes.sample_attention) builds from the tokens
    tokens = torch.tensor([[5, 6, EOS_ID, 7, 8]])
    assert torch.equal(recipes.sample_attention(TrainConfig(attention_scope="sample"), tokens),
                       attention_mask(COLUMNS, COLUMNS, samples=samples))


def test_mask_block_causal_and_causal():
    blocks = torch.tensor([0, 0, 1, 1, 2])  # segment of each column
    assert attention_mask(COLUMNS, COLUMNS, segments=blocks)[0, 0].tolist() == [
        [X, X, O, O, O],
        [X, X, O, O, O],
        [X, X, X, X, O],
        [X, X, X, X, O],
        [X, X, X, X, X],
    ]
    causal = attention_mask(COLUMNS[3:], COLUMNS, segments=COLUMNS)[0, 0]  # two new queries after 3 cached keys
    assert causal.tolist() == [[X, X, X, X, O], [X, X, X, X, X]]


def test_mask_rules_combine_and_a_query_with_no_key_sees_itself():
    real = torch.tensor([[O, O, X, X, X]])  # two pads
    samples = torch.tensor([[0, 0, 0, 1, 1]])
    mask = attention_mask(COLUMNS[1:], COLUMNS, segments=COLUMNS, real_keys=real, samples=samples)[0, 0]
    assert mask.tolist() == [
        [O, X, O, O, O],  # a pad: no real key before it, so only itself (softmax stays finite)
        [O, O, X, O, O],
        [O, O, O, X, O],
        [O, O, O, X, X],
    ]


def test_mask_with_queries_per_row_is_each_rows_own_mask():
    """Queries (B, T), each row's own columns (the block sampler's slots): row b's mask is the mask of its
    queries alone."""
    blocks = torch.tensor([0, 0, 1, 1, 2])
    real = torch.tensor([[X, X, X, X, X], [O, X, X, X, O]])
    queries = torch.tensor([[0, 1], [2, 3]])
    mask = attention_mask(queries, COLUMNS, segments=blocks, real_keys=real)
    assert mask.shape == (2, 1, 2, 5)
    for b in range(2):
        assert torch.equal(mask[b], attention_mask(queries[b], COLUMNS, segments=blocks, real_keys=real[b:b + 1])[0])


def _influence_of_last_token(model):
    """How much the logits at each position change when only the last token changes."""
    idx = torch.randint(0, 50257, (1, 10))
    other = idx.clone()
    other[0, -1] = (idx[0, -1] + 1) % 50257
    return (model(idx) - model(other)).abs().amax(-1)[0]  # (T,)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_additive_bias_attends_as_the_boolean_mask_bit_for_bit_and_its_rows_are_aligned(dtype):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8, dtype=dtype) for _ in range(3))
    allowed = attention_mask(torch.arange(2, 7), torch.arange(7), segments=torch.arange(7) // 2,
                             real_keys=torch.tensor([[True] * 7, [False, False] + [True] * 5]))  # (2, 1, 5, 7)
    k, v = torch.cat([k, k[:, :, :2]], dim=2), torch.cat([v, v[:, :, :2]], dim=2)  # 7 keys
    bias = attention_bias(allowed, dtype)
    assert bias.shape == allowed.shape and bias.dtype == dtype and bias.stride(-2) % 16 == 0
    assert torch.equal(bias == 0, allowed) and bool((bias[~allowed] == float("-inf")).all())
    sdpa = torch.nn.functional.scaled_dot_product_attention
    assert torch.equal(sdpa(q, k, v, attn_mask=bias), sdpa(q, k, v, attn_mask=allowed))


@pytest.mark.parametrize("attention", ["causal", "block_causal"])
def test_the_model_converts_its_mask_once_with_the_logits_sdpa_gives_the_boolean_one(attention, monkeypatch):
    """Every layer's attention gets the same additive mask, built once per pass; the logits are those of the
    boolean mask handed to every layer (SDPA's own conversion), bit for bit, with left padding too."""
    model = tiny_model(attention=attention).eval()
    idx = torch.randint(0, 100, (2, 12))
    real = torch.ones(2, 12, dtype=torch.bool)
    real[1, :3] = False
    positions = (torch.arange(12) - 3 * (~real[:, :1]).long()).clamp(min=0)
    with torch.no_grad():
        converted = model(idx, attn_mask=real, positions=positions)
        monkeypatch.setattr(model_module, "attention_bias", lambda mask, dtype: mask)
        boolean = model(idx, attn_mask=real, positions=positions)
    assert torch.equal(converted, boolean)


def test_bidirectional_sees_the_future_and_causal_does_not():
    assert (_influence_of_last_token(tiny_model()) [:-1] > 0).all()
    assert (_influence_of_last_token(tiny_model(attention="causal"))[:-1] == 0).all()


def test_block_causal_sees_its_own_block_only_and_earlier():
    influence = _influence_of_last_token(tiny_model(attention="block_causal", attn_block_size=4))
    assert (influence[:8] == 0).all() and (influence[8:] > 0).all()  # last token is in block 2 (positions 8-9)


@pytest.mark.parametrize("attention", ["causal", "block_causal"])
def test_kv_cache_reproduces_the_full_forward(attention):
    model = tiny_model(attention=attention, attn_block_size=4).eval()
    idx = torch.randint(0, 50257, (2, 12))
    full = model(idx)
    cache = KVCache.for_model(model, batch_size=2, max_len=12)
    first = model(idx[:, :8], kv_cache=cache)
    cache.commit(8)
    second = model(idx[:, 8:], kv_cache=cache)
    torch.testing.assert_close(torch.cat([first, second], 1), full, atol=1e-5, rtol=1e-5)


def test_kv_cache_writes_each_rows_own_columns():
    """write_at (B, T): row b's keys/values go to its own columns, as a (T,) write_at of row b alone puts them."""
    model = tiny_model().eval()
    k, v = (torch.randn(2, model.config.n_kv_head, 3, model.config.head_dim) for _ in range(2))  # (B, K, T, D)
    per_row = KVCache.for_model(model, batch_size=2, max_len=8)
    at = torch.tensor([[0, 1, 2], [5, 6, 7]])
    per_row.update(0, k, v, write_at=at)
    for b in range(2):
        alone = KVCache.for_model(model, batch_size=1, max_len=8)
        alone.update(0, k[b:b + 1], v[b:b + 1], write_at=at[b])
        assert torch.equal(per_row.k[0, b], alone.k[0, 0]) and torch.equal(per_row.v[0, b], alone.v[0, 0])


@pytest.mark.parametrize("at", [torch.tensor([[0, 1, 2], [5, 6, 7]]), torch.tensor([3, 4, 5])])
def test_compiled_writes_are_in_place(at):
    """Under torch.compile the write, each row's columns (B, T) or the same for all (T,), goes by index_put_,
    which inductor does in the cache's own memory: the same keys/values as the eager scatter_ or index_copy_, and
    no buffer of a whole layer's shape in the generated code (a scatter_ into a layer's view became a copy of the
    layer and back, docs/speed.md)."""
    from torch._inductor.utils import run_and_get_code
    model = tiny_model().eval()
    c = model.config
    k, v = (torch.randn(2, c.n_kv_head, 3, c.head_dim) for _ in range(2))  # (B, K, T, D)
    eager, compiled = (KVCache.for_model(model, batch_size=2, max_len=8) for _ in range(2))
    eager.update(1, k, v, write_at=at)
    torch._dynamo.reset()
    _, code = run_and_get_code(torch.compile(lambda: compiled.update(1, k, v, write_at=at), fullgraph=True))
    assert torch.equal(compiled.k, eager.k) and torch.equal(compiled.v, eager.v)
    assert f"empty_strided_cpu((2, {c.n_kv_head}, 8, {c.head_dim})" not in "".join(code)


def test_write_prefix_sets_the_first_columns_of_the_chosen_rows_in_place():
    """write_prefix: the rows marked True get the given keys/values in their first P columns, every other column
    and row is kept; compiled, the same values, written in the cache's own memory (no buffer of the cache's
    shape in the generated code), as a recorded pass of the AR slots needs."""
    from torch._inductor.utils import run_and_get_code
    model = tiny_model().eval()
    c = model.config
    eager, compiled = (KVCache.for_model(model, batch_size=3, max_len=8) for _ in range(2))
    for cache in (eager, compiled):
        torch.manual_seed(0)
        cache.k.normal_(), cache.v.normal_()
    before = eager.k.clone()
    k, v = (torch.randn(c.n_layer, 3, c.n_kv_head, 5, c.head_dim) for _ in range(2))  # (L, B, K, P, D)
    rows = torch.tensor([True, False, True])
    eager.write_prefix(rows, k, v)
    assert torch.equal(eager.k[:, rows, :, :5], k[:, rows]) and torch.equal(eager.v[:, rows, :, :5], v[:, rows])
    assert torch.equal(eager.k[:, 1], before[:, 1]) and torch.equal(eager.k[:, :, :, 5:], before[:, :, :, 5:])
    torch._dynamo.reset()
    _, code = run_and_get_code(torch.compile(lambda: compiled.write_prefix(rows, k, v), fullgraph=True))
    assert torch.equal(compiled.k, eager.k) and torch.equal(compiled.v, eager.v)
    assert f"empty_strided_cpu(({c.n_layer}, 3, {c.n_kv_head}, 8, {c.head_dim})" not in "".join(code)


def test_write_prefix_then_update_compile_in_place():
    """The AR slots' pass: write_prefix, then each layer's update at each row's column. Compiled together, the
    cache is still written in its own memory (a slice assignment there made torch.compile copy the whole cache in
    and out of a buffer of its shape every pass), and the values are the eager ones."""
    from torch._inductor.utils import run_and_get_code
    model = tiny_model().eval()
    c = model.config
    eager, compiled = (KVCache.for_model(model, batch_size=3, max_len=8) for _ in range(2))
    k, v = (torch.randn(c.n_layer, 3, c.n_kv_head, 5, c.head_dim) for _ in range(2))  # (L, B, K, P, D)
    new_k, new_v = (torch.randn(3, c.n_kv_head, 1, c.head_dim) for _ in range(2))  # (B, K, 1, D)
    rows, write_at = torch.tensor([True, False, True]), torch.tensor([[5], [2], [6]])

    def one_pass(cache):
        cache.write_prefix(rows, k, v)
        for layer in range(c.n_layer):
            cache.update(layer, new_k, new_v, write_at=write_at)
    one_pass(eager)
    torch._dynamo.reset()
    _, code = run_and_get_code(torch.compile(lambda: one_pass(compiled), fullgraph=True))
    assert torch.equal(compiled.k, eager.k) and torch.equal(compiled.v, eager.v)
    assert torch.equal(eager.k[:, 0, :, :5], k[:, 0]) and (eager.k[:, 1, :, 2] == new_k[1, :, 0]).all()
    assert f"empty_strided_cpu(({c.n_layer}, 3, {c.n_kv_head}, 8, {c.head_dim})" not in "".join(code)


def test_uncommitted_cache_entries_are_scratch():
    model = tiny_model().eval()
    idx = torch.randint(0, 50257, (1, 8))
    cache = KVCache.for_model(model, batch_size=1, max_len=16)
    model(idx[:, :4], kv_cache=cache)
    cache.commit(4)
    a = model(idx[:, 4:], kv_cache=cache)  # not committed
    model(torch.randint(0, 50257, (1, 4)), kv_cache=cache)  # overwrites the scratch slots
    b = model(idx[:, 4:], kv_cache=cache)
    torch.testing.assert_close(a, b)
    assert cache.length == 4


def test_left_padding_with_key_mask_and_positions_matches_unpadded():
    model = tiny_model().eval()
    idx = torch.randint(0, 50257, (1, 6))
    padded = torch.cat([torch.full((1, 3), 50258), idx], 1)
    keys = torch.tensor([[False] * 3 + [True] * 6])
    positions = torch.tensor([[0, 0, 0, 0, 1, 2, 3, 4, 5]])
    out = model(padded, attn_mask=keys, positions=positions)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:, 3:], model(idx), atol=1e-5, rtol=1e-5)


def test_output_shift_predicts_each_token_from_the_output_of_the_one_before():
    """DiffuGPT's shift: with the same weights, the prediction for each token is the plain model's output at the
    token before it: in a plain row, under left padding, and in a pass after a KV cache."""
    plain = tiny_model().eval()
    shifted = Transformer(replace(plain.config, output_shift=True)).eval()
    shifted.load_state_dict(plain.state_dict())
    idx = torch.randint(0, 50257, (2, 10))
    reference = plain(idx)  # (2, 10, V)
    torch.testing.assert_close(shifted(idx)[:, 1:], reference[:, :-1])
    padded = torch.cat([torch.full((2, 3), 50258), idx], 1)
    keys = torch.tensor([[False] * 3 + [True] * 10] * 2)
    positions = torch.tensor([[0, 0, 0] + list(range(10))] * 2)
    out = shifted(padded, attn_mask=keys, positions=positions)
    torch.testing.assert_close(out[:, 4:], reference[:, :-1], atol=1e-5, rtol=1e-5)
    blocks = tiny_model(attention="block_causal", attn_block_size=4, output_shift=True).eval()
    cache = KVCache.for_model(blocks, batch_size=2, max_len=10)
    blocks(idx[:, :8], kv_cache=cache)  # two whole blocks of 4
    cache.commit(7)  # all but the last token: the next pass starts with it, as its output predicts token 8
    torch.testing.assert_close(blocks(idx[:, 7:], kv_cache=cache)[:, 1:], blocks(idx)[:, 8:], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="a causal model already predicts the next token"):
        preset("tiny", attention="causal", output_shift=True)


def test_causal_padding_rows_stay_finite():
    model = tiny_model(attention="causal").eval()
    keys = torch.tensor([[False, False, True, True]])
    assert torch.isfinite(model(torch.randint(0, 50257, (1, 4)), attn_mask=keys)).all()


def test_params_and_flops_helpers():
    model = tiny_model()
    c = model.config
    per_block = 4 * c.d_model ** 2 + 3 * c.d_model * c.mlp_hidden + 2 * c.d_model
    expected = c.n_layer * per_block + c.d_model + c.d_model * c.vocab_size  # blocks, final norm, head
    assert model.num_params() == expected
    assert model.num_params(non_embedding=False) == expected + c.vocab_size * c.d_model
    assert model.flops_per_token(128) == 6 * expected + 12 * c.n_layer * c.d_model * 128


def test_presets_and_bad_configs():
    assert preset("gpt2").n_layer == 12 and preset("llada-8b").mask_id == 126336
    with pytest.raises(ValueError, match="unknown model preset"):
        preset("huge")
    with pytest.raises(ValueError, match="attention must be one of"):
        preset("tiny", attention="sideways")
    with pytest.raises(ValueError, match="exceeds max_seq_len"):
        Transformer(preset("tiny", n_layer=1, max_seq_len=8))(torch.zeros(1, 9, dtype=torch.long))
