"""Typed feature definitions: entities, and the views whose features the stores compute.

A view says where its values come from (a source table), whom they describe (an entity's
join keys), when each source row happened and when it became *known* (its availability
time), and how rows turn into features. Availability is what makes point-in-time joins
honest: an arrival delay exists in the table from the flight's scheduled hour on, but nobody
knows it before the plane lands.

Every store reads only rows whose availability time is strictly before the entity row's
timestamp.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

_NAME = r"^[a-z][a-z0-9_]*$"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Entity(_Frozen):
    """Whom a feature describes: the columns that identify it, in source and entity rows."""

    name: str = Field(pattern=_NAME)
    join_keys: list[str] = Field(min_length=1)


class Availability(_Frozen):
    """When a source row became known: ``timestamp + sum(offset_minutes columns) + lag``,
    and not before ``timestamp + at_least``.

    With ``from_column``, the rule starts from that time column instead of the timestamp:
    a booking's outcome is learned on its arrival day, not when it was booked, so a
    guest's past cancellations count only once their stays have come. The row is still
    never known before its own timestamp.

    A row whose offset columns (or ``from_column``) are null never becomes available (a
    cancelled flight has no arrival to learn from).
    """

    from_column: str | None = Field(
        default=None,
        description="A time column the rule starts from in place of the timestamp (when "
        "the outcome is learned); None: the timestamp.",
    )
    offset_minutes: list[str] = Field(
        default_factory=list, description="Columns holding minutes to add (delays, air time)."
    )
    lag: timedelta = Field(default=timedelta(0), description="A fixed extra delay, e.g. taxiing.")
    at_least: timedelta | None = Field(
        default=None,
        description="Never known before timestamp + at_least: keeps an event's own outcome, "
        "and its peers' in the same scheduled hour, away from a prediction made at that hour.",
    )

    @property
    def columns(self) -> list[str]:
        """The source columns the rule reads, besides the timestamp."""
        return [*([self.from_column] if self.from_column else []), *self.offset_minutes]


ARITHMETIC = ("sum", "mean", "rate")  # the functions that read their column as numbers


class Aggregation(_Frozen):
    """One windowed feature over the rows that became available in ``[t - window, t)``.

    ``count`` counts rows whose ``column`` is not null; ``sum`` adds it; ``mean`` averages
    it; ``rate`` is the share of those rows with ``column > threshold``, or with ``column``
    in the ``positive`` classes (as a label rule reads them: a guest's share of cancelled
    bookings, of a text column ``yes``/``no``); ``mean_age`` is the
    mean time, in minutes, from each of those rows' availability to ``t`` (how long they
    have been waiting, for a view of open events). An empty window gives count 0, sum 0
    (nothing was spent) and nulls.
    """

    name: str = Field(pattern=_NAME)
    function: Literal["count", "sum", "mean", "rate", "mean_age"]
    column: str
    window: timedelta
    threshold: float | None = None
    positive: list[str | float] | None = Field(
        default=None, description="For a rate: the classes that count as hits."
    )

    @model_validator(mode="after")
    def _check(self) -> Aggregation:
        if self.window <= timedelta(0):
            raise ValueError(f"{self.name}: the window must be positive")
        rules = (self.threshold is not None) + (self.positive is not None)
        if self.function == "rate" and rules != 1:
            raise ValueError(f"{self.name}: a rate needs exactly one of threshold and positive")
        if self.function != "rate" and rules:
            raise ValueError(f"{self.name}: threshold and positive are for a rate only")
        if self.positive is not None and not self.positive:
            raise ValueError(f"{self.name}: positive must name at least one class")
        return self

    @property
    def numeric(self) -> bool:
        """Whether it reads its column as numbers (a rate of classes reads any column)."""
        return self.function in ARITHMETIC and self.positive is None


class WindowView(_Frozen):
    """Aggregates of an entity's past events, over windows of availability time.

    Windows are measured on availability time, not event time, because "the last 7 days"
    at prediction time can only mean "what we learned in the last 7 days".

    With ``closes``, the view aggregates *open* events: a row counts at ``t`` only while it
    is open, from its availability time until its close time (the same kind of rule, over
    the same row). A row whose close is null has not closed (and may never), so it counts
    until it leaves the window; a row whose close is known strictly before ``t`` does not
    count. Flights scheduled in the last 4 hours that have not departed yet: availability
    is the scheduled departure, close the actual one.

    A row counts at ``t`` exactly when ``t - window <= available < t`` and not
    ``closed < t``: everything is as known strictly before ``t``. Both engines compute that
    same rule: the offline store for any (entity, t) and the stream job as of its watermark.
    """

    kind: Literal["window"] = "window"
    name: str = Field(pattern=_NAME)
    source: str
    entity: Entity
    timestamp: str = Field(description="The source's event-time column.")
    availability: Availability = Availability()
    closes: Availability | None = Field(
        default=None, description="When a row stops counting (open events); None: never."
    )
    aggregations: list[Aggregation] = Field(min_length=1)
    ttl: timedelta | None = Field(
        default=None,
        gt=timedelta(0),
        description="Serving treats a stored value older than this at request time (request "
        "time minus the time the value is exact as of) as missing (imputed, and counted); "
        "None (the default): a value never expires. Real-time views fed by a stream set it.",
    )

    @property
    def features(self) -> list[str]:
        return [a.name for a in self.aggregations]

    @property
    def horizon(self) -> timedelta:
        """How far back from a query time a source row can still matter."""
        return max(a.window for a in self.aggregations)

    @property
    def time_dependent(self) -> bool:
        """Whether a value changes with ``t`` alone, with no row entering or leaving."""
        return any(a.function == "mean_age" for a in self.aggregations)

    @property
    def source_columns(self) -> list[str]:
        cols = [*self.entity.join_keys, self.timestamp, *self.availability.columns]
        cols += self.closes.columns if self.closes else []
        return list(dict.fromkeys([*cols, *(a.column for a in self.aggregations)]))


class LatestView(_Frozen):
    """The newest available source row of an entity, if it is younger than ``ttl``.

    The age is measured from the row's event time (an observation four hours old is stale
    however late it arrived). Availability is event time plus a non-negative lag, so a row
    is never known before it happened.
    """

    kind: Literal["latest"] = "latest"
    name: str = Field(pattern=_NAME)
    source: str
    entity: Entity
    timestamp: str
    lag: timedelta = timedelta(0)
    ttl: timedelta
    columns: dict[str, str] = Field(min_length=1, description="source column -> feature name")

    @model_validator(mode="after")
    def _check(self) -> LatestView:
        if self.lag < timedelta(0):
            raise ValueError(f"{self.name}: the availability lag cannot be negative")
        if self.ttl <= self.lag:
            raise ValueError(f"{self.name}: ttl must exceed the lag, or nothing is ever fresh")
        return self

    @property
    def features(self) -> list[str]:
        return list(self.columns.values())

    @property
    def horizon(self) -> timedelta:
        return self.ttl

    @property
    def source_columns(self) -> list[str]:
        return list(dict.fromkeys([*self.entity.join_keys, self.timestamp, *self.columns]))


FeatureView = Annotated[WindowView | LatestView, Field(discriminator="kind")]


class DefinitionError(ValueError):
    """Feature definitions that contradict each other, or a request they cannot serve."""


def check_views(views: list[WindowView | LatestView]) -> None:
    """View names and feature names must be unique, so a feature name finds one view."""
    names = [v.name for v in views]
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        raise DefinitionError(f"feature views declared twice: {dupes}")
    features = [f for v in views for f in v.features]
    if dupes := sorted({f for f in features if features.count(f) > 1}):
        raise DefinitionError(f"features produced by more than one view: {dupes}")


def check_aggregated_types(
    views: list[WindowView | LatestView], types: dict[str, dict[str, str]]
) -> None:
    """A sum, mean or rate over a threshold reads numbers: over a column its source's
    contract types as text or time, it would be null on every row. An availability starts
    from a time. ``types``: source -> column -> dtype."""
    for view in views:
        typed = types.get(view.source, {})
        for agg in getattr(view, "aggregations", []):
            dtype = typed.get(agg.column)
            if agg.numeric and dtype not in (None, "int", "float"):
                raise DefinitionError(
                    f"view {view.name!r}: {agg.name} takes the {agg.function} of "
                    f"{agg.column!r}, a {dtype} column; only count, mean_age and a rate of "
                    "classes (positive=[...]) take any column"
                )
        rules = [getattr(view, "availability", None), getattr(view, "closes", None)]
        for rule in filter(None, rules):
            dtype = typed.get(rule.from_column) if rule.from_column else None
            if dtype not in (None, "datetime"):
                raise DefinitionError(
                    f"view {view.name!r}: availability starts from {rule.from_column!r}, a "
                    f"{dtype} column; from_column names a time"
                )


def views_for(
    views: list[WindowView | LatestView], feature_names: list[str]
) -> dict[str, list[str]]:
    """Which views compute the requested features: view name -> its requested features."""
    owner = {f: v.name for v in views for f in v.features}
    if unknown := [f for f in feature_names if f not in owner]:
        raise DefinitionError(f"no feature view produces {unknown}")
    out: dict[str, list[str]] = {}
    for name in dict.fromkeys(feature_names):
        out.setdefault(owner[name], []).append(name)
    return out


# Bump when the engines compute a view's values otherwise (2: a count counts text values),
# so an online store holding values of the old code is rewritten, not served.
VALUES_VERSION = "2"


def _unhashed(view: WindowView | LatestView) -> dict | None:
    """The fields left out of a view's hash: its ttl, and options added since hashes were
    first kept while they are unset, so a view that does not use them keeps its hash."""
    if not isinstance(view, WindowView):
        return None
    out: dict = {"ttl": True}
    for name in ("availability", "closes"):
        rule = getattr(view, name)
        if rule is not None and rule.from_column is None:
            out[name] = {"from_column": True}
    unset = [i for i, a in enumerate(view.aggregations) if a.positive is None]
    if unset:
        out["aggregations"] = {i: {"positive": True} for i in unset}
    return out


def definitions_hash(views: list[WindowView | LatestView]) -> str:
    """A content hash of the definitions; the online store keys its rows by it."""
    # A window view's ttl is a serving policy, not part of its values: left out, so setting
    # one neither invalidates a stored view nor makes a new feature-set version.
    text = "|".join(
        v.model_dump_json(exclude=_unhashed(v)) for v in sorted(views, key=lambda v: v.name)
    )
    text += f"|values {VALUES_VERSION}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class EventKind(_Frozen):
    """One kind of event a source row produces while it happens: when (a rule over the row,
    like an availability: ``timestamp + offsets + lag``; a row whose offsets are null never
    produces it) and the columns it carries (what is known about the row by then)."""

    name: str = Field(pattern=_NAME)
    at: Availability = Availability()
    columns: list[str] = Field(min_length=1)


class EventStream(_Frozen):
    """A source whose rows also arrive live, as events, and the window views they keep fresh.

    A row arrives as one or more events (versions of it), identified by ``key``; each
    carries the columns known about the row at its event time, and a column once known
    never changes (a later version can only fill columns still null). ``events`` declares
    what a producer sends, kind by kind: what a replay of the source table writes, and what
    a live producer must send for the stream to agree with the offline store.

    The stream job keeps each view in ``views`` exactly as the offline store computes it
    from the same rows, as of its watermark: the newest event time seen minus
    ``allowed_lateness``. An event whose time is before the watermark when it arrives is
    late: values already published did not count it. It still counts from then on, and is
    recorded with its lateness. A row older than ``retention`` (by ``timestamp``) that is
    no longer in any window is forgotten; an event for it later starts it afresh.
    """

    name: str = Field(pattern=_NAME)
    source: str
    key: list[str] = Field(min_length=1, description="Columns identifying a source row.")
    timestamp: str = Field(description="The source column the event rules start from.")
    events: list[EventKind] = Field(min_length=1)
    views: list[str] = Field(min_length=1, description="Window views of the same source.")
    allowed_lateness: timedelta = Field(default=timedelta(minutes=10), ge=timedelta(0))
    retention: timedelta = Field(default=timedelta(days=2), gt=timedelta(0))
    time_column: str = Field(default="event_time", description="Event time, in the log.")
    kind_column: str = Field(default="event", description="Event kind, in the log.")

    @model_validator(mode="after")
    def _check(self) -> EventStream:
        names = [k.name for k in self.events]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"stream {self.name!r}: event kinds declared twice: {dupes}")
        if clash := sorted({self.time_column, self.kind_column} & set(self.columns)):
            raise ValueError(f"stream {self.name!r}: {clash} name the log's own columns")
        if self.time_column == self.kind_column:
            raise ValueError(f"stream {self.name!r}: time_column and kind_column must differ")
        return self

    @property
    def columns(self) -> list[str]:
        """Every column some event carries, keys and timestamp first."""
        carried = [c for kind in self.events for c in kind.columns]
        return list(dict.fromkeys([*self.key, self.timestamp, *carried]))


def check_streams(streams: list[EventStream], views: list[WindowView | LatestView]) -> None:
    """Each stream feeds window views of its own source, with every column they read."""
    names = [s.name for s in streams]
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        raise DefinitionError(f"event streams declared twice: {dupes}")
    by_name = {v.name: v for v in views}
    for stream in streams:
        for kind in stream.events:
            needed = [stream.timestamp, *kind.at.columns]
            if missing := [c for c in needed if c not in stream.columns]:
                raise DefinitionError(
                    f"stream {stream.name!r}: event {kind.name!r} is timed by columns no "
                    f"event carries: {missing}"
                )
        for name in stream.views:
            view = by_name.get(name)
            if view is None:
                raise DefinitionError(f"stream {stream.name!r} feeds no declared view {name!r}")
            if not isinstance(view, WindowView):
                raise DefinitionError(f"stream {stream.name!r}: view {name!r} is not a window view")
            if view.source != stream.source:
                raise DefinitionError(
                    f"stream {stream.name!r} carries {stream.source!r} rows, but view "
                    f"{name!r} reads {view.source!r}"
                )
            if missing := [c for c in view.source_columns if c not in stream.columns]:
                raise DefinitionError(
                    f"stream {stream.name!r}: no event carries {missing}, which view {name!r} reads"
                )
