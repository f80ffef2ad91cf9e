"""Platt calibration: maximum likelihood, checked against scikit-learn's logistic regression."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from mlsys_core.training.calibration import PlattCalibration, fit_platt
from mlsys_core.training.metrics import expected_calibration_error


def _overconfident(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from sigmoid(z), scores sigmoid(3z + 1): too sharp and shifted."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)
    return y, 1 / (1 + np.exp(-(3 * z + 1)))


def test_fit_matches_an_unregularized_logistic_regression_on_the_logit():
    y, raw = _overconfident(5000)
    fitted = fit_platt(y, raw)
    logit = np.log(raw / (1 - raw)).reshape(-1, 1)
    reference = LogisticRegression(C=1e12, tol=1e-12, max_iter=10_000).fit(logit, y)
    assert fitted.slope == pytest.approx(reference.coef_[0, 0], rel=1e-4)
    assert fitted.intercept == pytest.approx(reference.intercept_[0], abs=1e-4)
    # The generating process is sigmoid(z) = sigmoid((logit - 1) / 3).
    assert fitted.slope == pytest.approx(1 / 3, abs=0.05)
    assert fitted.intercept == pytest.approx(-1 / 3, abs=0.08)


def test_calibration_lowers_the_calibration_error_and_keeps_the_order():
    y, raw = _overconfident(5000)
    y_new, raw_new = _overconfident(5000, seed=1)
    calibrated = fit_platt(y, raw).apply(raw_new)
    assert expected_calibration_error(y_new, calibrated) < 0.5 * expected_calibration_error(
        y_new, raw_new
    )
    assert (np.argsort(calibrated, kind="stable") == np.argsort(raw_new, kind="stable")).all()


def test_identity_and_edges():
    identity = PlattCalibration()
    p = np.array([0.0, 1e-9, 0.3, 0.5, 1.0])
    out = identity.apply(p)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[2:4], p[2:4])
    with pytest.raises(ValueError, match="both label classes"):
        fit_platt(np.ones(10), np.full(10, 0.7))
