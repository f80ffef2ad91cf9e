"""The online store on Redis: the same interface as the embedded SQLite store
(:class:`~mlsys_core.features.online.OnlineStoreBase`), for several machines or serving
replicas reading one store. Chosen by ``MLSYS_ONLINE_STORE=redis://HOST:PORT/DB``.

Layout, under a key prefix (default ``mlsys:online:``):

- ``views``: a hash, stored view name -> its :class:`ViewState` (JSON, row count included);
- ``rows:<view>``: a hash per view, encoded entity key -> ``[as_of_ns, payload]`` (JSON).

A view write (rows, the row count and the state) runs as one ``MULTI``/``EXEC`` transaction
whose last step is a small Lua script that counts the view's rows and stores the state with
that count: a reader sees the view's old rows and state or the new ones, never a mix, as
with SQLite's one transaction per view. redis-py sends the queued transaction in one
write at ``execute``: a writer that dies before it leaves nothing behind, and a connection
that drops mid-transaction makes Redis discard it (crash points ``online.redis.*``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from itertools import islice
from typing import Any

import redis

from mlsys_core.crashpoints import crash_point
from mlsys_core.features.online import (
    OnlineRow,
    OnlineStoreBase,
    OnlineStoreError,
    ViewState,
)

_CHUNK = 1000  # fields per HSET / HMGET
# Count the view's rows and store its state with that count (the state's JSON carries a
# placeholder the script replaces): runs inside the write's transaction.
_SET_STATE = """
local n = redis.call('HLEN', KEYS[2])
local state = string.gsub(ARGV[2], '"rows":%-1', '"rows":' .. n, 1)
redis.call('HSET', KEYS[1], ARGV[1], state)
return n
"""


def _chunks(items: Iterable[Any], size: int) -> Iterable[list[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


class RedisOnlineStore(OnlineStoreBase):
    """The online store in a Redis database (the three primitives; the rest is shared)."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str = "mlsys:online:",
        cache_size: int = 10_000,
        cache_ttl_s: float = 30.0,
    ) -> None:
        super().__init__(cache_size, cache_ttl_s)
        self.client = client
        self.prefix = prefix
        self._set_state = client.register_script(_SET_STATE)

    @classmethod
    def from_url(cls, url: str, prefix: str = "mlsys:online:", **kwargs: Any) -> RedisOnlineStore:
        """A store at ``redis://HOST:PORT/DB``; fails at once, clearly, when it is not up."""
        try:
            client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
            client.ping()
        except (redis.RedisError, ValueError) as err:
            raise OnlineStoreError(f"online store {url!r} is not reachable: {err}") from None
        return cls(client, prefix, **kwargs)

    def __repr__(self) -> str:
        kw = self.client.connection_pool.connection_kwargs
        where = f"{kw.get('host')}:{kw.get('port')}/{kw.get('db', 0)}"
        return f"RedisOnlineStore('redis://{where}', prefix={self.prefix!r})"

    def _views_key(self) -> str:
        return f"{self.prefix}views"

    def _rows_key(self, view: str) -> str:
        return f"{self.prefix}rows:{view}"

    def load_states(self) -> dict[str, ViewState]:
        stored = self.client.hgetall(self._views_key())
        return {
            name.decode(): ViewState.model_validate_json(state) for name, state in stored.items()
        }

    def _write(self, state: ViewState, rows: Iterable[OnlineRow], replace: bool) -> int:
        key = self._rows_key(state.name)
        with self.client.pipeline(transaction=True) as pipe:
            if replace:
                pipe.delete(key)
            for i, chunk in enumerate(_chunks(rows, _CHUNK)):
                pipe.hset(
                    key,
                    mapping={
                        r.key: json.dumps([r.as_of_ns, r.values], allow_nan=False) for r in chunk
                    },
                )
                if i == 0:
                    crash_point("online.redis.rows")  # rows queued, nothing sent yet
            placeholder = state.model_copy(update={"rows": -1}).model_dump_json()
            self._set_state(
                keys=[self._views_key(), key], args=[state.name, placeholder], client=pipe
            )
            crash_point("online.redis.commit")  # the whole transaction queued, not sent
            *_, count = pipe.execute()
        crash_point("online.redis.committed")  # executed; the caller has not heard yet
        return int(count)

    def read_rows(self, view: str, keys: Sequence[str]) -> list[OnlineRow | None]:
        out: list[OnlineRow | None] = []
        key = self._rows_key(view)
        for chunk in _chunks(keys, _CHUNK):
            for entity, raw in zip(chunk, self.client.hmget(key, chunk), strict=True):
                if raw is None:
                    out.append(None)
                else:
                    as_of_ns, values = json.loads(raw)
                    out.append(OnlineRow(entity, values, as_of_ns))
        return out

    def stored_rows(self) -> list[tuple[str, str, str]]:
        """Every stored row as (view, entity key, payload JSON), sorted: for comparisons."""
        out = []
        for name in self.load_states():
            for entity, raw in self.client.hgetall(self._rows_key(name)).items():
                out.append((name, entity.decode(), json.dumps(json.loads(raw)[1])))
        return sorted(out)
