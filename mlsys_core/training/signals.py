"""SIGTERM during training ends the MLflow run as KILLED instead of leaving it RUNNING or
FAILED."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import mlflow


class TrainingTerminated(BaseException):
    """Raised in the main thread when the process gets SIGTERM.

    A BaseException, like KeyboardInterrupt: ``except Exception`` blocks must not swallow it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"training stopped by signal {signal.Signals(signum).name}")
        self.signum = signum


class _Stop:
    """The SIGTERM handler of one run: it records the signal and raises once.

    Once only, so that a second signal cannot interrupt the run's closing; recorded, because
    the exception may never reach the run's ``with``: raised inside a finalizer Python prints
    it and goes on, and a peer rank stopped by the same signal can fail a collective first.
    """

    def __init__(self) -> None:
        self.signum: int | None = None

    def handler(self, signum: int, frame: object) -> None:
        first = self.signum is None
        self.signum = signum
        if first:
            raise TrainingTerminated(signum)


@contextmanager
def run_killed_on_sigterm(
    run_name: str | None = None, tags: dict[str, str] | None = None
) -> Iterator[mlflow.ActiveRun]:
    """``mlflow.start_run``, but a SIGTERM to the process while the run is open ends it
    KILLED and leaves the block as :class:`TrainingTerminated`, whatever exception the body
    ended with: whether the signal arrived decides, not which exception came out. Off the
    main thread (signals cannot be handled there) it is ``mlflow.start_run``."""
    run = mlflow.start_run(run_name=run_name, tags=tags)
    stop = _Stop()
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, stop.handler) if main else None
    try:
        status = "FAILED"
        try:
            yield run
            status = "FINISHED"
        except BaseException as exc:
            if stop.signum is not None and not isinstance(exc, TrainingTerminated):
                raise TrainingTerminated(stop.signum) from exc
            raise
        finally:
            # A handler still pending runs at the first call here, inside this try.
            try:
                _end_run(run.info.run_id, "KILLED" if stop.signum is not None else status)
            except TrainingTerminated:
                _end_run(run.info.run_id, "KILLED")
                raise
        if stop.signum is not None:  # its exception was lost inside the body: stop anyway
            raise TrainingTerminated(stop.signum)
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


def _end_run(run_id: str, status: str) -> None:
    """End the run if it is still the active one, else correct the status it ended with."""
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        mlflow.end_run(status=status)
    else:
        mlflow.MlflowClient().set_terminated(run_id, status=status)


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM (and SIGHUP: a closed terminal) into :class:`TrainingTerminated` in the
    main thread, so a launcher can stop its process group and close its runs before it
    exits, instead of dying at once and leaving torchrun and its workers training. Off the
    main thread it does nothing.

    It raises once: a second signal (a scheduler that repeats SIGTERM, a terminal closing
    while the job is stopped) must not interrupt the stopping of the group. A signal whose
    exception was lost in a finalizer still stops the block when its body ends.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stop = _Stop()
    previous = {sig: signal.signal(sig, stop.handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
        if stop.signum is not None:
            raise TrainingTerminated(stop.signum)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
