"""The learning-rate range test's core, shared by ``fastgd.find_learning_rate`` (the
playground) and the engine's ``learning_rate="auto"`` for the adaptive update rules.

A range test runs short constant-step fits at geometrically growing rates from the same
start and measures the objective after each; the first rate whose run *blows up* (diverges,
ends above the starting objective, or above ``BLOW_UP_FACTOR`` times the lowest objective
so far) ends the test, and the suggestion is the largest rate before it divided by
``SUGGESTION_DIVISOR``. What a "short fit" is (the rows, the epochs, the strategy) is the
caller's: this module only walks the grid and applies the rule, so it imports nothing of
the engine (which imports it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .errors import DivergenceError

__all__ = ["BLOW_UP_FACTOR", "SUGGESTION_DIVISOR", "RangeTest", "rate_grid", "run_range_test"]

#: The suggestion is the largest rate before the loss blew up divided by this. For squared
#: error with full batches, steps beyond 2/L (L: the largest curvature) blow up, so the
#: suggestion lands just below ``auto``'s 1/L, which is also half the stable limit.
SUGGESTION_DIVISOR = 2.0
#: A rate has *blown up* when its run diverges, ends above the starting objective, or ends
#: above this many times the lowest objective of the smaller rates (the classic range test
#: stops at 4 times; with SGD the objective climbs gradually from its noise floor, and 2
#: keeps the edge before that climb: measured, sgd's suggestion moved from 1.0–5.8 to
#: 0.4–4.3 times ``auto``'s step on the test problems; full batch's is unchanged).
BLOW_UP_FACTOR = 2.0


@dataclass(frozen=True)
class RangeTest:
    """The rates tried (growing; the last blew up when ``blew_up``) and the objective after
    each (``inf`` where the run diverged)."""

    rates: np.ndarray
    losses: np.ndarray
    blew_up: bool

    @property
    def edge_rate(self) -> float:
        """The largest rate before the first that blew up (the last rate when none did)."""
        return float(self.rates[-2] if self.blew_up else self.rates[-1])

    @property
    def suggestion(self) -> float:
        return self.edge_rate / SUGGESTION_DIVISOR

    @property
    def lowest_rate(self) -> float:
        """The rate that reached the lowest objective."""
        return float(self.rates[int(np.argmin(self.losses))])


def rate_grid(min_rate: float, max_rate: float, rates_per_decade: int) -> np.ndarray:
    """Exactly ``rates_per_decade`` rates per factor 10 from ``min_rate``, up to ``max_rate``
    (at least two)."""
    count = max(2, math.floor(rates_per_decade * math.log10(max_rate / min_rate) + 1e-9) + 1)
    return min_rate * 10.0 ** (np.arange(count) / rates_per_decade)


def run_range_test(
    objective_after: Callable[[float], float],
    grid: np.ndarray,
    start_loss: float,
    patience: int | None = None,
) -> RangeTest:
    """Walk ``grid`` upwards: ``objective_after(rate)`` runs the short fit at ``rate`` and
    returns the objective it ends at (raising ``DivergenceError`` counts as ``inf``); stop
    at the first rate that blows up, or (``patience``) after that many rates in a row
    without a new lowest objective (then ``blew_up`` is False). Why a patience: some rules
    never blow up (AdaGrad's steps shrink as its squared gradients add up), and a caller
    that wants the rate of the lowest objective need not walk the whole grid past it."""
    rates: list[float] = []
    losses: list[float] = []
    blew_up = False
    since_lowest = 0
    for rate in grid:
        try:
            value = float(objective_after(float(rate)))
        except DivergenceError:
            value = math.inf
        if not math.isfinite(value):
            value = math.inf
        rates.append(float(rate))
        losses.append(value)
        if value > min(start_loss, BLOW_UP_FACTOR * min(losses)):
            blew_up = True
            break
        since_lowest = 0 if value <= min(losses) else since_lowest + 1
        if patience is not None and since_lowest >= patience:
            break
    return RangeTest(np.array(rates), np.array(losses), blew_up)
