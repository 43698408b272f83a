"""Tests of nanodllm/sampler_stats.py: the stats a sampler returns, and what it runs under."""

import math

import torch

from nanodllm.sampler_stats import GenerationStats, Timer, sampling_mode

EOS = 9


def test_stats():
    s = GenerationStats(tokens=[10, 30], finished=[True, False], nfe=20, row_nfe=40, seconds=2.0)
    assert s.total_tokens == 40 and s.tokens_per_s == 20 and s.nfe_per_token == 1.0
    assert s.mean_length == 20 and s.termination_rate == 0.5
    both = GenerationStats.combine([s, s])
    assert both.tokens == [10, 30, 10, 30] and both.nfe == 40 and both.seconds == 4.0
    assert set(s.as_dict()) >= {"tokens_per_s", "nfe_per_token", "mean_length", "termination_rate"}
    assert math.isnan(GenerationStats().termination_rate) and math.isnan(GenerationStats().tokens_per_s)


def test_stats_of_completions_finished_means_ended_with_eos():
    s = GenerationStats.of([[1, 2, EOS], [3, 4, 5], [EOS], []], EOS, nfe=4, row_nfe=10, seconds=1.0,
                           info={"length_bound": [4, 4, 1, 1]})
    assert s.tokens == [3, 3, 1, 0] and s.finished == [True, False, True, False] and s.termination_rate == 0.5
    assert s.info == {"length_bound": [4, 4, 1, 1]} and GenerationStats.of([[1]], EOS, 1, 1, 1.0).info == {}


def test_sampling_mode_runs_without_autograd():
    weight = torch.ones(2, requires_grad=True)

    @sampling_mode
    def forward():
        return (weight * 2).requires_grad

    assert forward() is False and forward.__name__ == "forward"
    with Timer("cpu") as timer:
        pass
    assert timer.seconds >= 0
