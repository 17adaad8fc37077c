"""Model files as the commands read them: a damaged one is a data error naming the file;
a --model that is not a fastgd model is never replaced; a CSV's columns are matched to a
model's features by name; a model with an encoding (trained on a CSV by ``fastgd train``)
reads the CSV with its frozen level table and missing cells kept, and encodes each block
as in training (unseen levels and missing cells are never an error)."""

from __future__ import annotations

import os

from ._command import CommandError, UsageError


def load_model(path):
    """The model in ``path``; any failure to read it is a data error naming the file."""
    from ..io.model import ModelFormatError, load

    try:
        return load(path)
    except (FileNotFoundError, IsADirectoryError, PermissionError, ModelFormatError):
        raise
    except Exception as error:
        # A damaged file the reader did not recognise: zipfile alone raises BadZipFile,
        # EOFError, zlib.error, NotImplementedError (an unknown compression method) or
        # RuntimeError (an "encrypted" flag bit) for a flipped byte. --debug shows where.
        message = " ".join(str(error).split())
        raise CommandError(
            f"{path}: not a valid fastgd model: {type(error).__name__}: {message}"
        ) from error


def check_replaceable_model(path) -> None:
    """Refuse, before any work, a --model that exists and is not a fastgd model: it is
    probably something else (the data, another file) that saving would replace (a usage
    error, exit 2)."""
    if not os.path.lexists(path):
        return
    try:
        load_model(path)
    except Exception as error:
        reason = " ".join(str(error).split())
        raise UsageError(
            f"--model {path} exists and is not a fastgd model ({reason}); nothing was "
            "written. Remove it or choose another --model."
        ) from error


def model_schema(model, data, *, target=None, delimiter=None):
    """The CSV's schema selecting the model's features by name (any order in the file);
    for a model with an encoding, its source columns, each of the type it was trained on."""
    from ..io.csv import read_schema

    layout = read_schema(data, delimiter=delimiter)
    present = set(layout.columns)  # a set: files with 100k columns are fine
    if model.encoding is not None:
        return _encoded_schema(model.encoding, data, layout, target, delimiter)
    if model.feature_names is None:
        drop = [name for name in (model.target, target) if name and name in present]
        schema = read_schema(data, target=target, drop=drop or None, delimiter=delimiter)
        if len(schema.feature_names) != model.n_features:
            raise CommandError(
                f"{data}: {len(schema.feature_names)} feature columns, but the model (saved "
                f"without feature names) has {model.n_features}."
            )
        return schema
    _require_columns(data, model.feature_names, present, "feature column(s)")
    return read_schema(data, target=target, features=model.feature_names, delimiter=delimiter)


def _require_columns(data, needed, present: set, what: str) -> None:
    """Refuse a file whose header lacks columns the model reads (the first ten named)."""
    missing = [name for name in needed if name not in present]
    if missing:
        shown = ", ".join(repr(name) for name in missing[:10])
        raise CommandError(
            f"{data}: the model's {what} {shown}{' ...' if len(missing) > 10 else ''} are not "
            f"in the file's header ({len(missing)} of {len(needed)} missing)."
        )


def _encoded_schema(encoding, data, layout, target, delimiter):
    """The schema of the columns an encoding reads: its text columns read as text, its
    numeric columns refused where the file holds text in them."""
    from ..io.csv import read_schema

    _require_columns(data, encoding.columns, set(layout.columns), "column(s)")
    schema = read_schema(
        data, target=target, features=encoding.columns, delimiter=delimiter,
        categorical=encoding.text or None,
    )  # fmt: skip
    wrong = [name for name in encoding.numeric if name not in schema.numeric_features]
    if wrong:
        raise CommandError(
            f"{data}: the column(s) {', '.join(map(repr, wrong[:10]))} hold text, but the "
            "model was trained on numbers there."
        )
    return schema


def read_options(model, schema=None) -> dict:
    """What ``iter_csv`` needs to read a CSV for this model: for a model with an encoding,
    missing cells kept (imputed as in training) and the encoding's level table. With the
    ``schema`` of a text target (evaluate), ``y`` holds the index of each row's label in
    ``model.classes`` (``UNSEEN_CODE``, -2, for a label the model does not know)."""
    if model.encoding is None:
        return {}
    target = None
    if schema is not None and schema.target is not None:
        if schema.column_types.get(schema.target) == "text":
            target = schema.target
    classes = None if target is None else [str(label) for label in model.classes.tolist()]
    return {"missing": "keep", "levels": model.encoding.level_table(target, classes)}


def model_input(model, block):
    """The model's features of a CSV block (read with :func:`read_options`): the block's
    ``X`` itself, or the encoded block (raw values: the model folds its scaler in)."""
    encoding = model.encoding
    if encoding is None:
        return block.X
    if encoding.text:
        encoding.bind(block.levels)
    return encoding.encode(block.X, block.codes, scaled=False)


def checked_predictions(model, block, data):
    """The model's predictions for one CSV block (labels for a classifier). A decision
    value that overflowed (finite but huge weights, e.g. 1e308, pass the model's checks) is
    a data error naming the file and the first such line, not an ``inf`` written out or a
    ``nan`` score after a numpy warning."""
    import numpy as np

    from ..prediction import labels

    with np.errstate(over="ignore", invalid="ignore"):
        scores = model.decision_function(model_input(model, block))
    finite = np.isfinite(scores)
    if finite.ndim == 2:
        finite = finite.all(axis=1)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        lines = block.line_numbers
        line = int(lines[bad]) if lines is not None else block.first_line + bad
        raise CommandError(
            f"{data}, line {line}: the model's prediction is not finite (it overflows: the "
            "model's weights are too large for this row's values)."
        )
    if model.kind == "classifier" and model.classes is not None:
        return labels(scores, model.classes)
    return scores


class UnseenLevels:
    """Per text column, the cells whose level training never saw (read as the column's
    other level: never an error, but said): counted block by block from the codes of a
    frozen level table (``UNSEEN_CODE``), with the table's first unseen strings as
    examples. A growing table (hashing, the training cache's own) has none to count."""

    #: Above this share of a column's non-missing cells, a warning: the file probably
    #: writes the column differently from training (``4.0`` for ``4``).
    MOSTLY = 0.5

    def __init__(self) -> None:
        self.table = None
        self.unseen = None  # int64 per text column
        self.present = None  # non-missing cells per text column

    def add(self, block) -> None:
        import numpy as np

        from ..io.levels import MISSING_CODE, UNSEEN_CODE

        table, codes = block.levels, block.codes
        if codes is None or table is None or not table.is_frozen or not codes.shape[0]:
            return
        # one column at a time: a whole-array count with axis=0 measured ~10x slower
        columns = [codes[:, j] for j in range(codes.shape[1])]
        unseen = np.array([np.count_nonzero(c == UNSEEN_CODE) for c in columns], np.int64)
        missing = np.array([np.count_nonzero(c == MISSING_CODE) for c in columns], np.int64)
        present = codes.shape[0] - missing
        if self.unseen is None:
            self.table, self.unseen, self.present = table, unseen, present
        else:
            self.unseen = self.unseen + unseen
            self.present = self.present + present

    def _columns(self):
        """``(name, unseen cells, non-missing cells, examples, training's levels)`` of each
        column with an unseen cell (read once the blocks are consumed)."""
        if self.unseen is None:
            return []
        table = self.table
        rows = zip(table.columns, self.unseen.tolist(), self.present.tolist(),
                   table.unseen_examples, table.levels, strict=True)  # fmt: skip
        return [row for row in rows if row[1]]

    def summary(self) -> str:
        """E.g. ``levels not seen in training: month 20,000 cells (e.g. '4.0'), hour 3
        cells``; empty when every level was seen."""
        parts = []
        for name, unseen, _, examples, _ in self._columns():
            example = f" (e.g. {examples[0]!r})" if examples else ""
            parts.append(f"{name} {unseen:,} cell{'s' if unseen != 1 else ''}{example}")
        return "levels not seen in training: " + ", ".join(parts) if parts else ""

    def warn(self, path) -> None:
        """A warning for each column whose non-missing cells are mostly unseen levels."""
        import warnings

        for name, unseen, present, examples, levels in self._columns():
            if unseen <= self.MOSTLY * present:
                continue
            example = f"e.g. {examples[0]!r}; " if examples else ""
            known = f"e.g. {levels[0]!r}" if levels else "none"
            warnings.warn(
                f"{path}: column {name!r}: {unseen:,} of its {present:,} non-missing cells "
                f"({unseen / present:.0%}) hold levels not seen in training ({example}"
                f"training's levels: {known}), read as the column's other level; its values "
                "do not match training's levels: check how the file writes them.",
                stacklevel=2,
            )
