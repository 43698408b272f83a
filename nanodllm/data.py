"""The loader: turns a prepared split (documents of tokens, see nanodllm/prepare.py) into fixed-length rows.

Two layouts, the two sides of the comparison this project exists to make:

  pack  Documents back to back, each ending in its EOS, in rows of `seq_len` tokens. No per-document attention
        mask: the model attends across document boundaries. Two ways to fill a row (`packing`):
          stream    the documents in order, cut wherever a row ends: a document may straddle two rows, and the
                    part in the second row is trained without its prompt. No padding. This is nanoGPT's
                    pretraining stream and dLLM-Var's multi-sample packing.
          best_fit  documents kept whole (nanochat's best-fit packing): from a buffer of the next documents in
                    order, the longest one that still fits goes in, until none does; the rest of the row is
                    padding. A document longer than a row is dropped or truncated, as in `pad`.
  pad   One document per row: [prompt, response, EOS, fill, fill, ...] up to `seq_len`. This is LLaDA's SFT
        and the DiffuGPT project's [text + EOS + PAD]. A document longer than a row is dropped or truncated
        (counted either way, never silently).

`align` (block_pad) fills each document with EOS up to a multiple of `align` tokens, LLaDA's EOS padding cut
short at the end of the sampler's block: every document then starts at a block boundary, as a prompt does when
the block sampler decodes it, and what follows its EOS inside its block is more EOS, as a sampler that has placed
the EOS would write.

Each row comes with two masks the recipes need: `is_prompt` (the document's first sentence, when prompts are
on: never masked, never in the loss) and `is_pad` (filler that is not part of any document).

The training stream is endless: each epoch visits this rank's documents in a fresh seeded order, and the row that
holds the end of one epoch continues with the start of the next, so no token is dropped and none is padded.
`state_dict()` is the cursor (epoch, document, offset, and best_fit's buffer), saved in checkpoints so `--resume` reads on exactly
where it stopped. With several ranks, each reads every world_size-th document of the shared order.

For evaluation, `wrap=False` makes one ordered pass that ends: its last, partial row is filled with `fill_id`
and marked as padding, so every token of the split is scored exactly once.
"""

from dataclasses import dataclass

import numpy as np
import torch

from nanodllm.prepare import PreparedSplit
from nanodllm.tokenizer import EOS_ID, PAD_ID

LAYOUTS = ("pack", "pad")
PACKINGS = ("stream", "best_fit")
BEST_FIT_BUFFER = 64  # documents best_fit chooses from: more wastes less of a row, and reorders more


@dataclass
class Batch:
    tokens: torch.Tensor  # (B, T) int64
    is_prompt: torch.Tensor  # (B, T) bool: prompt tokens
    is_pad: torch.Tensor  # (B, T) bool: filler after a document (pad layout, or the end of an eval pass)

    def to(self, device, non_blocking=False) -> "Batch":
        return Batch(*(t.to(device, non_blocking=non_blocking) for t in (self.tokens, self.is_prompt, self.is_pad)))


class PackedLoader:
    def __init__(self, split: PreparedSplit, batch_size: int, seq_len: int, *, layout: str = "pack",
                 packing: str = "stream", use_prompts: bool = False, fill_id: int = PAD_ID, overlong: str = "drop",
                 align: int = 1, seed: int = 0, shuffle: bool = True, wrap: bool = True, rank: int = 0,
                 world_size: int = 1):
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if packing not in PACKINGS:
            raise ValueError(f"packing must be one of {PACKINGS}, got {packing!r}")
        if overlong not in ("drop", "truncate"):
            raise ValueError(f"overlong must be 'drop' or 'truncate', got {overlong!r}")
        if align < 1 or seq_len % align:
            raise ValueError(f"align must be a positive divisor of the row length {seq_len}, got {align}")
        if split.n_docs < world_size:
            raise ValueError(f"{split.n_docs} documents cannot be shared by {world_size} ranks")
        self.split, self.batch_size, self.seq_len = split, batch_size, seq_len
        self.layout, self.packing, self.use_prompts = layout, packing, use_prompts
        self.fill_id, self.overlong, self.align = fill_id, overlong, align
        self.seed, self.shuffle, self.wrap, self.rank, self.world_size = seed, shuffle, wrap, rank, world_size
        # The cursor: which epoch, which of this rank's documents, which token inside it.
        self.epoch, self.index, self.offset = 0, 0, 0
        self.exhausted = False
        self.buffer = []  # best_fit: ids of the documents read but not yet placed
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
        if self.offset == 0:
            self._count(i)
        return self._document(i)

    def _document(self, i: int):
        """(tokens, prompt length) of document i, filled with EOS up to a multiple of `align`."""
        doc = self.split.doc(i)
        if len(doc) % self.align:
            doc = np.concatenate([doc, np.full(-len(doc) % self.align, EOS_ID, dtype=doc.dtype)])
        return doc, int(self.split.prompt_lens[i]) if self.use_prompts else 0

    def _length(self, i: int) -> int:
        """len(self._document(i)[0]), without building it."""
        n = len(self.split.doc(i))
        return n + -n % self.align

    def _count(self, i: int):
        tokens, prompt_len = self._document(i)
        self.counts["samples"] += 1
        if self.use_prompts and prompt_len == 0:
            self.counts["no_prompt"] += 1  # trained on as a response with no prompt
        if self.use_prompts and prompt_len > 0 and prompt_len == len(tokens) - 1:
            self.counts["empty_response"] += 1  # prompt + EOS: the model learns to stop at once

    def _fit_to_row(self, doc):
        """A document as it goes into a row of its own (pad layout, best_fit): whole, truncated to the row
        (no EOS then), or None when dropped. Counted either way."""
        if len(doc) <= self.seq_len:
            return doc
        if self.overlong == "drop":
            self.counts["dropped"] += 1
            return None
        self.counts["truncated"] += 1  # the row ends mid-response: no EOS in it
        return doc[:self.seq_len]

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

    def _best_fit_row(self):
        tokens = np.full(self.seq_len, self.fill_id, dtype=np.int64)
        is_prompt = np.zeros(self.seq_len, dtype=bool)
        filled = 0
        while True:
            while len(self.buffer) < BEST_FIT_BUFFER and not self.exhausted:  # refill, in the epoch's order
                i = int(self._order[self.index])
                self._count(i)
                self._advance_document()
                if self._fit_to_row(self._document(i)[0]) is not None:
                    self.buffer.append(i)
            lengths = [min(self._length(i), self.seq_len) for i in self.buffer]
            fitting = [j for j, n in enumerate(lengths) if n <= self.seq_len - filled]
            if not fitting:
                break
            j = max(fitting, key=lambda j: lengths[j])  # the longest document that still fits
            doc, prompt_len = self._document(self.buffer.pop(j))
            doc = doc[:self.seq_len]
            tokens[filled:filled + len(doc)] = doc
            is_prompt[filled:filled + min(prompt_len, len(doc))] = True
            filled += len(doc)
        return tokens, is_prompt, np.arange(self.seq_len) >= filled

    def _pad_row(self):
        while not self.exhausted:
            doc, prompt_len = self._current_document()
            self._advance_document()
            doc = self._fit_to_row(doc)
            if doc is None:
                continue
            tokens = np.full(self.seq_len, self.fill_id, dtype=np.int64)
            tokens[:len(doc)] = doc
            positions = np.arange(self.seq_len)
            return tokens, positions < min(prompt_len, len(doc)), positions >= len(doc)
        return None

    @property
    def done(self) -> bool:
        """True once a pass that does not wrap has laid out every document."""
        return self.exhausted and not self.buffer

    def _next_row(self):
        if self.layout == "pad":
            return self._pad_row()
        return self._best_fit_row() if self.packing == "best_fit" else self._pack_row()

    def next_batch(self) -> Batch:
        """The next (batch_size, seq_len) rows. With wrap=False, the last batch may be smaller, then StopIteration."""
        rows = []
        while len(rows) < self.batch_size and not self.done:
            row = self._next_row()
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
                    buffer=list(self.buffer), counts=dict(self.counts))

    def start_epoch(self, epoch: int):
        """Moves the cursor to the start of an epoch (used when a checkpoint's cursors belong to another
        number of ranks and cannot be mapped onto this run's shares)."""
        self.epoch, self.index, self.offset, self.exhausted, self.buffer = epoch, 0, 0, False, []
        self._order = self._epoch_order(epoch)

    def load_state_dict(self, state: dict):
        self.epoch, self.index, self.offset = state["epoch"], state["index"], state["offset"]
        self.exhausted, self.counts = state["exhausted"], dict(state["counts"])
        self.buffer = list(state.get("buffer", []))  # checkpoints from before best_fit have none
        self._order = self._epoch_order(self.epoch)
