"""A small plain-PyTorch trainer: setup / train / save_checkpoint, early stopping on
validation loss. No training framework: this is the whole loop, for one process or for one
rank of a torchrun group (DDP or FSDP2, see :mod:`mlsys_core.training.distributed`).

Data order: every rank draws the same seeded permutation per epoch and takes its slice
(``rank::world``) of each global batch. With global-batch BatchNorm and the loss weighted by
the local share of the batch, a step on N ranks computes the same update as a step of one
process on the whole global batch (up to float rounding), so the world size does not change
the math and a checkpoint can be resumed with another world size.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from mlsys_core.atomic import write_atomically
from mlsys_core.training.checkpoint import CheckpointStore
from mlsys_core.training.config import ModelConfig, TrainConfig
from mlsys_core.training.distributed import (
    DistContext,
    LaunchConfig,
    all_reduce_sum,
    average_buffers,
    convert_batchnorm,
    current_context,
    gather_rows,
)
from mlsys_core.training.metrics import binary_metrics
from mlsys_core.training.model import TabularMLP

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int
    train_loss: float
    val_loss: float
    val_auc: float


@dataclass
class TrainResult:
    history: list[EpochMetrics] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False  # by patience on the validation loss
    refused: bool = False  # ``before_epoch`` refused the next epoch (e.g. a spent budget)


def _state_dict_api() -> ModuleType:
    """``torch.distributed.checkpoint.state_dict``, loaded when a checkpoint is first taken
    or resumed: it loads DTensor, about a second, which a process that only scores (a
    served model, a drift check, batch scoring) never needs."""
    from torch.distributed.checkpoint import state_dict  # noqa: PLC0415

    return state_dict


def resolve_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for, but CUDA is not available")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def job_fingerprint(config: TrainConfig, launch: LaunchConfig) -> str:
    """What a checkpoint must match to be resumed: the training math, not the topology."""
    payload = config.model_dump_json() + str(sorted(launch.math_fingerprint().items()))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class Trainer:
    """One process's trainer. ``launch`` picks the strategy; ``checkpoints`` makes it resume
    from the newest valid checkpoint at ``setup`` and write new ones while training."""

    def __init__(
        self,
        config: TrainConfig,
        model_config: ModelConfig,
        launch: LaunchConfig | None = None,
        checkpoints: CheckpointStore | None = None,
    ) -> None:
        self.config = config
        self.model_config = model_config
        self.launch = launch or LaunchConfig()
        self.checkpoints = checkpoints

    # ----------------------------------------------------------------------------- setup
    def setup(
        self, x_train: np.ndarray, y_train: np.ndarray, x_valid: np.ndarray, y_valid: np.ndarray
    ) -> None:
        seed_everything(self.config.seed)
        self.ctx: DistContext = current_context()
        strategy = self.launch.strategy
        if strategy != "single" and not dist.is_initialized():
            raise RuntimeError(
                f"strategy {strategy!r} needs a process group: launch through torchrun "
                "(mlsys_core.training.launch), not in-process"
            )
        self.device = self._device()
        model = TabularMLP(self.model_config)
        if self.ctx.distributed:
            convert_batchnorm(model, sync=self.launch.sync == "allreduce")
        self.model = model.to(self.device)
        self._engine: nn.Module = self.model
        self._averager = None
        self._local_sgd = None
        if strategy == "ddp":
            self._engine = self._wrap_ddp(self.model)
        elif strategy == "fsdp":
            self._shard_fsdp(self.model)
        if self.ctx.world_size > 1:
            # Same initial weights on every rank (seeded above), different dropout masks.
            torch.manual_seed(self.config.seed + 1_000_003 * self.ctx.rank)
        if self.config.compile:
            self._engine = torch.compile(self._engine)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=self.config.learning_rate,
            weight_decay=self.config.weight_decay,
            # Fused AdamW is one kernel per step on CUDA; on CPU the default keeps results.
            fused=True if self.device.type == "cuda" else None,
        )
        self.loss_fn = nn.BCEWithLogitsLoss()
        as_tensor = lambda a: torch.as_tensor(np.asarray(a, np.float32), device=self.device)  # noqa: E731
        # Resident on the device for the whole run: no DataLoader, no per-step host copies.
        self.x_train, self.y_train = as_tensor(x_train), as_tensor(y_train)
        self.x_valid, self.y_valid = x_valid, np.asarray(y_valid, np.float32)
        self._x_valid_dev = as_tensor(x_valid) if self.ctx.distributed else None
        self.generator = torch.Generator(device="cpu").manual_seed(self.config.seed)
        self._min_rows = 2 if self._sync_batchnorm() else 2 * self.ctx.world_size
        self.steps_per_epoch = sum(
            1
            for start in range(0, len(self.x_train), self.config.batch_size)
            if min(self.config.batch_size, len(self.x_train) - start) >= self._min_rows
        )
        total = max(1, self.steps_per_epoch * self.config.epochs)
        if self.config.lr_schedule == "cosine":
            factor = lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))  # noqa: E731
        else:
            factor = lambda step: 1.0  # noqa: E731, ARG005
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.fingerprint = job_fingerprint(self.config, self.launch)
        # Progress, all of it checkpointed.
        self.epoch = 0  # completed epochs
        self.step_in_epoch = 0  # global batches of the current epoch already consumed
        self.global_step = 0
        self._epoch_rng = self.generator.get_state()
        self._epoch_loss_sum = 0.0
        self._result = TrainResult()
        self._best_loss = float("inf")
        self._best_state: dict[str, torch.Tensor] | None = None
        self._finished = False
        self.resumed_from: int | None = None
        if self.checkpoints is not None:
            self._resume()

    def _device(self) -> torch.device:
        device = resolve_device(self.config.device)
        if device.type == "cuda" and self.ctx.distributed:
            device = torch.device("cuda", self.ctx.local_rank)
        return device

    def _sync_batchnorm(self) -> bool:
        return self.launch.sync == "allreduce"

    def _wrap_ddp(self, module: nn.Module) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel  # noqa: PLC0415

        ddp = DistributedDataParallel(
            module,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            # BatchNorm statistics are global already (allreduce) or averaged per epoch;
            # buffers are still made equal once, at construction.
            forward_sync_buffers=False,
        )
        if self.launch.sync == "local_sgd":
            from torch.distributed.algorithms.ddp_comm_hooks import (  # noqa: PLC0415
                post_localSGD_hook as post_local,
            )
            from torch.distributed.algorithms.model_averaging.averagers import (  # noqa: PLC0415
                PeriodicModelAverager,
            )

            # All-reduce gradients during warm-up, then purely local steps (no gradient
            # traffic at all) with the models averaged every `period` steps.
            self._local_sgd = post_local.PostLocalSGDState(
                process_group=None,
                subgroup=None,
                start_localSGD_iter=self.launch.local_sgd_warmup,
                post_local_gradient_allreduce=False,
            )
            ddp.register_comm_hook(self._local_sgd, post_local.post_localSGD_hook)
            self._averager = PeriodicModelAverager(
                period=self.launch.local_sgd_period, warmup_steps=self.launch.local_sgd_warmup
            )
        return ddp

    def _shard_fsdp(self, module: nn.Module) -> None:
        from torch.distributed.device_mesh import init_device_mesh  # noqa: PLC0415
        from torch.distributed.fsdp import fully_shard  # noqa: PLC0415

        mesh = init_device_mesh(self.device.type, (self.ctx.world_size,))
        # Each weight-bearing layer is its own FSDP unit: its parameters are gathered just
        # before use and freed after, so no rank ever holds the whole model at once.
        for layer in module.modules():
            if isinstance(layer, nn.Linear | nn.Embedding):
                fully_shard(layer, mesh=mesh)
        fully_shard(module, mesh=mesh)

    def _autocast(self) -> contextlib.AbstractContextManager:
        precision = self.config.precision
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        if precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------------- training
    def _train_epoch(self) -> float:
        self._engine.train()
        n, bs = len(self.x_train), self.config.batch_size
        rank, world = self.ctx.rank, self.ctx.world_size
        order = torch.randperm(n, generator=self.generator).to(self.device)
        # float64 on the device: no host sync per step, and the same sums as Python floats.
        total = torch.full((), self._epoch_loss_sum, dtype=torch.float64, device=self.device)
        every = self.launch.checkpoint_every_steps
        for batch, start in enumerate(range(0, n, bs)):
            if batch < self.step_in_epoch:  # resumed mid-epoch: already trained on
                continue
            idx = order[start : start + bs]
            if len(idx) < self._min_rows:  # BatchNorm cannot train on a single row
                continue
            local = idx[rank::world] if world > 1 else idx
            self.optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                logits = self._engine(self.x_train[local])
            loss = self.loss_fn(logits.float(), self.y_train[local])
            if world > 1:
                # DDP/FSDP average gradients over ranks; weighting by the local share of the
                # global batch makes that average the gradient of the global-batch mean loss.
                (loss * (len(local) * world / len(idx))).backward()
            else:
                loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            if self._averager is not None:
                self._averager.average_parameters(self.model.parameters())
            total += loss.detach().double() * len(local)
            self.global_step += 1
            self.step_in_epoch = batch + 1
            if every and self.global_step % every == 0 and self.checkpoints is not None:
                self._epoch_loss_sum = all_reduce_sum(total).item() if world > 1 else total.item()
                self._save(self._epoch_loss_sum if self.ctx.is_main else 0.0)
        if self.launch.sync == "local_sgd":
            self._average_model()
        return all_reduce_sum(total).item() / n

    def _average_model(self) -> None:
        """One model for validation and checkpoints after local steps."""
        world = self.ctx.world_size
        for param in self.model.parameters():
            dist.all_reduce(param.data)
            param.data.div_(world)
        average_buffers(self.model)

    def train(
        self,
        on_epoch: Callable[[EpochMetrics], None] | None = None,
        before_epoch: Callable[[int], bool] | None = None,
    ) -> TrainResult:
        """Train until ``config.epochs``, early stopping, or ``before_epoch(epoch)`` saying
        False just before an epoch would start; ``on_epoch`` sees every finished epoch."""
        result = self._result
        for restored in result.history:  # resumed: report the epochs done before the restart
            if on_epoch:
                on_epoch(restored)
        while self.epoch < self.config.epochs and not result.stopped_early:
            epoch = self.epoch + 1
            if before_epoch is not None and not before_epoch(epoch):
                result.refused = True
                break
            if self.step_in_epoch == 0:
                self._epoch_rng = self.generator.get_state()
            else:  # replay the interrupted epoch's order
                self.generator.set_state(self._epoch_rng)
            train_loss = self._train_epoch()
            self.epoch, self.step_in_epoch, self._epoch_loss_sum = epoch, 0, 0.0
            proba = self._validate()
            scores = binary_metrics(self.y_valid, proba)
            metrics = EpochMetrics(epoch, train_loss, scores["log_loss"], scores["auc"])
            result.history.append(metrics)
            if metrics.val_loss < self._best_loss - 1e-5:
                self._best_loss, result.best_epoch = metrics.val_loss, epoch
                self._best_state = self._full_model_state()
            elif epoch - result.best_epoch >= self.config.patience:
                result.stopped_early = True
            if self.checkpoints is not None:
                self._save(0.0)
            if on_epoch:
                on_epoch(metrics)
        self._finish()
        return result

    def _finish(self) -> None:
        """Leave ``self.model`` a plain module with the best weights, the same on every rank."""
        if self.launch.strategy == "fsdp":
            state = self._best_state or self._full_model_state()
            plain = convert_batchnorm(TabularMLP(self.model_config), sync=True)
            self.model = plain.to(self.device)
            self._engine = self.model
            self.model.load_state_dict(state)
        elif self._best_state is not None:
            self.model.load_state_dict(self._best_state)
        self._finished = True

    def _full_model_state(self) -> dict[str, torch.Tensor]:
        if self.launch.strategy == "fsdp" and not self._finished:
            # Collective: every rank gets the full, unsharded tensors. Buffers come back as
            # the live tensors, hence the clone: later steps must not change a snapshot.
            dcp = _state_dict_api()
            full = dcp.get_model_state_dict(
                self.model, options=dcp.StateDictOptions(full_state_dict=True)
            )
            return {k: v.detach().clone() for k, v in full.items()}
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    # ----------------------------------------------------------------------- prediction
    def _validate(self) -> np.ndarray:
        if not self.ctx.distributed:
            return self.predict_proba(self.x_valid)
        # Each rank scores an equal block (the last one padded), then all gather: the same
        # validation scores on every rank, so early stopping decides alike everywhere.
        x = self._x_valid_dev
        n, world, rank = len(x), self.ctx.world_size, self.ctx.rank
        per = -(-n // world)
        block = x[rank * per : (rank + 1) * per]
        if len(block) < per:
            block = torch.cat([block, block.new_zeros((per - len(block), x.shape[1]))])
        self.model.eval()
        out = []
        bs = self.config.batch_size * 8
        # fp32 like predict_proba, so logged validation scores equal those recomputed later.
        with torch.no_grad():
            for start in range(0, per, bs):
                out.append(torch.sigmoid(self.model(block[start : start + bs]).float()))
        local = torch.cat(out) if out else block.new_zeros(0)
        return gather_rows(local, n).cpu().numpy()

    @torch.no_grad()
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        if self.launch.strategy == "fsdp" and not self._finished:
            raise RuntimeError("an FSDP model predicts after train(), once it is gathered")
        return predict_proba(self.model, x, self.device, self.config.batch_size * 8)

    # ---------------------------------------------------------------------- checkpoints
    def save_checkpoint(self, path: Path) -> None:
        """Atomically write the full training state to ``path`` (tensors and plain values:
        loadable with ``weights_only=True``). Collective under DDP/FSDP; rank 0 writes."""
        state = self._checkpoint_state(self._epoch_loss_sum)
        if self.ctx.is_main:
            save_tensors_atomically(state, Path(path))

    def _save(self, epoch_loss_sum: float) -> None:
        state = self._checkpoint_state(epoch_loss_sum)
        if self.ctx.is_main:
            self.checkpoints.save(state, self.global_step)

    def _checkpoint_state(self, epoch_loss_sum: float) -> dict:
        dcp = _state_dict_api()
        options = dcp.StateDictOptions(full_state_dict=True, cpu_offload=self.ctx.distributed)
        if self._finished:
            model_state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
            optim_state = self.optimizer.state_dict() if self.launch.strategy != "fsdp" else {}
        else:
            model_state, optim_state = dcp.get_state_dict(
                self.model, self.optimizer, options=options
            )
        # Every rank's dropout RNG (CPU, and CUDA's own generator), for an exact resume.
        rng = self._gather_rows_of(torch.get_rng_state())
        cuda_rng = (
            self._gather_rows_of(torch.cuda.get_rng_state(self.device))
            if self.device.type == "cuda"
            else torch.zeros(0, dtype=torch.uint8)
        )
        history = torch.tensor(
            [[m.epoch, m.train_loss, m.val_loss, m.val_auc] for m in self._result.history],
            dtype=torch.float64,
        ).reshape(-1, 4)
        best = self._best_state or {}
        return {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": self.fingerprint,
            "model": model_state,
            "optimizer": optim_state,
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "epoch_loss_sum": float(epoch_loss_sum),
            "order_rng": self._epoch_rng if self.step_in_epoch else self.generator.get_state(),
            "torch_rng": rng,
            "cuda_rng": cuda_rng,
            "history": history,
            "best_epoch": self._result.best_epoch,
            "best_loss": self._best_loss,
            "stopped_early": self._result.stopped_early,
            "best_model": {k: v.detach().cpu() for k, v in best.items()},
        }

    def _gather_rows_of(self, local: torch.Tensor) -> torch.Tensor:
        """Stack one equal-sized CPU tensor from every rank (NCCL gathers on the device)."""
        if not self.ctx.distributed:
            return local.unsqueeze(0)
        local = local.to(self.device)
        parts = [torch.empty_like(local) for _ in range(self.ctx.world_size)]
        dist.all_gather(parts, local)
        return torch.stack(parts).cpu()

    def _resume(self) -> None:
        loaded = self.checkpoints.load_latest()
        if loaded is None:
            return
        state = loaded.state
        if state.get("format") != CHECKPOINT_FORMAT or state.get("fingerprint") != (
            self.fingerprint
        ):
            raise ValueError(
                f"checkpoint {loaded.path} was written by another training config "
                f"(fingerprint {state.get('fingerprint')}, this job {self.fingerprint})"
            )
        dcp = _state_dict_api()
        dcp.set_state_dict(
            self.model,
            self.optimizer,
            model_state_dict=state["model"],
            optim_state_dict=state["optimizer"],
            options=dcp.StateDictOptions(full_state_dict=True),
        )
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        self.step_in_epoch = int(state["step_in_epoch"])
        self.global_step = int(state["global_step"])
        # Only rank 0 carries the partial loss sum; the epoch's all-reduce adds the rest.
        self._epoch_loss_sum = float(state["epoch_loss_sum"]) if self.ctx.is_main else 0.0
        self.generator.set_state(state["order_rng"])
        self._epoch_rng = state["order_rng"]
        rngs, cuda_rngs = state["torch_rng"], state.get("cuda_rng", torch.zeros(0))
        if len(rngs) == self.ctx.world_size:
            torch.set_rng_state(rngs[self.ctx.rank].clone())  # a row view crashes it
            if self.device.type == "cuda" and len(cuda_rngs) == self.ctx.world_size:
                torch.cuda.set_rng_state(cuda_rngs[self.ctx.rank].clone(), self.device)
        else:  # another world size: dropout masks cannot be replayed, reseed deterministically
            torch.manual_seed(self.config.seed + self.global_step + 1_000_003 * self.ctx.rank)
        self._result = TrainResult(
            history=[
                EpochMetrics(int(e), float(t), float(v), float(a))
                for e, t, v, a in state["history"].tolist()
            ],
            best_epoch=int(state["best_epoch"]),
            stopped_early=bool(state["stopped_early"]),
        )
        self._best_loss = float(state["best_loss"])
        best = state["best_model"]
        self._best_state = {k: v.to(self.device) for k, v in best.items()} or None
        if self._local_sgd is not None:
            self._local_sgd.iter = self.global_step
            self._averager.step = self.global_step
        self.resumed_from = self.global_step


@torch.no_grad()
def predict_proba(
    model: nn.Module, x: np.ndarray, device: torch.device, batch_size: int = 8192
) -> np.ndarray:
    model.eval()
    out = []
    data = torch.as_tensor(np.asarray(x, np.float32))
    for start in range(0, len(data), batch_size):
        logits = model(data[start : start + batch_size].to(device))
        out.append(torch.sigmoid(logits).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def save_tensors_atomically(state: dict, path: Path) -> None:
    write_atomically(Path(path), lambda handle: torch.save(state, handle))


def load_tensors(path: Path, device: str | torch.device = "cpu") -> dict:
    """Load a checkpoint or weights file; never unpickles arbitrary objects."""
    return torch.load(path, map_location=device, weights_only=True)
