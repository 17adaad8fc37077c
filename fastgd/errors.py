"""Exceptions that callers may want to catch."""

from __future__ import annotations

import numpy as np

__all__ = ["DivergenceError", "WorkerLostError"]


class DivergenceError(ValueError):
    """Training diverged: the loss or the weights stopped being finite, the loss exploded,
    rose far above its best, or rose steadily.

    The best weights reached are kept on the exception, so nothing already learnt is lost.

    Attributes
    ----------
    epoch : int
        The epoch (1-based) in which divergence was detected.
    coef, intercept :
        The weights with the lowest epoch loss (the initial weights if no epoch finished).
    loss_history : numpy.ndarray
        The per-epoch losses of the epochs that finished.
    """

    def __init__(
        self,
        message: str,
        *,
        epoch: int,
        coef: np.ndarray,
        intercept: float,
        loss_history: np.ndarray,
    ):
        super().__init__(message)
        self.epoch = epoch
        self.coef = coef
        self.intercept = intercept
        self.loss_history = loss_history


class WorkerLostError(RuntimeError):
    """A distributed step (``fastgd.dask.fit``) failed on every retry because workers were
    lost. The driver's model is never half-updated: the error keeps the last good one.

    Attributes
    ----------
    step : int
        The epoch (1-based) whose step failed.
    coef, intercept :
        The model before that step (what a new run can continue from).
    """

    def __init__(self, message: str, *, step: int, coef: np.ndarray, intercept: float):
        super().__init__(message)
        self.step = step
        self.coef = coef
        self.intercept = intercept
