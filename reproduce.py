"""Reruns the README's quick start and checks its headline numbers, each within a stated tolerance.

    python reproduce.py --data_source=../shared/data/tinystories          # the three quick-start commands
    python reproduce.py --data_source=../shared/data/tinystories --seeds=1337,1,2
    python reproduce.py --dry_run                                          # only print the commands

For every seed it runs, as the README's quick start does (in out_dir, never over out/tiny):
    python train.py config/tiny.py
    python sample.py --init_from out/tiny --prompt "Once upon a time, there was a little cat."
    python eval_eos.py --init_from out/tiny --data tinystories
and prints one PASS or FAIL line per number, against the README's value (EXPECTED below: one NVIDIA H200,
2026-12-02, seed 1337). The tolerances are meant to hold across seeds and GPUs; how far two seeds really are
apart is what --seeds measures. It exits with 1 if any number fails, 2 if a command cannot run.

--tiny swaps in a model and run small enough for a CPU in seconds (the tests use it): its numbers are nothing like
the README's, and it says so by failing.
"""

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

PROMPT = "Once upon a time, there was a little cat."

# name -> (README value, tolerance, kind): "abs" |value - README| <= tolerance, "rel" the same relative to the
# README's value, "min" value >= tolerance. Each is what the README's quick-start paragraph states.
EXPECTED = {
    "val_nll": (3.50, 0.10, "abs"),  # validation NLL bound at step 2000
    "sample_stopped": (1.0, 1.0, "min"),  # the sample stops by itself (ends with EOS)
    "sample_length": (96, 0.5, "rel"),  # ... after 96 tokens
    "eval_terminated": (1.0, 0.95, "min"),  # eval_eos, block sampler: every story ends with EOS
    "eval_mean_length": (47.6, 0.25, "rel"),  # ... at a mean 47.6 tokens
    "reference_mean_length": (173.8, 0.1, "abs"),  # ... against 173.8 for the references (the data, not the model)
    "probe_block_end": (0.98, 0.90, "min"),  # EOS at the block's end in 98-100% of blocks where it does not belong
}

TINY_TRAIN = ["--model=tiny", "--n_layer=1", "--n_head=2", "--d_model=32", "--mlp_hidden=64", "--block_size=64",
              "--batch_size=2", "--max_iters=2", "--eval_interval=1", "--eval_iters=1", "--warmup_iters=1",
              "--compile=False", "--device=cpu"]
TINY_SAMPLE = ["--max_new_tokens", "16", "--device", "cpu"]
TINY_EVAL = ["--num_samples", "2", "--max_new_tokens", "16", "--probe_blocks", "8", "--samplers", "block",
             "--reveal", "0", "--eval_iters", "1", "--device", "cpu"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Rerun the README's quick start and compare its numbers.")
    p.add_argument("--seeds", default="1337", help="comma-separated training seeds (1337 is the README's)")
    p.add_argument("--data_source", default=None, help="local TinyStories text (default: the hub), as train.py's")
    p.add_argument("--data_dir", default=None, help="where the prepared data go (default: train.py's)")
    p.add_argument("--out_dir", default="out/reproduce", help="each seed's run goes to OUT_DIR/seed<seed>")
    p.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--tiny", action="store_true", help="a tiny CPU model and run (for the tests)")
    args = p.parse_args(argv)
    try:
        args.seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        p.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    return args


def commands(args, seed: int) -> dict[str, list[str]]:
    """The README's three commands for one seed, with this run's out_dir, data and (with --tiny) sizes."""
    run, py = Path(args.out_dir) / f"seed{seed}", sys.executable
    data = ([f"--data_source={args.data_source}"] if args.data_source else []) + \
        ([f"--data_dir={args.data_dir}"] if args.data_dir else [])
    train = [py, "train.py", "config/tiny.py", f"--seed={seed}", f"--out_dir={run / 'train'}", "--overwrite"] + data
    sample = [py, "sample.py", "--init_from", str(run / "train"), "--prompt", PROMPT]
    evaluate = [py, "eval_eos.py", "--init_from", str(run / "train"), "--data", "tinystories",
                "--out_dir", str(run / "eval_eos")] + (["--data_dir", args.data_dir] if args.data_dir else [])
    if args.tiny:
        train, sample, evaluate = train + TINY_TRAIN, sample + TINY_SAMPLE, evaluate + TINY_EVAL
    return dict(train=train, sample=sample, eval_eos=evaluate)


def read_val_nll(log_jsonl: Path) -> float:
    """The last validation NLL bound train.py logged (at max_iters)."""
    records = [json.loads(line) for line in log_jsonl.read_text().splitlines() if line.strip()]
    return [r["val_nll"] for r in records if "val_nll" in r][-1]


def read_sample(stdout: str) -> dict:
    """sample.py's closing stats line -> the mean length and the share of rows that ended with EOS."""
    m = re.search(r"\(mean ([\d.]+)\).*?(\d+)% ended with EOS", stdout)
    if not m:
        raise ValueError("sample.py printed no stats line")
    return dict(sample_length=float(m[1]), sample_stopped=int(m[2]) / 100)


def read_eval(results: dict) -> dict:
    """eval_eos.py's results.json -> the block sampler's termination and mean length, the references' mean
    length, and the probe's smallest rate of EOS at the block's end where the true end is inside the block but
    not at its end (the blocks where the README reads the shortcut)."""
    block = results["samplers"]["block"]
    rates = [c["block_end"] for by_name in results["probe"].values() for name, c in by_name.items()
             if name in ("first", "middle") and c["block_end"] is not None]  # None: no pair fitted that cell
    return dict(eval_terminated=block["termination_rate"], eval_mean_length=block["mean_generated"],
                reference_mean_length=results["reference"]["mean_length"],
                probe_block_end=min(rates) if rates else float("nan"))  # NaN fails every check


def check(name: str, value: float) -> tuple[bool, str]:
    """(passed, one line) for one number against EXPECTED."""
    expected, tolerance, kind = EXPECTED[name]
    if kind == "min":
        ok, rule = value >= tolerance, f">= {tolerance:g} (README {expected:g})"
    elif kind == "rel":
        ok, rule = abs(value - expected) <= tolerance * expected, f"README {expected:g} +- {tolerance:.0%}"
    else:
        ok, rule = abs(value - expected) <= tolerance, f"README {expected:g} +- {tolerance:g}"
    return ok, f"{'PASS' if ok else 'FAIL'} {name}: {value:.4g} ({rule})"


def run(cmd: list[str], log: Path) -> str:
    """Runs one command, its output to log; stops the script (exit 2) if it fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        print(f"error: {' '.join(cmd[1:3])} failed (exit {proc.returncode}): {tail[0]} (full log: {log})",
              file=sys.stderr)
        sys.exit(2)
    return proc.stdout


def main(argv=None) -> int:
    args = parse_args(argv)
    failed = False
    for seed in args.seeds:
        cmds = commands(args, seed)
        if args.dry_run:
            print("\n".join(" ".join(c) for c in cmds.values()))
            continue
        runs = Path(args.out_dir) / f"seed{seed}"
        run(cmds["train"], runs / "train.log")
        numbers = dict(val_nll=read_val_nll(runs / "train" / "log.jsonl"))
        numbers.update(read_sample(run(cmds["sample"], runs / "sample.log")))
        run(cmds["eval_eos"], runs / "eval_eos.log")
        numbers.update(read_eval(json.loads((runs / "eval_eos" / "results.json").read_text())))
        print(f"seed {seed}:")
        for name, value in numbers.items():
            ok, line = check(name, value)
            failed |= not ok
            print("  " + line)
        (runs / "numbers.json").write_text(json.dumps(numbers, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
