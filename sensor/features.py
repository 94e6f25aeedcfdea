"""Onset-anchored log-mel features for the impulse classifier (numpy + scipy only).

One function, :func:`log_mel_patch`, turns a window of audio around a trigger's
onset into the classifier's input patch. The node and the training code both
call it, so what the model saw in training is exactly what it sees in the field.

Why these choices
-----------------
* **One analysis rate, 12 kHz.** Every input is resampled (polyphase, scipy's
  ``resample_poly``) to :data:`FEATURE_RATE_HZ` before anything else, and the
  mel bank stops at :data:`F_MAX_HZ` = 4.8 kHz, under the anti-alias roll-off of
  a 12 kHz recorder. A 48 kHz node therefore sees the same band as the 12 kHz
  archive of a commercial sensor, and a model trained on one generalises to
  the other; the patch is (nearly) the same for 12, 16, 44.1 and 48 kHz input.
* **Anchored at the onset.** The patch starts :data:`PRE_ONSET_S` before the
  onset (a little of the noise before the event) and covers ~0.47 s after it:
  long enough for a firecracker string (bangs 30-150 ms apart), the echo tail
  of a gunshot, or the ringing of a hammer.
* **Level-free.** Log-mel energies are in dB relative to the patch's own
  maximum and floored at :data:`DYNAMIC_RANGE_DB` below it, so the absolute
  level (distance, microphone gain, full scale) does not enter; what remains is
  spectral shape, time structure and the event-to-background contrast.

Shapes: the patch is ``(N_FRAMES, N_MELS)`` float32 in [0, 1] (0 = floor,
1 = the loudest cell); frames are :data:`HOP` samples (10.7 ms) apart at 12 kHz.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import signal

__all__ = [
    "FEATURE_RATE_HZ",
    "FEATURE_SPEC",
    "N_FRAMES",
    "N_MELS",
    "PATCH_SHAPE",
    "PRE_ONSET_S",
    "log_mel_patch",
    "mel_filterbank",
    "resample_to_feature_rate",
    "window_s",
]

FEATURE_RATE_HZ = 12_000  # analysis rate (Hz): what a 12 kHz archive sensor records
N_FFT = 256  # frame length (samples at 12 kHz, 21.3 ms)
HOP = 128  # frame hop (samples at 12 kHz, 10.7 ms)
N_FRAMES = 48  # frames per patch
N_MELS = 32  # mel bands
F_MIN_HZ = 100.0  # lowest mel edge (Hz): below, microphones and wind differ too much
F_MAX_HZ = 4_800.0  # highest mel edge (Hz): under a 12 kHz recorder's anti-alias roll-off
PRE_ONSET_S = 0.05  # patch start before the onset (s)
DYNAMIC_RANGE_DB = 80.0  # floor below the patch maximum (dB)
_EPS_POWER = 1e-12  # power floor before the log (digital silence)
# Extra audio either side that the resampling filter needs (s), so that the
# patch itself is free of the filter's edge transients.
_MARGIN_S = 0.01

PATCH_SAMPLES = (N_FRAMES - 1) * HOP + N_FFT  # 6272 samples at 12 kHz = 0.5227 s
PATCH_SHAPE = (N_FRAMES, N_MELS)

# Everything a model depends on; stored in the model manifest and checked at load.
FEATURE_SPEC: dict[str, object] = {
    "name": "log_mel_onset_v1",
    "feature_rate_hz": FEATURE_RATE_HZ,
    "n_fft": N_FFT,
    "hop": HOP,
    "n_frames": N_FRAMES,
    "n_mels": N_MELS,
    "f_min_hz": F_MIN_HZ,
    "f_max_hz": F_MAX_HZ,
    "pre_onset_s": PRE_ONSET_S,
    "dynamic_range_db": DYNAMIC_RANGE_DB,
    "window": "hann",
    "mel_scale": "htk",
    "normalisation": "dB re patch max, floored, scaled to [0, 1]",
}


def window_s() -> tuple[float, float]:
    """Audio the features need around an onset: (seconds before, seconds after)."""
    after = PATCH_SAMPLES / FEATURE_RATE_HZ - PRE_ONSET_S
    return (PRE_ONSET_S + _MARGIN_S, after + _MARGIN_S)


def _hz_to_mel(f_hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f_hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel) / 2595.0) - 1.0)


@lru_cache(maxsize=4)
def mel_filterbank(
    n_mels: int = N_MELS,
    n_fft: int = N_FFT,
    sample_rate_hz: int = FEATURE_RATE_HZ,
    f_min_hz: float = F_MIN_HZ,
    f_max_hz: float = F_MAX_HZ,
) -> np.ndarray:
    """Triangular HTK-mel filters, ``(n_fft // 2 + 1, n_mels)``, each of unit area in bins.

    Unit area keeps a flat noise spectrum flat across bands; the narrow low bands
    that fall between FFT bins are widened to at least one bin so no band is empty.
    """
    f_bins = np.arange(n_fft // 2 + 1) * sample_rate_hz / n_fft
    edges = _mel_to_hz(np.linspace(_hz_to_mel(f_min_hz), _hz_to_mel(f_max_hz), n_mels + 2))
    df = sample_rate_hz / n_fft
    fb = np.zeros((f_bins.size, n_mels))
    for k in range(n_mels):
        lo, mid, hi = edges[k], edges[k + 1], edges[k + 2]
        left, right = max(mid - lo, df), max(hi - mid, df)  # at least one bin wide
        tri = np.minimum((f_bins - (mid - left)) / left, ((mid + right) - f_bins) / right)
        fb[:, k] = np.clip(tri, 0.0, None)
        fb[:, k] /= fb[:, k].sum()
    return fb.astype(np.float32)


@lru_cache(maxsize=16)
def _ratio(sample_rate_hz: int) -> tuple[int, int]:
    g = math.gcd(int(sample_rate_hz), FEATURE_RATE_HZ)
    return FEATURE_RATE_HZ // g, int(sample_rate_hz) // g


def resample_to_feature_rate(x: np.ndarray, sample_rate_hz: int) -> np.ndarray:
    """``x`` at ``sample_rate_hz`` resampled to 12 kHz (polyphase FIR, Kaiser window).

    The first output sample is at the time of the first input sample.
    """
    if int(sample_rate_hz) != sample_rate_hz or sample_rate_hz <= 0:
        raise ValueError(f"sample_rate_hz must be a positive integer, got {sample_rate_hz!r}")
    x = np.asarray(x, dtype=np.float64)
    if sample_rate_hz == FEATURE_RATE_HZ:
        return x
    up, down = _ratio(int(sample_rate_hz))
    return signal.resample_poly(x, up, down)


def log_mel_patch(window: np.ndarray, sample_rate_hz: int, i_onset: float) -> np.ndarray:
    """The classifier's input patch for an onset at sample ``i_onset`` of ``window``.

    ``window``: mono samples (full scale +-1; any dtype) at ``sample_rate_hz``
    (any integer rate >= 8 kHz); ``i_onset``: onset position in samples from the
    start of ``window`` (sub-sample allowed). The window should cover
    :func:`window_s` around the onset; missing audio at either end is treated
    as silence. Returns ``(N_FRAMES, N_MELS)`` float32 in [0, 1].
    """
    x = np.asarray(window)
    if x.ndim != 1:
        raise ValueError(f"window must be 1-D (mono), got shape {x.shape}")
    if sample_rate_hz < 8000:
        raise ValueError(f"sample_rate_hz must be >= 8000 Hz, got {sample_rate_hz}")
    if not math.isfinite(i_onset):
        raise ValueError(f"i_onset must be finite, got {i_onset!r}")
    fs = int(sample_rate_hz)
    # Cut what the patch needs (plus the filter margin) before resampling: cheap
    # and independent of how much audio the caller hands over.
    t_onset = float(i_onset) / fs
    pre, post = window_s()
    i0 = int(math.floor((t_onset - pre) * fs))
    i1 = int(math.ceil((t_onset + post) * fs)) + 1
    seg = np.zeros(i1 - i0, dtype=np.float64)
    a, b = max(i0, 0), min(i1, x.size)
    if b > a:
        seg[a - i0 : b - i0] = x[a:b]
    seg = np.nan_to_num(seg, nan=0.0, posinf=1.0, neginf=-1.0)
    y = resample_to_feature_rate(seg, fs)
    # Patch start in the 12 kHz stream, rounded to the nearest sample (<= 42 us,
    # negligible against the 10.7 ms hop).
    start = int(round((t_onset - PRE_ONSET_S - i0 / fs) * FEATURE_RATE_HZ))
    y = y[start : start + PATCH_SAMPLES]
    if y.size < PATCH_SAMPLES:
        y = np.pad(y, (0, PATCH_SAMPLES - y.size))
    frames = np.lib.stride_tricks.sliding_window_view(y, N_FFT)[::HOP]
    spec = np.fft.rfft(frames * _hann(), axis=1)
    power = spec.real**2 + spec.imag**2
    mel = power @ mel_filterbank()
    db = 10.0 * np.log10(np.maximum(mel, _EPS_POWER))
    db -= db.max()
    patch = np.clip(db / DYNAMIC_RANGE_DB + 1.0, 0.0, 1.0)
    return patch.astype(np.float32)


@lru_cache(maxsize=1)
def _hann() -> np.ndarray:
    return signal.get_window("hann", N_FFT).astype(np.float64)
