"""The whole pipeline: ingest -> validate -> features -> train -> register -> drift."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from flows.drift import drift_check
from flows.embedded import flow
from flows.features import build_features
from flows.ingest import ingest
from flows.register import RegistrationResult, register
from flows.train import train
from flows.validate import validate
from mlsys_core.config import Settings
from mlsys_core.datasets import SpecRef, spec_or_default
from mlsys_core.monitoring.check import DriftOutcome
from mlsys_core.stack.prefect_server import prefect_home
from mlsys_core.training.config import TrainConfig
from mlsys_core.training.distributed import LaunchConfig
from mlsys_core.training.metrics import interval_caveat
from mlsys_core.training.run import TrainedModel
from tasks.metrics import metered


class PipelineResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    raw_snapshots: dict[str, str]
    clean_snapshots: dict[str, str]
    quarantined_rows: dict[str, int]
    feature_set: str
    trained: TrainedModel
    registration: RegistrationResult
    drift: DriftOutcome


@flow(name="ml-pipeline", log_prints=True)
@metered(rows=lambda r: r.trained.feature_set.snapshot.rows)
def ml_pipeline(
    spec: SpecRef | None = None,
    train_config: TrainConfig = TrainConfig(),
    model_name: str | None = None,
    promotion_margin: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0,
    drift_months: Annotated[int, Field(ge=1, le=24)] = 1,
    auto_approve: bool = True,
    launch: LaunchConfig = LaunchConfig(),
) -> PipelineResult:
    """Run every stage on ``spec`` (a dataset reference, ``NAME``, ``module:attr`` or
    ``file.py:attr``, or a spec; default: the settings' dataset) and report where to look.
    The model registers under ``model_name``, else the settings', else the dataset's.

    ``auto_approve`` lets a model that passes the gate into production unattended (the
    demo, CI); set it to false to pause for a person's approval in the Prefect UI.
    """
    settings = Settings()
    spec = spec_or_default(spec, settings.dataset)
    name = model_name or settings.model_name or spec.registered_model
    raw = ingest(spec)
    clean = validate(raw, spec)
    features = build_features(clean, spec)
    trained = train(features, train_config, spec, launch)
    registration = register(trained, name, promotion_margin, auto_approve=auto_approve)
    drift = drift_check(name, "champion", drift_months)
    return PipelineResult(
        raw_snapshots={t: r.snapshot_id for t, r in raw.items()},
        clean_snapshots={t: c.clean.snapshot_id for t, c in clean.items()},
        quarantined_rows={t: c.quarantine.rows for t, c in clean.items()},
        feature_set=features.version,
        trained=trained,
        registration=registration,
        drift=drift,
    )


def describe(result: PipelineResult, settings: Settings) -> str:
    """Where to look after a run: MLflow run and model, drift report, and both UIs."""
    reg, trained, drift = result.registration, result.trained, result.drift
    alias = "champion" if reg.stage == "production" else "challenger"
    m = trained.metrics
    return "\n".join(
        [
            "",
            "ml-pipeline finished",
            f"  lake                 {settings.lake_dir}",
            f"  raw snapshots        {result.raw_snapshots}",
            f"  quarantined rows     {result.quarantined_rows}",
            f"  feature set          {result.feature_set}",
            f"  MLflow run           {trained.run_id}  (experiment '{settings.experiment}')",
            f"  test metrics         AUC {m['test_auc']:.4f}  log loss {m['test_log_loss']:.4f}"
            f"  ECE {m['test_ece']:.4f}{_calibrated(m)}",
            *_interval(m),
            f"  model version        models:/{reg.version.name}/{reg.version.version}"
            f"  -> @{alias} ({reg.decision.reason})",
            f"  lifecycle            {reg.version.semver}, {reg.stage};"
            f" {_command('mlsys')} lineage models:/{reg.version.name}@champion",
            f"  drift report         {drift.report_path}",
            f"                       {drift.summary.drifted_columns}/{len(drift.summary.columns)}"
            f" columns drifted in {drift.summary.current_window}",
            "",
            "Open the UIs:",
            f"  MLflow   {_command('mlflow')} ui --backend-store-uri {settings.mlflow_uri}"
            " --host 127.0.0.1 --port 5000",
            f"           then http://127.0.0.1:5000/#/models/{reg.version.name}",
            *_prefect_ui(),
            f"  Serve    MLSYS_STATE_DIR={settings.root} {_command('mlsys')} serve"
            f" --model-name {reg.version.name} --port 8000",
            "           then http://127.0.0.1:8000/docs (POST /predict, /metrics)",
        ]
    )


def _interval(metrics: dict[str, float]) -> list[str]:
    """How far the test AUC can be trusted: its 95% interval, from the window's size."""
    if "test_auc_low" not in metrics:
        return []
    rows = int(metrics["test_rows"])
    positives = round(metrics["test_positive_rate"] * rows)
    line = (
        f"                       AUC 95% interval {metrics['test_auc_low']:.3f} .. "
        f"{metrics['test_auc_high']:.3f}, from {rows} test rows ({positives} positive)"
    )
    caveat = interval_caveat(metrics["test_auc_low"], positives, rows - positives)
    return [f"{line}: {caveat}" if caveat else line]


def _calibrated(metrics: dict[str, float]) -> str:
    """The served model is calibrated on the validation split: its ECE is the one a user of
    the probabilities meets, beside the network's own."""
    ece = metrics.get("test_ece_calibrated")
    return "" if ece is None else f" ({ece:.4f} calibrated, as served)"


def _command(name: str) -> str:
    """This environment's own executable, as the folder the run was started from reaches
    it: ``.venv/bin/mlsys`` in the checkout, an absolute path from a project of the user's
    (where a relative ``.venv`` would name nothing)."""
    path = Path(sys.executable).parent / name  # not resolved: the venv, not its base Python
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _prefect_ui() -> list[str]:
    """Where these runs can be seen: the server they went to, or how to keep one (the
    temporary server and its UI stopped with this process)."""
    if api := os.environ.get("PREFECT_API_URL"):
        return [f"  Prefect  {api.removesuffix('/').removesuffix('/api')}/runs"]
    return [
        f"  Prefect  PREFECT_HOME={prefect_home()} {_command('mlsys')} prefect-server up",
        "           then the URL it prints; later runs with that PREFECT_HOME go there too",
    ]


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.pipeline [options]`` is ``mlsys pipeline [options]``: one parser."""
    from mlsys_core.cli import main as cli  # noqa: PLC0415

    return cli(["pipeline", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
