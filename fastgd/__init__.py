"""fastgd: fast, trustworthy gradient descent for linear models.

``import fastgd`` compiles nothing: the Numba kernels compile (or load from Numba's
on-disk cache) on first use; matplotlib (``fastgd.plot``) is imported only when a picture
is drawn. It does choose Numba's threading layer (a fork-safe one, see
``fastgd/_threading.py``), which Numba fixes when the first parallel kernel runs.
"""

from __future__ import annotations

from . import _threading, options
from .engine import FitResult, auto_learning_rate, fit
from .errors import DivergenceError
from .playground import descent_path, find_learning_rate, sweep

# Before anything can run a parallel kernel (importing the modules above runs none): a
# fork-safe Numba threading layer (issue 10).
_threading.choose_fork_safe_layer()

__version__ = "0.1.0"

__all__ = [
    "DivergenceError",
    "FitResult",
    "Model",
    "SGDClassifier",
    "SGDRegressor",
    "__version__",
    "auto_learning_rate",
    "descent_path",
    "find_learning_rate",
    "fit",
    "fit_csv",
    "iter_csv",
    "load",
    "options",
    "save",
    "sweep",
]

#: Loaded on first use: they import scikit-learn or the CSV parser, which the functional API
#: does not need.
_LAZY = {
    "SGDClassifier": "estimators",
    "SGDRegressor": "estimators",
    "fit_csv": "stream",
    "iter_csv": "io",
    "Model": "io.model",
    "load": "io.model",
    "save": "io.model",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fastgd' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
