"""The one function that turns a feature set's splits into training matrices: fitted on the
training split with its label (supervised selectors need it), every split transformed alike,
and the network sized to the result."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_digits

from mlsys_core.datasets.digits import DIGIT_PIXELS, digits_spec
from mlsys_core.datasets.nycflights13 import nycflights13_spec
from mlsys_core.features.assemble import SPLIT, assign_split, dated_split, newest_event
from mlsys_core.features.columns import preprocessor_for
from mlsys_core.spec import RecentSplit
from mlsys_core.training.config import TrainConfig
from mlsys_core.training.matrices import fit_matrices, labeled_splits, model_config_for
from mlsys_core.training.model import TabularMLP


@pytest.fixture(scope="module")
def digits_frame() -> pd.DataFrame:
    """scikit-learn's digits as the digits spec's feature set has them: pixels, the label
    (the digit is odd), a split; a few unlabeled rows too."""
    digits = load_digits()
    frame = pd.DataFrame(digits.data.astype("int64"), columns=DIGIT_PIXELS)
    frame["is_odd"] = (digits.target % 2).astype("float64")
    frame[SPLIT] = np.where(np.arange(len(frame)) % 10 < 7, "train", "valid")
    frame.loc[np.arange(len(frame)) % 10 == 9, SPLIT] = "test"
    frame.loc[:4, "is_odd"] = np.nan
    return frame


def test_a_spec_with_a_supervised_selector_gets_its_matrices(digits_frame: pd.DataFrame) -> None:
    spec = digits_spec()  # variance, then L1 selection: L1 needs the label to fit
    splits = labeled_splits(digits_frame, spec)
    assert sum(len(p) for p in splits.values()) == len(digits_frame) - 5  # unlabeled left out
    matrices = fit_matrices(splits, spec)

    # The reference: the spec's preprocessor fitted the plain way, with the label.
    train = splits["train"]
    reference = preprocessor_for(spec).fit(train, train["is_odd"].to_numpy())
    for name, part in splits.items():
        np.testing.assert_array_equal(matrices.x[name], reference.transform(part))
        np.testing.assert_array_equal(matrices.y[name], part["is_odd"].to_numpy(np.float32))
        assert matrices.x[name].dtype == np.float32
    assert matrices.preprocessor.selection_report()[1]["dropped"] > 0  # L1 did select

    config = TrainConfig(hidden=[16], dropout=0.2, max_embedding_dim=4)
    model_config = matrices.model_config(config)
    assert model_config == model_config_for(matrices.cardinalities, matrices.n_numeric, config)
    assert (model_config.hidden, model_config.dropout, model_config.max_embedding_dim) == (
        [16],
        0.2,
        4,
    )
    assert len(model_config.cardinalities) + model_config.n_numeric == matrices.x["train"].shape[1]
    out = TabularMLP(model_config)(torch.as_tensor(matrices.x["valid"][:3]))
    assert out.shape == (3,)


def test_only_the_splits_given_are_transformed(digits_frame: pd.DataFrame) -> None:
    spec = digits_spec()
    splits = labeled_splits(digits_frame, spec)
    matrices = fit_matrices({"train": splits["train"], "valid": splits["valid"]}, spec)
    assert set(matrices.x) == set(matrices.y) == {"train", "valid"}
    with pytest.raises(ValueError, match="'train' split"):
        fit_matrices({"valid": splits["valid"]}, spec)


def test_a_split_with_one_label_class_is_refused(digits_frame: pd.DataFrame) -> None:
    frame = digits_frame.copy()
    frame.loc[frame[SPLIT] == "test", "is_odd"] = 1.0
    with pytest.raises(ValueError, match="test split needs both label classes"):
        labeled_splits(frame, digits_spec())


def test_an_empty_split_says_what_each_split_holds_by_event_time() -> None:
    """One time far past the rest (a typo for 2019) dates a RecentSplit's windows after all
    the other data: the refusal says what each split holds, and from which time."""
    split = RecentSplit(valid=timedelta(days=30), test=timedelta(days=30))
    spec = nycflights13_spec().model_copy(update={"split": split})
    time = spec.event_timestamp
    days = pd.date_range("2013-01-01", periods=200, freq="D", tz="UTC")
    times = pd.Series(days.append(pd.DatetimeIndex([pd.Timestamp("2099-01-15T10:00Z")])))
    frame = pd.DataFrame({time: times, spec.label.name: np.arange(201) % 2.0})
    frame[SPLIT] = assign_split(frame[time], dated_split(spec, newest_event(frame[time])))
    with pytest.raises(ValueError) as refused:
        labeled_splits(frame, spec)
    assert str(refused.value) == (
        f"the valid split needs both label classes, has 0 rows; labeled rows by {time}: "
        "train 200 rows 2013-01-01 .. 2013-07-19, valid 0 rows, test 1 row 2099-01-15 .. "
        "2099-01-15. A RecentSplit measures its windows back from the newest event, "
        "2099-01-15 10:00 UTC: is that time right?"
    )


def test_a_rare_class_missing_from_a_window_is_told_how_wide_a_window_would_hold_some() -> None:
    """Fraud in 2% of 10 card payments a day, and windows of 3 days: the newest window holds
    no fraud. The refusal says so, with the rate, and names windows long enough to expect
    ten frauds; the split it names then holds both classes in every window."""
    short = RecentSplit(valid=timedelta(days=3), test=timedelta(days=3))
    spec = nycflights13_spec().model_copy(update={"split": short})
    time, label = spec.event_timestamp, spec.label.name
    times = pd.Series(pd.date_range("2013-01-01", periods=2_000, freq="144min", tz="UTC"))
    fraud = np.zeros(2_000)
    fraud[np.arange(7, 2_000, 50)] = 1.0  # every 5 days: none in the last three
    frame = pd.DataFrame({time: times, label: fraud})

    def split(rule: RecentSplit) -> pd.DataFrame:
        dated = dated_split(spec.model_copy(update={"split": rule}), newest_event(frame[time]))
        return frame.assign(**{SPLIT: assign_split(frame[time], dated)})

    with pytest.raises(ValueError) as refused:
        labeled_splits(split(short), spec)
    said = str(refused.value)
    assert said.startswith(
        "the test split needs both label classes, has 31 rows, all negative: 2.00% of the"
        " 2,000 labeled rows are positive, about 1 in a split this size; windows of 50 days"
        " would expect 10 (RecentSplit(valid=timedelta(days=50), test=timedelta(days=50)))"
    ), said
    assert "is that time right?" not in said  # no window is empty: the time is not the cause
    wide = RecentSplit(valid=timedelta(days=50), test=timedelta(days=50))
    splits = labeled_splits(split(wide), spec.model_copy(update={"split": wide}))
    assert all(part[label].sum() >= 9 for part in splits.values())
