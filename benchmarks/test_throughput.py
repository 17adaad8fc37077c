"""Time per epoch, side by side: the read floor, fastgd's strategies, the numpy reference and
scikit-learn, on the same data in the same run (see README.md)."""

from __future__ import annotations

import itertools
import warnings

import numba
import numpy as np
import pytest

from fastgd import reference
from fastgd._kernels.order import fill_epoch_order
from fastgd.options import SHUFFLE_BLOCK

DTYPES = ("float64", "float32")

#: (strategy, shuffle, epochs per fit). Slower cases run fewer epochs; epoch 1 is dropped.
STRATEGIES = (
    ("full", None, 8),
    ("minibatch", "block", 8),
    ("minibatch", True, 5),
    ("minibatch", False, 8),
    ("sgd", "block", 6),
    ("sgd", True, 5),
    ("sgd", False, 8),
)
BATCH_SIZE = 256
#: Rows of the slice the (row-by-row, pure Python) numpy SGD reference runs on.
REFERENCE_SGD_ROWS = 20_000
#: The per-row update rules timed beside plain SGD (issue 12: each ≤ 1.3× its epoch).
OPTIMIZERS = ("momentum", "nesterov-momentum", "adagrad", "rmsprop", "adam", "adamw", "saga")
#: Rows per block of fastgd's ``shuffle="block"`` (64 KiB of rows, as ``engine._block_rows``).
BLOCK_BYTES = 64 * 1024


@pytest.mark.parametrize(
    ("dtype", "threads"), list(itertools.product(DTYPES, ("all", "one"))), ids=str
)
def test_read_floor(benchmark, timed, read_floor, regression_data, results, dtype, threads):
    """(a) The machine's read floor: a parallel Numba pass summing X over fixed row chunks
    (every other case's "× floor"), and the same kernel on one thread for reference."""
    X, _ = regression_data.get(dtype)
    if threads == "all":
        timing = timed(lambda: read_floor.seconds(X), rounds=11)
        results.add(
            f"floor/{dtype}", f"read floor, {dtype}", timing.seconds,
            benchmark=benchmark, nbytes=X.nbytes, floor_ratio=1.0,
            notes="Numba parallel sum of X (all threads)",
        )  # fmt: skip
    else:
        timing = timed(lambda: read_floor.seconds_one_thread(X), floor_X=X, rounds=5)
        results.add(
            f"floor/{dtype}/1-thread", f"read floor, {dtype}, 1 thread", timing.seconds,
            benchmark=benchmark, nbytes=X.nbytes, floor_ratio=timing.floor_ratio,
            notes="same kernel, numba.set_num_threads(1)",
        )  # fmt: skip


def _fastgd_id(case) -> str:
    dtype, (strategy, shuffle, _) = case
    return f"{strategy}-{shuffle}-{dtype}" if shuffle is not None else f"{strategy}-{dtype}"


@pytest.mark.parametrize("case", list(itertools.product(DTYPES, STRATEGIES)), ids=_fastgd_id)
def test_fastgd_epoch(benchmark, epoch_timer, regression_data, results, case):
    """(b) fastgd's time per epoch, measured inside ``fastgd.fit`` by its callback."""
    dtype, (strategy, shuffle, epochs) = case
    X, y = regression_data.get(dtype)
    kwargs = {"strategy": strategy}
    if strategy == "full":
        key, label = f"fastgd/full/{dtype}", f"fastgd full, {dtype}"
    else:
        kwargs["shuffle"] = shuffle
        batch = f" B={BATCH_SIZE}" if strategy == "minibatch" else ""
        if strategy == "minibatch":
            kwargs["batch_size"] = BATCH_SIZE
        key = f"fastgd/{strategy}/{shuffle}/{dtype}"
        label = f"fastgd {strategy}{batch}, shuffle={shuffle!r}, {dtype}"
    timing = epoch_timer(X, y, epochs=epochs, **kwargs)
    naive = strategy == "sgd" and shuffle in (False, "block")
    results.add(
        key, label, timing.seconds, benchmark=benchmark, nbytes=X.nbytes,
        floor_ratio=timing.floor_ratio, sklearn_key=f"sklearn/True/{dtype}",
        notes=f"median of {timing.samples} epochs",
        baseline_key=f"naive/sgd/{shuffle}/{dtype}" if naive else None,
        baseline_name="the naive loop",
    )  # fmt: skip


@numba.njit(fastmath={"reassoc", "contract", "nsz", "arcp"}, nogil=True)
def _naive_sgd_epoch(X, y, w, intercept, order, eta):
    """Squared-error SGD written the obvious way (fastgd's fastmath flags): the yardstick of
    the per-row work around fastgd's dot product and update (issue 15)."""
    for k in range(X.shape[0]):
        i = order[k] if order.shape[0] > 0 else k
        p = intercept
        for j in range(X.shape[1]):
            p += X[i, j] * w[j]
        step = eta * (p - y[i])
        for j in range(X.shape[1]):
            w[j] -= step * X[i, j]
        intercept -= step
    return intercept


@pytest.mark.parametrize(
    ("dtype", "shuffle"), list(itertools.product(DTYPES, (False, "block"))), ids=str
)
def test_naive_sgd_epoch(loop_timer, regression_data, results, settings, dtype, shuffle):
    """(b') The naive loop above, on the same data in the same order as fastgd's
    ``strategy="sgd"`` (file order; fastgd's block order, seeded), timed per epoch as
    fastgd's: fastgd's rows show their time ÷ this one."""
    X, y = regression_data.get(dtype)
    order = np.empty(0, dtype=np.int64)
    if shuffle == "block":
        order = np.empty(X.shape[0], dtype=np.int64)
        block_rows = int(np.clip(BLOCK_BYTES // X[0].nbytes, 8, 4096))
        fill_epoch_order(order, SHUFFLE_BLOCK, block_rows, settings.seed)
    w = np.zeros(X.shape[1], dtype=X.dtype)
    timing = loop_timer(lambda: _naive_sgd_epoch(X, y, w, 0.0, order, settings.eta0), X, epochs=6)
    results.add(
        f"naive/sgd/{shuffle}/{dtype}", f"naive Numba SGD loop, shuffle={shuffle!r}, {dtype}",
        timing.seconds, nbytes=X.nbytes, floor_ratio=timing.floor_ratio,
        sklearn_key=f"sklearn/True/{dtype}",
        notes=f"median of {timing.samples} epochs; no prefetch, no checks",
    )  # fmt: skip


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_optimizer_sgd_epoch(benchmark, epoch_timer, regression_data, results, optimizer):
    """(b'') Each per-row update rule's epoch (``strategy="sgd"``, file order, float64),
    shown ÷ plain SGD's epoch in the same order (issue 12's target: ≤ 1.3×)."""
    X, y = regression_data.get("float64")
    kwargs = {"optimizer": optimizer}
    if optimizer == "nesterov-momentum":
        kwargs = {"optimizer": "momentum", "nesterov": True}
    timing = epoch_timer(X, y, epochs=5, strategy="sgd", shuffle=False, **kwargs)
    results.add(
        f"fastgd/sgd/{optimizer}/float64", f"fastgd sgd optimizer={optimizer!r}, float64",
        timing.seconds, benchmark=benchmark, nbytes=X.nbytes, floor_ratio=timing.floor_ratio,
        sklearn_key="sklearn/True/float64", notes=f"median of {timing.samples} epochs",
        baseline_key="fastgd/sgd/False/float64", baseline_name="plain SGD",
    )  # fmt: skip


@pytest.mark.parametrize("method", ["full", "minibatch", "sgd"])
def test_numpy_reference(benchmark, timed, regression_data, results, settings, method):
    """(c) The numpy reference (float64): the two-pass full-batch step, a mini-batch epoch
    (B=256) and an SGD epoch on a slice, scaled to n rows."""
    X, y = regression_data.X64, regression_data.y64
    n = X.shape[0]
    w = np.zeros(X.shape[1])
    rng = np.random.default_rng(settings.seed)
    common = {"loss": "squared_error"}
    notes, scale = "", 1.0
    if method == "full":

        def target():
            reference.full_batch_step(X, y, w, 0.0, eta=settings.eta0, **common)

        rounds, label = 5, "numpy reference full_batch_step (X@w, X.T@r)"
        notes = "two passes over X"
    elif method == "minibatch":
        order = rng.permutation(n)

        def target():
            reference.minibatch_epoch(X, y, w, 0.0, order, BATCH_SIZE, eta0=settings.eta0, **common)

        rounds, label = 3, f"numpy reference minibatch_epoch B={BATCH_SIZE}"
        notes = "random permutation order"
    else:
        m = min(REFERENCE_SGD_ROWS, n)
        X_slice, y_slice, order = X[:m], y[:m], rng.permutation(m)
        scale = n / m

        def target():
            reference.sgd_epoch(X_slice, y_slice, w, 0.0, order, eta0=settings.eta0, **common)

        rounds, label = 3, "numpy reference sgd_epoch"
        notes = f"run on {m:,} rows, time scaled ×{scale:g} to n rows; random order"
    timing = timed(target, floor_X=X, rounds=rounds, scale=scale)
    results.add(
        f"reference/{method}/float64", f"{label}, float64", timing.seconds,
        benchmark=benchmark, nbytes=X.nbytes, floor_ratio=timing.floor_ratio,
        sklearn_key="sklearn/True/float64", notes=notes,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("dtype", "shuffle"), list(itertools.product(DTYPES, (True, False))), ids=str
)
def test_sklearn_epoch(benchmark, timed, regression_data, results, settings, dtype, shuffle):
    """(d) scikit-learn's SGDRegressor, one epoch of its per-sample SGD (the same objective:
    squared error, no penalty, constant step). Its time includes its own input validation."""
    linear_model = pytest.importorskip("sklearn.linear_model")
    exceptions = pytest.importorskip("sklearn.exceptions")
    X, y = regression_data.get(dtype)

    def target():
        model = linear_model.SGDRegressor(
            loss="squared_error", penalty=None, max_iter=1, tol=None,
            learning_rate="constant", eta0=settings.eta0, shuffle=shuffle,
            random_state=settings.seed,
        )  # fmt: skip
        with warnings.catch_warnings():
            # One epoch is the point here; "max_iter reached" is expected.
            warnings.simplefilter("ignore", exceptions.ConvergenceWarning)
            model.fit(X, y)

    timing = timed(target, floor_X=X, rounds=3)
    results.add(
        f"sklearn/{shuffle}/{dtype}", f"scikit-learn SGDRegressor, shuffle={shuffle}, {dtype}",
        timing.seconds, benchmark=benchmark, nbytes=X.nbytes, floor_ratio=timing.floor_ratio,
        sklearn_key=f"sklearn/True/{dtype}", notes="one epoch (max_iter=1), fit() incl. checks",
    )  # fmt: skip
