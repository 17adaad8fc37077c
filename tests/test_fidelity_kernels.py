"""scikit-learn's ways in the kernels (issue 13), against ``fastgd.reference``.

- the truncated L1 (``l1_method``: scikit-learn's cumulative truncated gradient) on dense
  rows (every weight) and CSR rows (the row's stored columns), its state carried from one
  call to the next;
- ``intercept_decay`` (scikit-learn's 0.01 on sparse data) in every plain-rule kernel;
- the L2 decay factor clipped at 0 (a huge ``eta·l2``);
- the CSR kernel's scaled path until averaging starts (scikit-learn's iterate, bit for bit).

Tolerances come from the one table in ``tests/conftest.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import (
    CLASSIFICATION_LOSSES,
    dtypes,
    kernel_schedules,
    losses,
    property_settings,
    seeds,
    tol,
)
from hypothesis import example, given
from hypothesis import strategies as st

from fastgd import options
from fastgd import reference as ref
from fastgd._kernels import epochs, sparse
from fastgd._kernels.records import l1_memory_for, make_spec, make_state

TRUNCATED = options.L1_METHODS.index("truncated")

# ---------------------------------------------------------------------------------------------
# The reference's truncated L1, by hand
# ---------------------------------------------------------------------------------------------


def test_truncated_l1_by_hand():
    """Two steps of threshold 0.1: each weight receives what it is due of u, never past 0;
    a weight that crossed 0 since (the last one) pays its debt first."""
    w, memory = ref.truncated_l1([0.5, -0.2, 0.0, 0.05], np.zeros(5), 0.1)
    np.testing.assert_allclose(w, [0.4, -0.1, 0.0, 0.0])
    np.testing.assert_allclose(memory, [-0.1, 0.1, 0.0, -0.05, 0.1])
    w[3] = -0.3  # the data step pushed it across 0: it is owed u + (-q) = 0.2 + 0.05
    w, memory = ref.truncated_l1(w, memory, 0.1)
    np.testing.assert_allclose(w, [0.3, 0.0, 0.0, -0.05])
    np.testing.assert_allclose(memory, [-0.2, 0.2, 0.0, 0.2, 0.2])


def test_truncated_l1_touches_only_the_given_columns():
    w, memory = ref.truncated_l1([0.5, -0.5], np.zeros(3), 0.1, columns=[1])
    np.testing.assert_allclose(w, [0.5, -0.4])
    np.testing.assert_allclose(memory, [0.0, 0.1, 0.1])


# ---------------------------------------------------------------------------------------------
# Problems
# ---------------------------------------------------------------------------------------------


def _problem(seed, n, d, dtype, loss, schedule, density):
    """Rows (dense or CSR-able), targets, starting weights, the schedule's scalars, and a
    step at most 0.3 / (curvature · max(1 + ‖x‖²)) (as ``test_kernels``)."""
    rng = np.random.default_rng(seed)
    X = (rng.normal(size=(n, d)) * (rng.random((n, d)) < density)).astype(dtype)
    target = X.astype(np.float64) @ rng.normal(size=d) + 0.5 + 0.3 * rng.normal(size=n)
    y = np.where(target > 0.5, 1.0, -1.0) if loss in CLASSIFICATION_LOSSES else target
    scale = 1.0 + float((X.astype(np.float64) ** 2).sum(axis=1).max())
    eta0 = 0.3 / (options.loss_by_name(loss).curvature * scale)
    alpha = float(10.0 ** rng.uniform(-3.0, -0.5))
    epsilon = float(rng.uniform(0.05, 1.0))
    t = float(rng.integers(1, 30))
    optimal_init = 0.0
    if schedule == "optimal":
        optimal_init = ref.optimal_init(loss, alpha, epsilon)
        t = max(t, float(np.ceil(1.0 / (alpha * eta0) - optimal_init + 1.0)))
    return {
        "X": X, "y": y.astype(dtype), "w": (0.5 * rng.normal(size=d)).astype(dtype),
        "b": float(0.5 * rng.normal()), "order": rng.permutation(n), "loss": loss,
        "epsilon": epsilon, "schedule": schedule, "eta0": eta0, "power_t": 0.5,
        "alpha": alpha, "optimal_init": optimal_init, "t": t,
    }  # fmt: skip


def _spec(p, l1, l2, *, intercept_decay, truncated, average_start=0.0, fit_intercept=True):
    schedule = options.schedule_by_name(p["schedule"])
    return make_spec(
        loss=options.loss_by_name(p["loss"]).code, epsilon=p["epsilon"],
        schedule=schedule.kernel_code, rule=schedule.rule.code, eta0=p["eta0"],
        power_t=p["power_t"], alpha=p["alpha"], optimal_init=p["optimal_init"], l1=l1, l2=l2,
        fit_intercept=fit_intercept, average_start=average_start,
        intercept_decay=intercept_decay, l1_method=TRUNCATED if truncated else 0,
    )  # fmt: skip


def _reference(p, l1, l2, *, batch_size, lazy, **options_):
    arguments = {k: p[k] for k in ("X", "y", "w", "b", "order", "loss", "epsilon", "schedule",
                                   "eta0", "power_t", "alpha", "optimal_init", "t")}  # fmt: skip
    arguments.update(X=p["X"].astype(np.float64), y=p["y"].astype(np.float64),
                     w=p["w"].astype(np.float64), l1=l1, l2=l2, lazy=lazy)  # fmt: skip
    if batch_size is None:
        return ref.sgd_epoch(**arguments, **options_)
    return ref.minibatch_epoch(**arguments, batch_size=batch_size, **options_)


def _assert_close(dtype, got, expected, what):
    np.testing.assert_allclose(got, expected, **tol(dtype), err_msg=what)


# ---------------------------------------------------------------------------------------------
# 1. Truncated L1 and intercept decay in the per-sample epochs, dense and CSR
# ---------------------------------------------------------------------------------------------

fidelity_cases = st.fixed_dictionaries({
    "seed": seeds, "n": st.integers(1, 25), "d": st.integers(1, 10), "dtype": dtypes,
    "loss": losses, "schedule": kernel_schedules,
    "density": st.sampled_from((0.0, 0.3, 0.6, 1.0)),
    "l1_share": st.sampled_from((0.0, 0.5, 1.0)),
    "intercept_decay": st.sampled_from((1.0, 0.01)),
    "memory_start": st.sampled_from(("zero", "carried")),
})  # fmt: skip


def _case(**overrides):
    return {"seed": 0, "n": 8, "d": 4, "dtype": np.float64, "loss": "squared_error",
            "schedule": "constant", "density": 0.6, "l1_share": 1.0, "intercept_decay": 0.01,
            "memory_start": "carried", **overrides}  # fmt: skip


def _penalties(p, case, strength):
    l1 = strength * p["alpha"] * case["l1_share"]
    return l1, strength * p["alpha"] * (1.0 - case["l1_share"])


def _start_memory(case, d, seed):
    """The truncated L1's state at the start: zeros, or one carried from earlier steps."""
    memory = l1_memory_for(TRUNCATED, d)
    if case["memory_start"] == "carried":
        rng = np.random.default_rng(seed)
        memory[-1] = 0.05
        memory[:-1] = rng.uniform(-0.05, 0.05, size=d)
    return memory


@property_settings(max_examples=60)
@given(case=fidelity_cases, sparse_rows=st.booleans())
@example(case=_case(), sparse_rows=False)
@example(case=_case(dtype=np.float32, loss="hinge", density=0.3), sparse_rows=True)
@example(case=_case(n=6, d=3, density=0.0, memory_start="zero"), sparse_rows=True)
def test_sgd_epochs_with_truncated_l1_match_the_reference(case, sparse_rows):
    """sgd_epoch (every weight truncated) and sgd_epoch_csr (the row's stored columns only,
    the reference's ``lazy``), the L1 state continued from ``memory_start``."""
    p = _problem(case["seed"], case["n"], case["d"], case["dtype"], case["loss"],
                 case["schedule"], case["density"])  # fmt: skip
    l1, l2 = _penalties(p, case, 20.0)
    spec = _spec(p, l1, l2, intercept_decay=case["intercept_decay"], truncated=True)
    memory = _start_memory(case, case["d"], case["seed"])
    expected = _reference(
        p,
        l1,
        l2,
        batch_size=None,
        lazy=sparse_rows,
        l1_method="truncated",
        l1_memory=memory.copy(),
        intercept_decay=case["intercept_decay"],
    )
    state = make_state(p["w"].copy(), p["b"], p["t"], l1_memory=memory)
    if sparse_rows:
        X = sp.csr_matrix(p["X"])
        rows = (X.data, X.indices, X.indptr, p["y"], np.empty(0), p["order"])
        intercept, _, t, bad = sparse.sgd_epoch_csr(*rows, spec, state)
    else:
        rows = (p["X"], p["y"], np.empty(0), p["order"])
        intercept, _, t, bad = epochs.sgd_epoch(*rows, spec, state, 0)
    w_ref, b_ref, _, t_ref, memory_ref = expected
    assert bad == -1 and t == t_ref
    _assert_close(p["X"].dtype, state.w, w_ref, "coef")
    _assert_close(p["X"].dtype, intercept, b_ref, "intercept")
    _assert_close(p["X"].dtype, memory, memory_ref, "l1 memory (q, u)")
    np.testing.assert_array_equal(state.w == 0, w_ref == 0, err_msg="exact zeros")


@property_settings(max_examples=40)
@given(case=fidelity_cases, start_offset=st.sampled_from((-5.0, 3.0, 10.0, 1000.0)))
@example(case=_case(n=20, d=6, density=0.3), start_offset=3.0)
def test_averaged_csr_epoch_with_truncated_l1_matches_the_reference(case, start_offset):
    """With averaging on CSR rows: the scaled path until averaging starts, then the lazy
    one, whose running means take the truncated weights (the reference's order)."""
    p = _problem(case["seed"], case["n"], case["d"], case["dtype"], case["loss"],
                 case["schedule"], case["density"])  # fmt: skip
    l1, l2 = _penalties(p, case, 20.0)
    average_start = max(1.0, p["t"] + start_offset)
    spec = _spec(p, l1, l2, intercept_decay=case["intercept_decay"], truncated=True,
                 average_start=average_start)  # fmt: skip
    memory = _start_memory(case, case["d"], case["seed"])
    avg_w, avg_b = np.zeros(case["d"]), np.zeros(1)
    expected = _reference(p, l1, l2, batch_size=None, lazy=True, l1_method="truncated",
                          l1_memory=memory.copy(), intercept_decay=case["intercept_decay"],
                          average=(avg_w.copy(), 0.0, average_start))  # fmt: skip
    state = make_state(p["w"].copy(), p["b"], p["t"], avg_w, avg_b, l1_memory=memory)
    X = sp.csr_matrix(p["X"])
    rows = (X.data, X.indices, X.indptr, p["y"], np.empty(0), p["order"])
    intercept, _, t, bad = sparse.sgd_epoch_csr(*rows, spec, state)
    w_ref, b_ref, _, t_ref, avg_w_ref, avg_b_ref, memory_ref = expected
    assert bad == -1 and t == t_ref
    dtype = p["X"].dtype
    _assert_close(dtype, state.w, w_ref, "coef")
    _assert_close(dtype, intercept, b_ref, "intercept")
    _assert_close(dtype, avg_w, avg_w_ref, "averaged coef")
    _assert_close(dtype, avg_b[0], avg_b_ref, "averaged intercept")
    _assert_close(dtype, memory, memory_ref, "l1 memory (q, u)")


# ---------------------------------------------------------------------------------------------
# 2. Intercept decay and the clipped decay in the batch epochs (proximal L1)
# ---------------------------------------------------------------------------------------------


@property_settings(max_examples=40)
@given(case=fidelity_cases, batch_size=st.integers(1, 8), sparse_rows=st.booleans(),
       strength=st.sampled_from((1.0, 1e4)))  # fmt: skip
@example(case=_case(l1_share=0.0), batch_size=3, sparse_rows=True, strength=1e4)
@example(case=_case(l1_share=0.5), batch_size=2, sparse_rows=False, strength=1e4)
def test_batch_epochs_with_intercept_decay_and_huge_l2_match_the_reference(
    case, batch_size, sparse_rows, strength
):  # fmt: skip
    """``strength`` 1e4 makes ``eta·l2`` > 1: the decay factor is 0, never negative."""
    p = _problem(case["seed"], case["n"], case["d"], case["dtype"], case["loss"],
                 case["schedule"], case["density"])  # fmt: skip
    if p["schedule"] == "optimal" and strength > 1.0:
        p["schedule"] = "constant"  # optimal's step is 1/(alpha·t): alpha is the strength
    l1, l2 = _penalties(p, case, strength)
    spec = _spec(p, l1, l2, intercept_decay=case["intercept_decay"], truncated=False)
    expected = _reference(p, l1, l2, batch_size=batch_size, lazy=False,
                          intercept_decay=case["intercept_decay"])  # fmt: skip
    state = make_state(p["w"].copy(), p["b"], p["t"])
    if sparse_rows:
        X = sp.csr_matrix(p["X"])
        rows = (X.data, X.indices, X.indptr, p["y"], np.empty(0), p["order"])
        intercept, _, t, bad = sparse.batch_epoch_csr(*rows, batch_size, spec, state, False)
    else:
        rows = (p["X"], p["y"], np.empty(0), p["order"])
        intercept, _, t, bad = epochs.batch_epoch(*rows, batch_size, spec, state, False, 0)
    w_ref, b_ref, _, t_ref = expected
    assert bad == -1 and t == t_ref
    _assert_close(p["X"].dtype, state.w, w_ref, "coef")
    _assert_close(p["X"].dtype, intercept, b_ref, "intercept")


@pytest.mark.parametrize("sparse_rows", [False, True], ids=["dense", "csr"])
def test_a_huge_l2_step_zeroes_the_weights_instead_of_overflowing(sparse_rows):
    """eta·l2 = 1e4: scikit-learn's clipped decay leaves the last step's data term only."""
    p = _problem(3, 12, 5, np.float64, "squared_error", "constant", 1.0)
    l2 = 1e4 / p["eta0"]
    spec = _spec(p, 0.0, l2, intercept_decay=1.0, truncated=False)
    state = make_state(p["w"].copy(), p["b"], p["t"])
    if sparse_rows:
        X = sp.csr_matrix(p["X"])
        rows = (X.data, X.indices, X.indptr, p["y"], np.empty(0), p["order"])
        _, _, _, bad = sparse.sgd_epoch_csr(*rows, spec, state)
    else:
        _, _, _, bad = epochs.sgd_epoch(p["X"], p["y"], np.empty(0), p["order"], spec,
                                        state, 0)  # fmt: skip
    last = p["order"][-1]
    assert bad == -1 and np.all(np.isfinite(state.w))
    # w = 0·w − η·L'(p, y)·x of the last row: a multiple of that row.
    np.testing.assert_allclose(np.cross(state.w[:3], p["X"][last, :3]), 0.0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# 3. The CSR kernel's scaled path before averaging starts
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("truncated", [False, True], ids=["l2", "truncated-l1"])
@pytest.mark.parametrize("n_rows", [1, 6, 40])
def test_csr_iterate_before_averaging_is_the_unaveraged_one_bit_for_bit(truncated, n_rows):
    """An epoch that ends before averaging starts leaves exactly the iterate of the epoch
    without averaging (scikit-learn's ``test_late_onset_averaging_not_reached`` asks for
    1e-16: its plain path runs until averaging starts)."""
    p = _problem(5, n_rows, 30, np.float64, "hinge", "optimal", 0.2)
    l1, l2 = (p["alpha"], 0.0) if truncated else (0.0, p["alpha"])
    X = sp.csr_matrix(p["X"])
    rows = (X.data, X.indices, X.indptr, p["y"], np.empty(0), p["order"])
    results = []
    for average_start in (0.0, p["t"] + n_rows):  # off; from the step after this epoch
        spec = _spec(p, l1, l2, intercept_decay=0.01, truncated=truncated,
                     average_start=average_start)  # fmt: skip
        avg = (np.zeros(30), np.zeros(1)) if average_start else (None, None)
        state = make_state(
            p["w"].copy(),
            p["b"],
            p["t"],
            *avg,
            l1_memory=l1_memory_for(TRUNCATED if truncated else 0, 30),
        )
        out = sparse.sgd_epoch_csr(*rows, spec, state)
        results.append((state.w.copy(), out[0], avg[0]))
    np.testing.assert_array_equal(results[1][0], results[0][0])
    assert results[1][1] == results[0][1]
    np.testing.assert_array_equal(results[1][2], 0.0)  # nothing averaged yet


# ---------------------------------------------------------------------------------------------
# 4. fastgd.fit's options
# ---------------------------------------------------------------------------------------------


def _regression(n=40, d=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    return X, X[:, :2] @ np.array([1.0, -2.0]) + 0.3 + 0.1 * rng.normal(size=n)


@pytest.mark.parametrize(("options_", "named"), [
    ({"l1_method": "truncated", "strategy": "minibatch"}, "l1_method='truncated'"),
    ({"l1_method": "truncated", "strategy": "sgd", "optimizer": "adam"}, "optimizer='adam'"),
    ({"l1_method": "lasso"}, "l1_method='lasso'"),
    ({"intercept_decay": 0.0}, "intercept_decay"),
    ({"intercept_decay": 1.5}, "intercept_decay"),
    ({"intercept_decay": 0.5, "strategy": "full", "optimizer": "lbfgs"}, "intercept_decay"),
])  # fmt: skip
def test_fit_refuses_bad_fidelity_options_by_name(options_, named):
    import fastgd

    X, y = _regression()
    with pytest.raises(ValueError, match=named.replace("(", r"\(").replace(")", r"\)")):
        fastgd.fit(X, y, **options_)


def test_fit_truncated_l1_is_the_kernel_epochs_with_its_state_carried():
    """``fastgd.fit(l1_method="truncated")`` over 3 epochs: the kernel's epochs chained,
    the truncated L1's (q, u) carried from one epoch to the next within the call."""
    import fastgd

    X, y = _regression()
    common = {"strategy": "sgd", "learning_rate": "constant", "eta0": 0.02, "penalty": "l1",
              "alpha": 0.05, "shuffle": False, "tol": None, "intercept_decay": 0.5}  # fmt: skip
    result = fastgd.fit(X, y, max_iter=3, l1_method="truncated", **common)
    w, b, memory = np.zeros(5), 0.0, np.zeros(6)
    for epoch in range(3):
        w, b, _, _, memory = ref.sgd_epoch(
            X, y, w, b, np.arange(40), loss="squared_error", l1=0.05, eta0=0.02,
            t=1.0 + 40 * epoch, l1_method="truncated", l1_memory=memory, intercept_decay=0.5,
        )  # fmt: skip
    np.testing.assert_allclose(result.coef, w, **tol(np.float64))
    np.testing.assert_allclose(result.intercept, b, **tol(np.float64))
