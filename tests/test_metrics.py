"""nanodllm/metrics.py on hand-built inputs whose right answers are known."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nanodllm import metrics
from tests.conftest import tiny_model

EOS = 50256


def one_hot_belief(true_len, L=10, p_true=0.9):
    """A model that puts EOS exactly at the true position: most of P(EOS) there, and EOS its argmax there only."""
    N = len(true_len)
    eos_prob = np.full((N, L), (1 - p_true) / (L - 1))
    eos_prob[np.arange(N), true_len] = p_true
    return eos_prob, eos_prob > 0.5


def test_a_model_that_places_eos_exactly_is_perfect():
    true_len = np.array([0, 3, 9, 5])
    eos_prob, eos_is_argmax = one_hot_belief(true_len)
    m = metrics.eos_position_metrics(eos_prob, eos_is_argmax, true_len)
    assert m["exact_acc"] == 1.0 and m["acc_within_k"] == 1.0 and m["mrr"] == 1.0 and m["mae"] == 0.0
    assert m["p_eos_true"] == pytest.approx(0.9) and m["n"] == 4


def test_predicted_position_is_the_first_eos_argmax_else_the_most_likely_position():
    eos_prob = np.array([[0.1, 0.6, 0.7, 0.8],  # EOS is the argmax at 1, 2, 3: the first of them counts
                         [0.1, 0.3, 0.2, 0.1]])  # never the argmax: the most likely position
    eos_is_argmax = eos_prob > 0.5
    assert metrics.predicted_eos_position(eos_prob, eos_is_argmax).tolist() == [1, 1]
    m = metrics.eos_position_metrics(eos_prob, eos_is_argmax, np.array([3, 2]), k=1)
    assert m["exact_acc"] == 0.0 and m["acc_within_k"] == 0.5 and m["mae"] == 1.5
    assert metrics.true_position_rank(eos_prob, np.array([3, 2])).tolist() == [1, 2]
    assert m["mrr"] == pytest.approx((1 + 1 / 2) / 2)


def test_eos_position_metrics_takes_tensors_and_refuses_an_eos_off_the_canvas():
    eos_prob, eos_is_argmax = one_hot_belief(np.array([1, 2]), L=4)
    m = metrics.eos_position_metrics(torch.tensor(eos_prob), torch.tensor(eos_is_argmax), torch.tensor([1, 2]))
    assert m["exact_acc"] == 1.0
    with pytest.raises(ValueError, match="canvas"):
        metrics.eos_position_metrics(eos_prob, eos_is_argmax, np.array([1, 4]))


def test_termination_and_response_length():
    never = [[5, 6, 7], [8] * 16]
    assert metrics.termination_rate(never, EOS) == 0.0
    assert metrics.termination_rate([[5, EOS], [EOS], [5, 6]], EOS) == pytest.approx(2 / 3)
    assert [metrics.response_length(c, EOS) for c in ([5, EOS], [EOS], [5, 6], [])] == [1, 0, 2, 0]


def test_length_errors_and_correlation():
    ref = np.array([10, 20, 30, 40])
    assert metrics.mean_absolute_error(ref + 2, ref) == 2.0
    assert metrics.mean_relative_error(ref * 2, ref) == 1.0
    assert metrics.mean_relative_error([3], [0]) == 3.0  # an empty reference counts as one token
    assert metrics.pearson(ref, 3 * ref + 7) == pytest.approx(1.0)
    assert metrics.pearson(ref, -ref) == pytest.approx(-1.0)
    assert math.isnan(metrics.pearson(ref, [16, 16, 16, 16]))  # a sampler stuck at its cap: undefined
    a, b = np.random.default_rng(0).normal(size=(2, 500))
    assert metrics.pearson(a, b) == pytest.approx(np.corrcoef(a, b)[0, 1])


def test_wasserstein():
    a = np.random.default_rng(0).integers(0, 300, size=200)
    assert metrics.wasserstein_1d(a, a) == 0.0
    assert metrics.wasserstein_1d(a, np.random.default_rng(1).permutation(a)) == 0.0  # order does not matter
    assert metrics.wasserstein_1d(a, a + 7) == pytest.approx(7.0)
    b = np.random.default_rng(2).integers(0, 300, size=200)
    assert metrics.wasserstein_1d(a, b) == pytest.approx(np.abs(np.sort(a) - np.sort(b)).mean())  # equal sizes
    assert metrics.wasserstein_1d([0, 0, 10], [0, 10]) == pytest.approx(10 / 6)  # unequal sizes, via the CDFs
    lm = metrics.length_metrics(a + 7, a)
    assert lm["wasserstein"] == pytest.approx(7.0) and lm["mae"] == 7.0 and lm["pearson"] == pytest.approx(1.0)


def test_accuracy_and_repetition():
    assert metrics.accuracy([True, False, True, True]) == 0.75
    assert math.isnan(metrics.accuracy([]))
    assert metrics.repetition_rate([[1, 2, 3, 4, 5, 6]]) == 0.0
    assert metrics.repetition_rate([[7] * 10]) == pytest.approx(1 - 1 / 7)  # 7 four-grams, all the same
    assert metrics.repetition_rate([[1, 2] * 4], n=2) == pytest.approx(1 - 2 / 7)
    assert metrics.repetition_rate([[1, 2, 3, 4, 5, 6], [7] * 10, [1, 2]]) == pytest.approx((1 - 1 / 7) / 2)


@pytest.mark.parametrize("ce_rows", [metrics.CE_ROWS, 3])  # the cross-entropy at once, or 3 positions at a time
def test_generative_perplexity_equals_a_direct_computation(ce_rows, monkeypatch):
    monkeypatch.setattr(metrics, "CE_ROWS", ce_rows)
    judge = tiny_model(attention="causal").eval()
    prompts = [[10, 11, 12], [13], [14, 15, 16, 17, 18], [19, 20]]
    responses = [[30, 31], [32, 33, 34, 35, 36], [37], []]  # different lengths: right padding, an empty one
    row_nll = [0.0] * len(prompts)
    with torch.no_grad():
        for i, (p, r) in enumerate(zip(prompts, responses)):
            if not r:
                continue
            logp = F.log_softmax(judge(torch.tensor([p + r]))[0].float(), dim=-1)
            for j, t in enumerate(r):
                row_nll[i] -= logp[len(p) - 1 + j, t].item()  # the token at len(p) + j, predicted one earlier
    nll, n = sum(row_nll), sum(map(len, responses))
    out = metrics.generative_perplexity(judge, prompts, responses, batch_size=3)
    assert out["tokens"] == n == 8 and out["truncated"] == 0
    assert out["nll"] == pytest.approx(nll / n, rel=1e-5)
    assert out["ppl"] == pytest.approx(math.exp(nll / n), rel=1e-4)
    assert out["row_tokens"] == [2, 5, 1, 0]  # per row, in the prompts' order, across batches of 3
    assert out["row_nll"] == pytest.approx(row_nll, rel=1e-5)


def test_judge_perplexity_reads_each_prompt_after_an_eos():
    judge = tiny_model(attention="causal").eval()
    eos = judge.config.eos_id
    direct = metrics.generative_perplexity(judge, [[eos, 10, 11], [eos, 12]], [[30, 31], [32]])
    assert metrics.judge_perplexity(judge, [[10, 11], [12]], [[30, 31], [32]]) == direct


def test_generative_perplexity_needs_a_causal_judge():
    with pytest.raises(ValueError, match="causal"):
        metrics.generative_perplexity(tiny_model(), [[1]], [[2]])


def test_eos_block_slots():
    # prompts ending at slots 0, 5 and 2 of blocks of 8; answers of 7, 2 and 3 tokens (the last unfinished)
    out = metrics.eos_block_slots([0, 5, 2], [7, 2, 3], [True, True, False], 8)
    assert out == dict(histogram=[0, 0, 0, 0, 0, 0, 0, 2], last_slot=1.0)
    assert metrics.eos_block_slots([0, 0], [1, 9], [True, True], 8)["histogram"][1] == 2  # 9 wraps into the next block
    assert metrics.eos_block_slots([0], [3], [False], 8) == dict(histogram=[0] * 8, last_slot=None)
