"""Fixtures of the benchmark suite, the machine's read floor, and the one results table.

Every timed case is stored in one session-level collector; at the end of the run
``pytest_terminal_summary`` prints a single markdown table (time, GB/s, ratio to the read
floor, ratio to scikit-learn, the public targets) and writes it to ``benchmarks/results.md``
(to the temporary directory for smoke runs, so the committed file is not overwritten).

Noise: the machine is shared, so its memory bandwidth changes from second to second. Each
timed call is therefore paired with a read-floor pass made right next to it (before each
round, or after each epoch), and the "× floor" column is the median of these paired ratios.
All timings come from ``time.perf_counter`` taken here, not from pytest-benchmark's
statistics, so the suite also runs (one sample per case) with ``--benchmark-disable``.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
import pytest

import fastgd

#: Rows of the benchmark data; ``FASTGD_BENCH_ROWS=20000`` gives the CI smoke run.
DEFAULT_ROWS = 1_000_000
N_FEATURES = 100
SEED = 0
#: A small constant step: nothing diverges, and every epoch does the same work.
ETA0 = 1e-4
#: Rows per chunk of the read floor (3.2 MB of float64 at d=100): the chunk count depends on
#: the data size, not on the number of threads, like the kernels' parallel loops.
FLOOR_CHUNK_ROWS = 4096
RESULTS_FILE = Path(__file__).parent / "results.md"
#: The heading of the section benchmarks/test_optimizers.py keeps in results.md.
OPTIMIZER_SECTION = "## Choosing an optimizer"
#: Hand-kept sections at the end of results.md (from the first of them on), which the
#: suite's table must not erase.
KEPT_SECTIONS = ("## Text CSV", OPTIMIZER_SECTION)


def bench_rows() -> int:
    """The row count from ``FASTGD_BENCH_ROWS`` (default 1,000,000)."""
    text = os.environ.get("FASTGD_BENCH_ROWS", str(DEFAULT_ROWS)).replace("_", "")
    try:
        rows = int(text)
    except ValueError:
        raise pytest.UsageError(f"FASTGD_BENCH_ROWS must be an integer; got {text!r}.") from None
    if rows < 1000:
        raise pytest.UsageError(f"FASTGD_BENCH_ROWS must be >= 1000; got {rows}.")
    return rows


# ---------------------------------------------------------------------------------------------
# The read floor: the fastest plain pass over X this machine gives, measured in the same run.
# ---------------------------------------------------------------------------------------------


@numba.njit(parallel=True, fastmath=True, nogil=True)
def _sum_rows(X):
    """Sum of all of X, over fixed chunks of rows in parallel (merged in chunk order).

    Of the variants tried (flat loop, per-column accumulators, 4 explicit accumulators), the
    plain row/column loop with one accumulator per chunk read fastest here.
    """
    n, d = X.shape
    n_chunks = (n + FLOOR_CHUNK_ROWS - 1) // FLOOR_CHUNK_ROWS
    partial = np.zeros(n_chunks)
    for c in numba.prange(n_chunks):
        start = c * FLOOR_CHUNK_ROWS
        stop = min(n, start + FLOOR_CHUNK_ROWS)
        total = 0.0
        for i in range(start, stop):
            for j in range(d):
                total += X[i, j]
        partial[c] = total
    return partial.sum()


class ReadFloor:
    """Times one read-floor pass over an array (compiling first, untimed, per dtype)."""

    def __init__(self) -> None:
        self._compiled: set[np.dtype] = set()

    def _compile(self, X: np.ndarray) -> None:
        if X.dtype not in self._compiled:
            _sum_rows(X[:FLOOR_CHUNK_ROWS])
            self._compiled.add(X.dtype)

    def seconds(self, X: np.ndarray) -> float:
        """One pass with all of Numba's threads."""
        self._compile(X)
        start = time.perf_counter()
        _sum_rows(X)
        return time.perf_counter() - start

    def seconds_one_thread(self, X: np.ndarray) -> float:
        """One pass on one thread (the same kernel), for reference."""
        self._compile(X)
        threads = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            start = time.perf_counter()
            _sum_rows(X)
            return time.perf_counter() - start
        finally:
            numba.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# Timing helpers.
# ---------------------------------------------------------------------------------------------


@dataclass
class Timing:
    """A measured case: median seconds and the median of the paired ratios to the floor."""

    seconds: float
    floor_ratio: float | None
    samples: int


def _summarise(times: list[float], floors: list[float], scale: float = 1.0) -> Timing:
    ratios = [t * scale / f for t, f in zip(times, floors, strict=False)]
    return Timing(
        seconds=statistics.median(times) * scale,
        floor_ratio=statistics.median(ratios) if ratios else None,
        samples=len(times),
    )


def time_epochs(
    X: np.ndarray,
    y: np.ndarray,
    read_floor: ReadFloor,
    *,
    epochs: int,
    on_epoch: Callable | None = None,
    budget_s: float | None = None,
    **fit_kwargs,
) -> tuple[Timing, fastgd.FitResult]:
    """Time the epochs of one ``fastgd.fit`` run from its callback.

    The callback stamps ``time.perf_counter()`` on entry, runs ``on_epoch`` (if any) and one
    read-floor pass, and stamps again on exit; epoch ``k`` lasts from the exit of callback
    ``k-1`` to the entry of callback ``k`` (the callback's own work is excluded) and is
    paired with the mean of the floor passes just before and just after it. Epoch 1 is
    dropped: validation, ``auto`` and compilation all happen before or during it.

    ``budget_s``: stop (through the callback) once two epochs have been timed and the epochs
    after the first have taken this long, so that a pathological case cannot hold the run.
    """
    marks: list[tuple[float, float]] = []
    floors: list[float] = []

    def callback(epoch, coef, intercept, loss):
        entered = time.perf_counter()
        if on_epoch is not None:
            on_epoch(epoch, coef, intercept, loss)
        floors.append(read_floor.seconds(X))
        marks.append((entered, time.perf_counter()))
        if budget_s is not None and len(marks) >= 3:
            return marks[-1][0] - marks[0][1] > budget_s
        return False

    settings = {
        "max_iter": epochs,
        "tol": None,
        "learning_rate": "constant",
        "eta0": ETA0,
        "random_state": SEED,
        **fit_kwargs,
    }
    result = fastgd.fit(X, y, callback=callback, **settings)
    durations = [marks[k][0] - marks[k - 1][1] for k in range(1, len(marks))]
    paired = [(floors[k - 1] + floors[k]) / 2 for k in range(1, len(marks))]
    return _summarise(durations, paired), result


def time_loop_epochs(run_epoch: Callable[[], object], X: np.ndarray, read_floor: ReadFloor,
                     *, epochs: int) -> Timing:  # fmt: skip
    """Time ``epochs`` calls of ``run_epoch`` (one epoch of a loop written outside fastgd)
    as :func:`time_epochs` times fastgd's: a read-floor pass after each call, epoch ``k``
    paired with the passes just before and just after it, epoch 1 dropped (compilation)."""
    durations: list[float] = []
    floors: list[float] = []
    for _ in range(epochs):
        start = time.perf_counter()
        run_epoch()
        durations.append(time.perf_counter() - start)
        floors.append(read_floor.seconds(X))
    paired = [(floors[k - 1] + floors[k]) / 2 for k in range(1, epochs)]
    return _summarise(durations[1:], paired)


# ---------------------------------------------------------------------------------------------
# The results table.
# ---------------------------------------------------------------------------------------------

#: Section order of the table.
SECTIONS = {
    "floor": 0,
    "fastgd": 1,
    "naive": 1,
    "reference": 2,
    "sklearn": 3,
    "overhead": 4,
    "accumulation": 5,
    "compile": 6,
    "convergence": 7,
    "estimators": 8,
    "dask": 9,
}


@dataclass
class Row:
    """One line of the results table."""

    key: str  # "section/...": stable, used for targets and pairing
    case: str
    seconds: float | None
    nbytes: int | None = None  # bytes of X read per call, for GB/s
    floor_ratio: float | None = None
    sklearn_key: str | None = None  # the scikit-learn row this case is compared with
    notes: str = ""
    #: Another row this case's time is divided by, shown in the notes as "× <baseline_name>"
    #: (e.g. fastgd's SGD epoch ÷ the naive loop's).
    baseline_key: str | None = None
    baseline_name: str = ""
    order: int = 0

    @property
    def section(self) -> str:
        return self.key.split("/", 1)[0]


def _le(limit: float):
    return lambda row, sklearn: None if row.floor_ratio is None else row.floor_ratio <= limit


def _faster(factor: float):
    return lambda row, sklearn: None if sklearn is None else sklearn >= factor


#: The issue's public targets: reported beside the measured values, never asserted.
TARGETS: dict[str, tuple[str, Callable]] = {}
for _dtype in ("float64", "float32"):
    TARGETS[f"fastgd/full/{_dtype}"] = ("≤ 1.3× floor", _le(1.3))
    TARGETS[f"fastgd/minibatch/block/{_dtype}"] = ("≤ 1.6× floor", _le(1.6))
    TARGETS[f"fastgd/sgd/block/{_dtype}"] = ("≥ 10× sklearn", _faster(10.0))
    TARGETS[f"fastgd/sgd/True/{_dtype}"] = ("≥ 3.5× sklearn", _faster(3.5))
TARGETS["reference/full/float64"] = ("≈ 4× floor (orientation)", lambda row, sklearn: None)
# Issue 3: the estimators, whole fit() calls against scikit-learn's (benchmarks/test_estimators.py).
for _case in ("regression", "log_loss", "hinge", "multiclass"):
    TARGETS[f"estimators/{_case}/fastgd-sgd"] = ("≥ 3× sklearn", _faster(3.0))
    TARGETS[f"estimators/{_case}/fastgd-minibatch"] = ("≥ 10× sklearn", _faster(10.0))
TARGETS["estimators/sparse/fastgd-sgd"] = ("≥ 1.5× sklearn", _faster(1.5))
# Issue 13: k outputs in one pass (benchmarks/test_multiclass.py).
TARGETS["multiclass/ten/fastgd-one-pass"] = ("≥ 6× sklearn", _faster(6.0))
TARGETS["multiclass/ten/fastgd-one-pass-block"] = ("≥ 12× sklearn", _faster(12.0))
TARGETS["multinomial/fastgd-multinomial"] = ("≥ 10× sooner", _faster(10.0))


class Results:
    """The session's collector: tests add rows, the terminal summary renders them."""

    def __init__(self) -> None:
        self.rows: list[Row] = []

    def add(self, key: str, case: str, seconds: float | None, *, benchmark=None, **fields) -> Row:
        """Add a row (``fields``: the other :class:`Row` attributes); also stored in the
        benchmark's ``extra_info`` (pytest-benchmark's JSON) when ``benchmark`` is given."""
        row = Row(key=key, case=case, seconds=seconds, order=len(self.rows), **fields)
        self.rows.append(row)
        if benchmark is not None:
            benchmark.extra_info.update(
                case=row.case,
                seconds=row.seconds,
                floor_ratio=row.floor_ratio,
                gb_per_s=_gbps(row),
                notes=row.notes,
            )
        return row

    def get(self, key: str) -> Row | None:
        return next((row for row in self.rows if row.key == key), None)

    def sklearn_ratio(self, row: Row) -> float | None:
        base = self.get(row.sklearn_key) if row.sklearn_key else None
        if base is None or not base.seconds or not row.seconds:
            return None
        return base.seconds / row.seconds

    def baseline_note(self, row: Row) -> str:
        """``"1.05× <baseline_name>"``: this row's time ÷ its baseline row's ("" if none)."""
        base = self.get(row.baseline_key) if row.baseline_key else None
        if base is None or not base.seconds or not row.seconds:
            return ""
        return f"{row.seconds / base.seconds:.2f}× {row.baseline_name}"

    def render(self, header: str) -> str:
        lines = [
            header,
            "",
            "| case | ms (per epoch / call) | GB/s | × floor | sklearn ÷ case | target | met |"
            " notes |",
            "|---|---:|---:|---:|---:|---|---|---|",
        ]
        ordered = sorted(self.rows, key=lambda r: (SECTIONS.get(r.section, 99), r.order))
        for row in ordered:
            sklearn = self.sklearn_ratio(row)
            target, met = "", ""
            if row.key in TARGETS:
                target, check = TARGETS[row.key]
                verdict = check(row, sklearn)
                met = "" if verdict is None else ("yes" if verdict else "**no**")
            gbps = _gbps(row)
            notes = "; ".join(part for part in (self.baseline_note(row), row.notes) if part)
            cells = [
                row.case,
                _fmt(None if row.seconds is None else row.seconds * 1e3, "{:,.1f}"),
                _fmt(gbps, "{:.2f}"),
                _fmt(row.floor_ratio, "{:.2f}"),
                _fmt(sklearn, "{:.1f}"),
                target,
                met,
                notes,
            ]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"


def _gbps(row: Row) -> float | None:
    if row.nbytes is None or not row.seconds:
        return None
    return row.nbytes / row.seconds / 1e9


def _fmt(value: float | None, pattern: str) -> str:
    return "" if value is None else pattern.format(value)


_RESULTS = pytest.StashKey[Results]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_RESULTS] = Results()


def _benchmark_disabled(config: pytest.Config) -> bool:
    try:
        return bool(config.getoption("benchmark_disable"))
    except ValueError:  # pytest-benchmark not installed
        return True


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    results = config.stash.get(_RESULTS, None)
    if results is None or not results.rows:
        return
    rows = bench_rows()
    disabled = _benchmark_disabled(config)
    smoke = disabled or rows != DEFAULT_ROWS
    threads = numba.get_num_threads()
    blas_env = {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS_")}
    header = (
        f"## fastgd benchmarks: n={rows:,}, d={N_FEATURES}, {threads} Numba threads, "
        f"{os.cpu_count()} CPUs, fastgd {fastgd.__version__}, numpy {np.__version__}, "
        f"numba {numba.__version__}\n\n"
        f"{time.strftime('%Y-%m-%d %H:%M')}. "
        + (
            "**Smoke run: single samples, not meaningful as timings.** "
            if disabled
            else "Medians of the rounds / epochs; "
        )
        + "× floor = median of ratios to a read-floor pass timed next to each sample; "
        "sklearn ÷ case = scikit-learn SGDRegressor (shuffle=True, same dtype) time per epoch "
        "÷ this case's. Targets are reported, not asserted."
        + (f" OpenBLAS settings in the environment: {blas_env}." if blas_env else "")
        + " Load average at the end of the run (1, 5, 15 min): "
        + ", ".join(f"{value:.1f}" for value in os.getloadavg())
        + "."
    )
    table = results.render(header)
    path = Path(tempfile.gettempdir()) / "fastgd-bench-results.md" if smoke else RESULTS_FILE
    if path.exists():
        # the sections after the suite's table (text CSV, optimizers): keep them
        text = path.read_text(encoding="utf-8")
        found = [text.find(heading) for heading in KEPT_SECTIONS if text.find(heading) >= 0]
        if found:
            table += "\n" + text[min(found) :]
    path.write_text(table, encoding="utf-8")
    terminalreporter.write_sep("=", "fastgd benchmark results")
    terminalreporter.write_line(table)
    terminalreporter.write_line(f"written to {path}")


# ---------------------------------------------------------------------------------------------
# Fixtures.
# ---------------------------------------------------------------------------------------------


@dataclass
class RegressionData:
    """Dense regression data: the same X in float64 and float32."""

    X64: np.ndarray
    y64: np.ndarray
    X32: np.ndarray
    y32: np.ndarray

    def get(self, dtype: str) -> tuple[np.ndarray, np.ndarray]:
        return (self.X64, self.y64) if dtype == "float64" else (self.X32, self.y32)


@pytest.fixture(scope="session")
def rows() -> int:
    return bench_rows()


@pytest.fixture(scope="session")
def regression_data(rows) -> RegressionData:
    """n × 100 standard normal X (float64: 800 MB at 1e6 rows; float32: 400 MB), seeded;
    y = X·w + noise."""
    rng = np.random.default_rng(SEED)
    X64 = rng.standard_normal((rows, N_FEATURES))
    coef = rng.standard_normal(N_FEATURES)
    y64 = X64 @ coef
    y64 += rng.standard_normal(rows)
    return RegressionData(X64=X64, y64=y64, X32=X64.astype(np.float32), y32=y64.astype(np.float32))


@dataclass(frozen=True)
class Settings:
    """The suite's constants, for the test modules (which do not import this conftest)."""

    rows: int
    n_features: int = N_FEATURES
    seed: int = SEED
    eta0: float = ETA0
    default_rows: int = DEFAULT_ROWS
    #: ``--benchmark-disable`` (the smoke run): one sample per case, slow extras skipped.
    benchmark_disabled: bool = False


@pytest.fixture(scope="session")
def settings(rows, request) -> Settings:
    return Settings(rows=rows, benchmark_disabled=_benchmark_disabled(request.config))


@pytest.fixture(scope="session")
def read_floor() -> ReadFloor:
    return ReadFloor()


@pytest.fixture(scope="session")
def results(request) -> Results:
    return request.config.stash[_RESULTS]


@pytest.fixture(scope="session")
def run_epochs(read_floor):
    """``run_epochs(X, y, epochs=k, on_epoch=None, **fit_kwargs)``: :func:`time_epochs`
    without pytest-benchmark; returns ``(Timing, FitResult)``."""

    def run(X, y, *, epochs: int, on_epoch: Callable | None = None, **fit_kwargs):
        return time_epochs(X, y, read_floor, epochs=epochs, on_epoch=on_epoch, **fit_kwargs)

    return run


@pytest.fixture
def timed(benchmark, read_floor):
    """``timed(target, floor_X=X, rounds=r, scale=s)``: run ``target`` under
    ``benchmark.pedantic`` (one warm-up round, then ``rounds``), a read-floor pass over
    ``floor_X`` before each round (pedantic's untimed ``setup``); returns a :class:`Timing`
    with the times multiplied by ``scale``."""

    def run(target: Callable, *, floor_X=None, rounds: int = 5, scale: float = 1.0) -> Timing:
        times: list[float] = []
        floors: list[float] = []

        def setup():
            if floor_X is not None:
                floors.append(read_floor.seconds(floor_X))

        def measured():
            start = time.perf_counter()
            target()
            times.append(time.perf_counter() - start)

        if benchmark.disabled:  # a disabled benchmark runs its target once, without warm-up
            setup()
            measured()
        benchmark.pedantic(measured, setup=setup, rounds=rounds, iterations=1, warmup_rounds=1)
        return _summarise(times[1:], floors[1:], scale)

    return run


@pytest.fixture
def epoch_timer(benchmark, read_floor):
    """``epoch_timer(X, y, epochs=k, budget_s=None, **fit_kwargs)``: one ``fastgd.fit`` run under
    ``benchmark.pedantic`` (its stats: the whole fit), timed per epoch by
    :func:`time_epochs`."""

    def run(X, y, *, epochs: int, budget_s: float | None = None, **fit_kwargs) -> Timing:
        box = {}

        def target():
            box["timing"], _ = time_epochs(
                X, y, read_floor, epochs=epochs, budget_s=budget_s, **fit_kwargs
            )

        benchmark.pedantic(target, rounds=1, iterations=1, warmup_rounds=0)
        return box["timing"]

    return run


@pytest.fixture
def loop_timer(benchmark, read_floor):
    """``loop_timer(run_epoch, X, epochs=k)``: :func:`time_loop_epochs` under
    ``benchmark.pedantic`` (one round: its stats are the whole run)."""

    def run(run_epoch: Callable[[], object], X: np.ndarray, *, epochs: int) -> Timing:
        box = {}

        def target():
            box["timing"] = time_loop_epochs(run_epoch, X, read_floor, epochs=epochs)

        benchmark.pedantic(target, rounds=1, iterations=1, warmup_rounds=0)
        return box["timing"]

    return run
