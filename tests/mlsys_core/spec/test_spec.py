"""The dataset spec (mlsys_core/spec/): its validators, derived columns and fingerprint."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pandas as pd
import pytest
from pydantic import ValidationError

from mlsys_core.data.contract import clean_table
from mlsys_core.datasets.nycflights13 import nycflights13_spec
from mlsys_core.spec import ColumnRule, DatasetSpec, SourceSpec, TableContract, TimeSplit
from mlsys_core.spec.definitions import definitions_hash

Edit = Callable[[dict[str, Any]], None]


def _edited(edit: Edit) -> DatasetSpec:
    """The reference spec after ``edit`` on its JSON form, validated from scratch."""
    data = nycflights13_spec().model_dump(mode="json")
    edit(data)
    return DatasetSpec.model_validate(data)


# -- validators -------------------------------------------------------------------------------


_CLAIMS = {"name": "claims", "path": "claims.csv"}


@pytest.mark.parametrize(
    ("label", "sources", "message"),
    [
        ({"source": "claims"}, [_CLAIMS], "needs on (base column -> its column)"),
        ({"column": "arr_delay", "on": {"flight": "flight"}, "threshold": 15}, [], "on names"),
        ({"source": "claims", "on": {"flight": "f"}, "threshold": 1}, [_CLAIMS], "name it"),
        ({"source": "claims", "on": {"flight": "f"}}, [], "undeclared sources: ['claims']"),
        ({"source": "flights", "on": {"flight": "flight"}}, [], "another table than the base"),
        ({}, [], "reads a column, or names the outcome table"),
        ({"column": "arr_delay", "threshold": 15, "known_after": "P0D"}, [], "longer than zero"),
        ({"column": "arr_delay", "threshold": 15, "present": True}, [], "exactly one of"),
        ({"column": "arr_delay"}, [], "exactly one of threshold, positive and present"),
        ({"source": "claims", "on": {"flight": "f"}, "present": True}, [_CLAIMS], "name it"),
        (
            {"source": "claims", "on": {"flight": "f"}, "column": "at", "present": True},
            [_CLAIMS],
            "present reads a column of the base table",
        ),
    ],
)
def test_a_label_that_cannot_be_read_is_refused(label, sources, message) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["label"] = label
        data["sources"] += sources

    with pytest.raises(ValueError, match=re.escape(message)):
        _edited(edit)


def test_a_label_from_an_outcome_table_reads_its_key_from_the_base() -> None:
    def edit(data: dict[str, Any]) -> None:
        data["label"] = {"source": "claims", "on": {"tailnum": "plane"}, "known_after": "P30D"}
        data["sources"].append(_CLAIMS)

    spec = _edited(edit)
    assert spec.label_columns == ["tailnum"] and "tailnum" in spec.base_columns
    assert "arr_delay" not in spec.base_columns and "claims" in spec.sources_needed

    def untimed(data: dict[str, Any]) -> None:
        edit(data)
        data["event_timestamp"] = None
        data["split"] = {"valid_fraction": 0.15}
        data["feature_views"] = data["as_of_joins"] = data["streams"] = []
        data["features"]["calendar"] = []

    with pytest.raises(ValueError, match="known_after needs an event_timestamp"):
        _edited(untimed)

    def unlike(data: dict[str, Any]) -> None:
        edit(data)
        data["contracts"]["claims"] = {"columns": {"plane": {"dtype": "int"}}}

    with pytest.raises(ValueError, match="type them string and number"):
        _edited(unlike)


def _lookup_undeclared(d: dict[str, Any]) -> None:
    d["lookups"][0]["source"] = "airlines"


def _as_of_undeclared(d: dict[str, Any]) -> None:
    join = {"source": "radar", "on": {"origin": "origin"}, "timestamp": "t", "columns": {"x": "x"}}
    d["as_of_joins"] = [join]


def _view_undeclared(d: dict[str, Any]) -> None:
    d["feature_views"][-1]["source"] = "satellite"


def _view_feature_twice(d: dict[str, Any]) -> None:
    d["feature_views"].append({**d["feature_views"][0], "name": "again"})


def _base_undeclared(d: dict[str, Any]) -> None:
    d["base"] = "trips"


def _contract_undeclared(d: dict[str, Any]) -> None:
    d["contracts"]["airlines"] = {"columns": {"carrier": {"dtype": "string"}}}


def _feature_not_produced(d: dict[str, Any]) -> None:
    d["features"]["numeric"].append("runway_length")


def _categorical_not_produced(d: dict[str, Any]) -> None:
    d["features"]["categorical"].append("gate")


def _mean_of_text(d: dict[str, Any]) -> None:
    view = next(v for v in d["feature_views"] if v["kind"] == "window")
    view["aggregations"][0] |= {"function": "mean", "column": "tailnum", "threshold": None}


def _rate_of_text(d: dict[str, Any]) -> None:
    view = next(v for v in d["feature_views"] if v["kind"] == "window")
    view["aggregations"][0] |= {"function": "rate", "column": "tailnum", "threshold": 0.5}


def _learned_at_text(d: dict[str, Any]) -> None:
    view = next(v for v in d["feature_views"] if v["kind"] == "window")
    view["availability"]["from_column"] = "tailnum"


def _rate_two_rules(d: dict[str, Any]) -> None:
    view = next(v for v in d["feature_views"] if v["kind"] == "window")
    view["aggregations"][0] |= {"function": "rate", "threshold": 0.5, "positive": ["x"]}


def _count_of_classes(d: dict[str, Any]) -> None:
    view = next(v for v in d["feature_views"] if v["kind"] == "window")
    view["aggregations"][0] |= {"function": "count", "threshold": None, "positive": ["x"]}


def _rate_of_no_class(d: dict[str, Any]) -> None:
    view = next(v for v in d["feature_views"] if v["kind"] == "window")
    view["aggregations"][0] |= {"function": "rate", "threshold": None, "positive": []}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_lookup_undeclared, "undeclared sources: ['airlines']"),
        (_as_of_undeclared, "undeclared sources: ['radar']"),
        (_view_undeclared, "undeclared sources: ['satellite']"),
        (_view_feature_twice, "features produced by more than one view"),
        (_base_undeclared, "undeclared sources: ['trips']"),
        (_contract_undeclared, "contracts for undeclared sources: ['airlines']"),
        (_mean_of_text, "the mean of 'tailnum', a string column; only count, mean_age"),
        (_rate_of_text, "a rate of classes (positive=[...]) take any column"),
        (_learned_at_text, "availability starts from 'tailnum', a string column"),
        (_rate_two_rules, "a rate needs exactly one of threshold and positive"),
        (_count_of_classes, "threshold and positive are for a rate only"),
        (_rate_of_no_class, "positive must name at least one class"),
    ],
)
def test_inconsistent_spec_is_rejected(edit: Edit, message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        _edited(edit)


def test_a_rate_of_text_classes_learned_at_another_time_is_a_valid_view() -> None:
    """A share of text classes, over rows known from another time column: the spec takes
    it, and the definitions hash moves with each option."""

    def history(d: dict[str, Any]) -> None:
        view = next(v for v in d["feature_views"] if v["kind"] == "window")
        view["availability"]["from_column"] = "time_hour"
        view["aggregations"][0] |= {
            "function": "rate",
            "column": "tailnum",
            "threshold": None,
            "positive": ["N14228", "N24211"],
        }

    spec, reference = _edited(history), nycflights13_spec()
    view = next(v for v in spec.feature_views if v.kind == "window")
    assert view.availability.from_column == "time_hour"
    assert view.aggregations[0].positive == ["N14228", "N24211"]
    assert "time_hour" in view.source_columns
    assert definitions_hash(spec.feature_views) != definitions_hash(reference.feature_views)


def test_views_that_use_no_new_option_keep_their_hash() -> None:
    """The online store keys its rows by the definitions hash: options added later (a
    rate's classes, an availability's time column) leave it alone while unset, so an
    upgrade does not rewrite a store, nor call its values another definition's. Pinned:
    change it only with VALUES_VERSION, on purpose."""
    assert definitions_hash(nycflights13_spec().feature_views) == "c7340fd1fc87db86"


def test_reference_spec_round_trips_through_json() -> None:
    spec = nycflights13_spec()
    again = DatasetSpec.model_validate_json(spec.model_dump_json())
    assert again == spec


@pytest.mark.parametrize(
    ("train_end", "valid_end"),
    [
        ("2013-10-01T00:00:00-04:00", "2013-09-01T00:00:00-04:00"),
        ("2013-09-01T00:00:00-04:00", "2013-09-01T00:00:00-04:00"),
        # Same instant written in two offsets: still not ordered.
        ("2013-09-01T04:00:00+00:00", "2013-09-01T00:00:00-04:00"),
    ],
)
def test_split_must_be_ordered(train_end: str, valid_end: str) -> None:
    with pytest.raises(ValidationError, match="train_end must come before valid_end"):
        TimeSplit(train_end=train_end, valid_end=valid_end)


def test_split_needs_timezone_aware_boundaries() -> None:
    with pytest.raises(ValidationError):
        TimeSplit(train_end=datetime(2013, 9, 1), valid_end=datetime(2013, 10, 1))


@pytest.mark.parametrize("name", ["Flights", "1flights", "flights-2013", ""])
def test_source_name_must_be_a_lowercase_identifier(name: str) -> None:
    with pytest.raises(ValidationError):
        SourceSpec(name=name, path="x.csv")


def test_spec_is_frozen_and_rejects_unknown_fields() -> None:
    spec = nycflights13_spec()
    with pytest.raises(ValidationError):
        spec.base = "weather"  # type: ignore[misc]
    data = spec.model_dump(mode="json")
    data["labels"] = data["label"]
    with pytest.raises(ValidationError):
        DatasetSpec.model_validate(data)


# -- derived columns --------------------------------------------------------------------------


def test_base_columns_cover_what_assembly_needs(real_tables: dict[str, pd.DataFrame]) -> None:
    spec = nycflights13_spec()
    cols = spec.base_columns
    assert len(cols) == len(set(cols))
    assert cols[: len(spec.entity_keys) + 1] == [*spec.entity_keys, spec.event_timestamp]
    join_keys = {k for j in [*spec.lookups, *spec.as_of_joins] for k in j.on}
    join_keys |= {k for v in spec.feature_views for k in v.entity.join_keys}
    joined_outputs = {o for j in [*spec.lookups, *spec.as_of_joins] for o in j.columns.values()}
    joined_outputs |= set(spec.view_features)
    base_features = {
        f for f in [*spec.features.numeric, *spec.features.categorical] if f not in joined_outputs
    }
    expected = (
        set(spec.entity_keys)
        | {spec.event_timestamp, spec.label.column}
        | join_keys
        | base_features
    )
    assert set(cols) == expected
    # The base table really has all of them.
    assert set(cols) <= set(real_tables[spec.base].columns)


def test_an_undeclared_base_column_can_be_a_feature() -> None:
    def undeclared_features(d: dict[str, Any]) -> None:
        del d["contracts"]["flights"]["columns"]["distance"]  # a feature, now undeclared
        _feature_not_produced(d)
        _categorical_not_produced(d)

    spec = _edited(undeclared_features)
    assert {"distance", "runway_length", "gate"} <= set(spec.base_columns)
    assert "plane_year" not in spec.base_columns  # a lookup makes it, not the base table
    # Whether the data has them, and with which type, is known once it is typed.
    typed = dict.fromkeys(spec.base_columns, "float") | {"gate": "string", "carrier": "string"}
    spec.check_base_types(typed)
    with pytest.raises(ValueError, match=re.escape("has no columns ['runway_length']")):
        spec.check_base_types({k: v for k, v in typed.items() if k != "runway_length"})
    with pytest.raises(ValueError, match=re.escape("numeric features ['distance']")):
        spec.check_base_types(typed | {"distance": "string"})


def test_input_columns_are_features_plus_event_time_when_calendar_is_used() -> None:
    spec = nycflights13_spec()
    inputs = spec.input_columns
    assert set(inputs) == {
        *spec.features.numeric,
        *spec.features.categorical,
        spec.event_timestamp,
    }
    assert len(inputs) == len(set(inputs))
    # The label's source column would leak the outcome into the model.
    assert spec.label.column not in inputs
    assert "arr_delay" not in inputs

    def no_calendar(d: dict[str, Any]) -> None:
        d["features"]["calendar"] = []

    plain = _edited(no_calendar)
    assert spec.event_timestamp not in plain.input_columns
    assert set(plain.input_columns) == {*spec.features.numeric, *spec.features.categorical}


def test_source_lookup_by_name() -> None:
    spec = nycflights13_spec()
    for source in spec.sources:
        assert spec.source(source.name) is source


# -- fingerprint ------------------------------------------------------------------------------


def test_fingerprint_is_stable_for_equal_specs() -> None:
    first, second = nycflights13_spec(), nycflights13_spec()
    assert first is not second
    assert first.fingerprint() == second.fingerprint()
    again = DatasetSpec.model_validate(first.model_dump(mode="json"))
    assert again.fingerprint() == first.fingerprint()
    assert len(first.fingerprint()) == 16
    int(first.fingerprint(), 16)  # hex


def test_a_source_without_a_contract_gets_an_empty_one() -> None:
    """A lookup's table written without a contract was never validated (validation cleans
    the contracted sources), so no feature set could be built: "no clean snapshot for
    sources ['planes']; run validation first", which validation could not fix."""
    spec = _edited(lambda data: data["contracts"].pop("planes"))
    assert spec.contracts["planes"] == TableContract(columns={})
    assert set(spec.contracts) == {s.name for s in spec.sources}
    result = clean_table(pd.DataFrame({"tailnum": ["N1", None], "seats": ["2", "x"]}),
                         spec.contracts["planes"])  # fmt: skip
    assert len(result.clean) == 2 and result.reasons == {}


def test_an_option_left_at_its_default_moves_no_fingerprint() -> None:
    """A release that adds an option (a rule's ``negative``, say) must not move the
    fingerprint of specs that never use it: a moved one rebuilds every feature set and
    calls the next retrain a major version. Pinned: change it only with the spec itself."""
    spec = nycflights13_spec()
    assert spec.fingerprint() == "8bdb039745119a35"
    weather = spec.contracts["weather"]
    spelled = {
        name: ColumnRule.model_validate(
            {**rule.model_dump(), "decimal": ".", "negative": "-5", "timezone": "UTC"}
            if rule.dtype in ("int", "float")
            else rule.model_dump()
        )
        for name, rule in weather.columns.items()
    }
    written_out = spec.model_copy(
        update={
            "contracts": {
                **spec.contracts,
                "weather": weather.model_copy(update={"columns": spelled}),
            }
        }
    )
    assert written_out.fingerprint() == spec.fingerprint()


def test_fingerprint_is_stable_across_processes() -> None:
    code = (
        "from mlsys_core.datasets import resolve_spec; "
        "print(resolve_spec('nycflights13').fingerprint())"
    )
    prints = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        prints.add(out.stdout.strip())
    assert prints == {nycflights13_spec().fingerprint()}


def _threshold(d: dict[str, Any]) -> None:
    d["label"]["threshold"] = 30.0


def _tolerance(d: dict[str, Any]) -> None:
    d["feature_views"][-1]["ttl"] = "PT1H"  # the weather view


def _lag(d: dict[str, Any]) -> None:
    d["feature_views"][-1]["lag"] = "PT10M"


def _window(d: dict[str, Any]) -> None:
    d["feature_views"][0]["aggregations"][0]["window"] = "P6D"


def _source_path(d: dict[str, Any]) -> None:
    d["sources"][1]["path"] = "data/weather_v2.csv"


def _contract_bound(d: dict[str, Any]) -> None:
    d["contracts"]["weather"]["columns"]["wind_speed"]["le"] = 200.0


def _split(d: dict[str, Any]) -> None:
    d["split"]["valid_end"] = "2013-11-01T00:00:00-04:00"


def _timezone(d: dict[str, Any]) -> None:
    d["features"]["timezone"] = "UTC"


def _feature_order(d: dict[str, Any]) -> None:
    d["features"]["numeric"] = list(reversed(d["features"]["numeric"]))


EDITS = [_threshold, _tolerance, _lag, _window, _source_path, _contract_bound, _split, _timezone]


@pytest.mark.parametrize("edit", [*EDITS, _feature_order])
def test_fingerprint_moves_with_any_change(edit: Edit) -> None:
    assert _edited(edit).fingerprint() != nycflights13_spec().fingerprint()


def test_different_changes_give_different_fingerprints() -> None:
    prints = {_edited(edit).fingerprint() for edit in EDITS}
    assert len(prints) == len(EDITS)
