"""Records to model inputs and predictions: the per-request pipeline, without HTTP.

1. validated records become columns (plain lists: cheaper than a frame per record);
2. inputs the service finds (lookups, as-of joins, feature views) that a record does not
   carry are read from the online store by key (``ServingPlan.find``), and each record's
   misses and missing inputs are counted;
3. the model input frame gets the types training used (``model_input_frame``), and the
   version's pyfunc model applies the fitted preprocessing and the network;
4. postprocess: Platt calibration, threshold, confidence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from mlsys_core.features.online import OnlineStoreBase
from mlsys_core.serving.models import LoadedModel
from mlsys_core.serving.schema import column_kinds, event_keys
from mlsys_core.serving.sources import ServingPlan
from mlsys_core.spec import DatasetSpec

Columns = dict[str, list[Any]]
# Per-record bookkeeping carried in the columns next to the fields (never a field name:
# fields are spec columns, which cannot start with an underscore).
SENT = "__sent__"  # the fields the record carried, as the client sent them
MISSES = "__online_misses__"  # online sources with no row for the record's key
IMPUTED = "__imputed__"  # model inputs that reached the model missing
AGES = "__feature_ages__"  # per feature view read: the age of its values at request time, s
STALE = "__stale__"  # feature views whose values were older than their ttl (so missing)
EXPLAIN = "__explain__"  # answer with the inputs (?explain=true)
# The prediction log's audit columns.
LOG_AUDIT_COLUMNS = ["n_imputed", "imputed_inputs", "online_misses", "sent_fields"]


def _missing(value: Any) -> bool:
    if value is None or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if _missing(value):
        return None
    if isinstance(value, datetime | pd.Timestamp):
        return pd.Timestamp(value).isoformat()
    return value


class Scorer:
    """What one dataset spec needs to turn records into a model input and a log row."""

    def __init__(
        self,
        spec: DatasetSpec,
        store: OnlineStoreBase | None = None,
        threshold: float = 0.5,
        plan: ServingPlan | None = None,
        report_imputed: bool = False,
    ) -> None:
        self.spec = spec
        self.threshold = threshold
        self.store = store
        self.plan = plan or ServingPlan(spec, online=store is not None)
        self.report_imputed = report_imputed
        self.inputs = list(spec.input_columns)
        kinds = column_kinds(spec)
        self.numbers = {c for c, k in kinds.items() if k in ("number", "integer")}
        self.times = {c for c, k in kinds.items() if k == "time"}
        self.keys = event_keys(spec)
        self.lookup = self.plan.request_keys
        self.columns = list(dict.fromkeys([*self.keys, *self.lookup, *self.inputs]))
        # The request's own fields, all of them: keys, event time, lookup keys, features.
        self.log_columns = self.columns
        found = set(self.plan.found) if store is not None else set()
        self.found = [c for c in self.inputs if c in found]
        # The base columns a request frame holds for the joins: everything not found.
        self.request_columns = [c for c in self.columns if c not in found]

    def columns_of(self, records: Sequence[BaseModel]) -> Columns:
        """The records as columns, with absent found inputs looked up online, and each
        record's sent fields, online misses and missing inputs."""
        dicts = [r.__dict__ for r in records]
        data = {c: [d[c] for d in dicts] for c in self.columns}
        sent = [r.__pydantic_fields_set__ for r in records]
        data[SENT] = [sorted(s) for s in sent]
        data[MISSES] = [[] for _ in records]
        data[AGES] = [{} for _ in records]
        data[STALE] = [[] for _ in records]
        if self.found and self.store is not None:
            values, misses, ages, stale = self.plan.find(self.store, self.request_frame(data))
            for name, column in values.items():
                # Only inputs the record leaves out: an explicit null is the client's
                # answer ("no value"), imputed like a missing value in training.
                target = data[name]
                for i, value in enumerate(column):
                    if name not in sent[i]:
                        target[i] = value
            data[MISSES] = misses
            data[AGES] = ages
            data[STALE] = stale
        data[IMPUTED] = [
            [c for c in self.inputs if _missing(data[c][i])] for i in range(len(records))
        ]
        data[EXPLAIN] = [False] * len(records)
        return data

    def request_frame(self, data: Columns) -> pd.DataFrame:
        """The request's base columns, typed as the training rows were (numbers as float64,
        text as objects, times as UTC)."""
        return pd.DataFrame({c: self._typed(c, data[c], naive=False) for c in self.request_columns})

    def model_frame(
        self, data: Columns, rows: np.ndarray | list[int] | None = None
    ) -> pd.DataFrame:
        """The model's input rows, typed as at training: floats with NaN, text or None,
        the event time as naive UTC (what the MLflow signature declares)."""

        def pick(values: list[Any]) -> list[Any]:
            return values if rows is None else [values[i] for i in rows]

        return pd.DataFrame(
            {col: self._typed(col, pick(data[col]), naive=True) for col in self.inputs}
        )

    def _typed(self, col: str, values: list[Any], naive: bool) -> Any:
        if col in self.times:
            times = pd.to_datetime(values, utc=True)
            if not isinstance(times, pd.DatetimeIndex):
                times = pd.DatetimeIndex(times)
            times = times.as_unit("ns")
            return times.tz_localize(None) if naive else times
        if col in self.numbers:
            return np.array([np.nan if _missing(v) else v for v in values], np.float64)
        return np.array([None if _missing(v) else v for v in values], dtype=object)

    def predictions(
        self, model: LoadedModel, frame: pd.DataFrame, variant: str, request_ids: list[str]
    ) -> tuple[list[dict[str, Any] | str], np.ndarray]:
        """Response entries for ``frame``'s rows, and their calibrated probabilities.

        A row without a finite probability (a feature far outside anything seen in
        training can overflow the network) gets the reason instead of an entry.
        """
        raw, calibrated = model.predict(frame)
        predicted = calibrated >= self.threshold
        confidence = np.where(predicted, calibrated, 1.0 - calibrated)
        entries = [
            {
                "request_id": rid,
                "prediction": int(label),
                "probability": float(p),
                "raw_probability": float(r),
                "confidence": float(c),
                "model_name": model.name,
                "model_version": model.version,
                "variant": variant,
            }
            for rid, label, p, r, c in zip(
                request_ids, predicted, calibrated, raw, confidence, strict=True
            )
        ]
        finite = np.isfinite(raw)
        if not finite.all():
            for i in np.flatnonzero(~finite):
                entries[i] = (  # type: ignore[call-overload]
                    "no finite probability (a feature value far outside the training data?)"
                )
        return entries, calibrated  # type: ignore[return-value]

    def annotate(
        self,
        entries: list[dict[str, Any] | str],
        data: Columns,
        rows: list[int],
        unseen: list[list[str]],
    ) -> None:
        """Add the imputed count (when reported) and, for ?explain=true, what the model saw."""
        for entry, i, new in zip(entries, rows, unseen, strict=True):
            if isinstance(entry, str):
                continue
            explain = data[EXPLAIN][i]
            if self.report_imputed or explain:
                entry["imputed_inputs"] = len(data[IMPUTED][i])
            if explain:
                entry["imputed"] = list(data[IMPUTED][i])
                entry["online_misses"] = list(data[MISSES][i])
                entry["feature_ages"] = dict(data[AGES][i])
                entry["stale"] = list(data[STALE][i])
                entry["unseen"] = list(new)
                entry["inputs"] = {c: _json_value(data[c][i]) for c in self.inputs}

    def log_block(
        self,
        data: Columns,
        rows: np.ndarray | list[int],
        request_ids: list[str],
        model: LoadedModel,
        variant: str,
        served: bool,
        probability: np.ndarray,
        logged_at: datetime | None = None,
    ) -> Columns:
        """Prediction-log rows as plain columns; ``log_frame`` types many blocks at once
        (one frame per flush, not one per request, keeps the writer light on the GIL)."""
        n = len(rows)
        probability = np.asarray(probability, np.float64)
        out: Columns = {
            "request_id": list(request_ids),
            "logged_at": [logged_at or datetime.now(UTC)] * n,
            "model_name": [model.name] * n,
            "model_version": [model.version] * n,
            "variant": [variant] * n,
            "served": [served] * n,
            "probability": probability.tolist(),
            "prediction": (probability >= self.threshold).astype(int).tolist(),
        }
        for col in self.log_columns:
            values = data[col]
            out[col] = [values[i] for i in rows]
        imputed = [data[IMPUTED][i] for i in rows]
        out["n_imputed"] = [len(x) for x in imputed]
        out["imputed_inputs"] = [",".join(x) for x in imputed]
        out["online_misses"] = [",".join(data[MISSES][i]) for i in rows]
        out["sent_fields"] = [",".join(data[SENT][i]) for i in rows]
        return out

    def log_frame(self, blocks: list[Columns]) -> pd.DataFrame:
        """Blocks of ``log_block`` as one typed frame (the ``prediction_log`` contract: meta
        columns, the request's fields (keys, event time, lookup keys) and every model input
        as the model saw it, then the audit: how many and which inputs were missing, which
        online sources missed, which fields the client sent)."""
        merged = {c: [v for b in blocks for v in b[c]] for c in blocks[0]} if blocks else {}
        if not merged:
            return pd.DataFrame()
        out: dict[str, Any] = {
            "request_id": merged["request_id"],
            "logged_at": pd.to_datetime(merged["logged_at"], utc=True),
            "model_name": merged["model_name"],
            "model_version": merged["model_version"],
            "variant": merged["variant"],
            "served": np.array(merged["served"], bool),
            "probability": np.array(merged["probability"], np.float64),
            "prediction": np.array(merged["prediction"], np.int64),
        }
        for col in self.log_columns:
            out[col] = self._typed(col, merged[col], naive=False)
        out["n_imputed"] = np.array(merged["n_imputed"], np.int64)
        for col in LOG_AUDIT_COLUMNS[1:]:
            out[col] = np.array(merged[col], dtype=object)
        return pd.DataFrame(out)

    def log_rows(self, *args: Any, **kwargs: Any) -> pd.DataFrame:
        """One block of log rows as a frame."""
        return self.log_frame([self.log_block(*args, **kwargs)])
