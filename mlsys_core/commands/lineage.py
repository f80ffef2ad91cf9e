"""``mlsys lineage models:/<name>@<alias>``: what a registered model is and what made it."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from mlsys_core.config import Settings

if TYPE_CHECKING:
    from mlsys_core.registry.lineage import Lineage


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "lineage",
        help="print a model version's data, features, run, tuning, gate, deployments, history",
    )
    parser.add_argument("uri", help="models:/<name>@<alias> or models:/<name>/<version>")
    parser.add_argument("--json", action="store_true", help="print the full record as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: every mlsys command loads this module to build its parser.
    from mlsys_core.registry.lineage import lineage  # noqa: PLC0415
    from mlsys_core.tracking import configure_mlflow  # noqa: PLC0415

    found = lineage(configure_mlflow(Settings().tracking), args.uri)
    print(found.model_dump_json(indent=2) if args.json else describe(found))
    return 0


def describe(found: Lineage) -> str:
    """A short human summary; ``--json`` has every field."""
    gate = found.gate
    lines = [
        f"{found.uri}  ->  {found.name} v{found.version}  semver {found.semver}",
        f"  stage            {found.stage}   aliases: {', '.join(found.aliases) or '-'}",
        f"  dataset          {found.dataset}   spec {found.spec_fingerprint}",
        f"  raw snapshots    {found.raw_snapshots}",
        f"  clean snapshots  {found.clean_snapshots}",
        f"  feature set      {found.feature_set}",
        f"  training run     {found.run_id}   code {found.code_version}",
        f"  params           {found.run_params}",
        f"  tuning study     {found.tuning.study if found.tuning else '-'}",
        "  gate             "
        + (f"{'passed' if gate.promote else 'refused'}: {gate.reason}" if gate else "-"),
        "  approval         "
        + (
            f"{'approved' if found.approval.approve else 'rejected'} by "
            f"{found.approval.approver}: {found.approval.reason}"
            if found.approval
            else "-"
        ),
        "  served by        "
        + (", ".join(f"{s.deployment} (last {s.last_seen})" for s in found.served_by) or "-"),
        "  history",
    ]
    for e in found.history:
        move = f"{e.from_stage or ''}->{e.to_stage or ''}".strip("->") or "-"
        versions = f"v{e.from_version}->v{e.to_version}" if e.from_version else ""
        lines.append(f"    {e.at}  {e.action:<10} {move:<22} {versions:<10} {e.actor}: {e.reason}")
    return "\n".join(lines)
