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
              are targets too. Optionally (pad_masked_perc >= 0) the text is masked at rate t and pads are
              added to the masked tokens until they are a fixed share of them, that share annealed linearly
              from 0 over optimizer steps.
  ar          the autoregressive baseline: a causal model, next-token loss on the same packed stream.
  block_diffusion  BD3-LM's layout with dllm_var's masking: the row is cut into blocks of attn_block_size, and
              the model is trained on [noisy row ; clean row] (two_stream): a noisy block attends to itself and
              to the CLEAN blocks before it, exactly what the block sampler shows it when it decodes that block
              with a KV cache of the finished ones. Nothing after the block is visible, so the end of what the
              model sees says nothing about where the answer ends; with stream packing a block holding an EOS
              goes on with the next sample, masked (always_masked), as the sampler sees the rest of its block.
              That fixed masking is itself a cue: a block that holds an EOS has a masked run from the EOS to its
              end whatever t, a block without one is masked token by token at rate t, so a fully masked block
              (every block when the sampler starts it) looks like "the EOS is near its start" (docs/study.md).
  block_pad   the same two-stream layout with no masking that depends on the content: each sample is filled
              with EOS up to the end of its block (LLaDA's SFT padding, cut short at the sampler's block;
              data.py's `align`), so samples start at block boundaries as prompts do when decoded, and the rest
              of an EOS's block holds what a sampler that placed the EOS would write. Response, EOS and fill are
              all masked at rate t, so where the masks fall says nothing about where the answer ends; the fill
              is scored in training (the model must write it) and not in the validation bound.

attention_scope="sample" is an ablation of packing, not a recipe: each token attends only to its own sample
(prompt + response + EOS), where dLLM-Var lets it see the whole row. Under "row", the token after every EOS is
the next sample's prompt, never masked: a model can learn "EOS comes right before a prompt", a cue that is
absent when it generates. "sample" takes that cue away.

packing="best_fit" is another ablation of packing (nanodllm/data.py): samples are kept whole, so no response
and no EOS is ever trained without the prompt that fixes its length, which "stream" packing (dLLM-Var's) does
to every sample that straddles two rows. It brings a cue of its own: rows then often end exactly at an EOS, and
a row-attention model learns to put EOS at the end of what it sees (docs/study.md).

certainty_weight > 0 adds a term to any recipe's training loss, not a layout: dParallel's certainty forcing
(certainty_forcing below), meant for a model fine-tuned on its own outputs so that it becomes sure of more
positions per pass (docs/speed.md).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nanodllm.config import TrainConfig
from nanodllm.data import PACKINGS, Batch
from nanodllm.model import attention_mask
from nanodllm.tokenizer import EOS_ID, MASK_ID, PAD_ID

RECIPES = ("pretrain", "dllm_var", "eos_pad", "eos_random", "ar", "block_diffusion", "block_pad")
FIXED_EOS = ("dllm_var", "block_diffusion")  # the recipes that always mask EOS
BLOCK_RECIPES = ("block_diffusion", "block_pad")  # block-causal, trained on two streams


def loader_options(cfg: TrainConfig) -> dict:
    """How the loader must lay out rows for a recipe."""
    if cfg.recipe not in RECIPES:
        raise ValueError(f"unknown recipe {cfg.recipe!r}; choose one of {RECIPES}")
    if cfg.pad_token not in ("eos", "pad"):
        raise ValueError(f"pad_token must be 'eos' or 'pad', got {cfg.pad_token!r}")
    if cfg.attention_scope not in ("row", "sample"):
        raise ValueError(f"attention_scope must be 'row' or 'sample', got {cfg.attention_scope!r}")
    if cfg.attention_scope == "sample" and cfg.recipe in ("eos_pad", "ar", *BLOCK_RECIPES):
        raise ValueError("attention_scope='sample' is for the packed diffusion recipes (pretrain, dllm_var, "
                         f"eos_random), not {cfg.recipe!r}")
    if not 0 < cfg.t_min <= cfg.t_max <= 1:
        raise ValueError(f"noise levels need 0 < t_min <= t_max <= 1, got t_min={cfg.t_min}, t_max={cfg.t_max}")
    if cfg.certainty_weight < 0 or cfg.certainty_temperature <= 0:
        raise ValueError(f"certainty forcing needs certainty_weight >= 0 and certainty_temperature > 0, got "
                         f"{cfg.certainty_weight} and {cfg.certainty_temperature}")
    if cfg.pad_masked_perc >= 1:
        raise ValueError(f"pad_masked_perc is a share of the masked tokens, below 1; got {cfg.pad_masked_perc}")
    if cfg.packing not in PACKINGS:
        raise ValueError(f"packing must be one of {PACKINGS}, got {cfg.packing!r}")
    if cfg.recipe in BLOCK_RECIPES and cfg.block_size % cfg.attn_block_size:
        raise ValueError(f"{cfg.recipe} needs rows made of whole blocks: block_size {cfg.block_size} is not a "
                         f"multiple of attn_block_size {cfg.attn_block_size}")
    if cfg.recipe == "eos_pad":
        return dict(layout="pad", use_prompts=True, fill_id=EOS_ID if cfg.pad_token == "eos" else PAD_ID,
                    overlong=cfg.overlong)
    prompts = cfg.recipe in ("dllm_var", "eos_random", *BLOCK_RECIPES)
    return dict(layout="pack", packing=cfg.packing, use_prompts=prompts, fill_id=PAD_ID,
                overlong=cfg.overlong, align=cfg.attn_block_size if cfg.recipe == "block_pad" else 1)


def default_attention(recipe: str) -> str:
    return "causal" if recipe == "ar" else "block_causal" if recipe in BLOCK_RECIPES else "bidirectional"


@dataclass
class Example:
    inputs: torch.Tensor  # (B, T) what the model sees: tokens with some replaced by [MASK]
    targets: torch.Tensor  # (B, T) what it must predict
    loss_mask: torch.Tensor  # (B, T) bool: the positions in the loss
    weights: torch.Tensor  # (B, T) float: per-position weight (1/t for the ELBO)
    normalizer: torch.Tensor  # scalar: the loss is sum(weight * CE) / normalizer
    attn_mask: torch.Tensor | None = None  # (B, 1, T, T) bool, True = may attend; None = the model's own mask
    positions: torch.Tensor | None = None  # (T,) RoPE positions; None = 0..T-1


def sample_attention(cfg: TrainConfig, tokens):
    """attention_scope="sample": (B, 1, T, T) True where query and key belong to the same sample, else None.
    A sample ends with its EOS, so sample ids are the number of EOS tokens before each position."""
    if cfg.attention_scope == "row":
        return None
    ends = tokens == EOS_ID
    sample = ends.long().cumsum(dim=1) - ends.long()  # (B, T): the EOS belongs to the sample it ends
    columns = torch.arange(tokens.shape[1], device=tokens.device)
    return attention_mask(columns, columns, samples=sample)  # (B, 1, T, T)


def after_eos_in_block(tokens, block: int):
    """(B, T) bool: positions that come after an EOS of the same block. Under block_diffusion they belong to the
    next sample, and a sampler that finds that EOS in its block would be writing them: they are maskable even
    when they are the next sample's prompt."""
    B, T = tokens.shape
    if T % block:
        raise ValueError(f"block_diffusion needs rows made of whole blocks: block_size {T} is not a multiple of "
                         f"attn_block_size {block}")
    eos = (tokens == EOS_ID).long().view(B, T // block, block)
    seen = eos.cumsum(dim=-1) - eos  # EOS strictly before each position, within its block
    return (seen > 0).view(B, T)


def block_fill(tokens):
    """(B, T) bool: block_pad's fill, the EOS tokens that follow an EOS (the sample's own EOS is the first)."""
    eos = tokens == EOS_ID
    return eos & F.pad(eos[:, :-1], (1, 0), value=False)


def two_stream(ex: "Example", clean, block: int) -> "Example":
    """BD3-LM's training row: the noisy row (ex.inputs) and the clean row side by side, 2T tokens sharing the
    positions 0..T-1, under one mask: a noisy block attends to itself and to the clean blocks before it; a clean
    block attends to the clean blocks up to its own (block-causal). The loss is on the noisy half only.
    (model.attention_mask's rules cannot say "its own noisy block but earlier clean ones", hence this mask.)"""
    B, T = clean.shape
    b = torch.arange(T, device=clean.device) // block  # (T,) the block of each position
    own, earlier = b[None, :] == b[:, None], b[None, :] < b[:, None]  # (T, T): key block vs query block
    noisy_queries = torch.cat([own, earlier], dim=1)  # (T, 2T)
    clean_queries = torch.cat([torch.zeros_like(own), own | earlier], dim=1)  # (T, 2T)
    mask = torch.cat([noisy_queries, clean_queries], dim=0)[None, None]  # (1, 1, 2T, 2T)
    none = torch.zeros_like(ex.loss_mask)
    return Example(torch.cat([ex.inputs, clean], dim=1), torch.cat([ex.targets, clean], dim=1),
                   torch.cat([ex.loss_mask, none], dim=1), torch.cat([ex.weights, ex.weights], dim=1),
                   ex.normalizer, mask, torch.cat([torch.arange(T, device=clean.device)] * 2))


def sample_t(batch_size, t_min, t_max, generator, device):
    """Noise level per row, uniform in [t_min, t_max]."""
    return t_min + (t_max - t_min) * torch.rand(batch_size, generator=generator, device=device)


def lowest_noise(region, noise, k):
    """bool (B, T): the k[b] positions of region[b] (B, T) whose noise (B, T) is lowest. With uniform noise this
    picks k positions uniformly at random; with fixed noise (validation) it picks the same ones every time."""
    rank = noise.masked_fill(~region, 2.0).argsort(dim=1).argsort(dim=1)  # 0 for the lowest noise
    return region & (rank < k[:, None])


def pad_share(cfg: TrainConfig, step: int | None) -> float:
    """eos_pad's share of masked tokens drawn from the pad region at an optimizer step (annealed from 0); the
    full share when step is None (validation, so that its bound does not move as the share anneals).
    A function of the optimizer step alone, so every data worker and rank agrees on it."""
    if cfg.pad_anneal_steps <= 0 or step is None:
        return cfg.pad_masked_perc
    return cfg.pad_masked_perc * min(1.0, step / cfg.pad_anneal_steps)


def _mask_eos_pad_counts(cfg, batch, t, step, noise):
    """The DiffuGPT project's variant: exactly ceil(t * text) text tokens masked (text = response + EOS), plus
    enough pad tokens that they make up pad_share of all masked tokens. So the text is masked at rate t whatever
    the share, and the pads come on top. -> (masked, inverse rate (B,): text / masked text)."""
    text, pads = ~batch.is_prompt & ~batch.is_pad, ~batch.is_prompt & batch.is_pad
    n_text = torch.ceil(t * text.sum(1)).long()  # >= 1 for t > 0: never a row with nothing to score
    share = pad_share(cfg, step)
    n_pad = torch.minimum(torch.round(share / (1 - share) * n_text).long(), pads.sum(1))
    masked = lowest_noise(text, noise, n_text) | lowest_noise(pads, noise, n_pad)
    return masked, text.sum(1) / n_text.clamp(min=1)


def diffusion_masks(cfg: TrainConfig, batch: Batch, t, step, noise, force_eos: bool):
    """(maskable, masked, inverse_rate) for a diffusion recipe at noise levels t (B,), given uniform noise (B, T).

    A token is masked when its noise is below t (each one independently with probability t), so the same noise
    and t always give the same masks. inverse_rate (B,) is what a masked token weighs in the ELBO: 1/t for this
    independent masking; text / k where exactly k of a row's text tokens are masked (LLaDA's likelihood
    estimator; the eos_pad variant). force_eos: fixed EOS masking (dllm_var), every EOS masked whatever t."""
    tokens = batch.tokens
    if cfg.recipe == "eos_pad":
        maskable = ~batch.is_prompt
        if cfg.pad_masked_perc >= 0:
            return maskable, *_mask_eos_pad_counts(cfg, batch, t, step, noise)
    elif cfg.recipe == "pretrain":
        maskable = ~batch.is_pad
    elif cfg.recipe == "block_diffusion":
        maskable = ~batch.is_pad & (~batch.is_prompt | after_eos_in_block(tokens, cfg.attn_block_size))
    else:
        maskable = ~batch.is_prompt & ~batch.is_pad
    masked = maskable & (noise < t[:, None])
    if force_eos:
        masked |= always_masked(cfg, batch) & maskable
    return maskable, masked, 1.0 / t


def always_masked(cfg: TrainConfig, batch: Batch):
    """(B, T) bool: what fixed EOS masking hides whatever t. dllm_var: every EOS, so the model always has to place
    it. block_diffusion: also the rest of the EOS's block, the state a sampler is in before it commits the EOS
    (masks up to the block's end); shown at rate 1 - t, the next sample's first tokens would tell the model
    where the EOS goes, which no sampler ever sees."""
    eos = batch.tokens == EOS_ID
    if cfg.recipe == "block_diffusion":
        return eos | after_eos_in_block(batch.tokens, cfg.attn_block_size)
    return eos if cfg.recipe in FIXED_EOS else torch.zeros_like(eos)


def make_example(cfg: TrainConfig, batch: Batch, step: int | None, generator, t=None, noise=None) -> Example:
    """One training example for the configured recipe. t (B,) and noise (B, T) override the random draws
    (validation fixes both, see training.evaluate)."""
    tokens = batch.tokens
    if cfg.recipe == "ar":
        targets = torch.roll(tokens, -1, dims=1)  # next token; the last column has none
        loss_mask = ~torch.roll(batch.is_pad, -1, dims=1)
        loss_mask[:, -1] = False
        return Example(tokens, targets, loss_mask, torch.ones_like(tokens, dtype=torch.float32),
                       loss_mask.sum())
    if t is None:
        t = sample_t(tokens.shape[0], cfg.t_min, cfg.t_max, generator, tokens.device)
    if noise is None:
        noise = torch.rand(tokens.shape, generator=generator, device=tokens.device)
    maskable, masked, inverse_rate = diffusion_masks(cfg, batch, t, step, noise, force_eos=True)
    inputs = torch.where(masked, MASK_ID, tokens)
    if cfg.loss_weighting == "mean":
        weights, normalizer = torch.ones_like(t)[:, None].expand_as(tokens), masked.sum()
    elif cfg.loss_weighting == "elbo":
        weights, normalizer = inverse_rate[:, None].expand_as(tokens), maskable.sum()
    else:
        raise ValueError(f"loss_weighting must be 'elbo' or 'mean', got {cfg.loss_weighting!r}")
    return _layout(cfg, Example(inputs, tokens, masked, weights, normalizer, sample_attention(cfg, tokens)), tokens)


def _layout(cfg: TrainConfig, ex: Example, tokens) -> Example:
    """The example as the model is fed: two streams under the block recipes, else as it is."""
    return two_stream(ex, tokens, cfg.attn_block_size) if cfg.recipe in BLOCK_RECIPES else ex


def nll_bound_examples(cfg: TrainConfig, batch: Batch, t, noise) -> list[Example]:
    """The validation NLL bound of the text tokens (response + its EOS; every real token when pretraining), as
    examples whose weighted losses add up to it: sum(loss_sum) / the first example's normalizer (the number of
    text tokens) is an estimate of the ELBO in nats per token.

    Each text token is masked as in training at the given t and noise, weighted by the inverse masking rate.
    Prompts are given, pads are masked as in training but not scored, so models of every recipe are scored on
    the same tokens. For the ar recipe this is the exact next-token NLL of the same tokens.

    dllm_var never sees an EOS in its input in training, so it is validated that way too: its inputs have every
    EOS masked. That is masked diffusion with a schedule of its own for EOS (masked at once, revealed last), and
    the ELBO of such a schedule has two parts: every other text token at noise t with the EOS masked, and the
    EOS itself given everything else (the last step of decoding), a second pass with weight 1. block_diffusion
    likewise, with what always_masked hides along with the EOS. block_pad's fill is masked as in training but
    not scored: it is not part of the text."""
    if cfg.recipe == "ar":
        return [make_example(cfg, batch, None, None)]
    text = ~batch.is_prompt & ~batch.is_pad
    if cfg.recipe == "block_pad":
        text &= ~block_fill(batch.tokens)
    force_eos = cfg.recipe in FIXED_EOS
    maskable, masked, inverse_rate = diffusion_masks(cfg, batch, t, None, noise, force_eos=force_eos)
    attention = sample_attention(cfg, batch.tokens)
    weights = inverse_rate[:, None].expand_as(batch.tokens)
    scored = masked & text
    examples = []
    if force_eos:
        hidden = always_masked(cfg, batch) & maskable
        scored &= ~hidden
        examples.append(Example(torch.where(hidden, MASK_ID, batch.tokens), batch.tokens, hidden & text,
                                torch.ones_like(weights), torch.zeros_like(text.sum()), attention))
    inputs = torch.where(masked, MASK_ID, batch.tokens)
    examples = [Example(inputs, batch.tokens, scored, weights, text.sum(), attention)] + examples
    return [_layout(cfg, ex, batch.tokens) for ex in examples]


def scored_logits(model, ex: Example):
    """(N, V) the logits at the N loss positions only: the output head skips the rest."""
    return model(ex.inputs, positions=ex.positions, attn_mask=ex.attn_mask, logits_at=ex.loss_mask)


def loss_sum(model, ex: Example, logits=None):
    """sum over loss positions of weight * cross-entropy (logits: scored_logits, if already computed)."""
    logits = scored_logits(model, ex) if logits is None else logits  # (N, V)
    ce = F.cross_entropy(logits.float(), ex.targets[ex.loss_mask], reduction="none")  # (N,)
    return (ce * ex.weights[ex.loss_mask]).sum()


def certainty_forcing(logits, targets, temperature: float, counted=None):
    """dParallel's certainty forcing (Chen et al. 2025): the mean entropy of softmax(logits / temperature) over
    the positions where the model already predicts the target (its argmax), to be minimised beside the
    cross-entropy. counted (N,) bool: the positions that may count (default all).

    Why: a threshold sampler commits a position once the model is sure of it, and a model trained on its own
    outputs (data/distill.py with a diffusion teacher) is often right long before it is sure. Lowering the entropy
    where it is right makes it sure sooner, of several positions in one pass; where it is wrong only the
    cross-entropy acts, since forcing certainty there would make it sure of a mistake. The temperature below 1
    sharpens the distribution the entropy is taken of (dParallel uses 0.5)."""
    logits = logits.float()
    right = logits.argmax(dim=-1) == targets  # (N,)
    if counted is not None:
        right &= counted
    logp = F.log_softmax(logits / temperature, dim=-1)  # (N, V)
    entropy = -(logp.exp() * logp).sum(dim=-1)  # (N,)
    return torch.where(right, entropy, 0.0).sum() / right.sum().clamp(min=1)


def compute_loss(model, ex: Example, certainty_weight: float = 0.0, certainty_temperature: float = 0.5):
    """The training loss: loss_sum / normalizer, plus certainty_weight x certainty_forcing when it is on."""
    logits = scored_logits(model, ex)  # (N, V)
    loss = loss_sum(model, ex, logits) / ex.normalizer.clamp(min=1)
    if certainty_weight:
        loss = loss + certainty_weight * certainty_forcing(logits, ex.targets[ex.loss_mask], certainty_temperature)
    return loss
