"""A small plain-PyTorch trainer: setup / train / save_checkpoint, early stopping on
validation loss. No training framework: this is the whole loop."""

from __future__ import annotations

import copy
import os
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from mlsys_core.training.metrics import binary_metrics
from mlsys_core.training.model import ModelConfig, TabularMLP


class TrainConfig(BaseModel):
    """Training hyperparameters; a flow parameter, so the Prefect UI shows it as a form."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: int = Field(default=12, ge=1, le=1000)
    batch_size: int = Field(default=1024, ge=8, le=1 << 20)
    # Chosen on validation log loss among a few settings; the tuning flow searches properly.
    learning_rate: float = Field(default=1e-3, gt=0, le=1)
    weight_decay: float = Field(default=1e-5, ge=0)
    hidden: list[int] = Field(default_factory=lambda: [128, 64], min_length=1)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    max_embedding_dim: int = Field(default=16, ge=1, le=512)
    patience: int = Field(default=3, ge=1, description="Epochs without improvement before stop.")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"


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
    stopped_early: bool = False


class SupportsTraining(Protocol):
    """The shape every trainer in mlsys has (single-process now, distributed later)."""

    def setup(
        self, x_train: np.ndarray, y_train: np.ndarray, x_valid: np.ndarray, y_valid: np.ndarray
    ) -> None: ...

    def train(self, on_epoch: Callable[[EpochMetrics], None] | None = None) -> TrainResult: ...

    def save_checkpoint(self, path: Path) -> None: ...


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


class Trainer:
    def __init__(self, config: TrainConfig, model_config: ModelConfig) -> None:
        self.config = config
        self.model_config = model_config

    def setup(
        self, x_train: np.ndarray, y_train: np.ndarray, x_valid: np.ndarray, y_valid: np.ndarray
    ) -> None:
        seed_everything(self.config.seed)
        self.device = resolve_device(self.config.device)
        self.model = TabularMLP(self.model_config).to(self.device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=self.config.learning_rate,
            weight_decay=self.config.weight_decay,
        )
        self.loss_fn = nn.BCEWithLogitsLoss()
        as_tensor = lambda a: torch.as_tensor(np.asarray(a, np.float32), device=self.device)  # noqa: E731
        self.x_train, self.y_train = as_tensor(x_train), as_tensor(y_train)
        self.x_valid, self.y_valid = x_valid, np.asarray(y_valid, np.float32)
        self.generator = torch.Generator(device="cpu").manual_seed(self.config.seed)
        self.epoch = 0

    def _train_epoch(self) -> float:
        self.model.train()
        n, bs = len(self.x_train), self.config.batch_size
        order = torch.randperm(n, generator=self.generator).to(self.device)
        total = 0.0
        for start in range(0, n, bs):
            idx = order[start : start + bs]
            if len(idx) < 2:  # BatchNorm cannot train on a single row
                continue
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.loss_fn(self.model(self.x_train[idx]), self.y_train[idx])
            loss.backward()
            self.optimizer.step()
            total += loss.item() * len(idx)
        return total / n

    def train(self, on_epoch: Callable[[EpochMetrics], None] | None = None) -> TrainResult:
        result, best_loss, best_state = TrainResult(), float("inf"), None
        for epoch in range(1, self.config.epochs + 1):
            self.epoch = epoch
            train_loss = self._train_epoch()
            proba = self.predict_proba(self.x_valid)
            scores = binary_metrics(self.y_valid, proba)
            metrics = EpochMetrics(epoch, train_loss, scores["log_loss"], scores["auc"])
            result.history.append(metrics)
            if on_epoch:
                on_epoch(metrics)
            if metrics.val_loss < best_loss - 1e-5:
                best_loss, result.best_epoch = metrics.val_loss, epoch
                best_state = copy.deepcopy(self.model.state_dict())
            elif epoch - result.best_epoch >= self.config.patience:
                result.stopped_early = True
                break
        if best_state is not None:
            self.model.load_state_dict(best_state)
        return result

    @torch.no_grad()
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return predict_proba(self.model, x, self.device, self.config.batch_size * 8)

    def save_checkpoint(self, path: Path) -> None:
        """Atomically write weights and optimizer state (tensors only: loadable with
        ``weights_only=True``)."""
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
        }
        save_tensors_atomically(state, Path(path))


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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_tensors(path: Path, device: str | torch.device = "cpu") -> dict:
    """Load a checkpoint or weights file; never unpickles arbitrary objects."""
    return torch.load(path, map_location=device, weights_only=True)
