"""``mlsys ab-test``: which A/B variant wins, from the prediction log and arrived labels."""

from __future__ import annotations

import argparse
from datetime import datetime

from mlsys_core.datasets import SPEC_HELP


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ab-test",
        help="compare the A/B variants' served predictions against the labels in the lake",
        description="Joins the prediction log to the newest clean base table (the labels "
        "that have arrived) and runs a two-proportion z-test on the variants' accuracy.",
    )
    parser.add_argument("--since", type=datetime.fromisoformat, help="log rows from (ISO time)")
    parser.add_argument("--until", type=datetime.fromisoformat, help="log rows before")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--min-outcomes", type=int, default=30)
    parser.add_argument("--model-name", help="only rows of this registered model")
    parser.add_argument("--spec", help=SPEC_HELP)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: `mlsys` builds every subcommand's parser, and these imports are heavy.
    from mlsys_core.config import Settings  # noqa: PLC0415
    from mlsys_core.data.lake import Lake  # noqa: PLC0415
    from mlsys_core.datasets import spec_or_default  # noqa: PLC0415
    from mlsys_core.serving.abtest import ab_test  # noqa: PLC0415
    from mlsys_core.serving.outcomes import join_outcomes  # noqa: PLC0415
    from mlsys_core.serving.prediction_log import read_prediction_log  # noqa: PLC0415

    settings = Settings()
    spec = spec_or_default(args.spec, settings.dataset)
    lake = Lake(settings.lake_dir)
    log = read_prediction_log(lake, spec.name, args.since, args.until)
    if args.model_name:
        log = log[log["model_name"] == args.model_name]
    if log.empty:
        raise LookupError(f"no prediction-log rows for {spec.name} in {lake.root}")
    if lake.latest("clean", spec.base) is None:
        raise LookupError(f"no clean {spec.base!r} table in {lake.root}: no labels yet")
    result = ab_test(join_outcomes(lake, spec, log), args.alpha, args.min_outcomes)
    print(result.model_dump_json(indent=2))
    return 0
