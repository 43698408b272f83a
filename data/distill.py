r"""Sequence-level distillation: the training stories rewritten by a teacher, as local text a run can train on.

    python data/distill.py --teacher=out/study-tinystories/runs/ar-s0 \
        --data_dir=out/study-tinystories/data/tinystories --out_dir=out/tinystories-distilled
    python train.py config/study/tinystories_sft.py config/recipes/block_pad.py \
        --data_source=out/tinystories-distilled --init_from=...
    # self-distillation: a diffusion model's own stories, then that model fine-tuned on them (dParallel)
    python data/distill.py --teacher=out/study-tinystories/runs/block_pad@ar-s0 --threshold=0.9 ...
    python train.py config/study/tinystories_sft.py config/recipes/block_pad.py --data_source=... \
        --init_from=out/study-tinystories/runs/block_pad@ar-s0 --certainty_weight=2

Why: a diffusion sampler commits a position once the model is sure of it, and on real stories it rarely is sure of
two at once. Every first sentence has many good continuations, and a model trained on all of them spreads its
probability over them: decoded in parallel, positions drawn from different continuations do not fit together, so a
confident sampler takes about one token per pass. Non-autoregressive translation met the same problem and trained
on a teacher's outputs instead of the references (Kim & Rush 2016, Gu et al. 2018): one continuation per prompt,
the one the teacher finds likeliest, so the student can be sure of more of it at once.

The teacher continues each training document's first sentence (its prompt, as nanodllm/prepare.py splits it), and
the document written out is the prompt's text followed by the teacher's. A causal teacher (the AR baseline)
decodes greedily with the KV cache. A diffusion teacher decodes as its users would, with the block sampler at
--threshold: self-distillation, the first half of dParallel (Chen et al. 2025), whose second half is the loss a
student fine-tuned on these stories is given (certainty_weight, nanodllm/recipes.py). A continuation that does not end with EOS within --max_new_tokens,
or is empty, is left out (the student learns where stories stop from these), and so is a document without a
prompt. The validation split is written back unchanged, so validation losses compare with the original data's.
The output is a folder of splits as nanodllm/prepare.py reads it: train.txt.gz and valid.txt.gz.
"""

import argparse
import gzip
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, without installing nanodllm

from nanodllm.checkpoint import CheckpointError, load_model
from nanodllm.config import ConfigError
from nanodllm.prepare import DataError, load_split
from nanodllm.sampler import batches, generate
from nanodllm.system import Dist, autocast, inference_weights, pick_device
from nanodllm.tokenizer import get_tokenizer

SEPARATOR = "\n<|endoftext|>\n"  # what ends every document in nanodllm/prepare.py's local text format


def teacher_stories(model, prompts, *, batch_size: int, max_new_tokens: int, threshold: float, ctx):
    """The teacher's continuation of every prompt (token lists, in order), EOS-trimmed as the samplers return
    them: a continuation that stopped ends with the EOS id, one cut by max_new_tokens does not. A causal teacher
    decodes greedily ("ar"), any other with the block sampler at `threshold` ("block", greedy too).

    Eager passes, no CUDA graphs: with hundreds of rows per pass the GPU is busy enough that launching kernels
    is not the cost, and the recordings would keep a KV cache for every batch's prompt length (2 x 9.4 GiB at
    1024 rows of the gpt2 preset: they filled an H200 in the 11th batch)."""
    causal = model.config.attention == "causal"
    sampler, knobs = ("ar", {}) if causal else ("block", dict(threshold=threshold))
    out = [None] * len(prompts)
    for n, group in enumerate(batches(model, prompts, batch_size, block_aligned=not causal)):
        with ctx:
            completions, _ = generate(sampler, model, [prompts[i] for i in group], max_new_tokens=max_new_tokens,
                                      **knobs)
        for i, completion in zip(group, completions):
            out[i] = completion
        print(f"batch {n + 1}: {sum(c is not None for c in out):,}/{len(prompts):,} prompts", flush=True)
    return out


def documents(tokenizer, prompts, continuations) -> tuple[list[str], int]:
    """(the texts of the prompts whose continuation ended with EOS after at least one token, how many did not)."""
    eos, kept = tokenizer.eos_id, []
    for prompt, cont in zip(prompts, continuations):
        if len(cont) > 1 and cont[-1] == eos:
            kept.append(tokenizer.decode(prompt + cont[:-1]))
    return kept, len(prompts) - len(kept)


def write_text(path: Path, docs: list[str]):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("".join(doc + SEPARATOR for doc in docs))


def main(argv=None):
    p = argparse.ArgumentParser(description="Rewrite a prepared dataset's training documents with a teacher.")
    p.add_argument("--teacher", required=True, help="a checkpoint: causal (e.g. a study's runs/ar-s0), or a "
                   "diffusion model, which then writes its own training text (self-distillation)")
    p.add_argument("--data_dir", required=True, help="prepared data (nanodllm/prepare.py): train's first sentences "
                   "are the prompts, val is copied")
    p.add_argument("--out_dir", required=True, help="the folder of local text to write (train/valid.txt.gz)")
    p.add_argument("--max_docs", type=int, default=None, help="rewrite at most this many training documents")
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--max_new_tokens", type=int, default=512)
    p.add_argument("--threshold", type=float, default=0.9, help="a diffusion teacher's block sampler commits what "
                   "it is this sure of")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16", "float16"),
                   help="autocast dtype on CUDA (the CPU runs float32)")
    args = p.parse_args(argv)
    for name in ("max_docs", "batch_size", "max_new_tokens"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name} must be a positive integer, got {value}")
    try:
        train, val = load_split(args.data_dir, "train"), load_split(args.data_dir, "val")
        device = pick_device(args.device, Dist())
        model, _ = load_model(args.teacher, device)
    except (DataError, CheckpointError, ConfigError) as e:
        sys.exit(f"error: {e}")
    model = inference_weights(model, device, args.dtype)
    tokenizer = get_tokenizer()
    pairs = train.prompt_pairs(args.max_docs or train.n_docs)
    prompts = [prompt for prompt, _ in pairs]
    print(f"teacher {args.teacher}: {len(prompts):,} first sentences of {args.data_dir}'s train split")
    try:
        continuations = teacher_stories(model, prompts, batch_size=args.batch_size,
                                        max_new_tokens=args.max_new_tokens, threshold=args.threshold,
                                        ctx=autocast(device, args.dtype))
    except ValueError as e:  # the sampler's checks, e.g. a canvas longer than the teacher was trained on
        sys.exit(f"error: {e}")
    docs, dropped = documents(tokenizer, prompts, continuations)
    if not docs:
        sys.exit(f"error: none of the {len(prompts):,} continuations ended with EOS within "
                 f"--max_new_tokens={args.max_new_tokens}; nothing written")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "train.txt.gz", docs)
    write_text(out / "valid.txt.gz", [tokenizer.decode(val.doc(i).tolist()[:-1]) for i in range(val.n_docs)])
    print(f"wrote {out}: {len(docs):,} teacher stories ({dropped:,} left out: no EOS within "
          f"{args.max_new_tokens} tokens, or empty), {val.n_docs:,} validation documents unchanged")


if __name__ == "__main__":
    main()
