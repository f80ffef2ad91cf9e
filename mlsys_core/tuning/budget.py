"""An epoch budget for one tuning run: the training epochs its trials may spend in all, handed
out one epoch at a time, just before the trainer trains it, so the run never trains more.

The ledger lives in this process and is shared by the run's trial threads (found by the
run's key, as trial tasks receive plain, serializable parameters). Each tuning run (each
``start_study``) has its own budget; workers on other machines joining the same study spend
their own.
"""

from __future__ import annotations

import threading


class EpochBudget:
    """Epochs still to hand out; thread-safe."""

    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError(f"an epoch budget needs at least one epoch, got {total}")
        self.total = total
        self._taken = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Reserve one epoch; False when none is left (the caller does not train it)."""
        with self._lock:
            if self._taken >= self.total:
                return False
            self._taken += 1
            return True

    @property
    def taken(self) -> int:
        with self._lock:
            return self._taken

    @property
    def left(self) -> int:
        with self._lock:
            return self.total - self._taken


_ledgers: dict[str, EpochBudget] = {}
_ledgers_lock = threading.Lock()


def budget_for(key: str, total: int) -> EpochBudget:
    """The run's ledger in this process, created on first use."""
    with _ledgers_lock:
        if key not in _ledgers:
            _ledgers[key] = EpochBudget(total)
        return _ledgers[key]


def drop_budget(key: str) -> None:
    """Forget a finished run's ledger."""
    with _ledgers_lock:
        _ledgers.pop(key, None)
