"""Scalar maths shared by every loop: losses, learning-rate schedules, the L1 threshold.

Built-in variants are dispatched by the integer codes of ``fastgd.options``; these
functions are inlined into the loops, so the branch on a loop-invariant code costs nothing
measurable and every kernel loads from Numba's cache (functions passed as arguments would
not).
"""

from __future__ import annotations

import math

from ..options import (
    DERIVATIVE_CLIP,
    SCHEDULE_INVSCALING,
    SCHEDULE_OPTIMAL,
    SCHEDULE_PA1,
    SCHEDULE_PA2,
)
from ._config import scalar

SQUARED_ERROR = 0
HUBER = 1
EPSILON_INSENSITIVE = 2
SQUARED_EPSILON_INSENSITIVE = 3
LOG_LOSS = 4
HINGE = 5
SQUARED_HINGE = 6
MODIFIED_HUBER = 7
PERCEPTRON = 8


@scalar
def loss_and_derivative(code, p, y, epsilon):
    """Return ``(L(p, y), clip(dL/dp))`` for the loss with integer ``code``."""
    if code == SQUARED_ERROR:
        r = p - y
        value = 0.5 * r * r
        deriv = r
    elif code == HUBER:
        r = p - y
        if abs(r) <= epsilon:
            value = 0.5 * r * r
            deriv = r
        else:
            value = epsilon * abs(r) - 0.5 * epsilon * epsilon
            deriv = epsilon if r > 0 else -epsilon
    elif code == EPSILON_INSENSITIVE:
        r = y - p
        value = max(abs(r) - epsilon, 0.0)
        if r > epsilon:
            deriv = -1.0
        elif -r > epsilon:
            deriv = 1.0
        else:
            deriv = 0.0
    elif code == SQUARED_EPSILON_INSENSITIVE:
        r = y - p
        excess = max(abs(r) - epsilon, 0.0)
        value = excess * excess
        if r > epsilon:
            deriv = -2.0 * (r - epsilon)
        elif -r > epsilon:
            deriv = 2.0 * (-r - epsilon)
        else:
            deriv = 0.0
    elif code == LOG_LOSS:
        z = p * y
        # exp(-|z|) never overflows: log(1 + e^-z) = log1p(e^-|z|) + max(-z, 0).
        e = math.exp(-abs(z))
        value = math.log1p(e) + max(-z, 0.0)
        if z >= 0.0:
            deriv = -y * e / (1.0 + e)
        else:
            deriv = -y / (1.0 + e)
    elif code == HINGE:
        z = p * y
        value = max(1.0 - z, 0.0)
        deriv = -y if z <= 1.0 else 0.0
    elif code == SQUARED_HINGE:
        z = p * y
        margin = max(1.0 - z, 0.0)
        value = margin * margin
        deriv = -2.0 * y * margin
    elif code == MODIFIED_HUBER:
        z = p * y
        if z >= 1.0:
            value = 0.0
            deriv = 0.0
        elif z >= -1.0:
            value = (1.0 - z) * (1.0 - z)
            deriv = -2.0 * y * (1.0 - z)
        else:
            value = -4.0 * z
            deriv = -4.0 * y
    else:  # PERCEPTRON
        z = p * y
        value = max(-z, 0.0)
        deriv = -y if z <= 0.0 else 0.0
    if deriv > DERIVATIVE_CLIP:
        deriv = DERIVATIVE_CLIP
    elif deriv < -DERIVATIVE_CLIP:
        deriv = -DERIVATIVE_CLIP
    return value, deriv


@scalar
def learning_rate(code, t, eta0, power_t, alpha, optimal_init):
    """Step size at step ``t`` (``t`` ≥ 1) for the kernel schedule ``code`` (for the
    passive-aggressive rules: ``eta0``, the size of the penalty's decay; their data step
    comes from :func:`passive_aggressive_step`)."""
    if code == SCHEDULE_OPTIMAL:
        return 1.0 / (alpha * (optimal_init + t - 1.0))
    if code == SCHEDULE_INVSCALING:
        return eta0 / t**power_t
    return eta0


@scalar
def is_passive_aggressive(code):
    return code == SCHEDULE_PA1 or code == SCHEDULE_PA2


@scalar
def passive_aggressive_step(code, loss_value, squared_norm, eta0):
    """The data step of a passive-aggressive rule for a row with loss ``loss_value`` (before
    sample weights) and ``‖x‖² = squared_norm``: PA-I ``min(eta0, L/‖x‖²)`` (0 for a zero
    row), PA-II ``L/(‖x‖² + 1/(2·eta0))``."""
    if code == SCHEDULE_PA1:
        if squared_norm <= 0.0:
            return 0.0
        return min(eta0, loss_value / squared_norm)
    return loss_value / (squared_norm + 0.5 / eta0)


#: The largest finite float64; ``abs(x) <= FLOAT_MAX`` is false exactly for NaN and ±inf.
FLOAT_MAX = 1.7976931348623157e308


@scalar
def is_finite(x):
    """Whether ``x`` is finite, robust to the kernels' fastmath flags.

    ``math.isfinite`` lowers to a test on ``x - x``, which LLVM may fold to 0 under
    ``reassoc`` + ``nsz`` when ``x`` is a loop reduction, so the check vanished (found by a
    property test). An ordered comparison cannot be folded without ``nnan``/``ninf``,
    which the kernels never set.
    """
    return abs(x) <= FLOAT_MAX


@scalar
def soft_threshold(value, threshold):
    """``sign(v)·max(|v| − threshold, 0)``: the proximal step of the L1 penalty."""
    if value > threshold:
        return value - threshold
    if value < -threshold:
        return value + threshold
    return value - value  # zero of value's own type
