"""The retrain trigger of prefect.yaml on a real Prefect server: the drift check's event
(emitted by the same task the drift-check flow calls) starts a ``retrain`` flow run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mlsys_core.stack.prefect_server import SERVER_HOME, prefect_server
from tests.integration.conftest import REPO, prefect
from tests.services import seed_prefect_home

pytestmark = [pytest.mark.slow, pytest.mark.integration]

EMIT = """
from prefect import flow
from mlsys_core.monitoring.check import DriftOutcome
from mlsys_core.monitoring.drift import DriftSummary
from tasks.monitoring import emit_drift_event

summary = DriftSummary(reference_rows=100, current_rows=80, current_window="2013-06-01..",
                       drifted_columns=12, share_drifted=0.6, dataset_drift=True, columns=[])
outcome = DriftOutcome(summary=summary, run_id="run", report_path="r.html", report_uri="uri",
                       model_name="flight-delay", model_version="3")

@flow
def drift_alert() -> str:
    return emit_drift_event(outcome, ["data drift: 12/20 columns (60% >= 50%)"])

print("event", drift_alert())
"""


def test_drift_event_starts_a_retrain_run(tmp_path: Path, prefect_db: Path) -> None:
    seed_prefect_home(tmp_path / SERVER_HOME, prefect_db)
    base = {**os.environ, "MLSYS_STATE_DIR": str(tmp_path / "state")}
    with prefect_server(tmp_path, base) as server:
        api, env = server.api, server.env
        prefect(["--no-prompt", "deploy", "--name", "retrain"], env)

        (deployment,) = httpx.post(f"{api}/deployments/filter", json={}, timeout=30).json()
        assert deployment["name"] == "retrain"
        automations = httpx.post(f"{api}/automations/filter", json={}, timeout=30).json()
        (automation,) = [a for a in automations if a["name"] == "retrain-on-drift"]
        assert automation["trigger"]["expect"] == ["mlsys.drift.detected"]
        runs_filter = {"flow_runs": {"deployment_id": {"any_": [deployment["id"]]}}}

        def triggered() -> list[dict]:
            runs = httpx.post(f"{api}/flow_runs/filter", json=runs_filter, timeout=30).json()
            # The weekly schedule adds runs of its own; the trigger's are the automation's.
            return [r for r in runs if (r.get("created_by") or {}).get("type") == "AUTOMATION"]

        assert triggered() == []

        done = subprocess.run(
            [sys.executable, "-c", EMIT],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr

        deadline, runs = time.monotonic() + 120, []
        while time.monotonic() < deadline and not runs:
            runs = triggered()
            time.sleep(1)
        assert len(runs) == 1, server.log.read_text()[-4000:]
        (run,) = runs
        assert run["parameters"] == {"spec": "nycflights13", "auto_approve": False}
        assert run["created_by"]["id"] == automation["id"]
        assert run["state"]["type"] == "SCHEDULED"  # waiting for a worker of mlsys-local
