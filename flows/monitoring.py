"""The monitoring page: the latest drift, model performance over time, serving metrics and
every flow's system metrics, published as one Prefect artifact."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from flows.embedded import flow
from mlsys_core.config import Settings
from mlsys_core.datasets import SpecRef, resolve_model_name
from mlsys_core.monitoring.dashboard import Dashboard
from tasks.metrics import metered
from tasks.monitoring import build_dashboard, publish_dashboard


@flow(name="monitoring", log_prints=True)
@metered(rows=lambda d: d.serving.requests)
def monitoring(
    model_name: str | None = None,
    metrics_url: str | None = None,
    log_days: Annotated[int, Field(ge=1, le=366)] = 30,
    period: Literal["D", "W"] = "D",
    spec: SpecRef | None = None,
) -> Dashboard:
    """Publish the page (artifact key ``monitoring``). ``metrics_url``: a serving
    ``/metrics`` endpoint to scrape, e.g. ``http://127.0.0.1:8000/metrics``. Without
    ``model_name``, the model of ``spec``'s dataset (default: the settings')."""
    settings = Settings()
    dataset = spec if spec is not None else settings.dataset
    name = resolve_model_name(model_name or settings.model_name, dataset)
    dashboard = build_dashboard(name, metrics_url, log_days, period, settings)
    publish_dashboard(dashboard)
    print(
        f"monitoring {name}: {dashboard.serving.served} served predictions, "
        f"{len(dashboard.periods)} periods with performance"
    )
    return dashboard
