"""Is our inference service faster than ``mlflow models serve`` on the same model?

Both serve the same registered champion from one uvicorn worker on 127.0.0.1 and get the
same load: ``wrk`` (closed loop, fixed connections, a Lua script cycling through real
test-split records, one record per request), the server pinned to one CPU and wrk to the
other. Printed: req/s, p50 and p99 for both and the ratios (goal: >= 3x the throughput,
<= 1/3 the p99) against MLflow as shipped (its uvicorn logs every request) and against
MLflow with its access log off (``mlflow-quiet``: ours has no access log), and the share
of a bare FastAPI echo endpoint's req/s (same uvicorn, same body) that ``/predict``
reaches. Then an open-loop load at 80 % of our measured peak for
60 s (a Python generator that sends on a fixed schedule and measures from the scheduled
time, so a stall is not hidden by the generator waiting): error count (goal 0) and p99.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    format_table,
    load_spec,
    scratch_folder,
    use_isolated_state,
    write_sampled_sources,
)

from mlsys_core.net import HOST, free_port  # noqa: E402
from mlsys_core.stack import process  # noqa: E402

BIN = Path(sys.executable).parent

ECHO_APP = '''
"""A bare FastAPI endpoint: the ceiling for a one-worker uvicorn app on this machine."""
from fastapi import FastAPI, Request
from fastapi.responses import Response

app = FastAPI()


@app.post("/echo")
async def echo(request: Request) -> Response:
    return Response(await request.body(), media_type="application/json")


@app.get("/ping")
async def ping() -> dict:
    return {}
'''

# wrk: cycle through the bodies; report in JSON from done() (latencies in microseconds).
WRK_LUA = """
local bodies = {{
{bodies}
}}
local i = 0
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", "{path}", {{["Content-Type"] = "application/json"}}, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def pin(cpus: set[int] | None):  # noqa: ANN201 -- a preexec_fn
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


@contextmanager
def server(
    cmd: list[str], env: dict[str, str], ready_url: str, log: Path, cpus: set[int] | None
) -> Iterator[int]:
    """Start a server pinned to ``cpus``; yield its pid once ``ready_url`` answers 200."""
    with process.background(
        cmd, env, log, ready_url=ready_url, timeout=300, preexec_fn=pin(cpus)
    ) as proc:
        yield proc.pid


def run_wrk(
    url: str,
    path: str,
    bodies: list[str],
    seconds: float,
    connections: int,
    folder: Path,
    cpus: set[int] | None,
) -> dict[str, float]:
    lua = folder / f"wrk-{abs(hash(url + path))}.lua"
    quoted = ",\n".join(f"  [==[{b}]==]" for b in bodies)
    lua.write_text(WRK_LUA.format(bodies=quoted, path=path))
    cmd = [shutil.which("wrk") or "wrk", "-t1", f"-c{connections}", f"-d{seconds:.0f}s"]
    cmd += ["--timeout", "10s", "-s", str(lua), url]
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=pin(cpus),  # noqa: PLW1509
    )
    line = next(x for x in done.stdout.splitlines() if x.startswith("WRKJSON "))
    raw = json.loads(line.removeprefix("WRKJSON "))
    errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
    return {
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "errors": errors,
        "requests": raw["requests"],
    }


class OpenLoop:
    """Send ``rate`` requests/s on a fixed schedule over kept-alive connections; latency
    counts from the scheduled send time, so a server stall is not hidden by the client
    waiting for it (no coordinated omission)."""

    def __init__(self, port: int, path: str, bodies: list[bytes]) -> None:
        self.port, self.path, self.bodies = port, path, bodies
        # (reader, writer, last used): a connection idle near the server's keep-alive
        # timeout (uvicorn: 5 s) may be closing; it is dropped rather than reused.
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self.opened = self.in_flight = self.peak = 0
        self.latencies: list[float] = []
        self.errors = {"status": 0, "io": 0, "not_sent": 0}

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        now = asyncio.get_running_loop().time()
        while self.idle:
            reader, writer, used = self.idle.pop()
            if now - used < 3.0:
                return reader, writer
            writer.close()
        self.opened += 1
        return await asyncio.open_connection(HOST, self.port)

    async def _one(self, body: bytes, scheduled: float) -> None:
        loop = asyncio.get_running_loop()
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        request = (
            f"POST {self.path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        try:
            reader, writer = await self._connection()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            self.latencies.append(loop.time() - scheduled)
            if int(head.split(b" ", 2)[1]) != 200:
                self.errors["status"] += 1
            self.idle.append((reader, writer, loop.time()))
        except (OSError, asyncio.IncompleteReadError, ValueError):
            self.errors["io"] += 1
        finally:
            self.in_flight -= 1

    async def run(self, rate: float, seconds: float, max_behind: int = 1024) -> dict:
        loop = asyncio.get_running_loop()
        total = int(rate * seconds)
        start = loop.time() + 0.05
        tasks = []
        for i in range(total):
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            body = self.bodies[i % len(self.bodies)]
            tasks.append(asyncio.create_task(self._one(body, start + i / rate)))
            if self.in_flight > max_behind:  # hopelessly behind: stop adding
                break
        await asyncio.gather(*tasks)
        elapsed = loop.time() - start
        for _, writer, _ in self.idle:
            writer.close()
        self.latencies.sort()
        self.errors["not_sent"] = total - len(tasks)
        return {
            "achieved_rps": len(self.latencies) / elapsed,
            "p50_ms": percentile(self.latencies, 0.5),
            "p99_ms": percentile(self.latencies, 0.99),
            "errors": sum(self.errors.values()),
            "error_kinds": self.errors,
            "connections": self.opened,
            "peak_in_flight": self.peak,
        }


def percentile(ordered: list[float], q: float) -> float:
    """In milliseconds, of sorted seconds."""
    if not ordered:
        return float("nan")
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def build_champion(args: argparse.Namespace, folder: Path) -> tuple[str, list[dict], list[str]]:
    """Train and register a champion on sampled data; return its name, test records (keys
    and model inputs) and the model's input columns."""
    import pandas as pd  # noqa: PLC0415

    from mlsys_core.config import Settings  # noqa: PLC0415
    from mlsys_core.data.cleaning import clean_snapshot  # noqa: PLC0415
    from mlsys_core.data.ingest import snapshot_source  # noqa: PLC0415
    from mlsys_core.data.lake import Lake  # noqa: PLC0415
    from mlsys_core.features.online import open_online_store  # noqa: PLC0415
    from mlsys_core.features.store import build_feature_set, load_feature_set  # noqa: PLC0415
    from mlsys_core.registry import promotion  # noqa: PLC0415
    from mlsys_core.serving.lineage import materialize_for_version  # noqa: PLC0415
    from mlsys_core.tracking import configure_mlflow  # noqa: PLC0415
    from mlsys_core.training.config import TrainConfig  # noqa: PLC0415
    from mlsys_core.training.run import train_and_log  # noqa: PLC0415

    spec = load_spec(str(write_sampled_sources(folder / "data", args.fraction)))
    settings = Settings()
    lake = Lake(settings.lake_dir)
    clean = {
        s.name: clean_snapshot(snapshot_source(s, lake), spec.contracts[s.name], lake)
        for s in spec.sources
    }
    features = build_feature_set(clean, spec, lake)
    trained = train_and_log(features, TrainConfig(epochs=args.epochs), lake, settings.tracking)
    client = configure_mlflow(settings.tracking)
    name = settings.model_name or spec.registered_model
    version = promotion.register_version(client, name, trained)
    # As the promote flow does before a version serves: fill the online store it reads
    # (until then the service's readiness says "run materialize").
    materialize_for_version(
        client, lake, open_online_store(settings.root, settings.online_store), name, version.version
    )
    client.set_registered_model_alias(name, "champion", version.version)
    frame, spec = load_feature_set(features, lake)
    test = frame[frame["_split"] == "test"].sample(args.records, random_state=0)
    # Naive UTC times: MLflow's schema takes naive datetimes (ours reads naive as UTC).
    ts = spec.event_timestamp
    test = test.assign(**{ts: pd.to_datetime(test[ts], utc=True).dt.tz_localize(None)})
    columns = list(dict.fromkeys([*spec.entity_keys, spec.event_timestamp, *spec.input_columns]))
    records = json.loads(test[columns].to_json(orient="records", date_format="iso"))
    return name, records, spec.input_columns


def ours_body(record: dict) -> str:
    return json.dumps(record)


def mlflow_body(record: dict, columns: list[str]) -> str:
    row = [record.get(c) for c in columns]
    return json.dumps({"dataframe_split": {"columns": columns, "data": [row]}})


def server_commands(name: str, folder: Path) -> dict[str, tuple[Callable, str, str]]:
    """Per server: its command for a port, its readiness path, its scoring path."""
    (folder / "echo_app.py").write_text(textwrap.dedent(ECHO_APP))
    uvicorn = [sys.executable, "-m", "uvicorn", "--host", HOST, "--workers", "1"]
    mlflow = [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{name}@champion"]
    mlflow += ["--env-manager", "local", "-w", "1", "-h", HOST]
    return {
        # The documented command, as a user runs it (no access log: /metrics counts).
        "ours": (
            # No --spec: the service reads the champion's spec from its lineage (the
            # sampled spec it was trained on; naming another is refused as skew).
            lambda p: [str(BIN / "mlsys"), "serve", "--port", str(p), "--model-name", name],
            "/health/ready",
            "/predict",
        ),
        # MLflow as shipped (its uvicorn logs each request).
        "mlflow": (lambda p: [*mlflow, "-p", str(p)], "/ping", "/invocations"),
        # MLflow with its access log off, as ours runs (uvicorn reads UVICORN_* options
        # from the environment; ``env`` execs, so the server keeps the pid we stop).
        "mlflow-quiet": (
            lambda p: ["env", "UVICORN_ACCESS_LOG=false", *mlflow, "-p", str(p)],
            "/ping",
            "/invocations",
        ),
        "echo": (
            lambda p: [
                *uvicorn,
                "--port",
                str(p),
                "--no-access-log",
                "--app-dir",
                str(folder),
                "echo_app:app",
            ],
            "/ping",
            "/echo",
        ),
    }


def measure(
    args: argparse.Namespace,
    targets: dict[str, tuple[Callable, str, str]],
    bodies: dict[str, list[str]],
    env: dict[str, str],
    folder: Path,
    cpus: tuple[set[int] | None, set[int] | None],
) -> dict[str, list[dict[str, float]]]:
    """Closed-loop wrk runs, alternating the servers' order per repeat."""
    server_cpus, load_cpus = cpus
    results: dict[str, list[dict[str, float]]] = {k: [] for k in targets}
    for repeat in range(args.repeats):
        order = list(targets) if repeat % 2 == 0 else list(reversed(targets))
        for key in order:
            make_cmd, ready, path = targets[key]
            port = free_port()
            url = f"http://{HOST}:{port}"
            log = folder / f"{key}-{repeat}.log"
            with server(make_cmd(port), env, url + ready, log, server_cpus):
                # Warm-up: first requests load lazily imported code and fill caches.
                run_wrk(url, path, bodies[key], 3, args.connections, folder, load_cpus)
                got = run_wrk(
                    url, path, bodies[key], args.seconds, args.connections, folder, load_cpus
                )
            results[key].append(got)
            print(
                f"  run {repeat + 1} {key:6s} {got['rps']:8.1f} req/s  p50 {got['p50_ms']:7.2f}"
                f" ms  p99 {got['p99_ms']:8.2f} ms  errors {got['errors']}",
                flush=True,
            )
    return results


def sustain(
    args: argparse.Namespace,
    target: tuple[Callable, str, str],
    bodies: list[str],
    rate: float,
    env: dict[str, str],
    folder: Path,
    cpus: tuple[set[int] | None, set[int] | None],
) -> dict[str, float]:
    """Our service under an open-loop load at ``rate`` for ``args.sustain`` seconds."""
    server_cpus, load_cpus = cpus
    make_cmd, ready, path = target
    port = free_port()
    if load_cpus:
        os.sched_setaffinity(0, load_cpus)
    url = f"http://{HOST}:{port}{ready}"
    with server(make_cmd(port), env, url, folder / "sustain.log", server_cpus):
        payloads = [b.encode() for b in bodies]
        asyncio.run(OpenLoop(port, path, payloads).run(rate, 3))  # warm-up
        return asyncio.run(OpenLoop(port, path, payloads).run(rate, args.sustain))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fraction", type=float, default=0.03, help="share of the flights")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--records", type=int, default=500, help="distinct request bodies")
    parser.add_argument("--seconds", type=float, default=15, help="per wrk measurement")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs per server")
    parser.add_argument("--sustain", type=float, default=60, help="open-loop seconds at 80%%")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1)
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument(
        "--targets",
        default="ours,mlflow,mlflow-quiet,echo",
        help="comma-separated subset (mlflow-quiet: MLflow with its access log off)",
    )
    parser.add_argument("--keep", action="store_true")
    return parser.parse_args()


def main() -> None:
    args = parse_args()

    pinned = not args.no_pin and (os.cpu_count() or 1) >= 2
    cpus = ({args.server_cpu}, {args.load_cpu}) if pinned else (None, None)
    with scratch_folder("mlsys-bench-serving-", keep=args.keep) as folder:
        env = {**os.environ, **use_isolated_state(folder / "state")}
        t0 = time.perf_counter()
        name, records, inputs = build_champion(args, folder)
        print(f"champion trained and registered in {time.perf_counter() - t0:.0f} s")
        from mlsys_core.config import Settings  # noqa: PLC0415

        ours = [ours_body(r) for r in records]
        mlflow = [mlflow_body(r, inputs) for r in records]
        bodies = {"ours": ours, "mlflow": mlflow, "mlflow-quiet": mlflow, "echo": ours}
        env["MLFLOW_TRACKING_URI"] = Settings().mlflow_uri
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        # One intra-op thread for every server: each gets one CPU (ours sets it itself).
        env["OMP_NUM_THREADS"] = "1"
        targets = server_commands(name, folder)
        targets = {k: v for k, v in targets.items() if k in args.targets.split(",")}
        results = measure(args, targets, bodies, env, folder, cpus)

        def med(key: str, field: str) -> float:
            return median(r[field] for r in results[key])

        rows = [
            [k, med(k, "rps"), med(k, "p50_ms"), med(k, "p99_ms"), sum(r["errors"] for r in v)]
            for k, v in results.items()
        ]
        print(
            f"\none uvicorn worker each, wrk -t1 -c{args.connections}, {args.seconds:.0f} s x "
            f"{args.repeats}, medians; server on CPU {cpus[0]}, load on CPU {cpus[1]}"
        )
        print(format_table(["server", "req/s", "p50 ms", "p99 ms", "errors"], rows))
        for other in ("mlflow", "mlflow-quiet"):
            if {"ours", other} <= set(results):
                throughput = med("ours", "rps") / med(other, "rps")
                p99 = med("ours", "p99_ms") / med(other, "p99_ms")
                print(f"throughput ours / {other:<12} {throughput:7.2f}x  (goal >= 3)")
                print(f"p99 ours / {other:<19} {p99:7.3f}   (goal <= 0.33)")
        if {"ours", "echo"} <= set(results):
            share = med("ours", "rps") / med("echo", "rps")
            print(f"/predict / bare echo req/s      {share:7.3f}")
        if args.sustain > 0 and "ours" in results:
            rate = 0.8 * med("ours", "rps")
            got = sustain(args, targets["ours"], ours, rate, env, folder, cpus)
            print(
                f"\nopen loop at 80% of peak: target {rate:.0f} req/s for {args.sustain:.0f} s, "
                f"achieved {got['achieved_rps']:.0f} req/s, at most {got['peak_in_flight']} in "
                f"flight ({got['connections']} connections opened); p50 {got['p50_ms']:.2f} ms, "
                f"p99 {got['p99_ms']:.2f} ms, "
                f"errors {got['errors']} (goal 0) {got['error_kinds']}"
            )


if __name__ == "__main__":
    main()
