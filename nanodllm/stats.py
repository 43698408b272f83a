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
