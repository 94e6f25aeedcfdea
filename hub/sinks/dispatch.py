"""The sink dispatcher: filter, transform, format, queue durably and deliver.

:meth:`SinkDispatcher.submit` runs in the hub's publishing path and only
writes to the store's ``sink_outbox`` table (a fraction of a millisecond). A
background thread delivers what is due, retrying with exponential backoff
and jitter; because the queue is in the store, a hub restart or a receiver
outage loses nothing (with a file store; ``":memory:"`` keeps nothing).

Per webhook, in order: lifecycle ``states``; ``geofences`` (the incident or
one of its shots inside; once an incident was sent, its later revisions
follow even if its position moves out); ``precision_m`` coarsening; the
format (JSON, CAP 1.2, GeoJSON); ``delay_s`` as the first due time. When the
message falls due and the operator has dismissed the incident meanwhile, it
is not sent.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shotline.core import messages as m
from shotline.core.timebase import now_ns

from ..config import SinkSettings, WebhookSink
from ..store import IncidentStore, OutboxItem
from . import cap, geojson, webhook
from .geofence import Geofence, coarsen_incident, incident_in_any

log = logging.getLogger(__name__)

JSON_MEDIA_TYPE = "application/json"


@dataclass
class _Target:
    cfg: WebhookSink
    fences: list[Geofence]
    secret: bytes | None


class SinkDispatcher:
    """Queues incident messages for the configured webhooks and delivers them from a worker thread."""

    def __init__(
        self,
        settings: SinkSettings,
        store: IncidentStore,
        *,
        base_dir: Path | None = None,
        clock: Callable[[], int] = now_ns,
        post: Callable[..., webhook.Outcome] = webhook.post,
        rng: random.Random | None = None,
    ) -> None:
        """Load geofences and secrets now, so that a bad file or a missing secret stops the hub at start.

        ``clock`` gives the wall time in ns for due times and backoff;
        ``post`` is :func:`webhook.post` (replaceable in tests).
        """
        self.settings = settings
        self.store = store
        self.clock = clock
        self._post = post
        self._rng = rng or random.Random()
        fences = {
            name: Geofence.from_settings(name, g.polygons, g.file, base_dir) for name, g in settings.geofences.items()
        }
        self.targets = {
            w.name: _Target(w, [fences[n] for n in w.geofences], webhook.load_secret(w.name, w.secret_env, w.secret_file))
            for w in settings.webhooks
        }
        for t in self.targets.values():
            if t.secret is None:
                log.warning("webhook %s has no secret: its receiver cannot verify the sender", t.cfg.name)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.delivered = 0
        self.failed = 0

    @property
    def enabled(self) -> bool:
        """Whether any webhook is configured."""
        return bool(self.targets)

    # -- queueing ------------------------------------------------------------

    def submit(self, inc: m.Incident, review_state: str | None = None) -> int:
        """Queue one incident message for every webhook that wants it; returns how many were queued."""
        queued = 0
        now = self.clock()
        for name, t in self.targets.items():
            w = t.cfg
            if inc.state not in w.states:
                continue
            if t.fences and not incident_in_any(inc, t.fences):
                if not self.store.outbox_has_incident(name, inc.incident_id):
                    continue
            out = coarsen_incident(inc, w.precision_m)
            body, ctype = self._format(w, out, review_state)
            key = f"{inc.incident_id}.r{inc.revision}"
            if self.store.outbox_put(
                name, key, body, ctype, now + int(w.delay_s * 1e9), incident_id=inc.incident_id, created_ns=now
            ):
                queued += 1
        if queued:
            self._wake.set()
        return queued

    def _format(self, w: WebhookSink, inc: m.Incident, review_state: str | None) -> tuple[bytes, str]:
        if w.format == "cap":
            refs = [
                (cap.cap_identifier(r), r.published_ns)
                for r in self.store.revisions(inc.incident_id)
                if r.revision < inc.revision
            ]
            return cap.incident_to_cap(inc, self.settings.cap, references=refs, review_state=review_state), cap.MEDIA_TYPE
        if w.format == "geojson":
            fc = geojson.feature_collection([(inc, review_state)], with_shots=True)
            return geojson.dumps(fc), geojson.MEDIA_TYPE
        return m.encode(inc), JSON_MEDIA_TYPE

    # -- delivery ------------------------------------------------------------

    def start(self) -> None:
        """Start the delivery thread (no-op without webhooks)."""
        if not self.enabled or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="hub-sinks", daemon=True)
        self._thread.start()

    def stop(self, drain_s: float = 2.0) -> None:
        """Deliver what is due for up to ``drain_s`` seconds, then stop; the rest stays queued."""
        if self._thread is None:
            return
        deadline = self.clock() + int(drain_s * 1e9)
        while self.clock() < deadline and self.store.outbox_due(self.clock(), limit=1):
            self._wake.set()
            self._stop.wait(0.02)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=max(drain_s, 1.0) + max((t.cfg.timeout_s for t in self.targets.values()), default=0))
        self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                n = self.deliver_due()
            except Exception:
                log.exception("sink delivery failed")
                n = 0
            if n:
                continue
            nxt = self.store.outbox_next_due_ns()
            wait_s = 1.0 if nxt is None else min(1.0, max(0.0, (nxt - self.clock()) / 1e9))
            self._wake.wait(wait_s)
            self._wake.clear()

    def deliver_due(self) -> int:
        """One pass over the messages due now; returns how many attempts were made."""
        items = self.store.outbox_due(self.clock())
        for item in items:
            if self._stop.is_set():
                break
            self._attempt(item)
        return len(items)

    def _attempt(self, item: OutboxItem) -> None:
        t = self.targets.get(item.sink)
        now = self.clock()
        if t is None:
            self.store.outbox_failed(item.id, now, f"sink {item.sink!r} is no longer configured", count_attempt=False)
            log.warning("dropped queued message %s: sink %s is no longer configured", item.idempotency_key, item.sink)
            return
        if item.incident_id is not None and self.store.review_state(item.incident_id) == "dismissed":
            self.store.outbox_failed(item.id, now, "incident dismissed by an operator before delivery", False)
            log.info("not sending %s to %s: dismissed by an operator", item.idempotency_key, item.sink)
            return
        res = self._post(
            t.cfg.url, item.body, content_type=item.content_type, idempotency_key=item.idempotency_key,
            secret=t.secret, sink=item.sink, attempt=item.attempts + 1, timeout_s=t.cfg.timeout_s,
        )
        now = self.clock()
        if res.ok:
            self.store.outbox_delivered(item.id, now)
            self.delivered += 1
            log.debug("delivered %s to %s", item.idempotency_key, item.sink)
            return
        age_s = (now - item.created_ns) / 1e9
        if not res.retry or age_s > self.settings.give_up_after_s:
            self.store.outbox_failed(item.id, now, res.error)
            self.failed += 1
            log.error("giving up on %s to %s after %d attempt(s): %s", item.idempotency_key, item.sink,
                      item.attempts + 1, res.error)
            return
        delay = self.backoff_s(item.attempts + 1)
        if res.retry_after_s is not None:
            delay = max(delay, min(res.retry_after_s, self.settings.retry_max_s))
        self.store.outbox_retry(item.id, now + int(delay * 1e9), res.error)
        log.warning("webhook %s failed for %s (%s); attempt %d, retrying in %.1f s", item.sink,
                    item.idempotency_key, res.error, item.attempts + 1, delay)

    def backoff_s(self, failures: int) -> float:
        """Delay after the ``failures``-th failed attempt, seconds: base·2^(n-1) capped, times U(0.5, 1)."""
        s = self.settings
        raw = min(s.retry_max_s, s.retry_base_s * 2.0 ** min(failures - 1, 60))
        return raw * self._rng.uniform(0.5, 1.0)
