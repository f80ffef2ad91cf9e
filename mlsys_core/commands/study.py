"""``mlsys study``: what a tuning study holds, from any machine that reaches its storage
(how workers on several machines follow a shared study)."""

from __future__ import annotations

import argparse
import json

from mlsys_core.config import Settings
from mlsys_core.datasets import SPEC_HELP, resolve_spec


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "study", help="list tuning studies, or show one study's trials and best trial as JSON"
    )
    parser.add_argument("name", nargs="?", help="study name; omit to list the studies")
    parser.add_argument("--storage", help="Optuna storage URL (default: the state folder's)")
    parser.add_argument("--top", type=int, default=5, help="best trials to show (default: 5)")
    parser.add_argument(
        "--spec", help=f"{SPEC_HELP}; given, list only the studies of its feature sets"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: optuna and torch load only when this command runs.
    from mlsys_core.tuning.report import describe_study, list_studies  # noqa: PLC0415

    url = Settings().optuna_url(args.storage)
    if args.name is None:
        studies = list_studies(url)
        if args.spec:  # a tuning flow names a study after the feature set: <dataset>-<version>
            prefix = f"{resolve_spec(args.spec).name}-"
            studies = [s for s in studies if s["study"].startswith(prefix)]
        print(json.dumps(studies, indent=2))
    else:
        print(json.dumps(describe_study(url, args.name, args.top), indent=2))
    return 0
