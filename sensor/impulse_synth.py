"""Analytic synthetic impulses and noise, for tests, benchmarks and self-checks.

The Friedlander waveform ``p(t) = A (1 - t/T) exp(-b t/T)`` for ``t >= 0`` (0 before)
is a standard model of a muzzle blast's positive phase and negative tail. It is
rendered *analytically* at a continuous start time and band-limited by a Gaussian
kernel of standard deviation ``smooth_s`` (a stand-in for the microphone and
anti-alias filter). The convolution has a closed form, so a sub-sample start time
is exact, not quantised to a grid: with ``mu = t - a s^2`` and ``a = b/T``,

``q(t) = A exp(-a t + a^2 s^2 / 2) [Phi(mu/s) - (mu Phi(mu/s) + s phi(mu/s)) / T]``.

The Gaussian kernel is symmetric, so the band-limited edge is centred on the
true start time: that is the "true onset" benchmarks compare picks against.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

__all__ = ["friedlander", "add_friedlander", "white_noise", "pink_noise"]


def friedlander(
    t_s: np.ndarray, *, period_s: float, decay: float = 1.5, smooth_s: float = 0.0
) -> np.ndarray:
    """Unit-amplitude Friedlander pulse starting at t = 0, evaluated at times ``t_s`` (s).

    period_s: positive-phase duration T (s); decay: the dimensionless b;
    smooth_s: standard deviation of the Gaussian band-limiting kernel (s), 0 = none.
    """
    t = np.asarray(t_s, dtype=np.float64)
    T = float(period_s)
    a = decay / T
    if smooth_s <= 0.0:
        return np.where(t >= 0.0, (1.0 - t / T) * np.exp(-a * np.maximum(t, 0.0)), 0.0)
    s = float(smooth_s)
    out = np.zeros_like(t)
    live = t > -12.0 * s  # the kernel is negligible beyond 12 sigma
    tl = t[live]
    mu = tl - a * s * s
    z = mu / s
    cdf = special.ndtr(z)
    pdf = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    out[live] = np.exp(-a * tl + 0.5 * (a * s) ** 2) * (cdf - (mu * cdf + s * pdf) / T)
    return out


def add_friedlander(
    x: np.ndarray,
    sample_rate_hz: float,
    onset_s: float,
    *,
    amplitude: float = 1.0,
    period_s: float = 0.0005,
    decay: float = 1.5,
    smooth_s: float | None = None,
) -> np.ndarray:
    """Add a Friedlander pulse starting at ``onset_s`` (s, from sample 0) into ``x`` in place.

    smooth_s defaults to 0.4 sample periods (10-90 % rise of about one sample, like a
    good anti-alias filter). Only the samples the pulse reaches are computed.
    Returns ``x``.
    """
    fs = float(sample_rate_hz)
    if smooth_s is None:
        smooth_s = 0.4 / fs
    i0 = max(0, int(math.floor((onset_s - 12.0 * smooth_s) * fs)))
    # The pulse decays as exp(-b t / T); 40 periods leaves < 1e-20 of it.
    i1 = min(x.size, int(math.ceil((onset_s + 40.0 * period_s / max(decay, 0.1)) * fs)) + 1)
    if i1 <= i0:
        return x
    t = np.arange(i0, i1) / fs - onset_s
    x[i0:i1] += amplitude * friedlander(t, period_s=period_s, decay=decay, smooth_s=smooth_s)
    return x


def white_noise(n_samples: int, rng: np.random.Generator, rms: float = 1.0) -> np.ndarray:
    """Gaussian white noise with the given RMS (full scale units)."""
    return rms * rng.standard_normal(n_samples)


def pink_noise(n_samples: int, rng: np.random.Generator, rms: float = 1.0) -> np.ndarray:
    """Gaussian 1/f ("pink") noise with the given RMS, shaped in the frequency domain."""
    if n_samples == 0:
        return np.zeros(0)
    spec = rng.standard_normal(n_samples // 2 + 1) + 1j * rng.standard_normal(n_samples // 2 + 1)
    k = np.arange(spec.size, dtype=np.float64)
    k[0] = 1.0
    spec /= np.sqrt(k)
    spec[0] = 0.0  # no DC
    out = np.fft.irfft(spec, n=n_samples)
    return out * (rms / np.sqrt(np.mean(out * out)))
