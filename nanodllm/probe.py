"""Where does a model put EOS inside one block of masks? A probe of the cue a training layout can teach.

Block decoding stops when the model commits EOS inside the block it is writing. Whether it does so at the right
place depends on what the training layout taught it, and the layout can teach a shortcut instead of the content:
  row scope (dLLM-Var)  every EOS in training is followed by the next sample's prompt, never by masks: a model can
                        learn "EOS comes right before a prompt", and at inference no prompt ever comes;
  sample scope          every EOS is the last position its sample can see: a model can learn "EOS goes at the
                        end of what I see", and at inference that is the end of the current block.

The probe asks one question many times. For a held-out pair whose response has n tokens, it shows the model the
prompt, the first s tokens of the true response (as if the blocks before had been decoded right), and one block
of b masks, and reads in one forward pass the first position of the block whose top token is EOS. The true EOS
is at j = n - s inside the block, or past it (j >= b), when the right answer is "no EOS in this block". Each
(block length b, true offset j) cell counts four outcomes:

  true        EOS first at j (for j >= b: no EOS at all, the right answer there)
  block_end   EOS first at the block's last position b - 1, which is not j
  other       EOS first anywhere else
  none        no EOS in the block (when j < b: the model would write past its answer)

A model that learned the stop from the content answers "true" whatever b and j. A sample-scope shortcut shows
as block_end, a row-scope one as none. A block_causal model (the block_diffusion recipe) decodes in its own
blocks, aligned to multiples of its attn_block_size, so for it b is that size and the block starts on a block
boundary; a bidirectional model is probed at several b. (The context's own start then falls wherever its length
puts it: as in block_diffusion's stream-packed training, not as in block_pad's, where every sample starts on a
block boundary, as a prompt decoded by sampler.batches does: read a block_pad model's probe with that in mind.)
"""

import torch

from nanodllm.metrics import first_true
from nanodllm.sampler import make_canvas

OUTCOMES = ("true", "block_end", "other", "none")
BLOCK_LENGTHS = (8, 16, 32, 64)


def offsets(b: int) -> dict[str, int]:
    """The true EOS offsets j probed in a block of b: its first, middle and last position, and past the block."""
    return {"first": 0, "middle": b // 2, "last": b - 1, "past": b + b // 2}


def outcome(first_eos: int, j: int, b: int) -> str:
    """The outcome of one probe: first_eos is the first position of the block whose top token is EOS (b: none)."""
    if first_eos == b:
        return "true" if j >= b else "none"
    if first_eos == j:
        return "true"
    return "block_end" if first_eos == b - 1 else "other"


@torch.no_grad()
def first_eos_in_block(model, contexts, b: int, autocast_ctx) -> list[int]:
    """For each context (token list: prompt + revealed response), the first position of a block of b masks after
    it whose top token is EOS, b where there is none. One forward pass for all contexts."""
    cfg = model.config
    x, starts, key_mask, positions = make_canvas(model, contexts, b, cfg.mask_id, "probe")
    P = starts[0]  # every row's first generated column (block=1)
    extra = -P % cfg.attn_block_size if cfg.attention == "block_causal" else 0
    if extra:  # hidden columns in front, so that the block starts on one of the model's block boundaries
        B, T = x.shape
        key_mask = torch.ones(B, T, dtype=torch.bool, device=x.device) if key_mask is None else key_mask
        positions = torch.arange(T, device=x.device).expand(B, T) if positions is None else positions
        x = torch.cat([x.new_full((B, extra), cfg.pad_id), x], dim=1)  # (B, extra + T)
        key_mask = torch.cat([key_mask.new_zeros(B, extra), key_mask], dim=1)
        positions = torch.cat([positions.new_zeros(B, extra), positions], dim=1)
        P += extra
    with autocast_ctx:
        logits = model(x, positions=positions, attn_mask=key_mask, logits_at=(slice(None), slice(P, P + b)))
    return first_true(logits.argmax(dim=-1) == cfg.eos_id).tolist()  # (B, b) -> (B,)


def eos_block_probe(model, pairs, autocast_ctx, block_lengths=BLOCK_LENGTHS, batch_size: int = 16) -> dict:
    """{b: {offset name: {"j": j, "n": pairs probed, outcome: rate}}} over the (prompt, response) pairs whose
    response is long enough to put its EOS at offset j (n >= j), and whose canvas fits the model's context."""
    if model.config.attention == "causal":
        raise ValueError("the EOS block probe needs a masked-diffusion model (a causal one writes no block)")
    if model.config.attention == "block_causal":
        block_lengths = (model.config.attn_block_size,)
    result = {}
    for b in block_lengths:
        result[b] = {}
        for name, j in offsets(b).items():
            room = model.config.max_seq_len - b  # prompt + shown response must leave room for the block
            chosen = [(p, r) for p, r in pairs if len(r) >= j and len(p) + len(r) - j <= room]
            counts = dict.fromkeys(OUTCOMES, 0)
            for i in range(0, len(chosen), batch_size):
                chunk = chosen[i:i + batch_size]
                contexts = [list(p) + list(r[:len(r) - j]) for p, r in chunk]
                for first in first_eos_in_block(model, contexts, b, autocast_ctx):
                    counts[outcome(first, j, b)] += 1
            n = len(chosen)
            result[b][name] = dict(j=j, n=n, **{k: (v / n if n else float("nan")) for k, v in counts.items()})
    return result
