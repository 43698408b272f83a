"""What a sampler call costs and under what it runs: its stats, the timer that measures it, the attention kernels.

Every sampler of nanodllm/sampler.py returns a GenerationStats next to its completions, times itself with Timer
and runs under sampling_mode. None of it changes which tokens are written; it is here so the samplers can be read
for the idea and compared for their speed.
"""

import functools
import time
from dataclasses import asdict, dataclass, field

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from nanodllm.metrics import accuracy, ended_with_eos


@dataclass
class GenerationStats:
    """What one call of a sampler cost and produced.

    nfe counts forward passes of the model, whatever the batch size. row_nfe counts them per row (a pass over 5
    rows counts 5), so nfe_per_token = row_nfe / tokens is "passes per generated token" for one sequence: 1.0
    for autoregressive decoding, gen_length / answer length for LLaDA, well under 1 when dLLM-Var commits many
    tokens per pass. It is comparable across batch sizes, which nfe / tokens would not be.
    tokens[i] is how many tokens row i generated up to and including its EOS: positions after EOS are dropped
    output, not generated text, and counting them (as dLLM-Var's own speed metric does) inflates tokens/s.
    """

    tokens: list[int] = field(default_factory=list)  # per row: generated tokens, EOS included
    finished: list[bool] = field(default_factory=list)  # per row: the row reached EOS before the length cap
    nfe: int = 0  # forward passes
    row_nfe: int = 0  # forward passes summed over the rows they carried
    seconds: float = 0.0  # wall time, GPU work included (synchronised on CUDA)
    info: dict = field(default_factory=dict)  # sampler-specific facts (e.g. length_bound's canvas lengths)

    @classmethod
    def of(cls, completions, eos_id: int, nfe: int, row_nfe: int, seconds: float, info=None) -> "GenerationStats":
        """The stats of a sampler's completions (each cut after its first EOS): a row finished if it ended with
        EOS, metrics.ended_with_eos, the one definition of termination."""
        return cls([len(c) for c in completions], [ended_with_eos(c, eos_id) for c in completions], nfe, row_nfe,
                   seconds, info or {})

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens)

    @property
    def tokens_per_s(self) -> float:
        return self.total_tokens / self.seconds if self.seconds > 0 else float("nan")

    @property
    def nfe_per_token(self) -> float:
        return self.row_nfe / self.total_tokens if self.total_tokens else float("nan")

    @property
    def mean_length(self) -> float:
        return self.total_tokens / len(self.tokens) if self.tokens else float("nan")

    @property
    def termination_rate(self) -> float:
        return accuracy(self.finished)

    @classmethod
    def combine(cls, parts) -> "GenerationStats":
        """Stats of several calls (e.g. the batches of one run) added together."""
        out = cls()
        for s in parts:
            out.tokens += s.tokens
            out.finished += s.finished
            out.nfe += s.nfe
            out.row_nfe += s.row_nfe
            out.seconds += s.seconds
        return out

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(total_tokens=self.total_tokens, tokens_per_s=self.tokens_per_s, nfe_per_token=self.nfe_per_token,
                 mean_length=self.mean_length, termination_rate=self.termination_rate)
        return d

    def __str__(self) -> str:
        return (f"{len(self.tokens)} rows, {self.total_tokens} tokens (mean {self.mean_length:.1f}), "
                f"{self.nfe} forward passes, {self.nfe_per_token:.3f} NFE/token, {self.seconds:.3f} s, "
                f"{self.tokens_per_s:.1f} tokens/s, {self.termination_rate:.0%} ended with EOS")


class Timer:
    """Wall time of a block of code. CUDA kernels run asynchronously, so without a synchronize at both ends we
    would time how fast Python queues work, not how fast the GPU does it."""

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"
        self.device = device

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize(self.device)
        self.seconds = time.perf_counter() - self.t0


# Attention kernels the samplers allow. Left to itself, SDPA picks cuDNN's attention for bf16 on H100, and cuDNN
# builds an execution plan for every new pair of (query, key) lengths: about 5 ms of CPU time each on the H100
# host we measured. Autoregressive decoding meets a new key length at every token, the block sampler at every
# block, LLaDA's fixed canvas never: left in, it made the AR baseline look 8x slower than it is. Flash,
# memory-efficient and math attention need no plan.
ATTENTION_KERNELS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def sampling_mode(fn):
    """What every sampler runs under: no autograd (nothing is trained) and ATTENTION_KERNELS."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with torch.no_grad(), sdpa_kernel(ATTENTION_KERNELS):
            return fn(*args, **kwargs)
    return wrapped
