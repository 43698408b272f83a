"""The machine: which device, which precision, how many processes, and how fast the GPU could go.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; without them we are one process. Each process drives one GPU.
"""

import os
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist

from nanodllm.config import ConfigError  # a bad --device or --dtype is a usage error like any other key

# Dense bf16 tensor-core peak FLOP/s by GPU name (vendor datasheets), for MFU. Unknown GPUs report no MFU.
PEAK_BF16_FLOPS = {
    "H100": 989e12, "H200": 989e12, "H800": 989e12, "GH200": 989e12, "B200": 2250e12,
    "A100": 312e12, "A800": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12,
    "RTX 4090": 165e12, "RTX 3090": 71e12,
}


@dataclass
class Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_master(self) -> bool:
        return self.rank == 0


def init_distributed(backend: str | None = None) -> Dist:
    """Joins the process group when started by torchrun (NCCL on GPUs, gloo on CPUs)."""
    if "RANK" not in os.environ:
        return Dist()
    d = Dist(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"]))
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if torch.cuda.is_available() else "gloo"))
    return d


def pick_device(name: str, d: Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} asked for, but CUDA is not available here: use --device=cpu (or "
                              "--device=auto, which picks the GPU when there is one)")
        device = torch.device("cuda", d.local_rank if d.enabled else torch.device(name).index or 0)
        torch.cuda.set_device(device)
        return device
    if name != "cpu":
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return torch.device("cpu")


def low_precision(device: torch.device, dtype: str) -> torch.dtype | None:
    """The dtype autocast computes in for --dtype on this device; None for float32, and always on the CPU, where
    low precision is slow and gains nothing."""
    dtypes = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
    if dtype not in dtypes:
        raise ConfigError(f"dtype must be one of {sorted(dtypes)}, got {dtype!r}")
    return None if device.type != "cuda" or dtype == "float32" else dtypes[dtype]


def autocast(device: torch.device, dtype: str):
    """bf16/fp16 autocast on CUDA; float32 on the CPU."""
    low = low_precision(device, dtype)
    return nullcontext() if low is None else torch.autocast("cuda", dtype=low)


def inference_weights(model: torch.nn.Module, device: torch.device, dtype: str) -> torch.nn.Module:
    """For inference under autocast(device, dtype): stores every Linear's weight in autocast's dtype, once.

    Why: autocast runs a Linear in low precision by casting its fp32 weight at each call. Eagerly, autocast's cache
    keeps the cast copy for the rest of the autocast region; a CUDA graph cannot read that cache (its copies are
    freed when the region ends: nanodllm/cuda_graphs.py), so every replay casts every weight again: for the gpt2
    preset 85 cast kernels and about 0.74 GB of memory traffic per forward pass. Cast once here, those kernels are
    gone and the outputs are the same bits, since autocast would have cast the weight to this very tensor. The
    norms and the embedding stay fp32, as autocast sees them. Inference only: training needs the fp32 weights."""
    low = low_precision(device, dtype)
    if low is not None:
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.to(low)
    return model


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key in sorted(PEAK_BF16_FLOPS, key=len, reverse=True):  # "GH200" before "H200"
        if key in name:
            return PEAK_BF16_FLOPS[key]
    return None


def synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
