"""Commands of the ``mlsys`` CLI that orchestrate flows. They belong with the flows; the core
CLI finds them through the ``mlsys.commands`` entry-point group (pyproject.toml) and names
none of them. Registering imports nothing heavy: the flows load when a command runs.

Each dataset command takes ``--spec REF`` (a published NAME, ``package.module:attr`` or
``path/to/file.py:attr``) and resolves it before a flow starts, so a bad reference is one
line, not a failed flow run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mlsys_core.datasets import SPEC_HELP


def register_drift_scenario(subparsers: argparse._SubParsersAction) -> None:
    """``mlsys drift-scenario``: see flows/drift_scenario.py."""
    parser = subparsers.add_parser(
        "drift-scenario", help="train on winter/spring, detect summer/autumn drift, retrain"
    )
    parser.add_argument("--state", type=Path, default=None, help="default <state>/scenario")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of the seasonal model")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds for the retrain")
    parser.set_defaults(handler=_drift_scenario)


def _drift_scenario(args: argparse.Namespace) -> int:
    from flows.drift_scenario import run_scenario  # noqa: PLC0415 - prefect loads only here

    return run_scenario(args.state, args.epochs, args.timeout)


def _checked_spec(ref: str | None) -> str | None:
    """The reference given, once it resolves (else the settings' dataset, checked too)."""
    from mlsys_core.config import Settings  # noqa: PLC0415
    from mlsys_core.datasets import resolve_spec  # noqa: PLC0415

    chosen = ref if ref is not None else Settings().dataset
    if chosen is not None:
        resolve_spec(chosen)  # a SpecReferenceError is the CLI's one line
    return ref


def _json(text: str, what: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} is not JSON: {err}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object, e.g. '{{\"epochs\": 5}}'")
    return value


def _dataset_parser(subparsers: argparse._SubParsersAction, name: str, help_: str):  # noqa: ANN202
    parser = subparsers.add_parser(name, help=help_)
    parser.add_argument("--spec", help=SPEC_HELP)
    parser.add_argument("--model-name", help="registered model (default: the dataset's)")
    return parser


def _train_config(text: str, option: str) -> object:
    """A ``TrainConfig`` from the option's JSON; a bad one is one line naming the option."""
    from pydantic import ValidationError  # noqa: PLC0415

    from mlsys_core.messages import invalid  # noqa: PLC0415
    from mlsys_core.training.config import TrainConfig  # noqa: PLC0415

    try:
        return TrainConfig.model_validate(_json(text, option))
    except ValidationError as err:
        raise ValueError(f"{option}: {invalid(err)}") from None


def register_pipeline(subparsers: argparse._SubParsersAction) -> None:
    """``mlsys pipeline``: ingest, validate, features, train, register, drift on a dataset."""
    parser = _dataset_parser(subparsers, "pipeline", "run every stage on a dataset")
    parser.add_argument("--train-config", default="{}", help='TrainConfig as JSON: {"epochs": 5}')
    parser.set_defaults(handler=_pipeline)


def _pipeline(args: argparse.Namespace) -> int:
    spec = _checked_spec(args.spec)  # before the flows load: a bad one fails fast
    from flows.embedded import embedded_run  # noqa: PLC0415
    from flows.pipeline import describe, ml_pipeline  # noqa: PLC0415
    from mlsys_core.config import Settings  # noqa: PLC0415

    config = _train_config(args.train_config, "--train-config")
    with embedded_run():
        outcome = ml_pipeline(spec=spec, train_config=config, model_name=args.model_name)
    print(describe(outcome, Settings()))
    return 0


def register_tune(subparsers: argparse._SubParsersAction) -> None:
    """``mlsys tune``: an Optuna study on the dataset's newest feature set."""
    parser = _dataset_parser(
        subparsers, "tune", "tune hyperparameters, train and register the best"
    )
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--study", help="study name (default: from the feature set)")
    parser.add_argument(
        "--base-config", default="{}", help="TrainConfig as JSON; its epochs cap each trial"
    )
    parser.set_defaults(handler=_tune)


def _tune(args: argparse.Namespace) -> int:
    spec = _checked_spec(args.spec)  # before the flows load: a bad one fails fast
    from flows.embedded import embedded_run  # noqa: PLC0415
    from flows.tune import tune  # noqa: PLC0415

    config = _train_config(args.base_config, "--base-config")
    with embedded_run():
        result = tune(
            spec=spec,
            n_trials=args.trials,
            parallelism=args.parallelism,
            base_config=config,
            study_name=args.study,
            model_name=args.model_name,
        )
    print(json.dumps(result.report.model_dump(mode="json"), indent=2, default=str))
    return 0


def register_batch_score(subparsers: argparse._SubParsersAction) -> None:
    """``mlsys batch-score``: score the dataset's newest feature set the model takes into the
    lake."""
    parser = _dataset_parser(subparsers, "batch-score", "score a feature set with a model version")
    parser.add_argument("--alias", default="champion")
    parser.add_argument(
        "--feature-set",
        help="version to score (default: the newest that holds the model's inputs as trained)",
    )
    parser.set_defaults(handler=_batch_score)


def _batch_score(args: argparse.Namespace) -> int:
    spec = _checked_spec(args.spec)  # before the flows load: a bad one fails fast
    from flows.batch_score import batch_score  # noqa: PLC0415
    from flows.embedded import embedded_run  # noqa: PLC0415

    with embedded_run():
        batch_score(
            model_name=args.model_name,
            alias=args.alias,
            spec=spec,
            feature_set=args.feature_set,
        )
    return 0


def register_drift(subparsers: argparse._SubParsersAction) -> None:
    """``mlsys drift``: the drift check of a dataset's model (as the drift-check flow)."""
    parser = _dataset_parser(subparsers, "drift", "check the newest data for drift")
    parser.add_argument("--alias", default="champion")
    parser.add_argument("--months", type=int, default=1, help="newest months to compare")
    parser.set_defaults(handler=_drift)


def _drift(args: argparse.Namespace) -> int:
    spec = _checked_spec(args.spec)  # before the flows load: a bad one fails fast
    from flows.drift import drift_check  # noqa: PLC0415
    from flows.embedded import embedded_run  # noqa: PLC0415

    with embedded_run():
        drift_check(model_name=args.model_name, alias=args.alias, months=args.months, spec=spec)
    return 0


def register_materialize(subparsers: argparse._SubParsersAction) -> None:
    """``mlsys materialize``: the online store's rows for a dataset (or a model's lineage)."""
    parser = _dataset_parser(
        subparsers, "materialize", "write the online store from the newest clean tables"
    )
    parser.add_argument("--alias", default="champion")
    parser.add_argument("--full", action="store_true", help="recompute every view in full")
    parser.set_defaults(handler=_materialize)


def _materialize(args: argparse.Namespace) -> int:
    spec = _checked_spec(args.spec)  # before the flows load: a bad one fails fast
    from flows.embedded import embedded_run  # noqa: PLC0415
    from flows.materialize import materialize_features  # noqa: PLC0415

    with embedded_run():
        materialize_features(
            spec=spec,
            model_name=args.model_name,
            alias=args.alias,
            incremental=not args.full,
        )
    return 0


def register_stream(subparsers: argparse._SubParsersAction) -> None:
    """``mlsys stream``: the stream-features flow, once over the log (as its deployment)."""
    parser = subparsers.add_parser(
        "stream", help="keep the real-time feature views fresh from the dataset's event log"
    )
    parser.add_argument("--spec", help=SPEC_HELP)
    parser.add_argument("--stream", default=None, help="event stream (default: the first)")
    parser.add_argument(
        "--log", type=Path, default=None, help="the log (default: <state>/events/DATASET/STREAM)"
    )
    parser.add_argument("--max-batches", type=int, default=1000, help="micro-batches at most")
    parser.add_argument(
        "--flush", action="store_true", help="the log is complete: publish up to its last event"
    )
    parser.add_argument(
        "--no-history",
        action="store_true",
        help="a job's first batch starts empty, not from the lake's clean rows before the log",
    )
    parser.set_defaults(handler=_stream)


def _stream(args: argparse.Namespace) -> int:
    spec = _checked_spec(args.spec)  # before the flows load: a bad one fails fast
    from mlsys_core.config import Settings  # noqa: PLC0415
    from mlsys_core.datasets import spec_or_default  # noqa: PLC0415
    from mlsys_core.stream.features import event_log_dir, feature_stream_job  # noqa: PLC0415

    settings = Settings()
    dataset = spec_or_default(spec, settings.dataset)
    job = feature_stream_job(dataset, args.stream)  # an unknown stream: one line, no flow run
    log = args.log or event_log_dir(settings.root, dataset.name, job.stream.name)
    if not log.is_dir():
        raise ValueError(f"no event log at {log}: producers write its segments there")
    from flows.embedded import embedded_run  # noqa: PLC0415
    from flows.stream import stream_features  # noqa: PLC0415

    with embedded_run():
        outcomes = stream_features(
            spec=spec,
            stream=job.stream.name,
            log_dir=str(log),
            max_batches=args.max_batches,
            flush=args.flush,
            from_history=not args.no_history,
        )
    events = sum(o.events_in for o in outcomes)
    mark = outcomes[-1].watermark if outcomes else "unchanged"
    print(f"stream {job.name}: {len(outcomes)} micro-batches, {events} events; watermark {mark}")
    return 0


def register_stream_demo(subparsers: argparse._SubParsersAction) -> None:
    """``mlsys stream-demo``: see flows/stream_demo.py."""
    parser = subparsers.add_parser(
        "stream-demo",
        help="replay a day of events at an accelerated clock against the served champion",
    )
    parser.add_argument("--spec", default=None, help="dataset reference (default: settings)")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the served model")
    parser.add_argument("--day", default="2013-03-08", help="the UTC day to replay")
    parser.add_argument("--speed", type=float, default=1800.0, help="event seconds per second")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds per micro-batch")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after N intervals")
    parser.set_defaults(handler=_stream_demo)


def _stream_demo(args: argparse.Namespace) -> int:
    from flows.stream_demo import run_stream_demo  # noqa: PLC0415 - loads only here

    report = run_stream_demo(
        args.spec, args.url, args.day, args.speed, args.interval, args.max_steps
    )
    return 0 if report.freshness_s else 1


def register_prefect_server(subparsers: argparse._SubParsersAction) -> None:
    """``mlsys prefect-server up | down | status``: one Prefect server kept running for the
    state folder's Prefect home (SQLite there), so flow runs stop paying the temporary
    server's start and their history stays in a UI that outlives them. Every later
    ``make demo``, ``mlsys pipeline`` or other flow run with the same ``PREFECT_HOME`` and
    no ``PREFECT_API_URL`` finds it (``prefect_server.use_local_server``). It lives with the
    flows: the server it starts is :func:`flows.embedded.kept_server_command`'s."""
    parser = subparsers.add_parser(
        "prefect-server", help="keep a Prefect server running for this Prefect home"
    )
    sub = parser.add_subparsers(dest="action", required=True)
    up = sub.add_parser("up", help="start it unless it runs; print its API URL")
    up.add_argument("--port", type=int, default=None, help="default: a free port")
    sub.add_parser("down", help="stop it")
    sub.add_parser("status", help="its API URL, or exit 1 when it is not running")
    parser.set_defaults(handler=_prefect_server)


def _prefect_server(args: argparse.Namespace) -> int:
    from mlsys_core.stack import prefect_server, process  # noqa: PLC0415

    home = prefect_server.prefect_home()
    if args.action == "up":
        if args.port is not None and not 0 < args.port < 65536:
            raise ValueError(f"--port must be 1-65535, got {args.port}")
        from flows.embedded import kept_server_command  # noqa: PLC0415 - imports prefect

        try:
            api = prefect_server.start_local_server(home, args.port, command=kept_server_command)
        except process.ServerError as err:  # e.g. the port is taken: the server's own words
            print(f"mlsys prefect-server up: {err}", file=sys.stderr)
            return 1
        print(f"Prefect server for {home}: {api} (UI {api.removesuffix('/api')})")
        print("flow runs with this PREFECT_HOME and no PREFECT_API_URL use it")
        return 0
    if args.action == "down":
        stopped = prefect_server.stop_local_server(home)
        print(f"stopped the Prefect server for {home}" if stopped else "none was running")
        return 0
    api = prefect_server.running_local_server(home)
    print(f"running: {api}" if api else f"not running for {home}")
    return 0 if api else 1
