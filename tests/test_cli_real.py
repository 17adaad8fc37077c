"""The command line on real files (issue 14): messages in the flags' spelling, predict's
--on-bad-rows / --id-columns / --proba, evaluate from the training cache, ``fastgd cache``,
and the train summary's cache and two-valued-target lines. In-process ``cli.main`` calls."""

from __future__ import annotations

import numpy as np
import pytest

from fastgd import cli
from fastgd.cli._errors import flag_spelling


def run(argv, capsys):
    code = cli.main([str(item) for item in argv])
    out, err = capsys.readouterr()
    return code, out, err


def write_regression(path, n=200, seed=0, extra: str = ""):
    """Columns id, a, b, y (y = a + 2 b + 0.5); ``extra`` is appended verbatim."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 2))
    y = X @ np.array([1.0, 2.0]) + 0.5
    lines = ["id,a,b,y"]
    lines += [
        f"r{i},{a:.6f},{b:.6f},{t:.6f}" for i, ((a, b), t) in enumerate(zip(X, y, strict=True))
    ]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def train(capsys, data, model, *extra):
    code, _, err = run(
        ["train", data, "--target", "y", "--drop", "id", "--model", model, *extra], capsys
    )
    assert code == 0, err
    return err


# -- messages in the flags' spelling -------------------------------------------------------------


def parser_of(command: str):
    return cli.build_parser()._subparsers._group_actions[0].choices[command]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("use on_bad_rows='skip'.", "use --on-bad-rows skip."),
        ("learning_rate='optimal' needs alpha > 0", "--learning-rate optimal needs --alpha > 0"),
        ("max_iter=5, penalty=None", "--epochs 5, --penalty none"),
        ("drop it (drop=['x y'], --drop 'x y') now", "drop it (--drop 'x y') now"),
        ("validation_fraction=0.5 held out", "--validation-fraction 0.5 held out"),
        ("block_rows must be >= 1; got 0", "block_rows must be >= 1; got 0"),  # no keyword=
        ("cell 'alpha=3' and --alpha > 0", "cell 'alpha=3' and --alpha > 0"),  # left alone
        ("unknown=1 stays", "unknown=1 stays"),
    ],
)
def test_flag_spelling_rewrites_the_keywords_the_command_has(message, expected):
    assert flag_spelling(message, parser_of("train")) == expected


def test_a_keyword_the_command_has_no_flag_for_stays_python():
    assert flag_spelling("use max_iter=5", parser_of("info")) == "use max_iter=5"


def test_a_failing_train_run_names_the_flag(tmp_path, capsys):
    data = write_regression(tmp_path / "d.csv", extra="r9,1.0,2.0\n")  # a short row
    code, _, err = run(
        ["train", data, "--target", "y", "--drop", "id", "--model", tmp_path / "m.npz"], capsys
    )
    assert code == 1
    assert "--on-bad-rows skip" in err and "on_bad_rows" not in err, err
    assert "line 202" in err
