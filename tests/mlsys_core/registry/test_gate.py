"""The promotion gate: margin plus a seeded paired bootstrap; equal or worse never passes."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError
from sklearn.metrics import roc_auc_score

from mlsys_core.registry.gate import (
    GateConfig,
    auc,
    decide,
    paired_bootstrap,
    resample_indices,
)


def scored(n: int, signal: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores whose separation grows with ``signal``."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n).astype(float)
    return labels, 1 / (1 + np.exp(-(signal * (2 * labels - 1) + rng.normal(size=n))))


def test_auc_matches_scikit_learn_with_ties() -> None:
    labels, scores = scored(500, 0.7, 0)
    rounded = np.round(scores, 1)  # many ties
    for s in (scores, rounded):
        assert auc(labels, s)[0] == pytest.approx(roc_auc_score(labels, s), abs=1e-12)
    assert np.isnan(auc(np.ones(5), np.arange(5.0))[0])  # one class: undefined


def test_bootstrap_is_paired_and_seeded() -> None:
    labels, a = scored(400, 0.5, 1)
    _, b = scored(400, 0.5, 2)
    config = GateConfig(n_bootstrap=200, seed=7)
    c1, p1 = paired_bootstrap(labels, a, b, config)
    c2, p2 = paired_bootstrap(labels, a, b, config)
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(p1, p2)
    # Paired: the same model on both sides gives a zero difference on every resample.
    same_c, same_p = paired_bootstrap(labels, a, a, config)
    np.testing.assert_array_equal(same_c, same_p)
    # The resampled AUCs scatter around the full-sample AUC.
    assert np.mean(c1) == pytest.approx(auc(labels, a)[0], abs=0.02)


def test_bootstrap_aucs_equal_scikit_learn_on_the_same_resamples() -> None:
    labels, a = scored(300, 0.5, 3)
    a = np.round(a, 2)  # ties, which the counting AUC must split in half
    _, b = scored(300, 0.5, 4)
    config = GateConfig(n_bootstrap=120, seed=5)
    got_a, got_b = paired_bootstrap(labels, a, b, config)
    rows = np.concatenate(list(resample_indices(300, config.n_bootstrap, config.seed)))
    assert rows.shape == (120, 300)
    want_a = [roc_auc_score(labels[r], a[r]) for r in rows]
    want_b = [roc_auc_score(labels[r], b[r]) for r in rows]
    np.testing.assert_allclose(got_a, want_a, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got_b, want_b, rtol=0, atol=1e-12)


def test_first_model_passes_without_a_test() -> None:
    labels, scores = scored(300, 0.1, 0)
    d = decide(labels, scores, None, GateConfig(margin=0.2), "1")
    assert d.promote and d.reason == "no champion yet"
    assert d.champion_auc is None and d.p_value is None
    assert d.challenger_version == "1" and d.n_rows == 300


def test_clearly_better_challenger_passes_with_its_numbers() -> None:
    labels, champion = scored(2000, 0.2, 0)
    rng = np.random.default_rng(1)
    challenger = 1 / (1 + np.exp(-(1.5 * (2 * labels - 1) + rng.normal(size=2000))))
    config = GateConfig(margin=0.01, alpha=0.05, n_bootstrap=500, seed=3)
    d = decide(labels, challenger, champion, config, "2", "1", "fs/test")
    assert d.promote, d.reason
    assert d.challenger_auc == pytest.approx(roc_auc_score(labels, challenger), abs=1e-12)
    assert d.champion_auc == pytest.approx(roc_auc_score(labels, champion), abs=1e-12)
    assert d.delta == pytest.approx(d.challenger_auc - d.champion_auc)
    assert d.p_value < 0.05 and d.ci_low > 0.01
    assert (d.n_bootstrap, d.seed, d.alpha, d.held_out) == (500, 3, 0.05, "fs/test")
    assert d.champion_version == "1"


def test_equal_model_is_never_promoted() -> None:
    labels, scores = scored(1000, 0.5, 0)
    d = decide(labels, scores, scores.copy(), GateConfig(), "2", "1")
    assert not d.promote
    assert d.delta == 0.0 and d.p_value == 1.0


@pytest.mark.parametrize("seed", range(25))
def test_worse_or_equal_model_is_never_promoted(seed: int) -> None:
    labels, a = scored(300, 0.4, seed)
    _, b = scored(300, 0.4, seed + 1000)
    config = GateConfig(n_bootstrap=200, alpha=0.45, seed=seed)  # a lax test, on purpose
    auc_a, auc_b = auc(labels, a)[0], auc(labels, b)[0]
    worse, better = (a, b) if auc_a <= auc_b else (b, a)
    assert not decide(labels, worse, better, config).promote
    assert not decide(labels, worse, worse, config).promote


def test_a_lead_within_noise_is_refused_as_not_significant() -> None:
    labels, champion = scored(200, 0.3, 0)
    challenger = champion.copy()
    flip = np.flatnonzero(labels == 1)[:1]  # nudge one positive up: a tiny, real lead
    challenger[flip] += 0.5
    d = decide(labels, challenger, champion, GateConfig(n_bootstrap=500))
    assert d.delta > 0
    assert not d.promote and "not significant" in d.reason
    assert d.p_value >= 0.05


def test_the_margin_is_required_on_top_of_significance() -> None:
    labels, champion = scored(2000, 0.2, 0)
    challenger = 1 / (
        1 + np.exp(-(1.5 * (2 * labels - 1) + np.random.default_rng(1).normal(size=2000)))
    )
    lead = auc(labels, challenger)[0] - auc(labels, champion)[0]
    d = decide(labels, challenger, champion, GateConfig(margin=lead + 0.01))
    assert not d.promote and "margin" in d.reason


def test_bad_inputs_fail_clearly() -> None:
    labels, scores = scored(50, 0.5, 0)
    with pytest.raises(ValueError, match="50 labels"):
        decide(labels, scores[:10], None, GateConfig())
    with pytest.raises(ValueError, match="both classes"):
        decide(np.ones(50), scores, None, GateConfig())
    with pytest.raises(ValidationError):
        GateConfig(alpha=0.0)
    with pytest.raises(ValidationError):
        GateConfig(n_bootstrap=10)
