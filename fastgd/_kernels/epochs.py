"""Epoch loops: per-sample SGD, and batch steps (mini-batch and full batch).

Every kernel takes C-contiguous arrays, plain scalars and the records of ``records.py``,
never validates, allocates only per call (never per sample or per batch) and never calls
back into Python.

Conventions shared by all kernels (the engine prepares them):

- ``sample_weight`` is either empty (all weights 1) or holds per-row multipliers ``s``;
- ``order`` lists the rows of the epoch in the order they are visited (any rows, e.g. a
  permutation, or part of one when data arrive in blocks; empty: all rows in file order);
- ``spec`` (``records.Spec``) holds the codes and scalars of the loss, schedule, update
  rule and penalty (``l1·‖w‖₁ + l2·½‖w‖²``); ``state`` (``records.State``) the weights
  ``w`` (updated in place), the intercept and step counter at the start (the new ones are
  returned), the running means and the update rule's slots;
- every mean divides by the number of rows involved;
- a kernel stops at the first batch or row whose prediction is not finite and returns its
  position in the epoch (``-1`` when all went well), so the engine can report divergence
  instead of running an epoch of NaNs.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba.core import types
from numba.extending import overload

from ..options import SCHEDULE_CONSTANT, UPDATE_MOMENTUM, UPDATE_SGD
from ._config import compile_time_choice, kernel, parallel_kernel, scalar
from .memory import (
    plan_block_stream,
    prefetch_row_at,
    row_ahead,
    rows_address,
    stream_step,
)
from .records import Rows
from .rules import (
    adam_bias,
    apply_update,
    data_step,
    intercept_step,
    is_optimizer,
    optimizer_pass,
    plain_update,
    row_derivative,
    uses_bias,
)
from .scalar import decay_factor, is_finite, loss_and_derivative, step_size

#: A batch is split into chunks of at least this many rows ...
MIN_CHUNK_ROWS = 256
#: ... and at most this many chunks. Chunk boundaries depend only on the batch size, and
#: chunk sums are merged in chunk order: results do not depend on the number of threads.
MAX_CHUNKS = 64


@scalar
def chunk_rows_for(m):
    return max(MIN_CHUNK_ROWS, (m + MAX_CHUNKS - 1) // MAX_CHUNKS)


@scalar
def _row_dot(X, i, w):
    acc = X.dtype.type(0.0)
    for j in range(X.shape[1]):
        acc += X[i, j] * w[j]
    return acc


@scalar
def _accumulate_chunk(
    c, rows, start, stop, w, intercept, spec, row_memory, G, sums, block_rows, stream
):  # fmt: skip
    """Chunk ``c`` of rows ``start..stop`` (positions in ``rows.order``):
    ``G[c] = Σ d·x``, ``sums[c] = (Σ s·L, Σ d)`` with ``d`` the row's coefficient
    (``rules.row_derivative``: ``s·L'``; SAGA's change of it, stored in ``row_memory``)."""
    X, y, sample_weight, order = rows
    chunk = chunk_rows_for(stop - start)
    lo = start + c * chunk
    hi = min(lo + chunk, stop)
    d = X.shape[1]
    weighted = sample_weight.shape[0] > 0
    use_order = order.shape[0] > 0
    for j in range(d):
        G[c, j] = 0.0
    loss_sum = 0.0
    deriv_sum = 0.0
    # The block stream's plan carries on from chunk to chunk and batch to batch in
    # ``stream``: read before the row loop and written after it, never an array in it.
    address, row_bytes = rows_address(X)
    plan = (stream[0], stream[1], stream[2], stream[3])
    for k in range(lo, hi):
        if use_order:
            if block_rows == 0:
                prefetch_row_at(address, row_bytes, row_ahead(order, k))
            else:
                if k >= plan[0]:
                    plan = plan_block_stream(order, k, block_rows, row_bytes)
                plan = stream_step(address, plan)
        i = order[k] if use_order else k
        p = _row_dot(X, i, w) + intercept
        value, deriv = loss_and_derivative(spec.loss, p, y[i], spec.epsilon)
        if weighted:
            value *= sample_weight[i]
            deriv *= sample_weight[i]
        loss_sum += value
        deriv = row_derivative(spec, row_memory, i, deriv)
        deriv_sum += deriv
        coef = X.dtype.type(deriv)
        for j in range(d):
            G[c, j] += coef * X[i, j]
    sums[c, 0] = loss_sum
    sums[c, 1] = deriv_sum
    if block_rows > 0:
        stream[0], stream[1], stream[2], stream[3] = plan


@kernel
def _accumulate_serial(
    rows, start, stop, w, intercept, spec, row_memory, G, sums, block_rows, stream
):  # fmt: skip
    chunk = chunk_rows_for(stop - start)
    n_chunks = (stop - start + chunk - 1) // chunk
    for c in range(n_chunks):
        _accumulate_chunk(
            c, rows, start, stop, w, intercept, spec, row_memory, G, sums, block_rows, stream
        )
    return n_chunks


@parallel_kernel
def _accumulate_parallel(rows, start, stop, w, intercept, spec, row_memory, G, sums, no_stream):
    chunk = chunk_rows_for(stop - start)
    n_chunks = (stop - start + chunk - 1) // chunk
    for c in numba.prange(n_chunks):
        _accumulate_chunk(
            c, rows, start, stop, w, intercept, spec, row_memory, G, sums, 0, no_stream
        )
    return n_chunks


@scalar
def _merge_chunks(G, sums, n_chunks, grad):
    """``grad = Σ_c G[c]``, returns ``(Σ s·L, Σ s·L')``: an ordered merge, chunk 0, then
    1, ... (vectorised over features, never reassociated across chunks)."""
    for j in range(grad.shape[0]):
        grad[j] = G[0, j]
    loss_total = sums[0, 0]
    deriv_total = sums[0, 1]
    for c in range(1, n_chunks):
        for j in range(grad.shape[0]):
            grad[j] += G[c, j]
        loss_total += sums[c, 0]
        deriv_total += sums[c, 1]
    return loss_total, deriv_total


@scalar
def _average_step(w, intercept, avg_w, avg_b, t, average_start):
    """Averaged SGD: after the step numbered ``t``, fold the new weights into the running
    mean of the weights after each step from step ``average_start`` on (no-op before it or
    when ``avg_w`` is empty)."""
    if avg_w.shape[0] == 0 or t < average_start:
        return
    share = 1.0 / (t - average_start + 1.0)
    for j in range(w.shape[0]):
        avg_w[j] += (w[j] - avg_w[j]) * share
    avg_b[0] += (intercept - avg_b[0]) * share


def _batch_step(any_rule, spec, state, grad, m, deriv_sum, intercept, t):
    """The step of a batch of ``m`` rows from ``grad = Σ d·x`` and ``deriv_sum = Σ d``
    (the update rule, the intercept, the running means); returns the new intercept.
    ``any_rule``, a constant: False when the rule is known not to be an optimizer rule, so
    that only plain SGD's step is compiled (``_config.compile_time_choice``)."""
    raise NotImplementedError("_batch_step runs only inside the compiled kernels")


def _any_rule_batch_step(any_rule, spec, state, grad, m, deriv_sum, intercept, t):
    eta = step_size(spec, t)
    intercept = apply_update(spec, state, grad, deriv_sum, 1.0 / m, m, eta, eta, t, intercept)
    _average_step(state.w, intercept, state.avg_w, state.avg_b, t, spec.average_start)
    return intercept


def _plain_batch_step(any_rule, spec, state, grad, m, deriv_sum, intercept, t):
    eta = step_size(spec, t)
    intercept = plain_update(spec, state, grad, deriv_sum, 1.0 / m, eta, eta, intercept)
    _average_step(state.w, intercept, state.avg_w, state.avg_b, t, spec.average_start)
    return intercept


compile_time_choice(_batch_step, _any_rule_batch_step, _plain_batch_step)


def batch_epoch(X, y, sample_weight, order, batch_size, spec, state, parallel, block_rows):
    """One epoch of mini-batch gradient descent (full batch: ``batch_size ≥ n``), from the
    training ``state`` (``records.State``) under ``spec`` (``records.Spec``).

    Each batch of ``m`` rows takes one step of the update rule from
    ``(1/m)·Σ s·L'(x·w + b, y)·x``, the predictions all made with the weights in force at
    the start of the batch. With averaging (``state.avg_w`` non-empty), the running means
    of the weights and intercept after each step numbered ``t ≥ spec.average_start`` are
    updated in place.

    ``block_rows`` > 0 says ``order`` is a ``shuffle="block"`` order of blocks of that
    many rows, so the next block can be streamed into cache (it changes no result); 0: no
    such hint. (No kernel has default arguments: Numba's cache mishandles omitted ones,
    numba#4959, and a ``batch_epoch`` loaded from the cache with ``block_rows`` omitted
    crashed here.)

    Returns ``(intercept, Σ s·L over the epoch, t after the epoch, bad)``; ``bad`` is the
    position in the epoch of the first batch with a non-finite loss, or -1.
    """
    # One compiled kernel per (parallel, rule kind), each compiling only what it runs: a
    # first fit compiles one accumulation (serial or parallel) and one kind of step.
    kernel = _BATCH_EPOCHS[bool(parallel), bool(is_optimizer.py_func(spec.rule))]
    return kernel(X, y, sample_weight, order, batch_size, spec, state, block_rows)


@scalar
def _batch_loop(
    X, y, sample_weight, order, batch_size, spec, state, parallel, any_rule, block_rows
):
    """The body of :func:`batch_epoch`; ``parallel`` and ``any_rule`` are constants of
    the kernel that inlines it, so the branch not taken is never compiled."""
    rows = Rows(X, y, sample_weight, order)
    w = state.w
    intercept = state.intercept
    t = state.t
    n = order.shape[0] if order.shape[0] > 0 else X.shape[0]
    G = np.empty((MAX_CHUNKS, X.shape[1]), dtype=X.dtype)
    grad = np.empty(X.shape[1], dtype=X.dtype)
    sums = np.empty((MAX_CHUNKS, 2))
    stream = np.zeros(4, dtype=np.int64)
    no_stream = np.zeros(4, dtype=np.int64)
    loss_total = 0.0
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        if parallel:
            # Block streaming carries state from row to row: serial path only.
            n_chunks = _accumulate_parallel(
                rows, start, stop, w, intercept, spec, state.row_memory, G, sums, no_stream
            )
        else:
            n_chunks = _accumulate_serial(
                rows, start, stop, w, intercept, spec, state.row_memory, G, sums, block_rows,
                stream,
            )  # fmt: skip
        batch_loss, deriv_sum = _merge_chunks(G, sums, n_chunks, grad)
        loss_total += batch_loss
        if not is_finite(batch_loss):
            return intercept, loss_total, t, start
        intercept = _batch_step(any_rule, spec, state, grad, stop - start, deriv_sum, intercept, t)
        t += 1.0
    return intercept, loss_total, t, -1


@kernel
def _batch_epoch_serial_plain(X, y, sample_weight, order, batch_size, spec, state, block_rows):
    return _batch_loop(
        X, y, sample_weight, order, batch_size, spec, state, False, False, block_rows
    )


@kernel
def _batch_epoch_serial(X, y, sample_weight, order, batch_size, spec, state, block_rows):
    return _batch_loop(X, y, sample_weight, order, batch_size, spec, state, False, True, block_rows)


@kernel
def _batch_epoch_parallel_plain(X, y, sample_weight, order, batch_size, spec, state, block_rows):
    return _batch_loop(X, y, sample_weight, order, batch_size, spec, state, True, False, block_rows)


@kernel
def _batch_epoch_parallel(X, y, sample_weight, order, batch_size, spec, state, block_rows):
    return _batch_loop(X, y, sample_weight, order, batch_size, spec, state, True, True, block_rows)


#: :func:`batch_epoch`'s kernels by (parallel, any rule: the rule may be an optimizer rule).
_BATCH_EPOCHS = {
    (False, False): _batch_epoch_serial_plain,
    (False, True): _batch_epoch_serial,
    (True, False): _batch_epoch_parallel_plain,
    (True, True): _batch_epoch_parallel,
}


def accumulate_gradient(X, y, sample_weight, spec, state, grad, parallel):
    """Add ``Σ s·L'(x·w + b, y)·x`` over the rows of ``X`` (at ``state.w``,
    ``state.intercept``) to ``grad`` (float64, shape (d,)) and return ``(Σ s·L, Σ s·L')``:
    the full-batch gradient of data that arrive in parts (blocks of a file, partitions of
    a cluster), summed part by part before one step with :func:`take_step`. Chunks as in
    :func:`batch_epoch`, merged in order."""
    kernel = _accumulate_gradient_parallel if parallel else _accumulate_gradient_serial
    return kernel(X, y, sample_weight, spec, state, grad)


@scalar
def _gradient_sums(X, y, sample_weight, spec, state, grad, parallel):
    """The body of :func:`accumulate_gradient`; ``parallel`` is a constant of the kernel
    that inlines it, so only one accumulation is compiled."""
    d = X.shape[1]
    G = np.empty((MAX_CHUNKS, d), dtype=X.dtype)
    sums = np.empty((MAX_CHUNKS, 2))
    rows = Rows(X, y, sample_weight, np.empty(0, dtype=np.int64))
    no_stream = np.zeros(4, dtype=np.int64)
    w, intercept, n = state.w, state.intercept, X.shape[0]
    memory = state.row_memory
    if parallel:
        n_chunks = _accumulate_parallel(rows, 0, n, w, intercept, spec, memory, G, sums, no_stream)
    else:
        n_chunks = _accumulate_serial(rows, 0, n, w, intercept, spec, memory, G, sums, 0, no_stream)
    loss_total = 0.0
    deriv_total = 0.0
    for c in range(n_chunks):
        for j in range(d):
            grad[j] += G[c, j]
        loss_total += sums[c, 0]
        deriv_total += sums[c, 1]
    return loss_total, deriv_total


@kernel
def _accumulate_gradient_serial(X, y, sample_weight, spec, state, grad):
    return _gradient_sums(X, y, sample_weight, spec, state, grad, False)


@kernel
def _accumulate_gradient_parallel(X, y, sample_weight, spec, state, grad):
    return _gradient_sums(X, y, sample_weight, spec, state, grad, True)


def take_step(grad, m, deriv_sum, spec, state):
    """One step from the gradient sums of ``m`` rows (see :func:`accumulate_gradient`):
    the update rule from ``(1/m)·grad``, ``b ← b − η·deriv_sum/m``, averaging as in
    :func:`batch_epoch`. Returns ``(intercept, t + 1)``."""
    kernel = _take_step_any_rule if is_optimizer.py_func(spec.rule) else _take_step_plain
    return kernel(grad, m, deriv_sum, spec, state)


@scalar
def _take_step(grad, m, deriv_sum, spec, state, any_rule):
    scaled = np.empty(state.w.shape[0], dtype=state.w.dtype)
    for j in range(scaled.shape[0]):
        scaled[j] = grad[j]
    intercept = _batch_step(any_rule, spec, state, scaled, m, deriv_sum, state.intercept, state.t)
    return intercept, state.t + 1.0


@kernel
def _take_step_plain(grad, m, deriv_sum, spec, state):
    return _take_step(grad, m, deriv_sum, spec, state, False)


@kernel
def _take_step_any_rule(grad, m, deriv_sum, spec, state):
    return _take_step(grad, m, deriv_sum, spec, state, True)


@scalar
def _fused_step(X, i, following, w, decay, step):
    """A plain linear step on row ``i`` (no L1, no averaging): ``w ← w·decay − step·x_i``,
    returning ``(x'·w_old, x'·x_i)`` of the row ``following``, so that its prediction
    under the new weights, ``decay·(x'·w) − step·(x'·x_i) + b``, rides along the update in
    one loop: the next row's loads leave the serial chain of steps (measured: ~20% faster
    in a shuffled order, equal in file order)."""
    dtype = X.dtype.type
    next_dot_w = dtype(0.0)
    next_dot_x = dtype(0.0)
    for j in range(X.shape[1]):
        wj = w[j]
        xj = X[i, j]
        next_x = X[following, j]
        next_dot_w += next_x * wj
        next_dot_x += next_x * xj
        w[j] = wj * decay - step * xj
    return next_dot_w, next_dot_x


def sgd_epoch(X, y, sample_weight, order, spec, state, block_rows):
    """One epoch of per-sample SGD over the rows in ``order`` (empty: file order), from
    the training ``state`` under ``spec`` (``records.State``, ``records.Spec``).

    For each row: ``w ← prox(w·(1 − η·l2) − step·s·L'(x·w + b, y)·x)``,
    ``b ← b − step·s·L'``, ``t ← t + 1``, with ``step`` the update rule's
    (``rules.data_step``: ``η`` for plain SGD, the row's own size under a
    passive-aggressive rule) and ``η`` the schedule's. Averaging as in
    :func:`batch_epoch`.

    Returns ``(intercept, Σ s·L over the epoch, t after the epoch, bad)``; ``bad`` is the
    position in ``order`` of the first row with a non-finite prediction, or -1.

    The row loop is chosen once per epoch, not per row, each its own kernel (one call per
    epoch): plain SGD without L1 and averaging in :func:`_linear_rows`, the optimizer
    rules in :func:`_optimizer_rows`, the rest (L1, averaging, passive-aggressive) in
    :func:`_general_rows`, so that each compiles only its own work per row (a loop that
    inlined every rule's pass compiled 2.7x longer). The arithmetic of each step is that
    of the one loop they replaced (bit for bit but for the optimizer rules, where the
    compiler's choice of fused multiply-adds may move the last bit). The choice is made
    here, in Python, so that a first fit compiles only the loop it runs (a kernel that
    called the three compiled all three: 13.5 s of a cold first fit, issue 15).
    """
    n = order.shape[0] if order.shape[0] > 0 else X.shape[0]
    if n == 0:
        return state.intercept, 0.0, state.t, -1
    if spec.rule >= UPDATE_MOMENTUM:  # rules.is_optimizer, without compiling it here
        return _optimizer_rows(X, y, sample_weight, order, spec, state, block_rows)
    if spec.l1 == 0.0 and state.avg_w.shape[0] == 0 and spec.rule == UPDATE_SGD:
        return _linear_rows(X, y, sample_weight, order, spec, state, block_rows)
    return _general_epoch(X, y, sample_weight, order, spec, state, block_rows)


@kernel
def _general_epoch(X, y, sample_weight, order, spec, state, block_rows):
    """A whole epoch of :func:`_general_rows`, from the first row's prediction."""
    first = order[0] if order.shape[0] > 0 else 0
    p = _row_dot(X, first, state.w) + state.intercept
    return _general_rows(
        X, y, sample_weight, order, spec, state, block_rows, 0, p, state.intercept, state.t
    )


@kernel
def _linear_rows(X, y, sample_weight, order, spec, state, block_rows):
    """:func:`sgd_epoch` under plain SGD without L1 and averaging: a linear step, fused with
    the next prediction (:func:`_fused_step`). Under a constant schedule ``η`` and the
    decay are set once, not per row. The last row takes the general step
    (:func:`_general_rows`): there is no next row to fuse."""
    n = order.shape[0] if order.shape[0] > 0 else X.shape[0]
    w, intercept, t = state.w, state.intercept, state.t
    dtype = X.dtype.type
    weighted = sample_weight.shape[0] > 0
    use_order = order.shape[0] > 0
    constant = spec.schedule == SCHEDULE_CONSTANT
    loss_total = 0.0
    address, row_bytes = rows_address(X)
    plan = (0, 0, 0, 0)  # memory.plan_block_stream's, before the first block
    eta = spec.eta0
    decay = dtype(decay_factor(eta, spec.l2))
    p = _row_dot(X, order[0] if use_order else 0, w) + intercept
    for k in range(n - 1):
        if use_order:
            if block_rows == 0:
                prefetch_row_at(address, row_bytes, row_ahead(order, k))
            else:
                if k >= plan[0]:
                    plan = plan_block_stream(order, k, block_rows, row_bytes)
                plan = stream_step(address, plan)
        i = order[k] if use_order else k
        if not is_finite(p):
            return intercept, loss_total + p, t, k
        if not constant:
            eta = step_size(spec, t)
            decay = dtype(decay_factor(eta, spec.l2))
        value, deriv = loss_and_derivative(spec.loss, p, y[i], spec.epsilon)
        if weighted:
            value *= sample_weight[i]
            deriv *= sample_weight[i]
        loss_total += value
        following = order[k + 1] if use_order else k + 1
        if spec.fit_intercept:
            intercept -= (eta * deriv) * spec.intercept_decay
        scale = dtype(eta * deriv)
        next_dot_w, next_dot_x = _fused_step(X, i, following, w, decay, scale)
        p = decay * next_dot_w - scale * next_dot_x + intercept
        t += 1.0
    last = _general_rows(X, y, sample_weight, order, spec, state, block_rows, n - 1, p,
                         intercept, t)  # fmt: skip
    return last[0], loss_total + last[1], last[2], last[3]


@kernel
def _general_rows(X, y, sample_weight, order, spec, state, block_rows, start, p, intercept, t):
    """The rows from position ``start`` on (``p`` the first one's prediction, ``intercept``
    and ``t`` the values there) under plain SGD with L1 or averaging, or a
    passive-aggressive rule: the rule's step (``rules.plain_update``), then the next row's
    prediction in its own pass. Returns as :func:`sgd_epoch`, the loss summed from
    ``start``."""
    n = order.shape[0] if order.shape[0] > 0 else X.shape[0]
    w = state.w
    weighted = sample_weight.shape[0] > 0
    use_order = order.shape[0] > 0
    loss_total = 0.0
    address, row_bytes = rows_address(X)
    plan = (0, 0, 0, 0)  # memory.plan_block_stream's, before the first block
    for k in range(start, n):
        if use_order:
            if block_rows == 0:
                prefetch_row_at(address, row_bytes, row_ahead(order, k))
            else:
                if k >= plan[0]:
                    plan = plan_block_stream(order, k, block_rows, row_bytes)
                plan = stream_step(address, plan)
        i = order[k] if use_order else k
        if not is_finite(p):
            return intercept, loss_total + p, t, k
        eta = step_size(spec, t)
        value, deriv = loss_and_derivative(spec.loss, p, y[i], spec.epsilon)
        step = data_step(spec, eta, value, X, i)
        if weighted:
            value *= sample_weight[i]
            deriv *= sample_weight[i]
        loss_total += value
        intercept = plain_update(spec, state, X[i], 1.0, deriv, step, eta, intercept)
        _average_step(w, intercept, state.avg_w, state.avg_b, t, spec.average_start)
        if k + 1 < n:
            following = order[k + 1] if use_order else k + 1
            p = _row_dot(X, following, w) + intercept
        t += 1.0
    return intercept, loss_total, t, -1


@kernel
def _optimizer_rows(X, y, sample_weight, order, spec, state, block_rows):
    """:func:`sgd_epoch` under an optimizer rule: the rule's pass over the weights
    (``rules.optimizer_pass``: one per rule, the rule a literal in each), with the next
    row's prediction riding along it. What does not change per coordinate is set per row:
    the L1 proximal step is a pass of its own, not a test per coordinate; Adam's bias
    corrections stop being computed (two ``pow`` a row) once both have rounded to 1, after
    which the pass divides by no bias (exact: ``x/1 = x``)."""
    n = order.shape[0] if order.shape[0] > 0 else X.shape[0]
    w, intercept, t = state.w, state.intercept, state.t
    weighted = sample_weight.shape[0] > 0
    use_order = order.shape[0] > 0
    settled = not uses_bias(spec.rule)
    bias = (1.0, 1.0)
    n_rows = state.row_memory.shape[0]
    loss_total = 0.0
    address, row_bytes = rows_address(X)
    plan = (0, 0, 0, 0)  # memory.plan_block_stream's, before the first block
    p = _row_dot(X, order[0] if use_order else 0, w) + intercept
    for k in range(n):
        if use_order:
            if block_rows == 0:
                prefetch_row_at(address, row_bytes, row_ahead(order, k))
            else:
                if k >= plan[0]:
                    plan = plan_block_stream(order, k, block_rows, row_bytes)
                plan = stream_step(address, plan)
        i = order[k] if use_order else k
        if not is_finite(p):
            return intercept, loss_total + p, t, k
        eta = step_size(spec, t)
        value, deriv = loss_and_derivative(spec.loss, p, y[i], spec.epsilon)
        if weighted:
            value *= sample_weight[i]
            deriv *= sample_weight[i]
        loss_total += value
        following = order[k + 1] if use_order and k + 1 < n else k + 1
        coef = row_derivative(spec, state.row_memory, i, deriv)
        next_row = X[following] if k + 1 < n else X[i]
        share = coef / n_rows if n_rows > 0 else 0.0  # SAGA's memory_share (m = 1)
        if not settled:
            bias = adam_bias(spec, t)
            settled = bias[0] == 1.0 and bias[1] == 1.0
        next_dot = optimizer_pass(spec, state, X[i], coef, share, eta, bias, settled, next_row)
        intercept = intercept_step(spec, state, 1.0, coef, share, eta, bias, intercept)
        _average_step(w, intercept, state.avg_w, state.avg_b, t, spec.average_start)
        p = next_dot + intercept
        t += 1.0
    return intercept, loss_total, t, -1


@parallel_kernel
def predict(X, w, intercept, out):
    """``out = X·w + intercept``, one pass over X."""
    n = X.shape[0]
    chunk = MIN_CHUNK_ROWS * 16
    n_chunks = (n + chunk - 1) // chunk
    for c in numba.prange(n_chunks):
        for i in range(c * chunk, min((c + 1) * chunk, n)):
            out[i] = _row_dot(X, i, w) + intercept


@scalar
def add_square(norm, n_bad, value):
    """One stored value of a row scanned by :func:`scan_rows` (or ``sparse.scan_csr``):
    ``(norm + value², n_bad + [value not finite])``."""
    value = float(value)
    return norm + value * value, n_bad + (0 if is_finite(value) else 1)


@scalar
def weighted_norm(norm, extra, sample_weight, i):
    """``s_i·(‖x_i‖² + extra)`` of a scanned row (``sample_weight`` empty: ``s_i = 1``)."""
    norm += extra
    if sample_weight.shape[0] > 0:
        norm *= sample_weight[i]
    return norm


def row_square_norm(rows, i, n_bad):
    """``(‖x_i‖², n_bad + the non-finite values of row i)`` of ``rows``: a 2-D array (below)
    or a CSR triple ``(data, indices, indptr)`` (``sparse.py``). Compiled only: each format
    is an ``overload``, chosen by the type of ``rows`` and inlined, so the scan's one loop
    (:func:`scan_chunks`) runs each format's own row loop, with no call per row."""
    raise NotImplementedError("row_square_norm runs only inside the compiled kernels")


def first_bad_column(rows, i):
    """The smallest column of row ``i`` of ``rows`` (as :func:`row_square_norm`) holding a
    NaN or ±inf, or -1. Compiled only, as :func:`row_square_norm`."""
    raise NotImplementedError("first_bad_column runs only inside the compiled kernels")


def register_row_format(rows_type, square_norm, bad_column):
    """Teach :func:`scan_chunks` a format of rows: ``square_norm`` and ``bad_column``
    (plain functions, compiled by Numba and inlined) are :func:`row_square_norm` and
    :func:`first_bad_column` where ``rows`` is a ``rows_type`` (a Numba type class).
    Chosen when a kernel compiles, never per call: no function is passed as an argument
    (which Numba's on-disk cache cannot keep)."""
    for stub, implementation in ((row_square_norm, square_norm), (first_bad_column, bad_column)):
        overload(stub, inline="always", strict=False)(_when_rows_are(rows_type, implementation))


def _when_rows_are(rows_type, implementation):
    def typing(rows, *arguments):
        return implementation if isinstance(rows, rows_type) else None

    return typing


def _dense_square_norm(rows, i, n_bad):
    norm = 0.0
    for j in range(rows.shape[1]):
        norm, n_bad = add_square(norm, n_bad, rows[i, j])
    return norm, n_bad


def _dense_bad_column(rows, i):
    for j in range(rows.shape[1]):
        if not is_finite(rows[i, j]):
            return j
    return -1


register_row_format(types.Array, _dense_square_norm, _dense_bad_column)


@scalar
def scan_chunks(rows, n, sample_weight, extra):
    """The parallel pass behind :func:`scan_rows` and ``sparse.scan_csr`` over the first
    ``n`` rows of ``rows`` (a format :func:`row_square_norm` knows). Returns ``(row,
    column, norm)`` as :func:`scan_rows` says (``norm`` 0 for no rows); the exact place of
    a non-finite value is searched only in the chunks that hold one."""
    chunk = chunk_rows_for(n)
    n_chunks = (n + chunk - 1) // chunk
    bad = np.zeros(n_chunks, dtype=np.int64)
    norms = np.zeros(n_chunks)
    for c in numba.prange(n_chunks):
        n_bad = 0
        best = 0.0
        for i in range(c * chunk, min((c + 1) * chunk, n)):
            norm, n_bad = row_square_norm(rows, i, n_bad)
            best = max(best, weighted_norm(norm, extra, sample_weight, i))
        bad[c] = n_bad
        norms[c] = best
    for c in range(n_chunks):
        if bad[c]:
            for i in range(c * chunk, min((c + 1) * chunk, n)):
                column = first_bad_column(rows, i)
                if column >= 0:
                    return i, column, math.inf
    best = 0.0
    for c in range(n_chunks):
        best = max(best, norms[c])
    return -1, -1, best


#: Below this many values (8 MB of float64), :func:`scan_rows` reads X on one thread: the
#: pass takes well under a millisecond, and its parallel kernel would cost a thread launch
#: per call and, on a first fit, its compile (about 2 s, measured here).
SCAN_PARALLEL_MIN_VALUES = 1 << 20


def scan_rows(A, sample_weight, extra):
    """One pass over the 2-D array ``A``: returns ``(row, column, norm)`` where
    ``(row, column)`` is the first NaN or ±inf (``(-1, -1)`` if none) and ``norm`` is
    ``max_i s_i·(‖a_i‖² + extra)`` (``extra`` = 1 for the intercept's column); in parallel
    from ``SCAN_PARALLEL_MIN_VALUES`` values on (the same answer either way).

    Validation and the ``auto`` step size share this one read of X (:func:`scan_chunks`).
    """
    large = A.size >= SCAN_PARALLEL_MIN_VALUES
    kernel = _scan_rows_parallel if large else _scan_rows_serial
    return kernel(A, sample_weight, extra)


@parallel_kernel
def _scan_rows_parallel(A, sample_weight, extra):
    return scan_chunks(A, A.shape[0], sample_weight, extra)


@kernel
def _scan_rows_serial(A, sample_weight, extra):
    return scan_chunks(A, A.shape[0], sample_weight, extra)


@kernel
def loss_sum(scores, y, sample_weight, loss_code, epsilon):
    """``Σ s·L(scores_i, y_i)``: the data term of the objective for given predictions."""
    weighted = sample_weight.shape[0] > 0
    total = 0.0
    for i in range(scores.shape[0]):
        value, _ = loss_and_derivative(loss_code, scores[i], y[i], epsilon)
        total += value * sample_weight[i] if weighted else value
    return total
