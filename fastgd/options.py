"""The one table of fastgd's options: names, integer codes, parameters and defaults.

Every other module (the engine, the kernels' dispatch, the reference, the estimators and
the command line) reads names and codes from here; the training parameters that take these
names (their ranges, defaults and flags) are the rows of ``fastgd/parameters.py``. Adding a
loss means adding one ``Loss`` row below, its scalar maths in ``fastgd/_kernels/scalar.py``
and its twin in ``fastgd/reference.py``. Adding an update rule (momentum, Adam, ...) means
one ``UpdateRule`` row (with the number of per-feature state slots it keeps), its branch of
``apply_update`` in ``fastgd/_kernels/rules.py``, its twin in ``fastgd/reference.py``, and
tests.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DERIVATIVE_CLIP",
    "LOSSES",
    "PENALTIES",
    "SCHEDULES",
    "SHUFFLES",
    "STRATEGIES",
    "UPDATE_RULES",
    "Loss",
    "Penalty",
    "Schedule",
    "Strategy",
    "UpdateRule",
    "loss_by_name",
    "penalty_by_name",
    "schedule_by_name",
    "strategy_by_name",
    "update_rule_by_name",
]

#: Derivatives of the loss are clipped to ``[-DERIVATIVE_CLIP, DERIVATIVE_CLIP]`` before a
#: step, as scikit-learn does, so one extreme row cannot produce an infinite update.
DERIVATIVE_CLIP = 1e12


@dataclass(frozen=True)
class Loss:
    """A per-sample loss ``L(p, y)`` of the prediction ``p`` and the target ``y``.

    ``curvature`` bounds ``d²L/dp²`` (for non-smooth losses: the scale used by
    ``learning_rate="auto"``, their derivative being bounded by 1 or 2 in magnitude).
    ``smooth``: the derivative is Lipschitz, so full-batch descent with a step below
    ``1/(curvature·L)`` lowers the objective at every step. ``probabilities``: a classifier
    trained with it gives class probabilities (``predict_proba``).
    """

    name: str
    code: int
    classification: bool
    uses_epsilon: bool
    curvature: float
    smooth: bool
    doc: str
    probabilities: bool = False


@dataclass(frozen=True)
class Penalty:
    """A penalty ``R(w)``; ``l1_share(l1_ratio)`` is the fraction of ``alpha`` that is L1."""

    name: str
    code: int
    doc: str

    def split(self, alpha: float, l1_ratio: float) -> tuple[float, float]:
        """Return ``(l1_strength, l2_strength)`` so that
        ``alpha·R(w) = l1_strength·‖w‖₁ + l2_strength·½‖w‖²``."""
        if self.name == "none":
            return 0.0, 0.0
        if self.name == "l2":
            return 0.0, float(alpha)
        if self.name == "l1":
            return float(alpha), 0.0
        return float(alpha) * l1_ratio, float(alpha) * (1.0 - l1_ratio)


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule. ``kernel_code`` is what the per-step kernels see: the
    epoch-level schedules (``adaptive``, ``auto``) run as ``constant`` steps whose size the
    engine sets between epochs. ``update_rule`` names the row of :data:`UPDATE_RULES` the
    schedule selects: scikit-learn's ``learning_rate="pa1"``/``"pa2"`` are update rules
    (their step is set by each row), reached through this parameter."""

    name: str
    code: int
    kernel_code: int
    doc: str
    update_rule: str = "sgd"

    @property
    def rule(self) -> UpdateRule:
        return update_rule_by_name(self.update_rule)


@dataclass(frozen=True)
class UpdateRule:
    """How a step turns the data gradient into new weights.

    ``slots``: the per-feature state vectors the rule keeps between steps (a momentum
    buffer, Adam's two moments); the engine allocates them in the kernels' training state
    (``fastgd._kernels.records.State.slots``, shape ``(slots, d)``). ``strategies``: the
    batch strategies it runs under; ``sparse``: whether the CSR kernels implement it.
    """

    name: str
    code: int
    slots: int
    strategies: frozenset[str]
    sparse: bool
    doc: str


@dataclass(frozen=True)
class Strategy:
    name: str
    code: int
    doc: str


LOSSES: tuple[Loss, ...] = (
    Loss("squared_error", 0, False, False, 1.0, True, "½(p − y)²"),
    Loss("huber", 1, False, True, 1.0, True, "½r² if |r| ≤ ε else ε|r| − ½ε², r = p − y"),
    Loss("epsilon_insensitive", 2, False, True, 1.0, False, "max(0, |y − p| − ε)"),
    Loss("squared_epsilon_insensitive", 3, False, True, 2.0, True, "max(0, |y − p| − ε)²"),
    Loss("log_loss", 4, True, False, 0.25, True, "log(1 + exp(−y·p)), y ∈ {−1, +1}",
         probabilities=True),
    Loss("hinge", 5, True, False, 1.0, False, "max(0, 1 − y·p)"),
    Loss("squared_hinge", 6, True, False, 2.0, True, "max(0, 1 − y·p)²"),
    Loss("modified_huber", 7, True, False, 2.0, True, "max(0, 1 − y·p)² if y·p ≥ −1 else −4·y·p",
         probabilities=True),
    Loss("perceptron", 8, True, False, 1.0, False, "max(0, −y·p)"),
)  # fmt: skip

PENALTIES: tuple[Penalty, ...] = (
    Penalty("none", 0, "no penalty"),
    Penalty("l2", 1, "R(w) = ½‖w‖²"),
    Penalty("l1", 2, "R(w) = ‖w‖₁ (proximal step: exact zeros)"),
    Penalty("elasticnet", 3, "R(w) = ρ‖w‖₁ + (1 − ρ)½‖w‖², ρ = l1_ratio"),
)

# Kernel schedule codes.
SCHEDULE_CONSTANT = 0
SCHEDULE_OPTIMAL = 1
SCHEDULE_INVSCALING = 2

SCHEDULES: tuple[Schedule, ...] = (
    Schedule("constant", 0, SCHEDULE_CONSTANT, "η = eta0"),
    Schedule(
        "optimal",
        1,
        SCHEDULE_OPTIMAL,
        "η = 1 / (alpha·(t₀ + t − 1)), t₀ from scikit-learn's heuristic",
    ),
    Schedule("invscaling", 2, SCHEDULE_INVSCALING, "η = eta0 / t^power_t"),
    Schedule(
        "adaptive",
        3,
        SCHEDULE_CONSTANT,
        "η = eta0, divided by 5 after n_iter_no_change epochs without improvement",
    ),
    Schedule("auto", 4, SCHEDULE_CONSTANT, "a safe constant η derived from the data"),
    # The passive-aggressive update rules, selected through learning_rate as in
    # scikit-learn; the penalty's decay uses eta0 (a constant schedule).
    Schedule(
        "pa1", 5, SCHEDULE_CONSTANT,
        "passive-aggressive I: η = min(eta0, L(p, y)/‖x‖²) per row (strategy='sgd')", "pa1",
    ),
    Schedule(
        "pa2", 6, SCHEDULE_CONSTANT,
        "passive-aggressive II: η = L(p, y)/(‖x‖² + 1/(2·eta0)) per row (strategy='sgd')", "pa2",
    ),
)  # fmt: skip

# Kernel update-rule codes.
UPDATE_SGD = 0
UPDATE_PA1 = 1
UPDATE_PA2 = 2

_ALL_STRATEGIES = frozenset({"full", "sgd", "minibatch"})

UPDATE_RULES: tuple[UpdateRule, ...] = (
    UpdateRule(
        "sgd", UPDATE_SGD, 0, _ALL_STRATEGIES, True,
        "w ← prox_{η·l1}(w·(1 − η·l2) − η·g), b ← b − η·g_b",
    ),
    UpdateRule(
        "pa1", UPDATE_PA1, 0, frozenset({"sgd"}), False,
        "passive-aggressive I: the data step of a row is min(eta0, L(p, y)/‖x‖²)",
    ),
    UpdateRule(
        "pa2", UPDATE_PA2, 0, frozenset({"sgd"}), False,
        "passive-aggressive II: the data step of a row is L(p, y)/(‖x‖² + 1/(2·eta0))",
    ),
)  # fmt: skip

STRATEGIES: tuple[Strategy, ...] = (
    Strategy("full", 0, "one step per epoch from the exact gradient (one pass over X)"),
    Strategy("sgd", 1, "one step per row"),
    Strategy("minibatch", 2, "one step per batch_size rows, gradient averaged over the batch"),
)

#: Row orders within an epoch: ``True`` (a fresh random permutation), ``"block"`` (blocks of
#: rows in random order, rows permuted inside each block: cache friendly), ``False`` (file
#: order).
SHUFFLES: tuple[object, ...] = (True, "block", False)
SHUFFLE_NONE = 0
SHUFFLE_FULL = 1
SHUFFLE_BLOCK = 2


def _lookup(table, name, parameter):
    for row in table:
        if row.name == name:
            return row
    allowed = ", ".join(repr(row.name) for row in table)
    raise ValueError(f"{parameter}={name!r} is not supported; allowed values: {allowed}.")


def loss_by_name(name: str) -> Loss:
    return _lookup(LOSSES, name, "loss")


def penalty_by_name(name: str | None) -> Penalty:
    return _lookup(PENALTIES, "none" if name is None else name, "penalty")


def schedule_by_name(name: str) -> Schedule:
    return _lookup(SCHEDULES, name, "learning_rate")


def strategy_by_name(name: str) -> Strategy:
    return _lookup(STRATEGIES, name, "strategy")


def update_rule_by_name(name: str) -> UpdateRule:
    return _lookup(UPDATE_RULES, name, "update_rule")
