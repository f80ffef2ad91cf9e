"""Feature extraction as a batch step: the base table flows through in record batches and
is joined to the dimension and time-varying tables, which are small and held whole.

The assembly is row-local (every output row depends on one base row and the side tables),
so assembling batch by batch gives exactly the rows of assembling the table whole, with
memory that follows the batch size instead of the base table.
"""

from __future__ import annotations

import pandas as pd

from mlsys_core.data.batches import MAIN, run_chain
from mlsys_core.data.cleaning import DEFAULT_BATCH_ROWS, CleanRef
from mlsys_core.data.lake import Lake, PartRef
from mlsys_core.features.assemble import PreparedJoins, assemble_features
from mlsys_core.features.offline import OfflineStore
from mlsys_core.spec import DatasetSpec


class FeatureStep:
    def __init__(self, side_tables: dict[str, pd.DataFrame], spec: DatasetSpec) -> None:
        self.side_tables = side_tables
        self.spec = spec
        self.store = OfflineStore(spec.feature_views, side_tables) if spec.feature_views else None
        self.joins = PreparedJoins(spec, side_tables)

    def __call__(self, frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
        features = assemble_features(self.side_tables, self.spec, frame, self.store, self.joins)
        return {MAIN: features}


def assemble_in_batches(
    clean: dict[str, CleanRef],
    spec: DatasetSpec,
    lake: Lake,
    part_id: str,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> PartRef:
    """Write the feature rows of ``clean`` as one features part, batch by batch."""
    # Lookups, as-of joins and history views read whole side tables (history views need
    # every earlier row of their source, which may be the base table itself).
    sides = {j.source for j in [*spec.lookups, *spec.as_of_joins, *spec.feature_views]}
    side_tables = {t: lake.read(clean[t].clean) for t in sorted(sides)}
    base_parts = lake.parts(clean[spec.base].clean)
    with lake.part_writer("features", spec.name, "all", part_id) as writer:
        run_chain(
            lake.iter_batches(base_parts, batch_rows, columns=spec.base_columns),
            [FeatureStep(side_tables, spec)],
            {MAIN: writer.write},
        )
    return writer.ref
