"""Windowed stream aggregation: drain an event log in micro-batches into a lake table of
tumbling or sliding windows."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from flows.embedded import flow
from mlsys_core.config import Settings
from mlsys_core.stream.engine import BatchOutcome
from mlsys_core.stream.job import StreamJob
from tasks.metrics import metered
from tasks.stream import micro_batch


@flow(name="stream-windows", log_prints=True)
@metered(rows=lambda r: sum(b.events_in for b in r))
def stream_windows(
    job: StreamJob,
    log_dir: str,
    max_batches: Annotated[int, Field(ge=1, le=100_000)] = 1000,
    flush: bool = False,
) -> list[BatchOutcome]:
    """Run micro-batches of ``job`` until the log holds nothing new.

    ``flush`` closes every open window at the end: for a bounded replay or backfill.
    """
    settings = Settings()
    outcomes = []
    for _ in range(max_batches):
        outcome = micro_batch(job, log_dir, settings)
        if not outcome.segments:
            break
        outcomes.append(outcome)
        print(
            f"{len(outcome.segments)} segments, {outcome.events_in} events "
            f"({outcome.late} late, {outcome.invalid} invalid) -> "
            f"{outcome.windows_emitted} windows; watermark {outcome.watermark}"
        )
    if flush:
        outcomes.append(micro_batch(job, log_dir, settings, flush=True))
    return outcomes
