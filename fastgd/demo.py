"""A small end-to-end run: ``python -m fastgd.demo``.

Generates a regression problem and a binary classification problem (features on scales
from 0.5 to 2), and

1. trains each with the three batch strategies of ``fastgd.fit`` under
   ``learning_rate="auto"``, printing every run's last loss-curve values, its quality and
   its fit time;
2. fits the drop-in ``fastgd.SGDClassifier`` beside scikit-learn's with the same settings;
3. writes the regression problem to a CSV file in a temporary folder and trains on it with
   ``fastgd.fit_csv`` (first pass + epochs from the block cache).

The Numba kernels compile (or load from Numba's on-disk cache) on first use; that cost is
printed apart.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

import numpy as np

import fastgd


def make_problems(n_samples: int, n_features: int, seed: int):
    rng = np.random.default_rng(seed)
    # Features on different scales: learning_rate="auto" needs no tuning.
    scales = np.geomspace(0.5, 2.0, n_features)
    X = rng.standard_normal((n_samples, n_features)) * scales
    true_coef = rng.standard_normal(n_features) / scales
    y_regression = X @ true_coef + 2.0 + 0.5 * rng.standard_normal(n_samples)
    margin = X @ true_coef + 0.5 * rng.standard_normal(n_samples)
    y_classes = (margin > 0).astype(np.int64)
    return X, y_regression, y_classes


def _warm_up() -> float:
    """Compile (or load) every kernel the demo uses; return the seconds it took."""
    started = time.perf_counter()
    X, y, labels = make_problems(64, 4, 0)
    for strategy in ("full", "sgd", "minibatch"):
        fastgd.fit(X, y, strategy=strategy, max_iter=1, batch_size=8, random_state=0)
        fastgd.fit(X, labels, loss="log_loss", strategy=strategy, max_iter=1, batch_size=8)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastgd.demo", description=__doc__)
    parser.add_argument("--samples", type=int, default=200_000)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=10, help="epochs of sgd and minibatch")
    parser.add_argument(
        "--full-epochs", type=int, default=100, help="epochs of full batch (one step each)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    compile_seconds = _warm_up()
    X, y, labels = make_problems(args.samples, args.features, args.seed)
    print(
        f"fastgd {fastgd.__version__}: {args.samples:,} rows x {args.features} features "
        f"(scales 0.5 to 2), learning_rate='auto'"
    )
    print(f"kernel compile/load time (first use in this process): {compile_seconds:.2f} s")
    print("full batch takes one step per epoch, sgd one per row, minibatch one per 256 rows\n")
    header = f"{'task':<15}{'strategy':<11}{'epochs':>7}  {'last losses':<34}{'quality':>16}"
    print(header + f"{'fit time':>11}")
    print("-" * (len(header) + 11))
    for task, target, loss in (
        ("regression", y, "squared_error"),
        ("classification", labels, "log_loss"),
    ):
        for strategy in ("full", "sgd", "minibatch"):
            result = fastgd.fit(
                X,
                target,
                loss=loss,
                strategy=strategy,
                batch_size=256,
                max_iter=args.full_epochs if strategy == "full" else args.epochs,
                tol=None,
                shuffle="block",
                random_state=args.seed,
            )
            tail = ", ".join(f"{value:.4g}" for value in result.loss_history[-3:])
            if loss == "squared_error":
                residual = target - result.predict(X)
                quality = f"R² {1 - residual.var() / target.var():.4f}"
            else:
                quality = f"accuracy {np.mean(result.predict(X) == target):.4f}"
            print(
                f"{task:<15}{strategy:<11}{result.n_iter:>7}  {tail:<34}{quality:>16}"
                f"{result.fit_time:>10.3f}s"
            )
    _estimators(X, labels, args)
    _csv(X, y, args)
    return 0


def _estimators(X, labels, args) -> None:
    """The drop-in: the same settings for scikit-learn's SGDClassifier and fastgd's."""
    from sklearn.linear_model import SGDClassifier as SklearnSGDClassifier

    print(f"\ndrop-in estimators: SGDClassifier(loss='log_loss', max_iter={args.epochs})")
    settings = {"loss": "log_loss", "max_iter": args.epochs, "tol": None, "random_state": 0}
    fastgd.SGDClassifier(**settings).fit(X[:100], labels[:100])  # compile / load first
    for name, model in (
        ("scikit-learn", SklearnSGDClassifier(**settings)),
        ("fastgd", fastgd.SGDClassifier(**settings)),
        ("fastgd, shuffle='block'", fastgd.SGDClassifier(**settings, shuffle="block")),
    ):
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(X, labels)
        seconds = time.perf_counter() - started
        print(f"  {name:<25} accuracy {model.score(X, labels):.4f}  fit {seconds:7.3f}s")


def _csv(X, y, args) -> None:
    """A CSV on disk, trained on block by block (the cache makes later epochs fast)."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "demo.csv")
        import polars  # fastgd's CSV parser writes it fast too

        columns = {f"x{j}": X[:, j] for j in range(X.shape[1])}
        polars.DataFrame({**columns, "target": y}).write_csv(path, float_precision=6)
        size = os.path.getsize(path) / 1e6
        result = fastgd.fit_csv(
            path, target="target", strategy="minibatch", max_iter=args.epochs, tol=None,
            standardize=True, random_state=args.seed,
        )  # fmt: skip
        residual = y - result.predict(X)
        print(
            f"\nfit_csv on a {size:.1f} MB CSV ({result.extras['rows']:,} rows): first pass "
            f"{result.extras['first_pass_seconds']:.2f}s, {result.n_iter} epochs in "
            f"{result.fit_time:.2f}s in all, R² {1 - residual.var() / y.var():.4f}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
