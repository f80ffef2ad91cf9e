"""The stages of the stores beside the lake: each a small real run of one writer.

- ``online-materialize``: an incremental materialization of two feature views into the
  SQLite online store (one transaction per view);
- ``online-materialize-redis``: the same into the Redis online store (one MULTI/EXEC
  transaction per view), on the real redis-server whose URL the test module writes to
  ``REDIS_URL_FILE`` beside the cases' folders;
- ``checkpoints``: a training run writing checkpoints every two steps, resumed after the
  crash from the newest valid one;
- ``registry-walk``: one version's whole lifecycle in an MLflow registry (register under the
  lock, gate, staging, approval, production, rollback, served-by and canary-rollback tags);
- ``model-files``: the files the served model loads (preprocessor, config, weights);
- ``launch-files``: the launcher's job file and its first-start marker;
- ``drift-reference``: the drift check's reference cache entry.

What each promises after a crash is in its ``state``/``check``/``rerun``.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlsys_core.atomic import write_text_atomically
from mlsys_core.features.online import OnlineStoreBase, SQLiteOnlineStore, encode_key
from mlsys_core.features.online_redis import RedisOnlineStore
from mlsys_core.spec.definitions import Aggregation, Entity, WindowView
from tests.crash.harness import SHARED, Stage, stage


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _temporary(folder: Path) -> list[str]:
    """Temporary files and folders of unfinished writes (their names start with a dot)."""
    if not folder.is_dir():
        return []
    return sorted(f"temporary: {p}" for p in folder.rglob(".*") if ".tmp" in p.name)


# -- the online store ----------------------------------------------------------------------
VIEWS = [
    WindowView(
        name=name,
        source="events",
        entity=Entity(name="customer", join_keys=["customer_id"]),
        timestamp="at",
        aggregations=[Aggregation(name=f"{name}_value", function=fn, column="x", window="P1D")],
    )
    for name, fn in (("events_n", "count"), ("events_mean", "mean"))
]
KEYS = [encode_key([k], ["number"]) for k in range(1, 30)]
T1 = datetime(2024, 1, 3, tzinfo=UTC)
T2 = datetime(2024, 1, 5, 12, tzinfo=UTC)


def _events() -> pd.DataFrame:
    n = 240
    rng = np.random.default_rng(4)
    return pd.DataFrame(
        {
            "customer_id": rng.integers(1, 30, n),
            "at": pd.date_range("2024-01-01", periods=n, freq="27min", tz="UTC"),
            "x": rng.normal(10, 3, n).round(2),
        }
    )


def _rounded(values: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 9) if isinstance(v, float) else v for k, v in values.items()}


@stage("online-materialize")
class OnlineMaterialize(Stage):
    """An incremental run at T2 over views materialized at T1. Each view is one transaction:
    right after a crash every view is whole at T1 or whole at T2 (never some keys of each),
    and a rerun (incremental again) stores the values of an uninterrupted run."""

    atomic = "per_key"  # two views, two transactions: each view is before or after

    def _store(self, work: Path) -> OnlineStoreBase:
        return SQLiteOnlineStore(work / "online" / "features.db", cache_ttl_s=0.0)

    def prepare(self, work: Path) -> None:
        self._store(work).materialize(VIEWS, {"events": _events()}, T1)

    def run(self, work: Path) -> object:
        return self._store(work).materialize(VIEWS, {"events": _events()}, T2, incremental=True)

    def state(self, work: Path) -> dict[str, Any]:
        store, out = self._store(work), {}
        for name, view in sorted(store.load_states().items()):
            rows = store.read_rows(name, KEYS)
            # Window means come from running sums over the rows read, so a rerun that reads
            # another range of source rows differs in the last bits: compared to 1e-9.
            values = sorted((r.key, json.dumps(_rounded(r.values)), r.as_of_ns) for r in rows if r)
            fields = view.model_dump(exclude={"written_at"})
            out[name] = (json.dumps(fields, sort_keys=True), values)
        return out

    def check(self, work: Path) -> None:
        # A view's state and its rows agree (they are one transaction).
        store = self._store(work)
        for name, view in store.load_states().items():
            rows = [r for r in store.read_rows(name, KEYS) if r]
            assert len(rows) == view.rows, f"{name}: {len(rows)} rows, its state says {view.rows}"
            assert all(r.as_of_ns <= view.watermark_ns for r in rows), f"{name}: from the future"

    def leftovers(self, work: Path) -> list[str]:
        return _temporary(work / "online")

    def collect(self, work: Path) -> None:
        """SQLite recovers a killed writer's transaction itself, on the next open."""


REDIS_URL_FILE = "redis.url"


@stage("online-materialize-redis")
class OnlineMaterializeRedis(OnlineMaterialize):
    """As ``online-materialize``, on Redis: each case's store is its own key prefix, named
    after its folder, in one redis-server."""

    def _store(self, work: Path) -> RedisOnlineStore:
        url = (work.parent / REDIS_URL_FILE).read_text().strip()
        return RedisOnlineStore.from_url(url, prefix=f"crash:{work.name}:", cache_ttl_s=0.0)

    def copy(self, template: Path, target: Path) -> Path:
        super().copy(template, target)
        source, dest = self._store(template), self._store(target)
        client = dest.client
        stale = list(client.scan_iter(match=f"{dest.prefix}*"))
        if stale:
            client.delete(*stale)
        for key in client.scan_iter(match=f"{source.prefix}*"):
            suffix = key.decode().removeprefix(source.prefix)
            assert client.copy(key, f"{dest.prefix}{suffix}")
        return target

    def leftovers(self, work: Path) -> list[str]:
        """Keys outside the store's layout (a transaction leaves none, whole or not)."""
        store = self._store(work)
        known = {store._views_key(), *(store._rows_key(v) for v in store.load_states())}
        keys = {k.decode() for k in store.client.scan_iter(match=f"{store.prefix}*")}
        return sorted(f"stray key: {k}" for k in keys - known)

    def collect(self, work: Path) -> None:
        """Redis discards a transaction whose client died before EXEC: nothing to do."""


# -- the checkpoint store ------------------------------------------------------------------
@stage("checkpoints", rolls_back=False)
class Checkpoints(Stage):
    """Training with a checkpoint every two steps. After a crash the store never hands out a
    torn checkpoint (each valid one loads), and training resumed from it ends with the
    weights and checkpoints of an uninterrupted run."""

    atomic = False  # the checkpoints written before the crash stay: that is their point

    def _problem(self) -> tuple[np.ndarray, ...]:
        rng = np.random.default_rng(7)
        x = rng.normal(size=(96, 4)).astype(np.float32)
        y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(0, 0.5, 96) > 0).astype(np.float32)
        return x[:64], y[:64], x[64:], y[64:]

    def _store(self, work: Path):  # noqa: ANN202 - torch is imported late (fork server)
        from mlsys_core.training.checkpoint import CheckpointStore  # noqa: PLC0415

        return CheckpointStore(work / "checkpoints", keep=2)

    def prepare(self, work: Path) -> None:
        (work / "checkpoints").mkdir(parents=True)

    def run(self, work: Path) -> object:
        import torch  # noqa: PLC0415

        from mlsys_core.training.config import ModelConfig, TrainConfig  # noqa: PLC0415
        from mlsys_core.training.distributed import LaunchConfig  # noqa: PLC0415
        from mlsys_core.training.trainer import Trainer  # noqa: PLC0415

        torch.set_num_threads(1)
        config = TrainConfig(epochs=3, batch_size=16, hidden=[8], dropout=0.0, device="cpu")
        model = ModelConfig(cardinalities=[], n_numeric=4, hidden=[8], dropout=0.0)
        trainer = Trainer(config, model, LaunchConfig(checkpoint_every_steps=2), self._store(work))
        trainer.setup(*self._problem())
        trainer.train()
        state = sorted(trainer.model.state_dict().items())
        weights = b"".join(v.detach().cpu().numpy().tobytes() for _, v in state)
        write_text_atomically(work / "result.json", json.dumps({"weights": _digest(weights)}))
        return trainer

    def state(self, work: Path) -> dict[str, Any]:
        store = self._store(work)
        result = work / "result.json"
        return {
            "valid": [s for s in store.steps() if store.verify(s)],
            "files": sorted(p.name for p in store.folder.iterdir() if not p.name.startswith(".")),
            "result": json.loads(result.read_text()) if result.is_file() else None,
        }

    def check(self, work: Path) -> None:
        import torch  # noqa: PLC0415

        store = self._store(work)
        loaded = store.load_latest()  # never raises here: an earlier checkpoint stands in
        for step in store.steps():
            if store.verify(step):  # a valid checkpoint is whole: it loads
                torch.load(store.path_for(step), weights_only=True)
        if loaded is not None:
            assert store.verify(loaded.step) and loaded.step == max(
                s for s in store.steps() if store.verify(s)
            )

    def leftovers(self, work: Path) -> list[str]:
        return _temporary(work / "checkpoints")

    def collect(self, work: Path) -> None:
        self._store(work).remove_temporary()


# -- the registry --------------------------------------------------------------------------
MODEL = "crash-registry"
WALK_REQUEST = "crash-harness-walk"


def _tracking(work: Path):  # noqa: ANN202
    import mlflow  # noqa: PLC0415
    from mlflow import MlflowClient  # noqa: PLC0415

    uri = f"sqlite:///{work / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(uri, uri)


def _lock(client):  # noqa: ANN001, ANN202
    from mlsys_core.registry.locking import RegistryLock  # noqa: PLC0415

    # A short lease: a ticket a killed holder left costs a second, not thirty.
    return RegistryLock(client, MODEL, timeout_s=60, lease_s=1.0, beat_s=0.2)


def _gate(version: str, champion: str | None):  # noqa: ANN202
    from mlsys_core.registry.gate import GateDecision  # noqa: PLC0415

    return GateDecision(
        promote=True,
        reason="crash harness: a decision made beforehand",
        challenger_auc=0.8,
        champion_auc=0.7 if champion else None,
        champion_version=champion,
        challenger_version=version,
        decided_at="2024-01-01T00:00:00+00:00",
    )


def _approval():  # noqa: ANN202
    from mlsys_core.registry.lifecycle import Approval  # noqa: PLC0415

    return Approval(approver="harness", approve=True, reason="crash harness")


@stage("registry-walk", rolls_back=False)
class RegistryWalk(Stage):
    """A second version's whole lifecycle against a champion v1, every move under the
    registry lock, then the tags serving writes.

    A change of several registry calls cannot be one transaction in MLflow: the lifecycle
    writes the audit event, then the stage tags, then the aliases, so a crash leaves a state
    that ``mlsys registry check`` reports and ``--repair`` completes from the history. The
    checks: right after a crash no semantic version is out of order and at most one version
    is in production; after ``repair`` every invariant holds; and the walk continued from
    where the registry says the version stands (a registration retried with its request id
    finishes its version rather than adding one) ends where an uninterrupted walk ends."""

    atomic = False
    timeout_s = 180.0

    def prepare(self, work: Path) -> None:
        import mlflow  # noqa: PLC0415
        import mlflow.pyfunc  # noqa: PLC0415
        from mlflow.models import infer_signature  # noqa: PLC0415

        from mlsys_core.registry import lifecycle  # noqa: PLC0415

        client = _tracking(work)
        artifacts = (work / SHARED).resolve() / "artifacts"
        experiment = mlflow.create_experiment("crash", artifact_location=artifacts.as_uri())
        frame = pd.DataFrame({"x": [1.0, 2.0]})
        with mlflow.start_run(experiment_id=experiment) as run:
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=_Half(),
                signature=infer_signature(frame, np.array([0.5, 0.5])),
                pip_requirements=["mlflow"],
            )
        # Both versions come from one run (a retrained model would be another run): the
        # harness is about the registry's writes, not the model.
        runs = [(run.info.run_id, info.model_uri)] * 2
        (work / "runs.json").write_text(json.dumps(runs))
        # v1, champion: walked without the lock, so the walk's first lock makes the lock model.
        run_id, uri = runs[0]
        v1 = lifecycle.register(client, MODEL, uri, run_id, "harness", nullcontext()).version
        for to, gate in (
            (lifecycle.Stage.TESTING, None),
            (lifecycle.Stage.STAGING, _gate(v1, None)),
        ):
            lifecycle.transition(
                client, MODEL, v1, to, "harness", "first", nullcontext(), gate=gate
            )
        lifecycle.transition(
            client, MODEL, v1, lifecycle.Stage.PRODUCTION, "harness", "first", nullcontext(),
            approval=_approval(),
        )  # fmt: skip

    def run(self, work: Path) -> object:
        return self._walk(work)

    def rerun(self, work: Path, handle: object) -> object:
        from mlsys_core.registry.invariants import repair  # noqa: PLC0415

        client = _tracking(work)
        report = repair(client, MODEL, "harness", _lock(client))
        assert report.ok, f"repair left {report.violations}"
        return self._walk(work)

    def _walk(self, work: Path) -> str:
        """Move v2 on from wherever it stands: what a user does after a failure."""
        from mlsys_core.registry import lifecycle, lineage  # noqa: PLC0415

        Stage_ = lifecycle.Stage
        client = _tracking(work)
        lock = _lock(client)
        run_id, uri = json.loads((work / "runs.json").read_text())[1]
        v2 = lifecycle.register(
            client, MODEL, uri, run_id, "harness", lock, request_id=WALK_REQUEST
        ).version
        if lifecycle.stage_of(client, MODEL, v2) == Stage_.DEVELOPMENT:
            lifecycle.transition(client, MODEL, v2, Stage_.TESTING, "harness", "smoke", lock)
        if lifecycle.stage_of(client, MODEL, v2) == Stage_.TESTING:
            gate = lifecycle.recorded_gate(client, MODEL, v2)
            if gate is None:
                gate = _gate(v2, "1")
                lifecycle.record_gate(client, MODEL, v2, gate, "harness")
            lifecycle.transition(client, MODEL, v2, Stage_.STAGING, "harness", "gate", lock)
        if lifecycle.stage_of(client, MODEL, v2) == Stage_.STAGING:
            tags = client.get_model_version(MODEL, v2).tags
            if lifecycle.TAG_APPROVAL not in tags:
                lifecycle.record_approval(client, MODEL, v2, _approval())
            lifecycle.transition(
                client, MODEL, v2, Stage_.PRODUCTION, "harness", "ok", lock, approval=_approval()
            )
        if lifecycle.stage_of(client, MODEL, v2) == Stage_.PRODUCTION:
            lifecycle.rollback(client, MODEL, "harness", "canary failed", lock)
        lineage.record_served_by(client, MODEL, "1", "crash-harness")
        lineage.record_canary_rollback(client, MODEL, v2, "crash-harness", "errors")
        return v2

    def state(self, work: Path) -> dict[str, Any]:
        from mlsys_core.registry.invariants import check_registry  # noqa: PLC0415
        from mlsys_core.registry.lifecycle import TAG_SEMVER, read_state  # noqa: PLC0415
        from mlsys_core.registry.lineage import (  # noqa: PLC0415
            SERVED_BY_PREFIX,
            TAG_CANARY_ROLLBACK,
        )
        from mlsys_core.registry.locking import lock_model_name  # noqa: PLC0415

        client = _tracking(work)
        state = read_state(client, MODEL)
        report = check_registry(client, MODEL)
        tickets = client.search_model_versions(f"name = '{lock_model_name(MODEL)}'")
        versions = {
            v: (
                vs.tag,
                vs.tags.get(TAG_SEMVER),
                sorted(k for k in vs.tags if k.startswith(SERVED_BY_PREFIX)),
                TAG_CANARY_ROLLBACK in vs.tags,
            )
            for v, vs in sorted(state.versions.items())
        }
        aliases = {a: v for a, v in state.aliases.items()}
        return {"versions": versions, "aliases": aliases, "ok": report.ok, "tickets": len(tickets)}

    def check(self, work: Path) -> None:
        from mlsys_core.registry.invariants import check_registry  # noqa: PLC0415

        report = check_registry(_tracking(work), MODEL)
        for violation in report.violations:
            # What a change cut short may leave until repair: an alias or a stage tag behind
            # the history, or a version the history does not know yet. Never these:
            assert violation.invariant != "semver", violation
            assert "in production:" not in violation.detail, violation

    def leftovers(self, work: Path) -> list[str]:
        return []  # the registry's files are MLflow's (a SQLite file and the artifacts)

    def collect(self, work: Path) -> None:
        """A killed holder's lock ticket is removed by the next waiter after the lease."""


class _Half:
    """The smallest model MLflow logs: every row gets 0.5."""

    def __new__(cls):  # noqa: ANN204 - built on first use, when MLflow is imported
        import mlflow.pyfunc  # noqa: PLC0415

        class Half(mlflow.pyfunc.PythonModel):
            def predict(self, context, model_input: pd.DataFrame, params=None):  # noqa: ANN001, ANN201, ARG002
                return np.full(len(model_input), 0.5)

        return Half()


# -- the served model's files --------------------------------------------------------------
@stage("model-files", rolls_back=False)
class ModelFiles(Stage):
    """The preprocessor, network config and weights written for a logged model. Each file
    is whole or absent after a crash (a reader of a cut-short folder gets a missing file,
    never a truncated one); the rerun writes the same files."""

    atomic = False

    def _parts(self):  # noqa: ANN202
        import torch  # noqa: PLC0415

        from mlsys_core.features.preprocess import TabularPreprocessor  # noqa: PLC0415
        from mlsys_core.training.config import ModelConfig  # noqa: PLC0415
        from mlsys_core.training.model import TabularMLP  # noqa: PLC0415

        frame = pd.DataFrame({"a": [1.0, 2.0, None, 4.0], "c": ["x", "y", "x", None]})
        pre = TabularPreprocessor(numeric=["a"], categorical=["c"]).fit(frame)
        config = ModelConfig(cardinalities=pre.cardinalities_, n_numeric=pre.n_numeric_, hidden=[4])
        torch.manual_seed(0)
        return pre, config, TabularMLP(config)

    def prepare(self, work: Path) -> None:
        (work / "model").mkdir(parents=True)

    def run(self, work: Path) -> object:
        from mlsys_core.training.pyfunc import write_model_artifacts  # noqa: PLC0415

        return write_model_artifacts(work / "model", *self._parts())

    def state(self, work: Path) -> dict[str, Any]:
        folder = work / "model"
        return {
            p.name: _digest(p.read_bytes())
            for p in sorted(folder.iterdir())
            if not p.name.startswith(".")
        }

    def check(self, work: Path) -> None:
        from mlsys_core.training.pyfunc import load_weights  # noqa: PLC0415

        folder = work / "model"
        for path in folder.glob("*.json"):
            json.loads(path.read_text())
        if (weights := folder / "weights.safetensors").exists():
            load_weights(weights)

    def leftovers(self, work: Path) -> list[str]:
        return _temporary(work / "model")

    def collect(self, work: Path) -> None:
        """The folder is a fresh temporary one per logged model: the caller removes it."""
        for path in (work / "model").glob(".*.tmp-*"):
            path.unlink()


# -- the launcher's files ------------------------------------------------------------------
@stage("launch-files", rolls_back=False)
class LaunchFiles(Stage):
    """A one-node launch's job file over the previous job's, and the first-start marker
    several nodes share: workers read the previous job or the new one, whole; the marker is
    absent or a whole time; a rerun leaves no temporary file."""

    atomic = False

    def _job(self, work: Path, epochs: int):  # noqa: ANN202
        from mlsys_core.data.lake import SnapshotRef  # noqa: PLC0415
        from mlsys_core.features.store import FeatureSetRef  # noqa: PLC0415
        from mlsys_core.training.config import TrainConfig  # noqa: PLC0415
        from mlsys_core.training.distributed import LaunchConfig  # noqa: PLC0415
        from mlsys_core.training.launch import TrainingJob  # noqa: PLC0415

        snapshot = SnapshotRef(layer="features", table="t", snapshot_id="s", rows=1, path="p")
        features = FeatureSetRef(
            snapshot=snapshot, model_name="m", spec_fingerprint="f", raw_snapshots={},
            clean_snapshots={}, split_rows={},
        )  # fmt: skip
        return TrainingJob(
            key="job",
            feature_set=features,
            config=TrainConfig(epochs=epochs),
            launch=LaunchConfig(),
            settings={"state_dir": str(work / "state")},
        )

    def prepare(self, work: Path) -> None:
        from mlsys_core.training.launch import write_job  # noqa: PLC0415

        write_job(self._job(work, epochs=1))

    def run(self, work: Path) -> object:
        from mlsys_core.training.launch import _first_start_ms, write_job  # noqa: PLC0415

        path = write_job(self._job(work, epochs=2))
        _first_start_ms(path.parent, nnodes=2)
        return path

    def _folder(self, work: Path) -> Path:
        return self._job(work, 1).job_dir()

    def state(self, work: Path) -> dict[str, Any]:
        folder = self._folder(work)
        job = json.loads((folder / "job.json").read_text())  # whole, or this raises
        marker = folder / "first-start-ms"
        return {"epochs": job["config"]["epochs"], "marker": marker.is_file()}

    def check(self, work: Path) -> None:
        marker = self._folder(work) / "first-start-ms"
        if marker.is_file():
            assert int(marker.read_text()) > 1_600_000_000_000, "a torn first-start marker"

    def leftovers(self, work: Path) -> list[str]:
        folder = self._folder(work)
        return sorted(f"temporary: {p}" for p in folder.glob(".*")) if folder.is_dir() else []

    def collect(self, work: Path) -> None:
        """The next one-node launch removes what a killed launcher left (the rerun did)."""


# -- the drift reference cache -------------------------------------------------------------
@stage("drift-reference")
class DriftReference(Stage):
    """A drift check's reference statistics, computed and cached: a reader finds a whole
    entry or none, and the rerun caches the same statistics."""

    def _folder(self, work: Path) -> Path:
        return work / "monitoring" / "reference" / "entry"

    def _stats(self):  # noqa: ANN202
        from mlsys_core.monitoring.stattests import reference_stats  # noqa: PLC0415

        rng = np.random.default_rng(3)
        frame = pd.DataFrame(
            {
                "a": rng.normal(size=200),
                "b": rng.gamma(2.0, size=200),
                "c": rng.choice(["x", "y", "z"], 200),
            }
        )
        return reference_stats(frame, ["a", "b"], ["c"])

    def prepare(self, work: Path) -> None:
        self._folder(work).parent.mkdir(parents=True)

    def run(self, work: Path) -> object:
        from mlsys_core.monitoring.reference import cached_reference  # noqa: PLC0415

        return cached_reference(self._folder(work), self._stats)

    def state(self, work: Path) -> dict[str, Any]:
        from mlsys_core.monitoring.reference import load_reference  # noqa: PLC0415

        stats = load_reference(self._folder(work))  # a half-written entry would fail here
        if stats is None:
            return {"entry": None}
        values = {k: _digest(v.tobytes()) for k, v in sorted(stats.sorted_values.items())}
        return {"entry": stats.model_dump_json(), "values": values}

    def leftovers(self, work: Path) -> list[str]:
        return _temporary(self._folder(work).parent)

    def collect(self, work: Path) -> None:
        from mlsys_core.monitoring.reference import remove_stale_temporary  # noqa: PLC0415

        remove_stale_temporary(self._folder(work).parent, grace=timedelta(0))
