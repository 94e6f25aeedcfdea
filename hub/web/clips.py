"""Where the review page gets a detection's audio, and what it makes of it.

A :class:`ClipProvider` returns the clip of a detection (samples, sample
rate, UTC of the first sample) or None. Two implementations:

* :class:`FolderClips`: a folder of files named ``<detection_id>.flac`` (or
  ``.wav``), as the node's :class:`~shotline.sensor.clips.ClipStore` writes
  them and as replays and tests cut them;
* :class:`NodeHttpClips`: fetches ``GET <base>/clips/<detection_id>.flac``
  from the node's clip server (:mod:`shotline.sensor.clip_server`), with an
  optional bearer token; recent clips are cached in memory.

:class:`ChainClips` asks several in turn. The rest of the module turns a clip
into what a browser shows: 16-bit WAV for playback, a min/max envelope for
the waveform, and a spectrogram PNG (numpy STFT, encoded with zlib).

The clip's first-sample time comes from the FLAC comment the ClipStore
writes (``... first sample UTC ns <int>``); without it the clip is assumed to
start ``default_before_s`` before the detection's onset.
"""

from __future__ import annotations

import io
import logging
import re
import struct
import threading
import urllib.error
import urllib.request
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)

CLIP_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_T0 = re.compile(r"first sample UTC ns (\d+)")


@dataclass(frozen=True)
class Clip:
    """A detection's audio: float32 mono samples (full scale ±1), rate (Hz), UTC of sample 0 (ns) if known."""

    detection_id: str
    samples: np.ndarray
    sample_rate_hz: int
    t0_ns: int | None

    @property
    def duration_s(self) -> float:
        return self.samples.size / self.sample_rate_hz


class ClipProvider(Protocol):
    """Returns the clip of a detection (``node_id`` says which node recorded it), or None."""

    def get(self, detection_id: str, node_id: str | None = None) -> Clip | None: ...


def decode_clip(detection_id: str, data: bytes | Path) -> Clip:
    """Decode FLAC/WAV bytes or a file (any format libsndfile reads) into a :class:`Clip`."""
    import soundfile as sf

    src = io.BytesIO(data) if isinstance(data, bytes) else data
    with sf.SoundFile(src) as f:
        comment = f.comment or ""
        x = f.read(dtype="float32", always_2d=True)
        fs = f.samplerate
    mt = _T0.search(comment)
    return Clip(detection_id, np.ascontiguousarray(x[:, 0]), int(fs), int(mt.group(1)) if mt else None)


def write_clip(path: str | Path, samples: np.ndarray, sample_rate_hz: int, t0_ns: int, detection_id: str) -> Path:
    """Write a FLAC clip the way the node's ClipStore does (24-bit, first-sample time in the comment)."""
    import soundfile as sf

    path = Path(path)
    with sf.SoundFile(path, "w", samplerate=int(sample_rate_hz), channels=1, format="FLAC", subtype="PCM_24") as f:
        f.comment = f"shotline detection {detection_id}; first sample UTC ns {int(t0_ns)}"
        f.write(np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0))
    return path


class FolderClips:
    """Clips from a folder: ``<dir>/<detection_id>.flac|.wav``, ``<dir>/<node_id>/<detection_id>.…`` or
    ``<dir>/<node_id>/clips/<detection_id>.…`` (a node's data folder, as the demo's nodes keep them)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def get(self, detection_id: str, node_id: str | None = None) -> Clip | None:
        if not CLIP_ID.fullmatch(detection_id):
            return None
        folders = [self.directory]
        if node_id and CLIP_ID.fullmatch(node_id):
            folders[:0] = [self.directory / node_id, self.directory / node_id / "clips"]
        for d in folders:
            for ext in (".flac", ".wav"):
                p = d / f"{detection_id}{ext}"
                if p.is_file():
                    try:
                        return decode_clip(detection_id, p)
                    except Exception as exc:  # a damaged file is reported, not fatal
                        log.warning("clip %s unreadable: %s", p, exc)
                        return None
        return None


class NodeHttpClips:
    """Clips fetched from the nodes' clip servers; the last ``cache_size`` clips are kept in memory.

    ``base_urls``: node id -> base URL (``http://10.8.0.11:8780``), a mapping or a function (e.g. one
    that also reads an address from the node's status).
    """

    def __init__(self, base_urls: Mapping[str, str] | Callable[[str], str | None], *, token: str | None = None,
                 timeout_s: float = 5.0, cache_size: int = 256) -> None:
        self._urls = base_urls
        self.token = token
        self.timeout_s = timeout_s
        self._cache: OrderedDict[str, Clip | None] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def base_url(self, node_id: str) -> str | None:
        """The clip server of ``node_id``, None when unknown."""
        return self._urls(node_id) if callable(self._urls) else self._urls.get(node_id)

    def get(self, detection_id: str, node_id: str | None = None) -> Clip | None:
        base = self.base_url(node_id) if node_id else None
        if not CLIP_ID.fullmatch(detection_id) or not base:
            return None
        with self._lock:
            if detection_id in self._cache and self._cache[detection_id] is not None:
                self._cache.move_to_end(detection_id)
                return self._cache[detection_id]
        url = f"{base.rstrip('/')}/clips/{detection_id}.flac"
        req = urllib.request.Request(url)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310 (configured URL)
                data = resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                log.warning("clip %s from %s: HTTP %d", detection_id, node_id, exc.code)
            return None
        except (OSError, urllib.error.URLError) as exc:
            log.warning("clip %s from %s unreachable: %s", detection_id, node_id, exc)
            return None
        try:
            clip = decode_clip(detection_id, data)
        except Exception as exc:
            log.warning("clip %s from %s undecodable: %s", detection_id, node_id, exc)
            return None
        with self._lock:
            self._cache[detection_id] = clip
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return clip


class ChainClips:
    """Asks each provider in turn; the first clip found wins."""

    def __init__(self, providers: Iterable[ClipProvider]) -> None:
        self.providers = list(providers)

    def get(self, detection_id: str, node_id: str | None = None) -> Clip | None:
        for p in self.providers:
            clip = p.get(detection_id, node_id)
            if clip is not None:
                return clip
        return None


# ----------------------------------------------------------------------------- rendering
def wav_bytes(clip: Clip) -> bytes:
    """The clip as 16-bit PCM WAV (every browser plays it; FLAC in <audio> is not universal)."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(clip.samples, -1.0, 1.0), clip.sample_rate_hz, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def envelope(samples: np.ndarray, sample_rate_hz: int, t_start_s: float, t0_s: float, span_s: float,
             n_bins: int) -> tuple[list[float], list[float]]:
    """Min and max of the samples in ``n_bins`` equal bins over ``[t0_s, t0_s + span_s)``.

    ``t_start_s`` is the time of sample 0 on the same axis (seconds); bins
    outside the clip are 0. Values are rounded to 4 decimals (JSON size).
    """
    edges = np.round((t0_s - t_start_s + np.linspace(0.0, span_s, n_bins + 1)) * sample_rate_hz).astype(np.int64)
    edges = np.clip(edges, 0, samples.size)
    lo = np.zeros(n_bins, dtype=np.float32)
    hi = np.zeros(n_bins, dtype=np.float32)
    nonempty = edges[1:] > edges[:-1]
    if nonempty.any() and samples.size:
        # Bins are contiguous, so reduceat from each non-empty bin's start runs exactly to the next
        # non-empty start; only the last one runs on to the array's end: recompute it.
        idx = edges[:-1][nonempty]
        lo[nonempty] = np.minimum.reduceat(samples, idx)
        hi[nonempty] = np.maximum.reduceat(samples, idx)
        last = np.flatnonzero(nonempty)[-1]
        a, b = edges[last], edges[last + 1]
        lo[last], hi[last] = samples[a:b].min(), samples[a:b].max()
    return np.round(lo, 4).tolist(), np.round(hi, 4).tolist()


def spectrogram(samples: np.ndarray, sample_rate_hz: int, *, n_fft: int = 512, hop: int | None = None,
                max_hz: float | None = None, floor_db: float = -100.0) -> tuple[np.ndarray, float, float]:
    """Power spectrogram in dB re full scale: (array[freq, time], seconds per column, Hz per row)."""
    hop = hop or n_fft // 4
    x = np.asarray(samples, dtype=np.float64)
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    n_frames = 1 + (x.size - n_fft) // hop
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop][:n_frames]
    win = np.hanning(n_fft)
    spec = np.abs(np.fft.rfft(frames * win, axis=1)) ** 2 / (win.sum() ** 2 / 4)
    db = 10.0 * np.log10(np.maximum(spec, 10 ** (floor_db / 10))).T
    df = sample_rate_hz / n_fft
    if max_hz is not None:
        db = db[: int(max_hz / df) + 1]
    return db, hop / sample_rate_hz, df


# A perceptually ordered dark-blue -> yellow map (anchors of matplotlib's viridis).
_ANCHORS = np.array([
    [68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
    [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37],
], dtype=np.float64)
_LUT = np.stack([np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_ANCHORS)), _ANCHORS[:, c])
                 for c in range(3)], axis=1).astype(np.uint8)


def png_rgb(rgb: np.ndarray) -> bytes:
    """Encode an (height, width, 3) uint8 array as PNG (stdlib zlib; no imaging library needed)."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[i].tobytes() for i in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def spectrogram_png(clip: Clip, *, max_hz: float = 12000.0, dynamic_range_db: float = 80.0) -> bytes:
    """The clip's spectrogram as a PNG: time left to right, frequency bottom to top, top ``dynamic_range_db``."""
    n_fft = 512 if clip.sample_rate_hz >= 32000 else 256
    db, _, _ = spectrogram(clip.samples, clip.sample_rate_hz, n_fft=n_fft, max_hz=min(max_hz, clip.sample_rate_hz / 2))
    top = float(db.max())
    level = np.clip((db - (top - dynamic_range_db)) / dynamic_range_db, 0.0, 1.0)
    rgb = _LUT[(level * 255).astype(np.uint8)][::-1]
    return png_rgb(np.ascontiguousarray(rgb))
