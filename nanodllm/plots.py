"""Figures for the README and eval_eos.py, drawn from the project's own logs, results and data (matplotlib,
imported only when drawing).

    python -m nanodllm.plots out/tiny-pretrain/log.jsonl --out assets/tiny_loss.png
    python -m nanodllm.plots out/a/log.jsonl out/b/log.jsonl --labels a b --out assets/compare.png
    python -m nanodllm.plots --masking data/tinystories --out assets/masking.png   # what each recipe masks
    python -m nanodllm.plots --block_decoding trace.json --out assets/block_decoding.png   # sample.py --trace_out
"""

import argparse
import json
import textwrap
from pathlib import Path


def read_log(path) -> tuple[list[dict], list[dict]]:
    """(training records, evaluation records) of a log.jsonl. A resumed run appends to the same file; the
    later record for a step wins."""
    train, evals = {}, {}
    for line in Path(path).read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            train[record["step"]] = record
        elif "val_nll" in record:
            evals[record["step"]] = record
    return [train[k] for k in sorted(train)], [evals[k] for k in sorted(evals)]


def plot_training_logs(paths, labels, out_png, title=""):
    plt = _pyplot()
    fig, (ax_train, ax_val) = plt.subplots(1, 2, figsize=(10, 3.6))
    for path, label in zip(paths, labels):
        train, evals = read_log(path)
        line, = ax_train.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1, alpha=0.8, label=label)
        ax_val.plot([r["step"] for r in evals], [r["val_nll"] for r in evals], "o-", color=line.get_color(),
                    label=label)
    ax_train.set(xlabel="optimizer step", ylabel="training loss", title="training loss (recipe's objective)")
    ax_val.set(xlabel="optimizer step", ylabel="nats / token", title="validation NLL bound")
    for ax in (ax_train, ax_val):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    _save(fig, out_png)


# What a row looks like to the model under each recipe: one colour per kind of position.
MASK_KINDS = ("prompt (never masked)", "response, visible", "response, masked", "EOS, masked", "EOS, visible",
              "pad, visible", "pad, masked")
MASK_COLORS = ("#4c72b0", "#dddddd", "#f0a030", "#d62728", "#7f7f7f", "#e8d8f0", "#9467bd")


def mask_kinds(batch, example, eos_id: int):
    """Index into MASK_KINDS for every position of a batch (B, T) under a training example of it."""
    import torch
    masked, eos, pad = example.loss_mask, batch.tokens == eos_id, batch.is_pad
    kind = torch.where(masked, 2, 1)
    kind = torch.where(eos & ~pad, torch.where(masked, 3, 4), kind)
    kind = torch.where(pad, torch.where(masked, 6, 5), kind)
    return torch.where(batch.is_prompt, 0, kind).numpy()


def plot_recipe_masks(rows: dict, out_png, title=""):
    """rows: recipe name -> (T,) kinds (see mask_kinds). One strip of cells per recipe."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch
    plt = _pyplot()
    fig, axes = plt.subplots(len(rows), 1, figsize=(12, 0.9 * len(rows) + 1.2), squeeze=False)
    for ax, (name, kinds) in zip(axes[:, 0], rows.items()):
        ax.imshow(kinds[None, :], cmap=ListedColormap(MASK_COLORS), vmin=0, vmax=len(MASK_COLORS) - 1,
                  aspect="auto", interpolation="nearest")
        ax.set_yticks([0], [name])
        ax.set_xticks([])
        ax.set_xticks([i - 0.5 for i in range(1, len(kinds))], minor=True)
        ax.grid(which="minor", color="white", lw=0.5)
    axes[-1, 0].set_xlabel("position in the row")
    fig.legend(handles=[Patch(color=c, label=k) for c, k in zip(MASK_COLORS, MASK_KINDS)], loc="lower center",
               ncol=4, fontsize=8, frameon=False)
    fig.suptitle(title or "what each recipe masks (t = 0.5)")
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    plt.close(fig)


def masking_figure(data_dir, out_png, seq_len=256, t=0.5, seed=0):
    """Draws the first validation row of `data_dir` as each recipe lays it out and masks it, at noise level t."""
    import torch
    from nanodllm import recipes
    from nanodllm.config import TrainConfig
    from nanodllm.data import PackedLoader
    from nanodllm.prepare import load_split
    from nanodllm.tokenizer import EOS_ID
    split = load_split(data_dir, "val")
    rows = {}
    for recipe in ("dllm_var", "eos_random", "eos_pad"):
        cfg = TrainConfig(recipe=recipe)
        batch = PackedLoader(split, 1, seq_len, shuffle=False, wrap=False, **recipes.loader_options(cfg)).next_batch()
        example = recipes.make_example(cfg, batch, 0, torch.Generator().manual_seed(seed), t=torch.tensor([t]))
        rows[recipe] = mask_kinds(batch, example, EOS_ID)[0]
    plot_recipe_masks(rows, out_png, f"what each recipe masks in the same data (t = {t}); dllm_var and eos_random "
                                     f"pack samples, eos_pad pads one")


# How a sampler fills its canvas, one cell per (step, position): a sample.py --trace_out file drawn as a grid.
DECODE_STATES = ("not on the canvas", "masked", "committed earlier", "committed at this step", "EOS")
DECODE_COLORS = ("#ffffff", "#dddddd", "#4c72b0", "#f0a030", "#d62728")


def read_trace(trace) -> dict:
    """A trace written by sample.py --trace_out (a path), or the dict it holds, checked to hold frames."""
    if not isinstance(trace, dict):
        if not Path(trace).is_file():
            raise FileNotFoundError(f"trace {trace} not found (sample.py --trace_out writes one)")
        trace = json.loads(Path(trace).read_text())
    if not any(call["frames"] for call in trace.get("calls", [])):
        raise ValueError("the trace holds no frames (sample.py --trace_out records one per sampler step)")
    return trace


def sample_frames(trace: dict, sample: int) -> list[list[int]]:
    """One sample's generated tokens at every step of the generate call (batch) that held it."""
    for call in trace["calls"]:
        if sample in call["samples"]:
            row = call["samples"].index(sample)
            return [frame[row] for frame in call["frames"]]
    raise ValueError(f"sample {sample} is not in the trace, which holds samples 0..{len(trace['samples']) - 1}")


def decoding_states(frames, mask_id: int, eos_id: int):
    """frames (per step, a row's tokens; rows grow as blocks open and shrink when cut after EOS) -> (steps, width)
    indices into DECODE_STATES. A token is new at a step if the position was masked, or absent, the step before."""
    import numpy as np
    states = np.zeros((len(frames), max(len(f) for f in frames)), dtype=int)  # 0: not on the canvas
    prev = []
    for step, frame in enumerate(frames):
        for j, t in enumerate(frame):
            if t == mask_id:
                states[step, j] = 1
            elif t == eos_id:
                states[step, j] = 4
            else:
                states[step, j] = 3 if j >= len(prev) or prev[j] == mask_id else 2
        prev = frame
    return states


def plot_block_decoding(trace, out_png, sample=0, max_columns=160, title=""):
    """One sample's decoding, step by step: x = position in the generated text, y = step (top to bottom), each
    cell coloured by DECODE_STATES, thin black lines at block boundaries, and the prompt and final text below.

    With the block sampler, blocks fill left to right, a confident model commits several tokens in one step, and
    the row ends at the step that commits its EOS. The columns shown run to the end of the block holding the
    first EOS (or to the end of the output), at most max_columns; the steps shown end at the sample's last
    change (other rows of its batch may decode on). trace: a sample.py --trace_out path, or its dict."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch
    from nanodllm.tokenizer import get_tokenizer
    trace = read_trace(trace)
    frames = sample_frames(trace, sample)
    mask_id, eos_id, knobs = trace["mask_id"], trace["eos_id"], trace["knobs"]
    block = knobs.get("block_size") or knobs.get("block_length")  # the block sampler's, or LLaDA's semi-AR blocks
    final = frames[-1]
    length = final.index(eos_id) + 1 if eos_id in final else len(final)
    width = min(-(-length // block) * block if block else length, max_columns, max(len(f) for f in frames))
    shown = [f[:width] for f in frames]
    steps = 1 + max((s for s in range(1, len(shown)) if shown[s] != shown[s - 1]), default=0)
    states = decoding_states(frames[:steps], mask_id, eos_id)[:, :width]

    tok = get_tokenizer()
    text = tok.decode(final[:min(length, width)]) + (" ..." if length > width else "")
    caption = "\n".join([textwrap.fill("prompt: " + trace["samples"][sample]["prompt"], 140),
                         textwrap.fill("output: " + text, 140)])
    lines = caption.count("\n") + 1
    grid_h, text_h = min(8.0, max(2.0, 0.12 * steps)), 0.16 * lines
    plt = _pyplot()
    fig, (ax, ax_text) = plt.subplots(2, 1, figsize=(12, grid_h + text_h + 1.4),
                                      gridspec_kw={"height_ratios": [grid_h, text_h]})
    ax.imshow(states, cmap=ListedColormap(DECODE_COLORS), vmin=0, vmax=len(DECODE_COLORS) - 1, aspect="auto",
              interpolation="nearest", extent=(-0.5, width - 0.5, steps + 0.5, 0.5))  # step 1 at the top
    if block:
        for x in range(block, width, block):
            ax.axvline(x - 0.5, color="black", lw=0.8)
    for axis in (ax.xaxis, ax.yaxis):
        axis.get_major_locator().set_params(integer=True)
    ax.set(xlabel="position in the generated text (tokens)", ylabel="step (one forward pass)")
    handles = [Patch(facecolor=c, edgecolor="#999999", label=k) for c, k in zip(DECODE_COLORS, DECODE_STATES)]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    settings = ", ".join(f"{k}={v}" for k, v in knobs.items() if v is not None)
    shown_note = f" (the first {width} shown)" if length > width else ""
    ax.set_title(title or f"{trace['sampler']} sampler, sample {sample}: {length} tokens"
                          f"{' to EOS' if eos_id in final else ''}{shown_note}, {steps} steps\n{settings}",
                 fontsize=10)
    ax_text.axis("off")
    ax_text.text(0, 1, caption, va="top", ha="left", fontsize=8, parse_math=False, transform=ax_text.transAxes)
    _save(fig, out_png)


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed), imported only when drawing."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, out_png):
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    _pyplot().close(fig)


def plot_eos_heatmap(eos_prob, true_len, predicted, out_png, title=""):
    """P(EOS) over canvas positions after one forward pass, one row per sample, rows sorted by true length.

    A model that knows where to stop draws a bright diagonal along the true EOS positions (white ticks); the
    model's own guess (predicted, by metrics.predicted_eos_position) is a red cross. The colour scale is
    logarithmic: a single-EOS model (dLLM-Var) puts most of its mass at the right place, and how far below it the
    rest lies is what tells a sharp belief from a diffuse one. eos_prob (N, L), true_len and predicted (N,).
    """
    import numpy as np
    from matplotlib.colors import LogNorm
    plt = _pyplot()
    eos_prob, true_len, predicted = np.asarray(eos_prob), np.asarray(true_len), np.asarray(predicted)
    order = np.argsort(true_len, kind="stable")
    rows = np.arange(len(order))
    fig, ax = plt.subplots(figsize=(9, max(3.0, min(12.0, 0.04 * len(order) + 2))))
    image = ax.imshow(np.clip(eos_prob[order], 1e-6, 1.0), aspect="auto", interpolation="nearest",
                      norm=LogNorm(vmin=1e-6, vmax=1.0), cmap="viridis")
    ax.scatter(true_len[order], rows, marker="|", s=30, color="white", linewidths=1.5, label="true EOS position")
    ax.scatter(predicted[order], rows, marker="x", s=12, color="red", linewidths=0.8, label="predicted")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set(xlabel="canvas position (tokens after the prompt)", ylabel="sample (sorted by true length)",
           title=title or "P(EOS) after one forward pass on an all-mask canvas")
    ax.legend(loc="lower right", fontsize=8, framealpha=0.8)
    fig.colorbar(image, ax=ax, label="P(EOS)")
    _save(fig, out_png)


def plot_length_scatter(reference, generated: dict, out_png, title=""):
    """Generated vs reference response length, one colour per sampler; on the diagonal, EOS came exactly
    where the reference has it. generated: sampler name -> lengths (the same samples as reference)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    top = max([max(reference, default=0)] + [max(v, default=0) for v in generated.values()]) + 1
    ax.plot([0, top], [0, top], color="gray", lw=1, ls="--", label="generated = reference")
    for name, lengths in generated.items():
        ax.scatter(reference, lengths, s=10, alpha=0.6, label=name)
    ax.set(xlabel="reference length (tokens)", ylabel="generated length (tokens)", xlim=(0, top), ylim=(0, top),
           title=title or "generated vs reference length")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, out_png)


def plot_length_histograms(reference, generated: dict, out_png, title="", columns: int = 4):
    """One panel per sampler (or model): the distribution of its generated lengths over the reference
    distribution, on shared bins, as a share of its samples. (A sampler that never stops piles up at the cap.)"""
    import math
    import numpy as np
    plt = _pyplot()
    top = max([max(reference, default=0)] + [max(v, default=0) for v in generated.values()]) + 1
    bins = np.linspace(0, top, min(50, top) + 1)
    n_cols = min(columns, max(1, len(generated)))
    n_rows = math.ceil(max(1, len(generated)) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.6 * n_cols, 3.2 * n_rows), sharey=True, squeeze=False)
    for ax, (name, lengths) in zip(axes.flat, generated.items()):
        ax.hist(reference, bins=bins, color="gray", alpha=0.5, label="reference",
                weights=np.full(len(reference), 1 / max(1, len(reference))))
        ax.hist(lengths, bins=bins, histtype="step", lw=1.5, label=name,
                weights=np.full(len(lengths), 1 / max(1, len(lengths))))
        ax.set(xlabel="response length (tokens)", title=name)
        ax.legend(fontsize=8)
    for ax in axes.flat[len(generated):]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel("share of samples")
    if title:
        fig.suptitle(title)
    _save(fig, out_png)


def plot_intervals(panels: dict, out_png, title="", columns: int = 4):
    """One panel per key of `panels` (a rate, or a task), in each a point per model with its interval:
    panels[panel][model] = {"mean", "low", "high"} as nanodllm.stats.rate_with_interval gives them (None values
    are left out). Rates are fractions, drawn on [0, 1]; models read top to bottom in the order given."""
    import math
    plt = _pyplot()
    models = list(dict.fromkeys(m for cells in panels.values() for m in cells))
    n_cols = min(columns, max(1, len(panels)))
    n_rows = math.ceil(max(1, len(panels)) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.8 * n_cols + 1.5, n_rows * (0.35 * len(models) + 1.2)),
                             sharey=True, squeeze=False)
    for ax, (panel, cells) in zip(axes.flat, panels.items()):
        for y, model in enumerate(models):
            c = cells.get(model)
            if c is None or c["mean"] is None:
                continue
            ax.errorbar(c["mean"], y, xerr=[[c["mean"] - c["low"]], [c["high"] - c["mean"]]], fmt="o", ms=4,
                        capsize=3, color="C0")
        ax.set(xlim=(-0.03, 1.03), title=panel)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    axes[0][0].set_yticks(range(len(models)), models)
    axes[0][0].invert_yaxis()
    if title:
        fig.suptitle(title)
    _save(fig, out_png)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("logs", nargs="*", help="log.jsonl files written by train.py")
    p.add_argument("--masking", metavar="DATA_DIR", help="draw the recipes' masks on a prepared data directory")
    p.add_argument("--block_decoding", metavar="TRACE", help="draw one sample of a sample.py --trace_out file")
    p.add_argument("--sample", type=int, default=0, help="--block_decoding: which sample of the trace")
    p.add_argument("--max_columns", type=int, default=160, help="--block_decoding: at most this many positions")
    p.add_argument("--labels", nargs="*", help="one label per log (default: the log's folder name)")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--title", default="")
    args = p.parse_args(argv)
    if args.masking:
        masking_figure(args.masking, args.out)
        print(f"wrote {args.out}")
        return
    if args.block_decoding:
        try:
            plot_block_decoding(args.block_decoding, args.out, args.sample, args.max_columns, args.title)
        except (OSError, ValueError) as e:  # no such file, or a trace without that sample or without frames
            p.error(str(e))
        print(f"wrote {args.out}")
        return
    if not args.logs:
        p.error("give log.jsonl files, --masking DATA_DIR or --block_decoding TRACE")
    labels = args.labels or [Path(p).parent.name for p in args.logs]
    if len(labels) != len(args.logs):
        p.error(f"{len(args.logs)} logs but {len(labels)} labels")
    for path in args.logs:
        if not Path(path).is_file():
            p.error(f"log {path} not found")
    plot_training_logs(args.logs, labels, args.out, args.title)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
