"""Each stage flow runs alone, resolving its input from the previous stage's newest output."""

from __future__ import annotations

import pandas as pd
import pytest
from prefect.exceptions import ParameterTypeError

from flows.drift import drift_check
from flows.features import build_features
from flows.ingest import ingest
from flows.pipeline import ml_pipeline
from flows.register import register
from flows.train import train
from flows.validate import validate
from mlsys_core.config import Settings
from mlsys_core.data.contract import ContractError
from mlsys_core.data.lake import Lake
from mlsys_core.data.sources import SourceError
from mlsys_core.registry.lineage import lineage
from mlsys_core.spec import DatasetSpec, SourceSpec
from mlsys_core.tracking import tracking_client
from mlsys_core.training.config import TrainConfig


@pytest.mark.slow
def test_stage_flows_run_alone_in_order(settings: Settings, small_spec: DatasetSpec):
    raw = ingest(small_spec)
    assert set(raw) == {s.name for s in small_spec.sources}
    clean = validate(spec=small_spec)  # no refs: the newest raw snapshots
    assert {t: c.raw.snapshot_id for t, c in clean.items()} == {
        t: r.snapshot_id for t, r in raw.items()
    }
    features = build_features(spec=small_spec)  # no refs: the newest clean snapshots
    assert features.clean_snapshots == {t: c.clean.snapshot_id for t, c in clean.items()}
    trained = train(config=TrainConfig(epochs=1), spec=small_spec)
    assert trained.feature_set.version == features.version
    result = register()  # no refs: the newest training run
    assert result.version.run_id == trained.run_id
    assert result.decision.promote  # the first model becomes champion
    client = tracking_client(settings.mlflow_uri)
    assert (
        client.get_model_version_by_alias(settings.model_name, "champion").run_id == trained.run_id
    )
    outcome = drift_check()
    assert outcome.model_version == result.version.version
    # The drift check used the champion: its lineage says so.
    found = lineage(client, f"models:/{settings.model_name}@champion")
    assert [s.deployment for s in found.served_by] == ["prefect-flow/drift"]
    assert outcome.summary.current_rows > 0


def test_downstream_stage_without_upstream_output_fails_clearly(
    settings: Settings, small_spec: DatasetSpec
):
    with pytest.raises(LookupError, match="run ingest first"):
        validate(spec=small_spec)
    with pytest.raises(LookupError, match="run the ml-pipeline flow first"):
        drift_check()


def test_missing_contract_column_fails_loudly(
    settings: Settings, small_spec: DatasetSpec, tmp_path
):
    broken = tmp_path / "weather.csv"
    weather = pd.read_csv(small_spec.source("weather").path).drop(columns=["wind_speed"])
    weather.to_csv(broken, index=False)
    sources = [
        s if s.name != "weather" else SourceSpec(name="weather", path=str(broken))
        for s in small_spec.sources
    ]
    spec = small_spec.model_copy(update={"sources": sources})
    raw = ingest(spec)
    with pytest.raises(ContractError, match="wind_speed"):
        validate(raw, spec)
    assert Lake(settings.lake_dir).latest("clean", "weather") is None  # nothing half-written


def test_missing_source_file_fails_loudly(settings: Settings, small_spec: DatasetSpec, tmp_path):
    sources = [SourceSpec(name="flights", path=str(tmp_path / "nope.csv"))]
    spec = small_spec.model_copy(update={"sources": [*sources, *small_spec.sources[1:]]})
    with pytest.raises(SourceError, match="no file at"):
        ingest(spec)


def test_bad_pipeline_parameters_are_rejected_before_any_stage_runs(settings: Settings):
    with pytest.raises(ParameterTypeError, match="promotion_margin"):
        ml_pipeline(promotion_margin=-0.5)
    with pytest.raises(ParameterTypeError, match="epochs"):
        ml_pipeline(train_config={"epochs": 0})
    assert not settings.lake_dir.exists()  # nothing ran
