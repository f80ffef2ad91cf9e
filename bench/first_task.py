"""What does a user wait for between typing the command and the pipeline's first task?

The same pipeline started three ways, each run a fresh process with its own state folder
and Prefect home, the order rotating each repeat:

- **pipeline**: ``python -m flows.pipeline`` (``mlsys pipeline``), no server running: the
  first flow call starts Prefect's temporary server, after torch, MLflow and every flow
  module have loaded. What ``make demo`` paid on every run before ``flows.demo``.
- **demo**: ``python -m flows.demo``, what ``make demo`` runs, no server running: the
  temporary server starts on a thread beside those imports.
- **kept**: ``python -m flows.demo`` after ``mlsys prefect-server up`` for that Prefect home
  (untimed): the command finds the server running and starts none.

Timed from the launch of the process: when the ``ml-pipeline`` flow run started and when
its first task run started, as the Prefect server recorded them (read from its SQLite
database while the command runs). The command is then interrupted: what follows the first
task is the pipeline itself, which ``pipeline_overhead.py`` measures.

    .venv/bin/python bench/first_task.py                # 3 repeats
    .venv/bin/python bench/first_task.py --repeats 1 --spec nycflights13_sample
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

from _common import format_table, isolated_env, mean_or_none, scratch_folder

from mlsys_core.stack import process

ROOT = Path(__file__).resolve().parent.parent
MODES = {
    "pipeline": ["-m", "flows.pipeline"],
    "demo": ["-m", "flows.demo"],
    "kept": ["-m", "flows.demo"],
}
BASELINE = "pipeline"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Seconds from the command to the ml-pipeline flow run's first task: "
        "python -m flows.pipeline, python -m flows.demo (make demo), and flows.demo with a "
        "server kept by `mlsys prefect-server up`."
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs of each way (3)")
    parser.add_argument(
        "--spec", default="nycflights13", help="dataset reference (nycflights13, as make demo)"
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for the first task (300)"
    )
    parser.add_argument(
        "--warmup",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one untimed demo run first, so no timed run reads the modules from a cold "
        "page cache (default: on)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.timeout <= 0:
        parser.error("need --repeats >= 1 and --timeout > 0")
    return args


def _epoch(stamp: str | None) -> float | None:
    """Epoch seconds of a stored timestamp: Prefect's SQLite columns hold UTC, unmarked."""
    if stamp is None:
        return None
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def recorded_starts(database: Path) -> tuple[float | None, float | None]:
    """The ``ml-pipeline`` flow run's start and the first task run's start (epoch seconds)
    in a Prefect SQLite database; None for what is not recorded yet."""
    if not database.exists():
        return None, None
    try:
        with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)) as db:
            flow_start = db.execute(
                "SELECT min(r.start_time) FROM flow_run r JOIN flow f ON r.flow_id = f.id "
                "WHERE f.name = 'ml-pipeline'"
            ).fetchone()[0]
            task_start = db.execute("SELECT min(start_time) FROM task_run").fetchone()[0]
    except sqlite3.OperationalError:  # created but not migrated yet
        return None, None
    return _epoch(flow_start), _epoch(task_start)


def _mlsys(env: dict[str, str], *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mlsys_core.cli", *args],  # the `mlsys` command
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if done.returncode:
        raise SystemExit(f"mlsys {' '.join(args)} failed: {done.stderr[-2000:]}")


def _interruptible() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _stop(proc: subprocess.Popen) -> None:
    """Interrupt the command alone, so Prefect stops its temporary server at exit; then
    nothing of its session is left. (``process.stop`` signals the whole group at once: the
    server dies first, and the command can then wait 30 s on calls to it.)"""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            print(" (did not stop on SIGINT: killed)", end="")
    process.stop_group(proc.pid, 0, signal.SIGKILL)
    proc.wait()


def run_once(mode: str, label: str, root: Path, args: argparse.Namespace) -> dict:
    state = root / f"state-{label}"
    env = {**os.environ, **isolated_env(state)}
    for key in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "MLSYS_TRACKING_URI"):
        env.pop(key, None)
    database = Path(env["PREFECT_HOME"]) / "prefect.db"
    if mode == "kept":
        _mlsys(env, "prefect-server", "up")
    log = root / f"{label}.log"
    load = os.getloadavg()[0]
    print(f"  {label:<12} ...", end="", flush=True)
    try:
        launched = time.time()
        proc = process.start(
            [sys.executable, *MODES[mode], "--spec", args.spec],
            log,
            env=env,
            cwd=ROOT,
            # Ctrl-C's KeyboardInterrupt, even when this bench was started in the
            # background (a shell starts those with SIGINT ignored, and Python keeps that).
            preexec_fn=_interruptible,
        )
        try:
            while True:
                exited = proc.poll() is not None  # before the read: a run that ends
                flow_start, task_start = recorded_starts(database)  # after it counts
                if task_start is not None:
                    break
                if exited:
                    raise SystemExit(
                        f"{label} exited {proc.returncode} first:\n{process.tail(log)}"
                    )
                if time.time() - launched > args.timeout:
                    raise SystemExit(f"{label}: no task started in {args.timeout:.0f} s")
                time.sleep(0.2)
        finally:
            _stop(proc)
    finally:
        if mode == "kept":
            _mlsys(env, "prefect-server", "down")
    result = {
        "mode": mode,
        "label": label,
        "load": load,
        "flow_run": flow_start - launched if flow_start else None,
        "first_task": task_start - launched,
    }
    print(f" first task at {result['first_task']:.1f} s (load average {load:.1f} before)")
    return result


def summarize(results: list[dict], args: argparse.Namespace) -> tuple[str, dict]:
    def mean(mode: str, key: str) -> float | None:
        return mean_or_none([r[key] for r in results if r["mode"] == mode])

    def best(mode: str) -> float:
        return min(r["first_task"] for r in results if r["mode"] == mode)

    runs = format_table(
        ["run", "load", "flow run starts", "first task starts"],
        [[r["label"], r["load"], r["flow_run"], r["first_task"]] for r in results],
    )
    base = mean(BASELINE, "first_task")
    rows, numbers = [], {}
    for mode in MODES:
        first = mean(mode, "first_task")
        rows.append(
            [
                mode,
                mean(mode, "flow_run"),
                first,
                best(mode),
                first / base,
                best(mode) / best(BASELINE),
            ]
        )
        numbers[mode] = {"first_task_s": round(first, 2), "ratio": round(first / base, 3)}
    means = format_table(
        [
            "way (mean s)",
            "flow run starts",
            "first task starts",
            "best",
            "/ pipeline",
            "best / best",
        ],
        rows,
    )
    text = "\n".join(
        [
            f"first_task  spec {args.spec}  repeats {args.repeats}  ({os.cpu_count()} CPUs)",
            "",
            "seconds from launching the command, as the Prefect server recorded them",
            "",
            runs,
            "",
            means,
            "",
            "pipeline: python -m flows.pipeline (mlsys pipeline), the temporary server started "
            "after the imports",
            "demo:     python -m flows.demo (make demo), the temporary server started beside "
            "the imports",
            "kept:     python -m flows.demo with `mlsys prefect-server up` run before",
        ]
    )
    return text, numbers


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    modes = list(MODES)
    results = []
    with scratch_folder("mlsys-bench-first-task-", keep=args.keep) as root:
        print(f"first_task: spec {args.spec}, temp folder {root}")
        if args.warmup:
            run_once("demo", "warmup", root, args)
        for repeat in range(args.repeats):
            # Rotate the order, so no way always goes first on a cold page cache.
            order = modes[repeat % len(modes) :] + modes[: repeat % len(modes)]
            for mode in order:
                results.append(run_once(mode, f"{mode}-{repeat + 1}", root, args))
    text, numbers = summarize(results, args)
    print()
    print(text)
    print("BENCH_JSON " + json.dumps({"first_task": numbers}))


if __name__ == "__main__":
    main()
