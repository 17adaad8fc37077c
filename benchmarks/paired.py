"""Paired benchmark of two checkouts: the same benchmark files on each, alternated, so that
the machine's drift (±30% between runs here) hits both sides alike.

    python benchmarks/paired.py OLD_TREE NEW_TREE test_throughput.py,test_stream.py \\
        --rows 200000 --repeats 2 --out /tmp/paired

Each tree runs with ``PYTHONPATH`` set to itself (so the same environment imports each
tree's own fastgd), ``OPENBLAS_CORETYPE``/``OPENBLAS_L2_SIZE`` unset and two Numba threads.
Per case the faster of each side's medians is kept; the table gives new ÷ old. Make the
old tree with ``git worktree add --detach /tmp/old REV``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path


def run(tree: Path, files: list[str], rows: int, path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENBLAS_")}
    env.update(FASTGD_BENCH_ROWS=str(rows), NUMBA_NUM_THREADS="2", PYTHONPATH=str(tree))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    command += [f"benchmarks/{name}" for name in files] + [f"--benchmark-json={path}"]
    subprocess.run(command, cwd=tree, env=env, check=False, capture_output=True)


def fastest(out: Path, side: str) -> dict[str, float]:
    best: dict[str, float] = {}
    for path in out.glob(f"{side}-*.json"):
        for case in json.loads(path.read_text())["benchmarks"]:
            median = case["stats"]["median"]
            best[case["fullname"]] = min(best.get(case["fullname"], median), median)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("files", help="comma-separated files of benchmarks/")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("/tmp/fastgd-paired"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    files = args.files.split(",")
    for repeat in range(args.repeats):
        for side, tree in (("old", args.old), ("new", args.new)):
            run(tree.resolve(), files, args.rows, args.out / f"{side}-{repeat}.json")
    old, new = fastest(args.out, "old"), fastest(args.out, "new")
    print("| case | old ms | new ms | new ÷ old |\n|---|---:|---:|---:|")
    for case in sorted(set(old) & set(new)):
        print(f"| {case} | {old[case] * 1e3:.2f} | {new[case] * 1e3:.2f} | "
              f"{new[case] / old[case]:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
