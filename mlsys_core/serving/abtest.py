"""Which A/B variant wins: served predictions joined to the labels that arrived later.

The outcome of one served prediction is whether it was right (``prediction == label``).
The two variants' accuracies are compared with a two-sided two-proportion z-test (pooled
variance): with independent records and enough of them per variant, the normal
approximation holds, and the test is the one reviewers recognise. A winner is named only
when the difference is significant at ``alpha`` and each variant has ``min_outcomes``
labelled predictions; otherwise the answer says what is missing.
"""

from __future__ import annotations

import math

import pandas as pd
from pydantic import BaseModel, ConfigDict

from mlsys_core.serving.outcomes import LABEL


class VariantOutcomes(BaseModel):
    model_config = ConfigDict(frozen=True)

    variant: str
    model_versions: list[str]
    outcomes: int  # served predictions with a label
    correct: int
    accuracy: float | None
    mean_probability: float | None
    positive_rate: float | None  # of the labels


class ABResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    variants: dict[str, VariantOutcomes]
    compared: tuple[str, str] | None
    z: float | None
    p_value: float | None
    alpha: float
    winner: str | None
    verdict: str


def two_proportion_z(successes_a: int, n_a: int, successes_b: int, n_b: int) -> tuple[float, float]:
    """z of ``b - a`` and its two-sided p-value, pooled variance."""
    if n_a <= 0 or n_b <= 0:
        raise ValueError("both groups need at least one outcome")
    pooled = (successes_a + successes_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    diff = successes_b / n_b - successes_a / n_a
    if se == 0:  # every outcome equal on both sides: no evidence either way
        return 0.0, 1.0
    z = diff / se
    return z, math.erfc(abs(z) / math.sqrt(2))


def ab_test(
    joined: pd.DataFrame,
    alpha: float = 0.05,
    min_outcomes: int = 30,
    variants: tuple[str, str] = ("champion", "challenger"),
) -> ABResult:
    """Compare the variants' accuracy on the served predictions whose outcome is known.

    ``joined`` is the prediction log with its ``label`` (``serving.outcomes``): the one
    join the drift check scores with, so both agree on which prediction was right.
    """
    served = joined["served"].astype(bool).to_numpy()
    outcomes = joined[served & joined[LABEL].notna().to_numpy()]
    summary: dict[str, VariantOutcomes] = {}
    for variant, rows in outcomes.groupby("variant", sort=True):
        correct = int((rows["prediction"].astype(float) == rows[LABEL]).sum())
        summary[str(variant)] = VariantOutcomes(
            variant=str(variant),
            model_versions=sorted(rows["model_version"].astype(str).unique()),
            outcomes=len(rows),
            correct=correct,
            accuracy=correct / len(rows),
            mean_probability=float(rows["probability"].mean()),
            positive_rate=float(rows[LABEL].mean()),
        )
    a, b = variants
    missing = [v for v in variants if summary.get(v) is None or summary[v].outcomes < min_outcomes]
    if missing:
        have = {v: summary[v].outcomes if v in summary else 0 for v in variants}
        return ABResult(
            variants=summary,
            compared=None,
            z=None,
            p_value=None,
            alpha=alpha,
            winner=None,
            verdict=f"not enough labelled outcomes yet (need {min_outcomes} each, have {have})",
        )
    z, p = two_proportion_z(
        summary[a].correct, summary[a].outcomes, summary[b].correct, summary[b].outcomes
    )
    winner = (b if z > 0 else a) if p < alpha else None
    verdict = (
        f"{winner} wins: accuracy {summary[winner].accuracy:.4f} vs "
        f"{summary[a if winner == b else b].accuracy:.4f}, p = {p:.3g} < {alpha}"
        if winner
        else f"no significant difference (p = {p:.3g} >= {alpha})"
    )
    return ABResult(
        variants=summary,
        compared=(a, b),
        z=z,
        p_value=p,
        alpha=alpha,
        winner=winner,
        verdict=verdict,
    )
