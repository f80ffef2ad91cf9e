"""Preprocess once per study: the fitted matrices go to one ``.npz`` file that every trial,
thread or process, reads instead of refitting the preprocessor."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from mlsys_core.atomic import write_atomically
from mlsys_core.data.lake import Lake
from mlsys_core.features.store import FeatureSetRef, load_feature_set
from mlsys_core.training.matrices import fit_matrices, labeled_splits

# Bump when the cached layout or the way it is fitted changes: version 1 was fitted without
# the label, which supervised selectors need.
DATA_FORMAT = "2"


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


def prepare_data(feature_set: FeatureSetRef, lake: Lake, folder: Path) -> PreparedRef:
    """Fit preprocessing on the training split and cache the train/valid matrices in
    ``folder`` (idempotent: a feature-set version is immutable, so an existing cache file is
    reused)."""
    path = Path(folder) / f"{feature_set.version}-v{DATA_FORMAT}.npz"
    meta_path = path.with_suffix(".json")
    if not (path.exists() and meta_path.exists()):
        frame, spec = load_feature_set(feature_set, lake)
        splits = labeled_splits(frame, spec)
        names = ("train", "valid")
        matrices = fit_matrices({name: splits[name] for name in names}, spec)
        arrays = {}
        for name in names:
            arrays[f"x_{name}"] = matrices.x[name]
            arrays[f"y_{name}"] = matrices.y[name]
        meta = {
            "feature_set": feature_set.version,
            "cardinalities": matrices.cardinalities,
            "n_numeric": matrices.n_numeric,
            "rows": {name: len(matrices.y[name]) for name in names},
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
