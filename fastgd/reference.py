r"""The numpy specification of fastgd's maths.

This module states, in plain vectorised numpy, exactly what the Numba kernels compute. It is

- the readable specification: every docstring gives the maths it implements;
- the oracle of the property tests: the kernels must agree with it up to rounding;
- the numpy baseline of the benchmarks.

It is written independently of the kernels and never imports ``fastgd._kernels`` or
``fastgd.engine``; names, codes and constants come from :mod:`fastgd.options`. Everything is
computed in float64 whatever the input dtype (an oracle should not add rounding of its own),
and every function returns new arrays: inputs are never modified.

The model is linear: the prediction of row :math:`x_i` is :math:`p_i = x_i \cdot w + b`. With
per-sample multipliers :math:`s_i` (the engine rescales user weights to mean 1), the objective
is

.. math::

    J(w, b) = \frac{1}{n} \sum_{i=1}^{n} s_i\, L(p_i, y_i)
              + \lambda_1 \lVert w \rVert_1 + \tfrac{1}{2} \lambda_2 \lVert w \rVert_2^2,

where ``l1`` = :math:`\lambda_1` and ``l2`` = :math:`\lambda_2` come from
:meth:`fastgd.options.Penalty.split`. The intercept is never penalised. Every mean divides by
the number of rows involved (``n`` for a full pass, the batch size for a batch), never by
:math:`\sum s_i`; with mean-1 multipliers the two agree over the full data.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fastgd.options import (
    DERIVATIVE_CLIP,
    OPTIMIZER_DEFAULTS,
    SCHEDULE_CONSTANT,
    SCHEDULE_INVSCALING,
    SCHEDULE_OPTIMAL,
    loss_by_name,
    penalty_by_name,
    schedule_by_name,
    strategy_by_name,
    update_rule_by_name,
)

__all__ = [
    "apply_update",
    "data_step",
    "fit",
    "full_batch_step",
    "learning_rate",
    "loss_and_derivative",
    "minibatch_epoch",
    "objective",
    "optimal_init",
    "optimizer_parameters",
    "optimizer_step",
    "penalized_step",
    "penalty_value",
    "sgd_epoch",
    "start_rule_state",
]


# ---------------------------------------------------------------------------------------------
# Losses. Each private function returns (L(p, y), dL/dp) before clipping, elementwise.
# Regression losses use the residual r = p - y; classification losses (y in {-1, +1}) use the
# margin z = y * p.
# ---------------------------------------------------------------------------------------------


def _squared_error(p, y, epsilon):
    residual = p - y
    return 0.5 * residual * residual, residual


def _huber(p, y, epsilon):
    residual = p - y
    size = np.abs(residual)
    quadratic = size <= epsilon
    value = np.where(quadratic, 0.5 * residual * residual, epsilon * size - 0.5 * epsilon**2)
    derivative = np.where(quadratic, residual, epsilon * np.sign(residual))
    return value, derivative


def _epsilon_insensitive(p, y, epsilon):
    under = y - p  # > epsilon: the prediction is too small
    over = p - y  # > epsilon: the prediction is too large
    value = np.maximum(0.0, np.abs(under) - epsilon)
    derivative = np.where(under > epsilon, -1.0, np.where(over > epsilon, 1.0, 0.0))
    return value, derivative


def _squared_epsilon_insensitive(p, y, epsilon):
    under = y - p
    over = p - y
    excess = np.maximum(0.0, np.abs(under) - epsilon)
    derivative = np.where(
        under > epsilon,
        -2.0 * (under - epsilon),
        np.where(over > epsilon, 2.0 * (over - epsilon), 0.0),
    )
    return excess * excess, derivative


def _log_loss(p, y, epsilon):
    margin = y * p
    # log(1 + exp(-z)) without overflow: logaddexp(0, -z) = max(0, -z) + log1p(exp(-|z|)).
    value = np.logaddexp(0.0, -margin)
    # dL/dp = -y * sigmoid(-z) = -y / (1 + exp(z)). Only exp(-|z|) <= 1 is ever formed, so
    # nothing overflows (it underflows quietly to 0 for huge |z|).
    small = np.exp(-np.abs(margin))
    sigmoid_of_minus_margin = np.where(margin >= 0.0, small / (1.0 + small), 1.0 / (1.0 + small))
    return value, -y * sigmoid_of_minus_margin


def _hinge(p, y, epsilon):
    margin = y * p
    value = np.maximum(0.0, 1.0 - margin)
    # "<=" as scikit-learn: the subgradient at the kink z = 1 is taken as -y.
    derivative = np.where(margin <= 1.0, -y, 0.0)
    return value, derivative


def _squared_hinge(p, y, epsilon):
    margin = y * p
    gap = 1.0 - margin
    value = np.maximum(0.0, gap) ** 2
    derivative = np.where(margin < 1.0, -2.0 * y * gap, 0.0)
    return value, derivative


def _modified_huber(p, y, epsilon):
    margin = y * p
    gap = 1.0 - margin
    value = np.where(margin >= 1.0, 0.0, np.where(margin >= -1.0, gap * gap, -4.0 * margin))
    derivative = np.where(margin >= 1.0, 0.0, np.where(margin >= -1.0, -2.0 * y * gap, -4.0 * y))
    return value, derivative


def _perceptron(p, y, epsilon):
    margin = y * p
    value = np.maximum(0.0, -margin)
    derivative = np.where(margin <= 0.0, -y, 0.0)
    return value, derivative


_LOSS_FUNCTIONS = {
    "squared_error": _squared_error,
    "huber": _huber,
    "epsilon_insensitive": _epsilon_insensitive,
    "squared_epsilon_insensitive": _squared_epsilon_insensitive,
    "log_loss": _log_loss,
    "hinge": _hinge,
    "squared_hinge": _squared_hinge,
    "modified_huber": _modified_huber,
    "perceptron": _perceptron,
}


def loss_and_derivative(loss: str, p, y, epsilon: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    r"""Per-sample loss :math:`L(p, y)` and its clipped derivative :math:`\partial L/\partial p`.

    With :math:`r = p - y` (regression) and :math:`z = y p`, :math:`y \in \{-1, +1\}`
    (classification), and :math:`\varepsilon` = ``epsilon``:

    - ``squared_error``: :math:`L = \tfrac12 r^2`, :math:`L' = r`.
    - ``huber``: :math:`L = \tfrac12 r^2` if :math:`|r| \le \varepsilon`, else
      :math:`\varepsilon |r| - \tfrac12 \varepsilon^2`; :math:`L' = r` if
      :math:`|r| \le \varepsilon`, else :math:`\varepsilon \operatorname{sign}(r)`.
    - ``epsilon_insensitive``: :math:`L = \max(0, |y - p| - \varepsilon)`; :math:`L' = -1` if
      :math:`y - p > \varepsilon`, :math:`+1` if :math:`p - y > \varepsilon`, else 0.
    - ``squared_epsilon_insensitive``: :math:`L = \max(0, |y - p| - \varepsilon)^2`;
      :math:`L' = -2(y - p - \varepsilon)` if :math:`y - p > \varepsilon`,
      :math:`2(p - y - \varepsilon)` if :math:`p - y > \varepsilon`, else 0.
    - ``log_loss``: :math:`L = \log(1 + e^{-z})`, :math:`L' = -y / (1 + e^{z})`.
    - ``hinge``: :math:`L = \max(0, 1 - z)`; :math:`L' = -y` if :math:`z \le 1`, else 0
      (the kink takes :math:`-y`, as scikit-learn).
    - ``squared_hinge``: :math:`L = \max(0, 1 - z)^2`; :math:`L' = -2y(1 - z)` if
      :math:`z < 1`, else 0.
    - ``modified_huber``: :math:`L = 0` if :math:`z \ge 1`, :math:`(1 - z)^2` if
      :math:`-1 \le z < 1`, :math:`-4z` if :math:`z < -1`; :math:`L' = 0`,
      :math:`-2y(1 - z)`, :math:`-4y` respectively.
    - ``perceptron``: :math:`L = \max(0, -z)`; :math:`L' = -y` if :math:`z \le 0`, else 0.

    The derivative is then clipped to :math:`[-C, C]`, :math:`C` =
    :data:`fastgd.options.DERIVATIVE_CLIP`. ``log_loss`` is evaluated stably: finite and
    accurate, without floating-point warnings, for any finite margin.

    Parameters
    ----------
    loss : str
        A loss name from :data:`fastgd.options.LOSSES`.
    p : array_like
        Predictions.
    y : array_like
        Targets (in :math:`\{-1, +1\}` for classification losses); broadcast against ``p``.
    epsilon : float, default=0.1
        The :math:`\varepsilon` of ``huber`` and the epsilon-insensitive losses; ignored by
        the others.

    Returns
    -------
    value, derivative : ndarray of float64
        :math:`L(p, y)` and the clipped :math:`\partial L/\partial p`, elementwise.
    """
    loss_by_name(loss)  # a clear ValueError for an unknown name
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    value, derivative = _LOSS_FUNCTIONS[loss](p, y, float(epsilon))
    derivative = np.clip(derivative, -DERIVATIVE_CLIP, DERIVATIVE_CLIP)
    return np.asarray(value, dtype=np.float64), np.asarray(derivative, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Penalty and the penalised (proximal) step.
# ---------------------------------------------------------------------------------------------


def penalty_value(w, l1: float, l2: float) -> float:
    r"""The penalty :math:`\lambda_1 \sum_j |w_j| + \tfrac12 \lambda_2 \sum_j w_j^2`.

    Parameters
    ----------
    w : array_like
        Weights (the intercept is never penalised and must not be included).
    l1, l2 : float
        :math:`\lambda_1` and :math:`\lambda_2`, from :meth:`fastgd.options.Penalty.split`.

    Returns
    -------
    float
    """
    w = np.asarray(w, dtype=np.float64)
    return float(l1 * np.sum(np.abs(w)) + 0.5 * l2 * np.dot(w.ravel(), w.ravel()))


def penalized_step(w, grad, eta: float, l1: float, l2: float) -> np.ndarray:
    r"""One gradient step on the data term and the L2 term, then the L1 proximal map.

    .. math::

        v &= w\,\max(0, 1 - \eta \lambda_2) - \eta\, g \\
        w_{\text{new}} &= \operatorname{sign}(v)\, \max(|v| - \eta \lambda_1, 0)

    The decay factor is clipped at 0, as scikit-learn's: a huge :math:`\eta\lambda_2`
    zeroes the weights instead of flipping their sign.

    The second line (soft thresholding) is
    :math:`\arg\min_u \tfrac12 \lVert u - v \rVert^2 + \eta \lambda_1 \lVert u \rVert_1`:
    weights whose :math:`|v| \le \eta\lambda_1` become exactly zero (``+0.0``).

    Parameters
    ----------
    w : array_like
        Current weights.
    grad : array_like
        Gradient :math:`g` of the data term at ``w`` (same shape as ``w``).
    eta : float
        Step size :math:`\eta`.
    l1, l2 : float
        :math:`\lambda_1` and :math:`\lambda_2`.

    Returns
    -------
    ndarray of float64
        The new weights.
    """
    w = np.asarray(w, dtype=np.float64)
    grad = np.asarray(grad, dtype=np.float64)
    v = w * max(0.0, 1.0 - eta * l2) - eta * grad
    shrunk = np.maximum(np.abs(v) - eta * l1, 0.0)
    # np.where keeps the zeros positive (sign(v) * 0 would give -0.0 for negative v).
    return np.where(shrunk > 0.0, np.sign(v) * shrunk, 0.0)


def truncated_l1(w, l1_memory, threshold: float, columns=None) -> tuple[np.ndarray, np.ndarray]:
    r"""scikit-learn's L1: the cumulative truncated gradient (Tsuruoka, Tsujii and
    Ananiadou, 2009), applied after a step's data and L2 terms.

    ``l1_memory`` holds :math:`q_j` (the L1 penalty weight :math:`j` has received, signed)
    for each weight, then :math:`u` (the penalty each weight is due so far). The step adds
    :math:`\eta\lambda_1` (``threshold``) to :math:`u`, then moves each weight of
    ``columns`` (all when None; a CSR row's stored columns in the sparse kernels) towards
    0 by what it has not received, never across 0:

    .. math::

        w_j &\leftarrow \max(0, w_j - (u + q_j)) \ 	ext{if}\ w_j > 0, \qquad
        w_j \leftarrow \min(0, w_j + (u - q_j)) \ 	ext{if}\ w_j < 0, \
        q_j &\leftarrow q_j + (w_j^{	ext{new}} - w_j).

    A weight the data push back and forth around 0 so stays at exactly 0, where the
    proximal step (:func:`penalized_step`) leaves it at the size of one step's noise.

    Returns
    -------
    w_new, l1_memory_new : ndarray of float64
    """
    w = np.array(w, dtype=np.float64)
    memory = np.array(l1_memory, dtype=np.float64)
    total = memory[-1] + threshold
    columns = np.arange(w.shape[0]) if columns is None else np.asarray(columns, dtype=np.int64)
    value, received = w[columns], memory[columns]
    clipped = np.where(
        value > 0.0,
        np.maximum(0.0, value - (total + received)),
        np.where(value < 0.0, np.minimum(0.0, value + (total - received)), value),
    )
    w[columns] = clipped
    memory[columns] = received + (clipped - value)
    memory[-1] = total
    return w, memory


# ---------------------------------------------------------------------------------------------
# Learning-rate schedules (as the kernels see them).
# ---------------------------------------------------------------------------------------------


def optimal_init(loss: str, alpha: float, epsilon: float = 0.1) -> float:
    r"""The offset :math:`t_0` of the ``optimal`` schedule (scikit-learn's heuristic).

    .. math::

        \tau = \sqrt{1 / \sqrt{\alpha}}, \qquad
        \eta_{\text{init}} = \frac{\tau}{\max\bigl(1, L'(p=-\tau, y=1)\bigr)}, \qquad
        t_0 = \frac{1}{\eta_{\text{init}}\, \alpha},

    with :math:`L'` the signed, clipped derivative of :func:`loss_and_derivative`. The first
    step of the ``optimal`` schedule (:math:`t = 1`) therefore has size
    :math:`\eta_{\text{init}}`.

    Parameters
    ----------
    loss : str
        Loss name.
    alpha : float
        The user's total regularisation strength (not the split ``l1``/``l2``); must be > 0.
    epsilon : float, default=0.1
        The loss's :math:`\varepsilon`, where it has one.

    Returns
    -------
    float
    """
    if not alpha > 0.0:
        raise ValueError(f"alpha={alpha!r} must be > 0 for learning_rate='optimal'.")
    typical_weight = np.sqrt(1.0 / np.sqrt(alpha))
    _, derivative = loss_and_derivative(loss, -typical_weight, 1.0, epsilon)
    initial_eta0 = typical_weight / max(1.0, float(derivative))
    return float(1.0 / (initial_eta0 * alpha))


def learning_rate(
    schedule: str,
    t: float,
    *,
    eta0: float = 0.01,
    power_t: float = 0.25,
    alpha: float = 1e-4,
    optimal_init: float | None = None,
) -> float:
    r"""The step size :math:`\eta` at step counter :math:`t \ge 1`.

    ==========  ====================================================
    schedule    :math:`\eta(t)`
    ==========  ====================================================
    constant    :math:`\eta_0` (also ``pa1``, ``pa2``: the penalty's decay, :func:`data_step`)
    invscaling  :math:`\eta_0 / t^{\text{power\_t}}`
    optimal     :math:`1 / \bigl(\alpha\, (t_0 + t - 1)\bigr)`
    ==========  ====================================================

    Parameters
    ----------
    schedule : str
        A name from :data:`fastgd.options.SCHEDULES`; it acts through its ``kernel_code``, so
        the epoch-level schedules (``adaptive``, ``auto``) give ``eta0``, as in the kernels.
    t : float
        Step counter, starting at 1.
    eta0 : float, default=0.01
        :math:`\eta_0` (constant, invscaling).
    power_t : float, default=0.25
        Exponent of ``invscaling``.
    alpha : float, default=1e-4
        The user's total :math:`\alpha` (``optimal``).
    optimal_init : float, optional
        :math:`t_0` from :func:`optimal_init`; required for ``optimal``.

    Returns
    -------
    float
    """
    code = schedule_by_name(schedule).kernel_code
    if code == SCHEDULE_CONSTANT:
        return float(eta0)
    if code == SCHEDULE_INVSCALING:
        return float(eta0 / t**power_t)
    if code == SCHEDULE_OPTIMAL:
        if optimal_init is None:
            raise ValueError(
                "learning_rate='optimal' needs optimal_init (see fastgd.reference.optimal_init)."
            )
        return float(1.0 / (alpha * (optimal_init + t - 1.0)))
    raise AssertionError(f"unknown kernel schedule code {code}")  # pragma: no cover


# ---------------------------------------------------------------------------------------------
# Objective, full-batch step and epochs.
# ---------------------------------------------------------------------------------------------


def _as_data(X, y, w, sample_weight):
    """``X, y, w`` as float64 arrays of fitting shapes, and the multipliers ``s``."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    if X.ndim != 2 or y.shape != (X.shape[0],) or w.shape != (X.shape[1],):
        raise ValueError(
            f"shapes do not fit: X {X.shape} must be (n, d), y {y.shape} (n,), w {w.shape} (d,)."
        )
    return X, y, w, _multipliers(sample_weight, X.shape[0])


def _multipliers(sample_weight, n: int) -> np.ndarray:
    if sample_weight is None:
        return np.ones(n)
    s = np.asarray(sample_weight, dtype=np.float64)
    if s.shape != (n,):
        raise ValueError(f"sample_weight has shape {s.shape}; expected ({n},).")
    return s


def objective(
    X, y, w, b: float, *, loss: str, epsilon=0.1, sample_weight=None, l1=0.0, l2=0.0
) -> float:
    r"""The objective :math:`J(w, b) = \frac1n \sum_i s_i L(x_i \cdot w + b, y_i) + R(w)`.

    Parameters
    ----------
    X : array_like, shape (n, d)
    y : array_like, shape (n,)
    w : array_like, shape (d,)
    b : float
        Intercept.
    loss : str
        Loss name.
    epsilon : float, default=0.1
        The loss's :math:`\varepsilon`.
    sample_weight : array_like, shape (n,), optional
        Multipliers :math:`s_i` as given (not renormalised); ``None`` means all 1.
    l1, l2 : float, default=0.0
        Penalty strengths, :math:`R(w) = \lambda_1 \lVert w\rVert_1 + \tfrac12\lambda_2
        \lVert w \rVert_2^2`.

    Returns
    -------
    float
    """
    X, y, w, s = _as_data(X, y, w, sample_weight)
    value, _ = loss_and_derivative(loss, X @ w + b, y, epsilon)
    return _objective_value(s, value, w, l1, l2)


def _objective_value(s, value, w, l1: float, l2: float) -> float:
    """:math:`J` from the rows' losses ``value`` and multipliers ``s`` at the weights ``w``."""
    return float(np.dot(s, value) / s.shape[0] + penalty_value(w, l1, l2))


def full_batch_step(
    X,
    y,
    w,
    b: float,
    *,
    eta: float,
    fit_intercept: bool = True,
    loss: str,
    epsilon: float = 0.1,
    sample_weight=None,
    l1: float = 0.0,
    l2: float = 0.0,
) -> tuple[np.ndarray, float, float]:
    r"""One full-batch step from the exact gradient of the data term.

    .. math::

        d_i &= s_i\, L'(x_i \cdot w + b,\ y_i), \qquad
        g = \frac1n X^\top d, \qquad g_b = \frac1n \sum_i d_i, \\
        w_{\text{new}} &= \text{penalized\_step}(w, g, \eta, \lambda_1, \lambda_2), \qquad
        b_{\text{new}} = b - \eta\, g_b \ \text{(only if fit\_intercept)}.

    Parameters
    ----------
    X, y, w, b, loss, epsilon, sample_weight, l1, l2
        As in :func:`objective`.
    eta : float
        Step size, e.g. :func:`learning_rate` at the epoch number.
    fit_intercept : bool, default=True
        If False the intercept is returned unchanged.

    Returns
    -------
    w_new : ndarray of float64, shape (d,)
    b_new : float
    objective_at_start : float
        :math:`J(w, b)` at the weights before the step.
    """
    X, y, w, s = _as_data(X, y, w, sample_weight)
    n = X.shape[0]
    value, derivative = loss_and_derivative(loss, X @ w + b, y, epsilon)
    weighted = s * derivative
    grad = X.T @ weighted / n
    objective_at_start = _objective_value(s, value, w, l1, l2)
    w_new = penalized_step(w, grad, eta, l1, l2)
    b_new = float(b - eta * np.sum(weighted) / n) if fit_intercept else float(b)
    return w_new, b_new, objective_at_start


def _check_order(order, n: int) -> np.ndarray:
    order = np.asarray(order)
    if order.shape != (n,) or not np.issubdtype(order.dtype, np.integer):
        raise ValueError(
            f"order must be an integer permutation of 0..{n - 1}; got shape {order.shape}, "
            f"dtype {order.dtype}."
        )
    return order


def _start_average(average):
    if average is None:
        return None
    avg_w, avg_b, average_start = average
    return np.array(avg_w, dtype=np.float64), float(avg_b), float(average_start)


def _average_step(averaged, w, b: float, t: float):
    """Fold the weights after step ``t`` into the running means (from ``average_start`` on)."""
    avg_w, avg_b, average_start = averaged
    if t < average_start:
        return averaged
    k = t - average_start + 1.0
    return avg_w + (w - avg_w) / k, avg_b + (b - avg_b) / k, average_start


# ---------------------------------------------------------------------------------------------
# Update rules (fastgd.options.UPDATE_RULES), selected by the schedule's ``update_rule``.
# ---------------------------------------------------------------------------------------------


def _passive_aggressive_step(rule: str, loss_value: float, squared_norm: float, eta0: float):
    if rule == "pa1":
        return 0.0 if squared_norm <= 0.0 else min(eta0, loss_value / squared_norm)
    return loss_value / (squared_norm + 0.5 / eta0)


def data_step(rule: str, eta: float, loss_value: float, row, eta0: float) -> float:
    r"""The size of the data term's step under the update rule ``rule`` (a name from
    :data:`fastgd.options.UPDATE_RULES`) for a row with loss :math:`L` (before sample
    weights), at the schedule's step :math:`\eta`:

    - ``sgd``: :math:`\eta`;
    - ``pa1`` (passive-aggressive I, Crammer et al., 2006): :math:`\min(\eta_0, L /
      \|x\|^2)` (0 when :math:`x = 0`);
    - ``pa2``: :math:`L / (\|x\|^2 + 1/(2\eta_0))`.

    With hinge loss the passive-aggressive update :math:`w \leftarrow w - \tau L' x` is
    :math:`w + \tau y x`, the classic rule.
    """
    if rule in ("pa1", "pa2"):
        row = np.asarray(row, dtype=np.float64)
        return float(_passive_aggressive_step(rule, loss_value, float(row @ row), eta0))
    return float(eta)


def apply_update(rule: str, w, gradient, step: float, eta: float, l1: float, l2: float):
    r"""The new weights under the update rule ``rule`` from the data gradient :math:`g`,
    the data step ``step`` (:func:`data_step`) and the schedule's :math:`\eta` (the
    penalty's decay).

    ``sgd``, ``pa1``, ``pa2`` (they differ in the data step only): :math:`w_{\text{new}} =
    \text{penalized\_step}(w, (\text{step}/\eta)\, g, \eta, \lambda_1, \lambda_2)`, that is
    :math:`\operatorname{prox}_{\eta\lambda_1}(w (1 - \eta\lambda_2) - \text{step}\cdot g)`.
    """
    update_rule_by_name(rule)  # a clear error for an unknown name
    scaled = gradient if step == eta else (step / eta) * np.asarray(gradient, dtype=np.float64)
    return penalized_step(w, scaled, eta, l1, l2)


# ---------------------------------------------------------------------------------------------
# Optimizer rules (momentum, AdaGrad, RMSProp, Adam, AdamW, SAGA): torch.optim's equations.
# Every rule treats the intercept as one more coordinate (the last column of its slots), with
# no penalty; the data gradient is g, the L2 term l2·w is added to it (AdamW: decoupled), the
# L1 penalty stays a proximal step with threshold η·l1 after the rule's step.
# ---------------------------------------------------------------------------------------------


def _momentum_direction(params, slots, g, t):
    r"""Heavy ball (torch ``SGD(momentum=μ, dampening=0)``): :math:`v \leftarrow \mu v + g`;
    the step is along :math:`v`, or :math:`g + \mu v` with ``nesterov``."""
    velocity = params["momentum"] * slots[0] + g
    direction = g + params["momentum"] * velocity if params["nesterov"] else velocity
    return direction, np.stack([velocity])


def _adagrad_direction(params, slots, g, t):
    r"""AdaGrad (torch, ``lr_decay=0``, ``initial_accumulator_value=0``):
    :math:`G \leftarrow G + g^2`, direction :math:`g / (\sqrt{G} + \epsilon)`."""
    total = slots[0] + g * g
    return g / (np.sqrt(total) + params["optimizer_epsilon"]), np.stack([total])


def _rmsprop_direction(params, slots, g, t):
    r"""RMSProp (torch, ``centered=False``, ``momentum=0``; ``rho`` is torch's ``alpha``):
    :math:`v \leftarrow \rho v + (1 - \rho) g^2`, direction :math:`g / (\sqrt{v} + \epsilon)`."""
    rho = params["rho"]
    mean_square = rho * slots[0] + (1.0 - rho) * g * g
    return g / (np.sqrt(mean_square) + params["optimizer_epsilon"]), np.stack([mean_square])


def _adam_direction(params, slots, g, t):
    r"""Adam (torch, ``amsgrad=False``): :math:`m \leftarrow \beta_1 m + (1 - \beta_1) g`,
    :math:`v \leftarrow \beta_2 v + (1 - \beta_2) g^2`, direction
    :math:`\hat m / (\sqrt{\hat v} + \epsilon)` with :math:`\hat m = m / (1 - \beta_1^t)`,
    :math:`\hat v = v / (1 - \beta_2^t)`, :math:`t` the step counter (1 at the first step)."""
    beta_1, beta_2 = params["beta_1"], params["beta_2"]
    first = beta_1 * slots[0] + (1.0 - beta_1) * g
    second = beta_2 * slots[1] + (1.0 - beta_2) * g * g
    corrected_first = first / (1.0 - beta_1**t)
    corrected_second = second / (1.0 - beta_2**t)
    direction = corrected_first / (np.sqrt(corrected_second) + params["optimizer_epsilon"])
    return direction, np.stack([first, second])


def _saga_direction(params, slots, g, t):
    r"""SAGA: the direction is the variance-reduced gradient itself (:func:`_epoch` adds the
    mean of the stored gradients to ``g`` and keeps the per-row memory)."""
    return g, slots


_DIRECTIONS = {
    "momentum": _momentum_direction,
    "adagrad": _adagrad_direction,
    "rmsprop": _rmsprop_direction,
    "adam": _adam_direction,
    "adamw": _adam_direction,
    "saga": _saga_direction,
}


def optimizer_parameters(**given) -> dict:
    """The optimizer rules' parameters: ``given`` over the defaults of
    :data:`fastgd.options.OPTIMIZER_DEFAULTS`."""
    unknown = set(given) - set(OPTIMIZER_DEFAULTS)
    if unknown:
        raise ValueError(
            f"unknown optimizer parameter(s) {sorted(unknown)}; allowed: "
            f"{sorted(OPTIMIZER_DEFAULTS)}."
        )
    return {**OPTIMIZER_DEFAULTS, **given}


def start_rule_state(rule: str, n_features: int, n_rows: int) -> dict:
    """The zero state of the update rule ``rule``: ``slots`` of shape
    ``(UpdateRule.slots, n_features + 1)`` (the last column: the intercept's) and
    ``row_memory`` (SAGA: one stored derivative per row, else empty)."""
    row = update_rule_by_name(rule)
    return {
        "slots": np.zeros((row.slots, n_features + 1)),
        "row_memory": np.zeros(n_rows if row.row_memory else 0),
    }


def optimizer_step(rule: str, w, b: float, g, g_b: float, *, eta, l1, l2, t, slots, params,
                   fit_intercept=True, present=None):  # fmt: skip
    r"""One step of an optimizer rule from the data gradient :math:`(g, g_b)`.

    With :math:`u = (w, b)` and the gradient :math:`\gamma = (g + \lambda_2 w,\ g_b)`
    (AdamW: :math:`(g, g_b)`), the rule's direction :math:`\delta(\gamma)` (the ``_*_direction``
    functions above, which also update the slots):

    .. math::

        w &\leftarrow \operatorname{prox}_{\eta\lambda_1}\bigl(w\,a - \eta\,\delta_w\bigr),
        \qquad a = 1 - \eta\lambda_2 \ \text{(AdamW)}, \ 1 \ \text{(the others)}, \\
        b &\leftarrow b - \eta\,\delta_b \ \text{(if fit\_intercept; else } b \text{ and its
        slots stay)}.

    ``present`` (a boolean mask over the weights, for CSR rows): the lazy variant of the
    CSR kernels (as torch's ``SparseAdam``): only the present coordinates (and the
    intercept) take the step; the others keep their weights and slots.

    Returns ``(w, b, slots)``, new arrays.
    """
    w = np.asarray(w, dtype=np.float64)
    decoupled = rule == "adamw"
    gradient = np.append(np.asarray(g, dtype=np.float64) + (0.0 if decoupled else l2) * w, g_b)
    slots = np.asarray(slots, dtype=np.float64)
    direction, new_slots = _DIRECTIONS[rule](params, slots, gradient, t)
    if not fit_intercept:
        direction[-1] = 0.0
        new_slots = np.concatenate([new_slots[:, :-1], slots[:, -1:]], axis=1)
    decay = 1.0 - eta * l2 if decoupled else 1.0
    v = w * decay - eta * direction[:-1]
    shrunk = np.maximum(np.abs(v) - eta * l1, 0.0)
    w_new = np.where(shrunk > 0.0, np.sign(v) * shrunk, 0.0)
    if present is not None:
        w_new = np.where(present, w_new, w)
        new_slots = np.where(np.append(present, True), new_slots, slots)
    return w_new, float(b - eta * direction[-1]), new_slots


def minibatch_epoch(X, y, w, b: float, order, batch_size: int, **options) -> tuple:
    r"""One mini-batch epoch: a step per batch of consecutive entries of ``order``.

    The batches are ``order[k*B:(k+1)*B]`` (the last may be shorter; ``B >= n`` gives one
    batch). For each batch :math:`I` of :math:`m` rows, in turn:

    .. math::

        \eta &= \text{learning\_rate}(t), \qquad
        d_i = s_i\, L'(x_i \cdot w + b,\ y_i) \quad (i \in I,\ \text{current}\ w, b), \\
        g &= \frac1m \sum_{i \in I} d_i\, x_i, \qquad g_b = \frac1m \sum_{i \in I} d_i, \\
        w &\leftarrow \text{penalized\_step}(w, g, \eta, \lambda_1, \lambda_2), \qquad
        b \leftarrow b - \eta\, g_b \ \text{(if fit\_intercept)}, \qquad t \leftarrow t + 1.

    The epoch loss is :math:`\frac1n \sum_i s_i L_i + R(w_{\text{start}})`, each :math:`L_i`
    evaluated with the weights in force when its batch was processed (before that batch's
    step) and :math:`R` at the weights at the start of the epoch.

    Parameters
    ----------
    X, y, w, b
        As in :func:`objective`.
    order : array_like of int, shape (n,)
        The row order of this epoch: a permutation of ``0..n-1``.
    batch_size : int
        :math:`B \ge 1`.
    loss, epsilon, sample_weight, l1, l2 : keyword-only
        As in :func:`objective` (``loss`` required).
    schedule, eta0, power_t, alpha, optimal_init : keyword-only
        As in :func:`learning_rate` (default ``"constant"``, 0.01, 0.25, 1e-4, None).
    t : float, default=1.0
        Step counter at the first batch.
    fit_intercept : bool, default=True
        If False the intercept is never updated.
    average : (avg_w, avg_b, average_start) or None
        Averaged SGD: the running means of the weights and intercept so far. After each
        step numbered :math:`t \ge` ``average_start`` (counting from 1, before the
        increment), with :math:`k = t - \text{average\_start} + 1`:
        :math:`\bar w \leftarrow \bar w + (w - \bar w)/k`, and the same for :math:`b`.
    update_rule : str, optional
        An optimizer rule of :data:`fastgd.options.UPDATE_RULES` (``momentum``, ``adagrad``,
        ``rmsprop``, ``adam``, ``adamw``, ``saga``): each step is then
        :func:`optimizer_step` from :math:`(g, g_b)`. SAGA replaces each :math:`d_i` by
        :math:`d_i - \alpha_i` and adds the mean :math:`\bar g` of the stored gradients
        (``slots[0]``) to :math:`(g, g_b)`, then :math:`\bar g \leftarrow \bar g +
        \frac1n \sum_I (d_i - \alpha_i)(x_i, 1)` (its intercept entry only when
        ``fit_intercept``) and :math:`\alpha_i \leftarrow d_i`.
    rule_state : dict, optional
        The rule's state (:func:`start_rule_state`, the default: zeros).
    optimizer : dict, optional
        The rule's parameters (:func:`optimizer_parameters`, the default).
    lazy : bool, default=False
        The CSR kernels' lazy variant of the rule: a step moves only the weights (and
        slots) of the columns its rows hold non-zeros in (see :func:`optimizer_step`'s
        ``present``). Ignored by SAGA, whose CSR kernels catch the skipped steps up just
        in time: their result is the dense rule's.
        With ``l1_method="truncated"``, the CSR kernels' truncated L1: only the columns
        the step's rows hold non-zeros in are truncated.
    intercept_decay : float, default=1.0
        The factor of the intercept's step: :math:`b \leftarrow b -
        \text{intercept\_decay}\cdot\eta\, g_b` (scikit-learn's 0.01 on sparse data).
    l1_method : {"proximal", "truncated"}, default="proximal"
        ``"truncated"``: the L1 part is scikit-learn's :func:`truncated_l1` after the data
        and L2 step (plain rules only), the running means taken after it.
    l1_memory : array of shape (d + 1,), optional
        The truncated L1's state to start from (:func:`truncated_l1`; default zeros).

    Returns
    -------
    w_new : ndarray of float64, shape (d,)
    b_new : float
    epoch_loss : float
    t_after : float
        The step counter after the epoch (``t`` plus the number of batches).
    avg_w_new, avg_b_new : ndarray of float64 and float
        Only when ``average`` is given: the running means after the epoch.
    l1_memory_new : ndarray of float64
        Last, only with ``l1_method="truncated"``: the truncated L1's state after the epoch.
    rule_state_new : dict
        Last, only under an optimizer rule: its state after the epoch.
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size={batch_size!r} must be >= 1.")
    return _epoch(X, y, w, b, order, int(batch_size), "sgd", **options)


def sgd_epoch(X, y, w, b: float, order, **options) -> tuple:
    r"""One SGD epoch: a step per row, rows taken in ``order``.

    For each row :math:`i` of ``order``, in turn:

    .. math::

        \eta &= \text{learning\_rate}(t), \qquad d_i = s_i\, L'(x_i \cdot w + b,\ y_i), \\
        w &\leftarrow \text{penalized\_step}(w, d_i x_i, \eta, \lambda_1, \lambda_2), \qquad
        b \leftarrow b - \eta\, d_i \ \text{(if fit\_intercept)}, \qquad t \leftarrow t + 1.

    This is :func:`minibatch_epoch` with ``batch_size=1``; the parameters and returns are
    its own. The schedule selects the update rule (``schedule="pa1"``/``"pa2"``: the
    passive-aggressive rules), whose data step (:func:`data_step`) replaces :math:`\eta`
    (which stays ``eta0`` for the penalty).
    """
    rule = schedule_by_name(options.get("schedule", "constant")).update_rule
    return _epoch(X, y, w, b, order, 1, rule, **options)


def _epoch(
    X,
    y,
    w,
    b: float,
    order,
    batch_size: int,
    rule: str,
    *,
    loss: str,
    epsilon: float = 0.1,
    sample_weight=None,
    l1: float = 0.0,
    l2: float = 0.0,
    schedule: str = "constant",
    eta0: float = 0.01,
    power_t: float = 0.25,
    alpha: float = 1e-4,
    optimal_init: float | None = None,
    t: float = 1.0,
    fit_intercept: bool = True,
    average: tuple | None = None,
    update_rule: str | None = None,
    rule_state: dict | None = None,
    optimizer: dict | None = None,
    lazy: bool = False,
    intercept_decay: float = 1.0,
    l1_method: str = "proximal",
    l1_memory=None,
) -> tuple:
    """The loop of :func:`minibatch_epoch` and :func:`sgd_epoch`: steps of ``batch_size``
    rows under the update rule ``rule`` (its data step sizes single-row steps only), or
    ``update_rule`` when given."""
    truncated = l1_method == "truncated"
    if truncated and update_rule is not None:
        raise ValueError("l1_method='truncated' is for the plain update rules only.")
    if truncated:
        l1_memory = np.zeros(np.shape(w)[0] + 1) if l1_memory is None else l1_memory
    X, y, w, s = _as_data(X, y, w, sample_weight)
    n = X.shape[0]
    order = _check_order(order, n)
    averaged = _start_average(average)
    penalty_at_start = penalty_value(w, l1, l2)
    b = float(b)
    t = float(t)
    weighted_loss_sum = 0.0
    if update_rule is not None and update_rule_by_name(update_rule).name in _DIRECTIONS:
        return _optimizer_epoch(
            X, y, w, b, order, batch_size, update_rule, s, loss=loss, epsilon=epsilon, l1=l1,
            l2=l2, eta_at=lambda t: learning_rate(
                schedule, t, eta0=eta0, power_t=power_t, alpha=alpha, optimal_init=optimal_init
            ), t=t, fit_intercept=fit_intercept, average=average,
            rule_state=rule_state or start_rule_state(update_rule, X.shape[1], n),
            params=optimizer_parameters(**(optimizer or {})), lazy=lazy,
        )  # fmt: skip
    for start in range(0, n, batch_size):
        rows = order[start : start + batch_size]
        X_batch = X[rows]
        eta = learning_rate(
            schedule, t, eta0=eta0, power_t=power_t, alpha=alpha, optimal_init=optimal_init
        )
        value, derivative = loss_and_derivative(loss, X_batch @ w + b, y[rows], epsilon)
        weighted = s[rows] * derivative
        weighted_loss_sum += float(np.dot(s[rows], value))
        m = rows.shape[0]
        step = data_step(rule, eta, float(value[0]), X_batch[0], eta0) if m == 1 else eta
        # w·max(0, 1 − η·l2) − step·g, then the L1 prox with threshold η·l1 (or the
        # truncated L1 on the batch's columns: all, or those it holds with ``lazy``).
        w = apply_update(rule, w, X_batch.T @ weighted / m, step, eta, 0.0 if truncated else l1,
                         l2)  # fmt: skip
        if truncated and l1 > 0.0:
            held = np.flatnonzero(np.any(X_batch != 0.0, axis=0)) if lazy else None
            w, l1_memory = truncated_l1(w, l1_memory, eta * l1, held)
        if fit_intercept:
            b = b - intercept_decay * (step * float(np.sum(weighted)) / m)
        if average is not None:
            averaged = _average_step(averaged, w, b, t)
        t += 1.0
    result = (w, b, weighted_loss_sum / n + penalty_at_start, t)
    if average is not None:
        result = (*result, averaged[0], averaged[1])
    return (*result, l1_memory) if truncated else result


# ---------------------------------------------------------------------------------------------
# A plain driver.
# ---------------------------------------------------------------------------------------------


def _optimizer_epoch(X, y, w, b, order, batch_size, rule, s, *, loss, epsilon, l1, l2, eta_at,
                     t, fit_intercept, average, rule_state, params, lazy):  # fmt: skip
    """:func:`minibatch_epoch` under an optimizer rule (see its ``update_rule``)."""
    n, d = X.shape
    slots = np.array(rule_state["slots"], dtype=np.float64)
    memory = np.array(rule_state["row_memory"], dtype=np.float64)
    averaged = _start_average(average)
    penalty_at_start = penalty_value(w, l1, l2)
    weighted_loss_sum = 0.0
    for start in range(0, n, batch_size):
        rows = order[start : start + batch_size]
        X_batch = X[rows]
        m = rows.shape[0]
        eta = eta_at(t)
        value, derivative = loss_and_derivative(loss, X_batch @ w + b, y[rows], epsilon)
        weighted = s[rows] * derivative
        weighted_loss_sum += float(np.dot(s[rows], value))
        if rule == "saga":
            change = weighted - memory[rows]
            memory[rows] = weighted
            g = X_batch.T @ change / m + slots[0, :d]
            g_b = float(np.sum(change)) / m + slots[0, d]
            slots[0, :d] += X_batch.T @ change / n
            if fit_intercept:
                slots[0, d] += float(np.sum(change)) / n
        else:
            g, g_b = X_batch.T @ weighted / m, float(np.sum(weighted)) / m
        w, b, slots = optimizer_step(
            rule, w, b, g, g_b, eta=eta, l1=l1, l2=l2, t=t, slots=slots, params=params,
            fit_intercept=fit_intercept,
            present=np.any(X_batch != 0.0, axis=0) if lazy and rule != "saga" else None,
        )  # fmt: skip
        if average is not None:
            averaged = _average_step(averaged, w, b, t)
        t += 1.0
    result = (w, b, weighted_loss_sum / n + penalty_at_start, t)
    if average is not None:
        result = (*result, averaged[0], averaged[1])
    return (*result, {"slots": slots, "row_memory": memory})


def _check_fit_schedule(schedule: str) -> None:
    if schedule not in ("constant", "optimal", "invscaling"):
        schedule_by_name(schedule)  # a clear error for an unknown name
        raise ValueError(
            f"learning_rate={schedule!r} is an epoch-level schedule that needs the engine; the "
            "reference fit supports 'constant', 'optimal' and 'invscaling'."
        )


def _mean_one_weights(sample_weight, n: int):
    """User weights rescaled to mean 1 (``None`` stays ``None``: all ones)."""
    if sample_weight is None:
        return None
    user_weight = np.asarray(sample_weight, dtype=np.float64)
    if user_weight.shape != (n,) or np.any(user_weight < 0) or not user_weight.sum() > 0:
        raise ValueError("sample_weight must be n non-negative numbers with a positive sum.")
    return user_weight * n / user_weight.sum()


def fit(
    X,
    y,
    *,
    loss: str = "squared_error",
    strategy: str = "minibatch",
    batch_size: int = 256,
    schedule: str = "constant",
    eta0: float = 0.01,
    power_t: float = 0.25,
    penalty: str | None = None,
    alpha: float = 1e-4,
    l1_ratio: float = 0.15,
    epsilon: float = 0.1,
    fit_intercept: bool = True,
    sample_weight=None,
    orders: Sequence | None = None,
    max_iter: int = 5,
    coef_init=None,
    intercept_init: float | None = None,
) -> tuple[np.ndarray, float, list[float]]:
    r"""Run ``max_iter`` epochs of one strategy: the plain reference driver.

    No tolerance, early stopping, shuffling or divergence checks (those are the engine's): it
    only chains the epochs, so that the engine's result can be checked against it.

    - ``sample_weight`` :math:`w^{s}` is normalised to mean 1,
      :math:`s_i = n\, w^{s}_i / \sum_k w^{s}_k`;
    - ``alpha``, ``l1_ratio`` are split into :math:`\lambda_1, \lambda_2` by
      :meth:`fastgd.options.Penalty.split`;
    - the step counter starts at :math:`t = 1`. ``full`` makes one :func:`full_batch_step`
      per epoch at :math:`\eta(t)`, then :math:`t \leftarrow t + 1`; ``sgd`` and
      ``minibatch`` run :func:`sgd_epoch` / :func:`minibatch_epoch`, which advance :math:`t`
      once per step.

    Parameters
    ----------
    X : array_like, shape (n, d)
    y : array_like, shape (n,)
        Targets; labels in :math:`\{-1, +1\}` for classification losses.
    loss, epsilon
        As in :func:`loss_and_derivative`.
    strategy : {"full", "sgd", "minibatch"}, default="minibatch"
    batch_size : int, default=256
        Rows per step for ``minibatch``.
    schedule : {"constant", "optimal", "invscaling"}, default="constant"
        The epoch-level schedules (``adaptive``, ``auto``) need the engine and are refused.
    eta0, power_t, alpha
        As in :func:`learning_rate`; ``alpha`` is also the penalty strength.
    penalty : {None, "none", "l2", "l1", "elasticnet"}, default=None
    l1_ratio : float, default=0.15
        L1 share of ``alpha`` for ``elasticnet``.
    fit_intercept : bool, default=True
        If False the intercept stays at ``intercept_init`` (0 by default).
    sample_weight : array_like, shape (n,), optional
        Non-negative user weights with a positive sum.
    orders : sequence of array_like of int, optional
        ``orders[e]`` is the row order of epoch ``e`` (``sgd``, ``minibatch``); default
        ``arange(n)`` for every epoch. Ignored by ``full``.
    max_iter : int, default=5
        Number of epochs.
    coef_init : array_like, shape (d,), optional
        Starting weights (default zeros).
    intercept_init : float, optional
        Starting intercept (default 0).

    Returns
    -------
    coef : ndarray of float64, shape (d,)
    intercept : float
    loss_history : list of float
        Per epoch: the objective at the start of the step (``full``) or the epoch loss of
        :func:`minibatch_epoch` (``sgd``, ``minibatch``).
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D; got shape {X.shape}.")
    n, d = X.shape
    strategy = strategy_by_name(strategy).name
    _check_fit_schedule(schedule)
    l1, l2 = penalty_by_name(penalty).split(alpha, l1_ratio)
    s = _mean_one_weights(sample_weight, n)
    t0 = optimal_init(loss, alpha, epsilon) if schedule == "optimal" else None
    w = np.zeros(d) if coef_init is None else np.array(coef_init, dtype=np.float64)
    b = 0.0 if intercept_init is None else float(intercept_init)
    if orders is not None and len(orders) < max_iter:
        raise ValueError(f"orders has {len(orders)} entries; max_iter={max_iter} needs one each.")

    common = {"loss": loss, "epsilon": epsilon, "sample_weight": s, "l1": l1, "l2": l2}
    schedule_args = {
        "schedule": schedule,
        "eta0": eta0,
        "power_t": power_t,
        "alpha": alpha,
        "optimal_init": t0,
    }
    t = 1.0
    loss_history: list[float] = []
    for epoch in range(max_iter):
        if strategy == "full":
            eta = learning_rate(t=t, **schedule_args)
            w, b, epoch_loss = full_batch_step(
                X, y, w, b, eta=eta, fit_intercept=fit_intercept, **common
            )
            t += 1.0
        else:
            order = np.arange(n) if orders is None else orders[epoch]
            epoch_args = {"t": t, "fit_intercept": fit_intercept, **common, **schedule_args}
            if strategy == "sgd":
                w, b, epoch_loss, t = sgd_epoch(X, y, w, b, order, **epoch_args)
            else:
                w, b, epoch_loss, t = minibatch_epoch(X, y, w, b, order, batch_size, **epoch_args)
        loss_history.append(float(epoch_loss))
    return w, float(b), loss_history
