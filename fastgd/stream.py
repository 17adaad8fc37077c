"""Training on CSV files larger than memory: ``fastgd.fit_csv``.

The file is read once, in blocks (``fastgd.io.iter_csv``: parsed on a background thread
while this thread works on the previous block). That first pass writes the binary cache
(``fastgd.io.BlockCache``: numeric values with NaN for a missing cell, the text columns'
level codes, and the level table) and gathers what training needs before its first step:
the row count, the classes, the zero model's loss, a uniform sample of rows (for
``learning_rate="auto"``), the numeric columns' means, scales and missing counts, and the
text columns' levels. From those comes the :class:`fastgd.io.encoding.Encoding`
(standardising, imputation, one-hot or hashing), fixed for the whole fit and applied to
each block as it is read: dense blocks without a text column, CSR blocks with one. Every
epoch then reads the memory-mapped cache block by block, through the engine's own epoch
loop (:func:`fastgd.engine.train`): this module supplies the engine a data source (a
:class:`fastgd.sources.BlockSource`) whose epochs run the same kernels on one block at a
time, so memory is bounded by the block size, not by the file.

Missing cells: ``missing="impute"`` keeps the row (the encoding imputes the column's mean
and adds an indicator; a text cell gets its own level); ``"skip"`` leaves out every row
with a missing feature cell (counted as ``skipped["missing"]``); ``"error"`` stops at the
first one, naming file, line and column (with ``on_bad_rows="skip"``: skipped as a bad
row). A row whose target is missing is always skipped (``skipped["missing_target"]``).

Row order: with ``shuffle`` the rows of each block are permuted, and the blocks are visited
in a fresh random order each epoch; without it, epochs visit the file's order. Mini-batches
run across block boundaries (the rows left over at the end of a block start the next
batch), so with ``shuffle=False`` an epoch takes the same steps as ``fastgd.fit`` on the
whole file in memory.
"""

from __future__ import annotations

import itertools
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import engine, stream_multi
from ._validation import check_scalar
from .io.cache import BlockCache, CacheChecksumError
from .io.csv import CsvError, iter_csv, read_schema
from .io.encoding import MAX_HASH_BITS, Encoding
from .io.levels import MISSING_CODE, LevelTable
from .options import loss_by_name
from .prediction import decision_values
from .sources import BlockSource, BlockStatistics, RowSample, RowSampler, block_statistics

__all__ = [
    "DEFAULT_BLOCK_ROWS",
    "MISSING_POLICIES",
    "ScaleWarning",
    "StreamStats",
    "fit_csv",
    "read_whole",
]

#: Rows per block: 65,536 rows of 50 float64 features are 26 MB.
DEFAULT_BLOCK_ROWS = 65536
#: What ``fit_csv(missing=...)`` does with a missing feature cell.
MISSING_POLICIES = ("impute", "skip", "error")
#: Without ``standardize``, numeric columns whose scales differ by more than this warn.
SCALE_RATIO_WARNING = 1e3


#: The most classes a CSV's classification trains (one weight vector each).
MAX_CLASSES = 1000


class ScaleWarning(UserWarning):
    """Numeric features of very different scales trained without standardising: plain SGD
    then either crawls on the small ones or diverges on the large ones."""


@dataclass
class StreamStats:
    """What the first pass over the data found."""

    n_rows: int = 0
    n_features: int = 0
    #: The encoded features' names (``Encoding.feature_names``).
    feature_names: list = field(default_factory=list)
    #: The largest row norm of the encoded rows, when the first pass could know it (None:
    #: a pass over the encoded blocks finds it).
    max_row_norm: float | None = None
    #: The labels as ``y`` holds them (text targets: their level codes), sorted.
    labels: np.ndarray | None = None
    #: The classes as the model gives them back (a text target's strings; else ``labels``).
    classes: np.ndarray | None = None
    #: Over the encoded features (identity outside the numeric columns); None without
    #: ``standardize``.
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None
    sample: object = None
    #: The sampled rows' targets as read (labels stay labels), for the range test of "auto".
    sample_targets: np.ndarray | None = None
    skipped: dict = field(default_factory=dict)
    skipped_lines: list = field(default_factory=list)
    from_cache: bool = False
    seconds: float = 0.0
    n_validation: int = 0
    #: Σ L(0, y) over the training rows: the zero model's loss.
    zero_loss: float = 0.0
    encoding: Encoding | None = None
    levels: LevelTable | None = None


def held_out(lines: np.ndarray, fraction: float) -> np.ndarray:
    """Which rows (by file line number) the validation set holds: a fixed pseudo-random
    function of the line number, so every pass (and the cache) agrees without storing a
    mask, and about ``fraction`` of the rows are held out."""
    if fraction <= 0.0:
        return np.zeros(lines.shape[0], dtype=bool)
    mixed = lines.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    mixed ^= mixed >> np.uint64(29)
    mixed *= np.uint64(0xBF58476D1CE4E5B9)
    mixed ^= mixed >> np.uint64(32)
    return (mixed >> np.uint64(11)).astype(np.float64) * 2.0**-53 < fraction


class _Moments:
    """Per-feature mean and variance of the values present (NaN: missing), merged block by
    block (Chan et al.), in float64, with each column's count of values and of missing
    cells. A block without a missing cell takes exactly the arithmetic of a plain mean.

    Values so large that a column's sum or sum of squares overflows (near 1e154 and
    beyond) make its mean or M2 infinite, quietly: :meth:`overflowed` names such a column
    (it cannot be standardised) instead of numpy warning in the middle of the pass."""

    def __init__(self, d: int):
        self.count = np.zeros(d, dtype=np.int64)
        self.missing = np.zeros(d, dtype=np.int64)
        self.mean = np.zeros(d)
        self.m2 = np.zeros(d)
        self.largest = np.zeros(d)  # the largest magnitude: what an error shows

    def add(self, X: np.ndarray) -> None:
        from ._kernels.encode import block_moments

        d = X.shape[1]
        counts, block_mean, block_m2 = np.empty(d, dtype=np.int64), np.empty(d), np.empty(d)
        # one kernel, two passes over the block (numpy took eight, with temporaries)
        block_moments(X, counts, block_mean, block_m2, self.largest)
        self.missing += X.shape[0] - counts
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            self._merge(counts, block_mean, block_m2)

    def _merge(self, rows: np.ndarray, block_mean: np.ndarray, block_m2: np.ndarray) -> None:
        total = self.count + rows
        first = self.count == 0  # (inf·0 would make an overflowed column NaN, not inf)
        share = rows / np.maximum(total, 1)
        delta = block_mean - self.mean
        merged_mean = self.mean + delta * share
        merged_m2 = self.m2 + block_m2 + delta**2 * (self.count * rows / np.maximum(total, 1))
        self.mean = np.where(first, block_mean, merged_mean)
        self.m2 = np.where(first, block_m2, merged_m2)
        self.count = total

    def overflowed(self) -> int | None:
        """The first feature whose mean or variance overflowed float64 (None: none)."""
        with np.errstate(over="ignore", invalid="ignore"):
            variance = self.m2 / np.maximum(1, self.count)
        bad = ~(np.isfinite(self.mean) & np.isfinite(variance))
        return int(np.argmax(bad)) if bad.any() else None

    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / np.maximum(1, self.count))


class _MissingCells:
    """What a fit does with the rows that hold a missing feature cell (see the module's
    docstring): keep them (``impute``), leave them out, or stop at the first."""

    def __init__(self, schema, policy: str, on_bad_rows: str):
        self.schema = schema
        self.policy = policy
        self.drop = policy == "skip" or (policy == "error" and on_bad_rows == "skip")
        self.stop = policy == "error" and on_bad_rows == "error"

    def complete_rows(self, block) -> np.ndarray | None:
        """The rows without a missing feature cell (None: keep every row)."""
        if self.policy == "impute":
            return None
        absent = np.isnan(block.X).any(axis=1)
        if block.codes is not None and block.codes.shape[1]:
            absent |= (block.codes == MISSING_CODE).any(axis=1)
        if not absent.any():
            return None
        if self.stop:
            self._refuse(block, int(np.argmax(absent)))
        return ~absent

    def _refuse(self, block, row: int):
        schema = self.schema
        numeric = np.flatnonzero(np.isnan(block.X[row]))
        if numeric.size:
            column = schema.numeric_features[int(numeric[0])]
        else:
            column = schema.text_features[int(np.argmax(block.codes[row] == MISSING_CODE))]
        raise CsvError(
            "missing value; fill it in, drop the column, or use missing='impute' (the "
            "column's mean and an indicator) or missing='skip'.",
            path=schema.path, line=int(block.line_numbers[row]), column=column,
        )  # fmt: skip


def _take(block, rows):
    """``(X, codes, y, lines)`` of a block, restricted to ``rows`` (a mask; None: all)."""
    X, codes, y, lines = block.X, block.codes, block.y, block.line_numbers
    if rows is None:
        return X, codes, y, lines
    return X[rows], None if codes is None else codes[rows], y[rows], lines[rows]


class _FirstPass:
    """What the first pass gathers, block by block: the row statistics of every block
    (:func:`fastgd.sources.block_statistics`), the numeric columns' moments, the row
    sample (``auto``), the rows skipped."""

    def __init__(self, schema, *, options: dict, loss, rng, progress, validation_fraction,
                 sample_rows, fit_intercept, epsilon):  # fmt: skip
        self.schema = schema
        self.options = options
        self.missing_cells = _MissingCells(schema, options["missing"], options["on_bad_rows"])
        self.loss = loss
        self.epsilon = epsilon
        self.fit_intercept = fit_intercept
        self.progress = progress
        self.validation_fraction = validation_fraction
        self.stats = StreamStats()
        self.moments = _Moments(len(schema.numeric_features))
        self.sampler = RowSampler(sample_rows, rng) if sample_rows else None
        self.summary: BlockStatistics | None = None
        # the raw rows are the encoded ones: their norms come from this pass
        self.norms = not options["standardize"] and not schema.text_features
        self.dropped: dict[str, int] = {}
        self.dropped_lines: list[int] = []
        #: The level table (the growing one while reading): a text target's class names.
        self.levels: LevelTable | None = None

    def gather(self, block) -> None:
        keep = self.missing_cells.complete_rows(block)
        if keep is not None:
            self._count_dropped(block.line_numbers[~keep])
        X, codes, y, lines = _take(block, keep)
        if self.validation_fraction > 0.0:
            train = ~held_out(lines, self.validation_fraction)
            self.stats.n_validation += X.shape[0] - int(train.sum())
            X, codes, y = X[train], None if codes is None else codes[train], y[train]
        if X.shape[0] == 0:
            return
        self.moments.add(X)
        part = block_statistics(
            X, y, fit_intercept=self.fit_intercept, loss=self.loss, epsilon=self.epsilon,
            norms=self.norms,  # else from the encoded rows, in one later pass
        )  # fmt: skip
        self.summary = part if self.summary is None else self.summary.merge(part)
        if self.sampler is not None:
            self.sampler.add(X if codes is None else np.hstack([X, codes]), y)
        self._check_labels(self.summary.labels, more_only=True)
        self.stats.n_rows += X.shape[0]
        if self.progress is not None:
            self.progress(0, self.stats.n_rows, None)

    def _count_dropped(self, lines: np.ndarray) -> None:
        self.dropped["missing"] = self.dropped.get("missing", 0) + lines.shape[0]
        room = 10 - len(self.dropped_lines)
        self.dropped_lines.extend(int(line) for line in lines[:room])

    def add_skipped(self, block) -> None:
        stats = self.stats
        for reason, count in block.skipped.items():
            stats.skipped[reason] = stats.skipped.get(reason, 0) + count
        stats.skipped_lines.extend(block.skipped_lines[: 10 - len(stats.skipped_lines)])

    def _label_names(self, labels) -> list:
        names = self.levels.target_levels if self.levels is not None else None
        if names is None:
            return labels.tolist()
        return [names[int(code)] for code in labels]

    def _check_labels(self, labels, more_only: bool) -> None:
        """Two classes or more (k > 2: one weight vector per class, ``fastgd.stream_multi``),
        at most ``MAX_CLASSES`` (more is most likely a regression target)."""
        if labels is None:
            return
        count = labels.shape[0]
        if count <= MAX_CLASSES and (more_only or count >= 2):
            return
        schema = self.schema
        shown = self._label_names(labels)
        if count > MAX_CLASSES:
            found, advice = (
                f"more than {MAX_CLASSES}: {shown[:10]} ...",
                " A target of that many values is most likely a regression target: use a "
                "regression loss.",
            )
        else:
            found, advice = f"{count}: {shown}", ""
        raise CsvError(
            f"loss={self.loss.name!r} needs two classes or more (at most {MAX_CLASSES}) in "
            f"the target column {schema.target!r}; found {found}.{advice}",
            path=schema.path, line=None, column=schema.target,
        )  # fmt: skip

    def _check_moments(self) -> None:
        """Refuse to standardise a column whose variance overflows float64."""
        column = self.moments.overflowed()
        if column is None:
            return
        raise CsvError(
            "cannot standardise this feature: its values (up to about "
            f"{float(self.moments.largest[column]):.3g} in "
            "magnitude) are too large for its variance to fit in a float64. Rescale the "
            "column (divide it by a power of ten) or log-transform it before training.",
            path=self.schema.path, column=self.schema.numeric_features[column],
        )  # fmt: skip

    def finish(self, started: float, levels: LevelTable | None) -> StreamStats:
        stats, summary = self.stats, self.summary
        self.levels = levels
        for reason, count in self.dropped.items():
            stats.skipped[reason] = stats.skipped.get(reason, 0) + count
        stats.skipped_lines = sorted(stats.skipped_lines + self.dropped_lines)[:10]
        if stats.n_rows == 0:
            every = " (every row was skipped)" if stats.skipped else ""
            raise CsvError(f"no data rows to train on{every}.", path=self.schema.path)
        if self.validation_fraction > 0.0 and stats.n_validation == 0:
            raise CsvError(
                f"validation_fraction={self.validation_fraction} held out no row of "
                f"{stats.n_rows}; use a larger fraction or more rows.",
                path=self.schema.path,
            )
        if self.loss.classification:
            self._check_labels(summary.labels, more_only=False)
            stats.labels = summary.labels
            stats.classes = self._classes(summary.labels)
        stats.zero_loss = summary.zero_loss
        if self.options["standardize"] and self.options.get("encoding") is None:
            self._check_moments()  # (a given encoding brings its own scales)
        self._encode(stats, levels)
        stats.seconds = time.perf_counter() - started
        return stats

    def _classes(self, labels: np.ndarray) -> np.ndarray:
        """The classes in the model: a text target's strings, sorted (``classes[1]`` is the
        positive class, as for numbers); ``labels`` otherwise."""
        if self.levels is None or self.levels.target_levels is None:
            return labels
        return np.array(sorted(self._label_names(labels)))

    def _encode(self, stats: StreamStats, levels) -> None:
        """The encoding of what the pass found, and the statistics in its features."""
        schema, options = self.schema, self.options
        moments = self.moments
        given = options.get("encoding")
        if given is not None:
            encoding = _given_encoding(given, moments, options["standardize"])
        else:
            encoding = Encoding.learn(
                schema.numeric_features, moments.mean, moments.std(), moments.missing,
                table=levels, text=schema.text_features, standardize=options["standardize"],
                impute=options["missing"] == "impute", max_categories=options["max_categories"],
                hash_bits=options["hash_features"], columns=schema.feature_names,
            )  # fmt: skip
        if levels is not None:
            encoding.bind(levels)
        if not options["standardize"]:
            _warn_about_scales(schema, moments)
        stats.encoding, stats.levels = encoding, levels
        stats.n_features = encoding.n_features
        stats.feature_names = encoding.feature_names
        scaler = encoding.scaler()
        if scaler is not None:
            stats.mean, stats.scale = scaler["mean"], scaler["scale"]
        if self.norms and not encoding.indicators and not moments.missing.any():
            stats.max_row_norm = self.summary.max_row_norm
        sample = self.sampler.rows if self.sampler is not None else None
        if sample is not None:
            d = len(schema.numeric_features)
            codes = sample[:, d:].astype(np.int32) if schema.text_features else None
            stats.sample = encoding.encode(sample[:, :d], codes, dtype=np.float64)
            stats.sample_targets = self.sampler.targets


def _given_encoding(given: Encoding, moments: _Moments, standardize: bool) -> Encoding:
    """A fresh copy of ``fit_csv``'s ``encoding`` (its features, levels and scales: the
    weights it was trained with keep their meaning), bound to nothing yet. Only a change of
    ``standardize`` changes it: scales of 1, or the standard deviations of this pass."""
    record = given.to_dict()
    if given.standardize != standardize:
        std = moments.std()
        usable = np.isfinite(std) & (std > 0.0)
        scale = np.where(usable, std, 1.0) if standardize else np.ones(len(given.numeric))
        record.update(standardize=standardize, scale=[float(v) for v in scale])
    return Encoding.from_dict(record)


def _warn_about_scales(schema, moments: _Moments) -> None:
    """Warn when unstandardised numeric columns differ in scale by more than
    ``SCALE_RATIO_WARNING`` (empty and all-zero columns aside). A column's scale is its
    root mean square ``sqrt(mean² + std²)``, not its spread alone: an offset (a zip code
    near 10,000 that varies by 100) conditions the descent as badly as a wide spread."""
    scale = np.sqrt(moments.mean**2 + moments.std() ** 2)
    usable = np.isfinite(scale) & (scale > 0) & (moments.count > 0)
    if usable.sum() < 2:
        return
    names = np.asarray(schema.numeric_features, dtype=object)[usable]
    scale = scale[usable]
    large, small = int(np.argmax(scale)), int(np.argmin(scale))
    if scale[large] <= SCALE_RATIO_WARNING * scale[small]:
        return
    warnings.warn(
        f"{schema.path}: the numeric columns' scales differ by a factor of "
        f"{scale[large] / scale[small]:.3g} ({names[large]!r}: root mean square "
        f"{scale[large]:.3g}; {names[small]!r}: {scale[small]:.3g}) and standardize=False: "
        "gradient descent may crawl or diverge. Standardise (the default) unless the "
        "columns are already on comparable scales.",
        ScaleWarning,
        stacklevel=4,
    )


def _first_pass(schema, *, options: dict, dtype, block_rows, cache_dir, loss, rng, progress,
                validation_fraction, sample_rows, fit_intercept,
                epsilon) -> tuple[BlockCache, StreamStats]:  # fmt: skip
    """Read the CSV once (or its valid cache), write the cache, and gather the statistics
    (the row sample only for ``auto``); the encoding comes from them. The largest row norm
    comes from this pass when the rows need no encoding (no standardising, no text column,
    no missing cell); else from the encoded rows, in one later pass."""
    started = time.perf_counter()
    settings = dict(
        options=options, dtype=dtype, block_rows=block_rows, cache_dir=cache_dir, loss=loss,
        rng=rng, progress=progress, validation_fraction=validation_fraction,
        sample_rows=sample_rows, fit_intercept=fit_intercept, epsilon=epsilon,
    )  # fmt: skip
    cache = None
    if options["use_cache"]:
        cache = BlockCache.open(schema, dtype=dtype, cache_dir=cache_dir, notify=True)
    bad_rows = set(cache.skipped) - {"missing_target"} if cache is not None else set()
    if bad_rows and options["on_bad_rows"] == "error":
        # Written by a run that skipped bad rows: this run must stop at the first one.
        # (A missing target skips its row in every mode.)
        cache = None
    gathered = _FirstPass(
        schema, options=options, loss=loss, rng=rng, progress=progress,
        validation_fraction=validation_fraction, sample_rows=sample_rows,
        fit_intercept=fit_intercept, epsilon=epsilon,
    )  # fmt: skip
    if cache is None:
        cache, levels = _read_csv(schema, gathered, dtype, block_rows, cache_dir, options)
        return cache, _finish(gathered, started, levels, cache)
    gathered.stats.from_cache = True
    gathered.levels = cache.levels
    rng_state = rng.bit_generator.state
    try:
        for block in cache.blocks(block_rows):  # checks every chunk's checksum
            _check_codes(cache, block)
            gathered.gather(block)
    except CacheChecksumError as exc:
        # Damaged: nothing was trained yet. Discard it and start again from the CSV.
        cache.discard(exc.reason)
        rng.bit_generator.state = rng_state
        return _first_pass(schema, **settings)
    gathered.stats.skipped = dict(cache.skipped)
    gathered.stats.skipped_lines = list(cache.skipped_lines)
    return cache, _finish(gathered, started, cache.levels, cache)


def _finish(gathered: _FirstPass, started: float, levels, cache) -> StreamStats:
    """``gathered.finish``; its data error (one class, no rows left, ...) comes after the
    cache was committed: the error's ``cache`` says where it stays (None: no cache)."""
    try:
        return gathered.finish(started, levels)
    except CsvError as error:
        cache.close()
        error.cache = None if cache.path is None else str(cache.path)
        raise


def _check_codes(cache: BlockCache, block) -> None:
    """Refuse (as damaged) a cached block whose codes its level table does not hold."""
    if block.codes is None or not block.codes.shape[1]:
        return
    if cache.levels is None:
        error = CacheChecksumError(f"the cache {cache.path} has codes but no level table.")
        error.reason = "it has codes but no level table"
        raise error
    sizes = np.array([len(levels) for levels in cache.levels.levels])
    low, high = block.codes.min(axis=0), block.codes.max(axis=0)
    if (low < MISSING_CODE).any() or (high >= sizes).any():
        error = CacheChecksumError(f"the cache {cache.path} holds codes outside its level table.")
        error.reason = "its codes and its level table disagree"
        raise error


def _read_csv(schema, gathered: _FirstPass, dtype, block_rows, cache_dir, options):
    """The first pass over the CSV itself: every block into the cache (unless
    ``use_cache`` is off) and the statistics. Returns the blocks the epochs read (the cache,
    or a :class:`_CsvBlocks`) and the level table."""
    levels = gathered.levels = LevelTable.for_schema(schema)
    # stopping at the first missing cell: the reader's error names the first bad row of
    # any kind (the rows it gives are the same as with "keep")
    missing = "error" if gathered.missing_cells.stop else "keep"
    reading = dict(block_rows=block_rows, dtype=dtype, on_bad_rows=options["on_bad_rows"],
                   missing=missing)  # fmt: skip
    if not options["use_cache"]:
        blocks = _CsvBlocks(schema, levels, reading)
        blocks.count = _gather_csv(schema, gathered, reading, levels, None)
        return blocks, levels
    with BlockCache.writer(schema, dtype=dtype, cache_dir=cache_dir) as writer:
        _gather_csv(schema, gathered, reading, levels, writer)
        return writer.commit(levels=levels), levels


def _gather_csv(schema, gathered: _FirstPass, reading: dict, levels, writer) -> int:
    """Read every block of the CSV into ``gathered`` (and ``writer``); the number of
    blocks that held rows."""
    count = 0
    blocks = iter_csv(schema, levels=levels, **reading)
    try:
        for block in blocks:
            if writer is not None:
                writer.append(block)
            gathered.add_skipped(block)
            if block.rows:
                gathered.gather(block)
                count += 1
    finally:
        close = getattr(blocks, "close", None)
        if close is not None:
            close()
    if gathered.stats.n_rows == 0:
        every = " (every row was skipped)" if gathered.stats.skipped or gathered.dropped else ""
        raise CsvError(f"no data rows to train on{every}.", path=schema.path)
    return count


class _CsvBlocks:
    """The blocks of a CSV read again from the file for every pass (``use_cache=False``):
    the cache's interface, with the first pass's level table frozen (the same codes; a level
    the file gained since reads as unseen). Blocks come in file order whatever ``order``
    asks (a file is read from its start); a shuffled epoch still permutes each block's rows."""

    path = None

    def __init__(self, schema, levels: LevelTable, reading: dict):
        self.schema = schema
        self.levels = levels
        self.reading = reading
        self.dtype = np.dtype(reading["dtype"])
        self.count = 0

    def block_count(self, block_rows: int) -> int:
        return self.count

    def blocks(self, block_rows: int, order=None):
        frozen = self.levels.frozen()
        reading = {**self.reading, "block_rows": block_rows}
        blocks = iter_csv(self.schema, levels=frozen, **reading)
        try:
            for block in blocks:
                if block.rows:
                    yield block
        finally:
            close = getattr(blocks, "close", None)
            if close is not None:
                close()

    def close(self) -> None:
        pass


class _CsvSource(BlockSource):
    """The engine's data source for a cached CSV: epochs over memory-mapped blocks (a
    :class:`fastgd.sources.BlockSource`), each encoded as it is read, with the statistics
    of the first pass."""

    def __init__(self, cache: BlockCache, stats: StreamStats, *, block_rows: int,
                 fit_intercept: bool, progress: Callable | None, missing_cells: _MissingCells,
                 validation_fraction: float = 0.0):  # fmt: skip
        super().__init__(
            stats.n_rows, stats.n_features, cache.dtype, fit_intercept=fit_intercept,
            block_rows=block_rows, progress=progress,
        )  # fmt: skip
        self.values_per_row = float(stats.encoding.values_per_row)
        self.validation_fraction = validation_fraction
        self.cache = cache
        self.stats = stats
        self.missing_cells = missing_cells
        #: fit_csv's ``on_epoch_state`` (None: none).
        self.on_epoch_state: Callable | None = None
        self.positive = None
        #: ``(classes, lookup)`` of a k-class fit (``fastgd.stream_multi``): the blocks' y
        #: become class indices; None: ±1 for two classes, or regression targets.
        self.k_classes = None
        if stats.labels is not None and stats.labels.shape[0] == 2:
            self.positive = stats.labels[1]
            if stats.levels is not None and stats.levels.target_levels is not None:
                # a text target: y holds codes; the positive class is the second string
                self.positive = float(stats.levels.target_levels.index(str(stats.classes[1])))

    def block_count(self) -> int:
        return self.cache.block_count(self.block_rows)

    def epoch(self, state, spec, order):
        state, loss_total, bad = super().epoch(state, spec, order)
        if self.on_epoch_state is not None:
            self.on_epoch_state(state.t, state.slots)
        return state, loss_total, bad

    def blocks(self, order=None):
        return self._blocks(order)

    def numbered_blocks(self, order=None):
        # The cache's block numbers (the CSV read again yields file order whatever the
        # order); a block left without training rows is skipped, its number with it.
        yield from self._numbered(order)

    def _blocks(self, order=None, validation=False):
        """The training rows (``validation``: the held-out rows) of each block, ready for
        the kernels."""
        for _, X, y in self._numbered(order, validation):
            yield X, y

    def _numbered(self, order=None, validation=False):
        """:meth:`_blocks` with each block's number in the cache."""
        in_file_order = order is None or isinstance(self.cache, _CsvBlocks)
        numbers = itertools.count() if in_file_order else iter(order)
        for number, block in zip(numbers, self.cache.blocks(self.block_rows, order), strict=False):
            rows = self.missing_cells.complete_rows(block)
            if self.validation_fraction > 0.0:
                chosen = held_out(block.line_numbers, self.validation_fraction)
                chosen = chosen if validation else ~chosen
                rows = chosen if rows is None else rows & chosen
            elif validation:
                return
            if rows is not None and not rows.any():
                continue
            yield int(number), *self._prepare(block, rows)

    def validation_score(self, loss_is_classification: bool):
        """``score(coef, intercept)`` on the held-out rows: accuracy for classification
        losses (k classes: of the largest of the k scores), else R² (higher is better), for
        the engine's early stopping."""
        from .metrics import RunningAccuracy, RunningRegression

        def score(coef, intercept) -> float:
            metric = RunningAccuracy() if loss_is_classification else RunningRegression()
            for X, y in self._blocks(validation=True):
                scores = decision_values(X, coef, intercept)
                if self.k_classes is not None:  # y: class indices (_prepare), k scores
                    metric.add(y, scores.argmax(axis=1))
                elif loss_is_classification:
                    metric.add(y > 0, scores[:, 0] > 0)
                else:
                    metric.add(y, scores[:, 0])
            if loss_is_classification:
                return metric.accuracy(empty=0.0)
            return metric.r2(constant_target=0.0)

        return score

    def _prepare(self, block, rows=None):
        X, codes, y, _ = _take(block, rows)
        X = self.stats.encoding.encode(X, codes, dtype=self.dtype)
        if self.k_classes is not None:
            y = stream_multi.class_indices(y, *self.k_classes)
        elif self.positive is not None:
            y = np.where(y == self.positive, 1.0, -1.0).astype(self.dtype)
        elif not y.flags.writeable:
            y = np.array(y)
        return X, np.ascontiguousarray(y)

    # -- what the first pass found (else a pass over the blocks, as any BlockSource)
    def max_row_norm(self) -> float:
        if self.stats.max_row_norm is not None:  # found by the first pass
            return self.stats.max_row_norm
        return super().max_row_norm()

    def sample(self, rng) -> RowSample:
        # The first pass's uniform sample of rows (drawn with the fit's generator).
        targets = self.stats.sample_targets
        if self.positive is not None:  # as the epochs see them (_prepare): ±1
            targets = np.where(targets == self.positive, 1.0, -1.0)
        targets = np.ascontiguousarray(targets, dtype=self.dtype)
        return RowSample(self.stats.sample.astype(self.dtype), np.empty(0), targets=targets)

    def losses(self, loss: int, epsilon: float, coef, intercept: float) -> tuple[float, float]:
        if coef is None:  # the zero model's loss came from the first pass
            return self.stats.zero_loss, self.stats.zero_loss
        return super().losses(loss, epsilon, coef, intercept)


def fit_csv(
    path,
    *,
    target: str,
    features=None,
    drop=None,
    delimiter: str | None = None,
    header="infer",
    block_rows: int = DEFAULT_BLOCK_ROWS,
    dtype="float64",
    cache_dir=None,
    standardize: bool = True,
    missing: str = "impute",
    max_categories: int = 1000,
    hash_features: int | None = None,
    categorical=None,
    use_cache: bool = True,
    on_bad_rows: str = "error",
    validation_fraction: float = 0.0,
    progress: Callable | None = None,
    on_first_pass: Callable | None = None,
    coef_init=None,
    intercept_init=None,
    slots_init=None,
    on_epoch_state: Callable | None = None,
    encoding: Encoding | None = None,
    **fit_options,
) -> engine.FitResult:
    """Fit a linear model to a CSV file of any size (see the module's docstring).

    Parameters
    ----------
    path : str or path-like
        The CSV (``.gz``, ``.bz2``, ``.zst`` compressed files too).
    target : str
        The target column's name. For a classification loss it may hold two or more
        (up to ``MAX_CLASSES``) distinct values, numbers or text (the classes are returned
        as they are written). More than two classes (or ``multiclass="multinomial"``) train
        one weight vector per class in the same one pass over each block per epoch
        (``fastgd.stream_multi``; one-vs-rest, or ``multiclass="multinomial"``: softmax).
    features, drop : list of str or comma-separated str, optional
        The feature columns (default: every column but the target), or columns to leave out.
    delimiter, header :
        As for :func:`fastgd.io.read_schema` (default: sniffed / inferred).
    block_rows : int
        Rows per block: memory is bounded by a few blocks.
    dtype : {"float64", "float32"}
        Of the cache and the model.
    cache_dir : path, optional
        Where the binary cache goes (default: next to the CSV).
    use_cache : bool, default True
        False: no cache; every epoch reads the CSV again (blocks in file order; a shuffled
        epoch permutes the rows of each block), with the encoding of the first pass.
    standardize : bool, default True
        Centre and scale the numeric features with means and standard deviations from the
        first pass; the returned coefficients apply to the raw features (the scaler is
        folded in), and ``extras["scaler"]`` holds the means and scales (over the encoded
        features). Without it, numeric columns whose scales differ by more than 1e3 give a
        :class:`ScaleWarning`.
    missing : {"impute", "skip", "error"}
        A missing feature cell: the column's mean plus a missing-indicator feature (a text
        cell: a "missing" level); or skip its row (counted in ``extras["skipped"]``); or
        stop with an error naming file, line and column (with ``on_bad_rows="skip"``: skip
        it as a bad row). A missing target always skips its row.
    max_categories : int, default 1000
        Per text column, the ``max_categories - 1`` most frequent levels get a feature of
        their own; the rarer ones (and levels unseen in training) share an "other" one.
    hash_features : int, optional
        BITS: encode every text column by the hashing trick into ``2**BITS`` features
        instead (1 to 20).
    categorical : list of str or comma-separated str, optional
        Columns read as text whatever they hold (e.g. numeric codes of categories).
    on_bad_rows : {"error", "skip"}
        Stop at the first bad row (naming the file, line and column), or skip bad rows and
        count them (``extras["skipped"]``).
    validation_fraction : float in [0, 1)
        Hold out about this fraction of the rows (chosen by a fixed function of their line
        number, so every pass agrees) and stop early on their score: R², or accuracy for
        classification losses (``tol``/``n_iter_no_change`` then watch it; see
        ``validation_score`` in :func:`fastgd.fit`). ``FitResult.validation_scores`` holds
        it per epoch.
    progress : callable, optional
        ``progress(epoch, rows_done, rows_total)`` after each block (epoch 0: the first
        pass, whose total is not known yet: None).
    on_first_pass : callable, optional
        ``on_first_pass(stats)`` once the first pass is done, before the first epoch, with
        its :class:`StreamStats` (rows, encoded feature names, classes, scaler, encoding,
        skipped rows): what a checkpoint written from ``callback`` needs (its weights are
        in the standardised space with ``standardize``).
    coef_init, intercept_init :
        Starting weights (e.g. a checkpoint), in the raw (encoded, unscaled) features' space:
        a vector and a number, or with k weight vectors (more than two classes, or
        ``multiclass="multinomial"``) a (k, n_features) array and k intercepts.
    slots_init : array of shape (slots, n_features + 1) or (k, slots, n_features + 1), optional
        The update rule's state to start from (``FitResult.slots``, a model file's
        ``rule_state``), as :func:`fastgd.fit` takes it. Unlike ``coef_init`` it is in the
        space the engine trains in (the standardised features with ``standardize``, as
        ``FitResult.slots`` is): it is passed on unchanged.
    on_epoch_state : callable, optional
        ``on_epoch_state(t, slots)`` after each epoch's steps, before ``callback``: the step
        counter and the update rule's slots (the engine's array, updated in place: copy it
        to keep it); what a checkpoint needs to continue the same optimizer. Called for an
        epoch the engine then rejects (divergence) too, with no ``callback`` after it; not
        called by the full-batch ``nesterov`` and ``lbfgs``, whose state is not slots.
    encoding : fastgd.io.encoding.Encoding, optional
        Train with this encoding instead of learning one (continuing a model: its
        ``encoding``, so ``coef_init`` and ``slots_init`` keep their features): its columns
        are read (in its order, its text columns as text; ``features``/``drop``, if given,
        must select the same columns), its levels kept (a level it does not know reads as
        other), its means and scales used (with another ``standardize``: scales of 1, or
        this file's standard deviations); ``max_categories``, ``hash_features`` and
        ``categorical`` are then its own. The first pass still reads (and caches) the file.
    **fit_options
        Every other option of :func:`fastgd.fit` (``loss``, ``strategy``, ``batch_size``,
        ``learning_rate``, ``eta0``, ``max_iter``, ``tol``, ``shuffle``, ``random_state``,
        ``callback``, ...). ``sample_weight`` is not available.

    Returns
    -------
    FitResult (or MultiFitResult for k classes: ``coef`` (k, d), ``intercept`` (k,))
        As :func:`fastgd.fit`, plus ``extras``: ``feature_names`` (the encoded features),
        ``target``, ``rows``, ``skipped``/``skipped_lines``, ``scaler`` (or None),
        ``encoding`` (:class:`fastgd.io.encoding.Encoding`), ``first_pass_seconds``,
        ``cache`` (the cache's path), ``from_cache``.
    """
    started = time.perf_counter()
    options = _check_options(
        standardize=standardize, missing=missing, max_categories=max_categories,
        hash_features=hash_features, on_bad_rows=on_bad_rows,
    )  # fmt: skip
    options["use_cache"] = bool(use_cache)
    block_rows = check_scalar(block_rows, "block_rows", kind="int", low=1)
    validation_fraction = check_scalar(validation_fraction, "validation_fraction", low=0.0)
    if validation_fraction >= 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1); got {validation_fraction!r}.")
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype={dtype.name!r}; allowed values: 'float64', 'float32'.")
    if target is None:
        raise ValueError("target is required: the name of the target column.")
    unsupported = sorted(set(fit_options) - set(_FIT_DEFAULTS))
    if unsupported:
        raise TypeError(
            f"fit_csv got unsupported option(s) {unsupported}; it takes fastgd.fit's options "
            f"except sample_weight and the in-memory ones: {sorted(_FIT_DEFAULTS)}."
        )
    resolved = engine.resolve_options(**{**_FIT_DEFAULTS, **fit_options})
    selection = dict(target=target, features=features, drop=drop, delimiter=delimiter,
                     header=header, categorical=categorical)  # fmt: skip
    if encoding is None:
        schema = read_schema(path, **selection)
    else:
        schema = _encoding_schema(path, encoding, selection)
        options["encoding"] = encoding
    _check_text_target(schema, resolved["loss"])
    cache, stats = _first_pass(
        schema, options=options, dtype=dtype, block_rows=block_rows, cache_dir=cache_dir,
        loss=resolved["loss"], rng=resolved["rng"], progress=progress,
        validation_fraction=validation_fraction,
        sample_rows=engine.AUTO_SAMPLE_ROWS if resolved["schedule"].name == "auto" else 0,
        fit_intercept=resolved["fit_intercept"], epsilon=resolved["epsilon"],
    )  # fmt: skip
    if on_first_pass is not None:
        on_first_pass(stats)
    source = _CsvSource(
        cache, stats, block_rows=block_rows, fit_intercept=resolved["fit_intercept"],
        progress=progress, validation_fraction=validation_fraction,
        missing_cells=_MissingCells(schema, missing, on_bad_rows),
    )  # fmt: skip
    if validation_fraction > 0.0:
        resolved["validation_score"] = source.validation_score(resolved["loss"].classification)
    source.on_epoch_state = on_epoch_state
    coef_start, intercept_start = _standardized_start(stats, coef_init, intercept_init)
    if stream_multi.needs_k_classes(stats.classes, resolved["loss"], resolved["multiclass"]):
        starts = {"coef_init": coef_start, "intercept_init": intercept_start,
                  "slots_init": slots_init}  # fmt: skip
        return _fit_k_classes(source, stats, resolved, cache, started, starts, schema.target)
    try:
        result = engine.train(
            source, resolved, classes=stats.classes, coef_init=coef_start,
            intercept_init=intercept_start, slots_init=slots_init,
        )  # fmt: skip
    finally:
        cache.close()  # its data files (the blocks' mappings are gone with the epochs)
    _fold_scaler(result, stats, dtype)
    _add_extras(result, stats, schema.target, cache)
    result.fit_time = time.perf_counter() - started
    return result


def _fit_k_classes(source, stats, resolved, cache, started, starts, target):
    """fit_csv's epochs for k > 1 weight vectors (``fastgd.stream_multi``)."""
    try:
        stream_multi.check_k_class_options(resolved)
        source.positive = None
        source.k_classes = (np.asarray(stats.classes), stream_multi.class_lookup(stats))
        result = stream_multi.fit_k_classes(
            source, stats, resolved, multiclass=resolved["multiclass"],
            auto_step=engine._k_output_auto_step(resolved), **starts,
        )  # fmt: skip
    finally:
        cache.close()
    stream_multi.fold_scaler(result, stats, source.dtype)
    _add_extras(result, stats, target, cache)
    result.fit_time = time.perf_counter() - started
    return result


def _add_extras(result, stats: StreamStats, target: str, cache) -> None:
    result.extras.update(
        feature_names=list(stats.feature_names), target=target, rows=stats.n_rows,
        skipped=dict(stats.skipped), skipped_lines=list(stats.skipped_lines),
        first_pass_seconds=stats.seconds, from_cache=stats.from_cache,
        cache=None if cache.path is None else str(cache.path),
        validation_rows=stats.n_validation, encoding=stats.encoding,
    )  # fmt: skip


def _encoding_schema(path, encoding: Encoding, selection: dict):
    """The schema of the columns a given encoding reads (see ``fit_csv``'s ``encoding``):
    a data error naming the columns the file lacks, or holds text in where the encoding
    reads numbers; a ValueError for a ``features``/``drop`` that selects other columns."""
    if not isinstance(encoding, Encoding):
        raise TypeError(f"encoding must be a fastgd.io.encoding.Encoding; got {encoding!r}.")
    reading = {key: selection[key] for key in ("target", "delimiter", "header")}
    layout = read_schema(path, **reading)
    present = set(layout.columns)
    missing = [name for name in encoding.columns if name not in present]
    if missing:
        raise CsvError(
            f"the encoding's column(s) {_names(missing)} are not in the file's header "
            f"({len(missing)} of {len(encoding.columns)} missing).", path=layout.path,
        )  # fmt: skip
    if selection["features"] is not None or selection["drop"] is not None:
        chosen = set(read_schema(path, **selection).feature_names)
        extra = [name for name in chosen if name not in set(encoding.columns)]
        left_out = [name for name in encoding.columns if name not in chosen]
        if extra or left_out:
            raise ValueError(
                "features/drop must select the encoding's columns; "
                f"not in it: {_names(extra) or 'none'}; left out: {_names(left_out) or 'none'}."
            )
    schema = read_schema(
        path, features=encoding.columns, categorical=encoding.text or None, **reading
    )
    wrong = [name for name in encoding.numeric if name not in schema.numeric_features]
    if wrong:
        raise CsvError(
            f"the column(s) {_names(wrong)} hold text, but the encoding reads numbers there.",
            path=schema.path, column=wrong[0],
        )  # fmt: skip
    return schema


def _names(names: list) -> str:
    """Up to 10 column names, quoted."""
    return ", ".join(repr(name) for name in names[:10]) + (" ..." if len(names) > 10 else "")


def _check_text_target(schema, loss) -> None:
    """A text target is a classification's labels: a regression loss cannot use it."""
    if loss.classification or schema.column_types.get(schema.target) != "text":
        return
    raise CsvError(
        f"the target column holds text, and loss={loss.name!r} is a regression loss; use a "
        "classification loss for labels: loss='log_loss' (or loss='hinge').",
        path=schema.path, column=schema.target,
    )  # fmt: skip


def _check_options(*, standardize, missing, max_categories, hash_features, on_bad_rows) -> dict:
    """fit_csv's reading and encoding options, checked."""
    if on_bad_rows not in ("error", "skip"):
        raise ValueError(f"on_bad_rows={on_bad_rows!r}; allowed values: 'error', 'skip'.")
    if missing not in MISSING_POLICIES:
        allowed = ", ".join(repr(policy) for policy in MISSING_POLICIES)
        raise ValueError(f"missing={missing!r}; allowed values: {allowed}.")
    if not isinstance(standardize, (bool, np.bool_)):
        raise TypeError(f"standardize must be True or False; got {standardize!r}.")
    max_categories = check_scalar(max_categories, "max_categories", kind="int", low=2)
    if hash_features is not None:
        hash_features = check_scalar(
            hash_features, "hash_features", kind="int", low=1, high=MAX_HASH_BITS
        )
    return {
        "standardize": bool(standardize), "missing": missing, "on_bad_rows": on_bad_rows,
        "max_categories": int(max_categories),
        "hash_features": None if hash_features is None else int(hash_features),
    }  # fmt: skip


def _standardized_start(stats: StreamStats, coef_init, intercept_init):
    """Raw-space starting weights in the standardised space: ``w_std = w·scale``,
    ``b_std = b + w·mean`` (one weight vector, or k as rows of a (k, d) ``coef_init``)."""
    if stats.mean is None or coef_init is None:
        return coef_init, intercept_init
    raw = np.asarray(coef_init, dtype=np.float64)
    if raw.ndim == 2:
        intercept = 0.0 if intercept_init is None else np.asarray(intercept_init, np.float64)
        return raw * stats.scale, intercept + raw @ stats.mean
    raw = raw.reshape(-1)
    return raw * stats.scale, float(intercept_init or 0.0) + float(raw @ stats.mean)


def _fold_scaler(result, stats: StreamStats, dtype: np.dtype) -> None:
    """The weights on the raw features (``extras["scaler"]`` keeps the means and scales,
    ``extras["standardized_coef"]`` the weights as trained)."""
    result.extras["scaler"] = None
    if stats.mean is None:
        return
    result.extras["scaler"] = {"mean": stats.mean, "scale": stats.scale}
    standardized = result.coef.astype(np.float64)
    raw_coef = standardized / stats.scale
    result.extras["standardized_coef"] = result.coef
    result.extras["standardized_intercept"] = float(result.intercept)
    result.intercept = dtype.type(float(result.intercept) - float(raw_coef @ stats.mean))
    result.coef = raw_coef.astype(dtype)


#: fastgd.fit's options and defaults, which fit_csv passes on.
_FIT_DEFAULTS = engine.fit_defaults()


#: fit_csv's encoding keywords and their defaults, for read_whole.
_ENCODING_DEFAULTS = {
    "standardize": True, "missing": "impute", "max_categories": 1000, "hash_features": None,
}  # fmt: skip


def read_whole(
    path, *, target: str, loss: str = "squared_error", dtype="float64", **reading
) -> tuple[StreamStats, tuple]:
    """``fit_csv``'s first pass over a file small enough for memory (the playground's):
    the same reader, missing-cell policy, label checks and learned encoding, plus the rows
    it kept, ``(X, codes, y)`` as read (numbers with NaN, text codes, targets), for
    ``stats.encoding.encode``. ``reading``: ``fit_csv``'s column keywords (``features``,
    ``drop``, ``delimiter``, ``categorical``) and encoding keywords (``missing``,
    ``standardize``, ``max_categories``, ``hash_features``), with its defaults. Errors name
    the file, line and column (``CsvError``)."""
    encoding = {key: reading.pop(key) for key in _ENCODING_DEFAULTS if key in reading}
    settings = _check_options(**{**_ENCODING_DEFAULTS, **encoding}, on_bad_rows="error")
    schema = read_schema(path, target=target, **reading)
    loss_row = loss_by_name(loss)
    _check_text_target(schema, loss_row)
    first = _FirstPass(
        schema, options=settings, loss=loss_row, rng=None, progress=None,
        validation_fraction=0.0, sample_rows=0, fit_intercept=True, epsilon=0.1,
    )  # fmt: skip
    levels = first.levels = LevelTable.for_schema(schema)
    # stopping at the first missing cell: the reader's error names it (as fit_csv's does)
    reading = "error" if first.missing_cells.stop else "keep"
    kept = []
    for block in iter_csv(schema, levels=levels, missing=reading, dtype=dtype):
        first.add_skipped(block)
        if block.rows:
            first.gather(block)
            kept.append(_take(block, first.missing_cells.complete_rows(block))[:3])
    stats = first.finish(time.perf_counter(), levels)  # no rows left: a CsvError
    if stats.classes is not None and len(stats.classes) > 2:
        # (the playground draws and trains one weight vector)
        raise CsvError(
            f"loss={loss!r} reads two classes here; the target column {schema.target!r} holds "
            f"{len(stats.classes)}: {np.asarray(stats.classes).tolist()[:10]}. For more classes "
            "train with fastgd.fit_csv or `fastgd train --multiclass`.",
            path=schema.path, column=schema.target,
        )  # fmt: skip
    rows = tuple(
        None if kept[0][k] is None else np.concatenate([p[k] for p in kept]) for k in range(3)
    )
    return stats, rows
