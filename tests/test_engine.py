"""Tests of ``fastgd.fit`` (the engine) through its public API.

Optima come from outside the engine: numpy's least squares, the ridge normal equations,
Newton's method on the logistic objective, the lasso's optimality conditions, and a few
lines of hand-written steps. The rest checks the contract stated in ``fastgd.fit``'s
docstring: stopping, the callback, the loss curve, the learning-rate schedules, sample
weights, classification labels, dtypes, determinism, divergence and every input error.
"""

from __future__ import annotations

import math
import re
import types
import warnings

import numba
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import MALFORMED_CSR, malformed_csr, out_of_range_sparse, sparse_cases, tol

import fastgd
from fastgd._validation import check_X
from fastgd.engine import ADAPTIVE_DIVISOR, ADAPTIVE_MIN_ETA

# Named tolerances. Same arithmetic as a float64 reference comes from the one table in
# tests/conftest.py; the others bound how close each way of descending gets to an optimum
# (absolute, on coef and intercept).
SAME_MATHS = tol(np.float64)  # same steps, sums in another order (fastmath reassoc)
CONVERGED = 1e-8  # deterministic descent (or interpolating SGD) run to the optimum, float64
DECAYING_STEP = 2e-3  # SGD/mini-batch with invscaling on noisy data (measured ≤ 3e-4)
ADAPTIVE = 2e-2  # SGD/mini-batch with the adaptive schedule (measured ≤ 1.3e-2)
FLOAT32 = 1e-3  # float32 weights, noise-free targets
STEP_RECOVERY = {"rtol": 1e-9, "atol": 0.0}  # a step size recovered from weight differences

STRATEGIES = ["full", "sgd", "minibatch"]
BATCH = 16  # mini-batch size used throughout (n is a few hundred: many steps per epoch)


# ----------------------------------------------------------------------------- helpers


def _design(rng, n, d):
    """Features of unequal scales and non-zero means (so the intercept matters)."""
    scales = np.linspace(0.5, 2.0, d)
    return rng.standard_normal((n, d)) * scales + 0.3


def _augmented(X):
    return np.hstack([X, np.ones((X.shape[0], 1))])


def _rescaled_weights(sample_weight, n):
    if sample_weight is None:
        return np.ones(n)
    sample_weight = np.asarray(sample_weight, dtype=np.float64)
    return sample_weight * (n / sample_weight.sum())


def _objective(X, y, coef, intercept, *, loss="squared_error", sample_weight=None, l1=0.0, l2=0.0):
    """J(w, b) = (1/n) Σ s_i L(p_i, y_i) + l1‖w‖₁ + l2·½‖w‖², s rescaled to mean 1."""
    X = np.asarray(X, dtype=np.float64)
    coef = np.asarray(coef, dtype=np.float64)
    p = X @ coef + float(intercept)
    if loss == "squared_error":
        per_row = 0.5 * (p - y) ** 2
    elif loss == "log_loss":
        per_row = np.logaddexp(0.0, -y * p)  # y in {-1, +1}
    else:
        raise AssertionError(loss)
    s = _rescaled_weights(sample_weight, X.shape[0])
    return float(np.mean(s * per_row) + l1 * np.abs(coef).sum() + 0.5 * l2 * coef @ coef)


def _ridge_optimum(X, y, alpha):
    """argmin (1/n)Σ½(x·w + b − y)² + alpha·½‖w‖², intercept unpenalised."""
    n, d = X.shape
    Z = _augmented(X)
    penalty = alpha * np.diag(np.r_[np.ones(d), 0.0])
    solution = np.linalg.solve(Z.T @ Z / n + penalty, Z.T @ y / n)
    return solution[:-1], solution[-1]


def _logistic_optimum(X, y_signed, alpha):
    """Newton's method on (1/n)Σ log(1 + exp(−y·p)) + alpha·½‖w‖² (intercept unpenalised)."""
    n, d = X.shape
    Z = _augmented(X)
    mask = np.r_[np.ones(d), 0.0]
    v = np.zeros(d + 1)
    for _ in range(100):
        margin = y_signed * (Z @ v)
        sigma = 0.5 * (1.0 + np.tanh(0.5 * margin))  # 1/(1 + e^-margin), overflow-free
        grad = -(Z.T @ (y_signed * (1.0 - sigma))) / n + alpha * mask * v
        if np.abs(grad).max() < 1e-14:
            break
        hessian = (Z * (sigma * (1.0 - sigma))[:, None]).T @ Z / n + alpha * np.diag(mask)
        v -= np.linalg.solve(hessian, grad)
    assert np.abs(grad).max() < 1e-12
    return v[:-1], v[-1]


def _problem(name, seed=0, n=400, d=5):
    """Returns (X, y, coef_opt, intercept_opt, fit kwargs that define the objective)."""
    rng = np.random.default_rng(seed)
    X = _design(rng, n, d)
    w = rng.standard_normal(d)
    noise = rng.standard_normal(n)
    if name == "lstsq_exact":  # noise-free: every row is fitted exactly at the optimum
        y = X @ w + 0.7
    elif name == "lstsq_noisy":
        y = X @ w + 0.7 + 0.3 * noise
    elif name == "ridge":
        y = X @ w + 0.7 + 0.3 * noise
        coef, intercept = _ridge_optimum(X, y, 0.1)
        return X, y, coef, intercept, {"penalty": "l2", "alpha": 0.1}
    elif name == "logistic":
        labels = (X @ w + 0.5 * noise > 0.2).astype(np.int64)
        coef, intercept = _logistic_optimum(X, 2.0 * labels - 1.0, 0.05)
        return X, labels, coef, intercept, {"loss": "log_loss", "penalty": "l2", "alpha": 0.05}
    else:
        raise AssertionError(name)
    solution = np.linalg.lstsq(_augmented(X), y, rcond=None)[0]
    return X, y, solution[:-1], solution[-1], {"penalty": None}


def _record():
    """A callback that records copies of what it receives."""
    seen = {"epoch": [], "coef": [], "intercept": [], "loss": []}

    def callback(epoch, coef, intercept, loss):
        seen["epoch"].append(epoch)
        seen["coef"].append(np.array(coef, copy=True))
        seen["intercept"].append(float(intercept))
        seen["loss"].append(loss)

    return seen, callback


def _max_error(result, coef, intercept):
    return max(np.abs(result.coef - coef).max(), abs(float(result.intercept) - intercept))


def _steps_from_intercept(X, y, seen, intercept_init=0.0, coef_init=None):
    """Full-batch squared error: the step of epoch k is (b_{k-1} − b_k) / mean(residual_{k-1})
    (the intercept is never penalised, so this holds whatever the penalty)."""
    coef = np.zeros(X.shape[1]) if coef_init is None else coef_init
    intercept = intercept_init
    steps = []
    for new_coef, new_intercept in zip(seen["coef"], seen["intercept"], strict=True):
        mean_residual = np.mean(X @ coef + intercept - y)
        steps.append((intercept - new_intercept) / mean_residual)
        coef, intercept = new_coef, new_intercept
    return np.array(steps)


# ------------------------------------------------------- 1. convergence to known optima

# (problem, strategy, schedule settings, tolerance, must report converged)
CONVERGENCE_CASES = [
    ("lstsq_noisy", "full", {"learning_rate": "auto", "max_iter": 500}, CONVERGED, False),
    ("lstsq_noisy", "full", {"learning_rate": "constant", "eta0": 0.2, "max_iter": 2000},
     CONVERGED, False),
    ("lstsq_exact", "sgd", {"learning_rate": "auto", "max_iter": 300}, CONVERGED, False),
    ("lstsq_exact", "sgd", {"learning_rate": "constant", "eta0": 0.02, "max_iter": 300},
     CONVERGED, False),
    ("lstsq_exact", "minibatch", {"learning_rate": "auto", "max_iter": 300}, CONVERGED, False),
    ("lstsq_noisy", "sgd", {"learning_rate": "invscaling", "eta0": 0.05, "power_t": 0.5,
                            "max_iter": 1000}, DECAYING_STEP, False),
    ("lstsq_noisy", "minibatch", {"learning_rate": "adaptive", "eta0": 0.2, "tol": 1e-6,
                                  "max_iter": 1000}, ADAPTIVE, True),
    ("ridge", "full", {"learning_rate": "auto", "max_iter": 500}, CONVERGED, False),
    ("ridge", "sgd", {"learning_rate": "invscaling", "eta0": 0.05, "power_t": 0.5,
                      "max_iter": 1000}, DECAYING_STEP, False),
    ("ridge", "minibatch", {"learning_rate": "invscaling", "eta0": 0.3, "power_t": 0.5,
                            "max_iter": 1000}, DECAYING_STEP, False),
    ("ridge", "sgd", {"learning_rate": "adaptive", "eta0": 0.05, "tol": 1e-6,
                      "max_iter": 1000}, ADAPTIVE, True),
    ("ridge", "minibatch", {"learning_rate": "adaptive", "eta0": 0.2, "tol": 1e-6,
                            "max_iter": 1000}, ADAPTIVE, True),
    ("logistic", "full", {"learning_rate": "auto", "max_iter": 1000}, 1e-6, False),
    ("logistic", "sgd", {"learning_rate": "invscaling", "eta0": 0.2, "power_t": 0.5,
                         "max_iter": 1000}, DECAYING_STEP, False),
    ("logistic", "minibatch", {"learning_rate": "invscaling", "eta0": 0.5, "power_t": 0.5,
                               "max_iter": 1000}, DECAYING_STEP, False),
    ("logistic", "sgd", {"learning_rate": "adaptive", "eta0": 0.2, "tol": 1e-6,
                         "max_iter": 1000}, ADAPTIVE, True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("problem", "strategy", "settings", "tolerance", "must_converge"),
    CONVERGENCE_CASES,
    ids=[f"{c[0]}-{c[1]}-{c[2]['learning_rate']}" for c in CONVERGENCE_CASES],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_reaches_known_optimum(problem, strategy, settings, tolerance, must_converge, seed):
    X, y, coef, intercept, objective = _problem(problem, seed)
    settings = {"tol": None, **settings}
    result = fastgd.fit(
        X, y, strategy=strategy, batch_size=BATCH, random_state=seed, **objective, **settings
    )
    assert _max_error(result, coef, intercept) < tolerance
    if must_converge:
        assert result.converged
        assert result.n_iter < settings["max_iter"]


@pytest.mark.parametrize("penalty", ["l1", "elasticnet"])
def test_full_batch_satisfies_lasso_optimality(penalty):
    """Proximal full-batch descent ends where 0 ∈ ∇ smooth part + l1·∂‖w‖₁."""
    rng = np.random.default_rng(3)
    n, d, alpha, l1_ratio = 300, 8, 0.05, 0.6
    X = _design(rng, n, d)
    w = np.r_[2.0, -1.5, 0.02, 0.0, 1.0, -0.01, 0.0, 0.5]
    y = X @ w + 1.0 + 0.1 * rng.standard_normal(n)
    result = fastgd.fit(
        X,
        y,
        strategy="full",
        penalty=penalty,
        alpha=alpha,
        l1_ratio=l1_ratio,
        max_iter=3000,
        tol=None,
    )
    l1 = alpha if penalty == "l1" else alpha * l1_ratio
    l2 = 0.0 if penalty == "l1" else alpha * (1 - l1_ratio)
    residual = X @ result.coef + result.intercept - y
    smooth_grad = X.T @ residual / n + l2 * result.coef
    active = result.coef != 0
    assert abs(residual.mean()) < CONVERGED
    assert np.all(np.abs(smooth_grad[active] + l1 * np.sign(result.coef[active])) < CONVERGED)
    assert np.all(np.abs(smooth_grad[~active]) <= l1 + CONVERGED)
    assert (~active).any(), "alpha was chosen to zero some weights exactly"


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("target_scale", [1.0, 1e3, 3e5])
def test_target_scale_does_not_matter(strategy, target_scale):
    """Least squares is scale-equivariant; large targets (prices, counts) are ordinary data
    and must not be mistaken for divergence."""
    X, y, coef, intercept, _ = _problem("lstsq_exact", n=200, d=3)
    result = fastgd.fit(
        X,
        y * target_scale,
        strategy=strategy,
        batch_size=BATCH,
        max_iter=1000,
        tol=None,
        random_state=0,
    )
    np.testing.assert_allclose(result.coef, coef * target_scale, rtol=CONVERGED)
    np.testing.assert_allclose(result.intercept, intercept * target_scale, rtol=CONVERGED)


def test_minibatch_with_one_row_per_step_is_sgd():
    X, y, *_ = _problem("lstsq_noisy", n=200)
    common = dict(max_iter=5, tol=None, random_state=3, penalty="elasticnet", alpha=0.01)
    sgd = fastgd.fit(X, y, strategy="sgd", **common)
    batches_of_one = fastgd.fit(X, y, strategy="minibatch", batch_size=1, **common)
    assert sgd.learning_rate == batches_of_one.learning_rate
    np.testing.assert_allclose(batches_of_one.coef, sgd.coef, **SAME_MATHS)
    np.testing.assert_allclose(batches_of_one.intercept, sgd.intercept, **SAME_MATHS)
    np.testing.assert_allclose(batches_of_one.loss_history, sgd.loss_history, **SAME_MATHS)
    assert batches_of_one.t == sgd.t == 1 + 5 * 200


def test_minibatch_larger_than_n_is_full_batch():
    X, y, *_ = _problem("lstsq_noisy", n=200)
    common = dict(max_iter=5, tol=None, random_state=3, penalty="l2", alpha=0.01)
    full = fastgd.fit(X, y, strategy="full", **common)
    one_batch = fastgd.fit(X, y, strategy="minibatch", batch_size=10_000, **common)
    assert one_batch.learning_rate == full.learning_rate
    np.testing.assert_allclose(one_batch.coef, full.coef, **SAME_MATHS)
    np.testing.assert_allclose(one_batch.intercept, full.intercept, **SAME_MATHS)
    np.testing.assert_allclose(one_batch.loss_history, full.loss_history, **SAME_MATHS)


@pytest.mark.parametrize("strategy", ["sgd", "minibatch"])
@pytest.mark.parametrize("penalty", [None, "l2", "l1"])
def test_steps_match_hand_written_descent(strategy, penalty):
    """In file order (shuffle=False) the steps are the documented update rule exactly:
    w ← prox_{η·l1}(w(1 − η·l2) − η·mean(s·L'·x)), b ← b − η·mean(s·L'), and the epoch
    loss is the weighted mean of the losses met before each step plus the start penalty."""
    rng = np.random.default_rng(5)
    n, d, eta, alpha = 50, 3, 0.05, 0.1
    X = _design(rng, n, d)
    y = X @ rng.standard_normal(d) + 0.5 + 0.2 * rng.standard_normal(n)
    sample_weight = rng.uniform(0.5, 2.0, n)
    rows = 1 if strategy == "sgd" else 8  # 8 does not divide 50: a short last batch
    l1 = alpha if penalty == "l1" else 0.0
    l2 = alpha if penalty == "l2" else 0.0
    s = _rescaled_weights(sample_weight, n)
    coef, intercept, history = np.zeros(d), 0.0, []
    for _ in range(3):
        total = 0.0
        penalty_now = l1 * np.abs(coef).sum() + 0.5 * l2 * coef @ coef
        for start in range(0, n, rows):
            batch = slice(start, min(start + rows, n))
            residual = X[batch] @ coef + intercept - y[batch]
            total += np.sum(s[batch] * 0.5 * residual**2)
            deriv = s[batch] * residual
            m = len(residual)
            moved = coef * (1 - eta * l2) - eta * (deriv @ X[batch]) / m
            coef = np.sign(moved) * np.maximum(np.abs(moved) - eta * l1, 0.0)
            intercept -= eta * deriv.sum() / m
        history.append(total / n + penalty_now)
    result = fastgd.fit(
        X,
        y,
        strategy=strategy,
        batch_size=rows,
        learning_rate="constant",
        eta0=eta,
        penalty=penalty,
        alpha=alpha,
        sample_weight=sample_weight,
        shuffle=False,
        max_iter=3,
        tol=None,
    )
    np.testing.assert_allclose(result.coef, coef, **SAME_MATHS)
    np.testing.assert_allclose(result.intercept, intercept, **SAME_MATHS)
    np.testing.assert_allclose(result.loss_history, history, **SAME_MATHS)


# ------------------------------------------------ 2. "auto" is stable; fixed steps diverge


def _badly_scaled(seed, scaling, n=300, d=5):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) + 0.5
    w = rng.standard_normal(d)
    y = X @ w + 1.0 + 0.1 * rng.standard_normal(n)
    labels = (X @ w + 0.3 * rng.standard_normal(n) > np.median(X @ w)).astype(np.int64)
    scale = 1e3 if scaling == "x1e3" else np.array([1e-3, 1.0, 1e3, 1e2, 1e-2])
    return X * scale, y, labels


@pytest.mark.parametrize("scaling", ["x1e3", "mixed"])
@pytest.mark.parametrize("loss", ["squared_error", "log_loss"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_auto_never_diverges_on_badly_scaled_data(scaling, loss, strategy):
    for seed in range(4):
        X, y, labels = _badly_scaled(seed, scaling)
        target = y if loss == "squared_error" else labels
        result = fastgd.fit(
            X, target, loss=loss, strategy=strategy, batch_size=32, max_iter=50, random_state=seed
        )
        assert np.isfinite(result.coef).all() and math.isfinite(result.intercept)
        assert np.isfinite(result.loss_history).all()
        signed = y if loss == "squared_error" else 2.0 * labels - 1.0
        start = _objective(X, signed, np.zeros(X.shape[1]), 0.0, loss=loss)
        end = _objective(X, signed, result.coef, result.intercept, loss=loss)
        assert end < start, (seed, start, end)
        if strategy == "full":  # η ≤ 1/L: every full-batch step lowers the objective
            history = result.loss_history
            assert np.all(np.diff(history) <= 1e-12 * history[0]), (seed, history)


@pytest.mark.parametrize("scaling", ["x1e3", "mixed"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_fixed_step_diverges_with_a_useful_error(scaling, strategy):
    X, y, _ = _badly_scaled(0, scaling)
    coef_init = np.full(X.shape[1], 1e-6)
    seen, callback = _record()
    with pytest.raises(fastgd.DivergenceError) as caught:
        fastgd.fit(
            X,
            y,
            strategy=strategy,
            batch_size=32,
            learning_rate="constant",
            eta0=0.01,
            max_iter=50,
            random_state=0,
            coef_init=coef_init,
            intercept_init=0.25,
            callback=callback,
        )
    error = caught.value
    assert isinstance(error, ValueError)
    message = str(error)
    assert f"epoch {error.epoch}" in message
    assert "learning_rate='auto'" in message
    assert "eta0" in message
    # The last good state. For sgd/minibatch: what the callback saw after the last epoch
    # that ended well. For full batch, whose loss is the objective at the start of the
    # step: the weights that the last recorded loss was measured at (one epoch earlier).
    assert error.epoch == len(seen["epoch"]) + 1
    assert np.isfinite(error.coef).all() and math.isfinite(error.intercept)
    assert np.isfinite(error.loss_history).all()
    np.testing.assert_array_equal(error.loss_history, seen["loss"])
    good = len(seen["epoch"]) - (1 if strategy == "full" else 0)
    if good > 0:
        np.testing.assert_array_equal(error.coef, seen["coef"][good - 1])
        assert error.intercept == seen["intercept"][good - 1]
    else:
        np.testing.assert_array_equal(error.coef, coef_init)
        assert error.intercept == 0.25
    if strategy == "full" and seen["epoch"]:
        objective = _objective(X, y, error.coef, error.intercept, loss="squared_error")
        assert objective == pytest.approx(error.loss_history[-1], rel=1e-9)


# -------------------------------------------------------------- 3. dtypes and copies


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_float32_in_float32_out(strategy):
    X, y, coef, intercept, _ = _problem("lstsq_exact", n=300, d=4)
    X32 = X.astype(np.float32)
    result = fastgd.fit(
        X32, y, strategy=strategy, batch_size=BATCH, max_iter=200, tol=None, random_state=0
    )
    assert result.coef.dtype == np.float32
    assert np.asarray(result.intercept).dtype == np.float32
    assert result.decision_function(X32).dtype == np.float32
    assert _max_error(result, coef, intercept) < FLOAT32


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_check_X_does_not_copy_c_contiguous_floats(dtype):
    X = np.arange(12, dtype=dtype).reshape(4, 3)
    assert check_X(X) is X
    fortran = np.asfortranarray(X)
    converted = check_X(fortran)
    assert converted.flags.c_contiguous and converted.dtype == dtype
    np.testing.assert_array_equal(converted, X)


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (np.int64, np.float64),
        (np.int32, np.float64),
        (np.uint8, np.float64),
        (np.float16, np.float32),
    ],
)
def test_check_X_converts_other_numeric_dtypes_once(dtype, expected):
    X = np.arange(12).reshape(4, 3).astype(dtype)
    converted = check_X(X)
    assert converted.dtype == expected and converted.flags.c_contiguous
    np.testing.assert_array_equal(converted, X.astype(expected))


def test_integer_X_is_accepted_and_equals_float64():
    rng = np.random.default_rng(0)
    X_int = rng.integers(-5, 6, size=(200, 3))
    y = X_int @ np.array([0.5, -1.0, 2.0]) + 1.0
    common = dict(strategy="sgd", max_iter=10, tol=None, random_state=7)
    from_int = fastgd.fit(X_int, y, **common)
    from_float = fastgd.fit(X_int.astype(np.float64), y, **common)
    assert from_int.coef.dtype == np.float64
    np.testing.assert_array_equal(from_int.coef, from_float.coef)
    assert from_int.intercept == from_float.intercept
    assert from_int.predict(X_int[:5]).shape == (5,)


def test_fit_modifies_none_of_its_inputs():
    X, y, *_ = _problem("lstsq_noisy", n=100, d=3)
    sample_weight = np.linspace(0.5, 2.0, 100)
    coef_init = np.array([0.1, -0.2, 0.3])
    intercept_init = np.array([0.4])
    copies = [a.copy() for a in (X, y, sample_weight, coef_init, intercept_init)]
    result = fastgd.fit(
        X,
        y,
        sample_weight=sample_weight,
        coef_init=coef_init,
        intercept_init=intercept_init,
        max_iter=5,
        tol=None,
    )
    for original, copy in zip(
        (X, y, sample_weight, coef_init, intercept_init), copies, strict=True
    ):
        np.testing.assert_array_equal(original, copy)
    assert not np.shares_memory(result.coef, coef_init)


# ----------------------------------------------- 4. determinism, callback, stopping, history


@pytest.mark.parametrize("strategy", ["sgd", "minibatch"])
@pytest.mark.parametrize("shuffle", [True, "block", False])
def test_same_random_state_gives_identical_results(strategy, shuffle):
    X, y, *_ = _problem("lstsq_noisy", n=300)
    runs = [
        fastgd.fit(
            X,
            y,
            strategy=strategy,
            batch_size=BATCH,
            shuffle=shuffle,
            max_iter=5,
            tol=None,
            random_state=11,
        )
        for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0].coef, runs[1].coef)
    assert runs[0].intercept == runs[1].intercept
    np.testing.assert_array_equal(runs[0].loss_history, runs[1].loss_history)


def test_random_state_changes_the_row_order_only_when_shuffling():
    X, y, *_ = _problem("lstsq_noisy", n=300)
    common = dict(strategy="sgd", learning_rate="constant", eta0=0.01, max_iter=3, tol=None)
    shuffled = [fastgd.fit(X, y, random_state=seed, **common) for seed in (1, 2)]
    assert not np.array_equal(shuffled[0].coef, shuffled[1].coef)
    in_order = [fastgd.fit(X, y, shuffle=False, random_state=s, **common) for s in (1, 2)]
    np.testing.assert_array_equal(in_order[0].coef, in_order[1].coef)


def test_generator_and_int_seeds_agree():
    X, y, *_ = _problem("lstsq_noisy", n=300)
    common = dict(strategy="minibatch", batch_size=BATCH, max_iter=3, tol=None)
    from_int = fastgd.fit(X, y, random_state=5, **common)
    from_generator = fastgd.fit(X, y, random_state=np.random.default_rng(5), **common)
    np.testing.assert_array_equal(from_int.coef, from_generator.coef)


@pytest.mark.parametrize(("strategy", "batch_size"), [("full", 256), ("minibatch", 16384)])
def test_results_do_not_depend_on_the_number_of_threads(strategy, batch_size):
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs at least two Numba threads")
    rng = np.random.default_rng(0)
    n, d = 20_000, 8  # n·d above the engine's threshold for parallel accumulation
    X = rng.standard_normal((n, d))
    y = X @ rng.standard_normal(d) + 1.0 + 0.1 * rng.standard_normal(n)
    common = dict(strategy=strategy, batch_size=batch_size, max_iter=3, tol=None, random_state=0)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        serial = fastgd.fit(X, y, **common)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        parallel = fastgd.fit(X, y, **common)
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(serial.coef, parallel.coef)
    assert serial.intercept == parallel.intercept
    np.testing.assert_array_equal(serial.loss_history, parallel.loss_history)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_callback_sees_each_epoch(strategy):
    X, y, *_ = _problem("lstsq_noisy", n=200)
    seen = {"epoch": [], "coef": [], "intercept": [], "loss": []}
    writes = []

    def callback(epoch, coef, intercept, loss):
        seen["epoch"].append(epoch)
        seen["coef"].append(coef.copy())
        seen["intercept"].append(intercept)
        seen["loss"].append(loss)
        try:
            coef[0] = 123.0
        except ValueError:
            writes.append("refused")
        else:
            writes.append("written")

    result = fastgd.fit(
        X,
        y,
        strategy=strategy,
        batch_size=BATCH,
        max_iter=7,
        tol=None,
        random_state=0,
        callback=callback,
    )
    assert seen["epoch"] == list(range(1, 8))
    assert writes == ["refused"] * 7
    np.testing.assert_array_equal(seen["loss"], result.loss_history)
    np.testing.assert_array_equal(seen["coef"][-1], result.coef)
    assert seen["intercept"][-1] == result.intercept
    assert result.n_iter == 7 and len(result.loss_history) == 7


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_callback_returning_true_stops_the_run(strategy):
    X, y, *_ = _problem("lstsq_noisy", n=200)
    seen = []

    def stop_at_three(epoch, coef, intercept, loss):
        seen.append(epoch)
        return epoch == 3

    result = fastgd.fit(
        X, y, strategy=strategy, batch_size=BATCH, max_iter=50, tol=None, callback=stop_at_three
    )
    assert seen == [1, 2, 3]
    assert result.n_iter == 3 and len(result.loss_history) == 3
    assert result.converged is False


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_tol_stops_early_and_reports_convergence(strategy):
    X, y, *_ = _problem("lstsq_noisy", n=300)
    tol, patience = 1e-3, 3
    result = fastgd.fit(
        X,
        y,
        strategy=strategy,
        batch_size=BATCH,
        max_iter=1000,
        tol=tol,
        n_iter_no_change=patience,
        random_state=0,
    )
    assert result.converged is True
    assert result.n_iter < 1000 and len(result.loss_history) == result.n_iter
    history = result.loss_history
    # The rule: the last `patience` epochs each failed to beat the best before them by tol.
    for k in range(result.n_iter - patience, result.n_iter):
        assert history[k] > history[:k].min() - tol


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_tol_none_runs_every_epoch(strategy):
    X, y, *_ = _problem("lstsq_exact", n=100)
    result = fastgd.fit(X, y, strategy=strategy, batch_size=BATCH, max_iter=40, tol=None)
    assert result.n_iter == 40 and len(result.loss_history) == 40
    assert result.converged is False
    steps_per_epoch = {"full": 1, "sgd": 100, "minibatch": math.ceil(100 / BATCH)}[strategy]
    assert result.t == 1 + 40 * steps_per_epoch


@pytest.mark.parametrize("loss", ["squared_error", "log_loss"])
def test_full_batch_history_is_the_objective_before_each_step(loss):
    rng = np.random.default_rng(2)
    n, d = 120, 4
    X = _design(rng, n, d)
    y = X @ rng.standard_normal(d) + 0.3 * rng.standard_normal(n)
    target = y if loss == "squared_error" else (y > 0).astype(np.int64)
    signed = y if loss == "squared_error" else np.where(y > 0, 1.0, -1.0)
    sample_weight = rng.uniform(0.2, 3.0, n)
    coef_init = rng.standard_normal(d)
    alpha, l1_ratio = 0.05, 0.3
    l1, l2 = alpha * l1_ratio, alpha * (1 - l1_ratio)
    seen, callback = _record()
    result = fastgd.fit(
        X,
        target,
        loss=loss,
        strategy="full",
        penalty="elasticnet",
        alpha=alpha,
        l1_ratio=l1_ratio,
        sample_weight=sample_weight,
        coef_init=coef_init,
        intercept_init=-0.5,
        max_iter=6,
        tol=None,
        callback=callback,
    )
    starts = [(coef_init, -0.5), *zip(seen["coef"][:-1], seen["intercept"][:-1], strict=True)]
    expected = [
        _objective(X, signed, w, b, loss=loss, sample_weight=sample_weight, l1=l1, l2=l2)
        for w, b in starts
    ]
    np.testing.assert_allclose(result.loss_history, expected, **SAME_MATHS)


# -------------------------------------------------------------------- 5. classification


@pytest.mark.parametrize("labels", [(0, 1), (-1, 1), (2, 5), (0.5, 7.25)])
@pytest.mark.parametrize("loss", ["log_loss", "hinge"])
def test_two_class_labels_round_trip(labels, loss):
    rng = np.random.default_rng(4)
    X = rng.standard_normal((300, 3))
    positive = X @ np.array([2.0, -1.0, 0.5]) + 0.2 > 0
    y = np.where(positive, labels[1], labels[0])
    common = dict(loss=loss, strategy="full", max_iter=300, tol=None, random_state=0)
    result = fastgd.fit(X, y, **common)
    np.testing.assert_array_equal(result.classes, np.array(labels))
    predicted = result.predict(X)
    assert set(np.unique(predicted)) <= set(labels)
    assert np.mean(predicted == y) > 0.95
    scores = result.decision_function(X)
    np.testing.assert_array_equal(predicted == labels[1], scores > 0)
    # The larger label is the positive class whatever its encoding: same model for all.
    reference = fastgd.fit(X, positive.astype(np.int64), **common)
    np.testing.assert_allclose(result.coef, reference.coef, **SAME_MATHS)


def test_labels_survive_float32_features():
    """Labels are labels, not features: float32 X must not round them (2**24 + 1 is not a
    float32)."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((100, 2)).astype(np.float32)
    labels = np.array([2**24 + 1, 2**24 + 2])
    y = np.where(X[:, 0] > 0, labels[1], labels[0])
    result = fastgd.fit(X, y, loss="log_loss", strategy="full", max_iter=50)
    np.testing.assert_array_equal(result.classes, labels)
    assert set(np.unique(result.predict(X)).tolist()) <= set(labels.tolist())


def test_regression_has_no_classes():
    X, y, *_ = _problem("lstsq_exact", n=50)
    result = fastgd.fit(X, y, max_iter=2)
    assert result.classes is None
    np.testing.assert_array_equal(result.predict(X), result.decision_function(X))


@pytest.mark.parametrize("loss", ["log_loss", "hinge", "modified_huber"])
@pytest.mark.parametrize("y", [np.zeros(30)], ids=["one"])  # three: tests/test_multi_kernels.py
def test_classification_needs_at_least_two_classes(loss, y):
    X = np.random.default_rng(0).standard_normal((30, 2))
    count = len(np.unique(y))
    with pytest.raises(ValueError, match=re.escape(f"loss={loss!r}")) as caught:
        fastgd.fit(X, y, loss=loss)
    assert re.search(rf"\b{count}\b", str(caught.value))
    assert "two classes" in str(caught.value)


# ---------------------------------------------------------------------- 6. sample weights


@pytest.mark.parametrize("learning_rate", ["constant", "auto"])
@pytest.mark.parametrize("loss", ["squared_error", "log_loss"])
def test_integer_weights_equal_duplicated_rows(learning_rate, loss):
    rng = np.random.default_rng(8)
    X = _design(rng, 150, 4)
    y = X @ rng.standard_normal(4) + 0.2 * rng.standard_normal(150)
    target = y if loss == "squared_error" else (y > 0).astype(np.int64)
    counts = rng.integers(0, 4, 150)
    common = dict(
        loss=loss,
        strategy="full",
        learning_rate=learning_rate,
        eta0=0.1,
        penalty="l2",
        alpha=0.01,
        max_iter=40,
        tol=None,
        random_state=0,
    )
    weighted = fastgd.fit(X, target, sample_weight=counts, **common)
    duplicated = fastgd.fit(np.repeat(X, counts, axis=0), np.repeat(target, counts), **common)
    np.testing.assert_allclose(weighted.learning_rate, duplicated.learning_rate, **SAME_MATHS)
    np.testing.assert_allclose(weighted.coef, duplicated.coef, **SAME_MATHS)
    np.testing.assert_allclose(weighted.intercept, duplicated.intercept, **SAME_MATHS)
    np.testing.assert_allclose(weighted.loss_history, duplicated.loss_history, **SAME_MATHS)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_scaling_all_weights_changes_nothing(strategy):
    X, y, *_ = _problem("lstsq_noisy", n=200)
    weights = np.random.default_rng(1).uniform(0.1, 3.0, 200)
    runs = [
        fastgd.fit(
            X,
            y,
            sample_weight=weights * factor,
            strategy=strategy,
            batch_size=BATCH,
            max_iter=5,
            tol=None,
            random_state=0,
        )
        for factor in (1.0, 1000.0, 1e-3)
    ]
    for run in runs[1:]:
        np.testing.assert_allclose(run.coef, runs[0].coef, **SAME_MATHS)
        np.testing.assert_allclose(run.intercept, runs[0].intercept, **SAME_MATHS)
        np.testing.assert_allclose(run.loss_history, runs[0].loss_history, **SAME_MATHS)


@pytest.mark.parametrize("learning_rate", ["constant", "auto"])
def test_zero_weights_ignore_rows(learning_rate):
    X, y, *_ = _problem("lstsq_noisy", n=200)
    keep = np.arange(200) % 3 != 0
    X_junk, y_junk = X.copy(), y.copy()
    X_junk[~keep] *= 1e3  # dropped rows may hold anything finite
    y_junk[~keep] = -1e6
    common = dict(
        strategy="full",
        learning_rate=learning_rate,
        eta0=0.1,
        max_iter=50,
        tol=None,
        random_state=0,
    )
    weighted = fastgd.fit(X_junk, y_junk, sample_weight=keep.astype(float), **common)
    subset = fastgd.fit(X[keep], y[keep], **common)
    np.testing.assert_allclose(weighted.coef, subset.coef, **SAME_MATHS)
    np.testing.assert_allclose(weighted.intercept, subset.intercept, **SAME_MATHS)


# ---------------------------------------------------------------------- 7. input errors

_RNG = np.random.default_rng(0)
X0 = _RNG.standard_normal((10, 3))
Y0 = _RNG.standard_normal(10)


def _with(array, index, value):
    array = np.array(array, dtype=np.float64)
    array[index] = value
    return array


def _names(table):
    return [re.escape(repr(row.name)) for row in table]


# (id, arguments replacing the defaults — "X" and "y" included, exception, patterns that
#  must all appear in the message)
ERROR_CASES = [
    ("y-length", {"y": Y0[:9]}, ValueError, [r"\by\b", r"\b9\b", "10 rows"]),
    # (A 2-D y of k columns is k regression outputs: tests/test_multi_kernels.py.)
    ("y-3d", {"y": np.ones((10, 2, 2))}, ValueError, [r"\by\b", "1-D", r"\(10, 2, 2\)"]),
    ("sample_weight-length", {"sample_weight": np.ones(11)}, ValueError,
     ["sample_weight", r"\b11\b", "10 rows"]),
    ("coef_init-length", {"coef_init": np.zeros(2)}, ValueError,
     ["coef_init", r"\b2\b", r"\b3\b", "feature|column"]),
    ("X-no-rows", {"X": np.empty((0, 3)), "y": np.empty(0)}, ValueError,
     [r"\bX\b", "empty", r"\(0, 3\)"]),
    ("X-no-columns", {"X": np.empty((10, 0))}, ValueError, [r"\bX\b", "empty", r"\(10, 0\)"]),
    ("X-1d", {"X": X0[:, 0]}, ValueError, ["2-D", "1-D", re.escape("reshape(-1, 1)")]),
    ("X-3d", {"X": X0.reshape(10, 3, 1)}, ValueError, ["2-D", "3-D"]),
    ("X-nan", {"X": _with(X0, (4, 2), np.nan)}, ValueError,
     [r"\bX\b", "nan", "row 4", "column 2"]),
    ("X-inf", {"X": _with(X0, (7, 0), -np.inf)}, ValueError,
     [r"\bX\b", "inf", "row 7", "column 0"]),
    ("y-nan", {"y": _with(Y0, 3, np.nan)}, ValueError, [r"\by\b", "nan", "row 3"]),
    ("y-inf", {"y": _with(Y0, 9, np.inf)}, ValueError, [r"\by\b", "inf", "row 9"]),
    ("sample_weight-nan", {"sample_weight": _with(np.ones(10), 5, np.nan)}, ValueError,
     ["sample_weight", "row 5"]),
    ("sample_weight-negative", {"sample_weight": _with(np.ones(10), 6, -1.0)}, ValueError,
     ["sample_weight", ">= 0", "-1", "row 6"]),
    ("sample_weight-all-zero", {"sample_weight": np.zeros(10)}, ValueError,
     ["sample_weight", "zero for every row", "positive"]),
    ("coef_init-nan", {"coef_init": _with(np.zeros(3), 1, np.nan)}, ValueError,
     ["coef_init", "nan"]),
    ("intercept_init-nan", {"intercept_init": np.nan}, ValueError, ["intercept_init", "finite"]),
    ("X-strings", {"X": np.full((10, 3), "a")}, TypeError, [r"\bX\b", "real numbers"]),
    ("X-object", {"X": X0.astype(object)}, TypeError, [r"\bX\b", "real numbers", "object"]),
    ("X-complex", {"X": X0 + 1j}, TypeError, [r"\bX\b", "complex"]),
    ("y-strings", {"y": np.full(10, "a")}, TypeError, [r"\by\b", "real numbers"]),
    ("y-complex", {"y": Y0 + 1j}, TypeError, [r"\by\b", "complex"]),
    ("sample_weight-strings", {"sample_weight": np.full(10, "a")}, TypeError,
     ["sample_weight", "real numbers"]),
    ("loss-unknown", {"loss": "squared"}, ValueError,
     ["loss='squared'", *_names(fastgd.options.LOSSES)]),
    ("penalty-unknown", {"penalty": "l3"}, ValueError,
     ["penalty='l3'", *_names(fastgd.options.PENALTIES)]),
    ("learning_rate-unknown", {"learning_rate": "fast"}, ValueError,
     ["learning_rate='fast'", *_names(fastgd.options.SCHEDULES)]),
    ("strategy-unknown", {"strategy": "batch"}, ValueError,
     ["strategy='batch'", *_names(fastgd.options.STRATEGIES)]),
    ("shuffle-unknown", {"shuffle": "blocks"}, ValueError,
     ["shuffle='blocks'", "True", "False", "'block'"]),
    ("shuffle-none", {"shuffle": None}, ValueError, ["shuffle=None", "True", "False", "'block'"]),
    ("batch_size-zero", {"batch_size": 0}, ValueError, ["batch_size", ">= 1", r"\b0\b"]),
    ("batch_size-negative", {"batch_size": -4}, ValueError, ["batch_size", ">= 1", "-4"]),
    ("batch_size-float", {"batch_size": 2.5}, TypeError, ["batch_size", "integer"]),
    ("batch_size-bool", {"batch_size": True}, TypeError, ["batch_size", "integer"]),
    ("batch_size-string", {"batch_size": "8"}, TypeError, ["batch_size", "integer"]),
    ("eta0-zero", {"eta0": 0.0}, ValueError, ["eta0", "> 0"]),
    ("eta0-negative", {"eta0": -0.1}, ValueError, ["eta0", "> 0"]),
    ("eta0-nan", {"eta0": float("nan")}, ValueError, ["eta0", "finite"]),
    ("eta0-string", {"eta0": "0.1"}, TypeError, ["eta0", "real number"]),
    ("alpha-negative", {"alpha": -1e-4}, ValueError, ["alpha", ">= 0"]),
    ("l1_ratio-above", {"l1_ratio": 1.5}, ValueError, ["l1_ratio", r"\[0(\.0)?, 1(\.0)?\]"]),
    ("l1_ratio-below", {"l1_ratio": -0.1}, ValueError, ["l1_ratio", r"\[0(\.0)?, 1(\.0)?\]"]),
    ("epsilon-negative", {"epsilon": -0.1}, ValueError, ["epsilon", ">= 0"]),
    ("power_t-string", {"power_t": "half"}, TypeError, ["power_t", "real number"]),
    ("max_iter-zero", {"max_iter": 0}, ValueError, ["max_iter", ">= 1"]),
    ("max_iter-float", {"max_iter": 10.0}, TypeError, ["max_iter", "integer"]),
    ("tol-negative", {"tol": -1e-3}, ValueError, ["tol", ">= 0"]),
    ("tol-string", {"tol": "small"}, TypeError, ["tol", "real number", "None"]),
    ("n_iter_no_change-zero", {"n_iter_no_change": 0}, ValueError, ["n_iter_no_change", ">= 1"]),
    ("optimal-without-alpha", {"learning_rate": "optimal", "alpha": 0.0}, ValueError,
     ["learning_rate='optimal'", "alpha > 0"]),
    ("random_state-string", {"random_state": "seed"}, TypeError, ["random_state", "int"]),
    ("random_state-float", {"random_state": 1.5}, TypeError, ["random_state", "int"]),
    ("random_state-bool", {"random_state": True}, TypeError, ["random_state", "int"]),
    ("random_state-negative", {"random_state": -1}, ValueError, ["random_state", ">= 0"]),
    ("callback-not-callable", {"callback": 42}, TypeError, ["callback", "callable"]),
    ("fit_intercept-int", {"fit_intercept": 1}, TypeError, ["fit_intercept", "True or False"]),
    ("fit_intercept-string", {"fit_intercept": "yes"}, TypeError,
     ["fit_intercept", "True or False"]),
    ("fit_intercept-none", {"fit_intercept": None}, TypeError, ["fit_intercept", "True or False"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("arguments", "exception", "patterns"),
    [case[1:] for case in ERROR_CASES],
    ids=[case[0] for case in ERROR_CASES],
)
def test_invalid_input_is_rejected_with_a_clear_message(arguments, exception, patterns):
    arguments = dict(arguments)
    X = arguments.pop("X", X0)
    y = arguments.pop("y", Y0)
    arguments.setdefault("max_iter", 2)
    with pytest.raises(exception) as caught:
        fastgd.fit(X, y, **arguments)
    assert type(caught.value) is not fastgd.DivergenceError
    message = str(caught.value)
    missing = [p for p in patterns if not re.search(p, message)]
    assert not missing, f"{message!r} lacks {missing}"


def test_numpy_scalars_are_accepted():
    result = fastgd.fit(
        X0,
        Y0,
        batch_size=np.int32(4),
        max_iter=np.int64(3),
        eta0=np.float32(0.1),
        alpha=np.float64(1e-3),
        tol=None,
        random_state=np.int64(3),
        fit_intercept=np.bool_(True),
        shuffle=np.bool_(False),
    )
    assert result.n_iter == 3


# ---------------------------------------------------------------- 8. learning-rate schedules


def _optimal_first_step(alpha):
    typw = math.sqrt(1.0 / math.sqrt(alpha))
    derivative = -typw - 1.0  # squared error: L'(p=-typw, y=1) = p - y
    return typw / max(1.0, derivative)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"learning_rate": "constant", "eta0": 0.1}, lambda k, r: np.full(k.shape, 0.1)),
        ({"learning_rate": "auto"}, lambda k, r: np.full(k.shape, r.learning_rate)),
        ({"learning_rate": "invscaling", "eta0": 0.4, "power_t": 0.5}, lambda k, r: 0.4 / k**0.5),
        ({"learning_rate": "invscaling", "eta0": 0.4, "power_t": 0.25}, lambda k, r: 0.4 / k**0.25),
        (
            {"learning_rate": "optimal", "alpha": 16.0},
            lambda k, r: 1.0 / (16.0 * (1.0 / (16.0 * _optimal_first_step(16.0)) + k - 1)),
        ),
    ],
    ids=["constant", "auto", "invscaling-0.5", "invscaling-0.25", "optimal"],
)
def test_schedule_step_sizes(settings, expected):
    """Full batch takes one step per epoch, so the step of epoch k is the schedule at t = k."""
    rng = np.random.default_rng(6)
    X = _design(rng, 100, 3)
    y = X @ rng.standard_normal(3) + 5.0  # a large intercept keeps the mean residual large
    seen, callback = _record()
    result = fastgd.fit(X, y, strategy="full", max_iter=8, tol=None, callback=callback, **settings)
    epochs = np.arange(1, 9, dtype=np.float64)
    np.testing.assert_allclose(
        _steps_from_intercept(X, y, seen), expected(epochs, result), **STEP_RECOVERY
    )
    assert result.t == 9


@pytest.mark.parametrize("loss", ["squared_error", "log_loss"])
def test_auto_full_batch_step_is_one_over_smoothness(loss):
    """η = 1/(c·λ_max(X̃ᵀX̃/n)): half the 2/L beyond which full-batch descent diverges."""
    X, y, *_ = _problem("logistic" if loss == "log_loss" else "lstsq_noisy", n=300)
    Z = _augmented(X)
    curvature = {"squared_error": 1.0, "log_loss": 0.25}[loss]
    smoothness = curvature * np.linalg.eigvalsh(Z.T @ Z / len(Z)).max()
    result = fastgd.fit(X, y, loss=loss, strategy="full", max_iter=1)
    assert result.learning_rate * smoothness == pytest.approx(1.0, rel=1e-3)


def test_adaptive_divides_the_step_when_progress_stalls():
    """With an unreachable tol every epoch after the first counts as a stall: the step is
    divided after each n_iter_no_change stalls until it falls below the minimum, and the run
    then reports convergence."""
    rng = np.random.default_rng(6)
    X = _design(rng, 100, 3)
    y = X @ rng.standard_normal(3) + 5.0
    eta0, patience = 0.01, 2
    seen, callback = _record()
    result = fastgd.fit(
        X,
        y,
        strategy="full",
        learning_rate="adaptive",
        eta0=eta0,
        tol=1e9,
        n_iter_no_change=patience,
        max_iter=1000,
        callback=callback,
    )
    # The documented rule, simulated: epoch 1 sets the best; then `patience` stalls divide.
    expected, eta, stalls = [], eta0, 0
    for epoch in range(1, 1000):
        expected.append(eta)
        stalls += epoch > 1
        if stalls >= patience:
            if eta <= ADAPTIVE_MIN_ETA:
                break
            eta, stalls = eta / ADAPTIVE_DIVISOR, 0
    assert ADAPTIVE_DIVISOR == 5.0  # as documented in fastgd.fit
    assert result.converged is True
    assert result.n_iter == len(expected)
    assert result.learning_rate == eta0
    np.testing.assert_allclose(_steps_from_intercept(X, y, seen), expected, **STEP_RECOVERY)


def test_adaptive_beats_its_constant_step_on_noisy_sgd():
    X, y, coef, intercept, objective = _problem("ridge", seed=3)
    common = dict(strategy="sgd", eta0=0.05, max_iter=1000, random_state=0, **objective)
    adaptive = fastgd.fit(X, y, learning_rate="adaptive", tol=1e-6, **common)
    constant = fastgd.fit(X, y, learning_rate="constant", tol=None, **common)
    assert adaptive.converged is True
    assert _max_error(adaptive, coef, intercept) < _max_error(constant, coef, intercept) / 5


@pytest.mark.parametrize("learning_rate", ["optimal", "invscaling"])
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("loss", ["hinge", "log_loss"])
def test_optimal_and_invscaling_classify(learning_rate, strategy, loss):
    rng = np.random.default_rng(9)
    X = rng.standard_normal((300, 4))
    y = (X @ np.array([1.0, -2.0, 0.5, 1.5]) > 0.3).astype(np.int64)
    result = fastgd.fit(
        X,
        y,
        loss=loss,
        strategy=strategy,
        batch_size=BATCH,
        learning_rate=learning_rate,
        eta0=0.5,
        alpha=1e-3,
        penalty="l2",
        max_iter=100,
        random_state=0,
    )
    assert np.isfinite(result.coef).all()
    assert np.mean(result.predict(X) == y) > 0.9


# ------------------------------------------------- 9. intercept, initial weights, predict


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("intercept_init", [None, 2.5, np.array([2.5])])
def test_fit_intercept_false_keeps_intercept_init(strategy, intercept_init):
    rng = np.random.default_rng(10)
    X = _design(rng, 200, 3)
    w = rng.standard_normal(3)
    fixed = 0.0 if intercept_init is None else 2.5
    y = X @ w + fixed  # noise-free given the fixed intercept
    result = fastgd.fit(
        X,
        y,
        strategy=strategy,
        batch_size=BATCH,
        fit_intercept=False,
        intercept_init=intercept_init,
        max_iter=300,
        tol=None,
        random_state=0,
    )
    assert result.intercept == fixed
    np.testing.assert_allclose(result.coef, w, atol=CONVERGED)


def test_initial_weights_are_the_starting_point():
    X, y, *_ = _problem("lstsq_noisy", n=100, d=3)
    coef_init = [0.5, -0.5, 1.0]  # a list is fine
    seen, callback = _record()
    fastgd.fit(
        X,
        y,
        strategy="full",
        learning_rate="constant",
        eta0=0.05,
        coef_init=coef_init,
        intercept_init=1.5,
        max_iter=1,
        tol=None,
        callback=callback,
    )
    residual = X @ np.array(coef_init) + 1.5 - y
    np.testing.assert_allclose(
        seen["coef"][0], np.array(coef_init) - 0.05 * X.T @ residual / 100, **SAME_MATHS
    )
    np.testing.assert_allclose(seen["intercept"][0], 1.5 - 0.05 * residual.mean(), **SAME_MATHS)


def test_predict_and_decision_function():
    X, y, *_ = _problem("lstsq_noisy", n=100, d=3)
    result = fastgd.fit(X, y, max_iter=5)
    expected = X @ result.coef + result.intercept
    np.testing.assert_allclose(result.decision_function(X), expected, **SAME_MATHS)
    np.testing.assert_allclose(result.predict(X.tolist()), expected, **SAME_MATHS)
    np.testing.assert_allclose(
        result.decision_function(X.astype(np.float32)), expected, **tol(np.float32)
    )


@pytest.mark.parametrize("method", ["predict", "decision_function"])
@pytest.mark.parametrize("n_features", [2, 4])
def test_predict_with_the_wrong_number_of_features(method, n_features):
    X, y, *_ = _problem("lstsq_noisy", n=100, d=3)
    result = fastgd.fit(X, y, max_iter=2)
    with pytest.raises(ValueError) as caught:
        getattr(result, method)(np.ones((5, n_features)))
    message = str(caught.value)
    assert "features" in message
    assert re.search(rf"\b{n_features}\b", message) and re.search(r"\b3\b", message)


def test_predict_validates_its_input():
    X, y, *_ = _problem("lstsq_noisy", n=100, d=3)
    result = fastgd.fit(X, y, max_iter=2)
    with pytest.raises(ValueError, match="row 1, column 2"):
        result.predict(_with(np.ones((3, 3)), (1, 2), np.nan))
    with pytest.raises(ValueError, match=re.escape("reshape(-1, 1)")):
        result.predict(np.ones(3))


# ------------------------------------------------- auto on adversarial row orders


def _sorted_by_target(seed: int, n: int = 20_000, d: int = 10):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * rng.uniform(0.1, 30.0, d)
    y = X @ rng.standard_normal(d) + rng.standard_normal(n)
    order = np.argsort(y)
    return np.ascontiguousarray(X[order]), y[order]


@pytest.mark.parametrize("shuffle", [False, "block", True])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_auto_is_stable_on_rows_sorted_by_target(strategy, shuffle):
    X, y = _sorted_by_target(0)
    result = fastgd.fit(
        X, y, strategy=strategy, batch_size=64, shuffle=shuffle, max_iter=5, tol=None,
        random_state=0,
    )  # fmt: skip
    assert result.extras["auto_backtracks"] == 0
    assert np.isfinite(result.coef).all()
    start = _objective(X, y, np.zeros(X.shape[1]), 0.0)
    assert _objective(X, y, result.coef, result.intercept) < start


def test_auto_backs_off_when_an_epoch_diverges(monkeypatch):
    X, y = _sorted_by_target(1, n=2_000)
    derived = fastgd.engine.auto_learning_rate
    # A derived step 1000x too large: the engine must recover without raising.
    monkeypatch.setattr(
        fastgd.engine, "auto_learning_rate", lambda *a, **k: 1000.0 * derived(*a, **k)
    )
    result = fastgd.fit(X, y, strategy="minibatch", batch_size=32, max_iter=4, random_state=0)
    backtracks = result.extras["auto_backtracks"]
    assert 1 <= backtracks <= fastgd.engine.AUTO_MAX_BACKTRACKS
    assert result.extras["final_learning_rate"] == pytest.approx(
        result.learning_rate / fastgd.engine.AUTO_BACKTRACK_DIVISOR**backtracks
    )
    assert np.isfinite(result.loss_history).all() and result.n_iter == 4


def test_auto_gives_up_with_a_divergence_error_after_the_last_back_off(monkeypatch):
    X, y = _sorted_by_target(2, n=500)
    monkeypatch.setattr(fastgd.engine, "auto_learning_rate", lambda *a, **k: 1e30)
    with pytest.raises(fastgd.DivergenceError, match="learning_rate='auto'") as caught:
        fastgd.fit(X, y, strategy="sgd", max_iter=3, random_state=0)
    assert "standardising" in str(caught.value)
    np.testing.assert_array_equal(caught.value.coef, np.zeros(X.shape[1]))


# ------------------------------------------- rising losses are divergence, never convergence


def _gaussian_problem(seed: int, n: int = 2_000, d: int = 5):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = X @ rng.standard_normal(d) + 0.1 * rng.standard_normal(n)
    design = np.hstack([X, np.ones((n, 1))])
    curvature = np.linalg.eigvalsh(design.T @ design / n)[-1]
    return X, y, curvature


def test_a_steady_rise_is_reported_as_divergence_not_convergence():
    X, y, curvature = _gaussian_problem(0)
    # Just above 2/L: full-batch descent diverges slowly (the loss grows ~10% per epoch), so
    # neither the explosion nor the 10x-best rule fires before tol's patience runs out.
    with pytest.raises(fastgd.DivergenceError, match="rose in each of the last 5 epochs") as caught:
        fastgd.fit(
            X, y, strategy="full", learning_rate="constant", eta0=2.05 / curvature,
            max_iter=200, random_state=0,
        )  # fmt: skip
    history = caught.value.loss_history
    assert np.all(np.diff(history[-5:]) > 0)
    # The error keeps the best state: the weights whose objective is the lowest recorded.
    kept = _objective(X, y, caught.value.coef, caught.value.intercept)
    assert kept == pytest.approx(history.min(), rel=1e-9)


def test_a_loss_ten_times_its_best_is_divergence():
    X, y, curvature = _gaussian_problem(1)
    with pytest.raises(fastgd.DivergenceError, match="over 10 times its best"):
        fastgd.fit(
            X, y, strategy="full", learning_rate="constant", eta0=2.6 / curvature, tol=None,
            max_iter=200, random_state=0,
        )  # fmt: skip


def test_auto_full_batch_backs_off_when_the_sample_misses_high_leverage_rows(monkeypatch):
    rng = np.random.default_rng(3)
    n, d = 20_000, 5
    X = rng.standard_normal((n, d))
    X[rng.choice(n, 4, replace=False)] = [3000.0, 0.0, 0.0, 0.0, 0.0]
    y = X @ np.ones(d) + rng.standard_normal(n)
    # A sample of 1,000 rows almost surely misses the 4 heavy rows: the derived step is
    # too large, the objective rises, and the engine must back off instead of diverging.
    monkeypatch.setattr(fastgd.engine, "AUTO_SAMPLE_ROWS", 1_000)
    result = fastgd.fit(X, y, strategy="full", max_iter=30, tol=None, random_state=0)
    assert result.extras["auto_backtracks"] >= 1
    assert np.all(np.diff(result.loss_history) <= 1e-9 * result.loss_history[0])
    assert result.loss_history[-1] < 0.5 * result.loss_history[0]


def test_given_classes_allow_labels_of_one_class():
    """``classes=`` names both labels when y holds only one of them (a chunk of a larger
    data set): the step pushes the scores of those rows towards their class."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 3))
    result = fastgd.fit(
        X, -np.ones(20), loss="hinge", classes=[-1.0, 1.0], strategy="full",
        learning_rate="constant", eta0=0.1, max_iter=3, tol=None,
    )  # fmt: skip
    np.testing.assert_array_equal(result.classes, [-1.0, 1.0])
    assert (result.decision_function(X) < 0).mean() > 0.5
    with pytest.raises(ValueError, match="not in classes"):
        fastgd.fit(X, np.full(20, 2.0), loss="hinge", classes=[-1.0, 1.0])


# -------------------------------------------------------------- 10. hardening (issue 10)


@pytest.mark.parametrize(
    ("kind", "exception", "patterns"), MALFORMED_CSR, ids=[case[0] for case in MALFORMED_CSR]
)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_malformed_csr_is_refused_with_its_row_never_a_crash(kind, exception, patterns, strategy):
    X, y = malformed_csr(kind)
    with pytest.raises(exception) as caught:
        fastgd.fit(X, y, strategy=strategy, max_iter=2)
    message = str(caught.value)
    missing = [p for p in patterns if not re.search(p, message)]
    assert not missing, f"{message!r} lacks {missing}"


@pytest.mark.parametrize("kind", ["column-huge", "column-negative", "indptr-falls"])
def test_malformed_csr_is_refused_by_predict(kind):
    X, y = malformed_csr("none")
    result = fastgd.fit(X, y, max_iter=2)
    damaged, _ = malformed_csr(kind)
    with pytest.raises(ValueError, match=r"row [23]"):
        result.predict(damaged)


def test_unsorted_csr_indices_give_the_same_model_as_sorted():
    X, y = malformed_csr("none")
    unsorted = X.copy()
    for row in range(X.shape[0]):  # reverse each row's columns (and values alike)
        part = slice(X.indptr[row], X.indptr[row + 1])
        unsorted.indices[part] = X.indices[part][::-1]
        unsorted.data[part] = X.data[part][::-1]
    unsorted.has_sorted_indices = False
    assert not np.array_equal(unsorted.indices, X.indices)
    np.testing.assert_array_equal(unsorted.toarray(), X.toarray())
    for strategy in STRATEGIES:
        common = {"strategy": strategy, "batch_size": BATCH, "max_iter": 3, "random_state": 0}
        expected = fastgd.fit(X, y, **common)
        got = fastgd.fit(unsorted, y, **common)
        np.testing.assert_allclose(got.coef, expected.coef, **SAME_MATHS)
        np.testing.assert_allclose(got.loss_history, expected.loss_history, **SAME_MATHS)


def test_malformed_csc_is_refused_before_conversion():
    X, y = malformed_csr("none")
    csc = X.tocsc()
    csc.indices[3] = X.shape[0] + 7  # a row index past the end, in column 0
    with pytest.raises(ValueError, match=r"row index 57 out of range in column 0"):
        fastgd.fit(csc, y, max_iter=2)


def _assert_names(caught, patterns):
    message = str(caught.value)
    missing = [p for p in patterns if not re.search(p, message)]
    assert not missing, f"{message!r} lacks {missing}"


@pytest.fixture(scope="module")
def intact_sparse_fit():
    X, y = malformed_csr("none")
    return fastgd.fit(X, y, max_iter=2)


@pytest.mark.parametrize(("fmt", "container", "where"), sparse_cases())
def test_out_of_range_sparse_index_in_any_format_is_refused_never_a_crash(
    fmt, container, where, intact_sparse_fit
):
    """Issue 10: COO, CSC, BSR, LIL and DOK (matrix and array) with an index out of range
    (scipy's conversion to CSR does not check them) are refused by fit, predict and
    decision_function with the index, the axis and where it is, never a crash or a wrong
    answer."""
    X, y, patterns = out_of_range_sparse(fmt, container, where)
    for call in (
        lambda: fastgd.fit(X, y, max_iter=2),
        lambda: intact_sparse_fit.predict(X),
        lambda: intact_sparse_fit.decision_function(X),
    ):
        with pytest.raises(ValueError) as caught:
            call()
        _assert_names(caught, patterns)


@pytest.mark.parametrize("container", ["matrix", "array"])
def test_sparse_dia_offsets_outside_the_shape_are_skipped(container, intact_sparse_fit):
    """A DIA offset past the shape is valid in scipy (its values lie outside the matrix):
    fit and predict read the matrix scipy describes, never outside it."""
    X, y = malformed_csr("none")
    dia = getattr(sp, f"dia_{container}")(X)
    for bad in (-(10**8), -X.shape[0], X.shape[1], 10**8):
        damaged = dia.copy()
        damaged.offsets[0] = bad
        dense = damaged.toarray()
        np.testing.assert_allclose(
            intact_sparse_fit.predict(damaged), intact_sparse_fit.predict(dense), **SAME_MATHS
        )
        expected = fastgd.fit(dense, y, max_iter=2, random_state=0).coef
        got = fastgd.fit(damaged, y, max_iter=2, random_state=0).coef
        np.testing.assert_allclose(got, expected, **SAME_MATHS)
    repeated = dia.copy()
    repeated.offsets[1] = repeated.offsets[0]
    with pytest.raises(ValueError, match="repeated diagonal offset"):
        fastgd.fit(repeated, y, max_iter=2)


def _plan_for_divergence(**overrides):
    """What ``engine._divergence`` reads from a plan (a constant step, mini-batches)."""
    plan = {
        "divergence_checks": "all", "schedule": types.SimpleNamespace(name="constant"),
        "strategy": types.SimpleNamespace(name="minibatch"), "loss": types.SimpleNamespace(
            smooth=True), "tol": 1e-4, "n_iter_no_change": 2,
    }  # fmt: skip
    plan.update(overrides)
    return types.SimpleNamespace(**plan)


@pytest.mark.parametrize(
    ("epoch_loss", "best", "history", "diverged"),
    [
        (0.0044, 0.0004, [0.0004], False),  # the drawn case: ten-fold, but near zero
        (0.009, 0.0004, [0.0004], False),  # still below RISE_FLOOR (1%) of the scale 1
        (0.02, 0.0004, [0.0004], True),  # above the floor: a real rise
        (0.005, 0.0001, [0.001, 0.002, 0.003], False),  # a steady rise, near zero
        (0.05, 0.001, [0.01, 0.02, 0.03], True),  # a steady rise above the floor
    ],
)
def test_rises_near_zero_are_no_divergence(epoch_loss, best, history, diverged):
    reason = fastgd.engine._divergence(
        _plan_for_divergence(), epoch_loss, False, np.zeros(2), 0.0, 1.0, best, history,
        pending_no_improvement=2,
    )  # fmt: skip
    assert (reason is not None) == diverged, reason
    assert fastgd.engine.RISE_FLOOR == 1e-2


def test_a_rise_of_a_loss_whose_scale_is_zero_is_no_divergence():
    # The perceptron from zero weights: its loss scale is 0 and grows with w by design.
    reason = fastgd.engine._divergence(
        _plan_for_divergence(), 5.0, False, np.zeros(2), 0.0, 0.0, 0.1, [0.1], 0
    )
    assert reason is None
    # ... but a non-finite loss always is.
    assert "non-finite" in fastgd.engine._divergence(
        _plan_for_divergence(), math.inf, False, np.zeros(2), 0.0, 0.0, 0.1, [0.1], 0
    )


def _huge_features(n=200, d=3, scale=1e200, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    X[:, 1] = scale * np.sign(X[:, 1])  # max |x| = 1e200 exactly
    return X, rng.standard_normal(n)


@pytest.mark.parametrize("sparse_input", [False, True])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_auto_on_features_near_1e200_names_the_cause_and_the_cure(strategy, sparse_input):
    X, y = _huge_features()
    data = sp.csr_matrix(X) if sparse_input else X
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy warning on the way
        with pytest.raises(ValueError, match="too large") as caught:
            fastgd.fit(data, y, strategy=strategy, max_iter=2)
    message = str(caught.value)
    assert type(caught.value) is ValueError  # not LAPACK's LinAlgError, nor divergence
    for part in ["learning_rate='auto'", "max |x| = 1e+200", "overflow", "Standardise"]:
        assert part in message, message


@pytest.mark.parametrize("d", [3, fastgd.engine.AUTO_GRAM_MAX_WIDTH + 8])
def test_auto_names_the_cause_when_only_the_curvature_overflows(d):
    # |x| = 1e153: each ‖x‖² (1e306) is finite, but the sums of 200 of them in the Gram
    # matrix (d = 3) or the power iteration (wider than AUTO_GRAM_MAX_WIDTH) overflow.
    X, y = _huge_features(n=200, d=d, scale=1e153)
    with pytest.raises(ValueError, match=r"too large.*max \|x\| = 1e\+153") as caught:
        fastgd.fit(X, y, max_iter=2)
    assert isinstance(caught.value.__cause__, (FloatingPointError, np.linalg.LinAlgError))


@pytest.mark.parametrize("penalty", [None, "l2", "l1"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_constant_step_on_features_near_1e200_is_divergence_with_advice(strategy, penalty):
    X, y = _huge_features()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DivergenceError, not a numpy warning
        with pytest.raises(fastgd.DivergenceError) as caught:
            fastgd.fit(
                X, y, strategy=strategy, learning_rate="constant", eta0=0.01, penalty=penalty,
                max_iter=5, batch_size=BATCH,
            )  # fmt: skip
    message = str(caught.value)
    for part in ["too large", "max |x| = 1e+200", "Standardise or scale the features"]:
        assert part in message, message
    assert np.isfinite(caught.value.coef).all()  # the best weights reached (the start)


def _nullable_frame(n=60, seed=0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "count": pd.array(rng.integers(0, 5, n), dtype="Int64"),
            "value": pd.array(rng.standard_normal(n), dtype="Float64"),
            "flag": pd.array(rng.random(n) < 0.5, dtype="boolean"),
        }
    )
    target = pd.Series(frame["value"].to_numpy(float) + rng.standard_normal(n), dtype="Float64")
    return frame, target


def test_fit_accepts_pandas_nullable_dtypes_like_their_numpy_values():
    frame, target = _nullable_frame()
    common = {"max_iter": 3, "random_state": 0}
    got = fastgd.fit(frame, target, **common)
    expected = fastgd.fit(frame.to_numpy(float), target.to_numpy(float), **common)
    np.testing.assert_array_equal(got.coef, expected.coef)
    assert got.coef.dtype == np.float64
    labels = pd.Series(np.arange(60) % 2, dtype="Int64")
    classes = fastgd.fit(frame, labels, loss="log_loss", max_iter=2).classes
    assert classes.dtype.kind == "i" and classes.tolist() == [0, 1]  # integers stay integers
    narrow = frame.astype({"value": "Float32", "count": "Int8", "flag": "Float32"})
    assert fastgd.fit(narrow.drop(columns="count"), target, max_iter=2).coef.dtype == np.float32


def test_pandas_na_is_named_like_nan():
    frame, target = _nullable_frame()
    frame.iloc[7, 1] = pd.NA
    with pytest.raises(ValueError) as with_na:
        fastgd.fit(frame, target)
    with pytest.raises(ValueError) as with_nan:
        fastgd.fit(frame.to_numpy(float, na_value=np.nan), target.to_numpy(float))
    assert str(with_na.value) == str(with_nan.value)
    assert "row 7, column 1" in str(with_na.value)
    frame, target = _nullable_frame()
    target.iloc[3] = pd.NA
    with pytest.raises(ValueError, match=r"\by\b.*nan.*row 3"):
        fastgd.fit(frame, target)
    labels = pd.Series(np.arange(60) % 2, dtype="Int64")
    labels.iloc[5] = pd.NA
    with pytest.raises(ValueError, match=r"\by\b.*nan.*row 5"):
        fastgd.fit(frame, labels, loss="hinge")
