"""The drift-check flow acting on drift (Prefect event, webhook block) and the monitoring
flow's page, on a real champion, a real prediction log and real HTTP endpoints."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pandas as pd
import pytest
from prefect.artifacts import Artifact
from prefect.blocks.webhook import Webhook
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.settings import PREFECT_API_URL

from flows.drift import drift_check
from flows.monitoring import monitoring
from mlsys_core.config import Settings
from mlsys_core.data.lake import Lake
from mlsys_core.features.assemble import SPLIT
from mlsys_core.features.store import load_feature_set
from mlsys_core.monitoring.check import DriftWindow
from mlsys_core.monitoring.system import read_run_metrics
from mlsys_core.registry.promotion import predict_scores
from mlsys_core.serving.prediction_log import append_predictions
from mlsys_core.tracking import tracking_client
from mlsys_core.training.run import model_input_frame

pytestmark = pytest.mark.slow  # trains and registers a real model
METRICS_TEXT = """# HELP mlsys_requests_total Requests served.
# TYPE mlsys_requests_total counter
mlsys_requests_total{variant="champion"} 42.0
# HELP mlsys_latency_seconds Latency.
# TYPE mlsys_latency_seconds gauge
mlsys_latency_seconds 0.012
"""


class _Endpoint(BaseHTTPRequestHandler):
    posts: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).posts.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(METRICS_TEXT.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def state(
    tmp_path_factory: pytest.TempPathFactory,
    make_champion,
    prefect_api: None,
) -> Iterator[Settings]:
    """A champion trained on the small spec and a week of its served predictions."""
    with pytest.MonkeyPatch.context() as patch:
        settings = Settings(state_dir=tmp_path_factory.mktemp("monitoring_state"))
        patch.setenv("MLSYS_STATE_DIR", str(settings.state_dir))
        champion = make_champion(settings)
        version = champion.version
        lake = Lake(settings.lake_dir)
        frame, spec = load_feature_set(champion.feature_set, lake)
        served = frame[frame[SPLIT] == "test"].sample(700, random_state=0)
        proba = predict_scores(
            tracking_client(settings.mlflow_uri),
            f"models:/{settings.model_name}/{version}",
            model_input_frame(served, spec),
        )
        rows = model_input_frame(served, spec)
        for key in spec.entity_keys:
            rows[key] = served[key].to_numpy()
        start = datetime.now(UTC) - timedelta(days=6)
        rows = rows.assign(
            request_id=[f"r{i}" for i in range(len(rows))],
            logged_at=[start + timedelta(minutes=12 * i) for i in range(len(rows))],
            model_name=settings.model_name,
            model_version=version,
            variant="champion",
            served=True,
            probability=proba,
            prediction=(proba >= 0.5).astype(int),
        )
        append_predictions(lake, spec.name, rows)
        yield settings


def _events(prefix: str) -> list[dict]:
    api = PREFECT_API_URL.value()
    body = {"filter": {"event": {"prefix": [prefix]}}, "limit": 50}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the server persists events asynchronously
        found = httpx.post(f"{api}/events/filter", json=body, timeout=10).json()["events"]
        if found:
            return found
        time.sleep(1)
    return []


def test_drift_over_the_threshold_emits_the_event_and_calls_the_webhook(
    state: Settings, endpoint: str
) -> None:
    Webhook(method="POST", url=f"{endpoint}/hook", allow_private_urls=True).save(
        "mlsys-drift-test", overwrite=True
    )
    window = DriftWindow(start=datetime(2013, 6, 1).date(), end=datetime(2013, 11, 30).date())
    run = drift_check(
        window=window, alert_share=0.05, notify_block="mlsys-drift-test", return_state=True
    )
    outcome = run.result()
    assert outcome.summary.share_drifted >= 0.05
    # Each step of the check is a task of its own in the UI, and each completed.
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.state_details.flow_run_id]))
        )
    steps = ["drift-load", "data-drift", "prediction-drift", "target-drift", "drift-publish"]
    for step in steps:
        (step_run,) = [r for r in task_runs if r.name.startswith(f"{step}-")]
        assert step_run.state.is_completed()
    assert outcome.seconds.keys() == {"load", "data_drift"}

    (event,) = _events("mlsys.drift.detected")
    assert event["resource"]["prefect.resource.id"] == f"mlsys.model.{state.model_name}"
    assert event["payload"]["model_version"] == outcome.model_version
    assert event["payload"]["share_drifted"] == pytest.approx(outcome.summary.share_drifted)
    assert set(event["payload"]["drifted_columns"]) == {
        c.column for c in outcome.summary.columns if c.drifted
    }
    (post,) = [p for p in _Endpoint.posts if p.get("event") == "mlsys.drift.detected"]
    assert post["mlflow_run_id"] == outcome.run_id

    # Under the threshold nothing is emitted (the event count stays one).
    calm = drift_check(window=window, alert_share=1.0)
    assert calm.summary.share_drifted < 1.0
    assert len(_events("mlsys.drift.detected")) == 1

    record = next(r for r in read_run_metrics(state.root) if r.flow == "drift-check")
    assert record.status == "completed"
    assert record.rows_processed == calm.summary.current_rows + calm.prediction.current_rows


def test_monitoring_flow_publishes_one_page(state: Settings, endpoint: str) -> None:
    dashboard = monitoring(metrics_url=f"{endpoint}/metrics")
    assert dashboard.serving.served == 700
    assert sum(p.predictions for p in dashboard.periods) == 700
    assert any(p.auc is not None for p in dashboard.periods)
    assert dashboard.scraped == {
        'mlsys_requests_total{variant="champion"}': 42.0,
        "mlsys_latency_seconds": 0.012,
    }
    client = tracking_client(state.mlflow_uri)
    names = [Path(a.path).name for a in client.list_artifacts(dashboard.run_id, "monitoring")]
    assert names == [Path(dashboard.plot_path).name]
    assert Path(dashboard.plot_path).read_bytes()[:4] == b"\x89PNG"

    artifact = Artifact.get("monitoring")
    assert artifact is not None and artifact.type == "markdown"
    page = artifact.data
    for heading in ["Latest drift check", "Model performance over time", "Serving", "Flow runs"]:
        assert f"## {heading}" in page
    assert "data:image/png;base64," in page
    assert "mlsys_requests_total" in page
    assert "drift-check" in page  # the system metrics table lists the earlier flow runs

    # An unreachable /metrics URL is reported on the page, not a failed run.
    again = monitoring(metrics_url="http://127.0.0.1:9/metrics")
    assert again.scraped is None
    assert "/metrics not read" in again.markdown
    assert isinstance(pd.Timestamp(again.periods[0].period), pd.Timestamp)
