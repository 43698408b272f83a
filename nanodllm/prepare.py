"""Turn raw text into the token files the trainer reads. This module is the one definition of that format.

A prepared data directory holds, for each split ("train", "val"):

    {split}.bin         np.uint16   every document's GPT-2 tokens followed by one EOS (50256), back to back.
                                    This is byte for byte nanoGPT's layout, so nanoGPT-style loaders work on it.
    {split}.docs.npy    np.int64    offsets, shape (n_docs + 1,): document i is tokens[off[i]:off[i+1]],
                                    its trailing EOS included. off[0] == 0 and off[-1] == len(tokens).
    {split}.prompt.npy  np.int32    shape (n_docs,): how many leading tokens of document i are its "prompt"
                                    (its first sentence); 0 when it has no usable first sentence.

plus meta.json (dataset, where the text came from, the preparation options, tokenizer ids and per-split counts),
written last: a directory without it is not prepared, so a run killed half-way is never mistaken for finished
data. `ensure_prepared` reads it to tell whether what is there is what a run asks for, and prepares again if not.

Why the two index files? A masked-diffusion model is trained on whole documents, and with offsets the loader can
pack documents into a sequence (or pad one document out) without searching the token stream for EOS. The prompt
lengths give each document a prompt/response split, which the dLLM-Var recipe needs: it trains the model to fill
in the response (ending with EOS) given a prompt that is never masked. "First sentence" is a crude but honest
prompt for stories and web pages; the recipes decide what to do with documents that have none.

Raw text comes from the Hugging Face hub, or from local files in the format of the original
TinyStories-train.txt: every document followed by a line holding exactly `<|endoftext|>`:

    <doc 1>\n<|endoftext|>\n<doc 2>\n<|endoftext|>\n

A local source is one such file (plain or gzip), a folder of them, or a folder of splits: train.txt[.gz] and
valid.txt[.gz], plus any extra training text as extra/*.txt[.gz] (see `local_files`). The TinyStories folder of
../shared/data is laid out so, and one command prepares all of its training text:

    python data/tinystories/prepare.py --source=../shared/data/tinystories

Usage: data/tinystories/prepare.py and data/fineweb/prepare.py on the command line, or from Python
`load_split(ensure_prepared("tinystories", "data/tinystories", source="/path/to/tinystories"), "train")`.
"""

import argparse
import gzip
import itertools
import json
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nanodllm.tokenizer import get_tokenizer

SPLITS = ("train", "val")


class DataError(ValueError):
    """Raw or prepared data that cannot be used: missing, empty, not UTF-8, the wrong dataset. The message names
    the file and says what to do."""


class HubUnreachable(DataError):
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
        raise DataError(f"{path}: no such file")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip's magic bytes: trust the content, not the file name
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: not a valid gzip file ({e})") from e
    if not raw:
        raise DataError(f"{path} is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8: invalid byte at offset {e.start} of its text ({e.reason}); "
                        "convert it, e.g. iconv -f latin1 -t utf-8") from e
    docs = [doc for doc in _SEPARATOR.split(text) if doc.strip()]
    if not docs:
        raise DataError(f"{path} holds no documents (only separators or whitespace)")
    return docs


def _split_file(directory: Path, names: tuple[str, ...]) -> Path | None:
    candidates = [directory / f"{name}{ext}" for name in names for ext in (".txt", ".txt.gz")]
    return next((p for p in candidates if p.is_file()), None)


def _hold_out(docs: list[str], val_docs: int | None) -> dict[str, list[str]]:
    """The last val_docs documents (default 5%, at least 1) become val; the rest stay train."""
    n_val = max(1, len(docs) // 20) if val_docs is None else val_docs
    if not 1 <= n_val < len(docs):
        raise DataError(f"cannot hold out {n_val} of {len(docs)} documents as val: both splits need documents")
    return {"train": docs[:-n_val], "val": docs[-n_val:]}


def _text_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*") if p.is_file() and p.name.endswith((".txt", ".txt.gz")))


def local_files(source) -> dict[str, list[Path]]:
    """The files a local source is read from, in reading order: {"train": [...], "val": [...]} for a folder of
    splits, else {"all": [...]}, of which the last documents are held out as val.

    - a folder with train.txt[.gz] and valid.txt[.gz] (or val.txt[.gz]): those are the splits, and every
      extra/*.txt[.gz] file in it (sorted by name) is more training text, read after train;
    - a folder of *.txt / *.txt.gz files (sorted by name), or one file: all of it.
    """
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source}: no such file or folder (the source of the text to prepare)")
    if not source.is_dir():
        return {"all": [source]}
    train, val = _split_file(source, ("train",)), _split_file(source, ("valid", "val"))
    if train and val:
        return {"train": [train] + _text_files(source / "extra"), "val": [val]}
    if not _text_files(source):
        raise DataError(f"{source} holds neither train.txt[.gz] + valid.txt[.gz] nor any *.txt[.gz] file")
    return {"all": _text_files(source)}


def read_local(source, val_docs=None, max_docs=None) -> dict[str, list[str]]:
    """{"train": docs, "val": docs} from the files of `local_files(source)`. From a folder of splits, max_docs
    caps each split and val_docs is not used; otherwise the first max_docs documents are read, of which the last
    val_docs are held out as val."""
    docs = {split: [doc for path in paths for doc in read_documents(path)][:max_docs]
            for split, paths in local_files(source).items()}
    return _hold_out(docs["all"], val_docs) if "all" in docs else docs


def _first_rows(split, n: int | None):
    """The first n rows of a `datasets` split (all if n is None), still a Dataset: only the rows selected become
    Python strings, not the whole 2M-story split."""
    return split if n is None else split.select(range(min(n, len(split))))


def read_hub(dataset: str, val_docs=None, max_docs=None) -> dict[str, list[str]]:
    """{"train": docs, "val": docs} downloaded from the Hugging Face hub with `datasets`."""
    try:
        from datasets import load_dataset
        if dataset == "tinystories":  # has its own validation split
            ds = load_dataset("roneneldan/TinyStories")
            return {split: list(_first_rows(ds[hub_split], max_docs)["text"])
                    for split, hub_split in (("train", "train"), ("val", "validation"))}
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
    """Writes one split's three files (each to a temporary name, then renamed over the old one: a reader that
    still maps the old file keeps it); returns its counts for meta.json."""
    for path, write in zip(_files(split, out_dir).values(),
                           (tokens.tofile, lambda f: np.save(f, offsets), lambda f: np.save(f, prompt_lens))):
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    return {"n_docs": len(prompt_lens), "n_tokens": len(tokens), "n_no_prompt": int((prompt_lens == 0).sum()),
            "n_empty_response": int(n_empty_response)}


def finish_writing(out_dir: Path, meta: dict) -> dict:
    tmp = out_dir / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, out_dir / "meta.json")  # atomic: meta.json is either absent or complete
    return meta


def source_record(dataset: str, source=None) -> dict:
    """What meta.json records about where the text comes from: the hub dataset, or the resolved local path and
    every file read from it with its size, so that a file that changed size or a new extra file is noticed."""
    if source is None:
        return {"source": HUB[dataset]}
    files = [path for paths in local_files(source).values() for path in paths]
    return {"source": str(Path(source).resolve()), "files": [[str(p.resolve()), p.stat().st_size] for p in files]}


def prepare(dataset: str, out_dir, source=None, val_docs=None, prompt_max_tokens=64, max_docs=None) -> dict:
    """Read `dataset` (from the hub if source is None, else from a local path), tokenize it and write it to
    out_dir in the format above. Returns the contents of meta.json.

    Everything is read and tokenized before out_dir is touched, so a bad source leaves what was there intact;
    then meta.json goes, the files are replaced, and the new meta.json comes last."""
    if dataset not in HUB:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(HUB)}")
    record = source_record(dataset, source)
    splits = read_hub(dataset, val_docs, max_docs) if source is None else read_local(source, val_docs, max_docs)
    tokenized = {split: tokenize(splits[split], prompt_max_tokens, desc=f"{dataset} {split}") for split in SPLITS}
    out_dir, meta = begin_writing(out_dir, dataset, record["source"])
    meta.update(record, prompt_max_tokens=prompt_max_tokens, val_docs=val_docs, max_docs=max_docs)
    for split, (tokens, offsets, prompt_lens) in tokenized.items():
        empty_response = sum(n > 0 and not split_first_sentence(doc)[1].strip()
                             for doc, n in zip(splits[split], prompt_lens))
        meta[split] = write_split(out_dir, split, tokens, offsets, prompt_lens, empty_response)
    return finish_writing(out_dir, meta)


def is_prepared(data_dir) -> bool:
    """True if data_dir holds meta.json and every split's three files."""
    data_dir = Path(data_dir)
    paths = [data_dir / "meta.json"] + [p for split in SPLITS for p in _files(split, data_dir).values()]
    return all(p.is_file() for p in paths)


def read_meta(data_dir) -> dict:
    return json.loads((Path(data_dir) / "meta.json").read_text())


def ensure_prepared(dataset: str, data_dir, source=None, **options) -> Path:
    """data_dir, holding `dataset` prepared from `source` with `options` (prepare's val_docs, prompt_max_tokens,
    max_docs): what is there is used when its meta.json records the same source (the same files, of the same
    sizes) and the same value of every option given; otherwise it is prepared again, in place (see `prepare`).
    source=None asks for no particular source: what data_dir holds, else the hub."""
    data_dir = Path(data_dir)
    meta = read_meta(data_dir) if is_prepared(data_dir) else None
    if meta and meta["dataset"] != dataset:
        raise DataError(f"{data_dir} holds prepared {meta['dataset']!r} data, not {dataset!r}: "
                        f"give another --data_dir, or delete {data_dir}")
    asked = {**(source_record(dataset, source) if source is not None else {}), **options}
    if meta is None or any(meta.get(key) != value for key, value in asked.items()):
        if meta:
            differ = ", ".join(f"{key} {meta.get(key)!r} -> {value!r}" for key, value in asked.items()
                               if meta.get(key) != value and key != "files") or "the files changed"
            print(f"{data_dir} was prepared from {meta['source']}, not as asked ({differ}): preparing it again")
        if source is None and meta and meta["source"] != HUB[dataset]:
            source = meta["source"]  # new options for the same local text
        prepare(dataset, data_dir, source=source, **options)
    return data_dir


def describe(data_dir) -> str:
    """One line: which prepared data, from where, how much."""
    meta = read_meta(data_dir)
    counts = "; ".join(f"{split} {meta[split]['n_docs']:,} docs, {meta[split]['n_tokens']:,} tokens" for split in SPLITS)
    return f"{Path(data_dir).resolve()}: {meta['dataset']} prepared from {meta['source']} ({counts})"


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
            raise DataError(f"{path} is missing: prepare the data first, "
                            f"e.g. python data/<dataset>/prepare.py --out_dir={Path(data_dir)}")
    tokens = np.memmap(files["tokens"], dtype=np.uint16, mode="r")
    offsets, prompt_lens = np.load(files["offsets"]), np.load(files["prompt_lens"])
    ok = (offsets.dtype == np.int64 and prompt_lens.dtype == np.int32 and len(offsets) == len(prompt_lens) + 1
          and offsets[0] == 0 and offsets[-1] == len(tokens) and np.all(np.diff(offsets) > 0))
    if not ok:
        raise DataError(f"{files['offsets']} does not match {files['tokens']} ({len(tokens)} tokens) and "
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
    try:
        meta = prepare(dataset, args.out_dir, source=args.source, val_docs=args.val_docs,
                       prompt_max_tokens=args.prompt_max_tokens, max_docs=args.max_docs)
    except DataError as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        sys.exit(f"error: interrupted; {args.out_dir} is left unprepared (no meta.json): run the command again")
    print(f"wrote {args.out_dir} from {meta['source']}")
    for split in SPLITS:
        s = meta[split]
        print(f"{split:>5}: {s['n_docs']:,} docs, {s['n_tokens']:,} tokens, {s['n_no_prompt']:,} without a prompt, "
              f"{s['n_empty_response']:,} with an empty response")
