"""Do the new feature kinds pay, and is the plain model no worse? Test AUC, side by side.

- **flights**: the reference spec ``nycflights13`` (plain groups) against
  ``nycflights13_text`` (the same, plus TF-IDF of airline, plane-model and airport names,
  US holidays, and variance + mutual-information selection). Same lake, same
  ``TrainConfig`` and seed, both through ``train_and_log`` exactly as the train stage runs.
- **digits**: the ``digits`` spec (normalized pixels + random-feature CNN, variance + L1
  selection, MLP) against scikit-learn's ``LogisticRegression`` on the raw pixels of the same
  hash split.

Prints the test AUC of each and the ratio ours / baseline.

    .venv/bin/python bench/feature_kinds.py                    # all flights, ~12 min here
    .venv/bin/python bench/feature_kinds.py --fraction 0.1 --epochs 4
"""

from __future__ import annotations

import argparse
import time

from _common import (
    format_table,
    scratch_folder,
    use_isolated_state,
    write_sampled_sources,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fraction", type=float, default=1.0, help="share of the flights")
    parser.add_argument("--epochs", type=int, default=12, help="flights TrainConfig.epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary state folder")
    return parser.parse_args(argv)


def build(spec, lake):  # noqa: ANN001, ANN201
    from mlsys_core.data.cleaning import clean_snapshot  # noqa: PLC0415
    from mlsys_core.data.ingest import snapshot_source  # noqa: PLC0415
    from mlsys_core.features.store import build_feature_set  # noqa: PLC0415

    clean = {
        s.name: clean_snapshot(snapshot_source(s, lake), spec.contracts[s.name], lake)
        for s in spec.sources
    }
    return build_feature_set(clean, spec, lake)


def run_digits(settings, lake, seed: int) -> tuple[tuple[float, float], tuple[float, float]]:  # noqa: ANN001
    """(test AUC, seconds) of the digits spec's model and of a logistic regression."""
    import numpy as np  # noqa: PLC0415
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415
    from sklearn.metrics import roc_auc_score  # noqa: PLC0415

    from mlsys_core.datasets.digits import DIGIT_PIXELS, digits_spec  # noqa: PLC0415
    from mlsys_core.features.store import load_feature_set  # noqa: PLC0415
    from mlsys_core.training.config import TrainConfig  # noqa: PLC0415
    from mlsys_core.training.run import labeled_splits, train_and_log  # noqa: PLC0415

    spec = digits_spec()
    t0 = time.perf_counter()
    features = build(spec, lake)
    config = TrainConfig(epochs=60, batch_size=64, patience=8, seed=seed)
    ours = train_and_log(features, config, lake, settings.tracking).metrics["test_auc"]
    ours_s = time.perf_counter() - t0
    splits = labeled_splits(load_feature_set(features, lake)[0], spec)
    t0 = time.perf_counter()
    x = {n: splits[n][DIGIT_PIXELS].to_numpy(np.float64) / 16.0 for n in ("train", "test")}
    y = {n: splits[n][spec.label.name].to_numpy() for n in ("train", "test")}
    logistic = LogisticRegression(max_iter=2000).fit(x["train"], y["train"])
    base = roc_auc_score(y["test"], logistic.predict_proba(x["test"])[:, 1])
    return (ours, ours_s), (base, time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with scratch_folder("mlsys-bench-kinds-", keep=args.keep) as root:
        use_isolated_state(root / "state")
        from mlsys_core.config import Settings  # noqa: PLC0415
        from mlsys_core.data.lake import Lake  # noqa: PLC0415
        from mlsys_core.datasets import resolve_spec  # noqa: PLC0415
        from mlsys_core.spec import DatasetSpec  # noqa: PLC0415
        from mlsys_core.training.config import TrainConfig  # noqa: PLC0415
        from mlsys_core.training.run import train_and_log  # noqa: PLC0415

        settings = Settings()
        lake = Lake(settings.lake_dir)
        plain, text = resolve_spec("nycflights13"), resolve_spec("nycflights13_text")
        if args.fraction < 1.0:
            sampled = DatasetSpec.model_validate_json(
                write_sampled_sources(root / "data", args.fraction, args.seed).read_text()
            )
            paths = {s.name: s for s in sampled.sources}
            plain = plain.model_copy(update={"sources": sampled.sources})
            sources = [paths.get(s.name, s) for s in text.sources]
            text = text.model_copy(update={"sources": sources})
        rows = []
        aucs: dict[str, float] = {}
        config = TrainConfig(epochs=args.epochs, seed=args.seed)
        for name, spec in (("nycflights13 (plain)", plain), ("nycflights13_text", text)):
            t0 = time.perf_counter()
            trained = train_and_log(build(spec, lake), config, lake, settings.tracking)
            seconds = time.perf_counter() - t0
            aucs[name] = trained.metrics["test_auc"]
            rows.append([name, f"{seconds:.0f}", f"{aucs[name]:.4f}"])
            print(f"  {name}: test AUC {aucs[name]:.4f} in {seconds:.0f} s")

        (ours, ours_s), (base, base_s) = run_digits(settings, lake, args.seed)
        rows += [
            ["digits: mlsys MLP on extractors", f"{ours_s:.0f}", f"{ours:.4f}"],
            ["digits: LogisticRegression on pixels", f"{base_s:.0f}", f"{base:.4f}"],
        ]
        print()
        print(format_table(["model", "seconds", "test AUC"], rows))
        ratio = aucs["nycflights13_text"] / aucs["nycflights13 (plain)"]
        print(f"\nflights: test AUC text / plain = {ratio:.4f}")
        print(f"digits:  test AUC mlsys / logistic regression = {ours / base:.4f}")


if __name__ == "__main__":
    main()
