"""Fault tolerance with real torchrun groups (gloo, 2 CPU ranks) on the small feature set:
a SIGKILLed rank is restarted and training resumes from the last checkpoint; exhausted
restarts fail fast; SIGTERM to any entry point (the ``mlsys train`` launcher, torchrun
itself) stops every process of the group and leaves the MLflow run KILLED, never RUNNING
or FINISHED. And two torchrun agents started apart, as on two machines, train one model
together, survive the loss of the one that does not host the rendezvous store, and fail
with ``WorkersLost`` on the loss of the one that does, to resume when launched again."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from mlsys_core.config import Settings
from mlsys_core.features.store import FeatureSetRef
from mlsys_core.net import free_port
from mlsys_core.tracking import tracking_client
from mlsys_core.training import launch as launch_core
from mlsys_core.training.checkpoint import CheckpointStore
from mlsys_core.training.config import TrainConfig
from mlsys_core.training.distributed import LaunchConfig
from mlsys_core.training.launch import WorkersLost, job_key, torchrun_command, write_job
from mlsys_core.training.run import TrainedModel
from tests.mlsys_core.training.faults import Killer

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

CONFIG = TrainConfig(epochs=3, batch_size=256, dropout=0.0, patience=5, device="cpu")
DDP = LaunchConfig(
    strategy="ddp", nproc_per_node=2, max_restarts=1, checkpoint_every_steps=4, keep_checkpoints=3
)


@dataclass(frozen=True)
class Lake:
    settings: Settings
    feature_set: FeatureSetRef


@pytest.fixture(scope="module")
def lake(
    tmp_path_factory: pytest.TempPathFactory,
    make_feature_set: Callable[[Settings], FeatureSetRef],
) -> Lake:
    settings = Settings(state_dir=tmp_path_factory.mktemp("launch_state"))
    return Lake(settings, make_feature_set(settings))


@pytest.fixture(scope="module")
def uninterrupted(lake: Lake) -> TrainedModel:
    """The same training without faults, as one in-process run (same global batch)."""
    return launch_core.train(lake.feature_set, CONFIG, lake.settings, LaunchConfig())


def dirs(lake: Lake, launch: LaunchConfig) -> tuple[Path, CheckpointStore]:
    key = job_key(lake.feature_set, CONFIG, launch)
    root = lake.settings.root
    return root / "jobs" / key, CheckpointStore(root / "checkpoints" / key)


def runs_by_status(settings: Settings) -> dict[str, list[str]]:
    client = tracking_client(settings.mlflow_uri)
    experiment = client.get_experiment_by_name(settings.experiment)
    out: dict[str, list[str]] = {}
    if experiment is None:  # no run yet
        return out
    for run in client.search_runs([experiment.experiment_id]):
        out.setdefault(run.info.status, []).append(run.info.run_id)
    return out


def test_sigkill_of_a_rank_restarts_the_group_and_resumes(
    lake: Lake, uninterrupted: TrainedModel
) -> None:
    job_dir, store = dirs(lake, DDP)
    with ThreadPoolExecutor(1) as pool, Killer(job_dir, lambda: bool(store.steps())) as killer:
        future = pool.submit(launch_core.train, lake.feature_set, CONFIG, lake.settings, DDP)
        trained = future.result(timeout=300)
    assert len(killer.killed) == 1
    assert trained.resumed_from_step is not None and trained.resumed_from_step >= 4
    assert "failed (exitcode: -9)" in (job_dir / "torchrun.log").read_text()  # seen by torchrun
    for metric in ("test_auc", "test_log_loss"):
        assert trained.metrics[metric] == pytest.approx(uninterrupted.metrics[metric], rel=0.01), (
            metric
        )
    run = tracking_client(lake.settings.mlflow_uri).get_run(trained.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlsys.resumed_from_step"] == str(trained.resumed_from_step)
    assert run.data.params["strategy"] == "ddp" and run.data.params["world_size"] == "2"
    # The killed attempt's rank 0 got SIGTERM from torchrun and closed its run.
    assert trained.run_id not in runs_by_status(lake.settings).get("RUNNING", [])
    assert store.steps() == []  # a finished job clears its checkpoints


def test_a_rank_0_killed_outright_leaves_no_run_running(lake: Lake) -> None:
    """SIGKILL gives rank 0 no chance to end its MLflow run; the launcher ends it KILLED."""
    job_dir, store = dirs(lake, DDP)
    before = set(runs_by_status(lake.settings).get("KILLED", []))
    with ThreadPoolExecutor(1) as pool, Killer(job_dir, lambda: bool(store.steps()), rank=0) as k:
        future = pool.submit(launch_core.train, lake.feature_set, CONFIG, lake.settings, DDP)
        trained = future.result(timeout=300)
    assert len(k.killed) == 1
    statuses = runs_by_status(lake.settings)
    assert "RUNNING" not in statuses
    killed = set(statuses.get("KILLED", [])) - before
    assert len(killed) == 1 and trained.run_id not in killed
    assert trained.run_id in statuses["FINISHED"]


def test_exhausted_restarts_fail_fast_with_a_clear_error(lake: Lake) -> None:
    launch = DDP.model_copy(update={"max_restarts": 1, "collective_timeout_s": 10.0})
    job_dir, _ = dirs(lake, launch)
    started = time.monotonic()
    with Killer(job_dir, lambda: True, times=2) as killer:
        with pytest.raises(WorkersLost, match="restarts are exhausted") as failure:
            launch_core.train(lake.feature_set, CONFIG, lake.settings, launch)
    elapsed = time.monotonic() - started
    assert len(killer.killed) == 2  # the first attempt and its one restart
    assert elapsed < 120
    assert "max_restarts=1" in str(failure.value)
    assert "RUNNING" not in runs_by_status(lake.settings)


def test_sigterm_ends_the_mlflow_run_killed(lake: Lake) -> None:
    launch = DDP.model_copy(update={"max_restarts": 0, "checkpoint_every_steps": 2})
    job_dir, store = dirs(lake, launch)
    before = set(runs_by_status(lake.settings).get("KILLED", []))
    # SIGTERM to torchrun itself, as a scheduler stopping the job would send it.
    with Killer(job_dir, lambda: bool(store.steps()), rank=0, sig=signal.SIGTERM, agent=True):
        with pytest.raises(WorkersLost):
            launch_core.train(lake.feature_set, CONFIG, lake.settings, launch)
    statuses = runs_by_status(lake.settings)
    assert "RUNNING" not in statuses
    assert len(set(statuses.get("KILLED", [])) - before) == 1


# -- SIGTERM on every entry point --------------------------------------------------------


def group_pids(job_dir: Path) -> set[int]:
    """The ranks of the latest attempt and their torchrun agent."""
    ranks = {int(p.read_text()) for p in job_dir.glob("rank*.pid")}
    agents = set()
    for pid in ranks:
        try:
            agents.add(psutil.Process(pid).ppid())
        except psutil.NoSuchProcess:
            pass
    return ranks | agents


def fresh(store: CheckpointStore) -> CheckpointStore:
    """No checkpoint of an earlier test of this module (same job key) to resume from."""
    shutil.rmtree(store.folder, ignore_errors=True)
    return store


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(pids: set[int], timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = {p for p in alive if psutil.pid_exists(p) and _running(p)}
        time.sleep(0.2)
    return alive


def wait_for(ready: Callable[[], bool], timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"exited early with {proc.returncode}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def cli_train(settings: Settings, *args: str) -> list[str]:
    return [
        str(Path(sys.executable).parent / "mlsys"), "train", "--config", CONFIG.model_dump_json(),
        "--strategy", "ddp", *args,
    ]  # fmt: skip


def test_sigterm_to_the_cli_launcher_stops_the_group_and_kills_the_run(lake: Lake) -> None:
    """``kill -TERM`` to ``mlsys train --strategy ddp --nproc-per-node 2``: once the launcher
    died alone and torchrun and its workers trained on to a FINISHED run."""
    launch = DDP.model_copy(update={"checkpoint_every_steps": 2})
    job_dir, store = dirs(lake, launch)
    fresh(store)
    before = runs_by_status(lake.settings)
    env = {**os.environ, "MLSYS_STATE_DIR": str(lake.settings.root)}
    cmd = cli_train(lake.settings, "--nproc-per-node", "2", "--checkpoint-every-steps", "2")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: bool(store.steps()) and len(group_pids(job_dir)) == 3, 240, proc)
        group = group_pids(job_dir)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err.decode()[-3000:]
    assert "the training group is stopped" in err.decode()
    assert wait_gone(group, 10) == set()  # torchrun and both ranks
    statuses = runs_by_status(lake.settings)
    assert "RUNNING" not in statuses
    assert set(statuses.get("FINISHED", [])) == set(before.get("FINISHED", []))
    assert len(set(statuses.get("KILLED", [])) - set(before.get("KILLED", []))) == 1


def test_sigterm_to_torchrun_run_directly_stops_the_group_and_kills_the_run(lake: Lake) -> None:
    """The command ``mlsys train --print-command`` prints, run by hand and stopped."""
    launch = DDP.model_copy(update={"checkpoint_every_steps": 2, "max_restarts": 0})
    job_dir, store = dirs(lake, launch)
    fresh(store)
    before = runs_by_status(lake.settings)
    job = launch_core.TrainingJob(
        key=job_key(lake.feature_set, CONFIG, launch),
        feature_set=lake.feature_set,
        config=CONFIG,
        launch=launch,
        settings=lake.settings.model_dump(mode="json"),
    )
    command = torchrun_command(job, write_job(job), f"127.0.0.1:{free_port()}")
    proc = subprocess.Popen(command, env=launch_core.torchrun_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for(lambda: bool(store.steps()) and len(group_pids(job_dir)) == 3, 240, proc)
        group = group_pids(job_dir)
        assert proc.pid in group
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert wait_gone(group, 10) == set()
    statuses = runs_by_status(lake.settings)
    assert "RUNNING" not in statuses
    assert set(statuses.get("FINISHED", [])) == set(before.get("FINISHED", []))
    assert len(set(statuses.get("KILLED", [])) - set(before.get("KILLED", []))) == 1


# -- two nodes, simulated on one host -------------------------------------------------------

NODE = DDP.model_copy(update={"nproc_per_node": 1, "checkpoint_every_steps": 2, "max_restarts": 2})


def start_node(lake: Lake, endpoint: str, rdzv_id: str, log: Path) -> subprocess.Popen:
    """One machine's ``mlsys train``: the same command on each, sharing the state folder."""
    env = {**os.environ, "MLSYS_STATE_DIR": str(lake.settings.root)}
    cmd = cli_train(
        lake.settings, "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-endpoint", endpoint,
        "--rdzv-id", rdzv_id, "--max-restarts", str(NODE.max_restarts),
        "--checkpoint-every-steps", str(NODE.checkpoint_every_steps),
    )  # fmt: skip
    out = open(log, "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip


def node_result(proc: subprocess.Popen, log: Path, timeout: float) -> dict:
    proc.wait(timeout=timeout)
    text = log.read_text()
    assert proc.returncode == 0, text[-4000:]
    (line,) = [x for x in text.splitlines() if x.startswith('{"run_id"')]
    return json.loads(line)


def start_host_node(lake: Lake, endpoint: str, rdzv_id: str, log: Path) -> subprocess.Popen:
    """Node A, the endpoint's machine: its agent hosts the c10d rendezvous store.

    On one host every agent matches 127.0.0.1 and the first to bind the port hosts the store,
    so node B starts only once node A listens there, as on two machines where only node A
    has the endpoint's address."""
    node = start_node(lake, endpoint, rdzv_id, log)
    port = int(endpoint.rsplit(":", 1)[1])
    try:
        wait_for(lambda: port in listening_ports(node), 240, node)
    except BaseException:
        kill_machine(node)
        raise
    return node


def listening_ports(proc: subprocess.Popen) -> set[int]:
    family = [psutil.Process(proc.pid)]
    try:
        family += family[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return set()
    ports = set()
    for member in family:
        try:
            sockets = member.net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            continue
        ports |= {s.laddr.port for s in sockets if s.status == psutil.CONN_LISTEN}
    return ports


def assert_one_resumed_model(
    lake: Lake, a: dict, b: dict, uninterrupted: TrainedModel, store: CheckpointStore
) -> None:
    """Both nodes report one FINISHED run, resumed from a checkpoint, within 1% of the
    uninterrupted metrics; no run of an earlier, lost attempt is left RUNNING, and the
    finished job cleared its checkpoints."""
    assert a["run_id"] == b["run_id"]
    run = tracking_client(lake.settings.mlflow_uri).get_run(a["run_id"])
    assert run.info.status == "FINISHED"
    assert int(run.data.tags["mlsys.resumed_from_step"]) >= NODE.checkpoint_every_steps
    for metric in ("test_auc", "test_log_loss"):
        assert a["metrics"][metric] == pytest.approx(uninterrupted.metrics[metric], rel=0.01)
    assert "RUNNING" not in runs_by_status(lake.settings)
    assert store.steps() == []


def kill_machine(proc: subprocess.Popen) -> None:
    """As if the node's machine died: SIGKILL to its launcher, torchrun and worker."""
    family = psutil.Process(proc.pid).children(recursive=True)
    for child in family:
        child.kill()
    proc.kill()
    proc.wait()


def test_two_agents_started_apart_train_one_model(
    lake: Lake, uninterrupted: TrainedModel, tmp_path: Path
) -> None:
    fresh(dirs(lake, NODE)[1])
    endpoint = f"127.0.0.1:{free_port()}"
    node_a = start_host_node(lake, endpoint, "two-nodes", tmp_path / "a.log")
    node_b = start_node(lake, endpoint, "two-nodes", tmp_path / "b.log")
    a = node_result(node_a, tmp_path / "a.log", 300)
    b = node_result(node_b, tmp_path / "b.log", 60)
    assert a["run_id"] == b["run_id"]  # one model, logged once
    run = tracking_client(lake.settings.mlflow_uri).get_run(a["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["world_size"] == "2"
    # The tolerances of the strategy tests (tests/.../test_strategies.py): the same global
    # batch over two ranks changes float32 rounding only.
    assert a["metrics"]["test_auc"] == pytest.approx(uninterrupted.metrics["test_auc"], rel=1e-3)
    assert a["metrics"]["test_log_loss"] == pytest.approx(
        uninterrupted.metrics["test_log_loss"], rel=2e-3
    )
    assert "RUNNING" not in runs_by_status(lake.settings)


def test_a_lost_node_rejoins_and_training_resumes_from_the_checkpoint(
    lake: Lake, uninterrupted: TrainedModel, tmp_path: Path
) -> None:
    _, store = dirs(lake, NODE)
    fresh(store)
    endpoint = f"127.0.0.1:{free_port()}"
    node_a = start_host_node(lake, endpoint, "lost-node", tmp_path / "a.log")
    node_b = start_node(lake, endpoint, "lost-node", tmp_path / "b.log")
    try:
        wait_for(lambda: bool(store.steps()), 240, node_b)
        # Node B, not the store's host: mid-epoch (checkpoints every 2 steps, epochs are
        # longer). Losing node A would lose the rendezvous store, and the job with it.
        kill_machine(node_b)
        # The machine comes back (or a replacement joins) with the same command.
        node_b = start_node(lake, endpoint, "lost-node", tmp_path / "b2.log")
        a = node_result(node_a, tmp_path / "a.log", 400)
        b = node_result(node_b, tmp_path / "b2.log", 60)
    finally:
        for proc in (node_a, node_b):
            if proc.poll() is None:
                kill_machine(proc)
    assert_one_resumed_model(lake, a, b, uninterrupted, store)


def test_a_lost_store_host_fails_every_node_and_the_same_commands_resume(
    lake: Lake, uninterrupted: TrainedModel, tmp_path: Path
) -> None:
    """torchrun's c10d rendezvous keeps its store in node A's agent, with no fail-over: when
    node A dies, node B fails with ``WorkersLost`` rather than wait forever, and the same two
    commands run again resume from the checkpoint the lost job wrote."""
    _, store = dirs(lake, NODE)
    fresh(store)
    endpoint = f"127.0.0.1:{free_port()}"
    node_a = start_host_node(lake, endpoint, "lost-host", tmp_path / "a.log")
    node_b = start_node(lake, endpoint, "lost-host", tmp_path / "b.log")
    try:
        wait_for(lambda: bool(store.steps()), 240, node_b)
        kill_machine(node_a)
        node_b.wait(timeout=180)
        lost = (tmp_path / "b.log").read_text()
        assert node_b.returncode != 0
        assert "WorkersLost: workers were lost and restarts are exhausted" in lost, lost[-4000:]
        assert store.steps(), "the lost job's checkpoints are kept for the next launch"
        node_a = start_host_node(lake, endpoint, "lost-host", tmp_path / "a2.log")
        node_b = start_node(lake, endpoint, "lost-host", tmp_path / "b2.log")
        a = node_result(node_a, tmp_path / "a2.log", 400)
        b = node_result(node_b, tmp_path / "b2.log", 60)
    finally:
        for proc in (node_a, node_b):
            if proc.poll() is None:
                kill_machine(proc)
    assert_one_resumed_model(lake, a, b, uninterrupted, store)
