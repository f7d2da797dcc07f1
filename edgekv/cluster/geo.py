"""Great-circle distance between region locations (the routing fallback to RTT)."""

from __future__ import annotations

import math

EARTH_RADIUS_KM = 6371.0
# Light in fibre covers ~200 km per ms; real paths are longer than the great circle.
FIBRE_KM_PER_MS = 200.0
ROUTE_FACTOR = 1.4


def great_circle_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Haversine distance in km between two (lat, lon) points in degrees."""
    lat1, lon1 = map(math.radians, a)
    lat2, lon2 = map(math.radians, b)
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def one_way_delay_ms(a: tuple[float, float], b: tuple[float, float]) -> float:
    """A realistic one-way network delay for the distance (Frankfurt-Virginia ~45 ms)."""
    return great_circle_km(a, b) * ROUTE_FACTOR / FIBRE_KM_PER_MS
