"""Schemathesis fuzzes the API from its own OpenAPI document: no input gives a 5xx."""

from __future__ import annotations

import os
import subprocess

import httpx
import pytest

from mlsys_core.serving.app import create_app
from tests.integration.conftest import BIN
from tests.mlsys_core.serving.conftest import register, serve_config, serving

pytestmark = pytest.mark.slow  # the shared fixture trains a real model


def test_schemathesis_finds_no_server_error(trained, client, model_name, small_spec, tmp_path):
    register(client, model_name, trained.model.model_uri, "champion")
    config = serve_config("single").model_copy(update={"model_name": model_name})
    with serving(create_app(trained.settings, small_spec, config)) as url:
        schema = httpx.get(f"{url}/openapi.json").json()
        # The request schema is the spec's: keys required, every model input documented.
        record = schema["components"]["schemas"]["Nycflights13Record"]
        assert set(record["required"]) == {*small_spec.entity_keys, small_spec.event_timestamp}
        assert set(small_spec.input_columns) <= set(record["properties"])
        done = subprocess.run(
            [
                str(BIN / "st"),
                "run",
                f"{url}/openapi.json",
                "--checks",
                os.environ.get("MLSYS_FUZZ_CHECKS", "all"),
                "--max-examples",
                "40",
                "--workers",
                "1",
                "--seed",
                "1",
            ],
            check=False,
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
