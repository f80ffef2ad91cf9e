"""Preprocess once per study: the fitted matrices go to one ``.npz`` file that every trial,
thread or process, reads instead of refitting the preprocessor."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict

from mlsys_core.atomic import write_atomically
from mlsys_core.config import Settings
from mlsys_core.data.lake import Lake
from mlsys_core.features.preprocess import preprocessor_for
from mlsys_core.features.store import FeatureSetRef, load_feature_set
from mlsys_core.training.run import labeled_splits

DATA_FORMAT = "1"  # bump when the cached layout changes


class PreparedRef(BaseModel):
    """Where a study's preprocessed matrices are, and what a model needs to know of them."""

    model_config = ConfigDict(frozen=True)

    path: str
    feature_set: str
    cardinalities: list[int]
    n_numeric: int
    rows: dict[str, int]


@dataclass(frozen=True)
class PreparedData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray


def prepare_data(feature_set: FeatureSetRef, settings: Settings) -> PreparedRef:
    """Fit preprocessing on the training split and cache train/valid matrices (idempotent:
    a feature-set version is immutable, so an existing cache file is reused)."""
    folder = settings.root / "tuning" / "data"
    path = folder / f"{feature_set.version}-v{DATA_FORMAT}.npz"
    meta_path = path.with_suffix(".json")
    if not (path.exists() and meta_path.exists()):
        frame, spec = load_feature_set(feature_set, Lake(settings.lake_dir))
        splits = labeled_splits(frame, spec)
        preprocessor = preprocessor_for(spec).fit(splits["train"])
        arrays = {}
        for name in ("train", "valid"):
            arrays[f"x_{name}"] = preprocessor.transform(splits[name])
            arrays[f"y_{name}"] = splits[name][spec.label.name].to_numpy(np.float32)
        meta = {
            "feature_set": feature_set.version,
            "cardinalities": preprocessor.cardinalities_,
            "n_numeric": preprocessor.n_numeric_,
            "rows": {name: len(arrays[f"y_{name}"]) for name in ("train", "valid")},
        }
        write_atomically(path, lambda handle: np.savez(handle, **arrays))
        write_atomically(meta_path, lambda handle: handle.write(json.dumps(meta).encode()))
    meta = json.loads(meta_path.read_text())
    return PreparedRef(path=str(path), **meta)


@functools.lru_cache(maxsize=2)
def load_prepared(path: str) -> PreparedData:
    """The cached matrices, read once per process and shared by its trial threads."""
    with np.load(path, allow_pickle=False) as npz:
        return PreparedData(**{key: npz[key] for key in npz.files})
