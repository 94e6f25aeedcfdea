"""Onset-anchored log-mel features: shape, level and shift invariance, same patch at any rate."""

from __future__ import annotations

import numpy as np
import pytest

from shotline.calibration.simulator import Scene, SceneNode, gunshot, hand_clap, render_audio
from shotline.sensor import features as F


def _pulse(fs: int, t_onset_s: float, dur_s: float = 0.8, noise: float = 1e-3, seed: int = 0):
    """A damped 1 kHz burst starting at ``t_onset_s`` in light white noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(dur_s * fs)) / fs - t_onset_s
    x = np.where(t >= 0, np.exp(-np.clip(t, 0, None) / 0.01) * np.sin(2 * np.pi * 1000 * t), 0.0)
    return x + noise * rng.standard_normal(t.size)


def test_patch_shape_range_and_dtype() -> None:
    p = F.log_mel_patch(_pulse(12_000, 0.2), 12_000, 0.2 * 12_000)
    assert p.shape == F.PATCH_SHAPE and p.dtype == np.float32
    assert p.min() >= 0.0 and p.max() == pytest.approx(1.0)


def test_window_covers_patch() -> None:
    pre, post = F.window_s()
    assert pre > F.PRE_ONSET_S
    assert pre + post >= F.PATCH_SAMPLES / F.FEATURE_RATE_HZ


def test_level_invariant() -> None:
    x = _pulse(48_000, 0.2)
    a = F.log_mel_patch(x, 48_000, 9600.0)
    b = F.log_mel_patch(0.01 * x, 48_000, 9600.0)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_anchored_at_the_onset_not_the_window() -> None:
    """Extra audio before the onset changes nothing: the patch follows i_onset."""
    x = _pulse(16_000, 0.2)
    pad = np.zeros(1234)
    a = F.log_mel_patch(x, 16_000, 0.2 * 16_000)
    b = F.log_mel_patch(np.concatenate([pad, x]), 16_000, 0.2 * 16_000 + pad.size)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_onset_in_the_first_frames() -> None:
    """Energy rises at the frame that holds the onset (PRE_ONSET_S into the patch)."""
    p = F.log_mel_patch(_pulse(12_000, 0.3), 12_000, 0.3 * 12_000)
    frame_energy = p.max(axis=1)
    k_onset = int(F.PRE_ONSET_S * F.FEATURE_RATE_HZ / F.HOP)
    assert frame_energy[: k_onset - 1].max() < 0.5 < frame_energy[k_onset + 1]


def test_short_window_counts_as_silence() -> None:
    x = _pulse(12_000, 0.01, dur_s=0.1)
    p = F.log_mel_patch(x, 12_000, 0.01 * 12_000)
    assert p.shape == F.PATCH_SHAPE and np.isfinite(p).all()
    assert p[-5:].max() == 0.0  # past the audio: floor


@pytest.mark.parametrize(
    "bad, match",
    [({"window": np.zeros((10, 2))}, "1-D"), ({"sample_rate_hz": 4000}, ">= 8000"),
     ({"i_onset": float("nan")}, "finite")],
)
def test_bad_input_is_refused(bad, match) -> None:
    args = {"window": np.zeros(1000), "sample_rate_hz": 12_000, "i_onset": 10.0} | bad
    with pytest.raises(ValueError, match=match):
        F.log_mel_patch(**args)


def test_mel_bank_unit_area_and_tone_lands_in_its_band() -> None:
    fb = F.mel_filterbank()
    np.testing.assert_allclose(fb.sum(axis=0), 1.0, rtol=1e-5)
    f_bins = np.arange(fb.shape[0]) * F.FEATURE_RATE_HZ / F.N_FFT
    centres = (f_bins[:, None] * fb).sum(0)
    assert np.all(np.diff(centres) > 0) and centres[0] > 90 and centres[-1] < 4800
    fs = 12_000
    t = np.arange(fs) / fs
    p = F.log_mel_patch(np.sin(2 * np.pi * 2000 * t), fs, 0.2 * fs)
    assert abs(centres[p.mean(0).argmax()] - 2000) < 150


@pytest.mark.parametrize("make", [gunshot, hand_clap])
def test_same_patch_at_any_sample_rate(make) -> None:
    """One event rendered at 12, 16, 44.1 and 48 kHz (same place): the patches agree."""
    rates = (12_000, 16_000, 44_100, 48_000)
    scene = Scene(
        nodes=[SceneNode(node_id=f"N{fs}", enu_m=(80.0, 0.0, 3.0), sample_rate_hz=fs)
               for fs in rates],
        events=[make("e", int(0.3e9), (0.0, 0.0))],
        start_time_ns=0, duration_s=1.2,
    )
    manifest, audio = render_audio(scene, seed=3, noise=False, workers=1)
    first = {a.node_id: a.sample_index for a in manifest.arrivals if a.path == "direct"}
    patches = {fs: F.log_mel_patch(audio[f"N{fs}"], fs, first[f"N{fs}"]) for fs in rates}
    ref = patches[48_000]
    for fs in rates:
        diff = np.abs(patches[fs] - ref)
        # Cells more than 60 dB under the peak hold only resampling-filter residue.
        loud = ref > 0.25
        assert diff[loud].mean() < 0.01, (fs, diff[loud].mean())
        assert np.percentile(diff[loud], 99) < 0.05, fs
