"""Compiled Levenberg-Marquardt for the locator's known-speed-of-sound fits (numba), the fit from a
known start with its rejections (:func:`fit_from_start`, 2-D in still air: a hub's re-locations) and
the whole of ``locate`` around it (:func:`locate_from_start`), and
the Newton iteration of its CEP radii (:func:`cep_newton`, see :mod:`.uncertainty`).

The hub locates every candidate set and re-locates every shot that gains
picks: thousands of small problems (3-4 parameters, 4-30 residuals) a
second in a dense scene, where numpy's per-call overhead was most of the
cost (~0.1-0.2 ms per fit). This is :func:`shotline.hub.locate._levenberg_marquardt`
with :meth:`shotline.hub.locate._Problem.whitened_jac` inlined, step for step
(same cost, damping, acceptance and stopping rules), for fits that do not
solve for c; tests/hub/test_locate.py checks the two against each other.

Conventions as the locator's conditioned problem: node positions centred (m),
times relative to the earliest arrival (s), parameters (x, y[, z], c_ref t0) in
metres.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba import types as nt


@njit(cache=True)
def _res_jac(nodes, t, sig, idx, p, dims, height, c, wind, still, r, j):
    """Whitened residuals (observed - predicted) / sigma into ``r`` and their Jacobian into ``j``."""
    sx = p[0]
    sy = p[1]
    sz = p[2] if dims == 3 else height
    d0 = p[dims]
    a_w = c * c - (wind[0] * wind[0] + wind[1] * wind[1] + wind[2] * wind[2])
    for k in range(idx.shape[0]):
        i = idx[k]
        dx = nodes[i, 0] - sx
        dy = nodes[i, 1] - sy
        dz = nodes[i, 2] - sz
        dist2 = dx * dx + dy * dy + dz * dz
        if still:
            dist = np.sqrt(dist2)
            tt = dist / c
            inv = 1.0 / (-c * max(dist, 1e-9))
            gx = dx * inv
            gy = dy * inv
            gz = dz * inv
        else:
            dw = dx * wind[0] + dy * wind[1] + dz * wind[2]
            root = max(np.sqrt(dw * dw + a_w * dist2), 1e-9 * c)
            tt = dist2 / (dw + root)
            gx = -(dx - tt * wind[0]) / root
            gy = -(dy - tt * wind[1]) / root
            gz = -(dz - tt * wind[2]) / root
        s = sig[i]
        r[k] = (t[i] - d0 / c - tt) / s
        j[k, 0] = -gx / s
        j[k, 1] = -gy / s
        if dims == 3:
            j[k, 2] = -gz / s
        j[k, dims] = -1.0 / c / s


@njit(cache=True)
def _cost(r, f_scale):
    out = 0.0
    if f_scale <= 0.0:
        for k in range(r.shape[0]):
            out += r[k] * r[k]
        return out
    for k in range(r.shape[0]):
        q = r[k] / f_scale
        out += np.log1p(q * q)
    return f_scale * f_scale * out


@njit(cache=True)
def _solve_small(a, b, out):
    """Solve a x = b (n <= 5) by Gaussian elimination with partial pivoting; False if singular."""
    n = b.shape[0]
    m = a.copy()
    v = b.copy()
    for col in range(n):
        piv = col
        big = abs(m[col, col])
        for row in range(col + 1, n):
            if abs(m[row, col]) > big:
                big = abs(m[row, col])
                piv = row
        if big == 0.0 or not np.isfinite(big):
            return False
        if piv != col:
            for k in range(n):
                tmp = m[col, k]
                m[col, k] = m[piv, k]
                m[piv, k] = tmp
            tmp = v[col]
            v[col] = v[piv]
            v[piv] = tmp
        for row in range(col + 1, n):
            f = m[row, col] / m[col, col]
            if f != 0.0:
                for k in range(col, n):
                    m[row, k] -= f * m[col, k]
                v[row] -= f * v[col]
    for row in range(n - 1, -1, -1):
        acc = v[row]
        for k in range(row + 1, n):
            acc -= m[row, k] * out[k]
        out[row] = acc / m[row, row]
    return True


@njit(cache=True)
def levenberg_marquardt(nodes, t, sig, idx, p0, dims, height, c, wind, f_scale, max_iter, step_tol_m, gain_tol):
    """Least squares of the whitened residuals of nodes ``idx`` from ``p0``; Cauchy loss when ``f_scale`` > 0.

    Parameters as ``_levenberg_marquardt`` (``wind`` (3,) m/s, zeros for still air).
    Returns (parameters, success, iterations).
    """
    n_par = dims + 1
    n = idx.shape[0]
    still = wind[0] == 0.0 and wind[1] == 0.0 and wind[2] == 0.0
    p = p0.copy()
    r = np.empty(n)
    j = np.zeros((n, n_par))
    _res_jac(nodes, t, sig, idx, p, dims, height, c, wind, still, r, j)
    cost = _cost(r, f_scale)
    r_new = np.empty(n)
    j_new = np.zeros((n, n_par))
    a = np.empty((n_par, n_par))
    g = np.empty(n_par)
    step = np.empty(n_par)
    p_new = np.empty(n_par)
    lam = 0.0  # Gauss-Newton while it lowers the cost; damped only when it does not
    for it in range(1, max_iter + 1):
        # a = jw^T j, g = jw^T r with Cauchy weights 1 / (1 + (r / f)^2)
        for u in range(n_par):
            g[u] = 0.0
            for v in range(n_par):
                a[u, v] = 0.0
        for k in range(n):
            w = 1.0
            if f_scale > 0.0:
                q = r[k] / f_scale
                w = 1.0 / (1.0 + q * q)
            for u in range(n_par):
                ju = j[k, u] * w
                g[u] += ju * r[k]
                for v in range(n_par):
                    a[u, v] += ju * j[k, v]
        while True:
            m = a.copy()
            for u in range(n_par):
                m[u, u] += lam * max(a[u, u], 1e-30)
            ok = _solve_small(m, -g, step)
            if ok:
                for u in range(n_par):
                    if not np.isfinite(step[u]):
                        ok = False
            if ok:
                for u in range(n_par):
                    p_new[u] = p[u] + step[u]
                _res_jac(nodes, t, sig, idx, p_new, dims, height, c, wind, still, r_new, j_new)
                cost_new = _cost(r_new, f_scale)
                if np.isfinite(cost_new) and cost_new <= cost:
                    break
            lam = max(lam * 10.0, 1e-4)
            if lam > 1e12:
                # No step lowers the cost: at a minimum to machine precision.
                fin = True
                for u in range(n_par):
                    fin = fin and np.isfinite(p[u])
                return p, fin, it
        small_step = True
        for u in range(n_par):
            if abs(step[u]) > 1e-10 * abs(p[u]) + step_tol_m:
                small_step = False
        small_gain = cost - cost_new <= gain_tol * max(cost, 1e-300)
        p[:] = p_new
        r[:] = r_new
        j[:, :] = j_new
        cost = cost_new
        lam = lam * 0.1 if lam > 1e-6 else 0.0
        if small_step or small_gain:
            return p, True, it
    return p, False, max_iter


@njit(cache=True)
def _still_residuals(nodes, t, sig, p, height, c_ref, res, jac, want_jac):
    """``locate._Problem.residuals_jac`` (2-D, still air, known c) into ``res`` (s) and ``jac``, its
    arithmetic in its order (``locate._norm2``: a 3-vector's squares summed as (x^2 + z^2) + y^2). Not
    :func:`_res_jac`: that is the fit's own model, summed in its own order since it was written; these are
    the checks around the fit, which must give numpy's numbers bit for bit."""
    sx = p[0]
    sy = p[1]
    for i in range(nodes.shape[0]):
        dx = nodes[i, 0] - sx
        dy = nodes[i, 1] - sy
        dz = nodes[i, 2] - height
        dist = np.sqrt((dx * dx + dz * dz) + dy * dy)
        res[i] = t[i] - p[2] / c_ref - dist / c_ref
        if want_jac:
            den = -c_ref * max(dist, 1e-9)
            jac[i, 0] = (dx / den) / -sig[i]
            jac[i, 1] = (dy / den) / -sig[i]
            jac[i, 2] = (1.0 / c_ref) / -sig[i]


@njit(cache=True)
def inliers(abs_r, thr, max_out, min_used):
    """Inlier mask of a fit (``locate``'s, compiled or not): within threshold, at most ``max_out`` out, at least ``min_used`` kept (the worst
    by residual over threshold go first; the first listed on a tie)."""
    n = abs_r.shape[0]
    ratio = abs_r / thr
    n_bad = min(int(np.count_nonzero(ratio > 1.0)), max_out, n - min_used)
    used = np.ones(n, dtype=np.bool_)
    if n_bad > 0:
        order = np.argsort(-ratio, kind="mergesort")
        for k in range(n_bad):
            used[order[k]] = False
    return used


@njit(cache=True)
def fit_from_start(nodes, t, sig, x0, height, c_ref, thr, can_reject, max_out, min_used, f_robust):
    """``locate``'s fit of a 2-D source in still air with a known c from a start (steps 3 and 4 there):
    a robust (Cauchy, ``f_robust``) fit on every node if some node's whitened residual at ``x0`` is beyond
    its threshold ``thr`` and ``can_reject``, then up to three plain fits on the inliers, re-admitting
    or re-rejecting as the fit moves (:func:`inliers`). Returns (parameters, inliers, residuals (s), the
    whitened Jacobian at the parameters, whether the last fit converged, whether the robust fit ran)."""
    n = t.shape[0]
    res = np.empty(n)
    jac = np.empty((n, 3))
    still = np.zeros(3)
    p0 = x0.copy()
    used = np.ones(n, dtype=np.bool_)
    robust = False
    if can_reject:
        _still_residuals(nodes, t, sig, p0, height, c_ref, res, jac, False)
        for i in range(n):
            if abs(res[i] / sig[i]) > thr[i]:
                robust = True
                break
    if robust:
        p0, _, _ = levenberg_marquardt(nodes, t, sig, np.arange(n), p0, 2, height, c_ref, still, f_robust, 50,
                                       1e-3, 1e-6)
        _still_residuals(nodes, t, sig, p0, height, c_ref, res, jac, False)
        used = inliers(np.abs(res / sig), thr, max_out, min_used)
    ok = False
    for _ in range(3):
        p0, ok, _ = levenberg_marquardt(nodes, t, sig, np.flatnonzero(used), p0, 2, height, c_ref, still, -1.0, 50,
                                        1e-7, 1e-10)
        _still_residuals(nodes, t, sig, p0, height, c_ref, res, jac, True)
        if not can_reject:
            break
        new_used = inliers(np.abs(res / sig), thr, max_out, min_used)
        same = True
        for i in range(n):
            if new_used[i] != used[i]:
                same = False
                break
        if same:
            break
        used = new_used
    return p0, used, res, jac, ok, robust


@njit(cache=True)
def _block_sum(a, lo, n):
    """numpy's sum of at most 128 contiguous float64 ``a[lo:lo + n]``, in its order (eight partial sums)."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    m = n - n % 8
    while i < m:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@njit(cache=True)
def numpy_sum(a):
    """``a.sum()`` of a contiguous float64 vector, bit for bit: numpy sums pairwise, splitting a run of
    more than 128 in two (the first half rounded down to a multiple of 8) and each block of at most 128
    with eight partial sums. Without recursion (a cached recursive kernel crashed numba on loading):
    the blocks are the leaves of that split, summed in its order with a stack of partial sums."""
    n = a.shape[0]
    if n <= 128:
        return _block_sum(a, 0, n)
    # Depth-first over the split tree: per run (start, length, whether its halves were pushed).
    todo_lo = np.empty(64, dtype=np.int64)
    todo_n = np.empty(64, dtype=np.int64)
    todo_done = np.zeros(64, dtype=np.bool_)
    sums = np.empty(64)
    n_todo = 1
    n_sums = 0
    todo_lo[0] = 0
    todo_n[0] = n
    while n_todo:
        k = n_todo - 1
        lo, m = todo_lo[k], todo_n[k]
        if m <= 128:
            sums[n_sums] = _block_sum(a, lo, m)
            n_sums += 1
            n_todo -= 1
            continue
        if todo_done[k]:
            # both halves summed: left + right, as the recursion adds them
            right = sums[n_sums - 1]
            left = sums[n_sums - 2]
            n_sums -= 2
            sums[n_sums] = left + right
            n_sums += 1
            n_todo -= 1
            continue
        todo_done[k] = True
        m2 = m // 2
        m2 -= m2 % 8
        # the right half below the left on the stack: the left is summed first
        todo_lo[n_todo], todo_n[n_todo], todo_done[n_todo] = lo + m2, m - m2, False
        todo_lo[n_todo + 1], todo_n[n_todo + 1], todo_done[n_todo + 1] = lo, m2, False
        n_todo += 2
    return sums[0]


@njit(cache=True)
def locate_from_start(pos, t_in, sig, start_x, start_y, start_t, source_height, c_ref, reject_sigma2, model_floor,
                      can_reject, max_out, f_robust):
    """``locate`` of a 2-D source in still air with a known c from a start (a hub's re-locations and the
    fits of the sets its searches choose), from its checks to its residual statistics, in one call: the
    same steps as the numpy code in ``locate`` and ``_validate`` (centring, times relative to the earliest,
    thresholds, :func:`fit_from_start`, the inliers' chi-square, normal matrix and RMS residual), giving
    its numbers bit for bit (tests/hub/test_locate.py). There ~150 us a solve went to numpy's per-call
    overhead around a 22 us fit.

    ``pos`` (N, 2|3) m and ``t_in`` (N,) s as given, ``sig`` (N,) s; start (ENU m, s); ``reject_sigma2``
    the squared threshold in sigmas. Returns (status, position (3,) m, emission time s, residuals (N,) s,
    inliers (N,), J^T J (3, 3) of the inliers' whitened Jacobian, reduced chi-square, RMS residual s,
    whether the fit converged with every inlier within 1.5 thresholds, whether the robust fit ran).
    ``status`` 1: an input ``locate`` refuses (non-finite, too few, coincident or collinear nodes, a
    sigma or c not positive and finite), which the caller hands to the numpy path to name.
    """
    n = t_in.shape[0]
    w = pos.shape[1]
    res = np.zeros(n)
    used = np.zeros(n, dtype=np.bool_)
    jtj = np.zeros((3, 3))
    out = np.zeros(3)
    bad = (1, out, 0.0, res, used, jtj, 0.0, 0.0, False, False)
    if n < 4 or not (np.isfinite(c_ref) and c_ref > 0.0):
        return bad
    for i in range(n):
        if not (np.isfinite(t_in[i]) and sig[i] > 0.0 and sig[i] < np.inf):
            return bad
        for k in range(w):
            if not np.isfinite(pos[i, k]):
                return bad
    # centred positions (numpy's column sums: row after row)
    origin = np.zeros(3)
    for i in range(n):
        for k in range(w):
            origin[k] += pos[i, k]
    for k in range(3):
        origin[k] = origin[k] / n
    nodes = np.zeros((n, 3))
    for i in range(n):
        for k in range(3):
            nodes[i, k] = (pos[i, k] if k < w else 0.0) - origin[k]
    # coincident (< 1 mm) or collinear nodes: refused
    for i in range(n):
        for q in range(i + 1, n):
            dx = pos[i, 0] - pos[q, 0]
            dy = pos[i, 1] - pos[q, 1]
            if dx * dx + dy * dy < 1e-6:
                return bad
    sxx = 0.0
    sxy = 0.0
    syy = 0.0
    for i in range(n):
        sxx += nodes[i, 0] * nodes[i, 0]
        sxy += nodes[i, 0] * nodes[i, 1]
        syy += nodes[i, 1] * nodes[i, 1]
    mid = 0.5 * (sxx + syy)
    half = np.hypot(0.5 * (sxx - syy), sxy)
    if mid - half < 1e-12 * (mid + half):
        return bad
    t_ref = t_in[0]
    for i in range(1, n):
        t_ref = min(t_ref, t_in[i])
    t = t_in - t_ref
    thr = np.empty(n)
    for i in range(n):
        q = model_floor / sig[i]
        thr[i] = np.sqrt(reject_sigma2 + q * q)
    x0 = np.empty(3)
    x0[0] = start_x - origin[0]
    x0[1] = start_y - origin[1]
    x0[2] = c_ref * (start_t - t_ref)
    height = source_height - origin[2]
    p, used, res, jac, ok, robust = fit_from_start(nodes, t, sig, x0, height, c_ref, thr, can_reject, max_out, 4,
                                                   f_robust)
    idx = np.flatnonzero(used)
    n_used = idx.shape[0]
    j = np.empty((n_used, 3))
    r_w = np.empty(n_used)
    r_sq = np.empty(n_used)
    conv = ok and n_used >= 4
    for k in range(n_used):
        i = idx[k]
        r_w[k] = res[i] / sig[i]
        r_sq[k] = res[i] * res[i]
        for u in range(3):
            j[k, u] = jac[i, u]
        conv = conv and abs(res[i]) <= thr[i] * sig[i] * 1.5
    for u in range(3):
        conv = conv and np.isfinite(p[u])
    dof = n_used - 3
    chi2_red = (r_w @ r_w) / dof if dof > 0 else np.nan
    jtj = j.T @ j
    out[0] = p[0] + origin[0]
    out[1] = p[1] + origin[1]
    out[2] = height + origin[2]
    t0 = t_ref + p[2] / c_ref
    rms = np.sqrt(numpy_sum(r_sq) / n_used)
    return 0, out, t0, res, used, jtj, chi2_red, rms, conv, robust


@njit(cache=True)
def cep_newton(cos2, sin2, rho, r0, probability):
    """Radius r (in units of the major-axis sigma) where P(r) = ``probability`` for axis ratio ``rho``,
    by Newton's method from ``r0``; NaN when it does not converge (the caller brackets then).

    P(r) = 1 - mean_phi exp(-r^2 / (2 b(phi))), b = cos^2 + rho^2 sin^2 on the quadrature nodes
    ``cos2``, ``sin2`` (see :func:`shotline.hub.uncertainty.cep_radius_m`, which this serves: the
    same steps and stopping rule, one call instead of ~12 numpy calls per radius).
    """
    n = cos2.shape[0]
    inv_n = 1.0 / n
    rr = rho * rho
    r = r0
    for _ in range(8):
        q = -0.5 * r * r
        s = 0.0
        sb = 0.0
        for k in range(n):
            inv_b = 1.0 / (cos2[k] + rr * sin2[k])
            e = np.exp(q * inv_b)
            s += e
            sb += e * inv_b
        f = 1.0 - s * inv_n - probability
        df = r * sb * inv_n
        if df <= 0.0:
            break
        step = f / df
        r -= step
        if abs(step) <= 1e-12 * r:
            return r
    return np.nan


#: The argument types the locator passes (one specialisation).
SIGNATURE = (nt.float64[:, ::1], nt.float64[::1], nt.float64[::1], nt.int64[::1], nt.float64[::1], nt.int64,
             nt.float64, nt.float64, nt.float64[::1], nt.float64, nt.int64, nt.float64, nt.float64)
#: The argument types of :func:`locate_from_start` (positions (N, 2) or (N, 3), C order).
LOCATE_SIGNATURE = ((nt.float64[:, ::1], nt.float64[::1], nt.float64[::1]) + (nt.float64,) * 7
                    + (nt.boolean, nt.int64, nt.float64))
#: The argument types of :func:`inliers`.
INLIERS_SIGNATURE = (nt.float64[::1], nt.float64[::1], nt.int64, nt.int64)
#: The argument types of :func:`cep_newton` (quadrature nodes, rho, start, probability).
CEP_SIGNATURE = (nt.float64[::1], nt.float64[::1], nt.float64, nt.float64, nt.float64)


def compile_all() -> None:
    """Compile :func:`levenberg_marquardt` for :data:`SIGNATURE`, :func:`locate_from_start` (with
    :func:`fit_from_start` inside) for :data:`LOCATE_SIGNATURE`, :func:`inliers` for
    :data:`INLIERS_SIGNATURE` and :func:`cep_newton` for :data:`CEP_SIGNATURE`, or load them from
    numba's cache (see :func:`shotline.hub.grid_kernels.compile_all`)."""
    levenberg_marquardt.compile(SIGNATURE)
    inliers.compile(INLIERS_SIGNATURE)
    cep_newton.compile(CEP_SIGNATURE)
    locate_from_start.compile(LOCATE_SIGNATURE)
