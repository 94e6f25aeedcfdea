"""Closed-form (algebraic) source fixes for time-of-arrival with an unknown emission time.

This is Bancroft's method (Bancroft 1985, "An algebraic solution of the GPS
equations"): the arrival model ``(tau_i - d0)**2 = |s - r_i|**2 + e_i`` with
``tau_i = c * t_i`` (metres) and ``d0 = c * t0`` becomes *linear* in
``u = (s, d0)`` once the single quadratic term
``lambda = (|s|**2 - d0**2) / 2`` (half the Lorentz norm of ``u``) is treated as
a parameter; the constraint ``lambda = <u, u> / 2`` then gives a scalar
quadratic with (at most) two roots. For a minimal set it is exact; for an
over-determined set it is the least-squares version of the same algebra, which
is a good starting point for the nonlinear fit. We use it instead of a TDOA
reference-node method (Chan-Ho, spherical interpolation) because it works on
the arrival times directly, needs no choice of reference node (so one bad
reference cannot spoil the whole fix) and solves many small subsets in one
batched numpy call, which the consensus stage needs.

``e_i`` carries a known extra squared offset: in the 2-D problem the source
height is assumed, so the vertical offset ``(h - z_i)**2`` of each node is
known and the planar fix stays exact even when nodes sit at different heights.

Everything here is unit-agnostic but expects metres; the inputs are rescaled
internally for conditioning.
"""

from __future__ import annotations

import numpy as np


def _lorentz(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Lorentz inner product over the last axis: spatial dot minus the last component product."""
    return np.einsum("...i,...i->...", a[..., :-1], b[..., :-1]) - a[..., -1] * b[..., -1]


def bancroft_batch(
    nodes_m: np.ndarray, tau_m: np.ndarray, extra_sq_m2: np.ndarray, subsets: np.ndarray | list[np.ndarray]
) -> np.ndarray:
    """Closed-form fixes for many node subsets at once.

    Parameters
    ----------
    nodes_m
        (N, D) node coordinates in metres (D = 2 or 3), ideally centred near zero.
    tau_m
        (N,) arrival times times the speed of sound, metres, relative to any
        common reference.
    extra_sq_m2
        (N,) known extra squared range per node, m^2 (0 in 3-D; the squared
        height difference between node and assumed source in 2-D).
    subsets
        (H, k) integer indices, k >= D + 1 nodes per subset; or a list of such
        arrays with different k (all nodes and the minimal subsets, say), whose
        fixes come out concatenated in order, sharing the set-up.

    Returns
    -------
    (H, 2, D + 1) candidate solutions ``(s_1..s_D, d0)`` in metres, the two
    roots of the Bancroft quadratic per subset. Rows can be non-finite when a
    subset is degenerate (collinear/coplanar nodes, no real root); callers
    must filter them.
    """
    nodes_m = np.asarray(nodes_m, float)
    tau_m = np.asarray(tau_m, float)
    # Rescale so that coordinates are O(1): the quadratic mixes m^2 and m^4
    # terms and the pseudo-inverse cut-off is relative.
    scale = float(np.sqrt(np.mean(nodes_m**2) + np.mean(tau_m**2))) or 1.0
    p = nodes_m / scale
    tau = tau_m / scale
    e = np.asarray(extra_sq_m2, float) / scale**2

    # Lorentz 'position' (r_i, tau_i) of each node, its last component negated:
    # <a_i, u> = r_i . s - tau_i d0 is then an ordinary dot product with (r_i, -tau_i).
    b_all = np.concatenate([p, -tau[:, None]], axis=1)
    alpha_all = 0.5 * (np.einsum("ij,ij->i", p, p) + e - tau**2)
    groups = [subsets] if isinstance(subsets, np.ndarray) else subsets
    sol = np.concatenate([_normal_solve(b_all[sub], alpha_all[sub]) for sub in groups])
    pv, qv = sol[..., 0], sol[..., 1]
    # u = pv + lam * qv and lam = <u,u>/2  =>  A lam^2 + 2 B lam + C = 0
    a_coef = _lorentz(qv, qv)
    b_coef = _lorentz(pv, qv) - 1.0
    c_coef = _lorentz(pv, pv)
    disc = np.maximum(b_coef**2 - a_coef * c_coef, 0.0)  # noise can push it slightly negative
    with np.errstate(divide="ignore", invalid="ignore"):
        # Numerically stable pair of roots (no cancellation; also fine when A -> 0).
        qroot = -(b_coef + np.copysign(np.sqrt(disc), b_coef))
        lam1 = qroot / a_coef
        lam2 = c_coef / qroot
    lam = np.stack([lam1, lam2], axis=1)  # (H, 2)
    u = pv[:, None, :] + lam[..., None] * qv[:, None, :]
    return u * scale


def _normal_solve(b: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """(H, D + 1, 2) least-squares solutions of ``b u = alpha`` and ``b u = 1`` for (H, k, D + 1) rows
    ``b`` and (H, k) ``alpha``.

    Via the normal equations (batched small solves are several times faster than a batched SVD);
    exactly singular subsets fall back to the pseudo-inverse.
    """
    rhs = np.empty(alpha.shape + (2,))  # (H, k, 2)
    rhs[..., 0] = alpha
    rhs[..., 1] = 1.0
    btb = np.einsum("hki,hkj->hij", b, b)
    btr = np.einsum("hki,hkj->hij", b, rhs)
    try:
        return np.linalg.solve(btb, btr)
    except np.linalg.LinAlgError:
        return np.linalg.pinv(b, rcond=1e-10) @ rhs


def bancroft(nodes_m: np.ndarray, tau_m: np.ndarray, extra_sq_m2: np.ndarray | None = None) -> np.ndarray:
    """Both closed-form candidates ``(2, D + 1)`` for one node set; see :func:`bancroft_batch`."""
    nodes_m = np.asarray(nodes_m, float)
    n = nodes_m.shape[0]
    e = np.zeros(n) if extra_sq_m2 is None else np.asarray(extra_sq_m2, float)
    return bancroft_batch(nodes_m, tau_m, e, np.arange(n)[None, :])[0]


def linear_unknown_c_batch(
    nodes_m: np.ndarray, tau_m: np.ndarray, extra_sq_m2: np.ndarray, subsets: np.ndarray
) -> np.ndarray:
    """Closed-form fixes with the speed of sound unknown too, for many subsets at once.

    ``tau_m = c_ref * t`` for a reference speed ``c_ref``; the true speed is
    ``c = k c_ref``. Expanding ``|s - r_i|^2 + e_i = k^2 (tau_i - d0)^2`` gives an
    equation linear in ``(s, A = k^2, B = k^2 d0, K = |s|^2 - k^2 d0^2)``:

        -2 r_i . s - A tau_i^2 + 2 B tau_i + K = -|r_i|^2 - e_i

    so ``D + 3`` nodes (5 in 2-D) give a square linear system. The three
    nonlinear ties between ``A, B, K, s`` are dropped (the nonlinear fit
    restores them), so this is noisier than Bancroft for the same nodes.

    Returns (H, D + 2): ``(s_1..s_D, d0, k)`` with ``d0`` in the ``tau`` scale
    (metres at ``c_ref``) and ``k = c / c_ref``; NaN where there is no
    physical solution (A <= 0) or the subset is degenerate.
    """
    nodes_m = np.asarray(nodes_m, float)
    scale = float(np.sqrt(np.mean(nodes_m**2) + np.mean(tau_m**2))) or 1.0
    p = nodes_m / scale
    tau = np.asarray(tau_m, float) / scale
    e = np.asarray(extra_sq_m2, float) / scale**2
    rows = np.column_stack([-2.0 * p, -(tau**2), 2.0 * tau, np.ones(len(tau))])
    rhs_all = -np.einsum("ij,ij->i", p, p) - e
    a = rows[subsets]
    rhs = rhs_all[subsets][..., None]
    ata = np.einsum("hki,hkj->hij", a, a)
    atb = np.einsum("hki,hkj->hij", a, rhs)
    try:
        sol = np.linalg.solve(ata, atb)[..., 0]
    except np.linalg.LinAlgError:
        sol = (np.linalg.pinv(a, rcond=1e-10) @ rhs)[..., 0]
    d = p.shape[1]
    big_a = sol[:, d]
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.where(big_a > 0, np.sqrt(np.abs(big_a)), np.nan)
        d0 = sol[:, d + 1] / big_a
    return np.column_stack([sol[:, :d] * scale, d0 * scale, k])
