"""A user's dataset, written outside the package the way a user would write one: life
expectancy by country (Gapminder, as shipped in the ``plotly`` package), with INTEGER entity
keys (the ISO 3166 numeric country code) and history views over the country's own past.

Will a country's life expectancy be over 60 years at an observation? Known then: its GDP per
head and population, its continent (a lookup by country code) and its history: the previous
observation (five years earlier) and averages over the last 11 and 21 years.

The package ships one wide CSV with years as integers; like a user preparing their data,
:func:`write_tables` splits it into an observations table with an ISO 8601 time and a
country dimension table, once, into a folder (``GAPMINDER_DATA``, default: the temporary
folder). Reference it as ``tests/user_datasets/gapminder.py:gapminder`` or
``tests.user_datasets.gapminder:gapminder``.
"""

from __future__ import annotations

import gzip
import io
import os
import tempfile
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path

import pandas as pd

from mlsys_core.spec import (
    ColumnRule,
    DatasetSpec,
    FeatureGroups,
    LabelSpec,
    LookupJoin,
    SourceSpec,
    TableContract,
    TimeSplit,
)
from mlsys_core.spec.definitions import Aggregation, Entity, LatestView, WindowView

YEAR = timedelta(days=365.25)
COUNTRY = Entity(name="country", join_keys=["iso_num"])


def _folder() -> Path:
    return Path(os.environ.get("GAPMINDER_DATA", tempfile.gettempdir())) / "mlsys-gapminder"


def write_tables(folder: Path) -> dict[str, Path]:
    """The shipped CSV as two tidy CSV files (rewritten only when missing)."""
    paths = {"observations": folder / "observations.csv", "countries": folder / "countries.csv"}
    if all(p.exists() for p in paths.values()):
        return paths
    raw = (files("plotly") / "package_data" / "datasets" / "gapminder.csv.gz").read_bytes()
    wide = pd.read_csv(io.BytesIO(gzip.decompress(raw)))
    observations = pd.DataFrame(
        {
            "iso_num": wide["iso_num"],
            "year": wide["year"],
            "observed_at": [f"{y}-07-01T00:00:00Z" for y in wide["year"]],
            "life_exp": wide["lifeExp"],
            "pop": wide["pop"],
            "gdp_per_cap": wide["gdpPercap"],
        }
    )
    countries = wide[["iso_num", "iso_alpha", "country", "continent"]].drop_duplicates()
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in (("observations", observations), ("countries", countries)):
        tmp = folder / f".{name}.{os.getpid()}.tmp"
        frame.to_csv(tmp, index=False)
        tmp.replace(paths[name])  # whole or not at all, also with several writers
    return paths


def history_views() -> list[WindowView | LatestView]:
    return [
        WindowView(
            name="country_history",
            source="observations",
            entity=COUNTRY,
            timestamp="observed_at",
            aggregations=[
                Aggregation(
                    name="life_exp_mean_11y", function="mean", column="life_exp", window=11 * YEAR
                ),
                Aggregation(
                    name="gdp_mean_11y", function="mean", column="gdp_per_cap", window=11 * YEAR
                ),
                Aggregation(
                    name="observations_21y", function="count", column="life_exp", window=21 * YEAR
                ),
                Aggregation(
                    name="over_60_rate_21y",
                    function="rate",
                    column="life_exp",
                    threshold=60.0,
                    window=21 * YEAR,
                ),
            ],
        ),
        LatestView(
            name="last_observation",
            source="observations",
            entity=COUNTRY,
            timestamp="observed_at",
            ttl=6 * YEAR,
            columns={"life_exp": "prev_life_exp", "gdp_per_cap": "prev_gdp_per_cap"},
        ),
    ]


def gapminder() -> DatasetSpec:
    paths = write_tables(_folder())
    return DatasetSpec(
        name="gapminder",
        model_name="life-expectancy",
        sources=[
            SourceSpec(name="observations", path=str(paths["observations"])),
            SourceSpec(name="countries", path=str(paths["countries"])),
        ],
        contracts={
            "observations": TableContract(
                columns={
                    "iso_num": ColumnRule(dtype="int", ge=1, le=999),
                    "year": ColumnRule(dtype="int", ge=1900, le=2100),
                    "observed_at": ColumnRule(dtype="datetime"),
                    "life_exp": ColumnRule(dtype="float", ge=0, le=120),
                    "pop": ColumnRule(dtype="float", ge=0),
                    "gdp_per_cap": ColumnRule(dtype="float", ge=0),
                },
                unique=["iso_num", "year"],
            ),
            "countries": TableContract(
                columns={
                    "iso_num": ColumnRule(dtype="int", ge=1, le=999),
                    "iso_alpha": ColumnRule(dtype="string"),
                    "continent": ColumnRule(dtype="string"),
                },
                unique=["iso_num"],
            ),
        },
        base="observations",
        entity_keys=["iso_num"],
        event_timestamp="observed_at",
        lookups=[
            LookupJoin(
                source="countries", on={"iso_num": "iso_num"}, columns={"continent": "continent"}
            )
        ],
        feature_views=history_views(),
        label=LabelSpec(name="over_60", column="life_exp", threshold=60.0),
        features=FeatureGroups(
            numeric=[
                "gdp_per_cap",
                "pop",
                "life_exp_mean_11y",
                "gdp_mean_11y",
                "observations_21y",
                "over_60_rate_21y",
                "prev_life_exp",
                "prev_gdp_per_cap",
            ],
            categorical=["continent"],
        ),
        split=TimeSplit(
            train_end=datetime(1990, 1, 1, tzinfo=UTC), valid_end=datetime(1998, 1, 1, tzinfo=UTC)
        ),
    )
