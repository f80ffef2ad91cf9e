"""``mlsys lake check`` and ``mlsys lake gc``: what a crash left in the lake, and removing it.

Both are safe while flows run: ``check`` only reads, and ``gc`` removes only what is older
than the grace period and still unreferenced when it looks again under the lake's lock.
"""

from __future__ import annotations

import argparse
from datetime import timedelta
from pathlib import Path

from mlsys_core.config import Settings
from mlsys_core.data.lake import Lake
from mlsys_core.data.maintenance import (
    DEFAULT_GRACE,
    LakeReport,
    check_lake,
    collect_garbage,
    parse_duration,
)

_GRACE_HELP = (
    "leave alone what is younger than this (a running writer's parts); 90s, 15m, 2h, 1d "
    f"(default {int(DEFAULT_GRACE.total_seconds() // 3600)}h)"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("lake", help="check the lake for crash leftovers; collect them")
    commands = parser.add_subparsers(dest="lake_command", required=True)
    check = commands.add_parser(
        "check",
        help="list orphan parts, temporary files, snapshots without manifests, manifests "
        "whose parts are missing and incomplete clean/quarantine pairs",
    )
    gc = commands.add_parser("gc", help="remove what no committed snapshot references")
    for sub in (check, gc):
        sub.add_argument("--lake", type=Path, help="the lake folder (default: the settings')")
        sub.add_argument("--grace", default=None, help=_GRACE_HELP)
        sub.add_argument("--json", action="store_true", help="print the full report as JSON")
    gc.add_argument("--dry-run", action="store_true", help="list what would be removed")
    check.set_defaults(handler=run_check)
    gc.set_defaults(handler=run_gc)


def _lake(args: argparse.Namespace) -> Lake:
    return Lake(args.lake if args.lake else Settings().lake_dir)


def _grace(args: argparse.Namespace) -> timedelta:
    return parse_duration(args.grace) if args.grace is not None else DEFAULT_GRACE


def run_check(args: argparse.Namespace) -> int:
    """Exit 0 when the lake holds no damage and no garbage older than the grace period."""
    report = check_lake(_lake(args), _grace(args))
    print(report.model_dump_json(indent=2) if args.json else describe(report))
    return 0 if report.ok else 1


def run_gc(args: argparse.Namespace) -> int:
    lake = _lake(args)
    result = collect_garbage(lake, _grace(args), dry_run=args.dry_run)
    if args.json:
        print(result.model_dump_json(indent=2))
        return 0
    verb = "would remove" if result.dry_run else "removed"
    for finding in result.removed:
        print(f"  {verb}  {finding.kind:<16} {finding.path}")
    print(
        f"{verb} {len(result.removed)} leftovers ({result.bytes_freed} bytes); "
        f"{result.kept} left alone (younger than the grace period, or in use again)"
    )
    damage = check_lake(lake, _grace(args)).damage
    for finding in damage:
        print(f"  DAMAGE  {finding.kind:<16} {finding.path}: {finding.detail}")
    return 1 if damage else 0


def describe(report: LakeReport) -> str:
    lines = [
        f"lake {report.root}: {report.snapshots} committed snapshots, {report.parts} parts",
    ]
    sections = [
        ("damage (not collectable: committed data is missing or unreadable)", report.damage),
        (f"garbage (older than {report.grace_s:.0f}s: `mlsys lake gc` removes it)", report.garbage),
        ("pending (younger: maybe a running writer's)", report.pending),
    ]
    for title, findings in sections:
        if findings:
            lines.append(f"{title}: {len(findings)}")
            for f in findings:
                lines.append(f"  {f.kind:<16} {f.path}  ({f.detail}; {f.age_s:.0f}s old)")
    if report.ok:
        lines.append("ok: no damage, no garbage")
    return "\n".join(lines)
