"""fastgd.load checks every model file: damaged archives, wrong dtypes, shapes and metadata,
non-finite weights, unknown losses and kinds all give ModelFormatError naming the path and
what is wrong; nothing else escapes, and a model that loads predicts finite values."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

import fastgd
from fastgd.io.model import Model, ModelFormatError

NAMES = ["a", "b", "c"]


def base_models() -> dict[str, Model]:
    """One model of each shape, built directly (no fitting needed)."""
    scaler = {"mean": np.array([0.0, 5.0, -2.0]), "scale": np.array([1.0, 10.0, 0.1])}
    history = {"loss_history": np.array([3.0, 2.0, 1.5])}
    return {
        "regressor": Model(
            [1.0, 2.0, 3.0], 0.5, loss="squared_error", feature_names=NAMES, target="y",
            scaler=scaler, summary=history,
        ),
        "binary": Model(
            [0.5, -1.0, 2.0], -0.25, loss="log_loss", classes=np.array(["no", "yes"]),
            feature_names=NAMES, summary=history,
        ),
        "multiclass": Model(
            np.arange(9.0).reshape(3, 3) - 4.0, [0.0, 1.0, -1.0], loss="hinge",
            classes=np.array([0, 1, 2]), feature_names=NAMES, scaler=scaler,
        ),
        "multioutput": Model(
            np.ones((2, 3), dtype=np.float32), [1.0, 2.0], loss="huber", kind="regressor",
        ),
    }  # fmt: skip


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, bytes]:
    """The bytes of each base model's file."""
    folder = tmp_path_factory.mktemp("models")
    return {
        kind: fastgd.save(model, folder / f"{kind}.npz").read_bytes()
        for kind, model in base_models().items()
    }


def npy(array, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=allow_pickle)
    return buffer.getvalue()


def edited(path, data: bytes, edit) -> None:
    """Write ``data`` (a model file) to ``path`` with ``edit(members, metadata)`` applied:
    ``members`` maps member names to bytes, ``metadata`` is the parsed metadata.json."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    metadata = json.loads(members["metadata.json"])
    original = members.get("metadata.json")
    edit(members, metadata)
    if "metadata.json" in members and members["metadata.json"] is original:
        members["metadata.json"] = json.dumps(metadata).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, member in members.items():
            archive.writestr(name, member)


def set_array(name, value):
    def edit(members, metadata):
        members[f"{name}.npy"] = npy(value)

    return edit


def set_field(field, value):
    def edit(members, metadata):
        metadata[field] = value

    return edit


def drop(*names):
    def edit(members, metadata):
        for name in names:
            members.pop(name)

    return edit


def set_coef(value):
    """A new coef.npy with metadata that agrees with its shape and dtype, so the check that
    fires is the one on its values or on the other members."""
    value = np.asarray(value)

    def edit(members, metadata):
        members["coef.npy"] = npy(value)
        metadata["coef_shape"] = list(value.shape)
        metadata["dtype"] = value.dtype.name

    return edit


def drop_loss_field(members, metadata):
    del metadata["loss"]


# (base model, edit, what the message must say)
BAD_FILES = {
    "nan coef": ("regressor", set_coef([1.0, np.nan, 3.0]), r"coef holds 1 non-finite .* 1\."),
    "inf coef": ("binary", set_coef([np.inf, 1.0, -np.inf]), r"coef holds 2 non-finite"),
    "nan in a class's coef": (
        "multiclass",
        set_coef(np.where(np.eye(3) > 0, np.nan, 1.0)),
        r"coef holds 3 non-finite .* index \(0, 0\)",
    ),
    "string coef": ("regressor", set_array("coef", ["1", "2", "3"]), r"coef\.npy holds strings"),
    "bool coef": ("regressor", set_array("coef", [True, False, True]), r"coef\.npy holds bool"),
    "complex coef": ("regressor", set_array("coef", [1j, 2.0, 3.0]), r"coef\.npy holds complex"),
    "integer coef": ("regressor", set_array("coef", [1, 2, 3]), r"coef\.npy holds integers"),
    "object coef": (
        "regressor",
        lambda members, metadata: members.update(
            {"coef.npy": npy(np.array([1.0, "x", None], dtype=object), allow_pickle=True)}
        ),
        r"coef\.npy holds object values.*never Python objects",
    ),
    "nan intercept": ("regressor", set_array("intercept", np.nan), r"intercept holds 1 non-fin"),
    "string intercept": ("binary", set_array("intercept", "0"), r"intercept\.npy holds strings"),
    "inf scaler mean": (
        "regressor",
        set_array("scaler_mean", [0.0, np.inf, 1.0]),
        r"scaler_mean holds 1 non-finite",
    ),
    "zero scale": ("regressor", set_array("scaler_scale", [1.0, 0.0, 1.0]), r"scaler_scale must"),
    "overflowing scale": (
        "regressor",
        set_array("scaler_scale", [1.0, 1e-320, 1.0]),
        r"coef / scaler_scale overflows",
    ),
    "nan class label": ("binary", set_array("classes", [0.0, np.nan]), r"classes holds 1 non-fin"),
    "complex class labels": ("binary", set_array("classes", [1j, 2j]), r"classes\.npy holds com"),
    "repeated class": ("binary", set_array("classes", ["no", "no"]), r"same label twice"),
    "one class": ("binary", set_array("classes", ["no"]), r"two labels or more"),
    "unsorted classes": ("multiclass", set_array("classes", [2, 0, 1]), r"must be sorted"),
    "unknown loss": ("regressor", set_field("loss", "nonsense"), r"loss 'nonsense' is not one"),
    "numeric loss": ("regressor", set_field("loss", 4), r"field 'loss' must be a string; got a"),
    "unknown kind": ("regressor", set_field("kind", "ranker"), r"kind 'ranker' is not one of"),
    "classifier loss for a regressor": (
        "regressor",
        set_field("loss", "hinge"),
        r"regressor with the classification loss 'hinge'",
    ),
    "regressor with classes": (
        "regressor",
        set_array("classes", [0, 1]),
        r"regressor with class labels",
    ),
    "coef shape unlike the metadata": (
        "regressor",
        set_array("coef", [1.0, 2.0]),
        r"coef\.npy is float64 of shape \[2\]; metadata\.json says float64 of shape \[3\]",
    ),
    "coef dtype unlike the metadata": (
        "regressor",
        set_field("dtype", "float32"),
        r"coef\.npy is float64.*says float32",
    ),
    "3-d coef": ("regressor", set_coef(np.ones((1, 1, 3))), r"'coef_shape' must list one or two"),
    "two intercepts for one vector": (
        "regressor",
        set_array("intercept", [1.0, 2.0]),
        r"intercept has 2 value",
    ),
    "intercept matrix": ("multioutput", set_array("intercept", [[1.0, 2.0]]), r"expected \(\) or"),
    "three classes for one vector": (
        "binary",
        set_array("classes", ["a", "b", "c"]),
        r"3 classes need one weight vector each; coef has shape \(3,\)",
    ),
    "two classes for three vectors": (
        "multiclass",
        set_array("classes", [0, 1]),
        r"binary classifier needs one weight vector; coef has \(3, 3\)",
    ),
    "scaler of the wrong length": (
        "regressor",
        set_array("scaler_mean", [0.0, 1.0]),
        r"scaler_mean and scaler_scale need one value per feature \(3\); they have 2 and 3",
    ),
    "too few feature names": (
        "binary",
        set_field("feature_names", ["a", "b"]),
        r"feature_names has 2 names for 3 weights",
    ),
    "repeated feature name": (
        "binary",
        set_field("feature_names", ["a", "b", "a"]),
        r"feature_names holds 'a' twice",
    ),
    "feature names not strings": (
        "binary",
        set_field("feature_names", ["a", 2, "c"]),
        r"'feature_names' must be a list of strings; item 1 is a number",
    ),
    "feature names a string": (
        "binary",
        set_field("feature_names", "abc"),
        r"field 'feature_names' must be a list or null; got a string",
    ),
    "standardized as text": (
        "regressor",
        set_field("standardized", "yes"),
        r"field 'standardized' must be true or false; got a string",
    ),
    "options a list": ("regressor", set_field("options", [1]), r"field 'options' must be an obj"),
    "missing loss field": ("regressor", drop_loss_field, r"the field 'loss' is missing"),
    "missing coef": ("regressor", drop("coef.npy"), r"the member coef\.npy is missing"),
    "missing intercept": ("binary", drop("intercept.npy"), r"the member intercept\.npy is miss"),
    "missing classes": ("binary", drop("classes.npy"), r"the member classes\.npy is missing"),
    "missing scale": ("regressor", drop("scaler_scale.npy"), r"member scaler_scale\.npy is mis"),
    "scaler of an unscaled model": (
        "regressor",
        set_field("standardized", False),
        r"scaler_mean\.npy is present but metadata\.json says 'standardized': false",
    ),
    "missing metadata": ("regressor", drop("metadata.json"), r"metadata\.json is missing"),
    "metadata not json": (
        "regressor",
        lambda members, metadata: members.update({"metadata.json": b"{'format': 1"}),
        r"metadata\.json is not valid UTF-8 JSON",
    ),
    "metadata not utf-8": (
        "regressor",
        lambda members, metadata: members.update({"metadata.json": b'{"a": "\xff"}'}),
        r"metadata\.json is not valid UTF-8 JSON",
    ),
    "metadata a list": (
        "regressor",
        lambda members, metadata: members.update({"metadata.json": b"[1, 2]"}),
        r"metadata\.json holds a list, not an object",
    ),
    "another format": ("regressor", set_field("format", "onnx"), r"'format' is 'onnx', not 'fast"),
    "newer major version": ("regressor", set_field("format_version", "2.1"), r"2\.1.*upgrade"),
    "older major version": ("regressor", set_field("format_version", "0.9"), r"0\.9 is not one"),
    "garbled version": ("regressor", set_field("format_version", "1.x"), r"expected MAJOR\.MINOR"),
    "numeric version": ("regressor", set_field("format_version", 1.0), r"'format_version' must"),
    "npy header claiming a huge shape": (
        "regressor",
        lambda members, metadata: members.update(
            {"coef.npy": npy([1.0, 2.0, 3.0]).replace(b"(3,)", b"(9999999999999,)", 1)}
        ),
        r"coef\.npy holds \d+ bytes of data; its header .* says 79999999999992\.",
    ),
    "npy garbage": (
        "regressor",
        lambda members, metadata: members.update({"intercept.npy": b"\x93NUMPY\x01\x00garbage"}),
        r"intercept\.npy is not a readable \.npy array",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_model_file_is_refused_naming_what_is_wrong(tmp_path, saved, case):
    kind, edit, expected = BAD_FILES[case]
    path = tmp_path / "bad.npz"
    edited(path, saved[kind], edit)
    with pytest.raises(ModelFormatError, match=r"bad\.npz: not a valid fastgd model: ") as error:
        fastgd.load(path)
    assert error.match(expected)


def test_the_edits_alone_keep_a_model_valid(tmp_path, saved):
    """The rewriting in these tests does not by itself break a file."""
    for kind, data in saved.items():
        path = tmp_path / f"{kind}.npz"
        edited(path, data, lambda members, metadata: None)
        model = fastgd.load(path)
        model.validate()
        assert model.n_features == 3


def test_files_that_are_no_archive(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("x,y\n1,2\n")
    with pytest.raises(
        ModelFormatError, match=r"notes\.txt: not a valid .*not a zip archive"
    ) as error:
        fastgd.load(text)
    assert "allow_pickle" not in str(error.value)  # numpy's advice does not apply
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(ModelFormatError, match=r"empty\.npz: not a valid .*an empty file"):
        fastgd.load(empty)
    single = tmp_path / "single.npy"
    np.save(single, np.arange(3.0))
    with pytest.raises(ModelFormatError, match=r"single\.npy: not a valid .*not a zip archive"):
        fastgd.load(single)
    with pytest.raises(FileNotFoundError, match=r"missing\.npz: no such model file"):
        fastgd.load(tmp_path / "missing.npz")
    with pytest.raises(OSError, match=r"cannot open the model file") as error:
        fastgd.load(tmp_path)
    assert not isinstance(error.value, ModelFormatError)


def test_a_damaged_member_is_named(tmp_path, saved):
    data = bytearray(saved["regressor"])
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        info = archive.getinfo("coef.npy")
    # the local header: 30 bytes, the name, the extra field; then the compressed data
    start = info.header_offset + 30 + len(info.filename)
    start += int.from_bytes(data[info.header_offset + 28 : info.header_offset + 30], "little")
    data[start + info.compress_size // 2] ^= 0x10
    path = tmp_path / "damaged.npz"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match=r"damaged\.npz: .*the member coef\.npy is damaged"):
        fastgd.load(path)


def loads_or_refuses(path, X, predicted: set) -> bool:
    """True when ``path`` loads as a valid model predicting finite values on ``X``, False
    when load refuses it with ModelFormatError; any other exception fails the test.
    ``predicted`` remembers the models already run on ``X`` (most damage that loads is in
    timestamps or attributes and leaves the model as it was; predicting costs a kernel
    call)."""
    try:
        model = fastgd.load(path)
    except ModelFormatError as error:
        assert str(error).startswith(f"{path}: not a valid fastgd model: ")
        return False
    model.validate()
    contents = (model.kind, model.loss, *(a.tobytes() for a in model.arrays().values()))
    if contents not in predicted:
        predicted.add(contents)
        assert np.isfinite(model.decision_function(X)).all()
        if model.kind == "classifier":
            assert set(model.predict(X).tolist()) <= set(model.classes.tolist())
    return True


@pytest.fixture(scope="module")
def rows():
    return np.random.default_rng(0).standard_normal((16, 3))


def test_truncations_are_refused(tmp_path, saved, rows):
    """Every third length, and every one in the last 64 bytes (the zip's directory)."""
    data = saved["multiclass"]
    path = tmp_path / "cut.npz"
    for length in sorted({*range(0, len(data), 3), *range(len(data) - 64, len(data))}):
        path.write_bytes(data[:length])
        assert not loads_or_refuses(path, rows, set()), f"a file cut to {length} bytes loaded"


def test_single_bit_flips_are_refused_or_harmless(tmp_path, saved, rows):
    data = saved["binary"]
    path = tmp_path / "flipped.npz"
    loaded, predicted = 0, set()
    for position in range(len(data)):
        damaged = bytearray(data)
        damaged[position] ^= 1 << (position % 8)
        path.write_bytes(bytes(damaged))
        loaded += loads_or_refuses(path, rows, predicted)
    # flips in timestamps and attributes are harmless; those in the data are caught (CRC)
    assert 0 < loaded < len(data)


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One to three random flips, truncations, insertions or deletions."""
    data = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        position = int(rng.integers(0, max(1, len(data))))
        action = rng.integers(0, 4)
        if action == 0 and data:
            data[position] ^= int(rng.integers(1, 256))
        elif action == 1:
            data = data[:position]
        elif action == 2:
            data[position:position] = rng.bytes(int(rng.integers(1, 9)))
        else:
            del data[position : position + int(rng.integers(1, 9))]
    return bytes(data)


@pytest.mark.parametrize("kind", ["regressor", "binary", "multiclass", "multioutput"])
def test_fuzzed_model_files_load_valid_or_are_refused(tmp_path, saved, rows, kind):
    """~300 seeded byte mutations in all: load gives a valid model or ModelFormatError."""
    rng = np.random.default_rng(list(saved).index(kind))
    path, predicted = tmp_path / "fuzzed.npz", set()
    for _ in range(75):
        path.write_bytes(mutate(saved[kind], rng))
        loads_or_refuses(path, rows, predicted)


def test_a_model_without_feature_names_needs_as_many_columns(tmp_path, saved):
    path = tmp_path / "m.npz"
    path.write_bytes(saved["multioutput"])
    model = fastgd.load(path)
    assert model.feature_names is None
    model.check_feature_count(3)
    model.check_features(["x", "y", "z"])
    expected = (
        r"the model has 3 features but the data has 5 columns; the model was saved without "
        r"feature names, so columns are taken in order and the counts must match\."
    )
    with pytest.raises(ValueError, match=expected):
        model.check_feature_count(5)
    with pytest.raises(ValueError, match=expected):
        model.check_features(["a", "b", "c", "d", "e"])
    named = base_models()["binary"]
    with pytest.raises(ValueError, match=r"has 3 features but the data has 2 columns\.$"):
        named.check_feature_count(2)


def test_a_wide_model_loads_and_checks_its_features(tmp_path):
    """200,000 features: every check is linear (a quadratic one would not finish)."""
    d = 200_000
    names = [f"feature_{i}" for i in range(d)]
    model = Model(np.linspace(-1.0, 1.0, d), 0.0, loss="squared_error", feature_names=names)
    loaded = fastgd.load(fastgd.save(model, tmp_path / "wide.npz"))
    assert loaded.feature_names == names
    loaded.check_features(names)
    renamed = [*names[:-1], "other"]
    with pytest.raises(ValueError, match=r"missing 'feature_199999'; not in the model 'other'"):
        loaded.check_features(renamed)
    with pytest.raises(ValueError, match=r"another order"):
        loaded.check_features(names[::-1])


def test_save_refuses_a_model_load_would_refuse(tmp_path):
    bad = Model([1.0, np.nan], 0.0, loss="squared_error")
    with pytest.raises(ValueError, match=r"cannot save the model to .*m\.npz: coef holds 1 non"):
        fastgd.save(bad, tmp_path / "m.npz")
    unknown_kind = Model([1.0, 2.0], 0.0, loss="squared_error", kind="ranker")
    with pytest.raises(ValueError, match=r"kind 'ranker'"):
        fastgd.save(unknown_kind, tmp_path / "m.npz")
    assert list(tmp_path.iterdir()) == []


def test_valid_label_dtypes_and_unknown_extras_load(tmp_path, saved):
    """Boolean and float labels are labels; unknown members and keys (a later minor
    version's) are ignored."""
    flags = Model([1.0, -1.0], 0.0, loss="hinge", classes=np.array([False, True]))
    loaded = fastgd.load(fastgd.save(flags, tmp_path / "flags.npz"))
    assert loaded.predict(np.array([[2.0, 0.0], [0.0, 2.0]])).tolist() == [True, False]
    path = tmp_path / "later.npz"

    def later(members, metadata):
        members["weights_history.npy"] = npy(np.zeros((2, 3)))
        metadata.update(format_version="1.4", new_field={"x": 1})

    edited(path, saved["regressor"], later)
    assert fastgd.load(path).format_version == (1, 4)
