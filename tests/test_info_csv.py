"""``fastgd info DATA.csv`` (issue 14): the schema view of a CSV, from one pass."""

from __future__ import annotations

import gzip
import json
import sys

import numpy as np
import pytest

from fastgd import cli
from fastgd.cli.info import is_model_file


def run(argv, capsys):
    code = cli.main([str(item) for item in argv])
    out, err = capsys.readouterr()
    return code, out, err


def flights(tmp_path, rows: int = 3000, name: str = "flights.csv"):
    """A table like the issue's flights: carriers (few levels), tail numbers (many), NA
    cells in a numeric and a text column, and numbers known in advance."""
    rng = np.random.default_rng(1)
    delay = np.round(rng.normal(10, 5, rows), 2)
    na_delay = rng.random(rows) < 0.1
    carrier = rng.integers(0, 4, rows)
    lines = ["carrier,tailnum,dep_delay,distance"]
    for i in range(rows):
        tail = "NA" if i % 50 == 0 else f"N{i % 700}"
        cell = "NA" if na_delay[i] else repr(float(delay[i]))
        lines.append(f"{'AA UA DL B6'.split()[carrier[i]]},{tail},{cell},{100 + i}")
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path, delay, na_delay, carrier


def test_info_on_a_csv_prints_a_row_per_column(tmp_path, capsys):
    path, delay, na_delay, _ = flights(tmp_path)
    code, out, err = run(["info", path], capsys)
    assert code == 0, err
    assert f"data file       {path}" in out
    assert "rows            3,000" in out
    assert "columns         4 (2 numeric, 2 text)" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[6:] if line.strip()}
    assert rows["carrier"][1:4] == ["text", "0", "4"]
    tails = {i % 700 for i in range(3000) if i % 50}
    assert rows["tailnum"][1:4] == ["text", "60", str(len(tails))]  # 60 NA cells
    assert rows["dep_delay"][1:3] == ["numeric", str(int(na_delay.sum()))]
    low, high, mean = (float(v) for v in rows["dep_delay"][4:7])
    kept = delay[~na_delay]
    assert (low, high) == (pytest.approx(kept.min()), pytest.approx(kept.max()))
    assert mean == pytest.approx(kept.mean(), rel=1e-5)
    assert rows["distance"][4:7] == ["100", "3099", "1599.5"]


def test_info_json_and_a_gzipped_csv_from_stdin(tmp_path, capsys, monkeypatch):
    path, _, na_delay, carrier = flights(tmp_path)

    class Stdin:
        buffer = __import__("io").BytesIO(gzip.compress(path.read_bytes()))

    monkeypatch.setattr(sys, "stdin", Stdin())
    code, out, err = run(["info", "-", "--json", "--categorical", "distance"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["file"] == "<stdin>" and summary["compression"] == "gzip"
    assert summary["rows"] == 3000 and summary["skipped"] == {}
    by_name = {column["name"]: column for column in summary["columns"]}
    assert by_name["distance"]["type"] == "text" and by_name["distance"]["distinct"] == 3000
    top = int(np.argmax(np.bincount(carrier)))
    assert by_name["carrier"]["top"] == "AA UA DL B6".split()[top]
    assert by_name["carrier"]["top_count"] == int(np.bincount(carrier).max())
    assert by_name["dep_delay"]["missing"] == int(na_delay.sum())


def test_info_counts_rows_it_cannot_read(tmp_path, capsys):
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n1,x\n2,y\n3\n4,z\n")
    code, out, err = run(["info", path], capsys)
    assert code == 0, err
    assert "rows            3" in out
    assert "skipped 1 row: 1 wrong number of fields (lines 4)" in out


def test_info_reports_every_header_problem_at_once(tmp_path, capsys):
    path = tmp_path / "dup.csv"
    path.write_text("a,b,a,b\n1,2,3,4\n")
    code, _, err = run(["info", path, "--categorical", "zz"], capsys)
    assert code == 1
    line = err.strip()
    assert line.startswith("fastgd: error: ") and str(path) in line
    assert "3 problems" in line and "'a' twice" in line and "'b' twice" in line
    assert "'zz'" in line


def test_model_or_csv(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("a\n1\n")
    assert not is_model_file(csv)
    zipped = tmp_path / "model.bin"
    zipped.write_bytes(b"PK\x03\x04rest")
    assert is_model_file(zipped) and is_model_file(tmp_path / "x.npz")
    assert is_model_file(tmp_path)  # a directory: the model loader names the problem
