"""Does pruning pay? TPE with Hyperband pruning against random search without pruning, on
the same budget of training epochs, through the real ``tune`` flow (trials as Prefect tasks,
MLflow runs, SQLite study).

Per seed, random search runs ``--trials`` trials; TPE + Hyperband then gets exactly as many
training epochs as random search spent, as the flow's ``epoch_budget`` (pruned trials are
cheap, so it gets more trials; the trial that would pass the budget stops before that
epoch). Both search the flow's default search space, with the same cached matrices and base
config (max epochs, trainer early stopping on validation loss with the same patience), and
their own sampler seeds. The question: how many training epochs does each spend, in trial
order, before one of its finished trials reaches the best validation AUC that random search
found with its whole budget? Goal: TPE + Hyperband needs at most 1/3 of random's epochs, by
the mean ratio over the seeds (every seed must reach it). Also per seed: TPE + Hyperband's
count as a share of random's whole budget (the goal's other reading), and an oracle's ratio
for scale: random's winning trial's own epochs over random's epochs to it.

Also reported: the tuning overhead per trial, the share of a trial's time spent outside
training (Optuna ask/tell on SQLite, the MLflow run and its logging, pruning checks), and the
same share for the flow's whole trial phase, which adds Prefect's task runs.

    .venv/bin/python bench/tuning.py --json tuning.json    # the published options
    .venv/bin/python bench/tuning.py --fraction 0.03 --seeds 1 --trials 6 --epochs 4
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from _common import (
    format_table,
    load_spec,
    mean_or_none,
    scratch_folder,
    use_isolated_state,
    write_sampled_sources,
)
from model_vs_hgb import build_features

TARGET_RATIO = 1 / 3
METHODS = {"random": ("random", "none"), "tpe+hyperband": ("tpe", "hyperband")}
# TPE's first trials are random draws: with one seed for both searches they would replay
# random search's first trials exactly, so each search gets its own seed.
SEED_OFFSET = {"random": 0, "tpe+hyperband": 1000}
MAX_TRIALS = 1000  # the flow's cap; the epoch budget ends TPE+Hyperband's run long before


def add_search_options(parser: argparse.ArgumentParser) -> None:
    """The data, trials and pruner options this bench and ``tuning_replay.py`` share, so both
    measure the same search by default."""
    parser.add_argument("--fraction", type=float, default=0.05, help="share of flights (0.05)")
    parser.add_argument("--trials", type=int, default=16, help="random search trials (16)")
    parser.add_argument("--epochs", type=int, default=9, help="max epochs per trial (9)")
    parser.add_argument("--patience", type=int, default=3, help="trainer early stopping (3)")
    parser.add_argument(
        "--min-resource", type=int, default=1, help="Hyperband's first rung, in epochs (1)"
    )
    parser.add_argument(
        "--reduction-factor",
        type=int,
        default=10,
        help="Hyperband's reduction factor (10: with 9 epochs, one bracket, so TPE, which "
        "Optuna runs per bracket, learns from every trial)",
    )


def check_search_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not 1 <= args.min_resource <= args.epochs:
        parser.error("--min-resource must be in [1, --epochs]")
    if not 2 <= args.reduction_factor <= 10:
        parser.error("--reduction-factor must be in [2, 10]")
    if not 0.0 < args.fraction <= 1.0:
        parser.error("--fraction must be in (0, 1]")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Epochs TPE+Hyperband vs random search (no pruning) need to reach random's "
        "best validation AUC, per seed, and the tuning overhead per trial."
    )
    add_search_options(parser)
    parser.add_argument("--seeds", type=int, default=5, help="seeds, 0..N-1 (default: 5)")
    parser.add_argument("--parallelism", type=int, default=1, help="trials at once (1)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads per trial (default: 1, for a busy shared machine)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary state folder")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.trials < 2 or args.epochs < 2 or args.parallelism < 1:
        parser.error("need --seeds >= 1, --trials >= 2, --epochs >= 2, --parallelism >= 1")
    check_search_options(parser, args)
    return args


def first_reaching(trials: list[Any], target: float) -> Any | None:
    """The first finished trial, in trial order, that reaches ``target``."""
    return next(
        (
            t
            for t in sorted(trials, key=lambda t: t.number)
            if t.state == "COMPLETE" and t.values[0] >= target - 1e-12
        ),
        None,
    )


def epochs_to_reach(trials: list[Any], target: float) -> int | None:
    """Training epochs spent, in trial order, until a finished trial reaches ``target``."""
    if (hit := first_reaching(trials, target)) is None:
        return None
    return sum(t.epochs for t in trials if t.number <= hit.number)


def mean_of_every_seed(values: list[float | None]) -> float | None:
    """The mean, or None when a seed has no value (TPE+HB never reached random's best)."""
    return None if None in values else sum(values) / len(values)


def run_search(
    features: Any, method: str, seed: int, args: argparse.Namespace, epoch_budget: int | None
) -> dict:
    """One search: random search runs ``--trials`` trials; with ``epoch_budget`` the search
    runs trials until it has trained exactly that many epochs."""
    from flows.tune import tune  # noqa: PLC0415
    from mlsys_core.training.config import TrainConfig  # noqa: PLC0415

    sampler, pruner = METHODS[method]
    base = TrainConfig(epochs=args.epochs, patience=args.patience, device="cpu")
    start = time.perf_counter()
    result = tune(
        features=features,
        sampler=sampler,
        pruner=pruner,
        n_trials=args.trials if epoch_budget is None else MAX_TRIALS,
        parallelism=args.parallelism,
        epoch_budget=epoch_budget,
        base_config=base,
        study_name=f"bench-{method}-seed{seed}",
        seed=seed + SEED_OFFSET[method],
        min_resource=args.min_resource,
        reduction_factor=args.reduction_factor,
        train_final=False,
    )
    trials = result.trials
    train = sum(t.train_seconds for t in trials)
    return {
        "trials": trials,
        "best": max(t.values[0] for t in trials if t.state == "COMPLETE"),
        "epochs": sum(t.epochs for t in trials),
        "n": len(trials),
        "pruned": sum(t.state == "PRUNED" for t in trials),
        "failed": result.failed,
        "overhead_trial": sum(1 - t.train_seconds / t.trial_seconds for t in trials) / len(trials),
        "overhead_seconds": sum(t.trial_seconds - t.train_seconds for t in trials) / len(trials),
        "trial_seconds": sum(t.trial_seconds for t in trials) / len(trials),
        "overhead_phase": 1 - train / result.trials_seconds
        if args.parallelism == 1
        else None,  # with parallel trials, training time overlaps and the share is ill-defined
        "seconds": time.perf_counter() - start,
    }


def git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with scratch_folder("mlsys-bench-tuning-", keep=args.keep) as root:
        use_isolated_state(root / "state")
        # The temporary server can need minutes to start on a busy machine (the isolated
        # state's 120 s timed out at load average 20).
        os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "600"
        import torch  # noqa: PLC0415

        from flows.embedded import embedded_run  # noqa: PLC0415
        from mlsys_core.tuning.samplers import PrunerConfig  # noqa: PLC0415
        from mlsys_core.tuning.space import SearchSpace  # noqa: PLC0415

        torch.set_num_threads(args.threads)
        load_before = os.getloadavg()
        started = time.perf_counter()
        pruner = PrunerConfig(
            name="hyperband",
            min_resource=args.min_resource,
            reduction_factor=args.reduction_factor,
        )

        spec = load_spec(str(write_sampled_sources(root / "data", args.fraction)))
        features, _ = build_features(spec)  # the same stages as bench/model_vs_hgb.py
        print(
            f"tuning bench: {args.fraction:.0%} of flights per month, feature set "
            f"{features.version}, rows {features.split_rows}; {args.trials} random trials, "
            f"max {args.epochs} epochs, patience {args.patience}, Hyperband min resource "
            f"{pruner.min_resource} and reduction factor {pruner.reduction_factor}, "
            f"parallelism {args.parallelism}, torch threads {args.threads}; "
            f"load average {load_before[0]:.1f}"
        )
        seeds, overhead = [], {m: [] for m in METHODS}
        with embedded_run():
            for seed in range(args.seeds):
                res = {}
                for method in METHODS:
                    # Same budget: TPE+Hyperband trains exactly as many epochs as random did.
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
                tpe = res["tpe+hyperband"]
                seeds.append(
                    {
                        "seed": seed,
                        "random_best": target,
                        "random_epochs_to_best": need["random"],
                        "random_epochs": res["random"]["epochs"],
                        "random_trials": res["random"]["n"],
                        "tpe_hyperband_best": tpe["best"],
                        "tpe_hyperband_epochs_to_random_best": need["tpe+hyperband"],
                        "tpe_hyperband_epochs": tpe["epochs"],
                        "tpe_hyperband_trials": tpe["n"],
                        "tpe_hyperband_pruned": tpe["pruned"],
                        "ratio": need["tpe+hyperband"] / need["random"]
                        if need["tpe+hyperband"]
                        else None,
                        "share_of_budget": need["tpe+hyperband"] / res["random"]["epochs"]
                        if need["tpe+hyperband"]
                        else None,
                        # For scale: the ratio of a search whose first and only trial were
                        # random's winning config, trained the same way (an oracle's).
                        "one_trial_ratio": first_reaching(res["random"]["trials"], target).epochs
                        / need["random"],
                    }
                )
        reached = [s["ratio"] for s in seeds if s["ratio"] is not None]
        ratio_mean = mean_of_every_seed([s["ratio"] for s in seeds])
        met = ratio_mean is not None and ratio_mean <= TARGET_RATIO
        share_mean = mean_of_every_seed([s["share_of_budget"] for s in seeds])
        one_trial_mean = mean_of_every_seed([s["one_trial_ratio"] for s in seeds])
        print()
        print(
            format_table(
                [
                    "seed",
                    "random best",
                    "random epochs to it",
                    "TPE+HB best",
                    "TPE+HB epochs to it",
                    "random total",
                    "TPE+HB total",
                    "ratio",
                    "share of random total",
                    "its best trial alone",
                ],
                [
                    [
                        f"seed {s['seed']}",
                        f"{s['random_best']:.4f}",
                        s["random_epochs_to_best"],
                        f"{s['tpe_hyperband_best']:.4f}",
                        s["tpe_hyperband_epochs_to_random_best"] or "not reached",
                        s["random_epochs"],
                        s["tpe_hyperband_epochs"],
                        f"{s['ratio']:.3f}" if s["ratio"] is not None else "-",
                        f"{s['share_of_budget']:.3f}" if s["share_of_budget"] is not None else "-",
                        f"{s['one_trial_ratio']:.3f}",
                    ]
                    for s in seeds
                ],
            )
        )
        print()
        print(
            f"TPE+Hyperband reached random's best in {len(reached)}/{len(seeds)} seeds; "
            f"epochs ratio TPE+HB/random, mean over the seeds: "
            + (f"{ratio_mean:.3f}" if ratio_mean is not None else "- (a seed did not reach it)")
            + f" (target <= {TARGET_RATIO:.3f}: {'ok' if met else 'MISSED'})"
        )
        # The goal's other reading: random search's whole budget as the denominator, not the
        # epochs it happened to need (its best's position among its trials is uniform).
        print(
            "the same epochs as a share of random's whole budget, mean over the seeds: "
            + (f"{share_mean:.3f}" if share_mean is not None else "- (a seed did not reach it)")
        )
        print(
            "the ratio a search would get by training random's winning config first, and "
            f"nothing else: mean {one_trial_mean:.3f}"
        )
        summary = {
            m: {
                "mean_best_auc": mean_or_none([r["best"] for r in runs]),
                "trial_seconds": mean_or_none([r["trial_seconds"] for r in runs]),
                "outside_training_seconds": mean_or_none([r["overhead_seconds"] for r in runs]),
                "overhead_per_trial": mean_or_none([r["overhead_trial"] for r in runs]),
                "overhead_trial_phase": mean_or_none([r["overhead_phase"] for r in runs]),
            }
            for m, runs in overhead.items()
        }
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
                        f"{v['mean_best_auc']:.4f}",
                        f"{v['trial_seconds']:.2f}",
                        f"{v['outside_training_seconds']:.2f}",
                        f"{v['overhead_per_trial']:.3f}",
                        f"{v['overhead_trial_phase']:.3f}"
                        if v["overhead_trial_phase"] is not None
                        else "-",
                    ]
                    for m, v in summary.items()
                ],
            )
        )
        if args.json is not None:
            result = {
                "bench": "tuning",
                "options": {
                    k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                },
                "pruner": pruner.model_dump(),
                "space": SearchSpace().model_dump(exclude_none=True),
                "feature_set": features.version,
                "rows": features.split_rows,
                "seeds": seeds,
                "reached": len(reached),
                "ratio_mean": ratio_mean,
                "share_of_budget_mean": share_mean,
                "one_trial_ratio_mean": one_trial_mean,
                "target_ratio": TARGET_RATIO,
                "met": met,
                "searches": summary,
                "commit": git_commit(),
                "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "cpu_count": os.cpu_count(),
                "load_average_before": load_before,
                "load_average_after": os.getloadavg(),
                "seconds": time.perf_counter() - started,
            }
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=2))
            print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
