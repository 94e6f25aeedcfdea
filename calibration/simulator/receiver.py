"""Receiver model: node clock, microphone response, ADC scaling, clipping, quantisation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shotline.calibration.bundle import quantise

from .sources import P_REF_PA


@dataclass(frozen=True)
class NodeClock:
    """A node's sampling clock.

    The ADC takes sample ``i`` at true time ``t0 + i / (fs (1 + drift))`` and the
    node stamps it ``t0 + offset + i / fs``, so the stamp error at true time ``t``
    is exactly ``offset + drift (t - t0)``. ``t0_true_ns`` (UTC ns), ``offset_ns``,
    ``drift_ppm``, ``sample_rate_hz`` (nominal).
    """

    t0_true_ns: int
    offset_ns: int
    drift_ppm: float
    sample_rate_hz: int

    @property
    def start_time_ns(self) -> int:
        """What the node believes the UTC of its first sample is (goes into the manifest)."""
        return self.t0_true_ns + self.offset_ns

    @property
    def effective_rate_hz(self) -> float:
        """Samples per true second."""
        return self.sample_rate_hz * (1.0 + self.drift_ppm * 1e-6)

    def sample_index(self, true_ns: int) -> float:
        """Fractional sample index at true UTC ``true_ns``."""
        return (true_ns - self.t0_true_ns) * 1e-9 * self.effective_rate_hz

    def stamp_ns(self, true_ns: int) -> int:
        """The node's clock reading (UTC ns) at true UTC ``true_ns``."""
        return self.start_time_ns + round(self.sample_index(true_ns) * 1e9 / self.sample_rate_hz)


def full_scale_peak_pa(full_scale_spl_db: float) -> float:
    """Peak pressure (Pa) at digital full scale: the peak of a sine of ``full_scale_spl_db`` RMS."""
    return float(np.sqrt(2.0) * P_REF_PA * 10.0 ** (full_scale_spl_db / 20.0))


def mic_response(f_hz: np.ndarray, highpass_hz: float) -> np.ndarray:
    """Complex response of the microphone: a causal first-order high-pass at ``highpass_hz``.

    Flat above; MEMS microphones roll off below some tens of hertz.
    """
    f = np.asarray(f_hz, float)
    if highpass_hz <= 0:
        return np.ones(f.shape, complex)
    return (1j * f) / (1j * f + highpass_hz)


def anti_alias(f_hz: np.ndarray, sample_rate_hz: float, start: float = 0.8) -> np.ndarray:
    """Zero-phase raised-cosine roll-off from ``start`` x Nyquist to Nyquist (the ADC's
    decimation filter, linear phase with its delay compensated)."""
    nyq = sample_rate_hz / 2.0
    x = np.clip((np.asarray(f_hz, float) / nyq - start) / (1.0 - start), 0.0, 1.0)
    return 0.5 * (1.0 + np.cos(np.pi * x))


def digitise(
    pressure_pa: np.ndarray, full_scale_spl_db: float, bits: int = 24
) -> tuple[np.ndarray, int]:
    """Pressure (Pa) -> float32 samples clipped at ±1 full scale and quantised to ``bits``.

    Returns (samples, number of clipped samples).
    """
    x = np.asarray(pressure_pa, float) / full_scale_peak_pa(full_scale_spl_db)
    n_clipped = int(np.count_nonzero(np.abs(x) >= 1.0))
    return quantise(np.clip(x, -1.0, 1.0), bits), n_clipped
