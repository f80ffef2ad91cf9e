"""``mlsys stack up | down | status | env``: the production topology on this machine.

Postgres, a Prefect server with a process pool and workers, an MLflow server serving its
artifacts, a Dask scheduler and workers, and the serving replicas behind nginx; every part
a real server process bound to 127.0.0.1 with its log and pid under ``<state>/stack``. See
``mlsys_core.stack.stack`` and docs/stack.md.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("stack", help="start, stop or check the local production stack")
    parser.add_argument("--state", type=Path, default=None, help="default: the settings' state")
    parser.add_argument(
        "--project",
        type=Path,
        default=None,
        help="folder of prefect.yaml the workers run flows from (default: the current folder)",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    up = sub.add_parser("up", help="start every part that is not running; print the settings")
    up.add_argument(
        "--config",
        default="{}",
        help="StackConfig fields as JSON on the first up, e.g. '{\"prefect_port\": 4200}'",
    )
    up.add_argument(
        "--dataset",
        default=None,
        help="dataset reference the stack runs and serves (NAME, module:attr or file.py:attr; "
        "default: MLSYS_DATASET); kept for later ups",
    )
    down = sub.add_parser("down", help="stop every part")
    down.add_argument(
        "--purge", action="store_true", help="also delete the stack's databases and artifacts"
    )
    sub.add_parser("status", help="each part's pid and health")
    sub.add_parser("env", help='the settings as export lines: eval "$(mlsys stack env)"')
    parser.set_defaults(handler=run)


def _settings():  # noqa: ANN202 - Settings, imported late
    from mlsys_core.config import Settings  # noqa: PLC0415

    return Settings()


def _stack(args: argparse.Namespace):  # noqa: ANN202 - Stack, imported late
    from mlsys_core.stack.stack import Stack  # noqa: PLC0415

    return Stack(args.state or _settings().root, args.project)


def _print_status(parts: list) -> bool:
    width = max((len(p.name) for p in parts), default=4)
    for part in parts:
        if part.healthy:
            mark = "ok  "
        elif part.pid is None:
            mark = "DOWN"
        else:
            mark = "WAIT" if part.detail.startswith("waiting") else "BAD "
        pid = str(part.pid) if part.pid else "-"
        print(f"  {mark} {part.name:<{width}}  pid {pid:<8} {part.detail}")
    return all(p.healthy for p in parts)


def _print_env(env: dict[str, str]) -> None:
    for key, value in env.items():
        print(f"export {key}={shlex.quote(value)}")


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError  # noqa: PLC0415

    from mlsys_core.messages import invalid  # noqa: PLC0415
    from mlsys_core.stack.postgres import PostgresError  # noqa: PLC0415
    from mlsys_core.stack.stack import StackConfig, StackError  # noqa: PLC0415

    stack = _stack(args)
    try:
        if args.action == "up":
            try:
                wanted = StackConfig.model_validate_json(args.config)
            except ValidationError as exc:
                raise ValueError(f"bad --config: {invalid(exc)}") from None
            dataset = args.dataset or wanted.dataset or _settings().dataset
            if dataset is not None:
                from mlsys_core.datasets import resolve_spec  # noqa: PLC0415

                resolve_spec(dataset)  # a bad reference fails here, not in every replica
                wanted = wanted.model_copy(update={"dataset": dataset})
            report = stack.up(wanted)
            print(
                f"stack up in {report.seconds:.1f} s (started {len(report.started)}, "
                f"already running {len(report.already_running)}); state {stack.folder}"
            )
            # Every part answered; serving may still wait for a first champion.
            _print_status(report.parts)
            print('\n# point the pipeline at the stack (or: eval "$(mlsys stack env)"):')
            _print_env(stack.settings_env(stack.configure()))
            return 0
        if args.action == "down":
            import time  # noqa: PLC0415

            started = time.monotonic()
            outcome = stack.down(purge=args.purge)
            for name, what in outcome:
                print(f"  {name:<18} {what}")
            print(f"stack down in {time.monotonic() - started:.1f} s")
            return 0
        config = stack.load_config()
        if config is None:
            raise ValueError(f"no stack in {stack.folder}: `mlsys stack up` first")
        if args.action == "env":
            _print_env(stack.settings_env(config))
            return 0
        return 0 if _print_status(stack.status(config)) else 1
    except (StackError, PostgresError) as exc:
        raise ValueError(str(exc)) from None
