"""Which variant scores each record, and when a canary must be rolled back."""

from __future__ import annotations

import hashlib
import random
import threading
from collections import deque
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

from mlsys_core.registry.lifecycle import CHALLENGER, CHAMPION
from mlsys_core.serving.config import CanaryConfig, RolloutConfig


def bucket(key: str, salt: str) -> float:
    """A uniform number in [0, 1) from a key: the same key always lands in the same place."""
    digest = hashlib.blake2b(f"{salt}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class Router:
    """Assigns records to ``champion`` or ``challenger`` by the rollout mode.

    Canary draws at random per record (no stickiness needed: it is a safety check, not an
    experiment). A/B hashes the record's key fields so one entity always sees one variant
    and the outcomes of the two groups can be compared.
    """

    def __init__(self, rollout: RolloutConfig, ab_key: list[str], seed: int | None = None) -> None:
        self.rollout = rollout
        self.ab_key = ab_key
        self._rng = random.Random(seed)

    def assign(self, records: Sequence[BaseModel], challenger_live: bool) -> list[str]:
        mode = self.rollout.mode
        if not challenger_live or mode not in ("canary", "ab"):
            return [CHAMPION] * len(records)
        if mode == "canary":
            share = self.rollout.canary.share
            return [CHALLENGER if self._rng.random() < share else CHAMPION for _ in records]
        ab = self.rollout.ab
        out = []
        for record in records:
            values = record.__dict__
            key = "\x1e".join(str(values.get(k)) for k in self.ab_key)
            out.append(CHALLENGER if bucket(key, ab.salt) < ab.share else CHAMPION)
        return out


class CanaryGuard:
    """The challenger's recent error rate and p99 latency against the canary's limits."""

    def __init__(self, config: CanaryConfig) -> None:
        self.config = config
        self._errors: deque[bool] = deque(maxlen=config.window)
        self._latency: deque[float] = deque(maxlen=config.window)
        self._lock = threading.Lock()

    def observe(self, latencies_s: Sequence[float], failed: Sequence[bool]) -> None:
        with self._lock:
            self._latency.extend(latencies_s)
            self._errors.extend(failed)

    def reset(self) -> None:
        with self._lock:
            self._errors.clear()
            self._latency.clear()

    def verdict(self) -> str | None:
        """Why the canary must roll back, or None while it is within its limits."""
        with self._lock:
            n = len(self._errors)
            if n < self.config.min_requests:
                return None
            error_rate = sum(self._errors) / n
            p99_ms = float(np.percentile(np.fromiter(self._latency, float), 99)) * 1000
        if error_rate > self.config.max_error_rate:
            return (
                f"error rate {error_rate:.1%} over the last {n} records exceeds "
                f"{self.config.max_error_rate:.1%}"
            )
        if p99_ms > self.config.max_p99_ms:
            return (
                f"p99 latency {p99_ms:.0f} ms over the last {n} records exceeds "
                f"{self.config.max_p99_ms:.0f} ms"
            )
        return None
