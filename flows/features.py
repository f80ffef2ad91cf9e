"""Stage 3: assemble the versioned feature set from clean snapshots."""

from __future__ import annotations

from flows.embedded import flow
from mlsys_core.config import Settings
from mlsys_core.data.cleaning import CleanRef
from mlsys_core.datasets import SpecRef, spec_or_default
from mlsys_core.features.store import FeatureSetRef
from tasks.data import latest_clean
from tasks.features import build_feature_set
from tasks.metrics import metered


@flow(name="build-features", log_prints=True)
@metered()
def build_features(
    clean: dict[str, CleanRef] | None = None, spec: SpecRef | None = None
) -> FeatureSetRef:
    """Build features from the given clean snapshots (default: the newest of each)."""
    settings = Settings()
    spec = spec_or_default(spec, settings.dataset)
    clean = clean or latest_clean(sorted(spec.contracts), settings)
    features = build_feature_set(clean, spec, settings)
    print(f"feature set {features.version}: {features.split_rows}")
    return features
