"""bench.py with q/k/v computed as one matmul, and SwiGLU's gate and up branch as one, a training lever measured
on the H200 on 2026-12-03 and not adopted (docs/speed.md). The model keeps its separate Linears (LLaDA's
checkpoint names); the forward concatenates their weights and splits the product:

    PYTHONPATH=. python scripts/fused_projections.py config/gpt2.py --batch_size=32 --gradient_accumulation_steps=1 \
        --steps=15 --warmup=5 --loss_gather=indices --profile=1

Every argument is bench.py's. One product instead of three (two) saved 1.2 ms of matmul per step, but the
compiled backward of the concatenation cost more than that (one fused kernel of 6 ms): 64.4 against 61.4 ms.
Stored as one weight, the model would save the matmul time without the concatenation, about 2% of the step.
"""

import sys

import torch
import torch.nn.functional as F

import bench
from nanodllm import model


def attention_forward(self, x, cos, sin, bias, is_causal, kv_cache, write_at, layer):
    B, T, _ = x.shape
    H, K, D = self.n_head, self.n_kv_head, self.head_dim
    w = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])  # ((H + 2K) D, C)
    q, k, v = F.linear(x, w).split([H * D, K * D, K * D], dim=-1)  # (B, T, HD), (B, T, KD), (B, T, KD)
    q = q.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
    k = k.view(B, T, K, D).transpose(1, 2)  # (B, K, T, D)
    v = v.view(B, T, K, D).transpose(1, 2)  # (B, K, T, D)
    q, k = model.apply_rotary(q, cos, sin), model.apply_rotary(k, cos, sin)
    if kv_cache is not None:
        k, v = kv_cache.update(layer, k, v, write_at)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=is_causal, enable_gqa=K != H)
    return self.attn_out(y.transpose(1, 2).reshape(B, T, -1))  # (B, T, C)


def mlp_forward(self, x):
    w = torch.cat([self.ff_proj.weight, self.up_proj.weight])  # (2 hidden, C)
    gate, up = F.linear(x, w).chunk(2, dim=-1)  # (B, T, hidden) each
    return self.ff_out(F.silu(gate) * up)


if __name__ == "__main__":
    model.Attention.forward, model.MLP.forward = attention_forward, mlp_forward
    bench.main(sys.argv[1:])
