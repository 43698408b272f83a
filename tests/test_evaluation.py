"""Tests of nanodllm/evaluation.py's pieces on a tiny random model (eval_eos.py runs them end to end)."""

from contextlib import nullcontext

import pytest
import torch

from nanodllm import evaluation
from nanodllm.sampler_stats import GenerationStats
from nanodllm.tokenizer import get_tokenizer
from tests.conftest import tiny_model


def test_first_step_rows_are_computed_as_if_alone_and_revealed_positions_hold_no_eos():
    model = tiny_model().eval()
    pairs = [([1, 2, 3], [10, 11, 12, 13]), ([4], [14, 15]), ([5, 6, 7, 8, 9], [])]  # prompts of 3 lengths
    batched, _ = evaluation.first_step_eos(model, pairs, 8, 0.0, 3, 0, nullcontext())
    for i, pair in enumerate(pairs):
        alone, _ = evaluation.first_step_eos(model, [pair], 8, 0.0, 1, 0, nullcontext())
        torch.testing.assert_close(torch.tensor(batched[i]), torch.tensor(alone[0]))
    eos_prob, eos_is_argmax = evaluation.first_step_eos(model, pairs, 8, 0.5, 3, 0, nullcontext())
    assert [(row == 0).sum() for row in eos_prob] == [2, 1, 0]  # half of each response shown, never an EOS
    assert not eos_is_argmax[eos_prob == 0].any()
    for row, (_, response) in zip(eos_prob, pairs):
        assert (row[len(response):] > 0).all()  # only positions of the response are ever shown


def test_first_step_test_leaves_out_pairs_whose_eos_is_off_the_canvas():
    model = tiny_model().eval()
    pairs = [([1, 2], [10, 11]), ([3], list(range(20, 28)))]  # the second response needs 8 + 1 positions
    out, heatmap = evaluation.first_step_test(model, pairs, 6, [0.0, 0.5], 2, 2, 0, nullcontext())
    assert out["n_beyond_canvas"] == 1 and set(out["by_reveal"]) == {"0", "0.5"}
    assert out["by_reveal"]["0"]["n"] == 1 and heatmap["true_len"].tolist() == [2] and heatmap["reveal"] == 0.0


def test_scores_of_known_responses():
    tok = get_tokenizer()
    pairs = [([1, 2], [5, 6, 7]), ([3], [8, 9])]
    completions = [[5, 6, 7, tok.eos_id], [8, 9, 8, 9, 8]]  # the first exactly right, the second cut at the cap
    scores, responses = evaluation.score_responses(completions, pairs, "tinystories", None, 2, nullcontext())
    assert responses == [[5, 6, 7], [8, 9, 8, 9, 8]] and scores["generated_lengths"] == [3, 5]
    assert scores["termination_rate"] == 0.5 and scores["mae"] == 1.5 and scores["gen_ppl"] is None


def test_room_and_run_name(tmp_path):
    model = tiny_model()  # max_seq_len 256
    evaluation.check_room(model, 200, {"the block sampler": (56, "--max_new_tokens")})
    with pytest.raises(evaluation.EvaluationError, match="pass --max_new_tokens 56"):
        evaluation.check_room(model, 200, {"the block sampler": (57, "--max_new_tokens")})
    assert evaluation.run_name(tmp_path / "out" / "tiny") == "tiny"
    assert evaluation.run_name(tmp_path / "out" / "tiny" / "ckpt_0000400") == "tiny"


def test_a_block_causal_model_decodes_each_prompt_as_if_alone():
    """A block_causal model's batches hold prompts of equal length modulo its block, so that left padding is whole
    blocks: generation and the first-step test give every row what it gets alone, whatever shares its batch."""
    model = tiny_model(attention="block_causal", attn_block_size=4).eval()
    prompts = [[1, 2, 3], [4], [5, 6, 7, 8, 9], [10, 11], [12, 13, 14, 15, 16, 17, 18]]  # lengths 3 1 5 2 7
    knobs = dict(block_size=4, max_new_tokens=12, threshold=0.9)
    batched, _, _ = evaluation.generate_all(model, "block", prompts, knobs, 5, 0, nullcontext())
    alone = [evaluation.generate_all(model, "block", [p], knobs, 1, 0, nullcontext())[0][0] for p in prompts]
    assert batched == alone
    pairs = [(p, [20, 21]) for p in prompts]
    eos_prob, _ = evaluation.first_step_eos(model, pairs, 8, 0.0, 5, 0, nullcontext())
    for i, pair in enumerate(pairs):
        alone, _ = evaluation.first_step_eos(model, [pair], 8, 0.0, 1, 0, nullcontext())
        torch.testing.assert_close(eos_prob[i], alone[0])


@pytest.mark.parametrize("attention, expected", [("block_causal", [1, 0, 0, 1]), ("bidirectional", [0, 1, 1, 0])])
def test_block_sampler_results_say_where_in_its_blocks_each_eos_fell(monkeypatch, attention, expected):
    """A block_causal model's blocks are counted from the row's start (prompt lengths 3 and 1 end at slots 3 and
    1 of a block of 4), any other model's from the prompt's end; an unfinished answer has no EOS to place."""
    tok = get_tokenizer()
    model = tiny_model(attention=attention, attn_block_size=4).eval()
    pairs = [([1, 2, 3], [7]), ([4], [7, 7]), ([5, 6], [7])]
    completions = [[7, tok.eos_id], [7, 7, tok.eos_id], [7, 7, 7]]  # answers of 1 and 2 tokens, then one cut off
    stats = GenerationStats.of(completions, tok.eos_id, 1, 3, 1.0)
    monkeypatch.setattr(evaluation, "generate_all", lambda *args: (completions, stats, []))
    results, _ = evaluation.generation_results(model, ["block"], pairs, dict(block_size=4), "tinystories", None, 3, 0,
                                               nullcontext())
    assert results["block"]["eos_block_slots"] == expected and results["block"]["eos_last_slot"] == expected[-1] / 2
