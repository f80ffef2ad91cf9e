"""Tests for the generic spec options that data without an event time needs: header-less
CSV sources, labels from positive classes, a split by row hash, and their validators."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from mlsys_core.data.sources import parse_source, read_source_bytes
from mlsys_core.datasets.digits import digits_spec
from mlsys_core.features.assemble import SPLIT, assign_hash_split, make_label
from mlsys_core.monitoring.drift import drift_frames
from mlsys_core.spec import DatasetSpec, HashSplit, LabelSpec, SourceSpec


def test_header_less_csv_takes_the_declared_names(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("1,2,x\n3,4,y\n")
    source = SourceSpec(name="rows", path=str(path), header=False, column_names=["a", "b", "c"])
    frame = parse_source(read_source_bytes(source))
    assert list(frame.columns) == ["a", "b", "c"] and len(frame) == 2  # no row lost to a header
    with pytest.raises(ValidationError, match="without a header needs column_names"):
        SourceSpec(name="rows", path=str(path), header=False)


def test_label_from_positive_classes_numeric_and_text() -> None:
    frame = pd.DataFrame({"digit": [1.0, 2.0, 3.0, np.nan], "kind": ["cat", "dog", "cat", None]})
    odd = LabelSpec(column="digit", positive=[1, 3, 5, 7, 9])
    np.testing.assert_array_equal(make_label(frame, odd), [1.0, 0.0, 1.0, np.nan])
    cat = LabelSpec(column="kind", positive=["cat"])
    np.testing.assert_array_equal(make_label(frame, cat), [1.0, 0.0, 1.0, np.nan])
    for fields in ({}, {"threshold": 1.0, "positive": [1]}, {"positive": []}):
        with pytest.raises(ValidationError):
            LabelSpec(column="digit", **fields)


def test_hash_split_is_stable_row_local_and_keeps_duplicates_together() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.integers(0, 1000, 4000).astype(float), "b": rng.random(4000)})
    frame.loc[3999] = frame.loc[0]  # a duplicate row
    split = HashSplit(valid_fraction=0.2, test_fraction=0.1)
    whole = assign_hash_split(frame, split, ["a", "b"])
    batched = pd.concat(
        [assign_hash_split(part, split, ["a", "b"]) for part in np.array_split(frame, 7)]
    )
    pd.testing.assert_series_equal(whole, batched)
    shares = whole.value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.7, abs=0.03)
    assert shares["valid"] == pytest.approx(0.2, abs=0.03)
    assert shares["test"] == pytest.approx(0.1, abs=0.03)
    assert whole[3999] == whole[0]
    with pytest.raises(ValidationError, match="leave rows to train on"):
        HashSplit(valid_fraction=0.5, test_fraction=0.5)


def test_no_event_time_needs_a_hash_split_and_no_time_features() -> None:
    data = digits_spec().model_dump(mode="json")
    data["split"] = {"train_end": "2013-09-01T00:00:00Z", "valid_end": "2013-10-01T00:00:00Z"}
    with pytest.raises(ValidationError, match="split by time needs an event_timestamp"):
        DatasetSpec.model_validate(data)
    data = digits_spec().model_dump(mode="json")
    data["features"]["calendar"] = ["hour"]
    with pytest.raises(ValidationError, match="need an event_timestamp"):
        DatasetSpec.model_validate(data)
    data = digits_spec().model_dump(mode="json")
    data["split"]["columns"] = ["pixel_0", "nope"]
    with pytest.raises(ValidationError, match=r"lack: \['nope'\]"):
        DatasetSpec.model_validate(data)


def test_drift_without_event_time_compares_train_with_test() -> None:
    spec = digits_spec()
    frame = pd.DataFrame({SPLIT: ["train", "train", "valid", "test"], "pixel_0": [0.0, 1, 2, 3]})
    reference, current, window = drift_frames(frame, spec)
    assert window == "test split"
    assert reference["pixel_0"].tolist() == [0.0, 1.0] and current["pixel_0"].tolist() == [3.0]
