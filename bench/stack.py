"""What does the production stack cost? The same pipeline on the same data, embedded and
through ``mlsys stack``.

- embedded: ``ml_pipeline`` in one process, as ``make demo`` runs it (Prefect's embedded
  API on SQLite, MLflow in a SQLite file, a thread pool, training in-process);
- stack: the ``ml-pipeline`` deployment run by a Prefect worker of ``mlsys stack`` (server on
  Postgres, MLflow server serving artifacts, cleaning mapped on the Dask cluster, training
  as DDP on two simulated nodes, the second one a ``train-node`` run on the other worker).

Printed: the time of ``mlsys stack up`` (from nothing to every part healthy) and ``down``,
each stage's wall time on both sides and its stack/embedded ratio, the same for the whole
pipeline, and
where the difference goes (worker pick-up, the second node's start = the rendezvous wait).

    .venv/bin/python bench/stack.py                      # 3 % of the flights, 1 epoch
    .venv/bin/python bench/stack.py --fraction 0.2 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from _common import format_table, isolated_env, scratch_folder, write_sampled_sources

from mlsys_core.net import free_port
from mlsys_core.stack import prefect_server
from mlsys_core.stack.stack import Stack

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
DATASET = "nycflights13"  # the serving replicas serve its model; the flows run its sample
STAGES = ["ingest", "validate", "build-features", "train", "register", "drift-check"]

EMBEDDED = """
import json, sys, time
from pathlib import Path
from flows.embedded import embedded_run
from flows.pipeline import ml_pipeline
from mlsys_core.spec import DatasetSpec
from mlsys_core.training.config import TrainConfig

spec = DatasetSpec.model_validate_json(Path(sys.argv[1]).read_text())
with embedded_run():
    started = time.monotonic()
    ml_pipeline(spec=spec, train_config=TrainConfig(epochs=int(sys.argv[2])))
    wall = time.monotonic() - started
    from prefect.client.orchestration import get_client
    with get_client(sync_client=True) as client:
        runs = [r.model_dump(mode="json") for r in client.read_flow_runs()]
        flows = {str(f.id): f.name for f in client.read_flows()}
print("RESULT " + json.dumps({"wall": wall, "runs": runs, "flows": flows}))
"""


def _seconds(run: dict) -> float | None:
    if not run.get("start_time") or not run.get("end_time"):
        return None
    start = datetime.fromisoformat(run["start_time"])
    return (datetime.fromisoformat(run["end_time"]) - start).total_seconds()


def _stage_times(runs: list[dict], flows: dict[str, str]) -> dict[str, float | None]:
    by_name = {}
    for run in runs:
        name = flows.get(run["flow_id"])
        if name in STAGES and run.get("parent_task_run_id"):
            by_name[name] = _seconds(run)
    return by_name


def run_embedded(folder: Path, spec_path: Path, epochs: int) -> dict:
    env = {**os.environ, **isolated_env(folder / "embedded")}
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run(
        [sys.executable, "-c", EMBEDDED, str(spec_path), str(epochs)],
        env=env, cwd=REPO, capture_output=True, text=True, check=False,
    )  # fmt: skip
    (folder / "embedded.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"embedded pipeline failed; see {folder / 'embedded.log'}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    return {"wall": result["wall"], "stages": _stage_times(result["runs"], result["flows"])}


def _mlsys(args: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    done = subprocess.run(
        [str(BIN / "mlsys"), *args], env=env, cwd=REPO, capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"mlsys {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return time.monotonic() - started


def run_stack(folder: Path, spec_path: Path, epochs: int, nodes: int) -> dict:  # noqa: PLR0914
    state = folder / "stack-state"
    env = {**os.environ, **isolated_env(state)}
    env.pop("PREFECT_API_URL", None)
    out: dict = {}
    try:
        out["up"] = _mlsys(["stack", "up", "--dataset", DATASET], env)
        stack = Stack(state, REPO)
        settings = stack.settings_env(stack.load_config())
        client = {**env, **settings, "PREFECT_HOME": str(folder / "client-home")}
        api = settings["PREFECT_API_URL"]
        prefect_server.deploy(client, REPO)
        prefect_server.cli(["--no-prompt", "deployment", "schedule", "pause", "--all"], client)
        launch = {"strategy": "single"}
        if nodes > 1:
            launch = {
                "strategy": "ddp", "nnodes": nodes, "other_nodes": "pool",
                "rdzv_endpoint": f"127.0.0.1:{free_port()}",
            }  # fmt: skip
        params = {
            "spec": json.loads(spec_path.read_text()),
            "train_config": {"epochs": epochs},
            "launch": launch,
        }
        started = time.monotonic()
        text = prefect_server.cli(
            ["deployment", "run", "ml-pipeline/ml-pipeline", "--params", json.dumps(params)],
            client,
        )
        run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", text).group(1)
        while True:
            run = prefect_server.call(f"{api}/flow_runs/{run_id}")
            if run["state"]["type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
                break
            time.sleep(1)
        out["wall"] = time.monotonic() - started
        if run["state"]["type"] != "COMPLETED":
            raise RuntimeError(f"the pipeline run ended {run['state']}")
        runs = prefect_server.call(f"{api}/flow_runs/filter", {})
        flows = {f["id"]: f["name"] for f in prefect_server.call(f"{api}/flows/filter", {})}
        out["stages"] = _stage_times(runs, flows)
        out["run_seconds"] = _seconds(run)
        created = datetime.fromisoformat(run["created"])
        out["pickup"] = (datetime.fromisoformat(run["start_time"]) - created).total_seconds()
        nodes_runs = [r for r in runs if flows.get(r["flow_id"]) == "train-node"]
        train = [r for r in runs if flows.get(r["flow_id"]) == "train"]
        if nodes_runs and train:
            first = datetime.fromisoformat(train[0]["start_time"])
            second = datetime.fromisoformat(nodes_runs[0]["start_time"])
            out["second_node_after"] = (second - first).total_seconds()
    finally:
        out["down"] = _mlsys(["stack", "down", "--purge"], env)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fraction", type=float, default=0.03, help="share of the flights")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--nodes", type=int, default=2, help="training nodes on the stack side")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()
    with scratch_folder("mlsys-bench-stack-", keep=args.keep) as folder:
        spec_path = write_sampled_sources(folder / "data", args.fraction)
        embedded = run_embedded(folder, spec_path, args.epochs)
        stack = run_stack(folder, spec_path, args.epochs, args.nodes)
    rows = []
    for name in STAGES:
        a, b = embedded["stages"].get(name), stack["stages"].get(name)
        diff = None if a is None or b is None else b - a
        rows.append([name, a, b, diff, None if diff is None or not a else b / a])
    a, b = embedded["wall"], stack["wall"]
    rows.append(["pipeline (wall)", a, b, b - a, b / a])
    print(f"\nmlsys stack up: {stack['up']:.1f} s (nothing to every part healthy, incl. CLI start)")
    print(f"mlsys stack down --purge: {stack['down']:.1f} s")
    print(f"\nsame data ({args.fraction:.0%} of flights, {args.epochs} epoch(s)); stack side "
          f"trains on {args.nodes} node(s)\n")  # fmt: skip
    print(format_table(["stage", "embedded s", "stack s", "difference s", "stack/embedded"], rows))
    print(
        f"\nworker pick-up of the deployment run: {stack['pickup']:.1f} s; second training "
        f"node started {stack.get('second_node_after', float('nan')):.1f} s after the first "
        "(the rendezvous wait)"
    )
    print(f"ratio stack/embedded (pipeline wall time): {stack['wall'] / embedded['wall']:.2f}")


if __name__ == "__main__":
    main()
