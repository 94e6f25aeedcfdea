"""Calibration solvers: forward models with known answers, patches that parse, clear refusals."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest

from shotline.calibration.solvers import (
    Observation,
    refine_positions,
    self_calibrate_clocks,
    solve_classifier_operating_point,
    solve_clock_offsets,
    solve_mic_level,
    solve_speed_of_sound,
    solve_trigger_thresholds,
    to_toml,
)
from shotline.hub.config import speed_of_sound_mps

T0 = 1_700_000_000_000_000_000
RNG = np.random.default_rng(20240501)
NODES = {f"N{i}": np.array([400 * np.cos(a), 400 * np.sin(a), 3.0 + i % 2])
         for i, a in enumerate(np.linspace(0, 2 * np.pi, 7, endpoint=False))}
OFFSETS = {n: o for n, o in zip(NODES, RNG.normal(0, 2e-3, len(NODES)), strict=True)}


def _events(n, spread=300.0):
    return {f"E{j}": (np.append(RNG.uniform(-spread, spread, 2), 1.5), T0 + j * 2_000_000_000) for j in range(n)}


def _obs(events, c, *, nodes=NODES, offsets=None, noise_s=20e-6, surveyed=None):
    out = []
    for e, (p, t) in events.items():
        for n, q in nodes.items():
            dt = np.linalg.norm(q - p) / c + (offsets or {}).get(n, 0.0) + RNG.normal(0, noise_s)
            out.append(Observation(n, e, t + int(round(dt * 1e9)), tuple((surveyed or nodes)[n]), tuple(p), t))
    return out


def test_clock_offsets_known_times_are_absolute():
    c = 340.0
    res = solve_clock_offsets(_obs(_events(6), c, offsets=OFFSETS), c)
    for n, o in OFFSETS.items():
        assert res.values["offsets_s"][n] == pytest.approx(o, abs=30e-6)
    assert res.patch["nodes"]["N0"]["clock_offset_ns"] == pytest.approx(OFFSETS["N0"] * 1e9, abs=30_000)


def test_clock_offsets_unknown_times_are_relative_and_robust():
    c = 340.0
    obs = _obs(_events(8), c, offsets=OFFSETS)
    # an echo pick 12 ms late must not move the answer
    o = obs[5]
    obs[5] = Observation(o.node_id, o.event_id, o.t_ns + 12_000_000, o.node_enu_m, o.event_enu_m, o.event_time_ns)
    res = solve_clock_offsets(obs, c, use_event_times=False)
    mean = np.mean(list(OFFSETS.values()))
    for n, off in OFFSETS.items():
        assert res.values["offsets_s"][n] == pytest.approx(off - mean, abs=40e-6)
    assert "sum to zero" in res.values["gauge"]


def test_self_calibration_from_many_unknown_events():
    c = 343.0
    events = _events(40, spread=350.0)
    picks = {e: {} for e in events}
    for o in _obs(events, c, offsets=OFFSETS, noise_s=20e-6):
        picks[o.event_id][o.node_id] = o.t_ns
    start = {e: p + np.append(RNG.normal(0, 5.0, 2), 0) for e, (p, _) in events.items()}  # hub solutions
    res = self_calibrate_clocks(picks, NODES, start, c, source_height_m=1.5)
    mean = np.mean(list(OFFSETS.values()))
    err = [res.values["offsets_s"][n] - (o - mean) for n, o in OFFSETS.items()]
    assert np.max(np.abs(err)) < 100e-6
    assert res.values["rms_residual_s"] < 40e-6


def test_position_refinement_recovers_a_misplaced_node():
    c = 343.0
    surveyed = {n: p.copy() for n, p in NODES.items()}
    surveyed["N2"] = surveyed["N2"] + np.array([6.0, -4.0, 0.0])  # the survey is wrong by 7 m
    res = refine_positions(_obs(_events(10), c, surveyed=surveyed, noise_s=10e-6), c)
    assert np.allclose(res.values["enu_m"]["N2"][:2], NODES["N2"][:2], atol=0.2)
    assert np.allclose(res.values["enu_m"]["N0"][:2], NODES["N0"][:2], atol=0.2)
    assert res.patch["nodes"]["N2"]["enu_m"][0] == pytest.approx(NODES["N2"][0], abs=0.2)


def test_speed_of_sound_gives_temperature():
    c = speed_of_sound_mps(31.0)
    res = solve_speed_of_sound(_obs(_events(5), c, noise_s=20e-6))
    assert res.values["c_mps"] == pytest.approx(c, abs=0.1)
    assert res.values["temperature_c"] == pytest.approx(31.0, abs=0.5)
    assert tomllib.loads(to_toml(res.patch))["location"]["temperature_c"] == pytest.approx(31.0, abs=0.5)
    with pytest.raises(ValueError, match="spread"):
        solve_speed_of_sound(_obs(_events(1), c)[:2])


def test_trigger_threshold_from_noise():
    fs = 12000
    rng = np.random.default_rng(3)
    x = (rng.normal(0, 0.01, fs * 60)).astype(np.float32)
    # occasional small clicks in the background: these are what a low threshold falsely triggers on
    for i in rng.integers(fs, len(x) - fs, 40):
        x[i:i + 3] += rng.choice([-1, 1]) * rng.uniform(0.02, 0.06)
    events = [10.0 * fs, 30.0 * fs]
    for e in events:
        x[int(e):int(e) + 24] += 0.6 * np.exp(-np.arange(24) / 6.0)
    res = solve_trigger_thresholds({"N1": (x, fs, events)}, max_false_per_min=1.0,
                                   ladder_db=(3.0, 6.0, 9.0, 12.0, 15.0, 20.0, 25.0, 30.0))
    v = res.values["N1"]
    rates = np.array(v["false_per_min"])
    assert rates[0] > 1.0  # the lowest threshold triggers on the clicks
    assert np.all(np.diff(rates) <= 1e-9)  # fewer false triggers as the threshold rises
    k = v["ladder_db"].index(v["threshold_db"])
    assert rates[k] <= 1.0 and (k == 0 or rates[k - 1] > 1.0)
    assert res.patch["N1"]["trigger"]["threshold_db"] == v["threshold_db"]


def test_classifier_operating_point():
    rng = np.random.default_rng(1)
    pos = np.clip(rng.normal(0.85, 0.1, 200), 0, 1)
    neg = np.clip(rng.normal(0.2, 0.15, 2000), 0, 1)
    s = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(200, bool), np.zeros(2000, bool)])
    res = solve_classifier_operating_point(s, y, negative_hours=100.0, max_false_per_hour=0.05)
    thr = res.values["min_gunshot_score"]
    assert (neg >= thr).sum() / 100.0 <= 0.05
    assert res.values["tpr"] == pytest.approx((pos >= thr).mean())
    assert 0.95 < res.values["auc"] <= 1.0
    with pytest.raises(ValueError, match="both"):
        solve_classifier_operating_point([0.1, 0.2], [False, False], 1.0)


def test_mic_level_from_calibrator(tmp_path):
    fs = 48000
    t = np.arange(fs * 3) / fs
    full_scale_spl = 120.0
    peak = 10 ** ((94.0 - full_scale_spl) / 20)  # 94 dB SPL sine: its peak in full-scale units
    x = peak * np.sin(2 * np.pi * 1000.0 * t) + np.random.default_rng(0).normal(0, 1e-5, len(t))
    res = solve_mic_level(x, fs, node_id="N1")
    assert res.values["full_scale_spl_db"] == pytest.approx(full_scale_spl, abs=0.05)
    assert res.values["stability_db"] < 0.05
    patch, report = res.write(tmp_path)
    data = tomllib.loads(patch.read_text())
    assert data["node"]["full_scale_spl_db"] == pytest.approx(120.0, abs=0.05)
    head = patch.read_text()
    assert "Applies to: node.toml of N1" in head and "shotline:" in head and "numpy:" in head
    assert "full_scale_spl_db" in report.read_text()
    with pytest.raises(ValueError, match="clips"):
        solve_mic_level(np.clip(x * 1e4, -1, 1), fs)
    with pytest.raises(ValueError, match="Hz"):
        solve_mic_level(peak * np.sin(2 * np.pi * 250.0 * t), fs)


def test_to_toml_round_trips():
    d = {"location": {"temperature_c": 12.5}, "nodes": {"SCP-00-A.1": {"lat_deg": 41.7, "enu_m": [1.0, 2.0, 3.0]},
                                                         "with space": {"x": True}}, "name": 'a "q"'}
    assert tomllib.loads(to_toml(d, "header\nline")) == d
