"""Checkpoints of ``fastgd train``: the model saved after each epoch (so Ctrl-C keeps the
last one), the best weights of a divergence, and the progress a --resume continues."""

from __future__ import annotations

import sys

import numpy as np


def previous_progress(previous) -> tuple[int, np.ndarray, float]:
    """Epochs, loss curve and step counter of the model a --resume continues."""
    if previous is None:
        return 0, np.empty(0), 1.0
    summary = previous.summary
    history = np.asarray(summary.get("loss_history", np.empty(0)), dtype=np.float64)
    return int(summary.get("epochs") or 0), history, float(summary.get("t") or 1.0)


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

    def model(self, coef, intercept, epochs: int, history, extra_summary: dict):
        """The model after ``epochs`` epochs of this run (on top of a resumed one's)."""
        from ..io.model import Model

        context = self._scan()
        previous_epochs, previous_history, t_start = previous_progress(self.previous)
        t = t_start + epochs * self._steps_per_epoch(context["rows"])
        summary = {
            "rows": context["rows"],
            "epochs": previous_epochs + epochs,
            "final_loss": float(history[-1]) if len(history) else None,
            "loss_history": np.concatenate([previous_history, np.asarray(history, float)]),
            "t": float(t),
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
        )

    def epoch_done(self, epoch: int, coef, intercept, loss: float) -> None:
        from ..io.model import save

        self.history.append(float(loss))
        if self.args.checkpoint:
            save(self.model(coef, intercept, epoch, self.history, {}), self.args.model)
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
            save(self.model(error.coef, error.intercept, len(history), history, extra),
                 self.args.model)  # fmt: skip
            message += (
                f" The best weights reached (after epoch {len(history)}) are saved in "
                f"{self.args.model}."
            )
        return message
