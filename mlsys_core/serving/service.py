"""The inference service without HTTP: loaded versions, rollout, scoring, log and metrics.

Threads, each with one job:

- the loader polls the MLflow aliases and swaps in a new ``Deployment`` when one moved
  (the only place that talks to MLflow, besides the rare canary-rollback tag);
- the scorer (one thread, fed micro-batches by the HTTP layer) runs the model;
- the shadow worker scores copies for the challenger in shadow mode;
- the prediction-log writer flushes rows to the lake.

The service is ready when the champion is loaded and the online store holds every source
the serving plan needs (``serving/sources.py``): a model answering from imputed inputs is
not ready, and says why.
"""

from __future__ import annotations

import gc
import logging
import queue
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import mlflow
import numpy as np
from pydantic import BaseModel

from mlsys_core.data.lake import Lake
from mlsys_core.features.online import OnlineStoreBase, source_problems
from mlsys_core.registry.lifecycle import alias_version
from mlsys_core.registry.lineage import (
    TAG_CANARY_ROLLBACK,
    record_canary_rollback,
    record_served_by,
    version_spec,
)
from mlsys_core.serving.config import ServeConfig
from mlsys_core.serving.lineage import SpecMismatchError, spec_differences
from mlsys_core.serving.log_writer import PredictionLogWriter
from mlsys_core.serving.metrics import ServiceMetrics
from mlsys_core.serving.models import Deployment, LoadedModel, load_version
from mlsys_core.serving.router import CHALLENGER, CHAMPION, CanaryGuard, Router
from mlsys_core.serving.scoring import AGES, EXPLAIN, IMPUTED, MISSES, STALE, Columns, Scorer
from mlsys_core.serving.sources import ServingPlan
from mlsys_core.spec import DatasetSpec
from mlsys_core.spec.inputs import input_differences
from mlsys_core.tracking import tracking_client

log = logging.getLogger(__name__)


@dataclass
class Job:
    """The records of one request, routed, waiting for their predictions."""

    records: list[BaseModel]
    variants: list[str]
    request_ids: list[str]
    arrived: float = field(default_factory=time.perf_counter)
    explain: bool = False  # answer with the inputs the model saw


class MissRates:
    """Per online source, the share of the last ``window`` lookups that found no row; a
    rate over ``threshold`` (once ``window`` lookups were made) logs a warning, at most once
    a minute per source."""

    def __init__(self, threshold: float, window: int, model: str) -> None:
        self.threshold, self.window, self.model = threshold, window, model
        self._seen: dict[str, deque[bool]] = {}
        self._warned: dict[str, float] = {}
        self._lock = threading.Lock()

    def observe(self, source: str, missed: list[bool]) -> float | None:
        """Record lookups; the miss rate when it is over the threshold and due a warning."""
        with self._lock:
            seen = self._seen.setdefault(source, deque(maxlen=self.window))
            seen.extend(missed)
            if len(seen) < self.window:
                return None
            rate = sum(seen) / len(seen)
            now = time.monotonic()
            if rate <= self.threshold or now - self._warned.get(source, -1e9) < 60:
                return None
            self._warned[source] = now
            return rate


class ScoringError(Exception):
    """A request that cannot be scored; ``status`` is the HTTP answer."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


class InferenceService:
    def __init__(  # noqa: PLR0913
        self,
        spec: DatasetSpec,
        config: ServeConfig,
        *,
        name: str,
        tracking_uri: str,
        lake: Lake,
        store: OnlineStoreBase | None,
    ) -> None:
        """Serve ``name``'s versions from the registry at ``tracking_uri``, reading model
        inputs a request omits from ``store`` (None: online features off) and logging
        predictions to ``lake``."""
        self.spec, self.config, self.name = spec, config, name
        self.rollout = config.rollout
        self.metrics = ServiceMetrics()
        self.tracking_uri = tracking_uri
        self.client = tracking_client(tracking_uri)
        self.lake = lake
        self.plan = ServingPlan(spec, config.online_features, config.feature_age_clock)
        self.store = store
        if self.store is not None:
            # Which views moved is re-read this often (one small read of the views' states):
            # a stream's micro-batch shows within it.
            self.store.states_ttl_s = min(self.store.states_ttl_s, 0.1)
        self.scorer = Scorer(spec, self.store, config.threshold, self.plan, config.report_imputed)
        self.miss_rates = MissRates(config.miss_rate_warning, config.miss_rate_window, self.name)
        ab_key = self.rollout.ab.key or list(spec.entity_keys)
        self.router = Router(self.rollout, ab_key)
        self.guard = CanaryGuard(self.rollout.canary)
        self.deployment: Deployment | None = None
        self.not_ready_reason = "loading the champion"
        self.rolled_back: set[str] = set()
        self._checked: dict[str, str | None] = {}  # version -> why it cannot be served here
        self._online: tuple[float, dict[str, str]] | None = None
        self._rng = random.Random()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._shadow: queue.Queue[tuple[Deployment, Columns, list[str]] | None] = queue.Queue(
            maxsize=self.rollout.shadow.queue_batches
        )
        self.writer = (
            PredictionLogWriter(
                self.lake,
                spec.name,
                config.log.flush_rows,
                config.log.flush_interval_s,
                on_written=self.metrics.log_rows.inc,
                on_failed=lambda _err: self.metrics.log_failures.inc(),
                build=self.scorer.log_frame,
            )
            if config.log.enabled
            else None
        )

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start loading and the background threads; returns at once (ready comes later)."""
        found = len(self.plan.found)
        log.info(
            "serving %s (%s): %d inputs, %d found online (GET /sources for each input's source)",
            self.name,
            self.spec.name,
            len(self.plan.inputs),
            found,
        )
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        if self.config.torch_threads:
            import torch  # noqa: PLC0415 -- only to size its thread pool

            torch.set_num_threads(self.config.torch_threads)
        self._spawn(self._poll, "model-loader")
        if self.rollout.mode == "shadow":
            self._spawn(self._shadow_worker, "shadow")
        if self.writer is not None:
            self.writer.start()

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        """Stop polling, finish shadow copies, flush the prediction log."""
        self._stop.set()
        if self.rollout.mode == "shadow":
            self._shadow.put(None)
        for thread in self._threads:
            thread.join(timeout=30)
        if self.writer is not None:
            self.writer.close()

    @property
    def loaded(self) -> bool:
        return self.deployment is not None

    def online_problems(self) -> dict[str, str]:
        """Online sources the plan needs that the store cannot serve (re-read each second)."""
        if self.store is None or not self.plan.online_names:
            return {}
        now = time.monotonic()
        if self._online is None or self._online[0] < now:
            self._online = (now + 1.0, source_problems(self.store, self.plan.online_names))
        return self._online[1]

    def readiness(self) -> tuple[bool, str]:
        """Whether to take traffic, and if not, why."""
        if self.deployment is None:
            return False, self.not_ready_reason
        if problems := self.online_problems():
            listed = ", ".join(f"{name} ({why})" for name, why in sorted(problems.items()))
            return False, (
                f"the online store lacks what {self.name} needs: {listed}; run the "
                "materialize-features flow (it runs before every promotion to champion)"
            )
        return True, "ready"

    @property
    def ready(self) -> bool:
        return self.readiness()[0]

    # -- loading -----------------------------------------------------------------------------
    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception as err:  # noqa: BLE001 -- keep serving what is loaded; retry
                log.exception("refreshing the served versions failed")
                if not self.loaded:
                    self.not_ready_reason = f"loading failed: {err}"
            if self.rollout.mode == "single" and self.loaded:
                return
            self._stop.wait(self.rollout.poll_interval_s)

    def refresh(self) -> bool:
        """Load the versions the aliases point at now; True if the deployment changed."""
        champion = alias_version(self.client, self.name, self.rollout.champion_alias)
        if champion is None:
            if not self.loaded:
                self.not_ready_reason = (
                    f"no version of {self.name!r} holds alias {self.rollout.champion_alias!r}"
                )
            return False  # an alias removed while serving: keep the last one, never go dark
        wanted = {CHAMPION: champion}
        if self.rollout.uses_challenger:
            challenger = alias_version(self.client, self.name, self.rollout.challenger_alias)
            if challenger is not None and challenger != champion:
                wanted[CHALLENGER] = challenger
        current = self.deployment
        if current is not None and {v: m.version for v, m in current.variants.items()} == wanted:
            return False
        loaded = {m.version: m for m in current.variants.values()} if current else {}
        for variant, version in wanted.items():
            if why := self.unservable(version):
                if variant == CHAMPION:
                    raise SpecMismatchError(why)
                log.error("not serving %s: %s", variant, why)
                wanted.pop(variant)
                break
        variants: dict[str, LoadedModel] = {}
        for variant, version in wanted.items():
            variants[variant] = loaded.get(version) or load_version(self.client, self.name, version)
        previous = current.variants if current else {}
        self.deployment = Deployment(variants)  # the switch: one reference, atomically
        # The loaded libraries and models are millions of long-lived objects; a full
        # garbage collection walking them stalled requests for ~300 ms (p99 at one client:
        # ~290 ms -> ~50 ms). Freeze them out of the collector's generations; unfreeze first,
        # so a replaced version can be freed. One collection per reload, in this thread.
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        for variant, model in variants.items():
            self.metrics.model_version.labels(variant).set(float(model.version))
            old = previous.get(variant)
            if old is None or old.version != model.version:
                self._on_new_version(variant, model, old)
        for variant in set(previous) - set(variants):
            self.metrics.model_version.remove(variant)
        self._update_canary_gauge()
        return True

    def unservable(self, version: str) -> str | None:
        """Why ``version`` cannot be served by this app (its request schema and serving
        sources come from the spec it was started with), or None."""
        if version not in self._checked:
            why = None
            trained = version_spec(self.client, self.lake, self.name, version)
            if trained is not None and trained.fingerprint() != self.spec.fingerprint():
                # A retrain on newer data moves the spec's sources, not its inputs: fine. The
                # version must take the requests this app takes, and find each input online
                # computed as it was trained (a view's window changed under its name: not).
                plan = ServingPlan(trained, self.plan.online).as_json()
                if plan != self.plan.as_json() or input_differences(trained, self.spec):
                    fields = ", ".join(spec_differences(self.spec, trained)) or "content"
                    why = (
                        f"{self.name} v{version} was trained with another spec than the one "
                        f"this service takes requests for (they differ in {fields}); a service "
                        "takes one spec's requests, fixed when it starts. A service started "
                        f"once v{version} is the champion serves it; versions compared here "
                        "must be trained with one spec"
                    )
            self._checked[version] = why
        return self._checked[version]

    def _on_new_version(self, variant: str, model: LoadedModel, old: LoadedModel | None) -> None:
        log.info(
            "%s now serves %s v%s%s",
            variant,
            model.name,
            model.version,
            f" (was v{old.version})" if old else "",
        )
        if old is not None:
            self.metrics.reloads.labels(variant).inc()
        if variant == CHALLENGER:
            self.guard.reset()
            if TAG_CANARY_ROLLBACK in model.tags:  # rolled back before, here or by a replica
                self.rolled_back.add(model.version)
        try:
            record_served_by(
                self.client, model.name, model.version, f"{self.config.deployment}/{variant}"
            )
        except Exception:  # noqa: BLE001 -- lineage is a record, not a reason to stop serving
            log.exception("recording lineage for v%s failed", model.version)

    # -- routing -----------------------------------------------------------------------------
    def challenger_live(self, deployment: Deployment) -> bool:
        challenger = deployment.variants.get(CHALLENGER)
        return challenger is not None and challenger.version not in self.rolled_back

    def route(self, records: list[BaseModel]) -> list[str]:
        deployment = self.deployment
        live = deployment is not None and self.challenger_live(deployment)
        return self.router.assign(records, live)

    def _update_canary_gauge(self) -> None:
        deployment = self.deployment
        live = self.rollout.mode == "canary" and deployment is not None
        self.metrics.canary_active.set(float(live and self.challenger_live(deployment)))

    # -- scoring -----------------------------------------------------------------------------
    def score(self, jobs: list[Job]) -> list[list[dict[str, Any]] | ScoringError]:
        """Score the records of several requests in one model call per variant."""
        deployment = self.deployment
        if deployment is None:
            return [ScoringError(503, self.not_ready_reason) for _ in jobs]
        ready, why = self.readiness()
        if not ready:
            return [ScoringError(503, why) for _ in jobs]
        records = [r for job in jobs for r in job.records]
        variants = [v for job in jobs for v in job.variants]
        request_ids = [rid for job in jobs for rid in job.request_ids]
        arrived = [job.arrived for job in jobs for _ in job.records]
        job_of = np.repeat(np.arange(len(jobs)), [len(job.records) for job in jobs])
        self.metrics.batch_size.observe(len(records))
        try:
            data = self.scorer.columns_of(records)
        except Exception as err:  # noqa: BLE001 -- an online-store failure fails this batch
            log.exception("online feature lookup failed")
            return [ScoringError(503, f"online feature lookup failed: {err}") for _ in jobs]
        data[EXPLAIN] = [job.explain for job in jobs for _ in job.records]
        self._count_inputs(data)
        entries: list[dict[str, Any] | str | None] = [None] * len(records)
        failed_jobs: dict[int, ScoringError] = {}
        groups = {v: [i for i, x in enumerate(variants) if x == v] for v in dict.fromkeys(variants)}
        for variant in sorted(groups, key=lambda v: v != CHAMPION):  # champion first
            rows = groups[variant]
            model = deployment.variants.get(variant)
            served = variant
            if model is None:  # the challenger left between routing and scoring
                model, served = deployment.variants[CHAMPION], CHAMPION
            started = time.perf_counter()
            try:
                self._score_rows(data, rows, model, served, request_ids, arrived, entries)
            except Exception as err:  # noqa: BLE001 -- isolate below
                self._on_failure(
                    deployment,
                    data,
                    rows,
                    model,
                    served,
                    request_ids,
                    arrived,
                    entries,
                    err,
                    started,
                )
                if served == CHAMPION:
                    self._isolate(
                        data, rows, model, request_ids, arrived, entries, job_of, failed_jobs
                    )
        first_row = np.concatenate([[0], np.cumsum([len(job.records) for job in jobs])])
        for i, entry in enumerate(entries):
            j = int(job_of[i])
            if isinstance(entry, str) and j not in failed_jobs:
                failed_jobs[j] = ScoringError(
                    422, f"the model cannot score record {i - first_row[j]}: {entry}"
                )
            elif entry is None and j not in failed_jobs:
                failed_jobs[j] = ScoringError(500, "the model failed to score")
        if self.rollout.mode == "shadow":
            self._copy_to_shadow(deployment, data, request_ids)
        out: list[list[dict[str, Any]] | ScoringError] = []
        start = 0
        for j, job in enumerate(jobs):
            end = start + len(job.records)
            out.append(failed_jobs.get(j) or entries[start:end])  # type: ignore[arg-type]
            start = end
        return out

    def _count_inputs(self, data: Columns) -> None:
        """Online lookups and misses by source, missing inputs by name; warn on a source
        that misses more often than the threshold."""
        if self.scorer.found:
            for source in self.plan.online_names:
                missed = [source in m for m in data[MISSES]]
                self.metrics.online_lookups.labels(source).inc(len(missed))
                if n := sum(missed):
                    self.metrics.online_misses.labels(source).inc(n)
                if (rate := self.miss_rates.observe(source, missed)) is not None:
                    log.warning(
                        "%s: %.0f%% of the last %d online lookups in %r found no row (over "
                        "the %.0f%% threshold): those inputs are imputed; check that the "
                        "requests send its keys and that the store is materialized and fresh",
                        self.name,
                        100 * rate,
                        self.miss_rates.window,
                        source,
                        100 * self.miss_rates.threshold,
                    )
        for ages in data[AGES]:
            for view, age in ages.items():
                self.metrics.feature_age.labels(view).observe(max(age, 0.0))
        for views in data[STALE]:
            for view in views:
                self.metrics.stale.labels(view).inc()
        for names in data[IMPUTED]:
            for name in names:
                self.metrics.imputed.labels(name).inc()

    def _score_rows(
        self,
        data: Columns,
        rows: list[int],
        model: LoadedModel,
        variant: str,
        request_ids: list[str],
        arrived: list[float],
        entries: list[dict[str, Any] | str | None],
    ) -> None:
        started = time.perf_counter()
        whole = len(rows) == len(entries)
        frame = self.scorer.model_frame(data, None if whole else rows)
        ids = [request_ids[i] for i in rows]
        scored, probability = self.scorer.predictions(model, frame, variant, ids)
        unseen = model.unseen(frame)
        self.scorer.annotate(scored, data, rows, unseen)
        for names in unseen:
            for name in names:
                self.metrics.unseen.labels(name).inc()
        now = time.perf_counter()
        latencies = [now - arrived[i] for i in rows]
        for i, entry in zip(rows, scored, strict=True):
            entries[i] = entry
        if any(isinstance(entry, str) for entry in scored):  # log only what was served
            keep = [k for k, entry in enumerate(scored) if not isinstance(entry, str)]
            rows, ids, probability = (
                [rows[k] for k in keep],
                [ids[k] for k in keep],
                probability[keep],
            )
        self.metrics.scored(variant, latencies)
        if variant == CHALLENGER and self.rollout.mode == "canary":
            self._judge_canary(model, [now - started] * len(latencies), [False] * len(latencies))
        if self.writer is not None:
            logged_at = datetime.now(UTC)
            self.writer.add_lazy(
                lambda: self.scorer.log_block(
                    data, rows, ids, model, variant, True, probability, logged_at
                ),
                len(rows),
            )

    def _on_failure(
        self,
        deployment: Deployment,
        data: Columns,
        rows: list[int],
        model: LoadedModel,
        variant: str,
        request_ids: list[str],
        arrived: list[float],
        entries: list[dict[str, Any] | str | None],
        err: Exception,
        started: float,
    ) -> None:
        if variant == CHALLENGER:
            now = time.perf_counter()
            latencies = [now - arrived[i] for i in rows]
            self.metrics.scored(variant, latencies, failed=len(rows))
            # The client never pays for a failing challenger: the champion answers.
            log.warning("challenger v%s failed on %d records: %s", model.version, len(rows), err)
            if self.rollout.mode == "canary":
                self._judge_canary(model, [now - started] * len(rows), [True] * len(rows))
            champion = deployment.variants[CHAMPION]
            try:
                self._score_rows(data, rows, champion, CHAMPION, request_ids, arrived, entries)
            except Exception:  # noqa: BLE001 -- entries stay None: a 500 for those requests
                log.exception("champion v%s failed too", champion.version)
            return
        log.exception("%s v%s failed on %d records", variant, model.version, len(rows))

    def _isolate(
        self,
        data: Columns,
        rows: list[int],
        model: LoadedModel,
        request_ids: list[str],
        arrived: list[float],
        entries: list[dict[str, Any] | str | None],
        job_of: np.ndarray,
        failed_jobs: dict[int, ScoringError],
    ) -> None:
        """After a failed champion call: score request by request, so one request the model
        rejects gets its own 422 and the others in its micro-batch still get answers."""
        by_job: dict[int, list[int]] = {}
        for i in rows:
            by_job.setdefault(int(job_of[i]), []).append(i)
        for j, job_rows in by_job.items():
            try:
                self._score_rows(data, job_rows, model, CHAMPION, request_ids, arrived, entries)
                continue
            except (ValueError, TypeError) as err:
                failed_jobs[j] = ScoringError(422, f"the model cannot score this input: {err}")
            except Exception:  # noqa: BLE001 -- a model fault, not the client's
                log.exception("champion v%s failed on one request", model.version)
                failed_jobs[j] = ScoringError(500, "the model failed to score")
            now = time.perf_counter()
            self.metrics.scored(CHAMPION, [now - arrived[i] for i in job_rows], len(job_rows))

    # -- canary ------------------------------------------------------------------------------
    def _judge_canary(self, model: LoadedModel, service_s: list[float], failed: list[bool]) -> None:
        # Judged on the challenger's own scoring time, not the queueing before it: a load
        # spike slows both variants alike and is no reason to roll a good challenger back.
        self.guard.observe(service_s, failed)
        reason = self.guard.verdict()
        if reason is not None and model.version not in self.rolled_back:
            self.roll_back_canary(model, reason)

    def roll_back_canary(self, model: LoadedModel, reason: str) -> None:
        """Send all traffic back to the champion and say so: log, metric, registry tag."""
        if model.version in self.rolled_back:
            return
        self.rolled_back.add(model.version)
        self.metrics.rollbacks.inc()
        self._update_canary_gauge()
        log.warning("canary rollback of %s v%s: %s", model.name, model.version, reason)
        threading.Thread(target=self._tag_rollback, args=(model, reason), daemon=True).start()

    def _tag_rollback(self, model: LoadedModel, reason: str) -> None:
        try:
            record_canary_rollback(
                self.client, model.name, model.version, self.config.deployment, reason
            )
        except Exception:  # noqa: BLE001 -- the rollback itself already happened
            log.exception("tagging the canary rollback of v%s failed", model.version)

    # -- shadow ------------------------------------------------------------------------------
    def _copy_to_shadow(
        self, deployment: Deployment, data: Columns, request_ids: list[str]
    ) -> None:
        if CHALLENGER not in deployment.variants:
            return
        if self._rng.random() >= self.rollout.shadow.share:
            return
        try:
            self._shadow.put_nowait((deployment, data, request_ids))
        except queue.Full:
            self.metrics.shadow_dropped.inc()

    def _shadow_worker(self) -> None:
        while (item := self._shadow.get()) is not None:
            deployment, data, request_ids = item
            model = deployment.variants[CHALLENGER]
            rows = list(range(len(request_ids)))
            started = time.perf_counter()
            try:
                frame = self.scorer.model_frame(data)
                _, probability = model.predict(frame)
            except Exception:  # noqa: BLE001 -- a shadow failure never reaches a client
                log.exception("shadow challenger v%s failed", model.version)
                elapsed = [time.perf_counter() - started] * len(rows)
                self.metrics.scored(CHALLENGER, elapsed, failed=len(rows))
                continue
            self.metrics.scored(CHALLENGER, [time.perf_counter() - started] * len(rows))
            if self.writer is not None:
                block = self.scorer.log_block(
                    data, rows, request_ids, model, CHALLENGER, False, probability
                )
                self.writer.add_lazy(lambda block=block: block, len(rows))
