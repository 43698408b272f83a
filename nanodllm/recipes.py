"""Training recipes: which tokens are masked, and what the loss is. All recipes share every other line of code.

The masked-diffusion objective in one paragraph: draw a noise level t in (0, 1] per row, replace each token by
[MASK] with probability t, and train the model to predict the original tokens at the masked positions (the
target is the token itself: no shift). Weighting each masked token's cross-entropy by 1/t turns the loss into
an upper bound on the negative log-likelihood (the ELBO of LLaDA and MDLM), so validation reports it as an NLL
bound. dLLM-Var instead takes the plain mean over masked tokens.

  pretrain    LLaDA pretraining: packed documents, every token maskable, 1/t-weighted, divided by the number of
              tokens (LLaDA's normalisation).
  dllm_var    dLLM-Var: packed prompt+response+EOS samples; the prompt is never masked and never in the loss;
              response tokens masked with probability t; every EOS is ALWAYS masked, so the model must learn
              where each sample ends (what lets block decoding stop by itself).
  eos_random  the control: like dllm_var, but EOS is masked with probability t like any other token.
  eos_pad     LLaDA SFT / the DiffuGPT project: one sample per row, [prompt, response, EOS, pad...]; the pads
              are targets too. Optionally (pad_masked_perc >= 0) a fixed share of the masked tokens is drawn from
              the pad region, that share annealed linearly from 0 over optimizer steps.
  ar          the autoregressive baseline: a causal model, next-token loss on the same packed stream.

attention_scope="sample" is an ablation of packing, not a recipe: each token attends only to its own sample
(prompt + response + EOS), where dLLM-Var lets it see the whole row. Under "row", the token after every EOS is
the next sample's prompt, never masked: a model can learn "EOS comes right before a prompt", a cue that is
absent when it generates. "sample" takes that cue away.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nanodllm.config import TrainConfig
from nanodllm.data import Batch
from nanodllm.tokenizer import EOS_ID, MASK_ID, PAD_ID

RECIPES = ("pretrain", "dllm_var", "eos_pad", "eos_random", "ar")


def loader_options(cfg: TrainConfig) -> dict:
    """How the loader must lay out rows for a recipe."""
    if cfg.recipe not in RECIPES:
        raise ValueError(f"unknown recipe {cfg.recipe!r}; choose one of {RECIPES}")
    if cfg.pad_token not in ("eos", "pad"):
        raise ValueError(f"pad_token must be 'eos' or 'pad', got {cfg.pad_token!r}")
    if cfg.attention_scope not in ("row", "sample"):
        raise ValueError(f"attention_scope must be 'row' or 'sample', got {cfg.attention_scope!r}")
    if cfg.attention_scope == "sample" and cfg.recipe in ("eos_pad", "ar"):
        raise ValueError("attention_scope='sample' is for the packed diffusion recipes (pretrain, dllm_var, "
                         f"eos_random), not {cfg.recipe!r}")
    if cfg.recipe == "eos_pad":
        return dict(layout="pad", use_prompts=True, fill_id=EOS_ID if cfg.pad_token == "eos" else PAD_ID,
                    overlong=cfg.overlong)
    return dict(layout="pack", use_prompts=cfg.recipe in ("dllm_var", "eos_random"), fill_id=PAD_ID)


def default_attention(recipe: str) -> str:
    return "causal" if recipe == "ar" else "bidirectional"


@dataclass
class Example:
    inputs: torch.Tensor  # (B, T) what the model sees: tokens with some replaced by [MASK]
    targets: torch.Tensor  # (B, T) what it must predict
    loss_mask: torch.Tensor  # (B, T) bool: the positions in the loss
    weights: torch.Tensor  # (B, T) float: per-position weight (1/t for the ELBO)
    normalizer: torch.Tensor  # scalar: the loss is sum(weight * CE) / normalizer
    attn_mask: torch.Tensor | None = None  # (B, 1, T, T) bool, True = may attend; None = the model's own mask


def sample_attention(cfg: TrainConfig, tokens):
    """attention_scope="sample": (B, 1, T, T) True where query and key belong to the same sample, else None.
    A sample ends with its EOS, so sample ids are the number of EOS tokens before each position."""
    if cfg.attention_scope == "row":
        return None
    ends = tokens == EOS_ID
    sample = ends.long().cumsum(dim=1) - ends.long()  # (B, T): the EOS belongs to the sample it ends
    return (sample[:, :, None] == sample[:, None, :]).unsqueeze(1)  # (B, 1, T, T)


def sample_t(batch_size, t_min, t_max, generator, device):
    """Noise level per row, uniform in [t_min, t_max]."""
    return t_min + (t_max - t_min) * torch.rand(batch_size, generator=generator, device=device)


def choose_random(region, k, generator):
    """Picks k[b] positions uniformly at random among the True positions of region[b] (B, T) -> bool (B, T)."""
    scores = torch.rand(region.shape, generator=generator, device=region.device).masked_fill(~region, 2.0)
    rank = scores.argsort(dim=1).argsort(dim=1)  # 0 for the lowest score
    return rank < k[:, None]


def pad_share(cfg: TrainConfig, step: int) -> float:
    """eos_pad's share of masked tokens drawn from the pad region at an optimizer step (annealed from 0).
    A function of the optimizer step alone, so every data worker and rank agrees on it."""
    if cfg.pad_anneal_steps <= 0:
        return cfg.pad_masked_perc
    return cfg.pad_masked_perc * min(1.0, step / cfg.pad_anneal_steps)


def _mask_eos_pad(cfg, batch, t, step, generator):
    maskable = ~batch.is_prompt
    if cfg.pad_masked_perc < 0:
        return maskable & (torch.rand(t.shape + batch.tokens.shape[1:], generator=generator, device=t.device)
                           < t[:, None])
    # How many to mask in each row, then how many of those come from the pads.
    pads, text = maskable & batch.is_pad, maskable & ~batch.is_pad
    n_mask = torch.round(t * maskable.sum(1)).long()
    n_pad = torch.minimum(torch.round(pad_share(cfg, step) * n_mask).long(), pads.sum(1))
    n_text = torch.minimum(n_mask - n_pad, text.sum(1))
    return (pads & choose_random(pads, n_pad, generator)) | (text & choose_random(text, n_text, generator))


def diffusion_masks(cfg: TrainConfig, batch: Batch, t, step: int, generator, force_eos: bool):
    """(maskable, masked) (B, T) bools for a diffusion recipe at noise levels t (B,)."""
    tokens = batch.tokens
    if cfg.recipe == "eos_pad":
        return ~batch.is_prompt, _mask_eos_pad(cfg, batch, t, step, generator)
    maskable = ~batch.is_pad if cfg.recipe == "pretrain" else ~batch.is_prompt & ~batch.is_pad
    masked = maskable & (torch.rand(tokens.shape, generator=generator, device=tokens.device) < t[:, None])
    if force_eos and cfg.recipe == "dllm_var":
        masked |= maskable & (tokens == EOS_ID)  # fixed EOS masking: the model always has to place EOS
    return maskable, masked


def make_example(cfg: TrainConfig, batch: Batch, step: int, generator, t=None) -> Example:
    """One training example for the configured recipe. t (B,) overrides the sampled noise levels."""
    tokens = batch.tokens
    if cfg.recipe == "ar":
        targets = torch.roll(tokens, -1, dims=1)  # next token; the last column has none
        loss_mask = ~torch.roll(batch.is_pad, -1, dims=1)
        loss_mask[:, -1] = False
        return Example(tokens, targets, loss_mask, torch.ones_like(tokens, dtype=torch.float32),
                       loss_mask.sum())
    if t is None:
        t = sample_t(tokens.shape[0], cfg.t_min, cfg.t_max, generator, tokens.device)
    maskable, masked = diffusion_masks(cfg, batch, t, step, generator, force_eos=True)
    inputs = torch.where(masked, MASK_ID, tokens)
    if cfg.loss_weighting == "mean":
        weights, normalizer = torch.ones_like(t)[:, None].expand_as(tokens), masked.sum()
    elif cfg.loss_weighting == "elbo":
        weights, normalizer = (1.0 / t)[:, None].expand_as(tokens), maskable.sum()
    else:
        raise ValueError(f"loss_weighting must be 'elbo' or 'mean', got {cfg.loss_weighting!r}")
    return Example(inputs, tokens, masked, weights, normalizer, sample_attention(cfg, tokens))


def nll_bound_example(cfg: TrainConfig, batch: Batch, t, generator) -> Example:
    """The validation NLL bound of the text tokens (response + its EOS; every real token when pretraining).

    Masks are drawn at the given t with no forced EOS, every masked text token weighted by 1/t, the sum divided
    by the number of text tokens: an estimate of the ELBO in nats per token. Prompts are given, pads are masked
    as in training but not scored, so models of every recipe are scored on the same tokens. For the ar recipe
    this is the exact next-token NLL of the same tokens."""
    if cfg.recipe == "ar":
        return make_example(cfg, batch, 0, generator)
    maskable, masked = diffusion_masks(cfg, batch, t, 0, generator, force_eos=False)
    text = ~batch.is_prompt & ~batch.is_pad
    inputs = torch.where(masked, MASK_ID, batch.tokens)
    return Example(inputs, batch.tokens, masked & text, (1.0 / t)[:, None].expand_as(batch.tokens), text.sum(),
                   sample_attention(cfg, batch.tokens))


def compute_loss(model, ex: Example):
    """sum over loss positions of weight * cross-entropy, / normalizer. Logits only where they are scored."""
    logits = model(ex.inputs, attn_mask=ex.attn_mask, logits_at=ex.loss_mask)  # (N, V)
    ce = F.cross_entropy(logits.float(), ex.targets[ex.loss_mask], reduction="none")  # (N,)
    return (ce * ex.weights[ex.loss_mask]).sum() / ex.normalizer.clamp(min=1)
