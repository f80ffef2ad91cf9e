"""Stream tasks: one micro-batch per task run."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pandas as pd
from prefect import task

from mlsys_core.config import Settings
from mlsys_core.data.cleaning import latest_clean
from mlsys_core.data.lake import Lake
from mlsys_core.stream.engine import BatchOutcome, run_micro_batch
from mlsys_core.stream.features import FeatureBatchOutcome, FeatureStreamJob, run_feature_batch
from mlsys_core.stream.job import StreamJob
from tasks.retry import retry_on_io_errors


@task(retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=retry_on_io_errors)
def feature_micro_batch(
    job: FeatureStreamJob, log_dir: str, settings: Settings, flush: bool = False
) -> FeatureBatchOutcome:
    """Consume the next segments of the log and commit the views' updated entities."""
    return run_feature_batch(job, Path(log_dir), Lake(settings.lake_dir), flush=flush).outcome


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
