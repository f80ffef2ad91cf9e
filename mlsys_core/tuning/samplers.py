"""Samplers and pruners from typed config. All of them are Optuna's; this module only picks
and parameterizes them, and rejects combinations Optuna would fail on deep inside a run."""

from __future__ import annotations

from typing import Literal, Self

import optuna
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlsys_core.tuning.space import SearchSpace

SamplerName = Literal["grid", "random", "tpe", "gp", "cmaes", "nsga2"]
PrunerName = Literal["none", "median", "successive_halving", "hyperband"]
Objectives = Literal["auc", "auc_vs_size"]

# Samplers that optimize one objective only (Optuna raises on a multi-objective study).
SINGLE_OBJECTIVE: frozenset[str] = frozenset({"cmaes"})


class SamplerConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: SamplerName = "tpe"
    seed: int | None = Field(
        default=0,
        description="Base seed; each process adds the study's trial count to it, so a resumed "
        "study or a second worker does not replay the same draws. None: unseeded.",
    )
    n_startup_trials: int = Field(
        default=8, ge=0, le=1000, description="Random trials before TPE, GP or CMA-ES model."
    )
    population_size: int = Field(default=8, ge=2, le=1000, description="NSGA-II generation size.")


class PrunerConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: PrunerName = "hyperband"
    min_resource: int = Field(
        default=1, ge=1, description="Epochs every trial gets before it can be pruned."
    )
    reduction_factor: int = Field(default=3, ge=2, le=10)
    n_warmup_steps: int = Field(default=1, ge=0, description="Median pruner: epochs not pruned.")
    n_startup_trials: int = Field(
        default=4, ge=0, description="Median pruner: finished trials before it prunes."
    )


class SearchConfig(BaseModel):
    """Sampler, pruner and objectives together, checked as a whole."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sampler: SamplerConfig = SamplerConfig()
    pruner: PrunerConfig = PrunerConfig()
    objectives: Objectives = Field(
        default="auc",
        description="auc: maximize validation AUC. auc_vs_size: also minimize the parameter "
        "count (a Pareto front; NSGA-II is made for it).",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.objectives != "auc" and self.pruner.name != "none":
            raise ValueError(
                "pruning needs a single objective: use pruner 'none' with objectives "
                f"{self.objectives!r}"
            )
        if self.objectives != "auc" and self.sampler.name in SINGLE_OBJECTIVE:
            raise ValueError(f"sampler {self.sampler.name!r} optimizes one objective only")
        return self

    @property
    def directions(self) -> list[str]:
        return ["maximize"] if self.objectives == "auc" else ["maximize", "minimize"]


def make_sampler(
    config: SamplerConfig, space: SearchSpace, seed_offset: int = 0
) -> optuna.samplers.BaseSampler:
    """The Optuna sampler ``config`` names, seeded with ``seed + seed_offset``."""
    seed = None if config.seed is None else config.seed + seed_offset
    startup = config.n_startup_trials
    match config.name:
        case "grid":
            return optuna.samplers.GridSampler(space.grid(), seed=seed)
        case "random":
            return optuna.samplers.RandomSampler(seed=seed)
        case "tpe":
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
        case "gp":
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
        case "cmaes":
            # CMA-ES models floats and ints only; categorical dimensions are drawn by an
            # independent sampler (Optuna's default), seeded too.
            return optuna.samplers.CmaEsSampler(
                seed=seed,
                n_startup_trials=startup,
                independent_sampler=optuna.samplers.RandomSampler(seed=seed),
                warn_independent_sampling=False,
            )
        case "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, population_size=config.population_size)
    raise ValueError(f"unknown sampler {config.name!r}")  # pragma: no cover - Literal-checked


def make_pruner(config: PrunerConfig, max_epochs: int) -> optuna.pruners.BasePruner:
    """The pruner ``config`` names; its resource is the epoch, capped at ``max_epochs``."""
    match config.name:
        case "none":
            return optuna.pruners.NopPruner()
        case "median":
            return optuna.pruners.MedianPruner(
                n_startup_trials=config.n_startup_trials, n_warmup_steps=config.n_warmup_steps
            )
        case "successive_halving":
            return optuna.pruners.SuccessiveHalvingPruner(
                min_resource=config.min_resource, reduction_factor=config.reduction_factor
            )
        case "hyperband":
            return optuna.pruners.HyperbandPruner(
                min_resource=config.min_resource,
                max_resource=max(max_epochs, config.min_resource),
                reduction_factor=config.reduction_factor,
            )
    raise ValueError(f"unknown pruner {config.name!r}")  # pragma: no cover - Literal-checked
