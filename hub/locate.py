"""Robust time-of-arrival multilateration of an impulsive source.

Model (seconds, metres, local ENU frame):

    t_i = t0 + T(s, r_i) + n_i,     n_i ~ N(0, sigma_i^2)

with ``T = |s - r_i| / c`` in still air. With a uniform wind ``w`` the
wavefront is a sphere of radius ``c (t - t0)`` whose centre drifts with the
air, ``s + w (t - t0)``; the travel time is the positive root of
``|r_i - s - w T| = c T``, which to first order in |w|/c is the "effective
speed c + w . u_i" model (u_i the unit vector from source to node). Unknowns:
``(x, y, t0)`` in 2-D (source height assumed), ``(x, y, z, t0)`` in 3-D,
optionally the speed of sound ``c`` as well.

Pipeline (docs/location.md has the details and the references):

1. closed-form candidates (Bancroft) from all nodes and from every subset of
   ``dims + 2`` nodes (seeded sample when there are many); with ``solve_c``
   also linear unknown-c fixes from subsets of ``dims + 3``, polished on
   their own subset;
2. consensus: every candidate predicts all arrivals (one vectorised numpy
   evaluation), scored by the truncated quadratic (MSAC) cost; when the best
   one leaves suspects, the best few are refined by batched Gauss-Newton on
   their own inliers (LO-RANSAC) and re-scored;
3. when the seed leaves suspects: a robust nonlinear least-squares fit on all
   nodes (Cauchy loss, ``f_scale`` = 2 sigma, analytic Jacobian), after which
   nodes whose residual exceeds ``sqrt((k sigma)^2 + floor^2)`` are rejected;
4. a final plain least-squares fit on the inliers (Levenberg-Marquardt), so
   that the clean case is the maximum-likelihood estimate and reaches the
   Cramér-Rao bound; rejected nodes are re-checked against the refit;
5. covariance ``(J^T J)^-1`` of the whitened problem at the solution, ellipse
   and CEP from its position block.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import chi2

from . import lm_kernel
from .closed_form import bancroft_batch, linear_unknown_c_batch
from .uncertainty import (
    cep_radius_m,
    crlb_covariance,
    crlb_position_rms_m,
    ellipse_scale_factor,
    error_ellipse,
    horizontal_uncertainty,
    scale_ellipse,
    sym2_eigenvalues,
)

__all__ = [
    "LocateError",
    "Solution",
    "locate",
    "travel_times_s",
    "crlb_position_rms_m",
    "crlb_covariance",
    "cep_radius_m",
    "error_ellipse",
    "scale_ellipse",
    "ellipse_scale_factor",
]

#: Number of closed-form subsets above which subsets are sampled (seeded) instead of enumerated.
MAX_SUBSETS = 256
#: Fixed seed for subset sampling: the locator must be deterministic.
_SUBSET_SEED = 0x5EED_1A7E
#: Best candidates refined by batched Gauss-Newton (LO-RANSAC) when the consensus is not clean.
_LO_CANDIDATES = 16
#: Cauchy loss scale, in units of each node's sigma: quadratic up to ~2 sigma.
_ROBUST_F_SCALE = 2.0
#: Whether a 2-D fit in still air with a known c from a known start (a hub's re-locations and the fits of
#: the sets its searches choose: most of its solves) runs compiled, checks to statistics, in one call
#: (:func:`_located_from_start`, :func:`lm_kernel.locate_from_start`); the numpy steps it replaced stay
#: for the other fits, and tests compare the two bit for bit.
_COMPILED_START = True


class LocateError(ValueError):
    """The problem cannot be solved: too few nodes, NaNs, coincident or degenerate nodes."""


@dataclass(frozen=True)
class Solution:
    """A located source (an 'origin' in seismology terms).

    Attributes
    ----------
    position_m
        ENU metres in the caller's frame; the same length as the input
        position rows (2 or 3). In 2-D with 3-column inputs the third
        component is the assumed source height, not an estimate.
    t0_s
        Emission time, seconds, in the same reference as the input times.
    c_mps
        Speed of sound used (or solved, with ``solve_c``), m/s.
    covariance
        Covariance of ``(x, y[, z], t0[, c])`` in m^2, m*s, s^2 (and m*(m/s),
        s*(m/s), (m/s)^2 for the c row/column when ``solve_c``). In 2-D the
        height is not estimated, so the matrix is 3x3 (x, y, t0).
        The a-priori sigma is used, scaled by the reduced chi-square only when
        that is improbably large (see ``cov_scaling`` in :func:`locate`).
    cep50_m, cep95_m
        Radii (m) of the circles centred on the estimate holding 50 % / 95 %
        of the 2-D Gaussian position error (exact for the elliptical Gaussian).
    ellipse_m
        ``(semi_major_m, semi_minor_m, azimuth_deg)`` of the **1-sigma**
        horizontal error ellipse, azimuth clockwise from north in [0, 180).
        ``scale_ellipse(sol.ellipse_m, 0.95)`` gives the 95 % ellipse.
    residuals_s
        Observed minus predicted arrival time (s) for every input node,
        including rejected ones; finite.
    used
        Boolean mask of the nodes used in the final fit.
    rms_residual_s
        RMS of the residuals of the used nodes, seconds.
    n_used
        Number of nodes in the final fit.
    converged
        True when the final fit converged on at least ``dims + 2`` mutually
        consistent nodes.
    method
        Short description of the stages that ran.
    """

    position_m: np.ndarray
    t0_s: float
    c_mps: float
    covariance: np.ndarray
    cep50_m: float
    cep95_m: float
    ellipse_m: tuple[float, float, float]
    residuals_s: np.ndarray
    used: np.ndarray
    rms_residual_s: float
    n_used: int
    converged: bool
    method: str
    dims: int = 2
    chi2_reduced: float = field(default=float("nan"))

    @property
    def position_cov_m2(self) -> np.ndarray:
        """Covariance (m^2) of the estimated position components (2x2 in 2-D, 3x3 in 3-D)."""
        return self.covariance[: self.dims, : self.dims]

    @property
    def t0_sigma_s(self) -> float:
        """1-sigma uncertainty of the emission time, seconds."""
        return float(math.sqrt(self.covariance[self.dims, self.dims]))

    def ellipse_at(self, probability: float = 0.95) -> tuple[float, float, float]:
        """Horizontal error ellipse holding ``probability`` (default 95 %)."""
        return scale_ellipse(self.ellipse_m, probability)


# ----------------------------------------------------------------------------------------
# forward model


def _norm2(d: np.ndarray) -> np.ndarray:
    """Squared lengths (...,) of 3-vectors ``d`` (..., 3), summed as (x^2 + z^2) + y^2: the order numpy's
    ``einsum`` took here, written out so that ``lm_kernel.fit_from_start`` can repeat it on any machine."""
    x, y, z = d[..., 0], d[..., 1], d[..., 2]
    return (x * x + z * z) + y * y


def _travel(src: np.ndarray, nodes: np.ndarray, c, wind: np.ndarray | None):
    """Travel times and their derivatives.

    src (..., 3) source(s), nodes (N, 3), metres; c m/s, a scalar or an array
    broadcasting against (..., N); wind (3,) m/s or None.
    Returns T (..., N) seconds, dT/ds (..., N, 3) s/m, dT/dc (..., N) s^2/m.
    """
    d = nodes - src[..., None, :]  # source -> node
    dist2 = _norm2(d)
    if wind is None:
        dist = np.sqrt(dist2)
        t = dist / c
        # A node exactly at the source has no gradient direction; the floor
        # (1 nm) keeps the arithmetic finite and any subgradient will do.
        dt_ds = d / (-np.asarray(c)[..., None] * np.maximum(dist, 1e-9)[..., None])
        return t, dt_ds, -t / c
    # |d - w T| = c T  =>  a T^2 + 2 (d.w) T - |d|^2 = 0, a = c^2 - |w|^2
    a = c * c - float(wind @ wind)
    dw = d @ wind
    root = np.maximum(np.sqrt(dw * dw + a * dist2), 1e-9 * c)  # = a T + d.w > 0
    t = dist2 / (dw + root)  # = (root - dw) / a without cancellation when dw > 0
    dt_ds = -(d - t[..., None] * wind) / root[..., None]
    dt_dc = -c * t * t / root
    return t, dt_ds, dt_dc


def _travel_times(src: np.ndarray, nodes: np.ndarray, c, wind: np.ndarray | None) -> np.ndarray:
    """The travel times T (..., N) seconds of :func:`_travel` alone (the same arithmetic, so the same
    bits): residual checks need no derivatives, and skipping them halves the work."""
    d = nodes - src[..., None, :]
    dist2 = _norm2(d)
    if wind is None:
        return np.sqrt(dist2) / c
    a = c * c - float(wind @ wind)
    dw = d @ wind
    root = np.maximum(np.sqrt(dw * dw + a * dist2), 1e-9 * c)
    return dist2 / (dw + root)


def travel_times_s(
    positions_m: np.ndarray,
    source_m: np.ndarray,
    *,
    c_mps: float,
    wind_enu_mps: np.ndarray | None = None,
) -> np.ndarray:
    """Forward model: travel time (s) from ``source_m`` (2|3,) to each node (N, 2|3) ENU metres.

    Missing vertical components are 0. With ``wind_enu_mps`` (2|3,) the
    uniform-wind advection model is used (see the module docstring).
    Add the emission time to get arrival times.
    """
    nodes = _as_xyz(np.asarray(positions_m, float))
    src = np.zeros(3)
    s = np.asarray(source_m, float).ravel()
    src[: s.size] = s
    w = None if wind_enu_mps is None else _wind3(wind_enu_mps)
    return _travel(src, nodes, float(c_mps), w)[0]


def _as_xyz(p: np.ndarray) -> np.ndarray:
    if p.ndim != 2 or p.shape[1] not in (2, 3):
        raise LocateError(f"positions_m must have shape (N, 2) or (N, 3), got {p.shape}")
    if p.shape[1] == 2:
        p = np.column_stack([p, np.zeros(len(p))])
    return p


def _wind3(w) -> np.ndarray:
    w = np.asarray(w, float).ravel()
    if w.size not in (2, 3) or not np.all(np.isfinite(w)):
        raise LocateError(f"wind_enu_mps must be 2 or 3 finite components, got {w}")
    out = np.zeros(3)
    out[: w.size] = w
    return out


# ----------------------------------------------------------------------------------------
# the solver


@dataclass
class _Problem:
    """Internal, conditioned form: positions centred on the node centroid, times
    relative to the earliest arrival, parameters (s_free..., d0 = c_ref * t0[, c])."""

    nodes: np.ndarray  # (N, 3) centred metres
    t: np.ndarray  # (N,) seconds after t_ref
    sig: np.ndarray  # (N,) seconds
    c_ref: float
    dims: int
    height: float  # assumed source z (centred frame), used when dims == 2
    wind: np.ndarray | None
    solve_c: bool = False

    def src(self, p: np.ndarray) -> np.ndarray:
        """Parameter vector(s) (..., P) -> source position(s) (..., 3)."""
        if self.dims == 3:
            return p[..., :3]
        if p.ndim == 1:  # one vector: three scalars, not a concatenation
            return np.array((p[0], p[1], self.height))
        h = np.full(p.shape[:-1] + (1,), self.height)
        return np.concatenate([p[..., :2], h], axis=-1)

    def c_of(self, p: np.ndarray) -> float:
        return float(p[self.dims + 1]) if self.solve_c else self.c_ref

    def whitened(self, p: np.ndarray, idx: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Residuals (observed - predicted) / sigma for nodes ``idx``."""
        c = self.c_of(p)
        t = _travel_times(self.src(p), self.nodes[idx], c, self.wind)
        return (self.t[idx] - p[self.dims] / self.c_ref - t) / self.sig[idx]

    def residuals_jac(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Residuals (observed - predicted, seconds, not whitened) of every node and the whitened
        Jacobian (N, P) of every node, as :meth:`whitened_jac` with ``residuals / sig`` its
        residuals: the locator's last steps need both, for all nodes and for the inliers."""
        c = self.c_of(p)
        t, dt_ds, dt_dc = _travel(self.src(p), self.nodes, c, self.wind)
        res = self.t - p[self.dims] / self.c_ref - t
        d = self.dims
        jac = np.empty((len(t), d + 2 if self.solve_c else d + 1))
        jac[:, :d] = dt_ds[:, :d]
        jac[:, d] = 1.0 / self.c_ref
        if self.solve_c:
            jac[:, d + 1] = dt_dc
        jac /= -self.sig[:, None]  # -(dT/dp) / sigma, as whitened_jac's columns (negation is exact)
        return res, jac

    def whitened_jac(self, p: np.ndarray, idx: np.ndarray | slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`whitened` and :meth:`jac` from one evaluation of the travel times."""
        c = self.c_of(p)
        t, dt_ds, dt_dc = _travel(self.src(p), self.nodes[idx], c, self.wind)
        sig = self.sig[idx]
        r = (self.t[idx] - p[self.dims] / self.c_ref - t) / sig
        cols = [-dt_ds[:, : self.dims], np.full((len(sig), 1), -1.0 / self.c_ref)]
        if self.solve_c:
            cols.append(-dt_dc[:, None])
        return r, np.column_stack(cols) / sig[:, None]

    def jac(self, p: np.ndarray, idx: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Jacobian of :meth:`whitened` with respect to the parameters."""
        return self.whitened_jac(p, idx)[1]


#: A generic unit direction (no grid, street or axis lies along it) for the coincident-node pre-check.
_PROBE = np.array([0.5403023058681398, 0.8414709848078965, 0.0])  # (cos 1, sin 1, 0)
_PROBE3 = np.array([0.4741598817790379, 0.7384602626041288, 0.4794255386042030])  # also tilted by 0.5 rad


def _validate(positions_m, times_s, sigma_s, dims, c_mps):
    """Checked inputs for :func:`locate`: positions as given (N, 2|3), their centroid (3,) and the
    positions relative to it (N, 3), ENU metres (z = 0 when not given), times (N,) s, sigma (N,) s.
    Raises :class:`LocateError` (see :func:`locate`)."""
    if dims not in (2, 3):
        raise LocateError(f"dims must be 2 or 3, got {dims}")
    p = np.asarray(positions_m, dtype=float)
    t = np.asarray(times_s, dtype=float).ravel()
    if p.ndim != 2 or p.shape[1] not in (2, 3):
        raise LocateError(f"positions_m must have shape (N, 2) or (N, 3), got {p.shape}")
    if dims == 3 and p.shape[1] != 3:
        raise LocateError("a 3-D fix needs (N, 3) positions")
    n = len(p)
    if len(t) != n:
        raise LocateError(f"{n} positions but {len(t)} times")
    # One sum for the common case: a NaN or inf anywhere makes it non-finite (so can an overflow of
    # huge finite values, which the element-wise check then lets through).
    if not math.isfinite(float(p.sum()) + float(t.sum())) and not (np.isfinite(p).all() and np.isfinite(t).all()):
        raise LocateError("positions_m and times_s must be finite (no NaN/inf)")
    if not (math.isfinite(c_mps) and c_mps > 0):
        raise LocateError(f"c_mps must be a positive number, got {c_mps}")
    # With t0 unknown a fix has dims + 1 unknowns; one more node is needed for a
    # unique fix (with dims + 1 nodes the algebra has two exact roots and no
    # residual is left to check the association), so we refuse fewer.
    need = dims + 2
    if n < need:
        raise LocateError(
            f"need at least {need} nodes for a {dims}-D fix with unknown emission time, got {n}"
        )
    sig = np.empty(n)
    sig[:] = sigma_s  # a scalar or (N,) seconds
    if not (sig.min() > 0.0 and sig.max() < math.inf):  # a NaN fails the first test
        raise LocateError("sigma_s must be positive and finite")
    xyz = _as_xyz(p)
    horiz = xyz[:, :2] if dims == 2 else xyz
    _check_not_coincident(horiz)
    # np.mean's own arithmetic (a sum, then one division), without its bookkeeping.
    origin = xyz.sum(axis=0) / n
    nodes = xyz - origin
    centred = nodes[:, :dims]
    # Singular values of the centred positions from the eigenvalues of their 2 x 2 (3 x 3) scatter
    # matrix (squares of the singular values): the smallest below 1e-6 of the largest is degenerate.
    scatter = centred.T @ centred
    if dims == 2:
        ev = sym2_eigenvalues(float(scatter[0, 0]), float(scatter[0, 1]), float(scatter[1, 1]))
    else:
        ev = np.linalg.eigvalsh(scatter)
    if ev[0] < 1e-12 * ev[-1]:
        kind = "collinear" if dims == 2 else "coplanar"
        raise LocateError(f"node geometry is degenerate: the nodes are {kind}")
    return p, origin, nodes, t, sig


def _check_not_coincident(horiz: np.ndarray) -> None:
    """Raise :class:`LocateError` if two nodes (N, 2|3) metres are less than 1 mm apart.

    Distances are at least the gaps between the nodes' projections on any line, so when the
    sorted projections on :data:`_PROBE` are all 2 mm apart (well beyond their rounding) no pair
    can be close, and the N^2 distances are not needed; otherwise they decide.
    """
    probe = _PROBE[:2] if horiz.shape[1] == 2 else _PROBE3
    proj = np.sort(horiz @ probe)
    if (proj[1:] - proj[:-1]).min() >= 2e-3:
        return
    diff = horiz[:, None, :] - horiz[None, :, :]
    dd = np.einsum("ijk,ijk->ij", diff, diff)
    np.fill_diagonal(dd, np.inf)
    if dd.min() < 1e-6:  # 1 mm: same place (in the solved coordinates)
        close = np.argwhere(np.triu(dd < 1e-6, 1))[0]
        raise LocateError(f"nodes {close[0]} and {close[1]} are coincident (< 1 mm apart)")


@functools.lru_cache(maxsize=128)
def _subsets(n: int, k: int, max_subsets: int) -> np.ndarray:
    """(H, k) node indices: every k-subset of n nodes, or ``max_subsets`` seeded random ones.

    Cached (read-only): they depend on the counts alone, and a hub asks for the same few counts
    over and over (listing 70 combinations cost more than solving them).
    """
    total = math.comb(n, k)
    if total <= max_subsets:
        rows = np.array(list(itertools.combinations(range(n), k)), dtype=np.intp)
    else:
        rng = np.random.default_rng(_SUBSET_SEED)
        # argsort of uniform noise: max_subsets random k-subsets in one call.
        rows = np.sort(np.argsort(rng.random((max_subsets, n)), axis=1)[:, :k], axis=1)
    rows.flags.writeable = False
    return rows


def _candidates(
    prob: _Problem, subsets: np.ndarray | list[np.ndarray], unknown_c: bool = False, keep_all: bool = False
) -> np.ndarray:
    """Closed-form candidates in the centred frame.

    (M, dims + 1) rows ``(s_free..., d0)`` with c = c_ref, or with ``unknown_c``
    (M, dims + 2) rows ``(s_free..., d0, c)``; ``d0 = c_ref * t0`` either way.
    ``subsets``: (H, k) node indices, or (known c) a list of such arrays, solved in one batch.
    """
    c = prob.c_ref
    w = prob.wind
    tau = c * prob.t
    # Uniform wind: in the air's frame the node r_i sits at r_i - w t_i and the
    # source at s - w t0, and propagation is isotropic, so the still-air algebra
    # applies to shifted nodes. (The vertical wind is ignored here in 2-D; the
    # nonlinear fit uses the full model.)
    shifted = prob.nodes if w is None else prob.nodes - np.outer(prob.t, w)
    if prob.dims == 2:
        pts = shifted[:, :2]
        extra = (prob.height - prob.nodes[:, 2]) ** 2
    else:
        pts = shifted
        extra = np.zeros(len(tau))
    if unknown_c:
        u = linear_unknown_c_batch(pts, tau, extra, subsets)
        u[:, -1] *= c  # k -> c in m/s
    else:
        u = bancroft_batch(pts, tau, extra, subsets).reshape(-1, prob.dims + 1)
    if not keep_all:
        u = u[np.all(np.isfinite(u), axis=1)]
    if w is not None:
        # back from the air frame: s = s' + w t0
        u[:, : prob.dims] += np.outer(u[:, prob.dims] / c, w[: prob.dims])
    return u


def _score(prob: _Problem, cand: np.ndarray, thr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MSAC cost of each candidate (M,): sum over nodes of min(r^2, thr^2), whitened; and those
    whitened residuals r (M, N) (the consensus checks the best one's).

    Candidates with a trailing speed-of-sound column are scored with their own c.
    """
    d = prob.dims
    c = cand[:, d + 1, None] if cand.shape[1] > d + 1 else prob.c_ref
    t = _travel_times(prob.src(cand[:, : d + 1]), prob.nodes, c, prob.wind)
    r = (prob.t - cand[:, d, None] / prob.c_ref - t) / prob.sig
    return np.minimum(r * r, thr * thr).sum(axis=1), r


def _batch_res_jac(prob: _Problem, cand: np.ndarray, with_c: bool):
    """Whitened residuals (M, N) and Jacobians (M, N, P) of many parameter vectors at once."""
    d = prob.dims
    c = cand[:, d + 1, None] if with_c else prob.c_ref
    t, dt_ds, dt_dc = _travel(prob.src(cand[:, : d + 1]), prob.nodes, c, prob.wind)
    r = (prob.t - cand[:, d, None] / prob.c_ref - t) / prob.sig
    jac = np.empty(t.shape + (d + 2 if with_c else d + 1,))
    jac[..., :d] = dt_ds[..., :d]
    jac[..., d] = 1.0 / prob.c_ref
    if with_c:
        jac[..., d + 1] = dt_dc
    jac /= -prob.sig[:, None]  # -(dT/dp) / sigma (negation is exact)
    return r, jac


def _local_refine(
    prob: _Problem,
    cand: np.ndarray,
    thr: np.ndarray,
    with_c: bool,
    iters: int = 4,
    masks: np.ndarray | None = None,
):
    """A few Gauss-Newton steps per candidate on its own inliers, all candidates at once.

    The "local optimisation" of LO-RANSAC: a minimal-subset fix is only as good
    as its few noisy nodes, and with an unknown c it can be far off along the
    badly observed direction; refitting on the nodes it already explains (and
    re-selecting them each step) turns a near miss into the consensus fix.

    With ``masks`` (M, N) the steps fit each candidate to its own node subset
    instead (a nonlinear polish of an algebraic fix that ignored constraints).
    """
    p = cand.copy()
    n_par = p.shape[1]
    diag = np.arange(n_par)
    for _ in range(iters):
        r, j = _batch_res_jac(prob, p, with_c)
        w = (np.abs(r) <= thr) if masks is None else masks
        w = w.astype(float)
        ok = w.sum(axis=1) > n_par  # need at least one redundant node to trust the step
        jw = j * w[..., None]
        jtj = np.einsum("mni,mnj->mij", jw, j)
        jtr = np.einsum("mni,mn->mi", jw, r)
        # Tiny Levenberg damping keeps near-singular candidates finite.
        jtj[:, diag, diag] += (1e-9 * np.trace(jtj, axis1=1, axis2=2) + 1e-30)[:, None]
        step = np.linalg.solve(jtj, jtr[..., None])[..., 0]
        # residual = obs - pred, J = d r / d p, so the GN step is -(J^T J)^-1 J^T r
        p[ok] -= step[ok]
    return p


def locate(
    positions_m: np.ndarray,
    times_s: np.ndarray,
    *,
    c_mps: float,
    sigma_s: float | np.ndarray = 50e-6,
    dims: int = 2,
    source_height_m: float = 0.0,
    robust: bool = True,
    wind_enu_mps: np.ndarray | None = None,
    max_outliers: int | None = None,
    solve_c: bool = False,
    reject_sigma: float = 4.0,
    model_floor_s: float = 100e-6,
    cov_scaling: str = "auto",
    max_subsets: int = MAX_SUBSETS,
    start: tuple[np.ndarray, float] | None = None,
) -> Solution:
    """Locate an impulsive source from arrival times at N nodes.

    Parameters
    ----------
    positions_m
        (N, 2) or (N, 3) node positions, local ENU metres.
    times_s
        (N,) arrival (onset) times, seconds relative to any reference of the
        caller's choosing (keep it near the event: float64 seconds since the
        Unix epoch would only resolve ~0.2 us).
    c_mps
        Speed of sound, m/s (the starting value when ``solve_c``).
    sigma_s
        1-sigma timing noise, seconds, scalar or per node (N,).
    dims
        2: solve (x, y, t0) with the source at ``source_height_m``; 3: solve (x, y, z, t0).
    source_height_m
        Assumed source height (ENU up, metres) for the 2-D fix. Nodes may sit at any height.
    robust
        Reject outlier nodes (echoes, early picks, wrong associations) by consensus.
        Needs at least ``dims + 3`` nodes to do anything.
    wind_enu_mps
        Uniform wind (east, north[, up]) m/s, or None for still air.
    max_outliers
        Most nodes that may be rejected; default: all but ``dims + 2``.
    solve_c
        Also solve the speed of sound (needs at least ``dims + 3`` used nodes;
        otherwise ``c_mps`` is kept). Poorly determined unless sources are outside
        or spread well; mostly for calibration.
    reject_sigma, model_floor_s
        A node is an outlier when |residual| > sqrt((reject_sigma * sigma_i)^2 + model_floor_s^2).
        The floor (s) absorbs model error (node position, wind, temperature) that
        the timing sigma does not describe.
    cov_scaling
        "apriori": covariance = (J^T J)^-1 with the given sigma; "aposteriori":
        always scaled by the reduced chi-square; "auto" (default): scaled by it
        only when it exceeds the 99th percentile of chi2(dof)/dof, i.e. when the
        residuals prove the given sigma too optimistic.
    max_subsets
        Closed-form subsets are enumerated up to this many, sampled (seeded) beyond.
    start
        (position, emission time) of a known nearby solution, in the coordinates and time
        reference of ``positions_m`` and ``times_s`` (a shot re-located after more picks
        joined): the fit starts there instead of from closed-form candidates and their
        consensus. Ignored with ``solve_c``.

    Returns
    -------
    Solution

    Raises
    ------
    LocateError
        Fewer than ``dims + 2`` nodes, non-finite input, coincident nodes
        (< 1 mm), or collinear (2-D) / coplanar (3-D) node geometry.
    """
    if cov_scaling not in ("apriori", "aposteriori", "auto"):
        raise ValueError(f"cov_scaling must be 'apriori', 'aposteriori' or 'auto', got {cov_scaling!r}")
    if start is not None and dims == 2 and wind_enu_mps is None and not solve_c and _COMPILED_START:
        sol = _located_from_start(positions_m, times_s, sigma_s, c_mps, source_height_m, robust, max_outliers,
                                  reject_sigma, model_floor_s, cov_scaling, start)
        if sol is not None:
            return sol  # (None: an input to refuse, which the steps below name)
    raw, origin, nodes, t_in, sig = _validate(positions_m, times_s, sigma_s, dims, c_mps)
    n = len(t_in)
    t_ref = float(t_in.min())
    wind = None if wind_enu_mps is None else _wind3(wind_enu_mps)
    if wind is not None and not np.any(wind):
        wind = None
    prob = _Problem(
        nodes=nodes,
        t=t_in - t_ref,
        sig=sig,
        c_ref=float(c_mps),
        dims=dims,
        height=float(source_height_m) - origin[2],
        wind=wind,
    )
    thr = np.sqrt(reject_sigma**2 + (model_floor_s / sig) ** 2)  # whitened threshold per node
    min_used = dims + 2
    can_reject = robust and n >= dims + 3
    if max_outliers is None:
        max_out = n - min_used
    else:
        max_out = max(0, min(int(max_outliers), n - min_used))
    can_reject = can_reject and max_out > 0
    stages = ["bancroft"]
    fit_c = solve_c and n >= dims + 3

    if start is not None and not fit_c:
        # A known nearby solution (a shot re-located with a few more picks): the consensus
        # search is not needed to find the basin; the robust fit below still rejects outliers.
        s_pos = np.asarray(start[0], float).ravel()
        x0 = np.empty(dims + 1)
        x0[:dims] = s_pos[:dims] - origin[:dims]
        x0[dims] = prob.c_ref * (float(start[1]) - t_ref)
        stages = ["start"]
    else:
        # 1-2. closed-form candidates and consensus
        subsets = [np.arange(n)[None, :]]
        if can_reject:
            subsets.append(_subsets(n, dims + 2, max_subsets))
            stages.append("consensus(msac)")
        cand = _candidates(prob, subsets)
        if fit_c:
            # Known-c candidates carry c_ref; unknown-c ones (subsets of dims + 3)
            # their own estimate. Scoring each with its own c lets the consensus
            # pick up a c far from c_ref (a cold night is 5 % slower) while outliers
            # are still being sorted out.
            cand = np.column_stack([cand, np.full(len(cand), prob.c_ref)])
            subsets_c = [np.arange(n)[None, :]]
            if can_reject and n > dims + 3:
                subsets_c.append(_subsets(n, dims + 3, max_subsets))
            rows_c = np.concatenate([np.pad(sub, ((0, 0), (0, n - sub.shape[1])), mode="edge")
                                     for sub in subsets_c])
            masks = np.zeros((len(rows_c), n), bool)
            np.put_along_axis(masks, rows_c, True, axis=1)
            cand_c = np.concatenate([_candidates(prob, s, unknown_c=True, keep_all=True)
                                     for s in subsets_c])
            # The linear unknown-c algebra drops the ties between its unknowns:
            # polish each fix on its own subset before scoring, and discard
            # unphysical speeds.
            cand_c = _local_refine(prob, cand_c, thr, True, iters=3, masks=masks)
            keep = np.all(np.isfinite(cand_c), axis=1)
            keep &= (cand_c[:, -1] > 0.5 * prob.c_ref) & (cand_c[:, -1] < 2.0 * prob.c_ref)
            cand_c = cand_c[keep]
            cand = np.concatenate([cand, cand_c])
        if len(cand) == 0:
            # Every algebraic fix degenerate (cannot happen for validated geometry,
            # kept as a safety net): start at the earliest node, emitted when it heard it.
            i0 = int(np.argmin(prob.t))
            x0 = np.r_[prob.nodes[i0, :dims], prob.c_ref * prob.t[i0]]
            if fit_c:
                x0 = np.r_[x0, prob.c_ref]
            stages.append("fallback(earliest)")
        else:
            cost, r_cand = _score(prob, cand, thr)
            cost[~np.isfinite(cost)] = np.inf
            best = int(np.argmin(cost))
            suspects = cost[best] > 0 and np.any(np.abs(r_cand[best]) > thr)
            if fit_c or (can_reject and suspects):
                top = np.argsort(cost, kind="stable")[:_LO_CANDIDATES]
                top = top[np.isfinite(cost[top])]
                refined = _local_refine(prob, cand[top], thr, fit_c)
                cost_r = _score(prob, refined, thr)[0]
                cost_r[~np.all(np.isfinite(refined), axis=1)] = np.inf
                if np.min(cost_r) < cost[best]:
                    cand, cost, best = refined, cost_r, int(np.argmin(cost_r))
                stages[-1] += "+lo"
            x0 = cand[best].copy()

    # 3. robust fit on all nodes from the consensus seed, then reject
    used = np.ones(n, bool)
    prob.solve_c = fit_c
    # Skipped when the consensus seed already fits every node: the final fit
    # re-checks all residuals anyway, and this saves a solver call per clean shot.
    if can_reject and np.any(np.abs(prob.whitened(x0)) > thr):
        # Cauchy rather than soft_l1/huber: its influence redescends, so a 30 ms
        # echo at a node near the source cannot drag a weakly constrained fix by
        # metres (soft_l1 does, measured); the consensus seed keeps it out of the
        # spurious minima that redescending losses have far from the truth.
        x0 = _levenberg_marquardt(prob, slice(None), x0, f_scale=_ROBUST_F_SCALE, step_tol_m=1e-3, gain_tol=1e-6).x
        stages.append("lsq(cauchy)")
        used = lm_kernel.inliers(np.abs(prob.whitened(x0)), thr, max_out, min_used)
    if fit_c and used.sum() < dims + 3:
        # Not enough consistent nodes to also solve c: keep the given one.
        prob.solve_c = fit_c = False
        x0 = x0[: dims + 1]

    # 4. final plain least squares on the inliers (ML under Gaussian noise),
    # re-admitting / re-rejecting if the refit moves a node across the threshold.
    p0 = x0
    fit = None
    for _ in range(3):
        fit = _levenberg_marquardt(prob, np.flatnonzero(used), p0)
        p0 = fit.x
        # Residuals (s) of every node and their Jacobian at the fit, from one evaluation: the
        # inlier check needs the former, the uncertainty below (at this same fit) both.
        res, jac = prob.residuals_jac(p0)
        if not can_reject:
            break
        new_used = lm_kernel.inliers(np.abs(res / sig), thr, max_out, min_used)
        if (new_used == used).all():
            break
        used = new_used
    stages.append("lsq(linear)")
    if fit_c:
        stages.append("solve_c")
    p = p0
    c_fin = prob.c_of(p)

    # 5. uncertainty
    n_used = int(np.count_nonzero(used))
    # Most fits keep every node: the whole arrays then, not copies through an index.
    idx = slice(None) if n_used == n else np.flatnonzero(used)
    r_used = res[idx] / sig[idx]  # the whitened residuals of the inliers
    j = jac[idx]
    n_par = j.shape[1]
    dof = n_used - n_par
    chi2_red = float(r_used @ r_used / dof) if dof > 0 else float("nan")
    cov, ok_cov = _covariance(j.T @ j, dof, chi2_red, cov_scaling, dims, prob.c_ref)

    src = prob.src(p) + origin
    position = src[: raw.shape[1]].copy()
    t0_rel = p[dims] / prob.c_ref
    residuals = res
    res_used = residuals[idx]
    # np.sqrt(np.mean(r ** 2)): the same sum and division, without numpy's per-call bookkeeping.
    rms = math.sqrt(float((res_used * res_used).sum()) / n_used)
    cep50, cep95, ellipse = horizontal_uncertainty(cov[:2, :2])
    converged = bool(
        fit is not None
        and fit.success
        and ok_cov
        and np.isfinite(p).all()
        and n_used >= min_used
        and (np.abs(res_used) <= thr[idx] * sig[idx] * 1.5).all()
    )
    return Solution(
        position_m=position,
        t0_s=t_ref + float(t0_rel),
        c_mps=c_fin,
        covariance=cov,
        cep50_m=cep50,
        cep95_m=cep95,
        ellipse_m=ellipse,
        residuals_s=residuals,
        used=used,
        rms_residual_s=rms,
        n_used=n_used,
        converged=converged,
        method="+".join(stages),
        dims=dims,
        chi2_reduced=chi2_red,
    )


def _covariance(
    jtj: np.ndarray, dof: int, chi2_red: float, cov_scaling: str, dims: int, c_ref: float
) -> tuple[np.ndarray, bool]:
    """Covariance of ``(x, y[, z], t0[, c])`` (m^2, m*s, s^2, ...; see :class:`Solution`) from the
    normal matrix ``jtj`` (P, P) = J^T J of the inliers' whitened Jacobian J, scaled per
    ``cov_scaling``; False when it is singular (the pseudo-inverse is returned then)."""
    scale = 1.0
    if dof > 0 and cov_scaling == "aposteriori":
        scale = chi2_red
    elif dof > 0 and cov_scaling == "auto" and chi2_red > _chi2_99(dof) / dof:
        scale = chi2_red
    cov = _inv_sym3(jtj, scale, 1.0 / c_ref) if jtj.shape == (3, 3) else None
    if cov is not None:
        return cov, True
    try:
        cov_p = np.linalg.inv(jtj)
        ok_cov = True
    except np.linalg.LinAlgError:
        cov_p = np.linalg.pinv(jtj)
        ok_cov = False
    cov_p = cov_p * scale
    # parameter d0 = c_ref * t0 (metres) -> t0 seconds
    conv = np.ones(jtj.shape[0])
    conv[dims] = 1.0 / c_ref
    cov = cov_p * np.outer(conv, conv)
    return 0.5 * (cov + cov.T), ok_cov


def _located_from_start(positions_m, times_s, sigma_s, c_mps, source_height_m, robust, max_outliers, reject_sigma,
                        model_floor_s, cov_scaling, start) -> Solution | None:
    """:func:`locate` of a 2-D source in still air with a known c from ``start`` (arguments as there),
    its steps compiled in one call (:func:`lm_kernel.locate_from_start`: the same numbers); None for an
    input that :func:`locate` refuses, which its own checks then name."""
    p = np.asarray(positions_m, dtype=float)
    t = np.ascontiguousarray(np.asarray(times_s, dtype=float).ravel())
    n = len(t)
    if p.ndim != 2 or p.shape[1] not in (2, 3) or len(p) != n:
        return None
    sig = np.empty(n)
    sig[:] = sigma_s  # a scalar or (N,) seconds
    c_ref = float(c_mps)
    max_out = n - 4 if max_outliers is None else max(0, min(int(max_outliers), n - 4))
    s_pos = np.asarray(start[0], float).ravel()
    status, src, t0, res, used, jtj, chi2_red, rms, fits, robust_ran = lm_kernel.locate_from_start(
        np.ascontiguousarray(p), t, sig, float(s_pos[0]), float(s_pos[1]), float(start[1]), float(source_height_m),
        c_ref, float(reject_sigma) ** 2, float(model_floor_s), bool(robust and n >= 5 and max_out > 0), max_out,
        _ROBUST_F_SCALE)
    if status:
        return None
    n_used = int(np.count_nonzero(used))
    cov, ok_cov = _covariance(jtj, n_used - 3, chi2_red, cov_scaling, 2, c_ref)
    cep50, cep95, ellipse = horizontal_uncertainty(cov[:2, :2])
    return Solution(
        position_m=src if p.shape[1] == 3 else src[:2].copy(),
        t0_s=t0,
        c_mps=c_ref,
        covariance=cov,
        cep50_m=cep50,
        cep95_m=cep95,
        ellipse_m=ellipse,
        residuals_s=res,
        used=used,
        rms_residual_s=rms,
        n_used=n_used,
        converged=bool(fits and ok_cov),
        method="start+lsq(cauchy)+lsq(linear)" if robust_ran else "start+lsq(linear)",
        dims=2,
        chi2_reduced=chi2_red,
    )


def _inv_sym3(jtj: np.ndarray, scale: float, inv_c: float) -> np.ndarray | None:
    """``scale * inv(jtj)`` of the 2-D fit's 3 x 3 normal matrix (x, y, d0 = c t0), its d0 row and
    column times ``inv_c`` (-> t0 s), by cofactors: LAPACK's inverse costs more than the rest of the
    covariance for a 3 x 3. None when the matrix is poorly conditioned (correlation determinant
    < 1e-3: beyond, the two differ by more than rounding), where the caller's LU inverse is kept."""
    (a, b, c), (_, d, e), (_, _, f) = jtj.tolist()  # symmetric: the upper triangle
    c00, c01, c02 = d * f - e * e, c * e - b * f, b * e - c * d
    c11, c12, c22 = a * f - c * c, b * c - a * e, a * d - b * b
    det = a * c00 + b * c01 + c * c02
    if not det > 1e-3 * a * d * f or not math.isfinite(det):  # also: not positive definite, NaN
        return None
    k = scale / det
    kc = k * inv_c
    return np.array(
        [[k * c00, k * c01, kc * c02], [k * c01, k * c11, kc * c12], [kc * c02, kc * c12, kc * inv_c * c22]]
    )


_STILL_AIR = np.zeros(3)


@dataclass
class _Fit:
    x: np.ndarray
    success: bool
    n_iter: int


def _levenberg_marquardt(
    prob: _Problem, idx: np.ndarray | slice, p0: np.ndarray, f_scale: float | None = None, max_iter: int = 50,
    step_tol_m: float = 1e-7, gain_tol: float = 1e-10, compiled: bool = True,
) -> _Fit:
    """Least squares of the whitened residuals of nodes ``idx`` from ``p0``; Cauchy loss with ``f_scale``.

    Levenberg-Marquardt with the analytic Jacobian and Marquardt's diagonal
    scaling (as MINPACK's ``lmder`` with ``x_scale="jac"``), written out: the
    problems have 3-5 parameters and 4-30 residuals, where scipy's general
    driver spent ~0.5 ms per call on its own bookkeeping, most of a hub's
    location time. With ``f_scale`` the cost is the Cauchy loss
    sum f^2 ln(1 + (r / f)^2), minimised by iteratively reweighted steps
    (weights 1 / (1 + (r / f)^2), the loss' own curvature weights), each
    step accepted only if it lowers that cost. Converged when a step changes
    the cost by less than ``gain_tol`` relative or moves no parameter by more
    than 1e-10 relative + ``step_tol_m`` (parameters in metres: x, y[, z],
    c t0; c in m/s). Reweighting converges only linearly, so the robust stage,
    which just sorts inliers from outliers for the plain fit that follows,
    stops at a millimetre.

    Fits with a known c run compiled (:mod:`.lm_kernel`, the same steps; ``compiled=False``
    runs this numpy version, which also solves for c).
    """
    if compiled and not prob.solve_c:
        ix = np.arange(len(prob.t)) if isinstance(idx, slice) else np.asarray(idx, dtype=np.intp)
        x, ok, it = lm_kernel.levenberg_marquardt(
            prob.nodes, prob.t, prob.sig, ix, np.ascontiguousarray(p0, dtype=float), prob.dims, prob.height, prob.c_ref,
            _STILL_AIR if prob.wind is None else prob.wind, -1.0 if f_scale is None else float(f_scale),
            max_iter, step_tol_m, gain_tol)
        return _Fit(x, bool(ok), int(it))

    def cost_of(r: np.ndarray) -> float:
        if f_scale is None:
            return float(r @ r)
        return float(f_scale * f_scale * np.sum(np.log1p((r / f_scale) ** 2)))

    p = np.array(p0, dtype=float)
    r, j = prob.whitened_jac(p, idx)
    cost = cost_of(r)
    lam = 0.0  # Gauss-Newton while it lowers the cost; damped only when it does not
    for it in range(1, max_iter + 1):
        jw = j if f_scale is None else j * (1.0 / (1.0 + (r / f_scale) ** 2))[:, None]
        a = jw.T @ j
        g = jw.T @ r
        diag = np.diag(np.maximum(np.diag(a), 1e-30))
        while True:
            try:
                step = np.linalg.solve(a + lam * diag, -g)
            except np.linalg.LinAlgError:
                step = None
            if step is not None and np.all(np.isfinite(step)):
                p_new = p + step
                r_new, j_new = prob.whitened_jac(p_new, idx)
                cost_new = cost_of(r_new)
                if np.isfinite(cost_new) and cost_new <= cost:
                    break
            lam = max(lam * 10.0, 1e-4)
            if lam > 1e12:
                # No step lowers the cost: at a minimum to machine precision.
                return _Fit(p, bool(np.all(np.isfinite(p))), it)
        small_step = np.all(np.abs(step) <= 1e-10 * np.abs(p) + step_tol_m)
        small_gain = cost - cost_new <= gain_tol * max(cost, 1e-300)
        p, r, j, cost = p_new, r_new, j_new, cost_new
        lam = lam * 0.1 if lam > 1e-6 else 0.0
        if small_step or small_gain:
            return _Fit(p, True, it)
    return _Fit(p, False, max_iter)


@functools.lru_cache(maxsize=256)
def _chi2_99(dof: int) -> float:
    """99th percentile of chi-square with ``dof`` degrees of freedom (cached: scipy's ppf costs ~0.1 ms)."""
    return float(chi2.ppf(0.99, dof))


