"""The engine: ``fastgd.fit`` and the one epoch loop every front end drives.

It validates the input, resolves the options to kernel codes, derives the ``auto`` step
size, draws the seeded row orders, calls one epoch kernel per epoch, records the loss
curve, and decides when to stop: converged, diverged, stopped by the callback, or out of
epochs.

Every front trains through the same pair: :func:`resolve_options` (the options, checked)
and :func:`train` (the set-up and the epoch loop) over a data source
(:class:`fastgd.sources.DataSource`: arrays in memory here, the CSV cache in
``fastgd.stream``, Dask partitions in ``fastgd.dask``). The sources answer narrow questions
(rows, a sample, losses, one epoch); the policies (``auto``, the explosion scale, the
parallel choice, back-offs, stopping, the loss curve) live here, once.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field

import numba
import numpy as np

from . import _range_test, options, parameters
from ._kernels.epochs import (
    accumulate_gradient,
    batch_epoch,
    loss_sum,
    sgd_epoch,
)
from ._kernels.order import fill_epoch_order
from ._kernels.records import Spec, State, l1_memory_for, make_spec, make_state, rule_arrays
from ._pipeline import GatheredEpochs, gathers, overlap_available
from ._range_test import (
    AUTO_RANGE_TEST_HORIZON_POWER,
    AUTO_RANGE_TEST_RATES_PER_DECADE,
    AUTO_RANGE_TEST_ROWS,
)
from ._range_test import (
    auto_test_epochs as _range_test_epochs,
)
from ._range_test import (
    auto_test_grid as _range_test_grid,
)
from ._thresholds import (
    ADAPTIVE_DIVISOR,
    ADAPTIVE_MIN_ETA,
    AUTO_BACKTRACK_DIVISOR,
    AUTO_MAX_BACKTRACKS,
    AUTO_SAMPLE_ROWS,
    EXPLOSION_FACTOR,
    parallel_batches,
)
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
from .full_batch import LBFGS, Nesterov, Point
from .multi import fit_k_outputs, needs_k_outputs
from .prediction import check_input, decision_values, labels
from .prediction import predict_into as _predict_into
from .sources import BlockSource, DataSource, EpochOrder, GradientSums, RowSample

__all__ = [
    "FitResult",
    "auto_learning_rate",
    "fit",
    "parallel_batches",
    "penalty_value",
    "resolve_options",
    "train",
]

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
#: Bytes of float64 copies sampled for the curvature behind ``"auto"`` (and at most
#: ``AUTO_SAMPLE_ROWS`` rows, from ``fastgd._thresholds``).
AUTO_SAMPLE_BYTES = 64 * 1024 * 1024
AUTO_POWER_ITERATIONS = 30
#: Up to this many features the curvature comes exactly from the Gram matrix instead.
AUTO_GRAM_MAX_WIDTH = 512
#: For batches made of consecutive rows: runs sampled, their largest size, and iterations.
AUTO_GROUP_SAMPLES = 16
AUTO_GROUP_MAX_ROWS = 2048
AUTO_GROUP_POWER_ITERATIONS = 15
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
    slots : ndarray of shape (slots, n_features + 1) or None
        The update rule's per-coordinate state after the run (a momentum buffer, Adam's
        moments; the last column the intercept's; empty for plain SGD): ``slots_init`` of a
        fit that continues this one (SAGA's row memory is not kept: it restarts).
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
    slots: np.ndarray | None = None

    def decision_function(self, X) -> np.ndarray:
        """``X·coef + intercept`` in one pass over X (dense or scipy.sparse), in X's dtype."""
        X = check_input(X, self.coef.shape[0])
        return decision_values(X, self.coef, self.intercept)[:, 0]

    def plot(self, ax=None):
        """The loss curve on a log scale (matplotlib, the ``fastgd[plot]`` extra); returns
        the axes. See :func:`fastgd.plot.plot_fit`."""
        from .plot import plot_fit

        fields = ("loss_history", "loss", "learning_rate", "converged", "n_iter")
        return plot_fit({name: getattr(self, name) for name in fields}, ax)

    def predict(self, X) -> np.ndarray:
        """Predicted targets (regression) or labels from ``classes`` (classification)."""
        scores = self.decision_function(X)
        return scores if self.classes is None else labels(scores, self.classes)


@dataclass
class _Plan:
    """Everything validated and resolved; what the epoch loop needs. ``source`` is the data
    (see :mod:`fastgd.sources`): :class:`_ArraySource` for arrays in memory, a
    :class:`fastgd.sources.BlockSource` for the CSV trainer, Dask's own."""

    source: DataSource
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
    #: ``multiclass`` (read by ``fit``'s k-output path, ``fastgd.multi``).
    multiclass: str = "ovr"
    #: The update rule's state (``records.rule_arrays``): per-coordinate slots, shape
    #: (rule.slots, d + 1), and SAGA's row memory, shape (n_rows,) (else empty).
    slots: np.ndarray | None = None
    row_memory: np.ndarray | None = None
    #: The mean loss of the all-zero model on the source's rows (set with the loss scale;
    #: reported in ``FitResult.extras["zero_model_loss"]``).
    zero_model_loss: float = 0.0
    #: The optimizer's name (``parameters.PARAMETERS``), the update rule the kernels apply
    #: (``optimizer``'s row of ``options.UPDATE_RULES``, or the schedule's: pa1/pa2) and
    #: the optimizers' scalars.
    optimizer: str = "sgd"
    rule: options.UpdateRule = options.UPDATE_RULES[0]
    momentum: float = 0.9
    nesterov: bool = False
    beta_1: float = 0.9
    beta_2: float = 0.999
    rho: float = 0.99
    optimizer_epsilon: float = 1e-8
    #: scikit-learn's ways (``fastgd.fit``'s ``intercept_decay``, ``l1_method`` as its
    #: code in ``options.L1_METHODS``) and the truncated L1's running state
    #: (``records.l1_memory_for``; it starts at zero in every ``train`` call, as
    #: scikit-learn's starts in every ``fit``/``partial_fit``).
    intercept_decay: float = 1.0
    l1_method: int = options.L1_PROXIMAL
    l1_memory: np.ndarray | None = None


def kernel_spec(plan: _Plan, eta: float) -> Spec:
    """The kernels' spec of ``plan`` at the step ``eta`` (``eta0``, or the epoch's step of an
    epoch-level schedule): the one place where a plan becomes kernel codes and scalars, for
    every data source (arrays, the CSV trainer, Dask)."""
    return make_spec(
        loss=plan.loss.code, epsilon=plan.epsilon, schedule=plan.schedule.kernel_code,
        rule=plan.rule.code, eta0=eta, power_t=plan.power_t, alpha=plan.alpha,
        optimal_init=plan.optimal_init, l1=plan.l1, l2=plan.l2,
        fit_intercept=plan.fit_intercept, average_start=plan.average_start,
        intercept_decay=plan.intercept_decay, l1_method=plan.l1_method,
        **{name: getattr(plan, name) for name in OPTIMIZER_SCALARS if name in Spec._fields},
    )  # fmt: skip


#: The optimizers' scalars the kernels read, as fields of ``Spec`` once the kernels
#: implement the stochastic rules (filled by name, so the engine needs no change then).
OPTIMIZER_SCALARS = ("momentum", "nesterov", "beta_1", "beta_2", "rho", "optimizer_epsilon")


def kernel_state(plan: _Plan, coef, intercept: float, t: float, avg_w, avg_b) -> State:
    """The kernels' training state: the weights (updated in place), the intercept and step
    counter, the running means and the update rule's slots (kept in ``plan.slots`` from
    one call to the next)."""
    if plan.slots is None:
        plan.slots, plan.row_memory = rule_arrays(plan.rule, coef.shape[0], plan.source.n_rows)
    if plan.l1_memory is None:
        plan.l1_memory = l1_memory_for(plan.l1_method, coef.shape[0])
    return make_state(coef, intercept, t, avg_w, avg_b, plan.slots, plan.row_memory, plan.l1_memory)


#: ``fit``'s arguments that are data or a fit's starting state rather than options.
DATA_ARGUMENTS = frozenset(
    {"X", "y", "sample_weight", "coef_init", "intercept_init", "average_coef_init",
     "average_intercept_init", "normalize_weights", "classes", "slots_init"}
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


def concurrent_fits(workers: int) -> int:
    """How many fits may run at once in threads: ``workers`` on a thread-safe threading
    layer (TBB, OpenMP), 1 under Numba's ``workqueue`` layer, which aborts the process when
    two threads launch parallel kernels at the same time (fastgd falls back to it where TBB
    cannot be loaded; see ``fastgd/_threading.py``). Asking Numba for its thread count starts
    its threads, which fixes the layer (it compiles nothing), so the answer is never a guess."""
    from ._threading import THREAD_SAFE_LAYERS  # already loaded with fastgd._kernels

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


def resolve_options(**given) -> dict:
    """Validate and resolve every option of ``fastgd.fit`` that does not depend on the data
    (the keyword arguments of ``fit`` less ``DATA_ARGUMENTS``); returns them as
    :func:`train` takes them: the loss, strategy and schedule as ``fastgd.options``
    records, the penalty split into ``l1``/``l2``, the shuffle mode, the seeded ``rng``, ...
    Each option is checked by its row of ``fastgd.parameters.PARAMETERS`` (an option not
    given takes its default there), then by the ``RULES``. A front may adjust the dict
    (e.g. set ``validation_score``) before ``train``."""
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
        rule=_update_rule(values["optimizer"], schedule_opt),
        l1_method=options.L1_METHODS.index(values.pop("l1_method")),
    )  # fmt: skip
    for name in ("learning_rate", "penalty", "l1_ratio"):
        del values[name]  # resolved above (schedule, l1 and l2)
    return {**values, **resolved}


def _update_rule(optimizer: str, schedule: options.Schedule) -> options.UpdateRule:
    """The kernels' update rule: the stochastic ``optimizer``'s row of
    ``options.UPDATE_RULES`` (read by name), the schedule's own rule for pa1/pa2, plain
    SGD for the full-batch optimizers (gd's step; nesterov and lbfgs step in the engine)."""
    if optimizer not in parameters.STOCHASTIC_OPTIMIZERS or optimizer == "sgd":
        return schedule.rule
    return options.update_rule_by_name(optimizer)


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


def _array_source(X, y, resolved: dict, *, sample_weight, normalize_weights,
                  classes) -> tuple[_ArraySource, np.ndarray | None]:  # fmt: skip
    """The validated arrays of ``fastgd.fit`` as its data source, and the two classes of a
    classification (None for regression)."""
    sparse = is_sparse(X)
    if sparse and not resolved["rule"].sparse:
        raise options.no_csr_kernel(resolved["rule"], resolved["optimizer"])
    # Checked for NaN/inf below, in the pass that also gives L_row.
    X = check_csr(X, check_finite=False) if sparse else check_X(X, check_finite=False)
    n = X.shape[0]
    given_classes, classes = classes, None
    if resolved["loss"].classification:
        # Classes are found in y's own dtype: a cast to float32 first could merge labels.
        y = check_vector(y, "y", n, None)
        classes, y = check_binary_labels(y, resolved["loss"].name, X.dtype, given_classes)
    else:
        y = check_vector(y, "y", n, X.dtype)
    sw = check_sample_weight(sample_weight, n, normalize=normalize_weights)
    extra = 1.0 if resolved["fit_intercept"] else 0.0
    # The largest curvature a row's step meets: a negative weight's row counts by its size.
    scan_weights = np.abs(sw) if sw.size and sw.min() < 0.0 else sw
    if sparse:
        max_row_norm = scan_sparse(X, scan_weights, extra)
    else:
        max_row_norm = scan(X, "X", scan_weights, extra)
    return _ArraySource(X, y, sw, max_row_norm), classes


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
    return _power_iteration(width, lambda vector: sample.T @ (sample @ vector) / m, rng,
                            iterations)  # fmt: skip


def _power_iteration(width: int, image_of, rng, iterations: int) -> float:
    """The largest eigenvalue of a symmetric positive semi-definite operator (``image_of``:
    its product with a vector) by power iteration: a lower bound converging from below."""
    vector = np.ones(width) + 0.1 * rng.standard_normal(width)
    eigenvalue = 0.0
    for _ in range(iterations):
        norm = np.linalg.norm(vector)
        if norm == 0.0:
            break
        vector /= norm
        image = image_of(vector)
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

    def image_of(vector):
        image_rows = rows @ vector[:d]
        if fit_intercept:
            image_rows = image_rows + vector[d]
        image_rows = root * root * np.asarray(image_rows, dtype=np.float64)
        image = np.empty(width)
        image[:d] = rows.T @ image_rows
        if fit_intercept:
            image[d] = image_rows.sum()
        image /= m
        return image

    return _power_iteration(width, image_of, rng, iterations)


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


def penalty_value(coef: np.ndarray, l1: float, l2: float) -> float:
    """The penalty ``l1·‖w‖₁ + l2·½‖w‖²`` at ``coef`` (the intercept is never penalised)."""
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
        and plan.optimizer != "nesterov"  # its objective may rise: then it restarts
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
    optimizer: str = "sgd",
    momentum: float = 0.9,
    nesterov: bool = False,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    rho: float = 0.99,
    optimizer_epsilon: float = 1e-8,
    slots_init=None,
    l1_method: str = "proximal",
    intercept_decay: float = 1.0,
    multiclass: str = "ovr",
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
        :func:`auto_learning_rate`; for the adaptive optimizers adagrad, rmsprop, adam and
        adamw, whose step is in the weights' units, a short learning-rate range test on a
        row sample chooses it: :func:`range_test_step`); ``constant`` uses ``eta0``;
        ``invscaling`` uses ``eta0 / t**power_t``; ``optimal`` is scikit-learn's
        ``1/(alpha·(t0 + t - 1))``;
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
        Non-negative; rescaled to mean 1, so only their ratios matter (with
        ``normalize_weights=False``: taken as given, negative ones included).
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
        also scale the step size and the balance against the penalty; as in scikit-learn
        1.9 a negative weight is accepted and makes its row's step an ascent).
    divergence_checks : {"all", "non_finite"}
        ``"all"`` applies every rule below; ``"non_finite"`` only stops on non-finite
        losses or weights (scikit-learn's behaviour, for its schedules).
    classes : array of 2 labels or None
        For classification losses: the two labels (``classes[1]`` is the positive class),
        when ``y`` may hold only one of them (a chunk of a larger data set). None: the
        two classes found in ``y``.
    optimizer : str
        The update rule. ``strategy="sgd"``/``"minibatch"``: ``"sgd"`` (the step above),
        ``"momentum"``, ``"adagrad"``, ``"rmsprop"``, ``"adam"``, ``"adamw"``, ``"saga"``
        (the kernels' rows of ``fastgd.options.UPDATE_RULES``, read by name; their
        per-feature state is ``FitResult.slots``; ``"saga"`` also keeps one derivative per
        row, and on CSR rows catches each feature's skipped steps up just in time, with the
        dense rule's result). ``strategy="full"``: ``"gd"`` (= ``"sgd"``
        there: the step above), ``"nesterov"`` (accelerated gradient, restarted whenever
        the objective rises or the momentum points uphill; ``auto`` gives it gd's 1/L
        step) or ``"lbfgs"`` (limited memory BFGS, 10 pairs, strong-Wolfe line search,
        which sets its steps: ``learning_rate`` and ``eta0`` are not read; smooth losses,
        no L1; stops when ``max |∇J| ≤ tol`` or the relative decrease falls to
        ``fastgd.full_batch.LBFGS_FTOL``, as scipy's ``gtol``/``ftol``). Every epoch of
        nesterov and lbfgs is one iteration on one or more full-batch gradients, on any
        source; the divergence rules apply as for gd.
    momentum, nesterov, beta_1, beta_2, rho, optimizer_epsilon : float, bool
        The stochastic rules' scalars: momentum's decay (and Nesterov's look-ahead), Adam's
        moment decays, RMSProp's decay (torch's ``alpha``), the denominators' guard.
    slots_init : array of shape (slots, n_features + 1), optional
        The update rule's state to start from (``FitResult.slots`` of an earlier fit with
        the same optimizer); None or another shape: zeros. Ignored by ``"saga"``, whose
        state belongs to the rows of the earlier fit: it restarts.
    l1_method : {"proximal", "truncated"}, default="proximal"
        How the L1 part of the penalty acts. ``"proximal"``: the soft threshold
        :math:`\operatorname{prox}_{\eta\lambda_1}` on every weight after each step.
        ``"truncated"``: scikit-learn's cumulative truncated gradient (Tsuruoka et al.,
        2009), which its ``SGDClassifier``/``SGDRegressor`` (and fastgd's) use: each step
        adds :math:`\eta\lambda_1` to a total :math:`u`, and every weight the step touches
        (all on dense rows; a CSR row's stored columns) moves towards 0, never across it, by
        what it has not yet received of :math:`u` (its running :math:`q_j`); features that
        only noise moves end at exactly 0. Needs ``strategy="sgd"`` and
        ``optimizer="sgd"``; :math:`u` and :math:`q` start at 0 in every call.
    intercept_decay : float in (0, 1], default=1.0
        The factor of the intercept's step: :math:`b \leftarrow b - \text{intercept\_decay}
        \cdot \eta\, g_b`. scikit-learn uses 0.01 on sparse data (its
        ``SPARSE_INTERCEPT_DECAY``), as fastgd's estimators do.
    multiclass : {"ovr", "multinomial"}
        With more than two classes (numeric labels), or a 2-D ``y`` of k regression
        targets, one pass over X per step trains all k models (``fastgd.multi``) and
        ``fit`` returns a ``fastgd.multi.MultiFitResult`` (``coef`` of shape (k, d)):
        ``"ovr"`` one binary model per class (one-vs-rest), ``"multinomial"`` one softmax
        model (``loss="log_loss"``; also with two classes). Plain SGD steps only
        (``optimizer="sgd"``, ``"gd"`` with ``strategy="full"``).

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
    resolved = resolve_options(
        loss=loss, strategy=strategy, batch_size=batch_size, learning_rate=learning_rate,
        eta0=eta0, power_t=power_t, penalty=penalty, alpha=alpha, l1_ratio=l1_ratio,
        epsilon=epsilon, max_iter=max_iter, tol=tol, n_iter_no_change=n_iter_no_change,
        fit_intercept=fit_intercept, shuffle=shuffle, random_state=random_state,
        callback=callback, t_init=t_init, average=average, validation_score=validation_score,
        divergence_checks=divergence_checks, optimizer=optimizer, momentum=momentum,
        nesterov=nesterov, beta_1=beta_1, beta_2=beta_2, rho=rho,
        optimizer_epsilon=optimizer_epsilon, l1_method=l1_method,
        intercept_decay=intercept_decay, multiclass=multiclass,
    )  # fmt: skip
    if needs_k_outputs(y, resolved["loss"], multiclass, classes):
        return fit_k_outputs(
            X, y, resolved, multiclass=multiclass, auto_step=_k_output_auto_step(resolved),
            block_rows=_block_rows, sample_weight=sample_weight,
            normalize_weights=normalize_weights, classes=classes, coef_init=coef_init,
            intercept_init=intercept_init, average_coef_init=average_coef_init,
            average_intercept_init=average_intercept_init, validation_score=validation_score,
            slots_init=slots_init,
        )  # fmt: skip
    source, found_classes = _array_source(
        X, y, resolved, sample_weight=sample_weight, normalize_weights=normalize_weights,
        classes=classes,
    )  # fmt: skip
    result = train(
        source, resolved, classes=found_classes, coef_init=coef_init,
        intercept_init=intercept_init, average_coef_init=average_coef_init,
        average_intercept_init=average_intercept_init, slots_init=slots_init,
    )  # fmt: skip
    result.fit_time = time.perf_counter() - started
    return result


def _k_output_auto_step(resolved: dict) -> Callable:
    """``auto``'s step for ``fastgd.multi``: the outputs share X, so the single-output
    bound applies to each (the loss record carries softmax's curvature there)."""

    def step(X, sample_weight, loss, rows_per_step, max_row_norm) -> float:
        eta = auto_learning_rate(
            X, sample_weight, loss=loss, rows_per_step=rows_per_step,
            fit_intercept=resolved["fit_intercept"], l2=resolved["l2"], rng=resolved["rng"],
            max_row_norm=max_row_norm,
            contiguous_rows=_contiguous_rows(resolved["shuffle_mode"], X),
        )  # fmt: skip
        # The rule's step from plain SGD's (momentum, saga), read as _derived_rule_step
        # reads a plan: the one place of that derivation.
        rows = types.SimpleNamespace(max_row_norm=lambda: max_row_norm)
        plan = types.SimpleNamespace(rule=resolved["rule"], momentum=resolved["momentum"],
                                     loss=loss, source=rows)  # fmt: skip
        return _derived_rule_step(plan, eta)

    return step


def train(source: DataSource, resolved: dict, *, classes=None, coef_init=None,
          intercept_init=None, average_coef_init=None,
          average_intercept_init=None, slots_init=None) -> FitResult:  # fmt: skip
    """Train on any :class:`fastgd.sources.DataSource`: the one fit set-up and epoch loop
    behind ``fastgd.fit`` (arrays in memory), ``fastgd.fit_csv`` and ``fastgd.dask.fit``.

    ``resolved`` holds the options as :func:`resolve_options` returns them (a front may
    set ``validation_score`` or change ``batch_size`` first); ``classes`` the two labels of
    a classification (the source's targets are already ±1); the starting weights are
    checked against the source's width and dtype as in ``fastgd.fit``."""
    start = _starting_weights(
        source.n_features, source.dtype, coef_init=coef_init, intercept_init=intercept_init,
        average_start=resolved["average_start"], average_coef_init=average_coef_init,
        average_intercept_init=average_intercept_init,
    )  # fmt: skip
    _check_rule_runs_on(resolved["rule"], source)
    plan = _Plan(source=source, classes=classes, **resolved, **start)
    plan.slots, plan.row_memory = _starting_rule_state(plan.rule, source, slots_init)
    return _run(plan)


def _check_rule_runs_on(rule: options.UpdateRule, source) -> None:
    """Refuse a rule with ``row_memory`` (SAGA) on a source whose rows do not come to this
    process row by row: it runs on arrays in memory and on a ``BlockSource`` that reads its
    blocks here (``fit_csv``: the memory follows each block's rows), not on one that sums
    its gradients elsewhere (Dask) or samples its mini-batches (``sample_fraction``). CSR
    rows without the table's ``sparse`` column are refused by ``_array_source``."""
    if not rule.row_memory or isinstance(source, _ArraySource):
        return
    reads_here = (
        isinstance(source, BlockSource)
        and type(source).gradient_sums is BlockSource.gradient_sums
        and source.sample_fraction is None
    )
    if not reads_here:
        raise ValueError(
            f"optimizer={rule.name!r} keeps one stored derivative per row of the whole data "
            f"set; it runs on arrays in memory (fastgd.fit, the estimators) and on blocks "
            f"read in this process (fastgd.fit_csv), not on {type(source).__name__} (Dask, "
            f"sampled mini-batches): use another optimizer there."
        )


def _starting_rule_state(rule: options.UpdateRule, source, slots_init):
    """The update rule's state at the start (``records.rule_arrays``): zeros, or the slots
    ``slots_init`` (``FitResult.slots`` of an earlier fit, to continue it: ``partial_fit``).
    A rule with a row memory (SAGA) always restarts: its slot is the mean of the memory, which
    belongs to the rows of the earlier call, not to these."""
    slots, row_memory = rule_arrays(rule, source.n_features, source.n_rows)
    if slots_init is not None and not rule.row_memory and np.shape(slots_init) == slots.shape:
        slots[:] = slots_init
    # Else: another shape means the rule or the width changed since; start afresh.
    return slots, row_memory


_NO_ORDER = np.empty(0, dtype=np.int64)


class _ArraySource:
    """The data of an in-memory fit, a :class:`fastgd.sources.DataSource`: a dense array
    or a CSR matrix, with its targets and weights, already validated."""

    def __init__(self, X, y: np.ndarray, sample_weight: np.ndarray, max_row_norm: float):
        self.X = X
        self.y = y
        self.sample_weight = sample_weight
        self._max_row_norm = max_row_norm
        # max s·‖x‖² overflowed: any step on such rows overflows (see ``_advice``).
        self.features_overflow = not math.isfinite(max_row_norm)
        self.n_rows, self.n_features = X.shape
        self.values_per_row = _row_values(X)
        self.dtype = X.dtype
        self.block_rows = _block_rows(X)
        self._order: np.ndarray | None = None
        self._gathered: GatheredEpochs | None = None

    def max_row_norm(self) -> float:
        return self._max_row_norm

    def sample(self, rng) -> RowSample:
        # All the rows, in order: auto_learning_rate (and the range test) draw their own
        # sample from them.
        return RowSample(self.X, self.sample_weight, in_order=True, targets=self.y)

    def losses(self, loss: int, epsilon: float, coef, intercept: float) -> tuple[float, float]:
        X, y, sw = self.X, self.y, self.sample_weight
        scores = np.zeros(X.shape[0], dtype=X.dtype)
        zero = loss_sum(scores, y, sw, loss, epsilon)
        if coef is None:
            return zero, zero
        if coef.any():
            _predict_into(X, coef, float(intercept), scores)
        else:
            scores.fill(intercept)
        return zero, loss_sum(scores, y, sw, loss, epsilon)

    def gradient_sums(self, state: State, spec: Spec, order: EpochOrder,
                      fraction: float = 1.0) -> GradientSums:  # fmt: skip
        """The full-batch gradient sums at ``state`` (as ``BlockSource.gradient_sums``):
        one fused pass. CSR rows are summed over their non-zeros (``O(nnz)``; densifying
        them cost ``O(rows · columns)``: a 200k × 100k matrix took minutes a gradient)."""
        grad = np.zeros(self.n_features)
        if is_sparse(self.X):
            from ._kernels.sparse import accumulate_gradient_csr

            X = self.X
            loss, deriv = accumulate_gradient_csr(
                X.data, X.indices, X.indptr, self.y, self.sample_weight, spec, state, grad
            )
        else:
            loss, deriv = accumulate_gradient(
                self.X, self.y, self.sample_weight, spec, state, grad, order.parallel
            )
        return GradientSums(grad, float(loss), float(deriv), self.n_rows,
                            -1 if math.isfinite(loss) else 0)  # fmt: skip

    def epoch(self, state: State, spec: Spec, order: EpochOrder) -> tuple[State, float, int]:
        X, y, sw = self.X, self.y, self.sample_weight
        rows = _NO_ORDER
        if order.strategy != "full":
            if self._order is None:
                self._order = np.empty(self.n_rows, np.int64)
            rows = self._order
            fill_epoch_order(rows, order.shuffle, self.block_rows, order.rng.integers(2**63))
        step_rows = self.n_rows if order.strategy == "full" else order.rows_per_step
        stream_rows = self.block_rows if order.shuffle == options.SHUFFLE_BLOCK else 0
        if is_sparse(X):
            result = _sparse_epoch(order.strategy, X, y, sw, rows, step_rows, spec, state,
                                   order.parallel)  # fmt: skip
        elif gathers(X, order.strategy, order.shuffle, step_rows, state.row_memory):
            result = self._gathered_epochs(step_rows).epoch(rows, spec, state, overlap_available())
        elif order.strategy == "sgd":
            result = sgd_epoch(X, y, sw, rows, spec, state, stream_rows)
        else:
            result = batch_epoch(X, y, sw, rows, step_rows, spec, state, order.parallel,
                                 stream_rows)  # fmt: skip
        intercept, loss_total, t, bad = result
        return state._replace(intercept=intercept, t=t), loss_total, bad

    def _gathered_epochs(self, step_rows: int) -> GatheredEpochs:
        """The chunk buffers of a shuffled epoch (``fastgd._pipeline``), kept across epochs."""
        if self._gathered is None or self._gathered.rows_per_step != step_rows:
            self._gathered = GatheredEpochs(self.X, self.y, self.sample_weight, step_rows)
        return self._gathered


def _run(plan: _Plan) -> FitResult:
    """The epoch loop: the engine's policies around the source's epochs."""
    source = plan.source
    rows = _rows_per_step(plan.strategy, plan.batch_size, source.n_rows)
    order = EpochOrder(
        plan.strategy.name, rows, plan.shuffle_mode, plan.rng,
        parallel_batches(rows, source.values_per_row),
    )  # fmt: skip
    eta = plan.eta0
    if plan.schedule.name == "auto" and plan.optimizer != "lbfgs":  # lbfgs: line searches
        eta = _rule_auto_step(plan, rows)
    loop = _Loop(plan, eta, _explosion_scale(plan))
    if plan.optimizer in ("nesterov", "lbfgs"):
        loop.epochs = _FullBatchEpochs(plan)
    while len(loop.history) < plan.max_iter and loop.step(order):
        pass
    result = loop.result()
    if isinstance(loop.epochs, _FullBatchEpochs):
        result.extras.update(loop.epochs.extras())
    return result


class _FullBatchEpochs:
    """The epochs of ``optimizer="nesterov"`` or ``"lbfgs"``: one iteration of
    :mod:`fastgd.full_batch` per epoch, on the full-batch gradient sums of the source
    (``gradient_sums``: one fused pass, on any source). The objective is the exact
    ``J = (1/n)·Σ s·L + l1·‖w‖₁ + l2·½‖w‖²``; ``x`` is the weights, then the intercept
    when it is fitted. An epoch returns the data loss at its start, as gd's does."""

    def __init__(self, plan: _Plan):
        if not hasattr(plan.source, "gradient_sums"):
            raise TypeError(
                f"optimizer={plan.optimizer!r} needs full-batch gradients: the data source "
                f"{type(plan.source).__name__} has no gradient_sums (fastgd.sources."
                f"BlockSource has one); use optimizer='gd'."
            )
        self.plan = plan
        self.converged = False
        self.expected: np.ndarray | None = None  # the x this object last handed out
        self.nesterov = Nesterov(self._prox) if plan.optimizer == "nesterov" else None
        gtol = plan.tol if plan.tol is not None else 0.0
        self.lbfgs = LBFGS(self._evaluate, gtol) if plan.optimizer == "lbfgs" else None
        self.spec: Spec | None = None
        self.order: EpochOrder | None = None
        self.state: State | None = None

    def extras(self) -> dict:
        """``restarts`` (nesterov's momentum restarts) or ``evaluations`` (lbfgs's
        full-batch passes, line searches included)."""
        if self.nesterov is not None:
            return {"restarts": self.nesterov.restarts}
        return {"evaluations": self.lbfgs.evaluations}

    def _x(self, state: State) -> np.ndarray:
        w = state.w.astype(np.float64)
        return np.append(w, state.intercept) if self.plan.fit_intercept else w

    def _evaluate(self, x: np.ndarray) -> Point:
        plan, d = self.plan, self.plan.source.n_features
        w = x[:d].astype(self.state.w.dtype)
        intercept = float(x[d]) if plan.fit_intercept else self.state.intercept
        at = self.state._replace(w=w, intercept=intercept)
        sums = plan.source.gradient_sums(at, self.spec, self.order)
        n = plan.source.n_rows
        gradient = sums.grad / n + plan.l2 * x[:d]
        if plan.fit_intercept:
            gradient = np.append(gradient, sums.deriv / n)
        value = sums.loss / n + penalty_value(w, plan.l1, plan.l2)
        return Point(value, gradient, sums.loss, sums.bad)

    def _prox(self, x: np.ndarray, eta: float) -> np.ndarray:
        """The proximal step of the L1 part (soft thresholding; never the intercept)."""
        l1, d = self.plan.l1, self.plan.source.n_features
        if l1 == 0.0:
            return x
        out = x.copy()
        out[:d] = np.sign(x[:d]) * np.maximum(np.abs(x[:d]) - eta * l1, 0.0)
        return out

    def epoch(self, state: State, spec: Spec, order: EpochOrder) -> tuple[State, float, int]:
        self.spec, self.order, self.state = spec, order, state
        x = self._x(state)
        moved = self.expected is None or not np.array_equal(x, self.expected)
        if self.nesterov is not None:
            if moved:  # a back-off restored an earlier state: its momentum is gone
                self.nesterov.reset()
            point = self._evaluate(x)
            if point.bad >= 0:
                return state, point.loss_total, point.bad
            x_next = self.nesterov.step(x, point, spec.eta0)
        else:
            point = self.lbfgs.start(x)
            if point.bad >= 0:
                return state, point.loss_total, point.bad
            x_next = self.lbfgs.step()
            self.converged = self.lbfgs.converged
        d = self.plan.source.n_features
        state.w[:] = x_next[:d]
        intercept = float(x_next[d]) if self.plan.fit_intercept else state.intercept
        self.expected = self._x(state._replace(intercept=intercept))
        if self.lbfgs is not None:
            self.lbfgs.x = self.expected.copy()  # as stored (float32 weights round)
        return state._replace(intercept=intercept, t=state.t + 1.0), point.loss_total, -1


def _rule_auto_step(plan: _Plan, rows: int) -> float:
    """``learning_rate="auto"``'s step for the update rule: the adaptive rules' from a range
    test (:func:`range_test_step`), the others' from plain SGD's derived step (see
    :func:`_derived_rule_step`)."""
    if plan.rule.name in parameters.RANGE_TESTED_OPTIMIZERS:
        return range_test_step(plan, rows)
    return _derived_rule_step(plan, _auto_step(plan, rows))


def _derived_rule_step(plan: _Plan, eta: float) -> float:
    """The update rule's step from plain SGD's ``eta``. Heavy ball moves by ``η/(1 − μ)``
    in a steady direction: its step is scaled by ``1 − μ``. SAGA's proven step is
    ``1/(3·L_max)`` (Defazio et al., 2014), ``L_max`` the largest row curvature
    ``curvature·s·(‖x‖² + 1)``."""
    if plan.rule.name == "momentum":
        return eta * (1.0 - plan.momentum)
    if plan.rule.name == "saga":
        largest = plan.loss.curvature * plan.source.max_row_norm()
        return min(eta, 1.0 / (3.0 * largest)) if largest > 0 else eta
    return eta


def _auto_step(plan: _Plan, rows: int) -> float:
    """``learning_rate="auto"``'s step from the source's row sample and largest row norm."""
    source = plan.source
    sample = source.sample(plan.rng)
    taken = sample.rows.shape[0]
    # A full batch of the data is a full batch of the sample.
    per_step = taken if rows >= source.n_rows else min(rows, taken)
    contiguous = _contiguous_rows(plan.shuffle_mode, sample.rows) if sample.in_order else 0
    return auto_learning_rate(
        sample.rows, sample.weights, loss=plan.loss, rows_per_step=per_step,
        fit_intercept=plan.fit_intercept, l2=plan.l2, rng=plan.rng,
        max_row_norm=source.max_row_norm(), contiguous_rows=contiguous,
    )  # fmt: skip


def range_test_step(plan: _Plan, rows: int) -> float:
    """``learning_rate="auto"``'s step for the adaptive rules (adagrad, rmsprop, adam,
    adamw): the suggestion of a learning-rate range test (``fastgd._range_test``, the rule
    of ``fastgd.find_learning_rate``) for the plan's rule, strategy and batch size.

    Why a test and no formula: these rules divide each coordinate's step by the root of
    its squared gradients, so a coordinate moves by about the step whatever the data's
    curvature; the right step is in the weights' units (near the optimum's scale) and no
    curvature bound gives it. The test draws at most ``AUTO_RANGE_TEST_ROWS`` rows of the
    source's sample (the one ``auto`` draws for every rule), then, from the plan's
    starting weights, step counter and optimizer state, runs ``AUTO_RANGE_TEST_EPOCHS``
    constant-step epochs (or ``AUTO_RANGE_TEST_MIN_STEPS`` steps) on them at each rate of
    a geometric grid (``_range_test_grid``), until the objective on the sample blows up.
    The step is the lower of half the largest rate before that (the finder's suggestion)
    and the rate of the lowest objective, times ``√(test's steps / fit's steps)`` when the
    fit is longer than a run of the test (reasons and measurements in the code). Cost: one
    short run per rate up to the edge, or a decade past the lowest objective (9-19 rates
    on 200k × 100 dense), on the sample only; measured there beside one epoch of the same
    fit (2 threads): sgd 0.34 (adam) to 0.72 (adagrad) epochs, minibatch (B = 256) 2.9
    (adam) to 3.5 (adagrad) epochs of 0.02 s each. Should the full run
    still diverge, the usual back-off applies (``AUTO_MAX_BACKTRACKS``).
    """
    sample = plan.source.sample(plan.rng)
    if sample.targets is None:
        raise TypeError(
            f"optimizer={plan.optimizer!r} with learning_rate='auto' runs a range test on a "
            f"sample of rows and their targets; the data source "
            f"{type(plan.source).__name__}.sample() gives no targets (RowSample.targets). "
            f"Give learning_rate='constant' and eta0."
        )
    tested = _range_test_source(sample, plan.rng, plan.fit_intercept)
    seed = int(plan.rng.integers(2**63))  # every rate runs the same row orders
    epochs = _range_test_epochs(plan, tested.n_rows, rows)
    constant = options.schedule_by_name("constant")

    def objective_after(rate: float) -> float:
        result = _run(_short_plan(plan, tested, constant, rate, seed, epochs))
        return _sample_objective(plan, tested, result.coef, result.intercept)

    start = _sample_objective(plan, tested, plan.coef, plan.intercept)
    grid = _range_test_grid(tested, plan.loss.classification, plan.fit_intercept)
    # A decade past the lowest objective without a lower one: the step is decided (the
    # lower of the lowest's rate and half an edge above it). Without it AdaGrad, which
    # never blows up, walked all 33 rates: 6.6 minibatch epochs on 200k × 100, 1.8 now.
    test = _range_test.run_range_test(
        objective_after, grid, start, patience=AUTO_RANGE_TEST_RATES_PER_DECADE
    )
    if test.blew_up and test.rates.shape[0] == 1:  # the smallest rate blew up: go below it
        return float(grid[0]) / _range_test.SUGGESTION_DIVISOR
    # The lower of the edge's half and the rate of the lowest objective: a short run
    # favours large steps (it has less time to get far). Measured on the tests' problems
    # (sgd, a noisy regression, 2000 rows): half the edge left 20-45 times the gap of the
    # best constant step, the lower rate 2-3 times.
    chosen = min(test.suggestion, test.lowest_rate)
    # The fit takes more steps than a run of the test: scale the step by the square root of
    # the ratio (the 1/√t of Adam's analysis; a constant step's noise floor grows with it).
    # Measured on tests/test_adaptive_auto.py's kind of problems with 20,000 rows (sgd's
    # fit 50 times the test's steps): the worst gap against the best step of a decade grid
    # fell from 372 to 11 times, the median from 3.3 to 1.6; with 1000 rows (10 times the
    # steps) the worst from 12.8 to 8.1, the median 1.3 to 1.4. The full ratio (the 1/t
    # of strongly convex SGD) over-shrinks: 14,000 times worse at 1000 rows.
    test_steps = epochs * math.ceil(tested.n_rows / min(rows, tested.n_rows))
    fit_steps = plan.max_iter * math.ceil(plan.source.n_rows / rows)
    return chosen * min(1.0, test_steps / fit_steps) ** AUTO_RANGE_TEST_HORIZON_POWER


def _range_test_source(sample: RowSample, rng, fit_intercept: bool) -> _ArraySource:
    """At most ``AUTO_RANGE_TEST_ROWS`` rows of ``sample`` (drawn with ``rng``), with their
    targets and weights, as arrays in memory."""
    X, y, weights = sample.rows, sample.targets, sample.weights
    if X.shape[0] > AUTO_RANGE_TEST_ROWS:
        chosen = np.sort(rng.choice(X.shape[0], AUTO_RANGE_TEST_ROWS, replace=False))
        X, y = X[chosen], y[chosen]
        weights = weights[chosen] if weights.shape[0] else weights
    X = check_csr(X, check_finite=False) if is_sparse(X) else np.ascontiguousarray(X)
    y = np.ascontiguousarray(y, dtype=X.dtype)
    extra = 1.0 if fit_intercept else 0.0
    norm = scan_sparse(X, weights, extra) if is_sparse(X) else scan(X, "X", weights, extra)
    return _ArraySource(X, y, weights, norm)


def _short_plan(plan: _Plan, tested: _ArraySource, constant, rate: float, seed: int,
                epochs: int) -> _Plan:  # fmt: skip
    """The plan of one run of the range test: ``plan`` on the tested rows at the constant
    step ``rate`` for ``AUTO_RANGE_TEST_EPOCHS`` epochs, from copies of its starting
    weights and optimizer state, without averaging, callback or early stopping."""
    slots, row_memory = rule_arrays(plan.rule, tested.n_features, tested.n_rows)
    if plan.slots is not None and plan.slots.shape == slots.shape:
        slots[:] = plan.slots
    return dataclasses.replace(
        plan, source=tested, schedule=constant, eta0=rate, max_iter=epochs,
        tol=None, callback=None, validation_score=None, average_start=0.0,
        average_coef=None, rng=np.random.default_rng(seed), coef=plan.coef.copy(),
        slots=slots, row_memory=row_memory, l1_memory=None,  # its own truncated-L1 state
    )  # fmt: skip


def _sample_objective(plan: _Plan, tested: _ArraySource, coef, intercept: float) -> float:
    """The objective ``(1/Σs)·Σ s·L + penalty`` on the tested rows at ``coef``, ``intercept``."""
    _, total = tested.losses(plan.loss.code, plan.epsilon, coef, intercept)
    weights = tested.sample_weight
    rows = float(weights.sum()) if weights.shape[0] else float(tested.n_rows)
    return total / rows + penalty_value(coef, plan.l1, plan.l2)


def _explosion_scale(plan: _Plan) -> float:
    """The loss scale that divergence is judged against (see ``EXPLOSION_FACTOR``): the
    larger of the objective at the start and that of the all-zero model."""
    source = plan.source
    moved = bool(plan.coef.any() or plan.intercept != 0.0)
    zero, start = source.losses(
        plan.loss.code, plan.epsilon, plan.coef if moved else None, plan.intercept
    )
    zero_model = plan.zero_model_loss = zero / source.n_rows
    if not moved:
        return zero_model
    # 0 for a loss that is 0 at zero weights and at the start (the perceptron): its loss
    # grows with the scale of w by design, so only non-finite values mean divergence.
    return max(zero_model, start / source.n_rows + penalty_value(plan.coef, plan.l1, plan.l2))


class _Loop:
    """The epoch loop's state: the weights, the step size, the loss curve, and the best
    state so far (lowest epoch loss): where a back-off restarts from and what a
    DivergenceError keeps. For sgd/minibatch an epoch's loss belongs to the weights at its
    end; for full batch to those at its start (the objective of the step's pass)."""

    def __init__(self, plan: _Plan, eta: float, scale: float):
        self.plan = plan
        self.eta = self.start_eta = eta
        self.scale = scale
        self.coef, self.intercept, self.t = plan.coef, plan.intercept, plan.t_init
        self.averaging = plan.average_coef is not None
        self.avg_w = plan.average_coef if self.averaging else np.empty(0)
        self.avg_b = np.array([plan.average_intercept]) if self.averaging else np.empty(0)
        self.best = math.inf
        self.best_state = (self.coef.copy(), self.intercept, self.t,
                           (self.avg_w.copy(), self.avg_b.copy()), self._slots())  # fmt: skip
        self.best_score = -math.inf
        self.scores: list[float] = []
        self.history: list[float] = []
        self.backtracks = 0
        self.no_improvement = 0
        self.converged = False
        #: What runs an epoch: the source's (sgd, minibatch, gd), or a full-batch optimizer.
        self.epochs = plan.source

    def step(self, order: EpochOrder) -> bool:
        """One epoch and the rules after it; False once the run is over."""
        plan = self.plan
        start_avg = (self.avg_w.copy(), np.array([self.avg_b[0]])) if self.averaging else None
        start = (self.coef.copy(), self.intercept, self.t, start_avg, self._slots())
        penalty_now = penalty_value(self.coef, plan.l1, plan.l2)
        state = kernel_state(plan, self.coef, self.intercept, self.t, self.avg_w, self.avg_b)
        state, loss_total, bad = self.epochs.epoch(state, kernel_spec(plan, self.eta), order)
        self.intercept, self.t = state.intercept, state.t
        epoch_loss = loss_total / plan.source.n_rows + penalty_now
        score = None
        if plan.validation_score is not None and bad < 0:
            score = float(plan.validation_score(*self.model()))
            improved = plan.tol is None or score >= self.best_score + plan.tol
        else:
            improved = plan.tol is None or epoch_loss <= self.best - plan.tol
        pending = 0 if improved else self.no_improvement + 1
        reason = _divergence(
            plan, epoch_loss, bad >= 0, self.coef, self.intercept, self.scale, self.best,
            self.history, pending if plan.validation_score is None else 0,
        )  # fmt: skip
        if reason is not None:
            self._back_off(reason)
            return True
        self._record(epoch_loss, pending, score, start)
        if getattr(self.epochs, "converged", False):  # lbfgs: its gtol/ftol test met
            self.converged = True
            return False
        return self._go_on(epoch_loss)

    def _back_off(self, reason: str) -> None:
        plan = self.plan
        best_coef, best_intercept, best_t, best_avg, best_slots = self.best_state
        if plan.schedule.name == "auto" and self.backtracks < AUTO_MAX_BACKTRACKS:
            # The derived step is safe for random batches in expectation; an adversarial
            # order or a few rows of extreme leverage can still make it overshoot. Go back
            # to the best state and retry with a smaller step.
            self.coef[:] = best_coef
            self.intercept, self.t = best_intercept, best_t
            self.avg_w[:], self.avg_b[:] = best_avg
            if best_slots is not None:  # the rule's state belongs to the weights it led to
                plan.slots[:], plan.row_memory[:] = best_slots
            if plan.l1_memory is not None:  # the truncated L1 restarts from these weights,
                plan.l1_memory[:] = 0.0  # as in a new call (its q belongs to later weights)
            self.eta /= AUTO_BACKTRACK_DIVISOR
            self.backtracks += 1
            self.no_improvement = 0
            return
        epoch = len(self.history) + 1
        raise DivergenceError(
            f"Training diverged in epoch {epoch}: {reason}, with a step size of "
            f"{self.eta:.3g} (learning_rate={plan.schedule.name!r}). {_advice(plan)}",
            epoch=epoch, coef=best_coef, intercept=best_intercept,
            loss_history=np.array(self.history),
        )  # fmt: skip

    def _record(self, epoch_loss: float, pending: int, score, start) -> None:
        self.history.append(epoch_loss)
        self.no_improvement = pending
        if score is not None:
            self.scores.append(score)
            self.best_score = max(self.best_score, score)
        if epoch_loss < self.best:
            self.best = epoch_loss
            if self.plan.strategy.name == "full":
                start_coef, start_intercept, start_t, start_avg, start_slots = start
                self.best_state = (start_coef, start_intercept, start_t,
                                   start_avg if self.averaging else self.best_state[3],
                                   start_slots)  # fmt: skip
            else:
                averages = (self.avg_w.copy(), self.avg_b.copy())
                self.best_state = (self.coef.copy(), self.intercept, self.t, averages,
                                   self._slots())  # fmt: skip

    def _slots(self) -> tuple[np.ndarray, np.ndarray] | None:
        """A copy of the update rule's state, slots and row memory (None: a rule without)."""
        slots, row_memory = self.plan.slots, self.plan.row_memory
        if slots is None or (not slots.size and not row_memory.size):
            return None
        return slots.copy(), row_memory.copy()

    def _go_on(self, epoch_loss: float) -> bool:
        plan = self.plan
        if plan.callback is not None:
            model_coef, model_intercept = self.model()
            snapshot = model_coef.copy()
            snapshot.flags.writeable = False
            if plan.callback(len(self.history), snapshot, model_intercept, epoch_loss):
                return False
        if plan.tol is not None and self.no_improvement >= plan.n_iter_no_change:
            if plan.schedule.name == "adaptive" and self.eta > ADAPTIVE_MIN_ETA:
                self.eta /= ADAPTIVE_DIVISOR
                self.no_improvement = 0
            else:
                self.converged = True
                return False
        return True

    def model(self) -> tuple[np.ndarray, float]:
        """The model's weights: the running means once averaging has begun (some step
        numbered at least ``average_start`` has run), else the iterate."""
        if self.plan.average_start and self.t - 1.0 >= self.plan.average_start:
            return self.avg_w.astype(self.coef.dtype), float(self.avg_b[0])
        return self.coef, self.intercept

    def result(self) -> FitResult:
        plan, dtype, averaging = self.plan, self.plan.source.dtype, self.averaging
        model_coef, model_intercept = self.model()
        return FitResult(
            coef=model_coef, intercept=dtype.type(model_intercept), n_iter=len(self.history),
            loss_history=np.array(self.history), converged=self.converged,
            learning_rate=self.start_eta, t=self.t, loss=plan.loss.name, classes=plan.classes,
            extras={"final_learning_rate": self.eta, "auto_backtracks": self.backtracks,
                    "zero_model_loss": plan.zero_model_loss, "optimizer": plan.optimizer},
            standard_coef=self.coef if averaging else None,
            standard_intercept=dtype.type(self.intercept) if averaging else None,
            average_coef=self.avg_w if averaging else None,
            average_intercept=float(self.avg_b[0]) if averaging else None,
            validation_scores=np.array(self.scores) if plan.validation_score is not None else None,
            slots=plan.slots,
        )  # fmt: skip


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


def _sparse_epoch(strategy: str, X, y, sw, order, step_rows, spec, state, parallel):
    """One epoch on CSR data (the kernels of ``fastgd._kernels.sparse``)."""
    from ._kernels.sparse import batch_epoch_csr, sgd_epoch_csr

    parts = (X.data, X.indices, X.indptr, y, sw, order)
    if strategy == "sgd":
        return sgd_epoch_csr(*parts, spec, state)
    return batch_epoch_csr(*parts, step_rows, spec, state, parallel)
