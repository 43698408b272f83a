"""Does the model know where to stop? EOS prediction, generated lengths and quality of one checkpoint.

    python eval_eos.py --init_from out/lengthtask-dllm_var --data lengthtask --judge out/lengthtask-ar \\
        --out_dir results/lengthtask-dllm_var
    python eval_eos.py --init_from out/tinystories-ar --data tinystories --samplers ar --judge out/tinystories-ar
    python eval_eos.py --merge results/*/results.json --out results/TABLE.md    # one table of several runs

dLLM-Var ("Let [EOS] Lead the Way") claims that a masked-diffusion model trained to predict EOS can decode block by
block and stop by itself. This script measures that claim on held-out prompt/response pairs: the first
--num_samples validation documents that have a prompt, in order (prompt = the document's first prompt_len
tokens, reference response = the rest without its EOS, so the true EOS sits at canvas position len(response)).

1. First-step EOS test (diffusion models only; a causal model has no canvas to look at): one forward pass over
   prompt + an all-mask canvas of --canvas positions, as the DiffuGPT student project's eval_eos does, gives P(EOS)
   at every position; we score where the model puts EOS (nanodllm/metrics.py: exact and within-k accuracy, MAE,
   P(EOS) at the true position, MRR). Repeated with --reveal fractions of the true response shown at random
   (seeded) positions: does the belief sharpen as the text fills in, as it does during decoding?
2. Generation with every requested sampler that fits the model (block, llada, length_bound for a diffusion model;
   ar for a causal one): termination rate, generated vs reference lengths (MAE, relative error, Pearson r,
   Wasserstein distance of the distributions), repetition, tokens/s and NFE per token (GenerationStats); on the
   length task (nanodllm/tasks.py), whether the answer is exactly right and exactly as long as it should be.
   tokens/s here includes warm-up and is only indicative: bench_sampler.py measures speed properly.
3. Quality: the validation NLL bound of the model's own recipe (nanodllm.training.evaluate), and, with --judge, the
   generative perplexity of the responses (and of the references, as the anchor) under a causal model. The NLL
   covers the tokens its recipe scores (recipes.nll_bound_example): response + EOS for dllm_var, eos_random and
   eos_pad, every token, prompts included, for ar and pretrain. Compare it between recipes that score the same.

It writes into --out_dir: results.json (everything), results.md (the tables), samples.jsonl (each prompt with its
reference, every sampler's response, whether it ended with EOS (finished) and, per prompt, whether the first-step
test at reveal 0 put EOS exactly right) and the figures eos_heatmap.png, lengths_scatter.png, lengths_hist.png.
"""

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from nanodllm import metrics, plots
from nanodllm.checkpoint import CheckpointError, load_model
from nanodllm.config import ConfigError, config_from_dict
from nanodllm.prepare import load_split
from nanodllm.sampler import GenerationStats, make_canvas
from nanodllm.system import Dist, autocast, pick_device
from nanodllm.tasks import Example, score
from nanodllm.tokenizer import get_tokenizer
from nanodllm.training import evaluate
from sample import generate

DATASETS = ("lengthtask", "tinystories", "fineweb")
SAMPLERS = ("block", "llada", "length_bound", "ar")

# Columns of the tables: (header, key, format). A missing or None value prints as "-".
SAMPLER_COLUMNS = [("terminated", "termination_rate", "{:.0%}"), ("mean len", "mean_generated", "{:.1f}"),
                   ("len MAE", "mae", "{:.1f}"), ("rel. err", "rel_error", "{:.2f}"),
                   ("Pearson r", "pearson", "{:.2f}"), ("W1", "wasserstein", "{:.1f}"),
                   ("exact match", "exact_match", "{:.0%}"), ("exact length", "exact_length", "{:.0%}"),
                   ("rep-4", "repetition", "{:.2f}"), ("gen PPL", "gen_ppl", "{:.2f}"),
                   ("tokens/s", "tokens_per_s", "{:.0f}"), ("NFE/token", "nfe_per_token", "{:.3f}")]
MODEL_COLUMNS = [("val NLL", "val_nll", "{:.4f}"), ("EOS exact (1st step)", "eos_exact", "{:.0%}"),
                 ("EOS MRR", "eos_mrr", "{:.3f}")]
FIRST_STEP_COLUMNS = [("n", "n", "{}"), ("exact", "exact_acc", "{:.0%}"), ("within ±k", "acc_within_k", "{:.0%}"),
                      ("MAE", "mae", "{:.1f}"), ("P(EOS) at true", "p_eos_true", "{:.3f}"), ("MRR", "mrr", "{:.3f}")]


def fail(message: str):
    sys.exit(f"error: {message}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--init_from", help="checkpoint directory, or a run's out_dir (its latest checkpoint)")
    p.add_argument("--data", choices=DATASETS, help="the prepared dataset the held-out pairs come from")
    p.add_argument("--data_dir", default=None, help="default: data/<data>")
    p.add_argument("--num_samples", type=int, default=200, help="held-out pairs: the first ones with a prompt")
    p.add_argument("--samplers", default=",".join(SAMPLERS),
                   help="comma-separated; those that do not fit the model are skipped (default: %(default)s)")
    p.add_argument("--judge", default=None, help="a causal checkpoint for generative perplexity (optional)")
    p.add_argument("--out_dir", default=None, help="default: results/<checkpoint run name>")
    p.add_argument("--label", default=None, help="the model's name in the tables (default: its run name)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"),
                   help="default: bfloat16 on CUDA, float32 on the CPU")
    p.add_argument("--batch_size", type=int, default=16, help="rows per forward pass / generation batch")
    p.add_argument("--seed", type=int, default=1337, help="revealed positions, and sampling when temperature > 0")
    g = p.add_argument_group("first-step EOS test")
    g.add_argument("--canvas", type=int, default=None, help="masks after the prompt (default: --max_new_tokens)")
    g.add_argument("--reveal", default="0,0.25,0.5,0.75", help="fractions of the true response shown")
    g.add_argument("--tolerance", type=int, default=2, help="k of the within-k accuracy (tokens)")
    g = p.add_argument_group("generation")
    g.add_argument("--max_new_tokens", type=int, default=256, help="cap of the block and ar samplers")
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    g.add_argument("--top_k", type=int, default=None)
    g.add_argument("--top_p", type=float, default=None)
    g.add_argument("--block_size", type=int, default=32, help="block: tokens per block")
    g.add_argument("--threshold", type=float, default=0.9, help="block: commit positions more confident than this")
    g.add_argument("--steps_per_block", type=int, default=None, help="block: fixed steps instead of the threshold")
    g.add_argument("--no_cache", action="store_true", help="block, ar: recompute everything every step")
    g.add_argument("--gen_length", type=int, default=None, help="llada: the canvas (default: --max_new_tokens)")
    g.add_argument("--steps", type=int, default=None,
                   help="llada: default gen_length; length_bound: default one token per step")
    g.add_argument("--block_length", type=int, default=None, help="llada: default gen_length")
    g.add_argument("--remasking", choices=("low_confidence", "random"), default="low_confidence")
    g.add_argument("--max_length", type=int, default=None,
                   help="length_bound: the probing canvas (default: --max_new_tokens)")
    g = p.add_argument_group("quality")
    g.add_argument("--eval_iters", type=int, default=None,
                   help="validation batches of the NLL bound (default: the training config's; 0 = skip)")
    g = p.add_argument_group("merging results")
    g.add_argument("--merge", nargs="+", default=None, metavar="RESULTS_JSON",
                   help="merge these results.json files into one markdown table, then exit")
    g.add_argument("--out", default=None, help="--merge: the markdown file to write (default: print it)")
    args = p.parse_args(argv)
    if args.merge:
        return args
    if not args.init_from or not args.data:
        p.error("--init_from and --data are required (or --merge)")
    for name in ("num_samples", "batch_size", "max_new_tokens", "block_size", "canvas", "gen_length", "steps",
                 "block_length", "max_length", "steps_per_block", "top_k"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if not 0 <= args.threshold <= 1 or args.temperature < 0 or args.tolerance < 0:
        p.error("--threshold must be in [0, 1], --temperature and --tolerance >= 0")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        p.error(f"--top_p must be in (0, 1], got {args.top_p}")
    try:
        args.reveal = [float(r) for r in args.reveal.split(",") if r.strip()]
    except ValueError:
        p.error(f"--reveal must be comma-separated fractions, got {args.reveal!r}")
    if not all(0 <= r < 1 for r in args.reveal):
        p.error("--reveal fractions must be in [0, 1)")
    args.samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    unknown = set(args.samplers) - set(SAMPLERS)
    if unknown:
        p.error(f"unknown sampler(s) {sorted(unknown)}; choose from {SAMPLERS}")
    # Lengths left unset follow --max_new_tokens; remember which flag sets each, for the error messages.
    args.length_flags = {name: f"--{name}" if getattr(args, name) else "--max_new_tokens"
                         for name in ("canvas", "gen_length", "max_length")}
    for name in ("canvas", "gen_length", "max_length"):
        setattr(args, name, getattr(args, name) or args.max_new_tokens)
    block_length = args.block_length or args.gen_length
    steps = args.steps or args.gen_length
    if "llada" in args.samplers and (args.gen_length % block_length or steps % (args.gen_length // block_length)):
        p.error(f"llada: --gen_length ({args.gen_length}) must be a multiple of --block_length ({block_length}) "
                f"and --steps ({steps}) a multiple of the number of blocks")
    args.data_dir = Path(args.data_dir or f"data/{args.data}")
    return args


# -----------------------------------------------------------------------------
# Held-out pairs

def load_pairs(dataset: str, data_dir: Path, n: int) -> list[tuple[list[int], list[int]]]:
    """(prompt, reference response) token lists of the first n validation documents that have a prompt."""
    try:
        split = load_split(data_dir, "val")
    except (FileNotFoundError, ValueError) as e:
        hint = (" (the length task data is written by train.py config/lengthtask.py on first use, or by "
                "nanodllm.tasks.ensure_task_data)" if dataset == "lengthtask" else "")
        fail(f"{e}{hint}")
    meta_path = data_dir / "meta.json"
    if not meta_path.is_file():
        fail(f"{data_dir} is not a prepared data directory: meta.json is missing")
    prepared = json.loads(meta_path.read_text())["dataset"]
    if prepared != dataset:
        fail(f"{data_dir} holds prepared {prepared!r} data, not {dataset!r}: pass --data {prepared}, or the "
             f"--data_dir of the {dataset} data")
    pairs = split.prompt_pairs(n)
    if not pairs:
        fail(f"{data_dir}: no validation document has a prompt")
    return pairs


def run_name(init_from) -> str:
    """A model's name in the tables: its run's out_dir name (also when pointed at one of its ckpt_* dirs)."""
    path = Path(init_from).resolve()
    return path.parent.name if path.name.startswith("ckpt_") else path.name


def check_room(model, longest_prompt: int, needs: dict):
    """Every canvas must fit in the model's context after the longest prompt. needs: what -> (tokens, flag)."""
    room = model.config.max_seq_len - longest_prompt
    for what, (n, flag) in needs.items():
        if n > room:
            fail(f"{what} needs {n} positions after the longest prompt ({longest_prompt} tokens), but the model's "
                 f"max_seq_len {model.config.max_seq_len} leaves {room}: pass {flag} {room} (or less)")


# -----------------------------------------------------------------------------
# The first-step EOS test

@torch.no_grad()
def first_step_eos(model, pairs, canvas: int, reveal: float, batch_size: int, seed: int, autocast_ctx):
    """(eos_prob, eos_is_argmax), both (N, canvas) arrays: the model's belief about EOS after one forward pass
    over prompt + canvas, where the canvas holds masks except at round(reveal * len(response)) positions of the
    true response, chosen at random (seeded). A revealed position holds a known text token, so it cannot be the
    EOS: its P(EOS) is set to 0. Prompts are left-padded as in the samplers (key-padding mask, per-row RoPE
    positions), so each row is computed as if it were alone."""
    cfg = model.config
    device = next(model.parameters()).device
    rng = np.random.default_rng([seed, round(reveal * 1000)])
    probs, tops = [], []
    for b in tqdm(range(0, len(pairs), batch_size), desc=f"first step, {reveal:.0%} revealed", unit="batch"):
        chunk = pairs[b:b + batch_size]
        x, P, key_mask, positions = make_canvas(model, [p for p, _ in chunk], canvas, cfg.mask_id, "eval_eos")
        for i, (_, response) in enumerate(chunk):
            shown = torch.as_tensor(rng.choice(len(response), size=round(reveal * len(response)), replace=False),
                                    dtype=torch.long, device=device)
            x[i, P + shown] = torch.tensor(response, dtype=torch.long, device=device)[shown]
        with autocast_ctx:
            logits = model(x, positions=positions, attn_mask=key_mask, logits_at=(slice(None), slice(P, None)))
        logits = logits.float()  # (B, canvas, V)
        given = (x[:, P:] != cfg.mask_id)
        p_eos = (logits[..., cfg.eos_id] - logits.logsumexp(dim=-1)).exp().masked_fill(given, 0.0)
        probs.append(p_eos.cpu())
        tops.append(((logits.argmax(dim=-1) == cfg.eos_id) & ~given).cpu())
    return torch.cat(probs).numpy(), torch.cat(tops).numpy()


def first_step_test(model, pairs, args, autocast_ctx) -> tuple[dict, dict]:
    """(results, heatmap data): the EOS metrics at each reveal fraction, on the pairs whose EOS fits the canvas."""
    fits = [pair for pair in pairs if len(pair[1]) < args.canvas]
    true_len = np.array([len(r) for _, r in fits])
    out = dict(canvas=args.canvas, n_beyond_canvas=len(pairs) - len(fits), by_reveal={})
    heatmap = None
    for reveal in args.reveal if fits else []:
        eos_prob, eos_is_argmax = first_step_eos(model, fits, args.canvas, reveal, args.batch_size, args.seed,
                                                 autocast_ctx)
        out["by_reveal"][f"{reveal:g}"] = metrics.eos_position_metrics(eos_prob, eos_is_argmax, true_len,
                                                                       args.tolerance)
        if heatmap is None:  # the first fraction (0 by default: the canvas as the samplers start from it)
            heatmap = dict(eos_prob=eos_prob, true_len=true_len, reveal=reveal,
                           predicted=metrics.predicted_eos_position(eos_prob, eos_is_argmax))
    return out, heatmap


# -----------------------------------------------------------------------------
# Generation and quality

def run_sampler(model, name, prompts, args, autocast_ctx) -> tuple[list[list[int]], GenerationStats, list[int]]:
    """(completions, stats, length bounds) of one sampler over all prompts, in batches."""
    generator = torch.Generator(next(model.parameters()).device).manual_seed(args.seed)
    completions, parts, bounds = [], [], []
    for b in tqdm(range(0, len(prompts), args.batch_size), desc=f"generating ({name})", unit="batch"):
        with autocast_ctx:
            out, stats = generate(model, name, prompts[b:b + args.batch_size], args, generator, None)
        completions += out
        parts.append(stats)
        bounds += stats.info.get("length_bound", [])
    return completions, GenerationStats.combine(parts), bounds


def score_responses(completions, pairs, args, judge, autocast_ctx) -> tuple[dict, list[list[int]]]:
    """(metrics, responses) of one sampler's completions; responses are the completions without their EOS."""
    tok = get_tokenizer()
    lengths = [metrics.response_length(c, tok.eos_id) for c in completions]
    responses = [c[:n] for c, n in zip(completions, lengths)]
    out = dict(termination_rate=metrics.termination_rate(completions, tok.eos_id),
               **metrics.length_metrics(lengths, [len(r) for _, r in pairs]),
               repetition=metrics.repetition_rate(responses), exact_match=None, exact_length=None, gen_ppl=None,
               generated_lengths=lengths)
    if args.data == "lengthtask":  # the answer is known: score it (tasks.score compares texts)
        scores = [score(Example("", tok.decode(p), tok.decode(r)), tok.decode(g))
                  for (p, r), g in zip(pairs, responses)]
        out["exact_match"] = metrics.accuracy([s["exact_match"] for s in scores])
        out["exact_length"] = metrics.accuracy([s["exact_length"] for s in scores])
    if judge is not None:
        out["judge"] = metrics.judge_perplexity(judge, [p for p, _ in pairs], responses, args.batch_size,
                                                autocast_ctx)
        out["gen_ppl"] = out["judge"]["ppl"]
    return out, responses


def validation_nll(model, info, args, device, autocast_ctx) -> dict | None:
    """The validation NLL bound of the model's own training recipe on --data's val split, via
    nanodllm.training.evaluate with the training config from the checkpoint; None with --eval_iters 0."""
    if args.eval_iters == 0:
        return None
    if not info.get("train"):
        print("note: the checkpoint holds no training config: no validation NLL (its recipe is unknown)")
        return None
    try:
        cfg = config_from_dict(info["train"])
    except ConfigError as e:
        fail(f"cannot rebuild the training config from the checkpoint ({e}); pass --eval_iters 0 to skip the "
             f"validation NLL")
    cfg = dataclasses.replace(cfg, dataset=args.data, data_dir=str(args.data_dir),
                              eval_iters=args.eval_iters or cfg.eval_iters)
    result = evaluate(model, cfg, load_split(args.data_dir, "val"), device, autocast_ctx)
    model.eval()  # evaluate leaves the model in training mode
    return dict(result, recipe=cfg.recipe, eval_iters=cfg.eval_iters)


# -----------------------------------------------------------------------------
# Reports

def _clean(obj):
    """JSON-safe: nan and inf become null (json.dumps would write NaN, which is not JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        return _clean(obj.item())
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
    lines += ["", "## Figures", ""] + [f"![{p}]({p})" for p in results["plots"]]
    return "\n".join(lines) + "\n"


def merge_tables(paths) -> str:
    """One markdown table of several results.json: a row per model x sampler, with the model's validation NLL
    and first-step EOS numbers (nothing revealed), and one reference row per distinct set of pairs and judge."""
    rows, seen = [], set()
    for path in paths:
        path = Path(path)
        if not path.is_file():
            fail(f"{path} does not exist")
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


# -----------------------------------------------------------------------------

def main(argv=None):
    args = parse_args(argv)
    if args.merge:
        table = merge_tables(args.merge)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(table)
            print(f"wrote {args.out}")
        else:
            print(table, end="")
        return

    # ---- everything that can be wrong is checked before the first forward pass ----
    try:
        device = pick_device(args.device, Dist())
        model, info = load_model(args.init_from, device)
        judge = load_model(args.judge, device)[0] if args.judge else None
    except (CheckpointError, RuntimeError, ValueError) as e:
        fail(str(e))
    if judge is not None and judge.config.attention != "causal":
        fail(f"--judge {args.judge} is a {judge.config.attention} model; the judge must be causal (recipe ar)")
    cfg = model.config
    causal = cfg.attention == "causal"
    dtype = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    autocast_ctx = autocast(device, dtype)
    pairs = load_pairs(args.data, args.data_dir, args.num_samples)
    train = info.get("train") or {}
    if train.get("dataset", args.data) != args.data:
        print(f"note: the model was trained on {train['dataset']!r}, evaluated here on {args.data!r}")
    prompts = [p for p, _ in pairs]
    samplers = [s for s in args.samplers if (s == "ar") == causal]
    skipped = {s: ("a diffusion sampler needs a masked-diffusion (non-causal) model" if causal else
                   "autoregressive decoding needs a causal model") for s in args.samplers if s not in samplers}
    needs = {f"the {s} sampler": {"block": (args.max_new_tokens, "--max_new_tokens"),
                                  "ar": (args.max_new_tokens, "--max_new_tokens"),
                                  "llada": (args.gen_length, args.length_flags["gen_length"]),
                                  "length_bound": (args.max_length, args.length_flags["max_length"])}[s]
             for s in samplers}
    if not causal:
        needs["the first-step canvas"] = (args.canvas, args.length_flags["canvas"])
    check_room(model, max(len(p) for p in prompts), needs)

    label = args.label or run_name(args.init_from)
    out_dir = Path(args.out_dir or f"results/{label}")
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"{args.init_from} (step {info.get('step')}): {cfg.attention} model, recipe {train.get('recipe')}, "
          f"{model.num_params() / 1e6:.2f}M parameters; {len(pairs)} {args.data} pairs; {device} ({dtype})")
    torch.manual_seed(args.seed)
    tok = get_tokenizer()
    references = [r for _, r in pairs]
    ref_lengths = [len(r) for r in references]

    # ---- the first-step EOS test ----
    heatmap = None
    if causal:
        first_step = dict(skipped="a causal model predicts one next token at a time; it has no canvas on which "
                                  "to place EOS in one pass")
        print(f"first-step EOS test skipped: {first_step['skipped']}")
    else:
        first_step, heatmap = first_step_test(model, pairs, args, autocast_ctx)
    # Per prompt, for samples.jsonl: EOS exactly at the true position after one pass, nothing revealed (None for
    # a prompt whose EOS lies beyond the canvas, or when the test did not run at reveal 0).
    first_step_exact = {}
    if heatmap is not None and heatmap["reveal"] == 0:
        fitting = [i for i, (_, r) in enumerate(pairs) if len(r) < args.canvas]
        first_step_exact = dict(zip(fitting, (heatmap["predicted"] == heatmap["true_len"]).tolist()))

    # ---- quality: the NLL bound, and the references under the judge (the anchor for the samplers') ----
    quality = validation_nll(model, info, args, device, autocast_ctx)
    reference = dict(mean_length=float(np.mean(ref_lengths)),
                     repetition=metrics.repetition_rate(references), gen_ppl=None)
    if judge is not None:
        reference["judge"] = metrics.judge_perplexity(judge, prompts, references, args.batch_size, autocast_ctx)
        reference["gen_ppl"] = reference["judge"]["ppl"]

    # ---- generation, scored like the references ----
    results_by_sampler, texts, finished = {}, {}, {}
    for name in samplers:
        completions, stats, bounds = run_sampler(model, name, prompts, args, autocast_ctx)
        scores, responses = score_responses(completions, pairs, args, judge, autocast_ctx)
        scores.update(tokens_per_s=stats.tokens_per_s, nfe_per_token=stats.nfe_per_token, nfe=stats.nfe,
                      seconds=stats.seconds, total_tokens=stats.total_tokens)
        if bounds:
            scores["mean_length_bound"] = float(np.mean(bounds))
        results_by_sampler[name], texts[name] = scores, [tok.decode(r) for r in responses]
        finished[name] = [bool(c) and c[-1] == tok.eos_id for c in completions]  # ended with EOS, per prompt
        print(f"{name}: {stats}")

    # ---- outputs ----
    plot_files = []
    if heatmap is not None and len(heatmap["true_len"]):
        plots.plot_eos_heatmap(heatmap["eos_prob"], heatmap["true_len"], heatmap["predicted"],
                               out_dir / "eos_heatmap.png",
                               f"{label}: P(EOS) after one pass, {heatmap['reveal']:.0%} of the response shown")
        plot_files.append("eos_heatmap.png")
    if results_by_sampler:
        generated = {name: r["generated_lengths"] for name, r in results_by_sampler.items()}
        plots.plot_length_scatter(ref_lengths, generated, out_dir / "lengths_scatter.png", f"{label}: lengths")
        plots.plot_length_histograms(ref_lengths, generated, out_dir / "lengths_hist.png", f"{label}: lengths")
        plot_files += ["lengths_scatter.png", "lengths_hist.png"]

    results = dict(
        model=dict(label=label, init_from=args.init_from, step=info.get("step"), attention=cfg.attention,
                   recipe=train.get("recipe"), trained_on=train.get("dataset"), params=model.num_params()),
        data=dict(dataset=args.data, data_dir=str(args.data_dir), split="val", num_samples=len(pairs),
                  reference_lengths=ref_lengths),
        device=str(device), dtype=dtype, torch=torch.__version__,
        args={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        quality=quality, reference=reference, first_step=first_step, samplers=results_by_sampler,
        skipped_samplers=skipped, plots=plot_files)
    results = _clean(results)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    report = markdown_report(results)
    (out_dir / "results.md").write_text(report)
    with open(out_dir / "samples.jsonl", "w") as f:
        for i, (p, r) in enumerate(pairs):
            f.write(json.dumps(dict(prompt=tok.decode(p), reference=tok.decode(r),
                                    **{name: texts[name][i] for name in texts},
                                    finished={name: finished[name][i] for name in finished},
                                    first_step_eos_exact=first_step_exact.get(i))) + "\n")
    print("\n" + report)
    print(f"wrote {out_dir}/results.json, results.md, samples.jsonl" + "".join(f", {p}" for p in plot_files))


if __name__ == "__main__":
    main()
