"""An MLP over category embeddings and scaled numbers.

Embeddings rather than one-hot: ``dest`` alone has ~100 values and the calendar adds more;
embeddings keep the input small, let similar categories share strength, and are what the
feature-store and tuning work will extend (embedding sizes are a tuning dimension).
"""

from __future__ import annotations

import torch
from torch import nn

from mlsys_core.training.config import ModelConfig


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
