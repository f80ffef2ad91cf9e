"""Can Hyperband pay on this problem at all? A replay over hundreds of seeds, where
``tuning.py`` affords five.

A pool of configs is drawn from the flow's default search space (random sampler) and each is
trained once, as a trial trains it (same cached matrices, base config and trainer early
stopping), keeping its validation AUC per epoch and its objective. Training is deterministic
for a config, so a trial that Hyperband prunes or the budget cuts is the prefix of that
curve, and a search can be replayed without training: per simulated seed the pool is
shuffled and split in two halves; random search takes ``--trials`` configs of the first
half, unpruned (its best objective is the target, its epochs the budget); two searches then
walk the second half in the same order on exactly that epoch budget (mlsys' ``EpochBudget``):
one unpruned (the baseline: a second random search) and one with Optuna's
``HyperbandPruner`` as the tune flow builds it, deciding on the same reports a trial makes.

Printed: how well the AUC at Hyperband's first rungs ranks the pool's configs (overall and
among its top 30%, where the search is decided) and how many of its best 5% a rung keeping
one in ``--reduction-factor`` would let through, then per search how often it reaches random
search's best within random's budget, its epochs to it (as ``tuning.py`` counts them), and
how often a group of five seeds meets ``tuning.py``'s goal. TPE needs new configs trained,
so it is not replayed; ``tuning.py`` runs it.

    .venv/bin/python bench/tuning_replay.py             # 240 configs, 500 seeds
    .venv/bin/python bench/tuning_replay.py --pool 20 --simulations 20 --fraction 0.02
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from _common import (
    format_table,
    load_spec,
    scratch_folder,
    use_isolated_state,
    write_sampled_sources,
)
from model_vs_hgb import build_features
from tuning import (
    TARGET_RATIO,
    add_search_options,
    check_search_options,
    epochs_to_reach,
    first_reaching,
    mean_of_every_seed,
)

TOP_SHARE = 0.3  # "the top of the pool": where a search is decided
BEST_SHARE = 0.05  # "the best configs": where random search's best of 16 usually lies


@dataclass(frozen=True)
class Candidate:
    """One config trained once: its validation AUC per epoch, and the trial's objective."""

    curve: tuple[float, ...]
    objective: float


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_search_options(parser)  # the same defaults as tuning.py
    parser.add_argument("--pool", type=int, default=240, help="configs trained once (240)")
    parser.add_argument("--simulations", type=int, default=500, help="simulated seeds (500)")
    parser.add_argument("--group", type=int, default=5, help="seeds per goal check (5)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    args = parser.parse_args(argv)
    if args.pool < 2 * args.trials:
        parser.error("--pool must hold at least two searches' worth of --trials")
    if args.simulations < args.group or args.group < 1:
        parser.error("need --simulations >= --group >= 1")
    check_search_options(parser, args)
    return args


def train_pool(args: argparse.Namespace, data: Any, ref: Any) -> list[Candidate]:
    """Each config as a trial draws and trains it (``suggest``, the trial's trainer); a
    config whose objective is not finite (a diverged run) stays in: it fails as a trial."""
    import optuna  # noqa: PLC0415

    from mlsys_core.training.config import TrainConfig  # noqa: PLC0415
    from mlsys_core.training.matrices import model_config_for  # noqa: PLC0415
    from mlsys_core.training.trainer import Trainer  # noqa: PLC0415
    from mlsys_core.tuning.samplers import SamplerConfig, make_sampler  # noqa: PLC0415
    from mlsys_core.tuning.space import SearchSpace, suggest  # noqa: PLC0415
    from mlsys_core.tuning.trial import objective_auc  # noqa: PLC0415

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SearchSpace()
    base = TrainConfig(epochs=args.epochs, patience=args.patience, device="cpu")
    pool = []
    for i in range(args.pool):
        sampler = make_sampler(SamplerConfig(name="random", seed=i), space)
        config = suggest(optuna.create_study(sampler=sampler).ask(), space, base)
        trainer = Trainer(config, model_config_for(ref.cardinalities, ref.n_numeric, config))
        trainer.setup(data.x_train, data.y_train, data.x_valid, data.y_valid)
        result = trainer.train()
        pool.append(Candidate(tuple(m.val_auc for m in result.history), objective_auc(result)))
    return pool


def replay(
    candidates: list[Candidate], budget: int, pruner: Any, study_name: str
) -> list[SimpleNamespace]:
    """The trials a search makes walking ``candidates`` in order on ``budget`` epochs, each
    going through its curve behind the trial's own ``EpochGate``, as ``run_trial`` does."""
    import optuna  # noqa: PLC0415

    from mlsys_core.tuning.budget import EpochBudget  # noqa: PLC0415
    from mlsys_core.tuning.trial import EpochGate  # noqa: PLC0415

    study = optuna.create_study(direction="maximize", pruner=pruner, study_name=study_name)
    ledger = EpochBudget(budget)
    trials = []
    for candidate in candidates:
        if not ledger.take():  # the first epoch, before the trial starts (as run_trial)
            break
        trial, state, epochs = study.ask(), "COMPLETE", 0
        gate = EpochGate(trial, ledger, prune=True)
        try:
            for epoch, auc in enumerate(candidate.curve, start=1):  # the trainer's loop
                if not gate.before(epoch):
                    state = "PRUNED"  # cut by the budget: its objective is not its schedule's
                    break
                epochs = epoch
                gate.after(epoch, auc)
        except optuna.TrialPruned:
            state = "PRUNED"
        if state == "COMPLETE" and not math.isfinite(candidate.objective):
            state = "FAIL"  # as Optuna marks a trial whose objective is NaN
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        elif state == "COMPLETE":
            study.tell(trial, candidate.objective)
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        trials.append(
            SimpleNamespace(
                number=trial.number, state=state, values=[candidate.objective], epochs=epochs
            )
        )
    return trials


def rank_correlation(pool: list[Candidate], epoch: int, top: bool) -> float | None:
    """Spearman's rho between the AUC at ``epoch`` and the objective, over the configs that
    trained that long (``top``: only those in the pool's top ``TOP_SHARE`` by objective)."""
    import pandas as pd  # noqa: PLC0415

    pool = [c for c in pool if math.isfinite(c.objective)]
    cut = sorted(c.objective for c in pool)[int(len(pool) * (1 - TOP_SHARE))] if top else -1.0
    rows = [(c.curve[epoch - 1], c.objective) for c in pool if len(c.curve) >= epoch]
    rows = [r for r in rows if r[1] >= cut]
    if len(rows) < 3:
        return None
    frame = pd.DataFrame(rows, columns=["rung", "objective"])
    return float(frame["rung"].corr(frame["objective"], method="spearman"))


def best_kept(pool: list[Candidate], epoch: int, keep: float) -> float | None:
    """The share of the pool's best ``BEST_SHARE`` configs (by objective) whose AUC at
    ``epoch`` ranks in the top ``keep`` of the pool there: what a rung keeping that share
    would let through of the configs a search is after."""
    reached = [c for c in pool if len(c.curve) >= epoch]
    if not reached:
        return None
    bar = sorted(c.curve[epoch - 1] for c in reached)[int(len(reached) * (1 - keep))]
    ranked = sorted(
        (c for c in pool if math.isfinite(c.objective)), key=lambda c: c.objective, reverse=True
    )
    best = ranked[: max(1, round(len(pool) * BEST_SHARE))]
    return sum(len(c.curve) >= epoch and c.curve[epoch - 1] >= bar for c in best) / len(best)


def simulate(pool: list[Candidate], args: argparse.Namespace) -> dict[str, Any]:
    from mlsys_core.tuning.samplers import PrunerConfig, make_pruner  # noqa: PLC0415

    pruners = {
        "random, unpruned": PrunerConfig(name="none"),
        "hyperband": PrunerConfig(
            name="hyperband",
            min_resource=args.min_resource,
            reduction_factor=args.reduction_factor,
        ),
    }
    half = len(pool) // 2
    seeds: list[dict[str, Any]] = []
    for seed in range(args.simulations):
        order = random.Random(seed).sample(pool, len(pool))
        first = [
            SimpleNamespace(
                number=i,
                state="COMPLETE" if math.isfinite(c.objective) else "FAIL",
                values=[c.objective],
                epochs=len(c.curve),
            )
            for i, c in enumerate(order[: args.trials])
        ]
        if not (finished := [t.values[0] for t in first if t.state == "COMPLETE"]):
            continue  # random search found nothing to reach (every trial diverged)
        target = max(finished)
        budget = sum(t.epochs for t in first)
        to_best = epochs_to_reach(first, target)
        row: dict[str, Any] = {"oracle": first_reaching(first, target).epochs / to_best}
        for name, config in pruners.items():
            pruner = make_pruner(config, args.epochs)
            trials = replay(order[half:], budget, pruner, f"replay-{seed}")
            need = epochs_to_reach(trials, target)
            row[name] = {
                "ratio": None if need is None else need / to_best,
                "share": None if need is None else need / budget,
                "exhausted": sum(t.epochs for t in trials) < budget,
            }
        seeds.append(row)
    return {"seeds": seeds, "searches": list(pruners)}


def goal_met(rows: list[dict[str, Any]], key: str) -> bool:
    """``tuning.py``'s goal for one group of seeds: every seed reached, mean <= 1/3."""
    mean = mean_of_every_seed([r[key] for r in rows])
    return mean is not None and mean <= TARGET_RATIO


def summarize(sim: dict[str, Any], group: int) -> dict[str, dict[str, float]]:
    seeds = sim["seeds"]
    groups = [seeds[i : i + group] for i in range(0, len(seeds) - group + 1, group)]
    out = {}
    for name in sim["searches"]:
        rows = [s[name] for s in seeds]
        reached = [r for r in rows if r["ratio"] is not None]
        out[name] = {
            "reached": len(reached) / len(rows),
            "median_ratio": statistics.median(r["ratio"] for r in reached) if reached else None,
            "median_share": statistics.median(r["share"] for r in reached) if reached else None,
            "share_le_third": sum(r["share"] <= TARGET_RATIO for r in reached) / len(rows),
            "groups_ratio": sum(goal_met([s[name] for s in g], "ratio") for g in groups)
            / len(groups),
            "groups_share": sum(goal_met([s[name] for s in g], "share") for g in groups)
            / len(groups),
            "exhausted": sum(r["exhausted"] for r in rows),
        }
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with scratch_folder("mlsys-bench-tuning-replay-") as root:
        use_isolated_state(root / "state")
        import torch  # noqa: PLC0415

        from mlsys_core.tuning.data import load_prepared, prepare_data  # noqa: PLC0415

        torch.set_num_threads(args.threads)
        started = time.perf_counter()
        spec = load_spec(str(write_sampled_sources(root / "data", args.fraction)))
        features, lake = build_features(spec)  # the same stages as bench/tuning.py
        ref = prepare_data(features, lake, root / "prepared")
        pool = train_pool(args, load_prepared(ref.path), ref)
        trained = time.perf_counter() - started
        objectives = sorted(c.objective for c in pool if math.isfinite(c.objective))
        if len(objectives) < args.trials:
            raise SystemExit(f"only {len(objectives)} of {len(pool)} configs trained to an AUC")
        print(
            f"tuning replay: {args.fraction:.0%} of flights per month, rows {ref.rows}; pool "
            f"of {len(pool)} configs from the default search space, trained once (max "
            f"{args.epochs} epochs, patience {args.patience}) in {trained:.0f} s: mean "
            f"{statistics.mean(len(c.curve) for c in pool):.1f} epochs; objective (validation "
            f"AUC) median {statistics.median(objectives):.4f}, 90th percentile "
            f"{objectives[int(0.9 * (len(objectives) - 1))]:.4f}, best {objectives[-1]:.4f}"
            + (f"; {len(pool) - len(objectives)} diverged" if len(objectives) < len(pool) else "")
        )
        rungs = sorted({1, 2, 3, args.min_resource, args.epochs} & set(range(1, args.epochs + 1)))
        correlations = {
            epoch: (rank_correlation(pool, epoch, False), rank_correlation(pool, epoch, True))
            for epoch in rungs
        }
        keep = 1 / args.reduction_factor
        kept = {epoch: best_kept(pool, epoch, keep) for epoch in rungs}

        def shown(x: float | None) -> str:
            return "-" if x is None else f"{x:.2f}"

        print()
        print(
            format_table(
                [
                    "AUC at epoch",
                    "rank corr. with objective, pool",
                    f"top {TOP_SHARE:.0%}",
                    f"best {BEST_SHARE:.0%} ranking in its top 1/{args.reduction_factor}",
                ],
                [[e, shown(a), shown(b), shown(kept[e])] for e, (a, b) in correlations.items()],
            )
        )
        sim = simulate(pool, args)
        if not sim["seeds"]:
            raise SystemExit("no simulated seed had a finished random search trial")
        summary = summarize(sim, args.group)
        oracle = statistics.mean(s["oracle"] for s in sim["seeds"])
        print()
        print(
            f"{args.simulations} simulated seeds: random search takes {args.trials} configs, "
            f"the searches below walk other configs on its epoch budget; Hyperband min "
            f"resource {args.min_resource}, reduction factor {args.reduction_factor}"
        )
        print(
            format_table(
                [
                    "search",
                    "reached random's best",
                    "median ratio (reached)",
                    "median share of budget (reached)",
                    "share <= 1/3",
                    f"groups of {args.group} meeting the goal",
                    "same, share reading",
                ],
                [
                    [
                        name,
                        f"{v['reached']:.2f}",
                        shown(v["median_ratio"]),
                        shown(v["median_share"]),
                        f"{v['share_le_third']:.2f}",
                        f"{v['groups_ratio']:.2f}",
                        f"{v['groups_share']:.2f}",
                    ]
                    for name, v in summary.items()
                ],
            )
        )
        unpruned, hyperband = summary["random, unpruned"], summary["hyperband"]
        ratio = hyperband["reached"] / unpruned["reached"] if unpruned["reached"] else None
        print(f"an oracle (random's winning config first, nothing else): mean ratio {oracle:.3f}")
        print(
            "seeds reaching random's best within its budget, Hyperband / unpruned: " + shown(ratio)
        )
        numbers = {
            "correlations": {str(e): list(v) for e, v in correlations.items()},
            "best_kept": {str(e): v for e, v in kept.items()},
            "searches": summary,
            "oracle_ratio_mean": oracle,
            "reached_ratio": ratio,
            "pool": len(pool),
            "simulations": args.simulations,
        }
        print("BENCH_JSON " + json.dumps({"tuning_replay": numbers}))


if __name__ == "__main__":
    main()
