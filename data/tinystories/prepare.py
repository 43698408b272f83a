"""Prepare TinyStories for nanodllm: writes train/val .bin, .docs.npy, .prompt.npy and meta.json next to this file.

TinyStories (Eldan & Li 2023) is short, simple English stories; its train and validation splits come from the hub.
Without internet, point at local <|endoftext|>-separated text, e.g. from the repo root:

    python data/tinystories/prepare.py --source=/path/to/tinystories   # holds train.txt.gz and valid.txt.gz

Every extra/*.txt[.gz] file beside them is read as more training text: with ../shared/data/tinystories that is
the whole local TinyStories training text (train.txt.gz + extra/, 20,983 stories, 4.19M tokens; valid.txt.gz,
200 stories, as val), in one command. Errors (a missing, empty or non-UTF-8 file) end with one `error:` line.

The format is described in nanodllm/prepare.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout, without installing nanodllm

from nanodllm.prepare import main

if __name__ == "__main__":
    main("tinystories", default_out_dir=Path(__file__).resolve().parent)
