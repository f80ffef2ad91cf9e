"""Column drift with Evidently 0.7's default method choice and thresholds, from cached
reference statistics.

A ``DataDriftPreset`` run converts the whole dataset once per column, bins and plots every
column for its widgets, and recomputes the reference side on each run. The verdict needs
none of that: per column it needs the reference's non-null values (sorted, for the
Wasserstein distance and the bins), its unique values and counts, and its standard
deviation. Those are computed once per model version (:func:`reference_stats`, cached by
``mlsys_core.monitoring.reference``) and each check compares a current window with them,
columns in parallel. The method choice and every formula below mirror
``evidently/legacy/calculations/stattests`` (``registry._get_default_stattest`` and the
``ks``, ``chisquare``, ``z``, ``jensenshannon`` and ``wasserstein`` tests); the tests pin
per-column equality with a full ``DataDriftPreset`` run.

Where Evidently raises (a column empty after dropping nulls and infinities), the result is
an explicit ``insufficient_data`` row instead.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats
from scipy.spatial import distance

Kind = Literal["numerical", "categorical"]
# Evidently switches from tests (p-values) to distances above this many reference rows.
SMALL_REFERENCE_ROWS = 1_000
# Numerical columns with at most this many distinct values are treated as discrete.
DISCRETE_VALUES = 5
# Distinct values kept for a numerical reference column (counts for the discrete tests).
KEPT_VALUES = 20

# Evidently's display names (what ValueDrift reports as its method) and default thresholds.
METHODS: dict[str, tuple[str, float]] = {
    "ks": ("K-S p_value", 0.05),
    "chisquare": ("chi-square p_value", 0.05),
    "z": ("Z-test p_value", 0.05),
    "jensenshannon": ("Jensen-Shannon distance", 0.1),
    "wasserstein": ("Wasserstein distance (normed)", 0.1),
}


class ReferenceColumn(BaseModel):
    """What one reference column contributes to every later check."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: Kind
    rows: int = Field(description="Non-null, finite values.")
    nunique: int
    std: float | None = Field(default=None, description="Population std (numerical).")
    values: list[str] | list[float] | None = Field(
        default=None, description="Distinct values: always for categorical, when few for numbers."
    )
    counts: list[int] | None = None


class ReferenceStats(BaseModel):
    """Per-column reference statistics; ``sorted_values`` holds each numerical column's
    sorted non-null values (kept out of the JSON, saved as Parquet)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    rows: int
    columns: dict[str, ReferenceColumn]
    sorted_values: dict[str, np.ndarray] = Field(default_factory=dict, exclude=True)


class ColumnDrift(BaseModel):
    model_config = ConfigDict(frozen=True)

    column: str
    method: str
    score: float | None  # None when the column could not be checked
    threshold: float | None
    drifted: bool
    status: Literal["ok", "insufficient_data"] = "ok"
    reference_rows: int = 0
    current_rows: int = 0
    new_categories: list[str] = Field(
        default_factory=list, description="Current values the reference never had (capped)."
    )
    detail: str = ""

    def strength(self) -> float:
        """How far the evidence is past the threshold (above 1: drifted), so tests and
        distances rank together: threshold / p for a test, distance / threshold else."""
        if self.score is None or not self.threshold:
            return 0.0
        if "p_value" in self.method:
            return self.threshold / max(self.score, 1e-300)
        return self.score / self.threshold


def clean_numeric(values: pd.Series | np.ndarray) -> np.ndarray:
    """Finite float values, as Evidently keeps them (infinities count as missing)."""
    array = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64)
    return array[np.isfinite(array)]


def clean_categorical(values: pd.Series) -> pd.Series:
    """Non-null values as strings: categories compare by their text."""
    values = pd.Series(values)
    return values[values.notna()].astype(str)


def reference_column(name: str, kind: Kind, values: pd.Series) -> tuple[ReferenceColumn, object]:
    """One column's statistics, plus its sorted values for a numerical column."""
    if kind == "numerical":
        array = np.sort(clean_numeric(values))
        distinct, counts = np.unique(array, return_counts=True)
        few = len(distinct) <= KEPT_VALUES
        column = ReferenceColumn(
            name=name,
            kind=kind,
            rows=len(array),
            nunique=len(distinct),
            std=float(np.std(array)) if len(array) else None,
            values=[float(v) for v in distinct] if few else None,
            counts=[int(c) for c in counts] if few else None,
        )
        return column, array
    counts = clean_categorical(values).value_counts(sort=False)
    column = ReferenceColumn(
        name=name,
        kind=kind,
        rows=int(counts.sum()),
        nunique=len(counts),
        values=[str(v) for v in counts.index],
        counts=[int(c) for c in counts.to_numpy()],
    )
    return column, None


def reference_stats(
    frame: pd.DataFrame, numerical: list[str], categorical: list[str]
) -> ReferenceStats:
    """Statistics of the reference frame's numerical and categorical columns."""
    columns, arrays = {}, {}
    kinds: list[tuple[str, Kind]] = [(c, "numerical") for c in numerical]
    kinds += [(c, "categorical") for c in categorical]
    for name, kind in kinds:
        column, array = reference_column(name, kind, frame[name])
        columns[name] = column
        if array is not None:
            arrays[name] = array
    return ReferenceStats(rows=len(frame), columns=columns, sorted_values=arrays)


def choose_method(ref: ReferenceColumn, n_values: int) -> str:
    """Evidently's default test for a column (``registry._get_default_stattest``)."""
    if ref.rows <= SMALL_REFERENCE_ROWS:
        if ref.kind == "numerical" and n_values > DISCRETE_VALUES:
            return "ks"
        return "chisquare" if n_values > 2 else "z"  # noqa: PLR2004
    if ref.kind == "numerical":
        return "jensenshannon" if n_values <= DISCRETE_VALUES else "wasserstein"
    return "jensenshannon"


def _counts(ref: ReferenceColumn) -> dict:
    return dict(zip(ref.values or [], ref.counts or [], strict=True))


def _wasserstein(ref_sorted: np.ndarray, current: np.ndarray) -> float:
    """scipy's ``wasserstein_distance`` (the CDF integral), with the reference pre-sorted."""
    cur_sorted = np.sort(current)
    # Two sorted runs: the stable sort (timsort) merges them in linear time.
    every = np.concatenate([ref_sorted, cur_sorted])
    every.sort(kind="stable")
    deltas = np.diff(every)
    ref_cdf = ref_sorted.searchsorted(every[:-1], "right") / ref_sorted.size
    cur_cdf = cur_sorted.searchsorted(every[:-1], "right") / cur_sorted.size
    return float(np.sum(np.abs(ref_cdf - cur_cdf) * deltas))


def _z_p_value(ref_counts: dict, cur_counts: dict, ref_n: int, cur_n: int) -> float:
    keys = sorted(set(ref_counts) | set(cur_counts))
    if len(ref_counts) == 1 and len(cur_counts) == 1 and len(keys) == 1:
        return 1.0
    # Evidently codes the first sorted key as 0 and every other value as 1.
    p1 = (ref_n - ref_counts.get(keys[0], 0)) / ref_n
    p2 = (cur_n - cur_counts.get(keys[0], 0)) / cur_n
    pooled = (p1 * ref_n + p2 * cur_n) / (ref_n + cur_n)
    with np.errstate(all="ignore"):
        z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1.0 / ref_n + 1.0 / cur_n))
    return float(2 * (1 - stats.norm.cdf(np.abs(z))))


def _value_counts(ref: ReferenceColumn, current: np.ndarray | pd.Series) -> dict:
    if ref.kind == "numerical":
        distinct, counts = np.unique(current, return_counts=True)
        return {float(v): int(c) for v, c in zip(distinct, counts, strict=True)}
    counts = pd.Series(current).value_counts(sort=False)
    return dict(zip(counts.index, counts.to_numpy().tolist(), strict=True))


def _insufficient(ref: ReferenceColumn, cur_rows: int, why: str) -> ColumnDrift:
    return ColumnDrift(
        column=ref.name,
        method="none",
        score=None,
        threshold=None,
        drifted=False,
        status="insufficient_data",
        reference_rows=ref.rows,
        current_rows=cur_rows,
        detail=why,
    )


def column_drift(
    ref: ReferenceColumn, ref_sorted: np.ndarray | None, values: pd.Series
) -> ColumnDrift:
    """Drift of one current column against its reference statistics."""
    current = clean_numeric(values) if ref.kind == "numerical" else clean_categorical(values)
    cur_n = len(current)
    if ref.rows == 0:
        return _insufficient(ref, cur_n, "no non-null reference values")
    if cur_n == 0:
        return _insufficient(ref, cur_n, "no non-null current values")
    ref_counts = _counts(ref)
    cur_counts: dict | None = None
    if ref.kind == "numerical" and ref.nunique > DISCRETE_VALUES:
        n_values = ref.nunique + 1  # more than DISCRETE_VALUES whatever the current holds
    else:
        cur_counts = _value_counts(ref, current)
        n_values = len(set(ref_counts) | set(cur_counts))
    method = choose_method(ref, n_values)
    name, threshold = METHODS[method]
    if method == "ks":
        score = float(stats.ks_2samp(ref_sorted, current)[1])
        drifted = score <= threshold
    elif method == "wasserstein":
        norm = max(float(ref.std or 0.0), 0.001)
        score = _wasserstein(ref_sorted, current) / norm
        drifted = score >= threshold
    elif method == "z":
        score = _z_p_value(ref_counts, cur_counts or {}, ref.rows, cur_n)
        drifted = score < threshold
    elif method == "chisquare":
        cur_counts = cur_counts or {}
        keys = list(set(ref_counts) | set(cur_counts))
        k_norm = cur_n / ref.rows
        f_exp = [ref_counts.get(k, 0) * k_norm for k in keys]
        f_obs = [cur_counts.get(k, 0) for k in keys]
        with np.errstate(all="ignore"):
            score = float(stats.chisquare(f_obs, f_exp)[1])
        drifted = score < threshold
    else:  # jensenshannon
        # Numbers reach here only with at most DISCRETE_VALUES distinct values, so
        # get_binned_data never bins them (it bins above 20): both kinds use value shares.
        cur_counts = cur_counts or {}
        keys = list(set(ref_counts) | set(cur_counts))
        ref_p = np.array([ref_counts.get(k, 0) / ref.rows for k in keys])
        cur_p = np.array([cur_counts.get(k, 0) / cur_n for k in keys])
        score = float(distance.jensenshannon(ref_p, cur_p))
        drifted = score >= threshold
    new = sorted(set(cur_counts or {}) - set(ref_counts)) if ref.kind == "categorical" else []
    return ColumnDrift(
        column=ref.name,
        method=name,
        score=score,
        threshold=threshold,
        drifted=bool(drifted),
        reference_rows=ref.rows,
        current_rows=cur_n,
        new_categories=new[:20],
        detail=f"{len(new)} categories not in the reference" if new else "",
    )


def drift_columns(
    stats_: ReferenceStats, current: pd.DataFrame, max_workers: int | None = None
) -> list[ColumnDrift]:
    """Every reference column against the current frame, columns in parallel threads
    (numpy's sorts and histograms release the GIL). A column missing from the current frame
    is ``insufficient_data``."""

    def one(name: str) -> ColumnDrift:
        ref = stats_.columns[name]
        if name not in current:
            return _insufficient(ref, 0, "column missing from the current data")
        return column_drift(ref, stats_.sorted_values.get(name), current[name])

    names = list(stats_.columns)
    workers = max_workers or min(len(names), os.cpu_count() or 1) or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, names))
