"""Software prefetch: hiding memory latency when rows are visited out of file order.

A shuffled epoch reads rows at random, and each row's SGD step depends on the previous
one, so the processor cannot overlap the misses by itself. Two measured remedies (see
benchmarks/README.md for the numbers):

- ``prefetch_row``: request the row that will be used a few steps ahead;
- for ``shuffle="block"``, stream the next block (a contiguous run of rows) into cache
  while the current block is processed, so the permuted reads inside a block hit cache.

``prefetch`` is LLVM's ``llvm.prefetch`` intrinsic: a hint that never faults and changes no
result, only timing.

In a per-row loop, prefetch by address (``prefetch_address``, ``prefetch_bytes``,
``row_ahead``, ``plan_block_stream``): those helpers take the rows' address (an int64, e.g.
``np.int64(X.ctypes.data)``) and plain integers, never an array to hold. Every array passed
to an inlined helper is a new reference (an atomic increment and decrement); once the row
loop held ``prefetch_for_order``, Numba's pass that removes such pairs gave up on the whole
loop, arrays of the step included: 8 atomic pairs a row, 40-85% of an epoch's time in
NRT_incref/NRT_decref (perf, 200k x 100). By address, the single-output per-sample and
serial mini-batch loops hold none (optimised LLVM IR) and their epochs ran (1M x 100
float64, min of 9 runs alternating with the array helpers): per-sample ``shuffle="block"``
53.7 -> 36.1 ms, mini-batch B = 256 block order 53.7 -> 38.6 ms, file order 44.8 -> 42.6.
The array-taking helpers stay for loops whose rows cost far more than that (the optimizer
rules of k outputs, the gather pipeline).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from ._config import scalar

#: Rows requested ahead of use in a shuffled order (1 to 16 measured; 4 was best).
ROWS_AHEAD = 4
_LINE_BYTES = 64


@intrinsic
def prefetch(typingctx, array, flat_index):
    """Hint that ``array.flat[flat_index]`` (a C-contiguous array) will be read soon."""
    signature = types.void(array, flat_index)

    def codegen(context, builder, sig, args):
        array_type = sig.args[0]
        data = context.make_array(array_type)(context, builder, args[0]).data
        address = builder.gep(data, [args[1]])
        byte_pointer = ir.IntType(8).as_pointer()
        function_type = ir.FunctionType(
            ir.VoidType(), [byte_pointer, ir.IntType(32), ir.IntType(32), ir.IntType(32)]
        )
        function = cgutils.get_or_insert_function(
            builder.module, function_type, "llvm.prefetch.p0i8"
        )
        read, high_locality, data_cache = (ir.Constant(ir.IntType(32), v) for v in (0, 3, 1))
        builder.call(
            function, [builder.bitcast(address, byte_pointer), read, high_locality, data_cache]
        )
        return context.get_dummy_value()

    return signature, codegen


@intrinsic
def prefetch_address(typingctx, address):
    """``llvm.prefetch`` of the byte at ``address`` (an int64): a hint, never a fault."""
    signature = types.void(address)

    def codegen(context, builder, sig, args):
        byte_pointer = ir.IntType(8).as_pointer()
        function_type = ir.FunctionType(
            ir.VoidType(), [byte_pointer, ir.IntType(32), ir.IntType(32), ir.IntType(32)]
        )
        function = cgutils.get_or_insert_function(
            builder.module, function_type, "llvm.prefetch.p0i8"
        )
        pointer = builder.inttoptr(args[0], byte_pointer)
        read, high_locality, data_cache = (ir.Constant(ir.IntType(32), v) for v in (0, 3, 1))
        builder.call(function, [pointer, read, high_locality, data_cache])
        return context.get_dummy_value()

    return signature, codegen


@scalar
def prefetch_bytes(address, begin, end):
    """Request the cache lines of bytes ``begin..end`` after ``address``."""
    for offset in range(begin, end, _LINE_BYTES):
        prefetch_address(address + offset)
    if end > begin:
        prefetch_address(address + end - 1)


@scalar
def row_ahead(order, k):
    """The row ``ROWS_AHEAD`` positions after ``k`` if it is not in a run of consecutive
    rows, else -1. Within a run the hardware prefetcher streams the rows by itself, and
    software requests only took issue slots from the serial chain of steps (measured: an
    in-order SGD epoch given as an order ran 1.4-1.6x slower with them, 1M x 100 float64)."""
    ahead = k + ROWS_AHEAD
    if ahead < order.shape[0] and order[ahead] != order[k] + ROWS_AHEAD:
        return order[ahead]
    return -1


@scalar
def plan_block_stream(order, k, block_rows, row_bytes):
    """At position ``k``, the first of a block of a ``shuffle="block"`` order: where the
    next block starts in the order, its byte range in the rows (``row_bytes`` each) and the
    bytes to request per step to have it all by then (as :func:`block_stream`). The loop
    requests ``begin..min(begin + quota, end)`` each step and moves ``begin`` on."""
    n = order.shape[0]
    length = min(block_rows, n - (order[k] // block_rows) * block_rows)
    if k + length >= n:
        return k + length, 0, 0, 0
    first = (order[k + length] // block_rows) * block_rows
    begin = first * row_bytes
    end = (first + min(block_rows, n - first)) * row_bytes
    lines = (end - begin + _LINE_BYTES - 1) // _LINE_BYTES
    return k + length, begin, end, ((lines + length - 1) // length) * _LINE_BYTES


@scalar
def rows_address(X):
    """For the address helpers, taken before the row loop: the address of the rows of the
    C-contiguous 2-D ``X`` and their bytes per row (a block-stream plan starts as
    ``(0, 0, 0, 0)``)."""
    return np.int64(X.ctypes.data), X.shape[1] * X.itemsize


@scalar
def stream_step(address, plan):
    """One step's share of the block stream ``plan`` (:func:`plan_block_stream`'s
    ``(next block's position, begin, end, quota)``) over the rows at ``address``: request
    it and return the plan moved on."""
    next_block, begin, end, quota = plan
    stop = min(begin + quota, end)
    prefetch_bytes(address, begin, stop)
    return next_block, stop, end, quota


@scalar
def prefetch_row_at(address, row_bytes, row):
    """Request row ``row`` (rows of ``row_bytes`` at ``address``); -1: none."""
    if row >= 0:
        prefetch_bytes(address, row * row_bytes, (row + 1) * row_bytes)


@scalar
def prefetch_row(X, i):
    """Request every cache line of row ``i`` of the C-contiguous 2-D array ``X``."""
    d = X.shape[1]
    per_line = _LINE_BYTES // X.itemsize
    first = i * d
    for offset in range(0, d, per_line):
        prefetch(X, first + offset)
    prefetch(X, first + d - 1)


@scalar
def block_stream(X, order, k, block_rows, state):
    """Stream the next block of a ``shuffle="block"`` order while this one is processed.

    Call once per position ``k`` of the order, in order. ``state`` (int64[4], zeroed
    before the epoch) holds the position where the next block starts, the flat range of
    X still to request and how many flat elements to request per row.
    """
    n = order.shape[0]
    d = X.shape[1]
    per_line = _LINE_BYTES // X.itemsize
    if k >= state[0]:
        length = min(block_rows, n - (order[k] // block_rows) * block_rows)
        state[0] = k + length
        if k + length < n:
            next_first = (order[k + length] // block_rows) * block_rows
            next_length = min(block_rows, n - next_first)
            state[1] = next_first * d
            state[2] = (next_first + next_length) * d
            lines = (state[2] - state[1] + per_line - 1) // per_line
            state[3] = ((lines + length - 1) // length) * per_line
        else:
            state[1] = 0
            state[2] = 0
    stop = min(state[1] + state[3], state[2])
    for flat in range(state[1], stop, per_line):
        prefetch(X, flat)
    state[1] = stop


@scalar
def prefetch_for_order(X, order, k, block_rows, stream):
    """The prefetch for position ``k`` of ``order``: stream the next block of a block
    shuffle (``block_rows`` > 0), else request the row ``ROWS_AHEAD`` positions ahead. One
    scheme at a time: combined, they compete (measured)."""
    if block_rows > 0:
        block_stream(X, order, k, block_rows, stream)
    elif k + ROWS_AHEAD < order.shape[0]:
        prefetch_row(X, order[k + ROWS_AHEAD])
