"""``mlsys spec``: write a starting spec for your own data (``init``), or check one (``check``).

``mlsys spec init data/ --label churned`` looks at a CSV, Parquet or JSON-lines file (or a
folder of them, or the tables of a database) and writes ``dataset.py``, whose function
returns the spec; every flow and command then takes ``--spec dataset.py:NAME``.
``mlsys spec check REF`` resolves a reference and says what it names.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from mlsys_core.datasets import SPEC_HELP


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "spec", help="write a starting dataset spec for your data, or check a spec reference"
    )
    actions = parser.add_subparsers(dest="action", required=True)
    init = actions.add_parser(
        "init",
        help="inspect a CSV, Parquet or JSON-lines file (or a folder of them) and write a "
        "spec file to edit",
        description="Types, ranges and nullability come from the data; the choices only you "
        "can make (label rule, entity, features, leakage) are best guesses marked TODO.",
    )
    init.add_argument(
        "data",
        help="a data file, a folder of data files, a SQLite database file, or a SQLAlchemy "
        "URL (postgresql+psycopg://...): each table is read by a query",
    )
    init.add_argument(
        "--label",
        help="the column to predict, or a table of outcomes that names the events "
        "(chargebacks: 1 when one names the event); default: a guess, marked TODO",
    )
    init.add_argument("--time", help="the event-time column (default: the first time found)")
    init.add_argument("--keys", help="comma-separated entity key columns (default: a guess)")
    init.add_argument("--name", help="dataset name, the spec function's name (default: OUT's)")
    init.add_argument("--threshold", type=float, help="a numeric label is positive above it")
    init.add_argument(
        "--positive",
        help="comma-separated classes of a text label (or of an outcome table's column) that are 1",
    )
    init.add_argument(
        "-o", "--out", type=Path, default=Path("dataset.py"), help="spec file to write"
    )
    init.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    init.set_defaults(handler=run_init)
    check = actions.add_parser("check", help="resolve a dataset reference and summarize it")
    check.add_argument("ref", help=SPEC_HELP)
    check.set_defaults(handler=run_check)


def _names(text: str | None) -> list[str] | None:
    return [k.strip() for k in text.split(",") if k.strip()] if text else None


def run_init(args: argparse.Namespace) -> int:
    from mlsys_core.atomic import write_text_atomically  # noqa: PLC0415 -- keep `mlsys` fast
    from mlsys_core.datasets import resolve_spec  # noqa: PLC0415
    from mlsys_core.datasets.starter import check_starter, write_starter  # noqa: PLC0415

    out: Path = args.out
    if out.suffix != ".py":
        raise ValueError(f"--out {out}: a spec file is Python, ending in .py")
    if out.exists() and not args.force:
        raise ValueError(f"{out} exists; pass --force to overwrite it")
    starter = write_starter(
        args.data,
        out,
        label=args.label,
        time=args.time,
        keys=_names(args.keys),
        name=args.name,
        threshold=args.threshold,
        positive=_names(args.positive),
    )
    write_text_atomically(out, starter.text)
    envs = sorted({t.url_env for t in starter.tables if t.url_env})
    for env in envs:  # the spec reads the URL from there; this check runs with the given one
        os.environ.setdefault(env, args.data)
    ref = f"{out}:{starter.name}"
    spec = resolve_spec(ref)  # the file written is a reference like any other
    checked_rows = check_starter(spec, starter.tables)
    print(f"wrote {out} ({starter.todos} TODO lines to review)")
    for table in starter.tables:
        bad, reasons = checked_rows.get(table.name, (0, {}))
        rows, checked = len(table.frame), len(table.sample)
        of = f" of {checked} checked" if checked < rows else ""
        print(
            f"  {table.name}: {table.where}, {len(table.columns)} columns typed, "
            f"{rows} rows read, {bad}{of} would be quarantined" + (f" {reasons}" if bad else "")
        )
    print(
        f"  label {starter.label!r} of {starter.base!r}, entity {starter.keys}, "
        f"event time {starter.time!r}"
    )
    for env in envs:
        print(f"  the URL holds a password: the spec reads it from {env}; export it to run")
    print(f"next: edit the TODO lines, then run  mlsys pipeline --spec {ref}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from mlsys_core.datasets import resolve_spec  # noqa: PLC0415

    spec = resolve_spec(args.ref)
    print(
        json.dumps(
            {
                "name": spec.name,
                "registered_model": spec.registered_model,
                "sources": {s.name: s.path or s.url for s in spec.sources},
                "base": spec.base,
                "entity_keys": spec.entity_keys,
                "event_timestamp": spec.event_timestamp,
                "label": spec.label.model_dump(exclude_defaults=True),
                "inputs": spec.input_columns,
                "fingerprint": spec.fingerprint(),
            },
            indent=2,
        )
    )
    for view, features in spec.idle_views.items():
        print(
            f"note: feature view {view!r} gives the model no input; list its features "
            f"({', '.join(features)}) in features (numeric; categorical for text) to use them",
            file=sys.stderr,
        )
    return 0
