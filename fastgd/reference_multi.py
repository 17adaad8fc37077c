r"""The numpy specification of the k-output kernels (``fastgd._kernels.multi``).

Plain, vectorised numpy, written from the maths (it imports the single-output
specification, :mod:`fastgd.reference`, never the kernels). The model is a weight matrix
``W`` of shape (k, d) and intercepts ``b`` of shape (k,); the scores of a row are
``P = X·Wᵀ + b``. Three kinds of output:

- ``"ovr"``: class labels ``0..k-1``; output ``o`` is the binary problem "class ``o``
  against the rest" with targets ±1 and the binary loss;
- ``"multi_output"``: a target matrix ``Y`` (n, k); output ``o`` regresses column ``o``;
- ``"multinomial"``: class labels; the softmax cross-entropy
  :math:`L(P, y) = \log \sum_o e^{P_o} - P_y`, with
  :math:`\partial L / \partial P_o = \operatorname{softmax}(P)_o - [y = o]`.

An epoch takes steps of ``batch_size`` rows in ``order``: for a batch :math:`I` of
:math:`m` rows, with :math:`D` the (n, k) derivatives times the sample weights,

.. math::

    G = \frac1m D_I^\top X_I, \quad g_b = \frac1m \sum_{i \in I} D_i, \quad
    W \leftarrow \operatorname{prox}(W (1 - \eta\lambda_2) - \eta G), \quad
    b \leftarrow b - \eta g_b.
"""

from __future__ import annotations

import numpy as np

from .reference import (
    learning_rate,
    loss_and_derivative,
    optimizer_parameters,
    optimizer_step,
    penalized_step,
)

__all__ = [
    "MODES",
    "multi_epoch",
    "multi_gradient",
    "multi_lazy_rule_epoch",
    "multi_objective",
    "row_losses",
    "softmax",
]

#: The kinds of output, as the ``mode`` argument names them.
MODES = ("ovr", "multi_output", "multinomial")


def softmax(P) -> np.ndarray:
    """Row-wise softmax of the scores ``P`` (n, k), shifted by each row's maximum."""
    P = np.asarray(P, dtype=np.float64)
    shifted = np.exp(P - P.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def row_losses(mode: str, P, targets, loss: str, epsilon: float = 0.1):
    """``(L, D)``: the (n, k) losses and derivatives of scores ``P`` for ``targets``
    (labels for ``ovr``/``multinomial``, the matrix ``Y`` for ``multi_output``). For
    ``multinomial``, row ``i``'s loss stands in column ``y_i`` (zeros elsewhere)."""
    P = np.asarray(P, dtype=np.float64)
    n, k = P.shape
    if mode == "multi_output":
        return loss_and_derivative(loss, P, np.asarray(targets, dtype=np.float64), epsilon)
    labels = np.asarray(targets, dtype=np.int64)
    one_hot = np.zeros((n, k))
    one_hot[np.arange(n), labels] = 1.0
    if mode == "ovr":
        return loss_and_derivative(loss, P, 2.0 * one_hot - 1.0, epsilon)
    if mode != "multinomial":
        raise ValueError(f"mode={mode!r} is not one of {MODES}.")
    top = P.max(axis=1, keepdims=True)
    log_total = np.log(np.exp(P - top).sum(axis=1)) + top[:, 0]
    values = one_hot * (log_total - P[np.arange(n), labels])[:, None]
    return values, softmax(P) - one_hot


def multi_objective(mode, X, targets, W, b, *, loss, epsilon=0.1, sample_weight=None,
                    l1=0.0, l2=0.0) -> float:  # fmt: skip
    r""":math:`\frac1n\sum_i s_i \sum_o L_{io} + \sum_o R(W_o)`: the summed objective."""
    X = np.asarray(X, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    s = np.ones(X.shape[0]) if sample_weight is None else np.asarray(sample_weight, float)
    values, _ = row_losses(mode, X @ W.T + b, targets, loss, epsilon)
    penalty = l1 * np.abs(W).sum() + 0.5 * l2 * float((W * W).sum())
    return float(s @ values.sum(axis=1) / X.shape[0] + penalty)


def multi_gradient(mode, X, targets, W, b, *, loss, epsilon=0.1, sample_weight=None,
                   l2=0.0) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    r"""The gradient of the objective's smooth part :math:`\frac1n\sum_i s_i \sum_o
    L_{io} + \frac{\lambda_2}2\|W\|^2` (what the full-batch optimizers step on; the L1 part
    is Nesterov's prox): ``(G_W, g_b)`` with :math:`G_W = \frac1n (sD)^\top X + \lambda_2 W`
    and :math:`g_b = \frac1n \sum_i s_i D_i`."""
    X = np.asarray(X, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    n = X.shape[0]
    s = np.ones(n) if sample_weight is None else np.asarray(sample_weight, float)
    _, derivs = row_losses(mode, X @ W.T + b, targets, loss, epsilon)
    weighted = s[:, None] * derivs
    return weighted.T @ X / n + l2 * W, weighted.sum(axis=0) / n


def multi_epoch(mode, X, targets, W, b, order, batch_size, *, loss, epsilon=0.1,
                sample_weight=None, l1=0.0, l2=0.0, schedule="constant", eta0=0.01,
                power_t=0.25, alpha=1e-4, optimal_init=None, t=1.0, fit_intercept=True,
                average=None, update_rule=None, rule_state=None,
                optimizer=None) -> tuple:  # fmt: skip
    """One epoch of steps of ``batch_size`` rows (1: per-sample SGD) in ``order`` for all
    k outputs (see the module's docstring).

    ``average``: ``(avg_W, avg_b, average_start)`` to continue, or None. ``update_rule``:
    an optimizer rule (``fastgd.reference.optimizer_step``) applied to each output with its
    own state: ``rule_state`` = ``{"slots": (k, s, d + 1), "row_memory": (k, n)}`` (zeros
    when None), ``optimizer`` its parameters. Returns ``(W, b, Σ s·L over the epoch's
    rows, t after, per-output loss sums)`` plus ``(avg_W, avg_b)`` with ``average`` and
    the rule's state last with ``update_rule``.
    """
    if update_rule is not None:
        return _rule_epoch(
            mode, X, targets, W, b, order, batch_size, update_rule, loss=loss,
            epsilon=epsilon, sample_weight=sample_weight, l1=l1, l2=l2,
            eta_at=lambda t: learning_rate(schedule, t, eta0=eta0, power_t=power_t,
                                           alpha=alpha, optimal_init=optimal_init),
            t=t, fit_intercept=fit_intercept, average=average, rule_state=rule_state,
            params=optimizer_parameters(**(optimizer or {})),
        )  # fmt: skip
    X = np.asarray(X, dtype=np.float64)
    W = np.array(W, dtype=np.float64)
    b = np.array(b, dtype=np.float64)
    n = X.shape[0]
    s = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    targets = np.asarray(targets)
    order = np.asarray(order, dtype=np.int64)
    losses = np.zeros(W.shape[0])
    if average is not None:
        avg_W, avg_b, average_start = np.array(average[0], float), np.array(average[1]), average[2]
    for start in range(0, order.shape[0], batch_size):
        rows = order[start : start + batch_size]
        eta = learning_rate(
            schedule, t, eta0=eta0, power_t=power_t, alpha=alpha, optimal_init=optimal_init
        )
        values, derivs = row_losses(mode, X[rows] @ W.T + b, targets[rows], loss, epsilon)
        losses += s[rows] @ values
        weighted = s[rows, None] * derivs
        m = rows.shape[0]
        gradient = weighted.T @ X[rows] / m
        W = np.stack([penalized_step(W[o], gradient[o], eta, l1, l2) for o in range(W.shape[0])])
        if fit_intercept:
            b = b - eta * weighted.sum(axis=0) / m
        if average is not None and t >= average_start:
            share = 1.0 / (t - average_start + 1.0)
            avg_W = avg_W + (W - avg_W) * share
            avg_b = avg_b + (b - avg_b) * share
        t += 1.0
    result = (W, b, float(losses.sum()), t, losses)
    if average is not None:
        return (*result, avg_W, avg_b)
    return result


def _rule_epoch(mode, X, targets, W, b, order, batch_size, rule, *, loss, epsilon,
                sample_weight, l1, l2, eta_at, t, fit_intercept, average, rule_state,
                params) -> tuple:  # fmt: skip
    """:func:`multi_epoch` under an optimizer rule: each output's step is
    ``fastgd.reference.optimizer_step`` from its own gradient and slots (SAGA: the change
    of each row's stored derivative, per output, as the single-output reference)."""
    X = np.asarray(X, dtype=np.float64)
    W = np.array(W, dtype=np.float64)
    b = np.array(b, dtype=np.float64)
    n, d = X.shape
    k = W.shape[0]
    s = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    targets = np.asarray(targets)
    order = np.asarray(order, dtype=np.int64)
    if rule_state is None:
        slots = np.zeros((k, 2 if rule in ("adam", "adamw") else 1, d + 1))
        memory = np.zeros((k, n))
    else:
        slots = np.array(rule_state["slots"], dtype=np.float64)
        memory = np.array(rule_state["row_memory"], dtype=np.float64)
    losses = np.zeros(k)
    if average is not None:
        avg_W, avg_b, average_start = np.array(average[0], float), np.array(average[1]), average[2]
    for start in range(0, order.shape[0], batch_size):
        rows = order[start : start + batch_size]
        m = rows.shape[0]
        eta = eta_at(t)
        values, derivs = row_losses(mode, X[rows] @ W.T + b, targets[rows], loss, epsilon)
        losses += s[rows] @ values
        weighted = s[rows, None] * derivs
        for o in range(k):
            if rule == "saga":
                change = weighted[:, o] - memory[o, rows]
                memory[o, rows] = weighted[:, o]
                g = X[rows].T @ change / m + slots[o, 0, :d]
                g_b = float(np.sum(change)) / m + slots[o, 0, d]
                slots[o, 0, :d] += X[rows].T @ change / n
                if fit_intercept:
                    slots[o, 0, d] += float(np.sum(change)) / n
            else:
                g, g_b = X[rows].T @ weighted[:, o] / m, float(np.sum(weighted[:, o])) / m
            W[o], b[o], slots[o] = optimizer_step(
                rule, W[o], b[o], g, g_b, eta=eta, l1=l1, l2=l2, t=t, slots=slots[o],
                params=params, fit_intercept=fit_intercept,
            )  # fmt: skip
        if average is not None and t >= average_start:
            share = 1.0 / (t - average_start + 1.0)
            avg_W = avg_W + (W - avg_W) * share
            avg_b = avg_b + (b - avg_b) * share
        t += 1.0
    result = (W, b, float(losses.sum()), t, losses)
    if average is not None:
        result = (*result, avg_W, avg_b)
    return (*result, {"slots": slots, "row_memory": memory})


def multi_lazy_rule_epoch(mode, X, targets, W, b, order, batch_size, rule, *, loss,
                          epsilon=0.1, sample_weight=None, l1=0.0, l2=0.0, eta=0.01, t=1.0,
                          fit_intercept=True, average=None, rule_state=None,
                          optimizer=None) -> tuple:  # fmt: skip
    """:func:`multi_epoch` under an optimizer rule (not SAGA) in the CSR kernels' lazy
    variant (``fastgd._kernels.multi_csr_rules``), at the constant step ``eta``: each
    output's step is ``fastgd.reference.optimizer_step`` from its own gradient and slots
    with ``present`` the columns the batch's rows hold (non-zero in ``X``): only their
    weights and slots move, and the intercept. The running means are those of every
    weight. Returns as :func:`multi_epoch` with ``update_rule``."""
    if rule == "saga":
        raise ValueError("the lazy variant is not SAGA's (its CSR kernels catch up exactly).")
    X = np.asarray(X, dtype=np.float64)
    W = np.array(W, dtype=np.float64)
    b = np.array(b, dtype=np.float64)
    n, d = X.shape
    k = W.shape[0]
    s = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    params = optimizer_parameters(**(optimizer or {}))
    if rule_state is None:
        slots = np.zeros((k, 2 if rule in ("adam", "adamw") else 1, d + 1))
    else:
        slots = np.array(rule_state["slots"], dtype=np.float64)
    losses = np.zeros(k)
    if average is not None:
        avg_W, avg_b, average_start = np.array(average[0], float), np.array(average[1]), average[2]
    for start in range(0, len(order), batch_size):
        rows = np.asarray(order[start : start + batch_size], dtype=np.int64)
        values, derivs = row_losses(mode, X[rows] @ W.T + b, np.asarray(targets)[rows], loss,
                                    epsilon)  # fmt: skip
        losses += s[rows] @ values
        weighted = s[rows, None] * derivs
        present = np.any(X[rows] != 0.0, axis=0)
        for o in range(k):
            g, g_b = (
                X[rows].T @ weighted[:, o] / len(rows),
                float(np.sum(weighted[:, o])) / len(rows),
            )
            W[o], b[o], slots[o] = optimizer_step(
                rule, W[o], b[o], g, g_b, eta=eta, l1=l1, l2=l2, t=t, slots=slots[o],
                params=params, fit_intercept=fit_intercept, present=present,
            )  # fmt: skip
        if average is not None and t >= average_start:
            share = 1.0 / (t - average_start + 1.0)
            avg_W = avg_W + (W - avg_W) * share
            avg_b = avg_b + (b - avg_b) * share
        t += 1.0
    result = (W, b, float(losses.sum()), t, losses)
    if average is not None:
        result = (*result, avg_W, avg_b)
    return (*result, {"slots": slots, "row_memory": np.zeros((k, 0))})
