"""bench.py on the CPU with a tiny config: the training-step benchmark and the per-Linear one."""

import json

import pytest

import bench

TINY = ["--model=tiny", "--n_layer=1", "--d_model=32", "--n_head=2", "--mlp_hidden=64", "--batch_size=2",
        "--block_size=16", "--gradient_accumulation_steps=1", "--device=cpu", "--compile=False"]


def test_training_step_benchmark(tmp_path):
    out = tmp_path / "bench.jsonl"
    r = bench.main(TINY + ["--steps=2", "--warmup=1", f"--json={out}"])
    assert r["tokens_per_s"] > 0 and r["ms_per_step"] > 0 and r["steps"] == 2
    assert r["tokens_per_s"] == pytest.approx(2 * 16 / (r["ms_per_step"] / 1000), rel=0.01)
    assert json.loads(out.read_text().splitlines()[-1])["model"] == "tiny"


def test_each_linear_shape_once(tmp_path):
    out = tmp_path / "linears.jsonl"
    rows = bench.main(TINY + ["--steps=2", "--warmup=1", "--linears=1", f"--json={out}"])
    # q/k/v and attn_out are 32 -> 32, gate and up 32 -> 64, ff_out 64 -> 32; the output head is left out
    assert [(r["in_features"], r["out_features"]) for r in rows] == [(32, 32), (32, 64), (64, 32)]
    assert all(r["mode"] == "autocast" and r["speedup"] == 1.0 and r["ms"] > 0 for r in rows)
    assert len(out.read_text().splitlines()) == 3


def test_fp8_needs_a_capable_gpu():
    with pytest.raises(RuntimeError, match="compute capability"):
        bench.main(TINY + ["--linears=1", "--fp8=tensorwise", "--steps=1", "--warmup=0"])


def test_profile_reports_where_the_step_goes():
    """On the CPU there are no CUDA kernels to sort, but the profiled steps run and the summary has its keys."""
    r = bench.main(TINY + ["--steps=2", "--warmup=1", "--profile=1"])
    p = r["profile"]
    assert p["steps"] == 2 and p["kernel_ms_per_step"] == 0 and "syncs_per_step" in p
    assert r["loss_gather"] == "mask" and r["compile_mode"] == "default"


def test_a_loss_gather_lever_runs_in_the_benchmark():
    r = bench.main(TINY + ["--steps=1", "--warmup=1", "--loss_gather=dense"])
    assert r["loss_gather"] == "dense" and r["tokens_per_s"] > 0
