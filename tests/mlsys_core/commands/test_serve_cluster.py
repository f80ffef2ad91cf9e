"""``mlsys serve-cluster`` turns bad options and a cluster that never gets ready into one
clear line and exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlsys_core.cli import main
from mlsys_core.commands.serve_cluster import SERVE_CONFIG_ENV, replica_config
from mlsys_core.net import free_port
from mlsys_core.serving.app import CONFIG_ENV
from mlsys_core.serving.config import ServeConfig

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--strategy", "weighted"], "needs weights"),
        (["--strategy", "weighted", "--weights", "3,x"], "must be integers"),
        (["--replicas", "3", "--strategy", "least_conn", "--weights", "1,2"], "2 weights for 3"),
        (["--config", '{"health_interval_s": -1}'], "health_interval_s"),
        (["--config", '{"unknown": 1}'], "unknown"),
        (["--serve-config", "/nonexistent.json"], "bad --serve-config"),
    ],
)
def test_bad_options_are_one_line(options, message, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MLSYS_STATE_DIR", str(tmp_path))
    assert main(["serve-cluster", *options]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "cluster").exists()  # nothing was started


def test_replicas_never_ready_is_a_clear_error(capsys, tmp_path, monkeypatch):
    flags = tmp_path / "flags"
    flags.mkdir()
    (flags / "not-ready-0").touch()
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("ECHO_FLAG_DIR", str(flags))
    config = {"app": "tests.mlsys_core.serving.echo_app:create_app", "startup_timeout_s": 4}
    args = ["serve-cluster", "--replicas", "1", "--port", str(free_port())]
    args += ["--folder", str(tmp_path / "c"), "--config", json.dumps(config)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "no replica became ready in 4 s" in err
    status = json.loads((tmp_path / "c" / "status.json").read_text())
    assert status["replicas"][0]["pid"] is None  # the replica was stopped again


def test_serve_config_reaches_the_app_under_its_variable(tmp_path):
    assert SERVE_CONFIG_ENV == CONFIG_ENV
    assert replica_config(None, None, None) is None  # the replicas' defaults
    good = tmp_path / "serve.json"
    good.write_text('{"max_body_bytes": 4096}')
    text = replica_config(good, "churn", "digits")
    assert ServeConfig.model_validate_json(text) == ServeConfig(
        max_body_bytes=4096, model_name="churn", spec="digits"
    )
    good.write_text('{"max_body_bytes": 1}')
    with pytest.raises(ValueError, match="max_body_bytes"):
        replica_config(good, None, None)
    with pytest.raises(LookupError, match="no dataset 'nope'"):
        replica_config(None, None, "nope")
