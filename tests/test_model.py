import pytest
import torch

from nanodllm.model import KVCache, Transformer, block_causal_mask, preset
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


def _influence_of_last_token(model):
    """How much the logits at each position change when only the last token changes."""
    idx = torch.randint(0, 50257, (1, 10))
    other = idx.clone()
    other[0, -1] = (idx[0, -1] + 1) % 50257
    return (model(idx) - model(other)).abs().amax(-1)[0]  # (T,)


def test_bidirectional_sees_the_future_and_causal_does_not():
    assert (_influence_of_last_token(tiny_model()) [:-1] > 0).all()
    assert (_influence_of_last_token(tiny_model(attention="causal"))[:-1] == 0).all()


def test_block_causal_sees_its_own_block_only_and_earlier():
    influence = _influence_of_last_token(tiny_model(attention="block_causal", attn_block_size=4))
    assert (influence[:8] == 0).all() and (influence[8:] > 0).all()  # last token is in block 2 (positions 8-9)
    m = block_causal_mask(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1]))
    assert m.tolist() == [[True, False, False], [True, False, False], [True, True, True]]


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
