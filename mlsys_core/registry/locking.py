"""The registry lock: one per registered model, shared by every caller on every machine.

MLflow cannot compare-and-set an alias, so every read-check-move of a model's stages runs
under this lock, whoever runs it: the ``mlsys`` CLI, a flow on any Prefect worker, a
notebook. It lives where all of them already meet, the MLflow tracking store (a SQLite file
on one machine, the database behind a team's ``mlflow server``), and it rests on the one
atomic counter MLflow offers: model version numbers. The store gives each new version of a
registered model the next number in one transaction and never reuses a number, not even a
deleted one. So a ticket lock (first come, first served):

- the lock of model ``M`` is the registered model ``mlsys-lock.M``; to acquire it, a caller
  creates a version of it, its *ticket*;
- the lowest live ticket holds the lock; the others poll until theirs is the lowest;
- releasing deletes the ticket.

A holder that crashed must not block everyone: each ticket carries a heartbeat tag, bumped
by its owner every ``beat_s`` while it waits or holds. A waiter that sees a ticket's
heartbeat unchanged for ``lease_s`` *by its own monotonic clock* deletes that ticket. No two
machines' clocks are ever compared, and deleting a dead ticket cannot release a live one
(every number is unique), so a crash costs one lease and never makes two holders. The one
way to get two is a holder that stalls (stopped, swapped out) for longer than the lease: it
then finds its ticket gone when it leaves, and ``LockLost`` says its critical section may
have overlapped another (``mlsys registry check`` shows any damage, ``--repair`` mends it).

Cost: about four store calls per acquisition (create, one search, delete, plus the polls of
a waiter), a few milliseconds on SQLite.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlsys_core.crashpoints import crash_point

LOCK_PREFIX = "mlsys-lock."
TAG_BEAT = "mlsys.lock.beat"
TAG_OWNER = "mlsys.lock.owner"
TICKET_SOURCE = "mlsys-lock:/ticket"  # no model behind it; absolute, as a server wants


class LockTimeout(TimeoutError):
    """The registry lock was not acquired in time."""


class LockLost(RuntimeError):
    """The holder's ticket was removed while it held the lock (it stalled past the lease)."""


def lock_model_name(model_name: str) -> str:
    return f"{LOCK_PREFIX}{model_name}"


def is_lock_model(name: str) -> bool:
    return name.startswith(LOCK_PREFIX)


def _missing(err: MlflowException) -> bool:
    return err.error_code == "RESOURCE_DOES_NOT_EXIST"


@dataclass
class _Ticket:
    number: int
    stop: threading.Event = field(default_factory=threading.Event)
    lost: threading.Event = field(default_factory=threading.Event)
    beater: threading.Thread | None = None


class RegistryLock:
    """The lock of one registered model, in the MLflow store ``client`` talks to.

    A context manager; one object may be shared by threads (each ``with`` takes its own
    ticket). Not reentrant.
    """

    def __init__(
        self,
        client: MlflowClient,
        model_name: str,
        timeout_s: float = 300.0,
        lease_s: float = 30.0,
        beat_s: float = 3.0,
        owner: str | None = None,
    ) -> None:
        if not beat_s < lease_s:
            raise ValueError(f"beat_s ({beat_s}) must be shorter than lease_s ({lease_s})")
        self.client = client
        self.model_name = model_name
        self.name = lock_model_name(model_name)
        self.timeout_s = timeout_s
        self.lease_s = lease_s
        self.beat_s = beat_s
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self._local = threading.local()

    # -- acquiring ---------------------------------------------------------------------------

    def __enter__(self) -> RegistryLock:
        if getattr(self._local, "ticket", None) is not None:
            raise RuntimeError(f"the registry lock of {self.model_name!r} is not reentrant")
        ticket = _Ticket(self._take_ticket())
        ticket.beater = threading.Thread(
            target=self._beat, args=(ticket,), name=f"registry-lock-{ticket.number}", daemon=True
        )
        ticket.beater.start()
        try:
            self._wait_for_turn(ticket)
        except BaseException:
            self._drop(ticket)
            raise
        self._local.ticket = ticket
        return self

    def _take_ticket(self) -> int:
        tags = {TAG_BEAT: "0", TAG_OWNER: f"{self.owner}:{threading.get_ident()}"}
        for attempt in range(20):
            try:
                crash_point("registry.lock.ticket")
                mv = self.client.create_model_version(self.name, TICKET_SOURCE, tags=tags)
                return int(mv.version)
            except MlflowException as err:
                if _missing(err):  # the first lock of this model: create its lock model
                    self._create_lock_model()
                elif "Model Version creation error" in str(err) and attempt < 19:
                    # The store's own retries on a numbering collision ran out (Postgres
                    # under many creators at once): try again a little later.
                    time.sleep(random.uniform(0.01, 0.1))
                else:
                    raise
        raise LockTimeout(f"no ticket for the registry lock {self.name} after 20 tries")

    def _create_lock_model(self) -> None:
        try:
            crash_point("registry.lock.model")
            self.client.create_registered_model(
                self.name,
                description=(
                    f"The mlsys registry lock of {self.model_name!r}: each version is a "
                    "ticket of a waiting or holding process. Not a model; do not use."
                ),
            )
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise

    def _tickets(self) -> dict[int, str]:
        """Live tickets -> their heartbeat value."""
        found = self.client.search_model_versions(f"name = '{self.name}'")
        return {int(v.version): v.tags.get(TAG_BEAT, "") for v in found}

    def _wait_for_turn(self, ticket: _Ticket) -> None:
        deadline = time.monotonic() + self.timeout_s
        seen: dict[int, tuple[str, float]] = {}  # ticket -> (heartbeat, when it last changed)
        pause = 0.01
        while True:
            now = time.monotonic()
            live = self._tickets()
            if ticket.number not in live:
                raise LockLost(
                    f"registry lock {self.name}: ticket {ticket.number} was removed while "
                    f"waiting (this process stalled for over {self.lease_s}s)"
                )
            ahead = sorted(n for n in live if n < ticket.number)
            if not ahead:
                return
            for number in ahead:
                beat = live[number]
                if number not in seen or seen[number][0] != beat:
                    seen[number] = (beat, now)
                elif now - seen[number][1] > self.lease_s:
                    self._delete(number)  # its owner stopped beating: it crashed
            if now > deadline:
                raise LockTimeout(
                    f"registry lock {self.name} not acquired in {self.timeout_s}s: "
                    f"{len(ahead)} ticket(s) ahead, the first is {ahead[0]}"
                )
            time.sleep(pause * random.uniform(0.5, 1.5))
            pause = min(pause * 1.5, 0.25)

    def _beat(self, ticket: _Ticket) -> None:
        count = 0
        while not ticket.stop.wait(self.beat_s):
            count += 1
            try:
                self.client.set_model_version_tag(self.name, ticket.number, TAG_BEAT, str(count))
            except MlflowException as err:
                if _missing(err):
                    ticket.lost.set()
                    return
                # A store hiccup: the next beat tries again, well within the lease.

    # -- releasing ---------------------------------------------------------------------------

    def _delete(self, number: int) -> bool:
        """Remove a ticket; False if it was already gone."""
        try:
            crash_point("registry.lock.release")  # a ticket left behind costs one lease
            self.client.delete_model_version(self.name, number)
            return True
        except MlflowException as err:
            if _missing(err):
                return False
            raise

    def _drop(self, ticket: _Ticket) -> bool:
        ticket.stop.set()
        if ticket.beater is not None:
            ticket.beater.join()
        return self._delete(ticket.number) and not ticket.lost.is_set()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        ticket: _Ticket = self._local.ticket
        self._local.ticket = None
        if not self._drop(ticket) and exc_type is None:
            raise LockLost(
                f"registry lock {self.name}: ticket {ticket.number} was removed while held "
                f"(this process stalled for over {self.lease_s}s); another process may have "
                "moved the registry at the same time: run `mlsys registry check`"
            )

    def holders(self) -> list[int]:
        """The live tickets, lowest (the holder) first: for diagnostics."""
        return sorted(self._tickets())
