"""reproduce.py: its comparisons, its parsers, and the quick start end to end with a tiny CPU model."""

import json

import pytest

import reproduce


@pytest.mark.parametrize("name, value, ok", [
    ("val_nll", 3.58, True), ("val_nll", 3.875, False), ("val_nll", 3.39, False),  # +- 0.10
    ("sample_length", 60, True), ("sample_length", 40, False),  # +- 50% of 96
    ("eval_terminated", 0.95, True), ("eval_terminated", 0.9, False),  # at least 95%
])
def test_each_number_passes_only_within_its_tolerance(name, value, ok):
    passed, line = reproduce.check(name, value)
    assert passed is ok and line.startswith("PASS" if ok else "FAIL") and name in line


def test_the_sample_stats_line_and_eval_results_are_read():
    out = "...\n1 rows, 96 tokens (mean 96.0), 97 forward passes, 0.990 NFE/token, 7.700 s, 12.5 tokens/s, 100% ended with EOS\n"
    assert reproduce.read_sample(out) == dict(sample_length=96.0, sample_stopped=1.0)
    with pytest.raises(ValueError, match="no stats line"):
        reproduce.read_sample("nothing here")
    probe = {"8": {"first": dict(block_end=0.99), "middle": dict(block_end=0.97), "last": dict(block_end=0.0),
                   "past": dict(block_end=0.5)}}
    results = dict(samplers=dict(block=dict(termination_rate=1.0, mean_generated=47.6)),
                   reference=dict(mean_length=173.8), probe=probe)
    assert reproduce.read_eval(results) == dict(eval_terminated=1.0, eval_mean_length=47.6,
                                                reference_mean_length=173.8, probe_block_end=0.97)


def test_dry_run_prints_the_readme_commands_per_seed(capsys):
    assert reproduce.main(["--dry_run", "--seeds", "1337,1", "--data_source", "DIR"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6 and "train.py config/tiny.py --seed=1337" in lines[0] and "--data_source=DIR" in lines[0]
    assert "sample.py --init_from out/reproduce/seed1337/train --prompt" in lines[1]
    assert "eval_eos.py --init_from out/reproduce/seed1337/train --data tinystories" in lines[2]
    assert "--seed=1" in lines[3]


def test_bad_seeds_are_refused(capsys):
    with pytest.raises(SystemExit):
        reproduce.parse_args(["--seeds", "1,two"])
    assert "comma-separated integers" in capsys.readouterr().err


def test_a_tiny_quick_start_runs_and_fails_the_readme_numbers(tiny_data, tmp_path, capsys):
    """Two training steps of a 1-layer model cannot reach the README's numbers: every command runs, every number
    is read and compared, and the script exits 1."""
    code = reproduce.main(["--tiny", "--data_source", str(tiny_data.parent / "raw"), "--data_dir", str(tiny_data),
                           "--out_dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1 and "FAIL val_nll" in out
    assert all(f" {name}: " in out for name in reproduce.EXPECTED)
    assert set(json.loads((tmp_path / "seed1337" / "numbers.json").read_text())) == set(reproduce.EXPECTED)


def test_a_failing_command_is_one_error_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        reproduce.main(["--tiny", "--data_source", str(tmp_path / "absent"), "--data_dir", str(tmp_path / "d"),
                        "--out_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("error: train.py config/tiny.py failed")
