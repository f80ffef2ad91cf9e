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


def test_train_command_prints_this_nodes_torchrun_command(settings, make_feature_set, capsys):
    features = make_feature_set(settings)
    argv = ["train", "--strategy", "ddp", "--nnodes", "2", "--nproc-per-node", "2",
            "--rdzv-endpoint", "node-a:29400", "--config", '{"epochs": 3}',
            "--print-command"]  # fmt: skip
    assert main(argv) == 0
    command = capsys.readouterr().out.split()
    assert command[1:4] == ["-m", "torch.distributed.run", "--nnodes=2"]
    assert "--rdzv-endpoint=node-a:29400" in command
    assert command[-3:-1] == ["-m", "mlsys_core.training.worker"]
    job = json.loads(Path(command[-1].removeprefix("--job=")).read_text())
    assert job["feature_set"]["snapshot"]["snapshot_id"] == features.version
    assert job["config"]["epochs"] == 3
    assert job["launch"]["strategy"] == "ddp"
    assert f"--rdzv-id={job['key']}" in command  # the same on every node


def test_train_command_rejects_a_bad_launch(settings, capsys):
    assert main(["train", "--strategy", "single", "--nproc-per-node", "2"]) == 2
    assert "strategy 'single' runs one process" in capsys.readouterr().err


def test_features_get_reads_the_online_store(tmp_path, monkeypatch, capsys):
    import pandas as pd  # noqa: PLC0415

    from mlsys_core.config import Settings  # noqa: PLC0415
    from mlsys_core.features.online import OnlineStore, online_store_path  # noqa: PLC0415
    from mlsys_core.spec.definitions import Aggregation, Entity, WindowView  # noqa: PLC0415

    monkeypatch.setenv("MLSYS_STATE_DIR", str(tmp_path))
    view = WindowView(
        name="v",
        source="s",
        entity=Entity(name="carrier", join_keys=["carrier"]),
        timestamp="at",
        aggregations=[Aggregation(name="n_1d", function="count", column="x", window="P1D")],
    )
    events = pd.DataFrame(
        {"carrier": ["UA", "UA", "AA"], "at": pd.to_datetime(["2013-01-01"] * 3, utc=True)}
    ).assign(x=1.0)
    OnlineStore(online_store_path(Settings().root)).materialize(
        [view], {"s": events}, as_of=pd.Timestamp("2013-01-01T12:00Z").to_pydatetime()
    )
    assert main(["features", "get", "carrier=UA"]) == 0
    assert json.loads(capsys.readouterr().out) == {"n_1d": 2}
    assert main(["features", "get", "carrier=ZZ", "--names", "n_1d"]) == 0
    assert json.loads(capsys.readouterr().out) == {"n_1d": 0}
    assert main(["features", "get", "carrier=UA", "--names", "nope"]) == 2
    assert "no materialized view holds ['nope']" in capsys.readouterr().err
    assert main(["features", "get", "UA"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_building_the_command_line_loads_no_heavy_library():
    """Every ``mlsys`` call builds the whole parser first: a command module that imports
    torch or MLflow at its top makes every command, ``--help`` included, pay for it."""
    heavy = ["torch", "mlflow", "prefect", "scipy", "matplotlib", "sklearn", "optuna"]
    code = (
        "import json, sys\nfrom mlsys_core.cli import build_parser\n"
        "parser = build_parser()\n"
        f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))\n"
        "print(json.dumps(sorted(parser._subparsers._group_actions[0].choices)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert json.loads(out[0]) == []
    # Every command was registered, the flows' ones (entry points) included.
    commands = set(json.loads(out[1]))
    assert {"lineage", "history", "registry", "features", "pipeline", "tune"} <= commands
