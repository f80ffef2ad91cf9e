"""Named crash points: every place where a writer writes or commits says so by name.

``crash_point("lake.part.rename")`` sits at a write site (a part file half written, a
manifest written but not renamed, a commit just made). It does nothing unless a test armed
that name, so production code pays one global lookup. The crash harness
(``tests/crash``) records which points a stage passes, then fails the stage at each one in
turn, raising an exception in process or freezing a child process there for its parent to
``SIGKILL``, and checks the stores afterwards.

Arming, in process::

    with armed("lake.part.rename", nth=2):  # the second time the point is reached
        run_stage()                          # raises InjectedCrash there

and for a child process, through the environment (read when the child first reaches a
point): ``MLSYS_CRASH_AT=lake.part.rename#2``, ``MLSYS_CRASH_ACTION=pause`` and
``MLSYS_CRASH_READY=/path/to/flag``; the child creates the flag file at the point and
waits there to be killed.

A new write site gets a ``crash_point`` with a literal name; the inventory test scans the
sources for write primitives and fails on a site without one, and on a point that no
harness stage reaches.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Action = Literal["raise", "pause"]
ENV_AT = "MLSYS_CRASH_AT"
ENV_ACTION = "MLSYS_CRASH_ACTION"
ENV_READY = "MLSYS_CRASH_READY"
PAUSE_LIMIT_S = 120.0  # a paused child nobody kills ends itself, so no test hangs


class InjectedCrash(RuntimeError):
    """The failure a crash harness injects at an armed point."""


@dataclass
class _Plan:
    point: str | None = None
    nth: int = 1
    action: Action = "raise"
    ready: Path | None = None
    hits: Counter[str] = field(default_factory=Counter)
    order: list[str] = field(default_factory=list)  # points in the order first reached
    fired: bool = False


_lock = threading.Lock()
_plan: _Plan | None = None
_env_read = False


def crash_point(name: str) -> None:
    """Mark a write site; fails here only when a harness armed ``name``."""
    if _plan is None and _env_read:
        return
    _reach(name)


def _reach(name: str) -> None:
    global _plan, _env_read  # noqa: PLW0603 - process-wide test switch, set once
    with _lock:
        if not _env_read:
            _env_read = True
            if _plan is None and (spec := os.environ.get(ENV_AT)):
                _plan = _from_env(spec)
        plan = _plan
        if plan is None:
            return
        plan.hits[name] += 1
        if plan.hits[name] == 1:
            plan.order.append(name)
        fire = not plan.fired and name == plan.point and plan.hits[name] == plan.nth
        if fire:
            plan.fired = True
    if not fire:
        return
    if plan.action == "pause":
        _pause(plan, name)
    raise InjectedCrash(f"injected crash at {name} (#{plan.nth})")


def _from_env(spec: str) -> _Plan:
    point, _, nth = spec.partition("#")
    action = os.environ.get(ENV_ACTION, "raise")
    if action not in ("raise", "pause"):
        raise ValueError(f"{ENV_ACTION} must be raise or pause, not {action!r}")
    ready = os.environ.get(ENV_READY)
    return _Plan(
        point=point, nth=int(nth or 1), action=action, ready=Path(ready) if ready else None
    )  # type: ignore[arg-type]


def _pause(plan: _Plan, name: str) -> None:
    """Tell the parent where we stopped, then wait for its SIGKILL mid-write."""
    if plan.ready is not None:
        tmp = plan.ready.with_name(plan.ready.name + ".tmp")
        tmp.write_text(f"{name}#{plan.nth}")
        os.replace(tmp, plan.ready)
    deadline = time.monotonic() + PAUSE_LIMIT_S
    while time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGKILL)  # nobody came: die as the parent would have killed us


@contextmanager
def armed(
    point: str, nth: int = 1, action: Action = "raise", ready: Path | None = None
) -> Iterator[_Plan]:
    """Fail at the ``nth`` time ``point`` is reached in this process (``pause``: create
    ``ready`` and wait there to be killed)."""
    with _installed(_Plan(point=point, nth=nth, action=action, ready=ready)) as plan:
        yield plan


@contextmanager
def recording() -> Iterator[_Plan]:
    """Count the points reached (``plan.hits``, ``plan.order``) without failing any."""
    with _installed(_Plan()) as plan:
        yield plan


@contextmanager
def _installed(plan: _Plan) -> Iterator[_Plan]:
    global _plan, _env_read  # noqa: PLW0603
    with _lock:
        previous, _plan, _env_read = _plan, plan, True
    try:
        yield plan
    finally:
        with _lock:
            _plan = previous
