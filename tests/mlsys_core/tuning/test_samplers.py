"""Every sampler and pruner the config names is Optuna's, runs on our search space, and
invalid combinations fail before a study starts."""

from __future__ import annotations

import math

import optuna
import pytest
from pydantic import ValidationError

from mlsys_core.training.config import TrainConfig
from mlsys_core.tuning.samplers import (
    PrunerConfig,
    SamplerConfig,
    SearchConfig,
    make_pruner,
    make_sampler,
)
from mlsys_core.tuning.space import SearchSpace, suggest

optuna.logging.set_verbosity(optuna.logging.WARNING)

SAMPLERS = {
    "grid": optuna.samplers.GridSampler,
    "random": optuna.samplers.RandomSampler,
    "tpe": optuna.samplers.TPESampler,
    "gp": optuna.samplers.GPSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "nsga2": optuna.samplers.NSGAIISampler,
}


def _quality(config: TrainConfig) -> float:
    """A cheap stand-in objective with its optimum inside the space (lr 3e-3, dropout 0.1)."""
    return -((math.log10(config.learning_rate) + 2.5) ** 2) - (config.dropout - 0.1) ** 2


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_each_sampler_runs_on_the_search_space(name: str):
    space = SearchSpace()
    search = SearchConfig(
        sampler=SamplerConfig(name=name, n_startup_trials=3, population_size=4),
        pruner=PrunerConfig(name="none"),
        objectives="auc_vs_size" if name == "nsga2" else "auc",
    )
    sampler = make_sampler(search.sampler, space)
    assert type(sampler) is SAMPLERS[name]
    study = optuna.create_study(directions=search.directions, sampler=sampler)

    def objective(trial: optuna.Trial) -> float | tuple[float, float]:
        config = suggest(trial, space, TrainConfig())
        size = float(sum(config.hidden))
        return (_quality(config), size) if len(search.directions) == 2 else _quality(config)

    study.optimize(objective, n_trials=8)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 8
    assert all(set(t.params) == set(space.dimensions()) for t in complete)


def test_a_seeded_sampler_repeats_and_an_offset_moves_it():
    space = SearchSpace()

    def draws(offset: int) -> list[dict]:
        sampler = make_sampler(SamplerConfig(name="random", seed=5), space, seed_offset=offset)
        study = optuna.create_study(sampler=sampler)
        study.optimize(lambda t: _quality(suggest(t, space, TrainConfig())), n_trials=3)
        return [t.params for t in study.trials]

    assert draws(0) == draws(0)
    assert draws(0) != draws(3)


def test_tpe_beats_random_on_a_smooth_objective():
    space = SearchSpace()
    best = {}
    for name in ("random", "tpe"):
        sampler = make_sampler(SamplerConfig(name=name, seed=0, n_startup_trials=8), space)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.optimize(lambda t: _quality(suggest(t, space, TrainConfig())), n_trials=40)
        best[name] = study.best_value
    assert best["tpe"] > best["random"]


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("none", optuna.pruners.NopPruner),
        ("median", optuna.pruners.MedianPruner),
        ("successive_halving", optuna.pruners.SuccessiveHalvingPruner),
        ("hyperband", optuna.pruners.HyperbandPruner),
    ],
)
def test_pruners_stop_the_worse_trials_from_per_epoch_values(name, kind):
    pruner = make_pruner(PrunerConfig(name=name, n_startup_trials=2), max_epochs=9)
    assert type(pruner) is kind
    study = optuna.create_study(
        direction="maximize", pruner=pruner, sampler=optuna.samplers.RandomSampler(seed=0)
    )
    quality = {}

    def objective(trial: optuna.Trial) -> float:
        q = trial.suggest_float("q", 0.0, 1.0)
        quality[trial.number] = q
        for epoch in range(1, 10):  # a learning curve that rises towards q
            value = q * (1 - 0.5**epoch)
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned
        return value

    study.optimize(objective, n_trials=30)
    pruned = [quality[t.number] for t in study.trials if t.state.name == "PRUNED"]
    complete = [quality[t.number] for t in study.trials if t.state.name == "COMPLETE"]
    if name == "none":
        assert pruned == []
        return
    assert pruned, f"{name} pruned nothing"
    assert sum(pruned) / len(pruned) < sum(complete) / len(complete)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"objectives": "auc_vs_size"}, "pruning needs a single objective"),
        (
            {
                "objectives": "auc_vs_size",
                "pruner": PrunerConfig(name="none"),
                "sampler": SamplerConfig(name="cmaes"),
            },
            "one objective only",
        ),
    ],
)
def test_invalid_combinations_fail_before_a_study_starts(kwargs, message):
    with pytest.raises(ValidationError, match=message):
        SearchConfig(**kwargs)
