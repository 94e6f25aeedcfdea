"""Background noise: urban ambience plus microphone self-noise, shaped in bulk by FFT."""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft

from .sources import P_REF_PA

TRAFFIC_CORNER_HZ = 500.0  # below this the spectrum steepens (traffic rumble)
LOW_CUT_HZ = 20.0


def urban_psd_shape(f_hz: np.ndarray) -> np.ndarray:
    """Relative power spectral density of urban background noise (dimensionless).

    Pink (1/f) above ~500 Hz, brown-ish (1/f²) traffic rumble below, rolled
    off under 20 Hz and above 10 kHz (distant sources lose their top end).
    """
    f = np.maximum(np.asarray(f_hz, float), 1e-3)
    shape = (1.0 / f) * (1.0 + TRAFFIC_CORNER_HZ / f)
    shape *= (f / LOW_CUT_HZ) ** 4 / (1.0 + (f / LOW_CUT_HZ) ** 4)
    shape /= 1.0 + (f / 10_000.0) ** 2
    return shape


def noise_pa(
    n_samples: int,
    sample_rate_hz: float,
    background_db: float | None,
    self_noise_db: float | None,
    rng: np.random.Generator,
) -> np.ndarray:
    """Gaussian noise (Pa, float64) of ``n_samples``: urban background at ``background_db``
    SPL plus flat self-noise at ``self_noise_db`` SPL (both RMS over the band; None = off).

    One complex-Gaussian spectrum and one inverse FFT, so a minute at 48 kHz
    costs tens of milliseconds.
    """
    n_bins = n_samples // 2 + 1
    f = np.arange(n_bins) * (sample_rate_hz / n_samples)
    power = np.zeros(n_bins)
    for level_db, shape in (
        (background_db, urban_psd_shape(f)),
        (self_noise_db, np.ones(n_bins)),
    ):
        if level_db is None:
            continue
        shape = shape.copy()
        shape[0] = 0.0
        # Scale so that the expected mean square equals the target: Parseval for a
        # one-sided spectrum of unit-variance complex bins.
        ms = 2.0 * shape.sum() / n_samples**2
        power += shape * (P_REF_PA * 10 ** (level_db / 20)) ** 2 / ms
    if not power.any():
        return np.zeros(n_samples)
    spec = rng.standard_normal(n_bins) + 1j * rng.standard_normal(n_bins)
    spec *= np.sqrt(power / 2.0)
    return sfft.irfft(spec, n_samples)
