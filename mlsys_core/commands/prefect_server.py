"""``mlsys prefect-server up | down | status``: one Prefect server kept running for the
state folder's Prefect home (SQLite there), so flow runs stop paying the temporary server's
start and their history stays in a UI that outlives them.

Every later ``make demo``, ``mlsys pipeline`` or other flow run with the same
``PREFECT_HOME`` and no ``PREFECT_API_URL`` finds it and uses it
(``prefect_server.use_local_server``).
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prefect-server", help="keep a Prefect server running for this Prefect home"
    )
    sub = parser.add_subparsers(dest="action", required=True)
    up = sub.add_parser("up", help="start it unless it runs; print its API URL")
    up.add_argument("--port", type=int, default=None, help="default: a free port")
    sub.add_parser("down", help="stop it")
    sub.add_parser("status", help="its API URL, or exit 1 when it is not running")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from mlsys_core.stack import prefect_server, process  # noqa: PLC0415

    home = prefect_server.prefect_home()
    if args.action == "up":
        if args.port is not None and not 0 < args.port < 65536:
            raise ValueError(f"--port must be 1-65535, got {args.port}")
        try:
            api = prefect_server.start_local_server(home, args.port)
        except process.ServerError as err:  # e.g. the port is taken: the server's own words
            print(f"mlsys prefect-server up: {err}", file=sys.stderr)
            return 1
        print(f"Prefect server for {home}: {api} (UI {api.removesuffix('/api')})")
        print("flow runs with this PREFECT_HOME and no PREFECT_API_URL use it")
        return 0
    if args.action == "down":
        stopped = prefect_server.stop_local_server(home)
        print(f"stopped the Prefect server for {home}" if stopped else "none was running")
        return 0
    api = prefect_server.running_local_server(home)
    print(f"running: {api}" if api else f"not running for {home}")
    return 0 if api else 1
