"""The build-features flow maps one task per base partition and commits the same rows as
whole-table assembly."""

from __future__ import annotations

import asyncio
import time
from uuid import UUID

import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from flows.features import build_features
from flows.ingest import ingest
from flows.validate import validate
from mlsys_core.config import Settings
from mlsys_core.data.lake import Lake
from mlsys_core.features.assemble import assemble_features
from mlsys_core.spec import DatasetSpec


async def _task_run_names(flow_run_id: UUID, prefix: str, expected: int) -> list[str]:
    """The flow run's task runs, once ``expected`` of them named ``prefix...`` are recorded
    (or 60 s passed): the API records a task run from its events, after the flow returns."""
    flow_runs = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    deadline = time.monotonic() + 60
    async with get_client() as client:
        while True:
            names = [r.name for r in await client.read_task_runs(flow_run_filter=flow_runs)]
            if sum(n.startswith(prefix) for n in names) >= expected or time.monotonic() > deadline:
                return names
            await asyncio.sleep(0.5)


@pytest.mark.slow
def test_build_features_maps_partitions_and_matches_whole_assembly(
    settings: Settings, small_spec: DatasetSpec
):
    clean = validate(ingest(small_spec), small_spec)
    state = build_features(clean, small_spec, return_state=True)
    features = state.result()
    lake = Lake(settings.lake_dir)
    base_partitions = list(dict.fromkeys(p.partition for p in lake.parts(clean["flights"].clean)))
    assert len(base_partitions) > 1
    parts = lake.parts(features.snapshot)
    assert [p.partition for p in parts] == base_partitions
    flow_run_id, mapped = state.state_details.flow_run_id, len(base_partitions)
    names = asyncio.run(_task_run_names(flow_run_id, "assemble_partition", mapped))
    assert sum(n.startswith("assemble_partition") for n in names) == mapped
    whole = assemble_features({t: lake.read(c.clean) for t, c in clean.items()}, small_spec)
    ours = lake.read(features.snapshot)
    pd.testing.assert_frame_equal(_nulls_as_none(ours), _nulls_as_none(whole), check_dtype=False)
    assert features.split_rows == whole["_split"].value_counts().to_dict()


def _nulls_as_none(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype(object).where(frame.notna(), None)
