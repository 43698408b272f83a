"""Training throughput for any config on synthetic data: tokens/s, MFU and peak memory, warm-up excluded.

    python bench.py config/gpt2.py --batch_size=32 --gradient_accumulation_steps=1
    python bench.py config/gpt2.py --steps=30 --warmup=10 --json=bench.json
    python bench.py config/gpt2.py --model=1b --fp8=tensorwise --linears=1   # each Linear alone, bf16 vs fp8
    python bench.py config/gpt2.py --batch_size=32 --gradient_accumulation_steps=1 --profile=1  # where time goes

It runs exactly the training step of train.py (the recipe's masking, the loss with logits only at the masked
positions, backward, clipping, AdamW) on random tokens, so no data preparation is needed. --steps, --warmup,
--json, --linears and --profile are the benchmark's own flags; every other flag is a training config key, the
speed levers among them (compile_mode, loss_gather: nanodllm/training.py's loss_function).

--profile=1 runs `steps` more steps under torch.profiler after the timed ones and prints where each step's GPU
time goes (matmuls, attention, everything else, idle gaps, host-device syncs) and the top kernels
(nanodllm/profiling.py); the result's "profile" key holds the same numbers.

--linears=1 times instead each distinct Linear shape of the model alone (forward + backward over batch_size x
block_size tokens), as training runs it (fp32 weights under autocast, compiled when compile=True), in plain
autocast and under the config's fp8 recipe. That roughly caps the model's own fp8 speed-up: attention, the norms,
the bf16 output head and the optimizer get no faster (roughly: in the whole model the compiler can fuse some of
fp8's casts into neighbouring operations, which a Linear alone cannot).
"""

import json
import sys
import time

import torch

from nanodllm import parallel, profiling, recipes, system
from nanodllm.config import load_config
from nanodllm.data import Batch
from nanodllm.training import build_model, configure_optimizer, loss_function


def split_bench_flags(argv):
    """Takes --steps, --warmup, --json, --linears and --profile out of argv; the rest are training config
    arguments."""
    own = dict(steps=20, warmup=5, json="", linears=0, profile=0)
    rest = []
    for arg in argv:
        key, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if key in own and eq:
            own[key] = type(own[key])(value)
        else:
            rest.append(arg)
    return own, rest


def time_it(fn, steps: int, warmup: int, device) -> tuple[float, float]:
    """(seconds per call of fn, seconds of the warm-up): `warmup` calls first, where compilation and autotuning
    happen, outside the timed ones; peak memory is counted from the timed calls."""
    t0 = time.time()
    for _ in range(warmup):
        fn()
    system.synchronize(device)
    warmup_s = time.time() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.time()
    for _ in range(steps):
        fn()
    system.synchronize(device)
    return (time.time() - t0) / steps, warmup_s


def bench_linears(cfg, model, device, own) -> list[dict]:
    """Forward + backward of each distinct Linear shape of the model (the output head, never in fp8, left out),
    alone, in autocast and under cfg.fp8 -> one row per shape and mode."""
    head = model.transformer.ff_out
    shapes = sorted({(m.in_features, m.out_features) for m in model.modules()
                     if isinstance(m, torch.nn.Linear) and m is not head})
    tokens = cfg.batch_size * cfg.block_size
    rows = []
    for k, n in shapes:
        x = torch.randn(tokens, k, device=device, requires_grad=True)
        times = {}
        for mode in ["autocast"] + ([cfg.fp8] if cfg.fp8 else []):
            torch.manual_seed(cfg.seed)
            layer = torch.nn.Sequential(torch.nn.Linear(k, n, bias=False)).to(device)
            if mode != "autocast":
                parallel.fp8_linears(layer, mode)
            run = torch.compile(layer) if cfg.compile else layer

            def step():
                with system.autocast(device, cfg.dtype):
                    y = run(x)
                y.float().sum().backward()

            times[mode] = time_it(step, own["steps"], own["warmup"], device)[0]
            rows.append(dict(tokens=tokens, in_features=k, out_features=n, mode=mode, ms=1000 * times[mode],
                             tflops=6 * tokens * k * n / times[mode] / 1e12,
                             speedup=times["autocast"] / times[mode]))
            print(json.dumps(rows[-1]))
    return rows


def main(argv):
    own, rest = split_bench_flags(argv)
    cfg = load_config(rest)
    device = system.pick_device(cfg.device, system.Dist())
    torch.manual_seed(cfg.seed)
    autocast_ctx = system.autocast(device, cfg.dtype)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True

    if own["linears"]:
        with torch.device("meta"):  # only the shapes are needed: no memory, no init (LLaDA-8B in a second)
            shapes_of = build_model(cfg)
        rows = bench_linears(cfg, shapes_of, device, own)
        if own["json"]:
            with open(own["json"], "a") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
        return rows
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

    step_s, warmup_s = time_it(train_step, own["steps"], own["warmup"], device)
    tokens_per_s = cfg.batch_size * cfg.block_size * cfg.gradient_accumulation_steps / step_s
    peak = system.peak_flops(device)
    result = dict(
        model=cfg.model, recipe=cfg.recipe, attention=model.config.attention, params_m=model.num_params() / 1e6,
        batch_size=cfg.batch_size, block_size=cfg.block_size, accumulation=cfg.gradient_accumulation_steps,
        dtype=cfg.dtype if device.type == "cuda" else "float32", fp8=cfg.fp8 or None, compile=cfg.compile,
        compile_mode=cfg.compile_mode, loss_gather=cfg.loss_gather,
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        tokens_per_s=round(tokens_per_s), ms_per_step=1000 * step_s,
        mfu=model.flops_per_token(cfg.block_size) * tokens_per_s / peak if peak else None,
        peak_memory_gib=torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        warmup_s=warmup_s, steps=own["steps"],
    )
    if own["profile"]:
        result["profile"] = profiling.profile_steps(train_step, own["steps"], device)
        print(profiling.table(result["profile"]))
    print(json.dumps(result))
    if own["json"]:
        with open(own["json"], "a") as f:
            f.write(json.dumps(result) + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
