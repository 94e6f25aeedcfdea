"""Local east-north-up (ENU) frames over WGS84, through pyproj.

The hub solves every location problem in metres in a local frame and reports
WGS84 on the wire. East and north are an azimuthal equidistant projection
about the origin; up is the height above the WGS84 ellipsoid less the
origin's. So "up" follows the Earth's curvature: a constant height (the
2-D solutions' assumed source height) is a constant height above the
ellipsoid everywhere in a city, where a tangent plane falls away from the
ground quadratically (8 m at 10 km, 35 m at 21 km), and the assumed source
height far from the origin would be off by that much. Straight-line
distances between points a few kilometres apart (the paths sound takes
between a source and the nodes that hear it) come out of these coordinates
within a centimetre: 2 km paths 30 km from the origin differ from the
straight line between their ends (ECEF chord) by at most 4.7 mm.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pyproj import Transformer
from pyproj.enums import TransformDirection

_FORWARD, _INVERSE = TransformDirection.FORWARD, TransformDirection.INVERSE


@dataclass(frozen=True)
class LocalFrame:
    """An ENU frame with its origin at (lat_deg, lon_deg, alt_m), WGS84 (see the module docstring).

    ``to_enu`` and ``to_wgs84`` convert arrays or scalars; east, north and up
    are metres, latitude and longitude degrees, altitude metres above the
    WGS84 ellipsoid.
    """

    lat_deg: float
    lon_deg: float
    alt_m: float = 0.0
    _tr: Transformer = field(init=False, repr=False, compare=False)
    """One pipeline both ways: WGS84 -> ENU forward, ENU -> WGS84 with direction="INVERSE"."""

    def __post_init__(self) -> None:
        pipeline = (
            "+proj=pipeline +step +proj=axisswap +order=2,1 +step +proj=unitconvert "
            "+xy_in=deg +xy_out=rad "
            f"+step +proj=aeqd +ellps=WGS84 +lat_0={self.lat_deg!r} +lon_0={self.lon_deg!r} "
            f"+step +proj=affine +zoff={-self.alt_m!r}"
        )
        object.__setattr__(self, "_tr", Transformer.from_pipeline(pipeline))

    def to_enu(self, lat_deg, lon_deg, alt_m=0.0):
        """WGS84 degrees/metres -> (east_m, north_m, up_m)."""
        return self._transform(lat_deg, lon_deg, alt_m, _FORWARD)

    def to_wgs84(self, east_m, north_m, up_m=0.0):
        """(east_m, north_m, up_m) -> (lat_deg, lon_deg, alt_m) on WGS84."""
        return self._transform(east_m, north_m, up_m, _INVERSE)

    def _transform(self, a, b, c, direction: TransformDirection):
        """(a, b, c) through the pipeline: three Python floats give a tuple of floats; arrays or other
        scalars (broadcast together) give arrays, 0-d ones as floats."""
        if type(a) is float and type(b) is float and type(c) is float:
            # One point as Python floats: pyproj's point path, the same numbers as through arrays (PROJ
            # transforms each point alike) at a third of the cost (the hub renders positions a few at a
            # time: 3 points one by one 11 against 30 us as arrays warm, 92 against 240 us with the
            # caches cold).
            return self._tr.transform(a, b, c, direction=direction)
        a, b, c = np.broadcast_arrays(*(np.asarray(v, float) for v in (a, b, c)))
        x, y, z = self._tr.transform(a, b, c, direction=direction)
        return _out(x), _out(y), _out(z)

    @classmethod
    def centred_on(cls, lat_deg, lon_deg, alt_m=None) -> LocalFrame:
        """A frame centred on the mean of the given WGS84 positions (degrees, metres)."""
        lat = float(np.mean(lat_deg))
        lon = float(np.mean(lon_deg))
        alt = 0.0 if alt_m is None else float(np.mean(alt_m))
        return cls(lat, lon, alt)


def _out(v):
    a = np.asarray(v, dtype=float)
    return float(a) if a.ndim == 0 else a
