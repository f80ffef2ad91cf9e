"""``mlsys settings``: where this checkout keeps its state, as the code resolves it."""

from __future__ import annotations

import argparse
import json

from mlsys_core.config import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("settings", help="print the resolved settings as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = Settings()
    print(
        json.dumps(
            {
                "state_dir": str(settings.root),
                "lake_dir": str(settings.lake_dir),
                "tracking_uri": settings.mlflow_uri,
                "experiment": settings.experiment,
                "model_name": settings.model_name,
            },
            indent=2,
        )
    )
    return 0
