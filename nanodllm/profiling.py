"""Where a training step's GPU time goes: a torch.profiler trace boiled down to a few numbers.

A step is a stream of CUDA kernels. Sorting them into three kinds says which lever can pay:
    matmul     the Linear layers and the output head (cuBLAS / CUTLASS / Triton matmul templates): at bf16 on a
               Hopper GPU these already run near the chip's peak, so they shrink only if the FLOPs do;
    attention  scaled_dot_product_attention's kernel (cuDNN, flash or memory-efficient);
    other      everything else: norms, RoPE, SiLU, the fused cross-entropy, casts, AdamW, the masking;
and a fourth number, idle: the time inside the profiled window when no kernel ran at all, the GPU waiting for
the CPU (Python, launches, a host-device sync). The largest gaps are listed with the kernels on either side, which
usually names their cause. Host-device syncs, and the copies queued without one, are counted from the CUDA runtime
calls the CPU made, and the CPU's time inside each kind of runtime call is summed: a sync's time (or a blocking
copy's, a `.tolist()`) is the CPU waiting for the GPU, a launch's is the CPU working, and the longest single call
of each kind says whether one launch (a CUDA graph's first, say) stalls.

bench.py --profile=1 calls profile_steps; summarize is the arithmetic, tested on made-up kernels.
"""

import torch

MATMUL_NAMES = ("gemm", "xmma", "nvjet", "cutlass", "cublas", "triton_tem_fused_mm", "triton_tem_fused_addmm",
                "triton_tem_fused_bmm", "wgmma", "splitkreduce")
ATTENTION_NAMES = ("flash", "fmha", "attention", "sdpa", "cudnn")
# CUDA runtime calls that block the CPU until the GPU is done (a `.item()` or `.tolist()` of a GPU tensor queues a
# cudaMemcpyAsync, then waits in cudaStreamSynchronize; on the H200 the block sampler's `.tolist()` waited inside
# the copy itself), and the queued copies, which do not wait by themselves (a CUDA graph's replay copies its new
# inputs into its buffers: device to device, no sync); and the launches, the CPU sending work to the GPU.
SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")
COPY_CALLS = ("cudaMemcpyAsync",)
LAUNCH_CALLS = ("cudaGraphLaunch", "cudaLaunchKernel", "cudaLaunchKernelExC")


def kind(kernel_name: str) -> str:
    """matmul, attention or other, from a kernel's name (case-insensitive)."""
    name = kernel_name.lower()
    if any(k in name for k in ATTENTION_NAMES):
        return "attention"
    if any(k in name for k in MATMUL_NAMES):
        return "matmul"
    return "other"


def summarize(kernels, steps: int, top: int = 10, gaps: int = 5) -> dict:
    """kernels: (name, start_us, end_us) of every GPU kernel in the profiled window of `steps` steps ->
    per-step milliseconds of each kind, of idle time and of the window, the kernels launched per step, the `top`
    kernels by total time (with their launches per step), and the `gaps` longest idle stretches with the kernels
    around them."""
    kernels = sorted(kernels, key=lambda k: k[1])
    per_kind, by_name, launches = {"matmul": 0.0, "attention": 0.0, "other": 0.0}, {}, {}
    idle, gap_list, busy_until, previous = 0.0, [], None, None  # previous: the kernel that ran until busy_until
    for name, start, end in kernels:
        per_kind[kind(name)] += end - start
        by_name[name] = by_name.get(name, 0.0) + end - start
        launches[name] = launches.get(name, 0) + 1
        if busy_until is not None and start > busy_until:  # nothing ran between busy_until and start
            idle += start - busy_until
            gap_list.append((start - busy_until, previous, name))
        if busy_until is None or end > busy_until:
            busy_until, previous = end, name
    window = busy_until - kernels[0][1] if kernels else 0.0
    ms = lambda us: us / 1000 / steps  # microseconds in the window -> milliseconds per step
    kernel_ms = sum(per_kind.values())
    return dict(
        steps=steps, window_ms_per_step=ms(window), kernel_ms_per_step=ms(kernel_ms), idle_ms_per_step=ms(idle),
        kernels_per_step=len(kernels) / steps,
        **{f"{k}_ms_per_step": ms(v) for k, v in per_kind.items()},
        **{f"{k}_share": v / kernel_ms if kernel_ms else 0.0 for k, v in per_kind.items()},
        top_kernels=[dict(name=n[:120], kind=kind(n), ms_per_step=ms(t), share=t / kernel_ms,
                          launches_per_step=launches[n] / steps)
                     for n, t in sorted(by_name.items(), key=lambda item: -item[1])[:top]],
        largest_gaps=[dict(us=g, after=a[:80], before=b[:80]) for g, a, b in sorted(gap_list, reverse=True)[:gaps]],
    )


def profile_steps(step, steps: int, device, top: int = 10) -> dict:
    """Runs step() `steps` times under torch.profiler (after the caller's warm-up) -> summarize's dict (with the
    `top` kernels), plus host_calls' counts and times per step."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    events = prof.events()
    kernels = gpu_kernels(events)
    calls = host_calls((e.name, e.time_range.end - e.time_range.start) for e in events
                       if e.device_type == torch.autograd.DeviceType.CPU)
    per_step = lambda counts, unit=1: {name: n / unit / steps for name, n in counts.items()}
    return dict(summarize(kernels, steps, top), syncs_per_step=per_step(calls["syncs"]),
                copies_per_step=per_step(calls["copies"]), host_ms_per_step=per_step(calls["host_us"], 1000),
                longest_host_call_us=calls["longest_us"])


def gpu_kernels(events) -> list:
    """The profiler's events -> (name, start_us, end_us) of the GPU's kernels and copies. Not its user annotations:
    a `record_function` range that launched GPU work (AdamW's "Optimizer.step#AdamW.step", say) is also drawn on
    the GPU's timeline, spanning the kernels it launched, and counted as a kernel it would count their time twice
    (1.4 ms of a 61 ms training step on the H200). PyTorch's own profiler tables leave them out the same way."""
    return [(e.name, e.time_range.start, e.time_range.end) for e in events
            if e.device_type == torch.autograd.DeviceType.CUDA and not e.is_user_annotation]


def host_calls(calls) -> dict:
    """The CPU's CUDA runtime calls, (name, duration_us) -> {"syncs": {name: count}, "copies": {name: count},
    "host_us": {name: total duration}, "longest_us": {name: the longest single call}}: the calls that wait for
    the GPU (SYNC_CALLS), the copies queued on its stream (COPY_CALLS), and the CPU's time inside every kind of
    runtime call (their names start with "cuda"; the rest of a profile's CPU events are PyTorch's operators)."""
    counts = {"syncs": {}, "copies": {}, "host_us": {}, "longest_us": {}}
    for name, us in calls:
        if not name.startswith("cuda"):
            continue
        kind_of = "syncs" if name in SYNC_CALLS else "copies" if name in COPY_CALLS else None
        if kind_of:
            counts[kind_of][name] = counts[kind_of].get(name, 0) + 1
        counts["host_us"][name] = counts["host_us"].get(name, 0.0) + us
        counts["longest_us"][name] = max(counts["longest_us"].get(name, 0.0), us)
    return {k: dict(sorted(v.items())) for k, v in counts.items()}


def table(summary: dict) -> str:
    """The summary as a few lines of text for the log."""
    s = summary
    lines = [f"profile over {s['steps']} steps, per step: window {s['window_ms_per_step']:.2f} ms, kernels "
             f"{s['kernel_ms_per_step']:.2f} ms (matmul {s['matmul_ms_per_step']:.2f} = {s['matmul_share']:.0%}, "
             f"attention {s['attention_ms_per_step']:.2f} = {s['attention_share']:.0%}, other "
             f"{s['other_ms_per_step']:.2f} = {s['other_share']:.0%}), idle gaps {s['idle_ms_per_step']:.2f} ms",
             f"host-device syncs per step: {s.get('syncs_per_step') or 'none'}; queued copies per step: "
             f"{s.get('copies_per_step') or 'none'}", "top kernels:"]
    lines += [f"  {k['ms_per_step']:7.3f} ms {k['share']:5.1%} {k['kind']:<9} {k['name']}" for k in s["top_kernels"]]
    lines += ["largest idle gaps:"] + [f"  {g['us']:8.1f} us after {g['after']} before {g['before']}"
                                       for g in s["largest_gaps"]]
    if s.get("host_ms_per_step"):
        busiest = sorted(s["host_ms_per_step"].items(), key=lambda item: -item[1])[:5]
        lines += ["CPU time in CUDA runtime calls per step: " + ", ".join(f"{n} {ms:.3f} ms" for n, ms in busiest),
                  "longest single call: " + ", ".join(f"{n} {s['longest_host_call_us'][n]:.0f} us"
                                                      for n, _ in busiest)]
    return "\n".join(lines)
