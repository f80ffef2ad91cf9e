"""``mlsys features get``: one entity's feature vector from the online store, as JSON."""

from __future__ import annotations

import argparse
import json

from mlsys_core.config import Settings
from mlsys_core.datasets import SPEC_HELP, resolve_spec


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("features", help="read the online feature store")
    actions = parser.add_subparsers(dest="action", required=True)
    get = actions.add_parser("get", help="print an entity's features (run materialize first)")
    get.add_argument("keys", nargs="+", metavar="KEY=VALUE", help="join keys, e.g. carrier=UA")
    get.add_argument("--names", default="", help="comma-separated features (default: all)")
    get.add_argument(
        "--spec", help=f"{SPEC_HELP}; given, the default features are its dataset's views'"
    )
    get.set_defaults(handler=run_get)


def run_get(args: argparse.Namespace) -> int:
    # Imported here: every mlsys command loads this module to build its parser.
    from mlsys_core.features.online import open_online_store  # noqa: PLC0415

    entity = {}
    for pair in args.keys:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE, got {pair!r}")
        entity[key] = value
    spec = resolve_spec(args.spec) if args.spec else None
    if spec is not None:
        known = {*spec.entity_keys, *(k for v in spec.feature_views for k in v.entity.join_keys)}
        if stray := sorted(set(entity) - known):
            raise ValueError(f"{stray}: not join keys of dataset {spec.name!r} ({sorted(known)})")
    settings = Settings()
    store = open_online_store(settings.root, settings.online_store)
    names = [n for n in args.names.split(",") if n]
    if not names and spec is not None:
        stored = set(store.feature_names())
        names = [f for f in spec.view_features if f in stored]
        if not names:
            raise LookupError(
                f"the online store holds no feature of dataset {spec.name!r}: run "
                f"mlsys materialize --spec {args.spec}"
            )
    names = names or store.feature_names()
    print(json.dumps(store.get_features(entity, names), indent=2))
    return 0
