"""Atmospheric absorption of sound, ISO 9613-1:1993 (pure-tone attenuation coefficient)."""

from __future__ import annotations

import numpy as np

_PR_KPA = 101.325  # reference pressure
_T0_K = 293.15  # reference temperature
_T01_K = 273.16  # triple-point isotherm temperature


def absorption_db_per_m(
    f_hz: np.ndarray,
    temperature_c: float = 20.0,
    relative_humidity_pct: float = 50.0,
    pressure_kpa: float = _PR_KPA,
) -> np.ndarray:
    """Attenuation coefficient α (dB/m) at frequencies ``f_hz`` (ISO 9613-1 eqs. 3-5, B.1-B.3).

    Valid for 50 Hz-10 kHz, -20..50 °C, 10..100 % RH to ±10 %; used outside
    that range as a smooth extrapolation (it only shapes the pulse top end).
    """
    f = np.asarray(f_hz, dtype=float)
    t_k = temperature_c + 273.15
    pa = pressure_kpa / _PR_KPA
    tr = t_k / _T0_K
    # Molar concentration of water vapour (%), from relative humidity (Annex B).
    c_sat = -6.8346 * (_T01_K / t_k) ** 1.261 + 4.6151
    h = relative_humidity_pct * 10.0**c_sat / pa
    fr_o = pa * (24.0 + 4.04e4 * h * (0.02 + h) / (0.391 + h))
    fr_n = pa * tr**-0.5 * (9.0 + 280.0 * h * np.exp(-4.170 * (tr ** (-1.0 / 3.0) - 1.0)))
    f2 = f * f
    return (
        8.686
        * f2
        * (
            1.84e-11 / pa * tr**0.5
            + tr**-2.5
            * (
                0.01275 * np.exp(-2239.1 / t_k) / (fr_o + f2 / fr_o)
                + 0.1068 * np.exp(-3352.0 / t_k) / (fr_n + f2 / fr_n)
            )
        )
    )
