"""Live time base and clock discipline.

:class:`ClockFit` maps a live stream's sample index to UTC nanoseconds through a
running least-squares line over recent (sample index, ADC time) pairs. Each
capture callback contributes one pair: the index of the block's first sample
and PortAudio's ``inputBufferAdcTime`` converted to the realtime clock. The
line absorbs callback jitter (it averages thousands of pairs) and crystal
drift (its slope is the effective sample rate over the last ``window_s``).

A clock step (chrony stepping the system clock, a device restarting) shows as
consecutive pairs far off the line. It is never averaged in: the fit starts a
new *segment* from the pairs after the step, keeps the old segment for onsets
that happened before it, and flags onsets that fall between the last good pair
and the step's confirmation as uncertain (their time quality becomes
``unsynced``).

:class:`ChronyMonitor` reads ``chronyc -c tracking`` for the system clock's
offset, its reference (a PPS refclock or NTP servers) and leap status, and
turns them into the wire's :data:`~shotline.core.messages.TimeQuality`.
"""

from __future__ import annotations

import logging
import math
import subprocess
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from shotline.core.messages import TimeQuality
from shotline.core.timebase import NS_PER_S, LinearTimebase

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Segment:
    i_start: int
    """First sample index this segment's line applies to."""
    timebase: LinearTimebase


class ClockFit:
    """Running linear fit of (sample index, UTC ns) pairs; see the module docstring.

    ``nominal_rate_hz``: the rate asked of the device (the slope before two pairs).
    ``window_s``: history used by the fit, seconds of audio.
    ``step_threshold_s``: a pair this far from the line is suspicious; ``step_count``
    suspicious pairs in a row that agree with each other (within the threshold) are
    a step. A single outlier is jitter and is ignored.
    ``refit_every``: pairs between refits (the fit is a small numpy solve).
    """

    def __init__(
        self,
        nominal_rate_hz: float,
        *,
        window_s: float = 60.0,
        step_threshold_s: float = 0.002,
        step_count: int = 3,
        refit_every: int = 10,
    ) -> None:
        if not nominal_rate_hz > 0:
            raise ValueError("nominal_rate_hz must be > 0")
        self.nominal_rate_hz = float(nominal_rate_hz)
        self.window_samples = int(window_s * nominal_rate_hz)
        self.step_threshold_ns = int(step_threshold_s * NS_PER_S)
        self.step_count = int(step_count)
        self.refit_every = max(1, int(refit_every))
        self._pairs: deque[tuple[int, int]] = deque()
        self._suspect: list[tuple[int, int]] = []
        self._segments: list[_Segment] = []
        self._since_fit = 0
        self.n_steps = 0
        """Clock steps detected so far."""
        self.n_outliers = 0
        """Single pairs rejected as jitter."""
        self.residual_rms_s: float | None = None
        """RMS of the pairs about the current line, s (None before three pairs)."""
        self.uncertain: deque[tuple[int, int]] = deque(maxlen=16)
        """Sample-index intervals ``[a, b)`` whose stamps are doubtful (around a step)."""

    # -- input -----------------------------------------------------------------
    def add(self, i_sample: int, t_ns: int) -> bool:
        """Add one pair; return True if it confirmed a clock step."""
        i_sample, t_ns = int(i_sample), int(t_ns)
        if not self._segments:
            self._start_segment(i_sample, [(i_sample, t_ns)])
            return False
        predicted = self.timebase.to_ns(i_sample)
        off = t_ns - predicted
        if abs(off) <= self.step_threshold_ns or len(self._pairs) < 2:
            if self._suspect:
                self.n_outliers += len(self._suspect)
                self._suspect.clear()
            self._append(i_sample, t_ns)
            return False
        # Off the line: jitter if alone, a step if the next pairs agree with it.
        self._suspect.append((i_sample, t_ns))
        offs = [t - self.timebase.to_ns(i) for i, t in self._suspect]
        if max(offs) - min(offs) > self.step_threshold_ns:
            # The suspects disagree among themselves: drop the oldest as jitter.
            self._suspect.pop(0)
            self.n_outliers += 1
            return False
        if len(self._suspect) < self.step_count:
            return False
        last_good = self._pairs[-1][0]
        first_new = self._suspect[0][0]
        self.uncertain.append((last_good, first_new))
        self.n_steps += 1
        log.warning(
            "clock step of %+.6f s at sample %d: time base refitted from the new pairs",
            float(np.median(offs)) / NS_PER_S,
            first_new,
        )
        self._start_segment(first_new, self._suspect)
        self._suspect = []
        return True

    def restart(self, i_sample: int, t_ns: int) -> None:
        """Begin a new segment at a known discontinuity (capture reopened after a gap)."""
        if self._pairs:
            self.uncertain.append((self._pairs[-1][0] + 1, int(i_sample)))
        self._suspect.clear()
        self._start_segment(int(i_sample), [(int(i_sample), int(t_ns))])

    def _start_segment(self, i_start: int, pairs: list[tuple[int, int]]) -> None:
        rate = self._segments[-1].timebase.rate_hz if self._segments else self.nominal_rate_hz
        self._pairs = deque(pairs)
        i0, t0 = pairs[0]
        self._segments.append(_Segment(i_start, LinearTimebase(t0, rate, i0)))
        del self._segments[:-8]  # onsets are stamped within seconds; keep a few old segments
        self.residual_rms_s = None
        self._fit()

    def _append(self, i_sample: int, t_ns: int) -> None:
        self._pairs.append((i_sample, t_ns))
        while self._pairs and self._pairs[0][0] < i_sample - self.window_samples:
            self._pairs.popleft()
        self._since_fit += 1
        if self._since_fit >= self.refit_every or len(self._pairs) < 3 * self.refit_every:
            self._fit()

    def _fit(self) -> None:
        self._since_fit = 0
        seg = self._segments[-1]
        n = len(self._pairs)
        if n < 2:
            return
        arr = np.array(self._pairs, dtype=np.int64)
        i0, t0 = int(arr[-1, 0]), int(arr[-1, 1])
        # Relative to the newest pair: small numbers, exact in float64.
        x = (arr[:, 0] - i0).astype(np.float64)
        y = (arr[:, 1] - t0).astype(np.float64)
        if x[0] == x[-1]:
            return
        slope, icpt = np.polyfit(x, y, 1)
        res = y - (slope * x + icpt)
        if n >= 10:
            # One pass of outlier rejection (scheduling hiccups delay a callback).
            mad = float(np.median(np.abs(res - np.median(res))))
            keep = np.abs(res) <= max(6.0 * 1.4826 * mad, 20_000.0)
            if keep.sum() >= 3 and not keep.all():
                slope, icpt = np.polyfit(x[keep], y[keep], 1)
                res = (y - (slope * x + icpt))[keep]
        if n >= 3:
            self.residual_rms_s = float(np.sqrt(np.mean(res**2))) / NS_PER_S
        rate = NS_PER_S / slope if slope > 0 else self.nominal_rate_hz
        if not (math.isfinite(rate) and abs(rate / self.nominal_rate_hz - 1.0) < 0.01):
            # A crystal is within a few hundred ppm; anything else is a bad fit.
            rate = self.nominal_rate_hz
        tb = LinearTimebase(t0 + int(round(icpt)), float(rate), i0)
        self._segments[-1] = _Segment(seg.i_start, tb)

    # -- output ----------------------------------------------------------------
    @property
    def timebase(self) -> LinearTimebase:
        """The current line (raises before the first pair)."""
        if not self._segments:
            raise RuntimeError("no (sample, time) pair yet")
        return self._segments[-1].timebase

    @property
    def ready(self) -> bool:
        return bool(self._segments)

    @property
    def rate_hz(self) -> float:
        """Effective sample rate against UTC, Hz."""
        return self.timebase.rate_hz if self._segments else self.nominal_rate_hz

    def to_ns(self, i_sample: float) -> int:
        """UTC ns of a sample index, from the segment that contains it."""
        for seg in reversed(self._segments):
            if i_sample >= seg.i_start:
                return seg.timebase.to_ns(i_sample)
        return self._segments[0].timebase.to_ns(i_sample)

    def is_uncertain(self, i_sample: float) -> bool:
        """True if ``i_sample`` lies where a step or a gap makes its stamp doubtful."""
        return any(a <= i_sample < b for a, b in self.uncertain) or any(
            i_sample >= i for i, _ in self._suspect[:1]
        )


class SegmentedTimebase:
    """A :class:`ClockFit` seen through the ``to_ns`` / ``to_index`` interface the node uses."""

    def __init__(self, fit: ClockFit) -> None:
        self.fit = fit

    def to_ns(self, i_sample: float) -> int:
        return self.fit.to_ns(i_sample)

    def to_index(self, t_ns: int) -> float:
        return self.fit.timebase.to_index(t_ns)

    @property
    def rate_hz(self) -> float:
        return self.fit.rate_hz


# -- chrony -------------------------------------------------------------------


@dataclass(frozen=True)
class ChronyTracking:
    """What ``chronyc -c tracking`` says; offsets in seconds."""

    ref_id: str
    ref_name: str
    stratum: int
    offset_s: float
    """System clock minus true time, s (chrony's "System time", sign as chronyc prints)."""
    rms_offset_s: float
    freq_ppm: float
    leap_status: str

    @property
    def synchronised(self) -> bool:
        return self.leap_status.lower() != "not synchronised" and 0 < self.stratum < 16


def parse_tracking_csv(text: str) -> ChronyTracking:
    """Parse one line of ``chronyc -c tracking``; raise ValueError naming what is wrong."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    f = line.split(",")
    if len(f) < 14:
        raise ValueError(f"chronyc tracking: expected 14 comma-separated fields, got {len(f)}: {line!r}")
    try:
        return ChronyTracking(
            ref_id=f[0],
            ref_name=f[1],
            stratum=int(f[2]),
            offset_s=float(f[4]),
            rms_offset_s=float(f[6]),
            freq_ppm=float(f[7]),
            leap_status=f[13],
        )
    except ValueError as exc:
        raise ValueError(f"chronyc tracking: {exc}: {line!r}") from None


@dataclass(frozen=True)
class ClockReading:
    """The node's view of its clock at one moment."""

    quality: TimeQuality
    offset_s: float | None
    pps_locked: bool


Runner = Callable[[list[str]], str]


def _run_chronyc(cmd: list[str]) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=3, check=True).stdout


class ChronyMonitor:
    """Polls chrony and classifies the clock (see :meth:`classify`).

    ``runner`` runs a command and returns its stdout (tests inject canned output).
    When chronyc is missing or fails, the quality is ``unsynced`` and the reason
    is logged once per change.
    """

    def __init__(
        self,
        chronyc: str = "chronyc",
        *,
        pps_refid: str = "PPS",
        pps_max_offset_s: float = 1e-4,
        ntp_max_offset_s: float = 0.1,
        runner: Runner | None = None,
    ) -> None:
        self.chronyc = chronyc
        self.pps_refid = pps_refid
        self.pps_max_offset_s = pps_max_offset_s
        self.ntp_max_offset_s = ntp_max_offset_s
        self.runner = runner or _run_chronyc
        self.reading = ClockReading("unsynced", None, False)
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def classify(self, tr: ChronyTracking) -> ClockReading:
        """``pps`` when chrony follows the PPS refclock within ``pps_max_offset_s``;
        ``ntp`` when synchronised within ``ntp_max_offset_s``; else ``unsynced``."""
        if not tr.synchronised:
            return ClockReading("unsynced", tr.offset_s, False)
        pps = tr.ref_name.strip().upper().startswith(self.pps_refid.upper())
        locked = pps and abs(tr.offset_s) <= self.pps_max_offset_s
        if locked:
            return ClockReading("pps", tr.offset_s, True)
        if abs(tr.offset_s) <= self.ntp_max_offset_s:
            return ClockReading("ntp", tr.offset_s, False)
        return ClockReading("unsynced", tr.offset_s, False)

    def poll(self) -> ClockReading:
        """Read chrony once and update :attr:`reading`."""
        try:
            out = self.runner([self.chronyc, "-c", "tracking"])
            reading = self.classify(parse_tracking_csv(out))
            error = None
        except FileNotFoundError:
            reading, error = ClockReading("unsynced", None, False), f"{self.chronyc} not found (install chrony)"
        except subprocess.CalledProcessError as exc:
            detail = (exc.stderr or "").strip() or f"exit status {exc.returncode}"
            reading, error = ClockReading("unsynced", None, False), f"chronyc failed: {detail}"
        except (subprocess.TimeoutExpired, ValueError, OSError) as exc:
            reading, error = ClockReading("unsynced", None, False), f"chronyc: {exc}"
        if error != self.error:
            if error:
                log.warning("clock: %s; detections are marked unsynced", error)
            elif self.error:
                log.info("clock: chrony readable again")
        if reading.quality != self.reading.quality:
            log.info("clock quality %s -> %s (offset %s s)", self.reading.quality, reading.quality, reading.offset_s)
        self.error = error
        self.reading = reading
        return reading

    def start(self, poll_s: float) -> None:
        """Poll in a daemon thread every ``poll_s`` seconds (first poll now, synchronously)."""
        self.poll()
        self._thread = threading.Thread(target=self._loop, args=(poll_s,), name="chrony", daemon=True)
        self._thread.start()

    def _loop(self, poll_s: float) -> None:
        while not self._stop.wait(poll_s):
            self.poll()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
