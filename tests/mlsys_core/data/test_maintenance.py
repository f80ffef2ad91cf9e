"""``lake check`` lists every leftover and every damaged snapshot; ``lake gc`` removes the
leftovers older than the grace period, never what a committed snapshot or a running writer
uses, and both run safely beside writers in other processes."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from mlsys_core.cli import main
from mlsys_core.data.cleaning import clean_snapshot
from mlsys_core.data.ingest import snapshot_source
from mlsys_core.data.lake import GroupMember, Lake, LakeError
from mlsys_core.data.maintenance import check_lake, collect_garbage, parse_duration
from mlsys_core.spec import ColumnRule, SourceSpec, TableContract

HOUR = 3600.0
CONTRACT = TableContract(
    columns={"k": ColumnRule(dtype="int"), "v": ColumnRule(dtype="float", ge=0)}, unique=["k"]
)


def _age(path: Path, seconds: float) -> None:
    """Make a file (or a folder and what it holds) look ``seconds`` old."""
    stamp = time.time() - seconds
    for p in [path, *(path.rglob("*") if path.is_dir() else [])]:
        os.utime(p, (stamp, stamp))


def _frame(n: int, start: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"k": range(start, start + n), "v": [float(i) for i in range(n)]})


def _littered(root: Path) -> tuple[Lake, dict[str, Path]]:
    """A lake with one committed table and one of each kind of leftover, all an hour old,
    plus a young orphan part (a running writer's, as far as anyone can tell)."""
    lake = Lake(root)
    good = lake.write_part("clean", "t", "all", "good", _frame(3))
    qgood = lake.write_part("quarantine", "t", "all", "good", _frame(0))
    lake.write_group(
        [
            GroupMember(layer="quarantine", table="t", snapshot_id="ok", parts=[qgood]),
            GroupMember(layer="clean", table="t", snapshot_id="ok", parts=[good]),
        ]
    )
    left = {
        "orphan": lake.write_part("clean", "t", "all", "orphan", _frame(2)),
        "marker": None,
        "young": lake.write_part("clean", "t", "all", "young", _frame(2)),
    }
    paths = {k: lake.root / v.file for k, v in left.items() if v is not None}
    paths["marker"] = lake.root / "clean/t/_parts/all/gone.json"
    paths["marker"].write_text("{}")
    paths["temp"] = lake.root / ".tmp-part-0123.parquet"
    paths["temp"].write_bytes(b"half")
    paths["tempdir"] = lake.root / "clean/t/.tmp-abc-1234"
    paths["tempdir"].mkdir()
    (paths["tempdir"] / "_manifest.json").write_text("{}")
    paths["nomanifest"] = lake.root / "clean/t/nomanifest"
    paths["nomanifest"].mkdir()
    (paths["nomanifest"] / "part-0.parquet").write_bytes(b"x")
    # A quarantine whose clean twin never came (a kill between the pair's renames).
    qpart = lake.write_part("quarantine", "t", "all", "half", _frame(1))
    lake._commit_member(
        GroupMember(layer="quarantine", table="t", snapshot_id="half", parts=[qpart]),
        group=["quarantine/t/half", "clean/t/half"],
    )
    paths["half"] = lake.root / "quarantine/t/half"
    paths["halfpart"] = lake.root / qpart.file
    for name, path in paths.items():
        if name != "young":
            _age(path, HOUR)
    return lake, paths


def test_check_names_every_kind_of_leftover(tmp_path: Path) -> None:
    lake, paths = _littered(tmp_path)
    report = check_lake(lake, grace=timedelta(minutes=10))
    found = {(f.kind, f.path) for f in report.findings}
    rel = {k: str(p.relative_to(lake.root)) for k, p in paths.items()}
    assert found == {
        ("orphan_part", rel["orphan"]),
        ("orphan_part", rel["young"]),
        ("orphan_marker", rel["marker"]),
        ("temporary", rel["temp"]),
        ("temporary", rel["tempdir"]),
        ("no_manifest", rel["nomanifest"]),
        ("incomplete_group", rel["half"]),
        ("orphan_part", rel["halfpart"]),
    }
    assert [f.path for f in report.pending] == [rel["young"]]
    assert not report.damage and not report.ok
    assert report.snapshots == 2  # the committed pair; the half pair is not counted


def test_gc_removes_old_leftovers_only_and_readers_are_untouched(tmp_path: Path) -> None:
    lake, paths = _littered(tmp_path)
    before = {r.snapshot_id: lake.read(r) for r in lake.snapshots("clean", "t")}
    dry = collect_garbage(lake, grace=timedelta(minutes=10), dry_run=True)
    assert len(dry.removed) == 7 and all(p.exists() for p in paths.values())
    result = collect_garbage(lake, grace=timedelta(minutes=10))
    assert len(result.removed) == 7 and result.bytes_freed > 0
    assert [p for p in paths.values() if p.exists()] == [paths["young"]]
    after = check_lake(lake, grace=timedelta(minutes=10))
    assert after.ok and [f.kind for f in after.pending] == ["orphan_part"]
    assert {r.snapshot_id: lake.read(r) for r in lake.snapshots("clean", "t")}.keys() == {"ok"}
    pd.testing.assert_frame_equal(lake.read(lake.find("clean", "t", "ok")), before["ok"])


def test_damage_is_reported_and_never_collected(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    part = lake.write_part("raw", "t", "all", "p", _frame(3))
    ref = lake.write_snapshot("raw", "t", "s", [part])
    (lake.root / part.file).unlink()
    broken = lake.root / "raw/t/bad"
    broken.mkdir()
    (broken / "_manifest.json").write_text("{not json")
    _age(broken, HOUR)
    report = check_lake(lake, grace=timedelta(0))
    assert {(f.kind, f.path) for f in report.damage} == {
        ("missing_part", "raw/t/s"),
        ("bad_manifest", "raw/t/bad/_manifest.json"),
    }
    collect_garbage(lake, grace=timedelta(0))
    assert Path(ref.path, "_manifest.json").is_file() and (broken / "_manifest.json").is_file()


def test_a_part_a_writer_takes_back_into_use_is_spared(tmp_path: Path) -> None:
    """A rerun reuses the part a crashed run left (its name is its content): reusing it
    refreshes its time, so a collection running meanwhile does not remove it."""
    lake = Lake(tmp_path)
    left = lake.write_part("raw", "t", "all", "same", _frame(4))
    _age(lake.root / left.file, HOUR)
    assert [f.kind for f in check_lake(lake, timedelta(minutes=10)).garbage] == ["orphan_part"]
    reused = lake.write_part("raw", "t", "all", "same", _frame(4))  # the rerun
    assert reused == left
    assert collect_garbage(lake, grace=timedelta(minutes=10)).removed == []
    assert lake.write_snapshot("raw", "t", "s", [reused]).rows == 4


def test_a_commit_whose_part_was_removed_fails_loudly(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    part = lake.write_part("raw", "t", "all", "p", _frame(2))
    (lake.root / part.file).unlink()  # a collection with too short a grace, say
    with pytest.raises(LakeError, match="is missing"):
        lake.write_snapshot("raw", "t", "s", [part])
    assert lake.latest("raw", "t") is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        *(("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400), ("0", 0), ("2.5", 2.5)),
        *(("1h 30m", 5400), ("2 days", 172800), ("45 min", 2700)),  # as a duration column
    ],
)
def test_grace_periods_parse(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


def test_a_bad_grace_period_is_one_clear_line(tmp_path: Path, capsys) -> None:
    assert main(["lake", "check", "--lake", str(tmp_path), "--grace", "soon"]) == 2
    assert capsys.readouterr().err.strip() == (
        "mlsys lake: not a duration: 'soon' (use 90s, 15m, 2h, 1d)"
    )


def test_the_commands_check_and_collect(tmp_path: Path, capsys) -> None:
    lake, paths = _littered(tmp_path)
    assert main(["lake", "check", "--lake", str(lake.root), "--grace", "10m"]) == 1
    out = capsys.readouterr().out
    assert "garbage (older than 600s" in out and "incomplete_group" in out
    assert "pending (younger" in out
    assert main(["lake", "gc", "--lake", str(lake.root), "--grace", "10m", "--dry-run"]) == 0
    assert "would remove 7 leftovers" in capsys.readouterr().out
    assert main(["lake", "gc", "--lake", str(lake.root), "--grace", "10m"]) == 0
    assert "removed 7 leftovers" in capsys.readouterr().out
    assert main(["lake", "check", "--lake", str(lake.root), "--grace", "10m", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [f["kind"] for f in report["findings"]] == ["orphan_part"]  # the young one


# -- beside running writers ----------------------------------------------------------------
def _writer(root: str, landing: str, months: int, done: multiprocessing.Queue) -> None:
    """Land a file, ingest it, clean it; again and again (what the data flows do)."""
    lake = Lake(Path(root))
    source = SourceSpec(name="sales", path=landing, incremental=True, partition_by=["m"])
    contract = TableContract(
        columns={**CONTRACT.columns, "m": ColumnRule(dtype="int")}, unique=["m", "k"]
    )
    try:
        for month in range(1, months + 1):
            frame = _frame(50, start=0).assign(m=month)
            tmp = Path(landing) / f".{month}.tmp"
            frame.to_csv(tmp, index=False)
            tmp.rename(Path(landing) / f"{month:02d}.csv")
            clean_snapshot(snapshot_source(source, lake), contract, lake, batch_rows=20)
        done.put("ok")
    except Exception as err:  # noqa: BLE001 - reported to the parent
        done.put(f"{type(err).__name__}: {err}")


def test_check_and_gc_beside_writers_in_other_processes(tmp_path: Path) -> None:
    lake, landing = Lake(tmp_path / "lake"), tmp_path / "landing"
    landing.mkdir()
    context = multiprocessing.get_context("spawn")
    done = context.Queue()
    writer = context.Process(target=_writer, args=(str(lake.root), str(landing), 6, done))
    writer.start()
    removed, rounds = 0, 0
    try:
        while writer.is_alive() or rounds < 2:
            # Litter like a killed writer would, an hour ago, then collect with a grace a
            # running writer's files are always younger than.
            rounds += 1
            (lake.root / "raw").mkdir(parents=True, exist_ok=True)
            junk = lake.root / f".tmp-part-junk{rounds}.parquet"
            junk.write_bytes(b"half")
            _age(junk, HOUR)
            report = check_lake(lake, grace=timedelta(seconds=30))
            assert not report.damage, report.damage
            removed += len(collect_garbage(lake, grace=timedelta(seconds=30)).removed)
            for ref in lake.snapshots("clean", "sales"):  # readers see whole tables only
                assert len(lake.read(ref)) == ref.rows
            time.sleep(0.05)
    finally:
        writer.join(timeout=300)
    assert done.get(timeout=5) == "ok"
    assert removed >= rounds
    final = lake.latest("clean", "sales")
    assert final is not None and final.rows == 6 * 50
    assert check_lake(lake, grace=timedelta(0)).findings == []
