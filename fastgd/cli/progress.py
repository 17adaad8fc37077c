"""Progress on stderr: a one-line bar, hand-written (no dependency)."""

from __future__ import annotations

import math
import sys
import time


def _human(count: float) -> str:
    """1234 -> '1,234'; 1.5e6 -> '1.5M'."""
    if count >= 1e6:
        return f"{count / 1e6:.1f}M"
    if count >= 1e4:
        return f"{count / 1e3:.0f}k"
    return f"{count:,.0f}"


def render_progress(
    *,
    label: str,
    epoch: int | None,
    epochs: int | None,
    rows_done: int,
    rows_total: int | None,
    rows_per_second: float | None,
    loss: float | None,
    width: int = 24,
) -> str:
    """One line of the progress bar (no carriage return), e.g.
    ``epoch 3/20 [#########...............]  37%  1.2M rows/s  loss 0.0123``."""
    parts = []
    if epoch:
        parts.append(f"epoch {epoch}/{epochs}" if epochs else f"epoch {epoch}")
    else:
        parts.append(label)
    if rows_total:
        fraction = min(1.0, rows_done / rows_total)
        filled = round(fraction * width)
        parts.append(f"[{'#' * filled}{'.' * (width - filled)}] {100 * fraction:3.0f}%")
    else:
        parts.append(f"{_human(rows_done)} rows")
    if rows_per_second is not None:
        parts.append(f"{_human(rows_per_second)} rows/s")
    if loss is not None:
        parts.append(f"loss {loss:.6g}")
    return "  ".join(parts)


class ProgressBar:
    """A one-line progress display on a terminal, redrawn at most every ``interval``
    seconds; silent when disabled or when the stream is not a terminal.

    ``update(epoch, rows_done, rows_total)`` has ``fastgd.fit_csv``'s ``progress``
    signature (epoch 0: the first pass over the file); ``epoch_done(epoch, loss)`` records
    the loss of a finished epoch.
    """

    def __init__(
        self,
        label: str,
        *,
        epochs: int | None = None,
        stream=None,
        enabled: bool = True,
        interval: float = 0.1,
        clock=time.monotonic,
    ):
        self.stream = sys.stderr if stream is None else stream
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(enabled and isatty is not None and isatty())
        self.label = label
        self.epochs = epochs
        self.interval = interval
        self.clock = clock
        self.epoch: int | None = None
        self.loss: float | None = None
        self.rows_done = 0
        self.rows_total: int | None = None
        self._epoch_started = clock()
        self._last_seen = self._epoch_started
        self._last_draw = -math.inf
        self._drawn = 0

    def update(self, epoch: int | None, rows_done: int, rows_total: int | None) -> None:
        now = self.clock()
        if epoch != self.epoch:
            self._epoch_started = self._last_seen
            self.epoch = epoch
        self._last_seen = now
        self.rows_done, self.rows_total = rows_done, rows_total
        if self.enabled and now - self._last_draw >= self.interval:
            self._draw(now)

    def epoch_done(self, epoch: int, loss: float) -> None:
        self.loss = float(loss)

    def _draw(self, now: float) -> None:
        elapsed = now - self._epoch_started
        line = render_progress(
            label=self.label,
            epoch=self.epoch,
            epochs=self.epochs,
            rows_done=self.rows_done,
            rows_total=self.rows_total,
            rows_per_second=self.rows_done / elapsed if elapsed > 0 else None,
            loss=self.loss,
        )
        padding = " " * max(0, self._drawn - len(line))
        self.stream.write("\r" + line + padding)
        self.stream.flush()
        self._drawn = len(line)
        self._last_draw = now

    def close(self) -> None:
        """Erase the line (so that messages after it start clean)."""
        if self.enabled and self._drawn:
            self.stream.write("\r" + " " * self._drawn + "\r")
            self.stream.flush()
            self._drawn = 0
