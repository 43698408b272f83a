"""Training throughput for any config on synthetic data: tokens/s, MFU and peak memory, warm-up excluded.

    python bench.py config/gpt2.py --batch_size=32 --gradient_accumulation_steps=1
    python bench.py config/gpt2.py --steps=30 --warmup=10 --json=bench.json

It runs exactly the training step of train.py (the recipe's masking, the loss with logits only at the masked
positions, backward, clipping, AdamW) on random tokens, so no data preparation is needed. --steps and --warmup
are the benchmark's own flags; every other flag is a training config key.
"""

import json
import sys
import time

import torch

from nanodllm import parallel, recipes, system
from nanodllm.config import load_config
from nanodllm.data import Batch
from nanodllm.training import build_model, configure_optimizer, loss_function


def split_bench_flags(argv):
    """Takes --steps, --warmup and --json out of argv; the rest are training config arguments."""
    own = dict(steps=20, warmup=5, json="")
    rest = []
    for arg in argv:
        key, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if key in own and eq:
            own[key] = type(own[key])(value)
        else:
            rest.append(arg)
    return own, rest


def main(argv):
    own, rest = split_bench_flags(argv)
    cfg = load_config(rest)
    device = system.pick_device(cfg.device, system.Dist())
    torch.manual_seed(cfg.seed)
    autocast_ctx = system.autocast(device, cfg.dtype)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True

    model = build_model(cfg).to(device)
    if cfg.fp8:
        parallel.apply_fp8(model, cfg.fp8)
    if cfg.activation_checkpointing:
        parallel.apply_activation_checkpointing(model)
    optimizer = configure_optimizer(model, cfg, device)
    loss_fn = loss_function(cfg)
    generator = torch.Generator(device).manual_seed(cfg.seed)
    shape = (cfg.batch_size, cfg.block_size)
    no = torch.zeros(shape, dtype=torch.bool, device=device)
    batch = Batch(torch.randint(0, 50256, shape, device=device), no, no)  # random GPT-2 tokens, no prompts/pads

    def train_step():
        for _ in range(cfg.gradient_accumulation_steps):
            example = recipes.make_example(cfg, batch, 0, generator)
            with autocast_ctx:
                loss = loss_fn(model, example) / cfg.gradient_accumulation_steps
            loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    t_compile = time.time()
    for _ in range(own["warmup"]):  # compilation and autotuning happen here, outside the timed steps
        train_step()
    system.synchronize(device)
    t_compile = time.time() - t_compile
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.time()
    for _ in range(own["steps"]):
        train_step()
    system.synchronize(device)
    dt = time.time() - t0

    tokens_per_s = own["steps"] * cfg.batch_size * cfg.block_size * cfg.gradient_accumulation_steps / dt
    peak = system.peak_flops(device)
    result = dict(
        model=cfg.model, recipe=cfg.recipe, attention=model.config.attention, params_m=model.num_params() / 1e6,
        batch_size=cfg.batch_size, block_size=cfg.block_size, accumulation=cfg.gradient_accumulation_steps,
        dtype=cfg.dtype if device.type == "cuda" else "float32", fp8=cfg.fp8 or None, compile=cfg.compile,
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        tokens_per_s=round(tokens_per_s), ms_per_step=1000 * dt / own["steps"],
        mfu=model.flops_per_token(cfg.block_size) * tokens_per_s / peak if peak else None,
        peak_memory_gib=torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        warmup_s=t_compile, steps=own["steps"],
    )
    print(json.dumps(result))
    if own["json"]:
        with open(own["json"], "a") as f:
            f.write(json.dumps(result) + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
