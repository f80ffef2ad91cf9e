"""The search space as typed config: each dimension has bounds (or choices) and grid points,
so the same declaration drives Bayesian samplers and the grid sampler alike."""

from __future__ import annotations

import math
from typing import Any, Self

import optuna
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlsys_core.training.config import TrainConfig

MIN_LAYER_WIDTH = 8


class FloatRange(BaseModel):
    """A float dimension; ``log`` samples uniformly in log space (learning rates, decay)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    low: float
    high: float
    log: bool = False
    grid: list[float] | None = Field(
        default=None, description="Values the grid sampler tries; default low, middle, high."
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        _check_range(self.low, self.high, self.log, self.grid)
        return self

    def suggest(self, trial: optuna.Trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def grid_values(self) -> list[float]:
        if self.grid:
            return list(self.grid)
        mid = math.sqrt(self.low * self.high) if self.log else (self.low + self.high) / 2
        return [self.low, mid, self.high]


class IntRange(BaseModel):
    """An integer dimension (layer width, depth, embedding size)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    low: int
    high: int
    log: bool = False
    grid: list[int] | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        _check_range(self.low, self.high, self.log, self.grid)
        return self

    def suggest(self, trial: optuna.Trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, log=self.log)

    def grid_values(self) -> list[int]:
        if self.grid:
            return list(self.grid)
        mid = round(math.sqrt(self.low * self.high)) if self.log else (self.low + self.high) // 2
        return sorted({self.low, mid, self.high})


class Choice(BaseModel):
    """A categorical dimension; every choice is also a grid point."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    choices: list[int] = Field(min_length=1)

    def suggest(self, trial: optuna.Trial, name: str) -> int:
        return trial.suggest_categorical(name, self.choices)

    def grid_values(self) -> list[int]:
        return list(self.choices)


def _check_range(low: float, high: float, log: bool, grid: list | None) -> None:
    """The checks a float and an integer dimension share."""
    if not low < high:
        raise ValueError(f"low must be below high, got {low} and {high}")
    if log and low <= 0:
        raise ValueError("a log-scaled range needs low > 0")
    if grid is not None:
        if not grid:
            raise ValueError("grid must hold at least one value")
        if outside := [v for v in grid if not low <= v <= high]:
            raise ValueError(f"grid values {outside} are outside [{low}, {high}]")


class SearchSpace(BaseModel):
    """What the tuner may change in a :class:`TrainConfig`; a dimension set to ``None`` keeps
    the base config's value.

    The network is ``depth`` layers of ``width`` units, halving per layer (never below 8): the
    shape of the default ``[256, 128]``, with two numbers to search instead of a list.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Wide, as a user tuning a new model would start: learning rate and weight decay over
    # four and seven decades, where much of the space trains badly. A narrow space around
    # good defaults makes every search look alike (random search finds its best at once).
    learning_rate: FloatRange | None = FloatRange(low=1e-5, high=1e-1, log=True)
    width: IntRange | Choice | None = Choice(choices=[16, 32, 64, 128, 256, 512])
    depth: IntRange | None = IntRange(low=1, high=4)
    dropout: FloatRange | None = FloatRange(low=0.0, high=0.5)
    batch_size: IntRange | Choice | None = Choice(choices=[128, 256, 512, 1024, 2048, 4096])
    max_embedding_dim: IntRange | Choice | None = Choice(choices=[2, 4, 8, 16, 32])
    weight_decay: FloatRange | None = FloatRange(low=1e-8, high=1e-1, log=True)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.width is not None and min(self.width.grid_values()) < 1:
            raise ValueError("width must be at least 1")
        if self.depth is not None and self.depth.low < 1:
            raise ValueError("depth must be at least 1")
        if self.dropout is not None and not (0 <= self.dropout.low and self.dropout.high < 1):
            raise ValueError("dropout must lie in [0, 1)")
        if self.learning_rate is not None and not (
            0 < self.learning_rate.low and self.learning_rate.high <= 1
        ):
            raise ValueError("learning_rate must lie in (0, 1]")
        return self

    def dimensions(self) -> dict[str, FloatRange | IntRange | Choice]:
        return {
            name: dim
            for name in type(self).model_fields
            if (dim := getattr(self, name)) is not None
        }

    def grid(self) -> dict[str, list[Any]]:
        """Every dimension's grid points, as ``optuna.samplers.GridSampler`` takes them."""
        return {name: dim.grid_values() for name, dim in self.dimensions().items()}

    def grid_size(self) -> int:
        return math.prod(len(values) for values in self.grid().values())


def hidden_layers(width: int, depth: int) -> list[int]:
    return [max(MIN_LAYER_WIDTH, width >> i) for i in range(depth)]


def suggest(trial: optuna.Trial, space: SearchSpace, base: TrainConfig) -> TrainConfig:
    """The trial's config: ``base`` with every searched dimension drawn from the sampler."""
    values = {name: dim.suggest(trial, name) for name, dim in space.dimensions().items()}
    return config_from_params(values, base)


def config_from_params(params: dict[str, Any], base: TrainConfig) -> TrainConfig:
    """Rebuild a trial's config from its stored params (the best trial's, for the final run)."""
    update = {k: v for k, v in params.items() if k in TrainConfig.model_fields}
    if "width" in params or "depth" in params:
        width = params.get("width", base.hidden[0])
        depth = params.get("depth", len(base.hidden))
        update["hidden"] = hidden_layers(int(width), int(depth))
    return TrainConfig.model_validate({**base.model_dump(), **update})
