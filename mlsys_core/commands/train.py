"""``mlsys train``: train on the newest feature set, here or as one node of a torchrun group.

Run the same command on every node (same ``--nnodes``, ``--rdzv-endpoint`` and state folder
on a shared filesystem); torchrun's c10d rendezvous forms the group and rank 0 logs to
MLflow.
"""

from __future__ import annotations

import argparse
import json
import sys

from mlsys_core.datasets import SPEC_HELP


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train on the newest feature set (in-process or through torchrun)"
    )
    parser.add_argument("--spec", help=SPEC_HELP)
    parser.add_argument(
        "--config", default="{}", help="TrainConfig fields as JSON, e.g. '{\"epochs\": 5}'"
    )
    parser.add_argument("--strategy", choices=["single", "ddp", "fsdp"], default="single")
    parser.add_argument("--sync", choices=["allreduce", "local_sgd"], default="allreduce")
    parser.add_argument("--local-sgd-period", type=int, default=8)
    parser.add_argument("--nproc-per-node", type=int, default=1)
    parser.add_argument("--nnodes", type=int, default=1)
    parser.add_argument("--rdzv-endpoint", default=None, help="host:port, same on every node")
    parser.add_argument("--rdzv-id", default=None, help="same on every node; default: job key")
    parser.add_argument("--max-restarts", type=int, default=1)
    parser.add_argument("--checkpoint-every-steps", type=int, default=None)
    parser.add_argument(
        "--print-command", action="store_true", help="print this node's torchrun command only"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: `mlsys settings` should not pay for torch and MLflow.
    from pydantic import ValidationError  # noqa: PLC0415

    from mlsys_core.config import Settings  # noqa: PLC0415
    from mlsys_core.data.lake import Lake  # noqa: PLC0415
    from mlsys_core.datasets import spec_or_default  # noqa: PLC0415
    from mlsys_core.features.store import latest_feature_set  # noqa: PLC0415
    from mlsys_core.messages import invalid  # noqa: PLC0415
    from mlsys_core.training import launch as launch_core  # noqa: PLC0415
    from mlsys_core.training.config import TrainConfig  # noqa: PLC0415
    from mlsys_core.training.distributed import LaunchConfig  # noqa: PLC0415
    from mlsys_core.training.signals import TrainingTerminated, sigterm_raises  # noqa: PLC0415

    try:
        config = TrainConfig.model_validate_json(args.config)
        launch = LaunchConfig(
            strategy=args.strategy,
            sync=args.sync,
            local_sgd_period=args.local_sgd_period,
            nproc_per_node=args.nproc_per_node,
            nnodes=args.nnodes,
            rdzv_endpoint=args.rdzv_endpoint,
            rdzv_id=args.rdzv_id,
            max_restarts=args.max_restarts,
            checkpoint_every_steps=args.checkpoint_every_steps,
            launcher="torchrun" if args.print_command else "auto",
        )
    except ValidationError as exc:
        raise ValueError(invalid(exc)) from None
    settings = Settings()
    dataset = spec_or_default(args.spec, settings.dataset).name
    features = latest_feature_set(Lake(settings.lake_dir), dataset)
    if args.print_command:
        job = launch_core.TrainingJob(
            key=launch_core.job_key(features, config, launch),
            feature_set=features,
            config=config,
            launch=launch,
            settings=settings.model_dump(mode="json"),
        )
        job_file = launch_core.write_job(job)
        endpoint = launch.rdzv_endpoint or "127.0.0.1:29400"
        print(" ".join(launch_core.torchrun_command(job, job_file, endpoint)))
        return 0
    try:
        # SIGTERM (a scheduler stopping the job, kill -TERM) stops the whole training group
        # and ends its MLflow run KILLED; without this the launcher died alone and torchrun
        # and its workers trained on, to a FINISHED run.
        with sigterm_raises():
            trained = launch_core.train(features, config, settings, launch)
    except TrainingTerminated as stop:
        print(f"mlsys train: {stop}; the training group is stopped, its run KILLED",
              file=sys.stderr)  # fmt: skip
        return 128 + stop.signum
    print(json.dumps(trained.model_dump(mode="json", include={"run_id", "model_uri", "metrics"})))
    return 0
