"""The hub service: the pipeline wired to MQTT, with a clock tick.

Subscribes to every node topic of its site with a persistent QoS 1 session,
feeds the :class:`~shotline.hub.pipeline.HubPipeline` and publishes incident
messages (QoS 1) and its own retained status (birth and last will).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from shotline.core import messages as m
from shotline.core import topics
from shotline.core.timebase import now_ns
from shotline.core.transport import MqttTransport, OutMessage, Transport

from .config import HubConfig
from .pipeline import HubPipeline, Output

log = logging.getLogger(__name__)


def hub_status(cfg: HubConfig, state: str, provenance: m.Provenance | None = None) -> OutMessage:
    """The hub's retained status message."""
    msg = m.HubStatus(site=cfg.site, state=state, time_ns=now_ns(), provenance=provenance)  # type: ignore[arg-type]
    return OutMessage(topics.hub_status_topic(cfg.site), m.encode(msg), 1, True)


class HubService:
    """Runs a :class:`HubPipeline` against a transport until stopped."""

    def __init__(
        self,
        cfg: HubConfig,
        transport: Transport | None = None,
        *,
        tick_s: float = 0.2,
        clock: Callable[[], int] = now_ns,
        watermark: str = "wall",
    ) -> None:
        self.cfg = cfg
        self.pipeline = HubPipeline(cfg)
        self.transport = transport or MqttTransport(
            cfg.broker,
            cfg.client_id,
            will=hub_status(cfg, "offline"),
            birth=[hub_status(cfg, "online", self.pipeline.provenance)],
        )
        self.tick_s = tick_s
        self.clock = clock
        if watermark not in ("wall", "data"):
            raise ValueError("watermark must be 'wall' (live) or 'data' (replay)")
        self.watermark = watermark
        """``wall``: the clock is "now" (live). ``data``: the nodes' reported progress is (replays)."""
        self.listeners: list[Callable[[Output, int], None]] = []
        """Called with (output, published_ns) after each incident is published."""
        self.latencies_ms: list[float] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        """Subscribe and connect, then start the clock tick."""
        self.transport.subscribe(topics.node_filter(self.cfg.site), self._on_message, qos=1)
        self.transport.start(timeout_s)
        self._ticker = threading.Thread(target=self._tick_loop, name="hub-tick", daemon=True)
        self._ticker.start()

    def stop(self, close_incidents: bool = True) -> None:
        """Stop ticking; optionally close open incidents; publish offline and disconnect."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
        if close_incidents:
            with self._lock:
                self._publish(self.pipeline.finish())
        self.transport.publish(hub_status(self.cfg, "offline"))
        self.transport.stop()

    def _on_message(self, topic: str, payload: bytes) -> None:
        received = self.clock()
        with self._lock:
            self._publish(self.pipeline.handle(topic, payload, received))

    def _tick_loop(self) -> None:
        while not self._stop.wait(self.tick_s):
            with self._lock:
                now = self.clock() if self.watermark == "wall" else self.pipeline.data_watermark_ns()
                self._publish(self.pipeline.tick(now))

    def _publish(self, outputs: list[Output]) -> None:
        topic = topics.incident_topic(self.cfg.site)
        for out in outputs:
            self.transport.publish(OutMessage(topic, m.encode(out.incident), 1, False))
            published = self.clock()
            if out.caused_by_received_ns is not None:
                self.latencies_ms.append((published - out.caused_by_received_ns) / 1e6)
            for fn in self.listeners:
                try:
                    fn(out, published)
                except Exception:
                    log.exception("incident listener failed")
