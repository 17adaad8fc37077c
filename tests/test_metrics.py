"""Running metrics (fastgd.metrics): block by block they give the one-shot values, also for
a target whose mean dwarfs its spread, where Σy² - (Σy)²/n loses every digit."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from fastgd.metrics import RunningAccuracy, RunningRegression


def _blocks(n: int, sizes):
    edges = np.cumsum([0, *sizes])
    assert edges[-1] == n
    return [slice(a, b) for a, b in itertools.pairwise(edges)]


@pytest.mark.parametrize("offset", [0.0, 1e9])
def test_regression_over_blocks_matches_the_one_shot_values(offset):
    rng = np.random.default_rng(0)
    y = offset + rng.standard_normal(1000)
    predicted = y + 0.3 * rng.standard_normal(1000)
    running = RunningRegression()
    for rows in _blocks(1000, [1, 0, 250, 400, 349]):
        running.add(y[rows], predicted[rows])
    residual = predicted - y
    centred = y - y.mean()
    assert running.rows == 1000
    assert running.mse == pytest.approx(residual @ residual / 1000, rel=1e-12)
    # with offset 1e9 the naive spread is off by far more than this tolerance
    assert running.r2() == pytest.approx(1 - (residual @ residual) / (centred @ centred), rel=1e-9)


def test_regression_of_a_constant_target_has_no_r2():
    running = RunningRegression()
    assert math.isnan(running.mse) and math.isnan(running.r2())
    running.add(np.full(5, 3.0), np.arange(5.0))
    running.add(np.full(3, 3.0), np.full(3, 3.0))
    assert running.mse == pytest.approx((9 + 4 + 1 + 0 + 1) / 8)
    assert math.isnan(running.r2()) and running.r2(constant_target=0.0) == 0.0


def test_accuracy_counts_hits_over_blocks():
    running = RunningAccuracy()
    assert math.isnan(running.accuracy()) and running.accuracy(empty=0.0) == 0.0
    running.add(np.array([1.0, 0.0, 1.0]), np.array([1.0, 1.0, 1.0]))
    running.add(np.array([True, False]), np.array([True, False]))
    assert (running.hits, running.rows) == (4, 5)
    assert running.accuracy() == pytest.approx(0.8)
