"""``mlsys study``: what a tuning study holds, from any machine that reaches its storage
(how workers on several machines follow a shared study)."""

from __future__ import annotations

import argparse
import json

from mlsys_core.config import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "study", help="list tuning studies, or show one study's trials and best trial as JSON"
    )
    parser.add_argument("name", nargs="?", help="study name; omit to list the studies")
    parser.add_argument("--storage", help="Optuna storage URL (default: the state folder's)")
    parser.add_argument("--top", type=int, default=5, help="best trials to show (default: 5)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: optuna and torch load only when this command runs.
    from mlsys_core.tuning.report import describe_study, list_studies  # noqa: PLC0415
    from mlsys_core.tuning.study import storage_url  # noqa: PLC0415

    url = storage_url(Settings(), args.storage)
    if args.name is None:
        print(json.dumps(list_studies(url), indent=2))
    else:
        print(json.dumps(describe_study(url, args.name, args.top), indent=2))
    return 0
