"""Data sources: what the engine's epoch loop trains on.

The engine (:func:`fastgd.engine.train`) owns every policy of a fit: the ``auto`` step, the
loss scale that divergence is judged against, the parallel-or-serial choice, back-offs,
stopping and the loss curve. A data source only answers a few narrow questions about its
rows, the :class:`DataSource` protocol:

- ``n_rows``, ``n_features``, ``values_per_row`` and ``dtype``;
- ``losses(loss, epsilon, coef, intercept)``: ``Σ s·L`` at the zero model and at the
  starting weights (``coef`` None: the start is the zero model);
- ``sample(rng)``: a uniform sample of rows and their targets (for ``learning_rate="auto"``);
- ``max_row_norm()``: the largest ``s·(‖x‖² + 1)`` (``+ 0`` without an intercept);
- ``epoch(state, spec, order)``: one epoch from the kernels' ``State`` under their ``Spec``,
  rows ordered as :class:`EpochOrder` says; returns ``(state, Σ s·L, bad)`` with the new
  intercept and step counter in ``state`` (its arrays updated in place) and ``bad`` the
  position of the first non-finite loss (``-1``: none).

Arrays in memory are the engine's own source; :class:`BlockSource` serves any data read
one block of rows at a time (the CSV cache of ``fastgd.fit_csv``, memory-mapped arrays,
the partitions ``fastgd.dask`` keeps on its workers): a subclass says how many blocks
there are and yields them; the epochs (mini-batches across block boundaries, full batches
summed over blocks, sampled mini-batches) come from here. Blocks that cannot come to the
process (Dask's) override one hook instead, :meth:`BlockSource.gradient_sums`, and the
full-batch and sampled epochs still step here. :func:`block_statistics` is the first
pass's per-block summary, shared by every front that reads its data once before training.

A block's ``X`` is a dense array or a ``scipy.sparse.csr_matrix`` (canonical: sorted
indices, no duplicates; the source's dtype, ``n_features`` columns; ``y`` dense). CSR
blocks train with the CSR kernels of ``fastgd._kernels.sparse`` (loaded on first use), in
the steps ``fastgd.fit`` takes on the whole CSR matrix in memory; the update rules without
a CSR kernel are refused as ``fastgd.fit`` refuses them on sparse X.

SAGA keeps one stored derivative per row (``State.row_memory``): a block source keeps it by
block number (:meth:`BlockSource.numbered_blocks`; a block holds the same rows in every
epoch), so it runs on any source that reads its blocks here, in any order; the engine
refuses it on sources that sum their gradients elsewhere (Dask) or sample their batches.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterator
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

from . import options
from ._kernels.epochs import (
    accumulate_gradient,
    batch_epoch,
    loss_sum,
    scan_rows,
    sgd_epoch,
    take_step,
)
from ._kernels.order import fill_epoch_order
from ._kernels.records import Spec, State
from ._thresholds import AUTO_SAMPLE_ROWS, parallel_batches
from ._validation import check_sparse_structure, is_sparse
from .prediction import predict_into

__all__ = [
    "BlockSource",
    "BlockStatistics",
    "DataSource",
    "EpochOrder",
    "GradientSums",
    "RowSample",
    "RowSampler",
    "add_block_gradient",
    "block_losses",
    "block_statistics",
]

_NO_WEIGHTS = np.empty(0)
_NO_ORDER = np.empty(0, dtype=np.int64)


class RowSample(NamedTuple):
    """Rows for ``learning_rate="auto"``: the curvature behind the derived steps, and the
    range test of the adaptive update rules (which trains on them, so needs their targets).

    ``rows``: dense (or CSR) rows in the source's dtype; ``weights``: their multipliers
    (empty: all 1); ``in_order``: the rows are the whole data in its own order, so runs of
    consecutive rows are the batches of an unshuffled epoch; ``targets``: their ``y`` in
    the source's dtype, classification targets as ±1 (as the source's epochs see them;
    None: a source that cannot give them, refused by the range test)."""

    rows: object
    weights: np.ndarray
    in_order: bool = False
    targets: np.ndarray | None = None


class EpochOrder(NamedTuple):
    """How an epoch visits the rows (decided by the engine).

    ``strategy``: ``"sgd"``, ``"minibatch"`` or ``"full"``; ``rows_per_step``: the batch
    size (1 for sgd, all rows for full); ``shuffle``: ``options.SHUFFLE_*``; ``rng``: draws
    the epoch's row order; ``parallel``: whether a batch is accumulated in parallel."""

    strategy: str
    rows_per_step: int
    shuffle: int
    rng: np.random.Generator
    parallel: bool


class GradientSums(NamedTuple):
    """The gradient sums of some rows at one model, all a step needs (see
    :meth:`BlockSource.gradient_sums`)."""

    #: ``Σ s·L'·x`` (float64, shape (d,)).
    grad: np.ndarray
    #: ``Σ s·L`` and ``Σ s·L'`` (the intercept's gradient).
    loss: float
    deriv: float
    #: How many rows were summed (the step divides by it).
    rows: int
    #: The position of the first row (or block) with a non-finite loss; -1: none.
    bad: int = -1


@runtime_checkable
class DataSource(Protocol):
    """What the engine trains on (see the module's docstring)."""

    n_rows: int
    n_features: int
    #: Values read per row: ``n_features`` for dense rows, the mean non-zeros for CSR.
    values_per_row: float
    dtype: np.dtype

    def losses(self, loss: int, epsilon: float, coef, intercept: float) -> tuple[float, float]:
        """``(Σ s·L(0, y), Σ s·L(x·coef + intercept, y))``; ``coef`` None: the start is the
        zero model (return its loss twice)."""

    def sample(self, rng: np.random.Generator) -> RowSample:
        """A uniform sample of rows (at most ``AUTO_SAMPLE_ROWS``, or all rows), with their
        targets (see :class:`RowSample`)."""

    def max_row_norm(self) -> float:
        """``max s·(‖x‖² + 1)`` over the rows (``+ 0`` without an intercept)."""

    def epoch(self, state: State, spec: Spec, order: EpochOrder) -> tuple[State, float, int]:
        """One epoch: ``(state after, Σ s·L, position of the first bad row or -1)``."""


class BlockStatistics(NamedTuple):
    """A first pass's summary of some rows (see :func:`block_statistics`)."""

    rows: int
    #: The first NaN or infinite value, ``(row, column)`` (column ``"y"``: the target), or None.
    bad: tuple | None
    max_row_norm: float
    #: ``Σ L(0, y)``: the zero model's loss.
    zero_loss: float
    #: The labels found (classification), else None.
    labels: np.ndarray | None
    #: The values stored: ``rows × n_features`` for dense rows, the non-zeros for CSR
    #: (``values / rows`` is a source's ``values_per_row``).
    values: int = 0

    def merge(self, other: BlockStatistics) -> BlockStatistics:
        """Both summaries as one (``other``'s rows after this one's)."""
        bad = self.bad
        if bad is None and other.bad is not None:
            bad = (other.bad[0] + self.rows, other.bad[1])
        labels = self.labels
        if other.labels is not None:
            labels = other.labels if labels is None else np.union1d(labels, other.labels)
        return BlockStatistics(
            self.rows + other.rows, bad, max(self.max_row_norm, other.max_row_norm),
            self.zero_loss + other.zero_loss, labels, self.values + other.values,
        )  # fmt: skip


def block_statistics(X, y, *, fit_intercept: bool, loss: options.Loss, epsilon: float,
                     norms: bool = True) -> BlockStatistics:  # fmt: skip
    """The first pass's summary of a block: rows, first non-finite value, the largest row
    norm (``norms=False``: left 0, for features scaled later), the zero model's loss and
    the labels. Classification losses are margin losses: ``L(0, y)`` is the same for
    either label, so the zero loss never needs the labels mapped to ±1. ``X``: dense rows or
    CSR rows."""
    sparse = is_sparse(X)
    X = X if sparse else np.ascontiguousarray(X)
    rows = X.shape[0]
    values = int(X.nnz) if sparse else rows * X.shape[1]
    extra = 1.0 if fit_intercept else 0.0
    row, column, norm = _scan(X, extra) if norms else (-1, -1, 0.0)
    bad = (int(row), int(column)) if row >= 0 else None
    if loss.classification:
        one = np.ones(1, dtype=X.dtype)
        zero = rows * loss_sum(one * 0, one, _NO_WEIGHTS, loss.code, epsilon)
        return BlockStatistics(rows, bad, float(norm), float(zero), np.unique(y), values)
    y_float = np.ascontiguousarray(y, dtype=X.dtype)
    finite = np.isfinite(y_float)
    if bad is None and not finite.all():
        bad = (int(np.argmin(finite)), "y")
    zeros = np.zeros(rows, dtype=X.dtype)
    zero = loss_sum(zeros, y_float, _NO_WEIGHTS, loss.code, epsilon) if finite.all() else math.inf
    return BlockStatistics(rows, bad, float(norm), float(zero), None, values)


def _scan(X, extra: float) -> tuple[int, int, float]:
    """``epochs.scan_rows`` of dense rows, ``sparse.scan_csr`` of CSR rows: the first
    non-finite value ``(row, column)`` (``(-1, -1)``: none) and ``max ‖x‖² + extra``."""
    if is_sparse(X):
        return _csr_kernels().scan_csr(X.data, X.indices, X.indptr, X.shape[0], _NO_WEIGHTS,
                                       extra)  # fmt: skip
    return scan_rows(X, _NO_WEIGHTS, extra)


def _csr_kernels():
    """``fastgd._kernels.sparse``, imported on first use: dense-only programs never load
    (nor compile) the CSR kernels."""
    from ._kernels import sparse

    return sparse


def block_losses(X, y, loss: int, epsilon: float, coef, intercept: float) -> tuple[float, float]:
    """``(Σ L(0, y), Σ L(x·coef + intercept, y))`` over a block, dense or CSR (``coef``
    None: the second is 0); the predictions come from
    :func:`fastgd.prediction.predict_into`."""
    scores = np.zeros(X.shape[0], dtype=X.dtype)
    zero = float(loss_sum(scores, y, _NO_WEIGHTS, loss, epsilon))
    if coef is None:
        return zero, 0.0
    predict_into(X, coef, intercept, scores)
    return zero, float(loss_sum(scores, y, _NO_WEIGHTS, loss, epsilon))


def add_block_gradient(
    X, y, spec: Spec, state: State, grad: np.ndarray, parallel: bool, fraction=1.0, seed=0
) -> tuple[float, float, int]:
    """Add the gradient of a block's rows at ``state`` to ``grad`` (``fraction`` < 1: of the
    rows a draw seeded with ``seed`` keeps, each with probability ``fraction``); returns
    ``(Σ s·L, Σ s·L', rows summed)``. CSR rows are summed in one serial pass over their
    non-zeros (``parallel`` is for dense rows)."""
    sparse = is_sparse(X)
    if fraction < 1.0:
        chosen = np.random.default_rng(seed).random(X.shape[0]) < fraction
        X = X[chosen] if sparse else np.ascontiguousarray(X[chosen])
        y = np.ascontiguousarray(y[chosen])
    if X.shape[0] == 0:
        return 0.0, 0.0, 0
    if sparse:
        loss, deriv = _csr_kernels().accumulate_gradient_csr(
            X.data, X.indices, X.indptr, y, _NO_WEIGHTS, spec, state, grad
        )
    else:
        loss, deriv = accumulate_gradient(X, y, _NO_WEIGHTS, spec, state, grad, parallel)
    return float(loss), float(deriv), int(X.shape[0])


class RowSampler:
    """A uniform sample of at most ``size`` rows of a stream of unknown length (the rows
    with the smallest random keys), in float64: dense rows, or CSR rows when the blocks
    are CSR, with their targets as given (``targets``: labels stay labels)."""

    def __init__(self, size: int, rng: np.random.Generator):
        self.size = size
        self.rng = rng
        self.keys = np.empty(0)
        self.rows = None
        self.targets: np.ndarray | None = None

    def add(self, X, y) -> None:
        keys = self.rng.random(X.shape[0])
        if self.keys.shape[0] >= self.size > 0:
            # a row whose key is not below the largest kept one can never be kept: leave it
            # out before copying (the same rows are sampled; only their order may change)
            entering = keys < self.keys.max()
            keys, X, y = keys[entering], X[entering], np.asarray(y)[entering]
        sparse = is_sparse(X)
        rows = X.astype(np.float64) if sparse else np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        if self.rows is None:
            merged_keys, merged_rows, merged_y = keys, rows, y
        else:
            merged_keys = np.concatenate([self.keys, keys])
            merged_y = np.concatenate([self.targets, y])
            if sparse:
                import scipy.sparse

                merged_rows = scipy.sparse.vstack([self.rows, rows], format="csr")
            else:
                merged_rows = np.concatenate([self.rows, rows])
        if merged_keys.shape[0] > self.size:
            keep = np.argpartition(merged_keys, self.size - 1)[: self.size]
            merged_keys, merged_rows = merged_keys[keep], merged_rows[keep]
            merged_y = merged_y[keep]
        self.keys, self.rows, self.targets = merged_keys, merged_rows, merged_y


class BlockSource:
    """A :class:`DataSource` over blocks of rows read one at a time.

    A subclass implements :meth:`block_count` and :meth:`blocks`; the statistics below take
    one pass over the blocks each (a subclass that knows them from a first pass overrides
    them). Mini-batches run across block boundaries (the rows left at the end of a block
    start the next batch) and a full batch sums every block's gradient before its one step,
    so with ``shuffle=False`` an epoch takes the same steps as on all rows in memory. With
    shuffling, the blocks are visited in a random order and the rows of each permuted.

    ``sample_fraction`` (a number in (0, 1]) turns the mini-batch epochs into sampled ones
    (Spark's ``miniBatchFraction``): ``round(1 / fraction)`` steps, each on the rows a
    random draw keeps from every block with probability ``fraction``.

    Blocks may be CSR (see the module's docstring): then pass ``values_per_row``, the mean
    non-zeros of a row (``BlockStatistics.values / rows`` of a first pass), which sizes the
    parallel batches as the engine sizes them for a CSR matrix in memory (the results do
    not depend on it).

    The hook for blocks that stay elsewhere: :meth:`gradient_sums` (the sums over all the
    blocks, or over a sample of each, at one model) is all the full-batch and sampled epochs
    read; a subclass that computes it where the blocks are (``fastgd.dask``: on the workers,
    reduced as a tree) overrides it, and the statistics, and needs no :meth:`blocks`.
    """

    def __init__(self, n_rows: int, n_features: int, dtype, *, fit_intercept: bool,
                 block_rows: int, progress: Callable | None = None,
                 sample_fraction: float | None = None,
                 values_per_row: float | None = None):  # fmt: skip
        self.n_rows = int(n_rows)
        self.n_features = int(n_features)
        self.values_per_row = float(n_features if values_per_row is None else values_per_row)
        self.dtype = np.dtype(dtype)
        self.fit_intercept = bool(fit_intercept)
        self.block_rows = int(block_rows)
        self.progress = progress
        self.sample_fraction = sample_fraction
        self.epochs_run = 0
        self._max_row_norm: float | None = None

    def block_count(self) -> int:
        raise NotImplementedError

    def blocks(self, order: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(X, y)`` of each block, in the order of the block numbers ``order`` (None: in
        order): C-contiguous, writable, in ``dtype``, classification targets as ±1; ``X``
        dense or a canonical CSR matrix (see the module's docstring)."""
        raise NotImplementedError

    def numbered_blocks(
        self, order: np.ndarray | None = None
    ) -> Iterator[tuple[int, object, np.ndarray]]:
        """``(number, X, y)`` of each block of :meth:`blocks`: its number in
        ``range(block_count())`` (the same rows under the same number in every epoch: SAGA's
        row memory is kept by it). Override it when :meth:`blocks` skips a block or does
        not follow ``order``."""
        numbers = range(self.block_count()) if order is None else order
        for number, (X, y) in zip(numbers, self.blocks(order), strict=False):
            yield int(number), X, y

    # -- the statistics, a pass each
    def max_row_norm(self) -> float:
        if self._max_row_norm is None:
            extra = 1.0 if self.fit_intercept else 0.0
            self._max_row_norm = 0.0
            for X, _ in self.blocks():
                norm = float(_scan(X, extra)[2])
                self._max_row_norm = max(self._max_row_norm, norm)
        return self._max_row_norm

    def losses(self, loss: int, epsilon: float, coef, intercept: float) -> tuple[float, float]:
        zero = start = 0.0
        for X, y in self.blocks():
            block_zero, block_start = block_losses(X, y, loss, epsilon, coef, intercept)
            zero += block_zero
            start += block_start
        return zero, (zero if coef is None else start)

    def sample(self, rng: np.random.Generator) -> RowSample:
        sampler = RowSampler(AUTO_SAMPLE_ROWS, rng)
        for X, y in self.blocks():  # the blocks' targets are already ±1 for classification
            sampler.add(X, y)
        targets = np.ascontiguousarray(sampler.targets, dtype=self.dtype)
        return RowSample(sampler.rows.astype(self.dtype), _NO_WEIGHTS, targets=targets)

    # -- the hook: gradient sums at one model
    def gradient_sums(self, state: State, spec: Spec, order: EpochOrder,
                      fraction: float = 1.0) -> GradientSums:  # fmt: skip
        """The gradient sums at ``state`` over every block's rows (``fraction`` < 1: over
        the rows a draw with ``order.rng`` keeps from each block with probability
        ``fraction``); ``bad``: the position of the first block whose loss is not finite.
        Reads the blocks here, one at a time; override it to sum where the blocks are."""
        grad = np.zeros(self.n_features)
        loss_total = deriv_total = 0.0
        rows = 0
        parallel = parallel_batches(min(self.block_rows, self.n_rows), self.values_per_row)
        visits = self._visit(self._block_order(order), order, spec, row_orders=False)
        # One seed per block, drawn before any is read (as a source that sums elsewhere
        # draws them to send with its tasks).
        seeds = order.rng.integers(2**63, size=self.block_count()) if fraction < 1.0 else None
        for index, (X, y, _, position, _) in enumerate(visits):
            seed = int(seeds[index]) if seeds is not None else 0
            block_loss, block_deriv, block_rows = add_block_gradient(
                X, y, spec, state, grad, parallel, fraction, seed
            )
            loss_total += block_loss
            deriv_total += block_deriv
            rows += block_rows
            if not math.isfinite(block_loss):
                return GradientSums(grad, loss_total, deriv_total, rows, position)
        return GradientSums(grad, loss_total, deriv_total, rows)

    # -- one epoch
    def epoch(self, state: State, spec: Spec, order: EpochOrder) -> tuple[State, float, int]:
        if order.strategy == "full" or (
            order.strategy == "minibatch" and self.sample_fraction is not None
        ):
            state, loss_total, bad = self._gradient_epoch(state, spec, order)
        else:
            run = self._sgd_epoch if order.strategy == "sgd" else self._minibatch_epoch
            visits = self._visit(self._block_order(order), order, spec)
            state, loss_total, bad = run(state, spec, order, visits)
        if bad < 0:
            self.epochs_run += 1
        return state, loss_total, bad

    def _block_order(self, order: EpochOrder) -> np.ndarray | None:
        """The blocks' order in a shuffled epoch (None: in order)."""
        count = self.block_count()
        shuffled = order.shuffle != options.SHUFFLE_NONE
        return order.rng.permutation(count) if shuffled and count > 1 else None

    def _visit(self, block_order, order: EpochOrder, spec: Spec, row_orders: bool = True):
        """Each block with its row order (``row_orders=False``: none), its position in the
        epoch and its number (:meth:`numbered_blocks`), then the rows read so far (for the
        progress)."""
        position = 0
        shuffled = order.shuffle != options.SHUFFLE_NONE and order.strategy != "full"
        for number, X, y in self.numbered_blocks(block_order):
            if is_sparse(X):
                self._check_csr_block(X, spec, position)
            length = X.shape[0]
            if not row_orders:
                rows = _NO_ORDER
            elif shuffled:
                rows = np.empty(length, dtype=np.int64)
                fill_epoch_order(rows, options.SHUFFLE_FULL, 0, order.rng.integers(2**63))
            elif order.strategy == "minibatch":  # mini-batches need positions to slice
                rows = np.arange(length, dtype=np.int64)
            else:
                rows = _NO_ORDER
            yield X, y, rows, position, number
            position += length
            if self.progress is not None:
                self.progress(self.epochs_run + 1, position, self.n_rows)

    def _check_csr_block(self, X, spec: Spec, position: int) -> None:
        """Refuse a CSR block the kernels cannot read as it is, or an update rule without a
        CSR kernel (as ``fastgd.fit`` refuses it on sparse X). O(1) in later epochs; in the
        first, also the index arrays (an index past the width would make the kernels write
        outside ``w``): one vectorised pass over them, as ``fastgd.fit`` checks its X."""
        if X.format != "csr" or X.shape[1] != self.n_features or X.dtype != self.dtype:
            raise ValueError(
                f"{type(self).__name__}.blocks() gave a sparse block of format {X.format!r}, "
                f"shape {X.shape} and dtype {X.dtype}; a sparse block must be CSR with "
                f"{self.n_features} columns in {self.dtype} (canonical: sorted indices, no "
                f"duplicates)."
            )
        if self.epochs_run == 0:
            try:
                check_sparse_structure(X)
            except (TypeError, ValueError) as error:
                raise type(error)(
                    f"{type(self).__name__}.blocks(), the block from row {position} of the "
                    f"epoch: {error}"
                ) from error
        rule = next(rule for rule in options.UPDATE_RULES if rule.code == spec.rule)
        if not rule.sparse:
            chosen_by_schedule = any(s.update_rule == rule.name for s in options.SCHEDULES)
            raise options.no_csr_kernel(rule, "sgd" if chosen_by_schedule else rule.name)

    def _gradient_epoch(self, state, spec, order):
        """A full batch (one step from every row's gradient) or a sampled epoch
        (``round(1 / sample_fraction)`` steps, each from a sample of every block's rows).
        The model changes only here, once a step's sums have all arrived."""
        full = order.strategy == "full"
        fraction = 1.0 if full else float(self.sample_fraction)
        steps = 1 if full else max(1, round(1.0 / fraction))
        loss_total = 0.0
        rows_seen = 0
        for _ in range(steps):
            sums = self.gradient_sums(state, spec, order, fraction)
            loss_total += sums.loss
            rows_seen += sums.rows
            if sums.bad >= 0:
                return state, loss_total, sums.bad
            if sums.rows == 0:
                continue
            intercept, t = take_step(sums.grad, float(sums.rows), sums.deriv, spec, state)
            state = state._replace(intercept=intercept, t=t)
        if not full:  # the mean loss of the sampled rows, on the scale of the whole data
            loss_total = loss_total / max(1, rows_seen) * self.n_rows
        return state, loss_total, -1

    def _sgd_epoch(self, state, spec, order, visits):
        loss_total = 0.0
        memory = _RowMemory.of(self, state)
        for X, y, rows, position, number in visits:
            ids = memory.ids(number, X.shape[0])
            with memory.local(state, ids) as local:
                if is_sparse(X):
                    intercept, block_loss, t, bad = _csr_kernels().sgd_epoch_csr(
                        X.data, X.indices, X.indptr, y, _NO_WEIGHTS, rows, spec, local
                    )
                else:
                    intercept, block_loss, t, bad = sgd_epoch(
                        X, y, _NO_WEIGHTS, rows, spec, local, 0
                    )
            state = state._replace(intercept=intercept, t=t)
            loss_total += block_loss
            if bad >= 0:
                return state, loss_total, position + bad
        return state, loss_total, -1

    def _minibatch_epoch(self, state, spec, order, visits):
        visits, sparse = _peek_sparse(visits)
        batch = order.rows_per_step
        carry = _CsrCarry(batch) if sparse else _Carry(batch, self.n_features, self.dtype)
        run = _csr_batches if sparse else _dense_batches
        memory = _RowMemory.of(self, state)
        loss_total = 0.0
        end = 0

        def step(X, y, rows, state, ids):
            # ids: the row memory's places of the rows the kernel numbers 0, 1, ...
            if ids is not None and sparse and rows.shape[0]:  # _csr_batches: rows[0]... as 0...
                ids = ids[int(rows[0]) : int(rows[0]) + rows.shape[0]]
            with memory.local(state, ids) as local:
                intercept, block_loss, t, bad = run(X, y, rows, batch, spec, local,
                                                    order.parallel)  # fmt: skip
            return state._replace(intercept=intercept, t=t), block_loss, bad

        for X, y, rows, position, number in visits:
            ids = memory.ids(number, X.shape[0])
            if sparse:  # the block in epoch order: its batches are runs of consecutive rows
                ids = ids[rows] if memory.active else ids
                X, y, rows = _csr_in_order(X, y, rows, order.shuffle != options.SHUFFLE_NONE)
            end = position + rows.shape[0]
            used = carry.fill(X, y, rows, ids) if carry.count else 0
            if carry.count and carry.full():  # the batch begun in an earlier block is complete
                state, block_loss, bad = step(*carry.take(), _NO_ORDER, state, carry.take_ids())
                loss_total += block_loss
                if bad >= 0:
                    return state, loss_total, position
            whole = (rows.shape[0] - used) // batch * batch
            if whole:
                chosen = np.ascontiguousarray(rows[used : used + whole])
                state, block_loss, bad = step(X, y, chosen, state, ids)
                loss_total += block_loss
                if bad >= 0:
                    return state, loss_total, position + used + bad
            carry.fill(X, y, rows[used + whole :], ids)
        if carry.count:
            count = carry.count
            state, block_loss, bad = step(*carry.take(), _NO_ORDER, state, carry.take_ids())
            loss_total += block_loss
            if bad >= 0:
                return state, loss_total, end - count
        return state, loss_total, -1


class _RowMemory:
    """SAGA's row memory (``State.row_memory``, one stored derivative per training row,
    the engine's array) for rows that arrive in blocks. Block number ``b`` owns the run of
    places ``offsets[b] .. + its rows``, given when it is first read (a block holds the same
    rows in every epoch, whatever the order it is visited in), row ``r`` of the block place
    ``offsets[b] + r``. A kernel numbers the rows it is given 0, 1, ... and reads ``n`` from
    the memory's length: it gets a scratch array of length ``n`` whose first entries are its
    rows' places (:meth:`local`), copied back after it."""

    def __init__(self, n_rows: int):
        self.offsets: dict[int, int] = {}
        self.free = 0
        self.scratch = np.zeros(n_rows)

    @property
    def active(self) -> bool:
        return self.scratch.shape[0] > 0

    @staticmethod
    def of(source, state: State) -> _RowMemory:
        """The source's memory for ``state``'s rule (inactive, never used, without one)."""
        if not state.row_memory.shape[0]:
            return _NO_MEMORY
        memory = getattr(source, "_row_memory", None)
        if memory is None or memory.scratch.shape[0] != state.row_memory.shape[0]:
            memory = source._row_memory = _RowMemory(state.row_memory.shape[0])
        return memory

    def ids(self, number: int, rows: int) -> np.ndarray | None:
        """The places of the ``rows`` rows of block ``number`` (None: inactive)."""
        if not self.active:
            return None
        start = self.offsets.get(number)
        if start is None:
            if self.free + rows > self.scratch.shape[0]:
                raise ValueError(
                    f"the blocks hold more rows than the source's n_rows="
                    f"{self.scratch.shape[0]} (block {number}: {rows} rows after "
                    f"{self.free}); optimizer='saga' keeps one derivative per row and needs "
                    f"n_rows to count the rows the blocks yield."
                )
            start = self.offsets[number] = self.free
            self.free += rows
        return np.arange(start, start + rows, dtype=np.int64)

    @contextlib.contextmanager
    def local(self, state: State, ids):
        """``state`` with the scratch memory holding the rows ``ids`` first; written back
        to the engine's memory afterwards (``ids`` None: ``state`` as it is)."""
        if ids is None:
            yield state
            return
        count = ids.shape[0]
        self.scratch[:count] = state.row_memory[ids]
        try:
            yield state._replace(row_memory=self.scratch)
        finally:
            state.row_memory[ids] = self.scratch[:count]


_NO_MEMORY = _RowMemory(0)


class _Carry:
    """The rows of a mini-batch that spans blocks, gathered until the batch is complete
    (with their row-memory places, ``ids``, under SAGA)."""

    def __init__(self, batch: int, d: int, dtype):
        self.X = np.empty((batch, d), dtype=dtype)
        self.y = np.empty(batch, dtype=dtype)
        self.count = 0
        self.ids: list[np.ndarray] = []

    def fill(self, X, y, rows, ids=None) -> int:
        """Append up to the batch's remaining room from ``rows`` of the block; returns how
        many rows were taken."""
        take = min(self.X.shape[0] - self.count, rows.shape[0])
        chosen = rows[:take]
        _keep_ids(self.ids, ids, chosen)
        self.X[self.count : self.count + take] = X[chosen]
        self.y[self.count : self.count + take] = y[chosen]
        self.count += take
        return take

    def full(self) -> bool:
        return self.count == self.X.shape[0]

    def take(self):
        X, y = self.X[: self.count], self.y[: self.count]
        self.count = 0
        return X, y

    def take_ids(self):
        """The places of the rows :meth:`take` gave (None: no SAGA memory)."""
        return _take_ids(self)


def _keep_ids(kept: list, ids, chosen) -> None:
    if ids is not None and chosen.shape[0]:
        kept.append(ids[chosen])


def _take_ids(carry):
    if not carry.ids:
        return None
    ids = np.concatenate(carry.ids)
    carry.ids = []
    return ids


def _peek_sparse(visits):
    """``(visits, whether the blocks are CSR)``, from the first block (put back)."""
    first = next(visits, None)
    if first is None:
        return iter(()), False
    return itertools.chain([first], visits), is_sparse(first[0])


def _dense_batches(X, y, rows, batch, spec, state, parallel):
    """The mini-batches of the dense rows ``rows`` (empty: all) of ``X``, in that order."""
    return batch_epoch(X, y, _NO_WEIGHTS, rows, batch, spec, state, parallel, 0)


def _csr_batches(parts, y, rows, batch, spec, state, parallel):
    """The mini-batches of the CSR rows ``rows`` of ``parts`` (``(data, indices, indptr)``;
    ``rows``: consecutive positions, empty: all), read in place by ``batch_epoch_csr``."""
    if rows.shape[0]:
        lo = int(rows[0])
        parts, y = _csr_range(parts, lo, lo + rows.shape[0]), y[lo : lo + rows.shape[0]]
    return _csr_kernels().batch_epoch_csr(
        *parts, y, _NO_WEIGHTS, _NO_ORDER, batch, spec, state, parallel
    )


def _csr_in_order(X, y, rows, shuffled: bool):
    """A CSR block as ``(data, indices, indptr)``, its targets and positions, with its rows
    in the epoch's order ``rows`` (shuffled: a copy, one pass over its non-zeros), so that
    every batch is a run of consecutive rows: the CSR kernels read all the rows they are
    given, in the order given."""
    if shuffled:
        X, y = X[rows], y[rows]
    return (X.data, X.indices, X.indptr), y, np.arange(rows.shape[0], dtype=np.int64)


def _csr_range(parts, lo: int, hi: int):
    """Rows ``lo..hi`` of CSR ``parts``: views of the values and column indices, the row
    pointers shifted to start at 0 (a copy of ``hi - lo + 1`` numbers)."""
    data, indices, indptr = parts
    start, stop = indptr[lo], indptr[hi]
    return data[start:stop], indices[start:stop], indptr[lo : hi + 1] - start


class _CsrCarry:
    """:class:`_Carry` for CSR rows: copies of the runs of rows taken (consecutive rows of
    a block in epoch order), joined into one CSR batch once it is complete."""

    def __init__(self, batch: int):
        self.batch = batch
        self.pieces: list[tuple] = []
        self.count = 0
        self.ids: list[np.ndarray] = []

    def fill(self, parts, y, rows, ids=None) -> int:
        """Append up to the batch's remaining room from ``rows`` (consecutive) of the block;
        returns how many rows were taken."""
        take = min(self.batch - self.count, rows.shape[0])
        _keep_ids(self.ids, ids, rows[:take])
        if take:
            lo = int(rows[0])
            data, indices, indptr = _csr_range(parts, lo, lo + take)
            self.pieces.append(
                (data.copy(), indices.copy(), np.diff(indptr), y[lo : lo + take].copy())
            )
            self.count += take
        return take

    def full(self) -> bool:
        return self.count == self.batch

    def take(self):
        """The carried rows as ``((data, indices, indptr), y)``; the carry is emptied."""
        columns = zip(*self.pieces, strict=True)
        data, indices, lengths, y = (np.concatenate(column) for column in columns)
        indptr = np.zeros(self.count + 1, dtype=lengths.dtype)
        np.cumsum(lengths, out=indptr[1:])
        self.pieces, self.count = [], 0
        return (data, indices, indptr), y

    def take_ids(self):
        """The places of the rows :meth:`take` gave (None: no SAGA memory)."""
        return _take_ids(self)
