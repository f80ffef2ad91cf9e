"""``mlsys features get``: one entity's feature vector from the online store, as JSON."""

from __future__ import annotations

import argparse
import json

from mlsys_core.config import Settings
from mlsys_core.features.online import open_online_store


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("features", help="read the online feature store")
    actions = parser.add_subparsers(dest="action", required=True)
    get = actions.add_parser("get", help="print an entity's features (run materialize first)")
    get.add_argument("keys", nargs="+", metavar="KEY=VALUE", help="join keys, e.g. carrier=UA")
    get.add_argument("--names", default="", help="comma-separated features (default: all)")
    get.set_defaults(handler=run_get)


def run_get(args: argparse.Namespace) -> int:
    entity = {}
    for pair in args.keys:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE, got {pair!r}")
        entity[key] = value
    settings = Settings()
    store = open_online_store(settings.root, settings.online_store)
    names = [n for n in args.names.split(",") if n] or store.feature_names()
    print(json.dumps(store.get_features(entity, names), indent=2))
    return 0
