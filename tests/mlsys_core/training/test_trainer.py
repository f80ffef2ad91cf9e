"""The plain PyTorch trainer: learns, is deterministic, stops early on the best weights, and
writes checkpoints atomically that load without unpickling objects."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from mlsys_core.training.checkpoint import CheckpointStore
from mlsys_core.training.config import ModelConfig, TrainConfig
from mlsys_core.training.distributed import LaunchConfig
from mlsys_core.training.model import TabularMLP
from mlsys_core.training.trainer import (
    EpochMetrics,
    Trainer,
    load_tensors,
    resolve_device,
    save_tensors_atomically,
)

CATEGORY_EFFECT = np.array([0.0, -1.0, 0.0, 0.5, 1.0])  # code 0 (missing) never drawn


@dataclass
class Problem:
    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    p_valid: np.ndarray  # the true probabilities: the best any model can do

    model_config = ModelConfig(cardinalities=[5], n_numeric=2, hidden=[32, 16], dropout=0.0)


def make_problem(n_train: int, n_valid: int, signal: float = 1.0, seed: int = 0) -> Problem:
    """One category (codes 1..4) and two numbers with a known logistic effect on the label."""
    rng = np.random.default_rng(seed)
    n = n_train + n_valid
    cat = rng.integers(1, 5, n)
    num = rng.normal(size=(n, 2))
    logit = signal * (2.0 * num[:, 0] - 1.5 * num[:, 1] + CATEGORY_EFFECT[cat])
    p = 1.0 / (1.0 + np.exp(-logit))
    y = (rng.uniform(size=n) < p).astype(np.float32)
    x = np.column_stack([cat, num]).astype(np.float32)
    return Problem(x[:n_train], y[:n_train], x[n_train:], y[n_train:], p[n_train:])


def log_loss(y: np.ndarray, proba: np.ndarray) -> float:
    p = np.clip(proba.astype(np.float64), 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def fit(problem: Problem, config: TrainConfig, model_config: ModelConfig | None = None):
    trainer = Trainer(config, model_config or problem.model_config)
    trainer.setup(problem.x_train, problem.y_train, problem.x_valid, problem.y_valid)
    return trainer, trainer.train()


@pytest.fixture(scope="module")
def learnable() -> Problem:
    return make_problem(3_000, 1_000)


FAST = TrainConfig(
    epochs=4, batch_size=128, learning_rate=1e-2, hidden=[32, 16], dropout=0.0, device="cpu"
)


def test_trainer_learns_a_separable_problem(learnable: Problem) -> None:
    trainer, result = fit(learnable, FAST)
    bayes_auc = roc_auc_score(learnable.y_valid, learnable.p_valid)
    auc = roc_auc_score(learnable.y_valid, trainer.predict_proba(learnable.x_valid))
    assert bayes_auc > 0.85  # the problem is learnable at all
    assert auc > 0.8
    assert auc > bayes_auc - 0.05
    assert len(result.history) >= 1
    assert all(math.isfinite(m.train_loss) for m in result.history)
    # Training reduces the training loss from the first epoch to the best one.
    assert result.history[result.best_epoch - 1].train_loss <= result.history[0].train_loss


def test_same_seed_gives_identical_history(learnable: Problem) -> None:
    first, result_a = fit(learnable, FAST)
    # Whatever happened to the global RNGs in between, setup reseeds from the config.
    torch.manual_seed(12345)
    np.random.seed(12345)
    torch.rand(100)
    second, result_b = fit(learnable, FAST)
    assert result_a.history == result_b.history
    assert result_a.best_epoch == result_b.best_epoch
    np.testing.assert_array_equal(
        first.predict_proba(learnable.x_valid), second.predict_proba(learnable.x_valid)
    )


def test_a_different_seed_gives_a_different_history(learnable: Problem) -> None:
    _, result_a = fit(learnable, FAST)
    _, result_b = fit(learnable, FAST.model_copy(update={"seed": 1}))
    assert result_a.history != result_b.history


def test_on_epoch_sees_every_epoch_in_order(learnable: Problem) -> None:
    seen: list[EpochMetrics] = []
    trainer = Trainer(FAST.model_copy(update={"epochs": 3}), learnable.model_config)
    trainer.setup(learnable.x_train, learnable.y_train, learnable.x_valid, learnable.y_valid)
    result = trainer.train(on_epoch=seen.append)
    assert seen == result.history
    assert [m.epoch for m in seen] == list(range(1, len(seen) + 1))


def test_before_epoch_refusing_stops_before_that_epoch(learnable: Problem) -> None:
    asked: list[int] = []

    def before_epoch(epoch: int) -> bool:
        asked.append(epoch)
        return epoch <= 2

    trainer = Trainer(FAST.model_copy(update={"epochs": 4}), learnable.model_config)
    trainer.setup(learnable.x_train, learnable.y_train, learnable.x_valid, learnable.y_valid)
    result = trainer.train(before_epoch=before_epoch)
    assert asked == [1, 2, 3] and trainer.epoch == 2
    assert [m.epoch for m in result.history] == [1, 2]
    assert result.refused and not result.stopped_early
    # Those two epochs are the ones an uninterrupted run trains first.
    _, full = fit(learnable, FAST.model_copy(update={"epochs": 4}))
    assert result.history == full.history[:2] and not full.refused
    # The model kept is the best of the epochs trained.
    proba = trainer.predict_proba(learnable.x_valid)
    best = result.history[result.best_epoch - 1]
    assert log_loss(learnable.y_valid, proba) == pytest.approx(best.val_loss, rel=1e-5)


def test_history_val_metrics_are_the_validation_scores(learnable: Problem) -> None:
    config = FAST.model_copy(update={"epochs": 1})
    trainer, result = fit(learnable, config)
    proba = trainer.predict_proba(learnable.x_valid)
    (only,) = result.history
    assert only.val_loss == pytest.approx(log_loss(learnable.y_valid, proba), rel=1e-6)
    assert only.val_auc == pytest.approx(roc_auc_score(learnable.y_valid, proba), abs=1e-9)


def test_early_stopping_restores_the_best_weights() -> None:
    # Few noisy rows and a wide net without regularisation: validation loss soon climbs.
    problem = make_problem(300, 2_000, signal=0.3, seed=3)
    model_config = ModelConfig(cardinalities=[5], n_numeric=2, hidden=[64, 64], dropout=0.0)
    config = TrainConfig(
        epochs=100,
        batch_size=32,
        learning_rate=1e-2,
        weight_decay=0.0,
        hidden=[64, 64],
        dropout=0.0,
        patience=3,
        device="cpu",
    )
    trainer, result = fit(problem, config, model_config)

    losses = [m.val_loss for m in result.history]
    best = result.history[result.best_epoch - 1]
    assert result.stopped_early
    assert len(losses) < config.epochs
    assert best.epoch == result.best_epoch
    assert best.val_loss == pytest.approx(min(losses), abs=1e-5)
    # It stopped exactly `patience` epochs after the last improvement.
    assert len(losses) - result.best_epoch == config.patience
    assert all(loss >= best.val_loss - 1e-5 for loss in losses[result.best_epoch :])
    # The setup does what it should: the last epoch is clearly worse than the best one.
    assert losses[-1] > best.val_loss + 1e-4

    restored = log_loss(problem.y_valid, trainer.predict_proba(problem.x_valid))
    assert restored == pytest.approx(best.val_loss, rel=1e-5)
    assert restored != pytest.approx(losses[-1], rel=1e-5)


def test_save_checkpoint_loads_with_weights_only(learnable: Problem, tmp_path: Path) -> None:
    trainer, _ = fit(learnable, FAST.model_copy(update={"epochs": 2}))
    path = tmp_path / "nested" / "ckpt.pt"  # the folder does not exist yet
    trainer.save_checkpoint(path)

    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt.pt"]  # no temp file left
    raw = torch.load(path, map_location="cpu", weights_only=True)
    state = load_tensors(path)
    assert set(state) == set(raw)
    assert {"model", "optimizer", "scheduler", "epoch", "global_step", "order_rng"} <= set(state)
    assert state["epoch"] == trainer.epoch == 2
    assert state["global_step"] == 2 * trainer.steps_per_epoch

    live = trainer.model.state_dict()
    assert set(state["model"]) == set(live)
    for key, tensor in live.items():
        assert torch.equal(state["model"][key].cpu(), tensor.cpu()), key

    rebuilt = TabularMLP(learnable.model_config)
    rebuilt.load_state_dict(state["model"])
    rebuilt.eval()
    with torch.no_grad():
        logits = rebuilt(torch.as_tensor(learnable.x_valid))
    np.testing.assert_allclose(
        torch.sigmoid(logits).numpy(), trainer.predict_proba(learnable.x_valid), rtol=1e-6
    )
    optimizer = torch.optim.AdamW(rebuilt.parameters())
    optimizer.load_state_dict(state["optimizer"])
    assert optimizer.state_dict()["state"].keys() == trainer.optimizer.state_dict()["state"].keys()


def test_save_checkpoint_replaces_an_older_one(learnable: Problem, tmp_path: Path) -> None:
    trainer = Trainer(FAST.model_copy(update={"epochs": 1}), learnable.model_config)
    trainer.setup(learnable.x_train, learnable.y_train, learnable.x_valid, learnable.y_valid)
    path = tmp_path / "ckpt.pt"
    trainer.save_checkpoint(path)
    trainer.train()
    trainer.save_checkpoint(path)
    assert load_tensors(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_failed_write_keeps_the_previous_file_intact(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    save_tensors_atomically({"w": torch.ones(3)}, path)
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - whatever pickling raises for a lambda
        save_tensors_atomically({"w": torch.zeros(3), "bad": lambda: None}, path)
    assert path.read_bytes() == before
    assert torch.equal(load_tensors(path)["w"], torch.ones(3))


def test_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    with pytest.raises(Exception):  # noqa: B017 - whatever pickling raises for a lambda
        save_tensors_atomically({"bad": lambda: None}, path)
    assert list(tmp_path.iterdir()) == []


def test_load_tensors_refuses_arbitrary_objects(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"obj": Path("/")}, path)  # a pickled non-tensor object
    with pytest.raises(Exception, match="(?i)weights_only"):
        load_tensors(path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_asking_for_cuda_without_it_is_a_clear_error(learnable: Problem) -> None:
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        resolve_device("cuda")
    trainer = Trainer(FAST.model_copy(update={"device": "cuda"}), learnable.model_config)
    with pytest.raises(RuntimeError, match="CUDA"):
        trainer.setup(learnable.x_train, learnable.y_train, learnable.x_valid, learnable.y_valid)


def test_resolve_device_cpu_and_auto() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_trains_on_cuda(learnable: Problem, tmp_path: Path) -> None:
    trainer, result = fit(learnable, FAST.model_copy(update={"device": "cuda"}))
    assert trainer.device.type == "cuda"
    assert all(p.device.type == "cuda" for p in trainer.model.parameters())
    proba = trainer.predict_proba(learnable.x_valid)
    assert roc_auc_score(learnable.y_valid, proba) > 0.8
    assert result.history[result.best_epoch - 1].val_loss == pytest.approx(
        log_loss(learnable.y_valid, proba), rel=1e-4
    )
    path = tmp_path / "ckpt.pt"
    trainer.save_checkpoint(path)
    state = load_tensors(path)  # loads onto the CPU
    cpu_model = TabularMLP(learnable.model_config)
    cpu_model.load_state_dict(state["model"])
    cpu_model.eval()
    with torch.no_grad():
        cpu_proba = torch.sigmoid(cpu_model(torch.as_tensor(learnable.x_valid))).numpy()
    np.testing.assert_allclose(cpu_proba, proba, atol=1e-4)


def reference_loop(
    problem: Problem, config: TrainConfig, model_config: ModelConfig
) -> tuple[list[tuple[float, float, float]], np.ndarray]:
    """The single-process CPU training the trainer promises, written out as the plainest
    PyTorch loop: seed, AdamW, a seeded permutation per epoch, batches in order (a last
    batch of one row is skipped: BatchNorm cannot train on it), the epoch's mean training
    loss, then validation log loss and AUC (sklearn), keeping the best epoch's weights."""
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    model = TabularMLP(model_config)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    generator = torch.Generator().manual_seed(config.seed)
    x, y = torch.as_tensor(problem.x_train), torch.as_tensor(problem.y_train)
    history, best_loss, best_state = [], math.inf, None
    for _ in range(config.epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), config.batch_size):
            idx = order[start : start + config.batch_size]
            if len(idx) < 2:
                continue
            optimizer.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        model.eval()
        with torch.no_grad():
            proba = torch.sigmoid(model(torch.as_tensor(problem.x_valid))).numpy()
        val_loss = sk_log_loss(problem.y_valid, np.clip(proba.astype(np.float64), 1e-7, 1 - 1e-7))
        history.append((total / len(x), val_loss, roc_auc_score(problem.y_valid, proba)))
        if val_loss < best_loss - 1e-5:
            best_loss = val_loss
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    model.eval()
    with torch.no_grad():
        return history, torch.sigmoid(model(torch.as_tensor(problem.x_valid))).numpy()


def test_cpu_results_are_those_of_a_plain_pytorch_loop(learnable: Problem) -> None:
    """On the CPU the trainer (with its DDP/FSDP, autocast, fused-AdamW and scheduler paths
    switched off) computes what the plain loop computes, number for number: the reference
    is computed here, with the same torch, so the comparison holds on any version."""
    config = FAST.model_copy(update={"dropout": 0.1, "epochs": 3})
    model_config = learnable.model_config.model_copy(update={"dropout": 0.1})
    trainer, result = fit(learnable, config, model_config)
    expected, expected_proba = reference_loop(learnable, config, model_config)
    got = [(m.train_loss, m.val_loss, m.val_auc) for m in result.history]
    # Same operations in the same order: equal up to the summation order of the epoch loss.
    np.testing.assert_allclose(got, expected, rtol=1e-9)
    np.testing.assert_allclose(trainer.predict_proba(learnable.x_valid), expected_proba, rtol=1e-6)


def test_resume_from_a_mid_epoch_checkpoint_is_exact(learnable: Problem, tmp_path: Path) -> None:
    """Train with checkpoints every 5 steps; drop every checkpoint after one in the middle of
    epoch 2 (as if the process died there); a new trainer resumes and ends bit-identical."""
    config = FAST.model_copy(update={"epochs": 3, "dropout": 0.2, "lr_schedule": "cosine"})
    model_config = learnable.model_config.model_copy(update={"dropout": 0.2})
    launch = LaunchConfig(checkpoint_every_steps=5, keep_checkpoints=100)
    arrays = (learnable.x_train, learnable.y_train, learnable.x_valid, learnable.y_valid)

    store = CheckpointStore(tmp_path / "ckpt", keep=100)
    full = Trainer(config, model_config, launch, store)
    full.setup(*arrays)
    assert full.resumed_from is None
    expected = full.train()
    per_epoch = full.steps_per_epoch
    mid = next(s for s in store.steps()[::-1] if per_epoch < s < 2 * per_epoch and s % per_epoch)
    for step in store.steps():
        if step > mid:
            store.path_for(step).unlink()

    resumed = Trainer(config, model_config, launch, store)
    resumed.setup(*arrays)
    assert resumed.resumed_from == mid
    assert (resumed.epoch, resumed.step_in_epoch) == (1, mid - per_epoch)
    seen: list[EpochMetrics] = []
    result = resumed.train(on_epoch=seen.append)
    assert result.history == expected.history == seen  # every epoch reported, in order
    assert result.best_epoch == expected.best_epoch
    for key, tensor in full.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], tensor), key
    assert resumed.optimizer.param_groups[0]["lr"] == full.optimizer.param_groups[0]["lr"]


def test_resume_refuses_a_checkpoint_of_another_config(learnable: Problem, tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=1)
    arrays = (learnable.x_train, learnable.y_train, learnable.x_valid, learnable.y_valid)
    first = Trainer(FAST.model_copy(update={"epochs": 1}), learnable.model_config, None, store)
    first.setup(*arrays)
    first.train()
    other = Trainer(FAST.model_copy(update={"epochs": 2}), learnable.model_config, None, store)
    with pytest.raises(ValueError, match="another training config"):
        other.setup(*arrays)


def test_cosine_schedule_decays_the_learning_rate_to_zero(learnable: Problem) -> None:
    config = FAST.model_copy(update={"epochs": 2, "lr_schedule": "cosine", "patience": 5})
    trainer, _ = fit(learnable, config)
    assert trainer.global_step == 2 * trainer.steps_per_epoch
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    constant, _ = fit(learnable, FAST.model_copy(update={"epochs": 2}))
    assert constant.optimizer.param_groups[0]["lr"] == FAST.learning_rate


def test_distributed_strategies_refuse_to_run_in_process(learnable: Problem) -> None:
    trainer = Trainer(FAST, learnable.model_config, LaunchConfig(strategy="ddp"))
    with pytest.raises(RuntimeError, match="launch through torchrun"):
        trainer.setup(learnable.x_train, learnable.y_train, learnable.x_valid, learnable.y_valid)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_path_is_resident_bf16_and_fused(learnable: Problem) -> None:
    config = FAST.model_copy(update={"device": "cuda", "batch_size": 1024})
    trainer, result = fit(learnable, config)
    assert trainer.x_train.device.type == "cuda"  # data resident on the device
    assert trainer.optimizer.param_groups[0]["fused"] is True
    with trainer._autocast():
        out = trainer.model.mlp[0](torch.zeros(2, trainer.model.mlp[0].in_features, device="cuda"))
    assert out.dtype == torch.bfloat16
    auc = roc_auc_score(learnable.y_valid, trainer.predict_proba(learnable.x_valid))
    assert auc > 0.8
    fp32, _ = fit(learnable, config.model_copy(update={"precision": "fp32"}))
    cpu, _ = fit(learnable, config.model_copy(update={"device": "cpu"}))
    auc_cpu = roc_auc_score(learnable.y_valid, cpu.predict_proba(learnable.x_valid))
    assert auc == pytest.approx(auc_cpu, abs=0.02)  # bf16 changes rounding, not the model
    assert fp32.optimizer.param_groups[0]["fused"] is True


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_compile_trains(learnable: Problem) -> None:
    trainer, result = fit(learnable, FAST.model_copy(update={"device": "cuda", "compile": True}))
    assert roc_auc_score(learnable.y_valid, trainer.predict_proba(learnable.x_valid)) > 0.8
