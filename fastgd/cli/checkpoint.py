"""Checkpoints of ``fastgd train``: the model saved after each epoch (so Ctrl-C keeps the
last one), the best weights of a divergence, and the progress a --resume continues.

Each checkpoint keeps the update rule's state with the weights (the model file's
``rule_state``: slots and step counter, format 1.2), so a --resume continues the same
optimizer; and the state of the random generator that draws the epochs' row orders (the
summary's ``rng_state``), so a resumed run shuffles as the uninterrupted one would have:
k epochs and a resumed m give the k + m epochs of one run (to rounding: the weights pass
through the raw space; with learning_rate="auto" the resumed run derives its step afresh,
from a new row sample). ``--random-state`` given with --resume starts the orders afresh
from that seed.

The slots stay in the space the engine trains in, the standardised features with
--standardize, as the model file's ``coef`` does; a resumed run passes them to ``fit_csv``
unchanged (its weights go through the raw space, which ``fit_csv`` maps back). With the
same data the scaler is the same; resuming on other data keeps the slots as they are (they
are statistics of past gradients, not weights, so no exact mapping exists).
"""

from __future__ import annotations

import math
import sys
import warnings

import numpy as np

from ._command import CommandError


def previous_progress(previous) -> tuple[int, np.ndarray, float]:
    """Epochs, loss curve and step counter of the model a --resume continues."""
    if previous is None:
        return 0, np.empty(0), 1.0
    summary = previous.summary
    history = np.asarray(summary.get("loss_history", np.empty(0)), dtype=np.float64)
    t = previous.rule_state.t if previous.rule_state is not None else summary.get("t")
    return int(summary.get("epochs") or 0), history, float(t or 1.0)


def resumed_slots(previous, optimizer: str, standardize: bool) -> np.ndarray | None:
    """The update rule's slots a --resume starts from: the model's, when it kept them (format
    1.2) for this run's optimizer and feature space; else None (the rule starts afresh, with
    a warning saying why where the model had some)."""
    state = None if previous is None else previous.rule_state
    if state is None:
        return None
    reason = None
    if state.optimizer != optimizer:
        reason = f"this run's optimizer is {optimizer!r}"
    elif (previous.scaler is not None) != bool(standardize):
        kept, other = (
            ("standardised", "raw") if previous.scaler is not None else ("raw", "standardised")
        )
        flag = "--standardize" if standardize else "--no-standardize"
        reason = (
            f"its slots belong to the {kept} features and this run uses the {other} ones ({flag})"
        )
    if reason is not None:
        warnings.warn(
            f"--resume: the model keeps the state of the optimizer {state.optimizer!r} but "
            f"{reason}; the update rule starts afresh (weights and step counter carry on).",
            stacklevel=2,
        )
        return None
    # one (slots, d + 1) block per weight vector: k of them for k classes (fit_csv's shape)
    slots = np.array(state.slots, dtype=np.float64)
    return slots[0] if np.ndim(previous.coef) == 1 else slots


def resumed_rng(previous, random_state, seed_given: bool) -> np.random.Generator:
    """The generator of this run's row orders: the resumed model's, continued where it
    stopped (its summary's ``rng_state``), unless ``--random-state`` was given or the model
    has none (then one from ``random_state``, the model's seed or the flag's)."""
    state = None if previous is None or seed_given else previous.summary.get("rng_state")
    if state is None:
        return np.random.default_rng(random_state)
    # The file is not trusted: only numpy's default bit generator, whose state setter checks
    # the fields' names and types.
    generator = np.random.PCG64()
    try:
        if not isinstance(state, dict) or state.get("bit_generator") != "PCG64":
            raise ValueError("not the state of numpy's PCG64 generator")
        generator.state = state
    except (ValueError, TypeError, KeyError, OverflowError) as error:
        raise CommandError(
            f"--resume: the model's summary field 'rng_state' is malformed ({error}); give "
            "--random-state N to draw the row orders afresh."
        ) from None
    return np.random.Generator(generator)


def rng_state(rng: np.random.Generator) -> dict:
    """The generator's state as JSON values (what :func:`resumed_rng` continues from)."""
    return dict(rng.bit_generator.state)


class Checkpointer:
    """Saves the model after each epoch (``fit_csv``'s callback) and the best weights of a
    divergence. The weights the callback sees are in the standardised space with
    --standardize, so the model file keeps them with the scaler; the scaler, the classes and
    the row count come from fit_csv's first pass (its ``on_first_pass`` hook)."""

    def __init__(self, args, schema, fit_settings: dict, recorded: dict, previous):
        self.args = args
        self.schema = schema
        self.settings = fit_settings
        self.recorded = recorded
        self.previous = previous
        self.history: list[float] = []
        self.saved_epoch: int | None = None
        self._context = None
        #: The update rule's slots this run starts from (a --resume's, else None: zeros).
        self.start_slots = resumed_slots(previous, fit_settings["optimizer"], args.standardize)
        #: The generator of the row orders (fit_csv's random_state), a --resume's continued.
        self.rng = resumed_rng(
            previous, fit_settings["random_state"], getattr(args, "random_state", None) is not None
        )
        # (t, slots) after the latest epoch's steps (fit_csv's on_epoch_state), and at the
        # epoch of the lowest loss (what the engine's divergence error keeps the weights of;
        # before any epoch, the start).
        self._latest: tuple[float, np.ndarray] | None = None
        start = previous_progress(previous)[2]
        self._best_loss = math.inf
        self._best = (start, self.start_slots) if self.start_slots is not None else None

    def first_pass(self, stats) -> None:
        """``fit_csv``'s ``on_first_pass`` hook: rows, classes and scaler for checkpoints."""
        scaler = None
        if stats.mean is not None:
            scaler = {"mean": stats.mean, "scale": stats.scale}
        self._context = {
            "rows": stats.n_rows, "scaler": scaler, "classes": stats.classes,
            "feature_names": stats.feature_names, "encoding": stats.encoding,
        }  # fmt: skip

    def _scan(self) -> dict:
        if self._context is None:  # pragma: no cover - fit_csv calls first_pass first
            raise RuntimeError("a checkpoint was requested before fit_csv's first pass")
        return self._context

    def _steps_per_epoch(self, rows: int) -> int:
        strategy = self.settings["strategy"]
        if strategy == "sgd":
            return rows
        if strategy == "full":
            return 1
        return -(-rows // self.settings["batch_size"])

    def epoch_state(self, t: float, slots: np.ndarray) -> None:
        """``fit_csv``'s ``on_epoch_state`` hook: the step counter and the rule's slots after
        an epoch's steps (a copy: the engine updates its array in place). A rule without
        slots (plain SGD) has no state to keep."""
        if slots.size:
            self._latest = (float(t), np.array(slots, dtype=np.float64))

    def model(self, coef, intercept, epochs: int, history, extra_summary: dict, rule=None):
        """The model after ``epochs`` epochs of this run (on top of a resumed one's), with
        ``rule`` = (t, slots), the update rule's state at those weights (None: unknown)."""
        from ..io.model import Model, rule_state_of

        context = self._scan()
        previous_epochs, previous_history, t_start = previous_progress(self.previous)
        t = t_start + epochs * self._steps_per_epoch(context["rows"])
        rule_state = None
        if rule is not None:
            t = rule[0]  # counted by the engine itself
            rule_state = rule_state_of(self.settings["optimizer"], rule[0], rule[1])
        summary = {
            "rows": context["rows"],
            "epochs": previous_epochs + epochs,
            "final_loss": float(history[-1]) if len(history) else None,
            "loss_history": np.concatenate([previous_history, np.asarray(history, float)]),
            "t": float(t),
            "rng_state": rng_state(self.rng),
            "converged": False,
            "checkpoint": True,
            **extra_summary,
        }
        return Model(
            np.array(coef),
            intercept,
            loss=self.settings["loss"],
            classes=context["classes"],
            feature_names=context["feature_names"],
            target=self.schema.target,
            scaler=context["scaler"],
            options=self.recorded,
            summary=summary,
            encoding=context["encoding"],
            rule_state=rule_state,
            # k weight vectors (more than two classes, or multinomial): which model they are
            multiclass=self.settings.get("multiclass") if np.ndim(coef) == 2 else None,
        )

    def epoch_done(self, epoch: int, coef, intercept, loss: float) -> None:
        from ..io.model import save

        self.history.append(float(loss))
        rule, self._latest = self._latest, None
        if loss < self._best_loss:  # the engine's rule for its best state (sgd, minibatch)
            self._best_loss, self._best = loss, rule
        if self.args.checkpoint:
            save(self.model(coef, intercept, epoch, self.history, {}, rule), self.args.model)
            self.saved_epoch = epoch

    def interrupted(self) -> int:
        """Say what Ctrl-C left in --model; the exit status, 130."""
        if self.saved_epoch is not None:
            print(
                f"fastgd: interrupted. The checkpoint of epoch {self.saved_epoch} "
                f"is in {self.args.model}.",
                file=sys.stderr,
            )
        else:
            print(f"fastgd: interrupted. {self.args.model} is unchanged.", file=sys.stderr)
        return 130

    def diverged(self, error) -> str:
        """The message of a DivergenceError; with --checkpoint, after saving the best
        weights reached."""
        from ..io.model import save

        message = str(error)
        if self.args.checkpoint:
            history = list(np.asarray(error.loss_history, dtype=np.float64))
            extra = {"diverged": True, "error": message}
            # the rule's state at the best weights (the divergence error keeps those)
            save(self.model(error.coef, error.intercept, len(history), history, extra,
                            self._best), self.args.model)  # fmt: skip
            message += (
                f" The best weights reached (after epoch {len(history)}) are saved in "
                f"{self.args.model}."
            )
        return message
