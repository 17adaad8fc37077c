"""fastgd.sweep, fastgd.find_learning_rate and fastgd.descent_path: they drive fastgd.fit
and must agree with it exactly; the finder's suggestion must be stable where the stable range
is known in closed form (squared error, full batch: steps below 2/L)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastgd
from fastgd.playground import FINDER_SUGGESTION_DIVISOR


def regression(seed=0, n=300, d=3, scales=(0.5, 2.0), shift=0.0, noise=0.3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * np.geomspace(*scales, d) + shift
    y = X @ rng.standard_normal(d) + 1.0 + noise * rng.standard_normal(n)
    return X, y


def curvature(X, fit_intercept=True):
    """L: the largest eigenvalue of X̃ᵀX̃/n, full-batch descent on squared error is stable
    for steps below 2/L."""
    if fit_intercept:
        X = np.column_stack([X, np.ones(X.shape[0])])
    return float(np.linalg.eigvalsh(X.T @ X / X.shape[0])[-1])


@pytest.fixture(scope="module")
def problem():
    return regression()


OPTIONS = {"max_iter": 6, "tol": None}


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_sweep_rows_equal_individual_fits(problem, n_jobs):
    X, y = problem
    rates = [0.003, 0.03, "auto"]
    table = fastgd.sweep(
        X, y, rates, ["sgd", "minibatch", "full"], [8, 64], random_state=3, n_jobs=n_jobs, **OPTIONS
    )
    # batch sizes multiply only minibatch: sgd 3 + minibatch 2x3 + full 3
    assert len(table) == 12
    assert [(run.strategy, run.batch_size) for run in table][::3] == [
        ("sgd", None),
        ("minibatch", 8),
        ("minibatch", 64),
        ("full", None),
    ]
    for run in table:
        schedule = (
            {"learning_rate": "auto"}
            if run.learning_rate == "auto"
            else {"learning_rate": "constant", "eta0": run.learning_rate}
        )
        alone = fastgd.fit(
            X,
            y,
            strategy=run.strategy,
            batch_size=run.batch_size or 1,
            random_state=3,
            **schedule,
            **OPTIONS,
        )
        assert not run.diverged
        np.testing.assert_array_equal(run.loss_history, alone.loss_history)
        np.testing.assert_array_equal(run.result.coef, alone.coef)
        assert run.result.intercept == alone.intercept
        assert run.step == alone.learning_rate
        assert run.final_loss == alone.loss_history[-1]
        assert run.n_iter == 6 and run.fit_time > 0


def test_diverging_rate_is_reported_not_raised(problem):
    X, y = problem
    big = 4.0 / curvature(X)  # twice the stable limit of full batch
    table = fastgd.sweep(X, y, [0.01, big], ["full"], random_state=0, max_iter=30, tol=None)
    stable, diverged = table.find(strategy="full", learning_rate=0.01), table[1]
    assert not stable.diverged and math.isfinite(stable.final_loss)
    assert diverged.diverged and math.isnan(diverged.final_loss) and diverged.result is None
    assert "diverged" in diverged.message
    with pytest.raises(fastgd.DivergenceError) as error:
        fastgd.fit(
            X,
            y,
            strategy="full",
            learning_rate="constant",
            eta0=big,
            random_state=0,
            max_iter=30,
            tol=None,
        )
    # the partial curve is the one fit's error carries: the epochs before divergence
    assert diverged.loss_history.size >= 1
    np.testing.assert_array_equal(diverged.loss_history, error.value.loss_history)
    assert table.best() is stable
    text = str(table)
    assert text.count("\n") == 1 + len(table)  # header, rule, one line per run
    assert "**diverged** in epoch" in text
    records = table.to_records()
    assert records[1]["diverged"] and records[0]["loss_history"] == list(stable.loss_history)


def unscaled_regression(seed=0, n=200):
    """Two features a thousand times apart in scale (as real tables are): the step that
    suits one blows up along the other."""
    rng = np.random.default_rng(seed)
    X = np.column_stack([rng.standard_normal(n), 1000.0 + 300.0 * rng.standard_normal(n)])
    return X, X @ np.array([2.0, 0.01]) + 0.1 * rng.standard_normal(n)


def test_run_that_ends_above_its_start_is_diverged_though_fit_finished():
    """Full batch at 1.1 times the stable limit 2/L: the objective grows by about
    (1 - 2.2)**2 per step, too slowly for fit's own checks, so fit runs all epochs; the
    sweep must not list that as a finished run (issue 14)."""
    X, y = unscaled_regression()
    big = 2.2 / curvature(X)
    options = {"max_iter": 4, "tol": None, "random_state": 0}
    alone = fastgd.fit(X, y, strategy="full", learning_rate="constant", eta0=big, **options)
    assert alone.n_iter == 4 and alone.loss_history[-1] > alone.loss_history[0]
    table = fastgd.sweep(X, y, [big / 100, big], ["full"], **options)
    stable, blown = table
    start = 0.5 * float(np.mean(y**2))  # squared error at zero weights
    assert stable.start_loss == pytest.approx(start, rel=1e-12) == blown.start_loss
    assert not stable.diverged and stable.status == "ran all epochs"
    assert blown.diverged and not blown.converged and blown.result is not None
    assert blown.final_loss == alone.loss_history[-1] > start
    assert blown.status == "diverged (ended above its start)"
    assert f"{blown.final_loss:.6g}" in blown.message and f"{start:.6g}" in blown.message
    assert table.best() is stable
    lines = str(table).splitlines()
    assert "**diverged** (ended above its start)" in lines[-1] and "ran all epochs" in lines[-2]
    assert f"| {blown.final_loss:.6g} |" in lines[-1]
    assert [record["status"] for record in table.to_records()] == [stable.status, blown.status]


def test_ended_above_start_rule():
    """Non-finite is diverged; rounding at the start is not; a start of 0 (perceptron at
    zero weights) is no yardstick."""
    from fastgd.playground import ABOVE_START_TOLERANCE, _ended_above_start

    assert _ended_above_start(math.inf, 1.0) and _ended_above_start(math.nan, 1.0)
    assert _ended_above_start(1.1, 1.0)
    assert not _ended_above_start(1.0 + ABOVE_START_TOLERANCE / 2, 1.0)
    assert not _ended_above_start(0.5, 1.0)
    assert not _ended_above_start(5.0, 0.0)


def test_sweep_is_deterministic_and_keeps_its_seed(problem):
    X, y = problem
    first = fastgd.sweep(X, y, [0.01], ["sgd"], random_state=None, max_iter=3)
    again = fastgd.sweep(X, y, [0.01], ["sgd"], random_state=first.random_state, max_iter=3)
    np.testing.assert_array_equal(first[0].loss_history, again[0].loss_history)


@pytest.mark.parametrize(
    ("arguments", "error", "words"),
    [
        ({"strategies": ["batch"]}, ValueError, "allowed values"),
        ({"learning_rates": [0.1, -1.0]}, ValueError, "learning_rates"),
        ({"learning_rates": ["fast"]}, ValueError, "'auto'"),
        ({"learning_rates": []}, ValueError, "empty"),
        ({"batch_sizes": [0]}, ValueError, "batch_sizes"),
        ({"eta0": 0.1}, TypeError, "'eta0'"),
        ({"random_state": np.random.default_rng(0)}, TypeError, "random_state"),
        ({"n_jobs": 0}, ValueError, "n_jobs"),
    ],
)
def test_sweep_rejects_bad_arguments_by_name(problem, arguments, error, words):
    X, y = problem
    with pytest.raises(error, match=words):
        fastgd.sweep(X, y, **{"learning_rates": [0.1], **arguments})


FINDER_PROBLEMS = {
    "gaussian": {},
    "one feature, shifted": {"d": 1, "shift": 2.0},
    "ill-conditioned": {"d": 8, "scales": (0.1, 3.0)},
    "noiseless": {"noise": 0.0, "seed": 4},
}


@pytest.mark.parametrize("name", FINDER_PROBLEMS)
def test_finder_suggestion_is_stable_and_agrees_with_auto(name):
    X, y = regression(n=400, **FINDER_PROBLEMS[name])
    L = curvature(X)
    full = fastgd.find_learning_rate(X, y, strategy="full")
    # stable: below the closed-form limit 2/L, and not uselessly small
    assert 0.25 / L < full.suggestion < 2.0 / L
    assert full.blew_up and full.edge_rate < 4.0 / L
    assert full.suggestion == full.edge_rate / FINDER_SUGGESTION_DIVISOR
    # agreement with learning_rate="auto" (1/L for full batch): within 1.5x
    assert full.auto_rate == pytest.approx(1.0 / L, rel=1e-6)
    assert 1 / 1.5 < full.suggestion / full.auto_rate < 1.5
    mini = fastgd.find_learning_rate(X, y, strategy="minibatch", batch_size=32)
    assert 1 / 1.5 < mini.suggestion / mini.auto_rate < 1.5
    # sgd: auto bounds the step by the largest row, the edge sees typical rows
    sgd = fastgd.find_learning_rate(X, y, strategy="sgd")
    assert 1 / 5 < sgd.suggestion / sgd.auto_rate < 5


def test_finder_curve_and_its_blow_up(problem):
    X, y = problem
    finder = fastgd.find_learning_rate(X, y, rates_per_decade=4)
    rates, losses = finder.learning_rates, finder.losses
    ratios = rates[1:] / rates[:-1]
    np.testing.assert_allclose(ratios, 10 ** (1 / 4), rtol=1e-9)
    # it stopped at the first rate that blew up, and the edge is the rate before it
    assert losses[-1] > min(finder.start_loss, 2 * losses[:-1].min())
    assert finder.edge_rate == rates[-2]
    assert (losses[:-1] <= finder.start_loss).all()
    assert finder.lowest_rate == rates[np.argmin(losses)]
    assert "suggested learning rate" in str(finder)


def test_finder_rejects_a_range_that_starts_unstable(problem):
    X, y = problem
    with pytest.raises(ValueError, match="min_rate"):
        fastgd.find_learning_rate(X, y, min_rate=10.0 / curvature(X))


def test_descent_path_follows_full_batch_steps():
    X, y = regression(d=1, shift=2.0)
    rate = 0.5 / curvature(X)
    path = fastgd.descent_path(X, y, learning_rate=rate, max_iter=5)
    assert path.points.shape == (6, 2) and path.parameter_names == ["w", "b"]
    # plain gradient descent on the objective, step by step
    w, b = 0.0, 0.0
    for point in path.points[1:]:
        residual = X[:, 0] * w + b - y
        w, b = w - rate * (residual @ X[:, 0]) / len(y), b - rate * residual.mean()
        np.testing.assert_allclose(point, [w, b], rtol=1e-9)
    assert (np.diff(path.losses) < 0).all() and not path.diverged
    wild = fastgd.descent_path(X, y, learning_rate=5.0 / curvature(X), max_iter=30)
    assert wild.diverged and wild.points.shape[0] < 31


def test_descent_path_needs_at_most_two_parameters(problem):
    X, y = problem
    with pytest.raises(ValueError, match="at most 2 parameters"):
        fastgd.descent_path(X, y)
    path = fastgd.descent_path(X[:, :2], y, fit_intercept=False, learning_rate=0.01)
    assert path.parameter_names == ["w[0]", "w[1]"]
