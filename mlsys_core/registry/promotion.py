"""Registering a trained model and moving the ``champion`` alias only on evidence.

Aliases, never the deprecated stage API: ``challenger`` marks the newest candidate and
``champion`` the version that serves. Registering and loading go through MLflow's fluent
API, so pass the client that ``tracking.configure_mlflow`` returned: it also points the
fluent API at the same store.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, ConfigDict

from mlsys_core.training.metrics import binary_metrics
from mlsys_core.training.run import TrainedModel

CHAMPION = "champion"
CHALLENGER = "challenger"


class RegisteredVersion(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    version: str
    run_id: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


class PromotionDecision(BaseModel):
    """Why the champion alias moved or stayed, with the numbers behind it."""

    model_config = ConfigDict(frozen=True)

    promote: bool
    reason: str
    challenger_auc: float
    champion_auc: float | None = None
    champion_version: str | None = None
    margin: float = 0.0


def register_version(client: MlflowClient, name: str, trained: TrainedModel) -> RegisteredVersion:
    """Register the run's model and copy its lineage onto the version as tags."""
    run = client.get_run(trained.run_id)
    lineage = {k: v for k, v in run.data.tags.items() if k.startswith("mlsys.")}
    lineage |= {
        "mlsys.run_id": trained.run_id,
        "mlsys.test_auc": f"{trained.metrics['test_auc']:.6f}",
    }
    mv = mlflow.register_model(trained.model_uri, name, tags=lineage)
    client.set_registered_model_alias(name, CHALLENGER, mv.version)
    return RegisteredVersion(name=name, version=str(mv.version), run_id=trained.run_id)


def current_champion(client: MlflowClient, name: str) -> RegisteredVersion | None:
    try:
        mv = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
    return RegisteredVersion(name=name, version=str(mv.version), run_id=mv.run_id or "")


def score_auc(model_uri: str, features: pd.DataFrame, labels: np.ndarray) -> float:
    """Score a registered model on held-out rows through its pyfunc, as serving would."""
    proba = np.asarray(mlflow.pyfunc.load_model(model_uri).predict(features), dtype=float)
    return binary_metrics(labels, proba.reshape(-1))["auc"]


def decide_promotion(
    challenger_auc: float,
    champion_auc: float | None,
    champion_version: str | None = None,
    margin: float = 0.0,
) -> PromotionDecision:
    """Promote a first model, or a challenger that beats the champion by more than ``margin``
    on the same data. Equal is not better."""
    common = {
        "challenger_auc": challenger_auc,
        "champion_auc": champion_auc,
        "champion_version": champion_version,
        "margin": margin,
    }
    if champion_auc is None:
        return PromotionDecision(promote=True, reason="no champion yet", **common)
    if challenger_auc > champion_auc + margin:
        reason = f"challenger AUC {challenger_auc:.4f} > champion {champion_auc:.4f} + {margin}"
        return PromotionDecision(promote=True, reason=reason, **common)
    reason = f"challenger AUC {challenger_auc:.4f} <= champion {champion_auc:.4f} + {margin}"
    return PromotionDecision(promote=False, reason=reason, **common)


def challenge_champion(
    client: MlflowClient,
    candidate: RegisteredVersion,
    features: pd.DataFrame,
    labels: np.ndarray,
    margin: float = 0.0,
) -> PromotionDecision:
    """Score candidate and champion on the same held-out rows and decide."""
    challenger_auc = score_auc(candidate.uri, features, labels)
    champion = current_champion(client, candidate.name)
    if champion is None or champion.version == candidate.version:
        return decide_promotion(challenger_auc, None, margin=margin)
    try:
        champion_auc = score_auc(champion.uri, features, labels)
    except MlflowException as err:  # e.g. the input schema changed since the champion
        return PromotionDecision(
            promote=True,
            challenger_auc=challenger_auc,
            champion_version=champion.version,
            margin=margin,
            reason=f"champion v{champion.version} cannot score this data: {err}"[:500],
        )
    return decide_promotion(challenger_auc, champion_auc, champion.version, margin)


def apply_decision(
    client: MlflowClient, candidate: RegisteredVersion, decision: PromotionDecision
) -> None:
    """Record the decision on the version, and move ``champion`` if it says so."""
    client.set_model_version_tag(
        candidate.name, candidate.version, "mlsys.promotion", decision.model_dump_json()
    )
    if decision.promote:
        client.set_registered_model_alias(candidate.name, CHAMPION, candidate.version)
