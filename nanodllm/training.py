"""The pieces of training that train.py and bench.py share: data, model, optimizer, schedule, evaluation."""

import dataclasses
import functools
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from nanodllm import recipes
from nanodllm.config import ConfigError, TrainConfig
from nanodllm.data import PackedLoader
from nanodllm.model import ModelConfig, Transformer, preset
from nanodllm.prepare import PreparedSplit, ensure_prepared, load_split

MODEL_OVERRIDES = ("n_layer", "n_head", "d_model", "mlp_hidden", "attn_block_size", "output_shift")


def data_dir(cfg: TrainConfig) -> Path:
    return Path(cfg.data_dir or f"data/{cfg.dataset}")


def prepare_data(cfg: TrainConfig) -> Path:
    """Makes sure the prepared token files exist (preparing them on first use) and returns their directory."""
    if cfg.dataset == "lengthtask":
        from nanodllm.tasks import ensure_task_data  # the synthetic length suite, generated from a seed
        return ensure_task_data(data_dir(cfg), seed=cfg.data_seed)  # not cfg.seed: the same held-out prompts
    return ensure_prepared(cfg.dataset, data_dir(cfg), source=cfg.data_source or None,
                           prompt_max_tokens=cfg.prompt_max_tokens)


def make_loader(cfg: TrainConfig, split: PreparedSplit, *, train: bool, rank=0, world_size=1) -> PackedLoader:
    """Training: endless, shuffled, this rank's share. Evaluation: one ordered pass, the same for every run."""
    return PackedLoader(split, cfg.batch_size, cfg.block_size, seed=cfg.seed, shuffle=train, wrap=train,
                        rank=rank, world_size=world_size, **recipes.loader_options(cfg))


def model_config(cfg: TrainConfig) -> ModelConfig:
    """The model a training config asks for: its preset with the config's overrides (a ValueError if they do not
    make a model, e.g. an unknown attention)."""
    overrides = {k: getattr(cfg, k) for k in MODEL_OVERRIDES if getattr(cfg, k)}
    if cfg.n_head and "n_kv_head" not in overrides:
        overrides["n_kv_head"] = cfg.n_head
    attention = cfg.attention or recipes.default_attention(cfg.recipe)
    # The model's context is the length it is trained on: a sampler's canvas past it would ask for positions the
    # model never saw. The checkpoint records it, and every sampler checks against it.
    return preset(cfg.model, attention=attention, max_seq_len=cfg.block_size, **overrides)


def build_model(cfg: TrainConfig) -> Transformer:
    return Transformer(model_config(cfg))


LOSS_GATHERS = ("mask", "indices", "dense")


def loss_function(cfg: TrainConfig):
    """recipes.compute_loss, compiled when cfg.compile (with cfg.compile_mode). The whole loss is one graph: the
    model, the gather of the masked positions and the cross-entropy, so the (masked tokens x vocabulary) logits
    never take a round trip through memory in float32. The number of masked positions changes every step; letting
    the compiler treat it as a symbolic size keeps that one graph instead of a recompile per step.

    cfg.loss_gather says how the masked positions are found; all three give the same loss (tests/test_training.py):
      mask     the (B, T) bool mask indexes inside the graph: its output size depends on the data, so the graph
               holds a host-device sync, mid-forward;
      indices  the mask's indices are computed just before the graph (the sync moves there), and the graph sees
               an ordinary tensor of symbolic length;
      dense    no gather at all: the output head at every position, the cross-entropy weighted by the mask. Fixed
               shapes and no sync, for the head's FLOPs at the unmasked positions too.

    Except under fp8: torchao's float8 tensors with that data-dependent size did not finish warming up in 170 s
    (torchao 0.18, torch 2.11, 1B preset). Without the symbolic size the compiler splits the loss at the masked
    gather: the transformer is one graph, the gather runs eagerly, the output head and cross-entropy (which stay
    in bf16) are a second graph; that warms up in about two minutes on the 1B preset."""
    if cfg.loss_gather not in LOSS_GATHERS:
        raise ConfigError(f"loss_gather must be one of {LOSS_GATHERS}, got {cfg.loss_gather!r}")
    loss = functools.partial(dense_loss if cfg.loss_gather == "dense" else recipes.compute_loss,
                             certainty_weight=cfg.certainty_weight, certainty_temperature=cfg.certainty_temperature)
    if cfg.compile:
        torch._dynamo.config.capture_dynamic_output_shape_ops = not cfg.fp8
        loss = torch.compile(loss, mode=None if cfg.compile_mode == "default" else cfg.compile_mode)
    if cfg.loss_gather != "indices":
        return loss
    return lambda model, ex: loss(model, dataclasses.replace(ex, loss_mask=ex.loss_mask.nonzero(as_tuple=True)))


def dense_loss(model, ex: recipes.Example, certainty_weight: float = 0.0, certainty_temperature: float = 0.5):
    """recipes.compute_loss with the output head at every position: the cross-entropy of every position, weighted
    by the loss mask, so no shape depends on the data."""
    logits = model(ex.inputs, positions=ex.positions, attn_mask=ex.attn_mask).flatten(0, 1)  # (B * T, V)
    targets = ex.targets.flatten()  # (B * T,)
    ce = F.cross_entropy(logits.float(), targets, reduction="none")  # (B * T,)
    weights = torch.where(ex.loss_mask, ex.weights, 0.0).flatten()  # (B * T,)
    loss = (ce * weights).sum() / ex.normalizer.clamp(min=1)
    if certainty_weight:
        loss = loss + certainty_weight * recipes.certainty_forcing(logits, targets, certainty_temperature,
                                                                   counted=ex.loss_mask.flatten())
    return loss


def configure_optimizer(model, cfg: TrainConfig, device: torch.device):
    """AdamW; weight decay on matrices (and embeddings), none on norm gains. Fused kernel on CUDA."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [dict(params=[p for p in params if p.dim() >= 2], weight_decay=cfg.weight_decay),
              dict(params=[p for p in params if p.dim() < 2], weight_decay=0.0)]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2),
                             fused=device.type == "cuda")


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine decay to min_lr at lr_decay_iters, then flat."""
    decay_iters = cfg.lr_decay_iters or cfg.max_iters
    if step < cfg.warmup_iters:
        return cfg.learning_rate * (step + 1) / cfg.warmup_iters
    if step >= decay_iters:
        return cfg.min_lr
    progress = (step - cfg.warmup_iters) / max(1, decay_iters - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.learning_rate - cfg.min_lr)


EVAL_NOISE_LEVELS = 64  # the validation t grid: midpoints of 64 equal strata of (0, 1)


def stratified_t(rows) -> torch.Tensor:
    """The noise level of each validation row, a function of its index in the validation pass (rows: (B,) int)
    alone, so the bound does not depend on the batch size. Rows visit the midpoints (k + 0.5) / 64 in
    bit-reversed order of k (0.0078, 0.5078, 0.2578, 0.7578, ...): every stretch of 2^m rows covers (0, 1)
    evenly, and t is never 0 or 1 (at t = 0 the 1/t weight is infinite)."""
    k = rows % EVAL_NOISE_LEVELS
    bits = EVAL_NOISE_LEVELS.bit_length() - 1
    reversed_k = sum(((k >> i) & 1) << (bits - 1 - i) for i in range(bits))
    return (reversed_k.double() + 0.5) / EVAL_NOISE_LEVELS


def row_noise(rows, seq_len: int) -> torch.Tensor:
    """(B, seq_len) uniform noise that decides which tokens of each validation row are masked: drawn on the CPU
    from a seed per row, so a row gets the same masks whatever batch it is in and whatever the device."""
    return torch.stack([torch.rand(seq_len, generator=torch.Generator().manual_seed(1234 + int(r))) for r in rows])


@torch.no_grad()
def evaluate(model, cfg: TrainConfig, split: PreparedSplit, device, autocast_ctx, n_batches=None, rank=0,
             world_size=1) -> dict:
    """Validation: the recipe's own loss and the NLL bound in nats/token with its perplexity, at masks fixed by
    each row's index in the pass (stratified_t, row_noise): the same weights give the same numbers at every
    evaluation and batch size (when the batches cover the same rows). Sums are reduced over ranks, each of
    which scores its own share of the split."""
    model.eval()
    n_batches = n_batches or cfg.eval_iters
    loader = PackedLoader(split, cfg.batch_size, cfg.block_size, seed=cfg.seed, shuffle=False, wrap=False,
                          rank=rank, world_size=world_size, **recipes.loader_options(cfg))
    totals = torch.zeros(4, device=device, dtype=torch.float64)  # loss sum, loss count, nll sum, nll count
    first_row = 0
    for _, batch in zip(range(n_batches), loader):
        B, T = batch.tokens.shape
        rows = torch.arange(first_row, first_row + B)
        first_row += B
        batch, t, noise = batch.to(device), stratified_t(rows).float().to(device), row_noise(rows, T).to(device)
        own = recipes.make_example(cfg, batch, None, None, t=t, noise=noise)
        for j, examples in enumerate(([own], recipes.nll_bound_examples(cfg, batch, t, noise))):
            for ex in examples:
                with autocast_ctx:
                    total = recipes.loss_sum(model, ex)
                totals[2 * j] += total.double()
                totals[2 * j + 1] += ex.normalizer
    if world_size > 1:
        torch.distributed.all_reduce(totals)
    model.train()
    val_loss, val_nll = (totals[0] / totals[1]).item(), (totals[2] / totals[3]).item()
    return dict(val_loss=val_loss, val_nll=val_nll, val_ppl=math.exp(min(val_nll, 50.0)),
                val_tokens=int(totals[3].item()))


def load_splits(cfg: TrainConfig):
    directory = prepare_data(cfg)
    return load_split(directory, "train"), load_split(directory, "val")
