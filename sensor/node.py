"""The sensor node: audio -> trigger + onset picker -> Detection -> MQTT.

The node owns its retained status (birth message and last will), turns each
onset's sample index into UTC through the source's time base, and publishes
one Detection per onset (QoS 1) plus periodic health (QoS 0). Health is
paced by audio time, not wall time, so that a replay is deterministic.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from shotline.core import messages as m
from shotline.core import topics
from shotline.core.config import config_hash
from shotline.core.timebase import now_ns
from shotline.core.transport import OutMessage, Transport
from shotline.core.version import package_version

from .audio import AudioSource
from .config import SensorConfig
from .trigger import ImpulseDetector, Onset

log = logging.getLogger(__name__)


@dataclass
class NodeStats:
    """Counters of one node run."""

    n_samples: int = 0
    n_onsets: int = 0
    n_published: int = 0
    n_acked: int = 0
    n_clipped: int = 0
    processing_s: float = 0.0
    detections: list[m.Detection] = field(default_factory=list)


def _db(value: float) -> float:
    """A level in dB for the wire: rounded to 0.01 dB, digital silence (-inf) clamped to -200 dB."""
    v = float(value)
    if math.isnan(v):
        return -200.0
    return round(min(max(v, -200.0), 200.0), 2)


class SensorNode:
    """One sensor node bound to an audio source and a transport."""

    def __init__(
        self,
        cfg: SensorConfig,
        source: AudioSource,
        transport: Transport | None,
        *,
        on_detection: Callable[[m.Detection], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.source = source
        self.transport = transport
        self.on_detection = on_detection
        self.detector = ImpulseDetector(source.sample_rate_hz, cfg.trigger_config())
        self.provenance = m.Provenance(version=package_version(), config_hash=config_hash(cfg))
        self.stats = NodeStats()
        self._lock = threading.Lock()

    # -- messages ----------------------------------------------------------
    @property
    def site(self) -> str:
        return self.cfg.node.site

    @property
    def node_id(self) -> str:
        return self.cfg.node.node_id

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
            clock=m.ClockState(quality=n.time_quality),
            provenance=self.provenance,
        )
        return OutMessage(topics.node_topic(n.site, n.node_id, "status"), m.encode(msg), 1, True)

    def detection_from_onset(self, onset: Onset) -> m.Detection:
        """A Detection for one onset; its time comes from the sample index via the time base."""
        t_ns = self.source.timebase.to_ns(onset.i_onset)
        peak_spl = None
        if self.cfg.node.full_scale_spl_db is not None:
            peak_spl = _db(onset.peak_dbfs + self.cfg.node.full_scale_spl_db)
        return m.Detection(
            # Stable id: node plus onset time to the microsecond, so that a
            # re-published detection is recognised by the hub as a duplicate.
            detection_id=f"{self.node_id}-{t_ns // 1000}",
            site=self.site,
            node_id=self.node_id,
            onset_time_ns=t_ns,
            onset_sigma_s=float(onset.sigma_s),
            time_quality=self.cfg.node.time_quality,
            peak_dbfs=_db(onset.peak_dbfs),
            snr_db=_db(onset.snr_db),
            noise_floor_dbfs=_db(onset.noise_floor_dbfs),
            clipped=bool(onset.clipped),
            peak_db_spl=peak_spl,
            provenance=self.provenance,
        )

    def health_message(self, t_ns: int, interval_s: float, n_det: int, n_clip: int) -> OutMessage:
        msg = m.NodeHealth(
            site=self.site,
            node_id=self.node_id,
            time_ns=t_ns,
            # NaN while the noise floor warms up: say "unknown", not a number.
            noise_floor_dbfs=(_db(self.detector.noise_floor_dbfs)
                              if math.isfinite(self.detector.noise_floor_dbfs) else None),
            clipping_per_min=n_clip * 60.0 / interval_s,
            detections_per_min=n_det * 60.0 / interval_s,
            clock=m.ClockState(quality=self.cfg.node.time_quality),
            outbox_depth=self.stats.n_published - self.stats.n_acked,
            uptime_s=self.stats.n_samples / self.source.sample_rate_hz,
        )
        return OutMessage(topics.node_topic(self.site, self.node_id, "health"), m.encode(msg), 0, False)

    # -- running -------------------------------------------------------------
    def _emit(self, onsets: list[Onset]) -> tuple[int, int]:
        n_clip = 0
        for onset in onsets:
            det = self.detection_from_onset(onset)
            self.stats.n_onsets += 1
            n_clip += int(det.clipped)
            self.stats.detections.append(det)
            if self.on_detection is not None:
                self.on_detection(det)
            if self.transport is not None:
                topic = topics.node_topic(self.site, self.node_id, "detection")
                self.transport.publish(OutMessage(topic, m.encode(det), 1, False), on_ack=self._acked)
                self.stats.n_published += 1
        self.stats.n_clipped += n_clip
        return len(onsets), n_clip

    def _acked(self) -> None:
        with self._lock:
            self.stats.n_acked += 1

    def run(self) -> NodeStats:
        """Process the whole source; return the run's counters."""
        fs = self.source.sample_rate_hz
        n_health = max(1, int(self.cfg.health.interval_s * fs))
        next_health = n_health
        det_since, clip_since = 0, 0
        for i0, block in self.source.blocks():
            t = time.perf_counter()
            onsets = self.detector.process(block)
            self.stats.processing_s += time.perf_counter() - t
            self.stats.n_samples = i0 + len(block)
            nd, nc = self._emit(onsets)
            det_since += nd
            clip_since += nc
            if self.transport is not None and self.stats.n_samples >= next_health:
                t_ns = self.source.timebase.to_ns(self.stats.n_samples)
                self.transport.publish(
                    self.health_message(t_ns, self.cfg.health.interval_s, det_since, clip_since)
                )
                det_since, clip_since = 0, 0
                next_health += n_health
        self._emit(self.detector.flush())
        log.info(
            "node %s: %.1f s of audio, %d detections, %.0fx real time",
            self.node_id,
            self.stats.n_samples / fs,
            self.stats.n_onsets,
            (self.stats.n_samples / fs) / max(self.stats.processing_s, 1e-9),
        )
        return self.stats

    def wait_acked(self, timeout_s: float = 10.0) -> bool:
        """Wait until the broker acknowledged every published detection."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if self.stats.n_acked >= self.stats.n_published:
                    return True
            time.sleep(0.01)
        return False
