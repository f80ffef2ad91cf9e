"""Every shipped dataset spec tunes: a small slice of its real data through the stage flows a
user runs (ingest, validate, features), then ``tune(spec=name)`` with two trials. A spec with
a supervised selector (mutual information, L1) once broke tuning, unseen by any test."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from flows.features import build_features
from flows.ingest import ingest
from flows.tune import tune
from flows.validate import validate
from mlsys_core.config import Settings
from mlsys_core.data.sources import parse_source, read_source_bytes
from mlsys_core.datasets import published_datasets, resolve_spec
from mlsys_core.spec import DatasetSpec, SourceSpec
from mlsys_core.training.trainer import TrainConfig
from mlsys_core.tuning.space import Choice, FloatRange, SearchSpace
from mlsys_core.tuning.study import storage_url

BASE_ROWS = 3_000  # rows of each spec's base table: every split keeps both label classes
# The datasets this package publishes (a plug-in installed alongside is not ours to test).
SHIPPED = sorted(n for n, ep in published_datasets().items() if ep.value.startswith("mlsys_core."))


def sliced(spec: DatasetSpec, folder: Path) -> DatasetSpec:
    """The spec with its base table cut to a seeded sample of ``BASE_ROWS`` rows, written
    as CSV files with a header (the other tables whole): same code path, small data."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = []
    for source in spec.sources:
        frame = parse_source(read_source_bytes(source))
        if source.name == spec.base and len(frame) > BASE_ROWS:
            frame = frame.sample(n=BASE_ROWS, random_state=0)
        path = folder / f"{source.name}.csv.gz"
        frame.to_csv(path, index=False, compression="gzip")
        sources.append(
            SourceSpec(name=source.name, path=str(path), partition_by=source.partition_by)
        )
    return spec.model_copy(update={"sources": sources})


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_spec_tunes(name: str, settings: Settings, tmp_path: Path) -> None:
    spec = sliced(resolve_spec(name), tmp_path / "data")
    build_features(validate(ingest(spec), spec), spec)

    result = tune(
        spec=spec,
        sampler="tpe",
        pruner="hyperband",
        n_trials=2,
        parallelism=1,
        # Learning rates that train in two epochs: this checks the data, not the search.
        space=SearchSpace(
            learning_rate=FloatRange(low=3e-3, high=3e-2, log=True),
            batch_size=Choice(choices=[256]),
        ),
        base_config=TrainConfig(epochs=2, patience=1, device="cpu"),
        train_final=False,
    )

    assert result.failed == 0 and len(result.trials) == 2
    assert {t.state for t in result.trials} <= {"COMPLETE", "PRUNED"}
    assert result.report.counts["COMPLETE"] >= 1
    assert 0.5 < result.report.best_values[0] <= 1.0  # a real, better-than-chance val AUC
    study = optuna.load_study(study_name=result.study, storage=storage_url(settings))
    assert len(study.trials) == 2


def test_the_shipped_datasets_are_all_here() -> None:
    assert {"nycflights13", "nycflights13_text", "digits"} <= set(SHIPPED)
