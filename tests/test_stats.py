"""The bootstrap interval on hand-made outcomes whose interval is known exactly or bounded analytically."""

import numpy as np
import pytest

from nanodllm.stats import bootstrap_replicates, perplexity_ratio_with_interval, rate_with_interval


def test_constant_outcomes_give_a_point_interval():
    assert rate_with_interval([np.ones(5), np.ones(7), np.ones(3)]) == dict(
        mean=1.0, low=1.0, high=1.0, n_seeds=3, n_prompts=15)
    r = rate_with_interval([np.zeros(4)])
    assert (r["mean"], r["low"], r["high"]) == (0.0, 0.0, 0.0)


def test_the_mean_is_over_seeds_not_over_pooled_prompts():
    r = rate_with_interval([[1.0], [0.0, 0.0, 0.0]])
    assert r["mean"] == 0.5  # pooled prompts would give 0.25
    assert r["n_seeds"] == 2 and r["n_prompts"] == 4


def test_seeds_are_resampled():
    """Two seeds, each constant (one always right, one always wrong): the prompts add no spread, the seeds do.
    A replicate draws seed A 0, 1 or 2 times with probabilities 1/4, 1/2, 1/4, so its mean is 0, 0.5 or 1:
    the 2.5% and 97.5% percentiles are exactly 0 and 1 (and each value shows up with its probability)."""
    outcomes = [np.zeros(50), np.ones(50)]
    replicates = bootstrap_replicates(outcomes, n_replicates=4000)
    assert set(np.unique(replicates)) == {0.0, 0.5, 1.0}
    assert abs((replicates == 0.5).mean() - 0.5) < 0.03
    r = rate_with_interval(outcomes)
    assert (r["mean"], r["low"], r["high"]) == (0.5, 0.0, 1.0)


def test_prompts_are_resampled_within_a_seed():
    """One seed of two prompts (0 and 1): a replicate's mean is 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4,
    so the interval is exactly [0, 1]. With 400 prompts at rate 0.5, it is the binomial one: half-width
    1.96 * sqrt(0.25 / 400) = 0.049."""
    two = rate_with_interval([[0.0, 1.0]])
    assert (two["low"], two["high"]) == (0.0, 1.0)
    r = rate_with_interval([np.tile([0.0, 1.0], 200)])
    assert r["mean"] == 0.5
    assert r["high"] - r["mean"] == pytest.approx(0.049, abs=0.008)
    assert r["mean"] - r["low"] == pytest.approx(0.049, abs=0.008)


def test_more_seeds_that_agree_narrow_the_interval_and_it_is_reproducible():
    one = rate_with_interval([np.tile([0.0, 1.0], 50)])
    three = rate_with_interval([np.tile([0.0, 1.0], 50)] * 3)
    assert three["high"] - three["low"] < one["high"] - one["low"]
    assert rate_with_interval([np.tile([0.0, 1.0], 50)] * 3) == three  # a fixed bootstrap seed


def test_no_outcomes():
    assert rate_with_interval([[], []]) == dict(mean=None, low=None, high=None, n_seeds=0, n_prompts=0)


def test_perplexity_ratio_is_the_exp_of_the_difference_in_nll_per_token():
    """Token-weighted: a's 10 and 30 tokens at 2 and 1 nats per token are 1.25 nats per token, b's 1 nat."""
    r = perplexity_ratio_with_interval([20.0, 30.0], [10, 30], [10.0, 30.0], [10, 30])
    assert r["ratio"] == pytest.approx(np.exp(0.25)) and r["n_prompts"] == 2
    assert r["low"] <= r["ratio"] <= r["high"]


def test_perplexity_ratio_interval_is_paired():
    """b is a plus 0.1 nat on every token of every prompt, while the prompts' own NLL per token varies widely: the
    paired ratio is exactly exp(-0.1) in every replicate, a point interval. An unpaired draw would spread it."""
    rng = np.random.default_rng(1)
    tokens = rng.integers(20, 200, size=50).astype(float)
    nll_a = tokens * rng.uniform(0.5, 3.0, size=50)
    r = perplexity_ratio_with_interval(nll_a, tokens, nll_a + 0.1 * tokens, tokens)
    assert r["ratio"] == pytest.approx(np.exp(-0.1))
    assert r["low"] == pytest.approx(np.exp(-0.1)) and r["high"] == pytest.approx(np.exp(-0.1))


def test_perplexity_ratio_interval_narrows_with_more_prompts():
    """Prompts where a is 0.2 nat per token worse and prompts where it is 0.2 better, half and half: the ratio is
    1 and the interval about 1 +- 1.96 * 0.2 / sqrt(n) in log space."""
    def interval(n):
        sign = np.tile([1.0, -1.0], n // 2)
        r = perplexity_ratio_with_interval(100 + 20 * sign, np.full(n, 100.0), np.full(n, 100.0), np.full(n, 100.0))
        assert r["ratio"] == pytest.approx(1.0)
        return np.log(r["high"]) - np.log(r["low"])
    assert interval(400) == pytest.approx(2 * 1.96 * 0.2 / 20, rel=0.15)
    assert interval(400) < interval(40) / 2.5


def test_perplexity_ratio_of_nothing_or_unpaired_values():
    assert perplexity_ratio_with_interval([], [], [], []) == dict(ratio=None, low=None, high=None, n_prompts=0)
    assert perplexity_ratio_with_interval([0.0], [0], [1.0], [1])["ratio"] is None
    with pytest.raises(ValueError, match="equal length"):
        perplexity_ratio_with_interval([1.0, 2.0], [1, 1], [1.0], [1])
