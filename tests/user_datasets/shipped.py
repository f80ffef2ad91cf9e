"""The datasets this package publishes, each cut to a small slice of its real data, and a
spec file a user could have written that names such a slice (a reference by path)."""

from __future__ import annotations

from pathlib import Path

from mlsys_core.data.sources import read_source
from mlsys_core.datasets import published_datasets
from mlsys_core.spec import DatasetSpec, SourceSpec

BASE_ROWS = 3_000  # rows of each spec's base table: every split keeps both label classes
# The datasets this package publishes (a plug-in installed alongside is not ours to test).
SHIPPED = sorted(n for n, ep in published_datasets().items() if ep.value.startswith("mlsys_core."))


def sliced(spec: DatasetSpec, folder: Path) -> DatasetSpec:
    """The spec with its base table cut to a seeded sample of ``BASE_ROWS`` rows, written
    as CSV files with a header (the other tables whole): same code path, small data. Files
    already written are reused, so resolving the spec again reads what ingest read."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = []
    for source in spec.sources:
        path = folder / f"{source.name}.csv.gz"
        if not path.exists():
            frame = read_source(source)
            if source.name == spec.base and len(frame) > BASE_ROWS:
                frame = frame.sample(n=BASE_ROWS, random_state=0)
            tmp = path.with_name(f".{path.name}.tmp")
            frame.to_csv(tmp, index=False, compression="gzip")
            tmp.replace(path)
        sources.append(
            SourceSpec(name=source.name, path=str(path), partition_by=source.partition_by)
        )
    return spec.model_copy(update={"sources": sources})


SPEC_FILE = '''
"""The shipped {name!r} dataset on a slice of its data, written next to this file."""

from pathlib import Path

from mlsys_core.datasets import resolve_spec
from tests.user_datasets.shipped import sliced


def spec():
    return sliced(resolve_spec({name!r}), Path(__file__).resolve().parent / "data")
'''


def slice_reference(name: str, folder: Path) -> str:
    """A spec file in ``folder`` that names the shipped dataset ``name`` on a slice; its
    reference (``path.py:spec``)."""
    path = folder / f"{name}_slice.py"
    path.write_text(SPEC_FILE.format(name=name))
    return f"{path}:spec"
