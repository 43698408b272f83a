"""Decoding speed: dLLM-Var's block sampler (cache on and off) vs LLaDA's vanilla sampler vs an autoregressive model.

    python bench_sampler.py --init_from=out/dllm_var --ar_init_from=out/ar --out=bench_sampler.json
    python bench_sampler.py --init_from=out/dllm_var --prompt_file=prompts.txt --batch_sizes=1,16

This is dLLM-Var's speed claim (30x faster than vanilla dLLM inference, 2.4x faster than autoregressive models)
measured on our own models. Every sampler gets the same prompts: the first sentences of TinyStories validation
documents (the prompts the models were trained with), or the lines of --prompt_file. The samplers run eagerly and, as
`*_graphs`, with their decoding passes recorded as CUDA graphs (nanodllm/cuda_graphs.py); each is compared with
the baseline run the same way. For each sampler and batch size it reports
    tokens/s          generated tokens up to and including EOS (never the prompt, never positions after EOS:
                      counting those, as dLLM-Var's own metric does, flatters a sampler with a fixed canvas)
                      divided by wall time;
    tokens/pass       generated tokens per forward pass, per sequence (1 / NFE per token, see GenerationStats);
    mean length       generated tokens per row;
    termination rate  share of rows that ended with EOS before the length cap;
    s/prompt          wall time per prompt, and the end-to-end speed-up it gives over LLaDA's vanilla sampler
                      (dLLM-Var's 30x claim) and over the autoregressive baseline, both run the same way;
    quality           the generative perplexity of the responses under the autoregressive baseline as judge
                      (lower = text the judge finds more likely; the AR rows are the judge's own greedy output,
                      so theirs is flattered) and their 4-gram repetition rate (1 - distinct / total 4-grams);
                      on the length suite also exact match, scored as eval_eos scores it.
The block sampler's speed comes from committing every position above --thresholds at once, and a lower threshold
commits more per pass at some cost in quality: give several (--thresholds 0.9,0.7,0.5) to see the trade-off. The
first one given is the reference: every other threshold's exact match is compared with its on the same prompts (the
difference, with a bootstrap interval over the prompts) and its judge perplexity divided by its (with a paired
bootstrap interval over the prompts), which is how the speed-up of a lower threshold is judged: does it keep the
accuracy of the first?
Warm-up is excluded: each eager (sampler, batch size) first runs once on a short generation, so CUDA kernels,
cuBLAS handles and the caching allocator are ready. Each graphed one first runs every batch once in full, untimed:
that call records every CUDA graph the batch's passes need, and the timed call replays them, recording nothing
(the recordings are kept with the model, nanodllm/cuda_graphs.py), alike for the block, LLaDA and AR samplers.
The *_compiled_* samplers also compile their pass (torch.compile) in that untimed call. A sampler's tokens/s is
compared with the AR model's at its best with the same tools (ar_baseline: the fastest AR row with graphs or not
as it, compiled or not as it, with slots or without): compiling fuses a small model's few hundred small kernels
per pass, and continuous batching keeps a batch's rows busy, so giving either to one side only flatters it.
Each call is timed whole, end to end (its canvas and KV cache built, its outputs trimmed: the sampler's own timer
covers only its decoding loop), synchronising CUDA before and after; a run's calls are also fitted as a time per
call plus a time per pass (per_call_fit). --profile decodes the first --profile_batches batches once more,
untimed, under torch.profiler (nanodllm/profiling.py) and splits a forward pass's time into the GPU's kernels
(the model's matmuls and attention, everything else) and the GPU's idle time, waiting for the host's bookkeeping.

The vanilla sampler is the slow one by design (gen_length forward passes over the whole canvas per prompt);
--llada_prompts runs it on fewer prompts when time is short.
"""

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from nanodllm import evaluation, profiling
from nanodllm.checkpoint import CheckpointError, load_model
from nanodllm.sampler import GenerationStats, batches, generate, knobs
from nanodllm.sampler_stats import Timer
from nanodllm.stats import perplexity_ratio_with_interval, rate_with_interval
from nanodllm.system import Dist, autocast, inference_weights, pick_device
from nanodllm.tokenizer import get_tokenizer

SAMPLERS = ("block", "block_nocache", "llada", "ar", "block_graphs", "llada_graphs", "ar_graphs")
# continuous batching (run when asked for by name): the block sampler (block_causal models only) or the AR model
# with slots = the batch size, each row at its own block or column, one call for all the prompts
CONTINUOUS = ("block_slots_graphs", "block_slots_compiled_graphs",  # the second's pass through torch.compile
              "ar_slots_graphs", "ar_slots_compiled_graphs")
# the AR model's one-token pass through torch.compile (run when asked for by name)
OPT_IN = CONTINUOUS + ("ar_compiled_graphs",)
LABELS = {"block": "dLLM-Var block, KV cache", "block_nocache": "dLLM-Var block, no cache",
          "llada": "LLaDA vanilla", "ar": "autoregressive, KV cache",
          "block_graphs": "dLLM-Var block, cache, graphs", "llada_graphs": "LLaDA vanilla, graphs",
          "ar_graphs": "autoregressive, cache, graphs", "block_slots_graphs": "dLLM-Var block, cache, graphs, slots",
          "block_slots_compiled_graphs": "dLLM-Var block, cache, graphs, slots, compiled",
          "ar_slots_graphs": "autoregressive, cache, graphs, slots",
          "ar_slots_compiled_graphs": "autoregressive, cache, graphs, slots, compiled",
          "ar_compiled_graphs": "autoregressive, cache, graphs, compiled"}


def fail(message: str):
    """A command that cannot run as given: one line saying what to do, no traceback, exit code 2 (as argparse's
    own usage errors)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Benchmark the samplers' decoding speed.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--init_from", required=True, help="the diffusion (dLLM-Var) checkpoint")
    p.add_argument("--ar_init_from", default=None, help="the autoregressive baseline checkpoint, also the judge "
                   "of quality (optional)")
    p.add_argument("--prompt_file", default=None, help="one prompt per line, instead of the dataset's")
    p.add_argument("--data_dir", default="data/tinystories", help="prepared data to take prompts from")
    p.add_argument("--split", default="val")
    p.add_argument("--n_prompts", type=int, default=16)
    p.add_argument("--llada_prompts", type=int, default=None, help="prompts for the slow vanilla sampler "
                   "(default: all n_prompts)")
    p.add_argument("--batch_sizes", default="1,16", help="comma-separated")
    p.add_argument("--samplers", default=",".join(SAMPLERS), help=f"comma-separated, of {SAMPLERS} and "
                   f"{OPT_IN} (*_slots_*: each row at its own block or column, one call decodes every prompt, "
                   "batch size rows at a time, the block sampler's on a block_causal model only; *_compiled_*: the "
                   "pass through torch.compile)")
    p.add_argument("--block_size", type=int, default=knobs("block")["block_size"])
    p.add_argument("--thresholds", default="0.9", help="comma-separated: the block samplers run at each; the "
                   "first is the reference the others' accuracy is compared with")
    p.add_argument("--max_new_tokens", type=int, default=1024, help="cap of the block and ar samplers")
    p.add_argument("--llada_gen_length", type=int, default=1024)
    p.add_argument("--llada_steps", type=int, default=1024)
    p.add_argument("--llada_block_length", type=int, default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"),
                   help="default: bfloat16 on CUDA, float32 on the CPU")
    p.add_argument("--autocast_weights", action="store_true", help="keep the weights in fp32 and let autocast cast "
                   "them at every pass, inside the CUDA graphs, as before system.inference_weights: the A/B of that "
                   "change (same tokens)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--profile", action="store_true", help="also profile one more decoding per row, untimed: "
                   "where a forward pass's time goes (GPU kernels by kind, idle GPU waiting for the host; CUDA only, on the "
                   "CPU every column is 0)")
    p.add_argument("--profile_batches", type=int, default=4, help="profile the first this many batches of each "
                   "sampler and batch size (parsing a trace of hundreds of thousands of events is slow); 0: all")
    p.add_argument("--out", default="bench_sampler.json", help="where to write the JSON results")
    args = p.parse_args(argv)
    try:
        args.batch_sizes = sorted({int(b) for b in args.batch_sizes.split(",")})
    except ValueError:
        p.error(f"--batch_sizes must be comma-separated integers, got {args.batch_sizes!r}")
    try:
        args.thresholds = [float(t) for t in args.thresholds.split(",")]
    except ValueError:
        p.error(f"--thresholds must be comma-separated numbers, got {args.thresholds!r}")
    args.samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    unknown = set(args.samplers) - set(SAMPLERS) - set(OPT_IN)
    if unknown:
        p.error(f"unknown sampler(s) {sorted(unknown)}; choose from {SAMPLERS + OPT_IN}")
    if not args.ar_init_from and any(s.startswith("ar") for s in args.samplers):
        args.samplers = [s for s in args.samplers if not s.startswith("ar")]
        print("no --ar_init_from: skipping the autoregressive baseline")
    for name in ("n_prompts", "block_size", "max_new_tokens", "llada_gen_length", "llada_steps",
                 "llada_block_length"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if min(args.batch_sizes) < 1:
        p.error("batch sizes must be >= 1")
    if args.profile_batches < 0:
        p.error("--profile_batches must be >= 0 (0: all)")
    if not all(0 <= t <= 1 for t in args.thresholds):
        p.error("--thresholds must be in [0, 1]")
    if args.llada_gen_length % args.llada_block_length or \
            args.llada_steps % (args.llada_gen_length // args.llada_block_length):
        p.error("--llada_gen_length must be a multiple of --llada_block_length, and --llada_steps a multiple "
                "of the number of blocks")
    return args


def load_prompts(args) -> list[tuple[list[int], list[int] | None]]:
    """(prompt, reference response) pairs: the dataset's (what quality is scored against), or --prompt_file's
    lines with no reference."""
    if args.prompt_file:
        path = Path(args.prompt_file)
        if not path.is_file():
            fail(f"--prompt_file {path} does not exist")
        tok = get_tokenizer()
        pairs = [(tok.encode(line), None) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        try:
            from nanodllm.prepare import load_split
            split = load_split(args.data_dir, args.split)
        except (FileNotFoundError, ValueError) as e:
            fail(f"cannot read prompts from {args.data_dir} ({e}); prepare the data (python "
                 f"data/tinystories/prepare.py) or pass --prompt_file")
        pairs = split.prompt_pairs(args.n_prompts)
    if not pairs:
        fail("no prompts found: pass a --prompt_file with at least one non-empty line")
    return pairs[:args.n_prompts]


def load(path, device, max_seq_len, dtype, autocast_weights):
    try:
        model, info = load_model(path, device, max_seq_len)
    except CheckpointError as e:
        fail(f"cannot load {path}: {e}")
    return model if autocast_weights else inference_weights(model, device, dtype), info


def run_sampler(name, model, prompts, args, threshold=None, warmup=False, slots=None):
    """One call of sampler `name` on a batch (the block samplers at `threshold`; those of CONTINUOUS on all the
    prompts, in `slots` rows); a warm-up call generates only a little."""
    g = torch.Generator(next(model.parameters()).device).manual_seed(args.seed)
    # (the vanilla sampler has no compile knob: generate passes each sampler its own)
    common = dict(cuda_graphs=name.endswith("_graphs"), compile="compiled" in name, generator=g)
    if name.startswith("block"):
        n = min(2 * args.block_size, args.max_new_tokens) if warmup else args.max_new_tokens
        return generate("block", model, prompts, block_size=args.block_size, threshold=threshold, max_new_tokens=n,
                        cache=name != "block_nocache", slots=slots, **common)
    if name.startswith("llada"):
        blocks = args.llada_gen_length // args.llada_block_length  # a warm-up decodes the first block only
        return generate("llada", model, prompts, block_length=args.llada_block_length,
                        gen_length=args.llada_block_length if warmup else args.llada_gen_length,
                        steps=args.llada_steps // blocks if warmup else args.llada_steps, **common)
    return generate("ar", model, prompts, max_new_tokens=16 if warmup else args.max_new_tokens, slots=slots,
                    **common)


def bench(name, model, pairs, batch_size, args, device, dtype, threshold=None):
    """-> (pairs, completions, stats, per_call, profile) of sampler `name` over all (prompt, reference) pairs in
    batches of batch_size. per_call: per_call_fit of the timed calls. profile() (with --profile; else None) decodes
    the first --profile_batches of them once more, untimed, under torch.profiler -> time_per_pass, over the passes
    those batches took. It is a function so that the caller can save the timed row first: profiling a slow
    sampler takes longer than timing it."""
    prompts = [p for p, _ in pairs]
    slots = batch_size if name in CONTINUOUS else None
    # with a block_causal model, the samplers other than the block sampler decode each row as if alone only among
    # prompts of equal length modulo its block (sampler.batches): their batches may be smaller
    rows = [list(range(len(prompts)))] if slots else \
        batches(model, prompts, batch_size, block_aligned=name.startswith("block"))  # slots: one call of all
    if not slots and len(pairs) < batch_size:  # too few prompts for one full batch: repeat each batch's
        # own up to batch_size, so that a pass carries batch_size rows even where prompts fall into several batches
        rows = [(r * math.ceil(batch_size / len(r)))[:batch_size] for r in rows]
    batched = [[prompts[i] for i in r] for r in rows]

    def call(batch):  # end to end: the sampler's own timer leaves out its set-up (the canvas, the KV cache)
        with Timer(device) as timer:
            out, stats = run_sampler(name, model, batch, args, threshold, slots=slots)
        return out, dataclasses.replace(stats, seconds=timer.seconds)
    decode = lambda some: [call(b) for b in some]
    graphed = name.endswith("_graphs")
    with autocast(device, dtype):
        for b in batched if graphed else batched[:1]:  # graphs: record every shape the timed calls will replay
            run_sampler(name, model, b, args, threshold, warmup=not graphed, slots=slots)
        results = decode(batched)
        stats = GenerationStats.combine([s for _, s in results])

    def profile():
        profiled = batched[:args.profile_batches or len(batched)]
        passes = sum(s.nfe for _, s in results[:len(profiled)])
        with autocast(device, dtype):
            # the top 30 kernels by time: with their launches per pass, about all of a pass's kernels
            return time_per_pass(profiling.profile_steps(lambda: decode(profiled), 1, device, top=30), passes)
    completions = [None] * len(prompts)
    for r, (out, _) in zip(rows, results):
        for i, completion in zip(r, out):
            completions[i] = completion
    per_call = per_call_fit([s.seconds for _, s in results], [s.nfe for _, s in results])
    return pairs, completions, stats, per_call, profile if args.profile else None


def per_call_fit(seconds, passes) -> dict | None:
    """A call's time as a fixed part plus a part per forward pass, fitted by least squares over the timed calls
    (seconds[i] took passes[i] passes) -> {ms_per_call, ms_per_pass, calls}, or None with fewer than two distinct
    pass counts. Unlike the profile it costs nothing and disturbs nothing: if the calls spend their time in their
    passes, ms_per_call is near zero; work done once per call (the prompt's pass is longer than the others, a
    launch that is slow the first time, building a call's inputs) shows up there."""
    if len(set(passes)) < 2:
        return None
    slope, intercept = np.polyfit(np.asarray(passes, dtype=np.float64), np.asarray(seconds, dtype=np.float64), 1)
    return dict(ms_per_call=1000 * intercept, ms_per_pass=1000 * slope, calls=len(seconds))


def time_per_pass(profile: dict, nfe: int) -> dict:
    """profiling.profile_steps' summary of one decoding of all batches, per forward pass: the wall time, the GPU's
    kernels (the model's matmuls and attention; "other" holds the norms, RoPE, softmax and the sampler's own GPU
    work) and its idle time, when it waits for the host (Python bookkeeping, launches, syncs); and the host's
    CUDA runtime calls that wait for the GPU (syncs) and that queue a copy (copies: a graph replay's inputs);
    the kernels launched per pass, the top kernels by time, each with its milliseconds and launches per pass, and
    the longest idle stretches of the profiled window with the kernels around them (what the GPU waited for).
    The host's side: its milliseconds per pass inside each kind of CUDA runtime call (cudaStreamSynchronize, and
    cudaMemcpyAsync when it is a `.tolist()`'s blocking copy: the wait for the GPU; cudaGraphLaunch,
    cudaLaunchKernel: its own work), and the longest single call of each kind in the window."""
    per = lambda key: profile[key] / max(nfe, 1)
    top = [dict(name=k["name"], kind=k["kind"], ms_per_pass=k["ms_per_step"] / max(nfe, 1),
                launches_per_pass=k["launches_per_step"] / max(nfe, 1)) for k in profile["top_kernels"]]
    return dict(ms_per_pass=per("window_ms_per_step"), kernel_ms_per_pass=per("kernel_ms_per_step"),
                kernels_per_pass=per("kernels_per_step"), top_kernels=top, largest_gaps=profile["largest_gaps"],
                matmul_ms_per_pass=per("matmul_ms_per_step"), attention_ms_per_pass=per("attention_ms_per_step"),
                other_ms_per_pass=per("other_ms_per_step"), idle_ms_per_pass=per("idle_ms_per_step"),
                syncs_per_pass=sum(profile["syncs_per_step"].values()) / max(nfe, 1),
                copies_per_pass=sum(profile["copies_per_step"].values()) / max(nfe, 1),
                host_ms_per_pass={name: ms / max(nfe, 1) for name, ms in profile["host_ms_per_step"].items()},
                longest_host_call_us=profile["longest_host_call_us"])


def quality(judge, pairs, completions, dataset: str, device, dtype) -> dict:
    """Judge perplexity (None without a judge), 4-gram repetition and, on the length suite, exact match and exact
    length (None without references, as with --prompt_file): eval_eos's scoring (evaluation.score_responses)."""
    scores, _ = evaluation.score_responses(completions, pairs, dataset, judge, 16, autocast(device, dtype))
    judged = scores.get("judge") or {}  # per prompt, for the paired interval of add_quality_vs_reference
    return dict(judge_ppl=scores["gen_ppl"], repetition=scores["repetition"], exact_match=scores["exact_match"],
                exact_length=scores["exact_length"], exact_per_prompt=scores.get("exact_per_prompt"),
                judge_nll_per_prompt=judged.get("row_nll"), judge_tokens_per_prompt=judged.get("row_tokens"))


def check_fits(name, model, prompts, args):
    # every row decodes on its own positions, so the longest prompt bounds the room; an ar prompt gets an EOS first
    longest = max(len(p) for p in prompts) + name.startswith("ar")
    new = args.llada_gen_length if name.startswith("llada") else args.max_new_tokens
    if longest + new > model.config.max_seq_len:
        flag = "--llada_gen_length" if name.startswith("llada") else "--max_new_tokens"
        fail(f"{name}: the longest prompt ({longest} positions) + {new} new tokens exceed the model's "
             f"max_seq_len {model.config.max_seq_len}; lower {flag} to at most {model.config.max_seq_len - longest}")


def add_speedups(rows, batch_size):
    """End-to-end speed-ups at one batch size, each sampler against the baselines run the same way (eager or
    graphs; the AR model at its best with the same tools, ar_baseline): time per prompt of LLaDA's vanilla
    sampler / ours (dLLM-Var's "30x"), and tokens/s of ours / tokens/s of the autoregressive model (its "2.4x")."""
    same = [r for r in rows if r["batch_size"] == batch_size]
    for r in same:
        mode = "_graphs" if r["sampler"].endswith("_graphs") else ""
        llada = next((b for b in same if b["sampler"] == "llada" + mode), None)
        ar = ar_baseline(r["sampler"], same)
        r["time_speedup_vs_llada"] = llada["s_per_prompt"] / r["s_per_prompt"] if llada else None
        r["tokens_per_s_vs_ar"] = r["tokens_per_s"] / ar["tokens_per_s"] if ar else None


def ar_baseline(sampler: str, rows: list) -> dict | None:
    """The AR row (of one batch size's rows) that sampler's tokens/s is compared with: the AR model at its best
    with the same tools, the fastest AR row that ran eagerly or with graphs as sampler did, and compiled or not
    as it did, with slots or without; a compiled sampler with no compiled AR row has the uncompiled ones."""
    graphs, compiled = sampler.endswith("_graphs"), "compiled" in sampler
    ar = [b for b in rows if b["sampler"].startswith("ar") and b["sampler"].endswith("_graphs") == graphs]
    alike = [b for b in ar if ("compiled" in b["sampler"]) == compiled] or \
        [b for b in ar if "compiled" not in b["sampler"]]
    return max(alike, key=lambda b: b["tokens_per_s"], default=None)


def add_quality_vs_reference(rows, batch_size, reference):
    """What a lower threshold costs, at one batch size: each block row's exact match minus the same sampler's at
    the reference threshold (the first of --thresholds), on the same prompts, with a 95% bootstrap interval over
    the prompts (stats.rate_with_interval of the per-prompt differences: one model, so it says nothing about
    another seed), and its judge perplexity over the reference's, with a paired bootstrap interval over the
    prompts (stats.perplexity_ratio_with_interval). None where there is no such pair."""
    same = [r for r in rows if r["batch_size"] == batch_size]
    for r in same:
        ref = next((b for b in same if b["sampler"] == r["sampler"] and b["threshold"] == reference), None)
        r["exact_match_vs_reference"] = r["judge_ppl_vs_reference"] = None
        if ref is None or ref is r or r["threshold"] is None:
            continue
        if r["exact_per_prompt"] and ref["exact_per_prompt"]:
            diff = np.subtract(r["exact_per_prompt"], ref["exact_per_prompt"], dtype=np.float64)
            r["exact_match_vs_reference"] = dict(reference=reference, **rate_with_interval([diff]))
        if r["judge_nll_per_prompt"] and ref["judge_nll_per_prompt"]:
            r["judge_ppl_vs_reference"] = dict(reference=reference, **perplexity_ratio_with_interval(
                r["judge_nll_per_prompt"], r["judge_tokens_per_prompt"],
                ref["judge_nll_per_prompt"], ref["judge_tokens_per_prompt"]))


def versus_reference(r) -> str:
    """The table's cell for add_quality_vs_reference: exact match in points with its interval, else the judge
    perplexity ratio, else -."""
    d = r.get("exact_match_vs_reference")
    if d:
        return f"{100 * d['mean']:+.1f} pts [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
    d = r.get("judge_ppl_vs_reference")
    if d and d["ratio"] is not None:
        return f"ppl {d['ratio']:.2f}x [{d['low']:.2f}, {d['high']:.2f}]"
    return "-"


def markdown(rows) -> str:
    # rows/pass: the rows a pass carried that were still writing, on average: the batch the sampler really had
    lines = ["| sampler | batch | tokens/s | tokens/pass | rows/pass | mean length | terminated | exact match | "
             "judge ppl | rep-4 | s/prompt | time vs LLaDA | tokens/s vs AR | vs first threshold |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    x = lambda v: f"{v:.1f}x" if v else "-"
    num = lambda v, fmt: format(v, fmt) if v is not None else "-"
    for r in rows:
        lines.append(f"| {r['label']} | {r['batch_size']} | {r['tokens_per_s']:.1f} | {1 / r['nfe_per_token']:.2f} | "
                     f"{r['row_nfe'] / max(r['nfe'], 1):.2f} | {r['mean_length']:.1f} | {r['termination_rate']:.0%} | {num(r['exact_match'], '.0%')} | "
                     f"{num(r['judge_ppl'], '.1f')} | {r['repetition']:.2f} | {r['s_per_prompt']:.3f} | "
                     f"{x(r['time_speedup_vs_llada'])} | {x(r['tokens_per_s_vs_ar'])} | {versus_reference(r)} |")
    return "\n".join(lines)


def time_markdown(rows) -> str:
    """Where a forward pass's time goes, per sampler and batch size (rows profiled with --profile): the GPU's
    side, then the CPU's milliseconds per pass in syncs and copies (mostly waiting for the GPU: a `.tolist()`
    waits inside its copy) and in launches, and the longest single launch of the profiled window."""
    lines = ["| sampler | batch | ms/pass | GPU kernels | matmul | attention | other | GPU idle | kernels/pass | "
             "syncs/pass | copies/pass | CPU in syncs, copies | CPU launching | longest launch (us) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        t = r["time_per_pass"]
        host = t.get("host_ms_per_pass", {})
        waiting = sum(ms for name, ms in host.items() if name in profiling.SYNC_CALLS + profiling.COPY_CALLS)
        launching = sum(ms for name, ms in host.items() if name in profiling.LAUNCH_CALLS)
        longest = max((us for name, us in t.get("longest_host_call_us", {}).items()
                       if name in profiling.LAUNCH_CALLS), default=0)
        lines.append(f"| {r['label']} | {r['batch_size']} | {t['ms_per_pass']:.3f} | {t['kernel_ms_per_pass']:.3f} | "
                     f"{t['matmul_ms_per_pass']:.3f} | {t['attention_ms_per_pass']:.3f} | "
                     f"{t['other_ms_per_pass']:.3f} | {t['idle_ms_per_pass']:.3f} | {t['kernels_per_pass']:.0f} | "
                     f"{t['syncs_per_pass']:.1f} | "
                     f"{t['copies_per_pass']:.1f} | {waiting:.3f} | {launching:.3f} | {longest:.0f} |")
    return "\n".join(lines)


def write(out, head: dict, rows: list[dict], table: str | None):
    """The JSON results: complete once the table is there (the speed-ups need every sampler of a batch size)."""
    Path(out).write_text(json.dumps(dict(head, results=rows, table=table, complete=table is not None), indent=2)
                         + "\n")


def main(argv=None):
    args = parse_args(argv)
    try:
        device = pick_device(args.device, Dist())
    except (RuntimeError, ValueError) as e:
        fail(str(e))
    dtype = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    torch.manual_seed(args.seed)
    pairs = load_prompts(args)
    prompts = [p for p, _ in pairs]
    models = {}
    # RoPE tables long enough for the longest prompt plus the longest canvas, even past the training length
    needed = max(len(p) for p in prompts) + max(args.max_new_tokens, args.llada_gen_length)
    diffusion, info = load(args.init_from, device, needed, dtype, args.autocast_weights)
    if diffusion.config.attention == "causal":
        fail(f"{args.init_from} is a causal model; --init_from takes the diffusion model (and --ar_init_from the "
             f"causal one)")
    continuous = [s for s in args.samplers if s in CONTINUOUS and s.startswith("block")]
    if continuous and diffusion.config.attention != "block_causal":
        fail(f"{continuous[0]} decodes rows at their own blocks with an exact KV cache, which needs a block_causal "
             f"model; {args.init_from} is {diffusion.config.attention}")
    ar, ar_info = None, {}  # the autoregressive baseline, also the judge of every sampler's text
    if args.ar_init_from:
        ar, ar_info = load(args.ar_init_from, device, needed, dtype, args.autocast_weights)
        if ar.config.attention != "causal":
            fail(f"--ar_init_from {args.ar_init_from} is a {ar.config.attention} model; pass the autoregressive "
                 f"(causal, recipe ar) checkpoint")
    for name in args.samplers:
        models[name] = ar if name.startswith("ar") else diffusion
    for name in args.samplers:
        check_fits(name, models[name], prompts, args)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{len(prompts)} prompts (mean {sum(map(len, prompts)) / len(prompts):.1f} tokens), {device_name}, {dtype}")

    head = dict(device=device_name, dtype=dtype, torch=torch.__version__, args=vars(args),
                # by id as well as path: a study retrained on a fresh machine has other models, its judge among
                # them, at the same paths
                checkpoint=dict(path=args.init_from, step=info.get("step"), id=info.get("id")),
                ar_checkpoint=dict(path=args.ar_init_from, step=ar_info.get("step"), id=ar_info.get("id")) if ar
                else None, n_prompts=len(prompts))
    rows = []
    for batch_size in args.batch_sizes:
        for name in args.samplers:
            use = pairs[:args.llada_prompts] if name.startswith("llada") and args.llada_prompts else pairs
            for threshold in args.thresholds if name.startswith("block") else [None]:
                label = LABELS[name] + (f", threshold {threshold}" if len(args.thresholds) > 1 and threshold
                                        is not None else "")
                t0 = time.time()
                used, completions, stats, per_call, profile = bench(name, models[name], use, batch_size, args,
                                                                    device, dtype, threshold)
                row = dict(sampler=name, label=label, threshold=threshold, batch_size=batch_size,
                           n_prompts=len(stats.tokens), s_per_prompt=stats.seconds / len(stats.tokens),
                           **{k: v for k, v in stats.as_dict().items() if k not in ("tokens", "finished", "info")},
                           **quality(ar, used, completions, info.get("train", {}).get("dataset"), device, dtype),
                           per_call=per_call, time_per_pass=None)
                rows.append(row)
                fit = f", {per_call['ms_per_call']:.2f} ms per call + {per_call['ms_per_pass']:.3f} ms per pass" \
                    if per_call else ""
                print(f"  batch {batch_size:>3} {label:<30} {stats}  ({time.time() - t0:.0f} s with warm-up{fit})")
                write(args.out, head, rows, table=None)  # after every row: a run cut off keeps what it measured
                if profile is not None:
                    row["time_per_pass"] = profile()
                    write(args.out, head, rows, table=None)
        add_speedups(rows, batch_size)
        add_quality_vs_reference(rows, batch_size, args.thresholds[0])

    table = markdown(rows)
    if args.profile:
        some = args.profile_batches or "all"
        table += (f"\n\nWhere a forward pass's time goes (ms; one more decoding of the first {some} batches, "
                  "profiled):\n\n" + time_markdown(rows))
    print("\n" + table)
    write(args.out, head, rows, table)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
