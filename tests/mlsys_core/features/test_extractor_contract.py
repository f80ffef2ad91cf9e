"""scikit-learn's estimator checks over every extractor and selector."""

from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from mlsys_core.features.extractors import (
    CategoricalExtractor,
    DatetimeExtractor,
    ImageExtractor,
    NumericExtractor,
    TextExtractor,
)
from mlsys_core.features.selection import L1Selector, MutualInfoSelector, VarianceSelector

ESTIMATORS = [
    NumericExtractor(),
    CategoricalExtractor(),
    CategoricalExtractor(encoding="hash", n_buckets=8),
    CategoricalExtractor(encoding="embedding"),
    DatetimeExtractor(holidays="US"),
    TextExtractor(method="tfidf"),
    TextExtractor(method="hashing", n_features=16),
    ImageExtractor(),
    ImageExtractor(embedding="cnn", cnn_channels=2),
    VarianceSelector(),
    MutualInfoSelector(k=2),
    L1Selector(C=1.0),
]


def _expected_failures(estimator) -> dict[str, str]:
    return {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failures)
def test_sklearn_contract(estimator, check) -> None:
    check(estimator)
