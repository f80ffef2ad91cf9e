"""Replicas behind nginx: N single-worker uvicorn processes of the inference app and one
nginx in front, supervised by one process.

Health checking has two layers, because open-source nginx only has *passive* checks:

- **passive (nginx)**: a request that fails on a replica (refused, reset, timed out, 502 or
  503) is retried on the next one (``proxy_next_upstream``, also for POST: ``/predict`` is
  a pure function of its body), and after ``max_fails`` failures the replica is skipped for
  ``fail_timeout``. This is what keeps the client from seeing a crash.
- **active (this supervisor)**: it polls every replica's ``/health/ready``; one that exits,
  or fails ``unhealthy_after`` polls in a row, is marked ``down`` in the upstream and nginx
  is reloaded (SIGHUP, what ``nginx -s reload`` sends: new workers take the new config, old
  ones finish their requests but close their idle kept-alive connections, so a client must
  retry a request that meets one closing: RFC 9112 9.3.1). A replica that is ready again is
  put back the same way. A replica that exited is restarted on its port, with exponential
  backoff.

Everything lives in one folder (the nginx prefix): config, pid, logs and nginx's temporary
files, so nothing needs root or a system path, and nginx listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import psutil
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlsys_core.atomic import write_text_atomically
from mlsys_core.net import HOST, free_ports
from mlsys_core.stack.process import die_with_parent

Strategy = Literal["round_robin", "weighted", "least_conn"]
DEFAULT_APP = "mlsys_core.serving.app:create_app"
UPSTREAM = "mlsys_replicas"


class ClusterError(RuntimeError):
    """The cluster cannot start: nginx missing, a bad config, no replica ever ready."""


class ClusterConfig(BaseModel):
    """How many replicas, how nginx spreads requests over them, how health is checked."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    replicas: int = Field(default=2, ge=1, le=32)
    strategy: Strategy = Field(
        default="round_robin",
        description="round_robin; weighted (round robin by `weights`); least_conn (fewest "
        "active requests, weighted when `weights` is given).",
    )
    weights: list[int] | None = Field(default=None, description="One weight (1-100) per replica.")
    port: int = Field(default=8000, ge=1, le=65535, description="nginx's port on 127.0.0.1.")
    replica_ports: list[int] | None = Field(
        default=None, description="Ports of the replicas on 127.0.0.1; None: free ports."
    )
    app: str = Field(default=DEFAULT_APP, description="ASGI app factory, module:function.")
    max_body_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="nginx refuses larger bodies with 413; keep it at or above the app's own "
        "limit so the app's 413 (with its reason) is what clients see.",
    )
    max_fails: int = Field(default=1, ge=0, description="Passive check: failures to skip ...")
    fail_timeout_s: int = Field(default=10, ge=1, description="... a replica for this long.")
    upstream_timeout_s: float = Field(default=30.0, gt=0, description="Per-request read limit.")
    health_interval_s: float = Field(default=0.5, gt=0)
    health_timeout_s: float = Field(default=2.0, gt=0)
    unhealthy_after: int = Field(default=2, ge=1, description="Failed polls in a row to drop.")
    healthy_after: int = Field(default=1, ge=1, description="Good polls in a row to add back.")
    reload_wait_s: float = Field(
        default=5.0,
        ge=0,
        description="After a reload, wait this long at most for nginx's "
        "old workers (old upstreams) to finish their requests and exit.",
    )
    restart: bool = Field(default=True, description="Restart a replica process that exited.")
    restart_backoff_s: float = Field(default=1.0, gt=0, description="Doubles per crash, <= 30 s.")
    startup_timeout_s: float = Field(default=300.0, gt=0)
    access_log: bool = Field(default=False, description="nginx access log with upstream and time.")

    @model_validator(mode="after")
    def _consistent(self) -> ClusterConfig:
        if self.strategy == "weighted" and self.weights is None:
            raise ValueError("strategy 'weighted' needs weights, one per replica")
        if self.strategy == "round_robin" and self.weights is not None:
            raise ValueError("weights apply to strategies 'weighted' and 'least_conn' only")
        if self.weights is not None:
            if len(self.weights) != self.replicas:
                raise ValueError(f"{len(self.weights)} weights for {self.replicas} replicas")
            if not all(1 <= w <= 100 for w in self.weights):
                raise ValueError(f"weights must be 1-100, got {self.weights}")
        if self.replica_ports is not None:
            if len(self.replica_ports) != self.replicas:
                raise ValueError(f"{len(self.replica_ports)} ports for {self.replicas} replicas")
            if len({*self.replica_ports, self.port}) != self.replicas + 1:
                raise ValueError("replica ports and the nginx port must all differ")
        return self

    def weight(self, index: int) -> int:
        return self.weights[index] if self.weights else 1


@dataclass
class Upstream:
    port: int
    weight: int = 1
    up: bool = True


def render_nginx_conf(config: ClusterConfig, upstreams: list[Upstream], prefix: Path) -> str:
    """The whole nginx.conf: one upstream with the replicas, one server on 127.0.0.1.

    A replica the health check dropped is listed with ``down`` (not removed), so the
    upstream keeps its order and weights. When none is up all are listed as up: nginx then
    tries each, which is no worse than refusing every request.
    """
    prefix = prefix.resolve()
    any_up = any(u.up for u in upstreams)
    balance = "    least_conn;\n" if config.strategy == "least_conn" else ""
    servers = "".join(
        f"    server {HOST}:{u.port} weight={u.weight} max_fails={config.max_fails} "
        f"fail_timeout={config.fail_timeout_s}s{'' if u.up or not any_up else ' down'};\n"
        for u in upstreams
    )
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / 'tmp' / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    access = (
        f"    log_format upstream '$time_iso8601 $status $request_time '\n"
        f"                        '$upstream_addr $upstream_status \"$request\"';\n"
        f"    access_log {prefix / 'logs' / 'access.log'} upstream;"
        if config.access_log
        else "    access_log off;"
    )
    # As root, nginx would switch its workers to `nobody`, who may not enter the state
    # folder; keep them as the supervisor's user (nothing here needs a privileged port).
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    return f"""# Written by mlsys serve-cluster; rewritten when a replica is dropped or added back.
{user}worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "logs" / "error.log"} warn;
events {{
    worker_connections 4096;
}}
http {{
{access}
{temp}
    upstream {UPSTREAM} {{
{balance}{servers}        keepalive 64;
        # Below uvicorn's keep-alive timeout: nginx never reuses a connection the replica
        # is about to close.
        keepalive_timeout 20s;
    }}
    server {{
        listen {HOST}:{config.port};
        client_max_body_size {config.max_body_bytes};
        location / {{
            proxy_pass http://{UPSTREAM};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Request-Id $request_id;
            proxy_set_header X-Forwarded-For $remote_addr;
            # A failure on one replica is retried on the next one; POST too, since a
            # prediction has no side effect but its log row.
            proxy_next_upstream error timeout http_502 http_503 non_idempotent;
            proxy_next_upstream_tries {max(2, len(upstreams))};
            proxy_next_upstream_timeout {round(config.upstream_timeout_s * 1000)}ms;
            proxy_connect_timeout 2s;
            proxy_read_timeout {round(config.upstream_timeout_s * 1000)}ms;
            add_header X-Upstream $upstream_addr always;
        }}
    }}
}}
"""


def find_nginx() -> str:
    """The nginx binary; /usr/sbin is often not on a normal user's PATH."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise ClusterError("nginx is not installed: `make nginx` (apt-get install -y nginx)")
    return found


def check_nginx_conf(nginx: str, prefix: Path, conf: Path) -> None:
    """``nginx -t`` on a config before it is used; a bad one is a clear error."""
    done = subprocess.run(
        [nginx, "-t", "-q", "-p", str(prefix), "-c", str(conf), "-e", str(_error_log(prefix))],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 0:
        raise ClusterError(f"nginx rejects {conf}: {done.stderr.strip()}")


def _error_log(prefix: Path) -> Path:
    return prefix / "logs" / "error.log"


@dataclass
class Replica:
    index: int
    port: int
    weight: int
    log: Path
    proc: subprocess.Popen | None = None
    in_rotation: bool = False
    good: int = 0  # polls in a row that answered ready
    bad: int = 0  # polls in a row that did not
    restarts: int = 0
    crashes: int = 0  # exits since it was last ready: sets the backoff
    next_start: float = 0.0
    history: list[str] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def note(self, event: str) -> None:
        """Keep the recent history only: a flapping replica must not grow memory."""
        self.history = [*self.history[-49:], f"{_now()} {event}"]


class Cluster:
    """Starts, health-checks, restarts and stops the replicas and nginx."""

    def __init__(
        self,
        config: ClusterConfig,
        folder: Path,
        env: dict[str, str] | None = None,
        nginx: str | None = None,
    ) -> None:
        self.config = config
        self.prefix = Path(folder).resolve()
        self.env = {**os.environ, **(env or {})}
        self.nginx_bin = nginx or find_nginx()
        self.nginx: subprocess.Popen | None = None
        ports = config.replica_ports or free_ports(config.replicas, exclude=[config.port])
        self.replicas = [
            Replica(i, port, config.weight(i), self.prefix / "logs" / f"replica-{i}.log")
            for i, port in enumerate(ports)
        ]
        self._http = httpx.Client(timeout=config.health_timeout_s)

    @property
    def conf_path(self) -> Path:
        return self.prefix / "nginx.conf"

    @property
    def status_path(self) -> Path:
        return self.prefix / "status.json"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.config.port}"

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, stop: threading.Event | None = None) -> None:
        """Start every replica, wait until at least one is ready, then start nginx; a set
        ``stop`` (a signal during a slow model load) stops them and raises."""
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.prefix / "tmp" / kind).mkdir(parents=True, exist_ok=True)
        (self.prefix / "logs").mkdir(parents=True, exist_ok=True)
        try:
            for replica in self.replicas:
                self._spawn(replica)
            deadline = time.monotonic() + self.config.startup_timeout_s
            while not any(r.in_rotation for r in self.replicas):
                if stop is not None and stop.is_set():
                    raise ClusterError("interrupted while the replicas were starting")
                if time.monotonic() > deadline:
                    raise ClusterError(
                        f"no replica became ready in {self.config.startup_timeout_s:.0f} s; "
                        f"see {self.prefix / 'logs'}:\n{self._tail(self.replicas[0].log)}"
                    )
                if not self.config.restart and all(r.proc is None for r in self.replicas):
                    raise ClusterError(f"every replica exited:\n{self._tail(self.replicas[0].log)}")
                self._heal()
                self._write_status()  # a replica that keeps exiting shows before the start
                time.sleep(self.config.health_interval_s)
            self._write_conf()
            (self.prefix / "nginx.pid").unlink(missing_ok=True)  # a stale one from a crash
            cmd = [self.nginx_bin, "-p", str(self.prefix), "-c", str(self.conf_path)]
            cmd += ["-e", str(_error_log(self.prefix)), "-g", "daemon off;"]
            with open(self.prefix / "logs" / "nginx.out", "ab") as out:
                self.nginx = subprocess.Popen(
                    cmd,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    preexec_fn=die_with_parent,  # noqa: PLW1509 -- only sets a signal
                )
            self._wait_listening(self.config.port, self.nginx)
        except BaseException:
            self.stop()  # no replica or nginx outlives a failed start
            raise
        self._write_status()

    def run(self, stop: threading.Event) -> None:
        """Health-check and heal until ``stop`` is set, then shut everything down."""
        try:
            while not stop.wait(self.config.health_interval_s):
                self.step()
        finally:
            self.stop()

    def step(self) -> None:
        """One round: poll readiness, reload nginx on a change, restart exited replicas."""
        if self.nginx is not None and self.nginx.poll() is not None:
            raise ClusterError(
                f"nginx exited with {self.nginx.returncode}: {self._tail(_error_log(self.prefix))}"
            )
        if self._heal():
            self._write_conf()
            self._reload()
        self._write_status()

    def _heal(self) -> bool:
        """Poll every replica (an exit is noticed and dropped first), then restart the ones
        whose backoff has passed; True when the set in rotation changed."""
        changed = self._poll_all()
        now = time.monotonic()
        for replica in self.replicas:
            if replica.proc is None and self.config.restart and now >= replica.next_start:
                replica.restarts += 1
                self._spawn(replica)
        return changed

    def stop(self) -> None:
        """nginx first (it stops accepting and finishes its requests), then the replicas."""
        if self.nginx is not None:
            _stop(self.nginx, signal.SIGQUIT, 15)  # SIGQUIT: nginx's graceful shutdown
        for replica in self.replicas:
            if replica.proc is not None:
                _stop(replica.proc, signal.SIGTERM, 20)
            replica.in_rotation = False
        self._http.close()
        self._write_status()

    # -- internals -----------------------------------------------------------------------
    def _spawn(self, replica: Replica) -> None:
        cmd = [sys.executable, "-m", "uvicorn", "--factory", self.config.app]
        cmd += ["--host", HOST, "--port", str(replica.port), "--workers", "1"]
        cmd += ["--no-access-log", "--timeout-keep-alive", "30", "--log-level", "warning"]
        env = {**self.env, "MLSYS_REPLICA": str(replica.index)}
        with open(replica.log, "ab") as log:
            replica.proc = subprocess.Popen(
                cmd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,  # noqa: PLW1509 -- only sets a signal, no locks
            )
        replica.good = replica.bad = 0
        replica.note(f"started pid {replica.proc.pid}")

    def _poll_all(self) -> bool:
        """Poll every replica; True when the set in rotation changed."""
        changed = False
        for replica in self.replicas:
            ready = replica.alive and self._ready(replica)
            if ready:
                replica.good, replica.bad = replica.good + 1, 0
            else:
                replica.good, replica.bad = 0, replica.bad + 1
            exited = not replica.alive
            if replica.in_rotation and (exited or replica.bad >= self.config.unhealthy_after):
                replica.in_rotation = False
                replica.note(f"dropped ({'exited' if exited else 'not ready'})")
                changed = True
            elif not replica.in_rotation and replica.good >= self.config.healthy_after:
                replica.in_rotation = True
                replica.crashes = 0
                replica.note("in rotation")
                changed = True
            if exited and replica.proc is not None:
                # Schedule the restart once per exit, with a backoff that grows per crash.
                replica.crashes += 1
                delay = min(30.0, self.config.restart_backoff_s * 2 ** (replica.crashes - 1))
                replica.next_start = time.monotonic() + delay
                replica.note(
                    f"exited with {replica.proc.returncode}"
                    + (f"; restart in {delay:.1f} s" if self.config.restart else "")
                )
                replica.proc = None
        return changed

    def _ready(self, replica: Replica) -> bool:
        try:
            reply = self._http.get(f"http://{HOST}:{replica.port}/health/ready")
        except httpx.HTTPError:
            return False
        return reply.status_code == 200

    def _upstreams(self) -> list[Upstream]:
        return [Upstream(r.port, r.weight, r.in_rotation) for r in self.replicas]

    def _write_conf(self) -> None:
        text = render_nginx_conf(self.config, self._upstreams(), self.prefix)
        candidate = self.prefix / "nginx.conf.new"
        write_text_atomically(candidate, text)
        check_nginx_conf(self.nginx_bin, self.prefix, candidate)
        os.replace(candidate, self.conf_path)

    def _reload(self) -> None:
        """SIGHUP, then wait (a few seconds at most) until the workers that held the old
        upstreams have exited: nginx reloads asynchronously, and a status file that says
        "in rotation" before nginx routes there would mislead whoever reads it."""
        if self.nginx is None or self.nginx.poll() is not None:
            return
        old = _children(self.nginx.pid)
        self.nginx.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + self.config.reload_wait_s
        while old & _children(self.nginx.pid) and time.monotonic() < deadline:
            time.sleep(0.02)

    def status(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "strategy": self.config.strategy,
            "nginx_pid": self.nginx.pid if self.nginx and self.nginx.poll() is None else None,
            "replicas": [
                {
                    "index": r.index,
                    "port": r.port,
                    "weight": r.weight,
                    "pid": r.proc.pid if r.alive else None,
                    "in_rotation": r.in_rotation,
                    "restarts": r.restarts,
                    "crashes": r.crashes,
                    "history": r.history[-20:],
                }
                for r in self.replicas
            ],
        }

    def _write_status(self) -> None:
        write_text_atomically(self.status_path, json.dumps(self.status(), indent=2))

    def _wait_listening(self, port: int, proc: subprocess.Popen) -> None:
        """nginx writes its pid file only after it has bound its sockets: wait for our
        nginx's pid there (a port that merely accepts may be someone else's)."""
        pid_file = self.prefix / "nginx.pid"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ClusterError(f"nginx exited: {self._tail(_error_log(self.prefix))}")
            written = pid_file.read_text().strip() if pid_file.is_file() else ""
            if written == str(proc.pid):
                with socket.socket() as sock:
                    if sock.connect_ex((HOST, port)) == 0:
                        return
            time.sleep(0.1)
        raise ClusterError(f"nginx is not listening on {HOST}:{port} after 30 s")

    @staticmethod
    def _tail(path: Path, chars: int = 3000) -> str:
        return path.read_text(errors="replace")[-chars:] if path.is_file() else ""


def _stop(proc: subprocess.Popen, sig: signal.Signals, timeout: float) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _children(pid: int) -> set[int]:
    """The pids of ``pid``'s child processes (nginx's workers)."""
    try:
        return {child.pid for child in psutil.Process(pid).children()}
    except psutil.NoSuchProcess:
        return set()


def _now() -> str:
    return time.strftime("%H:%M:%S")
