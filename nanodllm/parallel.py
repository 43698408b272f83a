"""How the model is spread over GPUs, and how much memory each one needs.

Three switches of TrainConfig, applied by train.py in this order, to the model on its device, before the
optimizer is built:

  fp8                       apply_fp8: torchao's float8 matmuls in the Linear layers (H100-class GPUs)
  activation_checkpointing  apply_activation_checkpointing: keep each Block's input only, recompute the rest
  parallel="fsdp"           apply_fsdp: shard weights, gradients and AdamW states over the ranks (FSDP2, ZeRO-3)
  parallel="ddp"            (train.py) each rank holds everything; DDP averages the gradients

The arithmetic that picks between them: we keep fp32 weights under bf16 autocast, so each parameter costs 4
bytes of weight, 4 of gradient and 8 of AdamW moments, 16 in all, and DDP adds 6 (its gradient buckets and
autocast's bf16 weight copies). DDP is the simpler and faster choice while that fits beside the activations: a
few billion parameters at most on an 80 GB GPU. LLaDA-8B needs 128 GB before its first activation and trains
only sharded: FSDP over 8 GPUs leaves 16 GB of it on each. memory_estimate does this sum per GPU.

Checkpoints look the same whichever layout wrote them: full_state_dicts gathers full (unsharded) weights and an
optimizer state keyed by parameter name, which checkpoint.save_checkpoint writes as usual, and
load_full_optimizer_state shards it again on resume. A checkpoint written by 8 FSDP ranks resumes on one process,
or under DDP, and the other way round.
"""

import functools

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_optimizer_state_dict)
from torch.utils.checkpoint import checkpoint

from nanodllm.model import ModelConfig, Transformer

PARALLEL_KINDS = ("ddp", "fsdp")
FP8_RECIPES = ("", "tensorwise", "rowwise")  # "" = off


def fp8_linears(module: torch.nn.Module, recipe: str, keep=lambda linear: False):
    """Float8 training (torchao): the matmuls of each Linear in `module` in fp8 with dynamic scales, while the
    weights and optimizer stay as they are. "tensorwise" scales each tensor by one number (fastest); "rowwise" by
    one per row (more accurate, slower). Kept as they are: the Linears `keep` picks, and any whose dimensions are
    not multiples of 16, which fp8 matmuls (torch._scaled_mm) require. Call after moving the module to its GPU."""
    if recipe not in FP8_RECIPES[1:]:
        raise ValueError(f"fp8 recipe must be one of {FP8_RECIPES[1:]}, got {recipe!r}")
    device = next(module.parameters()).device
    if device.type != "cuda" or torch.cuda.get_device_capability(device) < (8, 9):
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "the CPU"
        raise RuntimeError(f"fp8 training needs an NVIDIA GPU of compute capability 8.9 or more (H100, H200, L40S, "
                           f"RTX 4090); the model is on {name}. Set fp8=''")
    try:
        from torchao.float8 import Float8LinearConfig, convert_to_float8_training
    except ImportError as e:
        raise RuntimeError("fp8 training needs torchao: pip install torchao") from e

    def in_fp8(linear, fqn):
        return not keep(linear) and linear.in_features % 16 == 0 and linear.out_features % 16 == 0

    convert_to_float8_training(module, config=Float8LinearConfig.from_recipe_name(recipe), module_filter_fn=in_fp8)
    return module


def apply_fp8(model: Transformer, recipe: str):
    """fp8_linears on the model, except the output head, kept in bf16: the logits feed the loss directly and are
    the most sensitive to rounding."""
    head = model.transformer.ff_out
    return fp8_linears(model, recipe, keep=lambda linear: linear is head)


def apply_activation_checkpointing(model: Transformer):
    """Each Block keeps only its input for the backward pass and recomputes its insides there: activation memory
    falls from every tensor of every layer to one tensor per layer plus one layer's worth, for about a third
    more compute (one extra forward). Non-reentrant checkpointing, which works with torch.compile and FSDP2.
    Each block's forward is wrapped in place, so parameter names (and checkpoints) do not change."""
    for block in model.transformer.blocks:
        block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)
    return model


def apply_fsdp(model: Transformer, device: torch.device, param_dtype: torch.dtype = torch.bfloat16):
    """FSDP2: every rank keeps 1/world_size of each weight, its gradient and its AdamW moments. Each Block is
    one unit, gathered whole just before its forward (and again for its backward) and freed after; the root unit
    holds the rest (embedding, final norm, output head). Call after model.to(device), before building the
    optimizer (which must see the sharded parameters). The process group must be up (torchrun).

    On CUDA the gathered weights are cast to param_dtype (autocast's dtype) and gradients are reduced in fp32,
    while the shards (what AdamW updates) stay fp32: the mixed precision of our DDP runs, applied once per
    gather instead of at every matmul. One difference from DDP + autocast: the embedding's output, hence the
    residual stream, is in param_dtype too. torch.float32, and every CPU run, gathers in fp32."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    low_precision = device.type == "cuda" and param_dtype != torch.float32
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32) if low_precision \
        else MixedPrecisionPolicy()
    for block in model.transformer.blocks:
        fully_shard(block, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)
    return model


# ---- checkpoints: the same full-state format for one process, DDP and FSDP --------------------------------------

_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_state_dicts(model, optimizer) -> tuple[dict, dict]:
    """(weights, optimizer state), full and on the CPU, for checkpoint.save_checkpoint. Weights are keyed like
    model.state_dict() of the bare Transformer (no DDP `module.`, torch.compile `_orig_mod.` or FSDP wrapping);
    the optimizer state by parameter name instead of position, which is what lets another layout load it.
    Every rank must call it (FSDP gathers the shards); under FSDP only rank 0 receives them (the others get
    empty dicts), so only rank 0 writes."""
    return get_model_state_dict(model, options=_FULL), get_optimizer_state_dict(model, optimizer, options=_FULL)


def load_full_optimizer_state(model, optimizer, state: dict):
    """An optimizer state written by full_state_dicts into this run's optimizer, whatever layout and number of
    processes wrote it; every rank passes the full state."""
    if any(isinstance(key, int) for key in state.get("state", {})):
        raise ValueError("this optimizer state is keyed by parameter position (optimizer.state_dict(), from before "
                         "parallel.full_state_dicts), not by name; resume it with optimizer.load_state_dict")
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


# ---- memory per GPU ------------------------------------------------------------------------------------------

GiB = 1024 ** 3


def memory_estimate(config: ModelConfig, parallel: str = "ddp", world_size: int = 1, batch_size: int = 1,
                    seq_len: int = 1024, activation_checkpointing: bool = False, param_bytes: int = 4,
                    grad_bytes: int = 4, optimizer_bytes: int = 8, gathered_bytes: int = 2) -> dict:
    """GiB per GPU at the peak of a training step, for train.py's setup: fp32 weights (param_bytes),
    fp32 gradients, AdamW's two fp32 moments (optimizer_bytes), bf16 autocast, no torch.compile. An estimate
    to decide the layout by, good to about 20%; the allocator's fragmentation and CUDA's context come on top.

    parameters/gradients/optimizer   per-parameter bytes x parameters, divided by world_size under FSDP.
    buffers     DDP: its gradient buckets (a second copy of the gradients) and autocast's bf16 copies of the
                matmul weights, which autograd keeps until the backward pass. FSDP: gathered units in
                gathered_bytes (bf16: no autocast copies then) for the root and two blocks (the current one and
                the one prefetched), plus one block's unsharded fp32 gradients before their reduce-scatter.
    activations what autograd keeps for the backward pass, counted tensor by tensor in one Block under bf16
                autocast with the fp32 residual stream, per token (C width, F MLP width, K/H kv heads per head):
                    2 RMSNorms: input + normalized, fp32                       16 C
                    q, k, v, ff_proj, up_proj inputs cast to bf16              10 C
                    attention's q, k, v and output, bf16 (RoPE keeps none)      4 C + 4 C K/H
                    SwiGLU: gate, SiLU(gate), up, their product, bf16           8 F
                so 30 C + 4 C K/H + 8 F bytes per token per layer; plus the head: final norm and its cast
                (10 C), the fp32 log-probabilities the loss keeps (4 V) and, as the backward pass starts, the
                logits' gradient in fp32 and bf16 (6 V): 10 C + 10 V, counted at every position (an upper bound:
                with logits_at only masked positions pay it). With activation checkpointing a layer keeps only
                its input (4 C), and the backward pass rebuilds one layer at a time (one full layer more).
    Checked on an H100 (GPT-2 124M, 16 x 1024 tokens, peak allocated above weights + AdamW): 17.4 GiB measured,
    16.4 estimated; with activation checkpointing 10.0 measured, 9.8 estimated.
    """
    if parallel not in PARALLEL_KINDS:
        raise ValueError(f"parallel must be one of {PARALLEL_KINDS}, got {parallel!r}")
    with torch.device("meta"):  # counts without memory, from the model itself
        model = Transformer(config)
    n_params = sum(p.numel() for p in model.parameters())
    n_block = sum(p.numel() for p in model.transformer.blocks[0].parameters())
    n_root = n_params - config.n_layer * n_block
    shards = world_size if parallel == "fsdp" else 1
    C, F, V = config.d_model, config.mlp_hidden, config.vocab_size
    layer = 30 * C + 4 * C * config.n_kv_head // config.n_head + 8 * F
    layers = config.n_layer * 4 * C + layer if activation_checkpointing else config.n_layer * layer
    per_token = layers + 10 * C + 10 * V
    if parallel == "fsdp":
        buffers = gathered_bytes * (n_root + 2 * n_block) + 4 * n_block
    else:
        buffers = grad_bytes * n_params + gathered_bytes * (n_params - model.transformer.wte.weight.numel())
    out = dict(parameters=param_bytes * n_params / shards, gradients=grad_bytes * n_params / shards,
               optimizer=optimizer_bytes * n_params / shards, buffers=buffers,
               activations=per_token * batch_size * seq_len)
    out = {k: v / GiB for k, v in out.items()}
    out["total"] = sum(out.values())
    return dict(out, n_params=n_params, parallel=parallel, world_size=world_size)


def format_memory_estimate(m: dict) -> str:
    parts = " + ".join(f"{k} {m[k]:.1f}" for k in ("parameters", "gradients", "optimizer", "buffers", "activations"))
    return (f"memory per GPU (estimate, {m['parallel']} x {m['world_size']}, {m['n_params'] / 1e9:.2f}B params): "
            f"{parts} = {m['total']:.1f} GiB")
