"""A starting spec for a user's data, inferred by looking at it (``mlsys spec init``).

The data says what it can: the tables and how they are read, every column's type (numbers,
text, times with the strptime ``format`` or epoch ``unit`` that reads them all), the
observed ranges and which columns hold nulls, a key that is unique, a split by time. What
only the user knows (the label's threshold or positive classes, the entity, which columns
are features and which would leak the answer) is written as a best guess with a ``TODO``
comment. The text it returns is a Python file whose function returns the
:class:`DatasetSpec`, so ``path/to/file.py:NAME`` is a dataset reference like any other.
"""

from __future__ import annotations

import codecs
import csv
import decimal
import fnmatch
import io
import itertools
import json
import math
import os
import re
import textwrap
import unicodedata
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlsys_core.data.contract import (
    absent,
    clean_table,
    infer_column_types,
    minus_first,
    read_numbers,
    to_utc_datetimes,
)
from mlsys_core.data.durations import duration_parts, duration_seconds
from mlsys_core.data.sources import (
    ARCHIVES,
    ARROW_FILES,
    SHEETS,
    Archive,
    ArchiveError,
    SourceBytes,
    SourceError,
    ascii_minus,
    compression_of,
    dates_alone,
    detect_format,
    footer_rows,
    has_header,
    is_delimited,
    is_partitioned,
    is_skipped,
    joined_columns,
    landed,
    leading_zero_codes,
    not_read,
    parse_file,
    parse_source,
    read_source_bytes,
    redacted_url,
    rows_of,
    sheet_cells,
    sheet_layout,
    sheet_names,
    sniff_csv,
    spaced_after_separator,
    unpacked,
)
from mlsys_core.data.zones import AMBIGUOUS, ZONE_OFFSETS, abbreviations, zones_as_offsets
from mlsys_core.features.assemble import EventLabels, make_label, newest_event
from mlsys_core.spec import RARER_PER_WINDOW, ColumnRule, DatasetSpec, LabelSpec, SourceSpec

# Read by name; a file named otherwise is left out of a folder (and named when that loses a
# column asked for). Tab-separated files are CSVs whose separator is sniffed.
DATA_SUFFIXES = (
    *(".csv", ".tsv", ".tab", ".txt", ".parquet", ".pq", ".jsonl", ".ndjson", ".json"),
    *ARROW_FILES,
    *SHEETS,
    ".dta",
)
READ_HERE = "CSV, Parquet, Feather, JSON, Excel or Stata"
# Non-ISO layouts tried, in order, on text columns that ISO 8601 does not read. Day-first
# and month-first layouts that both read every value are ambiguous: flagged TODO.
TIME_FORMATS = (
    "%b-%Y", "%b %Y", "%B %Y", "%Y-%m", "%Y%m%d", "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y",
    "%d-%b-%Y", "%d %b %Y", "%d/%m/%Y %H:%M", "%m/%d/%Y %H:%M", "%d/%m/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M:%S", "%Y/%m/%d", "%Y/%m/%d %H:%M:%S",
    # a 12-hour clock, as spreadsheets and US exports write it (01/05/2024 06:46 PM)
    "%m/%d/%Y %I:%M %p", "%d/%m/%Y %I:%M %p", "%m/%d/%Y %I:%M:%S %p", "%d/%m/%Y %I:%M:%S %p",
    "%Y-%m-%d %I:%M %p", "%Y-%m-%d %I:%M:%S %p",
    # day-first with dots and a clock, as German spreadsheets write it (05.01.2024 14:30)
    "%d.%m.%Y %H:%M", "%d.%m.%Y %H:%M:%S",
    # and with a two-digit year, as a Sparkasse export writes it (05.01.24), where the day
    # and month are two digits each: a version number (2.10.15) is no date
    "%d.%m.%y", "%d.%m.%y %H:%M",
    # dates in words, as reports write them (January 5, 2024; Friday, January 5, 2024)
    "%B %d, %Y", "%A, %B %d, %Y",
    # with their zone: BigQuery's export (2024-01-05 10:00:00.123456 UTC), e-mail and
    # HTTP (RFC 2822: Fri, 05 Jan 2024 10:00:00 +0100, or GMT)
    "%Y-%m-%d %H:%M:%S %Z", "%Y-%m-%d %H:%M:%S.%f %Z", "%a, %d %b %Y %H:%M:%S %z",
    "%a, %d %b %Y %H:%M:%S %Z",
    # a US export's local time and its zone (2024-07-05 10:00 EDT, 7/5/2024 10:00 AM EDT)
    "%Y-%m-%d %H:%M %Z", "%m/%d/%Y %I:%M %p %Z", "%m/%d/%Y %I:%M:%S %p %Z",
    # Twitter's API (Fri Jan 05 10:00:00 +0000 2024), Unix date and Java's (Fri Jan 05
    # 10:00:00 EST 2024), a web server's access log (05/Jan/2024:10:00:00 +0000)
    "%a %b %d %H:%M:%S %z %Y", "%a %b %d %H:%M:%S %Z %Y", "%d/%b/%Y:%H:%M:%S %z",
    # a browser's or Salesforce's local time (1/5/2024, 10:00:00 AM; 05/01/2024, 10:00:00)
    "%m/%d/%Y, %I:%M %p", "%m/%d/%Y, %I:%M:%S %p", "%d/%m/%Y, %H:%M", "%d/%m/%Y, %H:%M:%S",
    # months in words the other ways round (Jan 5, 2024; 05 January 2024), Oracle's and
    # Jira's (05-Jan-2024 10:00, 05-JAN-24, 05/Jan/24 10:00 AM)
    "%b %d, %Y", "%d %B %Y", "%d-%b-%Y %H:%M", "%d-%b-%Y %H:%M:%S", "%d-%b-%y",
    "%d/%b/%y %I:%M %p",
    # a two-digit year, as a spreadsheet's short date writes it (1/5/24, 05/01/24 14:30)
    "%d/%m/%y", "%m/%d/%y", "%d/%m/%y %H:%M", "%m/%d/%y %H:%M",
    "%m/%d/%y %I:%M %p",
    # a fraction of a second after a day-first or month-first date (SQL Server's text)
    "%d/%m/%Y %H:%M:%S.%f", "%m/%d/%Y %H:%M:%S.%f",
)  # fmt: skip
# Then each date layout exports write with each clock they put after it: dashes between
# numbers (02-01-2024, as Indian and many European exports write), months and weekdays in
# words (02 Jan 2024 17:56, Jan 2, 2024, 5:56 PM, January 2, 2024 at 5:56 PM).
_DATES = (
    "%d-%m-%Y", "%m-%d-%Y", "%d %b %Y", "%d %B %Y", "%b %d, %Y", "%B %d, %Y", "%d-%b-%Y",
    "%d-%B-%Y", "%b-%d-%Y", "%Y-%b-%d", "%a %d %b %Y", "%A %d %B %Y", "%A, %d %B %Y",
    "%a, %b %d, %Y", "%A, %B %d, %Y",
)  # fmt: skip
_AFTER_DATES = (
    "", " %H:%M", " %H:%M:%S", " %I:%M %p", " %I:%M:%S %p", ", %H:%M", ", %I:%M %p",
    " at %H:%M", " at %I:%M %p",
)  # fmt: skip
TIME_FORMATS += tuple(
    f"{date}{clock}"
    for date in _DATES
    for clock in _AFTER_DATES
    if f"{date}{clock}" not in TIME_FORMATS
)
TIME_SAMPLE = 200  # values a layout is tried on before it is tried on them all
# A spreadsheet's dates as the numbers it keeps (a column formatted General, or exported
# by a tool that drops the format): serial days from 1990 to 2060 in a column named as a
# time. Other numbers so named (a duration in seconds) rarely all lie there: a TODO.
EXCEL_DAYS = (32874, 60632)
_ZONE_TODO = "TODO: times without an offset are UTC; else set timezone="
# A time by its name, snake_case, spaced or camelCase: created_at, "Created At", BookedAt.
_TIME_NAME = re.compile(
    r"(time|date|[ _.]at$|[ _.]ts$|^ts$|epoch|timestamp|(?-i:[a-z0-9](At|Ts)$))", re.IGNORECASE
)
# A key by its name: customer_id, BookingID, zip_code, "Order No.", PhoneNumber, and the
# compounds of other languages' spreadsheets (Kundennummer, Bestellnr, numero_cliente).
# A column named by the noun alone (customer, Kunde) holds whom a row is about, as an
# id does: a key, never a measure (customer 2041 is not twice customer 1020).
_KEY_NAME = re.compile(
    r"(id$|_key$|_code$|_num$|(^|[ _.])(no|nr)\.?$|nr\.?$|number$|nummer$|^n[uú]mero"
    r"|^(customer|user|client|account|member|patient|subscriber|player|student|employee"
    r"|driver|merchant|seller|vendor|supplier|store|shop|household|tenant|kunde|cliente)$)",
    re.IGNORECASE,
)
# A row's own id by its name alone, as databases and ORMs name a table's primary key.
_ROW_ID = re.compile(r"_?id|uuid|pk|row_?id|index", re.IGNORECASE)
_UNNAMED = re.compile(r"Unnamed: \d+")  # pandas' name for a column whose header is empty
SHOWN_COLUMNS = 30  # a message names this many columns of a wide table, and counts the rest
FOREIGN_KEY_HITS = 0.9  # a column names another table's rows: this share of it found there
MAX_LOOKUP_KEYS = 3  # a lookup's key: at most this many columns together,
MAX_SHARED_FOR_PAIRS = 6  # tried only among this few shared columns (41 checks at most)
# The valid and test windows' share of rows, tried in turn until each window holds this many
# of the rarer class, RARER_PER_WINDOW (the training split keeps half the rows or more).
WINDOW_SHARES = (0.15, 0.175, 0.2, 0.225, 0.25)
MAX_CATEGORIES = 50  # text columns with more distinct values look like free text or ids
SAMPLE_ROWS = 200_000
# A text column is proposed as numbers when at most this share of its values do not parse
# (``"n/a"`` among amounts): a guess for the user to review, so looser than the lake's own
# typing of undeclared columns (INFER_TOLERANCE), and its stray values are named.
NUMBERS_TOLERANCE = 0.1
TIME_MARGIN_YEARS = 10  # a time column's upper bound: this many years past the last seen


class StarterError(ValueError):
    """Data that no starting spec can be written for; the message says why."""


@dataclass
class Column:
    name: str
    dtype: str  # int, float, string, datetime
    nullable: bool
    rule: ColumnRule
    note: str = ""  # a comment for the user (observed range, TODO ...)


@dataclass
class Table:
    """A table as read: ``frame`` holds every row (ranges, nulls, keys and the split come
    from all of them), ``sample`` up to ``SAMPLE_ROWS`` spread over the file (types and
    notations are found there: a time-sorted log's first rows are its first weeks)."""

    name: str
    source: SourceSpec
    frame: pd.DataFrame
    columns: dict[str, Column] = field(default_factory=dict)
    url_code: str = ""  # a database table: the Python expression of its URL in the spec
    url_env: str = ""  # ... and the variable it reads, when the URL holds a password
    partitions: list[str] = field(default_factory=list)  # columns its folders name
    parsed: dict[str, pd.Series] = field(default_factory=dict, repr=False)

    def times(self, name: str) -> pd.Series:
        """A time column as the lake reads it (UTC), parsed once: its range, the split and
        an outcome table's delay all read it."""
        if name not in self.parsed:
            rule = self.columns[name].rule
            self.parsed[name] = to_utc_datetimes(absent(self.frame[name], rule), rule)
        return self.parsed[name]

    @cached_property
    def sample(self) -> pd.DataFrame:
        rows = len(self.frame)
        if rows <= SAMPLE_ROWS:
            return self.frame
        return self.frame.iloc[np.linspace(0, rows - 1, SAMPLE_ROWS).round().astype(np.int64)]

    @property
    def where(self) -> str:
        """Where the table is read from, for messages (no password)."""
        if self.source.format == "sql":
            return f"table {self.source.query!r} of {redacted_url(self.source.url or '')}"
        kind = "landing folder" if self.source.incremental else "file"
        within = self.source.sheet or self.source.member
        return f"{kind} {self.source.path}" + (f" ({within})" if within else "")


@dataclass
class Starter:
    """What ``mlsys spec init`` decided, and the file text that says it."""

    name: str
    tables: list[Table]
    base: str
    label: str
    keys: list[str]
    time: str | None
    text: str
    todos: int


def _table_name(path: Path) -> str:
    return _identifier(path.name.split(".")[0], "data", "t_")


def _snake(text: str, empty: str = "value") -> str:
    """``text`` as a part of a Python-safe name: lower case, runs of anything else ``_``."""
    return re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_") or empty


def _identifier(text: str, empty: str, prefix: str) -> str:
    """``text`` as a name the spec's fields accept: snake case, from a letter."""
    name = _snake(text, empty)
    return name if name[0].isalpha() else f"{prefix}{name}"


def _is_data(path: Path) -> bool:
    """A file of data the ingest reads (not a hidden file, nor a lock file Excel leaves
    beside a workbook it has open: ``is_skipped``); a ``.txt`` file when it is a table (a
    spreadsheet's "Unicode Text", tab-separated), not when it is a README; an archive (a
    ``.zip``, a tarball) holding such a file, whatever its own name says."""
    if not path.is_file() or is_skipped(Path(path.name)):
        return False
    if path.name.lower().endswith(ARCHIVES):
        return bool(_archive_members(path))
    return _is_data_name(path, path.name, None)


def _is_data_name(path: Path, name: str, member: str | None) -> bool:
    lowered = name.lower().removesuffix(".gz")
    if not lowered.endswith(DATA_SUFFIXES):
        return False
    if not lowered.endswith(".txt"):
        return True
    try:
        with unpacked(path, compression_of(path.name), member) as handle:
            head = handle.read(65536)
    except (OSError, EOFError, zipfile.BadZipFile, ArchiveError):
        return False
    return is_delimited(head.decode(_encoding(head), errors="replace"))


def _tables_within(path: Path) -> list[SourceSpec]:
    """The tables of a file that holds several, a source each: a workbook's sheets that
    hold data, an archive's data files (a competition's download: train, test and a
    sample submission). None for a file that is one table."""
    lowered = path.name.lower()
    if lowered.endswith(SHEETS) and len(sheets := _filled_sheets(path)) > 1:
        return [
            SourceSpec(
                name=_table_name(Path(sheet.replace(".", "_"))),
                path=str(path),
                **_sheet_dialect(path, sheet),
            )
            for sheet in sheets
        ]
    if lowered.endswith(ARCHIVES):
        return [
            SourceSpec(
                name=_table_name(Path(Path(member).name)),
                path=str(path),
                member=member,
                **_dialect(path, member),
            )
            for member in _packed_files(path)
        ]
    return []


def _packed_files(path: Path) -> list[str]:
    """The data files of an archive that holds other files too, each read by name
    (``SourceSpec(member=...)``); none where its one file is read without a name."""
    files = _archive_files(path)  # listed once: a tarball is read through to list it
    return _data_members(path, files) if len(files) > 1 else []


def _archive_files(path: Path) -> list[str]:
    kind = compression_of(path.name)
    if kind not in ("zip", "tar"):
        return []
    try:
        with Archive(path, kind) as archive:
            return archive.files
    except (OSError, ArchiveError):
        return []


def _archive_members(path: Path) -> list[str]:
    """The files of an archive that are data, by the tests of :func:`_is_data`."""
    return _data_members(path, _archive_files(path))


def _data_members(path: Path, files: list[str]) -> list[str]:
    return [f for f in files if _is_data_name(path, Path(f).name, f)]


def _read(source: SourceSpec, path: Path) -> pd.DataFrame:
    raw = SourceBytes(spec=source, uri=str(path), data=path.read_bytes())
    try:
        frame = parse_source(raw, path.name)
    except SourceError as err:
        raise StarterError(str(err)) from None
    return frame


def _dialect(path: Path, member: str | None = None) -> dict[str, Any]:
    """How a CSV file (gzipped or zipped too) writes its fields and decimals, its text, and
    what stands above its header, where not as the defaults (',', '.', UTF-8, nothing): a
    spreadsheet's export where ',' marks decimals uses ';' between fields, Excel on Windows
    saves in its code page, and a bank's export writes a title above the table. ``member``:
    the archive's file read (its only one when None)."""
    if path.name.lower().endswith(ARCHIVES):
        members = _archive_members(path) if member is None else [member]
        named = members[0] if len(members) == 1 else path.name
    else:
        named = path.name
    kind = detect_format(SourceSpec(name="probe", path=str(path)), named)
    if kind == "xlsx" and named == path.name:
        return _sheet_dialect(path, None)
    if kind not in ("csv", "xlsx"):
        return {}
    try:  # unpacked once, as the ingest unpacks it (a .gz, an archive's file)
        with unpacked(path, compression_of(path.name), member) as handle:
            text = handle.read()
    except (OSError, EOFError, zipfile.BadZipFile, ArchiveError):
        return {}  # reading it whole says what is wrong with it, in the source's words
    if kind == "xlsx":  # a workbook in an archive
        return _sheet_dialect(text, None)
    encoding = _encoding(text)
    head = text[:65536].decode(encoding, errors="replace")  # whole UTF-16 units: even
    delimiter, mark, skip = sniff_csv(head)
    tail = text[-65536:] if len(text) % 2 == 0 else text[-65535:]  # UTF-16 units: even
    footer = footer_rows(tail.decode(encoding, errors="replace"), delimiter)
    found: dict[str, Any] = {"delimiter": delimiter, "decimal": mark, "skip_rows": skip}
    found["skip_footer"] = footer
    table = head.splitlines()[skip:]  # from the header line, or the first row of data
    found["skip_initial_space"] = spaced_after_separator("\n".join(table), delimiter)
    if not has_header("\n".join(table), delimiter):
        width = len(rows_of(table[:1], delimiter)[0])
        found["header"] = False
        found["column_names"] = [f"column_{i}" for i in range(1, width + 1)]
    whole = len(text) <= 65536  # else the head's last line may be cut
    found["text_columns"] = _codes("\n".join(table if whole else table[:-1]), found)
    found["encoding"] = encoding
    return _told(found)


def _sheet_dialect(book: Path | bytes, sheet: str | None) -> dict[str, Any]:
    """What stands above a sheet's table and below it, and its header, where not as the
    defaults; ``sheet`` None: the workbook's first (its only one with data). ``book``: its
    file, or its bytes (a workbook in an archive)."""
    try:
        name = sheet if sheet is not None else sheet_names(book)[0]
        cells = sheet_cells(book, name)
    except (ValueError, KeyError, OSError, zipfile.BadZipFile):
        return {}  # reading it says what is wrong with it, in the source's words
    skip, footer, header = sheet_layout(cells)
    found: dict[str, Any] = {"sheet": sheet, "skip_rows": skip, "skip_footer": footer}
    if not header:
        found["header"] = False
        found["column_names"] = [f"column_{i}" for i in range(1, cells.shape[1] + 1)]
    return _told(found)


def _told(options: dict[str, Any]) -> dict[str, Any]:
    """The read options that differ from ``SourceSpec``'s defaults: what a spec writes."""
    return {k: v for k, v in options.items() if v != _default(k)}


def _default(option: str) -> Any:
    return SourceSpec.model_fields[option].get_default(call_default_factory=True)


def _filled_sheets(path: Path) -> list[str]:
    """A workbook's sheets that hold a cell, in its order (an empty Sheet2 is left out)."""
    try:
        heads = pd.read_excel(path, sheet_name=None, header=None, nrows=5, engine="openpyxl")
    except (ValueError, KeyError, OSError, zipfile.BadZipFile):
        return []  # one table, whose read says what is wrong with the file
    return [name for name, cells in heads.items() if cells.notna().any().any()]


def _codes(head: str, found: dict[str, Any]) -> list[str]:
    """The columns of a CSV's first rows written as codes with leading zeros (02134)."""
    try:
        rows = pd.read_csv(
            io.StringIO(head),
            dtype=str,
            sep=found["delimiter"],
            header=None if found.get("column_names") else 0,
            names=found.get("column_names"),
            skipinitialspace=found["skip_initial_space"],
        )
    except (ValueError, csv.Error):  # a layout the whole read will name
        return []
    return leading_zero_codes(rows)


def _encoding(text: bytes) -> str:
    """UTF-16 when the text starts with its byte-order mark (Excel's "Unicode Text");
    UTF-8 when the whole text is; else Windows-1252, as Excel on Windows saves a CSV
    (accents as single bytes), or Latin-1 for bytes that code page leaves undefined."""
    if text.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    for encoding in ("utf-8", "cp1252"):
        try:
            text.decode(encoding)
        except UnicodeDecodeError:
            continue
        return encoding
    return "latin-1"


def _data_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if _is_data(p))


def _not_read_hint(folder: Path) -> str:
    """The files of a folder refused by their names, by kind, with what to do."""
    refused: dict[tuple[str, str, str], list[str]] = {}
    for path in sorted(folder.iterdir()):
        if what := not_read(path.name):
            refused.setdefault(what, []).append(path.name)
    return "".join(f" ({', '.join(n)}: {w[1]}; {w[2]})" for w, n in refused.items())


def _left_out(data: Path) -> list[str]:
    """Files of a folder (and its subfolders) that are not read as data, for their names."""
    if not data.is_dir():
        return []
    files = [p for p in sorted(data.rglob("*")) if not is_skipped(p.relative_to(data))]
    return [str(p.relative_to(data)) for p in files if p.is_file() and not _is_data(p)]


def _partitioned_table(folder: Path) -> tuple[SourceSpec, pd.DataFrame, list[str]]:
    """A partitioned dataset as one landing folder: every data file below it, each file's
    rows with the values its folders name. Read as the ingest reads it."""
    files = [p for p in sorted(folder.rglob("*")) if _is_data(p)]
    files = [p for p in files if not is_skipped(p.relative_to(folder))]
    endings = {_ending(p) for p in files}
    pattern = f"**/*{endings.pop()}" if len(endings) == 1 else "**/*"
    name = _table_name(folder)
    dialect = _dialect(files[0]) if files else {}
    source = SourceSpec(name=name, path=str(folder), incremental=True, pattern=pattern, **dialect)
    try:
        landings = landed(source)
        frames = [parse_file(source, landing) for landing in landings]
    except SourceError as err:
        raise StarterError(str(err)) from None
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    partitions = list(dict.fromkeys(column for f in landings for column, _ in f.partitions))
    return source, frame, partitions


def _ending(path: Path) -> str:
    """A data file's name ending, its packing with it (``.csv.gz``)."""
    packed = path.suffix.lower() in {".gz", ".zip"}
    return "".join(path.suffixes[-2:]) if packed else path.suffix


_SQLITE_MAGIC = b"SQLite format 3\x00"


def database_url(data: str | Path) -> tuple[str, Path | None] | None:
    """The SQLAlchemy URL ``data`` names, and the SQLite file when it is one: a URL
    (``postgresql+psycopg://...``) or a SQLite database file. None for data files."""
    text = str(data)
    if text.startswith("sqlite:///") and text != "sqlite:///:memory:":
        text = text.removeprefix("sqlite:///")  # a file after all: named relative to the spec
    elif "://" in text:
        return text, None
    path = Path(text).expanduser()
    if path.is_file():
        with open(path, "rb") as handle:
            if handle.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC:
                return f"sqlite:///{path.resolve()}", path
    return None


def url_code(url: str, sqlite_file: Path | None, spec_dir: Path) -> tuple[str, str]:
    """How the spec file names a database: a SQLite file relative to the spec file, a URL
    as given, or, when it holds a password, an environment variable (a password is never
    written into a file); the variable's name, or ""."""
    import sqlalchemy as sa  # noqa: PLC0415 - only databases need it

    if sqlite_file is not None:
        relative = os.path.relpath(sqlite_file.resolve(), spec_dir.resolve())
        return f'f"sqlite:///{{HERE / {relative!r}}}"', ""
    parsed = sa.engine.make_url(url)
    if parsed.password is None:
        return _py(url), ""
    env = f"{_table_name(Path(parsed.database or 'db')).upper()}_DB_URL"
    return f"os.environ[{env!r}]", env


def _one_line(query: object) -> str:
    return re.sub(r"\s*\n\s*", " ", str(query)).strip()


def _database_tables(url: str, sqlite_file: Path | None, spec_dir: Path) -> list[Table]:
    """Every table and view of a database, each read whole, as its ingest will read it
    (the query's rows): typed from a sample spread over them, ranged by all (a table's
    first rows are often its oldest)."""
    import sqlalchemy as sa  # noqa: PLC0415 - only databases need it

    shown = redacted_url(url)
    try:
        engine = sa.create_engine(url)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError):
        raise StarterError(f"{shown}: not a SQLAlchemy URL (dialect+driver://...)") from None
    except ImportError as err:
        raise StarterError(f"{shown}: its database driver is not installed ({err.name})") from None
    try:
        inspector = sa.inspect(engine)
        names = [*inspector.get_table_names(), *inspector.get_view_names()]
        # Compiled for the database's dialect: its quoting.
        rows = {name: sa.select(sa.text("*")).select_from(sa.table(name)) for name in names}
        queries = {name: _one_line(select.compile(engine)) for name, select in rows.items()}
    except sa.exc.SQLAlchemyError as err:
        detail = str(getattr(err, "orig", None) or err).splitlines()[0]
        raise StarterError(f"{shown}: cannot read its tables: {detail}") from None
    finally:
        engine.dispose()
    if not names:
        raise StarterError(f"{shown} holds no tables")
    code, env = url_code(url, sqlite_file, spec_dir)
    tables = []
    for name, query in queries.items():
        probe = SourceSpec(name="probe", format="sql", url=url, query=query)
        try:
            frame = parse_source(read_source_bytes(probe))
        except SourceError as err:
            raise StarterError(str(err)) from None
        table = _table_name(Path(name))
        while table in {t.name for t in tables}:
            table += "_2"
        if frame.empty:
            raise StarterError(f"table {name!r} of {shown}: no rows to learn the types from")
        source = SourceSpec(name=table, format="sql", url=url, query=query)
        tables.append(Table(table, source, frame, url_code=code, url_env=env))
    return tables


def find_tables(data: Path | str, spec_dir: Path) -> list[Table]:
    """The tables of a file, a folder or a database. In a folder, and in each of its
    subfolders (one level down, as exports are often laid out: a lookup file beside a
    folder of daily files), several files with the same columns are one landing folder
    (each new file appended on ingest), and so are files named alike but for their digits
    with most columns shared (``_series``); otherwise each file is a table of its own. Each
    table of a database is read by a query of its rows."""
    if (database := database_url(data)) is not None:
        return _database_tables(*database, spec_dir)
    data = Path(data).expanduser()
    if not data.exists():
        raise StarterError(f"no file or folder {data}")
    if data.is_dir():
        subfolders = [
            d for d in sorted(data.iterdir()) if d.is_dir() and not is_skipped(Path(d.name))
        ]
        folders = [data] if is_partitioned(data) else [data, *subfolders]
        groups = [(f, [] if is_partitioned(f) else _data_files(f)) for f in folders]
        groups = [(f, files) for f, files in groups if files or is_partitioned(f)]
    else:
        groups = [(data.parent, [data])]
    if not groups:
        hint = _not_read_hint(data)
        raise StarterError(f"{data} holds no file of a format read here ({READ_HERE}){hint}")

    def where(path: Path) -> str:
        return os.path.relpath(path.resolve(), spec_dir.resolve())

    tables: list[Table] = []

    def add(
        name: str, source: SourceSpec, frame: pd.DataFrame, partitions: list[str] | None = None
    ) -> None:
        if frame.empty:
            raise StarterError(f"{source.path}: no rows to learn the columns' types from")
        while name in {t.name for t in tables}:
            name += "_2"
        source = source.model_copy(update={"name": name})
        tables.append(Table(name, source, frame, partitions=partitions or []))

    for folder, files in groups:
        if data.is_dir() and is_partitioned(folder):  # one table, in a landing folder
            source, frame, partitions = _partitioned_table(folder)
            add(source.name, source.model_copy(update={"path": where(folder)}), frame, partitions)
            continue
        within = {p: _tables_within(p) for p in files}
        for path, sources in within.items():
            for source in sources:
                frame = _read(source, path)
                add(source.name, source.model_copy(update={"path": where(path)}), frame)
        files = [p for p in files if not within[p]]  # noqa: PLW2901 - the rest
        dialects = {p: _dialect(p) for p in files}
        parts = {
            p: _read(SourceSpec(name=_table_name(p), path=str(p), **dialects[p]), p) for p in files
        }
        series = _series(folder, files, parts, dialects) if data.is_dir() else []
        for name, pattern, members in series:
            source = SourceSpec(
                name=name,
                path=where(folder),
                incremental=True,
                pattern=pattern,
                **dialects[members[0]],
            )
            add(name, source, pd.concat([parts[p] for p in members], ignore_index=True))
        in_series = {p for _, _, members in series for p in members}
        for path in [p for p in parts if p not in in_series]:
            name = _table_name(path)
            add(name, SourceSpec(name=name, path=where(path), **dialects[path]), parts[path])
    return tables


SERIES_SHARED = 0.5  # a series' files share at least this share of all their columns


def _series(
    folder: Path,
    files: list[Path],
    parts: dict[Path, pd.DataFrame],
    dialects: dict[Path, dict[str, Any]],
) -> list[tuple[str, str, list[Path]]]:
    """Files of one folder that are one table exported in pieces: all of them when they
    have the same columns (the folder's name, every file), else those named alike but for
    their digits (``orders_2024-01.csv``, ``orders_2024-02.csv``), read alike, with most
    of their columns shared (a column added or dropped between exports leaves the others
    one table). Each series as its name, a glob that matches its files and no other,
    and its files."""
    if len(files) > 1 and len({tuple(sorted(map(str, f.columns))) for f in parts.values()}) == 1:
        return [(_table_name(folder), "*", files)]
    groups: dict[str, list[Path]] = {}
    for path in files:
        stem = path.name[: len(path.name) - len(_ending(path))]
        digits = [m.span() for m in re.finditer(r"\d+", stem)]
        if digits:  # orders_[0-9]*.csv: not orders_summary.csv beside them
            pattern = f"{stem[: digits[0][0]]}[0-9]*{stem[digits[-1][1] :]}{_ending(path)}"
            groups.setdefault(pattern, []).append(path)

    def matched(glob: str) -> set[Path]:
        return {p for p in files if fnmatch.fnmatchcase(p.name, glob)}

    series = []
    for pattern, members in groups.items():
        columns = [set(map(str, parts[p].columns)) for p in members]
        plain = pattern.replace("[0-9]", "")  # the simpler glob, where it is as precise
        glob = plain if matched(plain) == set(members) else pattern
        if (
            len(members) < 2  # noqa: PLR2004 -- a series is two files or more
            or matched(glob) != set(members)
            or any(dialects[p] != dialects[members[0]] for p in members)
            or len(set.intersection(*columns)) < SERIES_SHARED * len(set.union(*columns))
        ):
            continue
        named = plain[: -len(_ending(members[0]))].replace("*", "")
        series.append((_table_name(Path(named.strip("_-. ") or folder.name)), glob, members))
    return series


def _time_rule(  # noqa: PLR0911 -- one answer per kind of time
    values: pd.Series, name: str, kind: str
) -> tuple[ColumnRule | None, str]:
    """A datetime rule that reads every present value, or None; a note when it is a guess."""
    present = values.dropna()
    if present.empty:
        return None, ""
    if pd.api.types.is_datetime64_any_dtype(present):
        # A spreadsheet's or a Parquet file's times without a zone, with a time of day
        clock = present.dt.tz is None and bool((present != present.dt.normalize()).any())
        return ColumnRule(dtype="datetime"), _ZONE_TODO if clock else ""
    if pd.api.types.is_numeric_dtype(present) and not pd.api.types.is_bool_dtype(present):
        if (digits := _date_digits(present, name)) is not None:
            rule = ColumnRule(dtype="datetime", format=digits)
            return rule, f"dates written as numbers ({digits})"
        if not _TIME_NAME.search(name):
            return None, ""
        low, high = float(present.min()), float(present.max())
        for unit, scale in (("s", 1), ("ms", 1e3), ("us", 1e6), ("ns", 1e9)):
            if 3e8 * scale <= low and high <= 4.1e9 * scale:  # 1979 .. 2099
                return ColumnRule(dtype="datetime", unit=unit), f"epoch {unit}, from its range"
        if EXCEL_DAYS[0] <= low and high <= EXCEL_DAYS[1]:
            note = "TODO: a spreadsheet's serial days (45296 is 2024-01-05), from its range"
            clock = bool((present % 1 != 0).any())  # a time of day, local as Excel keeps it
            return ColumnRule(dtype="datetime", unit="excel"), note + f"; {_ZONE_TODO}" * clock
        return None, ""
    if kind != "string":  # numbers written as text are numbers
        return None, ""
    text = present.astype(str)
    if not text.str.contains(r"\d").all():
        return None, ""
    if to_utc_datetimes(text, ColumnRule(dtype="datetime")).notna().all():
        naive = not text.str.contains(r"(?:Z|[+-]\d\d:?\d\d)$", regex=True).any()
        return ColumnRule(dtype="datetime"), _ZONE_TODO if naive else ""

    def reads(values: pd.Series, layout: str) -> bool:
        rule = ColumnRule(dtype="datetime", format=layout)
        return bool(to_utc_datetimes(values, rule).notna().all())

    head = text.head(TIME_SAMPLE)  # most text is no time: told by a few of its values
    first = _could_read(text.iloc[0])
    padded = bool(text.str.match(r"\d\d\.\d\d\.\d\d(?:\D|$)").all())
    layouts = [f for f in TIME_FORMATS if padded or not f.startswith("%d.%m.%y")]
    fits = [f for f in layouts if first(f) and reads(head, f) and reads(text, f)]
    if not fits:
        return None, ""
    # the same layout with day and month swapped (01/05/2024: January or May?)
    swapped = fits[0].replace("%d", "\0").replace("%m", "%d").replace("\0", "%m")
    notes = [
        f"TODO: {fits[0]} and {swapped} both read every value: which is it?"
        if swapped != fits[0] and swapped in fits
        else "",
        # a time of day, and no zone said
        _ZONE_TODO
        if ("%H" in fits[0] or "%I" in fits[0]) and not ("%z" in fits[0] or "%Z" in fits[0])
        else "",
        *(
            f"TODO: {name} is read as UTC{ZONE_OFFSETS[name]}, not {AMBIGUOUS[name]}: "
            f"if it is, write {name} in the format and set timezone="
            for name in sorted(abbreviations(text) & AMBIGUOUS.keys())
            if "%Z" in fits[0]
        ),
    ]
    return ColumnRule(dtype="datetime", format=fits[0]), "; ".join(n for n in notes if n)


def _could_read(value: str) -> Callable[[str], bool]:
    """Whether a layout reads ``value``, by Python's strptime: a first look at one value
    (microseconds) before pandas reads many with each of the layouts that pass it."""
    zoned = zones_as_offsets(pd.Series([value]), "%Z")[0].iloc[0]

    def reads(layout: str) -> bool:
        said, layout = (zoned, layout.replace("%Z", "%z")) if "%Z" in layout else (value, layout)
        for option in (layout, layout.replace(".%f", "")):  # as BigQuery writes whole seconds
            try:
                datetime.strptime(said, option)  # noqa: DTZ007 -- a layout's test, not a time
            except ValueError:
                continue
            return True
        return False

    return reads


# Dates written as numbers, as mainframe, SAS and many database exports write them:
# 20240105 (a day), 202401 (a month), or a time (20240105103000), read by their format;
# an hour as Google Analytics exports it (``dateHour``: 2024010513), not epoch seconds.
_DATE_DIGITS = {14: "%Y%m%d%H%M%S", 12: "%Y%m%d%H%M", 10: "%Y%m%d%H", 8: "%Y%m%d", 6: "%Y%m"}


def _date_digits(numbers: pd.Series, name: str) -> str | None:
    """The format of a column of whole numbers that are all dates as digits (20240105),
    between the years 1900 and 2100; None for anything else, and for a key's numbers."""
    if _KEY_NAME.search(name) or not np.equal(np.mod(numbers, 1), 0).all():
        return None
    whole = numbers.astype("int64")
    width = {len(str(v)) for v in (whole.min(), whole.max())}
    if len(width) != 1 or (fmt := _DATE_DIGITS.get(width.pop())) is None:
        return None
    text = whole.astype(str)
    parsed = pd.to_datetime(text, format=fmt, errors="coerce")
    years = parsed.dt.year
    return fmt if parsed.notna().all() and years.between(1900, 2100).all() else None


def _time_bounds(times: pd.Series) -> tuple[dict[str, datetime], str]:
    """Bounds that hold the data seen and the years to come, but not a typo such as 2099:
    from the first year seen to ``TIME_MARGIN_YEARS`` past the last. Times further from
    the rest than the span of its middle 98% are left out (their rows are quarantined)
    and named in a note."""
    if times.empty:
        return {}, ""
    note, kept = "", times
    if len(times) >= 100:  # noqa: PLR2004 -- enough rows for the 1% and 99% points
        low, high = times.quantile(0.01), times.quantile(0.99)
        span = high - low
        far = times[(times > high + span) | (times < low - span)]
        if span > pd.Timedelta(0) and len(far):
            kept = times.drop(far.index)
            seen = ", ".join(f"{t:%Y-%m-%d}" for t in sorted(set(far))[:3])
            note = (
                f"TODO: {len(far)} {'time lies' if len(far) == 1 else 'times lie'} far from "
                f"the rest ({seen}): typos? the bounds leave them out, so their rows are "
                "quarantined"
            )
    last = min(kept.max().year + TIME_MARGIN_YEARS, 2200)  # the service's latest time
    bounds = {
        "ge": datetime(kept.min().year, 1, 1, tzinfo=UTC),
        "le": datetime(last, 1, 1, tzinfo=UTC),
    }
    return bounds, note


def _number(value: float, dtype: str, up: bool = False) -> float | int:
    """A bound that reads well and still holds ``value`` (rounded outward)."""
    if dtype == "int":
        return int(value)
    value = float(value)  # a float32 minimum too: its exact value, widened
    short = float(f"{value:.6g}")
    if short >= value if up else short <= value:
        return short
    # The nearest short number lies inside (70.0276 for a float32 70.02755737...): take the
    # one a unit of its last digit further out (70.0275).
    rounding = decimal.ROUND_CEILING if up else decimal.ROUND_FLOOR
    outward = float(decimal.Context(prec=6, rounding=rounding).create_decimal(value))
    return outward if (outward >= value if up else outward <= value) else value


def _time_column(table: Table, name: str, time_rule: ColumnRule, note: str) -> None:
    """``name`` typed as a time read by ``time_rule``, bounded by the times of all rows."""
    values = table.frame[name]
    present = absent(values, time_rule)  # a blank text is no value, as a missing one is
    nullable = bool(present.isna().any())
    table.parsed[name] = to_utc_datetimes(present, time_rule)
    bounds, far = _time_bounds(table.parsed[name].dropna())
    rule = time_rule.model_copy(update={"nullable": nullable, **bounds})
    note = "; ".join(n for n in (note, far) if n)
    table.columns[name] = Column(name, "datetime", nullable, rule, note)


# A time of day written alone: 23:51, 23:51:44, 23:51:44.120, 11:51 PM.
_CLOCK = re.compile(r"\d{1,2}:\d{2}(:\d{2}(\.\d{1,9})?)?(\s?[AaPp]\.?[Mm]\.?)?")
_CLOCKS = ("%H:%M:%S", "%H:%M", "%H:%M:%S.%f", "%I:%M:%S %p", "%I:%M %p")


def join_dates_and_times(table: Table) -> None:
    """A date and a time of day written in two columns (a bank's "Booking Date" and
    "Booking Time") joined into one time, the source's ``joined`` column: dates alone make
    every event of a day simultaneous, and the hour is never learnt. Each time of day
    goes with the nearest date column before it (else after); a pair whose joined text
    reads as no time is left apart."""
    order = [str(c) for c in table.frame.columns]
    dates = [
        c.name
        for c in table.columns.values()
        if c.dtype == "datetime" and not c.rule.unit and dates_alone(table.times(c.name))
    ]
    clocks = [
        c.name
        for c in table.columns.values()
        if c.dtype == "string" and _is_clock(table.sample[c.name])
    ]
    joined: dict[str, list[str]] = {}
    for clock in clocks:
        free = [d for d in dates if all(d not in p for p in joined.values())]
        if not free:
            break
        at = order.index(clock)
        date = min(free, key=lambda d: (order.index(d) > at, abs(order.index(d) - at)))
        name = _joined_name(date, clock, {*order, *joined})
        text = joined_columns(table.frame[[date, clock]].copy(), {name: [date, clock]}, "")[name]
        rule = _joined_rule(text, table.columns[date].rule)
        if rule is None:
            continue
        joined[name] = [date, clock]
        table.frame[name] = text
        _time_column(table, name, rule, f"{date} and {clock} joined; {_ZONE_TODO}")
    if joined:
        table.source = table.source.model_copy(update={"joined": joined})
        table.__dict__.pop("sample", None)  # drawn again, with the joined columns


# A time written across whole-number columns, as weather and government tables write it
# (year, month, day, hour, minute): each part's name and its range.
_CALENDAR_PARTS = {
    "year": (1900, 2100, "%Y"),
    "month": (1, 12, "%m"),
    "day": (1, 31, "%d"),
    "hour": (0, 23, "%H"),
    "minute": (0, 59, "%M"),
}


def join_calendar_parts(table: Table) -> None:
    """A table without a time whose year, month and day (and hour, and minute) are columns
    of their own: one time, the source's ``joined`` column, read by a format of the parts
    (``"%Y %m %d %H"``), so the rows are split by time and the calendar is learnt from it,
    not from the parts as numbers (a random split of a time series tests on its past)."""
    if any(c.dtype == "datetime" for c in table.columns.values()):
        return
    named = {c.name.lower(): c for c in table.columns.values() if c.dtype == "int"}
    parts = []
    for part, (low, high, _) in _CALENDAR_PARTS.items():
        column = named.get(part)
        values = table.frame[column.name] if column else None
        if values is None or values.isna().any() or not values.between(low, high).all():
            break
        parts.append(part)
    if len(parts) < 3:  # noqa: PLR2004 -- a year, a month and a day at least
        return
    columns = [named[p].name for p in parts]
    name = "time" if "time" not in table.columns else "_".join(["time", *parts])
    fmt = " ".join(_CALENDAR_PARTS[p][2] for p in parts)
    text = joined_columns(table.frame[columns].copy(), {name: columns}, "")[name]
    rule = ColumnRule(dtype="datetime", format=fmt)
    if to_utc_datetimes(text, rule).isna().any():  # a 31st of February: no time
        return
    table.frame[name] = text
    for part, column in zip(parts, columns, strict=True):  # next year, or July, is no outlier
        low, high, _ = _CALENDAR_PARTS[part]
        bounds = {"ge": None, "le": None} if part == "year" else {"ge": low, "le": high}
        table.columns[column].rule = table.columns[column].rule.model_copy(update=bounds)
    note = f"{', '.join(columns)} joined" + (f"; {_ZONE_TODO}" if "hour" in parts else "")
    _time_column(table, name, rule, note)
    table.source = table.source.model_copy(update={"joined": {name: columns}})
    table.__dict__.pop("sample", None)  # drawn again, with the joined column


def _is_clock(values: pd.Series) -> bool:
    present = values.dropna().astype(str).str.strip()
    return not present.empty and bool(present.str.fullmatch(_CLOCK.pattern).all())


def _joined_rule(text: pd.Series, date: ColumnRule) -> ColumnRule | None:
    """How a date and a time of day joined read: the date's format, then a clock."""
    formats = [f"{date.format} {c}" for c in _CLOCKS] if date.format else [None]
    formats += [] if date.format else [f"%Y-%m-%d {c}" for c in _CLOCKS]
    present = text.notna()
    for format in formats:
        rule = ColumnRule(dtype="datetime", format=format)
        if (to_utc_datetimes(text, rule).notna() == present).all():
            return rule
    return None


def _joined_name(date: str, clock: str, taken: set[str]) -> str:
    """``Booking Datetime`` of ``Booking Date``; ``day time`` of ``day``, ``time``."""
    found = re.search("date", date, re.IGNORECASE)
    if found:
        time = "TIME" if found.group(0).isupper() else "time"
        name = date[: found.end()] + time + date[found.end() :]
    else:
        name = f"{date} {clock}"
    while name in taken:
        name += "_joined"
    return name


def type_columns(table: Table) -> None:
    """Every column of ``table`` typed (from its sample), with the range and nullability
    of all its rows."""
    frame, sample = table.frame, table.sample
    # A '?' for no value, or a text that stands in for one, is no evidence against numbers:
    # typed as if null.
    stand_ins = {name: _stand_ins(sample[name]) for name in sample.columns}

    def unmark(values: pd.Series) -> pd.Series:
        if values.dtype != object:
            return values
        texts = values.map(lambda v: isinstance(v, str) and v.strip() in stand_ins[values.name])
        return values.where(~(values.map(_no_value_text) | texts).astype(bool))

    unmarked = sample.apply(unmark)
    types = infer_column_types(unmarked, tolerance=NUMBERS_TOLERANCE)
    for raw_name in frame.columns:
        name = str(raw_name)
        values = frame[raw_name]
        nullable = bool(values.isna().any())
        kind = types.get(name)
        if kind is None:  # never a value: text until the data says otherwise
            table.columns[name] = Column(
                name, "string", True, ColumnRule(dtype="string", nullable=True),
                "TODO: empty in the data; typed as text",
            )  # fmt: skip
            continue
        if name in table.source.text_columns or leading_zero_codes(sample[[raw_name]]):
            table.columns[name] = Column(
                name, "string", nullable, ColumnRule(dtype="string", nullable=nullable),
                f"codes: read as written, the leading zeros kept ({_code(values)!r})",
            )  # fmt: skip
            continue
        time_rule, note = _time_rule(unmarked[raw_name], name, kind)
        if time_rule is not None:
            if markers := sorted({*_markers(values), *stand_ins[raw_name]}):  # "-": not yet
                time_rule = time_rule.model_copy(update={"missing": markers})
                note = "; ".join(n for n in (note, f"{_quoted(markers)}: no value") if n)
            _time_column(table, name, time_rule, note)
            continue
        written, column, decimal = None, unmarked[raw_name], table.source.decimal
        if kind == "string":
            written = _written_duration(column, name) or _written_numbers(column, decimal)
        elif column.dtype == object:  # numbers, but some as text (a typeset minus: −2,9)
            written = _written_numbers(column, decimal)
        if written is not None:
            kind = written.dtype
        if kind in ("int", "float"):
            rule = written or ColumnRule(dtype=kind)
            column = _number_column(name, values, rule, stand_ins[raw_name])
            if pd.api.types.is_timedelta64_dtype(values):  # a Parquet duration, an interval
                column.note = "; ".join(filter(None, ["lengths of time: seconds", column.note]))
            table.columns[name] = column
            continue
        if nulls := sorted(_markers(values) & NULL_TEXTS):  # a database dump's null: no category
            rule = ColumnRule(dtype="string", nullable=True, missing=nulls)
            table.columns[name] = Column(name, "string", True, rule, f"{_quoted(nulls)}: no value")
            continue
        table.columns[name] = Column(
            name, "string", nullable, ColumnRule(dtype="string", nullable=nullable)
        )


def _number_column(
    name: str, values: pd.Series, written: ColumnRule, stand_ins: list[str] | None = None
) -> Column:
    """``name`` typed as numbers read by ``written`` (its notation), with the range of every
    row; texts that stand for no value (``MISSING_TEXTS``, and the column's ``stand_ins``,
    with a TODO) become its ``missing``, other stray texts a TODO."""
    kind, nullable = written.dtype, bool(values.isna().any())
    parsed = read_numbers(values, written)
    numbers = parsed.dropna()
    if kind == "int" and not np.equal(np.mod(numbers, 1), 0).all():
        kind = "float"  # a fraction past the sample
        written = written.model_copy(update={"dtype": "float"})
    low, high = _number(numbers.min(), kind), _number(numbers.max(), kind, up=True)
    bounds = {"nullable": nullable, "ge": low, "le": high}
    rule = ColumnRule.model_validate(written.model_dump() | bounds)
    stray = values[values.notna() & parsed.isna()]  # present, but not a number
    notes = []
    read = values[parsed.notna()].astype(str)
    if written.formatted and not read.empty:
        longest = read.str.len().idxmax()  # the one most marks are in
        notes.append(f"written as {read[longest]!r}: read as {parsed[longest]:.15g}")
        if len(units := units_after_numbers(read)) > 1:
            notes.append(f"TODO: {len(units)} units ({', '.join(units)}) read alike")
        if written.duration == "m:s" and not read.str.contains(r"\d:\d+:|\.", regex=True).any():
            notes.append('TODO: minutes:seconds? duration="h:m" reads 1:05 as 1 h 5 min')
    told = stray.astype(str).str.strip()
    standing = told.isin(stand_ins or []).to_numpy(bool)
    marked = stray.map(_no_value_text).to_numpy(bool) | standing
    if marked.any():  # "?" for no value, as the UCI repository writes it; or blank
        markers = sorted({*_markers(stray), *told[standing]})
        nullable = True
        rule = rule.model_copy(update={"nullable": True, "missing": markers or None})
        said = [*map(repr, markers), *(["blank"] if (told == "").any() else [])]
        note = f"{', '.join(said)}: no value ({int(marked.sum())} rows)"
        notes.append(f"TODO: {note}" if standing.any() else note)  # a stand-in is a guess
    header = (told == name).to_numpy(bool) & ~marked
    if header.any():  # cat a.csv b.csv: the second file's header is a row of the first
        notes.append(
            f"TODO: {int(header.sum())} lines repeat the header (files joined end to end?): "
            "their rows are quarantined"
        )
    if len(stray := stray[~marked & ~header]):
        seen = ", ".join(repr(v) for v in list(dict.fromkeys(map(str, stray)))[:3])
        notes.append(
            f"TODO: {len(stray)} values are not numbers ({seen}): their rows are "
            "quarantined; make them null at the source or clean them"
        )
    return Column(name, kind, nullable, rule, "; ".join(notes))


MAX_STAND_INS = 2
STAND_IN_SHARE = 0.01  # of a column's texts: a text once in a while is a stray value


def _stand_ins(values: pd.Series) -> list[str]:
    """Texts without a digit that stand in a column of numbers for a value it lacks (an
    app store's "Varies with device", a review site's "tbd"): at most two, each repeated,
    among texts at least half of which hold a digit. A one-off text ("ask us") and the
    column's own name (a header repeated by files joined end to end) are no stand-ins."""
    if values.dtype != object:
        return []
    text = values[values.map(lambda v: isinstance(v, str))].astype(str).str.strip()
    digits = text.str.contains(r"\d", regex=True)
    if text.empty or digits.mean() < 0.5:  # noqa: PLR2004
        return []
    counts = text[~digits].value_counts()
    words = [w for w in counts.index if re.search(r"[^\W\d_]", w) and w != str(values.name)]
    if not 0 < len(words) <= MAX_STAND_INS:
        return []
    least = max(2, STAND_IN_SHARE * len(text))
    return sorted(w for w in words if counts[w] >= least)


def _no_value_text(value: object) -> bool:
    """Whether ``value`` is a text that stands for no value (``MISSING_TEXTS``, or blank,
    which the contract reads as no value among numbers and times)."""
    return isinstance(value, str) and (value.strip() in MISSING_TEXTS or not value.strip())


def _markers(values: pd.Series) -> set[str]:
    """The texts among ``values`` that stand for no value (``MISSING_TEXTS``): each
    distinct value looked at once, as every text column is."""
    texts = {v.strip() for v in values.dropna().unique() if isinstance(v, str)}
    return texts & MISSING_TEXTS


def _quoted(texts: list[str]) -> str:
    return ", ".join(map(repr, texts))


def _code(values: pd.Series) -> str:
    """A code of the column that shows its leading zero."""
    text = values.dropna().astype(str)
    return str(next(iter(text[text.str.startswith("0")]), text.iloc[0]))


# Texts that stand for no value among numbers: the UCI repository's '?', a report's '-',
# and spellings of n/a that pandas does not read as null itself.
MISSING_TEXTS = {
    *("?", "-", "--", "—", "–", ".", "n.a.", "N.A.", "n/v", "k.A.", "missing", "unknown"),
    *("Unknown", "NA", "N/A", "n/a", "na", "null", "NULL", "None", "none", "nan", "NaN", "-nan"),
    # what a spreadsheet writes where a formula has no value: a CSV export keeps the text
    *("#N/A", "#DIV/0!", "#VALUE!", "#REF!", "#NUM!", "#NAME?", "#NULL!"),
    "\\N",  # MySQL's and PostgreSQL's COPY null
}
# Of those, the ones no text column means as a value: a database dump's null
NULL_TEXTS = {"\\N"}


# What a spreadsheet writes numbers with: a unit or a currency (26.6%, $1,234.50, 1.234,56 €),
# and spaces that group thousands (1 234,56).
_NUMBER_MARKS = ("%", "$", "€", "£", "¥", "₹", "CHF", "EUR", "USD", "GBP", "+")  # 10,000+
# Suffixes that multiply a number (1.2K likes, 14.2M bytes, $1.5B): read as such when a
# column writes two of them, or one after a decimal (an id such as 12B writes neither).
MAGNITUDES = {"k": 1e3, "K": 1e3, "M": 1e6, "B": 1e9, "bn": 1e9, "Bn": 1e9}
_MAGNITUDE = re.compile(r"^(.*\d)\s?(k|K|M|B|bn|Bn)$")
_GROUP_SPACES = (" ", "\xa0", "\u202f")


# A number and its unit, as a listing writes a measure: 13.29 kmpl, 1248 CC, 74 bhp, 12kg
# (a unit holds no mark a number is read by: no point, comma, parenthesis or minus).
_UNIT_AFTER = re.compile(r"^[+-]?\d[\d.,'\u00a0\u202f ]*?(\s*)((?:[^\W\d_]|°)[^\d\s.,()-]{0,11})$")
MAX_UNITS = 3


def units_after_numbers(text: pd.Series) -> list[str]:
    """The units a column writes after its numbers (``["kmpl", "km/kg"]``), longest first
    so that removing one leaves no part of another, when nearly every value is a number and
    one of a few units: a unit of one letter counts only with a space before it (``5 m``),
    so ``12A`` and ``3B`` stay codes."""
    found = text.str.extract(_UNIT_AFTER)
    spaced, unit = found[0], found[1]
    unit = unit.where((spaced.str.len() > 0) | (unit.str.len() > 1))
    counts = unit.value_counts()
    if (
        counts.empty
        or len(counts) > MAX_UNITS
        or counts.sum() < (1 - NUMBERS_TOLERANCE) * len(text)
    ):
        return []
    return sorted(counts.index, key=len, reverse=True)


# Names of a length of time (a call's handle time, a queue's wait), not of a time of day.
_DURATION_NAME = re.compile(
    r"duration|elapsed|length|run_?time|wait|queue|spent|took|lap|handl|talk|hold"
    r"|response|resolution|turnaround|lead_?time|cycle_?time|dauer|dur[ée]e|duraci[oó]n|durata",
    re.IGNORECASE,
)
_TIME_OF_DAY_NAME = re.compile(r"start|end|begin|open|clos|arriv|depart|clock|_at$", re.I)


# A unit of time in a word: "45 min" and "3 days" say a length of time, as "5 m" may not.
_TIME_WORD = re.compile(
    r"\d\s*(?:weeks?|wks?|days?|hours?|hrs?|minutes?|mins?|seconds?|secs?|msecs?|milliseconds?)"
    r"(?![^\W\d_])",
    re.IGNORECASE,
)


def _written_duration(values: pd.Series, name: str) -> ColumnRule | None:
    """A length of time written as text, a number of seconds with its ``duration``: in ISO
    8601 (an API's ``PT4M31S``), with units of time (a fare's ``2h 50m`` beside ``19h`` and
    ``45m``, ``3 days``) or as a clock (``_clock_duration``)."""
    text = values.dropna().astype(str).str.strip()
    if text.empty:
        return None
    enough = (1 - NUMBERS_TOLERANCE) * len(text)
    if duration_seconds(text, "iso").notna().sum() >= enough:
        return ColumnRule(dtype="float", duration="iso")
    parts = duration_parts(text, "units")
    read = parts.notna().any(axis=1)
    if read.sum() >= enough:
        units = int(parts[read].notna().any().sum())  # of time, across the column
        if units > 1 or text[read].str.contains(_TIME_WORD).mean() > 0.5:  # noqa: PLR2004
            return ColumnRule(dtype="float", duration="units")
    return _clock_duration(text, name)


def _clock_duration(text: pd.Series, name: str) -> ColumnRule | None:
    """A length of time written as a clock (a call's ``00:04:31``, a queue's ``1:05``,
    pandas' ``0 days 00:04:31``). A time of day (``09:18``, a clock beside a date) is told
    apart by its name, unless its values cannot be one: days or hours past a day, most at
    hour 0, or decimals of a second."""
    days = text.str.match(r"\d+\s*days?\b")
    three = text.str.fullmatch(r"(\d+\s*days?,?\s*)?\d+:[0-5]\d:[0-5]\d(\.\d+)?")
    two = text.str.fullmatch(r"\d+:[0-5]\d(\.\d+)?")
    if (three | two).mean() < 1 - NUMBERS_TOLERANCE:
        return None
    hours = pd.to_numeric(text[three | two].str.extract(r"(\d+):", expand=False))
    named = bool(_DURATION_NAME.search(name)) and not _TIME_OF_DAY_NAME.search(name)
    no_clock = (
        bool((hours >= 24).any())  # noqa: PLR2004
        or days.any()
        or text.str.contains(".", regex=False).any()
    )
    if three.all():
        if named or no_clock or (hours == 0).mean() > 0.5:  # noqa: PLR2004
            return ColumnRule(dtype="float", duration="h:m:s")
        return None
    return ColumnRule(dtype="float", duration="m:s") if named or no_clock else None


def _written_numbers(values: pd.Series, decimal: str = ".") -> ColumnRule | None:
    """How a column writes numbers as text, when nearly all of it is numbers once its unit
    or currency, thousands separators, sign and magnitude are read: a rule with ``strip``,
    ``decimal``, ``negative`` and ``suffixes`` (its dtype an int when no value has
    decimals). Numbers the reader already read count as read; ``decimal`` is the source's
    mark, which a tie (``1,234``) reads as. None for text."""
    present = values.dropna()
    is_text = present.map(lambda v: isinstance(v, str)).astype(bool)
    read_already = pd.to_numeric(present[~is_text], errors="coerce").dropna()
    written = present[is_text].astype(str).str.strip()
    text = ascii_minus(written)
    typeset = bool((text != written).any())  # −2,9: a text only for its minus sign
    scaled = text.str.extract(_MAGNITUDE)
    used = scaled[1].dropna()
    suffixes = None
    decimals = scaled[0][used.index].str.contains(r"\d[.,]\d", regex=True)
    if len({MAGNITUDES[s] for s in used}) > 1 or decimals.any():
        suffixes = {s: MAGNITUDES[s] for s in sorted(set(used))}
        text = scaled[0].str.strip().fillna(text)  # the number before it
    marks = [m for m in _NUMBER_MARKS if text.str.contains(m, regex=False).any()]
    marks += [u for u in units_after_numbers(text) if u not in marks]
    spaced = any(text.str.contains(g, regex=False).any() for g in _GROUP_SPACES)
    grouped = text.str.contains(r"\d[,.'’]\d{3}(?!\d)", regex=True).any()
    bare = text
    for mark in marks:
        bare = bare.str.replace(mark, "", regex=False)
    bare = bare.str.strip()
    signs = {sign: minus_first(bare, sign) for sign in ("(5)", "5-")}  # (1,234.50), 1234,5-
    negative = max(signs, key=lambda sign: int((signs[sign] != bare).sum()))
    if (signs[negative] != bare).any():
        bare = signs[negative]
    else:
        negative = "-5"
    if text.empty or not (marks or spaced or grouped or typeset or suffixes or negative != "-5"):
        return None  # text, or numbers the reader read
    best: tuple[pd.Series, str, str] | None = None
    for point, group in sorted(((".", ","), (",", ".")), key=lambda pair: pair[0] != decimal):
        groups = re.escape(group) + "".join(_GROUP_SPACES) + "'’"
        # thousands, or lakhs and crores as India groups them (1,23,45,678)
        lakhs = rf"\d{{1,2}}({re.escape(group)}\d{{2}})+{re.escape(group)}\d{{3}}"
        whole = rf"[+-]?(\d{{1,3}}([{groups}]\d{{3}})+|{lakhs}|\d+)"
        read = bare[bare.str.fullmatch(rf"{whole}({re.escape(point)}\d+)?")]
        if best is None or len(read) > len(best[0]):
            best = (read, point, group)
    read, point, group = best  # type: ignore[misc]
    if len(read) + len(read_already) < (1 - NUMBERS_TOLERANCE) * len(present):
        return None
    separators = (group, *_GROUP_SPACES, "'", "’")
    grouped_by = [g for g in separators if read.str.contains(g, regex=False).any()]
    integral = not read.str.contains(point, regex=False).any() and bool(
        (read_already % 1 == 0).all()
    )
    return ColumnRule(
        dtype="int" if integral and not suffixes else "float",
        strip=(marks + grouped_by) or None,
        decimal=point,
        negative=negative,
        suffixes=suffixes,
    )


def _label_rule(
    values: pd.Series, dtype: str, threshold: float | None, positive: list[str] | None
) -> tuple[dict, str]:
    present = values.dropna()
    if threshold is not None:
        return {"threshold": threshold}, ""
    if positive is not None:
        return {"positive": positive}, ""
    if dtype in ("int", "float"):
        return _number_label_rule(pd.to_numeric(present, errors="coerce").dropna(), dtype)
    counts = present.astype(str).value_counts()
    if yes := _yes_of_yes_and_no(list(counts.index)):
        return {"positive": yes}, f"{_quoted(yes)}: positive, the rest negative"
    minority = str(counts.index[-1])
    if len(counts) == 2:  # noqa: PLR2004 -- two classes
        return {"positive": [minority]}, "TODO: which class is positive? (the rarer one now)"
    return {"positive": [minority]}, (
        f"TODO: {len(counts)} classes: list the ones that count as positive"
    )


# How people and programs write yes and no (a form's "Y", a database's "t", "Ja" and "Nej").
_YES = {"yes", "y", "true", "t", "ja", "oui", "si", "sí", "sim"}
_NO = {"no", "n", "false", "f", "nein", "nej", "nei", "nee", "non", "não", "nao"}
_YES |= {"kyllä", "tak", "igen", "ano", "evet"}  # Finnish, Polish, Hungarian, Czech, Turkish
_NO |= {"ei", "nie", "nem", "ne", "hayır"}


def _yes_of_yes_and_no(values: list[str]) -> list[str]:
    """The values that say yes, when every value says yes or no in some spelling ("Yes",
    "yes", "Y" beside "No", "N"): those are the positive class, whichever is rarer."""
    said = {v: v.strip().lower() for v in values}
    if not set(said.values()) <= _YES | _NO:
        return []
    yes = sorted(v for v, word in said.items() if word in _YES)
    return yes if 0 < len(yes) < len(values) else []


# How a form or a survey says the outcome is not known: such a row has no label, never
# the rarer class (a survey's "Unknown" beside "Yes" and "No").
_UNKNOWN = {"unknown", "unk", "?", "n/a", "na", "not known", "not sure", "don't know"}
_UNKNOWN |= {"dont know", "undecided", "pending", "tbd", "missing", "-", "unbekannt"}
_UNKNOWN |= {"weiß nicht", "inconnu", "desconocido", "sconosciuto", "onbekend"}


def _unknown_outcomes(values: pd.Series) -> list[str]:
    """A text label's values that say the outcome is not known, where two classes or more
    are left beside them."""
    said = values.dropna().astype(str).unique().tolist()
    unknown = sorted(v for v in said if v.strip().lower() in _UNKNOWN)
    return unknown if len(said) - len(unknown) >= 2 else []  # noqa: PLR2004 -- two classes


def _no_label(column: Column, unknown: list[str]) -> None:
    """The label column reads the texts that say "not known" as no value: no label."""
    missing = sorted({*(column.rule.missing or []), *unknown})
    column.rule = column.rule.model_copy(update={"nullable": True, "missing": missing})
    column.nullable = True
    told = f"{_quoted(unknown)}: the outcome is not known: no label, the row waits"
    column.note = "; ".join(n for n in (column.note, told) if n)


def _number_label_rule(numbers: pd.Series, dtype: str) -> tuple[dict, str]:
    distinct = set(numbers.unique().tolist())
    if distinct <= {0, 1}:
        return {"threshold": 0.5}, "1 is the positive class"
    if len(distinct) == 2:  # noqa: PLR2004 -- two classes coded as numbers (-1/1, 1/2)
        low, high = sorted(distinct)
        share = float((numbers == high).mean())
        return {"threshold": _number(low, "float")}, (
            f"TODO: two values: {_number(high, dtype)} is positive ({share:.0%} of rows),"
            f" {_number(low, dtype)} negative"
        )
    cut = float(numbers.median())
    if not (numbers > cut).any():  # many equal values at the top
        cut = float(numbers[numbers < cut].max())
    cut = _number(cut, "float")
    return {"threshold": cut}, "TODO: the positive class is label > this (the median)"


def _guess_label(table: Table) -> str:
    for column in reversed(list(table.columns.values())):
        distinct = table.frame[column.name].dropna().nunique()
        if column.dtype != "datetime" and distinct == 2:  # noqa: PLR2004 -- binary
            return column.name
    numeric = [c.name for c in table.columns.values() if c.dtype in ("int", "float")]
    if not numeric:
        raise StarterError(f"{table.name}: no column looks like a label; pass --label")
    return numeric[-1]


def _guess_keys(table: Table, exclude: set[str]) -> list[str]:
    rows = len(table.frame)
    named = [
        c.name
        for c in table.columns.values()
        if c.name not in exclude
        and c.dtype in ("int", "string")
        and _KEY_NAME.search(c.name)
        and not c.nullable
        and table.frame[c.name].nunique() > 2  # noqa: PLR2004 -- a yes/no ("Paid") names no one
    ]
    repeated = [n for n in named if table.frame[n].nunique() < rows]
    if not named:  # no name says key: a row id the data numbers in order is one
        named = [
            c.name
            for c in table.columns.values()
            if c.name not in exclude and _row_id(table, c) and not _row_numbers(table, c)
        ]
    return (repeated or named)[:1]


def _row_numbers(table: Table, column: Column) -> bool:
    """The export's row numbers, not the data's: a column with no header name (pandas reads
    it as ``Unnamed: 0``) holding 0, 1, 2, ... or 1, 2, 3, ..., restarting in each file, as
    ``DataFrame.to_csv`` writes its index unless told not to."""
    if not _UNNAMED.fullmatch(column.name) or column.dtype != "int" or column.nullable:
        return False
    values = table.frame[column.name].to_numpy()
    steps = (np.diff(values) == 1) | np.isin(values[1:], (0, 1))
    return len(values) > 2 and values[0] in (0, 1) and bool(steps.all())  # noqa: PLR2004


def _row_id(table: Table, column: Column) -> bool:
    """Whole numbers, a different one on every row, rising down the file: rows numbered as
    they were written (``Parcel`` 500001, 500002, ...), an id rather than a measure."""
    values = table.frame[column.name]
    return (
        column.dtype == "int"
        and not column.nullable
        and values.is_unique
        and values.is_monotonic_increasing
        and len(values) > 2  # noqa: PLR2004 -- two rows rise by chance
    )


def _is_id(table: Table, column: Column) -> bool:
    """A column that names each row: a key by its name (``BookingID``) or rows numbered in
    order, with no nulls and a different value on every row."""
    if column.nullable or column.dtype not in ("int", "string"):
        return False
    named = _KEY_NAME.search(column.name) and table.frame[column.name].is_unique
    return bool(named) or _row_id(table, column)


def _unbound(table: Table, keys: list[str], what: str = "a key") -> None:
    """No observed range on a numeric key: it names a row rather than measures it, and new
    rows bring ids past the ones seen (the next rental is 109001), which a range would
    quarantine, at ingest and in a stream, one by one. Nor on a partition folder's value:
    next year's ``year=`` folder is past every one seen."""
    for key in keys:
        column = table.columns[key]
        if column.dtype in ("int", "float") and (column.rule.ge, column.rule.le) != (None, None):
            column.rule = column.rule.model_copy(update={"ge": None, "le": None})
            column.note = "; ".join(n for n in (column.note, f"{what}: no range") if n)


def _is_unique(frame: pd.DataFrame, columns: list[str]) -> bool:
    return bool(columns) and not frame.duplicated(subset=columns).any()


def _duration(span: pd.Timedelta) -> str:
    """A window length as readable Python, rounded to the largest unit it has two of."""
    for unit, size in (("days", 86_400), ("hours", 3_600), ("minutes", 60)):
        if span.total_seconds() >= 2 * size:
            return f"timedelta({unit}={round(span.total_seconds() / size)})"
    return f"timedelta(seconds={max(1, round(span.total_seconds()))})"


def _calendar(table: Table, time: str | None) -> list[str]:
    """The calendar parts of the event time a model may learn from: the hour where the
    times hold one (not dates alone), the day of the week over two weeks or more, and the
    month over a year or more."""
    if time is None:
        return []
    times = pd.DatetimeIndex(table.times(time).dropna())
    if times.empty:
        return []
    span = times.max() - times.min()
    parts = ["hour"] if (times.hour != 0).any() else []
    parts += ["day_of_week"] if span >= pd.Timedelta(days=14) else []
    return parts + (["month_sin", "month_cos"] if span >= pd.Timedelta(days=365) else [])


def _window_share(labels: pd.Series, hashed: bool = False) -> tuple[float, str]:
    """The share of rows each of the valid and test windows takes: 15%, or wider (up to
    25%) until each holds ``RARER_PER_WINDOW`` of the rarer class, so that early stopping
    and the promotion gate compare models on more than a handful of frauds. ``labels``:
    1/0/NaN in time order, or in any order when ``hashed`` (a hash deals rows out at random,
    so a window expects its share)."""
    known = labels.dropna()
    if known.empty or known.nunique() < 2:  # noqa: PLR2004 -- two classes
        return WINDOW_SHARES[0], ""
    rarer = float(known.mean() <= 0.5)  # noqa: PLR2004 -- the minority class
    is_rare = (labels == rarer).to_numpy()
    n, name = len(labels), "positive" if rarer == 1 else "negative"
    for share in WINDOW_SHARES:
        if hashed:
            held = (round(share * is_rare.sum()),) * 2
        else:
            k = round(share * n)
            held = int(is_rare[n - k :].sum()), int(is_rare[n - 2 * k : n - k].sum())
        if min(held) >= RARER_PER_WINDOW:
            break
    if share == WINDOW_SHARES[0]:
        return share, ""
    rate = f"{(known == rarer).mean():.2%} of the labeled rows are {name}"
    if min(held) >= RARER_PER_WINDOW:
        return share, f" (wider than 15%: {rate}, {RARER_PER_WINDOW} or more in each)"
    return share, (
        f" (the widest proposed: {rate}, {held[1]} and {held[0]} in these, too few to tell"
        " models apart)"
    )


def _split(table: Table, time: str | None, labels: pd.Series | None = None) -> tuple[str, str]:
    if time is not None:
        rule = table.columns[time].rule
        times = table.times(time).dropna().sort_values()
        if rule.ge is not None and rule.le is not None:  # the rows the contract keeps
            times = times[(times >= rule.ge) & (times <= rule.le)]
        labelled = labels.reindex(times.index).notna() if labels is not None else None
        if labelled is not None and labelled.any():  # dated back from the newest labelled
            times = times[times <= times[labelled].max()]
        if times.nunique() >= 3:  # noqa: PLR2004 -- one time for each part of the split
            share, why = _window_share(
                labels.reindex(times.index) if labels is not None else pd.Series(dtype=float)
            )
            train_end, valid_end = times.quantile(1 - 2 * share), times.quantile(1 - share)
            if times.min() < train_end < valid_end < times.max():
                valid, test = _duration(valid_end - train_end), _duration(times.max() - valid_end)
                return (
                    f"RecentSplit(valid={valid}, test={test})",
                    f"the newest {share:.0%} tests, the {share:.0%} before validates{why};"
                    " the windows slide on new data",
                )
    share, why = _window_share(labels, hashed=True) if labels is not None else (0.15, "")
    return (
        f"HashSplit(valid_fraction={share}, test_fraction={share})",
        f"no event time to split by: rows are split by a hash of their content{why}",
    )


def _features(
    table: Table, used: set[str], label_values: pd.Series
) -> tuple[list[str], list[str], list[str], list[str]]:
    """Numeric, categorical and free-text features, and comments on the columns left out."""
    numeric, categorical, texts, notes = [], [], [], []
    frame = table.frame
    target = pd.to_numeric(label_values, errors="coerce")
    for column in table.columns.values():
        name = column.name
        if name in used:
            continue
        values = frame[name]
        distinct = values.nunique()
        reason = _not_a_feature(table, column, distinct)
        if reason and distinct > MAX_CATEGORIES and _is_prose(values, column):
            texts.append(name)  # a review, a description: its words are the feature
        elif reason:
            notes.append(f"{name}: {reason}")
        elif column.dtype == "int" and _KEY_NAME.search(name):
            categorical.append(name)  # a code of a few values: a store number, a zip code
        elif column.dtype in ("int", "float"):
            numeric.append(name)
            numbers = read_numbers(values, column.rule)
            if target.notna().sum() > 2 and numbers.std() > 0 and target.std() > 0:  # noqa: PLR2004
                corr = abs(float(np.corrcoef(*_paired(numbers, target))[0, 1]))
                if corr > 0.95:  # noqa: PLR2004 -- nearly the answer itself
                    notes.append(f"{name}: correlates {corr:.2f} with the label: leakage?")
        else:
            categorical.append(name)
    return numeric, categorical, texts, notes


PROSE_WORDS = 3  # a typical value's words: a name or a code has fewer
PROSE_VOCABULARY = 10  # words found in more than one value: "order 17" repeats one or two
PROSE_SAMPLE = 2_000
PROSE_WORDED = 0.6  # of a value's words, those with a letter: "Friday, January 5, 2024" has half


def _is_prose(values: pd.Series, column: Column) -> bool:
    """Text written by people (reviews, descriptions, notes), not ids, names or numbered
    labels: most values are several words, drawn from a vocabulary that recurs. Such a
    column is left out as a category of too many values, but a bag of its words is a
    feature."""
    if column.dtype != "string":
        return False
    text = values.dropna().astype(str)
    text = text.sample(PROSE_SAMPLE, random_state=0) if len(text) > PROSE_SAMPLE else text
    tokens = text.str.split()
    if text.empty or tokens.str.len().median() < PROSE_WORDS:
        return False
    worded = tokens.map(lambda t: sum(any(c.isalpha() for c in w) for w in t) / max(len(t), 1))
    if worded.median() < PROSE_WORDED:  # dates and codes in words: Mon, 01 Jan 2024 10:00
        return False
    words = text.str.lower().str.findall(r"[^\W\d_]{2,}").map(set).explode().value_counts()
    return int((words > 1).sum()) >= PROSE_VOCABULARY


def _not_a_feature(table: Table, column: Column, distinct: int) -> str | None:  # noqa: PLR0911
    """Why a column is no feature, or None."""
    rows, keyed = len(table.frame), bool(_KEY_NAME.search(column.name))
    if _row_numbers(table, column):
        return "the file's row numbers (its header is empty), not data"
    if column.dtype == "datetime":
        return "a time (add an extractor to use it)"
    if distinct <= 1:
        return "one value only"
    if column.dtype == "string" and distinct > max(MAX_CATEGORIES, rows // 2):
        return f"{distinct} distinct texts (free text or an id)"
    if column.dtype == "int" and distinct == rows and keyed:
        return "a different value on every row (an id)"
    if _row_id(table, column):
        return "a different value on every row, rising (an id)"
    if column.dtype == "int" and keyed and distinct > MAX_CATEGORIES:
        # merchant 2041 is not twice merchant 1020
        return (
            f"an id of {distinct} values, not a measure "
            "(a lookup or a feature view keyed by it can use it)"
        )
    return None


def _paired(a: pd.Series, b: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    both = a.notna() & b.notna()
    return a[both].to_numpy(float), b[both].to_numpy(float)


def _outcome_table(tables: list[Table], label: str | None) -> Table | None:
    """The table ``--label`` names, when it names a table and no column: its rows are
    outcomes of the base events (chargebacks, cancellations, returns)."""
    if label is None or any(label in t.columns for t in tables):
        return None
    return next((t for t in tables if t.name == label), None)


def _shared(one: Table, other: Table) -> list[str]:
    """Columns both tables have, with one type that can name a row (not a float). A column
    named as a row's own id (``id``) is each table's numbering of its own rows (customer 5
    is not order 5), shared only where both hold the same ids: one table's rows in two
    files (features and labels)."""
    return [
        name
        for name, column in other.columns.items()
        if (mine := one.columns.get(name)) is not None
        and mine.dtype == column.dtype != "float"
        and (not _ROW_ID.fullmatch(name) or _same_values(one.frame[name], other.frame[name]))
    ]


def _same_values(one: pd.Series, other: pd.Series) -> bool:
    return set(one.dropna().unique()) == set(other.dropna().unique())


def _outcome_base(tables: list[Table], outcomes: Table) -> Table:
    """The events an outcome table names: the largest other table it shares a column with."""
    named = [t for t in tables if t is not outcomes and _shared(t, outcomes)]
    if not named:
        raise StarterError(
            f"--label {outcomes.name!r} names a table of outcomes, but no other table shares a "
            f"column with it to name its events; its columns: {list(outcomes.columns)}"
        )
    return max(named, key=lambda t: len(t.frame))


def _outcome_label(
    base: Table, outcomes: Table, time: str | None, positive: list[str] | None
) -> tuple[dict, str, pd.Series]:
    """The label read from an outcome table: matched ``on`` the fewest shared columns that
    name one event (else all of them), the column holding ``positive`` when given, and how
    late outcomes came (``known_after``) when both tables have times; with the labels."""
    shared = _shared(base, outcomes)
    ids = [c for c in shared if base.columns[c].dtype != "datetime"]  # a time names no event
    naming = next((c for c in ids if _is_unique(base.frame, [c])), None)
    on = {c: c for c in ([naming] if naming else shared)}
    rule: dict[str, Any] = {"source": outcomes.name, "on": on}
    if positive:
        held = [
            c
            for c, column in outcomes.columns.items()
            if column.dtype == "string" and set(positive) <= set(outcomes.frame[c].astype(str))
        ]
        if not held:
            raise StarterError(f"--positive {positive}: no column of {outcomes.name!r} holds them")
        rule |= {"column": held[0], "positive": positive}
    note = f"1 when a row of {outcomes.name!r} names the event, else 0"
    event = base.times(time) if time else None
    times = [  # when an outcome came: not a time it repeats from its event
        c
        for c, col in outcomes.columns.items()
        if col.dtype == "datetime" and c not in base.columns
    ]
    if event is not None and times:
        came = outcomes.times(times[0])
        pairs = base.frame[list(on)].assign(_event=event.to_numpy())
        pairs = pairs.merge(outcomes.frame[list(on)].assign(_came=came.to_numpy()), on=list(on))
        if (days := _days_late(pairs["_came"] - pairs["_event"])) is not None:
            rule["known_after"] = timedelta(days=days)
            note = f"{times[0]!r} came up to {days} days after its event: newer events wait"
    if "known_after" not in rule:
        note += "; TODO: if outcomes come late, set known_after (how late)"
    frame = base.frame if event is None else base.frame.assign(**{time: event})
    newest = newest_event(event) if event is not None else None
    named = {outcomes.name: outcomes.frame}
    values = EventLabels(LabelSpec(**rule), time, named, newest)(frame)
    return rule, note, values


def _days_late(late: pd.Series) -> int | None:
    """How many days after its event the latest outcome came (rounded up, one at least);
    None when no outcome has both times."""
    late = late.dropna()
    return max(1, math.ceil(late.max() / pd.Timedelta(days=1))) if len(late) else None


def _outcome_time_label(base: Table, label: str, time: str | None) -> tuple[dict, str, pd.Series]:
    """A label column of times (``cancelled_at``, empty where no cancellation came): 1
    where it holds one, 0 where it is empty, and how late outcomes came after their
    events (``known_after``) when the base has an event time; with the labels."""
    rule: dict[str, Any] = {"column": label, "present": True}
    note = f"1 where {label!r} holds a time (the outcome came), 0 where it is empty"
    frame = base.frame.assign(**{label: base.times(label)})
    days, newest = None, None
    if time:
        frame = frame.assign(**{time: base.times(time)})
        days, newest = _days_late(frame[label] - frame[time]), newest_event(frame[time])
    if days is not None:
        rule["known_after"] = timedelta(days=days)
        note += f"; it came up to {days} days after its event: newer events wait"
    else:
        note += "; TODO: if outcomes come late, set known_after (how late)"
    return rule, note, EventLabels(LabelSpec(**rule), time, {}, newest)(frame)


def _lookups(
    tables: list[Table], base: Table, used: set[str]
) -> list[tuple[Table, dict[str, str], dict]]:
    """Other tables unique on columns the base also has, with the same types: a lookup. One
    column when one is unique, else the fewest that are together (a rate per hotel and
    room type); or the table a base column names by its id (``customer_id`` of orders, the
    ``id`` of customers). Each as (table, base column -> its column, its columns taken)."""
    found = []
    taken = set(base.columns)
    for other in tables:
        if other is base:
            continue
        shared = [key for key in _shared(base, other) if not other.columns[key].nullable]
        widest = MAX_LOOKUP_KEYS if len(shared) <= MAX_SHARED_FOR_PAIRS else 1
        sizes = range(1, min(len(shared), widest) + 1)
        candidates = (list(c) for n in sizes for c in itertools.combinations(shared, n))
        key = next((c for c in candidates if _is_unique(other.frame, c)), None)
        on = {k: k for k in key} if key is not None else _foreign_key(base, other)
        if on is None:
            continue
        outs = {c: c for c in other.columns if c not in on.values() and c not in taken | used}
        if outs:
            taken |= set(outs)
            found.append((other, on, outs))
    return found


def _foreign_key(base: Table, other: Table) -> dict[str, str] | None:
    """A base column that names the other table's rows by their own id, as a database's
    foreign key does: ``customer_id`` (or ``CustomerId``) of orders, the ``id`` of
    ``customers``, nearly every value of it one of those ids."""
    ids = [
        c
        for c in other.columns.values()
        if _ROW_ID.fullmatch(c.name) and not c.nullable and _is_unique(other.frame, [c.name])
    ]
    if len(ids) != 1:
        return None
    (row_id,) = ids
    table = re.sub(r"[^a-z0-9]", "", other.name.lower())
    for column in base.columns.values():
        named = re.fullmatch(r"(.+?)[ _.]?id", column.name, flags=re.IGNORECASE)
        if not named or column.dtype != row_id.dtype or column.dtype == "float":
            continue
        noun = re.sub(r"[^a-z0-9]", "", named.group(1).lower())
        if table not in (noun, f"{noun}s", f"{noun}es", f"{noun[:-1]}ies"):
            continue
        present = base.frame[column.name].dropna()
        if len(present) and present.isin(other.frame[row_id.name]).mean() >= FOREIGN_KEY_HITS:
            return {column.name: row_id.name}
    return None


@dataclass
class EventView:
    """A table of an entity's past events (many rows per key, each with its time), proposed
    as a window view: counts of its rows, sums and means of its numbers and the share of
    each kind of its events, over windows before each base event (what the offline store
    and the stream compute alike)."""

    table: Table
    timestamp: str
    keys: list[str]  # the log's names for the base's keys
    # name, function, column, window, the classes a rate counts
    aggregations: list[tuple[str, str, str, timedelta, list[str] | None]]
    # the base's key under the log's name for it (orders' customer_id: {"customer_id": "id"})
    copies: dict[str, str] = field(default_factory=dict)


MAX_VIEW_NUMBERS = 4  # numeric columns of an event table summed and averaged, at most
MAX_VIEW_CLASSES = 5  # a text column of an event table of this few kinds: a rate of each


def _event_views(
    tables: list[Table], base: Table, keys: list[str], time: str | None, taken: set[str]
) -> list[EventView]:
    """Other tables holding the base's entity keys and a time of their own, with many rows
    per entity: a log of its events (an app's clicks beside its users). Each row counts
    from its own time on, strictly before the base event's: no row from the future.

    A log may name the base's rows by a foreign key (orders' ``customer_id``, the ``id`` of
    customers): a view joins on one name in both tables, so the base gets a copy of its key
    under the log's name (the source's one-part ``joined``, made alike in the lake, a
    request and the stream)."""
    if time is None or not keys:
        return []
    views = []
    for other in tables:
        # the base's rows to come (a test.csv) are no log
        if other is base or set(other.columns) <= set(base.columns):
            continue
        named = _log_keys(other, base, keys)
        if named is None:
            continue
        keys_of_log, copies = named
        # a row without its time never counts: a time always held is the better one
        held = sorted(other.columns.values(), key=lambda c: c.nullable)
        times = [c.name for c in held if c.dtype == "datetime"]
        if not times or _is_unique(other.frame, keys_of_log):
            continue
        stamp = next((t for t in times if _TIME_NAME.search(t)), times[0])
        span = other.times(stamp).max() - other.times(stamp).min()
        windows = [timedelta(days=d) for d in ((7, 30) if span.days >= 60 else (1, 7))]  # noqa: PLR2004
        numbers = [
            c.name
            for c in other.columns.values()
            if c.dtype in ("int", "float")
            and c.name not in keys_of_log
            and not (_is_id(other, c) or _KEY_NAME.search(c.name))  # an order's id: no sum
        ][:MAX_VIEW_NUMBERS]
        stem, longest = _table_name(Path(other.name)), windows[-1]
        aggregations = [(f"{stem}_count_{w.days}d", "count", stamp, w, None) for w in windows]
        for column in numbers:
            for function in ("sum", "mean"):
                name = f"{stem}_{_snake(column)}_{function}_{longest.days}d"
                aggregations.append((name, function, column, longest, None))
        for column, kind in _kinds_of_events(other, keys_of_log):  # the share of each kind
            name = f"{stem}_{_snake(column)}_{_snake(kind)}_rate_{longest.days}d"
            aggregations.append((name, "rate", column, longest, [kind]))
        aggregations = [a for a in aggregations if a[0] not in taken | set(base.columns)]
        if aggregations:
            taken |= {a[0] for a in aggregations}
            views.append(EventView(other, stamp, keys_of_log, aggregations, copies))
    return views


def _log_keys(log: Table, base: Table, keys: list[str]) -> tuple[list[str], dict[str, str]] | None:
    """The log's columns that name the base's rows, and the base's column to copy under
    each name it lacks: the base's own key names (nothing to copy); or a foreign key to the
    base's id, its entity's or its rows' own (orders' ``customer_id`` for customers' ``id``,
    payments' ``subscription_id`` for subscriptions' ``id`` beside their ``customer_id``),
    where the base has no column of that name. None when the log names no base row."""
    if set(keys) <= set(_shared(base, log)):
        return keys, {}
    on = _foreign_key(log, base)
    if on is None:
        return None
    ((name, column),) = on.items()
    if name in base.columns or name in base.source.joined:
        return None
    return [name], {name: column}


def _copy_keys(base: Table, views: list[EventView]) -> None:
    """The base's key under each name a view's log gives it, as a one-part ``joined``
    column of its source: typed as the key, a row's own id, never a feature."""
    copies = {n: k for v in views for n, k in v.copies.items()}
    if not copies:
        return
    for name, key in copies.items():
        base.frame[name] = base.frame[key]
        logs = sorted(v.table.name for v in views if name in v.copies)
        note = f"{key!r} as {' and '.join(logs)} name it: their views join on it"
        base.columns[name] = replace(base.columns[key], name=name, note=note)
    joined = {**base.source.joined, **{n: [k] for n, k in copies.items()}}
    base.source = base.source.model_copy(update={"joined": joined})
    base.__dict__.pop("sample", None)  # drawn again, with the copies


def _kinds_of_events(log: Table, keys: list[str]) -> list[tuple[str, str]]:
    """The kinds a log's text columns of a few values name (``purchase`` among ``view``,
    ``click``), each but the most common: a rate of each is a share of the entity's events."""
    kinds = []
    for column in log.columns.values():
        if column.dtype != "string" or column.name in keys:
            continue
        counts = log.frame[column.name].dropna().astype(str).value_counts()
        if 2 <= len(counts) <= MAX_VIEW_CLASSES:  # noqa: PLR2004 -- two kinds at least
            kinds += [(column.name, str(kind)) for kind in counts.index[1:]]
    return kinds


def _logs_named_otherwise(
    tables: list[Table], base: Table, keys: list[str], time: str | None, views: list[EventView]
) -> list[str]:
    """Logs that name the base's rows by a foreign key (orders' ``customer_id``, the ``id``
    of customers) and got no view: the base holds a column of that name already, so the
    key's copy cannot take it (a view joins on one name in both tables)."""
    if time is None:
        return []
    counted = {id(v.table) for v in views}
    notes = []
    for other in tables:
        if other is base or id(other) in counted:
            continue
        on = _foreign_key(other, base)
        timed = any(c.dtype == "datetime" for c in other.columns.values())
        if on and timed and list(on.values()) == keys:
            ((mine, theirs),) = on.items()
            notes.append(
                f"{other.name}: a log of each row's {theirs!r} as {mine!r}; a window view of "
                f"it joins on one name in both tables: name the two columns alike"
            )
    return notes


def _write_views(w: Callable[[str], None], views: list[EventView]) -> None:
    w("        # TODO: each log's rows counted over windows before the event (a guess: which")
    w("        # windows matter?); a row counts from its own time: a column learned later")
    w("        # (an outcome) needs availability=Availability(from_column=...)")
    w("        feature_views=[")
    for view in views:
        entity = _identifier("_".join(view.keys), "entity", "e_")
        w("            WindowView(")
        w(f"                name={_py(_table_name(Path(view.table.name)))},")
        w(f"                source={_py(view.table.name)},")
        w(f"                entity=Entity(name={_py(entity)}, join_keys={_py(view.keys)}),")
        w(f"                timestamp={_py(view.timestamp)},")
        w("                aggregations=[")
        for name, function, column, window, positive in view.aggregations:
            kinds = f", positive={_py(positive)}" if positive else ""
            w(
                f"                    Aggregation(name={_py(name)}, function={_py(function)}, "
                f"column={_py(column)}, window={_py(window)}{kinds}),"
            )
        w("                ],")
        w("            ),")
    w("        ],")


def _py(value: object) -> str:
    """``value`` as Python source, in the project's style (double quotes)."""
    if isinstance(value, str):  # accents as written: "Gekündigt", not "Gek\u00fcndigt"
        return "".join(_visible(c) for c in json.dumps(value, ensure_ascii=False))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_py(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_py(k)}: {_py(v)}" for k, v in value.items()) + "}"
    if isinstance(value, datetime | timedelta):
        return _time_py(value)
    return repr(value)


def _visible(char: str) -> str:
    """A character as a reader of the spec can see it: a no-break or narrow space (which
    groups thousands) or a mark no font draws as its escape, ``\\u00a0``."""
    if char != " " and unicodedata.category(char) in ("Zs", "Cf"):
        return f"\\u{ord(char):04x}"
    return char


def _time_py(value: datetime | timedelta) -> str:
    if isinstance(value, timedelta):
        days, rest = divmod(value, timedelta(days=1))
        return (
            f"timedelta(days={days})"
            if not rest
            else f"timedelta(seconds={value.total_seconds():g})"
        )
    if value.utcoffset() == timedelta(0) and value.time() == time(0):
        return f"datetime({value.year}, {value.month}, {value.day}, tzinfo=UTC)"
    return f"datetime.fromisoformat({_py(value.isoformat())})"


def _rule_text(rule: ColumnRule) -> str:
    fields = rule.model_dump(exclude_defaults=True)
    fields.setdefault("dtype", rule.dtype)
    if rule.dtype == "int":  # bounds of whole numbers read as whole numbers
        fields |= {k: int(fields[k]) for k in ("ge", "le") if k in fields}
    order = ["dtype", "nullable", "ge", "le", "format", "unit", "timezone", "strip", "decimal"]
    order += [k for k in fields if k not in order]  # every option the rule holds, written
    return "ColumnRule(" + ", ".join(f"{k}={_py(fields[k])}" for k in order if k in fields) + ")"


def _line(text: str, note: str, indent: int) -> str:
    pad = " " * indent
    if not note:
        return f"{pad}{text}"
    if len(pad) + len(text) + len(note) + 4 <= 99:  # noqa: PLR2004 -- a line, as ruff wants
        return f"{pad}{text}  # {note}"
    lines = textwrap.wrap(note, 99 - len(pad) - 2, break_long_words=False)
    return "".join(f"{pad}# {line}\n" for line in lines) + f"{pad}{text}"


def write_starter(  # noqa: PLR0912, PLR0913, PLR0915 -- one option per choice; one file
    data: Path | str,
    spec_path: Path,
    *,
    label: str | None = None,
    time: str | None = None,
    keys: list[str] | None = None,
    name: str | None = None,
    threshold: float | None = None,
    positive: list[str] | None = None,
) -> Starter:
    """Inspect ``data`` (a file, a folder, a SQLite file or a database URL) and return the
    text of a spec file to be written at ``spec_path`` (paths in it are relative to that
    file)."""
    database = database_url(data)
    shown = redacted_url(database[0]) if database and not database[1] else data
    tables = find_tables(data, spec_path.parent)
    for table in tables:
        type_columns(table)
        join_dates_and_times(table)
        join_calendar_parts(table)
    outcomes = _outcome_table(tables, label)
    if outcomes is not None:
        base = _outcome_base(tables, outcomes)
        label_note = ""
    elif label is not None:
        having = [t for t in tables if label in t.columns]
        if not having:
            seen = sorted({str(c) for t in tables for c in t.columns})
            more = f" and {len(seen) - SHOWN_COLUMNS} more" if len(seen) > SHOWN_COLUMNS else ""
            left = _left_out(Path(data)) if database is None else []
            hint = f" (files not read, by their names: {', '.join(left)})" if left else ""
            raise StarterError(
                f"no column {label!r} in {shown}; columns: "
                f"{', '.join(seen[:SHOWN_COLUMNS])}{more}{hint}"
            )
        # Where it is a label: both classes, the most rows, the most columns (a Kaggle
        # folder's train.csv, not its sample submission of one class)
        base = max(
            having,
            key=lambda t: (
                t.frame[label].nunique() > 1,
                int(t.frame[label].notna().sum()),
                len(t.columns),
            ),
        )
        label_note = ""
    else:  # the events are the longest table (a Kaggle folder's train.csv)
        base = max(tables, key=lambda t: len(t.frame))
        label = _guess_label(base)
        label_note = "TODO: the label column was guessed; pass --label or change it"
    base_cols = base.columns
    if time is not None and (time not in base_cols or base_cols[time].dtype != "datetime"):
        raise StarterError(
            f"--time {time!r}: not a column of {base.name!r} read as a time; times found: "
            f"{[c for c, col in base_cols.items() if col.dtype == 'datetime'] or 'none'}"
        )
    times = [c for c, col in base_cols.items() if col.dtype == "datetime" and c != label]
    times.sort(key=lambda c: c not in base.source.joined)  # a date and its time of day first
    time_note = ""
    if time is None and times:
        time = times[0]
        if len(times) > 1:
            time_note = f"TODO: the event time was guessed among {times}"
    if time is not None and (column := base_cols[time]).nullable:
        # A row without its time has no place in a split or a point-in-time join (the
        # stream refuses such an event too): its row is quarantined, with the reason.
        nulls = int(base.times(time).isna().sum())
        column.nullable = False
        column.rule = column.rule.model_copy(update={"nullable": False, "missing": None})
        told = f"TODO: {nulls} rows have no time: quarantined, as the event time places a row"
        column.note = "; ".join(n for n in (column.note, told) if n)
    if keys:
        if missing := [k for k in keys if k not in base_cols]:
            raise StarterError(f"--keys {missing}: not columns of {base.name!r}")
        keys_note = ""
    else:
        keys = _guess_keys(base, {label, time or ""})
        keys_note = (
            "TODO: the entity (whom a prediction is about) was guessed; check it"
            if keys
            else "TODO: no entity found: name the columns a prediction is about"
        )
    if label in keys or label == time:
        raise StarterError(f"the label {label!r} cannot also be a key or the event time")
    if outcomes is not None:
        rule, rule_note, label_values = _outcome_label(base, outcomes, time, positive)
        used = {*rule["on"], *keys, *([time] if time else [])}
    elif base_cols[label].dtype == "datetime" and threshold is None and positive is None:
        rule, rule_note, label_values = _outcome_time_label(base, label, time)
        used = {label, *keys, *([time] if time else [])}
    else:
        label_values = base.frame[label]
        if base_cols[label].dtype in ("int", "float"):  # as the lake reads it: "12%" is 12
            label_values = read_numbers(label_values, base_cols[label].rule)
        elif unknown := (_unknown_outcomes(label_values) if positive is None else []):
            label_values = label_values.where(~label_values.astype(str).isin(unknown))
            _no_label(base_cols[label], unknown)
        rule, rule_note = _label_rule(label_values, base_cols[label].dtype, threshold, positive)
        if base_cols[label].dtype == "string" and "threshold" in rule:
            raise StarterError(f"--threshold: the label {label!r} is text; use --positive")
        rule = {"column": label, **rule}
        used = {label, *keys, *([time] if time else [])}
    parts = {p for name, joined in base.source.joined.items() if name == time for p in joined}
    numeric, categorical, texts, notes = _features(base, used | parts, label_values)
    # An outcome table is what the model predicts: never a lookup (leakage).
    lookups = _lookups([t for t in tables if t is not outcomes], base, used)
    _unbound(base, keys)
    for table in tables:  # an order number: the next order's is past every one seen
        _unbound(table, [c.name for c in table.columns.values() if _is_id(table, c)])
        _unbound(table, [p for p in table.partitions if p in table.columns], "a partition")
    for other, on, _ in lookups:
        _unbound(base, list(on))
        _unbound(other, list(on.values()))
    for other, _, outs in lookups:
        for out in outs:
            kind = other.columns[out].dtype
            if kind in ("int", "float"):
                numeric.append(out)
            elif kind == "string" and other.frame[out].nunique() <= MAX_CATEGORIES:
                categorical.append(out)
    # An outcome table is no log of events to count either; nor is a lookup.
    joined = {id(t) for t, _, _ in lookups} | {id(outcomes)}
    logs = [t for t in tables if id(t) not in joined]
    views = _event_views(logs, base, keys, time, {*used, *numeric, *categorical})
    notes += _logs_named_otherwise(logs, base, keys, time, views)
    _copy_keys(base, views)
    for view in views:
        _unbound(view.table, view.keys)
        numeric.extend(a[0] for a in view.aggregations)
    if not numeric and not categorical and not texts:
        raise StarterError(f"{base.name!r} has no column left to be a feature")
    # 1/0/NaN as the feature set will label the rows, by its own function.
    labels = (
        label_values
        if outcomes is not None or rule.get("present")
        else make_label(label_values.to_frame(label), LabelSpec(**rule))
    )
    split, split_note = _split(base, time, labels)
    calendar = _calendar(base, time)
    name = name or _table_name(Path(str(data)))
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise StarterError(f"--name {name!r}: lower-case letters, digits and _, from a letter")

    out: list[str] = []
    w = out.append
    w(f'"""The dataset spec of {name}: a starting point written by `mlsys spec init` from')
    w(f"{shown}.")
    w("")
    w("Types, ranges and nullability come from the data; every line marked TODO is a guess")
    w("only you can confirm. Use it anywhere a dataset reference goes:")
    w("")
    w(f"    mlsys pipeline --spec {spec_path}:{name}")
    w('"""')
    w("")
    envs = sorted({t.url_env for t in tables if t.url_env})
    if envs:
        w("import os")
    timed = any(
        c.dtype == "datetime" and c.rule.le is not None for t in tables for c in t.columns.values()
    )
    names = [
        *(["UTC", "datetime"] if timed else []),
        *(["timedelta"] if split.startswith("Recent") or "known_after" in rule or views else []),
    ]
    if names:
        w(f"from datetime import {', '.join(names)}")
    w("from pathlib import Path")
    w("")
    w("from mlsys_core.spec import (")
    imports = ["ColumnRule", "DatasetSpec", "FeatureGroups", "LabelSpec", "SourceSpec"]
    imports += ["TableContract", split.split("(")[0]]
    if lookups:
        imports.append("LookupJoin")
    for item in sorted(imports):
        w(f"    {item},")
    w(")")
    if texts:
        w("from mlsys_core.spec.columns import TextFeature")
    if views:
        w("from mlsys_core.spec.definitions import Aggregation, Entity, WindowView")
    w("")
    w("HERE = Path(__file__).resolve().parent  # data paths are relative to this file")
    w("")
    w("")
    w(f"def {name}() -> DatasetSpec:")
    w("    return DatasetSpec(")
    w(f"        name={_py(name)},")
    w("        sources=[")
    for table in tables:
        s = table.source
        if s.format == "sql":
            note = f"set {table.url_env}: the URL holds a password" if table.url_env else ""
            w(_line(f'SourceSpec(name={_py(s.name)}, format="sql",', note, 12))
            w(f"                       url={table.url_code}, query={_py(s.query)}),")
            continue
        extra = ", incremental=True" if s.incremental else ""
        extra += "".join(
            f", {k}={_py(getattr(s, k))}"
            for k in (
                "pattern",
                "sheet",
                "member",
                "delimiter",
                "decimal",
                "encoding",
                "skip_rows",
                "skip_footer",
                "skip_initial_space",
                "header",
                "column_names",
                "text_columns",
                "joined",
            )
            if getattr(s, k) != _default(k)
        )
        how = ["a landing folder: each ingest appends its new files"] if s.incremental else []
        if table.partitions:
            named = ", ".join(f"{p}=" for p in table.partitions)
            how.append(f"its folders name {named}: columns of their files' rows")
        if s.skip_rows:
            lines = "line" if s.skip_rows == 1 else f"{s.skip_rows} lines"
            how.append(f"the header follows a title: {lines} above it")
        if s.skip_footer:
            below = "a row" if s.skip_footer == 1 else f"{s.skip_footer} rows"
            how.append(f"{below} below the table: its total, left out")
        if s.encoding == "utf-16":  # said by the file's byte-order mark: no guess
            how.append("UTF-16, as a spreadsheet's Unicode Text")
        elif s.encoding != "utf-8":
            how.append(f"TODO: not UTF-8; read as {s.encoding}: check accents")
        if not s.header:
            how.append("TODO: the file names no columns: these names are ours, rename them")
        note = "; ".join(how)
        w(
            _line(
                f"SourceSpec(name={_py(s.name)}, path=str(HERE / {_py(s.path)}){extra}),", note, 12
            )
        )
    w("        ],")
    w("        contracts={")
    for table in tables:
        w(f"            {_py(table.name)}: TableContract(")
        w("                # ranges are the ones observed: widen them for the data to come")
        if any(c.dtype == "datetime" for c in table.columns.values()):
            margin = f"{TIME_MARGIN_YEARS} years past the last"
            w(f"                # (times: from the first year seen to {margin})")
        w("                columns={")
        for column in table.columns.values():
            w(_line(f"{_py(column.name)}: {_rule_text(column.rule)},", column.note, 20))
        w("                },")
        unique = []
        if table is base:
            ids = [
                [c.name]
                for c in table.columns.values()
                if _is_id(table, c) and c.name not in table.source.joined  # not a key's copy
            ]
            # An id named as one (``transaction_id``) names each row for good; the entity and
            # the time may meet twice in data to come (two payments of one card in a second),
            # and a row number may restart in the next file.
            named = [i for i in ids if _KEY_NAME.search(i[0]) and i[0] not in keys]
            for candidate in (*named, [*keys, time] if time else [], keys, *ids):
                if candidate and _is_unique(table.frame, candidate):
                    unique = candidate
                    break
        else:
            unique = next((list(on.values()) for o, on, _ in lookups if o is table), [])
        if unique:
            w(_line(f"unique={_py(unique)},", "a repeat of this key is quarantined", 16))
        elif table is base:
            w("                # TODO: unique=[...] quarantines repeated rows (none found unique)")
        w("            ),")
    w("        },")
    w(f"        base={_py(base.name)},  # its rows are the events a model predicts")
    w(_line(f"entity_keys={_py(keys)},", keys_note, 8))
    w(_line(f"event_timestamp={_py(time)},", time_note or ("" if time else "no time found"), 8))
    if lookups:
        w("        lookups=[")
        for other, on, outs in lookups:
            w(f"            LookupJoin(source={_py(other.name)}, on={_py(on)},")
            w(f"                       columns={_py(outs)}),")
        w("        ],")
    if views:
        _write_views(w, views)
    rule_args = ", ".join(f"{k}={_py(v)}" for k, v in rule.items())
    w(_line(f'label=LabelSpec(name="label", {rule_args}),', label_note or rule_note, 8))
    if label_note and rule_note:
        w(f"        # {rule_note}")
    w("        features=FeatureGroups(")
    w("            # TODO: keep only what is known when a prediction is made (leakage)")
    w(f"            numeric={_py(numeric)},")
    w(f"            categorical={_py(categorical)},")
    if calendar:
        told = f"of {time!r}, in UTC unless timezone= says: keep the parts that matter"
        w(_line(f"calendar={_py(calendar)},", told, 12))
    if texts:
        w("            # free text: TF-IDF weights of its most frequent words and word pairs")
        w(f"            extractors=[TextFeature(columns={_py(texts)}, n_features=256)],")
    for note in notes:
        w(f"            # left out or to check: {note}")
    w("        ),")
    w(_line(f"split={split},", split_note, 8))
    w("    )")
    text = "\n".join(out) + "\n"
    return Starter(
        name=name,
        tables=tables,
        base=base.name,
        label=label,
        keys=keys,
        time=time,
        text=text,
        todos=sum("TODO" in line.partition("#")[2] for line in text.splitlines()),
    )


def check_starter(spec: DatasetSpec, tables: list[Table]) -> dict[str, tuple[int, dict[str, int]]]:
    """Run each table's sample through the spec's contract: by table, how many rows would be
    quarantined and the count of each reason (a row may have several). The ranges are those
    of every row, so what a sample finds is a value that does not read."""
    reasons = {}
    for table in tables:
        contract = spec.contracts.get(table.name)
        if contract is None:
            continue
        types = {c: col.dtype for c, col in table.columns.items()}
        result = clean_table(table.sample, contract, table.name, types=types)
        reasons[table.name] = (len(result.quarantined), dict(result.reasons))
        if table.name == spec.base:
            spec.check_base_types({**types, **{c: r.dtype for c, r in contract.columns.items()}})
    return reasons
