"""The fastgd command: the playground writes a PNG or an HTML report; exit status 2 for
bad usage, 1 for data errors with messages that name the line and column."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fastgd import cli

pytest.importorskip("matplotlib")

PNG = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def csv_file(tmp_path):
    path = tmp_path / "data.csv"
    lines = ["size,rooms,price"]
    for i in range(60):
        size, rooms = 0.5 + (i % 7) * 0.25, 1 + i % 3
        lines.append(f"{size},{rooms},{2 * size + rooms + 0.01 * (i % 5)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def run(argv, capsys):
    code = cli.main([str(item) for item in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_playground_on_the_generated_example_writes_a_png(tmp_path, capsys):
    out_file = tmp_path / "report.png"
    code, out, err = run(
        [
            "playground",
            "--learning-rates",
            "0.01,0.1,10",
            "--strategies",
            "sgd,full",
            "--epochs",
            "5",
            "--out",
            out_file,
        ],
        capsys,
    )
    assert code == 0, err
    assert out_file.read_bytes()[:8] == PNG
    assert "generated example" in out and "suggested learning rate" in out
    assert out.count("**diverged**") == 2  # rate 10 for both strategies
    assert len(re.findall(r"^\| (sgd|full) ", out, flags=re.M)) == 6


def test_playground_on_a_csv_writes_html_with_the_picture_embedded(csv_file, tmp_path, capsys):
    out_file = tmp_path / "report.html"
    code, out, err = run(
        [
            "playground",
            csv_file,
            "--target",
            "price",
            "--learning-rates",
            "0.01,auto",
            "--strategies",
            "minibatch",
            "--batch-sizes",
            "8,16",
            "--epochs",
            "4",
            "--out",
            out_file,
        ],
        capsys,
    )
    assert code == 0, err
    text = out_file.read_text()
    found = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert found and base64.b64decode(found.group(1))[:8] == PNG
    assert text.count("<tr>") + text.count('<tr class="diverged">') == 1 + 4  # header + runs
    assert "60 rows, 2 features, target 'price'" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["playground", "--strategies", "fast"],
        ["playground", "--learning-rates", "0.1,abc"],
        ["playground", "--learning-rates", "-1"],
        ["playground", "--out", "report.pdf"],
        ["playground", "--no-such-flag"],
        ["playground", "--target", "y"],  # --target without data
        ["nonsense"],
        [],
    ],
)
def test_bad_usage_exits_2(argv, capsys):
    """One line, like every other error, pointing at the command's --help (issue 10)."""
    code, _, err = run(argv, capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("fastgd: error: "), err
    command = argv[0] if argv and argv[0] == "playground" else None
    assert err.rstrip().endswith(f"(see 'fastgd{' ' + command if command else ''} --help')")
    assert "usage:" not in err


def test_data_file_given_without_target_is_usage(csv_file, capsys):
    code, _, err = run(["playground", csv_file], capsys)
    assert code == 2 and "--target" in err


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("a,b\n1,2\n", "the target column 'price' is not in the file"),
        ("", "empty"),
        ("\n\n", "empty"),
        ("size,price\n", "no data rows"),
        (
            "size,price\n1,2\n3,4\n5,abc\n",
            "line 4, column 'price': 'abc' in the target column is not a number",
        ),
        ("size,price\n1,2\n\n,3\n", "line 4, column 'size': missing value ('')"),
        ("size,price\n1,2\nnan,4\n", "line 3, column 'size': missing value ('nan')"),
        ("size,price\n1,2\ninf,4\n", "line 3, column 'size': infinite value"),
        ("size,price\n1,2\n3,4,5\n", "line 3: the row has 3 fields"),
        ("price\n1\n2\n", "no feature columns"),
    ],
)
def test_data_errors_exit_1_and_say_where(tmp_path, capsys, content, words):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    # --missing error: a missing cell stops the run (by default it is imputed)
    argv = ["playground", path, "--target", "price", "--missing", "error"]
    code, _, err = run([*argv, "--out", tmp_path / "r.png"], capsys)
    assert code == 1
    assert err.startswith("fastgd: error: ") and str(path) in err
    assert words in err


def test_playground_reads_csv_through_fastgd_io(csv_file, tmp_path, capsys, monkeypatch):
    """A gzipped, semicolon-separated file (the reader of fastgd.io, not a reader of its
    own), and the same rows from stdin, named as such in messages."""
    import gzip
    import io

    text = csv_file.read_text().replace(",", ";")
    packed = tmp_path / "data.csv.gz"
    packed.write_bytes(gzip.compress(text.encode()))
    argv = ["--learning-rates", "0.01", "--strategies", "full", "--epochs", "2"]
    code, out, err = run(
        ["playground", packed, "--target", "price", *argv, "--out", tmp_path / "r.png"], capsys
    )
    assert code == 0, err
    assert "60 rows, 2 features, target 'price'" in out

    class Stdin:
        buffer = io.BytesIO((text + "1;2;x\n").encode())

    monkeypatch.setattr(sys, "stdin", Stdin())
    code, _, err = run(["playground", "-", "--target", "price", *argv], capsys)
    assert code == 1
    assert err.startswith(
        "fastgd: error: <stdin>, line 62, column 'price': 'x' in the target column"
    )


def test_missing_file_exits_1(tmp_path, capsys):
    code, _, err = run(["playground", tmp_path / "none.csv", "--target", "y"], capsys)
    assert code == 1 and "no such file" in err and "none.csv" in err


def test_python_dash_m_fastgd_help_lists_playground_with_examples():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    top = subprocess.run(
        [sys.executable, "-m", "fastgd", "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert top.returncode == 0 and "playground" in top.stdout and "examples:" in top.stdout
    sub = subprocess.run(
        [sys.executable, "-m", "fastgd", "playground", "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert sub.returncode == 0
    assert "examples:" in sub.stdout and "--learning-rates" in sub.stdout


def test_commands_table_is_the_only_registry():
    parser = cli.build_parser()
    choices = parser._subparsers._group_actions[0].choices
    assert set(choices) == set(cli.COMMANDS)
