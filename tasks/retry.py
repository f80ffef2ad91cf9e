"""Retry conditions shared by tasks."""

from __future__ import annotations

from prefect import Task
from prefect.client.schemas.objects import TaskRun
from prefect.states import State


def retry_on_io_errors(task: Task, task_run: TaskRun, state: State) -> bool:
    """Retry transient I/O failures only; bad data or bad code fails at once."""
    try:
        state.result()
    except (OSError, TimeoutError):
        return True
    except Exception:
        return False
    return False
