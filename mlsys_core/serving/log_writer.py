"""A buffered writer of the prediction log: requests hand rows over, a thread writes them.

Appending a batch of rows is a list append under a lock; building the Parquet part and
renaming it into the lake happens on a background thread every ``flush_rows`` rows or
``flush_interval_s`` seconds, and once more on shutdown. A failed flush keeps its rows for
the next try (up to ``max_pending_rows``; beyond that the oldest are dropped and counted),
so a full disk slows the log, never the responses.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import pandas as pd

from mlsys_core.data.lake import Lake
from mlsys_core.serving.prediction_log import append_predictions

log = logging.getLogger(__name__)


class PredictionLogWriter:
    def __init__(
        self,
        lake: Lake,
        dataset: str,
        flush_rows: int = 2000,
        flush_interval_s: float = 5.0,
        max_pending_rows: int = 1_000_000,
        on_written: Callable[[int], None] | None = None,
        on_failed: Callable[[Exception], None] | None = None,
        build: Callable[[list[dict]], pd.DataFrame] | None = None,
    ) -> None:
        self.lake, self.dataset = lake, dataset
        self.flush_rows, self.flush_interval_s = flush_rows, flush_interval_s
        self.max_pending_rows = max_pending_rows
        self.on_written, self.on_failed = on_written, on_failed
        self.build = build  # typed frame from row blocks (dicts of columns), once per flush
        self._pending: list[pd.DataFrame | Callable[[], pd.DataFrame | dict]] = []
        self._rows = 0
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def add(self, rows: pd.DataFrame) -> None:
        """Queue rows; cheap, never blocks on I/O."""
        with self._lock:
            self._pending.append(rows)
            self._rows += len(rows)
            full = self._rows >= self.flush_rows
        if full:
            self._wake.set()

    def add_lazy(self, build: Callable[[], pd.DataFrame | dict], rows: int) -> None:
        """Queue rows that the writer thread builds (a frame, or a block of columns for
        ``build``), keeping even that work off the caller."""
        with self._lock:
            self._pending.append(build)
            self._rows += rows
            full = self._rows >= self.flush_rows
        if full:
            self._wake.set()

    @property
    def pending_rows(self) -> int:
        return self._rows

    def flush(self) -> int:
        """Write everything queued so far as new log parts; returns the rows written."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending, self._rows = self._pending, [], 0
            if not batch:
                return 0
            try:
                parts = [part if isinstance(part, pd.DataFrame) else part() for part in batch]
                frames = [p for p in parts if isinstance(p, pd.DataFrame)]
                if blocks := [p for p in parts if isinstance(p, dict)]:
                    if self.build is None:
                        raise TypeError("row blocks need a build function")
                    frames.append(self.build(blocks))
                frame = pd.concat(frames, ignore_index=True)
            except Exception:  # noqa: BLE001 -- rows that cannot be built are lost; say so
                log.exception("building prediction-log rows failed")
                if self.on_failed:
                    self.on_failed(RuntimeError("log rows could not be built"))
                return 0
            try:
                append_predictions(self.lake, self.dataset, frame)
            except Exception as err:  # noqa: BLE001 -- any failure: keep the rows, retry later
                log.exception("prediction log flush of %d rows failed", len(frame))
                self._requeue(getattr(err, "unwritten", frame))  # rows appended stay once
                if self.on_failed:
                    self.on_failed(err)
                return 0
            if self.on_written:
                self.on_written(len(frame))
            return len(frame)

    def _requeue(self, frame: pd.DataFrame) -> None:
        with self._lock:
            self._pending.insert(0, frame)
            self._rows += len(frame)
            while self._rows > self.max_pending_rows and len(self._pending) > 1:
                oldest = self._pending.pop(0)
                self._rows -= len(oldest)
                self.dropped += len(oldest)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            self.flush()

    def close(self) -> None:
        """Stop the thread and write what is left."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush()
