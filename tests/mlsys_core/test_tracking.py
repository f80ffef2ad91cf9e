"""MLflow wiring: a SQLite store and artifacts inside the state folder, never in ./mlruns."""

from __future__ import annotations

import re
import subprocess
from importlib.metadata import version
from pathlib import Path

import mlflow
import pytest

import mlsys_core
from mlsys_core.config import Settings, Tracking
from mlsys_core.tracking import code_version, configure_mlflow, download_model, tracking_client

REPO = Path(mlsys_core.__file__).resolve().parents[1]


def _files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One state folder (one SQLite store, ~5 s to create) for the module's tests."""
    return tmp_path_factory.mktemp("tracking_state")


def test_configure_mlflow_keeps_store_and_artifacts_in_the_state_dir(
    state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(state_dir=state_dir)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)

    client = configure_mlflow(settings.tracking)
    with mlflow.start_run() as run:
        mlflow.log_text("hello", "notes/hello.txt")
        mlflow.log_metric("m", 1.0)

    assert (settings.root / "mlflow.db").is_file()
    experiment = client.get_experiment_by_name(settings.experiment)
    assert experiment is not None
    assert experiment.artifact_location == settings.artifact_dir.as_uri()
    assert run.info.experiment_id == experiment.experiment_id
    assert run.info.artifact_uri.startswith(settings.artifact_dir.as_uri() + "/")
    logged = [p for p in _files_under(settings.artifact_dir) if p.name == "hello.txt"]
    assert len(logged) == 1
    assert logged[0].read_text() == "hello"
    # Nothing at all lands in the folder the process runs in (no ./mlruns, no ./mlartifacts).
    assert list(cwd.iterdir()) == []


def test_configure_mlflow_points_tracking_and_registry_at_the_settings(state_dir: Path) -> None:
    settings = Settings(state_dir=state_dir)
    configure_mlflow(settings.tracking)
    assert mlflow.get_tracking_uri() == settings.mlflow_uri
    assert mlflow.get_registry_uri() == settings.mlflow_uri


def test_a_tracking_client_registers_in_its_own_store(
    state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After ``configure_mlflow`` for one store (and its exported MLFLOW_* variables), a
    client of another store keeps runs and model versions together in that other store."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # set_*_uri export these; undo at the end
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "")
    configure_mlflow(Settings(state_dir=state_dir).tracking)
    other = f"sqlite:///{tmp_path / 'other.db'}"
    client = tracking_client(other)
    assert client._registry_uri == other
    experiment = client.create_experiment("x", artifact_location=(tmp_path / "a").as_uri())
    run = client.create_run(experiment)
    client.create_registered_model("m")
    version = client.create_model_version("m", "file:///nowhere", run_id=run.info.run_id)
    alias = client.get_model_version("m", version.version)
    assert client.get_run(alias.run_id).info.run_id == run.info.run_id
    assert not configure_mlflow(Settings(state_dir=state_dir).tracking).search_registered_models(
        filter_string="name = 'm'"
    )


def test_configure_mlflow_is_idempotent(state_dir: Path) -> None:
    settings = Settings(state_dir=state_dir, experiment="idempotent")
    client = configure_mlflow(settings.tracking)
    first = client.get_experiment_by_name(settings.experiment).experiment_id
    client = configure_mlflow(settings.tracking)
    experiments = [e for e in client.search_experiments() if e.name == settings.experiment]
    assert [e.experiment_id for e in experiments] == [first]


def test_configure_mlflow_uses_the_configured_experiment_name(state_dir: Path) -> None:
    settings = Settings(state_dir=state_dir, experiment="other-exp")
    client = configure_mlflow(settings.tracking)
    with mlflow.start_run() as run:
        pass
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "other-exp"
    assert experiment.artifact_location == settings.artifact_dir.as_uri()


def test_code_version_is_the_commit_of_the_mlsys_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit of the code, not of whatever git repository the process runs in."""
    head = subprocess.run(
        ["git", "log", "-1", "--format=%H"], cwd=REPO, capture_output=True, text=True, check=False
    )
    if head.returncode != 0:
        pytest.skip("the mlsys code is not a git checkout here")
    other = tmp_path / "other-repo"
    other.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], cwd=other, check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], cwd=other, check=True)
    monkeypatch.chdir(other)

    result = code_version()
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", result)
    assert result.removesuffix("-dirty") == head.stdout.strip()


def test_code_version_falls_back_to_the_package_version_without_git(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "")  # no git executable can be found
    assert code_version() == f"mlsys=={version('mlsys')}"


def test_a_model_uri_resolves_in_the_clients_own_store(
    state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the process pointed at one store, ``download_model`` reads another store's
    version (by number or alias) and logged model (``models:/m-<id>``) through its client."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "")
    configure_mlflow(Settings(state_dir=state_dir).tracking)
    client = tracking_client(f"sqlite:///{tmp_path / 'other.db'}")
    experiment = client.create_experiment("x", artifact_location=(tmp_path / "a").as_uri())
    files = tmp_path / "model"
    files.mkdir()
    (files / "MLmodel").write_text("flavors: {}\n")
    client.create_registered_model("m")
    version = client.create_model_version("m", files.as_uri()).version
    client.set_registered_model_alias("m", "champion", version)
    logged = client.create_logged_model(experiment)
    Path(logged.artifact_location.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
    (Path(logged.artifact_location.removeprefix("file://")) / "MLmodel").write_text("x: 1\n")
    for uri, text in [
        (f"models:/m/{version}", "flavors: {}\n"),
        ("models:/m@champion", "flavors: {}\n"),
        (f"models:/{logged.model_id}", "x: 1\n"),
    ]:
        got = download_model(client, uri, str(tmp_path / "dl" / str(len(text))), "MLmodel")
        assert Path(got).read_text() == text, uri
    with pytest.raises(ValueError, match="names no version"):
        download_model(client, "models:/m")


def test_configure_mlflow_needs_only_a_tracking_and_makes_its_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No settings: a store and an artifact folder under folders that do not exist yet."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "")
    store = tmp_path / "not" / "yet" / "mlflow.db"
    tracking = Tracking(
        uri=f"sqlite:///{store}", experiment="plain", artifact_dir=tmp_path / "arts"
    )
    client = configure_mlflow(tracking)
    assert store.is_file()
    experiment = client.get_experiment_by_name("plain")
    assert experiment.artifact_location == (tmp_path / "arts").as_uri()
    assert mlflow.get_tracking_uri() == tracking.uri
