"""Stage 2: type and check every raw snapshot; quarantine failing rows with reasons."""

from __future__ import annotations

from prefect import unmapped
from prefect.futures import wait

from flows import runners
from flows.embedded import flow
from mlsys_core.config import Settings
from mlsys_core.data.cleaning import CleanRef
from mlsys_core.data.lake import SnapshotRef
from mlsys_core.datasets import SpecRef, spec_or_default
from mlsys_core.spec import TableContract
from tasks.data import (
    clean_partition,
    finish_cleaning,
    latest_raw,
    plan_cleaning,
    publish_quality_report,
)
from tasks.metrics import metered


@flow(name="validate", log_prints=True, task_runner=runners.build())
@metered(rows=lambda r: sum(c.raw.rows for c in r.values()))
def validate(
    raw: dict[str, SnapshotRef] | None = None, spec: SpecRef | None = None
) -> dict[str, CleanRef]:
    """Clean the given raw snapshots (default: the newest of each contracted source).

    Partitions are cleaned in parallel as mapped tasks. Each table is all or nothing: if
    any of its partitions fails, the partitions this run wrote are removed again, so a
    failed run leaves the lake as it found it; the clean and quarantine snapshots are
    committed together (``cleaning.finish_cleaning``, which ``clean_snapshot`` uses too).
    """
    settings = Settings()
    spec = spec_or_default(spec, settings.dataset)
    raw = raw or latest_raw(sorted(spec.contracts), settings)
    results = {}
    for name, ref in raw.items():
        if name in spec.contracts:
            results[name] = _clean_table(name, ref, spec.contracts[name], settings)
    for name, ref in results.items():
        print(
            f"{name}: {ref.rows_in} in = {ref.clean.rows} clean + {ref.quarantine.rows} "
            f"quarantined {ref.reasons or ''}"
        )
    publish_quality_report(results)
    return results


def _clean_table(
    table: str, raw: SnapshotRef, contract: TableContract, settings: Settings
) -> CleanRef:
    plan = plan_cleaning(raw, contract, settings)
    if plan.existing is not None:
        return plan.existing
    futures = clean_partition.map(
        unmapped(table),
        list(plan.partitions),
        list(plan.partitions.values()),
        unmapped(contract),
        unmapped(plan.undeclared_types),
        unmapped(settings),
    )
    wait(futures)  # every partition ends, in success or failure, before deciding
    outcomes = {
        partition: future.state.result(raise_on_failure=False)
        for partition, future in zip(plan.partitions, futures, strict=True)
    }
    # One core function decides for the flow and for plain callers (clean_snapshot).
    return finish_cleaning(plan, outcomes, settings)
