"""Geofences (WGS84 polygons) and position coarsening for partner sinks.

Polygons follow GeoJSON (RFC 7946): vertices are ``[lon_deg, lat_deg]`` and
edges are straight lines in longitude/latitude, which is what the areas'
authors draw on a web map. Point-in-polygon and validity come from shapely
(GEOS); a polygon that crosses the antimeridian is not supported.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import msgspec
import shapely
from shapely.errors import GEOSException
from shapely.geometry import MultiPolygon, Point, Polygon, shape
from shapely.validation import explain_validity

from shotline.core import messages as m

M_PER_DEG_LAT = 111_320.0
"""Metres per degree of latitude (mean; the grid below only needs to be consistent, not exact)."""


class GeofenceError(ValueError):
    """A geofence that cannot be read or is not a valid area."""


class Geofence:
    """A named area made of one or more polygons (holes allowed in GeoJSON input)."""

    def __init__(self, name: str, polygons: Iterable[Polygon]) -> None:
        polys = list(polygons)
        if not polys:
            raise GeofenceError(f"geofence {name!r} has no polygon")
        for i, p in enumerate(polys):
            if not p.is_valid:
                reason = explain_validity(p)
                raise GeofenceError(f"geofence {name!r}: polygon {i} is not valid ({reason})")
        self.name = name
        self.area = shapely.union_all(polys)
        shapely.prepare(self.area)

    @classmethod
    def from_settings(cls, name: str, polygons: Sequence[Sequence[Sequence[float]]], file: str | None = None,
                      base_dir: Path | None = None) -> Geofence:
        """Build from config: inline ``[lon, lat]`` rings and/or a GeoJSON file (relative to ``base_dir``)."""
        polys = [Polygon([(float(v[0]), float(v[1])) for v in ring]) for ring in polygons]
        if file is not None:
            path = Path(file)
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
            polys += load_geojson_polygons(path, name)
        return cls(name, polys)

    def contains(self, lat_deg: float, lon_deg: float) -> bool:
        """Whether the point lies inside the area or on its boundary."""
        return bool(self.area.covers(Point(lon_deg, lat_deg)))


def load_geojson_polygons(path: Path, name: str = "") -> list[Polygon]:
    """Every Polygon and MultiPolygon of a GeoJSON file (geometry, Feature or FeatureCollection)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise GeofenceError(f"geofence {name!r}: cannot read {path} ({exc.strerror})") from None
    except ValueError as exc:
        raise GeofenceError(f"geofence {name!r}: {path} is not JSON ({exc})") from None
    geoms = []
    stack = [doc]
    while stack:
        obj = stack.pop()
        kind = obj.get("type") if isinstance(obj, dict) else None
        if kind == "FeatureCollection":
            stack += obj.get("features", [])
        elif kind == "Feature":
            if obj.get("geometry") is not None:
                stack.append(obj["geometry"])
        elif kind == "GeometryCollection":
            stack += obj.get("geometries", [])
        elif kind in ("Polygon", "MultiPolygon"):
            try:
                geoms.append(shape(obj))
            except (ValueError, TypeError, AttributeError, GEOSException) as exc:
                raise GeofenceError(f"geofence {name!r}: bad {kind} in {path} ({exc})") from None
    polys: list[Polygon] = []
    for g in geoms:
        polys += list(g.geoms) if isinstance(g, MultiPolygon) else [g]
    if not polys:
        raise GeofenceError(f"geofence {name!r}: {path} holds no Polygon or MultiPolygon")
    return polys


def incident_in_any(inc: m.Incident, fences: Sequence[Geofence]) -> bool:
    """Whether the incident's position or any of its shots lies in one of ``fences``."""
    points = [(inc.position.lat_deg, inc.position.lon_deg)]
    points += [(s.position.lat_deg, s.position.lon_deg) for s in inc.shots]
    return any(f.contains(lat, lon) for f in fences for lat, lon in points)


# -- precision -------------------------------------------------------------------


def snap(lat_deg: float, lon_deg: float, cell_m: float) -> tuple[float, float]:
    """Centre of the cell of a fixed global grid of ``cell_m`` metres that holds the point.

    Rows are ``cell_m`` of latitude; within a row, columns are ``cell_m`` of
    longitude at the row's centre latitude. The grid does not depend on the
    point, so repeated reports of one place reveal nothing finer than a cell.
    """
    if cell_m <= 0:
        return lat_deg, lon_deg
    dlat = cell_m / M_PER_DEG_LAT
    row = math.floor((lat_deg + 90.0) / dlat)
    lat_c = min(90.0, -90.0 + (row + 0.5) * dlat)
    dlon = min(360.0, cell_m / (M_PER_DEG_LAT * max(math.cos(math.radians(lat_c)), 1e-6)))
    col = math.floor((lon_deg + 180.0) / dlon)
    lon_c = -180.0 + (col + 0.5) * dlon
    lon_c = ((lon_c + 180.0) % 360.0) - 180.0
    return lat_c, lon_c


def coarsen_incident(inc: m.Incident, cell_m: float) -> m.Incident:
    """The incident with every position snapped to ``cell_m`` metres and uncertainties widened.

    CEP50/CEP95 grow by the largest snapping offset (half the cell's
    diagonal); the ellipse's semi-axes add the variance of a uniform error
    over the cell (cell²/12 per axis). Per-node residuals are dropped: with
    the nodes' known positions they would give the exact location back.
    """
    if cell_m <= 0:
        return inc
    grow = cell_m / math.sqrt(2.0)
    var = cell_m**2 / 12.0

    def pos(p: m.Position) -> m.Position:
        lat, lon = snap(p.lat_deg, p.lon_deg, cell_m)
        return m.Position(lat_deg=lat, lon_deg=lon, alt_m=p.alt_m)

    shots = [
        msgspec.structs.replace(
            s,
            position=pos(s.position),
            cep50_m=s.cep50_m + grow,
            cep95_m=s.cep95_m + grow,
            ellipse=m.Ellipse(
                semi_major_m=math.sqrt(s.ellipse.semi_major_m**2 + var),
                semi_minor_m=math.sqrt(s.ellipse.semi_minor_m**2 + var),
                azimuth_deg=s.ellipse.azimuth_deg,
            ),
            residuals=[],
        )
        for s in inc.shots
    ]
    return msgspec.structs.replace(inc, position=pos(inc.position), cep95_m=inc.cep95_m + grow, shots=shots)
