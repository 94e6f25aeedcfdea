"""Position uncertainty: error ellipses, circular error probable, Cramér-Rao bound.

Conventions (see docs/location.md):

* covariances are in m^2 for positions (east, north[, up]);
* an error ellipse is ``(semi_major_m, semi_minor_m, azimuth_deg)`` at the
  1-sigma level, azimuth of the major axis in degrees clockwise from north,
  in [0, 180); :func:`scale_ellipse` turns it into the ellipse holding a
  given probability of a 2-D Gaussian;
* CEP radii are exact for the elliptical (zero-mean) Gaussian, computed by
  quadrature of the polar form of the probability, not by a rule of thumb.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy.optimize import brentq

from . import lm_kernel


def ellipse_scale_factor(probability: float) -> float:
    """Factor from the 1-sigma ellipse to the ellipse holding ``probability`` of a 2-D Gaussian.

    sqrt of the chi-square(2) quantile: sqrt(-2 ln(1 - p)); 2.4477 for 95 %.
    """
    if not 0.0 < probability < 1.0:
        raise ValueError(f"probability must be in (0, 1), got {probability}")
    return math.sqrt(-2.0 * math.log1p(-probability))


def sym2_eigenvalues(a: float, b: float, c: float) -> tuple[float, float]:
    """Eigenvalues (smaller, larger) of the symmetric 2 x 2 matrix [[a, b], [b, c]], in closed form
    (a LAPACK call costs more than everything else where this runs once per solve)."""
    mid = 0.5 * (a + c)
    half = math.hypot(0.5 * (a - c), b)
    return mid - half, mid + half


def error_ellipse(cov_en_m2: np.ndarray) -> tuple[float, float, float]:
    """1-sigma error ellipse of a 2x2 (east, north) covariance in m^2.

    Returns ``(semi_major_m, semi_minor_m, azimuth_deg)``, azimuth of the
    major axis clockwise from north in [0, 180).
    """
    a, b, c = _sym2_entries(cov_en_m2)
    return _ellipse(a, b, c, *sym2_eigenvalues(a, b, c))


def _sym2_entries(cov_en_m2: np.ndarray) -> tuple[float, float, float]:
    """(east-east, east-north, north-north) of a 2x2 covariance (m^2), the off-diagonal symmetrised."""
    (a, b1, *_), (b2, c, *_) = np.asarray(cov_en_m2, float)[:2].tolist()
    return a, 0.5 * (b1 + b2), c


def _ellipse(a: float, b: float, c: float, w_lo: float, w_hi: float) -> tuple[float, float, float]:
    """:func:`error_ellipse` of [[a, b], [b, c]] m^2 with eigenvalues ``w_lo`` <= ``w_hi`` (m^2), in
    closed form (a LAPACK eigh cost more than the rest of the solution summary).

    The major axis makes 0.5 atan2(2 b, a - c) with east; a circle has none, and gets north (0 deg)
    as LAPACK's eigenvectors of a multiple of the identity gave it.
    """
    if b == 0.0 and a == c:
        az = 0.0
    else:
        az = (90.0 - math.degrees(0.5 * math.atan2(2.0 * b, a - c))) % 180.0
    return math.sqrt(max(w_hi, 0.0)), math.sqrt(max(w_lo, 0.0)), az


def scale_ellipse(
    ellipse: tuple[float, float, float], probability: float = 0.95
) -> tuple[float, float, float]:
    """Scale a 1-sigma ellipse ``(a, b, azimuth)`` to the ``probability`` ellipse (default 95 %)."""
    k = ellipse_scale_factor(probability)
    a, b, az = ellipse
    return a * k, b * k, az


_N_QUAD = 256
# cos^2 and sin^2 repeat in every quadrant (phi, pi - phi, pi + phi, 2 pi - phi), and the 256
# midpoint nodes fall symmetrically, so the mean over all of them is the mean over the first
# quadrant's 64: a quarter of the exponentials (a hub computes two radii per solve).
_PHI = (np.arange(_N_QUAD // 4) + 0.5) * (2.0 * math.pi / _N_QUAD)
_COS2 = np.cos(_PHI) ** 2
_SIN2 = np.sin(_PHI) ** 2


def _p_inside(r: float, b: np.ndarray) -> float:
    """P(X1^2 + X2^2 <= r^2) for X1 ~ N(0, 1), X2 ~ N(0, rho^2), with b = cos^2 + rho^2 sin^2.

    Whitened polar form: with X = (z1, rho z2) and z in polar coordinates the
    radial integral is analytic, P = 1 - mean_phi exp(-r^2 / (2 b(phi))). The
    integrand is smooth and periodic for every rho in (0, 1], so the
    equispaced mean converges exponentially: 256 nodes give ~1e-10 even for a
    line-like ellipse (checked against 1e5 nodes down to rho = 1e-5).
    """
    return 1.0 - float(np.mean(np.exp(-0.5 * r * r / b)))


def cep_radius_m(cov_en_m2: np.ndarray, probability: float = 0.5) -> float:
    """Radius (m) of the circle centred on the estimate that holds ``probability`` of the
    2-D Gaussian with covariance ``cov_en_m2`` (m^2). CEP50 with p=0.5, CEP95 with p=0.95.

    Exact for the elliptical Gaussian up to the quadrature/root tolerance
    (~1e-9 relative); 1.1774 sigma (p=0.5) for a circle, 0.6745 sigma_major
    for a line.
    """
    if not 0.0 < probability < 1.0:
        raise ValueError(f"probability must be in (0, 1), got {probability}")
    w_lo, w_hi = sym2_eigenvalues(*_sym2_entries(cov_en_m2))
    return _CepRadii(w_lo, w_hi).radius_m(probability)


def horizontal_uncertainty(cov_en_m2: np.ndarray) -> tuple[float, float, tuple[float, float, float]]:
    """CEP50 and CEP95 radii (m) and the 1-sigma :func:`error_ellipse` of a 2x2 (east, north)
    covariance (m^2): a solution's summary, from one eigen-decomposition (the same numbers as
    ``cep_radius_m(cov, 0.5)``, ``cep_radius_m(cov, 0.95)``, ``error_ellipse(cov)``)."""
    a, b, c = _sym2_entries(cov_en_m2)
    w_lo, w_hi = sym2_eigenvalues(a, b, c)
    radii = _CepRadii(w_lo, w_hi)
    return radii.radius_m(0.5), radii.radius_m(0.95), _ellipse(a, b, c, w_lo, w_hi)


class _CepRadii:
    """CEP radii of one 2-D Gaussian, eigenvalues ``w_lo`` <= ``w_hi`` (m^2) of its covariance."""

    def __init__(self, w_lo: float, w_hi: float):
        self.s1 = math.sqrt(max(w_hi, 0.0))
        s2 = math.sqrt(max(w_lo, 0.0))
        self.rho = s2 / self.s1 if self.s1 != 0.0 else 1.0

    def radius_m(self, probability: float) -> float:
        """Radius (m) of the centred circle holding ``probability`` (in (0, 1))."""
        s1, rho = self.s1, self.rho
        if s1 == 0.0:
            return 0.0
        k_circ = math.sqrt(-2.0 * math.log1p(-probability))
        if rho > 1.0 - 1e-12:
            return s1 * k_circ
        # Newton's method on P(r) = p from the tabulated root at this axis ratio (dP/dr is
        # analytic: mean_phi r / b exp(-r^2 / 2b)); P is smooth and increasing in r, so from
        # within a percent of the root it converges in 2-3 steps. A hub computes two radii per
        # solution, thousands per second in a busy night: this is ~5x cheaper than bracketing,
        # and compiled (lm_kernel.cep_newton: one call, not ~4 numpy calls a step) ~3x cheaper again.
        r = lm_kernel.cep_newton(_COS2, _SIN2, rho, _interp_table(rho, *_cep_table(probability)), probability)
        if not math.isnan(r):
            return s1 * r
        # Not converged (cannot happen for rho in (0, 1); kept as a safety net): bracket the root.
        return s1 * _bracketed_radius(_COS2 + rho * rho * _SIN2, probability, k_circ)


def _interp_table(x: float, grid: list[float], values: list[float]) -> float:
    """``np.interp(x, grid, values)`` for one ``x`` in [0, 1] on the uniform grid of :func:`_cep_table`
    (its 1/128 steps are exact in binary): numpy's own formula, without its array set-up."""
    n = len(grid) - 1
    j = min(int(x * n), n)
    if j == n or grid[j] == x:
        return values[j]
    slope = (values[j + 1] - values[j]) / (grid[j + 1] - grid[j])
    return slope * (x - grid[j]) + values[j]


def _bracketed_radius(b: float, probability: float, k_circ: float) -> float:
    """Root of P(r) = p by bracketing: P(0) = 0 < p, and the ellipse lies inside the 1-sigma_major
    circle, so the circular radius ``k_circ`` already holds at least p."""
    return float(brentq(lambda x: _p_inside(x, b) - probability, 0.0, k_circ * (1 + 1e-9), xtol=1e-13, rtol=1e-11))


@functools.lru_cache(maxsize=16)
def _cep_table(probability: float) -> tuple[list[float], list[float]]:
    """CEP radius in units of the major-axis sigma on a grid of axis ratios rho in [0, 1] (bracketed
    roots), as Python lists for :func:`_interp_table`."""
    rho = np.linspace(0.0, 1.0, 129)
    k_circ = math.sqrt(-2.0 * math.log1p(-probability))
    k = np.empty_like(rho)
    for i, q in enumerate(rho):
        b = _COS2 + q * q * _SIN2
        k[i] = _bracketed_radius(b, probability, k_circ)
    return rho.tolist(), k.tolist()


def crlb_covariance(
    positions_m: np.ndarray,
    source_m: np.ndarray,
    *,
    c_mps: float,
    sigma_s: float | np.ndarray,
    dims: int = 2,
) -> np.ndarray:
    """Inverse Fisher information of ``(x, y[, z], t0)`` for TOA with unknown emission time.

    Model t_i = t0 + |s - r_i| / c + n_i, n_i ~ N(0, sigma_i^2), c known.
    ``positions_m`` (N, 2|3) ENU metres; ``source_m`` (2|3,): in 2-D a third
    component is the (known) source height, otherwise 0. Units: m^2, m*s, s^2.
    """
    nodes = np.asarray(positions_m, float)
    if nodes.shape[1] == 2:
        nodes = np.column_stack([nodes, np.zeros(len(nodes))])
    src = np.zeros(3)
    s = np.asarray(source_m, float).ravel()
    src[: s.size] = s
    sig = np.broadcast_to(np.asarray(sigma_s, float), (len(nodes),))
    d = src - nodes
    u = d / np.linalg.norm(d, axis=1, keepdims=True)
    g = np.column_stack([u[:, :dims] / c_mps, np.ones(len(nodes))]) / sig[:, None]
    return np.linalg.inv(g.T @ g)


def crlb_position_rms_m(
    positions_m: np.ndarray,
    source_m: np.ndarray,
    *,
    c_mps: float,
    sigma_s: float | np.ndarray,
    dims: int = 2,
) -> float:
    """Cramér-Rao bound on the RMS position error (m): sqrt(trace of the position block of
    the inverse Fisher information) for TOA with unknown t0 (see :func:`crlb_covariance`)."""
    cov = crlb_covariance(positions_m, source_m, c_mps=c_mps, sigma_s=sigma_s, dims=dims)
    return float(math.sqrt(np.trace(cov[:dims, :dims])))
