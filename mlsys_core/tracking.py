"""MLflow wiring: the embedded default is a SQLite store with artifacts under the state dir."""

from __future__ import annotations

import subprocess
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from mlsys_core import __version__
from mlsys_core.config import Tracking


def tracking_client(uri: str) -> MlflowClient:
    """A client of the store at ``uri`` for runs *and* the registry.

    ``MlflowClient(uri)`` alone takes its registry from the process: the last
    ``mlflow.set_registry_uri`` (which ``configure_mlflow`` calls for another store, in a
    test or a long-lived process) or an inherited ``MLFLOW_REGISTRY_URI``. Its runs would
    then live in one store and its model versions in another (a champion whose run the
    tracking server does not have).
    """
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def configure_mlflow(tracking: Tracking) -> MlflowClient:
    """Point MLflow at ``tracking``'s store and make sure the experiment exists.

    With a local store (``sqlite:///``, a folder) the experiment gets an explicit artifact
    location, or MLflow would write artifacts to ``./mlruns`` in whatever folder the process
    runs in. A tracking server (``http(s)://``) picks the location itself: with
    ``--serve-artifacts`` every client uploads through it (``mlflow-artifacts:/``), so a
    process on another machine reads the same model, never a path local to the writer.
    """
    uri = tracking.uri
    if uri.startswith("sqlite:///"):  # SQLite creates the file, not its folder
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = tracking_client(uri)
    if client.get_experiment_by_name(tracking.experiment) is None:
        if uri.startswith(("http://", "https://")):
            client.create_experiment(tracking.experiment)
        else:
            tracking.artifact_dir.mkdir(parents=True, exist_ok=True)
            client.create_experiment(
                tracking.experiment, artifact_location=tracking.artifact_dir.as_uri()
            )
    mlflow.set_experiment(tracking.experiment)
    return client


def logged_model_id(model_uri: str) -> str | None:
    """The id in a logged model's URI, ``models:/m-<id>``; None for any other URI."""
    ref = model_uri.removeprefix("models:/")
    return ref if ref != model_uri and ref.startswith("m-") and "/" not in ref else None


def model_source(client: MlflowClient, model_uri: str) -> str:
    """Where a model's files are, resolved in ``client``'s own stores.

    ``models:/...`` handed to MLflow's fluent API resolves in the process's registry (see
    ``tracking_client``): another store's version, or "not found". ``models:/<name>/<n>``,
    ``models:/<name>@<alias>`` and a logged model's ``models:/m-<id>`` resolve here; any
    other URI (``runs:/``, a path) is its own source.
    """
    ref = model_uri.removeprefix("models:/")
    if ref == model_uri:
        return model_uri
    if (model_id := logged_model_id(model_uri)) is not None:
        return client.get_logged_model(model_id).artifact_location
    if "@" in ref:
        name, alias = ref.split("@", 1)
        version = str(client.get_model_version_by_alias(name, alias).version)
    elif "/" in ref:
        name, version = ref.rsplit("/", 1)
    else:
        raise ValueError(
            f"{model_uri!r} names no version: models:/<name>/<version> or models:/<name>@<alias>"
        )
    return client.get_model_version_download_uri(name, version)


def download_model(
    client: MlflowClient, model_uri: str, dst: str | None = None, path: str = ""
) -> str:
    """A model's files (or one of them, ``path``) from ``client``'s stores into ``dst``
    (default: a new temporary folder)."""
    source = model_source(client, model_uri)
    if path:
        source = f"{source.rstrip('/')}/{path}"
    return mlflow.artifacts.download_artifacts(
        artifact_uri=source, dst_path=dst, tracking_uri=client.tracking_uri
    )


def code_version() -> str:
    """The git commit of the code, marked ``-dirty`` with local changes; else the package."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=here, capture_output=True, text=True, check=True, timeout=10
        )
        return done.stdout.strip()

    try:
        sha = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return f"mlsys=={__version__}"
    return f"{sha}-dirty" if dirty else sha
