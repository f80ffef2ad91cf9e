"""Helpers for tests that change a state folder another test shares."""

from __future__ import annotations

import shutil
from pathlib import Path

from mlsys_core.config import Settings
from mlsys_core.data.cleaning import latest_clean
from mlsys_core.data.lake import Lake
from mlsys_core.features.store import FeatureSetRef, build_feature_set, load_feature_set


def copy_state(settings: Settings, folder: Path) -> Settings:
    """A copy of ``settings``' lake and registry (not its online store), to change freely:
    the runs' artifacts stay where they are, read by the copied registry."""
    folder.mkdir(parents=True)
    shutil.copytree(settings.lake_dir, folder / "lake")
    shutil.copy(settings.root / "mlflow.db", folder / "mlflow.db")
    return Settings(state_dir=folder)


def build_without_a_feature(lake: Lake, feature_set: FeatureSetRef) -> tuple[FeatureSetRef, str]:
    """A newer feature set of the same data, built with the spec of ``feature_set`` less its
    first numeric feature (a retrain that dropped it); and that feature's name."""
    _, spec = load_feature_set(feature_set, lake)
    dropped, *kept = spec.features.numeric
    narrower = spec.model_copy(
        update={"features": spec.features.model_copy(update={"numeric": kept})}
    )
    clean = {s.name: latest_clean(lake, s.name) for s in spec.sources}
    return build_feature_set(clean, narrower, lake), dropped
