"""Evaluation metrics for a binary probability forecast."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from mlsys_core.training.auc import resample_counts, resample_indices, weighted_auc


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


# A window up to this many rows gets the bootstrap's interval (0.2 s at most); a larger
# one the closed form, which agrees with it there and costs nothing (a bootstrap of a
# 50,000-row window takes seconds, paid by every training run).
BOOTSTRAP_ROWS = 5_000


def auc_interval(
    y_true: np.ndarray, proba: np.ndarray, area: float, n_bootstrap: int = 1000
) -> tuple[float, float]:
    """The 95% interval of the forecast's AUC ``area`` (on a small test window one AUC
    says little): the percentile bootstrap (seeded) on a window of up to
    ``BOOTSTRAP_ROWS`` rows, where a normal approximation fails (a handful of positives);
    past that, Hanley and McNeil's (1982) normal interval from the classes' sizes."""
    y_true, proba = np.asarray(y_true, float), np.asarray(proba, float)
    if len(y_true) <= BOOTSTRAP_ROWS:
        aucs = [
            weighted_auc(resample_counts(idx, len(y_true)), y_true, proba)
            for idx in resample_indices(len(y_true), n_bootstrap, seed=0)
        ]
        drawn = np.concatenate(aucs)
        low, high = np.quantile(drawn[~np.isnan(drawn)], [0.025, 0.975])
        return float(low), float(high)
    positives = int(y_true.sum())
    negatives = len(y_true) - positives
    q1, q2 = area / (2 - area), 2 * area**2 / (1 + area)
    variance = (
        area * (1 - area) + (positives - 1) * (q1 - area**2) + (negatives - 1) * (q2 - area**2)
    ) / (positives * negatives)
    half = 1.96 * float(np.sqrt(max(variance, 0.0)))
    return max(0.0, area - half), min(1.0, area + half)


MIN_CLASS_ROWS = 10  # fewer rows of a class in a test window, and no AUC can be trusted


def interval_caveat(low: float, positives: int, negatives: int) -> str:
    """Why a test AUC cannot be trusted, or "": a class too rare to rank (its interval is
    then too narrow, whatever method drew it), or an interval that holds chance."""
    if min(positives, negatives) < MIN_CLASS_ROWS:
        rarer = "positive" if positives < negatives else "negative"
        count = min(positives, negatives)
        return f"{count} {rarer} {'row is' if count == 1 else 'rows are'} too few to trust it"
    if low <= 0.5:  # noqa: PLR2004 -- chance
        return "too few to tell the model from chance"
    return ""
