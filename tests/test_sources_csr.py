"""CSR blocks in ``fastgd.sources.BlockSource``: a source whose blocks are row slices of a
CSR matrix trains through the engine (``fastgd.engine.train``) to the model ``fastgd.fit``
finds on the whole CSR matrix in memory, and the statistics read CSR blocks as the dense
rows they stand for."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import scipy.sparse as sp

import fastgd
from fastgd import engine, options
from fastgd._kernels.records import make_spec, make_state
from fastgd.sources import (
    BlockSource,
    RowSampler,
    add_block_gradient,
    block_losses,
    block_statistics,
)

ROWS, FEATURES, BLOCK_ROWS = 3000, 500, 700


class SliceSource(BlockSource):
    """The row slices of ``X`` (CSR or dense) as blocks, ``block_rows`` rows each."""

    def __init__(self, X, y, *, block_rows: int = BLOCK_ROWS, fit_intercept: bool = True):
        values = X.nnz / X.shape[0] if sp.issparse(X) else None
        super().__init__(*X.shape, X.dtype, fit_intercept=fit_intercept, block_rows=block_rows,
                         values_per_row=values)  # fmt: skip
        self.X, self.y = X, y

    def block_count(self) -> int:
        return -(-self.n_rows // self.block_rows)

    def blocks(self, order=None):
        for index in range(self.block_count()) if order is None else order:
            rows = slice(index * self.block_rows, (index + 1) * self.block_rows)
            yield self.X[rows].copy(), self.y[rows].copy()


def _fit_source(source, **fit_options):
    settings = {**engine.fit_defaults(), **fit_options}
    return engine.train(source, engine.resolve_options(**settings))


def _random_csr(rows, features, per_row, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    X = sp.random(rows, features, density=per_row / features, format="csr", random_state=rng,
                  data_rvs=rng.standard_normal, dtype=dtype)  # fmt: skip
    X.sum_duplicates()
    X.sort_indices()
    return X


@pytest.fixture(scope="module")
def data():
    """A CSR matrix with ~10 non-zeros a row, a regression target and ±1 labels."""
    X = _random_csr(ROWS, FEATURES, 10, seed=7)
    rng = np.random.default_rng(8)
    truth = rng.standard_normal(FEATURES)
    score = X @ truth + 0.5
    y = score + 0.1 * rng.standard_normal(ROWS)
    labels = np.where(score + 0.3 * rng.standard_normal(ROWS) > 0, 1.0, -1.0)
    return X, y, labels


SETTINGS = {"learning_rate": "constant", "eta0": 0.02, "max_iter": 3, "tol": None,
            "shuffle": False, "batch_size": 64, "alpha": 1e-3}  # fmt: skip


def _assert_same_model(streamed, in_memory):
    np.testing.assert_allclose(streamed.coef, in_memory.coef, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(streamed.intercept, in_memory.intercept, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(streamed.loss_history, in_memory.loss_history, rtol=1e-10)
    assert streamed.t == in_memory.t


@pytest.mark.parametrize("average", [False, True])
@pytest.mark.parametrize("penalty", ["l2", "l1", "elasticnet"])
@pytest.mark.parametrize("loss", ["squared_error", "log_loss", "hinge"])
@pytest.mark.parametrize("strategy", ["sgd", "minibatch", "full"])
def test_csr_blocks_train_to_the_model_of_fit_on_the_whole_matrix(
    data, strategy, loss, penalty, average
):  # fmt: skip
    X, y, labels = data
    target = y if loss == "squared_error" else labels
    settings = {**SETTINGS, "strategy": strategy, "loss": loss, "penalty": penalty,
                "average": average}  # fmt: skip
    streamed = _fit_source(SliceSource(X, target), **settings)
    in_memory = fastgd.fit(X, target, **settings)
    _assert_same_model(streamed, in_memory)
    assert np.any(streamed.coef != 0.0)
    if average:  # the running means and the iterate both match
        np.testing.assert_allclose(
            streamed.standard_coef, in_memory.standard_coef, rtol=1e-10, atol=1e-13
        )


@pytest.mark.parametrize("strategy", ["sgd", "minibatch", "full"])
def test_float32_csr_blocks_train_to_the_model_of_fit(data, strategy):
    X, y, _ = data
    X, y = X.astype(np.float32), y.astype(np.float32)
    settings = {**SETTINGS, "strategy": strategy, "penalty": "l2", "average": True}
    streamed = _fit_source(SliceSource(X, y), **settings)
    in_memory = fastgd.fit(X, y, **settings)
    assert streamed.coef.dtype == in_memory.coef.dtype == np.float32
    # The weights are stored in float32: the block ends (where the kernels bring the lazy
    # scale into the weights) and the float64 sums of a full batch round differently.
    np.testing.assert_allclose(streamed.coef, in_memory.coef, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(streamed.loss_history, in_memory.loss_history, rtol=1e-5)


@pytest.mark.parametrize("batch_size", [1, 7, 700, 701, 5000])
def test_minibatches_across_csr_block_boundaries(data, batch_size):
    """Batches that end inside a block, at its end, span several blocks or all rows."""
    X, y, _ = data
    settings = {**SETTINGS, "strategy": "minibatch", "batch_size": batch_size,
                "penalty": "l1", "average": 2}  # fmt: skip
    _assert_same_model(_fit_source(SliceSource(X, y), **settings), fastgd.fit(X, y, **settings))


@pytest.mark.parametrize("optimizer", ["momentum", "adagrad", "adam"])
@pytest.mark.parametrize("strategy", ["sgd", "minibatch"])
def test_optimizer_rules_on_csr_blocks_run_lazily_as_in_memory(data, strategy, optimizer):
    X, y, _ = data
    settings = {**SETTINGS, "strategy": strategy, "optimizer": optimizer, "eta0": 0.005,
                "penalty": "l2", "average": True}  # fmt: skip
    _assert_same_model(_fit_source(SliceSource(X, y), **settings), fastgd.fit(X, y, **settings))


@pytest.mark.parametrize("optimizer", ["nesterov", "lbfgs"])
def test_full_batch_optimizers_sum_csr_blocks(data, optimizer):
    X, y, _ = data
    settings = {**SETTINGS, "strategy": "full", "optimizer": optimizer, "max_iter": 5,
                "eta0": 0.5, "penalty": "l2"}  # fmt: skip
    if optimizer == "lbfgs":
        settings.pop("learning_rate")
        settings.pop("eta0")
    streamed = _fit_source(SliceSource(X, y), **settings)
    in_memory = fastgd.fit(X, y, **settings)  # sums densified rows: another summation order
    np.testing.assert_allclose(streamed.coef, in_memory.coef, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(streamed.loss_history, in_memory.loss_history, rtol=1e-9)


@pytest.mark.parametrize("strategy", ["sgd", "minibatch"])
@pytest.mark.parametrize("shuffle", [True, "block"])
def test_shuffled_csr_blocks_take_the_steps_of_the_dense_blocks(data, strategy, shuffle):
    """A shuffled epoch of a BlockSource (blocks in a random order, each one's rows
    permuted) has no in-memory counterpart: CSR blocks visit the rows dense blocks of the
    same data visit, with the same seed, to the same model."""
    X, y, _ = data
    settings = {**SETTINGS, "strategy": strategy, "shuffle": shuffle, "random_state": 11,
                "penalty": "elasticnet", "average": True}  # fmt: skip
    csr = _fit_source(SliceSource(X, y), **settings)
    dense = _fit_source(SliceSource(X.toarray(), y), **settings)
    _assert_same_model(csr, dense)
    unshuffled = _fit_source(SliceSource(X, y), **{**settings, "shuffle": False})
    assert not np.allclose(csr.coef, unshuffled.coef)


def test_sampled_minibatches_of_csr_blocks_match_the_dense_blocks(data):
    X, y, _ = data
    settings = {**SETTINGS, "strategy": "minibatch", "random_state": 3, "max_iter": 4}
    runs = []
    for rows in (X, X.toarray()):
        source = SliceSource(rows, y)
        source.sample_fraction = 0.25
        runs.append(_fit_source(source, **settings))
    _assert_same_model(*runs)


def test_auto_step_on_csr_blocks_is_seeded_and_learns(data):
    X, y, _ = data
    settings = {"strategy": "minibatch", "batch_size": 32, "max_iter": 20, "tol": None,
                "random_state": 5}  # fmt: skip
    runs = [_fit_source(SliceSource(X, y), **settings) for _ in range(2)]
    np.testing.assert_array_equal(runs[0].coef, runs[1].coef)
    dense = _fit_source(SliceSource(X.toarray(), y), **settings)
    # The step comes from a sample of rows: CSR rows by power iteration, dense ones exactly.
    assert runs[0].learning_rate == pytest.approx(dense.learning_rate, rel=0.05)
    assert runs[0].loss_history[-1] < 0.1 * runs[0].loss_history[0]


@pytest.mark.parametrize("strategy", ["minibatch", "full"])
def test_parallel_csr_batches_do_not_depend_on_the_thread_count(strategy):
    """Batches of 4,000 rows × 20 non-zeros are predicted in parallel chunks (the engine's
    ``parallel_batches``) with 2 threads, serially with 1: the same model, bit for bit."""
    X = _random_csr(6000, 400, 20, seed=1)
    y = X @ np.random.default_rng(2).standard_normal(400)
    settings = {**SETTINGS, "strategy": strategy, "batch_size": 4000, "eta0": 0.01}
    assert engine.parallel_batches(4000, X.nnz / X.shape[0]) == (numba.get_num_threads() > 1)
    threads = numba.get_num_threads()
    runs = []
    try:
        for count in (1, threads):
            numba.set_num_threads(count)
            runs.append(_fit_source(SliceSource(X, y, block_rows=2500), **settings))
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(runs[0].coef, runs[1].coef)
    assert runs[0].intercept == runs[1].intercept
    _assert_same_model(runs[1], fastgd.fit(X, y, **settings))


def test_the_statistics_of_csr_blocks_are_those_of_their_dense_rows(data):
    X, y, _ = data
    X = X.copy()
    X.data[X.indptr[1234] + 1] = np.nan
    loss = options.loss_by_name("squared_error")
    dense = X.toarray()
    settings = {"fit_intercept": True, "loss": loss, "epsilon": 0.1}
    found = block_statistics(X[:2000], y[:2000], **settings).merge(
        block_statistics(X[2000:], y[2000:], **settings)
    )
    expected = block_statistics(dense, y, **settings)
    assert found.bad == expected.bad == (1234, int(X.indices[X.indptr[1234] + 1]))
    assert found.zero_loss == pytest.approx(expected.zero_loss, rel=1e-12)
    assert found.values == X.nnz and expected.values == ROWS * FEATURES
    clean = block_statistics(X[:1000], y[:1000], **settings)
    assert clean.max_row_norm == pytest.approx(
        block_statistics(dense[:1000], y[:1000], **settings).max_row_norm, rel=1e-12
    )


def test_block_helpers_read_csr_rows_as_dense_rows(data):
    X, y, _ = data
    dense = X.toarray()
    code = options.loss_by_name("squared_error").code
    coef = np.random.default_rng(0).standard_normal(FEATURES)
    np.testing.assert_allclose(
        block_losses(X, y, code, 0.1, coef, 0.3), block_losses(dense, y, code, 0.1, coef, 0.3),
        rtol=1e-12,
    )  # fmt: skip
    spec = make_spec(loss=code, epsilon=0.1, schedule=0, rule=0, eta0=0.1, power_t=0.5,
                     alpha=1e-3, optimal_init=1.0, l1=0.0, l2=1e-3, fit_intercept=True)  # fmt: skip
    state = make_state(coef.copy(), 0.3, 1.0)
    for fraction in (1.0, 0.3):
        sums = []
        for rows in (X, dense):
            grad = np.zeros(FEATURES)
            totals = add_block_gradient(rows, y, spec, state, grad, False, fraction, seed=4)
            sums.append((grad, *totals))
        np.testing.assert_allclose(sums[0][0], sums[1][0], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(sums[0][1:3], sums[1][1:3], rtol=1e-12)
        assert sums[0][3] == sums[1][3]
        assert (sums[0][3] == ROWS) == (fraction == 1.0)


def test_a_csr_block_source_samples_and_scans_its_rows(data):
    X, y, _ = data
    source, dense = SliceSource(X, y), SliceSource(X.toarray(), y)
    assert source.values_per_row == pytest.approx(X.nnz / ROWS)
    assert dense.values_per_row == FEATURES
    assert source.max_row_norm() == pytest.approx(dense.max_row_norm(), rel=1e-12)
    code = options.loss_by_name("squared_error").code
    coef = np.linspace(-1.0, 1.0, FEATURES)
    np.testing.assert_allclose(source.losses(code, 0.1, coef, 0.2),
                               dense.losses(code, 0.1, coef, 0.2), rtol=1e-12)  # fmt: skip
    sampled = source.sample(np.random.default_rng(1))
    assert sp.issparse(sampled.rows) and sampled.rows.dtype == X.dtype
    expected = dense.sample(np.random.default_rng(1))
    assert sorted(map(tuple, sampled.rows.toarray())) == sorted(map(tuple, expected.rows))
    sampler = RowSampler(100, np.random.default_rng(2))
    for start in range(0, ROWS, BLOCK_ROWS):
        sampler.add(X[start : start + BLOCK_ROWS], y[start : start + BLOCK_ROWS])
    assert sampler.rows.shape == (100, FEATURES) and sp.issparse(sampler.rows)
    # Each sampled row keeps its own target: the row's position in X gives it.
    positions = [
        np.flatnonzero((X.toarray() == row).all(axis=1))[0] for row in sampler.rows.toarray()
    ]
    np.testing.assert_array_equal(sampler.targets, y[positions])
    np.testing.assert_array_equal(np.sort(sampled.targets), np.sort(expected.targets))


def test_rules_without_a_csr_kernel_are_refused_as_fit_refuses_them(data):
    X, y, _ = data
    settings = {**SETTINGS, "strategy": "sgd", "learning_rate": "pa1", "eta0": 1.0}
    with pytest.raises(ValueError, match="no CSR kernel") as in_memory:
        fastgd.fit(X, y, **settings)
    with pytest.raises(ValueError, match="no CSR kernel") as streamed:
        _fit_source(SliceSource(X, y), **settings)
    assert str(streamed.value) == str(in_memory.value)
    # SAGA has CSR kernels and runs on block sources: tests/test_saga_stream.py.


class BrokenSource(SliceSource):
    """Its third block holds a column index past the width (set after slicing: scipy's
    slicing drops such an entry)."""

    def blocks(self, order=None):
        for index, (X, y) in enumerate(super().blocks(order)):
            if index == 2:
                X.indices[5] = FEATURES + 3
            yield X, y


def test_a_csr_block_with_an_index_past_its_width_is_refused(data):
    X, y, _ = data
    with pytest.raises(
        ValueError, match=r"block from row 1400 .*column index 503 out of range in row 0"
    ):
        _fit_source(BrokenSource(X, y), **SETTINGS)


def test_a_csr_block_of_the_wrong_width_or_dtype_is_refused(data):
    X, y, _ = data
    narrow = SliceSource(X, y)
    narrow.n_features = FEATURES + 1
    with pytest.raises(ValueError, match="501 columns in float64"):
        _fit_source(narrow, **SETTINGS)
    single = SliceSource(X.astype(np.float32), y.astype(np.float32))
    single.dtype = np.dtype(np.float64)
    with pytest.raises(ValueError, match="dtype float32"):
        _fit_source(single, **{**SETTINGS, "strategy": "minibatch"})
