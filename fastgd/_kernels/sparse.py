r"""Epoch loops on scipy.sparse CSR data: a step costs O(non-zeros it reads), not O(d).

The kernels take the three arrays of a CSR matrix (``data``, ``indices``, ``indptr``; ``data``
in the dtype of ``w``, indices int32 or int64) and otherwise follow the conventions of
``epochs.py``: ``sample_weight`` empty means all ones, ``order`` empty means file order,
the options come in a ``records.Spec`` and the training state in a ``records.State`` (``w``
updated in place, the new intercept and step counter returned), and an epoch stops at the
first non-finite prediction (SGD) or batch loss (mini-batch) and returns its position. Rows
must hold each column at most once (scipy's canonical form; ``sum_duplicates()`` makes it
so); the columns of a row need not be sorted. They implement the rules whose
``UpdateRule.sparse`` is set in ``fastgd.options``: plain SGD (below), and the optimizer
rules in their lazy variant (the section before ``predict_csr``).

Lazy penalty
------------
A step at counter :math:`t` with :math:`a_t = 1 - \eta_t\lambda_2`, :math:`c_t =
\eta_t\lambda_1` maps a weight that no row of the step touches by
:math:`w \mapsto \operatorname{sign}(w a_t)\max(|w||a_t| - c_t, 0)`. Such maps compose into
one of the same form. With the running product :math:`P_s = \prod_{r \le s} a_r` and
:math:`Q_s = \sum_{r \le s} c_r / |P_r|` (both kept per step, in float64), the steps after
state :math:`u` up to state :math:`v` map an untouched weight to

.. math::

    w_v = \operatorname{sign}(w_u)\,\operatorname{sign}(P_u P_v)\,|P_v|\,
          \max\bigl(|w_u| / |P_u| - (Q_v - Q_u),\ 0\bigr)

(without L1, :math:`Q = 0` and this is :math:`w_u P_v / P_u`). Without L1 and without
averaging both kernels take a simpler path: they store :math:`w / P` and keep the one scale
:math:`P` (scikit-learn's ``wscale``), so a step does no per-feature bookkeeping at all.
Each feature remembers the state it is current at (``last[j]``); it is brought up to date
just before a step reads or writes it, and every feature is brought up to date at the end
of the epoch (and on an early return), so ``w`` is exact on return. When :math:`|P|` would
fall below ``RENORMALISE_BELOW`` all features are brought up to date (O(d)) and the
products restart at 1; a step with :math:`|a_t|` itself that small (:math:`\eta\lambda_2
\approx 1`) is applied densely (O(d)).

Lazy average (ASGD)
-------------------
``avg_w`` is the running mean :math:`\bar w_k = \bar w_{k-1} + (w - \bar w_{k-1})/k`,
:math:`k = t - \text{average\_start} + 1`, over the steps with :math:`t \ge`
``average_start``. With :math:`R_s = \sum_{r \le s,\ r\ \text{averaged}} P_r` and
:math:`T_s = \sum_{r \le s,\ r\ \text{averaged}} P_r Q_r`, the sum of an untouched weight
over the averaged states in :math:`(u, v]` is

.. math::

    \operatorname{sign}(w_u)\operatorname{sign}(P_u)\,
    \bigl[(m + Q_u)(R_e - R_u) - (T_e - T_u)\bigr], \qquad m = |w_u|/|P_u|,

where :math:`e` is the last state before the soft threshold zeroes the weight (found by
binary search on the non-decreasing :math:`Q`; without L1, :math:`e = v` and the sum is
:math:`w_u (R_v - R_u) / P_u`). The mean then follows from :math:`k\,\bar w_k = (k -
1)\,\bar w_{k-1} + w_k`. So averaging stays O(non-zeros) per step, plus O(log steps) per
touched feature with L1.

Cost
----
Per call: O(d) to start the per-feature markers (or the seen-list of mini-batch) and to
bring every feature up to date at the end, and, on the lazy path, a per-step history of
at most ``max(d, HISTORY_STEPS)`` steps (32 bytes a step; when full, it restarts with an
O(d) catch-up, amortised O(1) a step). Per step: O(non-zeros of the row or batch) (times
O(log steps) per touched feature with L1 and averaging, for the binary search), plus an
O(d) catch-up only when the product of decays falls below its threshold: with
``1 − eta·l2 = 0.5`` every ~50 (scaled path) or ~200 (lazy path) steps, with averaging
and strong decay every few steps (see ``AVERAGE_GROWTH``); with the usual ``eta·l2 < 1e-3``,
rarely or never.

Measured on a 200,000 x 100,000 CSR with 50 non-zeros a row (float64, ``l2``, invscaling,
file order; 2 cores shared with other work, so ±50%): one SGD epoch 31-50 ms
(scikit-learn's ``SGDRegressor(max_iter=1, tol=None, shuffle=False)``: 47-110 ms on the
same matrix, with the same coefficients to 6e-17 when neither fits an intercept), 125 ms
in a shuffled order. CPU time of one epoch, one thread (``benchmarks/test_sparse_speed.py``
compares them side by side): SGD 20 ms, B=256 mini-batch 16 ms (scikit-learn 46-50 ms); the
lazy path (elastic net, averaging, both) SGD 158-163, 109, 211-213 ms, B=256 153-161,
105-116, 203 ms. It was 10-40x slower than the scaled path while its per-feature helpers,
inlined per feature, made NRT reference-count calls for each array they took
(see :func:`_catch_up_features`); what is left is the per-feature work itself: two random
passes over the touched features' weights, markers and means (catch-up, then the step),
with a division or two each.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba.core import types

from ..options import L1_TRUNCATED, UPDATE_SAGA
from ._config import kernel, parallel_kernel, scalar
from .epochs import (
    MIN_CHUNK_ROWS,
    add_square,
    chunk_rows_for,
    register_row_format,
    scan_chunks,
)
from .memory import prefetch
from .records import CsrRows
from .rules import is_optimizer, lazy_optimizer_update, row_derivative, saga_direction
from .scalar import (
    decay_factor,
    is_finite,
    loss_and_derivative,
    soft_threshold,
    step_size,
    truncate_weight,
)

#: Restart the running products when ``|P|`` would fall below this: far above float64's
#: smallest normal (1e-308), so ``c/|P|`` and the products of the history stay accurate.
RENORMALISE_BELOW = 1e-60

#: The scaled path (no L1, no averaging) stores ``w / scale`` in the dtype of ``w``: keep
#: ``1/scale`` small enough that float32 weights of 1e19 stay finite (2^-50 ≈ 8.9e-16).
SCALE_RENORMALISE_BELOW = 2.0**-50

#: With averaging, also restart when ``R = Σ P_s`` exceeds ``|P|`` times this many times the
#: number of averaged steps since the last restart. Under strong L2 the products decay
#: geometrically, so ``R`` is dominated by its first terms and the difference ``R_v − R_u``
#: of two late states loses ``log2(R/|P|)`` bits (measured: with ``1 − eta·l2 = 0.5``, the
#: averages were wrong in the 4th digit after 100 steps); this bound keeps the loss to a
#: few bits. With ``eta·l2 ≪ 1`` it is reached after ~``3.5/(eta·l2)`` steps (an O(d)
#: catch-up every 3,500 steps at ``eta·l2 = 1e-3``).
AVERAGE_GROWTH = 8.0

#: Positions and column numbers are cast to this before indexing: Numba wraps negative
#: signed indices around (a compare and select on every access), unsigned ones it does not.
#: Measured on the 200,000 x 100,000 CSR of the report (50 non-zeros a row): the SGD epoch
#: took 85 ms with the stored int32 indices, 46 ms with them cast.
_index = numba.uint64

#: The lazy path's per-step history holds at most ``max(d, HISTORY_STEPS)`` steps (32 bytes
#: each): memory stays O(d), not O(n), and the forced restart costs O(1) a step amortised.
HISTORY_STEPS = 4096

#: The first averaged state before it is known: later than any state (it shifts down by
#: at most n at the restarts).
_NOT_YET = 2**62

# Columns of the per-step history.
_PRODUCT, _THRESHOLD, _SUM_PRODUCT, _SUM_PRODUCT_THRESHOLD = 0, 1, 2, 3


#: ``columns`` of :func:`_catch_up_features` and :func:`_update_features` that means "every
#: feature from ``lo`` to ``hi``": a global array is a constant of the compiled code.
_EVERY_FEATURE = np.empty(0, dtype=np.int64)

#: The lazy mini-batch loops over a batch's list of columns prefetch the weights, markers,
#: means and gradient of the feature this many places ahead (random places in O(d) arrays).
#: Measured on the 200,000 x 100,000 CSR of the module docstring (B=256, 1 thread, CPU,
#: interleaved with the same code without it): elastic net 153 -> 128 ms, averaging 98 ->
#: 91, both 183 -> 152. A row's few columns gained nothing (SGD within noise), nor did
#: prefetching the listing's markers.
FEATURES_AHEAD = 16


@scalar
def _catch_up_features(columns, values, lo, hi, v, w, last, history, avg_w, l1, marks):
    """Bring the features ``columns[lo:hi]`` (``columns`` empty: ``lo..hi``), each current
    at state ``last[j]``, to state ``v``: ``w[j]`` and, when averaging (``avg_w``
    non-empty), ``avg_w[j]`` (``marks`` as :func:`_begin_lazy_step` keeps them), and
    return ``Σ values[p]·w[j]`` over them after it (``values`` empty: 0), summed in the order
    of ``p``: a row's prediction, the same sum as before the loop was a helper.

    The whole loop is one helper, its body spelled out with scalar helpers only: every call
    of an inlined helper that takes arrays increfs and decrefs each of them (an NRT call
    with an atomic add or subtract each, which Numba's reference-count pruning leaves in
    place when the helper branches or loops). Measured on the 200,000 x 100,000 CSR of the
    module docstring (50 non-zeros a row, 1 thread): a one-feature catch-up and ``_update_touched``
    called per feature made 8-10 such calls a feature and the lazy path 12-33x slower
    than the scaled one (L1 SGD epoch 582 against 23 ms)."""
    first_averaged, avg_offset = marks[0], marks[2]
    every = columns.shape[0] == 0
    dot = values.shape[0] > 0
    listed = not every and not dot  # a batch's list of columns: prefetched
    averaging = avg_w.shape[0] > 0
    p_v = history[v, _PRODUCT]
    q_v = history[v, _THRESHOLD]
    acc = w.dtype.type(0.0)
    for p in range(lo, hi):
        j = _index(p) if every else _index(columns[p])
        if listed and p + FEATURES_AHEAD < hi:
            later = _index(columns[p + FEATURES_AHEAD])
            prefetch(last, later)
            prefetch(w, later)
            if averaging:
                prefetch(avg_w, later)
        u = last[j]
        if u != v:
            w_u = float(w[j])
            p_u = history[u, _PRODUCT]
            if l1 > 0.0:
                q_u = history[u, _THRESHOLD]
                size = abs(w_u) / abs(p_u)
                w[j] = _thresholded_weight(w_u, p_u, p_v, size, q_v - q_u)
                if averaging and v >= first_averaged:
                    # The last state of (u, v] before the threshold zeroes the weight: a
                    # binary search on the non-decreasing Q (spelled out: see above), after
                    # two checks that give its answer at once for a weight that outlives
                    # the steps (e = v) or that the first step zeroes (e = u, every zero
                    # weight): random reads of the history, a dozen a search, made the
                    # elastic-net + averaging SGD epoch ~3x the averaging one.
                    lo_state = u + 1
                    hi_state = v + 1
                    if q_v - q_u < size:
                        lo_state = hi_state
                    elif history[lo_state, _THRESHOLD] - q_u >= size:
                        hi_state = lo_state
                    while lo_state < hi_state:
                        mid = (lo_state + hi_state) // 2
                        if history[mid, _THRESHOLD] - q_u >= size:
                            hi_state = mid
                        else:
                            lo_state = mid + 1
                    e = lo_state - 1
                    total = (size + q_u) * (history[e, _SUM_PRODUCT] - history[u, _SUM_PRODUCT]) - (
                        history[e, _SUM_PRODUCT_THRESHOLD] - history[u, _SUM_PRODUCT_THRESHOLD]
                    )
                    if (w_u > 0.0) != (p_u > 0.0):
                        total = -total
                    avg_w[j] = _mean_from(avg_w[j], total, u, v, first_averaged, avg_offset)
            else:
                w[j] = w_u * (p_v / p_u)
                if averaging and v >= first_averaged:
                    total = w_u * ((history[v, _SUM_PRODUCT] - history[u, _SUM_PRODUCT]) / p_u)
                    avg_w[j] = _mean_from(avg_w[j], total, u, v, first_averaged, avg_offset)
            last[j] = v
        if dot:
            acc += values[p] * w[j]
    return acc


@scalar
def _thresholded_weight(w_u, p_u, p_v, size, threshold_sum):
    """A weight of size ``size = |w_u|/|P_u|`` after steps whose thresholds sum (over
    ``|P|``) to ``threshold_sum``: the module docstring's ``w_v``."""
    magnitude = abs(p_v) * max(size - threshold_sum, 0.0)
    same_sign = (p_u > 0.0) == (p_v > 0.0)
    if magnitude > 0.0:
        return magnitude if (w_u > 0.0) == same_sign else -magnitude
    return 0.0


@scalar
def _mean_from(mean_u, total, u, v, first_averaged, avg_offset):
    """The running mean at state ``v`` from ``mean_u`` at state ``u`` and the sum ``total``
    of the weight over the averaged states in ``(u, v]``: ``k_v·avg_v = k_u·avg_u + total``,
    with ``k_s = t(s) - average_start`` for the counter ``t(s)`` of the step after state ``s``
    (``k_u`` of a state before the first averaged one is that of the state just before it,
    in ``[0, 1)``: the weight scikit-learn's first update gives the old average)."""
    weight_u = avg_offset + max(u, first_averaged - 1)
    weight_v = avg_offset + v
    return (weight_u * float(mean_u) + total) / weight_v


@scalar
def _catch_up_all(v, w, last, history, avg_w, l1, marks):
    """Bring every feature to state ``v`` (``marks`` as :func:`_begin_lazy_step` keeps them)."""
    _catch_up_features(_EVERY_FEATURE, _EVERY_FEATURE, 0, w.shape[0], v, w, last, history, avg_w,
                       l1, marks)  # fmt: skip


@scalar
def _restart_history(history, v):
    history[v, _PRODUCT] = 1.0
    history[v, _THRESHOLD] = 0.0
    history[v, _SUM_PRODUCT] = 0.0
    history[v, _SUM_PRODUCT_THRESHOLD] = 0.0


@scalar
def _advance_history(history, u, decay, threshold, averaged):
    """The history of state ``u + 1`` after a step with ``a = decay``, ``c = threshold``."""
    product = history[u, _PRODUCT] * decay
    q = history[u, _THRESHOLD]
    if threshold > 0.0:
        q += threshold / abs(product)
    history[u + 1, _PRODUCT] = product
    history[u + 1, _THRESHOLD] = q
    if averaged:
        history[u + 1, _SUM_PRODUCT] = history[u, _SUM_PRODUCT] + product
        history[u + 1, _SUM_PRODUCT_THRESHOLD] = history[u, _SUM_PRODUCT_THRESHOLD] + product * q
    else:
        history[u + 1, _SUM_PRODUCT] = history[u, _SUM_PRODUCT]
        history[u + 1, _SUM_PRODUCT_THRESHOLD] = history[u, _SUM_PRODUCT_THRESHOLD]


@scalar
def _needs_restart(u, decay, averaged_since_restart, history):
    """Whether to restart the history at state ``u`` before the next step: the history is
    full, ``|P·a|`` would be tiny, or the running sum of products has grown so far above
    the latest product that differences of it would lose digits."""
    product = history[u, _PRODUCT]
    return (
        u + 1 >= history.shape[0]
        or abs(product * decay) < RENORMALISE_BELOW
        or abs(history[u, _SUM_PRODUCT])
        > AVERAGE_GROWTH * abs(product) * (averaged_since_restart + 1)
    )


@scalar
def _restart(u, w, last, history, avg_w, l1, first_averaged, avg_offset):
    """Bring every feature to state ``u`` (O(d)) and make it state 0 of a fresh history.
    State numbers are relative to the last restart; returns the new ``(first_averaged,
    avg_offset)``, shifted with them."""
    marks = (first_averaged, False, avg_offset, 0)
    _catch_up_features(_EVERY_FEATURE, _EVERY_FEATURE, 0, w.shape[0], u, w, last, history, avg_w,
                       l1, marks)  # fmt: skip
    last[:] = 0
    _restart_history(history, 0)
    return first_averaged - u, avg_offset + u


@scalar
def _restart_if_needed(
    u, decay, w, last, history, avg_w, l1, first_averaged, avg_offset, averaged_since_restart
):  # fmt: skip
    """Before the step after state ``u``: restart the history when :func:`_needs_restart`
    says so. Returns ``(u, dense, first_averaged, avg_offset, averaged_since_restart)``:
    the state to step from, whether this step must be applied densely (``|decay|`` itself
    tiny), and the bookkeeping of :func:`_restart`."""
    dense = False
    if _needs_restart(u, decay, averaged_since_restart, history):
        first_averaged, avg_offset = _restart(
            u, w, last, history, avg_w, l1, first_averaged, avg_offset
        )
        u = 0
        averaged_since_restart = 0
        dense = abs(decay) < RENORMALISE_BELOW
    return u, dense, first_averaged, avg_offset, averaged_since_restart


@scalar
def _update_touched(j, u, w, last, avg_w, scalars, step, l1):
    """The step on a feature the step touches (current at state ``u``):
    ``w ← prox(w·a − step)``, and the running mean (``scalars`` as
    :func:`_begin_lazy_step` returned them)."""
    _update_features(_EVERY_FEATURE, _EVERY_FEATURE, j, j + 1, False, step, u, w, last, avg_w,
                     scalars, l1)  # fmt: skip


@scalar
def _update_features(columns, values, lo, hi, by_feature, coef, u, w, last, avg_w, scalars,
                     l1):  # fmt: skip
    """:func:`_update_touched` on the features ``columns[lo:hi]`` (``columns`` empty:
    ``lo..hi``) with the steps ``coef·values[j]`` (``by_feature``) or ``coef·values[p]``
    (``values`` empty: ``coef``). One loop, spelled out, as :func:`_catch_up_features`."""
    _, decay, threshold, averaged, k, _ = scalars
    every = columns.shape[0] == 0
    constant = values.shape[0] == 0
    for p in range(lo, hi):
        j = _index(p) if every else _index(columns[p])
        if by_feature and p + FEATURES_AHEAD < hi:
            later = _index(columns[p + FEATURES_AHEAD])
            prefetch(w, later)
            prefetch(values, later)
        if constant:
            step = coef
        elif by_feature:
            step = coef * float(values[j])
        else:
            step = coef * float(values[p])
        value = float(w[j]) * decay - step
        if l1 > 0.0:
            value = soft_threshold(value, threshold)
        w[j] = value
        last[j] = u + 1
        if averaged:
            mean = float(avg_w[j])
            avg_w[j] = mean + (float(w[j]) - mean) / k


@scalar
def _end_step(u, w, last, history, avg_w, scalars, l1):
    """Record state ``u + 1``: the features the step left alone are lazy, or (dense step)
    updated now, after which the products restart."""
    _, decay, threshold, averaged, _, dense = scalars
    if dense:
        for j in range(w.shape[0]):
            if last[j] == u:
                _update_touched(j, u, w, last, avg_w, scalars, 0.0, l1)
        _restart_history(history, u + 1)
    else:
        _advance_history(history, u, decay, threshold, averaged)


@scalar
def _start_lazy_marks(t, spec):
    """The lazy path's bookkeeping at the start of an epoch, as :func:`_begin_lazy_step`
    reads and returns it: ``(first_averaged, started_averaging, avg_offset,
    averaged_since_restart)``. States are numbered from the last restart of the history;
    the first averaged one and ``avg_offset`` (``k`` of the step after state ``s`` is
    ``avg_offset + s + 1``) shift with them."""
    return _NOT_YET, False, t - spec.average_start, 0


@scalar
def _begin_lazy_step(spec, t, u, averaging, marks, w, last, history, avg_w):
    """The start of a lazy step at counter ``t`` after state ``u``: the schedule's ``eta``,
    the penalty's ``decay`` and ``threshold``, whether the step is averaged and its ``k``,
    then a restart of the history when needed. Returns ``(scalars, u, marks)``: the step's
    ``scalars = (eta, decay, threshold, averaged, k, dense)`` (``dense``: the step must be
    applied to every feature, :func:`_restart_if_needed`), the state it steps from and the
    new bookkeeping."""
    first_averaged, started_averaging, avg_offset, averaged_since_restart = marks
    eta = step_size(spec, t)
    decay = decay_factor(eta, spec.l2)
    threshold = eta * proximal_l1(spec)
    averaged = averaging and t >= spec.average_start
    if averaged and not started_averaging:
        started_averaging = True
        first_averaged = u + 1
    k = t - spec.average_start + 1.0
    u, dense, first_averaged, avg_offset, averaged_since_restart = _restart_if_needed(
        u, decay, w, last, history, avg_w, proximal_l1(spec), first_averaged, avg_offset,
        averaged_since_restart,
    )  # fmt: skip
    if averaged:
        averaged_since_restart += 1
    marks = (first_averaged, started_averaging, avg_offset, averaged_since_restart)
    return (eta, decay, threshold, averaged, k, dense), u, marks


@scalar
def _end_lazy_step(spec, state, u, last, history, scalars, t, intercept, intercept_step):
    """The end of the lazy step from state ``u`` at counter ``t`` whose touched features
    have moved (:func:`_update_touched`): records state ``u + 1`` (:func:`_end_step`), then
    the intercept's step and its running mean. Returns ``(intercept, t + 1, u + 1)``."""
    _end_step(u, state.w, last, history, state.avg_w, scalars, proximal_l1(spec))
    averaged, k = scalars[3], scalars[4]
    if spec.fit_intercept:
        intercept -= intercept_step * spec.intercept_decay
    if averaged:
        state.avg_b[0] += (intercept - state.avg_b[0]) / k
    return intercept, t + 1.0, u + 1


@scalar
def _start(w, n_steps):
    """Per-feature markers and the per-step history: at most ``max(d, HISTORY_STEPS)``
    steps, after which the history restarts (an O(d) catch-up, amortised O(1) a step)."""
    last = np.zeros(w.shape[0], dtype=np.int64)
    history = np.empty((min(n_steps, max(w.shape[0], HISTORY_STEPS)) + 1, 4))
    _restart_history(history, 0)
    return last, history


@scalar
def _rescale(w, scale):
    for j in range(w.shape[0]):
        w[j] = w[j] * scale


#: A shuffled order visits CSR rows at random: two stages of software prefetch hide the
#: misses. ``CSR_POINTERS_AHEAD`` positions ahead, the row's ``indptr`` entries (and its
#: target) are requested; ``CSR_ROWS_AHEAD`` positions ahead, with its ``indptr`` entries in
#: cache by then, its values and column indices. Measured on 200,000 × 100,000 with 50
#: non-zeros per row: shuffled SGD epochs ~1.4x faster; in file order the hardware
#: prefetcher already streams the rows; the weights' own misses gained nothing.
CSR_ROWS_AHEAD = 8
CSR_POINTERS_AHEAD = 16


@scalar
def _csr_row_at(data, indices, indptr, y, order, position, n):
    """The row at ``position`` of ``order`` (empty: file order), prefetching the rows ahead
    of it in a shuffled order."""
    if order.shape[0] == 0:
        return position
    _prefetch_csr_row(data, indices, indptr, y, order, position, n)
    return order[position]


@scalar
def _prefetch_csr_row(data, indices, indptr, y, order, u, n):
    """The two prefetch stages for position ``u`` of ``order``. A hint only: it changes no
    result."""
    if u + CSR_POINTERS_AHEAD < n:
        later = order[u + CSR_POINTERS_AHEAD]
        prefetch(indptr, later)
        prefetch(y, later)
    if u + CSR_ROWS_AHEAD < n:
        r = order[u + CSR_ROWS_AHEAD]
        lo = _index(indptr[r])
        hi = _index(indptr[r + 1])
        for p in range(lo, hi, 8):
            prefetch(data, p)
        for p in range(lo, hi, 16):
            prefetch(indices, p)
        if hi > lo:
            prefetch(data, hi - 1)
            prefetch(indices, hi - 1)


@kernel
def _sgd_epoch_csr_scaled(data, indices, indptr, y, sample_weight, order, spec, state, stop):
    """``sgd_epoch_csr`` over the first ``stop`` positions of the epoch, without a proximal
    L1 (the truncated L1 is scikit-learn's, on the row's features) and without averaging
    (before it starts): the true weights are ``scale·w``, so the decay of every weight is
    one multiplication of ``scale`` (scikit-learn's ``wscale``) and a step reads and writes
    only its row's weights, with no per-feature bookkeeping."""
    n = indptr.shape[0] - 1
    w, intercept, t = state.w, state.intercept, state.t
    weighted = sample_weight.shape[0] > 0
    truncated = spec.l1_method == L1_TRUNCATED and spec.l1 > 0.0
    loss_total = 0.0
    scale = 1.0
    for u in range(stop):
        i = _csr_row_at(data, indices, indptr, y, order, u, n)
        eta = step_size(spec, t)
        decay = decay_factor(eta, spec.l2)
        lo = _index(indptr[i])
        hi = _index(indptr[i + 1])
        acc = data.dtype.type(0.0)
        for p in range(lo, hi):
            acc += data[p] * w[_index(indices[p])]
        prediction = scale * acc + intercept
        if not is_finite(prediction):
            _rescale(w, scale)
            return intercept, loss_total + prediction, t, u
        value, deriv = loss_and_derivative(spec.loss, prediction, y[i], spec.epsilon)
        if weighted:
            value *= sample_weight[i]
            deriv *= sample_weight[i]
        loss_total += value
        scale *= decay
        if abs(scale) < SCALE_RENORMALISE_BELOW:
            _rescale(w, scale)  # O(d), rare: brings the stored weights to their true values
            scale = 1.0
        step = eta * deriv / scale
        for p in range(lo, hi):
            j = _index(indices[p])
            w[j] = w[j] - step * data[p]
        if spec.fit_intercept:
            intercept -= (eta * deriv) * spec.intercept_decay
        if truncated:
            _truncate_row(indices, lo, hi, w, state.l1_memory, eta * spec.l1, scale)
        t += 1.0
    _rescale(w, scale)
    return intercept, loss_total, t, -1


@scalar
def proximal_l1(spec):
    """The strength of the proximal L1 (the lazy path's soft threshold): ``spec.l1``, or 0
    under the truncated L1, which acts on the row's features only (:func:`_truncate_row`)."""
    return 0.0 if spec.l1_method == L1_TRUNCATED else spec.l1


@scalar
def _truncate_row(indices, lo, hi, w, l1_memory, threshold, scale):
    """The truncated L1 after a step on the CSR row ``indices[lo:hi]`` (``w`` holds the true
    weights divided by ``scale``): the running total grows by ``threshold = η·l1``, and the
    row's features, only they, are truncated (``scalar.truncate_weight``), as scikit-learn's
    ``l1penalty``. Returns nothing; ``w`` and ``l1_memory`` change in place."""
    l1_memory[w.shape[0]] += threshold
    for p in range(lo, hi):
        truncate_weight(w, _index(indices[p]), l1_memory, scale)


@scalar
def _truncate_row_averaged(indices, lo, hi, state, threshold, scalars):
    """:func:`_truncate_row` on the lazy path (plain weights), the running means of the
    row's features corrected to the truncated weights (they took the step's weights
    before it, with the share ``1/k``)."""
    w, avg_w = state.w, state.avg_w
    averaged, k = scalars[3], scalars[4]
    state.l1_memory[w.shape[0]] += threshold
    for p in range(lo, hi):
        j = _index(indices[p])
        before = float(w[j])
        truncate_weight(w, j, state.l1_memory, 1.0)
        if averaged:
            avg_w[j] += (float(w[j]) - before) / k


@kernel
def sgd_epoch_csr(data, indices, indptr, y, sample_weight, order, spec, state):
    """One epoch of per-sample SGD over the CSR rows in ``order`` (empty: file order), from
    the training ``state`` under ``spec`` (``records.State``, ``records.Spec``; plain
    SGD as below, an optimizer rule lazily: ``_sgd_epoch_csr_rule``).

    For each row: ``w ← prox(w·(1 − η·l2) − η·s·L'(x·w + b, y)·x)``, ``b ← b − η·s·L'``
    (if ``fit_intercept``), then, if ``t ≥ average_start``, with ``k = t − average_start +
    1``: ``avg_w += (w − avg_w)/k``, ``avg_b[0] += (b − avg_b[0])/k``; ``t ← t + 1``.
    ``state.avg_w``/``state.avg_b`` empty: no averaging. The penalty and the average of the
    features a row does not hold are applied lazily (see the module docstring): each step
    costs O(non-zeros of its row).

    Returns ``(intercept, Σ s·L over the epoch, t after the epoch, bad)``; ``bad`` is the
    position in ``order`` of the first row with a non-finite prediction, or -1.
    """
    n = indptr.shape[0] - 1
    w, intercept, t, avg_w, avg_b = state.w, state.intercept, state.t, state.avg_w, state.avg_b
    weighted = sample_weight.shape[0] > 0
    averaging = avg_b.shape[0] > 0
    l1 = proximal_l1(spec)
    truncated = spec.l1_method == L1_TRUNCATED and spec.l1 > 0.0
    loss_total = 0.0
    if n <= 0:
        return intercept, loss_total, t, -1
    if is_optimizer(spec.rule):
        rows = CsrRows(data, indices, indptr, y, sample_weight, order)
        if spec.rule == UPDATE_SAGA:
            return _sgd_epoch_csr_saga(rows, spec, state)
        return _sgd_epoch_csr_rule(rows, spec, state)
    # scikit-learn's scaled path until averaging starts (its iterate, to the last bit).
    start = _scaled_positions(spec, t, l1, averaging, n)
    if start > 0:
        intercept, loss_total, t, bad = _sgd_epoch_csr_scaled(
            data, indices, indptr, y, sample_weight, order, spec, state, start
        )
        if bad >= 0 or start == n:
            return intercept, loss_total, t, bad
    last, history = _start(w, n - start)
    marks = _start_lazy_marks(t, spec)
    u = 0
    for position in range(start, n):
        i = _csr_row_at(data, indices, indptr, y, order, position, n)
        scalars, u, marks = _begin_lazy_step(spec, t, u, averaging, marks, w, last, history, avg_w)
        lo = _index(indptr[i])
        hi = _index(indptr[i + 1])
        acc = _catch_up_features(indices, data, lo, hi, u, w, last, history, avg_w, l1, marks)
        prediction = acc + intercept
        if not is_finite(prediction):
            _catch_up_all(u, w, last, history, avg_w, l1, marks)
            return intercept, loss_total + prediction, t, position
        value, deriv = loss_and_derivative(spec.loss, prediction, y[i], spec.epsilon)
        s = sample_weight[i] if weighted else 1.0
        loss_total += value * s
        scale = scalars[0] * (deriv * s)  # η·s·L'
        _update_features(indices, data, lo, hi, False, scale, u, w, last, avg_w, scalars, l1)
        if truncated:
            _truncate_row_averaged(indices, lo, hi, state, scalars[0] * spec.l1, scalars)
        intercept, t, u = _end_lazy_step(
            spec, state, u, last, history, scalars, t, intercept, scale
        )
    _catch_up_all(u, w, last, history, avg_w, l1, marks)
    return intercept, loss_total, t, -1


@scalar
def _scaled_positions(spec, t, l1, averaging, n):
    """How many of the epoch's ``n`` steps, from counter ``t``, take the scaled path: all
    without a proximal L1 (``l1``) and averaging; with averaging, those before
    ``spec.average_start``; none with a proximal L1 (the lazy path's)."""
    if l1 > 0.0:
        return 0
    if not averaging:
        return n
    return int(min(float(n), max(0.0, math.ceil(spec.average_start - t))))


@scalar
def _csr_row_dot(data, indices, indptr, i, w):
    acc = data.dtype.type(0.0)
    for p in range(_index(indptr[i]), _index(indptr[i + 1])):
        acc += data[p] * w[_index(indices[p])]
    return acc


@parallel_kernel
def _batch_predictions_parallel(
    data, indices, indptr, order, start, stop, w, scale, intercept, out
):  # fmt: skip
    """``out[k - start] = scale·(x·w) + b`` for the rows at positions ``start..stop`` of ``order``,
    in chunks that depend on the batch size only (each row's sum is one thread's, in the
    serial loop's order: the result is bitwise the serial one)."""
    use_order = order.shape[0] > 0
    chunk = chunk_rows_for(stop - start)
    n_chunks = (stop - start + chunk - 1) // chunk
    for c in numba.prange(n_chunks):
        for k in range(start + c * chunk, min(start + (c + 1) * chunk, stop)):
            i = order[k] if use_order else k
            out[k - start] = scale * _csr_row_dot(data, indices, indptr, i, w) + intercept


@scalar
def _batch_predictions_serial(data, indices, indptr, order, start, stop, w, scale, intercept, out):
    use_order = order.shape[0] > 0
    for k in range(start, stop):
        i = order[k] if use_order else k
        out[k - start] = scale * _csr_row_dot(data, indices, indptr, i, w) + intercept


@scalar
def _batch_predictions(rows, start, stop, w, scale, intercept, out, parallel):
    """``out[k - start] = scale·(x·w) + b`` for the batch's rows; in parallel chunks only
    for a batch of more than one chunk (no thread launch for one)."""
    data, indices, indptr, _, _, order = rows
    if parallel and stop - start > MIN_CHUNK_ROWS:
        _batch_predictions_parallel(
            data, indices, indptr, order, start, stop, w, scale, intercept, out
        )
    else:
        _batch_predictions_serial(
            data, indices, indptr, order, start, stop, w, scale, intercept, out
        )


@scalar
def _list_batch(rows, start, stop, batch, seen, touched, grad):
    """List the columns the rows of batch number ``batch`` hold in ``touched`` (each once,
    ``seen[j]`` marking the batch that last listed it) and zero their ``grad``; returns
    how many."""
    _, indices, indptr, _, _, order = rows
    use_order = order.shape[0] > 0
    n_touched = 0
    for position in range(start, stop):
        i = order[position] if use_order else position
        # Spelled out here and in _batch_sums: through one shared inlined helper the
        # mini-batch CSR epochs ran 4.9x slower (scaled path) and 2.2x slower (lazy path):
        # each call of an inlined helper that takes arrays makes NRT reference-count calls
        # (see _catch_up_features).
        for p in range(_index(indptr[i]), _index(indptr[i + 1])):
            j = _index(indices[p])
            if seen[j] != batch:
                seen[j] = batch
                touched[n_touched] = j
                n_touched += 1
                grad[j] = 0.0
    return n_touched


@scalar
def _batch_sums(rows, start, stop, predictions, spec, grad, seen, touched, n_touched, u):
    """The batch's ``Σ s·L`` and ``Σ s·L'``, and ``grad = Σ s·L'·x`` on the columns it
    holds, listed in ``touched[n_touched:]`` (a column's first sight in step ``u`` zeroes
    its ``grad``). Returns ``(Σ s·L, Σ s·L', n_touched)``."""
    data, indices, indptr, y, sample_weight, order = rows
    weighted = sample_weight.shape[0] > 0
    use_order = order.shape[0] > 0
    batch_loss = 0.0
    deriv_sum = 0.0
    for position in range(start, stop):
        i = order[position] if use_order else position
        value, deriv = loss_and_derivative(
            spec.loss, predictions[position - start], y[i], spec.epsilon
        )
        if weighted:
            value *= sample_weight[i]
            deriv *= sample_weight[i]
        batch_loss += value
        deriv_sum += deriv
        coef = grad.dtype.type(deriv)
        for p in range(_index(indptr[i]), _index(indptr[i + 1])):
            j = _index(indices[p])
            if seen[j] != u:
                seen[j] = u
                touched[n_touched] = j
                n_touched += 1
                grad[j] = 0.0
            grad[j] += coef * data[p]
    return batch_loss, deriv_sum, n_touched


#: The scaled mini-batch path steps a batch of at most this many rows row by row
#: (``w[j] -= c_i·x_ij``, :func:`_scatter_step`): no list of the batch's columns and no
#: gradient vector. Measured on the 200,000 x 100,000 CSR of the module docstring (B=256, 1
#: thread, CPU): 39 -> 18 ms an epoch. Larger batches sum the gradient first
#: (:func:`_batch_sums`): row by row, a float32 weight would lose the contributions of a
#: full batch's rows that are small beside it. A size of the data, so the path taken never
#: depends on the number of threads.
SCATTER_MAX_ROWS = 4096


@kernel
def _batch_epoch_csr_scaled(rows, batch_size, spec, state, parallel):
    """``batch_epoch_csr`` without L1 and averaging: the true weights are ``scale·w``, as
    in ``_sgd_epoch_csr_scaled``."""
    n = rows.indptr.shape[0] - 1
    w, intercept, t = state.w, state.intercept, state.t
    loss_total = 0.0
    n_steps = (n + batch_size - 1) // batch_size
    summed = min(batch_size, n) > SCATTER_MAX_ROWS
    d = w.shape[0] if summed else 0
    grad = np.empty(d, dtype=w.dtype)
    seen = np.full(d, -1, dtype=np.int64)
    touched = np.empty(d, dtype=np.int64)
    predictions = np.empty(min(batch_size, n))
    scale = 1.0
    for u in range(n_steps):
        start = u * batch_size
        stop = min(start + batch_size, n)
        m = stop - start
        eta = step_size(spec, t)
        _batch_predictions(rows, start, stop, w, scale, intercept, predictions, parallel)
        scatter = m <= SCATTER_MAX_ROWS
        n_touched = 0
        if scatter:
            batch_loss, deriv_sum = _batch_derivatives(rows, start, stop, spec, predictions)
        else:
            batch_loss, deriv_sum, n_touched = _batch_sums(
                rows, start, stop, predictions, spec, grad, seen, touched, 0, u
            )
        loss_total += batch_loss
        if not is_finite(batch_loss):
            _rescale(w, scale)
            return intercept, loss_total, t, start
        scale *= decay_factor(eta, spec.l2)
        if abs(scale) < SCALE_RENORMALISE_BELOW:
            _rescale(w, scale)  # O(d), rare
            scale = 1.0
        step = eta / m / scale
        if scatter:
            _scatter_step(rows, start, stop, predictions, step, w)
        for q in range(n_touched):
            j = touched[q]
            w[j] = w[j] - step * grad[j]
        if spec.fit_intercept:
            intercept -= (eta * deriv_sum / m) * spec.intercept_decay
        t += 1.0
    _rescale(w, scale)
    return intercept, loss_total, t, -1


@scalar
def _batch_derivatives(rows, start, stop, spec, predictions):
    """The batch's ``Σ s·L`` and ``Σ s·L'``, each row's ``s·L'`` written over its
    prediction in ``predictions``. Returns ``(Σ s·L, Σ s·L')``."""
    _, _, _, y, sample_weight, order = rows
    weighted = sample_weight.shape[0] > 0
    use_order = order.shape[0] > 0
    batch_loss = 0.0
    deriv_sum = 0.0
    for position in range(start, stop):
        i = order[position] if use_order else position
        value, deriv = loss_and_derivative(
            spec.loss, predictions[position - start], y[i], spec.epsilon
        )
        if weighted:
            value *= sample_weight[i]
            deriv *= sample_weight[i]
        batch_loss += value
        deriv_sum += deriv
        predictions[position - start] = deriv
    return batch_loss, deriv_sum


@scalar
def _scatter_step(rows, start, stop, derivatives, step, w):
    """``w[j] -= step·s·L'·x_ij`` over the non-zeros of the batch's rows, row by row
    (``derivatives``: each row's ``s·L'``, from :func:`_batch_derivatives`)."""
    data, indices, indptr, _, _, order = rows
    use_order = order.shape[0] > 0
    for position in range(start, stop):
        i = order[position] if use_order else position
        coef = step * derivatives[position - start]
        for p in range(_index(indptr[i]), _index(indptr[i + 1])):
            j = _index(indices[p])
            w[j] = w[j] - coef * data[p]


@kernel
def batch_epoch_csr(data, indices, indptr, y, sample_weight, order, batch_size, spec, state,
                    parallel):  # fmt: skip
    """One epoch of mini-batch gradient descent on CSR rows (full batch: ``batch_size ≥ n``),
    from the training ``state`` under ``spec`` (plain SGD as below, an optimizer rule
    lazily: ``_batch_epoch_csr_rule``).

    Each batch of ``m`` rows takes one step from ``g = (1/m)·Σ s·L'(x·w + b, y)·x``, the
    predictions all made with the weights at the start of the batch, then averages as
    :func:`sgd_epoch_csr`. The gradient is accumulated only on the columns the batch holds
    (tracked in a list; no O(d) zeroing per step), and the other features are penalised and
    averaged lazily (one global scale without L1 and averaging): a step costs
    O(non-zeros of the batch).

    ``parallel=True`` computes the batch's predictions in parallel chunks (boundaries from
    the batch size only, as ``epochs.batch_epoch``); bringing features up to date, the loss
    sums and the gradient are accumulated serially in row order, so the result is bitwise
    that of ``parallel=False`` whatever the number of threads. It pays only for batches with
    many non-zeros.

    Returns ``(intercept, Σ s·L over the epoch, t after the epoch, bad)``; ``bad`` is the
    position in the epoch of the first batch with a non-finite loss, or -1.
    """
    rows = CsrRows(data, indices, indptr, y, sample_weight, order)
    if indptr.shape[0] <= 1:
        return state.intercept, 0.0, state.t, -1
    if spec.rule == UPDATE_SAGA:
        return _batch_epoch_csr_saga(rows, batch_size, spec, state, parallel)
    if is_optimizer(spec.rule):
        return _batch_epoch_csr_rule(rows, batch_size, spec, state, parallel)
    if spec.l1 == 0.0 and state.avg_b.shape[0] == 0:
        return _batch_epoch_csr_scaled(rows, batch_size, spec, state, parallel)
    return _batch_epoch_csr_lazy(rows, batch_size, spec, state, parallel)


@kernel
def _batch_epoch_csr_lazy(rows, batch_size, spec, state, parallel):
    """``batch_epoch_csr`` with L1 or averaging: the features a batch does not hold are
    penalised and averaged lazily, as in ``sgd_epoch_csr``."""
    n = rows.indptr.shape[0] - 1
    w, intercept, t, avg_w, avg_b = state.w, state.intercept, state.t, state.avg_w, state.avg_b
    averaging = avg_b.shape[0] > 0
    l1 = proximal_l1(spec)
    loss_total = 0.0
    n_steps = (n + batch_size - 1) // batch_size
    last, history = _start(w, n_steps)
    grad = np.empty(w.shape[0], dtype=w.dtype)
    seen = np.full(w.shape[0], -1, dtype=np.int64)  # the step that last listed the feature
    touched = np.empty(w.shape[0], dtype=np.int64)
    predictions = np.empty(min(batch_size, n))
    marks = _start_lazy_marks(t, spec)
    u = 0
    for batch in range(n_steps):
        start = batch * batch_size
        stop = min(start + batch_size, n)
        scalars, u, marks = _begin_lazy_step(spec, t, u, averaging, marks, w, last, history, avg_w)
        # Bring the batch's features up to date, listed and their gradient zeroed.
        n_touched = _list_batch(rows, start, stop, batch, seen, touched, grad)
        _catch_up_features(touched, _EVERY_FEATURE, 0, n_touched, u, w, last, history, avg_w, l1,
                           marks)  # fmt: skip
        _batch_predictions(rows, start, stop, w, 1.0, intercept, predictions, parallel)
        # Every column is listed already: this only accumulates.
        batch_loss, deriv_sum, n_touched = _batch_sums(
            rows, start, stop, predictions, spec, grad, seen, touched, n_touched, batch
        )
        loss_total += batch_loss
        if not is_finite(batch_loss):
            _catch_up_all(u, w, last, history, avg_w, l1, marks)
            return intercept, loss_total, t, start
        scale = scalars[0] / (stop - start)  # η/m
        _update_features(touched, grad, 0, n_touched, True, scale, u, w, last, avg_w, scalars, l1)
        intercept, t, u = _end_lazy_step(
            spec, state, u, last, history, scalars, t, intercept, scale * deriv_sum
        )
    _catch_up_all(u, w, last, history, avg_w, l1, marks)
    return intercept, loss_total, t, -1


# ---------------------------------------------------------------------------------------------
# The optimizer rules on CSR rows: their lazy variant (rules.lazy_optimizer_update), under
# which a weight moves only when its feature appears, so its running mean catches up in
# closed form: over K0 < k ≤ K averaged steps at a constant w, K·avg_K = K0·avg_K0 + (K − K0)·w.
# ---------------------------------------------------------------------------------------------


@scalar
def _lazy_average_start(state, t, spec):
    """Per feature, the number of averaged steps its ``avg_w`` is current at: all of those
    before this call, ``max(t − average_start, 0)``."""
    return np.full(state.avg_w.shape[0], max(t - spec.average_start, 0.0))


@scalar
def _lazy_average_catch_up(avg_w, w, current, j, k):
    """``avg_w[j]`` brought to ``k`` averaged steps, ``w[j]`` constant since ``current[j]``."""
    done = current[j]
    if k > done:
        avg_w[j] = (done * avg_w[j] + (k - done) * float(w[j])) / k
        current[j] = k


@scalar
def _lazy_average_before(state, columns, count, current, k):
    """Before a step numbered ``k`` (averaged): the step's features caught up to ``k − 1``."""
    if state.avg_w.shape[0] == 0 or k <= 1.0:
        return
    for q in range(count):
        _lazy_average_catch_up(state.avg_w, state.w, current, _index(columns[q]), k - 1.0)


@scalar
def _lazy_average_after(state, columns, count, current, k, intercept):
    """After a step numbered ``k ≥ 1``: its features' and the intercept's running means."""
    if state.avg_w.shape[0] == 0 or k < 1.0:
        return
    for q in range(count):
        j = _index(columns[q])
        state.avg_w[j] += (float(state.w[j]) - state.avg_w[j]) / k
        current[j] = k
    state.avg_b[0] += (intercept - state.avg_b[0]) / k


@scalar
def _lazy_average_finish(state, current, t, spec):
    """Every feature's running mean brought to the steps before counter ``t``."""
    k = t - spec.average_start
    for j in range(state.avg_w.shape[0]):
        _lazy_average_catch_up(state.avg_w, state.w, current, j, k)


@kernel
def _sgd_epoch_csr_rule(rows, spec, state):
    """``sgd_epoch_csr`` under an optimizer rule (lazy: see the section's comment)."""
    data, indices, indptr, y, sample_weight, order = rows
    n = indptr.shape[0] - 1
    intercept, t = state.intercept, state.t
    current = _lazy_average_start(state, t, spec)
    loss_total = 0.0
    for position in range(n):
        i = _csr_row_at(data, indices, indptr, y, order, position, n)
        eta = step_size(spec, t)
        lo = _index(indptr[i])
        count = _index(indptr[i + 1]) - lo
        prediction = _csr_row_dot(data, indices, indptr, i, state.w) + intercept
        if not is_finite(prediction):
            _lazy_average_finish(state, current, t, spec)
            return intercept, loss_total + prediction, t, position
        value, deriv = loss_and_derivative(spec.loss, prediction, y[i], spec.epsilon)
        if sample_weight.shape[0] > 0:
            value *= sample_weight[i]
            deriv *= sample_weight[i]
        loss_total += value
        k = t - spec.average_start + 1.0
        columns = indices[lo : lo + count]
        _lazy_average_before(state, columns, count, current, k)
        intercept = lazy_optimizer_update(
            spec, state, data[lo : lo + count], columns, count, False, deriv, 1.0, eta, t,
            intercept,
        )  # fmt: skip
        _lazy_average_after(state, columns, count, current, k, intercept)
        t += 1.0
    _lazy_average_finish(state, current, t, spec)
    return intercept, loss_total, t, -1


@kernel
def _batch_epoch_csr_rule(rows, batch_size, spec, state, parallel):
    """``batch_epoch_csr`` under an optimizer rule (lazy: see the section's comment)."""
    n = rows.indptr.shape[0] - 1
    intercept, t = state.intercept, state.t
    d = state.w.shape[0]
    grad = np.empty(d, dtype=state.w.dtype)
    seen = np.full(d, -1, dtype=np.int64)
    touched = np.empty(d, dtype=np.int64)
    predictions = np.empty(min(batch_size, n))
    current = _lazy_average_start(state, t, spec)
    loss_total = 0.0
    for u in range((n + batch_size - 1) // batch_size):
        start = u * batch_size
        stop = min(start + batch_size, n)
        eta = step_size(spec, t)
        _batch_predictions(rows, start, stop, state.w, 1.0, intercept, predictions, parallel)
        batch_loss, deriv_sum, count = _batch_sums(
            rows, start, stop, predictions, spec, grad, seen, touched, 0, u
        )
        loss_total += batch_loss
        if not is_finite(batch_loss):
            _lazy_average_finish(state, current, t, spec)
            return intercept, loss_total, t, start
        k = t - spec.average_start + 1.0
        _lazy_average_before(state, touched, count, current, k)
        m = stop - start
        intercept = lazy_optimizer_update(
            spec, state, grad, touched, count, True, 1.0 / m, deriv_sum, eta, t, intercept
        )
        _lazy_average_after(state, touched, count, current, k, intercept)
        t += 1.0
    _lazy_average_finish(state, current, t, spec)
    return intercept, loss_total, t, -1


@parallel_kernel
def predict_csr(data, indices, indptr, w, intercept, out):
    """``out[i] = x_i·w + intercept`` for the CSR rows, one pass over the non-zeros."""
    n = indptr.shape[0] - 1
    chunk = MIN_CHUNK_ROWS * 16
    n_chunks = (n + chunk - 1) // chunk
    for c in numba.prange(n_chunks):
        for i in range(c * chunk, min((c + 1) * chunk, n)):
            out[i] = _csr_row_dot(data, indices, indptr, i, w) + intercept


def _csr_square_norm(rows, i, n_bad):
    data, _, indptr = rows
    norm = 0.0
    for p in range(_index(indptr[i]), _index(indptr[i + 1])):
        norm, n_bad = add_square(norm, n_bad, data[p])
    return norm, n_bad


def _csr_bad_column(rows, i):
    data, indices, indptr = rows
    column = -1
    for p in range(indptr[i], indptr[i + 1]):
        if not is_finite(data[p]) and (column < 0 or indices[p] < column):
            column = indices[p]
    return int(column)


#: ``(data, indices, indptr)``: the rows of :func:`scan_csr`.
register_row_format(types.BaseTuple, _csr_square_norm, _csr_bad_column)


@parallel_kernel
def scan_csr(data, indices, indptr, n_rows, sample_weight, extra):
    """One parallel pass over the stored values of a CSR matrix: returns
    ``(row, column, norm)``, where ``(row, column)`` is the first NaN or ±inf in row-major
    order (the smallest such column of the first row holding one, as ``epochs.scan_rows``
    finds on the dense matrix; ``(-1, -1)`` if none) and ``norm`` is
    ``max_i s_i·(‖x_i‖² + extra)`` (``inf`` when a value is not finite; 0 for no rows)."""
    return scan_chunks((data, indices, indptr), n_rows, sample_weight, extra)


@kernel
def accumulate_gradient_csr(data, indices, indptr, y, sample_weight, spec, state, grad):
    """Add ``Σ s·L'(x·w + b, y)·x`` over the CSR rows (at ``state.w``, ``state.intercept``)
    to ``grad`` (float64, shape (d,)) and return ``(Σ s·L, Σ s·L')``: the CSR counterpart of
    ``epochs.accumulate_gradient``, for full batches of rows that arrive in blocks
    (``fastgd.sources.BlockSource``), summed block by block before one ``take_step``. One
    serial pass in row order over the non-zeros (O(nnz), never O(d) a row), so the sums are
    those ``batch_epoch_csr`` makes of the same rows, whatever the number of threads."""
    n = indptr.shape[0] - 1
    weighted = sample_weight.shape[0] > 0
    w, intercept = state.w, state.intercept
    loss_total = 0.0
    deriv_total = 0.0
    for i in range(n):
        prediction = 1.0 * _csr_row_dot(data, indices, indptr, i, w) + intercept
        value, deriv = loss_and_derivative(spec.loss, prediction, y[i], spec.epsilon)
        if weighted:
            value *= sample_weight[i]
            deriv *= sample_weight[i]
        loss_total += value
        deriv_total += deriv
        for p in range(_index(indptr[i]), _index(indptr[i + 1])):
            grad[_index(indices[p])] += deriv * data[p]
    return loss_total, deriv_total


# ---------------------------------------------------------------------------------------------
# SAGA on CSR rows: just-in-time updates (Schmidt et al., 2017; scikit-learn's sag_fast).
#
# Dense SAGA moves every weight at every step: a coordinate j that no row of the step holds
# takes w ← prox_{η·l1}(w·a − η·ḡ_j), a = 1 − η·l2, with ḡ_j (slots[0, j], the mean of the
# stored gradients) constant until a step holds j again. These kernels apply those skipped
# steps only when j is read (its row's prediction), written (its step) or at the end of the
# call, in closed form, so the result is dense SAGA's (the same steps, in the same order) at
# O(non-zeros) a step.
#
# The per-step history (float64, rows relative to the last restart ``base``): P_s = Π a_r,
# E_s = Σ η_r/P_r (r ≤ s), and over the averaged steps only R_s = Σ P_r, T_s = Σ P_r·E_r;
# plus η_s and whether step s is averaged. Without L1, the steps after state r up to state s
# are the affine map w ← a·w − η·G (G = ḡ_j), whose closed form is
#
#     w_s = P_s·(w_r/P_r − G·(E_s − E_r)),
#     Σ_{q ∈ (r, s], averaged} w_q = (w_r/P_r + G·E_r)·(R_s − R_r) − G·(T_s − T_r).
#
# With L1 the map is prox(a·w − η·ḡ): affine with G = ḡ + l1 while w stays positive, with
# G = ḡ − l1 while it stays negative, and 0 at 0 (forever if |ḡ| ≤ l1). Each affine map moves
# w monotonically towards its fixed point −G/l2 (0 < a ≤ 1), so a skipped stretch is at most
# three pieces: the sign it starts with, possibly 0, then the sign of −ḡ for good. The step
# where a piece ends is found by binary search on the increasing E, and that one step is
# taken exactly (its prox), so the catch-up is exact, O(log steps) a feature. A step with
# a < RENORMALISE_BELOW (η·l2 ≥ 1, where the monotony fails) is applied densely, O(d).
# The history restarts (every feature brought up to date, O(d)) when it is full, when |P|
# would fall below RENORMALISE_BELOW, or, when averaging, when R outgrows P (as
# AVERAGE_GROWTH says above).
#
# Measured (100,000 x 50,000 CSR, 50 non-zeros a row, log loss, one SGD epoch, 2 shared
# cores under load ~8, so ±50%): 0.62-0.70 s with L2, 0.62-0.83 s with elastic net (lazy
# Adam: 0.08/0.23 s; plain SGD: 0.02/0.52 s; scikit-learn's LogisticRegression(solver=
# "saga"): ~0.35 s an epoch with L2, ~33 s with elastic net, whose catch-up loops over the
# skipped steps). Almost all of it is the catch-up (0.06 s without it): ~120 ns a non-zero.
# ---------------------------------------------------------------------------------------------

# Columns of SAGA's per-step history.
_SAGA_P, _SAGA_E, _SAGA_R, _SAGA_T, _SAGA_ETA, _SAGA_AVERAGED, _SAGA_INVERSE_P = range(7)
_SAGA_COLUMNS = 7


@scalar
def _saga_restart_row(history, r):
    for c in range(_SAGA_COLUMNS):
        history[r, c] = 0.0
    history[r, _SAGA_P] = 1.0
    history[r, _SAGA_INVERSE_P] = 1.0


@scalar
def _saga_start(state, n_steps):
    """Per-feature markers (the state each feature is current at, counted in steps since
    the call began) and the history (at most ``max(d, HISTORY_STEPS)`` steps)."""
    d = state.w.shape[0]
    last = np.zeros(d, dtype=np.int64)
    history = np.empty((min(n_steps, max(d, HISTORY_STEPS)) + 1, _SAGA_COLUMNS))
    _saga_restart_row(history, 0)
    return last, history


@scalar
def _saga_piece(history, r, s, x, g, averaging):
    """From ``x`` at history row ``r``, the steps to row ``s`` of the affine map
    ``w ← a·w − η·g``: returns ``(w_s, Σ of w over the averaged rows in (r, s])`` (the sum
    0 when not ``averaging``)."""
    e_r = history[r, _SAGA_E]
    m = x * history[r, _SAGA_INVERSE_P]
    x_s = history[s, _SAGA_P] * (m - g * (history[s, _SAGA_E] - e_r))
    total = 0.0
    if averaging:
        total = (m + g * e_r) * (history[s, _SAGA_R] - history[r, _SAGA_R]) - g * (
            history[s, _SAGA_T] - history[r, _SAGA_T]
        )
    return x_s, total


@scalar
def _saga_pieces_l1(history, r, rv, x, mean, l1, l2, averaging):
    """The skipped steps from row ``r`` to row ``rv`` under L1 (see the section's comment):
    returns ``(w_rv, Σ of w over the averaged rows in (r, rv])``."""
    total = 0.0
    while r < rv:
        if x == 0.0:
            if abs(mean) <= l1:
                break  # prox keeps it at 0 for good
            g = mean + l1 if mean < 0.0 else mean - l1
            x, part = _saga_piece(history, r, rv, x, g, averaging)
            return x, total + part
        g = mean + l1 if x > 0.0 else mean - l1
        # The piece ends at the first row s where w_r/P_r − g·(E_s − E_r) reaches 0.
        toward = g if x > 0.0 else -g
        size = abs(x * history[r, _SAGA_INVERSE_P])
        e_r = history[r, _SAGA_E]
        if toward <= 0.0 or toward * (history[rv, _SAGA_E] - e_r) < size:
            x, part = _saga_piece(history, r, rv, x, g, averaging)
            return x, total + part
        lo = r + 1
        hi = rv
        while lo < hi:
            mid = (lo + hi) // 2
            if toward * (history[mid, _SAGA_E] - e_r) >= size:
                hi = mid
            else:
                lo = mid + 1
        if lo > r + 1:
            x, part = _saga_piece(history, r, lo - 1, x, g, averaging)
            total += part
        # The step that leaves the piece, exactly as the dense rule takes it.
        eta = history[lo, _SAGA_ETA]
        x = soft_threshold(x - eta * (l2 * x + mean), eta * l1)
        if history[lo, _SAGA_AVERAGED] > 0.0:
            total += x
        r = lo
    return x, total


@scalar
def _saga_weight(s, marks, spec):
    """The weight ``k`` of the running mean at state ``s`` (``k·avg`` is the sum of the
    averaged weights): ``t(s) − average_start`` for an averaged state, ``t(s)`` the counter
    after it; before the first averaged step, the weight the dense rule's first averaged
    step gives the old mean (``marks[1]``, in ``[0, 1)``)."""
    t_after = marks[0] + s
    if t_after - 1.0 >= spec.average_start:
        return t_after - spec.average_start
    return marks[1]


@scalar
def _saga_catch_up(j, v, w, slots, avg_w, last, history, base, spec, marks):
    """Bring feature ``j`` to state ``v``: its weight and running mean. (The arrays come
    one by one, not in a record or tuple: taking them out of one per non-zero cost an
    atomic reference count each, and made the epoch ~5x slower.)"""
    u = last[j]
    if u == v:
        return
    r = u - base
    rv = v - base
    x = float(w[j])
    mean = slots[0, j]
    averaging = avg_w.shape[0] > 0
    if spec.l1 > 0.0:
        x, total = _saga_pieces_l1(history, r, rv, x, mean, spec.l1, spec.l2, averaging)
    else:
        x, total = _saga_piece(history, r, rv, x, mean, averaging)
    w[j] = x
    if averaging and history[rv, _SAGA_AVERAGED] > 0.0:
        avg_w[j] = (_saga_weight(u, marks, spec) * avg_w[j] + total) / _saga_weight(v, marks, spec)
    last[j] = v


@scalar
def _saga_catch_up_all(v, w, slots, avg_w, last, history, base, spec, marks):
    for j in range(w.shape[0]):
        _saga_catch_up(j, v, w, slots, avg_w, last, history, base, spec, marks)


@scalar
def _saga_marks(state, spec):
    """``(t at the call's start, the mean's weight before its first averaged step)``."""
    t0 = state.t
    first = t0
    if t0 < spec.average_start:
        first = t0 + np.ceil(spec.average_start - t0)
    return t0, first - spec.average_start


@scalar
def _saga_before_step(u, eta, averaged, since, base, w, slots, avg_w, last, history, spec, marks):
    """Before the step from state ``u``: restart the history if the step is dense
    (``a < RENORMALISE_BELOW``), if it is full, if ``|P·a|`` would be tiny, or if R outgrew
    P. Returns ``(base, since, dense)``: the state of the history's row 0, ``since`` counts
    the averaged steps since the restart, ``dense`` says the step must move every feature."""
    decay = 1.0 - eta * spec.l2
    dense = decay < RENORMALISE_BELOW
    r = u - base
    product = history[r, _SAGA_P]
    if (
        dense
        or r + 1 >= history.shape[0]
        or abs(product * decay) < RENORMALISE_BELOW
        or abs(history[r, _SAGA_R]) > AVERAGE_GROWTH * abs(product) * (since + 1)
    ):
        _saga_catch_up_all(u, w, slots, avg_w, last, history, base, spec, marks)
        _saga_restart_row(history, 0)
        base = u
        since = 0
    if averaged:
        since += 1
    return base, since, dense


@scalar
def _saga_after_step(u, eta, averaged, dense, base, history, spec):
    """Record state ``u + 1``: the history's next row, or, after a dense step (every
    feature moved by :func:`_saga_step_rest`), a restart there. Returns the new base."""
    r = u - base
    if dense:
        _saga_restart_row(history, 0)
        return u + 1
    product = history[r, _SAGA_P] * (1.0 - eta * spec.l2)
    e = history[r, _SAGA_E] + eta / product
    history[r + 1, _SAGA_P] = product
    history[r + 1, _SAGA_INVERSE_P] = 1.0 / product
    history[r + 1, _SAGA_E] = e
    history[r + 1, _SAGA_ETA] = eta
    history[r + 1, _SAGA_R] = history[r, _SAGA_R]
    history[r + 1, _SAGA_T] = history[r, _SAGA_T]
    history[r + 1, _SAGA_AVERAGED] = 0.0
    if averaged:
        history[r + 1, _SAGA_R] += product
        history[r + 1, _SAGA_T] += product * e
        history[r + 1, _SAGA_AVERAGED] = 1.0
    return base


@scalar
def _saga_step_feature(j, u, raw, coef, share, eta, k, w, slots, avg_w, last, spec):
    """The dense rule's step on feature ``j`` (current at state ``u``) with data gradient
    ``coef·raw``: ``w_j ← prox(w_j − η·(coef·raw + l2·w_j + ḡ_j))``, ``ḡ_j += share·raw``
    (``rules.saga_direction``); then its running mean (``k`` > 0: the step is averaged)."""
    weight = float(w[j])
    g = coef * raw + spec.l2 * weight
    value = weight - eta * saga_direction(slots, j, g, raw, share)
    if spec.l1 > 0.0:
        value = soft_threshold(value, eta * spec.l1)
    w[j] = value
    last[j] = u + 1
    if k > 0.0:
        mean = float(avg_w[j])
        avg_w[j] = mean + (float(w[j]) - mean) / k


@scalar
def _saga_step_rest(u, eta, k, w, slots, avg_w, last, spec):
    """A dense step: every feature the step's rows leave out (still at state ``u``) takes
    its skipped step now."""
    for j in range(w.shape[0]):
        if last[j] == u:
            _saga_step_feature(j, u, 0.0, 0.0, 0.0, eta, k, w, slots, avg_w, last, spec)


@scalar
def _saga_intercept(intercept, coef, raw, share, eta, k, state, spec):
    """The intercept's step (slot column d, no penalty) and its running mean."""
    if spec.fit_intercept:
        d = state.w.shape[0]
        intercept -= (
            eta * saga_direction(state.slots, d, coef * raw, raw, share)
        ) * spec.intercept_decay
    if k > 0.0:
        state.avg_b[0] += (intercept - state.avg_b[0]) / k
    return intercept


@scalar
def _saga_step_k(state, spec, t):
    """The running mean's ``k`` of the step at counter ``t``, 0 when it is not averaged."""
    if state.avg_w.shape[0] > 0 and t >= spec.average_start:
        return t - spec.average_start + 1.0
    return 0.0


@kernel
def _sgd_epoch_csr_saga(rows, spec, state):
    """``sgd_epoch_csr`` under SAGA, just in time (see the section's comment): the result
    is the dense rule's (``epochs.sgd_epoch``) on the same rows."""
    data, indices, indptr, y, sample_weight, order = rows
    n = indptr.shape[0] - 1
    intercept, t = state.intercept, state.t
    memory, w, slots, avg_w = state.row_memory, state.w, state.slots, state.avg_w
    last, history = _saga_start(state, n)
    base = 0
    marks = _saga_marks(state, spec)
    since = 0
    loss_total = 0.0
    for u in range(n):
        i = _csr_row_at(data, indices, indptr, y, order, u, n)
        eta = step_size(spec, t)
        k = _saga_step_k(state, spec, t)
        base, since, dense = _saga_before_step(
            u, eta, k > 0.0, since, base, w, slots, avg_w, last, history, spec, marks
        )
        lo = _index(indptr[i])
        hi = _index(indptr[i + 1])
        acc = data.dtype.type(0.0)
        for p in range(lo, hi):
            j = _index(indices[p])
            _saga_catch_up(j, u, w, slots, avg_w, last, history, base, spec, marks)
            acc += data[p] * w[j]
        prediction = acc + intercept
        if not is_finite(prediction):
            _saga_catch_up_all(u, w, slots, avg_w, last, history, base, spec, marks)
            return intercept, loss_total + prediction, t, u
        value, deriv = loss_and_derivative(spec.loss, prediction, y[i], spec.epsilon)
        if sample_weight.shape[0] > 0:
            value *= sample_weight[i]
            deriv *= sample_weight[i]
        loss_total += value
        coef = row_derivative(spec, memory, i, deriv)
        share = coef * 1 / memory.shape[0]
        for p in range(lo, hi):
            raw = float(data[p])
            j = _index(indices[p])
            _saga_step_feature(j, u, raw, coef, share, eta, k, w, slots, avg_w, last, spec)
        if dense:
            _saga_step_rest(u, eta, k, w, slots, avg_w, last, spec)
        intercept = _saga_intercept(intercept, coef, 1.0, share, eta, k, state, spec)
        base = _saga_after_step(u, eta, k > 0.0, dense, base, history, spec)
        t += 1.0
    _saga_catch_up_all(n, w, slots, avg_w, last, history, base, spec, marks)
    return intercept, loss_total, t, -1


@scalar
def _saga_batch_sums(rows, start, stop, predictions, spec, grad, memory):
    """``_batch_sums`` under SAGA (the batch's columns already listed, their ``grad``
    zeroed): each row's coefficient is the change of its derivative
    (``rules.row_derivative``, which stores it). Returns ``(Σ s·L, Σ change)``."""
    data, indices, indptr, y, sample_weight, order = rows
    weighted = sample_weight.shape[0] > 0
    use_order = order.shape[0] > 0
    batch_loss = 0.0
    change_sum = 0.0
    for position in range(start, stop):
        i = order[position] if use_order else position
        value, deriv = loss_and_derivative(
            spec.loss, predictions[position - start], y[i], spec.epsilon
        )
        if weighted:
            value *= sample_weight[i]
            deriv *= sample_weight[i]
        batch_loss += value
        change = row_derivative(spec, memory, i, deriv)
        change_sum += change
        coef = grad.dtype.type(change)
        for p in range(_index(indptr[i]), _index(indptr[i + 1])):
            grad[_index(indices[p])] += coef * data[p]
    return batch_loss, change_sum


@kernel
def _batch_epoch_csr_saga(rows, batch_size, spec, state, parallel):
    """``batch_epoch_csr`` under SAGA, just in time (see the section's comment): the result
    is the dense rule's (``epochs.batch_epoch``) on the same rows."""
    n = rows.indptr.shape[0] - 1
    intercept, t = state.intercept, state.t
    memory, w, slots, avg_w = state.row_memory, state.w, state.slots, state.avg_w
    d = w.shape[0]
    grad = np.empty(d, dtype=state.w.dtype)
    seen = np.full(d, -1, dtype=np.int64)
    touched = np.empty(d, dtype=np.int64)
    predictions = np.empty(min(batch_size, n))
    n_steps = (n + batch_size - 1) // batch_size
    last, history = _saga_start(state, n_steps)
    base = 0
    marks = _saga_marks(state, spec)
    since = 0
    loss_total = 0.0
    for u in range(n_steps):
        start = u * batch_size
        stop = min(start + batch_size, n)
        m = stop - start
        eta = step_size(spec, t)
        k = _saga_step_k(state, spec, t)
        base, since, dense = _saga_before_step(
            u, eta, k > 0.0, since, base, w, slots, avg_w, last, history, spec, marks
        )
        count = _list_batch(rows, start, stop, u, seen, touched, grad)
        for q in range(count):
            _saga_catch_up(touched[q], u, w, slots, avg_w, last, history, base, spec, marks)
        _batch_predictions(rows, start, stop, w, 1.0, intercept, predictions, parallel)
        batch_loss, change_sum = _saga_batch_sums(
            rows, start, stop, predictions, spec, grad, memory
        )
        loss_total += batch_loss
        if not is_finite(batch_loss):
            _saga_catch_up_all(u, w, slots, avg_w, last, history, base, spec, marks)
            return intercept, loss_total, t, start
        coef = 1.0 / m
        share = coef * m / memory.shape[0]
        for q in range(count):
            j = touched[q]
            raw = float(grad[j])
            _saga_step_feature(j, u, raw, coef, share, eta, k, w, slots, avg_w, last, spec)
        if dense:
            _saga_step_rest(u, eta, k, w, slots, avg_w, last, spec)
        intercept = _saga_intercept(intercept, coef, change_sum, share, eta, k, state, spec)
        base = _saga_after_step(u, eta, k > 0.0, dense, base, history, spec)
        t += 1.0
    _saga_catch_up_all(n_steps, w, slots, avg_w, last, history, base, spec, marks)
    return intercept, loss_total, t, -1
