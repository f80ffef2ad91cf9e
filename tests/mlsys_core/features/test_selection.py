"""Tests for mlsys_core/features/selection.py: each selector drops what it should, says why,
and round-trips through JSON."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_selection import VarianceThreshold, mutual_info_classif

from mlsys_core.features.selection import (
    L1Selector,
    MutualInfoSelector,
    SelectionError,
    VarianceSelector,
    selector_from_dict,
)


@pytest.fixture
def data() -> tuple[pd.DataFrame, np.ndarray]:
    """Two informative columns, two noise columns and a constant."""
    rng = np.random.default_rng(0)
    n = 600
    y = rng.integers(0, 2, n)
    frame = pd.DataFrame(
        {
            "signal": y + rng.normal(0, 0.3, n),
            "weak_signal": y + rng.normal(0, 1.0, n),
            "noise_a": rng.normal(size=n),
            "noise_b": rng.normal(size=n),
            "constant": np.full(n, 3.0),
        }
    )
    return frame, y


def _dropped(selector) -> dict[str, str]:
    return {r["feature"]: r["reason"] for r in selector.report_ if not r["kept"]}


def test_variance_matches_sklearn_and_explains_the_drop(data) -> None:
    frame, _ = data
    sel = VarianceSelector(threshold=0.0).fit(frame)
    reference = VarianceThreshold(0.0).fit(frame)
    assert sel.support_ == reference.get_support().tolist()
    assert _dropped(sel) == {"constant": "variance 0 <= threshold 0"}
    assert list(sel.get_feature_names_out()) == ["signal", "weak_signal", "noise_a", "noise_b"]


def test_mutual_information_keeps_the_k_best(data) -> None:
    frame, y = data
    sel = MutualInfoSelector(k=2).fit(frame, y)
    assert list(sel.get_feature_names_out()) == ["signal", "weak_signal"]
    reference = mutual_info_classif(frame.to_numpy(), y, random_state=0)
    np.testing.assert_allclose(sel.scores_, reference)
    assert set(_dropped(sel)) == {"noise_a", "noise_b", "constant"}
    assert all("2 highest mutual information" in r for r in _dropped(sel).values())


def test_l1_zeroes_the_noise_at_strong_penalty(data) -> None:
    frame, y = data
    sel = L1Selector(C=0.01).fit(frame, y)
    kept = list(sel.get_feature_names_out())
    assert "signal" in kept
    assert {"noise_a", "noise_b", "constant"} <= set(_dropped(sel))
    assert _dropped(sel)["constant"] == "L1 coefficient is zero at C=0.01"


def test_supervised_selectors_need_a_class_label(data) -> None:
    frame, _ = data
    with pytest.raises(SelectionError, match="requires y"):
        MutualInfoSelector().fit(frame)
    with pytest.raises(SelectionError, match="Unknown label type"):
        L1Selector().fit(frame, np.linspace(0, 1, len(frame)))


@pytest.mark.parametrize(
    "selector", [VarianceSelector(), MutualInfoSelector(min_score=0.01), L1Selector(C=0.05)]
)
def test_json_round_trip_keeps_the_decision_and_the_report(data, selector) -> None:
    frame, y = data
    fitted = selector.fit(frame, y)
    loaded = selector_from_dict(json.loads(json.dumps(fitted.to_dict())))
    np.testing.assert_array_equal(loaded.transform(frame), fitted.transform(frame))
    assert loaded.report_ == fitted.report_
