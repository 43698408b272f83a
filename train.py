"""Train a masked-diffusion language model (or its autoregressive baseline).

    python train.py config/tiny.py                          # one GPU, a few minutes
    python train.py config/tiny.py config/cpu.py            # a smaller version of it: about 5 minutes on 2 CPU cores
    python train.py config/tiny.py --batch_size 16 --compile=False
    python train.py config/tiny.py --resume                 # continue out_dir's last checkpoint exactly
    python train.py --help                                  # every key, its default and what it means
    torchrun --standalone --nproc_per_node=8 train.py config/gpt2.py   # DDP

Config files are Python (see config/); every key is listed in nanodllm/config.py. The recipe (pretrain,
dllm_var, eos_pad, eos_random, ar) decides how rows are laid out and what is masked: nanodllm/recipes.py.
The run's effective config goes to out_dir/config.json; logs go to stdout and, as JSON lines, to
out_dir/log.jsonl. A fresh run refuses an out_dir that already holds checkpoints (--resume continues it,
--overwrite starts over).

A mistake ends with one line `error: ...` that says what to do, and the exit status says what kind: 2 for a
usage error (a bad flag, key or value, an out_dir already in use), 1 for anything else (data that cannot be
read, a broken checkpoint, a NaN loss), 130 for Ctrl-C (the last checkpoint is kept).
"""

import json
import math
import shutil
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from nanodllm import checkpoint, parallel, recipes, system
from nanodllm.config import ConfigError, TrainConfig, config_to_dict, help_text, load_config
from nanodllm.model import PRESETS
from nanodllm.prepare import HUB, DataError, describe
from nanodllm.training import (build_model, configure_optimizer, data_dir, evaluate, learning_rate, load_splits,
                               loss_function, make_loader, model_config)

DATASETS = (*HUB, "lengthtask")
LOWER_LR = "lower learning_rate, or check the data"


class TrainingStopped(RuntimeError):
    """Training ended before max_iters; the message says what was kept and what to do."""


class NonFiniteLoss(TrainingStopped):
    pass


class Interrupted(TrainingStopped):
    pass


def stop_message(what: str, step: int, out_dir: Path, advice: str) -> str:
    kept = (f"the last good checkpoint in {out_dir} is kept" if (out_dir / "latest.json").is_file()
            else "no checkpoint had been written yet")
    return f"{what} at step {step}: stopping; {kept} ({advice})"


def check_config(cfg: TrainConfig, device: torch.device):
    """Every value that can be wrong on its own, checked before any data is read or model built."""
    choices = dict(dataset=DATASETS, recipe=recipes.RECIPES, model=tuple(PRESETS),
                   parallel=parallel.PARALLEL_KINDS, fp8=parallel.FP8_RECIPES)
    for key, allowed in choices.items():
        if getattr(cfg, key) not in allowed:
            raise ConfigError(f"unknown {key} {getattr(cfg, key)!r}: choose one of {', '.join(map(repr, allowed))}")
    for key in ("batch_size", "block_size", "gradient_accumulation_steps", "eval_interval", "eval_iters",
                "log_interval"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{key} must be at least 1, got {getattr(cfg, key)}")
    try:
        recipes.loader_options(cfg)  # pad_token, attention_scope and whether they fit the recipe
        model_config(cfg)  # the model keys: attention, the sizes
    except ValueError as e:
        raise ConfigError(str(e)) from None
    system.autocast(device, cfg.dtype)  # checks the dtype's name
    if cfg.compile and device.type == "cpu" and not any(map(shutil.which, ("g++", "clang++", "c++"))):
        raise ConfigError("--compile on the CPU needs a C++ compiler (g++ or clang++), and none was found: "
                          "install one, or pass --compile=False")


def claim_out_dir(out_dir: Path, cfg: TrainConfig, master: bool):
    """A fresh run never writes over another run's checkpoints: it refuses, unless --overwrite, which clears them."""
    held = sorted(out_dir.glob("ckpt_*")) + [p for p in (out_dir / "latest.json",) if p.is_file()]
    if cfg.resume or not held:
        return
    if not cfg.overwrite:
        raise ConfigError(f"{out_dir} already holds a run ({', '.join(p.name for p in held)}): continue it with "
                          f"--resume, start it over with --overwrite, or give another --out_dir")
    if master:
        for path in held:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()


def config_overrides(cfg: TrainConfig) -> str:
    default = config_to_dict(TrainConfig())
    return " ".join(f"{k}={v!r}" for k, v in config_to_dict(cfg).items() if v != default[k]) or "the defaults"


def format_duration(seconds: float) -> str:
    """7 -> 7s, 125 -> 2m05s, 3725 -> 1h02m."""
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def main(argv):
    if "--help" in argv or "-h" in argv:
        print(help_text())
        return None
    cfg = load_config(argv)
    d = system.init_distributed()
    device = system.pick_device(cfg.device, d)
    check_config(cfg, device)
    master = d.is_master
    log = print if master else (lambda *a, **k: None)
    out_dir = Path(cfg.out_dir or f"out/{cfg.dataset}-{cfg.recipe}")
    claim_out_dir(out_dir, cfg, master)
    log(f"config: {config_overrides(cfg)}")
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
    log(f"data: {describe(data_dir(cfg))}")
    loader = make_loader(cfg, train_split, train=True, rank=d.rank, world_size=d.world_size)

    # ---- model and optimizer: from scratch, fine-tuned from a checkpoint, or resumed ----
    model = build_model(cfg)
    generator = torch.Generator(device).manual_seed(cfg.seed + d.rank)  # draws t and the masks
    step, best_val, lineage = 0, math.inf, None  # lineage: which checkpoint the weights started from
    if cfg.resume:
        ckpt = checkpoint.resolve(out_dir)
        checkpoint.load_weights(model, ckpt)
        lineage = checkpoint.read_config(ckpt).get("lineage")
    elif cfg.init_from != "scratch":
        checkpoint.load_weights(model, cfg.init_from)
        lineage = checkpoint.lineage_of(cfg.init_from)
        log(f"fine-tuning from {lineage['init_from']} (checkpoint id {lineage['init_from_id']})")
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
        (out_dir / "config.json").write_text(json.dumps(config_to_dict(cfg), indent=2) + "\n")
    log(f"out_dir: {out_dir.resolve()} (config.json, log.jsonl, checkpoints ckpt_*)")
    log(parallel.format_memory_estimate(parallel.memory_estimate(
        raw_model.config, cfg.parallel, d.world_size, cfg.batch_size, cfg.block_size, cfg.activation_checkpointing)))
    log_file = open(out_dir / "log.jsonl", "a" if cfg.resume else "w") if master else None  # a fresh run, a fresh log

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
                                              keep=cfg.keep_checkpoints, weights=weights, lineage=lineage)
            log(f"saved {path}")

    # ---- the loop ----
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)  # checked at log and save time: no sync per step
    # The loader runs one batch ahead; a checkpoint stores its cursor from before the batch not yet trained on.
    pending_cursor = loader.state_dict()
    batch = loader.next_batch().to(device)
    t0, tokens_since = time.time(), 0
    start_time, start_step = time.time(), step  # for the ETA, evaluations included
    try:
        while True:
            ckpt_now = cfg.ckpt_interval > 0 and step % cfg.ckpt_interval == 0 and step > 0
            if step % cfg.eval_interval == 0 or step == cfg.max_iters or ckpt_now:
                metrics = evaluate(raw_model, cfg, val_split, device, autocast_ctx, rank=d.rank,
                                   world_size=d.world_size)
                write_log(dict(step=step, **metrics))
                if nonfinite.item() or not math.isfinite(metrics["val_loss"]):
                    raise NonFiniteLoss(stop_message("loss is NaN or inf", step, out_dir, LOWER_LR))
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
                    raise NonFiniteLoss(stop_message(f"training loss is {lossf}", step, out_dir, LOWER_LR))
                system.synchronize(device)
                dt = time.time() - t0
                record = dict(step=step, loss=lossf, lr=lr, tokens_per_s=round(tokens_since / dt),
                              ms_per_step=round(1000 * dt * tokens_per_step / tokens_since))
                if peak:
                    record["mfu"] = flops_per_token * tokens_since / dt / (peak * d.world_size)
                seconds_per_step = (time.time() - start_time) / (step - start_step)  # evaluations included
                record["eta"] = format_duration(seconds_per_step * (cfg.max_iters - step))
                write_log(record)
                t0, tokens_since = time.time(), 0
    except KeyboardInterrupt:  # Ctrl-C: no checkpoint of a half-done step; the last one stays
        raise Interrupted(stop_message("interrupted (Ctrl-C)", step, out_dir, "continue with --resume")) from None
    if master:
        write_log(dict(step=step, done=True, **{f"data_{k}": v for k, v in loader.counts.items()}))
    if d.enabled:
        # every rank reaches the end before any tears down: a gloo teardown once hung on rank 0, which was still
        # writing its last log line after rank 1 had left
        dist.barrier()
        dist.destroy_process_group()
    return raw_model


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except ConfigError as e:  # a usage error: the message says which key and what it takes
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except (DataError, checkpoint.CheckpointError, TrainingStopped) as e:  # our own clear messages
        print(f"error: {e}", file=sys.stderr)
        sys.exit(130 if isinstance(e, Interrupted) else 1)
    except KeyboardInterrupt:
        print("error: interrupted (Ctrl-C) before training began; no checkpoint was written", file=sys.stderr)
        sys.exit(130)
