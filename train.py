"""Train a masked-diffusion language model (or its autoregressive baseline).

    python train.py config/tiny.py                          # one GPU, or slowly on the CPU
    python train.py config/tiny.py --batch_size=16 --compile=False
    python train.py config/tiny.py --resume                 # continue out_dir's last checkpoint exactly
    torchrun --standalone --nproc_per_node=8 train.py config/gpt2.py   # DDP

Config files are Python (see config/); every key is listed in nanodllm/config.py. The recipe (pretrain,
dllm_var, eos_pad, eos_random, ar) decides how rows are laid out and what is masked: nanodllm/recipes.py.
Logs go to stdout and, as JSON lines, to out_dir/log.jsonl.
"""

import json
import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from nanodllm import checkpoint, parallel, recipes, system
from nanodllm.config import ConfigError, config_to_dict, load_config
from nanodllm.prepare import HubUnreachable
from nanodllm.training import (build_model, configure_optimizer, evaluate, learning_rate, load_splits,
                               loss_function, make_loader)


class NonFiniteLoss(RuntimeError):
    pass


def nonfinite_message(what: str, step: int, out_dir: Path) -> str:
    kept = (f"the last good checkpoint in {out_dir} is kept" if (out_dir / "latest.json").is_file()
            else "no checkpoint had been written yet")
    return f"{what} at step {step}: stopping; {kept} (lower learning_rate, or check the data)"


def main(argv):
    cfg = load_config(argv)
    if cfg.parallel not in parallel.PARALLEL_KINDS or cfg.fp8 not in parallel.FP8_RECIPES:
        raise ConfigError(f"parallel must be one of {parallel.PARALLEL_KINDS} (got {cfg.parallel!r}) and fp8 one "
                          f"of {parallel.FP8_RECIPES} (got {cfg.fp8!r})")
    d = system.init_distributed()
    device = system.pick_device(cfg.device, d)
    master = d.is_master
    log = print if master else (lambda *a, **k: None)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    autocast_ctx = system.autocast(device, cfg.dtype)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # ---- data: prepared on first use (rank 0 prepares, the others wait) ----
    if master:
        train_split, val_split = load_splits(cfg)
    if d.enabled:
        dist.barrier()
    if not master:
        train_split, val_split = load_splits(cfg)
    loader = make_loader(cfg, train_split, train=True, rank=d.rank, world_size=d.world_size)

    # ---- model and optimizer: from scratch, fine-tuned from a checkpoint, or resumed ----
    model = build_model(cfg)
    out_dir = Path(cfg.out_dir or f"out/{cfg.dataset}-{cfg.recipe}")
    generator = torch.Generator(device).manual_seed(cfg.seed + d.rank)  # draws t and the masks
    step, best_val = 0, math.inf
    if cfg.resume:
        ckpt = checkpoint.resolve(out_dir)
        checkpoint.load_weights(model, ckpt)
    elif cfg.init_from != "scratch":
        checkpoint.load_weights(model, cfg.init_from)
        log(f"fine-tuning from {checkpoint.resolve(cfg.init_from)}")
    model.to(device)
    # How the model is laid out on the GPUs (nanodllm/parallel.py): fp8 matmuls, recomputed activations, and
    # FSDP2 sharding; each must happen before the optimizer sees the parameters.
    if cfg.fp8:
        parallel.apply_fp8(model, cfg.fp8)
    if cfg.activation_checkpointing:
        parallel.apply_activation_checkpointing(model)
    fsdp = d.enabled and cfg.parallel == "fsdp"
    if fsdp:
        parallel.apply_fsdp(model, device, getattr(torch, cfg.dtype))
    optimizer = configure_optimizer(model, cfg, device)
    if cfg.resume:
        state = checkpoint.load_state(ckpt)
        parallel.load_full_optimizer_state(model, optimizer, state["optimizer"])
        if len(state["loaders"]) == d.world_size:
            loader.load_state_dict(state["loaders"][d.rank])
            generator.set_state(state["rng"][d.rank])
        else:  # each rank's share of the documents changes with the number of ranks: start a fresh epoch
            loader.start_epoch(max(s["epoch"] for s in state["loaders"]) + 1)
            log(f"note: {ckpt} was written by {len(state['loaders'])} processes, this run has {d.world_size}: "
                f"weights and optimizer resume exactly, the data restarts at epoch {loader.epoch}")
        step, best_val = state["step"], state["best_val"]
        log(f"resumed from {ckpt} at step {step}")

    raw_model = model
    loss_fn = loss_function(cfg)
    if d.enabled and not fsdp:
        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    # ---- the numbers worth knowing before it starts ----
    tokens_per_step = cfg.batch_size * cfg.block_size * cfg.gradient_accumulation_steps * d.world_size
    flops_per_token = raw_model.flops_per_token(cfg.block_size)
    peak = system.peak_flops(device)
    log(f"model: {cfg.model} ({raw_model.config.attention}), {raw_model.num_params() / 1e6:.2f}M parameters "
        f"(+{raw_model.transformer.wte.weight.numel() / 1e6:.2f}M embedding)")
    log(f"recipe: {cfg.recipe}; tokens per step: {tokens_per_step:,} = {cfg.batch_size} rows x {cfg.block_size} "
        f"x {cfg.gradient_accumulation_steps} accumulation x {d.world_size} processes")
    log(f"FLOPs per token: {flops_per_token / 1e6:.1f}M; training tokens: {tokens_per_step * cfg.max_iters:,}; "
        f"device: {device}{f' ({torch.cuda.get_device_name(device)})' if device.type == 'cuda' else ''}")
    if master:
        out_dir.mkdir(parents=True, exist_ok=True)
    log(parallel.format_memory_estimate(parallel.memory_estimate(
        raw_model.config, cfg.parallel, d.world_size, cfg.batch_size, cfg.block_size, cfg.activation_checkpointing)))
    log_file = open(out_dir / "log.jsonl", "a") if master else None

    def write_log(record):
        log(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()))
        if log_file:
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()

    def save():
        loaders = [pending_cursor]
        rngs = [generator.get_state()]
        if d.enabled:  # every rank's cursor and RNG go into the one checkpoint
            loaders, rngs = [None] * d.world_size, [None] * d.world_size
            dist.all_gather_object(loaders, pending_cursor)
            dist.all_gather_object(rngs, generator.get_state().cpu())
        weights, optimizer_state = parallel.full_state_dicts(raw_model, optimizer)  # every rank: FSDP gathers
        if master:
            state = dict(optimizer=optimizer_state, step=step, best_val=best_val, loaders=loaders, rng=rngs)
            path = checkpoint.save_checkpoint(out_dir, step, raw_model, config_to_dict(cfg), state,
                                              keep=cfg.keep_checkpoints, weights=weights)
            log(f"saved {path}")

    # ---- the loop ----
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)  # checked at log and save time: no sync per step
    # The loader runs one batch ahead; a checkpoint stores its cursor from before the batch not yet trained on.
    pending_cursor = loader.state_dict()
    batch = loader.next_batch().to(device)
    t0, tokens_since = time.time(), 0
    while True:
        ckpt_now = cfg.ckpt_interval > 0 and step % cfg.ckpt_interval == 0 and step > 0
        if step % cfg.eval_interval == 0 or step == cfg.max_iters or ckpt_now:
            metrics = evaluate(raw_model, cfg, val_split, device, autocast_ctx, rank=d.rank,
                               world_size=d.world_size)
            write_log(dict(step=step, **metrics))
            if nonfinite.item() or not math.isfinite(metrics["val_loss"]):
                raise NonFiniteLoss(nonfinite_message("loss is NaN or inf", step, out_dir))
            best_val = min(best_val, metrics["val_nll"])
            if step > 0 and (cfg.ckpt_interval == 0 or ckpt_now or step == cfg.max_iters):
                save()
            t0, tokens_since = time.time(), 0
        if step == cfg.max_iters:
            break

        lr = learning_rate(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        for micro in range(cfg.gradient_accumulation_steps):
            last_micro = micro == cfg.gradient_accumulation_steps - 1
            # DDP: all-reduce gradients only on the last micro-step of the accumulation. (FSDP reduce-scatters
            # every micro-step: skipping it would keep full fp32 gradients on every rank.)
            sync = model.no_sync() if d.enabled and not fsdp and not last_micro else nullcontext()
            example = recipes.make_example(cfg, batch, step, generator)
            with sync, autocast_ctx:
                loss = loss_fn(model, example) / cfg.gradient_accumulation_steps
            pending_cursor = loader.state_dict()
            batch = loader.next_batch().to(device, non_blocking=True)  # fetch the next while the GPU works
            with sync:
                loss.backward()
        nonfinite |= ~torch.isfinite(loss)
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        tokens_since += tokens_per_step

        if step % cfg.log_interval == 0:
            lossf = loss.item() * cfg.gradient_accumulation_steps  # one sync per log line
            if not math.isfinite(lossf):
                raise NonFiniteLoss(nonfinite_message(f"training loss is {lossf}", step, out_dir))
            system.synchronize(device)
            dt = time.time() - t0
            record = dict(step=step, loss=lossf, lr=lr, tokens_per_s=round(tokens_since / dt))
            if peak:
                record["mfu"] = flops_per_token * tokens_since / dt / (peak * d.world_size)
            write_log(record)
            t0, tokens_since = time.time(), 0
    if master:
        write_log(dict(step=step, done=True, **{f"data_{k}": v for k, v in loader.counts.items()}))
    if d.enabled:
        dist.destroy_process_group()
    return raw_model


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ConfigError, checkpoint.CheckpointError, NonFiniteLoss, HubUnreachable) as e:  # our own clear messages
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
