r"""k outputs in one pass over X: one-vs-rest, multi-output regression and softmax.

Design
------
The model is a weight matrix ``W`` of shape (k, d), C-order, in X's dtype, and intercepts
``b`` of shape (k,). Each row of X is read once per step and updates all k models
(``fastgd._kernels.multi``): its k scores ``x·W[o] + b[o]`` come from one read of the row,
then each output's loss derivative,

- ``multiclass="ovr"`` (more than two classes): the binary loss on ``±1`` per class;
- a 2-D ``y`` (regression): the regression loss per output;
- ``multiclass="multinomial"`` (``loss="log_loss"``): the softmax cross-entropy, whose
  derivative is ``p_o − [y = o]`` with ``p = softmax(scores)``;

then the plain SGD step of all k rows of ``W`` (penalty and schedule as one output's).
Mini-batches sum their gradients in chunks of rows merged in chunk order, so results do
not depend on the number of threads (threads split rows, never outputs). For ovr and
multi-output, each row of ``W`` is the single-output kernel's model run with the same order
and step (``tests/test_multi_kernels.py`` checks it), and every kernel equals its numpy twin
(``fastgd.reference_multi``).

Policies: the epoch loop here is the engine's, reduced to what k outputs need: the ``auto``
step (the outputs share X, so the single-output bound from the data's curvature applies to
each; softmax's Hessian in the scores is bounded by ½, against ¼ for the binary log loss;
for the adaptive rules, the engine's range test run with the k-output kernels on a sample of
rows), back-off on divergence under ``auto``, ``DivergenceError`` otherwise, stopping on the
summed objective (``tol``, ``n_iter_no_change``; ``adaptive`` divides the step by 5),
averaging, the callback. The update rules: ``optimizer="sgd"`` (``"gd"`` under
``strategy="full"``) on dense and CSR rows; momentum, adagrad, rmsprop, adam, adamw and saga
on dense and CSR rows (each output with its own slots: ``MultiFitResult.slots`` has shape
(k, rule.slots, d + 1); on CSR rows the lazy rules and just-in-time SAGA of one output,
``fastgd._kernels.multi_csr_rules``); under ``strategy="full"`` on dense and CSR rows,
nesterov and lbfgs (``fastgd.full_batch``, one iteration per epoch as for one output, on ``x
= (W.ravel(), b)`` and the gradient of one pass of ``multi_full_gradient[_csr]``; lbfgs's
``tol`` is its ``gtol``, and ``MultiFitResult.extras`` has nesterov's ``restarts`` or
lbfgs's ``evaluations``); ``validation_score`` stops on a held-out score as for one output. The
others (the passive-aggressive schedules) raise a ``ValueError`` that says so
(:data:`SUPPORTED`); ``slots_init`` (k, slots, d + 1) continues an earlier fit's rule.
"""

from __future__ import annotations

import dataclasses
import math
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import _range_test, options, parameters
from ._kernels.multi import (
    MULTI_OUTPUT,
    OVR,
    SOFTMAX,
    CsrMultiRows,
    MultiRows,
    MultiState,
    multi_batch_epoch,
    multi_batch_epoch_csr,
    multi_full_gradient,
    multi_full_gradient_csr,
    multi_rule_batch_epoch,
    multi_rule_sgd_epoch,
    multi_sgd_epoch,
    multi_sgd_epoch_csr,
)
from ._kernels.multi_csr_rules import multi_csr_rule_epoch
from ._kernels.order import fill_epoch_order
from ._kernels.records import make_spec
from ._thresholds import (
    ADAPTIVE_DIVISOR,
    ADAPTIVE_MIN_ETA,
    AUTO_BACKTRACK_DIVISOR,
    AUTO_MAX_BACKTRACKS,
    EXPLOSION_FACTOR,
    parallel_batches,
)
from ._validation import (
    check_csr,
    check_sample_weight,
    check_vector,
    check_X,
    is_sparse,
    scan,
    scan_sparse,
)
from .errors import DivergenceError
from .full_batch import LBFGS, Nesterov, Point
from .prediction import check_input, class_probabilities, decision_values

__all__ = [
    "MULTICLASS",
    "SUPPORTED",
    "MultiFitResult",
    "fit_k_outputs",
    "needs_k_outputs",
    "softmax",
]

#: The values of ``multiclass``.
MULTICLASS = ("ovr", "multinomial")
#: Softmax cross-entropy's curvature bound in the scores (the largest eigenvalue of
#: ``diag(p) − ppᵀ`` is at most ½).
SOFTMAX_CURVATURE = 0.5
#: The kernels' ``mode`` codes by ``fastgd.reference_multi``'s names.
_MODE_NAMES = {OVR: "ovr", MULTI_OUTPUT: "multi_output", SOFTMAX: "multinomial"}
#: The optimizers that step in ``fastgd.full_batch`` on full-batch gradients.
FULL_BATCH_STEPPERS = ("nesterov", "lbfgs")
#: The optimizer rules' scalars, as ``records.Spec`` fields (``engine.OPTIMIZER_SCALARS``).
OPTIMIZER_SCALARS = ("momentum", "nesterov", "beta_1", "beta_2", "rho", "optimizer_epsilon")


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax of decision values (n, k): the multinomial model's probabilities."""
    scores = np.asarray(scores, dtype=np.float64)
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def needs_k_outputs(y, loss: options.Loss, multiclass: str, classes=None) -> bool:
    """Whether a fit of ``y`` trains k > 1 models at once: ``multiclass="multinomial"``,
    more than two classes, or a 2-D ``y`` of several columns for regression. Two classes
    (ovr) and one output keep the single-output path."""
    if multiclass not in MULTICLASS:
        raise ValueError(f"multiclass={multiclass!r} is not supported; allowed: {MULTICLASS}.")
    if multiclass == "multinomial":
        if loss.name != "log_loss":
            raise ValueError(
                f"multiclass='multinomial' is the softmax model of loss='log_loss'; got "
                f"loss={loss.name!r}. Use loss='log_loss' or multiclass='ovr'."
            )
        return True
    shape = np.shape(y)
    if not loss.classification:
        return len(shape) == 2 and shape[1] > 1
    if classes is not None:
        return np.size(classes) > 2
    if len(shape) != 1:
        return False  # the single-output path names what is wrong
    # The single-output path's check of the labels (numbers, finite; its message names the
    # row of a NaN): the classes are counted on what it accepts.
    return np.unique(check_vector(y, "y", shape[0], None)).shape[0] > 2


@dataclass
class MultiFitResult:
    """What ``fastgd.fit`` returns for k > 1 outputs: the fields of ``FitResult``, with
    ``coef`` of shape (k, d) and ``intercept`` of shape (k,); ``classes`` the k labels of a
    classification (None for regression); ``multiclass`` "ovr" or "multinomial" (None for
    regression)."""

    coef: np.ndarray
    intercept: np.ndarray
    n_iter: int
    loss_history: np.ndarray
    converged: bool
    learning_rate: float
    t: float
    loss: str
    classes: np.ndarray | None = None
    multiclass: str | None = None
    fit_time: float = 0.0
    extras: dict = field(default_factory=dict)
    standard_coef: np.ndarray | None = None
    standard_intercept: np.ndarray | None = None
    average_coef: np.ndarray | None = None
    average_intercept: np.ndarray | None = None
    validation_scores: np.ndarray | None = None
    slots: np.ndarray | None = None

    def decision_function(self, X) -> np.ndarray:
        """``X·coefᵀ + intercept``, shape (n, k), in X's dtype."""
        X = check_input(X, self.coef.shape[1])
        return decision_values(X, self.coef, self.intercept)

    def predict(self, X) -> np.ndarray:
        """The class with the largest score (classification) or the (n, k) predictions."""
        scores = self.decision_function(X)
        return scores if self.classes is None else self.classes[scores.argmax(axis=1)]

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (n, k): the softmax (multinomial), or the one-vs-rest
        probabilities normalised to sum to 1 (``log_loss``, ``modified_huber``)."""
        if self.classes is None:
            raise AttributeError("predict_proba needs a classification fit.")
        scores = self.decision_function(X)
        if self.multiclass == "multinomial":
            return softmax(scores)
        return class_probabilities(scores, self.loss)


# ---------------------------------------------------------------------------------------------
# The data.
# ---------------------------------------------------------------------------------------------


@dataclass
class _Data:
    X: object
    Y: np.ndarray  # (n, k) regression targets, else (0, k)
    labels: np.ndarray  # int64 class indices, else empty
    sample_weight: np.ndarray
    classes: np.ndarray | None
    k: int
    mode: int
    max_row_norm: float


def _targets(y, loss: options.Loss, n: int, dtype, given_classes, multinomial: bool):
    """``(Y, labels, classes, k, mode)`` of the targets ``y``."""
    if not loss.classification:
        Y = np.ascontiguousarray(np.asarray(y, dtype=dtype))
        if Y.ndim != 2 or Y.shape[0] != n:
            raise ValueError(f"y must have shape ({n}, k) for k outputs; got {Y.shape}.")
        if not np.isfinite(Y).all():
            row, column = np.argwhere(~np.isfinite(Y))[0]
            raise ValueError(f"y has a non-finite value at row {row}, column {column}.")
        return Y, np.empty(0, np.int64), None, Y.shape[1], MULTI_OUTPUT
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"y must have shape ({n},) for classification; got {y.shape}.")
    classes = np.unique(y) if given_classes is None else np.asarray(given_classes)
    if given_classes is not None and np.unique(classes).shape[0] != classes.shape[0]:
        raise ValueError(f"classes has repeated labels: {classes!r}.")
    sorter = np.argsort(classes, kind="stable")
    positions = np.searchsorted(classes, y, sorter=sorter)
    positions = np.minimum(positions, classes.shape[0] - 1)
    labels = sorter[positions]
    unknown = classes[labels] != y
    if unknown.any():
        row = int(np.argmax(unknown))
        raise ValueError(f"y[{row}] = {y[row]!r} is not one of classes {classes!r}.")
    if classes.shape[0] < 2:
        raise ValueError(f"a classification needs at least two classes; got {classes!r}.")
    mode = SOFTMAX if multinomial else OVR
    k = classes.shape[0]
    return np.empty((0, k), dtype=dtype), labels.astype(np.int64), classes, k, mode


def _data(X, y, loss, *, sample_weight, normalize_weights, classes, multinomial, fit_intercept):
    sparse = is_sparse(X)
    X = check_csr(X, check_finite=False) if sparse else check_X(X, check_finite=False)
    n = X.shape[0]
    Y, labels, classes, k, mode = _targets(y, loss, n, X.dtype, classes, multinomial)
    sw = check_sample_weight(sample_weight, n, normalize=normalize_weights)
    extra = 1.0 if fit_intercept else 0.0
    scan_weights = np.abs(sw) if sw.size and sw.min() < 0.0 else sw
    norm = scan_sparse(X, scan_weights, extra) if sparse else scan(X, "X", scan_weights, extra)
    return _Data(X, Y, labels, sw, classes, k, mode, norm)


# ---------------------------------------------------------------------------------------------
# Refusals: what k outputs do not run.
# ---------------------------------------------------------------------------------------------


#: What runs with k outputs, for the refusals' messages.
SUPPORTED = (
    "with k > 1 outputs (more than two classes, multiclass='multinomial' or a 2-D y) fastgd "
    "runs optimizer='sgd' ('gd' with strategy='full'), momentum (nesterov too), adagrad, "
    "rmsprop, adam, adamw and saga on dense and CSR rows (on CSR, as one output's: the "
    "lazy variant of the first five, saga just in time), and nesterov and lbfgs with "
    "strategy='full' on dense and CSR rows; schedules auto, constant, optimal, invscaling, "
    "adaptive"
)


def _check_supported(resolved: dict, given: dict, sparse: bool, range_test: bool = False) -> None:
    """Refuse what k outputs do not run. ``range_test``: the caller runs ``auto``'s range
    test for the adaptive rules (``fit_k_outputs`` does; ``fastgd.stream_multi``'s blocks do
    not, and would take the curvature bound, wrong for those rules)."""
    optimizer, rule = resolved["optimizer"], resolved["rule"]
    plain = rule.name == "sgd" and optimizer in ("sgd", "gd")
    optimizer_rule = optimizer == rule.name and rule.code >= options.UPDATE_MOMENTUM
    full_batch = optimizer in FULL_BATCH_STEPPERS  # parameters checks lbfgs's loss, penalty
    if not (plain or full_batch or optimizer_rule):
        raise ValueError(
            f"optimizer={optimizer!r}, learning_rate={resolved['schedule'].name!r}"
            f"{' on CSR rows' if sparse else ''}: {SUPPORTED}."
        )
    tested = rule.name in parameters.RANGE_TESTED_OPTIMIZERS
    if resolved["schedule"].name == "auto" and tested and not range_test:
        raise ValueError(
            f"optimizer={optimizer!r} with learning_rate='auto' runs a range test on rows in "
            "memory (fastgd.fit), not here: give learning_rate='constant' and eta0."
        )
    # scikit-learn's ways (fastgd.fit's l1_method, intercept_decay) are single-output kernel
    # options: the k-output kernels take the proximal L1 and the plain intercept step.
    # (resolve_options gives the method's code: comparing it with the name refused every L1)
    proximal = options.L1_PROXIMAL
    if resolved.get("l1_method", proximal) != proximal and resolved["l1"] > 0.0:
        raise ValueError(
            "l1_method='truncated' is not supported with k > 1 outputs: use "
            "l1_method='proximal' (the default)."
        )
    if resolved.get("intercept_decay", 1.0) != 1.0:
        raise ValueError("intercept_decay is not supported with k > 1 outputs: leave it at 1.0.")


# ---------------------------------------------------------------------------------------------
# The loop.
# ---------------------------------------------------------------------------------------------


def _penalty(W: np.ndarray, l1: float, l2: float) -> float:
    wide = W.astype(np.float64).ravel()
    with np.errstate(over="ignore"):
        return float(l1 * np.abs(wide).sum() + 0.5 * l2 * (wide @ wide))


def _spec(resolved: dict, eta: float, loss_code: int):
    return make_spec(
        loss=loss_code, epsilon=resolved["epsilon"], schedule=resolved["schedule"].kernel_code,
        rule=resolved["rule"].code, eta0=eta, power_t=resolved["power_t"],
        alpha=resolved["alpha"], optimal_init=resolved["optimal_init"], l1=resolved["l1"],
        l2=resolved["l2"], fit_intercept=resolved["fit_intercept"],
        average_start=resolved["average_start"],
        **{name: resolved[name] for name in OPTIMIZER_SCALARS},
    )  # fmt: skip


class _Epochs:
    """One epoch of the k-output kernels over the data in a given order."""

    def __init__(self, data: _Data, resolved: dict, block_rows: int):
        self.data = data
        self.strategy = resolved["strategy"].name
        n, d = data.X.shape
        if self.strategy == "full":
            self.rows_per_step = n
        elif self.strategy == "sgd":
            self.rows_per_step = 1
        else:
            self.rows_per_step = min(resolved["batch_size"], n)
        values = data.X.nnz / max(1, n) if is_sparse(data.X) else float(d)
        self.parallel = parallel_batches(self.rows_per_step, values * data.k)
        self.shuffle = resolved["shuffle_mode"]
        self.block_rows = block_rows
        self.rng = resolved["rng"]
        self.order = np.empty(n, np.int64)

    def run(self, spec, state: MultiState):
        data = self.data
        order = np.empty(0, np.int64)
        if self.strategy != "full":
            order = self.order
            fill_epoch_order(order, self.shuffle, self.block_rows, self.rng.integers(2**63))
        # The optimizer rules have kernels of their own (compiled only when used).
        rule = spec.rule >= options.UPDATE_MOMENTUM
        if is_sparse(data.X):
            X = data.X
            rows = CsrMultiRows(X.data, X.indices, X.indptr, data.Y, data.labels,
                                data.sample_weight, order)  # fmt: skip
            if rule:
                batch_size = 0 if self.strategy == "sgd" else self.rows_per_step
                return multi_csr_rule_epoch(rows, data.mode, spec, state, batch_size,
                                            self.parallel)  # fmt: skip
            if self.strategy == "sgd":
                return multi_sgd_epoch_csr(rows, data.mode, spec, state)
            return multi_batch_epoch_csr(rows, data.mode, self.rows_per_step, spec, state)
        rows = MultiRows(data.X, data.Y, data.labels, data.sample_weight, order)
        if self.strategy == "sgd":
            stream = self.block_rows if self.shuffle == options.SHUFFLE_BLOCK else 0
            epoch = multi_rule_sgd_epoch if rule else multi_sgd_epoch
            return epoch(rows, data.mode, spec, state, stream)
        epoch = multi_rule_batch_epoch if rule else multi_batch_epoch
        return epoch(rows, data.mode, self.rows_per_step, spec, state, self.parallel)


class _OutputsPoint(Point):
    """A ``full_batch.Point`` that also carries each output's ``Σ s·L`` (``losses``), the
    loop's per-output record of the epoch."""

    losses: np.ndarray


class _FullBatchEpochs:
    """The epochs of ``optimizer="nesterov"`` or ``"lbfgs"`` for k outputs: one iteration
    of :mod:`fastgd.full_batch` per epoch (as ``engine._FullBatchEpochs`` for one output),
    on the gradient of one pass of ``multi_full_gradient``. ``x`` is ``W.ravel()``, then
    ``b`` when the intercepts are fitted; the objective is the loop's, ``(1/n)·Σ s·Σ_o L_o
    + l1·‖W‖₁ + l2·½‖W‖²``. An epoch returns the data loss at its start, as gd's does."""

    def __init__(self, data: _Data, resolved: dict):
        self.data, self.resolved = data, resolved
        n, d = data.X.shape
        self.rows_per_step = n
        self.size = data.k * d  # the weights' part of x
        self.parallel = parallel_batches(n, float(d) * data.k)
        file_order = np.empty(0, np.int64)
        if is_sparse(data.X):
            X = data.X
            self.rows = CsrMultiRows(X.data, X.indices, X.indptr, data.Y, data.labels,
                                     data.sample_weight, file_order)  # fmt: skip
        else:
            self.rows = MultiRows(data.X, data.Y, data.labels, data.sample_weight, file_order)
        self.converged = False
        self.expected: np.ndarray | None = None  # the x this object last handed out
        optimizer = resolved["optimizer"]
        self.nesterov = Nesterov(self._prox) if optimizer == "nesterov" else None
        gtol = resolved["tol"] if resolved["tol"] is not None else 0.0
        self.lbfgs = LBFGS(self._evaluate, gtol) if optimizer == "lbfgs" else None
        self.spec = None
        self.state: MultiState | None = None

    def extras(self) -> dict:
        """``restarts`` (nesterov's momentum restarts) or ``evaluations`` (lbfgs's
        full-batch passes, line searches included)."""
        if self.nesterov is not None:
            return {"restarts": self.nesterov.restarts}
        return {"evaluations": self.lbfgs.evaluations}

    def _x(self, W: np.ndarray, b: np.ndarray) -> np.ndarray:
        w = W.astype(np.float64).ravel()
        return np.append(w, b) if self.resolved["fit_intercept"] else w

    def _evaluate(self, x: np.ndarray) -> Point:
        resolved, state, data = self.resolved, self.state, self.data
        W = x[: self.size].reshape(state.W.shape).astype(state.W.dtype)
        b = x[self.size :].copy() if resolved["fit_intercept"] else state.b.copy()
        at = state._replace(W=W, b=b, losses=np.zeros(data.k))
        grad = np.empty(W.shape)
        deriv_sums = np.empty(data.k)
        if isinstance(self.rows, CsrMultiRows):
            total, bad = multi_full_gradient_csr(self.rows, data.mode, self.spec, at, grad,
                                                 deriv_sums)  # fmt: skip
        else:
            total, bad = multi_full_gradient(self.rows, data.mode, self.spec, at,
                                             self.parallel, grad, deriv_sums)  # fmt: skip
        n = data.X.shape[0]
        gradient = grad.ravel() / n + resolved["l2"] * x[: self.size]
        if resolved["fit_intercept"]:
            gradient = np.append(gradient, deriv_sums / n)
        value = total / n + _penalty(W, resolved["l1"], resolved["l2"])
        point = _OutputsPoint(value, gradient, total, bad)
        point.losses = at.losses
        return point

    def _prox(self, x: np.ndarray, eta: float) -> np.ndarray:
        """The proximal step of the L1 part (soft thresholding; never the intercepts)."""
        l1, size = self.resolved["l1"], self.size
        if l1 == 0.0:
            return x
        out = x.copy()
        out[:size] = np.sign(x[:size]) * np.maximum(np.abs(x[:size]) - eta * l1, 0.0)
        return out

    def run(self, spec, state: MultiState):
        """One iteration from ``state``'s weights, written back into them; returns the
        kernels' ``(Σ s·L at the start, t, bad)``."""
        self.spec, self.state = spec, state
        x = self._x(state.W, state.b)
        if self.nesterov is not None:
            if self.expected is None or not np.array_equal(x, self.expected):
                self.nesterov.reset()  # a back-off restored an earlier state
            point = self._evaluate(x)
        else:
            point = self.lbfgs.start(x)
        state.losses[:] = point.losses
        if point.bad >= 0 or not math.isfinite(point.value):
            return point.loss_total, state.t, max(point.bad, 0)
        if self.nesterov is not None:
            x_next = self.nesterov.step(x, point, spec.eta0)
        else:
            x_next = self.lbfgs.step()
            self.converged = self.lbfgs.converged
        state.W[:] = x_next[: self.size].reshape(state.W.shape)
        if self.resolved["fit_intercept"]:
            state.b[:] = x_next[self.size :]
        self.expected = self._x(state.W, state.b)
        if self.lbfgs is not None:
            self.lbfgs.x = self.expected.copy()  # as stored (float32 weights round)
        return point.loss_total, state.t + 1.0, -1


def _starting_weights(k, d, dtype, coef_init, intercept_init):
    W = np.zeros((k, d), dtype=dtype)
    if coef_init is not None:
        given = np.asarray(coef_init, dtype=dtype)
        if given.shape != (k, d):
            raise ValueError(f"coef_init has shape {given.shape}; this fit needs ({k}, {d}).")
        W[:] = given
    b = np.zeros(k)
    if intercept_init is not None:
        given = np.asarray(intercept_init, dtype=np.float64).reshape(-1)
        if given.shape != (k,):
            raise ValueError(f"intercept_init has shape {given.shape}; this fit needs ({k},).")
        b[:] = given
    return W, b


def zero_model_loss(loss_name: str, epsilon: float, k: int, mode: int) -> float:
    """The summed loss of one row under the all-zero model, for classes (``OVR``,
    ``SOFTMAX``): every classification loss is a margin loss, so ``L(0, +1) = L(0, -1)``
    for each of the k one-vs-rest problems, and the softmax's is ``log k``: the same for
    every row."""
    from .reference_multi import row_losses

    name = "multinomial" if mode == SOFTMAX else "ovr"
    values, _ = row_losses(name, np.zeros((1, k)), np.zeros(1, np.int64), loss_name, epsilon)
    return float(values.sum())


def _loss_scale(data: _Data, loss_code: int, epsilon: float) -> float:
    """The summed mean loss of the all-zero model: the yardstick of an explosion (for
    classes one row's, :func:`zero_model_loss`, times the mean weight: no pass over the
    rows)."""
    from .reference_multi import row_losses

    n = data.X.shape[0]
    loss_name = options.LOSSES[[row.code for row in options.LOSSES].index(loss_code)].name
    s = data.sample_weight if data.sample_weight.size else np.ones(n)
    if data.mode != MULTI_OUTPUT:
        return zero_model_loss(loss_name, epsilon, data.k, data.mode) * float(s.mean())
    values, _ = row_losses("multi_output", np.zeros((n, data.k)), data.Y, loss_name, epsilon)
    return float(s @ values.sum(axis=1) / n)


def fit_k_outputs(X, y, resolved: dict, *, multiclass: str, auto_step: Callable,
                  block_rows: Callable, sample_weight=None, normalize_weights=True,
                  classes=None, coef_init=None, intercept_init=None, average_coef_init=None,
                  average_intercept_init=None, **given) -> MultiFitResult:  # fmt: skip
    """``fastgd.fit`` for k > 1 outputs (see the module's docstring). ``resolved`` are the
    options as ``engine.resolve_options`` gives them; ``auto_step(X, sample_weight, loss,
    rows_per_step, max_row_norm)`` is the engine's ``auto`` step and ``block_rows(X)`` its
    ``shuffle="block"`` block size; ``given`` the other data arguments of ``fit``."""
    started = time.perf_counter()
    _check_supported(resolved, given, is_sparse(X), range_test=True)
    loss = resolved["loss"]
    multinomial = multiclass == "multinomial"
    data = _data(
        X, y, loss, sample_weight=sample_weight, normalize_weights=normalize_weights,
        classes=classes, multinomial=multinomial, fit_intercept=resolved["fit_intercept"],
    )  # fmt: skip
    _n, d = data.X.shape
    W, b = _starting_weights(data.k, d, data.X.dtype, coef_init, intercept_init)
    full_batch = resolved["optimizer"] in FULL_BATCH_STEPPERS
    if full_batch:
        epochs = _FullBatchEpochs(data, resolved)
    else:
        epochs = _Epochs(data, resolved, block_rows(data.X))
    eta = resolved["eta0"]
    if resolved["schedule"].name == "auto":
        eta = _auto_eta(data, resolved, W, b, epochs.rows_per_step, auto_step, block_rows)
    resolved = {**resolved, "validation_score": given.get("validation_score")}
    loop = _Loop(data, resolved, W, b, eta, average_coef_init, average_intercept_init)
    slots_init = given.get("slots_init")
    # As for one output: an earlier fit's slots (k, slots, d + 1) of the same rule carry on;
    # another shape (another rule or width) starts afresh, and SAGA's belong to other rows.
    if slots_init is not None and not resolved["rule"].row_memory:
        if np.shape(slots_init) == loop.slots.shape:
            loop.slots[:] = slots_init
    while len(loop.history) < resolved["max_iter"] and loop.step(epochs):
        pass
    result = loop.result(multiclass if loss.classification else None)
    if full_batch:
        result.extras.update(epochs.extras())
    result.fit_time = time.perf_counter() - started
    return result


def _auto_eta(data: _Data, resolved: dict, W, b, rows_per_step: int, auto_step: Callable,
              block_rows: Callable) -> float:  # fmt: skip
    """``learning_rate="auto"``'s step, as the engine's for one output: lbfgs keeps
    ``eta0`` (its line searches choose each step), the adaptive rules take a range test
    (:func:`_range_test_step`), the others the engine's bound from the data's curvature
    (``auto_step``; softmax's curvature for the multinomial model)."""
    if resolved["optimizer"] == "lbfgs":
        return resolved["eta0"]
    if resolved["rule"].name in parameters.RANGE_TESTED_OPTIMIZERS:
        return _range_test_step(data, resolved, W, b, rows_per_step, block_rows)
    loss = resolved["loss"]
    if data.mode == SOFTMAX:
        loss = dataclasses.replace(loss, curvature=SOFTMAX_CURVATURE)
    return auto_step(data.X, data.sample_weight, loss, rows_per_step, data.max_row_norm)


# ---------------------------------------------------------------------------------------------
# learning_rate="auto" of the adaptive rules: a range test on a sample.
# ---------------------------------------------------------------------------------------------


def _range_test_step(data: _Data, resolved: dict, W, b, rows_per_step: int,
                     block_rows: Callable) -> float:  # fmt: skip
    """``learning_rate="auto"``'s step for the adaptive rules (``parameters.
    RANGE_TESTED_OPTIMIZERS``) with k outputs: the engine's range test
    (``engine.range_test_step``, its constants, grid and choice) run with the k-output
    kernels. At most ``AUTO_RANGE_TEST_ROWS`` rows are drawn; from copies of the starting
    weights, each rate of the grid runs constant-step epochs of the fit's rule, strategy and
    batch size on them (the same row orders for every rate) until the summed objective on
    the sample blows up (``fastgd._range_test``); a run that diverges counts as blown up.
    The step is the lower of half the edge and the rate of the lowest objective, times
    ``√(test's steps / fit's steps)`` when the fit is longer."""
    rng = resolved["rng"]
    sample = _sample_rows(data, rng, _range_test.AUTO_RANGE_TEST_ROWS)
    seed = int(rng.integers(2**63))  # every rate runs the same row orders
    n_fit, n_sample = data.X.shape[0], sample.X.shape[0]
    budget = types.SimpleNamespace(max_iter=resolved["max_iter"],
                                   source=types.SimpleNamespace(n_rows=n_fit))  # fmt: skip
    epochs = _range_test.auto_test_epochs(budget, n_sample, rows_per_step)
    short = dict(resolved, schedule=options.schedule_by_name("constant"), max_iter=epochs,
                 tol=None, callback=None, average_start=0.0)  # fmt: skip
    scale = _loss_scale(sample, resolved["loss"].code, resolved["epsilon"])

    def objective_after(rate: float) -> float:
        run = dict(short, rng=np.random.default_rng(seed))
        loop = _Loop(sample, run, W.copy(), b.copy(), rate, None, None, scale=scale)
        sample_epochs = _Epochs(sample, run, block_rows(sample.X))
        while len(loop.history) < epochs and loop.step(sample_epochs):
            pass
        return _objective(sample, resolved, loop.W, loop.b)

    targets = sample.Y.ravel() if data.mode == MULTI_OUTPUT else np.empty(0)
    tested = types.SimpleNamespace(X=sample.X, sample_weight=sample.sample_weight, y=targets)
    grid = _range_test.auto_test_grid(tested, data.mode != MULTI_OUTPUT, resolved["fit_intercept"])
    start = _objective(sample, resolved, W, b)
    test = _range_test.run_range_test(
        objective_after, grid, start, patience=_range_test.AUTO_RANGE_TEST_RATES_PER_DECADE
    )
    if test.blew_up and test.rates.shape[0] == 1:  # the smallest rate blew up: go below it
        return float(grid[0]) / _range_test.SUGGESTION_DIVISOR
    chosen = min(test.suggestion, test.lowest_rate)
    test_steps = epochs * math.ceil(n_sample / min(rows_per_step, n_sample))
    fit_steps = resolved["max_iter"] * math.ceil(n_fit / rows_per_step)
    return chosen * min(1.0, test_steps / fit_steps) ** _range_test.AUTO_RANGE_TEST_HORIZON_POWER


def _sample_rows(data: _Data, rng, most: int) -> _Data:
    """At most ``most`` rows of ``data``, drawn with ``rng`` and kept in order."""
    n = data.X.shape[0]
    if n <= most:
        return data
    chosen = np.sort(rng.choice(n, most, replace=False))
    Y = data.Y[chosen] if data.mode == MULTI_OUTPUT else data.Y
    labels = data.labels[chosen] if data.labels.size else data.labels
    weights = data.sample_weight[chosen] if data.sample_weight.size else data.sample_weight
    X = data.X[chosen]
    X = check_csr(X, check_finite=False) if is_sparse(X) else np.ascontiguousarray(X)
    return _Data(X, Y, labels, weights, data.classes, data.k, data.mode, data.max_row_norm)


def _objective(data: _Data, resolved: dict, W, b) -> float:
    """The summed objective ``(1/Σs)·Σ s·Σ_o L_o + penalty`` on ``data`` at ``W``, ``b``
    (as the engine's ``_sample_objective``); ``inf`` where it is not finite."""
    from .reference_multi import row_losses

    with np.errstate(all="ignore"):
        scores = np.asarray(data.X @ W.T, dtype=np.float64) + b
        targets = data.Y if data.mode == MULTI_OUTPUT else data.labels
        values, _ = row_losses(_MODE_NAMES[data.mode], scores, targets,
                               resolved["loss"].name, resolved["epsilon"])  # fmt: skip
        s = data.sample_weight
        total = float(s @ values.sum(axis=1)) if s.size else float(values.sum())
    rows = float(s.sum()) if s.size else float(data.X.shape[0])
    value = total / rows + _penalty(W, resolved["l1"], resolved["l2"])
    return value if math.isfinite(value) else math.inf


class _Loop:
    """The epoch loop for k outputs: the state, the step, the loss curve, the best state."""

    def __init__(self, data, resolved, W, b, eta, average_coef_init, average_intercept_init,
                 scale=None):  # fmt: skip
        self.data, self.resolved = data, resolved
        self.W, self.b = W, b
        self.t = float(resolved["t_init"])
        self.eta = self.start_eta = eta
        self.loss_code = resolved["loss"].code
        k, d = W.shape
        self.averaging = bool(resolved["average_start"])
        self.avg_W = np.zeros((k, d)) if self.averaging else np.empty((0, 0))
        self.avg_b = np.zeros(k) if self.averaging else np.empty(0)
        if self.averaging and average_coef_init is not None:
            self.avg_W[:] = np.asarray(average_coef_init, dtype=np.float64).reshape(k, d)
        if self.averaging and average_intercept_init is not None:
            self.avg_b[:] = np.asarray(average_intercept_init, dtype=np.float64).reshape(k)
        self.losses = np.zeros(k)
        # Each output's update-rule state (records.rule_arrays' shapes, one per output).
        rule = resolved["rule"]
        self.slots = np.zeros((k, rule.slots, d + 1))
        self.row_memory = np.zeros((k, data.X.shape[0] if rule.row_memory else 0))
        # (``scale``: the zero model's loss where the caller knows it, e.g. fit_csv's blocks)
        self.scale = (
            _loss_scale(data, self.loss_code, resolved["epsilon"]) if scale is None else scale
        )
        self.history: list[float] = []
        #: ``validation_score(coef, intercept)`` (higher is better) and its values: with
        #: it, ``tol`` stops on the held-out score instead of the training objective.
        self.validation_score = resolved.get("validation_score")
        self.scores: list[float] = []
        self.best_score = -math.inf
        self.best = math.inf
        self.best_state = self._snapshot()
        self.no_improvement = 0
        self.backtracks = 0
        self.converged = False

    def _snapshot(self):
        return (self.W.copy(), self.b.copy(), self.t, self.avg_W.copy(), self.avg_b.copy(),
                self.slots.copy(), self.row_memory.copy())  # fmt: skip

    def step(self, epochs: _Epochs) -> bool:
        resolved = self.resolved
        # A full batch's loss is that of the weights at the epoch's start (the step's pass),
        # as in the engine's loop: they are the best state when it is the lowest.
        start = self._snapshot() if resolved["strategy"].name == "full" else None
        penalty = _penalty(self.W, resolved["l1"], resolved["l2"])
        state = MultiState(self.W, self.b, self.t, self.avg_W, self.avg_b, self.losses,
                           self.slots, self.row_memory)  # fmt: skip
        total, t, bad = epochs.run(_spec(resolved, self.eta, self.loss_code), state)
        self.t = t
        epoch_loss = total / self.data.X.shape[0] + penalty
        reason = self._divergence(epoch_loss, bad)
        if reason is not None:
            self._back_off(reason)
            return True
        self.history.append(epoch_loss)
        self._count_improvement(epoch_loss)
        if epoch_loss < self.best:
            self.best = epoch_loss
            self.best_state = self._snapshot() if start is None else start
        if getattr(epochs, "converged", False):  # lbfgs: its gtol/ftol test met
            self.converged = True
            return False
        return self._go_on(epoch_loss)

    def _count_improvement(self, epoch_loss: float) -> None:
        """``no_improvement`` after an epoch: on the held-out score when there is one (as
        scikit-learn's early stopping: better than the best by ``tol``), else on the
        training objective."""
        tol = self.resolved["tol"]
        if self.validation_score is not None:
            score = float(self.validation_score(*self.model()))
            self.scores.append(score)
            improved = tol is None or score >= self.best_score + tol
            self.best_score = max(self.best_score, score)
        else:
            improved = tol is None or epoch_loss <= self.best - tol
        self.no_improvement = 0 if improved else self.no_improvement + 1

    def _divergence(self, epoch_loss: float, bad: int) -> str | None:
        if bad >= 0 or not math.isfinite(epoch_loss) or not np.isfinite(self.W).all():
            return "the loss became non-finite"
        checks_all = self.resolved["divergence_checks"] == "all"
        if checks_all and self.scale > 0.0 and epoch_loss > EXPLOSION_FACTOR * self.scale:
            return f"the loss exploded to {epoch_loss:.3g}"
        return None

    def _back_off(self, reason: str) -> None:
        W, b, t, avg_W, avg_b, slots, row_memory = self.best_state
        schedule = self.resolved["schedule"].name
        if schedule == "auto" and self.backtracks < AUTO_MAX_BACKTRACKS:
            self.W[:], self.b[:], self.t = W, b, t
            self.avg_W[:], self.avg_b[:] = avg_W, avg_b
            self.slots[:], self.row_memory[:] = slots, row_memory
            self.eta /= AUTO_BACKTRACK_DIVISOR
            self.backtracks += 1
            self.no_improvement = 0
            return
        epoch = len(self.history) + 1
        raise DivergenceError(
            f"Training diverged in epoch {epoch}: {reason}, with a step size of "
            f"{self.eta:.3g} (learning_rate={schedule!r}). Try learning_rate='auto', a "
            "smaller eta0, or standardising the features.",
            epoch=epoch, coef=W, intercept=b, loss_history=np.array(self.history),
        )  # fmt: skip

    def _go_on(self, epoch_loss: float) -> bool:
        resolved = self.resolved
        callback = resolved["callback"]
        if callback is not None:
            coef, intercept = self.model()
            snapshot = coef.copy()
            snapshot.flags.writeable = False
            if callback(len(self.history), snapshot, intercept.copy(), epoch_loss):
                return False
        if resolved["tol"] is not None and self.no_improvement >= resolved["n_iter_no_change"]:
            if resolved["schedule"].name == "adaptive" and self.eta > ADAPTIVE_MIN_ETA:
                self.eta /= ADAPTIVE_DIVISOR
                self.no_improvement = 0
            else:
                self.converged = True
                return False
        return True

    def model(self):
        start = self.resolved["average_start"]
        if start and self.t - 1.0 >= start:
            return self.avg_W.astype(self.W.dtype), self.avg_b.copy()
        return self.W, self.b

    def result(self, multiclass) -> MultiFitResult:
        dtype = self.W.dtype
        coef, intercept = self.model()
        averaging = self.averaging
        return MultiFitResult(
            coef=coef, intercept=intercept.astype(dtype), n_iter=len(self.history),
            loss_history=np.array(self.history), converged=self.converged,
            learning_rate=self.start_eta, t=self.t, loss=self.resolved["loss"].name,
            classes=self.data.classes, multiclass=multiclass,
            extras={"final_learning_rate": self.eta, "auto_backtracks": self.backtracks,
                    "zero_model_loss": self.scale, "optimizer": self.resolved["optimizer"],
                    "output_losses": self.losses / self.data.X.shape[0]},
            standard_coef=self.W if averaging else None,
            standard_intercept=self.b.astype(dtype) if averaging else None,
            average_coef=self.avg_W if averaging else None,
            average_intercept=self.avg_b.copy() if averaging else None, slots=self.slots,
            validation_scores=None if self.validation_score is None else np.array(self.scores),
        )  # fmt: skip
