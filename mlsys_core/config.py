"""Typed settings with embedded defaults that run on one machine with no servers."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    max_workers: int | None = Field(default=None, ge=1, description="Pool size; None: auto.")
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
