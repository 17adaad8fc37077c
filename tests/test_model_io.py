"""fastgd.save / fastgd.load: round trips give identical predictions, the file is a plain
numpy archive (no pickle), writes are atomic, versions and feature names are checked."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest

import fastgd
from fastgd.io import model as model_io


def problem(n=300, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * [1.0, 10.0, 0.1][:d] + [0.0, 5.0, -2.0][:d]
    y = X @ np.arange(1.0, d + 1) + 1.0 + 0.1 * rng.standard_normal(n)
    return X, y


def write_csv(path, X, y, names):
    lines = [",".join([*names, "y"])]
    lines += [
        ",".join(repr(float(v)) for v in [*row, target]) for row, target in zip(X, y, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_fit_result_round_trip(tmp_path):
    X, y = problem()
    result = fastgd.fit(X, y, random_state=0, max_iter=5)
    path = fastgd.save(
        result, tmp_path / "m.npz", feature_names=["a", "b", "c"], options={"max_iter": 5}
    )
    model = fastgd.load(path)
    assert isinstance(model, fastgd.Model)
    np.testing.assert_array_equal(model.predict(X), result.predict(X))
    np.testing.assert_array_equal(model.coef, result.coef)
    assert model.feature_names == ["a", "b", "c"]
    assert model.options == {"max_iter": 5}
    assert model.summary["epochs"] == result.n_iter
    assert model.summary["t"] == result.t
    np.testing.assert_array_equal(model.summary["loss_history"], result.loss_history)
    assert model.version == fastgd.__version__ and model.scaler is None


def test_classification_fit_result_keeps_labels(tmp_path):
    X, y = problem()
    labels = np.where(y > 1.0, 7, 3)
    result = fastgd.fit(X, labels, loss="log_loss", random_state=0, max_iter=5)
    model = fastgd.load(fastgd.save(result, tmp_path / "c.npz"))
    np.testing.assert_array_equal(model.predict(X), result.predict(X))
    assert set(model.predict(X)) <= {3, 7}
    proba = model.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_fit_csv_round_trip_with_standardize(tmp_path):
    X, y = problem()
    csv = write_csv(tmp_path / "d.csv", X, y, ["a", "b", "c"])
    result = fastgd.fit_csv(csv, target="y", standardize=True, random_state=0, max_iter=5,
                            block_rows=64)  # fmt: skip
    path = fastgd.save(result, tmp_path / "m.npz")
    model = fastgd.load(path)
    assert model.feature_names == ["a", "b", "c"] and model.target == "y"
    assert model.scaler is not None and model.summary["rows"] == 300
    np.testing.assert_array_equal(model.scaler["mean"], result.extras["scaler"]["mean"])
    # the weights are stored as trained; folding the scaler in gives fit_csv's raw ones
    raw_coef, raw_intercept = model.raw_weights()
    np.testing.assert_array_equal(raw_coef, result.coef)
    assert raw_intercept == float(result.intercept)
    np.testing.assert_array_equal(model.predict(X), result.predict(X))


@pytest.mark.parametrize("kind", ["regressor", "binary", "multiclass", "multioutput"])
def test_estimator_round_trip(tmp_path, kind):
    X, y = problem()
    if kind == "regressor":
        estimator = fastgd.SGDRegressor(random_state=0, max_iter=5, tol=None).fit(X, y)
    elif kind == "multioutput":
        estimator = fastgd.SGDRegressor(random_state=0, max_iter=5, tol=None)
        estimator.fit(X, np.c_[y, -y])
    elif kind == "binary":
        estimator = fastgd.SGDClassifier(loss="log_loss", random_state=0, max_iter=5, tol=None)
        estimator.fit(X, np.where(y > 1.0, "yes", "no"))
    else:
        estimator = fastgd.SGDClassifier(random_state=0, max_iter=5, tol=None)
        estimator.fit(X, np.digitize(y, [-5.0, 10.0]))
    model = fastgd.load(fastgd.save(estimator, tmp_path / "e.npz"))
    np.testing.assert_array_equal(model.predict(X), estimator.predict(X))
    if hasattr(estimator, "decision_function"):
        np.testing.assert_array_equal(model.decision_function(X), estimator.decision_function(X))
    if kind == "binary":
        np.testing.assert_array_equal(model.predict_proba(X), estimator.predict_proba(X))
        assert model.classes.tolist() == ["no", "yes"]
    assert model.summary["t"] == estimator.t_
    assert model.options["random_state"] == 0


def test_float32_model_keeps_its_dtype(tmp_path):
    X, y = problem()
    X32 = X.astype(np.float32)
    result = fastgd.fit(X32, y, random_state=0, max_iter=3)
    model = fastgd.load(fastgd.save(result, tmp_path / "m.npz"))
    assert model.coef.dtype == np.float32
    np.testing.assert_array_equal(model.predict(X32), result.predict(X32))


def test_the_file_is_a_plain_numpy_archive(tmp_path):
    X, y = problem()
    path = fastgd.save(fastgd.fit(X, y, random_state=0, max_iter=2), tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as archive:
        assert {"coef", "intercept", "loss_history", "metadata.json"} <= set(archive.files)
        metadata = json.loads(bytes(archive["metadata.json"]))
        assert archive["coef"].shape == (3,)
    assert metadata["format"] == "fastgd-model"
    assert metadata["format_version"] == "1.3"  # 1.1: encoding; 1.2: rule state; 1.3: multiclass
    assert metadata["encoding"] is None
    assert metadata["fastgd_version"] == fastgd.__version__
    assert metadata["summary"]["epochs"] == 2


def test_write_is_atomic_when_the_rename_fails(tmp_path, monkeypatch):
    X, y = problem()
    path = tmp_path / "m.npz"
    fastgd.save(fastgd.fit(X, y, random_state=0, max_iter=2), path)
    before = path.read_bytes()

    def broken_replace(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        fastgd.save(fastgd.fit(X, 2 * y, random_state=1, max_iter=3), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


def test_write_is_atomic_when_interrupted_midway(tmp_path, monkeypatch):
    X, y = problem()
    path = tmp_path / "m.npz"
    fastgd.save(fastgd.fit(X, y, random_state=0, max_iter=2), path)
    before = path.read_bytes()
    real_write = np.lib.format.write_array
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # after the metadata and the first array
            raise KeyboardInterrupt
        return real_write(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fastgd.save(fastgd.fit(X, 2 * y, random_state=1, max_iter=3), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]
    assert fastgd.load(path).summary["epochs"] == 2


def rewrite_metadata(path, change):
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    metadata = json.loads(members["metadata.json"])
    change(metadata)
    members["metadata.json"] = json.dumps(metadata).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def test_a_newer_major_version_is_refused_and_a_newer_minor_read(tmp_path):
    X, y = problem()
    path = fastgd.save(fastgd.fit(X, y, random_state=0, max_iter=2), tmp_path / "m.npz")
    rewrite_metadata(path, lambda m: m.update(format_version="1.7", future_key=1))
    assert fastgd.load(path).format_version == (1, 7)
    rewrite_metadata(path, lambda m: m.update(format_version="2.0", fastgd_version="9.0"))
    with pytest.raises(model_io.ModelFormatError, match=r"format version 2\.0.*upgrade"):
        fastgd.load(path)


def test_files_that_are_not_models_are_named(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(
        model_io.ModelFormatError, match=r"notes\.txt: not a valid fastgd model: not a zip"
    ):
        fastgd.load(text)
    other = tmp_path / "arrays.npz"
    np.savez(other, a=np.arange(3))
    with pytest.raises(
        model_io.ModelFormatError,
        match=r"arrays\.npz: not a valid fastgd model: .*metadata\.json is missing",
    ):
        fastgd.load(other)
    with pytest.raises(FileNotFoundError, match=r"missing\.npz"):
        fastgd.load(tmp_path / "missing.npz")


def test_feature_names_are_checked(tmp_path):
    X, y = problem()
    result = fastgd.fit(X, y, random_state=0, max_iter=2)
    model = fastgd.load(fastgd.save(result, tmp_path / "m.npz", feature_names=["a", "b", "c"]))
    model.check_features(["a", "b", "c"])
    with pytest.raises(ValueError, match=r"missing 'c'"):
        model.check_features(["a", "b"])
    with pytest.raises(ValueError, match=r"not in the model 'd'"):
        model.check_features(["a", "b", "c", "d"])
    with pytest.raises(ValueError, match=r"another order.*'b'"):
        model.check_features(["a", "c", "b"])
    with pytest.raises(ValueError, match="fitted with 3"):
        model.predict(X[:, :2])


def test_save_rejects_other_objects(tmp_path):
    with pytest.raises(TypeError, match="save takes"):
        fastgd.save(object(), tmp_path / "m.npz")
    with pytest.raises(ValueError, match="not fitted"):
        fastgd.save(fastgd.SGDRegressor(), tmp_path / "m.npz")
