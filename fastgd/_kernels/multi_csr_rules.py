r"""The optimizer rules on CSR rows for k outputs: the single-output CSR kernels' rules
(``sparse._sgd_epoch_csr_rule``, ``_batch_epoch_csr_rule``, and SAGA's) run on each
output's row of ``W``, with its own slots, running means, row memory and intercept.

Each output takes ``rules.lazy_optimizer_update`` (momentum, nesterov momentum, AdaGrad,
RMSProp, Adam, AdamW: as torch's ``SparseAdam`` and Vowpal Wabbit, only the coordinates of
the step's rows move, weights and slots) from its own derivative; the running means catch
up lazily (``sparse._lazy_average_*``). A step costs O(k · its rows' non-zeros). The rows,
the state and the modes are ``multi``'s (:class:`~fastgd._kernels.multi.CsrMultiRows`,
:class:`~fastgd._kernels.multi.MultiState`, ``OVR``/``MULTI_OUTPUT``/``SOFTMAX``), the
derivatives ``multi._derivatives``: for ovr and multi-output, row ``o`` of ``W`` is the
single-output CSR kernel's run on output ``o`` with the same order and steps; softmax
takes the same per-output rule from the softmax derivatives. SAGA runs just in time, each
output as ``sparse._sgd_epoch_csr_saga``/``_batch_epoch_csr_saga`` with its own row memory
(the dense rule's result; see the SAGA section). :func:`multi_csr_rule_epoch` picks the
kernel.

Mini-batches: the k scores of each row (at the weights of the batch's start) are computed
in parallel chunks when ``parallel`` (each row's sums one thread's, as the serial loop's),
the gradients are summed serially in row order: results do not depend on the number of
threads. The batch's gradient is kept as ``grad[j, o]`` (d, k), so that listing a column
(``sparse._list_batch``) zeroes all k of its entries at once.

Conventions as ``multi.py``: the kernels return ``(Σ s·L, t after the epoch, bad)``, ``bad``
the position of the first row (per-sample) or batch with a non-finite score or loss, -1 if
none; ``state.losses`` receives each output's ``Σ s·L``.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ..options import UPDATE_SAGA
from ._config import kernel, parallel_kernel, scalar
from .epochs import MIN_CHUNK_ROWS, chunk_rows_for
from .multi import _csr_row_scores, _derivatives
from .records import CsrRows, State
from .rules import lazy_optimizer_update, row_derivative
from .scalar import is_finite, step_size
from .sparse import (
    _csr_row_at,
    _index,
    _lazy_average_after,
    _lazy_average_before,
    _lazy_average_finish,
    _list_batch,
    _saga_after_step,
    _saga_before_step,
    _saga_catch_up,
    _saga_catch_up_all,
    _saga_intercept,
    _saga_marks,
    _saga_start,
    _saga_step_feature,
    _saga_step_k,
    _saga_step_rest,
)


@scalar
def _output_state(state, o, t, no_average):
    """Output ``o``'s training state as the single-output CSR rules read it
    (``records.State``: views of its row of ``W``, its running means, slots and row
    memory; no truncated L1)."""
    avg_w = state.avg_W[o] if state.avg_W.shape[0] > 0 else no_average
    return State(state.W[o], state.b[o], t, avg_w, state.avg_b[o : o + 1], state.slots[o],
                 state.row_memory[o], no_average)  # fmt: skip


@scalar
def _average_marks(state, t, spec):
    """Per output and feature, the number of averaged steps its running mean is current at
    (``sparse._lazy_average_start`` of each output): all of those before this call."""
    return np.full(state.avg_W.shape, max(t - spec.average_start, 0.0))


@scalar
def _finish(state, current, t, spec, no_average):
    """Every output's running means brought to the steps before counter ``t``."""
    for o in range(state.W.shape[0]):
        _lazy_average_finish(_output_state(state, o, t, no_average), current[o], t, spec)


@scalar
def _lazy_step(state, o, step, coef, grad_b, current, eta, t, spec, no_average):
    """Output ``o``'s lazy rule step (``rules.lazy_optimizer_update``) on the step's columns,
    ``step = (values, columns, count, by_column)`` as that function takes them, with its
    running means before and after (as ``sparse._sgd_epoch_csr_rule``)."""
    values, columns, count, by_column = step
    single = _output_state(state, o, t, no_average)
    k = t - spec.average_start + 1.0
    _lazy_average_before(single, columns, count, current[o], k)
    intercept = lazy_optimizer_update(spec, single, values, columns, count, by_column, coef,
                                      grad_b, eta, t, state.b[o])  # fmt: skip
    state.b[o] = intercept
    _lazy_average_after(single, columns, count, current[o], k, intercept)


@kernel
def multi_rule_sgd_epoch_csr(rows, mode, spec, state):
    """One epoch of per-sample steps under the optimizer rule ``spec.rule`` (not SAGA) over
    the CSR rows (:class:`multi.CsrMultiRows`) for all k outputs, each output the lazy rule
    of ``sparse._sgd_epoch_csr_rule``. Returns ``(Σ s·L, t, bad)``."""
    data, indices, indptr, Y, labels, sample_weight, order = rows
    k = state.W.shape[0]
    n = indptr.shape[0] - 1
    scores = np.empty(k)
    derivs = np.empty(k)
    current = _average_marks(state, state.t, spec)
    no_average = np.empty(0)
    state.losses[:] = 0.0
    t = state.t
    total = 0.0
    for position in range(n):
        i = _csr_row_at(data, indices, indptr, labels, order, position, n)
        eta = step_size(spec, t)
        if not _csr_row_scores(data, indices, indptr, i, state.W, 1.0, state.b, scores):
            _finish(state, current, t, spec, no_average)
            return total + math.inf, t, position
        total += _derivatives(mode, spec, Y, labels, sample_weight, i, scores, derivs,
                              state.losses)  # fmt: skip
        lo = _index(indptr[i])
        count = _index(indptr[i + 1]) - lo
        step = (data[lo : lo + count], indices[lo : lo + count], count, False)
        for o in range(k):
            _lazy_step(state, o, step, derivs[o], 1.0, current, eta, t, spec, no_average)
        t += 1.0
    _finish(state, current, t, spec, no_average)
    return total, t, -1


# ---------------------------------------------------------------------------------------------
# Mini-batches.
# ---------------------------------------------------------------------------------------------


@scalar
def _scores_of(rows, position, state, scores):
    """The k scores of the row at ``position`` into ``scores``; whether all are finite."""
    data, indices, indptr, _, _, _, order = rows
    i = order[position] if order.shape[0] > 0 else position
    return _csr_row_scores(data, indices, indptr, i, state.W, 1.0, state.b, scores)


@parallel_kernel
def _batch_scores_parallel(rows, start, stop, state, scores):
    """``scores[p − start]`` of the rows at positions ``start..stop``, in chunks that depend
    on the batch size only; returns how many rows have a non-finite score."""
    chunk = chunk_rows_for(stop - start)
    n_chunks = (stop - start + chunk - 1) // chunk
    bad = 0
    for c in numba.prange(n_chunks):
        for position in range(start + c * chunk, min(start + (c + 1) * chunk, stop)):
            if not _scores_of(rows, position, state, scores[position - start]):
                bad += 1
    return bad


@scalar
def _batch_scores(rows, start, stop, state, scores, parallel):
    """The batch's k scores a row at the weights in force; whether all are finite. In
    parallel chunks only for a batch of more than one chunk (as ``sparse``)."""
    if parallel and stop - start > MIN_CHUNK_ROWS:
        return _batch_scores_parallel(rows, start, stop, state, scores) == 0
    finite = True
    for position in range(start, stop):
        finite = _scores_of(rows, position, state, scores[position - start]) and finite
    return finite


@scalar
def _batch_gradient(rows, start, stop, mode, spec, state, scores, derivs, deriv_sums, grad):
    """``grad[j, o] += Σ c_o·x_ij`` over the batch's rows in order (its columns listed and
    zeroed already), ``deriv_sums[o] = Σ c_o``, with ``c_o`` row ``i``'s derivative for
    output ``o`` (SAGA: its change, ``rules.row_derivative``, which stores it). Returns
    ``Σ s·L`` of the batch (each output's added to ``state.losses``)."""
    data, indices, indptr, Y, labels, sample_weight, order = rows
    k = state.W.shape[0]
    dtype = grad.dtype.type
    batch_loss = 0.0
    deriv_sums[:] = 0.0
    for position in range(start, stop):
        i = order[position] if order.shape[0] > 0 else position
        batch_loss += _derivatives(mode, spec, Y, labels, sample_weight, i,
                                   scores[position - start], derivs, state.losses)  # fmt: skip
        for o in range(k):
            derivs[o] = row_derivative(spec, state.row_memory[o], i, derivs[o])
            deriv_sums[o] += derivs[o]
        for p in range(_index(indptr[i]), _index(indptr[i + 1])):
            j = _index(indices[p])
            for o in range(k):
                grad[j, o] += dtype(derivs[o]) * data[p]
    return batch_loss


@scalar
def _batch_work(rows, state, batch_size):
    """The per-call buffers of a batch epoch: ``grad`` (d, k) in the weights' dtype, the
    column listing (``seen``, ``touched``, as ``sparse._list_batch`` keeps them), the
    batch's scores (m, k), a row's derivatives and their sums."""
    k, d = state.W.shape
    n = rows.indptr.shape[0] - 1
    grad = np.empty((d, k), dtype=state.W.dtype)
    seen = np.full(d, -1, dtype=np.int64)
    touched = np.empty(d, dtype=np.int64)
    scores = np.empty((min(batch_size, n), k))
    return grad, seen, touched, scores, np.empty(k), np.empty(k)


@scalar
def _list_columns(rows, start, stop, u, seen, touched, grad):
    """``sparse._list_batch`` of the batch (number ``u``): its columns, each once, their k
    gradient entries zeroed; returns how many."""
    data, indices, indptr, _, labels, sample_weight, order = rows
    single = CsrRows(data, indices, indptr, labels, sample_weight, order)
    return _list_batch(single, start, stop, u, seen, touched, grad)


@kernel
def multi_rule_batch_epoch_csr(rows, mode, batch_size, spec, state, parallel):
    """One epoch of mini-batch steps (full batch: ``batch_size ≥ n``) under the optimizer
    rule ``spec.rule`` (not SAGA) for all k outputs: each output the lazy rule of
    ``sparse._batch_epoch_csr_rule`` from its mean gradient over the batch's columns.
    Returns ``(Σ s·L, t, bad)``."""
    n = rows.indptr.shape[0] - 1
    grad, seen, touched, scores, derivs, deriv_sums = _batch_work(rows, state, batch_size)
    current = _average_marks(state, state.t, spec)
    no_average = np.empty(0)
    state.losses[:] = 0.0
    t = state.t
    total = 0.0
    for u in range((n + batch_size - 1) // batch_size):
        start = u * batch_size
        stop = min(start + batch_size, n)
        eta = step_size(spec, t)
        count = _list_columns(rows, start, stop, u, seen, touched, grad)
        finite = _batch_scores(rows, start, stop, state, scores, parallel)
        batch_loss = _batch_gradient(rows, start, stop, mode, spec, state, scores, derivs,
                                     deriv_sums, grad)  # fmt: skip
        total += batch_loss
        if not finite or not is_finite(batch_loss):
            _finish(state, current, t, spec, no_average)
            return total + math.inf, t, start
        m = stop - start
        for o in range(state.W.shape[0]):
            step = (grad[:, o], touched, count, True)
            _lazy_step(state, o, step, 1.0 / m, deriv_sums[o], current, eta, t, spec, no_average)
        t += 1.0
    _finish(state, current, t, spec, no_average)
    return total, t, -1


# ---------------------------------------------------------------------------------------------
# SAGA: just in time, each output as sparse._sgd_epoch_csr_saga / _batch_epoch_csr_saga.
#
# Each output keeps its own per-feature markers and its own copy of the per-step history
# (k × min(steps, max(d, HISTORY_STEPS)) × 7 float64): the history depends on the steps'
# scalars only, so the copies are equal, but sparse._saga_before_step restarts the history
# it is given after catching up the one output it is given. A step costs O(k · non-zeros)
# plus the catch-ups, as one output's times k.
# ---------------------------------------------------------------------------------------------


@scalar
def _saga_setup(state, n_steps, no_average):
    """Per output, the markers and history of ``sparse._saga_start``, all at state 0."""
    k, d = state.W.shape
    _, first = _saga_start(_output_state(state, 0, state.t, no_average), n_steps)
    history = np.empty((k, first.shape[0], first.shape[1]))
    for o in range(k):
        history[o, 0] = first[0]
    return np.zeros((k, d), dtype=np.int64), history


@scalar
def _saga_before_steps(u, eta, averaged, since, base, state, last, history, spec, marks,
                       no_average):  # fmt: skip
    """``sparse._saga_before_step`` of every output (their histories restart together);
    returns ``(base, since, dense)``."""
    new_base, new_since, dense = base, since, False
    for o in range(state.W.shape[0]):
        single = _output_state(state, o, state.t, no_average)
        new_base, new_since, dense = _saga_before_step(
            u, eta, averaged, since, base, single.w, single.slots, single.avg_w, last[o],
            history[o], spec, marks,
        )  # fmt: skip
    return new_base, new_since, dense


@scalar
def _saga_catch_up_columns(columns, count, v, state, last, history, base, spec, marks,
                           no_average):  # fmt: skip
    """Every output's features ``columns[:count]`` brought to state ``v``
    (``sparse._saga_catch_up``)."""
    for o in range(state.W.shape[0]):
        single = _output_state(state, o, state.t, no_average)
        for q in range(count):
            _saga_catch_up(_index(columns[q]), v, single.w, single.slots, single.avg_w, last[o],
                           history[o], base, spec, marks)  # fmt: skip


@scalar
def _saga_row_scores(step, u, state, last, history, base, spec, marks, scores, no_average):
    """Every output's features of a row (``step`` as :func:`_lazy_step`) brought to state
    ``u``, and the row's k scores, each summed in the catch-up loop as
    ``sparse._sgd_epoch_csr_saga`` sums it (the same bits in float32 too); whether all are
    finite."""
    values, columns, count, _ = step
    finite = True
    for o in range(state.W.shape[0]):
        single = _output_state(state, o, state.t, no_average)
        acc = values.dtype.type(0.0)
        for q in range(count):
            j = _index(columns[q])
            _saga_catch_up(j, u, single.w, single.slots, single.avg_w, last[o], history[o], base,
                           spec, marks)  # fmt: skip
            acc += values[q] * single.w[j]
        scores[o] = acc + state.b[o]
        finite = finite and is_finite(scores[o])
    return finite


@scalar
def _saga_finish(v, state, last, history, base, spec, marks, no_average):
    """Every output's features brought to state ``v`` (``sparse._saga_catch_up_all``)."""
    for o in range(state.W.shape[0]):
        single = _output_state(state, o, state.t, no_average)
        _saga_catch_up_all(v, single.w, single.slots, single.avg_w, last[o], history[o], base,
                           spec, marks)  # fmt: skip


@scalar
def _saga_output_step(state, o, step, scalars, u, dense, base, last, history, spec, no_average):
    """Output ``o``'s SAGA step from state ``u`` on the step's columns (``step = (values,
    columns, count, by_column)`` as :func:`_lazy_step`; ``scalars = (coef, share, grad_b,
    eta, k)`` as ``sparse._saga_step_feature`` and ``_saga_intercept`` take them), then
    the step recorded in its history; returns the history's new base."""
    values, columns, count, by_column = step
    coef, share, grad_b, eta, k = scalars
    single = _output_state(state, o, state.t, no_average)
    for q in range(count):
        j = _index(columns[q])
        raw = float(values[j]) if by_column else float(values[q])
        _saga_step_feature(j, u, raw, coef, share, eta, k, single.w, single.slots, single.avg_w,
                           last[o], spec)  # fmt: skip
    if dense:
        _saga_step_rest(u, eta, k, single.w, single.slots, single.avg_w, last[o], spec)
    state.b[o] = _saga_intercept(state.b[o], coef, grad_b, share, eta, k, single, spec)
    return _saga_after_step(u, eta, k > 0.0, dense, base, history[o], spec)


@kernel
def multi_saga_sgd_epoch_csr(rows, mode, spec, state):
    """One epoch of per-sample SAGA over the CSR rows for all k outputs, each output
    ``sparse._sgd_epoch_csr_saga`` (the dense rule's result, just in time) with its own row
    memory. Returns ``(Σ s·L, t, bad)``."""
    data, indices, indptr, Y, labels, sample_weight, order = rows
    k = state.W.shape[0]
    n = indptr.shape[0] - 1
    no_average = np.empty(0)
    last, history = _saga_setup(state, n, no_average)
    marks = _saga_marks(state, spec)
    base, since = 0, 0
    scores = np.empty(k)
    derivs = np.empty(k)
    state.losses[:] = 0.0
    t = state.t
    total = 0.0
    for u in range(n):
        i = _csr_row_at(data, indices, indptr, labels, order, u, n)
        eta = step_size(spec, t)
        step_k = _saga_step_k(_output_state(state, 0, t, no_average), spec, t)
        base, since, dense = _saga_before_steps(u, eta, step_k > 0.0, since, base, state, last,
                                                history, spec, marks, no_average)  # fmt: skip
        lo = _index(indptr[i])
        count = _index(indptr[i + 1]) - lo
        step = (data[lo : lo + count], indices[lo : lo + count], count, False)
        if not _saga_row_scores(step, u, state, last, history, base, spec, marks, scores,
                                no_average):  # fmt: skip
            _saga_finish(u, state, last, history, base, spec, marks, no_average)
            return total + math.inf, t, u
        total += _derivatives(mode, spec, Y, labels, sample_weight, i, scores, derivs,
                              state.losses)  # fmt: skip
        new_base = base
        for o in range(k):
            coef = row_derivative(spec, state.row_memory[o], i, derivs[o])
            share = coef * 1 / state.row_memory.shape[1]
            new_base = _saga_output_step(state, o, step, (coef, share, 1.0, eta, step_k), u,
                                         dense, base, last, history, spec, no_average)  # fmt: skip
        base = new_base
        t += 1.0
    _saga_finish(n, state, last, history, base, spec, marks, no_average)
    return total, t, -1


@kernel
def multi_saga_batch_epoch_csr(rows, mode, batch_size, spec, state, parallel):
    """One epoch of mini-batch SAGA over the CSR rows for all k outputs, each output
    ``sparse._batch_epoch_csr_saga`` with its own row memory. Returns ``(Σ s·L, t, bad)``."""
    n = rows.indptr.shape[0] - 1
    grad, seen, touched, scores, derivs, deriv_sums = _batch_work(rows, state, batch_size)
    no_average = np.empty(0)
    n_steps = (n + batch_size - 1) // batch_size
    last, history = _saga_setup(state, n_steps, no_average)
    marks = _saga_marks(state, spec)
    base, since = 0, 0
    state.losses[:] = 0.0
    t = state.t
    total = 0.0
    for u in range(n_steps):
        start = u * batch_size
        stop = min(start + batch_size, n)
        m = stop - start
        eta = step_size(spec, t)
        step_k = _saga_step_k(_output_state(state, 0, t, no_average), spec, t)
        base, since, dense = _saga_before_steps(u, eta, step_k > 0.0, since, base, state, last,
                                                history, spec, marks, no_average)  # fmt: skip
        count = _list_columns(rows, start, stop, u, seen, touched, grad)
        _saga_catch_up_columns(touched, count, u, state, last, history, base, spec, marks,
                               no_average)  # fmt: skip
        finite = _batch_scores(rows, start, stop, state, scores, parallel)
        batch_loss = _batch_gradient(rows, start, stop, mode, spec, state, scores, derivs,
                                     deriv_sums, grad)  # fmt: skip
        total += batch_loss
        if not finite or not is_finite(batch_loss):
            _saga_finish(u, state, last, history, base, spec, marks, no_average)
            return total + math.inf, t, start
        coef = 1.0 / m
        share = coef * m / state.row_memory.shape[1]
        new_base = base
        for o in range(state.W.shape[0]):
            step = (grad[:, o], touched, count, True)
            scalars = (coef, share, deriv_sums[o], eta, step_k)
            new_base = _saga_output_step(state, o, step, scalars, u, dense, base, last, history,
                                         spec, no_average)  # fmt: skip
        base = new_base
        t += 1.0
    _saga_finish(n_steps, state, last, history, base, spec, marks, no_average)
    return total, t, -1


def multi_csr_rule_epoch(rows, mode, spec, state, batch_size, parallel):
    """One epoch of the optimizer rule ``spec.rule`` on CSR rows for k outputs: per-sample
    (``batch_size`` 0) or in batches; the lazy rules, or SAGA just in time. (Python: only
    the kernel a fit uses compiles.)"""
    saga = spec.rule == UPDATE_SAGA
    if batch_size == 0:
        epoch = multi_saga_sgd_epoch_csr if saga else multi_rule_sgd_epoch_csr
        return epoch(rows, mode, spec, state)
    epoch = multi_saga_batch_epoch_csr if saga else multi_rule_batch_epoch_csr
    return epoch(rows, mode, batch_size, spec, state, parallel)
