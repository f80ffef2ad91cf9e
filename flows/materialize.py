"""Materialize what the served model finds online: its feature views, lookups and as-of
tables, from the newest clean snapshots (the deployment runs it hourly, so it stays fresh;
the promotion to champion runs the same materialization first)."""

from __future__ import annotations

from pydantic import AwareDatetime

from flows.embedded import flow
from mlsys_core.config import Settings
from mlsys_core.data.cleaning import CleanRef
from mlsys_core.datasets import SpecRef, spec_or_default
from mlsys_core.features.online import MaterializeResult
from mlsys_core.features.store import online_source_tables
from tasks.data import latest_clean
from tasks.features import materialize_online, served_spec
from tasks.metrics import metered


@flow(name="materialize-features", log_prints=True)
@metered(rows=lambda r: sum(v.source_rows_read for v in r.views.values()))
def materialize_features(
    clean: dict[str, CleanRef] | None = None,
    spec: SpecRef | None = None,
    as_of: AwareDatetime | None = None,
    incremental: bool = True,
    model_name: str | None = None,
    alias: str = "champion",
) -> MaterializeResult:
    """Store each entity's values as of ``as_of`` (default: each view just after its newest
    known source row) and the lookup tables. With ``model_name``, what the version behind
    ``alias`` needs (the spec in its lineage); else ``spec`` (default: the settings'
    dataset). Incremental runs read only recent rows; a first or changed view runs full."""
    settings = Settings()
    chosen = served_spec(model_name, alias, settings) if model_name else None
    if chosen is not None:
        print(f"materializing for {model_name}@{alias}: spec {chosen.name!r} from its lineage")
    else:
        if model_name:
            print(f"no version of {model_name} at @{alias} with lineage: using the spec given")
        chosen = spec_or_default(spec, settings.dataset)
    clean = clean or latest_clean(online_source_tables(chosen), settings)
    result = materialize_online(clean, chosen, settings, as_of, incremental)
    for name, done in result.views.items():
        if done.mode == "unchanged":
            print(f"{name}: unchanged since it was last stored, nothing written")
            continue
        when = f", as of {done.as_of.isoformat()}" if done.as_of else ""
        print(
            f"{name}: {done.mode}, {done.entities_written} rows from "
            f"{done.source_rows_read} source rows{when}"
        )
    return result
