"""The k-output kernels (``fastgd._kernels.multi``) against their numpy twin
(``fastgd.reference_multi``) and against the single-output kernels, and ``fastgd.fit`` with
k outputs (issue 13)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import property_settings, tol
from hypothesis import given
from hypothesis import strategies as st

import fastgd
from fastgd import options
from fastgd import reference_multi as ref
from fastgd._kernels import epochs
from fastgd._kernels import multi as kernels
from fastgd._kernels.order import fill_epoch_order
from fastgd._kernels.records import make_spec, make_state
from fastgd.multi import MultiFitResult, softmax

MODES = {
    "ovr": (kernels.OVR, ("hinge", "log_loss", "modified_huber", "squared_hinge")),
    "multi_output": (kernels.MULTI_OUTPUT, ("squared_error", "huber", "epsilon_insensitive")),
    "multinomial": (kernels.SOFTMAX, ("log_loss",)),
}
#: (l1, l2) of the penalties tried: none, L2, elastic net.
PENALTIES = ((0.0, 0.0), (0.0, 0.05), (0.01, 0.02))


def _spec(loss, schedule, eta0, l1, l2, average_start, fit_intercept=True, rule="sgd"):
    return make_spec(
        loss=options.loss_by_name(loss).code, epsilon=0.1,
        schedule=options.schedule_by_name(schedule).kernel_code,
        rule=options.update_rule_by_name(rule).code, eta0=eta0, power_t=0.25, alpha=0.01,
        optimal_init=50.0, l1=l1, l2=l2, fit_intercept=fit_intercept,
        average_start=average_start,
    )  # fmt: skip


def _state(W, n, averaging, rule="sgd"):
    """A k-output state from the weights ``W``, with the rule's slots per output."""
    k, d = W.shape
    update_rule = options.update_rule_by_name(rule)
    return kernels.MultiState(
        W, np.zeros(k), 1.0, np.zeros((k, d)) if averaging else np.empty((0, 0)),
        np.zeros(k) if averaging else np.empty(0), np.zeros(k),
        np.zeros((k, update_rule.slots, d + 1)),
        np.zeros((k, n if update_rule.row_memory else 0)),
    )  # fmt: skip


def _problem(seed, n, d, k, dtype, mode):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    labels = rng.integers(0, k, n)
    Y = rng.standard_normal((n, k)).astype(dtype)
    targets = Y if mode == "multi_output" else labels
    return rng, X, labels, Y, targets


def _run_kernel(mode, X, labels, Y, order, batch_size, spec, sw, averaging, csr, rule="sgd"):
    """One epoch of the k-output kernel from zero weights; returns (W, b, out, state)."""
    code = MODES[mode][0]
    k = Y.shape[1]
    W = np.zeros((k, X.shape[1]), dtype=X.dtype)
    state = _state(W, X.shape[0], averaging, rule)
    Yk = Y if code == kernels.MULTI_OUTPUT else np.empty((0, k), dtype=X.dtype)
    labels_k = np.empty(0, np.int64) if code == kernels.MULTI_OUTPUT else labels
    if csr:
        A = sp.csr_matrix(X)
        rows = kernels.CsrMultiRows(A.data, A.indices, A.indptr, Yk, labels_k, sw, order)
        if batch_size == 1:
            out = kernels.multi_sgd_epoch_csr(rows, code, spec, state)
        else:
            out = kernels.multi_batch_epoch_csr(rows, code, batch_size, spec, state)
    else:
        rows = kernels.MultiRows(X, Yk, labels_k, sw, order)
        plain = rule == "sgd"
        if batch_size == 1:
            epoch = kernels.multi_sgd_epoch if plain else kernels.multi_rule_sgd_epoch
            out = epoch(rows, code, spec, state, 0)
        else:
            epoch = kernels.multi_batch_epoch if plain else kernels.multi_rule_batch_epoch
            out = epoch(rows, code, batch_size, spec, state, False)
    return W, state.b, out, state


@st.composite
def cases(draw):
    mode = draw(st.sampled_from(tuple(MODES)))
    return dict(
        mode=mode,
        loss=draw(st.sampled_from(MODES[mode][1])),
        schedule=draw(st.sampled_from(("constant", "optimal", "invscaling"))),
        penalty=draw(st.sampled_from(PENALTIES)),
        batch_size=draw(st.sampled_from((1, 5, 64))),
        averaging=draw(st.booleans()),
        weighted=draw(st.booleans()),
        csr=draw(st.booleans()),
        dtype=draw(st.sampled_from((np.float64, np.float32))),
        seed=draw(st.integers(0, 2**16)),
        k=draw(st.integers(2, 5)),
    )


@property_settings(30)
@given(case=cases())
def test_kernel_matches_the_reference(case):
    """Every strategy (per-sample, mini-batch, full), dense and CSR, ovr/multi-output/
    softmax, with penalties, schedules, weights and averaging: kernel == numpy twin."""
    n, d, k = 40, 6, case["k"]
    rng, X, labels, Y, targets = _problem(case["seed"], n, d, k, case["dtype"], case["mode"])
    if case["csr"]:
        X[rng.random(X.shape) < 0.5] = 0.0
    order = rng.permutation(n).astype(np.int64)
    sw = rng.uniform(0.2, 2.0, n) if case["weighted"] else np.empty(0)
    l1, l2 = case["penalty"]
    eta0 = 0.05 if case["schedule"] != "optimal" else 0.0
    spec = _spec(case["loss"], case["schedule"], eta0, l1, l2, 3.0 if case["averaging"] else 0.0)
    W, b, (total, t, bad), state = _run_kernel(
        case["mode"], X, labels, Y, order, case["batch_size"], spec, sw, case["averaging"],
        case["csr"],
    )  # fmt: skip
    expected = ref.multi_epoch(
        case["mode"], X, targets, np.zeros((k, d)), np.zeros(k), order, case["batch_size"],
        loss=case["loss"], sample_weight=sw if case["weighted"] else None, l1=l1, l2=l2,
        schedule=case["schedule"], eta0=eta0, alpha=0.01, optimal_init=50.0,
        average=(np.zeros((k, d)), np.zeros(k), 3.0) if case["averaging"] else None,
    )  # fmt: skip
    close = tol(case["dtype"])
    assert bad == -1
    assert t == expected[3]
    np.testing.assert_allclose(W, expected[0], **close)
    np.testing.assert_allclose(b, expected[1], **close)
    np.testing.assert_allclose(total, expected[2], **close)
    np.testing.assert_allclose(state.losses, expected[4], **close)
    if case["averaging"]:
        np.testing.assert_allclose(state.avg_W, expected[5], **close)
        np.testing.assert_allclose(state.avg_b, expected[6], **close)


OPTIMIZERS = ("momentum", "adagrad", "rmsprop", "adam", "adamw", "saga")


@property_settings(24)
@given(
    case=cases(),
    rule=st.sampled_from(OPTIMIZERS),
    nesterov=st.booleans(),
)
def test_optimizer_rules_match_the_reference(case, rule, nesterov):
    """The optimizer rules on dense rows, each output with its own slots (and SAGA's row
    memory): kernel == numpy twin, per-sample and mini-batch."""
    n, d, k = 40, 6, case["k"]
    rng, X, labels, Y, targets = _problem(case["seed"], n, d, k, case["dtype"], case["mode"])
    order = rng.permutation(n).astype(np.int64)
    sw = rng.uniform(0.2, 2.0, n) if case["weighted"] else np.empty(0)
    l1, l2 = case["penalty"]
    spec = _spec(case["loss"], "constant", 0.02, l1, l2, 3.0 if case["averaging"] else 0.0,
                 rule=rule)._replace(nesterov=nesterov)  # fmt: skip
    W, b, (total, t, bad), state = _run_kernel(
        case["mode"], X, labels, Y, order, case["batch_size"], spec, sw, case["averaging"],
        False, rule,
    )  # fmt: skip
    expected = ref.multi_epoch(
        case["mode"], X, targets, np.zeros((k, d)), np.zeros(k), order, case["batch_size"],
        loss=case["loss"], sample_weight=sw if case["weighted"] else None, l1=l1, l2=l2,
        eta0=0.02, average=(np.zeros((k, d)), np.zeros(k), 3.0) if case["averaging"] else None,
        update_rule=rule, optimizer={"nesterov": nesterov},
    )  # fmt: skip
    close = tol(case["dtype"])
    assert bad == -1 and t == expected[3]
    np.testing.assert_allclose(total, expected[2], **close)
    np.testing.assert_allclose(W, expected[0], **close)
    np.testing.assert_allclose(b, expected[1], **close)
    np.testing.assert_allclose(state.losses, expected[4], **close)
    np.testing.assert_allclose(state.slots, expected[-1]["slots"], **close)
    if case["averaging"]:
        np.testing.assert_allclose(state.avg_W, expected[5], **close)


@pytest.mark.parametrize("mode", ["ovr", "multi_output"])
@pytest.mark.parametrize("batch_size", [1, 16])
@pytest.mark.parametrize("l1", [0.0, 0.01])
def test_one_pass_equals_the_single_output_kernel_output_by_output(mode, batch_size, l1):
    """For ovr and multi-output, row o of W is what the single-output kernel trains on
    output o with the same order and steps (it inherits their correctness)."""
    n, d, k = 200, 8, 3
    rng, X, labels, Y, _ = _problem(7, n, d, k, np.float64, mode)
    order = rng.permutation(n).astype(np.int64)
    loss = "hinge" if mode == "ovr" else "squared_error"
    spec = _spec(loss, "invscaling", 0.02, l1, 0.01, 0.0)
    W, b, (total, _, _), _ = _run_kernel(
        mode, X, labels, Y, order, batch_size, spec, np.empty(0), False, False
    )
    single_total = 0.0
    for o in range(k):
        y = np.where(labels == o, 1.0, -1.0) if mode == "ovr" else Y[:, o].copy()
        w = np.zeros(d)
        state = make_state(w, 0.0, 1.0)
        if batch_size == 1:
            intercept, loss_sum, _, _ = epochs.sgd_epoch(X, y, np.empty(0), order, spec, state, 0)
        else:
            intercept, loss_sum, _, _ = epochs.batch_epoch(
                X, y, np.empty(0), order, batch_size, spec, state, False, 0
            )
        single_total += loss_sum
        np.testing.assert_allclose(W[o], w, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(b[o], intercept, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(total, single_total, rtol=1e-12)


@pytest.mark.parametrize("mode", ["ovr", "multi_output"])
@pytest.mark.parametrize("shuffle", ["full", "block"])
@pytest.mark.parametrize("l1", [0.0, 0.01])
def test_grouped_outputs_equal_the_single_output_kernel(mode, shuffle, l1):
    """Outputs taken four at a time (``kernels.GROUP``) and the rest one by one, on rows
    whose length no vector width divides, in a shuffled order (rows prefetched ahead) and a
    block order (the next block streamed): each row of W is still the single-output
    kernel's on its output."""
    n, d, k = 300, 37, 6
    _rng, X, labels, Y, _ = _problem(11, n, d, k, np.float64, mode)
    order = np.empty(n, np.int64)
    block_rows = 64 if shuffle == "block" else 0
    code = options.SHUFFLE_BLOCK if shuffle == "block" else options.SHUFFLE_FULL
    fill_epoch_order(order, code, 64, 5)
    loss = "hinge" if mode == "ovr" else "squared_error"
    spec = _spec(loss, "invscaling", 0.02, l1, 0.01, 0.0)
    W = np.zeros((k, d))
    state = _state(W, n, False)
    code = MODES[mode][0]
    Yk = Y if code == kernels.MULTI_OUTPUT else np.empty((0, k))
    labels_k = np.empty(0, np.int64) if code == kernels.MULTI_OUTPUT else labels
    rows = kernels.MultiRows(X, Yk, labels_k, np.empty(0), order)
    total, _, bad = kernels.multi_sgd_epoch(rows, code, spec, state, block_rows)
    assert bad == -1
    single_total = 0.0
    for o in range(k):
        y = np.where(labels == o, 1.0, -1.0) if mode == "ovr" else Y[:, o].copy()
        w = np.zeros(d)
        single = make_state(w, 0.0, 1.0)
        intercept, loss_sum, _, _ = epochs.sgd_epoch(
            X, y, np.empty(0), order, spec, single, block_rows
        )
        single_total += loss_sum
        np.testing.assert_allclose(W[o], w, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(state.b[o], intercept, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(total, single_total, rtol=1e-12)


def test_parallel_batches_equal_serial_ones_bit_for_bit():
    """Chunks depend on the batch size only and merge in order: the thread count (here:
    parallel or not) changes no bit."""
    n, d, k = 3000, 5, 4
    _rng, X, labels, _Y, _ = _problem(3, n, d, k, np.float64, "multinomial")
    rows = kernels.MultiRows(X, np.empty((0, k)), labels, np.empty(0), np.empty(0, np.int64))
    spec = _spec("log_loss", "constant", 0.1, 0.0, 0.01, 0.0)
    results = []
    for parallel in (False, True):
        W = np.zeros((k, d))
        state = _state(W, n, False)
        kernels.multi_batch_epoch(rows, kernels.SOFTMAX, 1024, spec, state, parallel)
        results.append((W, state.b))
    assert np.array_equal(results[0][0], results[1][0])
    assert np.array_equal(results[0][1], results[1][1])


def test_a_non_finite_score_stops_the_epoch_at_its_row():
    n, d, k = 20, 3, 3
    _, X, labels, Y, _ = _problem(1, n, d, k, np.float64, "ovr")
    X[4, 1] = np.inf
    spec = _spec("hinge", "constant", 0.01, 0.0, 0.0, 0.0)
    order = np.arange(n, dtype=np.int64)
    _, _, (_, _, bad), _ = _run_kernel(
        "ovr", X, labels, Y, order, 1, spec, np.empty(0), False, False
    )
    assert bad == 4


# ---------------------------------------------------------------------------------------------
# fastgd.fit with k outputs.
# ---------------------------------------------------------------------------------------------


def _classes(n=600, d=5, k=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, (X @ rng.standard_normal((d, k))).argmax(axis=1) * 10 + 3  # labels 3, 13, ...


@pytest.mark.parametrize("multiclass", ["ovr", "multinomial"])
@pytest.mark.parametrize("strategy", ["sgd", "minibatch", "full"])
def test_fit_trains_k_classes_in_one_model(multiclass, strategy):
    X, y = _classes()
    result = fastgd.fit(X, y, loss="log_loss", multiclass=multiclass, strategy=strategy,
                        random_state=0, max_iter=40)  # fmt: skip
    assert isinstance(result, MultiFitResult)
    assert result.coef.shape == (4, 5) and result.intercept.shape == (4,)
    assert list(result.classes) == [3, 13, 23, 33]
    assert (result.predict(X) == y).mean() > 0.85
    proba = result.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    if multiclass == "multinomial":
        np.testing.assert_allclose(proba, softmax(result.decision_function(X)), rtol=1e-12)


def test_multinomial_full_batch_reaches_the_softmax_optimum():
    """Against scikit-learn's LogisticRegression (lbfgs, multinomial) on the same L2
    objective: the objective gap closes."""
    from sklearn.linear_model import LogisticRegression

    X, y = _classes(n=400, seed=2)
    alpha = 0.01
    result = fastgd.fit(X, y, loss="log_loss", multiclass="multinomial", strategy="full",
                        penalty="l2", alpha=alpha, max_iter=3000, tol=1e-12)  # fmt: skip
    exact = LogisticRegression(C=1.0 / (alpha * X.shape[0]), tol=1e-12, max_iter=10_000).fit(X, y)
    labels = np.searchsorted(result.classes, y)

    def objective(W, b):
        return ref.multi_objective("multinomial", X, labels, W, b, loss="log_loss", l2=alpha)

    gap = objective(result.coef, result.intercept) - objective(exact.coef_, exact.intercept_)
    assert abs(gap) < 1e-6


def test_multi_output_regression_reaches_least_squares():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((500, 6))
    Y = X @ rng.standard_normal((6, 3)) + rng.standard_normal((500, 3)) * 0.1 + 2.0
    result = fastgd.fit(X, Y, strategy="full", max_iter=2000, tol=1e-14)
    design = np.hstack([X, np.ones((500, 1))])
    exact = np.linalg.lstsq(design, Y, rcond=None)[0]
    np.testing.assert_allclose(result.coef, exact[:6].T, atol=1e-6)
    np.testing.assert_allclose(result.intercept, exact[6], atol=1e-6)
    assert result.predict(X).shape == (500, 3)


def test_csr_and_dense_fits_agree():
    X, y = _classes()
    options_ = dict(loss="hinge", strategy="sgd", learning_rate="optimal", random_state=3,
                    max_iter=3, tol=None)  # fmt: skip
    dense = fastgd.fit(X, y, **options_)
    sparse = fastgd.fit(sp.csr_matrix(X), y, **options_)
    np.testing.assert_allclose(sparse.coef, dense.coef, rtol=1e-9, atol=1e-12)


def test_two_classes_keep_the_single_output_path():
    X, y = _classes(k=2)
    result = fastgd.fit(X, y, loss="log_loss", random_state=0)
    assert result.coef.shape == (5,)


@pytest.mark.parametrize(
    ("options_", "match"),
    [
        (dict(loss="hinge", multiclass="multinomial"), "log_loss"),
        (dict(loss="hinge", strategy="sgd", learning_rate="pa1"), "with k > 1 outputs"),
        (dict(loss="log_loss", multiclass="softmax"), "multiclass"),
    ],
)
def test_what_k_outputs_do_not_run_is_refused_by_name(options_, match):
    X, y = _classes()
    with pytest.raises(ValueError, match=match):
        fastgd.fit(X, y, **options_)


def test_a_diverging_fixed_step_raises_with_the_best_weights():
    X, y = _classes()
    with pytest.raises(fastgd.DivergenceError) as caught:
        fastgd.fit(X * 1e150, y, loss="squared_hinge", learning_rate="constant", eta0=1e3,
                   strategy="sgd", max_iter=3)  # fmt: skip
    assert caught.value.coef.shape == (4, 5)


# ---------------------------------------------------------------------------------------------
# The estimators.
# ---------------------------------------------------------------------------------------------


def test_one_pass_ovr_equals_the_k_pass_path_where_it_runs(monkeypatch):
    """shuffle=False, tol=None, a fixed schedule: the one-pass fit is the k-pass fit."""
    from fastgd import SGDClassifier, SGDRegressor
    from fastgd.estimators import _BaseSGD

    X, y = _classes()
    rng = np.random.default_rng(5)
    Y = X @ rng.standard_normal((5, 3))
    calls = []
    one_pass = _BaseSGD._train_one_pass
    monkeypatch.setattr(
        _BaseSGD,
        "_train_one_pass",
        lambda self, *a, **kw: calls.append(1) or one_pass(self, *a, **kw),
    )
    settings = dict(shuffle=False, tol=None, max_iter=3, average=True, penalty="l2")
    regression = dict(shuffle=False, tol=None, max_iter=3, learning_rate="invscaling")
    fast = SGDClassifier(**settings).fit(X, y)
    fast_regressor = SGDRegressor(**regression).fit(X, Y)
    assert len(calls) == 2
    # scikit-learn's truncated L1 (per-sample plain SGD) is a single-output kernel's: k passes.
    SGDClassifier(**{**settings, "penalty": "elasticnet"}).fit(X, y)
    assert len(calls) == 2
    monkeypatch.setattr(_BaseSGD, "_one_pass", lambda self, problems, split, common: False)
    slow = SGDClassifier(**settings).fit(X, y)
    slow_regressor = SGDRegressor(**regression).fit(X, Y)
    assert len(calls) == 2
    for a, b in ((fast, slow), (fast_regressor, slow_regressor)):
        np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(a.intercept_, b.intercept_, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=1e-12)
        assert a.t_ == b.t_ and a.n_iter_ == b.n_iter_


def test_multinomial_classifier_gives_softmax_probabilities():
    from fastgd import SGDClassifier

    X, y = _classes()
    model = SGDClassifier(loss="log_loss", multiclass="multinomial", random_state=0).fit(X, y)
    assert model.coef_.shape == (4, 5)
    proba = model.predict_proba(X)
    np.testing.assert_allclose(proba, softmax(model.decision_function(X)), rtol=1e-12)
    assert (model.predict(X) == y).mean() > 0.9
    with pytest.raises(ValueError, match="log_loss"):
        SGDClassifier(loss="hinge", multiclass="multinomial").fit(X, y)


def test_multinomial_partial_fit_continues_one_model():
    from fastgd import SGDClassifier

    X, y = _classes()
    model = SGDClassifier(loss="log_loss", multiclass="multinomial", random_state=0)
    model.partial_fit(X[:300], y[:300], classes=np.unique(y))
    first_t = model.t_
    model.partial_fit(X[300:], y[300:])
    assert model.coef_.shape == (4, 5)
    assert model.t_ == first_t + 300


def test_float32_stays_float32():
    X, y = _classes()
    result = fastgd.fit(X.astype(np.float32), y, loss="log_loss", multiclass="multinomial",
                        random_state=0, max_iter=3)  # fmt: skip
    assert result.coef.dtype == np.float32 and result.intercept.dtype == np.float32
    assert result.decision_function(X.astype(np.float32)).dtype == np.float32


def test_optimizers_train_k_outputs_and_csr_names_what_it_refuses():
    X, y = _classes()
    result = fastgd.fit(X, y, loss="log_loss", multiclass="multinomial", optimizer="momentum",
                        random_state=0, max_iter=20)  # fmt: skip
    assert result.slots.shape == (4, 1, 6)
    assert (result.predict(X) == y).mean() > 0.9
    adam = fastgd.fit(X, y, loss="log_loss", optimizer="adam", learning_rate="constant",
                      eta0=0.01, random_state=0, max_iter=20)  # fmt: skip
    assert (adam.predict(X) == y).mean() > 0.85
    with pytest.raises(ValueError, match="on CSR rows"):  # the rules run (test_multi_csr_rules)
        fastgd.fit(sp.csr_matrix(X), y, loss="hinge", strategy="sgd", learning_rate="pa1")


def test_k_outputs_refuse_the_single_output_kernels_options():
    """scikit-learn's truncated L1 and damped intercept step exist in the single-output
    kernels only: with k outputs, fastgd.fit says so instead of ignoring them."""
    X, y = _classes()
    with pytest.raises(ValueError, match="l1_method='truncated' is not supported with k > 1"):
        fastgd.fit(X, y, loss="hinge", strategy="sgd", penalty="l1", l1_method="truncated")
    with pytest.raises(ValueError, match="intercept_decay is not supported with k > 1"):
        fastgd.fit(X, y, loss="hinge", strategy="sgd", intercept_decay=0.01)
