"""Update rules: how a step turns the data gradient into new weights.

One row per rule in ``fastgd.options.UPDATE_RULES`` (its code, its state slots); here, its
maths, dispatched by code like the losses; its twin is in ``fastgd.reference``
(``apply_update``, ``optimizer_step``). A rule has up to three parts, all inlined into the
loops:

- :func:`data_step`: the size of the data term's step for a row (``η`` for every rule but
  the passive-aggressive ones, which size it by the row's own loss and norm);
- :func:`row_derivative`: the coefficient of a row in the step's gradient (its loss
  derivative ``d``; SAGA: ``d − α_i``, the change from its stored derivative, which it
  stores);
- :func:`apply_update`: the new weights and intercept from the gradient direction, its
  coefficient and the step size, and the rule's state (``State.slots``, shape
  ``(UpdateRule.slots, d + 1)``, the last column the intercept's).

Plain SGD and the passive-aggressive rules: ``w ← prox_{η·l1}(w·(1 − η·l2) − step·g)``,
``b ← b − step·g_b``. The optimizer rules (momentum, AdaGrad, RMSProp, Adam, AdamW, SAGA)
use torch.optim's equations: each has a ``*_direction`` function giving the direction of
coordinate ``j`` from its gradient ``g`` (L2 term included, except AdamW's decoupled decay)
and updating its slots; :func:`optimizer_update` runs it over the weights and the intercept.
"""

from __future__ import annotations

import math

from ..options import (
    L1_TRUNCATED,
    UPDATE_ADAGRAD,
    UPDATE_ADAM,
    UPDATE_ADAMW,
    UPDATE_MOMENTUM,
    UPDATE_PA1,
    UPDATE_PA2,
    UPDATE_RMSPROP,
    UPDATE_SAGA,
)
from ._config import scalar
from .scalar import decay_factor, soft_threshold, truncate_weight


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
def row_derivative(spec, row_memory, i, deriv):
    """The coefficient of row ``i`` in a step's gradient: its (weighted) loss derivative
    ``deriv``; under SAGA ``deriv − α_i``, storing ``α_i ← deriv``."""
    if spec.rule == UPDATE_SAGA:
        change = deriv - row_memory[i]
        row_memory[i] = deriv
        return change
    return deriv


@scalar
def penalized_update(w, grad, scale, eta, l1, l2):
    """``w ← prox_{η·l1‖·‖₁}(w·max(0, 1 − η·l2) − scale·grad)``."""
    dtype = w.dtype.type
    decay = dtype(decay_factor(eta, l2))
    step = dtype(scale)
    if l1 > 0.0:
        threshold = dtype(eta * l1)
        for j in range(w.shape[0]):
            w[j] = soft_threshold(w[j] * decay - step * grad[j], threshold)
    else:
        for j in range(w.shape[0]):
            w[j] = w[j] * decay - step * grad[j]


# ---------------------------------------------------------------------------------------------
# The optimizer rules: the direction of coordinate j from its gradient g (torch.optim's).
# ---------------------------------------------------------------------------------------------


@scalar
def momentum_direction(spec, slots, j, g):
    """Heavy ball (torch ``SGD``, dampening 0): ``v ← μ·v + g``; direction ``v``, or
    ``g + μ·v`` with ``nesterov``."""
    velocity = spec.momentum * slots[0, j] + g
    slots[0, j] = velocity
    if spec.nesterov:
        return g + spec.momentum * velocity
    return velocity


@scalar
def adagrad_direction(spec, slots, j, g):
    """AdaGrad (torch, ``lr_decay=0``, accumulator from 0): ``G ← G + g²``,
    direction ``g/(√G + ε)``."""
    total = slots[0, j] + g * g
    slots[0, j] = total
    return g / (math.sqrt(total) + spec.optimizer_epsilon)


@scalar
def rmsprop_direction(spec, slots, j, g):
    """RMSProp (torch, not centred, no momentum): ``v ← ρ·v + (1 − ρ)·g²``,
    direction ``g/(√v + ε)``."""
    mean_square = spec.rho * slots[0, j] + (1.0 - spec.rho) * g * g
    slots[0, j] = mean_square
    return g / (math.sqrt(mean_square) + spec.optimizer_epsilon)


@scalar
def adam_direction(spec, slots, j, g, bias_1, bias_2):
    """Adam and AdamW (torch, amsgrad off): ``m ← β₁·m + (1 − β₁)·g``,
    ``v ← β₂·v + (1 − β₂)·g²``, direction ``(m/bias_1)/(√(v/bias_2) + ε)`` with
    ``bias_k = 1 − β_kᵗ`` (:func:`adam_bias`)."""
    first = spec.beta_1 * slots[0, j] + (1.0 - spec.beta_1) * g
    second = spec.beta_2 * slots[1, j] + (1.0 - spec.beta_2) * g * g
    slots[0, j] = first
    slots[1, j] = second
    return (first / bias_1) / (math.sqrt(second / bias_2) + spec.optimizer_epsilon)


@scalar
def adam_bias(spec, t):
    """Adam's bias corrections ``(1 − β₁ᵗ, 1 − β₂ᵗ)`` at step counter ``t`` (1 first);
    ``(1, 1)`` for the other rules (computed once per step, not per coordinate)."""
    if uses_bias(spec.rule):
        return 1.0 - spec.beta_1**t, 1.0 - spec.beta_2**t
    return 1.0, 1.0


@scalar
def saga_direction(slots, j, g, raw, memory_share):
    """SAGA: the direction is ``g + ḡ_j`` (``g`` the change of the step's rows' gradients,
    ``ḡ = slots[0]`` the mean of the stored gradients), then ``ḡ_j += memory_share·raw``
    (``memory_share·raw`` = that change's sum over the rows, divided by n)."""
    mean = slots[0, j]
    slots[0, j] = mean + memory_share * raw
    return g + mean


@scalar
def rule_direction(rule, spec, slots, j, g, raw, memory_share, bias_1, bias_2):
    """The direction of coordinate ``j`` under the optimizer rule ``rule``."""
    if rule == UPDATE_MOMENTUM:
        return momentum_direction(spec, slots, j, g)
    if rule == UPDATE_ADAGRAD:
        return adagrad_direction(spec, slots, j, g)
    if rule == UPDATE_RMSPROP:
        return rmsprop_direction(spec, slots, j, g)
    if rule == UPDATE_SAGA:
        return saga_direction(slots, j, g, raw, memory_share)
    return adam_direction(spec, slots, j, g, bias_1, bias_2)


@scalar
def is_optimizer(rule):
    """Whether ``rule`` is one of the optimizer rules (codes from momentum on)."""
    return rule >= UPDATE_MOMENTUM


@scalar
def rule_pass(rule, prox, spec, state, grad, coef, memory_share, eta, bias, next_row):
    """The weights' part of :func:`optimizer_update` under ``rule``, which its caller passes
    as a constant so that, once inlined, the compiler drops the other rules' branches and
    vectorises the loop (AdamW's decoupled decay, or none, is then a constant too);
    ``prox``: whether to take the L1 proximal step (``η·l1 > 0``), a constant where the
    caller picks the pass per row (``epochs.sgd_epoch``), so that no coordinate tests it.
    Returns ``next_row·w_new``: the next row's prediction rides along the update (one pass
    over the weights per row, as plain SGD's fused step)."""
    w, slots = state.w, state.slots
    decoupled = rule == UPDATE_ADAMW
    decay = 1.0 - eta * spec.l2 if decoupled else 1.0
    l2 = 0.0 if decoupled else spec.l2
    threshold = eta * spec.l1
    next_dot = w.dtype.type(0.0)
    for j in range(w.shape[0]):
        raw = float(grad[j])
        weight = float(w[j])
        g = coef * raw + l2 * weight
        direction = rule_direction(rule, spec, slots, j, g, raw, memory_share, bias[0], bias[1])
        value = weight * decay - eta * direction
        if prox:
            value = soft_threshold(value, threshold)
        w[j] = value
        next_dot += next_row[j] * w[j]
    return next_dot


@scalar
def uses_bias(rule):
    """Whether ``rule`` divides by Adam's bias corrections (:func:`adam_bias`)."""
    return rule == UPDATE_ADAM or rule == UPDATE_ADAMW


@scalar
def optimizer_pass(spec, state, row, coef, share, eta, bias, settled, next_row):
    """:func:`rule_pass` of one row under ``spec.rule`` (a per-sample step: ``grad`` the
    row), chosen per row so that no coordinate tests what is fixed for the row: one pass
    per rule without the L1 step, the rule a literal in each; ``settled``: Adam's ``bias``
    is ``(1, 1)``, and its pass has the literal instead (no division per coordinate). With
    L1 (rare with these rules) one pass serves every rule. Returns ``next_row·w_new``."""
    rule = spec.rule
    no_bias = (1.0, 1.0)
    if eta * spec.l1 > 0.0:
        return rule_pass(rule, True, spec, state, row, coef, share, eta, bias, next_row)
    if rule == UPDATE_MOMENTUM:
        code = UPDATE_MOMENTUM
        return rule_pass(code, False, spec, state, row, coef, share, eta, no_bias, next_row)
    if rule == UPDATE_ADAGRAD:
        code = UPDATE_ADAGRAD
        return rule_pass(code, False, spec, state, row, coef, share, eta, no_bias, next_row)
    if rule == UPDATE_RMSPROP:
        code = UPDATE_RMSPROP
        return rule_pass(code, False, spec, state, row, coef, share, eta, no_bias, next_row)
    if rule == UPDATE_SAGA:
        code = UPDATE_SAGA
        return rule_pass(code, False, spec, state, row, coef, share, eta, no_bias, next_row)
    if rule == UPDATE_ADAMW:
        code = UPDATE_ADAMW
        if settled:
            return rule_pass(code, False, spec, state, row, coef, share, eta, no_bias, next_row)
        return rule_pass(code, False, spec, state, row, coef, share, eta, bias, next_row)
    code = UPDATE_ADAM
    if settled:
        return rule_pass(code, False, spec, state, row, coef, share, eta, no_bias, next_row)
    return rule_pass(code, False, spec, state, row, coef, share, eta, bias, next_row)


@scalar
def optimizer_update(spec, state, grad, grad_b, coef, m, eta, t, intercept, next_row):
    """One step of an optimizer rule: coordinate ``j`` of the weights has the gradient
    ``coef·grad[j] + l2·w[j]`` (AdamW: ``coef·grad[j]``, its decay ``w·(1 − η·l2)``
    decoupled) and takes ``w_j ← prox_{η·l1}(w_j·decay − η·direction_j)``; the intercept
    (slot column d, no penalty) ``b ← b − η·direction_d`` from ``coef·grad_b`` when fitted.
    ``m`` is the number of rows of the step (SAGA's memory moves by ``coef·m/n``).
    Returns ``(new intercept, next_row·w_new)``."""
    rule = spec.rule
    bias = adam_bias(spec, t)
    n_rows = state.row_memory.shape[0]
    share = coef * m / n_rows if n_rows > 0 else 0.0  # SAGA's memory_share
    prox = eta * spec.l1 > 0.0
    # One inlined loop per rule (the rule a constant in each): see rule_pass. The
    # repetition is deliberate: one call with the run-time ``rule`` measured 1.9x slower on
    # dense Adam SGD (80 against 43 ms CPU, 20k x 500, 5 epochs; momentum: noise to 1.25x).
    if rule == UPDATE_MOMENTUM:
        code = UPDATE_MOMENTUM
        next_dot = rule_pass(code, prox, spec, state, grad, coef, share, eta, bias, next_row)
    elif rule == UPDATE_ADAGRAD:
        code = UPDATE_ADAGRAD
        next_dot = rule_pass(code, prox, spec, state, grad, coef, share, eta, bias, next_row)
    elif rule == UPDATE_RMSPROP:
        code = UPDATE_RMSPROP
        next_dot = rule_pass(code, prox, spec, state, grad, coef, share, eta, bias, next_row)
    elif rule == UPDATE_SAGA:
        code = UPDATE_SAGA
        next_dot = rule_pass(code, prox, spec, state, grad, coef, share, eta, bias, next_row)
    elif rule == UPDATE_ADAMW:
        code = UPDATE_ADAMW
        next_dot = rule_pass(code, prox, spec, state, grad, coef, share, eta, bias, next_row)
    else:
        code = UPDATE_ADAM
        next_dot = rule_pass(code, prox, spec, state, grad, coef, share, eta, bias, next_row)
    return intercept_step(spec, state, grad_b, coef, share, eta, bias, intercept), next_dot


@scalar
def intercept_step(spec, state, grad_b, coef, share, eta, bias, intercept):
    """The rule's step of the intercept (slot column d, no penalty) from ``coef·grad_b``;
    returns the new intercept (unchanged, its slots too, when it is not fitted)."""
    if not spec.fit_intercept:
        return intercept
    d = state.w.shape[0]
    g = coef * grad_b
    direction = rule_direction(spec.rule, spec, state.slots, d, g, grad_b, share, bias[0], bias[1])
    return intercept - (eta * direction) * spec.intercept_decay


@scalar
def lazy_optimizer_update(spec, state, values, columns, count, by_column, coef, grad_b, eta,
                          t, intercept):  # fmt: skip
    """The lazy variant of :func:`optimizer_update` for CSR rows (as torch's ``SparseAdam``
    and Vowpal Wabbit's adaptive updates): only the ``count`` coordinates
    ``j = columns[q]`` present in the step's rows take the rule's step (their gradient
    ``coef·raw + l2·w_j``, ``raw = values[j]`` if ``by_column`` else ``values[q]``; AdamW:
    their decay), and only their slots move; the others, weights and slots, stay as they
    are (a weight's penalty acts when its feature appears). The intercept takes its step
    as in :func:`optimizer_update`. Returns the new intercept. Not for SAGA."""
    w, slots = state.w, state.slots
    rule = spec.rule
    bias = adam_bias(spec, t)
    decoupled = rule == UPDATE_ADAMW
    decay = 1.0 - eta * spec.l2 if decoupled else 1.0
    l2 = 0.0 if decoupled else spec.l2
    threshold = eta * spec.l1
    for q in range(count):
        j = columns[q]
        raw = float(values[j]) if by_column else float(values[q])
        weight = float(w[j])
        g = coef * raw + l2 * weight
        direction = rule_direction(rule, spec, slots, j, g, raw, 0.0, bias[0], bias[1])
        value = weight * decay - eta * direction
        if threshold > 0.0:
            value = soft_threshold(value, threshold)
        w[j] = value
    return intercept_step(spec, state, grad_b, coef, 0.0, eta, bias, intercept)


@scalar
def apply_update(spec, state, grad, grad_b, coef, m, step, eta, t, intercept):
    """The step of the update rule ``spec.rule`` on ``state.w`` (in place) and the
    intercept (returned): the data gradient is ``coef·grad`` for the weights and
    ``coef·grad_b`` for the intercept (``coef`` = the row's derivative and ``grad`` the row
    for a single-row step; ``coef = 1/m`` and the sums over the ``m`` rows for a batch),
    ``step`` the data step (:func:`data_step`) and ``eta`` the schedule's (the penalty's
    decay), ``t`` the step counter.

    Plain SGD and the passive-aggressive rules (which differ in the data step only):
    ``w ← prox_{η·l1}(w·max(0, 1 − η·l2) − step·coef·grad)`` (``spec.l1_method`` truncated:
    the L2 step, then :func:`truncate_all`), ``b ← b − intercept_decay·step·coef·grad_b``.
    The optimizer rules: :func:`optimizer_update`.
    """
    if is_optimizer(spec.rule):
        return optimizer_update(spec, state, grad, grad_b, coef, m, eta, t, intercept, grad)[0]
    return plain_update(spec, state, grad, grad_b, coef, step, eta, intercept)


@scalar
def plain_update(spec, state, grad, grad_b, coef, step, eta, intercept):
    """:func:`apply_update` under plain SGD or a passive-aggressive rule (not an optimizer
    rule): ``w ← prox_{η·l1}(w·(1 − η·l2) − step·coef·grad)``, ``b ← b − step·coef·grad_b``;
    returns the new intercept. Kernels that know the rule is not an optimizer rule call it
    directly, so they never compile the optimizer rules (``_config.compile_time_choice``)."""
    scale = step * coef
    truncated = spec.l1_method == L1_TRUNCATED
    penalized_update(state.w, grad, scale, eta, 0.0 if truncated else spec.l1, spec.l2)
    if truncated:
        truncate_all(state.w, state.l1_memory, eta * spec.l1)
    if spec.fit_intercept:
        intercept -= (scale * grad_b) * spec.intercept_decay
    return intercept


@scalar
def truncate_all(w, l1_memory, threshold):
    """The truncated L1 (``scalar.truncate_weight``) after a step on dense rows, which
    touches every weight: the running total grows by the step's ``threshold = η·l1``."""
    if threshold <= 0.0:
        return
    l1_memory[w.shape[0]] += threshold
    for j in range(w.shape[0]):
        truncate_weight(w, j, l1_memory, 1.0)
