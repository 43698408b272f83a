"""Figures for the README and eval_eos.py, drawn from the project's own logs, results and data (matplotlib,
imported only when drawing).

    python -m nanodllm.plots out/tiny/log.jsonl --out assets/tiny_loss.png
    python -m nanodllm.plots out/a/log.jsonl out/b/log.jsonl --labels a b --out assets/compare.png
    python -m nanodllm.plots --masking data/tinystories --out assets/masking.png   # what each recipe masks
"""

import argparse
import json
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


def plot_length_histograms(reference, generated: dict, out_png, title=""):
    """One panel per sampler: the distribution of its generated lengths over the reference distribution, on
    shared bins. (A sampler that never stops piles up at the length cap.)"""
    import numpy as np
    plt = _pyplot()
    top = max([max(reference, default=0)] + [max(v, default=0) for v in generated.values()]) + 1
    bins = np.linspace(0, top, min(50, top) + 1)
    fig, axes = plt.subplots(1, max(1, len(generated)), figsize=(3.6 * max(1, len(generated)), 3.2),
                             sharey=True, squeeze=False)
    for ax, (name, lengths) in zip(axes[0], generated.items()):
        ax.hist(reference, bins=bins, color="gray", alpha=0.5, label="reference")
        ax.hist(lengths, bins=bins, histtype="step", lw=1.5, label=name)
        ax.set(xlabel="response length (tokens)", title=name)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("samples")
    if title:
        fig.suptitle(title)
    _save(fig, out_png)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("logs", nargs="*", help="log.jsonl files written by train.py")
    p.add_argument("--masking", metavar="DATA_DIR", help="draw the recipes' masks on a prepared data directory")
    p.add_argument("--labels", nargs="*", help="one label per log (default: the log's folder name)")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--title", default="")
    args = p.parse_args(argv)
    if args.masking:
        masking_figure(args.masking, args.out)
        print(f"wrote {args.out}")
        return
    if not args.logs:
        p.error("give log.jsonl files, or --masking DATA_DIR")
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
