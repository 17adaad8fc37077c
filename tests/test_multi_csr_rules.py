"""The optimizer rules on CSR rows for k outputs (``fastgd._kernels.multi_csr_rules``,
issue 13): ovr and multi-output equal the single-output CSR kernels output by output, softmax
equals the numpy twin of the lazy rule (``reference_multi.multi_lazy_rule_epoch``; SAGA: of
the dense rule, which its just-in-time kernels equal) and, where every column is stored, the
dense k-output rule kernel; ``fastgd.fit`` runs them."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import tol

import fastgd
from fastgd import options
from fastgd import reference_multi as ref
from fastgd._kernels import multi as kernels
from fastgd._kernels import sparse
from fastgd._kernels.multi_csr_rules import multi_csr_rule_epoch
from fastgd._kernels.records import make_spec, make_state

#: The lazy rules (nesterov: momentum with ``nesterov=True``), then SAGA.
LAZY_RULES = ("momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")
RULES = (*LAZY_RULES, "saga")
LOSSES = {"ovr": "modified_huber", "multi_output": "huber", "multinomial": "log_loss"}
CODES = {"ovr": kernels.OVR, "multi_output": kernels.MULTI_OUTPUT, "multinomial": kernels.SOFTMAX}


def _spec(rule, mode, *, l1=0.005, l2=0.02, average_start=4.0, schedule="invscaling"):
    code = options.update_rule_by_name("momentum" if rule == "nesterov" else rule).code
    return make_spec(
        loss=options.loss_by_name(LOSSES[mode]).code, epsilon=0.1,
        schedule=options.schedule_by_name(schedule).kernel_code, rule=code, eta0=0.05,
        power_t=0.25, alpha=0.01, optimal_init=50.0, l1=l1, l2=l2, fit_intercept=True,
        average_start=average_start, nesterov=rule == "nesterov",
    )  # fmt: skip


def _problem(seed, n, d, k, dtype, density=0.3):
    """Sparse rows (no stored zeros), labels, targets, sample weights and a shuffled order."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    X[rng.random((n, d)) > density] = 0.0
    X[3] = 0.0  # an empty row
    labels = rng.integers(0, k, n)
    Y = rng.standard_normal((n, k)).astype(dtype)
    return X, labels, Y, rng.uniform(0.5, 2.0, n), rng.permutation(n).astype(np.int64)


def _k_state(k, d, n, dtype, rule, averaging):
    update_rule = options.update_rule_by_name("momentum" if rule == "nesterov" else rule)
    return kernels.MultiState(
        np.zeros((k, d), dtype=dtype), np.zeros(k), 1.0,
        np.zeros((k, d)) if averaging else np.empty((0, 0)),
        np.zeros(k) if averaging else np.empty(0), np.zeros(k),
        np.zeros((k, update_rule.slots, d + 1)), np.zeros((k, n if update_rule.row_memory else 0)),
    )  # fmt: skip


def _run(mode, A, labels, Y, sw, order, batch_size, spec, state, parallel=False):
    k = state.W.shape[0]
    Yk = Y if mode == "multi_output" else np.empty((0, k), dtype=A.dtype)
    labels_k = np.empty(0, np.int64) if mode == "multi_output" else labels
    rows = kernels.CsrMultiRows(A.data, A.indices, A.indptr, Yk, labels_k, sw, order)
    per_sample = 0 if batch_size == 1 else batch_size
    return multi_csr_rule_epoch(rows, CODES[mode], spec, state, per_sample, parallel)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("mode", ["ovr", "multi_output"])
# (float32 per-sample only: the mini-batch kernels share its arithmetic per output, and each
# float32 variant of these kernels costs a cold compile of about a minute)
@pytest.mark.parametrize(("batch_size", "dtype"), [(1, np.float64), (7, np.float64),
                                                   (1, np.float32)])  # fmt: skip
def test_each_output_is_the_single_output_csr_kernel(rule, mode, batch_size, dtype):
    """ovr and multi-output: row o of W (its slots, running means, intercept, loss) is
    what the single-output CSR kernel trains on output o with the same order and steps,
    elastic net, sample weights, averaging; float32 stays float32."""
    n, d, k = 60, 15, 3
    X, labels, Y, sw, order = _problem(11, n, d, k, dtype)
    A = sp.csr_matrix(X)
    spec = _spec(rule, mode)
    state = _k_state(k, d, n, dtype, rule, True)
    total, t, bad = _run(mode, A, labels, Y, sw, order, batch_size, spec, state)
    assert bad == -1 and t == 1.0 + -(-n // batch_size)
    assert state.W.dtype == dtype
    single_total = 0.0
    for o in range(k):
        y = np.where(labels == o, 1.0, -1.0) if mode == "ovr" else Y[:, o].astype(np.float64)
        w, avg_w, avg_b = np.zeros(d, dtype=dtype), np.zeros(d), np.zeros(1)
        slots, memory = np.zeros(state.slots.shape[1:]), np.zeros(state.row_memory.shape[1])
        single = make_state(w, 0.0, 1.0, avg_w, avg_b, slots, memory)
        arrays = (A.data, A.indices, A.indptr, y, sw, order)
        if batch_size == 1:
            intercept, loss_sum, _, _ = sparse.sgd_epoch_csr(*arrays, spec, single)
        else:
            intercept, loss_sum, _, _ = sparse.batch_epoch_csr(*arrays, batch_size, spec, single,
                                                               False)  # fmt: skip
        single_total += loss_sum
        np.testing.assert_allclose(state.W[o], w, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(state.b[o], intercept, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(state.slots[o], slots, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(state.row_memory[o], memory, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(state.avg_W[o], avg_w, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(state.avg_b[o], avg_b[0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(state.losses[o], loss_sum, rtol=1e-12)
    np.testing.assert_allclose(total, single_total, rtol=1e-12)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("batch_size", [1, 7, 60])
def test_softmax_equals_the_lazy_rule_reference(rule, batch_size):
    """Softmax: each output takes the lazy rule from the softmax derivatives (the columns
    a step's rows do not hold keep their weights and slots): kernel == numpy twin; SAGA
    (just in time) == the dense rule's twin."""
    n, d, k = 60, 15, 4
    X, labels, _, sw, order = _problem(5, n, d, k, np.float64)
    spec = _spec(rule, "multinomial", schedule="constant")
    state = _k_state(k, d, n, np.float64, rule, True)
    total, t, bad = _run("multinomial", sp.csr_matrix(X), labels, None, sw, order, batch_size,
                         spec, state)  # fmt: skip
    name = "momentum" if rule == "nesterov" else rule
    common = dict(loss="log_loss", sample_weight=sw, l1=0.005, l2=0.02,
                  average=(np.zeros((k, d)), np.zeros(k), 4.0),
                  optimizer={"nesterov": rule == "nesterov"})  # fmt: skip
    start = ("multinomial", X, labels, np.zeros((k, d)), np.zeros(k), order, batch_size)
    if rule == "saga":
        expected = ref.multi_epoch(*start, update_rule="saga", eta0=0.05, **common)
        np.testing.assert_allclose(state.row_memory, expected[-1]["row_memory"], **tol(np.float64))
    else:
        expected = ref.multi_lazy_rule_epoch(*start, name, eta=0.05, **common)
    close = tol(np.float64)
    assert bad == -1 and t == expected[3]
    np.testing.assert_allclose(total, expected[2], **close)
    np.testing.assert_allclose(state.losses, expected[4], **close)
    np.testing.assert_allclose(state.W, expected[0], **close)
    np.testing.assert_allclose(state.b, expected[1], **close)
    np.testing.assert_allclose(state.avg_W, expected[5], **close)
    np.testing.assert_allclose(state.avg_b, expected[6], **close)
    np.testing.assert_allclose(state.slots, expected[-1]["slots"], **close)


@pytest.mark.parametrize("rule", ["nesterov", "adam", "saga"])
@pytest.mark.parametrize("batch_size", [1, 9])
def test_softmax_on_fully_stored_rows_equals_the_dense_rule_kernel(rule, batch_size):
    """Where every row stores every column, the lazy rule is the dense one: the CSR
    kernels equal ``multi_rule_sgd_epoch``/``multi_rule_batch_epoch`` on the same data."""
    n, d, k = 50, 6, 3
    X, labels, _, sw, order = _problem(2, n, d, k, np.float64, density=1.1)
    X[3] = 1.0  # every column stored
    spec = _spec(rule, "multinomial", l1=0.0)
    sparse_state = _k_state(k, d, n, np.float64, rule, True)
    out = _run("multinomial", sp.csr_matrix(X), labels, None, sw, order, batch_size, spec,
               sparse_state)  # fmt: skip
    dense_state = _k_state(k, d, n, np.float64, rule, True)
    rows = kernels.MultiRows(X, np.empty((0, k)), labels, sw, order)
    if batch_size == 1:
        dense = kernels.multi_rule_sgd_epoch(rows, kernels.SOFTMAX, spec, dense_state, 0)
    else:
        dense = kernels.multi_rule_batch_epoch(rows, kernels.SOFTMAX, batch_size, spec,
                                               dense_state, False)  # fmt: skip
    close = tol(np.float64)
    assert out[1:] == dense[1:]
    np.testing.assert_allclose(out[0], dense[0], **close)
    for got, expected in zip(sparse_state, dense_state, strict=True):
        np.testing.assert_allclose(got, expected, **close)


@pytest.mark.parametrize("rule", ["adam", "saga"])
def test_mini_batches_do_not_depend_on_the_number_of_threads(rule):
    """Scores in parallel chunks, gradients summed in row order: parallel or not, and on
    one thread or two, the same bits."""
    n, d, k = 1200, 30, 3
    X, labels, _, sw, order = _problem(9, n, d, k, np.float64, density=0.2)
    A = sp.csr_matrix(X)
    spec = _spec(rule, "multinomial")
    results = []
    threads = numba.get_num_threads()
    try:
        for parallel, count in (
            (False, 1),
            (True, 1),
            (True, min(2, numba.config.NUMBA_NUM_THREADS)),
        ):
            numba.set_num_threads(count)
            state = _k_state(k, d, n, np.float64, rule, True)
            out = _run("multinomial", A, labels, None, sw, order, 600, spec, state, parallel)
            results.append((out, state))
    finally:
        numba.set_num_threads(threads)
    for out, state in results[1:]:
        assert out == results[0][0]
        for got, expected in zip(state, results[0][1], strict=True):
            assert np.array_equal(got, expected)


@pytest.mark.parametrize("rule", ["adagrad", "saga"])
def test_a_non_finite_score_stops_the_epoch_at_its_row(rule):
    n, d, k = 20, 5, 3
    X, labels, _, sw, _ = _problem(1, n, d, k, np.float64, density=1.1)
    X[6, 2] = np.inf
    order = np.arange(n, dtype=np.int64)
    for batch_size, bad_at in ((1, 6), (4, 4)):
        state = _k_state(k, d, n, np.float64, rule, False)
        spec = _spec(rule, "ovr", average_start=0.0)
        total, _, bad = _run("ovr", sp.csr_matrix(X), labels, None, sw, order, batch_size, spec,
                             state)  # fmt: skip
        assert bad == bad_at and not np.isfinite(total)


# ---------------------------------------------------------------------------------------------
# fastgd.fit
# ---------------------------------------------------------------------------------------------


def _classes(n=300, d=6, k=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, (X @ rng.standard_normal((d, k))).argmax(axis=1)


@pytest.mark.parametrize(
    ("multiclass", "optimizer", "strategy"),
    [("multinomial", "adam", "minibatch"), ("ovr", "momentum", "sgd"),
     ("multinomial", "adagrad", "sgd"), ("ovr", "rmsprop", "minibatch"),
     ("multinomial", "saga", "sgd"), ("ovr", "saga", "minibatch")],
)  # fmt: skip
def test_fit_runs_the_rules_on_csr_rows(multiclass, optimizer, strategy):
    """CSR rows storing every column: the fit is the dense fit (the lazy rule is the
    dense one there), k outputs and their slots."""
    X, y = _classes()
    settings = dict(loss="log_loss", multiclass=multiclass, optimizer=optimizer,
                    strategy=strategy, learning_rate="constant", eta0=0.01, random_state=0,
                    max_iter=5, tol=None, batch_size=16)  # fmt: skip
    dense = fastgd.fit(X, y, **settings)
    csr = fastgd.fit(sp.csr_matrix(X), y, **settings)
    assert csr.coef.shape == (4, 6) and csr.slots.shape == dense.slots.shape
    np.testing.assert_allclose(csr.coef, dense.coef, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(csr.intercept, dense.intercept, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(csr.loss_history, dense.loss_history, rtol=1e-9)


def test_fit_on_sparse_rows_learns_and_keeps_float32():
    X, y = _classes(n=600)
    X[np.abs(X) < 0.5] = 0.0
    A = sp.csr_matrix(X.astype(np.float32))
    result = fastgd.fit(A, y, loss="log_loss", multiclass="multinomial", optimizer="adam",
                        learning_rate="constant", eta0=0.01, random_state=0,
                        max_iter=20)  # fmt: skip
    assert result.coef.dtype == np.float32
    assert (result.predict(A) == y).mean() > 0.8
