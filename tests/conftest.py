"""Shared test helpers: the named tolerances and generic hypothesis strategies.

Every comparison of a kernel with the numpy reference takes its tolerance from the one table
below, so that loosening one is a visible, reviewed change.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from fastgd.options import LOSSES, PENALTIES, SCHEDULES

# ---------------------------------------------------------------------------------------------
# Named tolerances
# ---------------------------------------------------------------------------------------------

#: Kernel (in the dtype of X) against the float64 reference after the same arithmetic: the
#: kernels are compiled with fastmath ``reassoc``/``contract``/``arcp``, so dot products and
#: gradient sums are summed in another order and multiply-adds may be fused. float64 errors
#: stay within a few hundred ulps of the data's scale (O(1) in the tests) over an epoch of
#: small steps. float32 kernels round every product and partial sum to float32
#: (eps = 1.2e-7); these bounds are about 10x the largest error measured on the tests'
#: problems, and far below the effect of a wrong step (an O(eta) change, eta >= 1e-3 there).
TOL = {
    np.float64: {"rtol": 1e-10, "atol": 1e-12},
    np.float32: {"rtol": 2e-5, "atol": 5e-6},
}

#: One scalar formula evaluated by the kernel and by the reference (fused multiply-add or a
#: reciprocal instead of a division can change the last bits, nothing else).
# atol: below the smallest normal float (2.2e-308) results are subnormal and carry fewer
# significant bits, so a reassociated product ((0.5·r)·r vs 0.5·(r·r)) legitimately differs
# there in relative terms (found by hypothesis: 2.69266e-319 vs 2.6927e-319).
SCALAR_TOL = {"rtol": 1e-13, "atol": float(np.finfo(np.float64).tiny)}


def tol(dtype) -> dict:
    """The kernel-versus-reference tolerance for data of ``dtype``."""
    return TOL[np.dtype(dtype).type]


# ---------------------------------------------------------------------------------------------
# Generic strategies
# ---------------------------------------------------------------------------------------------

LOSS_NAMES = tuple(loss.name for loss in LOSSES)
CLASSIFICATION_LOSSES = frozenset(loss.name for loss in LOSSES if loss.classification)
PENALTY_NAMES = tuple(penalty.name for penalty in PENALTIES)
SCHEDULE_NAMES = tuple(schedule.name for schedule in SCHEDULES)
#: The schedules the per-step kernels implement (the others run as ``constant``).
KERNEL_SCHEDULE_NAMES = ("constant", "optimal", "invscaling")
DTYPES = (np.float64, np.float32)

losses = st.sampled_from(LOSS_NAMES)
penalties = st.sampled_from(PENALTY_NAMES)
kernel_schedules = st.sampled_from(KERNEL_SCHEDULE_NAMES)
dtypes = st.sampled_from(DTYPES)
#: Seeds of ``np.random.default_rng`` for data drawn generically (no exact kinks or ties).
seeds = st.integers(min_value=0, max_value=2**32 - 1)


# The README's test command (``python -m pytest``) draws the same examples on every run, on
# every machine, CI or not: a fresh clone passes or fails as CI does, never on a lucky draw.
# ``--hypothesis-profile=explore`` (hypothesis' pytest option, loaded after this file) draws
# new examples each run: for runs before a release (CONTRIBUTING.md); every failure found
# becomes an ``@example``.
_DETERMINISTIC = {"derandomize": True, "deadline": None, "print_blob": True}
settings.register_profile("deterministic", **_DETERMINISTIC)
settings.register_profile("ci", **_DETERMINISTIC)  # the profile hypothesis loads when CI=true
settings.register_profile("explore", derandomize=False, deadline=None, print_blob=True)
settings.load_profile("deterministic")


def property_settings(max_examples: int) -> settings:
    """Hypothesis settings for tests that call compiled kernels: no deadline (the first call
    may compile), a bounded number of examples."""
    return settings(
        deadline=None,
        max_examples=max_examples,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# ---------------------------------------------------------------------------------------------
# Malformed sparse input (issue 10)
# ---------------------------------------------------------------------------------------------


def _break_csr(X, kind: str) -> None:
    """Damage the index arrays of the CSR matrix ``X`` in place, as code that edits them
    after construction can (scipy does not re-check)."""
    row_2 = int(X.indptr[2])  # the first stored value of row 2
    if kind == "none":
        return
    if kind == "column-huge":
        X.indices[row_2] = 10**9
    elif kind == "column-just-past":
        X.indices[row_2] = X.shape[1]
    elif kind == "column-negative":
        X.indices[row_2] = -1
    elif kind == "indptr-start":
        X.indptr[0] = 1
    elif kind == "indptr-falls":
        X.indptr[3] = X.indptr[4] + 1
    elif kind == "indptr-end":
        X.indptr[-1] += 5
    elif kind == "data-length":
        X.data = X.data[:-1]
    elif kind == "indices-float":
        X.indices = X.indices.astype(np.float64)
    else:
        raise AssertionError(kind)


#: (kind, exception, patterns its message must all contain): each names the problem and,
#: where there is one, the first row at fault (row 2 or 3 in ``malformed_csr``).
MALFORMED_CSR = [
    ("column-huge", ValueError, ["column index 1000000000", "row 2", r"\[0, 6\)"]),
    ("column-just-past", ValueError, ["column index 6", "row 2", r"\[0, 6\)"]),
    ("column-negative", ValueError, ["column index -1", "row 2", r"\[0, 6\)"]),
    ("indptr-start", ValueError, ["indptr", "start at 0", "row 0"]),
    ("indptr-falls", ValueError, ["indptr", "non-decreasing", "row 3"]),
    ("indptr-end", ValueError, ["indptr", "past", "row 49"]),
    ("data-length", ValueError, ["X.data", "X.indices", "same length"]),
    ("indices-float", TypeError, ["X.indices", "integer", "float64"]),
]


def malformed_csr(kind: str, n: int = 50, d: int = 6, seed: int = 0):
    """A 50 × 6 CSR matrix (every row stores values) and targets, damaged as ``kind``
    (``"none"``: intact)."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    dense = rng.standard_normal((n, d)) * (rng.random((n, d)) < 0.5)
    dense[:, 0] = 1.0 + rng.random(n)  # no empty row
    X = sp.csr_matrix(dense)
    y = dense @ rng.standard_normal(d)
    _break_csr(X, kind)
    return X, y


#: The scipy.sparse formats other than CSR, each damaged by :func:`out_of_range_sparse`.
SPARSE_FORMATS = ("coo", "csc", "bsr", "lil", "dok")
#: Out-of-range indices: negative, just past the end, far past it.
OUT_OF_RANGE = {"negative": lambda size: -1, "past": lambda size: size, "huge": lambda _: 10**8}


def out_of_range_sparse(fmt: str, container: str, where: str):
    """``malformed_csr("none")`` as a ``{fmt}_{container}`` (``"matrix"`` or ``"array"``)
    with one stored index out of range (``where``: a key of ``OUT_OF_RANGE``), set after
    construction as scipy lets code do. Returns X, y and the patterns the error must name
    (the index, the axis and the row, entry or block at fault)."""
    import scipy.sparse as sp

    X, y = malformed_csr("none")
    X = getattr(sp, f"{fmt}_{container}")(X)
    if fmt == "coo":  # stored entry 3 is in row 1
        bad = OUT_OF_RANGE[where](X.shape[1])
        X.col[3] = bad
        return X, y, [f"column index {bad}", "stored entry 3", r"row 1\b", r"\[0, 6\)"]
    if fmt == "csc":  # stored entry 3 is in column 0
        bad = OUT_OF_RANGE[where](X.shape[0])
        X.indices[3] = bad
        return X, y, [f"row index {bad}", "column 0", r"\[0, 50\)"]
    if fmt == "bsr":  # blocks of 2 × 2: 3 block columns
        X = getattr(sp, f"bsr_{container}")(malformed_csr("none")[0], blocksize=(2, 2))
        bad = OUT_OF_RANGE[where](3)
        X.indices[int(X.indptr[2])] = bad
        return X, y, [f"block column index {bad}", "block row 2", r"\[0, 3\)"]
    bad = OUT_OF_RANGE[where](X.shape[1])
    if fmt == "lil":
        X.rows[2][0] = bad
    else:  # dok: a key its own __setitem__ would refuse, written past it
        X._dict[(2, bad)] = 1.0
    return X, y, [f"column index {bad}", r"row 2\b", r"\[0, 6\)"]


def sparse_cases():
    """pytest ids and arguments for every (format, container, where) of
    :func:`out_of_range_sparse`."""
    return [
        (fmt, container, where)
        for fmt in SPARSE_FORMATS
        for container in ("matrix", "array")
        for where in OUT_OF_RANGE
    ]


@pytest.fixture(scope="session")
def client():
    """One Dask LocalCluster of 2 worker processes (one thread each) for every Dask test
    file: starting one costs seconds, so the files share it."""
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client
