"""Peak memory of training on CSV files of different sizes (issues 4 and 14: bounded memory).

For each size, a CSV is generated (``benchmarks/test_stream.py``'s ``write_csv``: 50 float
features and a target), then a separate process trains on it with ``fastgd.fit_csv``
(first pass + ``--epochs`` epochs from the cache) under ``/usr/bin/time -v``, whose
"Maximum resident set size" is the peak RSS. The files and caches are removed afterwards.

With ``--text``, the CSV is ``benchmarks/test_csv_text.py``'s (numeric and 5 text columns
of up to a few thousand levels, missing cells) and the process is the CLI, ``fastgd train``
(default options: standardised, imputed, one-hot, CSR blocks).

    python benchmarks/rss.py                 # 50 MB and 5,000 MB
    python benchmarks/rss.py 50 500 --epochs 2
    python benchmarks/rss.py 5000 --text

Prints one markdown table. Linux only (``/usr/bin/time -v``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_csv_text import write_text_csv
from test_stream import write_csv

TRAIN = (
    "import fastgd; r = fastgd.fit_csv({path!r}, target='target', strategy='sgd', "
    "max_iter={epochs}, tol=None, random_state=0); "
    "print(r.extras['rows'], r.n_iter, r.loss_history[-1])"
)


def peak_rss_mb(path: Path, epochs: int, text: bool = False) -> tuple[float, float, str]:
    if text:
        model = path.with_name("model.npz")
        script = ["-m", "fastgd", "train", str(path), "--target", "target", "--model", str(model),
                  "--strategy", "sgd", "--epochs", str(epochs), "--random-state", "0"]  # fmt: skip
    else:
        script = ["-c", TRAIN.format(path=str(path), epochs=epochs)]
    command = ["/usr/bin/time", "-v", sys.executable, *script]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    if match is None:
        raise RuntimeError(f"no RSS in /usr/bin/time's output:\n{done.stderr}")
    return int(match.group(1)) / 1024, seconds, done.stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", nargs="*", type=float, default=[50.0, 5000.0], help="MB")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--text", action="store_true", help="text CSV, fastgd train (CLI)")
    args = parser.parse_args()
    print("| CSV size | rows | peak RSS | wall time (first pass + epochs) |")
    print("|---:|---:|---:|---:|")
    for size in args.sizes:
        folder = Path(tempfile.mkdtemp(prefix="fastgd-rss-"))
        try:
            path = folder / "data.csv"
            rows = (write_text_csv if args.text else write_csv)(path, size)
            actual = os.path.getsize(path) / 1e6
            rss, seconds, _ = peak_rss_mb(path, args.epochs, args.text)
            print(f"| {actual:,.0f} MB | {rows:,} | {rss:,.0f} MB | {seconds:,.1f} s |", flush=True)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
