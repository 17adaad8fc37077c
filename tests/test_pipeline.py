"""Shuffled epochs over gathered chunks (``fastgd._pipeline``, ``_kernels/pipeline.py``):
the gather copies exactly, the overlapped run equals the serial one bit for bit, the chunked
run is the composition of the epoch kernels on the chunks (mini-batches: today's unchunked
run bit for bit), results do not depend on the thread count, and the engine falls back to
the plain epoch where the pipeline does not apply."""

from __future__ import annotations

import threading

import numba
import numpy as np
import pytest
import scipy.sparse
from conftest import tol

import fastgd
from fastgd import _pipeline, options
from fastgd._kernels.epochs import batch_epoch, sgd_epoch
from fastgd._kernels.order import fill_epoch_order
from fastgd._kernels.pipeline import gather_rows
from fastgd._kernels.records import make_spec, make_state, rule_arrays

N_ROWS, N_FEATURES = 1003, 5  # 1003 rows: not a multiple of any chunk below
CHUNK_BYTES = 1000  # 25 float64 or 50 float32 rows of 5 features
PACKAGE_CHUNK_BYTES = _pipeline.CHUNK_BYTES
NO_ORDER = np.empty(0, dtype=np.int64)
CONSTANT = next(s for s in options.SCHEDULES if s.name == "constant").kernel_code

#: Configurations of a step: (name, spec fields, rule, averaging, weighted).
CONFIGS = {
    "plain": ({}, options.UPDATE_SGD, False, False),
    "l1_averaged_weighted": ({"l1": 1e-3}, options.UPDATE_SGD, True, True),
    "pa1": ({}, options.UPDATE_PA1, False, False),
    "momentum": ({}, options.UPDATE_MOMENTUM, False, True),
}


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(_pipeline, "CHUNK_BYTES", CHUNK_BYTES)


def _data(seed, dtype):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N_ROWS, N_FEATURES)).astype(dtype)
    y = (X @ rng.standard_normal(N_FEATURES) + 0.1 * rng.standard_normal(N_ROWS)).astype(dtype)
    weights = rng.uniform(0.5, 1.5, N_ROWS)
    order = np.empty(N_ROWS, dtype=np.int64)
    fill_epoch_order(order, options.SHUFFLE_FULL, 0, seed + 1)
    return X, y, weights, order


def _spec(config, eta0=0.01):
    fields, rule, averaging, _ = CONFIGS[config]
    return make_spec(
        loss=options.loss_by_name("squared_error").code, epsilon=0.1, schedule=CONSTANT,
        rule=rule, eta0=eta0, power_t=0.25, alpha=1e-4, optimal_init=1.0,
        l1=fields.get("l1", 0.0), l2=1e-3, fit_intercept=True,
        average_start=3.0 if averaging else 0.0,
    )  # fmt: skip


def _state(config, dtype):
    _, rule, averaging, _ = CONFIGS[config]
    slots, row_memory = rule_arrays(options.UPDATE_RULES[rule], N_FEATURES, N_ROWS)
    avg_w, avg_b = (np.zeros(N_FEATURES), np.zeros(1)) if averaging else (None, None)
    return make_state(np.zeros(N_FEATURES, dtype), 0.5, 1.0, avg_w, avg_b, slots, row_memory)


def _outcome(state, result):
    """Everything an epoch changes: the returned scalars and the arrays updated in place."""
    return (tuple(float(v) for v in result), state.w.copy(), state.avg_w.copy(),
            state.avg_b.copy(), state.slots.copy())  # fmt: skip


def _assert_identical(a, b):
    assert a[0] == b[0]
    for left, right in zip(a[1:], b[1:], strict=True):
        np.testing.assert_array_equal(left, right)


def _gathered(config, dtype, seed, step_rows, overlap):
    X, y, weights, order = _data(seed, dtype)
    sw = weights if CONFIGS[config][3] else np.empty(0)
    state = _state(config, dtype)
    epochs = _pipeline.GatheredEpochs(X, y, sw, step_rows)
    return _outcome(state, epochs.epoch(order, _spec(config), state, overlap))


def _composed(config, dtype, seed, step_rows):
    """The definition of a gathered epoch: the epoch kernel on each chunk, copied by numpy,
    the state carried from chunk to chunk."""
    X, y, weights, order = _data(seed, dtype)
    sw = weights if CONFIGS[config][3] else np.empty(0)
    state, spec = _state(config, dtype), _spec(config)
    chunk = _pipeline.chunk_rows(N_FEATURES * X.itemsize, step_rows)
    intercept, t, loss = state.intercept, state.t, 0.0
    for start in range(0, N_ROWS, chunk):
        rows = order[start : start + chunk]
        part = state._replace(intercept=intercept, t=t)
        Xc, yc, swc = X[rows], y[rows], (sw[rows] if sw.size else sw)
        if step_rows == 1:
            result = sgd_epoch(Xc, yc, swc, NO_ORDER, spec, part, 0)
        else:
            result = batch_epoch(Xc, yc, swc, NO_ORDER, step_rows, spec, part, False, 0)
        intercept, chunk_loss, t, bad = result
        loss += chunk_loss
        assert bad == -1
    return _outcome(state, (intercept, loss, t, -1))


def _unchunked(config, dtype, seed, step_rows):
    X, y, weights, order = _data(seed, dtype)
    sw = weights if CONFIGS[config][3] else np.empty(0)
    state, spec = _state(config, dtype), _spec(config)
    if step_rows == 1:
        result = sgd_epoch(X, y, sw, order, spec, state, 0)
    else:
        result = batch_epoch(X, y, sw, order, step_rows, spec, state, False, 0)
    return _outcome(state, result)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gather_copies_the_rows_of_the_order_exactly(dtype):
    X, y, weights, order = _data(0, dtype)
    out_X, out_y, out_w = np.empty((40, N_FEATURES), dtype), np.empty(40, dtype), np.empty(40)
    gather_rows(X, y, weights, order, 17, out_X, out_y, out_w)
    rows = order[17:57]
    np.testing.assert_array_equal(out_X, X[rows])
    np.testing.assert_array_equal(out_y, y[rows])
    np.testing.assert_array_equal(out_w, weights[rows])


def test_chunks_hold_whole_steps_and_do_not_depend_on_threads():
    assert _pipeline.chunk_rows(40, 1) == 25
    assert _pipeline.chunk_rows(40, 7) == 21  # 3 batches of 7 rows
    assert _pipeline.chunk_rows(40, 100) == 100  # a batch bigger than a chunk: one batch


@pytest.mark.parametrize("step_rows", [1, 7])
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_overlapped_epoch_is_the_serial_one_bit_for_bit(seed, dtype, config, step_rows):
    serial = _gathered(config, dtype, seed, step_rows, overlap=False)
    _assert_identical(_gathered(config, dtype, seed, step_rows, overlap=True), serial)
    _assert_identical(_composed(config, dtype, seed, step_rows), serial)


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gathered_minibatches_are_todays_epoch_bit_for_bit(dtype, config):
    gathered = _gathered(config, dtype, 3, 7, overlap=True)
    unchunked = _unchunked(config, dtype, 3, 7)
    assert gathered[0][0] == unchunked[0][0]  # intercept
    assert gathered[0][2:] == unchunked[0][2:]  # t, bad
    np.testing.assert_allclose(gathered[0][1], unchunked[0][1], rtol=1e-12)  # loss: per chunk
    _assert_identical((None, *gathered[1:]), (None, *unchunked[1:]))


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gathered_sgd_matches_the_unchunked_epoch_to_rounding(dtype, config):
    """Only a chunk's first prediction is computed otherwise (``x·w + b`` instead of the
    fused step's), so the two runs agree within the kernels' reassociation tolerance."""
    gathered = _gathered(config, dtype, 4, 1, overlap=True)
    unchunked = _unchunked(config, dtype, 4, 1)
    np.testing.assert_allclose(gathered[1], unchunked[1], **tol(dtype))
    np.testing.assert_allclose(gathered[0][:3], unchunked[0][:3], **tol(dtype))
    assert gathered[0][3] == -1


@pytest.mark.parametrize("overlap", [False, True])
def test_divergence_reports_the_position_in_the_order(overlap):
    X, y, _, order = _data(5, np.float64)
    X[order[60], 2] = np.inf  # position 60: in the third chunk of 25 rows
    spec, state = _spec("plain"), _state("plain", np.float64)
    threads = threading.active_count()
    result = _pipeline.GatheredEpochs(X, y, np.empty(0), 1).epoch(order, spec, state, overlap)
    reference = sgd_epoch(X, y, np.empty(0), order, spec, _state("plain", np.float64), 0)
    assert result[3] == reference[3] == 60
    assert threading.active_count() == threads  # the gather thread has ended


def test_a_failed_gather_is_raised_in_the_callers_thread(monkeypatch):
    X, y, _, order = _data(6, np.float64)
    calls = []

    def failing_gather(*arguments):
        calls.append(arguments[4])
        if len(calls) == 3:
            raise MemoryError("gather failed")
        gather_rows(*arguments)

    monkeypatch.setattr(_pipeline, "gather_rows", failing_gather)
    threads = threading.active_count()
    epochs = _pipeline.GatheredEpochs(X, y, np.empty(0), 1)
    with pytest.raises(MemoryError, match="gather failed"):
        epochs.epoch(order, _spec("plain"), _state("plain", np.float64), True)
    assert threading.active_count() == threads


@pytest.mark.parametrize("stuck", ["helper", "caller"])
def test_either_thread_gathers_while_the_other_is_stuck(monkeypatch, stuck):
    """While one thread's gather is held up, the other claims and gathers the next chunks
    (two of them, before the stuck one may go on); the result is the serial run's bit for
    bit either way."""
    serial = _gathered("plain", np.float64, 10, 1, overlap=False)
    done = {True: 0, False: 0}  # gathers finished, by "is the second thread"
    released = threading.Event()

    def gather(*arguments):
        helper = threading.current_thread().name == "fastgd-gather"
        if helper == (stuck == "helper"):
            released.wait(timeout=10)
        gather_rows(*arguments)
        done[helper] += 1
        if done[helper] >= 2 and helper != (stuck == "helper"):
            released.set()

    monkeypatch.setattr(_pipeline, "gather_rows", gather)
    _assert_identical(_gathered("plain", np.float64, 10, 1, overlap=True), serial)
    assert released.is_set()
    assert done[True] + done[False] == 41  # each chunk once


def _fit(X, y, **options_):
    return fastgd.fit(X, y, learning_rate="constant", eta0=0.005, max_iter=3, tol=None,
                      random_state=7, **options_)  # fmt: skip


@pytest.mark.parametrize("strategy", ["sgd", "minibatch"])
def test_fit_does_not_depend_on_the_thread_count(monkeypatch, strategy):
    monkeypatch.setattr(_pipeline, "MIN_GATHER_BYTES", 0)
    overlaps = []
    epoch = _pipeline.GatheredEpochs.epoch

    def spy(self, order, spec, state, overlap):
        overlaps.append(overlap)
        return epoch(self, order, spec, state, overlap)

    monkeypatch.setattr(_pipeline.GatheredEpochs, "epoch", spy)
    X, y, _, _ = _data(8, np.float64)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single = _fit(X, y, strategy=strategy, batch_size=7)
    finally:
        numba.set_num_threads(before)
    many = _fit(X, y, strategy=strategy, batch_size=7)
    assert overlaps == [False] * 3 + [before > 1] * 3
    np.testing.assert_array_equal(single.coef, many.coef)
    assert single.intercept == many.intercept
    np.testing.assert_array_equal(single.loss_history, many.loss_history)


def test_the_plain_epoch_serves_what_the_pipeline_does_not(monkeypatch):
    X = np.zeros((10, 4))
    none = np.empty(0)
    full = options.SHUFFLE_FULL
    assert _pipeline.gathers(X, "sgd", full, 1, none) is False  # small
    monkeypatch.setattr(_pipeline, "MIN_GATHER_BYTES", 0)
    monkeypatch.setattr(_pipeline, "CHUNK_BYTES", PACKAGE_CHUNK_BYTES)
    assert _pipeline.gathers(X, "sgd", full, 1, none) is True
    assert _pipeline.gathers(X, "minibatch", full, 256, none) is True
    wide = np.zeros((10, 1000))
    assert _pipeline.gathers(wide, "minibatch", full, 32, none) is True
    assert not _pipeline.gathers(wide, "minibatch", full, 512, none)  # parallel-sized batches
    assert not _pipeline.gathers(np.zeros((10, 10**5)), "minibatch", full, 256, none)  # > chunk
    assert not _pipeline.gathers(X, "full", full, 10, none)
    assert not _pipeline.gathers(X, "sgd", options.SHUFFLE_BLOCK, 1, none)
    assert not _pipeline.gathers(X, "sgd", options.SHUFFLE_NONE, 1, none)
    assert not _pipeline.gathers(X, "sgd", full, 1, np.zeros(10))  # SAGA's row memory
    csr = scipy.sparse.csr_matrix(X)
    assert not _pipeline.gathers(csr, "sgd", full, 1, none)


def test_fit_takes_the_plain_epoch_below_the_size_threshold(monkeypatch):
    def unexpected(*arguments):
        raise AssertionError("the pipeline ran")

    monkeypatch.setattr(_pipeline.GatheredEpochs, "epoch", unexpected)
    X, y, _, _ = _data(9, np.float64)
    assert X.nbytes < _pipeline.MIN_GATHER_BYTES
    assert np.isfinite(_fit(X, y, strategy="sgd").coef).all()
