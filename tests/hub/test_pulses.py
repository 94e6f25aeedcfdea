"""Published pulse lists (calibration.pulses): parsing and a forward model through the hub."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shotline.calibration import pulses as P
from shotline.hub.config import speed_of_sound_mps


@given(st.integers(min_value=1_500_000_000_000, max_value=1_900_000_000_000))
def test_parse_utc_ns_is_exact_to_the_millisecond(ms):
    text = datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"
    assert P.parse_utc_ns(text) == ms * 1_000_000


def test_parse_utc_ns_rejects_local_times():
    with pytest.raises(ValueError, match="UTC"):
        P.parse_utc_ns("2018-12-19T00:49:27.467")


def test_wind_direction_is_where_it_blows_from():
    assert np.allclose(P.wind_vector_enu(5.0, 0.0), [0.0, -5.0])  # a north wind blows south
    assert np.allclose(P.wind_vector_enu(5.0, 270.0), [5.0, 0.0], atol=1e-12)  # a west wind blows east


def _write_test(folder, sensors, src, t0_ns, rng, n_rounds=3, temp=2.0):
    c = speed_of_sound_mps(temp)
    pulses = []
    for k in range(n_rounds):
        for i, (serial, xyz) in enumerate(sensors.items()):
            t = t0_ns + int(k * 0.4e9) + int(np.linalg.norm(xyz - src) / c * 1e9 + rng.normal(0, 0.3e-3) * 1e9)
            t -= t % 1_000_000  # millisecond precision, like the published files
            stamp = datetime.fromtimestamp(t // 10**9, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            pulses.append({"pulse_uuid": f"p{k}-{i}", "serial_number": serial,
                           "arrival_time_utc": f"{stamp}.{(t % 10**9) // 10**6:03d}Z",
                           "location": {"x": xyz[0], "y": xyz[1], "z": xyz[2]},
                           "location_error": 0.03, "signal_to_noise_dB": 20.0, "power_dB_SPL": 80.0})
    name = folder.name
    (folder / f"{name}.allpulses.json").write_text(json.dumps(pulses))
    (folder / f"{name}.survey.json").write_text(json.dumps({
        "test_id": 1, "firing_position": "FP9", "num_rounds": n_rounds, "firearm": "test",
        "survey_location": {"x": src[0], "y": src[1], "z": src[2] - 1.5}}))
    (folder / f"{name}.weather.json").write_text(json.dumps({"temperature": temp, "speed": 0.0, "direction": 0.0}))


def test_forward_model_through_the_hub(tmp_path):
    """Millisecond-rounded pulses from 14 sensors in a local frame: every round located within 3 m."""
    rng = np.random.default_rng(3)
    sensors = {f"SCP-{i:02d}": np.array([-11450.0, 3650.0, -90.0]) + np.r_[rng.uniform(-700, 700, 2),
                                                                            rng.uniform(-30, 30)]
               for i in range(14)}
    src = np.array([-11430.0, 3620.0, -91.0])
    folder = tmp_path / "FP9" / "test_001"
    folder.mkdir(parents=True)
    _write_test(folder, sensors, src, 1_545_180_567_000_000_000, rng)
    test = P.load_test(folder)
    assert test.num_rounds == 3 and len(test.sensors()) == 14
    shots = P.locate_test(test, ground_height_m=float(test.survey_xyz_m[2]))
    assert len(shots) == 3
    for s in shots:
        assert np.hypot(*(P.shot_xy(s) - src[:2])) < 3.0
    (res,) = P.evaluate(tmp_path, firing_positions=("FP9",))
    assert res.n_located == 3 and res.mean_error_m < 2.0


def test_bad_file_names_the_key(tmp_path):
    folder = tmp_path / "test_002"
    folder.mkdir()
    (folder / "test_002.allpulses.json").write_text(json.dumps([{"pulse_uuid": "x"}]))
    with pytest.raises(ValueError, match="serial_number|missing"):
        P.load_test(folder)
