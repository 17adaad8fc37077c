"""Training on a Dask cluster: ``fastgd.dask.fit``.

Dask is the engine (scheduler, transport, worker processes, recovery); this module brings no
cluster code of its own. The data stay on the workers: every partition of the input
(``dask.array`` chunked along rows, or a ``dask.dataframe``) is read once, profiled on its
worker (missing cells, the numeric columns' moments, the categorical levels' counts: the one
first pass, :mod:`fastgd._frames`), and encoded there into a block ``(X, y)`` with the
encoding the driver learned from the merged profiles (the CSV side's
:class:`fastgd.io.encoding.Encoding`: ``standardize``, ``missing``, one-hot categories or
``hash_features``): ``X`` is a dense numpy array without categorical columns, else a
canonical CSR matrix (a row stores its numeric values and one entry per categorical
column, however many levels), trained through :mod:`fastgd.sources`' CSR-capable helpers
and, in ``minibatch_mode="average"``, ``fastgd.fit``'s CSR kernels. The blocks stay in
the workers' memory (futures held by the driver) for the whole fit, so nothing is re-read
between steps. Only model-sized
vectors (and the first pass's level counts) cross the network. The returned weights apply
to the raw encoded features (:func:`transform`; :func:`predict` applies both).

The epoch loop is the engine's own (:func:`fastgd.engine.train`); this module supplies it a
data source, :class:`_DaskSource`, a :class:`fastgd.sources.BlockSource` whose blocks are
the partitions: it overrides the hook ``gradient_sums`` to sum on the workers, so the
full-batch and sampled epochs (their steps, loss and divergence) are BlockSource's:

- ``strategy="full"``: each step, one task per partition computes ``(Σ s·L'·x, Σ L, Σ L',
  rows)`` with the fused kernel (``accumulate_gradient``); the sums are reduced as a tree
  (fan-in ``TREE_FAN_IN``, like Spark's ``treeAggregate``) and the driver takes the step
  (``take_step``). Equal to ``fastgd.fit(strategy="full")`` on the concatenated data up to
  the rounding of the partial sums.
- ``strategy="minibatch"`` (or ``"sgd"``) with ``minibatch_mode="average"`` (the default,
  the faster one): each epoch (a "round"), every partition runs one local epoch of
  mini-batch SGD from the current model (``fastgd.fit(max_iter=1)`` on the worker), and the
  driver averages the partitions' models weighted by their rows (parameter mixing,
  Zinkevich et al. 2010). One round trip per epoch.
- ``minibatch_mode="sample"``: each step samples about ``fraction`` of every partition's
  rows (Spark's ``miniBatchFraction``; or ``batch_size`` rows in total), reduces their
  gradient like ``full`` and takes one step; an epoch is ``round(1 / fraction)`` steps. The
  textbook mini-batch SGD, but one round trip per step: slower.

The stochastic update rules (``optimizer=`` momentum with or without ``nesterov``, adagrad,
rmsprop, adam, adamw) run in both mini-batch modes, their per-feature state (the kernels'
``State.slots``: a velocity, a sum or moving mean of squared gradients, Adam's two moments)
carried from round to round:

- ``"sample"``: the driver holds the slots and applies the rule at each step
  (``take_step``), exactly as on the same sampled batches in one process.
- ``"average"``: every partition's local epoch starts from the driver's model *and* slots
  and step counter (``fastgd.fit(slots_init=...)``); the driver averages the returned slots
  with the same row weights as the models, and the counter becomes the largest of the
  partitions'. So the state after a round is the state of the averaged trajectory: a
  velocity (a linear sum of gradients) averages as the gradients do (local SGD with
  momentum, Yu, Jin & Yang 2019), AdaGrad's accumulator by the mean of the partitions'
  increments (Local AdaAlter, Xie et al. 2019), RMSProp's and Adam's moving means as moving
  means of the pooled squared gradients ("Local Adam", which synchronises the model and
  both moments every round: Cheng & Glasgow, ICLR 2025). Adam's bias correction divides by
  ``1 − β^t`` with the largest counter: exact when the partitions take equal local steps;
  with unequal partitions the moments of those that took fewer steps are under-weighted
  by a factor ``(1 − β^{t_k})/(1 − β^{t_max})``, which tends to 1 as ``1/rounds``. SAGA is
  refused: its memory (one derivative per row) would have to live and change on the
  workers, beside the blocks that Dask may recompute.

k > 1 outputs (more than two numeric classes, one-vs-rest, or ``multiclass="multinomial"``'s
softmax; k target columns of a regression: a 2-D ``y``, or a dask DataFrame ``y`` of k
columns) train in ``minibatch_mode="average"``: each round, every partition runs one local
epoch of ``fastgd.fit(X, labels, multiclass=..., classes=<all classes>, coef_init=W,
intercept_init=b, max_iter=1)`` (the k-output kernels, ``fastgd.multi``) and the driver
averages ``W`` (k, d) and ``b`` (k,) weighted by rows; the epoch loop (``auto`` step,
back-off, stopping, callback) is ``fastgd.multi``'s (:class:`_KOutputRounds`). The
stochastic update rules run as for one output: each round starts from the driver's slots
(k, slots, d + 1) and step counter (``slots_init``), and the driver averages the returned
slots with the models' weights. The classes come from the first pass (or ``classes=``).
``strategy="full"``, ``minibatch_mode="sample"``, SAGA and ``auto``'s range test (the
adaptive rules: give ``learning_rate="constant"``) are refused with k outputs, naming what
runs.

A step whose tasks fail because a worker died is retried (``STEP_RETRIES`` attempts): Dask
recomputes lost blocks from the input's graph. The driver's model changes only after a
step's reduction has fully arrived; when the retries run out, :class:`WorkerLostError`
keeps the last good model.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
import types

import numpy as np

try:
    import dask  # noqa: F401 (the extra's check: distributed alone does not say which)
    import distributed
except ImportError as _error:  # pragma: no cover - exercised in a subprocess test
    raise ImportError("fastgd.dask needs the Dask extra: pip install 'fastgd[dask]'") from _error

from . import engine
from ._frames import (
    MISSING_MODES,
    FrameEncoding,
    Layout,
    drop_rows,
    is_text_dtype,
    merge_profiles,
    profile_partition,
    split_partition,
    transform,
)
from ._kernels.multi import OVR, SOFTMAX
from ._kernels.records import make_state
from ._thresholds import AUTO_SAMPLE_ROWS, parallel_batches
from ._validation import check_scalar, is_sparse
from .errors import DivergenceError, WorkerLostError
from .io.encoding import MAX_HASH_BITS
from .multi import SOFTMAX_CURVATURE, _Loop, needs_k_outputs, zero_model_loss
from .multi import _penalty as multi_penalty
from .multi import _starting_weights as multi_starting_weights
from .options import UPDATE_RULES
from .parameters import RANGE_TESTED_OPTIMIZERS, STOCHASTIC_OPTIMIZERS
from .reference_multi import row_losses
from .sources import (
    BlockSource,
    BlockStatistics,
    GradientSums,
    RowSample,
    add_block_gradient,
    block_losses,
    block_statistics,
)
from .stream_multi import fold_scaler

__all__ = [
    "MINIBATCH_MODES",
    "MISSING_MODES",
    "WorkerLostError",
    "fit",
    "predict",
    "transform",
]

#: How the mini-batch strategies run on a cluster (see the module's docstring).
MINIBATCH_MODES = ("average", "sample")
#: Partial sums merged per reduction task (the tree's fan-in).
TREE_FAN_IN = 8
#: Attempts per step when workers are lost, and the pause before a retry (seconds).
STEP_RETRIES = 3
RETRY_PAUSE = 1.0


_FIT_DEFAULTS = engine.fit_defaults(exclude=("validation_score",))


def _lost_errors() -> tuple:
    """The exceptions that mean "a worker went away", as opposed to an error of the data."""
    from concurrent.futures import CancelledError

    from distributed.comm.core import CommClosedError
    from distributed.scheduler import KilledWorker

    errors = [KilledWorker, CommClosedError, CancelledError, OSError, TimeoutError]
    try:
        from distributed.client import FutureCancelledError

        errors.append(FutureCancelledError)
    except ImportError:  # older distributed
        pass
    return tuple(errors)


# ---------------------------------------------------------------------------------------------
# What runs on the workers (plain functions of numpy blocks; pickled by reference).
# ---------------------------------------------------------------------------------------------


def _as_float(values, dtype) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(values, dtype=dtype))


def _encoded_block(part, y_part, index: int, layout: Layout, encoding: FrameEncoding, dtype,
                   outputs: int = 0):  # fmt: skip
    """A partition as ``(X, y)`` in the training space: the rows that train (a target, and
    with ``missing="skip"`` no missing cell), encoded and standardised; ``X`` dense, or CSR
    when there are categorical columns. ``outputs`` > 0: ``y`` is (rows, outputs), the
    targets of a multi-output regression (:func:`_row_targets`)."""
    Y = _target_matrix(y_part, index) if outputs else None
    y_rows = _row_targets(Y) if outputs else y_part
    split = drop_rows(split_partition(part, y_rows, index, layout), encoding.missing)[0]
    X = encoding.encode(split, standardized=True, dtype=dtype)
    return X, np.ascontiguousarray(Y[split.positions] if outputs else split.y)


def _profile_partition(part, y_part, index: int, layout: Layout, missing: str, outputs: int):
    """:func:`fastgd._frames.profile_partition`, for k target columns too."""
    y_rows = _row_targets(_target_matrix(y_part, index)) if outputs else y_part
    return profile_partition(part, y_rows, index, layout, missing)


def _target_matrix(y_part, index: int) -> np.ndarray:
    """A partition's k target columns (a pandas DataFrame or an array chunk) as floats."""
    try:
        if hasattr(y_part, "to_numpy"):
            return y_part.to_numpy(dtype=np.float64, na_value=np.nan)
        return np.asarray(y_part, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"partition {index}: the target columns of a multi-output regression must hold "
            f"numbers ({error})."
        ) from None


def _row_targets(Y: np.ndarray) -> np.ndarray:
    """A stand-in for k target columns in :mod:`fastgd._frames`' one-target row filters:
    the row's position, NaN where one of its targets is missing (the row is dropped, as a
    row with a missing target); the kept rows' positions then pick their targets."""
    return np.where(np.isnan(Y).any(axis=1), np.nan, np.arange(Y.shape[0], dtype=np.float64))


def _block_stats(block, fit_intercept: bool, loss, epsilon: float) -> BlockStatistics:
    """The first pass's summary of a block (:func:`fastgd.sources.block_statistics`); for k
    target columns, the zero model's loss is summed over them and any non-finite target is
    found."""
    X, y = block
    if y.ndim == 1:
        return block_statistics(X, y, fit_intercept=fit_intercept, loss=loss, epsilon=epsilon)
    first = block_statistics(X, y[:, 0], fit_intercept=fit_intercept, loss=loss,
                             epsilon=epsilon)  # fmt: skip
    finite = np.isfinite(y).all(axis=1)
    if not finite.all():
        bad = first.bad or (int(np.argmin(finite)), "y")
        return first._replace(bad=bad, zero_loss=math.inf)
    values, _ = row_losses("multi_output", np.zeros(y.shape), y, loss.name, epsilon)
    return first._replace(zero_loss=float(values.sum()))


def _signed_block(block, classes, dtype):
    X, y = block
    return X, np.where(y == classes[1], 1.0, -1.0).astype(dtype)


def _float_block(block, dtype):
    X, y = block
    return X, _as_float(y, dtype)


def _sample_rows(block, count: int, seed: int) -> tuple:
    """``count`` random rows of a block in float64 (dense, or CSR) and their targets."""
    X, y = block  # y: ±1 for classification already (_signed_block)
    rows = np.sort(np.random.default_rng(seed).choice(X.shape[0], count, replace=False))
    sample = X[rows].astype(np.float64) if is_sparse(X) else np.asarray(X[rows], dtype=np.float64)
    return sample, np.asarray(y[rows], dtype=np.float64)


def _block_losses(block, coef, intercept, loss_code, epsilon):
    """``Σ L`` at the zero model and at the start model
    (:func:`fastgd.sources.block_losses`)."""
    X, y = block
    return block_losses(X, y, loss_code, epsilon, coef, intercept)


def _block_gradient(block, coef, intercept, spec, fraction, seed):
    """``(Σ L'·x, Σ L, Σ L', rows)`` over the block (or a random ``fraction`` of its rows;
    :func:`fastgd.sources.add_block_gradient`)."""
    X, y = block
    grad = np.zeros(X.shape[1])
    state = make_state(coef, intercept, 1.0)
    parallel = parallel_batches(X.shape[0], X.shape[1])
    total, deriv, rows = add_block_gradient(X, y, spec, state, grad, parallel, fraction, seed)
    return grad, total, deriv, rows


def _add_sums(*parts):
    """Merge partial sums in the given order (deterministic)."""
    grad = parts[0][0].copy()
    total, deriv, rows = parts[0][1], parts[0][2], parts[0][3]
    for part in parts[1:]:
        grad += part[0]
        total += part[1]
        deriv += part[2]
        rows += part[3]
    return grad, total, deriv, rows


def _local_fit(block, coef, intercept, t, slots, local_options, seed):
    """One local epoch of ``fastgd.fit`` on a partition from the given model, rule slots
    and step counter (one output or k); None when it diverged."""
    X, y = block
    from .engine import fit

    try:
        return fit(
            X, y, coef_init=coef, intercept_init=intercept, t_init=t, slots_init=slots,
            random_state=seed, max_iter=1, tol=None, **local_options,
        )  # fmt: skip
    except DivergenceError:
        return None


def _local_epoch(block, coef, intercept, t, slots, local_options, seed):
    """One local epoch from the given model and update-rule slots (``fastgd.fit(max_iter=1,
    slots_init=slots)``); returns ``(coef, intercept, Σ L, rows, t after, diverged, slots
    after)``."""
    X, _ = block
    result = _local_fit(block, coef, intercept, t, slots, local_options, seed)
    if result is None:
        return coef, intercept, math.inf, X.shape[0], t, True, slots
    # loss_history[0] is the mean row loss of the epoch plus the penalty at its start (the
    # driver takes the penalty off once).
    loss_total = float(result.loss_history[0]) * X.shape[0]
    return (result.coef, float(result.intercept), loss_total, X.shape[0], result.t, False,
            result.slots)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The engine's data source.
# ---------------------------------------------------------------------------------------------


class _DaskSource(BlockSource):
    """The engine's data source for blocks persisted on Dask workers: a
    :class:`fastgd.sources.BlockSource` whose blocks never come to the driver. It overrides
    the gradient-sums hook (one task per block, a tree reduction, retries when workers are
    lost) and the statistics; ``minibatch_mode="average"`` runs its own epoch."""

    def __init__(self, client, futures: list, rows: list[int], summary: BlockStatistics,
                 dtype, d: int, *, fit_intercept: bool, mode: str, fraction: float,
                 local_options: dict):  # fmt: skip
        super().__init__(
            sum(rows), d, dtype, fit_intercept=fit_intercept, block_rows=max(rows),
            sample_fraction=fraction if mode == "sample" else None,
            values_per_row=summary.values / max(summary.rows, 1),
        )  # fmt: skip
        self.client = client
        self.futures = futures
        self.partition_rows = rows
        self.summary = summary
        self.mode = mode
        self.local_options = local_options
        self.retries = 0
        self.step_seconds: list[float] = []

    def block_count(self) -> int:
        return len(self.futures)

    # -- failure handling
    def _gather(self, submit, step: int, coef, intercept):
        """Submit a step's tasks (``submit()`` returns one future) and wait for the result,
        retrying when workers are lost. Nothing of the driver's model changes here."""
        lost = _lost_errors()
        last = None
        for attempt in range(STEP_RETRIES):
            try:
                return submit().result()
            except lost as error:
                last = error
                self.retries += 1
                if attempt + 1 < STEP_RETRIES:
                    time.sleep(RETRY_PAUSE)
        raise WorkerLostError(
            f"Step {step} failed {STEP_RETRIES} times because Dask workers were lost "
            f"({type(last).__name__}: {last}). The model before step {step} is kept on this "
            "error (coef, intercept); check the workers' memory and logs, then continue with "
            "coef_init/intercept_init.",
            step=step, coef=np.array(coef, copy=True),
            intercept=np.array(intercept, copy=True) if np.ndim(intercept) else float(intercept),
        )  # fmt: skip

    def _tree(self, futures):
        """Reduce partial sums as a tree of ``TREE_FAN_IN``-way merges on the workers."""
        while len(futures) > 1:
            futures = [
                self.client.submit(_add_sums, *futures[i : i + TREE_FAN_IN], pure=False)
                for i in range(0, len(futures), TREE_FAN_IN)
            ]
        return futures[0]

    def _submit_each(self, function, *arguments, seeds=None):
        """One task per block: ``function(block, *arguments[, seed])``."""
        tails = [()] * len(self.futures) if seeds is None else [(int(seed),) for seed in seeds]
        return [
            self.client.submit(function, block, *arguments, *tail, pure=False)
            for block, tail in zip(self.futures, tails, strict=True)
        ]

    # -- the hook of BlockSource's full-batch and sampled epochs
    def gradient_sums(self, state, spec, order, fraction=1.0) -> GradientSums:
        """Each block's sums on its worker, reduced as a tree (:meth:`_tree`); a step whose
        workers are lost is submitted again (:meth:`_gather`)."""
        count = len(self.futures)
        seeds = order.rng.integers(2**63, size=count) if fraction < 1.0 else np.zeros(count)
        coef, intercept = state.w, state.intercept

        def submit():
            parts = self._submit_each(_block_gradient, coef, intercept, spec, fraction,
                                      seeds=seeds)  # fmt: skip
            return self._tree(parts)

        grad, total, deriv, rows = self._gather(submit, self.epochs_run + 1, coef, intercept)
        return GradientSums(grad, total, deriv, rows, -1 if math.isfinite(total) else 0)

    # -- what the engine asks before the first epoch
    def max_row_norm(self) -> float:
        return self.summary.max_row_norm

    def sample(self, rng) -> RowSample:
        counts = np.asarray(self.partition_rows, dtype=np.int64)
        if self.n_rows > AUTO_SAMPLE_ROWS:
            counts = rng.multivariate_hypergeometric(counts, AUTO_SAMPLE_ROWS)
        seeds = rng.integers(2**63, size=len(self.futures))
        futures = [
            self.client.submit(_sample_rows, block, int(count), int(seed), pure=False)
            for block, count, seed in zip(self.futures, counts, seeds, strict=True)
            if count > 0
        ]
        parts = self.client.gather(futures)
        if is_sparse(parts[0][0]):
            import scipy.sparse

            sample = scipy.sparse.vstack([rows for rows, _ in parts], format="csr")
        else:
            sample = np.concatenate([rows for rows, _ in parts])
        targets = np.concatenate([y for _, y in parts]).astype(self.dtype)
        return RowSample(sample.astype(self.dtype), np.empty(0), targets=targets)

    def losses(self, loss: int, epsilon: float, coef, intercept: float) -> tuple[float, float]:
        if coef is None:  # the zero model's loss came from the first pass
            return self.summary.zero_loss, self.summary.zero_loss
        parts = self.client.gather(
            self._submit_each(_block_losses, coef, float(intercept), loss, epsilon)
        )
        return sum(part[0] for part in parts), sum(part[1] for part in parts)

    # -- one epoch
    def epoch(self, state, spec, order):
        """BlockSource's epoch (full batch, sampled mini-batches), or a round of parameter
        mixing (``minibatch_mode="average"``); timed for ``extras["dask"]``."""
        started = time.perf_counter()
        if order.strategy == "full" or self.mode == "sample":
            result = super().epoch(state, spec, order)
        else:
            result = self._average_epoch(state, spec, order, self.epochs_run + 1)
            if result[2] < 0:
                self.epochs_run += 1
        self.step_seconds.append(time.perf_counter() - started)
        return result

    def _average_epoch(self, state, spec, order, step):
        seeds = order.rng.integers(2**63, size=len(self.futures))
        local = dict(self.local_options)
        local["eta0"] = spec.eta0
        coef, intercept, t = state.w, state.intercept, state.t
        start_coef = np.array(coef, copy=True)
        start_slots = np.array(state.slots, copy=True)

        def submit():
            parts = self._submit_each(_local_epoch, start_coef, float(intercept), t,
                                      start_slots, local, seeds=seeds)  # fmt: skip
            return self.client.submit(_collect, *parts, pure=False)

        parts = self._gather(submit, step, coef, intercept)
        if any(part[5] for part in parts):
            return state, math.inf, 0
        weights = np.array([part[3] for part in parts], dtype=np.float64)
        weights /= weights.sum()
        new_intercept = float(sum(w * part[1] for w, part in zip(weights, parts, strict=True)))
        loss_total = float(sum(part[2] for part in parts))
        loss_total -= engine.penalty_value(start_coef, spec.l1, spec.l2) * self.n_rows
        coef[:] = _mix(weights, [part[0] for part in parts]).astype(coef.dtype)
        if state.slots.size:  # in place: the engine's copy (plan.slots) is this array
            state.slots[:] = _mix(weights, [part[6] for part in parts])
        t_after = float(max(part[4] for part in parts))
        return state._replace(intercept=new_intercept, t=t_after), loss_total, -1


class _KOutputRounds:
    """Rounds of parameter mixing for k outputs: the ``run(spec, state)`` that
    :class:`fastgd.multi._Loop` (the k-output epoch loop: step size, back-off, stopping,
    callback) calls once per epoch. Each partition runs one local epoch of
    ``fastgd.fit(..., multiclass=...)`` from the driver's ``W`` (k, d) and ``b`` (k,); the
    driver averages them weighted by rows, as the single-output rounds do."""

    def __init__(self, source: _DaskSource, local_options: dict, rng):
        self.source = source
        self.local_options = local_options
        self.rng = rng
        self.epochs_run = 0

    def run(self, spec, state):
        started = time.perf_counter()
        source = self.source
        seeds = self.rng.integers(2**63, size=source.block_count())
        local = dict(self.local_options, eta0=spec.eta0)
        start_W = np.array(state.W, copy=True)
        start_b = np.array(state.b, dtype=np.float64, copy=True)
        start_slots = np.array(state.slots, copy=True) if state.slots.size else None

        def submit():
            parts = source._submit_each(_local_k_epoch, start_W, start_b, state.t,
                                        start_slots, local, seeds=seeds)  # fmt: skip
            return source.client.submit(_collect, *parts, pure=False)

        parts = source._gather(submit, self.epochs_run + 1, start_W, start_b)
        source.step_seconds.append(time.perf_counter() - started)
        if any(part[5] for part in parts):
            return math.inf, state.t, 0
        weights = np.array([part[3] for part in parts], dtype=np.float64)
        weights /= weights.sum()
        state.W[:] = _mix(weights, [part[0] for part in parts]).astype(state.W.dtype)
        state.b[:] = _mix(weights, [part[1] for part in parts])
        state.losses[:] = _mix(np.ones(len(parts)), [part[6] for part in parts])
        if state.slots.size:  # the rule's state of the averaged trajectory (see above)
            state.slots[:] = _mix(weights, [part[7] for part in parts])
        # Each local loss_history[0] holds the penalty at the round's start once per row:
        # the loop adds it back once.
        loss_total = float(sum(part[2] for part in parts))
        loss_total -= multi_penalty(start_W, spec.l1, spec.l2) * source.n_rows
        self.epochs_run += 1
        return loss_total, float(max(part[4] for part in parts)), -1


def _local_k_epoch(block, coef, intercept, t, slots, local_options, seed):
    """One local epoch of k outputs (``fastgd.fit(max_iter=1, multiclass=...)``) from the
    given model and rule slots; returns ``(W, b, Σ L, rows, t after, diverged, each
    output's Σ L, slots after)``."""
    rows = block[0].shape[0]
    result = _local_fit(block, coef, intercept, t, slots, local_options, seed)
    if result is None:
        return coef, intercept, math.inf, rows, t, True, np.zeros(coef.shape[0]), slots
    loss_total = float(result.loss_history[0]) * rows
    return (result.coef, np.asarray(result.intercept, dtype=np.float64), loss_total, rows,
            result.t, False, result.extras["output_losses"] * rows, result.slots)  # fmt: skip


def _mix(weights: np.ndarray, arrays: list) -> np.ndarray:
    """``Σ weight·array`` in float64, in the partitions' order (deterministic)."""
    mixed = np.zeros(np.shape(arrays[0]))
    for weight, array in zip(weights, arrays, strict=True):
        mixed += weight * np.asarray(array, dtype=np.float64)
    return mixed


def _collect(*parts):
    return list(parts)


# ---------------------------------------------------------------------------------------------
# The public function.
# ---------------------------------------------------------------------------------------------


def _client(client):
    if client is not None:
        return client
    try:
        return distributed.get_client()
    except ValueError:
        raise ValueError(
            "fastgd.dask.fit needs a Dask distributed Client: create one first, e.g. "
            "distributed.Client() for a local cluster or Client('tcp://scheduler:8786') for a "
            "real one, or pass client=."
        ) from None


def _frame_columns(X, y, target, features):
    """A dataframe's column names, the target's name (None: y given) and the features."""
    import dask.dataframe as dd

    expected = [str(name) for name in X.columns]
    if y is None:
        if target is None:
            raise ValueError("give y or target=: the name of the target column.")
        if str(target) not in expected:
            raise ValueError(f"target={target!r} is not a column; columns: {expected}.")
        target = str(target)
    elif target is not None:
        raise ValueError("give y or target=, not both.")
    elif not isinstance(y, (dd.Series, dd.DataFrame)):
        raise TypeError("with a dask DataFrame X, y must be a dask Series (or use target=).")
    if features is None:
        features = [name for name in expected if name != target]
    else:
        features = [str(name) for name in features]
        unknown = [name for name in features if name not in expected]
        if unknown:
            raise ValueError(f"features {unknown} are not columns; columns: {expected}.")
        if target in features:
            raise ValueError(f"target={target!r} is also among features=; give it once.")
    if not features:
        raise ValueError("no feature columns: the dataframe holds only the target.")
    return expected, target, features


def _categorical_columns(dtypes: dict, features: list, categorical) -> list:
    """The features encoded as categories: the text ones (object, string, category dtypes)
    and those named by ``categorical``; ``categorical=False``: none (text is an error)."""
    text = [name for name in features if is_text_dtype(dtypes[name])]
    if categorical is False:
        if text:
            listed = ", ".join(f"{name!r} ({dtypes[name]})" for name in text)
            raise ValueError(
                f"feature columns {listed} hold text, and categorical=False turns their "
                "encoding off. Leave categorical at None (text columns are one-hot encoded) "
                "or leave these columns out with features=."
            )
        named = []
    elif categorical is None:
        named = []
    else:
        named = (
            [str(categorical)] if isinstance(categorical, str) else [str(c) for c in categorical]
        )
        unknown = [name for name in named if name not in features]
        if unknown:
            raise ValueError(
                f"categorical={unknown} are not feature columns; features: {features}."
            )
    chosen = [name for name in features if name in named or name in text]
    _check_feature_dtypes(dtypes, [name for name in features if name not in chosen])
    return chosen


def _check_feature_dtypes(dtypes: dict, numeric: list) -> None:
    """Refuse numeric features that are not numbers (dates, durations, ...): read as
    numbers they would be nanoseconds, silently."""
    import pandas as pd

    other = [
        name for name in numeric
        if not (pd.api.types.is_numeric_dtype(dtypes[name])
                or pd.api.types.is_bool_dtype(dtypes[name]))
    ]  # fmt: skip
    if other:
        listed = ", ".join(f"{name!r} ({dtypes[name]})" for name in other)
        raise ValueError(
            f"feature columns {listed} are neither numbers nor text; convert them first (e.g. "
            "a date to its hour or day of week), name them in categorical= to one-hot their "
            "values, or leave them out with features=."
        )


def _check_target_dtype(dtype, name: str, numeric_target: bool, loss_name: str) -> None:
    if numeric_target and is_text_dtype(dtype):
        raise ValueError(
            f"the target {name} holds text ({dtype}) but loss={loss_name!r} is a regression "
            "loss; use a classification loss (e.g. loss='log_loss' or 'hinge') for labels."
        )


def _frame_input(X, y, target, features, categorical, loss):
    """A dataframe's partitions (delayed), its targets' partitions (None: a column), the
    :class:`Layout` of its columns and the target columns' names (None: one target)."""
    import dask.dataframe as dd

    expected, target, features = _frame_columns(X, y, target, features)
    dtypes = dict(zip(expected, X.dtypes, strict=True))
    numeric_target = not loss.classification
    outputs = None
    if target is not None:
        _check_target_dtype(dtypes[target], repr(target), numeric_target, loss.name)
    elif isinstance(y, dd.DataFrame) and len(y.columns) > 1:
        outputs = [str(name) for name in y.columns]
        _check_outputs(outputs, loss)
        for name, dtype in zip(outputs, y.dtypes, strict=True):
            _check_target_dtype(dtype, repr(name), numeric_target, loss.name)
    else:
        _check_target_dtype(getattr(y, "dtype", None), "y", numeric_target, loss.name)
    parts = X.to_delayed()
    y_parts = None
    if y is not None:
        y_parts = y.to_delayed()
        if len(y_parts) != len(parts):
            raise ValueError(
                f"X has {len(parts)} partitions but y has {len(y_parts)}; give both the "
                "same partitions (or use target=)."
            )
    layout = Layout(
        features=tuple(features), target=target, columns=tuple(expected),
        categorical=tuple(_categorical_columns(dtypes, features, categorical)),
        numeric_target=numeric_target,
    )  # fmt: skip
    return parts, y_parts, layout, outputs


def _check_outputs(outputs: list, loss) -> None:
    """k target columns are a multi-output regression: a classification loss takes one."""
    if loss.classification:
        raise ValueError(
            f"y has {len(outputs)} target columns {outputs[:10]} (a multi-output regression), "
            f"but loss={loss.name!r} is a classification loss, which takes one column of "
            "labels; give one label column, or a regression loss (e.g. 'squared_error')."
        )


def _array_input(X, y, target, features, categorical, loss):
    """A dask array's chunks of whole rows (delayed), y's, and their :class:`Layout`."""
    import dask.array as da

    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (rows, features); got {X.ndim} dimensions.")
    if target is not None or features is not None or categorical not in (None, False):
        raise ValueError("target=, features= and categorical= are for dask dataframes.")
    if y is None:
        raise ValueError("y is required with a dask array X.")
    X = X.rechunk({1: -1})  # whole rows per partition
    if not isinstance(y, da.Array):
        y = np.asarray(y)
        y = da.from_array(y, chunks=(X.chunks[0], *((size,) for size in y.shape[1:])))
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]}.")
    outputs = None
    if y.ndim > 2:
        raise ValueError(f"y must be 1-D, or 2-D (rows, targets); got shape {y.shape}.")
    if y.ndim == 2 and y.shape[1] > 1:
        outputs = [f"y{j}" for j in range(y.shape[1])]
        _check_outputs(outputs, loss)
        y = y.rechunk((X.chunks[0], -1))
    else:
        y = y.reshape(-1).rechunk((X.chunks[0],))
    layout = Layout(
        features=tuple(f"x{j}" for j in range(X.shape[1])), categorical=(), target=None,
        columns=None, numeric_target=not loss.classification,
    )  # fmt: skip
    return list(X.to_delayed().reshape(-1)), list(y.to_delayed().reshape(-1)), layout, outputs


def _inputs(X, y, target, features, categorical, loss):
    """The partitions of X and y (delayed), the :class:`Layout` of their columns and the
    names of k target columns (None: one target)."""
    import dask.array as da
    import dask.dataframe as dd

    if isinstance(X, dd.DataFrame):
        return _frame_input(X, y, target, features, categorical, loss)
    if isinstance(X, da.Array):
        return _array_input(X, y, target, features, categorical, loss)
    raise TypeError(
        "fastgd.dask.fit takes a dask.array.Array or a dask.dataframe.DataFrame; got "
        f"{type(X).__name__} (use fastgd.fit for data in memory)."
    )


def _check_encoding_options(missing, max_categories, hash_features) -> int | None:
    """Check the encoding options; returns ``hash_features`` as an int (or None)."""
    if missing not in MISSING_MODES:
        raise ValueError(f"missing={missing!r}; allowed values: {list(MISSING_MODES)}.")
    if isinstance(max_categories, bool) or not isinstance(max_categories, (int, np.integer)):
        raise TypeError(f"max_categories must be an integer >= 2; got {max_categories!r}.")
    if max_categories < 2:
        raise ValueError(f"max_categories must be >= 2; got {max_categories}.")
    if hash_features is None:
        return None
    return int(check_scalar(hash_features, "hash_features", kind="int", low=1, high=MAX_HASH_BITS))


def _check_csr_rule(layout: Layout, resolved: dict, mode: str) -> None:
    """Categorical columns make CSR blocks; in ``minibatch_mode="average"`` each partition's
    epoch runs ``fastgd.fit``'s CSR kernels, which some update rules lack (the full-batch and
    sampled steps are taken on the driver, on the dense model, for every rule)."""
    rule = resolved["rule"]
    if not layout.categorical or mode != "average" or rule.sparse:
        return
    working = [r.name for r in UPDATE_RULES if r.sparse]
    raise ValueError(
        f"the categorical columns {list(layout.categorical)} make sparse (CSR) blocks, and "
        f"the update rule {rule.name!r} has no CSR kernel for minibatch_mode='average'; use "
        f"an optimizer in {working} (learning_rate not pa1/pa2), or minibatch_mode='sample' "
        "or strategy='full'."
    )


def _first_pass(client, x_parts, y_parts, layout: Layout, *, missing, standardize,
                max_categories, hash_bits, dtype, outputs):  # fmt: skip
    """Read each partition once (kept on the workers), profile it there, learn the encoding
    on the driver from the merged profiles, and encode every partition on its worker.
    Returns the encoded blocks (futures), the encoding and the merged profile."""
    raw = client.compute(x_parts)
    raw_y = client.compute(y_parts) if y_parts is not None else [None] * len(raw)
    profiles = client.gather([
        client.submit(_profile_partition, part, y_part, index, layout, missing, len(outputs or ()),
                      pure=False)
        for index, (part, y_part) in enumerate(zip(raw, raw_y, strict=True))
    ])  # fmt: skip
    profile = merge_profiles(profiles)
    encoding = FrameEncoding.learn(
        profile, layout, standardize=standardize, missing=missing,
        max_categories=max_categories, hash_bits=hash_bits,
    )  # fmt: skip
    encoded = [
        client.submit(
            _encoded_block,
            part,
            y_part,
            index,
            layout,
            encoding,
            dtype,
            len(outputs or ()),
            pure=False,
        )
        for index, (part, y_part) in enumerate(zip(raw, raw_y, strict=True))
    ]
    return encoded, encoding, profile


def fit(
    X,
    y=None,
    *,
    strategy: str = "minibatch",
    minibatch_mode: str = "average",
    fraction: float | None = None,
    target=None,
    features=None,
    client=None,
    dtype=None,
    coef_init=None,
    intercept_init=None,
    classes=None,
    standardize: bool = True,
    missing: str = "impute",
    max_categories: int = 1000,
    categorical=None,
    hash_features=None,
    **fit_options,
) -> engine.FitResult:
    """Fit a linear model to data partitioned over a Dask cluster (see the module's
    docstring for how each strategy runs).

    Parameters
    ----------
    X : dask.array.Array or dask.dataframe.DataFrame
        A dask array of shape (n_samples, n_features) (partitions are its chunks of rows;
        chunks along columns are merged), or a dask dataframe, e.g. from
        ``dask.dataframe.read_csv("data-*.csv")`` (partitions: its partitions).
    y : dask array/Series/DataFrame, numpy array, or None
        The targets, partitioned like X; None with ``target=``. 2-D (or a DataFrame of k
        columns): k regression targets (a row missing one of them is dropped).
    strategy : {"minibatch", "sgd", "full"}
        ``"full"``: one exact gradient step per epoch, reduced over the cluster.
        ``"minibatch"``/``"sgd"``: see ``minibatch_mode``.
    minibatch_mode : {"average", "sample"}
        ``"average"`` (default, faster): each epoch, every partition runs one local epoch
        of mini-batch (``batch_size``) or per-row SGD from the current model, and the
        models are averaged, weighted by rows (parameter mixing). ``"sample"``: each step
        uses the gradient of a random ``fraction`` of every partition's rows (default:
        ``batch_size`` rows in total); one round trip per step. Both run every stochastic
        ``optimizer`` but saga, its state carried between rounds (in ``"average"``: averaged
        with the models; see the module's docstring).
    fraction : float in (0, 1], optional
        For ``minibatch_mode="sample"``: the share of each partition's rows per step.
    target, features :
        For a dataframe: the target column's name, and the feature columns (default: all
        the others).
    client : distributed.Client, optional
        Default: the current client (``distributed.get_client()``).
    dtype : {"float64", "float32"}, optional
        Of the blocks and the model (default: X's dtype if float32/float64, else float64).
    coef_init, intercept_init, classes :
        As for :func:`fastgd.fit` (``coef_init`` in the raw space of the encoded features,
        as the returned ``coef``; (k, d) and (k,) for k outputs). ``classes``: the labels
        (numbers for more than two), covering y's; more than two train k outputs.
    standardize : bool, default True
        Centre and scale the numeric features with means and standard deviations from the
        first pass (as ``fit_csv``): unscaled real tables otherwise train useless models.
        The returned ``coef``/``intercept`` apply to the raw (encoded) features, the scaler
        folded in; ``extras["scaler"]`` holds the means and scales, and
        ``extras["standardized_coef"]``/``["standardized_intercept"]`` the model trained.
    missing : {"impute", "skip", "error"}, default "impute"
        A missing feature cell (NaN, None, NA): ``"impute"`` gives it the column's mean plus
        a missing-indicator feature ``"name=missing"`` (for columns that had a missing cell)
        or, in a categorical column, the level ``"<missing>"``; ``"skip"`` drops its row;
        ``"error"`` refuses the data, naming every column with missing cells. A row whose
        target is missing is always dropped and counted (``extras["skipped"]``).
    max_categories : int, default 1000
        Per categorical column: its ``max_categories - 1`` most frequent levels get a one-hot
        feature each; the rarer ones (and, at predict time, unseen ones) share ``"<other>"``.
    categorical : None, list of str, or False
        The columns encoded as categories: the text ones (object, string and category
        dtypes), plus those named here (e.g. integer codes); ``False``: none, and a text
        column is an error naming it. With a categorical column the partitions are encoded
        to CSR rows (one stored entry per categorical column a row, whatever its number of
        levels); without one, to dense rows.
    hash_features : int, optional
        ``BITS`` in [1, 20]: the hashing trick for every categorical column instead of
        one-hot, ``2**BITS`` buckets a column (``"shop#12"``), a level's bucket a stable
        hash of the column's name and the level (the CSV side's, ``fit_csv(hash_features=)``);
        a level first seen at predict time gets its own bucket.
    **fit_options
        Every other option of :func:`fastgd.fit` (``loss``, ``batch_size``,
        ``learning_rate``, ``eta0``, ``penalty``, ``alpha``, ``max_iter``, ``tol``,
        ``shuffle``, ``random_state``, ``callback``, ``average`` (full batch and sample
        mode), ``optimizer`` and its parameters, ``multiclass`` ("ovr", "multinomial"),
        ...). ``sample_weight`` and ``validation_score`` are not available;
        ``optimizer="saga"`` neither. k outputs (more than two classes, ``multinomial``, k
        target columns) run ``minibatch_mode="average"`` with ``optimizer="sgd"`` only.

    Returns
    -------
    FitResult or fastgd.multi.MultiFitResult
        As :func:`fastgd.fit` (k outputs: ``coef`` (k, d), ``intercept`` (k,); with k
        target columns ``extras["targets"]`` names them), plus ``extras["dask"]``:
        partitions, rows, workers, mode, retries, and the seconds of each epoch
        (``step_seconds``); ``extras["encoding"]``
        (a :class:`fastgd._frames.FrameEncoding`: :func:`predict` and :func:`transform`
        apply it to new rows), ``extras["feature_names"]`` (the encoded features),
        ``extras["scaler"]`` and ``extras["skipped"]`` (``missing_target``,
        ``missing_feature``: rows dropped). ``slots`` (the update rule's state) belongs to
        the model trained, in the standardised space (``extras["standardized_coef"]``).

    Raises
    ------
    WorkerLostError
        When a step failed ``STEP_RETRIES`` times because workers were lost; keeps the last
        good model.
    ValueError
        For partitions whose columns disagree (naming the partition and the columns), a
        cell that is not a number in a numeric column, an infinite value or (with
        ``missing="error"``) a missing one (naming the column, partition and row), a text
        target for a regression loss, or invalid options.
    """
    started = time.perf_counter()
    client = _client(client)
    resolved, settings, mode = _resolve(fit_options, strategy, minibatch_mode, fraction)
    hash_bits = _check_encoding_options(missing, max_categories, hash_features)
    dtype = _dtype_of(X, dtype)
    x_parts, y_parts, layout, outputs = _inputs(X, y, target, features, categorical,
                                                resolved["loss"])  # fmt: skip
    _check_csr_rule(layout, resolved, mode)
    encoded, encoding, profile = _first_pass(
        client, x_parts, y_parts, layout, missing=missing, standardize=standardize,
        max_categories=max_categories, hash_bits=hash_bits, dtype=dtype, outputs=outputs,
    )  # fmt: skip
    blocks, rows, summary, plan = _persist(client, encoded, resolved, classes, dtype, encoding,
                                           profile, outputs)  # fmt: skip
    del encoded
    source = None
    try:
        if plan.k:
            result, source = _fit_k_outputs(
                client, blocks, rows, summary, resolved, settings, mode, plan=plan,
                dtype=dtype, encoding=encoding, coef_init=coef_init,
                intercept_init=intercept_init,
            )  # fmt: skip
        else:
            result, source = _fit_one_output(
                client, blocks, rows, summary, resolved, settings, mode, fraction=fraction,
                classes=plan.classes, dtype=dtype, encoding=encoding, coef_init=coef_init,
                intercept_init=intercept_init,
            )  # fmt: skip
    finally:
        del blocks
    _fold_scaler(result, encoding, dtype)
    result.extras.update(
        feature_names=list(encoding.feature_names), target=layout.target, rows=sum(rows),
        encoding=encoding, targets=plan.targets,
        skipped={"missing_target": profile.missing_target,
                 "missing_feature": profile.skipped_missing},
        dask={
            "partitions": len(rows), "mode": mode, "retries": source.retries,
            "workers": len(client.nthreads()),
            "step_seconds": list(source.step_seconds),
        },
    )  # fmt: skip
    result.fit_time = time.perf_counter() - started
    return result


def _fit_one_output(client, blocks, rows, summary, resolved, settings, mode, *, fraction,
                    classes, dtype, encoding, coef_init, intercept_init):  # fmt: skip
    """Two classes or one target: the engine's epoch loop on a :class:`_DaskSource`."""
    n = sum(rows)
    if mode == "sample":
        if fraction is None:
            fraction = min(1.0, resolved["batch_size"] / n)
        resolved["batch_size"] = max(1, round(float(fraction) * n))
    source = _DaskSource(
        client, blocks, rows, summary, dtype, encoding.n_features,
        fit_intercept=resolved["fit_intercept"], mode=mode,
        fraction=float(fraction) if fraction is not None else 1.0,
        local_options=_local_options(resolved, settings),
    )  # fmt: skip
    coef_start, intercept_start = _to_trained_space(encoding, coef_init, intercept_init)
    try:
        result = engine.train(
            source, resolved, classes=classes, coef_init=coef_start,
            intercept_init=intercept_start,
        )  # fmt: skip
    finally:
        source.futures = []
    return result, source


def _fit_k_outputs(client, blocks, rows, summary, resolved, settings, mode, *, plan, dtype,
                   encoding, coef_init, intercept_init):  # fmt: skip
    """k > 1 outputs: :class:`fastgd.multi._Loop` (the k-output epoch loop) over rounds of
    parameter mixing (:class:`_KOutputRounds`); weights in the standardised space."""
    _check_k_output_options(resolved, mode, plan)
    k, d = plan.k, encoding.n_features
    source = _DaskSource(
        client, blocks, rows, summary, dtype, d, fit_intercept=resolved["fit_intercept"],
        mode=mode, fraction=1.0, local_options={},
    )  # fmt: skip
    multiclass = resolved["multiclass"] if plan.classes is not None else None
    local = _local_options(resolved, settings)
    local.update(classes=plan.classes, multiclass=resolved["multiclass"])
    W, b = _k_trained_start(encoding, coef_init, intercept_init, k, d, dtype)
    eta = resolved["eta0"]
    if resolved["schedule"].name == "auto":
        loss = resolved["loss"]
        if multiclass == "multinomial":
            loss = dataclasses.replace(loss, curvature=SOFTMAX_CURVATURE)
        rows_per_step = 1 if resolved["strategy"].name == "sgd" else resolved["batch_size"]
        sample = source.sample(resolved["rng"])
        eta = engine._k_output_auto_step(resolved)(
            sample.rows, np.empty(0), loss, rows_per_step, source.max_row_norm()
        )
    if plan.classes is None:
        scale = summary.zero_loss / summary.rows
    else:
        mode = SOFTMAX if multiclass == "multinomial" else OVR
        scale = zero_model_loss(resolved["loss"].name, resolved["epsilon"], k, mode)
    data = types.SimpleNamespace(X=types.SimpleNamespace(shape=(summary.rows, d)), k=k,
                                 classes=plan.classes)  # fmt: skip
    loop = _Loop(data, resolved, W, b, eta, None, None, scale=scale)
    rounds = _KOutputRounds(source, local, resolved["rng"])
    try:
        while len(loop.history) < resolved["max_iter"] and loop.step(rounds):
            pass
    finally:
        source.futures = []
    return loop.result(multiclass), source


def _k_trained_start(encoding: FrameEncoding, coef_init, intercept_init, k: int, d: int,
                     dtype):  # fmt: skip
    """k starting models (raw space, checked as ``fastgd.fit`` checks them) in the
    standardised space: ``W·scale``, ``b + W·mean`` row by row."""
    W, b = multi_starting_weights(k, d, dtype, coef_init, intercept_init)
    if coef_init is None or not encoding.standardize:
        return W, b
    raw = W.astype(np.float64)
    return (raw * encoding.scale).astype(dtype), b + raw @ encoding.mean


def _to_trained_space(encoding: FrameEncoding, coef_init, intercept_init):
    """Raw-space starting weights in the standardised space: ``w·scale``, ``b + w·mean``."""
    if coef_init is None or not encoding.standardize:
        return coef_init, intercept_init
    raw = np.asarray(coef_init, dtype=np.float64).reshape(-1)
    if raw.shape[0] != encoding.n_features:
        raise ValueError(
            f"coef_init has {raw.shape[0]} values; the encoded data have {encoding.n_features} "
            f"features: {encoding.feature_names[:20]}."
        )
    return raw * encoding.scale, float(intercept_init or 0.0) + float(raw @ encoding.mean)


def _fold_scaler(result, encoding: FrameEncoding, dtype) -> None:
    """The trained (standardised-space) model as weights for the raw features."""
    if np.ndim(result.coef) == 2:  # k outputs: row by row, as fit_csv folds them
        scaler = types.SimpleNamespace(mean=encoding.mean if encoding.standardize else None,
                                       scale=encoding.scale)  # fmt: skip
        fold_scaler(result, scaler, dtype)
        return
    if not encoding.standardize:
        result.extras["scaler"] = None
        return
    result.extras["scaler"] = {"mean": encoding.mean.copy(), "scale": encoding.scale.copy()}
    result.extras["standardized_coef"] = result.coef
    result.extras["standardized_intercept"] = float(result.intercept)
    raw_coef = result.coef.astype(np.float64) / encoding.scale
    result.intercept = dtype.type(float(result.intercept) - float(raw_coef @ encoding.mean))
    result.coef = raw_coef.astype(dtype)


def predict(result, X):
    """Predictions of a :func:`fit` result for new rows, with its encoding (missing cells,
    unseen levels: see :func:`fastgd._frames.transform`; no row is dropped or refused):
    the class labels, or the targets (for k target columns, one column each).

    ``X``: a dask DataFrame (gives a dask Series, or a dask DataFrame of the k target
    columns; one partition per partition), a pandas DataFrame, or (for a fit on arrays) a
    2-D array (both give a numpy array: (n,), or (n, k) for k target columns)."""
    import dask.dataframe as dd

    encoding = result.extras.get("encoding")
    if encoding is None:
        raise ValueError("this result has no encoding: it does not come from fastgd.dask.fit.")
    if isinstance(X, dd.DataFrame):
        return X.map_partitions(_predict_rows, result, meta=_prediction_meta(result))
    return result.predict(transform(encoding, X))


def _prediction_meta(result):
    """An empty pandas Series (labels, one target) or DataFrame (k target columns) of the
    predictions' type."""
    import pandas as pd

    labels = result.classes
    if labels is None and np.ndim(result.coef) == 2:
        names = result.extras.get("targets") or [f"y{j}" for j in range(result.coef.shape[0])]
        return pd.DataFrame({name: pd.Series([], dtype=np.float64) for name in names})
    return pd.Series([], dtype=np.float64 if labels is None else labels.dtype)


def _predict_rows(part, result):
    import pandas as pd

    meta = _prediction_meta(result)
    if len(part) == 0:
        return meta
    values = result.predict(transform(result.extras["encoding"], part))
    if isinstance(meta, pd.DataFrame):
        return pd.DataFrame(values, index=part.index, columns=meta.columns)
    return pd.Series(values, index=part.index)


def _resolve(fit_options: dict, strategy, minibatch_mode, fraction):
    """The engine's options (and the settings they came from), and how the epochs run."""
    unsupported = sorted(set(fit_options) - set(_FIT_DEFAULTS))
    if unsupported:
        raise TypeError(
            f"fastgd.dask.fit got unsupported option(s) {unsupported}; it takes fastgd.fit's "
            f"options except sample_weight and validation_score: {sorted(_FIT_DEFAULTS)}."
        )
    if minibatch_mode not in MINIBATCH_MODES:
        raise ValueError(
            f"minibatch_mode={minibatch_mode!r}; allowed values: {list(MINIBATCH_MODES)}."
        )
    settings = {**_FIT_DEFAULTS, **fit_options, "strategy": strategy}
    resolved = engine.resolve_options(**settings)
    mode = "full" if resolved["strategy"].name == "full" else minibatch_mode
    if fraction is not None and not (0.0 < float(fraction) <= 1.0):
        raise ValueError(f"fraction must be in (0, 1]; got {fraction!r}.")
    if mode == "average" and resolved["average_start"]:
        raise ValueError(
            "average= (averaged SGD) is not available with minibatch_mode='average' (the "
            "partitions' models are averaged already); use minibatch_mode='sample'."
        )
    if mode != "full" and resolved["rule"].row_memory:
        raise ValueError(_row_memory_refusal(resolved["optimizer"], strategy))
    if mode == "sample" and resolved["strategy"].name == "sgd":
        raise ValueError("minibatch_mode='sample' needs strategy='minibatch' (or 'full').")
    if resolved["multiclass"] == "multinomial" and resolved["loss"].name != "log_loss":
        # fastgd.fit's refusal, word for word (one place: fastgd.multi).
        needs_k_outputs(None, resolved["loss"], "multinomial")
    return resolved, settings, mode


def _row_memory_refusal(optimizer: str, strategy) -> str:
    """Why a rule with a per-row memory (SAGA) does not run on Dask, and what does."""
    working = [rule.name for rule in UPDATE_RULES
               if rule.name in STOCHASTIC_OPTIMIZERS and not rule.row_memory]  # fmt: skip
    # Its memory (one derivative per row) would have to live beside the blocks on the
    # workers and change at every step: state that Dask's recomputation of a lost block
    # would silently reset to zero, and that parameter mixing has no sound way to average.
    return (
        f"optimizer={optimizer!r} keeps one stored derivative per row of the whole data set, "
        f"which fastgd.dask.fit does not keep on the workers; with strategy={strategy!r} it "
        f"runs optimizer in {working} (both minibatch_mode='average' and 'sample'), or "
        f"strategy='full' with gd, nesterov or lbfgs; for {optimizer!r} use fastgd.fit on "
        "data in memory."
    )


def _dtype_of(X, dtype) -> np.dtype:
    if dtype is None:
        given = getattr(X, "dtype", None)
        dtype = given if given in (np.float32, np.float64) else np.float64
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype={dtype.name!r}; allowed values: 'float64', 'float32'.")
    return dtype


@dataclasses.dataclass
class _TargetPlan:
    """What the targets train: ``k`` outputs (0: one, two classes or one target), the
    classes (classification), the target columns' names (k of a regression)."""

    k: int
    classes: np.ndarray | None
    targets: list | None = None


def _persist(client, encoded: list, resolved: dict, classes, dtype, encoding, profile,
             outputs):  # fmt: skip
    """Persist the encoded blocks on the workers, summarise them, and map the targets (±1
    for the two classes, else floats; k classes keep their labels). Returns the non-empty
    blocks (futures), their rows, the summary and the :class:`_TargetPlan`."""
    # Persisted: the blocks stay in the workers' memory while the driver holds the futures;
    # they come from the input's graph, so Dask recomputes one lost with its worker.
    loss = resolved["loss"]
    parts = client.gather([
        client.submit(_block_stats, block, resolved["fit_intercept"], loss, resolved["epsilon"])
        for block in encoded
    ])  # fmt: skip
    for index, part in enumerate(parts):
        if part.bad is not None:
            row, column = part.bad
            where = "the target" if column == "y" else repr(encoding.feature_names[column])
            raise ValueError(
                f"partition {index} holds a NaN or infinite value in {where}, at its row {row} "
                "(of the rows kept); clean or drop such rows first."
            )
    keep = [i for i, part in enumerate(parts) if part.rows > 0]
    if not keep:
        raise ValueError(
            f"no rows to train on: {profile.missing_target} rows had a missing target and "
            f"{profile.skipped_missing} a missing feature (missing='skip'); the others, none."
        )
    summary = functools.reduce(BlockStatistics.merge, [parts[i] for i in keep])
    plan = _target_plan(resolved, summary.labels, classes, outputs)
    if plan.k and plan.classes is not None:
        # The labels as found: in X's dtype (float32) 0.1 would no longer be class 0.1.
        blocks = [encoded[i] for i in keep]
    elif loss.classification:
        blocks = [client.submit(_signed_block, encoded[i], plan.classes, dtype) for i in keep]
    else:
        blocks = [client.submit(_float_block, encoded[i], dtype) for i in keep]
    distributed.wait(blocks)
    return blocks, [parts[i].rows for i in keep], summary, plan


def _target_plan(resolved: dict, labels, classes, outputs) -> _TargetPlan:
    """One output or k: k target columns, more than two classes (found, or ``classes``),
    or ``multiclass="multinomial"``."""
    if outputs:
        return _TargetPlan(len(outputs), None, list(outputs))
    loss = resolved["loss"]
    if not loss.classification:
        return _TargetPlan(0, None)
    multinomial = resolved["multiclass"] == "multinomial"
    wanted = labels.shape[0] if classes is None else np.size(classes)
    if not multinomial and wanted <= 2:
        return _TargetPlan(0, _classes(loss, labels, classes))
    found = _k_classes(labels, classes)
    return _TargetPlan(found.shape[0], found)


def _k_classes(labels: np.ndarray, classes) -> np.ndarray:
    """The k classes: ``classes`` when given (distinct numbers covering y's labels), else
    y's labels (sorted); numeric labels only."""
    for name, values in (("y", labels), ("classes", classes)):
        if values is not None and np.asarray(values).dtype.kind not in "biuf":
            raise ValueError(
                f"{name} holds labels that are not numbers ({np.asarray(values)[:10].tolist()}"
                "); fastgd.dask.fit trains more than two classes (or multiclass='multinomial') "
                "with numeric labels: map the labels to numbers first (e.g. with "
                "Series.cat.codes), or use fastgd.fit_csv for a CSV with text labels."
            )
    if classes is None:
        found = labels
    else:
        found = np.asarray(classes)
        if found.ndim != 1 or np.unique(found).shape[0] != found.shape[0]:
            raise ValueError(f"classes={found.tolist()} must be distinct labels, one each.")
        unknown = np.setdiff1d(labels, found)
        if unknown.size:
            raise ValueError(
                f"classes={found.tolist()} does not cover y's labels: {unknown[:10].tolist()} "
                "are in y but not in classes."
            )
    if found.shape[0] < 2:
        raise ValueError(f"a classification needs at least two classes; found {found.tolist()}.")
    return found


def _classes(loss, labels: np.ndarray, classes) -> np.ndarray:
    """The two classes: ``classes`` when given (covering y's labels), else y's two labels."""
    if classes is not None:
        plan_classes = np.asarray(classes)
        unknown = np.setdiff1d(labels, plan_classes)
        if plan_classes.shape[0] != 2 or unknown.size:
            raise ValueError(
                f"classes={plan_classes.tolist()} must be two labels covering y's "
                f"labels {labels[:10].tolist()}."
            )
        return plan_classes
    if labels.shape[0] != 2:
        raise ValueError(
            f"loss={loss.name!r} needs at least two classes in y; found {labels.shape[0]}: "
            f"{labels[:10].tolist()}."
        )
    return labels


#: What fastgd.dask.fit runs with k > 1 outputs, for the refusals of the rest.
K_OUTPUTS_SUPPORTED = (
    "with k > 1 outputs (more than two classes, multiclass='multinomial' or k target "
    "columns) fastgd.dask.fit runs strategy='minibatch' or 'sgd' with "
    "minibatch_mode='average' (the default), with optimizer 'sgd', 'momentum', "
    "'adagrad', 'rmsprop', 'adam' or 'adamw' (the adaptive ones with "
    "learning_rate='constant'); for the others use fastgd.fit(X, y, multiclass=...) on "
    "arrays in memory"
)


def _check_k_output_options(resolved: dict, mode: str, plan: _TargetPlan) -> None:
    """Refuse, naming what runs, what the k-output rounds do not do."""
    what = f"{plan.k} classes" if plan.classes is not None else f"{plan.k} target columns"
    if mode != "average":
        asked = "strategy='full'" if mode == "full" else "minibatch_mode='sample'"
        raise ValueError(f"{asked} with {what}: {K_OUTPUTS_SUPPORTED}.")
    rule = resolved["rule"]
    stochastic = resolved["optimizer"] == rule.name and not rule.row_memory
    range_tested = rule.name in RANGE_TESTED_OPTIMIZERS and resolved["schedule"].name == "auto"
    if not stochastic or range_tested:
        # (the range test of the adaptive rules' auto runs on rows in memory)
        asked = f"optimizer={resolved['optimizer']!r}"
        if range_tested:
            asked += " with learning_rate='auto'"
        raise ValueError(f"{asked} with {what}: {K_OUTPUTS_SUPPORTED}.")


def _local_options(resolved: dict, settings: dict) -> dict:
    """``fastgd.fit``'s options for one partition's local epoch (``minibatch_mode="average"``)."""
    schedule = resolved["schedule"].name
    return dict(
        loss=resolved["loss"].name, strategy=resolved["strategy"].name,
        batch_size=resolved["batch_size"],
        # The engine owns the step size: auto is derived once, adaptive divides it between
        # rounds; each round runs with the current one.
        learning_rate="constant" if schedule in ("auto", "adaptive") else schedule,
        power_t=settings["power_t"], penalty=settings["penalty"], alpha=settings["alpha"],
        l1_ratio=settings["l1_ratio"], epsilon=settings["epsilon"],
        fit_intercept=resolved["fit_intercept"], shuffle=settings["shuffle"],
        divergence_checks="non_finite",
        classes=np.array([-1.0, 1.0]) if resolved["loss"].classification else None,
        # The update rule and its parameters; its slots travel with each round's model.
        optimizer=resolved["optimizer"],
        **{name: resolved[name] for name in engine.OPTIMIZER_SCALARS},
    )  # fmt: skip
