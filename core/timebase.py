"""Time base: sample index -> UTC nanoseconds.

An onset's time comes from its sample index, never from the wall clock at the
moment of processing. Times are integer nanoseconds since the Unix epoch, UTC.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction

NS_PER_S = 1_000_000_000


def now_ns() -> int:
    """Wall-clock UTC now in integer nanoseconds (for message stamps, never for onsets)."""
    return time.time_ns()


def seconds_to_ns(t_s: float) -> int:
    """Float seconds -> integer nanoseconds, rounded to nearest."""
    return int(round(t_s * NS_PER_S))


def ns_to_iso(t_ns: int) -> str:
    """Integer ns since epoch -> ISO 8601 UTC with microseconds, e.g. ``2026-11-21T23:17:47.123456Z``."""
    import datetime as _dt

    secs, rem = divmod(int(t_ns), NS_PER_S)
    dt = _dt.datetime.fromtimestamp(secs, tz=_dt.UTC).replace(microsecond=rem // 1000)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LinearTimebase:
    """UTC of sample ``i`` is ``t_ref_ns + (i - i_ref) / rate_hz`` seconds.

    ``rate_hz`` is the effective sample rate against UTC (the nominal rate
    corrected for crystal drift). For replay of a recording it is the nominal
    rate and the reference is the first sample's stamped time.
    """

    t_ref_ns: int
    rate_hz: float
    i_ref: int = 0

    def to_ns(self, i_sample: float) -> int:
        """UTC nanoseconds of a (possibly fractional) sample index."""
        # Exact rational arithmetic: float products lose nanoseconds after
        # ~1e11 samples (months of audio), and this runs once per onset.
        di = Fraction(i_sample) - self.i_ref
        return self.t_ref_ns + round(di * NS_PER_S / Fraction(self.rate_hz))

    def to_index(self, t_ns: int) -> float:
        """Fractional sample index of a UTC time in nanoseconds."""
        return self.i_ref + (t_ns - self.t_ref_ns) * self.rate_hz / NS_PER_S
