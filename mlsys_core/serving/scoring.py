"""Records to model inputs and predictions: the per-request pipeline, without HTTP.

1. validated records become columns (plain lists: cheaper than a frame per record);
2. feature-store features a record does not carry are read from the online store by entity;
3. the model input frame gets the types training used (``model_input_frame``), and the
   version's pyfunc model applies the fitted preprocessing and the network;
4. postprocess: Platt calibration, threshold, confidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from mlsys_core.features.online import OnlineStore
from mlsys_core.serving.models import LoadedModel
from mlsys_core.serving.schema import column_kinds, event_keys, lookup_keys
from mlsys_core.spec import DatasetSpec

Columns = dict[str, list[Any]]


class Scorer:
    """What one dataset spec needs to turn records into a model input and a log row."""

    def __init__(
        self, spec: DatasetSpec, store: OnlineStore | None = None, threshold: float = 0.5
    ) -> None:
        self.spec = spec
        self.threshold = threshold
        self.store = store
        self.inputs = list(spec.input_columns)
        kinds = column_kinds(spec)
        self.numbers = {c for c, k in kinds.items() if k in ("number", "integer")}
        self.times = {c for c, k in kinds.items() if k == "time"}
        self.keys = event_keys(spec)
        self.lookup = lookup_keys(spec)
        self.columns = list(dict.fromkeys([*self.keys, *self.lookup, *self.inputs]))
        self.log_columns = list(dict.fromkeys([*self.keys, *self.inputs]))
        served = set(store.feature_names()) if store is not None else set()
        self.online = [f for f in spec.view_features if f in served and f in self.inputs]
        self.entity_fields = list(
            dict.fromkeys(k for v in spec.feature_views for k in v.entity.join_keys)
        )

    def columns_of(self, records: Sequence[BaseModel]) -> Columns:
        """The records as columns, with absent feature-store features looked up online."""
        dicts = [r.__dict__ for r in records]
        data = {c: [d[c] for d in dicts] for c in self.columns}
        if self.online and self.store is not None:
            self._fill_online(data, records)
        return data

    def _fill_online(self, data: Columns, records: Sequence[BaseModel]) -> None:
        # Only features the record leaves out: an explicit null is the client's answer
        # ("no value"), imputed like a missing value in training.
        for i, record in enumerate(records):
            given = record.__pydantic_fields_set__
            needed = [f for f in self.online if f not in given]
            if not needed:
                continue
            entity = {k: data[k][i] for k in self.entity_fields}
            for name, value in self.store.get_features(entity, needed).items():  # type: ignore[union-attr]
                data[name][i] = value

    def model_frame(self, data: Columns, rows: np.ndarray | None = None) -> pd.DataFrame:
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
            return times.tz_localize(None) if naive else times
        if col in self.numbers:
            return np.array([np.nan if v is None else v for v in values], np.float64)
        return np.array(values, dtype=object)

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
        return out

    def log_frame(self, blocks: list[Columns]) -> pd.DataFrame:
        """Blocks of ``log_block`` as one typed frame (the ``prediction_log`` contract: meta
        columns, entity keys, event time and every model input as the model saw it)."""
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
        return pd.DataFrame(out)

    def log_rows(self, *args: Any, **kwargs: Any) -> pd.DataFrame:
        """One block of log rows as a frame."""
        return self.log_frame([self.log_block(*args, **kwargs)])
