"""The parameter table (fastgd.parameters): every fit option is a row, every row reaches
the fronts it claims (the engine's checks, the estimators' scikit-learn constraints, the
``fastgd train`` flags), and the rules between parameters hold on every front."""

from __future__ import annotations

import argparse
import inspect
import math

import numpy as np
import pytest
from sklearn.utils._param_validation import InvalidParameterError

import fastgd
from fastgd import cli, engine, parameters
from fastgd.estimators import SGDClassifier, SGDRegressor
from fastgd.parameters import PARAMETERS, Parameter

ESTIMATORS = {"SGDRegressor": SGDRegressor, "SGDClassifier": SGDClassifier}
X0 = np.random.default_rng(0).normal(size=(12, 3))
Y0 = X0 @ np.array([1.0, -2.0, 0.5])


def _train_parser() -> argparse.ArgumentParser:
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices["train"]


def _fit_options() -> dict:
    signature = inspect.signature(fastgd.fit).parameters
    return {name: p.default for name, p in signature.items() if name not in engine.DATA_ARGUMENTS}


def test_every_fit_option_is_a_row_with_fits_default():
    rows = {row.name: row.default for row in PARAMETERS if row.fit}
    assert rows == _fit_options()
    assert engine.fit_defaults() == _fit_options()
    assert len({row.name for row in PARAMETERS}) == len(PARAMETERS)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_every_row_reaches_the_estimators_it_names(name):
    estimator = ESTIMATORS[name]
    init = inspect.signature(estimator.__init__).parameters
    constraints = estimator._parameter_constraints
    for row in PARAMETERS:
        if name in row.estimators:
            assert row.name in constraints, row.name
            assert init[row.name].default == row.default_for(name), row.name
        else:
            assert row.name not in init and row.name not in constraints, row.name
    # Nothing the estimators take is declared outside the table.
    assert set(constraints) == {row.name for row in PARAMETERS if name in row.estimators}
    assert set(init) - {"self"} == set(constraints)


def test_every_row_with_a_flag_reaches_fastgd_train():
    actions = {action.dest: action for action in _train_parser()._actions}
    for row in PARAMETERS:
        if row.flag is None:
            assert row.name not in actions, row.name
            continue
        action = actions[row.name]
        assert row.flag in action.option_strings
        assert action.default is None  # not given: the resumed model's option, or fit's
        if row.kind == "choice":
            assert list(action.choices) == list(row.choices)
        if row.fit:
            assert "default:" in action.help


NUMBER_ROWS = [row for row in PARAMETERS if row.kind in ("int", "real") and row.low is not None]


def _below(row: Parameter):
    """A value just outside the row's lower bound."""
    if row.closed in ("right", "neither"):
        return row.low
    return row.low - 1 if row.kind == "int" else row.low - 0.5


@pytest.mark.parametrize("row", NUMBER_ROWS, ids=[row.name for row in NUMBER_ROWS])
def test_a_value_out_of_range_is_refused_by_every_front(row, capsys):
    value = _below(row)
    with pytest.raises(ValueError, match=rf"{row.name} must be (>|in)"):
        parameters.check_value(row, value)
    if row.fit:
        with pytest.raises(ValueError, match=row.name):
            fastgd.fit(X0, Y0, **{"max_iter": 1, row.name: value})
    for name in row.estimators:
        estimator = ESTIMATORS[name](**{row.name: value})
        with pytest.raises(InvalidParameterError, match=row.name):
            estimator._validate_params()
    if row.flag is not None:
        with pytest.raises(SystemExit) as caught:
            _train_parser().parse_args(["d.csv", "--model", "m.npz", row.flag, str(value)])
        assert caught.value.code == 2
        assert row.flag in capsys.readouterr().err


def test_messages_name_the_parameter_and_the_allowed_values():
    row = parameters.parameter("validation_fraction")
    with pytest.raises(ValueError, match=r"validation_fraction must be in \(0.0, 1.0\); got 1.0"):
        parameters.check_value(row, 1.0)
    with pytest.raises(ValueError, match=r"divergence_checks='some'.*'all', 'non_finite'"):
        parameters.check_value(parameters.parameter("divergence_checks"), "some")
    with pytest.raises(TypeError, match="callback must be callable or None; got int"):
        parameters.check_value(parameters.parameter("callback"), 3)
    assert parameters.check_value(parameters.parameter("average"), True) is True
    assert parameters.check_value(parameters.parameter("shuffle"), np.bool_(False)) is False


def test_optimal_needs_alpha_on_every_front(tmp_path, capsys):
    message = r"learning_rate='optimal' needs alpha > 0"
    with pytest.raises(ValueError, match=message):
        fastgd.fit(X0, Y0, learning_rate="optimal", alpha=0.0)
    for estimator in ESTIMATORS.values():
        with pytest.raises(ValueError, match=message):
            estimator(learning_rate="optimal", alpha=0.0).fit(X0, Y0 > 0)
    data = tmp_path / "d.csv"
    data.write_text("a,y\n1,2\n3,4\n")
    argv = ["train", str(data), "--target", "y", "--model", str(tmp_path / "m.npz")]
    code = cli.main([*argv, "--learning-rate", "optimal", "--alpha", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "--learning-rate optimal needs --alpha > 0" in err  # usage
    assert not (tmp_path / "m.npz").exists()


def test_the_rules_apply_where_they_say():
    pa_loss = {"learning_rate": "pa1", "loss": "squared_error", "strategy": "sgd"}
    parameters.check_rules(pa_loss, "fit")  # fastgd.fit runs pa1 with any loss
    with pytest.raises(ValueError, match="only works with loss 'epsilon_insensitive'"):
        parameters.check_rules(pa_loss, "SGDRegressor")
    with pytest.raises(ValueError, match="only works with loss 'hinge'"):
        parameters.check_rules(pa_loss, "SGDClassifier")
    with pytest.raises(ValueError, match="needs strategy='sgd'"):
        parameters.check_rules({"learning_rate": "pa2", "strategy": "full"}, "fit")
    with pytest.raises(ValueError, match="l1_ratio must be set"):
        parameters.check_rules({"penalty": "elasticnet", "l1_ratio": None}, "SGDRegressor")
    for rule in parameters.RULES:
        assert set(rule.names) <= {row.name for row in PARAMETERS}, rule.doc


def test_a_new_row_reaches_every_front(monkeypatch):
    """Adding a parameter (here a momentum) is one row: its check, its scikit-learn
    constraint and its flag follow from it."""
    row = Parameter(
        "momentum", "real", 0.0, "the momentum of the heavy ball", low=0.0, high=1.0,
        closed="left", flag="--momentum",
    )  # fmt: skip
    monkeypatch.setattr(parameters, "PARAMETERS", (*PARAMETERS, row))
    with pytest.raises(ValueError, match=r"momentum must be in \[0.0, 1.0\); got 1.0"):
        parameters.check_value(row, 1.0)
    constraint = parameters.sklearn_constraints("SGDRegressor")["momentum"][0]
    assert constraint.is_satisfied_by(0.5) and not constraint.is_satisfied_by(1.0)
    assert row in parameters.cli_parameters()
    keywords = parameters.argparse_keywords(row)
    assert keywords["dest"] == "momentum" and "(default: 0)" in keywords["help"]
    assert keywords["type"]("0.9") == 0.9
    with pytest.raises(argparse.ArgumentTypeError, match=r"must be in \[0.0, 1.0\)"):
        keywords["type"]("1")
    assert math.isclose(keywords["type"]("0"), 0.0)


def test_the_engine_refuses_an_option_outside_the_table():
    with pytest.raises(TypeError, match=r"unknown options \['lookahead'\].*'alpha'"):
        engine.resolve_options(lookahead=0.9)
    resolved = engine.resolve_options(loss="hinge", average=True, penalty="elasticnet")
    assert resolved["loss"].name == "hinge" and resolved["average_start"] == 1.0
    assert resolved["l1"] == pytest.approx(1e-4 * 0.15)  # the table's alpha and l1_ratio
