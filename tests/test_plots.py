import json

import torch

from nanodllm import plots, recipes
from nanodllm.config import TrainConfig
from nanodllm.data import Batch
from nanodllm.tokenizer import EOS_ID


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
