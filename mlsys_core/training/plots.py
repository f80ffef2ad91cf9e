"""Diagnostic figures logged with every training run."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from mlsys_core.training.trainer import EpochMetrics  # noqa: E402


def loss_curves(history: list[EpochMetrics]) -> Figure:
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [m.epoch for m in history]
    ax.plot(epochs, [m.train_loss for m in history], marker="o", label="train")
    ax.plot(epochs, [m.val_loss for m in history], marker="o", label="validation")
    ax.set(xlabel="epoch", ylabel="log loss", title="Loss curves")
    ax.legend()
    fig.tight_layout()
    return fig


def roc(y_true: np.ndarray, proba: np.ndarray, auc: float) -> Figure:
    fpr, tpr, _ = roc_curve(y_true, proba)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(fpr, tpr, label=f"model (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test)")
    ax.legend()
    fig.tight_layout()
    return fig


def calibration(y_true: np.ndarray, proba: np.ndarray, ece: float) -> Figure:
    observed, predicted = calibration_curve(y_true, proba, n_bins=15, strategy="uniform")
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(predicted, observed, marker="o", label=f"model (ECE {ece:.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    ax.set(xlabel="predicted probability", ylabel="observed frequency", title="Calibration (test)")
    ax.legend()
    fig.tight_layout()
    return fig


def close(figure: Figure) -> None:
    plt.close(figure)
