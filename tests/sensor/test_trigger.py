"""Tests for the streaming impulse trigger (shotline.sensor.trigger)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shotline.sensor.impulse_synth import add_friedlander, pink_noise, white_noise
from shotline.sensor.trigger import ImpulseDetector, Onset, TriggerConfig, detect

NOISE_RMS = 0.01  # -40 dBFS


def _scene(
    fs: int,
    onsets_s: list[float],
    seed: int,
    *,
    amplitude: float = 0.2,
    duration_s: float = 0.8,
    noise=pink_noise,
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = noise(int(duration_s * fs), rng, NOISE_RMS)
    for t in onsets_s:
        add_friedlander(x, fs, t, amplitude=amplitude, period_s=rng.uniform(3e-4, 1e-3))
    return x.astype(np.float32)


def _stream(x: np.ndarray, fs: int, cuts: list[int], config: TriggerConfig | None = None):
    det = ImpulseDetector(fs, config)
    out: list[Onset] = []
    edges = [0, *sorted(set(cuts)), x.size]
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        out.extend(det.process(x[a:b]))
    out.extend(det.flush())
    return out


# A 16 kHz scene with impulses near the end (so flush() has pending work), two
# close together, and one right after the warm-up.
FS_EQ = 16_000
X_EQ = _scene(FS_EQ, [0.2105, 0.33, 0.38, 0.55, 0.7992], seed=1)
REF_EQ = detect(X_EQ, FS_EQ)


def test_reference_scene_finds_all_impulses():
    assert len(REF_EQ) == 5
    assert not any(o.clipped for o in REF_EQ)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cuts=st.lists(st.integers(0, X_EQ.size), max_size=60),
    near=st.lists(
        st.tuples(st.sampled_from([0.2105, 0.33, 0.38, 0.55, 0.7992]), st.integers(-400, 400)),
        max_size=20,
    ),
)
def test_streaming_equals_batch(cuts, near):
    # Extra cuts clustered around the impulses, where the pick windows straddle blocks.
    cuts = cuts + [min(max(int(t * FS_EQ) + d, 0), X_EQ.size) for t, d in near]
    assert _stream(X_EQ, FS_EQ, cuts) == REF_EQ


def test_streaming_one_sample_blocks_equals_batch():
    x = X_EQ[: int(0.45 * FS_EQ)]
    ref = detect(x, FS_EQ)
    assert len(ref) == 3
    det = ImpulseDetector(FS_EQ)
    out: list[Onset] = []
    for i in range(x.size):
        out.extend(det.process(x[i : i + 1]))
    out.extend(det.flush())
    assert out == ref


@settings(max_examples=80, deadline=None)
@given(
    window=st.integers(1, 40),
    min_count=st.integers(1, 10),
    sizes=st.lists(st.integers(0, 30), min_size=1, max_size=25),
    seed=st.integers(0, 2**16),
)
def test_rolling_floor_is_the_percentile_of_the_last_window_values(window, min_count, sizes, seed):
    """However the snapshots are pushed (one at a time or in batches of any size), each result is the
    order statistic of the last ``window`` values (inf while fewer than ``min_count`` were seen). The
    history once kept only the last W - 1 - n values after n < W - 1 of them: a window of about half
    its length in streaming, and one that varied with the block size in batch."""
    from shotline.sensor.trigger import _RollingOrderStat

    min_count = min(min_count, window)  # as configured: min_noise_s is well under noise_window_s
    q, lowest = 0.3, 1e-9
    stat = _RollingOrderStat(window, q, min_count, lowest)
    vals = np.random.default_rng(seed).lognormal(size=sum(sizes))
    got = np.concatenate([stat.push(vals[a : a + n]) for a, n in zip(np.cumsum([0, *sizes[:-1]]), sizes, strict=True)])
    want = []
    for i in range(vals.size):
        win = vals[max(0, i - window + 1) : i + 1]
        if win.size < min_count:
            want.append(np.inf)
        else:
            kth = int(round(q * (win.size - 1)))
            want.append(max(float(np.partition(win, kth)[kth]), lowest))
    np.testing.assert_array_equal(got, want)


def test_streaming_equals_batch_beyond_the_noise_window():
    """A 5 s scene (the noise window is 1.5 s) streamed in 1024- and 333-sample blocks gives the batch
    result: the floor's history is the same however it was pushed."""
    fs = 16_000
    rng = np.random.default_rng(4)
    x = _scene(fs, list(np.sort(rng.uniform(0.3, 4.9, 12))), seed=4, duration_s=5.0)
    ref = detect(x, fs)
    assert len(ref) >= 10
    for block in (1024, 333):
        assert _stream(x, fs, list(range(block, x.size, block))) == ref


def test_latency_onset_reported_within_event_window():
    fs = 48_000
    x = _scene(fs, [0.3], seed=2, duration_s=0.5)
    det = ImpulseDetector(fs)
    block = 64
    for i in range(0, x.size, block):
        got = det.process(x[i : i + block])
        if got:
            delay_s = (i + block - got[0].i_trigger) / fs
            assert delay_s <= det.config.event_window_s + block / fs
            return
    pytest.fail("no onset reported before the end of the stream")


@pytest.mark.parametrize("noise", [white_noise, pink_noise])
def test_no_triggers_in_noise(noise):
    fs = 48_000
    x = noise(60 * fs, np.random.default_rng(11), NOISE_RMS).astype(np.float32)
    assert detect(x, fs) == []


def test_noise_floor_tracks_level_and_ignores_impulses():
    fs = 48_000
    x = _scene(
        fs, list(np.arange(0.5, 3.0, 0.1)), seed=3, amplitude=0.5, duration_s=3.0, noise=white_noise
    )
    det = ImpulseDetector(fs)
    assert np.isnan(det.noise_floor_dbfs)
    det.process(x)
    # 25 loud impulses in 2.5 s barely move the percentile floor (-40 dBFS noise).
    assert det.noise_floor_dbfs == pytest.approx(-40.0, abs=1.5)


def test_closely_spaced_bursts_are_separated():
    """Automatic fire at 20 rounds/s: one onset per round."""
    fs = 48_000
    rng = np.random.default_rng(4)
    truth = 0.3 + 0.05 * np.arange(12) + rng.uniform(0, 1 / fs, 12)
    x = pink_noise(int(1.2 * fs), rng, NOISE_RMS)
    for t in truth:
        add_friedlander(x, fs, t, amplitude=0.3, period_s=8e-4)
        add_friedlander(x, fs, t + 0.004, amplitude=0.1, period_s=8e-4)  # an echo
    onsets = detect(x, fs)
    assert len(onsets) == truth.size
    err_us = (np.array([o.i_onset for o in onsets]) / fs - truth) * 1e6
    assert np.all(np.abs(err_us) < 25)


@pytest.mark.parametrize("delay_s", [0.005, 0.012, 0.03])
def test_first_arrival_chosen_over_louder_echo(delay_s):
    fs = 48_000
    rng = np.random.default_rng(int(delay_s * 1e4))
    x = pink_noise(fs, rng, NOISE_RMS)
    t0 = 0.4 + rng.uniform(0, 1 / fs)
    add_friedlander(x, fs, t0, amplitude=0.1, period_s=5e-4)
    add_friedlander(x, fs, t0 + delay_s, amplitude=0.3, period_s=5e-4)  # 3x louder
    onsets = detect(x, fs)
    assert len(onsets) == 1  # the echo falls inside the dead time
    assert abs(onsets[0].i_onset / fs - t0) < 20e-6
    # The echo is the event's largest peak when it is inside the event window.
    if delay_s < TriggerConfig().event_window_s:
        assert abs(onsets[0].i_peak / fs - (t0 + delay_s)) < 0.5e-3


def test_echo_after_dead_time_may_trigger_separately():
    fs = 48_000
    x = _scene(fs, [0.4], seed=5, amplitude=0.1, duration_s=1.0)
    add_friedlander(x, fs, 0.4 + 0.08, amplitude=0.3)
    assert len(detect(x, fs)) == 2


def test_clipping_flagged_and_peak_dbfs():
    fs = 48_000
    x = _scene(fs, [0.3, 0.6], seed=6, amplitude=0.25, duration_s=0.9)
    add_friedlander(x, fs, 0.6, amplitude=2.0)
    x = np.clip(x, -1.0, 1.0)
    a, b = detect(x, fs)
    assert not a.clipped and b.clipped
    # The band-limited pulse peaks a little below its ideal amplitude (-12 dBFS).
    assert -13.6 < a.peak_dbfs < -11.5
    assert b.peak_dbfs == pytest.approx(0.0, abs=1e-6)
    assert abs(b.i_onset / fs - 0.6) < 40e-6
    # Reported levels are consistent with each other.
    assert a.snr_db == pytest.approx(a.peak_dbfs - a.noise_floor_dbfs, abs=3.0)
    assert a.noise_floor_dbfs < -35


@pytest.mark.parametrize("fs", [16_000, 44_100])
def test_other_sample_rates(fs):
    rng = np.random.default_rng(fs)
    truth = 0.3 + 0.1 * np.arange(15) + rng.uniform(0, 1 / fs, 15)
    x = white_noise(int(2.0 * fs), rng, NOISE_RMS)
    for t in truth:
        add_friedlander(x, fs, t, amplitude=20 * NOISE_RMS, period_s=rng.uniform(3e-4, 1e-3))
    onsets = detect(x, fs)
    assert len(onsets) == truth.size
    err = np.array([o.i_onset for o in onsets]) / fs - truth
    sample_us = 1e6 / fs
    assert np.mean(np.abs(err)) * 1e6 < 0.4 * sample_us
    assert abs(np.mean(err)) * 1e6 < 0.25 * sample_us


def test_onset_fields_are_plain_python_types():
    o = REF_EQ[0]
    for field in dataclasses.fields(Onset):
        value = getattr(o, field.name)
        assert type(value) in (int, float, bool), field.name
    assert o.polarity == 1
    assert 0 < o.rise_time_s < 1e-3
    assert o.i_trigger >= o.i_onset - 1


def test_digital_silence_and_tiny_dither_do_not_trigger():
    fs = 16_000
    x = np.zeros(fs, dtype=np.float32)
    x[::97] = 1e-7
    assert detect(x, fs) == []


def test_nothing_before_warmup_and_stream_start_is_safe():
    fs = 48_000
    x = _scene(fs, [0.01, 0.1], seed=7, duration_s=0.5)
    assert detect(x, fs) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold_db": 0.0},
        {"min_separation_s": 0.0},
        {"noise_percentile": 120.0},
        {"pick_fraction": 1.0},
        {"clip_level": 0.0},
        {"pick_after_s": 0.1},
        {"sta_s": float("nan")},
    ],
)
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        TriggerConfig(**kwargs)


def test_input_validation():
    det = ImpulseDetector(48_000)
    with pytest.raises(ValueError):
        det.process(np.zeros((10, 2), dtype=np.float32))
    with pytest.raises(TypeError):
        det.process(np.zeros(10, dtype=np.int16))
    assert det.process(np.zeros(0, dtype=np.float32)) == []
    with pytest.raises(ValueError):
        ImpulseDetector(16_000, TriggerConfig(highpass_hz=9000.0))


def test_highpass_disabled_still_works():
    fs = 16_000
    cfg = TriggerConfig(highpass_hz=0.0)
    x = _scene(fs, [0.3, 0.5], seed=8, noise=white_noise)
    assert len(detect(x, fs, cfg)) == 2
    assert _stream(x, fs, [100, 4801, 4802, 8000], cfg) == detect(x, fs, cfg)


def test_noise_after_digital_silence_does_not_trigger():
    """Recordings often start with zeros: the start of the noise is not an impulse."""
    fs = 12000
    rng = np.random.default_rng(11)
    x = np.concatenate([np.zeros(fs), 0.01 * rng.standard_normal(4 * fs)]).astype(np.float32)
    assert detect(x, fs) == []
    # ... and an impulse well after the noise starts is still found.
    y = x.copy()
    t0 = 3.0
    add_friedlander(y, fs, t0, amplitude=0.5, period_s=0.5e-3)
    onsets = detect(y, fs)
    assert len(onsets) == 1 and abs(onsets[0].i_onset / fs - t0) < 1e-3
