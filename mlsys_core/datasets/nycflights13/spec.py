"""The reference dataset as a plug-in: will a flight from New York in 2013 arrive over 15
minutes late? Sources, contracts, joins, label and split; the feature views are in
``views.py``.

``nycflights13_text`` is the same dataset with text columns from the dimension tables, US
holidays on the departure time and feature selection: a different model by a spec change only.
"""

from __future__ import annotations

from datetime import datetime

from mlsys_core.datasets.nycflights13.stream import flight_stream
from mlsys_core.datasets.nycflights13.views import flight_views, history_features
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
from mlsys_core.spec.columns import (
    DatetimeFeature,
    MutualInfoSelection,
    TextFeature,
    VarianceSelection,
)


def _nyc(month: int) -> datetime:
    """Midnight on the first of ``month`` 2013, New York time (EDT in September and October)."""
    return datetime.fromisoformat(f"2013-{month:02d}-01T00:00:00-04:00")


def nycflights13_spec() -> DatasetSpec:
    """The reference dataset: will a flight from New York in 2013 arrive over 15 min late?"""
    pkg = "nycflights13"
    carrier_codes = [
        "9E",
        "AA",
        "AS",
        "B6",
        "DL",
        "EV",
        "F9",
        "FL",
        "HA",
        "MQ",
        "OO",
        "UA",
        "US",
        "VX",
        "WN",
        "YV",
    ]
    return DatasetSpec(
        name="nycflights13",
        model_name="flight-delay",
        sources=[
            SourceSpec(
                name="flights",
                package=pkg,
                path="data/flights.csv.zip",
                partition_by=["year", "month"],
            ),
            SourceSpec(name="weather", package=pkg, path="data/weather.csv"),
            SourceSpec(name="planes", package=pkg, path="data/planes.csv"),
            SourceSpec(name="airports", package=pkg, path="data/airports.csv"),
        ],
        contracts={
            "flights": TableContract(
                columns={
                    "year": ColumnRule(dtype="int", ge=2000, le=2100),
                    "month": ColumnRule(dtype="int", ge=1, le=12),
                    "day": ColumnRule(dtype="int", ge=1, le=31),
                    "sched_dep_time": ColumnRule(dtype="int", ge=0, le=2359),
                    "sched_arr_time": ColumnRule(dtype="int", ge=0, le=2359),
                    # Null for cancelled (no dep_time) and diverted flights: valid, unlabeled.
                    "dep_time": ColumnRule(dtype="float", nullable=True, ge=0, le=2400),
                    "arr_delay": ColumnRule(dtype="float", nullable=True, ge=-180, le=24 * 60),
                    "carrier": ColumnRule(dtype="string", allowed=carrier_codes),
                    "flight": ColumnRule(dtype="int", ge=0),
                    "tailnum": ColumnRule(dtype="string", nullable=True),
                    "origin": ColumnRule(dtype="string", allowed=["EWR", "JFK", "LGA"]),
                    "dest": ColumnRule(dtype="string"),
                    "distance": ColumnRule(dtype="float", ge=1, le=6000),
                    "time_hour": ColumnRule(dtype="datetime"),
                },
                unique=["year", "month", "day", "carrier", "flight", "origin", "sched_dep_time"],
            ),
            "weather": TableContract(
                columns={
                    "origin": ColumnRule(dtype="string"),
                    "time_hour": ColumnRule(dtype="datetime"),
                    "temp": ColumnRule(dtype="float", nullable=True, ge=-40, le=130),
                    "dewp": ColumnRule(dtype="float", nullable=True, ge=-60, le=100),
                    "humid": ColumnRule(dtype="float", nullable=True, ge=0, le=100),
                    "wind_dir": ColumnRule(dtype="float", nullable=True, ge=0, le=360),
                    # The source has a 1048 mph reading; no surface wind reaches 150 mph here.
                    "wind_speed": ColumnRule(dtype="float", nullable=True, ge=0, le=150),
                    "wind_gust": ColumnRule(dtype="float", nullable=True, ge=0, le=200),
                    "precip": ColumnRule(dtype="float", nullable=True, ge=0, le=10),
                    "pressure": ColumnRule(dtype="float", nullable=True, ge=900, le=1100),
                    "visib": ColumnRule(dtype="float", nullable=True, ge=0, le=10),
                },
                unique=["origin", "time_hour"],
            ),
            "planes": TableContract(
                columns={
                    "tailnum": ColumnRule(dtype="string"),
                    "year": ColumnRule(dtype="float", nullable=True, ge=1900, le=2014),
                    "engines": ColumnRule(dtype="float", nullable=True, ge=1, le=8),
                    "seats": ColumnRule(dtype="float", nullable=True, ge=1, le=900),
                    "manufacturer": ColumnRule(dtype="string", nullable=True),
                    "engine": ColumnRule(dtype="string", nullable=True),
                },
                unique=["tailnum"],
            ),
            "airports": TableContract(
                columns={
                    "faa": ColumnRule(dtype="string"),
                    "lat": ColumnRule(dtype="float", ge=-90, le=90),
                    "lon": ColumnRule(dtype="float", ge=-180, le=180),
                    "alt": ColumnRule(dtype="float", nullable=True, ge=-1500, le=30000),
                },
                unique=["faa"],
            ),
        },
        base="flights",
        entity_keys=["carrier", "flight", "origin", "dest"],
        event_timestamp="time_hour",
        lookups=[
            LookupJoin(
                source="planes",
                on={"tailnum": "tailnum"},
                columns={
                    "year": "plane_year",
                    "seats": "plane_seats",
                    "engines": "plane_engines",
                    "manufacturer": "plane_manufacturer",
                    "engine": "plane_engine",
                },
            ),
            LookupJoin(
                source="airports",
                on={"dest": "faa"},
                columns={"lat": "dest_lat", "lon": "dest_lon", "alt": "dest_alt"},
            ),
        ],
        # Weather and history come from the feature store (point in time, strictly before).
        feature_views=flight_views(),
        # The flights also arrive live: the stream job keeps every window view fresh.
        streams=[flight_stream()],
        label=LabelSpec(name="is_delayed", column="arr_delay", threshold=15.0),
        features=FeatureGroups(
            categorical=["carrier", "origin", "dest", "plane_manufacturer", "plane_engine"],
            numeric=[
                "distance",
                "plane_year",
                "plane_seats",
                "plane_engines",
                "dest_lat",
                "dest_lon",
                "dest_alt",
                "origin_temp",
                "origin_dewp",
                "origin_humid",
                "origin_wind_dir",
                "origin_wind_speed",
                "origin_wind_gust",
                "origin_precip",
                "origin_pressure",
                "origin_visib",
                *history_features(),
            ],
            calendar=["hour", "day_of_week", "month_sin", "month_cos"],
            timezone="America/New_York",
        ),
        split=TimeSplit(train_end=_nyc(9), valid_end=_nyc(10)),
    )


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
            "model_name": None,
            "sources": sources,
            "contracts": contracts,
            "lookups": lookups,
            "features": features,
        }
    )
