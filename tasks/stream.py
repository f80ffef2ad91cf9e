"""Stream tasks: one micro-batch per task run."""

from __future__ import annotations

from functools import cache, partial
from pathlib import Path

import pandas as pd
from prefect.events import emit_event

from mlsys_core.config import Settings
from mlsys_core.data.cleaning import latest_clean
from mlsys_core.data.lake import Lake
from mlsys_core.features.online import KeyKind, open_online_store
from mlsys_core.stream.engine import BatchOutcome, run_micro_batch
from mlsys_core.stream.features import (
    FeatureBatchOutcome,
    FeatureStreamJob,
    StreamLag,
    clean_seed,
    run_feature_batch,
)
from mlsys_core.stream.job import StreamJob
from mlsys_core.stream.online import OnlineWrite, sync_online, write_updates
from tasks.base import task
from tasks.retry import retry_on_io_errors

LAGGING_EVENT = "mlsys.stream.lagging"


@task(retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=retry_on_io_errors)
def feature_micro_batch(
    job: FeatureStreamJob,
    log_dir: str,
    settings: Settings,
    flush: bool = False,
    key_kinds: dict[str, list[KeyKind]] | None = None,
    from_history: bool = True,
) -> tuple[FeatureBatchOutcome, OnlineWrite | None]:
    """Consume the next segments of the log, commit the views' updated entities, and (with
    ``key_kinds``) write them to the online store. ``from_history``: a job's first batch
    starts from the source's newest clean snapshot, the rows from before the log."""
    lake = Lake(settings.lake_dir)
    seed = partial(clean_seed, lake, job) if from_history else None
    batch = run_feature_batch(job, Path(log_dir), lake, flush=flush, seed=seed)
    if key_kinds is None or not batch.updates:
        return batch.outcome, None
    store = open_online_store(settings.root, settings.online_store)
    snapshot = batch.outcome.snapshot
    source = f"stream/{job.name}/{snapshot.snapshot_id}" if snapshot else None
    return batch.outcome, write_updates(store, lake, job, batch.updates, key_kinds, source)


@task(retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=retry_on_io_errors)
def sync_stream_online(
    job: FeatureStreamJob, settings: Settings, key_kinds: dict[str, list[KeyKind]]
) -> OnlineWrite:
    """Bring the online store's stream views to the stream's committed watermark."""
    store = open_online_store(settings.root, settings.online_store)
    return sync_online(store, Lake(settings.lake_dir), job, key_kinds)


@task(retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=retry_on_io_errors)
def micro_batch(
    job: StreamJob, log_dir: str, settings: Settings, flush: bool = False
) -> BatchOutcome:
    """Consume the next segments of the log and commit the windows they close."""
    lake = Lake(settings.lake_dir)

    @cache
    def read_table(name: str) -> pd.DataFrame:  # joins read the newest clean snapshot
        return lake.read(latest_clean(lake, name).clean)

    return run_micro_batch(job, Path(log_dir), lake, read_table, flush=flush)


@task
def emit_lagging(lag: StreamLag, max_lag_s: float | None, max_pending: int | None) -> str | None:
    """``mlsys.stream.lagging`` on the stream's resource, with the lag in the payload (an
    automation can scale the job, or page someone). Returns the event id."""
    event = emit_event(
        LAGGING_EVENT,
        resource={
            "prefect.resource.id": f"mlsys.stream.{lag.job}",
            "prefect.resource.name": lag.job,
        },
        payload={**lag.model_dump(), "max_lag_s": max_lag_s, "max_pending_segments": max_pending},
    )
    return str(event.id) if event is not None else None
