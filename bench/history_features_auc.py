"""Do the feature store's history features pay? Test AUC with and without them, for the
mlsys MLP and for scikit-learn's HistGradientBoostingClassifier.

One feature set is built the way the pipeline builds it (the offline store's point-in-time
joins: weather and the carrier/route/plane/origin history, and the open events: flights
scheduled and not yet departed). Three variants of the spec's numeric features: all of
them; without the open-event features (views with ``closes``); without any history feature
(lookups, weather and calendar only). They differ by those columns only. Both models are
trained exactly as in ``model_vs_hgb.py`` (same split: months 1-8 train, 9 validation,
10-12 test).

    .venv/bin/python bench/history_features_auc.py
    .venv/bin/python bench/history_features_auc.py --fraction 0.1 --epochs 3
"""

from __future__ import annotations

import os
import random
import time

import numpy as np
from _common import (
    format_table,
    load_spec,
    sampled_or_full,
    scratch_folder,
    use_isolated_state,
)
from model_vs_hgb import build_features, describe_splits, fit_hgb, fit_mlp, parse_args

GOAL_AUC = 0.745
GOAL_ECE = 0.02


def evaluate(splits: dict, specs: dict, args: object) -> tuple[list[list[str]], dict]:
    """Fit both models on each feature variant; table rows, and test AUC per (variant,
    model) and ECE per (variant, model, "ece")."""
    from mlsys_core.training.metrics import binary_metrics  # noqa: PLC0415

    label = next(iter(specs.values())).label.name
    y = {n: splits[n][label].to_numpy(np.float64) for n in ("valid", "test")}
    rows, auc = [], {}
    for variant, variant_spec in specs.items():
        for model, fit in (
            ("MLP (mlsys)", lambda s=variant_spec: fit_mlp(splits, s, args.epochs, args.seed)),
            (
                "HGB (sklearn)",
                lambda s=variant_spec: fit_hgb(
                    splits, s, args.hgb_max_iter, args.hgb_patience, args.seed
                ),
            ),
        ):
            t0 = time.perf_counter()
            proba, detail = fit()
            seconds = time.perf_counter() - t0
            test = binary_metrics(y["test"], proba["test"])
            valid = binary_metrics(y["valid"], proba["valid"])
            auc[(variant, model)] = test["auc"]
            auc[(variant, model, "ece")] = test["ece"]
            print(f"  {model}, {variant}: {seconds:.1f} s, {detail}")
            rows.append(
                [
                    f"{model}, {variant}",
                    f"{seconds:.1f}",
                    f"{valid['auc']:.4f}",
                    f"{test['auc']:.4f}",
                    f"{test['log_loss']:.4f}",
                    f"{test['ece']:.4f}",
                ]
            )
    return rows, auc


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with scratch_folder("mlsys-bench-history-", keep=args.keep) as root:
        use_isolated_state(root / "state")
        random.seed(args.seed)
        np.random.seed(args.seed)
        from mlsys_core.datasets.nycflights13.views import history_features  # noqa: PLC0415
        from mlsys_core.features.store import load_feature_set  # noqa: PLC0415
        from mlsys_core.spec import DatasetSpec  # noqa: PLC0415
        from mlsys_core.spec.definitions import WindowView  # noqa: PLC0415
        from mlsys_core.training.run import labeled_splits  # noqa: PLC0415

        spec_path, data = sampled_or_full(root / "data", args.fraction, args.seed)
        start = time.perf_counter()
        features, lake = build_features(load_spec(str(spec_path) if spec_path else None))
        frame, spec = load_feature_set(features, lake)
        splits = labeled_splits(frame, spec)
        built = time.perf_counter() - start
        history = [f for f in history_features() if f in spec.features.numeric]
        open_events = [
            f
            for v in spec.feature_views
            if isinstance(v, WindowView) and v.closes is not None
            for f in v.features
            if f in spec.features.numeric
        ]

        def without(columns: list[str]) -> DatasetSpec:
            numeric = [f for f in spec.features.numeric if f not in columns]
            return spec.model_copy(
                update={"features": spec.features.model_copy(update={"numeric": numeric})}
            )

        print(f"history_features_auc: {data}, feature set {features.version} ({built:.1f} s)")
        print("\n".join(describe_splits(splits, spec)))
        print(f"  {len(history)} history features: {', '.join(history)}")
        print(f"  of which {len(open_events)} over open events: {', '.join(open_events)}")

        variants = {
            "with history": spec,
            "without open events": without(open_events),
            "without history": without(history),
        }
        rows, auc = evaluate(splits, variants, args)
        print()
        print(
            format_table(
                ["model, features", "fit s", "valid AUC", "test AUC", "test log loss", "ECE"],
                rows,
            )
        )
        mlp, hgb = auc[("with history", "MLP (mlsys)")], auc[("with history", "HGB (sklearn)")]
        print()
        for model in ("MLP (mlsys)", "HGB (sklearn)"):
            gain = auc[("with history", model)] - auc[("without history", model)]
            print(f"test AUC gain from history features, {model}: {gain:+.4f}")
            gain = auc[("with history", model)] - auc[("without open events", model)]
            print(f"test AUC gain from open-event features, {model}: {gain:+.4f}")
        print(f"test AUC ratio MLP/HGB with history: {mlp / hgb:.4f}")
        ece = auc[("with history", "MLP (mlsys)", "ece")]
        met = mlp >= GOAL_AUC and mlp >= hgb and ece <= GOAL_ECE
        print(
            f"goal: MLP test AUC >= {GOAL_AUC}, >= HGB and ECE <= {GOAL_ECE}: "
            f"{'met' if met else 'not met'} (AUC {mlp:.4f} vs HGB {hgb:.4f}, ECE {ece:.4f})"
        )
        print(
            f"(epochs {args.epochs}, seed {args.seed}; 1-minute load average"
            f" {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
        )


if __name__ == "__main__":
    main()
