"""Commands of the ``mlsys`` CLI that orchestrate flows. They belong with the flows; the core
CLI finds them through the ``mlsys.commands`` entry-point group (pyproject.toml) and names
none of them. Registering imports nothing heavy: the flows load when a command runs."""

from __future__ import annotations

import argparse
from pathlib import Path


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
