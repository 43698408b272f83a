"""A controlled length task suite: prompts whose correct response, and so the exact position of EOS, is known.

dLLM-Var's claim is that a masked-diffusion model can learn *where to stop*: it predicts EOS at the end of its
response instead of being told the length up front. On free text (stories, web pages) no single length is
right, so the claim cannot be scored exactly. Here it can. Every example is a small deterministic task:

    copy     "Copy: cat sun dog\\nAnswer:"           -> " cat sun dog"
    reverse  "Reverse: 4 9 1 7\\nAnswer:"            -> " 7 1 9 4"
    sort     "Sort: 42 7 13\\nAnswer:"               -> " 7 13 42"
    count    "Count from 12 to 15\\nAnswer:"         -> " 12 13 14 15"
    repeat   "Repeat 3 times: moon\\nAnswer:"        -> " moon moon moon"
    spell    "Spell: apple\\nAnswer:"                -> " a p p l e"
    length   "How many items: cat 4 sun\\nAnswer:"   -> " 3"

The response length must be *read* from the prompt in different ways: it equals the input's length (copy,
reverse, sort), follows from arithmetic on two numbers (count), is stated as a number (repeat), depends on a
word's letters (spell), or is always one token however long the prompt is (length).

Sizes are drawn log-uniformly, so the lengths spread over two orders of magnitude: many responses are a few
tokens, some run to 300. Lists (copy, reverse, sort, length) hold at most MAX_LIST items, because their prompt
is as long as the list; count and repeat have short prompts and go up to MAX_RUN. Every document (prompt,
response, EOS) is at most about 310 tokens.

Everything is built from a small vocabulary, each piece one GPT-2 token after a space: the WORDS below, the
numbers 0..299 and the letters a..z. So a tiny model learns the tasks in minutes, and response length in
tokens is simply the number of items. Prompts end in ":" and responses start with a space, so BPE never
merges across the boundary: encode(prompt + response) == encode(prompt) + encode(response), and the prompt
is exactly the first prompt_len tokens of each document.

`write_task_data` writes the examples in nanodllm/prepare.py's format, so training reads them like any prepared
dataset, with `--dataset=lengthtask`; under a recipe that uses prompts (dllm_var, eos_random, eos_pad), the
prompt is never masked and the model learns the response and its EOS. Train and val are drawn from different
seeds; `score` checks a generated response against the reference for eval_eos.py.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nanodllm.prepare import SPLITS, begin_writing, finish_writing, is_prepared, write_split
from nanodllm.tokenizer import get_tokenizer

WORDS = ("cat dog sun tree red blue green book bird fish milk ball car house apple water fire moon star rain "
         "hat door cup box king queen boy girl day night hand road ship gold bread cake frog duck horse lion "
         "garden window yellow orange purple river flower summer winter morning friend school happy doctor "
         "little").split()
N_NUMBERS = 300  # numbers 0..299: each is a single GPT-2 token after a space (" 362" is the first that is not)
MAX_LIST = 150  # most items in a list task (its prompt holds the list too)
MAX_RUN = 300  # most items in a count or repeat response
N_TRAIN, N_VAL = 200_000, 500  # examples per split, by default: about 10.6M training tokens


@dataclass(frozen=True)
class Example:
    task: str
    prompt: str  # ends with ":"
    response: str  # starts with a space; EOS comes right after it


def _size(rng: np.random.Generator, high: int) -> int:
    """An integer in [1, high], log-uniform: as many sizes in 1..10 as in 10..100."""
    return min(high, int(math.exp(rng.uniform(0.0, math.log(high + 1)))))


def _items(rng: np.random.Generator, n: int) -> list[str]:
    """n words, or n numbers below 100 (a coin flip)."""
    if rng.random() < 0.5:
        return [WORDS[i] for i in rng.integers(len(WORDS), size=n)]
    return [str(i) for i in rng.integers(100, size=n)]


def _copy(rng):
    items = _items(rng, _size(rng, MAX_LIST))
    return f"Copy: {' '.join(items)}\nAnswer:", " " + " ".join(items)


def _reverse(rng):
    items = _items(rng, _size(rng, MAX_LIST))
    return f"Reverse: {' '.join(items)}\nAnswer:", " " + " ".join(reversed(items))


def _sort(rng):
    numbers = rng.integers(100, size=_size(rng, MAX_LIST)).tolist()
    return f"Sort: {' '.join(map(str, numbers))}\nAnswer:", " " + " ".join(map(str, sorted(numbers)))


def _count(rng):
    n = _size(rng, MAX_RUN)
    start = int(rng.integers(N_NUMBERS - n + 1))
    end = start + n - 1
    return f"Count from {start} to {end}\nAnswer:", " " + " ".join(map(str, range(start, end + 1)))


def _repeat(rng):
    n, word = _size(rng, MAX_RUN), WORDS[rng.integers(len(WORDS))]
    return f"Repeat {n} times: {word}\nAnswer:", f" {word}" * n


def _spell(rng):
    word = WORDS[rng.integers(len(WORDS))]
    return f"Spell: {word}\nAnswer:", " " + " ".join(word)


def _length(rng):
    items = _items(rng, _size(rng, MAX_LIST))
    return f"How many items: {' '.join(items)}\nAnswer:", f" {len(items)}"


# name -> generator: takes a numpy Generator, returns (prompt, response)
TASKS = {"copy": _copy, "reverse": _reverse, "sort": _sort, "count": _count, "repeat": _repeat,
         "spell": _spell, "length": _length}


def sample_task(rng: np.random.Generator, task: str | None = None) -> Example:
    """One example of `task`, or of a task drawn uniformly from TASKS."""
    if task is None:
        task = list(TASKS)[rng.integers(len(TASKS))]
    elif task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {list(TASKS)}")
    return Example(task, *TASKS[task](rng))


def generate(n: int, seed, tasks: list[str] | None = None) -> list[Example]:
    """n examples, the same ones for the same seed (an int, or a list of ints as numpy's default_rng takes),
    tasks drawn uniformly from `tasks` (default: all of TASKS)."""
    rng = np.random.default_rng(seed)
    names = list(tasks or TASKS)
    return [sample_task(rng, names[rng.integers(len(names))]) for _ in range(n)]


# -----------------------------------------------------------------------------
# Writing the examples as a prepared data directory

def _tokenize(examples: list[Example], tokenizer):
    """(tokens uint16, offsets int64, prompt_lens int32), as nanodllm.prepare.tokenize returns them."""
    prompts = tokenizer.encode_batch([ex.prompt for ex in examples])
    responses = tokenizer.encode_batch([ex.response for ex in examples])
    docs = [p + r + [tokenizer.eos_id] for p, r in zip(prompts, responses)]
    tokens = np.fromiter((t for doc in docs for t in doc), dtype=np.uint16)
    offsets = np.concatenate([[0], np.cumsum([len(doc) for doc in docs])]).astype(np.int64)
    return tokens, offsets, np.array([len(p) for p in prompts], dtype=np.int32)


def write_task_data(data_dir, seed: int = 0, n_train: int = N_TRAIN, n_val: int = N_VAL) -> dict:
    """Write n_train and n_val examples to data_dir in nanodllm/prepare.py's format and return meta.json's
    contents. Each document is encode(prompt) + encode(response) + [EOS] and its prompt_len is
    len(encode(prompt)). Train and val come from the seeds (seed, 0) and (seed, 1), so val is drawn fresh; short
    examples (spelling one of the WORDS, say) still recur in both, as there are only so many of them."""
    data_dir, meta = begin_writing(data_dir, "lengthtask", "nanodllm.tasks")
    meta.update(seed=seed, tasks=list(TASKS))
    tokenizer = get_tokenizer()
    longest_prompt = 0
    for i, (split, n) in enumerate(zip(SPLITS, (n_train, n_val))):
        examples = generate(n, [seed, i])
        tokens, offsets, prompt_lens = _tokenize(examples, tokenizer)
        longest_prompt = max(longest_prompt, int(prompt_lens.max()))
        meta[split] = write_split(data_dir, split, tokens, offsets, prompt_lens,
                                  sum(not ex.response.strip() for ex in examples))
    meta["prompt_max_tokens"] = longest_prompt  # no cap here: the longest prompt written
    return finish_writing(data_dir, meta)


def ensure_task_data(data_dir, seed: int = 0, **kw) -> Path:
    """data_dir, (re)writing it with `write_task_data(data_dir, seed, **kw)` unless it already holds the task
    data of this seed, these counts and these tasks. Refuses to overwrite a directory prepared for another dataset."""
    data_dir = Path(data_dir)
    if is_prepared(data_dir):
        meta = json.loads((data_dir / "meta.json").read_text())
        if meta["dataset"] != "lengthtask":
            raise ValueError(f"{data_dir} holds prepared {meta['dataset']!r} data, not 'lengthtask'")
        wanted = (seed, kw.get("n_train", N_TRAIN), kw.get("n_val", N_VAL), list(TASKS))
        if (meta["seed"], meta["train"]["n_docs"], meta["val"]["n_docs"], meta["tasks"]) == wanted:
            return data_dir
    write_task_data(data_dir, seed, **kw)
    return data_dir


# -----------------------------------------------------------------------------
# Scoring a generated response

def score(example: Example, generated_text: str) -> dict:
    """How a generated response (the text between the prompt and the model's EOS) compares to the reference.

    exact_match: the texts agree once surrounding whitespace is stripped. exact_length: the same number of
    GPT-2 tokens, i.e. EOS placed exactly where it belongs (a wrong response can still have the right length).
    Lengths count the tokens of the encoded texts; for a model's output that can differ from the number of ids
    it generated, if those ids are not GPT-2's own tokenization of the text they spell.
    """
    tokenizer = get_tokenizer()
    len_generated, len_reference = len(tokenizer.encode(generated_text)), len(tokenizer.encode(example.response))
    return {"exact_match": generated_text.strip() == example.response.strip(),
            "exact_length": len_generated == len_reference,
            "len_generated": len_generated, "len_reference": len_reference}


# -----------------------------------------------------------------------------
# Which task a prompt belongs to (for per-task tables of evaluation results)

# The first word of each task's prompt ("Copy:", "Count", "How", ...), read from the generators themselves.
_FIRST_WORDS = {TASKS[name](np.random.default_rng(0))[0].split()[0]: name for name in TASKS}


def task_of(prompt_text: str) -> str:
    """The task of a length-suite prompt, from its first word: "Count from 12 to 15\\nAnswer:" -> "count"."""
    words = prompt_text.split()
    if not words or words[0] not in _FIRST_WORDS:
        raise ValueError(f"not a length-suite prompt: {prompt_text[:40]!r}")
    return _FIRST_WORDS[words[0]]
