"""Shared fixtures: tiny models and tiny prepared data, so every test runs in seconds on a CPU."""

from pathlib import Path

import pytest
import torch

from nanodllm.model import ModelConfig, Transformer
from nanodllm.prepare import prepare

SHARED_SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tinystories" / "sample.txt"
SEPARATOR = "\n<|endoftext|>\n"


def tiny_config(**overrides) -> ModelConfig:
    """A two-layer model over the real GPT-2 vocabulary (the output head dominates its size)."""
    base = dict(n_layer=2, n_head=2, n_kv_head=2, d_model=32, mlp_hidden=64, max_seq_len=256)
    return ModelConfig(**{**base, **overrides})


def tiny_model(**overrides) -> Transformer:
    torch.manual_seed(0)
    return Transformer(tiny_config(**overrides))


def story_texts() -> list[str]:
    """Real TinyStories stories from ../shared/data when present, else a few made-up ones."""
    if SHARED_SAMPLE.is_file():
        return SHARED_SAMPLE.read_text(encoding="utf-8").split(SEPARATOR)[:-1][:60]
    return [f"Story {i} starts here. Tom had {i} red balls and {i + 1} blue cups. He was happy." for i in range(60)]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A prepared TinyStories directory: 50 training stories and 10 validation stories."""
    root = tmp_path_factory.mktemp("tinystories")
    stories = story_texts()
    (root / "raw").mkdir()
    (root / "raw" / "train.txt").write_text(SEPARATOR.join(stories[:50]) + SEPARATOR, encoding="utf-8")
    (root / "raw" / "valid.txt").write_text(SEPARATOR.join(stories[50:60]) + SEPARATOR, encoding="utf-8")
    prepare("tinystories", root / "prepared", source=root / "raw")
    return root / "prepared"
