"""scikit-learn's estimator checks over every extractor and selector (and each mode that
changes what is learned); none is expected to fail."""

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
# TextExtractor(method="sentence") is the same class and contract code as the two text
# modes above; running the ~45 checks through a transformer encoder one document at a time
# takes minutes on two cores, so its own tests (test_extractors.py) cover what differs:
# output shape, empty documents, the JSON round trip and subset invariance.


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_contract(estimator, check) -> None:
    check(estimator)
