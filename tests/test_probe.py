"""nanodllm/probe.py on hand-built models whose stopping rule is known."""

from contextlib import nullcontext

import pytest
import torch

from nanodllm.model import ModelConfig
from nanodllm.probe import eos_block_probe, outcome

EOS, MASK, PAD, WORD, V = 127, 126, 125, 7, 128


class RuleModel(torch.nn.Module):
    """Puts EOS where `rule` says: rule(length stated by the prompt, response tokens shown, block columns) ->
    the block column of EOS, or None. A prompt is one token, the answer's length; the answer is WORD repeated."""

    def __init__(self, rule, attention="bidirectional"):
        super().__init__()
        self.config = ModelConfig(vocab_size=V, n_layer=1, n_head=1, n_kv_head=1, d_model=4, mlp_hidden=4,
                                  max_seq_len=256, attention=attention, attn_block_size=8, mask_id=MASK,
                                  eos_id=EOS, pad_id=PAD)
        self.weight = torch.nn.Parameter(torch.zeros(1))  # a device for the canvas
        self.rule = rule

    def forward(self, idx, positions=None, attn_mask=None, logits_at=None):
        B, T = idx.shape
        logits = torch.zeros(B, T, V)
        logits[..., WORD] = 1.0
        block = range(T)[logits_at[1]]
        for r in range(B):
            real = attn_mask[r] if attn_mask is not None else torch.ones(T, dtype=torch.bool)
            length = int(idx[r][real][0])
            at = self.rule(length, int((idx[r] == WORD).sum()), len(block))
            if at is not None:
                logits[r, block.start + at, EOS] = 2.0
        return logits[logits_at]


def pairs(lengths=(3, 10, 20, 40, 70, 100)):
    return [([n], [WORD] * n) for n in lengths]


def probe(rule, attention="bidirectional"):
    return eos_block_probe(RuleModel(rule, attention), pairs(), nullcontext(), block_lengths=(8, 32), batch_size=4)


def test_a_model_that_reads_the_length_is_always_right():
    def content(length, shown, b):
        j = length - shown
        return j if j < b else None
    for cells in probe(content).values():
        assert all(c["true"] == 1.0 for c in cells.values())


def test_the_sample_scope_shortcut_shows_as_block_end():
    for b, cells in probe(lambda length, shown, b: b - 1).items():
        assert cells["first"]["block_end"] == cells["middle"]["block_end"] == cells["past"]["block_end"] == 1.0
        assert cells["last"]["true"] == 1.0  # the end of the block is the right place there


def test_the_row_scope_shortcut_shows_as_none():
    for cells in probe(lambda length, shown, b: None).values():
        assert cells["first"]["none"] == cells["last"]["none"] == 1.0 and cells["past"]["true"] == 1.0


def test_cells_count_only_answers_long_enough_for_the_offset():
    cells = probe(lambda length, shown, b: None)
    assert cells[8]["first"]["n"] == 6 and cells[8]["past"]["n"] == 4  # j = 12: not the answers of 3 and 10
    assert cells[32]["past"]["j"] == 48 and cells[32]["past"]["n"] == 2  # only the answers of 70 and 100


def test_a_block_causal_model_is_probed_in_its_own_aligned_blocks():
    seen = []

    def rule(length, shown, b):
        seen.append(b)
        return None
    result = probe(rule, attention="block_causal")
    assert list(result) == [8] and set(seen) == {8}


def test_outcome_rules():
    assert outcome(3, 3, 8) == "true" and outcome(8, 12, 8) == "true" and outcome(8, 3, 8) == "none"
    assert outcome(7, 3, 8) == "block_end" and outcome(2, 3, 8) == "other" and outcome(7, 7, 8) == "true"
    with pytest.raises(ValueError, match="masked-diffusion"):
        eos_block_probe(RuleModel(lambda *a: None, attention="causal"), pairs(), nullcontext())
