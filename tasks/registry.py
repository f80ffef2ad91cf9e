"""Registry tasks: register, challenge the champion, move aliases."""

from __future__ import annotations

from prefect import task

from mlsys_core.config import Settings
from mlsys_core.data.lake import Lake
from mlsys_core.registry import promotion
from mlsys_core.registry.promotion import PromotionDecision, RegisteredVersion
from mlsys_core.tracking import configure_mlflow
from mlsys_core.training.run import TrainedModel, held_out


@task
def register_model(trained: TrainedModel, name: str, settings: Settings) -> RegisteredVersion:
    """Register the run's model as a new version, tagged with lineage, alias ``challenger``."""
    return promotion.register_version(configure_mlflow(settings), name, trained)


@task
def challenge_champion(
    candidate: RegisteredVersion, trained: TrainedModel, margin: float, settings: Settings
) -> PromotionDecision:
    """Score challenger and champion on the same test rows and decide."""
    features, labels = held_out(trained.feature_set, Lake(settings.lake_dir))
    client = configure_mlflow(settings)
    return promotion.challenge_champion(client, candidate, features, labels, margin)


@task
def apply_decision(
    candidate: RegisteredVersion, decision: PromotionDecision, settings: Settings
) -> None:
    promotion.apply_decision(configure_mlflow(settings), candidate, decision)
