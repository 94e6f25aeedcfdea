"""First-arrival onset picker: AIC coarse pick, then sub-sample edge refinement.

The picker works on a short window of (high-pass filtered) samples around a
trigger. It is a pure function of that window, so the streaming detector and the
batch path give identical picks whenever they hand it identical windows.

Steps
-----
1. Coarse pick: Maeda's AIC on the samples,
   ``AIC(k) = k log var(w[:k]) + (N - k - 1) log var(w[k:])``; its minimum is the
   first sample of the "signal" segment.
2. First peak: in ``[k0, k0 + peak_window]``, with the polarity of the largest
   excursion, take the first sample above max(1/4 of that maximum, min(0.6 of it,
   5 noise RMS)) and climb to its local maximum. This is the peak of the *first*
   arrival, so a louder echo later does not move it (unless it is more than ~4x
   louder and within the window).
3. Sub-sample onset: walking back from that peak, the rising edge crosses
   ``fraction`` (default 0.5) of the peak; the crossing is interpolated linearly
   between the two samples that bracket it. For a pulse whose rise is limited by
   the band limit of the recording chain (a step smoothed by a symmetric kernel),
   the half-amplitude point is the inflection point of the edge, where linear
   interpolation is most accurate, and it coincides with the start of the
   continuous pressure pulse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["EdgePick", "aic_pick", "pick_first_arrival"]

# Fraction of the window maximum that makes an excursion count as "the first
# strong one" when looking for the first arrival's peak.
_PEAK_GATE = 0.25


@dataclass(frozen=True)
class EdgePick:
    """A sub-sample pick, in samples relative to the start of the window."""

    i_onset: float  # sub-sample onset index (samples, window-relative)
    sigma_samples: float  # 1-sigma uncertainty of i_onset (samples)
    i_first_peak: int  # index of the first arrival's peak (window-relative)
    polarity: int  # +1 if the first arrival is a positive excursion, else -1
    rise_samples: float  # 10-90 % rise time of the first arrival (samples); NaN if unknown
    refined: bool  # False if the edge could not be bracketed and the AIC pick was used


def aic_pick(w: np.ndarray) -> int:
    """Maeda's AIC onset on samples ``w``; returns the first index of the signal segment.

    O(len(w)) with cumulative sums. Segments shorter than two samples are excluded
    because their variance is meaningless.
    """
    n = int(w.size)
    if n < 5:
        return n // 2
    w = np.asarray(w, dtype=np.float64)
    c1 = np.cumsum(w)
    c2 = np.cumsum(w * w)
    k = np.arange(2, n - 1, dtype=np.float64)  # samples in the first segment
    ki = np.arange(2, n - 1)
    s1 = c1[ki - 1]
    s2 = c2[ki - 1]
    m = n - k
    t1 = c1[-1] - s1
    t2 = c2[-1] - s2
    var1 = s2 / k - (s1 / k) ** 2
    var2 = t2 / m - (t1 / m) ** 2
    # A floor on the variance keeps log() finite on digital silence.
    tiny = 1e-30 + 1e-12 * (c2[-1] / n)
    aic = k * np.log(np.maximum(var1, tiny)) + (m - 1.0) * np.log(np.maximum(var2, tiny))
    return int(ki[int(np.argmin(aic))])


def pick_first_arrival(
    w: np.ndarray,
    k0: int,
    noise_rms: float,
    *,
    fraction: float = 0.5,
    peak_window: int = 48,
    back_window: int = 48,
) -> EdgePick:
    """Refine a coarse onset ``k0`` in window ``w`` to a sub-sample first-arrival time.

    Parameters
    ----------
    w:
        Window of samples (full scale units), window-relative indexing.
    k0:
        Coarse onset (e.g. from :func:`aic_pick`), window-relative sample index.
    noise_rms:
        RMS of the noise in ``w`` (full scale units); sets the reported sigma.
    fraction:
        Fraction of the first peak at which the rising edge is timed (0 < f < 1).
    peak_window:
        How far after ``k0`` the first peak is searched (samples).
    back_window:
        How far before ``k0`` the edge crossing may lie (samples); a coarse pick can
        be late by a few samples.
    """
    n = int(w.size)
    k0 = int(min(max(k0, 0), max(n - 1, 0)))
    raw = w[k0 : min(n, k0 + peak_window + 1)]
    if raw.size == 0 or not np.isfinite(raw).all() or not np.any(raw):
        return EdgePick(k0 - 0.5, 1.0, k0, 1, math.nan, False)
    # Polarity of the largest excursion; the first arrival is looked for with that
    # sign only, which halves the chance that a noise spike passes the gate and
    # keeps the high-passed pulse's opposite-sign tail out.
    polarity = 1 if raw[int(np.argmax(np.abs(raw)))] >= 0.0 else -1
    seg = polarity * raw
    m = float(seg.max())
    # The first excursion that is clearly signal: a fraction of the window maximum,
    # but at least a few noise RMS so that noise before the edge is skipped.
    gate = max(_PEAK_GATE * m, min(0.6 * m, 5.0 * noise_rms))
    j = int(np.argmax(seg >= gate))
    # Climb to the local maximum (a handful of samples on a real edge); look two
    # samples ahead so that noise on a slow edge does not stop the climb early.
    while True:
        ahead = seg[j + 1 : j + 3]
        if ahead.size == 0 or ahead.max() <= seg[j]:
            break
        j += 1 + int(np.argmax(ahead > seg[j]))
    kp = k0 + j
    peak = float(seg[j])
    lo = max(0, k0 - back_window)
    sy = polarity * w[lo : kp + 1]
    level = fraction * peak
    below = np.flatnonzero(sy[:-1] < level)
    if below.size == 0:
        # The edge starts before the window could show it; fall back to AIC.
        return EdgePick(k0 - 0.5, 1.0, kp, polarity, math.nan, False)
    kb = int(below[-1])
    y0 = float(sy[kb])
    y1 = float(sy[kb + 1])
    slope = y1 - y0  # > 0 by construction (y1 >= level > y0)
    frac = (level - y0) / slope
    i_onset = lo + kb + frac

    # Uncertainty: noise on the two bracketing samples and on the peak level,
    # divided by the edge slope; plus the discretisation error of a linear
    # interpolation, which approaches that of a uniform +-0.5 sample when the
    # whole rise happens within one sample (slope ~ peak).
    var_noise = noise_rms**2 * ((1.0 - frac) ** 2 + frac**2 + fraction**2) / slope**2
    steep = min(1.0, slope / peak)
    var_interp = (1.0 / 12.0) * steep**8 + 0.02**2
    sigma = math.sqrt(var_noise + var_interp)

    rise = _rise_samples(sy, peak)
    return EdgePick(i_onset, sigma, kp, polarity, rise, True)


def _rise_samples(sy: np.ndarray, peak: float) -> float:
    """10-90 % rise time (samples) of the edge ending at ``sy[-1]`` (the peak)."""
    t10 = _crossing_back(sy, 0.1 * peak)
    t90 = _crossing_back(sy, 0.9 * peak)
    if t10 is None or t90 is None:
        return math.nan
    return max(0.0, t90 - t10)


def _crossing_back(sy: np.ndarray, level: float) -> float | None:
    below = np.flatnonzero(sy[:-1] < level)
    if below.size == 0:
        return None
    k = int(below[-1])
    return k + (level - sy[k]) / (sy[k + 1] - sy[k])
