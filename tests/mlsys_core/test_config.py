"""Settings: embedded defaults inside one state folder, overridable with MLSYS_ variables."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlsys_core.config import Settings

FIELDS = tuple(name.upper() for name in Settings.model_fields)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No MLSYS_ variable set, and an empty working folder; returns that folder."""
    for field in FIELDS:
        monkeypatch.delenv(f"MLSYS_{field}", raising=False)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def test_defaults_put_all_state_in_one_folder_under_cwd(clean_env: Path) -> None:
    settings = Settings()
    root = Path(os.path.realpath(clean_env)) / ".mlsys"
    assert settings.root == root
    assert settings.root.is_absolute()
    assert settings.experiment == "mlsys"
    # No dataset is wired in: flows and commands name one, or MLSYS_DATASET does.
    assert settings.dataset is None and settings.model_name is None
    for folder in (settings.lake_dir, settings.artifact_dir, settings.reports_dir):
        assert folder.parent == root
    assert len({settings.lake_dir, settings.artifact_dir, settings.reports_dir}) == 3


def test_default_tracking_uri_is_an_absolute_sqlite_file_in_the_state_dir(
    clean_env: Path,
) -> None:
    settings = Settings()
    db = os.path.join(os.path.realpath(clean_env), ".mlsys", "mlflow.db")
    # sqlite:/// + an absolute path: four slashes, the SQLAlchemy spelling of an absolute file.
    assert settings.mlflow_uri == "sqlite:///" + db
    assert settings.mlflow_uri.startswith("sqlite:////")


def test_env_variables_override_every_field(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "elsewhere"
    monkeypatch.setenv("MLSYS_STATE_DIR", str(state))
    monkeypatch.setenv("MLSYS_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.setenv("MLSYS_EXPERIMENT", "exp-from-env")
    monkeypatch.setenv("MLSYS_MODEL_NAME", "model-from-env")
    settings = Settings()
    assert settings.root == Path(os.path.realpath(state))
    assert settings.lake_dir.parent == settings.root
    assert settings.mlflow_uri == "http://127.0.0.1:5000"
    assert settings.experiment == "exp-from-env"
    assert settings.model_name == "model-from-env"


def test_default_tracking_uri_follows_an_overridden_state_dir(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "from-env"
    monkeypatch.setenv("MLSYS_STATE_DIR", str(state))
    expected = "sqlite:///" + os.path.join(os.path.realpath(state), "mlflow.db")
    assert Settings().mlflow_uri == expected


def test_explicit_arguments_win_over_the_environment(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLSYS_STATE_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("MLSYS_EXPERIMENT", "from-env")
    settings = Settings(state_dir=tmp_path / "arg", experiment="from-arg")
    assert settings.root == Path(os.path.realpath(tmp_path / "arg"))
    assert settings.experiment == "from-arg"


def test_unknown_mlsys_variables_are_ignored(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLSYS_NOT_A_SETTING", "1")
    assert Settings().experiment == "mlsys"


def test_state_dir_expands_the_home_folder(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("MLSYS_STATE_DIR", "~/mlsys-state")
    assert Settings().root == Path(os.path.realpath(home)) / "mlsys-state"


def test_reading_settings_writes_nothing(clean_env: Path) -> None:
    settings = Settings()
    _ = (settings.root, settings.lake_dir, settings.mlflow_uri)
    assert list(clean_env.iterdir()) == []
