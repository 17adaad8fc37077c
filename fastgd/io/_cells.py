"""What the CSV reader (:mod:`fastgd.io.csv`) and the level tables (:mod:`fastgd.io.levels`)
share: the missing-value tokens and the error naming a place in a file. (Public as
``fastgd.io.csv.MISSING_TOKENS`` and ``fastgd.io.csv.CsvError``.)"""

from __future__ import annotations

__all__ = ["MISSING_TOKENS", "CsvError"]

#: Cells read as a missing value (compared case-insensitively, after stripping spaces).
MISSING_TOKENS = frozenset({"", "na", "nan", "n/a", "null", "none", "-nan", "#n/a"})


class CsvError(ValueError):
    """A problem with a CSV file; ``path``, ``line`` (1-based in the file, the header
    counted) and ``column`` (its name) say where, when known. The message names them."""

    def __init__(self, message: str, *, path, line: int | None = None, column: str | None = None):
        self.path = str(path)
        self.line = line
        self.column = column
        where = [self.path]
        if line is not None:
            where.append(f"line {line}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{', '.join(where)}: {message}")
