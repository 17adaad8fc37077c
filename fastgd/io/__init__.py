"""Streaming CSV input and the on-disk block cache (see :mod:`fastgd.io.csv`).

The package's public names are its submodules' ``__all__``, listed once there.
"""

from . import cache, csv
from .cache import *  # noqa: F403 -- re-exports cache.__all__
from .csv import *  # noqa: F403 -- re-exports csv.__all__

__all__ = [*cache.__all__, *csv.__all__]
