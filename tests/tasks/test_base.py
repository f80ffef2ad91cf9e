"""Our task decorator passes pydantic-model arguments whole, and keeps what Prefect gives:
futures resolved, upstream links recorded, map and with_options working."""

from __future__ import annotations

import time

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.task_runners import TaskRunner
from prefect.utilities.annotations import opaque, unmapped
from pydantic import BaseModel

from flows import runners
from mlsys_core.config import Settings
from tasks.base import ModelArgsTask, _runner_keeps_annotations, _whole, task


class Ref(BaseModel):
    name: str
    parts: list[str]


@task
def make(name: str) -> Ref:
    return Ref(name=name, parts=[f"{name}-{i}" for i in range(3)])


@task
def count(ref: Ref, extra: int = 0) -> int:
    assert isinstance(ref, Ref)  # the task gets the model, never the annotation
    return len(ref.parts) + extra


def test_models_and_unmapped_models_are_wrapped_and_nothing_else():
    ref = Ref(name="a", parts=[])
    assert isinstance(_whole(ref), opaque) and _whole(ref).unwrap() is ref
    wrapped = _whole(unmapped(ref))
    assert isinstance(wrapped, opaque) and wrapped.unwrap().value is ref
    for value in ([ref], {"a": ref}, "text", 3, unmapped([1, 2])):
        assert _whole(value) is value


def test_calls_submits_maps_and_with_options_get_the_model():
    @flow
    def run() -> tuple[int, int, list[int], int]:
        ref = make("a")
        called = count(ref)
        submitted = count.submit(make.submit("b"), extra=1).result()  # a future of a model
        mapped = [f.result() for f in count.map(unmapped(ref), [10, 20])]
        renamed = count.with_options(name="count-renamed")
        assert isinstance(renamed, ModelArgsTask)
        return called, submitted, mapped, renamed(ref, extra=2)

    assert run() == (3, 4, [13, 23], 5)


def test_a_model_from_an_upstream_task_is_still_linked_to_it():
    @flow
    def run() -> tuple:
        made = make("a", return_state=True)
        used = count(made.result(), return_state=True)
        return made.state_details.task_run_id, used.state_details.task_run_id

    upstream, downstream = run()
    with get_client(sync_client=True) as client:
        deadline = time.monotonic() + 30  # task runs are recorded from events, a moment later
        while True:
            try:
                inputs = client.read_task_run(downstream).task_inputs
            except ObjectNotFound:
                inputs = {}
            if inputs.get("ref") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert [i.id for i in inputs["ref"]] == [upstream]


def test_only_runners_that_keep_annotations_get_them():
    """Dask hands a worker a plain tuple for any tuple subclass, so on Dask the task must get
    its arguments as they are (it received ``(settings,)`` for its settings otherwise)."""

    def runner(name: str) -> TaskRunner:  # the runners our flows use, one worker each
        return runners.build(Settings(task_runner=name, max_workers=1))

    @flow(task_runner=runner("dask"))
    def on_dask() -> tuple[bool, int, list[int]]:
        ref = Ref(name="a", parts=["x"])
        submitted = count.submit(ref, extra=1).result()
        mapped = [f.result() for f in count.map(unmapped(ref), [10, 20])]
        return _runner_keeps_annotations(), submitted, mapped

    @flow(task_runner=runner("processes"))
    def on_processes() -> tuple[bool, int]:
        return _runner_keeps_annotations(), count.submit(Ref(name="b", parts=[])).result()

    assert on_dask() == (False, 2, [11, 21])
    assert on_processes() == (True, 0)
