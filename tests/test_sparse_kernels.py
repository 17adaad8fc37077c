"""Property tests of the CSR kernels (``fastgd._kernels.sparse``) against the numpy reference.

The sparse kernels apply the penalty and the running average lazily (see the module
docstring of ``fastgd/_kernels/sparse.py``); here every epoch is compared with
``fastgd.reference`` on the same matrix made dense, the averages with a plain numpy ASGD
loop, and prediction and the validation scan with the dense kernels. Tolerances come from
the one table in ``tests/conftest.py``.
"""

from __future__ import annotations

import dataclasses
import math

import numba
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import (
    CLASSIFICATION_LOSSES,
    dtypes,
    kernel_schedules,
    losses,
    penalties,
    property_settings,
    seeds,
    tol,
)
from hypothesis import example, given
from hypothesis import strategies as st

from fastgd import options
from fastgd import reference as ref
from fastgd._kernels import epochs, sparse
from fastgd._kernels.records import Spec, make_spec, make_state

LOSS_CODES = {loss.name: loss.code for loss in options.LOSSES}
NO_AVERAGE = (None, None, 1.0)  # avg_w, avg_b, average_start: averaging off

# ---------------------------------------------------------------------------------------------
# Problems
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SparseProblem:
    """One epoch's inputs, as the engine would prepare them (arrays in the dtype of X)."""

    X: sp.csr_matrix
    y: np.ndarray
    sample_weight: np.ndarray  # empty: unweighted; else mean-1 multipliers (float64)
    order: np.ndarray  # empty: file order
    w: np.ndarray
    intercept: float
    fit_intercept: bool
    loss: str
    epsilon: float
    schedule: str
    eta0: float
    power_t: float
    alpha: float
    optimal_init: float
    t: float
    l1: float
    l2: float

    def rows(self) -> tuple:
        """The kernels' row arguments: the CSR arrays, ``y``, ``sample_weight``, ``order``."""
        X = self.X
        return X.data, X.indices, X.indptr, self.y, self.sample_weight, self.order

    def spec(self, average_start: float) -> Spec:
        """The kernels' spec (the schedule selects the update rule, as in the engine)."""
        schedule = options.schedule_by_name(self.schedule)
        return make_spec(
            loss=LOSS_CODES[self.loss], epsilon=self.epsilon, schedule=schedule.kernel_code,
            rule=schedule.rule.code, eta0=self.eta0, power_t=self.power_t, alpha=self.alpha,
            optimal_init=self.optimal_init, l1=self.l1, l2=self.l2,
            fit_intercept=self.fit_intercept, average_start=average_start,
        )  # fmt: skip

    def reference_arguments(self) -> dict:
        n = self.X.shape[0]
        return {
            "X": self.X.toarray().astype(np.float64),
            "y": self.y.astype(np.float64),
            "w": self.w.astype(np.float64),
            "b": self.intercept,
            "order": self.order if self.order.shape[0] else np.arange(n),
            "loss": self.loss,
            "epsilon": self.epsilon,
            "sample_weight": self.sample_weight if self.sample_weight.shape[0] else None,
            "l1": self.l1,
            "l2": self.l2,
            "schedule": self.schedule,
            "eta0": self.eta0,
            "power_t": self.power_t,
            "alpha": self.alpha,
            "optimal_init": self.optimal_init,
            "t": self.t,
            "fit_intercept": self.fit_intercept,
        }


def _sparse_problem(
    seed: int,
    n: int,
    d: int,
    *,
    density=0.3,
    dtype="float64",
    loss="squared_error",
    schedule="constant",
    penalty="none",
    weights="none",
    fit_intercept=True,
    file_order=False,
    step=0.3,
) -> SparseProblem:
    """Generic sparse data drawn from ``seed`` (each value non-zero with probability
    ``density``; rows without non-zeros occur) and a step size at most
    ``step / (curvature · max_i s_i(1 + ‖x_i‖²))``, as in ``test_kernels._problem``."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    values = rng.normal(size=(n, d)) * (rng.random((n, d)) < density)
    X = sp.csr_matrix(values.astype(dtype))
    dense = X.toarray().astype(np.float64)
    target = dense @ rng.normal(size=d) + 0.5 + 0.3 * rng.normal(size=n)
    y = np.where(target > 0.5, 1.0, -1.0) if loss in CLASSIFICATION_LOSSES else target
    if weights == "none":
        sample_weight = np.empty(0)
    else:
        user = rng.uniform(0.2, 3.0, size=n)
        if weights == "some_zero":
            user[rng.random(n) < 0.3] = 0.0
            if not user.sum() > 0:
                user[rng.integers(n)] = 1.0
        sample_weight = user * (n / user.sum())
    biggest_weight = sample_weight.max() if sample_weight.shape[0] else 1.0
    row_scale = biggest_weight * (1.0 + float((dense**2).sum(axis=1).max()))
    eta_target = step / (options.loss_by_name(loss).curvature * row_scale)
    alpha = float(10.0 ** rng.uniform(-4.0, -0.5))
    l1, l2 = options.penalty_by_name(penalty).split(alpha, float(rng.uniform(0.0, 1.0)))
    epsilon = float(rng.uniform(0.05, 1.0))
    t = float(rng.integers(1, 50))
    optimal_init = 0.0
    if schedule == "optimal":
        optimal_init = ref.optimal_init(loss, alpha, epsilon)
        t = max(t, float(math.ceil(1.0 / (alpha * eta_target) - optimal_init + 1.0)))
    return SparseProblem(
        X=X, y=y.astype(dtype), sample_weight=sample_weight,
        order=np.empty(0, dtype=np.int64) if file_order else rng.permutation(n),
        w=(0.5 * rng.normal(size=d)).astype(dtype), intercept=float(0.5 * rng.normal()),
        fit_intercept=fit_intercept, loss=loss, epsilon=epsilon, schedule=schedule,
        eta0=eta_target, power_t=float(rng.uniform(0.1, 1.0)), alpha=alpha,
        optimal_init=optimal_init, t=t, l1=l1, l2=l2,
    )  # fmt: skip


def _run_sgd(problem: SparseProblem, average=NO_AVERAGE):
    """``(w, intercept, Σ s·L, t, bad)`` of ``sgd_epoch_csr``; ``average`` is updated."""
    avg_w, avg_b, average_start = average
    state = make_state(problem.w.copy(), problem.intercept, problem.t, avg_w, avg_b)
    out = sparse.sgd_epoch_csr(*problem.rows(), problem.spec(average_start), state)
    return (state.w, *out)


def _run_batch(problem: SparseProblem, batch_size: int, parallel: bool, average=NO_AVERAGE):
    avg_w, avg_b, average_start = average
    state = make_state(problem.w.copy(), problem.intercept, problem.t, avg_w, avg_b)
    spec = problem.spec(average_start)
    out = sparse.batch_epoch_csr(*problem.rows(), batch_size, spec, state, parallel)
    return (state.w, *out)


def _reference_epoch(problem: SparseProblem, batch_size: int | None):
    if batch_size is None:
        return ref.sgd_epoch(**problem.reference_arguments())
    return ref.minibatch_epoch(**problem.reference_arguments(), batch_size=batch_size)


def _assert_epoch_matches(problem: SparseProblem, result, expected):
    """``result``: a kernel's (w, b, Σ s·L, t, bad); ``expected``: the reference's
    (w, b, epoch loss, t), epoch loss = Σ s·L / n + penalty at the epoch's start."""
    w, intercept, loss_sum, t, bad = result
    w_ref, intercept_ref, epoch_loss_ref, t_ref = expected
    tolerance = tol(problem.X.dtype)
    assert bad == -1, f"the kernel reported a non-finite loss at position {bad}"
    assert w.dtype == problem.X.dtype
    assert t == t_ref
    np.testing.assert_allclose(w, w_ref, **tolerance, err_msg="coef")
    np.testing.assert_allclose(intercept, intercept_ref, **tolerance, err_msg="intercept")
    if not problem.fit_intercept:
        assert intercept == problem.intercept
    penalty_at_start = ref.penalty_value(problem.w, problem.l1, problem.l2)
    epoch_loss = loss_sum / problem.X.shape[0] + penalty_at_start
    np.testing.assert_allclose(epoch_loss, epoch_loss_ref, **tolerance, err_msg="epoch loss")
    if problem.l1 > 0:  # the proximal step leaves exact zeros, where the reference does
        np.testing.assert_array_equal(w == 0, w_ref == 0, err_msg="exact zeros")


@st.composite
def sparse_cases(draw, max_rows=30, max_features=12):
    n = draw(st.integers(1, max_rows))
    return {
        "seed": draw(seeds),
        "n": n,
        "d": draw(st.integers(1, max_features)),
        "density": draw(st.sampled_from((0.0, 0.1, 0.3, 0.6, 1.0))),
        "batch_size": draw(
            st.one_of(st.just(1), st.just(n), st.integers(n + 1, n + 5), st.integers(1, max(1, n)))
        ),
        "dtype": draw(dtypes.map(lambda dtype: np.dtype(dtype).name)),
        "loss": draw(losses),
        "schedule": draw(kernel_schedules),
        "penalty": draw(penalties),
        "weights": draw(st.sampled_from(("none", "positive", "some_zero"))),
        "fit_intercept": draw(st.booleans()),
        "file_order": draw(st.booleans()),
    }


def _case(**overrides) -> dict:
    """An explicit case (for ``@example``): defaults overridden by ``overrides``."""
    return {
        "seed": 0, "n": 1, "d": 1, "density": 1.0, "batch_size": 1, "dtype": "float64",
        "loss": "squared_error", "schedule": "constant", "penalty": "none", "weights": "none",
        "fit_intercept": True, "file_order": False, **overrides,
    }  # fmt: skip


def _problem_of(case: dict) -> SparseProblem:
    return _sparse_problem(**{k: v for k, v in case.items() if k != "batch_size"})


# ---------------------------------------------------------------------------------------------
# 1. Epochs against the reference on the dense matrix
# ---------------------------------------------------------------------------------------------


@property_settings(max_examples=120)
@given(case=sparse_cases())
@example(case=_case())  # n = d = 1
@example(case=_case(n=6, d=4, density=0.0, penalty="elasticnet"))  # rows without non-zeros
@example(case=_case(n=9, d=8, density=0.3, dtype="float32", weights="some_zero", penalty="l1"))
@example(case=_case(n=9, d=5, loss="modified_huber", schedule="optimal", fit_intercept=False,
                    penalty="l2", file_order=True))  # fmt: skip
def test_sgd_epoch_csr_matches_the_reference(case):
    problem = _problem_of(case)
    _assert_epoch_matches(problem, _run_sgd(problem), _reference_epoch(problem, None))


@property_settings(max_examples=120)
@given(case=sparse_cases())
@example(case=_case())  # n = d = B = 1
@example(case=_case(n=7, d=3, batch_size=3, dtype="float32", weights="some_zero",
                    penalty="l1", density=0.3))  # fmt: skip
@example(case=_case(n=5, d=6, batch_size=9, file_order=True, loss="hinge", schedule="optimal",
                    density=0.1, penalty="elasticnet"))  # fmt: skip
@example(case=_case(n=6, d=2, batch_size=4, loss="log_loss", schedule="invscaling",
                    penalty="elasticnet", fit_intercept=False, density=0.6))  # fmt: skip
def test_batch_epoch_csr_matches_the_reference_and_parallel_is_serial(case):
    problem = _problem_of(case)
    serial = _run_batch(problem, case["batch_size"], False)
    parallel = _run_batch(problem, case["batch_size"], True)
    np.testing.assert_array_equal(parallel[0], serial[0])
    assert parallel[1:] == serial[1:]
    _assert_epoch_matches(problem, serial, _reference_epoch(problem, case["batch_size"]))


@pytest.mark.parametrize("strategy", ["sgd", "minibatch"])
def test_int64_indices_and_unsorted_columns_give_the_same_epoch(strategy):
    """Indices of either integer type; columns of a row in any order (only the rounding of
    the dot products may change)."""
    problem = _sparse_problem(5, 40, 9, density=0.5, loss="huber", penalty="elasticnet")
    X = problem.X
    rng = np.random.default_rng(1)
    data, indices = X.data.copy(), X.indices.astype(np.int64)
    for i in range(X.shape[0]):  # reverse or shuffle the columns of every row
        lo, hi = X.indptr[i], X.indptr[i + 1]
        perm = lo + rng.permutation(hi - lo)
        data[lo:hi], indices[lo:hi] = data[perm], indices[perm]
    shuffled = sp.csr_matrix((data, indices, X.indptr), shape=X.shape)
    # scipy picks the smallest index type that fits: set int64 after construction.
    shuffled.indices, shuffled.indptr = indices, X.indptr.astype(np.int64)
    assert shuffled.indices.dtype == np.int64 and not shuffled.has_sorted_indices
    other = dataclasses.replace(problem, X=shuffled)
    batch_size = None if strategy == "sgd" else 7
    run = (lambda p: _run_sgd(p)) if batch_size is None else (lambda p: _run_batch(p, 7, False))
    expected = _reference_epoch(problem, batch_size)
    _assert_epoch_matches(problem, run(problem), expected)
    _assert_epoch_matches(other, run(other), expected)


# ---------------------------------------------------------------------------------------------
# 2. Averaging (ASGD) against a plain numpy loop
# ---------------------------------------------------------------------------------------------


def _numpy_asgd(problem: SparseProblem, batch_size, avg_w, avg_b, average_start):
    """The reference epoch one step at a time, with the running mean after every step
    whose counter ``t >= average_start``: ``avg += (w − avg)/k``, ``k = t − start + 1``."""
    arguments = problem.reference_arguments()
    X, y, s = arguments.pop("X"), arguments.pop("y"), arguments.pop("sample_weight")
    order = arguments.pop("order")
    w, b, t = arguments.pop("w"), arguments.pop("b"), arguments.pop("t")
    avg_w, avg_b = avg_w.astype(np.float64), float(avg_b)
    step_rows = 1 if batch_size is None else batch_size
    for start in range(0, X.shape[0], step_rows):
        rows = order[start : start + step_rows]
        w, b, _, t_after = ref.minibatch_epoch(
            X[rows], y[rows], w, b, np.arange(rows.shape[0]), rows.shape[0],
            sample_weight=None if s is None else s[rows], t=t, **arguments,
        )  # fmt: skip
        if t >= average_start:
            k = t - average_start + 1.0
            avg_w += (w - avg_w) / k
            avg_b += (b - avg_b) / k
        t = t_after
    return w, b, avg_w, avg_b, t


@property_settings(max_examples=80)
@given(
    case=sparse_cases(max_rows=25),
    strategy=st.sampled_from(("sgd", "minibatch")),
    start_offset=st.one_of(
        st.sampled_from((-1000.0, -3.0, 0.0, 1.0, 5.0, 100.0)), st.floats(-10.0, 30.0)
    ),
)
@example(case=_case(n=20, d=10, density=0.2, penalty="l1"), strategy="sgd", start_offset=-1000.0)
@example(case=_case(n=20, d=10, density=0.2, penalty="elasticnet", batch_size=3,
                    dtype="float32"), strategy="minibatch", start_offset=4.0)  # fmt: skip
@example(case=_case(n=20, d=10, density=0.3, penalty="l2"), strategy="sgd", start_offset=2.5)
def test_averaged_epochs_match_a_numpy_asgd_loop(case, strategy, start_offset):
    """``average_start = max(1, t + start_offset)``: 1, before, at, during or after this
    epoch's steps (a fractional start weights the incoming average by ``k − 1 < 1`` at its
    first step, as the formula says)."""
    problem = _problem_of(case)
    d = problem.w.shape[0]
    rng = np.random.default_rng(case["seed"])
    average_start = max(1.0, problem.t + start_offset)
    avg_w = rng.normal(size=d).astype(problem.X.dtype)  # the mean of earlier epochs' steps
    avg_b = np.array([rng.normal()])
    batch_size = None if strategy == "sgd" else case["batch_size"]
    w_ref, b_ref, avg_w_ref, avg_b_ref, t_ref = _numpy_asgd(
        problem, batch_size, avg_w, avg_b[0], average_start
    )
    average = (avg_w.copy(), avg_b.copy(), average_start)
    if batch_size is None:
        result = _run_sgd(problem, average)
    else:
        result = _run_batch(problem, batch_size, True, average)
    tolerance = tol(problem.X.dtype)
    w, intercept, _, t, bad = result
    assert (bad, t) == (-1, t_ref)
    np.testing.assert_allclose(w, w_ref, **tolerance, err_msg="coef")
    np.testing.assert_allclose(intercept, b_ref, **tolerance, err_msg="intercept")
    assert average[0].dtype == problem.X.dtype
    np.testing.assert_allclose(average[0], avg_w_ref, **tolerance, err_msg="avg_w")
    np.testing.assert_allclose(average[1][0], avg_b_ref, **tolerance, err_msg="avg_b")
    # Averaging changes nothing else (SGD without L1 and averaging takes the scaled path:
    # the same steps, other rounding).
    plain = _run_sgd(problem) if batch_size is None else _run_batch(problem, batch_size, True)
    np.testing.assert_allclose(plain[0], w, **tolerance)
    np.testing.assert_allclose(plain[1:3], result[1:3], **tolerance)
    assert plain[3:] == result[3:]


# ---------------------------------------------------------------------------------------------
# 3. Long epochs: the lazy products renormalise
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("averaged", [False, True])
@pytest.mark.parametrize("penalty", ["l2", "elasticnet"])
@pytest.mark.parametrize(
    ("strategy", "decay_per_step"),
    [("sgd", 0.5), ("minibatch", 0.5), ("sgd", 0.0), ("sgd", -0.5), ("minibatch", -0.5)],
)
def test_long_epochs_with_strong_l2_renormalise_and_match(
    strategy, decay_per_step, penalty, averaged
):
    """``1 − eta·l2`` = 0.5 over 2000 steps: the running product of decays would underflow
    after ~1075 steps, so it restarts every ~200 steps (an O(d) catch-up). ``1 − eta·l2 = 0``
    (every step dense) and ``-0.5`` (clipped to 0, as scikit-learn's) too. Three columns
    are never touched, so their lazy gap spans the whole epoch."""
    n, d, eta = 2000, 23, 0.01
    rng = np.random.default_rng(3)
    values = rng.normal(size=(n, d)) * (rng.random((n, d)) < 0.15)
    values[:, :3] = 0.0
    X = sp.csr_matrix(values)
    y = values @ rng.normal(size=d) + 0.5
    l2 = (1.0 - decay_per_step) / eta
    l1 = 0.0 if penalty == "l2" else 0.02
    problem = SparseProblem(
        X=X, y=y, sample_weight=np.empty(0), order=rng.permutation(n),
        w=rng.normal(size=d), intercept=0.1, fit_intercept=True, loss="squared_error",
        epsilon=0.1, schedule="constant", eta0=eta, power_t=0.25, alpha=l1 + l2,
        optimal_init=0.0, t=1.0, l1=l1, l2=l2,
    )  # fmt: skip
    batch_size = None if strategy == "sgd" else 4
    if averaged:
        average = (np.zeros(d), np.zeros(1), 7.0)
        w_ref, b_ref, avg_w_ref, avg_b_ref, t_ref = _numpy_asgd(
            problem, batch_size, average[0], 0.0, average[2]
        )
    else:
        average = NO_AVERAGE
        w_ref, b_ref, _, t_ref = _reference_epoch(problem, batch_size)
    result = _run_sgd(problem, average) if batch_size is None else (
        _run_batch(problem, batch_size, False, average)
    )  # fmt: skip
    tolerance = tol(np.float64)
    assert result[3:] == (t_ref, -1)
    np.testing.assert_allclose(result[0], w_ref, **tolerance, err_msg="coef")
    np.testing.assert_allclose(result[1], b_ref, **tolerance, err_msg="intercept")
    if averaged:
        np.testing.assert_allclose(average[0], avg_w_ref, **tolerance, err_msg="avg_w")
        np.testing.assert_allclose(average[1][0], avg_b_ref, **tolerance, err_msg="avg_b")


@pytest.mark.parametrize("strategy", ["sgd", "minibatch"])
def test_a_full_history_restarts_and_matches(strategy):
    """More steps than the lazy path's history holds (``max(d, HISTORY_STEPS)``), with L1
    only (no decay, so only the full history forces the restarts) and averaging."""
    n, d = sparse.HISTORY_STEPS + 500, 5
    rng = np.random.default_rng(4)
    values = rng.normal(size=(n, d)) * (rng.random((n, d)) < 0.3)
    values[:, 0] = 0.0
    problem = SparseProblem(
        X=sp.csr_matrix(values), y=values @ rng.normal(size=d), sample_weight=np.empty(0),
        order=rng.permutation(n), w=rng.normal(size=d), intercept=0.0, fit_intercept=True,
        loss="squared_error", epsilon=0.1, schedule="constant", eta0=0.05, power_t=0.25,
        alpha=1e-3, optimal_init=0.0, t=1.0, l1=1e-3, l2=0.0,
    )  # fmt: skip
    batch_size = None if strategy == "sgd" else 1
    average = (np.zeros(d), np.zeros(1), 3.0)
    w_ref, b_ref, avg_w_ref, avg_b_ref, t_ref = _numpy_asgd(
        problem, batch_size, average[0], 0.0, average[2]
    )
    result = _run_sgd(problem, average) if batch_size is None else (
        _run_batch(problem, batch_size, False, average)
    )  # fmt: skip
    tolerance = tol(np.float64)
    assert result[3:] == (t_ref, -1)
    np.testing.assert_allclose(result[0], w_ref, **tolerance, err_msg="coef")
    np.testing.assert_allclose(result[1], b_ref, **tolerance, err_msg="intercept")
    np.testing.assert_allclose(average[0], avg_w_ref, **tolerance, err_msg="avg_w")
    np.testing.assert_allclose(average[1][0], avg_b_ref, **tolerance, err_msg="avg_b")


# ---------------------------------------------------------------------------------------------
# 4. Non-finite predictions stop the epoch
# ---------------------------------------------------------------------------------------------


def _overflowing_problem(n, d, bad_position, dtype, l1=0.0) -> SparseProblem:
    """As ``test_kernels._overflowing_problem``, with every other column of X zero."""
    dtype = np.dtype(dtype)
    big = 1e150 if dtype == np.float64 else 1e19
    order = np.arange(n)[::-1].copy()
    values = np.ones((n, d), dtype=dtype)
    values[order[bad_position]] = 1e160 if dtype == np.float64 else 1e20
    values[:, 1::2] = 0.0
    return SparseProblem(
        X=sp.csr_matrix(values), y=np.zeros(n, dtype=dtype), sample_weight=np.empty(0),
        order=order, w=np.full(d, big, dtype=dtype), intercept=0.0, fit_intercept=True,
        loss="squared_error", epsilon=0.1, schedule="constant", eta0=1e-40, power_t=0.25,
        alpha=1e-4, optimal_init=0.0, t=1.0, l1=l1, l2=1e-3,
    )  # fmt: skip


@property_settings(max_examples=25)
@given(
    n=st.integers(1, 12),
    d=st.integers(1, 5),
    bad_fraction=st.floats(0.0, 1.0, exclude_max=True),
    dtype=dtypes,
    l1=st.sampled_from((0.0, 1e-3)),
    batch_size=st.one_of(st.none(), st.integers(1, 13)),
)
def test_epochs_stop_at_the_first_non_finite_prediction(n, d, bad_fraction, dtype, l1, batch_size):
    """The position of the first bad row (SGD) or of the start of the first bad batch; the
    steps before it taken, and every weight brought up to date."""
    bad_position = int(bad_fraction * n)
    problem = _overflowing_problem(n, d, bad_position, dtype, l1)
    runs = (
        [_run_sgd(problem)]
        if batch_size is None
        else [_run_batch(problem, batch_size, parallel) for parallel in (False, True)]
    )
    steps = bad_position if batch_size is None else bad_position // batch_size
    first = steps if batch_size is None else steps * batch_size
    taken = dataclasses.replace(
        problem, X=problem.X[problem.order[:first]], y=problem.y[problem.order[:first]],
        order=np.arange(first),
    )  # fmt: skip
    if first:
        w_ref = _reference_epoch(taken, batch_size)[0]
    else:
        w_ref = problem.w
    for w, _, loss_sum, t, bad in runs:
        assert (bad, t) == (first, 1.0 + steps)
        assert not math.isfinite(loss_sum)
        np.testing.assert_allclose(w, w_ref, **tol(dtype))


# ---------------------------------------------------------------------------------------------
# 5. Prediction and the validation scan against the dense kernels
# ---------------------------------------------------------------------------------------------


@property_settings(max_examples=40)
@given(
    seed=seeds,
    n=st.integers(1, 40),
    d=st.integers(1, 10),
    density=st.sampled_from((0.0, 0.2, 1.0)),
    dtype=dtypes,
)
def test_predict_csr_is_the_dense_prediction(seed, n, d, density, dtype):
    problem = _sparse_problem(seed, n, d, density=density, dtype=dtype)
    X = problem.X
    out = np.empty(n, dtype=dtype)
    sparse.predict_csr(X.data, X.indices, X.indptr, problem.w, problem.intercept, out)
    expected = np.empty(n, dtype=dtype)
    epochs.predict(X.toarray(), problem.w, problem.intercept, expected)
    np.testing.assert_allclose(out, expected, **tol(dtype))
    np.testing.assert_allclose(
        out, X.toarray().astype(np.float64) @ problem.w + problem.intercept, **tol(dtype)
    )


@property_settings(max_examples=60)
@given(
    seed=seeds,
    n=st.integers(1, 600),
    d=st.integers(1, 8),
    density=st.sampled_from((0.0, 0.2, 1.0)),
    dtype=dtypes,
    n_bad=st.integers(0, 3),
    bad_value=st.sampled_from((np.nan, np.inf, -np.inf)),
    weighted=st.booleans(),
    extra=st.sampled_from((0.0, 1.0)),
)
@example(seed=0, n=600, d=3, density=1.0, dtype=np.float64, n_bad=2, bad_value=np.nan,
         weighted=True, extra=1.0)  # fmt: skip
def test_scan_csr_is_the_dense_scan(seed, n, d, density, dtype, n_bad, bad_value, weighted, extra):
    """The first non-finite stored value in row-major order (NaN/±inf put at random stored
    entries) and ``max_i s_i(‖x_i‖² + extra)``, as ``epochs.scan_rows`` on the dense
    matrix."""
    problem = _sparse_problem(seed, n, d, density=density, dtype=dtype)
    X = problem.X
    rng = np.random.default_rng(seed)
    if X.nnz:
        X.data[rng.integers(0, X.nnz, size=n_bad)] = bad_value
    sample_weight = rng.uniform(0.0, 2.0, size=n) if weighted else np.empty(0)
    row, column, norm = sparse.scan_csr(X.data, X.indices, X.indptr, n, sample_weight, extra)
    expected = epochs.scan_rows(np.ascontiguousarray(X.toarray()), sample_weight, extra)
    assert (row, column) == expected[:2]
    if row < 0:
        np.testing.assert_allclose(norm, expected[2], **tol(np.float64))
    else:
        assert norm == math.inf


# ---------------------------------------------------------------------------------------------
# 6. Threads
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def restore_threads():
    before = numba.get_num_threads()
    yield
    numba.set_num_threads(before)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 Numba threads")
@pytest.mark.parametrize(("penalty", "averaged"), [("l2", False), ("elasticnet", True)])
def test_parallel_batch_epoch_csr_is_bitwise_serial_with_one_or_two_threads(
    restore_threads, penalty, averaged
):
    """Batches of several chunks (2500 rows: 10 chunks of 256), on the scaled path (L2) and
    the lazy one (L1, averaging): serial, one thread and two threads give the same bits."""
    problem = _sparse_problem(11, 3000, 40, density=0.2, loss="log_loss", penalty=penalty,
                              weights="positive")  # fmt: skip
    runs, averages = [], []
    for threads, parallel in ((1, False), (1, True), (2, True)):
        numba.set_num_threads(threads)
        averages.append((np.zeros(40), np.zeros(1), 1.0) if averaged else NO_AVERAGE)
        runs.append(_run_batch(problem, 2500, parallel, averages[-1]))
    for run, average in zip(runs[1:], averages[1:], strict=True):
        np.testing.assert_array_equal(run[0], runs[0][0])
        assert run[1:] == runs[0][1:]
        np.testing.assert_array_equal(average[0], averages[0][0])
        np.testing.assert_array_equal(average[1], averages[0][1])
