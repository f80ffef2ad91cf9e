"""Binary forecast metrics, checked against references computed another way."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_auc_score

from mlsys_core.registry.gate import GateConfig, paired_bootstrap
from mlsys_core.training.metrics import (
    BOOTSTRAP_ROWS,
    auc_interval,
    binary_metrics,
    expected_calibration_error,
    interval_caveat,
)


def reference_ece(y: np.ndarray, proba: np.ndarray, n_bins: int) -> float:
    """ECE from scikit-learn's per-bin frequencies, weighted by the rows in each bin."""
    observed, predicted = calibration_curve(y, proba, n_bins=n_bins, strategy="uniform")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], proba), minlength=n_bins)
    counts = counts[counts > 0]  # calibration_curve leaves out empty bins too
    return float(np.sum(counts * np.abs(observed - predicted)) / len(y))


@pytest.mark.parametrize("n_bins", [5, 10, 15])
@pytest.mark.parametrize("skew", [0.5, 1.0, 2.0])
def test_ece_matches_a_calibration_curve_reference(n_bins: int, skew: float) -> None:
    rng = np.random.default_rng(n_bins)
    proba = rng.uniform(size=5_000)
    # skew != 1 makes the forecast miscalibrated, so the reference is far from 0.
    y = (rng.uniform(size=proba.size) < proba**skew).astype(float)
    expected = reference_ece(y, proba, n_bins)
    assert expected_calibration_error(y, proba, n_bins=n_bins) == pytest.approx(expected, abs=1e-12)


def test_ece_of_a_calibrated_forecast_is_near_zero() -> None:
    rng = np.random.default_rng(1)
    proba = rng.uniform(size=200_000)
    y = (rng.uniform(size=proba.size) < proba).astype(float)
    assert expected_calibration_error(y, proba) < 0.01


def test_ece_of_a_constant_overconfident_forecast() -> None:
    # Every row says 0.9 and half the rows are positive: one bin, |0.5 - 0.9| = 0.4.
    y = np.array([0.0, 1.0] * 500)
    proba = np.full(y.size, 0.9)
    assert expected_calibration_error(y, proba) == pytest.approx(0.4)


def test_ece_counts_probability_one_in_the_top_bin() -> None:
    # A certain forecast that is always wrong is as miscalibrated as it gets.
    assert expected_calibration_error(np.zeros(10), np.ones(10)) == pytest.approx(1.0)
    assert expected_calibration_error(np.ones(10), np.zeros(10)) == pytest.approx(1.0)
    assert expected_calibration_error(np.ones(10), np.ones(10)) == pytest.approx(0.0)


def test_binary_metrics_match_independent_formulas() -> None:
    rng = np.random.default_rng(2)
    proba = rng.uniform(0.01, 0.99, size=1_000)
    y = (rng.uniform(size=proba.size) < proba).astype(int)

    metrics = binary_metrics(y, proba)

    assert metrics["auc"] == pytest.approx(roc_auc_score(y, proba), abs=1e-12)
    # Mann-Whitney: AUC is the chance a random positive outranks a random negative.
    pos, neg = proba[y == 1], proba[y == 0]
    assert metrics["auc"] == pytest.approx((pos[:, None] > neg[None, :]).mean(), abs=1e-12)
    log_loss = -np.mean(y * np.log(proba) + (1 - y) * np.log(1 - proba))
    assert metrics["log_loss"] == pytest.approx(log_loss, rel=1e-9)
    assert metrics["brier"] == pytest.approx(np.mean((proba - y) ** 2), rel=1e-9)
    assert metrics["ece"] == pytest.approx(reference_ece(y, proba, 15), abs=1e-12)
    assert metrics["positive_rate"] == pytest.approx(y.sum() / y.size)
    assert metrics["rows"] == y.size


def test_binary_metrics_log_loss_is_finite_for_certain_forecasts() -> None:
    y = np.array([0.0, 1.0, 0.0, 1.0])
    proba = np.array([1.0, 0.0, 0.0, 1.0])  # two certain and wrong forecasts
    metrics = binary_metrics(y, proba)
    assert np.isfinite(metrics["log_loss"])
    assert metrics["log_loss"] > 5  # clipped at 1e-7, so -log(1e-7) / 2 ~ 8


@pytest.mark.parametrize("label", [0.0, 1.0])
def test_binary_metrics_reject_a_single_class(label: float) -> None:
    with pytest.raises(ValueError, match="both classes"):
        binary_metrics(np.full(10, label), np.linspace(0, 1, 10))


@pytest.mark.parametrize(("rows", "rate", "signal"), [(400, 0.2, 0.8), (20_000, 0.1, 0.5)])
def test_the_auc_interval_is_as_wide_as_the_gates_bootstrap_finds(
    rows: int, rate: float, signal: float
) -> None:
    """The interval against the gate's bootstrap of the same rows, drawn otherwise: within
    0.01 at both ends, below BOOTSTRAP_ROWS (a bootstrap too) and above it (closed form)."""
    rng = np.random.default_rng(rows)
    y = (rng.uniform(size=rows) < rate).astype(float)
    proba = 1 / (1 + np.exp(-(signal * (2 * y - 1) + rng.normal(size=rows))))
    low, high = auc_interval(y, proba, roc_auc_score(y, proba))
    boot, _ = paired_bootstrap(y, proba, proba, GateConfig(n_bootstrap=2000, seed=1))
    expected = np.quantile(boot, [0.025, 0.975])
    assert (low, high) == pytest.approx(tuple(expected), abs=0.01)
    assert (rows > BOOTSTRAP_ROWS) == (rows == 20_000)


def test_a_small_test_window_cannot_tell_a_model_from_chance() -> None:
    """19 rows with 2 positives: an AUC of 0.71 whose interval holds 0.5; 3,040 rows
    ranked alike tell it from chance."""
    y = np.array([1, 1] + [0] * 17, dtype=float)
    proba = np.r_[0.9, 0.5, np.linspace(0.1, 0.95, 17)]
    area = roc_auc_score(y, proba)
    low, high = auc_interval(y, proba, area)
    assert low < 0.5 < area < high
    many, scores = np.tile(y, 160), np.tile(proba, 160)
    low, high = auc_interval(many, scores, roc_auc_score(many, scores))
    assert 0.5 < low < area < high < 1.0


@pytest.mark.parametrize(
    ("low", "positives", "negatives", "caveat"),
    [
        (0.73, 2, 17, "2 positive rows are too few to trust it"),
        (0.80, 500, 1, "1 negative row is too few to trust it"),
        (0.48, 40, 300, "too few to tell the model from chance"),
        (0.70, 40, 300, ""),
    ],
)
def test_an_auc_that_cannot_be_trusted_says_why(
    low: float, positives: int, negatives: int, caveat: str
) -> None:
    assert interval_caveat(low, positives, negatives) == caveat
