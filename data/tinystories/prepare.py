"""Prepare TinyStories for nanodllm: writes train/val .bin, .docs.npy, .prompt.npy and meta.json next to this file.

TinyStories (Eldan & Li 2023) is short, simple English stories; its train and validation splits come from the hub.
Without internet, point at local <|endoftext|>-separated text, e.g. from the repo root:

    python data/tinystories/prepare.py --source=/path/to/tinystories   # holds train.txt.gz and valid.txt.gz

The format is described in nanodllm/prepare.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout, without installing nanodllm

from nanodllm.prepare import main

if __name__ == "__main__":
    main("tinystories", default_out_dir=Path(__file__).resolve().parent)
