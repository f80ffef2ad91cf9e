"""Does pruning pay? TPE with Hyperband pruning against random search without pruning, on
the same budget of training epochs, through the real ``tune`` flow (trials as Prefect tasks,
MLflow runs, SQLite study).

Per seed, random search runs ``--trials`` trials; TPE + Hyperband then resumes its own study
in chunks of trials until it has trained as many epochs as random search did (pruned trials
are cheap, so it gets more trials). Both use the same cached matrices and base config (max
epochs, trainer early stopping on validation loss with the same patience) and their own
sampler seeds. The question: how many training epochs does each spend, in trial order,
before one of its finished trials reaches the best validation AUC that random search found
with its whole budget? Goal: TPE + Hyperband needs at most 1/3 of random's epochs.

Also reported: the tuning overhead per trial, the share of a trial's time spent outside
training (Optuna ask/tell on SQLite, the MLflow run and its logging, pruning checks), and the
same share for the flow's whole trial phase, which adds Prefect's task runs.

    .venv/bin/python bench/tuning.py                       # 5% of flights, 3 seeds, 16 trials
    .venv/bin/python bench/tuning.py --fraction 0.03 --trials 12 --epochs 6
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from _common import (
    format_table,
    load_spec,
    mean_or_none,
    scratch_folder,
    use_isolated_state,
    write_sampled_sources,
)

TARGET_RATIO = 1 / 3
METHODS = {"random": ("random", "none"), "tpe+hyperband": ("tpe", "hyperband")}
# TPE's first trials are random draws: with one seed for both searches they would replay
# random search's first trials exactly, so each search gets its own seed.
SEED_OFFSET = {"random": 0, "tpe+hyperband": 1000}
CHUNK = 4  # TPE+Hyperband trials per tune call while it has epoch budget left
MAX_TRIAL_FACTOR = 4


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Epochs TPE+Hyperband vs random search (no pruning) need to reach random's "
        "best validation AUC, per seed, and the tuning overhead per trial."
    )
    parser.add_argument("--fraction", type=float, default=0.05, help="share of flights (0.05)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds, 0..N-1 (default: 3)")
    parser.add_argument("--trials", type=int, default=16, help="trials per search (default: 16)")
    parser.add_argument("--epochs", type=int, default=9, help="max epochs per trial (9)")
    parser.add_argument("--patience", type=int, default=3, help="trainer early stopping (3)")
    parser.add_argument("--parallelism", type=int, default=1, help="trials at once (1)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads per trial (default: 1, for a busy shared machine)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary state folder")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.trials < 2 or args.epochs < 2 or args.parallelism < 1:
        parser.error("need --seeds >= 1, --trials >= 2, --epochs >= 2, --parallelism >= 1")
    if not 0.0 < args.fraction <= 1.0:
        parser.error("--fraction must be in (0, 1]")
    return args


def build_features(spec: Any) -> Any:
    from mlsys_core.config import Settings  # noqa: PLC0415
    from mlsys_core.data.cleaning import clean_snapshot  # noqa: PLC0415
    from mlsys_core.data.ingest import snapshot_source  # noqa: PLC0415
    from mlsys_core.data.lake import Lake  # noqa: PLC0415
    from mlsys_core.features.store import build_feature_set  # noqa: PLC0415

    lake = Lake(Settings().lake_dir)
    raw = {s.name: snapshot_source(s, lake) for s in spec.sources}
    clean = {t: clean_snapshot(r, spec.contracts[t], lake) for t, r in raw.items()}
    return build_feature_set(clean, spec, lake)


def epochs_to_reach(trials: list[Any], target: float) -> int | None:
    """Training epochs spent, in trial order, until a finished trial reaches ``target``."""
    spent = 0
    for trial in sorted(trials, key=lambda t: t.number):
        spent += trial.epochs
        if trial.state == "COMPLETE" and trial.values[0] >= target - 1e-12:
            return spent
    return None


def run_search(
    features: Any, method: str, seed: int, args: argparse.Namespace, epoch_budget: int | None
) -> dict:
    """One search; with ``epoch_budget`` it resumes its study in chunks of trials until it
    has trained that many epochs (at most ``MAX_TRIAL_FACTOR`` times ``--trials`` trials)."""
    from flows.tune import tune  # noqa: PLC0415
    from mlsys_core.training.trainer import TrainConfig  # noqa: PLC0415

    sampler, pruner = METHODS[method]
    base = TrainConfig(epochs=args.epochs, patience=args.patience, device="cpu")
    start = time.perf_counter()
    trials, failed, phase_seconds = [], 0, 0.0
    while True:
        chunk = args.trials if epoch_budget is None else CHUNK
        result = tune(
            features=features,
            sampler=sampler,
            pruner=pruner,
            n_trials=chunk,
            parallelism=args.parallelism,
            base_config=base,
            study_name=f"bench-{method}-seed{seed}",
            seed=seed + SEED_OFFSET[method],
            train_final=False,
        )
        trials += result.trials
        failed += result.failed
        phase_seconds += result.trials_seconds
        spent = sum(t.epochs for t in trials)
        if epoch_budget is None or spent >= epoch_budget:
            break
        if len(trials) >= MAX_TRIAL_FACTOR * args.trials:
            break
    train = sum(t.train_seconds for t in trials)
    return {
        "trials": trials,
        "best": max(t.values[0] for t in trials if t.state == "COMPLETE"),
        "epochs": sum(t.epochs for t in trials),
        "n": len(trials),
        "pruned": sum(t.state == "PRUNED" for t in trials),
        "failed": failed,
        "overhead_trial": sum(1 - t.train_seconds / t.trial_seconds for t in trials) / len(trials),
        "overhead_seconds": sum(t.trial_seconds - t.train_seconds for t in trials) / len(trials),
        "trial_seconds": sum(t.trial_seconds for t in trials) / len(trials),
        "overhead_phase": 1 - train / phase_seconds
        if args.parallelism == 1
        else None,  # with parallel trials, training time overlaps and the share is ill-defined
        "seconds": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with scratch_folder("mlsys-bench-tuning-", keep=args.keep) as root:
        use_isolated_state(root / "state")
        # The temporary server's 20 s default start-up limit is too short on a busy machine.
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
        import torch  # noqa: PLC0415

        from flows.embedded import embedded_run  # noqa: PLC0415

        torch.set_num_threads(args.threads)

        spec = load_spec(str(write_sampled_sources(root / "data", args.fraction)))
        features = build_features(spec)
        print(
            f"tuning bench: {args.fraction:.0%} of flights per month, feature set "
            f"{features.version}, rows {features.split_rows}; {args.trials} trials per search, "
            f"max {args.epochs} epochs, patience {args.patience}, parallelism "
            f"{args.parallelism}, torch threads {args.threads}; "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        rows, ratios, overhead = [], [], {m: [] for m in METHODS}
        with embedded_run():
            for seed in range(args.seeds):
                res = {}
                for method in METHODS:
                    # Same budget: TPE+Hyperband may train as many epochs as random search did.
                    budget = res["random"]["epochs"] if method != "random" else None
                    res[method] = run_search(features, method, seed, args, budget)
                    overhead[method].append(res[method])
                    print(
                        f"  seed {seed} {method}: best val AUC {res[method]['best']:.4f}, "
                        f"{res[method]['n']} trials, {res[method]['epochs']} epochs, "
                        f"{res[method]['pruned']} pruned, "
                        f"{res[method]['seconds']:.0f} s (load {os.getloadavg()[0]:.1f})"
                    )
                target = res["random"]["best"]
                need = {m: epochs_to_reach(r["trials"], target) for m, r in res.items()}
                ratio = need["tpe+hyperband"] / need["random"] if need["tpe+hyperband"] else None
                ratios.append(ratio)
                rows.append(
                    [
                        f"seed {seed}",
                        f"{target:.4f}",
                        need["random"],
                        f"{res['tpe+hyperband']['best']:.4f}",
                        need["tpe+hyperband"] if need["tpe+hyperband"] else "not reached",
                        res["random"]["epochs"],
                        res["tpe+hyperband"]["epochs"],
                        f"{ratio:.3f}" if ratio is not None else "-",
                    ]
                )
        header = [
            "seed",
            "random best",
            "random epochs to it",
            "TPE+HB best",
            "TPE+HB epochs to it",
            "random total",
            "TPE+HB total",
            "ratio",
        ]
        print()
        print(format_table(header, rows))
        reached = [r for r in ratios if r is not None]
        met = len(reached) == len(ratios) and max(reached) <= TARGET_RATIO
        print()
        print(
            f"TPE+Hyperband reached random's best in {len(reached)}/{len(ratios)} seeds; "
            f"epochs ratio TPE+HB/random where reached: mean "
            f"{mean_or_none(reached) or float('nan'):.3f} (target <= {TARGET_RATIO:.3f}: "
            f"{'ok' if met else 'MISSED'})"
        )
        print()
        print(
            format_table(
                [
                    "search",
                    "mean best AUC",
                    "trial s",
                    "outside training s",
                    "overhead / trial",
                    "overhead, trial phase (with Prefect)",
                ],
                [
                    [
                        m,
                        f"{mean_or_none([r['best'] for r in runs]):.4f}",
                        f"{mean_or_none([r['trial_seconds'] for r in runs]):.2f}",
                        f"{mean_or_none([r['overhead_seconds'] for r in runs]):.2f}",
                        f"{mean_or_none([r['overhead_trial'] for r in runs]):.3f}",
                        f"{v:.3f}"
                        if (v := mean_or_none([r["overhead_phase"] for r in runs])) is not None
                        else "-",
                    ]
                    for m, runs in overhead.items()
                ],
            )
        )


if __name__ == "__main__":
    main()
