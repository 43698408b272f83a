"""The loader: turns a prepared split (documents of tokens, see nanodllm/prepare.py) into fixed-length rows.

Two layouts, the two sides of the comparison this project exists to make:

  pack  Documents back to back, each ending in its EOS, cut into rows of `seq_len` tokens. A document may
        straddle two rows. No padding, no per-document attention mask: the model attends across document
        boundaries. This is nanoGPT's pretraining stream and dLLM-Var's multi-sample packing.
  pad   One document per row: [prompt, response, EOS, fill, fill, ...] up to `seq_len`. This is LLaDA's SFT
        and the DiffuGPT project's [text + EOS + PAD]. A document longer than a row is dropped or truncated
        (counted either way, never silently).

Each row comes with two masks the recipes need: `is_prompt` (the document's first sentence, when prompts are
on: never masked, never in the loss) and `is_pad` (filler that is not part of any document).

The training stream is endless: each epoch visits this rank's documents in a fresh seeded order, and the row that
holds the end of one epoch continues with the start of the next, so no token is dropped and none is padded.
`state_dict()` is the cursor (epoch, document, offset), saved in checkpoints so `--resume` reads on exactly
where it stopped. With several ranks, each reads every world_size-th document of the shared order.

For evaluation, `wrap=False` makes one ordered pass that ends: its last, partial row is filled with `fill_id`
and marked as padding, so every token of the split is scored exactly once.
"""

from dataclasses import dataclass

import numpy as np
import torch

from nanodllm.prepare import PreparedSplit
from nanodllm.tokenizer import PAD_ID

LAYOUTS = ("pack", "pad")


@dataclass
class Batch:
    tokens: torch.Tensor  # (B, T) int64
    is_prompt: torch.Tensor  # (B, T) bool: prompt tokens
    is_pad: torch.Tensor  # (B, T) bool: filler after a document (pad layout, or the end of an eval pass)

    def to(self, device, non_blocking=False) -> "Batch":
        return Batch(*(t.to(device, non_blocking=non_blocking) for t in (self.tokens, self.is_prompt, self.is_pad)))


class PackedLoader:
    def __init__(self, split: PreparedSplit, batch_size: int, seq_len: int, *, layout: str = "pack",
                 use_prompts: bool = False, fill_id: int = PAD_ID, overlong: str = "drop", seed: int = 0,
                 shuffle: bool = True, wrap: bool = True, rank: int = 0, world_size: int = 1):
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if overlong not in ("drop", "truncate"):
            raise ValueError(f"overlong must be 'drop' or 'truncate', got {overlong!r}")
        if split.n_docs < world_size:
            raise ValueError(f"{split.n_docs} documents cannot be shared by {world_size} ranks")
        self.split, self.batch_size, self.seq_len = split, batch_size, seq_len
        self.layout, self.use_prompts, self.fill_id, self.overlong = layout, use_prompts, fill_id, overlong
        self.seed, self.shuffle, self.wrap, self.rank, self.world_size = seed, shuffle, wrap, rank, world_size
        # The cursor: which epoch, which of this rank's documents, which token inside it.
        self.epoch, self.index, self.offset = 0, 0, 0
        self.exhausted = False
        self.counts = dict(samples=0, no_prompt=0, empty_response=0, dropped=0, truncated=0)
        self._order = self._epoch_order(0)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        """This rank's documents for an epoch: a seeded permutation shared by all ranks, dealt round-robin."""
        n = self.split.n_docs
        order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
        return order[self.rank::self.world_size]

    def _advance_document(self):
        self.index, self.offset = self.index + 1, 0
        if self.index == len(self._order):
            if not self.wrap:
                self.exhausted = True
                return
            self.epoch, self.index = self.epoch + 1, 0
            self._order = self._epoch_order(self.epoch)

    def _current_document(self):
        """(tokens, prompt length) of the document under the cursor; counts it when first entered."""
        i = int(self._order[self.index])
        tokens = self.split.doc(i)
        prompt_len = int(self.split.prompt_lens[i]) if self.use_prompts else 0
        if self.offset == 0:
            self.counts["samples"] += 1
            if self.use_prompts and prompt_len == 0:
                self.counts["no_prompt"] += 1  # trained on as a response with no prompt
            if self.use_prompts and prompt_len > 0 and prompt_len == len(tokens) - 1:
                self.counts["empty_response"] += 1  # prompt + EOS: the model learns to stop at once
        return tokens, prompt_len

    def _pack_row(self):
        tokens = np.full(self.seq_len, self.fill_id, dtype=np.int64)
        is_prompt = np.zeros(self.seq_len, dtype=bool)
        filled = 0
        while filled < self.seq_len and not self.exhausted:
            doc, prompt_len = self._current_document()
            take = min(len(doc) - self.offset, self.seq_len - filled)
            tokens[filled:filled + take] = doc[self.offset:self.offset + take]
            is_prompt[filled:filled + take] = np.arange(self.offset, self.offset + take) < prompt_len
            filled += take
            self.offset += take
            if self.offset == len(doc):
                self._advance_document()
        is_pad = np.arange(self.seq_len) >= filled
        return tokens, is_prompt, is_pad

    def _pad_row(self):
        while not self.exhausted:
            doc, prompt_len = self._current_document()
            self._advance_document()
            if len(doc) > self.seq_len:
                if self.overlong == "drop":
                    self.counts["dropped"] += 1
                    continue
                self.counts["truncated"] += 1  # the row ends mid-response: no EOS in it
                doc = doc[:self.seq_len]
            tokens = np.full(self.seq_len, self.fill_id, dtype=np.int64)
            tokens[:len(doc)] = doc
            positions = np.arange(self.seq_len)
            return tokens, positions < min(prompt_len, len(doc)), positions >= len(doc)
        return None

    def next_batch(self) -> Batch:
        """The next (batch_size, seq_len) rows. With wrap=False, the last batch may be smaller, then StopIteration."""
        rows = []
        while len(rows) < self.batch_size and not self.exhausted:
            row = self._pack_row() if self.layout == "pack" else self._pad_row()
            if row is not None and not row[2].all():
                rows.append(row)
        if not rows:
            raise StopIteration
        tokens, is_prompt, is_pad = (torch.from_numpy(np.stack(r)) for r in zip(*rows))
        return Batch(tokens, is_prompt, is_pad)

    def __iter__(self):
        return self

    __next__ = next_batch

    def state_dict(self) -> dict:
        return dict(epoch=self.epoch, index=self.index, offset=self.offset, exhausted=self.exhausted,
                    counts=dict(self.counts))

    def start_epoch(self, epoch: int):
        """Moves the cursor to the start of an epoch (used when a checkpoint's cursors belong to another
        number of ranks and cannot be mapped onto this run's shares)."""
        self.epoch, self.index, self.offset, self.exhausted = epoch, 0, 0, False
        self._order = self._epoch_order(epoch)

    def load_state_dict(self, state: dict):
        self.epoch, self.index, self.offset = state["epoch"], state["index"], state["offset"]
        self.exhausted, self.counts = state["exhausted"], dict(state["counts"])
        self._order = self._epoch_order(self.epoch)
