"""Recent audio and the clips saved from it.

:class:`RingBuffer` keeps the last few seconds of audio addressed by absolute
sample index (what the trigger and the time base use). :class:`ClipStore`
turns each detection into a FLAC file, ``<detection_id>.flac``, holding
``before_s`` before to ``after_s`` after the onset, once the audio after it has
arrived; files are written by a background thread so that the audio thread
never waits for the SD card, and pruned by age and disk quota (oldest first).
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

CLIP_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
"""Detection ids that may name a clip file (no separators, no leading dot)."""


class RingBuffer:
    """The last ``capacity`` samples of a stream, addressed by absolute index.

    Samples skipped by a capture gap read as zeros.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1 sample")
        self.capacity = int(capacity)
        self._buf = np.zeros(self.capacity, dtype=np.float32)
        self.end = 0
        """One past the newest sample's index."""

    @property
    def start(self) -> int:
        """Oldest index still held."""
        return max(0, self.end - self.capacity)

    def write(self, i0: int, x: np.ndarray) -> None:
        """Append samples whose first has index ``i0`` (>= :attr:`end`; a jump is a gap)."""
        if i0 < self.end:
            raise ValueError(f"ring buffer: block at {i0} before the end {self.end}")
        if i0 > self.end:
            self._put(self.end, np.zeros(min(i0 - self.end, self.capacity), dtype=np.float32), i0)
        self._put(i0, np.asarray(x, dtype=np.float32), i0 + len(x))

    def _put(self, i0: int, x: np.ndarray, new_end: int) -> None:
        n = len(x)
        if n >= self.capacity:
            x, i0 = x[-self.capacity:], i0 + n - self.capacity
            n = self.capacity
        j = i0 % self.capacity
        k = min(n, self.capacity - j)
        self._buf[j:j + k] = x[:k]
        self._buf[:n - k] = x[k:]
        self.end = new_end

    def read(self, i0: int, i1: int) -> np.ndarray:
        """Samples ``[i0, i1)``; parts outside what is held read as zeros."""
        out = np.zeros(max(0, i1 - i0), dtype=np.float32)
        a, b = max(i0, self.start), min(i1, self.end)
        if b > a:
            ja, n = a % self.capacity, b - a
            k = min(n, self.capacity - ja)
            out[a - i0:a - i0 + k] = self._buf[ja:ja + k]
            out[a - i0 + k:b - i0] = self._buf[:n - k]
        return out


@dataclass(frozen=True)
class _Pending:
    detection_id: str
    i0: int
    i1: int
    t0_ns: int


class ClipStore:
    """Saves a FLAC clip per detection and prunes old ones.

    ``directory``: where clips go. ``before_s``/``after_s``: clip extent around
    the onset. ``max_age_s`` and ``quota_bytes``: pruning limits.
    """

    def __init__(
        self,
        directory: str | Path,
        sample_rate_hz: int,
        *,
        before_s: float = 1.0,
        after_s: float = 2.0,
        max_age_s: float = 30 * 86400.0,
        quota_bytes: int = 1 << 30,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.sample_rate_hz = int(sample_rate_hz)
        self.n_before = int(round(before_s * sample_rate_hz))
        self.n_after = int(round(after_s * sample_rate_hz))
        self.max_age_s = max_age_s
        self.quota_bytes = quota_bytes
        self._pending: list[_Pending] = []
        self._q: queue.Queue[tuple[_Pending, np.ndarray] | None] = queue.Queue(maxsize=64)
        self._thread = threading.Thread(target=self._writer, name="clips", daemon=True)
        self._thread.start()
        self.n_written = 0
        self.n_dropped = 0
        self.n_pruned = 0
        self._last_prune = 0.0

    @property
    def ring_samples(self) -> int:
        """Ring buffer length this store needs (clip plus two seconds of slack), samples."""
        return self.n_before + self.n_after + 2 * self.sample_rate_hz

    def path_for(self, detection_id: str) -> Path:
        if not CLIP_ID.fullmatch(detection_id):
            raise ValueError(f"not a clip id: {detection_id!r}")
        return self.directory / f"{detection_id}.flac"

    def request(self, detection_id: str, i_onset: float, t0_ns: int) -> None:
        """Ask for a clip around ``i_onset``; ``t0_ns`` is the UTC of its first sample."""
        i = int(np.floor(i_onset))
        self._pending.append(_Pending(detection_id, i - self.n_before, i + self.n_after, int(t0_ns)))

    def poll(self, ring: RingBuffer, *, final: bool = False) -> None:
        """Hand clips whose audio is complete (or everything, if ``final``) to the writer."""
        keep = []
        for p in self._pending:
            if p.i1 <= ring.end or final:
                try:
                    self._q.put_nowait((p, ring.read(p.i0, min(p.i1, ring.end))))
                except queue.Full:
                    self.n_dropped += 1
                    log.warning("clip writer behind: clip %s dropped", p.detection_id)
            else:
                keep.append(p)
        self._pending = keep

    def close(self, timeout_s: float = 10.0) -> None:
        """Finish writing queued clips."""
        self._q.put(None)
        self._thread.join(timeout=timeout_s)

    def _writer(self) -> None:
        import soundfile as sf

        while True:
            item = self._q.get()
            if item is None:
                return
            p, x = item
            path = self.path_for(p.detection_id)
            tmp = path.with_suffix(".flac.part")
            try:
                with sf.SoundFile(tmp, "w", samplerate=self.sample_rate_hz, channels=1,
                                  format="FLAC", subtype="PCM_24") as f:
                    # Where the clip sits in time, for whoever reviews it.
                    f.comment = f"shotline detection {p.detection_id}; first sample UTC ns {p.t0_ns}"
                    f.write(np.clip(x, -1.0, 1.0))
                tmp.replace(path)
                self.n_written += 1
            except Exception:
                log.exception("cannot write clip %s", path)
                tmp.unlink(missing_ok=True)
            if time.monotonic() - self._last_prune > 60.0 or self.n_written % 20 == 0:
                self.prune()

    def prune(self, now_s: float | None = None) -> int:
        """Delete clips older than ``max_age_s``, then the oldest until under quota; return how many."""
        now_s = time.time() if now_s is None else now_s
        self._last_prune = time.monotonic()
        files = []
        for f in self.directory.glob("*.flac"):
            try:
                st = f.stat()
            except FileNotFoundError:
                continue
            files.append((st.st_mtime, st.st_size, f))
        files.sort()
        total = sum(s for _, s, _ in files)
        n = 0
        for mtime, size, f in files:
            if now_s - mtime > self.max_age_s or total > self.quota_bytes:
                f.unlink(missing_ok=True)
                total -= size
                n += 1
        self.n_pruned += n
        return n

    def list(self) -> list[tuple[str, int, float]]:
        """Stored clips: ``(detection_id, size_bytes, mtime_s)``, newest first."""
        out = []
        for f in self.directory.glob("*.flac"):
            try:
                st = f.stat()
            except FileNotFoundError:
                continue
            out.append((f.name[:-5], st.st_size, st.st_mtime))
        return sorted(out, key=lambda r: -r[2])
