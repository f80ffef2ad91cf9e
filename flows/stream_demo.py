"""The real-time demo a person can watch (``mlsys stream-demo``): with a champion served,
replay a day of a dataset's events at an accelerated clock, run the stream job on each
micro-batch (the functions the ``stream-features`` flow's tasks call: ``run_feature_batch``
and ``write_updates`` into the configured online store), and ask ``/predict`` about one
departure after each, printing its probability as the day's events arrive, and how long
each micro-batch took from its commit to the log to being visible through ``/predict``.

The stream runs under its own job name (a fresh lake table per run), starting from the
lake's clean rows from before the day (as the ``stream-features`` flow starts from them), so
its windows hold what the offline store's do. Its writes go over the store's views even when
they are materialized as of a later time (the demo replays the past).
"""

from __future__ import annotations

import tempfile
import time
import uuid
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from mlsys_core.config import Settings
from mlsys_core.data.lake import Lake
from mlsys_core.data.sources import read_source
from mlsys_core.datasets import SpecRef, spec_or_default
from mlsys_core.features.online import online_sources, open_online_store
from mlsys_core.serving.sources import ServingPlan
from mlsys_core.spec import DatasetSpec
from mlsys_core.spec.definitions import WindowView
from mlsys_core.stream.features import clean_seed, feature_stream_job, run_feature_batch
from mlsys_core.stream.online import stream_key_kinds, write_updates
from mlsys_core.stream.replay import source_events, write_segments


@dataclass
class DemoReport:
    request: dict[str, Any]
    probabilities: list[float] = field(default_factory=list)
    watermarks: list[str] = field(default_factory=list)
    freshness_s: list[float] = field(default_factory=list)
    interval_s: float = 0.0

    def summary(self) -> str:
        if not self.freshness_s:
            return "no micro-batch was published"
        f = np.array(self.freshness_s)
        goal = self.interval_s + 1.0
        return (
            f"freshness (event commit -> visible through /predict) over {len(f)} micro-batches: "
            f"p50 {np.percentile(f, 50):.2f} s, p95 {np.percentile(f, 95):.2f} s, "
            f"max {f.max():.2f} s (goal: within {goal:.1f} s, one interval + 1 s; "
            f"{(f <= goal).mean():.0%} met it)\n"
            f"probability {self.probabilities[0]:.3f} -> {self.probabilities[-1]:.3f} "
            f"(min {min(self.probabilities):.3f}, max {max(self.probabilities):.3f})"
        )


def _day_rows(spec: DatasetSpec, source: str, timestamp: str, day: str) -> pd.DataFrame:
    table = read_source(spec.source(source))
    stamps = pd.to_datetime(table[timestamp], utc=True)
    start = pd.Timestamp(day, tz="UTC")
    return table[(stamps >= start) & (stamps < start + pd.Timedelta(days=1))]


def _pick(rows: pd.DataFrame, spec: DatasetSpec, entity: list[str], timestamp: str) -> pd.Series:
    """A departure late in the day at the busiest entity of the first real-time view."""
    stamps = pd.to_datetime(rows[timestamp], utc=True)
    late = rows[stamps >= stamps.min() + (stamps.max() - stamps.min()) * 0.75]
    late = late.dropna(subset=[*spec.entity_keys, *entity])
    busiest = rows.groupby(entity).size().idxmax()
    busiest = busiest if isinstance(busiest, tuple) else (busiest,)
    at = late[(late[entity] == list(busiest)).all(axis=1)]
    return (at if len(at) else late).iloc[0]


def _record(row: pd.Series, spec: DatasetSpec) -> dict[str, Any]:
    plan = ServingPlan(spec)
    fields = dict.fromkeys([*spec.entity_keys, *plan.request_keys, spec.event_timestamp or ""])
    out = {}
    for name in fields:
        if not name or name not in row.index or pd.isna(row[name]):
            continue
        value = row[name]
        if name == spec.event_timestamp:
            value = pd.Timestamp(value).tz_convert("UTC").isoformat()
        out[name] = value.item() if hasattr(value, "item") else value
    return out


def run_stream_demo(  # noqa: PLR0915 - one loop a person reads top to bottom
    spec_ref: SpecRef | None,
    url: str,
    day: str,
    speed: float = 1800.0,
    interval_s: float = 2.0,
    max_steps: int | None = None,
    out: Any = print,
) -> DemoReport:
    """Replay ``day`` (UTC) of the dataset's first event stream against the service at
    ``url``; ``speed``: event seconds per wall second."""
    settings = Settings()
    spec = spec_or_default(spec_ref, settings.dataset)
    base = feature_stream_job(spec, max_segments=10_000)
    job = base.model_copy(update={"name": f"{base.name}_demo_{uuid.uuid4().hex[:8]}"})
    stream = job.stream
    kinds = stream_key_kinds(online_sources(spec), job)
    store = open_online_store(settings.root, settings.online_store)
    lake = Lake(settings.lake_dir)
    timed = [v for v in job.views if isinstance(v, WindowView) and v.ttl] or list(job.views)
    # Open events (flights that should have left and have not) show a delay building first.
    shown = next((v for v in timed if isinstance(v, WindowView) and v.closes), timed[0])
    rows = _day_rows(spec, stream.source, stream.timestamp, day)
    if rows.empty:
        raise ValueError(f"no {stream.source} rows on {day}")
    departure = _pick(rows, spec, shown.entity.join_keys, stream.timestamp)
    request = _record(departure, spec)
    when = pd.Timestamp(request[spec.event_timestamp]) if spec.event_timestamp else None
    events = source_events(stream, rows)
    times = pd.to_datetime(events[stream.time_column], utc=True)
    clock = pd.Timestamp(day, tz="UTC")
    # Up to the departure's own time: later, the store would know what its prediction may not.
    end = min(times.max(), when) if when is not None else times.max()
    report = DemoReport(request, interval_s=interval_s)
    out(f"replaying {len(events)} events of {day} at {speed:g}x; asking about {request}")
    out(f"showing {shown.name} {shown.features} for {shown.entity.join_keys}")
    step_clock = pd.Timedelta(seconds=interval_s * speed)
    seed = partial(clean_seed, lake, job)  # the lake's rows before the day: whole windows
    sent = 0
    with tempfile.TemporaryDirectory() as folder, httpx.Client(base_url=url, timeout=30) as http:
        log = Path(folder)
        step = 0
        next_tick = time.monotonic()
        while clock < end and (max_steps is None or step < max_steps):
            next_tick += interval_s
            clock += step_clock
            due = int((times <= clock).sum())
            if due > sent:
                write_segments(events.iloc[sent:due], log, due - sent, start=step)
                committed = time.monotonic()
                batch = run_feature_batch(job, log, lake, seed=seed)
                if batch.outcome.seeded:
                    out(f"started from {batch.outcome.seeded} {stream.source} rows before {day}")
                write_updates(store, lake, job, batch.updates, kinds, rewind=True)
                sent = due
                mark = pd.Timestamp(batch.outcome.watermark)
                answer = _visible(http, request, shown.name, when, mark, interval_s + 5)
                if answer is not None:
                    report.freshness_s.append(time.monotonic() - committed)
                    report.probabilities.append(answer["probability"])
                    report.watermarks.append(mark.isoformat())
                    values = {f: answer["inputs"].get(f) for f in shown.features}
                    out(
                        f"{clock:%H:%M} events {sent:>5}  watermark {mark:%H:%M}  "
                        f"p={answer['probability']:.3f}  {_fmt(values)}"
                        f"{'  (stale: imputed)' if shown.name in answer['stale'] else ''}  "
                        f"visible {report.freshness_s[-1]:.2f} s after commit"
                    )
                else:
                    out(f"{clock:%H:%M} watermark {mark:%H:%M} not visible within the wait")
            step += 1
            time.sleep(max(0.0, next_tick - time.monotonic()))
    out(report.summary())
    return report


def _visible(
    http: httpx.Client,
    request: dict[str, Any],
    view: str,
    when: pd.Timestamp | None,
    mark: pd.Timestamp,
    wait_s: float,
) -> dict[str, Any] | None:
    """The first /predict answer that read ``view`` as of ``mark`` (its age says which
    watermark it read: request time minus age); None if none within ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        response = http.post("/predict", json=request, params={"explain": "true"})
        response.raise_for_status()
        (answer,) = response.json()["predictions"]
        age = (answer.get("feature_ages") or {}).get(view)
        if age is None or when is None:
            return answer
        seen = when - pd.Timedelta(seconds=age)
        if abs((seen - mark).total_seconds()) < 1e-3:
            return answer
        time.sleep(0.02)
    return None


def _fmt(values: dict[str, Any]) -> str:
    return " ".join(
        f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
    )
