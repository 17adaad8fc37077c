"""The gather of a shuffled epoch's rows into a contiguous buffer (``fastgd._pipeline``).

A fully shuffled epoch reads X at random, and each per-sample step waits on the previous
one, so the processor overlaps few of the misses (issue 15: 232 ms for 10⁶ × 100 float64,
9.6× one read of X). Copying the next rows of the order into a buffer has no such chain:
every row's loads are independent, and the copy runs at the memory's pace. The epoch
kernels then read the buffer in file order, where the hardware prefetcher streams it.
``fastgd._pipeline`` runs the copy of the next chunk on a second thread while the steps
run on the current one (both kernels release the GIL).
"""

from __future__ import annotations

from ._config import kernel
from .memory import prefetch, prefetch_row

#: Rows requested ahead of the copy. The copy has no dependency chain, so it can keep more
#: rows in flight than an SGD step (memory.ROWS_AHEAD = 4). Measured on 10⁶ × 100 float64
#: (CPU time of one gathered epoch): none 69-74 ms, 4 rows 51-55, 8 rows 41, 16 rows 45,
#: 32 or 64 rows 51.
GATHER_ROWS_AHEAD = 8


@kernel
def gather_rows(X, y, sample_weight, order, start, out_X, out_y, out_weight):
    """Copy the rows ``order[start], order[start + 1], ...`` of ``X`` (and their targets and,
    when ``sample_weight`` is not empty, weights) into the first rows of ``out_X``, ``out_y``
    and ``out_weight``, filling ``out_y.shape[0]`` of them (``order`` must hold as many from
    ``start`` on). Copies only: the values are bit for bit those of X."""
    m = out_y.shape[0]
    n = order.shape[0]
    d = X.shape[1]
    weighted = sample_weight.shape[0] > 0
    for k in range(m):
        ahead = start + k + GATHER_ROWS_AHEAD
        if ahead < n:
            prefetch_row(X, order[ahead])
            prefetch(y, order[ahead])
        i = order[start + k]
        for j in range(d):
            out_X[k, j] = X[i, j]
        out_y[k] = y[i]
        if weighted:
            out_weight[k] = sample_weight[i]
