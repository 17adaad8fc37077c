"""Update rules: how a step turns the data gradient into new weights.

One row per rule in ``fastgd.options.UPDATE_RULES`` (its code, its state slots); here, its
maths, dispatched by code like the losses; its twin is ``fastgd.reference.apply_update``.
A rule has two parts, both inlined into the loops:

- :func:`data_step`: the size of the data term's step for a row (``η`` for plain SGD; the
  passive-aggressive rules size it by the row's own loss and norm);
- :func:`apply_update`: the new weights from ``w``, the gradient direction and that size
  (and the rule's per-feature ``slots``, shape ``(UpdateRule.slots, d)``: empty for the
  rules below; a momentum rule would keep its velocity in ``slots[0]``).

The intercept's step is ``b ← b − step·g_b`` under every rule so far.
"""

from __future__ import annotations

from ..options import UPDATE_PA1, UPDATE_PA2
from ._config import scalar
from .scalar import soft_threshold


@scalar
def passive_aggressive_step(rule, loss_value, squared_norm, eta0):
    """The data step of a passive-aggressive rule for a row with loss ``loss_value`` (before
    sample weights) and ``‖x‖² = squared_norm``: PA-I ``min(eta0, L/‖x‖²)`` (0 for a zero
    row), PA-II ``L/(‖x‖² + 1/(2·eta0))``."""
    if rule == UPDATE_PA1:
        if squared_norm <= 0.0:
            return 0.0
        return min(eta0, loss_value / squared_norm)
    return loss_value / (squared_norm + 0.5 / eta0)


@scalar
def sizes_step_by_row(rule):
    """Whether the rule's data step depends on the row (the passive-aggressive rules):
    then :func:`data_step` reads the row, and a step is not the plain linear one."""
    return rule == UPDATE_PA1 or rule == UPDATE_PA2


@scalar
def data_step(spec, eta, loss_value, X, i):
    """The size of the data term's step for row ``i`` of ``X`` (loss ``loss_value`` before
    sample weights) at the schedule's step ``eta``."""
    if sizes_step_by_row(spec.rule):
        squared_norm = 0.0
        for j in range(X.shape[1]):
            squared_norm += X[i, j] * X[i, j]
        return passive_aggressive_step(spec.rule, loss_value, squared_norm, spec.eta0)
    return eta


@scalar
def penalized_update(w, grad, scale, eta, l1, l2):
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
def apply_update(spec, w, grad, scale, eta, slots):
    """The step of the update rule ``spec.rule`` on the weights ``w`` (in place), from the
    data gradient ``scale·grad`` (``scale`` = the data step times the loss derivative or
    the batch's 1/m) and the schedule's ``eta`` (the penalty's decay).

    Plain SGD and the passive-aggressive rules (which differ in the data step only):
    ``w ← prox_{η·l1}(w·(1 − η·l2) − scale·grad)``. ``slots`` is unused by them.
    """
    penalized_update(w, grad, scale, eta, spec.l1, spec.l2)
