"""The kernels' inputs as records: a spec (what to compute) and a training state (where).

Epoch kernels take the rows as arrays and everything else in two records, so that no kernel
has more than a dozen parameters and adding an option touches one record:

- :class:`Spec`: the integer codes of the loss, schedule and update rule (from
  :mod:`fastgd.options`) and the scalars they read;
- :class:`State`: the weights ``w`` (updated in place), the intercept and step counter at
  the start of the call (the kernels return the new ones), the running means of averaged
  SGD, and the update rule's per-feature slots (a momentum buffer, Adam's moments).

Both are ``NamedTuple``\\ s: Numba passes them as typed tuples, compiles one specialisation
per field types and caches it like any other signature. Every field's type is fixed by
:func:`make_spec` / :func:`make_state` (``int``, ``float``, ``bool``, arrays of a fixed
dtype): a field given as ``np.float32`` or ``np.int32`` would otherwise compile, and cache,
another specialisation. Build records only through these two functions.

Inside the kernels, :class:`Rows` and :class:`CsrRows` group the row arrays for the inlined
helpers.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..options import L1_PROXIMAL, L1_TRUNCATED, OPTIMIZER_DEFAULTS, UpdateRule

__all__ = [
    "CsrRows",
    "Rows",
    "Spec",
    "State",
    "l1_memory_for",
    "make_spec",
    "make_state",
    "rule_arrays",
]


class Spec(NamedTuple):
    """What a kernel computes: the loss, the schedule, the update rule, the penalty.

    ``eta0`` is the schedule's base step (the engine passes the step of the epoch for
    the epoch-level schedules); ``l1``, ``l2`` the strengths of ``l1·‖w‖₁ + l2·½‖w‖²``;
    ``average_start`` the first step averaged (0: no averaging). The next six are the
    optimizer rules' parameters (``fastgd.options.OPTIMIZER_DEFAULTS``; each rule reads
    those its ``UpdateRule.parameters`` names). ``intercept_decay`` multiplies the
    intercept's step (scikit-learn's ``SPARSE_INTERCEPT_DECAY``, 0.01, on sparse data; 1:
    none); ``l1_method`` is how L1 acts (``fastgd.options.L1_METHODS``: the proximal step,
    or the cumulative truncated gradient, whose running state is ``State.l1_memory``).
    """

    loss: int
    epsilon: float
    schedule: int
    rule: int
    eta0: float
    power_t: float
    alpha: float
    optimal_init: float
    l1: float
    l2: float
    fit_intercept: bool
    average_start: float
    momentum: float
    nesterov: bool
    beta_1: float
    beta_2: float
    rho: float
    optimizer_epsilon: float
    intercept_decay: float
    l1_method: int


class State(NamedTuple):
    """The training state a kernel starts from.

    ``w`` (shape (d,), the dtype of X) and the float64 arrays ``avg_w`` (shape (d,), or
    empty: no averaging), ``avg_b`` (shape (1,), or empty), ``slots`` (shape
    ``(UpdateRule.slots, d + 1)``: the update rule's per-coordinate state, the last column
    the intercept's) and ``row_memory`` (SAGA's stored derivative of each row of the data
    set, shape (n,); empty for the other rules) are updated in place, and so is the float64
    ``l1_memory`` of the truncated L1 (``Spec.l1_method``): shape (d + 1,), ``q_j`` (the L1
    penalty weight ``j`` has received, signed) then ``u`` (the total each weight is due),
    or empty (:func:`l1_memory_for`); ``intercept`` and ``t`` are the values at the start,
    the kernels return the new ones.
    """

    w: np.ndarray
    intercept: float
    t: float
    avg_w: np.ndarray
    avg_b: np.ndarray
    slots: np.ndarray
    row_memory: np.ndarray
    l1_memory: np.ndarray


class Rows(NamedTuple):
    """Dense rows: ``X`` (n, d), targets, multipliers (empty: all 1), order (empty: file)."""

    X: np.ndarray
    y: np.ndarray
    sample_weight: np.ndarray
    order: np.ndarray


class CsrRows(NamedTuple):
    """CSR rows: the three arrays of the matrix, then as :class:`Rows`."""

    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    y: np.ndarray
    sample_weight: np.ndarray
    order: np.ndarray


def make_spec(
    *,
    loss: int,
    epsilon: float,
    schedule: int,
    rule: int,
    eta0: float,
    power_t: float,
    alpha: float,
    optimal_init: float,
    l1: float,
    l2: float,
    fit_intercept: bool,
    average_start: float = 0.0,
    momentum: float = OPTIMIZER_DEFAULTS["momentum"],
    nesterov: bool = OPTIMIZER_DEFAULTS["nesterov"],
    beta_1: float = OPTIMIZER_DEFAULTS["beta_1"],
    beta_2: float = OPTIMIZER_DEFAULTS["beta_2"],
    rho: float = OPTIMIZER_DEFAULTS["rho"],
    optimizer_epsilon: float = OPTIMIZER_DEFAULTS["optimizer_epsilon"],
    intercept_decay: float = 1.0,
    l1_method: int = L1_PROXIMAL,
) -> Spec:
    """A :class:`Spec` with every field in its one type (one compiled specialisation)."""
    return Spec(
        int(loss), float(epsilon), int(schedule), int(rule), float(eta0), float(power_t),
        float(alpha), float(optimal_init), float(l1), float(l2), bool(fit_intercept),
        float(average_start), float(momentum), bool(nesterov), float(beta_1), float(beta_2),
        float(rho), float(optimizer_epsilon), float(intercept_decay), int(l1_method),
    )  # fmt: skip


_NO_AVERAGE = np.empty(0)


def make_state(w, intercept, t, avg_w=None, avg_b=None, slots=None, row_memory=None,
               l1_memory=None) -> State:  # fmt: skip
    """A :class:`State` over the weights ``w`` (used in place, not copied); ``avg_w`` and
    ``avg_b`` ``None`` or empty: no averaging; ``slots`` and ``row_memory`` ``None``: a rule
    without them (see :func:`rule_arrays`); ``l1_memory`` ``None``: no truncated L1 (see
    :func:`l1_memory_for`)."""
    if slots is None:
        slots = np.empty((0, w.shape[0]))
    return State(
        w,
        float(intercept),
        float(t),
        _NO_AVERAGE if avg_w is None else avg_w,
        _NO_AVERAGE if avg_b is None else avg_b,
        slots,
        _NO_AVERAGE if row_memory is None else row_memory,
        _NO_AVERAGE if l1_memory is None else l1_memory,
    )


def rule_arrays(rule: UpdateRule, n_features: int, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The zero state of the update rule ``rule`` (a row of ``fastgd.options.UPDATE_RULES``)
    for :func:`make_state`: ``slots`` (float64, shape ``(rule.slots, n_features + 1)``) and
    ``row_memory`` (float64, shape ``(n_rows,)`` for a rule with ``row_memory``, else
    empty). The one place that sizes them."""
    slots = np.zeros((rule.slots, n_features + 1))
    return slots, np.zeros(n_rows if rule.row_memory else 0)


def l1_memory_for(l1_method: int, n_features: int) -> np.ndarray:
    """The zero state of the truncated L1 (``State.l1_memory``: float64, shape
    ``(n_features + 1,)``) under ``l1_method == L1_TRUNCATED``, else empty. The one place
    that sizes it."""
    return np.zeros(n_features + 1 if l1_method == L1_TRUNCATED else 0)
