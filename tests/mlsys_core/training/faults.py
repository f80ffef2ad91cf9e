"""Fault injection for the torchrun tests: real signals to real worker processes."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path


class Killer:
    """Sends ``sig`` to a rank's process (or its torchrun agent) once ``ready()`` holds,
    up to ``times`` times, each time to a new process (torchrun restarts the group)."""

    def __init__(
        self,
        job_dir: Path,
        ready: Callable[[], bool],
        rank: int = 1,
        sig: signal.Signals = signal.SIGKILL,
        times: int = 1,
        agent: bool = False,
    ) -> None:
        self.job_dir, self.ready, self.rank, self.sig = job_dir, ready, rank, sig
        self.times, self.agent = times, agent
        self.killed: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Killer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        pid_file = self.job_dir / f"rank{self.rank}.pid"
        while not self._stop.is_set() and len(self.killed) < self.times:
            time.sleep(0.05)
            try:
                pid = int(pid_file.read_text())
            except (OSError, ValueError):
                continue
            if pid in self.killed or not self.ready():
                continue
            target = _parent(pid) if self.agent else pid
            try:
                os.kill(target, self.sig)
            except ProcessLookupError:
                continue
            self.killed.append(pid)


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])
