"""Fully shuffled epochs with and without the gather pipeline (``fastgd._pipeline``, issue 15),
side by side in one run: the pipeline on all threads (the gather of the next chunk on a
second thread), the pipeline on one thread (gather, then steps), the plain shuffled epoch,
a naive Numba loop over the permuted rows, and scikit-learn.

The variants of one case are interleaved round by round (the machine is shared, so its
speed drifts); each time is the median of the epochs after the first, and "× floor" pairs
every epoch with a read-floor pass (``conftest.time_epochs``). The pipeline is forced on or
off for its variants whatever the data size (``MIN_GATHER_BYTES``), so the smoke run
(``FASTGD_BENCH_ROWS=20000 ... --benchmark-disable``) exercises it too.
"""

from __future__ import annotations

import statistics
import warnings

import numba
import numpy as np
import pytest

from fastgd import _pipeline, options
from fastgd._kernels.order import fill_epoch_order

DTYPES = ("float64", "float32")
#: (strategy, batch size, epochs per fit); epoch 1 of each fit is dropped.
CASES = (("sgd", 1, 4), ("minibatch", 256, 4))
#: Rounds of the interleaved variants (1 in the smoke run).
ROUNDS = 3
VARIANTS = ("pipeline", "pipeline-1-thread", "plain")


@numba.njit(nogil=True, fastmath=True)
def _naive_sgd_epoch(X, y, order, w, eta):
    """The textbook loop: per row of the order, predict, then step (squared error)."""
    intercept = 0.0
    for k in range(order.shape[0]):
        i = order[k]
        p = intercept
        for j in range(X.shape[1]):
            p += X[i, j] * w[j]
        g = eta * (p - y[i])
        for j in range(X.shape[1]):
            w[j] -= g * X[i, j]
        intercept -= g
    return intercept


def _fit_variant(variant, X, y, run_epochs, monkeypatch, strategy, batch_size, epochs):
    limit = 0 if variant.startswith("pipeline") else np.iinfo(np.int64).max
    monkeypatch.setattr(_pipeline, "MIN_GATHER_BYTES", limit)
    threads = numba.get_num_threads()
    if variant == "pipeline-1-thread":
        numba.set_num_threads(1)
    try:
        timing, _ = run_epochs(X, y, epochs=epochs, strategy=strategy, batch_size=batch_size,
                               shuffle=True)  # fmt: skip
    finally:
        numba.set_num_threads(threads)
    return timing


@pytest.mark.parametrize("case", CASES, ids=lambda case: case[0])
@pytest.mark.parametrize("dtype", DTYPES)
def test_pipeline_epochs(benchmark, run_epochs, regression_data, results, settings, monkeypatch,
                         dtype, case):  # fmt: skip
    """fastgd's shuffled epochs with the pipeline (all threads, one thread) and without."""
    strategy, batch_size, epochs = case
    X, y = regression_data.get(dtype)
    rounds = 1 if settings.benchmark_disabled else ROUNDS
    timings = {variant: [] for variant in VARIANTS}

    def target():
        for _ in range(rounds):
            for variant in VARIANTS:
                timing = _fit_variant(variant, X, y, run_epochs, monkeypatch, strategy,
                                      batch_size, epochs)  # fmt: skip
                timings[variant].append(timing)

    benchmark.pedantic(target, rounds=1, iterations=1, warmup_rounds=0)
    plain = statistics.median(t.seconds for t in timings["plain"])
    batch = f" B={batch_size}" if strategy == "minibatch" else ""
    for variant in VARIANTS:
        seconds = statistics.median(t.seconds for t in timings[variant])
        floor_ratio = statistics.median(t.floor_ratio for t in timings[variant])
        results.add(
            f"pipeline/{strategy}/{variant}/{dtype}",
            f"fastgd {strategy}{batch}, shuffle=True, {variant}, {dtype}", seconds,
            nbytes=X.nbytes, floor_ratio=floor_ratio, sklearn_key=f"pipeline/sklearn/{dtype}",
            notes=f"plain ÷ this {plain / seconds:.2f}; {rounds} interleaved rounds",
        )  # fmt: skip


@pytest.mark.parametrize("baseline", ["naive", "sklearn"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_baseline_epochs(benchmark, timed, regression_data, results, settings, dtype, baseline):
    """The baselines: a naive Numba loop over a full permutation, and scikit-learn's
    SGDRegressor (one epoch of per-sample SGD, shuffle=True, its checks included)."""
    X, y = regression_data.get(dtype)
    if baseline == "naive":
        target, label = _naive_target(X, y, settings), "naive Numba SGD loop"
    else:
        target, label = _sklearn_target(X, y, settings), "scikit-learn SGDRegressor"
    timing = timed(target, floor_X=X, rounds=1 if settings.benchmark_disabled else ROUNDS)
    results.add(
        f"pipeline/{baseline}/{dtype}", f"{label}, shuffle=True, {dtype}", timing.seconds,
        benchmark=benchmark, nbytes=X.nbytes, floor_ratio=timing.floor_ratio,
        sklearn_key=f"pipeline/sklearn/{dtype}", notes="one epoch",
    )  # fmt: skip


def _naive_target(X, y, settings):
    order = np.empty(X.shape[0], dtype=np.int64)
    fill_epoch_order(order, options.SHUFFLE_FULL, 0, settings.seed)
    w = np.zeros(X.shape[1], dtype=X.dtype)
    _naive_sgd_epoch(X[:10], y[:10], order[:0], w, settings.eta0)  # compile, untimed
    return lambda: _naive_sgd_epoch(X, y, order, w, settings.eta0)


def _sklearn_target(X, y, settings):
    linear_model = pytest.importorskip("sklearn.linear_model")
    exceptions = pytest.importorskip("sklearn.exceptions")

    def fit():
        model = linear_model.SGDRegressor(
            loss="squared_error", penalty=None, max_iter=1, tol=None,
            learning_rate="constant", eta0=settings.eta0, shuffle=True,
            random_state=settings.seed,
        )  # fmt: skip
        with warnings.catch_warnings():
            # One epoch is the point here; "max_iter reached" is expected.
            warnings.simplefilter("ignore", exceptions.ConvergenceWarning)
            model.fit(X, y)

    return fit
