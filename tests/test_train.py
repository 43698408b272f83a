"""train.py end to end on a tiny model and tiny data (CPU)."""

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train
from nanodllm import checkpoint, recipes
from nanodllm.config import ConfigError, TrainConfig, config_to_dict, load_config
from nanodllm.data import Batch
from nanodllm.prepare import read_meta
from nanodllm.training import build_model, configure_optimizer
from tests.conftest import SEPARATOR, story_texts

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


def train_cli(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, **kwargs)


def test_training_lowers_validation_nll_and_writes_checkpoints(tmp_path, tiny_data, capsys):
    run(tmp_path, tiny_data, "--max_iters=30", "--eval_interval=15")
    evals = [r for r in log_records(tmp_path) if "val_nll" in r]
    assert [r["step"] for r in evals] == [0, 15, 30]
    assert evals[-1]["val_nll"] < evals[0]["val_nll"] - 1.0
    assert (tmp_path / "out" / "ckpt_0000030" / "model.safetensors").is_file()
    steps = [r for r in log_records(tmp_path) if "tokens_per_s" in r]
    assert [r["step"] for r in steps] == [5, 10, 15, 20, 25, 30]
    assert all(r["ms_per_step"] > 0 for r in steps) and steps[-1]["eta"] == "0s" and steps[0]["eta"].endswith("s")
    # what the run was: the effective config, echoed and saved; where the data came from and where it all went
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved == config_to_dict(load_config(TINY + [f"--data_dir={tiny_data}", f"--out_dir={tmp_path / 'out'}",
                                                       "--max_iters=30", "--eval_interval=15"]))
    printed = capsys.readouterr().out
    assert "config: out_dir=" in printed and "max_iters=30" in printed and "device='cpu'" in printed
    assert f"data: {tiny_data.resolve()}: tinystories prepared from " in printed
    assert f"out_dir: {(tmp_path / 'out').resolve()}" in printed and " eta " in printed


def test_format_duration():
    assert [train.format_duration(s) for s in (0, 7.4, 59.6, 125, 3599, 3725)] == [
        "0s", "7s", "1m00s", "2m05s", "59m59s", "1h02m"]


def test_a_changed_data_source_is_prepared_again(tmp_path, capsys):
    stories = story_texts()
    for name, part in (("a", stories[:30]), ("b", stories[30:60])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "train.txt").write_text(SEPARATOR.join(part[:-5]) + SEPARATOR)
        (tmp_path / name / "valid.txt").write_text(SEPARATOR.join(part[-5:]) + SEPARATOR)
    data = tmp_path / "data"
    common = [f"--data_dir={data}", "--max_iters=1", "--eval_interval=1"]
    run(tmp_path / "runa", data, *common, f"--data_source={tmp_path / 'a'}")
    assert read_meta(data)["source"] == str(tmp_path / "a") and read_meta(data)["train"]["n_docs"] == 25
    run(tmp_path / "runb", data, *common, f"--data_source={tmp_path / 'b'}")
    assert read_meta(data)["source"] == str(tmp_path / "b")
    printed = capsys.readouterr().out
    assert f"was prepared from {tmp_path / 'a'}, not as asked" in printed
    assert f"tinystories prepared from {tmp_path / 'b'} (train 25 docs" in printed


def test_an_existing_run_is_never_clobbered(tmp_path, tiny_data):
    run(tmp_path, tiny_data, "--max_iters=2", "--eval_interval=2")
    with pytest.raises(ConfigError, match=r"already holds a run \(ckpt_0000002, latest.json\): continue it with --resume"):
        run(tmp_path, tiny_data, "--max_iters=4", "--eval_interval=2")
    assert (tmp_path / "out" / "ckpt_0000002").is_dir()
    run(tmp_path, tiny_data, "--max_iters=1", "--eval_interval=1", "--overwrite")  # starts over
    assert sorted(p.name for p in (tmp_path / "out").glob("ckpt_*")) == ["ckpt_0000001"]
    assert [r["step"] for r in log_records(tmp_path) if "val_nll" in r] == [0, 1]


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
    tune = ["--eval_interval=2", "--recipe=dllm_var", f"--init_from={tmp_path / 'pre' / 'out'}"]
    model = run(tmp_path / "ft", tiny_data, "--max_iters=2", *tune)
    assert model is not None
    # every checkpoint of the fine-tune names the base checkpoint it started from, after a resume too
    base = checkpoint.read_config(tmp_path / "pre" / "out")
    run(tmp_path / "ft", tiny_data, "--max_iters=4", *tune, "--resume")
    tuned = checkpoint.read_config(tmp_path / "ft" / "out")
    assert tuned["step"] == 4 and tuned["lineage"]["init_from_id"] == base["id"] and base["lineage"] is None
    assert tuned["lineage"]["init_from"] == str(checkpoint.resolve(tmp_path / "pre" / "out"))
    with pytest.raises(Exception, match="another model config"):
        run(tmp_path / "bad", tiny_data, "--max_iters=2", "--n_layer=3", f"--init_from={tmp_path / 'pre' / 'out'}")


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, tiny_data, monkeypatch):
    run(tmp_path, tiny_data, "--max_iters=5", "--eval_interval=5")
    real = recipes.compute_loss
    monkeypatch.setattr(recipes, "compute_loss", lambda model, ex, **terms: real(model, ex, **terms) * float("nan"))
    with pytest.raises(train.NonFiniteLoss, match="last good checkpoint"):
        run(tmp_path, tiny_data, "--max_iters=10", "--eval_interval=5", "--resume")
    assert (tmp_path / "out" / "latest.json").read_text().count("ckpt_0000005") == 1
    with pytest.raises(train.NonFiniteLoss, match="no checkpoint had been written yet"):
        run(tmp_path / "fresh", tiny_data, "--max_iters=10", "--eval_interval=5")


def test_help_lists_every_key():
    result = train_cli("--help")
    assert result.returncode == 0 and result.stderr == ""
    for f in TrainConfig.__dataclass_fields__.values():
        assert f"--{f.name}={f.default!r}" in result.stdout


@pytest.fixture
def prepared_copy(tmp_path, tiny_data) -> Path:
    shutil.copytree(tiny_data, tmp_path / "data")
    return tmp_path / "data"


def write_bad_source(tmp_path, kind) -> Path:
    """A source that cannot be prepared, of the given kind."""
    path = tmp_path / kind
    if kind == "empty_file":
        path.write_bytes(b"")
    elif kind == "not_utf8":
        path.write_bytes(gzip.compress(b"Caf\xe9 au lait." + SEPARATOR.encode()))
    elif kind == "empty_folder":
        path.mkdir()
    return path


@pytest.mark.parametrize("args, code, message", [
    (["config/tiny.py", "--bacth_size=3"], 2, "unknown config key 'bacth_size' in flag --bacth_size=3\ndid you mean batch_size?"),
    (["--max_iters", "--resume"], 2, "flag --max_iters needs a value"),
    (["--recipe=dllm_vaar"], 2, "unknown recipe 'dllm_vaar': choose one of 'pretrain', 'dllm_var'"),
    (["--model=huge"], 2, "unknown model 'huge': choose one of 'tiny'"),
    (["--attention_scope=sample", "--recipe=ar"], 2, "attention_scope='sample' is for the packed diffusion recipes"),
    (["--device=cuda"], 2, "CUDA is not available here: use --device=cpu"),
    (["missing.py"], 2, "config file missing.py not found"),
    (["--attention=full"], 2, "attention must be one of ('bidirectional', 'causal', 'block_causal'), got 'full'"),
    (["--n_head=5"], 2, "d_model (384) must divide by n_head (5)"),
    (["--recipe=ar", "--output_shift=True"], 2, "output_shift is for masked-diffusion models adapted from an AR one"),
])
def test_usage_mistakes_give_one_error_line(args, code, message):
    if "--device=cuda" in args and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    result = train_cli(*args)
    assert (result.returncode, result.stdout) == (code, "")
    assert result.stderr.startswith("error: ") and message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("kind, message", [
    ("does_not_exist", "does_not_exist: no such file or folder"),
    ("empty_file", "empty_file is empty"),
    ("not_utf8", "not_utf8 is not UTF-8: invalid byte at offset 3"),
    ("empty_folder", "empty_folder holds neither train.txt[.gz] + valid.txt[.gz] nor any *.txt[.gz] file"),
])
def test_data_mistakes_give_one_error_line_and_never_train_on_old_data(tmp_path, prepared_copy, kind, message):
    before = (prepared_copy / "train.bin").read_bytes()
    result = train_cli(*TINY, f"--data_dir={prepared_copy}", f"--out_dir={tmp_path / 'out'}",
                       f"--data_source={write_bad_source(tmp_path, kind)}")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / message}")
    assert "step 0" not in result.stdout and (prepared_copy / "train.bin").read_bytes() == before


def test_an_out_dir_in_use_is_a_usage_error(tmp_path, tiny_data):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "latest.json").write_text('{"checkpoint": "ckpt_0000002", "step": 2}')
    result = train_cli(*TINY, f"--data_dir={tiny_data}", f"--out_dir={tmp_path / 'out'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == (f"error: {tmp_path / 'out'} already holds a run (latest.json): continue it with "
                             f"--resume, start it over with --overwrite, or give another --out_dir\n")


def test_ctrl_c_keeps_the_last_checkpoint_and_says_so(tmp_path, tiny_data):
    cmd = [sys.executable, "train.py", *TINY, f"--data_dir={tiny_data}", f"--out_dir={tmp_path / 'out'}",
           "--max_iters=100000", "--eval_interval=3", "--log_interval=1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stdout:  # the first checkpoint, then Ctrl-C
        if line.startswith("saved "):
            break
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    latest = json.loads((tmp_path / "out" / "latest.json").read_text())
    assert proc.returncode == 130 and "Traceback" not in stderr and latest["step"] >= 3
    assert stderr.startswith("error: interrupted (Ctrl-C) at step ")
    assert stderr.endswith(f": stopping; the last good checkpoint in {tmp_path / 'out'} is kept (continue with --resume)\n")


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
