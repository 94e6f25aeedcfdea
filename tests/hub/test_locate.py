"""Tests of shotline.hub.locate: forward model -> synthetic arrivals -> locate -> error.

Statistical tests use fixed seeds and tolerances wide enough for Monte-Carlo
scatter but narrow enough to catch a biased or mis-weighted estimator.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shotline.hub.locate import (
    LocateError,
    Solution,
    crlb_position_rms_m,
    ellipse_scale_factor,
    locate,
    travel_times_s,
)

C = 343.0
SIGMA = 50e-6
H_SRC = 1.5
# An urban-ish layout: 8 nodes on poles and roofs (3-15 m) over ~0.9 x 0.9 km.
NODES = np.array(
    [
        [0.0, 0.0, 5.0],
        [420.0, 30.0, 12.0],
        [810.0, -40.0, 8.0],
        [60.0, 390.0, 6.0],
        [450.0, 460.0, 15.0],
        [860.0, 420.0, 4.0],
        [120.0, 820.0, 9.0],
        [700.0, 850.0, 11.0],
    ]
)


def arrivals(nodes, src, t0=12.345, sigma=0.0, rng=None, wind=None, c=C):
    t = t0 + travel_times_s(nodes, src, c_mps=c, wind_enu_mps=wind)
    if sigma:
        t = t + rng.normal(0.0, sigma, len(t))
    return t


def inside_source(rng):
    return np.r_[rng.uniform(150, 700, 2), H_SRC]


def err2d(sol: Solution, src) -> float:
    return float(np.hypot(*(sol.position_m[:2] - src[:2])))


# ------------------------------------------------------------------ exactness


@settings(max_examples=60, deadline=None)
@given(
    x=st.floats(-1500, 2500),
    y=st.floats(-1500, 2500),
    t0=st.floats(-10, 10),
)
def test_noise_free_exact_recovery_inside_and_outside(x, y, t0):
    src = np.array([x, y, H_SRC])
    sol = locate(NODES, arrivals(NODES, src, t0=t0), c_mps=C, source_height_m=H_SRC)
    assert err2d(sol, src) < 1e-3
    assert abs(sol.t0_s - t0) < 1e-8
    assert sol.converged and sol.n_used == len(NODES)
    assert sol.position_m.shape == (3,) and sol.position_m[2] == H_SRC
    assert np.all(np.isfinite(sol.residuals_s)) and np.max(np.abs(sol.residuals_s)) < 1e-8


def test_two_column_positions_give_two_component_position():
    src = np.array([300.0, 200.0])
    sol = locate(NODES[:, :2], arrivals(NODES[:, :2], src), c_mps=C)
    assert sol.position_m.shape == (2,)
    assert err2d(sol, src) < 1e-6
    assert sol.covariance.shape == (3, 3)


def test_noise_free_3d_with_vertical_spread():
    nodes = NODES.copy()
    nodes[:, 2] = [2, 45, 10, 30, 60, 5, 25, 40]  # roofs of different heights
    rng = np.random.default_rng(3)
    for _ in range(20):
        src = np.r_[rng.uniform(-300, 1100, 2), rng.uniform(0, 50)]
        sol = locate(nodes, arrivals(nodes, src), c_mps=C, dims=3)
        assert np.linalg.norm(sol.position_m - src) < 1e-3
        assert sol.covariance.shape == (4, 4)


def test_exactly_four_nodes_2d():
    src = np.array([300.0, 350.0, H_SRC])
    nodes = NODES[[0, 2, 6, 7]]
    sol = locate(nodes, arrivals(nodes, src), c_mps=C, source_height_m=H_SRC)
    assert err2d(sol, src) < 1e-6


# ------------------------------------------------------------------ statistics


def test_rms_error_within_15_percent_of_crlb():
    rng = np.random.default_rng(42)
    se, crlb2 = [], []
    for _ in range(400):
        src = inside_source(rng)
        sol = locate(NODES, arrivals(NODES, src, sigma=SIGMA, rng=rng), c_mps=C,
                     sigma_s=SIGMA, source_height_m=H_SRC)
        se.append(err2d(sol, src) ** 2)
        crlb2.append(crlb_position_rms_m(NODES, src, c_mps=C, sigma_s=SIGMA) ** 2)
    ratio = np.sqrt(np.mean(se) / np.mean(crlb2))
    assert 0.85 < ratio < 1.15, ratio


def test_noisy_fix_error_under_10_cm():
    rng = np.random.default_rng(5)
    errs = []
    for _ in range(100):
        src = inside_source(rng)
        sol = locate(NODES, arrivals(NODES, src, sigma=SIGMA, rng=rng), c_mps=C,
                     source_height_m=H_SRC)
        errs.append(err2d(sol, src))
    assert max(errs) < 0.1


def test_covariance_is_calibrated():
    """~95 % of errors inside the 95 % ellipse, ~50 % inside CEP50, ~95 % inside CEP95."""
    rng = np.random.default_rng(7)
    k95 = ellipse_scale_factor(0.95) ** 2
    in_ell, in_cep50, in_cep95, in_t0 = [], [], [], []
    n = 800
    for _ in range(n):
        src = inside_source(rng) if rng.random() < 0.7 else np.r_[rng.uniform(-600, 1500, 2), H_SRC]
        t0 = 1.0
        sol = locate(NODES, arrivals(NODES, src, t0=t0, sigma=SIGMA, rng=rng), c_mps=C,
                     sigma_s=SIGMA, source_height_m=H_SRC)
        e = sol.position_m[:2] - src[:2]
        m2 = e @ np.linalg.solve(sol.position_cov_m2, e)
        in_ell.append(m2 <= k95)
        d = np.hypot(*e)
        in_cep50.append(d <= sol.cep50_m)
        in_cep95.append(d <= sol.cep95_m)
        in_t0.append(abs(sol.t0_s - t0) <= 1.96 * sol.t0_sigma_s)
    # binomial sd at p=0.95, n=800 is 0.008; at p=0.5 it is 0.018
    assert abs(np.mean(in_ell) - 0.95) < 0.025
    assert abs(np.mean(in_cep95) - 0.95) < 0.025
    assert abs(np.mean(in_cep50) - 0.50) < 0.055
    assert abs(np.mean(in_t0) - 0.95) < 0.025


def test_outside_source_has_bigger_cep():
    rng = np.random.default_rng(11)
    inside = np.array([430.0, 420.0, H_SRC])
    outside = np.array([2500.0, 1900.0, H_SRC])
    s_in = locate(NODES, arrivals(NODES, inside, sigma=SIGMA, rng=rng), c_mps=C, source_height_m=H_SRC)
    s_out = locate(NODES, arrivals(NODES, outside, sigma=SIGMA, rng=rng), c_mps=C, source_height_m=H_SRC)
    assert s_out.cep50_m > 5 * s_in.cep50_m
    assert s_out.cep95_m > 5 * s_in.cep95_m
    # and the covariance agrees with the Cramér-Rao bound (it is the same Fisher matrix)
    for sol, src in ((s_in, inside), (s_out, outside)):
        crlb = crlb_position_rms_m(NODES, src, c_mps=C, sigma_s=SIGMA)
        assert np.sqrt(np.trace(sol.position_cov_m2)) == pytest.approx(crlb, rel=0.05)
    # outside the array the ellipse is elongated along the bearing from the array
    a, b, _ = s_out.ellipse_m
    assert a > 3 * b


def test_3d_noisy_with_vertical_spread():
    nodes = NODES.copy()
    nodes[:, 2] = [2, 45, 10, 30, 60, 5, 25, 40]
    rng = np.random.default_rng(13)
    se, crlb2 = [], []
    for _ in range(200):
        src = np.r_[rng.uniform(150, 700, 2), rng.uniform(0, 30)]
        sol = locate(nodes, arrivals(nodes, src, sigma=SIGMA, rng=rng), c_mps=C, dims=3,
                     sigma_s=SIGMA)
        se.append(np.sum((sol.position_m - src) ** 2))
        crlb2.append(crlb_position_rms_m(nodes, src, c_mps=C, sigma_s=SIGMA, dims=3) ** 2)
    ratio = np.sqrt(np.mean(se) / np.mean(crlb2))
    assert 0.8 < ratio < 1.2, ratio


# ------------------------------------------------------------------ outliers


def test_late_echo_rejected():
    rng = np.random.default_rng(17)
    errs = []
    for _ in range(300):
        src = inside_source(rng)
        t = arrivals(NODES, src, sigma=SIGMA, rng=rng)
        bad = rng.integers(len(NODES))
        t[bad] += rng.uniform(5e-3, 30e-3)
        sol = locate(NODES, t, c_mps=C, source_height_m=H_SRC)
        assert not sol.used[bad]
        assert sol.n_used == len(NODES) - 1
        assert sol.residuals_s[bad] > 4e-3  # the echo shows up in its residual
        assert sol.converged
        errs.append(err2d(sol, src))
    assert np.percentile(errs, 90) < 0.1
    assert max(errs) < 0.2


def test_early_outlier_rejected():
    rng = np.random.default_rng(19)
    for _ in range(100):
        src = inside_source(rng)
        t = arrivals(NODES, src, sigma=SIGMA, rng=rng)
        bad = rng.integers(len(NODES))
        t[bad] -= rng.uniform(1e-3, 20e-3)
        sol = locate(NODES, t, c_mps=C, source_height_m=H_SRC)
        assert not sol.used[bad] and sol.n_used == len(NODES) - 1
        assert sol.residuals_s[bad] < -0.8e-3
        assert err2d(sol, src) < 0.2


@pytest.mark.parametrize("n_nodes", [8, 10, 12])
def test_two_outliers(n_nodes):
    rng = np.random.default_rng(23 + n_nodes)
    extra = np.column_stack([rng.uniform(0, 850, (4, 2)), rng.uniform(3, 15, 4)])
    nodes = np.vstack([NODES, extra])[:n_nodes]
    for _ in range(60):
        src = inside_source(rng)
        t = arrivals(nodes, src, sigma=SIGMA, rng=rng)
        bad = rng.choice(n_nodes, 2, replace=False)
        t[bad[0]] += rng.uniform(5e-3, 30e-3)
        t[bad[1]] += rng.choice([-1, 1]) * rng.uniform(2e-3, 30e-3)
        sol = locate(nodes, t, c_mps=C, source_height_m=H_SRC)
        assert not np.any(sol.used[bad])
        assert sol.n_used == n_nodes - 2
        assert err2d(sol, src) < 0.2


def test_many_nodes_sampled_consensus_is_deterministic():
    rng = np.random.default_rng(29)
    nodes = np.column_stack([rng.uniform(0, 1500, (20, 2)), rng.uniform(3, 20, 20)])
    src = np.array([700.0, 800.0, H_SRC])
    t = arrivals(nodes, src, sigma=SIGMA, rng=rng)
    bad = [2, 7, 11]
    t[bad] += [8e-3, -4e-3, 25e-3]
    a = locate(nodes, t, c_mps=C, source_height_m=H_SRC)
    b = locate(nodes, t, c_mps=C, source_height_m=H_SRC)
    assert np.array_equal(a.position_m, b.position_m) and np.array_equal(a.used, b.used)
    assert not np.any(a.used[bad]) and a.n_used == 17
    assert err2d(a, src) < 0.1


def test_max_outliers_limits_rejection():
    rng = np.random.default_rng(31)
    src = inside_source(rng)
    t = arrivals(NODES, src, sigma=SIGMA, rng=rng)
    t[[1, 4]] += [10e-3, 20e-3]
    sol = locate(NODES, t, c_mps=C, source_height_m=H_SRC, max_outliers=1)
    assert sol.n_used == len(NODES) - 1
    assert not sol.used[4]  # the worse one goes first
    assert not sol.converged  # node 1 still disagrees


def test_not_robust_uses_everything():
    rng = np.random.default_rng(37)
    src = inside_source(rng)
    t = arrivals(NODES, src, sigma=SIGMA, rng=rng)
    t[3] += 10e-3
    sol = locate(NODES, t, c_mps=C, source_height_m=H_SRC, robust=False)
    assert sol.used.all() and "consensus" not in sol.method
    assert not sol.converged  # the residuals reveal the inconsistency


def test_inflated_covariance_when_sigma_too_optimistic():
    rng = np.random.default_rng(41)
    src = inside_source(rng)
    t = arrivals(NODES, src, sigma=500e-6, rng=rng)  # true noise 10x the claimed sigma
    kw = dict(c_mps=C, sigma_s=SIGMA, source_height_m=H_SRC, robust=False)
    auto = locate(NODES, t, **kw)
    apriori = locate(NODES, t, cov_scaling="apriori", **kw)
    assert auto.chi2_reduced > 10
    assert auto.cep50_m > 3 * apriori.cep50_m


# ------------------------------------------------------------------ wind, c, sigma


def test_wind_correction_reduces_bias():
    wind = np.array([8.0, -5.0])  # m/s, a stiff breeze
    rng = np.random.default_rng(43)
    e_no, e_yes = [], []
    for _ in range(40):
        src = inside_source(rng)
        t = arrivals(NODES, src, sigma=SIGMA, rng=rng, wind=wind)
        no = locate(NODES, t, c_mps=C, source_height_m=H_SRC, robust=False)
        yes = locate(NODES, t, c_mps=C, source_height_m=H_SRC, wind_enu_mps=wind)
        e_no.append(err2d(no, src))
        e_yes.append(err2d(yes, src))
        assert yes.used.all()
    assert np.mean(e_no) > 1.0  # metres of bias without the correction
    assert np.mean(e_yes) < 0.05


def test_wind_travel_time_matches_effective_speed_to_first_order():
    wind = np.array([6.0, 3.0, 0.0])
    src = np.array([100.0, 50.0, 1.5])
    t_exact = travel_times_s(NODES, src, c_mps=C, wind_enu_mps=wind)
    d = NODES - src
    r = np.linalg.norm(d, axis=1)
    t_eff = r / (C + (d / r[:, None]) @ wind)
    np.testing.assert_allclose(t_exact, t_eff, rtol=1e-3)
    np.testing.assert_allclose(travel_times_s(NODES, src, c_mps=C), r / C)


def test_wind_noise_free_exact():
    wind = np.array([10.0, 4.0, 0.0])
    for src in (np.array([300.0, 500.0, H_SRC]), np.array([-900.0, 1600.0, H_SRC])):
        t = arrivals(NODES, src, wind=wind)
        sol = locate(NODES, t, c_mps=C, source_height_m=H_SRC, wind_enu_mps=wind)
        assert err2d(sol, src) < 1e-3


def test_solve_c_recovers_speed_of_sound():
    c_true = 337.0
    src = np.array([1400.0, -600.0, H_SRC])  # outside the array: c is well observed
    t = arrivals(NODES, src, c=c_true)
    sol = locate(NODES, t, c_mps=343.0, source_height_m=H_SRC, solve_c=True)
    assert sol.c_mps == pytest.approx(c_true, abs=1e-6)
    assert err2d(sol, src) < 1e-3
    assert sol.covariance.shape == (4, 4)
    assert "solve_c" in sol.method


def test_per_node_sigma_downweights_noisy_node():
    rng = np.random.default_rng(47)
    sig = np.full(len(NODES), SIGMA)
    sig[2] = 2e-3
    src = inside_source(rng)
    t = arrivals(NODES, src, sigma=SIGMA, rng=rng)
    t[2] += 1.5e-3  # within its own (large) sigma: kept, but barely pulls
    sol = locate(NODES, t, c_mps=C, sigma_s=sig, source_height_m=H_SRC)
    assert sol.used[2]
    assert err2d(sol, src) < 0.1


# ------------------------------------------------------------------ errors


def test_too_few_nodes():
    src = np.array([100.0, 100.0, 0.0])
    with pytest.raises(LocateError, match="at least 4"):
        locate(NODES[:3], arrivals(NODES[:3], src), c_mps=C)
    with pytest.raises(LocateError, match="at least 5"):
        locate(NODES[:4], arrivals(NODES[:4], src), c_mps=C, dims=3)


def test_nan_input_rejected():
    t = arrivals(NODES, np.array([100.0, 100.0, 0.0]))
    t[2] = np.nan
    with pytest.raises(LocateError, match="finite"):
        locate(NODES, t, c_mps=C)


def test_coincident_nodes_rejected():
    nodes = NODES.copy()
    nodes[5] = nodes[1]
    with pytest.raises(LocateError, match="coincident"):
        locate(nodes, np.zeros(len(nodes)), c_mps=C)


def test_coincident_nodes_on_a_grid_rejected():
    """The coincident check's quick pass (node projections on a slanted line all >= 2 mm apart)
    must not miss close pairs: grids share coordinates, and a pair may be close in projection
    but not in space, or 0.5 mm apart."""
    src = np.array([130.0, 70.0, 0.0])

    def fix(nodes, **kw):
        return locate(nodes, arrivals(nodes, src), c_mps=C, **kw)

    xy = np.array([[i * 100.0, j * 100.0] for i in range(3) for j in range(3)])
    fix(xy)  # a grid is fine
    for shift in ([0.0005, 0.0], [0.0, -0.0007], [0.0003, 0.0004]):
        with pytest.raises(LocateError, match="coincident"):
            fix(np.vstack([xy, xy[4] + shift]))
    # 1.5 mm apart along the line's normal: the same projection, not coincident.
    normal = np.array([-0.8414709848078965, 0.5403023058681398])
    fix(np.vstack([xy, xy[4] + 0.0015 * normal]))
    nodes3 = np.column_stack([np.vstack([xy, xy[2]]), np.r_[np.arange(9.0), 2.0005]])
    with pytest.raises(LocateError, match="coincident"):
        fix(nodes3, dims=3)


def test_sigma_validated_as_before():
    t = arrivals(NODES, np.array([300.0, 200.0, H_SRC]))
    for bad in (0.0, -1e-5, np.nan, np.inf, np.r_[np.full(7, 5e-5), np.nan], np.r_[np.full(7, 5e-5), 0.0]):
        with pytest.raises(LocateError, match="sigma_s"):
            locate(NODES, t, c_mps=C, sigma_s=bad)
    a = locate(NODES, t, c_mps=C, sigma_s=5e-5, source_height_m=H_SRC)
    b = locate(NODES, t, c_mps=C, sigma_s=[5e-5] * 8, source_height_m=H_SRC)
    np.testing.assert_array_equal(a.position_m, b.position_m)


def test_collinear_nodes_rejected():
    nodes = np.column_stack([np.arange(6) * 100.0, np.arange(6) * 50.0])
    with pytest.raises(LocateError, match="collinear"):
        locate(nodes, np.zeros(6), c_mps=C)


def test_shape_mismatch_rejected():
    with pytest.raises(LocateError):
        locate(NODES, np.zeros(5), c_mps=C)
    with pytest.raises(LocateError):
        locate(NODES[:, :2], np.zeros(8), c_mps=C, dims=3)
    assert issubclass(LocateError, ValueError)


def test_solve_c_with_an_echo():
    rng = np.random.default_rng(53)
    for _ in range(40):
        src = np.r_[rng.uniform(-1500, 2500, 2), H_SRC]
        c_true = rng.uniform(330.0, 355.0)
        t = arrivals(NODES, src, c=c_true, sigma=SIGMA, rng=rng)
        bad = rng.integers(len(NODES))
        t[bad] += rng.uniform(5e-3, 30e-3)
        sol = locate(NODES, t, c_mps=343.0, source_height_m=H_SRC, solve_c=True)
        assert not sol.used[bad] and sol.n_used == len(NODES) - 1
        err = err2d(sol, src)
        assert err < 5 * np.sqrt(np.trace(sol.position_cov_m2)) + 0.05
        assert abs(sol.c_mps - c_true) < 5 * np.sqrt(sol.covariance[3, 3]) + 0.01


# ------------------------------------------------------------------ written-out solver, warm start


def _lm_problem(rng, k, dims=2, wind=None, sig=None):
    """A conditioned problem as ``locate`` builds it: a source inside (odd k) or out of the array, an
    echo at every third, and the true parameters in that frame."""
    from shotline.hub.locate import _Problem

    src = inside_source(rng) if k % 2 else np.r_[rng.uniform(-800, 1600, 2), H_SRC]
    t = arrivals(NODES, src, sigma=SIGMA, rng=rng)
    if k % 3 == 0:
        t[rng.integers(len(NODES))] += rng.uniform(5e-3, 30e-3)  # an echo for the robust loss
    origin = NODES.mean(axis=0)
    prob = _Problem(nodes=NODES - origin, t=t - t.min(), sig=np.full(len(t), SIGMA) if sig is None else sig,
                    c_ref=C, dims=dims, height=H_SRC - origin[2], wind=wind)
    return prob, np.r_[src[:dims] - origin[:dims], C * (12.345 - t.min())]


def test_written_out_least_squares_matches_scipy():
    """The hand-written Levenberg-Marquardt (plain and Cauchy) reaches scipy's optimum."""
    from scipy.optimize import least_squares

    from shotline.hub.locate import _levenberg_marquardt

    rng = np.random.default_rng(31)
    for k in range(60):
        prob, truth = _lm_problem(rng, k)
        # Plain: a start tens of metres off, as a closed-form fix from noisy picks can be. Cauchy: from
        # near the source, as the locator uses it (the consensus seed); far off, the non-convex loss
        # has other minima, where scipy's trf also stops early.
        p0 = truth + rng.normal(0, 20, 3)
        ours = _levenberg_marquardt(prob, slice(None), p0)
        ref = least_squares(prob.whitened, p0, jac=prob.jac, x_scale="jac", method="lm")
        assert ours.success
        np.testing.assert_allclose(ours.x, ref.x, rtol=0, atol=1e-4)  # metres (x, y, c t0)
        # Cauchy loss: scipy's trf often stops early on this non-convex cost (so it is no
        # reference for the optimum); ours must end at a stationary point no worse than it.
        p0 = truth + rng.normal(0, 1, 3)
        ours = _levenberg_marquardt(prob, slice(None), p0, f_scale=2.0)
        ref = least_squares(prob.whitened, p0, jac=prob.jac, x_scale="jac", loss="cauchy", f_scale=2.0)

        def cauchy(x, prob=prob):
            return float(4.0 * np.sum(np.log1p((prob.whitened(x) / 2.0) ** 2)))

        assert ours.success and cauchy(ours.x) <= cauchy(ref.x) * (1 + 1e-9)
        r, j = prob.whitened_jac(ours.x)
        grad = j.T @ (r / (1 + (r / 2.0) ** 2))
        # stationary: the gradient is ~1e-8 m of parameter change away from zero
        assert np.linalg.norm(grad) < 1e-5 * np.linalg.norm(j) * (1 + np.linalg.norm(r))


def test_compiled_least_squares_takes_the_numpy_steps():
    """The compiled fit (known c) and the numpy one agree: 2-D and 3-D, wind, plain and Cauchy, subsets."""
    from shotline.hub.locate import _levenberg_marquardt

    rng = np.random.default_rng(32)
    for k in range(48):
        dims = 3 if k % 4 == 3 else 2
        wind = np.array([4.0, -2.5, 0.0]) if k % 5 == 1 else None
        prob, truth = _lm_problem(rng, k, dims, wind, sig=rng.uniform(0.5, 2.0, len(NODES)) * SIGMA)
        p0 = truth + rng.normal(0, 10, dims + 1)
        idx = slice(None) if k % 2 else np.flatnonzero(rng.random(len(NODES)) < 0.8)
        for f_scale in (None, 2.0):
            ours = _levenberg_marquardt(prob, idx, p0, f_scale=f_scale)
            ref = _levenberg_marquardt(prob, idx, p0, f_scale=f_scale, compiled=False)
            # Rounding (summation order) may move the stopping test by an iteration on slow fits, which
            # on a poorly determined height (3-D over a flat network) is a fraction of a millimetre.
            assert ours.success == ref.success and abs(ours.n_iter - ref.n_iter) <= 1
            np.testing.assert_allclose(ours.x, ref.x, rtol=0, atol=1e-3)  # metres (position, c t0)


def test_start_from_a_nearby_solution_gives_the_consensus_fix():
    """Re-locating from a known nearby solution (a shot that gained picks) gives the same fix as
    the full closed-form consensus, also when one pick is an echo."""
    rng = np.random.default_rng(32)
    for k in range(50):
        src = inside_source(rng)
        t = arrivals(NODES, src, sigma=SIGMA, rng=rng)
        if k % 2:
            t[rng.integers(len(NODES))] += rng.uniform(5e-3, 30e-3)
        full = locate(NODES, t, c_mps=C, source_height_m=H_SRC)
        near = (src[:2] + rng.normal(0, 2.0, 2), 12.345 + rng.normal(0, 2e-3))
        warm = locate(NODES, t, c_mps=C, source_height_m=H_SRC, start=near)
        assert warm.method.startswith("start")
        np.testing.assert_array_equal(warm.used, full.used)
        assert np.hypot(*(warm.position_m[:2] - full.position_m[:2])) < 1e-4
        assert abs(warm.t0_s - full.t0_s) < 1e-9


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(4, 30), n_bad=st.integers(0, 3), robust=st.booleans(),
       start_off_m=st.sampled_from([0.0, 0.3, 3.0, 30.0]), cols=st.sampled_from([2, 3]),
       offset_s=st.sampled_from([0.0, 1234.5678]), scalar_sigma=st.booleans(),
       max_outliers=st.sampled_from([None, 0, 1, 2]),
       broken=st.sampled_from([None, None, None, "nan", "coincident", "collinear", "few", "sigma", "c"]))
def test_compiled_fit_from_a_start_is_the_numpy_steps_bit_for_bit(seed, n, n_bad, robust, start_off_m, cols, offset_s,
                                                                   scalar_sigma, max_outliers, broken):
    """A 2-D fit in still air from a known start runs compiled, from the input checks to the residual
    statistics (``lm_kernel.locate_from_start``, around ``lm_kernel.fit_from_start``): the same solution,
    every field, bit for bit, as the numpy steps it replaced, with and without outliers (either sign),
    robust or not, with a cap on the outliers, from starts near and far (the Cauchy fit and re-rejections
    then run), with positions in 2 or 3 columns, times relative to the first pick or to a reference
    long before (as the associator gives them), one sigma or one per node; and an input the locator
    refuses (non-finite, coincident or collinear nodes, too few, a sigma or speed of sound not
    positive) is refused with the same words."""
    import shotline.hub.locate as loc

    rng = np.random.default_rng(seed)
    pos = np.c_[rng.uniform(-800, 800, (n, 2)), rng.uniform(2, 15, n)]
    src = np.r_[rng.uniform(-600, 600, 2), 1.5]
    t = np.linalg.norm(pos - src, axis=1) / C + rng.normal(0, 60e-6, n)
    for i in rng.choice(n, min(n_bad, n), replace=False):
        t[i] += rng.uniform(0.005, 0.03) * rng.choice([-1.0, 1.0])
    sig = float(rng.uniform(50e-6, 100e-6)) if scalar_sigma else rng.uniform(50e-6, 100e-6, n)
    t += offset_s
    t0 = float(-np.linalg.norm(pos[np.argmin(t)] - src) / C + t.min())
    start = (src + np.r_[rng.normal(0, start_off_m + 1e-9, 2), 0.0], t0 + rng.normal(0, start_off_m / C + 1e-9))
    c = C
    if broken == "nan":
        t[rng.integers(n)] = np.nan
    elif broken == "coincident":
        pos[1, :2] = pos[0, :2] + 1e-4
    elif broken == "collinear":
        pos[:, 1] = 2.0 * pos[:, 0] + 5.0
    elif broken == "few":
        pos, t = pos[:3], t[:3]
        sig = sig if scalar_sigma else sig[:3]
    elif broken == "sigma":
        sig = 0.0
    elif broken == "c":
        c = -C
    kw = dict(c_mps=c, sigma_s=sig, source_height_m=1.5, robust=robust, start=start, max_outliers=max_outliers)

    def run():
        try:
            return locate(pos[:, :cols], t, **kw)
        except LocateError as exc:
            return str(exc)

    compiled = run()
    loc._COMPILED_START = False
    try:
        plain = run()
    finally:
        loc._COMPILED_START = True
    if broken is not None:
        assert isinstance(plain, str)
    if isinstance(plain, str):
        assert compiled == plain
        return
    for name in ("position_m", "t0_s", "c_mps", "covariance", "cep50_m", "cep95_m", "ellipse_m", "residuals_s", "used",
                 "rms_residual_s", "n_used", "converged", "method", "dims", "chi2_reduced"):
        assert type(getattr(compiled, name)) is type(getattr(plain, name)), name
        np.testing.assert_array_equal(getattr(compiled, name), getattr(plain, name), err_msg=name)


def test_the_compiled_sum_is_numpys_bit_for_bit():
    """``lm_kernel.numpy_sum`` (the compiled locate's RMS residual) adds in numpy's pairwise order: the
    same number as ``ndarray.sum`` at every length, across its blocks of 8 and 128 and its splits."""
    from shotline.hub.lm_kernel import numpy_sum

    rng = np.random.default_rng(7)
    for n in list(range(0, 300)) + [383, 1000, 1031, 4099, 20_000]:
        a = rng.normal(size=n) ** 2 * 10.0 ** rng.uniform(-9, 3)
        assert numpy_sum(a) == float(a.sum()), n
