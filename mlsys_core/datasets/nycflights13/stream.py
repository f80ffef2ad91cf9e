"""The flights as they happen: each flight row arrives as three events, and keeps every
window view of ``views.py`` fresh through the stream job.

- ``scheduled``, when its scheduled hour begins (``time_hour``; a schedule is public long
  before, this is the latest a producer may send it): the schedule columns;
- ``departed``, at the actual departure (scheduled departure + departure delay): the
  schedule and the departure delay; a cancelled flight never sends it;
- ``arrived``, when the wheels touch down (departure + air time): everything, the arrival
  delay included; a diverted flight never sends it.

Each declared time of a view is at or after the event that reveals it (a departure delay
is known from the departure on, an arrival delay an hour after touchdown, a flight waits
from its scheduled departure until it departs), which is what lets the stream agree with
the offline store (see ``mlsys_core/stream/features.py``).

``origin_delay_job`` is a windowed aggregation (the other stream engine, ``engine.py``)
over the departure events: departures and the share delayed per origin, hour by hour.
"""

from __future__ import annotations

from datetime import timedelta

from mlsys_core.datasets.nycflights13.views import DEPARTED, flight_views
from mlsys_core.spec.definitions import Availability, EventKind, EventStream, WindowView
from mlsys_core.stream.job import Aggregate, DeriveOp, FilterOp, JoinOp, StreamJob, Window

# The flights contract's unique key: one row per scheduled flight.
FLIGHT_KEY = ["year", "month", "day", "carrier", "flight", "origin", "sched_dep_time"]
SCHEDULE = [
    *FLIGHT_KEY,
    "dest",
    "tailnum",
    "sched_arr_time",
    "hour",
    "minute",
    "distance",
    "time_hour",
]
DEPARTURE = [*SCHEDULE, "dep_time", "dep_delay"]
ARRIVAL = [*DEPARTURE, "arr_time", "arr_delay", "air_time"]
LANDED = Availability(offset_minutes=["minute", "dep_delay", "air_time"])


def flight_stream() -> EventStream:
    """The flights event stream, feeding every window view of the flights spec."""
    return EventStream(
        name="flights",
        source="flights",
        key=FLIGHT_KEY,
        timestamp="time_hour",
        events=[
            EventKind(name="scheduled", at=Availability(), columns=SCHEDULE),
            EventKind(name="departed", at=DEPARTED, columns=DEPARTURE),
            EventKind(name="arrived", at=LANDED, columns=ARRIVAL),
        ],
        views=[v.name for v in flight_views() if isinstance(v, WindowView)],
        allowed_lateness=timedelta(minutes=10),
        # The longest delay in 2013 is under a day; a row not departed two days after its
        # scheduled hour (cancelled) is forgotten.
        retention=timedelta(days=2),
    )


def origin_delay_job() -> StreamJob:
    """Per origin airport: departures and the share delayed over the last 60 minutes,
    every 15 minutes, with the visibility at departure joined as of event time. It reads
    the ``departed`` events of :func:`flight_stream` (its event time is the departure)."""
    stream = flight_stream()
    return StreamJob(
        name="origin_departures_60m",
        event_time=stream.time_column,
        group_by=["origin"],
        operators=[
            FilterOp(column=stream.kind_column, op="eq", value="departed"),
            FilterOp(column="dep_delay", op="notnull"),
            DeriveOp(name="delayed", column="dep_delay", op="gt", value=15),
            JoinOp(
                table="weather",
                on={"origin": "origin"},
                columns={"visib": "visib"},
                time_column="time_hour",
                tolerance=timedelta(hours=2),
            ),
        ],
        window=Window(size=timedelta(minutes=60), slide=timedelta(minutes=15)),
        aggregates=[
            Aggregate(name="departures", fn="count"),
            Aggregate(name="delayed_share", fn="mean", column="delayed"),
            Aggregate(name="mean_dep_delay", fn="mean", column="dep_delay"),
            Aggregate(name="mean_visib", fn="mean", column="visib"),
        ],
    )
