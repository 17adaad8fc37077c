"""k classes from a CSV (issue 13): ``fit_csv`` / ``fastgd train`` with more than two
classes in one pass over each block, model files of k weight vectors (format 1.3:
``multiclass``), and ``fastgd predict`` / ``evaluate`` with them."""

from __future__ import annotations

import io
import json
import zipfile
from contextlib import redirect_stdout

import numpy as np
import pytest

import fastgd
from fastgd.cli import main
from fastgd.io.model import ModelFormatError

N_ROWS = 240
CONSTANT = dict(learning_rate="constant", eta0=0.05, max_iter=3, shuffle=False, tol=None)


def _data(k: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N_ROWS, 3))
    y = np.argmax(X @ rng.normal(size=(3, k)) + 0.1 * rng.normal(size=(N_ROWS, k)), axis=1)
    return X, y


def _write_numeric(path, X, y) -> None:
    lines = ["a,b,c,label"]
    lines += [f"{a!r},{b!r},{c!r},{int(t)}" for (a, b, c), t in zip(X.tolist(), y, strict=True)]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def text_csv(tmp_path):
    """Four text labels, a text feature that carries the class, a missing numeric cell."""
    rng = np.random.default_rng(1)
    names = ["bird", "cat", "dog", "fish"]
    colours = ["red", "green", "blue", "grey"]
    lines = ["x,colour,animal"]
    for i in range(N_ROWS):
        label = i % 4
        x = "" if i == 5 else f"{label + 0.3 * rng.normal():.4f}"
        colour = colours[label] if rng.random() < 0.9 else colours[(label + 1) % 4]
        lines.append(f"{x},{colour},{names[label]}")
    path = tmp_path / "animals.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(argv) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = main([str(arg) for arg in argv])
    return code, out.getvalue()


@pytest.mark.parametrize("multiclass", ["ovr", "multinomial"])
def test_fit_csv_equals_fit_on_the_same_rows(tmp_path, multiclass):
    X, y = _data(k=4)
    path = tmp_path / "four.csv"
    _write_numeric(path, X, y)
    for strategy in ("sgd", "minibatch"):
        options = dict(loss="log_loss", multiclass=multiclass, strategy=strategy, **CONSTANT)
        if strategy == "minibatch":
            options["batch_size"] = 16
        streamed = fastgd.fit_csv(path, target="label", standardize=False, block_rows=50,
                                  **options)  # fmt: skip
        in_memory = fastgd.fit(X, y, **options)
        assert streamed.coef.shape == (4, 3)
        np.testing.assert_array_equal(streamed.classes, [0, 1, 2, 3])
        np.testing.assert_allclose(streamed.coef, in_memory.coef, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(streamed.intercept, in_memory.intercept, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(streamed.loss_history, in_memory.loss_history, rtol=1e-12)
        assert streamed.multiclass == multiclass


def test_fit_csv_standardised_weights_fold_to_the_raw_features(tmp_path):
    X, y = _data(k=3)
    path = tmp_path / "three.csv"
    _write_numeric(path, 10.0 * X + 5.0, y)
    result = fastgd.fit_csv(path, target="label", loss="hinge", max_iter=8)
    raw = 10.0 * X + 5.0
    standardized = (raw - result.extras["scaler"]["mean"]) / result.extras["scaler"]["scale"]
    trained = standardized @ result.extras["standardized_coef"].T
    np.testing.assert_allclose(
        raw @ result.coef.T + result.intercept,
        trained + result.extras["standardized_intercept"],
        atol=1e-9,
    )
    assert (result.predict(raw) == y).mean() > 0.8


def test_two_classes_keep_one_weight_vector(tmp_path):
    X, y = _data(k=3)
    path = tmp_path / "two.csv"
    _write_numeric(path, X, (y == 1).astype(int))
    result = fastgd.fit_csv(path, target="label", loss="log_loss", standardize=False,
                            **CONSTANT)  # fmt: skip
    in_memory = fastgd.fit(X, (y == 1).astype(int), loss="log_loss", **CONSTANT)
    assert result.coef.shape == (3,)
    np.testing.assert_allclose(result.coef, in_memory.coef, rtol=1e-12, atol=1e-12)
    model_path = tmp_path / "two.npz"
    fastgd.save(result, model_path)
    model = fastgd.load(model_path)
    assert model.coef.shape == (3,) and model.multiclass is None
    with zipfile.ZipFile(model_path) as archive:
        metadata = json.loads(archive.read("metadata.json"))
    assert metadata["multiclass"] is None and metadata["coef_shape"] == [3]


@pytest.mark.parametrize("multiclass", ["ovr", "multinomial"])
def test_train_predict_evaluate_text_labels(tmp_path, text_csv, multiclass):
    model_path = tmp_path / "animals.npz"
    code, _ = _run(["train", text_csv, "--target", "animal", "--loss", "log_loss",
                    "--multiclass", multiclass, "--epochs", "10", "--model", model_path,
                    "--quiet"])  # fmt: skip
    assert code == 0
    model = fastgd.load(model_path)
    assert model.coef.shape == (4, model.n_features)
    assert model.classes.tolist() == ["bird", "cat", "dog", "fish"]
    assert model.multiclass == multiclass
    assert model.format_version == (1, 3)
    code, out = _run(["info", model_path])
    assert code == 0 and f"loss log_loss, multiclass {multiclass}," in out

    code, out = _run(["predict", model_path, text_csv])
    assert code == 0
    predicted = out.splitlines()
    assert predicted[0] == "prediction" and len(predicted) == N_ROWS + 1
    truth = ["bird", "cat", "dog", "fish"] * (N_ROWS // 4)
    assert np.mean([p == t for p, t in zip(predicted[1:], truth, strict=True)]) > 0.8

    code, out = _run(["predict", model_path, text_csv, "--proba"])
    assert code == 0
    rows = out.splitlines()
    assert rows[0] == "proba_bird,proba_cat,proba_dog,proba_fish"
    proba = np.array([[float(v) for v in row.split(",")] for row in rows[1:]])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    # the labels are the most probable classes
    assert [truth_label for truth_label in np.array(model.classes)[proba.argmax(axis=1)]] == [
        p.strip('"') for p in predicted[1:]
    ]

    code, out = _run(["evaluate", model_path, text_csv])
    assert code == 0
    metrics = {line.split()[0]: float(line.split()[1]) for line in out.splitlines()}
    accuracy = np.mean([p == t for p, t in zip(predicted[1:], truth, strict=True)])
    assert metrics["accuracy"] == pytest.approx(accuracy)
    assert 0.0 < metrics["log_loss"] < np.log(4)


def test_multinomial_probabilities_are_the_softmax(tmp_path):
    X, y = _data(k=3)
    result = fastgd.fit(X, y, loss="log_loss", multiclass="multinomial", **CONSTANT)
    path = fastgd.save(result, tmp_path / "soft.npz")
    model = fastgd.load(path)
    scores = X @ result.coef.T + result.intercept
    expected = np.exp(scores - scores.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(model.predict_proba(X), expected, rtol=1e-10)
    ovr = fastgd.load(fastgd.save(fastgd.fit(X, y, loss="log_loss", **CONSTANT),
                                  tmp_path / "ovr.npz"))  # fmt: skip
    assert ovr.multiclass == "ovr"
    positive = 1.0 / (1.0 + np.exp(-(X @ ovr.coef.T + ovr.intercept)))
    np.testing.assert_allclose(
        ovr.predict_proba(X), positive / positive.sum(axis=1, keepdims=True), rtol=1e-10
    )


def _rewrite_metadata(source, target, change) -> None:
    with zipfile.ZipFile(source) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    metadata = json.loads(members["metadata.json"])
    change(metadata)
    members["metadata.json"] = json.dumps(metadata).encode()
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda m: m.update(multiclass="softmax"), "multiclass is 'softmax'"),
        (lambda m: m.update(multiclass=3), "the field 'multiclass' must be a string or null"),
        (lambda m: m.update(loss="hinge"), "softmax model of loss='log_loss'"),
    ],
)
def test_a_corrupt_k_output_model_is_refused(tmp_path, change, words):
    X, y = _data(k=3)
    result = fastgd.fit(X, y, loss="log_loss", multiclass="multinomial", **CONSTANT)
    good = fastgd.save(result, tmp_path / "good.npz")
    bad = tmp_path / "bad.npz"
    _rewrite_metadata(good, bad, change)
    with pytest.raises(ModelFormatError, match="not a valid fastgd model") as caught:
        fastgd.load(bad)
    assert words in str(caught.value)


def test_a_k_class_model_with_too_few_weight_vectors_is_refused(tmp_path):
    X, y = _data(k=3)
    result = fastgd.fit(X, y, loss="log_loss", **CONSTANT)
    good = fastgd.save(result, tmp_path / "good.npz")
    with zipfile.ZipFile(good) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    classes = np.lib.format.read_array(io.BytesIO(members["classes.npy"]))
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.append(classes, 7))
    members["classes.npy"] = buffer.getvalue()
    bad = tmp_path / "bad.npz"
    with zipfile.ZipFile(bad, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(ModelFormatError, match="4 classes need one weight vector each"):
        fastgd.load(bad)


def test_what_k_classes_from_a_csv_do_not_run_is_refused(tmp_path, text_csv):
    with pytest.raises(ValueError, match="strategy='full' is not supported here"):
        fastgd.fit_csv(text_csv, target="animal", loss="log_loss", strategy="full")


def test_k_classes_stop_early_on_the_held_out_accuracy(text_csv):
    """validation_fraction: the held-out rows' accuracy of the largest score after each
    epoch, and tol stops on it (as for one output)."""
    settings = dict(target="animal", loss="log_loss", random_state=0, max_iter=60)
    result = fastgd.fit_csv(text_csv, validation_fraction=0.25, tol=0.5, n_iter_no_change=2,
                            **settings)  # fmt: skip
    scores = result.validation_scores
    assert scores.shape == (result.n_iter,) and result.n_iter == 3  # no 0.5 gain: 1 + 2
    assert 0.7 < scores.max() <= 1.0
    # without tol every epoch runs, each with its held-out score; the rows are held out
    held_out = fastgd.fit_csv(text_csv, validation_fraction=0.25, tol=None, max_iter=2,
                              target="animal", loss="log_loss", random_state=0)  # fmt: skip
    assert held_out.validation_scores.shape == (2,)
    assert held_out.extras["validation_rows"] > 0


def _train_then_resume(tmp_path, data, target, flags, first: int, then: int):
    """Train ``first`` epochs then --resume ``then`` more, and train ``first + then`` in
    one run: the two models."""
    split, whole = tmp_path / "split.npz", tmp_path / "whole.npz"
    common = ["train", data, "--target", target, *flags, "--random-state", "3", "--quiet"]
    assert _run([*common, "--model", split, "--epochs", first])[0] == 0
    resume = ["train", data, "--model", split, "--resume", "--epochs", then, "--quiet"]
    assert _run(resume)[0] == 0
    assert _run([*common, "--model", whole, "--epochs", first + then])[0] == 0
    return fastgd.load(split), fastgd.load(whole)


@pytest.mark.parametrize("multiclass", ["ovr", "multinomial"])
def test_k_classes_resume_equals_the_uninterrupted_run(tmp_path, text_csv, multiclass):
    """--resume continues k weight vectors (text features: CSR rows), their step counter
    and the row orders: 2 epochs then 3 resumed are the 5 of one run."""
    flags = ["--loss", "log_loss", "--multiclass", multiclass, "--learning-rate", "constant",
             "--eta0", "0.05", "--tol", "none"]  # fmt: skip
    resumed, whole = _train_then_resume(tmp_path, text_csv, "animal", flags, 2, 3)
    assert resumed.coef.shape == whole.coef.shape == (4, resumed.coef.shape[1])
    np.testing.assert_allclose(resumed.coef, whole.coef, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(resumed.intercept, whole.intercept, rtol=1e-12, atol=1e-14)
    assert resumed.summary["epochs"] == 5 and resumed.summary["t"] == whole.summary["t"]
    np.testing.assert_allclose(
        resumed.summary["loss_history"], whole.summary["loss_history"], rtol=1e-12
    )


def test_k_classes_resume_continues_the_optimizers_state(tmp_path):
    """Adam's moments of every class are kept in the model file and carried on."""
    X, y = _data(k=3)
    path = tmp_path / "three.csv"
    _write_numeric(path, X, y)
    flags = ["--loss", "log_loss", "--optimizer", "adam", "--learning-rate", "constant",
             "--eta0", "0.01", "--tol", "none", "--strategy", "minibatch",
             "--batch-size", "16"]  # fmt: skip
    resumed, whole = _train_then_resume(tmp_path, path, "label", flags, 2, 2)
    assert resumed.rule_state.optimizer == "adam" and resumed.rule_state.slots.shape[0] == 3
    np.testing.assert_allclose(resumed.rule_state.slots, whole.rule_state.slots, rtol=1e-12)
    np.testing.assert_allclose(resumed.coef, whole.coef, rtol=1e-12, atol=1e-14)


def test_an_estimators_softmax_model_round_trips(tmp_path):
    X, y = _data(k=3)
    estimator = fastgd.SGDClassifier(loss="log_loss", multiclass="multinomial", max_iter=5,
                                     tol=None, random_state=0).fit(X, y)  # fmt: skip
    model = fastgd.load(fastgd.save(estimator, tmp_path / "soft.npz"))
    assert model.multiclass == "multinomial" and model.coef.shape == (3, 3)
    np.testing.assert_allclose(model.predict_proba(X), estimator.predict_proba(X), rtol=1e-10)
    np.testing.assert_array_equal(model.predict(X), estimator.predict(X))


def test_train_numeric_labels_and_predict_from_the_cli(tmp_path):
    X, y = _data(k=3)
    data = tmp_path / "three.csv"
    _write_numeric(data, X, y + 10)
    model_path = tmp_path / "three.npz"
    code, _ = _run(["train", data, "--target", "label", "--loss", "hinge", "--epochs", "5",
                    "--model", model_path, "--quiet"])  # fmt: skip
    assert code == 0
    model = fastgd.load(model_path)
    assert model.classes.tolist() == [10, 11, 12] and model.multiclass == "ovr"
    code, out = _run(["predict", model_path, data, "--quiet"])
    assert code == 0
    predicted = np.array([float(v) for v in out.splitlines()[1:]])
    np.testing.assert_array_equal(predicted, model.predict(X))
    assert np.mean(predicted == y + 10) > 0.8
    code, out = _run(["predict", model_path, data, "--proba"])
    assert code == 2  # hinge gives no probabilities: a usage error
    code, out = _run(["evaluate", model_path, data, "--quiet"])
    assert code == 0
    accuracy = float(out.split("accuracy")[1].split()[0])
    assert accuracy == pytest.approx(np.mean(predicted == y + 10))


def test_the_playgrounds_reader_keeps_two_classes(tmp_path, text_csv):
    from fastgd.io.csv import CsvError
    from fastgd.stream import read_whole

    with pytest.raises(CsvError, match=r"holds 4: \['bird', 'cat', 'dog', 'fish'\]"):
        read_whole(text_csv, target="animal", loss="log_loss")
