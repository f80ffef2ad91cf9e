"""Start training where the launch config says: in this process, or as a torchrun group.

torchrun (``python -m torch.distributed.run``, elastic) runs ``mlsys_core.training.worker``
in every process. The job travels as a JSON file next to where rank 0 writes its result, so
the caller gets the MLflow run id and model URI back without a shared Python object.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from mlflow.exceptions import MlflowException
from pydantic import BaseModel, ConfigDict

from mlsys_core.config import Settings
from mlsys_core.crashpoints import crash_point
from mlsys_core.data.lake import Lake
from mlsys_core.features.store import FeatureSetRef
from mlsys_core.net import free_port
from mlsys_core.stack.process import die_with_parent
from mlsys_core.tracking import tracking_client
from mlsys_core.training.config import TrainConfig
from mlsys_core.training.distributed import LaunchConfig
from mlsys_core.training.run import TAG_JOB, TrainedModel, train_and_log
from mlsys_core.training.signals import sigterm_raises
from mlsys_core.training.trainer import job_fingerprint

log = logging.getLogger(__name__)

LAUNCH_ID_ENV = "MLSYS_LAUNCH_ID"
RANK0_LAUNCH = "rank0.launch"  # the launch id of the node where the latest rank 0 runs


class TrainingLaunchError(RuntimeError):
    """The torchrun group did not produce a trained model."""


class WorkersLost(TrainingLaunchError):
    """Workers died (signal, lost peer, collective timeout) more often than max_restarts
    allowed: an infrastructure failure, worth a retry that resumes from the checkpoint."""


class TrainingFailed(TrainingLaunchError):
    """A worker raised an error in our code or data: a retry would fail the same way."""


class TrainingJob(BaseModel):
    """Everything a worker needs, as JSON."""

    model_config = ConfigDict(frozen=True)

    key: str
    feature_set: FeatureSetRef
    config: TrainConfig
    launch: LaunchConfig
    settings: dict[str, object]
    run_name: str | None = None

    def job_dir(self) -> Path:
        return self.make_settings().root / "jobs" / self.key

    def checkpoint_dir(self) -> Path:
        return self.make_settings().root / "checkpoints" / self.key

    def make_settings(self) -> Settings:
        return Settings(**self.settings)


def job_key(feature_set: FeatureSetRef, config: TrainConfig, launch: LaunchConfig) -> str:
    """Deterministic per (feature-set version, training math): a retry of the same training
    finds the same checkpoint folder and resumes there."""
    return f"{feature_set.version}-{job_fingerprint(config, launch)}"


def train(
    feature_set: FeatureSetRef,
    config: TrainConfig,
    settings: Settings,
    launch: LaunchConfig | None = None,
    run_name: str | None = None,
) -> TrainedModel:
    """Train with checkpoints, in-process or through torchrun as ``launch`` says."""
    launch = launch or LaunchConfig()
    job = TrainingJob(
        key=job_key(feature_set, config, launch),
        feature_set=feature_set,
        config=config,
        launch=launch,
        settings=settings.model_dump(mode="json"),
        run_name=run_name,
    )
    if launch.in_process:
        return train_and_log(
            feature_set,
            config,
            Lake(settings.lake_dir),
            settings.tracking,
            run_name,
            launch,
            checkpoint_dir=job.checkpoint_dir(),
        )
    return launch_torchrun(job)


def torchrun_command(job: TrainingJob, job_file: Path, endpoint: str) -> list[str]:
    """The command this node runs; on several nodes each runs it with the same endpoint."""
    launch = job.launch
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={launch.nnodes}",
        f"--nproc-per-node={launch.nproc_per_node}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={endpoint}",
        f"--rdzv-id={launch.rdzv_id or job.key}",
        f"--max-restarts={launch.max_restarts}",
        "--monitor-interval=0.5",
        "-m",
        "mlsys_core.training.worker",
        f"--job={job_file}",
    ]


def torchrun_env(launch_id: str = "") -> dict[str, str]:
    """Workers keep their own rendezvous store: on torch 2.13 workers that share the agent's
    store read the previous attempt's gloo addresses after a restart and fail to connect
    ("Gloo connectFullMesh failed ... Connection refused"), so a restart never recovers.
    ``launch_id`` names this node's launch, so rank 0 can say which node it ran on."""
    return {**os.environ, "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1", LAUNCH_ID_ENV: launch_id}


def write_job(job: TrainingJob) -> Path:
    folder = job.job_dir()
    folder.mkdir(parents=True, exist_ok=True)
    if job.launch.nnodes == 1:
        # Several nodes share this folder (a shared filesystem), and one may join while the
        # others train (an elastic restart): only a one-node launch owns it alone.
        stale = [folder / "result.json", folder / RANK0_LAUNCH, *folder.glob("error-*.json")]
        # ... and what a killed launcher left half written.
        temporary = [*folder.glob(".job.json.*"), *folder.glob(".first-start-ms.*")]
        for path in [*stale, *folder.glob("*.pid"), *temporary]:
            path.unlink(missing_ok=True)
    path = folder / "job.json"
    tmp = path.with_name(f".job.json.{os.getpid()}")
    tmp.write_text(job.model_dump_json(indent=1))
    crash_point("launch.job")  # whole, not in place: workers read the previous job or none
    os.replace(tmp, path)
    return path


def launch_torchrun(job: TrainingJob) -> TrainedModel:
    """Run the job as a torchrun group and return what rank 0 logged.

    Raises :class:`TrainingFailed` when a worker raised (bad data, a bug) and
    :class:`WorkersLost` when workers died more often than ``max_restarts`` allows.
    """
    job_file = write_job(job)
    folder = job_file.parent
    endpoint = job.launch.rdzv_endpoint or f"127.0.0.1:{free_port()}"
    command = torchrun_command(job, job_file, endpoint)
    launch_id = uuid.uuid4().hex
    # One log per node when several share the folder.
    log_path = folder / ("torchrun.log" if job.launch.nnodes == 1 else f"torchrun-{launch_id}.log")
    started = time.monotonic()
    since_ms = _first_start_ms(folder, job.launch.nnodes)
    # SIGTERM to the launcher (a CLI stopped by a scheduler, a flow run cancelled) becomes an
    # exception here: the group is stopped and the runs end KILLED before the launcher exits.
    with open(log_path, "wb") as log, sigterm_raises():
        # A session of its own, so a timeout can stop torchrun and every worker it started;
        # and torchrun gets SIGTERM if the launcher dies without a chance to stop it.
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=torchrun_env(launch_id),
            preexec_fn=die_with_parent,  # noqa: PLW1509 -- only sets a signal, no locks
        )
        try:
            returncode = process.wait(timeout=job.launch.launch_timeout_s)
        except subprocess.TimeoutExpired:
            _stop_group(process)
            raise WorkersLost(
                f"training did not finish within launch_timeout_s={job.launch.launch_timeout_s}"
                f" s; stopped it. torchrun log: {log_path}\n{_tail(log_path)}"
            ) from None
        except BaseException:
            stopped_ms = int(time.time() * 1000)
            _stop_group(process)
            if _hosts_rank0(folder, job.launch.nnodes, launch_id):
                _end_orphan_runs(job.make_settings(), job.key, since_ms, None, stopped_ms)
            raise
    elapsed = time.monotonic() - started
    result = folder / "result.json"
    trained = TrainedModel.model_validate_json(result.read_text()) if result.is_file() else None
    if _hosts_rank0(folder, job.launch.nnodes, launch_id):
        # Only the node whose workers held rank 0 knows that no rank of the group is alive
        # to close a run; another node's launcher ending first must not touch it.
        _end_orphan_runs(
            job.make_settings(), job.key, since_ms, trained.run_id if trained else None
        )
        if returncode == 0 and trained is not None:
            (folder / "first-start-ms").unlink(missing_ok=True)
    if returncode == 0 and trained is not None:
        return trained
    errors = [json.loads(p.read_text()) for p in sorted(folder.glob("error-*.json"))]
    summary = (
        f"torchrun exited with {returncode} after {elapsed:.0f} s "
        f"(max_restarts={job.launch.max_restarts}); log: {log_path}"
    )
    if returncode == 0:
        # Rank 0 ran on another node: its result lands in that node's job folder.
        raise TrainingLaunchError(f"{summary}; no result at {result} (rank 0 on another node?)")
    fatal = [e for e in errors if not e["transient"]]
    if fatal:
        first = fatal[0]
        raise TrainingFailed(
            f"training failed on rank {first['rank']}: {first['type']}: {first['message']}\n"
            f"{summary}"
        )
    raise WorkersLost(f"workers were lost and restarts are exhausted: {summary}\n{_tail(log_path)}")


def _first_start_ms(folder: Path, nnodes: int) -> int:
    """When the launch began, for finding its orphaned runs. Several nodes (and a node that
    rejoins after a restart) share the time the first of them started, kept until the job
    completes, so the node that ends up with rank 0 also finds an earlier attempt's run."""
    now = int(time.time() * 1000)
    if nnodes == 1:
        return now
    marker = folder / "first-start-ms"
    # Written whole under a name of its own, then linked to the marker's name: the link is
    # created only if no other node's marker is there, and no node reads a half-written one.
    tmp = marker.with_name(f".first-start-ms.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(str(now))
        crash_point("launch.first_start")
        os.link(tmp, marker)
        return now
    except FileExistsError:
        try:
            return min(now, int(marker.read_text() or now))
        except ValueError:
            return now
    finally:
        tmp.unlink(missing_ok=True)


def _hosts_rank0(folder: Path, nnodes: int, launch_id: str) -> bool:
    if nnodes == 1:
        return True
    try:
        return (folder / RANK0_LAUNCH).read_text().strip() == launch_id
    except OSError:
        return False


def _end_orphan_runs(
    settings: Settings, key: str, since_ms: int, keep: str | None, stopped_ms: int | None = None
) -> None:
    """Mark KILLED the runs this launch started that no rank closed, or that ended as
    casualties of the launcher stopping the group.

    A rank ends its run KILLED on SIGTERM, but one killed outright (SIGKILL, the OOM killer,
    or torchrun's escalation when the SIGTERM grace runs out on a loaded machine) leaves it
    RUNNING forever; after torchrun exits, no rank of this launch is alive to finish one.
    And when the launcher stopped the group (``stopped_ms``), rank 0 may end its run FAILED
    first: a peer that got the signal while rank 0 was inside a collective closes its
    connection, and the collective's error reaches rank 0 before its own signal handler
    runs. A run that failed after the stop began was killed, and says so.
    """
    client = tracking_client(settings.mlflow_uri)
    try:
        experiment = client.get_experiment_by_name(settings.experiment)
        if experiment is None:
            return
        runs = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`{TAG_JOB}` = '{key}' and attributes.start_time >= {since_ms}",
        )
        for run in runs:
            info = run.info
            if info.run_id == keep:
                continue
            if info.status == "RUNNING":
                client.set_terminated(info.run_id, status="KILLED")
            elif (
                info.status == "FAILED"
                and stopped_ms is not None
                and (info.end_time or 0) >= stopped_ms
            ):
                client.set_terminated(info.run_id, status="KILLED", end_time=info.end_time)
    except MlflowException as err:
        # Housekeeping: the launch's own outcome (or exception) is what the caller needs.
        log.warning("could not end orphaned runs of job %s: %s", key, err)


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM torchrun's session (workers end their MLflow runs), then SIGKILL."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def _tail(path: Path, lines: int = 25) -> str:
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])
