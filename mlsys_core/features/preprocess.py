"""The fitted preprocessing shared by training and serving, so there is no train/serve skew.

It follows the scikit-learn contract, and its learned state round-trips through plain JSON
(``to_dict`` / ``from_dict``), so a saved model never needs unpickling. Which preprocessor a
dataset spec gets (this one, or the column preprocessor built on it) is decided in
:mod:`mlsys_core.features.columns`, the module above this one.
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

CALENDAR_CATEGORICAL = ("hour", "day_of_week")
# Up to this many rows, category codes come from a dict lookup; above, from pandas' hash
# tables. Both give the same codes (tested); the dict wins on a request's few rows.
_SMALL = 256


def _as_float(values: pd.Series, col: str) -> np.ndarray:
    """A numeric column as float64 with NaN for missing; text that is not a number and
    infinities are refused, as in ``fit``."""
    if pd.api.types.is_numeric_dtype(values.dtype):
        array = values.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        coerced = pd.to_numeric(values, errors="coerce")
        if (coerced.isna() & values.notna()).any():
            raise ValueError(f"column {col!r} has non-numeric values")
        array = coerced.to_numpy(dtype=np.float64, na_value=np.nan)
    if np.isinf(array).any():
        raise ValueError(f"column {col!r} has infinite values")
    return array


def calendar_parts(timestamps: pd.Series, parts: list[str], timezone: str) -> pd.DataFrame:
    """Calendar features of an event time, in local time so hours mean what people mean."""
    local = pd.DatetimeIndex(pd.to_datetime(timestamps, utc=True, cache=False)).tz_convert(timezone)
    known = ~np.asarray(local.isna())

    def as_code(values: pd.Index) -> np.ndarray:
        # Whole numbers as text ("13", never "13.0", even when a time in the batch is
        # missing), None where the time is missing.
        codes = np.full(len(values), None, dtype=object)
        codes[known] = np.asarray(values)[known].astype(np.int64).astype(str).tolist()
        return codes

    def angle() -> np.ndarray:
        return 2 * np.pi * (np.asarray(local.month, dtype=np.float64) - 1) / 12

    derived = {
        "hour": lambda: as_code(local.hour),
        "day_of_week": lambda: as_code(local.dayofweek),
        "month_sin": lambda: np.sin(angle()),
        "month_cos": lambda: np.cos(angle()),
    }
    return pd.DataFrame({f"cal_{p}": derived[p]() for p in parts}, index=timestamps.index)


class TabularPreprocessor(TransformerMixin, BaseEstimator):
    """Raw feature rows -> one float32 matrix: category codes first, then scaled numbers.

    Category code 0 means missing or unseen in training, so serving never fails on a new
    category. Numeric nulls are imputed with the training median, plus an indicator column
    for each numeric column that had nulls in training.
    """

    def __init__(
        self,
        numeric: list[str] | None = None,
        categorical: list[str] | None = None,
        timestamp: str | None = None,
        calendar: list[str] | None = None,
        timezone: str = "UTC",
        min_frequency: int = 1,
    ) -> None:
        self.numeric = numeric
        self.categorical = categorical
        self.timestamp = timestamp
        self.calendar = calendar
        self.timezone = timezone
        self.min_frequency = min_frequency

    # -- helpers -----------------------------------------------------------------------------
    def _required(self) -> list[str]:
        ts = [self.timestamp] if self.calendar else []
        return [*(self.categorical or []), *(self.numeric or []), *ts]

    def _expand(self, X: pd.DataFrame) -> tuple[pd.DataFrame, list[str], list[str]]:
        if not isinstance(X, pd.DataFrame):
            raise TypeError("TabularPreprocessor takes a pandas DataFrame of raw feature rows")
        if missing := [c for c in self._required() if c not in X.columns]:
            raise ValueError(f"missing feature columns: {missing}")
        cats, nums = list(self.categorical or []), list(self.numeric or [])
        frame = X[[*cats, *nums]].copy()
        if self.calendar:
            if not self.timestamp:
                raise ValueError("calendar features need a timestamp column")
            cal = calendar_parts(X[self.timestamp], list(self.calendar), self.timezone)
            frame = pd.concat([frame, cal], axis=1)
            for part in self.calendar:
                (cats if part in CALENDAR_CATEGORICAL else nums).append(f"cal_{part}")
        for col in nums:
            values = pd.to_numeric(frame[col], errors="coerce")
            if (values.isna() & frame[col].notna()).any():
                raise ValueError(f"column {col!r} has non-numeric values")
            if np.isinf(values.to_numpy(dtype="float64")).any():
                raise ValueError(f"column {col!r} has infinite values")
            frame[col] = values.astype("float64")
        return frame, cats, nums

    # -- sklearn contract --------------------------------------------------------------------
    def fit(self, X: pd.DataFrame, y: Any = None) -> Self:
        frame, cats, nums = self._expand(X)
        if len(frame) == 0:
            raise ValueError("cannot fit on an empty frame")
        self.categories_ = {}
        for col in cats:
            counts = frame[col].dropna().astype(str).value_counts()
            kept = counts[counts >= self.min_frequency]
            self.categories_[col] = sorted(kept.index.tolist())
        num = frame[nums]
        medians = num.median().fillna(0.0)
        filled = num.fillna(medians)
        stds = filled.std(ddof=0).replace(0.0, 1.0).fillna(1.0)
        self.categorical_columns_ = cats
        self.numeric_columns_ = nums
        self.medians_ = medians.astype(float).to_dict()
        self.means_ = filled.mean().fillna(0.0).astype(float).to_dict()
        self.scales_ = stds.astype(float).to_dict()
        self.indicator_columns_ = [c for c in nums if num[c].isna().any()]
        self.n_features_in_ = len(self._required())
        self.feature_names_in_ = np.array(self._required(), dtype=object)
        return self

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        # Column by column into preallocated blocks, without the copies and per-column
        # pandas calls of ``_expand``: serving transforms a few rows per request, where that
        # fixed cost, not the row count, is what a request waits for.
        check_is_fitted(self, "categories_")
        self._check_input(X)
        cal = (
            calendar_parts(X[self.timestamp], list(self.calendar), self.timezone)
            if self.calendar
            else None
        )

        def column(name: str) -> pd.Series:
            return cal[name] if cal is not None and name in cal.columns else X[name]

        cats, nums = self.categorical_columns_, self.numeric_columns_
        out = np.empty((len(X), len(cats) + len(nums) + len(self.indicator_columns_)), np.float32)
        for j, col in enumerate(cats):
            out[:, j] = self._codes(column(col), col)
        raw = np.empty((len(X), len(nums)), np.float64)
        for j, col in enumerate(nums):
            raw[:, j] = _as_float(column(col), col)
        medians, means, scales, indicators = self._vectors()
        missing = np.isnan(raw)
        filled = np.where(missing, medians, raw)
        out[:, len(cats) : len(cats) + len(nums)] = (filled - means) / scales
        out[:, len(cats) + len(nums) :] = missing[:, indicators]
        return out

    def unseen(self, X: pd.DataFrame) -> list[list[str]]:
        """Per row, the categorical inputs whose value the fit did not keep (never in the
        training rows, or rarer there than ``min_frequency``): scored as the unknown
        category. A caller's ``"2134"`` for a zip code trained as ``"02134"`` is one."""
        check_is_fitted(self, "categories_")
        out: list[list[str]] = [[] for _ in range(len(X))]
        for col in self.categorical_columns_:
            if col in (self.calendar or ()) or col not in X.columns:  # calendar parts: ours
                continue
            values = X[col]
            unknown = self._codes(values, col) == 0
            if not unknown.any():
                continue
            for i in np.flatnonzero(unknown & ~pd.isna(values.to_numpy(dtype=object))):
                out[i].append(col)
        return out

    def _check_input(self, X: pd.DataFrame) -> None:
        if not isinstance(X, pd.DataFrame):
            raise TypeError("TabularPreprocessor takes a pandas DataFrame of raw feature rows")
        if missing := [c for c in self._required() if c not in X.columns]:
            raise ValueError(f"missing feature columns: {missing}")
        if self.calendar and not self.timestamp:
            raise ValueError("calendar features need a timestamp column")

    def _codes(self, values: pd.Series, col: str) -> np.ndarray:
        """Code 1.. for a training category, 0 for missing or unseen (as ``fit`` counted)."""
        if len(values) > _SMALL:
            as_text = values.astype(str).where(values.notna(), None)
            return pd.Categorical(as_text, categories=self.categories_[col]).codes + 1
        lookup = self._lookups().get(col, {})
        return np.array(
            [0 if pd.isna(v) else lookup.get(str(v), 0) for v in values.tolist()], np.float32
        )

    def _lookups(self) -> dict[str, dict[str, int]]:
        cache = self.__dict__.get("_lookup_cache")
        if cache is None or cache[0] is not self.categories_:
            table = {c: {k: i + 1 for i, k in enumerate(v)} for c, v in self.categories_.items()}
            cache = (self.categories_, table)
            self.__dict__["_lookup_cache"] = cache
        return cache[1]

    def _vectors(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
        nums = self.numeric_columns_
        medians = np.array([self.medians_[c] for c in nums], np.float64)
        means = np.array([self.means_[c] for c in nums], np.float64)
        scales = np.array([self.scales_[c] for c in nums], np.float64)
        position = {c: j for j, c in enumerate(nums)}
        return medians, means, scales, [position[c] for c in self.indicator_columns_]

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "categories_")
        names = [*self.categorical_columns_, *self.numeric_columns_]
        names += [f"{c}_missing" for c in self.indicator_columns_]
        return np.array(names, dtype=object)

    @property
    def cardinalities_(self) -> list[int]:
        """Embedding table sizes: known categories plus code 0 for missing/unseen."""
        return [len(self.categories_[c]) + 1 for c in self.categorical_columns_]

    @property
    def n_numeric_(self) -> int:
        return len(self.numeric_columns_) + len(self.indicator_columns_)

    # -- persistence without pickle ----------------------------------------------------------
    _STATE = (
        "categories_",
        "categorical_columns_",
        "numeric_columns_",
        "medians_",
        "means_",
        "scales_",
        "indicator_columns_",
    )

    def to_dict(self) -> dict[str, Any]:
        check_is_fitted(self, "categories_")
        return {"params": self.get_params(), "state": {k: getattr(self, k) for k in self._STATE}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TabularPreprocessor:
        obj = cls(**data["params"])
        for key in cls._STATE:
            setattr(obj, key, data["state"][key])
        obj.n_features_in_ = len(obj._required())
        obj.feature_names_in_ = np.array(obj._required(), dtype=object)
        return obj
