"""One monitoring page: the latest drift, performance over time, serving metrics and the
flow runs' system metrics, as Markdown (a Prefect artifact renders it)."""

from __future__ import annotations

import base64
import json
import math
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from pydantic import BaseModel, ConfigDict  # noqa: E402

from mlsys_core.atomic import write_atomically  # noqa: E402
from mlsys_core.data.lake import Lake  # noqa: E402
from mlsys_core.monitoring.check import model_feature_set, results_dir, spec_of  # noqa: E402
from mlsys_core.monitoring.performance import (  # noqa: E402
    Period,
    PeriodPerformance,
    performance_over_time,
)
from mlsys_core.monitoring.system import RunMetrics  # noqa: E402
from mlsys_core.serving.outcomes import join_outcomes  # noqa: E402
from mlsys_core.serving.prediction_log import read_prediction_log  # noqa: E402
from mlsys_core.spec import DatasetSpec  # noqa: E402


class MetricsScrapeError(RuntimeError):
    """The ``/metrics`` URL did not answer with Prometheus text."""


class ServingStats(BaseModel):
    """What the prediction log says about serving."""

    model_config = ConfigDict(frozen=True)

    requests: int
    served: int
    shadow: int
    by_variant: dict[str, int]
    by_version: dict[str, int]
    per_day: dict[str, int]
    mean_probability: float | None
    positive_rate: float | None


def serving_stats(log: pd.DataFrame) -> ServingStats:
    if log.empty:
        return ServingStats(
            requests=0,
            served=0,
            shadow=0,
            by_variant={},
            by_version={},
            per_day={},
            mean_probability=None,
            positive_rate=None,
        )
    served = log[log["served"].astype(bool)]
    day = pd.to_datetime(log["logged_at"], utc=True).dt.strftime("%Y-%m-%d")
    return ServingStats(
        requests=int(log["request_id"].nunique()),
        served=len(served),
        shadow=len(log) - len(served),
        by_variant={str(k): int(v) for k, v in log["variant"].value_counts().items()},
        by_version={str(k): int(v) for k, v in served["model_version"].value_counts().items()},
        per_day={str(k): int(v) for k, v in day[log["served"].astype(bool)].value_counts().items()},
        mean_probability=float(served["probability"].mean()) if len(served) else None,
        positive_rate=float(served["prediction"].mean()) if len(served) else None,
    )


def scrape_metrics(url: str, timeout_s: float = 5.0, prefix: str = "") -> dict[str, float]:
    """Samples of a Prometheus ``/metrics`` page (name{labels} -> value), those whose name
    starts with ``prefix``."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310
            text = response.read().decode()
        families = list(text_string_to_metric_families(text))
    except (OSError, ValueError) as err:
        raise MetricsScrapeError(f"could not scrape {url}: {err}") from err
    samples = {}
    for family in families:
        for sample in family.samples:
            if not sample.name.startswith(prefix):
                continue
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = float(sample.value)
    return samples


def plot_performance(periods: list[PeriodPerformance], path: Path) -> Path:
    """AUC and calibration error per period above labeled / pending counts (PNG)."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    x = list(range(len(periods)))
    names = [p.period for p in periods]
    top.plot(x, [math.nan if p.auc is None else p.auc for p in periods], "o-", label="AUC")
    top.plot(x, [math.nan if p.ece is None else p.ece for p in periods], "s--", label="ECE")
    top.set_ylim(0, 1)
    top.legend(loc="lower left")
    top.set_title("Served predictions with known outcomes")
    bottom.bar(x, [p.labeled for p in periods], label="labeled")
    bottom.bar(
        x, [p.pending for p in periods], bottom=[p.labeled for p in periods], label="pending"
    )
    bottom.set_xticks(x, names, rotation=45, ha="right")
    bottom.legend(loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda handle: fig.savefig(handle, format="png", dpi=80))
    plt.close(fig)
    return path


def _table(header: list[str], rows: list[list[object]]) -> str:
    def cell(v: object) -> str:
        if v is None:
            return "-"
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def render_page(
    model: str,
    drift: dict | None,
    periods: list[PeriodPerformance],
    plot: Path | None,
    plot_uri: str | None,
    serving: ServingStats,
    scraped: dict[str, float] | None,
    scrape_error: str | None,
    runs: list[RunMetrics],
) -> str:
    """The page as Markdown: drift, performance (plot and table), serving, system metrics."""
    out = [f"# Monitoring: {model}", "", "## Latest drift check"]
    if drift is None:
        out.append("No drift check has run yet.")
    else:
        s = drift["summary"]
        out.append(
            f"v{drift['model_version']}, checked {drift.get('checked_at')}: window "
            f"{s['current_window']}, {s['drifted_columns']} drifted of "
            f"{len(s['columns'])} columns (share {s['share_drifted']:.0%}, dataset drift "
            f"{s['dataset_drift']}, {s['status']}). Report: {drift['report_uri']}"
        )
        drifted = [c for c in s["columns"] if c["drifted"]]
        out += [
            "",
            _table(
                ["column", "method", "score", "threshold"],
                [[c["column"], c["method"], c["score"], c["threshold"]] for c in drifted[:15]],
            ),
        ]
        if p := drift.get("prediction"):
            out.append(
                f"\nServed predictions: {p['current_rows']} rows, {p['drifted_columns']} "
                f"drifted columns ({p['status']})."
            )
    out += ["", "## Model performance over time (delayed labels)"]
    if periods:
        if plot is not None:
            data = base64.b64encode(plot.read_bytes()).decode()
            out.append(f"![performance](data:image/png;base64,{data})")
        if plot_uri:
            out.append(f"\nPlot in MLflow: {plot_uri}")
        out += [
            "",
            _table(
                ["period", "predictions", "labeled", "pending", "AUC", "ECE", "positive rate"],
                [
                    [p.period, p.predictions, p.labeled, p.pending, p.auc, p.ece, p.positive_rate]
                    for p in periods
                ],
            ),
        ]
    else:
        out.append("No served predictions in the window.")
    out += ["", "## Serving"]
    out.append(
        f"{serving.requests} requests, {serving.served} served and {serving.shadow} shadow "
        f"predictions; by variant {serving.by_variant}; by version {serving.by_version}; "
        f"mean probability {serving.mean_probability}, positive rate {serving.positive_rate}."
    )
    if scraped:
        out += ["", _table(["/metrics sample", "value"], [[k, v] for k, v in scraped.items()])]
    if scrape_error:
        out.append(f"\n/metrics not read: {scrape_error}")
    out += ["", "## Flow runs (system metrics)"]
    out.append(
        _table(
            ["flow", "status", "started", "seconds", "rows", "peak MB"],
            [
                [
                    r.flow,
                    r.status,
                    f"{r.started_at:%Y-%m-%d %H:%M:%S}",
                    r.duration_s,
                    r.rows_processed,
                    r.peak_memory_mb,
                ]
                for r in runs
            ],
        )
    )
    return "\n".join(out)


class Dashboard(BaseModel):
    model_config = ConfigDict(frozen=True)

    markdown: str
    run_id: str | None
    plot_path: str | None
    periods: list[PeriodPerformance]
    serving: ServingStats
    scraped: dict[str, float] | None


def build_dashboard(
    client: MlflowClient,
    experiment_id: str,
    lake: Lake,
    monitoring_dir: Path,
    reports_dir: Path,
    model_name: str,
    runs: list[RunMetrics],
    metrics_url: str | None = None,
    log_days: int = 30,
    period: Period = "D",
) -> Dashboard:
    """Gather everything the page shows (``runs``: the flow runs' system metrics); the
    performance plot goes to ``reports_dir`` and to an MLflow run."""
    latest = results_dir(monitoring_dir, model_name) / "latest.json"
    drift = json.loads(latest.read_text()) if latest.is_file() else None
    periods: list[PeriodPerformance] = []
    log = pd.DataFrame()
    try:
        _, reference_set = model_feature_set(client, lake, model_name, "champion")
        spec: DatasetSpec | None = spec_of(reference_set, lake)
    except LookupError:
        spec = None
    if spec is not None:
        since = datetime.now(UTC) - timedelta(days=log_days)
        log = read_prediction_log(lake, spec.name, since=since)
        if len(log):
            log = log[(log["model_name"] == model_name).to_numpy()]
        served = log[log["served"].astype(bool).to_numpy()] if len(log) else log
        if len(served):
            periods = performance_over_time(join_outcomes(lake, spec, served), period)
    scraped, scrape_error = None, None
    if metrics_url:
        try:
            scraped = scrape_metrics(metrics_url)
        except MetricsScrapeError as err:
            scrape_error = str(err)
    plot, plot_uri, run_id = None, None, None
    if periods:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        plot = plot_performance(periods, reports_dir / f"performance-{stamp}.png")
        run_id, plot_uri = _log_plot(client, experiment_id, model_name, plot, periods)
    serving = serving_stats(log)
    markdown = render_page(
        model_name, drift, periods, plot, plot_uri, serving, scraped, scrape_error, runs
    )
    return Dashboard(
        markdown=markdown,
        run_id=run_id,
        plot_path=str(plot) if plot else None,
        periods=periods,
        serving=serving,
        scraped=scraped,
    )


def _log_plot(
    client: MlflowClient,
    experiment_id: str,
    model_name: str,
    plot: Path,
    periods: list[PeriodPerformance],
) -> tuple[str, str]:
    """A ``monitoring`` MLflow run with the plot (and the latest period's AUC)."""
    tags = {"mlsys.stage": "monitoring", "mlsys.model": model_name}
    run = client.create_run(experiment_id, run_name=f"monitoring-{model_name}", tags=tags)
    try:
        client.log_artifact(run.info.run_id, str(plot), "monitoring")
        scored = [p for p in periods if p.auc is not None]
        if scored:
            client.log_metric(run.info.run_id, "latest_period_auc", float(scored[-1].auc or 0.0))
    except BaseException:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    client.set_terminated(run.info.run_id)
    return run.info.run_id, f"{run.info.artifact_uri}/monitoring/{plot.name}"
