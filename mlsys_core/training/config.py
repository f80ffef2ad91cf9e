"""Training hyperparameters and the network's shape, apart from torch: a flow parameter, a
CLI option, a tuning search point and a feature matrix are read without loading it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    """Training hyperparameters; a flow parameter, so the Prefect UI shows it as a form."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: int = Field(default=12, ge=1, le=1000)
    batch_size: int = Field(default=1024, ge=8, le=1 << 20)
    # Chosen on validation log loss among a few settings; the tuning flow searches properly.
    learning_rate: float = Field(default=1e-3, gt=0, le=1)
    weight_decay: float = Field(default=1e-5, ge=0)
    # Wider and more dropout than the first [128, 64] / 0.1, chosen on the flights' validation
    # month (AUC 0.7371 -> 0.7419): the smaller net peaked at epoch 2-3 and then overfitted.
    hidden: list[int] = Field(default_factory=lambda: [256, 128], min_length=1)
    dropout: float = Field(default=0.2, ge=0, lt=1)
    max_embedding_dim: int = Field(default=16, ge=1, le=512)
    patience: int = Field(default=3, ge=1, description="Epochs without improvement before stop.")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    lr_schedule: Literal["constant", "cosine"] = Field(
        default="constant", description="cosine: decay to 0 over all epochs' steps."
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto", description="auto: bf16 autocast on CUDA, fp32 on CPU."
    )
    compile: bool = Field(default=False, description="torch.compile the network (CUDA).")


class ModelConfig(BaseModel):
    """Everything needed to rebuild the network before loading its weights."""

    model_config = ConfigDict(frozen=True)

    cardinalities: list[int]
    n_numeric: int = Field(ge=0)
    hidden: list[int] = Field(default_factory=lambda: [128, 64])
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    max_embedding_dim: int = Field(default=16, ge=1)

    def embedding_dims(self) -> list[int]:
        # fast.ai's rule of thumb, capped: enough capacity for the category count.
        return [min(self.max_embedding_dim, round(1.6 * k**0.56)) for k in self.cardinalities]
