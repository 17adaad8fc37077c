"""Numba kernels: C-contiguous arrays and plain scalars in, no validation, no Python objects
or allocation inside per-row loops. Compile flags live in ``_config.py``."""
