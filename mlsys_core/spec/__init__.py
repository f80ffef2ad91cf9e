"""The typed dataset spec: everything the stages know about a dataset, and nothing hard-coded.

Another dataset runs through the same code by writing a new :class:`DatasetSpec`; this module
names no dataset (the shipped ones are plug-ins in ``mlsys_core.datasets``, found like a
user's).
"""

from __future__ import annotations

import codecs
import hashlib
import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from mlsys_core.spec.columns import ColumnFeature, Selection, extractor_columns
from mlsys_core.spec.definitions import (
    EventStream,
    FeatureView,
    check_aggregated_types,
    check_streams,
    check_views,
)

CalendarPart = Literal["hour", "day_of_week", "month_sin", "month_cos"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


SourceFormat = Literal["auto", "csv", "parquet", "feather", "json", "jsonl", "xlsx", "stata", "sql"]
# Formats whose reader takes no CSV options (an encoding, rows to skip, text columns).
NOT_TEXT = ("parquet", "feather", "json", "jsonl", "stata", "sql")


class SourceSpec(_Frozen):
    """One input table, declared where it lives and how it is read.

    - a file inside an installed package (read with importlib.resources) or on disk: CSV
      (plain, ``.gz`` or ``.zip``), Parquet, Feather (Arrow's files: ``.feather``,
      ``.arrow``), JSON lines, a JSON document (an array of records, an object holding one,
      or a frame pandas' ``to_json`` wrote), a sheet of an Excel workbook (``.xlsx``) or a
      Stata file (``.dta``, its labelled values as their labels); a file of a ``.zip``
      or tar archive (``member``, or its only file); the format follows the name unless
      ``format`` says otherwise, and a record's nested objects become ``parent.field``
      columns;
    - ``incremental``: ``path`` is a landing folder; each ingest takes only files whose
      content it has not seen, and appends them to the table as new partitions;
      ``pattern="**/*.parquet"`` reads a partitioned dataset's ``year=2024/`` folders,
      whose values become columns of their files' rows;
    - ``format="sql"``: the rows of ``query`` on the SQLAlchemy ``url``.
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    package: str | None = Field(
        default=None, description="Installed package holding the file; None means a path."
    )
    path: str = Field(
        default="", description="File in the package or on disk; the folder when incremental."
    )
    format: SourceFormat = "auto"
    url: str | None = Field(default=None, description="SQLAlchemy URL, for format='sql'.")
    query: str | None = Field(default=None, description="SELECT to run, for format='sql'.")
    incremental: bool = False
    pattern: str = Field(default="*", description="Glob of landing files, when incremental.")
    partition_by: list[str] = Field(
        default_factory=list,
        description="Columns whose values split the table into partitions (e.g. year, month).",
    )
    sheet: str | None = Field(
        default=None, description="xlsx: the workbook's sheet to read, by name (the first)."
    )
    member: str | None = Field(
        default=None,
        description="A .zip or tar archive's file to read, by its path in the archive "
        "(None: its only file), in the format its own name says: a competition's download "
        "holds train.csv beside test.csv.",
    )
    header: bool = Field(default=True, description="CSV, xlsx: the first line names the columns.")
    column_names: list[str] | None = Field(
        default=None, description="CSV column names; required when there is no header."
    )
    on_empty: Literal["error", "skip"] = Field(
        default="error",
        description="An input with no rows: fail the ingest, or skip it with a warning "
        "(nothing is written either way).",
    )
    delimiter: str = Field(
        default=",",
        pattern=r"^(.|\\s\+)$",
        description="CSV: the field separator; ';' where a spreadsheet writes ',' as the "
        "decimal mark; '\\s+' for columns aligned by runs of spaces or tabs (a fixed-width "
        "report, R's write.table).",
    )
    skip_initial_space: bool = Field(
        default=False,
        description="CSV: drop the spaces after each separator (the UCI repository writes "
        "'39, State-gov, 77516'), so a category reads 'State-gov', as a request sends it.",
    )
    encoding: str = Field(
        default="utf-8",
        description="CSV: the text encoding; 'cp1252' for a file Excel saved on Windows "
        "(accents as single bytes). JSON is UTF-8 by definition.",
    )
    decimal: Literal[".", ","] = Field(
        default=".",
        description="CSV: the decimal mark. With ',' a '.' before each group of three "
        "digits groups thousands: 1.234,56 is 1234.56, and 3.5 stays 3.5.",
    )
    skip_rows: int = Field(
        default=0,
        ge=0,
        description="CSV: the lines above the header (a report's title and export date, "
        "as a bank or an accounting export writes them); blank ones count.",
    )
    skip_footer: int = Field(
        default=0,
        ge=0,
        description="CSV: the rows below the table in each file (a Total line a report "
        "export ends with).",
    )
    text_columns: list[str] = Field(
        default_factory=list,
        description="CSV: columns read as written, never as numbers: codes whose leading "
        "zeros a number would drop (a zip code 02134, an article 000123), so the lake "
        "holds the text a caller sends.",
    )
    joined: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Columns the source writes across others, made by joining their text "
        "with a space: {'booked_at': ['Booking Date', 'Booking Time']} makes one time of a "
        "date and a time of day, for the contract to read. One part is a copy under a "
        "second name: {'customer_id': ['id']} gives customers' key the name their orders "
        "use, so a view of the orders joins on it. The parts stay; a null part gives a null.",
    )

    @model_validator(mode="after")
    def _readable(self) -> SourceSpec:
        if self.format == "sql":
            if not (self.url and self.query):
                raise ValueError(f"source {self.name!r}: format 'sql' needs url and query")
            if self.incremental or self.package:
                raise ValueError(
                    f"source {self.name!r}: a sql source is neither a package "
                    "file nor a landing folder"
                )
        elif not self.path:
            raise ValueError(f"source {self.name!r}: path is required")
        if self.incremental and self.package:
            raise ValueError(f"source {self.name!r}: a landing folder cannot be in a package")
        if not self.header and not self.column_names:
            raise ValueError(f"source {self.name!r}: a CSV without a header needs column_names")
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise ValueError(f"source {self.name!r}: unknown encoding {self.encoding!r}") from None
        if self.format in (*NOT_TEXT, "xlsx") and self.encoding != "utf-8":
            raise ValueError(f"source {self.name!r}: encoding applies to CSV files only")
        for option, where in (
            ("skip_rows", "CSV and xlsx files"),
            ("skip_footer", "CSV and xlsx files"),
            ("text_columns", "CSV files"),
        ):
            wrong = (*NOT_TEXT, *(() if "xlsx" in where else ("xlsx",)))
            if self.format in wrong and getattr(self, option):
                raise ValueError(f"source {self.name!r}: {option} applies to {where} only")
        if self.sheet is not None and self.format not in ("auto", "xlsx"):
            raise ValueError(f"source {self.name!r}: sheet applies to xlsx workbooks only")
        if self.delimiter == self.decimal:
            raise ValueError(
                f"source {self.name!r}: {self.delimiter!r} cannot both separate fields and "
                "mark decimals"
            )
        return self

    @model_validator(mode="after")
    def _member_of_a_file(self) -> SourceSpec:
        if self.member is not None and self.format == "sql":
            raise ValueError(f"source {self.name!r}: member applies to archives of files only")
        return self

    @model_validator(mode="after")
    def _joins_others(self) -> SourceSpec:
        for name, parts in self.joined.items():
            if not parts or len(set(parts)) < len(parts) or name in parts:
                raise ValueError(f"source {self.name!r}: joined {name!r} needs other columns")
            if chained := sorted(set(parts) & set(self.joined)):
                raise ValueError(f"source {self.name!r}: joined {name!r} joins joined {chained}")
        return self


class ColumnRule(_Frozen):
    """What a valid value of one column looks like.

    Times are stored in UTC. By default they are read as ISO 8601; ``format`` reads them
    with a strptime pattern (``"%b-%Y"`` for ``Mar-2018``), ``unit`` reads epoch numbers
    (``"s"``, ``"ms"``, ``"us"``, ``"ns"``), and ``timezone`` says where values without an
    offset were recorded (local times a clock change skips or repeats are quarantined).
    A datetime column's bounds are times (``le=datetime(2031, 1, 1, tzinfo=UTC)``): a typo
    such as 2099 is quarantined instead of dating a ``RecentSplit``'s windows.

    Numbers a spreadsheet wrote as text are read with ``strip``, the texts removed first,
    and ``decimal``, their decimal mark: ``strip=["%"]`` reads ``26.6%`` as 26.6 (the value
    as written, in its unit), ``strip=["$", ","]`` reads ``$1,234.50`` as 1234.5, and
    ``strip=["€", "."], decimal=","`` reads ``1.234,56 €`` as 1234.56. ``negative`` says how
    such text marks a negative: ``"(5)"`` as accounts write ``(1,234.50)``, ``"5-"`` as SAP
    exports write ``1.234,56-``; a leading minus reads with either. ``suffixes`` multiply
    a number written with one (``{"K": 1e3, "M": 1e6}`` reads ``1.2K`` as 1200 and ``3M``
    as 3e6, as a store writes an app's size or a site its views).

    ``missing`` names the texts that mean no value (``["?"]``): read as null by the lake,
    a stream's events and a request alike, so the column must be ``nullable``.

    ``duration`` reads a length of time as its seconds. As a clock: ``"h:m:s"`` reads
    ``01:04:31`` as 3871 (and days before it, as pandas, PostgreSQL and Python write them:
    ``1 days 02:03:04``, ``1 day, 2:03:04``), ``"m:s"`` reads ``4:31`` as 271 (and
    ``1:02:03``, past an hour, as 3723), ``"h:m"`` reads ``1:05`` as 3900; seconds may have
    decimals (``4:31.5``). With its units, largest first: ``"units"`` reads ``2h 50m`` as
    10200, ``1 hr 30 min``, ``90 seconds``, ``3 days`` and ``1.5 hours`` (w, d, h, m, s and
    ms, and their words; ``m`` is minutes). In ISO 8601: ``"iso"`` reads ``PT4M31S`` as 271
    and ``P1DT2H`` as 93600; years and months, of no fixed length, are not read.
    """

    dtype: Literal["int", "float", "string", "datetime"]
    nullable: bool = False
    ge: float | AwareDatetime | None = Field(
        default=None, description="Smallest valid value (a time, for a datetime column)."
    )
    le: float | AwareDatetime | None = Field(
        default=None, description="Largest valid value (a time, for a datetime column)."
    )
    allowed: list[str] | None = None
    format: str | None = Field(default=None, description="strptime pattern of a datetime.")
    unit: Literal["s", "ms", "us", "ns", "excel"] | None = Field(
        default=None,
        description="A datetime given as numbers: epoch numbers in this unit, or 'excel': "
        "a spreadsheet's serial days (45296 is 2024-01-05; a fraction is the time of day).",
    )
    timezone: str = Field(default="UTC", description="Zone of datetimes without an offset.")
    strip: list[str] | None = Field(
        default=None, description="Texts removed from a number written as text ('%', '$', ',')."
    )
    decimal: Literal[".", ","] = Field(
        default=".", description="The decimal mark of a number written as text."
    )
    negative: Literal["-5", "(5)", "5-"] = Field(
        default="-5",
        description="How a number written as text marks a negative: a leading minus, "
        "parentheses (accounting) or a trailing minus (SAP).",
    )
    missing: list[str] | None = Field(
        default=None,
        description="Texts that mean no value in this column ('?' as the UCI repository "
        "writes it, '-' as a report does): null, wherever the column is read.",
    )
    suffixes: dict[str, float] | None = Field(
        default=None,
        description="Suffixes that multiply a number written as text ({'K': 1000}: 1.2K is 1200).",
    )
    duration: Literal["h:m:s", "m:s", "h:m", "units", "iso"] | None = Field(
        default=None,
        description="A length of time, read as seconds: written as a clock (01:04:31, 4:31), "
        "with its units (2h 50m) or in ISO 8601 (PT4M31S).",
    )

    @property
    def formatted(self) -> bool:
        """Whether numbers of this column may come as formatted text (``$1,234.50``,
        ``4:31``)."""
        return (
            self.strip is not None
            or self.decimal != "."
            or self.negative != "-5"
            or self.suffixes is not None
            or self.duration is not None
        )

    @model_validator(mode="after")
    def _number_options(self) -> ColumnRule:
        if self.formatted and self.dtype not in ("int", "float"):
            raise ValueError(
                f"strip, decimal, negative, suffixes and duration apply to number columns "
                f"only, not {self.dtype}"
            )
        if self.duration is not None and (
            self.strip is not None
            or self.decimal != "."
            or self.negative != "-5"
            or self.suffixes is not None
        ):
            raise ValueError(
                "a duration is read by its notation: no strip, decimal, negative or suffixes"
            )
        marks = {self.decimal, "-", *(("(", ")") if self.negative == "(5)" else ())}
        for text in [*(self.strip or []), *(self.suffixes or {})]:
            if not text or any(c.isdecimal() or c in marks for c in text):
                raise ValueError(
                    f"{text!r}: a text to remove or a suffix holds no digit, no minus and no "
                    f"decimal mark ({self.decimal!r})"
                )
        for suffix, times in (self.suffixes or {}).items():
            if not suffix.strip():
                raise ValueError("a suffix is a text after the number, such as 'K'")
            if not (math.isfinite(times) and times > 0):
                raise ValueError(f"suffix {suffix!r} multiplies by a positive number, not {times}")
        return self

    @model_validator(mode="after")
    def _missing_texts(self) -> ColumnRule:
        if self.missing is not None:
            if not self.missing or any(not text.strip() for text in self.missing):
                raise ValueError("missing names texts that mean no value, such as '?'")
            if not self.nullable:
                raise ValueError("a column with missing texts is nullable (nullable=True)")
        return self

    @model_validator(mode="after")
    def _time_options(self) -> ColumnRule:
        used = [k for k in ("format", "unit") if getattr(self, k) is not None]
        if self.timezone != "UTC":
            used.append("timezone")
        if used and self.dtype != "datetime":
            raise ValueError(f"{used} apply to datetime columns only, not {self.dtype}")
        for bound in (self.ge, self.le):
            if bound is not None and isinstance(bound, datetime) != (self.dtype == "datetime"):
                raise ValueError(
                    "a datetime column's bounds are times with a zone "
                    "(datetime(2031, 1, 1, tzinfo=UTC)), any other column's are numbers"
                )
        if self.format is not None and self.unit is not None:
            raise ValueError("a datetime has a format or a unit, not both")
        if self.format is not None and "%" not in self.format:
            raise ValueError(f"format {self.format!r} is not a strptime pattern (e.g. %b-%Y)")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.timezone!r}") from None
        return self


class TableContract(_Frozen):
    """A declarative contract for one table; columns not named pass through untouched."""

    columns: dict[str, ColumnRule]
    unique: list[str] = Field(default_factory=list, description="Key whose repeats quarantine.")


class LookupJoin(_Frozen):
    """A static dimension joined on equal keys (left join, many-to-one)."""

    source: str
    on: dict[str, str] = Field(description="left column -> right column")
    columns: dict[str, str] = Field(description="right column -> output feature name")


class AsOfJoin(_Frozen):
    """A time-varying table joined point-in-time: the latest right row available at the
    left row's event time, never one from after it."""

    source: str
    on: dict[str, str] = Field(description="left column -> right column (exact match)")
    timestamp: str = Field(description="The right table's event-time column.")
    columns: dict[str, str] = Field(description="right column -> output feature name")
    tolerance: timedelta | None = Field(
        default=timedelta(hours=3), description="Older right rows count as missing."
    )
    availability_lag: timedelta = Field(
        default=timedelta(0), description="How long after its timestamp a right row is known."
    )


class LabelSpec(_Frozen):
    """A binary label: ``column > threshold``, or ``column`` in the ``positive`` classes;
    rows whose column is null carry no label. Or ``present``: 1 where the column holds a
    value (``cancelled_at``: a time the outcome came), 0 where it is null.

    Outcomes kept in a table of their own (chargebacks, cancellations, returns) label the
    base events they name: ``source``, and ``on`` (base column -> its column). An event is
    1 when a row of it names the event (any row; with ``column``, one the rule counts),
    else 0. ``known_after``: an outcome may come this long after its event, so an event
    that recent, at the base table's newest event, carries no label yet (not a false 0),
    and a ``RecentSplit`` is dated back from the newest labelled event.
    """

    name: str = "label"
    column: str | None = Field(
        default=None, description="The column read: the base's, or the outcome table's."
    )
    threshold: float | None = None
    positive: list[str | float] | None = Field(
        default=None, description="Classes that count as 1 (the rest are 0)."
    )
    present: bool = Field(
        default=False,
        description="1 where the column holds a value (an outcome's time), 0 where it is null.",
    )
    unlabeled: Literal["drop"] = Field(
        default="drop", description="Rows with no value are kept as data but never trained on."
    )
    source: str | None = Field(
        default=None, description="A table of outcomes, one row or more per event it names."
    )
    on: dict[str, str] | None = Field(
        default=None, description="base column -> outcome table column, naming the event."
    )
    known_after: timedelta | None = Field(
        default=None, description="How long after its event an outcome may still come."
    )

    @model_validator(mode="after")
    def _one_rule(self) -> LabelSpec:
        if self.source is None and self.column is None:
            raise ValueError("a label reads a column, or names the outcome table (source)")
        if self.source is None and self.on is not None:
            raise ValueError("on names the columns an outcome table (source) is matched by")
        if self.source is not None and not self.on:
            raise ValueError(
                f"the outcome table {self.source!r} needs on (base column -> its column)"
            )
        rules = (self.threshold is not None) + (self.positive is not None) + self.present
        if self.column is None and rules:
            raise ValueError("threshold, positive and present read a column: name it")
        if self.present and self.source is not None:
            raise ValueError(
                "present reads a column of the base table; an outcome table's rows already "
                "label the events they name"
            )
        if self.column is not None and rules != 1:
            raise ValueError("a label needs exactly one of threshold, positive and present")
        if self.positive is not None and not self.positive:
            raise ValueError("positive must name at least one class")
        if self.known_after is not None and self.known_after <= timedelta(0):
            raise ValueError("known_after must be longer than zero")
        return self


class TimeSplit(_Frozen):
    """Train before ``train_end``, validate before ``valid_end``, test on the rest."""

    train_end: AwareDatetime
    valid_end: AwareDatetime

    @model_validator(mode="after")
    def _ordered(self) -> TimeSplit:
        if self.train_end >= self.valid_end:
            raise ValueError("train_end must come before valid_end")
        return self


# Of the rarer label class, what a valid or test window should hold to compare models on:
# `spec init` widens its windows to it, and a window short of it is explained by it.
RARER_PER_WINDOW = 10


class RecentSplit(_Frozen):
    """Test on the newest ``test`` of event time, validate on the ``valid`` before it, train
    on everything older. Each feature build measures back from its own newest event, so a
    retrain on new data trains on more of it; a ``TimeSplit``'s fixed dates would train
    every retrain on the same rows and put all new data in its test split."""

    valid: timedelta = Field(gt=timedelta(0), description="Length of the validation window.")
    test: timedelta = Field(gt=timedelta(0), description="Length of the newest, test window.")

    def at(self, newest: datetime) -> TimeSplit:
        """The dated split for data whose newest event is ``newest`` (a row at
        ``newest - test`` or later tests)."""
        valid_end = newest - self.test
        return TimeSplit(train_end=valid_end - self.valid, valid_end=valid_end)


class HashSplit(_Frozen):
    """Split by a stable hash of each row's content, for data without an event time.

    Equal rows always land in the same split, so a duplicate cannot leak across.
    """

    valid_fraction: float = Field(default=0.15, gt=0.0, lt=1.0)
    test_fraction: float = Field(default=0.15, gt=0.0, lt=1.0)
    columns: list[str] | None = Field(
        default=None, description="Columns hashed; None: every input column and the label's."
    )

    @model_validator(mode="after")
    def _room_to_train(self) -> HashSplit:
        if self.valid_fraction + self.test_fraction >= 1.0:
            raise ValueError("valid_fraction + test_fraction must leave rows to train on")
        return self


class FeatureGroups(_Frozen):
    numeric: list[str]
    categorical: list[str]
    calendar: list[CalendarPart] = Field(default_factory=list)
    timezone: str = Field(default="UTC", description="Calendar parts use local time here.")
    extractors: list[ColumnFeature] = Field(
        default_factory=list,
        description="Per-column extractors (numeric, categorical, datetime, text, image).",
    )
    selectors: list[Selection] = Field(
        default_factory=list, description="Applied in order to the numeric block, on train."
    )


class DatasetSpec(_Frozen):
    """Sources, entity, event time, label, feature groups and split of one dataset."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    model_name: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Registered model its pipeline trains; None: the name, dashed.",
    )
    sources: list[SourceSpec]
    contracts: dict[str, TableContract] = Field(
        default_factory=dict,
        description="Each source's contract; a source without one gets an empty contract "
        "(its columns pass as the data types them).",
    )
    base: str = Field(description="The source whose rows are the prediction events.")
    entity_keys: list[str]
    event_timestamp: str | None = Field(
        description="The event-time column; None for data without one (then a HashSplit)."
    )
    lookups: list[LookupJoin] = Field(default_factory=list)
    as_of_joins: list[AsOfJoin] = Field(default_factory=list)
    feature_views: list[FeatureView] = Field(
        default_factory=list, description="Point-in-time features from the feature store."
    )
    streams: list[EventStream] = Field(
        default_factory=list,
        description="Sources that also arrive live as events, and the window views they "
        "keep fresh (the stream job computes them as the offline store does).",
    )
    label: LabelSpec
    features: FeatureGroups
    split: TimeSplit | RecentSplit | HashSplit

    @model_validator(mode="before")
    @classmethod
    def _every_source_contracted(cls, data: object) -> object:
        """A source without a contract gets an empty one, so validation cleans it like the
        others (a feature set reads clean snapshots only; without one it could not be built)."""
        if not isinstance(data, dict) or not isinstance(data.get("sources"), list):
            return data
        contracts = dict(data.get("contracts") or {})
        for source in data["sources"]:
            name = source.name if isinstance(source, SourceSpec) else dict(source).get("name")
            if isinstance(name, str):
                contracts.setdefault(name, TableContract(columns={}))
        return {**data, "contracts": contracts}

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSpec:
        names = {s.name for s in self.sources}
        referenced = {self.base} | {j.source for j in [*self.lookups, *self.as_of_joins]}
        referenced |= {v.source for v in self.feature_views}
        referenced |= {s.source for s in self.streams}
        referenced |= {self.label.source} - {None}  # type: ignore[arg-type]
        check_views(self.feature_views)
        types = {n: {c: r.dtype for c, r in t.columns.items()} for n, t in self.contracts.items()}
        check_aggregated_types(self.feature_views, types)
        check_streams(self.streams, self.feature_views)
        if missing := sorted(referenced - names):
            raise ValueError(f"spec references undeclared sources: {missing}")
        if missing := sorted(set(self.contracts) - names):
            raise ValueError(f"contracts for undeclared sources: {missing}")
        self._check_label()
        # A feature no join or view produces comes from the base table, declared in its
        # contract or not: an undeclared column has the type recorded from its first
        # snapshot, and ``check_base_types`` holds the data to that when features are built.
        if clash := sorted(set(self.joined_features) & set(self.entity_keys)):
            raise ValueError(f"joins or views produce entity key columns: {clash}")
        for source in self.sources:
            contract = self.contracts.get(source.name)
            if source.partition_by and contract and contract.unique:
                # Cleaning checks key uniqueness one partition at a time; that is exact only
                # when rows with equal keys always land in the same partition.
                if stray := sorted(set(source.partition_by) - set(contract.unique)):
                    raise ValueError(
                        f"source {source.name!r}: partition columns {stray} are not part of "
                        f"its unique key {contract.unique}"
                    )
        if self.event_timestamp is None:
            timed = {
                "as_of_joins": self.as_of_joins,
                "feature_views": self.feature_views,
                "features.calendar": self.features.calendar,
            }
            if used := [k for k, v in timed.items() if v]:
                raise ValueError(f"{used} need an event_timestamp")
            if isinstance(self.split, TimeSplit | RecentSplit):
                raise ValueError("a split by time needs an event_timestamp; use a HashSplit")
        if isinstance(self.split, HashSplit) and self.split.columns:
            known = {*self.input_columns, *self.entity_keys, *self.label_columns}
            if stray := sorted(set(self.split.columns) - known):
                raise ValueError(f"the split hashes columns the feature rows lack: {stray}")
        return self

    def _check_label(self) -> None:
        if self.label.source == self.base:
            raise ValueError("the label's outcome table is another table than the base")
        if self.label.known_after is not None and self.event_timestamp is None:
            raise ValueError("a label's known_after needs an event_timestamp")
        number = {"int": "number", "float": "number"}
        for mine, theirs in (self.label.on or {}).items():
            kinds = [
                number.get(rule.dtype, rule.dtype)
                for table, column in ((self.base, mine), (self.label.source, theirs))
                if (rule := self._rule(table, column)) is not None
            ]
            if len(set(kinds)) > 1:
                raise ValueError(
                    f"the label's on {mine!r} -> {theirs!r}: the contracts type them "
                    f"{kinds[0]} and {kinds[1]}; no outcome could name an event"
                )

    def _rule(self, table: str | None, column: str) -> ColumnRule | None:
        contract = self.contracts.get(table or "")
        return contract.columns.get(column) if contract else None

    @property
    def registered_model(self) -> str:
        """The MLflow registered model of this dataset's pipeline, unless a run names one."""
        return self.model_name or self.name.replace("_", "-")

    @property
    def joined_features(self) -> list[str]:
        """Feature columns that lookups, as-of joins and feature views produce."""
        outs = [out for j in [*self.lookups, *self.as_of_joins] for out in j.columns.values()]
        return list(dict.fromkeys([*outs, *self.view_features]))

    @property
    def label_columns(self) -> list[str]:
        """Base columns the label is read from: its column, or those that name an event in
        the outcome table."""
        if self.label.source is None:
            return [self.label.column]  # type: ignore[list-item]
        return list(self.label.on or {})

    @property
    def base_columns(self) -> list[str]:
        """Columns the base table must provide to the feature frame: keys, time, join keys,
        the label's column and every feature that no join or view produces."""
        joined = {c for j in [*self.lookups, *self.as_of_joins] for c in j.on}
        joined |= {k for v in self.feature_views for k in v.entity.join_keys}
        ts = [self.event_timestamp] if self.event_timestamp else []
        cols = [*self.entity_keys, *ts, *sorted(joined), *self.label_columns]
        features = [*self.features.numeric, *self.features.categorical]
        features += extractor_columns(self.features.extractors)
        produced = set(self.joined_features)
        cols += [c for c in features if c not in produced]
        return list(dict.fromkeys(cols))

    def check_base_types(self, types: Mapping[str, str]) -> None:
        """Hold the base table's typed columns (declared or recorded) to what the spec
        uses: every base column exists, and no numeric feature is text."""
        if missing := [c for c in self.base_columns if c not in types]:
            raise ValueError(
                f"{self.base!r} has no columns {missing} (declared in its contract or seen in "
                f"its data); it has {sorted(types)}"
            )
        numeric = set(self.features.numeric) - set(self.joined_features)
        if text := sorted(c for c in numeric if types[c] not in ("int", "float")):
            raise ValueError(
                f"numeric features {text} of {self.base!r} are typed "
                f"{[types[c] for c in text]}; declare them float in its contract, or list "
                "them as categorical"
            )

    @property
    def input_columns(self) -> list[str]:
        """Raw feature columns a model consumes (the pyfunc's input schema)."""
        ts = [self.event_timestamp] if self.features.calendar else []
        cols = [*self.features.categorical, *self.features.numeric, *ts]
        return list(dict.fromkeys([*cols, *extractor_columns(self.features.extractors)]))

    @property
    def idle_views(self) -> dict[str, list[str]]:
        """Feature views none of whose features the model takes: computed, stored and kept
        fresh for nothing, most often because their features were left out of
        ``features``."""
        used = set(self.input_columns)
        return {v.name: v.features for v in self.feature_views if not used & set(v.features)}

    @property
    def view_features(self) -> list[str]:
        """Features the feature store computes, in declaration order."""
        return [f for v in self.feature_views for f in v.features]

    @property
    def sources_needed(self) -> list[str]:
        """Sources a feature set is built from."""
        joins = [*self.lookups, *self.as_of_joins, *self.feature_views]
        outcomes = {self.label.source} - {None}
        return sorted({self.base} | {j.source for j in joins} | outcomes)  # type: ignore[arg-type]

    def source(self, name: str) -> SourceSpec:
        return next(s for s in self.sources if s.name == name)

    def with_landing(self, folders: dict[str, str]) -> DatasetSpec:
        """The spec with the named sources read incrementally from landing folders."""
        if unknown := sorted(set(folders) - {s.name for s in self.sources}):
            raise ValueError(f"landing folders for undeclared sources: {unknown}")
        sources = [
            SourceSpec.model_validate(
                {
                    **s.model_dump(),
                    **{"package": None, "path": folders[s.name], "incremental": True},
                    **{"format": "auto", "url": None, "query": None},
                }
            )
            if s.name in folders
            else s
            for s in self.sources
        ]
        return DatasetSpec.model_validate({**self.model_dump(), "sources": sources})

    def fingerprint(self) -> str:
        """A content hash of the spec: equal specs share it, any change moves it. Options
        left at their defaults are not hashed, so a release that adds one moves no existing
        spec's fingerprint (no rebuilt feature sets, no major version on the next retrain)."""
        return hashlib.sha256(self.model_dump_json(exclude_defaults=True).encode()).hexdigest()[:16]
