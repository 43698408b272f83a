"""A/B of the AR slots' prompt prefill (7df91b0): the AR baseline's continuous batching, one package against
another. Before 7df91b0 a row took its prompt one token a pass; since, every prompt's keys and values come from a
few batched passes before the loop, and every pass copies them into the rows that take a prompt (no branch, so
the pass can be recorded). Fewer passes, each a little dearer: this measures both on one machine.

The gpt2 preset, causal, random weights in bf16, 24 random prompts of 8-24 tokens, NEW_TOKENS each (at most
1,076; random weights never say EOS), one row (batch 1), compiled CUDA graphs, greedy; three runs, the first with
the compilation. Run it once per package, in separate processes (each imports its own nanodllm), and again to see
the machine's drift:

    git worktree add /tmp/before 7df91b0^
    python scripts/ar_prefill_ab.py /tmp/before 256; python scripts/ar_prefill_ab.py . 256    # on a GPU
    python scripts/ar_prefill_ab.py . 16       # on the CPU: the tiny preset, eager, a check of the script
"""

import sys
import time

if len(sys.argv) != 3 or not sys.argv[2].isdigit() or not 0 < int(sys.argv[2]) <= 1076:
    raise SystemExit("error: usage: python scripts/ar_prefill_ab.py PACKAGE_ROOT NEW_TOKENS (1 to 1076)")
sys.path.insert(0, sys.argv[1])  # before the installed nanodllm, whichever checkout that is

import torch  # noqa: E402

import nanodllm.sampler  # noqa: E402
from nanodllm.model import Transformer, preset  # noqa: E402

cuda = torch.cuda.is_available()
new_tokens = int(sys.argv[2])
print("package:", nanodllm.sampler.__file__, flush=True)
torch.manual_seed(0)
model = Transformer(preset("gpt2" if cuda else "tiny", attention="causal", max_seq_len=1100))
model = model.to("cuda" if cuda else "cpu", torch.bfloat16 if cuda else torch.float32).eval()
draw = torch.Generator().manual_seed(1)
prompts = [torch.randint(1000, 40000, (int(n),), generator=draw).tolist()
           for n in torch.randint(8, 25, (24,), generator=draw)]
for run in range(3 if cuda else 1):
    start = time.perf_counter()
    out, stats = nanodllm.sampler.autoregressive_generate(model, prompts, max_new_tokens=new_tokens, slots=1,
                                                          cuda_graphs=cuda, compile=cuda)
    wall = time.perf_counter() - start  # (the sampler synchronizes before it returns)
    print(f"run {run}: {sum(len(o) for o in out)} tokens, {stats.nfe} passes, {stats.seconds:.3f} s timed, "
          f"{1000 * stats.seconds / stats.nfe:.4f} ms per pass ({wall:.1f} s with what is not timed)", flush=True)
