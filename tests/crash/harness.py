"""The crash-point harness: fail each stage that writes at each of its write points, by an
exception in process and by ``SIGKILL`` of a child frozen mid-write, and check the stores.

A *stage* is a small real run of one writer (an ingest, a cleaning, a feature build, a
batch score, a prediction-log flush ...). The harness runs it once uninterrupted,
recording which named crash points (``mlsys_core.crashpoints``) it passes and how often;
that run is the baseline. Then, for every point and occurrence, on a fresh copy of the
stage's starting state, it fails the stage there and checks:

- no reader sees a partial snapshot: every committed snapshot reads whole, with the rows
  its manifest promises;
- a clean snapshot and its quarantine snapshot appear together or not at all;
- the visible state is the one before the stage or the one after it, nothing between;
- after an exception, nothing of the failed run is left (no orphan, no temporary file)
  where the stage promises all-or-nothing;
- the rerun gives the same snapshot ids and the same rows as the baseline (no row lost or
  duplicated); after a kill, ``lake gc`` then removes every leftover without touching
  anything the rerun committed, and ``lake check`` finds nothing.

Adding a store: put ``crash_point("...")`` at its write sites, and register a stage
(``stores.py`` has those of the online store, the checkpoint store, the registry, the model
files, the launcher's files and the drift reference cache)::

    @stage("online-materialize", rolls_back=True)
    class OnlineMaterialize(Stage):
        def prepare(self, work: Path) -> None: ...          # the starting state, once
        def run(self, work: Path) -> object: ...            # the stage itself
        def state(self, work: Path) -> dict: ...            # what readers can see
        def check(self, work: Path) -> None: ...            # its own invariants

``state`` must return the same value after a rerun as after the baseline, and be the
``before`` or ``after`` value right after a crash; ``check`` raises on a broken
invariant; ``leftovers`` lists a store's temporary files and ``collect`` is its clean-up.
The lake's checks run for every stage on top.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import multiprocessing.context
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from mlsys_core import crashpoints
from mlsys_core.crashpoints import InjectedCrash
from mlsys_core.data.lake import LAYERS, Lake
from mlsys_core.data.maintenance import check_lake, collect_garbage

SHARED = "shared"  # a stage's read-only inputs (an MLflow store): linked, not copied
Mode = Literal["raise", "kill"]


class Stage:
    """One writer's small real run; subclass and register with ``@stage(name)``."""

    name: str = ""
    rolls_back: bool = True  # an exception leaves no file of the failed run behind
    # Right after a crash, readers see the state before or after (``per_key``: each entry
    # of the state, e.g. each view of the online store, is before or after on its own).
    atomic: bool | Literal["per_key"] = True
    timeout_s: float = 120.0

    def prepare(self, work: Path) -> None:
        """Build the starting state under ``work`` (inputs, earlier stages' output)."""

    def run(self, work: Path) -> object:
        raise NotImplementedError

    def rerun(self, work: Path, handle: object) -> object:
        """What recovery does after a failure (default: run the stage again)."""
        return self.run(work)

    def state(self, work: Path) -> dict[str, Any]:
        """What readers can see: every committed snapshot of the lake with its rows."""
        return lake_state(Lake(work / "lake"))

    def check(self, work: Path) -> None:
        """The stage's own invariants after a crash (the lake's run for every stage)."""

    def leftovers(self, work: Path) -> list[str]:
        """Files of an unfinished write that nothing references (the lake's, by default,
        as ``lake check`` finds them; a store adds its own temporary files)."""
        return leftovers(Lake(work / "lake"))

    def collect(self, work: Path) -> None:
        """After a kill and the rerun: the store's own clean-up of what a dead writer
        left (the lake's: ``lake gc``), as an operator or the next writer runs it."""
        collect_garbage(Lake(work / "lake"), grace=timedelta(0))

    def copy(self, template: Path, target: Path) -> Path:
        """A case's own copy of the starting state (a store outside the folder copies its
        part too)."""
        return fresh_copy(template, target)


STAGES: dict[str, Stage] = {}


def stage(name: str, rolls_back: bool = True) -> Callable[[type[Stage]], type[Stage]]:
    def register(cls: type[Stage]) -> type[Stage]:
        instance = cls()
        instance.name, instance.rolls_back = name, rolls_back
        STAGES[name] = instance
        return cls

    return register


# -- what a reader sees --------------------------------------------------------------------
def lake_state(lake: Lake) -> dict[str, Any]:
    """Every committed snapshot (layer/table/id) with its row count and a digest of its rows,
    order-insensitive. Reading each one whole is itself the check that none is partial."""
    state: dict[str, Any] = {}
    for layer in LAYERS:
        folder = lake.root / layer
        if not folder.is_dir():
            continue
        for table_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            for ref in lake.snapshots(layer, table_dir.name):
                frame = lake.read(ref)
                key = f"{layer}/{ref.table}/{ref.snapshot_id}"
                if len(frame) != ref.rows:
                    raise AssertionError(f"{key}: read {len(frame)} rows, manifest: {ref.rows}")
                state[key] = (ref.rows, rows_digest(frame))
    return state


def rows_digest(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "empty"
    ordered = frame[sorted(frame.columns)]
    hashes = pd.util.hash_pandas_object(ordered.astype(str), index=False).sort_values()
    return hashlib.sha256(hashes.to_numpy().tobytes()).hexdigest()[:16]


def check_pairs(lake: Lake) -> None:
    """A clean snapshot and its quarantine appear together or not at all."""
    for table_dir in sorted({p.name for layer in ("clean", "quarantine")
                             for p in (lake.root / layer).glob("*") if p.is_dir()}):  # fmt: skip
        clean = {r.snapshot_id for r in lake.snapshots("clean", table_dir)}
        quarantine = {r.snapshot_id for r in lake.snapshots("quarantine", table_dir)}
        if clean != quarantine:
            raise AssertionError(f"{table_dir}: clean {clean} vs quarantine {quarantine}")
        latest_q, latest_c = lake.latest("quarantine", table_dir), lake.latest("clean", table_dir)
        if (latest_q is None) != (latest_c is None) or (
            latest_q and latest_c and latest_q.snapshot_id != latest_c.snapshot_id
        ):
            raise AssertionError(f"{table_dir}: latest quarantine {latest_q} vs clean {latest_c}")


def leftovers(lake: Lake) -> list[str]:
    """Every leftover ``lake check`` finds, however young (nothing is running now)."""
    report = check_lake(lake, grace=timedelta(0))
    return [f"{f.kind}: {f.path}" for f in report.findings]


# -- cases ---------------------------------------------------------------------------------
@dataclass
class Baseline:
    stage: Stage
    template: Path  # the prepared starting state
    before: dict[str, Any]
    after: dict[str, Any]
    hits: dict[str, int]  # crash point -> times passed, in the order first passed


@dataclass
class Case:
    stage: str
    point: str
    nth: int
    mode: Mode
    leftovers_after_crash: list[str] = field(default_factory=list)  # kill: gc's job
    leftovers_final: list[str] = field(default_factory=list)  # after rerun (and gc): none
    seconds: float = 0.0


def prepare(stage_: Stage, root: Path) -> Baseline:
    """The stage's starting state, and an uninterrupted run of it, recorded."""
    template = root / f"{stage_.name}-template"
    template.mkdir(parents=True)
    stage_.prepare(template)
    before = stage_.state(template)
    run_dir = stage_.copy(template, root / f"{stage_.name}-baseline")
    with crashpoints.recording() as plan:
        stage_.run(run_dir)
    after = stage_.state(run_dir)
    assert after != before, f"{stage_.name}: the baseline run changed nothing"
    problems = stage_.leftovers(run_dir)
    assert not problems, f"{stage_.name}: an uninterrupted run left {problems}"
    hits = {name: plan.hits[name] for name in plan.order}
    return Baseline(stage_, template, before, after, hits)


def fresh_copy(template: Path, target: Path) -> Path:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(template, target, ignore=shutil.ignore_patterns(SHARED), symlinks=True)
    if (template / SHARED).exists():
        (target / SHARED).symlink_to(template / SHARED)
    return target


def cases_for(baseline: Baseline, every: bool) -> list[tuple[str, int]]:
    """Each point at its first and last occurrence (``every``: at all of them)."""
    out = []
    for point, count in baseline.hits.items():
        nths = range(1, count + 1) if every else sorted({1, count})
        out += [(point, n) for n in nths]
    return out


def run_case(baseline: Baseline, point: str, nth: int, mode: Mode, root: Path) -> Case:
    stage_ = baseline.stage
    start = time.perf_counter()
    work = stage_.copy(baseline.template, root / f"{stage_.name}-{mode}-{point}-{nth}")
    lake = Lake(work / "lake")
    case = Case(stage_.name, point, nth, mode)
    where = f"{stage_.name} @ {point}#{nth} ({mode})"
    handle: object = None
    if mode == "raise":
        with crashpoints.armed(point, nth) as plan:
            try:
                handle = stage_.run(work)
            except InjectedCrash:
                pass
        assert plan.fired, f"{where}: the point was not reached"
    else:
        _kill_child_at(stage_, work, point, nth, where)
    # Right after the crash: whole snapshots only, pairs together, before or after.
    crashed = stage_.state(work)
    check_pairs(lake)
    stage_.check(work)
    if stage_.atomic == "per_key":
        for key in {*crashed, *baseline.before, *baseline.after}:
            seen, options = crashed.get(key), (baseline.before.get(key), baseline.after.get(key))
            assert seen in options, f"{where}: half of {key} is visible"
    elif stage_.atomic:
        assert crashed in (baseline.before, baseline.after), f"{where}: half a stage is visible"
    if mode == "raise" and stage_.rolls_back:
        assert not (left := stage_.leftovers(work)), f"{where}: the failed run left {left}"
    stage_.rerun(work, handle)
    assert stage_.state(work) == baseline.after, f"{where}: the rerun differs from the baseline"
    check_pairs(lake)
    stage_.check(work)
    case.leftovers_after_crash = stage_.leftovers(work)
    if mode == "raise":
        assert not case.leftovers_after_crash, f"{where}: left {case.leftovers_after_crash}"
    else:
        stage_.collect(work)
        assert stage_.state(work) == baseline.after, f"{where}: gc changed what readers see"
    case.leftovers_final = stage_.leftovers(work)
    assert not case.leftovers_final, f"{where}: left {case.leftovers_final}"
    shutil.rmtree(work, ignore_errors=True)
    case.seconds = time.perf_counter() - start
    return case


_FORKS: multiprocessing.context.ForkServerContext | None = None


def _forks() -> multiprocessing.context.ForkServerContext:
    """A fork server that has imported the stages: each child starts in milliseconds."""
    global _FORKS  # noqa: PLW0603 - one server per test session
    if _FORKS is None:
        _FORKS = multiprocessing.get_context("forkserver")
        # The batch-score stage's MLflow and torch too: imported once, not per child.
        _FORKS.set_forkserver_preload(
            ["tests.crash.child", "mlsys_core.serving.batch", "mlsys_core.registry.lifecycle"]
        )
    return _FORKS


def _kill_child_at(stage_: Stage, work: Path, point: str, nth: int, where: str) -> None:
    """Run the stage in a child that freezes at the point; SIGKILL it there."""
    from tests.crash import child as child_module  # noqa: PLC0415 - imports the stages

    ready = work.parent / f".{work.name}.ready"
    child = _forks().Process(
        target=child_module.run_armed, args=(stage_.name, str(work), point, nth, str(ready))
    )
    child.start()
    deadline = time.monotonic() + stage_.timeout_s
    try:
        while not ready.exists():
            if not child.is_alive():
                raise AssertionError(f"{where}: the child ended ({child.exitcode}) before it")
            if time.monotonic() > deadline:
                raise AssertionError(f"{where}: the child did not reach the point in time")
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)  # mid-write: the child waits at the point
        child.join(timeout=30)
        assert child.exitcode == -signal.SIGKILL, child.exitcode
    finally:
        if child.is_alive():
            child.kill()
            child.join()
        child.close()
    ready.unlink()


@dataclass
class Summary:
    points: set[str] = field(default_factory=set)
    cases: list[Case] = field(default_factory=list)

    @property
    def leftovers_at_end(self) -> int:
        """Leftover files after every rerun (and gc, for kills): the goal is 0."""
        return sum(len(c.leftovers_final) for c in self.cases)

    def line(self) -> str:
        by_mode = {m: sum(c.mode == m for c in self.cases) for m in ("raise", "kill")}
        stages = sorted({c.stage for c in self.cases})
        killed = sum(len(c.leftovers_after_crash) for c in self.cases if c.mode == "kill")
        return (
            f"crash harness: {len(self.points)} crash points covered across {len(stages)} "
            f"stages ({', '.join(stages)}); {len(self.cases)} cases ({by_mode['raise']} "
            f"exception, {by_mode['kill']} SIGKILL); leftovers of killed runs collected by gc: "
            f"{killed}; orphan files after the harness: {self.leftovers_at_end}"
        )


SUMMARY = Summary()  # this process's cases, until its test's report carries them
CASES_PROPERTY = "crash_cases"  # the report's user property that carries them


def record(cases: list[Case], baseline: Baseline) -> None:
    SUMMARY.cases += cases
    SUMMARY.points |= {c.point for c in cases}
