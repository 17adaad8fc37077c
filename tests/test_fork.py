"""Fork safety (issue 10): after a fit, ``fork()``-based multiprocessing completes.

GNU OpenMP, Numba's usual layer on Linux when TBB is not found, makes a forked child that
runs a parallel kernel abort, and the parent's pool then waits forever. Importing fastgd's
kernels chooses a fork-safe layer (``fastgd/_threading.py``); the end-to-end test runs the
whole scenario in a fresh process (the layer is fixed once per process) under a timeout, so a hang
fails the test instead of the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numba
import pytest

import fastgd
from fastgd import _threading, engine

ROOT = Path(fastgd.__file__).resolve().parent.parent
#: A hang shows as a timeout; the scenario takes a few seconds (compiled kernels cached).
TIMEOUT_S = 120

#: Fits (parallel kernels: n·d and B·d above ``_thresholds.PARALLEL_MIN_VALUES`` on 2 threads)
#: in the parent, then the same fits inside forked children (``multiprocessing`` and joblib's
#: ``multiprocessing`` backend); prints one JSON line of what happened.
SCRIPT = """
import json, multiprocessing, sys
import numpy as np
import fastgd, numba
from fastgd import _thresholds

N, D, B = 4096, 32, 2048  # rows, features, batch: both strategies go parallel
assert B * D >= _thresholds.PARALLEL_MIN_VALUES and numba.get_num_threads() >= 2

def problem(seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, D))
    return X, X @ rng.standard_normal(D) + 0.1 * rng.standard_normal(N)

def fit(seed):
    X, y = problem(seed)
    full = fastgd.fit(X, y, strategy="full", max_iter=3, tol=None, random_state=0)
    batch = fastgd.fit(X, y, strategy="minibatch", batch_size=B, max_iter=2, tol=None,
                       random_state=0)
    return full.coef.tolist() + batch.coef.tolist()

seeds = [1, 2, 3]
expected = [fit(seed) for seed in seeds]
X, y = problem(0)
labels = np.digitize(y, np.quantile(y, [1 / 3, 2 / 3]))
clf = fastgd.SGDClassifier(n_jobs=2, max_iter=3, tol=None, random_state=0).fit(X, labels)
out = {"layer": numba.threading_layer(), "classes": len(clf.classes_)}
with multiprocessing.get_context("fork").Pool(2) as pool:
    out["pool_same"] = pool.map(fit, seeds) == expected
try:
    import joblib
except ImportError:
    out["joblib_same"] = None
else:
    jobs = joblib.Parallel(n_jobs=2, backend="multiprocessing")
    out["joblib_same"] = jobs(joblib.delayed(fit)(seed) for seed in seeds) == expected
print(json.dumps(out))
"""


def _run(script: str, **env_changes: str | None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["NUMBA_NUM_THREADS"] = "2"
    for name, value in env_changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    try:
        return subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True,
            timeout=TIMEOUT_S, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as hung:
        stderr = hung.stderr.decode(errors="replace") if hung.stderr else ""
        pytest.fail(f"no result after {TIMEOUT_S} s (hung after fork?); stderr: {stderr[-2000:]}")


def _last_json(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


#: Prepended to the script: no TBB can be loaded (as where the ``tbb`` package has no
#: wheel), before Numba or fastgd is imported. Numba's default would then be GNU OpenMP.
WITHOUT_TBB = """
import ctypes, os
class _NoTBB(ctypes.CDLL):
    def __init__(self, name, *args, **kwargs):
        if name and "tbb" in os.path.basename(str(name)):
            raise OSError(f"{name}: TBB blocked by the test")
        super().__init__(name, *args, **kwargs)
ctypes.CDLL = _NoTBB
"""


@pytest.mark.parametrize("tbb", ["as installed", "blocked"])
def test_fork_after_fit_completes_and_children_fit_the_same(tbb):
    script = SCRIPT if tbb == "as installed" else WITHOUT_TBB + SCRIPT
    out = _last_json(_run(script, NUMBA_THREADING_LAYER=None))
    assert out["layer"] in _threading.FORK_SAFE_LAYERS
    if tbb == "blocked":
        assert out["layer"] != "tbb"  # the fallback ran (workqueue on Linux)
    elif any(_threading.tbb_library_candidates()):
        assert out["layer"] == "tbb"  # found where pip put it, off the loader's path
    assert out["classes"] == 3  # the n_jobs=2 fit (serialised under workqueue) completed
    assert out["pool_same"] is True
    assert out["joblib_same"] in (True, None)  # None: joblib is not installed


def test_a_layer_the_user_sets_is_kept():
    # On Linux, "omp" (GNU OpenMP) is exactly what fastgd would not pick by itself.
    layer = "omp" if sys.platform == "linux" else "workqueue"
    script = (
        "import fastgd, numba\n"
        "from fastgd import _threading\n"
        "print(_threading.threads_started())\n"  # import fixes no layer, starts no thread
        "numba.get_num_threads()\n"
        "print(numba.threading_layer())\n"
    )
    done = _run(script, NUMBA_THREADING_LAYER=layer)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.split() == ["False", layer]


# ------------------------------------------------------- the choice itself (in process)


@pytest.fixture
def before_threads(monkeypatch):
    """As if Numba's threads had not started yet, with Numba's default settings."""
    monkeypatch.setattr(_threading, "threads_started", lambda: False)
    monkeypatch.setattr(numba.config, "THREADING_LAYER", "default")
    monkeypatch.setattr(numba.config, "THREADING_LAYER_PRIORITY", ["tbb", "omp", "workqueue"])
    return numba.config


def test_the_default_becomes_numbas_forksafe_request(before_threads):
    _threading.choose_fork_safe_layer()
    assert before_threads.THREADING_LAYER == "forksafe"


@pytest.mark.parametrize(
    ("name", "value"),
    [("THREADING_LAYER", "omp"), ("THREADING_LAYER_PRIORITY", ["omp", "tbb", "workqueue"])],
)
def test_a_user_setting_is_not_overridden(before_threads, monkeypatch, name, value):
    monkeypatch.setattr(numba.config, name, value)
    _threading.choose_fork_safe_layer()
    assert before_threads.THREADING_LAYER == ("omp" if name == "THREADING_LAYER" else "default")


def test_nothing_changes_once_threads_started(monkeypatch):
    monkeypatch.setattr(numba.config, "THREADING_LAYER", "default")
    monkeypatch.setattr(_threading, "preload_tbb", lambda: pytest.fail("preloaded"))
    numba.get_num_threads()  # starts them in this process
    _threading.choose_fork_safe_layer()
    assert numba.config.THREADING_LAYER == "default"


def test_a_broken_tbb_file_is_skipped(tmp_path, monkeypatch):
    broken = tmp_path / _threading._tbb_library_name()
    broken.write_bytes(b"not a shared library")
    real = list(_threading.tbb_library_candidates())
    monkeypatch.setattr(_threading, "_distribution_files", lambda name: [str(broken)])
    monkeypatch.setattr(_threading, "_prefix_paths", lambda name: real)
    assert _threading.preload_tbb() == (real[0] if real else None)


@pytest.mark.parametrize(("layer", "allowed"), [("tbb", 4), ("omp", 4), ("workqueue", 1)])
def test_concurrent_fits_follow_the_layer(monkeypatch, layer, allowed):
    monkeypatch.setattr(numba, "threading_layer", lambda: layer)
    assert engine.concurrent_fits(4) == allowed
    assert engine.concurrent_fits(1) == 1
