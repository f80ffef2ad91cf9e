"""Client load for the replica tests: threads posting to nginx, every outcome kept."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx


class Traffic:
    """Client threads posting to nginx; every reply (status, upstream) or error is kept."""

    def __init__(
        self,
        url: str,
        bodies: list[object],
        threads: int = 3,
        check: Callable[[httpx.Response], bool] | None = None,
    ) -> None:
        self.url = url
        self.bodies = bodies
        self.check = check  # a 200 whose body fails it is kept in ``bad``
        self.bad: list[str] = []
        self.stale = 0
        self._sent = 0
        self.replies: list[tuple[float, int, str]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop) for _ in range(threads)]

    def _loop(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                try:
                    reply = self._post(client)
                    if reply.status_code == 200 and self.check and not self.check(reply):
                        self.bad.append(reply.text[:500])
                    self.replies.append(
                        (time.monotonic(), reply.status_code, reply.headers.get("x-upstream", ""))
                    )
                except httpx.HTTPError as err:
                    self.errors.append(repr(err))

    def _post(self, client: httpx.Client) -> httpx.Response:
        """One request; retried once, as HTTP clients do, when the kept-alive connection was
        closed before any byte of a response came back: an nginx reload closes its idle
        connections, and a request sent at that instant meets a closed socket (RFC 9112
        9.3.1). The socket answers with a FIN (httpx: "server disconnected") or, when the
        request's bytes were already in its buffer as the worker closed it, with a reset.
        Both are counted; any other error, or a second one, is a failure."""
        self._sent += 1  # racy across threads; only picks a body
        body = self.bodies[self._sent % len(self.bodies)]
        try:
            return client.post(self.url, json=body)
        except (httpx.RemoteProtocolError, httpx.ReadError) as err:
            if isinstance(err, httpx.ReadError) and not _reset(err):
                raise
            self.stale += 1
            return client.post(self.url, json=body)

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def since(self, t0: float) -> list[tuple[float, int, str]]:
        return [r for r in self.replies if r[0] >= t0]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _reset(err: BaseException) -> bool:
    """Whether a connection reset by the peer lies under the error httpx raised."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, ConnectionResetError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
