"""SAGA on rows read a block at a time (``fastgd.sources.BlockSource``, ``fastgd.fit_csv``):
the row memory follows each block's rows (``sources._RowMemory``), across epochs and
whatever order the blocks and rows are visited in.

In file order an epoch takes the steps ``fastgd.fit`` takes on all the rows in memory, so
the models are equal (dense numeric CSVs and CSVs with a text column, whose blocks are CSR;
mini-batches across block boundaries); in shuffled orders SAGA still reaches the exact
ridge optimum (it would not with a row's memory read for another row); Dask and sampled
mini-batches are refused."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import fastgd
from fastgd import engine
from fastgd.stream import fit_csv

N = 150
LEVELS = ("blue", "green", "red")


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """A CSV of three numbers, a text column and a numeric target; the in-memory matrices
    fit_csv's encoding makes of it (``standardize=False``): numbers, and numbers plus the
    text column one-hot in the model's feature order."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, 3))
    colour = rng.choice(LEVELS, N)
    effect = np.select([colour == "red", colour == "green"], [1.0, -1.0], 0.3)
    y = X @ [1.0, -2.0, 0.5] + effect + 0.1 * rng.standard_normal(N)
    folder = tmp_path_factory.mktemp("saga")
    numeric, text = folder / "numeric.csv", folder / "text.csv"
    with open(numeric, "w") as plain, open(text, "w") as coloured:
        plain.write("x0,x1,x2,target\n")
        coloured.write("x0,x1,x2,colour,target\n")
        for row, level, target in zip(X, colour, y, strict=True):
            numbers = ",".join(repr(float(v)) for v in row)
            plain.write(f"{numbers},{float(target)!r}\n")
            coloured.write(f"{numbers},{level},{float(target)!r}\n")
    return {"numeric": numeric, "text": text, "X": X, "colour": colour, "y": y}


def _encoded(table, names):
    """The numbers and the text column one-hot, in the model's feature order ``names``
    (levels in first-seen order, then ``<other>``, never seen here)."""
    levels = [name.removeprefix("colour=") for name in names[3:]]
    assert sorted(levels) == sorted([*LEVELS, "<other>"])
    one_hot = np.column_stack([table["colour"] == level for level in levels])
    return np.hstack([table["X"], one_hot.astype(np.float64)])


SAGA = {"optimizer": "saga", "learning_rate": "constant", "eta0": 0.02, "max_iter": 4,
        "tol": None, "batch_size": 5, "alpha": 1e-3, "penalty": "elasticnet",
        "l1_ratio": 0.3, "average": 20}  # fmt: skip


@pytest.mark.parametrize("block_rows", [7, 64])
@pytest.mark.parametrize("strategy", ["sgd", "minibatch"])
@pytest.mark.parametrize("text", [False, True])
def test_file_order_equals_fit_in_memory(table, tmp_path, strategy, block_rows, text):
    """Dense blocks (numbers) and CSR blocks (a text column); blocks of 7 rows split the
    mini-batches of 5."""
    given = {**SAGA, "strategy": strategy, "shuffle": False}
    path = table["text"] if text else table["numeric"]
    streamed = fit_csv(path, target="target", block_rows=block_rows, cache_dir=tmp_path,
                       standardize=False, **given)  # fmt: skip
    X = _encoded(table, streamed.extras["feature_names"]) if text else table["X"]
    in_memory = fastgd.fit(X, table["y"], **given)
    np.testing.assert_allclose(streamed.coef, in_memory.coef, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(streamed.intercept, in_memory.intercept, rtol=1e-10)
    np.testing.assert_allclose(streamed.loss_history, in_memory.loss_history, rtol=1e-10)


def _ridge(X, y, alpha):
    """The exact minimiser of (1/n)·Σ ½(x·w + b − y)² + alpha·½‖w‖² (intercept free)."""
    n, d = X.shape
    design = np.column_stack([X, np.ones(n)])
    gram = design.T @ design / n + alpha * np.diag([1.0] * d + [0.0])
    return np.linalg.solve(gram, design.T @ y / n)


@pytest.mark.parametrize("shuffle", [True, "block"])
@pytest.mark.parametrize("strategy", ["sgd", "minibatch"])
def test_shuffled_blocks_reach_the_exact_optimum(table, tmp_path, strategy, shuffle):
    """Blocks in a random order, rows permuted inside each: with a constant step SAGA
    converges to the exact ridge optimum only if each row's stored derivative stays its
    own from epoch to epoch."""
    given = dict(strategy=strategy, optimizer="saga", learning_rate="constant", eta0=0.05,
                 alpha=0.1, penalty="l2", max_iter=150, tol=None, batch_size=4,
                 shuffle=shuffle, random_state=3)  # fmt: skip
    streamed = fit_csv(table["text"], target="target", block_rows=16, cache_dir=tmp_path,
                       standardize=False, **given)  # fmt: skip
    exact = _ridge(_encoded(table, streamed.extras["feature_names"]), table["y"], 0.1)
    np.testing.assert_allclose(np.append(streamed.coef, streamed.intercept), exact, atol=1e-9)


def test_a_sampled_block_source_and_dask_like_sources_are_refused():
    """SAGA needs each row's own step: sampled mini-batches (``sample_fraction``) and
    sources that sum their gradients elsewhere are refused before training."""
    from fastgd.sources import BlockSource

    class Slices(BlockSource):
        def __init__(self, X, y, **given):
            super().__init__(*X.shape, X.dtype, fit_intercept=True, block_rows=10, **given)
            self.X, self.y = X, y

        def block_count(self):
            return -(-self.n_rows // 10)

        def blocks(self, order=None):
            for index in range(self.block_count()) if order is None else order:
                yield self.X[index * 10 : index * 10 + 10], self.y[index * 10 : index * 10 + 10]

    class Elsewhere(Slices):
        def gradient_sums(self, state, spec, order, fraction=1.0):
            return super().gradient_sums(state, spec, order, fraction)

    X = np.random.default_rng(1).standard_normal((40, 3))
    y = X.sum(axis=1)
    resolved = engine.resolve_options(**{**engine.fit_defaults(), "optimizer": "saga",
                                         "strategy": "minibatch", "batch_size": 8})  # fmt: skip
    for source in (Slices(X, y, sample_fraction=0.5), Elsewhere(X, y)):
        with pytest.raises(ValueError, match=r"optimizer='saga'.*not on (Slices|Elsewhere)"):
            engine.train(source, resolved)
    # the plain block source trains, as fastgd.fit does on the same rows in file order
    given = dict(optimizer="saga", strategy="minibatch", batch_size=8, shuffle=False,
                 learning_rate="constant", eta0=0.05, max_iter=3, tol=None)  # fmt: skip
    trained = engine.train(Slices(X, y), engine.resolve_options(**{**engine.fit_defaults(),
                                                                   **given}))  # fmt: skip
    np.testing.assert_allclose(trained.coef, fastgd.fit(X, y, **given).coef, rtol=1e-10)


def test_the_train_command_runs_saga_on_a_csv(table, tmp_path):
    from fastgd.cli import main

    model = tmp_path / "model.npz"
    code = main(["train", str(table["text"]), "--target", "target", "--optimizer", "saga",
                 "--strategy", "sgd", "--epochs", "3", "--model", str(model),
                 "--cache-dir", str(tmp_path)])  # fmt: skip
    assert code == 0 and model.exists()


def test_csr_blocks_of_a_block_source_equal_fit_on_the_csr_matrix():
    """A CSR matrix served in row slices, the last one short."""
    rng = np.random.default_rng(4)
    X = sp.random(95, 30, density=0.15, format="csr", random_state=rng)
    y = X @ rng.standard_normal(30) + 0.2
    from fastgd.sources import BlockSource

    class Slices(BlockSource):
        def __init__(self):
            super().__init__(*X.shape, X.dtype, fit_intercept=True, block_rows=20,
                             values_per_row=X.nnz / X.shape[0])  # fmt: skip

        def block_count(self):
            return 5

        def blocks(self, order=None):
            for index in range(5) if order is None else order:
                yield X[index * 20 : index * 20 + 20].copy(), y[index * 20 : index * 20 + 20]

    for strategy in ("sgd", "minibatch"):
        given = dict(optimizer="saga", strategy=strategy, batch_size=6, shuffle=False,
                     learning_rate="constant", eta0=0.1, max_iter=3, tol=None, alpha=1e-3,
                     penalty="l1")  # fmt: skip
        options = engine.resolve_options(**{**engine.fit_defaults(), **given})
        streamed = engine.train(Slices(), options)
        np.testing.assert_allclose(streamed.coef, fastgd.fit(X, y, **given).coef, rtol=1e-10,
                                   atol=1e-13)  # fmt: skip
