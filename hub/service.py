"""The hub service: the pipeline wired to MQTT, the store and the sinks, with a clock tick.

Subscribes to every node topic of its site with a persistent QoS 1 session,
feeds the :class:`~shotline.hub.pipeline.HubPipeline` and, for each incident
message it yields: stores it (with the detections its shots reference),
publishes it on the incident topic (QoS 1), then hands it to the sinks
(webhooks from a durable queue). Also publishes its own retained status
(birth and last will) and, every ``health_interval_s``, its health
(:meth:`HubService.health`: what it took in and dropped, and whether it keeps up).
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from shotline.core import messages as m
from shotline.core import topics
from shotline.core.timebase import now_ns
from shotline.core.transport import MqttTransport, OutMessage, Transport

from .config import HubConfig
from .health import DelayLog, LoadMeter
from .incidents import reviewed_revision
from .journal import MessageJournal
from .pipeline import HubPipeline, Output
from .recovery import replay, replay_since
from .sinks.dispatch import SinkDispatcher
from .store import DetectionRecorder, IncidentStore, PruneResult

log = logging.getLogger(__name__)

_REVIEW_STATE = {"confirm": "confirmed", "dismiss": "dismissed", "relabel": "relabelled"}


def hub_status(cfg: HubConfig, state: str, provenance: m.Provenance | None = None) -> OutMessage:
    """The hub's retained status message."""
    msg = m.HubStatus(site=cfg.site, state=state, time_ns=now_ns(), provenance=provenance)  # type: ignore[arg-type]
    return OutMessage(topics.hub_status_topic(cfg.site), m.encode(msg), 1, True)


def hub_health(cfg: HubConfig, msg: m.HubHealth) -> OutMessage:
    """The hub's periodic health message (QoS 0, not retained: a lost one is replaced by the next)."""
    return OutMessage(topics.hub_health_topic(cfg.site), m.encode(msg), 0, False)


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
        store: IncidentStore | None = None,
        config_dir: Path | None = None,
    ) -> None:
        """``store``: an open store to use (default: opened from ``cfg.store``);
        ``config_dir``: where relative geofence files are looked up (default: working directory)."""
        self.cfg = cfg
        for w in cfg.warnings():
            log.warning("config: %s", w)
        self.pipeline = HubPipeline(cfg)
        self.store = store if store is not None else IncidentStore(cfg.store.path, wal=cfg.store.wal)
        self._own_store = store is None
        self.recorder = DetectionRecorder(self.store, cfg.store.detections, cfg.store.detection_cache_s)
        jpath = cfg.store.journal_path()
        self.journal = MessageJournal(jpath, cfg.store.journal_keep_s, sticky=lambda t: t.endswith("/status")) \
            if jpath is not None else None
        """Every message taken in, on disk before it is handled (a file store only; :mod:`shotline.hub.recovery`); the
        nodes' statuses (their positions) are sticky: a replay has each node's latest, however old."""
        self._hold_ticks = False
        """After a restart that replayed the journal: no clock tick until the persistent session's backlog is in."""
        self._journal_failed = 0
        self._journal_failure_logged_s = -math.inf
        self._last_message_s = self._connected_s = time.monotonic()
        self.pipeline.on_accepted = self._accepted
        try:
            self.sinks = SinkDispatcher(cfg.sinks, self.store, base_dir=config_dir)
        except Exception:
            if self._own_store:
                self.store.close()
            raise
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
        self.latencies_ms: deque[float] = deque(maxlen=100_000)
        """Last detection received -> incident published, ms (the latest 100,000: a hub runs for months)."""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._retention: threading.Thread | None = None
        # Whether the hub keeps up (hub/health.py): its busy share of wall time, and how late detections reach it.
        self._started_ns = clock()
        self._load = LoadMeter(time.monotonic(), self.LOAD_WINDOW_S)
        self._delays = DelayLog()
        self._overload_logged_s = -math.inf
        self._health_logged = (time.monotonic(), 0)
        """(monotonic s, detections accepted) at the last health line (:meth:`_log_health_if_due`)."""
        self._health_sent_s = time.monotonic()
        """Monotonic s of the last health message (:meth:`_send_health_if_due`)."""

    #: After a restart, the clock ticks wait until no message came for this long (s) ...
    BACKLOG_QUIET_S = 0.5
    #: ... or at most this long (s) after connecting.
    BACKLOG_MAX_S = 10.0

    def start(self, timeout_s: float = 10.0) -> None:
        """Take up where a killed hub stopped (:meth:`recover`), subscribe and connect (then publish what the
        replay found missing from the store), then start the clock tick."""
        due: list[Output] = []
        try:
            due = self.recover()
        except Exception:
            # A journal that cannot be replayed must not keep the hub from starting: it starts afresh.
            log.exception("restart: the journal's replay failed; starting without it (open incidents may be split)")
            with self._lock:
                self.pipeline = HubPipeline(self.cfg)
                self.pipeline.on_accepted = self._accepted
                self._count_on_from_store()
                self._hold_ticks = False
        self.transport.subscribe(topics.node_filter(self.cfg.site), self._on_message, qos=1)
        self.transport.start(timeout_s)
        self._connected_s = self._last_message_s = time.monotonic()
        if due:
            with self._lock:
                self._publish(due)
        self.sinks.start()
        self._ticker = threading.Thread(target=self._tick_loop, name="hub-tick", daemon=True)
        self._ticker.start()
        self._retention = threading.Thread(target=self._retention_loop, name="hub-retention", daemon=True)
        self._retention.start()

    def stop(self, close_incidents: bool = True, drain_s: float = 2.0) -> None:
        """Stop ticking; optionally close open incidents; publish offline and disconnect;
        give the sinks up to ``drain_s`` seconds to deliver what is due (the rest stays queued);
        close the store if the service opened it."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
        if self._retention is not None:
            self._retention.join(timeout=30)  # (a batch in progress finishes: the store closes below)
        with self._lock:
            if close_incidents:
                self._publish(self.pipeline.finish())
            self._flush_detections()
        # The last health (the closing counts), then offline.
        self.transport.publish(hub_health(self.cfg, self.health_message()))
        self.transport.publish(hub_status(self.cfg, "offline"))
        # The closing messages are QoS 1: let the broker acknowledge them
        # before disconnecting, or they die in the client's queue.
        if not self.transport.flush(5.0):
            log.warning("hub stopped with incident messages not yet acknowledged by the broker")
        self.transport.stop()
        self.sinks.stop(drain_s)
        if self._own_store:
            self.store.close()
        if self.journal is not None:
            self.journal.close()

    def publish_review(self, incident_id: str, review) -> m.Incident | None:
        """Publish an operator's review (a stored :class:`~shotline.hub.store.Review`) downstream.

        The incident's next revision carries the review; when the pipeline no
        longer holds the incident (e.g. after a restart) the stored latest
        revision is re-issued with the review and revision + 1.
        """
        msg_review = m.Review(
            decision=_REVIEW_STATE[review.decision],  # type: ignore[arg-type]
            reviewer=review.reviewer,
            time_ns=review.time_ns,
            label=review.label,
            note=review.note,
        )
        with self._lock:
            outputs = self.pipeline.review(incident_id, msg_review)
            if not outputs:
                latest = self.store.latest_incident(incident_id)
                if latest is None:
                    log.warning("review of unknown incident %s not published", incident_id)
                    return None
                outputs = [Output(reviewed_revision(latest, msg_review))]
            self._publish(outputs)
        return outputs[0].incident

    #: The busy fraction's window (s), and the fraction past which the hub warns that it may not keep up
    #: (at most every ``OVERLOAD_LOG_S``).
    LOAD_WINDOW_S = 60.0
    OVERLOAD_FRACTION = 0.8
    OVERLOAD_LOG_S = 300.0
    #: A line of the hub's health in the log this often (s): where no review page runs, the log is where an
    #: operator sees it.
    HEALTH_LOG_S = 600.0

    def _on_message(self, topic: str, payload: bytes) -> None:
        received = self.clock()
        with self._lock:
            t0 = self._last_message_s = time.monotonic()
            if self.journal is not None:
                try:
                    self.journal.append(topic, payload, received)
                except OSError as exc:
                    self._journal_failed += 1
                    if t0 - self._journal_failure_logged_s >= 60.0:  # (a full disk fails every message)
                        self._journal_failure_logged_s = t0
                        log.error("journal write failed (%d message(s) so far; a restart now would lose them): %s",
                                  self._journal_failed, exc)
            self._publish(self.pipeline.handle(topic, payload, received))
            self._load.add(t0, time.monotonic())

    def _accepted(self, det: m.Detection, received_ns: int) -> None:
        """A detection passed ingest: kept for the store, and its delivery delay noted."""
        self.recorder.add(det, received_ns)
        self._delays.add(received_ns, det.onset_time_ns)

    def recover(self) -> list[Output]:
        """Replay the journal of a hub that was stopped or killed, taking its stored ids over; returns what the
        store does not hold yet, to publish (:mod:`shotline.hub.recovery`). Nothing without a journal."""
        self._count_on_from_store()
        if self.journal is None:
            return []
        now = self.clock()
        records = list(self.journal.read_since(replay_since(self.store, now, self.cfg.store.recover_s)))
        if not records:
            return []
        t = time.monotonic()
        with self._lock:
            accepted, self.pipeline.on_accepted = self.pipeline.on_accepted, self.recorder.add
            try:
                due = replay(self.pipeline, self.store, records, self.tick_s, self.watermark == "data")
            finally:
                self.pipeline.on_accepted = accepted
            self._hold_ticks = True
        log.info("restart: replayed %d journalled message(s) in %.2f s; %d incident(s) open",
                 len(records), time.monotonic() - t, len(self.pipeline.incidents.open))
        return due

    def _count_on_from_store(self) -> None:
        """Shot and incident ids count on from the store's largest: a restarted hub's counters would start
        again, and a stored id given twice would merge two shots in the store's tables."""
        shot_n, inc_n = self.store.largest_ids()
        self.pipeline.assoc._ids = itertools.count(shot_n + 1)
        self.pipeline.incidents._ids = itertools.count(inc_n + 1)

    def _backlog_in(self, now_s: float) -> bool:
        """Whether the persistent session's backlog after a restart is in (ticks may resume)."""
        if not self._hold_ticks:
            return True
        if now_s - self._last_message_s >= self.BACKLOG_QUIET_S or now_s - self._connected_s >= self.BACKLOG_MAX_S:
            self._hold_ticks = False
        return not self._hold_ticks

    def _tick_loop(self) -> None:
        while not self._stop.wait(self.tick_s):
            if self._backlog_in(time.monotonic()):
                self.tick()

    def tick(self) -> None:
        """One clock tick (the tick thread's, every ``tick_s``): decide, expire, close and publish what is due."""
        with self._lock:
            t0 = time.monotonic()
            now = self.clock() if self.watermark == "wall" else self.pipeline.data_watermark_ns()
            self._publish(self.pipeline.tick(now))
            self._flush_detections()
            t1 = time.monotonic()
            self._load.add(t0, t1)
            self._warn_if_overloaded(t1)
            self._log_health_if_due(t1)
        self._send_health_if_due(t1)

    #: How often (s) the store's retention rules run (``[store] keep_*_days``); also once as the hub starts.
    RETENTION_EVERY_S = 3600.0

    def _retention_loop(self) -> None:
        while True:
            self.prune_store()
            if self._stop.wait(self.RETENTION_EVERY_S):
                return

    def prune_store(self) -> PruneResult | None:
        """Apply the store's retention rules now (``[store] keep_*_days``; None when it keeps everything). Runs in
        its own thread, in batches, so that the hub stores and publishes meanwhile (docs/hub-store-and-sinks.md)."""
        cut = self.cfg.store.prune_before_ns(now_ns())
        if all(v is None for v in cut.values()):
            return None
        try:
            got = self.store.prune(**cut, stop=self._stop.is_set)
        except Exception:
            log.exception("store retention failed (nothing is lost: it runs again in an hour)")
            return None
        if got:
            log.info("store retention: deleted %d incident(s), %d detection(s) and %d sink deliveries past "
                     "[store] keep_*_days", got.incidents, got.detections, got.deliveries)
        return got

    def _warn_if_overloaded(self, now_s: float) -> None:
        busy = self._load.busy_fraction(now_s)
        if busy > self.OVERLOAD_FRACTION and now_s - self._overload_logged_s >= self.OVERLOAD_LOG_S:
            self._overload_logged_s = now_s
            log.warning("hub busy %.0f %% of the last %.0f s: it may not keep up (detections then queue at the "
                        "broker and arrive late; see GET /api/hub)", 100 * busy, self.LOAD_WINDOW_S)

    def _log_health_if_due(self, now_s: float) -> None:
        """Every ``HEALTH_LOG_S``: one INFO line with the detections taken in since the last one, the busy
        fraction, the delivery delay (p95) and the messages dropped and detections late so far."""
        since_s, n_before = self._health_logged
        if now_s - since_s < self.HEALTH_LOG_S:
            return
        p = self.pipeline
        n = p.ingest.accepted["detection"]
        self._health_logged = (now_s, n)
        p95 = self._delays.summary()["p95_s"]
        dropped = ", ".join(f"{v} {k}" for k, v in sorted(p.ingest.dropped.items())) or "none"
        log.info("hub health: %d detections in the last %.0f s, busy %.1f %% of the last %.0f s, delivery delay "
                 "p95 %s, dropped so far: %s, late so far: %d", n - n_before, now_s - since_s,
                 100 * self._load.busy_fraction(now_s), self.LOAD_WINDOW_S,
                 "-" if p95 is None else f"{p95:.2f} s", dropped, p.stats.late)

    def _send_health_if_due(self, now_s: float) -> None:
        """Every ``health_interval_s`` (wall time): the health message on ``hub/health`` (called by the tick
        after it let go of the lock)."""
        if now_s - self._health_sent_s < self.cfg.health_interval_s:
            return
        self._health_sent_s = now_s
        self.transport.publish(hub_health(self.cfg, self.health_message()))

    def health_message(self) -> m.HubHealth:
        """The hub's counters and whether it keeps up (hub/health.py): published on ``hub/health`` every
        ``health_interval_s`` and served by the review page on ``GET /api/hub``. The pipeline's counters are
        read under the hub's lock, the sinks' queue (a query of the store) after it."""
        with self._lock:
            msg = self._health_now()
        return msgspec.structs.replace(msg, sinks=self._sink_counts())

    def _health_now(self) -> m.HubHealth:
        """:meth:`health_message` without the sinks' queue, for a caller that holds the lock."""
        p = self.pipeline
        st = p.stats
        latencies = list(itertools.islice(reversed(self.latencies_ms), 1000))  # the latest (not a copy of all)
        return m.HubHealth(
            site=self.cfg.site,
            time_ns=self.clock(),
            started_ns=self._started_ns,
            busy_fraction=round(self._load.busy_fraction(time.monotonic()), 4),
            busy_window_s=self.LOAD_WINDOW_S,
            busy_warn_fraction=self.OVERLOAD_FRACTION,
            messages=m.HubMessageCounts(accepted=dict(p.ingest.accepted), dropped=dict(p.ingest.dropped)),
            detections=m.HubDetectionCounts(
                late=st.late, held_unknown_node=st.held_unknown_node, dropped_unknown_node=st.dropped_unknown_node
            ),
            nodes=self._node_counts(),
            delivery_delay=m.DeliveryDelay(**self._delays.summary()),
            shots=st.shots,
            incidents_published=st.incidents_published,
            open_incidents=len(p.incidents.open),
            publish_latency_p99_ms=round(float(np.percentile(latencies, 99)), 3) if latencies else None,
            provenance=p.provenance,
        )

    def _node_counts(self) -> m.HubNodeCounts:
        nodes = self.pipeline.registry.nodes
        states = Counter(info.state for info in nodes.values())
        return m.HubNodeCounts(online=states["online"], offline=states["offline"],
                               no_status=len(nodes) - states["online"] - states["offline"],
                               timing_flagged=sorted(k for k, info in nodes.items() if info.flags))

    #: How long (s) a sink delivery may keep retrying before the health checks warn (``shotline-hub health``, the
    #: review page's header): a receiver's restart takes less.
    SINK_RETRY_WARN_S = 300.0

    def _sink_counts(self) -> m.HubSinkCounts:
        if not self.sinks.enabled:
            return m.HubSinkCounts(retry_warn_s=self.SINK_RETRY_WARN_S)
        try:
            return m.HubSinkCounts(**self.store.outbox_health(now_ns()), retry_warn_s=self.SINK_RETRY_WARN_S)
        except Exception:  # a health message is no reason to stop: the store's own error is logged
            log.exception("reading the sinks' queue for the hub's health failed")
            return m.HubSinkCounts()

    def health(self) -> dict[str, Any]:
        """:meth:`health_message` as JSON-ready values (with its ``schema``)."""
        return msgspec.to_builtins(self.health_message())

    def _flush_detections(self) -> None:
        if self.cfg.store.detections == "all":
            try:
                self.recorder.flush()
            except Exception:
                log.exception("storing detections failed")

    def _publish(self, outputs: list[Output]) -> None:
        topic = topics.incident_topic(self.cfg.site)
        for out in outputs:
            # Stored first (with the detections it references) so that what was published is on disk;
            # a store failure is logged and never stops publication.
            try:
                self.recorder.flush(out.incident)
                self.store.put_incident(out.incident)
            except Exception:
                log.exception("storing incident %s failed", out.incident.incident_id)
            self.transport.publish(OutMessage(topic, m.encode(out.incident), 1, False))
            published = self.clock()
            if out.caused_by_received_ns is not None:
                self.latencies_ms.append((published - out.caused_by_received_ns) / 1e6)
            for fn in self.listeners:
                try:
                    fn(out, published)
                except Exception:
                    log.exception("incident listener failed")
            if self.sinks.enabled:
                try:
                    self.sinks.submit(out.incident)
                except Exception:
                    log.exception("queueing incident %s for the sinks failed", out.incident.incident_id)
