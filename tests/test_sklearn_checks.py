"""scikit-learn's estimator checks (``parametrize_with_checks``) for both estimators.

Instances use ``max_iter=5``, as scikit-learn's own test of its SGD estimators does (the
checks fit tiny problems many times; convergence is not what they test). The expected
failures are exactly those scikit-learn declares for its own ``SGDRegressor`` and
``SGDClassifier``, plus, while CSR training has not landed, the sparse-input checks.
"""

from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from fastgd import SGDClassifier, SGDRegressor

#: scikit-learn's own expected failures for its SGD estimators (sklearn/utils/_test_common/
#: instance_generator.py, PER_ESTIMATOR_XFAIL_CHECKS): the same reason holds here.
_WEIGHT_REASON = (
    "sample_weight is not equivalent to removing/repeating samples (scikit-learn's reason "
    "for its own SGD): 5 epochs do not reach the optimum, and a weight of 2 is one step of "
    "twice the size where a repeated row is two steps in another shuffled order."
)
SGD_EXPECTED_FAILURES = {
    "check_sample_weight_equivalence_on_dense_data": _WEIGHT_REASON,
    "check_sample_weight_equivalence_on_sparse_data": _WEIGHT_REASON,
}


def _expected_failed_checks(estimator):
    return dict(SGD_EXPECTED_FAILURES)


@parametrize_with_checks(
    [SGDRegressor(max_iter=5), SGDClassifier(max_iter=5)],
    expected_failed_checks=_expected_failed_checks,
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
