"""Retake the documentation's screenshots (docs/img/*.png) against a real run.

    .venv/bin/python docs/screenshots.py [--state DIR] [--keep]

Runs the pipeline on ``nycflights13_sample`` and the monitoring flow in a fresh state folder
(default: a temporary one), starts the Prefect server on that Prefect home and the MLflow UI on
that tracking store (both on free ports of 127.0.0.1), and photographs with headless Chromium:
the ``ml-pipeline`` flow-run graph, the registered model version in MLflow, the drift report
and the ``monitoring`` artifact page. Chromium comes from the system package manager; it is
installed (``apt-get install -y chromium``, with sudo when not root) when missing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
IMG = ROOT / "docs" / "img"
VENV_BIN = Path(sys.executable).parent
MODEL = "flight-delay-sample"
WINDOW = "1440,900"


def chromium() -> str:
    """The Chromium binary, installed through apt when missing."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "chromium"], check=True)
    found = shutil.which("chromium")
    if not found:
        raise SystemExit("screenshots: chromium is not on PATH after apt-get install")
    return found


def free_port() -> int:
    from mlsys_core.net import free_port as pick  # noqa: PLC0415

    return pick()


def wait_for(url: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=30).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit(f"screenshots: {url} did not answer within {timeout:.0f} s")


def shoot(browser: str, url: str, out: Path, wait_ms: int = 20_000) -> None:
    """One full-window PNG of ``url`` after ``wait_ms`` of (virtual) time for its scripts."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                browser,
                "--headless=new",
                "--no-sandbox",  # root in a container; the pages are our own, on 127.0.0.1
                "--disable-gpu",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size={WINDOW}",
                f"--virtual-time-budget={wait_ms}",
                f"--screenshot={out}",
                url,
            ],
            check=True,
            capture_output=True,
            timeout=180,
        )
    print(f"screenshots: {out.relative_to(ROOT)} <- {url}")


def run_pipeline(env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "flows.pipeline", "--spec", "nycflights13_sample",
         "--train-config", '{"epochs": 4}'],
        cwd=ROOT, env=env, check=True,
    )  # fmt: skip
    subprocess.run(
        [sys.executable, "-c",
         f"from flows.monitoring import monitoring; monitoring(model_name={MODEL!r})"],
        cwd=ROOT, env=env, check=True,
    )  # fmt: skip


def ids(api: str) -> tuple[str, str]:
    """The newest ml-pipeline flow run and the newest ``monitoring`` artifact."""
    runs = httpx.post(
        f"{api}/flow_runs/filter",
        json={"flows": {"name": {"any_": ["ml-pipeline"]}}, "sort": "START_TIME_DESC", "limit": 1},
        timeout=180,
    ).json()
    arts = httpx.post(
        f"{api}/artifacts/filter",
        json={"artifacts": {"key": {"any_": ["monitoring"]}}, "sort": "CREATED_DESC", "limit": 1},
        timeout=180,
    ).json()
    if not runs or not arts:
        raise SystemExit("screenshots: no ml-pipeline run or monitoring artifact on the server")
    return runs[0]["id"], arts[0]["id"]


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--state", type=Path, help="state folder (default: a temporary one)")
    cli.add_argument("--keep", action="store_true", help="keep a temporary state folder")
    args = cli.parse_args()
    browser = chromium()
    state = (args.state or Path(tempfile.mkdtemp(prefix="mlsys-shots-"))).resolve()
    home = state / "prefect"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "MLSYS_STATE_DIR": str(state),
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300",
        "MPLBACKEND": "Agg",
    }
    env.pop("PREFECT_API_URL", None)
    if not (state / "mlflow.db").exists():
        run_pipeline(env)
    prefect_port, mlflow_port = free_port(), free_port()
    servers = [
        subprocess.Popen(
            [str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
             "--port", str(prefect_port)],
            # The UI asks this URL for its data (default: port 4200, another server).
            env={**env, "PREFECT_UI_API_URL": f"http://127.0.0.1:{prefect_port}/api"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [str(VENV_BIN / "mlflow"), "ui", "--host", "127.0.0.1", "--port", str(mlflow_port),
             "--backend-store-uri", f"sqlite:///{state / 'mlflow.db'}"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ),
    ]  # fmt: skip
    try:
        ui = f"http://127.0.0.1:{prefect_port}"
        wait_for(f"{ui}/api/health")
        wait_for(f"http://127.0.0.1:{mlflow_port}/health")
        run_id, artifact_id = ids(f"{ui}/api")
        IMG.mkdir(parents=True, exist_ok=True)
        shoot(browser, f"{ui}/runs/flow-run/{run_id}", IMG / "prefect-flow-run.png")
        shoot(browser, f"{ui}/artifacts/artifact/{artifact_id}", IMG / "monitoring-page.png")
        shoot(
            browser,
            f"http://127.0.0.1:{mlflow_port}/#/models/{MODEL}/versions/1",
            IMG / "mlflow-model.png",
        )
        report = max((state / "reports").glob("*.html"), key=lambda p: p.stat().st_mtime)
        shoot(browser, report.as_uri(), IMG / "drift-report.png", wait_ms=10_000)
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        if args.state is None and not args.keep:
            shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
