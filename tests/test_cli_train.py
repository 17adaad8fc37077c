"""``fastgd train / predict / evaluate / info``: the end-to-end path in a subprocess, exit
codes and messages for bad data and options, checkpoints, resuming, and the progress bar."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastgd
from fastgd import cli

ROOT = Path(__file__).resolve().parents[1]


def write_problem(path, n=600, classification=False, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3)) * [1.0, 10.0, 0.1] + [0.0, 5.0, -2.0]
    y = X @ [1.0, 0.2, 3.0] + 1.0 + 0.1 * rng.standard_normal(n)
    if classification:
        y = (y > np.median(y)).astype(float)
    lines = ["id,a,b,c,y"]
    for i, (row, target) in enumerate(zip(X.tolist(), y.tolist(), strict=True)):
        lines.append(f"{i},{row[0]!r},{row[1]!r},{row[2]!r},{target!r}")
    path.write_text("\n".join(lines) + "\n")
    return X, y


def fastgd_cmd(*argv, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "fastgd", *[str(a) for a in argv]],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=120,
    )


def run(argv, capsys):
    code = cli.main([str(item) for item in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_train_info_evaluate_predict_end_to_end(tmp_path):
    data = tmp_path / "houses.csv"
    X, _ = write_problem(data)
    model_path = tmp_path / "model.npz"
    train = fastgd_cmd(
        "train",
        data,
        "--target",
        "y",
        "--drop",
        "id",
        "--model",
        model_path,
        "--standardize",
        "--random-state",
        "0",
        "--epochs",
        "30",
    )
    assert train.returncode == 0, train.stderr
    assert "600 rows" in train.stderr and str(model_path) in train.stderr
    assert "\r" not in train.stderr  # no bar: stderr is not a terminal

    info = fastgd_cmd("info", model_path)
    assert info.returncode == 0, info.stderr
    for text in ("fastgd-model 1.3", "squared_error", "standardize", "loss_history", "b"):
        assert text in info.stdout
    as_json = json.loads(fastgd_cmd("info", model_path, "--json").stdout)
    assert as_json["feature_names"] == ["a", "b", "c"] and as_json["target"] == "y"

    evaluate = fastgd_cmd("evaluate", model_path, data)
    assert evaluate.returncode == 0, evaluate.stderr
    metrics = dict(line.split() for line in evaluate.stdout.splitlines())
    assert int(metrics["rows"]) == 600
    assert float(metrics["r2"]) > 0.99 and float(metrics["mse"]) < 0.05

    # predict on a file whose columns come in another order, without the target
    shuffled = tmp_path / "new.csv"
    lines = ["c,b,a"] + [f"{r[2]!r},{r[1]!r},{r[0]!r}" for r in X.tolist()]
    shuffled.write_text("\n".join(lines) + "\n")
    out_file = tmp_path / "pred.csv"
    predict = fastgd_cmd("predict", model_path, shuffled, "--output", out_file)
    assert predict.returncode == 0, predict.stderr
    predicted = np.loadtxt(out_file, delimiter=",", skiprows=1)
    np.testing.assert_array_equal(predicted, fastgd.load(model_path).predict(X))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    to_stdout = fastgd_cmd("predict", model_path, data, "--quiet")
    assert to_stdout.stdout.splitlines()[0] == "prediction"
    assert len(to_stdout.stdout.splitlines()) == 601


def test_classifier_metrics_and_labels(tmp_path, capsys):
    data = tmp_path / "clicks.csv"
    X, _ = write_problem(data, classification=True)
    model_path = tmp_path / "clf.npz"
    code, _, err = run(
        [
            "train",
            data,
            "--target",
            "y",
            "--drop",
            "id",
            "--model",
            model_path,
            "--loss",
            "log_loss",
            "--standardize",
            "--random-state",
            "0",
        ],
        capsys,
    )
    assert code == 0, err
    code, out, err = run(["evaluate", model_path, data, "--target", "y"], capsys)
    assert code == 0, err
    metrics = dict(line.split() for line in out.splitlines())
    assert float(metrics["accuracy"]) > 0.9 and 0 < float(metrics["log_loss"]) < 0.4
    code, out, _ = run(["predict", model_path, data], capsys)
    labels = np.array(out.splitlines()[1:], dtype=float)
    np.testing.assert_array_equal(labels, fastgd.load(model_path).predict(X))
    assert set(labels) <= {0.0, 1.0}


def test_bad_flag_is_a_usage_error(tmp_path):
    data = tmp_path / "d.csv"
    write_problem(data, n=20)
    result = fastgd_cmd("train", data, "--target", "y", "--model", tmp_path / "m.npz", "--bogus")
    assert result.returncode == 2 and "unrecognized arguments: --bogus" in result.stderr
    result = fastgd_cmd(
        "train", data, "--target", "y", "--model", tmp_path / "m.npz", "--loss", "squared"
    )
    assert result.returncode == 2 and "invalid choice: 'squared'" in result.stderr
    assert not (tmp_path / "m.npz").exists()


def test_help_has_examples(capsys):
    for command in ("train", "predict", "evaluate", "info"):
        code, out, _ = run([command, "--help"], capsys)
        assert code == 0 and "examples:" in out and f"fastgd {command}" in out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a,b,y\n1,2,3\n", r"target column 'price' is not in the file"),
        ("a,b,price\n1,2,3\n4,x5,6\n", r"line 3, column 'b'"),
        ("a,b,price\n1,2,3\n4,5\n", r"line 3"),
        ("", r"empty"),
    ],
    ids=["missing-target", "non-numeric", "ragged", "empty"],
)
def test_data_errors_exit_1_with_file_line_and_column(tmp_path, capsys, content, message):
    data = tmp_path / "bad.csv"
    data.write_text(content)
    code, _, err = run(["train", data, "--target", "price", "--model", tmp_path / "m.npz"], capsys)
    assert code == 1
    assert err.startswith("fastgd: error: ") and "bad.csv" in err
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "m.npz").exists()


def test_missing_files_exit_1_and_flags_breaking_a_rule_exit_2(tmp_path, capsys):
    code, _, err = run(
        ["train", tmp_path / "none.csv", "--target", "y", "--model", tmp_path / "m.npz"], capsys
    )
    assert code == 1 and "none.csv" in err
    code, _, err = run(["info", tmp_path / "none.npz"], capsys)
    assert code == 1 and "none.npz" in err
    data = tmp_path / "d.csv"
    write_problem(data, n=30)
    code, _, err = run(
        [
            "train",
            data,
            "--target",
            "y",
            "--model",
            tmp_path / "m.npz",
            "--learning-rate",
            "pa1",
            "--strategy",
            "full",
        ],
        capsys,
    )
    assert code == 2 and "pa1" in err  # a rule between flags: bad usage (issue 10)
    assert err.count("\n") == 1 and err.rstrip().endswith("(see 'fastgd train --help')")


def test_skipped_rows_are_counted_in_the_summary(tmp_path, capsys):
    data = tmp_path / "d.csv"
    write_problem(data, n=50)
    lines = data.read_text().splitlines()
    lines[5] = lines[5].replace(",", ",oops", 1)
    lines[9] = "1,2"
    data.write_text("\n".join(lines) + "\n")
    args = ["train", data, "--target", "y", "--model", tmp_path / "m.npz", "--epochs", "2"]
    code, _, err = run(args, capsys)
    assert code == 1 and "line 6" in err
    code, _, err = run([*args, "--on-bad-rows", "skip"], capsys)
    assert code == 0, err
    assert "48 rows" in err and "skipped 2 rows" in err
    assert fastgd.load(tmp_path / "m.npz").summary["skipped"]


def test_checkpoint_keeps_a_loadable_model_after_divergence(tmp_path, capsys):
    data = tmp_path / "d.csv"
    X, _ = write_problem(data, n=200)
    model_path = tmp_path / "m.npz"
    code, _, err = run(
        [
            "train",
            data,
            "--target",
            "y",
            "--model",
            model_path,
            "--strategy",
            "sgd",
            "--learning-rate",
            "constant",
            "--eta0",
            "1e6",
            "--checkpoint",
        ],
        capsys,
    )
    assert code == 1 and "diverged" in err and str(model_path) in err
    model = fastgd.load(model_path)
    assert model.summary["diverged"] is True
    assert np.isfinite(model.predict(np.c_[np.arange(200.0), X])).all()
    # without --checkpoint a divergence writes nothing
    other = tmp_path / "other.npz"
    code, _, err = run(
        [
            "train",
            data,
            "--target",
            "y",
            "--model",
            other,
            "--strategy",
            "sgd",
            "--learning-rate",
            "constant",
            "--eta0",
            "1e6",
        ],
        capsys,
    )
    assert code == 1 and not other.exists()


def test_ctrl_c_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    import fastgd.stream

    data = tmp_path / "d.csv"
    write_problem(data, n=200)
    model_path = tmp_path / "m.npz"
    real_fit_csv = fastgd.stream.fit_csv

    def interrupted_fit_csv(*args, callback, **kwargs):
        def stop_in_epoch_3(epoch, coef, intercept, loss):
            callback(epoch, coef, intercept, loss)
            if epoch == 2:
                raise KeyboardInterrupt

        return real_fit_csv(*args, callback=stop_in_epoch_3, **kwargs)

    monkeypatch.setattr(fastgd.stream, "fit_csv", interrupted_fit_csv)
    code, _, err = run(
        [
            "train",
            data,
            "--target",
            "y",
            "--drop",
            "id",
            "--model",
            model_path,
            "--standardize",
            "--tol",
            "none",
            "--checkpoint",
        ],
        capsys,
    )
    assert code == 130
    assert "interrupted" in err and "epoch 2" in err and str(model_path) in err
    model = fastgd.load(model_path)
    assert model.summary["epochs"] == 2 and model.summary["checkpoint"] is True
    assert model.scaler is not None and model.summary["rows"] == 200


def test_resume_continues_the_step_count_and_the_epochs(tmp_path, capsys):
    data = tmp_path / "d.csv"
    write_problem(data, n=300)
    model_path = tmp_path / "m.npz"
    base = [
        "train",
        data,
        "--target",
        "y",
        "--drop",
        "id",
        "--model",
        model_path,
        "--strategy",
        "sgd",
        "--learning-rate",
        "invscaling",
        "--standardize",
        "--tol",
        "none",
        "--random-state",
        "0",
    ]
    code, _, err = run([*base, "--epochs", "3"], capsys)
    assert code == 0, err
    first = fastgd.load(model_path)
    code, _, err = run(
        ["train", data, "--model", model_path, "--resume", "--epochs", "2", "--quiet"], capsys
    )
    assert code == 0, err
    assert err == ""  # --quiet: no bar, no summary
    second = fastgd.load(model_path)
    assert first.summary["epochs"] == 3 and second.summary["epochs"] == 5
    assert second.summary["t"] == first.summary["t"] + 2 * 300
    assert len(second.summary["loss_history"]) == 5
    np.testing.assert_array_equal(second.summary["loss_history"][:3], first.summary["loss_history"])
    assert second.options["learning_rate"] == "invscaling"  # the model's options carry over
    assert second.summary["final_loss"] <= first.summary["loss_history"][0]


def test_validation_fraction_reports_scores(tmp_path, capsys):
    data = tmp_path / "d.csv"
    write_problem(data, n=400)
    model_path = tmp_path / "m.npz"
    code, _, err = run(
        [
            "train",
            data,
            "--target",
            "y",
            "--model",
            model_path,
            "--validation-fraction",
            "0.2",
            "--random-state",
            "0",
        ],
        capsys,
    )
    assert code == 0, err
    model = fastgd.load(model_path)
    assert model.options["validation_fraction"] == 0.2
    assert len(model.summary["validation_scores"]) == model.summary["epochs"]


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_progress_bar_draws_on_a_terminal_at_most_ten_times_a_second():
    stream, clock = FakeTerminal(), Clock()
    bar = cli.ProgressBar("reading d.csv", epochs=5, stream=stream, clock=clock)
    for rows in range(0, 10_000, 100):  # a hundred updates within 0.05 s
        clock.now += 0.0005
        bar.update(0, rows, None)
    assert stream.getvalue().count("\r") == 1
    assert "reading d.csv" in stream.getvalue()
    clock.now += 1.0
    bar.epoch_done(1, 0.125)
    bar.update(2, 5_000, 10_000)
    line = stream.getvalue().split("\r")[-1]
    assert "epoch 2/5" in line and "50%" in line and "rows/s" in line and "loss 0.125" in line
    bar.close()
    assert stream.getvalue().endswith("\r")


def test_progress_bar_is_silent_off_a_terminal_or_when_quiet():
    for stream, enabled in ((io.StringIO(), True), (FakeTerminal(), False)):
        bar = cli.ProgressBar("x", stream=stream, enabled=enabled)
        bar.update(1, 10, 100)
        bar.close()
        assert stream.getvalue() == ""


def test_render_progress():
    text = cli.render_progress(
        label="reading",
        epoch=3,
        epochs=20,
        rows_done=250,
        rows_total=1000,
        rows_per_second=2.5e6,
        loss=0.5,
        width=8,
    )
    assert text == "epoch 3/20  [##......]  25%  2.5M rows/s  loss 0.5"
    text = cli.render_progress(
        label="reading d.csv",
        epoch=0,
        epochs=None,
        rows_done=12345,
        rows_total=None,
        rows_per_second=None,
        loss=None,
    )
    assert text == "reading d.csv  12k rows"


def test_output_closed_early_exits_quietly(tmp_path, capsys):
    """``fastgd info MODEL | head -1``: a reader that goes away is no error. The model is
    wide enough that ``info`` writes more than a pipe holds (64 KiB), so the write fails."""
    data = tmp_path / "wide.csv"
    width = 5000
    rng = np.random.default_rng(0)
    table = rng.standard_normal((20, width + 1))
    header = ",".join([*(f"feature_{j}" for j in range(width)), "y"])
    np.savetxt(data, table, delimiter=",", header=header, comments="", fmt="%.4f")
    model_path = tmp_path / "model.npz"
    code, _, _ = run(["train", data, "--target", "y", "--model", model_path, "--epochs", "1",
                      "--quiet"], capsys)  # fmt: skip
    assert code == 0
    full = fastgd_cmd("info", model_path)
    assert len(full.stdout) > 65536
    process = subprocess.Popen(
        [sys.executable, "-m", "fastgd", "info", str(model_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    first = process.stdout.readline()
    process.stdout.close()  # the reader leaves after one line
    _, err = process.communicate(timeout=120)
    assert first.startswith(b"model file")
    assert process.returncode == 0
    assert b"Broken pipe" not in err and b"Traceback" not in err
