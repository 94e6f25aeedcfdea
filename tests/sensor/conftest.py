"""Fakes for live capture: a PortAudio-like input stream driven from an array."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pytest


@dataclass
class FakeTime:
    """What PortAudio passes as ``time_info``: stream-clock seconds."""

    inputBufferAdcTime: float  # noqa: N815 (PortAudio's name)
    currentTime: float  # noqa: N815


@dataclass
class FakeStatus:
    input_overflow: bool = False


class FakeClock:
    """Realtime ns = t0_ns + stream clock; the stream clock advances with the audio."""

    def __init__(self, t0_ns: int = 1_795_000_000_000_000_000) -> None:
        self.t0_ns = t0_ns
        self.stream_s = 100.0  # stream clock (like CLOCK_MONOTONIC), seconds

    def realtime_ns(self) -> int:
        return self.t0_ns + int(round(self.stream_s * 1e9))


class FakeDevice:
    """Audio a fake stream plays: ``data`` (frames x channels, device dtype).

    ``vanish_at``: frame at which the device stops delivering; it comes back
    after ``away_s`` (stream clock) and at the ``reopen_fail`` next attempts
    opening fails. ``latency_s``: ADC-to-callback delay; ``jitter_s`` random
    callback lateness (ADC times stay exact, as PortAudio's are).
    """

    def __init__(self, data: np.ndarray, rate: int, clock: FakeClock, *, vanish_at: int | None = None,
                 away_s: float = 0.0, latency_s: float = 0.004, jitter_s: float = 0.0, rate_error: float = 0.0,
                 seed: int = 0) -> None:
        self.data = data
        self.rate = rate
        self.clock = clock
        self.vanish_at = vanish_at
        self.away_s = away_s
        self.latency_s = latency_s
        self.jitter_s = jitter_s
        self.true_rate = rate * (1.0 + rate_error)
        self.pos = 0
        self.opened = 0
        self.rng = np.random.default_rng(seed)
        self.adc_of_first_sample: float | None = None
        self.frame_adc: dict[int, float] = {}  # data frame -> stream-clock ADC time

    def factory(self, **kw):
        self.opened += 1
        return FakeStream(self, **kw)


class FakeStream:
    """Calls ``callback`` from a thread, as PortAudio does, as fast as the consumer allows."""

    def __init__(self, dev: FakeDevice, *, device, samplerate, channels, dtype, blocksize, callback) -> None:
        self.dev = dev
        self.blocksize = blocksize
        self.callback = callback
        self.channels = channels
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        if self.dev.opened > 1 and self.dev.vanish_at is not None and self.dev.pos >= self.dev.vanish_at:
            # Reopened after vanishing: the device was away for away_s.
            self.dev.clock.stream_s += self.dev.away_s
            self.dev.vanish_at = None
        self._thread.start()

    def _run(self) -> None:
        dev = self.dev
        n = self.blocksize
        while not self._stop.is_set() and dev.pos + n <= len(dev.data):
            if dev.vanish_at is not None and dev.pos >= dev.vanish_at:
                return  # unplugged: no more callbacks
            block = dev.data[dev.pos:dev.pos + n]
            adc = dev.clock.stream_s
            dev.frame_adc[dev.pos] = adc
            dev.clock.stream_s += n / dev.true_rate
            late = dev.latency_s + (dev.rng.uniform(0, dev.jitter_s) if dev.jitter_s else 0.0)
            saved = dev.clock.stream_s
            dev.clock.stream_s = adc + n / dev.true_rate + late  # the callback runs late...
            self.callback(block, n, FakeTime(adc, dev.clock.stream_s), FakeStatus())
            dev.clock.stream_s = saved  # ...but the audio clock is not
            dev.pos += n
            if self._stop.wait(0.0005):
                return

    def abort(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()


@pytest.fixture
def fake_clock():
    return FakeClock()
