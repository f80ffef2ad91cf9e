"""A per-model registry lock for callers without an orchestrator.

MLflow has no compare-and-set on aliases: two processes that each read "no champion" and
then set the alias would both promote. Every read-check-move of a stage alias therefore runs
under a lock. Flows use a Prefect global concurrency limit (works across machines that share
the Prefect API); plain Python callers on one machine use this file lock. Mixing the two for
the same model gives no mutual exclusion, so pick one per deployment.
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
import time
from pathlib import Path
from types import TracebackType


class LockTimeout(TimeoutError):
    """The registry lock was not acquired in time."""


class RegistryLock:
    """An exclusive ``flock`` on ``<folder>/registry-<model>.lock``; safe across threads
    and processes on one host (each ``with`` opens its own file description)."""

    def __init__(self, folder: Path, model_name: str, timeout_s: float = 120.0) -> None:
        slug = re.sub(r"[^A-Za-z0-9_.-]", "_", model_name)
        self.path = Path(folder) / f"registry-{slug}.lock"
        self.timeout_s = timeout_s
        self._local = threading.local()

    def __enter__(self) -> RegistryLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise LockTimeout(
                        f"registry lock {self.path} not acquired in {self.timeout_s}s"
                    ) from None
                time.sleep(0.05)
        self._local.fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        fd = self._local.fd
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
