"""The node on live capture (fake stream): UTC stamps, classifier gate, gaps, clips, outbox, health."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from conftest import FakeClock, FakeDevice

from shotline.core import messages as m
from shotline.sensor.capture import LiveSource
from shotline.sensor.clock import ClockReading
from shotline.sensor.config import AudioSettings, NodeSettings, SensorConfig, StorageSettings
from shotline.sensor.impulse_synth import add_friedlander, white_noise
from shotline.sensor.node import SensorNode

FS = 48000
ONSETS_S = [1.0, 2.0, 3.0]
AMPS = [0.5, 0.05, 0.5]  # the quiet one is "not a gunshot" for the fake classifier


class FakeClassifier:
    """Follows the classifier contract; scores by the window's peak and records what it saw."""

    window_s = (0.05, 0.2)
    sha256 = "ab" * 32

    def __init__(self):
        self.calls = []

    def scores(self, window, sample_rate_hz, i_onset):
        self.calls.append((len(window), sample_rate_hz, i_onset, float(np.max(np.abs(window)))))
        g = 0.9 if np.max(np.abs(window)) > 0.3 else 0.05  # below the default gate (0.1)
        return {"gunshot": g, "firework": 1 - g}


class FakeMonitor:
    reading = ClockReading("pps", 3e-7, True)


def _audio(seconds=5.0, seed=3):
    x = white_noise(int(seconds * FS), np.random.default_rng(seed), rms=0.003)
    for t, a in zip(ONSETS_S, AMPS, strict=True):
        add_friedlander(x, FS, t, amplitude=a)
    return (np.clip(x, -1, 1) * 2**31 * 0.999).astype(np.int32)[:, None]


def _node(tmp_path, dev, clock, *, classifier, data_dir=True, max_extra_s=0.0):
    cfg = SensorConfig(
        node=NodeSettings(site="t", node_id="n1", full_scale_spl_db=130.0),
        audio=AudioSettings(source="live", block_s=0.01),
        storage=StorageSettings(data_dir=str(tmp_path) if data_dir else None),
    )
    src = LiveSource("fake", sample_rate_hz=FS, dtype="int32", block_s=0.01, stream_factory=dev.factory,
                     realtime_ns=clock.realtime_ns, queue_s=60, stall_timeout_s=0.3,
                     max_samples=len(dev.data) + int(max_extra_s * FS))
    return SensorNode(cfg, src, None, classifier=classifier, clock_monitor=FakeMonitor())


def test_live_detections_are_stamped_gated_and_queued(tmp_path):
    clock = FakeClock()
    dev = FakeDevice(_audio(), FS, clock, jitter_s=0.002)
    clf = FakeClassifier()
    node = _node(tmp_path, dev, clock, classifier=clf)
    stats = node.run()
    node.close()
    assert stats.n_candidates == 3 and stats.n_rejected == 1 and stats.n_onsets == 2
    truth = [clock.t0_ns + int(100e9) + int(t * 1e9) for t, a in zip(ONSETS_S, AMPS, strict=True) if a > 0.3]
    for det, t_true in zip(stats.detections, truth, strict=True):
        assert abs(det.onset_time_ns - t_true) < 20_000, "stamp more than 20 us off"
        assert det.time_quality == "pps"
        assert det.scores == {"gunshot": 0.9, "firework": pytest.approx(0.1)}
        assert det.provenance.model_sha256 == "ab" * 32
        assert m.decode(m.encode(det), m.Detection) == det
    # The classifier saw its window with the onset where the contract puts it.
    n_win, fs, i_on, _ = clf.calls[0]
    assert fs == FS and n_win == pytest.approx(0.25 * FS, abs=2) and i_on == pytest.approx(0.05 * FS, abs=1)
    # Outbox (no transport: nothing acknowledged) and clips.
    from shotline.sensor.outbox import Outbox

    ob = Outbox(tmp_path / "outbox.sqlite")
    assert [r.detection_id for r in ob.pending()] == [d.detection_id for d in stats.detections]
    for det in stats.detections:
        clip, fs = sf.read(tmp_path / "clips" / f"{det.detection_id}.flac")
        assert fs == FS and len(clip) == 3 * FS
        assert np.argmax(np.abs(clip)) == pytest.approx(FS, abs=0.002 * FS)  # onset 1 s into the clip


def test_without_a_model_detections_carry_no_score(tmp_path):
    clock = FakeClock()
    dev = FakeDevice(_audio(seconds=3.5), FS, clock)
    node = _node(tmp_path, dev, clock, classifier=None, data_dir=False)
    stats = node.run()
    assert stats.n_onsets == 3 and stats.n_rejected == 0
    assert all(d.scores is None for d in stats.detections)
    assert node.clips is None and node.outbox.path is None


def test_device_gap_starts_a_new_segment_and_shows_in_health(tmp_path):
    clock = FakeClock()
    away = 1.5
    dev = FakeDevice(_audio(), FS, clock, vanish_at=int(2.5 * FS), away_s=away)
    node = _node(tmp_path, dev, clock, classifier=None, data_dir=False, max_extra_s=away)
    stats = node.run()
    assert stats.n_segments == 2
    # Onset 3.0 s of device audio happened after the device was away for 1.5 s.
    t_last = clock.t0_ns + int(100e9) + int((3.0 + away) * 1e9)
    assert abs(stats.detections[-1].onset_time_ns - t_last) < 50_000
    h = node.health_snapshot(10.0, 0, 0)
    assert h["capture_gaps"] == 1 and h["capture_gap_s"] == pytest.approx(away, abs=1e-3)
    assert h["clock"]["quality"] == "pps"
    msg = m.decode(node.health_message(clock.realtime_ns(), 10.0, 1, 0).payload, m.NodeHealth)
    assert msg.clock.pps_locked and msg.outbox_depth == stats.n_onsets
