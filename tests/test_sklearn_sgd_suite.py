"""scikit-learn's own tests of ``SGDClassifier``/``SGDRegressor``, run against fastgd's.

At import, ``sklearn/linear_model/tests/test_sgd.py`` is read from the installed
scikit-learn (never copied into this repository), its ``linear_model.SGDClassifier`` and
``linear_model.SGDRegressor`` (which its sparse variants subclass) replaced by fastgd's, and
the result imported from a temporary directory. Its test functions become this module's, so
pytest collects, parametrises and reports each of its cases here
(``tests/test_sklearn_sgd_suite.py::test_sgd_clf[SGDClassifier]``).

Cases that cannot pass are listed in :data:`EXCLUDED`, each with its reason; they run as
strict ``xfail`` so that one which starts to pass fails the run (and leaves the table).
Tests of scikit-learn's other classes (its one-class SVM, its Cython loss objects) do not
exercise fastgd and are not collected (``NOT_FASTGD_PATTERN``).

The tests after the table are fastgd's own, against scikit-learn's estimators, for what the
suite does not pin down. One difference is scikit-learn's, kept out of fastgd on purpose:
with ``early_stopping`` and an L2 or elastic-net penalty, scikit-learn scores the validation
set with its weight vector *before* the lazy scale factor (``_plain_sgd`` passes
``weights.base`` to ``validation_score_cb``, not ``wscale * weights``), so its stopping
epoch is chosen on a model other than its ``coef_``; fastgd scores the model itself. With
``penalty=None`` (``wscale`` stays 1) both stop at the same epoch with the same weights.
Another: with ``average`` and an L1 part, scikit-learn's lazy average (``add_average``) does
not see ``l1penalty``'s truncations, which its ``average_a·w`` term then carries into the
mean of past iterates as well; fastgd averages the truncated iterates themselves.
"""

from __future__ import annotations

import atexit
import importlib.util
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import sklearn
from sklearn import linear_model

from fastgd import estimators

#: The module under test, from the installed scikit-learn.
SOURCE = Path(sklearn.__file__).parent / "linear_model" / "tests" / "test_sgd.py"

#: Its names for scikit-learn's estimators, and what they become.
REPLACEMENTS = {
    "linear_model.SGDClassifier": "_fastgd_estimators.SGDClassifier",
    "linear_model.SGDRegressor": "_fastgd_estimators.SGDRegressor",
}

#: Test functions that exercise none of fastgd's code (scikit-learn's one-class SVM and the
#: loss objects of its Cython module): not collected.
NOT_FASTGD_PATTERN = re.compile(
    r"oneclass|ocsvm|one_class_svm"
    r"|^test_(loss_hinge|gradient_squared_hinge|loss_modified_huber|loss_epsilon_insensitive"
    r"|loss_squared_epsilon_insensitive)$"
)

#: Parameter values that stand for scikit-learn's one-class SVM: their cases are dropped from
#: the parametrisations shared with fastgd's classes.
NOT_FASTGD_PARAMETERS = ("SGDOneClassSVM", "SparseSGDOneClassSVM")

PRIVATE = "scikit-learn-private: "
DEPRECATION = "scikit-learn's own deprecation warning: "
ON_PURPOSE = "fastgd's extension, on purpose: "
#: ``test name`` (every case) or ``test name[case id]``: why it cannot pass.
EXCLUDED: dict[str, str] = {
    # -- scikit-learn-private names
    "test_sgd_predict_proba_method_access": PRIVATE
    + "iterates over the class attribute SGDClassifier.loss_functions (its Cython loss objects)",
    "test_loss_function_epsilon": PRIVATE
    + "reads the class attribute SGDRegressor.loss_functions (its Cython loss objects)",
    "test_validation_mask_correctly_subsets": PRIVATE
    + "monkeypatches sklearn.linear_model._stochastic_gradient._ValidationScoreCallback",
    # -- scikit-learn's deprecations
    "test_power_t_limits": DEPRECATION
    + "FutureWarning 'Negative values for `power_t` are deprecated' (scikit-learn 1.8-1.10)",
    # -- on purpose
    "test_input_format[SGDRegressor]": ON_PURPOSE + "SGDRegressor fits a 2-D y (multi-output)",
    "test_input_format[SparseSGDRegressor]": ON_PURPOSE
    + "SGDRegressor fits a 2-D y (multi-output)",
}


def _rewritten_source() -> str:
    if not SOURCE.is_file():
        raise FileNotFoundError(
            f"scikit-learn {sklearn.__version__} was installed without its tests: {SOURCE} "
            "is missing (install scikit-learn from its wheel or sdist, which ship them)."
        )
    text = SOURCE.read_text(encoding="utf-8")
    for old, new in REPLACEMENTS.items():
        if old not in text:
            raise AssertionError(f"{SOURCE} no longer names {old}: update REPLACEMENTS")
        text = text.replace(old, new)
    # A marker of scikit-learn's own conftest (its --check_spmatrix option), unknown here.
    text = text.replace("@pytest.mark.no_check_spmatrix", "")
    return "from fastgd import estimators as _fastgd_estimators\n" + text


def _load_module():
    directory = Path(tempfile.mkdtemp(prefix="fastgd_sklearn_sgd_"))
    # Kept while the tests run (tracebacks read the source), removed at exit.
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    path = directory / "sklearn_test_sgd_on_fastgd.py"
    path.write_text(_rewritten_source(), encoding="utf-8")
    spec = importlib.util.spec_from_file_location("sklearn_test_sgd_on_fastgd", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _is_fastgd_value(value) -> bool:
    values = value.values if hasattr(value, "values") else (value,)
    values = [v for item in values for v in (item if isinstance(item, tuple) else (item,))]
    return not any(getattr(v, "__name__", None) in NOT_FASTGD_PARAMETERS for v in values)


def _without_one_class_svm(function):
    """Drop the one-class SVM's cases from ``function``'s parametrisations."""
    marks = []
    for mark in getattr(function, "pytestmark", []):
        if mark.name == "parametrize":
            names, values = mark.args[0], mark.args[1]
            kept = [value for value in values if _is_fastgd_value(value)]
            mark = pytest.mark.parametrize(names, kept, **mark.kwargs).mark
        marks.append(mark)
    function.pytestmark = marks
    return function


SUITE = _load_module()
COLLECTED = sorted(
    name
    for name in vars(SUITE)
    if name.startswith("test_") and callable(getattr(SUITE, name))
    if not NOT_FASTGD_PATTERN.search(name)
)
for _name in COLLECTED:
    globals()[_name] = _without_one_class_svm(getattr(SUITE, _name))


@pytest.fixture
def global_random_seed():
    """scikit-learn's fixture with its default seed (its conftest is not loaded here)."""
    return 42


@pytest.fixture(autouse=True)
def _expected_failures(request):
    """Mark the cases of :data:`EXCLUDED` as strict expected failures."""
    node = request.node
    reason = EXCLUDED.get(node.name) or EXCLUDED.get(node.originalname)
    if reason is not None:
        request.applymarker(pytest.mark.xfail(reason=reason, strict=True))


def test_excluded_cases_exist():
    """Every entry of the table names a collected test (no stale exclusions)."""
    names = {name.split("[")[0] for name in EXCLUDED}
    assert names <= set(COLLECTED), sorted(names - set(COLLECTED))


# ------------------------------------------------------- fastgd's own checks against scikit-learn

_RNG = np.random.default_rng(0)
_X = _RNG.normal(size=(60, 3))
_Y_REGRESSION = _X @ np.array([1.0, 2.0, 3.0]) + 0.5
_Y_LABELS = (_X[:, 0] + 0.3 * _X[:, 1] > 0).astype(int)


def _both(name: str, **params):
    """The same estimator from scikit-learn and from fastgd."""
    return getattr(linear_model, name)(**params), getattr(estimators, name)(**params)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
@pytest.mark.parametrize("name", ["SGDClassifier", "SGDRegressor"])
def test_negative_sample_weight_is_used_as_scikit_learn_uses_it(name, sparse):
    """scikit-learn 1.9 takes a negative weight as given (that row's step goes uphill)."""
    X = sp.csr_matrix(_X) if sparse else _X
    y = _Y_LABELS if name == "SGDClassifier" else _Y_REGRESSION
    weights = np.ones(60)
    weights[:6] = -0.5
    params = {"shuffle": False, "max_iter": 5, "tol": None}
    theirs, ours = _both(name, **params)
    theirs.fit(X, y, sample_weight=weights)
    ours.fit(X, y, sample_weight=weights)
    np.testing.assert_allclose(ours.coef_, theirs.coef_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.intercept_, theirs.intercept_, rtol=1e-10, atol=1e-12)


_X_SPARSE = np.where(_RNG.random(_X.shape) < 0.4, 0.0, _X)  # zeros: CSR rows differ


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
@pytest.mark.parametrize("penalty", ["l1", "elasticnet"])
@pytest.mark.parametrize("name", ["SGDClassifier", "SGDRegressor"])
def test_l1_is_scikit_learns_truncated_gradient(name, penalty, sparse):
    """The cumulative truncated gradient, on every feature of a dense row and on the stored
    columns of a CSR row, with the intercept's step damped on sparse data: the same model."""
    X = sp.csr_matrix(_X_SPARSE) if sparse else _X_SPARSE
    y = _Y_LABELS if name == "SGDClassifier" else _Y_REGRESSION
    params = {"penalty": penalty, "alpha": 0.01, "learning_rate": "constant", "eta0": 0.01,
              "shuffle": False, "max_iter": 5, "tol": None}  # fmt: skip
    theirs, ours = _both(name, **params)
    theirs.fit(X, y)
    ours.fit(X, y)
    np.testing.assert_allclose(ours.coef_, theirs.coef_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.intercept_, theirs.intercept_, rtol=1e-10, atol=1e-12)
    assert np.count_nonzero(ours.coef_) == np.count_nonzero(theirs.coef_)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_partial_fit_with_l1_restarts_the_truncation_each_call_as_scikit_learn(sparse):
    """scikit-learn's ``u`` and ``q`` live in one ``_plain_sgd`` call: each ``partial_fit``
    starts them at 0 (fastgd's estimators too), so three calls equal its three calls."""
    X = sp.csr_matrix(_X_SPARSE) if sparse else _X_SPARSE
    params = {"penalty": "elasticnet", "alpha": 0.01, "learning_rate": "constant",
              "eta0": 0.01, "shuffle": False}  # fmt: skip
    theirs, ours = _both("SGDRegressor", **params)
    for _ in range(3):
        theirs.partial_fit(X, _Y_REGRESSION)
        ours.partial_fit(X, _Y_REGRESSION)
    np.testing.assert_allclose(ours.coef_, theirs.coef_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.intercept_, theirs.intercept_, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("random_state", [0, 1, 2])
@pytest.mark.parametrize("name", ["SGDClassifier", "SGDRegressor"])
def test_early_stopping_splits_and_stops_as_scikit_learn(name, random_state):
    """The same held-out rows, the training rows in their own order, the same stopping
    epoch and weights. (Without a penalty: with L2, scikit-learn scores the validation set
    with its weight vector before the ``wscale`` factor, see the module docstring.)"""
    y = _Y_LABELS if name == "SGDClassifier" else _Y_REGRESSION
    params = {"penalty": None, "shuffle": False, "early_stopping": True, "tol": 1e-3,
              "validation_fraction": 0.2, "n_iter_no_change": 3, "max_iter": 1000,
              "random_state": random_state}  # fmt: skip
    theirs, ours = _both(name, **params)
    theirs.fit(_X, y)
    ours.fit(_X, y)
    assert ours.n_iter_ == theirs.n_iter_
    np.testing.assert_allclose(ours.coef_, theirs.coef_, rtol=1e-10, atol=1e-12)


def _class_mismatch(module):
    model = module.SGDClassifier().partial_fit(_X, _Y_LABELS, classes=[0, 1])
    model.partial_fit(_X, _Y_LABELS, classes=[0, 1, 2])


def _unknown_label(module):
    model = module.SGDClassifier().partial_fit(_X, _Y_LABELS, classes=[0, 1])
    model.partial_fit(_X, _Y_LABELS + 5)


def _overflow(module):
    module.SGDRegressor(max_iter=3, tol=None).fit(_X * 1e200, _Y_REGRESSION)


#: Errors whose scikit-learn message callers may match on: fastgd's message must contain it.
_ERRORS = {
    "coef_init": lambda m: m.SGDClassifier().fit(_X, _Y_LABELS, coef_init=np.zeros((2, 3))),
    "intercept_init": lambda m: m.SGDRegressor().fit(_X, _Y_REGRESSION, intercept_init=[0, 1]),
    "all-zero sample_weight": lambda m: m.SGDRegressor().fit(
        _X, _Y_REGRESSION, sample_weight=np.zeros(60)
    ),
    "balanced partial_fit": lambda m: m.SGDClassifier(class_weight="balanced").partial_fit(
        _X, _Y_LABELS, classes=[0, 1]
    ),
    "classes changed": _class_mismatch,
    "unknown label": _unknown_label,
    "overflow": _overflow,
}


@pytest.mark.parametrize("case", list(_ERRORS))
def test_error_messages_hold_scikit_learns(case):
    with pytest.raises(ValueError) as theirs:
        _ERRORS[case](linear_model)
    with pytest.raises(ValueError) as ours:
        _ERRORS[case](estimators)
    expected = str(theirs.value).strip().rstrip(".!")
    assert expected in str(ours.value)
