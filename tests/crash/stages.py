"""The stages that write to the lake, each a small real run on a dataset made here.

``shipments`` (a few hundred rows over three months, partitioned by month) has what makes
the writers take their less common paths: rows the contract quarantines (a range, an
allowed value, a duplicate key, a date that does not exist, a local time a clock change
skips), an undeclared column that is a feature and has a bad cell in February's file,
a non-ISO date with a time zone, and a first batch whose lookup finds nothing (so a part's
column is all null before it gets its type). ``customers`` is a small lookup table.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from mlsys_core.config import Settings
from mlsys_core.data.cleaning import clean_snapshot, latest_clean
from mlsys_core.data.ingest import snapshot_source
from mlsys_core.data.lake import Lake
from mlsys_core.features.store import build_feature_set, latest_feature_set
from mlsys_core.serving.log_writer import PredictionLogWriter
from mlsys_core.serving.prediction_log import (
    META_COLUMNS,
    read_prediction_log,
    snapshot_prediction_log,
)
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
from mlsys_core.stream.engine import run_micro_batch
from mlsys_core.stream.job import Aggregate, DeriveOp, FilterOp, StreamJob, Window
from mlsys_core.stream.replay import write_segments
from tests.crash.harness import SHARED, Stage, lake_state, stage

BATCH_ROWS = 48  # several record batches per part: a kill lands in a half-written file
MONTHS = (1, 2, 3)


# -- the dataset ---------------------------------------------------------------------------
def shipments(month: int, rows: int = 80) -> pd.DataFrame:
    rng = np.random.default_rng(month)
    i = np.arange(rows)
    day, hour, minute = 1 + i % 28, (i * 5) % 24, (i * 7) % 60
    frame = pd.DataFrame(
        {
            "shipment_id": month * 1000 + i,
            "month": month,
            "customer_id": 1 + i % 40,
            "depot": rng.choice(["north", "south", "east"], rows),
            "shipped_at": [
                f"{d:02d}/{month:02d}/2024 {h:02d}:{m:02d}"
                for d, h, m in zip(day, hour, minute, strict=True)
            ],
            "weight": rng.gamma(2.0, 10.0, rows).round(2),
            "distance": rng.uniform(5, 900, rows).round(1).astype(object),  # undeclared
            "delay_minutes": rng.normal(20, 25, rows).round(),
        }
    )
    if month == 1:
        frame.loc[:BATCH_ROWS, "customer_id"] = 900 + i[: BATCH_ROWS + 1]  # lookups miss
        frame.loc[5, "weight"] = -3.0  # below the contract's range
        frame.loc[6, "depot"] = "moon"  # not an allowed value
    if month == 2:
        frame.loc[7, "distance"] = "not-a-number"  # an undeclared column's bad cell
        frame.loc[8, "shipped_at"] = "30/02/2024 10:00"  # no such date
        frame.loc[9, "shipment_id"] = frame.loc[10, "shipment_id"]  # a repeated key
    if month == 3:
        frame.loc[11, "shipped_at"] = "31/03/2024 02:30"  # skipped by the clock change
        frame.loc[12, "delay_minutes"] = np.nan  # unlabeled, still clean
    return frame


def customers() -> pd.DataFrame:
    ids = np.arange(1, 41)
    return pd.DataFrame(
        {
            "customer_id": ids,
            "segment": np.where(ids % 3 == 0, "wholesale", "retail"),
            "since_year": 2000 + ids % 20,
        }
    )


def write_inputs(data: Path) -> None:
    data.mkdir(parents=True, exist_ok=True)
    pd.concat([shipments(m) for m in MONTHS]).to_csv(data / "shipments.csv", index=False)
    customers().to_csv(data / "customers.csv", index=False)
    for month in MONTHS:
        (data / "landing").mkdir(exist_ok=True)
        shipments(month).to_csv(data / "landing" / f"2024-{month:02d}.csv", index=False)


def spec(data: Path) -> DatasetSpec:
    return DatasetSpec(
        name="shipments",
        sources=[
            SourceSpec(name="shipments", path=str(data / "shipments.csv"), partition_by=["month"]),
            SourceSpec(name="customers", path=str(data / "customers.csv")),
        ],
        contracts={
            "shipments": TableContract(
                columns={
                    "shipment_id": ColumnRule(dtype="int"),
                    "month": ColumnRule(dtype="int", ge=1, le=12),
                    "customer_id": ColumnRule(dtype="int"),
                    "depot": ColumnRule(dtype="string", allowed=["north", "south", "east"]),
                    "shipped_at": ColumnRule(
                        dtype="datetime", format="%d/%m/%Y %H:%M", timezone="Europe/Paris"
                    ),
                    "weight": ColumnRule(dtype="float", ge=0),
                    "delay_minutes": ColumnRule(dtype="float", nullable=True),
                },
                unique=["month", "shipment_id"],
            ),
            "customers": TableContract(
                columns={
                    "customer_id": ColumnRule(dtype="int"),
                    "segment": ColumnRule(dtype="string"),
                },
                unique=["customer_id"],
            ),
        },
        base="shipments",
        entity_keys=["customer_id"],
        event_timestamp="shipped_at",
        lookups=[
            LookupJoin(
                source="customers",
                on={"customer_id": "customer_id"},
                columns={"segment": "segment", "since_year": "customer_since"},
            )
        ],
        label=LabelSpec(name="late", column="delay_minutes", threshold=30),
        features=FeatureGroups(
            numeric=["weight", "distance", "customer_since"], categorical=["depot", "segment"]
        ),
        split=TimeSplit(
            train_end=datetime(2024, 2, 15, tzinfo=UTC), valid_end=datetime(2024, 3, 10, tzinfo=UTC)
        ),
    )


def _lake(work: Path) -> Lake:
    return Lake(work / "lake")


def _data(work: Path) -> Path:
    """The inputs, shared by every copy of a stage's state: one path, so one spec."""
    return (work / SHARED).resolve() / "data"


def _ingest_and_clean(work: Path) -> None:
    lake, the_spec = _lake(work), spec(_data(work))
    for source in the_spec.sources:
        clean_snapshot(
            snapshot_source(source, lake), the_spec.contracts[source.name], lake, BATCH_ROWS
        )


# -- the stages ----------------------------------------------------------------------------
@stage("ingest")
class Ingest(Stage):
    """A file source partitioned by month (parts, then the snapshot)."""

    def prepare(self, work: Path) -> None:
        write_inputs(_data(work))

    def run(self, work: Path) -> object:
        return snapshot_source(spec(_data(work)).source("shipments"), _lake(work))


@stage("ingest-plain")
class IngestPlain(Stage):
    """A small file source snapshotted whole (one data file inside the snapshot)."""

    def prepare(self, work: Path) -> None:
        write_inputs(_data(work))

    def run(self, work: Path) -> object:
        return snapshot_source(spec(_data(work)).source("customers"), _lake(work))


@stage("ingest-landing")
class IngestLanding(Stage):
    """A landing folder: January is in the lake, February and March land together."""

    def _source(self, work: Path) -> SourceSpec:
        return (
            spec(_data(work)).with_landing({"shipments": str(work / "landing")}).source("shipments")
        )

    def prepare(self, work: Path) -> None:
        write_inputs(_data(work))
        (work / "landing").mkdir()
        os.link(_data(work) / "landing/2024-01.csv", work / "landing/2024-01.csv")
        snapshot_source(self._source(work), _lake(work))
        for month in (2, 3):
            name = f"2024-{month:02d}.csv"
            os.link(_data(work) / "landing" / name, work / "landing" / name)

    def run(self, work: Path) -> object:
        return snapshot_source(self._source(work), _lake(work))


@stage("validate")
class Validate(Stage):
    """Cleaning three partitions (clean and quarantine parts, markers, the pair)."""

    def prepare(self, work: Path) -> None:
        write_inputs(_data(work))
        snapshot_source(spec(_data(work)).source("shipments"), _lake(work))

    def run(self, work: Path) -> object:
        lake, the_spec = _lake(work), spec(_data(work))
        raw = lake.latest("raw", "shipments")
        return clean_snapshot(raw, the_spec.contracts["shipments"], lake, BATCH_ROWS)


@stage("features")
class Features(Stage):
    """A feature set: the base table in batches joined to a lookup, one part, a snapshot."""

    def prepare(self, work: Path) -> None:
        write_inputs(_data(work))
        _ingest_and_clean(work)

    def run(self, work: Path) -> object:
        lake = _lake(work)
        clean = {t: latest_clean(lake, t) for t in ("shipments", "customers")}
        return build_feature_set(clean, spec(_data(work)), lake, BATCH_ROWS)


@stage("batch-scores")
class BatchScores(Stage):
    """Scoring a feature set with a registered model (trained once, in ``shared/``)."""

    timeout_s = 240.0
    model = "crash-harness"

    def prepare(self, work: Path) -> None:
        # Imported here: torch and MLflow take many seconds to import, and the children of
        # the other stages' kill cases need neither.
        import mlflow  # noqa: PLC0415

        from mlsys_core.training.config import TrainConfig  # noqa: PLC0415
        from mlsys_core.training.run import train_and_log  # noqa: PLC0415

        write_inputs(_data(work))
        _ingest_and_clean(work)
        Features().run(work)
        settings = self._settings(work)
        trained = train_and_log(
            latest_feature_set(_lake(work), "shipments"),
            TrainConfig(epochs=1, batch_size=64, hidden=[8]),
            Lake(settings.lake_dir),
            settings.tracking,
        )
        mlflow.register_model(trained.model_uri, self.model)

    def _settings(self, work: Path) -> Settings:
        import mlflow  # noqa: PLC0415

        shared = (work / SHARED).resolve()
        tracking = f"sqlite:///{shared / 'mlflow.db'}"
        mlflow.set_tracking_uri(tracking)
        return Settings(state_dir=work, tracking_uri=tracking)

    def run(self, work: Path) -> object:
        from mlsys_core.serving.batch import score_feature_set  # noqa: PLC0415
        from mlsys_core.tracking import tracking_client  # noqa: PLC0415

        settings = self._settings(work)
        lake = _lake(work)
        return score_feature_set(
            lake,
            latest_feature_set(lake, "shipments"),
            self.model,
            "1",
            BATCH_ROWS,
            tracking_client(settings.mlflow_uri),
        )


@stage("predictions-log", rolls_back=True)
class PredictionsLog(Stage):
    """A prediction-log flush spanning midnight (one part per UTC day)."""

    atomic = False  # each day's part is its own commit: a crash may leave the first day

    def rows(self) -> pd.DataFrame:
        n = 60
        start = datetime(2024, 5, 1, 23, 40, tzinfo=UTC)
        frame = pd.DataFrame(
            {
                "request_id": [f"r{i:03d}" for i in range(n)],
                "logged_at": [start + timedelta(minutes=i) for i in range(n)],
                "model_name": "m",
                "model_version": "1",
                "variant": "champion",
                "served": True,
                "probability": np.linspace(0, 1, n),
                "prediction": (np.linspace(0, 1, n) > 0.5).astype(int),
                "customer_id": np.arange(n) % 7,
                "weight": np.arange(n) * 1.5,
            }
        )
        return frame[[*META_COLUMNS, "customer_id", "weight"]]

    def prepare(self, work: Path) -> None:
        _lake(work).root.mkdir(parents=True)

    def run(self, work: Path) -> object:
        writer = PredictionLogWriter(_lake(work), "shipments", flush_rows=10**6)
        rows = self.rows()
        for start in range(0, len(rows), 20):  # requests hand rows over in small blocks
            writer.add(rows.iloc[start : start + 20])
        writer.flush()
        return writer

    def rerun(self, work: Path, handle: object) -> object:
        if isinstance(handle, PredictionLogWriter):
            handle.flush()  # what the writer's thread does next: rows it kept, once
            return handle
        # A killed server's unflushed rows are gone with it (the log is durable from its
        # flush); replaying its requests logs what the log lacks, never a row twice.
        logged = set(read_prediction_log(_lake(work), "shipments")["request_id"])
        rows = self.rows()
        writer = PredictionLogWriter(_lake(work), "shipments")
        writer.add(rows[~rows["request_id"].isin(logged)])
        writer.flush()
        return writer

    def state(self, work: Path) -> dict:
        log = read_prediction_log(_lake(work), "shipments")
        return {**lake_state(_lake(work)), "log": sorted(log["request_id"])}

    def check(self, work: Path) -> None:
        log = read_prediction_log(_lake(work), "shipments")
        if log.empty:
            return
        assert not log["request_id"].duplicated().any(), "a logged row appears twice"
        expected = self.rows().set_index("request_id")
        got = log.set_index("request_id")
        assert set(got.index) <= set(expected.index)
        pd.testing.assert_series_equal(
            got["weight"], expected.loc[got.index, "weight"], check_names=False
        )


@stage("predictions-snapshot")
class PredictionsSnapshot(Stage):
    """Pinning the log's parts as a versioned snapshot."""

    def prepare(self, work: Path) -> None:
        PredictionsLog().prepare(work)
        PredictionsLog().run(work)

    def run(self, work: Path) -> object:
        return snapshot_prediction_log(_lake(work), "shipments")


@stage("stream", rolls_back=False)
class Stream(Stage):
    """Micro-batches of a stream job (window, late-event and state parts; snapshots).

    Each micro-batch is its own commit, so a crash may leave the first ones; a failed one
    leaves its parts, which the rerun reuses (they are named by the batch's content)."""

    atomic = False

    job = StreamJob(
        name="depot_weight",
        event_time="ts",
        group_by=["depot"],
        operators=[
            FilterOp(column="weight", op="notnull"),
            DeriveOp(name="heavy", column="weight", op="gt", value=20),
        ],
        window=Window(size=timedelta(minutes=30)),
        aggregates=[
            Aggregate(name="shipments", fn="count"),
            Aggregate(name="heavy_share", fn="mean", column="heavy"),
        ],
        allowed_lateness=timedelta(minutes=5),
        max_segments=2,
    )

    def prepare(self, work: Path) -> None:
        rng = np.random.default_rng(0)
        n = 180
        minutes = np.sort(rng.uniform(0, 240, n))
        minutes[100] = 10.0  # one event far behind the watermark: the late table
        t0 = pd.Timestamp("2024-04-01T08:00:00Z")
        events = pd.DataFrame(
            {
                "ts": [(t0 + pd.Timedelta(minutes=float(m))).isoformat() for m in minutes],
                "depot": rng.choice(["north", "south"], n),
                "weight": rng.gamma(2.0, 10.0, n).round(1),
            }
        )
        write_segments(events, work / "events", rows_per_segment=30)
        _lake(work).root.mkdir(parents=True)

    def run(self, work: Path) -> object:
        def no_tables(name: str) -> pd.DataFrame:
            raise AssertionError(f"unexpected table {name}")

        lake, log = _lake(work), work / "events"
        while run_micro_batch(self.job, log, lake, no_tables).segments:
            pass
        return run_micro_batch(self.job, log, lake, no_tables, flush=True)


@stage("part-retype")
class PartRetype(Stage):
    """The part writer's rare path: a first batch whose column holds only nulls, then a
    typed batch (the part so far is rewritten with the column's type)."""

    def prepare(self, work: Path) -> None:
        _lake(work).root.mkdir(parents=True)

    def run(self, work: Path) -> object:
        lake = _lake(work)
        with lake.writing():
            with lake.part_writer("stream", "sparse", "all", "p0") as writer:
                writer.write(pd.DataFrame({"k": [1, 2], "note": [None, None]}))
                writer.write(pd.DataFrame({"k": [3, 4], "note": ["late", None]}))
            return lake.write_snapshot("stream", "sparse", "s0", [writer.ref], {"parents": []})


@stage("lake-identity")
class LakeIdentity(Stage):
    """The lake's identity file, made once by whoever comes first."""

    def prepare(self, work: Path) -> None:
        _lake(work).root.mkdir(parents=True)

    def run(self, work: Path) -> object:
        return _lake(work).identity()

    def state(self, work: Path) -> dict:
        path = _lake(work).root / "_lake_id"
        return {"identity": path.is_file() and len(path.read_text().strip()) == 32}
