"""The ``mlsys`` command. Each subcommand lives in its own module under
``mlsys_core.commands`` and exposes ``register(subparsers)``, so stages add commands without
touching each other's code. Packages outside the core (the flows' orchestration commands)
add theirs through the ``mlsys.commands`` entry-point group, so the core names none of
them."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from mlsys_core import commands
from mlsys_core.config import Settings, StateFolderError
from mlsys_core.stack import prefect_server


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlsys", description=__doc__.split("\n\n")[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(subparsers)
    for entry in sorted(entry_points(group="mlsys.commands"), key=lambda e: e.name):
        entry.load()(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Before any command imports prefect: Prefect's home is in the state folder unless set,
    # and a flow uses `mlsys prefect-server up`'s server for that home, when one runs,
    # instead of starting a temporary one.
    with contextlib.suppress(ValueError):  # a bad MLSYS_ setting: the command says so
        prefect_server.state_folder_prefect(Settings().root)
    prefect_server.use_local_server()
    # A command's output is read as a log: no MLflow download bars between its lines.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        return int(args.handler(args) or 0)
    # Expected user errors (a bad reference or option, an unusable state folder): one line,
    # no traceback.
    except (LookupError, ValueError, StateFolderError) as exc:
        print(f"mlsys {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
