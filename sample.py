"""Sample from a trained model, and watch a diffusion model write.

    python sample.py --init_from=out/dllm_var --prompt="Once upon a time, there was a little cat."
    python sample.py --init_from=out/dllm_var --prompt=@prompts.txt --sampler=llada --gen_length=256
    python sample.py --init_from=out/dllm_var --prompt="Tom had a red ball." --show
    python sample.py --init_from=out/ar --sampler=ar --prompt="Lily went to the park."
    python sample.py --init_from=out/block_pad --prompt=@prompts.txt --slots=16 --cuda_graphs --compile   # fastest
    python sample.py --init_from=out/ar --prompt=@prompts.txt --slots=16 --cuda_graphs --compile          # AR's too
    python sample.py --init_from=random:tiny --show        # an untrained model: tries the script, writes noise
    python sample.py --init_from=random:tiny:causal        # the same, for the autoregressive sampler

--prompt is the prompt text, or @file for a file of prompts, one per line (as --prompt_file). Prompts are encoded
as ordinary text: "<|endoftext|>" or "[MASK]" typed in a prompt are those characters, never the special tokens.
Without a prompt a diffusion model generates unconditionally; the autoregressive model starts from EOS, the
token that precedes every document in its training stream.

--show redraws the canvas in the terminal after every step: masks are dim blocks, the tokens committed in that
step are highlighted, and the block sampler reveals its canvas one block at a time. It draws only on a terminal
(piped into a file it would write escape codes: a note says it is ignored). Each batch's samples are printed as
soon as that batch is done.

--trace_out=PATH records the same canvases to a JSON file, which nanodllm/plots.py draws as a figure:
    python sample.py --init_from=out/dllm_var --prompt="Tom had a red ball." --trace_out=trace.json
    python -m nanodllm.plots --block_decoding trace.json --out block_decoding.png
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from nanodllm.sampler import GenerationStats, batches, generate, knobs, knobs_from_flags
from nanodllm.system import Dist, autocast, inference_weights, pick_device
from nanodllm.tokenizer import get_tokenizer

SAMPLERS = ("block", "llada", "length_bound", "ar")
MAX_GENERATION = 1024  # dLLM-Var's cap on new tokens; the default wherever the model's context allows it


def _number(kind, s):
    try:
        return kind(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {s!r}") from None


def _positive_int(s):
    v = _number(int, s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {s}")
    return v


def _unit_float(s):
    v = _number(float, s)
    if not 0 <= v <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {s}")
    return v


def _non_negative_float(s):
    v = _number(float, s)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {s}")
    return v


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Sample from a nanodllm checkpoint.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--init_from", required=True,
                   help="checkpoint directory (or a run's out_dir); random:<preset>[:<attention>] for an untrained "
                        "model, to try the script")
    p.add_argument("--prompt", default=None, help="prompt text, or @file with one prompt per line")
    p.add_argument("--prompt_file", default=None, help="a file with one prompt per line")
    p.add_argument("--sampler", choices=SAMPLERS, default=None,
                   help="default: ar for a causal model, block for a diffusion model")
    p.add_argument("--num_samples", type=_positive_int, default=1, help="samples per prompt")
    p.add_argument("--batch_size", type=_positive_int, default=8, help="rows generated together")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"),
                   help="default: bfloat16 on CUDA, float32 on the CPU")
    g = p.add_argument_group("sampling (block, ar)")
    g.add_argument("--temperature", type=_non_negative_float, default=0.0, help="0 = greedy")
    g.add_argument("--top_k", type=_positive_int, default=None)
    g.add_argument("--top_p", type=lambda s: _number(float, s), default=None)
    g = p.add_argument_group("block (dLLM-Var) and ar")
    g.add_argument("--max_new_tokens", type=_positive_int, default=None,
                   help=f"cap on new tokens; default {MAX_GENERATION} or what the model's context allows")
    g.add_argument("--block_size", type=_positive_int, default=knobs("block")["block_size"])
    g.add_argument("--threshold", type=_unit_float, default=knobs("block")["threshold"],
                   help="commit positions more confident than this")
    g.add_argument("--steps_per_block", type=_positive_int, default=None,
                   help="fixed-steps mode (LLaDA's schedule inside each block) instead of the threshold")
    g.add_argument("--eos_frontier", action="store_true",
                   help="commit an EOS only at a row's first masked position (the stop decided left to right)")
    g.add_argument("--no_cache", action="store_true", help="recompute everything every step (block, ar)")
    g.add_argument("--slots", type=_positive_int, default=None,
                   help="block (a block_causal model) or ar: decode every sample in this many rows, each at its "
                        "own block or column, a finished row taking the next sample (continuous batching; replaces "
                        "--batch_size)")
    g.add_argument("--cuda_graphs", action="store_true",
                   help="replay each pass as a recorded CUDA graph (on a GPU; elsewhere the passes run eagerly)")
    g.add_argument("--compile", action="store_true",
                   help="with --cuda_graphs: the pass through torch.compile before it is recorded (block with "
                        "--slots, greedy; ar: its one-token pass)")
    g = p.add_argument_group("llada (vanilla) and length_bound")
    g.add_argument("--gen_length", type=_positive_int, default=knobs("llada")["gen_length"])
    g.add_argument("--steps", type=_positive_int, default=None,
                   help="llada: default gen_length; length_bound: default one token per step")
    g.add_argument("--block_length", type=_positive_int, default=None, help="llada: default gen_length")
    g.add_argument("--remasking", choices=("low_confidence", "random"), default="low_confidence")
    g.add_argument("--max_length", type=_positive_int, default=None,
                   help=f"length_bound: the probing canvas; default {MAX_GENERATION} or what fits")
    g = p.add_argument_group("display")
    g.add_argument("--show", action="store_true", help="draw the denoising live in the terminal")
    g.add_argument("--show_delay", type=_non_negative_float, default=0.03, help="seconds between frames")
    g.add_argument("--trace_out", default=None, metavar="PATH",
                   help="write every step's canvas to this JSON file (python -m nanodllm.plots --block_decoding)")
    args = p.parse_args(argv)
    if args.prompt is not None and args.prompt_file is not None:
        p.error("give --prompt or --prompt_file, not both")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        p.error(f"--top_p must be in (0, 1], got {args.top_p}")
    if args.slots and (args.show or args.trace_out):
        p.error("--slots decodes every sample in one call whose rows change prompts: it does not go with --show "
                "or --trace_out")
    return args


def read_prompts(args) -> list[str]:
    """The prompt texts: --prompt, @file / --prompt_file (one per line, blank lines skipped), or one empty."""
    path = args.prompt_file or (args.prompt[1:] if args.prompt and args.prompt.startswith("@") else None)
    if path is None:
        return [args.prompt or ""]
    if not Path(path).is_file():
        sys.exit(f"error: prompt file {path} does not exist")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        sys.exit(f"error: prompt file {path} is not UTF-8 (invalid byte at offset {e.start}): save it as UTF-8")
    prompts = [line.rstrip("\r\n") for line in text.splitlines()]
    prompts = [p for p in prompts if p.strip()]
    if not prompts:
        sys.exit(f"error: prompt file {path} holds no prompts")
    return prompts


def load(init_from: str, device):
    if init_from.startswith("random:"):  # random:tiny, random:tiny:causal: try the script without a checkpoint
        from nanodllm.model import Transformer, preset
        parts = init_from.split(":")
        torch.manual_seed(0)
        config = preset(parts[1], **({"attention": parts[2]} if len(parts) > 2 else {}))
        return Transformer(config).to(device).eval(), {}
    from nanodllm.checkpoint import load_model
    return load_model(init_from, device)


# -----------------------------------------------------------------------------
# --show: the canvas, redrawn after every step

class LiveView:
    """A trace callback that redraws every row's canvas: prompt in plain text, committed tokens in plain text,
    tokens committed in this step highlighted, masks as dim blocks."""

    CLEAR, RESET, DIM, NEW, PROMPT = "\x1b[2J\x1b[H", "\x1b[0m", "\x1b[2m", "\x1b[1;30;43m", "\x1b[36m"

    def __init__(self, tokenizer, mask_id, prompt_texts, title, delay):
        self.tok, self.mask_id, self.prompts, self.title, self.delay = tokenizer, mask_id, prompt_texts, title, delay
        self.prev, self.step = None, 0

    def __call__(self, canvas):
        self.step += 1
        frame = [f"{self.title}   step {self.step}\n"]
        for i, row in enumerate(canvas):
            prev = self.prev[i] if self.prev else []
            parts = [f"\n{self.PROMPT}{self.prompts[i]}{self.RESET}"]
            for j, t in enumerate(row):
                if t == self.mask_id:
                    parts.append(f"{self.DIM}\u2591{self.RESET}")
                    continue
                piece = self.tok.decode([t])
                fresh = j >= len(prev) or prev[j] == self.mask_id
                parts.append(f"{self.NEW}{piece}{self.RESET}" if fresh else piece)
            frame.append("".join(parts) + "\n")
        sys.stdout.write(self.CLEAR + "".join(frame))
        sys.stdout.flush()
        self.prev = [list(r) for r in canvas]
        if self.delay:
            time.sleep(self.delay)


# -----------------------------------------------------------------------------
# --trace_out: the canvases, kept for a figure

class TraceRecorder:
    """A trace callback that keeps a copy of every step's canvas: frames[step][row] = that row's generated tokens
    (mask id where still masked; a finished row keeps its final output)."""

    def __init__(self):
        self.frames = []

    def __call__(self, canvas):
        self.frames.append([list(row) for row in canvas])  # the sampler reuses its lists between steps


def _call_all(callbacks):
    """One trace callback that calls each of callbacks in turn, or None when there are none (the samplers then
    skip building the canvas altogether)."""
    if not callbacks:
        return None

    def trace(canvas):
        for callback in callbacks:
            callback(canvas)
    return trace


# -----------------------------------------------------------------------------

def main(argv=None):
    args = parse_args(argv)
    try:
        device = pick_device(args.device, Dist())
        dtype = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
        model, info = load(args.init_from, device)
        inference_weights(model, device, dtype)
    except Exception as e:  # a missing or broken checkpoint, a bad device: one clear line, not a traceback
        sys.exit(f"error: {e}")
    cfg = model.config
    sampler = args.sampler or ("ar" if cfg.attention == "causal" else "block")
    if (sampler == "ar") != (cfg.attention == "causal"):
        sys.exit(f"error: --sampler={sampler} does not fit this model ({cfg.attention} attention): "
                 f"use --sampler=ar for a causal model and block/llada/length_bound for a diffusion model")

    if args.slots and sampler not in ("block", "ar"):
        sys.exit(f"error: --slots is the block and ar samplers', not {sampler}'s")

    tok = get_tokenizer()
    texts = read_prompts(args)
    encoded = [tok.encode(t) for t in texts]  # ordinary text: special-token names stay plain characters
    # every row decodes on its own positions, so the longest prompt bounds the room; an ar prompt gets an EOS first
    longest = max(len(ids) for ids in encoded) + (sampler == "ar")
    room = cfg.max_seq_len - longest
    if room < 1:
        sys.exit(f"error: the longest prompt takes {longest} positions; the model's context is {cfg.max_seq_len}")
    args.max_new_tokens = args.max_new_tokens or min(MAX_GENERATION, room)
    args.max_length = args.max_length or min(MAX_GENERATION, room)

    if args.show and not sys.stdout.isatty():
        print("note: --show draws only on a terminal; not drawing", file=sys.stderr)
        args.show = False
    torch.manual_seed(args.seed)
    generator = torch.Generator(device).manual_seed(args.seed)
    jobs = [(i, ids) for i, ids in enumerate(encoded) for _ in range(args.num_samples)]
    step_info = f" (step {info['step']})" if isinstance(info, dict) and "step" in info else ""
    print(f"{args.init_from}{step_info}: {cfg.attention} model, {model.num_params() / 1e6:.1f}M parameters, "
          f"sampler {sampler}, {len(jobs)} samples on {device} ({dtype})")

    parts, calls = [], []
    # --slots: one call decodes every sample, its rows refilled as they finish; otherwise a call per batch
    batch_rows = ([list(range(len(jobs)))] if args.slots else
                  batches(model, [ids for _, ids in jobs], args.batch_size, block_aligned=sampler == "block"))
    for b, rows in enumerate(batch_rows):
        batch = [jobs[n] for n in rows]
        callbacks = []
        if args.show:
            callbacks.append(LiveView(tok, cfg.mask_id, [texts[i] for i, _ in batch],
                                      f"{sampler}: batch {b + 1}, {len(batch)} of {len(jobs)} samples",
                                      args.show_delay))
        if args.trace_out:
            callbacks.append(TraceRecorder())
            calls.append({"samples": rows, "frames": callbacks[-1].frames})
        try:
            with autocast(device, dtype):
                out, stats = generate(sampler, model, [ids for _, ids in batch], generator=generator,
                                      trace=_call_all(callbacks), **knobs_from_flags(args))
        except ValueError as e:  # a bad combination of knobs, or a prompt too long for the model
            sys.exit(f"error: {e}")
        parts.append(stats)
        if stats.info:
            print(f"batch {b}: {stats.info}")
        for n, (i, _), completion, finished in zip(rows, batch, out, stats.finished):
            print(f"\n--- sample {n + 1}, prompt {i + 1}{'' if finished else ' (cut at the length cap)'} ---")
            print(f"{texts[i]}\033[1m{tok.decode(completion)}\033[0m" if sys.stdout.isatty()
                  else texts[i] + tok.decode(completion), flush=True)
    print(f"\n{GenerationStats.combine(parts)}")
    if args.trace_out:
        # One entry per generate call (a batch): its rows are the samples it lists, in order.
        trace = {"sampler": sampler, "knobs": knobs(sampler, **knobs_from_flags(args)), "mask_id": cfg.mask_id,
                 "eos_id": cfg.eos_id, "samples": [{"prompt": texts[i], "prompt_ids": ids} for i, ids in jobs],
                 "calls": calls}
        Path(args.trace_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.trace_out).write_text(json.dumps(trace))
        print(f"wrote {sum(len(c['frames']) for c in calls)} steps of canvases to {args.trace_out}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("error: interrupted (Ctrl-C); the samples above are complete", file=sys.stderr)
        sys.exit(130)
