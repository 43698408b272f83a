"""train.py end to end on a tiny model and tiny data (CPU)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train
from nanodllm import recipes
from nanodllm.config import TrainConfig
from nanodllm.data import Batch
from nanodllm.training import build_model, configure_optimizer

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--device=cpu", "--compile=False", "--n_layer=2", "--n_head=2", "--d_model=32", "--mlp_hidden=64",
        "--batch_size=4", "--block_size=64", "--eval_iters=2", "--log_interval=5", "--warmup_iters=2",
        "--learning_rate=3e-3", "--dataset=tinystories"]


def run(tmp_path, data, *extra):
    return train.main(TINY + [f"--data_dir={data}", f"--out_dir={tmp_path / 'out'}", *extra])


def log_records(tmp_path):
    return [json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]


def test_tiny_model_overfits_one_batch():
    cfg = TrainConfig(recipe="dllm_var", n_layer=2, n_head=2, d_model=64, mlp_hidden=128, model="tiny")
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = configure_optimizer(model, TrainConfig(learning_rate=3e-3, weight_decay=0.0), torch.device("cpu"))
    tokens = torch.randint(0, 1000, (2, 32))
    tokens[:, 15] = tokens[:, 31] = 50256
    is_prompt = torch.zeros(2, 32, dtype=torch.bool)
    is_prompt[:, :4] = True
    batch = Batch(tokens, is_prompt, torch.zeros_like(is_prompt))
    t = torch.full((2,), 0.5)
    losses = []
    for _ in range(120):  # the same masks every step: one batch to memorise
        example = recipes.make_example(cfg, batch, 0, torch.Generator().manual_seed(0), t=t)
        loss = recipes.compute_loss(model, example)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[0] > 8 and losses[-1] < 0.2


def test_training_lowers_validation_nll_and_writes_checkpoints(tmp_path, tiny_data):
    run(tmp_path, tiny_data, "--max_iters=30", "--eval_interval=15")
    evals = [r for r in log_records(tmp_path) if "val_nll" in r]
    assert [r["step"] for r in evals] == [0, 15, 30]
    assert evals[-1]["val_nll"] < evals[0]["val_nll"] - 1.0
    assert (tmp_path / "out" / "ckpt_0000030" / "model.safetensors").is_file()
    assert any("tokens_per_s" in r for r in log_records(tmp_path))


@pytest.mark.parametrize("recipe", ["dllm_var", "eos_pad", "eos_random", "ar"])
def test_every_recipe_trains(tmp_path, tiny_data, recipe):
    extra = ["--block_size=160", "--pad_masked_perc=0.1", "--pad_anneal_steps=4"] if recipe == "eos_pad" else []
    model = run(tmp_path, tiny_data, f"--recipe={recipe}", "--max_iters=8", "--eval_interval=8", *extra)
    assert model.config.attention == ("causal" if recipe == "ar" else "bidirectional")
    evals = [r for r in log_records(tmp_path) if "val_nll" in r]
    assert evals[-1]["val_nll"] < evals[0]["val_nll"]


def test_resume_continues_exactly(tmp_path, tiny_data):
    common = ["--max_iters=20", "--eval_interval=10", "--lr_decay_iters=20", "--recipe=dllm_var"]
    straight = run(tmp_path / "a", tiny_data, *common)
    run(tmp_path / "b", tiny_data, "--max_iters=10", "--eval_interval=10", "--lr_decay_iters=20", "--recipe=dllm_var")
    resumed = run(tmp_path / "b", tiny_data, *common, "--resume")
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        torch.testing.assert_close(a, b, msg=name)


def test_fine_tune_from_a_checkpoint(tmp_path, tiny_data):
    run(tmp_path / "pre", tiny_data, "--max_iters=5", "--eval_interval=5")
    model = run(tmp_path / "ft", tiny_data, "--max_iters=2", "--eval_interval=2", "--recipe=dllm_var",
                f"--init_from={tmp_path / 'pre' / 'out'}")
    assert model is not None
    with pytest.raises(Exception, match="another model config"):
        run(tmp_path / "bad", tiny_data, "--max_iters=2", "--n_layer=3", f"--init_from={tmp_path / 'pre' / 'out'}")


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, tiny_data, monkeypatch):
    run(tmp_path, tiny_data, "--max_iters=5", "--eval_interval=5")
    real = recipes.compute_loss
    monkeypatch.setattr(recipes, "compute_loss", lambda model, ex: real(model, ex) * float("nan"))
    with pytest.raises(train.NonFiniteLoss, match="last good checkpoint"):
        run(tmp_path, tiny_data, "--max_iters=10", "--eval_interval=5", "--resume")
    assert (tmp_path / "out" / "latest.json").read_text().count("ckpt_0000005") == 1
    with pytest.raises(train.NonFiniteLoss, match="no checkpoint had been written yet"):
        run(tmp_path / "fresh", tiny_data, "--max_iters=10", "--eval_interval=5")


def test_cli_reports_config_errors_clearly():
    result = subprocess.run([sys.executable, "train.py", "config/tiny.py", "--bacth_size=3"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "error: unknown config key 'bacth_size'" in result.stderr and "batch_size (int" in result.stderr


@pytest.mark.parametrize("layout", ["ddp", "fsdp"])
def test_torchrun_two_processes_then_resume_on_one(tmp_path, tiny_data, layout):
    """train.py under torchrun (gloo on the CPU): a 2-process checkpoint resumes in a single process."""
    args = TINY + [f"--data_dir={tiny_data}", f"--out_dir={tmp_path / 'out'}", f"--parallel={layout}",
                   "--max_iters=4", "--eval_interval=4", "--lr_decay_iters=6"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py", *args]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tokens per step: 512 = 4 rows x 64 x 1 accumulation x 2 processes" in result.stdout
    model = train.main(args[:-3] + ["--max_iters=6", "--eval_interval=6", "--resume"])
    assert any(r.get("step") == 6 and "val_nll" in r for r in log_records(tmp_path))
    assert model is not None
