"""eval_eos.py end to end on the CPU: tiny random checkpoints (a diffusion model and a causal judge) on a tiny
length task directory."""

import json
from contextlib import nullcontext

import pytest
import torch

import eval_eos
from nanodllm.checkpoint import save_checkpoint
from nanodllm.config import TrainConfig, config_to_dict
from nanodllm.tasks import ensure_task_data
from nanodllm.training import build_model
from tests.conftest import tiny_model

TINY = dict(dataset="lengthtask", n_layer=2, n_head=2, d_model=32, mlp_hidden=64, batch_size=2, block_size=128,
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

    out_ar, r_ar = run(setup, tmp_path, "ar", "--samplers", "ar,block")
    assert set(r_ar["samplers"]) == {"ar"} and "skipped" in r_ar["first_step"]
    assert (out_ar / "lengths_hist.png").is_file() and not (out_ar / "eos_heatmap.png").exists()
    row = json.loads((out_ar / "samples.jsonl").read_text().splitlines()[0])
    assert set(row["finished"]) == {"ar"} and row["first_step_eos_exact"] is None
    assert "first-step EOS test skipped" in capsys.readouterr().out

    table = tmp_path / "TABLE.md"
    eval_eos.main(["--merge", str(out / "results.json"), str(out_ar / "results.json"), "--out", str(table)])
    lines = table.read_text().splitlines()
    assert len(lines) == 2 + 1 + 3 + 1  # header, rule, the reference, 3 diffusion samplers, ar
    assert lines[3].startswith("| dllm_var | dllm_var | lengthtask | block |")


def test_clear_errors(setup, tmp_path):
    with pytest.raises(SystemExit, match="no checkpoint at"):
        run(setup, tmp_path, "dllm_var", "--init_from", str(tmp_path / "nothing"))
    with pytest.raises(SystemExit, match="holds prepared 'lengthtask' data, not 'tinystories'"):
        run(setup, tmp_path, "dllm_var", "--data", "tinystories")
    with pytest.raises(SystemExit, match="is missing: prepare the data first"):
        run(setup, tmp_path, "dllm_var", "--data_dir", str(tmp_path / "no_data"))
    with pytest.raises(SystemExit, match="pass --canvas"):
        run(setup, tmp_path, "dllm_var", "--canvas", "1000")
    with pytest.raises(SystemExit, match="the judge must be causal"):
        run(setup, tmp_path, "dllm_var", "--judge", str(setup["dllm_var"]))


def test_first_step_rows_are_computed_as_if_alone_and_revealed_positions_hold_no_eos():
    model = tiny_model().eval()
    pairs = [([1, 2, 3], [10, 11, 12, 13]), ([4], [14, 15]), ([5, 6, 7, 8, 9], [])]  # prompts of 3 lengths
    batched, _ = eval_eos.first_step_eos(model, pairs, 8, 0.0, 3, 0, nullcontext())
    for i, pair in enumerate(pairs):
        alone, _ = eval_eos.first_step_eos(model, [pair], 8, 0.0, 1, 0, nullcontext())
        torch.testing.assert_close(torch.tensor(batched[i]), torch.tensor(alone[0]))
    eos_prob, eos_is_argmax = eval_eos.first_step_eos(model, pairs, 8, 0.5, 3, 0, nullcontext())
    assert [(row == 0).sum() for row in eos_prob] == [2, 1, 0]  # half of each response shown, never an EOS
    assert not eos_is_argmax[eos_prob == 0].any()
    for row, (_, response) in zip(eos_prob, pairs):
        assert (row[len(response):] > 0).all()  # only positions of the response are ever shown
