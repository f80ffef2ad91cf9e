"""The promotion gate: a challenger replaces the champion only on evidence.

Both models are scored on the same held-out rows, so their AUCs are paired. A difference
that a resample of those rows could erase is noise, so besides the margin the gate asks a
one-sided paired bootstrap: resample rows with replacement (the same rows for both models),
recompute both AUCs, and count how often the challenger's lead is not above the margin.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mlsys_core.training.auc import auc, resample_counts, resample_indices, weighted_auc

__all__ = ["auc", "decide", "paired_bootstrap", "resample_indices"]


class GateConfig(BaseModel):
    """How much better, and how sure, a challenger must be."""

    model_config = ConfigDict(frozen=True)

    margin: float = Field(default=0.0, ge=0.0, le=1.0, description="AUC lead required.")
    alpha: float = Field(default=0.05, gt=0.0, lt=0.5, description="Significance level.")
    n_bootstrap: int = Field(default=1000, ge=100, le=100_000)
    seed: int = 0


class GateDecision(BaseModel):
    """Why the challenger may or may not replace the champion, with every number."""

    model_config = ConfigDict(frozen=True)

    promote: bool
    reason: str
    challenger_auc: float
    champion_auc: float | None = None
    champion_version: str | None = None
    challenger_version: str | None = None
    margin: float = 0.0
    delta: float | None = None
    p_value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    alpha: float | None = None
    n_bootstrap: int | None = None
    seed: int | None = None
    n_rows: int | None = None
    held_out: str | None = None
    decided_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())


def paired_bootstrap(
    labels: np.ndarray, challenger: np.ndarray, champion: np.ndarray, config: GateConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap AUCs of both models on the same resampled rows (seeded)."""
    n = len(labels)
    out_c, out_p = [], []
    for idx in resample_indices(n, config.n_bootstrap, config.seed):
        counts = resample_counts(idx, n)
        out_c.append(weighted_auc(counts, labels, challenger))
        out_p.append(weighted_auc(counts, labels, champion))
    return np.concatenate(out_c), np.concatenate(out_p)


def decide(
    labels: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray | None,
    config: GateConfig,
    challenger_version: str | None = None,
    champion_version: str | None = None,
    held_out: str | None = None,
) -> GateDecision:
    """Promote a first model, or a challenger whose AUC lead over the champion exceeds the
    margin with bootstrap p-value below alpha. Equal is never better."""
    labels = np.asarray(labels, dtype=float).reshape(-1)
    challenger = np.asarray(challenger, dtype=float).reshape(-1)
    if challenger.shape != labels.shape:
        raise ValueError(f"{challenger.shape[0]} challenger scores for {labels.shape[0]} labels")
    if len(np.unique(labels)) != 2:
        raise ValueError("the held-out labels need both classes to compute an AUC")
    common = {
        "challenger_auc": float(auc(labels, challenger)[0]),
        "challenger_version": challenger_version,
        "champion_version": champion_version,
        "margin": config.margin,
        "alpha": config.alpha,
        "n_rows": int(labels.shape[0]),
        "held_out": held_out,
    }
    if champion is None:
        return GateDecision(promote=True, reason="no champion yet", **common)
    champion = np.asarray(champion, dtype=float).reshape(-1)
    if champion.shape != labels.shape:
        raise ValueError(f"{champion.shape[0]} champion scores for {labels.shape[0]} labels")
    champion_auc = float(auc(labels, champion)[0])
    delta = common["challenger_auc"] - champion_auc
    boot_c, boot_p = paired_bootstrap(labels, challenger, champion, config)
    deltas = (boot_c - boot_p)[~np.isnan(boot_c - boot_p)]
    # One-sided: how often a resample shows no lead above the margin (+1 smoothing so an
    # estimate from B resamples never claims p = 0).
    p_value = float((1 + np.sum(deltas <= config.margin)) / (1 + deltas.size))
    ci_low, ci_high = (float(q) for q in np.quantile(deltas, [0.025, 0.975]))
    numbers = {
        **common,
        "champion_auc": champion_auc,
        "delta": delta,
        "p_value": p_value,
        "ci_low": ci_low,
        "ci_high": ci_high,
        "n_bootstrap": int(deltas.size),
        "seed": config.seed,
    }
    lead = f"AUC {common['challenger_auc']:.4f} vs champion {champion_auc:.4f}"
    if delta <= config.margin:
        reason = f"{lead}: lead {delta:+.4f} is not above the margin {config.margin}"
        return GateDecision(promote=False, reason=reason, **numbers)
    if p_value >= config.alpha:
        reason = f"{lead}: lead {delta:+.4f} not significant (p={p_value:.3f} >= {config.alpha})"
        return GateDecision(promote=False, reason=reason, **numbers)
    reason = f"{lead}: lead {delta:+.4f} > margin {config.margin}, p={p_value:.3f}"
    return GateDecision(promote=True, reason=reason, **numbers)


def incomparable(
    challenger_auc: float,
    champion_version: str,
    why: str,
    config: GateConfig,
    challenger_version: str | None = None,
) -> GateDecision:
    """The champion cannot score the challenger's held-out data (its input schema changed):
    no comparison is possible, so the gate passes and approval is the remaining check."""
    return GateDecision(
        promote=True,
        reason=f"champion v{champion_version} cannot score this data: {why}"[:500],
        challenger_auc=challenger_auc,
        champion_version=champion_version,
        challenger_version=challenger_version,
        margin=config.margin,
        alpha=config.alpha,
    )
