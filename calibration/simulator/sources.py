"""Source waveforms: analytic pressure pulses at a reference distance of 1 m.

Every source is a sum of *atoms* with closed-form Fourier transforms, so that
the renderer can evaluate the spectrum at any frequency grid and place each
arrival at an exact, continuous time with a phase shift (no sample-grid
quantisation, no aliasing from sampling a discontinuity).

Pressures are in pascal (Pa) as the far-field 1/r extrapolation to 1 m; times
in seconds relative to the event's emission time; frequencies in hertz.
References for the numbers are in ``docs/simulator.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

P_REF_PA = 20e-6  # reference pressure for dB SPL
P_ATM_PA = 101_325.0


def spl_to_pa(level_db: float) -> float:
    """Peak SPL (dB re 20 µPa) -> pressure (Pa)."""
    return P_REF_PA * 10.0 ** (level_db / 20.0)


def pa_to_spl(p_pa: float) -> float:
    """Pressure (Pa) -> dB re 20 µPa (returns -inf for 0)."""
    return 20.0 * math.log10(p_pa / P_REF_PA) if p_pa > 0 else -math.inf


# --------------------------------------------------------------------- atoms
@dataclass(frozen=True)
class Friedlander:
    """p(t) = P0 (1 - t/T) exp(-b t/T) for t >= 0 (instant rise, then decay).

    ``peak_pa`` P0 (Pa), ``t_pos_s`` positive-phase duration T (s), ``decay_b`` b,
    ``offset_s`` start time (s). ``lengthens``: the renderer stretches T with
    distance (weak-shock lengthening of blast waves).
    """

    peak_pa: float
    t_pos_s: float
    decay_b: float = 1.0
    offset_s: float = 0.0
    lengthens: bool = False

    def spectrum(self, s: np.ndarray) -> np.ndarray:
        # FT of (1 - t/T) e^{-a t}, a = b/T:  1/(a+s) - (1/T)/(a+s)^2
        a = self.decay_b / self.t_pos_s
        return self.peak_pa * (1.0 / (a + s) - (1.0 / self.t_pos_s) / (a + s) ** 2)

    def waveform(self, t: np.ndarray) -> np.ndarray:
        x = np.maximum(t, 0.0) / self.t_pos_s
        return np.where(t >= 0, self.peak_pa * (1.0 - x) * np.exp(-self.decay_b * x), 0.0)

    @property
    def length_s(self) -> float:
        return self.t_pos_s * (2.0 + 14.0 / self.decay_b)  # ~1e-5 of the peak left


@dataclass(frozen=True)
class NWave:
    """Ballistic shock wave: p(t) = P (1 - 2t/T) for 0 <= t <= T, zero elsewhere."""

    peak_pa: float
    duration_s: float
    offset_s: float = 0.0

    def spectrum(self, s: np.ndarray) -> np.ndarray:
        T = self.duration_s
        x = s * T
        small = np.abs(x) < 1e-3
        xs = np.where(small, 1.0, x)  # avoid 0/0 where the series takes over
        e = np.exp(-xs)
        exact = T * ((1.0 - e) / xs - 2.0 * (1.0 - e * (1.0 + xs)) / xs**2)
        series = T * (x / 6.0 - x**2 / 12.0 + x**3 / 40.0)
        return self.peak_pa * np.where(small, series, exact)

    def waveform(self, t: np.ndarray) -> np.ndarray:
        inside = (t >= 0) & (t <= self.duration_s)
        return np.where(inside, self.peak_pa * (1.0 - 2.0 * t / self.duration_s), 0.0)

    @property
    def length_s(self) -> float:
        return self.duration_s


@dataclass(frozen=True)
class GammaTone:
    """p(t) = A g(t) sin(2π f t + φ), g(t) = (t/τ)^k e^{-t/τ} / (k^k e^{-k}) for t >= 0.

    The envelope peaks at A after k τ seconds: k = 0 is a damped sinusoid with
    an instant onset, k >= 1 gives a smooth rise. ``freq_hz=0`` with
    ``phase_rad=π/2`` is a plain unipolar gamma pulse.
    """

    amp_pa: float
    order_k: int
    tau_s: float
    freq_hz: float = 0.0
    phase_rad: float = 0.0
    offset_s: float = 0.0

    @property
    def _norm(self) -> float:
        k = self.order_k
        return 1.0 if k == 0 else 1.0 / (k**k * math.exp(-k))

    def spectrum(self, s: np.ndarray) -> np.ndarray:
        # FT of t^k e^{-αt} e^{±jω0 t} is k!/(s + α ∓ jω0)^{k+1}; sin = (e^{jx} - e^{-jx})/2j
        k, a, w0 = self.order_k, 1.0 / self.tau_s, 2 * math.pi * self.freq_hz
        c = self.amp_pa * self._norm * self.tau_s ** (-k) * math.factorial(k) / 2j
        ep = np.exp(1j * self.phase_rad)
        return c * (ep / (s + a - 1j * w0) ** (k + 1) - np.conj(ep) / (s + a + 1j * w0) ** (k + 1))

    def waveform(self, t: np.ndarray) -> np.ndarray:
        tt = np.maximum(t, 0.0)
        env = self._norm * (tt / self.tau_s) ** self.order_k * np.exp(-tt / self.tau_s)
        p = self.amp_pa * env * np.sin(2 * math.pi * self.freq_hz * tt + self.phase_rad)
        return np.where(t >= 0, p, 0.0)

    @property
    def length_s(self) -> float:
        return self.tau_s * (self.order_k + 14.0)


Atom = Friedlander | NWave | GammaTone


def atoms_spectrum(atoms: list[Atom], f_hz: np.ndarray) -> np.ndarray:
    """Continuous Fourier transform (Pa·s) of a sum of atoms at frequencies ``f_hz``."""
    s = 2j * np.pi * np.asarray(f_hz, dtype=float)
    out = np.zeros(s.shape, dtype=complex)
    for a in atoms:
        spec = a.spectrum(s)
        if a.offset_s:
            spec = spec * np.exp(-s * a.offset_s)
        out += spec
    return out


def atoms_waveform(atoms: list[Atom], t_s: np.ndarray) -> np.ndarray:
    """Time-domain pressure (Pa) of a sum of atoms at times ``t_s`` (continuous, unfiltered)."""
    t = np.asarray(t_s, dtype=float)
    return sum((a.waveform(t - a.offset_s) for a in atoms), np.zeros(t.shape))


def atoms_span_s(atoms: list[Atom]) -> tuple[float, float]:
    """(earliest start, latest end) of the atoms in seconds relative to the emission time."""
    return (min(a.offset_s for a in atoms), max(a.offset_s + a.length_s for a in atoms))


# ------------------------------------------------------------------ calibres
@dataclass(frozen=True)
class Calibre:
    """Nominal muzzle blast and bullet of one calibre (typical loads, order of magnitude).

    ``peak_spl_db_1m``: muzzle blast peak SPL extrapolated to 1 m (dB re 20 µPa);
    ``t_pos_1m_s``: Friedlander positive-phase duration at 1 m (s); ``decay_b``;
    ``bullet_speed_mps``; ``bullet_diameter_m`` / ``bullet_length_m`` for the
    Whitham N-wave; ``supersonic``: render the shock by default (rifles).
    """

    peak_spl_db_1m: float
    t_pos_1m_s: float
    decay_b: float
    bullet_speed_mps: float
    bullet_diameter_m: float
    bullet_length_m: float
    supersonic: bool


CALIBRES: dict[str, Calibre] = {
    ".22lr": Calibre(146.0, 0.20e-3, 1.0, 330.0, 5.7e-3, 11e-3, False),
    ".380acp": Calibre(152.0, 0.28e-3, 1.0, 290.0, 9.0e-3, 12e-3, False),
    "9mm": Calibre(156.0, 0.33e-3, 1.0, 360.0, 9.0e-3, 15.5e-3, False),
    ".40sw": Calibre(157.0, 0.36e-3, 1.0, 300.0, 10.2e-3, 15e-3, False),
    ".45acp": Calibre(157.0, 0.38e-3, 1.0, 255.0, 11.5e-3, 17e-3, False),
    "12ga": Calibre(160.0, 0.55e-3, 1.0, 400.0, 18.5e-3, 20e-3, False),
    "5.56nato": Calibre(164.0, 0.40e-3, 1.0, 940.0, 5.7e-3, 23e-3, True),
    "7.62x39": Calibre(163.0, 0.45e-3, 1.0, 715.0, 7.9e-3, 26e-3, True),
    "7.62nato": Calibre(166.0, 0.50e-3, 1.0, 840.0, 7.8e-3, 29e-3, True),
}

# Default peak level at 1 m (dB re 20 µPa) of the non-gunshot kinds.
KIND_LEVEL_DB: dict[str, float] = {
    "firecracker": 150.0,
    "door_slam": 118.0,
    "hand_clap": 118.0,
    "car_backfire": 140.0,
    "hammer": 125.0,
    "other": 130.0,
}


def blast_t_pos_s(t_pos_1m_s: float, distance_m: float) -> float:
    """Positive-phase duration (s) of a blast pulse after ``distance_m`` metres.

    Weak-shock (Whitham) lengthening of a spherical blast wave grows like
    sqrt(ln r); the factor 0.5 gives ~+25 % at 3 m and ~x2 at 300 m.
    """
    r = max(distance_m, 1.0)
    return t_pos_1m_s * math.sqrt(1.0 + 0.5 * math.log(r))


def whitham_nwave(
    mach: float, miss_distance_m: float, diameter_m: float, length_m: float, c_mps: float
) -> tuple[float, float]:
    """(peak overpressure Pa, duration s) of a bullet's N-wave at a miss distance (Whitham 1952).

    p = 0.53 P_atm (M²-1)^{1/8} d / (b^{3/4} l^{1/4});
    T = 1.82 M b^{1/4} d / (c (M²-1)^{3/8} l^{1/4}).
    """
    m2 = max(mach**2 - 1.0, 1e-3)
    b = max(miss_distance_m, 0.5)  # the far-field formula diverges at the bullet itself
    peak = 0.53 * P_ATM_PA * m2**0.125 * diameter_m / (b**0.75 * length_m**0.25)
    dur = 1.82 * mach * b**0.25 * diameter_m / (c_mps * m2**0.375 * length_m**0.25)
    return peak, dur


# ----------------------------------------------------------- kind templates
def source_atoms(kind: str, params: dict, rng: np.random.Generator) -> list[Atom]:
    """Atoms (Pa at 1 m, s) of one event of ``kind``; the randomness is drawn once per event.

    ``params`` holds the event's kind-specific fields (see ``SceneEvent``):
    ``calibre``, ``peak_spl_db_1m``, ``positive_duration_s``, ``n_bangs``,
    ``fuse_crackle``.
    """
    level = params.get("peak_spl_db_1m")
    if kind == "gunshot":
        cal = CALIBRES[params.get("calibre") or "9mm"]
        p0 = spl_to_pa(level if level is not None else cal.peak_spl_db_1m)
        t_pos = params.get("positive_duration_s") or cal.t_pos_1m_s
        return [Friedlander(p0, t_pos, cal.decay_b, lengthens=True)]
    p0 = spl_to_pa(level if level is not None else KIND_LEVEL_DB[kind])
    if kind == "firecracker":
        return _firecracker(p0, params, rng)
    if kind == "door_slam":
        # Slow (few ms) rise of the panel thump, then low panel/frame resonances.
        f1 = rng.uniform(60.0, 110.0)
        return [
            GammaTone(p0, 2, rng.uniform(1.5e-3, 2.5e-3), 25.0, math.pi / 2),
            GammaTone(0.5 * p0, 1, 12e-3, f1, 0.0, 2e-3),
            GammaTone(0.25 * p0, 1, 8e-3, 2.1 * f1, 0.0, 2e-3),
            Friedlander(0.08 * p0, 0.15e-3, 1.5, rng.uniform(3e-3, 8e-3)),  # latch click
        ]
    if kind == "hand_clap":
        f1 = rng.uniform(1100.0, 1900.0)
        return [
            GammaTone(p0, 1, rng.uniform(0.25e-3, 0.4e-3), f1, 0.0),
            GammaTone(0.4 * p0, 1, 0.3e-3, rng.uniform(2300.0, 3000.0), 1.0),
        ]
    if kind == "car_backfire":
        # Muffled: a rounded pulse of a few ms and the exhaust pipe resonance.
        f1 = rng.uniform(80.0, 140.0)
        return [
            GammaTone(p0, 1, rng.uniform(0.6e-3, 1.0e-3), 0.0, math.pi / 2),
            GammaTone(-0.6 * p0, 1, 2.5e-3, 0.0, math.pi / 2, 2.0e-3),
            GammaTone(0.3 * p0, 1, 25e-3, f1, 0.0, 1e-3),
        ]
    if kind == "hammer":
        freqs = np.array([1200.0, 2900.0, 4700.0]) * rng.uniform(0.85, 1.15, 3)
        return [Friedlander(p0, 0.06e-3, 2.0)] + [
            GammaTone(a * p0, 0, tau, f, 0.0)
            for a, tau, f in zip((0.35, 0.2, 0.1), (40e-3, 25e-3, 15e-3), freqs, strict=True)
        ]
    if kind == "other":
        t_pos = params.get("positive_duration_s") or 0.5e-3
        return [Friedlander(p0, t_pos, 1.0, lengthens=True)]
    raise ValueError(f"unknown source kind {kind!r}")


def _firecracker(p0: float, params: dict, rng: np.random.Generator) -> list[Atom]:
    n_bangs = int(params.get("n_bangs") or 1)
    atoms: list[Atom] = []
    t = 0.0
    for i in range(n_bangs):
        gain = 1.0 if i == 0 else 10 ** (rng.uniform(-4.0, 2.0) / 20)
        atoms.append(Friedlander(gain * p0, rng.uniform(0.08e-3, 0.15e-3), 1.5, t, lengthens=True))
        t += rng.uniform(0.03, 0.15)
    if params.get("fuse_crackle"):
        # Sparks of the fuse before the (first) bang: faint, very short clicks.
        for tc in np.sort(rng.uniform(-0.25, -0.01, rng.integers(5, 15))):
            atoms.append(Friedlander(p0 * 10 ** (-45 / 20) * rng.uniform(0.5, 1.0), 30e-6, 2.0, tc))
    return atoms


def lengthen(atoms: list[Atom], distance_m: float) -> list[Atom]:
    """Atoms as they are after ``distance_m`` of travel (blast pulses lengthen)."""
    return [
        replace(a, t_pos_s=blast_t_pos_s(a.t_pos_s, distance_m))
        if isinstance(a, Friedlander) and a.lengthens
        else a
        for a in atoms
    ]


def muzzle_directivity_gain(cos_angle: float, front_back_db: float) -> float:
    """Amplitude gain of the muzzle blast at angle θ off the bore: -D (1 - cos θ)/2 dB."""
    return 10.0 ** (-front_back_db * (1.0 - cos_angle) / 2.0 / 20.0)
