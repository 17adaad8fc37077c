"""Fully shuffled epochs over gathered chunks, the gather of the next chunk overlapped with
the steps on the current one (issue 15).

A shuffled epoch of in-memory dense rows runs chunk by chunk: the rows of the next
``chunk`` positions of the order are copied into a contiguous buffer
(``_kernels.pipeline.gather_rows``: independent loads, at the memory's pace), and the epoch
kernel (``sgd_epoch``, ``batch_epoch``) runs on the buffer in file order (a streaming read).
With two threads the copy of chunk ``c + 1`` runs on a second thread while the steps of
chunk ``c`` run on the caller's: two buffers, handed back and forth, both kernels without
the GIL.

Determinism: the chunks depend only on the row width, the dtype and the batch size, never
on the threads; the overlapped run does exactly the serial run's calls on the same bytes,
so its result is the serial run's bit for bit, on any number of threads.

- Mini-batches: a chunk holds whole batches, and a batch's sums do not depend on where its
  rows lie, so the weights, intercept and step counter are today's bit for bit; the
  epoch's loss is summed per chunk (its last bits may differ from one running sum).
- Per-sample SGD: each call of ``sgd_epoch`` computes its first row's prediction as
  ``x·w + b`` where the unchunked run carries it along the previous step (the fused
  step), so the result differs from the unchunked run in the last bits at chunk starts.
  The engine therefore takes this path whenever the data qualify (:func:`gathers`),
  whatever the number of threads: one thread runs it serially.
"""

from __future__ import annotations

import threading

import numba
import numpy as np

from . import options
from ._kernels.epochs import batch_epoch, sgd_epoch
from ._kernels.pipeline import gather_rows

__all__ = ["CHUNK_BYTES", "MIN_GATHER_BYTES", "GatheredEpochs", "chunk_rows", "gathers"]

#: Bytes of one chunk's rows (two buffers stay well inside a shared L3; a chunk is one
#: Python hand-off and one kernel call, so it must not be too small either).
CHUNK_BYTES = 4 << 20
#: X of fewer bytes keeps the plain shuffled epoch: its random reads hit the cache anyway.
MIN_GATHER_BYTES = 32 << 20

_NO_ORDER = np.empty(0, dtype=np.int64)
_SLOTS = 2


def chunk_rows(row_bytes: int, rows_per_step: int) -> int:
    """Rows per chunk: whole steps (1 row in SGD, a batch in mini-batch), about
    :data:`CHUNK_BYTES` of them, at least one step."""
    steps = max(1, CHUNK_BYTES // max(1, row_bytes * rows_per_step))
    return steps * rows_per_step


def gathers(X, strategy: str, shuffle: int, parallel: bool, row_memory: np.ndarray) -> bool:
    """Whether an epoch of the in-memory data ``X`` runs over gathered chunks: a dense,
    fully shuffled SGD or serially accumulated mini-batch epoch on at least
    :data:`MIN_GATHER_BYTES`, without a per-row memory (SAGA's is indexed by row)."""
    return (
        isinstance(X, np.ndarray)
        and shuffle == options.SHUFFLE_FULL
        and (strategy == "sgd" or (strategy == "minibatch" and not parallel))
        and row_memory.shape[0] == 0
        and X.nbytes >= MIN_GATHER_BYTES
    )


def overlap_available() -> bool:
    """Whether the gather may take a second thread (Numba is allowed more than one)."""
    return numba.get_num_threads() > 1


class GatheredEpochs:
    """The chunk buffers of one data set (``X``, ``y``, ``sample_weight``, dense and
    C-contiguous), kept across epochs, and the epochs run over them."""

    def __init__(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray, rows_per_step):
        self.X, self.y, self.sample_weight = X, y, sample_weight
        self.rows_per_step = rows_per_step
        self.chunk = chunk_rows(X.shape[1] * X.itemsize, rows_per_step)
        rows = min(self.chunk, X.shape[0])
        self._X = np.empty((_SLOTS, rows, X.shape[1]), dtype=X.dtype)
        self._y = np.empty((_SLOTS, rows), dtype=y.dtype)
        weight_rows = rows if sample_weight.shape[0] > 0 else 0
        self._weight = np.empty((_SLOTS, weight_rows), dtype=sample_weight.dtype)

    def epoch(self, order: np.ndarray, spec, state, overlap: bool):
        """One epoch over the rows in ``order`` (a permutation), from ``state`` under
        ``spec``: ``(intercept, loss, t, bad)`` as ``sgd_epoch``/``batch_epoch`` return
        (``bad``: the position in ``order``). ``overlap``: gather on a second thread."""
        run = _Run(self, order, spec, state)
        if overlap and run.n_chunks > 1:
            _overlapped(run)
        else:
            for c in range(run.n_chunks):
                run.gather(c)
                if run.steps(c):
                    break
        return run.intercept, run.loss, run.t, run.bad

    def views(self, slot: int, rows: int):
        """The buffers of ``slot``, their first ``rows`` rows (C-contiguous)."""
        weight = self._weight[slot, :rows] if self._weight.shape[1] else self.sample_weight
        return self._X[slot, :rows], self._y[slot, :rows], weight


class _Run:
    """One epoch's progress: the chunks of ``order``, the training state carried from
    chunk to chunk."""

    def __init__(self, buffers: GatheredEpochs, order: np.ndarray, spec, state):
        self.buffers, self.order, self.spec, self.state = buffers, order, spec, state
        self.chunk = buffers.chunk
        self.n_chunks = -(-order.shape[0] // self.chunk)
        self.intercept, self.t = state.intercept, state.t
        self.loss = 0.0
        self.bad = -1

    def _rows(self, c: int) -> int:
        return min(self.chunk, self.order.shape[0] - c * self.chunk)

    def gather(self, c: int) -> None:
        """Copy chunk ``c``'s rows into buffer slot ``c % 2`` (releases the GIL)."""
        source = self.buffers
        out_X, out_y, out_weight = source.views(c % _SLOTS, self._rows(c))
        gather_rows(source.X, source.y, source.sample_weight, self.order, c * self.chunk,
                    out_X, out_y, out_weight)  # fmt: skip

    def steps(self, c: int) -> bool:
        """The steps of chunk ``c`` (gathered in slot ``c % 2``); True when one diverged."""
        X, y, weight = self.buffers.views(c % _SLOTS, self._rows(c))
        state = self.state._replace(intercept=self.intercept, t=self.t)
        step_rows = self.buffers.rows_per_step
        if step_rows == 1:
            result = sgd_epoch(X, y, weight, _NO_ORDER, self.spec, state, 0)
        else:
            result = batch_epoch(X, y, weight, _NO_ORDER, step_rows, self.spec, state, False, 0)
        self.intercept, loss, self.t, bad = result
        self.loss += loss
        if bad >= 0:
            self.bad = c * self.chunk + bad
        return bad >= 0


def _overlapped(run: _Run) -> None:
    """The chunks of ``run``, each gathered on a second thread while the caller's thread
    steps through the one before: slot ``c % 2`` passes from the gather (``ready``) to the
    steps and back (``free``). The thread lives for one epoch only (nothing is left
    running at a ``fork()``); a failure in it is raised here."""
    ready = [threading.Semaphore(0) for _ in range(_SLOTS)]
    free = [threading.Semaphore(1) for _ in range(_SLOTS)]
    stopping = threading.Event()
    failures: list[BaseException] = []

    def produce() -> None:
        try:
            for c in range(run.n_chunks):
                free[c % _SLOTS].acquire()
                if stopping.is_set():
                    return
                run.gather(c)
                ready[c % _SLOTS].release()
        except BaseException as error:  # handed to the caller's thread, raised there
            failures.append(error)
            for slot in ready:
                slot.release()

    thread = threading.Thread(target=produce, name="fastgd-gather", daemon=True)
    thread.start()
    try:
        for c in range(run.n_chunks):
            ready[c % _SLOTS].acquire()
            if failures:
                raise failures[0]
            diverged = run.steps(c)
            free[c % _SLOTS].release()
            if diverged:
                break
    finally:
        stopping.set()
        for slot in free:
            slot.release()
        thread.join()
