"""The HTTP face of the inference service (FastAPI).

``POST /predict`` validates the body against the schema generated from the dataset spec,
routes each record to a variant and hands the request to the micro-batcher: one scoring
thread takes every request waiting at that moment and scores them in one model call per
variant. Under load, batches grow by themselves (the queue fills while the model runs);
alone, a request is scored at once. The event loop only parses, routes and answers.

No ``from __future__ import annotations`` here: the request types are built at run time
from the spec, and FastAPI must see them as objects in the endpoint's signature.
"""

import asyncio
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import Discriminator, Tag

from mlsys_core.config import Settings
from mlsys_core.datasets import spec_or_default
from mlsys_core.serving.config import ServeConfig
from mlsys_core.serving.schema import ErrorResponse, PredictResponse, batch_model, record_model
from mlsys_core.serving.service import InferenceService, Job, ScoringError
from mlsys_core.spec import DatasetSpec

log = logging.getLogger(__name__)
CONFIG_ENV = "MLSYS_SERVE_CONFIG"  # JSON text, or the path of a JSON file, for --factory use

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Any]


class BodyLimit:
    """Answers 413 to a body over ``limit`` bytes before anything parses it (pure ASGI, so
    it adds microseconds, not a task per request), and counts responses by status."""

    def __init__(self, app: ASGIApp, limit: int, on_status: Callable[[int], None]) -> None:
        self.app, self.limit, self.on_status = app, limit, on_status

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counting_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                self.on_status(message["status"])
            await send(message)

        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None:
            if not length.isdigit() or int(length) > self.limit:
                await self._too_large(counting_send)
                return
            await self.app(scope, receive, counting_send)
            return
        # No length given (chunked): read up to the limit here, then replay the body.
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
                await self._too_large(counting_send)
                return
        body = b"".join(chunks)
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, counting_send)

    async def _too_large(self, send: Callable) -> None:
        payload = json.dumps({"detail": f"request body over {self.limit} bytes"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


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


def _plain_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validation errors without the offending input (it may be huge, binary or private)."""
    return [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg")), "type": e.get("type")}
        for e in errors
    ]


def _record_or_batch(value: Any) -> str:
    if isinstance(value, dict):
        return "batch" if "records" in value else "record"
    return "batch" if hasattr(value, "records") else "record"


def create_app(
    settings: Settings | None = None,
    spec: DatasetSpec | None = None,
    config: ServeConfig | None = None,
) -> FastAPI:
    """The inference app. With no arguments (``uvicorn --factory``) it reads the settings
    from ``MLSYS_*`` and the serve config from ``MLSYS_SERVE_CONFIG``."""
    settings = settings or Settings()
    config = config or _config_from_env()
    spec = spec or spec_or_default(config.spec, settings.dataset)
    service = InferenceService(settings, spec, config)
    batcher = MicroBatcher(service, config.micro_batch_records, config.max_queued_records)
    record_type = record_model(spec)
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

    app = FastAPI(
        title=f"mlsys inference: {spec.name}",
        description="Scores records with the registered model versions the MLflow aliases "
        f"point at (rollout mode: {config.rollout.mode}).",
        version="1",
        lifespan=lifespan,
    )
    app.state.service = service

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _plain_errors(list(exc.errors()))}, status_code=422)

    errors = {
        400: {"model": ErrorResponse, "description": "The body is not UTF-8 JSON."},
        413: {"model": ErrorResponse, "description": "Body over the configured limit."},
        422: {
            "model": ErrorResponse,
            "description": "A field is missing, of the wrong type, out of range, or not finite.",
        },
        503: {"model": ErrorResponse, "description": "No model loaded yet, or overloaded."},
    }

    @app.post("/predict", response_model=PredictResponse, responses=errors)
    async def predict(body: Annotated[body_type, Body()]) -> Response:  # type: ignore[valid-type]
        """Score one record, or a batch as ``{"records": [...]}``."""
        if not service.ready:
            return JSONResponse({"detail": service.not_ready_reason}, status_code=503)
        records = body.records if isinstance(body, batch_type) else [body]
        job = Job(records, service.route(records), [uuid.uuid4().hex for _ in records])
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
        """Ready once the champion is loaded: which version each variant serves."""
        deployment = service.deployment
        if deployment is None:
            return JSONResponse({"detail": service.not_ready_reason}, status_code=503)
        variants = {v: m.version for v, m in deployment.variants.items()}
        return JSONResponse({"status": "ready", "model_name": service.name, "variants": variants})

    @app.get("/metrics", response_class=Response)
    async def metrics() -> Response:
        """Prometheus metrics by variant."""
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def count(status: int) -> None:
        service.metrics.http.labels(str(status)).inc()

    app.add_middleware(BodyLimit, limit=config.max_body_bytes, on_status=count)
    return app
