"""The optimizer update rules (issue 12): momentum/Nesterov, AdaGrad, RMSProp, Adam, AdamW,
SAGA. Each rule's kernel (``fastgd._kernels.rules``, run by the dense epoch loops) against
its numpy twin (``fastgd.reference.optimizer_step``), the twin against hand-worked values
of torch.optim's equations, and each rule's convergence on a small least-squares problem,
driven by calling the kernels in a loop (the engine cannot select rules yet)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import (
    CLASSIFICATION_LOSSES,
    DTYPES,
    KERNEL_SCHEDULE_NAMES,
    LOSS_NAMES,
    PENALTY_NAMES,
    property_settings,
    tol,
)
from hypothesis import example, given
from hypothesis import strategies as st

from fastgd import options
from fastgd import reference as ref
from fastgd._kernels import epochs, sparse
from fastgd._kernels.records import make_spec, make_state, rule_arrays
from fastgd.options import UPDATE_RULES, update_rule_by_name

OPTIMIZERS = tuple(rule.name for rule in UPDATE_RULES if rule.code >= options.UPDATE_MOMENTUM)
NO_ROWS = np.empty(0, dtype=np.int64)


def _spec(rule, *, loss="squared_error", schedule="constant", eta0=0.01, l1=0.0, l2=0.0,
          fit_intercept=True, average_start=0.0, optimizer=None):  # fmt: skip
    schedule_row = options.schedule_by_name(schedule)
    return make_spec(
        loss=options.loss_by_name(loss).code, epsilon=0.1, schedule=schedule_row.kernel_code,
        rule=update_rule_by_name(rule).code, eta0=eta0, power_t=0.25, alpha=1e-3,
        optimal_init=ref.optimal_init(loss, 1e-3) if schedule == "optimal" else 1.0,
        l1=l1, l2=l2, fit_intercept=fit_intercept, average_start=average_start,
        **(optimizer or {}),
    )  # fmt: skip


def _fresh_state(rule, w, intercept, t, n, averaging):
    slots, row_memory = rule_arrays(update_rule_by_name(rule), w.shape[0], n)
    avg = (np.zeros(w.shape[0]), np.zeros(1)) if averaging else (None, None)
    return make_state(w.copy(), intercept, t, *avg, slots=slots, row_memory=row_memory)


@st.composite
def cases(draw):
    """A small problem and every option the rules combine with."""
    n = draw(st.integers(1, 30))
    d = draw(st.integers(1, 6))
    loss = draw(st.sampled_from(LOSS_NAMES))
    rule = draw(st.sampled_from(OPTIMIZERS))
    csr = update_rule_by_name(rule).sparse and draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    X = rng.standard_normal((n, d))
    if csr:  # about half the values zero: rows that leave features out
        X *= rng.random((n, d)) < 0.5
    if loss in CLASSIFICATION_LOSSES:
        y = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    else:
        y = X @ rng.standard_normal(d) + rng.standard_normal(n)
    penalty = options.penalty_by_name(draw(st.sampled_from(PENALTY_NAMES)))
    l1, l2 = penalty.split(draw(st.sampled_from((1e-3, 0.05))), 0.5)
    weighted = draw(st.booleans())
    return {
        "rule": rule,
        "csr": csr,
        "dtype": draw(st.sampled_from(DTYPES)),
        "X": X,
        "y": y,
        "w": rng.standard_normal(d) * draw(st.sampled_from((0.0, 0.5))),
        "intercept": draw(st.sampled_from((0.0, 0.3))),
        "sample_weight": rng.uniform(0.2, 1.8, n) if weighted else None,
        "order": rng.permutation(n) if draw(st.booleans()) else np.arange(n),
        "loss": loss,
        "schedule": draw(st.sampled_from(KERNEL_SCHEDULE_NAMES)),
        "eta0": draw(st.sampled_from((1e-3, 0.02))),
        "l1": l1,
        "l2": l2,
        "fit_intercept": draw(st.booleans()),
        "average": draw(st.booleans()),
        "t": draw(st.sampled_from((1.0, 7.0))),
        "optimizer": {
            "momentum": draw(st.sampled_from((0.9, 0.5))),
            "nesterov": draw(st.booleans()),
            "beta_1": draw(st.sampled_from((0.9, 0.5))),
            "beta_2": draw(st.sampled_from((0.999, 0.9))),
            "rho": draw(st.sampled_from((0.99, 0.8))),
        },
        "batch_size": draw(st.integers(1, 12)),
        "parallel": draw(st.booleans()),
    }


def _case(**changes):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((9, 3))
    base = {
        "rule": "adam", "dtype": np.float64, "X": X, "y": X @ [1.0, -2.0, 0.5] + 0.2,
        "w": np.zeros(3), "intercept": 0.0, "sample_weight": None, "order": np.arange(9),
        "loss": "squared_error", "schedule": "constant", "eta0": 0.02, "l1": 0.0, "l2": 0.0,
        "fit_intercept": True, "average": False, "t": 1.0, "optimizer": {}, "batch_size": 4,
        "parallel": False, "csr": False,
    }  # fmt: skip
    return {**base, **changes}


def _run_kernel(case, strategy, epochs_run=2):
    """``epochs_run`` epochs of the kernel; returns ``(w, b, loss of the last epoch, t,
    avg_w, avg_b, slots, row_memory)`` (the state carried over between the epochs)."""
    X = np.ascontiguousarray(case["X"], dtype=case["dtype"])
    y = case["y"].astype(case["dtype"])
    n = X.shape[0]
    sw = np.empty(0) if case["sample_weight"] is None else case["sample_weight"]
    spec = _spec(
        case["rule"], loss=case["loss"], schedule=case["schedule"], eta0=case["eta0"],
        l1=case["l1"], l2=case["l2"], fit_intercept=case["fit_intercept"],
        average_start=1.0 if case["average"] else 0.0, optimizer=case["optimizer"],
    )  # fmt: skip
    state = _fresh_state(
        case["rule"], case["w"].astype(case["dtype"]), case["intercept"], case["t"], n,
        case["average"],
    )  # fmt: skip
    order = case["order"].astype(np.int64)
    A = sp.csr_matrix(X) if case["csr"] else None
    for _ in range(epochs_run):
        penalty_at_start = ref.penalty_value(state.w, case["l1"], case["l2"])
        if A is not None and strategy == "sgd":
            intercept, loss, t, bad = sparse.sgd_epoch_csr(
                A.data, A.indices, A.indptr, y, sw, order, spec, state
            )
        elif A is not None:
            intercept, loss, t, bad = sparse.batch_epoch_csr(
                A.data, A.indices, A.indptr, y, sw, order, case["batch_size"], spec, state,
                case["parallel"],
            )  # fmt: skip
        elif strategy == "sgd":
            intercept, loss, t, bad = epochs.sgd_epoch(X, y, sw, order, spec, state, 0)
        else:
            intercept, loss, t, bad = epochs.batch_epoch(
                X, y, sw, order, case["batch_size"], spec, state, case["parallel"], 0
            )
        assert bad == -1
        state = state._replace(intercept=intercept, t=t)
    avg_b = state.avg_b[0] if case["average"] else None
    # The kernels return Σ s·L; the reference the epoch's objective (mean + penalty).
    epoch_loss = loss / n + penalty_at_start
    return (state.w, state.intercept, epoch_loss, state.t, state.avg_w, avg_b, state.slots,
            state.row_memory)  # fmt: skip


def _run_reference(case, strategy, epochs_run=2):
    n = case["X"].shape[0]
    w, b, t = case["w"], case["intercept"], case["t"]
    rule_state = ref.start_rule_state(case["rule"], w.shape[0], n)
    average = (np.zeros(w.shape[0]), 0.0, 1.0) if case["average"] else None
    X = case["X"].astype(case["dtype"]).astype(np.float64)
    y = case["y"].astype(case["dtype"]).astype(np.float64)
    w = w.astype(case["dtype"]).astype(np.float64)
    for _ in range(epochs_run):
        options_ = {
            "loss": case["loss"], "sample_weight": case["sample_weight"], "l1": case["l1"],
            "l2": case["l2"], "schedule": case["schedule"], "eta0": case["eta0"],
            "alpha": 1e-3, "t": t, "fit_intercept": case["fit_intercept"], "average": average,
            "update_rule": case["rule"], "rule_state": rule_state,
            "optimizer": case["optimizer"], "lazy": case["csr"],
            "optimal_init": ref.optimal_init(case["loss"], 1e-3)
            if case["schedule"] == "optimal" else None,
        }  # fmt: skip
        if strategy == "sgd":
            out = ref.sgd_epoch(X, y, w, b, case["order"], **options_)
        else:
            out = ref.minibatch_epoch(X, y, w, b, case["order"], case["batch_size"], **options_)
        w, b, loss, t = out[:4]
        rule_state = out[-1]
        if case["average"]:
            average = (out[4], out[5], 1.0)
    avg_w, avg_b = (average[0], average[1]) if case["average"] else (np.empty(0), None)
    return w, b, loss, t, avg_w, avg_b, rule_state["slots"], rule_state["row_memory"]


def _assert_same(got, expected, dtype):
    names = ("w", "intercept", "epoch loss", "t", "avg_w", "avg_b", "slots", "row_memory")
    for name, a, b in zip(names, got, expected, strict=True):
        if b is None:
            continue
        np.testing.assert_allclose(a, b, **tol(dtype), err_msg=name)


@property_settings(max_examples=60)
@given(case=cases(), strategy=st.sampled_from(("sgd", "minibatch")))
@example(case=_case(rule="saga", batch_size=1), strategy="sgd")
@example(case=_case(rule="adamw", l2=0.05, l1=0.01, dtype=np.float32), strategy="minibatch")
@example(case=_case(rule="adam", csr=True, X=np.array([[1.0, 0, 2], [0, 0, 1], [0, 3, 0]]),
                    y=np.array([1.0, -1.0, 2.0]), order=np.arange(3), batch_size=2,
                    average=True, l2=0.1, t=3.0), strategy="minibatch")  # fmt: skip
@example(case=_case(rule="momentum", optimizer={"nesterov": True}, fit_intercept=False,
                    average=True), strategy="sgd")  # fmt: skip
def test_kernel_matches_the_reference(case, strategy):
    """Two epochs (the slots carried over) of every optimizer rule, with every loss,
    penalty, schedule, sample weights, averaging, float32/float64, serial or parallel
    mini-batches, dense or CSR rows (the lazy variant, against the reference's ``lazy``):
    the kernel and the reference agree to the dtype's tolerance."""
    got = _run_kernel(case, strategy)
    expected = _run_reference(case, strategy)
    _assert_same(got, expected, case["dtype"])


@pytest.mark.parametrize("rule", OPTIMIZERS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_parallel_minibatch_equals_serial_bitwise(rule, dtype):
    """Batches of several chunks (> 256 rows), summed in parallel or serially: the same
    bits (the chunks and their merge order depend on the batch only)."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((1500, 7))
    case = _case(rule=rule, dtype=dtype, X=X, y=X @ rng.standard_normal(7), w=np.zeros(7),
                 order=rng.permutation(1500), batch_size=700, l2=0.01, average=True)  # fmt: skip
    serial = _run_kernel({**case, "parallel": False}, "minibatch")
    parallel = _run_kernel({**case, "parallel": True}, "minibatch")
    for a, b in zip(serial, parallel, strict=True):
        if b is not None:
            np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------------------------
# The reference against torch.optim's equations, worked by hand
# ---------------------------------------------------------------------------------------------


def _one_step(rule, g, g_b, *, w=(1.0, -1.0), b=0.5, eta=0.1, l1=0.0, l2=0.0, t=1.0,
              slots=None, **params):  # fmt: skip
    w = np.asarray(w, dtype=float)
    state = ref.start_rule_state(rule, 2, 3)["slots"] if slots is None else slots
    return ref.optimizer_step(
        rule, w, b, np.asarray(g, dtype=float), g_b, eta=eta, l1=l1, l2=l2, t=t,
        slots=state, params=ref.optimizer_parameters(**params),
    )  # fmt: skip


def test_momentum_by_hand():
    # v1 = g = (1, 2, 4); w1 = w − 0.1·v1. Step 2 with g = (1, 0, 0): v2 = 0.9·v1 + g.
    w, b, slots = _one_step("momentum", [1.0, 2.0], 4.0)
    np.testing.assert_allclose(w, [0.9, -1.2])
    assert b == pytest.approx(0.1)
    w, b, slots = _one_step("momentum", [1.0, 0.0], 0.0, w=w, b=b, slots=slots)
    np.testing.assert_allclose(slots[0], [1.9, 1.8, 3.6])
    np.testing.assert_allclose(w, [0.9 - 0.19, -1.2 - 0.18])
    # Nesterov: the step is along g + μ·v = (1 + 0.9·1.9, 0 + 0.9·1.8).
    w_n, _, _ = _one_step("momentum", [1.0, 0.0], 0.0, w=(0.9, -1.2), slots=np.array(
        [[1.0, 2.0, 4.0]]), nesterov=True)  # fmt: skip
    np.testing.assert_allclose(w_n, [0.9 - 0.1 * 2.71, -1.2 - 0.1 * 1.62])


def test_adagrad_rmsprop_adam_by_hand():
    eps = 1e-8
    # AdaGrad: G = g², so the first step is η·g/(|g| + ε).
    w, _, slots = _one_step("adagrad", [2.0, -0.5], 1.0)
    np.testing.assert_allclose(w, [1.0 - 0.1 * 2 / (2 + eps), -1.0 + 0.1 * 0.5 / (0.5 + eps)])
    np.testing.assert_allclose(slots[0], [4.0, 0.25, 1.0])
    # RMSProp: v = (1 − ρ)·g², step η·g/(√v + ε).
    w, _, slots = _one_step("rmsprop", [2.0, -0.5], 1.0, rho=0.99)
    np.testing.assert_allclose(slots[0], [0.04, 0.0025, 0.01])
    np.testing.assert_allclose(w, [1.0 - 0.1 * 2 / (0.2 + eps), -1.0 + 0.1 * 0.5 / (0.05 + eps)])
    # Adam, step 2 (bias corrections 1 − 0.9² = 0.19 and 1 − 0.999² = 0.001999).
    prior = np.array([[0.1, 0.2, 0.0], [0.01, 0.04, 0.0]])
    w, _, slots = _one_step("adam", [1.0, 0.0], 0.0, slots=prior, t=2.0)
    m = np.array([0.9 * 0.1 + 0.1, 0.9 * 0.2])
    v = np.array([0.999 * 0.01 + 0.001, 0.999 * 0.04])
    np.testing.assert_allclose(slots[:, :2], [m, v])
    step = 0.1 * (m / 0.19) / (np.sqrt(v / 0.001999) + eps)
    np.testing.assert_allclose(w, np.array([1.0, -1.0]) - step)


def test_l2_is_in_the_gradient_but_decoupled_in_adamw():
    # Adam with l2 = 0.5 at w = (1, −1), g = 0: gradient l2·w = (0.5, −0.5), first step
    # ≈ η·sign. AdamW: the data gradient is 0, so only the decay w·(1 − η·l2) acts.
    w, _, _ = _one_step("adam", [0.0, 0.0], 0.0, l2=0.5)
    np.testing.assert_allclose(w, [0.9, -0.9], rtol=1e-7)
    w, _, _ = _one_step("adamw", [0.0, 0.0], 0.0, l2=0.5)
    np.testing.assert_allclose(w, [0.95, -0.95])
    # L1 stays a proximal step after the rule's step: |1 − 0.1·1| − 0.1·2 = 0.7.
    w, _, _ = _one_step("momentum", [1.0, 0.0], 0.0, l1=2.0)
    np.testing.assert_allclose(w, [0.7, -0.8])


def test_saga_reference_by_hand():
    # Two rows; SAGA's first visit of a row has α = 0, so its step is d·x + ḡ.
    X = np.array([[1.0, 0.0], [0.0, 2.0]])
    y = np.array([1.0, 1.0])
    w, b, _, t, state = ref.sgd_epoch(X, y, np.zeros(2), 0.0, [0, 1], loss="squared_error",
                                      eta0=0.1, update_rule="saga")  # fmt: skip
    # Row 0: d = −1, w = (0.1, 0), b = 0.1, ḡ = (−0.5, 0, −0.5).
    # Row 1: p = 0.1, d = −0.9: g = −0.9·(0, 2) + ḡ = (−0.5, −1.8), g_b = −0.9 − 0.5.
    np.testing.assert_allclose(w, [0.15, 0.18])
    assert b == pytest.approx(0.24)
    np.testing.assert_allclose(state["row_memory"], [-1.0, -0.9])
    np.testing.assert_allclose(state["slots"][0], [-0.5, -0.9, -0.95])
    assert t == 3.0


def test_every_optimizer_row_declares_the_slots_its_rule_uses():
    """The kernels index ``slots`` without bounds checks: a row must declare at least the
    slots its rule writes (the reference returns exactly those), and SAGA its row memory."""
    for name in OPTIMIZERS:
        row = update_rule_by_name(name)
        _, _, slots = _one_step(name, [1.0, 2.0], 3.0)
        assert slots.shape == (row.slots, 3), name
        assert row.strategies == {"sgd", "minibatch"}
        assert set(row.parameters) <= set(options.OPTIMIZER_DEFAULTS)
        assert row.row_memory == (name == "saga")
    with pytest.raises(ValueError, match="unknown optimizer parameter"):
        ref.optimizer_parameters(momentun=0.5)


# ---------------------------------------------------------------------------------------------
# Convergence on a least-squares problem, the kernels driven in a loop
# ---------------------------------------------------------------------------------------------


def _least_squares(n=60, d=5, seed=11):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = X @ rng.standard_normal(d) + 0.7 + 0.3 * rng.standard_normal(n)
    augmented = np.hstack([X, np.ones((n, 1))])
    solution = np.linalg.lstsq(augmented, y, rcond=None)[0]
    return X, y, solution[:d], solution[d]


# (rule, strategy, batch size, eta0, schedule, epochs, halve eta0 every so many epochs (0:
# never), tolerance on the weights and intercept). Full-batch RMSProp with a constant step
# oscillates at the scale of the step (its step is about η·sign(g)): it gets the epoch-level
# halving an engine's adaptive schedule would give.
CONVERGENCE = [
    ("saga", "sgd", 1, None, "constant", 400, 0, 1e-8),
    ("saga", "minibatch", 6, None, "constant", 800, 0, 1e-8),
    ("momentum", "minibatch", 60, 0.05, "constant", 600, 0, 1e-8),
    ("momentum", "sgd", 1, 0.002, "invscaling", 400, 0, 1e-3),
    ("adagrad", "minibatch", 60, 0.5, "constant", 1500, 0, 1e-6),
    ("rmsprop", "minibatch", 60, 0.05, "constant", 800, 100, 1e-6),
    ("adam", "minibatch", 60, 0.02, "constant", 1200, 0, 1e-6),
    ("adamw", "minibatch", 60, 0.02, "constant", 1200, 0, 1e-6),
]


@pytest.mark.parametrize(
    "rule, strategy, batch_size, eta0, schedule, n_epochs, halve_every, tolerance", CONVERGENCE
)
def test_rule_converges_to_the_least_squares_solution(
    rule, strategy, batch_size, eta0, schedule, n_epochs, halve_every, tolerance
):
    X, y, w_star, b_star = _least_squares()
    n = X.shape[0]
    if eta0 is None:  # SAGA's constant step 1/(3·L_max), L_max = max ‖(x, 1)‖².
        eta0 = 1.0 / (3.0 * float(np.max(np.sum(X * X, axis=1) + 1.0)))
    spec = _spec(rule, schedule=schedule, eta0=eta0)
    state = _fresh_state(rule, np.zeros(X.shape[1]), 0.0, 1.0, n, False)
    order = np.arange(n, dtype=np.int64)
    for epoch in range(n_epochs):
        if halve_every and epoch and epoch % halve_every == 0:
            spec = spec._replace(eta0=spec.eta0 / 2.0)
        if strategy == "sgd":
            intercept, _, t, bad = epochs.sgd_epoch(X, y, np.empty(0), order, spec, state, 0)
        else:
            intercept, _, t, bad = epochs.batch_epoch(
                X, y, np.empty(0), order, batch_size, spec, state, False, 0
            )
        assert bad == -1
        state = state._replace(intercept=intercept, t=t)
    error = max(np.max(np.abs(state.w - w_star)), abs(state.intercept - b_star))
    assert error < tolerance, f"{rule}: {error:.2e} from the optimum after {n_epochs} epochs"
