"""scripts/compare_runs.py: runs of bench_sampler side by side, perplexities paired with a reference run's rows."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_runs.py"
spec = importlib.util.spec_from_file_location("compare_runs", SCRIPT)
compare_runs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_runs)

ARGS = dict(data_dir="data/tinystories", prompt_file=None, split="val", n_prompts=3)


def row(sampler, tokens_per_s, nll, tokens, threshold=0.9, seconds=2.0, nfe=1000):
    return dict(sampler=sampler, label=sampler, batch_size=1, threshold=threshold, tokens_per_s=tokens_per_s,
                nfe_per_token=0.5, seconds=seconds, nfe=nfe, judge_ppl=math.exp(sum(nll) / sum(tokens)),
                judge_nll_per_prompt=nll, judge_tokens_per_prompt=tokens, termination_rate=1.0, repetition=0.1,
                mean_length=100.0, s_per_prompt=0.05)


def write(tmp_path, name, rows, judge="judge-a", **args):
    """A bench_sampler JSON judged by the AR checkpoint of id `judge` (None: an older JSON, the judge a path)."""
    path = tmp_path / f"{name}.json"
    ar_checkpoint = dict(path="runs/ar-s0", step=1, id=judge) if judge else "runs/ar-s0"
    path.write_text(json.dumps(dict(args={**ARGS, **args}, ar_checkpoint=ar_checkpoint, results=rows)))
    return f"{name}={path}"


def test_rows_paired_with_the_reference_and_compared_with_the_ar_row_of_another_run(tmp_path, capsys):
    first = write(tmp_path, "r1", [row("block_slots_compiled_graphs", 1000.0, [10.0, 20.0, 30.0], [5, 10, 15]),
                                   row("ar_slots_compiled_graphs", 500.0, [5.0, 5.0, 5.0], [5, 5, 5], None)])
    second = write(tmp_path, "r2", [row("block_slots_compiled_graphs", 2500.0, [12.0, 24.0, 36.0], [5, 10, 15])])
    compare_runs.main(["--reference=r1", first, second])
    lines = capsys.readouterr().out.splitlines()
    r1, ar, r2 = lines[2:]
    assert "| r1 |" in r1 and "| 2.00x |" in r1 and "| - | 100% |" in r1  # the reference is not paired with itself
    assert "| r1 | ar_slots_compiled_graphs |" in ar and "| 1.00x |" in ar
    # every story's NLL is 1.2 times the reference's: the perplexity ratio is exp(2.4 - 2.0) whatever is drawn
    ratio = f"{math.exp(0.4):.2f}"
    assert f"| {ratio}x [{ratio}, {ratio}] |" in r2 and "| 5.00x |" in r2 and "| 2.000 |" in r2  # ms per pass


def test_a_run_whose_judge_is_not_recorded_is_paired(tmp_path, capsys):
    first = write(tmp_path, "r1", [row("block_slots_compiled_graphs", 1000.0, [1.0, 2.0], [1, 2])])
    older = write(tmp_path, "r2", [row("block_slots_compiled_graphs", 1000.0, [2.0, 4.0], [1, 2])], judge=None)
    compare_runs.main(["--reference=r1", first, older])
    ratio = f"{math.exp(1.0):.2f}"
    assert f"| {ratio}x [{ratio}, {ratio}] |" in capsys.readouterr().out.splitlines()[3]


def test_no_reference_row_at_the_threshold_gives_a_dash(tmp_path, capsys):
    only = write(tmp_path, "r1", [row("block_slots_compiled_graphs", 1000.0, [1.0], [1], threshold=0.8)])
    compare_runs.main(["--reference=r1", "--reference_threshold=0.9", only])
    assert capsys.readouterr().out.splitlines()[2].count("| - |") == 2  # no pair, no AR row


@pytest.mark.parametrize("case, message", [
    ("missing", "cannot read the bench_sampler JSON"),
    ("not_json", "cannot read the bench_sampler JSON"),
    ("no_results", "has no bench_sampler results"),
    ("other_prompts", "the runs drew different prompts"),
    ("bad_spec", "expected NAME=PATH"),
    ("unknown_reference", "--reference=nope is none of the runs"),
    ("old_row", "run r3: a row without repetition"),
    ("other_judge", "the runs were judged by different AR models"),
])
def test_bad_input_is_an_error_line_and_exit_code_2(tmp_path, capsys, case, message):
    good = write(tmp_path, "r1", [row("block_slots_compiled_graphs", 1000.0, [1.0], [1])])
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "empty.json").write_text("{}")
    specs = dict(missing=[good, f"r2={tmp_path / 'absent.json'}"], not_json=[good, f"r2={tmp_path / 'bad.json'}"],
                 no_results=[good, f"r2={tmp_path / 'empty.json'}"],
                 other_prompts=[good, write(tmp_path, "r2", [], n_prompts=50)], bad_spec=[good, "r2"],
                 unknown_reference=[good], old_row=[good, write(tmp_path, "r3", [{
                     k: v for k, v in row("block_graphs", 1.0, [1.0], [1]).items() if k != "repetition"}])],
                 other_judge=[good, write(tmp_path, "r4", [], judge="judge-b")])[case]
    reference = "nope" if case == "unknown_reference" else "r1"
    with pytest.raises(SystemExit) as exit_:
        compare_runs.main([f"--reference={reference}", *specs])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("error: ") and message in err and "Traceback" not in err
