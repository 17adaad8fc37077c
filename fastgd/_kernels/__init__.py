"""Numba kernels: C-contiguous arrays and plain scalars in, no validation, no Python objects
or allocation inside per-row loops. Compile flags live in ``_config.py``.

Every kernel import passes here first, so this is where Numba's threading layer is made
fork-safe (``fastgd/_threading.py``): before any parallel kernel can run, while
``import fastgd`` itself stays cheap."""

from .. import _threading

_threading.choose_fork_safe_layer()
