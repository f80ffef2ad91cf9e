"""Materialize the feature views into the online store, for serving."""

from __future__ import annotations

from prefect import flow
from pydantic import AwareDatetime

from mlsys_core.config import Settings
from mlsys_core.data.cleaning import CleanRef
from mlsys_core.datasets import SpecRef, spec_or_default
from mlsys_core.features.online import MaterializeResult
from tasks.data import latest_clean
from tasks.features import materialize_online
from tasks.metrics import metered


@flow(name="materialize-features", log_prints=True)
@metered(rows=lambda r: sum(v.source_rows_read for v in r.views.values()))
def materialize_features(
    clean: dict[str, CleanRef] | None = None,
    spec: SpecRef | None = None,
    as_of: AwareDatetime | None = None,
    incremental: bool = True,
) -> MaterializeResult:
    """Store each entity's feature values as of ``as_of`` (default: just after the newest
    known source row). Incremental runs read only recent rows; the first run is full."""
    settings = Settings()
    spec = spec_or_default(spec, settings.dataset)
    sources = sorted({v.source for v in spec.feature_views})
    clean = clean or latest_clean(sources, settings)
    result = materialize_online(clean, spec, settings, as_of, incremental)
    for name, done in result.views.items():
        print(
            f"{name}: {done.mode}, {done.entities_written} entities from "
            f"{done.source_rows_read} source rows, as of {result.as_of.isoformat()}"
        )
    return result
