"""The optimizers at the engine level (issue 12): the parameters and their rules, the
full-batch optimizers (lbfgs against scipy's L-BFGS-B on the same objective, nesterov
against gd), on every source."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
import scipy.sparse as sp

import fastgd
from fastgd.full_batch import LBFGS_FTOL

RNG = np.random.default_rng(7)
X = RNG.normal(size=(400, 12))
W = RNG.normal(size=12)
Y_REG = X @ W + 0.5 + 0.1 * RNG.normal(size=400)
Y_CLS = np.where(X @ W + 0.3 * RNG.normal(size=400) > 0, 1.0, -1.0)
ALPHA = 0.01
TOL = 1e-10


def _objective(loss):
    """J(w, b) = (1/n)·Σ L(x·w + b, y) + alpha·½‖w‖², with its gradient."""
    y = Y_REG if loss == "squared_error" else Y_CLS

    def value_and_gradient(x):
        w, b = x[:-1], x[-1]
        p = X @ w + b
        if loss == "squared_error":
            values, deriv = 0.5 * (p - y) ** 2, p - y
        else:
            z = -y * p
            values, deriv = np.logaddexp(0.0, z), -y / (1.0 + np.exp(-z))
        grad = np.append(X.T @ deriv / len(y) + ALPHA * w, deriv.mean())
        return values.mean() + 0.5 * ALPHA * w @ w, grad

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
        tol=TOL, max_iter=500,
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
    assert runs["nesterov"].loss_history[-1] < runs["nesterov"].loss_history[0]


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
    streamed = fastgd.fit_csv(path, target="y", block_rows=64, shuffle=False, **options)
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
