"""The request and response schemas of ``POST /predict``, generated from the dataset spec.

Nothing here names a flights column. A record carries the spec's entity keys and event time
(required: they drive the online lookups and the later join of the prediction log to
labels), the keys the lookups and feature views find rows by (optional; without them those
features are missing), and every model input feature (optional). Each input has one serving
source (``serving/sources.py``): one only the caller has is imputed as in training when
absent; one the service finds (a lookup, an as-of join, a feature view) is looked up online
when absent, while an explicit null is taken as the client's "no value". The record's
OpenAPI description lists which is which.

Types and ranges come from the table contracts, so a value the training data could never
hold (a wrong type, NaN, infinity, a distance of -5) is a 422 with its field named, not a
surprise deep in the model. Categories are not checked against a list: an unseen one goes
to the model's unseen bucket, as in training.

Text rule: a key refuses every control character (C0, DEL, C1) and every bidirectional
control (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069), which would make a logged
value display as something it is not; a category and free text (a text extractor's column)
allow tab, newline and carriage return, which a quoted field of the data holds (a comment
over two lines is a category the model learned), and the direction marks (U+200E, U+200F,
U+061C), which Hebrew and Arabic text holds and which reorder no text around them, but
refuse the embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069) and the other
controls. Refused means a 422
naming the field; nothing is stripped silently. An empty category or text is a value (a JSON source
keeps ``""``, and the model learned it as one); an empty key names no entity and is refused.
A JSON boolean sent for a category or key is the text the lake holds for a boolean cell ("True").
A record may nest fields as its JSON source does: ``{"customer": {"id": 7}}`` is the field
``customer.id``, the column the lake made of it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    create_model,
    model_validator,
)

from mlsys_core.data.contract import (
    bool_text,
    means_no_value,
    number_notation,
    read_numbers,
    read_times,
    time_notation,
    unread_time,
)
from mlsys_core.data.sources import flat_objects, joined_columns
from mlsys_core.features.assemble import request_keys
from mlsys_core.features.online import is_null
from mlsys_core.serving.sources import ServingPlan
from mlsys_core.spec import ColumnRule, DatasetSpec
from mlsys_core.spec.definitions import LatestView, WindowView

MAX_TEXT = 256  # longer than any code or name in a contract; bounds what a log row holds
# pandas holds nanosecond times between 1677 and 2262; beyond them no feature can be made.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
INT_LIMIT = 2**53 - 1  # the largest integer every JSON parser reads exactly
# A bound for features the contracts leave open: the model computes in float32, and values
# near its 3.4e38 limit overflow the network; no tabular quantity comes near 1e15.
FLOAT_LIMIT = 1e15


_MARKS = "\u061c\u200e\u200f"  # the direction marks
_CONTROLS = "\u202a-\u202e\u2066-\u2069"  # embeddings, overrides, isolates
_KEY_REFUSED = re.compile(f"[\x00-\x1f\x7f-\x9f{_MARKS}{_CONTROLS}]")
_TEXT_REFUSED = re.compile(f"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f{_CONTROLS}]")


def _utf8(value: str) -> str:
    # JSON allows lone surrogates ("\ud800"); no Parquet file or log can hold them.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid UTF-8 (no lone surrogates)") from None
    return value


def _key(value: str) -> str:
    if found := _KEY_REFUSED.search(value):
        raise ValueError(
            f"a key must not hold control or bidirectional characters "
            f"(found U+{ord(found.group()):04X})"
        )
    return value


def _text(value: str) -> str:
    """A category's or free text's rule."""
    if found := _TEXT_REFUSED.search(value):
        raise ValueError(
            f"text must not hold control characters other than tab and newlines, nor "
            f"bidirectional embeddings, overrides or isolates (found U+{ord(found.group()):04X})"
        )
    return value


def _in_range(value: datetime) -> datetime:
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)  # naive means UTC
    if not EARLIEST <= aware < LATEST:
        raise ValueError(f"time must lie in [{EARLIEST:%Y}, {LATEST:%Y})")
    return aware.astimezone(UTC)


def _whole(value: Any) -> Any:
    # 271.0 is the integer 271 (pandas writes ints with nulls as floats); 271.5 is not.
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


# The same rules as JSON Schema patterns, published so clients (and the fuzzer) know them;
# the validators enforce them with a clearer message than a pattern mismatch.
_MARKS_PATTERN = r"\u061c\u200e\u200f"
_CONTROLS_PATTERN = r"\u202a-\u202e\u2066-\u2069"
KEY_PATTERN = rf"^[^\x00-\x1f\x7f-\x9f{_MARKS_PATTERN}{_CONTROLS_PATTERN}]*$"
TEXT_PATTERN = rf"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f{_CONTROLS_PATTERN}]*$"


def _bool_as_text(value: Any) -> Any:
    return bool_text(value) if isinstance(value, bool) else value


def _text_or_bool(key: bool) -> Any:
    """A category or key: text, or a boolean, which means the text the lake holds for a
    boolean cell (a column of JSON or Parquet booleans is text there). Validated as text,
    so an error names the field alone; published as either, so a client (and the fuzzer)
    knows a boolean is accepted."""
    min_length = 1 if key else 0
    pattern = KEY_PATTERN if key else TEXT_PATTERN
    text = {"maxLength": MAX_TEXT, "pattern": pattern, "type": "string"}
    return Annotated[
        str,
        Field(strict=True, min_length=min_length, max_length=MAX_TEXT),
        BeforeValidator(_bool_as_text),
        AfterValidator(_utf8),
        AfterValidator(_key if key else _text),
        WithJsonSchema({"anyOf": [text | {"minLength": min_length}, {"type": "boolean"}]}),
    ]


# A category may be empty: a JSON source keeps "" as a value of its own, and the model
# learned it as one. A key may not: an empty key names no entity.
Text = _text_or_bool(key=False)
KeyText = _text_or_bool(key=True)
MAX_FREE_TEXT = 4096  # a review or a name, not a document
FreeText = Annotated[
    str,
    Field(
        strict=True,
        max_length=MAX_FREE_TEXT,
        json_schema_extra={"pattern": TEXT_PATTERN},
    ),
    AfterValidator(_utf8),
    AfterValidator(_text),
]


def _iso_text(value: Any) -> Any:
    # pydantic would also read a number as Unix time; the schema promises ISO 8601 text.
    if not isinstance(value, str | datetime):
        raise ValueError("time must be ISO 8601 text")
    return value


_ISO_SCHEMA = {"type": "string", "format": "date-time", "pattern": "^(19|20|21)[0-9]{2}-"}
Time = Annotated[
    datetime,
    # Published, so clients (and the fuzzer) know the range: years 1900 to 2199.
    Field(json_schema_extra={"pattern": _ISO_SCHEMA["pattern"]}),
    BeforeValidator(_iso_text),
    AfterValidator(_in_range),
]


_DIGIT_FORMAT = re.compile(r"(%[YmdHMS])+")


def _time(rule: ColumnRule | None) -> Any:
    """A time read as the lake reads its column (``read_times``), so a served row holds the
    instant its training row did: a local time without an offset is in the column's zone,
    not UTC, and the data's own notation is accepted beside ISO 8601. A column read as
    plain UTC ISO 8601 keeps pydantic's parse (the hot path of most datasets)."""
    if rule is None:
        return Time
    if rule.timezone == "UTC" and rule.format is None and rule.unit is None:
        return _bounded(Time, rule)

    # Dates the data writes as numbers (20240105, "%Y%m%d") may be sent as that number.
    digits = rule.format is not None and _DIGIT_FORMAT.fullmatch(rule.format) is not None

    def read(value: Any) -> datetime:
        epoch = rule.unit is not None and isinstance(value, int | float)
        number = epoch or (digits and isinstance(value, int))
        if isinstance(value, bool) or not (isinstance(value, str | datetime) or number):
            raise ValueError(f"time must be {time_notation(rule)}")
        if isinstance(value, datetime):
            value = value.isoformat()
        stamp = read_times(pd.Series([value], dtype=object), rule).iloc[0]
        if pd.isna(stamp):
            raise ValueError(unread_time(value, rule))
        return stamp.to_pydatetime(warn=False)

    schema: dict[str, Any] = (
        {"anyOf": [_ISO_SCHEMA, {"type": "number"}]}
        if rule.unit
        else {"anyOf": [{"type": "string"}, {"type": "integer"}]}
        if digits
        else {"type": "string"}
        if rule.format
        else _ISO_SCHEMA
    )
    return _bounded(
        Annotated[
            datetime, BeforeValidator(read), AfterValidator(_in_range), WithJsonSchema(schema)
        ],
        rule,
    )


def _bounded(time: Any, rule: ColumnRule) -> Any:
    """``time`` held to the contract's bounds, as the lake holds the column's rows."""
    if rule.ge is None and rule.le is None:
        return time

    def within(value: datetime) -> datetime:
        if isinstance(rule.ge, datetime) and value < rule.ge:
            raise ValueError(f"time must be at or after {rule.ge.isoformat()}")
        if isinstance(rule.le, datetime) and value > rule.le:
            raise ValueError(f"time must be at or before {rule.le.isoformat()}")
        return value

    return Annotated[time, AfterValidator(within)]


def _number(rule: ColumnRule | None, integer: bool = False) -> Any:
    number = _plain_number(rule, integer)
    if rule is None or not rule.formatted:
        return Annotated[number, BeforeValidator(_no_text)]

    def read(value: Any) -> Any:
        """Text as the data writes it (``$1,234.50``), read as the lake reads the column."""
        if not isinstance(value, str):
            return value
        parsed = float(read_numbers(pd.Series([value], dtype=object), rule).iloc[0])
        if not math.isfinite(parsed):
            raise ValueError(f"must be {number_notation(rule)}")
        return _whole(parsed) if integer else parsed

    schema = TypeAdapter(number).json_schema()
    return Annotated[
        number,
        BeforeValidator(read),
        WithJsonSchema({"anyOf": [schema, {"type": "string", "maxLength": MAX_TEXT}]}),
    ]


def _no_text(value: Any) -> Any:
    """A number sent as text (``"46"``, as some JSON exports write them) is refused with
    what to send instead: the column's data is numbers, and the schema publishes one."""
    if not isinstance(value, str):
        return value
    said = value.strip()
    if not said:
        raise ValueError("must be a number: send null for no value, not a blank text")
    try:
        number = float(said)
    except ValueError:
        raise ValueError("must be a number") from None
    if not math.isfinite(number):
        raise ValueError("must be a finite number")
    raise ValueError(f"must be a number, not text: send {said} without quotes")


def _plain_number(rule: ColumnRule | None, integer: bool = False) -> Any:
    bounds = {"ge": rule.ge, "le": rule.le} if rule else {}
    bounds = {k: v for k, v in bounds.items() if v is not None}
    if integer:
        return Annotated[
            int,
            Field(strict=True, ge=bounds.get("ge", -INT_LIMIT), le=bounds.get("le", INT_LIMIT)),
            BeforeValidator(_whole),
        ]
    # strict: a number, never text or a bool; ints are fine (they widen to float).
    bounds = {"ge": -FLOAT_LIMIT, "le": FLOAT_LIMIT} | bounds
    number = Annotated[float, Field(strict=True, allow_inf_nan=False, **bounds)]
    if rule is not None and rule.dtype == "int":
        # The model takes it as a float, but the lake quarantines 2.5 in an int column: the
        # model never saw one, so a request sending it is refused as that row was.
        return Annotated[
            number, AfterValidator(_whole_number), Field(json_schema_extra={"multipleOf": 1})
        ]
    return number


def _whole_number(value: float) -> float:
    if not value.is_integer():
        raise ValueError("must be a whole number: its contract types the column int")
    return value


def _typed(kind: ColumnKind, rule: ColumnRule | None, free: bool = False, key: bool = False) -> Any:
    """The pydantic type of one column, from its kind and contract rule."""
    if kind == "number":
        return _number(rule)
    if kind == "integer":
        return _number(rule, integer=True)
    if kind == "time":
        return _time(rule)
    return KeyText if key else FreeText if free else Text


def _or_absent(typed: Any, rule: ColumnRule | None) -> Any:
    """``typed`` (optional), with the texts that mean no value in the column's data
    (``rule.missing``: ``?``, ``-``) read as null, as the lake reads them."""
    if rule is None or not rule.missing:
        return typed

    def read(value: Any) -> Any:
        return None if means_no_value(value, rule) else value

    published = TypeAdapter(typed).json_schema()
    options = [*published.get("anyOf", [published]), {"enum": sorted(set(rule.missing))}]
    return Annotated[typed, BeforeValidator(read), WithJsonSchema({"anyOf": options})]


def column_rules(spec: DatasetSpec) -> dict[str, ColumnRule]:
    """The contract rule behind each column a request may carry, where one is known."""
    base = spec.contracts.get(spec.base)
    rules = dict(base.columns) if base else {}
    for join in [*spec.lookups, *spec.as_of_joins]:
        source = spec.contracts.get(join.source)
        for right, out in join.columns.items():
            if source and right in source.columns:
                rules.setdefault(out, source.columns[right])
    for view in spec.feature_views:
        if isinstance(view, LatestView):
            source = spec.contracts.get(view.source)
            for right, out in view.columns.items():
                if source and right in source.columns:
                    rules.setdefault(out, source.columns[right])
        elif isinstance(view, WindowView):
            for agg in view.aggregations:
                if agg.function == "count":
                    rules.setdefault(agg.name, ColumnRule(dtype="float", ge=0))
                elif agg.function == "rate":
                    rules.setdefault(agg.name, ColumnRule(dtype="float", ge=0, le=1))
    return rules


def event_keys(spec: DatasetSpec) -> list[str]:
    """What identifies one prediction event: the entity keys and, if the spec has one, the
    event time (the prediction log is joined to labels on these)."""
    return list(dict.fromkeys([*spec.entity_keys, *filter(None, [spec.event_timestamp])]))


ColumnKind = Literal["number", "integer", "time", "text"]


def column_kinds(spec: DatasetSpec) -> dict[str, ColumnKind]:
    """How each request column is typed, and so how it reaches the model: numbers as
    float64, times as naive UTC, text as objects."""
    rules = column_rules(spec)
    by_dtype: dict[str, ColumnKind] = {
        "int": "integer",
        "float": "number",
        "datetime": "time",
        "string": "text",
    }
    # Extractor columns (if the spec declares any) say their kind where no contract does.
    extractors = getattr(spec.features, "extractors", None) or []
    declared = {
        c: {"numeric": "number", "datetime": "time"}.get(e.kind, "text")
        for e in extractors
        for c in e.columns
    }
    kinds: dict[str, ColumnKind] = {}
    for col in [*event_keys(spec), *request_keys(spec), *spec.input_columns]:
        if col == spec.event_timestamp:
            kinds[col] = "time"
        elif col in spec.features.numeric:
            kinds[col] = "number"  # a numeric feature is a float to the model
        elif col in rules:
            kinds[col] = by_dtype[rules[col].dtype]
        else:
            kinds[col] = declared.get(col, "text")  # type: ignore[assignment]
    return kinds


def lookup_keys(spec: DatasetSpec) -> list[str]:
    """Keys the lookups, as-of joins and feature views find rows by that are neither entity
    keys nor features (the caller sends them so the service can find those features)."""
    return request_keys(spec)


def free_text_columns(spec: DatasetSpec) -> set[str]:
    """Columns a text extractor reads: free text, not categories."""
    extractors = getattr(spec.features, "extractors", None) or []
    return {c for e in extractors if e.kind == "text" for c in e.columns}


def example_record(
    record_type: type[BaseModel], row: Mapping[str, Any], skip: Collection[str] = ()
) -> dict[str, Any] | None:
    """A record of ``record_type`` made of one clean row of the data: the fields a caller
    sends (not ``skip``, the inputs the service finds), as JSON writes the values the lake
    holds. Published as the API's example, so a first request from its docs page scores
    instead of failing on placeholders; None when the row makes no valid record."""
    example: dict[str, Any] = {}
    for name in record_type.model_fields:
        if name in skip or name not in row or is_null(value := row[name]):
            continue
        if isinstance(value, datetime):  # a pandas Timestamp too
            value = value.isoformat()
        elif isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and value.is_integer() and abs(value) <= INT_LIMIT:
            value = int(value)  # 16, not 16.0: a whole number reads as either kind
        example[name] = value
    try:
        record_type.model_validate(example)
    except ValidationError:
        return None
    return example


def record_model(spec: DatasetSpec, plan: ServingPlan | None = None) -> type[BaseModel]:
    """One prediction record of ``spec``: required keys and time, optional lookup keys and
    features, each documented with its serving source (``plan``, default: online lookups on).
    """
    plan = plan or ServingPlan(spec)
    rules, kinds = column_rules(spec), column_kinds(spec)
    free = free_text_columns(spec)
    found = set(plan.found)
    fields: dict[str, Any] = {}
    for key in spec.entity_keys:
        fields[key] = (
            _typed(kinds[key], rules.get(key), key=True),
            Field(description="Entity key (required)."),
        )
    if spec.event_timestamp:
        rule = rules.get(spec.event_timestamp)
        fields[spec.event_timestamp] = (
            _time(rule),
            Field(
                description="Event time (required): "
                f"{time_notation(rule or ColumnRule(dtype='datetime'))}."
            ),
        )
    users: dict[str, list[str]] = {}
    for column, source in plan.inputs.items():
        for key in source.keys:
            users.setdefault(key, []).append(column)
    for key in plan.request_keys:
        used = ", ".join(users.get(key, [])) or "feature-store features"
        fields[key] = (
            _or_absent(_typed(kinds[key], rules.get(key), key=True) | None, rules.get(key)),
            Field(default=None, description=f"Key the service finds features by ({used})."),
        )
    for col in spec.input_columns:
        if col in fields:
            continue
        source = plan.inputs[col]
        if col in found:
            note = (
                f"Found by the service ({source.note}) when absent; a value sent is used as "
                "is, and null means no value (imputed as in training)."
            )
        elif source.found:
            note = f"Send it: online lookups are off ({source.note}); imputed when absent."
        else:
            note = "Only the caller has it: imputed as in training when absent or null."
        if (rule := rules.get(col)) is not None and rule.missing:
            note += f" {', '.join(map(repr, rule.missing))}: no value, as in the data."
        fields[col] = (
            _or_absent(_typed(kinds[col], rule, col in free) | None, rule),
            Field(None, description=note),
        )
    title = "".join(part.title() for part in spec.name.split("_"))
    base = next((s for s in spec.sources if s.name == spec.base), None)
    joined = {n: p for n, p in (base.joined if base else {}).items() if n in fields}
    # The event's other columns, as the file writes them (the label, a column left out of the
    # features): a caller that sends its rows whole is not refused for them. Only a name the
    # data never had is an unknown field.
    contract = spec.contracts.get(spec.base)
    known = {*fields, *(x for p in joined.values() for x in p)}
    unused = [c for c in (contract.columns if contract else {}) if c not in known]
    sent = [c for c in plan.request_features if c not in fields or c in spec.input_columns]
    doc = (
        f"One {spec.name} event to score. Required: {', '.join(plan.required) or 'nothing'}. "
        + (f"Send to find features: {', '.join(plan.request_keys)}. " if plan.request_keys else "")
        + (f"Only the caller has: {', '.join(sent)}. " if sent else "")
        + (f"Found by the service: {', '.join(plan.found)}." if plan.found else "")
        + (
            ' A field named "parent.field" may be sent nested: {"parent": {"field": ...}}.'
            if any("." in name for name in fields)
            else ""
        )
        + "".join(f" {n!r} may be sent as its parts {p}." for n, p in joined.items())
        + (f" Accepted and not used: {_some(unused)}." if unused else "")
    )
    sources = {c: s.model_dump(include={"kind", "online", "keys"}) for c, s in plan.inputs.items()}
    return create_model(
        f"{title}Record",
        __config__=ConfigDict(
            extra="forbid",
            title=f"{title}Record",
            json_schema_extra={
                "x-mlsys-serving": {
                    "required": plan.required,
                    "request_keys": plan.request_keys,
                    "caller_only": sent,
                    "found_by_service": plan.found,
                    "not_used": unused,
                    "sources": sources,
                }
            },
        ),
        __doc__=doc,
        # Before-validators run last to first: a nested record is flattened, then read as
        # the file writes it.
        __validators__={
            "as_the_file_writes_it": model_validator(mode="before")(_as_written(joined, unused)),
            "as_the_source_holds": model_validator(mode="before")(classmethod(_flat)),
        },
        **fields,
    )


def _flat(cls: type[BaseModel], data: Any) -> Any:
    """A record that nests fields as its JSON source does (``{"customer": {"id": 7}}``),
    with the columns the lake made of them (``customer.id``). Only an object under a name
    that is no field is read so; an object or list sent for a field stays a 422, and a
    flat record is left as sent (the common case pays nothing)."""
    if not isinstance(data, dict):
        return data
    nested = {k: v for k, v in data.items() if isinstance(v, dict) and k not in cls.model_fields}
    if not nested:
        return data
    (fields,) = flat_objects(pd.DataFrame([nested])).to_dict("records")
    rest = {k: v for k, v in data.items() if k not in nested}
    if set(fields) & set(rest):  # sent both ways: which is meant is not ours to guess
        return data
    return {**rest, **fields}


def _some(names: list[str], shown: int = 10) -> str:
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def _as_written(joined: dict[str, list[str]], unused: list[str]) -> classmethod:
    """A record sent as the file writes it: a joined column in its parts (``"Booking
    Date"`` and ``"Booking Time"``) is given the column the lake joined of them, by the
    lake's function (sent both ways, or with a part missing, it is left as sent), and the
    event's columns the model does not use are dropped."""
    drop = set(unused)

    def read(cls: type[BaseModel], data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if drop.intersection(data):
            data = {k: v for k, v in data.items() if k not in drop}
        todo = {n: p for n, p in joined.items() if n not in data and all(x in data for x in p)}
        if not todo:
            return data
        parts = {x for p in todo.values() for x in p}
        frame = pd.DataFrame([{x: data[x] for x in parts}], dtype=object)
        made = joined_columns(frame, todo, "the record").iloc[0]
        rest = {k: v for k, v in data.items() if k not in parts or k in cls.model_fields}
        return rest | {n: made[n] for n in todo}

    return classmethod(read)


def batch_model(record: type[BaseModel], max_records: int) -> type[BaseModel]:
    """A batch: ``{"records": [...]}`` with 1 to ``max_records`` records."""
    return create_model(
        f"{record.__name__.removesuffix('Record')}Batch",
        __config__=ConfigDict(extra="forbid"),
        __doc__="Several records scored in one request.",
        records=(list[record], Field(min_length=1, max_length=max_records)),  # type: ignore[valid-type]
    )


class Prediction(BaseModel):
    """One scored record."""

    request_id: str = Field(description="Id of this record's prediction-log row.")
    prediction: int = Field(description="1 if the calibrated probability >= the threshold.")
    probability: float = Field(description="Calibrated probability of the positive class.")
    raw_probability: float = Field(description="The network's probability, uncalibrated.")
    confidence: float = Field(
        description="Calibrated probability of the predicted class: max(p, 1 - p)."
    )
    model_name: str
    model_version: str
    variant: str = Field(description="The alias that served it: champion or challenger.")
    imputed_inputs: int | None = Field(
        default=None,
        description="How many model inputs reached the model missing (imputed as in "
        "training); present when the service reports it (ServeConfig.report_imputed) or "
        "with ?explain=true.",
    )
    imputed: list[str] | None = Field(
        default=None, description="With ?explain=true: the inputs that were missing."
    )
    online_misses: list[str] | None = Field(
        default=None,
        description="With ?explain=true: online sources with no row for this record's key.",
    )
    feature_ages: dict[str, float] | None = Field(
        default=None,
        description="With ?explain=true: per feature view read, the age of its values at "
        "the request time in seconds (request time minus the time they are exact as of).",
    )
    stale: list[str] | None = Field(
        default=None,
        description="With ?explain=true: feature views older than their ttl (imputed).",
    )
    unseen: list[str] | None = Field(
        default=None,
        description="With ?explain=true: categorical inputs whose value the model never saw "
        "in training (or too rarely to learn), so scored as an unknown category: a value "
        'written otherwise than the data writes it ("2134" for "02134", "ny" for "NY").',
    )
    inputs: dict[str, Any] | None = Field(
        default=None, description="With ?explain=true: every model input as the model saw it."
    )


class PredictResponse(BaseModel):
    predictions: list[Prediction]


class ErrorResponse(BaseModel):
    detail: str | list[Any]
