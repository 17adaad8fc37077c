"""Epoch loops: per-sample SGD, and batch steps (mini-batch and full batch).

Every kernel takes C-contiguous arrays and plain scalars, never validates, allocates only
per call (never per sample or per batch) and never calls back into Python.

Conventions shared by all kernels (the engine prepares them):

- ``sample_weight`` is either empty (all weights 1) or holds per-row multipliers ``s``;
- ``order`` lists the rows of the epoch in the order they are visited (any rows, e.g. a
  permutation, or part of one when data arrive in blocks; empty: all rows in file order);
- ``w`` is updated in place; the intercept is a float64 scalar passed in and returned;
- ``l1`` and ``l2`` are the penalty strengths of ``l1·‖w‖₁ + l2·½‖w‖²``;
- every mean divides by the number of rows involved;
- a kernel stops at the first batch or row whose prediction is not finite and returns its
  position in the epoch (``-1`` when all went well), so the engine can report divergence
  instead of running an epoch of NaNs.
"""

from __future__ import annotations

import numba
import numpy as np

from ._config import kernel, parallel_kernel, scalar
from .memory import prefetch_for_order
from .scalar import (
    is_finite,
    is_passive_aggressive,
    learning_rate,
    loss_and_derivative,
    passive_aggressive_step,
    soft_threshold,
)

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
    c, X, y, sample_weight, order, start, stop, w, intercept, loss_code, epsilon, G, sums,
    block_rows, stream,
):  # fmt: skip
    """Chunk ``c`` of rows ``start..stop`` (positions in ``order``): ``G[c] = Σ s·L'·x``,
    ``sums[c] = (Σ s·L, Σ s·L')``."""
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
    for k in range(lo, hi):
        if use_order:
            prefetch_for_order(X, order, k, block_rows, stream)
        i = order[k] if use_order else k
        p = _row_dot(X, i, w) + intercept
        value, deriv = loss_and_derivative(loss_code, p, y[i], epsilon)
        if weighted:
            value *= sample_weight[i]
            deriv *= sample_weight[i]
        loss_sum += value
        deriv_sum += deriv
        coef = X.dtype.type(deriv)
        for j in range(d):
            G[c, j] += coef * X[i, j]
    sums[c, 0] = loss_sum
    sums[c, 1] = deriv_sum


@kernel
def _accumulate_serial(
    X, y, sample_weight, order, start, stop, w, intercept, loss_code, epsilon, G, sums,
    block_rows, stream,
):  # fmt: skip
    chunk = chunk_rows_for(stop - start)
    n_chunks = (stop - start + chunk - 1) // chunk
    for c in range(n_chunks):
        _accumulate_chunk(
            c, X, y, sample_weight, order, start, stop, w, intercept, loss_code, epsilon, G, sums,
            block_rows, stream,
        )  # fmt: skip
    return n_chunks


@parallel_kernel
def _accumulate_parallel(
    X, y, sample_weight, order, start, stop, w, intercept, loss_code, epsilon, G, sums,
    no_stream,
):  # fmt: skip
    chunk = chunk_rows_for(stop - start)
    n_chunks = (stop - start + chunk - 1) // chunk
    for c in numba.prange(n_chunks):
        _accumulate_chunk(
            c, X, y, sample_weight, order, start, stop, w, intercept, loss_code, epsilon, G, sums,
            0, no_stream,
        )  # fmt: skip
    return n_chunks


@scalar
def _penalized_update(w, grad, scale, eta, l1, l2):
    """``w ← prox_{η·l1‖·‖₁}(w·(1 − η·l2) − scale·grad)``."""
    dtype = w.dtype.type
    decay = dtype(1.0 - eta * l2)
    step = dtype(scale)
    if l1 > 0.0:
        threshold = dtype(eta * l1)
        for j in range(w.shape[0]):
            w[j] = soft_threshold(w[j] * decay - step * grad[j], threshold)
    else:
        for j in range(w.shape[0]):
            w[j] = w[j] * decay - step * grad[j]


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


@kernel
def batch_epoch(
    X,
    y,
    sample_weight,
    order,
    batch_size,
    w,
    intercept,
    fit_intercept,
    loss_code,
    epsilon,
    schedule_code,
    eta0,
    power_t,
    alpha,
    optimal_init,
    t,
    l1,
    l2,
    parallel,
    avg_w,
    avg_b,
    average_start,
    block_rows=0,
):
    """One epoch of mini-batch gradient descent (full batch: ``batch_size ≥ n``).

    ``avg_w`` (float64, shape (d,), or empty: no averaging) and ``avg_b`` (float64, shape
    (1,)) hold the running mean of the weights and intercept after each step numbered
    ``t ≥ average_start`` (averaged SGD); both are updated in place.

    ``block_rows`` > 0 says ``order`` is a ``shuffle="block"`` order of blocks of that
    many rows, so the next block can be streamed into cache (it changes no result).

    Each batch of ``m`` rows takes one step from ``(1/m)·Σ s·L'(x·w + b, y)·x``, the
    predictions all made with the weights in force at the start of the batch.

    Returns ``(intercept, Σ s·L over the epoch, t after the epoch, bad)``; ``bad`` is the
    position in the epoch of the first batch with a non-finite loss, or -1.
    """
    n = order.shape[0] if order.shape[0] > 0 else X.shape[0]
    d = X.shape[1]
    G = np.empty((MAX_CHUNKS, d), dtype=X.dtype)
    grad = np.empty(d, dtype=X.dtype)
    sums = np.empty((MAX_CHUNKS, 2))
    stream = np.zeros(4, dtype=np.int64)
    no_stream = np.zeros(4, dtype=np.int64)
    loss_total = 0.0
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        m = stop - start
        eta = learning_rate(schedule_code, t, eta0, power_t, alpha, optimal_init)
        if parallel:
            # Block streaming carries state from row to row: serial path only.
            n_chunks = _accumulate_parallel(
                X, y, sample_weight, order, start, stop, w, intercept, loss_code, epsilon, G,
                sums, no_stream,
            )  # fmt: skip
        else:
            n_chunks = _accumulate_serial(
                X, y, sample_weight, order, start, stop, w, intercept, loss_code, epsilon, G,
                sums, block_rows, stream,
            )  # fmt: skip
        # Ordered merge: chunk 0, then 1, ... (vectorised over features, never reassociated
        # across chunks).
        for j in range(d):
            grad[j] = G[0, j]
        batch_loss = sums[0, 0]
        deriv_sum = sums[0, 1]
        for c in range(1, n_chunks):
            for j in range(d):
                grad[j] += G[c, j]
            batch_loss += sums[c, 0]
            deriv_sum += sums[c, 1]
        loss_total += batch_loss
        if not is_finite(batch_loss):
            return intercept, loss_total, t, start
        _penalized_update(w, grad, eta / m, eta, l1, l2)
        if fit_intercept:
            intercept -= eta * deriv_sum / m
        _average_step(w, intercept, avg_w, avg_b, t, average_start)
        t += 1.0
    return intercept, loss_total, t, -1


@kernel
def accumulate_gradient(X, y, sample_weight, w, intercept, loss_code, epsilon, grad, parallel):
    """Add ``Σ s·L'(x·w + b, y)·x`` over the rows of ``X`` to ``grad`` (float64, shape (d,))
    and return ``(Σ s·L, Σ s·L')``: the full-batch gradient of data that arrive in parts
    (blocks of a file, partitions of a cluster), summed part by part before one step with
    :func:`take_step`. Chunks as in :func:`batch_epoch`, merged in order."""
    d = X.shape[1]
    G = np.empty((MAX_CHUNKS, d), dtype=X.dtype)
    sums = np.empty((MAX_CHUNKS, 2))
    order = np.empty(0, dtype=np.int64)
    no_stream = np.zeros(4, dtype=np.int64)
    if parallel:
        n_chunks = _accumulate_parallel(
            X, y, sample_weight, order, 0, X.shape[0], w, intercept, loss_code, epsilon, G,
            sums, no_stream,
        )  # fmt: skip
    else:
        n_chunks = _accumulate_serial(
            X, y, sample_weight, order, 0, X.shape[0], w, intercept, loss_code, epsilon, G,
            sums, 0, no_stream,
        )  # fmt: skip
    loss_total = 0.0
    deriv_total = 0.0
    for c in range(n_chunks):
        for j in range(d):
            grad[j] += G[c, j]
        loss_total += sums[c, 0]
        deriv_total += sums[c, 1]
    return loss_total, deriv_total


@kernel
def take_step(
    w, grad, m, deriv_sum, intercept, fit_intercept, schedule_code, eta0, power_t, alpha,
    optimal_init, t, l1, l2, avg_w, avg_b, average_start,
):  # fmt: skip
    """One step from the gradient sums of ``m`` rows (see :func:`accumulate_gradient`):
    ``w ← prox(w·(1 − η·l2) − (η/m)·grad)``, ``b ← b − η·deriv_sum/m``, averaging as in
    :func:`batch_epoch`. Returns ``(intercept, t + 1)``."""
    eta = learning_rate(schedule_code, t, eta0, power_t, alpha, optimal_init)
    scaled = np.empty(w.shape[0], dtype=w.dtype)
    for j in range(w.shape[0]):
        scaled[j] = grad[j]
    _penalized_update(w, scaled, eta / m, eta, l1, l2)
    if fit_intercept:
        intercept -= eta * deriv_sum / m
    _average_step(w, intercept, avg_w, avg_b, t, average_start)
    return intercept, t + 1.0


@kernel
def sgd_epoch(
    X,
    y,
    sample_weight,
    order,
    w,
    intercept,
    fit_intercept,
    loss_code,
    epsilon,
    schedule_code,
    eta0,
    power_t,
    alpha,
    optimal_init,
    t,
    l1,
    l2,
    avg_w,
    avg_b,
    average_start,
    block_rows=0,
):
    """One epoch of per-sample SGD over the rows in ``order`` (empty: file order).

    For each row: ``w ← prox(w·(1 − η·l2) − η·s·L'(x·w + b, y)·x)``,
    ``b ← b − η·s·L'``, ``t ← t + 1``. Under a passive-aggressive rule the data step
    uses the row's own size (see ``passive_aggressive_step``) and the decay ``η = eta0``.
    Averaging (``avg_w``, ``avg_b``,
    ``average_start``) as in :func:`batch_epoch`.

    Returns ``(intercept, Σ s·L over the epoch, t after the epoch, bad)``; ``bad`` is the
    position in ``order`` of the first row with a non-finite prediction, or -1.
    """
    n = order.shape[0] if order.shape[0] > 0 else X.shape[0]
    d = X.shape[1]
    dtype = X.dtype.type
    weighted = sample_weight.shape[0] > 0
    use_order = order.shape[0] > 0
    averaging = avg_w.shape[0] > 0
    passive = is_passive_aggressive(schedule_code)
    loss_total = 0.0
    stream = np.zeros(4, dtype=np.int64)
    if n == 0:
        return intercept, loss_total, t, -1
    p = _row_dot(X, order[0] if use_order else 0, w) + intercept
    for k in range(n):
        if use_order:
            prefetch_for_order(X, order, k, block_rows, stream)
        i = order[k] if use_order else k
        if not is_finite(p):
            return intercept, loss_total + p, t, k
        eta = learning_rate(schedule_code, t, eta0, power_t, alpha, optimal_init)
        value, deriv = loss_and_derivative(loss_code, p, y[i], epsilon)
        step_size = eta
        if passive:
            squared_norm = 0.0
            for j in range(d):
                squared_norm += X[i, j] * X[i, j]
            step_size = passive_aggressive_step(schedule_code, value, squared_norm, eta0)
        if weighted:
            value *= sample_weight[i]
            deriv *= sample_weight[i]
        loss_total += value
        if fit_intercept:
            intercept -= step_size * deriv
        if l1 > 0.0 or averaging or passive or k + 1 == n:
            _penalized_update(w, X[i], step_size * deriv, eta, l1, l2)
            _average_step(w, intercept, avg_w, avg_b, t, average_start)
            t += 1.0
            if k + 1 < n:
                p = _row_dot(X, order[k + 1] if use_order else k + 1, w) + intercept
        else:
            # Without L1 the step is linear, so the next row's prediction under the new
            # weights is decay·(x'·w) − step·(x'·x) + b: both dot products ride along the
            # update in one loop, taking the next row's loads off the serial chain of steps
            # (measured: ~20% faster in a shuffled order, equal in file order).
            t += 1.0
            decay = dtype(1.0 - eta * l2)
            step = dtype(eta * deriv)
            following = order[k + 1] if use_order else k + 1
            next_dot_w = dtype(0.0)
            next_dot_x = dtype(0.0)
            for j in range(d):
                wj = w[j]
                xj = X[i, j]
                next_x = X[following, j]
                next_dot_w += next_x * wj
                next_dot_x += next_x * xj
                w[j] = wj * decay - step * xj
            p = decay * next_dot_w - step * next_dot_x + intercept
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


@parallel_kernel
def scan_rows(A, sample_weight, extra):
    """One parallel pass over the 2-D array ``A``: returns ``(row, column, norm)`` where
    ``(row, column)`` is the first NaN or ±inf (``(-1, -1)`` if none) and ``norm`` is
    ``max_i s_i·(‖a_i‖² + extra)`` (``extra`` = 1 for the intercept's column).

    Validation and the ``auto`` step size share this one read of X; the exact place of a
    non-finite value is searched only in the chunks that hold one.
    """
    n = A.shape[0]
    weighted = sample_weight.shape[0] > 0
    chunk = chunk_rows_for(n)
    n_chunks = (n + chunk - 1) // chunk
    bad = np.zeros(n_chunks, dtype=np.int64)
    norms = np.zeros(n_chunks)
    for c in numba.prange(n_chunks):
        n_bad = 0
        best = 0.0
        for i in range(c * chunk, min((c + 1) * chunk, n)):
            norm = 0.0
            for j in range(A.shape[1]):
                value = float(A[i, j])
                norm += value * value
                n_bad += 0 if is_finite(value) else 1
            norm += extra
            if weighted:
                norm *= sample_weight[i]
            best = max(best, norm)
        bad[c] = n_bad
        norms[c] = best
    for c in range(n_chunks):
        if bad[c]:
            for i in range(c * chunk, min((c + 1) * chunk, n)):
                for j in range(A.shape[1]):
                    if not is_finite(A[i, j]):
                        return i, j, np.inf
    return -1, -1, norms.max()


@kernel
def loss_sum(scores, y, sample_weight, loss_code, epsilon):
    """``Σ s·L(scores_i, y_i)``: the data term of the objective for given predictions."""
    weighted = sample_weight.shape[0] > 0
    total = 0.0
    for i in range(scores.shape[0]):
        value, _ = loss_and_derivative(loss_code, scores[i], y[i], epsilon)
        total += value * sample_weight[i] if weighted else value
    return total
