"""The production topology on one machine: every part a real server process, bound to
127.0.0.1, with its own log and pid file under ``<state>/stack/<part>/``.

    postgres          the Prefect server's database, MLflow's store, Optuna's storage
    prefect-server    on Postgres; a process work pool; prefect-worker-1..N
    mlflow            tracking + registry on Postgres, serving artifacts itself
    dask-scheduler    and dask-worker-1..N, separate processes
    serving           the inference replicas behind nginx (``mlsys serve-cluster``),
                      reading the champion from that MLflow server

``up`` starts what is not running (idempotent), ``down`` stops every part (SIGTERM to its
process group, SIGKILL after a grace period), ``status`` checks each part's health. The
ports and the database password are chosen at the first ``up`` and kept in
``<state>/stack/stack.json`` (mode 0600), so the settings that point the pipeline at the
stack stay the same across restarts.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from mlsys_core.atomic import write_text_atomically
from mlsys_core.net import HOST, free_ports
from mlsys_core.stack import postgres, process
from mlsys_core.stack import prefect_server as prefect

BIN = Path(sys.executable).parent
MLFLOW_CLIENT_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
PORT_FIELDS = ("postgres_port", "prefect_port", "mlflow_port", "dask_port", "serve_port")
# A serving replica that exits this often in a row at `up`, never ready, fails the `up`.
STARTS_BEFORE_FAILING = 3


class StackError(RuntimeError):
    """A part of the stack did not come up, or the stack's files are unusable."""


class StackConfig(BaseModel):
    """What ``mlsys stack up`` starts. Ports left None are picked free at the first ``up``
    and then kept; ``serve`` holds ServeConfig fields for the replicas."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    postgres_port: int | None = Field(default=None, ge=1, le=65535)
    prefect_port: int | None = Field(default=None, ge=1, le=65535)
    mlflow_port: int | None = Field(default=None, ge=1, le=65535)
    dask_port: int | None = Field(default=None, ge=1, le=65535)
    serve_port: int | None = Field(default=None, ge=1, le=65535)
    replica_ports: list[int] | None = None
    prefect_workers: int = Field(default=2, ge=1, le=16)
    worker_poll_s: float = Field(default=2.0, gt=0, le=60, description="Prefect workers' poll.")
    work_pool: str = Field(default=prefect.POOL, pattern=r"^[A-Za-z0-9_.\-]+$")
    dask_workers: int = Field(default=2, ge=1, le=64)
    dask_threads: int = Field(default=1, ge=1, le=64)
    serve_replicas: int = Field(default=2, ge=1, le=32)
    dataset: str | None = Field(
        default=None,
        description="Dataset reference (NAME, module:attr or file.py:attr) the stack runs: "
        "MLSYS_DATASET of every part, so the flows' default and the model the serving "
        "replicas serve (its champion) agree. Needed by `up`.",
    )
    serve: dict[str, object] = Field(
        default_factory=lambda: {"rollout": {"mode": "blue_green", "poll_interval_s": 2.0}},
        description="ServeConfig of the replicas (blue_green: a new champion is picked up).",
    )
    # Generous: a busy 2-core machine can need minutes to import torch and MLflow in the
    # serving replicas.
    start_timeout_s: float = Field(default=900.0, gt=0)
    password: str | None = Field(default=None, description="Postgres superuser; None: random.")

    def resolved(self) -> StackConfig:
        """Every port and the password fixed (free ports, a random password)."""
        missing = [f for f in PORT_FIELDS if getattr(self, f) is None]
        fixed = [getattr(self, f) for f in PORT_FIELDS if f not in missing]
        fixed += self.replica_ports or []
        replicas = self.serve_replicas if self.replica_ports is None else 0
        ports = free_ports(len(missing) + replicas, exclude=fixed)
        update: dict[str, object] = dict(zip(missing, ports, strict=False))
        if self.replica_ports is None:
            update["replica_ports"] = ports[len(missing) :]
        if self.password is None:
            update["password"] = secrets.token_urlsafe(18)
        return self.model_copy(update=update)


@dataclass
class Part:
    """One server process of the stack."""

    name: str
    command: Callable[[], list[str]]  # called at start: may prepare files (initdb, configs)
    env: dict[str, str]
    ready: Callable[[], bool]
    health: Callable[[], str]
    user: str | None = None
    after: Callable[[], None] | None = None  # runs once the part is ready (e.g. create DBs)
    needs: tuple[str, ...] = ()  # parts that must be ready before this one starts
    # Why it will never get ready though its process runs ("" while there is hope).
    failing: Callable[[], str] | None = None

    folder: Path = field(default=Path())

    @property
    def log(self) -> Path:
        return self.folder / f"{self.name}.log"

    @property
    def pid_file(self) -> process.PidFile:
        return process.PidFile(self.folder / f"{self.name}.pid")


@dataclass(frozen=True)
class PartStatus:
    name: str
    pid: int | None
    healthy: bool
    detail: str
    log: Path


@dataclass(frozen=True)
class UpReport:
    seconds: float
    started: list[str]
    already_running: list[str]
    parts: list[PartStatus]


class Stack:
    """The stack whose state lives in ``state_root`` (the settings' state folder: the lake
    is shared by every part, MLflow's artifacts and Postgres' data sit under ``stack/``)."""

    def __init__(self, state_root: Path, project: Path | None = None) -> None:
        self.root = state_root.expanduser().resolve()
        self.folder = self.root / "stack"
        self.project = (project or Path.cwd()).resolve()
        self.config_path = self.folder / "stack.json"

    # -- configuration -------------------------------------------------------------------
    def load_config(self) -> StackConfig | None:
        if not self.config_path.is_file():
            return None
        try:
            return StackConfig.model_validate_json(self.config_path.read_text())
        except ValueError as exc:
            raise StackError(f"unreadable {self.config_path}: {exc}") from None

    def configure(self, wanted: StackConfig | None = None) -> StackConfig:
        """The kept configuration, or ``wanted`` (resolved) on the first ``up``. Changing
        ports of a stack that exists needs a ``down --purge`` first."""
        kept = self.load_config()
        if kept is not None:
            if wanted is not None:
                asked = wanted.model_dump(exclude_defaults=True)
                differs = {k: v for k, v in asked.items() if kept.model_dump()[k] != v}
                if differs:
                    raise StackError(
                        f"the stack in {self.folder} was set up with other settings "
                        f"({', '.join(sorted(differs))}); `mlsys stack down --purge` first"
                    )
            return kept
        config = (wanted or StackConfig()).resolved()
        self.folder.mkdir(parents=True, exist_ok=True)
        write_text_atomically(self.config_path, config.model_dump_json(indent=1))
        self.config_path.chmod(0o600)
        return config

    def settings_env(self, config: StackConfig) -> dict[str, str]:
        """The settings that point the pipeline, the CLI and the workers at this stack."""
        dataset = {"MLSYS_DATASET": config.dataset} if config.dataset else {}
        return {
            "MLSYS_STATE_DIR": str(self.root),
            **dataset,
            "MLSYS_TRACKING_URI": f"http://{HOST}:{config.mlflow_port}",
            "MLSYS_OPTUNA_STORAGE": postgres.url(
                config.password or "", config.postgres_port or 0, "optuna"
            ),
            "MLSYS_TASK_RUNNER": "dask",
            "MLSYS_DASK_ADDRESS": f"tcp://{HOST}:{config.dask_port}",
            "PREFECT_API_URL": prefect.api_url(config.prefect_port or 0),
            "MLSYS_SERVE_URL": f"http://{HOST}:{config.serve_port}",
        }

    # -- the parts -------------------------------------------------------------------------
    def parts(self, config: StackConfig) -> list[Part]:
        """Every part, each listed after the parts it needs."""
        settings = self.settings_env(config)
        tracking = settings["MLSYS_TRACKING_URI"]
        # MLflow's own variables follow the stack's server: ones inherited from the shell that
        # ran `up` (a process that called mlflow.set_tracking_uri exports them) would point
        # every default MlflowClient of a worker at another store.
        mlflow_env = dict.fromkeys(MLFLOW_CLIENT_ENV, tracking)
        base = {**os.environ, **settings, **mlflow_env, "PYTHONUNBUFFERED": "1"}
        parts = [
            self._postgres(config, base),
            self._prefect_server(config, base),
            self._mlflow(config, base),
            self._dask_scheduler(config, base),
            *self._prefect_workers(config, base),
            *self._dask_workers(config, base),
            self._serving(config, base),
        ]
        for part in parts:
            part.folder = self.folder / part.name
        return parts

    def _postgres(self, config: StackConfig, env: dict[str, str]) -> Part:
        password, port = config.password or "", config.postgres_port or 0
        folder = self.folder / "postgres"
        user = postgres.run_as()

        def command() -> list[str]:
            bin_dir = postgres.find_bin_dir()
            data = postgres.data_dir(folder, user)
            postgres.initialize(bin_dir, data, password, user, folder / "postgres.log")
            return postgres.server_command(bin_dir, data, port)

        def health() -> str:
            return "" if postgres.ready(password, port) else "no answer to a login and query"

        return Part(
            "postgres", command, env, lambda: not health(), health, user=user,
            after=lambda: postgres.ensure_databases(password, port),
        )  # fmt: skip

    def _prefect_env(self, config: StackConfig, env: dict[str, str]) -> dict[str, str]:
        database = postgres.url(
            config.password or "", config.postgres_port or 0, "prefect", driver="asyncpg"
        )
        home = self.folder / "prefect-server" / "home"
        return prefect.prefect_env(home, env["PREFECT_API_URL"], env, database_url=database)

    def _prefect_server(self, config: StackConfig, env: dict[str, str]) -> Part:
        api = env["PREFECT_API_URL"]
        server_env = self._prefect_env(config, env)

        def health() -> str:
            return "" if prefect.healthy(api) else f"{api}/health does not answer"

        return Part(
            "prefect-server", lambda: prefect.server_command(config.prefect_port or 0),
            server_env, lambda: not health(), health, needs=("postgres",),
            after=lambda: prefect.ensure_work_pool(api, server_env, config.work_pool),
        )  # fmt: skip

    def _prefect_workers(self, config: StackConfig, env: dict[str, str]) -> list[Part]:
        api = env["PREFECT_API_URL"]
        worker_env = self._prefect_env(config, env)
        # How often a worker asks for runs (Prefect's default: 10 s). Every pick-up waits on
        # it, and a multi-node training waits for its other nodes' pick-ups at the rendezvous.
        worker_env["PREFECT_WORKER_QUERY_SECONDS"] = str(config.worker_poll_s)
        parts = []
        for i in range(1, config.prefect_workers + 1):
            name = f"prefect-worker-{i}"

            def health(name: str = name) -> str:
                online = prefect.online_workers(api, config.work_pool)
                return "" if name in online else "no heartbeat on the server"

            parts.append(
                Part(
                    name, lambda n=name: prefect.worker_command(config.work_pool, n), worker_env,
                    lambda h=health: not h(), health, needs=("prefect-server",),
                )
            )  # fmt: skip
        return parts

    def _mlflow(self, config: StackConfig, env: dict[str, str]) -> Part:
        url = env["MLSYS_TRACKING_URI"]
        store = postgres.url(config.password or "", config.postgres_port or 0, "mlflow")
        artifacts = self.folder / "mlflow" / "artifacts"
        cmd = [str(BIN / "mlflow"), "server", "--host", HOST]
        cmd += ["--port", str(config.mlflow_port), "--workers", "1"]
        cmd += ["--backend-store-uri", store, "--registry-store-uri", store]
        cmd += ["--serve-artifacts", "--artifacts-destination", artifacts.as_uri()]

        def health() -> str:
            return "" if process.http_ok(f"{url}/health") else "/health does not answer"

        # The server is the store: no client settings that point it at itself.
        server_env = {k: v for k, v in env.items() if k not in MLFLOW_CLIENT_ENV}
        # Its job runner (GenAI scoring, trace archival: nothing mlsys uses) is two more
        # Python processes to start, and one that outlives SIGTERM by more than `down` waits.
        server_env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        return Part(
            "mlflow", lambda: cmd, server_env, lambda: not health(), health, needs=("postgres",)
        )

    def _dask_scheduler(self, config: StackConfig, env: dict[str, str]) -> Part:
        cmd = [str(BIN / "dask"), "scheduler", "--host", HOST]
        cmd += ["--port", str(config.dask_port), "--no-dashboard"]

        def health() -> str:
            return "" if process.tcp_open(HOST, config.dask_port or 0) else "port closed"

        return Part("dask-scheduler", lambda: cmd, env, lambda: not health(), health)

    def _dask_workers(self, config: StackConfig, env: dict[str, str]) -> list[Part]:
        address = env["MLSYS_DASK_ADDRESS"]

        def health(name: str) -> str:
            names = _dask_worker_names(address)
            if names is None:
                return "the scheduler does not answer"
            return "" if name in names else "not registered with the scheduler"

        parts = []
        for i in range(1, config.dask_workers + 1):
            name = f"dask-worker-{i}"
            cmd = [str(BIN / "dask"), "worker", address, "--name", name, "--host", HOST]
            cmd += ["--nthreads", str(config.dask_threads), "--nworkers", "1", "--no-dashboard"]
            cmd += ["--local-directory", str(self.folder / name / "scratch")]
            parts.append(
                # A worker keeps trying to reach its scheduler: it starts with it.
                Part(name, lambda c=cmd: c, env, lambda n=name: not health(n),
                     lambda n=name: health(n))
            )  # fmt: skip
        return parts

    def _serving(self, config: StackConfig, env: dict[str, str]) -> Part:
        folder = self.folder / "serving"
        serve_config = folder / "serve-config.json"
        replica_ports = config.replica_ports or []
        cluster = {
            "replica_ports": replica_ports,
            # No champion exists on a new stack: the replicas wait for one.
            "startup_timeout_s": 7 * 24 * 3600,
            "health_interval_s": 1.0,
        }
        cmd = [str(BIN / "mlsys"), "serve-cluster", "--replicas", str(config.serve_replicas)]
        cmd += ["--port", str(config.serve_port), "--folder", str(folder / "cluster")]
        cmd += ["--serve-config", str(serve_config), "--config", json.dumps(cluster)]

        def command() -> list[str]:
            folder.mkdir(parents=True, exist_ok=True)
            write_text_atomically(serve_config, json.dumps(config.serve))
            # An earlier cluster's status (its replicas' exits) is not this one's.
            (folder / "cluster" / "status.json").unlink(missing_ok=True)
            return cmd

        def live() -> bool:
            return all(process.http_ok(f"http://{HOST}:{p}/health/live") for p in replica_ports)

        def health() -> str:
            if process.http_ok(f"http://{HOST}:{config.serve_port}/health/ready"):
                return ""
            if not live():
                return "replicas do not answer /health/live"
            return "waiting: " + _not_ready_reason(f"http://{HOST}:{replica_ports[0]}")

        def failing() -> str:
            return _crash_loop(folder / "cluster", STARTS_BEFORE_FAILING)

        # The replicas read the champion at start: the MLflow server first. Importing torch
        # and MLflow in them is the slowest start of the stack, so nothing else waits for it.
        return Part("serving", command, env, live, health, needs=("mlflow",), failing=failing)

    # -- up / down / status ---------------------------------------------------------------
    def up(self, wanted: StackConfig | None = None) -> UpReport:
        """Start every part that is not running as soon as the parts it needs are ready;
        wait until each is ready."""
        started_at = time.monotonic()
        kept = self.load_config()
        if (wanted is None or wanted.dataset is None) and (kept is None or kept.dataset is None):
            # The serving replicas serve one model: without a dataset they could never start.
            raise StackError(
                "the stack needs the dataset it runs: `mlsys stack up --dataset NAME` "
                "(a published NAME, module:attr or file.py:attr), or set MLSYS_DATASET"
            )
        config = self.configure(wanted)
        postgres.find_bin_dir()  # a clear error before anything starts
        parts = self.parts(config)
        started: list[str] = []
        running: list[str] = []
        password = config.password or ""

        def bring_up(part: Part) -> None:
            for need in part.needs:
                if ready[need].exception() is not None:
                    raise _NeedFailed(f"{part.name} not started: {need} did not come up")
            proc = None
            if part.pid_file.pid() is not None:
                running.append(part.name)
            else:
                proc = self._start(part, password)
                started.append(part.name)
            self._wait_ready(part, proc, config)

        # Every part starts as soon as the parts it needs are ready, all others at once.
        ready: dict[str, Future] = {}
        with ThreadPoolExecutor(len(parts)) as pool:
            for part in parts:  # listed after its needs: their futures exist already
                ready[part.name] = pool.submit(bring_up, part)
        errors = [f.exception() for f in ready.values() if f.exception() is not None]
        if errors:
            raise next((e for e in errors if not isinstance(e, _NeedFailed)), errors[0])
        return UpReport(
            seconds=time.monotonic() - started_at,
            started=started,
            already_running=running,
            parts=self.status(config),
        )

    def _start(self, part: Part, password: str) -> object:
        part.folder.mkdir(parents=True, exist_ok=True)
        command = part.command()
        with open(part.log, "a") as log:  # the password stays out of the log
            line = " ".join(command).replace(password, "***") if password else " ".join(command)
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
        proc = process.start(command, part.log, env=part.env, cwd=self.project, user=part.user)
        part.pid_file.write(proc.pid)
        return proc

    def _wait_ready(self, part: Part, proc: object, config: StackConfig) -> None:
        def running() -> bool:
            return part.pid_file.pid() is not None and (
                proc is None or proc.poll() is None  # type: ignore[attr-defined]
            )

        try:
            process.wait_until(
                part.ready, part.name, config.start_timeout_s, part.log, running,
                interval=0.3, failing=part.failing,
            )  # fmt: skip
        except process.ServerError as exc:
            raise StackError(str(exc)) from None
        if part.after is not None:
            part.after()

    def down(self, purge: bool = False) -> list[tuple[str, str]]:
        """Stop every part, the last started first. ``purge`` also deletes the stack's data
        (Postgres, MLflow artifacts, the kept ports and password); the lake stays."""
        config = self.load_config()
        outcome: list[tuple[str, str]] = []
        if config is not None:
            parts = self.parts(config)
            # Level by level from the top (workers before their servers), each level at once.
            levels = _levels(parts)
            for level in sorted(set(levels.values()), reverse=True):
                members = [p for p in parts if levels[p.name] == level]
                with ThreadPoolExecutor(len(members)) as pool:
                    outcome += pool.map(_stop_part, members)
        if purge:
            data = self.folder / "postgres" / "data"
            if data.is_symlink():
                shutil.rmtree(data.resolve(), ignore_errors=True)
            shutil.rmtree(self.folder, ignore_errors=True)
        return outcome

    def status(self, config: StackConfig | None = None) -> list[PartStatus]:
        config = config or self.load_config()
        if config is None:
            return []
        out = []
        for part in self.parts(config):
            pid = part.pid_file.pid()
            if pid is None:
                out.append(PartStatus(part.name, None, False, "not running", part.log))
                continue
            problem = part.health()
            out.append(PartStatus(part.name, pid, not problem, problem or "healthy", part.log))
        return out


class _NeedFailed(StackError):
    """A part was not started because a part it needs did not come up."""


def _levels(parts: list[Part]) -> dict[str, int]:
    """0 for a part that needs none, else one more than the highest part it needs."""
    levels: dict[str, int] = {}
    for part in parts:  # listed after its needs
        levels[part.name] = 1 + max((levels[n] for n in part.needs), default=-1)
    return levels


def _stop_part(part: Part) -> tuple[str, str]:
    pid = part.pid_file.pid()
    if pid is None:
        what = "not running"
    else:
        # postgres: SIGTERM is its "smart" shutdown that waits for clients; SIGINT is "fast".
        sig = signal.SIGINT if part.name == "postgres" else signal.SIGTERM
        what = "killed" if process.stop_group(pid, timeout=30, sig=sig) else "stopped"
    part.pid_file.clear()
    return part.name, what


def _crash_loop(cluster: Path, exits: int) -> str:
    """Why serving will not get ready: a replica that exited ``exits`` times in a row without
    ever being ready (a taken port, a broken environment), from the cluster's status; the
    cluster would restart it forever."""
    try:
        status = json.loads((cluster / "status.json").read_text())
    except (OSError, ValueError):
        return ""
    for replica in status.get("replicas", []):
        if replica.get("crashes", 0) >= exits:
            log = cluster / "logs" / f"replica-{replica['index']}.log"
            return (
                f"replica {replica['index']} (port {replica['port']}) exited "
                f"{replica['crashes']} times in a row; log {log}:\n{process.tail(log)}"
            )
    return ""


def _dask_worker_names(address: str, timeout: float = 5.0) -> set[str] | None:
    """Names of the workers the scheduler knows, None when it does not answer in time.

    One RPC on a loop of its own, bounded as a whole: a ``Client`` per poll starts a loop
    thread and several connections, and its ``scheduler_info()`` waits without a limit.
    """
    from distributed.core import rpc  # noqa: PLC0415 - heavy, only for status

    async def identity() -> dict:
        async with rpc(address, timeout=timeout) as scheduler:
            return await scheduler.identity(n_workers=-1)

    try:
        info = asyncio.run(asyncio.wait_for(identity(), timeout))
    except (OSError, TimeoutError):
        return None
    return {str(w.get("name")) for w in info.get("workers", {}).values()}


def _not_ready_reason(replica: str) -> str:
    try:
        with urllib.request.urlopen(f"{replica}/health/ready", timeout=2):  # noqa: S310
            return "ready"
    except urllib.error.HTTPError as err:
        try:
            return str(json.loads(err.read()).get("detail"))
        except ValueError:
            return f"HTTP {err.code}"
    except OSError as err:
        return str(err)
