"""The one table of fastgd's training parameters and the rules between them.

Each :class:`Parameter` row gives a parameter's name, kind, allowed range or choices,
``fastgd.fit``'s default, a one-line doc, its command-line flag and which estimators take
it. Three fronts are generated from it:

- the engine's checks and error messages (:func:`check_options`, called by
  ``fastgd.engine.resolve_options``; ``fastgd.engine.fit_defaults`` reads the defaults);
- the estimators' scikit-learn ``_parameter_constraints`` (:func:`sklearn_constraints`);
- ``fastgd train``'s argparse arguments (:func:`argparse_keywords`, :func:`cli_parameters`).

The rules between parameters (``learning_rate="optimal"`` needs ``alpha > 0``, ...) are the
rows of :data:`RULES`, which every front applies through :func:`check_rules`. Adding a
parameter (``momentum``, say) costs one row here plus its use (an argument of
``fastgd.fit`` and of the estimators' ``__init__``); ``tests/test_parameters.py`` checks
that every row reaches every front it claims.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from . import options
from ._validation import check_scalar

__all__ = ["PARAMETERS", "RULES", "Parameter", "Rule", "check_options", "check_rules"]


class _Same:
    """The sentinel of a per-front default equal to ``fastgd.fit``'s."""

    def __repr__(self) -> str:
        return "SAME"


SAME = _Same()
#: The ``default`` of a row ``fastgd.fit`` does not take (an estimator-only parameter).
NOT_IN_FIT = None

#: The estimators that take a parameter.
BOTH = frozenset({"SGDRegressor", "SGDClassifier"})
CLASSIFIER = frozenset({"SGDClassifier"})
NEITHER: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Parameter:
    """One training parameter.

    ``kind``: ``"int"``/``"real"`` (bounded by ``low``/``high``, open where ``closed``, as
    scikit-learn's ``Interval``, says), ``"choice"`` (one of ``choices``), ``"bool"``
    (``True``/``False``, or one of ``choices``), ``"callable"``, ``"random_state"``,
    ``"verbose"`` or ``"mapping"``. ``none``: ``None`` is allowed. ``also_bool``: an
    ``"int"`` that may also be ``True``/``False``. ``fit``: ``fastgd.fit`` takes it (its
    default is ``default``). ``flag``: the ``fastgd train`` flag, or None. ``estimators``:
    the estimator classes that take it; ``sklearn_*`` fields give their differences from
    ``fastgd.fit`` (scikit-learn's defaults and allowed values), ``SAME``/None where none.
    """

    name: str
    kind: str
    default: object
    doc: str
    low: float | None = None
    high: float | None = None
    closed: str = "both"
    choices: tuple = ()
    none: bool = False
    also_bool: bool = False
    fit: bool = True
    flag: str | None = None
    metavar: str | None = None
    estimators: frozenset[str] = BOTH
    sklearn_default: object = SAME
    classifier_default: object = SAME
    sklearn_choices: tuple | None = None
    sklearn_none: bool | None = None

    def default_for(self, front: str) -> object:
        """The default of ``front``: ``"fit"`` (and the command line), ``"SGDRegressor"``
        or ``"SGDClassifier"``."""
        if front == "SGDClassifier" and self.classifier_default is not SAME:
            return self.classifier_default
        if front != "fit" and self.sklearn_default is not SAME:
            return self.sklearn_default
        return self.default


def _names(table) -> tuple[str, ...]:
    return tuple(row.name for row in table)


_POSITIVE_INT = {"kind": "int", "low": 1, "closed": "left"}
_DECAY = {"kind": "real", "low": 0.0, "high": 1.0, "closed": "left"}

#: The optimizers of strategy="sgd"/"minibatch": each names a row of
#: ``fastgd.options.UPDATE_RULES`` (the per-step rule the kernels apply).
STOCHASTIC_OPTIMIZERS = tuple(
    rule.name
    for rule in options.UPDATE_RULES
    if rule.name not in {schedule.update_rule for schedule in options.SCHEDULES} - {"sgd"}
)  # the update rules an optimizer= selects; pa1/pa2 are chosen by learning_rate
#: The optimizers of strategy="full", run by the engine on full-batch gradients ("sgd"
#: there means "gd": one plain step per epoch, fastgd's behaviour before optimizers).
FULL_BATCH_OPTIMIZERS = ("gd", "nesterov", "lbfgs")
_NON_NEGATIVE = {"kind": "real", "low": 0.0, "closed": "left"}
#: The optimizers' defaults (torch.optim's), stated once in ``fastgd.options``.
_TORCH = options.OPTIMIZER_DEFAULTS
#: The optimizers whose step is in the weights' units (adaptive: each coordinate moves by
#: about the step, whatever the gradient's size), so the data's curvature does not bound
#: it: learning_rate="auto" chooses their step by a short range test on a row sample
#: (``fastgd.engine.range_test_step``), the others derive it from the curvature.
RANGE_TESTED_OPTIMIZERS = ("adagrad", "rmsprop", "adam", "adamw")

PARAMETERS: tuple[Parameter, ...] = (
    Parameter("loss", "choice", "squared_error", "the loss L(p, y)",
              choices=_names(options.LOSSES), flag="--loss", metavar="NAME",
              sklearn_default="squared_error", classifier_default="hinge"),
    Parameter("strategy", "choice", "minibatch",
              "rows per step: 1 (sgd), batch_size (minibatch), or all (full)",
              choices=_names(options.STRATEGIES), flag="--strategy", sklearn_default="sgd"),
    Parameter("optimizer", "choice", "sgd",
              "the update rule (strategy full: gd, nesterov, lbfgs; else sgd, momentum, "
              "adagrad, rmsprop, adam, adamw, saga)",
              choices=STOCHASTIC_OPTIMIZERS + FULL_BATCH_OPTIMIZERS, flag="--optimizer",
              metavar="NAME"),
    Parameter("momentum", default=_TORCH["momentum"],
              doc="the momentum of optimizer='momentum'", flag="--momentum", **_DECAY),
    Parameter("nesterov", "bool", _TORCH["nesterov"],
              "Nesterov's look-ahead for optimizer='momentum'"),
    Parameter("beta_1", default=_TORCH["beta_1"], doc="Adam's decay of the first moment",
              flag="--beta-1", **_DECAY),
    Parameter("beta_2", default=_TORCH["beta_2"], doc="Adam's decay of the second moment",
              flag="--beta-2", **_DECAY),
    Parameter("rho", default=_TORCH["rho"], doc="RMSProp's decay of the squared gradients",
              flag="--rho", **_DECAY),
    Parameter("optimizer_epsilon", "real", _TORCH["optimizer_epsilon"],
              "the denominator's guard of adagrad, rmsprop, adam and adamw", low=0.0,
              closed="neither", flag="--optimizer-epsilon"),
    Parameter("batch_size", default=256, doc="rows per mini-batch", flag="--batch-size",
              metavar="N", **_POSITIVE_INT),
    Parameter("learning_rate", "choice", "auto", "the step-size schedule",
              choices=_names(options.SCHEDULES), flag="--learning-rate",
              sklearn_default="invscaling", classifier_default="optimal"),
    Parameter("eta0", "real", 0.01, "initial step size", low=0.0, closed="neither",
              flag="--eta0"),
    Parameter("power_t", "real", 0.25, "the exponent of invscaling", closed="neither",
              classifier_default=0.5),
    Parameter("penalty", "choice", None, "the penalty R(w)", choices=_names(options.PENALTIES),
              none=True, flag="--penalty", sklearn_default="l2",
              sklearn_choices=("l2", "l1", "elasticnet")),
    Parameter("alpha", default=1e-4, doc="penalty strength", flag="--alpha", **_NON_NEGATIVE),
    Parameter("l1_ratio", "real", 0.15, "the L1 share of alpha for elasticnet", low=0.0,
              high=1.0, sklearn_none=True),
    Parameter("epsilon", default=0.1, doc="the epsilon of the epsilon-using losses",
              **_NON_NEGATIVE),
    Parameter("max_iter", default=20, doc="at most N passes over the data", flag="--epochs",
              metavar="N", sklearn_default=1000, **_POSITIVE_INT),
    Parameter("tol", default=1e-4, doc="stopping tolerance, or 'none'", none=True,
              flag="--tol", sklearn_default=1e-3, **_NON_NEGATIVE),
    Parameter("n_iter_no_change", default=5, doc="epochs without progress before stopping",
              **_POSITIVE_INT),
    Parameter("fit_intercept", "bool", True, "fit the intercept b"),
    Parameter("shuffle", "bool", True, "row order: random, 'block' (cache friendly) or file",
              choices=("block",)),
    Parameter("random_state", "random_state", None, "seed", flag="--random-state",
              metavar="N"),
    Parameter("callback", "callable", None, "called after each epoch", none=True,
              estimators=NEITHER),
    Parameter("t_init", "real", 1.0, "the step counter of the first step", low=1.0,
              estimators=NEITHER),
    Parameter("average", default=False, doc="averaged SGD from step k (True: 1)", none=True,
              also_bool=True, sklearn_none=False, **_POSITIVE_INT),
    Parameter("validation_score", "callable", None, "held-out score watched for stopping",
              none=True, estimators=NEITHER),
    Parameter("divergence_checks", "choice", "all", "the divergence rules applied",
              choices=("all", "non_finite"), estimators=NEITHER),
    # scikit-learn's own ways, which its estimators (fastgd's too) use: fastgd.fit's options.
    Parameter("l1_method", "choice", "proximal",
              "how L1 acts: the proximal step, or scikit-learn's cumulative truncated "
              "gradient (strategy='sgd', plain rule)", choices=options.L1_METHODS,
              estimators=NEITHER),
    Parameter("intercept_decay", "real", 1.0,
              "the factor of the intercept's step (scikit-learn's 0.01 on sparse data)",
              low=0.0, high=1.0, closed="right", estimators=NEITHER),
    Parameter("multiclass", "choice", "ovr",
              "more than two classes: one-vs-rest binary models, or one softmax model "
              "(multinomial, loss='log_loss')", choices=("ovr", "multinomial"),
              estimators=CLASSIFIER, flag="--multiclass"),
    # The estimators' own parameters (scikit-learn's), not fastgd.fit's.
    Parameter("verbose", "verbose", NOT_IN_FIT, "print one block per epoch", fit=False,
              sklearn_default=0),
    Parameter("early_stopping", "bool", NOT_IN_FIT, "stop on a held-out score", fit=False,
              sklearn_default=False),
    Parameter("validation_fraction", "real", NOT_IN_FIT,
              "hold out this fraction of the rows; stop early on their score", low=0.0,
              high=1.0, closed="neither", fit=False, flag="--validation-fraction",
              metavar="F", sklearn_default=0.1),
    Parameter("warm_start", "bool", NOT_IN_FIT, "start from the fitted model", fit=False,
              sklearn_default=False),
    Parameter("n_jobs", "int", NOT_IN_FIT, "threads for one-vs-rest", none=True, fit=False,
              estimators=CLASSIFIER),
    Parameter("class_weight", "mapping", NOT_IN_FIT, "weights of the classes", none=True,
              choices=("balanced",), fit=False, estimators=CLASSIFIER),
)  # fmt: skip

_BY_NAME = {row.name: row for row in PARAMETERS}


def parameter(name: str) -> Parameter:
    return _BY_NAME[name]


# ----------------------------------------------------------------------- the engine's checks


def _allowed(row: Parameter) -> str:
    values = [repr(choice) for choice in row.choices]
    if row.kind == "bool":
        values = ["True", "False", *values]
    return ", ".join(values)


def check_value(row: Parameter, value):
    """Check ``value`` against ``row``; return it (numbers as Python ``int``/``float``).
    The messages name the parameter and what is allowed."""
    if value is None and row.none:
        return None
    if row.kind in ("int", "real"):
        if row.also_bool and isinstance(value, bool):
            return value
        return check_scalar(
            value, row.name, kind=row.kind, low=row.low, high=row.high,
            low_open=row.closed in ("right", "neither"),
            high_open=row.closed in ("left", "neither"), allow_none=row.none,
        )  # fmt: skip
    if row.kind == "bool":
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        if not row.choices:
            raise TypeError(f"{row.name} must be True or False; got {value!r}.")
    if row.kind in ("bool", "choice"):
        if isinstance(value, str) and value in row.choices:
            return value
        raise ValueError(f"{row.name}={value!r} is not supported; allowed values: {_allowed(row)}.")
    if row.kind == "callable" and not callable(value):
        none = " or None" if row.none else ""
        raise TypeError(f"{row.name} must be callable{none}; got {type(value).__name__}.")
    return value  # random_state: checked where the generator is made (engine._make_rng)


def check_options(values: Mapping[str, object], front: str = "fit") -> dict:
    """Check every value of ``values`` (parameter name to value) by its row, then the
    :data:`RULES` of ``front``; return the checked values."""
    checked = {name: check_value(_BY_NAME[name], value) for name, value in values.items()}
    check_rules(checked, front)
    return checked


# ----------------------------------------------------------------------- the rules


@dataclass(frozen=True)
class Rule:
    """A rule between parameters: ``check(values, front)`` returns the error message (or
    None when the values obey it). ``fronts``: where it applies (``"fit"`` for the engine
    and the command line, the estimators' class names)."""

    names: tuple[str, ...]
    check: Callable[[Mapping, str], str | None]
    doc: str
    fronts: frozenset[str] = frozenset({"fit"}) | BOTH


def _optimal_needs_alpha(values, front):
    if values["learning_rate"] == "optimal" and values["alpha"] == 0:
        return "learning_rate='optimal' needs alpha > 0 (its step is 1/(alpha·t))."
    return None


def _rule_needs_its_strategies(values, front):
    schedule = options.schedule_by_name(values["learning_rate"])
    rule = schedule.rule
    if values["strategy"] not in rule.strategies:
        allowed = " or ".join(f"strategy={name!r}" for name in sorted(rule.strategies))
        return (
            f"learning_rate={schedule.name!r} selects the update rule {rule.name!r}, which "
            f"needs {allowed} (got strategy={values['strategy']!r})."
        )
    return None


#: scikit-learn's passive-aggressive rules take one loss per estimator.
_PA_LOSSES = {"SGDClassifier": "hinge", "SGDRegressor": "epsilon_insensitive"}


def _pa_needs_its_loss(values, front):
    allowed = _PA_LOSSES[front]
    if values["learning_rate"] in ("pa1", "pa2") and values["loss"] != allowed:
        return (
            f"Learning rate {values['learning_rate']!r} only works with loss {allowed!r} "
            f"(got loss={values['loss']!r})."
        )
    return None


def _elasticnet_needs_l1_ratio(values, front):
    if values["penalty"] == "elasticnet" and values["l1_ratio"] is None:
        return "l1_ratio must be set when penalty is 'elasticnet'."
    return None


def _optimizer_needs_its_strategy(values, front):
    optimizer, strategy = values["optimizer"], values["strategy"]
    if strategy == "full":
        allowed = ("sgd", *FULL_BATCH_OPTIMIZERS)  # "sgd" under full: plain gd
    else:  # the update rules' strategies column (fastgd.options.UPDATE_RULES)
        runs = {rule.name for rule in options.UPDATE_RULES if strategy in rule.strategies}
        allowed = tuple(name for name in STOCHASTIC_OPTIMIZERS if name in runs)
    if optimizer not in allowed:
        names = ", ".join(repr(name) for name in allowed)
        return (
            f"optimizer={optimizer!r} does not run with strategy={strategy!r}; allowed "
            f"values there: {names} (the full-batch optimizers gd, nesterov, lbfgs need "
            f"strategy='full', the others strategy='sgd' or 'minibatch')."
        )
    return None


def _lbfgs_needs_a_smooth_objective(values, front):
    if values["optimizer"] != "lbfgs":
        return None
    loss = options.loss_by_name(values["loss"])
    if not loss.smooth:
        smooth = ", ".join(row.name for row in options.LOSSES if row.smooth)
        return (
            f"optimizer='lbfgs' needs a smooth loss (one of {smooth}); loss={loss.name!r} "
            f"is not differentiable everywhere: use optimizer='gd' or 'nesterov'."
        )
    l1_ratio = values.get("l1_ratio")
    if values["penalty"] == "l1" or (values["penalty"] == "elasticnet" and l1_ratio != 0):
        return (
            f"optimizer='lbfgs' cannot minimise the L1 part of penalty={values['penalty']!r} "
            f"(it is not smooth): use penalty='l2' or None, or optimizer='saga' (with "
            f"strategy='sgd' or 'minibatch') for an L1 penalty."
        )
    return None


def _pa_needs_plain_sgd(values, front):
    rate, optimizer = values["learning_rate"], values["optimizer"]
    if rate not in ("pa1", "pa2") or optimizer == "sgd":
        return None
    return (
        f"learning_rate={rate!r} is its own update rule; it needs optimizer='sgd' (got "
        f"optimizer={optimizer!r})."
    )


def _multinomial_needs_log_loss(values, front):
    if values["multiclass"] != "multinomial" or values["loss"] == "log_loss":
        return None
    return (
        f"multiclass='multinomial' is the softmax model of loss='log_loss'; got "
        f"loss={values['loss']!r}. Use loss='log_loss' or multiclass='ovr'."
    )


def _full_batch_optimizers_do_not_average(values, front):
    if values["optimizer"] in ("nesterov", "lbfgs") and values["average"] not in (None, False, 0):
        return (
            f"average needs a stochastic optimizer; optimizer={values['optimizer']!r} "
            f"does not average."
        )
    return None


def _truncated_l1_needs_plain_sgd(values, front):
    if values["l1_method"] != "truncated":
        return None
    if values["strategy"] != "sgd" or values["optimizer"] != "sgd":
        return (
            "l1_method='truncated' (scikit-learn's cumulative truncated gradient) is a "
            "per-sample method: it needs strategy='sgd' and optimizer='sgd' (got "
            f"strategy={values['strategy']!r}, optimizer={values['optimizer']!r}); use "
            "l1_method='proximal' there."
        )
    return None


def _intercept_decay_needs_a_kernel_rule(values, front):
    if values["intercept_decay"] != 1.0 and values["optimizer"] in ("nesterov", "lbfgs"):
        return (
            f"intercept_decay={values['intercept_decay']!r} damps the kernels' intercept "
            f"steps; optimizer={values['optimizer']!r} steps the weights and the intercept "
            "together in the engine: use intercept_decay=1.0 there."
        )
    return None


RULES: tuple[Rule, ...] = (
    Rule(("learning_rate", "loss"), _pa_needs_its_loss,
         "pa1/pa2 need scikit-learn's loss for them (hinge, epsilon_insensitive)", BOTH),
    Rule(("learning_rate", "strategy"), _rule_needs_its_strategies,
         "an update rule runs only under its strategies (pa1/pa2: sgd)"),
    Rule(("learning_rate", "alpha"), _optimal_needs_alpha, "optimal needs alpha > 0"),
    Rule(("penalty", "l1_ratio"), _elasticnet_needs_l1_ratio, "elasticnet needs l1_ratio"),
    Rule(("optimizer", "strategy"), _optimizer_needs_its_strategy,
         "gd, nesterov, lbfgs need strategy='full'; the stochastic optimizers sgd/minibatch"),
    Rule(("optimizer", "loss", "penalty"), _lbfgs_needs_a_smooth_objective,
         "lbfgs needs a smooth loss and no L1 part in the penalty"),
    Rule(("optimizer", "learning_rate"), _pa_needs_plain_sgd, "pa1/pa2 need optimizer='sgd'"),
    Rule(("optimizer", "average"), _full_batch_optimizers_do_not_average,
         "nesterov and lbfgs do not average"),
    Rule(("l1_method", "strategy", "optimizer"), _truncated_l1_needs_plain_sgd,
         "l1_method='truncated' needs strategy='sgd' and optimizer='sgd'", frozenset({"fit"})),
    Rule(("intercept_decay", "optimizer"), _intercept_decay_needs_a_kernel_rule,
         "intercept_decay applies to the kernels' update rules, not nesterov/lbfgs",
         frozenset({"fit"})),
    Rule(("multiclass", "loss"), _multinomial_needs_log_loss,
         "multiclass='multinomial' needs loss='log_loss'", frozenset({"fit"}) | CLASSIFIER),
)  # fmt: skip


def check_rules(values: Mapping[str, object], front: str = "fit") -> None:
    """Raise ``ValueError`` for the first rule of ``front`` that ``values`` break (rules
    whose parameters are not all in ``values`` are skipped)."""
    for rule in RULES:
        if front in rule.fronts and all(name in values for name in rule.names):
            message = rule.check(values, front)
            if message is not None:
                raise ValueError(message)


# ----------------------------------------------------------------------- the estimators


def sklearn_constraints(estimator: str, **overrides) -> dict:
    """``_parameter_constraints`` of the estimator class named ``estimator`` (scikit-learn's
    ``Interval``/``StrOptions`` objects) for every row it takes; ``overrides`` replaces the
    allowed choices of some rows (``loss=`` the regression losses)."""
    return {
        row.name: _sklearn_constraint(row, overrides.get(row.name))
        for row in PARAMETERS
        if estimator in row.estimators
    }


def _sklearn_constraint(row: Parameter, choices) -> list:
    from sklearn.utils._param_validation import Interval, StrOptions

    if choices is None:
        choices = row.sklearn_choices if row.sklearn_choices is not None else row.choices
    none = row.none if row.sklearn_none is None else row.sklearn_none
    number = numbers.Integral if row.kind == "int" else numbers.Real
    if row.kind == "int" and row.low is None and row.high is None:
        allowed = [number]
    elif row.kind in ("int", "real"):
        allowed = [Interval(number, row.low, row.high, closed=row.closed)]
        allowed += ["boolean"] if row.also_bool else []
    elif row.kind == "bool":
        allowed = ["boolean"] + ([StrOptions(set(choices))] if choices else [])
    elif row.kind == "mapping":
        allowed = [StrOptions(set(choices)), dict]
    elif row.kind == "choice":
        allowed = [StrOptions(set(choices))]
    else:  # "random_state", "verbose", "callable": scikit-learn's own names for them
        allowed = [row.kind]
    return [*allowed, None] if none else allowed


# ----------------------------------------------------------------------- the command line


def cli_parameters() -> tuple[Parameter, ...]:
    """The rows with a ``fastgd train`` flag, in table order."""
    return tuple(row for row in PARAMETERS if row.flag is not None)


def _number_type(row: Parameter) -> Callable[[str], object]:
    """An argparse ``type`` for a number row: the table's check, as a usage error."""
    import argparse

    def parse(text: str):
        if row.none and text.strip().lower() == "none":
            return "none"  # kept as a string, so that it differs from "not given"
        try:
            value = (int if row.kind == "int" else float)(text)
        except ValueError:
            what = "an integer" if row.kind == "int" else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        try:
            return check_value(row, value)
        except (TypeError, ValueError) as error:
            raise argparse.ArgumentTypeError(str(error).replace(f"{row.name} m", "m")) from None

    return parse


def _shown_default(row: Parameter) -> str:
    if row.default is None:
        return "none"
    if isinstance(row.default, float) and math.isfinite(row.default):
        return f"{row.default:g}"
    return str(row.default)


def argparse_keywords(row: Parameter) -> dict:
    """``add_argument``'s keywords for ``row``'s flag: ``dest``, ``type`` or ``choices``,
    ``metavar`` and ``help`` (with fastgd.fit's default). No argparse default: a flag not
    given stays None, so that a resumed model's option can fill it."""
    keywords: dict = {"dest": row.name}
    if row.kind == "choice":
        keywords["choices"] = list(row.choices)
    elif row.kind in ("int", "real"):
        keywords["type"] = _number_type(row)
    elif row.kind == "random_state":
        keywords["type"] = int
    if row.metavar is not None:
        keywords["metavar"] = row.metavar
    doc = row.doc
    if row.kind == "choice" and row.metavar is not None:
        doc = f"{doc}: one of {', '.join(row.choices)}"
    default = "" if not row.fit else f" (default: {_shown_default(row)})"
    keywords["help"] = doc + default
    return keywords
