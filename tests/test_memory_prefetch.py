"""memory's address-based prefetch plan: a hint only, so a wrong plan would never show in
any result; these tests check what it requests."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from fastgd._kernels.memory import ROWS_AHEAD, plan_block_stream, row_ahead, stream_step
from fastgd._kernels.order import fill_epoch_order
from fastgd.options import SHUFFLE_BLOCK


@numba.njit
def _requested_ranges(order, block_rows, row_bytes):
    """For each position: the block-stream byte range requested there (as the epoch loops
    drive ``plan_block_stream`` and ``stream_step``) and the next block's start."""
    n = order.shape[0]
    out = np.zeros((n, 3), dtype=np.int64)
    plan = (0, 0, 0, 0)
    for k in range(n):
        if k >= plan[0]:
            plan = plan_block_stream(order, k, block_rows, row_bytes)
        begin = plan[1]
        plan = stream_step(0, plan)  # address 0: the hint never faults
        out[k, 0], out[k, 1], out[k, 2] = begin, plan[1], plan[0]
    return out


@pytest.mark.parametrize(
    ("n", "block_rows", "row_bytes"), [(1000, 64, 800), (997, 8, 24), (50, 64, 8)]
)
def test_each_block_requests_exactly_the_next_blocks_bytes_in_order(n, block_rows, row_bytes):
    order = np.empty(n, dtype=np.int64)
    fill_epoch_order(order, SHUFFLE_BLOCK, block_rows, 7)
    ranges = _requested_ranges(order, block_rows, row_bytes)
    k = 0
    while k < n:
        length = min(block_rows, n - (order[k] // block_rows) * block_rows)
        block = ranges[k : k + length]
        assert (block[:, 2] == k + length).all()
        requested = block[block[:, 1] > block[:, 0]]
        if k + length < n:  # the next block's bytes, contiguous, all requested by its end
            first = (order[k + length] // block_rows) * block_rows
            assert requested[0, 0] == first * row_bytes
            assert (requested[1:, 0] == requested[:-1, 1]).all()
            assert requested[-1, 1] == (first + min(block_rows, n - first)) * row_bytes
        else:  # the last block streams nothing
            assert requested.shape[0] == 0
        k += length


@numba.njit
def _rows_ahead(order):
    return np.array([row_ahead(order, k) for k in range(order.shape[0])])


def test_row_ahead_skips_runs_of_consecutive_rows():
    permuted = np.random.default_rng(3).permutation(40).astype(np.int64)
    ahead = _rows_ahead(permuted)
    expected = [
        permuted[k + ROWS_AHEAD] if permuted[k + ROWS_AHEAD] != permuted[k] + ROWS_AHEAD else -1
        for k in range(40 - ROWS_AHEAD)
    ]
    assert list(ahead) == expected + [-1] * ROWS_AHEAD
    assert (_rows_ahead(np.arange(40, dtype=np.int64)) == -1).all()
