"""Tests for mlsys_core/features/columns.py: every extractor and selector in one fitted,
JSON-persisted preprocessor, in the layout the network expects."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from mlsys_core.datasets.nycflights13 import nycflights13_spec
from mlsys_core.features.columns import ColumnPreprocessor, load_preprocessor, preprocessor_for
from mlsys_core.features.preprocess import TabularPreprocessor
from mlsys_core.spec.columns import (
    CategoricalFeature,
    DatetimeFeature,
    ImageFeature,
    MutualInfoSelection,
    NumericFeature,
    TextFeature,
    VarianceSelection,
)
from mlsys_core.training.config import ModelConfig
from mlsys_core.training.model import TabularMLP

NAMES = ["United Air Lines", "Delta Air Lines", "JetBlue Airways", "Envoy Air", ""]


def _png(value: int) -> bytes:
    sink = io.BytesIO()
    Image.fromarray(np.full((6, 6), value, np.uint8), mode="L").save(sink, format="PNG")
    return sink.getvalue()


def raw_rows(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Raw rows of every kind, bad values included, and a label that depends on them."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    amount = np.where(rng.random(n) < 0.1, np.nan, y * 5 + rng.normal(0, 1, n))
    frame = pd.DataFrame(
        {
            "carrier": rng.choice(["UA", "DL", "B6", None], n),
            "distance": rng.uniform(100, 2000, n),
            "at": pd.Timestamp("2013-01-01T00:00Z")
            + pd.to_timedelta(rng.integers(0, 365 * 24, n), unit="h"),
            "airline": rng.choice(NAMES, n),
            "route": [f"r{i}" for i in rng.integers(0, 200, n)],
            "tail": [f"t{i}" for i in rng.integers(0, 40, n)],
            "colour": rng.choice(["red", "blue", ""], n),
            "amount": amount,
            "img": [_png(int(v)) for v in rng.integers(0, 255, n)],
        }
    )
    frame.loc[::17, "img"] = None
    frame.loc[5::23, "img"] = b"not an image"
    return frame, y


CONFIGS = [
    TextFeature(columns=["airline"], method="tfidf", analyzer="char_wb", ngram_range=(2, 3)),
    CategoricalFeature(columns=["route"], encoding="hash", n_buckets=16),
    CategoricalFeature(columns=["tail", "colour"], max_onehot=5),  # tail embeds, colour one-hot
    NumericFeature(columns=["amount"]),
    DatetimeFeature(columns=["at"], parts=["hour", "day_of_year"], holidays="US"),
    ImageFeature(columns=["img"], shape=(3, 3), max_value=255.0),
]
BASE = {
    "numeric": ["distance"],
    "categorical": ["carrier"],
    "timestamp": "at",
    "calendar": ["hour", "month_sin"],
    "timezone": "America/New_York",
    "min_frequency": 1,
}


def make(selectors=()) -> ColumnPreprocessor:
    return ColumnPreprocessor(
        base=BASE,
        extractors=[c.model_dump(mode="json") for c in CONFIGS],
        selectors=[s.model_dump(mode="json") for s in selectors],
    )


def test_codes_lead_then_the_numeric_block() -> None:
    frame, y = raw_rows(300, 0)
    pre = make().fit(frame, y)
    names = list(pre.get_feature_names_out())
    # Codes: the plain categories (carrier, calendar hour), then the embedded extractor column.
    assert names[:3] == ["carrier", "cal_hour", "tail"]
    assert pre.cardinalities_[:2] == pre.base_.cardinalities_
    assert pre.cardinalities_[2] == 40 + 2  # known tails plus missing and unseen
    x = pre.transform(frame)
    assert x.dtype == np.float32 and x.shape == (300, 3 + pre.n_numeric_)
    assert np.isfinite(x).all()
    for kind in ("airline[", "route#", "colour=", "amount", "at_day_of_year_sin", "img_px"):
        assert any(n.startswith(kind) for n in names[3:]), kind
    for i, k in enumerate(pre.cardinalities_):  # every code fits its embedding table
        assert 0 <= x[:, i].min() and x[:, i].max() < k


def test_selectors_prune_only_the_numeric_block_and_report_why() -> None:
    frame, y = raw_rows(400, 1)
    pre = make([VarianceSelection(threshold=1e-6), MutualInfoSelection(k=10)]).fit(frame, y)
    assert pre.n_numeric_ == 10
    report = pre.selection_report()
    assert [r["selector"]["kind"] for r in report] == ["variance", "mutual_info"]
    assert report[1]["features_in"] == len(pre.numeric_names_) - report[0]["dropped"]
    assert all(f["reason"] for r in report for f in r["features"] if not f["kept"])
    kept = list(pre.get_feature_names_out())[3:]
    assert "amount" in kept  # the column the label was built from survives selection


def test_json_round_trip_gives_identical_output_and_a_working_network() -> None:
    frame, y = raw_rows(300, 2)
    pre = make([VarianceSelection()]).fit(frame, y)
    text = json.dumps(pre.to_dict())
    loaded = load_preprocessor(json.loads(text))
    assert isinstance(loaded, ColumnPreprocessor)
    other, _ = raw_rows(50, 3)
    np.testing.assert_array_equal(loaded.transform(other), pre.transform(other))
    assert loaded.cardinalities_ == pre.cardinalities_
    net = TabularMLP(ModelConfig(cardinalities=loaded.cardinalities_, n_numeric=loaded.n_numeric_))
    net.eval()
    assert net(torch.from_numpy(loaded.transform(other))).shape == (50,)


def test_old_models_without_a_kind_load_the_plain_preprocessor() -> None:
    frame, _ = raw_rows(50, 4)
    plain = TabularPreprocessor(**BASE).fit(frame)
    assert isinstance(load_preprocessor(plain.to_dict()), TabularPreprocessor)


def test_missing_raw_columns_are_a_clear_error() -> None:
    frame, y = raw_rows(60, 5)
    pre = make().fit(frame, y)
    with pytest.raises(ValueError, match=r"missing feature columns: \['img'\]"):
        pre.transform(frame.drop(columns=["img"]))


def test_specs_without_extractors_keep_the_plain_preprocessor() -> None:
    assert isinstance(preprocessor_for(nycflights13_spec()), TabularPreprocessor)
