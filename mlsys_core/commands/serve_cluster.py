"""``mlsys serve-cluster``: N replicas of the inference service behind nginx on 127.0.0.1.

Runs in the foreground until SIGINT or SIGTERM, then stops nginx (gracefully) and the
replicas. The nginx config, logs and a ``status.json`` of the replicas live in
``<state>/cluster/`` (``--folder``).
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from pathlib import Path

from mlsys_core.datasets import SPEC_HELP

# What the app's factory reads its ServeConfig from (mlsys_core.serving.app.CONFIG_ENV; not
# imported, so the supervisor does not load torch and MLflow).
SERVE_CONFIG_ENV = "MLSYS_SERVE_CONFIG"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve-cluster", help="serve the model from N replicas behind nginx (127.0.0.1)"
    )
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument(
        "--strategy", choices=["round_robin", "weighted", "least_conn"], default="round_robin"
    )
    parser.add_argument("--weights", default=None, help="comma-separated, one per replica: 3,1")
    parser.add_argument("--port", type=int, default=8000, help="nginx's port on 127.0.0.1")
    parser.add_argument("--no-restart", action="store_true", help="leave exited replicas down")
    parser.add_argument("--folder", default=None, help="default: <state>/cluster")
    parser.add_argument(
        "--serve-config",
        default=None,
        help="JSON file of the replicas' ServeConfig (as `mlsys serve --config`)",
    )
    parser.add_argument("--model-name", help="registered model (default: MLSYS_MODEL_NAME)")
    parser.add_argument(
        "--spec",
        help=f"{SPEC_HELP}; default: the spec in the champion's lineage (given, it must be "
        "that one)",
    )
    parser.add_argument(
        "--config",
        default="{}",
        help="more ClusterConfig fields as JSON, e.g. '{\"health_interval_s\": 1}'",
    )
    parser.set_defaults(handler=run)


def cluster_config(args: argparse.Namespace):  # noqa: ANN201 -- ClusterConfig, imported late
    from pydantic import ValidationError  # noqa: PLC0415

    from mlsys_core.messages import invalid  # noqa: PLC0415
    from mlsys_core.serving.cluster import ClusterConfig  # noqa: PLC0415

    fields = {"replicas": args.replicas, "strategy": args.strategy, "port": args.port}
    if args.weights:
        try:
            fields["weights"] = [int(w) for w in args.weights.split(",")]
        except ValueError:
            raise ValueError(f"--weights must be integers like 3,1, got {args.weights!r}") from None
    if args.no_restart:
        fields["restart"] = False
    try:
        return ClusterConfig.model_validate({**json.loads(args.config), **fields})
    except ValidationError as exc:
        raise ValueError(invalid(exc)) from None
    except json.JSONDecodeError as exc:
        raise ValueError(str(exc)) from None


def replica_config(path: Path | None, model_name: str | None, spec: str | None) -> str | None:
    """The replicas' ServeConfig as JSON (the file's, with --model-name and --spec on top),
    checked here, once, rather than in every replica at start-up; None: the defaults."""
    from pydantic import ValidationError  # noqa: PLC0415

    from mlsys_core.messages import invalid  # noqa: PLC0415
    from mlsys_core.serving.config import ServeConfig  # noqa: PLC0415

    if path is None and model_name is None and spec is None:
        return None
    if spec:
        from mlsys_core.datasets import resolve_spec  # noqa: PLC0415

        resolve_spec(spec)  # a bad reference: its one line, not a validation report
    try:
        data = json.loads(path.read_text()) if path is not None else {}
        if model_name:
            data["model_name"] = model_name
        if spec:
            data["spec"] = spec  # resolved by the validator: a bad reference fails here
        return ServeConfig.model_validate(data).model_dump_json(exclude_defaults=True)
    except (OSError, ValidationError, json.JSONDecodeError) as exc:
        where = f"--serve-config {path}" if path else "serve config"
        said = invalid(exc) if isinstance(exc, ValidationError) else exc
        raise ValueError(f"bad {where}: {said}") from None


def run(args: argparse.Namespace) -> int:
    from mlsys_core.config import Settings  # noqa: PLC0415
    from mlsys_core.serving.cluster import Cluster, ClusterError  # noqa: PLC0415

    config = cluster_config(args)
    folder = Path(args.folder) if args.folder else Settings().root / "cluster"
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    env = {}
    serve_config = Path(args.serve_config) if args.serve_config else None
    # Each replica's create_app reads it (uvicorn --factory).
    if text := replica_config(serve_config, args.model_name, args.spec):
        env[SERVE_CONFIG_ENV] = text
    try:
        cluster = Cluster(config, folder, env=env)  # finds nginx, or says how to install it
        cluster.start(stop)
    except ClusterError as exc:
        raise ValueError(str(exc)) from None
    ports = ", ".join(str(r.port) for r in cluster.replicas)
    print(
        f"nginx on {cluster.url} -> {len(cluster.replicas)} replicas on 127.0.0.1:{{{ports}}} "
        f"({config.strategy}); status in {cluster.status_path}",
        flush=True,
    )
    try:
        cluster.run(stop)
    except ClusterError as exc:  # nginx died; the replicas are stopped by now
        raise ValueError(str(exc)) from None
    print("stopped nginx and the replicas", flush=True)
    return 0
