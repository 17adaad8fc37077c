"""``fastgd playground DATA.csv`` on real-looking tables (issue 14): the column flags of
``fastgd train`` (--features, --drop), features standardised unless --no-standardize,
and an unscaled run that blows up listed as diverged. In-process (``cli.main``)."""

from __future__ import annotations

import numpy as np
import pytest

from fastgd import cli
from fastgd.cli import playground as command

pytest.importorskip("matplotlib")

#: Few, short runs: what is checked is what the playground ran on and how it listed it.
QUICK = ["--strategies", "full", "--epochs", "4"]


@pytest.fixture
def table(tmp_path):
    """A CSV with a text id column and numeric columns a thousand times apart in scale."""
    rng = np.random.default_rng(0)
    n = 120
    size = rng.standard_normal(n)
    area = 1000.0 + 300.0 * rng.standard_normal(n)
    price = 2.0 * size + 0.01 * area + 0.1 * rng.standard_normal(n)
    path = tmp_path / "houses.csv"
    lines = ["id,size,area,price"]
    lines += [f"h{i},{size[i]:.17g},{area[i]:.17g},{price[i]:.17g}" for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path, np.column_stack([size, area]), price


def run(argv, capsys, tmp_path):
    code = cli.main([str(item) for item in argv] + ["--out", str(tmp_path / "r.png")])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def seen(monkeypatch):
    """The X every playground run in the test worked on."""
    problems = []
    experiments = command._experiments

    def spy(args, X, y):
        problems.append(X)
        return experiments(args, X, y)

    monkeypatch.setattr(command, "_experiments", spy)
    return problems


def test_drop_and_features_select_the_columns(table, tmp_path, capsys, seen):
    path, raw, _ = table
    rates = ["--learning-rates", "0.01"]
    code, out, err = run(
        ["playground", path, "--target", "price", "--drop", "id", *rates, *QUICK],
        capsys,
        tmp_path,
    )
    assert code == 0, err
    assert "120 rows, 2 features, target 'price'; features standardised" in out
    code, out, err = run(
        ["playground", path, "--target", "price", "--features", "area,size", *rates, *QUICK],
        capsys,
        tmp_path,
    )
    assert code == 0, err
    # --features keeps the order given: area first
    area = raw[:, 1]
    np.testing.assert_allclose(seen[-1][:, 0], (area - area.mean()) / area.std(), atol=1e-12)
    unscaled = ["--no-standardize", *rates, *QUICK]
    code, _, err = run(
        ["playground", path, "--target", "price", "--features", "area,size", *unscaled],
        capsys,
        tmp_path,
    )
    assert code == 0, err
    np.testing.assert_array_equal(seen[-1], raw[:, ::-1])


def test_features_are_standardised_by_default(table, tmp_path, capsys, seen):
    path, raw, _ = table
    argv = ["playground", path, "--target", "price", "--drop", "id", "--learning-rates", "0.1"]
    for flags in ([], ["--standardize"]):  # --standardize: the default, still accepted
        code, out, err = run([*argv, *flags, *QUICK], capsys, tmp_path)
        assert code == 0, err
        X = seen[-1]
        np.testing.assert_allclose(X.mean(axis=0), 0.0, atol=1e-12)
        np.testing.assert_allclose(X.std(axis=0), 1.0, rtol=1e-12)
        np.testing.assert_allclose(X * raw.std(axis=0) + raw.mean(axis=0), raw, rtol=1e-12)
    code, out, err = run([*argv, "--no-standardize", *QUICK], capsys, tmp_path)
    assert code == 0, err
    np.testing.assert_array_equal(seen[-1], raw)
    assert "features unscaled: --no-standardize)" in out


def test_unscaled_run_that_blows_up_is_listed_as_diverged(table, tmp_path, capsys):
    """At 1.1 times the unscaled problem's stable limit 2/L, full batch ends above its
    start without fit stopping it: diverged. Standardised, the same step is tiny."""
    path, raw, _ = table
    with_intercept = np.column_stack([raw, np.ones(raw.shape[0])])
    curvature = np.linalg.eigvalsh(with_intercept.T @ with_intercept / raw.shape[0])[-1]
    rate = f"{2.2 / curvature:.17g}"
    argv = ["playground", path, "--target", "price", "--drop", "id", "--learning-rates", rate]
    code, out, err = run([*argv, "--no-standardize", *QUICK], capsys, tmp_path)
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.startswith("| full "))
    assert "**diverged** (ended above its start)" in row and "ran all epochs" not in row
    code, out, err = run([*argv, *QUICK], capsys, tmp_path)
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.startswith("| full "))
    assert "ran all epochs" in row and "diverged" not in row


@pytest.mark.parametrize(
    "argv",
    [
        ["--drop", "id"],  # no DATA.csv
        ["--features", "size"],
        ["DATA", "--target", "price", "--features", "size", "--drop", "id"],
        ["DATA", "--target", "price", "--features", "size,size"],
        ["DATA", "--target", "price", "--drop", "id,id"],
    ],
)
def test_column_flag_misuse_is_a_usage_error(table, tmp_path, capsys, argv):
    path = table[0]
    argv = [path if item == "DATA" else item for item in argv]
    code, _, err = run(["playground", *argv], capsys, tmp_path)
    assert code == 2 and err.startswith("fastgd: error: ")
    assert "--drop" in err or "--features" in err


def test_reader_arguments_come_from_one_place():
    """What the flags give fastgd.playground.read_csv: train's column, missing-value and
    scaling flags, as parsed by the playground's own parser."""
    args = cli.build_parser().parse_args(
        ["playground", "data.csv", "--target", "price", "--drop", "id", "--missing", "skip",
         "--hash-features", "4", "--no-standardize", "--categorical", "zip", "--loss", "huber"]
    )  # fmt: skip
    assert command.reader_arguments(args) == {
        "target": "price", "features": None, "drop": "id", "categorical": "zip",
        "missing": "skip", "standardize": False, "max_categories": 1000, "hash_features": 4,
        "loss": "huber",
    }  # fmt: skip
