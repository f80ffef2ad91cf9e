"""A stream job declared as typed config, so the Prefect UI shows it as a form.

Operators run in order on each micro-batch: ``filter`` drops rows, ``derive`` adds a
column (a comparison, e.g. ``delayed = dep_delay > 15``), ``join`` enriches events from a
lake table, as of the event's time when the table is time-varying. Then events are
windowed on event time and aggregated per key.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Comparison = Literal["eq", "ne", "gt", "ge", "lt", "le", "notnull"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FilterOp(_Frozen):
    kind: Literal["filter"] = "filter"
    column: str
    op: Comparison
    value: float | str | None = None


class DeriveOp(_Frozen):
    kind: Literal["derive"] = "derive"
    name: str
    column: str
    op: Comparison
    value: float | str | None = None


class JoinOp(_Frozen):
    """Left join with a lake table's newest clean snapshot; with ``time_column`` the
    joined row is the newest one at or before the event's time (never a later one)."""

    kind: Literal["join"] = "join"
    table: str
    on: dict[str, str] = Field(description="event column -> table column")
    columns: dict[str, str] = Field(description="table column -> output column")
    time_column: str | None = None
    tolerance: timedelta | None = None


Operator = Annotated[FilterOp | DeriveOp | JoinOp, Field(discriminator="kind")]


class Aggregate(_Frozen):
    """``count`` rows, or the ``sum``/``mean`` of a column (the mean of a boolean column is
    the share of rows where it holds)."""

    name: str
    fn: Literal["count", "sum", "mean"]
    column: str | None = None

    @model_validator(mode="after")
    def _column(self) -> Aggregate:
        if self.fn != "count" and not self.column:
            raise ValueError(f"aggregate {self.name!r}: {self.fn} needs a column")
        return self


class Window(_Frozen):
    """Tumbling when ``slide`` is None (or equals ``size``), sliding otherwise."""

    size: timedelta = Field(gt=timedelta(0))
    slide: timedelta | None = None

    @model_validator(mode="after")
    def _divides(self) -> Window:
        step = self.slide or self.size
        if step <= timedelta(0) or self.size % step:
            raise ValueError("the window size must be a whole number of slides")
        return self

    @property
    def step(self) -> timedelta:
        return self.slide or self.size


class StreamJob(_Frozen):
    """One streaming aggregation from an event log to a lake table.

    Late events: the watermark trails the newest event time seen by ``allowed_lateness``.
    An event later than the watermark when it arrives would update a window that was
    already emitted, so it is not aggregated; it is written, with its lateness, to the
    job's ``late`` table instead, where nothing is lost and a backfill can use it.
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    event_time: str
    group_by: list[str] = Field(min_length=1, description="Key columns of each window row.")
    operators: list[Operator] = Field(default_factory=list)
    window: Window
    aggregates: list[Aggregate] = Field(min_length=1)
    allowed_lateness: timedelta = Field(default=timedelta(minutes=10), ge=timedelta(0))
    max_segments: int = Field(default=100, ge=1, description="Log files per micro-batch.")
