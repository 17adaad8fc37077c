"""Full-batch gradient descent on Dask (issue 5), side by side in one run.

The same n × 100 float64 data (generated on the workers by ``dask.array``'s seeded random
generator, so no input crosses the network; gathered once for the single-process run) are
trained on with ``strategy="full"``:

- by ``fastgd.fit`` in this process (all Numba threads, and one thread);
- by ``fastgd.fit`` of ``fastgd.dask`` on a ``LocalCluster`` of 1 and of 2 worker
  processes (one thread each, ``NUMBA_NUM_THREADS=1`` in the workers), 4 partitions;
- by ``fastgd.dask.fit`` on 2 partitions of 8 rows: the per-step cost of the round trip
  itself (task submission, the tree reduction, model-sized vectors over TCP).

Times are per step (epoch), the median of the steps after the first, from
``extras["dask"]["step_seconds"]`` (the single-process run: from the callback). Rows:
``FASTGD_BENCH_DASK_ROWS`` (default: the suite's row count, at most 200,000: the workers,
the driver's copy and the single-process run must share one machine's memory).
"""

from __future__ import annotations

import os
import statistics
import time

import numba
import numpy as np
import pytest

import fastgd

pytest.importorskip("dask")
pytest.importorskip("distributed")

import dask.array as da
from distributed import Client, LocalCluster

import fastgd.dask as fastgd_dask

PARTITIONS = 4
STEPS = 6


def dask_rows(settings) -> int:
    default = min(settings.rows, 200_000)
    return int(os.environ.get("FASTGD_BENCH_DASK_ROWS", str(default)).replace("_", ""))


@pytest.fixture(scope="module")
def problem(settings):
    n, d = dask_rows(settings), settings.n_features
    chunk = -(-n // PARTITIONS)
    rng = da.random.default_rng(settings.seed)
    X = rng.standard_normal((n, d), chunks=(chunk, d))
    y = X @ da.ones(d, chunks=d) + 0.1 * rng.standard_normal(n, chunks=chunk)
    return X, y


def cluster(workers: int):
    return LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
        env={"NUMBA_NUM_THREADS": "1"},
    )  # fmt: skip


OPTIONS = dict(strategy="full", learning_rate="constant", tol=None)


def dask_step_seconds(client, X, y, eta0) -> float:
    fastgd_dask.fit(X, y, max_iter=2, eta0=eta0, client=client, **OPTIONS)  # warm: compile
    result = fastgd_dask.fit(X, y, max_iter=STEPS, eta0=eta0, client=client, **OPTIONS)
    return statistics.median(result.extras["dask"]["step_seconds"][1:])


def local_step_seconds(X, y, eta0, threads: int | None) -> float:
    marks: list[float] = []
    before = numba.get_num_threads()
    if threads:
        numba.set_num_threads(threads)
    try:
        fastgd.fit(X[:1000], y[:1000], max_iter=1, eta0=eta0, **OPTIONS)  # compile
        start = time.perf_counter()
        fastgd.fit(
            X, y, max_iter=STEPS, eta0=eta0, callback=lambda *args: marks.append(
                time.perf_counter()), **OPTIONS,
        )  # fmt: skip
    finally:
        numba.set_num_threads(before)
    steps = np.diff([start, *marks])
    return float(np.median(steps[1:]))


def test_full_batch_step_one_vs_two_workers(results, settings, problem):
    X, y = problem
    n, d = X.shape
    eta0 = settings.eta0
    nbytes = n * d * 8
    timings = {}
    for workers in (1, 2):
        with cluster(workers) as local, Client(local) as client:
            timings[workers] = dask_step_seconds(client, X, y, eta0)
            if workers == 2:
                tiny_X = da.ones((16, d), chunks=(8, d))
                tiny_y = da.ones(16, chunks=8)
                timings["overhead"] = dask_step_seconds(client, tiny_X, tiny_y, eta0)
                Xn, yn = client.compute([X, y], sync=True)
    timings["local"] = local_step_seconds(Xn, yn, eta0, None)
    timings["local-1"] = local_step_seconds(Xn, yn, eta0, 1)
    speed_up = timings[1] / timings[2]
    shape = f"{n:,} × {d}, {PARTITIONS} partitions"
    results.add(
        "dask/local", f"fastgd.fit full step, one process ({numba.get_num_threads()} threads)",
        timings["local"], nbytes=nbytes, notes=shape,
    )  # fmt: skip
    results.add(
        "dask/local-1thread", "fastgd.fit full step, one process, 1 thread", timings["local-1"],
        nbytes=nbytes, notes=shape,
    )  # fmt: skip
    results.add(
        "dask/1-worker", "fastgd.dask.fit full step, 1 worker × 1 thread", timings[1],
        nbytes=nbytes, notes=f"{shape}; ÷ 1-thread process = {timings[1] / timings['local-1']:.2f}",
    )  # fmt: skip
    results.add(
        "dask/2-workers", "fastgd.dask.fit full step, 2 workers × 1 thread", timings[2],
        nbytes=nbytes, notes=f"{shape}; speed-up over 1 worker {speed_up:.2f}×",
    )  # fmt: skip
    results.add(
        "dask/overhead", "fastgd.dask.fit step on 2 × 8 rows: the round trip alone",
        timings["overhead"], notes=f"model vectors of {d} float64 each way per partition",
    )  # fmt: skip
    assert all(value > 0 for value in timings.values())
