"""Probability calibration: Platt scaling fitted on the validation split, applied at serving.

Platt scaling (``sigmoid(a * logit(p) + b)``) rather than isotonic regression: two
parameters fit well on a few hundred validation rows, the map is smooth and strictly
monotone (it never reorders two flights, so AUC is unchanged and no ties appear), and it
stores as two numbers in a JSON artifact next to the run's model.
"""

from __future__ import annotations

import mlflow
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

CALIBRATION_ARTIFACT = "calibration.json"
_EPS = 1e-6


class PlattCalibration(BaseModel):
    """``calibrated = sigmoid(slope * logit(raw) + intercept)``; identity is (1, 0)."""

    model_config = ConfigDict(frozen=True)

    method: str = "platt"
    slope: float = 1.0
    intercept: float = 0.0
    fitted_on: str = Field(default="", description="Which split, and how many rows.")

    def apply(self, raw: np.ndarray) -> np.ndarray:
        p = np.clip(np.asarray(raw, np.float64), _EPS, 1 - _EPS)
        z = self.slope * np.log(p / (1 - p)) + self.intercept
        return 1.0 / (1.0 + np.exp(-z))


def fit_platt(
    y: np.ndarray, raw: np.ndarray, split: str = "valid", ridge: float = 1e-6
) -> PlattCalibration:
    """Maximum-likelihood Platt parameters by Newton's method on the log loss.

    ``ridge`` only keeps the Hessian invertible when one class is (nearly) separable.
    """
    y = np.asarray(y, np.float64)
    if len(y) == 0 or len(np.unique(y)) < 2:
        raise ValueError("calibration needs both label classes")
    p = np.clip(np.asarray(raw, np.float64), _EPS, 1 - _EPS)
    x = np.column_stack([np.log(p / (1 - p)), np.ones_like(p)])

    def loss(w: np.ndarray) -> float:
        z = x @ w
        # log(1 + e^z) - y z, written to stay finite for any z
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * ridge * w @ w)

    # Start flat at the base rate; Newton steps, halved until the loss drops (plain Newton
    # can overshoot on logistic losses).
    rate = y.mean()
    w = np.array([0.0, np.log(rate / (1 - rate))])
    current = loss(w)
    for _ in range(100):
        q = 1.0 / (1.0 + np.exp(-(x @ w)))
        grad = x.T @ (q - y) + ridge * w
        hess = (x * (q * (1 - q))[:, None]).T @ x + ridge * np.eye(2)
        step = np.linalg.solve(hess, grad)
        for _ in range(30):
            candidate = w - step
            if (new := loss(candidate)) <= current:
                break
            step = step / 2
        else:
            break
        w, done = candidate, current - new < 1e-12 * max(1.0, abs(current))
        current = new
        if done:
            break
    return PlattCalibration(
        slope=float(w[0]), intercept=float(w[1]), fitted_on=f"{split} ({len(y)} rows)"
    )


def log_calibration(y_valid: np.ndarray, p_valid: np.ndarray) -> PlattCalibration:
    """Fit on the validation split and log it as the run's calibration artifact."""
    calibration = fit_platt(y_valid, p_valid)
    mlflow.log_dict(calibration.model_dump(), CALIBRATION_ARTIFACT)
    return calibration
