"""Scalar maths shared by every loop: losses, learning-rate schedules, the L1 threshold.

Built-in variants are dispatched by the integer codes of ``fastgd.options`` (read from its
tables, never retyped here); these functions are inlined into the loops, so the branch on a
loop-invariant code costs nothing measurable and every kernel loads from Numba's cache
(functions passed as arguments would not). The update rules are in ``rules.py``.
"""

from __future__ import annotations

import math

from ..options import DERIVATIVE_CLIP, SCHEDULE_INVSCALING, SCHEDULE_OPTIMAL, loss_by_name
from ._config import scalar

# Loss codes, from the table (module-level ints: Numba freezes them as constants).
SQUARED_ERROR = loss_by_name("squared_error").code
HUBER = loss_by_name("huber").code
EPSILON_INSENSITIVE = loss_by_name("epsilon_insensitive").code
SQUARED_EPSILON_INSENSITIVE = loss_by_name("squared_epsilon_insensitive").code
LOG_LOSS = loss_by_name("log_loss").code
HINGE = loss_by_name("hinge").code
SQUARED_HINGE = loss_by_name("squared_hinge").code
MODIFIED_HUBER = loss_by_name("modified_huber").code
PERCEPTRON = loss_by_name("perceptron").code


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
    """Step size at step ``t`` (``t`` ≥ 1) for the kernel schedule ``code``."""
    if code == SCHEDULE_OPTIMAL:
        return 1.0 / (alpha * (optimal_init + t - 1.0))
    if code == SCHEDULE_INVSCALING:
        return eta0 / t**power_t
    return eta0


@scalar
def step_size(spec, t):
    """:func:`learning_rate` of the schedule of the kernels' ``spec`` (``records.Spec``)."""
    return learning_rate(spec.schedule, t, spec.eta0, spec.power_t, spec.alpha, spec.optimal_init)


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


@scalar
def decay_factor(eta, l2):
    """The L2 penalty's factor of a step, ``max(0, 1 − η·l2)``: clipped at 0 as
    scikit-learn's, so a huge ``η·l2`` zeroes the weights instead of flipping their sign
    and multiplying them by a large factor (which overflowed in a few steps)."""
    return max(0.0, 1.0 - eta * l2)


@scalar
def truncate_weight(w, j, l1_memory, scale):
    """The cumulative truncated gradient's L1 step (Tsuruoka et al., 2009; scikit-learn's
    ``l1penalty``) on weight ``j``, stored as ``w[j] = true weight / scale`` (``scale > 0``;
    1 for plain weights): the weight moves towards 0 by what it has not yet received of the
    running total ``u = l1_memory[-1]``, never across 0, and ``q_j = l1_memory[j]`` (the
    penalty it has received, signed) records the move. Weights that cross zero in the data
    step are so pulled back by their debt, which leaves noise features at exactly 0."""
    value = float(w[j])
    total = l1_memory[l1_memory.shape[0] - 1]
    received = l1_memory[j]
    if value > 0.0:
        w[j] = max(0.0, value - (total + received) / scale)
    elif value < 0.0:
        w[j] = min(0.0, value + (total - received) / scale)
    l1_memory[j] = received + scale * (float(w[j]) - value)
