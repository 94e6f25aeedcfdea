"""The hub's own health, for its operator: what it took in, what it dropped and why, and whether it
keeps up.

A malformed message is logged and counted, but a count that only the process holds helps no one:
:meth:`shotline.hub.service.HubService.health` gathers the ingest, pipeline and association counters
with two signs of keeping up, served on the review page's ``GET /api/hub``:

* the busy fraction (:class:`LoadMeter`): the share of wall time the hub spent handling messages and
  ticks over the last minute. The hub handles one message at a time on one core, so near 1 it cannot
  keep up: detections queue at the broker and arrive late;
* the delivery delay (:class:`DelayLog`): a detection's receipt less its onset (s) over the latest
  detections, the nodes' and the network's latency plus any backlog. A detection older than the
  wait window on arrival is counted late and can only join shots already made.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np


class LoadMeter:
    """Busy seconds per wall second over a sliding window.

    ``add(start, end)`` records one piece of work (monotonic seconds); ``busy_fraction(now)`` is the
    work that ended within the last ``window_s`` (to the second) over the window (over the time since
    the meter was made, while that is shorter). Work is summed per second of its end: a hub handling
    thousands of messages a second keeps ``window_s`` + 1 numbers, not one per message.
    """

    def __init__(self, now_s: float, window_s: float = 60.0) -> None:
        if not window_s > 0:
            raise ValueError("window_s must be positive")
        self.window_s = float(window_s)
        self._since = float(now_s)
        self._work: deque[list] = deque()
        """[second of the end (int), busy s] per second with work within the window, oldest first."""
        self._busy = 0.0

    def add(self, start_s: float, end_s: float) -> None:
        busy = max(0.0, end_s - start_s)
        second = math.floor(end_s)
        if self._work and self._work[-1][0] == second:
            self._work[-1][1] += busy
        else:
            self._work.append([second, busy])
        self._busy += busy
        self._forget(end_s)

    def busy_fraction(self, now_s: float) -> float:
        """Busy seconds per wall second (0-1 on one thread) over the window ending at ``now_s``."""
        self._forget(now_s)
        span = min(self.window_s, now_s - self._since)
        if span <= 0:
            return 0.0
        return min(1.0, self._busy / span)

    def _forget(self, now_s: float) -> None:
        work = self._work
        while work and work[0][0] < math.floor(now_s - self.window_s):
            self._busy -= work.popleft()[1]
        if not work:
            self._busy = 0.0  # (no drift from the running sum's rounding)


class DelayLog:
    """The delivery delays (s) of the latest ``size`` detections: receipt less onset."""

    def __init__(self, size: int = 4096) -> None:
        self._delays: deque[float] = deque(maxlen=size)

    def add(self, received_ns: int, onset_ns: int) -> None:
        self._delays.append((received_ns - onset_ns) / 1e9)

    def summary(self) -> dict[str, float | int | None]:
        """{"n", "p50_s", "p95_s", "max_s"} over the kept delays (None without any)."""
        n = len(self._delays)
        if not n:
            return {"n": 0, "p50_s": None, "p95_s": None, "max_s": None}
        d = np.fromiter(self._delays, dtype=float, count=n)
        p50, p95 = np.percentile(d, [50, 95])
        return {"n": n, "p50_s": _finite(p50), "p95_s": _finite(p95), "max_s": _finite(d.max())}


def _finite(v) -> float | None:
    v = float(v)
    return round(v, 6) if math.isfinite(v) else None
