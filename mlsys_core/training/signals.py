"""SIGTERM during training ends the MLflow run as KILLED instead of leaving it RUNNING."""

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


@contextmanager
def ends_killed_on_sigterm() -> Iterator[None]:
    """Inside an active MLflow run: turn SIGTERM into :class:`TrainingTerminated` and mark the
    run KILLED before it propagates. Off the main thread (signals cannot be handled there) it
    does nothing, and the run ends FAILED on any exception as usual."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise TrainingTerminated(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    except TrainingTerminated:
        mlflow.end_run(status="KILLED")
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM (and SIGHUP: a closed terminal) into :class:`TrainingTerminated` in the
    main thread, so a launcher can stop its process group and close its runs before it
    exits, instead of dying at once and leaving torchrun and its workers training. Off the
    main thread it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise TrainingTerminated(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
