"""A small nycflights13 for demos, tests and benchmarks: the same spec, pointed at files
holding a month-stratified sample of the flights and the full dimension tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mlsys_core.data.sources import read_source
from mlsys_core.datasets.nycflights13.spec import nycflights13_spec
from mlsys_core.spec import DatasetSpec, SourceSpec


def read_tables() -> dict[str, pd.DataFrame]:
    """The real tables, as read from the installed package."""
    return {s.name: read_source(s) for s in nycflights13_spec().sources}


def sample_spec(
    folder: Path,
    fraction: float,
    seed: int = 0,
    tables: dict[str, pd.DataFrame] | None = None,
) -> DatasetSpec:
    """Write ``fraction`` of each month's flights (and the whole dimension tables) as gzip
    CSV files under ``folder``; return the nycflights13 spec reading them (same partitions).

    ``tables`` are the real tables when the caller has them already.
    """
    base = nycflights13_spec()
    tables = tables or read_tables()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sources = []
    for source in base.sources:
        frame = tables[source.name]
        if source.name == base.base:
            frame = frame.groupby("month", group_keys=False).sample(
                frac=fraction, random_state=seed
            )
        path = (folder / f"{source.name}.csv.gz").resolve()
        frame.to_csv(path, index=False, compression="gzip")
        sources.append(
            SourceSpec(name=source.name, path=str(path), partition_by=source.partition_by)
        )
    return base.model_copy(update={"sources": sources})


SAMPLE_FRACTION = 0.03  # ~10k flights, every month present: the pipeline trains in seconds


def nycflights13_sample_spec() -> DatasetSpec:
    """A 3% month-stratified sample of nycflights13 (published as ``nycflights13_sample``):
    the same spec on small files, for a first run in a minute and for the documentation.

    The files are written once into ``<state>/samples/nycflights13-3pct`` (a marker written
    last says they are complete) and reused, so reruns ingest identical bytes.
    """
    from mlsys_core.atomic import write_text_atomically  # noqa: PLC0415
    from mlsys_core.config import Settings  # noqa: PLC0415

    folder = Settings().root / "samples" / "nycflights13-3pct"
    marker = folder / "complete"
    if marker.exists():
        base = nycflights13_spec()
        sources = [
            SourceSpec(
                name=s.name,
                path=str(folder / f"{s.name}.csv.gz"),
                partition_by=s.partition_by,
            )
            for s in base.sources
        ]
        spec = base.model_copy(update={"sources": sources})
    else:
        spec = sample_spec(folder, SAMPLE_FRACTION)
        write_text_atomically(marker, "sample_spec fraction=0.03 seed=0\n")
    return spec.model_copy(
        update={"name": "nycflights13_sample", "model_name": "flight-delay-sample"}
    )
