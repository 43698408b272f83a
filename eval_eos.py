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
   (seeded) positions: does the belief sharpen as the text fills in, as it does during decoding? A block_causal
   model reads such a canvas in its blocks, and every block after the first attends to earlier blocks of masks
   where its training (and the block sampler) show it finished text: past the first block, this is a state no
   decoding reaches.
2. The EOS block probe (diffusion models; nanodllm/probe.py): where the model puts EOS inside one block of masks
   as the block's length (--probe_blocks) and the true end's offset in it change: at the true position, at the
   block's end (the sample-scope shortcut), nowhere (the row-scope one) or elsewhere.
3. Generation with every requested sampler that fits the model (block, llada, length_bound for a diffusion model;
   ar for a causal one): termination rate, generated vs reference lengths (MAE, relative error, Pearson r,
   Wasserstein distance of the distributions), repetition, tokens/s and NFE per token (GenerationStats); on the
   length task (nanodllm/tasks.py), whether the answer is exactly right and exactly as long as it should be.
   tokens/s here includes warm-up and is only indicative: bench_sampler.py measures speed properly.
4. Quality: the validation NLL bound of the model's own recipe (nanodllm.training.evaluate), and, with --judge, the
   generative perplexity of the responses (and of the references, as the anchor) under a causal model. The NLL
   covers the tokens its recipe scores (recipes.nll_bound_examples): response + EOS for dllm_var, eos_random and
   eos_pad, every token, prompts included, for ar and pretrain. Compare it between recipes that score the same.

It writes into --out_dir: results.json (everything), results.md (the tables), samples.jsonl (each prompt with its
reference, every sampler's response, whether it ended with EOS (finished) and, per prompt, whether the first-step
test at reveal 0 put EOS exactly right) and the figures eos_heatmap.png, lengths_scatter.png, lengths_hist.png.
This script parses the flags and runs; the experiments are nanodllm/evaluation.py, the tables nanodllm/report.py.
A command that cannot run as given stops with one `error: ...` line and exit code 2.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from nanodllm import metrics, plots, report
from nanodllm.checkpoint import CheckpointError, load_model
from nanodllm.evaluation import (EvaluationError, check_room, first_step_test, generation_results, load_pairs,
                                 run_name, validation_nll)
from nanodllm.probe import eos_block_probe
from nanodllm.sampler import knobs, knobs_from_flags
from nanodllm.system import Dist, autocast, inference_weights, pick_device
from nanodllm.tokenizer import get_tokenizer

DATASETS = ("lengthtask", "tinystories", "fineweb")
SAMPLERS = ("block", "llada", "length_bound", "ar")
def fail(message: str):
    """A command that cannot run as given: one line saying what to do, no traceback, exit code 2 (as argparse's
    own usage errors)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


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
    g.add_argument("--probe_blocks", default="8,16,32,64",
                   help="the EOS block probe's block lengths ('' = skip; a block_causal model uses its own)")
    g = p.add_argument_group("generation")
    g.add_argument("--max_new_tokens", type=int, default=256, help="cap of the block and ar samplers")
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    g.add_argument("--top_k", type=int, default=None)
    g.add_argument("--top_p", type=float, default=None)
    g.add_argument("--block_size", type=int, default=knobs("block")["block_size"], help="block: tokens per block")
    g.add_argument("--threshold", type=float, default=knobs("block")["threshold"],
                   help="block: commit positions more confident than this")
    g.add_argument("--steps_per_block", type=int, default=None, help="block: fixed steps instead of the threshold")
    g.add_argument("--eos_frontier", action="store_true",
                   help="block: commit an EOS only at a row's first masked position (the stop decided left to right)")
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
    try:
        args.probe_blocks = [int(b) for b in args.probe_blocks.split(",") if b.strip()]
    except ValueError:
        p.error(f"--probe_blocks must be comma-separated block lengths, got {args.probe_blocks!r}")
    if not all(b >= 1 for b in args.probe_blocks):
        p.error("--probe_blocks must be >= 1")
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

def main(argv=None):
    args = parse_args(argv)
    try:
        merge(args) if args.merge else run(args)
    except (EvaluationError, CheckpointError, FileNotFoundError) as e:  # our own messages say what to do
        fail(str(e))


def merge(args):
    """--merge: one markdown table of several results.json."""
    table = report.merge_tables(args.merge)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table)
        print(f"wrote {args.out}")
    else:
        print(table, end="")


def run(args):
    # ---- everything that can be wrong is checked before the first forward pass ----
    try:
        device = pick_device(args.device, Dist())
    except (RuntimeError, ValueError) as e:
        fail(str(e))
    model, info = load_model(args.init_from, device)
    judge = load_model(args.judge, device)[0] if args.judge else None
    if judge is not None and judge.config.attention != "causal":
        fail(f"--judge {args.judge} is a {judge.config.attention} model; the judge must be causal (recipe ar)")
    cfg = model.config
    causal = cfg.attention == "causal"
    dtype = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    autocast_ctx = autocast(device, dtype)
    for m in (model, judge):
        if m is not None:
            inference_weights(m, device, dtype)
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
    check_room(model, max(len(p) for p in prompts) + causal, needs)  # + the EOS before an ar prompt

    label = args.label or run_name(args.init_from)
    out_dir = Path(args.out_dir or f"results/{label}")
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"{args.init_from} (step {info.get('step')}): {cfg.attention} model, recipe {train.get('recipe')}, "
          f"{model.num_params() / 1e6:.2f}M parameters; {len(pairs)} {args.data} pairs; {device} ({dtype})")
    torch.manual_seed(args.seed)
    references = [r for _, r in pairs]
    ref_lengths = [len(r) for r in references]

    # ---- the first-step EOS test ----
    heatmap = None
    if causal:
        first_step = dict(skipped="a causal model predicts one next token at a time; it has no canvas on which "
                                  "to place EOS in one pass")
        print(f"first-step EOS test skipped: {first_step['skipped']}")
    else:
        first_step, heatmap = first_step_test(model, pairs, args.canvas, args.reveal, args.tolerance,
                                              args.batch_size, args.seed, autocast_ctx)
    probe = (eos_block_probe(model, pairs, autocast_ctx, args.probe_blocks, args.batch_size)
             if args.probe_blocks and not causal else None)

    # Per prompt, for samples.jsonl: EOS exactly at the true position after one pass, nothing revealed (None for
    # a prompt whose EOS lies beyond the canvas, or when the test did not run at reveal 0).
    first_step_exact = {}
    if heatmap is not None and heatmap["reveal"] == 0:
        fitting = [i for i, (_, r) in enumerate(pairs) if len(r) < args.canvas]
        first_step_exact = dict(zip(fitting, (heatmap["predicted"] == heatmap["true_len"]).tolist()))

    # ---- quality: the NLL bound, and the references under the judge (the anchor for the samplers') ----
    quality = validation_nll(model, info, args.data, args.data_dir, args.eval_iters, device, autocast_ctx)
    reference = dict(mean_length=float(np.mean(ref_lengths)),
                     repetition=metrics.repetition_rate(references), gen_ppl=None)
    if judge is not None:
        reference["judge"] = metrics.judge_perplexity(judge, prompts, references, args.batch_size, autocast_ctx)
        reference["gen_ppl"] = reference["judge"]["ppl"]

    # ---- generation, scored like the references ----
    results_by_sampler, texts = generation_results(model, samplers, pairs, knobs_from_flags(args), args.data, judge,
                                                   args.batch_size, args.seed, autocast_ctx)

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
                   recipe=train.get("recipe"), trained_on=train.get("dataset"), params=model.num_params(),
                   checkpoint_id=info.get("id"), base_id=(info.get("lineage") or {}).get("init_from_id")),
        data=dict(dataset=args.data, data_dir=str(args.data_dir), split="val", num_samples=len(pairs),
                  reference_lengths=ref_lengths),
        device=str(device), dtype=dtype, torch=torch.__version__,
        args={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        quality=quality, reference=reference, first_step=first_step, probe=probe, samplers=results_by_sampler,
        skipped_samplers=skipped, plots=plot_files)
    results = report.json_safe(results)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    markdown = report.markdown_report(results)
    (out_dir / "results.md").write_text(markdown)
    tok = get_tokenizer()
    with open(out_dir / "samples.jsonl", "w") as f:
        for i, (p, r) in enumerate(pairs):
            f.write(json.dumps(dict(prompt=tok.decode(p), reference=tok.decode(r),
                                    **{name: texts[name][i] for name in texts},
                                    finished={name: r["finished"][i] for name, r in results_by_sampler.items()},
                                    first_step_eos_exact=first_step_exact.get(i))) + "\n")
    print("\n" + markdown)
    print(f"wrote {out_dir}/results.json, results.md, samples.jsonl" + "".join(f", {p}" for p in plot_files))


if __name__ == "__main__":
    main()
