"""Tests of the numpy reference against facts established independently of it.

The reference is the oracle of the kernels' property tests, so it is checked here against
things it does not compute itself: finite differences, hand-worked values, closed-form
optima (least squares, ridge) and optimality conditions (lasso), scikit-learn's SGD, and
identities that must hold between its strategies (duplicated rows versus integer weights,
one big batch versus the full batch, SGD versus batches of one).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgd import reference as ref
from fastgd.options import DERIVATIVE_CLIP, LOSSES

# Named tolerances, in one place.
SAME_MATHS = {"rtol": 1e-12, "atol": 1e-12}  # same operations, possibly another sum order
REORDERED = {"rtol": 1e-9, "atol": 1e-11}  # sums reordered, then a few epochs of steps
FINITE_DIFFERENCE = {"rtol": 1e-6, "atol": 1e-6}  # central difference, h = 1e-6
CONVERGED = {"rtol": 1e-7, "atol": 1e-8}  # gradient descent run to convergence
FD_STEP = 1e-6
KINK_MARGIN = 1e-3  # finite differences are only compared this far from a kink

LOSS_NAMES = [loss.name for loss in LOSSES]
CLASSIFICATION = {loss.name for loss in LOSSES if loss.classification}
REGRESSION = [name for name in LOSS_NAMES if name not in CLASSIFICATION]
KERNEL_SCHEDULES = ["constant", "invscaling", "optimal"]
FAST = settings(deadline=None, max_examples=40)


def _kinks(loss, epsilon):
    """Where each loss is not differentiable, in its natural variable (r = p - y, or z)."""
    return {
        "squared_error": [],
        "huber": [-epsilon, epsilon],  # L'' jumps; keep the difference quotient honest
        "epsilon_insensitive": [-epsilon, epsilon],
        "squared_epsilon_insensitive": [-epsilon, epsilon],
        "log_loss": [],
        "hinge": [1.0],
        "squared_hinge": [1.0],
        "modified_huber": [-1.0, 1.0],
        "perceptron": [0.0],
    }[loss]


def _away_from_kinks(loss, p, y, epsilon):
    variable = y * p if loss in CLASSIFICATION else p - y
    mask = np.ones(np.shape(variable), dtype=bool)
    for kink in _kinks(loss, epsilon):
        mask &= np.abs(variable - kink) > KINK_MARGIN
    return mask


def _central_difference(loss, p, y, epsilon):
    upper, _ = ref.loss_and_derivative(loss, p + FD_STEP, y, epsilon)
    lower, _ = ref.loss_and_derivative(loss, p - FD_STEP, y, epsilon)
    return (upper - lower) / (2 * FD_STEP)


def _problem(seed, n=30, d=3, classification=False):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = X @ rng.normal(size=d) + 0.5 + 0.1 * rng.normal(size=n)
    if classification:
        y = np.where(y > np.median(y), 1.0, -1.0)
    return X, y


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", LOSS_NAMES)
@pytest.mark.parametrize("epsilon", [0.1, 0.7])
def test_derivative_is_the_finite_difference_of_the_loss_on_a_grid(loss, epsilon):
    p = np.linspace(-4.0, 4.0, 1601)
    targets = [-1.0, 1.0] if loss in CLASSIFICATION else [-1.3, 0.0, 2.1]
    for target in targets:
        y = np.full_like(p, target)
        keep = _away_from_kinks(loss, p, y, epsilon)
        _, derivative = ref.loss_and_derivative(loss, p, y, epsilon)
        np.testing.assert_allclose(
            derivative[keep], _central_difference(loss, p, y, epsilon)[keep], **FINITE_DIFFERENCE
        )


@FAST
@given(
    loss=st.sampled_from(LOSS_NAMES),
    p=st.floats(-20.0, 20.0),
    target=st.floats(-20.0, 20.0),
    positive=st.booleans(),
    epsilon=st.floats(0.01, 2.0),
)
def test_derivative_is_the_finite_difference_of_the_loss(loss, p, target, positive, epsilon):
    y = (1.0 if positive else -1.0) if loss in CLASSIFICATION else target
    if not _away_from_kinks(loss, p, y, epsilon):
        return
    _, derivative = ref.loss_and_derivative(loss, p, y, epsilon)
    scale = max(1.0, abs(float(derivative)))
    np.testing.assert_allclose(
        derivative / scale,
        _central_difference(loss, p, y, epsilon) / scale,
        rtol=FINITE_DIFFERENCE["rtol"],
        atol=FINITE_DIFFERENCE["atol"] * max(1.0, abs(p), abs(y)),
    )


# (loss, p, y, epsilon, L, dL/dp), worked by hand from the definitions.
HAND_WORKED = [
    ("squared_error", 3.0, 1.0, 0.1, 2.0, 2.0),
    ("huber", 3.0, 1.0, 1.0, 1.5, 1.0),
    ("huber", -1.0, 1.0, 1.0, 1.5, -1.0),
    ("huber", 1.5, 1.0, 1.0, 0.125, 0.5),
    ("epsilon_insensitive", 0.0, 2.0, 0.5, 1.5, -1.0),
    ("epsilon_insensitive", 2.0, 0.0, 0.5, 1.5, 1.0),
    ("epsilon_insensitive", 0.25, 0.0, 0.5, 0.0, 0.0),
    ("squared_epsilon_insensitive", 0.0, 2.0, 0.5, 2.25, -3.0),
    ("squared_epsilon_insensitive", 2.0, 0.0, 0.5, 2.25, 3.0),
    ("squared_epsilon_insensitive", -0.25, 0.0, 0.5, 0.0, 0.0),
    ("log_loss", 0.0, 1.0, 0.1, np.log(2.0), -0.5),
    ("log_loss", 0.0, -1.0, 0.1, np.log(2.0), 0.5),
    ("log_loss", np.log(3.0), 1.0, 0.1, np.log(4.0 / 3.0), -0.25),
    ("hinge", 0.5, 1.0, 0.1, 0.5, -1.0),
    ("hinge", 1.0, 1.0, 0.1, 0.0, -1.0),  # the kink belongs to the active side ("<=")
    ("hinge", 2.0, 1.0, 0.1, 0.0, 0.0),
    ("hinge", 0.5, -1.0, 0.1, 1.5, 1.0),
    ("squared_hinge", 0.5, 1.0, 0.1, 0.25, -1.0),
    ("squared_hinge", -1.0, -1.0, 0.1, 0.0, 0.0),
    ("squared_hinge", 1.0, -1.0, 0.1, 4.0, 4.0),
    ("modified_huber", 0.5, 1.0, 0.1, 0.25, -1.0),
    ("modified_huber", -1.0, 1.0, 0.1, 4.0, -4.0),
    ("modified_huber", -2.0, 1.0, 0.1, 8.0, -4.0),
    ("modified_huber", 2.0, -1.0, 0.1, 8.0, 4.0),
    ("modified_huber", 3.0, 1.0, 0.1, 0.0, 0.0),
    ("perceptron", 0.0, 1.0, 0.1, 0.0, -1.0),
    ("perceptron", -2.0, 1.0, 0.1, 2.0, -1.0),
    ("perceptron", 1.0, 1.0, 0.1, 0.0, 0.0),
    ("perceptron", 1.0, -1.0, 0.1, 1.0, 1.0),
]


@pytest.mark.parametrize(("loss", "p", "y", "epsilon", "value", "derivative"), HAND_WORKED)
def test_hand_worked_values(loss, p, y, epsilon, value, derivative):
    got_value, got_derivative = ref.loss_and_derivative(loss, p, y, epsilon)
    np.testing.assert_allclose(got_value, value, **SAME_MATHS)
    np.testing.assert_allclose(got_derivative, derivative, **SAME_MATHS)


def test_every_loss_has_a_hand_worked_value():
    assert {row[0] for row in HAND_WORKED} == set(LOSS_NAMES)


def _sklearn_losses():
    """scikit-learn's own Cython losses where it still exposes them (private API)."""
    try:
        from sklearn.linear_model import _sgd_fast
    except ImportError:  # pragma: no cover
        return {}
    makers = {
        "hinge": lambda eps: _sgd_fast.Hinge(1.0),
        "perceptron": lambda eps: _sgd_fast.Hinge(0.0),
        "squared_hinge": lambda eps: _sgd_fast.SquaredHinge(1.0),
        "modified_huber": lambda eps: _sgd_fast.ModifiedHuber(),
        "epsilon_insensitive": lambda eps: _sgd_fast.EpsilonInsensitive(eps),
        "squared_epsilon_insensitive": lambda eps: _sgd_fast.SquaredEpsilonInsensitive(eps),
    }
    return {name: make for name, make in makers.items() if hasattr(_sgd_fast, "Hinge")}


@pytest.mark.parametrize(
    "loss",
    [
        "hinge",
        "perceptron",
        "squared_hinge",
        "modified_huber",
        "epsilon_insensitive",
        "squared_epsilon_insensitive",
    ],
)
def test_losses_agree_with_scikit_learn(loss):
    makers = _sklearn_losses()
    if loss not in makers:
        pytest.skip("scikit-learn no longer exposes this loss")
    epsilon = 0.3
    sk_loss = makers[loss](epsilon)
    if not hasattr(sk_loss, "py_loss"):
        pytest.skip("scikit-learn no longer exposes py_loss")
    ps = np.linspace(-3.0, 3.0, 121)  # includes the kinks -1, 0, 1 and +-epsilon
    ys = [-1.0, 1.0] if loss in CLASSIFICATION else [-0.4, 0.0, 1.0]
    for y in ys:
        value, derivative = ref.loss_and_derivative(loss, ps, y, epsilon)
        expected_value = [sk_loss.py_loss(p, y) for p in ps]
        expected_derivative = [sk_loss.py_dloss(p, y) for p in ps]
        np.testing.assert_allclose(value, expected_value, **SAME_MATHS)
        np.testing.assert_allclose(derivative, expected_derivative, **SAME_MATHS)


def test_log_loss_is_finite_and_accurate_for_huge_margins():
    margins = np.array([-1e300, -1e5, -800.0, -50.0, -1.0, 0.0, 1.0, 50.0, 800.0, 1e5, 1e300])
    for y in (-1.0, 1.0):
        p = margins * y  # so that y * p is exactly the margin
        # Underflow to 0 is expected and silent under numpy's defaults; overflow is not.
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            value, derivative = ref.loss_and_derivative("log_loss", p, y)
        assert np.all(np.isfinite(value)) and np.all(np.isfinite(derivative))
        # log(1 + e^-z) = -z + log(1 + e^z): -z to within e^z for z << 0, and e^-z (first
        # order of log1p) for z >> 0. Likewise -y/(1 + e^z) is -y or -y e^-z.
        very_negative = margins < -40
        very_positive = margins > 40
        np.testing.assert_allclose(value[very_negative], -margins[very_negative], rtol=1e-15)
        np.testing.assert_allclose(derivative[very_negative], -y, rtol=1e-15)
        np.testing.assert_allclose(
            value[very_positive], np.exp(-margins[very_positive]), rtol=1e-13, atol=0.0
        )
        np.testing.assert_allclose(
            derivative[very_positive], -y * np.exp(-margins[very_positive]), rtol=1e-13, atol=0
        )
        assert value[margins == 50.0][0] > 0.0  # not rounded to zero
        middle = np.abs(margins) <= 1.0
        np.testing.assert_allclose(value[middle], np.log1p(np.exp(-margins[middle])), **SAME_MATHS)


def test_derivative_is_clipped_and_value_is_not():
    p = np.array([1e13, -1e20, 1e11])
    value, derivative = ref.loss_and_derivative("squared_error", p, 0.0)
    np.testing.assert_array_equal(derivative, [DERIVATIVE_CLIP, -DERIVATIVE_CLIP, 1e11])
    np.testing.assert_allclose(value, 0.5 * p**2, **SAME_MATHS)
    _, derivative = ref.loss_and_derivative("squared_hinge", -1e13, 1.0)
    assert derivative == -DERIVATIVE_CLIP
    _, derivative = ref.loss_and_derivative("squared_epsilon_insensitive", 1e13, 0.0, 0.1)
    assert derivative == DERIVATIVE_CLIP


def test_unknown_loss_is_refused_by_name():
    with pytest.raises(ValueError, match="loss='nope'"):
        ref.loss_and_derivative("nope", 0.0, 0.0)


# ---------------------------------------------------------------------------------------------
# Penalty and the proximal step
# ---------------------------------------------------------------------------------------------


def test_penalty_value():
    w = np.array([1.0, -2.0, 0.0, 3.0])
    assert ref.penalty_value(w, 0.5, 0.0) == 3.0
    assert ref.penalty_value(w, 0.0, 2.0) == 14.0
    assert ref.penalty_value(w, 0.5, 2.0) == 17.0


vectors = st.lists(st.floats(-5.0, 5.0), min_size=1, max_size=6).map(np.array)


@FAST
@given(
    w=vectors,
    data=st.data(),
    eta=st.floats(1e-3, 1.0),
    l1=st.floats(0.0, 3.0),
    l2=st.floats(0.0, 2.0),
)
def test_penalized_step_is_the_l1_proximal_map(w, data, eta, l1, l2):
    grad = data.draw(st.lists(st.floats(-5.0, 5.0), min_size=w.size, max_size=w.size))
    grad = np.array(grad)
    w_before, grad_before = w.copy(), grad.copy()
    new = ref.penalized_step(w, grad, eta, l1, l2)
    np.testing.assert_array_equal(w, w_before)  # inputs untouched
    np.testing.assert_array_equal(grad, grad_before)

    # Optimality of argmin_u ½(u - v)² + η λ₁ |u|, coordinate by coordinate: u = 0 exactly
    # iff |v| ≤ ηλ₁, and otherwise u - v + ηλ₁ sign(u) = 0.
    v = w * max(0.0, 1 - eta * l2) - eta * grad  # the decay clipped at 0 (scikit-learn's)
    threshold = eta * l1
    zero = np.abs(v) <= threshold
    assert np.all(new[zero] == 0.0)
    assert np.all(new[~zero] != 0.0)
    np.testing.assert_allclose(
        new[~zero] - v[~zero] + threshold * np.sign(new[~zero]), 0.0, atol=1e-12
    )
    assert np.all(np.sign(new[~zero]) == np.sign(v[~zero]))


def test_penalized_step_minimises_the_prox_objective_on_a_grid():
    v = np.array([-3.0, -1.2, -0.4, 0.0, 0.3, 0.9, 1.7, 4.0])
    eta, l1 = 0.5, 2.0  # threshold 1: four of the eight are zeroed
    new = ref.penalized_step(v, np.zeros_like(v), eta, l1, 0.0)  # w = v, no gradient
    grid = np.linspace(-8.0, 8.0, 160_001)  # spacing 1e-4, contains 0
    prox_objective = 0.5 * (grid[:, None] - v) ** 2 + eta * l1 * np.abs(grid[:, None])
    best = grid[np.argmin(prox_objective, axis=0)]
    np.testing.assert_allclose(new, best, atol=1e-4)
    assert np.count_nonzero(new == 0.0) == np.count_nonzero(np.abs(v) <= eta * l1) > 0


def test_penalized_step_without_l1_is_a_gradient_step_on_the_ridge_objective():
    w = np.array([1.0, -2.0, 0.5])
    grad = np.array([0.3, 0.1, -0.7])
    eta, l2 = 0.1, 0.4
    np.testing.assert_allclose(
        ref.penalized_step(w, grad, eta, 0.0, l2), w - eta * (grad + l2 * w), **SAME_MATHS
    )


# ---------------------------------------------------------------------------------------------
# Learning rates
# ---------------------------------------------------------------------------------------------


def test_constant_and_invscaling():
    assert ref.learning_rate("constant", 7.0, eta0=0.3) == 0.3
    assert ref.learning_rate("invscaling", 16.0, eta0=0.3, power_t=0.25) == 0.15
    # The epoch-level schedules run as constant steps inside an epoch.
    assert ref.learning_rate("adaptive", 9.0, eta0=0.3) == 0.3
    assert ref.learning_rate("auto", 9.0, eta0=0.3) == 0.3


@pytest.mark.parametrize("loss", LOSS_NAMES)
@pytest.mark.parametrize("alpha", [1e-4, 0.01, 3.0])
def test_optimal_schedule_starts_at_the_typical_weight_and_decays_like_one_over_t(loss, alpha):
    t0 = ref.optimal_init(loss, alpha)
    # At p = -τ, y = 1 every loss has L' ≤ 0, so the heuristic's first step is τ = α^(-1/4).
    first = ref.learning_rate("optimal", 1.0, alpha=alpha, optimal_init=t0)
    np.testing.assert_allclose(first, alpha**-0.25, **SAME_MATHS)
    for t in (2.0, 10.0, 1e6):
        eta = ref.learning_rate("optimal", t, alpha=alpha, optimal_init=t0)
        np.testing.assert_allclose(1.0 / eta - 1.0 / first, alpha * (t - 1.0), rtol=1e-9)


def test_optimal_needs_a_positive_alpha_and_its_offset():
    with pytest.raises(ValueError, match="alpha"):
        ref.optimal_init("hinge", 0.0)
    with pytest.raises(ValueError, match="optimal_init"):
        ref.learning_rate("optimal", 1.0, alpha=0.1)


# ---------------------------------------------------------------------------------------------
# Objective and full batch
# ---------------------------------------------------------------------------------------------


def test_objective_of_squared_error_with_elastic_net():
    X, y = _problem(2)
    w, b = np.array([0.3, -1.0, 2.0]), 0.7
    s = np.linspace(0.5, 1.5, y.size)
    expected = (
        np.sum(s * (X @ w + b - y) ** 2) / (2 * y.size) + 0.2 * np.sum(np.abs(w)) + 0.15 * w @ w
    )
    got = ref.objective(X, y, w, b, loss="squared_error", sample_weight=s, l1=0.2, l2=0.3)
    np.testing.assert_allclose(got, expected, **SAME_MATHS)


def test_full_batch_step_hand_worked():
    X = np.array([[1.0, 0.0], [0.0, 2.0]])
    y = np.array([1.0, 0.0])
    # p = [0.5, 0.5] at w = 0, b = 0.5; r = [-0.5, 0.5]; with s = [2, 0]: d = [-1, 0].
    w, b, start = ref.full_batch_step(
        X, y, np.zeros(2), 0.5, loss="squared_error", sample_weight=[2.0, 0.0], eta=0.5
    )
    np.testing.assert_allclose(w, [0.25, 0.0], **SAME_MATHS)  # g = X.T d / 2 = [-0.5, 0]
    assert b == 0.75  # g_b = -1 / 2
    assert start == 0.125  # (2 * 0.125 + 0) / 2
    _, b_fixed, _ = ref.full_batch_step(
        X, y, np.zeros(2), 0.5, loss="squared_error", eta=0.5, fit_intercept=False
    )
    assert b_fixed == 0.5


def _smoothness(A, l2):
    """Largest eigenvalue of the Hessian of the squared-error objective in (w, b)."""
    return np.linalg.eigvalsh(A.T @ A / A.shape[0]).max() + l2


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("l2", [0.0, 0.5])
def test_full_batch_converges_to_least_squares_and_ridge(fit_intercept, l2):
    X, y = _problem(3, n=60, d=4)
    X = X + 0.5  # non-centred columns, so the intercept matters
    n, d = X.shape
    if fit_intercept:
        # Ridge with an unpenalised intercept: centre, solve, recover the intercept.
        x_mean, y_mean = X.mean(axis=0), y.mean()
        Xc, yc = X - x_mean, y - y_mean
        coef = np.linalg.solve(Xc.T @ Xc / n + l2 * np.eye(d), Xc.T @ yc / n)
        intercept = y_mean - x_mean @ coef
        if l2 == 0.0:
            augmented = np.linalg.lstsq(np.c_[X, np.ones(n)], y, rcond=None)[0]
            np.testing.assert_allclose(coef, augmented[:-1], **SAME_MATHS)
        A = np.c_[X, np.ones(n)]
    else:
        coef = np.linalg.solve(X.T @ X / n + l2 * np.eye(d), X.T @ y / n)
        intercept = 0.0
        A = X
    eta0 = 1.0 / _smoothness(A, l2)
    got_coef, got_intercept, history = ref.fit(
        X,
        y,
        strategy="full",
        schedule="constant",
        eta0=eta0,
        penalty="l2",
        alpha=l2,
        fit_intercept=fit_intercept,
        max_iter=3000,
    )
    np.testing.assert_allclose(got_coef, coef, **CONVERGED)
    np.testing.assert_allclose(got_intercept, intercept, **CONVERGED)
    # With a step of 1/L, gradient descent never increases the objective.
    assert np.all(np.diff(history) <= 1e-12)
    optimum = ref.objective(X, y, coef, intercept, loss="squared_error", l2=l2)
    np.testing.assert_allclose(history[-1], optimum, rtol=1e-10)


@pytest.mark.parametrize("penalty", ["l1", "elasticnet"])
def test_full_batch_proximal_gradient_satisfies_the_lasso_optimality_conditions(penalty):
    rng = np.random.default_rng(4)
    n = 80
    X = rng.normal(size=(n, 5))
    y = X @ np.array([1.5, 0.0, -2.0, 0.0, 0.05]) + 1.0 + 0.1 * rng.normal(size=n)
    alpha, l1_ratio = 0.2, 0.5
    l1, l2 = (alpha, 0.0) if penalty == "l1" else (alpha * l1_ratio, alpha * (1 - l1_ratio))
    eta0 = 1.0 / _smoothness(np.c_[X, np.ones(n)], l2)
    coef, intercept, _ = ref.fit(
        X,
        y,
        strategy="full",
        eta0=eta0,
        penalty=penalty,
        alpha=alpha,
        l1_ratio=l1_ratio,
        max_iter=2000,
    )
    residual = X @ coef + intercept - y
    grad = X.T @ residual / n + l2 * coef
    active = coef != 0.0
    assert 0 < np.count_nonzero(active) < coef.size  # the penalty produced exact zeros
    np.testing.assert_allclose(grad[active], -l1 * np.sign(coef[active]), atol=1e-9)
    assert np.all(np.abs(grad[~active]) <= l1 + 1e-9)
    np.testing.assert_allclose(residual.mean(), 0.0, atol=1e-9)  # intercept is unpenalised


@FAST
@given(
    loss=st.sampled_from(LOSS_NAMES),
    seed=st.integers(0, 2**16),
    weights=st.lists(st.integers(0, 3), min_size=6, max_size=6).filter(lambda k: sum(k) > 0),
    penalty=st.sampled_from([None, "l2", "elasticnet"]),
    schedule=st.sampled_from(KERNEL_SCHEDULES),
    fit_intercept=st.booleans(),
)
def test_integer_weights_equal_duplicated_rows_in_full_batch(
    loss, seed, weights, penalty, schedule, fit_intercept
):
    # Full batch: g = X.T (s * L') / n with s = k n / Σk is X.T (k * L') / Σk, the plain mean
    # over the Σk rows of the data with each row repeated k times. The same holds for the
    # loss and for the scale of the weights.
    X, y = _problem(seed, n=6, classification=loss in CLASSIFICATION)
    weights = np.array(weights)
    options = {
        "loss": loss,
        "strategy": "full",
        "schedule": schedule,
        "eta0": 0.05,
        "alpha": 0.3,
        "penalty": penalty,
        "fit_intercept": fit_intercept,
        "max_iter": 4,
    }
    weighted = ref.fit(X, y, sample_weight=weights, **options)
    scaled = ref.fit(X, y, sample_weight=2.5 * weights, **options)
    duplicated = ref.fit(np.repeat(X, weights, axis=0), np.repeat(y, weights), **options)
    for got in (weighted, scaled):
        np.testing.assert_allclose(got[0], duplicated[0], **REORDERED)
        np.testing.assert_allclose(got[1], duplicated[1], **REORDERED)
        np.testing.assert_allclose(got[2], duplicated[2], **REORDERED)


# ---------------------------------------------------------------------------------------------
# Mini-batch and SGD epochs
# ---------------------------------------------------------------------------------------------


def test_minibatch_epoch_hand_worked():
    X = np.array([[1.0], [2.0], [3.0]])
    y = np.array([1.0, 2.0, 3.0])
    # invscaling with power_t = 1: eta = 0.2 for the first batch, 0.1 for the second.
    # Batch {2, 0} at w = b = 0: r = [-3, -1], g = (-9 - 1)/2 = -5, g_b = -2, losses 4.5 + 0.5
    #   -> w = 1.0, b = 0.4.
    # Batch {1}: p = 2.4, r = 0.4, g = 0.8, g_b = 0.4, loss 0.08 -> w = 0.92, b = 0.36.
    w, b, epoch_loss, t = ref.minibatch_epoch(
        X,
        y,
        np.zeros(1),
        0.0,
        np.array([2, 0, 1]),
        2,
        loss="squared_error",
        schedule="invscaling",
        eta0=0.2,
        power_t=1.0,
        t=1.0,
        fit_intercept=True,
    )
    np.testing.assert_allclose(w, [0.92], **SAME_MATHS)
    np.testing.assert_allclose(b, 0.36, **SAME_MATHS)
    np.testing.assert_allclose(epoch_loss, 5.08 / 3, **SAME_MATHS)
    assert t == 3.0


@FAST
@given(
    loss=st.sampled_from(LOSS_NAMES),
    seed=st.integers(0, 2**16),
    n=st.integers(1, 12),
    batch_size=st.integers(1, 15),
)
def test_epoch_loss_without_steps_is_the_objective(loss, seed, n, batch_size):
    X, y = _problem(seed, n=n, classification=loss in CLASSIFICATION)
    rng = np.random.default_rng(seed)
    w, b = rng.normal(size=X.shape[1]), 0.3
    s = rng.uniform(0.0, 2.0, size=n)
    order = rng.permutation(n)
    w_new, b_new, epoch_loss, t = ref.minibatch_epoch(
        X,
        y,
        w,
        b,
        order,
        batch_size,
        loss=loss,
        sample_weight=s,
        l1=0.1,
        l2=0.2,
        eta0=0.0,
    )
    np.testing.assert_array_equal(w_new, w)
    assert b_new == b
    assert t == 1.0 + -(-n // batch_size)  # one step per batch
    expected = ref.objective(X, y, w, b, loss=loss, sample_weight=s, l1=0.1, l2=0.2)
    np.testing.assert_allclose(epoch_loss, expected, **REORDERED)


schedule_options = st.fixed_dictionaries(
    {
        "schedule": st.sampled_from(KERNEL_SCHEDULES),
        "eta0": st.floats(1e-3, 0.1),
        "power_t": st.floats(0.1, 1.0),
        "alpha": st.floats(0.5, 2.0),  # keeps the optimal schedule's first steps moderate
        "penalty": st.sampled_from([None, "l2", "l1", "elasticnet"]),
        "l1_ratio": st.floats(0.0, 1.0),
        "epsilon": st.floats(0.05, 1.0),
        "fit_intercept": st.booleans(),
    }
)


@FAST
@given(
    loss=st.sampled_from(LOSS_NAMES),
    seed=st.integers(0, 2**16),
    n=st.integers(1, 10),
    extra_rows=st.integers(0, 3),
    weighted=st.booleans(),
    options=schedule_options,
)
def test_one_batch_of_all_rows_in_order_is_the_full_batch(
    loss, seed, n, extra_rows, weighted, options
):
    X, y = _problem(seed, n=n, classification=loss in CLASSIFICATION)
    weights = np.random.default_rng(seed).uniform(0.1, 2.0, size=n) if weighted else None
    common = {"loss": loss, "sample_weight": weights, "max_iter": 3, **options}
    full = ref.fit(X, y, strategy="full", **common)
    batched = ref.fit(X, y, strategy="minibatch", batch_size=n + extra_rows, **common)
    for got, expected in zip(batched, full, strict=True):
        np.testing.assert_allclose(got, expected, **SAME_MATHS)


@FAST
@given(
    loss=st.sampled_from(LOSS_NAMES),
    seed=st.integers(0, 2**16),
    n=st.integers(1, 10),
    weighted=st.booleans(),
    options=schedule_options,
)
def test_sgd_is_minibatch_with_batches_of_one(loss, seed, n, weighted, options):
    X, y = _problem(seed, n=n, classification=loss in CLASSIFICATION)
    X = 0.5 * X  # keeps the largest steps well inside stability
    rng = np.random.default_rng(seed)
    weights = rng.uniform(0.1, 2.0, size=n) if weighted else None
    orders = [rng.permutation(n) for _ in range(3)]
    common = {"loss": loss, "sample_weight": weights, "orders": orders, "max_iter": 3, **options}
    sgd = ref.fit(X, y, strategy="sgd", **common)
    batched = ref.fit(X, y, strategy="minibatch", batch_size=1, **common)
    for got, expected in zip(sgd, batched, strict=True):
        np.testing.assert_allclose(got, expected, **REORDERED)


def test_sgd_epoch_follows_the_order_and_counts_steps():
    X, y = _problem(5, n=7)
    order = np.array([3, 6, 0, 1, 5, 2, 4])
    options = {"loss": "huber", "epsilon": 0.5, "schedule": "invscaling", "eta0": 0.1, "t": 4.0}
    w, b, _, t = ref.sgd_epoch(X, y, np.zeros(3), 0.0, order, **options)
    assert t == 11.0
    # Running the rows one by one as single-row epochs gives the same weights.
    w_rows, b_rows = np.zeros(3), 0.0
    for step, i in enumerate(order):
        w_rows, b_rows, _, _ = ref.sgd_epoch(
            X[i : i + 1], y[i : i + 1], w_rows, b_rows, [0], **{**options, "t": 4.0 + step}
        )
    np.testing.assert_allclose(w, w_rows, **SAME_MATHS)
    np.testing.assert_allclose(b, b_rows, **SAME_MATHS)


# ---------------------------------------------------------------------------------------------
# Against scikit-learn's SGD (per-sample steps, L2 penalty applied as in the reference)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loss", "schedule"),
    [
        ("squared_error", "constant"),
        ("squared_error", "invscaling"),
        ("huber", "invscaling"),
        ("epsilon_insensitive", "optimal"),
        ("squared_epsilon_insensitive", "constant"),
        ("hinge", "optimal"),
        ("log_loss", "optimal"),
        ("modified_huber", "optimal"),
        ("perceptron", "invscaling"),
        ("squared_hinge", "constant"),
    ],
)
@pytest.mark.parametrize("penalty", [None, "l2"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_sgd_matches_scikit_learn(loss, schedule, penalty, fit_intercept):
    sklearn_linear = pytest.importorskip("sklearn.linear_model")
    from sklearn.exceptions import ConvergenceWarning

    classification = loss in CLASSIFICATION
    X, y = _problem(6, n=40, classification=classification)
    options = {
        "loss": loss,
        "penalty": penalty,
        "alpha": 0.05,
        "learning_rate": schedule,
        "eta0": 0.05,
        "power_t": 0.3,
        "fit_intercept": fit_intercept,
        "max_iter": 3,
    }
    estimator = sklearn_linear.SGDClassifier if classification else sklearn_linear.SGDRegressor
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = estimator(**options, shuffle=False, tol=None).fit(X, y)
    if not classification:
        options["epsilon"] = model.epsilon
    options["schedule"] = options.pop("learning_rate")
    coef, intercept, _ = ref.fit(X, y, strategy="sgd", **options)
    np.testing.assert_allclose(coef, model.coef_.ravel(), **REORDERED)
    np.testing.assert_allclose(intercept, model.intercept_[0], **REORDERED)


# ---------------------------------------------------------------------------------------------
# The driver's contract
# ---------------------------------------------------------------------------------------------


def test_float32_inputs_give_float64_results_and_are_not_modified():
    X, y = _problem(7, n=9)
    X32, y32 = X.astype(np.float32), y.astype(np.float32)
    coef_init = np.ones(3, dtype=np.float32)
    copies = (X32.copy(), y32.copy(), coef_init.copy())
    coef, intercept, history = ref.fit(
        X32, y32, strategy="minibatch", batch_size=4, coef_init=coef_init, penalty="l1"
    )
    assert coef.dtype == np.float64 and isinstance(intercept, float)
    assert all(isinstance(value, float) for value in history) and len(history) == 5
    for original, copy in zip((X32, y32, coef_init), copies, strict=True):
        np.testing.assert_array_equal(original, copy)


def test_fit_without_intercept_keeps_the_initial_intercept():
    X, y = _problem(8)
    _, intercept, _ = ref.fit(X, y, fit_intercept=False, intercept_init=1.25, strategy="sgd")
    assert intercept == 1.25


def test_fit_refuses_what_it_cannot_do():
    X, y = _problem(9, n=5)
    with pytest.raises(ValueError, match="epoch-level"):
        ref.fit(X, y, schedule="adaptive")
    with pytest.raises(ValueError, match="learning_rate='nope'"):
        ref.fit(X, y, schedule="nope")
    with pytest.raises(ValueError, match="strategy"):
        ref.fit(X, y, strategy="nope")
    with pytest.raises(ValueError, match="orders"):
        ref.fit(X, y, strategy="sgd", orders=[np.arange(5)], max_iter=2)
    with pytest.raises(ValueError, match="sample_weight"):
        ref.fit(X, y, sample_weight=np.zeros(5))
    with pytest.raises(ValueError, match="order"):
        ref.minibatch_epoch(X, y, np.zeros(3), 0.0, np.arange(4), 2, loss="squared_error")


def test_update_rules_hand_worked():
    """The update rules' data step: ``sgd`` takes the schedule's η; passive-aggressive I
    ``min(eta0, L/‖x‖²)`` (no step on a zero row), II ``L/(‖x‖² + 1/(2·eta0))``; and the
    step ``prox(w·(1 − η·l2) − step·g)`` with the penalty's decay at η."""
    row = np.array([3.0, 4.0])  # ‖x‖² = 25
    assert ref.data_step("sgd", 0.1, 5.0, row, eta0=0.5) == 0.1
    assert ref.data_step("pa1", 0.1, 5.0, row, eta0=0.5) == 0.2  # 5/25 < eta0
    assert ref.data_step("pa1", 0.1, 50.0, row, eta0=0.5) == 0.5  # capped at eta0
    assert ref.data_step("pa1", 0.1, 5.0, np.zeros(2), eta0=0.5) == 0.0
    assert ref.data_step("pa2", 0.1, 5.0, row, eta0=0.5) == 5.0 / 26.0
    w = np.array([1.0, -2.0])
    g = np.array([10.0, 0.0])
    # sgd: (1, -2)·(1 − 0.1·0.5) − 0.1·(10, 0) = (-0.05, -1.9); L1 threshold 0.1·1 = 0.1.
    np.testing.assert_allclose(ref.apply_update("sgd", w, g, 0.1, 0.1, 1.0, 0.5), [0.0, -1.8])
    # pa1 with a data step of 0.2 and the same decay: (0.95 − 2, -1.9) → (-0.95, -1.8).
    np.testing.assert_allclose(ref.apply_update("pa1", w, g, 0.2, 0.1, 1.0, 0.5), [-0.95, -1.8])
    with pytest.raises(ValueError, match="update_rule"):
        ref.apply_update("momentum?", w, g, 0.1, 0.1, 0.0, 0.0)
