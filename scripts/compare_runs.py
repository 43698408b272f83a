"""Rows of several bench_sampler runs in one table, each story's judge perplexity paired with a reference row's.

bench_sampler pairs a lower threshold with the first one inside a run ("vs first threshold"). The rounds of
self-distillation are benched one student per run, each alone on the GPU, and the AR model's rows only in the first
run. This puts the runs side by side: each diffusion row's judge perplexity over the reference run's block row at the
same batch size and --reference_threshold, on the same stories (a paired bootstrap over them,
stats.perplexity_ratio_with_interval), and its tokens/s over the AR row bench_sampler compares it with
(bench_sampler.ar_baseline), whichever run timed that row. The runs must share their prompts and their judge (the
AR checkpoint, by id): a study retrained on a fresh machine has a judge of its own at the same path.

    python scripts/compare_runs.py --reference=mix2 mix2=OUT/slots_tinystories-mix2.json \
        b3=OUT/slots_tinystories-b3.json b4=OUT/slots_tinystories-b4.json
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: bench_sampler and nanodllm
from bench_sampler import ar_baseline, fail  # noqa: E402
from nanodllm.stats import perplexity_ratio_with_interval  # noqa: E402

SAME_PROMPTS = ("data_dir", "prompt_file", "split", "n_prompts")  # bench_sampler's args that pick the prompts
ROW_KEYS = ("sampler", "label", "batch_size", "threshold", "tokens_per_s", "nfe_per_token", "seconds", "nfe",
            "termination_rate", "repetition", "mean_length", "s_per_prompt")  # what a row of the table reads


def load_runs(specs) -> dict:
    """{name: the run's JSON} from NAME=PATH arguments, checked to have drawn the same prompts."""
    runs = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            fail(f"expected NAME=PATH, got {spec!r}")
        if name in runs:
            fail(f"run name {name!r} given twice")
        try:
            with open(path) as f:
                runs[name] = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            fail(f"cannot read the bench_sampler JSON {path}: {e}")
        if not isinstance(runs[name], dict) or not isinstance(runs[name].get("results"), list):
            fail(f"{path} has no bench_sampler results")
    picks = {name: tuple(run.get("args", {}).get(k) for k in SAME_PROMPTS) for name, run in runs.items()}
    if len(set(picks.values())) > 1:
        fail("the runs drew different prompts (" + "; ".join(f"{n}: {p}" for n, p in picks.items()) + ")")
    judges = {name: judge_id(run) for name, run in runs.items()}
    if len(set(judges.values()) - {None}) > 1:
        fail("the runs were judged by different AR models, so their perplexities are not on one scale ("
             + "; ".join(f"{n}: {j or 'unknown'}" for n, j in judges.items()) + ")")
    return runs


def judge_id(run) -> str | None:
    """The id of the AR checkpoint that judged (and timed) the run; None where the JSON does not say (none, or a
    bench_sampler from before ids were recorded: a path alone does not tell two trainings apart)."""
    ar = run.get("ar_checkpoint")
    return ar.get("id") if isinstance(ar, dict) else None


def paired_ppl(row, ref) -> str:
    """row's judge perplexity over ref's on the same stories, with its 95% interval; - where either has none."""
    if ref is None or row is ref or not row.get("judge_nll_per_prompt") or not ref.get("judge_nll_per_prompt"):
        return "-"
    d = perplexity_ratio_with_interval(row["judge_nll_per_prompt"], row["judge_tokens_per_prompt"],
                                       ref["judge_nll_per_prompt"], ref["judge_tokens_per_prompt"])
    return f"{d['ratio']:.2f}x [{d['low']:.2f}, {d['high']:.2f}]" if d["ratio"] is not None else "-"


def table(runs: dict, reference: str, reference_threshold: float) -> str:
    every_row = [r for run in runs.values() for r in run["results"]]
    lines = [f"| run | sampler | batch | threshold | tokens/s | tokens/pass | ms/pass | judge ppl | vs {reference} "
             f"ppl [95%] | ended | rep-4 | mean length | s/prompt | tokens/s vs AR |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, run in runs.items():
        for r in run["results"]:
            if not all(key in r for key in ROW_KEYS):
                fail(f"run {name}: a row without {', '.join(k for k in ROW_KEYS if k not in r)} (an older "
                     f"bench_sampler's JSON?)")
            autoregressive = r["sampler"].startswith("ar")
            ref = next((b for b in runs[reference]["results"] if b["sampler"].startswith("block")
                        and b["batch_size"] == r["batch_size"] and b["threshold"] == reference_threshold), None)
            ar = ar_baseline(r["sampler"], [b for b in every_row if b["batch_size"] == r["batch_size"]])
            judge = f"{r['judge_ppl']:.2f}" if r.get("judge_ppl") is not None else "-"
            vs_ar = f"{r['tokens_per_s'] / ar['tokens_per_s']:.2f}x" if ar else "-"
            lines.append(
                f"| {name} | {r['label']} | {r['batch_size']} | {'-' if autoregressive else r['threshold']} | "
                f"{r['tokens_per_s']:,.0f} | {1 / r['nfe_per_token']:.2f} | {1000 * r['seconds'] / r['nfe']:.3f} | "
                f"{judge} | {'-' if autoregressive else paired_ppl(r, ref)} | {r['termination_rate']:.0%} | "
                f"{r['repetition']:.2f} | {r['mean_length']:.1f} | {r['s_per_prompt']:.4f} | {vs_ar} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="NAME=PATH", help="a bench_sampler --out JSON, and its name")
    parser.add_argument("--reference", required=True, help="the run whose block rows the perplexities are paired with")
    parser.add_argument("--reference_threshold", type=float, default=0.9)
    args = parser.parse_args(argv)
    runs = load_runs(args.runs)
    if args.reference not in runs:
        fail(f"--reference={args.reference} is none of the runs ({', '.join(runs)})")
    print(table(runs, args.reference, args.reference_threshold))


if __name__ == "__main__":
    main()
