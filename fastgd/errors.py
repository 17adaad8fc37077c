"""Exceptions that callers may want to catch."""

from __future__ import annotations

import numpy as np

__all__ = ["DivergenceError"]


class DivergenceError(ValueError):
    """Training diverged: the loss or the weights stopped being finite, or exploded.

    The weights of the last epoch that ended well are kept on the exception, so nothing
    already learnt is lost.

    Attributes
    ----------
    epoch : int
        The epoch (1-based) in which divergence was detected.
    coef, intercept :
        The weights at the end of the last good epoch (the initial weights if none).
    loss_history : numpy.ndarray
        The per-epoch losses of the good epochs.
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
