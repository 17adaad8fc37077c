"""Prediction for every linear model fastgd makes: ``X·w + b``, labels and probabilities.

One place for what ``FitResult``, the scikit-learn estimators, saved models (``Model``) and
the early-stopping scorers compute from weights:

- :func:`check_input`: X as the kernels read it (dense C-contiguous or CSR, float32 or
  float64), its width checked against the model's;
- :func:`decision_values`: ``X·coefᵀ + intercept`` for one or several outputs, in X's
  dtype (float32 stays float32): one parallel pass over X per output (the ``predict``
  kernel for dense rows, ``predict_csr`` for CSR);
- :func:`labels`: decision values to class labels (positive when > 0; one-vs-rest: the
  largest);
- :func:`class_probabilities`: for the losses whose row of ``options.LOSSES`` says
  ``probabilities``.

It imports only numpy, the options table, validation and the kernels: no module that
trains or draws.
"""

from __future__ import annotations

import numpy as np

from . import options
from ._kernels.epochs import predict as _predict_dense
from ._validation import check_csr, check_X, is_sparse

__all__ = [
    "PROBABILITY_LOSSES",
    "check_input",
    "check_probabilities",
    "class_probabilities",
    "decision_values",
    "labels",
    "predict_into",
]

#: The losses whose classifiers give class probabilities (their ``options.LOSSES`` row).
PROBABILITY_LOSSES = tuple(loss.name for loss in options.LOSSES if loss.probabilities)


def check_input(X, n_features: int):
    """X as the kernels read it (dense C-contiguous or CSR, float32/float64, finite), with
    ``n_features`` columns."""
    X = check_csr(X) if is_sparse(X) else check_X(X)
    if X.shape[1] != n_features:
        raise ValueError(f"X has {X.shape[1]} features but the model was fitted with {n_features}.")
    return X


def predict_into(X, coef: np.ndarray, intercept: float, out: np.ndarray) -> None:
    """``out = X·coef + intercept`` for checked X (dense or CSR), one parallel pass; ``coef``
    is cast to X's dtype (no copy when it has it)."""
    coef = np.ascontiguousarray(coef, dtype=X.dtype)
    if is_sparse(X):
        # Loaded on first sparse use: dense-only programs never load the sparse kernels.
        from ._kernels.sparse import predict_csr

        predict_csr(X.data, X.indices, X.indptr, coef, float(intercept), out)
    else:
        _predict_dense(X, coef, float(intercept), out)


def decision_values(X, coef, intercept) -> np.ndarray:
    """``X·coefᵀ + intercept`` of shape (n, k) in X's dtype, for checked X (see
    :func:`check_input`), ``coef`` of shape (d,) or (k, d) and ``intercept`` a number or
    of shape (k,)."""
    rows = np.atleast_2d(coef)
    intercepts = np.atleast_1d(np.asarray(intercept, dtype=np.float64)).reshape(-1)
    out = np.empty((rows.shape[0], X.shape[0]), dtype=X.dtype)
    for i in range(rows.shape[0]):  # one pass over X per output
        predict_into(X, rows[i], intercepts[i], out[i])
    return out.T


def labels(scores: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The labels for decision values: shape (n,) or (n, 1) picks ``classes[1]`` where the
    value is positive, else ``classes[0]``; shape (n, k) (one-vs-rest) the class with the
    largest value."""
    scores = np.asarray(scores)
    if scores.ndim == 2 and scores.shape[1] == 1:
        scores = scores[:, 0]
    if scores.ndim == 1:
        return classes[(scores > 0).astype(np.intp)]
    return classes[scores.argmax(axis=1)]


def check_probabilities(loss: str, advice: str) -> None:
    """Raise AttributeError (what scikit-learn's ``available_if`` expects) unless ``loss``
    gives probabilities; ``advice`` ends the message (what to do instead)."""
    if loss not in PROBABILITY_LOSSES:
        raise AttributeError(f"probability estimates are not available for loss={loss!r}; {advice}")


def class_probabilities(scores: np.ndarray, loss: str) -> np.ndarray:
    """Class probabilities from decision values of shape (n, 1) (binary) or (n, k)
    (one-vs-rest): the logistic function for ``log_loss``, ``(clip(d, -1, 1) + 1) / 2`` for
    ``modified_huber`` (scikit-learn's formulas); one-vs-rest values are normalised to sum
    to 1 (uniform where every problem says "not me")."""
    check_probabilities(loss, f"they need loss={' or '.join(map(repr, PROBABILITY_LOSSES))}.")
    scores = np.asarray(scores, dtype=np.float64)
    if loss == "log_loss":
        with np.errstate(over="ignore"):
            positive = 1.0 / (1.0 + np.exp(-scores))
    else:
        positive = (np.clip(scores, -1.0, 1.0) + 1.0) / 2.0
    if positive.shape[1] == 1:
        return np.hstack([1.0 - positive, positive])
    total = positive.sum(axis=1, keepdims=True)
    empty = total[:, 0] == 0
    if empty.any():
        positive[empty] = 1.0
        total[empty] = positive.shape[1]
    return positive / total
