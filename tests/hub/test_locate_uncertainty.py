"""Tests of shotline.hub.uncertainty and shotline.hub.closed_form."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shotline.hub.closed_form import bancroft, bancroft_batch, linear_unknown_c_batch
from shotline.hub.uncertainty import (
    cep_radius_m,
    crlb_covariance,
    crlb_position_rms_m,
    ellipse_scale_factor,
    error_ellipse,
    horizontal_uncertainty,
    scale_ellipse,
)


def test_cep_known_values():
    circ = np.eye(2) * 4.0  # sigma 2 m
    assert cep_radius_m(circ, 0.5) == pytest.approx(2 * 1.177410022515, rel=1e-9)
    assert cep_radius_m(circ, 0.95) == pytest.approx(2 * 2.447746830680816, rel=1e-9)
    line = np.diag([9.0, 0.0])  # all error along one axis, sigma 3 m
    assert cep_radius_m(line, 0.5) == pytest.approx(3 * 0.6744897501960817, rel=1e-8)
    assert cep_radius_m(line, 0.95) == pytest.approx(3 * 1.959963984540054, rel=1e-8)
    assert cep_radius_m(np.zeros((2, 2)), 0.5) == 0.0


@settings(max_examples=25, deadline=None)
@given(s1=st.floats(0.01, 100), ratio=st.floats(0.001, 1.0), ang=st.floats(0, math.pi))
def test_cep_matches_monte_carlo(s1, ratio, ang):
    rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
    cov = rot @ np.diag([s1**2, (ratio * s1) ** 2]) @ rot.T
    x = np.random.default_rng(0).multivariate_normal([0, 0], cov, 40000)
    d = np.hypot(*x.T)
    for p in (0.5, 0.95):
        # binomial sd at n=40000 is <= 0.0025
        assert abs(np.mean(d <= cep_radius_m(cov, p)) - p) < 0.012


def test_ellipse_axes_and_azimuth():
    # major axis along east: azimuth 90 deg clockwise from north
    a, b, az = error_ellipse(np.diag([9.0, 1.0]))
    assert (a, b) == pytest.approx((3.0, 1.0)) and az == pytest.approx(90.0)
    a, b, az = error_ellipse(np.diag([1.0, 4.0]))
    assert (a, b) == pytest.approx((2.0, 1.0)) and az == pytest.approx(0.0)
    # major axis along north-east
    v = np.array([1.0, 1.0]) / math.sqrt(2)
    cov = 16 * np.outer(v, v) + 1 * np.eye(2)
    a, b, az = error_ellipse(cov)
    assert az == pytest.approx(45.0) and a == pytest.approx(math.sqrt(17)) and b == pytest.approx(1)


def test_closed_form_ellipse_matches_lapack():
    """The closed-form 2 x 2 eigen-decomposition gives LAPACK's ellipse (axes and azimuth), also for
    near-circles, lines and negative correlation; a circle's 'major axis' is north, as LAPACK's."""
    rng = np.random.default_rng(11)
    for k in range(500):
        ang = rng.uniform(0, math.pi)
        rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
        ratio = [1e-4, 0.3, 0.999, 1.0][k % 4] if k < 40 else rng.uniform(0.01, 0.99)
        cov = rot @ np.diag([1.0, ratio**2]) @ rot.T * rng.uniform(1e-4, 1e4)
        w, v = np.linalg.eigh(0.5 * (cov + cov.T))
        a, b, az = error_ellipse(cov)
        assert (a, b) == pytest.approx((math.sqrt(w[1]), math.sqrt(max(w[0], 0.0))), rel=1e-9, abs=1e-12 * a)
        if ratio < 0.999:
            ref = math.degrees(math.atan2(v[0, 1], v[1, 1])) % 180.0
            assert min(abs(az - ref), 180.0 - abs(az - ref)) < 1e-6
    assert error_ellipse(np.eye(2) * 4.0) == (2.0, 2.0, 0.0)


def test_horizontal_uncertainty_is_the_three_summaries():
    rng = np.random.default_rng(12)
    for _ in range(50):
        m = rng.normal(size=(2, 2)) * rng.uniform(0.1, 10)
        cov = m @ m.T
        cep50, cep95, ellipse = horizontal_uncertainty(cov)
        assert (cep50, cep95, ellipse) == (cep_radius_m(cov, 0.5), cep_radius_m(cov, 0.95), error_ellipse(cov))
    assert horizontal_uncertainty(np.zeros((2, 2))) == (0.0, 0.0, (0.0, 0.0, 0.0))


def test_cep_kernel_is_called_with_its_declared_types():
    """The compiled CEP iteration runs with the one specialisation the hub compiles at start."""
    from shotline.hub import lm_kernel

    lm_kernel.compile_all()
    before = set(lm_kernel.cep_newton.signatures)
    for p in (0.5, 0.95, np.float64(0.9)):
        cep_radius_m(np.array([[4.0, 1.0], [1.0, 2.0]]), p)
    assert set(lm_kernel.cep_newton.signatures) == before and len(before) == 1


def test_scale_ellipse_to_95():
    assert ellipse_scale_factor(0.95) == pytest.approx(2.447746830680816)
    assert ellipse_scale_factor(0.3934693402873666) == pytest.approx(1.0)  # 1-sigma ellipse
    assert scale_ellipse((2.0, 1.0, 30.0), 0.95) == pytest.approx((4.8955, 2.44775, 30.0), rel=1e-4)
    with pytest.raises(ValueError):
        ellipse_scale_factor(1.0)


def test_crlb_scales_with_sigma_and_grows_outside():
    nodes = np.array([[0, 0], [500, 0], [500, 500], [0, 500], [250, 600.0]])
    a = crlb_position_rms_m(nodes, [250, 250], c_mps=343, sigma_s=50e-6)
    b = crlb_position_rms_m(nodes, [250, 250], c_mps=343, sigma_s=100e-6)
    assert b == pytest.approx(2 * a)
    assert crlb_position_rms_m(nodes, [3000, 2500], c_mps=343, sigma_s=50e-6) > 10 * a
    # a symmetric square with the source in the centre: sigma*c*sqrt(2/ (N/2)) per axis
    sq = np.array([[1, 0], [0, 1], [-1, 0], [0, -1.0]]) * 300
    cov = crlb_covariance(sq, [0, 0], c_mps=343, sigma_s=1e-4)
    assert cov[0, 0] == pytest.approx((343 * 1e-4) ** 2 / 2)


def test_bancroft_exact_both_in_2d_and_3d():
    rng = np.random.default_rng(5)
    for d in (2, 3):
        nodes = rng.uniform(-500, 500, (d + 2, d))
        src = rng.uniform(-800, 800, d)
        d0 = 123.0
        tau = d0 + np.linalg.norm(nodes - src, axis=1)
        u = bancroft(nodes, tau)
        err = np.min(np.linalg.norm(u - np.r_[src, d0], axis=1))
        assert err < 1e-6


def test_bancroft_batch_with_known_height_offsets():
    rng = np.random.default_rng(6)
    nodes = np.column_stack([rng.uniform(-500, 500, (6, 2)), rng.uniform(0, 30, 6)])
    src = np.array([120.0, -80.0, 1.5])
    tau = 50.0 + np.linalg.norm(nodes - src, axis=1)
    extra = (src[2] - nodes[:, 2]) ** 2
    subsets = np.array([[0, 1, 2, 3], [1, 2, 4, 5], [0, 2, 3, 5]])
    u = bancroft_batch(nodes[:, :2], tau, extra, subsets)
    assert u.shape == (3, 2, 3)
    err = np.min(np.linalg.norm(u - np.r_[src[:2], 50.0], axis=2), axis=1)
    assert np.all(err < 1e-6)


def test_bancroft_batch_of_several_subset_sizes_is_each_batch():
    """A list of subset arrays (different k) gives the fixes of each, concatenated in order."""
    rng = np.random.default_rng(8)
    nodes = rng.uniform(-500, 500, (8, 2))
    tau = 40.0 + np.linalg.norm(nodes - np.array([130.0, 70.0]), axis=1) + rng.normal(0, 0.02, 8)
    extra = rng.uniform(0, 100, 8)
    groups = [np.arange(8)[None, :], np.array([[0, 1, 2, 3], [2, 4, 5, 7]]), np.array([[1, 3, 5, 6, 7]])]
    both = bancroft_batch(nodes, tau, extra, groups)
    each = np.concatenate([bancroft_batch(nodes, tau, extra, g) for g in groups])
    np.testing.assert_array_equal(both, each)


def test_linear_unknown_c_exact():
    rng = np.random.default_rng(7)
    nodes = rng.uniform(-500, 500, (5, 2))
    src = np.array([900.0, 300.0])
    c, t0 = 331.0, 0.25
    t = t0 + np.linalg.norm(nodes - src, axis=1) / c
    u = linear_unknown_c_batch(nodes, 343.0 * t, np.zeros(5), np.arange(5)[None])[0]
    np.testing.assert_allclose(u, np.r_[src, 343.0 * t0, c / 343.0], rtol=1e-8)
