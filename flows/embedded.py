"""Running flows in-process on Prefect's embedded (ephemeral) API, as ``make demo`` does."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import prefect.settings
from prefect import Flow
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, PREFECT_HOME, temporary_settings

from mlsys_core.config import Settings, ensure_writable_folders
from mlsys_core.stack.prefect_server import SERVER_SETTINGS

_checked: set[tuple[Path, Path]] = set()


def check_state_folders() -> None:
    """Fail in one line, at once, when the state folder or ``PREFECT_HOME`` cannot be
    created or written. Without this, Prefect's embedded server cannot create its database
    and the flow call waits for it to start until it times out (minutes), with the cause
    only in a warning above. Each pair of folders is checked once per process."""
    key = (Settings().root, Path(PREFECT_HOME.value()).expanduser().resolve())
    if key in _checked:
        return
    ensure_writable_folders({"MLSYS_STATE_DIR": key[0], "PREFECT_HOME": key[1]})
    _checked.add(key)


class EntryFlow(Flow):
    """A Prefect flow whose call first checks the state folders (see
    :func:`check_state_folders`); a worker's run goes through the engine, where the
    server is already up, and is unchanged."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        check_state_folders()
        return super().__call__(*args, **kwargs)


def flow(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """``prefect.flow`` for this package's flows: the same options, an :class:`EntryFlow`."""
    if fn is None:
        return lambda f: EntryFlow(fn=f, **options)
    return EntryFlow(fn=fn, **options)


@contextmanager
def embedded_run() -> Iterator[None]:
    """Settings for flows called in this process, not launched by a worker.

    Flow-run heartbeats let a server notice a worker's run that died. An in-process run has
    no worker to lose: its caller sees a crash directly. The heartbeat thread sleeps in 1 s
    steps and is joined when each flow run ends, which costs up to a second per subflow
    (six of them in ``ml_pipeline``), so it is switched off here. Deployments keep it.

    The temporary server a first flow call starts here batches its task-run writes, as the
    servers ``mlsys`` starts do (``SERVER_SETTINGS``), unless the environment says otherwise.
    """
    updates: dict[Any, Any] = {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
    for name, value in SERVER_SETTINGS.items():
        if name not in os.environ:
            updates[getattr(prefect.settings, name)] = value
    with temporary_settings(updates=updates):
        yield
