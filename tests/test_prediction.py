"""fastgd.prediction: the one place that turns weights into decision values, labels and
probabilities, for FitResult, the estimators, saved models and the scorers."""

from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import out_of_range_sparse, sparse_cases

import fastgd
from fastgd import options, prediction
from fastgd.io.model import as_model


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 5))
    X[rng.random(X.shape) < 0.6] = 0.0
    coef = rng.standard_normal((3, 5))
    return X, coef, np.array([0.5, -1.0, 2.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_and_csr_agree_with_numpy_in_the_dtype_of_x(problem, dtype):
    X, coef, intercept = problem
    X = X.astype(dtype)
    expected = X.astype(np.float64) @ coef.T + intercept
    for given in (X, sp.csr_matrix(X)):
        scores = prediction.decision_values(prediction.check_input(given, 5), coef, intercept)
        assert scores.dtype == dtype and scores.shape == (300, 3)
        # Sums of a few O(1) terms: rounding of X's dtype, relative or absolute near 0.
        tolerance = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(scores, expected, rtol=tolerance, atol=tolerance)


def test_check_input_names_the_widths(problem):
    with pytest.raises(ValueError, match="X has 5 features but the model was fitted with 4"):
        prediction.check_input(problem[0], 4)


def test_labels_binary_and_one_vs_rest():
    classes = np.array(["no", "yes", "maybe"])
    np.testing.assert_array_equal(
        prediction.labels(np.array([[-1.0], [0.0], [2.0]]), classes[:2]), ["no", "no", "yes"]
    )
    scores = np.array([[0.1, 0.3, -1.0], [-2.0, -3.0, -0.5]])
    np.testing.assert_array_equal(prediction.labels(scores, classes), ["yes", "maybe"])


def test_probabilities_follow_the_loss_table():
    marked = {loss.name for loss in options.LOSSES if loss.probabilities}
    assert set(prediction.PROBABILITY_LOSSES) == marked == {"log_loss", "modified_huber"}
    scores = np.array([[0.0], [3.0]])
    np.testing.assert_allclose(
        prediction.class_probabilities(scores, "log_loss")[:, 1], [0.5, 1 / (1 + np.exp(-3))]
    )
    with pytest.raises(AttributeError, match=r"loss='hinge'.*'log_loss' or 'modified_huber'"):
        prediction.class_probabilities(scores, "hinge")


def test_fit_result_model_and_estimator_predict_the_same(problem):
    X, _, _ = problem
    y = np.where(X @ np.arange(1.0, 6.0) > 0, 3, 7)
    classifier = fastgd.SGDClassifier(loss="log_loss", random_state=0, max_iter=20).fit(X, y)
    model = as_model(classifier)
    result = fastgd.fit(X.astype(np.float32), y, loss="log_loss",
                        max_iter=5, classes=np.array([3, 7]), random_state=0)  # fmt: skip
    scores = result.decision_function(sp.csr_matrix(X, dtype=np.float32))
    assert scores.dtype == np.float32
    np.testing.assert_array_equal(result.predict(X.astype(np.float32)), np.where(scores > 0, 7, 3))
    np.testing.assert_allclose(
        classifier.predict_proba(sp.csr_matrix(X)), classifier.predict_proba(X), rtol=1e-12
    )
    np.testing.assert_array_equal(model.predict(sp.csr_matrix(X)), classifier.predict(X))
    np.testing.assert_allclose(model.predict_proba(X), classifier.predict_proba(X), rtol=1e-12)


@pytest.mark.parametrize(("fmt", "container", "where"), sparse_cases())
def test_check_input_refuses_a_sparse_index_out_of_range_in_any_format(fmt, container, where):
    """Issue 10: what the kernels read is checked whatever the sparse format given."""
    X, _, patterns = out_of_range_sparse(fmt, container, where)
    with pytest.raises(ValueError) as caught:
        prediction.check_input(X, X.shape[1])
    message = str(caught.value)
    assert all(re.search(p, message) for p in patterns), message
