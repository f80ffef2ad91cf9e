"""``mlsys prefect-server``: a real Prefect server kept for one Prefect home, found by later
flow runs of that home instead of a temporary server, and stopped without leftovers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from mlsys_core.stack import prefect_server, process
from tests.services import seed_prefect_home

pytestmark = [pytest.mark.slow, pytest.mark.integration]

MLSYS = str(Path(sys.executable).parent / "mlsys")
FLOW = """
from mlsys_core.stack.prefect_server import use_local_server
print("API", use_local_server(), flush=True)
from prefect import flow

@flow(name="reuse-probe")
def probe():
    return 1

probe()
"""


def test_up_is_found_by_later_flow_runs_and_down_stops_it(tmp_path: Path, prefect_db: Path):
    home = seed_prefect_home(tmp_path / "prefect", prefect_db)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env |= {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}

    def mlsys(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [MLSYS, *args], env=env, capture_output=True, text=True, timeout=300, check=False
        )

    assert mlsys("prefect-server", "status").returncode == 1  # nothing yet
    up = mlsys("prefect-server", "up")
    assert up.returncode == 0, up.stderr
    api = prefect_server.running_local_server(home)
    assert api is not None and api in up.stdout
    pid = json.loads((home / prefect_server.LOCAL_RECORD).read_text())["pid"]
    try:
        # Prefect's app with SQLite writes begun IMMEDIATE (no 503 "database is locked"
        # stalls, tests/flows/test_embedded.py), and the UI, pointed at this API.
        assert "flows.embedded:create_app" in psutil.Process(pid).cmdline()
        base = api.removesuffix("/api")
        assert "<!DOCTYPE html>" in httpx.get(f"{base}/", timeout=30).text
        assert httpx.get(f"{base}/ui-settings", timeout=30).json()["api_url"] == api

        again = mlsys("prefect-server", "up")  # idempotent: the same server
        assert again.returncode == 0 and api in again.stdout
        assert json.loads((home / prefect_server.LOCAL_RECORD).read_text())["pid"] == pid

        # A flow run in another process of this Prefect home lands in that server's
        # database: its run is listed by the server's API after the process has exited.
        run = subprocess.run(
            [sys.executable, "-c", FLOW],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        assert f"API {api}" in run.stdout
        body = {"flows": {"name": {"any_": ["reuse-probe"]}}}
        runs = prefect_server.call(f"{api}/flow_runs/filter", body)
        assert [r["state_type"] for r in runs] == ["COMPLETED"]

        # The server batches its task-run writes (SERVER_SETTINGS), as it says.
        recorder = prefect_server.call(f"{api}/admin/settings")["server"]["services"]
        assert recorder["task_run_recorder"]["batch_size"] == 100

        # Another home asking for the same port: one clear line, no traceback, no record.
        port = api.rsplit(":", 1)[1].split("/")[0]
        other = tmp_path / "other"
        taken = subprocess.run(
            [MLSYS, "prefect-server", "up", "--port", port],
            env={**env, "PREFECT_HOME": str(other)},
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert taken.returncode == 1, taken.stdout
        assert "mlsys prefect-server up:" in taken.stderr and "Traceback" not in taken.stderr
        assert prefect_server.running_local_server(other) is None

        # A configured API wins over the kept server.
        assert prefect_server.use_local_server({**env, "PREFECT_API_URL": "http://x"}) is None
    finally:
        down = mlsys("prefect-server", "down")
    assert down.returncode == 0 and "stopped" in down.stdout
    assert not process.alive(pid)
    assert prefect_server.running_local_server(home) is None
    assert mlsys("prefect-server", "status").returncode == 1
    assert "none was running" in mlsys("prefect-server", "down").stdout


def test_the_environment_wins_over_the_server_settings(tmp_path: Path):
    name = "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE"
    assert prefect_server.prefect_env(tmp_path, "http://x/api", base={})[name] == "100"
    chosen = prefect_server.prefect_env(tmp_path, "http://x/api", base={name: "5"})
    assert chosen[name] == "5"


def test_a_record_of_a_dead_process_is_not_a_server(tmp_path: Path):
    """A record left by a server that died (or a reused pid) never points a flow at a
    dead URL: the flow would fail instead of starting its temporary server."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    process.PidFile(tmp_path / prefect_server.LOCAL_RECORD).write(
        dead.pid, api="http://127.0.0.1:9/api"
    )
    env = {"PREFECT_HOME": str(tmp_path)}
    assert prefect_server.running_local_server(tmp_path) is None
    assert prefect_server.use_local_server(env) is None and "PREFECT_API_URL" not in env


def test_a_command_keeps_prefect_in_the_state_folder_unless_told_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """``mlsys pipeline`` run as the own-dataset guide runs it, with no Prefect setting,
    kept Prefect's database in ``~/.prefect`` and sent telemetry (an ERROR on a machine
    without the internet): ``make demo``'s defaults now hold for every command."""
    state, home = tmp_path / "state", tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLSYS_"))}
    env |= {"MLSYS_STATE_DIR": str(state), "HOME": str(home)}
    status = subprocess.run(
        [MLSYS, "prefect-server", "status"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert status.returncode == 1 and status.stdout.strip() == f"not running for {state}/prefect"

    fresh: dict[str, str] = {"HOME": str(home)}
    prefect_server.state_folder_prefect(state, fresh)
    assert fresh == {
        "HOME": str(home),
        "PREFECT_HOME": str(state / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    # Prefect, imported in a state folder not made yet, finds its home there: it makes only
    # the last folder, and warned "Failed to create the Prefect home directory".
    new_state = tmp_path / "new" / "state"
    script = (
        "import sys; from pathlib import Path; from mlsys_core.stack import prefect_server; "
        "prefect_server.state_folder_prefect(Path(sys.argv[1])); "
        "import prefect.context, prefect.settings; print(prefect.settings.PREFECT_HOME.value())"
    )
    imported = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-c", script, str(new_state)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == str(new_state / "prefect")
    assert (new_state / "prefect").is_dir()
    # A user's Prefect profiles (a server or Prefect Cloud they chose) still apply.
    (home / ".prefect").mkdir(parents=True)
    (home / ".prefect" / "profiles.toml").write_text('active = "default"\n')
    monkeypatch.setenv("HOME", str(home))
    with_profiles: dict[str, str] = {}
    prefect_server.state_folder_prefect(state, with_profiles)
    assert with_profiles["PREFECT_PROFILES_PATH"] == str(home / ".prefect" / "profiles.toml")
    # What the environment says wins.
    told = {"PREFECT_HOME": "/elsewhere", "PREFECT_SERVER_ANALYTICS_ENABLED": "true"}
    prefect_server.state_folder_prefect(state, told)
    assert told == {"PREFECT_HOME": "/elsewhere", "PREFECT_SERVER_ANALYTICS_ENABLED": "true"}
