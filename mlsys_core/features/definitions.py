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

    A row whose offset columns are null never becomes available (a cancelled flight has no
    arrival to learn from).
    """

    offset_minutes: list[str] = Field(
        default_factory=list, description="Columns holding minutes to add (delays, air time)."
    )
    lag: timedelta = Field(default=timedelta(0), description="A fixed extra delay, e.g. taxiing.")
    at_least: timedelta | None = Field(
        default=None,
        description="Never known before timestamp + at_least: keeps an event's own outcome, "
        "and its peers' in the same scheduled hour, away from a prediction made at that hour.",
    )


class Aggregation(_Frozen):
    """One windowed feature over the rows that became available in ``[t - window, t)``.

    ``count`` counts rows whose ``column`` is not null; ``mean`` averages it; ``rate`` is the
    share of those rows with ``column > threshold``. An empty window gives count 0 and nulls.
    """

    name: str = Field(pattern=_NAME)
    function: Literal["count", "mean", "rate"]
    column: str
    window: timedelta
    threshold: float | None = None

    @model_validator(mode="after")
    def _check(self) -> Aggregation:
        if self.window <= timedelta(0):
            raise ValueError(f"{self.name}: the window must be positive")
        if (self.function == "rate") != (self.threshold is not None):
            raise ValueError(f"{self.name}: a threshold is needed by 'rate' and only by it")
        return self


class WindowView(_Frozen):
    """Aggregates of an entity's past events, over windows of availability time.

    Windows are measured on availability time, not event time, because "the last 7 days"
    at prediction time can only mean "what we learned in the last 7 days".
    """

    kind: Literal["window"] = "window"
    name: str = Field(pattern=_NAME)
    source: str
    entity: Entity
    timestamp: str = Field(description="The source's event-time column.")
    availability: Availability = Availability()
    aggregations: list[Aggregation] = Field(min_length=1)

    @property
    def features(self) -> list[str]:
        return [a.name for a in self.aggregations]

    @property
    def horizon(self) -> timedelta:
        """How far back from a query time a source row can still matter."""
        return max(a.window for a in self.aggregations)

    @property
    def source_columns(self) -> list[str]:
        cols = [*self.entity.join_keys, self.timestamp, *self.availability.offset_minutes]
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


def definitions_hash(views: list[WindowView | LatestView]) -> str:
    """A content hash of the definitions; the online store keys its rows by it."""
    text = "|".join(v.model_dump_json() for v in sorted(views, key=lambda v: v.name))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
