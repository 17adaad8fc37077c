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

Policies: the epoch loop here is the engine's, reduced to what k outputs need: the
``auto`` step (the outputs share X, so the single-output bound from the data's curvature
applies to each; softmax's Hessian in the scores is bounded by ½, against ¼ for the binary
log loss), back-off on divergence under ``auto``, ``DivergenceError`` otherwise, stopping on
the summed objective (``tol``, ``n_iter_no_change``; ``adaptive`` divides the step by 5),
averaging, the callback. The update rules: ``optimizer="sgd"`` (``"gd"`` under
``strategy="full"``) on dense and CSR rows; momentum, adagrad, rmsprop, adam, adamw and
saga on dense rows (each output with its own slots: ``MultiFitResult.slots`` has shape
(k, rule.slots, d + 1)), the adaptive ones under a fixed schedule. The others (CSR with an
optimizer, the passive-aggressive schedules, nesterov and lbfgs), ``validation_score`` and
``slots_init`` raise a ``ValueError`` that says so (:data:`SUPPORTED`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import options, parameters
from ._kernels.multi import (
    MULTI_OUTPUT,
    OVR,
    SOFTMAX,
    CsrMultiRows,
    MultiRows,
    MultiState,
    multi_batch_epoch,
    multi_batch_epoch_csr,
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
    "lazy variant of the first five, saga just in time; the adaptive ones with a fixed "
    "schedule: learning_rate='auto' runs no range test for them); schedules auto, "
    "constant, optimal, invscaling, adaptive"
)


def _check_supported(resolved: dict, given: dict, sparse: bool) -> None:
    optimizer, rule = resolved["optimizer"], resolved["rule"]
    plain = rule.name == "sgd" and optimizer in ("sgd", "gd")
    optimizer_rule = optimizer == rule.name and rule.code >= options.UPDATE_MOMENTUM
    if not (plain or optimizer_rule):
        raise ValueError(
            f"optimizer={optimizer!r}, learning_rate={resolved['schedule'].name!r}"
            f"{' on CSR rows' if sparse else ''}: {SUPPORTED}."
        )
    if resolved["schedule"].name == "auto" and rule.name in parameters.RANGE_TESTED_OPTIMIZERS:
        raise ValueError(
            f"optimizer={optimizer!r} with learning_rate='auto': {SUPPORTED}. Give "
            "learning_rate='constant' and eta0."
        )
    for name in ("validation_score", "slots_init"):
        if given.get(name) is not None:
            raise ValueError(f"{name} is not supported with k > 1 outputs.")
    # scikit-learn's ways (fastgd.fit's l1_method, intercept_decay) are single-output kernel
    # options: the k-output kernels take the proximal L1 and the plain intercept step.
    if resolved.get("l1_method", "proximal") != "proximal" and resolved["l1"] > 0.0:
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


def _loss_scale(data: _Data, loss_code: int, epsilon: float) -> float:
    """The summed mean loss of the all-zero model: the yardstick of an explosion."""
    from .reference_multi import row_losses

    names = {0: "ovr", 1: "multi_output", 2: "multinomial"}
    n = data.X.shape[0]
    zeros = np.zeros((n, data.k))
    targets = data.Y if data.mode == MULTI_OUTPUT else data.labels
    loss_name = options.LOSSES[[row.code for row in options.LOSSES].index(loss_code)].name
    values, _ = row_losses(names[data.mode], zeros, targets, loss_name, epsilon)
    s = data.sample_weight if data.sample_weight.size else np.ones(n)
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
    _check_supported(resolved, given, is_sparse(X))
    loss = resolved["loss"]
    multinomial = multiclass == "multinomial"
    data = _data(
        X, y, loss, sample_weight=sample_weight, normalize_weights=normalize_weights,
        classes=classes, multinomial=multinomial, fit_intercept=resolved["fit_intercept"],
    )  # fmt: skip
    _n, d = data.X.shape
    W, b = _starting_weights(data.k, d, data.X.dtype, coef_init, intercept_init)
    epochs = _Epochs(data, resolved, block_rows(data.X))
    eta = resolved["eta0"]
    if resolved["schedule"].name == "auto":
        curved = dataclasses.replace(loss, curvature=SOFTMAX_CURVATURE) if multinomial else loss
        eta = auto_step(data.X, data.sample_weight, curved, epochs.rows_per_step, data.max_row_norm)
    loop = _Loop(data, resolved, W, b, eta, average_coef_init, average_intercept_init)
    while len(loop.history) < resolved["max_iter"] and loop.step(epochs):
        pass
    result = loop.result(multiclass if loss.classification else None)
    result.fit_time = time.perf_counter() - started
    return result


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
        tol = resolved["tol"]
        if tol is None or epoch_loss <= self.best - tol:
            self.no_improvement = 0
        else:
            self.no_improvement += 1
        if epoch_loss < self.best:
            self.best = epoch_loss
            self.best_state = self._snapshot()
        return self._go_on(epoch_loss)

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
        )  # fmt: skip
