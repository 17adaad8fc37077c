"""Streaming CSV input, the level tables of its text columns, and the on-disk block cache
(see :mod:`fastgd.io.csv`, :mod:`fastgd.io.levels`).

The package's public names are its submodules' ``__all__``, listed once there.
"""

from . import cache, csv, levels
from .cache import *  # noqa: F403 -- re-exports cache.__all__
from .csv import *  # noqa: F403 -- re-exports csv.__all__
from .levels import *  # noqa: F403 -- re-exports levels.__all__

__all__ = [*cache.__all__, *csv.__all__, *levels.__all__]
