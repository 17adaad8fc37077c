"""A CSV with text columns and missing cells (issue 14), cases interleaved in one process.

The generated file (about ``FASTGD_BENCH_CSV_MB`` MB, default 1000; the smoke run writes a
few MB) has ``NUMERIC`` float columns, ``len(TEXT_LEVELS)`` text columns of a few to a few
thousand levels (skewed frequencies) and a numeric target; about 1 % of the numeric cells
are empty and about 1 % of the text cells are ``NA``. Four cases run in rounds, their order
rotated each round so that the machine's load (it is shared) falls on all of them alike:

- **polars**: its own batched reader, ``pl.scan_csv(...).collect_batches()``, each batch
  turned into what fastgd makes of it: the numbers as a C-contiguous float64 block (NaN for
  a missing cell) and the text columns as integer codes (a cast to ``Categorical``, whose
  ids are global, then its physical ids). The reference rate.
- **iter_csv**: ``fastgd.iter_csv(..., missing="keep")``: fastgd's reader alone (line
  numbers, checks, codes through the level table).
- **first pass**: ``fastgd.fit_csv`` from scratch (cache removed): the first pass (read,
  code, write the cache, gather the statistics, learn the encoding) and one sgd epoch on
  the encoded CSR blocks; the first pass alone is ``extras["first_pass_seconds"]``.
- **cached epoch**: ``fastgd.fit_csv`` again (the cache is valid), 4 sgd epochs; time per
  epoch from the callback (median of epochs 2-4).

Reported: MB/s of CSV text, first pass ÷ polars (issue 14: ≥ 0.7×) and first epoch ÷
cached epoch (≥ 10×). Rounds: ``FASTGD_BENCH_CSV_ROUNDS`` (default 3; 1 in the smoke run).
"""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import polars as pl
import pytest

import fastgd

NUMERIC = 20
#: Levels of each text column (a few to a few thousand).
TEXT_LEVELS = (4, 30, 250, 1500, 4000)
BLOCK_ROWS = 65536
#: Rows of the pattern the file repeats (formatting is slow; repeats parse the same).
PATTERN_ROWS = 50_000
MISSING_SHARE = 0.01


def csv_megabytes(settings) -> float:
    if settings.benchmark_disabled or settings.rows != settings.default_rows:
        return 4.0
    return float(os.environ.get("FASTGD_BENCH_CSV_MB", "1000"))


def text_names() -> list[str]:
    return [f"t{k}" for k in range(len(TEXT_LEVELS))]


def _pattern(seed: int, n: int) -> str:
    """``n`` lines of text: numbers, text levels, a few missing cells."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, NUMERIC))
    columns: list[np.ndarray] = [np.char.mod("%.6g", X[:, j]) for j in range(NUMERIC)]
    y = X @ rng.standard_normal(NUMERIC)
    for k, levels in enumerate(TEXT_LEVELS):
        weights = 1.0 / np.arange(1, levels + 1)  # Zipf-like: a few common, a long tail
        codes = rng.choice(levels, size=n, p=weights / weights.sum())
        effect = rng.standard_normal(levels)
        y += effect[codes]
        names = np.array([f"level{k}_{i}" for i in range(levels)])
        cells = names[codes]
        cells[rng.random(n) < MISSING_SHARE] = "NA"
        columns.append(cells)
    for j in range(NUMERIC):
        columns[j][rng.random(n) < MISSING_SHARE] = ""
    y += 0.1 * rng.standard_normal(n)
    columns.append(np.char.mod("%.6g", y))
    table = np.column_stack(columns)
    return "\n".join(",".join(row) for row in table.tolist()) + "\n"


def write_text_csv(path, megabytes: float, seed: int = 0) -> int:
    """Write the file (about ``megabytes`` MB); returns the number of data rows."""
    # about 250 bytes a row: a small file repeats nothing
    n = int(min(PATTERN_ROWS, max(1000, megabytes * 1e6 / 250)))
    text = _pattern(seed, n)
    header = ",".join([*(f"x{j}" for j in range(NUMERIC)), *text_names(), "target"]) + "\n"
    repeats = max(1, round(megabytes * 1e6 / len(text)))
    with open(path, "w", encoding="ascii") as handle:
        handle.write(header)
        for _ in range(repeats):
            handle.write(text)
    return repeats * n


@pytest.fixture(scope="module")
def text_csv(tmp_path_factory, settings):
    folder = tmp_path_factory.mktemp("csv-text")
    path = folder / "data.csv"
    rows = write_text_csv(path, csv_megabytes(settings))
    yield path, rows, os.path.getsize(path)
    shutil.rmtree(folder, ignore_errors=True)


def _drop_cache(path) -> None:
    for entry in os.listdir(path.parent):
        if entry != path.name:
            target = os.path.join(path.parent, entry)
            if os.path.isdir(target):
                shutil.rmtree(target)
            else:
                os.remove(target)


def _polars(path, rows: int) -> dict:
    """polars' batched reader to float64 blocks and text codes."""
    text = text_names()
    numeric = [f"x{j}" for j in range(NUMERIC)] + ["target"]
    scan = pl.scan_csv(
        path, schema_overrides=dict.fromkeys(text, pl.String), null_values=["NA"]
    )  # fmt: skip
    count = 0
    for frame in scan.collect_batches(chunk_size=BLOCK_ROWS):
        X = frame.select(numeric).to_numpy(order="c").astype(np.float64, copy=False)
        codes = frame.select(pl.col(text).cast(pl.Categorical).to_physical()).to_numpy()
        assert codes.shape == (X.shape[0], len(text))
        count += X.shape[0]
    assert count == rows
    return {}


def _iter_csv(path, rows: int) -> dict:
    count = 0
    for block in fastgd.iter_csv(path, target="target", block_rows=BLOCK_ROWS, missing="keep"):
        count += block.rows
    assert count == rows
    return {}


def _fit(path, epochs: int, callback=None):
    return fastgd.fit_csv(
        path, target="target", block_rows=BLOCK_ROWS, strategy="sgd", max_iter=epochs,
        tol=None, random_state=0, callback=callback,
    )  # fmt: skip


def _first_epoch(path, rows: int) -> dict:
    _drop_cache(path)
    result = _fit(path, epochs=1)
    assert not result.extras["from_cache"] and result.extras["rows"] == rows
    return {"first_pass": result.extras["first_pass_seconds"]}


def _cached_epoch(path, rows: int) -> dict:
    marks: list[float] = []
    result = _fit(path, epochs=4, callback=lambda *args: marks.append(time.perf_counter()))
    assert result.extras["from_cache"] and result.extras["rows"] == rows
    return {"epoch": float(np.median(np.diff(marks)))}


CASES = {
    "polars": _polars,
    "iter_csv": _iter_csv,
    "first_epoch": _first_epoch,
    "cached": _cached_epoch,
}


def _rounds(settings) -> int:
    if settings.benchmark_disabled or settings.rows != settings.default_rows:
        return 1
    return int(os.environ.get("FASTGD_BENCH_CSV_ROUNDS", "3"))


def test_text_csv_interleaved(benchmark, results, settings, text_csv):
    """All four cases, round by round in a rotated order (the cached case last)."""
    path, rows, size = text_csv
    times: dict[str, list[float]] = {name: [] for name in CASES}
    extra: dict[str, list[float]] = {"first_pass": [], "epoch": []}
    order = ["polars", "iter_csv", "first_epoch"]

    def one_round():
        for name in [*order, "cached"]:
            start = time.perf_counter()
            found = CASES[name](path, rows)
            times[name].append(time.perf_counter() - start)
            for key, value in found.items():
                extra[key].append(value)
        order.append(order.pop(0))

    benchmark.pedantic(one_round, rounds=_rounds(settings), iterations=1, warmup_rounds=0)
    if not times["polars"]:  # --benchmark-disable still calls the target once
        one_round()
    _report(results, benchmark, size, rows, times, extra)


def _report(results, benchmark, size: int, rows: int, times: dict, extra: dict) -> None:
    median = {name: float(np.median(values)) for name, values in times.items()}
    polars = median["polars"]
    first_pass = float(np.median(extra["first_pass"]))
    epoch = float(np.median(extra["epoch"]))
    n = len(times["polars"])
    shape = (
        f"{size / 1e6:,.0f} MB, {rows:,} rows, {NUMERIC} numeric + {len(TEXT_LEVELS)} text "
        f"columns ({'/'.join(map(str, TEXT_LEVELS))} levels)"
    )

    def rate(seconds: float) -> str:
        return f"{size / seconds / 1e6:,.0f} MB/s"

    def ratio_list(values) -> str:
        pairs = zip(times["polars"], values, strict=True)
        return ", ".join(f"{polars_t / t:.2f}" for polars_t, t in pairs)

    results.add(
        "csv-text/polars", f"polars scan_csv().collect_batches() → float64 + codes, {shape}",
        polars, nbytes=size, benchmark=benchmark,
        notes=f"{rate(polars)}; median of {n} rounds; text cast to Categorical ids",
    )  # fmt: skip
    results.add(
        "csv-text/iter_csv", "fastgd.iter_csv(missing='keep'), text CSV", median["iter_csv"],
        nbytes=size,
        notes=f"{rate(median['iter_csv'])}; ÷ polars rate = {polars / median['iter_csv']:.2f} "
        f"(per round: {ratio_list(times['iter_csv'])})",
    )  # fmt: skip
    results.add(
        "csv-text/first-pass", "fastgd.fit_csv first pass (read, code, cache, statistics, "
        "encoding), text CSV", first_pass, nbytes=size,
        notes=f"{rate(first_pass)}; ÷ polars rate = {polars / first_pass:.2f} (target ≥ 0.7; "
        f"per round: {ratio_list(extra['first_pass'])})",
    )  # fmt: skip
    results.add(
        "csv-text/first-epoch", "fastgd.fit_csv first epoch (first pass + 1 sgd epoch), text CSV",
        median["first_epoch"], nbytes=size,
        notes=f"{rate(median['first_epoch'])}; ÷ polars rate = "
        f"{polars / median['first_epoch']:.2f} (per round: {ratio_list(times['first_epoch'])})",
    )  # fmt: skip
    results.add(
        "csv-text/cached-epoch", "fastgd.fit_csv sgd epoch from the cache (CSR blocks), text CSV",
        epoch, nbytes=size,
        notes=f"median of epochs 2-4; first epoch ÷ this = {median['first_epoch'] / epoch:.1f} "
        "(target ≥ 10)",
    )  # fmt: skip
