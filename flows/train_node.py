"""One more node of a multi-node training: this machine's torchrun agent.

``flows/train.py`` submits ``nnodes - 1`` runs of the ``train-node`` deployment when its
launch config spans several nodes; each is picked up by a worker of the pool (on a stack
with one worker per machine, one per node), runs the same training job and joins the group
on the shared rendezvous endpoint. The node whose workers hold rank 0 logs the run; every
node returns its run id (a shared state folder shows rank 0's result to all of them).
"""

from __future__ import annotations

from flows.embedded import flow
from mlsys_core.config import Settings
from mlsys_core.features.store import FeatureSetRef
from mlsys_core.training.config import TrainConfig
from mlsys_core.training.distributed import LaunchConfig
from tasks.metrics import metered
from tasks.training import train_model

DEPLOYMENT = "train-node/train-node"


@flow(name="train-node", log_prints=True)
@metered()
def train_node(features: FeatureSetRef, config: TrainConfig, launch: LaunchConfig) -> str:
    """Run this node's agent of the multi-node job; returns the MLflow run id."""
    if launch.nnodes < 2 or launch.rdzv_endpoint is None:
        raise ValueError("train-node joins a multi-node job: nnodes >= 2 and an rdzv_endpoint")
    trained = train_model(features, config, Settings(), launch)
    print(f"node done: MLflow run {trained.run_id}")
    return trained.run_id
