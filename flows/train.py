"""Stage 4: train on a feature-set version and log the run to MLflow."""

from __future__ import annotations

from prefect.deployments import run_deployment

from flows import train_node
from flows.embedded import flow
from mlsys_core.config import Settings
from mlsys_core.datasets import SpecRef, spec_or_default
from mlsys_core.features.store import FeatureSetRef
from mlsys_core.training.config import TrainConfig
from mlsys_core.training.distributed import LaunchConfig
from mlsys_core.training.run import TrainedModel
from tasks.features import latest_feature_set
from tasks.metrics import metered
from tasks.training import train_model


@flow(name="train", log_prints=True)
@metered()
def train(
    features: FeatureSetRef | None = None,
    config: TrainConfig = TrainConfig(),
    spec: SpecRef | None = None,
    launch: LaunchConfig = LaunchConfig(),
) -> TrainedModel:
    """Train on ``features`` (default: the newest feature set of ``spec``, a dataset reference
    or spec, by default the settings' dataset), in-process or as a torchrun group (``launch``:
    strategy, processes per node, nodes, rendezvous). With several nodes this run is one of
    them; ``launch.other_nodes="pool"`` starts the others as ``train-node`` deployment runs on
    the work pool."""
    settings = Settings()
    features = features or latest_feature_set(
        spec_or_default(spec, settings.dataset).name, settings
    )
    if launch.nnodes > 1 and launch.other_nodes == "pool":
        # This run is one node; the pool's workers (one per machine) run the others.
        for node in range(1, launch.nnodes):
            run = run_deployment(
                train_node.DEPLOYMENT,
                parameters={"features": features, "config": config, "launch": launch},
                timeout=0,  # do not wait here: every node must be up for the rendezvous
                as_subflow=True,
            )
            print(f"node {node} of {launch.nnodes}: train-node run {run.name} ({run.id})")
    trained = train_model(features, config, settings, launch)
    if trained.resumed_from_step is not None:
        print(f"resumed from the checkpoint at optimizer step {trained.resumed_from_step}")
    print(
        f"MLflow run {trained.run_id}: test AUC {trained.metrics['test_auc']:.4f}, "
        f"log loss {trained.metrics['test_log_loss']:.4f}, ECE {trained.metrics['test_ece']:.4f}"
    )
    return trained
