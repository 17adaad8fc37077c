"""Encoding a block of CSV rows (:class:`fastgd.io.encoding.Encoding`) in one pass, and the
per-column moments the first pass gathers from it (:class:`fastgd.stream._Moments`).

numpy took six passes and as many temporaries per block (NaN mask, scale, impute, the
indicators, their concatenation, the copy into the CSR arrays): measured here, 48 ms a
65,536-row block of 20 numeric and 5 text columns, more than the sgd epoch on it.

No fastmath here (and so not ``_config.kernel``): ``arcp`` would turn ``/ divide`` into a
multiplication by the reciprocal, and the values must be the ones numpy's ``(x - mean) /
scale`` gives (a model's folded weights and the in-memory encoders read the same numbers).
"""

from __future__ import annotations

import numba


@numba.njit(cache=True, nogil=True, error_model="numpy")
def encode_rows(X, shift, divide, fill, indicator_columns, text_columns, data, indices):
    """Fill ``data`` and ``indices`` (rows × (d + k + t), C order) for each row of ``X``
    (rows × d, NaN: missing): ``(x - shift) / divide`` (``fill`` for a missing cell), then
    the k missing indicators of ``X``'s ``indicator_columns`` (1.0 or 0.0), then 1.0 at the
    feature ``text_columns[i, m]`` of each of the t text columns. ``indices`` may be a
    0 × 0 array (a dense block: ``data`` only)."""
    rows, d = X.shape
    k = indicator_columns.shape[0]
    t = text_columns.shape[1]
    with_indices = indices.shape[0] == rows and rows > 0
    for i in range(rows):
        for j in range(d):
            x = X[i, j]
            if x != x:
                data[i, j] = fill[j]
            else:
                data[i, j] = (x - shift[j]) / divide[j]
        for m in range(k):
            x = X[i, indicator_columns[m]]
            data[i, d + m] = 1.0 if x != x else 0.0
        for m in range(t):
            data[i, d + k + m] = 1.0
        if with_indices:
            for j in range(d + k):
                indices[i, j] = j
            for m in range(t):
                indices[i, d + k + m] = text_columns[i, m]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def block_moments(X, counts, mean, m2, largest):
    """Per column of ``X`` (rows × d, NaN: missing) the count of values present, their mean
    and sum of squared deviations from it (into ``counts``, ``mean``, ``m2``), and the
    largest magnitude so far (``largest``, updated). Sums run row by row in float64, as
    numpy's column sums do (no fastmath: the same additions in the same order)."""
    rows, d = X.shape
    counts[:] = 0
    mean[:] = 0.0
    m2[:] = 0.0
    for i in range(rows):
        for j in range(d):
            x = X[i, j]
            if x == x:
                counts[j] += 1
                mean[j] += x
                size = abs(x)
                if size > largest[j]:
                    largest[j] = size
    for j in range(d):
        mean[j] /= max(counts[j], 1)
    for i in range(rows):
        for j in range(d):
            x = X[i, j]
            if x == x:
                deviation = x - mean[j]
                m2[j] += deviation * deviation
