"""``prefect.task`` for this package's adapters, with typed arguments passed as one value.

Before each task run, Prefect walks every argument twice, field by field, looking for
futures and upstream results (``_resolve_parameters`` and ``collect_task_run_inputs``), and
rebuilds any pydantic model on the way. Our adapters take typed config and lake references:
a ``DatasetSpec`` alone is hundreds of nodes, and a partition's task gets the spec, the plan
and the settings. Those walks were most of a task run's client CPU (about 50 ms of 65 ms
per mapped partition here). So a pydantic-model argument goes to the engine as Prefect's
``opaque``: resolved when it is itself a future, and linked to the task that returned it,
but not walked into. A model is a value: a future inside one (possible only in a field
typed ``Any``) would reach the task unresolved. Every other argument (lists and dicts of
futures included) is handled as Prefect does.

Only where the annotation reaches the engine intact: direct calls, and submits and maps on
Prefect's thread and process pools. Dask serializes a task's parameters itself, and its
worker got a plain tuple where the annotation (a tuple subclass) was, so on Dask and any
other runner the arguments go as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import Task
from prefect.context import FlowRunContext
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner
from prefect.utilities.annotations import opaque, unmapped
from pydantic import BaseModel

# Runners known to hand the engine the parameters as they were submitted.
KEEPS_ANNOTATIONS: tuple[type, ...] = (ThreadPoolTaskRunner, ProcessPoolTaskRunner)


def _whole(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return opaque(value)
    if isinstance(value, unmapped) and isinstance(value.value, BaseModel):
        return opaque(value)  # map unwraps the annotation, then each call gets opaque(model)
    return value


def _runner_keeps_annotations() -> bool:
    context = FlowRunContext.get()
    return context is not None and isinstance(context.task_runner, KEEPS_ANNOTATIONS)


def _wrapped(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    return tuple(map(_whole, args)), {k: _whole(v) for k, v in kwargs.items()}


class ModelArgsTask(Task):
    """A Prefect task whose pydantic-model arguments are passed whole (see module)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        args, kwargs = _wrapped(args, kwargs)  # runs here, in this thread: no runner
        return super().__call__(*args, **kwargs)

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        if _runner_keeps_annotations():
            args, kwargs = _wrapped(args, kwargs)
        return super().submit(*args, **kwargs)

    def map(self, *args: Any, **kwargs: Any) -> Any:
        if _runner_keeps_annotations():
            args, kwargs = _wrapped(args, kwargs)
        return super().map(*args, **kwargs)

    def with_options(self, **options: Any) -> ModelArgsTask:
        changed = super().with_options(**options)
        changed.__class__ = type(self)  # Prefect's with_options builds a plain Task
        return changed


def task(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """``prefect.task`` with the same options, giving a :class:`ModelArgsTask`."""
    if fn is None:
        return lambda f: ModelArgsTask(fn=f, **options)
    return ModelArgsTask(fn=fn, **options)
