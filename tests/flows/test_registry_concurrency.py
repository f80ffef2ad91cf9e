"""Sixteen registrations at once, from real processes: ``register`` flow runs on one Prefect
API and ``mlsys registry register`` commands, into three models of one MLflow store. After
them every registry invariant holds, and ``mlsys registry check`` says so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL

from mlsys_core.commands.registry import describe
from mlsys_core.config import Settings
from mlsys_core.data.lake import Lake
from mlsys_core.registry.invariants import check_registry
from mlsys_core.registry.lifecycle import Stage, history
from mlsys_core.registry.locking import RegistryLock
from mlsys_core.tracking import tracking_client
from mlsys_core.training.config import TrainConfig
from mlsys_core.training.run import train_and_log
from tests.integration.conftest import BIN, REPO

pytestmark = pytest.mark.slow

MODELS = ["conc-a", "conc-b", "conc-c"]
# A lax significance level: the better of the two models beats the other one (a lead of
# about 0.01 AUC on ~2.5k rows), so champions change, and stale gates and demotions happen
# while others register.
LAX_ALPHA = 0.49


@pytest.mark.timeout(2700)  # 16 real walks in 8 processes; a loaded 2-core machine is slow
def test_sixteen_concurrent_registrations_from_flows_and_the_cli_keep_every_invariant(
    settings: Settings, make_feature_set, tmp_path: Path
) -> None:
    features = make_feature_set(settings)
    runs = [
        train_and_log(
            features, TrainConfig(epochs=1, seed=seed), Lake(settings.lake_dir), settings.tracking
        ).run_id
        for seed in (0, 1)
    ]
    jobs = [(MODELS[i % 3], runs[(i // 3) % 2]) for i in range(16)]
    flow_jobs, cli_jobs = jobs[::2], jobs[1::2]
    env = {
        **os.environ,
        "MLSYS_STATE_DIR": str(settings.root),
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "GATE_ALPHA": str(LAX_ALPHA),  # read by the flow worker
        # The test server's SQLite answers 503 while busy; on a loaded 2-core machine that
        # outlasts the client's 5 retries (about a minute of backoff). More retries, same test.
        "PREFECT_CLIENT_MAX_RETRIES": "8",
    }
    procs: list[tuple[subprocess.Popen, Path]] = []

    def start(cmd: list[str], label: str) -> None:
        log = tmp_path / f"{label}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        procs.append((proc, log))

    # Eight processes at once: four run the flow twice, four run the command twice.
    for k in range(4):
        pairs = [f"{model}:{run}" for model, run in flow_jobs[2 * k : 2 * k + 2]]
        start([sys.executable, "-m", "tests.flows.register_worker", *pairs], f"flow-{k}")
    for k in range(4):
        commands = [
            f"{BIN / 'mlsys'} registry register --model {model} --run {run} --approve "
            f"--n-bootstrap 200 --alpha {LAX_ALPHA} --actor cli-{k}"
            for model, run in cli_jobs[2 * k : 2 * k + 2]
        ]
        start(["bash", "-c", " && ".join(commands)], f"cli-{k}")
    for proc, log in procs:
        assert proc.wait(timeout=2400) == 0, log.read_text()[-6000:]

    client = tracking_client(settings.mlflow_uri)
    reports = [check_registry(client, model) for model in MODELS]
    assert sum(r.versions for r in reports) == 16
    best = max(runs, key=lambda run: client.get_run(run).data.metrics["test_auc"])
    for report in reports:
        assert report.violations == [], describe(report)
        # Each model has one champion, and it is a version of the better run.
        assert list(report.stages.values()).count(Stage.PRODUCTION) == 1
        assert report.aliases["champion"] == report.aliases["production"]
        champion = client.get_model_version(report.name, report.aliases["champion"])
        assert champion.tags["mlsys.run_id"] == best
        actors = {e.actor for e in history(client, report.name) if e.action == "register"}
        assert any(a.startswith("flow-worker") for a in actors)
        assert any(a.startswith("cli-") for a in actors)
        assert RegistryLock(client, report.name).holders() == []  # no ticket left behind

    done = subprocess.run(
        [str(BIN / "mlsys"), "registry", "check", "--all"],
        check=False,
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("all invariants hold") == len(MODELS)
