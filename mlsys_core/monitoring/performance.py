"""How served predictions did, once their outcomes arrived: AUC and calibration per
period of prediction time. Pending predictions (``serving.outcomes``) are counted, never
scored."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from mlsys_core.registry.gate import auc
from mlsys_core.serving.outcomes import LABEL
from mlsys_core.training.metrics import expected_calibration_error

Period = Literal["D", "W"]


class PeriodPerformance(BaseModel):
    model_config = ConfigDict(frozen=True)

    period: str
    predictions: int
    labeled: int
    pending: int
    positive_rate: float | None
    mean_probability: float
    auc: float | None
    ece: float | None


def performance_over_time(joined: pd.DataFrame, period: Period = "D") -> list[PeriodPerformance]:
    """Per period of ``logged_at`` (UTC): counts, AUC (both classes needed) and ECE."""
    if joined.empty:
        return []
    logged = pd.to_datetime(joined["logged_at"], utc=True).dt.tz_localize(None)
    starts = logged.dt.to_period(period).dt.start_time
    out = []
    for start, rows in joined.groupby(starts.to_numpy(), sort=True):
        labeled = rows[rows[LABEL].notna()]
        y = labeled[LABEL].to_numpy(dtype=np.int8)
        p = labeled["probability"].to_numpy(dtype=np.float64)
        both = len(y) > 0 and 0 < y.sum() < len(y)
        out.append(
            PeriodPerformance(
                period=f"{pd.Timestamp(start):%Y-%m-%d}",
                predictions=len(rows),
                labeled=len(labeled),
                pending=len(rows) - len(labeled),
                positive_rate=float(y.mean()) if len(y) else None,
                mean_probability=float(rows["probability"].mean()),
                auc=float(auc(y, p)[0]) if both else None,
                ece=float(expected_calibration_error(y, p)) if len(y) else None,
            )
        )
    return out
