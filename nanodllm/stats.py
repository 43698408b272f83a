"""Rates with intervals that can carry a conclusion: the mean over training seeds, with a bootstrap interval.

A cell of the recipe study (one recipe, one sampler) is trained with several seeds and evaluated on the same
held-out prompts. Two things make its rate uncertain: which prompts were drawn, and which seed the training got
(its data order, its masks). A percentile bootstrap over both answers "how different could this number have
been": each replicate resamples the seeds with replacement, then, within each resampled seed, that seed's
prompts with replacement, and takes the same statistic as the estimate (the mean over seeds of each seed's
mean over prompts). The 2.5th and 97.5th percentiles of the replicates are the 95% interval.

    rate_with_interval([np.array([1, 0, 1, 1]), np.array([1, 1, 0, 1])])   # two seeds, four prompts each
    -> {"mean": 0.75, "low": ..., "high": ..., "n_seeds": 2, "n_prompts": 8}

With one seed only the prompts are resampled: the interval then says nothing about another seed.

The same idea for a ratio of perplexities (a lower threshold's judge perplexity over the reference threshold's, on
the same prompts): perplexity_ratio_with_interval, a paired bootstrap over the prompts.
"""

import numpy as np

N_REPLICATES = 2000


def seed_means(outcomes) -> np.ndarray:
    """(S,) each seed's mean over its prompts; outcomes: one 1-D array (or list) of per-prompt values per seed."""
    return np.array([np.mean(x) for x in outcomes], dtype=np.float64)


def bootstrap_replicates(outcomes, n_replicates: int = N_REPLICATES, seed: int = 0) -> np.ndarray:
    """(n_replicates,) the mean over seeds of per-seed prompt means, each replicate drawn by resampling the seeds
    with replacement, then the prompts of every drawn seed with replacement (a seed drawn twice is resampled
    twice, independently). Seeds may have different numbers of prompts."""
    outcomes = [np.asarray(x, dtype=np.float64) for x in outcomes]
    rng = np.random.default_rng(seed)
    n_seeds = len(outcomes)
    total = np.zeros(n_replicates)
    for _ in range(n_seeds):  # the j-th seed of every replicate
        drawn = rng.integers(n_seeds, size=n_replicates)  # (R,) which seed fills this slot in each replicate
        for s, x in enumerate(outcomes):
            rows = np.flatnonzero(drawn == s)
            picks = rng.integers(len(x), size=(len(rows), len(x)))  # (rows, n_s) prompts drawn with replacement
            total[rows] += x[picks].mean(axis=1)
    return total / n_seeds


def rate_with_interval(outcomes, level: float = 0.95, n_replicates: int = N_REPLICATES, seed: int = 0) -> dict:
    """{mean, low, high, n_seeds, n_prompts}: the mean over seeds of each seed's mean, and the percentile
    bootstrap interval at `level`. Seeds without any prompt are left out; none at all gives None values."""
    outcomes = [x for x in outcomes if len(x)]
    if not outcomes:
        return dict(mean=None, low=None, high=None, n_seeds=0, n_prompts=0)
    replicates = bootstrap_replicates(outcomes, n_replicates, seed)
    low, high = np.quantile(replicates, [(1 - level) / 2, (1 + level) / 2])
    return dict(mean=float(seed_means(outcomes).mean()), low=float(low), high=float(high),
                n_seeds=len(outcomes), n_prompts=int(sum(len(x) for x in outcomes)))


def perplexity_ratio_with_interval(nll_a, tokens_a, nll_b, tokens_b, level: float = 0.95,
                                   n_replicates: int = N_REPLICATES, seed: int = 0) -> dict:
    """{ratio, low, high, n_prompts}: the perplexity of responses a over that of responses b to the same prompts,
    exp(sum nll_a / sum tokens_a - sum nll_b / sum tokens_b), from each prompt's summed NLL and token count
    (metrics.generative_perplexity's row_nll and row_tokens), and its percentile bootstrap interval at `level`.

    Paired: each replicate draws the prompts with replacement and takes the same draw for a and b, because a
    prompt that is hard for one is hard for the other too; an unpaired draw would count that shared difficulty as
    noise. The prompts are the only thing resampled: one model, so it says nothing about another seed."""
    a, ta, b, tb = (np.asarray(x, dtype=np.float64) for x in (nll_a, tokens_a, nll_b, tokens_b))
    if not len(a) == len(ta) == len(b) == len(tb):
        raise ValueError(f"paired per-prompt values of equal length expected, got {len(a)}, {len(ta)}, {len(b)}, "
                         f"{len(tb)}")
    if not len(a) or ta.sum() == 0 or tb.sum() == 0:
        return dict(ratio=None, low=None, high=None, n_prompts=len(a))
    picks = np.random.default_rng(seed).integers(len(a), size=(n_replicates, len(a)))  # (R, n) prompts drawn
    with np.errstate(divide="ignore", invalid="ignore"):  # a draw of only empty responses: nan, left out
        log_ratios = a[picks].sum(1) / ta[picks].sum(1) - b[picks].sum(1) / tb[picks].sum(1)  # (R,)
    low, high = np.exp(np.nanquantile(log_ratios, [(1 - level) / 2, (1 + level) / 2]))
    return dict(ratio=float(np.exp(a.sum() / ta.sum() - b.sum() / tb.sum())), low=float(low), high=float(high),
                n_prompts=len(a))
