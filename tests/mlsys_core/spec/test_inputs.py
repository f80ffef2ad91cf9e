"""Rows built with another spec can be scored by a model exactly when every input it takes is
computed alike: what may move between retrains, and what may not."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from mlsys_core.spec import DatasetSpec
from mlsys_core.spec.inputs import input_differences

LONDON = "timezone (trained Europe/London, here UTC)"


def _rentals() -> dict[str, Any]:
    """A bike-rental dataset no shipped spec resembles: a lookup, a window view, a latest
    view and a base column read in local time."""
    rule = {"dtype": "float", "nullable": True}
    return {
        "name": "rentals",
        "sources": [
            {"name": "rides", "path": "/data/rides.csv"},
            {"name": "stations", "path": "/data/stations.csv"},
            {"name": "docks", "path": "/data/docks.csv"},
        ],
        "contracts": {
            "rides": {
                "columns": {
                    "ride_id": {"dtype": "int"},
                    "station": {"dtype": "string"},
                    "started": {"dtype": "datetime", "timezone": "Europe/London"},
                    "booked": {"dtype": "datetime", "nullable": True},
                    "minutes": rule | {"ge": 0.0},
                    "member": {"dtype": "string", "allowed": ["yes", "no"]},
                },
                "unique": ["ride_id"],
            },
            "stations": {"columns": {"station": {"dtype": "string"}, "capacity": rule}},
            "docks": {
                "columns": {
                    "station": {"dtype": "string"},
                    "at": {"dtype": "datetime"},
                    "free": rule | {"le": 100.0},
                }
            },
        },
        "base": "rides",
        "entity_keys": ["ride_id"],
        "event_timestamp": "started",
        "lookups": [
            {"source": "stations", "on": {"station": "station"}, "columns": {"capacity": "cap"}}
        ],
        "feature_views": [
            {
                "kind": "window",
                "name": "station_rides",
                "source": "rides",
                "entity": {"name": "station", "join_keys": ["station"]},
                "timestamp": "started",
                "aggregations": [
                    {"name": "rides_7d", "function": "count", "column": "ride_id", "window": "P7D"},
                    {
                        "name": "long_7d",
                        "function": "rate",
                        "column": "minutes",
                        "window": "P7D",
                        "threshold": 30.0,
                    },
                ],
            },
            {
                "kind": "latest",
                "name": "station_docks",
                "source": "docks",
                "entity": {"name": "station", "join_keys": ["station"]},
                "timestamp": "at",
                "ttl": "PT2H",
                "columns": {"free": "free_docks"},
            },
        ],
        "label": {"column": "minutes", "threshold": 45.0},
        "features": {
            "numeric": ["cap", "rides_7d", "long_7d", "free_docks"],
            "categorical": ["member", "station"],
            "calendar": ["hour"],
        },
        "split": {"valid": "P14D", "test": "P14D"},
    }


def _spec(**changes: Any) -> DatasetSpec:
    data = _rentals()
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            node[int(leaf)] = value
        else:
            node[leaf] = value
    return DatasetSpec.model_validate(data)


def test_the_same_spec_gives_every_input() -> None:
    assert input_differences(_spec(), _spec()) == []


@pytest.mark.parametrize(
    "changes",
    [
        # a retrain on newer data, read from elsewhere
        {"sources__0__path": "/landing/rides", "sources__1__path": "/data/stations-2.csv"},
        {"label__threshold": 30.0},  # another target
        {"split": {"valid": "P7D", "test": "P28D"}},
        {"name": "rentals_eu", "model_name": "rentals-eu"},
        # a feature the model does not take is added, to the base, a view and the groups
        {"features__categorical": ["member", "station", "bike"]},
        # how long a served value may age: the rows the model was evaluated on never used it
        {"feature_views__0__ttl": "PT1H"},
    ],
    ids=["sources", "label", "split", "name", "a-new-feature", "view-ttl"],
)
def test_what_a_retrain_may_change_keeps_every_input(changes: dict[str, Any]) -> None:
    assert input_differences(_spec(), _spec(**changes)) == []


def test_a_new_aggregation_beside_the_models_is_not_a_difference() -> None:
    wider = _rentals()
    wider["feature_views"][0]["aggregations"].append(
        {"name": "rides_1d", "function": "count", "column": "ride_id", "window": "P1D"}
    )
    assert input_differences(_spec(), DatasetSpec.model_validate(wider)) == []
    # ...but a model that takes it cannot be given rows without it.
    wider["features"]["numeric"].append("rides_1d")
    assert input_differences(DatasetSpec.model_validate(wider), _spec()) == ["rides_1d: not built"]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"features__numeric": ["rides_7d", "long_7d", "free_docks"]}, ["cap: not built"]),
        (
            {
                "feature_views__0__aggregations__1": {
                    "name": "long_7d",
                    "function": "rate",
                    "column": "minutes",
                    "window": "P30D",
                    "threshold": 30.0,
                }
            },
            ["long_7d: view.aggregation.window (trained P7D, here P30D)"],
        ),
        # another timestamp rule for the whole view moves both of its features
        (
            {"feature_views__0__timestamp": "booked"},
            [
                "rides_7d: view.timestamp (trained started, here booked)",
                "long_7d: view.timestamp (trained started, here booked)",
            ],
        ),
        # a check on a joined table decides which rows are counted
        (
            {"contracts__docks__columns__free": {"dtype": "float", "nullable": True, "le": 50.0}},
            ["free_docks: contract.columns.free.le (trained 100.0, here 50.0)"],
        ),
        (
            {
                "lookups__0": {
                    "source": "stations",
                    "on": {"station": "station"},
                    "columns": {"docks": "cap"},
                }
            },
            ["cap: lookup.column (trained capacity, here docks)"],
        ),
        # local times read in another zone are other hours, and other windows of the view
        # over the same table
        (
            {"contracts__rides__columns__started": {"dtype": "datetime"}},
            [
                f"rides_7d: contract.columns.started.{LONDON}",
                f"long_7d: contract.columns.started.{LONDON}",
                f"started: base.rule.{LONDON}",
            ],
        ),
        # a tightened check on the base table: the view over it counts fewer rides
        (
            {"contracts__rides__columns__member": {"dtype": "string", "allowed": ["yes"]}},
            [
                "rides_7d: contract.columns.member.allowed",
                "long_7d: contract.columns.member.allowed",
            ],
        ),
    ],
    ids=[
        "dropped",
        "window",
        "view-timestamp",
        "joined-check",
        "lookup-column",
        "zone",
        "base-check",
    ],
)
def test_an_input_lacking_or_computed_otherwise_is_named_with_what_differs(
    changes: dict[str, Any], expected: list[str]
) -> None:
    assert input_differences(_spec(), _spec(**changes)) == expected


def test_a_window_view_feature_turned_latest_is_a_difference() -> None:
    latest = _rentals()
    latest["feature_views"][0]["aggregations"].pop(0)
    latest["feature_views"][1]["columns"]["rides"] = "rides_7d"
    (why,) = input_differences(_spec(), DatasetSpec.model_validate(latest))
    assert why.startswith("rides_7d: ") and "view.kind" in why and "view.aggregation" in why


def test_a_check_on_a_base_no_view_reads_decides_which_events_exist_not_their_values() -> None:
    data = _rentals()
    data["feature_views"].pop(0)
    data["features"]["numeric"] = ["cap", "free_docks"]
    tighter = copy.deepcopy(data)
    tighter["contracts"]["rides"]["columns"]["member"] = {"dtype": "string", "allowed": ["yes"]}
    model, rows = DatasetSpec.model_validate(data), DatasetSpec.model_validate(tighter)
    assert model.fingerprint() != rows.fingerprint()
    assert input_differences(model, rows) == []
