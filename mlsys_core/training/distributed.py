"""How training is laid out over processes: the typed launch config, the process group, and
the few collectives the trainer needs (batch-norm statistics, metric reduction, gathering
predictions). Everything runs on ``torch.distributed``; there is no home-made parameter server.
"""

from __future__ import annotations

import datetime as dt
import gc
import os
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn


class LaunchConfig(BaseModel):
    """Where and how training runs; a flow parameter next to ``TrainConfig``.

    ``single`` with one process trains in the calling process (no subprocess). Anything else
    goes through ``torch.distributed.run`` (torchrun, elastic), one worker per process.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: Literal["single", "ddp", "fsdp"] = "single"
    sync: Literal["allreduce", "local_sgd"] = Field(
        default="allreduce",
        description="ddp only: all-reduce gradients every step, or average models every "
        "local_sgd_period steps after local_sgd_warmup all-reduce steps (post-local SGD).",
    )
    local_sgd_period: int = Field(default=8, ge=2, le=10_000)
    local_sgd_warmup: int = Field(default=0, ge=0)
    nproc_per_node: int = Field(default=1, ge=1, le=64)
    nnodes: int = Field(default=1, ge=1, le=1024)
    rdzv_endpoint: str | None = Field(
        default=None,
        description="host:port of the c10d rendezvous; default 127.0.0.1 and a free port "
        "(one node). Several nodes must all name the same host:port.",
        pattern=r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$",
    )
    rdzv_id: str | None = Field(default=None, description="Same on every node; default: job key.")
    other_nodes: Literal["external", "pool"] = Field(
        default="external",
        description="With nnodes > 1, who starts the other nodes' agents: 'external' (you run "
        "`mlsys train` with the same arguments on each), or 'pool' (the train flow asks the "
        "work pool for nnodes - 1 runs of the `train-node` deployment, one per worker).",
    )
    max_restarts: int = Field(default=1, ge=0, le=100)
    collective_timeout_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="A collective waiting this long fails instead of hanging (gloo: 30 min).",
    )
    launch_timeout_s: float | None = Field(
        default=None, gt=0, description="Kill the whole torchrun group after this long."
    )
    launcher: Literal["auto", "torchrun", "inprocess"] = Field(
        default="auto", description="auto: in-process for one single process, else torchrun."
    )
    checkpoint_every_steps: int | None = Field(
        default=None, ge=1, description="Also checkpoint mid-epoch every N optimizer steps."
    )
    keep_checkpoints: int = Field(default=2, ge=1, le=100)

    @model_validator(mode="after")
    def _consistent(self) -> LaunchConfig:
        if self.strategy == "single" and self.world_size > 1:
            raise ValueError(
                f"strategy 'single' runs one process, but nproc_per_node x nnodes = "
                f"{self.world_size}; use 'ddp' or 'fsdp'"
            )
        if self.sync == "local_sgd" and self.strategy != "ddp":
            raise ValueError("sync='local_sgd' needs strategy='ddp'")
        if self.launcher == "inprocess" and self.world_size > 1:
            raise ValueError("launcher='inprocess' runs one process; use torchrun for several")
        if self.nnodes > 1 and self.rdzv_endpoint is None:
            raise ValueError("several nodes need rdzv_endpoint: the same host:port on each")
        return self

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    @property
    def in_process(self) -> bool:
        if self.launcher == "auto":
            return self.world_size == 1 and self.strategy == "single"
        return self.launcher == "inprocess"

    def math_fingerprint(self) -> dict[str, object]:
        """The fields that change what is computed; the topology is left out on purpose, so a
        restart with another world size can resume the same checkpoints (they hold full state).
        """
        return self.model_dump(include={"strategy", "sync", "local_sgd_period", "local_sgd_warmup"})


@dataclass(frozen=True)
class DistContext:
    """This process's place in the group; a single process is rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or dist.is_initialized()


def current_context() -> DistContext:
    if not dist.is_initialized():
        return DistContext()
    return DistContext(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def init_distributed(device_choice: str, timeout_s: float) -> tuple[DistContext, torch.device]:
    """Join the group torchrun set up (env:// from RANK, WORLD_SIZE, MASTER_ADDR, ...).

    NCCL on CUDA, gloo on CPU. The timeout bounds every collective, so a peer that is gone
    fails the step within ``timeout_s`` rather than after gloo's default 30 minutes.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_choice == "cuda" or (device_choice == "auto" and torch.cuda.is_available())
    if device_choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for, but CUDA is not available")
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend_for(device),
            timeout=dt.timedelta(seconds=timeout_s),
            device_id=device if use_cuda else None,
        )
    return current_context(), device


def shutdown_distributed() -> None:
    """Destroy the process group once nothing uses it any more.

    Modules wrapped by DDP or FSDP sit in reference cycles that hold the group, so only the
    garbage collector frees them, at any later moment or during interpreter exit. Freed after
    the group is gone, they can abort a rank whose work is done ("terminate called without
    an active exception" in a torchrun test). So collect them first.
    """
    if dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose gradient is the sum over ranks of the incoming gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        out = grad.clone()
        dist.all_reduce(out)
        return out


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm whose training statistics cover the global batch across all ranks.

    ``nn.SyncBatchNorm`` does the same but refuses CPU tensors, and gloo on CPU is a first
    class target here. Sums, sums of squares and counts are all-reduced with an autograd-aware
    all-reduce, so the backward pass matches single-process BatchNorm on the concatenated
    batch. With ``sync=False`` (local SGD) it is plain BatchNorm over the local rows. In eval
    mode it is exactly ``BatchNorm1d``, and the state dict keys are the same.
    """

    sync: bool = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.sync and dist.is_initialized()):
            return super().forward(x)
        work = x.float()
        # Two passes (mean, then squared deviations), like BatchNorm itself: E[x^2] - E[x]^2
        # loses digits when a channel's mean is large next to its spread.
        local = torch.cat([work.sum(0), torch.full((1,), float(work.shape[0]), device=x.device)])
        total = _AllReduceSum.apply(local)
        count = total[-1]
        mean = total[:-1] / count
        var = _AllReduceSum.apply(((work - mean) ** 2).sum(0)) / count
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 0.1
                unbiased = var * count / (count - 1).clamp_min(1.0)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.detach(), alpha=m)
        out = (work - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            out = out * self.weight + self.bias
        return out.to(x.dtype)


def convert_batchnorm(module: nn.Module, sync: bool) -> nn.Module:
    """Swap every ``BatchNorm1d`` for :class:`GlobalBatchNorm1d`, keeping its state."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm1d:
            replacement = GlobalBatchNorm1d(
                child.num_features, child.eps, child.momentum, child.affine
            )
            replacement.load_state_dict(child.state_dict())
            replacement.sync = sync
            replacement.to(next(child.buffers()).device)
            setattr(module, name, replacement)
        else:
            convert_batchnorm(child, sync)
    return module


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value)
    return value


def gather_rows(local: torch.Tensor, total_rows: int) -> torch.Tensor:
    """Concatenate equal-length per-rank blocks in rank order and drop the padding."""
    if not dist.is_initialized():
        return local[:total_rows]
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, local.contiguous())
    return torch.cat(parts)[:total_rows]


def average_buffers(module: nn.Module) -> None:
    """Average floating-point buffers (BatchNorm running stats) over ranks, e.g. after local
    SGD, where each rank kept its own."""
    if not dist.is_initialized():
        return
    world = dist.get_world_size()
    for buffer in module.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)
            buffer.div_(world)
