"""Turn raw text into the token files the trainer reads. This module is the one definition of that format.

A prepared data directory holds, for each split ("train", "val"):

    {split}.bin         np.uint16   every document's GPT-2 tokens followed by one EOS (50256), back to back.
                                    This is byte for byte nanoGPT's layout, so nanoGPT-style loaders work on it.
    {split}.docs.npy    np.int64    offsets, shape (n_docs + 1,): document i is tokens[off[i]:off[i+1]],
                                    its trailing EOS included. off[0] == 0 and off[-1] == len(tokens).
    {split}.prompt.npy  np.int32    shape (n_docs,): how many leading tokens of document i are its "prompt"
                                    (its first sentence); 0 when it has no usable first sentence.

plus meta.json (dataset, source, tokenizer ids and per-split counts), written last: a directory without it is
not prepared, so a run killed half-way is never mistaken for finished data.

Why the two index files? A masked-diffusion model is trained on whole documents, and with offsets the loader can
pack documents into a sequence (or pad one document out) without searching the token stream for EOS. The prompt
lengths give each document a prompt/response split, which the dLLM-Var recipe needs: it trains the model to fill
in the response (ending with EOS) given a prompt that is never masked. "First sentence" is a crude but honest
prompt for stories and web pages; the recipes decide what to do with documents that have none.

Raw text comes from the Hugging Face hub, or from local files in the format of the original
TinyStories-train.txt: every document followed by a line holding exactly `<|endoftext|>`:

    <doc 1>\n<|endoftext|>\n<doc 2>\n<|endoftext|>\n

Usage: data/tinystories/prepare.py and data/fineweb/prepare.py on the command line, or from Python
`load_split(ensure_prepared("tinystories", "data/tinystories", source="/path/to/tinystories"), "train")`.
"""

import argparse
import gzip
import itertools
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nanodllm.tokenizer import get_tokenizer

SPLITS = ("train", "val")


class HubUnreachable(RuntimeError):
    """The dataset could not be read from the Hugging Face hub; the message says how to use local files."""

HUB = {  # where `source=None` reads each dataset from
    "tinystories": "roneneldan/TinyStories",
    "fineweb": "HuggingFaceFW/fineweb (sample-10BT)",
}
FINEWEB_DEFAULT_DOCS = 100_000  # the FineWeb sample is 10B tokens; a small model needs only a slice

# A separator is a line that holds exactly <|endoftext|>; the newline before it belongs to the separator, not
# to the document. (This equals splitting on "\n<|endoftext|>\n", but also copes with a file that starts with a
# separator or whose last separator has no final newline.)
_SEPARATOR = re.compile(r"\n?^<\|endoftext\|>$\n?", re.MULTILINE)
# The end of the first sentence: . ! or ?, then any closing quotes/brackets, then whitespace or the end of the
# text. Requiring whitespace after it keeps "3.5" or "e.g.," from ending a sentence ("Mr. Smith" still does).
_SENTENCE_END = re.compile(r"[.!?][\"'”’)\]]*(?=\s|$)")


def _files(split: str, data_dir) -> dict[str, Path]:
    data_dir = Path(data_dir)
    return {"tokens": data_dir / f"{split}.bin", "offsets": data_dir / f"{split}.docs.npy",
            "prompt_lens": data_dir / f"{split}.prompt.npy"}


# -----------------------------------------------------------------------------
# Reading raw documents

def read_documents(path) -> list[str]:
    """The documents of one <|endoftext|>-separated text file, plain or gzip, in file order.

    Documents are returned exactly as written (nothing is stripped); whitespace-only ones are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip's magic bytes: trust the content, not the file name
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path}: not a valid gzip file ({e})") from e
    if not raw:
        raise ValueError(f"{path} is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8: invalid byte at offset {e.start} of its text ({e.reason})") from e
    docs = [doc for doc in _SEPARATOR.split(text) if doc.strip()]
    if not docs:
        raise ValueError(f"{path} holds no documents (only separators or whitespace)")
    return docs


def _split_file(directory: Path, names: tuple[str, ...]) -> Path | None:
    candidates = [directory / f"{name}{ext}" for name in names for ext in (".txt", ".txt.gz")]
    return next((p for p in candidates if p.is_file()), None)


def _hold_out(docs: list[str], val_docs: int | None) -> dict[str, list[str]]:
    """The last val_docs documents (default 5%, at least 1) become val; the rest stay train."""
    n_val = max(1, len(docs) // 20) if val_docs is None else val_docs
    if not 1 <= n_val < len(docs):
        raise ValueError(f"cannot hold out {n_val} of {len(docs)} documents as val: both splits need documents")
    return {"train": docs[:-n_val], "val": docs[-n_val:]}


def read_local(source, val_docs=None, max_docs=None) -> dict[str, list[str]]:
    """{"train": docs, "val": docs} from a local path.

    - a directory with train.txt[.gz] and valid.txt[.gz] (or val.txt[.gz]): those are the splits; max_docs caps
      each of them and val_docs is not used;
    - otherwise one file, or a directory of *.txt / *.txt.gz files (read in sorted order): the first max_docs
      documents, of which the last val_docs are held out as val.
    """
    source = Path(source)
    if not source.is_dir():
        return _hold_out(read_documents(source)[:max_docs], val_docs)
    train, val = _split_file(source, ("train",)), _split_file(source, ("valid", "val"))
    if train and val:
        return {"train": read_documents(train)[:max_docs], "val": read_documents(val)[:max_docs]}
    files = sorted(p for p in source.iterdir() if p.is_file() and p.name.endswith((".txt", ".txt.gz")))
    if not files:
        raise FileNotFoundError(f"{source} holds neither train.txt[.gz] + valid.txt[.gz] nor any *.txt[.gz] file")
    docs = [doc for f in files for doc in read_documents(f)]
    return _hold_out(docs[:max_docs], val_docs)


def read_hub(dataset: str, val_docs=None, max_docs=None) -> dict[str, list[str]]:
    """{"train": docs, "val": docs} downloaded from the Hugging Face hub with `datasets`."""
    try:
        from datasets import load_dataset
        if dataset == "tinystories":  # has its own validation split
            ds = load_dataset("roneneldan/TinyStories")
            return {"train": ds["train"]["text"][:max_docs], "val": ds["validation"]["text"][:max_docs]}
        # FineWeb has only a train split; stream the first max_docs documents instead of downloading 10B tokens.
        ds = load_dataset("HuggingFaceFW/fineweb", name="sample-10BT", split="train", streaming=True)
        docs = [row["text"] for row in itertools.islice(ds, max_docs or FINEWEB_DEFAULT_DOCS)]
    except Exception as e:  # no network, no `datasets`, hub errors: all end the same way, with a way out
        raise HubUnreachable(
            f"could not read {HUB[dataset]} from the Hugging Face hub ({type(e).__name__}: {e}). "
            f"To use local files instead, point at them: --data_source=/path/to/{dataset} for training "
            f"(--source for data/{dataset}/prepare.py), a directory with train.txt.gz and valid.txt.gz "
            f"(or a single .txt[.gz] file) in which every document is followed by a line '<|endoftext|>'.") from e
    return _hold_out(docs, val_docs)


# -----------------------------------------------------------------------------
# Tokenizing

def split_first_sentence(text: str) -> tuple[str, str] | None:
    """(prompt, rest) with prompt = text up to and including the first sentence end, or None if it has none."""
    end = _SENTENCE_END.search(text)
    return None if end is None else (text[:end.end()], text[end.end():])


def tokenize_document(text: str, prompt_max_tokens: int, tokenizer) -> tuple[list[int], int]:
    """(tokens + [EOS], prompt_len). The prompt and the rest are encoded separately, so that the prompt is exactly
    the first prompt_len tokens (BPE could otherwise merge across the boundary)."""
    parts = split_first_sentence(text)
    if parts is not None:
        prompt = tokenizer.encode(parts[0])
        if len(prompt) <= prompt_max_tokens:
            return prompt + tokenizer.encode(parts[1]) + [tokenizer.eos_id], len(prompt)
    return tokenizer.encode(text) + [tokenizer.eos_id], 0


def tokenize(docs: list[str], prompt_max_tokens: int = 64, desc: str = "tokenizing", num_threads: int = 8,
             chunk_size: int = 1024):
    """(tokens uint16, offsets int64, prompt_lens int32) of all documents, in order.

    tiktoken releases the GIL while it encodes, so plain threads run in parallel; `map` returns the chunks in
    submission order, so the output does not depend on the thread count.
    """
    tokenizer = get_tokenizer()

    def tokenize_chunk(chunk):
        results = [tokenize_document(doc, prompt_max_tokens, tokenizer) for doc in chunk]
        tokens = np.fromiter(itertools.chain.from_iterable(ids for ids, _ in results), dtype=np.uint16)
        lengths = np.array([len(ids) for ids, _ in results], dtype=np.int64)
        return tokens, lengths, np.array([n for _, n in results], dtype=np.int32)

    chunks = [docs[i:i + chunk_size] for i in range(0, len(docs), chunk_size)]
    parts = []
    with ThreadPoolExecutor(num_threads) as pool, tqdm(total=len(docs), desc=desc, unit="docs") as bar:
        for part in pool.map(tokenize_chunk, chunks):
            parts.append(part)
            bar.update(len(part[1]))
    tokens, lengths, prompt_lens = (np.concatenate([p[k] for p in parts]) for k in range(3))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return tokens, offsets, prompt_lens


# -----------------------------------------------------------------------------
# Writing and reading a prepared directory

def begin_writing(out_dir, dataset: str, source: str) -> tuple[Path, dict]:
    """Creates out_dir and marks it unprepared until `finish_writing`; returns it and meta.json's common part."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "meta.json").unlink(missing_ok=True)  # from here on the directory counts as unprepared
    tokenizer = get_tokenizer()
    return out_dir, {"dataset": dataset, "source": source, "tokenizer": "gpt2", "eos_id": tokenizer.eos_id,
                     "mask_id": tokenizer.mask_id, "pad_id": tokenizer.pad_id, "vocab_size": tokenizer.vocab_size}


def write_split(out_dir: Path, split: str, tokens, offsets, prompt_lens, n_empty_response: int) -> dict:
    """Writes one split's three files; returns its counts for meta.json."""
    files = _files(split, out_dir)
    tokens.tofile(files["tokens"])
    np.save(files["offsets"], offsets)
    np.save(files["prompt_lens"], prompt_lens)
    return {"n_docs": len(prompt_lens), "n_tokens": len(tokens), "n_no_prompt": int((prompt_lens == 0).sum()),
            "n_empty_response": int(n_empty_response)}


def finish_writing(out_dir: Path, meta: dict) -> dict:
    tmp = out_dir / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, out_dir / "meta.json")  # atomic: meta.json is either absent or complete
    return meta


def prepare(dataset: str, out_dir, source=None, val_docs=None, prompt_max_tokens=64, max_docs=None) -> dict:
    """Read `dataset` (from the hub if source is None, else from a local path), tokenize it and write it to
    out_dir in the format above. Returns the contents of meta.json."""
    if dataset not in HUB:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(HUB)}")
    splits = read_hub(dataset, val_docs, max_docs) if source is None else read_local(source, val_docs, max_docs)
    out_dir, meta = begin_writing(out_dir, dataset, HUB[dataset] if source is None else str(Path(source).resolve()))
    meta["prompt_max_tokens"] = prompt_max_tokens
    for split in SPLITS:
        tokens, offsets, prompt_lens = tokenize(splits[split], prompt_max_tokens, desc=f"{dataset} {split}")
        empty_response = sum(n > 0 and not split_first_sentence(doc)[1].strip()
                             for doc, n in zip(splits[split], prompt_lens))
        meta[split] = write_split(out_dir, split, tokens, offsets, prompt_lens, empty_response)
    return finish_writing(out_dir, meta)


def is_prepared(data_dir) -> bool:
    """True if data_dir holds meta.json and every split's three files."""
    data_dir = Path(data_dir)
    paths = [data_dir / "meta.json"] + [p for split in SPLITS for p in _files(split, data_dir).values()]
    return all(p.is_file() for p in paths)


def ensure_prepared(dataset: str, data_dir, source=None, **kwargs) -> Path:
    """data_dir, preparing it first (see `prepare`) unless it is already prepared for this dataset."""
    data_dir = Path(data_dir)
    if is_prepared(data_dir):
        prepared = json.loads((data_dir / "meta.json").read_text())["dataset"]
        if prepared != dataset:
            raise ValueError(f"{data_dir} holds prepared {prepared!r} data, not {dataset!r}")
        return data_dir
    prepare(dataset, data_dir, source=source, **kwargs)
    return data_dir


@dataclass
class PreparedSplit:
    tokens: np.ndarray  # uint16 memmap, read-only: the whole split stays on disk until it is sliced
    offsets: np.ndarray  # int64, (n_docs + 1,)
    prompt_lens: np.ndarray  # int32, (n_docs,)

    @property
    def n_docs(self) -> int:
        return len(self.prompt_lens)

    def doc(self, i: int) -> np.ndarray:
        """Document i's tokens, its trailing EOS included."""
        return self.tokens[self.offsets[i]:self.offsets[i + 1]]

    def prompt_pairs(self, n: int) -> list[tuple[list[int], list[int]]]:
        """(prompt, response) token lists of the first n documents that have a prompt; the response without the
        document's trailing EOS. What the samplers are benchmarked and evaluated on."""
        pairs = []
        for i in np.flatnonzero(self.prompt_lens > 0)[:n]:
            doc, p = self.doc(int(i)).tolist(), int(self.prompt_lens[i])
            pairs.append((doc[:p], doc[p:-1]))
        return pairs


def load_split(data_dir, split: str) -> PreparedSplit:
    files = _files(split, data_dir)
    for path in files.values():
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: prepare the data first, "
                                    f"e.g. python data/<dataset>/prepare.py --out_dir={Path(data_dir)}")
    tokens = np.memmap(files["tokens"], dtype=np.uint16, mode="r")
    offsets, prompt_lens = np.load(files["offsets"]), np.load(files["prompt_lens"])
    ok = (offsets.dtype == np.int64 and prompt_lens.dtype == np.int32 and len(offsets) == len(prompt_lens) + 1
          and offsets[0] == 0 and offsets[-1] == len(tokens) and np.all(np.diff(offsets) > 0))
    if not ok:
        raise ValueError(f"{files['offsets']} does not match {files['tokens']} ({len(tokens)} tokens) and "
                         f"{files['prompt_lens']}: re-run the prepare script")
    return PreparedSplit(tokens, offsets, prompt_lens)


# -----------------------------------------------------------------------------
# Command line (data/<dataset>/prepare.py)

def main(dataset: str, default_out_dir, argv=None) -> None:
    parser = argparse.ArgumentParser(description=f"Tokenize {dataset} into the nanodllm data format.")
    parser.add_argument("--source", default=None, help=f"local file or directory (default: {HUB[dataset]} "
                        "from the Hugging Face hub)")
    parser.add_argument("--out_dir", default=str(default_out_dir), help="where to write (default: %(default)s)")
    parser.add_argument("--val_docs", type=int, default=None, help="documents held out as val (default: 5%%)")
    parser.add_argument("--max_docs", type=int, default=None, help="read at most this many documents")
    parser.add_argument("--prompt_max_tokens", type=int, default=64, help="longest first sentence used as prompt")
    args = parser.parse_args(argv)
    meta = prepare(dataset, args.out_dir, source=args.source, val_docs=args.val_docs,
                   prompt_max_tokens=args.prompt_max_tokens, max_docs=args.max_docs)
    print(f"wrote {args.out_dir} from {meta['source']}")
    for split in SPLITS:
        s = meta[split]
        print(f"{split:>5}: {s['n_docs']:,} docs, {s['n_tokens']:,} tokens, {s['n_no_prompt']:,} without a prompt, "
              f"{s['n_empty_response']:,} with an empty response")
