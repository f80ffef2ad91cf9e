"""Typed, per-column feature extraction and selection, as a dataset spec declares it.

Each entry names the raw columns it reads and how they become model inputs. The configs
are plain pydantic, so they live in the spec, hash into its fingerprint and show in the
Prefect UI; the fitted transformers are in ``extractors.py`` and ``selection.py``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Columns(_Frozen):
    columns: list[str] = Field(min_length=1, description="Raw input columns this reads.")


class NumericFeature(_Columns):
    """Impute, clip by quantiles learned at fit time, then scale."""

    kind: Literal["numeric"] = "numeric"
    impute: Literal["median", "mean", "zero"] = "median"
    scale: Literal["robust", "standard", "none"] = "robust"
    clip_quantiles: tuple[float, float] | None = Field(
        default=(0.005, 0.995), description="Lower and upper quantile; None: no clipping."
    )
    indicator: bool = Field(default=True, description="Add a was-missing column when needed.")

    @model_validator(mode="after")
    def _quantiles(self) -> NumericFeature:
        if self.clip_quantiles is not None:
            lo, hi = self.clip_quantiles
            if not 0.0 <= lo < hi <= 1.0:
                raise ValueError("clip_quantiles must satisfy 0 <= lower < upper <= 1")
        return self


class CategoricalFeature(_Columns):
    """One-hot when few values, else hashed buckets or a learned embedding.

    ``auto`` one-hot encodes a column with at most ``max_onehot`` kept values and embeds
    the others. Unseen and rare values go to an explicit ``unseen`` bucket; missing values
    to their own.
    """

    kind: Literal["categorical"] = "categorical"
    encoding: Literal["auto", "onehot", "hash", "embedding"] = "auto"
    max_onehot: int = Field(default=16, ge=1)
    n_buckets: int = Field(default=32, ge=2, description="Hash buckets, for encoding='hash'.")
    min_frequency: int = Field(default=1, ge=1, description="Rarer values count as unseen.")


DatetimePart = Literal["hour", "weekday", "month", "day_of_year", "minute"]


class DatetimeFeature(_Columns):
    """Cyclic sin/cos encodings of calendar parts (local time), plus public holidays."""

    kind: Literal["datetime"] = "datetime"
    parts: list[DatetimePart] = Field(default_factory=lambda: ["hour", "weekday", "month"])
    timezone: str = "UTC"
    holidays: str | None = Field(
        default=None, description="Country code for the `holidays` package, e.g. 'US'."
    )


class TextFeature(_Columns):
    """Bag of n-grams (hashed or TF-IDF) or a packaged sentence-embedding model."""

    kind: Literal["text"] = "text"
    method: Literal["hashing", "tfidf", "sentence"] = "tfidf"
    analyzer: Literal["word", "char_wb"] = "word"
    ngram_range: tuple[int, int] = (1, 2)
    n_features: int = Field(
        default=64, ge=1, le=4096, description="Hash width, or the TF-IDF vocabulary cap."
    )
    min_df: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _ngrams(self) -> TextFeature:
        if not 1 <= self.ngram_range[0] <= self.ngram_range[1]:
            raise ValueError("ngram_range must satisfy 1 <= low <= high")
        return self


class ImageFeature(_Columns):
    """Images to a fixed-length vector: one column per pixel, or one column holding an
    array, a list of pixels or the bytes of an image file (PNG, JPEG, ...)."""

    kind: Literal["image"] = "image"
    shape: tuple[int, int] = Field(description="Height and width every image is resized to.")
    max_value: float | None = Field(
        default=None, gt=0, description="Pixel scale; None: learned as the training maximum."
    )
    embedding: Literal["pixels", "cnn"] = "pixels"
    cnn_channels: int = Field(default=8, ge=1, le=64)
    on_error: Literal["raise", "missing"] = Field(
        default="missing",
        description="Undecodable or misshapen images: raise, or zeros plus an indicator.",
    )


ColumnFeature = Annotated[
    NumericFeature | CategoricalFeature | DatetimeFeature | TextFeature | ImageFeature,
    Field(discriminator="kind"),
]


class VarianceSelection(_Frozen):
    kind: Literal["variance"] = "variance"
    threshold: float = Field(default=0.0, ge=0.0)


class MutualInfoSelection(_Frozen):
    kind: Literal["mutual_info"] = "mutual_info"
    k: int | None = Field(default=None, ge=1, description="Keep the k best; None: min_score.")
    min_score: float = Field(default=0.0, ge=0.0, description="Drop scores at or below this.")


class L1Selection(_Frozen):
    kind: Literal["l1"] = "l1"
    C: float = Field(default=0.1, gt=0.0, description="Inverse L1 strength.")
    tolerance: float = Field(default=1e-8, ge=0.0, description="|coef| at or below drops.")


Selection = Annotated[
    VarianceSelection | MutualInfoSelection | L1Selection, Field(discriminator="kind")
]


def extractor_columns(extractors: list[ColumnFeature]) -> list[str]:
    """Raw columns the extractors read, in declaration order."""
    return list(dict.fromkeys(c for e in extractors for c in e.columns))
