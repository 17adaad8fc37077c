"""Streaming CSV input and the on-disk block cache (see :mod:`fastgd.io.csv`)."""

from .cache import BlockCache, CacheError, CacheWriter
from .csv import CsvBlock, CsvError, CsvSchema, format_skipped, iter_csv, read_schema

__all__ = [
    "BlockCache",
    "CacheError",
    "CacheWriter",
    "CsvBlock",
    "CsvError",
    "CsvSchema",
    "format_skipped",
    "iter_csv",
    "read_schema",
]
