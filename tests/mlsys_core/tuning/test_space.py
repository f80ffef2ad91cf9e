"""Search spaces: typed bounds, suggestions inside them, and a grid the grid sampler covers."""

from __future__ import annotations

import itertools

import optuna
import pytest
from pydantic import ValidationError

from mlsys_core.training.config import TrainConfig
from mlsys_core.tuning.space import (
    Choice,
    FloatRange,
    IntRange,
    SearchSpace,
    config_from_params,
    hidden_layers,
    suggest,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_suggestions_stay_in_bounds_and_build_a_valid_config():
    space = SearchSpace()
    base = TrainConfig(epochs=3, seed=7)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        config = suggest(trial, space, base)
        p = trial.params
        assert set(p) == set(space.dimensions())
        assert 1e-5 <= config.learning_rate <= 1e-1
        assert 1e-8 <= config.weight_decay <= 1e-1
        assert 0.0 <= config.dropout <= 0.5
        assert config.batch_size in (128, 256, 512, 1024, 2048, 4096)
        assert config.max_embedding_dim in (2, 4, 8, 16, 32)
        assert 1 <= p["depth"] <= 4 and p["width"] in (16, 32, 64, 128, 256, 512)
        assert len(config.hidden) == p["depth"] and config.hidden[0] == p["width"]
        assert (config.epochs, config.seed) == (3, 7)  # not searched: kept from the base
        study.tell(trial, 0.5)


def test_log_ranges_sample_in_log_space():
    dim = FloatRange(low=1e-5, high=1e-1, log=True)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    values = [dim.suggest(study.ask(), "lr") for _ in range(400)]
    below_1e3 = sum(v < 1e-3 for v in values) / len(values)
    assert below_1e3 == pytest.approx(0.5, abs=0.1)  # uniform in log10: half under 1e-3


def test_unsearched_dimensions_keep_the_base_config():
    space = SearchSpace(
        learning_rate=FloatRange(low=0.01, high=0.02),
        width=None,
        depth=None,
        dropout=None,
        batch_size=None,
        max_embedding_dim=None,
        weight_decay=None,
    )
    base = TrainConfig(hidden=[32, 16], dropout=0.2)
    trial = optuna.create_study().ask()
    config = suggest(trial, space, base)
    assert set(trial.params) == {"learning_rate"}
    assert config.hidden == [32, 16] and config.dropout == 0.2


def test_hidden_layers_halve_and_never_drop_below_eight():
    assert hidden_layers(128, 2) == [128, 64]
    assert hidden_layers(32, 4) == [32, 16, 8, 8]


def test_config_from_params_rebuilds_the_suggested_config():
    base = TrainConfig(epochs=4)
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3)).ask()
    suggested = suggest(trial, SearchSpace(), base)
    assert config_from_params(trial.params, base) == suggested


def test_grid_sampler_covers_every_grid_point_once():
    space = SearchSpace(
        learning_rate=FloatRange(low=1e-4, high=1e-2, log=True),  # default grid: 3 points
        width=Choice(choices=[32, 64]),
        depth=IntRange(low=1, high=2, grid=[1, 2]),
        dropout=None,
        batch_size=None,
        max_embedding_dim=None,
        weight_decay=None,
    )
    grid = space.grid()
    assert grid["learning_rate"] == pytest.approx([1e-4, 1e-3, 1e-2])
    assert space.grid_size() == 12
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(grid, seed=0))
    seen = []

    def objective(trial: optuna.Trial) -> float:
        config = suggest(trial, space, TrainConfig())
        seen.append(tuple(trial.params[k] for k in grid))
        return config.learning_rate

    # More trials than grid points: the grid sampler stops the study when the grid is done.
    study.optimize(objective, n_trials=20)
    assert sorted(seen) == sorted(itertools.product(*grid.values()))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: FloatRange(low=1.0, high=0.5), "below high"),
        (lambda: FloatRange(low=0.0, high=1.0, log=True), "low > 0"),
        (lambda: IntRange(low=1, high=4, grid=[1, 9]), "outside"),
        (lambda: Choice(choices=[]), "at least 1"),
        (lambda: SearchSpace(dropout=FloatRange(low=0.1, high=1.0)), "dropout"),
        (lambda: SearchSpace(depth=IntRange(low=0, high=2)), "depth"),
    ],
)
def test_bad_spaces_are_rejected_with_a_clear_message(make, message):
    with pytest.raises(ValidationError, match=message):
        make()
