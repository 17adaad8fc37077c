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
class _Choice:
    """A choice with no parameters of its own: its name, its integer code, one line of doc."""

    name: str
    code: int
    doc: str


class Penalty(_Choice):
    """A penalty ``R(w)``; :meth:`split` turns ``alpha`` and ``l1_ratio`` into its L1 and L2
    strengths."""

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
    (``fastgd._kernels.records.State.slots``, shape ``(slots, d + 1)``: the last column is
    the intercept's, which takes the same rule). ``strategies``: the batch strategies it
    runs under; ``sparse``: whether the CSR kernels implement it.
    """

    name: str
    code: int
    slots: int
    strategies: frozenset[str]
    sparse: bool
    doc: str
    #: The parameters of :data:`OPTIMIZER_DEFAULTS` the rule reads.
    parameters: tuple[str, ...] = ()
    #: One stored derivative per row (SAGA), in ``State.row_memory``.
    row_memory: bool = False


class Strategy(_Choice):
    """A batch strategy: how many rows each step reads (all, one, or ``batch_size``)."""


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
UPDATE_MOMENTUM = 3
UPDATE_ADAGRAD = 4
UPDATE_RMSPROP = 5
UPDATE_ADAM = 6
UPDATE_ADAMW = 7
UPDATE_SAGA = 8

#: How the L1 penalty acts (``fastgd.fit``'s ``l1_method``; the index is the kernel code):
#: ``"proximal"``, the soft threshold ``prox_{η·l1}`` after each step (every weight, every
#: step); ``"truncated"``, scikit-learn's cumulative truncated gradient (Tsuruoka et al.,
#: 2009): each step adds ``η·l1`` to a running total ``u`` and clips every weight the step
#: touches (every weight on dense rows, the row's stored columns on CSR) towards 0 by what
#: it has not yet received of ``u``, never across 0 (per-sample plain SGD only).
L1_METHODS: tuple[str, ...] = ("proximal", "truncated")
L1_PROXIMAL = 0
L1_TRUNCATED = 1

_ALL_STRATEGIES = frozenset({"full", "sgd", "minibatch"})
_STOCHASTIC = frozenset({"sgd", "minibatch"})

#: The optimizer rules' parameters and their defaults (torch.optim's): ``momentum`` and
#: ``nesterov`` (heavy ball), ``beta_1``, ``beta_2`` (Adam's moment decays), ``rho``
#: (RMSProp's decay, torch's ``alpha``), ``optimizer_epsilon`` (the denominators' ε).
OPTIMIZER_DEFAULTS: dict[str, float | bool] = {
    "momentum": 0.9,
    "nesterov": False,
    "beta_1": 0.9,
    "beta_2": 0.999,
    "rho": 0.99,
    "optimizer_epsilon": 1e-8,
}


def _torch_rule(name: str, code: int, slots: int, parameters: tuple[str, ...], doc: str):
    """A row for one of torch.optim's rules: they run under ``sgd`` and ``minibatch``, on
    dense and CSR rows alike."""
    return UpdateRule(name, code, slots, _STOCHASTIC, True, doc, parameters)


# The optimizer rules follow torch.optim's update equations and defaults, with the step
# η = eta0 or the schedule's rate (torch's lr) and t the step counter (1 at the first step).
# Differences from torch: the squared loss is ½(p − y)², so gradients are half torch's
# MSELoss; the penalty's L2 part l2·w is torch's weight_decay=l2 (AdamW: w ← w·(1 − η·l2),
# torch's weight_decay=l2 too); its L1 part is a proximal step w ← prox_{η·l1}(w) after the
# rule's step; the intercept takes the same rule, without penalty. On CSR rows (sparse=True)
# the rules run lazily, as torch's SparseAdam and Vowpal Wabbit's adaptive updates: a step
# moves only the weights and slots of the features its rows hold (their L2 term, decay and
# L1 step included), so its cost stays proportional to the non-zeros. SAGA on CSR rows is
# the dense rule exactly: the steps a feature skips (its ḡ_j term, decay and L1 step) are
# caught up just in time, in closed form (fastgd._kernels.sparse, SAGA's section).
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
    _torch_rule("momentum", UPDATE_MOMENTUM, 1, ("momentum", "nesterov"),
        "heavy ball (torch SGD, dampening 0): v ← μ·v + g, w ← w − η·v; nesterov: "
        "w ← w − η·(g + μ·v); g includes l2·w"),
    _torch_rule("adagrad", UPDATE_ADAGRAD, 1, ("optimizer_epsilon",),
        "AdaGrad (torch, lr_decay 0, initial accumulator 0): G ← G + g², "
        "w ← w − η·g/(√G + ε); g includes l2·w"),
    _torch_rule("rmsprop", UPDATE_RMSPROP, 1, ("rho", "optimizer_epsilon"),
        "RMSProp (torch, not centred, no momentum): v ← ρ·v + (1 − ρ)·g², "
        "w ← w − η·g/(√v + ε); g includes l2·w"),
    _torch_rule("adam", UPDATE_ADAM, 2, ("beta_1", "beta_2", "optimizer_epsilon"),
        "Adam (torch, amsgrad off): m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g², "
        "w ← w − η·m̂/(√v̂ + ε), m̂ = m/(1 − β₁ᵗ), v̂ = v/(1 − β₂ᵗ); g includes l2·w"),
    _torch_rule("adamw", UPDATE_ADAMW, 2, ("beta_1", "beta_2", "optimizer_epsilon"),
        "AdamW (torch): w ← w·(1 − η·l2), then Adam's step from the data gradient alone"),
    UpdateRule(
        "saga", UPDATE_SAGA, 1, _STOCHASTIC, True,
        "SAGA (Defazio et al., 2014): one stored derivative α_i per row (n scalars) and their "
        "mean gradient ḡ; a step on rows I: g = (1/m)Σ_I (d_i − α_i)·x_i + ḡ (+ l2·w), "
        "w ← prox_{η·l1}(w − η·g), ḡ ← ḡ + (1/n)Σ_I (d_i − α_i)·x_i, α_i ← d_i; memory "
        "starts at 0; linear convergence with a constant step (η ≈ 1/(3·L_max))",
        (), True,
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


def no_csr_kernel(rule: UpdateRule, optimizer: str) -> ValueError:
    """The error for an update rule without CSR kernels (the table's ``sparse`` column),
    named by the parameter that chose it: ``optimizer``, or ``learning_rate`` (pa1/pa2)."""
    parameter = "optimizer" if rule.name == optimizer else "learning_rate"
    working = ", ".join(r.name for r in UPDATE_RULES if r.sparse)
    return ValueError(
        f"{parameter}={rule.name!r} has no CSR kernel (fastgd.options.UPDATE_RULES, column "
        f"sparse); on sparse X use a dense array (X.toarray()) or an update rule with one: "
        f"optimizer in {working} (learning_rate not pa1/pa2)."
    )
