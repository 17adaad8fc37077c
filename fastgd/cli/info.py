"""``fastgd info``: everything a model file holds."""

from __future__ import annotations

import argparse

import numpy as np

from ._command import Command
from ._model import load_model
from ._paths import shown_input

HELP = "print what a model file holds"

DESCRIPTION = """\
Print everything a model file holds: format and versions, loss, features with their
weights (and the scaler's means and scales), options, and the training summary.

examples:
  fastgd info houses.npz
  fastgd info houses.npz --json
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="a model file from 'fastgd train'")
    parser.add_argument(
        "--json", action="store_true", help="print the metadata and the arrays as one JSON document"
    )


def _print_header(model, metadata: dict, shown: str) -> None:
    print(f"model file      {shown}")
    print(
        f"format          {metadata['format']} {metadata['format_version']}, written by "
        f"fastgd {model.version}" + (f" on {model.created}" if model.created else "")
    )
    print(f"kind            {model.kind}, loss {model.loss}, dtype {model.dtype.name}")
    if model.target is not None:
        print(f"target          {model.target}")
    if model.classes is not None:
        print(f"classes         {model.classes.tolist()}")
    print(
        f"intercept       {np.round(model.intercept, 10).tolist()}"
        + (" (standardised features)" if model.scaler is not None else "")
    )


def _print_weights(model) -> None:
    """A row per feature: its weight(s), and with a scaler the raw weights, mean, scale."""
    names = model.feature_names or [f"x{i}" for i in range(model.n_features)]
    rows = np.atleast_2d(model.coef)
    header = ["feature"] + (
        ["coef"] if rows.shape[0] == 1 else [f"coef[{i}]" for i in range(rows.shape[0])]
    )
    if model.scaler is not None:
        raw, _ = model.raw_weights()
        raw_rows = np.atleast_2d(raw)
        header += (
            ["raw coef"] if rows.shape[0] == 1 else [f"raw[{i}]" for i in range(rows.shape[0])]
        )
        header += ["mean", "scale"]
    width = max(12, *(len(name) for name in names))
    print(f"\n{model.n_features} features:")
    print("  " + header[0].ljust(width) + "".join(f"{h:>16}" for h in header[1:]))
    for j, name in enumerate(names):
        values = list(rows[:, j])
        if model.scaler is not None:
            values += [*raw_rows[:, j], model.scaler["mean"][j], model.scaler["scale"][j]]
        print("  " + name.ljust(width) + "".join(f"{float(v):>16.8g}" for v in values))


def _print_summary(model, metadata: dict) -> None:
    print("\noptions:")
    for key, value in metadata["options"].items():
        print(f"  {key:<20} {value}")
    print("\ntraining summary:")
    for key, value in metadata["summary"].items():
        if key == "classes":
            continue
        if isinstance(value, float):
            value = f"{value:.6g}"
        print(f"  {key:<20} {value}")
    for key in ("loss_history", "validation_scores"):
        curve = model.summary.get(key)
        if curve is not None and len(curve):
            shown = ", ".join(f"{v:.6g}" for v in curve[:5])
            if len(curve) > 10:
                shown += ", ..., " + ", ".join(f"{v:.6g}" for v in curve[-5:])
            elif len(curve) > 5:
                shown += ", " + ", ".join(f"{v:.6g}" for v in curve[5:])
            print(f"  {key:<20} ({len(curve)}) {shown}")


def run(args: argparse.Namespace) -> int:
    import json

    from ..io.model import _json_safe

    model = load_model(args.model)
    metadata = model.metadata()
    if args.json:
        metadata["arrays"] = _json_safe(model.arrays())
        print(json.dumps(metadata, indent=1))
        return 0
    _print_header(model, metadata, shown_input(args, "model"))
    _print_weights(model)
    _print_summary(model, metadata)
    return 0


COMMAND = Command(HELP, DESCRIPTION, configure, run, inputs=("model",))
