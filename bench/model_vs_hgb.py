"""Is the PyTorch model worth it? It against scikit-learn's HistGradientBoostingClassifier.

Both models see the same feature-set version, the same labeled rows and the same time split
(train on months 1-8, early-stop on month 9, test on months 10-12, New York time). The MLP
is trained exactly as ``train_and_log`` trains it (same preprocessing, ``Trainer`` and
``TrainConfig``) minus the MLflow logging. The gradient-boosted trees get the same raw
columns: categories natively (ordinal codes marked categorical), numbers as they are (NaN
allowed) and the same calendar parts.

    .venv/bin/python bench/model_vs_hgb.py                  # full data, 12 epochs
    .venv/bin/python bench/model_vs_hgb.py --fraction 0.05 --epochs 3
"""

from __future__ import annotations

import argparse
import os
import random
import time
from typing import Any

import numpy as np
from _common import (
    Stopwatch,
    format_table,
    load_spec,
    sampled_or_full,
    scratch_folder,
    use_isolated_state,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Test AUC, log loss and ECE of the mlsys PyTorch model and of a scikit-learn "
            "HistGradientBoostingClassifier on the same features and time split; prints the "
            "AUC ratio MLP/HGB."
        )
    )
    parser.add_argument(
        "--epochs", type=int, default=12, help="TrainConfig.epochs (default: 12, as the flow)"
    )
    parser.add_argument(
        "--hgb-max-iter",
        type=int,
        default=1000,
        help="boosting rounds at most; early stopping on the validation month (default: 1000)",
    )
    parser.add_argument(
        "--hgb-patience",
        type=int,
        default=20,
        help="rounds without validation-loss improvement before HGB stops (default: 20)",
    )
    parser.add_argument(
        "--fraction",
        type=float,
        default=1.0,
        help="share of flights, sampled per month (default: 1.0, the full data)",
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling and model seed")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary state folder (the lake)"
    )
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.hgb_max_iter < 1 or args.hgb_patience < 1:
        parser.error("--epochs, --hgb-max-iter and --hgb-patience must be at least 1")
    if not 0.0 < args.fraction <= 1.0:
        parser.error("--fraction must be in (0, 1]")
    return args


def build_features(spec: Any) -> Any:
    """Ingest, clean and assemble the feature set, as the pipeline's first three stages do."""
    from mlsys_core.config import Settings  # noqa: PLC0415
    from mlsys_core.data.cleaning import clean_snapshot  # noqa: PLC0415
    from mlsys_core.data.ingest import snapshot_source  # noqa: PLC0415
    from mlsys_core.data.lake import Lake  # noqa: PLC0415
    from mlsys_core.features.store import build_feature_set  # noqa: PLC0415

    lake = Lake(Settings().lake_dir)
    raw = {s.name: snapshot_source(s, lake) for s in spec.sources}
    clean = {t: clean_snapshot(r, spec.contracts[t], lake) for t, r in raw.items()}
    return build_feature_set(clean, spec, lake), lake


def fit_mlp(splits: dict, spec: Any, epochs: int, seed: int) -> tuple[dict, str]:
    """Test and validation probabilities of the mlsys model, trained as train_and_log does."""
    from mlsys_core.training.config import TrainConfig  # noqa: PLC0415
    from mlsys_core.training.matrices import fit_matrices  # noqa: PLC0415
    from mlsys_core.training.trainer import Trainer  # noqa: PLC0415

    config = TrainConfig(epochs=epochs, seed=seed, device="cpu")
    matrices = fit_matrices(splits, spec)
    x, y = matrices.x, matrices.y
    model_config = matrices.model_config(config)
    trainer = Trainer(config, model_config)
    trainer.setup(x["train"], y["train"], x["valid"], y["valid"])
    result = trainer.train()
    proba = {name: trainer.predict_proba(x[name]) for name in ("valid", "test")}
    stopped = "early stop" if result.stopped_early else "no early stop"
    return proba, f"best epoch {result.best_epoch}/{len(result.history)} ({stopped})"


def hgb_frames(splits: dict, spec: Any) -> tuple[dict, list[str]]:
    """Raw feature columns for the trees: categories as ordinal codes, numbers untouched."""
    import pandas as pd  # noqa: PLC0415
    from sklearn.preprocessing import OrdinalEncoder  # noqa: PLC0415

    from mlsys_core.features.preprocess import (  # noqa: PLC0415
        CALENDAR_CATEGORICAL,
        calendar_parts,
    )

    groups = spec.features
    cal_parts = list(groups.calendar)
    categorical = [
        *groups.categorical,
        *(f"cal_{p}" for p in cal_parts if p in CALENDAR_CATEGORICAL),
    ]
    numeric = [*groups.numeric, *(f"cal_{p}" for p in cal_parts if p not in CALENDAR_CATEGORICAL)]
    frames = {}
    for name, part in splits.items():
        cal = calendar_parts(part[spec.event_timestamp], cal_parts, groups.timezone)
        frame = pd.concat([part[[*groups.categorical, *groups.numeric]], cal], axis=1)
        for col in categorical:  # strings and NaN, as the MLP's preprocessor reads them
            values = frame[col]
            frame[col] = values.astype(str).where(values.notna(), np.nan).astype(object)
        frames[name] = frame[[*categorical, *numeric]]
    # Unseen or missing categories become NaN, which the trees route as missing values.
    encoder = OrdinalEncoder(
        handle_unknown="use_encoded_value",
        unknown_value=np.nan,
        encoded_missing_value=np.nan,
        dtype=np.float64,
    ).fit(frames["train"][categorical])
    for name, frame in frames.items():
        encoded = frame.copy()
        encoded[categorical] = encoder.transform(frame[categorical])
        frames[name] = encoded.astype("float64")
    return frames, categorical


def fit_hgb(splits: dict, spec: Any, max_iter: int, patience: int, seed: int) -> tuple[dict, str]:
    from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: PLC0415

    label = spec.label.name
    frames, categorical = hgb_frames(splits, spec)
    y = {name: part[label].to_numpy(np.int64) for name, part in splits.items()}
    model = HistGradientBoostingClassifier(
        max_iter=max_iter,
        categorical_features=[c in categorical for c in frames["train"].columns],
        early_stopping=True,
        scoring="loss",
        n_iter_no_change=patience,
        random_state=seed,
    )
    # Early stopping on the validation month, as the MLP does, not on a random slice of train.
    model.fit(frames["train"], y["train"], X_val=frames["valid"], y_val=y["valid"])
    proba = {name: model.predict_proba(frames[name])[:, 1] for name in ("valid", "test")}
    return proba, f"{model.n_iter_} rounds of {max_iter} (early stop on valid loss)"


def describe_splits(splits: dict, spec: Any) -> list[str]:
    import pandas as pd  # noqa: PLC0415

    lines = []
    for name, part in splits.items():
        local = pd.to_datetime(part[spec.event_timestamp], utc=True).dt.tz_convert(
            spec.features.timezone
        )
        months = sorted(local.dt.month.unique().tolist())
        lines.append(
            f"  {name:<5} {len(part):>7,} labeled rows, months {months[0]}-{months[-1]},"
            f" positive rate {part[spec.label.name].mean():.3f}"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with scratch_folder("mlsys-bench-hgb-", keep=args.keep) as root:
        use_isolated_state(root / "state")
        random.seed(args.seed)
        np.random.seed(args.seed)
        from mlsys_core.features.store import load_feature_set  # noqa: PLC0415
        from mlsys_core.training.metrics import binary_metrics  # noqa: PLC0415
        from mlsys_core.training.run import labeled_splits  # noqa: PLC0415

        spec_path, data = sampled_or_full(root / "data", args.fraction, args.seed)
        spec = load_spec(str(spec_path) if spec_path else None)
        watch = Stopwatch()
        with watch.lap("features"):
            features, lake = build_features(spec)
            frame, spec = load_feature_set(features, lake)
            splits = labeled_splits(frame, spec)
        print(f"model_vs_hgb: {data}, feature set {features.version}")
        print("\n".join(describe_splits(splits, spec)))

        label = spec.label.name
        y_test = splits["test"][label].to_numpy(np.float64)
        y_valid = splits["valid"][label].to_numpy(np.float64)
        results = {}
        for name, fit in (
            ("MLP (mlsys)", lambda: fit_mlp(splits, spec, args.epochs, args.seed)),
            (
                "HGB (sklearn)",
                lambda: fit_hgb(splits, spec, args.hgb_max_iter, args.hgb_patience, args.seed),
            ),
        ):
            start = time.perf_counter()
            proba, detail = fit()
            results[name] = {
                "seconds": time.perf_counter() - start,
                "detail": detail,
                "valid": binary_metrics(y_valid, proba["valid"]),
                "test": binary_metrics(y_test, proba["test"]),
            }
            print(f"  {name}: {results[name]['seconds']:.1f} s, {detail}")

        rows = [
            [
                name,
                f"{r['seconds']:.1f}",
                f"{r['valid']['auc']:.4f}",
                f"{r['test']['auc']:.4f}",
                f"{r['test']['log_loss']:.4f}",
                f"{r['test']['ece']:.4f}",
                f"{r['test']['brier']:.4f}",
            ]
            for name, r in results.items()
        ]
        header = ["model", "fit s", "valid AUC", "test AUC", "test log loss", "test ECE", "Brier"]
        mlp, hgb = results["MLP (mlsys)"]["test"], results["HGB (sklearn)"]["test"]
        print()
        print(format_table(header, rows))
        print()
        print(f"test AUC ratio MLP/HGB: {mlp['auc'] / hgb['auc']:.4f}")
        print(f"test log-loss ratio MLP/HGB: {mlp['log_loss'] / hgb['log_loss']:.4f}")
        print(
            f"(feature set built in {watch.laps['features']:.1f} s; epochs {args.epochs}, "
            f"seed {args.seed}; test rows {len(y_test):,}; 1-minute load average "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
        )


if __name__ == "__main__":
    main()
