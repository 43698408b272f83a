"""eval_eos.py end to end on the CPU: tiny random checkpoints (a diffusion model and a causal judge) on a tiny
length task directory."""

import json

import pytest
import torch

import eval_eos
from nanodllm.checkpoint import save_checkpoint
from nanodllm.config import TrainConfig, config_to_dict
from nanodllm.tasks import ensure_task_data
from nanodllm.training import build_model

TINY = dict(dataset="lengthtask", n_layer=2, n_head=2, d_model=32, mlp_hidden=64, batch_size=2, block_size=192,
            eval_iters=1, compile=False, device="cpu")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """{"data": a length task dir, "dllm_var": a bidirectional checkpoint, "ar": a causal one}."""
    root = tmp_path_factory.mktemp("eval_eos")
    paths = {"data": ensure_task_data(root / "lengthtask", seed=0, n_train=10, n_val=8)}
    for recipe in ("dllm_var", "ar"):
        cfg = TrainConfig(recipe=recipe, **TINY)
        torch.manual_seed(0)
        paths[recipe] = root / recipe
        save_checkpoint(paths[recipe], 1, build_model(cfg), config_to_dict(cfg), {})
    return paths


def run(setup, tmp_path, model, *extra):
    out = tmp_path / model
    eval_eos.main(["--init_from", str(setup[model]), "--data", "lengthtask", "--data_dir", str(setup["data"]),
                   "--num_samples", "5", "--max_new_tokens", "16", "--block_size", "8", "--batch_size", "3",
                   "--device", "cpu", "--judge", str(setup["ar"]), "--out_dir", str(out), *extra])
    return out, json.loads((out / "results.json").read_text())


def test_diffusion_model_end_to_end_then_merge_with_the_causal_one(setup, tmp_path, capsys):
    out, r = run(setup, tmp_path, "dllm_var")
    assert set(r["samplers"]) == {"block", "llada", "length_bound"} and set(r["skipped_samplers"]) == {"ar"}
    assert r["model"]["recipe"] == "dllm_var" and r["data"]["num_samples"] == 5
    fs = r["first_step"]
    assert fs["canvas"] == 16 and set(fs["by_reveal"]) == {"0", "0.25", "0.5", "0.75"}
    assert fs["by_reveal"]["0"]["n"] + fs["n_beyond_canvas"] == 5
    for s in r["samplers"].values():
        assert 0 <= s["termination_rate"] <= 1 and len(s["generated_lengths"]) == 5
        assert s["exact_length"] is not None and s["gen_ppl"] > 1 and s["nfe_per_token"] > 0
    assert r["quality"]["val_nll"] > 0 and r["reference"]["gen_ppl"] > 1
    for name in ("results.md", "samples.jsonl", "eos_heatmap.png", "lengths_scatter.png", "lengths_hist.png"):
        assert (out / name).is_file(), name
    assert "| block |" in (out / "results.md").read_text()
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 5
    for name, s in r["samplers"].items():  # per prompt, what the rates are the means of
        assert sum(row["finished"][name] for row in rows) == round(s["termination_rate"] * 5)
    first = [row["first_step_eos_exact"] for row in rows]
    assert first.count(None) == fs["n_beyond_canvas"]
    at_zero = fs["by_reveal"]["0"]
    assert sum(x for x in first if x is not None) == round(at_zero["exact_acc"] * at_zero["n"])
    probe = r["probe"]  # the EOS block probe: every block length, every offset, outcomes that add up
    assert set(probe) == {"8", "16", "32", "64"} and set(probe["8"]) == {"first", "middle", "last", "past"}
    for cells in probe.values():
        for c in cells.values():
            assert c["n"] == 0 or abs(sum(c[k] for k in ("true", "block_end", "other", "none")) - 1) < 1e-9
    assert "## EOS inside one block" in (out / "results.md").read_text()

    out_ar, r_ar = run(setup, tmp_path, "ar", "--samplers", "ar,block")
    assert set(r_ar["samplers"]) == {"ar"} and "skipped" in r_ar["first_step"] and r_ar["probe"] is None
    assert (out_ar / "lengths_hist.png").is_file() and not (out_ar / "eos_heatmap.png").exists()
    row = json.loads((out_ar / "samples.jsonl").read_text().splitlines()[0])
    assert set(row["finished"]) == {"ar"} and row["first_step_eos_exact"] is None
    assert "first-step EOS test skipped" in capsys.readouterr().out

    table = tmp_path / "TABLE.md"
    eval_eos.main(["--merge", str(out / "results.json"), str(out_ar / "results.json"), "--out", str(table)])
    lines = table.read_text().splitlines()
    assert len(lines) == 2 + 1 + 3 + 1  # header, rule, the reference, 3 diffusion samplers, ar
    assert lines[3].startswith("| dllm_var | dllm_var | lengthtask | block |")


@pytest.mark.parametrize("flags, message", [
    (["--init_from", "NOTHING"], "no checkpoint at"),
    (["--data", "tinystories"], "holds prepared 'lengthtask' data, not 'tinystories': pass --data lengthtask"),
    (["--data_dir", "NO_DATA"], "is missing: prepare the data first"),
    (["--canvas", "1000"], "pass --canvas"),
    (["--judge", "DLLM_VAR"], "the judge must be causal"),
    (["--device", "tpu"], "device must be auto, cpu, cuda or cuda:N"),
])
def test_a_command_that_cannot_run_says_what_to_do_in_one_line(setup, tmp_path, capsys, flags, message):
    flags = [{"NOTHING": str(tmp_path / "nothing"), "NO_DATA": str(tmp_path / "no_data"),
              "DLLM_VAR": str(setup["dllm_var"])}.get(f, f) for f in flags]
    with pytest.raises(SystemExit) as stop:
        run(setup, tmp_path, "dllm_var", *flags)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("error: ") and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_merge_of_a_missing_file_is_one_error_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        eval_eos.main(["--merge", str(tmp_path / "absent.json")])
    assert stop.value.code == 2 and capsys.readouterr().err == f"error: {tmp_path / 'absent.json'} does not exist\n"
