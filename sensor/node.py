"""The sensor node: audio -> trigger + onset picker -> classifier -> outbox -> MQTT.

The node owns its retained status (birth message and last will), turns each
onset's sample index into UTC through the source's time base, runs the
classifier on each candidate (when a model is shipped), writes each detection
to the outbox before it is published (QoS 1; deleted on the broker's
acknowledgement), asks the clip store for a clip, and publishes periodic
health (QoS 0). Health is paced by audio time, not wall time, so that a
replay is deterministic.

A capture gap (the sample index jumps) ends the trigger's stream: the
detector is flushed and a new one starts at the new index, so no onset is
picked across missing audio.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shotline.core import messages as m
from shotline.core import topics
from shotline.core.config import config_hash
from shotline.core.timebase import now_ns
from shotline.core.transport import OutMessage, Transport
from shotline.core.version import package_version

from . import health as sysinfo
from .audio import AudioSource
from .clips import ClipStore, RingBuffer
from .config import SensorConfig
from .outbox import Outbox, OutboxPublisher
from .trigger import ImpulseDetector, Onset

log = logging.getLogger(__name__)

_AUTO: Any = object()


@dataclass
class NodeStats:
    """Counters of one node run."""

    n_samples: int = 0
    n_candidates: int = 0
    """Onsets found by the trigger (before the classifier)."""
    n_rejected: int = 0
    """Candidates whose gunshot score was below ``min_gunshot_score`` (counted, not published)."""
    n_onsets: int = 0
    """Detections emitted (written to the outbox)."""
    n_published: int = 0
    n_acked: int = 0
    n_clipped: int = 0
    n_segments: int = 1
    """Continuous stretches of audio (a capture gap starts a new one)."""
    n_uncertain_time: int = 0
    """Detections stamped across a clock step or a gap (marked ``unsynced``)."""
    processing_s: float = 0.0
    classifier_s: float = 0.0
    detections: list[m.Detection] = field(default_factory=list)


def _db(value: float) -> float:
    """A level in dB for the wire: rounded to 0.01 dB, digital silence (-inf) clamped to -200 dB."""
    v = float(value)
    if math.isnan(v):
        return -200.0
    return round(min(max(v, -200.0), 200.0), 2)


def _known(cls: type, **kw: Any) -> dict[str, Any]:
    """The keyword arguments ``cls`` has fields for.

    Health and clock fields the wire schema does not carry yet (capture gaps,
    fit residual) are passed only once core adds them; until then they show in
    the node's HTTP ``/health`` and its log.
    """
    names = set(cls.__struct_fields__)  # type: ignore[attr-defined]
    return {k: v for k, v in kw.items() if k in names}


def _load_classifier(cfg: SensorConfig):
    if not cfg.classifier.enabled:
        return None
    try:
        from .classifier import load_classifier  # type: ignore[import-not-found]
    except ImportError:
        log.info("no classifier module: detections carry no score")
        return None
    clf = load_classifier(cfg.classifier.model_path)
    if clf is None:
        log.info("no classifier model shipped: detections carry no score")
    return clf


class SensorNode:
    """One sensor node bound to an audio source and a transport.

    ``outbox``/``clips``/``classifier``: injected for tests; by default built
    from the configuration (``[storage] data_dir`` unset: in-memory outbox, no
    clips; ``classifier``: the model shipped in ``shotline.models``, if any).
    ``clock_monitor``: a :class:`~shotline.sensor.clock.ChronyMonitor` whose
    reading gives live detections their time quality.
    ``keep_detections``: keep every detection in :attr:`stats` (replays, tests);
    a months-long live run turns it off.
    """

    def __init__(
        self,
        cfg: SensorConfig,
        source: AudioSource,
        transport: Transport | None,
        *,
        on_detection: Callable[[m.Detection], None] | None = None,
        outbox: Outbox | None = None,
        clips: ClipStore | None | Any = _AUTO,
        classifier: Any = _AUTO,
        clock_monitor: Any = None,
        keep_detections: bool = True,
    ) -> None:
        self.cfg = cfg
        self.source = source
        self.transport = transport
        self.on_detection = on_detection
        self.keep_detections = keep_detections
        fs = source.sample_rate_hz
        self.detector = ImpulseDetector(fs, cfg.trigger_config())
        self._seg_offset = 0
        self._next_i: int | None = None
        data_dir = Path(cfg.storage.data_dir) if cfg.storage.data_dir else None
        self.outbox = outbox or Outbox(
            data_dir / "outbox.sqlite" if data_dir else None,
            max_rows=cfg.outbox.max_detections,
            synchronous=cfg.outbox.synchronous,
        )
        if clips is _AUTO:
            clips = (
                ClipStore(data_dir / "clips", fs, before_s=cfg.clips.before_s, after_s=cfg.clips.after_s,
                          max_age_s=cfg.clips.max_age_days * 86400.0, quota_bytes=int(cfg.clips.quota_mb * 1e6))
                if data_dir and cfg.clips.enabled
                else None
            )
        self.clips: ClipStore | None = clips
        self.classifier = _load_classifier(cfg) if classifier is _AUTO else classifier
        self.clock_monitor = clock_monitor
        if self.classifier is not None:
            before, after = self.classifier.window_s
            self._cls_before = int(math.ceil(before * fs))
            self._cls_after = int(math.ceil(after * fs))
        else:
            self._cls_before = self._cls_after = 0
        ring_n = max(fs, self._cls_before + self._cls_after + fs)
        if self.clips is not None:
            ring_n = max(ring_n, self.clips.ring_samples)
        self.ring = RingBuffer(ring_n)
        self._pending: list[Onset] = []
        model_sha = getattr(self.classifier, "sha256", None) or getattr(self.classifier, "model_sha256", None)
        self.provenance = m.Provenance(
            version=package_version(), config_hash=config_hash(cfg), model_sha256=model_sha
        )
        self.stats = NodeStats()
        self._lock = threading.Lock()
        self.publisher: OutboxPublisher | None = None
        self._last_quality: str | None = None
        self.last_health: dict[str, Any] = {}
        self.started_monotonic = time.monotonic()

    # -- identity and clock ------------------------------------------------
    @property
    def site(self) -> str:
        return self.cfg.node.site

    @property
    def node_id(self) -> str:
        return self.cfg.node.node_id

    @property
    def live(self) -> bool:
        return hasattr(self.source, "fit")

    def clock_state(self) -> m.ClockState:
        """Time quality, offset and PPS lock as the node knows them now."""
        q = self.cfg.node.time_quality
        if self.live:
            reading = getattr(self.clock_monitor, "reading", None)
            extra = _known(m.ClockState, fit_residual_s=self.source.fit.residual_rms_s,  # type: ignore[attr-defined]
                           n_steps=self.source.fit.n_steps)  # type: ignore[attr-defined]
            if reading is None:
                return m.ClockState(quality=q or "unsynced", **extra)
            return m.ClockState(quality=q or reading.quality, offset_s=reading.offset_s,
                                pps_locked=reading.pps_locked, **extra)
        return m.ClockState(quality=q or "replay")

    # -- messages ----------------------------------------------------------
    def status_message(self, state: str) -> OutMessage:
        """The retained status message (``online`` birth or ``offline`` will)."""
        n = self.cfg.node
        pos = (
            m.Position(lat_deg=n.lat_deg, lon_deg=n.lon_deg, alt_m=n.alt_m)
            if n.lat_deg is not None and n.lon_deg is not None
            else None
        )
        msg = m.NodeStatus(
            site=n.site,
            node_id=n.node_id,
            state=state,  # type: ignore[arg-type]
            time_ns=now_ns(),
            position=pos,
            sample_rate_hz=self.source.sample_rate_hz,
            clock=self.clock_state(),
            provenance=self.provenance,
            **_known(m.NodeStatus, clip_port=self.cfg.clips.http_port if self.clips is not None else None),
        )
        return OutMessage(topics.node_topic(n.site, n.node_id, "status"), m.encode(msg), 1, True)

    def detection_from_onset(self, onset: Onset, scores: dict[str, float] | None = None) -> m.Detection:
        """A Detection for one onset; its time comes from the sample index via the time base."""
        t_ns = self.source.timebase.to_ns(onset.i_onset)
        peak_spl = None
        if self.cfg.node.full_scale_spl_db is not None:
            peak_spl = _db(onset.peak_dbfs + self.cfg.node.full_scale_spl_db)
        quality = self.clock_state().quality
        if self.live and self.source.fit.is_uncertain(onset.i_onset):  # type: ignore[attr-defined]
            # Across a clock step or a gap the stamp may be off: say so rather
            # than let it bend a location.
            quality = "unsynced"
            self.stats.n_uncertain_time += 1
        return m.Detection(
            # Stable id: node plus onset time to the microsecond, so that a
            # re-published detection is recognised by the hub as a duplicate.
            detection_id=f"{self.node_id}-{t_ns // 1000}",
            site=self.site,
            node_id=self.node_id,
            onset_time_ns=t_ns,
            onset_sigma_s=float(onset.sigma_s),
            time_quality=quality,
            peak_dbfs=_db(onset.peak_dbfs),
            snr_db=_db(onset.snr_db),
            noise_floor_dbfs=_db(onset.noise_floor_dbfs),
            clipped=bool(onset.clipped),
            peak_db_spl=peak_spl,
            scores=scores,
            provenance=self.provenance,
        )

    def health_snapshot(self, interval_s: float, n_det: int, n_clip: int) -> dict[str, Any]:
        """Everything the node knows about its health, as a plain dict (HTTP ``/health``, log)."""
        fs = self.source.sample_rate_hz
        cap = getattr(self.source, "stats", None)
        fit = getattr(self.source, "fit", None)
        data_dir = self.cfg.storage.data_dir or "."
        clock = self.clock_state()
        return {
            "noise_floor_dbfs": (_db(self.detector.noise_floor_dbfs)
                                 if math.isfinite(self.detector.noise_floor_dbfs) else None),
            "clipping_per_min": n_clip * 60.0 / interval_s,
            "detections_per_min": n_det * 60.0 / interval_s,
            "cpu_load_pct": sysinfo.cpu_load_pct(),
            "temperature_c": sysinfo.temperature_c(),
            "disk_free_mb": sysinfo.disk_free_mb(data_dir),
            "clock": {"quality": clock.quality, "offset_s": clock.offset_s, "pps_locked": clock.pps_locked,
                      "fit_residual_s": fit.residual_rms_s if fit else None,
                      "clock_steps": fit.n_steps if fit else 0},
            "outbox_depth": self.outbox.depth,
            "outbox_evicted": self.outbox.evicted,
            "candidates": self.stats.n_candidates,
            "candidates_rejected": self.stats.n_rejected,
            "detections": self.stats.n_onsets,
            "capture_gaps": cap.n_gaps if cap else 0,
            "capture_gap_s": cap.gap_samples / fs if cap else 0.0,
            "capture_reopens": cap.n_reopens if cap else 0,
            "clips_written": self.clips.n_written if self.clips else 0,
            "uptime_s": self.stats.n_samples / fs,
        }

    def health_message(self, t_ns: int, interval_s: float, n_det: int, n_clip: int) -> OutMessage:
        h = self.health_snapshot(interval_s, n_det, n_clip)
        self.last_health = h
        msg = m.NodeHealth(
            site=self.site,
            node_id=self.node_id,
            time_ns=t_ns,
            # None while the noise floor warms up: say "unknown", not a number.
            noise_floor_dbfs=h["noise_floor_dbfs"],
            clipping_per_min=h["clipping_per_min"],
            detections_per_min=h["detections_per_min"],
            cpu_load_pct=h["cpu_load_pct"],
            temperature_c=h["temperature_c"],
            disk_free_mb=h["disk_free_mb"],
            clock=self.clock_state(),
            outbox_depth=h["outbox_depth"],
            uptime_s=h["uptime_s"],
            **_known(m.NodeHealth, **{k: h[k] for k in (
                "outbox_evicted", "candidates_rejected", "capture_gaps", "capture_gap_s")}),
        )
        return OutMessage(topics.node_topic(self.site, self.node_id, "health"), m.encode(msg), 0, False)

    # -- candidates -> detections ------------------------------------------
    def _shift(self, onsets: list[Onset]) -> list[Onset]:
        off = self._seg_offset
        if off == 0:
            return onsets
        return [dataclasses.replace(o, i_onset=o.i_onset + off, i_peak=o.i_peak + off,
                                    i_trigger=o.i_trigger + off) for o in onsets]

    def _classify(self, onset: Onset) -> dict[str, float] | None:
        if self.classifier is None:
            return None
        i0 = int(math.floor(onset.i_onset)) - self._cls_before
        window = self.ring.read(i0, int(math.floor(onset.i_onset)) + self._cls_after + 1)
        t = time.perf_counter()
        scores = self.classifier.scores(window, self.source.sample_rate_hz, float(onset.i_onset - i0))
        self.stats.classifier_s += time.perf_counter() - t
        return {str(k): float(v) for k, v in scores.items()}

    def _drain(self, final: bool = False) -> tuple[int, int]:
        """Finalise candidates whose classifier window has arrived (all, if ``final``)."""
        n_det = n_clip = 0
        keep = []
        for onset in self._pending:
            if not final and int(math.floor(onset.i_onset)) + self._cls_after + 1 > self.ring.end:
                keep.append(onset)
                continue
            self.stats.n_candidates += 1
            scores = self._classify(onset)
            if scores is not None and scores.get("gunshot", 0.0) < self.cfg.classifier.min_gunshot_score:
                self.stats.n_rejected += 1
                log.debug("candidate at sample %.1f rejected: %s", onset.i_onset, scores)
                continue
            det = self.detection_from_onset(onset, scores)
            self._emit(det, onset)
            n_det += 1
            n_clip += int(det.clipped)
        self._pending = keep
        return n_det, n_clip

    def _emit(self, det: m.Detection, onset: Onset) -> None:
        self.stats.n_onsets += 1
        self.stats.n_clipped += int(det.clipped)
        if self.keep_detections:
            self.stats.detections.append(det)
        topic = topics.node_topic(self.site, self.node_id, "detection")
        # On disk before it is published: a crash from here on loses nothing.
        if self.outbox.put(det.detection_id, topic, m.encode(det), now_ns()):
            self.stats.n_published += 1
        if self.publisher is not None:
            self.publisher.kick()
        if self.clips is not None:
            i0 = int(math.floor(onset.i_onset)) - self.clips.n_before
            self.clips.request(det.detection_id, onset.i_onset, self.source.timebase.to_ns(i0))
        if self.on_detection is not None:
            self.on_detection(det)

    def _on_acked(self, detection_id: str) -> None:
        with self._lock:
            self.stats.n_acked += 1

    def start_publisher(self) -> None:
        """Start moving the outbox to the transport (``run`` does it; idempotent)."""
        if self.transport is not None and self.publisher is None:
            self.publisher = OutboxPublisher(self.outbox, self.transport, republish_s=self.cfg.outbox.republish_s,
                                             on_acked=self._on_acked)
            self.publisher.start()
            self.publisher.kick()

    # -- running -------------------------------------------------------------
    def _new_segment(self, i0: int) -> tuple[int, int]:
        """Audio jumped to ``i0`` (a capture gap): finish the old stream, start a fresh detector."""
        self._pending.extend(self._shift(self.detector.flush()))
        n = self._drain(final=True)
        self.detector = ImpulseDetector(self.source.sample_rate_hz, self.cfg.trigger_config())
        self._seg_offset = i0
        self.stats.n_segments += 1
        return n

    def run(self) -> NodeStats:
        """Process the whole source (live: until it is stopped); return the run's counters."""
        fs = self.source.sample_rate_hz
        self.start_publisher()
        n_health = max(1, int(self.cfg.health.interval_s * fs))
        next_health: int | None = None
        det_since, clip_since = 0, 0
        for i0, block in self.source.blocks():
            t = time.perf_counter()
            if self._next_i is not None and i0 != self._next_i:
                nd, nc = self._new_segment(i0)
                det_since += nd
                clip_since += nc
            self._next_i = i0 + len(block)
            self.ring.write(i0, block)
            self._pending.extend(self._shift(self.detector.process(block)))
            nd, nc = self._drain()
            self.stats.processing_s += time.perf_counter() - t
            det_since += nd
            clip_since += nc
            if self.clips is not None:
                self.clips.poll(self.ring)
            self.stats.n_samples = self._next_i
            if next_health is None:
                next_health = i0 + n_health
            if self.stats.n_samples >= next_health:
                self._publish_health(det_since, clip_since)
                det_since, clip_since = 0, 0
                next_health += n_health
        self._pending.extend(self._shift(self.detector.flush()))
        self._drain(final=True)
        if self.clips is not None:
            self.clips.poll(self.ring, final=True)
        log.info(
            "node %s: %.1f s of audio, %d candidates, %d detections, %.0fx real time",
            self.node_id,
            self.stats.n_samples / fs,
            self.stats.n_candidates,
            self.stats.n_onsets,
            (self.stats.n_samples / fs) / max(self.stats.processing_s, 1e-9),
        )
        return self.stats

    def _publish_health(self, n_det: int, n_clip: int) -> None:
        t_ns = self.source.timebase.to_ns(self.stats.n_samples)
        msg = self.health_message(t_ns, self.cfg.health.interval_s, n_det, n_clip)
        if self.transport is None:
            return
        quality = self.clock_state().quality
        if self.transport.connected:
            if self._last_quality is not None and quality != self._last_quality:
                # The retained status carries the clock state: keep it current.
                self.transport.publish(self.status_message("online"))
            self.transport.publish(msg)
        self._last_quality = quality

    def wait_acked(self, timeout_s: float = 10.0) -> bool:
        """Wait until the broker acknowledged every detection in the outbox."""
        self.start_publisher()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.outbox.depth == 0:
                return True
            time.sleep(0.01)
        return self.outbox.depth == 0

    def close(self) -> None:
        """Stop the publisher, finish clips, close the outbox."""
        if self.publisher is not None:
            self.publisher.stop()
            self.publisher = None
        if self.clips is not None:
            self.clips.close()
        self.outbox.close()
