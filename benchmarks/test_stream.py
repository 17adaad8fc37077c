"""Training on a CSV file (issue 4), side by side in one run.

A generated numeric CSV (about ``FASTGD_BENCH_CSV_MB`` MB, default 1000: 1,000,000 rows of
50 float features and a target; the smoke run writes a few MB) is

- parsed only (``fastgd.iter_csv``, the chosen parser, blocks of 65,536 rows): the ceiling;
- trained on by ``fastgd.fit_csv`` from scratch: the first pass (parse, write the cache,
  gather the statistics) plus one epoch, with the cache removed first;
- trained on for more epochs from the cache (time per epoch, from the callback);
- read by pandas ``read_csv`` in chunks, each fed to scikit-learn's
  ``SGDRegressor.partial_fit``: what users do today.

Throughputs are MB of CSV text per second. Peak memory (RSS) is measured by
``benchmarks/rss.py`` (a separate process per file size, under ``/usr/bin/time -v``).
"""

from __future__ import annotations

import os
import shutil
import time
import warnings

import numpy as np
import pytest

import fastgd

FEATURES = 50
BLOCK_ROWS = 65536
#: Rows of the pattern the file repeats (formatting text is slow; the rows' values do not
#: change the parsing or training cost).
PATTERN_ROWS = 20_000


def csv_megabytes(settings) -> float:
    if settings.benchmark_disabled or settings.rows != settings.default_rows:
        return 4.0
    return float(os.environ.get("FASTGD_BENCH_CSV_MB", "1000"))


def write_csv(path, megabytes: float, seed: int = 0) -> int:
    """A header and rows of ``FEATURES`` standard-normal features and a linear target (with
    noise), about ``megabytes`` MB; returns the number of data rows."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((PATTERN_ROWS, FEATURES))
    y = X @ rng.standard_normal(FEATURES) + 0.1 * rng.standard_normal(PATTERN_ROWS)
    rows = np.column_stack([X, y])
    text = "\n".join(",".join(f"{v:.6g}" for v in row) for row in rows) + "\n"
    header = ",".join([*(f"x{j}" for j in range(FEATURES)), "target"]) + "\n"
    repeats = max(1, round(megabytes * 1e6 / len(text)))
    with open(path, "w", encoding="ascii") as handle:
        handle.write(header)
        for _ in range(repeats):
            handle.write(text)
    return repeats * PATTERN_ROWS


@pytest.fixture(scope="module")
def csv_file(tmp_path_factory, settings):
    folder = tmp_path_factory.mktemp("csv")
    path = folder / "data.csv"
    rows = write_csv(path, csv_megabytes(settings))
    yield path, rows, os.path.getsize(path)
    shutil.rmtree(folder, ignore_errors=True)


def _drop_cache(folder):
    for entry in os.listdir(folder):
        if entry != "data.csv":
            target = os.path.join(folder, entry)
            if os.path.isdir(target):
                shutil.rmtree(target)
            else:
                os.remove(target)


def test_parse_only(benchmark, results, csv_file):
    """The parser's throughput to 2-D float64 blocks: the ceiling for a first epoch."""
    path, rows, size = csv_file

    def parse():
        count = 0
        for block in fastgd.iter_csv(path, target="target", block_rows=BLOCK_ROWS):
            count += block.rows
        assert count == rows

    seconds = _time(benchmark, parse)
    results.add(
        "stream/parse", f"parse only: fastgd.iter_csv, {size / 1e6:,.0f} MB, {rows:,} rows",
        seconds, nbytes=size, notes="blocks of 65,536 rows, parsed on a background thread",
    )  # fmt: skip


def test_first_epoch(benchmark, results, csv_file):
    """``fit_csv`` from scratch: first pass + one sgd epoch (cache removed first)."""
    path, _, size = csv_file

    def train():
        _drop_cache(path.parent)
        result = fastgd.fit_csv(
            path, target="target", block_rows=BLOCK_ROWS, strategy="sgd", max_iter=1,
            tol=None, random_state=0,
        )  # fmt: skip
        train.first_pass = result.extras["first_pass_seconds"]

    seconds = _time(benchmark, train)
    parse = results.get("stream/parse")
    ratio = None if parse is None or not parse.seconds else parse.seconds / seconds
    results.add(
        "stream/first-epoch", "fastgd.fit_csv, first epoch (first pass + 1 sgd epoch)",
        seconds, nbytes=size,
        notes=f"first pass {train.first_pass:.2f} s; throughput ÷ parse-only = "
        + ("n/a" if ratio is None else f"{ratio:.2f}"),
    )  # fmt: skip


def test_epochs_from_cache(benchmark, results, csv_file):
    """Later epochs read the memory-mapped cache: time per epoch (from the callback)."""
    path, _, size = csv_file
    marks: list[float] = []

    def callback(epoch, coef, intercept, loss):
        marks.append(time.perf_counter())

    def train():
        marks.clear()
        start = time.perf_counter()
        fastgd.fit_csv(
            path, target="target", block_rows=BLOCK_ROWS, strategy="sgd", max_iter=4,
            tol=None, random_state=0, callback=callback,
        )  # fmt: skip
        train.total = time.perf_counter() - start

    _time(benchmark, train)
    per_epoch = float(np.median(np.diff(marks)))
    first = results.get("stream/first-epoch")
    ratio = None if first is None or not first.seconds else first.seconds / per_epoch
    results.add(
        "stream/cached-epoch", "fastgd.fit_csv, an sgd epoch from the cache", per_epoch,
        nbytes=size,
        notes="median of epochs 2-4 (block order shuffled, rows shuffled in blocks); "
        + ("" if ratio is None else f"first epoch ÷ this = {ratio:.1f}"),
    )  # fmt: skip


def test_pandas_and_sklearn_partial_fit(benchmark, results, csv_file):
    """What users do today: pandas ``read_csv`` in chunks + ``SGDRegressor.partial_fit``."""
    pandas = pytest.importorskip("pandas")
    linear_model = pytest.importorskip("sklearn.linear_model")
    path, _, size = csv_file

    def train():
        model = linear_model.SGDRegressor(random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for chunk in pandas.read_csv(path, chunksize=BLOCK_ROWS):
                values = chunk.to_numpy(dtype=np.float64)
                model.partial_fit(values[:, :-1], values[:, -1])

    seconds = _time(benchmark, train)
    results.add(
        "stream/pandas-sklearn", "pandas read_csv(chunksize) + sklearn SGDRegressor.partial_fit",
        seconds, nbytes=size, notes="one epoch; chunks of 65,536 rows",
    )  # fmt: skip


def _time(benchmark, target) -> float:
    times: list[float] = []

    def measured():
        start = time.perf_counter()
        target()
        times.append(time.perf_counter() - start)

    benchmark.pedantic(measured, rounds=1, iterations=1, warmup_rounds=0)
    if not times:  # --benchmark-disable still calls the target once
        measured()
    return min(times)
