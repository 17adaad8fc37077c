"""k outputs (issue 13) under ``strategy="full"`` with the engine's full-batch optimizers
(``optimizer="nesterov"`` and ``"lbfgs"``, ``fastgd.full_batch``) on the k-output gradient
kernel (``multi_full_gradient``), and ``learning_rate="auto"`` for the range-tested adaptive
rules (adagrad, rmsprop, adam, adamw) with k outputs."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
import scipy.sparse as sp

import fastgd
from fastgd import engine, multi, options
from fastgd import reference_multi as ref
from fastgd._kernels import multi as kernels
from fastgd._kernels.records import make_spec
from fastgd.full_batch import LBFGS_FTOL

ALPHA = 0.01
#: lbfgs stops at a relative decrease of ``LBFGS_FTOL`` (2.2e-9, scipy's ``ftol``, as for
#: one output): the objective is then within about that of its minimum, and the weights
#: within ``√(2·gap/μ)`` (μ ≥ ALPHA): measured 1.5e-5 to 5e-5 relative on these problems
#: (scikit-learn stops at ``ftol = 64·eps``, so its weights are the exact optimum's).
OBJECTIVE_GAP = 1e-9
WEIGHTS_RTOL = 1e-4


def _classes(n=400, d=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, (X @ rng.standard_normal((d, k))).argmax(axis=1)


def _regression(n=400, d=5, k=3, seed=3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, X @ rng.standard_normal((d, k)) + 0.1 * rng.standard_normal((n, k)) + 1.0


def _objective(mode, X, targets, W, b, loss="log_loss", l1=0.0, l2=ALPHA):
    return ref.multi_objective(mode, X, targets, W, b, loss=loss, l1=l1, l2=l2)


def _fit(X, y, **settings):
    base = dict(strategy="full", penalty="l2", alpha=ALPHA, tol=1e-10, max_iter=1000)
    return fastgd.fit(X, y, **{**base, **settings})


# ---------------------------------------------------------------------------------------------
# The gradient.
# ---------------------------------------------------------------------------------------------

CASES = [("ovr", "log_loss"), ("multi_output", "huber"), ("multinomial", "log_loss")]


def _csr_gradient(X, rows, code, spec, state, k):
    """``multi_full_gradient_csr`` on the rows of ``rows`` with X as CSR."""
    A = sp.csr_matrix(X)
    csr = kernels.CsrMultiRows(A.data, A.indices, A.indptr, *rows[1:])
    grad, deriv_sums = np.empty((k, X.shape[1])), np.empty(k)
    total, bad = kernels.multi_full_gradient_csr(csr, code, spec, state, grad, deriv_sums)
    return (grad, deriv_sums, total, state.losses.copy()), bad


@pytest.mark.parametrize(("mode", "loss"), CASES)
def test_the_gradient_kernel_is_the_references_whatever_the_threads(mode, loss):
    """One pass of ``multi_full_gradient`` gives the reference's gradient sums and losses;
    its chunks (8 here) merge in order, so the parallel and serial sums are the same bits.
    The CSR kernel gives the same sums (up to the order of the additions)."""
    rng = np.random.default_rng(1)
    n, d, k = 2000, 6, 4
    X = rng.standard_normal((n, d))
    labels, Y = rng.integers(0, k, n), rng.standard_normal((n, k))
    W, b = 0.3 * rng.standard_normal((k, d)), rng.standard_normal(k)
    sw = rng.uniform(0.5, 2.0, n)
    code = {"ovr": kernels.OVR, "multi_output": kernels.MULTI_OUTPUT}.get(mode, kernels.SOFTMAX)
    regression = mode == "multi_output"
    rows = kernels.MultiRows(X, Y if regression else np.empty((0, k)),
                             np.empty(0, np.int64) if regression else labels, sw,
                             np.empty(0, np.int64))  # fmt: skip
    spec = make_spec(loss=options.loss_by_name(loss).code, epsilon=0.1, schedule=0,
                     rule=options.update_rule_by_name("sgd").code, eta0=0.1, power_t=0.25,
                     alpha=0.0, optimal_init=1.0, l1=0.0, l2=0.0, fit_intercept=True,
                     average_start=0.0)  # fmt: skip
    runs = []
    for parallel in (False, True):
        state = kernels.MultiState(W.copy(), b.copy(), 1.0, np.empty((0, 0)), np.empty(0),
                                   np.zeros(k), np.zeros((k, 0, d + 1)),
                                   np.zeros((k, 0)))  # fmt: skip
        grad, deriv_sums = np.empty((k, d)), np.empty(k)
        total, bad = kernels.multi_full_gradient(rows, code, spec, state, parallel, grad,
                                                 deriv_sums)  # fmt: skip
        assert bad == -1
        runs.append((grad, deriv_sums, total, state.losses.copy()))
    for serial, parallel in zip(*runs, strict=True):
        np.testing.assert_array_equal(serial, parallel)
    state = kernels.MultiState(W.copy(), b.copy(), 1.0, np.empty((0, 0)), np.empty(0),
                               np.zeros(k), np.zeros((k, 0, d + 1)),
                               np.zeros((k, 0)))  # fmt: skip
    csr, bad = _csr_gradient(X, rows, code, spec, state, k)
    assert bad == -1
    for dense_part, csr_part in zip(runs[0], csr, strict=True):
        np.testing.assert_allclose(csr_part, dense_part, rtol=1e-12, atol=1e-10)
    grad, deriv_sums, total, losses = runs[0]
    targets = Y if regression else labels
    G_W, g_b = ref.multi_gradient(mode, X, targets, W, b, loss=loss, sample_weight=sw)
    np.testing.assert_allclose(grad / n, G_W, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(deriv_sums / n, g_b, rtol=1e-10, atol=1e-13)
    values, _ = ref.row_losses(mode, X @ W.T + b, targets, loss)
    np.testing.assert_allclose(losses, sw @ values, rtol=1e-12)
    np.testing.assert_allclose(total, losses.sum(), rtol=1e-12)


@pytest.mark.parametrize(("mode", "loss"), CASES)
def test_the_optimizers_objective_and_gradient_pass_finite_differences(mode, loss):
    """What nesterov and lbfgs see (``x`` = W.ravel() then b): the loop's objective, mean
    loss plus penalties, and its gradient, checked by central differences."""
    X, labels = _classes(n=200, k=3, seed=5)
    Y = np.random.default_rng(5).standard_normal((200, 3))
    y = Y if mode == "multi_output" else labels
    resolved = engine.resolve_options(loss=loss, strategy="full", optimizer="lbfgs",
                                      penalty="l2", alpha=0.05)  # fmt: skip
    data = multi._data(X, y, resolved["loss"], sample_weight=None, normalize_weights=True,
                       classes=None, multinomial=mode == "multinomial",
                       fit_intercept=True)  # fmt: skip
    epochs = multi._FullBatchEpochs(data, resolved)
    k, d = data.k, X.shape[1]
    epochs.spec = multi._spec(resolved, 0.1, resolved["loss"].code)
    epochs.state = kernels.MultiState(np.zeros((k, d)), np.zeros(k), 1.0, np.empty((0, 0)),
                                      np.empty(0), np.zeros(k), np.zeros((k, 0, d + 1)),
                                      np.zeros((k, 0)))  # fmt: skip
    x = np.random.default_rng(6).standard_normal(k * d + k) * 0.5
    point = epochs._evaluate(x)
    W, b = x[: k * d].reshape(k, d), x[k * d :]
    assert point.value == pytest.approx(_objective(mode, X, y, W, b, loss, l2=0.05), rel=1e-12)
    h = 1e-6
    numeric = np.array([
        (epochs._evaluate(x + h * e).value - epochs._evaluate(x - h * e).value) / (2 * h)
        for e in np.eye(x.shape[0])
    ])  # fmt: skip
    np.testing.assert_allclose(point.gradient, numeric, rtol=1e-5, atol=1e-8)


# ---------------------------------------------------------------------------------------------
# lbfgs.
# ---------------------------------------------------------------------------------------------


def test_lbfgs_reaches_scikit_learns_multinomial_optimum():
    from sklearn.linear_model import LogisticRegression

    for seed in (0, 2):
        X, y = _classes(seed=seed)
        result = _fit(X, y, loss="log_loss", multiclass="multinomial", optimizer="lbfgs")
        exact = LogisticRegression(C=1.0 / (ALPHA * X.shape[0]), tol=1e-12,
                                   max_iter=10_000).fit(X, y)  # fmt: skip
        assert result.converged and result.extras["evaluations"] >= result.n_iter
        gap = _objective("multinomial", X, y, result.coef, result.intercept) - _objective(
            "multinomial", X, y, exact.coef_, exact.intercept_
        )
        assert -1e-12 < gap < OBJECTIVE_GAP
        scale = np.abs(exact.coef_).max()
        np.testing.assert_allclose(result.coef, exact.coef_, rtol=0, atol=WEIGHTS_RTOL * scale)
        np.testing.assert_allclose(result.intercept, exact.intercept_, atol=WEIGHTS_RTOL * scale)
        # The loss curve is the objective at each iteration's start: it never rises.
        assert np.all(np.diff(result.loss_history) <= 0.0)


def test_lbfgs_takes_as_many_iterations_as_scipys_on_the_same_objective():
    """The same algorithm as one output's: scipy's L-BFGS-B with the same gtol and ftol on
    the summed objective of x = (W.ravel(), b) reaches the same minimum in about as many
    iterations."""
    X, y = _classes(seed=1)
    k, d = 3, X.shape[1]

    def value_and_gradient(x):
        W, b = x[: k * d].reshape(k, d), x[k * d :]
        G_W, g_b = ref.multi_gradient("multinomial", X, y, W, b, loss="log_loss", l2=ALPHA)
        return _objective("multinomial", X, y, W, b), np.append(G_W.ravel(), g_b)

    scipy_run = scipy.optimize.minimize(
        value_and_gradient, np.zeros(k * d + k), jac=True, method="L-BFGS-B",
        options={"gtol": 1e-10, "ftol": LBFGS_FTOL, "maxiter": 500},
    )  # fmt: skip
    result = _fit(X, y, loss="log_loss", multiclass="multinomial", optimizer="lbfgs")
    found = _objective("multinomial", X, y, result.coef, result.intercept)
    assert abs(found - scipy_run.fun) <= 1e-8  # both stop at ftol (one output's test's bound)
    assert abs(result.n_iter - scipy_run.nit) <= max(2, 0.2 * scipy_run.nit)


@pytest.mark.parametrize("kind", ["ovr", "multi_output"])
def test_lbfgs_equals_the_single_output_fits_output_by_output(kind):
    """ovr and multi-output objectives are sums of one output's: the k-output optimum is
    each output's single-output lbfgs optimum (up to both fits' stopping rule)."""
    if kind == "ovr":
        X, labels = _classes(seed=3)
        loss, y = "log_loss", labels
        targets = [np.where(labels == o, 1.0, -1.0) for o in range(3)]
    else:
        X, y = _regression()
        loss, targets = "squared_error", list(y.T)
    result = _fit(X, y, loss=loss, optimizer="lbfgs")
    assert result.coef.shape == (3, X.shape[1]) and result.converged
    for o, target in enumerate(targets):
        single = _fit(X, target, loss=loss, optimizer="lbfgs")
        scale = np.abs(single.coef).max()
        np.testing.assert_allclose(result.coef[o], single.coef, atol=WEIGHTS_RTOL * scale)
        assert abs(result.intercept[o] - single.intercept) < WEIGHTS_RTOL * scale


def test_lbfgs_refuses_l1_and_non_smooth_losses_as_for_one_output():
    X, y = _classes()
    with pytest.raises(ValueError, match="cannot minimise the L1 part"):
        _fit(X, y, loss="log_loss", multiclass="multinomial", optimizer="lbfgs", penalty="l1")
    with pytest.raises(ValueError, match="needs a smooth loss"):
        _fit(X, y, loss="hinge", optimizer="lbfgs")


# ---------------------------------------------------------------------------------------------
# nesterov.
# ---------------------------------------------------------------------------------------------


def test_nesterov_descends_to_the_lbfgs_optimum():
    X, y = _classes()
    best = _fit(X, y, loss="log_loss", multiclass="multinomial", optimizer="lbfgs")
    result = _fit(X, y, loss="log_loss", multiclass="multinomial", optimizer="nesterov",
                  tol=1e-12, max_iter=3000)  # fmt: skip
    optimum = _objective("multinomial", X, y, best.coef, best.intercept)
    found = _objective("multinomial", X, y, result.coef, result.intercept)
    assert found - optimum < 1e-8
    history = result.loss_history
    assert history[-1] < 0.5 * history[0]
    # It may rise only where it restarts its momentum (then falls again).
    assert result.extras["restarts"] >= int(np.sum(np.diff(history) > 0.0))
    np.testing.assert_allclose(result.coef, best.coef, atol=1e-3 * np.abs(best.coef).max())


def test_nesterov_takes_l1_by_its_prox():
    """The elastic-net optimum's conditions: ``|∇ + l1·sign(w)| ≈ 0`` where ``w ≠ 0``,
    ``|∇| ≤ l1`` where ``w = 0`` (∇ the smooth part's gradient), and some weights are 0."""
    X, y = _classes(d=8, seed=4)
    alpha, ratio = 0.05, 0.5
    result = _fit(X, y, loss="log_loss", multiclass="multinomial", optimizer="nesterov",
                  penalty="elasticnet", alpha=alpha, l1_ratio=ratio, tol=1e-12,
                  max_iter=3000)  # fmt: skip
    l1, l2 = alpha * ratio, alpha * (1.0 - ratio)
    W, b = result.coef, result.intercept
    G_W, g_b = ref.multi_gradient("multinomial", X, y, W, b, loss="log_loss", l2=l2)
    zero = W == 0.0
    assert zero.any() and not zero.all()
    assert np.abs(G_W[zero]).max() <= l1 + 1e-9
    assert np.abs(G_W[~zero] + l1 * np.sign(W[~zero])).max() < 1e-6
    assert np.abs(g_b).max() < 1e-6


@pytest.mark.parametrize("optimizer", ["nesterov", "lbfgs"])
def test_float32_stays_float32_near_the_float64_optimum(optimizer):
    X, y = _classes()
    settings = dict(loss="log_loss", multiclass="multinomial", optimizer=optimizer, tol=1e-6)
    wide = _fit(X, y, **settings)
    narrow = _fit(X.astype(np.float32), y, **settings)
    assert narrow.coef.dtype == np.float32 and narrow.intercept.dtype == np.float32
    J = _objective("multinomial", X, y, narrow.coef, narrow.intercept)
    assert J - _objective("multinomial", X, y, wide.coef, wide.intercept) < 1e-5


def test_the_loop_keeps_its_rules_under_the_full_batch_optimizers():
    """The callback stops the run; a fixed step too large diverges with the best weights."""
    X, y = _classes()
    seen = []
    stopped = _fit(X, y, loss="log_loss", optimizer="nesterov",
                   callback=lambda epoch, coef, b, loss: seen.append(loss) or epoch == 3,
                   )  # fmt: skip
    assert stopped.n_iter == 3 and seen == list(stopped.loss_history)
    with pytest.raises(fastgd.DivergenceError) as caught:
        _fit(X * 1e150, y, loss="squared_hinge", optimizer="nesterov",
             learning_rate="constant", eta0=1e3)  # fmt: skip
    assert caught.value.coef.shape == (3, X.shape[1])


@pytest.mark.parametrize("optimizer", ["gd", "nesterov"])
def test_a_full_batch_divergence_keeps_the_weights_of_the_best_loss(optimizer):
    """A full batch's loss is that of the weights at the epoch's start (as in the engine's
    loop): the error's weights are those whose objective is the lowest recorded."""
    X, Y = _regression()
    with pytest.raises(fastgd.DivergenceError) as caught:
        _fit(X, Y, loss="squared_error", optimizer=optimizer, learning_rate="constant",
             eta0=50.0, max_iter=100)  # fmt: skip
    error = caught.value
    assert len(error.loss_history) > 1
    found = _objective("multi_output", X, Y, error.coef, error.intercept, "squared_error")
    assert found == pytest.approx(error.loss_history.min(), rel=1e-12)


@pytest.mark.parametrize("optimizer", ["nesterov", "lbfgs"])
def test_csr_and_dense_rows_reach_the_same_weights(optimizer):
    X, y = _classes()
    X[X < 0.3] = 0.0  # about 60% zeros
    settings = dict(loss="log_loss", multiclass="multinomial", optimizer=optimizer,
                    max_iter=200)  # fmt: skip
    dense = _fit(X, y, **settings)
    csr = _fit(sp.csr_matrix(X), y, **settings)
    np.testing.assert_allclose(csr.coef, dense.coef, rtol=0, atol=1e-9)
    np.testing.assert_allclose(csr.intercept, dense.intercept, rtol=0, atol=1e-9)


# ---------------------------------------------------------------------------------------------
# learning_rate="auto" of the adaptive rules: a range test with the k-output kernels.
# ---------------------------------------------------------------------------------------------

#: Constant steps, one per decade: auto's yardstick (as tests/test_adaptive_auto.py's).
GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
#: Auto's objective gap at most this many times the grid's best, plus ``GAP_SLACK`` (the
#: single-output tests' factor, tests/test_adaptive_auto.py).
GAP_FACTOR = 10.0
GAP_SLACK = 1e-6


def _gap(X, y, optimum, **settings):
    settings = dict(loss="log_loss", multiclass="multinomial", penalty="l2", alpha=ALPHA,
                    random_state=0, max_iter=100, **settings)  # fmt: skip
    try:
        result = fastgd.fit(X, y, **settings)
    except fastgd.DivergenceError:
        return np.inf, None
    return _objective("multinomial", X, y, result.coef, result.intercept) - optimum, result


@pytest.mark.parametrize("optimizer", ["adagrad", "rmsprop", "adam", "adamw"])
def test_auto_runs_a_range_test_and_converges_on_three_classes(optimizer):
    """Without divergence or back-off, to an objective gap within ``GAP_FACTOR`` times the
    best constant step's of a decade grid, each run as long (measured: 0.3 to 2.7 times)."""
    X, y = _classes(seed=3)
    X[:, 0] *= 30.0  # one feature of another scale: the step is in the weights' units
    best = _fit(X, y, loss="log_loss", multiclass="multinomial", optimizer="lbfgs")
    optimum = _objective("multinomial", X, y, best.coef, best.intercept)
    for strategy in ("sgd", "minibatch"):
        gap, auto = _gap(X, y, optimum, optimizer=optimizer, strategy=strategy)
        assert auto is not None, f"{optimizer}/{strategy}: auto diverged"
        assert auto.extras["auto_backtracks"] == 0
        assert np.isfinite(auto.loss_history).all()
        grid = [
            _gap(X, y, optimum, optimizer=optimizer, strategy=strategy,
                 learning_rate="constant", eta0=eta)[0]
            for eta in GRID
        ]  # fmt: skip
        assert -GAP_SLACK < gap <= GAP_FACTOR * min(grid) + GAP_SLACK, (strategy, gap, grid)


def test_auto_range_test_for_multi_output_regression_and_its_seed():
    X, Y = _regression()
    runs = [
        fastgd.fit(X, Y, optimizer="adam", strategy="minibatch", random_state=2, max_iter=50)
        for _ in range(2)
    ]
    assert runs[0].learning_rate == runs[1].learning_rate
    np.testing.assert_array_equal(runs[0].coef, runs[1].coef)
    assert runs[0].extras["auto_backtracks"] == 0
    design = np.hstack([X, np.ones((X.shape[0], 1))])
    exact = np.linalg.lstsq(design, Y, rcond=None)[0]
    np.testing.assert_allclose(runs[0].coef, exact[:-1].T, atol=0.05)


def test_fit_csv_of_k_classes_refuses_auto_for_the_adaptive_rules_naming_why(tmp_path):
    """fit_csv's k-class blocks run no range test: the curvature bound would be the wrong
    step for those rules, so they say so."""
    X, y = _classes(n=60)
    path = tmp_path / "three.csv"
    header = ",".join([f"x{j}" for j in range(X.shape[1])] + ["y"])
    np.savetxt(path, np.column_stack([X, y]), delimiter=",", header=header, comments="")
    with pytest.raises(ValueError, match="runs a range test on rows in memory"):
        fastgd.fit_csv(path, target="y", loss="log_loss", optimizer="adam", max_iter=2)


def test_k_outputs_stop_on_a_held_out_score():
    """validation_score with k outputs: its value after each epoch, and tol stops on it."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((400, 5))
    y = (X @ rng.standard_normal((5, 3))).argmax(axis=1)
    seen = []

    def falling(coef, intercept):
        assert coef.shape == (3, 5) and intercept.shape == (3,)
        seen.append(1)
        return 1.0 - 0.01 * len(seen)  # never better: stops after n_iter_no_change epochs

    result = fastgd.fit(X, y, loss="log_loss", multiclass="multinomial", max_iter=50,
                        tol=1e-3, n_iter_no_change=3, validation_score=falling)  # fmt: skip
    assert result.n_iter == 4 and len(seen) == 4
    np.testing.assert_allclose(result.validation_scores, [0.99, 0.98, 0.97, 0.96])
    untouched = fastgd.fit(X, y, loss="log_loss", multiclass="multinomial", max_iter=4,
                           tol=None, random_state=0)  # fmt: skip
    assert untouched.validation_scores is None


def test_multinomial_classifier_stops_early_on_held_out_rows():
    from fastgd import SGDClassifier

    rng = np.random.default_rng(6)
    X = rng.standard_normal((600, 5))
    y = (X @ rng.standard_normal((5, 4))).argmax(axis=1)
    model = SGDClassifier(loss="log_loss", multiclass="multinomial", early_stopping=True,
                          max_iter=200, tol=1e-3, n_iter_no_change=3, random_state=0)  # fmt: skip
    model.fit(X, y)
    assert model.coef_.shape == (4, 5)
    assert model.n_iter_ < 200 and model.score(X, y) > 0.85


def test_k_outputs_continue_an_earlier_fits_rule_state():
    """slots_init (k, slots, d + 1): two fits of 2 epochs with the state carried are one
    fit of 4 in file order; another shape starts afresh."""
    rng = np.random.default_rng(8)
    X = rng.standard_normal((300, 4))
    y = (X @ rng.standard_normal((4, 3))).argmax(axis=1)
    settings = dict(loss="log_loss", optimizer="adam", learning_rate="constant", eta0=0.01,
                    shuffle=False, tol=None, strategy="sgd")  # fmt: skip
    whole = fastgd.fit(X, y, max_iter=4, **settings)
    first = fastgd.fit(X, y, max_iter=2, **settings)
    assert first.slots.shape == (3, 2, 5)
    second = fastgd.fit(X, y, max_iter=2, coef_init=first.coef, intercept_init=first.intercept,
                        slots_init=first.slots, t_init=first.t, **settings)  # fmt: skip
    np.testing.assert_allclose(second.coef, whole.coef, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(second.slots, whole.slots, rtol=1e-12, atol=1e-14)
    afresh = fastgd.fit(X, y, max_iter=2, coef_init=first.coef, intercept_init=first.intercept,
                        slots_init=first.slots[:, :1], t_init=first.t, **settings)  # fmt: skip
    assert not np.allclose(afresh.coef, whole.coef)


def test_multinomial_partial_fit_continues_the_optimizers_state():
    """Two partial_fit calls are the two epochs of one fit: Adam's moments carry over."""
    from fastgd import SGDClassifier

    rng = np.random.default_rng(9)
    X = rng.standard_normal((300, 4))
    y = (X @ rng.standard_normal((4, 3))).argmax(axis=1)
    settings = dict(loss="log_loss", multiclass="multinomial", optimizer="adam",
                    learning_rate="constant", eta0=0.01, shuffle=False, tol=None)  # fmt: skip
    whole = SGDClassifier(max_iter=2, **settings).fit(X, y)
    calls = SGDClassifier(**settings)
    calls.partial_fit(X, y, classes=np.unique(y))
    calls.partial_fit(X, y)
    np.testing.assert_allclose(calls.coef_, whole.coef_, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(calls.intercept_, whole.intercept_, rtol=1e-12, atol=1e-14)
