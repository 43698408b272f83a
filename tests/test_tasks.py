import json
import re

import numpy as np
import pytest

from nanodllm.prepare import is_prepared, load_split
from nanodllm.tasks import (MAX_LIST, MAX_RUN, TASKS, WORDS, Example, ensure_task_data, generate, sample_task, score,
                            task_of, write_task_data)
from nanodllm.tokenizer import get_tokenizer

@pytest.fixture(scope="module")
def examples():
    return generate(2000, seed=0)


def test_deterministic_for_a_seed():
    assert generate(300, seed=7) == generate(300, seed=7)
    assert generate(300, seed=7) != generate(300, seed=8)
    assert generate(50, seed=7, tasks=["spell"]) == generate(50, seed=7, tasks=["spell"])
    assert {ex.task for ex in generate(50, seed=7, tasks=["sort", "count"])} == {"sort", "count"}


def test_sample_task_picks_the_named_task():
    rng = np.random.default_rng(0)
    for name in TASKS:
        assert sample_task(rng, name).task == name
    with pytest.raises(ValueError, match="unknown task"):
        sample_task(rng, "nope")


def _list_after(prompt: str, head: str) -> list[str]:
    assert prompt.startswith(head) and prompt.endswith("\nAnswer:")
    return prompt[len(head):-len("\nAnswer:")].split(" ")


def _expected(ex: Example) -> str:
    """The correct response, recomputed from the prompt text alone."""
    if ex.task == "copy":
        return " " + " ".join(_list_after(ex.prompt, "Copy: "))
    if ex.task == "reverse":
        return " " + " ".join(_list_after(ex.prompt, "Reverse: ")[::-1])
    if ex.task == "sort":
        return " " + " ".join(map(str, sorted(int(x) for x in _list_after(ex.prompt, "Sort: "))))
    if ex.task == "count":
        start, end = map(int, re.fullmatch(r"Count from (\d+) to (\d+)\nAnswer:", ex.prompt).groups())
        return "".join(f" {i}" for i in range(start, end + 1))
    if ex.task == "repeat":
        n, word = re.fullmatch(r"Repeat (\d+) times: (\w+)\nAnswer:", ex.prompt).groups()
        return f" {word}" * int(n)
    if ex.task == "spell":
        return "".join(f" {c}" for c in re.fullmatch(r"Spell: (\w+)\nAnswer:", ex.prompt).group(1))
    if ex.task == "length":
        return f" {len(_list_after(ex.prompt, 'How many items: '))}"
    raise AssertionError(ex.task)


def test_every_response_is_correct(examples):
    assert {ex.task for ex in examples} == set(TASKS)
    for ex in examples:
        assert ex.response == _expected(ex), ex
    sorts = [ex for ex in examples if ex.task == "sort"]
    assert any(len(set(ex.response.split())) < len(ex.response.split()) for ex in sorts)  # repeats stay


def test_vocabulary_is_one_token_per_item():
    tok = get_tokenizer()
    pieces = [f" {w}" for w in WORDS] + [f" {i}" for i in range(300)] + [f" {chr(c)}" for c in range(97, 123)]
    assert all(len(tok.encode(p)) == 1 for p in pieces)


def test_lengths_are_broad(examples):
    tok = get_tokenizer()
    lengths = np.array([len(tok.encode(ex.response)) for ex in examples])
    assert lengths.min() <= 3 and lengths.max() >= 150
    assert np.median(lengths) <= 20  # many short ones
    assert lengths.max() <= MAX_RUN and max(len(tok.encode(ex.prompt)) for ex in examples) <= MAX_LIST + 10


def test_prompt_and_response_tokenize_separately(examples):
    tok = get_tokenizer()
    for ex in examples:
        assert ex.prompt.endswith(":") and ex.response.startswith(" ")
        assert tok.encode(ex.prompt + ex.response) == tok.encode(ex.prompt) + tok.encode(ex.response), ex


def test_written_data_is_prepared_format(tmp_path):
    tok = get_tokenizer()
    meta = write_task_data(tmp_path, seed=3, n_train=200, n_val=40)
    assert is_prepared(tmp_path)
    assert meta == json.loads((tmp_path / "meta.json").read_text())
    assert (meta["dataset"], meta["seed"], meta["eos_id"], meta["vocab_size"]) == ("lengthtask", 3, 50256, 50304)
    for name, n, seed in (("train", 200, [3, 0]), ("val", 40, [3, 1])):
        split = load_split(tmp_path, name)
        assert split.n_docs == n and meta[name]["n_docs"] == n and meta[name]["n_tokens"] == len(split.tokens)
        assert meta[name]["n_no_prompt"] == 0 and meta[name]["n_empty_response"] == 0
        for i, ex in enumerate(generate(n, seed)):
            doc = split.doc(i).tolist()
            prompt = tok.encode(ex.prompt)
            assert split.prompt_lens[i] == len(prompt) and doc[-1] == tok.eos_id
            assert doc == prompt + tok.encode(ex.response) + [tok.eos_id]
            assert tok.decode(doc[split.prompt_lens[i]:-1]) == ex.response
    assert meta["prompt_max_tokens"] == max(int(load_split(tmp_path, s).prompt_lens.max()) for s in ("train", "val"))


def test_train_and_val_are_drawn_apart(tmp_path):
    write_task_data(tmp_path, seed=0, n_train=20000, n_val=500)
    train, val = load_split(tmp_path, "train"), load_split(tmp_path, "val")
    train_docs = {train.doc(i).tobytes() for i in range(train.n_docs)}
    seen = [val.doc(i).tobytes() in train_docs for i in range(val.n_docs)]
    assert np.mean(seen) < 0.4  # what recurs comes from small spaces: 55 words to spell, 55 x 300 repeats
    long_prompts = [s for i, s in enumerate(seen) if val.prompt_lens[i] > 20]  # lists of about 16 items and up
    assert len(long_prompts) > 50 and not any(long_prompts)


def test_ensure_task_data_is_idempotent(tmp_path):
    d = ensure_task_data(tmp_path / "d", seed=1, n_train=50, n_val=10)
    before = {p.name: p.stat().st_mtime_ns for p in d.iterdir()}
    assert ensure_task_data(d, seed=1, n_train=50, n_val=10) == d
    assert {p.name: p.stat().st_mtime_ns for p in d.iterdir()} == before
    ensure_task_data(d, seed=2, n_train=50, n_val=10)  # another seed: rewritten
    assert json.loads((d / "meta.json").read_text())["seed"] == 2
    ensure_task_data(d, seed=2, n_train=60, n_val=10)  # another count: rewritten
    assert load_split(d, "train").n_docs == 60
    (d / "meta.json").write_text(json.dumps({"dataset": "tinystories"}))
    with pytest.raises(ValueError, match="tinystories"):
        ensure_task_data(d, seed=2, n_train=60, n_val=10)


def test_score():
    ex = Example("reverse", "Reverse: 4 9 1 7\nAnswer:", " 7 1 9 4")
    assert score(ex, " 7 1 9 4") == {"exact_match": True, "exact_length": True, "len_generated": 4,
                                     "len_reference": 4}
    assert score(ex, "7 1 9 4\n")["exact_match"]  # surrounding whitespace does not matter for the text
    wrong_content = score(ex, " 4 9 1 7")
    assert not wrong_content["exact_match"] and wrong_content["exact_length"]
    too_short = score(ex, " 7 1 9")
    assert too_short == {"exact_match": False, "exact_length": False, "len_generated": 3, "len_reference": 4}
    too_long = score(ex, " 7 1 9 4 4")
    assert not too_long["exact_match"] and too_long["len_generated"] == 5
    assert score(ex, "") == {"exact_match": False, "exact_length": False, "len_generated": 0, "len_reference": 4}


def test_task_of_names_the_task_of_every_prompt(examples):
    assert all(task_of(ex.prompt) == ex.task for ex in examples)
    assert {task_of(ex.prompt) for ex in examples} == set(TASKS)
    assert task_of("How many items: cat 4 sun\nAnswer:") == "length"
    for text in ("Once upon a time", "", "  "):
        with pytest.raises(ValueError, match="not a length-suite prompt"):
            task_of(text)
