"""System metrics for every flow run: one decorator line under ``@flow``.

    @flow(name="train", log_prints=True)
    @metered()                                   # or @metered(rows=lambda r: r.rows)
    def train(...): ...

The run's wall time, peak memory (this process and its children, sampled) and rows
processed (``rows(result)``, by default :func:`mlsys_core.monitoring.system.rows_in`) are
logged, saved under ``<state>/monitoring/runs/`` and read by the ``monitoring`` flow. A
failed run is recorded too, then its exception propagates.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from prefect.logging import get_run_logger
from prefect.runtime import flow_run

from mlsys_core.config import Settings
from mlsys_core.monitoring.system import ResourceMonitor, rows_in, run_metrics, save_run_metrics

F = TypeVar("F", bound=Callable[..., Any])
METERED = "__mlsys_metered__"


def _record(monitor: ResourceMonitor, status: Literal["completed", "failed"], rows: int | None):
    name = flow_run.flow_name or "flow"
    metrics = run_metrics(monitor, name, flow_run.id or "local", status, rows)
    path = save_run_metrics(metrics, Settings().root)
    try:
        logger: logging.Logger | logging.LoggerAdapter = get_run_logger()
    except Exception:  # noqa: BLE001 - outside a run context there is no run logger
        logger = logging.getLogger("mlsys.metrics")
    logger.info(
        "system metrics: %.2f s, peak memory %.0f MB, rows processed %s (%s)",
        metrics.duration_s,
        metrics.peak_memory_mb,
        metrics.rows_processed,
        path,
    )


def metered(rows: Callable[[Any], int | None] = rows_in) -> Callable[[F], F]:
    """Record duration, peak memory and ``rows(result)`` of each call of the flow function."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            monitor = ResourceMonitor()
            try:
                with monitor:
                    result = fn(*args, **kwargs)
            except BaseException:
                _record(monitor, "failed", None)
                raise
            try:
                count = rows(result)
            except Exception:  # noqa: BLE001 - a metrics bug must not fail the flow run
                logging.getLogger("mlsys.metrics").warning("rows of %s unknown", fn.__name__)
                count = None
            _record(monitor, "completed", count)
            return result

        setattr(run, METERED, True)
        return run  # type: ignore[return-value]

    return decorate
