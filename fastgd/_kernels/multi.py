r"""Epoch loops for k outputs at once: one read of a row updates all k models.

The weights are a ``(k, d)`` C-order matrix ``W`` (the dtype of X) and the intercepts a
float64 vector ``b`` of length k. For each row the kernels compute the k scores
``p_o = x·W[o] + b[o]`` from one read of the row, the k loss derivatives, and then update
all k rows of ``W``. Three kinds of output (``mode``):

- ``OVR``: one binary model per class, ``y_o = +1`` if the row's label is ``o`` else
  ``-1``, loss ``spec.loss`` (one-vs-rest);
- ``MULTI_OUTPUT``: one regression model per column of ``Y``, loss ``spec.loss``;
- ``SOFTMAX``: multinomial logistic regression, ``L = log Σ_o e^{p_o} − p_y``, whose
  derivative is ``softmax(p)_o − [y = o]``.

Plain SGD steps: ``W[o] ← prox_{η·l1}(W[o]·(1 − η·l2) − η·d_o·x)``, ``b[o] ← b[o] −
η·d_o``, with the derivative of one row (per-sample) or the mean over a batch, exactly the
arithmetic of ``epochs.sgd_epoch``/``batch_epoch`` per output; on dense rows the optimizer
rules too (momentum, AdaGrad, RMSProp, Adam, AdamW, SAGA: ``rules.optimizer_update`` and
``apply_update`` on each output's row of ``W`` with its own slots and row memory), so
that for ``OVR`` and ``MULTI_OUTPUT`` each row of ``W`` follows the
single-output kernel run with the same order and steps (up to the rounding of
reassociated dot products). Mini-batches are summed in chunks of rows (as ``epochs``:
their count depends on the batch size only) merged in chunk order: results do not depend
on the number of threads.

Conventions as ``epochs.py``: ``sample_weight`` empty = all ones, ``order`` empty = file
order; ``losses`` (float64, k) receives each output's ``Σ s·L`` (softmax: each row's loss
goes to its label's entry); the kernels return ``(Σ s·L, t after the epoch, bad)`` with
``bad`` the position of the first row (SGD) or batch with a non-finite score or loss, -1 if
none. ``W``, ``b`` and the running means are updated in place.

CSR kernels keep ``W = scale·V`` with one scale shared by all outputs (every output decays
by the same ``1 − η·l2``), so a step costs O(k · non-zeros); with L1 or averaging they
take every step densely (O(k·d): correct, not fast).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from ._config import kernel, parallel_kernel, scalar
from .epochs import MAX_CHUNKS, chunk_rows_for
from .memory import (
    plan_block_stream,
    prefetch_bytes,
    prefetch_for_order,
    row_ahead,
)
from .records import State
from .rules import apply_update, optimizer_update, row_derivative
from .scalar import decay_factor, is_finite, loss_and_derivative, soft_threshold, step_size

#: ``mode`` codes of the kernels (written as literals where a loop is specialised).
OVR = 0
MULTI_OUTPUT = 1
SOFTMAX = 2

#: The CSR kernels' shared scale is folded back into ``W`` below this (as ``sparse.py``).
SCALE_RENORMALISE_BELOW = 2.0**-50


class MultiRows(NamedTuple):
    """Rows of k outputs: ``X`` (dense (n, d), or the CSR arrays ``data, indices,
    indptr``), ``Y`` (n, k) targets of ``MULTI_OUTPUT`` (shape (0, k) otherwise),
    ``labels`` (int64, n: the class of each row, for ``OVR``/``SOFTMAX``; empty otherwise),
    ``sample_weight`` and ``order`` as in ``epochs.py``."""

    X: np.ndarray
    Y: np.ndarray
    labels: np.ndarray
    sample_weight: np.ndarray
    order: np.ndarray


class CsrMultiRows(NamedTuple):
    """:class:`MultiRows` with X as the three CSR arrays."""

    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    Y: np.ndarray
    labels: np.ndarray
    sample_weight: np.ndarray
    order: np.ndarray


class MultiState(NamedTuple):
    """The training state: ``W`` (k, d) and ``b`` (k,) float64, updated in place; ``t`` the
    step counter at the start; ``avg_W`` (k, d) and ``avg_b`` (k,) float64 running means
    (both shape-0 arrays: no averaging); ``losses`` (k,) float64 filled with each output's
    ``Σ s·L`` over the epoch; ``slots`` (k, rule.slots, d + 1) and ``row_memory`` (k, n or
    0) float64: each output's update-rule state (``records.rule_arrays``), updated in
    place."""

    W: np.ndarray
    b: np.ndarray
    t: float
    avg_W: np.ndarray
    avg_b: np.ndarray
    losses: np.ndarray
    slots: np.ndarray
    row_memory: np.ndarray


# ---------------------------------------------------------------------------------------------
# Per row: scores, derivatives.
# ---------------------------------------------------------------------------------------------


#: Outputs are taken in groups of this many (then one by one): one pass over a row serves
#: the group, its elements loaded once for all of them, with one accumulator per output so
#: that the loop still vectorises (AVX-512 here: 16 elements of each of the 4 rows of W a
#: turn). Measured against one output at a time (per-sample epoch, 200k x 100, file
#: order, interleaved runs): 1.58x faster at k = 5, 1.41x at k = 10, 1.24x on 10 classes
#: one-vs-rest in a block order. Each output's arithmetic is unchanged (same results).
GROUP = 4


@scalar
def _dots_four(X, i, W, o):
    """``x_i·W[o + g]`` for ``g`` = 0..3 in one pass over row ``i``."""
    dtype = X.dtype.type
    a0 = a1 = a2 = a3 = dtype(0.0)
    for j in range(X.shape[1]):
        x = X[i, j]
        a0 += x * W[o, j]
        a1 += x * W[o + 1, j]
        a2 += x * W[o + 2, j]
        a3 += x * W[o + 3, j]
    return a0, a1, a2, a3


@scalar
def _dot_one(X, i, W, o):
    acc = X.dtype.type(0.0)
    for j in range(X.shape[1]):
        acc += X[i, j] * W[o, j]
    return acc


@scalar
def _all_finite(scores):
    """Whether every score is finite: one test per row, not a branch per output."""
    ok = True
    for o in range(scores.shape[0]):
        ok &= is_finite(scores[o])
    return ok


@scalar
def _row_scores(X, i, W, b, scores):
    """``scores[o] = x_i·W[o] + b[o]``; whether all are finite."""
    k = W.shape[0]
    o = 0
    while o + GROUP <= k:
        a0, a1, a2, a3 = _dots_four(X, i, W, o)
        scores[o] = a0 + b[o]
        scores[o + 1] = a1 + b[o + 1]
        scores[o + 2] = a2 + b[o + 2]
        scores[o + 3] = a3 + b[o + 3]
        o += GROUP
    for r in range(o, k):
        scores[r] = _dot_one(X, i, W, r) + b[r]
    return _all_finite(scores)


@scalar
def _csr_row_scores(data, indices, indptr, i, W, scale, b, scores):
    """:func:`_row_scores` of CSR row ``i`` with ``W`` scaled by ``scale``."""
    ok = True
    lo, hi = indptr[i], indptr[i + 1]
    for o in range(W.shape[0]):
        acc = W.dtype.type(0.0)
        for q in range(lo, hi):
            acc += data[q] * W[o, indices[q]]
        scores[o] = scale * acc + b[o]
        ok = ok and is_finite(scores[o])
    return ok


@scalar
def _derivatives(mode, spec, Y, labels, sample_weight, i, scores, derivs, losses):
    """``derivs[o] = s·dL/dp_o`` of row ``i`` at ``scores``, ``losses[o] += s·L_o``;
    returns the row's ``Σ_o s·L_o``."""
    weight = sample_weight[i] if sample_weight.shape[0] > 0 else 1.0
    k = scores.shape[0]
    if mode == SOFTMAX:
        label = labels[i]
        top = scores[0]
        for o in range(1, k):
            top = max(top, scores[o])
        total = 0.0
        for o in range(k):
            derivs[o] = math.exp(scores[o] - top)
            total += derivs[o]
        for o in range(k):
            derivs[o] = weight * (derivs[o] / total - (1.0 if o == label else 0.0))
        value = weight * (math.log(total) + top - scores[label])
        losses[label] += value
        return value
    row_total = 0.0
    for o in range(k):
        if mode == OVR:
            target = 1.0 if labels[i] == o else -1.0
        else:
            target = Y[i, o]
        value, deriv = loss_and_derivative(spec.loss, scores[o], target, spec.epsilon)
        if sample_weight.shape[0] > 0:
            value *= weight
            deriv *= weight
        derivs[o] = deriv
        losses[o] += value
        row_total += value
    return row_total


# ---------------------------------------------------------------------------------------------
# Steps.
# ---------------------------------------------------------------------------------------------


@scalar
def _dense_step(W, b, grad_rows, g, coef_scale, derivs, eta, spec):
    """``W[o] ← prox(W[o]·(1 − η·l2) − (η·coef_scale·c_o)·row_o)``, ``b[o] −= η·coef_scale·
    derivs[o]``: for one row, ``row_o = x`` (``grad_rows`` 2-D, row ``g``) and
    ``c_o = derivs[o]``; for a batch (``g`` < 0), ``row_o = grad_rows[o]`` and ``c_o = 1``."""
    dtype = W.dtype.type
    decay = dtype(decay_factor(eta, spec.l2))
    threshold = dtype(eta * spec.l1)
    for o in range(W.shape[0]):
        if g >= 0:
            scale = dtype(eta * derivs[o])
            r = g
        else:
            scale = dtype(eta * coef_scale)
            r = o
        if spec.fit_intercept:
            b[o] -= eta * coef_scale * derivs[o]
        if spec.l1 > 0.0:
            for j in range(W.shape[1]):
                W[o, j] = soft_threshold(W[o, j] * decay - scale * grad_rows[r, j], threshold)
        else:
            for j in range(W.shape[1]):
                W[o, j] = W[o, j] * decay - scale * grad_rows[r, j]


@scalar
def _output_state(state, o, t, no_average):
    """Output ``o``'s training state as the single-output rules read it (``records.State``:
    views of its row of ``W``, its slots and row memory)."""
    return State(state.W[o], state.b[o], t, no_average, no_average, state.slots[o],
                 state.row_memory[o], no_average)  # fmt: skip


@scalar
def _rule_row_step(X, i, following, state, derivs, eta, t, spec, scores, no_average):
    """The per-sample step of an optimizer rule (``rules.optimizer_update``) for every
    output, with the scores of row ``following`` under the new weights riding along;
    returns whether they are finite."""
    ok = True
    for o in range(state.W.shape[0]):
        single = _output_state(state, o, t, no_average)
        coef = row_derivative(spec, single.row_memory, i, derivs[o])
        intercept, next_dot = optimizer_update(
            spec, single, X[i], 1.0, coef, 1, eta, t, state.b[o], X[following]
        )
        state.b[o] = intercept
        scores[o] = next_dot + intercept
        ok = ok and is_finite(scores[o])
    return ok


@scalar
def _average(state, t, average_start):
    """Averaged SGD after step ``t`` (as ``epochs._average_step``), for every output."""
    if state.avg_W.shape[0] == 0 or t < average_start:
        return
    _fold_into_means(state.W, state.b, state.avg_W, state.avg_b, t, average_start)


@scalar
def _fold_into_means(W, b, avg_W, avg_b, t, average_start):
    """The running means' update of :func:`_average` (``t ≥ average_start``), from arrays
    the caller unpacked once: a per-row loop that reads them from ``state`` pays atomic
    reference counts on every row."""
    share = 1.0 / (t - average_start + 1.0)
    for o in range(W.shape[0]):
        for j in range(W.shape[1]):
            avg_W[o, j] += (W[o, j] - avg_W[o, j]) * share
        avg_b[o] += (b[o] - avg_b[o]) * share


# ---------------------------------------------------------------------------------------------
# Prefetch by address: no array crosses into a helper in the row loop.
# ---------------------------------------------------------------------------------------------
#
# Every array passed to an inlined helper is a new reference (an atomic increment and
# decrement). Numba's pass that removes such pairs gave up on the row loop once it held
# ``memory.prefetch_for_order`` (or the former ``epochs._prefetch``), and then on the arrays of the
# step too: 8 atomic pairs a row, 40-85% of an epoch's time in NRT_incref/NRT_decref
# (perf, 200k x 100, k = 1 and 5; the single-output ``epochs`` loops show the same, 56%).
# ``memory``'s address helpers take the rows' address and plain integers instead (its requests:
# the row ``ROWS_AHEAD`` positions ahead outside runs of consecutive rows, and in a block
# order the next block too, spread over this block's steps); the row loop then holds no
# reference count (counted in the optimised LLVM IR: 0, was 57). A helper that takes
# ``order`` and the plan and returns it brought 3 back: the loop spells it out. Both
# requests in a block order, unlike ``memory.prefetch_for_order`` (where they competed
# for one output): a step of k outputs is long enough for both, and the rows of the
# streamed block (3.2 MB at 4096 x 100) wait in L3, not L1 (measured: 10 classes 41.1 ->
# 33.1 ms an epoch, k = 5 25.2 -> 18.1, k = 2 20.2 -> 13.2).


# ---------------------------------------------------------------------------------------------
# Dense kernels.
# ---------------------------------------------------------------------------------------------


@scalar
def _new_weight(w, x, decay, scale, threshold, l1):
    """One coordinate of :func:`_dense_step` (``l1`` a literal: the proximal step or none)."""
    value = w * decay - scale * x
    if l1:
        return soft_threshold(value, threshold)
    return value


@scalar
def _step_four(X, i, following, W, o, decay, scales, threshold, l1):
    """The step of outputs ``o..o + 3`` on row ``i`` (``scales[g] = η·d_{o+g}``); returns
    ``x_following·W[o + g]`` under the new weights. Each element of the two rows is loaded
    once for the four outputs."""
    dtype = W.dtype.type
    s0, s1, s2, s3 = (
        dtype(scales[o]),
        dtype(scales[o + 1]),
        dtype(scales[o + 2]),
        dtype(scales[o + 3]),
    )
    a0 = a1 = a2 = a3 = dtype(0.0)
    for j in range(W.shape[1]):
        x = X[i, j]
        x_next = X[following, j]
        v0 = _new_weight(W[o, j], x, decay, s0, threshold, l1)
        v1 = _new_weight(W[o + 1, j], x, decay, s1, threshold, l1)
        v2 = _new_weight(W[o + 2, j], x, decay, s2, threshold, l1)
        v3 = _new_weight(W[o + 3, j], x, decay, s3, threshold, l1)
        W[o, j] = v0
        W[o + 1, j] = v1
        W[o + 2, j] = v2
        W[o + 3, j] = v3
        a0 += x_next * v0
        a1 += x_next * v1
        a2 += x_next * v2
        a3 += x_next * v3
    return a0, a1, a2, a3


@scalar
def _step_one(X, i, following, W, o, decay, scales, threshold, l1):
    """:func:`_step_four` for output ``o`` alone."""
    dtype = W.dtype.type
    scale = dtype(scales[o])
    acc = dtype(0.0)
    for j in range(W.shape[1]):
        value = _new_weight(W[o, j], X[i, j], decay, scale, threshold, l1)
        W[o, j] = value
        acc += X[following, j] * value
    return acc


@scalar
def _fused_row_step(X, i, following, W, b, derivs, eta, spec, scores, l1):
    """The per-sample step of row ``i`` (as :func:`_dense_step`) fused with the scores of
    row ``following`` under the new weights: one pass over ``W`` per row instead of two
    (the next row's loads leave the serial chain of steps, as ``epochs._fused_step``).
    ``l1`` (a literal): whether the proximal step is taken. ``derivs`` is overwritten
    with the steps ``η·d_o``. Returns whether the new scores are finite."""
    dtype = W.dtype.type
    decay = dtype(decay_factor(eta, spec.l2))
    threshold = dtype(eta * spec.l1)
    k = W.shape[0]
    for o in range(k):
        derivs[o] *= eta
        if spec.fit_intercept:
            b[o] -= derivs[o]
    o = 0
    while o + GROUP <= k:
        if l1:
            a0, a1, a2, a3 = _step_four(X, i, following, W, o, decay, derivs, threshold, True)
        else:
            a0, a1, a2, a3 = _step_four(X, i, following, W, o, decay, derivs, threshold, False)
        scores[o] = a0 + b[o]
        scores[o + 1] = a1 + b[o + 1]
        scores[o + 2] = a2 + b[o + 2]
        scores[o + 3] = a3 + b[o + 3]
        o += GROUP
    for r in range(o, k):
        if l1:
            acc = _step_one(X, i, following, W, r, decay, derivs, threshold, True)
        else:
            acc = _step_one(X, i, following, W, r, decay, derivs, threshold, False)
        scores[r] = acc + b[r]
    return _all_finite(scores)


@kernel
def multi_sgd_epoch(rows, mode, spec, state, block_rows):
    """One epoch of per-sample SGD over ``rows`` (:class:`MultiRows`) for all k outputs.
    ``block_rows`` > 0: ``order`` is a ``shuffle="block"`` order (a prefetch hint only).
    Returns ``(Σ s·L, t, bad)``."""
    # One inlined loop per mode, the mode a literal in each (OVR = 0, MULTI_OUTPUT = 1,
    # SOFTMAX = 2; a module constant passed instead was not folded). Measured (100k x 100,
    # file order, squared error): the run-time mode took 28.7 ms an epoch at k = 1 and
    # 51 ms at k = 5, the literal 6.1 and 16.1 (single-output sgd_epoch: 3.5 ms).
    # Then (200k x 100, one epoch, file order, min of 7 interleaved runs on a shared
    # machine), before -> after grouped outputs, no reference counts in the row loop, one
    # fused pass also under averaging or L1 (the L1 choice a literal per group: a run-time
    # flag in the j loop made L1 epochs 12% slower): k = 1 18.7 -> 7.9 ms, k = 5 31.8 ->
    # 21.2, k = 10 51.2 -> 36.5, k = 5 averaged 49.4 -> 27.0 (single-output sgd_epoch at
    # k = 1: 11.5 ms). Shuffled and block orders: see the prefetch in _sgd_loop.
    if mode == 0:
        return _sgd_loop(rows, 0, spec, state, block_rows)
    if mode == 1:
        return _sgd_loop(rows, 1, spec, state, block_rows)
    return _sgd_loop(rows, 2, spec, state, block_rows)


@scalar
def _sgd_loop(rows, mode, spec, state, block_rows):
    """The loop of :func:`multi_sgd_epoch` for the output ``mode`` (a literal in each
    inlined copy)."""
    X, Y, labels, sample_weight, order = rows
    W, b = state.W, state.b
    k = W.shape[0]
    use_order = order.shape[0] > 0
    n = order.shape[0] if use_order else X.shape[0]
    scores = np.empty(k)
    derivs = np.empty(k)
    losses, avg_W, avg_b = state.losses, state.avg_W, state.avg_b
    averaging = avg_W.shape[0] > 0
    losses[:] = 0.0
    t = state.t
    total = 0.0
    finite = n == 0 or _row_scores(X, order[0] if use_order else 0, W, b, scores)
    l1 = spec.l1 > 0.0
    # Prefetched with each row: its targets (Y's row or the label), else a miss on every
    # row of a shuffled order, on the chain of steps (measured, shuffled, an epoch: k = 5
    # 41.0 -> 20.1 ms, 10 classes 43.3 -> 32.4).
    address, row_bytes = np.int64(X.ctypes.data), X.shape[1] * X.itemsize
    if mode == 1:
        target_address, target_bytes = np.int64(Y.ctypes.data), Y.shape[1] * Y.itemsize
    else:
        target_address, target_bytes = np.int64(labels.ctypes.data), labels.itemsize
    next_block = begin = end = quota = target_begin = target_end = target_quota = 0
    for position in range(n):
        if use_order and block_rows > 0:
            if position >= next_block:
                next_block, begin, end, quota = plan_block_stream(
                    order, position, block_rows, row_bytes
                )
                _, target_begin, target_end, target_quota = plan_block_stream(
                    order, position, block_rows, target_bytes
                )
            stop = min(begin + quota, end)
            prefetch_bytes(address, begin, stop)
            begin = stop
            stop = min(target_begin + target_quota, target_end)
            prefetch_bytes(target_address, target_begin, stop)
            target_begin = stop
        if use_order:
            ahead = row_ahead(order, position)
            if ahead >= 0:
                prefetch_bytes(address, ahead * row_bytes, (ahead + 1) * row_bytes)
                prefetch_bytes(target_address, ahead * target_bytes, (ahead + 1) * target_bytes)
        i = order[position] if use_order else position
        if not finite:
            return total + math.inf, t, position
        eta = step_size(spec, t)
        total += _derivatives(mode, spec, Y, labels, sample_weight, i, scores, derivs, losses)
        # The next row's scores ride along the step (the last row scores itself: a
        # prediction nobody reads); averaging reads the new weights after it.
        following = i
        if position + 1 < n:
            following = order[position + 1] if use_order else position + 1
        finite = _fused_row_step(X, i, following, W, b, derivs, eta, spec, scores, l1)
        if averaging and t >= spec.average_start:
            _fold_into_means(W, b, avg_W, avg_b, t, spec.average_start)
        t += 1.0
    return total, t, -1


@kernel
def multi_rule_sgd_epoch(rows, mode, spec, state, block_rows):
    """:func:`multi_sgd_epoch` under an optimizer rule (``spec.rule``): each output takes
    ``rules.optimizer_update`` with its own slots, the next row's scores riding along.

    A kernel of its own (the engine picks it), so that a fit with plain SGD never compiles
    the rules' inlined loops: inside ``multi_sgd_epoch`` they made its cold compile take
    minutes. The mode stays a run-time value here (the rules' per-row work dwarfs it)."""
    X, Y, labels, sample_weight, order = rows
    k = state.W.shape[0]
    use_order = order.shape[0] > 0
    n = order.shape[0] if use_order else X.shape[0]
    scores = np.empty(k)
    derivs = np.empty(k)
    stream = np.zeros(4, dtype=np.int64)
    no_average = np.empty(0)
    state.losses[:] = 0.0
    t = state.t
    total = 0.0
    finite = n == 0 or _row_scores(X, order[0] if use_order else 0, state.W, state.b, scores)
    for position in range(n):
        if use_order:
            prefetch_for_order(X, order, position, block_rows, stream)
        i = order[position] if use_order else position
        if not finite:
            return total + math.inf, t, position
        eta = step_size(spec, t)
        total += _derivatives(mode, spec, Y, labels, sample_weight, i, scores, derivs,
                              state.losses)  # fmt: skip
        following = i  # the last row scores itself (a prediction nobody reads)
        if position + 1 < n:
            following = order[position + 1] if use_order else position + 1
        finite = _rule_row_step(X, i, following, state, derivs, eta, t, spec, scores, no_average)
        _average(state, t, spec.average_start)
        t += 1.0
    return total, t, -1


@scalar
def _accumulate_chunk(c, rows, start, stop, mode, spec, state, G, sums, scratch):
    """Chunk ``c`` of the rows at positions ``start..stop``: ``G[c, o] = Σ d_o·x``,
    ``sums[c, 0, o] = Σ s·L_o``, ``sums[c, 1, o] = Σ d_o`` (scores at the weights in
    force); ``sums[c, 2, 0]`` = 1 if a score was not finite."""
    X, Y, labels, sample_weight, order = rows
    W, b = state.W, state.b
    k, d = W.shape
    chunk = chunk_rows_for(stop - start)
    lo = start + c * chunk
    hi = min(lo + chunk, stop)
    use_order = order.shape[0] > 0
    scores = scratch[c, 0]
    derivs = scratch[c, 1]
    for o in range(k):
        sums[c, 0, o] = 0.0
        sums[c, 1, o] = 0.0
        sums[c, 2, o] = 0.0
        for j in range(d):
            G[c, o, j] = 0.0
    for position in range(lo, hi):
        i = order[position] if use_order else position
        if not _row_scores(X, i, W, b, scores):
            sums[c, 2, 0] = 1.0
        _derivatives(mode, spec, Y, labels, sample_weight, i, scores, derivs, sums[c, 0])
        for o in range(k):
            # SAGA: the change of the row's stored derivative (rules.row_derivative).
            derivs[o] = row_derivative(spec, state.row_memory[o], i, derivs[o])
            sums[c, 1, o] += derivs[o]
            coef = X.dtype.type(derivs[o])
            for j in range(d):
                G[c, o, j] += coef * X[i, j]


@scalar
def _accumulate_literal(c, rows, start, stop, mode, spec, state, G, sums, scratch):
    """:func:`_accumulate_chunk` with the mode a literal in each copy (see
    :func:`multi_sgd_epoch`: a run-time mode in the row loop cost up to 4x)."""
    if mode == 0:
        _accumulate_chunk(c, rows, start, stop, 0, spec, state, G, sums, scratch)
    elif mode == 1:
        _accumulate_chunk(c, rows, start, stop, 1, spec, state, G, sums, scratch)
    else:
        _accumulate_chunk(c, rows, start, stop, 2, spec, state, G, sums, scratch)


@kernel
def _accumulate_serial(rows, start, stop, mode, spec, state, G, sums, scratch):
    chunk = chunk_rows_for(stop - start)
    n_chunks = (stop - start + chunk - 1) // chunk
    for c in range(n_chunks):
        _accumulate_literal(c, rows, start, stop, mode, spec, state, G, sums, scratch)
    return n_chunks


@parallel_kernel
def _accumulate_parallel(rows, start, stop, mode, spec, state, G, sums, scratch):
    chunk = chunk_rows_for(stop - start)
    n_chunks = (stop - start + chunk - 1) // chunk
    for c in numba.prange(n_chunks):
        _accumulate_literal(c, rows, start, stop, mode, spec, state, G, sums, scratch)
    return n_chunks


@scalar
def _merge(G, sums, n_chunks, grad, deriv_sums, losses):
    """``grad = Σ_c G[c]`` in chunk order, ``deriv_sums[o] = Σ_c sums[c, 1, o]``, adds the
    loss sums to ``losses``; returns ``(Σ s·L of the batch, any non-finite score)``."""
    k = grad.shape[0]
    batch_loss = 0.0
    bad = False
    for o in range(k):
        deriv_sums[o] = sums[0, 1, o]
        for j in range(grad.shape[1]):
            grad[o, j] = G[0, o, j]
    for c in range(1, n_chunks):
        for o in range(k):
            deriv_sums[o] += sums[c, 1, o]
            for j in range(grad.shape[1]):
                grad[o, j] += G[c, o, j]
    for c in range(n_chunks):
        bad = bad or sums[c, 2, 0] > 0.0
        for o in range(k):
            losses[o] += sums[c, 0, o]
            batch_loss += sums[c, 0, o]
    return batch_loss, bad


@scalar
def _batch_sums(rows, start, stop, mode, spec, state, parallel, work, grad, deriv_sums):
    """The gradient sums of the batch at positions ``start..stop`` (``grad``,
    ``deriv_sums``, chunks merged in order); returns ``(Σ s·L, a score not finite)``."""
    G, sums, scratch = work
    if parallel:
        n_chunks = _accumulate_parallel(rows, start, stop, mode, spec, state, G, sums, scratch)
    else:
        n_chunks = _accumulate_serial(rows, start, stop, mode, spec, state, G, sums, scratch)
    return _merge(G, sums, n_chunks, grad, deriv_sums, state.losses)


@scalar
def _batch_work(X, k):
    """The per-call buffers of a batch epoch: per-chunk gradients, sums and scratch."""
    G = np.empty((MAX_CHUNKS, k, X.shape[1]), dtype=X.dtype)
    return G, np.empty((MAX_CHUNKS, 3, k)), np.empty((MAX_CHUNKS, 2, k))


@kernel
def multi_batch_epoch(rows, mode, batch_size, spec, state, parallel):
    """One epoch of mini-batch gradient descent (full batch: ``batch_size ≥ n``) for all k
    outputs: each batch of ``m`` rows steps every output by the mean of its rows' gradients,
    all scored with the weights at the start of the batch. Returns ``(Σ s·L, t, bad)``."""
    X, order = rows.X, rows.order
    k, d = state.W.shape
    n = order.shape[0] if order.shape[0] > 0 else X.shape[0]
    work = _batch_work(X, k)
    grad = np.empty((k, d), dtype=X.dtype)
    deriv_sums = np.empty(k)
    state.losses[:] = 0.0
    t = state.t
    total = 0.0
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        batch_loss, bad = _batch_sums(rows, start, stop, mode, spec, state, parallel, work,
                                      grad, deriv_sums)  # fmt: skip
        total += batch_loss
        if bad or not is_finite(batch_loss):
            return total + math.inf, t, start
        eta = step_size(spec, t)
        _dense_step(state.W, state.b, grad, -1, 1.0 / (stop - start), deriv_sums, eta, spec)
        _average(state, t, spec.average_start)
        t += 1.0
    return total, t, -1


@kernel
def multi_rule_batch_epoch(rows, mode, batch_size, spec, state, parallel):
    """:func:`multi_batch_epoch` under an optimizer rule: each output takes
    ``rules.apply_update`` from its mean gradient with its own slots (SAGA: its own row
    memory). A kernel of its own, as :func:`multi_rule_sgd_epoch`."""
    X, order = rows.X, rows.order
    k, d = state.W.shape
    n = order.shape[0] if order.shape[0] > 0 else X.shape[0]
    work = _batch_work(X, k)
    grad = np.empty((k, d), dtype=X.dtype)
    deriv_sums = np.empty(k)
    no_average = np.empty(0)
    state.losses[:] = 0.0
    t = state.t
    total = 0.0
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        batch_loss, bad = _batch_sums(rows, start, stop, mode, spec, state, parallel, work,
                                      grad, deriv_sums)  # fmt: skip
        total += batch_loss
        if bad or not is_finite(batch_loss):
            return total + math.inf, t, start
        eta = step_size(spec, t)
        m = stop - start
        for o in range(k):
            single = _output_state(state, o, t, no_average)
            state.b[o] = apply_update(spec, single, grad[o], deriv_sums[o], 1.0 / m, m, eta,
                                      eta, t, state.b[o])  # fmt: skip
        _average(state, t, spec.average_start)
        t += 1.0
    return total, t, -1


@parallel_kernel
def multi_predict(X, W, b, out):
    """``out[i, o] = x_i·W[o] + b[o]``: one pass over X."""
    n = X.shape[0]
    chunk = 4096
    n_chunks = (n + chunk - 1) // chunk
    for c in numba.prange(n_chunks):
        for i in range(c * chunk, min((c + 1) * chunk, n)):
            for o in range(W.shape[0]):
                acc = X.dtype.type(0.0)
                for j in range(X.shape[1]):
                    acc += X[i, j] * W[o, j]
                out[i, o] = acc + b[o]


# ---------------------------------------------------------------------------------------------
# CSR kernels.
# ---------------------------------------------------------------------------------------------


@scalar
def _fold_scale(W, scale):
    """``W ← scale·W``; returns the new scale, 1."""
    if scale != 1.0:
        factor = W.dtype.type(scale)
        for o in range(W.shape[0]):
            for j in range(W.shape[1]):
                W[o, j] *= factor
    return 1.0


@scalar
def _csr_step(rows, i, state, derivs, coef_scale, scale, eta, spec, dense):
    """The step of CSR row ``i`` (``coef_scale`` 1) on ``W = scale·V``; returns the new
    scale. ``dense`` (L1 or averaging): the weights are decayed and thresholded in full."""
    data, indices, indptr = rows.data, rows.indices, rows.indptr
    W, b = state.W, state.b
    dtype = W.dtype.type
    decay = decay_factor(eta, spec.l2)
    for o in range(W.shape[0]):
        if spec.fit_intercept:
            b[o] -= eta * coef_scale * derivs[o]
    if dense:
        threshold = dtype(eta * spec.l1)
        factor = dtype(decay)
        for o in range(W.shape[0]):
            for j in range(W.shape[1]):
                W[o, j] *= factor
            step = dtype(eta * coef_scale * derivs[o])
            for q in range(indptr[i], indptr[i + 1]):
                W[o, indices[q]] -= step * data[q]
            if spec.l1 > 0.0:
                for j in range(W.shape[1]):
                    W[o, j] = soft_threshold(W[o, j], threshold)
        return 1.0
    new_scale = scale * decay
    if abs(new_scale) < SCALE_RENORMALISE_BELOW:
        # Fold the old scale into V and take this step's decay densely.
        _fold_scale(W, scale * decay)
        new_scale = 1.0
    for o in range(W.shape[0]):
        step = dtype(eta * coef_scale * derivs[o] / new_scale)
        for q in range(indptr[i], indptr[i + 1]):
            W[o, indices[q]] -= step * data[q]
    return new_scale


@kernel
def multi_sgd_epoch_csr(rows, mode, spec, state):
    """:func:`multi_sgd_epoch` on CSR rows (:class:`CsrMultiRows`)."""
    if mode == 0:  # the mode a literal in each loop, as multi_sgd_epoch
        return _sgd_loop_csr(rows, 0, spec, state)
    if mode == 1:
        return _sgd_loop_csr(rows, 1, spec, state)
    return _sgd_loop_csr(rows, 2, spec, state)


@scalar
def _sgd_loop_csr(rows, mode, spec, state):
    """The loop of :func:`multi_sgd_epoch_csr` (``mode`` a literal)."""
    data, indices, indptr, Y, labels, sample_weight, order = rows
    W, b = state.W, state.b
    k = W.shape[0]
    use_order = order.shape[0] > 0
    n = order.shape[0] if use_order else indptr.shape[0] - 1
    dense = spec.l1 > 0.0 or state.avg_W.shape[0] > 0
    scores = np.empty(k)
    derivs = np.empty(k)
    losses = state.losses
    losses[:] = 0.0
    t = state.t
    total = 0.0
    scale = 1.0
    for position in range(n):
        i = order[position] if use_order else position
        if not _csr_row_scores(data, indices, indptr, i, W, scale, b, scores):
            _fold_scale(W, scale)
            return total + math.inf, t, position
        eta = step_size(spec, t)
        total += _derivatives(mode, spec, Y, labels, sample_weight, i, scores, derivs, losses)
        scale = _csr_step(rows, i, state, derivs, 1.0, scale, eta, spec, dense)
        _average(state, t, spec.average_start)
        t += 1.0
    _fold_scale(W, scale)
    return total, t, -1


@kernel
def multi_batch_epoch_csr(rows, mode, batch_size, spec, state):
    """:func:`multi_batch_epoch` on CSR rows (serial): the batch's gradient is summed over
    the columns it touches only, and the step touches only those (``W = scale·V``)."""
    if mode == 0:  # the mode a literal in each loop, as multi_sgd_epoch
        return _batch_loop_csr(rows, 0, batch_size, spec, state)
    if mode == 1:
        return _batch_loop_csr(rows, 1, batch_size, spec, state)
    return _batch_loop_csr(rows, 2, batch_size, spec, state)


@scalar
def _batch_loop_csr(rows, mode, batch_size, spec, state):
    """The loop of :func:`multi_batch_epoch_csr` (``mode`` a literal)."""
    data, indices, indptr, Y, labels, sample_weight, order = rows
    W, b = state.W, state.b
    k, d = W.shape
    use_order = order.shape[0] > 0
    n = order.shape[0] if use_order else indptr.shape[0] - 1
    dense = spec.l1 > 0.0 or state.avg_W.shape[0] > 0
    grad = np.zeros((k, d))
    seen = np.zeros(d, dtype=np.bool_)
    touched = np.empty(d, dtype=np.int64)
    scores = np.empty(k)
    derivs = np.empty(k)
    deriv_sums = np.empty(k)
    losses = state.losses
    losses[:] = 0.0
    t = state.t
    total = 0.0
    scale = 1.0
    dtype = W.dtype.type
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        n_touched = 0
        deriv_sums[:] = 0.0
        batch_loss = 0.0
        bad = False
        for position in range(start, stop):
            i = order[position] if use_order else position
            if not _csr_row_scores(data, indices, indptr, i, W, scale, b, scores):
                bad = True
            batch_loss += _derivatives(
                mode, spec, Y, labels, sample_weight, i, scores, derivs, losses
            )
            for o in range(k):
                deriv_sums[o] += derivs[o]
            for q in range(indptr[i], indptr[i + 1]):
                j = indices[q]
                if not seen[j]:
                    seen[j] = True
                    touched[n_touched] = j
                    n_touched += 1
                for o in range(k):
                    grad[o, j] += derivs[o] * data[q]
        total += batch_loss
        if bad or not is_finite(batch_loss):
            _fold_scale(W, scale)
            return total + math.inf, t, start
        eta = step_size(spec, t)
        share = 1.0 / (stop - start)
        decay = decay_factor(eta, spec.l2)
        for o in range(k):
            if spec.fit_intercept:
                b[o] -= eta * share * deriv_sums[o]
        if dense:
            scale = _fold_scale(W, scale * decay)
            threshold = dtype(eta * spec.l1)
            for q in range(n_touched):
                j = touched[q]
                for o in range(k):
                    W[o, j] -= dtype(eta * share * grad[o, j])
            if spec.l1 > 0.0:
                for o in range(k):
                    for j in range(d):
                        W[o, j] = soft_threshold(W[o, j], threshold)
        else:
            scale *= decay
            if abs(scale) < SCALE_RENORMALISE_BELOW:
                scale = _fold_scale(W, scale)
            for q in range(n_touched):
                j = touched[q]
                for o in range(k):
                    W[o, j] -= dtype(eta * share * grad[o, j] / scale)
        for q in range(n_touched):
            j = touched[q]
            seen[j] = False
            for o in range(k):
                grad[o, j] = 0.0
        _average(state, t, spec.average_start)
        t += 1.0
    _fold_scale(W, scale)
    return total, t, -1


@parallel_kernel
def multi_predict_csr(data, indices, indptr, W, b, out):
    """``out[i, o] = x_i·W[o] + b[o]`` for CSR rows."""
    n = indptr.shape[0] - 1
    chunk = 4096
    n_chunks = (n + chunk - 1) // chunk
    for c in numba.prange(n_chunks):
        for i in range(c * chunk, min((c + 1) * chunk, n)):
            for o in range(W.shape[0]):
                acc = W.dtype.type(0.0)
                for q in range(indptr[i], indptr[i + 1]):
                    acc += data[q] * W[o, indices[q]]
                out[i, o] = acc + b[o]


# ---------------------------------------------------------------------------------------------
# The full-batch gradient of the engine's full-batch optimizers (nesterov, lbfgs).
# ---------------------------------------------------------------------------------------------


@kernel
def multi_full_gradient(rows, mode, spec, state, parallel, grad, deriv_sums):
    """The full-batch gradient sums of all k outputs at ``state.W``, ``state.b``, from one
    pass over ``rows`` (:class:`MultiRows`): ``grad[o] = Σ s·(dL/dp_o)·x`` ((k, d)),
    ``deriv_sums[o] = Σ s·dL/dp_o`` and ``state.losses[o] = Σ s·L_o``. No step is taken:
    ``fastgd.multi`` adds the penalty and hands the objective to ``fastgd.full_batch``. The
    rows are summed in chunks merged in chunk order (:func:`multi_batch_epoch`'s
    ``_batch_sums``), so the sums do not depend on the number of threads. Returns
    ``(Σ s·L, bad)``: ``bad`` 0 when a score was not finite, else -1."""
    X, order = rows.X, rows.order
    n = order.shape[0] if order.shape[0] > 0 else X.shape[0]
    work = _batch_work(X, state.W.shape[0])
    state.losses[:] = 0.0
    total, bad = _batch_sums(rows, 0, n, mode, spec, state, parallel, work, grad, deriv_sums)
    return total, 0 if bad else -1


@kernel
def multi_full_gradient_csr(rows, mode, spec, state, grad, deriv_sums):
    """:func:`multi_full_gradient` on CSR rows (:class:`CsrMultiRows`, in file order): one
    serial pass over the non-zeros in row order, O(k · non-zeros) (as the single-output
    ``sparse.accumulate_gradient_csr``; per-chunk dense gradients would cost O(chunks·k·d)
    memory), so the sums do not depend on the number of threads. Returns ``(Σ s·L, bad)``:
    ``bad`` the first row with a non-finite score, else -1."""
    if mode == 0:  # the mode a literal in each loop, as multi_sgd_epoch
        return _full_gradient_csr(rows, 0, spec, state, grad, deriv_sums)
    if mode == 1:
        return _full_gradient_csr(rows, 1, spec, state, grad, deriv_sums)
    return _full_gradient_csr(rows, 2, spec, state, grad, deriv_sums)


@scalar
def _full_gradient_csr(rows, mode, spec, state, grad, deriv_sums):
    """The loop of :func:`multi_full_gradient_csr` (``mode`` a literal)."""
    data, indices, indptr, Y, labels, sample_weight, _order = rows
    W, b = state.W, state.b
    k = W.shape[0]
    scores = np.empty(k)
    derivs = np.empty(k)
    state.losses[:] = 0.0
    grad[:, :] = 0.0
    deriv_sums[:] = 0.0
    total = 0.0
    bad = -1
    for i in range(indptr.shape[0] - 1):
        finite = _csr_row_scores(data, indices, indptr, i, W, 1.0, b, scores)
        if not finite and bad < 0:
            bad = i
        total += _derivatives(mode, spec, Y, labels, sample_weight, i, scores, derivs,
                              state.losses)  # fmt: skip
        for o in range(k):
            deriv_sums[o] += derivs[o]
            for q in range(indptr[i], indptr[i + 1]):
                grad[o, indices[q]] += derivs[o] * data[q]
    return total, bad
