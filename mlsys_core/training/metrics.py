"""Evaluation metrics for a binary probability forecast."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, n_bins: int = 15) -> float:
    """Mean |accuracy - confidence| over equal-width probability bins, weighted by count."""
    y_true, proba = np.asarray(y_true, float), np.asarray(proba, float)
    bins = np.clip((proba * n_bins).astype(int), 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            total += mask.sum() * abs(y_true[mask].mean() - proba[mask].mean())
    return float(total / len(y_true))


def binary_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    y_true, proba = np.asarray(y_true, float), np.asarray(proba, float)
    if len(np.unique(y_true)) < 2:
        raise ValueError("metrics need both classes in y_true")
    return {
        "auc": float(roc_auc_score(y_true, proba)),
        "log_loss": float(log_loss(y_true, np.clip(proba, 1e-7, 1 - 1e-7))),
        "ece": expected_calibration_error(y_true, proba),
        "brier": float(brier_score_loss(y_true, proba)),
        "positive_rate": float(y_true.mean()),
        "rows": float(len(y_true)),
    }
