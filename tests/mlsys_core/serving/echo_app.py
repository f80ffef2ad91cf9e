"""A tiny ASGI app shaped like the inference service's health contract, to exercise the
cluster supervisor with replicas that start in a second.

``/health/ready`` answers 503 while the file ``$ECHO_FLAG_DIR/not-ready-<replica>`` exists,
so a test can take a replica out of readiness without killing it.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI, Response


def create_app() -> FastAPI:
    app = FastAPI()
    replica = os.environ.get("MLSYS_REPLICA", "?")
    flag = Path(os.environ.get("ECHO_FLAG_DIR", "/nonexistent")) / f"not-ready-{replica}"

    @app.get("/health/live")
    def live() -> dict[str, str]:
        return {"status": "live"}

    @app.get("/health/ready")
    def ready(response: Response) -> dict[str, str]:
        if flag.exists():
            response.status_code = 503
            return {"status": "not ready"}
        return {"status": "ready"}

    @app.post("/predict")
    def predict(body: dict) -> dict[str, object]:
        return {"replica": replica, "pid": os.getpid(), "echo": body}

    return app
