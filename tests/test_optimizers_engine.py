"""The optimizers at the engine level (issue 12): the parameters and their rules, the
full-batch optimizers (lbfgs against scipy's L-BFGS-B on the same objective, nesterov
against gd), on every source."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.optimize
import scipy.sparse as sp

import fastgd
from fastgd import cli, options
from fastgd.full_batch import LBFGS_FTOL

RNG = np.random.default_rng(7)
X = RNG.normal(size=(400, 12))
W = RNG.normal(size=12)
Y_REG = X @ W + 0.5 + 0.1 * RNG.normal(size=400)
Y_CLS = np.where(X @ W + 0.3 * RNG.normal(size=400) > 0, 1.0, -1.0)
ALPHA = 0.01
S = RNG.uniform(0.5, 2.0, size=400)  # sample weights
TOL = 1e-10


def _objective(loss):
    """J(w, b) = (1/Σs)·Σ s·L(x·w + b, y) + alpha·½‖w‖², with its gradient."""
    y = Y_REG if loss == "squared_error" else Y_CLS

    def value_and_gradient(x):
        w, b = x[:-1], x[-1]
        p = X @ w + b
        if loss == "squared_error":
            values, deriv = 0.5 * (p - y) ** 2, p - y
        else:
            z = -y * p
            values, deriv = np.logaddexp(0.0, z), -y / (1.0 + np.exp(-z))
        total = S.sum()
        grad = np.append(X.T @ (S * deriv) / total + ALPHA * w, S @ deriv / total)
        return S @ values / total + 0.5 * ALPHA * w @ w, grad

    return y, value_and_gradient


@pytest.mark.parametrize("loss", ["squared_error", "log_loss"])
def test_lbfgs_reaches_scipys_optimum_in_as_many_iterations(loss):
    y, objective = _objective(loss)
    reference = scipy.optimize.minimize(
        objective, np.zeros(13), jac=True, method="L-BFGS-B",
        options={"gtol": TOL, "ftol": LBFGS_FTOL, "maxiter": 500},
    )  # fmt: skip
    result = fastgd.fit(
        X, y, loss=loss, strategy="full", optimizer="lbfgs", penalty="l2", alpha=ALPHA,
        tol=TOL, max_iter=500, sample_weight=S,
    )  # fmt: skip
    found = objective(np.append(result.coef, result.intercept))[0]
    print(f"{loss}: fastgd {result.n_iter} iterations, scipy {reference.nit}; "
          f"J gap {found - reference.fun:.3g}")  # fmt: skip
    assert result.converged
    assert abs(found - reference.fun) <= 1e-8
    assert abs(result.n_iter - reference.nit) <= max(1, 0.1 * reference.nit)


def test_nesterov_beats_gd_on_an_ill_conditioned_problem():
    rng = np.random.default_rng(1)
    scales = np.logspace(0, -2, 10)  # condition number of XᵀX ~ 1e4
    Xc = rng.normal(size=(300, 10)) * scales
    yc = Xc @ rng.normal(size=10)
    runs = {
        opt: fastgd.fit(Xc, yc, strategy="full", optimizer=opt, max_iter=100, tol=None,
                        fit_intercept=False)
        for opt in ("gd", "nesterov")
    }  # fmt: skip
    assert runs["nesterov"].loss_history[-1] < 0.5 * runs["gd"].loss_history[-1]
    # gd is monotone; nesterov may rise only where it restarts (then falls again).
    assert np.all(np.diff(runs["gd"].loss_history) <= 1e-12)
    nesterov = runs["nesterov"]
    print(f"after 100 steps: gd {runs['gd'].loss_history[-1]:.3g}, nesterov "
          f"{nesterov.loss_history[-1]:.3g} ({nesterov.extras['restarts']} restarts)")  # fmt: skip
    rises = int(np.sum(np.diff(nesterov.loss_history) > 0.0))
    assert nesterov.extras["restarts"] >= rises  # each rise restarts the momentum


def test_lbfgs_is_monotone_and_equal_on_dense_csr_and_csv(tmp_path):
    options = dict(strategy="full", optimizer="lbfgs", penalty="l2", alpha=ALPHA, tol=TOL,
                   max_iter=200)  # fmt: skip
    dense = fastgd.fit(X, Y_REG, **options)
    assert np.all(np.diff(dense.loss_history) <= 0.0)
    csr = fastgd.fit(sp.csr_matrix(X), Y_REG, **options)
    np.testing.assert_allclose(csr.coef, dense.coef, rtol=0, atol=1e-9)
    path = tmp_path / "data.csv"
    header = ",".join([f"x{j}" for j in range(12)] + ["y"])
    np.savetxt(path, np.column_stack([X, Y_REG]), delimiter=",", header=header, comments="")
    # standardize=False: the same raw columns as the in-memory fits (fit_csv's default scales)
    streamed = fastgd.fit_csv(
        path, target="y", block_rows=64, shuffle=False, standardize=False, **options
    )
    np.testing.assert_allclose(streamed.coef, dense.coef, rtol=0, atol=1e-9)
    assert streamed.n_iter == dense.n_iter


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(strategy="full", optimizer="adam"),
         r"optimizer='adam' does not run with strategy='full'.*'nesterov'"),
        (dict(strategy="sgd", optimizer="lbfgs"),
         r"optimizer='lbfgs' does not run with strategy='sgd'.*'saga'"),
        (dict(strategy="full", optimizer="lbfgs", penalty="l1"), r"optimizer='saga'"),
        (dict(strategy="full", optimizer="lbfgs", loss="hinge"), r"needs a smooth loss"),
        (dict(learning_rate="pa1", strategy="sgd", optimizer="momentum", loss="hinge"),
         r"optimizer='sgd'"),
    ],
)  # fmt: skip
def test_the_rules_name_what_works(options, message):
    y = Y_CLS if options.get("loss") == "hinge" else Y_REG
    with pytest.raises(ValueError, match=message):
        fastgd.fit(X, y, **options)


def test_nesterov_and_lbfgs_keep_the_divergence_rules():
    with pytest.raises(fastgd.DivergenceError):
        fastgd.fit(X * 1e3, Y_REG, strategy="full", optimizer="nesterov",
                   learning_rate="constant", eta0=10.0, max_iter=50)  # fmt: skip


def test_sweep_has_an_optimizer_axis():
    table = fastgd.sweep(X, Y_REG, [0.01, "auto"], ["sgd", "full"],
                         optimizers=["sgd", "nesterov", "lbfgs"], max_iter=5)  # fmt: skip
    runs = [(run.strategy, run.optimizer, run.learning_rate) for run in table]
    assert runs == [
        ("sgd", "sgd", 0.01), ("sgd", "sgd", "auto"), ("full", "sgd", 0.01),
        ("full", "sgd", "auto"), ("full", "nesterov", 0.01), ("full", "nesterov", "auto"),
        ("full", "lbfgs", "auto"),
    ]  # fmt: skip
    run = table.find(strategy="full", learning_rate="auto", optimizer="nesterov")
    same = fastgd.fit(X, Y_REG, strategy="full", optimizer="nesterov", max_iter=5,
                      random_state=table.random_state)  # fmt: skip
    np.testing.assert_array_equal(run.result.coef, same.coef)
    assert "| full (lbfgs) |  | line search |" in str(table)
    with pytest.raises(ValueError, match="no strategy of \\['sgd'\\] runs any optimizer"):
        fastgd.sweep(X, Y_REG, [0.01], ["sgd"], optimizers=["lbfgs"])
    with pytest.raises(TypeError, match="sets 'optimizer' itself"):
        fastgd.sweep(X, Y_REG, [0.01], ["sgd"], optimizers=["sgd"], optimizer="sgd")


def test_playground_command_compares_optimizers(tmp_path, capsys):
    code = cli.main([
        "playground", "--learning-rates", "0.1", "--strategies", "full",
        "--optimizers", "gd,nesterov,lbfgs", "--epochs", "3", "--out",
        str(tmp_path / "report.png"),
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    for name in ("full (gd)", "full (nesterov)", "full (lbfgs)"):
        assert f"| {name} |" in out
    assert cli.main(["playground", "--optimizers", "bfgs"]) == 2


def test_the_train_command_takes_the_optimizer_flags():
    args = cli.build_parser().parse_args(
        ["train", "d.csv", "--model", "m.npz", "--optimizer", "adam", "--beta-1", "0.8",
         "--beta-2", "0.99", "--momentum", "0.5", "--rho", "0.9", "--optimizer-epsilon", "1e-6"]
    )  # fmt: skip
    assert (args.optimizer, args.beta_1, args.beta_2) == ("adam", 0.8, 0.99)
    assert (args.momentum, args.rho, args.optimizer_epsilon) == (0.5, 0.9, 1e-6)


def test_the_estimators_take_the_optimizer_and_run_full_batch_lbfgs():
    model = fastgd.SGDRegressor(strategy="full", optimizer="lbfgs", learning_rate="auto",
                                alpha=ALPHA, tol=TOL, max_iter=200).fit(X, Y_REG)  # fmt: skip
    direct = fastgd.fit(X, Y_REG, strategy="full", optimizer="lbfgs", penalty="l2",
                        alpha=ALPHA, tol=TOL, max_iter=200)  # fmt: skip
    np.testing.assert_allclose(model.coef_, direct.coef, rtol=0, atol=1e-8)
    with pytest.raises(ValueError, match="optimizer='lbfgs' does not run with strategy='sgd'"):
        fastgd.SGDRegressor(optimizer="lbfgs").fit(X, Y_REG)


def test_a_stochastic_optimizer_is_read_by_name_from_the_update_rules():
    from fastgd import engine

    for optimizer in ("momentum", "adam"):
        rule = engine.resolve_options(optimizer=optimizer, learning_rate="constant")["rule"]
        assert rule.name == optimizer
        result = fastgd.fit(
            X, Y_REG, optimizer=optimizer, max_iter=2, learning_rate="constant", eta0=1e-3
        )
        assert result.slots.shape == (rule.slots, X.shape[1] + 1)


def test_the_rules_slots_carry_across_partial_fit_and_start_from_slots_init(monkeypatch):
    """With a stand-in row for momentum (plain SGD's code, one slot, which that kernel
    leaves alone), the engine allocates the rule's slots, returns them and takes them back
    as slots_init: what partial_fit passes from one call to the next."""
    from fastgd import options

    stand_in = options.UpdateRule("momentum", options.UPDATE_SGD, 1,
                                  frozenset({"sgd", "minibatch"}), True, "stand-in")  # fmt: skip
    rules = tuple(rule for rule in options.UPDATE_RULES if rule.name != "momentum")
    monkeypatch.setattr(options, "UPDATE_RULES", (*rules, stand_in))
    fresh = fastgd.fit(X, Y_REG, optimizer="momentum", max_iter=1)
    assert fresh.slots.shape == (1, 13) and not fresh.slots.any()
    marked = np.arange(13.0)[None, :]
    assert np.array_equal(
        fastgd.fit(X, Y_REG, optimizer="momentum", max_iter=1, slots_init=marked).slots, marked
    )
    model = fastgd.SGDRegressor(optimizer="momentum", learning_rate="constant", eta0=1e-3)
    model.partial_fit(X, Y_REG)
    model._slots = [marked]  # as a rule that writes its slots would leave them
    model.partial_fit(X, Y_REG)
    assert np.array_equal(model._slots[0], marked)


class _SlotWritingSource:
    """A source whose epochs write the rule's slots as a momentum rule would (slot += 1)
    and whose third epoch meets a non-finite loss once: the engine must back off to the
    best state, slots included."""

    n_rows, n_features, values_per_row, dtype = 400, 12, 12.0, np.dtype(np.float64)

    def __init__(self):
        self.slots_seen: list[float] = []

    def losses(self, loss, epsilon, coef, intercept):
        return 400.0, 400.0

    def sample(self, rng):
        from fastgd.sources import RowSample

        return RowSample(X, np.empty(0))

    def max_row_norm(self):
        return float(np.max(np.sum(X * X, axis=1)) + 1.0)

    def epoch(self, state, spec, order):
        self.slots_seen.append(float(state.slots[0, 0]))
        state.slots[:] += 1.0
        state.w[:] += 0.01
        calls = len(self.slots_seen)
        loss = math.nan if calls == 3 else 400.0 / calls
        return state, loss, 0 if calls == 3 else -1


def test_a_back_off_restores_the_rules_slots_with_the_weights(monkeypatch):
    from fastgd import engine, options

    stand_in = options.UpdateRule("momentum", options.UPDATE_SGD, 1,
                                  frozenset({"sgd", "minibatch"}), True, "stand-in")  # fmt: skip
    monkeypatch.setattr(options, "UPDATE_RULES", (*options.UPDATE_RULES, stand_in))
    source = _SlotWritingSource()
    resolved = engine.resolve_options(optimizer="momentum", strategy="sgd", max_iter=4, tol=None)
    result = engine.train(source, resolved)
    # The third call diverged: the next starts from the second's end, slots as they were.
    assert source.slots_seen == [0.0, 1.0, 2.0, 2.0, 3.0]
    assert result.extras["auto_backtracks"] == 1
    assert result.slots[0, 0] == 4.0


# End to end: fastgd.fit with each stochastic optimizer against the reference's epochs.
STOCHASTIC = ("momentum", "adagrad", "rmsprop", "adam", "adamw", "saga")
SMALL = np.random.default_rng(3).normal(size=(30, 4))
SMALL_Y = SMALL @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.3


def _reference_epochs(X, y, rule, strategy, *, epochs=2, eta0=0.01, batch_size=8, **params):
    """``epochs`` epochs of the reference in file order (the engine's shuffle=False)."""
    from fastgd import reference as ref

    w, b, t = np.zeros(X.shape[1]), 0.0, 1.0
    state = ref.start_rule_state(rule, X.shape[1], X.shape[0])
    dense = X.toarray() if sp.issparse(X) else X
    for _ in range(epochs):
        options_ = dict(loss="squared_error", eta0=eta0, t=t, update_rule=rule,
                        rule_state=state, optimizer=ref.optimizer_parameters(**params),
                        lazy=sp.issparse(X))  # fmt: skip
        order = np.arange(X.shape[0])
        if strategy == "sgd":
            out = ref.sgd_epoch(dense, y, w, b, order, **options_)
        else:
            out = ref.minibatch_epoch(dense, y, w, b, order, batch_size, **options_)
        w, b, _, t = out[:4]
        state = out[-1]
    return w, b


def _engine(X, y, optimizer, strategy, *, epochs=2, eta0=0.01, **params):
    return fastgd.fit(X, y, strategy=strategy, optimizer=optimizer, learning_rate="constant",
                      eta0=eta0, batch_size=8, shuffle=False, max_iter=epochs, tol=None,
                      **params)  # fmt: skip


@pytest.mark.parametrize("strategy", ["sgd", "minibatch"])
@pytest.mark.parametrize(
    ("optimizer", "csr"),
    # CSR where the table's sparse column has it (every optimizer now).
    [(name, False) for name in STOCHASTIC]
    + [(name, True) for name in STOCHASTIC if options.update_rule_by_name(name).sparse],
)
def test_each_stochastic_optimizer_runs_end_to_end_as_the_reference(optimizer, strategy, csr):
    X = sp.csr_matrix(SMALL * (np.abs(SMALL) > 0.4)) if csr else SMALL
    result = _engine(X, SMALL_Y, optimizer, strategy)
    w, b = _reference_epochs(X, SMALL_Y, optimizer, strategy)
    np.testing.assert_allclose(result.coef, w, rtol=1e-9, atol=1e-12)
    assert math.isclose(result.intercept, b, rel_tol=1e-9, abs_tol=1e-12)
    dense = X.toarray() if csr else X
    assert np.mean((dense @ result.coef + result.intercept - SMALL_Y) ** 2) < np.mean(SMALL_Y**2)
    single = _engine(X.astype(np.float32), SMALL_Y, optimizer, strategy)
    assert single.coef.dtype == np.float32


def test_the_optimizer_parameters_reach_the_kernels():
    half = _engine(SMALL, SMALL_Y, "momentum", "sgd", momentum=0.5)
    assert not np.allclose(half.coef, _engine(SMALL, SMALL_Y, "momentum", "sgd").coef)
    w, b = _reference_epochs(SMALL, SMALL_Y, "momentum", "sgd", momentum=0.5)
    np.testing.assert_allclose(half.coef, w, rtol=1e-9, atol=1e-12)
    adam = _engine(SMALL, SMALL_Y, "adam", "minibatch", beta_1=0.5, beta_2=0.9)
    w, b = _reference_epochs(SMALL, SMALL_Y, "adam", "minibatch", beta_1=0.5, beta_2=0.9)
    np.testing.assert_allclose(adam.coef, w, rtol=1e-9, atol=1e-12)
    assert math.isclose(adam.intercept, b, rel_tol=1e-9, abs_tol=1e-12)


def test_saga_reaches_the_least_squares_optimum_with_a_constant_step():
    design = np.column_stack([SMALL, np.ones(len(SMALL))])
    y = SMALL_Y + 0.1 * np.random.default_rng(5).normal(size=len(SMALL))
    exact = np.linalg.lstsq(design, y, rcond=None)[0]
    step = 1.0 / (3.0 * np.max(np.sum(design**2, axis=1)))
    result = fastgd.fit(SMALL, y, strategy="sgd", optimizer="saga", learning_rate="constant",
                        eta0=step, max_iter=300, tol=None, random_state=0)  # fmt: skip
    np.testing.assert_allclose(np.append(result.coef, result.intercept), exact, atol=1e-6)
    auto = fastgd.fit(SMALL, y, strategy="sgd", optimizer="saga", max_iter=300, tol=None,
                      random_state=0)  # fmt: skip
    np.testing.assert_allclose(np.append(auto.coef, auto.intercept), exact, atol=1e-6)


def test_a_rule_without_a_csr_kernel_is_refused_naming_what_works():
    # SAGA has one now (tests/test_saga_csr.py); the passive-aggressive rules do not.
    with pytest.raises(ValueError, match=r"learning_rate='pa1' has no CSR kernel.*adam.*saga"):
        fastgd.fit(sp.csr_matrix(SMALL), SMALL_Y, strategy="sgd", learning_rate="pa1")


def test_saga_on_a_block_source_trains():
    # The equalities with fastgd.fit and the refusals (Dask, sampled batches) are in
    # tests/test_saga_stream.py.
    assert options.update_rule_by_name("saga").sparse


def test_auto_works_with_momentum():
    result = fastgd.fit(X, Y_REG, optimizer="momentum", max_iter=5, random_state=0)
    assert result.loss_history[-1] < result.loss_history[0]


def test_the_estimators_take_an_optimizer_and_partial_fit_equals_fit():
    settings = dict(optimizer="adam", learning_rate="constant", eta0=0.01, shuffle=False,
                    tol=None, strategy="minibatch", batch_size=8)  # fmt: skip
    fitted = fastgd.SGDRegressor(max_iter=3, **settings).fit(SMALL, SMALL_Y)
    stepwise = fastgd.SGDRegressor(**settings)
    for _ in range(3):
        stepwise.partial_fit(SMALL, SMALL_Y)
    np.testing.assert_allclose(stepwise.coef_, fitted.coef_, rtol=1e-12)
    np.testing.assert_allclose(stepwise.intercept_, fitted.intercept_, rtol=1e-12)
    classifier = fastgd.SGDClassifier(optimizer="momentum", learning_rate="constant", eta0=0.01)
    assert classifier.fit(X, Y_CLS).score(X, Y_CLS) > 0.8
