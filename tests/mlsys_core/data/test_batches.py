"""Batch-by-batch cleaning (mlsys_core/data/batches.py and cleaning.py): the same answer as
cleaning the table whole, every row accounted for, and nothing half-written on failure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlsys_core.data import batches as batches_module
from mlsys_core.data.cleaning import clean_snapshot
from mlsys_core.data.contract import REASON, ContractError, clean_table
from mlsys_core.data.ingest import snapshot_source
from mlsys_core.data.lake import Lake
from mlsys_core.data.sources import EmptySourceError
from mlsys_core.spec import ColumnRule, DatasetSpec, SourceSpec, TableContract

CONTRACT = TableContract(
    columns={
        "code": ColumnRule(dtype="string"),
        "size": ColumnRule(dtype="int", ge=0, le=100),
        "weight": ColumnRule(dtype="float", nullable=True),
    },
    unique=["code"],
)


def _ingest(tmp_path: Path, frame: pd.DataFrame, name: str = "codes.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    lake = Lake(tmp_path / "lake")
    return lake, snapshot_source(SourceSpec(name="codes", path=str(path)), lake)


def _random_table(seed: int, rows: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, rows // 2, rows).astype(str)  # many repeats, across batches
    sizes = rng.integers(-20, 130, rows).astype(object)
    sizes[rng.random(rows) < 0.05] = "x"  # wrong dtype
    weights = rng.normal(size=rows)
    weights[rng.random(rows) < 0.1] = np.nan  # NaNs: allowed here
    return pd.DataFrame(
        {"code": codes, "size": sizes, "weight": weights, "extra": rng.random(rows)}
    )


@pytest.mark.parametrize(("seed", "batch_rows"), [(0, 7), (1, 64), (2, 1000)])
def test_batches_clean_exactly_like_the_whole_table(tmp_path: Path, seed: int, batch_rows: int):
    frame = _random_table(seed)
    lake, raw = _ingest(tmp_path, frame)
    ref = clean_snapshot(raw, CONTRACT, lake, batch_rows=batch_rows)
    whole = clean_table(lake.read(raw), CONTRACT, "codes")
    clean, quarantine = lake.read(ref.clean), lake.read(ref.quarantine)
    assert ref.clean.rows + ref.quarantine.rows == ref.rows_in == len(frame)
    assert clean["code"].tolist() == whole.clean["code"].tolist()
    np.testing.assert_array_equal(clean["size"], whole.clean["size"])
    assert quarantine[REASON].tolist() == whole.quarantined[REASON].tolist()
    assert ref.reasons == dict(whole.reasons)


def test_nan_wrong_dtype_and_empty_values_are_quarantined_with_reasons(tmp_path: Path):
    frame = pd.DataFrame(
        {
            "code": ["A", "B", None, "D", "E"],
            "size": [1, None, 3, "big", 5],
            "weight": [0.5, 1.0, 2.0, 3.0, "heavy"],
        }
    )
    lake, raw = _ingest(tmp_path, frame)
    ref = clean_snapshot(raw, CONTRACT, lake, batch_rows=2)
    quarantine = lake.read(ref.quarantine).set_index("code", drop=False)
    assert lake.read(ref.clean)["code"].tolist() == ["A"]
    assert ref.reasons == {
        "size: null": 1,
        "code: null": 1,
        "size: not an int": 1,
        "weight: not a float": 1,
    }
    assert quarantine.loc["D", REASON] == "size: not an int"
    assert quarantine.loc["E", "weight"] == "heavy"  # the raw text is kept


def test_an_empty_input_is_refused_and_writes_no_snapshot(tmp_path: Path):
    with pytest.raises(EmptySourceError, match="has no rows; nothing was written"):
        _ingest(tmp_path, pd.DataFrame(columns=["code", "size", "weight"]))
    assert not (tmp_path / "lake" / "raw").exists()


def test_a_renamed_column_fails_loudly_and_writes_nothing(tmp_path: Path):
    frame = _random_table(3).rename(columns={"size": "sz"})
    lake, raw = _ingest(tmp_path, frame)
    before = sorted(p for p in lake.root.rglob("*"))
    with pytest.raises(ContractError, match=r"missing: \['size'\]"):
        clean_snapshot(raw, CONTRACT, lake, batch_rows=50)
    assert sorted(p for p in lake.root.rglob("*")) == before


def test_a_failure_mid_table_leaves_the_lake_exactly_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    lake, raw = _ingest(tmp_path, _random_table(4))
    before = {p: p.stat().st_mtime_ns for p in lake.root.rglob("*")}
    calls = {"n": 0}
    real = batches_module.clean_table

    def failing_on_third_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(batches_module, "clean_table", failing_on_third_batch)
    with pytest.raises(OSError, match="disk went away"):
        clean_snapshot(raw, CONTRACT, lake, batch_rows=50)
    assert calls["n"] == 3  # two batches were already written to temporary files
    assert {p: p.stat().st_mtime_ns for p in lake.root.rglob("*")} == before
    monkeypatch.setattr(batches_module, "clean_table", real)
    ref = clean_snapshot(raw, CONTRACT, lake, batch_rows=50)
    assert ref.clean.rows + ref.quarantine.rows == raw.rows


def test_real_flights_clean_per_month_like_the_whole_table(
    tmp_path: Path, real_tables: dict[str, pd.DataFrame], small_spec: DatasetSpec
):
    sample = real_tables["flights"].sample(frac=0.02, random_state=0)
    path = tmp_path / "flights.csv"
    sample.to_csv(path, index=False)
    lake = Lake(tmp_path / "lake")
    source = SourceSpec(name="flights", path=str(path), partition_by=["year", "month"])
    raw = snapshot_source(source, lake)
    contract = small_spec.contracts["flights"]
    ref = clean_snapshot(raw, contract, lake, batch_rows=500)
    assert len(lake.parts(ref.clean)) == 12
    whole = clean_table(sample, contract, "flights")
    assert ref.clean.rows == len(whole.clean) and ref.quarantine.rows == len(whole.quarantined)
    key = contract.unique
    ours = lake.read(ref.clean).sort_values(key).reset_index(drop=True)
    theirs = whole.clean.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(
        ours[list(contract.columns)], theirs[list(contract.columns)], check_dtype=False
    )
