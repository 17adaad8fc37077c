"""(m) What the fork-safe threading layer costs (issue 10): the parallel kernels under Numba's
``tbb`` layer (fastgd's choice), ``omp`` (GNU OpenMP: Numba's usual choice on Linux without
TBB, not fork-safe) and ``workqueue`` (fastgd's fallback), side by side.

Numba fixes the layer once per process, so each layer runs in its own fresh process
(``NUMBA_THREADING_LAYER``, which fastgd respects), in rounds that alternate the
layers so that the machine's drift hits them alike. Each process times epochs from
``fastgd.fit``'s callback (the first epoch, with compilation or cache loading, is dropped):
a full-batch step (one parallel region per epoch, bandwidth-bound) and mini-batch epochs
with the smallest batch that goes parallel at d=100 (B=1024: one parallel region per batch,
so the layer's launch cost shows) and a large one (B=16384).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import fastgd

LAYERS = ("tbb", "omp", "workqueue")
#: (key, description, fit options); all with shuffle="block" where rows are drawn.
CASES = (
    ("full", "full-batch step", {"strategy": "full"}),
    ("mb1024", "minibatch B=1024 epoch", {"strategy": "minibatch", "batch_size": 1024}),
    ("mb16384", "minibatch B=16384 epoch", {"strategy": "minibatch", "batch_size": 16384}),
)
EPOCHS = 6
#: Processes per layer in a full run, alternating the layers (one in the smoke run).
ROUNDS = 3

#: One layer's process: prints one JSON line with its layer, thread count and, per case, the
#: seconds of each timed epoch.
SCRIPT = """
import json, sys, time
import numpy as np
import fastgd, numba
import fastgd._kernels  # fastgd's threading set-up (TBB preloaded) runs when they load

rows, d, seed, eta0, epochs = {rows}, {d}, {seed}, {eta0}, {epochs}
rng = np.random.default_rng(seed)
X = rng.standard_normal((rows, d))
y = X @ rng.standard_normal(d) + rng.standard_normal(rows)
out = {{"threads": numba.get_num_threads(), "layer": numba.threading_layer()}}
for key, options in {cases!r}:
    marks = []
    def callback(epoch, coef, intercept, loss):
        marks.append(time.perf_counter())
    fastgd.fit(X, y, max_iter=epochs, tol=None, learning_rate="constant", eta0=eta0,
               shuffle="block", random_state=seed, callback=callback, **options)
    out[key] = [b - a for a, b in zip(marks, marks[1:])]
print(json.dumps(out))
"""


def _run_layer(layer: str, script: str) -> dict:
    env = dict(os.environ, NUMBA_THREADING_LAYER=layer)
    root = str(Path(fastgd.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=900,
        check=False,
    )  # fmt: skip
    if done.returncode != 0:  # e.g. TBB not installed: reported as such, not a failure
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "?"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_threading_layer_cost(results, settings):
    rounds = 1 if settings.benchmark_disabled else ROUNDS
    cases = [(key, options) for key, _, options in CASES]
    script = SCRIPT.format(
        rows=settings.rows, d=settings.n_features, seed=settings.seed, eta0=settings.eta0,
        epochs=EPOCHS, cases=cases,
    )  # fmt: skip
    # Per layer and case: one list of epoch seconds per process.
    epochs = {layer: {key: [] for key, _, _ in CASES} for layer in LAYERS}
    errors, threads = {}, {}
    for _ in range(rounds):
        for layer in LAYERS:
            out = _run_layer(layer, script)
            if "error" in out:
                errors[layer] = out["error"]
                continue
            assert out["layer"] == layer  # the requested layer is the one that ran
            threads[layer] = out["threads"]
            for key, _, _ in CASES:
                epochs[layer][key].append(out[key])
    nbytes = settings.rows * settings.n_features * 8
    for key, description, _ in CASES:
        medians = {
            layer: statistics.median(t for process in times[key] for t in process)
            for layer, times in epochs.items()
            if times[key]
        }
        for layer in LAYERS:
            if layer not in medians:
                results.add(
                    f"threading/{layer}/{key}", f"{description}, {layer} layer", None,
                    notes=f"not available: {errors.get(layer, '?')}",
                )  # fmt: skip
                continue
            ratio = medians[layer] / medians["tbb"] if "tbb" in medians else None
            # The spread of the processes' own medians shows how far the machine's noise goes.
            spread = [statistics.median(process) * 1e3 for process in epochs[layer][key]]
            results.add(
                f"threading/{layer}/{key}", f"{description}, {layer} layer", medians[layer],
                nbytes=nbytes,
                notes=(f"÷ tbb: {ratio:.2f}; " if ratio is not None else "")
                + f"process medians {min(spread):.1f}–{max(spread):.1f} ms; "
                f"{len(spread)} processes × {EPOCHS - 1} epochs, {threads[layer]} threads"
                + ("; fastgd's choice" if layer == "tbb" else ""),
            )  # fmt: skip
