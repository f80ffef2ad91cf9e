"""scikit-learn's bundled 8x8 digit images as a dataset plug-in: a header-less CSV inside
the package, no event time (a split by row hash), the label "the digit is odd", normalized
pixels plus a small random-feature CNN embedding, pruned by variance and L1.

Run it end to end with ``python -m flows.pipeline --spec digits``.
"""

from __future__ import annotations

from mlsys_core.spec import (
    ColumnRule,
    DatasetSpec,
    FeatureGroups,
    HashSplit,
    LabelSpec,
    SourceSpec,
    TableContract,
)
from mlsys_core.spec.columns import ImageFeature, L1Selection, VarianceSelection

DIGIT_PIXELS = [f"pixel_{i}" for i in range(64)]


def digits_spec() -> DatasetSpec:
    """scikit-learn's 1,797 8x8 digit images: is the digit odd?"""
    pixel = ColumnRule(dtype="int", ge=0, le=16)
    return DatasetSpec(
        name="digits",
        sources=[
            SourceSpec(
                name="digits",
                package="sklearn",
                path="datasets/data/digits.csv.gz",
                header=False,
                column_names=[*DIGIT_PIXELS, "digit"],
            )
        ],
        contracts={
            "digits": TableContract(
                columns={
                    **dict.fromkeys(DIGIT_PIXELS, pixel),
                    "digit": ColumnRule(dtype="int", ge=0, le=9),
                }
            )
        },
        base="digits",
        entity_keys=[],
        event_timestamp=None,
        label=LabelSpec(name="is_odd", column="digit", positive=[1, 3, 5, 7, 9]),
        features=FeatureGroups(
            numeric=[],
            categorical=[],
            extractors=[
                ImageFeature(columns=DIGIT_PIXELS, shape=(8, 8), max_value=16.0),
                ImageFeature(columns=DIGIT_PIXELS, shape=(8, 8), max_value=16.0, embedding="cnn"),
            ],
            selectors=[VarianceSelection(threshold=1e-4), L1Selection(C=0.5)],
        ),
        split=HashSplit(valid_fraction=0.15, test_fraction=0.2),
    )
