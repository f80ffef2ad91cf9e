"""ROC AUC, exact and over bootstrap resamples, in numpy alone: the promotion gate compares
two models with it, and training gives a small test window's AUC its interval with it.
Light to import (scipy only when an AUC is computed): serving reaches the gate's module."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def auc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC of each row of ``scores`` (Mann-Whitney, ties averaged); NaN for a row whose
    labels have one class. ``labels`` has the same shape as ``scores``."""
    # Here, not at the top: scipy.stats takes about a second to import, and serving reads
    # the registry's aliases through this module's importers without ever gating.
    from scipy.stats import rankdata  # noqa: PLC0415

    labels = np.atleast_2d(labels).astype(bool)
    ranks = rankdata(np.atleast_2d(scores), axis=1)
    n_pos = labels.sum(axis=1)
    n_neg = labels.shape[1] - n_pos
    rank_sum = np.where(labels, ranks, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def resample_indices(n: int, n_bootstrap: int, seed: int) -> Iterator[np.ndarray]:
    """The bootstrap's row indices, in chunks of shape (b, n): seeded, so reproducible."""
    rng = np.random.default_rng(seed)
    chunk = max(1, min(200, 4_000_000 // max(n, 1)))  # bounds memory at ~4M cells a chunk
    for start in range(0, n_bootstrap, chunk):
        yield rng.integers(0, n, size=(min(chunk, n_bootstrap - start), n))


def resample_counts(idx: np.ndarray, n: int) -> np.ndarray:
    """How often each row was drawn, per resample: (b, n)."""
    offsets = (np.arange(idx.shape[0]) * n)[:, None]
    return np.bincount((idx + offsets).ravel(), minlength=idx.shape[0] * n).reshape(-1, n)


def weighted_auc(counts: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUC of each resample given as row counts, without sorting per resample: the scores
    are sorted once, ties grouped, and each positive counts the negatives below it plus
    half of those tied with it."""
    order = np.argsort(scores, kind="stable")
    ordered = scores[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    weights = counts[:, order].astype(float)
    positive = labels[order].astype(bool)
    pos = np.add.reduceat(np.where(positive, weights, 0.0), starts, axis=1)
    neg = np.add.reduceat(np.where(positive, 0.0, weights), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (below + 0.5 * neg)).sum(axis=1) / (pos.sum(axis=1) * neg.sum(axis=1))
