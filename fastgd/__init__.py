"""fastgd: fast, trustworthy gradient descent for linear models.

``import fastgd`` is cheap and compiles nothing: every public name is loaded on first use
(PEP 562), so ``python -m fastgd`` can take over Ctrl-C before numpy, Numba and polars are
imported (issue 10). The Numba kernels compile (or load from Numba's on-disk cache) on
first use; matplotlib (``fastgd.plot``) is imported only when a picture is drawn. Importing
the kernels (``fastgd._kernels``) chooses Numba's threading layer, a fork-safe one (see
``fastgd/_threading.py``), before any parallel kernel can run.
"""

from __future__ import annotations

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

#: Each module and the public names it defines, imported on first use (PEP 562).
_MODULES = {
    "errors": ("DivergenceError",),
    "engine": ("FitResult", "auto_learning_rate", "fit"),
    "playground": ("descent_path", "find_learning_rate", "sweep"),
    "estimators": ("SGDClassifier", "SGDRegressor"),
    "stream": ("fit_csv",),
    "io": ("iter_csv",),
    "io.model": ("Model", "load", "save"),
}
#: Each public name and ``(module, attribute)``; attribute None: the name is the module.
_LAZY = {name: (module, name) for module, names in _MODULES.items() for name in names}
_LAZY["options"] = ("options", None)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module_name, attribute = _LAZY[name]
        module = importlib.import_module(f".{module_name}", __name__)
        value = module if attribute is None else getattr(module, attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fastgd' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
