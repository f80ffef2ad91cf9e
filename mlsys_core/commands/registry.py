"""``mlsys registry``: register a run through the lifecycle, roll back, check the invariants.

``register`` walks the same steps as the ``register`` flow (``promotion.walk``) and takes the
same registry lock, so the CLI and flows on any machine can register at once.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from mlsys_core.config import Settings
from mlsys_core.datasets import resolve_model_name

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlsys_core.data.lake import Lake
    from mlsys_core.registry.invariants import RegistryReport
    from mlsys_core.training.run import TrainedModel


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "registry", help="register a run, roll back, or check the registry's invariants"
    )
    commands = parser.add_subparsers(dest="registry_command", required=True)

    reg = commands.add_parser(
        "register", help="register a training run and walk it through the lifecycle"
    )
    reg.add_argument("--run", help="training run id (default: the newest finished one)")
    reg.add_argument("--model", help="registered model name (default: settings)")
    reg.add_argument("--actor", default="mlsys-cli", help="who registers (audit history)")
    reg.add_argument(
        "--approve",
        action="store_true",
        help="approve the move to production as --actor (else it waits in staging)",
    )
    reg.add_argument("--margin", type=float, default=0.0, help="AUC lead the gate requires")
    reg.add_argument("--alpha", type=float, default=0.05, help="the gate's significance level")
    reg.add_argument("--n-bootstrap", type=int, default=1000, help="the gate's resamples")
    reg.add_argument("--json", action="store_true", help="print the result as JSON")
    reg.set_defaults(handler=run_register)

    back = commands.add_parser("rollback", help="put the previous production version back")
    back.add_argument("--reason", required=True, help="why (audit history)")
    back.add_argument("--model", help="registered model name (default: settings)")
    back.add_argument("--actor", default="mlsys-cli")
    back.set_defaults(handler=run_rollback)

    check = commands.add_parser(
        "check",
        help="check aliases, stage tags, audit history and semvers; exit 1 on a violation",
    )
    check.add_argument("models", nargs="*", help="registered model names (default: settings)")
    check.add_argument("--all", action="store_true", help="every registered model")
    check.add_argument(
        "--repair",
        action="store_true",
        help="under the registry lock, mend tags and aliases from the audit history",
    )
    check.add_argument("--actor", default="mlsys-cli")
    check.add_argument("--json", action="store_true", help="one JSON report per line")
    check.set_defaults(handler=run_check)


def trained_run(client: MlflowClient, lake: Lake, run_id: str) -> TrainedModel:
    """What a finished training run hands to registration, read back from MLflow."""
    from mlsys_core.features.store import feature_set_of  # noqa: PLC0415
    from mlsys_core.training.run import TAG_MODEL_URI, TrainedModel  # noqa: PLC0415

    run = client.get_run(run_id)
    if TAG_MODEL_URI not in run.data.tags:
        raise LookupError(f"run {run_id} logged no model: is it a training run?")
    return TrainedModel(
        run_id=run_id,
        model_uri=run.data.tags[TAG_MODEL_URI],
        feature_set=feature_set_of(run.data.tags, lake),
        metrics=dict(run.data.metrics),
    )


def registered_models(client: MlflowClient) -> list[str]:
    names, token = [], None
    while True:
        page = client.search_registered_models(max_results=1000, page_token=token)
        names += [m.name for m in page]
        if not (token := page.token):
            return sorted(names)


def run_register(args: argparse.Namespace) -> int:
    # Imported here: every mlsys command loads this module to build its parser, and should
    # not pay for MLflow, torch and the model code.
    from mlsys_core.data.lake import Lake  # noqa: PLC0415
    from mlsys_core.registry import promotion  # noqa: PLC0415
    from mlsys_core.registry.gate import GateConfig  # noqa: PLC0415
    from mlsys_core.registry.locking import RegistryLock  # noqa: PLC0415
    from mlsys_core.tracking import configure_mlflow  # noqa: PLC0415
    from mlsys_core.training.run import latest_trained  # noqa: PLC0415

    settings = Settings()
    client, lake = configure_mlflow(settings.tracking), Lake(settings.lake_dir)
    trained = (
        trained_run(client, lake, args.run)
        if args.run
        else latest_trained(client, settings.experiment, lake)
    )
    # As the register flow: a model registers under its dataset's model name unless given.
    name = args.model or settings.model_name or trained.feature_set.model_name
    config = GateConfig(margin=args.margin, alpha=args.alpha, n_bootstrap=args.n_bootstrap)
    approval = promotion.auto_approval(args.actor) if args.approve else None
    lock = RegistryLock(client, name)
    result = promotion.walk(client, lake, trained, name, args.actor, lock, config, approval)
    if args.json:
        print(result.model_dump_json())
    else:
        v = result.version
        print(f"{v.name} v{v.version} ({v.semver}) is in {result.stage}: {result.decision.reason}")
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    from mlsys_core.registry import lifecycle  # noqa: PLC0415
    from mlsys_core.registry.locking import RegistryLock  # noqa: PLC0415
    from mlsys_core.tracking import configure_mlflow  # noqa: PLC0415

    settings = Settings()
    client = configure_mlflow(settings.tracking)
    name = resolve_model_name(args.model or settings.model_name, settings.dataset)
    event = lifecycle.rollback(client, name, args.actor, args.reason, RegistryLock(client, name))
    print(f"{name}: production rolled back from v{event.from_version} to v{event.to_version}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from mlsys_core.registry import invariants  # noqa: PLC0415
    from mlsys_core.registry.locking import RegistryLock, is_lock_model  # noqa: PLC0415
    from mlsys_core.tracking import configure_mlflow  # noqa: PLC0415

    settings = Settings()
    client = configure_mlflow(settings.tracking)
    if args.all:
        names = [n for n in registered_models(client) if not is_lock_model(n)]
    else:
        names = args.models or [resolve_model_name(settings.model_name, settings.dataset)]
    reports = []
    for name in names:
        if args.repair:
            lock = RegistryLock(client, name)
            reports.append(invariants.repair(client, name, args.actor, lock))
        else:
            reports.append(invariants.check_registry(client, name))
    for report in reports:
        print(report.model_dump_json() if args.json else describe(report))
    return 0 if all(r.ok for r in reports) else 1


def describe(report: RegistryReport) -> str:
    counts: dict[str, int] = {}
    for stage in report.stages.values():
        counts[stage] = counts.get(stage, 0) + 1
    aliases = ", ".join(f"@{a}=v{v}" for a, v in sorted(report.aliases.items())) or "none"
    lines = [
        f"{report.name}: {report.versions} versions {json.dumps(counts)}, "
        f"{report.events} audit events; aliases {aliases}",
        f"  {'all invariants hold' if report.ok else f'{len(report.violations)} violation(s)'}",
    ]
    lines += [
        f"  - {v.invariant}{' v' + v.version if v.version else ''}: {v.detail}"
        for v in report.violations
    ]
    return "\n".join(lines)
