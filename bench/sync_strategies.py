"""Synchronous all-reduce against post-local SGD (and one process, and FSDP): time and
final metric, each a real torchrun group on this machine.

Every variant trains the same feature set with the same ``TrainConfig`` (global batch, seed,
epochs, no early stop) through ``mlsys_core.training.launch.train``, i.e. exactly what the
train flow runs, MLflow logging included. Printed per variant: the wall time of the launch
(process start, data loading, training, logging), the training time alone as rank 0 measured
it (``train_seconds``), and validation/test AUC and test log loss.

    .venv/bin/python bench/sync_strategies.py                      # full data, 3 epochs
    .venv/bin/python bench/sync_strategies.py --fraction 0.2 --period 4
"""

from __future__ import annotations

import argparse
import os
import time

from _common import (
    format_table,
    load_spec,
    scratch_folder,
    use_isolated_state,
    write_sampled_sources,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--fraction", type=float, default=1.0, help="share of the flights")
    parser.add_argument("--nproc", type=int, default=2, help="ranks for ddp/fsdp")
    parser.add_argument("--period", type=int, default=8, help="local SGD: average every k")
    parser.add_argument("--warmup", type=int, default=0, help="local SGD: all-reduce steps")
    parser.add_argument("--skip-fsdp", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the temporary state folder")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.nproc < 2 or args.period < 2 or not 0 < args.fraction <= 1:
        parser.error("--epochs >= 1, --nproc >= 2, --period >= 2, --fraction in (0, 1]")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with scratch_folder("mlsys-bench-sync-", keep=args.keep) as root:
        use_isolated_state(root / "state")
        from mlsys_core.config import Settings  # noqa: PLC0415
        from mlsys_core.data.cleaning import clean_snapshot  # noqa: PLC0415
        from mlsys_core.data.ingest import snapshot_source  # noqa: PLC0415
        from mlsys_core.data.lake import Lake  # noqa: PLC0415
        from mlsys_core.features.store import build_feature_set  # noqa: PLC0415
        from mlsys_core.training.config import TrainConfig  # noqa: PLC0415
        from mlsys_core.training.distributed import LaunchConfig  # noqa: PLC0415
        from mlsys_core.training.launch import train  # noqa: PLC0415

        sampled = args.fraction < 1
        spec_path = write_sampled_sources(root / "data", args.fraction) if sampled else None
        spec = load_spec(str(spec_path) if spec_path else None)
        settings = Settings()
        lake = Lake(settings.lake_dir)
        raw = {s.name: snapshot_source(s, lake) for s in spec.sources}
        clean = {t: clean_snapshot(r, spec.contracts[t], lake) for t, r in raw.items()}
        features = build_feature_set(clean, spec, lake)
        config = TrainConfig(epochs=args.epochs, patience=args.epochs, device="cpu")
        n = args.nproc
        variants = {
            "single (1 process)": LaunchConfig(),
            f"ddp all-reduce ({n} ranks)": LaunchConfig(strategy="ddp", nproc_per_node=n),
            f"ddp local SGD k={args.period} ({n} ranks)": LaunchConfig(
                strategy="ddp",
                nproc_per_node=n,
                sync="local_sgd",
                local_sgd_period=args.period,
                local_sgd_warmup=args.warmup,
            ),
        }
        if not args.skip_fsdp:
            variants[f"fsdp ({n} ranks)"] = LaunchConfig(strategy="fsdp", nproc_per_node=n)
        print(
            f"train rows {features.split_rows.get('train', 0):,} (before dropping unlabeled), "
            f"epochs {args.epochs}, global batch {config.batch_size}, cpus {os.cpu_count()}"
        )
        rows = []
        for name, launch in variants.items():
            load = os.getloadavg()[0]
            start = time.perf_counter()
            trained = train(features, config, settings, launch, run_name=name)
            wall = time.perf_counter() - start
            m = trained.metrics
            scores = [f"{m[k]:.4f}" for k in ("valid_auc", "test_auc", "test_log_loss")]
            rows.append([name, load, wall, m["train_seconds"], *scores])
            print(f"  done: {name} in {wall:.1f} s", flush=True)
        print()
        header = ["variant", "load", "wall s", "train s", "valid AUC", "test AUC", "test logloss"]
        print(format_table(header, rows))
        base = {r[0]: r for r in rows}
        allreduce = base[f"ddp all-reduce ({n} ranks)"]
        local = base[f"ddp local SGD k={args.period} ({n} ranks)"]
        print(
            f"\n  local SGD / all-reduce: train time {local[3] / allreduce[3]:.3f}x, "
            f"test AUC {float(local[5]) - float(allreduce[5]):+.4f}"
        )


if __name__ == "__main__":
    main()
