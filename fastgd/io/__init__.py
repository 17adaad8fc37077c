"""Streaming CSV input and the on-disk block cache (see :mod:`fastgd.io.csv`)."""

from .cache import BlockCache, CacheChecksumError, CacheError, CacheNotice, CacheWriter
from .csv import CsvBlock, CsvError, CsvSchema, format_skipped, iter_csv, read_schema

__all__ = [
    "BlockCache",
    "CacheChecksumError",
    "CacheError",
    "CacheNotice",
    "CacheWriter",
    "CsvBlock",
    "CsvError",
    "CsvSchema",
    "format_skipped",
    "iter_csv",
    "read_schema",
]
