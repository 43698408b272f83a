import json

import pytest
import torch

from nanodllm import plots, recipes
from nanodllm.data import Batch
from nanodllm.tokenizer import EOS_ID, MASK_ID


def test_mask_kinds_names_every_kind_of_position():
    tokens = torch.tensor([[5, 6, 7, EOS_ID, 8, EOS_ID, EOS_ID, EOS_ID]])
    is_prompt = torch.tensor([[True, False, False, False, False, False, False, False]])
    is_pad = torch.tensor([[False, False, False, False, False, False, True, True]])
    masked = torch.tensor([[False, True, False, True, False, False, True, False]])
    example = recipes.Example(tokens, tokens, masked, torch.ones(1, 8), masked.sum())
    kinds = plots.mask_kinds(Batch(tokens, is_prompt, is_pad), example, EOS_ID)[0].tolist()
    assert [plots.MASK_KINDS[k] for k in kinds] == [
        "prompt (never masked)", "response, masked", "response, visible", "EOS, masked", "response, visible",
        "EOS, visible", "pad, masked", "pad, visible"]


def test_figures_are_written(tmp_path, tiny_data):
    plots.masking_figure(tiny_data, tmp_path / "masking.png", seq_len=160)
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(json.dumps(r) for r in (
        {"step": 0, "val_loss": 9.0, "val_nll": 9.5}, {"step": 10, "loss": 5.0}, {"step": 10, "val_loss": 4.0,
                                                                                "val_nll": 4.5})))
    plots.main([str(log), "--out", str(tmp_path / "loss.png")])
    assert (tmp_path / "masking.png").stat().st_size > 10_000 and (tmp_path / "loss.png").stat().st_size > 10_000
    assert plots.read_log(log)[1][-1]["val_nll"] == 4.5


def block_trace():
    """A hand-made sample.py --trace_out trace: one batch of two rows, block_size 4. Row 0 commits three tokens
    in its second step, opens block 2, fills it in one step, commits its EOS in block 3 (the rest of that block
    is cut away) and keeps its output while row 1 decodes on."""
    M, E = MASK_ID, EOS_ID
    done = [12, 11, 13, 14, 15, 16, 17, 18, 19, E]
    row0 = [[M, 11, M, M], [12, 11, 13, 14], [12, 11, 13, 14, 15, M, M, M], [12, 11, 13, 14, 15, 16, 17, 18],
            done, done, done]
    row1 = [[M] * 3 + [21], [M, 22, M, 21], [23, 22, 24, 21], [23, 22, 24, 21, M, M, 25, M],
            [23, 22, 24, 21, M, 26, 25, M], [23, 22, 24, 21, 27, 26, 25, M], [23, 22, 24, 21, 27, 26, 25, E]]
    return {"sampler": "block", "knobs": {"block_size": 4, "threshold": 0.9, "max_new_tokens": 12},
            "mask_id": M, "eos_id": E, "samples": [{"prompt": "Tom had", "prompt_ids": [13787, 550]}] * 2,
            "calls": [{"samples": [0, 1], "frames": [list(rows) for rows in zip(row0, row1)]}]}


def test_decoding_states_follow_the_canvas():
    absent, masked, earlier, new, eos = range(len(plots.DECODE_STATES))
    states = plots.decoding_states(plots.sample_frames(block_trace(), 0), MASK_ID, EOS_ID).tolist()
    assert plots.DECODE_STATES[new] == "committed at this step"
    assert states[0] == [masked, new, masked, masked] + [absent] * 6
    assert states[1] == [new, earlier, new, new] + [absent] * 6  # three tokens in one step
    assert states[2] == [earlier] * 4 + [new, masked, masked, masked] + [absent] * 2  # block 2 opens
    assert states[4] == [earlier] * 8 + [new, eos]  # the step that commits EOS ends the row
    assert states[6] == [earlier] * 9 + [eos]


def test_block_decoding_figure(tmp_path):
    trace = tmp_path / "trace.json"
    trace.write_text(json.dumps(block_trace()))
    plots.main(["--block_decoding", str(trace), "--sample", "1", "--out", str(tmp_path / "row1.png")])
    plots.plot_block_decoding(block_trace(), tmp_path / "row0.png", sample=0, max_columns=6)
    assert (tmp_path / "row0.png").stat().st_size > 10_000 and (tmp_path / "row1.png").stat().st_size > 10_000


def test_block_decoding_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="sample.py --trace_out"):
        plots.plot_block_decoding(tmp_path / "missing.json", tmp_path / "x.png")
    with pytest.raises(ValueError, match="no frames"):
        plots.plot_block_decoding({**block_trace(), "calls": [{"samples": [0], "frames": []}]}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="holds samples 0..1"):
        plots.plot_block_decoding(block_trace(), tmp_path / "x.png", sample=2)
    with pytest.raises(SystemExit):  # the CLI: one line on stderr, no traceback
        plots.main(["--block_decoding", str(tmp_path / "missing.json"), "--out", str(tmp_path / "x.png")])
    assert not (tmp_path / "x.png").exists()


def test_plot_intervals(tmp_path):
    panels = {"terminated": {"dllm_var / block": dict(mean=0.3, low=0.2, high=0.4),
                             "ar / ar": dict(mean=1.0, low=1.0, high=1.0)},
              "exact length": {"dllm_var / block": dict(mean=None, low=None, high=None)}}
    plots.plot_intervals(panels, tmp_path / "rates.png", "a study")
    assert (tmp_path / "rates.png").stat().st_size > 10_000
