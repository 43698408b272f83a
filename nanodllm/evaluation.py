"""The experiments of eval_eos.py: does a model know where to stop?

On held-out prompt/response pairs (the first validation documents that have a prompt: prompt = the document's
first prompt_len tokens, reference response = the rest without its EOS, so the true EOS sits at canvas position
len(response)):

  first_step_test     one forward pass over prompt + an all-mask canvas, as the DiffuGPT student project's
                      eval_eos does, gives P(EOS) at every position: where does the model put EOS, with some of
                      the true response shown or none (metrics.eos_position_metrics)?
  generation_results  every sampler that fits the model writes its responses, scored against the references:
                      termination, lengths, repetition, exactness on the length task, judge perplexity.
  validation_nll      the validation NLL bound of the model's own training recipe.

The metrics themselves are nanodllm/metrics.py; the tables are nanodllm/report.py.
"""

import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from nanodllm import metrics
from nanodllm.config import ConfigError, config_from_dict
from nanodllm.prepare import load_split
from nanodllm.sampler import GenerationStats, batches, block_offset, decoding_block_size, generate, make_canvas
from nanodllm.sampler import knobs as sampler_knobs  # a name apart from the knobs dicts passed around here
from nanodllm.tasks import Example, score
from nanodllm.tokenizer import get_tokenizer
from nanodllm.training import evaluate


class EvaluationError(ValueError):
    """An evaluation that cannot run as asked; the message says what to change."""


# -----------------------------------------------------------------------------
# Held-out pairs, and the room they leave in the model's context

def load_pairs(dataset: str, data_dir: Path, n: int) -> list[tuple[list[int], list[int]]]:
    """(prompt, reference response) token lists of the first n validation documents that have a prompt."""
    try:
        split = load_split(data_dir, "val")
    except (FileNotFoundError, ValueError) as e:
        hint = (" (the length task data is written by train.py config/lengthtask.py on first use, or by "
                "nanodllm.tasks.ensure_task_data)" if dataset == "lengthtask" else "")
        raise EvaluationError(f"{e}{hint}") from e
    meta_path = Path(data_dir) / "meta.json"
    if not meta_path.is_file():
        raise EvaluationError(f"{data_dir} is not a prepared data directory: meta.json is missing")
    prepared = json.loads(meta_path.read_text())["dataset"]
    if prepared != dataset:
        raise EvaluationError(f"{data_dir} holds prepared {prepared!r} data, not {dataset!r}: pass --data "
                              f"{prepared}, or the --data_dir of the {dataset} data")
    pairs = split.prompt_pairs(n)
    if not pairs:
        raise EvaluationError(f"{data_dir}: no validation document has a prompt")
    return pairs


def run_name(init_from) -> str:
    """A model's name in the tables: its run's out_dir name (also when pointed at one of its ckpt_* dirs)."""
    path = Path(init_from).resolve()
    return path.parent.name if path.name.startswith("ckpt_") else path.name


def check_room(model, longest_prompt: int, needs: dict):
    """Every canvas must fit in the model's context after the longest prompt. needs: what -> (tokens, flag)."""
    room = model.config.max_seq_len - longest_prompt
    for what, (n, flag) in needs.items():
        if n > room:
            raise EvaluationError(f"{what} needs {n} positions after the longest prompt ({longest_prompt} tokens), "
                                  f"but the model's max_seq_len {model.config.max_seq_len} leaves {room}: pass "
                                  f"{flag} {room} (or less)")


# -----------------------------------------------------------------------------
# The first-step EOS test

@torch.no_grad()
def first_step_eos(model, pairs, canvas: int, reveal: float, batch_size: int, seed: int, autocast_ctx):
    """(eos_prob, eos_is_argmax), both (N, canvas) arrays: the model's belief about EOS after one forward pass
    over prompt + canvas, where the canvas holds masks except at round(reveal * len(response)) positions of the
    true response, chosen at random (seeded). A revealed position holds a known text token, so it cannot be the
    EOS: its P(EOS) is set to 0. Prompts are left-padded as in the samplers (key-padding mask, per-row RoPE
    positions), so each row is computed as if it were alone."""
    cfg = model.config
    device = next(model.parameters()).device
    rng = np.random.default_rng([seed, round(reveal * 1000)])
    probs, tops = [None] * len(pairs), [None] * len(pairs)
    for rows in tqdm(batches(model, [p for p, _ in pairs], batch_size), desc=f"first step, {reveal:.0%} revealed",
                     unit="batch"):
        chunk = [pairs[i] for i in rows]
        x, starts, key_mask, positions = make_canvas(model, [p for p, _ in chunk], canvas, cfg.mask_id, "eval_eos")
        P = starts[0]  # every row's first generated column (block=1)
        for i, (_, response) in enumerate(chunk):
            shown = torch.as_tensor(rng.choice(len(response), size=round(reveal * len(response)), replace=False),
                                    dtype=torch.long, device=device)
            x[i, P + shown] = torch.tensor(response, dtype=torch.long, device=device)[shown]
        with autocast_ctx:
            logits = model(x, positions=positions, attn_mask=key_mask, logits_at=(slice(None), slice(P, None)))
        logits = logits.float()  # (B, canvas, V)
        given = (x[:, P:] != cfg.mask_id)
        p_eos = (logits[..., cfg.eos_id] - logits.logsumexp(dim=-1)).exp().masked_fill(given, 0.0)
        for i, p, top in zip(rows, p_eos.cpu(), ((logits.argmax(dim=-1) == cfg.eos_id) & ~given).cpu()):
            probs[i], tops[i] = p, top
    return torch.stack(probs).numpy(), torch.stack(tops).numpy()


def first_step_test(model, pairs, canvas: int, reveals, tolerance: int, batch_size: int, seed: int,
                    autocast_ctx) -> tuple[dict, dict]:
    """(results, heatmap data): the EOS metrics at each reveal fraction, on the pairs whose EOS fits the canvas."""
    fits = [pair for pair in pairs if len(pair[1]) < canvas]
    true_len = np.array([len(r) for _, r in fits])
    out = dict(canvas=canvas, n_beyond_canvas=len(pairs) - len(fits), by_reveal={})
    heatmap = None
    for reveal in reveals if fits else []:
        eos_prob, eos_is_argmax = first_step_eos(model, fits, canvas, reveal, batch_size, seed, autocast_ctx)
        out["by_reveal"][f"{reveal:g}"] = metrics.eos_position_metrics(eos_prob, eos_is_argmax, true_len, tolerance)
        if heatmap is None:  # the first fraction (0 by default: the canvas as the samplers start from it)
            heatmap = dict(eos_prob=eos_prob, true_len=true_len, reveal=reveal,
                           predicted=metrics.predicted_eos_position(eos_prob, eos_is_argmax))
    return out, heatmap


# -----------------------------------------------------------------------------
# Generation, scored like the references

def generate_all(model, name: str, prompts, knobs: dict, batch_size: int, seed: int, autocast_ctx):
    """(completions, stats, length bounds) of sampler `name` over all prompts, in batches."""
    generator = torch.Generator(next(model.parameters()).device).manual_seed(seed)
    completions, bounds, parts = [None] * len(prompts), [None] * len(prompts), []
    for rows in tqdm(batches(model, prompts, batch_size, block_aligned=name == "block"), desc=f"generating ({name})",
                     unit="batch"):
        with autocast_ctx:
            out, stats = generate(name, model, [prompts[i] for i in rows], generator=generator, **knobs)
        for i, completion, bound in itertools.zip_longest(rows, out, stats.info.get("length_bound", [])):
            completions[i], bounds[i] = completion, bound
        parts.append(stats)
    return completions, GenerationStats.combine(parts), [b for b in bounds if b is not None]


def score_responses(completions, pairs, dataset: str, judge, batch_size: int,
                    autocast_ctx) -> tuple[dict, list[list[int]]]:
    """(metrics, responses) of one sampler's completions; responses are the completions without their EOS.
    pairs are (prompt, reference); a reference of None (bench_sampler's --prompt_file) leaves out what needs one:
    the length metrics and exactness."""
    tok = get_tokenizer()
    lengths = [metrics.response_length(c, tok.eos_id) for c in completions]
    responses = [c[:n] for c, n in zip(completions, lengths)]
    referenced = all(r is not None for _, r in pairs)
    out = dict(termination_rate=metrics.termination_rate(completions, tok.eos_id),
               **(metrics.length_metrics(lengths, [len(r) for _, r in pairs]) if referenced else {}),
               repetition=metrics.repetition_rate(responses), exact_match=None, exact_length=None, gen_ppl=None,
               generated_lengths=lengths, finished=[metrics.ended_with_eos(c, tok.eos_id) for c in completions])
    if dataset == "lengthtask" and referenced:  # the answer is known: score it (tasks.score compares texts)
        scores = [score(Example("", tok.decode(p), tok.decode(r)), tok.decode(g))
                  for (p, r), g in zip(pairs, responses)]
        out["exact_per_prompt"] = [bool(s["exact_match"]) for s in scores]  # for paired comparisons
        out["exact_match"] = metrics.accuracy(out["exact_per_prompt"])
        out["exact_length"] = metrics.accuracy([s["exact_length"] for s in scores])
    if judge is not None:
        out["judge"] = metrics.judge_perplexity(judge, [p for p, _ in pairs], responses, batch_size, autocast_ctx)
        out["gen_ppl"] = out["judge"]["ppl"]
    return out, responses


def generation_results(model, samplers, pairs, knobs: dict, dataset: str, judge, batch_size: int, seed: int,
                       autocast_ctx) -> tuple[dict, dict]:
    """(scores, texts) per sampler: its metrics with its speed (tokens/s here includes warm-up and is only
    indicative: bench_sampler.py measures speed properly), and its decoded responses."""
    tok = get_tokenizer()
    prompts = [p for p, _ in pairs]
    results, texts = {}, {}
    for name in samplers:
        completions, stats, bounds = generate_all(model, name, prompts, knobs, batch_size, seed, autocast_ctx)
        scores, responses = score_responses(completions, pairs, dataset, judge, batch_size, autocast_ctx)
        scores.update(tokens_per_s=stats.tokens_per_s, nfe_per_token=stats.nfe_per_token, nfe=stats.nfe,
                      seconds=stats.seconds, total_tokens=stats.total_tokens)
        if bounds:
            scores["mean_length_bound"] = float(np.mean(bounds))
        if name == "block":  # where in its blocks each EOS fell: the shortcut "EOS at the block's end" shows here
            size = decoding_block_size(model, sampler_knobs("block", **knobs)["block_size"])
            offsets = [block_offset(model, len(p)) for p in prompts]
            slots = metrics.eos_block_slots(offsets, scores["generated_lengths"], scores["finished"], size)
            scores.update(eos_block_slots=slots["histogram"], eos_last_slot=slots["last_slot"])
        results[name], texts[name] = scores, [tok.decode(r) for r in responses]
        print(f"{name}: {stats}")
    return results, texts


# -----------------------------------------------------------------------------
# Quality: the NLL bound of the model's own recipe

def validation_nll(model, info: dict, dataset: str, data_dir, eval_iters, device, autocast_ctx) -> dict | None:
    """The validation NLL bound of the model's own training recipe on the dataset's val split, via
    nanodllm.training.evaluate with the training config from the checkpoint; None with eval_iters 0.
    eval_iters None: the training config's."""
    if eval_iters == 0:
        return None
    if not info.get("train"):
        print("note: the checkpoint holds no training config: no validation NLL (its recipe is unknown)")
        return None
    try:
        cfg = config_from_dict(info["train"])
    except ConfigError as e:
        raise EvaluationError(f"cannot rebuild the training config from the checkpoint ({e}); pass --eval_iters 0 "
                              f"to skip the validation NLL") from e
    cfg = dataclasses.replace(cfg, dataset=dataset, data_dir=str(data_dir), eval_iters=eval_iters or cfg.eval_iters)
    result = evaluate(model, cfg, load_split(data_dir, "val"), device, autocast_ctx)
    model.eval()  # evaluate leaves the model in training mode
    return dict(result, recipe=cfg.recipe, eval_iters=cfg.eval_iters)
