"""Point-in-time joins: each left row sees only right rows available at its event time.

The right table is indexed once (:class:`AsOfIndex`): its rows sorted by (key code, time
available) into one int64 composite key. A left row's match is then two binary searches,
so a table streamed through in batches pays the sort once, not per batch, and no join
materializes more than one row per left row.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd

from mlsys_core.features.keys import KeyIndex, take_rows
from mlsys_core.features.offline import NAT, to_ns


class AsOfIndex:
    """A right table prepared for as-of joins on ``on`` (left key -> right key)."""

    def __init__(
        self,
        right: pd.DataFrame,
        *,
        on: dict[str, str],
        right_time: str,
        columns: dict[str, str],
        availability_lag: timedelta = timedelta(0),
    ) -> None:
        self.on = on
        self.columns = columns
        self.lag_ns = pd.Timedelta(availability_lag).value
        observed = to_ns(right[right_time])
        self.keys, codes = KeyIndex.fit(right, list(on.values()))
        # A row without a time is never available, and one with a null key never found.
        keep = np.flatnonzero((observed != NAT) & (codes >= 0))
        code = codes[keep]
        self.times, rank = np.unique(observed[keep], return_inverse=True)
        self.stride = len(self.times) + 1
        composite = code * self.stride + rank
        order = np.argsort(composite, kind="stable")  # ties keep the right table's order
        self.sorted_keys = composite[order]
        self.rows = keep[order]  # positions in ``right``
        self.observed = observed[self.rows]
        self.values = {out: right[col] for col, out in columns.items()}

    def positions(
        self, left: pd.DataFrame, left_time: str, tolerance: timedelta | None = None
    ) -> np.ndarray:
        """Per left row, the right row it gets (the newest available at its time, the last
        in table order among equal times), or -1."""
        if left[left_time].isna().any():
            raise ValueError(f"point-in-time join: {left_time!r} has nulls in the left table")
        code = self.keys.encode(left, list(self.on))
        ts = to_ns(left[left_time])
        # Right rows available at ts: observed + lag <= ts, i.e. observed <= ts - lag.
        upto = np.searchsorted(self.times, ts - self.lag_ns, side="right")
        safe = np.maximum(code, 0)
        pos = np.searchsorted(self.sorted_keys, safe * self.stride + upto, side="left") - 1
        clipped = np.maximum(pos, 0)
        found = (code >= 0) & (pos >= 0)
        if len(self.sorted_keys):
            found &= self.sorted_keys[clipped] // self.stride == safe
        else:
            found[:] = False
        if tolerance is not None and len(self.rows):
            # Age is measured from the observation, not from when it became available.
            found &= ts - self.observed[clipped] <= pd.Timedelta(tolerance).value
        return np.where(found, self.rows[clipped] if len(self.rows) else 0, -1)

    def join(
        self,
        left: pd.DataFrame,
        left_time: str,
        tolerance: timedelta | None = None,
        copy: bool = True,
    ) -> pd.DataFrame:
        pos = self.positions(left, left_time, tolerance)
        return take_rows(left, self.values, pos, copy=copy)


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
    index: AsOfIndex | None = None,
    copy: bool = True,
) -> pd.DataFrame:
    """Attach, per left row, the newest right row with ``right_time + lag <= left_time``.

    Rows with no such right row, or only one observed more than ``tolerance`` before the
    left time (measured from ``right_time``, not from when it became available), get nulls.
    Left row order and count are preserved. ``index``: ``right`` already prepared (a caller
    joining many left batches to one right table prepares it once). ``copy=False``: the
    result takes ``left``'s arrays (see :func:`~mlsys_core.features.keys.with_columns`).
    """
    if tolerance is not None and tolerance < availability_lag:
        raise ValueError("tolerance must be at least the availability lag, or nothing matches")
    if index is None:
        index = AsOfIndex(
            right, on=on, right_time=right_time, columns=columns, availability_lag=availability_lag
        )
    return index.join(left, left_time, tolerance, copy=copy)
