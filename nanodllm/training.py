"""The pieces of training that train.py and bench.py share: data, model, optimizer, schedule, evaluation."""

import math
from pathlib import Path

import torch

from nanodllm import recipes
from nanodllm.config import TrainConfig
from nanodllm.data import PackedLoader
from nanodllm.model import Transformer, preset
from nanodllm.prepare import PreparedSplit, ensure_prepared, load_split

MODEL_OVERRIDES = ("n_layer", "n_head", "d_model", "mlp_hidden")


def data_dir(cfg: TrainConfig) -> Path:
    return Path(cfg.data_dir or f"data/{cfg.dataset}")


def prepare_data(cfg: TrainConfig) -> Path:
    """Makes sure the prepared token files exist (preparing them on first use) and returns their directory."""
    if cfg.dataset == "lengthtask":
        from nanodllm.tasks import ensure_task_data  # the synthetic length suite, generated from a seed
        return ensure_task_data(data_dir(cfg), seed=cfg.seed)
    return ensure_prepared(cfg.dataset, data_dir(cfg), source=cfg.data_source or None,
                           prompt_max_tokens=cfg.prompt_max_tokens)


def make_loader(cfg: TrainConfig, split: PreparedSplit, *, train: bool, rank=0, world_size=1) -> PackedLoader:
    """Training: endless, shuffled, this rank's share. Evaluation: one ordered pass, the same for every run."""
    return PackedLoader(split, cfg.batch_size, cfg.block_size, seed=cfg.seed, shuffle=train, wrap=train,
                        rank=rank, world_size=world_size, **recipes.loader_options(cfg))


def build_model(cfg: TrainConfig) -> Transformer:
    overrides = {k: getattr(cfg, k) for k in MODEL_OVERRIDES if getattr(cfg, k)}
    if cfg.n_head and "n_kv_head" not in overrides:
        overrides["n_kv_head"] = cfg.n_head
    attention = cfg.attention or recipes.default_attention(cfg.recipe)
    model_cfg = preset(cfg.model, attention=attention, **overrides)
    if cfg.block_size > model_cfg.max_seq_len:
        model_cfg.max_seq_len = cfg.block_size
    return Transformer(model_cfg)


def loss_function(cfg: TrainConfig):
    """recipes.compute_loss, compiled when cfg.compile. The whole loss is one graph: the model, the gather of
    the masked positions and the cross-entropy, so the (masked tokens x vocabulary) logits never take a round
    trip through memory in float32. The number of masked positions changes every step; letting the compiler
    treat it as a symbolic size keeps that one graph instead of a recompile per step.

    Except under fp8: torchao's float8 tensors with that data-dependent size did not finish warming up in 170 s
    (torchao 0.18, torch 2.11, 1B preset). Without the symbolic size the compiler splits the loss at the masked
    gather: the transformer is one graph, the gather runs eagerly, the output head and cross-entropy (which stay
    in bf16) are a second graph; that warms up in about two minutes on the 1B preset."""
    if not cfg.compile:
        return recipes.compute_loss
    torch._dynamo.config.capture_dynamic_output_shape_ops = not cfg.fp8
    return torch.compile(recipes.compute_loss)


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


def stratified_t(batch_size: int, batch_index: int, n_batches: int, device) -> torch.Tensor:
    """Fixed noise levels for evaluation: each batch covers (0, 1) evenly, shifted a little per batch, so the
    NLL bound is a deterministic quadrature over t, comparable between runs and checkpoints."""
    b = torch.arange(batch_size, device=device, dtype=torch.float32)
    return ((b + 0.5) / batch_size + batch_index / (n_batches * batch_size)) % 1.0


@torch.no_grad()
def evaluate(model, cfg: TrainConfig, split: PreparedSplit, device, autocast_ctx, n_batches=None, rank=0,
             world_size=1) -> dict:
    """Validation: the recipe's own loss (fixed masks) and the NLL bound in nats/token with its perplexity.
    Sums are reduced over ranks, each of which scores its own share of the split."""
    model.eval()
    n_batches = n_batches or cfg.eval_iters
    loader = PackedLoader(split, cfg.batch_size, cfg.block_size, seed=cfg.seed, shuffle=False, wrap=False,
                          rank=rank, world_size=world_size, **recipes.loader_options(cfg))
    generator = torch.Generator(device).manual_seed(1234)  # the same masks at every evaluation
    totals = torch.zeros(4, device=device, dtype=torch.float64)  # loss sum, loss count, nll sum, nll count
    for i, batch in zip(range(n_batches), loader):
        batch = batch.to(device)
        t = stratified_t(batch.tokens.shape[0], i, n_batches, device)
        for j, ex in enumerate((recipes.make_example(cfg, batch, 0, generator, t=t),
                                recipes.nll_bound_example(cfg, batch, t, generator))):
            with autocast_ctx:
                loss = recipes.compute_loss(model, ex)
            n = ex.normalizer.clamp(min=1)
            totals[2 * j] += loss.double() * n
            totals[2 * j + 1] += n
    if world_size > 1:
        torch.distributed.all_reduce(totals)
    model.train()
    val_loss, val_nll = (totals[0] / totals[1]).item(), (totals[2] / totals[3]).item()
    return dict(val_loss=val_loss, val_nll=val_nll, val_ppl=math.exp(min(val_nll, 50.0)),
                val_tokens=int(totals[3].item()))


def load_splits(cfg: TrainConfig):
    directory = prepare_data(cfg)
    return load_split(directory, "train"), load_split(directory, "val")
