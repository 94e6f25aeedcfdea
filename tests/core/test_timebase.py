"""Tests for the time base: sample index <-> UTC integer nanoseconds (shotline.core.timebase)."""

from __future__ import annotations

import datetime as dt
import math
import re
import time
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shotline.core.timebase import (
    NS_PER_S,
    LinearTimebase,
    now_ns,
    ns_to_iso,
    seconds_to_ns,
)

MAX_SAMPLES = 1e11  # ~24 days at 48 kHz: a long-running node without a re-reference
T_REF = 1_795_303_702_123_456_789

# The 48 kHz family: nominal rates and drift-corrected effective rates (a crystal off
# by up to 100 ppm). 44.1 kHz only meets the 1 ns bounds in one direction (see the
# known-bug tests at the end).
rates_48k = st.sampled_from([48_000.0, 96_000.0]) | st.floats(47_995.2, 48_004.8)
rates = rates_48k | st.just(44_100.0)
t_refs = st.integers(min_value=10**18, max_value=4 * 10**18)
i_refs = st.integers(min_value=0, max_value=10**9)
offsets = st.floats(min_value=0.0, max_value=MAX_SAMPLES, allow_nan=False)
timebases = st.builds(LinearTimebase, t_ref_ns=t_refs, rate_hz=rates, i_ref=i_refs)
timebases_48k = st.builds(LinearTimebase, t_ref_ns=t_refs, rate_hz=rates_48k, i_ref=i_refs)


def _exact_ns(tb: LinearTimebase, i_sample: float) -> Fraction:
    """UTC of ``i_sample`` in exact rational arithmetic."""
    return tb.t_ref_ns + (Fraction(i_sample) - tb.i_ref) * NS_PER_S / Fraction(tb.rate_hz)


# --------------------------------------------------------------------------- LinearTimebase


def test_reference_sample_maps_to_reference_time():
    tb = LinearTimebase(t_ref_ns=T_REF, rate_hz=48_000.0, i_ref=12_345)
    assert tb.to_ns(12_345) == T_REF
    assert type(tb.to_ns(12_345)) is int
    assert type(tb.to_ns(12_345.5)) is int
    assert tb.to_index(T_REF) == 12_345


@pytest.mark.parametrize(
    "i_sample, expected_offset_ns",
    [
        (1, 20_833),  # 20833.33 ns
        (2, 41_667),  # 41666.67 ns
        (3, 62_500),
        (0.5, 10_417),  # 10416.67
        (48_000, NS_PER_S),
        (48_000.5, NS_PER_S + 10_417),
        (-1, -20_833),
        (-48_000, -NS_PER_S),
    ],
)
def test_known_values_at_48k(i_sample, expected_offset_ns):
    tb = LinearTimebase(t_ref_ns=T_REF, rate_hz=48_000.0)
    assert tb.to_ns(i_sample) - T_REF == expected_offset_ns


@settings(max_examples=200)
@given(k=st.integers(min_value=-2_083_333, max_value=2_083_333), i_ref=i_refs, t_ref=t_refs)
def test_exact_at_integer_seconds_48k(k, i_ref, t_ref):
    tb = LinearTimebase(t_ref_ns=t_ref, rate_hz=48_000.0, i_ref=i_ref)
    assert tb.to_ns(i_ref + 48_000 * k) == t_ref + k * NS_PER_S
    assert tb.to_ns(float(i_ref + 48_000 * k)) == t_ref + k * NS_PER_S
    assert tb.to_index(t_ref + k * NS_PER_S) == i_ref + 48_000 * k


@settings(max_examples=150)
@given(tb=timebases_48k, offset=offsets)
def test_to_index_inverts_to_ns_within_1ns(tb, offset):
    i = tb.i_ref + offset
    t = tb.to_ns(i)
    back = tb.to_index(t)
    assert abs(back - i) * NS_PER_S / tb.rate_hz <= 1.0


@settings(max_examples=150)
@given(tb=timebases, dt_ns=st.integers(min_value=0, max_value=int(MAX_SAMPLES / 44_100 * NS_PER_S)))
def test_to_ns_inverts_to_index_within_1ns(tb, dt_ns):
    t = tb.t_ref_ns + dt_ns
    assert abs(tb.to_ns(tb.to_index(t)) - t) <= 1


@settings(max_examples=150)
@given(tb=timebases_48k, offset=offsets)
def test_to_ns_is_accurate_at_48k(tb, offset):
    i = tb.i_ref + offset
    assert abs(tb.to_ns(i) - _exact_ns(tb, i)) <= 1


@settings(max_examples=150)
@given(tb=timebases, a=offsets, b=offsets)
def test_to_ns_is_monotonic(tb, a, b):
    lo, hi = sorted((tb.i_ref + a, tb.i_ref + b))
    assert tb.to_ns(lo) <= tb.to_ns(hi)
    assert tb.to_index(tb.to_ns(lo)) <= tb.to_index(tb.to_ns(hi))


@settings(max_examples=150)
@given(tb=timebases, k=st.integers(min_value=1, max_value=int(MAX_SAMPLES)))
def test_monotonic_across_whole_sample_boundaries(tb, k):
    """Just below a whole sample the index splits into (k-1, ~1); at k into (k, 0)."""
    i = float(tb.i_ref + k)
    below = math.nextafter(i, -math.inf)
    above = math.nextafter(i, math.inf)
    assert tb.to_ns(below) <= tb.to_ns(i) <= tb.to_ns(above)
    assert tb.to_ns(i - 0.5) <= tb.to_ns(i) <= tb.to_ns(i + 0.5)


@settings(max_examples=200)
@given(tb=timebases, offset=st.floats(min_value=0.0, max_value=1e8), step=st.integers(1, 10_000))
def test_steps_scale_with_the_rate(tb, offset, step):
    i = tb.i_ref + offset
    expected = step * NS_PER_S / tb.rate_hz
    assert abs(tb.to_ns(i + step) - tb.to_ns(i) - expected) <= 1.0


def test_samples_before_the_reference():
    tb = LinearTimebase(t_ref_ns=T_REF, rate_hz=48_000.0, i_ref=480_000)
    assert tb.to_ns(0) == T_REF - 10 * NS_PER_S
    assert tb.to_index(T_REF - 10 * NS_PER_S) == 0


def test_timebase_is_immutable():
    tb = LinearTimebase(t_ref_ns=T_REF, rate_hz=48_000.0)
    with pytest.raises(AttributeError):
        tb.rate_hz = 44_100.0  # type: ignore[misc]


# --------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    "t_s, expected",
    [
        (0.0, 0),
        (1.5, 1_500_000_000),
        (-2.0, -2_000_000_000),
        (1e-9, 1),
        (2.4e-9, 2),
        (2.6e-9, 3),
        (20.833333e-6, 20_833),
    ],
)
def test_seconds_to_ns_examples(t_s, expected):
    assert seconds_to_ns(t_s) == expected
    assert type(seconds_to_ns(t_s)) is int


@given(t_s=st.floats(min_value=-1e6, max_value=1e6))
def test_seconds_to_ns_rounds_to_nearest(t_s):
    ns = seconds_to_ns(t_s)
    assert type(ns) is int
    # nearest to the float product t_s * 1e9 (which itself is rounded to one ulp)
    assert abs(ns - Fraction(t_s) * NS_PER_S) <= 0.5 + math.ulp(t_s * NS_PER_S)


def test_now_ns_is_wall_clock_integer_ns():
    before = time.time_ns()
    now = now_ns()
    after = time.time_ns()
    assert type(now) is int
    assert before <= now <= after


@pytest.mark.parametrize(
    "t_ns, expected",
    [
        (0, "1970-01-01T00:00:00.000000Z"),
        (1, "1970-01-01T00:00:00.000000Z"),
        (999, "1970-01-01T00:00:00.000000Z"),
        (1_000, "1970-01-01T00:00:00.000001Z"),
        (999_999_999, "1970-01-01T00:00:00.999999Z"),  # truncated, never rolls over
        (NS_PER_S, "1970-01-01T00:00:01.000000Z"),
        (T_REF, "2026-11-21T23:28:22.123456Z"),
        (951_782_400 * NS_PER_S, "2000-02-29T00:00:00.000000Z"),
        (-1, "1969-12-31T23:59:59.999999Z"),
    ],
)
def test_ns_to_iso_examples(t_ns, expected):
    assert ns_to_iso(t_ns) == expected


_ISO = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@given(t_ns=st.integers(min_value=0, max_value=253_402_300_799_999_999_999))  # up to 9999-12-31
def test_ns_to_iso_is_floor_to_the_microsecond(t_ns):
    text = ns_to_iso(t_ns)
    assert _ISO.fullmatch(text)
    parsed = dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    assert (parsed - _EPOCH) // dt.timedelta(microseconds=1) == t_ns // 1_000


@given(a=st.integers(0, 4 * 10**18), b=st.integers(0, 4 * 10**18))
def test_ns_to_iso_sorts_like_the_times(a, b):
    if a // 1000 < b // 1000:
        assert ns_to_iso(a) < ns_to_iso(b)
    elif a // 1000 == b // 1000:
        assert ns_to_iso(a) == ns_to_iso(b)


# --------------------------------------------------------------------------- known bugs


@pytest.mark.parametrize(
    "rate_hz, i_sample", [(44_100.0, 99656802359.73871), (8_000.0, 97406838480.72612)]
)
def test_to_ns_is_accurate_to_1ns_at_any_rate(rate_hz, i_sample):
    tb = LinearTimebase(t_ref_ns=0, rate_hz=rate_hz)
    assert abs(tb.to_ns(i_sample) - _exact_ns(tb, i_sample)) <= 1


def test_to_index_inverts_to_ns_within_1ns_at_44k1():
    tb = LinearTimebase(t_ref_ns=10**18, rate_hz=44_100.0)
    i = 74985437470.25
    assert abs(tb.to_index(tb.to_ns(i)) - i) * NS_PER_S / tb.rate_hz <= 1.0
