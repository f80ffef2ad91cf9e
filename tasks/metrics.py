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
import types
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
        # The wrapper gets the flow module's globals (below), so everything it uses from
        # here is bound as a closure variable.
        monitor_cls, record, logger = ResourceMonitor, _record, logging.getLogger("mlsys.metrics")

        def run(*args: Any, **kwargs: Any) -> Any:
            monitor = monitor_cls()
            try:
                with monitor:
                    result = fn(*args, **kwargs)
            except BaseException:
                record(monitor, "failed", None)
                raise
            try:
                count = rows(result)
            except Exception:  # noqa: BLE001 - a metrics bug must not fail the flow run
                logger.warning("rows processed by %s unknown", fn.__name__)
                count = None
            record(monitor, "completed", count)
            return result

        # Prefect resolves the flow's (string) annotations in ``fn.__globals__`` of the
        # function it wraps: give the wrapper the flow module's globals.
        wrapper = types.FunctionType(
            run.__code__, fn.__globals__, fn.__name__, run.__defaults__, run.__closure__
        )
        functools.update_wrapper(wrapper, fn)
        setattr(wrapper, METERED, True)
        return wrapper  # type: ignore[return-value]

    return decorate
