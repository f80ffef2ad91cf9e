"""Feature extraction as a batch step, partition by partition: each partition of the base
table flows through in record batches and is joined to the dimension and time-varying
tables, which are small and held whole, into its own features part.

The assembly is row-local (every output row depends on one base row and the side tables),
so assembling partition by partition and batch by batch gives exactly the rows of
assembling the table whole, with memory that follows the batch size instead of the base
table. Partitions are independent: the build-features flow maps them as tasks (as the
validate flow maps cleaning), plain callers run them on a few threads.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import pandas as pd

from mlsys_core.config import default_workers
from mlsys_core.data.batches import MAIN, run_chain
from mlsys_core.data.cleaning import DEFAULT_BATCH_ROWS, CleanRef
from mlsys_core.data.lake import Lake, PartRef
from mlsys_core.features.assemble import (
    EventLabels,
    PreparedJoins,
    assemble_features,
    dated_split,
    newest_event,
)
from mlsys_core.features.offline import OfflineStore
from mlsys_core.spec import DatasetSpec, HashSplit, RecentSplit, TimeSplit

LAYER = "features"
WHOLE = "all"  # the partition name of a base table that has no partitions


class FeatureStep:
    """The side tables, their join indexes and the offline store, prepared once for any
    number of batches of base rows."""

    def __init__(
        self,
        side_tables: dict[str, pd.DataFrame],
        spec: DatasetSpec,
        newest: pd.Timestamp | None = None,
    ) -> None:
        """``newest``: the whole base table's newest event, which a label's
        ``known_after`` is dated from."""
        self.side_tables = side_tables
        self.spec = spec
        self.store = OfflineStore(spec.feature_views, side_tables) if spec.feature_views else None
        if self.store is not None:
            self.store.prepare(spec.view_features)
        self.joins = PreparedJoins(spec, side_tables)
        self.labels = EventLabels(spec.label, spec.event_timestamp, side_tables, newest)

    def __call__(
        self, frame: pd.DataFrame, split: TimeSplit | HashSplit | None = None
    ) -> dict[str, pd.DataFrame]:
        features = assemble_features(
            self.side_tables, self.spec, frame, self.store, self.joins, split, self.labels
        )
        return {MAIN: features}


def side_sources(spec: DatasetSpec) -> list[str]:
    """Tables read whole: those of lookups, as-of joins and history views (a history view
    needs every earlier row of its source, which may be the base table itself), and the
    label's outcome table."""
    joins = [*spec.lookups, *spec.as_of_joins, *spec.feature_views]
    return sorted({j.source for j in joins} | ({spec.label.source} - {None}))  # type: ignore[arg-type]


def newest_base_event(
    clean: Mapping[str, CleanRef], spec: DatasetSpec, lake: Lake
) -> pd.Timestamp | None:
    """The base table's newest event (one column read); None without event times."""
    if spec.event_timestamp is None:
        return None
    ts = spec.event_timestamp
    return newest_event(lake.read(clean[spec.base].clean, columns=[ts])[ts])


# One prepared step per process, keyed by what it was built from (immutable snapshots), so
# the partitions a process assembles -- mapped tasks on a thread runner, or plain threads --
# read and index the side tables once, not once per partition.
_STEP_LOCK = threading.Lock()
_STEP: list[tuple[tuple, FeatureStep]] = []


def prepared_step(clean: Mapping[str, CleanRef], spec: DatasetSpec, lake: Lake) -> FeatureStep:
    sides = side_sources(spec)
    dated = [spec.base] if spec.label.known_after is not None else []  # its newest event
    key = (
        str(lake.root.absolute()),
        spec.fingerprint(),
        tuple((t, clean[t].clean.snapshot_id) for t in [*sides, *dated]),
    )
    with _STEP_LOCK:
        if _STEP and _STEP[0][0] == key:
            return _STEP[0][1]
        _STEP.clear()  # the previous one's tables go before the new ones are read
        newest = newest_base_event(clean, spec, lake) if dated else None
        step = FeatureStep({t: lake.read(clean[t].clean) for t in sides}, spec, newest)
        _STEP.append((key, step))
        return step


def release_prepared() -> None:
    """Drop the prepared side tables (a feature set is built: its memory goes back)."""
    with _STEP_LOCK:
        _STEP.clear()


def base_split(
    clean: Mapping[str, CleanRef], spec: DatasetSpec, lake: Lake
) -> TimeSplit | HashSplit:
    """The split of the feature set built from ``clean``: a ``RecentSplit`` dated back from
    the base table's newest event (one column read), any other as the spec has it."""
    if not isinstance(spec.split, RecentSplit):
        return spec.split
    return dated_split(spec, newest_base_event(clean, spec, lake))


def base_partitions(clean: Mapping[str, CleanRef], spec: DatasetSpec, lake: Lake) -> dict:
    """The base table's parts by partition, in table order."""
    out: dict[str, list[PartRef]] = {}
    for part in lake.parts(clean[spec.base].clean):
        out.setdefault(part.partition or WHOLE, []).append(part)
    return out


def assemble_partition(  # noqa: PLR0913
    clean: Mapping[str, CleanRef],
    spec: DatasetSpec,
    lake: Lake,
    version: str,
    partition: str,
    parts: list[PartRef],
    batch_rows: int = DEFAULT_BATCH_ROWS,
    split: TimeSplit | HashSplit | None = None,
) -> PartRef:
    """Write the feature rows of one base partition as one features part, batch by batch.
    The part is named by ``version`` (content-addressed): one already there is reused.
    ``split`` is the feature set's, dated for the whole base table (``base_split``)."""
    if existing := lake.adopt_part(LAYER, spec.name, partition, version):
        return existing
    step = prepared_step(clean, spec, lake)
    split = split or base_split(clean, spec, lake)
    with lake.part_writer(LAYER, spec.name, partition, version) as writer:
        run_chain(
            lake.iter_batches(parts, batch_rows, columns=spec.base_columns),
            [partial(step, split=split)],
            {MAIN: writer.write},
        )
    return writer.ref


def assemble_in_batches(  # noqa: PLR0913
    clean: Mapping[str, CleanRef],
    spec: DatasetSpec,
    lake: Lake,
    part_id: str,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    workers: int | None = None,
    split: TimeSplit | HashSplit | None = None,
) -> list[PartRef]:
    """Write the feature rows of ``clean`` as one features part per base partition, on
    ``workers`` threads (Arrow's reads and writes and NumPy's searches run beside each
    other; default: ``default_workers()``, as the flow's task runner); the parts come back
    in table order."""
    partitions = base_partitions(clean, spec, lake)
    workers = workers or default_workers()
    prepared_step(clean, spec, lake)
    split = split or base_split(clean, spec, lake)

    def one(item: tuple[str, list[PartRef]]) -> PartRef:
        return assemble_partition(clean, spec, lake, part_id, item[0], item[1], batch_rows, split)

    try:
        if workers <= 1 or len(partitions) <= 1:
            return [one(item) for item in partitions.items()]
        # Each thread runs in a copy of this context, so the caller's ``lake.writing()``
        # block records (and on failure takes back) the parts every thread places.
        context = contextvars.copy_context()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(context.copy().run, one, item) for item in partitions.items()]
            return [f.result() for f in futures]
    finally:
        release_prepared()
