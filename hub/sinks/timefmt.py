"""UTC instants (integer ns since the epoch) as text for outputs."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc(t_ns: int, digits: int = 3) -> str:
    """RFC 3339 UTC with ``digits`` of fractional seconds (0, 3, 6 or 9), e.g. ``2026-07-04T21:30:05.123Z``."""
    s, frac = divmod(int(t_ns), 1_000_000_000)
    base = datetime.fromtimestamp(s, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        base += "." + f"{frac:09d}"[:digits]
    return base + "Z"


def cap_time(t_ns: int) -> str:
    """CAP 1.2 date-time: whole seconds with an explicit offset; UTC is written ``-00:00`` as CAP requires."""
    s = int(t_ns) // 1_000_000_000
    return datetime.fromtimestamp(s, UTC).strftime("%Y-%m-%dT%H:%M:%S") + "-00:00"
