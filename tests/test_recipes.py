"""The recipes' invariants, on hand-built batches."""

import math

import pytest
import torch
import torch.nn.functional as F

from nanodllm import recipes
from nanodllm.config import TrainConfig
from nanodllm.data import Batch
from nanodllm.tokenizer import EOS_ID, MASK_ID, PAD_ID, VOCAB_SIZE
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


def entropy(logits, temperature):
    p = torch.softmax(logits / temperature, dim=-1)
    return -(p * p.log()).sum(dim=-1)


def test_certainty_forcing_is_the_mean_entropy_where_the_model_is_right():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 1.0, 4.0], [0.5, 0.0, 0.0]])
    targets = torch.tensor([0, 0, 2, 0])  # right, wrong, right, right
    for temperature in (1.0, 0.5):
        h = entropy(logits, temperature)
        got = recipes.certainty_forcing(logits, targets, temperature)
        assert math.isclose(got.item(), (h[0] + h[2] + h[3]).item() / 3, rel_tol=1e-6)
        counted = torch.tensor([True, True, False, True])
        got = recipes.certainty_forcing(logits, targets, temperature, counted=counted)
        assert math.isclose(got.item(), (h[0] + h[3]).item() / 2, rel_tol=1e-6)
    assert recipes.certainty_forcing(logits, torch.tensor([1, 0, 0, 1]), 0.5).item() == 0.0  # never right: 0


def test_certainty_forcing_sharpens_right_positions_and_leaves_wrong_ones_alone():
    """Its gradient is zero where the model is wrong, and a step against it lowers the entropy where it is right."""
    logits = torch.randn(6, 10, generator=torch.Generator().manual_seed(0), requires_grad=True)
    targets = logits.detach().argmax(dim=-1)
    targets[3:] = (targets[3:] + 1) % 10  # the last three are wrong
    recipes.certainty_forcing(logits, targets, 0.5).backward()
    assert logits.grad[3:].abs().sum() == 0 and logits.grad[:3].abs().sum() > 0
    stepped = logits.detach() - 0.1 * logits.grad
    assert (entropy(stepped[:3], 0.5) < entropy(logits.detach()[:3], 0.5)).all()
    assert (stepped.argmax(dim=-1)[:3] == targets[:3]).all()


def test_compute_loss_adds_the_certainty_term_to_the_recipes_loss():
    model = tiny_model().eval()
    batch = packed_batch(rows=3, seq_len=40)
    ex = recipes.make_example(cfg(recipe="dllm_var"), batch, 0, torch.Generator().manual_seed(3))
    logits = model(ex.inputs)[ex.loss_mask]  # (N, V)
    # make half the scored targets the model's own prediction, so the term has positions to count
    targets = ex.targets.clone()
    right = targets[ex.loss_mask]
    right[::2] = logits.argmax(dim=-1)[::2]
    targets[ex.loss_mask] = right
    ex.targets = targets
    plain = recipes.compute_loss(model, ex)
    assert math.isclose(plain.item(), (recipes.loss_sum(model, ex) / ex.normalizer).item(), rel_tol=1e-6)
    forced = recipes.compute_loss(model, ex, certainty_weight=2.0, certainty_temperature=0.5)
    term = recipes.certainty_forcing(logits, right, 0.5)
    assert term > 0 and math.isclose((forced - plain).item(), 2.0 * term.item(), rel_tol=1e-4)


def test_certainty_settings_are_checked():
    for weight, temperature in ((-1.0, 0.5), (1.0, 0.0)):
        with pytest.raises(ValueError, match="certainty forcing needs"):
            recipes.loader_options(cfg(certainty_weight=weight, certainty_temperature=temperature))


def pad_batch(rows=8, seq_len=64, text_len=40, fill=EOS_ID):
    tokens = torch.randint(0, 50000, (rows, seq_len))
    tokens[:, text_len - 1] = EOS_ID
    tokens[:, text_len:] = fill
    is_prompt = torch.zeros(rows, seq_len, dtype=torch.bool)
    is_prompt[:, :5] = True
    is_pad = torch.zeros(rows, seq_len, dtype=torch.bool)
    is_pad[:, text_len:] = True
    return Batch(tokens, is_prompt, is_pad)


def test_eos_pad_variant_masks_the_text_at_rate_t_and_adds_the_pad_share():
    """The DiffuGPT variant: ceil(t * text) text tokens masked (text = response + EOS, 35 tokens here) whatever the
    pad share, and pads on top so that they are the share of all masked tokens. (It used to draw
    round(t * (text + pads)) tokens from the text alone while the pad share was 0: 30 of 35 at t = 0.5.)"""
    batch = pad_batch()
    text = ~batch.is_prompt & ~batch.is_pad
    c = cfg(recipe="eos_pad", pad_masked_perc=0.25, pad_anneal_steps=100)
    assert recipes.pad_share(c, 0) == 0 and recipes.pad_share(c, 50) == 0.125 and recipes.pad_share(c, 500) == 0.25
    assert recipes.pad_share(c, None) == 0.25  # validation: the full share
    for t in (0.2, 0.5, 0.9):
        for step, share in ((0, 0.0), (50, 0.125), (100, 0.25)):
            ex = recipes.make_example(c, batch, step, torch.Generator().manual_seed(step), t=torch.full((8,), t))
            n_text = math.ceil(t * 35)
            assert ((ex.loss_mask & text).sum(1) == n_text).all()
            assert ((ex.loss_mask & batch.is_pad).sum(1) == round(share / (1 - share) * n_text)).all()
            assert not ex.loss_mask[batch.is_prompt].any()
    plain = recipes.make_example(cfg(recipe="eos_pad"), batch, 0, torch.Generator().manual_seed(0),
                                 t=torch.full((8,), 0.5))
    assert plain.loss_mask[batch.is_pad].float().mean() > 0.3  # pads masked like text: in the loss
    with pytest.raises(ValueError, match="pad_masked_perc"):
        recipes.loader_options(cfg(recipe="eos_pad", pad_masked_perc=1.0))


class UniformModel(torch.nn.Module):
    """Predicts every token with probability 1/V wherever it is asked: each scored token costs log V nats."""

    def forward(self, idx, positions=None, attn_mask=None, logits_at=None):
        return torch.zeros(idx.shape + (VOCAB_SIZE,))[logits_at]


@pytest.mark.parametrize("recipe_kw", [dict(recipe="eos_pad", pad_masked_perc=0.25, pad_anneal_steps=100),
                                       dict(recipe="eos_pad", pad_token="pad", pad_masked_perc=0.1)])
def test_eos_pad_variant_bound_is_an_elbo_on_a_hand_built_row(recipe_kw):
    """For a model that gives every token probability 1/V, the NLL is exactly log V per text token, and so is
    the ELBO of exact-count masking (k of n masked, each weighted n / k) at every t: the bound must say log V
    whatever t, and whatever share of pads is masked on top."""
    batch = pad_batch(rows=1)
    for t in (0.01, 0.3, 0.5, 0.77, 0.99):
        examples = recipes.nll_bound_examples(cfg(**recipe_kw), batch, torch.tensor([t]), torch.rand(1, 64))
        total = sum(recipes.loss_sum(UniformModel(), ex) for ex in examples)
        assert math.isclose(total.item() / examples[0].normalizer.item(), math.log(VOCAB_SIZE), rel_tol=1e-6)


def test_dllm_var_is_validated_with_eos_masked_as_in_training():
    """dllm_var never sees EOS in its input in training; its bound must not score it on inputs that show EOS.
    The first example scores the other text tokens with every EOS masked; the second scores the EOS alone, given
    everything else (weight 1, adding nothing to the token count)."""
    batch = packed_batch(rows=8, seq_len=64)
    eos = batch.tokens == EOS_ID
    text = ~batch.is_prompt & ~batch.is_pad
    for t in (0.01, 0.5, 0.99):
        at_t, eos_last = recipes.nll_bound_examples(cfg(recipe="dllm_var"), batch, torch.full((8,), t),
                                                    torch.rand(8, 64))
        assert (at_t.inputs[eos] == MASK_ID).all() and not at_t.loss_mask[eos].any()
        assert at_t.normalizer == text.sum() and torch.allclose(at_t.weights[:, 0], torch.tensor(1 / t))
        assert torch.equal(eos_last.loss_mask, eos) and torch.equal(eos_last.inputs == MASK_ID, eos)
        assert eos_last.normalizer == 0 and (eos_last.weights == 1).all()
    # eos_random and the others see EOS as in training (masked at rate t): one example
    assert len(recipes.nll_bound_examples(cfg(recipe="eos_random"), batch, torch.full((8,), 0.5),
                                          torch.rand(8, 64))) == 1


def test_the_same_noise_and_t_give_the_same_masks():
    batch = packed_batch(rows=4, seq_len=64)
    noise, t = torch.rand(4, 64), torch.tensor([0.1, 0.4, 0.6, 0.9])
    a, b = (recipes.make_example(cfg(recipe="pretrain"), batch, 0, torch.Generator().manual_seed(s), t=t,
                                 noise=noise) for s in (0, 1))
    assert torch.equal(a.loss_mask, b.loss_mask) and torch.equal(a.loss_mask, noise < t[:, None])


def test_noise_range_is_checked():
    for t_min, t_max in ((0.0, 1.0), (0.5, 0.4), (0.1, 1.5)):
        with pytest.raises(ValueError, match="t_min"):
            recipes.loader_options(cfg(t_min=t_min, t_max=t_max))


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
    ex, = recipes.nll_bound_examples(cfg(recipe="eos_random"), batch, t, torch.rand(4, 64))
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


def block_row():
    """One row of 16 tokens in blocks of 4: [p p r r | r EOS p' p' | r' r' EOS p'' | p'' r'' r'' r''] with prompts
    p (sample 1), p' (sample 2, right after sample 1's EOS in the same block) and p'' (sample 3, whose prompt
    straddles into the next block)."""
    tokens = torch.tensor([[11, 12, 13, 14, 15, EOS_ID, 21, 22, 23, 24, EOS_ID, 31, 32, 33, 34, 35]])
    is_prompt = torch.zeros_like(tokens, dtype=torch.bool)
    is_prompt[0, [0, 1, 6, 7, 11, 12]] = True
    return Batch(tokens, is_prompt, torch.zeros_like(is_prompt))


def test_block_diffusion_masks_attention_and_loss_on_a_hand_built_row():
    c = cfg(recipe="block_diffusion", attn_block_size=4)
    batch = block_row()
    ex = recipes.make_example(c, batch, 0, None, t=torch.tensor([0.999]), noise=torch.full((1, 16), 0.5))
    noisy, clean = ex.inputs[0, :16], ex.inputs[0, 16:]
    assert torch.equal(clean, batch.tokens[0])  # the clean stream is the row itself
    # Maskable: responses, EOS, and prompt tokens that follow an EOS in their block (p' in block 1, the first
    # token of p'' in block 2): a sampler that found that EOS would be writing them. Given: p, which starts the
    # row, and the part of p'' that starts block 3.
    given = [0, 1, 12]
    assert (noisy[given] == batch.tokens[0, given]).all()
    assert (noisy[[i for i in range(16) if i not in given]] == MASK_ID).all()
    assert torch.equal(ex.loss_mask[0, :16], noisy == MASK_ID) and not ex.loss_mask[0, 16:].any()
    assert torch.equal(ex.positions, torch.cat([torch.arange(16)] * 2))
    mask = ex.attn_mask[0, 0]  # (32, 32): rows are queries, columns keys; [noisy 0..15 | clean 16..31]
    q = 9  # a noisy token of block 2
    assert mask[q, 8:12].all() and not mask[q, :8].any() and not mask[q, 12:16].any()  # its own noisy block
    assert mask[q, 16:24].all() and not mask[q, 24:].any()  # the clean blocks before it, not its own
    q = 16 + 9  # the same position in the clean stream
    assert not mask[q, :16].any() and mask[q, 16:28].all() and not mask[q, 28:].any()  # clean blocks 0..2
    # Fixed masking whatever t: every EOS and the rest of its block (the next sample's first tokens: a sampler
    # that has not placed the EOS yet sees masks there)
    low = recipes.make_example(c, batch, 0, None, t=torch.tensor([0.001]), noise=torch.full((1, 16), 0.5))
    assert low.loss_mask[0, :16].nonzero().flatten().tolist() == [5, 6, 7, 10, 11]


def block_pad_row(eos_at=5):
    """block_pad's row of 16 tokens in blocks of 4, as the loader lays it out (align=4): each sample filled with
    EOS to its block's end. [p p r r | r EOS fill fill | p' r' EOS fill | p'' p'' r'' r''] by default."""
    tokens = torch.tensor([[11, 12, 13, 14, 15, EOS_ID, EOS_ID, EOS_ID, 21, 22, EOS_ID, EOS_ID, 31, 32, 33, 34]])
    tokens[0, eos_at:8] = EOS_ID
    is_prompt = torch.zeros_like(tokens, dtype=torch.bool)
    is_prompt[0, [0, 1, 8, 12, 13]] = True
    return Batch(tokens, is_prompt, torch.zeros_like(is_prompt))


def test_block_pad_masks_by_noise_alone_and_scores_the_fill_in_training_only():
    c = cfg(recipe="block_pad", attn_block_size=4, block_size=16)
    assert recipes.loader_options(c)["align"] == 4 and recipes.default_attention("block_pad") == "block_causal"
    noise = torch.rand(1, 16, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.5])
    masks = []
    for eos_at in (3, 5, 7):  # the answer ends at different places: the masks must not say where
        batch = block_pad_row(eos_at)
        ex = recipes.make_example(c, batch, 0, None, t=t, noise=noise)
        masked = ex.loss_mask[0, :16]
        assert torch.equal(masked, (noise[0] < 0.5) & ~batch.is_prompt[0])  # no fixed masking of EOS or fill
        assert torch.equal(ex.inputs[0, 16:], batch.tokens[0]) and ex.attn_mask.shape == (1, 1, 32, 32)
        masks.append(masked)
    assert all(torch.equal(m, masks[0]) for m in masks)
    full = recipes.make_example(c, block_pad_row(), 0, None, t=torch.tensor([0.999]), noise=torch.full((1, 16), .5))
    assert full.loss_mask[0, :16].nonzero().flatten().tolist() == [2, 3, 4, 5, 6, 7, 9, 10, 11, 14, 15]
    assert (full.targets[0, [5, 6, 7, 10, 11]] == EOS_ID).all()  # the fill is written, as EOS
    # Validation: the fill is masked as in training but not part of the text the bound scores.
    [bound] = recipes.nll_bound_examples(c, block_pad_row(), torch.tensor([0.999]), torch.full((1, 16), .5))
    assert bound.loss_mask[0, :16].nonzero().flatten().tolist() == [2, 3, 4, 5, 9, 10, 14, 15]
    assert bound.normalizer == 8 and (bound.inputs[0, [6, 7, 11]] == MASK_ID).all()
    with pytest.raises(ValueError, match="whole blocks"):
        recipes.loader_options(cfg(recipe="block_pad", attn_block_size=32, block_size=100))


@pytest.mark.parametrize("output_shift", [False, True])
@pytest.mark.parametrize("recipe, row", [("block_diffusion", block_row), ("block_pad", block_pad_row)])
def test_block_recipes_training_row_gives_the_cached_samplers_logits(recipe, row, output_shift):
    """The noisy block's logits in the two-stream training row equal those of the decoding pass that sees the
    clean blocks before it through the KV cache: what makes the block sampler's cache exact for these recipes.
    With output_shift a block's first token is predicted from the clean token before it, which the sampler
    keeps out of the cache and feeds again with the block."""
    from nanodllm.model import KVCache
    c = cfg(recipe=recipe, attn_block_size=4, block_size=16)
    model = tiny_model(attention="block_causal", attn_block_size=4, output_shift=output_shift).eval()
    batch = row()
    ex = recipes.make_example(c, batch, 0, None, t=torch.tensor([0.6]), noise=torch.rand(1, 16))
    with torch.no_grad():
        training = model(ex.inputs, positions=ex.positions, attn_mask=ex.attn_mask)[0, :16]  # (16, V)
        for block in range(4):
            a, b = 4 * block, 4 * block + 4
            cached = max(a - output_shift, 0)
            kv = KVCache.for_model(model, 1, 16)
            if a:
                model(batch.tokens[:, :a], kv_cache=kv)  # the finished blocks, clean
                kv.commit(cached)
            fed = torch.cat([batch.tokens[:, cached:a], ex.inputs[:, a:b]], dim=1)  # the noisy block after them
            decoding = model(fed, kv_cache=kv)[0, a - cached:]
            assert torch.allclose(decoding, training[a:b], atol=1e-5), block
