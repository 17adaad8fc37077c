"""Running metrics over streamed blocks: the same sums whether ``fastgd evaluate`` scores a
file block by block or :func:`fastgd.fit_csv` scores its held-out rows after each epoch.

Each accumulator takes one block at a time (``add``) and holds only a few floats, so memory
does not grow with the file; the totals are exact sums (no averaging of block averages).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["RunningAccuracy", "RunningRegression"]


class RunningRegression:
    """The mean squared error and R² of predictions, block by block.

    The target's spread is merged block by block (Chan, Golub and LeVeque's pairwise
    update), not taken as ``Σy² - (Σy)²/n``, which cancels catastrophically for a target
    with a large mean and a small spread.
    """

    def __init__(self) -> None:
        self.rows = 0
        self.squared_error = 0.0
        self._mean = 0.0
        self._spread = 0.0  # Σ (y - mean)², over every row so far

    def add(self, y: np.ndarray, predicted: np.ndarray) -> None:
        y = np.asarray(y, dtype=np.float64)
        rows = y.shape[0]
        if rows == 0:
            return
        residual = np.asarray(predicted, dtype=np.float64) - y
        self.squared_error += float(residual @ residual)
        block_mean = float(y.mean())
        block_spread = float(((y - block_mean) ** 2).sum())
        total = self.rows + rows
        delta = block_mean - self._mean
        self._mean += delta * rows / total
        self._spread += block_spread + delta**2 * self.rows * rows / total
        self.rows = total

    @property
    def mse(self) -> float:
        """The mean squared error (NaN before any row)."""
        return self.squared_error / self.rows if self.rows else math.nan

    def r2(self, constant_target: float = math.nan) -> float:
        """``1 - SSE / Σ(y - ȳ)²``; ``constant_target`` when the target does not vary (or
        no row was seen), where R² is undefined."""
        if self._spread > 0:
            return 1.0 - self.squared_error / self._spread
        return constant_target


class RunningAccuracy:
    """The fraction of predicted labels equal to the true ones, block by block."""

    def __init__(self) -> None:
        self.rows = 0
        self.hits = 0

    def add(self, y: np.ndarray, predicted: np.ndarray) -> None:
        self.hits += int(np.count_nonzero(np.asarray(predicted) == np.asarray(y)))
        self.rows += int(np.shape(y)[0])

    def accuracy(self, empty: float = math.nan) -> float:
        """``hits / rows``; ``empty`` before any row."""
        return self.hits / self.rows if self.rows else empty
