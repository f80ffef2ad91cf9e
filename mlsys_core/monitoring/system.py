"""System metrics of one run: wall time, peak memory and rows processed.

``ResourceMonitor`` samples the resident memory of this process and its children (torchrun
workers, process-pool tasks) in a background thread, because a process's own high-water
mark (``ru_maxrss``) covers its whole life, not one run. A peak shorter than the sampling
interval can be missed; the end-of-run reading is always included.
Each run's record is one JSON file, written atomically, under ``<state>/monitoring/runs/``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Literal

import psutil
from pydantic import BaseModel, ConfigDict

from mlsys_core.atomic import write_text_atomically

MB = 1024 * 1024


def process_tree_rss() -> int:
    """Resident bytes of this process plus its live descendants."""
    if _PROC_CHILDREN:
        return _proc_tree_rss(os.getpid())
    me = psutil.Process()
    total = me.memory_info().rss
    for child in me.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:  # exited between listing and reading
            continue
    return total


# psutil finds children by reading every process's stat file, which cost 1.5 ms a sample,
# 10 times a second, in each open monitor; Linux lists a thread's children directly.
_PROC_CHILDREN = Path(f"/proc/self/task/{threading.get_native_id()}/children").exists()
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _proc_tree_rss(pid: int) -> int:
    total, todo = 0, [pid]
    while todo:
        proc = todo.pop()
        try:
            with open(f"/proc/{proc}/statm", "rb") as statm:
                total += int(statm.read().split()[1]) * _PAGE
            threads = os.listdir(f"/proc/{proc}/task")
        except (OSError, IndexError, ValueError):  # exited while we looked
            continue
        for thread in threads:
            try:
                with open(f"/proc/{proc}/task/{thread}/children", "rb") as children:
                    todo += [int(child) for child in children.read().split()]
            except (OSError, ValueError):
                continue
    return total


class ResourceMonitor:
    """Context manager: wall time and peak resident memory while the block runs.

    Monitors open at once (a pipeline's and its running subflow's) share one sampling
    thread and each of its readings.
    """

    def __init__(self, interval_s: float = 0.1) -> None:
        self.interval_s = interval_s
        self.started_at = datetime.now(UTC)
        self.duration_s = 0.0
        self.start_rss = 0
        self.peak_rss = 0
        self._t0 = 0.0

    def _seen(self, rss: int) -> None:
        self.peak_rss = max(self.peak_rss, rss)

    def __enter__(self) -> ResourceMonitor:
        self.started_at = datetime.now(UTC)
        self._t0 = time.perf_counter()
        self.start_rss = self.peak_rss = process_tree_rss()
        _SAMPLER.add(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _SAMPLER.remove(self)
        self._seen(process_tree_rss())
        self.duration_s = time.perf_counter() - self._t0


class _Sampler:
    """The process's one sampling thread: runs while a monitor is open, at the shortest
    interval any open monitor asks for."""

    def __init__(self) -> None:
        self._monitors: set[ResourceMonitor] = set()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None

    def add(self, monitor: ResourceMonitor) -> None:
        with self._lock:
            self._monitors.add(monitor)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="resource-monitor", daemon=True
                )
                self._thread.start()
            self._changed.notify()

    def remove(self, monitor: ResourceMonitor) -> None:
        with self._lock:
            self._monitors.discard(monitor)
            self._changed.notify()

    def _loop(self) -> None:
        while True:
            with self._lock:
                if not self._monitors:
                    self._thread = None
                    return
                # Woken early when a monitor closes: the thread ends with the last one.
                self._changed.wait(min(m.interval_s for m in self._monitors))
                if not self._monitors:
                    continue
            rss = process_tree_rss()
            with self._lock:
                for monitor in self._monitors:
                    monitor._seen(rss)


_SAMPLER = _Sampler()


def _after_fork_in_child() -> None:
    # The parent's sampling thread does not exist in a forked child.
    global _SAMPLER  # noqa: PLW0603
    _SAMPLER = _Sampler()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class RunMetrics(BaseModel):
    """What one flow run cost."""

    model_config = ConfigDict(frozen=True)

    flow: str
    run_id: str
    status: Literal["completed", "failed"]
    started_at: datetime
    duration_s: float
    rows_processed: int | None
    peak_memory_mb: float
    start_memory_mb: float


def run_metrics(
    monitor: ResourceMonitor,
    flow: str,
    run_id: str,
    status: Literal["completed", "failed"],
    rows: int | None,
) -> RunMetrics:
    return RunMetrics(
        flow=flow,
        run_id=run_id,
        status=status,
        started_at=monitor.started_at,
        duration_s=round(monitor.duration_s, 4),
        rows_processed=rows,
        peak_memory_mb=round(monitor.peak_rss / MB, 2),
        start_memory_mb=round(monitor.start_rss / MB, 2),
    )


def runs_dir(state_root: Path) -> Path:
    return Path(state_root) / "monitoring" / "runs"


def save_run_metrics(metrics: RunMetrics, state_root: Path) -> Path:
    """One file per run: ``runs/<flow>/<start time>-<run id>.json``."""
    stamp = metrics.started_at.strftime("%Y%m%dT%H%M%S%f")
    path = runs_dir(state_root) / metrics.flow / f"{stamp}-{metrics.run_id}.json"
    write_text_atomically(path, metrics.model_dump_json())
    return path


def read_run_metrics(state_root: Path, limit: int = 50) -> list[RunMetrics]:
    """The newest ``limit`` run records of every flow, newest first."""
    files = sorted(runs_dir(state_root).glob("*/*.json"), key=lambda p: p.name, reverse=True)
    return [RunMetrics.model_validate(json.loads(p.read_text())) for p in files[:limit]]


def rows_in(result: object, depth: int = 0) -> int | None:
    """Rows a flow's result reports: its ``rows_processed``, or the sum of the ``rows``
    fields of the snapshot references it holds (a dict or list of them); None if none."""
    if depth > 3 or result is None:  # noqa: PLR2004
        return None
    for field in ("rows_processed", "rows"):
        value = getattr(result, field, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    if isinstance(result, dict):
        items = list(result.values())
    elif isinstance(result, list | tuple):
        items = list(result)
    elif isinstance(result, BaseModel):
        items = [getattr(result, f) for f in type(result).model_fields]
    else:
        return None
    counts = [c for c in (rows_in(i, depth + 1) for i in items) if c is not None]
    return sum(counts) if counts else None
