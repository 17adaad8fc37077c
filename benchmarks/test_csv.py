"""CSV parse throughput: ``fastgd.io.iter_csv`` (polars on line-aligned chunks) against
polars' own batched reader and pandas' C engine, and an epoch from the block cache.

Every case turns the same generated numeric CSV into 2-D float64 blocks of 65,536 rows
and reports MB/s of CSV text. Size: ``FASTGD_BENCH_CSV_MB`` (default 1000); the CI smoke
run (``FASTGD_BENCH_ROWS`` set, e.g. 20000) writes that many rows only.
"""

from __future__ import annotations

import importlib.util
import os
import time

import numpy as np
import polars as pl
import pytest

from fastgd.io import BlockCache, iter_csv, read_schema

N_COLUMNS = 20
BLOCK_ROWS = 65_536
#: Bytes per row of the generated file (20 columns of %.8g and separators), measured.
ROW_BYTES = 300


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory):
    rows_env = os.environ.get("FASTGD_BENCH_ROWS")
    if rows_env:
        n_rows = int(rows_env.replace("_", ""))
    else:
        megabytes = float(os.environ.get("FASTGD_BENCH_CSV_MB", "1000"))
        n_rows = int(megabytes * 1e6 / ROW_BYTES)
    path = tmp_path_factory.mktemp("csv") / "bench.csv"
    rng = np.random.default_rng(0)
    with open(path, "w") as handle:
        handle.write(",".join(f"x{i}" for i in range(N_COLUMNS)) + "\n")
        for start in range(0, n_rows, 100_000):
            block = rng.standard_normal((min(100_000, n_rows - start), N_COLUMNS))
            np.savetxt(handle, block, delimiter=",", fmt="%.8g")
    return path


def _report(benchmark, path, name, run):
    size = os.path.getsize(path)
    seconds = []

    def target():
        start = time.perf_counter()
        rows = run()
        seconds.append(time.perf_counter() - start)
        return rows

    rows = benchmark.pedantic(target, rounds=1, iterations=1)
    best = min(seconds)
    benchmark.extra_info.update(mb_per_s=size / best / 1e6, rows=rows)
    print(
        f"\n{name}: {rows} rows, {size / 1e6:.0f} MB in {best:.2f} s = {size / best / 1e6:.0f} MB/s"
    )


@pytest.mark.parametrize("prefetch", [True, False])
def test_fastgd_iter_csv(benchmark, csv_path, prefetch):
    def run():
        return sum(b.rows for b in iter_csv(csv_path, block_rows=BLOCK_ROWS, prefetch=prefetch))

    _report(benchmark, csv_path, f"fastgd iter_csv prefetch={prefetch}", run)


def test_polars_batches(benchmark, csv_path):

    def run():
        rows = 0
        for frame in pl.scan_csv(csv_path).collect_batches(chunk_size=BLOCK_ROWS):
            rows += frame.to_numpy(order="c").shape[0]
        return rows

    _report(benchmark, csv_path, "polars scan_csv.collect_batches", run)


@pytest.mark.skipif(importlib.util.find_spec("pandas") is None, reason="needs pandas")
def test_pandas_chunks(benchmark, csv_path):
    import pandas as pd

    def run():
        rows = 0
        reader = pd.read_csv(csv_path, chunksize=BLOCK_ROWS, dtype=np.float64, engine="c")
        for frame in reader:
            rows += np.ascontiguousarray(frame.to_numpy()).shape[0]
        return rows

    _report(benchmark, csv_path, "pandas read_csv(chunksize)", run)


def test_cache_epoch(benchmark, csv_path, tmp_path):
    schema = read_schema(csv_path, target="x0")
    with BlockCache.writer(schema, dtype=np.float64, cache_dir=tmp_path) as writer:
        for block in iter_csv(schema, block_rows=BLOCK_ROWS):
            writer.append(block)
        cache = writer.commit()

    def run():
        total = 0.0
        for block in cache.blocks(BLOCK_ROWS):
            total += float(block.X.sum()) + float(block.y.sum())  # touch every value
        return cache.n_rows

    _report(benchmark, csv_path, "epoch from the block cache (sum of X, y)", run)
