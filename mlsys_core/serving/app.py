"""The HTTP face of the inference service (FastAPI).

``POST /predict`` validates the body against the schema generated from the dataset spec,
routes each record to a variant and hands the request to the micro-batcher: one scoring
thread takes every request waiting at that moment and scores them in one model call per
variant. Under load, batches grow by themselves (the queue fills while the model runs);
alone, a request is scored at once. The event loop only parses, routes and answers.

The spec comes from the served version's lineage (its feature set's manifest), so
``mlsys serve --model-name M`` needs no spec; one given anyway must be that one. Before any
parsing, a POST body that is not JSON gets 415, and JSON nested deeper than
``max_json_depth`` gets 400 (Python's parser recurses: depth is a cost, not just a shape).

No ``from __future__ import annotations`` here: the request types are built at run time
from the spec, and FastAPI must see them as objects in the endpoint's signature.
"""

import asyncio
import json
import logging
import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Body, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import Discriminator, Tag

from mlsys_core.config import Settings
from mlsys_core.data.lake import Lake, LakeError
from mlsys_core.datasets import resolve_spec
from mlsys_core.features.online import open_online_store
from mlsys_core.messages import unknown_field
from mlsys_core.serving.config import ServeConfig
from mlsys_core.serving.lineage import serving_spec
from mlsys_core.serving.schema import (
    ErrorResponse,
    PredictResponse,
    batch_model,
    example_record,
    record_model,
)
from mlsys_core.serving.service import InferenceService, Job, ScoringError
from mlsys_core.spec import DatasetSpec
from mlsys_core.tracking import tracking_client

log = logging.getLogger(__name__)
CONFIG_ENV = "MLSYS_SERVE_CONFIG"  # JSON text, or the path of a JSON file, for --factory use

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Any]


_JSON_TYPE = re.compile(rb"^application/([a-z0-9.+-]+\+)?json\s*(;.*)?$", re.IGNORECASE)
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


def json_depth(body: bytes) -> int:
    """How deeply arrays and objects nest in a JSON text (strings skipped), without parsing."""
    if body.count(b"[") + body.count(b"{") <= 1:
        return int(b"[" in body or b"{" in body)
    text = np.frombuffer(_JSON_STRING.sub(b"", body), np.uint8)
    step = np.isin(text, (ord("["), ord("{"))).astype(np.int32)
    step -= np.isin(text, (ord("]"), ord("}"))).astype(np.int32)
    return int(np.cumsum(step).max(initial=0))


class BodyGuard:
    """Before anything parses a POST body (pure ASGI, so it adds microseconds, not a task
    per request): over ``limit`` bytes is 413, a content type other than JSON is 415, JSON
    nested deeper than ``max_depth`` is 400. Counts responses by status."""

    def __init__(
        self, app: ASGIApp, limit: int, max_depth: int, on_status: Callable[[int], None]
    ) -> None:
        self.app, self.limit, self.max_depth, self.on_status = app, limit, max_depth, on_status

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counting_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                self.on_status(message["status"])
            await send(message)

        if refusal := self._check_headers(scope):
            await self._refuse(counting_send, *refusal)
            return
        if scope.get("method") != "POST":
            await self.app(scope, receive, counting_send)
            return
        # Read the body (up to the limit, whether or not a length was given), then replay it.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, counting_send)
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.limit:
                await self._refuse(counting_send, 413, f"request body over {self.limit} bytes")
                return
        body = b"".join(chunks)
        if json_depth(body) > self.max_depth:
            await self._refuse(
                counting_send, 400, f"JSON nested too deep (over {self.max_depth} levels)"
            )
            return
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, counting_send)

    def _check_headers(self, scope: dict) -> tuple[int, str] | None:
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return 413, f"request body over {self.limit} bytes"
        kind = headers.get(b"content-type")
        if (
            scope.get("method") == "POST"
            and kind is not None
            and not _JSON_TYPE.match(kind.strip())
        ):
            shown = kind.decode("latin-1")[:100]
            return 415, f"unsupported content type {shown!r}: send application/json"
        return None

    @staticmethod
    async def _refuse(send: Callable, status: int, detail: str) -> None:
        payload = json.dumps({"detail": detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


BodyLimit = BodyGuard  # its former name


class MicroBatcher:
    """Requests in, one scoring thread out: whatever waits when the thread frees up is
    scored together (up to ``max_records`` records)."""

    def __init__(self, service: InferenceService, max_records: int, max_queued: int) -> None:
        self.service, self.max_records, self.max_queued = service, max_records, max_queued
        self.queue: asyncio.Queue[tuple[Job, asyncio.Future]] = asyncio.Queue()
        self.queued = 0  # records waiting; only the event loop touches it
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scorer")
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def submit(self, job: Job) -> list[dict[str, Any]] | ScoringError:
        if self.queued + len(job.records) > self.max_queued:
            return ScoringError(503, f"overloaded: {self.queued} records wait; retry later")
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((job, future))
        self.queued += len(job.records)
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            size = len(batch[0][0].records)
            while size < self.max_records and not self.queue.empty():
                batch.append(self.queue.get_nowait())
                size += len(batch[-1][0].records)
            self.queued -= size
            jobs = [job for job, _ in batch]
            try:
                results = await loop.run_in_executor(self.executor, self.service.score, jobs)
            except Exception:  # noqa: BLE001 -- never leave a request hanging
                log.exception("scoring a micro-batch failed")
                results = [ScoringError(500, "scoring failed") for _ in jobs]
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        while not self.queue.empty():
            _, future = self.queue.get_nowait()
            if not future.done():
                future.set_result(ScoringError(503, "the service is shutting down"))
        self.executor.shutdown(wait=True)


def _config_from_env() -> ServeConfig:
    raw = os.environ.get(CONFIG_ENV, "").strip()
    if not raw:
        return ServeConfig()
    text = raw if raw.startswith("{") else Path(raw).read_text()
    return ServeConfig.model_validate_json(text)


def _plain_errors(errors: Sequence[Any], fields: Collection[str] = ()) -> list[dict[str, Any]]:
    """Validation errors without the offending input (it may be huge, binary or private); a
    field the record does not have names the one of ``fields`` it likely meant."""
    plain = []
    for e in errors:
        loc, msg = [str(p) for p in e.get("loc", ())], str(e.get("msg"))
        if e.get("type") == "extra_forbidden" and loc and fields:
            msg = unknown_field(loc[-1], fields)
        plain.append({"loc": loc, "msg": msg, "type": e.get("type")})
    return plain


def _record_or_batch(value: Any) -> str:
    if isinstance(value, dict):
        return "batch" if "records" in value else "record"
    return "batch" if hasattr(value, "records") else "record"


def resolve_serving_spec(
    settings: Settings, config: ServeConfig, spec: DatasetSpec | None = None
) -> tuple[DatasetSpec, str]:
    """The spec a service of ``config`` serves with, and where it came from (see
    ``serving.lineage.serving_spec``)."""
    given = spec or (resolve_spec(config.spec) if config.spec else None)
    default = resolve_spec(settings.dataset) if settings.dataset and given is None else None
    name = config.model_name or settings.model_name
    if name is None:
        chosen = given or default
        if chosen is None:
            raise LookupError(
                "no model to serve: pass --model-name, or set MLSYS_MODEL_NAME or MLSYS_DATASET"
            )
        name = chosen.registered_model
    uri = settings.mlflow_uri
    client = tracking_client(uri)
    return serving_spec(
        client, Lake(settings.lake_dir), name, config.rollout.champion_alias, given, default
    )


def describe_sources(service: InferenceService) -> dict[str, Any]:
    """The serving plan, and per online source what the store holds (None: nothing)."""
    states = service.store.states() if service.store else {}
    online: dict[str, Any] = {}
    for name in service.plan.online_names:
        state = states.get(name)
        online[name] = state and {
            "rows": state.rows,
            "as_of": None if state.watermark is None else state.watermark.isoformat(),
            "written_at": state.written_at,
        }
    return {
        "model_name": service.name,
        "dataset": service.spec.name,
        **service.plan.as_json(),
        "store": online,
    }


def _examples(
    lake: Lake, spec: DatasetSpec, record_type: type, found: list[str]
) -> dict[str, Any] | None:
    """The request body's examples in the API's docs: a record made of the first clean row
    of the base table, and a batch of it. None without clean data (a replica whose lake is
    elsewhere), which leaves the docs to their placeholders."""
    try:
        ref = lake.latest("clean", spec.base)
        rows = lake.head(ref) if ref is not None else None
    except (OSError, ValueError, LakeError) as err:  # an example is no reason not to serve
        log.warning("no example request from the lake: %s", err)
        return None
    if rows is None or rows.empty:
        return None
    if (record := example_record(record_type, rows.iloc[0], skip=found)) is None:
        return None
    return {
        "record": {"summary": "One record (a row of the data)", "value": record},
        "batch": {"summary": "A batch of records", "value": {"records": [record]}},
    }


def create_app(
    settings: Settings | None = None,
    spec: DatasetSpec | None = None,
    config: ServeConfig | None = None,
) -> FastAPI:
    """The inference app. With no arguments (``uvicorn --factory``) it reads the settings
    from ``MLSYS_*`` and the serve config from ``MLSYS_SERVE_CONFIG``.

    The spec is the one the champion was trained with (its lineage); ``spec`` or
    ``config.spec``, if given, must be that one. Before a champion exists, the given spec,
    else the configured dataset, sets the request schema.
    """
    settings = settings or Settings()
    config = config or _config_from_env()
    spec, origin = resolve_serving_spec(settings, config, spec)
    log.info("serving %s with spec %r from %s", config.model_name or "", spec.name, origin)
    service = InferenceService(
        spec,
        config,
        name=config.model_name or settings.model_name or spec.registered_model,
        tracking_uri=settings.mlflow_uri,
        lake=Lake(settings.lake_dir),
        store=(
            open_online_store(settings.root, settings.online_store)
            if config.online_features
            else None
        ),
    )
    batcher = MicroBatcher(service, config.micro_batch_records, config.max_queued_records)
    record_type = record_model(spec, service.plan)
    batch_type = batch_model(record_type, config.max_batch_records)
    # Tagged, so a bad batch reports the batch's errors, not also why it is no record.
    body_type = Annotated[
        Annotated[record_type, Tag("record")] | Annotated[batch_type, Tag("batch")],  # type: ignore[valid-type]
        Discriminator(_record_or_batch),
    ]

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.start()
        batcher.start()
        try:
            yield
        finally:
            await batcher.stop()
            await asyncio.to_thread(service.stop)

    plan = service.plan
    found = ", ".join(plan.found) or "nothing"
    app = FastAPI(
        title=f"mlsys inference: {spec.name}",
        description="Scores records with the registered model versions the MLflow aliases "
        f"point at (rollout mode: {config.rollout.mode}).\n\n"
        f"**Send**: {', '.join(plan.required) or 'nothing'} (required)"
        + (f"; {', '.join(plan.request_keys)} (to find features)" if plan.request_keys else "")
        + (
            f"; {', '.join(plan.request_features)} (only you have them: imputed when absent)"
            if plan.request_features
            else ""
        )
        + f".\n\n**Found by the service** (omit them): {found}. See `GET /sources`.",
        version="1",
        lifespan=lifespan,
    )
    app.state.service = service

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            {"detail": _plain_errors(exc.errors(), record_type.model_fields)}, status_code=422
        )

    errors = {
        400: {
            "model": ErrorResponse,
            "description": "The body is not UTF-8 JSON, or JSON nested too deep.",
        },
        413: {"model": ErrorResponse, "description": "Body over the configured limit."},
        415: {"model": ErrorResponse, "description": "The body is not application/json."},
        422: {
            "model": ErrorResponse,
            "description": "A field is missing, of the wrong type, out of range, or not finite.",
        },
        503: {
            "model": ErrorResponse,
            "description": "No model loaded yet, the online store lacks what it needs, or "
            "overloaded.",
        },
    }

    @app.post("/predict", response_model=PredictResponse, responses=errors)
    async def predict(
        request: Request,
        body: Annotated[  # type: ignore[valid-type]
            body_type,
            Body(openapi_examples=_examples(service.lake, spec, record_type, plan.found)),
        ],
    ) -> Response:
        """Score one record, or a batch as ``{"records": [...]}``.

        ``?explain=true`` adds to each prediction every input the model saw, the ones that
        were missing (imputed) and the online sources that had no row for its key.
        """
        # Read by hand, not declared: a declared boolean query parameter made the OpenAPI
        # fuzzer (tests/mlsys_core/serving/test_fuzz.py) filter out most generated cases.
        explain = request.query_params.get("explain", "").lower() in ("1", "true", "yes")
        ready, why = service.readiness()
        if not ready:
            return JSONResponse({"detail": why}, status_code=503)
        records = body.records if isinstance(body, batch_type) else [body]
        ids = [uuid.uuid4().hex for _ in records]
        job = Job(records, service.route(records), ids, explain=explain)
        result = await batcher.submit(job)
        if isinstance(result, ScoringError):
            return JSONResponse({"detail": result.detail}, status_code=result.status)
        return Response(json.dumps({"predictions": result}), media_type="application/json")

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        """The process answers."""
        return {"status": "live"}

    @app.get("/health/ready", responses={503: {"model": ErrorResponse}})
    async def ready() -> Response:
        """Ready once the champion is loaded and the online store holds every source it
        needs: which version each variant serves; else why not."""
        ok, why = await asyncio.to_thread(service.readiness)
        deployment = service.deployment
        if not ok or deployment is None:
            return JSONResponse({"detail": why}, status_code=503)
        variants = {v: m.version for v, m in deployment.variants.items()}
        return JSONResponse({"status": "ready", "model_name": service.name, "variants": variants})

    @app.get("/sources")
    async def sources() -> Response:
        """Where each model input comes from, and what the online store holds for it."""
        return JSONResponse(await asyncio.to_thread(describe_sources, service))

    @app.get("/metrics", response_class=Response)
    async def metrics() -> Response:
        """Prometheus metrics by variant."""
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def count(status: int) -> None:
        service.metrics.http.labels(str(status)).inc()

    app.add_middleware(
        BodyGuard,
        limit=config.max_body_bytes,
        max_depth=config.max_json_depth,
        on_status=count,
    )
    return app
