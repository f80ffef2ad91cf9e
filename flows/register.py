"""Stage 5: register the model, then move ``champion`` only if the challenger wins."""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel, ConfigDict

from mlsys_core.config import Settings
from mlsys_core.registry.promotion import PromotionDecision, RegisteredVersion
from mlsys_core.training.run import TrainedModel
from tasks.registry import apply_decision, challenge_champion, register_model
from tasks.training import latest_trained


class RegistrationResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    version: RegisteredVersion
    decision: PromotionDecision


@flow(name="register", log_prints=True)
def register(
    trained: TrainedModel | None = None,
    model_name: str | None = None,
    promotion_margin: float = 0.0,
) -> RegistrationResult:
    """Register ``trained`` (default: the newest training run) as the challenger and
    promote it to champion if it beats the champion on the same test data."""
    settings = Settings()
    name = model_name or settings.model_name
    trained = trained or latest_trained(settings)
    version = register_model(trained, name, settings)
    decision = challenge_champion(version, trained, promotion_margin, settings)
    apply_decision(version, decision, settings)
    if decision.promote:
        print(f"{name} v{version.version} is now @champion: {decision.reason}")
    else:
        print(f"{name} v{version.version} stays @challenger: {decision.reason}")
    return RegistrationResult(version=version, decision=decision)
