"""CSR epochs: the lazy L1/averaging path against the scaled path, and scikit-learn (issue 15).

On CSR rows the kernels (``fastgd/_kernels/sparse.py``) take one of two paths: the scaled
path (L2 only: the weights are stored as ``scale·v``, so the decay costs O(1) a step) and
the lazy path (L1 or averaging: each feature catches up on the steps it skipped when a row
next holds it). The issue's targets: the lazy path within 2× of the scaled path per epoch,
and CSR mini-batch (B=256) at least 3× scikit-learn's per-sample epoch.

Every case is one epoch of ``fastgd.fit`` (per-epoch times from the callback, the first
epoch, with validation and compilation, dropped) or of scikit-learn's ``SGDRegressor``
(``max_iter=1``, a whole ``fit``: its input checks are a few % of it), on the same CSR
matrix, n × 100,000 with 50 non-zeros a row (the matrix of ``test_estimators.py``), in
file order (``shuffle=False``: the kernels, not the order, are measured), squared error,
a constant step. The cases run interleaved, round after round, so that the load of a
shared machine falls on all alike; each row is the median over the rounds. The notes give
each case's time ÷ the scaled path's (same strategy) and scikit-learn's time ÷ the case's
(same penalty and averaging).
"""

from __future__ import annotations

import itertools
import statistics
import time
import warnings

import pytest

import fastgd

# The CSR matrix of test_estimators.py (n × 100,000, 50 non-zeros a row), as a fixture.
from .test_estimators import sparse_data  # noqa: F401

EPOCHS = 4  # per fit; the first is dropped
ROUNDS = 3  # interleaved rounds (1 in the smoke run)
ALPHA = 1e-4
ETA0 = 1e-3
BATCH_SIZE = 256

#: (key, description, options shared by fastgd and scikit-learn).
PENALTIES = (
    ("scaled", "L2", {"penalty": "l2"}),
    ("l1", "elastic net", {"penalty": "elasticnet"}),
    ("average", "L2 + averaging", {"penalty": "l2", "average": True}),
    ("l1-average", "elastic net + averaging", {"penalty": "elasticnet", "average": True}),
)
STRATEGIES = (("sgd", {"strategy": "sgd"}), ("minibatch", {"strategy": "minibatch",
              "batch_size": BATCH_SIZE}))  # fmt: skip


def _fastgd_epochs(X, y, options: dict) -> list[float]:
    """Seconds of each epoch after the first of one ``fastgd.fit``."""
    marks: list[float] = []

    def callback(epoch, coef, intercept, loss):
        marks.append(time.perf_counter())
        return False

    fastgd.fit(
        X, y, max_iter=EPOCHS, tol=None, learning_rate="constant", eta0=ETA0, alpha=ALPHA,
        shuffle=False, random_state=0, callback=callback, **options,
    )  # fmt: skip
    return [later - earlier for earlier, later in itertools.pairwise(marks)]


def _sklearn_epoch(X, y, options: dict) -> float:
    """Seconds of one scikit-learn epoch (a whole ``fit`` with ``max_iter=1``)."""
    linear_model = pytest.importorskip("sklearn.linear_model")
    model = linear_model.SGDRegressor(
        max_iter=1, tol=None, learning_rate="constant", eta0=ETA0, alpha=ALPHA, shuffle=False,
        random_state=0, **options,
    )  # fmt: skip
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter=1 is the point
        model.fit(X, y)
    return time.perf_counter() - start


def test_sparse_lazy_and_minibatch_speed(results, settings, sparse_data):  # noqa: F811
    """The lazy path ÷ the scaled path, and scikit-learn ÷ fastgd, per CSR epoch."""
    X, y = sparse_data
    rounds = 1 if settings.benchmark_disabled else ROUNDS
    times: dict[str, list[float]] = {}
    for _ in range(rounds):
        for penalty, _, options in PENALTIES:
            for strategy, extra in STRATEGIES:
                epochs = _fastgd_epochs(X, y, {**options, **extra})
                times.setdefault(f"{strategy}/{penalty}", []).append(statistics.median(epochs))
            times.setdefault(f"sklearn/{penalty}", []).append(_sklearn_epoch(X, y, options))
    seconds = {key: statistics.median(values) for key, values in times.items()}
    _add_rows(results, seconds, rounds)


def _add_rows(results, seconds: dict[str, float], rounds: int) -> None:
    """One row per case: fastgd's rows name the scikit-learn row of the same penalty."""
    for penalty, description, _ in PENALTIES:
        for strategy, _ in (*STRATEGIES, ("sklearn", None)):
            key = f"{strategy}/{penalty}"
            notes = [f"median of {rounds} interleaved rounds"]
            if strategy != "sklearn":
                scaled = seconds[f"{strategy}/scaled"]
                notes.insert(0, f"÷ scaled path {seconds[key] / scaled:.2f}")
            label = {"minibatch": f"fastgd B={BATCH_SIZE} mini-batch", "sgd": "fastgd sgd"}.get(
                strategy, "scikit-learn"
            )
            path = (
                "" if strategy == "sklearn" else (" (scaled)" if penalty == "scaled" else " (lazy)")
            )
            results.add(
                f"sparse/{key}", f"CSR {label} epoch, {description}{path}", seconds[key],
                sklearn_key=None if strategy == "sklearn" else f"sparse/sklearn/{penalty}",
                notes="; ".join(notes),
            )  # fmt: skip
