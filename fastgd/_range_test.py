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
import scipy.sparse

from .errors import DivergenceError

__all__ = [
    "BLOW_UP_FACTOR",
    "SUGGESTION_DIVISOR",
    "RangeTest",
    "auto_test_epochs",
    "auto_test_grid",
    "rate_grid",
    "run_range_test",
]

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


# ---------------------------------------------------------------------------------------------
# The policy of ``learning_rate="auto"``'s range test for the adaptive rules (the engine's for
# one output, ``fastgd.multi``'s for k): here, so that both read it without importing each other.
# ---------------------------------------------------------------------------------------------

#: The range test of the adaptive rules' ``auto``: rows of the sample it trains on (the
#: playground finder's default), epochs per rate (the finder's for sgd/minibatch), the
#: grid's density, and its span around the weight scale ``W`` (:func:`auto_test_grid`).
AUTO_RANGE_TEST_ROWS = 4096
AUTO_RANGE_TEST_EPOCHS = 2
AUTO_RANGE_TEST_RATES_PER_DECADE = 4
AUTO_RANGE_TEST_SPAN = (1e-4, 1e4)
#: ... but at least this many steps per rate: 2 epochs of 4096 rows are only 32 steps of
#: 256 rows, and Adam's first steps move every coordinate by about the step, so the
#: largest rates overshoot there and settle later. Measured (unscaled features, adam,
#: minibatch): 16 steps chose 0.0027, a gap 5 times the best constant step's (0.1); 256
#: steps chose 0.3, a gap half of it. The test's cost: see ``engine.range_test_step``.
AUTO_RANGE_TEST_MIN_STEPS = 256
#: The chosen step times (test's steps / fit's steps) to this power (``engine.range_test_step``).
AUTO_RANGE_TEST_HORIZON_POWER = 0.5


def auto_test_epochs(plan, tested_rows: int, rows: int) -> int:
    """Epochs of each run of the range test: ``AUTO_RANGE_TEST_EPOCHS``, or enough for
    ``AUTO_RANGE_TEST_MIN_STEPS`` steps (never more steps than the fit itself takes)."""
    steps_per_epoch = math.ceil(tested_rows / min(rows, tested_rows))
    fit_steps = plan.max_iter * math.ceil(plan.source.n_rows / rows)
    wanted = min(AUTO_RANGE_TEST_MIN_STEPS, fit_steps)
    return max(AUTO_RANGE_TEST_EPOCHS, math.ceil(wanted / steps_per_epoch))


def auto_test_grid(tested, classification: bool, fit_intercept: bool):
    """The rates of the adaptive rules' range test: ``AUTO_RANGE_TEST_SPAN`` times the weight
    scale ``W = T / √(mean s·‖x̃‖²)``, ``T`` the targets' root mean square (1 for
    classification: margins of order 1). ``W`` is the size of the weights that fit the
    targets with features of the sample's scale, the distance an adaptive rule must move
    each coordinate by steps of about its rate; the test stops at the first rate that blows
    up, so the span's top is rarely reached."""
    X, weights = tested.X, tested.sample_weight
    if scipy.sparse.issparse(X):
        norms = np.asarray(X.multiply(X).sum(axis=1), dtype=np.float64).ravel()
    else:
        norms = np.einsum("ij,ij->i", X, X, dtype=np.float64)
    norms += 1.0 if fit_intercept else 0.0
    mean_norm = float((weights @ norms) if weights.shape[0] else norms.sum()) / X.shape[0]
    y = tested.y.astype(np.float64)
    target = 1.0 if classification else math.sqrt(float(y @ y) / y.shape[0])
    scale = target / math.sqrt(mean_norm) if mean_norm > 0.0 else target
    if not (math.isfinite(scale) and scale > 0.0):  # all-zero targets: any scale will do
        scale = 1.0
    low, high = AUTO_RANGE_TEST_SPAN
    return rate_grid(low * scale, high * scale, AUTO_RANGE_TEST_RATES_PER_DECADE)
