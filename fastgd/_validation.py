"""Input validation: the one place where user input is checked and errors are worded.

Every message names the parameter (or the row and column) and what is allowed.
"""

from __future__ import annotations

import numbers
import sys

import numpy as np

from ._kernels.epochs import scan_rows


def check_scalar(
    value,
    name: str,
    *,
    kind: str = "real",
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    allow_none: bool = False,
):
    """Check a numeric parameter and return it as a Python ``int`` or ``float``.

    ``kind``: ``"int"`` or ``"real"``; ``low``/``high`` bound it (``low_open``,
    ``high_open``: strictly).
    """
    if value is None and allow_none:
        return None
    if kind == "int":
        ok_type = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        expected = "an integer"
    else:
        ok_type = isinstance(value, numbers.Real) and not isinstance(value, bool)
        expected = "a real number"
    if not ok_type:
        none = " or None" if allow_none else ""
        raise TypeError(f"{name} must be {expected}{none}; got {value!r} ({type(value).__name__}).")
    value = int(value) if kind == "int" else float(value)
    if kind == "real" and not np.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value!r}.")
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if below or above:
        raise ValueError(f"{name} must be {_range(low, high, low_open, high_open)}; got {value!r}.")
    return value


def _range(low, high, low_open: bool, high_open: bool) -> str:
    """``> 0``, ``<= 1``, ``in [0, 1]``, ``in (0, 1)``: the range as the messages word it."""
    if high is None:
        return f"> {low}" if low_open else f">= {low}"
    if low is None:
        return f"< {high}" if high_open else f"<= {high}"
    return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


def _from_pandas(data):
    """A pandas DataFrame or Series with nullable columns (``Int64``, ``Float64``,
    ``boolean``, ...) as a float array, ``pd.NA`` becoming NaN (so that the NaN check names
    its row and column, as the estimators do); anything else unchanged. ``np.asarray``
    would give an object array that the numeric check refuses."""
    pd = sys.modules.get("pandas")  # never imported here: a pandas object means it is loaded
    if pd is None or not isinstance(data, (pd.DataFrame, pd.Series)):
        return data
    dtypes = [data.dtype] if isinstance(data, pd.Series) else list(data.dtypes)
    if not any(isinstance(dtype, pd.api.extensions.ExtensionDtype) for dtype in dtypes):
        return data
    numpy_dtypes = []
    for dtype in dtypes:
        numpy_dtype = getattr(dtype, "numpy_dtype", dtype)
        if not isinstance(numpy_dtype, np.dtype) or numpy_dtype.kind not in "biuf":
            return data  # categorical, string, ...: refused by the numeric check
        numpy_dtypes.append(numpy_dtype)
    target = np.result_type(*numpy_dtypes)
    if target.kind != "f":
        if not np.asarray(data.isna()).any():
            return data.to_numpy(dtype=target)  # labels stay integers (or booleans)
        target = np.dtype(np.float64)  # NaN stands for the missing values
    return data.to_numpy(dtype=target, na_value=np.nan)


def _as_numeric_array(data, name: str) -> np.ndarray:
    array = np.asarray(_from_pandas(data))
    if array.dtype.kind not in "biuf":
        what = "complex" if array.dtype.kind == "c" else f"non-numeric ({array.dtype})"
        raise TypeError(
            f"{name} must hold real numbers; got a {what} array. Encode or drop "
            "non-numeric columns before fitting."
        )
    return array


def scan(
    array2d: np.ndarray, name: str, sample_weight=None, extra: float = 0.0, entry: str = "row"
) -> float:
    """Raise on the first NaN/inf of ``array2d`` (naming its row, and its column for X);
    return ``max_i s_i·(‖row_i‖² + extra)`` from the same pass."""
    weights = np.empty(0) if sample_weight is None else sample_weight
    row, col, norm = scan_rows(array2d, weights, extra)
    if row >= 0:
        where = f"row {row}, column {col}" if name == "X" else f"{entry} {row}"
        raise ValueError(
            f"{name} contains a non-finite value ({float(array2d[row, col])!r}) at {where}; "
            "remove or impute NaN/inf (NaN or infinity) before fitting."
        )
    return float(norm)


def check_X(X, *, check_finite: bool = True) -> np.ndarray:
    """Return X as a C-contiguous float32/float64 2-D array, copying only if needed.

    ``check_finite=False`` leaves the NaN/inf check to a later :func:`scan` (the engine
    fuses it with the pass the ``auto`` step size needs)."""
    X = _as_numeric_array(X, "X")
    if X.ndim != 2:
        hint = " Use X.reshape(-1, 1) for a single feature." if X.ndim == 1 else ""
        raise ValueError(
            f"X must be a 2-D array of shape (n_samples, n_features); got {X.ndim}-D "
            f"array of shape {X.shape}.{hint}"
        )
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X is empty (shape {X.shape}); it needs at least one row and one column.")
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float32 if X.dtype == np.float16 else np.float64)
    X = np.ascontiguousarray(X)  # no copy when already C-contiguous
    if check_finite:
        scan(X, "X")
    return X


def is_sparse(X) -> bool:
    """Whether ``X`` is a scipy.sparse matrix or array (scipy is imported only if loaded)."""
    sparse = sys.modules.get("scipy.sparse")
    return sparse is not None and sparse.issparse(X)


def check_sparse_structure(X) -> None:
    """Raise unless the index arrays of a scipy.sparse matrix or array (any format: CSR,
    CSC, BSR, COO, DOK, LIL, DIA) describe a valid matrix of its shape.

    scipy does not re-check arrays changed after construction, and neither its conversions
    to CSR nor the kernels (nor scipy's own products) check them: an index past the shape
    reads or writes outside an array (a segfault or a heap corruption, or a silently wrong
    model for a small or negative index). One vectorised O(nnz) pass over the index arrays,
    never over the values; unsorted and repeated indices are valid (the kernels do not
    assume sorted rows). The message names the problem and its first offending row or
    stored entry. A shape other than 2-D is left to the shape checks."""
    if X.ndim != 2:
        return
    check = _STRUCTURE_CHECKS.get(X.format)
    if check is not None:
        check(X)


def _check_index_array(array, name: str) -> None:
    if not isinstance(array, np.ndarray) or array.ndim != 1 or array.dtype.kind not in "iu":
        dtype, shape = getattr(array, "dtype", type(array).__name__), np.shape(array)
        raise TypeError(f"{name} must be a 1-D integer array; got dtype {dtype}, shape {shape}.")


def _check_compressed_structure(X) -> None:
    """CSR and CSC: ``indptr`` starts at 0, never falls and ends within ``indices``, whose
    used part lies in [0, width); BSR: the same in blocks."""
    if X.format == "bsr":
        block_rows, block_cols = X.data.shape[1:] if X.data.ndim == 3 else (0, 0)
        if not block_rows or not block_cols or X.shape[0] % block_rows or X.shape[1] % block_cols:
            raise ValueError(
                f"X.data of a BSR matrix of shape {X.shape} must hold blocks (3-D) that "
                f"tile the shape; got X.data of shape {X.data.shape}."
            )
        major, minor = "block row", "block column"
        n_major, n_minor = X.shape[0] // block_rows, X.shape[1] // block_cols
    elif X.format == "csr":
        major, minor = "row", "column"
        n_major, n_minor = X.shape
    else:
        major, minor = "column", "row"
        n_major, n_minor = X.shape[::-1]
    data, indices, indptr = X.data, X.indices, X.indptr
    _check_index_array(indices, "X.indices")
    _check_index_array(indptr, "X.indptr")
    if (X.format != "bsr" and data.ndim != 1) or data.shape[0] != indices.shape[0]:
        raise ValueError(
            f"X.data and X.indices must be of the same length (one entry per stored value); "
            f"got shapes {data.shape} and {indices.shape}."
        )
    if indptr.shape[0] != n_major + 1:
        raise ValueError(
            f"X.indptr has {indptr.shape[0]} entries; a {X.format.upper()} matrix of shape "
            f"{X.shape} needs {n_major + 1} (one per {major} plus one)."
        )
    if indptr[0] != 0:
        raise ValueError(
            f"X.indptr must start at 0 (where {major} 0 begins); got {int(indptr[0])}."
        )
    steps = np.diff(indptr)
    if (steps < 0).any():
        where = int(np.argmax(steps < 0))
        raise ValueError(
            f"X.indptr must be non-decreasing; it falls from {int(indptr[where])} to "
            f"{int(indptr[where + 1])} at {major} {where}."
        )
    stored = int(indptr[-1])  # scipy's nnz; X.data and X.indices may hold unused slack
    if stored > indices.shape[0]:
        where = int(np.argmax(indptr[1:] > indices.shape[0]))
        raise ValueError(
            f"X.indptr ends at {stored}, past the {indices.shape[0]} values stored in X.data "
            f"and X.indices ({major} {where} reaches past them); it must end at the number "
            "of stored values (nnz)."
        )
    used = indices[:stored]
    if stored and not (int(used.min()) >= 0 and int(used.max()) < n_minor):
        bad = int(np.argmax((used < 0) | (used >= n_minor)))
        where = int(np.searchsorted(indptr, bad, side="right")) - 1
        raise ValueError(
            f"X has a {minor} index {int(used[bad])} out of range in {major} {where} "
            f"(stored entry {bad}): {minor} indices must lie in [0, {n_minor}) for shape "
            f"{X.shape}."
        )


def _check_coordinates(row, col, n_values: int, shape, what: str = "X.row and X.col") -> None:
    """COO (and DOK's keys, LIL's rows): one row and one column index per stored value,
    each within the shape; the first offending entry is named."""
    _check_index_array(row, "X.row")
    _check_index_array(col, "X.col")
    if row.shape[0] != n_values or col.shape[0] != n_values:
        raise ValueError(
            f"{what} must hold one index per stored value ({n_values}); got "
            f"{row.shape[0]} and {col.shape[0]}."
        )
    for axis, (indices, size) in enumerate(((row, shape[0]), (col, shape[1]))):
        outside = (indices < 0) | (indices >= size)
        if n_values and outside.any():
            bad = int(np.argmax(outside))
            name = ("row", "column")[axis]
            raise ValueError(
                f"X has a {name} index {int(indices[bad])} out of range at stored entry {bad} "
                f"(row {int(row[bad])}, column {int(col[bad])}): {name} indices must lie in "
                f"[0, {size}) for shape {tuple(shape)}."
            )


def _check_coo_structure(X) -> None:
    data = X.data
    if data.ndim != 1:
        raise ValueError(f"X.data of a COO matrix must be 1-D; got shape {data.shape}.")
    _check_coordinates(X.row, X.col, data.shape[0], X.shape)


def _check_dok_structure(X) -> None:
    keys = list(X.keys())
    if any(not (isinstance(key, tuple) and len(key) == 2) for key in keys):
        bad = next(key for key in keys if not (isinstance(key, tuple) and len(key) == 2))
        raise ValueError(f"X (DOK) has the key {bad!r}; every key must be a (row, column) pair.")
    coordinates = np.array(keys, dtype=np.int64).reshape(-1, 2)
    _check_coordinates(coordinates[:, 0], coordinates[:, 1], len(keys), X.shape, "X's keys")


def _check_lil_structure(X) -> None:
    rows, data = X.rows, X.data
    n_rows = X.shape[0]
    if rows.shape != (n_rows,) or data.shape != (n_rows,):
        raise ValueError(
            f"X.rows and X.data of a LIL matrix of shape {X.shape} must hold {n_rows} lists "
            f"(one per row); got shapes {rows.shape} and {data.shape}."
        )
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=n_rows)
    if not np.array_equal(lengths, np.fromiter(map(len, data), dtype=np.int64, count=n_rows)):
        row = int(np.argmax(lengths != np.fromiter(map(len, data), np.int64, count=n_rows)))
        raise ValueError(
            f"X.rows[{row}] and X.data[{row}] must have the same length (one column index "
            "per value)."
        )
    total = int(lengths.sum())
    columns = np.fromiter((c for r in rows for c in r), dtype=np.int64, count=total)
    row_of = np.repeat(np.arange(n_rows, dtype=np.int64), lengths)
    _check_coordinates(row_of, columns, total, X.shape, "X.rows")


def _check_dia_structure(X) -> None:
    """DIA: one distinct integer offset per stored diagonal. An offset outside the shape is
    valid (scipy stores it and every conversion skips its values), so it is kept."""
    data, offsets = X.data, X.offsets
    _check_index_array(offsets, "X.offsets")
    if data.ndim != 2 or data.shape[0] != offsets.shape[0]:
        raise ValueError(
            f"X.data of a DIA matrix must be 2-D with one row per offset ({offsets.shape[0]}); "
            f"got shape {data.shape}."
        )
    if np.unique(offsets).shape[0] != offsets.shape[0]:
        raise ValueError(f"X.offsets holds a repeated diagonal offset: {offsets.tolist()[:20]}.")


_STRUCTURE_CHECKS = {
    "csr": _check_compressed_structure,
    "csc": _check_compressed_structure,
    "bsr": _check_compressed_structure,
    "coo": _check_coo_structure,
    "dok": _check_dok_structure,
    "lil": _check_lil_structure,
    "dia": _check_dia_structure,
}


def check_csr(X, *, check_finite: bool = True):
    """Return a scipy.sparse matrix as CSR of float32/float64 with C-contiguous parts
    (converting other formats and dtypes once), its index arrays checked
    (:func:`check_sparse_structure`)."""
    import scipy.sparse as sp

    if X.ndim != 2:
        raise ValueError(f"X must be 2-D; got a sparse array of shape {X.shape}.")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X is empty (shape {X.shape}); it needs at least one row and one column.")
    if X.dtype.kind not in "biuf":
        raise TypeError(f"X must hold real numbers; got a sparse matrix of dtype {X.dtype}.")
    check_sparse_structure(X)  # before anything (scipy's conversions included) reads them
    if X.format != "csr":
        X = sp.csr_matrix(X)
        check_sparse_structure(X)  # what the kernels will read: checked after the conversion
    if X.indices.dtype not in (np.int32, np.int64) or X.indptr.dtype not in (np.int32, np.int64):
        # Other integer index dtypes (set by hand after construction): one int64 copy of the
        # index arrays, the types the kernels are compiled for.
        X = sp.csr_matrix(
            (X.data, X.indices.astype(np.int64), X.indptr.astype(np.int64)), shape=X.shape
        )
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float32 if X.dtype == np.float16 else np.float64)
    if not (
        X.data.flags.c_contiguous and X.indices.flags.c_contiguous and X.indptr.flags.c_contiguous
    ):
        X = sp.csr_matrix(
            (
                np.ascontiguousarray(X.data),
                np.ascontiguousarray(X.indices),
                np.ascontiguousarray(X.indptr),
            ),
            shape=X.shape,
        )
    if check_finite:
        scan_sparse(X)
    return X


def scan_sparse(X, sample_weight=None, extra: float = 0.0) -> float:
    """:func:`scan` for a CSR matrix (only the stored values are read)."""
    from ._kernels.sparse import scan_csr

    weights = np.empty(0) if sample_weight is None else sample_weight
    row, col, norm = scan_csr(X.data, X.indices, X.indptr, X.shape[0], weights, extra)
    if row >= 0:
        value = X[row, col]
        raise ValueError(
            f"X contains a non-finite value ({float(value)!r}) at row {row}, column {col}; "
            "remove or impute NaN/inf (NaN or infinity) before fitting."
        )
    return float(norm)


def check_vector(v, name: str, n: int, dtype, *, counts: str = "rows") -> np.ndarray:
    """A 1-D (or (n, 1)) finite numeric vector of length ``n``, as ``dtype`` (``None``:
    its own float or integer dtype). ``counts`` names what ``n`` counts in X."""
    v = _as_numeric_array(v, name)
    if v.ndim == 2 and v.shape[1] == 1:
        v = v[:, 0]
    if v.ndim != 1:
        raise ValueError(f"{name} must be 1-D of length {n}; got shape {v.shape}.")
    if v.shape[0] != n:
        raise ValueError(
            f"{name} has {v.shape[0]} entries but X has {n} {counts}; they must match."
        )
    v = np.ascontiguousarray(v, dtype=dtype)
    if v.dtype.kind == "f":
        scan(v.reshape(-1, 1), name, entry=counts.rstrip("s"))
    return v


def check_sample_weight(sample_weight, n: int, *, normalize: bool = True) -> np.ndarray:
    """Validate weights and rescale them to mean 1. An empty array stands for all weights 1.

    ``normalize=False`` keeps them as given, negative ones included: scikit-learn 1.9's
    convention, where a weight multiplies its row's loss (a negative one turns that row's
    step into an ascent). Rescaling to mean 1 needs weights >= 0."""
    if sample_weight is None:
        return np.empty(0)
    sw = check_vector(sample_weight, "sample_weight", n, np.float64)
    if not normalize:
        if not sw.any():
            raise ValueError(  # scikit-learn's words first
                "Sample weights must contain at least one non-zero number: sample_weight is "
                "zero for every row."
            )
        return np.empty(0) if (sw == 1.0).all() else sw
    if (sw < 0).any():
        row = int(np.argmax(sw < 0))
        raise ValueError(f"sample_weight must be >= 0; got {float(sw[row])!r} at row {row}.")
    largest = sw.max()
    if largest <= 0:
        raise ValueError(
            "sample_weight is zero for every row: at least one row needs a positive weight."
        )
    sw = sw / largest  # first to at most 1, so that the sum cannot overflow
    return sw * (n / sw.sum())


def check_binary_labels(
    y: np.ndarray, loss_name: str, dtype, classes=None
) -> tuple[np.ndarray, np.ndarray]:
    """Map two classes to {-1, +1} of ``dtype`` (the smaller class to -1), finding the
    classes in ``y``'s own dtype. Returns ``(classes, y_signed)``.

    ``classes`` (two labels, the second positive) may be given when ``y`` holds only part
    of the data; every label of ``y`` must then be one of them."""
    if classes is not None:
        given = np.asarray(classes)
        if given.ndim != 1 or given.shape[0] != 2 or given[0] == given[1]:
            raise ValueError(
                f"classes must hold exactly two distinct labels; got {given.tolist()!r}."
            )
        unknown = ~np.isin(y, given)
        if unknown.any():
            row = int(np.argmax(unknown))
            raise ValueError(
                f"y holds the label {y[row]!r} at row {row}, which is not in classes="
                f"{given.tolist()!r}."
            )
        signed = np.where(y == given[1], 1.0, -1.0).astype(dtype)
        return given, signed
    classes = np.unique(y)
    if classes.shape[0] != 2:
        shown = classes[:10].tolist()
        more = ", ..." if classes.shape[0] > 10 else ""
        raise ValueError(
            f"loss={loss_name!r} is a classification loss and needs exactly two classes "
            f"in y; got {classes.shape[0]}: {shown}{more}. Use a regression loss, or "
            "one-vs-rest for more classes."
        )
    signed = np.where(y == classes[1], 1.0, -1.0).astype(dtype)
    return classes, signed
