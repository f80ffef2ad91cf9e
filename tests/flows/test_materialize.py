"""The materialize flow: lake -> online store, full then incremental, equal to offline."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pandas as pd

from flows.materialize import materialize_features
from mlsys_core.config import Settings
from mlsys_core.data.cleaning import latest_clean
from mlsys_core.data.lake import Lake
from mlsys_core.features.offline import OfflineStore
from mlsys_core.features.online import OnlineStore, online_store_path
from mlsys_core.features.store import FeatureSetRef
from mlsys_core.spec import DatasetSpec


def test_materialize_full_then_incremental_serves_offline_values(
    settings: Settings,
    small_spec: DatasetSpec,
    make_feature_set: Callable[[Settings], FeatureSetRef],
) -> None:
    make_feature_set(settings)  # ingest and clean the small data into this lake
    first = materialize_features(spec=small_spec, as_of="2013-07-01T00:00:00Z")
    assert {v.mode for v in first.views.values()} == {"full"}  # nothing stored before
    later = first.as_of + timedelta(days=2)
    second = materialize_features(spec=small_spec, as_of=later)
    assert {v.mode for v in second.views.values()} == {"incremental"}

    lake = Lake(settings.lake_dir)
    tables = {t: lake.read(latest_clean(lake, t).clean) for t in ("flights", "weather")}
    entities = tables["flights"][["carrier", "origin", "dest", "tailnum"]].drop_duplicates()
    entities = entities.head(30).assign(at=pd.Timestamp(later))
    names = small_spec.view_features
    offline = OfflineStore(small_spec.feature_views, tables).get_historical_features(
        entities, names, "at"
    )
    store = OnlineStore(online_store_path(settings.root))
    for i, entity in entities.iterrows():
        online = store.get_features(entity.to_dict(), names)
        expected = offline.loc[i, names]
        assert [None if pd.isna(v) else v for v in expected] == list(online.values())
