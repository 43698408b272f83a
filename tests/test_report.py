"""Tests of nanodllm/report.py on hand-made results."""

import json
import math

import numpy as np
import pytest

from nanodllm import report


def results(label, recipe, samplers, first_step=None):
    return dict(
        model=dict(label=label, attention="bidirectional", recipe=recipe, step=100),
        data=dict(dataset="lengthtask", data_dir="data/lengthtask", num_samples=5),
        device="cpu", dtype="float32", args=dict(judge="out/ar", tolerance=2),
        quality=dict(recipe=recipe, val_nll=1.5, val_ppl=4.48, val_tokens=1234),
        reference=dict(mean_length=12.5, repetition=0.1, gen_ppl=3.0),
        first_step=first_step or dict(skipped="causal"), samplers=samplers, skipped_samplers={"ar": "not causal"},
        plots=["lengths_hist.png"])


BLOCK = dict(termination_rate=0.8, mean_generated=11.0, mae=2.0, rel_error=0.25, pearson=0.5, wasserstein=1.5,
             exact_match=0.4, exact_length=0.6, eos_last_slot=0.125, repetition=0.05, gen_ppl=None,
             tokens_per_s=100.0, nfe_per_token=0.25)


def test_markdown_report():
    first_step = dict(canvas=16, n_beyond_canvas=1, by_reveal={"0": dict(n=4, exact_acc=0.5, acc_within_k=0.75,
                                                                         mae=1.0, p_eos_true=0.2, mrr=0.6)})
    md = report.markdown_report(results("m", "dllm_var", {"block": BLOCK}, first_step))
    assert md.startswith("# m: bidirectional model, recipe dllm_var, step 100\n")
    assert "| block | 80% | 11.0 | 2.0 | 0.25 | 0.50 | 1.5 | 40% | 60% | 12% | 0.05 | - | 100 | 0.250 |" in md
    assert "| reference | - | 12.5 | - | - | - | - | - | - | - | 0.10 | 3.00 | - | - |" in md
    assert "| 0% | 4 | 50% | 75% | 1.0 | 0.200 | 0.600 |" in md and "- ar skipped: not causal" in md
    assert "1.5000 nats/token" in md and "![lengths_hist.png](lengths_hist.png)" in md


def test_merge_tables_one_reference_row_per_set_of_pairs(tmp_path):
    paths = []
    for label in ("a", "b"):
        paths.append(tmp_path / f"{label}.json")
        paths[-1].write_text(json.dumps(results(label, "dllm_var", {"block": BLOCK, "llada": BLOCK})))
    lines = report.merge_tables(paths).splitlines()
    assert len(lines) == 2 + 1 + 4  # header, rule, one reference (same pairs and judge), 2 models x 2 samplers
    assert lines[2].startswith("| reference | - | lengthtask | - | - | - | - |")
    assert lines[3].startswith("| a | dllm_var | lengthtask | block | 1.5000 | - | - | 80% |")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        report.merge_tables([tmp_path / "absent.json"])


def test_json_safe():
    safe = report.json_safe(dict(a=[float("nan"), 1.0, np.float32(2.5)], b=(math.inf, np.int64(3))))
    assert safe == dict(a=[None, 1.0, 2.5], b=[None, 3]) and json.dumps(safe)
