"""The fastgd command under misuse (issue 10): an output never replaces an input, output
directories are checked before any work, stdin / FIFOs / process substitutions are read
once, every failure is one line (the traceback only with --debug), warnings are one line,
many columns are fine, and a real SIGINT stops every phase with exit 130 and no leftovers."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

import fastgd
from fastgd import cli

ROOT = Path(__file__).resolve().parents[1]


def write_problem(path, n=120, seed=0, columns=("a", "b", "c")):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, len(columns)))
    y = X @ np.arange(1.0, len(columns) + 1) + 0.5
    lines = [",".join([*columns, "y"])]
    lines += [
        ",".join(f"{v:.6f}" for v in [*row, target]) for row, target in zip(X, y, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def run(argv, capsys):
    code = cli.main([str(item) for item in argv])
    out, err = capsys.readouterr()
    return code, out, err


def without_warnings(err: str) -> list[str]:
    """stderr's lines, less the one-line warnings (e.g. a cache rebuild notice)."""
    return [line for line in err.splitlines() if line.strip() and "fastgd: warning:" not in line]


def one_error_line(err: str) -> str:
    lines = without_warnings(err)
    assert len(lines) == 1, err
    assert lines[0].startswith("fastgd: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def trained(tmp_path, capsys):
    data = write_problem(tmp_path / "d.csv")
    model = tmp_path / "m.npz"
    code, _, err = run(["train", data, "--target", "y", "--model", model, "--epochs", "3"], capsys)
    assert code == 0, err
    return data, model


# ------------------------------------------------------------------- outputs vs inputs


def test_train_refuses_to_write_the_model_over_its_data(tmp_path, capsys):
    data = write_problem(tmp_path / "d.csv")
    before = data.read_bytes()
    code, _, err = run(["train", data, "--target", "y", "--model", data], capsys)
    assert code == 2  # bad usage (issue 10)
    assert "would replace" in one_error_line(err) and "d.csv" in err
    assert data.read_bytes() == before


@pytest.mark.parametrize("link", ["same", "symlink", "hardlink", "model"])
def test_predict_never_writes_over_an_input(trained, tmp_path, capsys, link):
    data, model = trained
    target = {"same": data, "model": model}.get(link, tmp_path / "alias.csv")
    if link == "symlink":
        target.symlink_to(data)
    elif link == "hardlink":
        os.link(data, target)
    before = {path: path.read_bytes() for path in (data, model)}
    code, _, err = run(["predict", model, data, "-o", target, "-q"], capsys)
    assert code == 2
    assert "would replace" in one_error_line(err)
    assert {path: path.read_bytes() for path in (data, model)} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_train_refuses_to_replace_a_file_that_is_not_a_model(tmp_path, capsys):
    data = write_problem(tmp_path / "d.csv")
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    code, _, err = run(["train", data, "--target", "y", "--model", notes], capsys)
    assert code == 2
    line = one_error_line(err)
    assert "notes.txt exists and is not a fastgd model" in line and "nothing was written" in line
    assert notes.read_text() == "my notes\n"
    # a model is replaced as before
    model = tmp_path / "m.npz"
    for _ in range(2):
        code, _, err = run(["train", data, "--target", "y", "--model", model, "-q"], capsys)
        assert code == 0, err


def test_a_missing_output_directory_is_reported_before_any_work(tmp_path, capsys, trained):
    data, model = trained
    cache = tmp_path / "cache"
    code, _, err = run(
        [
            "train",
            data,
            "--target",
            "y",
            "--model",
            tmp_path / "no" / "m.npz",
            "--cache-dir",
            cache,
        ],
        capsys,
    )
    assert code == 1 and "does not exist" in one_error_line(err)
    assert not cache.exists()  # the first pass (which writes the cache) never started
    code, _, err = run(["predict", model, data, "-o", tmp_path / "no" / "p.csv"], capsys)
    assert code == 1 and "does not exist" in one_error_line(err)
    code, _, err = run(["predict", model, data, "-o", tmp_path], capsys)
    assert code == 1 and "is a directory" in one_error_line(err)


# ------------------------------------------------------------------- inputs that are not files


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """Temporary copies go here, so that the test sees them removed."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(folder))
    return folder


class FakeStdin:
    def __init__(self, data: bytes):
        self.buffer = io.BytesIO(data)


def test_dash_reads_stdin_once_and_names_it(tmp_path, capsys, monkeypatch, private_tmp):
    data = write_problem(tmp_path / "d.csv")
    model = tmp_path / "m.npz"
    monkeypatch.setattr(sys, "stdin", FakeStdin(data.read_bytes()))
    cache = tmp_path / "cache"
    argv = ["train", "-", "--target", "y", "--model", model, "--epochs", "2"]
    code, _, err = run([*argv, "--cache-dir", cache], capsys)
    assert code == 0, err
    assert not cache.exists()  # a stream read once leaves no cache behind
    assert fastgd.load(model).options["data"] == "<stdin>"
    monkeypatch.setattr(sys, "stdin", FakeStdin(data.read_bytes()))
    code, out, err = run(["predict", model, "-", "-q"], capsys)
    assert code == 0, err
    assert len(out.splitlines()) == 121
    monkeypatch.setattr(sys, "stdin", FakeStdin(model.read_bytes()))
    code, out, err = run(["info", "-"], capsys)
    assert code == 0 and out.startswith("model file      <stdin>\n"), err
    code, _, err = run(["predict", "-", "-"], capsys)
    assert code == 2 and "only one input can be '-'" in err
    monkeypatch.setattr(sys, "stdin", FakeStdin(data.read_bytes()))
    code, _, err = run(["train", "-", "--target", "price", "--model", model], capsys)
    assert code == 1
    line = one_error_line(err)
    assert line.startswith("fastgd: error: <stdin>") and "'price'" in line
    assert str(private_tmp) not in err
    assert list(private_tmp.iterdir()) == []  # the copies are gone, after an error too


def feed_fifo(path: Path, data: bytes) -> threading.Thread:
    def write():
        with open(path, "wb") as handle:
            handle.write(data)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_is_read_once(tmp_path, capsys, private_tmp):
    data = write_problem(tmp_path / "d.csv")
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    model = tmp_path / "m.npz"
    writer = feed_fifo(fifo, data.read_bytes())
    code, _, err = run(["train", fifo, "--target", "y", "--model", model, "-q"], capsys)
    writer.join(5)
    assert code == 0, err
    # a wrong column is named as missing (the header is read from the one copy) and the
    # message names the FIFO, not the copy
    writer = feed_fifo(fifo, data.read_bytes())
    code, _, err = run(["evaluate", model, fifo, "--target", "price"], capsys)
    writer.join(5)
    assert code == 1
    assert one_error_line(err).startswith(f"fastgd: error: {fifo}") and "'price'" in err
    assert list(private_tmp.iterdir()) == []


def test_a_directory_as_input_is_a_clear_error(tmp_path, capsys):
    code, _, err = run(["train", tmp_path, "--target", "y", "--model", tmp_path / "x.npz"], capsys)
    assert code == 1 and "is a directory" in one_error_line(err)
    code, _, err = run(["info", tmp_path], capsys)
    assert code == 1 and "is a directory" in one_error_line(err)


# ------------------------------------------------------------------- one line per failure


def test_a_truncated_gzip_is_one_line_naming_the_file(tmp_path, capsys):
    data = write_problem(tmp_path / "d.csv", n=3000)
    packed = gzip.compress(data.read_bytes())
    broken = tmp_path / "d.csv.gz"
    broken.write_bytes(packed[: len(packed) // 2])
    code, _, err = run(["train", broken, "--target", "y", "--model", tmp_path / "m.npz"], capsys)
    assert code == 1
    assert "d.csv.gz" in one_error_line(err)
    assert not (tmp_path / "m.npz").exists()


def test_a_truncated_model_is_one_line_naming_the_file(trained, capsys):
    data, model = trained
    model.write_bytes(model.read_bytes()[:-200])
    for argv in (["info", model], ["predict", model, data], ["evaluate", model, data]):
        code, _, err = run(argv, capsys)
        assert code == 1
        assert "m.npz" in one_error_line(err)


@pytest.mark.parametrize(
    "error", [zlib.error("invalid block type"), EOFError("ended early"), MemoryError()]
)
def test_data_level_exceptions_exit_1_naming_the_file(trained, capsys, monkeypatch, error):
    data, model = trained

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr("fastgd.io.csv.iter_csv", fail)
    shutil.rmtree(f"{data}.fastgd-cache")  # else evaluate reads the training cache
    code, _, err = run(["evaluate", model, data], capsys)
    assert code == 1
    line = one_error_line(err)
    assert "d.csv" in line
    if isinstance(error, MemoryError):
        assert "out of memory" in line and "--block-rows" in line


@pytest.mark.parametrize("where", ["before", "after"])
def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(
    trained, capsys, monkeypatch, where
):
    data, model = trained

    def fail(*args, **kwargs):
        raise RuntimeError("something broke\ninside")

    monkeypatch.setattr("fastgd.io.csv.iter_csv", fail)
    shutil.rmtree(f"{data}.fastgd-cache")  # else evaluate reads the training cache
    code, _, err = run(["evaluate", model, data], capsys)
    assert code == 1
    assert err.strip() == (
        "fastgd: internal error: RuntimeError: something broke inside "
        "(run again with --debug for the traceback)"
    )
    argv = ["evaluate", model, data]
    argv = ["--debug", *argv] if where == "before" else [*argv, "--debug"]
    code, _, err = run(argv, capsys)
    assert code == 1
    assert "Traceback (most recent call last)" in err and "raise RuntimeError" in err
    assert err.rstrip().splitlines()[-1].startswith("fastgd: internal error: RuntimeError")


def test_warnings_are_one_line(trained, capsys, monkeypatch):
    data, model = trained
    real = cli._model.model_schema

    def warn_then_read(*args, **kwargs):
        warnings.warn("the cache was rebuilt:\n  it was stale", UserWarning, stacklevel=1)
        return real(*args, **kwargs)

    monkeypatch.setattr(cli._model, "model_schema", warn_then_read)
    code, _, err = run(["evaluate", model, data, "-q"], capsys)
    assert code == 0, err
    assert err.strip() == "fastgd: warning: the cache was rebuilt: it was stale"


# ------------------------------------------------------------------- columns


def test_a_file_with_many_columns_trains_predicts_and_evaluates(tmp_path, capsys):
    columns = [f"x{i}" for i in range(20000)]
    data = write_problem(tmp_path / "wide.csv", n=4, columns=columns)
    model = tmp_path / "wide.npz"
    code, _, err = run(["train", data, "--target", "y", "--model", model, "--epochs", "2"], capsys)
    assert code == 0, err
    assert fastgd.load(model).n_features == 20000
    code, out, err = run(["predict", model, data, "-q"], capsys)
    assert code == 0, err
    assert len(out.splitlines()) == 5
    code, out, err = run(["evaluate", model, data], capsys)
    assert code == 0 and "rows       4" in out


def test_a_model_without_feature_names_checks_the_column_count(tmp_path, capsys):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((50, 3))
    model = tmp_path / "anon.npz"
    fastgd.save(fastgd.fit(X, X @ [1.0, 2.0, 3.0], max_iter=3), model)
    assert fastgd.load(model).feature_names is None
    wide = write_problem(tmp_path / "wide.csv", columns=("a", "b", "c", "d"))
    code, _, err = run(["predict", model, wide], capsys)
    assert code == 1
    line = one_error_line(err)
    assert "wide.csv" in line and "5 feature columns" in line and "has 3" in line
    # the model does not name its target: with --target, the other 3 columns fit; without,
    # the target column counts as a fourth feature
    fits = write_problem(tmp_path / "fits.csv", columns=("a", "b", "c"))
    code, _, err = run(["evaluate", model, fits, "--target", "y"], capsys)
    assert code == 0, err
    code, _, err = run(["predict", model, fits, "-q"], capsys)
    assert code == 1 and "4 feature columns" in one_error_line(err)


# ------------------------------------------------------------------- real Ctrl-C


def _big_csv(path: Path, rows: int = 300_000) -> Path:
    """About 25 MB: long enough that reading it takes a second or more."""
    rng = np.random.default_rng(0)
    block = rng.random((10_000, 8))
    y = block @ np.arange(8.0) + 0.1
    text = "\n".join(",".join(f"{v:.6f}" for v in row) for row in np.c_[block, y]) + "\n"
    with open(path, "w") as handle:
        handle.write("a,b,c,d,e,f,g,h,y\n")
        for _ in range(rows // 10_000):
            handle.write(text)
    return path


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory):
    return _big_csv(tmp_path_factory.mktemp("big") / "big.csv")


def _start_like_a_background_job(argv, cwd) -> subprocess.Popen:
    """``fastgd ... &`` from a shell without job control: SIGINT starts out ignored."""
    return subprocess.Popen(
        [sys.executable, "-m", "fastgd", *[str(a) for a in argv]],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _interrupt_when(process: subprocess.Popen, ready, what: str) -> tuple[float, str]:
    deadline = time.monotonic() + 90
    while not ready():
        assert process.poll() is None, f"ended before {what}: {process.stderr.read()}"
        assert time.monotonic() < deadline, f"never reached {what}"
        time.sleep(0.01)
    sent = time.monotonic()
    os.kill(process.pid, signal.SIGINT)
    try:
        _, err = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"SIGINT did not stop the command ({what}): {process.communicate()[1]}")
    return time.monotonic() - sent, err


def _leftovers(*folders: Path) -> list[str]:
    return sorted(
        p.name
        for folder in folders
        for p in folder.iterdir()
        if "tmp" in p.name or p.name[0] == "."
    )


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("phase", ["first pass", "epochs"])
def test_sigint_stops_train_at_once_and_leaves_nothing(big_csv, tmp_path, phase):
    cache = tmp_path / "cache"
    model = tmp_path / "m.npz"
    argv = ["train", big_csv, "--target", "y", "--model", model, "--cache-dir", cache]
    argv += ["--epochs", "1000", "--tol", "none", "--checkpoint", "-q"]
    process = _start_like_a_background_job(argv, tmp_path)
    if phase == "first pass":

        def ready():  # the cache's data files are being written and it has no header yet
            try:
                names = {p.name: p for p in cache.iterdir()}
                writing = any(n.endswith(".X.bin") and p.stat().st_size for n, p in names.items())
                return writing and not any(n.endswith(".json") for n in names)
            except FileNotFoundError:  # not made yet, or removed as we looked
                return False
    else:

        def ready():
            return model.exists()  # the checkpoint of epoch 1

    waited, err = _interrupt_when(process, ready, phase)
    assert process.returncode == 130, err
    assert waited < 2.0, f"took {waited:.2f} s to stop"
    lines = without_warnings(err)
    assert len(lines) == 1 and lines[0].startswith("fastgd: interrupted."), err
    if phase == "first pass":  # the cache folder the aborted pass made goes with it
        assert not model.exists() and not cache.exists() and _leftovers(tmp_path) == []
    else:
        assert _leftovers(cache, tmp_path) == []
        assert fastgd.load(model).summary["checkpoint"] is True


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigint_stops_predict_and_leaves_no_partial_output(big_csv, tmp_path, capsys):
    model = tmp_path / "m.npz"
    small = write_problem(tmp_path / "s.csv", columns=tuple("abcdefgh"))
    code, _, err = run(["train", small, "--target", "y", "--model", model, "-q"], capsys)
    assert code == 0, err
    output = tmp_path / "p.csv"
    process = _start_like_a_background_job(["predict", model, big_csv, "-o", output], tmp_path)
    waited, err = _interrupt_when(
        process, lambda: any(p.name.startswith(".p.csv") for p in tmp_path.iterdir()), "predict"
    )
    assert process.returncode == 130, err
    assert waited < 2.0, f"took {waited:.2f} s to stop"
    assert without_warnings(err) == ["fastgd: interrupted."]
    assert not output.exists() and _leftovers(tmp_path) == []


@pytest.mark.skipif(not os.path.exists("/proc/self/wchan"), reason="needs Linux's /proc/PID/wchan")
def test_sigint_stops_a_command_waiting_for_a_fifo_writer(tmp_path, capsys):
    data = write_problem(tmp_path / "d.csv")
    model = tmp_path / "m.npz"
    code, _, err = run(["train", data, "--target", "y", "--model", model, "-q"], capsys)
    assert code == 0, err
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)  # nobody ever writes: opening it blocks
    process = _start_like_a_background_job(["evaluate", model, fifo], tmp_path)

    def blocked_in_open():
        with open(f"/proc/{process.pid}/wchan") as handle:
            return handle.read().strip() == "wait_for_partner"

    waited, err = _interrupt_when(process, blocked_in_open, "the open of the FIFO")
    assert process.returncode == 130, err
    assert waited < 2.0 and without_warnings(err) == ["fastgd: interrupted."]


# ------------------------------------------------ found by the review of issue 10 (round 2)


def test_an_output_that_is_stdins_file_is_refused(trained, tmp_path, capsys, monkeypatch):
    """``predict m.npz - -o s.csv < s.csv`` and ``predict - d.csv -o mm.npz < mm.npz``: the
    file behind stdin is an input like any other (compared by device and inode)."""
    data, model = trained
    copy, model_copy = tmp_path / "s.csv", tmp_path / "mm.npz"
    copy.write_bytes(data.read_bytes())
    model_copy.write_bytes(model.read_bytes())
    for argv, redirected in [
        (["predict", model, "-", "-o", copy], copy),
        (["predict", "-", data, "-o", model_copy], model_copy),
    ]:
        before = redirected.read_bytes()
        with open(redirected) as stdin:
            monkeypatch.setattr(sys, "stdin", stdin)
            code, _, err = run([*argv, "-q"], capsys)
        assert code == 2
        line = one_error_line(err)
        assert "is the command's input (<stdin>)" in line and "would replace" in line
        assert redirected.read_bytes() == before
    # stdin from another file is fine
    with open(data) as stdin:
        monkeypatch.setattr(sys, "stdin", stdin)
        code, _, err = run(["predict", model, "-", "-o", copy, "-q"], capsys)
    assert code == 0, err
    assert copy.read_text().startswith("prediction\n")


def test_usage_errors_found_after_parsing_exit_2_in_one_line(trained, tmp_path, capsys):
    data, _ = trained
    model = tmp_path / "new.npz"
    base = ["train", data, "--target", "y", "--model", model]
    before = sorted(tmp_path.iterdir())
    for extra, words in [
        (["--features", "a,b,a"], "--features names the column(s) 'a' more than once"),
        (["--cache-dir", data], f"--cache-dir {data} is not a directory"),
        (["--cache-dir", data / "sub"], f"--cache-dir {data / 'sub'} is not a directory"),
        (["--learning-rate", "pa1", "--strategy", "minibatch"], "pa1"),
    ]:
        code, _, err = run([*base, *extra], capsys)
        assert code == 2, err
        line = one_error_line(err)
        assert words in line and line.endswith("(see 'fastgd train --help')"), line
    assert not model.exists()
    assert sorted(tmp_path.iterdir()) == before  # nothing written, no cache made


def test_argparse_errors_are_one_line_and_help_is_unchanged(capsys):
    code, _, err = run(["train", "d.csv", "--target", "y", "--model", "m", "--loss", "foo"], capsys)
    assert code == 2
    assert err.count("\n") == 1 and "usage:" not in err
    assert err.startswith("fastgd: error: argument --loss: invalid choice: 'foo'")
    assert err.rstrip().endswith("(see 'fastgd train --help')")
    code, out, _ = run(["train", "--help"], capsys)
    assert code == 0 and out.startswith("usage: fastgd train")
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and out.strip() == f"fastgd {fastgd.__version__}"


def test_a_prediction_that_overflows_is_an_error_naming_the_line(trained, tmp_path, capsys):
    """Huge finite weights pass the model's checks; their predictions must not come out as
    ``inf`` (predict) or ``nan`` scores after a numpy warning (evaluate)."""
    _, model_path = trained
    model = fastgd.load(model_path)
    model.coef = np.full_like(model.coef, 1e308)
    huge = tmp_path / "huge.npz"
    fastgd.save(model, huge)
    data = tmp_path / "o.csv"
    rows = ["a,b,c,y", *["0.1,0.1,0.1,1"] * 4, "0.1,10,0.1,1", "0.1,0.1,0.1,1"]
    data.write_text("\n".join(rows) + "\n")  # the 5th data row (line 6) overflows
    output = tmp_path / "p.csv"
    for argv in (["predict", huge, data, "-o", output], ["evaluate", huge, data]):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a numpy warning would fail the test
            code, out, err = run([*argv, "-q"], capsys)
        assert code == 1 and out == ""
        line = one_error_line(err)
        assert f"{data}, line 6: the model's prediction is not finite" in line, line
    assert not output.exists()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_copies_left_by_a_killed_run_are_removed_by_the_next(
    trained, tmp_path, capsys, monkeypatch, private_tmp
):
    data, model = trained
    stale = private_tmp / f"fastgd-input-{_dead_pid()}-abc"
    live = private_tmp / f"fastgd-input-{os.getppid()}-def"  # pytest's parent: alive
    other = private_tmp / "fastgd-input-xyz"  # not named for an owner: left alone
    killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    killed.kill()  # not waited for yet: a zombie on Linux, gone for good
    deadline = time.monotonic() + 10
    while sys.platform.startswith("linux") and time.monotonic() < deadline:
        if Path(f"/proc/{killed.pid}/stat").read_bytes().rpartition(b")")[2].split()[0] == b"Z":
            break
        time.sleep(0.01)
    unreaped = private_tmp / f"fastgd-input-{killed.pid}-ghi"
    folders = (stale, live, other, unreaped)
    for folder in folders:
        folder.mkdir()
        (folder / "input-1").write_text("a,b\n")
    monkeypatch.setattr(sys, "stdin", FakeStdin(data.read_bytes()))
    code, _, err = run(["predict", model, "-", "-o", tmp_path / "p.csv", "-q"], capsys)
    killed.wait()
    assert code == 0, err
    kept = [live.name, other.name] + ([] if sys.platform.startswith("linux") else [unreaped.name])
    assert sorted(p.name for p in private_tmp.iterdir()) == sorted(kept)


#: A ``sitecustomize`` that sends the process a real SIGINT when it first imports Numba,
#: i.e. in the middle of ``fastgd``'s start-up imports (about the first second).
INTERRUPT_WHILE_IMPORTING = """
import os, signal, sys

class InterruptAtNumba:
    def find_spec(self, name, path=None, target=None):
        if name == "numba":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, InterruptAtNumba())
"""


@pytest.mark.parametrize("job", ["background", "foreground"])
def test_ctrl_c_during_start_up_stops_with_one_line(tmp_path, job):
    """SIGINT while ``python -m fastgd`` still imports numpy/Numba/polars: exit 130 and
    one line, in a job started with ``&`` (SIGINT inherited as ignored: it used to train
    on) as in the foreground (it used to print a long KeyboardInterrupt traceback)."""
    data = write_problem(tmp_path / "d.csv")
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(INTERRUPT_WHILE_IMPORTING)
    argv = ["train", data, "--target", "y", "--model", tmp_path / "m.npz", "--epochs", "3"]
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if job == "background" else None
    done = subprocess.run(
        [sys.executable, "-m", "fastgd", *[str(a) for a in argv]], cwd=tmp_path,
        capture_output=True, text=True, timeout=120, preexec_fn=ignore,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), str(ROOT)])},
    )  # fmt: skip
    assert done.returncode == 130, done.stderr[-3000:]
    assert done.stderr.splitlines() == ["fastgd: interrupted."], done.stderr[-3000:]
    assert not (tmp_path / "m.npz").exists()
