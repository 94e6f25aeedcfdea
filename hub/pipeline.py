"""The hub pipeline without I/O: ingest -> registry -> association -> incidents.

:class:`HubPipeline` takes raw MQTT (topic, payload) pairs and returns the
incident messages to publish. It has no threads and no transport, so the
service, in-process replay and the tests all drive the very same code.
The *watermark* passed to :meth:`HubPipeline.tick` is "now" in UTC ns: the
wall clock for a live hub, the data's own time for a replay.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field

from shotline.core import messages as m
from shotline.core.config import config_hash
from shotline.core.timebase import now_ns
from shotline.core.version import package_version

from .associate import Associator
from .config import HubConfig
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
    incidents_published: int = 0
    dropped: dict[str, int] = field(default_factory=dict)


class HubPipeline:
    """The hub's processing, driven message by message."""

    def __init__(self, cfg: HubConfig) -> None:
        self.cfg = cfg
        overrides = {
            k: m.Position(lat_deg=v.lat_deg, lon_deg=v.lon_deg, alt_m=v.alt_m) for k, v in cfg.nodes.items()
        }
        self.registry = NodeRegistry(overrides=overrides)
        self.ingest = Ingest(cfg.site)
        self.assoc = Associator(cfg, self.registry)
        self.provenance = m.Provenance(version=package_version(), config_hash=config_hash(cfg))
        self.incidents = IncidentBuilder(cfg, self.assoc, self.provenance)
        self.stats = PipelineStats()
        self._held: dict[str, list[tuple[m.Detection, int]]] = defaultdict(list)
        self._known_shots: set[str] = set()
        self._progress_ns: dict[str, int] = {}

    def handle(self, topic: str, payload: bytes, received_ns: int | None = None) -> list[Output]:
        """Process one raw message; return the incident messages it caused."""
        received_ns = now_ns() if received_ns is None else received_ns
        got = self.ingest.accept(topic, payload)
        self.stats.dropped = dict(self.ingest.dropped)
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
        out = []
        for shot in self.assoc.add(det, received_ns):
            if shot.shot_id not in self._known_shots:
                self._known_shots.add(shot.shot_id)
                self.stats.shots += 1
            out.append(Output(self.incidents.on_shot(shot), received_ns))
        self.stats.incidents_published += len(out)
        return out

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
        return out

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
        self.assoc.expire(watermark_ns)
        out = [Output(i) for i in self.incidents.close_due(watermark_ns)]
        self.stats.incidents_published += len(out)
        return out

    def finish(self) -> list[Output]:
        """Close everything (end of a replay or shutdown)."""
        out = [Output(i) for i in self.incidents.close_all()]
        self.stats.incidents_published += len(out)
        return out
