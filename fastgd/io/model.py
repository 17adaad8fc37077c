"""Saving and loading models: ``fastgd.save`` / ``fastgd.load``.

The file is a zip archive that ``numpy.load(path, allow_pickle=False)`` reads (the layout
of ``numpy.savez``): the arrays as ``.npy`` members, and one ``metadata.json`` member (plain
UTF-8 JSON; ``np.load`` hands it back as bytes) with everything else. Nothing in it needs
pickle, so a model file is safe to open whoever wrote it, and portable across Python,
numpy and fastgd versions.

Members:

========================  =================================================================
``metadata.json``         format name and version, fastgd version, kind, loss, feature
                          names, target, the fit options, the training summary, and (1.1)
                          the encoding of a CSV's columns into the features
``coef.npy``              (d,) or (k, d), in the model's dtype; in the *standardised* space
                          when ``scaler_mean.npy`` is present
``intercept.npy``         () or (k,)
``classes.npy``           the class labels (classifiers)
``scaler_mean.npy``       per-feature means and scales (float64): the model applies
``scaler_scale.npy``      ``(x - mean) / scale`` before ``coef`` (optional)
``loss_history.npy``      the loss curve, one value per epoch
``validation_scores.npy`` the held-out score per epoch (optional)
``rule_slots.npy``        (1.2) the update rule's slots, float64 of shape (k, slots, d + 1)
                          (optional; see ``rule_state`` below)
========================  =================================================================

``load`` trusts nothing in a file: it checks that it is a zip archive, that every member
the metadata calls for is there and readable, the JSON types of the metadata's fields, the
dtypes (real floating-point weights; no objects, strings, booleans or complex numbers), that
the shapes of coef, intercept, classes, feature names and scaler agree, that the weights are
finite, and that the loss, kind and format version are known; any problem is a
``ModelFormatError`` "PATH: not a valid fastgd model: <what is wrong>". Each check is linear
in the number of features.

Format 1.1 adds ``encoding`` to the metadata (:meth:`fastgd.io.encoding.Encoding.to_dict`:
which columns are numeric and text, their means and scales, missing indicators, the levels
kept or the hashing bits): a model trained by ``fit_csv`` on a CSV predicts from a CSV's
columns. ``load`` checks it like the rest (its fields, and that it names the model's
features and matches its scaler); a 1.0 file has none and loads as before.

Format 1.2 adds the update rule's state, so that training continues the same optimizer
(``fastgd train --resume``): the metadata's ``rule_state`` (``{"optimizer": "adam", "t":
301.0}``: the rule and the step counter its bias corrections read) and the member
``rule_slots.npy`` (the rule's per-coordinate slots: a momentum buffer, AdaGrad's sums,
RMSProp's mean squares, Adam's two moments; one ``(slots, d + 1)`` block per weight vector,
the last column the intercept's). The slots live in the space of ``coef.npy``: the
standardised features when the model has a scaler, as the engine trained them. Only rules
with per-coordinate slots and no row memory are kept (not SAGA, whose row memory belongs to
the rows of one call, nor plain SGD, which has none). ``load`` checks them like the weights:
the rule is known, ``t`` a finite number >= 1, the array of the rule's shape for the model's
weights, finite, and non-negative where the rule keeps sums of squares; a 1.0 or 1.1 file
has none (training starts the rule afresh).

Format 1.3 adds ``multiclass`` to the metadata: ``"ovr"`` or ``"multinomial"`` for a
classifier of k weight vectors (``fastgd.fit(..., multiclass=...)``, ``fit_csv`` and
``fastgd train`` with more than two classes), null otherwise. A multinomial model's
probabilities are the softmax of its k scores (two classes keep two weight vectors); a
one-vs-rest model's the normalised per-class probabilities. ``load`` checks it (a known
value, a classifier with one weight vector per class, ``log_loss`` for multinomial); a file
before 1.3 has none, and its k-class classifiers read as one-vs-rest.

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
import io
import json
import math
import os
import signal
import struct
import tempfile
import threading
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .. import prediction

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "Model",
    "ModelFormatError",
    "RuleState",
    "atomic_file",
    "load",
    "save",
]

FORMAT_NAME = "fastgd-model"
#: (major, minor): bump the minor version for additions old readers may ignore, the major
#: version for anything they would misread.
FORMAT_VERSION = (1, 3)
METADATA_MEMBER = "metadata.json"


class ModelFormatError(ValueError):
    """A file that is not a fastgd model, or one written by a newer, incompatible fastgd."""


class RuleState(NamedTuple):
    """The update rule's state a fit continues from (format 1.2; see the module's docstring).

    ``optimizer``: the rule's name (a row of ``fastgd.options.UPDATE_RULES`` with slots and
    no row memory); ``t``: the step counter after the fit (Adam's bias corrections and the
    step-size schedules read it); ``slots``: float64 of shape ``(k, rule.slots, d + 1)``, one
    block per weight vector (``FitResult.slots``, the estimators' sub-problems), in the space
    of the model's ``coef`` (standardised when it has a scaler).
    """

    optimizer: str
    t: float
    slots: np.ndarray


#: The slots that hold sums or means of squared gradients (never negative; a negative one
#: would make the square root of the step NaN): rule name -> slot indices. Momentum's
#: velocity takes either sign. tests/test_rule_state.py checks that every kept rule is here
#: or in _SIGNED_SLOT_RULES.
_SQUARE_SLOTS = {"adagrad": (0,), "rmsprop": (0,), "adam": (1,), "adamw": (1,)}
_SIGNED_SLOT_RULES = ("momentum",)


def kept_rule(optimizer):
    """The update rule (``fastgd.options.UpdateRule``) whose state a model keeps for
    ``optimizer``, or None: an unknown name, a rule without slots, or one with a row memory
    (SAGA restarts: its memory belongs to the rows of one call)."""
    from .. import options as option_table

    if not isinstance(optimizer, str):
        return None
    rule = next((row for row in option_table.UPDATE_RULES if row.name == optimizer), None)
    if rule is None or rule.slots == 0 or rule.row_memory:
        return None
    return rule


def rule_state_of(optimizer, t, slots) -> RuleState | None:
    """The :class:`RuleState` of a fit (``slots``: one ``(rule.slots, d + 1)`` array per
    weight vector, or one such array), or None where there is none to keep (see
    :func:`kept_rule`; no slots: a fit that never allocated them)."""
    rule = kept_rule(optimizer)
    if rule is None or slots is None:
        return None
    blocks = [np.asarray(block, dtype=np.float64) for block in _as_blocks(slots)]
    if not blocks or any(block.shape[:1] != (rule.slots,) for block in blocks):
        return None  # the slots of another rule (e.g. the estimator's optimizer changed)
    return RuleState(rule.name, float(t), np.stack(blocks))


def _as_blocks(slots) -> list:
    if isinstance(slots, np.ndarray) and slots.ndim == 2:
        return [slots]
    return list(slots)


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
    encoding : fastgd.io.encoding.Encoding or None
        How a CSV's columns become the features (``fit_csv``'s models); None: the features
        are columns of their own.
    rule_state : RuleState or None
        The update rule's state to continue training from (format 1.2): its name, step
        counter and slots (in the space of ``coef``); None: a rule without state, or a file
        written before 1.2.
    multiclass : {"ovr", "multinomial"} or None
        For a classifier of k weight vectors (format 1.3): one-vs-rest models or one softmax
        model (its probabilities the softmax of the scores); None otherwise (a file before
        1.3: its k-class classifiers are one-vs-rest).
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
        encoding=None,
        rule_state: RuleState | None = None,
        multiclass: str | None = None,
    ):
        from .. import options as option_table

        coef = np.asarray(coef)
        if coef.dtype not in (np.float32, np.float64):
            coef = coef.astype(np.float64)
        binary = classes is not None and len(classes) == 2 and multiclass != "multinomial"
        if coef.ndim == 2 and coef.shape[0] == 1 and binary:
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
                f"feature_names has {len(self.feature_names)} names for {self.n_features} "
                "weights in coef."
            )
        self.target = target
        if scaler is not None:
            mean = np.asarray(scaler["mean"], dtype=np.float64).reshape(-1)
            scale = np.asarray(scaler["scale"], dtype=np.float64).reshape(-1)
            if mean.shape[0] != self.n_features or scale.shape[0] != self.n_features:
                raise ValueError(
                    f"scaler_mean and scaler_scale need one value per feature "
                    f"({self.n_features}); they have {mean.shape[0]} and {scale.shape[0]}."
                )
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
        if isinstance(encoding, dict):
            from .encoding import Encoding

            encoding = Encoding.from_dict(encoding)
        self.encoding = encoding
        if rule_state is not None:
            rule_state = RuleState(rule_state[0], rule_state[1], np.asarray(rule_state[2]))
        self.rule_state = rule_state
        #: "ovr" or "multinomial" for a classifier of k weight vectors (format 1.3), else None.
        self.multiclass = multiclass if coef.ndim == 2 or multiclass == "multinomial" else None

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

    # -- checks
    def check_feature_count(self, n_columns: int) -> None:
        """Raise ValueError unless the data has ``n_columns == n_features`` columns; for a
        model saved without feature names the message says why the counts must match."""
        if int(n_columns) == self.n_features:
            return
        message = f"the model has {self.n_features} features but the data has {n_columns} columns"
        if self.feature_names is None:
            message += (
                "; the model was saved without feature names, so columns are taken in order "
                "and the counts must match"
            )
        raise ValueError(message + ".")

    def check_features(self, names: Sequence[str]) -> None:
        """Raise ValueError unless ``names`` are the model's feature names, in order; the
        message names the missing, extra or reordered columns. A model saved without feature
        names checks the count only (:meth:`check_feature_count`)."""
        names = [str(name) for name in names]
        if self.feature_names is None:
            self.check_feature_count(len(names))
            return
        if names == self.feature_names:
            return
        given, known = set(names), set(self.feature_names)  # sets: linear in the features
        missing = [name for name in self.feature_names if name not in given]
        extra = [name for name in names if name not in known]
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

    def validate(self) -> None:
        """Raise ValueError, naming the field, unless the model is one fastgd can use: a
        known kind and loss, finite real weights, and coef, intercept, classes, feature
        names and scaler of consistent shapes. :func:`load` runs it on every file and
        :func:`save` before writing one."""
        _check_kind_and_loss(self.kind, self.loss)
        _check_weights(self.coef, self.intercept)
        _check_multiclass(self)
        _check_classes(self)
        _check_feature_names(self.feature_names, self.n_features)
        if self.encoding is not None:
            _check_encoding(self)
        if self.rule_state is not None:
            _check_rule_state(self.rule_state, self.coef)
        if self.scaler is not None:
            _check_scaler(self.scaler, self.n_features)
            with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
                coef, intercept = self.raw_weights()
            if not (np.isfinite(coef).all() and np.isfinite(intercept).all()):
                raise ValueError(
                    "coef / scaler_scale overflows: the weights on the raw features are not finite."
                )

    # -- prediction
    def _scores(self, X) -> np.ndarray:
        """(n, k) decision values (dense or CSR X), one parallel pass over X per output."""
        if hasattr(X, "columns") and self.feature_names is not None:
            self.check_features([str(c) for c in X.columns])
        X = prediction.check_input(X, self.n_features)
        return prediction.decision_values(X, *self.raw_weights())

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
        return prediction.labels(scores, self.classes)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (n, n_classes) for ``log_loss`` (logistic function) and
        ``modified_huber`` models, as the estimators compute them."""
        # A regressor's loss is never one of them (``validate`` refuses a regressor with a
        # classification loss), so this refuses regressors too.
        prediction.check_probabilities(
            self.loss,
            "they need a classifier trained with loss="
            f"{' or '.join(map(repr, prediction.PROBABILITY_LOSSES))}.",
        )
        scores = self._scores(X)
        if self.multiclass == "multinomial":
            from ..multi import softmax

            return softmax(scores)
        return prediction.class_probabilities(scores, self.loss)

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
            "encoding": None if self.encoding is None else self.encoding.to_dict(),
            "multiclass": self.multiclass,
            "rule_state": None
            if self.rule_state is None
            else {"optimizer": self.rule_state.optimizer, "t": float(self.rule_state.t)},
            "options": json_safe(self.options),
            "summary": json_safe(
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
        if self.rule_state is not None:
            arrays["rule_slots"] = np.asarray(self.rule_state.slots, dtype=np.float64)
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


def json_safe(value):
    """Options and summaries as JSON values: numpy scalars and arrays become numbers and
    lists, non-finite floats strings ("nan", "inf"), anything else its repr."""
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
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
# Checks of a model's contents (Model.validate)
# ---------------------------------------------------------------------------------------------

MODEL_KINDS = ("classifier", "regressor")


def _check_kind_and_loss(kind, loss) -> None:
    from .. import options as option_table

    if kind not in MODEL_KINDS:
        raise ValueError(f"kind {kind!r} is not one of {_shown(MODEL_KINDS)}.")
    losses = {entry.name: entry for entry in option_table.LOSSES}
    if loss not in losses:
        raise ValueError(f"loss {loss!r} is not one of fastgd's losses ({_shown(list(losses))}).")
    if kind == "regressor" and losses[loss].classification:
        raise ValueError(f"a regressor with the classification loss {loss!r}.")


def _check_finite(name: str, values: np.ndarray) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        first = np.unravel_index(int(np.flatnonzero(bad)[0]), values.shape)
        where = first[0] if len(first) == 1 else tuple(int(i) for i in first)
        raise ValueError(
            f"{name} holds {int(bad.sum())} non-finite value(s) (NaN or infinity), the first "
            f"at index {where}."
        )


def _check_weights(coef: np.ndarray, intercept) -> None:
    if coef.dtype not in (np.float32, np.float64):
        raise ValueError(f"coef has dtype {coef.dtype}; expected float32 or float64.")
    if coef.ndim not in (1, 2) or 0 in coef.shape:
        raise ValueError(f"coef has shape {coef.shape}; expected (d,) or (k, d), d, k >= 1.")
    intercept = np.asarray(intercept)
    outputs = 1 if coef.ndim == 1 else coef.shape[0]
    if intercept.size != outputs:
        raise ValueError(
            f"intercept has {intercept.size} value(s) for {outputs} weight vector(s) in coef."
        )
    _check_finite("coef", coef)
    _check_finite("intercept", intercept)


def _check_classes(model: Model) -> None:
    classes, coef = model.classes, model.coef
    if model.kind == "regressor":
        if classes is not None:
            raise ValueError("a regressor with class labels (classes).")
        return
    if classes is None:
        raise ValueError("a classifier without class labels (classes).")
    if classes.ndim != 1 or classes.shape[0] < 2:
        raise ValueError(f"classes has shape {classes.shape}; expected two labels or more.")
    if classes.dtype.kind == "f":
        _check_finite("classes", classes)
    ordered = np.unique(classes)
    if ordered.shape[0] != classes.shape[0]:
        raise ValueError("classes holds the same label twice.")
    count = classes.shape[0]
    if count == 2 and coef.ndim != 1 and model.multiclass != "multinomial":
        raise ValueError(f"a binary classifier needs one weight vector; coef has {coef.shape}.")
    if count > 2 or model.multiclass == "multinomial":
        if coef.ndim != 2 or coef.shape[0] != count:
            raise ValueError(
                f"{count} classes need one weight vector each; coef has shape {coef.shape}."
            )
        # evaluate and the estimators look labels up by binary search
        if not np.array_equal(ordered, classes):
            raise ValueError("the classes of a multiclass model must be sorted.")


#: The values of a model's ``multiclass`` (``fastgd.multi.MULTICLASS``), and None.
MULTICLASS_VALUES = ("ovr", "multinomial")


def _check_multiclass(model: Model) -> None:
    """``multiclass`` (format 1.3): None, or a known value on a classifier of k weight
    vectors; multinomial is the softmax model of ``log_loss``."""
    value = model.multiclass
    if value is None:
        return
    if value not in MULTICLASS_VALUES:
        raise ValueError(
            f"multiclass is {_short(value)}; expected one of {_shown(MULTICLASS_VALUES)} or null."
        )
    if model.kind != "classifier":
        raise ValueError(f"multiclass={value!r} on a {model.kind}; it names a classifier's model.")
    if value == "multinomial" and model.loss != "log_loss":
        raise ValueError(
            f"multiclass='multinomial' is the softmax model of loss='log_loss'; this model's "
            f"loss is {model.loss!r}."
        )
    if model.coef.ndim != 2:
        raise ValueError(
            f"multiclass={value!r} needs one weight vector per class; coef has shape "
            f"{model.coef.shape}."
        )


def _check_feature_names(names, n_features: int) -> None:
    if names is None:
        return
    if len(names) != n_features:
        raise ValueError(f"feature_names has {len(names)} names for {n_features} weights in coef.")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"feature_names holds {name!r} twice.")
        seen.add(name)


def _check_encoding(model: Model) -> None:
    """The encoding must name the model's features and, when it standardises, be the
    model's scaler (a file where they differ was not written by fastgd.save)."""
    encoding = model.encoding
    if model.feature_names != encoding.feature_names:
        raise ValueError(
            f"the encoding's {encoding.n_features} features are not the model's feature_names."
        )
    scaler = encoding.scaler()
    if (scaler is None) != (model.scaler is None):
        raise ValueError("the encoding and the scaler disagree on standardising.")
    if scaler is not None and not all(
        np.array_equal(scaler[key], model.scaler[key]) for key in ("mean", "scale")
    ):
        raise ValueError("the scaler is not the encoding's means and scales.")


def _check_rule_state(state: RuleState, coef: np.ndarray) -> None:
    """The rule is one whose state a model keeps, ``t`` a finite number >= 1, and the slots
    real, finite, of the rule's shape for ``coef`` and non-negative where they hold squares."""
    rule = kept_rule(state.optimizer)
    if rule is None:
        from .. import options as option_table

        kept = [row.name for row in option_table.UPDATE_RULES if kept_rule(row.name)]
        raise ValueError(
            f"rule_state names the optimizer {_short(state.optimizer)}; a model keeps the "
            f"state of {_shown(kept)} only."
        )
    t = state.t
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not (math.isfinite(t) and t >= 1):
        raise ValueError(f"rule_state's step counter t is {_short(t)}; expected a number >= 1.")
    slots = state.slots
    if slots.dtype not in (np.float32, np.float64):
        raise ValueError(f"rule_slots has dtype {slots.dtype}; expected float64.")
    outputs = 1 if coef.ndim == 1 else coef.shape[0]
    expected = (outputs, rule.slots, coef.shape[-1] + 1)
    if slots.shape != expected:
        raise ValueError(
            f"rule_slots has shape {slots.shape}; {rule.name!r} on this model's weights keeps "
            f"{expected} ({outputs} weight vector(s) x {rule.slots} slot(s) x "
            f"{coef.shape[-1]} features + the intercept)."
        )
    _check_finite("rule_slots", slots)
    for index in _SQUARE_SLOTS.get(rule.name, ()):
        negative = slots[:, index] < 0
        if negative.any():
            where = tuple(int(i) for i in np.argwhere(negative)[0])
            raise ValueError(
                f"rule_slots: slot {index} of {rule.name!r} holds sums of squares, but the value "
                f"at (weight vector, column) {where} is negative."
            )


def _check_scaler(scaler: dict, n_features: int) -> None:
    for key in ("mean", "scale"):
        values = scaler[key]
        if values.shape != (n_features,):
            raise ValueError(
                f"scaler_{key} has shape {values.shape}; expected ({n_features},), one value "
                "per feature."
            )
        _check_finite(f"scaler_{key}", values)
    if not (scaler["scale"] > 0).all():
        first = int(np.flatnonzero(~(scaler["scale"] > 0))[0])
        raise ValueError(f"scaler_scale must be positive; index {first} is not.")


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
    encoding = extras.get("encoding")
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
        encoding=encoding,
        multiclass=getattr(result, "multiclass", None),
        # The optimizer that ran (the engine's extras), else the one the options name.
        rule_state=rule_state_of(
            extras.get("optimizer", (options or {}).get("optimizer")), result.t, result.slots
        ),
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
        multiclass=_estimator_multiclass(estimator, coef, classes),
        # the optimizer whose slots these are (set with them: a later set_params may differ)
        rule_state=rule_state_of(
            getattr(estimator, "_slots_optimizer", None),
            estimator.t_,
            getattr(estimator, "_slots", None),
        ),
    )


def _estimator_multiclass(estimator, coef, classes) -> str | None:
    """The estimator's ``multiclass`` where its coef holds one weight vector per class."""
    value = getattr(estimator, "multiclass", None)
    if classes is None or np.ndim(coef) != 2 or np.shape(coef)[0] != len(classes):
        return None
    return value if value in MULTICLASS_VALUES else None


def as_model(model, *, feature_names=None, target=None, options=None, summary=None) -> Model:
    """A :class:`Model` from a FitResult, a fitted fastgd estimator, or a Model (then the
    keyword arguments replace its fields)."""
    from ..engine import FitResult
    from ..multi import MultiFitResult

    if isinstance(model, Model):
        if feature_names is not None or target is not None or options or summary:
            model = Model(
                model.coef, model.intercept, loss=model.loss, classes=model.classes,
                feature_names=model.feature_names if feature_names is None else feature_names,
                target=model.target if target is None else target, scaler=model.scaler,
                options={**model.options, **(options or {})},
                summary={**model.summary, **(summary or {})}, kind=model.kind,
                encoding=model.encoding, rule_state=model.rule_state,
                multiclass=model.multiclass,
            )  # fmt: skip
        return model
    if isinstance(model, (FitResult, MultiFitResult)):
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
    try:  # never write a file that load would refuse
        model.validate()
    except ValueError as error:
        raise ValueError(f"cannot save the model to {path}: {error}") from None
    with atomic_file(path, "wb") as handle:
        _write_members(handle, model)
    return path


# ---------------------------------------------------------------------------------------------
# Reading a model file: every member and field is checked before a Model is made of it
# ---------------------------------------------------------------------------------------------

#: What reading a damaged archive or member may raise: zipfile's and zlib's own errors,
#: truncation (EOFError, OSError), a flipped compression method (NotImplementedError) or
#: encryption flag (RuntimeError), garbled header fields (struct.error, OverflowError,
#: ValueError), undecodable text (UnicodeDecodeError, a ValueError).
_READ_ERRORS = (
    zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError, ValueError,
    NotImplementedError, RuntimeError, struct.error, OverflowError,
)  # fmt: skip

_NULL = type(None)
#: metadata.json's fields in format 1.0 (later minor versions may add more, which are
#: ignored): name -> (the JSON types allowed, required).
_METADATA_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "format": ((str,), True),
    "format_version": ((str,), True),
    "fastgd_version": ((str,), True),
    "kind": ((str,), True),
    "loss": ((str,), True),
    "dtype": ((str,), True),
    "coef_shape": ((list,), True),
    "feature_names": ((list, _NULL), True),
    "standardized": ((bool,), True),
    "created": ((str, _NULL), False),
    "encoding": ((dict, _NULL), False),
    "rule_state": ((dict, _NULL), False),
    "multiclass": ((str, _NULL), False),
    "target": ((str, _NULL), False),
    "options": ((dict,), False),
    "summary": ((dict,), False),
}
_JSON_TYPE_NAMES = {
    dict: "an object", list: "a list", str: "a string", bool: "true or false",
    int: "a number", float: "a number", _NULL: "null",
}  # fmt: skip
#: The floating-point members: weights, scaler and curves.
_REAL_MEMBERS = ("coef", "intercept", "scaler_mean", "scaler_scale", "rule_slots",
                 *_SUMMARY_ARRAYS)  # fmt: skip
_DTYPE_KINDS = {
    "b": "booleans", "i": "integers", "u": "integers", "f": "floating-point numbers",
    "c": "complex numbers", "U": "strings", "S": "byte strings",
}  # fmt: skip


class _Invalid(ValueError):
    """What is wrong with a model file; :func:`load` adds the path."""


def _error_text(error: BaseException) -> str:
    """``zlib.error: Error -3 ...``: the exception's qualified name and message."""
    kind = type(error)
    module = "" if kind.__module__ == "builtins" else f"{kind.__module__}."
    return f"{module}{kind.__qualname__}: {error}"


def _json_type(value) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + " ...]"


@contextlib.contextmanager
def _open_archive(path: Path) -> Iterator[zipfile.ZipFile]:
    """The model file as an open zip archive; OSError (FileNotFoundError, ...) naming the
    path when it cannot be opened, ModelFormatError when it is not a zip archive."""
    try:
        handle = open(path, "rb")  # closed by the with below
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such model file.") from None
    except OSError as error:
        raise type(error)(
            f"{path}: cannot open the model file ({error.strerror or error})."
        ) from None
    with handle:
        try:
            archive = zipfile.ZipFile(handle)
        except _READ_ERRORS as error:
            what = (
                "an empty file" if os.fstat(handle.fileno()).st_size == 0 else "not a zip archive"
            )
            raise ModelFormatError(
                f"{path}: not a valid fastgd model: {what} ({error}); a model is the numpy .npz "
                "archive that fastgd.save or `fastgd train --model` writes."
            ) from None
        with archive:
            yield archive


def _member_bytes(archive: zipfile.ZipFile, member: str) -> bytes:
    try:
        return archive.read(member)  # checks the member's CRC
    except _READ_ERRORS as error:
        raise _Invalid(f"the member {member} is damaged ({_error_text(error)}).") from None


def _parse_npy(member: str, data: bytes) -> np.ndarray:
    """The array of a ``.npy`` member, read without pickle and without trusting its header:
    the dtype must be plain numbers or strings and the data exactly as long as the shape
    says (a header claiming a huge shape allocates nothing)."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise _Invalid(f".npy format version {version[0]}.{version[1]} is not supported")
    except (ValueError, TypeError, SyntaxError, struct.error) as error:
        raise _Invalid(f"the member {member} is not a readable .npy array ({error}).") from None
    if dtype.hasobject or dtype.fields is not None or dtype.kind not in _DTYPE_KINDS:
        raise _Invalid(
            f"the member {member} holds {dtype} values; a model holds numbers and strings only "
            "(never Python objects, which would need pickle)."
        )
    if dtype.itemsize == 0 or any(size < 0 for size in shape):
        raise _Invalid(f"the member {member} has an invalid shape {shape} or dtype {dtype}.")
    count = math.prod(shape)
    offset = stream.tell()
    if len(data) - offset != count * dtype.itemsize:
        raise _Invalid(
            f"the member {member} holds {len(data) - offset} bytes of data; its header "
            f"(shape {shape}, {dtype}) says {count * dtype.itemsize}."
        )
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    array = flat.reshape(shape[::-1]).T if fortran_order else flat.reshape(shape)
    # a native-order copy of its own: writable, and what the kernels expect
    return np.ascontiguousarray(array, dtype=dtype.newbyteorder("="))


def _read_metadata(archive: zipfile.ZipFile, names: set[str]):
    if METADATA_MEMBER not in names:
        numpy_archive = any(name.endswith(".npy") for name in names)
        raise _Invalid(
            f"the member {METADATA_MEMBER} is missing"
            + ("; a numpy archive, but not one fastgd.save wrote." if numpy_archive else ".")
        )
    data = _member_bytes(archive, METADATA_MEMBER)
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError and JSON errors
        raise _Invalid(f"{METADATA_MEMBER} is not valid UTF-8 JSON ({error}).") from None


def _check_field(metadata: dict, field: str) -> None:
    types, required = _METADATA_FIELDS[field]
    if field not in metadata:
        if required:
            raise _Invalid(f"{METADATA_MEMBER}: the field {field!r} is missing.")
        return
    value = metadata[field]
    # JSON's true and false are Python bools, which are also ints
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        expected = " or ".join(dict.fromkeys(_JSON_TYPE_NAMES[kind] for kind in types))
        raise _Invalid(
            f"{METADATA_MEMBER}: the field {field!r} must be {expected}; got {_json_type(value)} "
            f"({_short(value)})."
        )


def _check_version(metadata: dict) -> tuple[int, int]:
    _check_field(metadata, "format_version")
    text = metadata["format_version"]
    parts = text.split(".")
    if len(parts) != 2 or not all(part.isascii() and part.isdigit() for part in parts):
        raise _Invalid(
            f"{METADATA_MEMBER}: the field 'format_version' is {_short(text)}; expected "
            "MAJOR.MINOR such as '1.0'."
        )
    major, minor = int(parts[0]), int(parts[1])
    if major > FORMAT_VERSION[0]:
        raise _Invalid(
            f"model format version {major}.{minor} (written by fastgd "
            f"{metadata.get('fastgd_version')}) is newer than this fastgd reads "
            f"({FORMAT_VERSION[0]}.x); upgrade fastgd to load it."
        )
    if major < FORMAT_VERSION[0]:
        raise _Invalid(
            f"model format version {major}.{minor} is not one fastgd ever wrote (this fastgd "
            f"reads {FORMAT_VERSION[0]}.x)."
        )
    return major, minor


def _check_metadata(metadata) -> tuple[int, int]:
    """The format version, once metadata.json's fields have the right JSON types and values."""
    if not isinstance(metadata, dict):
        raise _Invalid(f"{METADATA_MEMBER} holds {_json_type(metadata)}, not an object.")
    if metadata.get("format") != FORMAT_NAME:
        raise _Invalid(
            f"{METADATA_MEMBER}: the field 'format' is {_short(metadata.get('format'))}, not "
            f"{FORMAT_NAME!r}; not a file fastgd.save wrote."
        )
    version = _check_version(metadata)
    for field in _METADATA_FIELDS:
        _check_field(metadata, field)
    try:
        _check_kind_and_loss(metadata["kind"], metadata["loss"])
    except ValueError as error:
        raise _Invalid(f"{METADATA_MEMBER}: {error}") from None
    for index, name in enumerate(metadata["feature_names"] or ()):
        if not isinstance(name, str):
            raise _Invalid(
                f"{METADATA_MEMBER}: the field 'feature_names' must be a list of strings; "
                f"item {index} is {_json_type(name)} ({_short(name)})."
            )
    shape = metadata["coef_shape"]
    if not 1 <= len(shape) <= 2 or not all(type(size) is int and size > 0 for size in shape):
        raise _Invalid(
            f"{METADATA_MEMBER}: the field 'coef_shape' must list one or two positive whole "
            f"numbers; got {_short(shape)}."
        )
    if metadata["dtype"] not in ("float32", "float64"):
        raise _Invalid(
            f"{METADATA_MEMBER}: the field 'dtype' is {_short(metadata['dtype'])}; expected "
            "'float32' or 'float64'."
        )
    return version


def _read_arrays(archive: zipfile.ZipFile, names: set[str], metadata: dict) -> dict:
    """The array members the metadata calls for (all must be there) and the optional ones
    present, each of a dtype and number of dimensions that fits it."""
    required = ["coef", "intercept"]
    if metadata["kind"] == "classifier":
        required.append("classes")
    if metadata["standardized"]:
        required += ["scaler_mean", "scaler_scale"]
    if metadata.get("rule_state") is not None:
        required.append("rule_slots")
    elif "rule_slots.npy" in names:
        raise _Invalid(
            f"rule_slots.npy is present but {METADATA_MEMBER} has no 'rule_state' saying whose "
            "slots they are."
        )
    for name in required:
        if f"{name}.npy" not in names:
            raise _Invalid(f"the member {name}.npy is missing.")
    arrays = {
        name: _parse_npy(f"{name}.npy", _member_bytes(archive, f"{name}.npy"))
        for name in ("coef", "intercept", "classes", "scaler_mean", "scaler_scale",
                     "rule_slots", *_SUMMARY_ARRAYS)
        if f"{name}.npy" in names
    }  # fmt: skip
    for name in ("scaler_mean", "scaler_scale"):
        if not metadata["standardized"] and name in arrays:
            raise _Invalid(
                f"{name}.npy is present but {METADATA_MEMBER} says 'standardized': false."
            )
    for name in _REAL_MEMBERS:
        if name in arrays and arrays[name].dtype not in (np.float32, np.float64):
            dtype = arrays[name].dtype
            raise _Invalid(
                f"{name}.npy holds {_DTYPE_KINDS[dtype.kind]} ({dtype}); it must hold real "
                "floating-point numbers (float32 or float64)."
            )
    if "classes" in arrays and arrays["classes"].dtype.kind == "c":
        raise _Invalid("classes.npy holds complex numbers; labels are numbers or strings.")
    _check_array_shapes(arrays, metadata)
    return arrays


def _check_array_shapes(arrays: dict, metadata: dict) -> None:
    coef = arrays["coef"]
    if list(coef.shape) != metadata["coef_shape"] or coef.dtype.name != metadata["dtype"]:
        raise _Invalid(
            f"coef.npy is {coef.dtype.name} of shape {list(coef.shape)}; {METADATA_MEMBER} "
            f"says {metadata['dtype']} of shape {metadata['coef_shape']}."
        )
    if arrays["intercept"].ndim > 1:
        raise _Invalid(f"intercept.npy has shape {arrays['intercept'].shape}; expected () or (k,).")
    for name in (*_SUMMARY_ARRAYS, "classes", "scaler_mean", "scaler_scale"):
        if name in arrays and arrays[name].ndim != 1:
            raise _Invalid(f"{name}.npy has shape {arrays[name].shape}; expected a vector.")
    if "rule_slots" in arrays and arrays["rule_slots"].ndim != 3:
        raise _Invalid(
            f"rule_slots.npy has shape {arrays['rule_slots'].shape}; expected (weight vectors, "
            "slots, features + 1)."
        )


def _model_from(metadata: dict, arrays: dict, version: tuple[int, int]) -> Model:
    # the curves are members of their own; a same-named JSON entry is not trusted
    summary = {
        key: value
        for key, value in (metadata.get("summary") or {}).items()
        if key not in _SUMMARY_ARRAYS
    }
    summary.update({name: arrays[name] for name in _SUMMARY_ARRAYS if name in arrays})
    scaler = None
    if metadata["standardized"]:
        scaler = {"mean": arrays["scaler_mean"], "scale": arrays["scaler_scale"]}
    return Model(
        arrays["coef"],
        arrays["intercept"],
        loss=metadata["loss"],
        classes=arrays.get("classes"),
        feature_names=metadata["feature_names"],
        target=metadata.get("target"),
        scaler=scaler,
        options=metadata.get("options"),
        summary=summary,
        kind=metadata["kind"],
        version=metadata["fastgd_version"],
        format_version=version,
        created=metadata.get("created"),
        encoding=_encoding_from(metadata),
        rule_state=_rule_state_from(metadata, arrays),
        multiclass=metadata.get("multiclass"),
    )


def _rule_state_from(metadata: dict, arrays: dict) -> RuleState | None:
    """The metadata's ``rule_state`` with ``rule_slots.npy`` (None: a file without), its
    fields' JSON types checked here and their values by ``Model.validate``."""
    record = metadata.get("rule_state")
    if record is None:
        return None
    for field, types in (("optimizer", (str,)), ("t", (int, float))):
        value = record.get(field)
        if isinstance(value, bool) or not isinstance(value, types):
            expected = "a string" if types == (str,) else "a number"
            raise _Invalid(
                f"{METADATA_MEMBER}: the field 'rule_state' must hold {field!r} as {expected}; "
                f"got {_json_type(value) if field in record else 'nothing'} ({_short(value)})."
            )
    return RuleState(record["optimizer"], float(record["t"]), arrays["rule_slots"])


def _encoding_from(metadata: dict):
    """The metadata's encoding (None: a file without one), checked field by field."""
    from .encoding import Encoding, EncodingError

    record = metadata.get("encoding")
    if record is None:
        return None
    try:
        return Encoding.from_dict(record)
    except EncodingError as error:
        raise _Invalid(f"{METADATA_MEMBER}: the field 'encoding' is malformed: {error}") from None


def load(path) -> Model:
    """Read and check a model file written by :func:`save` (never unpickles anything).

    Every member and metadata field is checked (presence, JSON types, dtypes, shapes that
    agree with each other, finite weights, a known loss, kind and format version), so a
    model that loads predicts finite values on finite data.

    Raises
    ------
    FileNotFoundError, OSError
        No such file, or one that cannot be opened (the message names the path).
    ModelFormatError
        ``PATH: not a valid fastgd model: <what is wrong>``: not a zip archive, damaged or
        missing members, wrong types or shapes, non-finite weights, an unknown loss or
        kind, or a newer major format version.
    """
    path = Path(path)
    with _open_archive(path) as archive:
        try:
            names = set(archive.namelist())
            metadata = _read_metadata(archive, names)
            version = _check_metadata(metadata)
            model = _model_from(metadata, _read_arrays(archive, names, metadata), version)
            model.validate()
        except (*_READ_ERRORS, TypeError) as error:
            ours = type(error) in (_Invalid, ValueError)  # fastgd's messages, self-explaining
            reason = str(error) if ours else _error_text(error)
            raise ModelFormatError(f"{path}: not a valid fastgd model: {reason}") from None
    return model
