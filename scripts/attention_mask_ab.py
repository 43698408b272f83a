"""A/B of model.attention_bias: one block sampler pass with the boolean mask handed to SDPA in every layer (SDPA
converts it in each), and with the mask converted once per pass. The gpt2 preset, block_causal, random weights in
bf16, a KV cache of 512 columns, 32 new tokens after 64 cached ones, replayed as a CUDA graph; batch 1 and 16; the
boolean variant runs again at the end, to see the drift of the machine. Prints (and writes to OUT as JSON) the
timed ms per pass, kernels per pass and kernel ms per pass (profiled).

    PYTHONPATH=. python scripts/attention_mask_ab.py OUT.json     # on a GPU; on the CPU, a 2-pass smoke run
"""

import json
import sys
import time

import torch

from nanodllm import model as M, profiling, system
from nanodllm.cuda_graphs import GraphedForward

VARIANTS = [("boolean every layer", lambda mask, dtype: mask), ("converted once", M.attention_bias),
            ("boolean every layer again", lambda mask, dtype: mask)]


def one_pass(model, batch: int, cached: int = 64, new: int = 32, width: int = 512):
    """-> a function that replays the pass (recorded on its first call)."""
    device = next(model.parameters()).device
    graphed = GraphedForward(model, M.KVCache.for_model(model, batch, width))
    columns, keys = torch.arange(cached, cached + new, device=device), torch.arange(width, device=device)
    mask = M.attention_mask(columns, keys, segments=keys // new).expand(batch, 1, new, width)  # (B, 1, T, S)
    idx = torch.randint(0, 50000, (batch, new), device=device)
    return lambda: graphed(idx, positions=columns, attn_mask=mask, logits_at=(slice(None), slice(0, new)),
                           write_at=columns)


def main(out: str):
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.type == "cuda"
    timed, profiled = (300, 20) if gpu else (2, 1)
    model = M.Transformer(M.preset("gpt2" if gpu else "tiny", attention="block_causal"))
    model = model.to(device, torch.bfloat16).eval()
    results = {}
    for label, bias in VARIANTS:
        M.attention_bias = bias
        for batch in (1, 16) if gpu else (1,):
            run = one_pass(model, batch)
            with torch.no_grad():
                for _ in range(5):
                    run()
                system.synchronize(device)
                t0 = time.time()
                for _ in range(timed):
                    run()
                system.synchronize(device)
                ms = (time.time() - t0) / timed * 1000
                profile = profiling.profile_steps(run, profiled, device, top=12)
            results[f"{label}, batch {batch}"] = dict(ms_per_pass=ms, kernels_per_pass=profile["kernels_per_step"],
                                                      kernel_ms=profile["kernel_ms_per_step"],
                                                      top=profile["top_kernels"])
            print(f"{label}, batch {batch}: {ms:.3f} ms/pass timed, {profile['kernels_per_step']:.0f} kernels, "
                  f"{profile['kernel_ms_per_step']:.3f} ms of kernels", flush=True)
    with open(out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
