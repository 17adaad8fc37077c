"""SAGA on CSR rows (``fastgd._kernels.sparse``, SAGA's section): the steps a feature skips
are caught up just in time, in closed form, so the CSR kernels must give the dense rule's
result (``epochs.sgd_epoch`` / ``epochs.batch_epoch`` on ``X.toarray()``, the same rows in
the same order) and the numpy reference's (``reference.sgd_epoch`` / ``minibatch_epoch``
with ``update_rule="saga"``, written from the equations), for every strategy, schedule,
penalty, weights, intercept, averaging and dtype; and through the history's restarts, dense
steps (``η·l2 ≥ 1``) and non-finite stops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import CLASSIFICATION_LOSSES, DTYPES, KERNEL_SCHEDULE_NAMES, property_settings, tol
from hypothesis import example, given
from hypothesis import strategies as st

import fastgd
from fastgd import options
from fastgd import reference as ref
from fastgd._kernels import epochs, sparse
from fastgd._kernels.records import make_spec, make_state, rule_arrays

SAGA = options.update_rule_by_name("saga")


def _spec(case):
    loss = case["loss"]
    return make_spec(
        loss=options.loss_by_name(loss).code, epsilon=0.1,
        schedule=options.schedule_by_name(case["schedule"]).kernel_code, rule=SAGA.code,
        eta0=case["eta0"], power_t=0.25, alpha=1e-3,
        optimal_init=ref.optimal_init(loss, 1e-3) if case["schedule"] == "optimal" else 1.0,
        l1=case["l1"], l2=case["l2"], fit_intercept=case["fit_intercept"],
        average_start=case["average_start"] or 0.0,
    )  # fmt: skip


def _state(case, n, d, dtype):
    slots, memory = rule_arrays(SAGA, d, n)
    averaging = case["average_start"] is not None
    avg = (np.zeros(d), np.zeros(1)) if averaging else (None, None)
    w = case["w"].astype(dtype)
    return make_state(w, case["intercept"], case["t"], *avg, slots=slots, row_memory=memory)


def _run(case, csr, epochs_run=2):
    """``epochs_run`` epochs (state carried over) of the CSR kernel (``csr``) or the dense
    one; returns ``(w, b, Σ s·L of the last epoch, t, avg_w, avg_b, slots, row_memory)``."""
    dtype = case["dtype"]
    X = np.ascontiguousarray(case["X"], dtype=dtype)
    A = sp.csr_matrix(X)
    y = case["y"].astype(dtype)
    n, d = X.shape
    sw = np.empty(0) if case["sample_weight"] is None else case["sample_weight"]
    spec, state = _spec(case), _state(case, n, d, dtype)
    order = case["order"].astype(np.int64)
    batch = case["batch_size"]
    for _ in range(epochs_run):
        if csr and batch is None:
            out = sparse.sgd_epoch_csr(A.data, A.indices, A.indptr, y, sw, order, spec, state)
        elif csr:
            out = sparse.batch_epoch_csr(A.data, A.indices, A.indptr, y, sw, order, batch, spec,
                                         state, case["parallel"])  # fmt: skip
        elif batch is None:
            out = epochs.sgd_epoch(X, y, sw, order, spec, state, 0)
        else:
            out = epochs.batch_epoch(X, y, sw, order, batch, spec, state, case["parallel"], 0)
        intercept, loss, t, bad = out
        assert bad == -1
        state = state._replace(intercept=intercept, t=t)
    avg_b = state.avg_b[0] if state.avg_b.shape[0] else 0.0
    return (state.w, intercept, loss, t, state.avg_w, avg_b, state.slots, state.row_memory)


def _run_reference(case, epochs_run=2):
    """The same epochs by the numpy reference (float64, from the data in the case's dtype)."""
    dtype = case["dtype"]
    X = case["X"].astype(dtype).astype(np.float64)
    y = case["y"].astype(dtype).astype(np.float64)
    n, d = X.shape
    w, b, t = case["w"].astype(dtype).astype(np.float64), case["intercept"], case["t"]
    state = ref.start_rule_state("saga", d, n)
    averaging = case["average_start"] is not None
    average = (np.zeros(d), 0.0, case["average_start"]) if averaging else None
    total = 0.0
    for _ in range(epochs_run):
        given_ = dict(
            loss=case["loss"], sample_weight=case["sample_weight"], l1=case["l1"],
            l2=case["l2"], schedule=case["schedule"], eta0=case["eta0"], alpha=1e-3, t=t,
            fit_intercept=case["fit_intercept"], average=average, update_rule="saga",
            rule_state=state, lazy=True,
            optimal_init=ref.optimal_init(case["loss"], 1e-3)
            if case["schedule"] == "optimal" else None,
        )  # fmt: skip
        penalty = ref.penalty_value(w, case["l1"], case["l2"])
        if case["batch_size"] is None:
            out = ref.sgd_epoch(X, y, w, b, case["order"], **given_)
        else:
            out = ref.minibatch_epoch(X, y, w, b, case["order"], case["batch_size"], **given_)
        w, b, objective, t = out[:4]
        total = (objective - penalty) * n  # back to the kernels' Σ s·L
        state = out[-1]
        if averaging:
            average = (out[4], out[5], case["average_start"])
    avg_w, avg_b = (average[0], average[1]) if averaging else (np.empty(0), 0.0)
    return w, b, total, t, avg_w, avg_b, state["slots"], state["row_memory"]


NAMES = ("w", "intercept", "loss sum", "t", "avg_w", "avg_b", "slots", "row_memory")


def _assert_close(got, expected, tolerance):
    for name, a, b in zip(NAMES, got, expected, strict=True):
        np.testing.assert_allclose(a, b, **tolerance, err_msg=name)


@st.composite
def cases(draw):
    n = draw(st.integers(1, 40))
    d = draw(st.integers(1, 8))
    loss = draw(st.sampled_from(("squared_error", "huber", "log_loss", "hinge")))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    density = draw(st.sampled_from((0.1, 0.3, 0.7)))
    X = rng.standard_normal((n, d)) * (rng.random((n, d)) < density)
    if loss in CLASSIFICATION_LOSSES:
        y = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    else:
        y = X @ rng.standard_normal(d) + rng.standard_normal(n)
    penalty = options.penalty_by_name(draw(st.sampled_from(("none", "l2", "l1", "elasticnet"))))
    l1, l2 = penalty.split(draw(st.sampled_from((1e-3, 0.05, 0.5))), 0.5)
    return {
        "dtype": draw(st.sampled_from(DTYPES)),
        "X": X,
        "y": y,
        "w": rng.standard_normal(d) * draw(st.sampled_from((0.0, 0.5))),
        "intercept": draw(st.sampled_from((0.0, 0.3))),
        "sample_weight": rng.uniform(0.2, 1.8, n) if draw(st.booleans()) else None,
        "order": rng.permutation(n) if draw(st.booleans()) else np.arange(n),
        "loss": loss,
        "schedule": draw(st.sampled_from(KERNEL_SCHEDULE_NAMES)),
        "eta0": draw(st.sampled_from((1e-3, 0.05))),
        "l1": l1,
        "l2": l2,
        "fit_intercept": draw(st.booleans()),
        # None: no averaging; else the first averaged step (a later one: a lazy gap crosses it).
        "average_start": draw(st.sampled_from((None, 1.0, 4.0, 2.5))),
        "t": draw(st.sampled_from((1.0, 3.0))),
        "batch_size": draw(st.sampled_from((None, 1, 3, 8))),
        "parallel": draw(st.booleans()),
    }


def _case(**changes):
    rng = np.random.default_rng(7)
    X = rng.standard_normal((12, 5)) * (rng.random((12, 5)) < 0.3)
    base = {
        "dtype": np.float64, "X": X, "y": X @ rng.standard_normal(5) + 0.2, "w": np.zeros(5),
        "intercept": 0.0, "sample_weight": None, "order": rng.permutation(12),
        "loss": "squared_error", "schedule": "constant", "eta0": 0.05, "l1": 0.0, "l2": 0.0,
        "fit_intercept": True, "average_start": None, "t": 1.0, "batch_size": None,
        "parallel": False,
    }  # fmt: skip
    return {**base, **changes}


@property_settings(max_examples=80)
@given(case=cases())
@example(case=_case(l1=0.05, l2=0.05, average_start=2.5))
@example(case=_case(l1=0.5, batch_size=3, average_start=4.0, w=np.ones(5)))
def test_csr_saga_is_the_dense_saga_and_the_reference(case):
    """Two epochs of the CSR kernel against the dense kernel on the same rows (float64:
    the dtype's tolerance; float32 rounds each kernel differently, so against the float64
    reference only) and against the reference (the dtype's tolerance)."""
    got = _run(case, csr=True)
    _assert_close(got, _run_reference(case), tol(case["dtype"]))
    if case["dtype"] == np.float64:
        _assert_close(got, _run(case, csr=False), tol(np.float64))


def _long_case(n, d, *, l1, l2, eta0, average_start, batch_size, seed=3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * (rng.random((n, d)) < 0.2)
    X[:, :2] = 0.0  # never touched: their gap spans the whole epoch
    y = X @ rng.standard_normal(d) + 0.5
    return _case(X=X, y=y, w=rng.standard_normal(d), order=rng.permutation(n), l1=l1, l2=l2,
                 eta0=eta0, average_start=average_start, batch_size=batch_size,
                 intercept=0.1)  # fmt: skip


@pytest.mark.parametrize("average_start", [None, 7.0])
@pytest.mark.parametrize("l1", [0.0, 0.02])
@pytest.mark.parametrize(
    ("batch_size", "decay_per_step"),
    [(None, 0.5), (4, 0.5), (None, 0.0), (None, -0.5), (4, -0.5), (None, 0.999)],
)
def test_strong_decay_restarts_or_steps_densely_and_matches(
    batch_size, decay_per_step, l1, average_start
):
    """``1 − η·l2`` = 0.5: the product of decays restarts every ~200 steps; 0 and −0.5:
    every step is dense (O(d)); 0.999 with averaging: R outgrows P and restarts."""
    eta0 = 0.01
    case = _long_case(1500, 17, l1=l1, l2=(1.0 - decay_per_step) / eta0, eta0=eta0,
                      average_start=average_start, batch_size=batch_size)  # fmt: skip
    _assert_close(_run(case, csr=True), _run(case, csr=False), tol(np.float64))


@pytest.mark.parametrize("batch_size", [None, 1])
def test_a_full_history_restarts_and_matches(batch_size):
    """More steps than the history holds (``max(d, HISTORY_STEPS)``), no decay (only the
    full history forces the restarts), L1 and averaging."""
    case = _long_case(sparse.HISTORY_STEPS + 300, 4, l1=1e-3, l2=0.0, eta0=0.05,
                      average_start=3.0, batch_size=batch_size, seed=4)  # fmt: skip
    _assert_close(_run(case, csr=True, epochs_run=1), _run(case, csr=False, epochs_run=1),
                  tol(np.float64))  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES)
def test_parallel_minibatch_is_bitwise_serial(dtype):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((1200, 9)) * (rng.random((1200, 9)) < 0.4)
    case = _case(dtype=dtype, X=X, y=X @ rng.standard_normal(9), w=np.zeros(9),
                 order=rng.permutation(1200), batch_size=600, l2=0.01, l1=1e-3,
                 average_start=1.0)  # fmt: skip
    serial = _run({**case, "parallel": False}, csr=True)
    parallel = _run({**case, "parallel": True}, csr=True)
    for a, b in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("batch_size", [None, 3])
def test_a_non_finite_prediction_stops_where_the_dense_rule_stops(batch_size):
    """Row 6 overflows: both kernels stop at the same position with every weight (the
    skipped steps caught up) and the row memory as the dense rule leaves them."""
    rng = np.random.default_rng(2)
    X = rng.standard_normal((10, 4)) * (rng.random((10, 4)) < 0.5)
    X[6] = [1e300, 0.0, 1e300, 0.0]
    case = _case(X=X, y=np.ones(10), w=np.full(4, 1e10), order=np.arange(10),
                 batch_size=batch_size, l2=0.1, l1=0.01)  # fmt: skip
    results = []
    for csr in (True, False):
        dense = np.ascontiguousarray(X)
        A = sp.csr_matrix(dense)
        spec, state = _spec(case), _state(case, 10, 4, np.float64)
        sw, order = np.empty(0), np.arange(10)
        if batch_size is None:
            out = (sparse.sgd_epoch_csr(A.data, A.indices, A.indptr, case["y"], sw, order,
                                        spec, state) if csr else
                   epochs.sgd_epoch(dense, case["y"], sw, order, spec, state, 0))  # fmt: skip
        else:
            out = (sparse.batch_epoch_csr(A.data, A.indices, A.indptr, case["y"], sw, order, 3,
                                          spec, state, False) if csr else
                   epochs.batch_epoch(dense, case["y"], sw, order, 3, spec, state, False,
                                      0))  # fmt: skip
        results.append((out, state.w.copy(), state.row_memory.copy()))
    (csr_out, csr_w, csr_memory), (dense_out, dense_w, dense_memory) = results
    # (intercept, Σ s·L, t, bad): row 6 is the first bad row, and starts the third batch.
    assert csr_out[3] == dense_out[3] == 6
    assert csr_out[2] == dense_out[2] == 1.0 + (6 if batch_size is None else 2)
    assert not math.isfinite(csr_out[1]) and not math.isfinite(dense_out[1])
    assert math.isclose(csr_out[0], dense_out[0], rel_tol=1e-10)
    np.testing.assert_allclose(csr_w, dense_w, **tol(np.float64))
    np.testing.assert_allclose(csr_memory, dense_memory, **tol(np.float64))


@pytest.mark.parametrize("strategy", ["sgd", "minibatch"])
@pytest.mark.parametrize("penalty", ["l2", "elasticnet"])
def test_fit_on_csr_equals_fit_on_the_dense_array(strategy, penalty):
    """``fastgd.fit`` end to end (shuffled order, constant step, averaging): CSR and dense
    give the same model."""
    rng = np.random.default_rng(11)
    X = rng.standard_normal((300, 40)) * (rng.random((300, 40)) < 0.1)
    y = X @ rng.standard_normal(40) + 0.3 + 0.1 * rng.standard_normal(300)
    given_ = dict(strategy=strategy, optimizer="saga", learning_rate="constant", eta0=0.05,
                  alpha=0.01, penalty=penalty, l1_ratio=0.5, max_iter=6, tol=None,
                  random_state=0, batch_size=16, average=10)  # fmt: skip
    on_csr = fastgd.fit(sp.csr_matrix(X), y, **given_)
    on_dense = fastgd.fit(X, y, **given_)
    np.testing.assert_allclose(on_csr.coef, on_dense.coef, **tol(np.float64))
    assert math.isclose(on_csr.intercept, on_dense.intercept, rel_tol=1e-10, abs_tol=1e-12)
    np.testing.assert_allclose(on_csr.loss_history, on_dense.loss_history, rtol=1e-10)
