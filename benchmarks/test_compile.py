"""(h) Compile time, kept apart from run time: ``import fastgd`` and the first ``fastgd.fit``
calls in a fresh Python process, with an empty and with a warm Numba cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import fastgd

STRATEGIES = ("minibatch", "sgd", "full")
SHAPE = (1000, 100)

#: Run in a fresh interpreter: prints one JSON line with the import time and, per strategy,
#: the first and the second ``fastgd.fit`` call's seconds (default options, float64).
SCRIPT = f"""
import json, time
start = time.perf_counter()
import fastgd
imported = time.perf_counter()
import numpy as np
rng = np.random.default_rng(0)
X = rng.standard_normal({SHAPE!r})
y = X @ rng.standard_normal({SHAPE[1]})
out = {{"import": imported - start}}
for strategy in {STRATEGIES!r}:
    calls = []
    for _ in range(2):
        begin = time.perf_counter()
        fastgd.fit(X, y, strategy=strategy, max_iter=2, tol=None, random_state=0)
        calls.append(time.perf_counter() - begin)
    out[strategy] = calls
print(json.dumps(out))
"""


def _fresh_process(cache_dir: Path | None) -> dict:
    env = dict(os.environ)
    root = str(Path(fastgd.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = str(cache_dir)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _describe(run: dict) -> str:
    first = ", ".join(f"{s} {run[s][0]:.2f} s" for s in STRATEGIES)
    again = " / ".join(f"{run[s][1] * 1e3:.0f}" for s in STRATEGIES)
    return f"first calls: {first}; second calls: {again} ms ({SHAPE[0]}×{SHAPE[1]} float64)"


def test_compile_time(results, settings, tmp_path):
    """Cold: a new, empty ``NUMBA_CACHE_DIR``; warm: a second process on the same directory.
    The smoke run (``--benchmark-disable``) skips the cold case (about half a minute) and runs
    the warm one on Numba's default cache, filled by an in-process warm-up."""
    if settings.benchmark_disabled:
        rng = np.random.default_rng(0)
        X = rng.standard_normal(SHAPE)
        y = X @ rng.standard_normal(SHAPE[1])
        for strategy in STRATEGIES:
            fastgd.fit(X, y, strategy=strategy, max_iter=2, tol=None, random_state=0)
        runs = {"warm": _fresh_process(None)}
    else:
        cache = tmp_path / "numba-cache"
        cache.mkdir()
        runs = {"cold": _fresh_process(cache)}
        runs["warm"] = _fresh_process(cache)
    imports = ", ".join(f"{state} cache {run['import']:.2f} s" for state, run in runs.items())
    results.add(
        "compile/import", "import fastgd (fresh process)", runs["warm"]["import"],
        notes=f"compiles nothing; {imports}",
    )  # fmt: skip
    labels = {"cold": "empty Numba cache", "warm": "warm Numba cache"}
    for state, run in runs.items():
        results.add(
            f"compile/{state}",
            f"first fit() per strategy, {labels[state]} (fresh process)",
            sum(run[s][0] for s in STRATEGIES), notes=_describe(run),
        )  # fmt: skip
    if "cold" not in runs:
        results.add(
            "compile/cold", f"first fit() per strategy, {labels['cold']} (fresh process)", None,
            notes="not run in the smoke run (--benchmark-disable): it takes about half a minute",
        )  # fmt: skip
