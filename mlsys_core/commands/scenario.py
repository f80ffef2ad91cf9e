"""``mlsys drift-scenario``: seasonal drift and what it sets off, on a real Prefect server.

1. starts ``prefect server`` on 127.0.0.1 (its own PREFECT_HOME under the state folder),
   creates the ``mlsys-local`` pool and deploys ``retrain`` from prefect.yaml (with its
   ``mlsys.drift.detected`` trigger);
2. runs ``flows/drift_scenario.py`` against it: train on January-May, check June-November;
3. waits for the retrain run the automation creates, starts a process worker, and follows
   that run until it completes, pauses for approval, or fails;
4. prints the drift verdict, the event, the retrain run and the model versions.

Everything goes to ``<state>/scenario`` (``--state`` to change), so ``.mlsys`` of the
demo is untouched. Needs the repository folder (prefect.yaml) as the working directory.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from mlflow import MlflowClient

from mlsys_core.config import Settings
from mlsys_core.net import free_port
from mlsys_core.registry.lifecycle import TAG_GATE, TAG_LIFECYCLE, TAG_SEMVER

FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED", "PAUSED"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "drift-scenario", help="train on winter/spring, detect summer/autumn drift, retrain"
    )
    parser.add_argument("--state", type=Path, default=None, help="default <state>/scenario")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of the seasonal model")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds for the retrain")
    parser.set_defaults(handler=run)


def _api(url: str, body: dict | None = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - 127.0.0.1
        return json.loads(response.read() or b"null")


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(  # noqa: S603
        cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _wait_health(api: str, server: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("prefect server exited; see its log")
        try:
            _api(f"{api}/health")
            return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"prefect server not up after {timeout}s")


def _cli(bin_dir: Path, args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(  # noqa: S603
        [str(bin_dir / "prefect"), *args], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"prefect {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def _automation_runs(api: str, deployment_id: str) -> list[dict]:
    body = {"flow_runs": {"deployment_id": {"any_": [deployment_id]}}}
    runs = _api(f"{api}/flow_runs/filter", body)
    return [r for r in runs if (r.get("created_by") or {}).get("type") == "AUTOMATION"]  # type: ignore[union-attr]


def _print_versions(settings: Settings) -> None:
    """Every registered version: stage, semver, and the gate's reason."""
    client = MlflowClient(settings.mlflow_uri)
    for mv in sorted(
        client.search_model_versions(f"name='{settings.model_name}'"), key=lambda v: int(v.version)
    ):
        gate = json.loads(mv.tags.get(TAG_GATE, "{}")).get("reason", "")
        print(
            f"   {mv.name} v{mv.version} ({mv.tags.get(TAG_SEMVER)}): "
            f"{mv.tags.get(TAG_LIFECYCLE)}; {gate}"
        )


def run(args: argparse.Namespace) -> int:  # noqa: PLR0915 - one linear script
    state = (args.state or Settings().root / "scenario").resolve()
    home = state / "prefect"
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "MLSYS_STATE_DIR": str(state),
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_CLI_PROMPT": "false",
    }
    bin_dir = Path(sys.executable).parent
    print(f"state {state}; Prefect server {api}")
    server = _start(
        [str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env,
        state / "server.log",
    )
    worker = None
    try:
        _wait_health(api, server, 180)
        pools = [p["name"] for p in _api(f"{api}/work_pools/filter", {})]  # type: ignore[union-attr]
        if "mlsys-local" not in pools:
            _cli(bin_dir, ["work-pool", "create", "mlsys-local", "--type", "process"], env)
        _cli(bin_dir, ["--no-prompt", "deploy", "--name", "retrain"], env)
        (deployment,) = [
            d
            for d in _api(f"{api}/deployments/filter", {})  # type: ignore[union-attr]
            if d["name"] == "retrain"
        ]
        before = {r["id"] for r in _automation_runs(api, deployment["id"])}
        print("1. retrain deployed with its trigger on mlsys.drift.detected")

        print("2. training on 2013-01..05, checking 2013-06-01..2013-11-30 ...")
        code = (
            "import json; from flows.drift_scenario import drift_scenario; "
            "from mlsys_core.training.trainer import TrainConfig; "
            f"r = drift_scenario(train_config=TrainConfig(epochs={args.epochs})); "
            "print('RESULT ' + r.model_dump_json())"
        )
        done = subprocess.run(  # noqa: S603
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
        )
        (state / "scenario.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise RuntimeError(f"the scenario flow failed; see {state / 'scenario.log'}")
        line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
        result = json.loads(line.removeprefix("RESULT "))
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
        events = _api(f"{api}/events/filter", {"filter": {"event": {"prefix": ["mlsys.drift"]}}})[
            "events"
        ]  # type: ignore[index]
        for event in events:
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
        worker = _start(
            [str(bin_dir / "prefect"), "worker", "start", "--pool", "mlsys-local"],
            env,
            state / "worker.log",
        )
        deadline = time.monotonic() + args.timeout
        state_type = "SCHEDULED"
        while time.monotonic() < deadline and state_type not in FINAL:
            time.sleep(5)
            flow_run = _api(f"{api}/flow_runs/{run_id}")
            state_type = flow_run["state"]["type"]  # type: ignore[index]
        print(f"4. retrain run {state_type}: {flow_run['state']['name']}")  # type: ignore[index]
        if state_type == "PAUSED":
            print("   the retrained model passed the gate and waits for approval in the UI")
        _print_versions(Settings(state_dir=state))
        return 0 if state_type in {"COMPLETED", "PAUSED"} else 1
    finally:
        if worker is not None:
            _stop(worker)
        _stop(server)
