"""Ingest: decode and validate every incoming payload; count and drop bad ones.

A malformed message is counted by reason and logged once per occurrence at
WARNING with its topic; it never raises into the transport. Duplicate
detections (same ``detection_id``) are dropped.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from dataclasses import dataclass

from shotline.core import messages as m
from shotline.core.topics import TopicError, parse_topic

log = logging.getLogger(__name__)

_KINDS: dict[str, type] = {
    "detection": m.Detection,
    "status": m.NodeStatus,
    "health": m.NodeHealth,
}


@dataclass(frozen=True)
class Ingested:
    """A validated message with the topic's kind."""

    kind: str
    msg: m.Detection | m.NodeStatus | m.NodeHealth


class Ingest:
    """Validates payloads against their topic; keeps counters of what was dropped and why."""

    def __init__(self, site: str, dedup_capacity: int = 200_000) -> None:
        self.site = site
        self.accepted: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._capacity = dedup_capacity

    def _drop(self, reason: str, topic: str, detail: str) -> None:
        self.dropped[reason] += 1
        log.warning("dropped message on %s (%s): %s", topic, reason, detail)

    def accept(self, topic: str, payload: bytes) -> Ingested | None:
        """Validate one message; None when it was dropped (and counted)."""
        try:
            parsed = parse_topic(topic)
        except TopicError as exc:
            self._drop("bad_topic", topic, str(exc))
            return None
        kind_type = _KINDS.get(parsed.kind)
        if kind_type is None:
            return None  # incidents, hub status and hub health: our own output, ignore
        if not payload and parsed.kind == "status":
            return None  # a cleared retained status
        try:
            msg = m.decode(payload, kind_type)
        except m.MessageError as exc:
            self._drop("malformed", topic, str(exc))
            return None
        if msg.site != parsed.site or msg.node_id != parsed.node_id:
            self._drop(
                "topic_mismatch",
                topic,
                f"payload says site={msg.site!r} node={msg.node_id!r}",
            )
            return None
        if parsed.site != self.site:
            self._drop("other_site", topic, f"hub serves site {self.site!r}")
            return None
        if isinstance(msg, m.Detection):
            if msg.detection_id in self._seen:
                self.dropped["duplicate"] += 1
                log.debug("duplicate detection %s", msg.detection_id)
                return None
            self._seen[msg.detection_id] = None
            if len(self._seen) > self._capacity:
                self._seen.popitem(last=False)
        self.accepted[parsed.kind] += 1
        return Ingested(parsed.kind, msg)
