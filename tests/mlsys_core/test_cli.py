"""The installed ``mlsys`` entry point dispatches to its subcommands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mlsys_core.cli import main


def test_settings_command_prints_resolved_state(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLSYS_STATE_DIR", str(tmp_path))
    assert main(["settings"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["state_dir"] == str(tmp_path.resolve())
    assert printed["tracking_uri"] == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"


def test_console_script_is_installed_and_runs(tmp_path):
    script = Path(sys.executable).with_name("mlsys")
    out = subprocess.run(
        [str(script), "settings"],
        capture_output=True,
        text=True,
        env={"MLSYS_STATE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        check=True,
    )
    assert json.loads(out.stdout)["lake_dir"] == str(tmp_path.resolve() / "lake")
