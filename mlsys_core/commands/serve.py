"""``mlsys serve``: the inference API on the champion (and challenger, by rollout mode)."""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from mlsys_core.datasets import SPEC_HELP


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve the registered model over HTTP (POST /predict, /health/*, /metrics)",
        description="Serve the model the MLflow aliases point at, with uvicorn. Settings come "
        "from MLSYS_* variables; the serve config from --config (a JSON ServeConfig) with the "
        "options below on top.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--config", type=Path, help="JSON file of a ServeConfig")
    parser.add_argument(
        "--mode",
        choices=["single", "blue_green", "canary", "ab", "shadow"],
        help="rollout mode (default: the config's, else blue_green)",
    )
    parser.add_argument("--share", type=float, help="challenger share for canary, ab or shadow")
    parser.add_argument("--poll-interval", type=float, help="seconds between alias checks")
    parser.add_argument("--model-name", help="registered model (default: MLSYS_MODEL_NAME)")
    parser.add_argument(
        "--spec",
        help=f"{SPEC_HELP}; default: the spec in the champion's lineage (given, it must be that "
        "one), before any champion the configured dataset",
    )
    parser.add_argument(
        "--report-imputed",
        action="store_true",
        help="add each prediction's count of inputs that reached the model missing",
    )
    parser.add_argument("--deployment", help="name recorded in the served versions' lineage")
    parser.add_argument("--log-level", default="info")
    parser.set_defaults(handler=run)


def build_config(args: argparse.Namespace):  # noqa: ANN201 -- a ServeConfig
    """The ServeConfig of the file, if any, with the command-line options applied."""
    from mlsys_core.datasets import resolve_spec  # noqa: PLC0415
    from mlsys_core.serving.config import ServeConfig  # noqa: PLC0415 -- keep `mlsys` fast

    if args.spec:
        resolve_spec(args.spec)  # a bad reference: its one line, not a validation report

    data = json.loads(args.config.read_text()) if args.config else {}
    rollout = data.setdefault("rollout", {})
    if args.mode:
        rollout["mode"] = args.mode
    if args.share is not None:
        mode = rollout.get("mode", "blue_green")
        key = {"canary": "canary", "ab": "ab", "shadow": "shadow"}.get(mode)
        if key is None:
            raise ValueError(f"--share applies to canary, ab or shadow, not {mode}")
        rollout.setdefault(key, {})["share"] = args.share
    if args.poll_interval is not None:
        rollout["poll_interval_s"] = args.poll_interval
    if args.model_name:
        data["model_name"] = args.model_name
    if args.spec:
        data["spec"] = args.spec
    if args.deployment:
        data["deployment"] = args.deployment
    if args.report_imputed:
        data["report_imputed"] = True
    return ServeConfig.model_validate(data)


def startup_table(service) -> str:  # noqa: ANN001 -- an InferenceService, imported late
    """Where every model input comes from, and what the online store holds now."""
    from mlsys_core.features.online import source_problems  # noqa: PLC0415

    plan = service.plan
    lines = [f"serving {service.name} (dataset {service.spec.name}): every model input's source"]
    lines += ["  " + line for line in plan.describe().splitlines()]
    if service.store is not None and plan.online_names:
        problems = source_problems(service.store, plan.online_names)
        states = service.store.states()
        lines.append(f"  online store {getattr(service.store, 'path', service.store)}:")
        for name in plan.online_names:
            state = states.get(name)
            if name in problems:
                lines.append(f"    {name}: {problems[name]} (NOT READY: run materialize)")
            else:
                when = f", as of {state.watermark:%Y-%m-%d %H:%M:%S}Z" if state.watermark else ""
                lines.append(f"    {name}: {state.rows} rows{when}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import uvicorn  # noqa: PLC0415 -- keep `mlsys` fast for the other commands
    from pydantic import ValidationError  # noqa: PLC0415

    from mlsys_core.messages import invalid  # noqa: PLC0415
    from mlsys_core.serving.app import CONFIG_ENV, create_app  # noqa: PLC0415

    try:
        config = build_config(args)
    except (ValidationError, json.JSONDecodeError) as err:
        said = invalid(err) if isinstance(err, ValidationError) else err
        raise ValueError(f"bad serve config: {said}") from None
    os.environ[CONFIG_ENV] = config.model_dump_json()
    # Reloads, rollbacks and log flushes are reported through `logging`.
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_app(config=config)
    print(startup_table(app.state.service), flush=True)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        workers=1,
        log_level=args.log_level,
        access_log=False,  # a line per request costs more than scoring it; /metrics counts
    )
    return 0
