"""``mlflow models serve -m models:/<name>@champion`` serves our pyfunc over real HTTP."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pytest

from mlsys_core.config import Settings
from mlsys_core.data.lake import Lake
from mlsys_core.net import free_port
from mlsys_core.training.run import held_out
from tests.integration.conftest import BIN, background, wait_http

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_champion_serves_probabilities(tmp_path: Path, make_champion):
    settings = Settings(state_dir=tmp_path / "state")
    champion = make_champion(settings)
    x = held_out(champion.feature_set, Lake(settings.lake_dir)).inputs()

    rows = x.head(20)
    expected = mlflow.pyfunc.load_model(f"models:/{settings.model_name}@champion").predict(rows)

    port = free_port()
    # As a user with the venv activated: mlflow starts uvicorn from PATH.
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": settings.mlflow_uri, "PATH": path}
    cmd = [
        str(BIN / "mlflow"),
        "models",
        "serve",
        "-m",
        f"models:/{settings.model_name}@champion",
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    with background(cmd, env, tmp_path / "serve.log") as server:
        wait_http(f"http://127.0.0.1:{port}/ping", server, 120, tmp_path / "serve.log")
        payload = {
            "dataframe_split": json.loads(
                rows.to_json(orient="split", date_format="iso", index=False)
            )
        }
        reply = httpx.post(f"http://127.0.0.1:{port}/invocations", json=payload, timeout=60)
        assert reply.status_code == 200, reply.text
        served = np.asarray(reply.json()["predictions"], dtype=float)
        np.testing.assert_allclose(served, np.asarray(expected, dtype=float), rtol=1e-5, atol=1e-6)
        assert ((served > 0) & (served < 1)).all()

        # Optional features may be left out: they are imputed like missing values.
        few = {
            "dataframe_split": {
                "columns": ["carrier", "origin", "dest", "time_hour"],
                "data": [["UA", "EWR", "IAH", "2013-11-01T14:00:00"]],
            }
        }
        reply = httpx.post(f"http://127.0.0.1:{port}/invocations", json=few, timeout=60)
        assert reply.status_code == 200, reply.text
        assert 0 < reply.json()["predictions"][0] < 1

        # Bad input is a 4xx with a reason, not a 500.
        bad = {"dataframe_split": {"columns": ["carrier"], "data": [["AA"]]}}
        reply = httpx.post(f"http://127.0.0.1:{port}/invocations", json=bad, timeout=60)
        assert 400 <= reply.status_code < 500
        assert "time_hour" in reply.text
