"""``mlsys serve`` options: a JSON ServeConfig with the command line on top."""

from __future__ import annotations

import json

import pytest

from mlsys_core.cli import build_parser
from mlsys_core.commands.serve import build_config


def test_options_build_the_serve_config(tmp_path):
    path = tmp_path / "serve.json"
    path.write_text(json.dumps({"rollout": {"mode": "canary", "canary": {"max_p99_ms": 80}}}))
    args = build_parser().parse_args(
        ["serve", "--config", str(path), "--share", "0.2", "--poll-interval", "2"]
    )
    config = build_config(args)
    assert config.rollout.mode == "canary"
    assert config.rollout.canary.share == 0.2 and config.rollout.canary.max_p99_ms == 80
    assert config.rollout.poll_interval_s == 2
    with pytest.raises(ValueError, match="--share"):
        build_config(build_parser().parse_args(["serve", "--mode", "blue_green", "--share", "1"]))
