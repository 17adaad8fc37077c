"""Fully shuffled epochs over gathered chunks, the gather of the next chunk overlapped with
the steps on the current one (issue 15).

A shuffled epoch of in-memory dense rows runs chunk by chunk: the rows of the next
``chunk`` positions of the order are copied into a contiguous buffer
(``_kernels.pipeline.gather_rows``: independent loads, at the memory's pace), and the epoch
kernel (``sgd_epoch``, ``batch_epoch``) runs on the buffer in file order (a streaming read).
With two threads a second thread gathers the next chunks while the caller's thread steps
through the current one (three buffers; both kernels release the GIL); whichever thread
is free claims the next chunk to gather (``_Claims``), so neither waits on the other while
there is work.

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
from ._thresholds import large_batches

__all__ = ["CHUNK_BYTES", "MIN_GATHER_BYTES", "GatheredEpochs", "chunk_rows", "gathers"]

#: Bytes of one chunk's rows (the buffers stay well inside a shared L3; a chunk is one
#: Python hand-off and one kernel call, so it must not be too small either).
CHUNK_BYTES = 2 << 20
#: X of fewer bytes keeps the plain shuffled epoch: its random reads hit the cache anyway.
#: Measured (CPU time of one SGD epoch, d = 100 float64, 32 MB L3, a loaded machine):
#: 40 MB: plain 3.4 ms, gathered on one thread 3.4, on two 2.5 (the stepping thread's
#: share); 80 MB: 7.3, 7.8, 4.6; 800 MB: 176, 120, 46.
MIN_GATHER_BYTES = 32 << 20

_NO_ORDER = np.empty(0, dtype=np.int64)
#: Chunk buffers: one being stepped through, the others being gathered.
_SLOTS = 3


def chunk_rows(row_bytes: int, rows_per_step: int) -> int:
    """Rows per chunk: whole steps (1 row in SGD, a batch in mini-batch), about
    :data:`CHUNK_BYTES` of them, at least one step."""
    steps = max(1, CHUNK_BYTES // max(1, row_bytes * rows_per_step))
    return steps * rows_per_step


def gathers(X, strategy: str, shuffle: int, rows_per_step: int, row_memory: np.ndarray) -> bool:
    """Whether an epoch of the in-memory data ``X`` runs over gathered chunks: a dense,
    fully shuffled SGD epoch, or mini-batch epoch whose batches are accumulated serially on
    any number of threads (``_thresholds.large_batches``: the choice never depends on the
    threads), on at least :data:`MIN_GATHER_BYTES`, a step's rows within
    :data:`CHUNK_BYTES`, without a per-row memory (SAGA's is indexed by row)."""
    serial_steps = strategy == "sgd" or (
        strategy == "minibatch" and not large_batches(rows_per_step, X.shape[1])
    )
    return (
        isinstance(X, np.ndarray)
        and shuffle == options.SHUFFLE_FULL
        and serial_steps
        and rows_per_step * X.shape[1] * X.itemsize <= CHUNK_BYTES
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
        _run_chunks(run, overlap and run.n_chunks > 1)
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
        """Copy chunk ``c``'s rows into buffer slot ``c % SLOTS`` (releases the GIL)."""
        source = self.buffers
        out_X, out_y, out_weight = source.views(c % _SLOTS, self._rows(c))
        gather_rows(source.X, source.y, source.sample_weight, self.order, c * self.chunk,
                    out_X, out_y, out_weight)  # fmt: skip

    def steps(self, c: int) -> bool:
        """The steps of chunk ``c`` (gathered in its slot); True when one diverged."""
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


class _Claims:
    """Who gathers which chunk. Chunk ``j`` goes to slot ``j % SLOTS``, free once the steps
    of chunk ``j - SLOTS`` are done; whichever thread comes first claims the next chunk
    (in order), so the stepping thread gathers too instead of waiting (on a machine whose
    other core is busy it runs the whole epoch itself, as the serial run does). Which
    thread copies a chunk changes no value."""

    def __init__(self, run: _Run):
        self.run = run
        self.condition = threading.Condition()
        self.next_chunk = 0  # the next chunk to claim
        self.stepped = 0  # chunks whose steps are done
        self.gathered = [False] * run.n_chunks
        self.failures: list[BaseException] = []
        self.stopping = False

    def _claim(self) -> int:
        """The next chunk if its slot is free (under the lock), else -1."""
        j = self.next_chunk
        if j < self.run.n_chunks and j < self.stepped + _SLOTS:
            self.next_chunk += 1
            return j
        return -1

    def _gather(self, j: int) -> None:
        self.run.gather(j)
        with self.condition:
            self.gathered[j] = True
            self.condition.notify_all()

    def await_chunk(self, c: int) -> None:
        """Return once chunk ``c`` is gathered, gathering claimable chunks meanwhile."""
        while True:
            with self.condition:
                if self.failures:
                    raise self.failures[0]
                if self.gathered[c]:
                    return
                j = self._claim()
                if j < 0:  # chunk c is being gathered by the other thread
                    self.condition.wait()
                    continue
            self._gather(j)

    def stepped_through(self, c: int) -> None:
        with self.condition:
            self.stepped = c + 1
            self.condition.notify_all()

    def helper(self) -> None:
        """The second thread: claim and gather chunks until none is left."""
        try:
            while True:
                with self.condition:
                    j = self._claim()
                    while j < 0 and not self.stopping and self.next_chunk < self.run.n_chunks:
                        self.condition.wait()
                        j = self._claim()
                    if j < 0 or self.stopping:
                        return
                self._gather(j)
        except BaseException as error:  # handed to the stepping thread, raised there
            with self.condition:
                self.failures.append(error)
                self.condition.notify_all()

    def stop(self) -> None:
        with self.condition:
            self.stopping = True
            self.condition.notify_all()


def _run_chunks(run: _Run, overlap: bool) -> None:
    """The chunks of ``run`` in order, the gathers shared with a second thread when
    ``overlap``. The thread lives for one epoch only (nothing is left running at a
    ``fork()``); a failure in it is raised here."""
    claims = _Claims(run)
    thread = threading.Thread(target=claims.helper, name="fastgd-gather", daemon=True)
    if overlap:
        thread.start()
    try:
        for c in range(run.n_chunks):
            claims.await_chunk(c)
            if run.steps(c):
                break
            claims.stepped_through(c)
    finally:
        claims.stop()
        if overlap:
            thread.join()
