"""Package-level promises: import compiles nothing, the option table is consistent, the
compile flags follow DESIGN.md, and the README's demo runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import fastgd
from fastgd import options
from fastgd._kernels import _config, scalar


def test_import_compiles_nothing():
    code = textwrap.dedent(
        """
        import sys
        import numba.core.registry
        import fastgd
        from numba.core.dispatcher import Dispatcher
        compiled = [
            f"{name}.{attr}"
            for name, module in list(sys.modules.items())
            if name.startswith("fastgd")
            for attr, value in vars(module).items()
            if isinstance(value, Dispatcher) and value.signatures
        ]
        print(compiled)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_fastmath_flags_never_drop_nan_or_inf_checks():
    assert {"reassoc", "contract", "nsz", "arcp"} <= _config.FASTMATH
    assert not {"nnan", "ninf", "fast"} & _config.FASTMATH


@pytest.mark.parametrize(
    "table", [options.LOSSES, options.PENALTIES, options.SCHEDULES, options.STRATEGIES]
)
def test_option_codes_are_unique_and_dense(table):
    codes = [row.code for row in table]
    assert sorted(codes) == list(range(len(codes)))
    assert len({row.name for row in table}) == len(table)


def test_kernel_loss_codes_match_the_table():
    for loss in options.LOSSES:
        assert getattr(scalar, loss.name.upper()) == loss.code


@pytest.mark.parametrize(
    ("lookup", "bad", "parameter"),
    [
        (options.loss_by_name, "squared", "loss"),
        (options.penalty_by_name, "l3", "penalty"),
        (options.schedule_by_name, "fast", "learning_rate"),
        (options.strategy_by_name, "batch", "strategy"),
    ],
)
def test_unknown_option_names_list_the_allowed_values(lookup, bad, parameter):
    with pytest.raises(ValueError, match=parameter) as error:
        lookup(bad)
    table = {
        "loss": options.LOSSES,
        "penalty": options.PENALTIES,
        "learning_rate": options.SCHEDULES,
        "strategy": options.STRATEGIES,
    }[parameter]
    for row in table:
        assert repr(row.name) in str(error.value)


def test_demo_runs_and_reports_every_strategy():
    out = subprocess.run(
        [sys.executable, "-m", "fastgd.demo", "--samples", "3000", "--features", "5",
         "--epochs", "3", "--full-epochs", "30"],
        capture_output=True,
        text=True,
        check=True,
    )  # fmt: skip
    lines = out.stdout.splitlines()
    for task in ("regression", "classification"):
        rows = [line for line in lines if line.startswith(task)]
        assert [row.split()[1] for row in rows] == ["full", "sgd", "minibatch"]
    assert fastgd.__version__ in out.stdout
    estimators = [line.split()[0] for line in lines if "accuracy" in line and "fit " in line]
    assert estimators == ["scikit-learn", "fastgd", "fastgd,"]
    assert any(line.startswith("fit_csv on a") and "(3,000 rows)" in line for line in lines)
