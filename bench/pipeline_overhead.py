"""What does Prefect cost? The same mlsys_core calls as a plain script and as ``ml_pipeline``.

Each run is a fresh child process with its own state folder (lake, MLflow store, Prefect
home), so neither lake idempotence nor MLflow or Prefect state favours the run that goes
second. The flow runs in Prefect's ephemeral mode: its first flow call starts a temporary
local server (SQLite), which is timed apart with two trivial flows before the pipeline.

    .venv/bin/python bench/pipeline_overhead.py                 # full data, 12 epochs
    .venv/bin/python bench/pipeline_overhead.py --fraction 0.05 --epochs 2 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from _common import (
    Stopwatch,
    format_table,
    isolated_env,
    load_spec,
    mean_or_none,
    sampled_or_full,
    scratch_folder,
    use_isolated_state,
    write_sampled_sources,
)

TARGET_RATIO = 1.10
WARMUP_FRACTION = 0.02
# Stage name -> the subflow of ml_pipeline that runs it.
STAGE_FLOWS = {
    "ingest": "ingest",
    "validate": "validate",
    "features": "build-features",
    "train": "train",
    "register": "register",
    "drift": "drift-check",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Wall time of the ML pipeline as a plain Python script and as the Prefect flow "
            "flows.pipeline.ml_pipeline (same mlsys_core calls, fresh state each); prints "
            f"the flow/plain ratio against a target of <= {TARGET_RATIO:.2f}."
        )
    )
    parser.add_argument(
        "--epochs", type=int, default=12, help="TrainConfig.epochs (default: 12, as the flow)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="plain/flow pairs; the order alternates each repeat (default: 1)",
    )
    parser.add_argument(
        "--fraction",
        type=float,
        default=1.0,
        help="share of flights, sampled per month (default: 1.0, the full data)",
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling and training seed")
    parser.add_argument(
        "--warmup",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="first run each side once, untimed, on 2%% of flights for 1 epoch (default: on)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary folder (state and logs)"
    )
    parser.add_argument(
        "--verbose", action="store_true", help="stream the child runs' output to the terminal"
    )
    # Internal: one measured run in a child process.
    parser.add_argument("--worker", choices=["plain", "flow"], help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.repeats < 1:
        parser.error("--epochs and --repeats must be at least 1")
    if not 0.0 < args.fraction <= 1.0:
        parser.error("--fraction must be in (0, 1]")
    return args


# -- the measured runs (child processes) -------------------------------------------------------


def run_worker(args: argparse.Namespace) -> None:
    """One measured run; the parent set this process's state folder in its environment."""
    started = time.time()
    use_isolated_state(Path(os.environ["MLSYS_STATE_DIR"]))
    watch = Stopwatch()
    if args.worker == "plain":
        with watch.lap("imports"):
            out = _import_plain()
        summary = _run_plain(args, watch, out)
    else:
        with watch.lap("imports"):
            from prefect import flow  # noqa: PLC0415

            from flows.embedded import embedded_run  # noqa: PLC0415
            from flows.pipeline import ml_pipeline  # noqa: PLC0415
            from mlsys_core.training.config import TrainConfig  # noqa: PLC0415
        # As `make demo` runs it: in-process, on the embedded API (flows/embedded.py).
        with embedded_run():
            summary = _run_flow(args, watch, flow, ml_pipeline, TrainConfig)
    # Wall-clock stamps, so the parent can tell interpreter start-up and exit (where Prefect
    # stops its temporary server) from the measured laps.
    summary |= {"mode": args.worker, "laps": watch.laps, "started": started, "ended": time.time()}
    Path(args.result).write_text(json.dumps(summary, indent=2))


def _import_plain() -> SimpleNamespace:
    # Exactly the modules the tasks call into; prefect is never imported here.
    from mlsys_core.config import Settings  # noqa: PLC0415
    from mlsys_core.data import cleaning, ingest  # noqa: PLC0415
    from mlsys_core.data.lake import Lake  # noqa: PLC0415
    from mlsys_core.features import store  # noqa: PLC0415
    from mlsys_core.features.online import open_online_store  # noqa: PLC0415
    from mlsys_core.monitoring.check import CheckConfig, check_model_drift  # noqa: PLC0415
    from mlsys_core.registry import promotion  # noqa: PLC0415
    from mlsys_core.registry.gate import GateConfig  # noqa: PLC0415
    from mlsys_core.registry.lineage import record_served_by  # noqa: PLC0415
    from mlsys_core.registry.locking import RegistryLock  # noqa: PLC0415
    from mlsys_core.serving.lineage import materialize_for_version  # noqa: PLC0415
    from mlsys_core.tracking import configure_mlflow  # noqa: PLC0415
    from mlsys_core.training import launch  # noqa: PLC0415
    from mlsys_core.training.config import TrainConfig  # noqa: PLC0415

    return SimpleNamespace(
        Settings=Settings,
        cleaning=cleaning,
        ingest=ingest,
        Lake=Lake,
        store=store,
        check_model_drift=check_model_drift,
        CheckConfig=CheckConfig,
        GateConfig=GateConfig,
        promotion=promotion,
        record_served_by=record_served_by,
        RegistryLock=RegistryLock,
        open_online_store=open_online_store,
        materialize_for_version=materialize_for_version,
        configure_mlflow=configure_mlflow,
        launch=launch,
        TrainConfig=TrainConfig,
    )


def _run_plain(args: argparse.Namespace, watch: Stopwatch, m: SimpleNamespace) -> dict[str, Any]:
    """The stages of flows/pipeline.py, calling what each task body calls, in order."""
    spec = load_spec(args.spec)
    config = m.TrainConfig(epochs=args.epochs, seed=args.seed)
    lake_of, configure_mlflow, promotion = m.Lake, m.configure_mlflow, m.promotion
    with watch.lap("pipeline"):
        settings = m.Settings()
        name = settings.model_name or spec.registered_model
        with watch.lap("ingest"):
            raw = {
                s.name: m.ingest.snapshot_source(s, lake_of(settings.lake_dir))
                for s in spec.sources
            }
        with watch.lap("validate"):
            clean = {
                table: m.cleaning.clean_snapshot(
                    ref, spec.contracts[table], lake_of(settings.lake_dir)
                )
                for table, ref in raw.items()
                if table in spec.contracts
            }
        with watch.lap("features"):
            features = m.store.build_feature_set(clean, spec, lake_of(settings.lake_dir))
        with watch.lap("train"):
            # What the train task calls: in-process here, with the checkpoint per epoch
            # that lets a retry resume (train_and_log alone writes none).
            trained = m.launch.train(features, config, settings)
        with watch.lap("register"):
            # What the register flow's tasks call: register, smoke test, gate, then the
            # stage moves through to production with an automatic approval, the online
            # store filled for the new champion just before (the promote flow's step).
            client = configure_mlflow(settings.tracking)
            lake = lake_of(settings.lake_dir)
            online = m.open_online_store(settings.root, settings.online_store)
            walked = promotion.walk(
                client,
                lake,
                trained,
                name,
                "ml-pipeline",
                m.RegistryLock(client, name),
                m.GateConfig(),
                promotion.auto_approval("ml-pipeline"),
                before_production=lambda version: m.materialize_for_version(
                    client, lake, online, name, version
                ),
            )
            decision = walked.decision
        with watch.lap("drift"):
            experiment = client.get_experiment_by_name(settings.experiment).experiment_id
            drift = m.check_model_drift(
                client,
                experiment,
                lake,
                settings.root / "monitoring",
                settings.reports_dir,
                name,
                "champion",
                m.CheckConfig(months=1),
            )
            m.record_served_by(client, name, drift.model_version, "prefect-flow/drift")
    return {
        "test_auc": trained.metrics["test_auc"],
        "best_epoch": trained.metrics["best_epoch"],
        "feature_set": features.version,
        "promoted": decision.promote,
        "drifted_columns": drift.summary.drifted_columns,
    }


def _run_flow(
    args: argparse.Namespace, watch: Stopwatch, flow: Any, ml_pipeline: Any, train_config: Any
) -> dict[str, Any]:
    spec = load_spec(args.spec)
    config = train_config(epochs=args.epochs, seed=args.seed)

    @flow(name="bench-noop")
    def noop() -> None:
        return None

    # The first flow call starts the temporary server; the second is a flow's own overhead.
    with watch.lap("first_noop_flow"):
        noop()
    with watch.lap("second_noop_flow"):
        noop()
    with watch.lap("pipeline"):
        result = ml_pipeline(spec=spec, train_config=config)
    # Outside the timed lap: each subflow's wall time, as the Prefect API recorded it.
    watch.laps |= _subflow_seconds()
    return {
        "test_auc": result.trained.metrics["test_auc"],
        "best_epoch": result.trained.metrics["best_epoch"],
        "feature_set": result.feature_set,
        "promoted": result.registration.decision.promote,
        "drifted_columns": result.drift.summary.drifted_columns,
    }


def _subflow_seconds() -> dict[str, float]:
    from prefect import get_client  # noqa: PLC0415

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(limit=200)
        names = {run.flow_id: client.read_flow(run.flow_id).name for run in runs}
    by_flow = {names[run.flow_id]: run for run in runs if run.start_time and run.end_time}
    return {
        stage: (by_flow[name].end_time - by_flow[name].start_time).total_seconds()
        for stage, name in STAGE_FLOWS.items()
        if name in by_flow
    }


# -- the driver (parent process) ---------------------------------------------------------------


def run_child(
    mode: str,
    label: str,
    root: Path,
    args: argparse.Namespace,
    spec_path: Path | None,
    epochs: int | None = None,
) -> dict[str, Any]:
    state = root / f"state-{label}"
    result_file = root / f"result-{label}.json"
    log_file = root / f"{label}.log"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        mode,
        "--epochs",
        str(epochs or args.epochs),
        "--seed",
        str(args.seed),
        "--result",
        str(result_file),
    ]
    if spec_path is not None:
        cmd += ["--spec", str(spec_path)]
    env = {**os.environ, **isolated_env(state)}
    # Neither run may reach a Prefect server or MLflow store configured in this shell.
    for key in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "MLSYS_TRACKING_URI"):
        env.pop(key, None)
    # Other processes on a small machine skew timings: record how busy it was.
    load_before = os.getloadavg()[0]
    print(f"  {label:<13} state {state} ...", end="", flush=True)
    launched, start = time.time(), time.perf_counter()
    with open(log_file, "w") as log:
        proc = subprocess.run(
            cmd,
            env=env,
            stdout=None if args.verbose else log,
            stderr=subprocess.STDOUT if not args.verbose else None,
            check=False,
        )
    elapsed, exited = time.perf_counter() - start, time.time()
    if proc.returncode != 0:
        print(" FAILED")
        if not args.verbose:
            tail = log_file.read_text().splitlines()[-40:]
            print("\n".join(f"    | {line}" for line in tail), file=sys.stderr)
        raise SystemExit(f"{mode} run failed (exit {proc.returncode}); log: {log_file}")
    load_after = os.getloadavg()[0]
    print(f" {elapsed:.1f} s (load average {load_before:.1f} before, {load_after:.1f} after)")
    result = json.loads(result_file.read_text())
    result["process_s"] = elapsed
    result["load"] = (load_before, load_after)
    result["laps"]["startup"] = result["started"] - launched
    result["laps"]["exit"] = exited - result["ended"]
    return result


def summarize(results: list[dict[str, Any]], args: argparse.Namespace, data: str) -> str:
    def laps(mode: str, key: str) -> float | None:
        return mean_or_none([r["laps"].get(key) for r in results if r["mode"] == mode])

    def process(mode: str) -> float | None:
        return mean_or_none([r["process_s"] for r in results if r["mode"] == mode])

    def best(mode: str, key: str) -> float:
        runs = [r for r in results if r["mode"] == mode]
        return min(r["process_s"] if key == "process" else r["laps"][key] for r in runs)

    first, second = laps("flow", "first_noop_flow"), laps("flow", "second_noop_flow")
    server = first - second
    plain_pipeline, flow_pipeline = laps("plain", "pipeline"), laps("flow", "pipeline")
    rows = [
        [
            mode,
            laps(mode, "startup"),
            laps(mode, "imports"),
            first if mode == "flow" else None,
            second if mode == "flow" else None,
            laps(mode, "pipeline"),
            laps(mode, "exit"),
            process(mode),
        ]
        for mode in ("plain", "flow")
    ]
    header = [
        "run (mean s)",
        "start-up",
        "imports",
        "1st trivial flow",
        "2nd trivial flow",
        "pipeline",
        "exit",
        "process",
    ]
    table = format_table(header, rows)
    per_run = format_table(
        ["run", "load", "imports", "1st trivial flow", "pipeline", "train", "process"],
        [
            [
                r["label"],
                r["load"][0],
                r["laps"]["imports"],
                r["laps"].get("first_noop_flow"),
                r["laps"]["pipeline"],
                r["laps"].get("train"),
                r["process_s"],
            ]
            for r in results
        ],
    )
    stage_rows = []
    for stage in STAGE_FLOWS:
        plain, flow = laps("plain", stage), laps("flow", stage)
        ratio = f"{flow / plain:.2f}" if plain and flow else None
        stage_rows.append([stage, plain, flow, ratio])
    outside = {
        mode: laps(mode, "pipeline") - sum(laps(mode, stage) or 0.0 for stage in STAGE_FLOWS)
        for mode in ("plain", "flow")
    }
    stage_rows.append(["between stages", outside["plain"], outside["flow"], None])
    stages = format_table(["stage (mean s)", "plain", "flow (subflow run)", "ratio"], stage_rows)

    best_server = best("flow", "first_noop_flow") - best("flow", "second_noop_flow")
    ratios = {
        "pipeline only (server already up)": (
            flow_pipeline / plain_pipeline,
            best("flow", "pipeline") / best("plain", "pipeline"),
        ),
        "pipeline + temporary server start": (
            (flow_pipeline + server) / plain_pipeline,
            (best("flow", "pipeline") + best_server) / best("plain", "pipeline"),
        ),
        "whole process (start-up to exit)": (
            process("flow") / process("plain"),
            best("flow", "process") / best("plain", "process"),
        ),
    }
    ratio_lines = [f"  {'flow / plain':<40} {'mean':>6}  {'best':>6}   target <= {TARGET_RATIO}"]
    ratio_lines += [
        f"  {label:<40} {mean:6.3f}  {low:6.3f}   {'ok' if mean <= TARGET_RATIO else 'OVER'}"
        for label, (mean, low) in ratios.items()
    ]
    loads = [load for r in results for load in r["load"]]
    checks = []
    aucs = {(r["mode"], round(r["test_auc"], 6)) for r in results}
    checks.append(
        "test AUC per run: " + ", ".join(f"{r['mode']} {r['test_auc']:.4f}" for r in results)
    )
    if len({auc for _, auc in aucs}) > 1:
        checks.append("WARNING: the runs trained different models; not a like-for-like comparison")
    feature_sets = {r["feature_set"] for r in results}
    if len(feature_sets) > 1:
        checks.append(f"WARNING: different feature-set versions {sorted(feature_sets)}")
    return "\n".join(
        [
            "",
            f"pipeline_overhead  data {data}  epochs {args.epochs}  repeats {args.repeats}"
            f"  ({os.cpu_count()} CPUs, {platform.python_implementation()} "
            f"{platform.python_version()})",
            "",
            per_run,
            "",
            table,
            "",
            f"temporary server start (1st minus 2nd trivial flow): {server:.1f} s;"
            f" a trivial flow run: {second:.2f} s",
            "",
            stages,
            "",
            *ratio_lines,
            "  (best: the fastest run of each kind, less sensitive to other load; the",
            "   verdict uses the mean)",
            "",
            f"1-minute load average around the runs: {min(loads):.1f} .. {max(loads):.1f}"
            f" on {os.cpu_count()} CPUs",
            "",
            *checks,
        ]
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        run_worker(args)
        return
    with scratch_folder("mlsys-bench-overhead-", keep=args.keep) as root:
        spec_path, data = sampled_or_full(root / "data", args.fraction, args.seed)
        print(f"pipeline_overhead: {data}, epochs {args.epochs}, temp folder {root}")
        if args.warmup:
            # Untimed, on a small sample: the first process to load torch, mlflow and prefect
            # from a cold page cache is slow, and that should not count against either side.
            warm_spec = write_sampled_sources(root / "warmup-data", WARMUP_FRACTION, args.seed)
            for mode in ("plain", "flow"):
                run_child(mode, f"warmup-{mode}", root, args, warm_spec, epochs=1)
        results = []
        for repeat in range(args.repeats):
            order = ("plain", "flow") if repeat % 2 == 0 else ("flow", "plain")
            for mode in order:
                label = f"{mode}-{repeat + 1}"
                results.append(run_child(mode, label, root, args, spec_path) | {"label": label})
        print(summarize(results, args, data))


if __name__ == "__main__":
    main()
