"""Numba's threading layer, chosen fork-safe when fastgd's kernels are first imported.

Numba picks its threading layer once per process, when the first parallel kernel runs (or
``numba.get_num_threads()`` is first called). Left to itself on Linux it takes GNU OpenMP
whenever TBB cannot be loaded, and GNU OpenMP is not fork-safe: after a fit, a child made by
``fork()`` (``multiprocessing``'s default start method on Linux, joblib's
``multiprocessing`` backend) that runs a parallel kernel aborts, and the parent's pool waits
for it forever (issue 10).

The ``tbb`` package (a dependency where it has wheels) is installed by pip into
``<prefix>/lib`` (``Library/bin`` on Windows), outside the loader's search path, so Numba
cannot find it on its own. :func:`choose_fork_safe_layer`, called by
``fastgd/_kernels/__init__.py`` (every kernel import passes there first; ``import fastgd``
itself stays cheap, see ``fastgd/__init__.py``), loads that library by its full path first
and then asks Numba for its ``"forksafe"`` layer: TBB (fork- and thread-safe) when it
loads, else the ``workqueue`` layer (fork-safe, but one parallel kernel at a time per
process; see :data:`THREAD_SAFE_LAYERS`), never GNU OpenMP on Linux. It compiles nothing
and starts no thread; a layer the user chose (``NUMBA_THREADING_LAYER``,
``NUMBA_THREADING_LAYER_PRIORITY``, ``.numba_config.yaml`` or ``numba.config``, before
fastgd's kernels are imported) is kept as it is.

Kernels in Numba's on-disk cache do not depend on the layer: they call the layer through
symbols bound when the threads start, so a cache filled under one layer loads under another.
"""

from __future__ import annotations

import ctypes
import os
import site
import sys
from collections.abc import Iterator

import numba

#: Layers that survive ``fork()`` on this platform. GNU OpenMP (Numba's ``omp`` on Linux)
#: does not; Intel's and LLVM's OpenMP (``omp`` on macOS and Windows) do.
FORK_SAFE_LAYERS = frozenset({"tbb", "workqueue"} | ({"omp"} if sys.platform != "linux" else set()))
#: Layers on which two Python threads may run parallel kernels at the same time; under
#: ``workqueue`` that aborts the process, so fastgd's concurrent fits run one at a time there
#: (``fastgd.engine.concurrent_fits``).
THREAD_SAFE_LAYERS = frozenset({"tbb", "omp"})

#: Numba's own defaults: any other value means the user chose.
_DEFAULT_LAYER = "default"
_DEFAULT_PRIORITY = ["tbb", "omp", "workqueue"]


def _tbb_library_name() -> str:
    """The file name Numba's ``tbbpool`` extension links against (TBB's interface 12)."""
    if sys.platform == "win32":
        return "tbb12.dll"
    if sys.platform == "darwin":
        return "libtbb.12.dylib"
    return "libtbb.so.12"


def tbb_library_candidates() -> Iterator[str]:
    """Paths where the TBB runtime may be, most trusted first: the files of the installed
    ``tbb`` distribution, then its usual places under the environment's prefix and the user
    site (pip's ``--user``). Only paths that exist are given."""
    name = _tbb_library_name()
    seen = set()
    for path in _distribution_files(name) + _prefix_paths(name):
        path = os.path.abspath(path)
        if path not in seen and os.path.isfile(path):
            seen.add(path)
            yield path


def _distribution_files(name: str) -> list[str]:
    from importlib import metadata

    try:
        files = metadata.distribution("tbb").files or []
    except metadata.PackageNotFoundError:
        return []
    return [str(file.locate()) for file in files if file.name == name]


def _prefix_paths(name: str) -> list[str]:
    folders = [os.path.join("Library", "bin")] if sys.platform == "win32" else ["lib"]
    prefixes = [sys.prefix, sys.base_prefix, site.getuserbase()]
    return [os.path.join(prefix, folder, name) for prefix in prefixes for folder in folders]


def preload_tbb() -> str | None:
    """Load the TBB runtime by its full path, globally, so that Numba's ``tbbpool`` (which
    asks for it by name) finds it already loaded. Returns the path loaded, or None when no
    candidate loads (Numba then looks on the loader's own path, e.g. a system or conda TBB,
    and checks the version itself)."""
    mode = getattr(ctypes, "RTLD_GLOBAL", 0)
    for path in tbb_library_candidates():
        try:
            ctypes.CDLL(path, mode=mode)
        except OSError:  # a broken or foreign-architecture file: try the next one
            continue
        return path
    return None


def threads_started() -> bool:
    """Whether Numba has already fixed its layer in this process (then nothing changes it)."""
    try:
        numba.threading_layer()
    except ValueError:
        return False
    return True


def user_chose_layer() -> bool:
    """Whether the threading layer or its priority was set by the user (environment,
    ``.numba_config.yaml`` or ``numba.config`` before fastgd's kernels are imported)."""
    config = numba.config
    return (
        str(config.THREADING_LAYER).lower() != _DEFAULT_LAYER
        or list(config.THREADING_LAYER_PRIORITY) != _DEFAULT_PRIORITY
    )


def choose_fork_safe_layer() -> None:
    """Make Numba's coming layer choice fork-safe, before any parallel kernel runs: preload
    TBB, then request ``"forksafe"`` (TBB, else workqueue on Linux) unless the user chose a
    layer. Does nothing once Numba's threads have started."""
    if threads_started():
        return
    preload_tbb()  # also helps a user who asked for "tbb" or "safe"
    if not user_chose_layer():
        # Set in numba.config, not in os.environ: child processes that do not import fastgd
        # keep Numba's own choice. (Numba re-reads its settings from the environment only
        # when a NUMBA_* variable changes; even then the preloaded TBB comes first.)
        numba.config.THREADING_LAYER = "forksafe"
