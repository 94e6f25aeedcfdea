"""Audio sources: consecutive float32 blocks with their absolute sample index.

A source yields ``(i_first_sample, block)`` pairs; samples are mono float32
in [-1, 1] of digital full scale, and ``i_first_sample`` counts from the first
sample of the stream, which is what the :class:`~shotline.core.timebase.LinearTimebase`
maps to UTC. This module holds the file replay used by the demo, the tests and
researchers; live capture is :class:`shotline.sensor.capture.LiveSource`.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from shotline.core.timebase import LinearTimebase


class AudioSourceError(RuntimeError):
    """An audio source that cannot be opened or read; the message says which one."""


class AudioSource(ABC):
    """A stream of audio blocks with a sample rate and a time base."""

    sample_rate_hz: int
    timebase: LinearTimebase

    @abstractmethod
    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(i_first_sample, samples)``; samples float32 mono, full scale 1.0."""


class FileSource(AudioSource):
    """Replays one channel of an audio file (any libsndfile format).

    ``speed`` paces the replay: 1.0 is real time (a block is released when its
    last sample would have been captured), ``None`` is as fast as possible.
    ``start_time_ns`` is the UTC stamp of the file's first sample (for a
    recording bundle, the node's own stamp from the manifest).
    ``wall_start`` (``time.monotonic()`` seconds) lets several sources pace
    against one common start, as the nodes of one scene do.
    """

    def __init__(
        self,
        path: str | Path,
        start_time_ns: int,
        *,
        channel: int = 0,
        block_s: float = 0.1,
        speed: float | None = None,
        wall_start: float | None = None,
        stop_event: threading.Event | None = None,
    ) -> None:
        import soundfile as sf

        self.path = Path(path)
        try:
            info = sf.info(str(self.path))
        except (RuntimeError, OSError) as exc:  # soundfile raises LibsndfileError(RuntimeError)
            raise AudioSourceError(f"cannot open audio file {self.path}: {exc}") from None
        if not 0 <= channel < info.channels:
            raise AudioSourceError(
                f"{self.path} has {info.channels} channel(s); channel {channel} does not exist"
            )
        if block_s <= 0:
            raise ValueError("block_s must be positive seconds")
        if speed is not None and speed <= 0:
            raise ValueError("speed must be positive (1.0 = real time) or None")
        self.sample_rate_hz = int(info.samplerate)
        self.n_samples = int(info.frames)
        self.channel = channel
        self.n_block = max(1, int(round(block_s * self.sample_rate_hz)))
        self.speed = speed
        self.wall_start = wall_start
        self.stop_event = stop_event
        self.timebase = LinearTimebase(int(start_time_ns), float(self.sample_rate_hz))

    @property
    def duration_s(self) -> float:
        """Length of the file, seconds."""
        return self.n_samples / self.sample_rate_hz

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        import soundfile as sf

        t_wall0 = time.monotonic() if self.wall_start is None else self.wall_start
        i = 0
        with sf.SoundFile(str(self.path)) as f:
            for block in f.blocks(blocksize=self.n_block, dtype="float32", always_2d=True):
                if self.stop_event is not None and self.stop_event.is_set():
                    return
                x = np.ascontiguousarray(block[:, self.channel])
                if self.speed is not None:
                    due = t_wall0 + (i + len(x)) / self.sample_rate_hz / self.speed
                    delay = due - time.monotonic()
                    if delay > 0:
                        if self.stop_event is not None:
                            if self.stop_event.wait(delay):
                                return
                        else:
                            time.sleep(delay)
                yield i, x
                i += len(x)
