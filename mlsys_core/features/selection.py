"""Feature selectors that say what they dropped and why.

Each follows the scikit-learn contract, keeps ``support_`` (the kept columns) and a
``report_``: one record per input feature with its score, whether it was kept and the
reason. Training logs the reports as an MLflow artifact. State is plain JSON.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_selection import mutual_info_classif
from sklearn.linear_model import LogisticRegression
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data


class SelectionError(ValueError):
    """A selector that cannot run on the data it was given."""


class _Selector(TransformerMixin, BaseEstimator):
    _NEEDS_Y: ClassVar[bool] = True

    def __sklearn_tags__(self):  # noqa: ANN204 - sklearn's Tags type
        tags = super().__sklearn_tags__()
        tags.target_tags.required = self._NEEDS_Y
        return tags

    def _fit_data(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray | None]:
        if self._NEEDS_Y:
            if y is None:
                raise SelectionError(
                    f"{type(self).__name__} requires y to be passed, but the target y is None"
                )
            X, y = validate_data(self, X, y, dtype=np.float64, ensure_min_samples=2)
            if type_of_target(y) not in ("binary", "multiclass"):
                raise SelectionError(
                    f"Unknown label type: {type(self).__name__} scores features for a class "
                    f"label, got {type_of_target(y)!r}"
                )
            return X, y
        return validate_data(self, X, dtype=np.float64, ensure_min_samples=1), None

    def _names(self) -> list[str]:
        names = getattr(self, "feature_names_in_", None)
        if names is not None:
            return [str(n) for n in names]
        return [f"x{i}" for i in range(self.n_features_in_)]

    def _decide(self, scores: np.ndarray, keep: np.ndarray, why: str) -> None:
        self.support_ = [bool(k) for k in keep]
        self.scores_ = [float(s) for s in scores]
        self.report_ = [
            {"feature": name, "score": score, "kept": kept, "reason": "" if kept else why}
            for name, score, kept in zip(self._names(), self.scores_, self.support_, strict=True)
        ]

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "support_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return X[:, np.array(self.support_, dtype=bool)]

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "support_")
        keep = np.array(self.support_, dtype=bool)
        return np.array(self._names(), dtype=object)[keep]

    @property
    def dropped_(self) -> list[dict[str, Any]]:
        return [r for r in self.report_ if not r["kept"]]

    def to_dict(self) -> dict[str, Any]:
        check_is_fitted(self, "support_")
        state = {
            "support_": self.support_,
            "scores_": self.scores_,
            "report_": self.report_,
            "n_features_in_": self.n_features_in_,
        }
        if hasattr(self, "feature_names_in_"):
            state["feature_names_in_"] = [str(n) for n in self.feature_names_in_]
        return {"kind": type(self).__name__, "params": self.get_params(), "state": state}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        obj = cls(**data["params"])
        for key, value in data["state"].items():
            if key == "feature_names_in_":
                value = np.array(value, dtype=object)  # noqa: PLW2901
            setattr(obj, key, value)
        return obj


class VarianceSelector(_Selector):
    """Drop features whose training variance is at or below ``threshold``."""

    _NEEDS_Y = False

    def __init__(self, threshold: float = 0.0) -> None:
        self.threshold = threshold

    def fit(self, X: Any, y: Any = None) -> Self:
        X, _ = self._fit_data(X, y)
        variance = np.nanvar(X, axis=0)
        # A constant column is dropped even at threshold 0 (floating noise included).
        keep = variance > max(self.threshold, 1e-12)
        self._decide(variance, keep, f"variance {'<='} {self.threshold:g} (constant or near)")
        for record in self.report_:
            if not record["kept"]:
                record["reason"] = f"variance {record['score']:.3g} <= threshold {self.threshold:g}"
        return self


class MutualInfoSelector(_Selector):
    """Keep the ``k`` features with the highest mutual information with the label, or
    those scoring above ``min_score``; estimated on at most ``sample_rows`` rows."""

    def __init__(
        self,
        k: int | None = None,
        min_score: float = 0.0,
        sample_rows: int = 20_000,
        random_state: int = 0,
    ) -> None:
        self.k = k
        self.min_score = min_score
        self.sample_rows = sample_rows
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None) -> Self:
        X, y = self._fit_data(X, y)
        X, y = _sample(X, y, self.sample_rows, self.random_state)
        scores = mutual_info_classif(X, y, random_state=self.random_state)
        if self.k is not None:
            order = np.argsort(-scores, kind="stable")
            keep = np.zeros(len(scores), bool)
            keep[order[: self.k]] = True
            why = f"not among the {self.k} highest mutual information scores"
        else:
            keep = scores > self.min_score
            why = f"mutual information <= {self.min_score:g}"
        self._decide(scores, keep, why)
        return self


class L1Selector(_Selector):
    """Keep features with a non-zero coefficient in an L1-penalised logistic regression
    (inputs standardised first, so the penalty treats every feature alike)."""

    def __init__(self, C: float = 0.1, tolerance: float = 1e-8, sample_rows: int = 50_000) -> None:
        self.C = C
        self.tolerance = tolerance
        self.sample_rows = sample_rows

    def fit(self, X: Any, y: Any = None) -> Self:
        X, y = self._fit_data(X, y)
        X, y = _sample(X, y, self.sample_rows, 0)
        std = X.std(axis=0)
        scaled = (X - X.mean(axis=0)) / np.where(std > 0, std, 1.0)
        if len(np.unique(y)) < 2:
            raise SelectionError("L1Selector needs both label classes in the data")
        model = LogisticRegression(
            l1_ratio=1.0, C=self.C, solver="saga", max_iter=500, random_state=0
        )
        import warnings  # noqa: PLC0415

        from sklearn.exceptions import ConvergenceWarning  # noqa: PLC0415

        with warnings.catch_warnings():
            # saga may stop short of full convergence; the support is what we use.
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(scaled, y)
        weight = np.abs(model.coef_).max(axis=0)
        keep = weight > self.tolerance
        self._decide(weight, keep, f"L1 coefficient is zero at C={self.C:g}")
        return self


def _sample(X: np.ndarray, y: np.ndarray, rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if len(X) <= rows:
        return X, y
    index = np.random.default_rng(seed).choice(len(X), rows, replace=False)
    return X[index], y[index]


SELECTORS: dict[str, type[_Selector]] = {
    cls.__name__: cls for cls in (VarianceSelector, MutualInfoSelector, L1Selector)
}


def selector_from_dict(data: dict[str, Any]) -> _Selector:
    try:
        cls = SELECTORS[data["kind"]]
    except KeyError:
        raise SelectionError(f"unknown selector kind {data.get('kind')!r}") from None
    return cls.from_dict(data)
