"""Prepare FineWeb for nanodllm: writes train/val .bin, .docs.npy, .prompt.npy and meta.json next to this file.

FineWeb sample-10BT is English web pages. The first --max_docs (default 100,000) are streamed from the hub and the
last --val_docs (default 5%) of them are held out as val. Without internet, point at local <|endoftext|>-separated
text, e.g. from the repo root:

    python data/fineweb/prepare.py --source=/path/to/fineweb_docs.txt.gz   # or a directory of *.txt[.gz]

The format is described in nanodllm/prepare.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout, without installing nanodllm

from nanodllm.prepare import main

if __name__ == "__main__":
    main("fineweb", default_out_dir=Path(__file__).resolve().parent)
