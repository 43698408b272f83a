"""The recipes' invariants, on hand-built batches."""

import math

import pytest
import torch
import torch.nn.functional as F

from nanodllm import recipes
from nanodllm.config import TrainConfig
from nanodllm.data import Batch
from nanodllm.tokenizer import EOS_ID, MASK_ID, PAD_ID
from tests.conftest import tiny_model


def packed_batch(rows=64, seq_len=128, seed=0):
    """Rows of samples [prompt(4) response(n) EOS] packed back to back, with prompts marked."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 50000, (rows, seq_len), generator=g)
    is_prompt = torch.zeros(rows, seq_len, dtype=torch.bool)
    for r in range(rows):
        pos = 0
        while pos < seq_len:
            n = int(torch.randint(3, 30, (1,), generator=g))
            is_prompt[r, pos:pos + 4] = True
            if pos + 4 + n < seq_len:
                tokens[r, pos + 4 + n] = EOS_ID
            pos += 5 + n
    return Batch(tokens, is_prompt, torch.zeros_like(is_prompt))


def cfg(**kw):
    return TrainConfig(**kw)


def test_pretrain_masking_rate_follows_t():
    batch = packed_batch()
    t = torch.linspace(0.05, 0.95, 64)
    g = torch.Generator().manual_seed(0)
    ex = recipes.make_example(cfg(recipe="pretrain"), batch, 0, g, t=t)
    rate = ex.loss_mask.float().mean(1)
    assert (rate - t).abs().max() < 0.15 and abs((rate - t).mean()) < 0.02
    assert torch.equal(ex.inputs == MASK_ID, ex.loss_mask)
    assert torch.equal(ex.inputs[~ex.loss_mask], batch.tokens[~ex.loss_mask])  # the rest is untouched


def test_dllm_var_prompt_never_masked_and_every_eos_masked():
    batch = packed_batch()
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        ex = recipes.make_example(cfg(recipe="dllm_var", t_min=0.1, t_max=0.9), batch, 0, g)
        assert not ex.loss_mask[batch.is_prompt].any()
        assert (ex.inputs[batch.is_prompt] == batch.tokens[batch.is_prompt]).all()
        eos = batch.tokens == EOS_ID
        assert ex.loss_mask[eos].all() and (ex.inputs[eos] == MASK_ID).all()


def test_eos_random_masks_eos_at_rate_t():
    batch = packed_batch(rows=256)
    t = torch.full((256,), 0.3)
    ex = recipes.make_example(cfg(recipe="eos_random"), batch, 0, torch.Generator().manual_seed(2), t=t)
    eos = batch.tokens == EOS_ID
    assert abs(ex.loss_mask[eos].float().mean().item() - 0.3) < 0.05
    assert not ex.loss_mask[batch.is_prompt].any()


def test_t_range_is_respected():
    ts = recipes.sample_t(10000, 0.1, 0.9, torch.Generator().manual_seed(0), "cpu")
    assert ts.min() >= 0.1 and ts.max() <= 0.9 and abs(ts.mean().item() - 0.5) < 0.01


def test_loss_equals_a_direct_computation():
    model = tiny_model().eval()
    batch = packed_batch(rows=3, seq_len=40)
    t = torch.tensor([0.2, 0.5, 0.8])
    for weighting in ("elbo", "mean"):
        c = cfg(recipe="dllm_var", loss_weighting=weighting)
        ex = recipes.make_example(c, batch, 0, torch.Generator().manual_seed(3), t=t)
        logits = model(ex.inputs)  # full logits, then pick by hand
        total, masked, response = 0.0, 0, 0
        for r in range(3):
            for p in range(40):
                if not batch.is_prompt[r, p]:
                    response += 1
                if ex.loss_mask[r, p]:
                    ce = F.cross_entropy(logits[r, p][None], batch.tokens[r, p][None]).item()
                    total += ce / t[r].item() if weighting == "elbo" else ce
                    masked += 1
        expected = total / (response if weighting == "elbo" else masked)
        assert math.isclose(recipes.compute_loss(model, ex).item(), expected, rel_tol=1e-4)


def pad_batch(rows=8, seq_len=64, text_len=40, fill=EOS_ID):
    tokens = torch.randint(0, 50000, (rows, seq_len))
    tokens[:, text_len - 1] = EOS_ID
    tokens[:, text_len:] = fill
    is_prompt = torch.zeros(rows, seq_len, dtype=torch.bool)
    is_prompt[:, :5] = True
    is_pad = torch.zeros(rows, seq_len, dtype=torch.bool)
    is_pad[:, text_len:] = True
    return Batch(tokens, is_prompt, is_pad)


def test_eos_pad_pads_are_targets_and_share_is_exact():
    batch = pad_batch()
    t = torch.full((8,), 0.5)
    c = cfg(recipe="eos_pad", pad_masked_perc=0.25, pad_anneal_steps=100)
    assert recipes.pad_share(c, 0) == 0 and recipes.pad_share(c, 50) == 0.125 and recipes.pad_share(c, 500) == 0.25
    for step, share in ((0, 0.0), (50, 0.125), (100, 0.25)):
        ex = recipes.make_example(c, batch, step, torch.Generator().manual_seed(step), t=t)
        n_mask = round(0.5 * 59)  # t * maskable (everything but the 5 prompt tokens)
        pads = (ex.loss_mask & batch.is_pad).sum(1)
        assert (ex.loss_mask.sum(1) == n_mask).all()
        assert (pads == round(share * n_mask)).all()
        assert not ex.loss_mask[batch.is_prompt].any()
    plain = recipes.make_example(cfg(recipe="eos_pad"), batch, 0, torch.Generator().manual_seed(0), t=t)
    assert plain.loss_mask[batch.is_pad].float().mean() > 0.3  # pads masked like text: in the loss


def test_eos_pad_share_depends_on_the_optimizer_step_only():
    c = cfg(recipe="eos_pad", pad_masked_perc=0.1, pad_anneal_steps=10)
    assert [recipes.pad_share(c, s) for s in (0, 5, 10, 20)] == [0.0, 0.05, 0.1, 0.1]


def test_loader_options_per_recipe():
    assert recipes.loader_options(cfg(recipe="eos_pad", pad_token="pad"))["fill_id"] == PAD_ID
    assert recipes.loader_options(cfg(recipe="eos_pad"))["layout"] == "pad"
    assert recipes.loader_options(cfg(recipe="dllm_var"))["use_prompts"]
    assert not recipes.loader_options(cfg(recipe="pretrain"))["use_prompts"]
    with pytest.raises(ValueError, match="unknown recipe"):
        recipes.loader_options(cfg(recipe="magic"))


def test_ar_targets_are_the_next_token():
    batch = packed_batch(rows=2, seq_len=10)
    ex = recipes.make_example(cfg(recipe="ar"), batch, 0, None)
    assert torch.equal(ex.targets[:, :-1], batch.tokens[:, 1:]) and not ex.loss_mask[:, -1].any()
    assert torch.equal(ex.inputs, batch.tokens)


def test_nll_bound_scores_text_tokens_only():
    batch = packed_batch(rows=4, seq_len=64)
    t = torch.tensor([0.1, 0.4, 0.6, 0.9])
    ex = recipes.nll_bound_example(cfg(recipe="dllm_var"), batch, t, torch.Generator().manual_seed(0))
    assert not ex.loss_mask[batch.is_prompt].any() and ex.normalizer == (~batch.is_prompt).sum()
    assert torch.allclose(ex.weights[:, 0], 1 / t)


def test_sample_scoped_attention_hides_the_other_samples():
    """attention_scope="sample": a sample's logits do not depend on the samples packed next to it (the next
    prompt is hidden); under "row" (dLLM-Var) they do."""
    tokens = torch.tensor([[5, 6, 7, EOS_ID, 8, 9, EOS_ID, 10, 11]])
    other = tokens.clone()
    other[0, 4:] = torch.tensor([20, 21, 22, 23, 24])  # the samples after the first one changed
    no = torch.zeros_like(tokens, dtype=torch.bool)
    model = tiny_model().eval()
    first = []
    for scope in ("row", "sample"):
        cfg = TrainConfig(recipe="dllm_var", attention_scope=scope)
        recipes.loader_options(cfg)
        logits = []
        for toks in (tokens, other):
            ex = recipes.make_example(cfg, Batch(toks, no, no), 0, torch.Generator().manual_seed(0),
                                      t=torch.tensor([0.5]))
            with torch.no_grad():
                logits.append(model(toks, attn_mask=ex.attn_mask)[0, :4])  # the first sample, its EOS included
        first.append(torch.allclose(*logits, atol=1e-6))
    assert first == [False, True]
    sample = recipes.sample_attention(TrainConfig(attention_scope="sample"), tokens)[0, 0]
    assert sample[3, :4].all() and not sample[3, 4:].any()  # the EOS sees its own sample only
    assert sample[4, 4:7].all() and not sample[4, :4].any() and not sample[4, 7:].any()
    with pytest.raises(ValueError, match="attention_scope"):
        recipes.loader_options(TrainConfig(recipe="eos_pad", attention_scope="sample"))
