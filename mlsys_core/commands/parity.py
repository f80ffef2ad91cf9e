"""``mlsys parity``: replay requests through a live service and the offline path, and print
the largest differences per input and per probability (exit 1 over ``--tolerance``)."""

from __future__ import annotations

import argparse

from mlsys_core.datasets import SPEC_HELP


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "parity",
        help="compare a live service's answers with the offline (training) path",
        description="Replay logged requests (or a sample of a feature set) through the "
        "service at --url and through the point-in-time feature assembly of the same model "
        "version, then print the largest differences per input and per probability. Reads "
        "the service's state (lake, MLflow) through the MLSYS_* settings.",
    )
    parser.add_argument("--url", required=True, help="the service, e.g. http://127.0.0.1:8000")
    parser.add_argument(
        "--spec",
        help=f"{SPEC_HELP}; default: the spec in the served model's lineage (given, it must "
        "be that one)",
    )
    parser.add_argument("--sample", type=int, default=200, help="requests to replay")
    parser.add_argument(
        "--feature-set",
        nargs="?",
        const="latest",
        default=None,
        metavar="VERSION",
        help="replay rows of a feature set (default version: the one the model was trained "
        "on) instead of logged requests",
    )
    parser.add_argument("--since", help="replay requests logged at or after this ISO time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1e-6,
        help="largest probability difference that passes (exit 1 above it)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import httpx  # noqa: PLC0415 -- keep `mlsys` fast for the other commands
    import pandas as pd  # noqa: PLC0415

    from mlsys_core.config import Settings  # noqa: PLC0415
    from mlsys_core.data.cleaning import latest_clean  # noqa: PLC0415
    from mlsys_core.data.lake import Lake  # noqa: PLC0415
    from mlsys_core.datasets import resolve_spec  # noqa: PLC0415
    from mlsys_core.features.store import load_feature_set, scoring_feature_set  # noqa: PLC0415
    from mlsys_core.registry.lineage import trained_feature_set  # noqa: PLC0415
    from mlsys_core.serving import parity  # noqa: PLC0415
    from mlsys_core.serving.lineage import check_spec  # noqa: PLC0415
    from mlsys_core.serving.models import load_version  # noqa: PLC0415
    from mlsys_core.tracking import configure_mlflow  # noqa: PLC0415

    if args.sample < 1:
        raise ValueError("--sample must be at least 1")
    given = resolve_spec(args.spec) if args.spec is not None else None
    url = args.url.rstrip("/")
    try:
        ready = httpx.get(f"{url}/health/ready", timeout=30)
        served = httpx.get(f"{url}/sources", timeout=30).json()
    except httpx.HTTPError as err:
        raise ValueError(f"no answer from {url}: {err}") from None
    if ready.status_code != 200:
        raise ValueError(f"{url} is not ready: {ready.json().get('detail')}")
    name, version = ready.json()["model_name"], ready.json()["variants"]["champion"]
    settings = Settings()
    lake, client = Lake(settings.lake_dir), configure_mlflow(settings.tracking)
    trained = trained_feature_set(client, lake, name, version)
    frame, spec = load_feature_set(trained, lake)
    if given is not None:  # it must be the one the served model was built with
        check_spec(given, spec, f"{name} v{version}")
    model = load_version(client, name, version)
    if args.feature_set is not None:
        if args.feature_set != "latest":
            # Another set of the dataset: refused unless it holds the model's inputs as
            # trained; the requests are still the served model's (its spec's).
            chosen = scoring_feature_set(lake, spec.name, args.feature_set, spec).feature_set
            frame = lake.read(chosen.snapshot)
        requests, offline = parity.feature_set_requests(frame, spec, args.sample, args.seed)
    else:
        since = pd.Timestamp(args.since) if args.since else None
        if since is not None and since.tzinfo is None:
            since = since.tz_localize("UTC")
        requests = parity.logged_requests(lake, spec, name, args.sample, since, args.seed)
        tables = {t: lake.read(latest_clean(lake, t).clean) for t in spec.sources_needed}
        offline = parity.offline_rows(requests, spec, tables)
    online = parity.predict_online(url, requests)
    watermarks = {k: (v or {}).get("as_of") for k, v in served.get("store", {}).items()}
    report = parity.compare(spec, online, offline, model, watermarks)
    print(report.describe())
    return 0 if report.largest_probability_difference <= args.tolerance else 1
