"""The hub pipeline without I/O: ingest -> registry -> association -> incidents.

:class:`HubPipeline` takes raw MQTT (topic, payload) pairs and returns the
incident messages to publish. It has no threads and no transport, so the
service, in-process replay and the tests all drive the very same code.
The *watermark* passed to :meth:`HubPipeline.tick` is "now" in UTC ns: the
wall clock for a live hub, the data's own time for a replay.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from shotline.core import messages as m
from shotline.core.config import config_hash
from shotline.core.timebase import now_ns
from shotline.core.version import package_version

from .associate import Associator
from .config import HubConfig
from .geometry import LocalFrame
from .incidents import IncidentBuilder
from .ingest import Ingest
from .registry import NodeRegistry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Output:
    """An incident message to publish and the receive time (ns) of the detection that caused it."""

    incident: m.Incident
    caused_by_received_ns: int | None = None


@dataclass
class PipelineStats:
    """Counters for health and the demo summary."""

    detections: int = 0
    held_unknown_node: int = 0
    dropped_unknown_node: int = 0
    shots: int = 0
    late: int = 0
    """Detections older than the wait window when they arrived (still offered to known shots)."""
    incidents_published: int = 0


class HubPipeline:
    """The hub's processing, driven message by message."""

    #: Joins of detections to existing shots are re-located and published at most this often
    #: (seconds of receive time) between ticks: one update per batch, not one per detection.
    UPDATE_INTERVAL_S = 0.1
    #: How often (s of watermark) the node registry re-checks timing residuals for bad clocks/positions.
    TIMING_CHECK_S = 10.0

    def __init__(self, cfg: HubConfig, frame: LocalFrame | None = None) -> None:
        """``frame``: the hub's local ENU frame; default centred on the first node position learnt.

        Give one (a synthetic origin will do) to feed node positions in local
        metres with :meth:`set_node_enu`, e.g. for surveys in a local Cartesian frame.
        """
        self.cfg = cfg
        overrides = {
            k: m.Position(lat_deg=v.lat_deg, lon_deg=v.lon_deg, alt_m=v.alt_m) for k, v in cfg.nodes.items()
        }
        self.registry = NodeRegistry(frame=frame, overrides=overrides, settings=cfg.node_quality)
        self.ingest = Ingest(cfg.site)
        self.assoc = Associator(cfg, self.registry)
        self.provenance = m.Provenance(version=package_version(), config_hash=config_hash(cfg))
        self.incidents = IncidentBuilder(cfg, self.assoc, self.provenance)
        self.stats = PipelineStats()
        self._held: dict[str, list[tuple[m.Detection, int]]] = defaultdict(list)
        self._progress_ns: dict[str, int] = {}
        self.on_accepted: Callable[[m.Detection, int], None] | None = None
        """Called with (detection, received_ns) for every validated, de-duplicated detection
        (the service records them in the store)."""
        self._last_flush_ns = 0
        self._last_timing_check_ns = 0
        self._clock_ns = 0
        """The hub's clock at its latest tick (ns: the wall clock live, the nodes' progress in a replay), in
        which the refinements' interval counts (``incidents.refine_interval_s``): not a detection's own
        time, which a node with a wrong clock could put far ahead."""

    def set_node_enu(self, node_id: str, enu_m) -> None:
        """Give a node's surveyed position in the hub's local ENU frame (metres); needs ``frame``."""
        self.registry.set_enu(node_id, enu_m)
        self.registry.nodes[node_id].state = "online"

    def set_weather(self, temperature_c: float | None = None, wind_enu_mps=None) -> None:
        """A weather input: air temperature (°C, sets the speed of sound unless config fixes it) and
        uniform wind (east, north) m/s, used by every later solution."""
        self.assoc.set_weather(temperature_c, wind_enu_mps)

    def handle(self, topic: str, payload: bytes, received_ns: int | None = None) -> list[Output]:
        """Process one raw message; return the incident messages it caused."""
        received_ns = now_ns() if received_ns is None else received_ns
        got = self.ingest.accept(topic, payload)
        if got is None:
            return []
        if got.kind == "status":
            if self.registry.update_status(got.msg, received_ns):  # type: ignore[arg-type]
                return self._release_held(got.msg.node_id)
            return []
        if got.kind == "health":
            self.registry.update_health(got.msg, received_ns)  # type: ignore[arg-type]
            self._advance(got.msg.node_id, got.msg.time_ns)
            return []
        if self.on_accepted is not None:
            self.on_accepted(got.msg, received_ns)  # type: ignore[arg-type]
        return self.on_detection(got.msg, received_ns)  # type: ignore[arg-type]

    def on_detection(self, det: m.Detection, received_ns: int) -> list[Output]:
        """Associate one validated detection."""
        self.stats.detections += 1
        self.registry.saw_detection(det.node_id, received_ns)
        self._advance(det.node_id, det.onset_time_ns)
        if self.registry.enu(det.node_id) is None:
            # Held until the node's status (with its position) arrives.
            self._held[det.node_id].append((det, received_ns))
            self.stats.held_unknown_node += 1
            return []
        a = self.assoc
        if a.t_ref_ns is not None and math.isfinite(a.watermark_s) and (
            (det.onset_time_ns - a.t_ref_ns) / 1e9 < a.watermark_s - a.horizon_s()
        ):
            self.stats.late += 1
            log.debug("late detection %s: older than the wait window", det.detection_id)
        shots = self.assoc.add(det, received_ns)
        if received_ns - self._last_flush_ns >= self.UPDATE_INTERVAL_S * 1e9:
            shots += self.assoc.flush()
            self._last_flush_ns = received_ns
        return self._publish(shots, received_ns)

    def _publish(self, shots, received_ns: int | None, at_once: bool = False) -> list[Output]:
        """The message of each incident that the shots created or refined touched, once each (a
        shot listed twice counts once); an incident only refined waits for ``incidents.refine_interval_s``
        unless ``at_once``."""
        if not shots:
            return []  # most detections and ticks change no shot
        unique = list({shot.shot_id: shot for shot in shots}.values())
        for shot in unique:
            if not shot.published:
                shot.published = True
                self.stats.shots += 1
        out = [Output(msg, received_ns) for msg in self.incidents.on_shots(unique, None if at_once else self._clock_ns)]
        self.stats.incidents_published += len(out)
        return out

    def _record_residuals(self, everything: bool = False) -> None:
        """Give the node registry the timing residuals of the shots that can no longer change (once
        each, from their final solution: a shot is re-located several times while its picks arrive)."""
        for shot, nearby in self.assoc.take_final(everything):
            self.registry.add_shot_residuals(shot, nearby)

    def _advance(self, node_id: str, t_ns: int) -> None:
        if t_ns > self._progress_ns.get(node_id, 0):
            self._progress_ns[node_id] = t_ns

    def data_watermark_ns(self) -> int:
        """Event-time "now" for replays: the least advanced online node's latest time (ns).

        A node's progress is the latest onset or health time it reported; a
        replay can be faster than real time and out of order across nodes, so
        nothing older than the slowest node's progress can still arrive.
        Offline nodes no longer hold the watermark back; 0 until every online
        node has reported something.
        """
        online = [k for k, v in self.registry.nodes.items() if v.state == "online"]
        if not online:
            return max(self._progress_ns.values(), default=0)
        return min(self._progress_ns.get(k, 0) for k in online)

    def _release_held(self, node_id: str) -> list[Output]:
        out = []
        for det, rec in sorted(self._held.pop(node_id, []), key=lambda x: x[0].onset_time_ns):
            self.stats.held_unknown_node -= 1
            self.stats.detections -= 1  # counted again by on_detection
            out += self.on_detection(det, rec)
        # A batch released at once: publish its joins now rather than at the next tick (or after the
        # refinements' interval: the node's picks were held back until now).
        return out + self._publish(self.assoc.flush(), None, at_once=True)

    def tick(self, watermark_ns: int) -> list[Output]:
        """Advance time: expire stale picks, drop long-held detections, close quiet incidents."""
        hold_ns = int(self.cfg.unknown_node_hold_s * 1e9)
        for node_id in list(self._held):
            keep = [(d, r) for d, r in self._held[node_id] if watermark_ns - d.onset_time_ns <= hold_ns]
            dropped = len(self._held[node_id]) - len(keep)
            if dropped:
                self.stats.dropped_unknown_node += dropped
                self.stats.held_unknown_node -= dropped
                log.warning(
                    "dropped %d detection(s) from node %s: no status with a position within %.0f s",
                    dropped, node_id, self.cfg.unknown_node_hold_s,
                )
            if keep:
                self._held[node_id] = keep
            else:
                del self._held[node_id]
        self._clock_ns = max(self._clock_ns, watermark_ns)
        out = self._publish(self.assoc.retry(watermark_ns) + self.assoc.flush(), None)
        refined = [Output(msg) for msg in self.incidents.refinements_due(self._clock_ns)]
        self.stats.incidents_published += len(refined)
        out += refined
        if watermark_ns - self._last_timing_check_ns >= self.TIMING_CHECK_S * 1e9:
            self._last_timing_check_ns = watermark_ns
            self.registry.check_timing(self.assoc.c, self.cfg.location.timing_sigma_s)
        self.assoc.expire(watermark_ns)
        self._record_residuals()
        closed = [Output(i) for i in self.incidents.close_due(watermark_ns)]
        self.stats.incidents_published += len(closed)
        return out + closed

    def review(self, incident_id: str, review: m.Review) -> list[Output]:
        """Publish an operator's review as the incident's next revision (empty if the incident is not held)."""
        msg = self.incidents.on_review(incident_id, review)
        if msg is None:
            return []
        self.stats.incidents_published += 1
        return [Output(msg)]

    def finish(self) -> list[Output]:
        """Close everything (end of a replay or shutdown)."""
        out = self._publish(self.assoc.retry(None) + self.assoc.flush(), None)
        self._record_residuals(everything=True)
        closed = [Output(i) for i in self.incidents.close_all()]
        self.stats.incidents_published += len(closed)
        return out + closed
