"""The learning-rate playground: sweeps, a learning-rate finder and the descent path.

Everything here drives ``fastgd.fit``; nothing has a training loop of its own:

- :func:`sweep` runs ``fit`` once per (strategy, batch size, learning rate), with
  ``learning_rate="constant"`` and ``eta0`` set to the rate (or ``"auto"``), catching
  :class:`~fastgd.DivergenceError` and recording the partial loss curve it carries;
- :func:`find_learning_rate` runs short ``fit`` calls at geometrically growing rates from the
  same start on a sample of the rows (a learning-rate range test) and suggests half the rate
  that reached the lowest objective before the loss blew up;
- :func:`descent_path` records the weights after every epoch through ``fit``'s ``callback``
  (for ``strategy="full"`` that is every step), for the loss-surface picture of 1-D and 2-D
  problems;
- :func:`read_csv` reads a CSV into memory as ``fit_csv`` would train on it: the same
  reader, missing-cell policy and :class:`fastgd.io.encoding.Encoding` (standardised
  numeric columns, one-hot or hashed text columns: a CSR matrix when there is one).

X may be a dense array or a scipy.sparse CSR matrix throughout (``fit``'s CSR kernels).

The pictures are drawn by :mod:`fastgd.plot` (matplotlib, the optional ``fastgd[plot]``
extra); this module imports no matplotlib.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numba
import numpy as np

from . import _range_test, engine, options, parameters, reference
from ._thresholds import PARALLEL_MIN_VALUES
from ._validation import (
    check_binary_labels,
    check_csr,
    check_sample_weight,
    check_scalar,
    check_X,
    is_sparse,
)
from .engine import FitResult, fit
from .errors import DivergenceError

__all__ = [
    "CsvData",
    "DescentPath",
    "LearningRateFinder",
    "SweepResult",
    "SweepRun",
    "descent_path",
    "find_learning_rate",
    "read_csv",
    "sweep",
]

#: ``sweep`` runs its fits on threads (the kernels release the GIL) when X holds at least
#: this many values; below, thread start-up and contention cost more than they save.
#: The range test's rule (``fastgd._range_test``, shared with ``learning_rate="auto"`` of
#: the adaptive update rules): the suggestion is the edge divided by the first, a rate has
#: blown up above the second times the lowest objective so far (their reasons are there).
FINDER_SUGGESTION_DIVISOR = _range_test.SUGGESTION_DIVISOR
FINDER_BLOW_UP_FACTOR = _range_test.BLOW_UP_FACTOR
#: A run that ends above its starting objective by more than this fraction of it has
#: diverged, even though ``fit`` did not stop it (its explosion check allows a loss up to
#: 1e10 times the start). The margin only absorbs rounding: the engine and
#: ``reference.objective`` sum in different orders (float32 data: ~1e-7 apart).
ABOVE_START_TOLERANCE = 1e-6
#: Rows the finder and the loss surface work on at most (a seeded sample of X).
FINDER_SAMPLE_ROWS = 4096
SURFACE_SAMPLE_ROWS = 2000

#: Arguments that sweep, the finder and the path set themselves.
_OWN_ARGUMENTS = ("learning_rate", "eta0", "strategy", "batch_size", "random_state")


def _check_fit_options(fit_options: dict, caller: str, also: Sequence[str] = ()) -> None:
    for name in (*_OWN_ARGUMENTS, *also):
        if name in fit_options:
            raise TypeError(
                f"{caller}() sets {name!r} itself; pass the values to try as its own "
                f"arguments (learning_rates, strategies, batch_sizes, random_state)."
            )


def _check_seed(random_state) -> int:
    """Every run of a sweep or finder uses the same integer seed (a shared Generator would
    make results depend on the order in which threads run)."""
    if random_state is None:
        return int(np.random.default_rng().integers(2**31 - 1))
    if isinstance(random_state, (bool, np.bool_)) or not isinstance(
        random_state, (int, np.integer)
    ):
        raise TypeError(
            f"random_state must be None or an int (one seed shared by every run); got "
            f"{random_state!r}."
        )
    if random_state < 0:
        raise ValueError(f"random_state must be >= 0; got {random_state}.")
    return int(random_state)


# ---------------------------------------------------------------------------------------------
# Sweep
# ---------------------------------------------------------------------------------------------


@dataclass
class SweepRun:
    """One run of a sweep: one (strategy, batch size, learning rate).

    Attributes
    ----------
    strategy : str
    batch_size : int or None
        Rows per step for ``minibatch``; None for ``sgd`` and ``full`` (which ignore it).
    learning_rate : float or "auto"
        The rate asked for.
    step : float
        The step size the run started with (``auto``: the derived one; else the rate).
    loss_history : ndarray
        The loss curve, one value per finished epoch (for a diverged run, the epochs
        before the one that diverged: ``DivergenceError.loss_history``).
    final_loss : float
        The last value of ``loss_history``; NaN for a run that ``fit`` stopped
        (``DivergenceError``).
    fit_time : float
        Wall seconds of the ``fit`` call (with threads, runs share the cores).
    n_iter : int
        Epochs that finished.
    converged : bool
    diverged : bool
        ``fit`` raised ``DivergenceError``, or the run ended above its starting objective
        ``start_loss`` (or at a loss that is not finite): the step was too large for the
        data, even where ``fit`` ran all its epochs.
    message : str or None
        Why a diverged run counts as such (``DivergenceError``'s message, or the final and
        the starting loss).
    result : FitResult or None
        The full result (None when ``fit`` raised).
    start_loss : float
        The objective at the starting weights, which every run of a sweep shares
        (NaN when not known).
    """

    strategy: str
    batch_size: int | None
    learning_rate: float | str
    step: float
    loss_history: np.ndarray
    final_loss: float
    fit_time: float
    n_iter: int
    converged: bool
    diverged: bool
    message: str | None = None
    result: FitResult | None = field(default=None, repr=False)
    #: The optimizer of a sweep over ``optimizers`` (None: the sweep had no such axis).
    optimizer: str | None = None
    start_loss: float = math.nan

    @property
    def status(self) -> str:
        """How the run ended: ``"converged"``, ``"ran all epochs"``, ``"diverged in epoch
        4"`` (``fit`` stopped it) or ``"diverged (ended above its start)"``."""
        if self.diverged:
            if self.result is None:
                return f"diverged in epoch {self.n_iter + 1}"
            return "diverged (ended above its start)"
        return "converged" if self.converged else "ran all epochs"

    def cells(self) -> list[str]:
        """The run's row of the tables (:meth:`SweepResult.to_markdown`, the HTML report):
        method, batch size, rate, epochs, final loss, time (ms), status."""
        final = "—" if math.isnan(self.final_loss) else f"{self.final_loss:.6g}"
        return [
            self.method, "" if self.batch_size is None else str(self.batch_size),
            self.rate.replace("auto (", "auto → ").rstrip(")"), str(self.n_iter), final,
            f"{1000 * self.fit_time:.1f}", self.status,
        ]  # fmt: skip

    @property
    def method(self) -> str:
        """The strategy, with the optimizer when the sweep tried several: ``"full (lbfgs)"``."""
        return self.strategy if self.optimizer is None else f"{self.strategy} ({self.optimizer})"

    @property
    def label(self) -> str:
        """A short name for legends: ``"minibatch B=32, lr=0.01"``."""
        strategy = self.method if self.batch_size is None else f"{self.method} B={self.batch_size}"
        return f"{strategy}, lr={self.rate}"

    @property
    def rate(self) -> str:
        """The step as shown: ``"0.01"``, ``"auto (0.0607)"``, or lbfgs's ``"line search"``."""
        if self.optimizer == "lbfgs":
            return "line search"
        return f"auto ({self.step:.3g})" if self.learning_rate == "auto" else f"{self.step:.3g}"


@dataclass
class SweepResult:
    """The table of a sweep: one :class:`SweepRun` per combination, in the order
    strategies × batch sizes × learning rates.

    Iterate it, index it, ``str()`` it (a Markdown table), or turn it into a pandas
    DataFrame with :meth:`to_pandas` when pandas is installed.
    """

    runs: list[SweepRun]
    random_state: int
    fit_options: dict = field(default_factory=dict)

    def __iter__(self) -> Iterator[SweepRun]:
        return iter(self.runs)

    def __len__(self) -> int:
        return len(self.runs)

    def __getitem__(self, index: int) -> SweepRun:
        return self.runs[index]

    def best(self) -> SweepRun | None:
        """The run with the lowest final loss that did not diverge (None if all did)."""
        finished = [run for run in self.runs if not run.diverged]
        return min(finished, key=lambda run: run.final_loss) if finished else None

    def find(
        self,
        *,
        strategy: str,
        learning_rate: float | str,
        batch_size: int | None = None,
        optimizer: str | None = None,
    ) -> SweepRun:
        """The run of one combination (``KeyError`` if the sweep did not run it)."""
        for run in self.runs:
            if (
                run.strategy == strategy
                and (optimizer is None or run.optimizer == optimizer)
                and run.learning_rate == learning_rate
                and (run.batch_size == batch_size or run.batch_size is None)
            ):
                return run
        raise KeyError(f"no run with strategy={strategy!r}, learning_rate={learning_rate!r}, "
                       f"batch_size={batch_size!r}")  # fmt: skip

    def to_records(self) -> list[dict]:
        """One dict per run (the curve as a list), e.g. for ``json.dumps``."""
        return [
            {
                "strategy": run.strategy,
                "optimizer": run.optimizer,
                "batch_size": run.batch_size,
                "learning_rate": run.learning_rate,
                "step": run.step,
                "epochs": run.n_iter,
                "final_loss": run.final_loss,
                "fit_time": run.fit_time,
                "converged": run.converged,
                "diverged": run.diverged,
                "status": run.status,
                "start_loss": run.start_loss,
                "loss_history": run.loss_history.tolist(),
            }
            for run in self.runs
        ]

    def to_pandas(self):
        """The table as a pandas DataFrame (needs pandas, which fastgd does not depend on)."""
        try:
            import pandas as pd
        except ImportError as error:
            raise ImportError(
                "SweepResult.to_pandas() needs pandas (pip install pandas); "
                "to_records() and to_markdown() work without it."
            ) from error
        return pd.DataFrame.from_records(self.to_records())

    #: The columns of :meth:`to_markdown` (and of the HTML report), one per ``SweepRun.cells``.
    COLUMNS = ("strategy", "batch", "learning rate", "epochs", "final loss", "time (ms)",
               "status")  # fmt: skip

    def to_markdown(self) -> str:
        """A Markdown table: strategy, batch size, rate, epochs, final loss, time, status
        (a diverged run's status in bold)."""
        lines = ["| " + " | ".join(self.COLUMNS) + " |", "|---|---:|---:|---:|---:|---:|---|"]
        for run in self.runs:
            cells = run.cells()
            cells[-1] = cells[-1].replace("diverged", "**diverged**", 1)
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    __str__ = to_markdown

    def plot(self, ax=None):
        """All loss curves on one axes (see :func:`fastgd.plot.plot_sweep`)."""
        from .plot import plot_sweep

        records = self.to_records()
        for record, run in zip(records, self.runs, strict=True):
            record["label"] = run.label
        return plot_sweep(records, ax=ax)


def _rates(learning_rates) -> list[float | str]:
    if isinstance(learning_rates, (str, int, float)):
        learning_rates = [learning_rates]
    rates: list[float | str] = []
    for rate in learning_rates:
        if isinstance(rate, str):
            if rate != "auto":
                raise ValueError(
                    f"learning_rates holds {rate!r}; allowed: positive numbers or 'auto'."
                )
            rates.append(rate)
        else:
            rates.append(check_scalar(rate, "learning_rates[i]", low=0.0, low_open=True))
    if not rates:
        raise ValueError("learning_rates is empty; give at least one rate.")
    return rates


def _optimizer_names(optimizers) -> list[str]:
    """The optimizers of a sweep, each checked by the parameter table's row (its message
    names the allowed values)."""
    row = parameters.parameter("optimizer")
    names = [optimizers] if isinstance(optimizers, str) else list(optimizers)
    if not names:
        raise ValueError("optimizers is empty; give at least one.")
    return [parameters.check_value(row, name) for name in names]


def _names(values, parameter: str, lookup) -> list[str]:
    if isinstance(values, str):
        values = [values]
    names = [lookup(value).name for value in values]
    if not names:
        raise ValueError(f"{parameter} is empty; give at least one.")
    return names


def _combinations(strategies, optimizers, sizes, rates) -> list[tuple]:
    """``(strategy, optimizer, batch size, rate)`` of every run: strategies × optimizers ×
    batch sizes × rates, less the optimizers a strategy does not run (the parameter
    table's rule) and the rates lbfgs ignores (it runs once, under ``"auto"``: its line
    search picks the steps)."""
    combinations = []
    for strategy in strategies:
        for optimizer in optimizers:
            values = {"strategy": strategy, "optimizer": optimizer}
            if optimizer is not None and _optimizer_refused(values):
                continue
            runs_rates = ["auto"] if optimizer == "lbfgs" else rates
            combinations += [
                (strategy, optimizer, size if strategy == "minibatch" else None, rate)
                for size in (sizes if strategy == "minibatch" else [None])
                for rate in runs_rates
            ]
    if not combinations:
        raise ValueError(
            f"no strategy of {list(strategies)} runs any optimizer of {list(optimizers)} "
            f"(gd, nesterov, lbfgs need strategy 'full'; the others 'sgd' or 'minibatch')."
        )
    return combinations


def _optimizer_refused(values: dict) -> bool:
    try:
        parameters.check_rules(values)
    except ValueError:
        return True
    return False


def _ended_above_start(final_loss: float, start_loss: float) -> bool:
    """Whether a finished run diverged all the same: its final loss is not finite, or lies
    above its start. A start of 0 (the perceptron's loss at zero weights) is no measure:
    such a loss grows with the weights by design."""
    if not math.isfinite(final_loss):
        return True
    return start_loss > 0.0 and final_loss > start_loss * (1.0 + ABOVE_START_TOLERANCE)


def _one_run(X, y, strategy, optimizer, batch_size, rate, seed, start_loss, fit_options):
    schedule = {"learning_rate": "auto"} if rate == "auto" else {
        "learning_rate": "constant", "eta0": rate}  # fmt: skip
    if optimizer is not None:
        schedule["optimizer"] = optimizer
    started = time.perf_counter()
    try:
        result = fit(
            X, y, strategy=strategy, batch_size=batch_size or 1, random_state=seed,
            **schedule, **fit_options,
        )  # fmt: skip
    except DivergenceError as error:
        history = np.asarray(error.loss_history, dtype=np.float64)
        return SweepRun(
            strategy=strategy, batch_size=batch_size, learning_rate=rate,
            step=math.nan if rate == "auto" else float(rate), loss_history=history,
            final_loss=math.nan, fit_time=time.perf_counter() - started, n_iter=history.shape[0],
            converged=False, diverged=True, message=str(error), optimizer=optimizer,
            start_loss=start_loss,
        )  # fmt: skip
    final = float(result.loss_history[-1])
    diverged = _ended_above_start(final, start_loss)
    message = (
        f"the loss ended at {final:.6g}, above its starting {start_loss:.6g}: the step is too "
        "large for this data (unscaled features?)" if diverged else None
    )  # fmt: skip
    return SweepRun(
        strategy=strategy, batch_size=batch_size, learning_rate=rate,
        step=float(result.learning_rate), loss_history=result.loss_history, final_loss=final,
        fit_time=time.perf_counter() - started, n_iter=result.n_iter,
        converged=result.converged and not diverged, diverged=diverged, message=message,
        result=result, optimizer=optimizer, start_loss=start_loss,
    )  # fmt: skip


def sweep(
    X,
    y,
    learning_rates: Sequence[float | str] = (0.001, 0.01, 0.1, 1.0),
    strategies: Sequence[str] = ("sgd", "minibatch", "full"),
    batch_sizes: Sequence[int] = (256,),
    *,
    random_state: int | None = 0,
    n_jobs: int | None = None,
    optimizers: Sequence[str] | None = None,
    **fit_options,
) -> SweepResult:
    """Fit every combination of learning rate, strategy and batch size.

    Each run is ``fastgd.fit(X, y, strategy=s, batch_size=B, learning_rate="constant",
    eta0=rate, random_state=random_state, **fit_options)`` (``learning_rate="auto"`` for a
    rate given as ``"auto"``), so a row of the result equals that call exactly. A run that
    raises :class:`~fastgd.DivergenceError` is recorded as diverged, with the loss curve
    of the epochs before it diverged; so is a run whose final loss lies above the objective
    at the starting weights (``SweepRun.start_loss``), though ``fit`` finished it; other
    errors (invalid input) are raised.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
    y : array of shape (n_samples,)
    learning_rates : sequence of float or "auto"
        Constant step sizes to try (> 0); ``"auto"`` adds a run with the derived step.
    strategies : sequence of {"sgd", "minibatch", "full"}
    batch_sizes : sequence of int
        Rows per step, used by ``minibatch`` only: ``sgd`` and ``full`` run once per rate.
    random_state : int or None
        One seed for every run (None: one drawn at random, kept on the result), so runs
        differ only by their options.
    optimizers : sequence of str, or None
        Optimizers to try (``fastgd.fit``'s ``optimizer``): an axis between strategies and
        batch sizes. Each strategy runs the ones it allows (``full``: ``sgd`` = gd,
        ``gd``, ``nesterov``, ``lbfgs``; ``sgd``/``minibatch``: the stochastic ones);
        ``lbfgs`` runs once, under ``"auto"`` (its line search picks the steps). None: no
        such axis (``optimizer`` may then be one of ``fit_options``).
    n_jobs : int or None
        Threads running fits at once. None: one per core when X holds at least
        ``PARALLEL_MIN_VALUES`` values, else 1. The kernels release the GIL, and results
        do not depend on it; ``fit_time`` does (runs share the cores).
    **fit_options
        Any other argument of :func:`fastgd.fit` (``loss``, ``max_iter``, ``tol``,
        ``penalty``, ``shuffle``, ...). A ``callback`` is called from the worker threads.

    Returns
    -------
    SweepResult
        The runs in the order strategies × (optimizers ×) batch sizes × learning rates.

    Examples
    --------
    >>> table = fastgd.sweep(X, y, [0.01, 0.1, 1.0], ["sgd", "full"], max_iter=10)
    >>> print(table)           # a Markdown table
    >>> table.plot()           # every loss curve on one figure (needs fastgd[plot])
    """
    _check_fit_options(fit_options, "sweep", () if optimizers is None else ("optimizer",))
    rates = _rates(learning_rates)
    strategy_names = _names(strategies, "strategies", options.strategy_by_name)
    if isinstance(batch_sizes, int):
        batch_sizes = [batch_sizes]
    sizes = [check_scalar(size, "batch_sizes[i]", kind="int", low=1) for size in batch_sizes]
    if not sizes:
        raise ValueError("batch_sizes is empty; give at least one.")
    seed = _check_seed(random_state)
    optimizer_names = [None] if optimizers is None else _optimizer_names(optimizers)
    combinations = _combinations(strategy_names, optimizer_names, sizes, rates)
    X = _check_data(X, check_finite=False)  # once, not per run (fit checks the values)
    start_loss = _Problem.build(X, y, X.shape[0], seed, fit_options).start_objective(fit_options)
    if n_jobs is None:
        n_jobs = (os.cpu_count() or 1) if X.size >= PARALLEL_MIN_VALUES else 1
    n_jobs = check_scalar(n_jobs, "n_jobs", kind="int", low=1)
    n_jobs = engine.concurrent_fits(min(n_jobs, len(combinations)))
    threads = max(1, numba.get_num_threads() // n_jobs)

    def run(combination):
        strategy, optimizer, size, rate = combination
        return _one_run(X, y, strategy, optimizer, size, rate, seed, start_loss, fit_options)

    def run_in_thread(combination):
        # Numba's thread count is per calling thread: share the cores out among the fits.
        numba.set_num_threads(threads)
        return run(combination)

    if n_jobs == 1:
        runs = [run(combination) for combination in combinations]
    else:
        with ThreadPoolExecutor(max_workers=n_jobs) as pool:
            runs = list(pool.map(run_in_thread, combinations))  # map keeps the order
    return SweepResult(runs=runs, random_state=seed, fit_options=dict(fit_options))


# ---------------------------------------------------------------------------------------------
# Objective on a sample (the finder's measure, the loss surface)
# ---------------------------------------------------------------------------------------------


def _check_data(X, *, check_finite: bool = True):
    """X as ``fit`` reads it: a C-contiguous float array, or a checked CSR matrix."""
    if is_sparse(X):
        return check_csr(X, check_finite=check_finite)
    return check_X(X, check_finite=check_finite)


def _squared_row_norms(X) -> np.ndarray:
    """``‖x_i‖²`` of every row (float64), dense or CSR."""
    if is_sparse(X):
        return np.asarray(X.astype(np.float64).power(2).sum(axis=1)).reshape(-1)
    return np.einsum("ij,ij->i", X, X, dtype=np.float64)


@dataclass
class _Problem:
    """A sample of the data in the form ``reference.objective`` takes."""

    X: np.ndarray
    y: np.ndarray
    multipliers: np.ndarray | None
    loss: str
    epsilon: float
    l1: float
    l2: float
    fit_intercept: bool
    sample_weight: np.ndarray | None  # as passed to fit for the same rows

    @classmethod
    def build(cls, X, y, sample_rows: int, seed: int, fit_options: dict) -> _Problem:
        X = _check_data(X)
        n = X.shape[0]
        y = np.asarray(y)
        if y.shape != (n,):
            raise ValueError(f"y has shape {y.shape}; expected ({n},) to match X.")
        sample_weight = fit_options.get("sample_weight")
        if n > sample_rows:
            rows = np.sort(np.random.default_rng(seed).choice(n, sample_rows, replace=False))
            X, y = X[rows], y[rows]
            if sample_weight is not None:
                sample_weight = np.asarray(sample_weight)[rows]
        loss = options.loss_by_name(fit_options.get("loss", "squared_error"))
        if loss.classification:
            _, signed = check_binary_labels(y, loss.name, np.float64)
        else:
            signed = np.asarray(y, dtype=np.float64)
        penalty = options.penalty_by_name(fit_options.get("penalty"))
        l1, l2 = penalty.split(fit_options.get("alpha", 1e-4), fit_options.get("l1_ratio", 0.15))
        weights = check_sample_weight(sample_weight, X.shape[0])
        return cls(
            X=X, y=signed, multipliers=weights if weights.shape[0] else None, loss=loss.name,
            epsilon=fit_options.get("epsilon", 0.1), l1=l1, l2=l2,
            fit_intercept=fit_options.get("fit_intercept", True), sample_weight=sample_weight,
        )  # fmt: skip

    def objective(self, coef, intercept) -> float:
        if is_sparse(self.X):  # the same J from the margins (reference reads dense X only)
            coef = np.asarray(coef, dtype=np.float64)
            margins = self.X.astype(np.float64, copy=False) @ coef + float(intercept)
            values, _ = reference.loss_and_derivative(self.loss, margins, self.y, self.epsilon)
            weights = np.ones(values.shape[0]) if self.multipliers is None else self.multipliers
            return float(weights @ values / values.shape[0]) + reference.penalty_value(
                coef, self.l1, self.l2
            )
        return reference.objective(
            self.X, self.y, np.asarray(coef, dtype=np.float64), float(intercept),
            loss=self.loss, epsilon=self.epsilon, sample_weight=self.multipliers,
            l1=self.l1, l2=self.l2,
        )  # fmt: skip

    def start_objective(self, fit_options: dict) -> float:
        """The objective at the weights a run starts from (``coef_init`` and
        ``intercept_init``, else zeros)."""
        coef_init = fit_options.get("coef_init")
        start_coef = np.zeros(self.X.shape[1]) if coef_init is None else coef_init
        return self.objective(start_coef, fit_options.get("intercept_init") or 0.0)

    def fit_options(self, fit_options: dict) -> dict:
        """fit's options for the sample (its rows of sample_weight)."""
        out = dict(fit_options)
        if self.sample_weight is not None:
            out["sample_weight"] = self.sample_weight
        return out


# ---------------------------------------------------------------------------------------------
# Learning-rate finder
# ---------------------------------------------------------------------------------------------


@dataclass
class LearningRateFinder:
    """The result of :func:`find_learning_rate`.

    Attributes
    ----------
    learning_rates : ndarray
        The rates tried, growing geometrically (the test stops at the first that blew up).
    losses : ndarray
        The objective on the sample after each short run; ``inf`` where ``fit`` diverged.
    start_loss : float
        The objective at the starting weights.
    edge_rate : float
        The largest rate tried before the first that blew up (diverged, or ended above
        ``start_loss`` or ``FINDER_BLOW_UP_FACTOR`` times the lowest objective so far);
        ``max_rate`` when none did.
    suggestion : float
        ``edge_rate / FINDER_SUGGESTION_DIVISOR``.
    lowest_rate : float
        The rate that reached the lowest objective (with noisy SGD often far smaller:
        a smaller step also means less noise at the end of a short run).
    auto_rate : float
        The step ``learning_rate="auto"`` derives for the same sample and strategy.
    blew_up : bool
        Whether some rate blew up (if not, raise ``max_rate``: the suggestion is a floor).
    strategy : str
    batch_size : int
    epochs : int
        Epochs of each short run.
    sample_rows : int
        Rows the runs used.
    """

    learning_rates: np.ndarray
    losses: np.ndarray
    start_loss: float
    edge_rate: float
    suggestion: float
    lowest_rate: float
    auto_rate: float
    blew_up: bool
    strategy: str
    batch_size: int
    epochs: int
    sample_rows: int

    @property
    def diverged(self) -> np.ndarray:
        """Which rates diverged (``fit`` raised, or the objective is not finite)."""
        return ~np.isfinite(self.losses)

    def __str__(self) -> str:
        edge = "blew up above" if self.blew_up else "no rate blew up up to"
        return (
            f"learning-rate finder ({self.strategy}, {self.epochs} epoch(s) per rate on "
            f"{self.sample_rows} rows, {self.learning_rates.shape[0]} rates from "
            f"{self.learning_rates[0]:.3g}): {edge} {self.edge_rate:.3g}; lowest objective at "
            f"{self.lowest_rate:.3g}; suggested learning rate {self.suggestion:.3g} "
            f"(learning_rate='auto' would use {self.auto_rate:.3g})"
        )

    def plot(self, ax=None):
        """The loss against the rate, the suggestion marked (see
        :func:`fastgd.plot.plot_learning_rate_finder`)."""
        from .plot import plot_learning_rate_finder

        return plot_learning_rate_finder(dict(vars(self)), ax=ax)


def find_learning_rate(
    X,
    y,
    *,
    strategy: str = "full",
    batch_size: int = 256,
    min_rate: float | None = None,
    max_rate: float | None = None,
    rates_per_decade: int = 8,
    epochs: int | None = None,
    sample_rows: int = FINDER_SAMPLE_ROWS,
    random_state: int | None = 0,
    **fit_options,
) -> LearningRateFinder:
    r"""A learning-rate range test: suggest a constant step size for ``strategy``.

    For rates growing geometrically from ``min_rate`` (``rates_per_decade`` per factor 10),
    runs ``fastgd.fit(sample, learning_rate="constant", eta0=rate, max_iter=epochs,
    tol=None)`` from the same starting weights and seed on a sample of at most
    ``sample_rows`` rows, and measures the objective :math:`J(w, b)` at the weights each
    run ends with. The first rate whose run diverges, or ends above the starting objective
    or above ``FINDER_BLOW_UP_FACTOR`` (2) times the lowest objective so far, has *blown
    up*; the test stops there (or at ``max_rate``). The suggestion is the
    largest rate before it divided by ``FINDER_SUGGESTION_DIVISOR`` (2).

    Why half the edge: for squared error and full batches the objective after ``k`` steps
    is :math:`\sum_j c_j (1 - \eta\lambda_j)^{2k}` + const over the eigenvalues
    :math:`\lambda_j` of :math:`X̃^TX̃/n`, which blows up just beyond :math:`\eta = 2/L`
    (:math:`L = \lambda_{max}`), so half the edge is close to ``learning_rate="auto"``'s
    :math:`1/L` and always below the stable limit :math:`2/L`. Measured on Gaussian
    regression problems (tests/test_playground.py): ``full`` and ``minibatch`` suggestions
    lie within a factor 1.5 of ``auto``'s step (``full``: 0.8–0.95 times it); ``sgd``'s
    are 0.4–4.3 times it, mostly larger, because ``auto`` bounds SGD's step by the
    *largest* row norm and the edge reflects typical rows. For ``log_loss`` the finder
    finds far larger stable rates than ``auto``, whose curvature bound (¼) is a worst case.

    The rate of the lowest objective (``lowest_rate``) is kept too; it is not used for
    the suggestion because with noisy SGD it mostly measures the noise a step leaves.

    Parameters
    ----------
    X, y :
        As for :func:`fastgd.fit`.
    strategy : {"full", "sgd", "minibatch"}
    batch_size : int
        Rows per step for ``minibatch``.
    min_rate, max_rate : float or None
        The range. Defaults: ``1e-3 / (c·m)`` and ``1e4·(d + 1) / (c·m)``, with ``m`` the
        mean of :math:`s\lVert x̃\rVert^2` over the sample and ``c`` the loss's curvature
        bound (``1/(c·m)`` is at most ``1/(c·L)``; the test stops well before ``max_rate``).
    rates_per_decade : int
        The grid's density: neighbouring rates differ by a factor ``10**(1/rates_per_decade)``.
    epochs : int or None
        Epochs per short run (None: 20 for ``full``, one step per epoch; 2 otherwise).
    sample_rows : int
        Rows of the seeded sample the test runs on.
    random_state : int or None
        Seeds the sample and every run's row order.
    **fit_options
        Other arguments of :func:`fastgd.fit` (``loss``, ``penalty``, ``shuffle``, ...).

    Returns
    -------
    LearningRateFinder
        The rates, the objective after each, the suggestion and ``auto``'s step.

    Raises
    ------
    ValueError
        When the smallest rate already blows up (lower ``min_rate``), or for invalid input.
    """
    _check_fit_options(fit_options, "find_learning_rate", also=("max_iter", "tol", "callback"))
    strategy = options.strategy_by_name(strategy).name
    batch_size = check_scalar(batch_size, "batch_size", kind="int", low=1)
    rates_per_decade = check_scalar(rates_per_decade, "rates_per_decade", kind="int", low=1)
    sample_rows = check_scalar(sample_rows, "sample_rows", kind="int", low=2)
    if epochs is None:
        epochs = 20 if strategy == "full" else 2
    epochs = check_scalar(epochs, "epochs", kind="int", low=1)
    seed = _check_seed(random_state)
    problem = _Problem.build(X, y, sample_rows, seed, fit_options)
    run_options = problem.fit_options(fit_options)
    loss = options.loss_by_name(problem.loss)

    if min_rate is None or max_rate is None:
        squared_norms = _squared_row_norms(problem.X)
        squared_norms = squared_norms + (1.0 if problem.fit_intercept else 0.0)
        if problem.multipliers is not None:
            squared_norms = squared_norms * problem.multipliers
        scale = 1.0 / max(loss.curvature * float(squared_norms.mean()), 1e-300)
        if min_rate is None:
            min_rate = 1e-3 * scale
        if max_rate is None:
            max_rate = 1e4 * (problem.X.shape[1] + 1) * scale
    min_rate = check_scalar(min_rate, "min_rate", low=0.0, low_open=True)
    max_rate = check_scalar(max_rate, "max_rate", low=min_rate, low_open=True)
    grid = _range_test.rate_grid(min_rate, max_rate, rates_per_decade)

    start_loss = problem.start_objective(fit_options)
    common = {"strategy": strategy, "batch_size": batch_size, "random_state": seed,
              "max_iter": epochs, "tol": None, **run_options}  # fmt: skip

    def objective_after(rate: float) -> float:
        result = fit(problem.X, problem.y, learning_rate="constant", eta0=rate, **common)
        return problem.objective(result.coef, result.intercept)

    test = _range_test.run_range_test(objective_after, grid, start_loss)
    if test.blew_up and test.rates.shape[0] == 1:
        raise ValueError(
            f"find_learning_rate: the smallest rate tried, min_rate={min_rate:.3g}, already "
            f"blows up (the objective ends above its start); pass a smaller min_rate."
        )
    auto_rate = fit(problem.X, problem.y, learning_rate="auto", **{**common, "max_iter": 1})
    return LearningRateFinder(
        learning_rates=test.rates, losses=test.losses, start_loss=float(start_loss),
        edge_rate=test.edge_rate, suggestion=test.suggestion, lowest_rate=test.lowest_rate,
        auto_rate=float(auto_rate.learning_rate), blew_up=test.blew_up, strategy=strategy,
        batch_size=batch_size, epochs=epochs, sample_rows=problem.X.shape[0],
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The descent path (the "bowl" picture)
# ---------------------------------------------------------------------------------------------


@dataclass
class DescentPath:
    """The weights of one run, epoch by epoch, for the loss-surface picture.

    Attributes
    ----------
    points : ndarray of shape (n_points, n_parameters)
        The parameters (the weights, then the intercept when fitted) at the start and after
        each finished epoch (for ``strategy="full"``, after each step).
    losses : ndarray of shape (n_points,)
        The objective at each point, on the sample the surface is drawn for.
    learning_rate : float or "auto"
    step : float
        The step size used.
    strategy : str
    diverged : bool
        Whether ``fit`` raised ``DivergenceError`` (the path then ends at the last epoch
        that finished).
    parameter_names : list of str
        ``"w"`` (one feature) or ``"w[0]"``, ``"w[1]"``, and ``"b"`` for the intercept.
    """

    points: np.ndarray
    losses: np.ndarray
    learning_rate: float | str
    step: float
    strategy: str
    diverged: bool
    parameter_names: list[str]
    _problem: _Problem = field(repr=False)

    def objective(self, points: np.ndarray) -> np.ndarray:
        """The objective at each row of ``points`` (shape (m, n_parameters)), computed on
        the same sample as ``losses``: the surface under the path."""
        problem = self._problem
        points = np.atleast_2d(np.asarray(points, dtype=np.float64))
        d = problem.X.shape[1]
        out = np.empty(points.shape[0])
        for k, point in enumerate(points):
            intercept = point[d] if problem.fit_intercept else 0.0
            out[k] = problem.objective(point[:d], intercept)
        return out

    def plot(self, ax=None, *, others: Sequence[DescentPath] = ()):
        """The loss surface with this path (see :func:`fastgd.plot.plot_loss_surface`)."""
        from .plot import plot_loss_surface

        return plot_loss_surface([path.record() for path in (self, *others)], ax=ax)

    def record(self) -> dict:
        """The path as plain data: its public fields and ``objective`` (a function)."""
        record = {name: value for name, value in vars(self).items() if not name.startswith("_")}
        record["objective"] = self.objective
        return record


def descent_path(
    X,
    y,
    *,
    learning_rate: float | str = "auto",
    strategy: str = "full",
    batch_size: int = 256,
    max_iter: int = 30,
    random_state: int | None = 0,
    sample_rows: int = SURFACE_SAMPLE_ROWS,
    **fit_options,
) -> DescentPath:
    """Record the path of the weights of one ``fit`` run on a problem with at most two
    parameters (one or two features without intercept, or one feature with it).

    The points come from ``fit``'s ``callback`` (once per epoch; for ``strategy="full"``
    every step); for ``sgd`` and ``minibatch`` the steps within an epoch are not shown.
    The run and the surface use a seeded sample of at most ``sample_rows`` rows.

    Parameters
    ----------
    X, y :
        As for :func:`fastgd.fit`; X has one or two columns.
    learning_rate : float or "auto"
        A constant step size, or ``"auto"``.
    strategy, batch_size, max_iter, random_state :
        As for :func:`fastgd.fit` (``tol=None`` unless given: all epochs run).
    sample_rows : int
    **fit_options
        Other arguments of :func:`fastgd.fit` (``loss``, ``fit_intercept``, ``coef_init``...).

    Returns
    -------
    DescentPath

    Raises
    ------
    ValueError
        When the problem has more than two parameters.
    """
    _check_fit_options(fit_options, "descent_path", also=("callback", "max_iter"))
    seed = _check_seed(random_state)
    problem = _Problem.build(X, y, sample_rows, seed, fit_options)
    d = problem.X.shape[1]
    n_parameters = d + int(bool(problem.fit_intercept))
    if n_parameters > 2:
        raise ValueError(
            f"the loss surface is drawn for at most 2 parameters; X has {d} feature(s) and "
            f"fit_intercept={problem.fit_intercept}, i.e. {n_parameters}. Select one or two "
            "features, or pass fit_intercept=False with two."
        )
    names = ["w"] if d == 1 else [f"w[{j}]" for j in range(d)]
    if problem.fit_intercept:
        names.append("b")
    coef_init = fit_options.get("coef_init")
    start = np.zeros(d) if coef_init is None else np.asarray(coef_init, dtype=np.float64)
    start_intercept = float(fit_options.get("intercept_init") or 0.0)
    points = [np.append(start, start_intercept) if problem.fit_intercept else start.copy()]

    def record(epoch, coef, intercept, loss):
        point = np.asarray(coef, dtype=np.float64)
        points.append(np.append(point, intercept) if problem.fit_intercept else point.copy())

    schedule = {"learning_rate": "auto"} if learning_rate == "auto" else {
        "learning_rate": "constant",
        "eta0": check_scalar(learning_rate, "learning_rate", low=0.0, low_open=True)}  # fmt: skip
    run_options = {"tol": None, **problem.fit_options(fit_options)}
    diverged = False
    try:
        result = fit(
            problem.X, problem.y, strategy=strategy, batch_size=batch_size, max_iter=max_iter,
            random_state=seed, callback=record, **schedule, **run_options,
        )  # fmt: skip
        step = float(result.learning_rate)
    except DivergenceError:
        diverged = True
        step = float(learning_rate) if learning_rate != "auto" else math.nan
    path = DescentPath(
        points=np.array(points), losses=np.empty(0), learning_rate=learning_rate, step=step,
        strategy=options.strategy_by_name(strategy).name, diverged=diverged,
        parameter_names=names, _problem=problem,
    )  # fmt: skip
    path.losses = path.objective(path.points)
    return path


# ---------------------------------------------------------------------------------------------
# A CSV in memory, encoded as fit_csv trains on it
# ---------------------------------------------------------------------------------------------


@dataclass
class CsvData:
    """A CSV read by :func:`read_csv`.

    Attributes
    ----------
    X : ndarray or scipy.sparse.csr_matrix
        The encoded features (CSR when a text column is among them).
    y : ndarray
        The target (a text target: 0 for ``classes[0]``, 1 for ``classes[1]``).
    encoding : fastgd.io.encoding.Encoding
        How the columns became features (``encoding.feature_names`` names them).
    classes : ndarray or None
        A classification loss's two classes, sorted (a text target's strings).
    skipped, skipped_lines :
        Rows left out by reason (``fastgd.io.csv.SKIP_REASONS``), and the first of their
        line numbers.
    """

    X: object
    y: np.ndarray
    encoding: object
    classes: np.ndarray | None
    skipped: dict
    skipped_lines: list


def read_csv(
    path, *, target: str, loss: str = "squared_error", dtype="float64", **reading
) -> CsvData:
    """A whole CSV in memory as :func:`fastgd.fit_csv` would train on it: the same reader
    (``features``/``drop``/``delimiter``/``categorical``), the same handling of missing cells
    (``missing``: impute, skip or error; a missing target skips its row) and the same
    :class:`fastgd.io.encoding.Encoding` (``standardize``, ``max_categories``,
    ``hash_features``), learned by ``fit_csv``'s own first pass
    (:func:`fastgd.stream.read_whole`, which takes the same keywords). ``loss`` checks the
    target as ``fit_csv`` does (a text target needs a classification loss; two classes).
    Errors name the file, line and column (:class:`fastgd.io.csv.CsvError`)."""
    from .stream import read_whole

    stats, (X, codes, y) = read_whole(path, target=target, loss=loss, dtype=dtype, **reading)
    return CsvData(
        X=stats.encoding.encode(X, codes, dtype=dtype), y=_class_positions(y, stats),
        encoding=stats.encoding, classes=stats.classes, skipped=dict(stats.skipped),
        skipped_lines=list(stats.skipped_lines),
    )  # fmt: skip


def _class_positions(y: np.ndarray, stats) -> np.ndarray:
    """A text target's codes (first-seen order) as positions in the sorted classes, so that
    ``classes[1]`` is the positive class as in ``fit_csv``; other targets as they are."""
    levels = stats.levels
    if levels is None or levels.target_levels is None or stats.classes is None:
        return y
    position = {str(name): i for i, name in enumerate(stats.classes)}
    lookup = np.array([position.get(name, -1) for name in levels.target_levels], dtype=y.dtype)
    return lookup[y.astype(np.int64)]
