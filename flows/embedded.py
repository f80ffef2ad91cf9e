"""Running flows in-process on Prefect's embedded (ephemeral) API, as ``make demo`` does."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings


@contextmanager
def embedded_run() -> Iterator[None]:
    """Settings for flows called in this process, not launched by a worker.

    Flow-run heartbeats let a server notice a worker's run that died. An in-process run has
    no worker to lose: its caller sees a crash directly. The heartbeat thread sleeps in 1 s
    steps and is joined when each flow run ends, which costs up to a second per subflow
    (six of them in ``ml_pipeline``), so it is switched off here. Deployments keep it.
    """
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield
