"""Figures for the README, drawn from a run's own log.jsonl (matplotlib, imported only when drawing).

    python -m nanodllm.plots out/tiny/log.jsonl --out assets/tiny_loss.png
    python -m nanodllm.plots out/a/log.jsonl out/b/log.jsonl --labels a b --out assets/compare.png
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
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("logs", nargs="+", help="log.jsonl files written by train.py")
    p.add_argument("--labels", nargs="*", help="one label per log (default: the log's folder name)")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--title", default="")
    args = p.parse_args(argv)
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
