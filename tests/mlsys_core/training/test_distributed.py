"""LaunchConfig validation, the torchrun command line, job keys, and the collective timeout
that turns a hung peer into an error instead of gloo's 30-minute wait."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from mlsys_core.config import Settings
from mlsys_core.data.lake import SnapshotRef
from mlsys_core.features.store import FeatureSetRef
from mlsys_core.training.config import TrainConfig
from mlsys_core.training.distributed import LaunchConfig
from mlsys_core.training.launch import TrainingJob, job_key, torchrun_command

TIMEOUT_WORKER = Path(__file__).with_name("timeout_worker.py")


def feature_set(version: str = "abc123") -> FeatureSetRef:
    snapshot = SnapshotRef(
        layer="features", table="t", snapshot_id=version, rows=10, path=f"/lake/{version}"
    )
    return FeatureSetRef(
        snapshot=snapshot,
        model_name="m",
        spec_fingerprint="f",
        raw_snapshots={},
        clean_snapshots={},
        split_rows={"train": 8, "valid": 1, "test": 1},
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"nproc_per_node": 2}, "strategy 'single' runs one process"),
        ({"strategy": "fsdp", "sync": "local_sgd"}, "local_sgd' needs strategy='ddp'"),
        ({"strategy": "ddp", "nproc_per_node": 2, "launcher": "inprocess"}, "one process"),
        ({"strategy": "ddp", "nnodes": 2}, "several nodes need rdzv_endpoint"),
        ({"rdzv_endpoint": "no port"}, "pattern"),
        ({"local_sgd_period": 1}, "greater than or equal to 2"),
        ({"strategy": "pipeline"}, "single', 'ddp' or 'fsdp"),
    ],
)
def test_launch_config_rejects_inconsistent_settings(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        LaunchConfig(**fields)


def test_only_one_single_process_runs_in_process() -> None:
    assert LaunchConfig().in_process
    assert not LaunchConfig(launcher="torchrun").in_process
    assert not LaunchConfig(strategy="ddp").in_process  # ddp needs a process group
    assert LaunchConfig(strategy="ddp", nproc_per_node=4, nnodes=2, rdzv_endpoint="a:1")
    assert LaunchConfig(strategy="ddp", nproc_per_node=4).world_size == 4


def test_job_key_follows_the_math_not_the_topology() -> None:
    config = TrainConfig()
    ddp2 = LaunchConfig(strategy="ddp", nproc_per_node=2)
    key = job_key(feature_set(), config, ddp2)
    assert key.startswith("abc123-")
    assert key == job_key(feature_set(), config, ddp2.model_copy(update={"max_restarts": 5}))
    # Another world size computes the same steps (global batch), so it resumes the same job.
    assert key == job_key(feature_set(), config, ddp2.model_copy(update={"nproc_per_node": 4}))
    # Who starts the other nodes is no part of the math either.
    assert key == job_key(feature_set(), config, ddp2.model_copy(update={"other_nodes": "pool"}))
    assert key != job_key(feature_set("other"), config, ddp2)
    assert key != job_key(feature_set(), config.model_copy(update={"epochs": 3}), ddp2)
    assert key != job_key(feature_set(), config, ddp2.model_copy(update={"sync": "local_sgd"}))


def test_torchrun_command_line(tmp_path: Path) -> None:
    launch = LaunchConfig(
        strategy="fsdp", nproc_per_node=4, nnodes=2, rdzv_endpoint="node-a:29400", max_restarts=3
    )
    job = TrainingJob(
        key="k1",
        feature_set=feature_set(),
        config=TrainConfig(),
        launch=launch,
        settings=Settings(state_dir=tmp_path).model_dump(mode="json"),
    )
    command = torchrun_command(job, tmp_path / "job.json", "node-a:29400")
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert command[3:] == [
        "--nnodes=2",
        "--nproc-per-node=4",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=node-a:29400",
        "--rdzv-id=k1",
        "--max-restarts=3",
        "--monitor-interval=0.5",
        "-m",
        "mlsys_core.training.worker",
        f"--job={tmp_path / 'job.json'}",
    ]
    assert job.checkpoint_dir() == tmp_path.resolve() / "checkpoints" / "k1"


@pytest.mark.slow
@pytest.mark.distributed
def test_a_hung_peer_fails_the_collective_after_the_timeout(tmp_path: Path) -> None:
    out = tmp_path / "outcome.json"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
        str(TIMEOUT_WORKER), str(out), "2",
    ]  # fmt: skip
    subprocess.run(command, capture_output=True, timeout=120, check=False)
    outcome = json.loads(out.read_text())
    assert outcome["outcome"] != "returned"
    assert "timeout" in outcome["outcome"].lower() or "timed out" in outcome["outcome"].lower()
    assert 1.5 < outcome["seconds"] < 30  # the configured 2 s, not gloo's 30 min
