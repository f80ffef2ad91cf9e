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
