"""``fastgd playground DATA.csv`` encodes a real-looking CSV as ``fastgd train`` does (issue
14): text columns one-hot (CSR runs), missing cells imputed with indicators, a missing
target skipping its row, with train's own flags; and sweep/finder/descent_path on CSR
agree with the same data dense. In-process (``cli.main``), small files, short runs."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from test_playground_cli import run

import fastgd
from fastgd.cli import playground as command
from fastgd.playground import read_csv

pytest.importorskip("matplotlib")

QUICK = ["--strategies", "full", "--epochs", "3", "--learning-rates", "0.01"]
CUTS = ["Ideal", "Good", "Fair"]
COLORS = ["D", "E", "F", "G"]


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    """A CSV with an id and two text columns, NA cells in a numeric, a text and the target
    column, numeric columns 1000 times apart in scale. Returns its path and the rows."""
    rng = np.random.default_rng(0)
    n = 150
    size = rng.standard_normal(n)
    area = 1000.0 + 300.0 * rng.standard_normal(n)
    cut = rng.integers(3, size=n)
    color = rng.integers(4, size=n)
    price = 2.0 * size + 0.01 * area + np.array([0.0, 1.0, -1.0])[cut]
    lines = ["id,size,area,cut,color,price"]
    for i in range(n):
        cells = [f"h{i}", f"{size[i]:.17g}", f"{area[i]:.17g}", CUTS[cut[i]], COLORS[color[i]],
                 f"{price[i]:.17g}"]  # fmt: skip
        if i % 17 == 3:
            cells[1] = "NA"
        if i % 23 == 5:
            cells[3] = ""
        if i % 29 == 7:
            cells[5] = "NA"
        lines.append(",".join(cells))
    path = tmp_path_factory.mktemp("messy") / "houses.csv"
    path.write_text("\n".join(lines) + "\n")
    rows = {"size": size, "area": area, "cut": cut, "color": color, "price": price}
    return path, rows


@pytest.fixture
def seen(monkeypatch):
    """The (X, y) every playground run in the test worked on."""
    problems = []
    experiments = command._experiments

    def spy(args, X, y):
        problems.append((X, y))
        return experiments(args, X, y)

    monkeypatch.setattr(command, "_experiments", spy)
    return problems


def test_text_columns_and_missing_cells_run_at_the_first_try(messy, tmp_path, capsys, seen):
    path, rows = messy
    code, out, err = run(["playground", path, "--target", "price", *QUICK], capsys, tmp_path)
    assert code == 0, err
    X, y = seen[-1]
    missing_target = np.arange(150) % 29 == 7
    assert sp.isspmatrix_csr(X) and X.shape[0] == 150 - missing_target.sum()
    np.testing.assert_allclose(y, rows["price"][~missing_target], rtol=1e-15)
    # id: 150 levels (5 of them rows with a missing target), cut: 3 + <other> + <missing>,
    # color: 4 + <other>; size, area and size's missing indicator
    assert X.shape[1] == 3 + (145 + 1) + (3 + 2) + (4 + 1)
    assert "skipped 5 rows: 5 missing target" in out
    assert "(3 text, one-hot; 1 missing indicator)" in out
    assert "| full " in out and "report written to" in out


def test_the_encoding_is_fit_csvs(messy, tmp_path):
    """read_csv learns the Encoding fit_csv's first pass learns, and encodes with it."""
    path, rows = messy
    flags = {"target": "price", "drop": "id", "max_categories": 3}
    data = read_csv(path, **flags)
    trained = fastgd.fit_csv(path, **flags, use_cache=False, max_iter=1)
    assert data.encoding == trained.extras["encoding"]
    assert data.encoding.feature_names == trained.extras["feature_names"]
    dense = data.X.toarray()
    kept = np.arange(150) % 29 != 7
    size, present = rows["size"][kept], np.arange(150)[kept] % 17 != 3
    mean, std = size[present].mean(), size[present].std()
    np.testing.assert_allclose(dense[present, 0], (size[present] - mean) / std, atol=1e-12)
    np.testing.assert_array_equal(dense[~present, 0], 0.0)  # imputed: the mean, scaled
    names = data.encoding.feature_names
    np.testing.assert_array_equal(dense[:, names.index("size=missing")], ~present)
    # max_categories=3: the 2 most frequent cuts and <other>; a missing cut has its level
    one_hot = dense[:, [i for i, name in enumerate(names) if name.startswith("cut=")]]
    np.testing.assert_array_equal(one_hot.sum(axis=1), 1.0)
    assert one_hot.shape[1] == 4


ROW = np.arange(150)
TARGET_KEPT = ROW % 29 != 7
COMPLETE = TARGET_KEPT & (ROW % 17 != 3) & (ROW % 23 != 5)


@pytest.mark.parametrize(
    "flags, check",
    [
        (["--missing", "skip"], lambda X, names, rows: X.shape[0] == COMPLETE.sum()
            and not any("missing" in name for name in names)),
        (["--hash-features", "3"], lambda X, names, rows: X.shape[1] == 2 + 1 + 2 * 8
            and names[3] == "cut#0"),
        (["--max-categories", "2"], lambda X, names, rows: "cut=<other>" in names
            and sum(name.startswith("color=") for name in names) == 2),
        (["--features", "size,cut", "--categorical", "size"],
            lambda X, names, rows: all("=" in name for name in names)),
        (["--no-standardize", "--features", "area"],
            lambda X, names, rows: np.array_equal(X[:, 0], rows["area"][TARGET_KEPT])),
    ],
    ids=["skip", "hash", "max-categories", "categorical", "no-standardize"],
)  # fmt: skip
def test_trains_flags_reach_the_encoding(messy, tmp_path, capsys, seen, monkeypatch, flags, check):
    from fastgd import playground

    path, rows = messy
    encodings = []
    reader = playground.read_csv

    def spy(*args, **kwargs):
        data = reader(*args, **kwargs)
        encodings.append(data.encoding)
        return data

    monkeypatch.setattr(playground, "read_csv", spy)
    argv = ["playground", path, "--target", "price", *flags]
    if "--features" not in flags:
        argv += ["--drop", "id"]
    code, _, err = run([*argv, *QUICK], capsys, tmp_path)
    assert code == 0, err
    X = seen[-1][0]
    X = X.toarray() if sp.issparse(X) else X
    assert check(X, encodings[-1].feature_names, rows)


def test_missing_error_names_the_line_and_column(messy, tmp_path, capsys):
    path, _ = messy
    argv = ["playground", path, "--target", "price", "--missing", "error", *QUICK]
    code, _, err = run(argv, capsys, tmp_path)
    # line 5 holds row 3 (the header is line 1), whose size is NA
    assert code == 1 and "line 5" in err and "'size'" in err, err


def test_saga_runs_on_the_sparse_features_of_text_columns(messy, tmp_path, capsys):
    # Every optimizer has CSR kernels now (SAGA's since its just-in-time updates), so the
    # refusal of one without them (cli/playground.py, _check_sparse_runs) has no case left.
    path, _ = messy
    argv = ["playground", path, "--target", "price", "--strategies", "sgd", "--optimizers", "saga",
            "--epochs", "3", "--learning-rates", "0.01"]  # fmt: skip
    code, _, err = run(argv, capsys, tmp_path)
    assert code == 0, err


@pytest.mark.parametrize("flags", [["--missing", "skip"], ["--hash-features", "4"],
                                   ["--categorical", "x"], ["--max-categories", "5"]])  # fmt: skip
def test_encoding_flags_need_a_csv(tmp_path, capsys, flags):
    code, _, err = run(["playground", *flags], capsys, tmp_path)
    assert code == 2 and flags[0] in err and "DATA.csv" in err, err


def test_sweep_finder_and_path_on_csr_equal_dense():
    """The playground's own measures (start objective, finder objective, path losses) on a
    CSR matrix are those of the same data dense; the runs are fit's CSR kernels."""
    rng = np.random.default_rng(1)
    dense = rng.standard_normal((120, 6)) * (rng.random((120, 6)) < 0.4)
    y = dense @ rng.standard_normal(6) + 0.1 * rng.standard_normal(120)
    csr = sp.csr_matrix(dense)
    runs = {"random_state": 2, "max_iter": 4, "tol": None}
    on_csr = fastgd.sweep(csr, y, [0.01, 0.1], ["sgd", "full"], **runs)
    on_dense = fastgd.sweep(dense, y, [0.01, 0.1], ["sgd", "full"], **runs)
    for a, b in zip(on_csr, on_dense, strict=True):
        assert a.start_loss == pytest.approx(b.start_loss, rel=1e-12)
        np.testing.assert_allclose(a.loss_history, b.loss_history, rtol=1e-9)
    finder_csr = fastgd.find_learning_rate(csr, y, strategy="full")
    finder_dense = fastgd.find_learning_rate(dense, y, strategy="full")
    np.testing.assert_allclose(finder_csr.learning_rates, finder_dense.learning_rates)
    np.testing.assert_allclose(finder_csr.losses, finder_dense.losses, rtol=1e-9)
    path_csr = fastgd.descent_path(csr[:, :2], y, fit_intercept=False, max_iter=5)
    path_dense = fastgd.descent_path(dense[:, :2], y, fit_intercept=False, max_iter=5)
    np.testing.assert_allclose(path_csr.points, path_dense.points, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(path_csr.losses, path_dense.losses, rtol=1e-9)


def test_text_labels_need_a_classification_loss(tmp_path, capsys, seen):
    """yes/no labels: positions in the sorted classes with --loss log_loss (``yes``, the
    second, is the positive class, as in fit_csv); a regression loss is refused, naming the
    flag."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal(80)
    labels = np.where(x + 0.3 * rng.standard_normal(80) > 0, "yes", "no")
    labels[0] = "yes"  # first seen: code 0, yet the second class in sorted order
    path = tmp_path / "clicks.csv"
    path.write_text(
        "x,clicked\n" + "".join(f"{a:.17g},{b}\n" for a, b in zip(x, labels, strict=True))
    )
    argv = ["playground", path, "--target", "clicked", *QUICK]
    code, _, err = run([*argv, "--loss", "log_loss"], capsys, tmp_path)
    assert code == 0, err
    np.testing.assert_array_equal(seen[-1][1], labels == "yes")
    code, _, err = run(argv, capsys, tmp_path)
    assert code == 1 and "--loss log_loss" in err and "'clicked'" in err, err
