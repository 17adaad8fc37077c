"""``fit_csv`` with k > 1 classes: one-vs-rest or softmax models from a CSV, one pass over
each cached block per epoch.

The first pass is ``fit_csv``'s (``fastgd.stream``): the same cache, encoding, missing-cell
policy and label collection. The epochs drive the k-output kernels
(``fastgd._kernels.multi``) block by block: each block of the cache (``_CsvSource``, a
:class:`fastgd.sources.BlockSource`) is encoded (dense, or CSR with text features), its
labels turned into class indices, and handed to the per-sample or mini-batch kernel with
the shared state (``W`` (k, d), ``b`` (k,), the step counter), so each row is read once per
epoch for all k models and memory stays bounded by a block. The epoch loop (step size,
back-off, stopping, averaging, callback) is ``fastgd.multi``'s.

With ``shuffle=False`` and a constant step, the per-sample epochs visit the rows in file
order, exactly as ``fastgd.fit(X, y, multiclass=...)`` does on the same rows: the same
model (``tests/test_kcli.py``). With shuffling, the blocks come in a random order and each
block's rows in a random order (as the single-output ``BlockSource`` epochs).

Starting weights and slots (``--resume``) are those of the k vectors; a held-out
``validation_fraction`` stops on the accuracy of the largest score (``fit_csv``'s
``validation_score``). What is not here (each refused with a message): ``strategy="full"``,
``auto``'s range test for the adaptive rules, and the optimizers that ``fastgd.multi`` does
not run on the rows at hand (:data:`fastgd.multi.SUPPORTED`).
"""

from __future__ import annotations

import types

import numpy as np

from . import options
from ._kernels.multi import (
    OVR,
    SOFTMAX,
    CsrMultiRows,
    MultiRows,
    multi_batch_epoch,
    multi_batch_epoch_csr,
    multi_sgd_epoch,
    multi_sgd_epoch_csr,
)
from ._kernels.order import fill_epoch_order
from ._thresholds import parallel_batches
from ._validation import is_sparse
from .multi import (
    SOFTMAX_CURVATURE,
    SUPPORTED,
    MultiFitResult,
    _check_supported,
    _Loop,
    _starting_weights,
    zero_model_loss,
)

__all__ = ["fit_k_classes", "needs_k_classes"]

#: What fit_csv trains with k > 1 classes, for the refusals' messages.
CSV_SUPPORTED = (
    "fit_csv (fastgd train) with more than two classes or multiclass='multinomial' runs "
    "strategy 'sgd' or 'minibatch'; for strategy='full', use fastgd.fit(X, y, "
    "multiclass=...) on arrays in memory"
)
_EMPTY = np.empty(0)


def needs_k_classes(classes, loss: options.Loss, multiclass: str) -> bool:
    """Whether a CSV's classification trains k weight vectors: more than two classes, or
    the softmax model."""
    if not loss.classification:
        return False
    return multiclass == "multinomial" or np.size(classes) > 2


def check_k_class_options(resolved: dict) -> None:
    """Refuse, naming what works, what the block epochs of k classes do not run."""
    if resolved["strategy"].name == "full":
        raise ValueError(f"strategy='full' is not supported here: {CSV_SUPPORTED}.")
    if resolved["rule"].row_memory:
        raise ValueError(
            f"optimizer={resolved['optimizer']!r} keeps one stored derivative per row of the "
            "whole data set; it runs on arrays in memory (fastgd.fit) only."
        )
    _check_supported(resolved, {}, sparse=False)


def class_lookup(stats) -> np.ndarray | None:
    """For a text target, each code of the level table -> the index of its string in the
    (sorted) classes (-1: a level that is no class); None for numeric labels."""
    levels = stats.levels
    if levels is None or levels.target_levels is None:
        return None
    position = {str(label): i for i, label in enumerate(np.asarray(stats.classes).tolist())}
    return np.array([position.get(str(level), -1) for level in levels.target_levels], np.int64)


def class_indices(y: np.ndarray, classes: np.ndarray, lookup: np.ndarray | None) -> np.ndarray:
    """The class index (int64) of each row's label ``y`` (numbers, or a text target's
    codes)."""
    if lookup is not None:
        return np.ascontiguousarray(lookup[np.asarray(y, dtype=np.int64)])
    return np.searchsorted(classes, y).astype(np.int64)


class _BlockEpochs:
    """One epoch: every block of the source, in order (or shuffled), through the k-output
    kernels with the loop's state. The ``run(spec, state)`` of ``fastgd.multi``'s loop."""

    def __init__(self, source, resolved: dict, mode: int, k: int):
        self.source = source
        self.mode = mode
        self.k = k
        self.strategy = resolved["strategy"].name
        self.batch = 1 if self.strategy == "sgd" else int(resolved["batch_size"])
        self.shuffled = resolved["shuffle_mode"] != options.SHUFFLE_NONE
        self.rng = resolved["rng"]
        self.plain = resolved["rule"].name == "sgd"
        self.epochs_run = 0
        values = source.values_per_row * k
        self.parallel = parallel_batches(self.batch, values)

    def _row_order(self, length: int) -> np.ndarray:
        rows = np.empty(length, dtype=np.int64)
        if self.shuffled:
            fill_epoch_order(rows, options.SHUFFLE_FULL, 0, self.rng.integers(2**63))
        else:
            rows[:] = np.arange(length)
        return rows

    def _block(self, X, labels, spec, state):
        order = self._row_order(X.shape[0])
        Y = np.empty((0, self.k), dtype=X.dtype)
        if is_sparse(X):
            if not self.plain:
                raise ValueError(f"an optimizer on CSR rows (text features): {SUPPORTED}.")
            rows = CsrMultiRows(X.data, X.indices, X.indptr, Y, labels, _EMPTY, order)
            if self.strategy == "sgd":
                return multi_sgd_epoch_csr(rows, self.mode, spec, state)
            return multi_batch_epoch_csr(rows, self.mode, self.batch, spec, state)
        rows = MultiRows(np.ascontiguousarray(X), Y, labels, _EMPTY, order)
        if self.strategy == "sgd":
            return multi_sgd_epoch(rows, self.mode, spec, state, 0)
        return multi_batch_epoch(rows, self.mode, self.batch, spec, state, self.parallel)

    def run(self, spec, state):
        source = self.source
        count = source.block_count()
        block_order = self.rng.permutation(count) if self.shuffled and count > 1 else None
        totals = np.zeros(self.k)
        scratch = np.zeros(self.k)
        total, t, position = 0.0, state.t, 0
        for X, labels in source.blocks(block_order):
            block_total, t, bad = self._block(X, labels, spec, state._replace(t=t, losses=scratch))
            total += block_total
            totals += scratch
            if bad >= 0:
                return total, t, position + bad
            position += X.shape[0]
            if source.progress is not None:
                source.progress(self.epochs_run + 1, position, source.n_rows)
        state.losses[:] = totals
        self.epochs_run += 1
        if source.on_epoch_state is not None:  # a checkpoint's (t, slots) after the steps
            source.on_epoch_state(t, state.slots)
        return total, t, -1


def fit_k_classes(source, stats, resolved: dict, *, multiclass: str, auto_step, coef_init=None,
                  intercept_init=None, slots_init=None) -> MultiFitResult:  # fmt: skip
    """The epochs of a k-class fit on ``source`` (``fastgd.stream._CsvSource`` of k
    classes), after ``fit_csv``'s first pass (``stats``). The weights, the starting ones
    (``coef_init`` (k, d), ``intercept_init`` (k,): e.g. a --resume's) and the rule's
    ``slots_init`` (k, slots, d + 1) are in the space the rows are encoded in
    (standardised with ``standardize``)."""
    multinomial = multiclass == "multinomial"
    classes = np.asarray(stats.classes)
    k = classes.shape[0]
    mode = SOFTMAX if multinomial else OVR
    d = source.n_features
    epochs = _BlockEpochs(source, resolved, mode, k)
    # Mini-batches never span two blocks: blocks of a whole number of batches keep them
    # those of fastgd.fit on the same rows (up to skipped rows, which shift them).
    source.block_rows = -(-source.block_rows // epochs.batch) * epochs.batch
    eta = resolved["eta0"]
    if resolved["schedule"].name == "auto":
        loss = resolved["loss"]
        if multinomial:
            import dataclasses

            loss = dataclasses.replace(loss, curvature=SOFTMAX_CURVATURE)
        sample = source.sample(resolved["rng"])
        eta = auto_step(sample.rows, _EMPTY, loss, epochs.batch, source.max_row_norm())
    data = types.SimpleNamespace(X=types.SimpleNamespace(shape=(source.n_rows, d)), k=k,
                                 classes=classes)  # fmt: skip
    W, b = _starting_weights(k, d, source.dtype, coef_init, intercept_init)
    scale = zero_model_loss(resolved["loss"].name, resolved["epsilon"], k, mode)
    loop = _Loop(data, resolved, W, b, eta, None, None, scale=scale)
    if slots_init is not None:
        _start_slots(loop.slots, slots_init)
    while len(loop.history) < resolved["max_iter"] and loop.step(epochs):
        pass
    return loop.result(multiclass)


def _start_slots(slots: np.ndarray, slots_init) -> None:
    """The loop's rule state from ``slots_init``, checked against its shape (k, slots,
    d + 1)."""
    given = np.asarray(slots_init, dtype=np.float64)
    if given.shape != slots.shape:
        raise ValueError(f"slots_init has shape {given.shape}; this fit needs {slots.shape}.")
    slots[:] = given


def fold_scaler(result: MultiFitResult, stats, dtype: np.dtype) -> None:
    """The k weight vectors on the raw features (``extras["scaler"]`` keeps the means and
    scales, ``extras["standardized_coef"]``/``["standardized_intercept"]`` the weights as
    trained), row by row as ``fastgd.stream`` folds one."""
    result.extras["scaler"] = None
    if stats.mean is None:
        return
    result.extras["scaler"] = {"mean": stats.mean, "scale": stats.scale}
    standardized = result.coef.astype(np.float64)
    raw = standardized / stats.scale
    result.extras["standardized_coef"] = result.coef
    result.extras["standardized_intercept"] = np.asarray(result.intercept, dtype=np.float64)
    intercepts = np.asarray(result.intercept, dtype=np.float64) - raw @ stats.mean
    result.intercept = intercepts.astype(dtype)
    result.coef = raw.astype(dtype)
