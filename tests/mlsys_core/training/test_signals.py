"""A SIGTERM while a training run is open ends its MLflow run KILLED, whatever exception the
training ended with; a run that ends without one keeps the status it earned. Each case runs
in a process of its own, since it signals itself."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlflow
import pytest

from mlsys_core.config import Settings
from mlsys_core.tracking import tracking_client
from mlsys_core.training.launch import _end_orphan_runs
from mlsys_core.training.run import TAG_JOB
from tests.integration.conftest import REPO

PRELUDE = """
import os, signal, sys
import mlflow
from mlsys_core.training.signals import TrainingTerminated, run_killed_on_sigterm

mlflow.set_tracking_uri(sys.argv[1])
outcome = "no exception"
try:
    with run_killed_on_sigterm(run_name="case") as run:
        print(run.info.run_id, flush=True)
{body}
except BaseException as exc:
    cause = exc.__cause__
    outcome = type(exc).__name__ + (f" from {{type(cause).__name__}}" if cause else "")
print(outcome)
print("restored" if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL else "still ours")
"""

# The handler runs inside ``__del__``, where Python prints the exception it raises and goes on.
SIGNAL_IN_A_FINALIZER = """
class Finalized:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)

Finalized()
"""


def run_case(tmp_path: Path, body: str) -> tuple[str, str, str]:
    """The run's status, how the block ended, and whether SIGTERM's handler was put back."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    script = PRELUDE.format(body=textwrap.indent(textwrap.dedent(body), " " * 8))
    # MLflow exports the experiment a process last set; a worker of this suite may have one.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    done = subprocess.run(
        [sys.executable, "-c", script, uri], cwd=REPO, env=env, capture_output=True,
        text=True, timeout=120, check=False,
    )  # fmt: skip
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and len(lines) == 3, done.stdout + done.stderr[-3000:]
    run_id, outcome, handler = lines
    return mlflow.MlflowClient(uri).get_run(run_id).info.status, outcome, handler


def test_sigterm_in_the_body_ends_the_run_killed(tmp_path: Path) -> None:
    status, outcome, handler = run_case(
        tmp_path,
        """
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("the signal did not stop the body")
        """,
    )
    assert (status, outcome, handler) == ("KILLED", "TrainingTerminated", "restored")


def test_a_signal_whose_exception_is_lost_still_ends_the_run_killed(tmp_path: Path) -> None:
    """The handler ran inside a finalizer, where Python prints its exception and goes on;
    then a collective failed because the peer rank got the same signal and is gone. Judged
    by the exception that came out, the run ended FAILED."""
    status, outcome, handler = run_case(
        tmp_path,
        SIGNAL_IN_A_FINALIZER + 'raise RuntimeError("[gloo] Connection closed by peer")',
    )
    assert (status, outcome, handler) == (
        "KILLED", "TrainingTerminated from RuntimeError", "restored",
    )  # fmt: skip


def test_a_lost_signal_in_a_body_that_completes_still_stops_the_process(tmp_path: Path) -> None:
    status, outcome, _ = run_case(tmp_path, SIGNAL_IN_A_FINALIZER)
    assert (status, outcome) == ("KILLED", "TrainingTerminated")


LAUNCHER = """
import os, signal, sys
from mlsys_core.training.signals import TrainingTerminated, sigterm_raises

SIGNALS = (signal.SIGTERM, signal.SIGHUP)
before = [signal.getsignal(s) for s in SIGNALS]  # SIGHUP is ignored under nohup
steps = []
try:
    with sigterm_raises():
{body}
    steps.append("no exception")
except TrainingTerminated as exc:
    steps.append("stopped by " + signal.Signals(exc.signum).name)
print(", ".join(steps))
print("restored" if [signal.getsignal(s) for s in SIGNALS] == before else "still ours")
"""

# The launcher's stop: a signal during the wait, then more while it stops the group.
SIGNALS_WHILE_STOPPING = """
try:
    os.kill(os.getpid(), signal.SIGTERM)
    raise AssertionError("the signal did not stop the wait")
except TrainingTerminated:
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGHUP)
    steps.append("group stopped")
    raise
"""


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (SIGNALS_WHILE_STOPPING, "group stopped, stopped by SIGTERM"),
        (SIGNAL_IN_A_FINALIZER, "stopped by SIGTERM"),
        ("pass", "no exception"),
    ],
    ids=["signals-while-stopping", "lost-in-a-finalizer", "no-signal"],
)
def test_a_launcher_stops_once_whatever_signals_follow(
    tmp_path: Path, body: str, expected: str
) -> None:
    """``sigterm_raises`` raises once: a second SIGTERM, or a SIGHUP, while the launcher
    stops the group must not cut the stop short (the group left training, runs left open).
    A signal whose exception a finalizer swallowed still stops the block."""
    script = LAUNCHER.format(body=textwrap.indent(textwrap.dedent(body), " " * 8))
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines() == [expected, "restored"], done.stderr[-3000:]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("pass", ("FINISHED", "no exception", "restored")),
        ("raise RuntimeError('bad data')", ("FAILED", "RuntimeError", "restored")),
    ],
)
def test_without_a_signal_the_run_keeps_the_status_it_earned(
    tmp_path: Path, body: str, expected: tuple[str, str, str]
) -> None:
    assert run_case(tmp_path, body) == expected


def test_the_launcher_that_stopped_the_group_kills_runs_that_failed_after_the_stop(
    tmp_path: Path,
) -> None:
    """Rank 0 may end its run FAILED before its own signal is handled; the launcher knows
    it stopped the group and corrects that, and only that."""
    settings = Settings(state_dir=tmp_path / "state")
    client = tracking_client(settings.mlflow_uri)
    experiment = client.create_experiment(settings.experiment)
    since = int(time.time() * 1000) - 60_000
    stopped = since + 30_000

    def run(status: str, ended: int | None, job: str = "job-a", start: int = since) -> str:
        run_id = client.create_run(experiment, start_time=start, tags={TAG_JOB: job}).info.run_id
        if status != "RUNNING":
            client.set_terminated(run_id, status=status, end_time=ended)
        return run_id

    runs = {
        "running": run("RUNNING", None),
        "failed after the stop": run("FAILED", stopped + 5),
        "failed before the stop": run("FAILED", stopped - 5),
        "finished": run("FINISHED", stopped + 5),
        "kept": run("RUNNING", None),
        "another job": run("FAILED", stopped + 5, job="job-b"),
        "an earlier launch": run("RUNNING", None, start=since - 1),
    }
    _end_orphan_runs(settings, "job-a", since, runs["kept"], stopped)
    statuses = {name: client.get_run(run_id).info.status for name, run_id in runs.items()}
    assert statuses == {
        "running": "KILLED",
        "failed after the stop": "KILLED",
        "failed before the stop": "FAILED",
        "finished": "FINISHED",
        "kept": "RUNNING",
        "another job": "FAILED",
        "an earlier launch": "RUNNING",
    }
    assert client.get_run(runs["failed after the stop"]).info.end_time == stopped + 5


def test_a_launch_that_ended_without_a_stop_leaves_failed_runs_failed(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    client = tracking_client(settings.mlflow_uri)
    experiment = client.create_experiment(settings.experiment)
    since = int(time.time() * 1000) - 1_000
    run_id = client.create_run(experiment, start_time=since, tags={TAG_JOB: "job"}).info.run_id
    client.set_terminated(run_id, status="FAILED")
    _end_orphan_runs(settings, "job", since, None)
    assert client.get_run(run_id).info.status == "FAILED"
