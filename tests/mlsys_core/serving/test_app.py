"""The inference API over real HTTP: predictions, health, metrics and bad input."""

from __future__ import annotations

import math

import httpx
import numpy as np
import pytest

from mlsys_core.serving.app import create_app
from mlsys_core.serving.models import load_version
from mlsys_core.training.run import model_input_frame
from tests.mlsys_core.serving.conftest import records, register, serve_config, serving

pytestmark = pytest.mark.slow  # the shared fixture trains a real model


def test_predict_matches_the_registered_model(trained, client, model_name, small_spec, sample_rows):
    version = register(client, model_name, trained.model.model_uri, "champion")
    config = serve_config("single").model_copy(update={"model_name": model_name})
    app = create_app(trained.settings, small_spec, config)
    batch = records(sample_rows, small_spec, 20)
    with serving(app) as url:
        one = httpx.post(f"{url}/predict", json=batch[0])
        many = httpx.post(f"{url}/predict", json={"records": batch})
    assert one.status_code == 200, one.text
    assert many.status_code == 200, many.text
    got = many.json()["predictions"]
    assert len(got) == 20
    assert {p["model_version"] for p in got} == {version}
    assert {p["variant"] for p in got} == {"champion"}
    assert {p["model_name"] for p in got} == {model_name}
    # The same numbers as the registered pyfunc on the training-time input frame.
    loaded = load_version(client, model_name, version)
    frame = model_input_frame(sample_rows.head(20), small_spec)
    expected = loaded.python_model.predict(None, frame)
    np.testing.assert_allclose([p["raw_probability"] for p in got], expected, rtol=1e-5)
    calibrated = loaded.calibration.apply(expected)
    np.testing.assert_allclose([p["probability"] for p in got], calibrated, rtol=1e-9)
    assert loaded.calibrated
    for p in got:
        assert p["prediction"] == int(p["probability"] >= 0.5)
        assert math.isclose(p["confidence"], max(p["probability"], 1 - p["probability"]))
    assert one.json()["predictions"][0]["raw_probability"] == pytest.approx(expected[0], rel=1e-5)
