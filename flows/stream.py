"""Real-time features: drain a dataset's event log in micro-batches, keeping its window
views as the offline store computes them, as of the stream's watermark."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from flows.embedded import flow
from mlsys_core.config import Settings
from mlsys_core.datasets import SpecRef, spec_or_default
from mlsys_core.stream.features import FeatureBatchOutcome, event_log_dir, feature_stream_job
from tasks.metrics import metered
from tasks.stream import feature_micro_batch


@flow(name="stream-features", log_prints=True)
@metered(rows=lambda r: sum(b.events_in for b in r))
def stream_features(
    spec: SpecRef | None = None,
    stream: str | None = None,
    log_dir: str | None = None,
    max_batches: Annotated[int, Field(ge=1, le=100_000)] = 1000,
    max_segments: Annotated[int, Field(ge=1, le=100_000)] = 100,
    flush: bool = False,
) -> list[FeatureBatchOutcome]:
    """Run micro-batches of one of the dataset's event streams (default: its first) until
    the log holds nothing new; the log defaults to ``<state>/events/<dataset>/<stream>``.

    ``flush`` moves the watermark to the newest event at the end: for a bounded replay.
    """
    settings = Settings()
    dataset = spec_or_default(spec, settings.dataset)
    job = feature_stream_job(dataset, stream, max_segments)
    log = log_dir or str(event_log_dir(settings.root, dataset.name, job.stream.name))
    outcomes = []
    for _ in range(max_batches):
        outcome = feature_micro_batch(job, log, settings)
        if not outcome.segments:
            break
        outcomes.append(outcome)
        print(
            f"{len(outcome.segments)} segments, {outcome.events_in} events "
            f"({outcome.late} late, {outcome.invalid} invalid) -> entities updated "
            f"{outcome.updated}; watermark {outcome.watermark}"
        )
    if flush:
        outcomes.append(feature_micro_batch(job, log, settings, flush=True))
    return outcomes
