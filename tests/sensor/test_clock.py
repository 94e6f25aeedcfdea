"""Time base fit (jitter, drift, steps) and chrony tracking."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shotline.sensor.clock import ChronyMonitor, ClockFit, parse_tracking_csv

FS = 48000
T0 = 1_795_000_000_000_000_000
BLOCK = 480


def _pairs(n_blocks, rate=FS, jitter_s=0.0, seed=0, t0=T0):
    rng = np.random.default_rng(seed)
    for k in range(n_blocks):
        i = k * BLOCK
        yield i, t0 + int(round(i / rate * 1e9 + rng.normal(0, jitter_s) * 1e9))


def test_fit_recovers_rate_and_averages_jitter():
    rate = FS * (1 - 37e-6)  # a crystal 37 ppm slow
    fit = ClockFit(FS, window_s=30)
    for i, t in _pairs(6000, rate=rate, jitter_s=200e-6):
        fit.add(i, t)
    i = 6000 * BLOCK
    assert abs(fit.to_ns(i) - (T0 + i / rate * 1e9)) < 15_000  # 200 us jitter -> ~10 us line error
    assert fit.rate_hz == pytest.approx(rate, rel=3e-6)
    assert fit.residual_rms_s == pytest.approx(200e-6, rel=0.15)
    assert fit.n_steps == 0


def test_single_late_callback_is_ignored():
    fit = ClockFit(FS)
    for k, (i, t) in enumerate(_pairs(500)):
        fit.add(i, t + (50_000_000 if k == 300 else 0))  # one callback 50 ms late
    assert fit.n_steps == 0 and fit.n_outliers == 1
    assert abs(fit.to_ns(500 * BLOCK) - (T0 + 500 * BLOCK / FS * 1e9)) < 100


def test_clock_step_starts_a_new_segment_and_flags_the_boundary():
    fit = ClockFit(FS, step_threshold_s=0.002)
    step_ns = 250_000_000  # chrony steps the clock by +0.25 s
    i_step = 300 * BLOCK
    steps = []
    for i, t in _pairs(600):
        steps.append(fit.add(i, t + (step_ns if i >= i_step else 0)))
    assert sum(steps) == 1 and fit.n_steps == 1
    # Before the step: the old line; after: the new one. Nothing in between is bent.
    i_before, i_after = i_step - 10 * BLOCK, i_step + 200 * BLOCK
    assert abs(fit.to_ns(i_before) - (T0 + i_before / FS * 1e9)) < 100
    assert abs(fit.to_ns(i_after) - (T0 + step_ns + i_after / FS * 1e9)) < 100
    assert fit.is_uncertain(i_step - BLOCK // 2) and not fit.is_uncertain(i_before) and not fit.is_uncertain(i_after)


TRACK_PPS = "50505300,PPS,1,1795000000.123456789,0.000000412,-0.000000150,0.000000890,-3.214,0.001,0.020,0.000000001,0.000001015,16.0,Normal\n"
TRACK_NTP = "C0A80001,192.168.0.1,3,1795000000.1,-0.002100000,0.000200000,0.001000000,12.5,0.01,0.2,0.020,0.005,64.0,Normal\n"
TRACK_NONE = "00000000,,0,0.000000000,0.000000000,0.000000000,0.000000000,0.000,0.000,0.000,0.000000000,0.000000000,0.0,Not synchronised\n"


@pytest.mark.parametrize(
    "out,quality,locked,offset",
    [(TRACK_PPS, "pps", True, 4.12e-7), (TRACK_NTP, "ntp", False, -2.1e-3), (TRACK_NONE, "unsynced", False, 0.0)],
)
def test_chrony_tracking_classifies_the_clock(out, quality, locked, offset):
    mon = ChronyMonitor(runner=lambda cmd: out)
    r = mon.poll()
    assert (r.quality, r.pps_locked) == (quality, locked)
    assert r.offset_s == pytest.approx(offset)


def test_pps_with_large_offset_is_not_locked():
    tr = parse_tracking_csv(TRACK_PPS.replace("0.000000412", "0.000350000"))
    assert ChronyMonitor().classify(tr).quality == "ntp"


def test_missing_or_failing_chronyc_means_unsynced():
    def missing(cmd):
        raise FileNotFoundError(cmd[0])

    mon = ChronyMonitor("chronyc", runner=missing)
    assert mon.poll().quality == "unsynced" and "not found" in mon.error

    def failing(cmd):
        raise subprocess.CalledProcessError(1, cmd, stderr="506 Cannot talk to daemon")

    mon = ChronyMonitor(runner=failing)
    assert mon.poll().quality == "unsynced" and "Cannot talk to daemon" in mon.error


@given(st.text(max_size=200))
def test_tracking_parser_rejects_garbage_with_valueerror(text):
    try:
        parse_tracking_csv(text)
    except ValueError:
        pass
