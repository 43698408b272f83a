"""The model: a LLaDA-style transformer, bidirectional by default.

A masked-diffusion LM is an ordinary transformer with two changes: attention is not causal (every position sees
the whole sequence, since the tokens to predict are scattered anywhere), and the targets are the input tokens
themselves at the masked positions (no shift by one; `output_shift` puts DiffuGPT's shift back, below).
Everything else is LLaMA's recipe as LLaDA uses it: RMSNorm before each sub-layer, rotary position embeddings
(RoPE), a SwiGLU MLP, no biases, an output head that is not tied to the input embedding. Parameter names follow
LLaDA's checkpoints (`transformer.blocks.3.q_proj`, `ff_out`, ...) so its published weights load with a plain
rename (nanodllm/llada.py's from_pretrained).

Read it top to bottom: config, then the pieces bottom-up (norm, rotary, attention, MLP, block), then the model.
Shape letters: B batch, T new tokens, L cached tokens, H heads, K key/value heads, D head dim, C model width.

The `attention` option picks the mask:
  bidirectional  every token sees every token (LLaDA, dLLM-Var).
  causal         an ordinary GPT, our autoregressive baseline, trained and sampled with the same code.
  block_causal   tokens see their own block and all earlier blocks (BD3-LM). With it the block sampler's
                 KV cache is exact, which is how the tests check the cache.
One function, attention_mask, builds every mask: the model's own, and the ones the samplers pass in.

output_shift (DiffuGPT, for a model adapted from an autoregressive one): the output at a token predicts the
token after it, as the AR base was trained to, so a masked token is read from the output of the token before it.
Callers see no difference: logits[:, j] is still the prediction for token j; the model finds the token before
(token_before) among those j may attend to, which is the clean one in BD3-LM's two-stream rows.
"""

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from nanodllm import tokenizer

ATTENTION_KINDS = ("bidirectional", "causal", "block_causal")


@dataclass
class ModelConfig:
    vocab_size: int = tokenizer.VOCAB_SIZE
    n_layer: int = 12
    n_head: int = 12
    n_kv_head: int = 12  # fewer than n_head = grouped-query attention
    d_model: int = 768
    mlp_hidden: int = 2048  # SwiGLU hidden width (about 8/3 d_model keeps the MLP at GPT-2's cost)
    max_seq_len: int = 1024  # longest sequence RoPE tables are built for
    rope_theta: float = 500000.0
    norm_eps: float = 1e-5
    attention: str = "bidirectional"
    attn_block_size: int = 32  # block length of block_causal attention in training
    output_shift: bool = False  # predict each token from the output of the token before it (DiffuGPT)
    mask_id: int = tokenizer.MASK_ID
    eos_id: int = tokenizer.EOS_ID
    pad_id: int = tokenizer.PAD_ID

    def __post_init__(self):
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {self.attention!r}")
        if self.output_shift and self.attention == "causal":
            raise ValueError("output_shift is for masked-diffusion models adapted from an AR one: a causal model "
                             "already predicts the next token")
        if self.d_model % self.n_head or self.n_head % self.n_kv_head:
            raise ValueError(f"d_model ({self.d_model}) must divide by n_head ({self.n_head}) and n_head by "
                             f"n_kv_head ({self.n_kv_head})")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head


# Sizes, smallest first. Each one trains with the same code; only the numbers change.
PRESETS = {
    "tiny": dict(n_layer=6, n_head=6, n_kv_head=6, d_model=384, mlp_hidden=1024, max_seq_len=512),
    "small": dict(n_layer=8, n_head=8, n_kv_head=8, d_model=512, mlp_hidden=1408, max_seq_len=1024),
    "gpt2": dict(n_layer=12, n_head=12, n_kv_head=12, d_model=768, mlp_hidden=2048, max_seq_len=1024),
    "1b": dict(n_layer=16, n_head=16, n_kv_head=16, d_model=2048, mlp_hidden=5632, max_seq_len=2048),
    # LLaDA-8B's own shape and token ids (its tokenizer, not GPT-2's), for loading its weights.
    "llada-8b": dict(n_layer=32, n_head=32, n_kv_head=32, d_model=4096, mlp_hidden=12288, max_seq_len=4096,
                     vocab_size=126464, mask_id=126336, eos_id=126081, pad_id=126081),
}


def preset(name: str, **overrides) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return ModelConfig(**{**PRESETS[name], **overrides})


def linear_output_dtype(x) -> torch.dtype:
    """The dtype a Linear layer's output has for the input x: autocast's dtype when autocast is on for x's device,
    else x's own (the weights' dtype in a plain model; FSDP's param_dtype, which the embedding's output has too)."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in float32 whatever the input dtype (as LLaDA does).

    Decoding under autocast, it comes out in the autocast dtype (bf16): every reader of a norm is a Linear, which
    would cast it to bf16 itself, and the attention norm has three (q, k, v): three casts of one tensor, where
    one does, with the same bits. Not in training: there the three Linears' gradients reach the norm through
    their own casts and are summed in float32; through one cast they would be summed in bf16."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        # x * rsqrt(mean(x^2) + eps) * weight, accumulated in float32 and returned in x's dtype. Written out, that
        # is six CUDA kernels; F.rms_norm is one, which matters for a decoding pass made of small kernels.
        y = F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        return y if torch.is_grad_enabled() else y.to(linear_output_dtype(y))  # a no-op without autocast


class Rotary(nn.Module):
    """Rotary position embeddings: each pair of channels is rotated by an angle proportional to the position,
    so the dot product of a query and a key depends only on how far apart they are.

    Channel i is paired with channel i + D/2 ("rotate half", LLaMA's and LLaDA's layout): the pair (a, b) turns
    into (a cos - b sin, b cos + a sin). The table keeps sin with the sign of each half built in, -sin for the
    first half and +sin for the second, so that apply_rotary is x * cos + swap(x) * sin: no negation to launch."""

    def __init__(self, head_dim: int, max_seq_len: int, theta: float):
        super().__init__()
        inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), inv_freq)  # (max_seq_len, D/2)
        angles = torch.cat([angles, angles], dim=-1)  # (max_seq_len, D): "rotate half" pairs i with i + D/2
        sign = torch.cat([-torch.ones(head_dim // 2), torch.ones(head_dim // 2)])  # (D,)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin() * sign, persistent=False)

    def forward(self, positions):
        """positions (T,) or (B, T) -> cos, sin shaped to broadcast over (B, H, T, D)."""
        cos, sin = self.cos[positions], self.sin[positions]  # (T, D) or (B, T, D)
        if positions.dim() == 2:
            cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, D)
        return cos, sin


def apply_rotary(x, cos, sin):
    """x (B, H, T, D) rotated in float32 (as LLaDA does), returned in x's dtype; sin carries the halves' signs
    (Rotary). A bf16 x times the float32 tables is computed in float32, with no cast of its own."""
    swapped = x.roll(x.shape[-1] // 2, dims=-1)  # (B, H, T, D): the halves swapped, [x2, x1]
    return (x * cos + swapped * sin).to(x.dtype)


class KVCache(nn.Module):
    """Keys and values of a committed prefix (the prompt and finished blocks), preallocated.

    A forward pass writes its new keys/values right after the committed `length` and attends over
    [0, length + T). Only `commit(n)` makes the first n of them permanent; uncommitted ones are scratch that the
    next pass overwrites. That is all dLLM-Var's cache needs: steps inside a block commit nothing, and the pass
    that holds [finished block, next all-mask block] commits the finished block.

    A pass recorded as a CUDA graph (nanodllm/cuda_graphs.py) cannot depend on the Python int `length`: it names
    the columns to write as a (T,) tensor, `write_at`, and attends over the whole buffer under its own mask.
    """

    def __init__(self, n_layer, batch_size, n_kv_head, max_len, head_dim, dtype, device):
        super().__init__()
        shape = (n_layer, batch_size, n_kv_head, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.length = 0  # committed positions (a Python int: slicing by it needs no GPU sync)

    @classmethod
    def for_model(cls, model, batch_size, max_len):
        c = model.config
        p = model.transformer.wte.weight
        return cls(c.n_layer, batch_size, c.n_kv_head, max_len, c.head_dim, linear_output_dtype(p), p.device)

    def update(self, layer: int, k, v, write_at=None):
        """Writes k, v (B, K, T, D) after the committed prefix, or at the columns `write_at`: (T,), the same for
        every row, or (B, T), each row's own (rows that decode at their own pace, the block sampler's slots);
        returns the keys/values to attend over: the prefix and the new ones, or with `write_at` the whole buffer
        (the caller's mask then hides the columns not written yet)."""
        if write_at is not None:
            if torch.compiler.is_compiling():  # torch.compile turns a scatter_ or index_copy_ into the layer's
                # view into two copies of the whole layer; index_put_ on the whole buffer, every index a tensor,
                # it writes in place (it takes 212 us per pass uncompiled; docs/speed.md)
                layer_at = write_at.new_full((1, 1), layer)
                rows = torch.arange(len(k), device=write_at.device)[:, None]  # (B, 1)
                self.k[layer_at, rows, :, write_at] = k.transpose(1, 2)  # (B, T, K, D) at each row's columns
                self.v[layer_at, rows, :, write_at] = v.transpose(1, 2)
            elif write_at.dim() == 1:  # index_copy_: 24 writes of a gpt2-preset pass take 74 us on an H200, where
                # scatter_ with the columns repeated per row takes 110
                self.k[layer].index_copy_(2, write_at, k)
                self.v[layer].index_copy_(2, write_at, v)
            else:  # each row's own columns: scatter_, 110 us per pass
                at = write_at[:, None, :, None].expand_as(k)  # (B, K, T, D): each row's columns, every head
                self.k[layer].scatter_(2, at, k)
                self.v[layer].scatter_(2, at, v)
            return self.k[layer], self.v[layer]  # (B, K, max_len, D)
        end = self.length + k.shape[2]
        if end > self.k.shape[3]:
            raise RuntimeError(f"KV cache overflow: {end} positions > max_len {self.k.shape[3]}")
        self.k[layer, :, :, self.length:end] = k
        self.v[layer, :, :, self.length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]  # (B, K, L+T, D)

    def write_prefix(self, rows, k, v):
        """The first P columns of the rows where `rows` (B,) is True set to k, v (n_layer, B, K, P, D), the other
        rows' kept, without a branch on the data, so that a recorded pass can do it (the AR slots: a row taking a
        new prompt gets the prompt's keys and values, computed before the loop)."""
        L, B, K, P, _ = k.shape
        keep = ~rows[None, :, None, None, None]  # (1, B, 1, 1, 1)
        for cache, new in ((self.k, k), (self.v, v)):
            prefix = torch.where(keep, cache[:, :, :, :P], new)  # (L, B, K, P, D)
            if torch.compiler.is_compiling():  # as in update: in a pass that also writes the cache by index_put_,
                # torch.compile turns a slice assignment into a copy of the whole cache in and out; index_put_ on
                # the whole buffer, every index a tensor, it writes in place (tests/test_model.py): 14 us less of
                # the AR slots' 0.86 ms pass on an H200 (scripts/ar_prefill_ab.py, docs/speed.md)
                cache[torch.meshgrid(*(torch.arange(n, device=k.device) for n in (L, B, K, P)), indexing="ij")] = prefix
            else:
                cache[:, :, :, :P] = prefix

    def commit(self, n: int):
        self.length += n

    def keep_rows(self, rows):
        """Drops finished rows of the batch (rows: a LongTensor of the rows to keep)."""
        self.k = self.k.index_select(1, rows)
        self.v = self.v.index_select(1, rows)


class Attention(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = c.n_head, c.n_kv_head, c.head_dim
        self.q_proj = nn.Linear(c.d_model, c.n_head * c.head_dim, bias=False)
        self.k_proj = nn.Linear(c.d_model, c.n_kv_head * c.head_dim, bias=False)
        self.v_proj = nn.Linear(c.d_model, c.n_kv_head * c.head_dim, bias=False)
        self.attn_out = nn.Linear(c.n_head * c.head_dim, c.d_model, bias=False)

    def forward(self, x, cos, sin, bias, is_causal, kv_cache, write_at, layer):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, K, T, D)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, K, T, D)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if kv_cache is not None:
            k, v = kv_cache.update(layer, k, v, write_at)  # (B, K, L+T, D)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=is_causal,
                                           enable_gqa=self.n_kv_head != self.n_head)  # (B, H, T, D)
        return self.attn_out(y.transpose(1, 2).reshape(B, T, -1))  # (B, T, C)


class MLP(nn.Module):
    """SwiGLU: a gate (ff_proj) through SiLU times a linear branch (up_proj), projected back (ff_out)."""

    def __init__(self, c: ModelConfig):
        super().__init__()
        self.ff_proj = nn.Linear(c.d_model, c.mlp_hidden, bias=False)
        self.up_proj = nn.Linear(c.d_model, c.mlp_hidden, bias=False)
        self.ff_out = nn.Linear(c.mlp_hidden, c.d_model, bias=False)

    def forward(self, x):
        return self.ff_out(F.silu(self.ff_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(c.d_model, c.norm_eps)
        self.attn = Attention(c)
        self.ff_norm = RMSNorm(c.d_model, c.norm_eps)
        self.mlp = MLP(c)

    def forward(self, x, cos, sin, bias, is_causal, kv_cache, write_at, layer):
        x = x + self.attn(self.attn_norm(x), cos, sin, bias, is_causal, kv_cache, write_at, layer)
        return x + self.mlp(self.ff_norm(x))


def attention_mask(queries, keys, *, segments=None, real_keys=None, samples=None):
    """The one attention mask of training and of every sampler pass: True where a query may attend to a key.

    queries (T,) and keys (S,) are the columns of the sequence (or of the KV cache) the pass computes and reads;
    queries may be (B, T) instead, each row's own (the block sampler's slots, where rows decode different blocks).
    Three rules, each optional, all of which must hold:
      segments   (N,) segment id of every column: a query sees keys of its own segment and earlier ones. Segment =
                 column is causal attention; column // block is block-causal (BD3-LM); None is bidirectional.
      real_keys  (B, S) bool: False at keys nobody may see (left padding, cache columns not written yet).
      samples    (B, N) sample id of every column: a query sees only keys of its own sample (packed rows whose
                 samples must not see each other, training's attention_scope="sample"); (T,) queries only.
    And a token always sees itself: a padding query has no real key to look at, and a row of all-False makes
    softmax NaN, which then leaks into every output through 0 * NaN in the value product.
    -> (B, 1, T, S), or (1, 1, T, S) when no rule is per row.
    """
    itself = keys == queries[..., None]  # (T, S) or (B, T, S)
    allowed = torch.ones_like(itself) if segments is None else segments[keys] <= segments[queries][..., None]
    itself, allowed = (itself[None, None], allowed[None, None]) if queries.dim() == 1 else \
        (itself[:, None], allowed[:, None])  # (1 or B, 1, T, S)
    if real_keys is not None:
        allowed = allowed & real_keys[:, None, None, :]  # (B, 1, T, S)
    if samples is not None:
        allowed = allowed & (samples[:, queries][:, None, :, None] == samples[:, keys][:, None, None, :])
    return allowed | itself


def attention_bias(mask, dtype):
    """A boolean mask (True = may attend) as the attention adds it to its scores: 0 where a query may attend, -inf
    where it may not, in the queries' dtype -> a tensor of mask's shape.

    SDPA takes the boolean mask as it is, but converts it itself, in every layer: about 3 more small kernels per
    layer, the same mask converted 12 times in a pass of the gpt2 preset. Converted once per forward pass here,
    every layer reads the same one: 34 kernels and 4% fewer per decoding pass on the H200 (docs/speed.md).
    Its rows lie 16 elements apart in memory (the tensor is a view of the first S columns of a wider one): the
    alignment PyTorch's memory-efficient attention requires of a mask, which it would otherwise pad into a copy,
    again in every layer."""
    S = mask.shape[-1]
    aligned = torch.full((*mask.shape[:-1], -(-S // 16) * 16), float("-inf"), dtype=dtype, device=mask.device)
    return aligned[..., :S].masked_fill_(mask, 0.0)


def token_before(positions, mask, write_at, T: int):
    """output_shift: for each of a pass's T tokens, the index among them of the token one position earlier that it
    may attend to -> (B or 1, T). In a plain row that is the previous column; in BD3-LM's two-stream row a noisy
    block's first token finds the clean stream's token (it cannot see the noisy one). A token with none (the
    first of a row, of a sample or of a pass after a KV cache) keeps its own index. The samplers and the block
    recipes never read that output as a prediction (it is a prompt token; the block sampler feeds the column
    before its block again); a stream-packed row (straddling samples) that starts with a masked token predicts
    it from itself, one position per row.
    positions (T,) or (B, T); mask None or (B or 1, 1, T, S) over the keys, the pass's own being its last T
    (or, for a CUDA-graphed pass or the slots', the columns write_at)."""
    own = torch.arange(T, device=positions.device)
    if mask is None:
        return (own - 1).clamp(min=0)[None]  # (1, T)
    if write_at is None:
        keys = mask[:, 0, :, -T:]  # (B|1, T, T)
    elif write_at.dim() == 1:
        keys = mask[:, 0].index_select(-1, write_at)  # (B|1, T, T)
    else:  # each row's own columns
        keys = mask[:, 0].gather(-1, write_at[:, None, :].expand(-1, T, -1))  # (B, T, T)
    pos = positions if positions.dim() == 2 else positions[None]  # (B|1, T)
    before = keys & (pos[:, None, :] == pos[:, :, None] - 1)  # (B|1, T, T): a key at the query's position - 1
    return torch.where(before.any(dim=-1), before.int().argmax(dim=-1), own)


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.d_model),
            blocks=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
            ln_f=RMSNorm(config.d_model, config.norm_eps),
            ff_out=nn.Linear(config.d_model, config.vocab_size, bias=False),  # the output head (LLaDA's name)
        ))
        self.rotary = Rotary(config.head_dim, config.max_seq_len, config.rope_theta)
        self.apply(self._init_weights)
        # Scale the projections that write into the residual stream, so its variance does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith("attn_out.weight") or name.endswith("mlp.ff_out.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def _mask(self, T, offset, real_keys, device):
        """The attention mask of T new tokens after `offset` cached ones -> (mask or None, is_causal)."""
        kind = self.config.attention
        if real_keys is None and kind == "bidirectional":
            return None, False
        if real_keys is None and kind == "causal" and offset == 0:
            return None, True  # the fast path: SDPA's own causal kernel
        columns = torch.arange(offset + T, device=device)
        return attention_mask(columns[offset:], columns, segments=self.segments(columns), real_keys=real_keys), False

    def segments(self, columns):
        """The attention segment of every column (attention_mask's rule): its own for causal attention, one per
        attn_block_size columns for block_causal, None (one for all) for bidirectional."""
        return {"causal": columns, "block_causal": columns // self.config.attn_block_size}.get(self.config.attention)

    def forward(self, idx, *, positions=None, attn_mask=None, kv_cache=None, write_at=None, logits_at=None):
        """idx (B, T) token ids -> logits (B, T, V), or (N, V) at the N True positions of `logits_at` (B, T).

        positions:  (T,) or (B, T) RoPE positions, each below max_seq_len; default offset + arange(T), offset =
                    cached length (block_diffusion's two streams share positions: 2T tokens on T positions).
        attn_mask:  True = may attend; (B, L+T) marks real keys (left padding), or a full (B, 1, T, L+T) mask
                    from attention_mask, which replaces the model's own (the samplers' block-causal masks).
        kv_cache:   a KVCache: attend over its committed prefix too (call kv_cache.commit(n) to keep keys).
        write_at:   (T,) or (B, T) the cache columns to write the new keys/values to, instead of right after the
                    prefix; the pass then attends over the whole cache, under a full attn_mask (cuda_graphs.py).
        logits_at:  compute the output head only where it is needed: a (B, T) bool mask (training: the masked
                    positions, which skips most of the head's FLOPs, the largest matmul of a small model) or
                    any index of the (B, T) positions, e.g. (slice(None), slice(a, b)) for one block of a
                    sampler, which unlike a bool mask needs no GPU sync.
        """
        B, T = idx.shape
        offset = kv_cache.length if kv_cache is not None else 0
        if positions is None:
            if offset + T > self.config.max_seq_len:
                raise ValueError(f"sequence of {offset + T} tokens exceeds max_seq_len {self.config.max_seq_len}")
            positions = torch.arange(offset, offset + T, device=idx.device)
        cos, sin = self.rotary(positions)
        if attn_mask is not None and attn_mask.dim() == 4:
            mask, is_causal = attn_mask, False
        else:
            mask, is_causal = self._mask(T, offset, attn_mask, idx.device)
        x = self.transformer.wte(idx)  # (B, T, C)
        bias = None if mask is None else attention_bias(mask, linear_output_dtype(x))  # (B|1, 1, T, L+T)
        for i, block in enumerate(self.transformer.blocks):
            x = block(x, cos, sin, bias, is_causal, kv_cache, write_at, i)
        x = self.transformer.ln_f(x)
        if self.config.output_shift:  # token j is predicted from the output of the token before it
            before = token_before(positions, mask, write_at, T).expand(B, T)  # (B, T)
            x = x.gather(1, before[..., None].expand(B, T, x.shape[-1]))  # (B, T, C)
        if logits_at is not None:
            x = x[logits_at]  # (N, C)
        return self.transformer.ff_out(x)  # (B, T, V) or (N, V)

    # ---- bookkeeping ---------------------------------------------------------------------------------------

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; by default without the input embedding (a lookup, not a matmul)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wte.weight.numel() if non_embedding else n

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward), PaLM's estimate as in nanoGPT: 6 per weight of every
        matmul plus attention's 12 * layers * width * seq_len. It counts the output head at every position,
        as an autoregressive model pays it, so MFU is comparable with nanoGPT's; with `logits_at` we pay less."""
        c = self.config
        return 6 * self.num_params() + 12 * c.n_layer * c.d_model * seq_len

    def config_dict(self) -> dict:
        return asdict(self.config)
