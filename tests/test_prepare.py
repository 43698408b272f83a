import gzip
import json
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from nanodllm.prepare import (DataError, HubUnreachable, describe, ensure_prepared, is_prepared, load_split, prepare,
                              read_documents, read_hub, read_meta)
from nanodllm.tokenizer import get_tokenizer

SEP = "\n<|endoftext|>\n"
LONG = " ".join(["word"] * 80) + ". Then it stopped."  # first sentence of 80 tokens > prompt_max_tokens
# (document, its expected prompt text or None)
DOCS = [
    ("Lily saw a cat. The cat ran away.\nShe laughed.", "Lily saw a cat."),
    ('Mom said, "Go home." Tom went home!', 'Mom said, "Go home."'),
    ("a list of things with no sentence end", None),
    ("Pi is 3.14 and e is 2.71! Nice (really.) ok", "Pi is 3.14 and e is 2.71!"),
    ("Just one sentence.\n", "Just one sentence."),  # empty response
    (LONG, None),
    ("\nWhy? Because.", "\nWhy?"),
]


def write_docs(path: Path, docs, gz=False) -> Path:
    data = "".join(doc + SEP for doc in docs).encode()
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def read_dir(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.name != "meta.json"}


def test_tokens_offsets_prompts_and_counts(tmp_path):
    tok = get_tokenizer()
    src = write_docs(tmp_path / "docs.txt", [DOCS[0][0], "  \n ", *[d for d, _ in DOCS[1:]]])  # blank doc skipped
    meta = prepare("tinystories", tmp_path / "out", source=src, val_docs=2)
    expected = []
    for doc, prompt in DOCS:
        if prompt is None:
            expected.append((tok.encode(doc) + [tok.eos_id], 0))
        else:
            p = tok.encode(prompt)
            expected.append((p + tok.encode(doc[len(prompt):]) + [tok.eos_id], len(p)))
    train, val = load_split(tmp_path / "out", "train"), load_split(tmp_path / "out", "val")
    assert (train.n_docs, val.n_docs) == (5, 2)
    got = [(s.doc(i).tolist(), int(s.prompt_lens[i])) for s in (train, val) for i in range(s.n_docs)]
    assert got == expected
    assert train.tokens.dtype == np.uint16 and train.offsets[0] == 0 and train.offsets[-1] == len(train.tokens)
    assert np.array_equal(np.fromfile(tmp_path / "out" / "train.bin", dtype=np.uint16),
                          np.concatenate([ids for ids, _ in expected[:5]]))  # nanoGPT layout: docs + EOS
    assert meta == json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["train"] == {"n_docs": 5, "n_tokens": len(train.tokens), "n_no_prompt": 1, "n_empty_response": 1}
    assert meta["val"] == {"n_docs": 2, "n_tokens": len(val.tokens), "n_no_prompt": 1, "n_empty_response": 0}
    assert (meta["eos_id"], meta["mask_id"], meta["pad_id"], meta["vocab_size"]) == (50256, 50257, 50258, 50304)
    # prompt_pairs: documents with a prompt only, split at the prompt, without the trailing EOS
    with_prompt = [(ids, p) for ids, p in expected[:5] if p > 0]
    assert train.prompt_pairs(99) == [(ids[:p], ids[p:-1]) for ids, p in with_prompt]
    assert train.prompt_pairs(1) == train.prompt_pairs(99)[:1]


def test_gzip_and_plain_give_identical_output(tmp_path):
    docs = [d for d, _ in DOCS]
    prepare("fineweb", tmp_path / "a", source=write_docs(tmp_path / "d.txt", docs), val_docs=3)
    prepare("fineweb", tmp_path / "b", source=write_docs(tmp_path / "d.txt.gz", docs, gz=True), val_docs=3)
    prepare("fineweb", tmp_path / "c", source=write_docs(tmp_path / "no_suffix", docs, gz=True), val_docs=3)
    assert read_dir(tmp_path / "a") == read_dir(tmp_path / "b") == read_dir(tmp_path / "c")


def test_split_directory_is_used(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_docs(src / "train.txt.gz", [f"Train story {i}. It ends." for i in range(5)], gz=True)
    write_docs(src / "valid.txt", ["Val story. It ends.", "Another one. Yes."])
    write_docs(src / "other.txt", ["Not read."])
    meta = prepare("tinystories", tmp_path / "out", source=src, val_docs=1)  # val_docs unused here
    assert (meta["train"]["n_docs"], meta["val"]["n_docs"]) == (5, 2)
    tok = get_tokenizer()
    assert tok.decode(load_split(tmp_path / "out", "val").doc(1)) == "Another one. Yes.<|endoftext|>"
    assert prepare("tinystories", tmp_path / "capped", source=src, max_docs=3)["train"]["n_docs"] == 3


def test_holdout_from_one_file_and_from_a_directory_of_files(tmp_path):
    docs = [f"Story number {i}. The end." for i in range(45)]
    tok = get_tokenizer()
    meta = prepare("fineweb", tmp_path / "out", source=write_docs(tmp_path / "d.txt", docs))
    assert (meta["train"]["n_docs"], meta["val"]["n_docs"]) == (43, 2)  # default: 5%, the last documents
    assert tok.decode(load_split(tmp_path / "out", "val").doc(1)[:-1]) == docs[-1]
    meta = prepare("fineweb", tmp_path / "out", source=tmp_path / "d.txt", val_docs=10, max_docs=30)
    assert (meta["train"]["n_docs"], meta["val"]["n_docs"]) == (20, 10)
    src = tmp_path / "many"
    src.mkdir()
    write_docs(src / "b.txt", docs[20:])
    write_docs(src / "a.txt.gz", docs[:20], gz=True)  # sorted by name: a before b
    prepare("fineweb", tmp_path / "many_out", source=src)
    val = load_split(tmp_path / "many_out", "val")
    assert [tok.decode(val.doc(i)[:-1]) for i in range(val.n_docs)] == docs[-2:]
    with pytest.raises(ValueError, match="hold out"):
        prepare("fineweb", tmp_path / "x", source=write_docs(tmp_path / "one.txt", docs[:1]))


@pytest.mark.parametrize("content, error, message", [
    (None, DataError, "no such file"),
    (b"", DataError, "empty"),
    (SEP.encode() * 3, DataError, "no documents"),
    (b"<|endoftext|>\n<|endoftext|>\n  \n<|endoftext|>", DataError, "no documents"),
    (b"Hello\xff world." + SEP.encode(), DataError, "offset 5"),
])
def test_read_errors_name_the_file(tmp_path, content, error, message):
    path = tmp_path / "bad.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(error, match=re.escape(str(path)) + ".*" + message):
        read_documents(path)
    if content is not None:  # the same through gzip
        path.write_bytes(gzip.compress(content))
        with pytest.raises(error, match=re.escape(str(path)) + ".*" + message):
            read_documents(path)


def test_load_split_errors(tmp_path):
    with pytest.raises(DataError, match=r"train\.bin is missing: prepare the data"):
        load_split(tmp_path / "nothing", "train")
    prepare("tinystories", tmp_path / "out", source=write_docs(tmp_path / "d.txt", [d for d, _ in DOCS]))
    bin_path = tmp_path / "out" / "train.bin"
    bin_path.write_bytes(bin_path.read_bytes()[:-2])  # a truncated token file
    with pytest.raises(DataError, match="does not match"):
        load_split(tmp_path / "out", "train")


def test_ensure_prepared_uses_what_matches_and_prepares_again_what_does_not(tmp_path, capsys):
    out = tmp_path / "out"
    first = write_docs(tmp_path / "first.txt", [f"First source {i}. The end." for i in range(40)])
    second = write_docs(tmp_path / "second.txt", [f"Second source {i}. The end." for i in range(40)])
    tok = get_tokenizer()

    def first_doc():
        return tok.decode(load_split(out, "train").doc(0)[:-1])

    ensure_prepared("tinystories", out, source=first, prompt_max_tokens=64)
    assert first_doc() == "First source 0. The end." and read_meta(out)["source"] == str(first.resolve())
    before = read_dir(out)
    assert ensure_prepared("tinystories", out, source=first, prompt_max_tokens=64) == out  # the same: used as is
    assert ensure_prepared("tinystories", out) == out  # no source asked for: what is there
    assert read_dir(out) == before and "preparing it again" not in capsys.readouterr().out

    ensure_prepared("tinystories", out, source=second)  # another source: prepared again, in place
    assert first_doc() == "Second source 0. The end." and "was prepared from" in capsys.readouterr().out
    write_docs(second, [f"Changed text {i}. The end." for i in range(40)])  # the same path, other content
    ensure_prepared("tinystories", out, source=second)
    assert first_doc() == "Changed text 0. The end."
    ensure_prepared("tinystories", out, prompt_max_tokens=2)  # another option, the recorded source
    assert read_meta(out)["prompt_max_tokens"] == 2 and load_split(out, "train").prompt_lens.max() == 0

    before = read_dir(out)
    for bad in (tmp_path / "does" / "not" / "exist", write_docs(tmp_path / "empty.txt", [])):
        with pytest.raises(DataError, match=re.escape(str(bad))):
            ensure_prepared("tinystories", out, source=bad)
        assert read_dir(out) == before and is_prepared(out)  # a bad source never touches what is there
    with pytest.raises(DataError, match="holds prepared 'tinystories' data, not 'fineweb'"):
        ensure_prepared("fineweb", out, source=first)
    (out / "meta.json").unlink()  # a half-written directory is not prepared
    assert not is_prepared(out)
    assert ensure_prepared("tinystories", out, source=first) == out and is_prepared(out)
    n = {split: load_split(out, split).tokens.size for split in ("train", "val")}
    assert describe(out) == (f"{out.resolve()}: tinystories prepared from {first.resolve()} "
                             f"(train 38 docs, {n['train']} tokens; val 2 docs, {n['val']} tokens)")


def test_a_folder_of_splits_with_extra_training_text(tmp_path):
    src = tmp_path / "src"
    (src / "extra").mkdir(parents=True)
    write_docs(src / "train.txt.gz", ["Train one. End.", "Train two. End."], gz=True)
    write_docs(src / "valid.txt.gz", ["Valid one. End."], gz=True)
    write_docs(src / "extra" / "b.txt.gz", ["Extra b. End."], gz=True)
    write_docs(src / "extra" / "a.txt", ["Extra a. End."])
    meta = prepare("tinystories", tmp_path / "out", source=src)
    train = load_split(tmp_path / "out", "train")
    tok = get_tokenizer()
    assert [tok.decode(train.doc(i)[:-1]) for i in range(train.n_docs)] == [
        "Train one. End.", "Train two. End.", "Extra a. End.", "Extra b. End."]
    assert [Path(f).name for f, _ in meta["files"]] == ["train.txt.gz", "a.txt", "b.txt.gz", "valid.txt.gz"]
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError, match="nothing holds neither train.txt"):
        prepare("tinystories", tmp_path / "out2", source=tmp_path / "nothing")


def hub_dataset(prefix, n):
    datasets = pytest.importorskip("datasets")
    return datasets.Dataset.from_dict({"text": [f"{prefix} story {i}. It ends." for i in range(n)]})


def test_read_hub_tinystories_splits_only_the_first_rows(monkeypatch):
    datasets = pytest.importorskip("datasets")
    hub = datasets.DatasetDict(train=hub_dataset("Train", 500), validation=hub_dataset("Valid", 50))
    calls, column_lengths = [], []
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kw: calls.append((args, kw)) or hub)
    getitem = datasets.Dataset.__getitem__

    def spy(self, key):  # how many rows each column read turns into Python strings
        value = getitem(self, key)
        if isinstance(key, str):
            column_lengths.append(len(value))
        return value

    monkeypatch.setattr(datasets.Dataset, "__getitem__", spy)
    splits = read_hub("tinystories", max_docs=3)
    assert calls == [(("roneneldan/TinyStories",), {})]
    assert splits == {"train": [f"Train story {i}. It ends." for i in range(3)],
                      "val": [f"Valid story {i}. It ends." for i in range(3)]}
    assert max(column_lengths) == 3  # never the whole 500-row split
    assert [len(docs) for docs in read_hub("tinystories").values()] == [500, 50]


def test_read_hub_fineweb_streams_and_holds_out_val(monkeypatch, tmp_path):
    datasets = pytest.importorskip("datasets")
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kw: calls.append((args, kw))
                        or hub_dataset("Web", 1000).to_iterable_dataset())
    splits = read_hub("fineweb", max_docs=40)
    assert calls == [(("HuggingFaceFW/fineweb",), dict(name="sample-10BT", split="train", streaming=True))]
    assert splits["train"][0] == "Web story 0. It ends." and splits["val"] == ["Web story 38. It ends.",
                                                                               "Web story 39. It ends."]
    meta = prepare("fineweb", tmp_path / "out", max_docs=40)  # the whole path, hub to prepared files
    assert (meta["source"], meta["train"]["n_docs"], meta["val"]["n_docs"]) == ("HuggingFaceFW/fineweb (sample-10BT)", 38, 2)


def test_hub_unreachable_says_how_to_use_local_files(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("hub unreachable")  # never touch the network in tests

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(HubUnreachable, match=r"ConnectionError: hub unreachable.*--data_source=/path/to/tinystories"):
        ensure_prepared("tinystories", tmp_path / "fresh")


def test_real_tinystories_sample(tmp_path):
    path = Path("/work/shared/data/tinystories/sample.txt")
    if not path.is_file():
        pytest.skip(f"{path} not available")
    meta = prepare("tinystories", tmp_path / "out", source=path, max_docs=50)
    assert meta["train"]["n_docs"] + meta["val"]["n_docs"] == 50
    first_story = path.read_text().split(SEP)[0]
    train = load_split(tmp_path / "out", "train")
    assert get_tokenizer().decode(train.doc(0)[:-1]) == first_story
    assert get_tokenizer().decode(train.doc(0)[:train.prompt_lens[0]]) == first_story[:first_story.index(".") + 1]


@pytest.mark.parametrize("source, message", [("does/not/exist", "does/not/exist: no such file or folder"),
                                             ("empty.txt", "empty.txt is empty")])
def test_prepare_script_errors_are_one_line(tmp_path, source, message):
    (tmp_path / "empty.txt").write_bytes(b"")
    script = Path(__file__).resolve().parents[1] / "data" / "tinystories" / "prepare.py"
    result = subprocess.run([sys.executable, str(script), f"--source={tmp_path / source}",
                             f"--out_dir={tmp_path / 'out'}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {tmp_path / message}") and not (tmp_path / "out").exists()
