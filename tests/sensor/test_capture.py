"""Live capture through a fake PortAudio stream: scaling, channel, DC, time base, gaps, device errors."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import FakeClock, FakeDevice

from shotline.sensor.audio import AudioSourceError
from shotline.sensor.capture import LiveSource, resolve_device

FS = 48000


def _collect(src: LiveSource) -> tuple[list[int], np.ndarray]:
    idx, blocks = [], []
    for i0, x in src.blocks():
        idx.append(i0)
        blocks.append(x)
    return idx, np.concatenate(blocks)


def _source(dev: FakeDevice, clock: FakeClock, **kw) -> LiveSource:
    kw.setdefault("dc_cutoff_hz", 0.0)
    kw.setdefault("queue_s", 60.0)
    kw.setdefault("stall_timeout_s", 0.3)
    return LiveSource("fake", sample_rate_hz=FS, stream_factory=dev.factory, realtime_ns=clock.realtime_ns,
                      max_samples=kw.pop("max_samples", len(dev.data)), **kw)


@pytest.mark.parametrize("dtype,full", [("int16", 32768), ("int32", 2**31)])
def test_integer_samples_scale_to_full_scale_and_pick_the_channel(dtype, full):
    rng = np.random.default_rng(1)
    n = FS
    ch0 = rng.integers(-full // 2, full // 2, n)
    ch1 = rng.integers(-full // 2, full // 2, n)
    data = np.stack([ch0, ch1], axis=1).astype(dtype)
    clock = FakeClock()
    dev = FakeDevice(data, FS, clock)
    idx, x = _collect(_source(dev, clock, channel=1, channels=2, dtype=dtype, block_s=0.01))
    assert idx == list(range(0, n, 480))
    np.testing.assert_allclose(x, ch1 / full, rtol=0, atol=1e-7)
    assert x.dtype == np.float32


def test_dc_is_removed():
    n = 3 * FS
    t = np.arange(n) / FS
    sig = 0.1 * np.sin(2 * np.pi * 1000 * t)
    data = ((sig + 0.25) * 2**31).astype(np.int32)[:, None]  # MEMS mics often sit off zero
    clock = FakeClock()
    x = _collect(_source(FakeDevice(data, FS, clock), clock, dtype="int32", dc_cutoff_hz=5.0))[1]
    tail = x[FS:]
    assert abs(tail.mean()) < 1e-3
    assert np.std(tail) == pytest.approx(0.1 / np.sqrt(2), rel=0.01)  # the tone passes unchanged


def test_time_base_absorbs_jitter_and_drift():
    """ADC times with 100 ppm crystal error and 3 ms callback jitter: stamps within a few us."""
    n = 30 * FS
    data = np.zeros((n, 1), dtype=np.int16)
    clock = FakeClock()
    dev = FakeDevice(data, FS, clock, rate_error=100e-6, jitter_s=0.003)
    src = _source(dev, clock, block_s=0.01)
    idx, _ = _collect(src)
    # Truth: the fake's ADC time of each block's first sample.
    for i in (idx[len(idx) // 2], idx[-1]):
        true_ns = clock.t0_ns + dev.frame_adc[i] * 1e9
        assert abs(src.timebase.to_ns(i) - true_ns) < 2_000, "stamp off by more than 2 us"
    assert src.fit.rate_hz == pytest.approx(FS * (1 + 100e-6), rel=2e-6)
    assert src.fit.residual_rms_s < 1e-5  # the ADC times themselves are exact


def test_vanishing_device_is_reopened_and_the_gap_reported():
    n = 4 * FS
    data = (np.random.default_rng(2).standard_normal((n, 1)) * 1000).astype(np.int16)
    clock = FakeClock()
    dev = FakeDevice(data, FS, clock, vanish_at=FS, away_s=2.5)
    src = _source(dev, clock, dtype="int16", block_s=0.01, max_samples=n + int(2.5 * FS))
    idx, x = _collect(src)
    assert dev.opened == 2 and src.stats.n_reopens == 1
    assert src.stats.n_gaps == 1
    gap = src.stats.gaps[0]
    assert gap.reason == "device" and gap.i_start == FS
    assert gap.n_samples == pytest.approx(2.5 * FS, abs=2)
    # After the gap, index and time agree again: sample i is at its true ADC time.
    i_after = idx[idx.index(FS + gap.n_samples) + 10]
    frame = i_after - gap.n_samples
    assert abs(src.timebase.to_ns(i_after) - (clock.t0_ns + dev.frame_adc[frame] * 1e9)) < 2_000
    np.testing.assert_array_equal(x, data[:, 0] / 32768.0)  # every delivered sample, in order


def test_processing_behind_drops_blocks_and_counts_them():
    n = 20 * FS  # 2000 blocks, delivered in about 1 s (0.5 ms apart)
    data = np.zeros((n, 1), dtype=np.int16)
    clock = FakeClock()
    dev = FakeDevice(data, FS, clock)
    src = _source(dev, clock, block_s=0.01, queue_s=1.0)  # 100 blocks of room
    got = 0
    import time

    for _i0, x in src.blocks():
        if got == 0:
            time.sleep(0.3)  # the stream delivers several s meanwhile: the queue overflows
        got += len(x)
    assert src.stats.n_gaps >= 1 and all(g.reason == "behind" for g in src.stats.gaps)
    assert got + src.stats.gap_samples == n


class FakeSd:
    """query_devices/query_hostapis as sounddevice returns them."""

    devices = [
        {"index": 0, "name": "bcm2835 Headphones: - (hw:0,0)", "max_input_channels": 0, "default_samplerate": 44100.0, "hostapi": 0},
        {"index": 1, "name": "snd_rpi_i2s_card: i2s-mems (hw:1,0)", "max_input_channels": 2, "default_samplerate": 48000.0, "hostapi": 0},
        {"index": 2, "name": "USB Audio Device (hw:2,0)", "max_input_channels": 1, "default_samplerate": 44100.0, "hostapi": 0},
    ]

    def query_devices(self):
        return self.devices

    def query_hostapis(self):
        return [{"name": "ALSA"}]


def test_device_by_name_or_index_and_missing_device_lists_what_exists():
    sd = FakeSd()
    assert resolve_device("i2s", sd) == 1
    assert resolve_device("USB Audio Device (hw:2,0)", sd) == 2
    assert resolve_device(2, sd) == 2
    assert resolve_device(None, sd) is None
    with pytest.raises(AudioSourceError) as e:
        resolve_device("rode", sd)
    msg = str(e.value)
    assert "'rode'" in msg and "i2s-mems" in msg and "USB Audio Device" in msg and "Headphones" not in msg
    with pytest.raises(AudioSourceError, match="index 0"):
        resolve_device(0, sd)  # an output-only device is not an input
    with pytest.raises(AudioSourceError, match="ambiguous"):
        resolve_device("hw:", sd)


def test_open_failure_is_a_clear_error():
    def factory(**kw):
        raise RuntimeError("Invalid sample rate")

    src = LiveSource("fake", stream_factory=factory, stop_event=threading.Event())
    with pytest.raises(AudioSourceError, match="cannot open input device 'fake': Invalid sample rate"):
        next(iter(src.blocks()))
