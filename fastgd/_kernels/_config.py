"""The one place where the kernels' compile options are set.

``reassoc`` (with ``contract``, ``nsz``, ``arcp``) lets LLVM vectorise the reductions (a row's
dot product with ``w``, gradient sums); measured here, an in-order SGD epoch ran 2.3x faster
with it. ``nnan`` and ``ninf`` are never set: they would let the compiler drop the
non-finite checks that detect divergence.
"""

from __future__ import annotations

import functools

import numba

FASTMATH = frozenset({"reassoc", "contract", "nsz", "arcp"})

#: Serial kernels: cached on disk, release the GIL, numpy's error model (no Python-level
#: ZeroDivisionError checks inside loops).
kernel = functools.partial(
    numba.njit, cache=True, nogil=True, fastmath=set(FASTMATH), error_model="numpy"
)

#: Parallel kernels (``prange`` over fixed chunks).
parallel_kernel = functools.partial(
    numba.njit,
    cache=True,
    nogil=True,
    parallel=True,
    fastmath=set(FASTMATH),
    error_model="numpy",
)

#: Small scalar helpers, inlined into the loops at the Numba IR level. Measured here: plain
#: cached ``njit`` helpers compile 30-40% faster but stay calls (Numba links separately
#: compiled functions without inlining them): the same epoch times where memory is the
#: limit, 6x slower where the loop is compute-bound (the row-order generator).
scalar = functools.partial(
    numba.njit, inline="always", cache=True, fastmath=set(FASTMATH), error_model="numpy"
)
