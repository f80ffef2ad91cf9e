"""Training tasks."""

from __future__ import annotations

from prefect import Task
from prefect.client.schemas.objects import TaskRun
from prefect.states import State

from mlsys_core.config import Settings
from mlsys_core.data.lake import Lake
from mlsys_core.features.store import FeatureSetRef
from mlsys_core.tracking import configure_mlflow
from mlsys_core.training import launch as launch_core
from mlsys_core.training import run
from mlsys_core.training.config import TrainConfig
from mlsys_core.training.distributed import LaunchConfig
from mlsys_core.training.run import TrainedModel
from tasks.base import task


def retry_on_lost_workers(task: Task, task_run: TaskRun, state: State) -> bool:
    """Retry when workers or I/O were lost (the retry resumes from the checkpoint); a worker
    that raised on our code or data would fail the same way again."""
    try:
        state.result()
    except (launch_core.WorkersLost, OSError, TimeoutError):
        return True
    except Exception:
        return False
    return False


@task(retries=1, retry_delay_seconds=5, retry_condition_fn=retry_on_lost_workers)
def train_model(
    features: FeatureSetRef,
    config: TrainConfig,
    settings: Settings,
    launch: LaunchConfig | None = None,
) -> TrainedModel:
    """Train on a feature-set version (in-process or through torchrun) and log the run and
    pyfunc model to MLflow. Checkpoints are keyed by feature-set version and config, so a
    retry resumes where the failed attempt stopped."""
    return launch_core.train(features, config, settings, launch)


@task
def latest_trained(settings: Settings) -> TrainedModel:
    client = configure_mlflow(settings.tracking)
    return run.latest_trained(client, settings.experiment, Lake(settings.lake_dir))
