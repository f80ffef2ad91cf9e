"""``mlsys history <model>``: the registered model's append-only audit history."""

from __future__ import annotations

import argparse

from mlsys_core.config import Settings
from mlsys_core.datasets import resolve_model_name


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "history", help="print every stage move and gate decision of a registered model"
    )
    parser.add_argument("model", nargs="?", help="registered model name (default: settings)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: every mlsys command loads this module to build its parser.
    from mlsys_core.registry.lifecycle import history  # noqa: PLC0415
    from mlsys_core.tracking import configure_mlflow  # noqa: PLC0415

    settings = Settings()
    name = resolve_model_name(args.model or settings.model_name, settings.dataset)
    for event in history(configure_mlflow(settings.tracking), name):
        print(event.model_dump_json(exclude_none=True))
    return 0
