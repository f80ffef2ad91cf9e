"""A parity check a user can run against a live service: the same requests through the
service (online store, request-time joins) and through the training path (point-in-time
assembly from the lake), then the largest differences per input and per probability.

The requests are logged ones (each replayed with exactly the fields its client sent, from
the prediction log's ``sent_fields``) or rows of a feature set (sent with what a caller
knows: keys, event time, lookup keys, caller-only inputs). The offline side computes each
request's features at its own event time, as the feature set would have; a service whose
online store is as of another time shows that staleness here, on the views it affects.
"""

from __future__ import annotations

import math
from typing import Any

import httpx
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from mlsys_core.data.lake import Lake
from mlsys_core.features.assemble import SPLIT, assemble_features
from mlsys_core.serving.models import LoadedModel
from mlsys_core.serving.prediction_log import read_prediction_log
from mlsys_core.serving.schema import column_kinds
from mlsys_core.serving.sources import ServingPlan
from mlsys_core.spec import DatasetSpec
from mlsys_core.training.run import model_input_frame


class ParityError(ValueError):
    """The check cannot run (no service answer, no requests to replay)."""


class InputDifference(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    source: str
    compared: int
    mismatched: int  # missing on one side only, a different category, or a number off > tol
    largest: float | None  # numbers: the largest absolute difference where both have one


class ParityReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    model_name: str
    model_version: str
    requests: int
    inputs: list[InputDifference]
    largest_probability_difference: float
    mean_probability_difference: float
    watermarks: dict[str, str | None]

    def describe(self, top: int = 15) -> str:
        ranked = sorted(self.inputs, key=lambda d: (d.mismatched, d.largest or 0.0), reverse=True)
        # Columns as wide as what they hold: a source is named whole (a lookup by two keys).
        name_width = max([28, *(len(d.name) for d in ranked[:top])])
        source_width = max([26, *(len(d.source) for d in ranked[:top])])
        lines = [
            f"parity of {self.model_name} v{self.model_version} on {self.requests} requests: "
            f"largest |online - offline| probability {self.largest_probability_difference:.3g}"
            f" (mean {self.mean_probability_difference:.3g})",
            f"{'input':<{name_width}} {'source':<{source_width}} {'mismatched':>10} "
            f"{'largest diff':>13}",
        ]
        for d in ranked[:top]:
            largest = "" if d.largest is None else f"{d.largest:.3g}"
            lines.append(
                f"{d.name:<{name_width}} {d.source:<{source_width}} "
                f"{d.mismatched:>4}/{d.compared:<5} {largest:>13}"
            )
        if len(ranked) > top:
            rest = sum(1 for d in ranked[top:] if d.mismatched)
            lines.append(f"... {len(ranked) - top} more inputs ({rest} with mismatches)")
        if self.watermarks:
            lines.append("online store as of (offline features are at each request's time):")
            lines += [f"  {k}: {v or 'no time (a lookup)'}" for k, v in self.watermarks.items()]
        return "\n".join(lines)


def _value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def _as_request(row: dict[str, Any], fields: list[str], kinds: dict[str, str]) -> dict[str, Any]:
    out = {}
    for field in fields:
        value = _value(row.get(field))
        if kinds.get(field) == "integer" and isinstance(value, float) and value.is_integer():
            value = int(value)
        out[field] = value
    return out


def logged_requests(
    lake: Lake,
    spec: DatasetSpec,
    model_name: str,
    n: int,
    since: pd.Timestamp | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Up to ``n`` served requests of the log, each with exactly the fields it was sent."""
    log = read_prediction_log(lake, spec.name, since=since)
    if log.empty:
        raise ParityError(f"the prediction log of {spec.name!r} is empty: nothing to replay")
    log = log[(log["model_name"] == model_name) & log["served"].astype(bool)]
    if log.empty:
        raise ParityError(f"no logged request was served by {model_name}")
    log = log.sample(min(n, len(log)), random_state=seed)
    plan = ServingPlan(spec)
    kinds = column_kinds(spec)
    fallback = [*plan.required, *plan.request_keys, *plan.request_features]
    known = set(fallback) | set(spec.input_columns)
    out = []
    for row in log.to_dict(orient="records"):
        sent = row.get("sent_fields")
        fields = sent.split(",") if isinstance(sent, str) and sent else fallback
        record = _as_request(row, [f for f in fields if f in known and f in row], kinds)
        out.append({k: v for k, v in record.items() if v is not None or k in fields})
    return out


def feature_set_requests(
    frame: pd.DataFrame, spec: DatasetSpec, n: int, seed: int = 0
) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """``n`` rows of a feature set (its test split, when it has one) as a caller would send
    them, and the rows themselves (their features are the offline side)."""
    rows = frame[frame[SPLIT] == "test"] if (frame[SPLIT] == "test").any() else frame
    rows = rows.sample(min(n, len(rows)), random_state=seed).reset_index(drop=True)
    plan = ServingPlan(spec)
    fields = list(dict.fromkeys([*plan.required, *plan.request_keys, *plan.request_features]))
    kinds = column_kinds(spec)
    return [_as_request(r, fields, kinds) for r in rows.to_dict(orient="records")], rows


def offline_rows(
    requests: list[dict[str, Any]], spec: DatasetSpec, tables: dict[str, pd.DataFrame]
) -> pd.DataFrame:
    """The feature rows the training path assembles for ``requests``, at their event times:
    a request's own values for the inputs it sent (what the service uses too), the lake's
    point-in-time values for the rest."""
    base = pd.DataFrame(requests)
    for column in spec.base_columns:
        if column not in base.columns:
            base[column] = None
    if spec.event_timestamp:
        base[spec.event_timestamp] = pd.to_datetime(base[spec.event_timestamp], utc=True)
    kinds = column_kinds(spec)
    for column in spec.base_columns:
        label = spec.label.source is None and column == spec.label.column  # never sent
        if kinds.get(column) in ("number", "integer") or label:
            base[column] = pd.to_numeric(base[column], errors="coerce").astype("float64")
    rows = assemble_features(tables, spec, base=base[spec.base_columns])
    for i, request in enumerate(requests):  # a value the client sent wins, as in serving
        for column in spec.input_columns:
            if column in request and column not in spec.base_columns:
                rows.at[i, column] = request[column]
    return rows


def predict_online(
    url: str, requests: list[dict[str, Any]], batch: int = 100, timeout: float = 60.0
) -> list[dict[str, Any]]:
    """The service's predictions of ``requests``, with the inputs it used (?explain=true)."""
    out: list[dict[str, Any]] = []
    with httpx.Client(base_url=url.rstrip("/"), timeout=timeout) as client:
        for start in range(0, len(requests), batch):
            body = {"records": requests[start : start + batch]}
            res = client.post("/predict", params={"explain": "true"}, json=body)
            if res.status_code != 200:
                raise ParityError(f"{url}/predict answered {res.status_code}: {res.text[:300]}")
            out += res.json()["predictions"]
    return out


def compare(
    spec: DatasetSpec,
    online: list[dict[str, Any]],
    offline: pd.DataFrame,
    model: LoadedModel,
    watermarks: dict[str, str | None],
    tolerance: float = 1e-9,
) -> ParityReport:
    """Per input and per probability, how the service's answers differ from the offline
    path's (the same model version applied to the offline rows)."""
    if len(online) != len(offline):
        raise ParityError(f"{len(online)} online answers for {len(offline)} offline rows")
    _, offline_p = model.predict(model_input_frame(offline, spec))
    online_p = np.array([p["probability"] for p in online], np.float64)
    plan = ServingPlan(spec)
    kinds = column_kinds(spec)
    inputs = []
    for column in spec.input_columns:
        mismatched, largest = 0, None
        for answer, expected in zip(online, offline[column].tolist(), strict=True):
            have, want = _value(answer["inputs"].get(column)), _value(expected)
            if have is None or want is None:
                mismatched += (have is None) != (want is None)
            elif kinds.get(column) in ("number", "integer"):
                diff = abs(float(have) - float(want))
                largest = diff if largest is None else max(largest, diff)
                mismatched += diff > tolerance * max(1.0, abs(float(want)))
            elif kinds.get(column) == "time":
                mismatched += pd.Timestamp(have) != pd.Timestamp(want)
            else:
                mismatched += str(have) != str(want)
        source = plan.inputs[column]
        inputs.append(
            InputDifference(
                name=column,
                source=source.note,
                compared=len(online),
                mismatched=mismatched,
                largest=largest,
            )
        )
    diff = np.abs(online_p - offline_p)
    return ParityReport(
        model_name=model.name,
        model_version=model.version,
        requests=len(online),
        inputs=inputs,
        largest_probability_difference=float(diff.max(initial=0.0)),
        mean_probability_difference=float(diff.mean()) if len(diff) else 0.0,
        watermarks=watermarks,
    )
