"""Pieces of the service that need no model: schema, routing, canary guard, A/B test,
prediction-log writer, throughput."""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from scipy.stats import chi2_contingency

from mlsys_core.data.contract import clean_table
from mlsys_core.data.lake import Lake
from mlsys_core.data.sources import read_source
from mlsys_core.datasets import resolve_spec
from mlsys_core.datasets.nycflights13 import nycflights13_spec
from mlsys_core.serving.abtest import ab_test, two_proportion_z
from mlsys_core.serving.app import CONFIG_ENV, create_app, json_depth
from mlsys_core.serving.config import ABConfig, CanaryConfig, RolloutConfig
from mlsys_core.serving.lineage import SpecMismatchError, check_spec, spec_differences
from mlsys_core.serving.log_writer import PredictionLogWriter
from mlsys_core.serving.metrics import Throughput
from mlsys_core.serving.outcomes import join_labels, outcome_labels
from mlsys_core.serving.prediction_log import read_prediction_log
from mlsys_core.serving.router import CanaryGuard, Router, bucket
from mlsys_core.serving.schema import (
    KEY_PATTERN,
    TEXT_PATTERN,
    batch_model,
    column_kinds,
    event_keys,
    example_record,
    lookup_keys,
    record_model,
)
from mlsys_core.serving.sources import ServingPlan
from mlsys_core.spec import ColumnRule, SourceSpec, TableContract

SPEC = nycflights13_spec()
GOOD = {
    "carrier": "UA",
    "flight": 1545,
    "origin": "EWR",
    "dest": "IAH",
    "time_hour": "2013-01-01T10:00:00Z",
}


def test_record_schema_follows_the_spec():
    record = record_model(SPEC)
    schema = record.model_json_schema()
    assert set(schema["required"]) == {*SPEC.entity_keys, SPEC.event_timestamp}
    assert set(SPEC.input_columns) | set(lookup_keys(SPEC)) <= set(schema["properties"])
    assert lookup_keys(SPEC) == ["tailnum"]  # the tail views' key, not a model input
    # Contract ranges reach the schema: distance is 1..6000 miles in the flights contract.
    distance = schema["properties"]["distance"]["anyOf"][0]
    assert (distance["minimum"], distance["maximum"]) == (1, 6000)
    # A rate feature is a share; a count is never negative.
    rate = schema["properties"]["route_delay_rate_7d"]["anyOf"][0]
    assert (rate["minimum"], rate["maximum"]) == (0, 1)
    ok = record.model_validate({**GOOD, "distance": 1400, "time_hour": "2013-01-01T05:00:00"})
    assert ok.time_hour == datetime(2013, 1, 1, 5, tzinfo=UTC)  # no offset means UTC
    assert ok.distance == 1400.0 and ok.dest_lat is None
    assert record.model_validate({**GOOD, "flight": 1545.0}).flight == 1545


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("distance", float("nan")),
        ("distance", float("inf")),
        ("distance", "1400"),
        ("distance", 0.5),
        ("flight", 1.5),
        ("flight", True),
        ("carrier", ""),
        ("carrier", 7),
        ("carrier", "x" * 300),
        ("dest", "\ud800"),
        ("time_hour", 1357034400),
        ("time_hour", "2300-01-01T00:00:00Z"),
        ("route_delay_rate_7d", 1.5),
        ("unknown", 1),
    ],
)
def test_record_schema_rejects(field, value):
    with pytest.raises(ValidationError) as err:
        record_model(SPEC).model_validate({**GOOD, field: value})
    assert field in str(err.value)


def test_an_events_columns_the_model_does_not_use_are_accepted_and_left_out():
    """A caller that sends its rows whole (the label, a column left out of the features)
    is not refused for the columns the data has; they never reach the model. A name the
    data never had is still an unknown field."""
    record = record_model(SPEC)
    unused = record.model_json_schema()["x-mlsys-serving"]["not_used"]
    assert {"arr_delay", "dep_time", "year"} <= set(unused)
    assert not set(unused) & {*SPEC.input_columns, *event_keys(SPEC), *lookup_keys(SPEC)}
    assert "Accepted and not used: year, month" in record.__doc__
    sent = record.model_validate({**GOOD, "arr_delay": "late", "dep_time": 517, "year": 2013})
    assert sent.model_dump(exclude_none=True) == record.model_validate(GOOD).model_dump(
        exclude_none=True
    )
    with pytest.raises(ValidationError, match="arr_dealy"):
        record.model_validate({**GOOD, "arr_dealy": 45})
    # Sent nested as a JSON source holds it, an unused column is flattened, then left out.
    flights = SPEC.contracts[SPEC.base]
    nested = {**flights.columns, "gate.terminal": ColumnRule(dtype="string")}
    local = flights.model_copy(update={"columns": nested})
    record = record_model(SPEC.model_copy(update={"contracts": {SPEC.base: local}}))
    assert record.model_validate({**GOOD, "gate": {"terminal": "C"}}).carrier == "UA"


def test_an_int_column_the_model_takes_as_a_number_refuses_a_fraction():
    """The lake quarantines 1400.5 in an int column, so the model never saw one: a request
    sending it is refused, naming the field, and the schema publishes ``multipleOf: 1``."""
    rule = ColumnRule(dtype="int", ge=1, le=6000)
    cleaned = clean_table(
        pd.DataFrame({"distance": [1400, 1400.5]}), TableContract(columns={"distance": rule})
    )
    assert cleaned.clean["distance"].tolist() == [1400] and len(cleaned.quarantined) == 1
    flights = SPEC.contracts[SPEC.base]
    local = flights.model_copy(update={"columns": {**flights.columns, "distance": rule}})
    spec = SPEC.model_copy(update={"contracts": {**SPEC.contracts, SPEC.base: local}})
    assert "distance" in spec.features.numeric
    record = record_model(spec)
    assert record.model_validate({**GOOD, "distance": 1400.0}).distance == 1400.0
    assert record.model_validate({**GOOD, "distance": 1400}).distance == 1400.0
    with pytest.raises(ValidationError, match=r"distance\n.*whole number"):
        record.model_validate({**GOOD, "distance": 1400.5})
    published = record.model_json_schema()["properties"]["distance"]["anyOf"][0]
    assert published == {"maximum": 6000.0, "minimum": 1.0, "multipleOf": 1, "type": "number"}
    # A float column keeps its fractions.
    assert record_model(SPEC).model_validate({**GOOD, "distance": 1400.5}).distance == 1400.5


def test_a_number_written_as_the_data_writes_it_is_read_as_the_lake_reads_it():
    """A price the export writes ``$1,234.50``: a caller may send that text or the number,
    and gets the value the lake holds for it (the model's training row); any other text is
    refused with the notation, and the bounds hold either way."""
    rule = ColumnRule(dtype="float", ge=0, le=5000, strip=["$", ","])
    trained = clean_table(
        pd.DataFrame({"distance": ["$1,234.50", "$7"]}), TableContract(columns={"distance": rule})
    )
    assert trained.clean["distance"].tolist() == [1234.5, 7.0]
    flights = SPEC.contracts[SPEC.base]
    local = flights.model_copy(update={"columns": {**flights.columns, "distance": rule}})
    record = record_model(SPEC.model_copy(update={"contracts": {SPEC.base: local}}))
    for sent in ("$1,234.50", " $1,234.50 ", 1234.5, "1234.5"):
        assert record.model_validate({**GOOD, "distance": sent}).distance == 1234.5
    with pytest.raises(
        ValidationError, match=r"distance\n.*text as the data writes it \(without '\$', ','\)"
    ):
        record.model_validate({**GOOD, "distance": "far"})
    with pytest.raises(ValidationError, match="less than or equal to 5000"):
        record.model_validate({**GOOD, "distance": "$9,999.00"})
    published = record.model_json_schema()["properties"]["distance"]["anyOf"]
    assert {"maximum": 5000.0, "minimum": 0.0, "type": "number"} in published
    assert {"maxLength": 256, "type": "string"} in published
    # A whole-number column: "26%" is 26, "26.5%" is refused as the lake quarantines it.
    percent = ColumnRule(dtype="int", strip=["%"])
    local = flights.model_copy(update={"columns": {**flights.columns, "distance": percent}})
    record = record_model(SPEC.model_copy(update={"contracts": {SPEC.base: local}}))
    assert record.model_validate({**GOOD, "distance": "26%"}).distance == 26.0
    with pytest.raises(ValidationError, match="whole number"):
        record.model_validate({**GOOD, "distance": "26.5%"})
    # A negative as accounts write it, with nothing to strip: still text the service reads.
    owed = ColumnRule(dtype="float", ge=-5000, le=5000, negative="(5)")
    local = flights.model_copy(update={"columns": {**flights.columns, "distance": owed}})
    record = record_model(SPEC.model_copy(update={"contracts": {SPEC.base: local}}))
    assert record.model_validate({**GOOD, "distance": "(1234.5)"}).distance == -1234.5
    with pytest.raises(ValidationError, match=r"'\(5\)' for -5"):
        record.model_validate({**GOOD, "distance": "1234.5-"})


def test_a_text_that_means_no_value_in_the_data_is_no_value_in_a_request():
    """A column whose data writes '?' for no value (``missing``): a caller sending the row
    as the file has it sends '?', which is null (imputed as in training), not a 422; other
    text is still refused, and the published schema lists the texts."""
    flights = SPEC.contracts[SPEC.base]
    rule = ColumnRule(dtype="float", ge=1, le=6000, nullable=True, missing=["?", "-"])
    local = flights.model_copy(update={"columns": {**flights.columns, "distance": rule}})
    record = record_model(SPEC.model_copy(update={"contracts": {SPEC.base: local}}))
    for sent in ("?", " - ", None):
        assert record.model_validate({**GOOD, "distance": sent}).distance is None
    assert record.model_validate({**GOOD, "distance": 1400}).distance == 1400.0
    with pytest.raises(ValidationError, match="distance"):
        record.model_validate({**GOOD, "distance": "far"})
    published = record.model_json_schema()["properties"]["distance"]
    assert {"enum": ["-", "?"]} in published["anyOf"] and "'?', '-'" in published["description"]


@pytest.mark.parametrize(
    ("sent", "said"),
    [
        ("46", "must be a number, not text: send 46 without quotes"),
        (" 950.5 ", "must be a number, not text: send 950.5 without quotes"),
        (" ", "must be a number: send null for no value"),
        ("far", "must be a number"),
        ("1e999", "must be a finite number"),
    ],
)
def test_a_number_sent_as_text_is_refused_with_what_to_send(sent: str, said: str) -> None:
    """Some JSON exports write numbers as text (``"seats": "46"``), and a form sends a
    blank for no value. The schema publishes a number, so the request is refused, but
    with what to send, not pydantic's "Input should be a valid number"; a key too."""
    record = record_model(SPEC)
    with pytest.raises(ValidationError, match=re.escape(said)) as err:
        record.model_validate({**GOOD, "distance": sent})
    assert err.value.errors()[0]["loc"] == ("distance",)
    with pytest.raises(ValidationError, match="send 1545 without quotes"):
        record.model_validate({**GOOD, "flight": "1545"})


def test_a_length_of_time_is_read_from_a_request_as_the_lake_reads_it():
    """A column the data writes as a clock (``duration="m:s"``): a caller may send the
    text as the file has it or the seconds; both are the number the lake holds. Text no
    clock writes is a 422 that says what is read."""
    flights = SPEC.contracts[SPEC.base]
    rule = ColumnRule(dtype="float", ge=0, le=7200, duration="m:s")
    local = flights.model_copy(update={"columns": {**flights.columns, "distance": rule}})
    record = record_model(SPEC.model_copy(update={"contracts": {SPEC.base: local}}))
    contract = TableContract(columns={"distance": rule})
    lake = clean_table(pd.DataFrame({"distance": ["4:31", "1:02:03"]}), contract).clean
    sent = [record.model_validate({**GOOD, "distance": v}).distance for v in ("4:31", "1:02:03")]
    assert sent == lake["distance"].tolist() == [271.0, 3723.0]
    assert record.model_validate({**GOOD, "distance": 271}).distance == 271.0
    for bad in ("4:75", "4 min"):
        with pytest.raises(ValidationError, match="a length of time written m:s"):
            record.model_validate({**GOOD, "distance": bad})
    with pytest.raises(ValidationError, match="less than or equal to 7200"):
        record.model_validate({**GOOD, "distance": "3:00:00"})  # past the contract's range


@pytest.mark.parametrize(
    ("duration", "sent", "seconds", "bad", "message"),
    [
        ("units", "2h 50m", 10200.0, "3 months", "written with its units \\(as 2h 50m"),
        ("iso", "PT4M31S", 271.0, "P1M", "written in ISO 8601 \\(as PT4M31S"),
        ("h:m:s", "0 days 00:04:31", 271.0, "-1 days +23:59:00", "written h:m:s"),
    ],
)
def test_a_length_of_time_in_words_or_iso_8601_is_read_from_a_request_as_the_lake_reads_it(
    duration: str, sent: str, seconds: float, bad: str, message: str
):
    """A fare's ``2h 50m``, an API's ``PT4M31S``, pandas' ``0 days 00:04:31``: a caller sends
    the value as the data writes it and it is the number the lake holds; what the notation
    does not write is a 422 that names it."""
    flights = SPEC.contracts[SPEC.base]
    rule = ColumnRule(dtype="float", ge=0, le=86400, duration=duration)
    local = flights.model_copy(update={"columns": {**flights.columns, "distance": rule}})
    record = record_model(SPEC.model_copy(update={"contracts": {SPEC.base: local}}))
    lake = clean_table(
        pd.DataFrame({"distance": [sent]}), TableContract(columns={"distance": rule})
    )
    assert record.model_validate({**GOOD, "distance": sent}).distance == seconds
    assert lake.clean["distance"].tolist() == [seconds]
    with pytest.raises(ValidationError, match=message):
        record.model_validate({**GOOD, "distance": bad})


def test_a_number_written_with_a_magnitude_is_read_from_a_request_as_the_lake_reads_it():
    """An app's size as the store writes it (``14.2M``, ``201k``): a caller sends it so, or
    the number; a suffix the column does not write is a 422 that names the ones it does;
    ``missing`` reads the store's "Varies with device" as no value."""
    flights = SPEC.contracts[SPEC.base]
    rule = ColumnRule(
        dtype="float",
        nullable=True,
        ge=0,
        le=1e9,
        suffixes={"k": 1e3, "M": 1e6},
        missing=["Varies with device"],
    )
    local = flights.model_copy(update={"columns": {**flights.columns, "distance": rule}})
    record = record_model(SPEC.model_copy(update={"contracts": {SPEC.base: local}}))
    written = ["14.2M", "201k", "Varies with device"]
    lake = clean_table(
        pd.DataFrame({"distance": written}), TableContract(columns={"distance": rule})
    )
    sent = [record.model_validate({**GOOD, "distance": v}).distance for v in written]
    assert sent[:2] == lake.clean["distance"].tolist()[:2] == [14.2e6, 201e3]
    assert sent[2] is None and lake.clean["distance"].isna().tolist() == [False, False, True]
    assert record.model_validate({**GOOD, "distance": 14.2e6}).distance == 14.2e6
    with pytest.raises(ValidationError, match="'k' for x1,000; 'M' for x1,000,000"):
        record.model_validate({**GOOD, "distance": "3G"})
    with pytest.raises(ValidationError, match="less than or equal to 1000000000"):
        record.model_validate({**GOOD, "distance": "2000M"})


def test_the_docs_example_is_a_clean_row_as_a_caller_sends_it():
    """A row of the lake (numpy numbers, a pandas time, a null) as JSON writes a record:
    without the fields left out (the inputs the service finds) and the nulls, and only
    when the row makes a valid record (a distance past the contract's range makes none)."""
    record = record_model(SPEC)
    row = pd.Series(
        {
            "carrier": "UA",
            "flight": np.int64(1545),
            "origin": "EWR",
            "dest": "IAH",
            "time_hour": pd.Timestamp("2013-01-01 10:00", tz="UTC"),
            "distance": np.float64(1400.0),
            "dep_delay": np.nan,
            "tailnum": "N14228",
            "year": np.int64(2013),
        }
    )
    example = example_record(record, row, skip=["tailnum"])
    assert example == {
        "carrier": "UA",
        "flight": 1545,
        "origin": "EWR",
        "dest": "IAH",
        "time_hour": "2013-01-01T10:00:00+00:00",
        "distance": 1400,  # a whole number, as a caller writes one
    }
    assert isinstance(example["distance"], int)
    assert json.loads(json.dumps(example)) == example  # plain JSON
    assert record.model_validate(example).flight == 1545
    assert example_record(record, {**row, "distance": 99_999.0}) is None


def test_batch_bounds():
    batch = batch_model(record_model(SPEC), max_records=2)
    assert len(batch.model_validate({"records": [GOOD, GOOD]}).records) == 2
    for records in ([], [GOOD] * 3):
        with pytest.raises(ValidationError):
            batch.model_validate({"records": records})


def test_ab_assignment_is_sticky_and_splits_by_share():
    record = record_model(SPEC)
    rows = [record.model_validate({**GOOD, "flight": i}) for i in range(4000)]
    router = Router(RolloutConfig(mode="ab", ab=ABConfig(share=0.25)), SPEC.entity_keys)
    first = router.assign(rows, challenger_live=True)
    assert router.assign(rows, challenger_live=True) == first  # sticky
    assert Router(router.rollout, SPEC.entity_keys).assign(rows, True) == first  # any replica
    assert first.count("challenger") / len(rows) == pytest.approx(0.25, abs=0.03)
    assert router.assign(rows, challenger_live=False) == ["champion"] * len(rows)
    salted = Router(RolloutConfig(mode="ab", ab=ABConfig(share=0.25, salt="other")), ["flight"])
    assert salted.assign(rows, True) != first
    assert 0 <= bucket("x", "s") < 1 and bucket("x", "s") == bucket("x", "s")


def test_canary_share_and_guard():
    record = record_model(SPEC).model_validate(GOOD)
    router = Router(RolloutConfig(mode="canary", canary=CanaryConfig(share=0.1)), [], seed=0)
    share = router.assign([record] * 5000, True).count("challenger") / 5000
    assert share == pytest.approx(0.1, abs=0.02)

    guard = CanaryGuard(CanaryConfig(max_error_rate=0.1, max_p99_ms=100, min_requests=20))
    guard.observe([0.01] * 19, [False] * 19)
    assert guard.verdict() is None  # too few to judge
    guard.observe([0.01], [False])
    assert guard.verdict() is None
    guard.observe([0.01] * 5, [True] * 5)  # 5 of 25 failed: 20% > 10%
    assert "error rate 20.0%" in guard.verdict()
    guard.reset()
    guard.observe([0.01] * 95 + [0.5] * 5, [False] * 100)  # p99 = 500 ms
    assert "p99 latency" in guard.verdict()


def test_two_proportion_z_matches_the_chi_square_test():
    z, p = two_proportion_z(420, 1000, 470, 1000)
    table = np.array([[420, 580], [470, 530]])
    chi2, p_ref, _, _ = chi2_contingency(table, correction=False)
    assert z**2 == pytest.approx(chi2)
    assert p == pytest.approx(p_ref)
    assert z > 0  # the second group did better
    assert two_proportion_z(10, 10, 5, 5) == (0.0, 1.0)


def _served_log(n: int, acc_a: float, acc_b: float, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp("2013-06-01", tz="UTC")
    labels = rng.integers(0, 2, 2 * n)
    variant = np.array(["champion"] * n + ["challenger"] * n)
    right = rng.random(2 * n) < np.where(variant == "champion", acc_a, acc_b)
    events = pd.DataFrame(
        {
            "carrier": "UA",
            "flight": np.arange(2 * n).astype(float),  # the lake holds floats
            "origin": "EWR",
            "dest": "IAH",
            "time_hour": t0 + pd.to_timedelta(np.arange(2 * n), unit="h"),
            "arr_delay": np.where(labels == 1, 60.0, -5.0),
        }
    )
    log = events.drop(columns="arr_delay").assign(
        flight=np.arange(2 * n),  # the log holds ints
        served=True,
        variant=variant,
        model_version=np.where(variant == "champion", "1", "2"),
        prediction=np.where(right, labels, 1 - labels),
        probability=0.5,
    )
    return join_labels(log, outcome_labels(events, SPEC), SPEC)


def test_ab_test_names_the_better_variant_once_there_is_evidence():
    log = _served_log(2000, acc_a=0.60, acc_b=0.70)
    result = ab_test(log)
    assert result.winner == "challenger" and result.p_value < 1e-6
    assert result.variants["challenger"].model_versions == ["2"]
    assert result.variants["challenger"].accuracy == pytest.approx(0.70, abs=0.03)
    small = ab_test(log.iloc[list(range(10)) + list(range(2000, 2010))])
    assert small.winner is None and "not enough" in small.verdict
    even = ab_test(_served_log(2000, acc_a=0.65, acc_b=0.65, seed=3))
    assert even.winner is None and even.p_value > 0.05
    # Shadow rows are not outcomes: only what was served counts.
    shadow = log.assign(served=False)
    assert ab_test(shadow).variants == {}


def test_log_writer_flushes_by_size_by_time_and_on_close(tmp_path):
    lake = Lake(tmp_path)
    now = datetime.now(UTC)

    def rows(n: int, start: int = 0) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "request_id": [f"r{start + i}" for i in range(n)],
                "logged_at": now,
                "model_name": "m",
                "model_version": "1",
                "variant": "champion",
                "served": True,
                "probability": 0.5,
                "prediction": 1,
            }
        )

    flushed = threading.Event()
    writer = PredictionLogWriter(
        lake, "ds", flush_rows=10, flush_interval_s=60, on_written=lambda n: flushed.set()
    )
    writer.start()
    writer.add(rows(4))
    writer.add_lazy(lambda: rows(6, start=4), 6)  # reaches 10 rows: flushed now
    assert flushed.wait(10)
    assert len(read_prediction_log(lake, "ds")) == 10
    writer.add(rows(3, start=10))
    assert len(read_prediction_log(lake, "ds")) == 10  # below both thresholds: waits
    writer.close()  # shutdown writes the rest
    log = read_prediction_log(lake, "ds")
    assert sorted(log["request_id"]) == sorted(f"r{i}" for i in range(13))

    timed = PredictionLogWriter(lake, "timed", flush_rows=1000, flush_interval_s=0.2)
    timed.start()
    timed.add(rows(2))
    deadline = datetime.now(UTC) + timedelta(seconds=10)
    while len(read_prediction_log(lake, "timed")) < 2:
        assert datetime.now(UTC) < deadline
        time.sleep(0.05)  # a poll that never sleeps starves the writer thread of the GIL
    timed.close()


def test_log_writer_keeps_rows_when_a_flush_fails(tmp_path):
    blocker = tmp_path / "lake"
    blocker.write_text("not a folder")  # the lake root is a file: every write fails
    failures = []
    writer = PredictionLogWriter(Lake(blocker), "ds", on_failed=failures.append)
    bad = pd.DataFrame(
        {
            "request_id": ["a"],
            "logged_at": [datetime.now(UTC)],
            "model_name": "m",
            "model_version": "1",
            "variant": "champion",
            "served": True,
            "probability": 0.5,
            "prediction": 0,
        }
    )
    writer.add(bad)
    assert writer.flush() == 0
    assert failures and writer.pending_rows == 1  # kept for the next try


def test_throughput_is_a_rate_over_the_window():
    meter = Throughput(window_s=10)
    for second in range(20):
        meter.add("champion", 50, now=1000.0 + second)
    assert meter.rates(now=1019.5)["champion"] == pytest.approx(50.0)
    assert meter.rates(now=1100.0)["champion"] == 0.0


def test_factory_reads_its_config_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MLSYS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv(CONFIG_ENV, '{"rollout": {"mode": "canary"}, "max_body_bytes": 4096}')
    app = create_app()
    assert app.state.service.config.rollout.mode == "canary"
    assert app.state.service.config.max_body_bytes == 4096
    path = tmp_path / "serve.json"
    path.write_text('{"rollout": {"mode": "ab", "ab": {"share": 0.3}}}')
    monkeypatch.setenv(CONFIG_ENV, str(path))
    assert create_app().state.service.config.rollout.ab.share == 0.3
    monkeypatch.setenv(CONFIG_ENV, '{"rollout": {"mode": "sideways"}}')
    with pytest.raises(ValidationError):
        create_app()


def test_column_kinds_decide_what_the_model_gets():
    kinds = column_kinds(SPEC)
    assert kinds["flight"] == "integer" and kinds["carrier"] == "text"
    assert kinds["time_hour"] == "time" and kinds["tailnum"] == "text"
    assert all(kinds[c] == "number" for c in SPEC.features.numeric)
    assert event_keys(SPEC) == [*SPEC.entity_keys, SPEC.event_timestamp]


# -- serving sources, text rules, body guards, spec checks -------------------------------------
def test_every_input_has_one_serving_source():
    plan = ServingPlan(SPEC)
    kinds = {c: s.kind for c, s in plan.inputs.items()}
    assert set(kinds) == set(SPEC.input_columns)
    assert (
        kinds["time_hour"] == "event_time" and "hour, day_of_week" in plan.inputs["time_hour"].note
    )
    assert {kinds[c] for c in ("carrier", "origin", "dest", "distance")} == {"request"}
    assert plan.inputs["plane_year"].model_dump(include={"kind", "online", "keys"}) == {
        "kind": "lookup",
        "online": "lookup:planes:tailnum",
        "keys": ["tailnum"],
    }
    assert plan.inputs["dest_lat"].keys == ["dest"]
    assert plan.inputs["origin_temp"].online == "origin_weather"
    assert plan.inputs["route_flights_7d"].keys == ["origin", "dest"]
    assert {c for c, k in kinds.items() if k == "view"} == set(SPEC.view_features)
    assert plan.required == ["carrier", "flight", "origin", "dest", "time_hour"]
    assert plan.request_keys == ["tailnum"] and plan.request_features == ["distance"]
    assert set(plan.found) == {c for c, k in kinds.items() if k in ("lookup", "view")}
    # Both lookups and every view must be in the online store; the airports table is one
    # table whatever the airport column that looks it up.
    assert set(plan.online_names) == {v.name for v in SPEC.feature_views} | {
        "lookup:planes:tailnum",
        "lookup:airports:faa",
    }
    table = plan.describe()
    assert "plane_year" in table and "lookup planes by tailnum" in table
    assert "send to find features: tailnum" in table
    off = ServingPlan(SPEC, online=False)
    assert off.found == [] and off.online_names == [] and "distance" in off.request_features
    assert "online lookups off" in off.describe()


def test_the_record_schema_says_what_to_send_and_what_is_found():
    schema = record_model(SPEC).model_json_schema()
    serving = schema["x-mlsys-serving"]
    assert serving["required"] == ServingPlan(SPEC).required
    assert serving["caller_only"] == ["distance"] and "plane_year" in serving["found_by_service"]
    assert "Found by the service" in schema["properties"]["plane_year"]["description"]
    assert "Only the caller has it" in schema["properties"]["distance"]["anyOf"][0].get(
        "description", schema["properties"]["distance"].get("description", "")
    )
    assert "plane_year" in schema["properties"]["tailnum"]["description"]
    assert "Found by the service: " in schema["description"]


@pytest.mark.parametrize(
    "value", ["U\x00A", "UA\n", "U\x1bA", "\x85UA", "U\u202eA", "\u2066UA", "UA\u200f"]
)
def test_keys_and_categories_refuse_control_and_bidi_characters(value):
    record = record_model(SPEC)
    with pytest.raises(ValidationError, match="a key must not hold control or bidirectional"):
        record.model_validate({**GOOD, "carrier": value})
    key = re.compile(KEY_PATTERN.removesuffix("$") + r"\Z")
    assert key.match(value) is None  # the published pattern says the same
    assert key.match("Ünïcode ✈ ok") is not None
    assert record.model_validate({**GOOD, "carrier": "Ünïcode ✈ ok"}).carrier == "Ünïcode ✈ ok"
    # A category (plane_engine is no key) refuses them too, but for a line break and a
    # direction mark (Hebrew and Arabic text holds them).
    text = re.compile(TEXT_PATTERN.removesuffix("$") + r"\Z")
    if value in ("UA\n", "UA\u200f"):
        assert record.model_validate({**GOOD, "plane_engine": value}).plane_engine == value
        assert text.match(value) is not None
    else:
        with pytest.raises(ValidationError, match="control characters other than tab"):
            record.model_validate({**GOOD, "plane_engine": value})
        assert text.match(value) is None


def test_a_category_written_with_direction_marks_is_served_as_the_lake_holds_it(tmp_path):
    """A Hebrew export marks a city's direction (U+200F, a right-to-left mark, as Excel
    and chat exports write it; U+200E and the Arabic letter mark alike): the lake keeps the
    marks and the model learns the value with them, so a request may send it as held. A
    key still refuses them, and a category still refuses an override (U+202E)."""
    path = tmp_path / "orders.csv"
    path.write_text("id,city\n1,\u200fתל אביב\n2,\u061cالقاهرة\n3,Paris\u200e\n", encoding="utf-8")
    raw = read_source(SourceSpec(name="orders", path=str(path)))
    held = clean_table(raw, TableContract(columns={"city": ColumnRule(dtype="string")}))
    values = held.clean["city"].tolist()
    assert values == ["\u200fתל אביב", "\u061cالقاهرة", "Paris\u200e"]
    record = record_model(SPEC)
    for value in values:
        assert record.model_validate({**GOOD, "plane_engine": value}).plane_engine == value
        with pytest.raises(ValidationError, match="a key must not hold"):
            record.model_validate({**GOOD, "carrier": value})
    with pytest.raises(ValidationError, match="embeddings, overrides or isolates"):
        record.model_validate({**GOOD, "plane_engine": "\u202eתל אביב"})


def test_a_category_the_data_writes_over_two_lines_is_served_as_it_is_held(tmp_path):
    """A quoted field of a CSV may hold tabs and line breaks (a comment, an address), and
    the model learns such a value as a category: a request may send it. A key may not."""
    path = tmp_path / "orders.csv"
    path.write_bytes(b'id,comment\n1,"Arrived late,\r\nbox damaged"\n2,"tab\there"\n')
    raw = read_source(SourceSpec(name="orders", path=str(path)))
    held = clean_table(raw, TableContract(columns={"comment": ColumnRule(dtype="string")}))
    values = held.clean["comment"].tolist()
    assert values == ["Arrived late,\r\nbox damaged", "tab\there"]
    record = record_model(SPEC)
    for value in values:
        assert record.model_validate({**GOOD, "plane_engine": value}).plane_engine == value
        with pytest.raises(ValidationError, match="a key must not hold control"):
            record.model_validate({**GOOD, "origin": value})
    published = json.dumps(record.model_json_schema()["properties"]["plane_engine"])
    assert json.dumps(TEXT_PATTERN) in published and json.dumps(KEY_PATTERN) not in published


def test_an_empty_category_or_text_is_a_value_and_an_empty_key_is_refused():
    """A JSON source keeps "" as a category of its own and the model learns it: a request
    may send it. An empty key names no entity."""
    record = record_model(SPEC)
    assert "carrier" in SPEC.entity_keys and "tailnum" in lookup_keys(SPEC)
    assert "airline_name" not in SPEC.entity_keys
    for key in ("carrier", "tailnum"):
        with pytest.raises(ValidationError, match=rf"{key}\n.*at least 1 character"):
            record.model_validate({**GOOD, key: ""})
    text_spec = resolve_spec("nycflights13_text")
    categorical = [c for c in text_spec.features.categorical if c not in text_spec.entity_keys]
    ok = record_model(text_spec).model_validate({**GOOD, categorical[0]: "", "airline_name": ""})
    assert getattr(ok, categorical[0]) == "" and ok.airline_name == ""


def test_a_boolean_sent_for_a_category_is_the_text_the_lake_holds_for_it():
    """A JSON or Parquet column of booleans is text in the lake; a caller sends the
    boolean itself and means that text, not an unseen "true"."""
    contract = TableContract(columns={"origin": ColumnRule(dtype="string")})
    raw = pd.DataFrame({"origin": pd.Series([True, False, None], dtype=object)})
    lake_text = clean_table(raw, contract).clean["origin"].tolist()
    record = record_model(SPEC)
    sent = [record.model_validate({**GOOD, "origin": v}).origin for v in (True, False)]
    assert sent == lake_text[:2] == ["True", "False"]
    with pytest.raises(ValidationError, match="valid string"):
        record.model_validate({**GOOD, "origin": 1})  # a number is still not a category
    # The published schema says so: a client, or the fuzzer, may send a boolean.
    assert {"type": "boolean"} in record.model_json_schema()["properties"]["origin"]["anyOf"]


def test_a_request_time_is_read_as_the_lake_reads_its_column():
    """Local times in the data's own notation: a caller may send what the data holds, or
    ISO 8601, and either without an offset is the column's zone, as in training, not UTC
    (else the served row would hold another instant than its training row)."""
    rule = ColumnRule(dtype="datetime", format="%m/%d/%Y %H:%M", timezone="America/New_York")
    flights = SPEC.contracts[SPEC.base]
    local = flights.model_copy(update={"columns": {**flights.columns, "time_hour": rule}})
    spec = SPEC.model_copy(update={"contracts": {**SPEC.contracts, SPEC.base: local}})
    contract = TableContract(columns={"time_hour": rule})
    trained = clean_table(pd.DataFrame({"time_hour": ["07/04/2013 10:00"]}), contract)
    record = record_model(spec)
    for sent in ("07/04/2013 10:00", "2013-07-04T10:00:00", "2013-07-04T14:00:00Z"):
        served = record.model_validate({**GOOD, "time_hour": sent}).time_hour
        assert served == trained.clean["time_hour"].iloc[0] == datetime(2013, 7, 4, 14, tzinfo=UTC)
    with pytest.raises(ValidationError, match="clock change skips or repeats in America/New_Y"):
        record.model_validate({**GOOD, "time_hour": "2013-03-10T02:30:00"})
    with pytest.raises(ValidationError, match=r"time_hour\n.*'%m/%d/%Y %H:%M' \(as in the data"):
        record.model_validate({**GOOD, "time_hour": "13/04/2013 10:00"})
    published = record.model_json_schema()["properties"]["time_hour"]
    assert published["type"] == "string" and "America/New_York" in published["description"]
    # Epoch numbers, when the data holds them, and ISO 8601 beside them.
    epoch = ColumnRule(dtype="datetime", unit="s")
    local = flights.model_copy(update={"columns": {**flights.columns, "time_hour": epoch}})
    record = record_model(SPEC.model_copy(update={"contracts": {SPEC.base: local}}))
    for sent in (1373032800, "2013-07-05T14:00:00Z"):
        served = record.model_validate({**GOOD, "time_hour": sent}).time_hour
        assert served == datetime(2013, 7, 5, 14, tzinfo=UTC)
    with pytest.raises(ValidationError, match="epoch s"):
        record.model_validate({**GOOD, "time_hour": True})
    # A time outside the contract's bounds is refused, as the lake quarantines its row.
    bounded = ColumnRule(dtype="datetime", le=datetime(2014, 1, 1, tzinfo=UTC))
    local = flights.model_copy(update={"columns": {**flights.columns, "time_hour": bounded}})
    record = record_model(SPEC.model_copy(update={"contracts": {SPEC.base: local}}))
    assert record.model_validate(GOOD).time_hour == datetime(2013, 1, 1, 10, tzinfo=UTC)
    with pytest.raises(ValidationError, match="at or before 2014-01-01T00:00:00"):
        record.model_validate({**GOOD, "time_hour": "2099-01-01T10:00:00Z"})


def test_free_text_allows_line_breaks_but_not_other_controls():
    spec = resolve_spec("nycflights13_text")
    record = record_model(spec)
    ok = record.model_validate({**GOOD, "airline_name": "United\nAir Lines\tInc."})
    assert ok.airline_name == "United\nAir Lines\tInc."
    for bad in ("United\x00", "United\u202e"):
        with pytest.raises(ValidationError, match="control characters"):
            record.model_validate({**GOOD, "airline_name": bad})
    with pytest.raises(ValidationError, match="control or bidirectional"):
        record.model_validate({**GOOD, "carrier": "U\nA"})  # a key is not free text


def test_json_depth_counts_nesting_outside_strings():
    assert json_depth(b'{"records": [{"carrier": "UA"}]}') == 3
    assert json_depth(b'{"carrier": "[[[[{{{{"}') == 1  # brackets in a string do not nest
    assert json_depth(b'{"a": "\\"[[[["}') == 1  # nor after an escaped quote
    assert json_depth(b"[" * 5000) == 5000
    assert json_depth(b"7") == 0


def test_a_given_spec_must_be_the_trained_one():
    other = SPEC.model_copy(update={"entity_keys": ["carrier", "flight"]})
    assert spec_differences(other, SPEC) == ["entity_keys"]
    check_spec(SPEC, SPEC.model_copy(), "m v1")  # the same spec passes
    with pytest.raises(SpecMismatchError, match=r"not the spec m v1 was trained with.*entity_keys"):
        check_spec(other, SPEC, "m v1")
    features = SPEC.features.model_copy(update={"numeric": SPEC.features.numeric[:3]})
    assert spec_differences(SPEC.model_copy(update={"features": features}), SPEC) == [
        "features.numeric"
    ]
