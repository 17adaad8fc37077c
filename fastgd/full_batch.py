"""The full-batch optimizers the engine runs between full-batch gradients: Nesterov's
accelerated gradient with adaptive restart and L-BFGS with a strong-Wolfe line search.

Both see the objective only through ``evaluate(x) -> Point`` (the objective ``J``, its
gradient and the first bad row, from one fused pass over the data), where ``x`` holds the
weights followed by the intercept when it is fitted; the engine (``fastgd.engine``) builds
``evaluate`` over any data source and runs one iteration per epoch, so its divergence
rules, callback, stopping and loss curve apply unchanged. Plain numpy; no fastgd imports.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

__all__ = ["LBFGS", "LBFGS_FTOL", "LBFGS_HISTORY", "Nesterov", "Point"]

#: Correction pairs kept by L-BFGS.
LBFGS_HISTORY = 10
#: L-BFGS stops when ``(J_k − J_{k+1}) / max(|J_k|, |J_{k+1}|, 1)`` falls to this (scipy's
#: ``ftol`` default for ``L-BFGS-B``); ``tol`` plays scipy's ``gtol`` (on ``max |∇J|``).
LBFGS_FTOL = 2.220446049250313e-09
#: The strong Wolfe conditions' constants (sufficient decrease, curvature).
WOLFE_C1 = 1e-4
WOLFE_C2 = 0.9
LINE_SEARCH_EVALUATIONS = 25


class Point(NamedTuple):
    """The objective at one ``x``: ``value`` (J), ``gradient``, ``loss_total`` (the data
    part's raw sum ``Σ s·L``, what the engine's loss curve records) and ``bad`` (the
    first row whose loss is not finite, or -1)."""

    value: float
    gradient: np.ndarray
    loss_total: float
    bad: int = -1


class Nesterov:
    """Accelerated proximal gradient (FISTA's momentum) with adaptive restart (O'Donoghue
    & Candès 2015): the momentum restarts when the objective at the evaluated point rises
    or when it points uphill (``∇J(y)·(x_{k+1} − x_k) > 0``).

    The iterate the engine holds is the look-ahead point ``y`` (where the gradient and the
    recorded objective are taken); ``prox(x, step)`` applies the non-smooth part (L1)."""

    def __init__(self, prox: Callable[[np.ndarray, float], np.ndarray]):
        self.prox = prox
        self.restarts = 0
        self.reset()

    def reset(self) -> None:
        self.x_prev: np.ndarray | None = None
        self.theta = 1.0
        self.last_value = math.inf

    def step(self, y: np.ndarray, point: Point, eta: float) -> np.ndarray:
        """The next look-ahead point from ``point`` (the objective at ``y``)."""
        x_new = self.prox(y - eta * point.gradient, eta)
        x_prev = y if self.x_prev is None else self.x_prev
        rose = point.value > self.last_value
        uphill = float(point.gradient @ (x_new - x_prev)) > 0.0
        if rose or uphill:
            self.theta = 1.0  # restart: forget the momentum
            self.restarts += 1
        theta_next = (1.0 + math.sqrt(1.0 + 4.0 * self.theta * self.theta)) / 2.0
        beta = (self.theta - 1.0) / theta_next
        self.theta = theta_next
        self.last_value = point.value
        self.x_prev = x_new
        return x_new + beta * (x_new - x_prev)


class LBFGS:
    """Limited-memory BFGS (``LBFGS_HISTORY`` pairs, the two-loop recursion) with a line
    search meeting the strong Wolfe conditions (Nocedal & Wright, algorithms 3.5 and 3.6,
    cubic interpolation). ``converged`` turns True when ``max |∇J| ≤ gtol`` or the relative
    decrease falls to ``LBFGS_FTOL``; ``stalled`` when the line search finds no decrease."""

    def __init__(self, evaluate: Callable[[np.ndarray], Point], gtol: float):
        self.evaluate = evaluate
        self.gtol = gtol
        self.evaluations = 0
        self.converged = False
        self.stalled = False
        self.reset()

    def reset(self) -> None:
        self.pairs: list[tuple[np.ndarray, np.ndarray, float]] = []
        self.point: Point | None = None  # the objective at the current x, when known
        self.x: np.ndarray | None = None

    def _evaluate(self, x: np.ndarray) -> Point:
        self.evaluations += 1
        return self.evaluate(x)

    def start(self, x: np.ndarray) -> Point:
        """The objective at ``x`` (cached from the last line search when ``x`` is its
        point, else evaluated: the first iteration, or after the engine moved the weights)."""
        if self.x is None or self.point is None or not np.array_equal(x, self.x):
            self.reset()
            self.x, self.point = x.copy(), self._evaluate(x)
        return self.point

    def step(self) -> np.ndarray:
        """One iteration from the point of :meth:`start`; returns the new x."""
        x, point = self.x, self.point
        g = point.gradient
        if np.max(np.abs(g), initial=0.0) <= self.gtol:
            self.converged = True
            return x
        direction = self._direction(g)
        slope = float(g @ direction)
        if not slope < 0.0:  # not a descent direction (rounding): steepest descent
            self.pairs.clear()
            direction, slope = -g, -float(g @ g)
        # The first step moves x by a unit length (scipy's L-BFGS-B starts so): capped at
        # a step of 1 instead, it moves by |g| only, and where |g| < 1 (a CSR logistic
        # problem whose gradient is mostly the intercept's) the first pairs then came from
        # a poorer step: 93 iterations to a gap of 1e-8 against scipy's 75, and 62 without
        # the cap (40k × 20k, 50 non-zeros a row).
        first = 1.0 if self.pairs else 1.0 / math.sqrt(float(g @ g))
        found = _strong_wolfe(self._evaluate, x, point, direction, slope, first)
        if found is None:
            self.stalled = self.converged = True
            return x
        alpha, new = found
        s = alpha * direction
        y = new.gradient - g
        sy = float(s @ y)
        if sy > 1e-10 * math.sqrt(float(s @ s) * float(y @ y)):
            self.pairs = [*self.pairs[-(LBFGS_HISTORY - 1) :], (s, y, 1.0 / sy)]
        decrease = point.value - new.value
        scale = max(abs(point.value), abs(new.value), 1.0)
        if decrease <= LBFGS_FTOL * scale or np.max(np.abs(new.gradient)) <= self.gtol:
            self.converged = True
        self.x, self.point = x + s, new
        return self.x

    def _direction(self, g: np.ndarray) -> np.ndarray:
        """``−H·g`` by the two-loop recursion, ``H₀ = (s·y / y·y)·I``."""
        q = g.copy()
        alphas = []
        for s, y, rho in reversed(self.pairs):
            a = rho * float(s @ q)
            q -= a * y
            alphas.append(a)
        if self.pairs:
            s, y, rho = self.pairs[-1]
            q *= 1.0 / (rho * float(y @ y))
        for (s, y, rho), a in zip(self.pairs, reversed(alphas), strict=True):
            b = rho * float(y @ q)
            q += (a - b) * s
        return -q


def _usable(point: Point) -> bool:
    return point.bad < 0 and math.isfinite(point.value)


def _strong_wolfe(evaluate, x, start: Point, direction, slope: float, alpha: float):
    """A step ``alpha`` along ``direction`` meeting the strong Wolfe conditions, with the
    objective there: ``(alpha, Point)``, or None when none lowers the objective."""
    previous = (0.0, start.value, slope, start)
    for i in range(LINE_SEARCH_EVALUATIONS):
        point = evaluate(x + alpha * direction)
        if not _usable(point):  # too far: the objective overflowed; step back
            alpha = (previous[0] + alpha) / 2.0
            continue
        derivative = float(point.gradient @ direction)
        current = (alpha, point.value, derivative, point)
        if point.value > start.value + WOLFE_C1 * alpha * slope or (
            i > 0 and point.value >= previous[1]
        ):
            return _zoom(evaluate, x, start, direction, slope, previous, current)
        if abs(derivative) <= -WOLFE_C2 * slope:
            return alpha, point
        if derivative >= 0.0:
            return _zoom(evaluate, x, start, direction, slope, current, previous)
        previous, alpha = current, 2.0 * alpha
    return _best_of(start, previous)


def _zoom(evaluate, x, start: Point, direction, slope: float, low, high):
    """Algorithm 3.6: shrink ``[low, high]`` (each ``(alpha, J, J', Point)``; ``low`` the
    end with the lower objective) to a step meeting the strong Wolfe conditions."""
    for _ in range(LINE_SEARCH_EVALUATIONS):
        alpha = _cubic_minimum(low, high)
        point = evaluate(x + alpha * direction)
        if not _usable(point):
            high = (alpha, math.inf, 0.0, point)
            continue
        derivative = float(point.gradient @ direction)
        current = (alpha, point.value, derivative, point)
        if point.value > start.value + WOLFE_C1 * alpha * slope or point.value >= low[1]:
            high = current
            continue
        if abs(derivative) <= -WOLFE_C2 * slope:
            return alpha, point
        if derivative * (high[0] - low[0]) >= 0.0:
            high = low
        low = current
    return _best_of(start, low)


def _best_of(start: Point, candidate):
    """The end of a failed search when it still lowers the objective, else None."""
    alpha, value, _, point = candidate
    return (alpha, point) if alpha > 0.0 and value < start.value else None


def _cubic_minimum(low, high) -> float:
    """The minimiser of the cubic through both ends' values and slopes, kept inside the
    middle 80% of the interval (bisection where the cubic has none)."""
    a0, f0, d0, _ = low
    a1, f1, d1, _ = high
    width = a1 - a0
    if math.isfinite(f1):
        theta = d0 + d1 - 3.0 * (f0 - f1) / (a0 - a1)
        radicand = theta * theta - d0 * d1
        if radicand >= 0.0:
            root = math.copysign(math.sqrt(radicand), a1 - a0)
            denominator = d1 - d0 + 2.0 * root
            if denominator != 0.0:
                alpha = a1 - width * (d1 + root - theta) / denominator
                lo, hi = sorted((a0 + 0.1 * width, a1 - 0.1 * width))
                if math.isfinite(alpha):
                    return min(max(alpha, lo), hi)
    return a0 + 0.5 * width
