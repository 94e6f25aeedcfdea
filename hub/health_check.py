"""``shotline-hub health``: read a running hub's health from the broker, for a technician or a monitor.

The hub publishes its health on ``shotline/v1/<site>/hub/health`` every ``health_interval_s`` and its
availability, retained, on ``hub/status`` (docs/mqtt.md). This connects with a throw-away clean
session (nothing is queued for it afterwards), waits for the next health message, prints it in a few
lines (or as JSON) and says with its exit code whether the hub keeps up, as monitoring plugins do:

* 0: the hub is online and keeps up;
* 1: it is online but busier than its warning fraction (``busy_warn_fraction``), a sink delivery has
  been retrying for over ``sinks.retry_warn_s`` (5 minutes), or more than ``LATE_WARN_SHARE`` (1 %) of
  the detections since it started came later than its wait window;
* 2: no health message within the timeout, or the hub's retained status says it is offline.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

from shotline.core import messages as m
from shotline.core import topics
from shotline.core.config import BrokerSettings
from shotline.core.timebase import ns_to_iso
from shotline.core.transport import MqttTransport

OK, WARNING, CRITICAL = 0, 1, 2


@dataclass
class HealthReading:
    """What the broker said about one hub: its latest health (None if none came) and retained status."""

    health: m.HubHealth | None = None
    status: m.HubStatus | None = None
    malformed: str | None = None
    """The error of a health or status payload that did not decode (reported, not fatal)."""


def read_health(broker: BrokerSettings, site: str, timeout_s: float) -> HealthReading:
    """Subscribe to the site's ``hub/status`` and ``hub/health`` and wait up to ``timeout_s`` seconds for a health
    message (the retained status arrives at once). Raises :class:`~shotline.core.transport.TransportError` when the
    broker cannot be reached."""
    got = HealthReading()
    arrived = threading.Event()
    status_topic, health_topic = topics.hub_status_topic(site), topics.hub_health_topic(site)

    def on_message(topic: str, payload: bytes) -> None:
        try:
            if topic == status_topic and payload:
                got.status = m.decode(payload, m.HubStatus)
            elif topic == health_topic:
                got.health = m.decode(payload, m.HubHealth)
                arrived.set()
        except m.MessageError as exc:
            got.malformed = f"{topic}: {exc}"

    client = MqttTransport(broker, f"shotline-hub-health-{os.getpid()}-{time.monotonic_ns() % 10**6}",
                           clean_session=True)
    client.subscribe(status_topic, on_message, qos=0)
    client.subscribe(health_topic, on_message, qos=0)
    client.start(timeout_s=min(timeout_s, 10.0))
    try:
        deadline = time.monotonic() + timeout_s
        while not arrived.wait(0.1):
            # An offline hub sends no health: its retained status says so at once.
            if (got.status is not None and got.status.state == "offline") or time.monotonic() > deadline:
                break
    finally:
        client.stop()
    return got


def verdict(reading: HealthReading) -> tuple[int, str]:
    """The exit code and the one-line reason for it."""
    h, st = reading.health, reading.status
    if st is not None and st.state == "offline" and (h is None or h.time_ns <= st.time_ns):
        return CRITICAL, f"hub offline since {ns_to_iso(st.time_ns)}"
    if h is None:
        return CRITICAL, "no health message from the hub (is it running, with this site and broker?)"
    if h.busy_fraction > h.busy_warn_fraction:
        return WARNING, (f"hub busy {100 * h.busy_fraction:.0f} % of the last {h.busy_window_s:.0f} s "
                         f"(over {100 * h.busy_warn_fraction:.0f} %): it may not keep up")
    k = h.sinks
    if k.retrying_for_s is not None and k.retrying_for_s > k.retry_warn_s:
        return WARNING, (f"{k.retrying} sink deliveries retrying, the oldest queued {_duration(k.retrying_for_s)} ago "
                         "(a receiver down or refusing them? the hub log names it)")
    late, taken = h.detections.late, h.messages.accepted.get("detection", 0)
    if late > LATE_WARN_SHARE * max(taken, 1):
        return WARNING, (f"{late} of {taken} detections since the hub started came later than its wait window "
                         f"(over {100 * LATE_WARN_SHARE:g} %): check the busy share and the network")
    return OK, "hub keeps up"


#: The share of the detections taken in since the hub started that may come late before the check warns (the
#: counters count from the start: a share, so that a few late ones after a network hiccup do not warn for ever).
LATE_WARN_SHARE = 0.01


def describe(h: m.HubHealth) -> list[str]:
    """A few lines for a person: how busy, how late detections come, what was taken in and dropped, the nodes."""
    up_s = (h.time_ns - h.started_ns) / 1e9 if h.started_ns else None
    version = f", version {h.provenance.version}" if h.provenance is not None else ""
    lines = [f"hub {h.site}: health of {ns_to_iso(h.time_ns)}"
             + (f", up {_duration(up_s)}" if up_s is not None and up_s >= 0 else "") + version]
    dd = h.delivery_delay
    delay = (f"detections delivered within {dd.p95_s:.2f} s (p95 of the latest {dd.n}; median {dd.p50_s:.2f} s, "
             f"max {dd.max_s:.2f} s)" if dd.p95_s is not None else "no detection yet")
    lines.append(f"busy {100 * h.busy_fraction:.1f} % of the last {h.busy_window_s:.0f} s; {delay}")
    taken = ", ".join(f"{v} {k}" for k, v in sorted(h.messages.accepted.items())) or "nothing"
    dropped = ", ".join(f"{v} {k}" for k, v in sorted(h.messages.dropped.items())) or "none"
    lines.append(f"messages taken in: {taken}; dropped: {dropped}")
    d = h.detections
    lines.append(f"detections late: {d.late}; from unknown nodes held: {d.held_unknown_node}, "
                 f"dropped: {d.dropped_unknown_node}")
    p99 = "-" if h.publish_latency_p99_ms is None else f"{h.publish_latency_p99_ms:.1f} ms"
    lines.append(f"shots: {h.shots}; incident messages: {h.incidents_published}; open incidents: "
                 f"{h.open_incidents}; publish latency p99: {p99}")
    k = h.sinks
    if k.pending or k.failed:
        lines.append(f"sink deliveries pending: {k.pending} ({k.retrying} retrying"
                     + (f", the oldest queued {_duration(k.retrying_for_s)} ago" if k.retrying_for_s is not None else "")
                     + f"); given up: {k.failed}")
    n = h.nodes
    lines.append(f"nodes online: {n.online}, offline: {n.offline}, without a status: {n.no_status}; timing "
                 f"flagged: {', '.join(n.timing_flagged) or 'none'}")
    return lines


def _duration(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"
