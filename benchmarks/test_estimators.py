"""The drop-in estimators against scikit-learn's, side by side in one run (issue 3).

Every case times a whole ``fit(X, y)`` with ``max_iter=5, tol=None`` (input checks
included, both sides) and reports the training objective each model reached, computed the
same way for both (``fastgd.reference.objective``: mean loss + penalty). Cases:

- dense n × 100 (the suite's regression data): ``SGDRegressor`` (``squared_error``),
  ``SGDClassifier`` binary with ``log_loss`` and with ``hinge``; a 10-class problem on n/5
  rows with ``n_jobs=2``;
- sparse CSR n × 100,000 with 50 non-zeros per row: ``SGDRegressor``;
- for each: fastgd with scikit-learn's defaults (per-sample SGD, same loss and schedule),
  the same with ``shuffle="block"``, and mini-batch gradient descent
  (``strategy="minibatch", learning_rate="auto", shuffle="block", average=True``).

The first fastgd fit of each case (the warm-up round) compiles what it needs; compile time
is reported by ``test_compile.py``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import fastgd
from fastgd import reference

EPOCHS = 5
SPARSE_FEATURES = 100_000
SPARSE_NONZEROS = 50
MULTICLASS = 10


def _objective(model, X, y, loss: str) -> float:
    """The training objective of a fitted binary/regression model (penalty included)."""
    coef = np.asarray(model.coef_, dtype=np.float64).reshape(-1)
    intercept = float(np.asarray(model.intercept_).reshape(-1)[0])
    if hasattr(model, "classes_"):
        y = np.where(y == model.classes_[1], 1.0, -1.0)
    l1, l2 = fastgd.options.penalty_by_name(model.penalty).split(model.alpha, model.l1_ratio)
    scores = np.asarray(X @ coef).reshape(-1) + intercept
    value, _ = reference.loss_and_derivative(loss, scores, np.asarray(y, dtype=np.float64))
    return float(value.mean()) + reference.penalty_value(coef, l1, l2)


def _fit_quietly(model, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter=5 with tol=None is the point
        model.fit(X, y)
    return model


@pytest.fixture(scope="module")
def binary_labels(regression_data):
    _, y = regression_data.get("float64")
    return np.where(y > np.median(y), 1, 0)


@pytest.fixture(scope="module")
def multiclass_data(regression_data, rows):
    X, _ = regression_data.get("float64")
    m = max(1000, rows // 5)
    rng = np.random.default_rng(1)
    X = X[:m]
    scores = X @ rng.standard_normal((X.shape[1], MULTICLASS))
    return X, scores.argmax(axis=1)


@pytest.fixture(scope="module")
def sparse_data(rows):
    sparse = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(2)
    indptr = np.arange(0, (rows + 1) * SPARSE_NONZEROS, SPARSE_NONZEROS, dtype=np.int32)
    indices = rng.integers(0, SPARSE_FEATURES, size=rows * SPARSE_NONZEROS).astype(np.int32)
    data = rng.standard_normal(rows * SPARSE_NONZEROS)
    X = sparse.csr_matrix((data, indices, indptr), shape=(rows, SPARSE_FEATURES))
    X.sum_duplicates()
    coef = rng.standard_normal(SPARSE_FEATURES)
    y = X @ coef + rng.standard_normal(rows)
    return X, y


LABELS = ("sklearn", "fastgd-sgd", "fastgd-sgd-block", "fastgd-minibatch")
#: What fastgd adds, per label (on top of the shared settings).
EXTRA_SETTINGS = {
    "fastgd-sgd": {},  # scikit-learn's defaults: per-sample SGD, full shuffle, its schedule
    "fastgd-sgd-block": {"shuffle": "block"},  # the same with the cache-friendly order
    # Mini-batches of 256 with the safe step, the block order, and averaging (a constant
    # step leaves mini-batch SGD bouncing around the optimum; the average settles there).
    "fastgd-minibatch": {
        "strategy": "minibatch",
        "learning_rate": "auto",
        "shuffle": "block",
        "average": True,
    },
}


def _model(label: str, kind: str, loss: str, seed: int, **extra):
    """scikit-learn's estimator or fastgd's with the same settings plus ``EXTRA_SETTINGS``."""
    linear_model = pytest.importorskip("sklearn.linear_model")
    name = "SGDRegressor" if kind == "regressor" else "SGDClassifier"
    common = {"loss": loss, "max_iter": EPOCHS, "tol": None, "random_state": seed, **extra}
    if label == "sklearn":
        return getattr(linear_model, name)(**common)
    return getattr(fastgd, name)(**{**EXTRA_SETTINGS[label], **common})


CASES = {
    "regression": ("regressor", "squared_error", "dense n × 100"),
    "log_loss": ("classifier", "log_loss", "dense n × 100, 2 classes"),
    "hinge": ("classifier", "hinge", "dense n × 100, 2 classes"),
    "multiclass": ("classifier", "hinge", f"dense n/5 × 100, {MULTICLASS} classes, n_jobs=2"),
    "sparse": ("regressor", "squared_error", "CSR n × 100,000, 50 non-zeros per row"),
}


@pytest.mark.parametrize("label", LABELS)
@pytest.mark.parametrize("case", list(CASES))
def test_estimator_fit(benchmark, timed, results, settings, request, case, label):
    """A whole ``fit`` call, scikit-learn's or fastgd's, on the case's data."""
    kind, loss, description = CASES[case]
    extra = {}
    if case == "regression":
        X, y = request.getfixturevalue("regression_data").get("float64")
    elif case == "sparse":
        X, y = request.getfixturevalue("sparse_data")
    elif case == "multiclass":
        X, y = request.getfixturevalue("multiclass_data")
        extra = {"n_jobs": 2}
    else:
        X = request.getfixturevalue("regression_data").get("float64")[0]
        y = request.getfixturevalue("binary_labels")
    if case == "sparse" and label == "fastgd-minibatch":
        # Averaging on CSR takes the kernels' lazy bookkeeping path (10-40x slower per
        # step than the scaled path; see fastgd/_kernels/sparse.py): measured without it.
        extra["average"] = False
    model = _model(label, kind, loss, settings.seed, **extra)
    rounds = 1 if settings.benchmark_disabled else 2
    timing = timed(lambda: _fit_quietly(model, X, y), rounds=rounds)
    if case == "multiclass":
        note = f"train accuracy {model.score(X, y):.4f}"
    else:
        note = f"training objective {_objective(model, X, y, loss):.6g}"
    results.add(
        f"estimators/{case}/{label}", f"{label} {type(model).__name__}({loss}), {description}",
        timing.seconds, benchmark=benchmark, sklearn_key=f"estimators/{case}/sklearn",
        notes=f"{EPOCHS} epochs, whole fit(); {note}"
        + (f"; {({**EXTRA_SETTINGS[label], **extra})}" if EXTRA_SETTINGS.get(label) else ""),
    )  # fmt: skip
