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

    from mlsys_core.training.trainer import TrainConfig  # noqa: PLC0415

    try:
        return TrainConfig.model_validate(_json(text, option))
    except ValidationError as err:
        raise ValueError(f"{option}: {err}") from None


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
    """``mlsys batch-score``: score the dataset's newest feature set into the lake."""
    parser = _dataset_parser(subparsers, "batch-score", "score a feature set with a model version")
    parser.add_argument("--alias", default="champion")
    parser.add_argument("--feature-set", help="version to score (default: the newest)")
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
