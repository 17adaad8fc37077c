"""Byte-level fuzzing of the fastgd command (issue 10): damaged CSV files (plain and
gzip) through ``train`` and ``predict``, damaged model files through ``info``, ``predict``
and ``evaluate``. Whatever the damage, the command ends with status 0, 1 or 2 and one
line on stderr (beside one-line warnings), never a traceback or an internal error.

Every case runs in ONE subprocess (a driver calling ``fastgd.cli.main`` in-process, which
prints the results as JSON) under a timeout, so that a hang fails the test instead of
blocking the suite. The mutations are deterministic (a fixed seed)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

import fastgd

ROOT = Path(__file__).resolve().parents[1]
SEED = 20261129
MUTATIONS = {"csv": 100, "csv.gz": 50, "model": 150}

DRIVER = r'''
import contextlib, io, json, random, sys, traceback
from pathlib import Path

from fastgd import cli

work, seed = Path(sys.argv[1]), int(sys.argv[2])
counts = json.loads(sys.argv[3])
rng = random.Random(seed)
CSV_BYTES = [b"\r", b"\n", b",", b'"', b"\x00", b"\xff", b"-", b"e", b"9", b"nan", b" "]


def mutate(data: bytes, text_like: bool) -> tuple[str, bytes]:
    kind = rng.choice(["flip", "insert", "delete", "truncate"])
    at = rng.randrange(len(data))
    if kind == "flip":
        return f"flip@{at}", data[:at] + bytes([data[at] ^ rng.randrange(1, 256)]) + data[at + 1 :]
    if kind == "insert":
        extra = rng.choice(CSV_BYTES) if text_like else bytes([rng.randrange(256)])
        return f"insert {extra!r}@{at}", data[:at] + extra + data[at:]
    if kind == "delete":
        size = rng.randrange(1, 9)
        return f"delete {size}@{at}", data[:at] + data[at + size :]
    return f"truncate@{at}", data[:at]


def call(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except BaseException as error:  # noqa: BLE001 - an escaped exception is a finding
            code = f"raised {type(error).__name__}"
            err.write(traceback.format_exc())
    return code, err.getvalue()


def where(argv) -> str:
    """The innermost frame of the traceback --debug prints (which module raised)."""
    _, err = call([*argv, "--debug"])
    frames = [line.strip() for line in err.splitlines() if line.strip().startswith("File ")]
    return frames[-1] if frames else ""


cases = {
    "csv": (work / "data.csv", ["train", "predict"]),
    "csv.gz": (work / "data.csv.gz", ["train", "predict"]),
    "model": (work / "model.npz", ["info", "predict", "evaluate"]),
}
results = []
for name, count in counts.items():
    original, commands = cases[name]
    valid = original.read_bytes()
    for number in range(count):
        how, damaged = mutate(valid, text_like=name == "csv")
        broken = work / f"broken.{name}" if name != "model" else work / "broken.npz"
        broken.write_bytes(damaged)
        for command in commands:
            if name == "model":
                argv = {
                    "info": ["info", str(broken)],
                    "predict": ["predict", str(broken), str(work / "data.csv"), "-q"],
                    "evaluate": ["evaluate", str(broken), str(work / "data.csv"), "-q"],
                }[command]
            elif command == "train":
                argv = ["train", str(broken), "--target", "y", "--model", str(work / "out.npz"),
                        "--epochs", "2", "-q", "--cache-dir", str(work / "cache")]
            else:
                argv = ["predict", str(work / "model.npz"), str(broken), "-q"]
            code, err = call(argv)
            bad = code not in (0, 1, 2) or "Traceback" in err or "internal error" in err
            lines = [line for line in err.splitlines()
                     if line.strip() and not line.startswith("fastgd: warning: ")]
            bad = bad or len(lines) > 1 or (code != 0 and not lines)
            results.append({
                "file": name, "case": number, "mutation": how, "command": command,
                "status": code, "stderr": err[-300:], "bad": bad,
                "where": where(argv) if bad else "",
            })
print(json.dumps(results))
'''


def _write_inputs(work: Path) -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3))
    y = X @ [1.0, -2.0, 0.5] + 0.3
    lines = [
        "a,b,c,y",
        *(",".join(f"{v:.5g}" for v in [*row, t]) for row, t in zip(X, y, strict=True)),
    ]
    text = ("\n".join(lines) + "\n").encode()
    (work / "data.csv").write_bytes(text)
    (work / "data.csv.gz").write_bytes(gzip.compress(text, mtime=0))
    result = fastgd.fit(X, y, max_iter=3, random_state=0)
    fastgd.save(result, work / "saved.npz", feature_names=["a", "b", "c"], target="y")
    _same_bytes_every_run(work / "saved.npz", work / "model.npz")
    assert fastgd.load(work / "model.npz").feature_names == ["a", "b", "c"]


def _same_bytes_every_run(source: Path, target: Path) -> None:
    """A copy of the model file without what changes from run to run (the time it was
    written, the fit time, the archive's dates), so that the same mutations hit the same
    bytes every run."""
    with zipfile.ZipFile(source) as archive:
        members = [(info.filename, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            if name == "metadata.json":
                metadata = json.loads(data)
                metadata["created"] = "2026-01-01T00:00:00+00:00"
                metadata.get("summary", {})["fit_time"] = 0.0
                data = json.dumps(metadata, indent=1).encode()
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            archive.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)


def test_damaged_files_end_in_one_line_and_status_0_1_or_2(tmp_path):
    _write_inputs(tmp_path)
    (tmp_path / "driver.py").write_text(DRIVER)
    completed = subprocess.run(
        [sys.executable, tmp_path / "driver.py", tmp_path, str(SEED), json.dumps(MUTATIONS)],
        capture_output=True,
        text=True,
        timeout=120,  # a hang fails here instead of blocking the suite
        env={**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_NUM_THREADS": "2"},
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(completed.stdout.splitlines()[-1])
    assert len(results) == 2 * 100 + 2 * 50 + 3 * 150
    # the mutations reach both outcomes: some damage is harmless, most is reported
    statuses = {result["status"] for result in results}
    assert {0, 1} <= statuses
    bad = [result for result in results if result["bad"]]
    shown = "\n".join(
        f"{r['file']} #{r['case']} {r['mutation']} {r['command']}: status {r['status']}, "
        f"{r['stderr'].strip().splitlines()[-1] if r['stderr'].strip() else ''} [{r['where']}]"
        for r in bad
    )
    assert not bad, f"{len(bad)} damaged inputs were not reported in one line:\n{shown}"
