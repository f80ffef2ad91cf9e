"""Typed settings with embedded defaults that run on one machine with no servers."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Tracking(BaseModel):
    """Where runs and models go: all a core function that logs to MLflow is handed."""

    model_config = ConfigDict(frozen=True)

    uri: str
    experiment: str
    artifact_dir: Path = Field(description="Artifacts of a local store (a server picks its own).")


def default_workers() -> int:
    """Partitions worked on at once when nobody says: the cores, up to 4, so peak memory
    stays a few partitions' worth on any machine. More threads than cores add only GIL
    hand-offs and memory: Prefect's thread pool is unbounded by default, and started all 12
    of a year's mapped partitions at once on 2 cores."""
    return min(4, os.cpu_count() or 1)


class Settings(BaseSettings):
    """Where state lives and how to reach MLflow; override any field with ``MLSYS_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="MLSYS_", extra="ignore")

    state_dir: Path = Field(
        default=Path(".mlsys"), description="One git-ignored folder for all local state."
    )
    tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI; default sqlite:///<state_dir>/mlflow.db."
    )
    experiment: str = "mlsys"
    dataset: str | None = Field(
        default=None,
        description="Dataset reference (NAME, module:attr or file.py:attr) that flows and "
        "commands use when none is given.",
    )
    model_name: str | None = Field(
        default=None, description="Registered model; default: the dataset's (its spec says)."
    )
    task_runner: Literal["threads", "processes", "dask"] = Field(
        default="threads",
        description="Where partition-parallel tasks run: a thread pool, a process pool, or Dask.",
    )
    max_workers: int | None = Field(
        default=None,
        ge=1,
        description="Partitions processed at once (threads, processes or Dask workers); "
        "None: the cores, up to 4 (default_workers).",
    )
    dask_address: str | None = Field(
        default=None,
        description="Scheduler of an existing Dask cluster (tcp://host:8786); None starts a "
        "LocalCluster for the flow run.",
    )
    batch_rows: int = Field(
        default=65_536, ge=1, description="Rows per record batch in batch processing."
    )
    online_store: str | None = Field(
        default=None,
        description="The online store serving reads and materialization and the stream job "
        "write: redis://HOST:PORT/DB (shared by several machines and serving replicas) or "
        "sqlite:///PATH; default: the embedded SQLite file <state_dir>/online/features.db.",
    )
    optuna_storage: str | None = Field(
        default=None,
        description="Optuna storage URL for tuning studies (e.g. Postgres, so several machines "
        "join one study; set it here rather than as a flow parameter when it holds a "
        "password); default sqlite:///<state_dir>/optuna.db.",
    )

    @property
    def root(self) -> Path:
        return self.state_dir.expanduser().resolve()

    @property
    def lake_dir(self) -> Path:
        return self.root / "lake"

    @property
    def artifact_dir(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    @property
    def mlflow_uri(self) -> str:
        return self.tracking_uri or f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def workers(self) -> int:
        """The pool size partition-parallel stages use."""
        return self.max_workers or default_workers()

    @property
    def tracking(self) -> Tracking:
        return Tracking(
            uri=self.mlflow_uri, experiment=self.experiment, artifact_dir=self.artifact_dir
        )

    def optuna_url(self, storage: str | None = None) -> str:
        """``storage`` as given, else ``MLSYS_OPTUNA_STORAGE``, else SQLite in the state
        folder (created here: SQLite creates the file, not its folder)."""
        if storage or self.optuna_storage:
            return storage or self.optuna_storage  # type: ignore[return-value]
        self.root.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{self.root / 'optuna.db'}"


class StateFolderError(OSError):
    """A folder the platform keeps state in cannot be created or written (one line)."""


def ensure_writable_folders(folders: dict[str, Path]) -> None:
    """Create each folder (with its parents) and write a temporary file in it, so a wrong
    path fails at once with one line naming the setting, not minutes later deep inside a
    server that could not start. ``folders`` maps a setting's name to its path."""
    for setting, folder in folders.items():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as err:
            reason = err.strerror or type(err).__name__
            raise StateFolderError(
                f"{setting}={folder} cannot be created or written ({reason}); "
                f"point {setting} at a writable folder"
            ) from None
