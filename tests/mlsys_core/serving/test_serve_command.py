"""``mlsys serve`` as a real process: serves, then flushes its prediction log on SIGTERM.

Here rather than under tests/mlsys_core/commands because it needs this folder's model.
"""

from __future__ import annotations

import os
import signal

import httpx
import pandas as pd
import pytest

from mlsys_core.data.lake import Lake
from mlsys_core.net import free_port
from mlsys_core.serving.prediction_log import read_prediction_log
from tests.integration.conftest import BIN, background, wait_http
from tests.mlsys_core.serving.conftest import records, register


@pytest.mark.slow  # trains a model and starts a server process
def test_mlsys_serve_answers_and_flushes_the_log_on_shutdown(
    trained, client, model_name, small_spec, sample_rows, tmp_path
):
    version = register(client, model_name, trained.model.model_uri, "champion")
    port = free_port()
    env = {**os.environ, "MLSYS_STATE_DIR": str(trained.settings.root)}
    cmd = [str(BIN / "mlsys"), "serve", "--port", str(port), "--model-name", model_name]
    started = pd.Timestamp.now(tz="UTC")
    log_file = tmp_path / "serve.log"
    with background(cmd, env, log_file) as proc:
        wait_http(f"http://127.0.0.1:{port}/health/ready", proc, 180, log_file)
        batch = records(sample_rows, small_spec, 5)
        res = httpx.post(f"http://127.0.0.1:{port}/predict", json={"records": batch})
        assert res.status_code == 200, res.text
        assert {p["model_version"] for p in res.json()["predictions"]} == {version}
        os.killpg(proc.pid, signal.SIGTERM)  # graceful: the log's last rows get written
        # uvicorn shuts down cleanly, then re-raises SIGTERM as its exit status.
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
        output = log_file.read_text()
        assert "Application shutdown complete" in output
        # The start-up table: every model input and where it comes from, and the store.
        assert "every model input's source" in output
        assert "plane_year" in output and "lookup planes by tailnum" in output
        assert "send to find features: tailnum" in output
        assert "lookup:airports:faa: 1458 rows" in output
        assert f"champion now serves {model_name} v{version}" in output  # loads are logged
    log = read_prediction_log(Lake(trained.settings.lake_dir), small_spec.name, since=started)
    log = log[log["model_name"] == model_name]
    assert sorted(log["request_id"]) == sorted(p["request_id"] for p in res.json()["predictions"])
