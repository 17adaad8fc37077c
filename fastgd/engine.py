"""The engine: ``fastgd.fit`` and the one epoch loop every front end drives.

It validates the input, resolves the options to kernel codes, derives the ``auto`` step
size, draws the seeded row orders, calls one epoch kernel per epoch, records the loss
curve, and decides when to stop: converged, diverged, stopped by the callback, or out of
epochs.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numba
import numpy as np

from . import options, parameters
from ._kernels.epochs import (
    MIN_CHUNK_ROWS,
    batch_epoch,
    loss_sum,
    predict,
    sgd_epoch,
)
from ._kernels.order import fill_epoch_order
from ._kernels.records import Spec, State, make_spec, make_state
from ._validation import (
    check_binary_labels,
    check_csr,
    check_sample_weight,
    check_scalar,
    check_vector,
    check_X,
    is_sparse,
    scan,
    scan_sparse,
)
from .errors import DivergenceError

__all__ = ["FitResult", "auto_learning_rate", "fit"]

#: An epoch whose loss exceeds this many times the larger of the objective at the starting
#: weights and that of the all-zero model has diverged.
EXPLOSION_FACTOR = 1e10
#: ``adaptive`` divides the step by this after ``n_iter_no_change`` epochs without progress
#: and stops once the step falls below ``ADAPTIVE_MIN_ETA`` (as scikit-learn).
ADAPTIVE_DIVISOR = 5.0
ADAPTIVE_MIN_ETA = 1e-6
#: An epoch whose loss exceeds this many times the best epoch loss so far has diverged.
RISE_FACTOR = 10.0
#: ... but only once the loss is also above this fraction of the loss scale (the larger of
#: the objective at the start and that of the all-zero model). Below 1% of it a model has
#: explained 99% of what no model explains, and a rise there (from 0.0004 to 0.0044, say:
#: a few margins of a hinge or perceptron flipping under per-row steps) is noise, not
#: divergence. Real divergence grows geometrically and crosses 1% within a few epochs, where
#: the rise rules catch it as before; the explosion and non-finite rules have no floor.
RISE_FLOOR = 1e-2
#: With ``auto`` on a smooth loss, a full-batch objective that rises by more than this
#: (relative) means the step was too large.
RISE_TOLERANCE = 1e-9
#: When a run with ``learning_rate="auto"`` diverges anyway (an adversarial row order, rows
#: of extreme leverage outside the sample), the engine returns to the best state so far and
#: divides the step by this, at most this often.
AUTO_BACKTRACK_DIVISOR = 4.0
AUTO_MAX_BACKTRACKS = 8
#: Rows (and bytes of float64 copies) sampled for the curvature behind ``"auto"``.
AUTO_SAMPLE_ROWS = 10_000
AUTO_SAMPLE_BYTES = 64 * 1024 * 1024
AUTO_POWER_ITERATIONS = 30
#: Up to this many features the curvature comes exactly from the Gram matrix instead.
AUTO_GRAM_MAX_WIDTH = 512
#: For batches made of consecutive rows: runs sampled, their largest size, and iterations.
AUTO_GROUP_SAMPLES = 16
AUTO_GROUP_MAX_ROWS = 2048
AUTO_GROUP_POWER_ITERATIONS = 15
#: A batch is accumulated in parallel when it holds at least this many values
#: (rows × features); smaller batches run serially (see benchmarks/README.md).
PARALLEL_MIN_VALUES = 1 << 16
#: ``shuffle="block"`` moves blocks of about this many bytes of X (fits in L2 cache).
SHUFFLE_BLOCK_BYTES = 64 * 1024


@dataclass
class FitResult:
    """What ``fastgd.fit`` returns.

    Attributes
    ----------
    coef : ndarray of shape (n_features,)
        The weights, in the dtype of X.
    intercept : float
        The intercept ``b`` (``intercept_init``, default 0, when ``fit_intercept=False``).
    n_iter : int
        Epochs run.
    loss_history : ndarray of shape (n_iter,)
        The loss curve: one value of the objective per epoch (see ``fastgd.fit``).
    converged : bool
        Whether ``tol`` was met (False when ``max_iter`` or the callback ended the run).
    learning_rate : float
        The step size the run started with (``auto``: the derived one).
    extras : dict
        ``final_learning_rate`` (after ``adaptive`` reductions or ``auto`` back-offs) and
        ``auto_backtracks``: how often ``auto`` had to back off from a diverging epoch.
    t : float
        The step counter after the run (1 + the number of steps), for continuing.
    loss : str
        The loss's name.
    classes : ndarray of shape (2,) or None
        For classification losses, the two labels (``classes[1]`` is the positive class).
    fit_time : float
        Seconds spent in ``fit``.
    standard_coef, standard_intercept : ndarray and float, or None
        With ``average``: the last iterate of the weights (what training continues from);
        ``coef``/``intercept`` then hold the averaged model once averaging has begun.
    average_coef, average_intercept : ndarray of float64 and float, or None
        With ``average``: the running means of the weights so far (to continue averaging).
    validation_scores : ndarray or None
        With ``validation_score``: its value after each epoch.
    """

    coef: np.ndarray
    intercept: float
    n_iter: int
    loss_history: np.ndarray
    converged: bool
    learning_rate: float
    t: float
    loss: str
    classes: np.ndarray | None = None
    fit_time: float = 0.0
    extras: dict = field(default_factory=dict)
    standard_coef: np.ndarray | None = None
    standard_intercept: float | None = None
    average_coef: np.ndarray | None = None
    average_intercept: float | None = None
    validation_scores: np.ndarray | None = None

    def decision_function(self, X) -> np.ndarray:
        """``X·coef + intercept`` in one pass over X (dense or scipy.sparse)."""
        X = check_csr(X) if is_sparse(X) else check_X(X)
        if X.shape[1] != self.coef.shape[0]:
            raise ValueError(
                f"X has {X.shape[1]} features but the model was fitted with {self.coef.shape[0]}."
            )
        out = np.empty(X.shape[0], dtype=X.dtype)
        _predict_into(X, self.coef.astype(X.dtype, copy=False), float(self.intercept), out)
        return out

    def plot(self, ax=None):
        """The loss curve on a log scale (matplotlib, the ``fastgd[plot]`` extra); returns
        the axes. See :func:`fastgd.plot.plot_fit`."""
        from .plot import plot_fit

        return plot_fit(self, ax)

    def predict(self, X) -> np.ndarray:
        """Predicted targets (regression) or labels from ``classes`` (classification)."""
        scores = self.decision_function(X)
        if self.classes is None:
            return scores
        return np.where(scores > 0, self.classes[1], self.classes[0])


@dataclass
class _Plan:
    """Everything validated and resolved; what the epoch loop needs. ``source`` is the data:
    :class:`_ArraySource` for arrays in memory; the CSV trainer brings its own (same
    methods)."""

    source: object
    loss: options.Loss
    strategy: options.Strategy
    schedule: options.Schedule
    batch_size: int
    eta0: float
    power_t: float
    alpha: float
    l1: float
    l2: float
    epsilon: float
    optimal_init: float
    max_iter: int
    tol: float | None
    n_iter_no_change: int
    fit_intercept: bool
    shuffle_mode: int
    rng: np.random.Generator
    coef: np.ndarray
    intercept: float
    classes: np.ndarray | None
    callback: Callable | None
    t_init: float = 1.0
    average_start: float = 0.0
    average_coef: np.ndarray | None = None
    average_intercept: float = 0.0
    validation_score: Callable | None = None
    divergence_checks: str = "all"
    #: The update rule's per-feature state, shape (slots, d); allocated by kernel_state.
    slots: np.ndarray | None = None


def kernel_spec(plan: _Plan, eta: float) -> Spec:
    """The kernels' spec of ``plan`` at the step ``eta`` (``eta0``, or the epoch's step of an
    epoch-level schedule): the one place where a plan becomes kernel codes and scalars, for
    every data source (arrays, the CSV trainer, Dask)."""
    return make_spec(
        loss=plan.loss.code, epsilon=plan.epsilon, schedule=plan.schedule.kernel_code,
        rule=plan.schedule.rule.code, eta0=eta, power_t=plan.power_t, alpha=plan.alpha,
        optimal_init=plan.optimal_init, l1=plan.l1, l2=plan.l2,
        fit_intercept=plan.fit_intercept, average_start=plan.average_start,
    )  # fmt: skip


def kernel_state(plan: _Plan, coef, intercept: float, t: float, avg_w, avg_b) -> State:
    """The kernels' training state: the weights (updated in place), the intercept and step
    counter, the running means and the update rule's slots (kept in ``plan.slots`` from
    one call to the next)."""
    if plan.slots is None:
        plan.slots = np.zeros((plan.schedule.rule.slots, coef.shape[0]))
    return make_state(coef, intercept, t, avg_w, avg_b, plan.slots)


#: ``fit``'s arguments that are data or a fit's starting state rather than options.
DATA_ARGUMENTS = frozenset(
    {"X", "y", "sample_weight", "coef_init", "intercept_init", "average_coef_init",
     "average_intercept_init", "normalize_weights", "classes"}
)  # fmt: skip


def fit_defaults(exclude=()) -> dict:
    """``fastgd.fit``'s options and their defaults (read from the parameter table,
    ``fastgd.parameters.PARAMETERS``, which ``tests/test_parameters.py`` checks against
    ``fit``'s signature), less ``exclude``."""
    return {
        row.name: row.default
        for row in parameters.PARAMETERS
        if row.fit and row.name not in exclude
    }


def class_probabilities(scores: np.ndarray, loss: str) -> np.ndarray:
    """Class probabilities from decision values of shape (n, 1) (binary) or (n, k)
    (one-vs-rest): the logistic function for ``log_loss``, ``(clip(d, -1, 1) + 1) / 2`` for
    ``modified_huber`` (scikit-learn's formulas); one-vs-rest values are normalised to sum
    to 1 (uniform where every problem says "not me"). Shared by the estimators and saved
    models."""
    scores = np.asarray(scores, dtype=np.float64)
    if loss == "log_loss":
        with np.errstate(over="ignore"):
            positive = 1.0 / (1.0 + np.exp(-scores))
    else:
        positive = (np.clip(scores, -1.0, 1.0) + 1.0) / 2.0
    if positive.shape[1] == 1:
        return np.hstack([1.0 - positive, positive])
    total = positive.sum(axis=1, keepdims=True)
    empty = total[:, 0] == 0
    if empty.any():
        positive[empty] = 1.0
        total[empty] = positive.shape[1]
    return positive / total


def concurrent_fits(workers: int) -> int:
    """How many fits may run at once in threads: ``workers`` on a thread-safe threading
    layer (TBB, OpenMP), 1 under Numba's ``workqueue`` layer, which aborts the process when
    two threads launch parallel kernels at the same time (fastgd falls back to it where TBB
    cannot be loaded; see ``fastgd/_threading.py``). Asking Numba for its thread count starts
    its threads, which fixes the layer (it compiles nothing), so the answer is never a guess."""
    from ._threading import THREAD_SAFE_LAYERS  # already loaded by fastgd/__init__.py

    if workers <= 1:
        return 1
    numba.get_num_threads()
    return workers if numba.threading_layer() in THREAD_SAFE_LAYERS else 1


def _shuffle_mode(shuffle) -> int:
    if isinstance(shuffle, (bool, np.bool_)):
        return options.SHUFFLE_FULL if shuffle else options.SHUFFLE_NONE
    if isinstance(shuffle, str) and shuffle == "block":
        return options.SHUFFLE_BLOCK
    raise ValueError(f"shuffle={shuffle!r} is not supported; allowed values: True, False, 'block'.")


def _make_rng(random_state) -> np.random.Generator:
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**31 - 1))
    if random_state is None or isinstance(random_state, (np.random.Generator, np.integer, int)):
        if isinstance(random_state, (bool, np.bool_)):
            raise TypeError(
                f"random_state must be None, an int or a Generator; got {random_state!r}."
            )
        if isinstance(random_state, (int, np.integer)) and random_state < 0:
            raise ValueError(f"random_state must be >= 0; got {random_state}.")
        return np.random.default_rng(random_state)
    raise TypeError(
        f"random_state must be None, an int, a numpy Generator or RandomState; got "
        f"{type(random_state).__name__}."
    )


def optimal_init(loss: options.Loss, alpha: float, epsilon: float) -> float:
    """scikit-learn's ``optimal`` schedule offset: the first step has size
    ``typw / max(1, L'(-typw, 1))`` with ``typw = sqrt(1/sqrt(alpha))``."""
    from ._kernels.scalar import loss_and_derivative

    typw = math.sqrt(1.0 / math.sqrt(alpha))
    _, deriv = loss_and_derivative(loss.code, -typw, 1.0, epsilon)
    initial_eta0 = typw / max(1.0, deriv)
    return 1.0 / (initial_eta0 * alpha)


def _options(**given) -> dict:
    """Validate and resolve every option that does not depend on the data: the keyword
    arguments of :class:`_Plan` other than the data and the starting weights. Each option
    is checked by its row of ``fastgd.parameters.PARAMETERS`` (an option not given takes
    its default there), then by the ``RULES``."""
    defaults = fit_defaults()
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise TypeError(f"unknown options {unknown}; the options are {sorted(defaults)}.")
    values = parameters.check_options({**defaults, **given})
    loss_opt = options.loss_by_name(values["loss"])
    schedule_opt = options.schedule_by_name(values["learning_rate"])
    penalty_opt = options.penalty_by_name(values["penalty"])
    l1, l2 = penalty_opt.split(values["alpha"], values["l1_ratio"])
    offset = 0.0
    if schedule_opt.name == "optimal":
        offset = optimal_init(loss_opt, values["alpha"], values["epsilon"])
    # average: True (= from step 1), False/None (off) or the first averaged step.
    average = values.pop("average")
    resolved = dict(
        loss=loss_opt, strategy=options.strategy_by_name(values["strategy"]),
        schedule=schedule_opt, l1=l1, l2=l2, optimal_init=offset,
        shuffle_mode=_shuffle_mode(values.pop("shuffle")),
        rng=_make_rng(values.pop("random_state")),
        average_start=float(average) if average not in (None, False) else 0.0,
    )  # fmt: skip
    for name in ("learning_rate", "penalty", "l1_ratio"):
        del values[name]  # resolved above (schedule, l1 and l2)
    return {**values, **resolved}


def _starting_weights(d: int, dtype, *, coef_init, intercept_init, average_start,
                      average_coef_init, average_intercept_init) -> dict:  # fmt: skip
    """The validated starting weights (and running means): keyword arguments of _Plan."""
    if coef_init is None:
        coef = np.zeros(d, dtype=dtype)
    else:
        coef = check_vector(coef_init, "coef_init", d, dtype, counts="features").copy()
    intercept = 0.0
    if intercept_init is not None:
        intercept = check_scalar(
            np.asarray(intercept_init).reshape(-1)[0]
            if np.ndim(intercept_init) and np.size(intercept_init) == 1
            else intercept_init,
            "intercept_init",
        )
    average_coef = None
    average_intercept = 0.0
    if average_start:
        average_coef = np.zeros(d)
        if average_coef_init is not None:
            average_coef[:] = check_vector(
                average_coef_init, "average_coef_init", d, np.float64, counts="features"
            )
        if average_intercept_init is not None:
            average_intercept = check_scalar(
                np.asarray(average_intercept_init).reshape(-1)[0]
                if np.ndim(average_intercept_init)
                else average_intercept_init,
                "average_intercept_init",
            )
    return dict(
        coef=coef, intercept=intercept, average_coef=average_coef,
        average_intercept=average_intercept,
    )  # fmt: skip


def _plan(X, y, *, sample_weight, coef_init, intercept_init, average_coef_init=None,
          average_intercept_init=None, normalize_weights=True, classes=None,
          **option_values) -> _Plan:  # fmt: skip
    resolved = _options(**option_values)
    sparse = is_sparse(X)
    if sparse and not resolved["schedule"].rule.sparse:
        raise ValueError(
            f"learning_rate={resolved['schedule'].name!r} is not available for sparse input "
            "yet; use a dense array or another learning_rate."
        )
    # Checked for NaN/inf below, in the pass that also gives L_row.
    X = check_csr(X, check_finite=False) if sparse else check_X(X, check_finite=False)
    n, d = X.shape
    given_classes, classes = classes, None
    if resolved["loss"].classification:
        # Classes are found in y's own dtype: a cast to float32 first could merge labels.
        y = check_vector(y, "y", n, None)
        classes, y = check_binary_labels(y, resolved["loss"].name, X.dtype, given_classes)
    else:
        y = check_vector(y, "y", n, X.dtype)
    sw = check_sample_weight(sample_weight, n, normalize=normalize_weights)
    extra = 1.0 if resolved["fit_intercept"] else 0.0
    max_row_norm = scan_sparse(X, sw, extra) if sparse else scan(X, "X", sw, extra)
    start = _starting_weights(
        d, X.dtype, coef_init=coef_init, intercept_init=intercept_init,
        average_start=resolved["average_start"], average_coef_init=average_coef_init,
        average_intercept_init=average_intercept_init,
    )  # fmt: skip
    source = _ArraySource(X, y, sw, max_row_norm)
    return _Plan(source=source, classes=classes, **resolved, **start)


def _rows_per_step(strategy: options.Strategy, batch_size: int, n: int) -> int:
    if strategy.name == "full":
        return n
    if strategy.name == "sgd":
        return 1
    return min(batch_size, n)


def _largest_eigenvalue(
    rows: np.ndarray, weights: np.ndarray | None, fit_intercept: bool, rng, iterations: int
) -> float:
    """Largest eigenvalue of ``Σ s·x̃x̃ᵀ / m`` over the given rows: exactly from the Gram
    matrix when the width is small, else by power iteration (a lower bound that converges
    from below)."""
    if is_sparse(rows):
        if rows.shape[1] + int(fit_intercept) > AUTO_GRAM_MAX_WIDTH:
            return _sparse_power_iteration(rows, weights, fit_intercept, rng, iterations)
        rows = rows.toarray()
    sample = np.empty((rows.shape[0], rows.shape[1] + int(fit_intercept)))
    sample[:, : rows.shape[1]] = rows  # one float64 copy, the intercept's column beside it
    if fit_intercept:
        sample[:, -1] = 1.0
    if weights is not None:
        sample *= np.sqrt(weights)[:, None]
    m, width = sample.shape
    if width <= AUTO_GRAM_MAX_WIDTH:
        # One BLAS matrix product (compute-bound) beats repeated matrix-vector products
        # (memory-bound) up to moderate widths, and gives the eigenvalue exactly.
        gram = sample.T @ sample / m
        return float(np.linalg.eigvalsh(gram)[-1])
    vector = np.ones(width) + 0.1 * rng.standard_normal(width)
    eigenvalue = 0.0
    for _ in range(iterations):
        norm = np.linalg.norm(vector)
        if norm == 0.0:
            break
        vector /= norm
        image = sample.T @ (sample @ vector) / m
        eigenvalue = float(vector @ image)
        vector = image
    return eigenvalue


def _guarded_eigenvalue(X, rows, weights, fit_intercept: bool, rng, iterations: int) -> float:
    """:func:`_largest_eigenvalue`, turning overflow (LAPACK's "Eigenvalues did not
    converge", numpy's overflow warnings, an infinite result) into an error that names the
    cause and what to do: products of features near 1e200 overflow float64."""
    try:
        with np.errstate(over="raise", invalid="raise"):
            eigenvalue = _largest_eigenvalue(rows, weights, fit_intercept, rng, iterations)
    except (FloatingPointError, np.linalg.LinAlgError) as error:
        raise features_too_large(X, "learning_rate='auto' cannot derive a step size") from error
    if not math.isfinite(eigenvalue):
        raise features_too_large(X, "learning_rate='auto' cannot derive a step size")
    return eigenvalue


def largest_magnitude(X) -> float:
    """``max |x|`` over a dense array or the stored values of a sparse matrix (no copy)."""
    values = X.data if is_sparse(X) else X
    if values.size == 0:
        return 0.0
    return float(max(values.max(), -values.min()))


#: What to do when the features are too large for float arithmetic.
SCALE_ADVICE = (
    "Standardise or scale the features (e.g. sklearn.preprocessing.StandardScaler, or "
    "divide each column by its largest |value|) before fitting."
)


def features_too_large(X, what: str) -> ValueError:
    """The error for features whose squares overflow float64 (``what`` failed)."""
    return ValueError(
        f"{what}: the features are too large for floating-point arithmetic (max |x| = "
        f"{largest_magnitude(X):.3g}; the squares and products of such values overflow). "
        f"{SCALE_ADVICE}"
    )


def _sparse_power_iteration(rows, weights, fit_intercept: bool, rng, iterations: int) -> float:
    """Power iteration on ``Aᵀ A / m`` with ``A = diag(√s)·[rows, 1]``, never densifying
    the rows (two sparse products per iteration)."""
    m, d = rows.shape
    root = np.ones(m) if weights is None else np.sqrt(weights)
    width = d + int(fit_intercept)
    vector = np.ones(width) + 0.1 * rng.standard_normal(width)
    eigenvalue = 0.0
    for _ in range(iterations):
        norm = np.linalg.norm(vector)
        if norm == 0.0:
            break
        vector /= norm
        image_rows = rows @ vector[:d]
        if fit_intercept:
            image_rows = image_rows + vector[d]
        image_rows = root * root * np.asarray(image_rows, dtype=np.float64)
        image = np.empty(width)
        image[:d] = rows.T @ image_rows
        if fit_intercept:
            image[d] = image_rows.sum()
        image /= m
        eigenvalue = float(vector @ image)
        vector = image
    return eigenvalue


def auto_learning_rate(
    X: np.ndarray,
    sample_weight: np.ndarray,
    *,
    loss: options.Loss,
    rows_per_step: int,
    fit_intercept: bool,
    l2: float,
    rng: np.random.Generator,
    max_row_norm: float | None = None,
    contiguous_rows: int = 0,
) -> float:
    """A step size that keeps gradient descent stable, derived from the data.

    With ``x̃ = (x, 1)`` when fitting an intercept, ``c`` the loss's curvature bound and
    ``s`` the (mean-1) sample weights:

    - ``L_full`` = largest eigenvalue of ``Σ s·x̃x̃ᵀ / n`` (power iteration on a sample of at
      most ``AUTO_SAMPLE_ROWS`` rows, never below ``max s‖x̃‖² / n``);
    - ``L_row``  = ``max s·‖x̃‖²`` (``max_row_norm`` when the caller has it, else one
      parallel pass over X: ``fastgd.fit`` gets it from its validation pass);
    - for ``B`` rows per step, the expected smoothness of a random batch's gradient
      ``L_B = n(B−1)/(B(n−1))·L_full + (n−B)/(B(n−1))·L_row`` (``L_row`` for SGD,
      ``L_full`` for full batch);
    - when batches are made of runs of ``contiguous_rows`` consecutive rows of X (file
      order, or block shuffling), they are no random sample: rows sorted by the target
      make a batch's curvature far above ``L_B``. Then ``L_B`` is raised to the largest
      curvature of ``AUTO_GROUP_SAMPLES`` such runs drawn at random;
    - ``η = 1 / (c·L_B + l2)``.

    For squared error this is at most half of the ``2/L`` beyond which full-batch gradient
    descent diverges, and each SGD step contracts the residual of its row. Should an
    epoch diverge anyway, ``fastgd.fit`` backs off (see ``AUTO_BACKTRACK_DIVISOR``).
    """
    n = X.shape[0]
    weighted = sample_weight.shape[0] > 0
    if max_row_norm is None:
        extra = 1.0 if fit_intercept else 0.0
        max_row_norm = (
            scan_sparse(X, sample_weight, extra)
            if is_sparse(X)
            else scan(X, "X", sample_weight, extra)
        )
    l_row = float(max_row_norm)
    if not math.isfinite(l_row):  # ‖x‖² overflowed: no step size can be derived
        raise features_too_large(X, "learning_rate='auto' cannot derive a step size")
    # At most AUTO_SAMPLE_ROWS rows and AUTO_SAMPLE_BYTES of float64 copies, however wide X.
    sample_rows = max(64, min(AUTO_SAMPLE_ROWS, AUTO_SAMPLE_BYTES // (8 * (X.shape[1] + 1))))
    if n > sample_rows:
        rows = np.sort(rng.choice(n, sample_rows, replace=False))
    else:
        rows = slice(None)
    eigenvalue = _guarded_eigenvalue(
        X, X[rows], sample_weight[rows] if weighted else None, fit_intercept, rng,
        AUTO_POWER_ITERATIONS,
    )  # fmt: skip
    l_full = max(eigenvalue, l_row / n)
    batch = max(1, min(rows_per_step, n))
    if n == 1:
        smoothness = l_row
    else:
        smoothness = (n * (batch - 1)) / (batch * (n - 1)) * l_full + (n - batch) / (
            batch * (n - 1)
        ) * l_row
    group = min(contiguous_rows, batch, AUTO_GROUP_MAX_ROWS, sample_rows)
    if 1 < group and batch < n:
        for start in rng.integers(0, n - group + 1, size=AUTO_GROUP_SAMPLES):
            local = slice(start, start + group)
            smoothness = max(
                smoothness,
                _guarded_eigenvalue(
                    X, X[local], sample_weight[local] if weighted else None, fit_intercept,
                    rng, AUTO_GROUP_POWER_ITERATIONS,
                ),
            )  # fmt: skip
    denominator = loss.curvature * smoothness + l2
    if denominator <= 0.0:  # all-zero data: any step is stable
        return 1.0
    return 1.0 / denominator


def _penalty_value(coef: np.ndarray, l1: float, l2: float) -> float:
    value = 0.0
    # Weights near overflow make the penalty inf: a non-finite loss, which the divergence
    # rules report with advice, not a numpy warning.
    with np.errstate(over="ignore"):
        if l1:
            value += l1 * float(np.abs(coef).sum(dtype=np.float64))
        if l2:
            wide = coef.astype(np.float64)
            value += 0.5 * l2 * float(wide @ wide)
    return value


def _divergence(
    plan: _Plan,
    epoch_loss: float,
    non_finite_row: bool,
    coef: np.ndarray,
    intercept: float,
    scale: float,
    best: float,
    history: list[float],
    pending_no_improvement: int,
) -> str | None:
    """Why the epoch just run counts as diverging, or None."""
    if (
        non_finite_row
        or not math.isfinite(epoch_loss)
        or not (math.isfinite(intercept) and np.isfinite(coef).all())
    ):
        return "the loss became non-finite"
    if plan.divergence_checks == "non_finite":
        return None
    if scale > 0.0 and epoch_loss > EXPLOSION_FACTOR * scale:
        return f"the loss exploded to {epoch_loss:.3g}"
    # A loss scale of 0 (the perceptron from zero weights) is no yardstick: its loss grows
    # with the scale of w by design, so a rise there never counts.
    rose_enough = scale > 0.0 and epoch_loss > RISE_FLOOR * scale
    if rose_enough and 0.0 < best < math.inf and epoch_loss > RISE_FACTOR * best:
        return (
            f"the loss rose to {epoch_loss:.4g}, over {RISE_FACTOR:g} times its best ({best:.4g})"
        )
    if (
        plan.schedule.name == "auto"
        and plan.strategy.name == "full"
        and plan.loss.smooth
        and history
        and epoch_loss > history[-1] + RISE_TOLERANCE * abs(history[-1])
    ):
        # With a step below 1/L every full-batch step of a smooth loss lowers the objective:
        # a rise proves the curvature was underestimated.
        return f"the objective rose from {history[-1]:.6g} to {epoch_loss:.6g}"
    window = [*history[-plan.n_iter_no_change :], epoch_loss]
    if (
        rose_enough
        and plan.tol is not None
        and pending_no_improvement >= plan.n_iter_no_change
        and len(window) > plan.n_iter_no_change
        and all(later > earlier for earlier, later in itertools.pairwise(window))
    ):
        # A steady rise is no plateau: never report it as convergence.
        return f"the loss rose in each of the last {plan.n_iter_no_change} epochs"
    return None


def _contiguous_rows(shuffle_mode: int, X: np.ndarray) -> int:
    """How many consecutive rows of X a batch is made of, run by run (0: random rows)."""
    if shuffle_mode == options.SHUFFLE_NONE:
        return X.shape[0]
    if shuffle_mode == options.SHUFFLE_BLOCK:
        return _block_rows(X)
    return 0


def _block_rows(X) -> int:
    return int(np.clip(SHUFFLE_BLOCK_BYTES // max(1, _row_bytes(X)), 8, 4096))


def _row_bytes(X) -> int:
    """Bytes of one row of X (on average, for CSR: values and column indices)."""
    if is_sparse(X):
        return int(X.nnz * (X.data.itemsize + X.indices.itemsize) / max(1, X.shape[0])) + 1
    return X.shape[1] * X.itemsize


def _row_values(X) -> float:
    """Values read per row: the width, or the mean non-zeros of a CSR row."""
    return X.nnz / max(1, X.shape[0]) if is_sparse(X) else float(X.shape[1])


def _predict_into(X, coef: np.ndarray, intercept: float, out: np.ndarray) -> None:
    """``out = X·coef + intercept``, dense or CSR, one pass."""
    if is_sparse(X):
        from ._kernels.sparse import predict_csr

        predict_csr(X.data, X.indices, X.indptr, coef, intercept, out)
    else:
        predict(X, coef, intercept, out)


def fit(
    X,
    y,
    *,
    loss: str = "squared_error",
    strategy: str = "minibatch",
    batch_size: int = 256,
    learning_rate: str = "auto",
    eta0: float = 0.01,
    power_t: float = 0.25,
    penalty: str | None = None,
    alpha: float = 1e-4,
    l1_ratio: float = 0.15,
    epsilon: float = 0.1,
    max_iter: int = 20,
    tol: float | None = 1e-4,
    n_iter_no_change: int = 5,
    fit_intercept: bool = True,
    sample_weight=None,
    shuffle: bool | str = True,
    random_state=None,
    coef_init=None,
    intercept_init=None,
    callback: Callable | None = None,
    t_init: float = 1.0,
    average: bool | int = False,
    average_coef_init=None,
    average_intercept_init=None,
    validation_score: Callable | None = None,
    normalize_weights: bool = True,
    divergence_checks: str = "all",
    classes=None,
) -> FitResult:
    r"""Fit a linear model ``p = X·coef + intercept`` by gradient descent.

    Minimises

    .. math:: J(w, b) = \frac{1}{n}\sum_i s_i\,L(x_i·w + b, y_i) + \alpha R(w)

    with ``s`` the sample weights rescaled to mean 1, by one of three strategies:

    - ``"full"``: one step per epoch from the exact gradient, computed in one parallel
      pass over X;
    - ``"sgd"``: one step per row, rows in the order given by ``shuffle``;
    - ``"minibatch"``: one step per ``batch_size`` rows from the batch's mean gradient
      (accumulated in parallel when the batch is large enough to pay).

    Each step is :math:`w \leftarrow \mathrm{prox}_{\eta\,l_1\|\cdot\|_1}\big(w(1-\eta\,l_2)
    - \eta\,g\big)`, :math:`b \leftarrow b - \eta\,g_b`, where ``l1``/``l2`` split
    ``alpha`` by the penalty (the intercept is never penalised).

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
        float32 or float64 are used as they are (no copy when C-contiguous; float32 gives
        float32 coefficients); other numeric dtypes are converted once to float64. A
        scipy.sparse matrix is used as CSR (its index arrays checked once; unsorted column
        indices are fine); a pandas DataFrame may have nullable columns (``Int64``,
        ``Float64``, ``boolean``), where ``pd.NA`` is refused as NaN is.
    y : array of shape (n_samples,)
        Targets; for classification losses, exactly two classes (mapped to -1 and +1, the
        larger label being the positive class).
    loss : str
        One of ``fastgd.options.LOSSES``: ``squared_error``, ``huber``,
        ``epsilon_insensitive``, ``squared_epsilon_insensitive``, ``log_loss``, ``hinge``,
        ``squared_hinge``, ``modified_huber``, ``perceptron``.
    strategy : {"minibatch", "sgd", "full"}
    batch_size : int
        Rows per step for ``minibatch`` (any value ≥ 1; larger than n means full batch).
    learning_rate : {"auto", "constant", "optimal", "invscaling", "adaptive", "pa1", "pa2"}
        ``auto`` derives a stable constant step from the data (see
        :func:`auto_learning_rate`); ``constant`` uses ``eta0``; ``invscaling`` uses
        ``eta0 / t**power_t``; ``optimal`` is scikit-learn's ``1/(alpha·(t0 + t - 1))``;
        ``adaptive`` starts at ``eta0`` and divides it by 5 after ``n_iter_no_change``
        epochs without improvement; ``pa1``/``pa2`` are the passive-aggressive rules (per
        row: ``min(eta0, L/‖x‖²)`` and ``L/(‖x‖² + 1/(2·eta0))``, ``strategy="sgd"`` only).
        ``t`` counts steps from 1.
    eta0, power_t : float
        Parameters of the schedules above (``eta0 > 0``).
    penalty : {None, "l2", "l1", "elasticnet"}
    alpha : float
        Penalty strength (≥ 0).
    l1_ratio : float in [0, 1]
        The L1 share of ``alpha`` for ``elasticnet``.
    epsilon : float
        The ``epsilon`` of ``huber``, ``epsilon_insensitive`` and
        ``squared_epsilon_insensitive``.
    max_iter : int
        Epochs at most.
    tol : float or None
        Stop (converged) when the epoch loss has not fallen below ``best - tol`` for
        ``n_iter_no_change`` epochs in a row; ``None`` runs all ``max_iter`` epochs.
    n_iter_no_change : int
    fit_intercept : bool
    sample_weight : array of shape (n_samples,) or None
        Non-negative; rescaled to mean 1, so only their ratios matter.
    shuffle : {True, "block", False}
        Row order of each epoch for ``sgd``/``minibatch``: a fresh random permutation, a
        cache-friendly order (blocks of about 64 KiB of rows in random order, rows permuted
        within each block), or file order.
    random_state : None, int or numpy Generator
        Seeds the row orders and ``auto``'s row sample; equal seeds give equal results,
        whatever the number of threads.
    coef_init, intercept_init :
        Starting weights (not modified).
    callback : callable or None
        ``callback(epoch, coef, intercept, loss)`` after each epoch (``coef`` read-only);
        returning True stops the run.
    t_init : float
        The step counter of the first step (≥ 1): a run that continues an earlier one
        passes that run's ``FitResult.t``, so the schedules go on where they stopped.
    average : bool or int
        Averaged SGD: ``True`` (= 1) or a step number ``k`` makes the model the mean of
        the weights after every step numbered ``t ≥ k``; ``False`` turns it off.
    average_coef_init, average_intercept_init :
        The running means to continue from (``FitResult.average_coef`` of an earlier run).
    validation_score : callable or None
        ``validation_score(coef, intercept) -> float``, higher is better (e.g. R² or
        accuracy on held-out rows), called after each epoch with the model's weights; when
        given, ``tol``/``n_iter_no_change`` watch it instead of the training loss
        (stop when it has not risen above ``best + tol`` for ``n_iter_no_change`` epochs).
    normalize_weights : bool
        True: ``sample_weight`` is rescaled to mean 1 (only ratios matter). False: the
        weights multiply each row's loss as given (scikit-learn's convention, where they
        also scale the step size and the balance against the penalty).
    divergence_checks : {"all", "non_finite"}
        ``"all"`` applies every rule below; ``"non_finite"`` only stops on non-finite
        losses or weights (scikit-learn's behaviour, for its schedules).
    classes : array of 2 labels or None
        For classification losses: the two labels (``classes[1]`` is the positive class),
        when ``y`` may hold only one of them (a chunk of a larger data set). None: the
        two classes found in ``y``.

    Returns
    -------
    FitResult
        ``loss_history`` holds one value per epoch: for ``full``, the objective at the start
        of the epoch's step (from the same pass as the gradient); for ``sgd`` and
        ``minibatch``, the weighted mean of the per-row losses met during the epoch (each
        before its own step), plus the penalty at the start of the epoch.

    Raises
    ------
    DivergenceError
        When the loss or the weights stop being finite, or the loss explodes; the error
        keeps the best weights reached.
    ValueError, TypeError
        For invalid input, naming the parameter, the allowed values or the row; also when
        ``learning_rate="auto"`` meets features too large for float arithmetic (their
        squares overflow, e.g. max |x| = 1e200), with the advice to scale them.
    """
    started = time.perf_counter()
    plan = _plan(
        X, y, loss=loss, strategy=strategy, batch_size=batch_size, learning_rate=learning_rate,
        eta0=eta0, power_t=power_t, penalty=penalty, alpha=alpha, l1_ratio=l1_ratio,
        epsilon=epsilon, max_iter=max_iter, tol=tol, n_iter_no_change=n_iter_no_change,
        fit_intercept=fit_intercept, sample_weight=sample_weight, shuffle=shuffle,
        random_state=random_state, coef_init=coef_init, intercept_init=intercept_init,
        callback=callback, t_init=t_init, average=average, average_coef_init=average_coef_init,
        average_intercept_init=average_intercept_init, validation_score=validation_score,
        normalize_weights=normalize_weights, divergence_checks=divergence_checks,
        classes=classes,
    )  # fmt: skip
    result = _run(plan)
    result.fit_time = time.perf_counter() - started
    return result


class _ArraySource:
    """The data of an in-memory fit: a dense array or a CSR matrix, with its targets and
    weights, already validated. The epoch loop (:func:`_run`) asks its data source for the
    ``auto`` step, the loss scale divergence is judged against, and each epoch; the CSV
    trainer (``fastgd.stream``) supplies a source with the same methods."""

    def __init__(self, X, y: np.ndarray, sample_weight: np.ndarray, max_row_norm: float):
        self.X = X
        self.y = y
        self.sample_weight = sample_weight
        self.max_row_norm = max_row_norm
        # max s·‖x‖² overflowed: any step on such rows overflows (see ``_advice``).
        self.features_overflow = not math.isfinite(max_row_norm)
        self.n_rows = X.shape[0]
        self.dtype = X.dtype

    def auto_learning_rate(self, plan: _Plan, rows: int) -> float:
        return auto_learning_rate(
            self.X, self.sample_weight, loss=plan.loss, rows_per_step=rows,
            fit_intercept=plan.fit_intercept, l2=plan.l2, rng=plan.rng,
            max_row_norm=self.max_row_norm,
            contiguous_rows=_contiguous_rows(plan.shuffle_mode, self.X),
        )  # fmt: skip

    def explosion_scale(self, plan: _Plan) -> float:
        """The loss scale that divergence is judged against (see ``EXPLOSION_FACTOR``)."""
        X, y, sw = self.X, self.y, self.sample_weight
        n = X.shape[0]
        scores = np.zeros(n, dtype=X.dtype)
        zero_model = loss_sum(scores, y, sw, plan.loss.code, plan.epsilon) / n
        if not plan.coef.any() and plan.intercept == 0.0:
            return zero_model  # the start is the zero model
        if plan.coef.any():
            _predict_into(X, plan.coef, float(plan.intercept), scores)
        else:
            scores.fill(plan.intercept)
        start = loss_sum(scores, y, sw, plan.loss.code, plan.epsilon) / n
        start += _penalty_value(plan.coef, plan.l1, plan.l2)
        # 0 for a loss that is 0 at zero weights and at the start (the perceptron): its loss
        # grows with the scale of w by design, so only non-finite values mean divergence.
        return max(zero_model, start)

    def start(self, plan: _Plan, rows: int) -> None:
        """Before the first epoch: the row-order buffer and the parallel decision."""
        X = self.X
        self.rows = rows
        self.parallel = (
            rows * _row_values(X) >= PARALLEL_MIN_VALUES
            and rows >= 2 * MIN_CHUNK_ROWS  # at least two chunks to share
            and numba.get_num_threads() > 1
        )
        self.order = np.empty(self.n_rows if plan.strategy.name != "full" else 0, np.int64)
        self.block_rows = _block_rows(X)
        self.stream_rows = self.block_rows if plan.shuffle_mode == options.SHUFFLE_BLOCK else 0

    def run_epoch(self, plan: _Plan, coef, intercept: float, t: float, eta: float, avg_w,
                  avg_b):  # fmt: skip
        """One epoch; returns ``(intercept, Σ s·L, t after, bad position or -1)``."""
        X, y, sw, order = self.X, self.y, self.sample_weight, self.order
        if order.shape[0]:
            fill_epoch_order(order, plan.shuffle_mode, self.block_rows, plan.rng.integers(2**63))
        spec = kernel_spec(plan, eta)
        state = kernel_state(plan, coef, intercept, t, avg_w, avg_b)
        if is_sparse(X):
            return _sparse_epoch(plan, X, y, sw, order, self.rows, spec, state, self.parallel)
        if plan.strategy.name == "sgd":
            return sgd_epoch(X, y, sw, order, spec, state, self.stream_rows)
        step_rows = self.n_rows if plan.strategy.name == "full" else self.rows
        return batch_epoch(X, y, sw, order, step_rows, spec, state, self.parallel, self.stream_rows)


def _run(plan: _Plan) -> FitResult:
    """The epoch loop."""
    source = plan.source
    n = source.n_rows
    rows = _rows_per_step(plan.strategy, plan.batch_size, n)
    if plan.schedule.name == "auto":
        eta = source.auto_learning_rate(plan, rows)
    else:
        eta = plan.eta0
    start_eta = eta
    source.start(plan, rows)
    coef = plan.coef
    intercept = plan.intercept
    scale = source.explosion_scale(plan)
    t = plan.t_init
    averaging = plan.average_coef is not None
    avg_w = plan.average_coef if averaging else np.empty(0)
    avg_b = np.array([plan.average_intercept]) if averaging else np.empty(0)
    best_score = -math.inf
    scores: list[float] = []
    # The best state so far (lowest epoch loss): where a back-off restarts from and what a
    # DivergenceError keeps. For sgd/minibatch an epoch's loss belongs to the weights at
    # its end; for full batch to those at its start (the objective of the step's pass).
    best = math.inf
    best_coef, best_intercept, best_t = coef.copy(), intercept, t
    best_avg = (avg_w.copy(), avg_b.copy())
    backtracks = 0
    history: list[float] = []
    no_improvement = 0
    converged = False
    epoch = 0
    while epoch < plan.max_iter:
        start_coef, start_intercept, start_t = coef.copy(), intercept, t
        penalty_now = _penalty_value(coef, plan.l1, plan.l2)
        start_avg = (avg_w.copy(), avg_b[0]) if averaging else None
        intercept, epoch_loss_sum, t, bad = source.run_epoch(
            plan, coef, intercept, t, eta, avg_w, avg_b
        )
        epoch_loss = epoch_loss_sum / n + penalty_now
        score = None
        if plan.validation_score is not None and bad < 0:
            model_coef, model_intercept = _model(plan, coef, intercept, avg_w, avg_b, t)
            score = float(plan.validation_score(model_coef, model_intercept))
            improved = plan.tol is None or score >= best_score + plan.tol
        else:
            improved = plan.tol is None or epoch_loss <= best - plan.tol
        pending_no_improvement = 0 if improved else no_improvement + 1
        reason = _divergence(
            plan, epoch_loss, bad >= 0, coef, intercept, scale, best, history,
            pending_no_improvement if plan.validation_score is None else 0,
        )  # fmt: skip
        if reason is not None:
            if plan.schedule.name == "auto" and backtracks < AUTO_MAX_BACKTRACKS:
                # The derived step is safe for random batches in expectation; an adversarial
                # order or a few rows of extreme leverage can still make it overshoot. Go
                # back to the best state and retry with a smaller step.
                coef[:] = best_coef
                intercept, t = best_intercept, best_t
                avg_w[:], avg_b[:] = best_avg
                eta /= AUTO_BACKTRACK_DIVISOR
                backtracks += 1
                no_improvement = 0
                continue
            raise DivergenceError(
                f"Training diverged in epoch {epoch + 1}: {reason}, with a step size of "
                f"{eta:.3g} (learning_rate={plan.schedule.name!r}). {_advice(plan)}",
                epoch=epoch + 1,
                coef=best_coef,
                intercept=best_intercept,
                loss_history=np.array(history),
            )
        epoch += 1
        history.append(epoch_loss)
        no_improvement = pending_no_improvement
        if score is not None:
            scores.append(score)
            best_score = max(best_score, score)
        if epoch_loss < best:
            best = epoch_loss
            if plan.strategy.name == "full":
                best_coef, best_intercept, best_t = start_coef, start_intercept, start_t
                if averaging:
                    best_avg = (start_avg[0], np.array([start_avg[1]]))
            else:
                best_coef, best_intercept, best_t = coef.copy(), intercept, t
                best_avg = (avg_w.copy(), avg_b.copy())
        if plan.callback is not None:
            model_coef, model_intercept = _model(plan, coef, intercept, avg_w, avg_b, t)
            snapshot = model_coef.copy()
            snapshot.flags.writeable = False
            if plan.callback(epoch, snapshot, model_intercept, epoch_loss):
                break
        if plan.tol is not None and no_improvement >= plan.n_iter_no_change:
            if plan.schedule.name == "adaptive" and eta > ADAPTIVE_MIN_ETA:
                eta /= ADAPTIVE_DIVISOR
                no_improvement = 0
            else:
                converged = True
                break
    model_coef, model_intercept = _model(plan, coef, intercept, avg_w, avg_b, t)
    return FitResult(
        coef=model_coef,
        intercept=source.dtype.type(model_intercept),
        n_iter=len(history),
        loss_history=np.array(history),
        converged=converged,
        learning_rate=start_eta,
        t=t,
        loss=plan.loss.name,
        classes=plan.classes,
        extras={"final_learning_rate": eta, "auto_backtracks": backtracks},
        standard_coef=coef if averaging else None,
        standard_intercept=source.dtype.type(intercept) if averaging else None,
        average_coef=avg_w if averaging else None,
        average_intercept=float(avg_b[0]) if averaging else None,
        validation_scores=np.array(scores) if plan.validation_score is not None else None,
    )


def _advice(plan: _Plan) -> str:
    """What to try after divergence. Features whose squared norms overflow float64 make
    every step overflow, whatever its size: then say so and name the cure."""
    overflowing = getattr(plan.source, "features_overflow", False)  # arrays in memory know
    if overflowing:
        return (
            f"The features are too large for floating-point arithmetic (max |x| = "
            f"{largest_magnitude(plan.source.X):.3g}; their squares overflow). {SCALE_ADVICE}"
        )
    if plan.schedule.name == "auto":
        return "Try standardising the features, checking the data for extreme values, or a penalty."
    return "Try learning_rate='auto', a smaller eta0, or standardising the features."


def _sparse_epoch(plan, X, y, sw, order, rows, spec, state, parallel):
    """One epoch on CSR data (the kernels of ``fastgd._kernels.sparse``)."""
    from ._kernels.sparse import batch_epoch_csr, sgd_epoch_csr

    parts = (X.data, X.indices, X.indptr, y, sw, order)
    if plan.strategy.name == "sgd":
        return sgd_epoch_csr(*parts, spec, state)
    step_rows = X.shape[0] if plan.strategy.name == "full" else rows
    return batch_epoch_csr(*parts, step_rows, spec, state, parallel)


def _model(plan: _Plan, coef, intercept, avg_w, avg_b, t):
    """The model's weights: the running means once averaging has begun (some step numbered
    at least ``average_start`` has run), else the iterate."""
    if plan.average_start and t - 1.0 >= plan.average_start:
        return avg_w.astype(coef.dtype), float(avg_b[0])
    return coef, intercept
