"""The installer's level meter: live dBFS and dB SPL with a bar.

``shotline-sensor level`` opens the configured device and prints, every
``interval_s``, the RMS and peak level of the last interval in dBFS and, with
the microphone's calibration constant (``[node] full_scale_spl_db``), in dB SPL
(unweighted). A technician claps or fires a calibrator at the microphone and
checks that the levels move, that quiet background sits well above the
converter's own noise, and that nothing clips (``CLIP`` at the end of the line).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TextIO

import numpy as np

BAR_FLOOR_DBFS = -90.0


@dataclass(frozen=True)
class Level:
    """Levels of one interval."""

    rms_dbfs: float
    peak_dbfs: float
    rms_db_spl: float | None
    peak_db_spl: float | None
    clipped: bool


def _dbfs(v: float) -> float:
    return 20.0 * math.log10(v) if v > 0 else -math.inf


def measure(x: np.ndarray, full_scale_spl_db: float | None = None, clip_level: float = 0.999) -> Level:
    """Levels of samples in full scale. dBFS here is re a full-scale peak (a full-scale sine reads -3 dB RMS)."""
    x = np.asarray(x, dtype=np.float64)
    rms = float(np.sqrt(np.mean(x**2))) if len(x) else 0.0
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    r, p = _dbfs(rms), _dbfs(peak)
    spl = full_scale_spl_db
    return Level(r, p, r + spl if spl is not None else None, p + spl if spl is not None else None,
                 peak >= clip_level)


def levels(blocks: Iterable[tuple[int, np.ndarray]], sample_rate_hz: int, interval_s: float = 0.1,
           full_scale_spl_db: float | None = None) -> Iterator[Level]:
    """One :class:`Level` per ``interval_s`` of audio from ``(index, block)`` pairs."""
    n = max(1, int(round(interval_s * sample_rate_hz)))
    buf = np.zeros(0, dtype=np.float32)
    for _, block in blocks:
        buf = np.concatenate([buf, block])
        while len(buf) >= n:
            yield measure(buf[:n], full_scale_spl_db)
            buf = buf[n:]


def format_level(lv: Level, width: int = 40) -> str:
    """``-42.1 dBFS rms  -20.3 peak   71.9 dB SPL  |#########-----     |`` with ``CLIP`` when clipped."""
    def frac(db: float) -> float:
        return min(1.0, max(0.0, (db - BAR_FLOOR_DBFS) / -BAR_FLOOR_DBFS)) if math.isfinite(db) else 0.0

    n_rms = int(round(frac(lv.rms_dbfs) * width))
    n_peak = int(round(frac(lv.peak_dbfs) * width))
    bar = "#" * n_rms + "-" * max(0, n_peak - n_rms) + " " * (width - max(n_rms, n_peak))
    spl = f"{lv.rms_db_spl:6.1f} dB SPL" if lv.rms_db_spl is not None and math.isfinite(lv.rms_db_spl) else "   ? dB SPL"
    return (f"{lv.rms_dbfs:6.1f} dBFS rms {lv.peak_dbfs:6.1f} peak {spl} |{bar}|"
            + (" CLIP" if lv.clipped else ""))


def run_meter(blocks: Iterable[tuple[int, np.ndarray]], sample_rate_hz: int, *, interval_s: float = 0.1,
              full_scale_spl_db: float | None = None, out: TextIO = sys.stdout, tty: bool | None = None) -> int:
    """Print levels until the blocks end; return the number of lines. On a terminal it redraws one line."""
    tty = out.isatty() if tty is None else tty
    n = 0
    for lv in levels(blocks, sample_rate_hz, interval_s, full_scale_spl_db):
        line = format_level(lv)
        out.write(("\r" + line + "\033[K") if tty else line + "\n")
        out.flush()
        n += 1
    if tty:
        out.write("\n")
    return n
