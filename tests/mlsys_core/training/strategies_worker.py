"""Run by the tests under torchrun: train one synthetic problem with each strategy in turn
(ddp + all-reduce, fsdp, ddp + local SGD) in the same process group, and let rank 0 write
each history and final weights. For the launches under "resume", train with checkpoints,
delete those after a mid-epoch one (as if the group died there), resume with a new trainer
and write both histories and weights. Not a test module (no ``test_`` prefix)."""

from __future__ import annotations

import faulthandler
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from mlsys_core.training.checkpoint import CheckpointStore
from mlsys_core.training.config import ModelConfig, TrainConfig
from mlsys_core.training.distributed import (
    DistContext,
    LaunchConfig,
    init_distributed,
    shutdown_distributed,
)
from mlsys_core.training.trainer import Trainer


def main(folder: Path) -> None:
    faulthandler.enable()  # a native abort still shows each rank's Python stack
    ctx, _ = init_distributed("cpu", timeout_s=60)
    # The trainers (and their wrapped modules, which hold the group) go out of scope here,
    # before the group is destroyed.
    train_each(folder, ctx)
    # Both ranks leave together, so neither tears gloo down while its peer still writes
    # results. (The abort once seen here at teardown came from the wrapped modules' reference
    # cycles, which ``shutdown_distributed`` now collects before destroying the group.)
    dist.barrier()
    shutdown_distributed()


def train_each(folder: Path, ctx: DistContext) -> None:
    spec = json.loads((folder / "spec.json").read_text())
    data = np.load(folder / "problem.npz")
    config = TrainConfig.model_validate(spec["config"])
    model_config = ModelConfig.model_validate(spec["model_config"])
    for name, launch in spec["launches"].items():
        trainer = Trainer(config, model_config, LaunchConfig.model_validate(launch))
        trainer.setup(data["x_train"], data["y_train"], data["x_valid"], data["y_valid"])
        result = trainer.train()
        if ctx.is_main:
            history = [[m.epoch, m.train_loss, m.val_loss, m.val_auc] for m in result.history]
            (folder / f"{name}.json").write_text(json.dumps(history))
            state = {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}
            torch.save(state, folder / f"{name}.pt")
    for name, fields in spec.get("resume", {}).items():
        launch = LaunchConfig.model_validate(fields)
        store = CheckpointStore(folder / f"ckpt-{name}", keep=1000)
        arrays = (data["x_train"], data["y_train"], data["x_valid"], data["y_valid"])
        full = Trainer(config, model_config, launch, store)
        full.setup(*arrays)
        first = full.train()
        per_epoch = full.steps_per_epoch
        mid = [s for s in store.steps() if per_epoch < s < 2 * per_epoch and s % per_epoch][-1]
        dist.barrier()
        if ctx.is_main:
            for step in store.steps():
                if step > mid:
                    store.path_for(step).unlink()
        dist.barrier()
        resumed = Trainer(config, model_config, launch, store)
        resumed.setup(*arrays)
        second = resumed.train()
        if ctx.is_main:
            out = {
                "mid": mid,
                "resumed_from": resumed.resumed_from,
                "first": [[m.epoch, m.train_loss, m.val_loss, m.val_auc] for m in first.history],
                "second": [[m.epoch, m.train_loss, m.val_loss, m.val_auc] for m in second.history],
                "same_weights": all(
                    torch.equal(v, resumed.model.state_dict()[k])
                    for k, v in full.model.state_dict().items()
                ),
            }
            (folder / f"resume-{name}.json").write_text(json.dumps(out))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
