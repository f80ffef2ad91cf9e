"""An MLP over category embeddings and scaled numbers.

Embeddings rather than one-hot: ``dest`` alone has ~100 values and the calendar adds more;
embeddings keep the input small, let similar categories share strength, and are what the
feature-store and tuning work will extend (embedding sizes are a tuning dimension).
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn


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


class TabularMLP(nn.Module):
    """Input: one float matrix, category codes in the first ``len(cardinalities)`` columns."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_categorical = len(config.cardinalities)
        self.embeddings = nn.ModuleList(
            nn.Embedding(k, d)
            for k, d in zip(config.cardinalities, config.embedding_dims(), strict=True)
        )
        width = sum(config.embedding_dims()) + config.n_numeric
        layers: list[nn.Module] = []
        for size in config.hidden:
            layers += [
                nn.Linear(width, size),
                nn.BatchNorm1d(size),
                nn.ReLU(),
                nn.Dropout(config.dropout),
            ]
            width = size
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        codes = x[:, : self.n_categorical].long()
        parts = [emb(codes[:, i]) for i, emb in enumerate(self.embeddings)]
        parts.append(x[:, self.n_categorical :])
        return self.mlp(torch.cat(parts, dim=1)).squeeze(1)
