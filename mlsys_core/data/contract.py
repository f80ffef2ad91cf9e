"""The data contract: typed coercion, then pandera checks; each failing row is quarantined
with every reason it failed, and ``rows_in == clean + quarantined`` always holds.

pandera fits: its lazy validation reports every failure with the row index, which is
exactly what a row-level quarantine needs. Typing is done here first, because a value
that cannot be parsed is a row-level failure, not a reason to reject the whole table.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

import numpy as np
import pandas as pd
import pandera.pandas as pa

from mlsys_core.data.durations import WRITTEN, duration_seconds
from mlsys_core.data.sources import ascii_minus
from mlsys_core.data.zones import zones_as_offsets
from mlsys_core.spec import ColumnRule, TableContract

REASON = "_quarantine_reason"


def _how(rule: ColumnRule) -> str:
    if rule.unit is not None:
        return f" ({_unit_words(rule.unit)})"
    return f" (format {rule.format})" if rule.format else ""


def _unit_words(unit: str) -> str:
    return "a spreadsheet's serial days" if unit == "excel" else f"epoch {unit}"


class ContractError(ValueError):
    """The table as a whole breaks the contract (for example a column is missing)."""


@dataclass
class CleanResult:
    clean: pd.DataFrame
    quarantined: pd.DataFrame
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def rows_in(self) -> int:
        return len(self.clean) + len(self.quarantined)


ColumnType = Literal["int", "float", "string", "datetime"]
# An undeclared column is typed from the first snapshot that holds values in it: numbers
# when all but this share of its values parse as numbers, times when stored as times (a
# Parquet timestamp), else text. The few cells that do not parse are quarantined with
# their rows.
INFER_TOLERANCE = 0.01
_INTEGER = r"^\s*[+-]?\d+\s*$"
_CHUNK = 4096
_NS_PER = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
# Serial days count from here for every day since 1900-03-01: Excel counts a 29 February
# 1900 that never was (after Lotus 1-2-3), so its day 1, 1900-01-01, reads a day early.
_EXCEL_ORIGIN = pd.Timestamp("1899-12-30")
_EXCEL_REACH = 100_000  # days: the year 2173, inside pandas' range
_OFFSET = r"(?:Z|[+-]\d{2}:?\d{2})\s*$"  # an ISO 8601 value that says its UTC offset


def bool_text(value: bool) -> str:
    """The text a boolean cell becomes in a ``string`` column ("True", "False"), as
    ``_coerce`` writes it: a caller that sends the boolean itself means that text."""
    return str(bool(value))


def _coerce(values: pd.Series, rule: ColumnRule) -> pd.Series:
    if rule.dtype in ("int", "float"):
        return read_numbers(values, rule)
    if rule.dtype == "datetime":
        return to_utc_datetimes(values, rule)
    return values.astype("string").astype(object).where(values.notna(), None)


# A negative as accounts write it, ``(1234.50)``, or as SAP does, ``1234.50-``.
_NEGATIVE = {"(5)": r"^\(\s*(.*?)\s*\)$", "5-": r"^(.*?)\s*-$"}


def means_no_value(value: object, rule: ColumnRule) -> bool:
    """Whether ``value`` is a text the column's data writes for no value (``rule.missing``:
    ``?``, ``-``), spaces around it aside, or, in a column of numbers or times, a blank
    text (a spreadsheet's ``" "`` for a total not yet known)."""
    if not isinstance(value, str):
        return False
    said = value.strip()
    return (not said and rule.dtype != "string") or (bool(rule.missing) and said in rule.missing)


def absent(values: pd.Series, rule: ColumnRule) -> pd.Series:
    """``values`` with the texts that mean no value in the column as nulls (as
    ``means_no_value`` reads one, over a whole column at once)."""
    if values.dtype != object or (not rule.missing and rule.dtype == "string"):
        return values
    try:
        text = values.str
    except AttributeError:  # not one text among them
        return values
    gone = pd.Series(False, index=values.index)
    if rule.dtype != "string":
        gone |= text.isspace().eq(True) | values.eq("")
    if rule.missing:
        gone |= text.strip().isin(rule.missing)
    return values.where(~gone, None)


def read_numbers(values: pd.Series, rule: ColumnRule) -> pd.Series:
    """Numbers as float64, NaN where a value is none: a number as it is, and text with the
    rule's ``strip`` texts removed, its ``decimal`` mark and its ``negative`` read
    (``$1,234.50``, ``(1,234.50)``, ``1.234,56-``, ``−5``), or a ``duration`` as seconds; a
    length of time held as one (a Parquet duration, a database's interval) is its seconds."""
    if pd.api.types.is_bool_dtype(values):
        values = values.astype(object)  # True is not a number in a data file
    if pd.api.types.is_timedelta64_dtype(values):  # a Parquet duration, an SQL interval
        return values.dt.total_seconds().astype("float64")
    if not pd.api.types.is_numeric_dtype(values):
        values = values.astype(object)
        if pd.api.types.infer_dtype(values, skipna=True) not in ("string", "empty"):
            lengths = values.map(lambda v: isinstance(v, timedelta)).astype(bool)
            if lengths.any():  # lengths of time among other values: their seconds
                values = values.copy()
                values[lengths] = [v.total_seconds() for v in values[lengths]]
        text = values.map(lambda v: isinstance(v, str)).astype(bool)
        if text.any() and rule.duration is not None:
            values = values.copy()
            values[text] = duration_seconds(values[text].astype(str), rule.duration)
        elif text.any():
            plain = ascii_minus(values[text].astype(str))
            for mark in rule.strip or []:
                plain = plain.str.replace(mark, "", regex=False)
            if rule.decimal != ".":
                plain = plain.str.replace(rule.decimal, ".", regex=False)
            plain = minus_first(plain.str.strip(), rule.negative)
            values = values.copy()
            values[text] = _multiplied(plain, rule.suffixes) if rule.suffixes else plain
    return pd.to_numeric(values, errors="coerce").astype("float64")


def _multiplied(text: pd.Series, suffixes: dict[str, float]) -> pd.Series:
    """Numbers written with a suffix that multiplies them (``1.2K``, ``3 M``) as numbers;
    NaN where a text is no number once its suffix is read."""
    times = pd.Series(1.0, index=text.index)
    read = pd.Series(False, index=text.index)
    for suffix in sorted(suffixes, key=len, reverse=True):  # "Bn" before "B"
        ends = text.str.endswith(suffix) & ~read
        text = text.where(~ends, text.str[: -len(suffix)].str.rstrip())
        times, read = times.where(~ends, suffixes[suffix]), read | ends
    return pd.to_numeric(text, errors="coerce") * times


def minus_first(text: pd.Series, negative: str) -> pd.Series:
    """Text whose negatives are written as ``negative`` says (``(5)``, ``5-``), with them
    written ``-5``; anything else as it is."""
    if negative not in _NEGATIVE:
        return text
    return text.str.replace(_NEGATIVE[negative], r"-\1", regex=True)


def number_notation(rule: ColumnRule) -> str:
    """The texts ``read_numbers`` reads, in words."""
    if not rule.formatted:
        return "a number"
    if rule.duration is not None:
        return f"a number of seconds, or a length of time written {WRITTEN[rule.duration]}"
    parts = [f"without {', '.join(map(repr, rule.strip))}"] if rule.strip else []
    parts += [f"with {rule.decimal!r} for decimals"] if rule.decimal != "." else []
    parts += [f"{rule.negative!r} for -5"] if rule.negative != "-5" else []
    parts += [f"{suffix!r} for x{_times(times)}" for suffix, times in (rule.suffixes or {}).items()]
    return f"a number, or text as the data writes it ({'; '.join(parts)})"


def _times(factor: float) -> str:
    return f"{factor:,.0f}" if factor.is_integer() else f"{factor:g}"


def _as_written(value: object) -> str | None:
    """A time's value as text: a date written as a number (20240105, a float when its
    column has nulls) as its digits."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def to_utc_datetimes(values: pd.Series, rule: ColumnRule) -> pd.Series:  # noqa: PLR0911
    """Parse times as the rule says (ISO 8601, a strptime ``format`` or epoch numbers in
    ``unit``); naive values are local time in ``rule.timezone``. Unparsable cells (and
    local times a clock change skips or repeats) become NaT; the result is UTC."""
    if rule.unit is not None:
        numbers = pd.to_numeric(values, errors="coerce").astype("float64")
        if rule.unit == "excel":  # serial days from 1899-12-30 (Excel's 1900 date system),
            days = numbers.where((numbers >= 0) & (numbers < _EXCEL_REACH))  # local times
            times = pd.to_datetime(days, unit="D", origin=_EXCEL_ORIGIN).dt.round("ms")
            return _localize(times, rule.timezone)
        # pandas raises (not coerces) past its nanosecond range, near the year 2262.
        reach = 0.99 * pd.Timestamp.max.value / _NS_PER[rule.unit]
        numbers = numbers.where(numbers.abs() < reach)
        return pd.to_datetime(numbers, unit=rule.unit, utc=True, errors="coerce")
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_dtype(values):
        return _localize(values, rule.timezone)
    text = values.astype(object).where(values.notna(), None)
    if not text.map(lambda v: v is None or isinstance(v, str)).all():
        text = text.map(_as_written)
    if rule.format is None:
        if rule.timezone == "UTC":  # naive values are UTC: one pass does both kinds
            return pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
        # Values with an offset keep their instant; the others are local time.
        aware = text.str.contains(_OFFSET, regex=True, na=False).astype(bool)
        out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
        if aware.any():
            out[aware] = pd.to_datetime(text[aware], errors="coerce", utc=True, format="ISO8601")
        naive = ~aware & text.notna()
        if naive.any():
            local = pd.to_datetime(text[naive], errors="coerce", format="ISO8601")
            out[naive] = _localize(local, rule.timezone)
        return out
    text, fmt = zones_as_offsets(text, rule.format)
    parsed = _with_format(text, fmt)
    if parsed is not None and isinstance(parsed.dtype, pd.DatetimeTZDtype):
        return parsed.dt.tz_convert("UTC")
    if parsed is not None and pd.api.types.is_datetime64_dtype(parsed):
        return _localize(parsed, rule.timezone)
    return pd.Series(
        [_one_time(v, fmt, rule.timezone) for v in text],
        index=values.index,
        dtype="datetime64[ns, UTC]",
    )


def _with_format(text: pd.Series, fmt: str) -> pd.Series | None:
    """``text`` parsed by a strptime format, or None where pandas refuses it (each value is
    then parsed alone). A format whose values say their zone (``%z``, ``%Z``) reads them as
    UTC instants, mixed offsets too; one with a fraction of a second (``%S.%f``) also reads
    values written without one, as BigQuery writes a whole second."""
    aware = "%z" in fmt or "%Z" in fmt
    try:
        parsed = pd.to_datetime(text, errors="coerce", format=fmt, utc=aware)
    except (ValueError, TypeError):
        return None
    missed = parsed.isna() & text.notna()
    if ".%f" in fmt and missed.any():
        whole = _with_format(text[missed], fmt.replace(".%f", ""))
        if whole is not None and whole.dtype == parsed.dtype:
            parsed = parsed.copy()
            parsed[missed] = whole
    return parsed


def read_times(values: pd.Series, rule: ColumnRule) -> pd.Series:
    """Times sent live (a request, an event) for a column the lake reads with ``rule``:
    in the data's own notation, or ISO 8601, either way local to ``rule.timezone`` when
    they carry no offset. A caller holding the data's rows sends what they hold; one that
    formats its own times sends ISO 8601. NaT where neither reads the value."""
    parsed = to_utc_datetimes(values, rule)
    if rule.format is None and rule.unit is None:
        return parsed
    missed = parsed.isna() & values.notna()
    if missed.any():
        iso = rule.model_copy(update={"format": None, "unit": None})
        parsed = parsed.copy()
        parsed[missed] = to_utc_datetimes(values[missed].astype(object), iso)
    return parsed


def unread_time(value: object, rule: ColumnRule) -> str:
    """Why ``read_times`` gives NaT for ``value``: what the column accepts, or the clock
    change that makes a local time skipped or repeated."""
    series = pd.Series([value], dtype=object)
    if (
        rule.timezone != "UTC"
        and read_times(series, rule.model_copy(update={"timezone": "UTC"})).notna().all()
    ):
        return (
            f"{value!r} is a local time that a clock change skips or repeats in "
            f"{rule.timezone}: send it with its UTC offset"
        )
    return f"time must be {time_notation(rule)}"


def _clock_changed(values: pd.Series, rule: ColumnRule, live: bool) -> set[int]:
    """The rows of unread times that read in UTC: local times that do not exist (the hour
    a clock skips) or exist twice (the hour it repeats) in ``rule.timezone``."""
    if rule.dtype != "datetime" or rule.timezone == "UTC":
        return set()
    utc = rule.model_copy(update={"timezone": "UTC"})
    read = read_times(values, utc) if live else to_utc_datetimes(values, utc)
    return {int(i) for i in read.index[read.notna()]}


def time_notation(rule: ColumnRule) -> str:
    """The notations ``read_times`` reads, in words."""
    own = (
        f"{_unit_words(rule.unit)} (a number), or ISO 8601 text"
        if rule.unit
        else f"{rule.format!r} (as in the data) or ISO 8601"
        if rule.format
        else "ISO 8601"
    )
    return f"{own}; a time without an offset is {rule.timezone}"


def _localize(values: pd.Series, timezone: str) -> pd.Series:
    local = values.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")
    return local.dt.tz_convert("UTC")


def _one_time(value: str | None, fmt: str, timezone: str) -> pd.Timestamp:
    if value is None:
        return pd.NaT
    try:
        stamp = pd.to_datetime(value, format=fmt)
    except (ValueError, TypeError):
        return pd.NaT
    if stamp is pd.NaT:
        return pd.NaT
    if stamp.tzinfo is None:
        try:
            stamp = stamp.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")
        except (ValueError, TypeError):
            return pd.NaT
    return pd.NaT if stamp is pd.NaT else stamp.tz_convert("UTC")


def infer_column_types(
    frame: pd.DataFrame, tolerance: float = INFER_TOLERANCE
) -> dict[str, ColumnType]:
    """The type of every column that holds a value (an all-null column waits for data).
    ``tolerance`` is the share of a text column's values that may fail to parse as numbers
    for it to be numbers still."""
    types: dict[str, ColumnType] = {}
    for name in frame.columns:
        if (kind := _infer(frame[name], tolerance)) is not None:
            types[str(name)] = kind
    return types


def _infer(  # noqa: PLR0911 - one answer per kind
    values: pd.Series, tolerance: float
) -> ColumnType | None:
    present = values.dropna()
    if present.empty:
        return None
    dtype = present.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "string"
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    if pd.api.types.is_timedelta64_dtype(dtype):  # a length of time: its seconds
        return "float"
    # Text: numbers if nearly all of it parses as numbers. Text that looks like times stays
    # text unless declared: whether it is local time, and where, is the user's to say.
    if pd.api.types.infer_dtype(present, skipna=True) != "string":
        present = present.map(str)
    allowed = tolerance * len(present)  # cells that may fail to parse
    failed, parsed = 0, []
    for start in range(0, len(present), _CHUNK):
        chunk = ascii_minus(present.iloc[start : start + _CHUNK])
        numbers = pd.to_numeric(chunk, errors="coerce")
        failed += int(numbers.isna().sum())
        if failed > allowed:  # too many already: text (stops early on a text column)
            return "string"
        parsed.append(chunk[numbers.notna()])
    integral = all(p.str.match(_INTEGER).all() for p in parsed)
    return "int" if integral else "float"


def record_types(known: Mapping[str, str], frame: pd.DataFrame) -> dict[str, str]:
    """The recorded column types, plus those of columns seen with values for the first time
    (a recorded type never changes: the first snapshot that has values decides it)."""
    fresh = [c for c in frame.columns if c not in known]
    return {**known, **infer_column_types(frame[fresh])}


def typed_rules(contract: TableContract, types: Mapping[str, str] | None) -> dict[str, ColumnRule]:
    """Rules for every typed column: the declared ones, and the recorded type (nullable,
    no other check) of each undeclared one."""
    rules = dict(contract.columns)
    for name, kind in (types or {}).items():
        if name not in rules:
            rules[name] = ColumnRule(dtype=kind, nullable=True)  # type: ignore[arg-type]
    return rules


def _checks(rule: ColumnRule) -> list[pa.Check]:
    checks = []
    if rule.dtype == "int":
        checks.append(
            pa.Check(lambda s: s.isna() | (s % 1 == 0), element_wise=False, name="integer")
        )
    # A time bound compares as a UTC timestamp with the typed (UTC) column.
    if rule.ge is not None:
        checks.append(pa.Check.ge(_bound(rule.ge)))
    if rule.le is not None:
        checks.append(pa.Check.le(_bound(rule.le)))
    if rule.allowed is not None:
        checks.append(pa.Check.isin(rule.allowed))
    return checks


def _bound(value: float | datetime) -> float | pd.Timestamp:
    return pd.Timestamp(value).tz_convert("UTC") if isinstance(value, datetime) else value


def _check_failures(
    frame: pd.DataFrame,
    rules: Mapping[str, ColumnRule],
    table: str,
    unparsable: dict[str, set[int]],
) -> list[tuple[int, str]]:
    """(row, reason) for every contract check a typed row fails.

    Pandera's checks, called on each column rather than through a schema: a schema's
    validation spends about a millisecond a column on setup and copies, which made most of
    a stream micro-batch's cost (a few hundred events). Nulls are left to nullability, as a
    schema leaves them, and the reasons are the check's own (``less_than_or_equal_to(4.0)``).
    """
    failures = []
    for name, rule in rules.items():
        values = frame[name]
        if not rule.nullable:
            for row in np.flatnonzero(values.isna().to_numpy()):
                if int(row) not in unparsable.get(name, ()):  # already said why it is null
                    failures.append((int(row), f"{name}: null"))
        for check in _checks(rule):
            try:
                passed = check(values).check_output
            except (TypeError, ValueError) as err:  # values a check cannot compare
                raise ContractError(f"{table}: column {name!r}, {check.error}: {err}") from err
            reason = "not an allowed value" if check.name == "isin" else check.error or check.name
            failures.extend((int(row), f"{name}: {reason}") for row in passed.index[~passed])
    return failures


def clean_table(
    raw: pd.DataFrame,
    contract: TableContract,
    table: str = "table",
    seen_keys: set[int] | None = None,
    types: Mapping[str, str] | None = None,
    live: bool = False,
) -> CleanResult:
    """Split raw rows into clean rows and quarantined rows, each with a reason.

    ``live`` rows were sent live (a stream's events): a time may come in the data's own
    notation or in ISO 8601, as ``read_times`` reads it.

    ``types`` are the recorded types of undeclared columns: a cell that does not parse as
    its column's type quarantines its row whether or not the column is declared, and an
    undeclared column a batch lacks is added, empty. ``seen_keys`` carries the hashed
    unique keys of earlier batches of the same table, so a table cleaned batch by batch
    quarantines a repeat exactly as a whole one would; clean rows add their keys to it.
    """
    if missing := sorted(set(contract.columns) - set(raw.columns)):
        raise ContractError(f"{table}: columns required by the contract are missing: {missing}")
    rules = typed_rules(contract, types)
    frame = raw.reset_index(drop=True).copy()
    for name in rules:
        if name not in frame.columns:
            frame[name] = None
    reasons: dict[int, dict[str, None]] = {}  # row -> ordered set of reasons

    def flag(row: int, reason: str) -> None:
        reasons.setdefault(row, {})[reason] = None

    unparsable: dict[str, set[int]] = {}
    for name, rule in rules.items():
        live_time = live and rule.dtype == "datetime"
        frame[name] = absent(frame[name], rule)
        typed = read_times(frame[name], rule) if live_time else _coerce(frame[name], rule)
        rows = np.flatnonzero((frame[name].notna() & typed.isna()).to_numpy())
        unparsable[name] = {int(i) for i in rows}
        clock = _clock_changed(frame[name].iloc[rows], rule, live_time) if len(rows) else ()
        article = "an" if rule.dtype == "int" else "a"
        for i in rows:
            flag(
                int(i),
                f"{name}: a local time a clock change skips or repeats in {rule.timezone}"
                if int(i) in clock
                else f"{name}: not {article} {rule.dtype}{_how(rule)}",
            )
        frame[name] = typed
    for row, reason in _check_failures(frame, rules, table, unparsable):
        flag(row, reason)
    if contract.unique:
        passing = frame.drop(index=list(reasons))
        hashes = pd.util.hash_pandas_object(passing[contract.unique], index=False)
        repeated = hashes.duplicated(keep="first")
        if seen_keys is not None:
            repeated |= hashes.isin(seen_keys)
            seen_keys.update(hashes[~repeated].tolist())
        for row in passing.index[repeated.to_numpy()]:
            flag(int(row), f"duplicate key ({', '.join(contract.unique)})")
    bad = sorted(reasons)
    quarantined = raw.reset_index(drop=True).iloc[bad].reset_index(drop=True)
    quarantined[REASON] = ["; ".join(reasons[i]) for i in bad]
    clean = frame.drop(index=bad).reset_index(drop=True)
    counts = Counter(r for i in bad for r in reasons[i])
    result = CleanResult(clean=clean, quarantined=quarantined, reasons=counts)
    if result.rows_in != len(raw):
        raise AssertionError(f"{table}: rows lost in cleaning ({result.rows_in} != {len(raw)})")
    return result
