"""Sizes behind two of the engine's policies, in a module of their own so that the data
sources (``fastgd.sources``) can apply them without importing the engine (which imports
the sources): whether a batch is accumulated in parallel, and how many rows the ``auto``
step samples. The engine re-exports both; the policies that use them live in the engine.
"""

from __future__ import annotations

import numba

from ._kernels.epochs import MIN_CHUNK_ROWS

__all__ = ["AUTO_SAMPLE_ROWS", "PARALLEL_MIN_VALUES", "large_batches", "parallel_batches"]

#: Rows sampled for the curvature behind ``learning_rate="auto"``.
AUTO_SAMPLE_ROWS = 10_000
#: A batch is accumulated in parallel when it holds at least this many values
#: (rows × features); smaller batches run serially (see benchmarks/README.md).
PARALLEL_MIN_VALUES = 1 << 16


def parallel_batches(rows: int, values_per_row: float) -> bool:
    """Whether a batch of ``rows`` rows is accumulated in parallel: when it is large enough
    (:func:`large_batches`) and Numba has threads."""
    return large_batches(rows, values_per_row) and numba.get_num_threads() > 1


def large_batches(rows: int, values_per_row: float) -> bool:
    """Whether a batch of ``rows`` rows is large enough to accumulate in parallel: at least
    ``PARALLEL_MIN_VALUES`` values and at least two chunks to share (whatever the threads)."""
    return rows * values_per_row >= PARALLEL_MIN_VALUES and rows >= 2 * MIN_CHUNK_ROWS


# The engine's divergence and step policies (fastgd.engine and fastgd.multi apply them).
#: An epoch whose loss exceeds this many times the larger of the objective at the starting
#: weights and that of the all-zero model has diverged.
EXPLOSION_FACTOR = 1e10
#: ``adaptive`` divides the step by this after ``n_iter_no_change`` epochs without progress
#: and stops once the step falls below ``ADAPTIVE_MIN_ETA`` (as scikit-learn).
ADAPTIVE_DIVISOR = 5.0
ADAPTIVE_MIN_ETA = 1e-6
#: When a run with ``learning_rate="auto"`` diverges anyway (an adversarial row order, rows
#: of extreme leverage outside the sample), a fit returns to the best state so far and
#: divides the step by this, at most this often.
AUTO_BACKTRACK_DIVISOR = 4.0
AUTO_MAX_BACKTRACKS = 8
