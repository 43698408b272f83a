"""nanodllm/training.py: the validation bound's fixed grid, the trained length, the data seed, the loss's
gather levers."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from nanodllm import checkpoint, recipes, tasks
from nanodllm.config import ConfigError, TrainConfig
from nanodllm.data import PackedLoader
from nanodllm.prepare import load_split
from nanodllm.sampler import block_diffusion_generate
from nanodllm.training import build_model, evaluate, loss_function, prepare_data, row_noise, stratified_t

TINY = dict(dataset="tinystories", n_layer=2, n_head=2, d_model=32, mlp_hidden=64, compile=False, block_size=64)


def test_validation_t_stays_inside_zero_one_for_any_number_of_rows():
    """At t = 0 the 1/t weight is infinite: it used to happen once per evaluation when eval_iters was even."""
    t = stratified_t(torch.arange(100_000))
    assert t.min() > 0 and t.max() < 1
    for n in (1, 2, 8, 64):  # every 2^m consecutive rows cover (0, 1) evenly
        assert sorted(stratified_t(torch.arange(n)).tolist()) == [(k * 64 // n + 0.5) / 64 for k in range(n)]


def test_validation_masks_belong_to_the_row_not_the_batch():
    assert torch.equal(row_noise(torch.tensor([5, 6]), 16)[1], row_noise(torch.tensor([6]), 16)[0])
    assert not torch.equal(row_noise(torch.tensor([5]), 16), row_noise(torch.tensor([6]), 16))


@pytest.mark.parametrize("recipe", ["pretrain", "dllm_var", "eos_pad"])
def test_bound_is_the_same_at_every_batch_size(tiny_data, recipe):
    """Same weights, same validation split: the same bound at batch sizes 4 and 16 (it used to change with the
    batch size, 10.87 at 64 against 10.63 at 8 rows, as the t grid was built per batch)."""
    split = load_split(tiny_data, "val")
    results = []
    for batch_size in (4, 16):
        cfg = TrainConfig(recipe=recipe, batch_size=batch_size, eval_iters=1000, **TINY)
        if recipe == "eos_pad":  # one story per row: rows long enough to hold most stories
            cfg = TrainConfig(**{**vars(cfg), "block_size": 256, "overlong": "truncate"})
        torch.manual_seed(0)
        model = build_model(cfg)
        results.append(evaluate(model, cfg, split, torch.device("cpu"), torch.autocast("cpu", enabled=False)))
    assert results[0]["val_tokens"] == results[1]["val_tokens"] > 0
    assert math.isclose(results[0]["val_nll"], results[1]["val_nll"], rel_tol=1e-5)
    assert math.isclose(results[0]["val_loss"], results[1]["val_loss"], rel_tol=1e-5)


def test_dllm_var_with_elbo_weighting_has_a_finite_validation_loss(tiny_data):
    """Forced EOS masking + 1/t weighting made the loss inf whenever the grid held t = 0 (even eval_iters)."""
    split = load_split(tiny_data, "val")
    cfg = TrainConfig(recipe="dllm_var", loss_weighting="elbo", batch_size=4, eval_iters=2, **TINY)
    out = evaluate(build_model(cfg), cfg, split, torch.device("cpu"), torch.autocast("cpu", enabled=False))
    assert math.isfinite(out["val_loss"]) and math.isfinite(out["val_nll"])


def test_no_canvas_beyond_the_trained_length_is_accepted(tmp_path):
    """The model's context is its training row length; a checkpoint written before that rule (a longer
    max_seq_len) is capped at its training block_size on loading, unless RoPE is extended on purpose."""
    cfg = TrainConfig(**{**TINY, "block_size": 48})
    model = build_model(cfg)
    assert model.config.max_seq_len == 48
    with pytest.raises(ValueError, match="max_seq_len 48"):
        block_diffusion_generate(model, [[1, 2, 3, 4]], block_size=8, max_new_tokens=48)
    block_diffusion_generate(model, [[1, 2, 3, 4]], block_size=8, max_new_tokens=44)  # fits exactly
    old = build_model(TrainConfig(**{**TINY, "block_size": 48}))
    old.config.max_seq_len = 512  # as the tiny preset wrote it before
    checkpoint.save_checkpoint(tmp_path, 1, old, {"block_size": 48}, {})
    assert checkpoint.load_model(tmp_path)[0].config.max_seq_len == 48
    assert checkpoint.load_model(tmp_path, max_seq_len=600)[0].config.max_seq_len == 600


def test_training_seeds_share_the_held_out_prompts(tmp_path, monkeypatch):
    """The length suite is generated from data_seed, not from the training seed: every training seed of a study
    is evaluated on the same prompts, and runs of different seeds do not rewrite each other's data."""
    small = tasks.ensure_task_data
    monkeypatch.setattr(tasks, "ensure_task_data", lambda d, seed: small(d, seed, n_train=200, n_val=20))
    kw = dict(dataset="lengthtask", data_dir=str(tmp_path / "lengthtask"))
    first = load_split(prepare_data(TrainConfig(seed=1, **kw)), "val")
    tokens = np.array(first.tokens)
    second = load_split(prepare_data(TrainConfig(seed=2, **kw)), "val")
    assert np.array_equal(tokens, np.array(second.tokens))
    other = load_split(prepare_data(TrainConfig(seed=2, data_seed=5, data_dir=str(tmp_path / "other"),
                                                dataset="lengthtask")), "val")
    assert not np.array_equal(tokens[:200], np.array(other.tokens)[:200])


@pytest.mark.parametrize("recipe, extra", [("pretrain", {}), ("dllm_var", dict(attention_scope="sample")),
                                           ("block_diffusion", {}), ("block_pad", dict(certainty_weight=2.0))])
def test_every_loss_gather_gives_the_same_loss_and_gradients(tiny_data, recipe, extra):
    """The speed levers of loss_function change how the masked positions are found, never the numbers: the
    indices of the mask, or the head at every position weighted by the mask, give the mask's loss and gradients.
    With certainty forcing on, a third of the scored targets are made the model's own prediction, so that its
    term counts positions (an untrained model is otherwise never right)."""
    split = load_split(tiny_data, "train")
    results = {}
    for gather in ("mask", "indices", "dense"):
        cfg = TrainConfig(recipe=recipe, batch_size=4, loss_gather=gather, **TINY, **extra)
        batch = next(iter(PackedLoader(split, cfg.batch_size, cfg.block_size, seed=0, **recipes.loader_options(cfg))))
        example = recipes.make_example(cfg, batch, 0, torch.Generator().manual_seed(0))
        torch.manual_seed(0)
        model = build_model(cfg)
        if cfg.certainty_weight:
            with torch.no_grad():
                predicted = recipes.scored_logits(model, example).argmax(dim=-1)  # (N,)
            targets = example.targets[example.loss_mask]
            targets[::3] = predicted[::3]
            example.targets[example.loss_mask] = targets
            plain = loss_function(dataclasses.replace(cfg, certainty_weight=0.0))(model, example)
        loss = loss_function(cfg)(model, example)
        if cfg.certainty_weight:
            assert loss > plain  # the term is on, and counts the positions made right
        loss.backward()
        results[gather] = loss.item(), [p.grad.clone() for p in model.parameters()]
    plain_loss, plain_grads = results["mask"]
    assert example.loss_mask.any() and not example.loss_mask.all()  # some positions are left out of the loss
    for gather in ("indices", "dense"):
        loss, grads = results[gather]
        assert loss == pytest.approx(plain_loss, rel=1e-5)
        assert all(torch.allclose(g, p, rtol=1e-4, atol=1e-7) for g, p in zip(grads, plain_grads))


def test_an_unknown_loss_gather_is_refused():
    with pytest.raises(ConfigError, match="loss_gather must be one of"):
        loss_function(TrainConfig(loss_gather="sparse", compile=False))
