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
the document written out is the prompt's text followed by the teacher's. A causal teacher (the AR baseline) decodes
greedily with the KV cache. A diffusion teacher decodes as its users would, with the block sampler at --threshold:
self-distillation, the first half of dParallel (Chen et al. 2025), whose second half is the loss a student
fine-tuned on these stories is given (certainty_weight, nanodllm/recipes.py). A continuation that does not end with
EOS within --max_new_tokens, or is empty, is left out (the student learns where stories stop from these), so is one
that loops (more than --max_repetition of its 4-grams repeated), and so is a document without a prompt. With
--judge (a causal model: the study's AR model) each story is scored as bench_sampler scores decoding, and
--max_judge_ppl leaves out the ones the judge finds less likely than that perplexity: a bound on the text's quality
that stays the same from one round of self-distillation to the next (a student's student's student wrote worse
stories than the first two, docs/speed.md). The summary gives the perplexity 9 in 10 of the kept stories are at
or below: the first round's, as the later rounds' bound, kept the third round's students at the first's
perplexity. The validation split is written back unchanged, so validation losses compare with the original
data's. The output is a folder of splits as nanodllm/prepare.py reads it: train.txt.gz and valid.txt.gz, and with
--real_docs=N also extra/real.txt.gz, the first N prompted training documents as they were: prepare reads extra/
as more training text, so a student trained on the folder sees real stories beside the teacher's (a student of
its own stories alone loops and loses the stop, docs/speed.md); linking train and valid alone into another folder
gives the teacher's.
"""

import argparse
import gzip
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, without installing nanodllm

from nanodllm.checkpoint import CheckpointError, load_model
from nanodllm.config import ConfigError
from nanodllm.metrics import judge_perplexity, repetition_rate, response_length
from nanodllm.prepare import DataError, load_split
from nanodllm.sampler import batches, generate
from nanodllm.system import Dist, autocast, inference_weights, pick_device
from nanodllm.tokenizer import get_tokenizer

SEPARATOR = "\n<|endoftext|>\n"  # what ends every document in nanodllm/prepare.py's local text format
JUDGE_BATCH = 64  # stories per judge pass: 64 of 700 tokens are 45k scored positions, 4.5 GB of bf16 logits


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


def story_scores(judge, prompts, continuations, ctx) -> list[tuple[float, int]]:
    """Each continuation's (summed NLL, scored tokens) under the judge, its EOS left out: the text a student
    learns from, scored as bench_sampler scores a sampler's responses (metrics.judge_perplexity)."""
    responses = [c[:response_length(c, judge.config.eos_id)] for c in continuations]
    judged = judge_perplexity(judge, prompts, responses, JUDGE_BATCH, ctx)
    return list(zip(judged["row_nll"], judged["row_tokens"]))


def documents(tokenizer, prompts, continuations, max_repetition: float = 1.0, scores=None,
              max_judge_ppl: float = math.inf) -> tuple[list[str], dict]:
    """The texts (prompt + continuation) a student is to learn from, and what was left out and why.

    A continuation is kept if it ends with EOS after at least one token (the student learns where stories stop
    from these), if at most `max_repetition` of its 4-grams repeat an earlier one (metrics.repetition_rate), and,
    given the judge's `scores` (story_scores), if its judge perplexity is at most `max_judge_ppl`. The second test
    is for self-distillation: a student fine-tuned on its own stories looped far more than they did
    (docs/speed.md), and the stories that already loop are the first suspects. The counts also give the kept
    continuations' mean 4-gram repetition, to compare with the student's, their judge perplexity (pooled over
    their tokens, as bench_sampler's; nan without scores) and the perplexity that 9 in 10 of them are at or
    below (a bound that would keep this text's distribution, to hold a later round's text to)."""
    eos, texts, kept, kept_ppl = tokenizer.eos_id, [], [], []
    no_eos = repetitive = unlikely = 0
    kept_nll = kept_tokens = 0.0
    for prompt, cont, (nll, tokens) in zip(prompts, continuations, scores or [(0.0, 0)] * len(prompts)):
        if len(cont) < 2 or cont[-1] != eos:
            no_eos += 1
        elif repetition_rate([cont[:-1]]) > max_repetition:  # (nan, for fewer than 4 tokens, is never above)
            repetitive += 1
        elif tokens and nll / tokens > math.log(max_judge_ppl):  # its perplexity exp(nll / tokens) above the bound
            unlikely += 1
        else:
            kept.append(cont[:-1])
            texts.append(tokenizer.decode(prompt + cont[:-1]))
            kept_nll, kept_tokens = kept_nll + nll, kept_tokens + tokens
            if tokens:
                kept_ppl.append(math.exp(nll / tokens))
    judge_ppl = math.exp(kept_nll / kept_tokens) if kept_tokens else math.nan
    kept_ppl.sort()  # the 90th percentile by nearest rank: the smallest value 90% of the stories are at or below
    judge_ppl_p90 = kept_ppl[math.ceil(0.9 * len(kept_ppl)) - 1] if kept_ppl else math.nan
    return texts, dict(no_eos=no_eos, repetitive=repetitive, unlikely=unlikely, repetition=repetition_rate(kept),
                       judge_ppl=judge_ppl, judge_ppl_p90=judge_ppl_p90)


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
    p.add_argument("--max_repetition", type=float, default=1.0, help="leave out a continuation in which more than "
                   "this fraction of the 4-grams repeat an earlier one (a loop); 1 keeps all")
    p.add_argument("--judge", default=None, help="a causal checkpoint (the study's runs/ar-s0) that scores each "
                   "kept story: its perplexity is reported, and bounded by --max_judge_ppl")
    p.add_argument("--max_judge_ppl", type=float, default=None, help="leave out a story the judge finds less "
                   "likely than this perplexity (needs --judge)")
    p.add_argument("--real_docs", type=int, default=0, help="also write the first this many prompted training "
                   "documents, unchanged, as extra/real.txt.gz (real text mixed into the student's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16", "float16"),
                   help="autocast dtype on CUDA (the CPU runs float32)")
    args = p.parse_args(argv)
    for name in ("max_docs", "batch_size", "max_new_tokens"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name} must be a positive integer, got {value}")
    if args.real_docs < 0:
        p.error(f"--real_docs must be 0 or more, got {args.real_docs}")
    if not 0 <= args.max_repetition <= 1:
        p.error(f"--max_repetition must be in [0, 1], got {args.max_repetition}")
    if args.max_judge_ppl is not None and not args.max_judge_ppl >= 1:  # (not >=: nan fails too)
        p.error(f"--max_judge_ppl must be a perplexity, at least 1, got {args.max_judge_ppl}")
    if args.max_judge_ppl is not None and args.judge is None:
        p.error("--max_judge_ppl needs --judge, the model whose perplexity it bounds")
    try:
        train, val = load_split(args.data_dir, "train"), load_split(args.data_dir, "val")
        device = pick_device(args.device, Dist())
        model, _ = load_model(args.teacher, device)
        judge = load_model(args.judge, device)[0] if args.judge else None
    except (DataError, CheckpointError, ConfigError) as e:
        sys.exit(f"error: {e}")
    if judge is not None and judge.config.attention != "causal":
        sys.exit(f"error: --judge must be a causal (autoregressive) model, {args.judge} is {judge.config.attention}")
    model = inference_weights(model, device, args.dtype)
    if judge is not None:
        judge = inference_weights(judge, device, args.dtype)
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
    scores = None if judge is None else story_scores(judge, prompts, continuations, autocast(device, args.dtype))
    docs, counts = documents(tokenizer, prompts, continuations, args.max_repetition, scores,
                             args.max_judge_ppl or math.inf)
    left_out = (f"{counts['no_eos']:,} without EOS within {args.max_new_tokens} tokens or empty, "
                f"{counts['repetitive']:,} repeating more than {args.max_repetition} of their 4-grams"
                + (f", {counts['unlikely']:,} above judge perplexity {args.max_judge_ppl}" if args.max_judge_ppl
                   else ""))
    if not docs:
        sys.exit(f"error: none of the {len(prompts):,} continuations was kept ({left_out}); nothing written")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "train.txt.gz", docs)
    write_text(out / "valid.txt.gz", [tokenizer.decode(val.doc(i).tolist()[:-1]) for i in range(val.n_docs)])
    real = [tokenizer.decode(prompt + response) for prompt, response in train.prompt_pairs(args.real_docs)]
    if real:
        (out / "extra").mkdir(exist_ok=True)
        write_text(out / "extra" / "real.txt.gz", real)
    else:  # (an earlier run's real text would be read as training text too)
        (out / "extra" / "real.txt.gz").unlink(missing_ok=True)
    judged = "" if judge is None else (f", judge perplexity {counts['judge_ppl']:.2f}, 9 in 10 at most "
                                       f"{counts['judge_ppl_p90']:.2f}")
    print(f"wrote {out}: {len(docs):,} teacher stories (left out: {left_out}; the kept ones' 4-gram repetition "
          f"{counts['repetition']:.2f}{judged}), {len(real):,} real ones, {val.n_docs:,} validation documents "
          f"unchanged")


if __name__ == "__main__":
    main()
