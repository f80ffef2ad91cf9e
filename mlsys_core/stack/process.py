"""Servers as child processes: each in a session of its own, with a log and a pid file,
waited on until it answers, and stopped with its whole process group (SIGTERM, then SIGKILL).

One implementation for everything that starts a server: ``mlsys stack``, the drift
scenario, the integration tests and the benchmarks.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mlsys_core.atomic import write_text_atomically


class ServerError(RuntimeError):
    """A server did not start, or did not answer in time."""


def tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def start(
    cmd: list[str],
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.Popen:
    """Start ``cmd`` in a new session (so stopping it reaches every child), output to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(  # noqa: S603 - our own argv, no shell
            cmd,
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            user=user,
            group=user,
            extra_groups=[] if user else None,
            preexec_fn=preexec_fn,  # noqa: PLW1509 - only sets process attributes
        )


def die_with_parent() -> None:
    """In a child before exec: get SIGTERM when the process that started it dies (even by
    SIGKILL), so no training group, replica or nginx outlives a killed launcher or
    supervisor. Linux only."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks (/proc), None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in {"Z", "X"}:
        return None
    return int(fields[19])


@dataclass(frozen=True)
class PidFile:
    """``<name>.pid``: the pid and its start time, so a reused pid is never mistaken for it."""

    path: Path

    def write(self, pid: int, **extra: object) -> None:
        """Record ``pid`` (and ``extra`` fields, such as the URL it serves) in one write."""
        record = {**extra, "pid": pid, "start": _start_ticks(pid)}
        write_text_atomically(self.path, json.dumps(record))

    def record(self) -> dict | None:
        """The whole record if its pid is that very process, still running; else None."""
        try:
            record = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        pid = record.get("pid") if isinstance(record, dict) else None
        if not isinstance(pid, int):
            return None
        started = _start_ticks(pid)
        if started is None or started != record.get("start"):
            return None
        return record

    def pid(self) -> int | None:
        """The recorded pid if that very process still runs, else None."""
        record = self.record()
        return None if record is None else record["pid"]

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def alive(pid: int) -> bool:
    return _start_ticks(pid) is not None


def stop_group(pid: int, timeout: float = 20.0, sig: int = signal.SIGTERM) -> bool:
    """Stop the process group led by ``pid`` (a session leader we started) and every
    descendant, also those that moved to a session of their own (a Prefect worker's flow
    runs, a launcher's torchrun): ``sig`` first, SIGKILL after ``timeout``. True when
    something had to be killed."""
    import psutil  # noqa: PLC0415

    try:
        family = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    for child in family:
        try:
            if os.getpgid(child.pid) != pid:
                child.send_signal(sig)
        except (psutil.NoSuchProcess, ProcessLookupError):
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not alive(pid) and not any(_alive(c) for c in family):
            break
        time.sleep(0.1)
    killed = False
    for child in family:
        if _alive(child):
            killed = True
            child.kill()
    try:
        # Stragglers of the group (children that ignored the signal) go too.
        killed = killed or alive(pid)
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    # SIGKILL is delivered asynchronously: return once the leader is gone (or a zombie).
    deadline = time.monotonic() + 10
    while True:
        _reap(pid)
        if not alive(pid) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return killed


def _alive(proc: object) -> bool:
    import psutil  # noqa: PLC0415

    try:
        return proc.status() != psutil.STATUS_ZOMBIE  # type: ignore[attr-defined]
    except psutil.NoSuchProcess:
        return False


def _reap(pid: int) -> None:
    """Collect the exit status when the process is our own child (no zombie is left)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop(proc: subprocess.Popen, timeout: float = 20.0, sig: int = signal.SIGTERM) -> None:
    """Stop a child started by :func:`start` and every process of its session."""
    if proc.poll() is None:
        stop_group(proc.pid, timeout, sig)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310 - loopback
            return 200 <= reply.status < 300
    except (OSError, urllib.error.URLError, ValueError):
        return False


def tcp_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    ready: Callable[[], bool],
    what: str,
    timeout: float,
    log: Path | None = None,
    running: Callable[[], bool] | None = None,
    interval: float = 0.5,
    failing: Callable[[], str] | None = None,
) -> float:
    """Poll ``ready`` until it holds; fail at once when ``running`` says the server exited
    or ``failing`` names why it will not get ready though it runs. Returns the seconds
    waited."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        if ready():
            return time.monotonic() - started
        if running is not None and not running():
            raise ServerError(
                f"{what} exited while starting; log {log}:\n{tail(log) if log else ''}"
            )
        reason = failing() if failing is not None else ""
        if reason:
            raise ServerError(f"{what} cannot start: {reason}")
        if time.monotonic() > deadline:
            raise ServerError(
                f"{what} not ready after {timeout:.0f} s; log {log}:\n{tail(log) if log else ''}"
            )
        time.sleep(interval)


def _tail_of(log: Path | None) -> str:
    return tail(log) if log else ""


def wait_http(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> float:
    """Wait until ``url`` answers 2xx while ``proc`` runs."""
    return wait_until(lambda: http_ok(url), url, timeout, log, lambda: proc.poll() is None)


@contextmanager
def background(
    cmd: list[str],
    env: dict[str, str] | None,
    log: Path,
    cwd: Path | None = None,
    ready_url: str | None = None,
    timeout: float = 180.0,
    preexec_fn: Callable[[], None] | None = None,
) -> Iterator[subprocess.Popen]:
    """A server for the length of a ``with`` block: started, optionally waited on until
    ``ready_url`` answers, and stopped with its whole session on exit."""
    proc = start(cmd, log, env=env, cwd=cwd, preexec_fn=preexec_fn)
    try:
        if ready_url is not None:
            wait_http(ready_url, proc, timeout, log)
        yield proc
    finally:
        stop(proc)
