"""Costs around the epochs, in units of read-floor passes: ``learning_rate="auto"``, input
validation, and parallel against serial mini-batch accumulation (the engine's
``PARALLEL_MIN_VALUES`` threshold)."""

from __future__ import annotations

import itertools

import numba
import numpy as np
import pytest

import fastgd
import fastgd._thresholds
import fastgd.engine
from fastgd import options
from fastgd._validation import check_X

DTYPES = ("float64", "float32")
BATCH_SIZES = (64, 256, 1024, 4096, 16384)
#: (shuffle, epochs per fit): streaming order and fully random order.
ACCUMULATION_ORDERS = ((False, 5), (True, 4))
#: The accumulation study reads the first rows only (a view, 160 MB of float64: far more than
#: the caches): forced parallel accumulation of small batches launches one parallel region
#: per batch, and on an oversubscribed machine each launch can wait milliseconds for a core
#: (one epoch of B=64 over 1e6 rows took 4 s in one run and 90 s in another).
ACCUMULATION_ROWS = 200_000
#: Seconds of timed epochs after which a case stops (once it has two).
ACCUMULATION_BUDGET_S = 5.0
#: "Never parallel": larger than any batch's rows × features.
HUGE = 1 << 62


@pytest.mark.parametrize("dtype", DTYPES)
def test_auto_learning_rate(benchmark, timed, regression_data, results, settings, dtype):
    """(e) What ``learning_rate="auto"`` adds to a fit: ``fastgd.auto_learning_rate`` as the
    engine calls it for a mini-batch fit (B=256) without sample weights."""
    X, _ = regression_data.get(dtype)
    loss = options.loss_by_name("squared_error")

    def target():
        fastgd.auto_learning_rate(
            X, np.empty(0), loss=loss, rows_per_step=256, fit_intercept=True, l2=0.0,
            rng=np.random.default_rng(settings.seed),
        )  # fmt: skip

    timing = timed(target, floor_X=X, rounds=7)
    results.add(
        f"overhead/auto/{dtype}", f"learning_rate='auto' (auto_learning_rate), {dtype}",
        timing.seconds, benchmark=benchmark, nbytes=X.nbytes, floor_ratio=timing.floor_ratio,
        notes="once per fit; × floor = its cost in floor passes",
    )  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES)
def test_validation(benchmark, timed, regression_data, results, dtype):
    """(f) Fit overhead: ``check_X`` on already valid data (no copy; one non-finite scan)."""
    X, _ = regression_data.get(dtype)
    timing = timed(lambda: check_X(X), floor_X=X, rounds=9)
    results.add(
        f"overhead/check_X/{dtype}", f"validation check_X on valid X, {dtype}", timing.seconds,
        benchmark=benchmark, nbytes=X.nbytes, floor_ratio=timing.floor_ratio,
        notes="once per fit; × floor = its cost in floor passes",
    )  # fmt: skip


def _accumulation_id(case) -> str:
    (shuffle, _), batch_size, mode = case
    return f"shuffle={shuffle}-B={batch_size}-{mode}"


@pytest.mark.parametrize(
    "case",
    list(itertools.product(ACCUMULATION_ORDERS, BATCH_SIZES, ("parallel", "serial"))),
    ids=_accumulation_id,
)
def test_minibatch_accumulation(
    benchmark, epoch_timer, regression_data, results, monkeypatch, case
):
    """(g) Mini-batch epochs (float64, d=100, the first ``ACCUMULATION_ROWS`` rows) with the
    batch gradient accumulated in parallel or serially, forced through
    ``fastgd._thresholds.PARALLEL_MIN_VALUES``; the serial row says which is faster and what the
    engine's threshold picks."""
    (shuffle, epochs), batch_size, mode = case
    rows = min(ACCUMULATION_ROWS, regression_data.X64.shape[0])
    X, y = regression_data.X64[:rows], regression_data.y64[:rows]
    threshold = fastgd._thresholds.PARALLEL_MIN_VALUES
    above = batch_size * X.shape[1] >= threshold
    engine_picks = "parallel" if above and numba.get_num_threads() > 1 else "serial"
    forced = 0 if mode == "parallel" else HUGE
    monkeypatch.setattr(fastgd._thresholds, "PARALLEL_MIN_VALUES", forced)
    timing = epoch_timer(
        X, y, epochs=epochs, budget_s=ACCUMULATION_BUDGET_S, strategy="minibatch",
        batch_size=batch_size, shuffle=shuffle,
    )  # fmt: skip
    prefix = f"accumulation/{shuffle}/B={batch_size}"
    notes = f"{rows:,} rows; median of {timing.samples} epochs"
    parallel = results.get(f"{prefix}/parallel")
    if mode == "serial" and parallel is not None and parallel.seconds:
        notes += (
            f"; serial ÷ parallel = {timing.seconds / parallel.seconds:.2f}; engine picks "
            f"{engine_picks} (B·d {'≥' if above else '<'} "
            f"PARALLEL_MIN_VALUES={threshold:,})"
        )
    results.add(
        f"{prefix}/{mode}",
        f"minibatch B={batch_size}, shuffle={shuffle}, {mode} accumulation (forced), float64",
        timing.seconds, benchmark=benchmark, nbytes=X.nbytes, floor_ratio=timing.floor_ratio,
        notes=notes,
    )  # fmt: skip
