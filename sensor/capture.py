"""Live capture from a sound device with sounddevice (PortAudio).

:class:`LiveSource` is an :class:`~shotline.sensor.audio.AudioSource`: it yields
float32 mono blocks in full scale with their absolute sample index, and its
time base is a :class:`~shotline.sensor.clock.ClockFit` fed by the capture
callback's ADC time converted to the realtime (UTC) clock.

- The device is chosen by index or by (part of its) name; when it is missing,
  the error lists the input devices that exist.
- int16 and int32 (I2S MEMS microphones deliver S32_LE) are scaled to full
  scale 1.0; one channel is kept; DC is removed by a first-order high-pass.
- When the device stops delivering (unplugged, driver reset) for
  ``stall_timeout_s``, the stream is closed and reopened with back-off until
  it works again. The sample index then jumps by the time the device was away,
  so index and time stay consistent; the gap is counted in :attr:`LiveSource.gaps`.
  Blocks dropped because processing fell behind are gaps too.

The PortAudio stream is created through ``stream_factory`` (default
``sounddevice.InputStream``) so that tests inject a fake stream.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import signal

from shotline.core.timebase import NS_PER_S

from .audio import AudioSource, AudioSourceError
from .clock import ClockFit, SegmentedTimebase

log = logging.getLogger(__name__)

_SCALE = {"int16": 1.0 / 32768.0, "int32": 1.0 / 2147483648.0, "float32": 1.0}


@dataclass(frozen=True)
class CaptureGap:
    """Audio that never reached the node."""

    i_start: int
    """First missing sample index."""
    n_samples: int
    """Missing samples."""
    start_ns: int
    """UTC of the first missing sample, ns."""
    reason: str
    """``device`` (device vanished or stalled), ``overflow`` (driver dropped input)
    or ``behind`` (processing too slow)."""


@dataclass
class CaptureStats:
    """Capture counters for health."""

    n_gaps: int = 0
    gap_samples: int = 0
    n_reopens: int = 0
    n_overflows: int = 0
    gaps: list[CaptureGap] = field(default_factory=list)


def list_input_devices(sd: Any = None) -> list[dict]:
    """Input devices as PortAudio reports them: ``index``, ``name``, ``channels``, ``rate_hz``, ``hostapi``."""
    sd = _sounddevice() if sd is None else sd
    out = []
    hostapis = sd.query_hostapis()
    for d in sd.query_devices():
        if d["max_input_channels"] > 0:
            out.append({
                "index": d["index"],
                "name": d["name"],
                "channels": d["max_input_channels"],
                "rate_hz": d["default_samplerate"],
                "hostapi": hostapis[d["hostapi"]]["name"],
            })
    return out


def format_devices(devices: list[dict]) -> str:
    if not devices:
        return "no input devices (is the microphone plugged in and the user in the audio group?)"
    return "; ".join(f"{d['index']}: {d['name']!r} ({d['channels']} ch, {d['rate_hz']:g} Hz)" for d in devices)


def _sounddevice():
    try:
        import sounddevice as sd
    except OSError as exc:  # sounddevice raises OSError when libportaudio is missing
        raise AudioSourceError(f"PortAudio is not available ({exc}); install libportaudio2") from None
    return sd


def resolve_device(device: str | int | None, sd: Any = None) -> int | None:
    """The PortAudio index of an input device given by index or (part of its) name.

    Raises :class:`AudioSourceError` listing the input devices when it is not found.
    """
    sd = _sounddevice() if sd is None else sd
    devices = list_input_devices(sd)
    if device is None:
        if not devices:
            raise AudioSourceError("no input device: " + format_devices(devices))
        return None
    if isinstance(device, int):
        if any(d["index"] == device for d in devices):
            return device
        raise AudioSourceError(f"no input device with index {device}; input devices: " + format_devices(devices))
    exact = [d for d in devices if d["name"] == device]
    matches = exact or [d for d in devices if device.lower() in d["name"].lower()]
    if len(matches) == 1:
        return matches[0]["index"]
    if not matches:
        raise AudioSourceError(f"no input device matching {device!r}; input devices: " + format_devices(devices))
    raise AudioSourceError(f"device {device!r} is ambiguous: " + format_devices(matches))


StreamFactory = Callable[..., Any]


class LiveSource(AudioSource):
    """Audio from a PortAudio input device; see the module docstring.

    ``realtime_ns`` and ``stream_factory`` are for tests (a fake clock and stream).
    ``max_samples`` ends the stream after that many samples (level meter, tests).
    """

    def __init__(
        self,
        device: str | int | None = None,
        *,
        sample_rate_hz: int = 48000,
        channel: int = 0,
        channels: int | None = None,
        dtype: str = "int32",
        block_s: float = 0.1,
        dc_cutoff_hz: float = 5.0,
        stall_timeout_s: float = 2.0,
        retry_max_s: float = 30.0,
        queue_s: float = 10.0,
        fit_window_s: float = 60.0,
        step_threshold_s: float = 0.002,
        stop_event: threading.Event | None = None,
        max_samples: int | None = None,
        stream_factory: StreamFactory | None = None,
        sd_module: Any = None,
        realtime_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        if dtype not in _SCALE:
            raise ValueError(f"dtype must be one of {sorted(_SCALE)}, got {dtype!r}")
        self._sd = sd_module
        if stream_factory is None:
            self._sd = _sounddevice() if sd_module is None else sd_module
            stream_factory = self._sd.InputStream
            self.device_index = resolve_device(device, self._sd)
        else:
            self.device_index = device  # type: ignore[assignment]
        self.device = device
        self.sample_rate_hz = int(sample_rate_hz)
        self.channel = int(channel)
        self.channels = int(channels) if channels is not None else self.channel + 1
        self.dtype = dtype
        self.n_block = max(1, int(round(block_s * sample_rate_hz)))
        self.stall_timeout_s = stall_timeout_s
        self.retry_max_s = retry_max_s
        self.stop_event = stop_event or threading.Event()
        self.max_samples = max_samples
        self._factory = stream_factory
        self._realtime_ns = realtime_ns
        self._q: queue.Queue = queue.Queue(maxsize=max(2, int(queue_s / block_s)))
        self.fit = ClockFit(sample_rate_hz, window_s=fit_window_s, step_threshold_s=step_threshold_s,
                            refit_every=max(1, int(round(1.0 / block_s))))
        self.timebase = SegmentedTimebase(self.fit)  # type: ignore[assignment]
        self.stats = CaptureStats()
        if dc_cutoff_hz > 0:
            b, a = signal.butter(1, dc_cutoff_hz, btype="highpass", fs=sample_rate_hz)
            self._dc: tuple[np.ndarray, np.ndarray] | None = (b, a)
        else:
            self._dc = None
        self._dc_zi = np.zeros(1)
        self._stream = None
        self._gen = 0  # stream generation: callbacks of a closed stream are ignored
        self._frames_in_stream = 0
        self._dropped_frames = 0

    # -- PortAudio side (audio thread) ---------------------------------------
    def _make_callback(self, gen: int):
        def callback(indata, frames, time_info, status) -> None:
            if gen != self._gen:
                return
            now_ns = self._realtime_ns()
            adc = float(getattr(time_info, "inputBufferAdcTime", 0.0) or 0.0)
            cur = float(getattr(time_info, "currentTime", 0.0) or 0.0)
            if adc <= 0.0 or cur <= 0.0:
                # Some host APIs give no ADC time: the block ended about now.
                adc_ns = now_ns - int(frames * NS_PER_S / self.sample_rate_hz)
            else:
                # Stream clock -> realtime via the offset at this instant.
                adc_ns = now_ns - int(round((cur - adc) * NS_PER_S))
            i_frame = self._frames_in_stream
            self._frames_in_stream += frames
            overflow = bool(getattr(status, "input_overflow", False))
            try:
                self._q.put_nowait((gen, i_frame, np.array(indata[:, self.channel], copy=True), adc_ns, overflow))
            except queue.Full:
                self._dropped_frames += frames

        return callback

    # -- stream management ---------------------------------------------------
    def _open(self) -> None:
        self._gen += 1
        self._frames_in_stream = 0
        # Drain blocks of the previous stream.
        while True:
            try:
                self._q.get_nowait()
            except queue.Empty:
                break
        try:
            stream = self._factory(
                device=self.device_index,
                samplerate=self.sample_rate_hz,
                channels=self.channels,
                dtype=self.dtype,
                blocksize=self.n_block,
                callback=self._make_callback(self._gen),
            )
            stream.start()
        except Exception as exc:  # PortAudioError, ValueError (bad settings), OSError
            raise AudioSourceError(f"cannot open input device {self.device!r}: {exc}") from exc
        self._stream = stream

    def _close(self) -> None:
        stream, self._stream = self._stream, None
        self._gen += 1
        if stream is not None:
            for op in ("abort", "close"):
                try:
                    getattr(stream, op)()
                except Exception:  # a vanished device fails to close; nothing to keep
                    pass

    def _rescan(self) -> None:
        # PortAudio enumerates devices once, at initialisation: re-initialise
        # so that a re-plugged USB device is found again (index may change).
        sd = self._sd
        if sd is None or not hasattr(sd, "_terminate"):
            return
        try:
            sd._terminate()
            sd._initialize()
            if self.device is not None:
                self.device_index = resolve_device(self.device, sd)
        except Exception as exc:
            log.debug("device rescan: %s", exc)

    def _reopen(self) -> bool:
        """Reopen after the device vanished, with back-off; False if stopped meanwhile."""
        delay = 1.0
        while not self.stop_event.is_set():
            self._close()
            self._rescan()
            try:
                self._open()
                self.stats.n_reopens += 1
                log.warning("capture: device %r reopened", self.device)
                return True
            except AudioSourceError as exc:
                log.warning("capture: %s; retrying in %.0f s", exc, delay)
            if self.stop_event.wait(delay):
                return False
            delay = min(delay * 2, self.retry_max_s)
        return False

    # -- AudioSource -----------------------------------------------------------
    def _record_gap(self, i_start: int, n: int, reason: str) -> None:
        if n <= 0:
            return
        start_ns = self.fit.to_ns(i_start) if self.fit.ready else self._realtime_ns()
        gap = CaptureGap(i_start, n, start_ns, reason)
        self.stats.n_gaps += 1
        self.stats.gap_samples += n
        self.stats.gaps.append(gap)
        del self.stats.gaps[:-100]
        log.warning("capture gap (%s): %.3f s of audio missing from sample %d", reason, n / self.sample_rate_hz, i_start)

    @property
    def gap_s(self) -> float:
        """Total audio missed since start, s."""
        return self.stats.gap_samples / self.sample_rate_hz

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        self._open()
        i_next = 0  # absolute index of the next sample we yield
        base = 0  # absolute index of the current stream's frame 0
        fresh = True  # first block of a (re)opened stream
        seen_dropped = 0
        scale = np.float32(_SCALE[self.dtype])
        try:
            while not self.stop_event.is_set():
                try:
                    gen, i_frame, raw, adc_ns, overflow = self._q.get(timeout=self.stall_timeout_s)
                except queue.Empty:
                    log.warning("capture: no audio from %r for %.1f s; reopening", self.device, self.stall_timeout_s)
                    if not self._reopen():
                        return
                    fresh = True
                    continue
                if gen != self._gen:
                    continue
                if fresh:
                    if self.fit.ready:
                        # Where does the new stream sit on the old time line?
                        missing = int(round((adc_ns - self.fit.to_ns(i_next)) * self.fit.rate_hz / NS_PER_S))
                        missing = max(0, missing)
                        self._record_gap(i_next, missing, "device")
                        i_next += missing
                        self.fit.restart(i_next, adc_ns)
                        self._dc_zi[:] = 0.0
                    base = i_next - i_frame
                    fresh = False
                i0 = base + i_frame
                if i0 > i_next:
                    # Frames the callback could not queue: processing fell behind.
                    behind = self._dropped_frames - seen_dropped >= i0 - i_next
                    self._record_gap(i_next, i0 - i_next, "behind" if behind else "device")
                    seen_dropped += i0 - i_next
                if overflow:
                    self.stats.n_overflows += 1
                    if self.fit.ready:
                        lost = int(round((adc_ns - self.fit.to_ns(i0)) * self.fit.rate_hz / NS_PER_S))
                        if lost > 0:
                            # The driver lost input: shift this stream's frames on the time line.
                            self._record_gap(i0, lost, "overflow")
                            base += lost
                            i0 += lost
                self.fit.add(i0, adc_ns)
                x = raw.astype(np.float32) * scale if self.dtype != "float32" else raw.astype(np.float32)
                if self._dc is not None:
                    y, self._dc_zi = signal.lfilter(self._dc[0], self._dc[1], x, zi=self._dc_zi)
                    x = y.astype(np.float32)
                if self.max_samples is not None and i0 + len(x) >= self.max_samples:
                    x = x[: max(0, self.max_samples - i0)]
                    if len(x):
                        yield i0, x
                    return
                yield i0, x
                i_next = i0 + len(x)
        finally:
            self._close()

    def close(self) -> None:
        self.stop_event.set()
