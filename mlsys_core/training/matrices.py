"""The training matrices: the labeled splits of a feature set, the dataset spec's preprocessor
fitted on the training split, every split transformed, and the network sized to the result.

One function for the training run, the tuning study and the benchmarks. Copies of it had
drifted apart: tuning fitted the preprocessor without the label and broke on every spec with
a supervised selector (mutual information, L1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlsys_core.features.assemble import SPLIT
from mlsys_core.features.columns import preprocessor_for
from mlsys_core.spec import RARER_PER_WINDOW, DatasetSpec, RecentSplit
from mlsys_core.training.config import ModelConfig, TrainConfig

SPLITS = ("train", "valid", "test")


def labeled_splits(frame: pd.DataFrame, spec: DatasetSpec) -> dict[str, pd.DataFrame]:
    """Train/valid/test rows that carry a label (unlabeled rows are never trained on)."""
    labeled = frame[frame[spec.label.name].notna()]
    splits = {name: labeled[labeled[SPLIT] == name] for name in SPLITS}
    for name, part in splits.items():
        if part[spec.label.name].nunique() < 2:
            raise ValueError(
                f"the {name} split needs both label classes, has {len(part)} rows"
                + _one_class(labeled, part, spec)
                + _split_spans(frame, splits, spec)
            )
    return splits


def _one_class(labeled: pd.DataFrame, part: pd.DataFrame, spec: DatasetSpec) -> str:
    """Why a split that has rows holds one class: a rare class and a short window, said
    with the window length that would expect ``RARER_PER_WINDOW`` of it."""
    if part.empty:
        return ""
    has = float(part[spec.label.name].iloc[0])
    rate = float((labeled[spec.label.name] != has).mean())
    lacks = "positive" if has == 0 else "negative"
    out = (
        f", all {'negative' if has == 0 else 'positive'}: {rate:.2%} of the {len(labeled):,}"
        f" labeled rows are {lacks}, about {rate * len(part):.0f} in a split this size"
    )
    time = spec.event_timestamp
    if not (isinstance(spec.split, RecentSplit) and time and time in labeled) or rate == 0:
        return out
    times = pd.to_datetime(labeled[time], utc=True).dropna()
    days = (times.max() - times.min()) / pd.Timedelta(days=1)
    if days <= 0:
        return out
    per_day = rate * len(times) / days
    wide = math.ceil(RARER_PER_WINDOW / per_day)
    return out + (
        f"; windows of {wide} days would expect {RARER_PER_WINDOW}"
        f" (RecentSplit(valid=timedelta(days={wide}), test=timedelta(days={wide})))"
    )


def _split_spans(frame: pd.DataFrame, splits: dict[str, pd.DataFrame], spec: DatasetSpec) -> str:
    """What each split holds by event time, so an empty one can be traced to its cause (a
    ``RecentSplit`` dated back from one time far past the rest, dates past the data)."""
    time = spec.event_timestamp
    if time is None or time not in frame:
        return ""
    spans = []
    for name, part in splits.items():
        times = pd.to_datetime(part[time], utc=True).dropna()
        span = f" {times.min():%Y-%m-%d} .. {times.max():%Y-%m-%d}" if len(times) else ""
        spans.append(f"{name} {len(part)} row{'' if len(part) == 1 else 's'}{span}")
    out = f"; labeled rows by {time}: " + ", ".join(spans)
    newest = pd.to_datetime(frame[time], utc=True).max()
    empty = any(part.empty for part in splits.values())
    if isinstance(spec.split, RecentSplit) and pd.notna(newest) and empty:
        late = spec.label.known_after
        out += (
            f". A RecentSplit measures its windows back from the newest event, "
            f"{newest:%Y-%m-%d %H:%M} UTC"
            + (f", less the label's known_after ({late})" if late else "")
            + ": is that time right?"
        )
    return out


@dataclass(frozen=True)
class TrainingMatrices:
    """A fitted preprocessor and what it made of each split: float32 inputs and labels."""

    preprocessor: Any
    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]

    @property
    def cardinalities(self) -> list[int]:
        return list(self.preprocessor.cardinalities_)

    @property
    def n_numeric(self) -> int:
        return int(self.preprocessor.n_numeric_)

    def model_config(self, config: TrainConfig) -> ModelConfig:
        return model_config_for(self.cardinalities, self.n_numeric, config)


def fit_matrices(splits: dict[str, pd.DataFrame], spec: DatasetSpec) -> TrainingMatrices:
    """Fit ``spec``'s preprocessor on ``splits["train"]`` and transform every split given.

    The label goes to ``fit`` for the supervised selectors (mutual information, L1); the
    rest ignore it. The fit is deterministic, so every rank of a training group fits the
    very same preprocessing without talking.
    """
    if "train" not in splits:
        raise ValueError(f"fit_matrices needs a 'train' split, got {sorted(splits)}")
    label = spec.label.name
    train = splits["train"]
    preprocessor = preprocessor_for(spec).fit(train, train[label].to_numpy())
    return TrainingMatrices(
        preprocessor=preprocessor,
        x={name: preprocessor.transform(part) for name, part in splits.items()},
        y={name: part[label].to_numpy(np.float32) for name, part in splits.items()},
    )


def model_config_for(cardinalities: list[int], n_numeric: int, config: TrainConfig) -> ModelConfig:
    """The network for inputs of this shape, with ``config``'s layers, dropout and
    embedding cap."""
    return ModelConfig(
        cardinalities=cardinalities,
        n_numeric=n_numeric,
        hidden=config.hidden,
        dropout=config.dropout,
        max_embedding_dim=config.max_embedding_dim,
    )
