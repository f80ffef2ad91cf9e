"""Point-in-time joins: each left row sees only right rows available at its event time."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd

_ROW = "__row__"
_AVAILABLE = "__available_at__"


def point_in_time_join(
    left: pd.DataFrame,
    right: pd.DataFrame,
    *,
    on: dict[str, str],
    left_time: str,
    right_time: str,
    columns: dict[str, str],
    tolerance: timedelta | None = None,
    availability_lag: timedelta = timedelta(0),
) -> pd.DataFrame:
    """Attach, per left row, the newest right row with ``right_time + lag <= left_time``.

    Rows with no such right row, or only one observed more than ``tolerance`` before the
    left time (measured from ``right_time``, not from when it became available), get nulls.
    Left row order and count are preserved.
    """
    if tolerance is not None and tolerance < availability_lag:
        raise ValueError("tolerance must be at least the availability lag, or nothing matches")
    if left[left_time].isna().any():
        raise ValueError(f"point-in-time join: {left_time!r} has nulls in the left table")
    right_keys = list(on.values())
    r = right[[*right_keys, right_time, *columns]].rename(columns=columns)
    r = r.rename(columns={rk: lk for lk, rk in on.items()})
    r[_AVAILABLE] = r.pop(right_time) + availability_lag
    r = r.dropna(subset=[_AVAILABLE]).sort_values(_AVAILABLE, kind="stable")
    lhs = left.assign(**{_ROW: range(len(left))}).sort_values(left_time, kind="stable")
    joined = pd.merge_asof(
        lhs,
        r,
        left_on=left_time,
        right_on=_AVAILABLE,
        by=list(on),
        direction="backward",
        allow_exact_matches=True,
        # merge_asof measures from the availability time; the age limit is on observations.
        tolerance=pd.Timedelta(tolerance - availability_lag) if tolerance is not None else None,
    )
    joined = joined.sort_values(_ROW).drop(columns=[_ROW, _AVAILABLE])
    joined.index = left.index
    return joined
