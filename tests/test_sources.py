"""The data-source seam (``fastgd.sources``): a new source in a few lines trains through the
engine's one loop (``fastgd.engine.train``) to the model ``fastgd.fit`` finds in memory."""

from __future__ import annotations

import numpy as np
import pytest

import fastgd
from fastgd import engine, options
from fastgd.sources import (
    BlockSource,
    DataSource,
    GradientSums,
    add_block_gradient,
    block_losses,
    block_statistics,
)


class NpySource(BlockSource):
    """X and y in two ``.npy`` files, memory-mapped and read ``block_rows`` rows at a time:
    everything a new source needs (the epochs and statistics come from BlockSource)."""

    def __init__(self, x_path, y_path, *, block_rows: int, fit_intercept: bool = True):
        self.X = np.load(x_path, mmap_mode="r")
        self.y = np.load(y_path, mmap_mode="r")
        n, d = self.X.shape
        super().__init__(n, d, self.X.dtype, fit_intercept=fit_intercept, block_rows=block_rows)

    def block_count(self) -> int:
        return -(-self.n_rows // self.block_rows)

    def blocks(self, order=None):
        for index in range(self.block_count()) if order is None else order:
            rows = slice(index * self.block_rows, (index + 1) * self.block_rows)
            yield np.array(self.X[rows]), np.array(self.y[rows])  # writable copies


def _fit_source(source, **fit_options):
    settings = {**engine.fit_defaults(), **fit_options}
    coef_init = settings.pop("coef_init", None)
    return engine.train(source, engine.resolve_options(**settings), coef_init=coef_init)


@pytest.fixture(scope="module")
def npy_files(tmp_path_factory):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((203, 4)) * np.array([1.0, 3.0, 0.5, 2.0]) + 1.0
    y = X @ np.array([1.0, -2.0, 0.5, 0.1]) + 3.0 + 0.1 * rng.standard_normal(203)
    folder = tmp_path_factory.mktemp("npy")
    np.save(folder / "X.npy", X)
    np.save(folder / "y.npy", y)
    return folder / "X.npy", folder / "y.npy", X, y


SETTINGS = {"learning_rate": "constant", "eta0": 0.005, "max_iter": 3, "tol": None}


@pytest.mark.parametrize("block_rows", [7, 64, 1000])
@pytest.mark.parametrize("strategy", ["sgd", "minibatch", "full"])
def test_a_memory_mapped_source_trains_to_the_model_of_fit(npy_files, strategy, block_rows):
    x_path, y_path, X, y = npy_files
    source = NpySource(x_path, y_path, block_rows=block_rows)
    assert isinstance(source, DataSource)
    settings = {**SETTINGS, "strategy": strategy, "batch_size": 16, "shuffle": False}
    streamed = _fit_source(source, **settings)
    in_memory = fastgd.fit(X, y, **settings)
    # The same steps; only the full batch's block sums are added in another order.
    np.testing.assert_allclose(streamed.coef, in_memory.coef, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(streamed.intercept, in_memory.intercept, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(streamed.loss_history, in_memory.loss_history, rtol=1e-12)
    assert streamed.t == in_memory.t


def test_statistics_of_a_block_source_match_the_arrays(npy_files):
    x_path, y_path, X, y = npy_files
    source = NpySource(x_path, y_path, block_rows=50)
    assert source.max_row_norm() == pytest.approx(float(((X**2).sum(axis=1) + 1.0).max()))
    coef = np.array([1.0, 0.0, -1.0, 0.5])
    zero, start = source.losses(options.loss_by_name("squared_error").code, 0.1, coef, 2.0)
    assert zero == pytest.approx(0.5 * float(y @ y))
    residual = X @ coef + 2.0 - y
    assert start == pytest.approx(0.5 * float(residual @ residual))
    sample = source.sample(np.random.default_rng(0))
    assert sample.rows.shape == X.shape  # fewer rows than AUTO_SAMPLE_ROWS: all of them
    assert sorted(map(tuple, sample.rows)) == sorted(map(tuple, X))


def test_auto_and_shuffling_on_a_block_source_are_seeded_and_learn(npy_files):
    x_path, y_path, X, y = npy_files
    runs = [
        _fit_source(
            NpySource(x_path, y_path, block_rows=32),
            batch_size=8,
            max_iter=40,
            tol=None,
            random_state=5,
        )
        for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0].coef, runs[1].coef)
    assert runs[0].extras["auto_backtracks"] == 0
    solution = np.linalg.lstsq(np.hstack([X, np.ones((X.shape[0], 1))]), y, rcond=None)[0]
    np.testing.assert_allclose(runs[0].coef, solution[:-1], atol=0.05)
    assert runs[0].intercept == pytest.approx(solution[-1], abs=0.1)


def test_a_diverging_block_source_keeps_the_best_weights(npy_files):
    x_path, y_path, _, _ = npy_files
    source = NpySource(x_path, y_path, block_rows=64)
    with pytest.raises(fastgd.DivergenceError, match="diverged"):
        _fit_source(source, learning_rate="constant", eta0=10.0, strategy="sgd", max_iter=5)


def test_block_statistics_merge_as_one_pass():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((30, 3)), rng.standard_normal(30)
    y[17] = np.nan
    loss = options.loss_by_name("huber")
    settings = {"fit_intercept": False, "loss": loss, "epsilon": 0.5}
    whole = block_statistics(X, y, **settings)
    parts = block_statistics(X[:10], y[:10], **settings).merge(
        block_statistics(X[10:], y[10:], **settings)
    )
    assert parts.rows == whole.rows == 30
    assert parts.bad == whole.bad == (17, "y")
    assert parts.max_row_norm == whole.max_row_norm == float((X**2).sum(axis=1).max())
    labels = options.loss_by_name("hinge")
    found = block_statistics(X[:5], np.array([3, 7, 3, 3, 7]), **{**settings, "loss": labels})
    np.testing.assert_array_equal(found.labels, [3, 7])
    assert found.zero_loss == 5.0  # hinge at a zero score: 1 per row, for either label


def test_sampled_minibatches_on_a_block_source_are_seeded_and_learn(tmp_path):
    rng = np.random.default_rng(4)
    X = rng.standard_normal((200, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.5 + 0.01 * rng.standard_normal(200)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    settings = {"learning_rate": "constant", "eta0": 0.1, "max_iter": 30, "tol": None}

    def sampled():
        source = NpySource(tmp_path / "X.npy", tmp_path / "y.npy", block_rows=32)
        source.sample_fraction = 0.25  # 4 steps an epoch, each on ~1/4 of every block
        return _fit_source(source, strategy="minibatch", random_state=5, **settings)

    runs = [sampled() for _ in range(2)]
    np.testing.assert_array_equal(runs[0].coef, runs[1].coef)
    full = fastgd.fit(X, y, strategy="full", **settings)
    assert runs[0].t - full.t == 3 * settings["max_iter"]
    solution = np.linalg.lstsq(np.hstack([X, np.ones((X.shape[0], 1))]), y, rcond=None)[0]
    np.testing.assert_allclose(runs[0].coef, solution[:-1], atol=5e-3)
    assert runs[0].intercept == pytest.approx(solution[-1], abs=5e-3)


class SumsOnly(BlockSource):
    """Rows that never come to the epoch loop as blocks: the gradient-sums hook and the
    losses are all a full batch reads (as ``fastgd.dask`` sums on its workers)."""

    def __init__(self, X, y):
        super().__init__(*X.shape, X.dtype, fit_intercept=True, block_rows=X.shape[0])
        self.X, self.y = X, y

    def block_count(self) -> int:
        return 1

    def gradient_sums(self, state, spec, order, fraction=1.0):
        grad = np.zeros(self.n_features)
        loss, deriv, rows = add_block_gradient(self.X, self.y, spec, state, grad, False)
        return GradientSums(grad, loss, deriv, rows)

    def losses(self, loss, epsilon, coef, intercept):
        zero, start = block_losses(self.X, self.y, loss, epsilon, coef, intercept)
        return zero, (zero if coef is None else start)


def test_the_gradient_sums_hook_is_all_a_full_batch_needs(npy_files):
    _, _, X, y = npy_files
    settings = {**SETTINGS, "strategy": "full", "max_iter": 5}
    hooked = _fit_source(SumsOnly(np.ascontiguousarray(X), np.ascontiguousarray(y)), **settings)
    in_memory = fastgd.fit(X, y, **settings)
    np.testing.assert_allclose(hooked.coef, in_memory.coef, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(hooked.loss_history, in_memory.loss_history, rtol=1e-12)
    assert hooked.t == in_memory.t
