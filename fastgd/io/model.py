"""Saving and loading models: ``fastgd.save`` / ``fastgd.load``.

The file is a zip archive that ``numpy.load(path, allow_pickle=False)`` reads (the layout
of ``numpy.savez``): the arrays as ``.npy`` members, and one ``metadata.json`` member (plain
UTF-8 JSON; ``np.load`` hands it back as bytes) with everything else. Nothing in it needs
pickle, so a model file is safe to open whoever wrote it, and portable across Python,
numpy and fastgd versions.

Members:

========================  =================================================================
``metadata.json``         format name and version, fastgd version, kind, loss, feature
                          names, target, the fit options, the training summary
``coef.npy``              (d,) or (k, d), in the model's dtype; in the *standardised* space
                          when ``scaler_mean.npy`` is present
``intercept.npy``         () or (k,)
``classes.npy``           the class labels (classifiers)
``scaler_mean.npy``       per-feature means and scales (float64): the model applies
``scaler_scale.npy``      ``(x - mean) / scale`` before ``coef`` (optional)
``loss_history.npy``      the loss curve, one value per epoch
``validation_scores.npy`` the held-out score per epoch (optional)
========================  =================================================================

The format version is ``MAJOR.MINOR``: a reader loads any file of its own major version
(minor versions only add members or metadata keys, which older readers ignore) and refuses
a newer major version with a message saying which fastgd can read it.

Files are written atomically: to a temporary file in the target's directory, flushed to
disk, then renamed over the target (``os.replace``), so a reader (or a crash, or Ctrl-C)
never sees a half-written model.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import signal
import tempfile
import threading
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import engine

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "Model",
    "ModelFormatError",
    "atomic_file",
    "load",
    "save",
]

FORMAT_NAME = "fastgd-model"
#: (major, minor): bump the minor version for additions old readers may ignore, the major
#: version for anything they would misread.
FORMAT_VERSION = (1, 0)
METADATA_MEMBER = "metadata.json"

_PROBA_LOSSES = ("log_loss", "modified_huber")


class ModelFormatError(ValueError):
    """A file that is not a fastgd model, or one written by a newer, incompatible fastgd."""


# ---------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------


def _hold_sigint():
    """Block SIGINT in this (main) thread; the previous mask, or None where not possible."""
    if not hasattr(signal, "pthread_sigmask"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def _release_sigint(held) -> None:
    if held is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


@contextlib.contextmanager
def atomic_file(path, mode: str = "wb", **open_kwargs) -> Iterator[Any]:
    """Open a temporary file next to ``path`` for writing; on success, flush it to disk and
    rename it over ``path`` (``os.replace``); on any error (KeyboardInterrupt included),
    remove it and leave ``path`` as it was."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    # Ctrl-C is held back while mkstemp creates the file (a KeyboardInterrupt inside it
    # would leave the file behind) and arrives inside the try below, which removes it.
    held = _hold_sigint()
    try:
        descriptor, temporary = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=".tmp", dir=directory
        )
    except BaseException:
        _release_sigint(held)
        raise
    try:
        _release_sigint(held)
        with os.fdopen(descriptor, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates the file readable by its owner only; give it the usual mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (POSIX)
        directory_handle = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(directory_handle)
        finally:
            os.close(directory_handle)


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


class Model:
    """A linear model read from (or about to be written to) a model file.

    Attributes
    ----------
    coef : ndarray of shape (n_features,) or (n_outputs, n_features)
        The weights; they apply to the standardised features when ``scaler`` is set.
    intercept : float or ndarray of shape (n_outputs,)
    loss : str
        The loss's name (classification losses predict labels from ``classes``).
    classes : ndarray or None
        The class labels of a classifier (``classes[1]`` is the positive class of a binary
        one).
    feature_names : list of str or None
        The feature columns, in the order of ``coef``.
    target : str or None
        The target column's name, when known.
    scaler : dict or None
        ``{"mean": ndarray, "scale": ndarray}``: the model sees ``(x - mean) / scale``.
    options : dict
        The fit options used (JSON values).
    summary : dict
        The training summary: ``rows``, ``epochs``, ``final_loss``, ``loss_history``,
        ``fit_time``, ``skipped``, ``learning_rate``, ``final_learning_rate``, ``t``,
        ``converged``, ... (whatever was known).
    version : str
        The fastgd version that wrote the file (this one's, for a model not yet saved).
    format_version : tuple of int
    """

    def __init__(
        self,
        coef,
        intercept,
        *,
        loss: str,
        classes=None,
        feature_names: Sequence[str] | None = None,
        target: str | None = None,
        scaler: dict | None = None,
        options: dict | None = None,
        summary: dict | None = None,
        kind: str | None = None,
        version: str | None = None,
        format_version: tuple[int, int] = FORMAT_VERSION,
        created: str | None = None,
    ):
        from .. import options as option_table

        coef = np.asarray(coef)
        if coef.dtype not in (np.float32, np.float64):
            coef = coef.astype(np.float64)
        if coef.ndim == 2 and coef.shape[0] == 1 and classes is not None and len(classes) == 2:
            coef = coef[0]  # a binary classifier: one weight vector
        if coef.ndim not in (1, 2) or coef.shape[-1] == 0:
            raise ValueError(f"coef must have shape (d,) or (k, d); got {coef.shape}.")
        intercept = np.asarray(intercept, dtype=np.float64).reshape(-1)
        outputs = 1 if coef.ndim == 1 else coef.shape[0]
        if intercept.shape[0] != outputs:
            raise ValueError(
                f"intercept has {intercept.shape[0]} values for {outputs} weight vector(s)."
            )
        self.coef = coef
        self.intercept = float(intercept[0]) if coef.ndim == 1 else intercept
        self.loss = str(loss)
        self.classes = None if classes is None else _label_array(classes)
        self.feature_names = None if feature_names is None else [str(n) for n in feature_names]
        if self.feature_names is not None and len(self.feature_names) != self.n_features:
            raise ValueError(
                f"{len(self.feature_names)} feature names for {self.n_features} weights."
            )
        self.target = target
        if scaler is not None:
            mean = np.asarray(scaler["mean"], dtype=np.float64).reshape(-1)
            scale = np.asarray(scaler["scale"], dtype=np.float64).reshape(-1)
            if mean.shape[0] != self.n_features or scale.shape[0] != self.n_features:
                raise ValueError("the scaler's mean and scale need one value per feature.")
            scaler = {"mean": mean, "scale": scale}
        self.scaler = scaler
        self.options = dict(options or {})
        self.summary = dict(summary or {})
        if kind is None:
            classification = option_table.loss_by_name(self.loss).classification
            kind = "classifier" if classification else "regressor"
        self.kind = kind
        if version is None:
            from .. import __version__ as version
        self.version = version
        self.format_version = tuple(format_version)
        self.created = created

    # -- shape
    @property
    def n_features(self) -> int:
        return int(self.coef.shape[-1])

    @property
    def dtype(self) -> np.dtype:
        return self.coef.dtype

    def __repr__(self) -> str:
        shape = "x".join(str(size) for size in self.coef.shape)
        scaled = ", standardised" if self.scaler is not None else ""
        return f"<fastgd Model: {self.kind}, loss={self.loss!r}, coef {shape}{scaled}>"

    # -- the weights in the raw features' space
    def raw_weights(self) -> tuple[np.ndarray, float | np.ndarray]:
        """``(coef, intercept)`` for the raw features, the scaler folded in:
        ``coef_raw = coef / scale``, ``intercept_raw = intercept - coef_raw · mean`` (the
        arithmetic of ``fastgd.fit_csv``, so the results agree to the last bit)."""
        if self.scaler is None:
            return self.coef, self.intercept
        mean, scale = self.scaler["mean"], self.scaler["scale"]
        dtype = self.coef.dtype.type
        rows = np.atleast_2d(self.coef)
        intercepts = np.atleast_1d(np.asarray(self.intercept, dtype=np.float64))
        raw = np.empty(rows.shape, dtype=self.coef.dtype)
        raw_intercepts = np.empty(rows.shape[0], dtype=np.float64)
        for i in range(rows.shape[0]):
            folded = rows[i].astype(np.float64) / scale
            raw_intercepts[i] = dtype(float(intercepts[i]) - float(folded @ mean))
            raw[i] = folded.astype(self.coef.dtype)
        if self.coef.ndim == 1:
            return raw[0], float(raw_intercepts[0])
        return raw, raw_intercepts

    # -- prediction
    def check_features(self, names: Sequence[str]) -> None:
        """Raise ValueError unless ``names`` are the model's feature names, in order; the
        message names the missing, extra or reordered columns."""
        names = [str(name) for name in names]
        if self.feature_names is None:
            if len(names) != self.n_features:
                raise ValueError(
                    f"the data has {len(names)} features; the model was fitted with "
                    f"{self.n_features}."
                )
            return
        if names == self.feature_names:
            return
        missing = [name for name in self.feature_names if name not in names]
        extra = [name for name in names if name not in self.feature_names]
        problems = []
        if missing:
            problems.append(f"missing {_shown(missing)}")
        if extra:
            problems.append(f"not in the model {_shown(extra)}")
        if not problems:
            moved = [a for a, b in zip(names, self.feature_names, strict=False) if a != b]
            problems.append(
                f"the same columns in another order (first out of place: {_shown(moved)}); "
                "select them in the model's order"
            )
        raise ValueError(
            "the data's features do not match the model's: "
            + "; ".join(problems)
            + f". The model's features: {_shown(self.feature_names)}."
        )

    def _scores(self, X) -> np.ndarray:
        """(n, k) decision values, one parallel pass over X per output."""
        from .._kernels.epochs import predict
        from .._validation import check_X

        if hasattr(X, "columns") and self.feature_names is not None:
            self.check_features([str(c) for c in X.columns])
        X = check_X(X)
        if X.shape[1] != self.n_features:
            raise ValueError(
                f"X has {X.shape[1]} features but the model was fitted with {self.n_features}."
            )
        coef, intercept = self.raw_weights()
        rows = np.atleast_2d(coef)
        intercepts = np.atleast_1d(np.asarray(intercept, dtype=np.float64))
        out = np.empty((rows.shape[0], X.shape[0]), dtype=X.dtype)
        for i in range(rows.shape[0]):
            weights = np.ascontiguousarray(rows[i].astype(X.dtype, copy=False))
            predict(X, weights, float(intercepts[i]), out[i])
        return out.T

    def decision_function(self, X) -> np.ndarray:
        """``X·coef + intercept`` (the scaler applied): shape (n,), or (n, k) for k outputs
        or classes."""
        scores = self._scores(X)
        return scores[:, 0] if self.coef.ndim == 1 else scores

    def predict(self, X) -> np.ndarray:
        """Predicted targets, or labels from ``classes`` for a classifier."""
        scores = self.decision_function(X)
        if self.kind != "classifier" or self.classes is None:
            return scores
        if scores.ndim == 1:
            return self.classes[(scores > 0).astype(int)]
        return self.classes[scores.argmax(axis=1)]

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (n, n_classes) for ``log_loss`` (logistic function) and
        ``modified_huber`` models, as the estimators compute them."""
        if self.kind != "classifier" or self.loss not in _PROBA_LOSSES:
            raise AttributeError(
                f"probability estimates are not available for loss={self.loss!r}; they need "
                "a classifier trained with loss='log_loss' or 'modified_huber'."
            )
        return engine.class_probabilities(self._scores(X), self.loss)

    # -- file contents
    def metadata(self) -> dict:
        """The JSON metadata as written to the file."""
        return {
            "format": FORMAT_NAME,
            "format_version": f"{self.format_version[0]}.{self.format_version[1]}",
            "fastgd_version": self.version,
            "created": self.created,
            "kind": self.kind,
            "loss": self.loss,
            "dtype": self.coef.dtype.name,
            "coef_shape": list(self.coef.shape),
            "feature_names": self.feature_names,
            "target": self.target,
            "standardized": self.scaler is not None,
            "options": _json_safe(self.options),
            "summary": _json_safe(
                {k: v for k, v in self.summary.items() if k not in _SUMMARY_ARRAYS}
            ),
        }

    def arrays(self) -> dict[str, np.ndarray]:
        arrays = {
            "coef": np.ascontiguousarray(self.coef),
            "intercept": np.asarray(self.intercept, dtype=np.float64),
        }
        if self.classes is not None:
            arrays["classes"] = self.classes
        if self.scaler is not None:
            arrays["scaler_mean"] = self.scaler["mean"]
            arrays["scaler_scale"] = self.scaler["scale"]
        for name in _SUMMARY_ARRAYS:
            value = self.summary.get(name)
            if value is not None:
                arrays[name] = np.asarray(value, dtype=np.float64).reshape(-1)
        return arrays


#: Summary entries stored as arrays (members of their own), not in the JSON.
_SUMMARY_ARRAYS = ("loss_history", "validation_scores")


def _shown(names: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(repr(name) for name in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _label_array(classes) -> np.ndarray:
    labels = np.asarray(classes)
    if labels.dtype.kind == "O":
        if all(isinstance(label, str) for label in labels.tolist()):
            return labels.astype(str)
        raise TypeError(
            "class labels must be numbers or strings to be saved without pickle; got "
            f"{labels.tolist()[:5]!r}."
        )
    if labels.dtype.kind not in "biufUS":
        raise TypeError(f"cannot save class labels of dtype {labels.dtype}.")
    return labels


def _json_safe(value):
    """Options and summaries as JSON values: numpy scalars and arrays become numbers and
    lists, non-finite floats strings ("nan", "inf"), anything else its repr."""
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return repr(value)


# ---------------------------------------------------------------------------------------------
# From fitted objects
# ---------------------------------------------------------------------------------------------


def _from_fit_result(result, feature_names, target, options, summary) -> Model:
    extras = dict(result.extras or {})
    scaler = extras.get("scaler")
    coef, intercept = result.coef, result.intercept
    if scaler is not None and "standardized_coef" in extras:
        # Keep the weights as trained and the scaler beside them (folded in at predict time
        # exactly as fit_csv folds them).
        coef, intercept = extras["standardized_coef"], extras["standardized_intercept"]
    elif scaler is not None:
        scaler = None  # the coefficients already apply to the raw features
    history = np.asarray(result.loss_history, dtype=np.float64)
    base = {
        "rows": extras.get("rows"),
        "epochs": int(result.n_iter),
        "final_loss": float(history[-1]) if history.shape[0] else None,
        "loss_history": history,
        "fit_time": float(result.fit_time),
        "skipped": extras.get("skipped", {}),
        "skipped_lines": extras.get("skipped_lines", []),
        "learning_rate": float(result.learning_rate),
        "final_learning_rate": extras.get("final_learning_rate"),
        "auto_backtracks": extras.get("auto_backtracks"),
        "t": float(result.t),
        "converged": bool(result.converged),
        "classes": None if result.classes is None else np.asarray(result.classes).tolist(),
        "validation_scores": result.validation_scores,
    }
    return Model(
        coef,
        intercept,
        loss=result.loss,
        classes=result.classes,
        feature_names=feature_names if feature_names is not None else extras.get("feature_names"),
        target=target if target is not None else extras.get("target"),
        scaler=scaler,
        options=options,
        summary={**base, **(summary or {})},
    )


def _from_estimator(estimator, feature_names, target, options, summary) -> Model:
    if not hasattr(estimator, "coef_"):
        raise ValueError(f"{type(estimator).__name__} is not fitted yet; call fit first.")
    coef = estimator.coef_
    if hasattr(coef, "toarray"):  # sparsified
        coef = coef.toarray()
    classes = getattr(estimator, "classes_", None)
    if feature_names is None and hasattr(estimator, "feature_names_in_"):
        feature_names = [str(name) for name in estimator.feature_names_in_]
    params = estimator.get_params(deep=False)
    curve = np.asarray(getattr(estimator, "loss_curve_", []), dtype=np.float64)
    base = {
        "epochs": int(estimator.n_iter_),
        "final_loss": float(curve[-1]) if curve.shape[0] else None,
        "loss_history": curve,
        "t": float(estimator.t_),
        "converged": bool(getattr(estimator, "_converged", False)),
        "classes": None if classes is None else np.asarray(classes).tolist(),
        "estimator": type(estimator).__name__,
    }
    return Model(
        coef,
        estimator.intercept_,
        loss=estimator.loss,
        classes=classes,
        feature_names=feature_names,
        target=target,
        options={**params, **(options or {})},
        summary={**base, **(summary or {})},
        kind="classifier" if classes is not None else "regressor",
    )


def as_model(model, *, feature_names=None, target=None, options=None, summary=None) -> Model:
    """A :class:`Model` from a FitResult, a fitted fastgd estimator, or a Model (then the
    keyword arguments replace its fields)."""
    from ..engine import FitResult

    if isinstance(model, Model):
        if feature_names is not None or target is not None or options or summary:
            model = Model(
                model.coef, model.intercept, loss=model.loss, classes=model.classes,
                feature_names=model.feature_names if feature_names is None else feature_names,
                target=model.target if target is None else target, scaler=model.scaler,
                options={**model.options, **(options or {})},
                summary={**model.summary, **(summary or {})}, kind=model.kind,
            )  # fmt: skip
        return model
    if isinstance(model, FitResult):
        return _from_fit_result(model, feature_names, target, options, summary)
    module = type(model).__module__ or ""
    if module.startswith("fastgd") and hasattr(model, "get_params"):
        return _from_estimator(model, feature_names, target, options, summary)
    raise TypeError(
        "save takes a fastgd.FitResult (from fastgd.fit or fastgd.fit_csv), a fitted "
        f"fastgd.SGDRegressor/SGDClassifier, or a fastgd.io.model.Model; got "
        f"{type(model).__name__}."
    )


# ---------------------------------------------------------------------------------------------
# save / load
# ---------------------------------------------------------------------------------------------


def _write_members(handle, model: Model) -> None:
    metadata = model.metadata()
    with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(METADATA_MEMBER, json.dumps(metadata, indent=1, sort_keys=False))
        for name, array in model.arrays().items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)


def save(model, path, *, feature_names=None, target=None, options=None, summary=None) -> Path:
    """Write a model to ``path`` (atomically) and return the path.

    Parameters
    ----------
    model : FitResult, fitted SGDRegressor/SGDClassifier, or Model
        ``fastgd.fit``'s or ``fastgd.fit_csv``'s result (fit_csv's ``extras`` give the
        feature names, target, rows, skipped rows and scaler), or a fitted estimator
        (binary, multiclass and multi-output).
    path : str or path-like
        The file to write (``.npz`` is a good suffix: it is a numpy archive).
    feature_names : list of str, optional
        The feature columns (default: from ``extras`` or ``feature_names_in_``).
    target : str, optional
        The target column's name.
    options : dict, optional
        The fit options to record (merged over what the model knows).
    summary : dict, optional
        Training-summary entries to record or override.
    """
    model = as_model(
        model, feature_names=feature_names, target=target, options=options, summary=summary
    )
    model.created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    path = Path(path)
    with atomic_file(path, "wb") as handle:
        _write_members(handle, model)
    return path


def _parse_version(text, path) -> tuple[int, int]:
    try:
        major, minor = (int(part) for part in str(text).split("."))
    except ValueError:
        raise ModelFormatError(
            f"{path}: unreadable format version {text!r} in the model file."
        ) from None
    return major, minor


def load(path) -> Model:
    """Read a model file written by :func:`save` (never unpickles anything).

    Raises
    ------
    FileNotFoundError
        No such file.
    ModelFormatError
        Not a fastgd model file, or one of a newer major format version.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model file.")
    not_a_model = f"{path}: not a fastgd model file (expected one written by fastgd.save)"
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise ModelFormatError(f"{not_a_model}: {error}.") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ModelFormatError(f"{not_a_model}: it holds a single array.")
    with archive:
        if METADATA_MEMBER not in archive.files:
            raise ModelFormatError(f"{not_a_model}: it has no {METADATA_MEMBER}.")
        try:
            metadata = json.loads(bytes(archive[METADATA_MEMBER]).decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as error:
            raise ModelFormatError(f"{not_a_model}: unreadable metadata ({error}).") from None
        if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
            raise ModelFormatError(f"{not_a_model}: its metadata names no fastgd model.")
        version = _parse_version(metadata.get("format_version"), path)
        if version[0] > FORMAT_VERSION[0]:
            raise ModelFormatError(
                f"{path}: model format version {version[0]}.{version[1]} (written by fastgd "
                f"{metadata.get('fastgd_version')}) is newer than this fastgd reads "
                f"({FORMAT_VERSION[0]}.x); upgrade fastgd to load it."
            )
        try:
            arrays = {name: archive[name] for name in archive.files if name != METADATA_MEMBER}
        except (OSError, ValueError) as error:
            raise ModelFormatError(f"{path}: a damaged model file ({error}).") from None
    for required in ("coef", "intercept"):
        if required not in arrays:
            raise ModelFormatError(f"{not_a_model}: it has no {required}.npy.")
    summary = dict(metadata.get("summary") or {})
    for name in _SUMMARY_ARRAYS:
        if name in arrays:
            summary[name] = arrays[name]
    scaler = None
    if "scaler_mean" in arrays:
        scaler = {"mean": arrays["scaler_mean"], "scale": arrays["scaler_scale"]}
    try:
        return Model(
            arrays["coef"],
            arrays["intercept"],
            loss=metadata["loss"],
            classes=arrays.get("classes"),
            feature_names=metadata.get("feature_names"),
            target=metadata.get("target"),
            scaler=scaler,
            options=metadata.get("options"),
            summary=summary,
            kind=metadata.get("kind"),
            version=metadata.get("fastgd_version"),
            format_version=version,
            created=metadata.get("created"),
        )
    except (KeyError, ValueError, TypeError) as error:
        raise ModelFormatError(f"{path}: inconsistent model file: {error}") from None
