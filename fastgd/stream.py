"""Training on CSV files larger than memory: ``fastgd.fit_csv``.

The file is read once, in blocks (``fastgd.io.iter_csv``: parsed on a background thread
while this thread works on the previous block). That first pass writes the binary cache
(``fastgd.io.BlockCache``) and gathers what training needs before its first step: the row
count, the classes, the largest row norm, the zero model's loss and a uniform sample of rows
(for ``learning_rate="auto"``), and the feature means and scales (for ``standardize``; the
row norms of the scaled rows then take one pass over the cache). Every
epoch then reads the memory-mapped cache block by block, through the engine's own epoch
loop (:func:`fastgd.engine.train`): this module supplies the engine a data source (a
:class:`fastgd.sources.BlockSource`) whose epochs run the same kernels on one block at a
time, so memory is bounded by the block size, not by the file.

Row order: with ``shuffle`` the rows of each block are permuted, and the blocks are visited
in a fresh random order each epoch; without it, epochs visit the file's order. Mini-batches
run across block boundaries (the rows left over at the end of a block start the next
batch), so with ``shuffle=False`` an epoch takes the same steps as ``fastgd.fit`` on the
whole file in memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import engine
from ._validation import check_scalar
from .io.cache import BlockCache, CacheChecksumError
from .io.csv import CsvError, iter_csv, read_schema
from .prediction import decision_values
from .sources import BlockSource, BlockStatistics, RowSample, RowSampler, block_statistics

__all__ = ["DEFAULT_BLOCK_ROWS", "StreamStats", "fit_csv"]

#: Rows per block: 65,536 rows of 50 float64 features are 26 MB.
DEFAULT_BLOCK_ROWS = 65536


@dataclass
class StreamStats:
    """What the first pass over the data found."""

    n_rows: int = 0
    n_features: int = 0
    feature_names: list = field(default_factory=list)
    max_row_norm: float = 0.0
    labels: np.ndarray | None = None
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None
    sample: np.ndarray | None = None
    #: The sampled rows' targets as read (labels stay labels), for the range test of "auto".
    sample_targets: np.ndarray | None = None
    skipped: dict = field(default_factory=dict)
    skipped_lines: list = field(default_factory=list)
    from_cache: bool = False
    seconds: float = 0.0
    n_validation: int = 0
    #: Σ L(0, y) over the training rows: the zero model's loss.
    zero_loss: float = 0.0


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
    """Per-feature mean and variance, merged block by block (Chan et al.), in float64.

    Values so large that a column's sum or sum of squares overflows (near 1e154 and
    beyond) make its mean or M2 infinite, quietly: :meth:`scale` names such a column (it
    cannot be standardised) instead of numpy warning in the middle of the pass."""

    def __init__(self, d: int):
        self.count = 0
        self.mean = np.zeros(d)
        self.m2 = np.zeros(d)
        self.largest = np.zeros(d)  # the largest magnitude: what an error shows

    def add(self, X: np.ndarray) -> None:
        rows = X.shape[0]
        with np.errstate(over="ignore", invalid="ignore"):
            block_mean = X.mean(axis=0, dtype=np.float64)
            centred = X - block_mean
            block_m2 = np.einsum("ij,ij->j", centred, centred, dtype=np.float64)
            self.largest = np.maximum(self.largest, np.abs(X).max(axis=0))
            if self.count == 0:  # (inf·0 would make an overflowed column NaN, not inf)
                self.mean, self.m2 = block_mean, block_m2
            else:
                total = self.count + rows
                delta = block_mean - self.mean
                self.mean = self.mean + delta * (rows / total)
                self.m2 = self.m2 + block_m2 + delta**2 * (self.count * rows / total)
        self.count += rows

    def overflowed(self) -> int | None:
        """The first feature whose mean or variance overflowed float64 (None: none)."""
        with np.errstate(over="ignore", invalid="ignore"):
            variance = self.m2 / max(1, self.count)
        bad = ~(np.isfinite(self.mean) & np.isfinite(variance))
        return int(np.argmax(bad)) if bad.any() else None

    def scale(self) -> np.ndarray:
        std = np.sqrt(self.m2 / max(1, self.count))
        # A constant feature keeps scale 1: it is centred to 0 and stays there.
        return np.where(std > 0.0, std, 1.0)


class _FirstPass:
    """What the first pass gathers, block by block: the row statistics of every block
    (:func:`fastgd.sources.block_statistics`), the feature moments (``standardize``), the
    row sample (``auto``), the skipped rows."""

    def __init__(self, schema, *, standardize, loss, rng, progress, validation_fraction,
                 sample_rows, fit_intercept, epsilon):  # fmt: skip
        self.schema = schema
        self.standardize = standardize
        self.loss = loss
        self.epsilon = epsilon
        self.fit_intercept = fit_intercept
        self.progress = progress
        self.validation_fraction = validation_fraction
        self.stats = StreamStats(n_features=len(schema.feature_names))
        self.stats.feature_names = list(schema.feature_names)
        self.moments = _Moments(self.stats.n_features)
        self.sampler = RowSampler(sample_rows, rng) if sample_rows else None
        self.summary: BlockStatistics | None = None

    def gather(self, block) -> None:
        stats = self.stats
        X, y = block.X, block.y
        if self.validation_fraction > 0.0:
            train = ~held_out(block.line_numbers, self.validation_fraction)
            X, y = X[train], y[train]
            stats.n_validation += block.rows - X.shape[0]
            if X.shape[0] == 0:
                return
        if self.standardize:
            moments = self.moments
            moments.add(X)
        part = block_statistics(
            X, y, fit_intercept=self.fit_intercept, loss=self.loss, epsilon=self.epsilon,
            norms=not self.standardize,  # the scaled rows' norms come from one later pass
        )  # fmt: skip
        self.summary = part if self.summary is None else self.summary.merge(part)
        if self.sampler is not None:
            self.sampler.add(X, y)
        self._check_labels(self.summary.labels, more_only=True)
        stats.n_rows += X.shape[0]
        if self.progress is not None:
            self.progress(0, stats.n_rows, None)

    def add_skipped(self, block) -> None:
        stats = self.stats
        for reason, count in block.skipped.items():
            stats.skipped[reason] = stats.skipped.get(reason, 0) + count
        stats.skipped_lines.extend(block.skipped_lines[: 10 - len(stats.skipped_lines)])

    def _check_labels(self, labels, more_only: bool) -> None:
        if labels is None or (labels.shape[0] <= 2 if more_only else labels.shape[0] == 2):
            return
        schema = self.schema
        found = f"more: {labels[:10].tolist()}" if more_only else (
            f"{labels.shape[0]}: {labels.tolist()}"
        )  # fmt: skip
        advice = (
            " Use a regression loss, or SGDClassifier.partial_fit over fastgd.iter_csv for "
            "more classes." if more_only else ""
        )  # fmt: skip
        raise CsvError(
            f"loss={self.loss.name!r} needs exactly two classes in the target column "
            f"{schema.target!r}; found {found}.{advice}",
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
            path=self.schema.path, column=self.schema.feature_names[column],
        )  # fmt: skip

    def finish(self, started: float) -> StreamStats:
        stats, summary = self.stats, self.summary
        if stats.n_rows == 0:
            raise CsvError("no data rows to train on.", path=self.schema.path)
        if self.validation_fraction > 0.0 and stats.n_validation == 0:
            raise CsvError(
                f"validation_fraction={self.validation_fraction} held out no row of "
                f"{stats.n_rows}; use a larger fraction or more rows.",
                path=self.schema.path,
            )
        if self.loss.classification:
            self._check_labels(summary.labels, more_only=False)
            stats.labels = summary.labels
        stats.max_row_norm = summary.max_row_norm
        stats.zero_loss = summary.zero_loss
        if self.standardize:
            self._check_moments()
            stats.mean, stats.scale = self.moments.mean, self.moments.scale()
        sample = self.sampler.rows if self.sampler is not None else None
        if self.standardize and sample is not None:
            sample = (sample - stats.mean) / stats.scale
        stats.sample = sample
        stats.sample_targets = self.sampler.targets if self.sampler is not None else None
        stats.seconds = time.perf_counter() - started
        return stats


def _first_pass(
    schema, *, dtype, block_rows, cache_dir, on_bad_rows, standardize, loss, rng, progress,
    validation_fraction, sample_rows, fit_intercept, epsilon,
) -> tuple[BlockCache, StreamStats]:  # fmt: skip
    """Read the CSV once (or its valid cache), write the cache, and gather the statistics
    (the feature moments only with ``standardize``, the row sample only for ``auto``). The
    largest row norm and the zero model's loss come from this pass too, unless the features
    are standardised (then the row norms come from the scaled rows, in one later pass)."""
    started = time.perf_counter()
    cache = BlockCache.open(schema, dtype=dtype, cache_dir=cache_dir, notify=True)
    if cache is not None and cache.skipped and on_bad_rows == "error":
        # Written by a run that skipped bad rows: this run must stop at the first one.
        cache = None
    gathered = _FirstPass(
        schema, standardize=standardize, loss=loss, rng=rng, progress=progress,
        validation_fraction=validation_fraction, sample_rows=sample_rows,
        fit_intercept=fit_intercept, epsilon=epsilon,
    )  # fmt: skip
    if cache is None:
        cache = _read_csv(schema, gathered, dtype, block_rows, cache_dir, on_bad_rows)
        return cache, gathered.finish(started)
    gathered.stats.from_cache = True
    rng_state = rng.bit_generator.state
    try:
        for block in cache.blocks(block_rows):  # checks every chunk's checksum
            gathered.gather(block)
    except CacheChecksumError as exc:
        # Damaged: nothing was trained yet. Discard it and start again from the CSV.
        cache.discard(exc.reason)
        rng.bit_generator.state = rng_state
        return _first_pass(
            schema, dtype=dtype, block_rows=block_rows, cache_dir=cache_dir,
            on_bad_rows=on_bad_rows, standardize=standardize, loss=loss, rng=rng,
            progress=progress, validation_fraction=validation_fraction,
            sample_rows=sample_rows, fit_intercept=fit_intercept, epsilon=epsilon,
        )  # fmt: skip
    gathered.stats.skipped = dict(cache.skipped)
    gathered.stats.skipped_lines = list(cache.skipped_lines)
    return cache, gathered.finish(started)


def _read_csv(schema, gathered: _FirstPass, dtype, block_rows, cache_dir,
              on_bad_rows) -> BlockCache:  # fmt: skip
    """The first pass over the CSV itself: every block into the cache and the statistics."""
    with BlockCache.writer(schema, dtype=dtype, cache_dir=cache_dir) as writer:
        blocks = iter_csv(schema, block_rows=block_rows, dtype=dtype, on_bad_rows=on_bad_rows)
        try:
            for block in blocks:
                writer.append(block)
                gathered.add_skipped(block)
                if block.rows:
                    gathered.gather(block)
        finally:
            close = getattr(blocks, "close", None)
            if close is not None:
                close()
        if gathered.stats.n_rows == 0:
            raise CsvError(
                "no data rows to train on"
                + (" (every row was skipped)" if gathered.stats.skipped else "")
                + ".",
                path=schema.path,
            )
        return writer.commit()


class _CsvSource(BlockSource):
    """The engine's data source for a cached CSV: epochs over memory-mapped blocks (a
    :class:`fastgd.sources.BlockSource`), with the statistics of the first pass."""

    def __init__(self, cache: BlockCache, stats: StreamStats, *, block_rows: int,
                 fit_intercept: bool, progress: Callable | None,
                 validation_fraction: float = 0.0):  # fmt: skip
        super().__init__(
            stats.n_rows, stats.n_features, cache.dtype, fit_intercept=fit_intercept,
            block_rows=block_rows, progress=progress,
        )  # fmt: skip
        self.validation_fraction = validation_fraction
        self.cache = cache
        self.stats = stats
        self.classes = stats.labels

    def block_count(self) -> int:
        return self.cache.block_count(self.block_rows)

    def blocks(self, order=None):
        return self._blocks(order)

    def _blocks(self, order=None, validation=False):
        """The training rows (``validation``: the held-out rows) of each block, ready for
        the kernels."""
        for block in self.cache.blocks(self.block_rows, order):
            rows = None
            if self.validation_fraction > 0.0:
                rows = held_out(block.line_numbers, self.validation_fraction)
                if not validation:
                    rows = ~rows
                if not rows.any():
                    continue
            elif validation:
                return
            yield self._prepare(block, rows)

    def validation_score(self, loss_is_classification: bool):
        """``score(coef, intercept)`` on the held-out rows: accuracy for classification
        losses, else R² (higher is better), for the engine's early stopping."""
        from .metrics import RunningAccuracy, RunningRegression

        def score(coef, intercept) -> float:
            metric = RunningAccuracy() if loss_is_classification else RunningRegression()
            for X, y in self._blocks(validation=True):
                predicted = decision_values(X, coef, intercept)[:, 0]
                if loss_is_classification:
                    metric.add(y > 0, predicted > 0)
                else:
                    metric.add(y, predicted)
            if loss_is_classification:
                return metric.accuracy(empty=0.0)
            return metric.r2(constant_target=0.0)

        return score

    def _prepare(self, block, rows=None) -> tuple[np.ndarray, np.ndarray]:
        X = block.X
        y = block.y
        if rows is not None:
            X, y = X[rows], y[rows]  # copies
        if self.stats.mean is not None:
            X = ((X - self.stats.mean) / self.stats.scale).astype(self.dtype)
        elif not X.flags.writeable:
            # Numba compiles read-only arrays separately; a block copy is cheap next to that.
            X = np.array(X)
        if self.classes is not None:
            y = np.where(y == self.classes[1], 1.0, -1.0).astype(self.dtype)
        elif not y.flags.writeable:
            y = np.array(y)
        return np.ascontiguousarray(X), np.ascontiguousarray(y)

    # -- what the first pass found (else a pass over the blocks, as any BlockSource)
    def max_row_norm(self) -> float:
        if self.stats.mean is None:  # found by the first pass
            return self.stats.max_row_norm
        return super().max_row_norm()

    def sample(self, rng) -> RowSample:
        # The first pass's uniform sample of rows (drawn with the fit's generator).
        targets = self.stats.sample_targets
        if self.classes is not None:  # as the epochs see them (_prepare): ±1
            targets = np.where(targets == self.classes[1], 1.0, -1.0)
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
    standardize: bool = False,
    on_bad_rows: str = "error",
    validation_fraction: float = 0.0,
    progress: Callable | None = None,
    on_first_pass: Callable | None = None,
    coef_init=None,
    intercept_init=None,
    **fit_options,
) -> engine.FitResult:
    """Fit a linear model to a CSV file of any size (see the module's docstring).

    Parameters
    ----------
    path : str or path-like
        The CSV (``.gz``, ``.bz2``, ``.zst`` compressed files too).
    target : str
        The target column's name.
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
    standardize : bool
        Centre and scale the features with means and standard deviations from the first
        pass; the returned coefficients apply to the raw features (the scaler is folded
        in), and ``extras["scaler"]`` holds the means and scales.
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
        its :class:`StreamStats` (rows, feature names, classes, scaler, skipped rows): what
        a checkpoint written from ``callback`` needs (its weights are in the standardised
        space with ``standardize``).
    coef_init, intercept_init :
        Starting weights (e.g. a checkpoint), in the raw features' space.
    **fit_options
        Every other option of :func:`fastgd.fit` (``loss``, ``strategy``, ``batch_size``,
        ``learning_rate``, ``eta0``, ``max_iter``, ``tol``, ``shuffle``, ``random_state``,
        ``callback``, ...). ``sample_weight`` is not available.

    Returns
    -------
    FitResult
        As :func:`fastgd.fit`, plus ``extras``: ``feature_names``, ``target``, ``rows``,
        ``skipped``/``skipped_lines``, ``scaler`` (or None), ``first_pass_seconds``,
        ``cache`` (the cache's path), ``from_cache``.
    """
    started = time.perf_counter()
    if on_bad_rows not in ("error", "skip"):
        raise ValueError(f"on_bad_rows={on_bad_rows!r}; allowed values: 'error', 'skip'.")
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
    settings = {**_FIT_DEFAULTS, **fit_options}
    resolved = engine.resolve_options(**settings)
    schema = read_schema(
        path, target=target, features=features, drop=drop, delimiter=delimiter, header=header
    )
    cache, stats = _first_pass(
        schema, dtype=dtype, block_rows=block_rows, cache_dir=cache_dir,
        on_bad_rows=on_bad_rows, standardize=standardize, loss=resolved["loss"],
        rng=resolved["rng"], progress=progress, validation_fraction=validation_fraction,
        sample_rows=engine.AUTO_SAMPLE_ROWS if resolved["schedule"].name == "auto" else 0,
        fit_intercept=resolved["fit_intercept"], epsilon=resolved["epsilon"],
    )  # fmt: skip
    if on_first_pass is not None:
        on_first_pass(stats)
    coef_start, intercept_start = coef_init, intercept_init
    if standardize and coef_init is not None:
        # Raw-space weights to the standardised space: w_std = w·scale, b_std = b + w·mean.
        raw = np.asarray(coef_init, dtype=np.float64).reshape(-1)
        coef_start = raw * stats.scale
        intercept_start = float(intercept_init or 0.0) + float(raw @ stats.mean)
    source = _CsvSource(
        cache, stats, block_rows=block_rows, fit_intercept=resolved["fit_intercept"],
        progress=progress, validation_fraction=validation_fraction,
    )  # fmt: skip
    if validation_fraction > 0.0:
        resolved["validation_score"] = source.validation_score(resolved["loss"].classification)
    try:
        result = engine.train(
            source, resolved, classes=stats.labels, coef_init=coef_start,
            intercept_init=intercept_start,
        )  # fmt: skip
    finally:
        cache.close()  # its data files (the blocks' mappings are gone with the epochs)
    scaler = None
    if standardize:
        scaler = {"mean": stats.mean, "scale": stats.scale}
        standardized = result.coef.astype(np.float64)
        raw_coef = standardized / stats.scale
        result.extras["standardized_coef"] = result.coef
        result.extras["standardized_intercept"] = float(result.intercept)
        result.intercept = dtype.type(float(result.intercept) - float(raw_coef @ stats.mean))
        result.coef = raw_coef.astype(dtype)
    result.extras.update(
        feature_names=list(stats.feature_names), target=schema.target, rows=stats.n_rows,
        skipped=dict(stats.skipped), skipped_lines=list(stats.skipped_lines), scaler=scaler,
        first_pass_seconds=stats.seconds, cache=str(cache.path), from_cache=stats.from_cache,
        validation_rows=stats.n_validation,
    )  # fmt: skip
    result.fit_time = time.perf_counter() - started
    return result


#: fastgd.fit's options and defaults, which fit_csv passes on.
_FIT_DEFAULTS = engine.fit_defaults()
