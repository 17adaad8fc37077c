"""(i) What the cache-friendly orders cost in convergence: the objective after 1, 3 and 5
epochs of ``sgd`` and ``minibatch`` with each shuffle mode, on a regression problem whose
rows are sorted by target (file order is then the adversarial order)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest

import fastgd
from fastgd import reference

#: Rows of the sorted problem (at most FASTGD_BENCH_ROWS).
CONVERGENCE_ROWS = 200_000
REPORTED_EPOCHS = (1, 3, 5)
SHUFFLES = (True, "block", False)


@dataclass
class SortedProblem:
    X: np.ndarray
    y: np.ndarray
    start: float  # objective at w = 0, b = 0
    optimum: float  # least-squares objective


def _objective(X, y, coef, intercept) -> float:
    return reference.objective(X, y, coef, float(intercept), loss="squared_error")


@pytest.fixture(scope="module")
def sorted_problem(settings) -> SortedProblem:
    rng = np.random.default_rng(settings.seed + 1)
    n = min(CONVERGENCE_ROWS, settings.rows)
    X = rng.standard_normal((n, settings.n_features))
    y = X @ rng.standard_normal(settings.n_features) + 3.0 + rng.standard_normal(n)
    order = np.argsort(y, kind="stable")
    X, y = X[order], y[order]
    design = np.hstack([X, np.ones((n, 1))])
    solution = np.linalg.lstsq(design, y, rcond=None)[0]
    del design
    return SortedProblem(
        X=X,
        y=y,
        start=_objective(X, y, np.zeros(X.shape[1]), 0.0),
        optimum=_objective(X, y, solution[:-1], solution[-1]),
    )


@pytest.mark.parametrize(
    ("strategy", "shuffle"), list(itertools.product(("sgd", "minibatch"), SHUFFLES)), ids=str
)
def test_shuffle_convergence(run_epochs, sorted_problem, results, settings, strategy, shuffle):
    """``learning_rate="auto"``, B=256, seeded. ``auto`` takes the order into account (runs
    of consecutive rows in file order and block shuffling get a smaller step), so each row
    reports the step it actually used; the objective is evaluated at the weights after each
    reported epoch (outside the epoch timing, which is also reported)."""
    problem = sorted_problem
    objectives: dict[int, float] = {}

    def on_epoch(epoch, coef, intercept, loss):
        if epoch in REPORTED_EPOCHS:
            objectives[epoch] = _objective(problem.X, problem.y, coef, intercept)

    epochs = max(REPORTED_EPOCHS)
    seconds = floor_ratio = None
    try:
        timing, result = run_epochs(
            problem.X, problem.y, epochs=epochs, on_epoch=on_epoch, strategy=strategy,
            shuffle=shuffle, batch_size=256, learning_rate="auto",
        )  # fmt: skip
    except fastgd.DivergenceError as error:
        # A result, not a failure of the benchmark.
        outcome = f"**diverged in epoch {error.epoch}**; "
        step = "–"
    else:
        assert result.n_iter == epochs
        seconds, floor_ratio, outcome = timing.seconds, timing.floor_ratio, ""
        step = f"{result.learning_rate:.3g}"
        if result.extras["auto_backtracks"]:
            step += (
                f", backed off {result.extras['auto_backtracks']}x to "
                f"{result.extras['final_learning_rate']:.3g}"
            )
    after = " / ".join(f"{objectives[e]:.4g}" if e in objectives else "–" for e in REPORTED_EPOCHS)
    batch = " B=256" if strategy == "minibatch" else ""
    results.add(
        f"convergence/{strategy}/{shuffle}",
        f"convergence: {strategy}{batch}, shuffle={shuffle!r}, rows sorted by y, float64",
        seconds, nbytes=problem.X.nbytes, floor_ratio=floor_ratio,
        notes=(
            f"{outcome}objective after epochs {'/'.join(map(str, REPORTED_EPOCHS))}: {after} "
            f"(start {problem.start:.4g}, least-squares optimum {problem.optimum:.4g}; "
            f"n={problem.X.shape[0]:,}, auto η = {step})"
        ),
    )  # fmt: skip
