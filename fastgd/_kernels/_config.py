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


def compile_time_choice(stub, when_true, when_false):
    """Make ``stub(flag, ...)`` run ``when_true(flag, ...)`` or ``when_false(flag, ...)``
    (plain functions with ``stub``'s parameters, compiled by Numba and inlined), picked when
    a kernel compiles from ``flag``, a constant ``True``/``False`` at the call site (a
    literal, possibly passed down through inlined helpers).

    Why not an ``if flag:`` between two inlined helpers: Numba inlines the ``inline="always"``
    helpers of both branches (copying their IR: most of a kernel's compile time here) before
    it prunes the dead one. Behind a choice, a kernel inlines and compiles only the helper it
    runs (measured: a plain-SGD mini-batch epoch no longer inlines the six optimizer rules).
    No function is passed as an argument, so the kernels stay cacheable.
    """
    from numba.core import types
    from numba.extending import overload

    def typing(flag, *arguments):
        if isinstance(flag, types.BooleanLiteral):
            return when_true if flag.literal_value else when_false
        return None

    overload(stub, inline="always", prefer_literal=True, strict=False)(typing)
    return stub
