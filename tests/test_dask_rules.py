"""fastgd.dask: the stochastic update rules (momentum, Nesterov, AdaGrad, RMSProp, Adam, AdamW)
in both mini-batch modes, their slots carried from round to round (issue 12)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

pytest.importorskip("dask")
pytest.importorskip("distributed")

import dask.array as da
from conftest import tol
from distributed import Client, LocalCluster
from test_dask import FULL_BATCH_RTOL, ArrayBlocks, least_squares, linear_problem

import fastgd
import fastgd.dask as fastgd_dask
from fastgd import engine

#: The rules with slots, each with a step that suits it on ``linear_problem`` (torch's
#: conventions: the adaptive rules' step is in the weights' units).
RULES = {
    "momentum": dict(optimizer="momentum", learning_rate="constant", eta0=0.02),
    "nesterov": dict(optimizer="momentum", nesterov=True, learning_rate="constant", eta0=0.02),
    "adagrad": dict(optimizer="adagrad", learning_rate="constant", eta0=0.5),
    "rmsprop": dict(optimizer="rmsprop", learning_rate="constant", eta0=0.02),
    "adam": dict(optimizer="adam", learning_rate="constant", eta0=0.05),
    "adamw": dict(optimizer="adamw", learning_rate="constant", eta0=0.05, penalty="l2",
                  alpha=1e-4),
}  # fmt: skip
#: Distance to the least-squares optimum allowed after the convergence runs below: the same
#: rules in memory (fastgd.fit, same options) end 1e-3 to 2e-3 from it, at their noise floor.
CONVERGED = 5e-3


def unshuffled(rule: str, **more) -> dict:
    return {"strategy": "minibatch", "batch_size": 32, "shuffle": False, "tol": None,
            **RULES[rule], **more}  # fmt: skip


@pytest.mark.parametrize(
    ("rule", "strategy", "dtype"),
    [(rule, "minibatch", np.float64) for rule in RULES]
    + [("adam", "sgd", np.float64), ("rmsprop", "minibatch", np.float32)],
)
def test_average_mode_on_one_partition_equals_fastgd_fit(client, rule, strategy, dtype):
    # One partition, file order: each round is one more epoch of fastgd.fit, so the rounds
    # equal one fit only if the rule's slots (and the step counter) go from round to round.
    X, y, _ = linear_problem(n=300, seed=20)
    X, y = X.astype(dtype), y.astype(dtype)
    options = unshuffled(rule, max_iter=4, strategy=strategy)
    reference = fastgd.fit(X, y, **options)
    result = fastgd_dask.fit(da.from_array(X, chunks=(300, 4)), y, client=client,
                             standardize=False, **options)  # fmt: skip
    assert result.coef.dtype == dtype
    # In float32 the intercept passes between rounds in the model's dtype (FitResult's),
    # where one fit keeps it in float64: equal to float32's precision.
    close = {"rtol": FULL_BATCH_RTOL} if dtype == np.float64 else tol(dtype)
    np.testing.assert_allclose(result.coef, reference.coef, **close)
    np.testing.assert_allclose(result.intercept, reference.intercept, **close)
    np.testing.assert_allclose(result.slots, reference.slots, **close)
    assert result.slots.any() and result.t == reference.t


def mixed_rounds(X, y, cuts, options, rounds):
    """The reference of parameter mixing with slots, from its definition: every partition
    runs one epoch of fastgd.fit from the round's model, slots and step counter; the models
    and the slots are averaged weighted by rows, the counter is the largest."""
    d = X.shape[1]
    coef, intercept, t, slots = np.zeros(d), 0.0, 1.0, None
    parts = [(X[a:b], y[a:b]) for a, b in itertools.pairwise(cuts)]
    weights = np.array([len(part[1]) for part in parts]) / len(y)
    for _ in range(rounds):
        fits = [
            fastgd.fit(Xk, yk, coef_init=coef, intercept_init=intercept, t_init=t,
                       slots_init=slots, max_iter=1, **options)
            for Xk, yk in parts
        ]  # fmt: skip
        coef = sum(w * f.coef for w, f in zip(weights, fits, strict=True))
        intercept = sum(w * f.intercept for w, f in zip(weights, fits, strict=True))
        slots = sum(w * f.slots for w, f in zip(weights, fits, strict=True))
        t = max(f.t for f in fits)
    return coef, intercept, slots, t


@pytest.mark.parametrize("rule", ["nesterov", "adam"])
def test_average_mode_mixes_models_and_slots_weighted_by_rows(client, rule):
    X, y, _ = linear_problem(n=600, seed=21)
    cuts = [0, 100, 450, 600]
    options = unshuffled(rule)
    coef, intercept, slots, t = mixed_rounds(X, y, cuts, options, rounds=3)
    result = fastgd_dask.fit(da.from_array(X, chunks=((100, 350, 150), 4)), y, client=client,
                             standardize=False, max_iter=3, **options)  # fmt: skip
    np.testing.assert_allclose(result.coef, coef, rtol=FULL_BATCH_RTOL)
    assert result.intercept == pytest.approx(intercept, rel=FULL_BATCH_RTOL)
    np.testing.assert_allclose(result.slots, slots, rtol=FULL_BATCH_RTOL)
    assert result.t == t


def test_average_mode_does_not_depend_on_the_number_of_workers(client):
    # Each partition's local epoch is a function of its rows, the round's state and a seed
    # drawn on the driver: one worker in this process gives the two workers' model.
    X, y, _ = linear_problem(n=600, seed=22)
    options = dict(strategy="minibatch", batch_size=16, max_iter=3, tol=None, random_state=4,
                   **RULES["adam"])  # fmt: skip
    chunked = da.from_array(X, chunks=(150, 4))
    two = fastgd_dask.fit(chunked, y, client=client, **options)
    with (
        LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster, set_as_default=False) as alone,
    ):
        one = fastgd_dask.fit(chunked, y, client=alone, **options)
    np.testing.assert_array_equal(one.coef, two.coef)
    np.testing.assert_array_equal(one.slots, two.slots)


@pytest.mark.parametrize("rule", list(RULES))
def test_sample_mode_steps_the_rule_of_a_block_source(client, rule):
    # The sampled epochs are BlockSource's (take_step applies the rule to its slots): only
    # the gradient sums come from the workers.
    X, y, _ = linear_problem(n=800, seed=23)
    options = unshuffled(rule, max_iter=3, random_state=0)
    result = fastgd_dask.fit(da.from_array(X, chunks=(200, 4)), y, minibatch_mode="sample",
                             fraction=0.25, client=client, standardize=False,
                             **options)  # fmt: skip
    settings = engine.resolve_options(**{**engine.fit_defaults(), **options, "batch_size": 200})
    local = engine.train(ArrayBlocks(X, y, 200, 0.25), settings)
    np.testing.assert_allclose(result.coef, local.coef, rtol=FULL_BATCH_RTOL)
    np.testing.assert_allclose(result.slots, local.slots, rtol=FULL_BATCH_RTOL)
    assert result.slots.any() and result.t == local.t == 1 + 4 * 3


def test_sample_mode_of_all_rows_equals_fastgd_fit_with_one_batch(client):
    # fraction=1: each step's batch is every row, as fastgd.fit with batch_size=n.
    X, y, _ = linear_problem(n=400, seed=24)
    options = dict(RULES["adamw"], strategy="minibatch", shuffle=False, max_iter=6, tol=None)
    reference = fastgd.fit(X, y, batch_size=400, **options)
    result = fastgd_dask.fit(da.from_array(X, chunks=(150, 4)), y, minibatch_mode="sample",
                             fraction=1.0, client=client, standardize=False,
                             **options)  # fmt: skip
    np.testing.assert_allclose(result.coef, reference.coef, rtol=FULL_BATCH_RTOL)
    np.testing.assert_allclose(result.slots, reference.slots, rtol=FULL_BATCH_RTOL)
    np.testing.assert_allclose(result.loss_history, reference.loss_history, rtol=FULL_BATCH_RTOL)


@pytest.mark.parametrize(
    ("mode", "rule"),
    [("average", rule) for rule in RULES] + [("sample", "nesterov"), ("sample", "rmsprop")],
)
def test_rules_reach_least_squares(client, mode, rule):
    # Sample mode takes 4 steps an epoch (fraction 0.25), a partition's local epoch 7.
    X, y, _ = linear_problem(n=800, seed=2)
    coef, intercept = least_squares(X, y)
    result = fastgd_dask.fit(
        da.from_array(X, chunks=(200, 4)), da.from_array(y, chunks=200), strategy="minibatch",
        minibatch_mode=mode, batch_size=32, fraction=0.25 if mode == "sample" else None,
        max_iter=30 if mode == "sample" else 20, tol=None, random_state=0, client=client,
        **RULES[rule],
    )  # fmt: skip
    np.testing.assert_allclose(result.coef, coef, atol=CONVERGED)
    assert result.intercept == pytest.approx(intercept, abs=CONVERGED)


def test_momentum_with_the_auto_step_in_sample_mode(client):
    # The engine's auto step for heavy ball (sgd's times 1 - momentum) on sampled batches.
    X, y, _ = linear_problem(n=800, seed=2)
    coef, _ = least_squares(X, y)
    result = fastgd_dask.fit(
        da.from_array(X, chunks=(200, 4)), y, minibatch_mode="sample", optimizer="momentum",
        fraction=0.25, max_iter=30, tol=None, random_state=0, client=client,
    )  # fmt: skip
    assert result.extras["auto_backtracks"] == 0
    np.testing.assert_allclose(result.coef, coef, atol=CONVERGED)


@pytest.mark.parametrize("mode", ["average", "sample"])
def test_saga_is_refused_naming_what_runs(mode):
    X = da.zeros((10, 2), chunks=(5, 2))
    with pytest.raises(ValueError, match="optimizer='saga' keeps one stored derivative") as caught:
        fastgd_dask.fit(X, np.zeros(10), optimizer="saga", minibatch_mode=mode,
                        client=object())  # fmt: skip
    message = str(caught.value)
    assert "['sgd', 'momentum', 'adagrad', 'rmsprop', 'adam', 'adamw']" in message
    assert "fastgd.fit on data in memory" in message and "gd, nesterov or lbfgs" in message
