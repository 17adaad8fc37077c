"""scikit-learn-compatible estimators: ``SGDRegressor`` and ``SGDClassifier``.

They take scikit-learn's parameters (names, defaults and meaning as in scikit-learn 1.9),
set its fitted attributes and follow its estimator contract (``clone``, ``Pipeline``,
``GridSearchCV``, pickle), and add what its versions lack: ``strategy``/``batch_size``
(mini-batch and full-batch gradient descent), ``learning_rate="auto"``, ``loss_curve_``,
float32 end to end and multi-output regression.

Both drive the one engine (:func:`fastgd.fit`): each binary sub-problem (one class against
the rest, or one output) is one engine call; the classes of a multi-class problem run in
parallel threads (``n_jobs``), the kernels releasing the GIL.
"""

from __future__ import annotations

import functools
import sys
import time
import warnings
from typing import ClassVar

import numba
import numpy as np
import scipy.sparse as sp
from joblib import effective_n_jobs
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit
from sklearn.utils import check_random_state, compute_class_weight
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from . import engine, options, parameters, prediction
from ._validation import check_sparse_structure
from .errors import DivergenceError
from .multi import softmax

__all__ = ["SGDClassifier", "SGDRegressor"]

#: What only an averaging fit sets: the running means and the last iterate.
_AVERAGING_ATTRIBUTES = ("_average_coef", "_average_intercept", "_standard_coef",
                         "_standard_intercept")  # fmt: skip

#: scikit-learn's factor of the intercept's step on sparse data (its
#: ``SPARSE_INTERCEPT_DECAY``): the intercept moves at every step, a sparse feature only when
#: it appears.
SPARSE_INTERCEPT_DECAY = 0.01

#: Seeds drawn for each sub-problem lie below this (as scikit-learn's).
_MAX_SEED = np.iinfo(np.int32).max

_REGRESSION_LOSSES = tuple(loss.name for loss in options.LOSSES if not loss.classification)


#: The optimizer's parameters (fastgd's extension of scikit-learn's estimators).
OPTIMIZER_PARAMETERS = ("optimizer", "momentum", "nesterov", "beta_1", "beta_2", "rho",
                        "optimizer_epsilon")  # fmt: skip


def _keep_optimizer(estimator, arguments: dict) -> None:
    """Store the optimizer's ``__init__`` arguments as they are (scikit-learn's rule)."""
    for name in OPTIMIZER_PARAMETERS:
        setattr(estimator, name, arguments[name])


class _BaseSGD(BaseEstimator):
    """What both estimators share: parameters, the sub-problem driver, prediction."""

    # ------------------------------------------------------------------ parameter checks

    def _check_options(self, for_partial_fit: bool) -> None:
        """Checks across parameters (each parameter alone is checked by its constraint)."""
        self._validate_params()
        if self.early_stopping and for_partial_fit:
            raise ValueError("early_stopping should be False with partial_fit.")
        # The rules between parameters, written once in fastgd.parameters.RULES, under this
        # class's name (a user's subclass keeps them: scikit-learn's own tests subclass).
        parameters.check_rules(self.get_params(), self._FRONT)

    def _engine_options(self) -> dict:
        """The options every engine call of this estimator shares."""
        return {
            "loss": self.loss,
            "strategy": self.strategy,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "eta0": self.eta0,
            "power_t": self.power_t,
            "penalty": self.penalty,
            "alpha": self.alpha,
            "l1_ratio": 0.0 if self.l1_ratio is None else self.l1_ratio,
            "epsilon": self.epsilon,
            "n_iter_no_change": self.n_iter_no_change,
            "fit_intercept": self.fit_intercept,
            "shuffle": self.shuffle,
            # scikit-learn's convention: a weight multiplies its row's loss as given.
            "normalize_weights": False,
            # scikit-learn's schedules only stop on non-finite values; ``auto`` keeps every
            # divergence rule (and its back-off).
            "divergence_checks": "all" if self.learning_rate == "auto" else "non_finite",
            # fastgd's extension: the optimizer and its scalars (scikit-learn has none).
            **{name: getattr(self, name) for name in OPTIMIZER_PARAMETERS},
            # scikit-learn's L1 where its method applies (per-sample plain SGD); the
            # proximal step under fastgd's other strategies and optimizers.
            "l1_method": "truncated" if self._scikit_learns_method() else "proximal",
        }

    def _scikit_learns_method(self) -> bool:
        """Whether this fit is scikit-learn's own method (per-sample plain SGD), which then
        takes its ways: the truncated L1 and, on sparse data, the damped intercept. fastgd's
        other strategies and optimizers keep theirs (and CSR input the model of dense)."""
        return self.strategy == "sgd" and self.optimizer == "sgd"

    # ------------------------------------------------------------------ training

    def _problem_count(self) -> int:
        raise NotImplementedError

    def _train(self, X, problems, sample_weight, *, max_iter, from_model, continuing,
               coef_init=None, intercept_init=None, split=None, n_jobs=None):  # fmt: skip
        """Run one engine call per sub-problem and store the model.

        ``problems`` is a list of ``(y_i, weight_multiplier_i, classes_i)``; ``split`` is
        ``(train_rows, validation_rows)`` or None. ``from_model``: start from the current
        weights (warm start, later ``partial_fit`` calls); ``continuing``: also carry on the
        step counter and the running means (later ``partial_fit`` calls). Nothing is stored
        unless every sub-problem succeeds, so a failed call keeps the model it had.
        """
        n_features = X.shape[1]
        k = len(problems)
        dtype = X.dtype
        coef, intercept = self._initial_weights(
            k, n_features, dtype, from_model, coef_init, intercept_init
        )
        averaging = bool(self.average)
        if averaging and continuing and getattr(self, "_average_coef", None) is not None:
            average_coef = self._average_coef
            average_intercept = self._average_intercept
        else:
            average_coef = np.zeros((k, n_features))
            average_intercept = np.zeros(k)
        t_init = float(self.t_) if continuing else 1.0
        # The update rule's slots (momentum, moments) carry on across partial_fit calls,
        # with the step counter that Adam's bias corrections read (t_init); SAGA's row memory
        # belongs to the rows of one call: it restarts (engine.train). Slots of another
        # optimizer (set_params between calls) would be misread: that rule starts afresh.
        slots = None
        if continuing and getattr(self, "_slots_optimizer", None) == self.optimizer:
            slots = self._slots
        rng = check_random_state(self.random_state)
        seeds = rng.randint(_MAX_SEED, size=k)
        tol = self.tol
        common = self._engine_options()
        if sp.issparse(X) and self.fit_intercept and self._scikit_learns_method():
            # (without an intercept there is no step to damp: the one-pass path stays open)
            common["intercept_decay"] = SPARSE_INTERCEPT_DECAY
        callback = self._verbose_callback() if self.verbose else None
        if self._one_pass(problems, split, common):
            # The k-output kernels take fastgd's L1 and intercept step (_one_pass: only
            # where scikit-learn's ways would change nothing, or under multinomial).
            one_pass = {**common, "l1_method": "proximal", "intercept_decay": 1.0}
            result = self._train_one_pass(
                X, problems, sample_weight, one_pass, max_iter=max_iter, seed=int(seeds[0]),
                coef=coef, intercept=intercept, t_init=t_init, callback=callback, split=split,
                slots=None if slots is None else np.stack(slots),
                average_coef=average_coef if averaging else None,
                average_intercept=average_intercept if averaging else None,
            )  # fmt: skip
            results = _output_results(result)
            self._store(results, dtype, averaging)
            if self.learning_rate != "auto":
                _warn_if_exploded(results, self.learning_rate)
            return

        if split is not None:  # one copy of each part of X, shared by every sub-problem
            train, held_out = split
            X_train, X_held_out = X[train], X[held_out]

        def run(i):
            y_i, multiplier, classes_i = problems[i]
            weights = multiplier if sample_weight is None else sample_weight * multiplier
            X_fit, y_fit, w_fit = X, y_i, weights
            validation_score = None
            if split is not None:
                X_fit, y_fit, w_fit = X_train, y_i[train], weights[train]
                validation_score = self._validation_scorer(
                    X_held_out, y_i[held_out], weights[held_out], classes_i
                )
            try:
                return engine.fit(
                    X_fit, y_fit, **common, max_iter=max_iter, tol=tol, sample_weight=w_fit,
                    random_state=int(seeds[i]), coef_init=coef[i], intercept_init=intercept[i],
                    t_init=t_init, average=self.average,
                    average_coef_init=average_coef[i] if averaging else None,
                    average_intercept_init=average_intercept[i] if averaging else None,
                    validation_score=validation_score, classes=classes_i, callback=callback,
                    slots_init=slots[i] if slots is not None else None,
                )  # fmt: skip
            except DivergenceError as error:
                if self.learning_rate == "auto":
                    raise
                raise _overflow_error(error) from error

        workers = engine.concurrent_fits(_worker_count(n_jobs, k))
        if workers > 1:
            threads = max(1, numba.get_num_threads() // workers)

            def run_in_thread(i):
                # Numba's thread count is per calling thread: share the cores out.
                numba.set_num_threads(threads)
                return run(i)

            results = Parallel(n_jobs=workers, require="sharedmem")(
                delayed(run_in_thread)(i) for i in range(k)
            )
        else:
            results = [run(i) for i in range(k)]
        self._store(results, dtype, averaging)
        if self.learning_rate != "auto":
            _warn_if_exploded(results, self.learning_rate)

    def _one_pass(self, problems, split, common) -> bool:
        """Whether all sub-problems train in one pass over X (``fastgd.multi``): always for
        ``multiclass="multinomial"`` (one model); for one-vs-rest and multi-output when it
        trains the k-pass path's models: the k-pass path stops each sub-problem on its own
        ``tol``, backs each off on its own under ``auto`` and weighs each class's positives
        by its class weight, so only ``tol=None``, a fixed schedule, plain SGD, no early
        stopping and no class weights, and only where scikit-learn's ways (``common``: its
        truncated L1, its damped intercept on sparse data) change nothing: the k-output
        kernels have fastgd's proximal L1 and plain intercept step (multinomial, which
        scikit-learn does not have, takes them too).

        Row orders: with ``shuffle=False`` the one pass equals the k passes to the last
        bits (tested). Shuffled, the k-pass path (as scikit-learn's one-vs-rest) draws one
        order per class from its own seed, the one pass one order for all classes (from the
        first class's seed): each class's model is still SGD over a uniformly random order,
        the same fit in distribution, not in its bits."""
        if getattr(self, "multiclass", "ovr") == "multinomial":
            return True
        return (
            len(problems) > 1
            and self.tol is None
            and self.learning_rate not in ("auto", "pa1", "pa2")
            and self.optimizer == "sgd"
            and split is None
            and all(np.all(multiplier == 1.0) for _, multiplier, _ in problems)
            and "intercept_decay" not in common
            and not (common["l1_method"] == "truncated" and self.penalty in ("l1", "elasticnet"))
        )

    def _train_one_pass(self, X, problems, sample_weight, common, *, max_iter, seed, coef,
                        intercept, t_init, callback, average_coef, average_intercept,
                        split=None, slots=None):  # fmt: skip
        """The sub-problems as one k-output engine fit (``split``: early stopping's rows, a
        multinomial fit's: its held-out score is the accuracy of the largest score;
        ``slots``: the update rule's state (k, slots, d + 1) a later ``partial_fit`` call
        continues)."""
        multiclass = getattr(self, "multiclass", "ovr")
        multiplier = problems[0][1]
        weights = multiplier if sample_weight is None else sample_weight * multiplier
        if problems[0][2] is None:  # regression: the outputs' columns
            y, classes = np.stack([y_i for y_i, _, _ in problems], axis=1), None
        else:  # the row's class: the problem where it is positive
            y = np.argmax(np.stack([y_i for y_i, _, _ in problems]), axis=0)
            classes = np.arange(len(problems))
        validation_score = None
        if split is not None:
            train, held_out = split
            weights = np.broadcast_to(weights, y.shape[:1])
            validation_score = _largest_score_accuracy(X[held_out], y[held_out], weights[held_out])
            X, y, weights = X[train], y[train], weights[train]
        try:
            return engine.fit(
                X, y, **common, max_iter=max_iter, tol=self.tol, sample_weight=weights,
                validation_score=validation_score, slots_init=slots,
                random_state=seed, coef_init=coef, intercept_init=intercept, t_init=t_init,
                average=self.average, average_coef_init=average_coef,
                average_intercept_init=average_intercept, classes=classes, callback=callback,
                multiclass=multiclass,
            )  # fmt: skip
        except DivergenceError as error:
            if self.learning_rate == "auto":
                raise
            raise _overflow_error(error) from error

    def _initial_weights(self, k, n_features, dtype, from_model, coef_init, intercept_init):
        if coef_init is not None:
            coef = np.array(coef_init, dtype=dtype, order="C", copy=True)
            coef = coef.reshape(k, n_features) if coef.size == k * n_features else coef
            if coef.shape != (k, n_features):
                raise ValueError(
                    "Provided coef_init does not match dataset: coef_init has shape "
                    f"{np.shape(coef_init)}; this data needs "
                    f"{self._coef_shape(k, n_features)}."
                )
        elif from_model:
            coef = self._standard_weights()[0].astype(dtype, copy=True).reshape(k, n_features)
        else:
            coef = np.zeros((k, n_features), dtype=dtype)
        if intercept_init is not None:
            intercept = np.array(intercept_init, dtype=np.float64).reshape(-1)
            if intercept.shape != (k,):
                raise ValueError(
                    "Provided intercept_init does not match dataset: intercept_init has "
                    f"shape {np.shape(intercept_init)}; this data needs ({k},)."
                )
        elif from_model:
            intercept = np.array(self._standard_weights()[1], dtype=np.float64).reshape(k)
        else:
            intercept = np.zeros(k)
        return coef, intercept

    def _standard_weights(self):
        """The last iterate (what training continues from), as (k, d) and (k,)."""
        if getattr(self, "_standard_coef", None) is not None:
            return self._standard_coef, self._standard_intercept
        coef = self.coef_.toarray() if sp.issparse(self.coef_) else self.coef_
        return np.atleast_2d(coef), np.atleast_1d(self.intercept_)

    def _store(self, results, dtype, averaging):
        coef = np.stack([np.asarray(r.coef, dtype=dtype) for r in results])
        intercept = np.array([r.intercept for r in results], dtype=dtype)
        if averaging:
            self._standard_coef = np.stack([r.standard_coef for r in results]).astype(dtype)
            self._standard_intercept = np.array(
                [r.standard_intercept for r in results], dtype=dtype
            )
            self._average_coef = np.stack([r.average_coef for r in results])
            self._average_intercept = np.array([r.average_intercept for r in results])
        else:
            # scikit-learn's estimators have these attributes only while averaging.
            for name in _AVERAGING_ATTRIBUTES:
                self.__dict__.pop(name, None)
        self.coef_ = self._public_coef(coef)
        self.intercept_ = intercept
        self.n_iter_ = int(max(r.n_iter for r in results))
        self.t_ = float(max(r.t for r in results))
        epochs = max(len(r.loss_history) for r in results)
        curve = np.zeros(epochs)
        for r in results:  # sub-problems that stopped early keep their last value
            history = r.loss_history
            if history.shape[0]:
                curve[: history.shape[0]] += history
                curve[history.shape[0] :] += history[-1]
        self.loss_curve_ = [*getattr(self, "_curve_so_far", []), *curve.tolist()]
        self._curve_so_far = self.loss_curve_
        self._converged = all(r.converged for r in results)
        self._slots = [r.slots for r in results]
        self._slots_optimizer = self.optimizer

    def _validation_scorer(self, X_val, y_val, w_val, classes_i):
        raise NotImplementedError

    def _verbose_callback(self):
        started = time.perf_counter()

        def report(epoch, coef, intercept, loss):
            print(
                f"-- Epoch {epoch}\nNorm: {float(np.linalg.norm(coef)):.2f}, NNZs: "
                f"{int(np.count_nonzero(coef))}, Bias: {float(intercept):.6f}, "
                f"Objective: {loss:.6f}\nTotal training time: "
                f"{time.perf_counter() - started:.2f} seconds.",
                file=sys.stdout,
            )
            return False

        return report

    def _split(self, y, sample_weight):
        """The held-out rows for ``early_stopping`` (stratified for classifiers)."""
        if not self.early_stopping:
            return None
        splitter = StratifiedShuffleSplit if isinstance(self, ClassifierMixin) else ShuffleSplit
        cv = splitter(test_size=self.validation_fraction, random_state=self.random_state)
        try:
            train, held_out = next(cv.split(np.zeros((y.shape[0], 1)), y))
        except ValueError as error:
            raise ValueError(
                f"early_stopping could not split {y.shape[0]} samples into a training and a "
                f"validation set with validation_fraction={self.validation_fraction!r}: "
                f"{error}"
            ) from error
        if train.shape[0] == 0 or held_out.shape[0] == 0:
            raise ValueError(
                f"Splitting {y.shape[0]} samples with validation_fraction="
                f"{self.validation_fraction!r} left an empty training or validation set; "
                "use more samples, another validation_fraction, or early_stopping=False."
            )
        if sample_weight is not None and not np.any(sample_weight[held_out] > 0):
            raise ValueError(
                "The sample weights for validation set are all zero, consider using a "
                "different random state (or another validation_fraction)."
            )
        # scikit-learn trains on the other rows in their own order (it skips the held-out
        # ones in its pass): ShuffleSplit's order would change every unshuffled fit.
        return np.sort(train), np.sort(held_out)

    def _finish_fit(self):
        if self.tol is not None and not self._converged and self.n_iter_ == self.max_iter:
            warnings.warn(
                "Maximum number of iteration reached before convergence. Consider "
                "increasing max_iter to improve the fit.",
                ConvergenceWarning,
                stacklevel=4,  # _finish_fit, fit, its guard, the caller
            )

    # ------------------------------------------------------------------ prediction

    def _scores(self, X) -> np.ndarray:
        """``X·coefᵀ + intercept`` of shape (n, k), in X's dtype."""
        check_is_fitted(self, "coef_")
        _check_structure(X)
        X = validate_data(
            self, X, accept_sparse="csr", dtype=[np.float64, np.float32], order="C",
            reset=False,
        )  # fmt: skip
        coef = self.coef_.toarray() if sp.issparse(self.coef_) else self.coef_
        return prediction.decision_values(X, coef, self.intercept_)

    def densify(self):
        """Convert ``coef_`` to a dense numpy array (the default format)."""
        check_is_fitted(self, "coef_")
        if sp.issparse(self.coef_):
            # Back to the shape fit gave (sparsify made a 1-D coef_ a (1, d) matrix).
            self.coef_ = self._public_coef(self.coef_.toarray())
        return self

    def sparsify(self):
        """Convert ``coef_`` to a ``scipy.sparse`` CSR matrix (memory-efficient when most
        weights are zero, e.g. after an L1 penalty); ``predict`` works as before."""
        check_is_fitted(self, "coef_")
        self.coef_ = sp.csr_matrix(self.coef_)
        return self


def _largest_score_accuracy(X_val, y_val, w_val):
    """Early stopping's score of a k-output model: the weighted accuracy of the class with
    the largest score, ``y_val`` holding class indices."""

    def score(coef, intercept):
        predicted = prediction.decision_values(X_val, coef, intercept).argmax(axis=1)
        return accuracy_score(y_val, predicted, sample_weight=w_val)

    return score


def _output_results(result) -> list:
    """A k-output fit (``fastgd.multi.MultiFitResult``) as the k sub-problems' results
    that ``_store`` reads; the loss curve (the summed objective) goes to the first."""
    outputs = []
    for o in range(result.coef.shape[0]):
        history = result.loss_history if o == 0 else np.zeros_like(result.loss_history)
        averaging = result.average_coef is not None
        outputs.append(
            engine.FitResult(
                coef=result.coef[o],
                intercept=result.intercept[o],
                n_iter=result.n_iter,
                loss_history=history,
                converged=result.converged,
                learning_rate=result.learning_rate,
                t=result.t,
                loss=result.loss,
                extras=result.extras if o == 0 else {},
                standard_coef=result.standard_coef[o] if averaging else None,
                standard_intercept=result.standard_intercept[o] if averaging else None,
                average_coef=result.average_coef[o] if averaging else None,
                average_intercept=result.average_intercept[o] if averaging else None,
                slots=result.slots[o],
            )
        )
    return outputs


def _keeps_model_on_error(method):
    """A fit or partial_fit that fails leaves the estimator as it was: every attribute it
    set on the way (classes, the multi-output flag, the loss curve so far) is taken back,
    so the model the user had still predicts as before and the next call starts from it."""

    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        before = dict(self.__dict__)
        try:
            return method(self, *args, **kwargs)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(before)
            raise

    return guarded


#: A fit under a fixed schedule whose last epoch loss exceeds this many times the loss of
#: the all-zero model has exploded: no step that makes progress ends a million times worse
#: than predicting 0 (for squared error, predictions some 1000 times the targets' scale),
#: while the loss is blind to the features' units (a feature in 1e-9 units legitimately
#: needs weights near 1e9, which a bound on the weight norm alone would flag).
EXPLODED_LOSS_FACTOR = 1e6


def _warn_if_exploded(results, learning_rate: str) -> None:
    """A ConvergenceWarning when the weights of a sub-problem exploded (see
    ``EXPLODED_LOSS_FACTOR``): scikit-learn's schedules stop only on non-finite values, so
    unscaled data would otherwise give coefficients of 1e13 silently. (``auto`` backs off
    and raises on such losses itself.) The all-zero model's loss is the engine's."""
    if learning_rate == "auto":
        return
    for result in results:
        zero = result.extras.get("zero_model_loss", 0.0)
        last = float(result.loss_history[-1]) if result.loss_history.shape[0] else 0.0
        if zero > 0.0 and last > EXPLODED_LOSS_FACTOR * zero:
            norm = float(np.linalg.norm(np.asarray(result.coef, dtype=np.float64)))
            warnings.warn(
                f"The weights exploded under learning_rate={learning_rate!r}: their norm "
                f"reached {norm:.3g} and the training loss {last:.3g}, over "
                f"{EXPLODED_LOSS_FACTOR:g} times that of the all-zero model ({zero:.3g}). "
                "Scale the features (e.g. sklearn.preprocessing.StandardScaler) or use "
                "learning_rate='auto'.",
                ConvergenceWarning,
                stacklevel=5,  # _warn_if_exploded, _train, fit, its guard, the caller
            )
            return


def _overflow_error(error: DivergenceError) -> DivergenceError:
    """A fixed schedule's divergence (only non-finite values stop one) in scikit-learn's
    words, which callers match on, followed by fastgd's diagnosis."""
    return DivergenceError(
        f"Floating-point under-/overflow occurred at epoch #{error.epoch}. Scaling input "
        f"data with StandardScaler or MinMaxScaler might help. ({error})",
        epoch=error.epoch, coef=error.coef, intercept=error.intercept,
        loss_history=error.loss_history,
    )  # fmt: skip


def _check_structure(X) -> None:
    """A sparse X's index arrays, checked before scipy or scikit-learn convert or multiply
    it (neither re-checks them; a bad column index crashes the process there too)."""
    if sp.issparse(X):
        check_sparse_structure(X)


def _worker_count(n_jobs, tasks: int) -> int:
    """Threads for ``tasks`` sub-problems (``n_jobs=None`` is 1 outside a joblib context)."""
    return max(1, min(tasks, effective_n_jobs(n_jobs)))


def _sample_weight(sample_weight, n: int, dtype) -> np.ndarray | None:
    if sample_weight is None:
        return None
    weights = np.asarray(sample_weight, dtype=np.float64)
    if weights.ndim == 0:
        return np.full(n, float(weights))
    if weights.ndim != 1:
        raise ValueError(f"sample_weight must be 1-D; got shape {weights.shape}.")
    if weights.shape[0] != n:
        raise ValueError(
            f"sample_weight.shape == {weights.shape}, expected ({n},): one weight per row."
        )
    return weights


class SGDRegressor(RegressorMixin, _BaseSGD):
    r"""Linear regression by gradient descent, a drop-in for scikit-learn's ``SGDRegressor``.

    Minimises :math:`\frac1n\sum_i s_i L(x_i·w + b, y_i) + \alpha R(w)` with scikit-learn's
    losses, penalties and schedules; every parameter of scikit-learn 1.9's class has the
    same name, default and meaning. Additions:

    strategy : {"sgd", "minibatch", "full"}, default="sgd"
        ``"sgd"``: one step per row (scikit-learn's behaviour); ``"minibatch"``: one step
        per ``batch_size`` rows, the batch gradient accumulated in parallel; ``"full"``:
        one step per epoch from the exact gradient (one parallel pass over X).
    batch_size : int, default=256
        Rows per step for ``strategy="minibatch"``.
    learning_rate : also ``"auto"``
        A stable constant step derived from the data (see :func:`fastgd.auto_learning_rate`).
    shuffle : also ``"block"``
        A cache-friendly order: blocks of rows in random order, rows shuffled within.

    ``y`` may be 2-D (n_samples, n_outputs): each output gets its own weights
    (``coef_`` of shape (n_outputs, n_features)). float32 input keeps float32 weights.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,) or (n_outputs, n_features)
    intercept_ : ndarray of shape (1,) or (n_outputs,)
    n_iter_ : int
        Epochs run (the most over the outputs).
    t_ : float
        Steps taken plus 1 (for ``strategy="minibatch"``/``"full"``: batch steps), carried
        across ``partial_fit`` calls.
    loss_curve_ : list of float
        The objective after each epoch (summed over the outputs), over ``fit`` and the
        ``partial_fit`` calls after it.
    n_features_in_, feature_names_in_ :
        As in scikit-learn.
    """

    #: Generated from the parameter table (``fastgd.parameters.PARAMETERS``).
    _parameter_constraints: ClassVar[dict] = parameters.sklearn_constraints(
        "SGDRegressor", loss=_REGRESSION_LOSSES
    )
    #: The name its rows and rules are listed under in ``fastgd.parameters``.
    _FRONT: ClassVar[str] = "SGDRegressor"

    def __init__(
        self,
        loss="squared_error",
        *,
        penalty="l2",
        alpha=0.0001,
        l1_ratio=0.15,
        fit_intercept=True,
        max_iter=1000,
        tol=1e-3,
        shuffle=True,
        verbose=0,
        epsilon=0.1,
        random_state=None,
        learning_rate="invscaling",
        eta0=0.01,
        power_t=0.25,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=5,
        warm_start=False,
        average=False,
        strategy="sgd",
        batch_size=256,
        optimizer="sgd",
        momentum=0.9,
        nesterov=False,
        beta_1=0.9,
        beta_2=0.999,
        rho=0.99,
        optimizer_epsilon=1e-8,
    ):
        _keep_optimizer(self, locals())
        self.loss = loss
        self.penalty = penalty
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.shuffle = shuffle
        self.verbose = verbose
        self.epsilon = epsilon
        self.random_state = random_state
        self.learning_rate = learning_rate
        self.eta0 = eta0
        self.power_t = power_t
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.warm_start = warm_start
        self.average = average
        self.strategy = strategy
        self.batch_size = batch_size

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.target_tags.multi_output = True
        return tags

    def _coef_shape(self, k, n_features):
        return f"({n_features},)" if k == 1 else f"({k}, {n_features})"

    def _public_coef(self, coef):
        return coef[0] if not self._multi_output else coef

    def _validate(self, X, y, reset):
        # NaN/inf in X are found by the engine's own pass (the one that also measures the
        # rows for ``auto``), whose message names the row and column: one read of X, not two.
        _check_structure(X)
        X, y = validate_data(
            self, X, y, accept_sparse="csr", dtype=[np.float64, np.float32], order="C",
            multi_output=True, y_numeric=True, reset=reset, ensure_all_finite=False,
        )  # fmt: skip
        if y.ndim == 2 and y.shape[1] == 1:
            # scikit-learn's SGDRegressor treats a column vector as 1-D (and warns): a drop-in
            # must not turn df[["target"]] into a multi-output model.
            y = column_or_1d(y, warn=True)
        multi = y.ndim == 2
        if not reset and multi != getattr(self, "_multi_output", multi):
            raise ValueError(
                "y has a different number of outputs than in earlier calls to partial_fit."
            )
        return X, y

    def _problems(self, y):
        if y.ndim == 1:
            return [(y, np.ones(y.shape[0]), None)]
        return [(np.ascontiguousarray(y[:, i]), np.ones(y.shape[0]), None)
                for i in range(y.shape[1])]  # fmt: skip

    def _validation_scorer(self, X_val, y_val, w_val, classes_i):
        def score(coef, intercept):
            predicted = prediction.decision_values(X_val, coef, intercept)[:, 0]
            return r2_score(y_val, predicted, sample_weight=w_val)

        return score

    @_keeps_model_on_error
    def fit(self, X, y, coef_init=None, intercept_init=None, sample_weight=None):
        """Fit the model with ``max_iter`` epochs at most (fewer when ``tol`` is met).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        coef_init : array of shape (n_features,) or (n_outputs, n_features), optional
        intercept_init : array of shape (1,) or (n_outputs,), optional
        sample_weight : array-like of shape (n_samples,), optional
            Multiplies each row's loss (and so its step).

        Returns
        -------
        self
        """
        self._check_options(for_partial_fit=False)
        X, y = self._validate(X, y, reset=True)
        warm = self.warm_start and getattr(self, "coef_", None) is not None
        if warm and (y.ndim == 2) != self._multi_output:
            warm = False
        self._multi_output = y.ndim == 2
        self._curve_so_far = []
        sample_weight = _sample_weight(sample_weight, X.shape[0], X.dtype)
        self._train(
            X, self._problems(y), sample_weight, max_iter=self.max_iter, from_model=warm,
            continuing=False, coef_init=coef_init, intercept_init=intercept_init,
            split=self._split(y, sample_weight),
        )  # fmt: skip
        self._finish_fit()
        return self

    @_keeps_model_on_error
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over ``X``, continuing from the current model (the step counter
        ``t_`` and the optimizer's slots go on across calls: n calls equal n one-epoch
        ``fastgd.fit`` calls chained through ``coef_init``, ``t_init`` and ``slots_init``)."""
        first = not hasattr(self, "coef_")
        if first:
            self._check_options(for_partial_fit=True)
        elif self.early_stopping:
            raise ValueError("early_stopping should be False with partial_fit.")
        X, y = self._validate(X, y, reset=first)
        if first:
            self._multi_output = y.ndim == 2
            self._curve_so_far = []
        sample_weight = _sample_weight(sample_weight, X.shape[0], X.dtype)
        self._train(
            X, self._problems(y), sample_weight, max_iter=1, from_model=not first,
            continuing=not first,
        )  # fmt: skip
        return self

    def predict(self, X):
        """Predicted values: ``X·coef_ + intercept_``."""
        scores = self._scores(X)
        return scores if self._multi_output else scores[:, 0]


class SGDClassifier(ClassifierMixin, _BaseSGD):
    r"""Linear classifiers by gradient descent, a drop-in for scikit-learn's ``SGDClassifier``.

    Every parameter of scikit-learn 1.9's class has the same name, default and meaning;
    more than two classes are learnt one-vs-rest, the classes in parallel threads
    (``n_jobs``). Additions as in :class:`SGDRegressor`: ``strategy``, ``batch_size``,
    ``learning_rate="auto"``, ``shuffle="block"``, ``loss_curve_`` (summed over the
    one-vs-rest problems) and float32 end to end.

    ``multiclass`` (fastgd's extension): ``"ovr"`` (scikit-learn's one-vs-rest) or
    ``"multinomial"`` (one softmax model, ``loss="log_loss"``; ``predict_proba`` is the
    softmax; ``coef_`` has one row per class, also for two classes). Multinomial fits, and
    one-vs-rest fits with ``tol=None``, a fixed schedule, plain SGD and no early stopping or
    class weights, train all classes in one pass over X per step (``fastgd.multi``); with
    ``shuffle`` on, the classes then share one row order each epoch where scikit-learn
    draws one per class (the same models in distribution; with ``shuffle=False`` the one
    pass gives the k-pass path's results exactly).

    Attributes
    ----------
    coef_ : ndarray of shape (1, n_features) or (n_classes, n_features)
    intercept_ : ndarray of shape (1,) or (n_classes,)
    classes_ : ndarray of shape (n_classes,)
    n_iter_, t_, loss_curve_, n_features_in_, feature_names_in_ :
        As in :class:`SGDRegressor`.
    """

    #: Generated from the parameter table (``fastgd.parameters.PARAMETERS``).
    _parameter_constraints: ClassVar[dict] = parameters.sklearn_constraints("SGDClassifier")
    #: The name its rows and rules are listed under in ``fastgd.parameters``.
    _FRONT: ClassVar[str] = "SGDClassifier"

    def __init__(
        self,
        loss="hinge",
        *,
        penalty="l2",
        alpha=0.0001,
        l1_ratio=0.15,
        fit_intercept=True,
        max_iter=1000,
        tol=1e-3,
        shuffle=True,
        verbose=0,
        epsilon=0.1,
        n_jobs=None,
        random_state=None,
        learning_rate="optimal",
        eta0=0.01,
        power_t=0.5,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=5,
        class_weight=None,
        warm_start=False,
        average=False,
        strategy="sgd",
        batch_size=256,
        optimizer="sgd",
        momentum=0.9,
        nesterov=False,
        beta_1=0.9,
        beta_2=0.999,
        rho=0.99,
        optimizer_epsilon=1e-8,
        multiclass="ovr",
    ):
        _keep_optimizer(self, locals())
        self.multiclass = multiclass
        self.loss = loss
        self.penalty = penalty
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.shuffle = shuffle
        self.verbose = verbose
        self.epsilon = epsilon
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.learning_rate = learning_rate
        self.eta0 = eta0
        self.power_t = power_t
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.class_weight = class_weight
        self.warm_start = warm_start
        self.average = average
        self.strategy = strategy
        self.batch_size = batch_size

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def _coef_shape(self, k, n_features):
        return f"({k}, {n_features})"

    def _public_coef(self, coef):
        return coef

    def _validate(self, X, y, reset):
        # NaN/inf in X are found by the engine's own pass (the one that also measures the
        # rows for ``auto``), whose message names the row and column: one read of X, not two.
        _check_structure(X)
        X, y = validate_data(
            self, X, y, accept_sparse="csr", dtype=[np.float64, np.float32], order="C",
            reset=reset, ensure_all_finite=False,
        )  # fmt: skip
        check_classification_targets(y)
        return X, y

    def _problems(self, y, class_weight):
        """One ``(±1 labels, weight multipliers, classes)`` per binary problem."""
        classes = self.classes_
        loss = options.loss_by_name(self.loss)
        signed_classes = np.array([-1.0, 1.0]) if loss.classification else None
        if self.multiclass == "multinomial":
            # One softmax model: each row weighs as its class (class_weight), in every output.
            multiplier = np.asarray(class_weight, dtype=np.float64)[np.searchsorted(classes, y)]
            return [(np.where(y == label, 1.0, -1.0), multiplier, signed_classes)
                    for label in classes]  # fmt: skip
        if classes.shape[0] == 2:
            positive = y == classes[1]
            labels = np.where(positive, 1.0, -1.0)
            weights = np.where(positive, class_weight[1], class_weight[0])
            return [(labels, weights, signed_classes)]
        problems = []
        for i, label in enumerate(classes):
            positive = y == label
            labels = np.where(positive, 1.0, -1.0)
            weights = np.where(positive, class_weight[i], 1.0)
            problems.append((labels, weights, signed_classes))
        return problems

    def _validation_scorer(self, X_val, y_val, w_val, classes_i):
        signs = np.array([-1.0, 1.0])

        def score(coef, intercept):
            decision = prediction.decision_values(X_val, coef, intercept)
            return accuracy_score(y_val, prediction.labels(decision, signs), sample_weight=w_val)

        return score

    def _class_weight(self, y):
        return compute_class_weight(self.class_weight, classes=self.classes_, y=y)

    @_keeps_model_on_error
    def fit(self, X, y, coef_init=None, intercept_init=None, sample_weight=None):
        """Fit the model with ``max_iter`` epochs at most (fewer when ``tol`` is met).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Labels of any type (numbers or strings).
        coef_init : array of shape (n_classes, n_features), optional
        intercept_init : array of shape (n_classes,), optional
        sample_weight : array-like of shape (n_samples,), optional
            Multiplied with ``class_weight``.

        Returns
        -------
        self
        """
        self._check_options(for_partial_fit=False)
        X, y = self._validate(X, y, reset=True)
        classes = np.unique(y)
        if classes.shape[0] < 2:
            raise ValueError(
                f"The number of classes has to be greater than one; got {classes.shape[0]} class."
            )
        warm = (
            self.warm_start
            and getattr(self, "coef_", None) is not None
            and np.array_equal(getattr(self, "classes_", None), classes)
        )
        self.classes_ = classes
        self._curve_so_far = []
        sample_weight = _sample_weight(sample_weight, X.shape[0], X.dtype)
        self._train(
            X, self._problems(y, self._class_weight(y)), sample_weight, max_iter=self.max_iter,
            from_model=warm, continuing=False, coef_init=coef_init,
            intercept_init=intercept_init, split=self._split(y, sample_weight),
            n_jobs=self.n_jobs,
        )  # fmt: skip
        self._finish_fit()
        return self

    @_keeps_model_on_error
    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over ``X``, continuing from the current model (the step counter and
        each class's optimizer slots go on across calls).

        ``classes`` (every label of the whole data set) is required on the first call and
        may be left out afterwards; ``y`` need not hold every class.
        """
        first = not hasattr(self, "classes_")
        if first:
            self._check_options(for_partial_fit=True)
            if self.class_weight == "balanced":
                raise ValueError(
                    "class_weight 'balanced' is not supported for partial_fit. In order to "
                    "use 'balanced' weights, use compute_class_weight('balanced', "
                    "classes=classes, y=y). In place of y you can use a large enough sample "
                    "of the full training set target to properly estimate the class "
                    "frequency distributions. Pass the resulting weights as the class_weight "
                    "parameter."
                )
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
        elif self.early_stopping:
            raise ValueError("early_stopping should be False with partial_fit.")
        X, y = self._validate(X, y, reset=first)
        if classes is not None:
            given, classes = classes, np.unique(classes)
            if not first and not np.array_equal(classes, self.classes_):
                raise ValueError(  # scikit-learn's words
                    f"`classes={given!r}` is not the same as on last call to partial_fit, "
                    f"was: {self.classes_!r}."
                )
        if first:
            if classes.shape[0] < 2:
                raise ValueError(
                    f"The number of classes has to be greater than one; got "
                    f"{classes.shape[0]} class."
                )
            self.classes_ = classes
            self._curve_so_far = []
        unknown = ~np.isin(y, self.classes_)
        if unknown.any():
            raise ValueError(  # scikit-learn's words, then which label
                "classes should include all valid labels that can be in y: y holds the "
                f"label {y[int(np.argmax(unknown))]!r}, which is not one of "
                f"classes={self.classes_.tolist()!r}."
            )
        sample_weight = _sample_weight(sample_weight, X.shape[0], X.dtype)
        self._train(
            X, self._problems(y, self._class_weight(y)), sample_weight, max_iter=1,
            from_model=not first, continuing=not first, n_jobs=self.n_jobs,
        )  # fmt: skip
        return self

    def decision_function(self, X):
        """Signed distance to each class's hyperplane: shape (n,) for two classes, else
        (n, n_classes)."""
        scores = self._scores(X)
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict(self, X):
        """The class with the highest decision value (binary: positive when > 0)."""
        return prediction.labels(self._scores(X), self.classes_)

    def _check_proba(self):
        prediction.check_probabilities(
            self.loss,
            f"use loss={' or '.join(map(repr, prediction.PROBABILITY_LOSSES))}, or calibrate "
            "with sklearn.calibration.CalibratedClassifierCV.",
        )
        return True

    @available_if(_check_proba)
    def predict_proba(self, X):
        """Class probabilities, shape (n, n_classes), for ``log_loss`` (the logistic
        function of the decision value; one-vs-rest values normalised to sum to 1) and
        ``modified_huber`` (``(clip(d, -1, 1) + 1) / 2``, normalised likewise); with
        ``multiclass="multinomial"`` the softmax of the decision values."""
        if self.multiclass == "multinomial":
            return softmax(self._scores(X))
        return prediction.class_probabilities(self._scores(X), self.loss)

    @available_if(_check_proba)
    def predict_log_proba(self, X):
        """The logarithm of :meth:`predict_proba`."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))
