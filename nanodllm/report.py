"""The tables of eval_eos.py: one run's results.md, and one table merged from several runs' results.json.

A results.json (written by eval_eos.py) holds model, data, quality, reference, first_step, samplers and
skipped_samplers; the tables below pick their columns from it. A missing or None value prints as "-".
"""

import json
import math
from pathlib import Path

import numpy as np

# Columns of the tables: (header, key, format).
SAMPLER_COLUMNS = [("terminated", "termination_rate", "{:.0%}"), ("mean len", "mean_generated", "{:.1f}"),
                   ("len MAE", "mae", "{:.1f}"), ("rel. err", "rel_error", "{:.2f}"),
                   ("Pearson r", "pearson", "{:.2f}"), ("W1", "wasserstein", "{:.1f}"),
                   ("exact match", "exact_match", "{:.0%}"), ("exact length", "exact_length", "{:.0%}"),
                   ("EOS in a block's last slot", "eos_last_slot", "{:.0%}"),
                   ("rep-4", "repetition", "{:.2f}"), ("gen PPL", "gen_ppl", "{:.2f}"),
                   ("tokens/s", "tokens_per_s", "{:.0f}"), ("NFE/token", "nfe_per_token", "{:.3f}")]
MODEL_COLUMNS = [("val NLL", "val_nll", "{:.4f}"), ("EOS exact (1st step)", "eos_exact", "{:.0%}"),
                 ("EOS MRR", "eos_mrr", "{:.3f}")]
PROBE_COLUMNS = [("n", "n", "{}"), ("at the true end", "true", "{:.0%}"), ("at the block's end", "block_end", "{:.0%}"),
                 ("elsewhere", "other", "{:.0%}"), ("nowhere", "none", "{:.0%}")]
FIRST_STEP_COLUMNS = [("n", "n", "{}"), ("exact", "exact_acc", "{:.0%}"), ("within ±k", "acc_within_k", "{:.0%}"),
                      ("MAE", "mae", "{:.1f}"), ("P(EOS) at true", "p_eos_true", "{:.3f}"), ("MRR", "mrr", "{:.3f}")]


def json_safe(obj):
    """JSON-safe: nan and inf become null (json.dumps would write NaN, which is not JSON), numpy scalars Python
    numbers."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    return obj


def _cells(values: dict, columns) -> list[str]:
    return ["-" if values.get(key) is None else fmt.format(values[key]) for _, key, fmt in columns]


def _table(header: list[str], rows: list[list[str]], n_text: int = 1) -> list[str]:
    """A markdown table; the first n_text columns are names (left-aligned), the rest numbers (right-aligned)."""
    rule = "|" + "---|" * n_text + "---:|" * (len(header) - n_text)
    return ["| " + " | ".join(header) + " |", rule] + ["| " + " | ".join(r) + " |" for r in rows]


def _reference_cells(reference: dict) -> list[str]:
    """The reference responses as a row of the sampler table: their length, repetition and perplexity."""
    return _cells(dict(mean_generated=reference["mean_length"], repetition=reference["repetition"],
                       gen_ppl=reference["gen_ppl"]), SAMPLER_COLUMNS)


def markdown_report(results: dict) -> str:
    """One run's results.md: the model, the generation table (references first), the first-step EOS table."""
    m, q = results["model"], results["quality"]
    lines = [f"# {m['label']}: {m['attention']} model, recipe {m['recipe']}, step {m['step']}", "",
             f"{results['data']['num_samples']} held-out {results['data']['dataset']} pairs from "
             f"{results['data']['data_dir']}; mean reference length {results['reference']['mean_length']:.1f} "
             f"tokens. Device {results['device']} ({results['dtype']}).", ""]
    if q:
        lines += [f"Validation NLL bound ({q['recipe']} recipe): {q['val_nll']:.4f} nats/token "
                  f"(perplexity {q['val_ppl']:.2f}) over {q['val_tokens']:,} tokens.", ""]
    lines += ["## Generation", ""]
    rows = [["reference"] + _reference_cells(results["reference"])]
    rows += [[name] + _cells(r, SAMPLER_COLUMNS) for name, r in results["samplers"].items()]
    lines += _table(["sampler"] + [h for h, _, _ in SAMPLER_COLUMNS], rows)
    lines += [""] + [f"- {name} skipped: {why}" for name, why in results["skipped_samplers"].items()]
    lines += ["", "## First-step EOS prediction", ""]
    fs = results["first_step"]
    if "skipped" in fs:
        lines.append(f"Skipped: {fs['skipped']}")
    else:
        lines.append(f"One forward pass on prompt + {fs['canvas']} positions (k = {results['args']['tolerance']}); "
                     f"{fs['n_beyond_canvas']} samples whose EOS lies beyond the canvas are left out.")
        rows = [[f"{float(r):.0%}"] + _cells(v, FIRST_STEP_COLUMNS) for r, v in fs["by_reveal"].items()]
        lines += [""] + _table(["revealed"] + [h for h, _, _ in FIRST_STEP_COLUMNS], rows)
    if results.get("probe"):
        lines += ["", "## EOS inside one block (the probe)", "",
                  "Prompt + the true response up to j tokens before its end + one block of b masks: where is the "
                  "first EOS the model would write? (past: the true end lies beyond the block, so no EOS is right.)",
                  ""]
        rows = [[str(b), name, str(c["j"])] + _cells(c, PROBE_COLUMNS)
                for b, cells in results["probe"].items() for name, c in cells.items()]
        lines += _table(["block", "true end", "j"] + [h for h, _, _ in PROBE_COLUMNS], rows, n_text=2)
    lines += ["", "## Figures", ""] + [f"![{p}]({p})" for p in results["plots"]]
    return "\n".join(lines) + "\n"


def merge_tables(paths) -> str:
    """One markdown table of several results.json: a row per model x sampler, with the model's validation NLL
    and first-step EOS numbers (nothing revealed), and one reference row per distinct set of pairs and judge.
    A path that is not a file raises FileNotFoundError."""
    rows, seen = [], set()
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
        r = json.loads(path.read_text())
        fs = r["first_step"].get("by_reveal", {}).get("0") or {}
        model = _cells(dict(val_nll=(r["quality"] or {}).get("val_nll"), eos_exact=fs.get("exact_acc"),
                            eos_mrr=fs.get("mrr")), MODEL_COLUMNS)
        key = (r["data"]["dataset"], r["data"]["data_dir"], r["data"]["num_samples"], r["args"]["judge"])
        if key not in seen:
            seen.add(key)
            rows.append(["reference", "-", r["data"]["dataset"], "-"] + _cells({}, MODEL_COLUMNS)
                        + _reference_cells(r["reference"]))
        rows += [[r["model"]["label"], r["model"]["recipe"], r["data"]["dataset"], name] + model
                 + _cells(s, SAMPLER_COLUMNS) for name, s in r["samplers"].items()]
    header = ["model", "recipe", "data", "sampler"] + [h for h, _, _ in MODEL_COLUMNS + SAMPLER_COLUMNS]
    return "\n".join(_table(header, rows, n_text=4)) + "\n"
