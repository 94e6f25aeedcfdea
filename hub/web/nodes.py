"""Sensor health for the review page: each node's display state and its noise-floor trend.

Reads the hub's :class:`~shotline.hub.registry.NodeRegistry` (positions,
retained status, latest health, timing flags) and keeps, per node, the
noise floor of each new health message (the registry keeps only the latest)
so that the page can draw a trend.

Display state, first that applies:

``offline``  last will / status offline, or not heard for ``offline_after_s``;
``stale``    not heard for ``stale_after_s``;
``clock``    clock unsynchronised: quality ``unsynced``/``ntp`` (cannot enter a TDOA
             solution), PPS lost on a ``pps`` node, or residuals flag a clock bias;
``clipping`` at least ``clipping_per_min`` clipped blocks per minute;
``online``   otherwise (``unknown`` before anything was heard).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from shotline.core import messages as m

from .settings import WebSettings

log = logging.getLogger(__name__)

STATES = ("online", "stale", "offline", "clock", "clipping", "unknown")


class NodeMonitor:
    """Snapshots of the registry's nodes with display states and noise-floor history."""

    def __init__(self, registry: Callable[[], Any] | Any | None, settings: WebSettings,
                 clock: Callable[[], int], history: int = 720) -> None:
        self._registry = registry
        self.settings = settings
        self.clock = clock
        self.history = history
        self._noise: dict[str, deque[tuple[int, float]]] = {}
        self._last_health_ns: dict[str, int] = {}
        self._last_states: dict[str, str] = {}
        self._lock = threading.Lock()

    def registry(self) -> Any | None:
        r = self._registry
        return r() if callable(r) else r

    def _infos(self) -> list[Any]:
        reg = self.registry()
        if reg is None:
            return []
        for _ in range(5):  # the hub thread may add a node while we copy
            try:
                return list(reg.nodes.values())
            except RuntimeError:
                continue
        return []

    def poll(self) -> list[str]:
        """Record new health messages; return ids of nodes whose display state changed."""
        changed = []
        with self._lock:
            for info in self._infos():
                h: m.NodeHealth | None = info.health
                if h is not None and h.time_ns != self._last_health_ns.get(info.node_id):
                    self._last_health_ns[info.node_id] = h.time_ns
                    if h.noise_floor_dbfs is not None:
                        dq = self._noise.setdefault(info.node_id, deque(maxlen=self.history))
                        dq.append((h.time_ns, round(h.noise_floor_dbfs, 2)))
                state, _ = self.state_of(info)
                if self._last_states.get(info.node_id) != state:
                    self._last_states[info.node_id] = state
                    changed.append(info.node_id)
        return changed

    def state_of(self, info: Any) -> tuple[str, list[str]]:
        """(display state, reasons) of one registry NodeInfo."""
        s = self.settings
        now = self.clock()
        reasons: list[str] = []
        age_s = (now - info.last_seen_ns) / 1e9 if info.last_seen_ns else None
        status: m.NodeStatus | None = info.status
        health: m.NodeHealth | None = info.health
        if status is not None and status.state == "offline":
            return "offline", ["node reported offline (last will or shutdown)"]
        if age_s is None:
            return "unknown", ["never heard"]
        if age_s >= s.offline_after_s:
            return "offline", [f"not heard for {age_s:.0f} s"]
        if age_s >= s.stale_after_s:
            return "stale", [f"not heard for {age_s:.0f} s"]
        clock = (health.clock if health is not None and health.clock is not None
                 else status.clock if status is not None else None)
        if clock is not None:
            if clock.quality in ("unsynced", "ntp"):
                reasons.append(f"clock {clock.quality}: its onsets cannot enter a TDOA solution")
            elif clock.quality == "pps" and not clock.pps_locked:
                reasons.append("clock: PPS not locked")
        if "clock" in tuple(getattr(info, "flags", ()) or ()):
            reasons.append("clock: timing residuals show a bias")
        if reasons:
            return "clock", reasons
        if health is not None and health.clipping_per_min >= s.clipping_per_min:
            return "clipping", [f"clipping {health.clipping_per_min:.1f} blocks/min"]
        return "online", []

    def snapshot(self, node_id: str | None = None) -> list[dict[str, Any]]:
        """JSON-ready description of every node (or one)."""
        out = []
        for info in self._infos():
            if node_id is not None and info.node_id != node_id:
                continue
            state, reasons = self.state_of(info)
            h: m.NodeHealth | None = info.health
            st: m.NodeStatus | None = info.status
            clock = (h.clock if h is not None and h.clock is not None else st.clock if st is not None else None)
            pos = info.position
            with self._lock:
                trend = list(self._noise.get(info.node_id, ()))
            out.append({
                "node_id": info.node_id,
                "lat_deg": pos.lat_deg if pos else None,
                "lon_deg": pos.lon_deg if pos else None,
                "alt_m": pos.alt_m if pos else None,
                "surveyed": bool(info.surveyed),
                "state": state,
                "reasons": reasons,
                "last_seen_ns": info.last_seen_ns or None,
                "n_detections": info.n_detections,
                "noise_floor_dbfs": h.noise_floor_dbfs if h else None,
                "clipping_per_min": h.clipping_per_min if h else None,
                "cpu_load_pct": h.cpu_load_pct if h else None,
                "temperature_c": h.temperature_c if h else None,
                "outbox_depth": h.outbox_depth if h else None,
                "clock_quality": clock.quality if clock else None,
                "clock_offset_s": clock.offset_s if clock else None,
                "pps_locked": clock.pps_locked if clock else None,
                "timing_flags": list(getattr(info, "flags", ()) or ()),
                "noise_trend": [[t, v] for t, v in trend],
            })
        return sorted(out, key=lambda d: d["node_id"])

    def positions(self) -> dict[str, tuple[float, float, float]]:
        """Known node positions (lat, lon, alt) by id."""
        return {i.node_id: (i.position.lat_deg, i.position.lon_deg, i.position.alt_m)
                for i in self._infos() if i.position is not None}
