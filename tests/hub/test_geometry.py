"""The local ENU frame (hub/geometry.py): a point as Python floats takes pyproj's point path, and
gives the same numbers as the array path, both ways; a round trip returns the point."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from shotline.hub.geometry import LocalFrame

FRAME = LocalFrame(41.7755, -72.6805, 15.0)
metres = st.floats(-30_000.0, 30_000.0, allow_nan=False)
heights = st.floats(-50.0, 500.0, allow_nan=False)


@given(st.lists(st.tuples(metres, metres, heights), min_size=1, max_size=6))
@settings(max_examples=200, deadline=None)
def test_a_point_as_floats_gives_the_array_paths_numbers_both_ways(points):
    e, n, u = (np.array(v) for v in zip(*points, strict=True))
    lat, lon, alt = FRAME.to_wgs84(e, n, u)
    for k, (ek, nk, uk) in enumerate(points):
        got = FRAME.to_wgs84(ek, nk, uk)
        assert all(type(v) is float for v in got)
        assert got == (lat[k], lon[k], alt[k])  # exactly: the same PROJ arithmetic per point
        back = FRAME.to_enu(*got)
        assert back == tuple(v[k] for v in FRAME.to_enu(lat, lon, alt))
        assert np.allclose(back, (ek, nk, uk), rtol=0.0, atol=1e-3)  # (PROJ: tens of um near the origin)


def test_scalars_of_other_types_still_convert():
    """Integers and numpy scalars take the array path (a 0-d result comes back as a float)."""
    assert FRAME.to_wgs84(0, 0) == FRAME.to_wgs84(0.0, 0.0, 0.0)
    got = FRAME.to_enu(np.float64(41.7755), np.float64(-72.6805), 15)
    assert all(type(v) is float for v in got) and np.allclose(got, 0.0, atol=1e-9)
