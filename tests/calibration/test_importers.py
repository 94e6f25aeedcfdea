"""Importers: Pittsburgh layout, smj0 WAV (real fixture), CSV; exact times; clear errors."""

from __future__ import annotations

import json
import math
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from shotline.calibration.bundle import Bundle
from shotline.calibration.cli import main
from shotline.calibration.importers import (
    RecordingImportError,
    import_csv,
    import_pittsburgh,
    import_smj0_folder,
    iso_to_ns,
    read_smj0,
    write_smj0_wav,
)
from shotline.hub.config import speed_of_sound_mps

DATA = Path(__file__).resolve().parents[1] / "data"
CHICAGO_WAV = DATA / "chicago-smj0" / "3d52c6a8b080e517e87913f9e23c35cb6990dbb9.wav"


# ------------------------------------------------------------------ time parsing
def test_iso_to_ns_exact():
    assert iso_to_ns("1970-01-01T00:00:00Z") == 0
    assert iso_to_ns("2018-12-19T00:49:26.000Z") == 1545180566_000_000_000
    assert iso_to_ns("2022-09-18T05:20:54.431Z") == 1663478454_431_000_000
    assert iso_to_ns("2022-09-18T05:20:54.123456789Z") % 1_000_000_000 == 123456789
    assert iso_to_ns("2022-09-18T07:20:54.5+02:00") == iso_to_ns("2022-09-18T05:20:54.5Z")
    with pytest.raises(RecordingImportError, match="ISO-8601"):
        iso_to_ns("18/09/2022 05:20")


@given(st.integers(0, 4_000_000_000), st.integers(0, 999_999))
@settings(max_examples=200, deadline=None)
def test_iso_to_ns_round_trip(secs, micros):
    t = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=secs, microseconds=micros)
    assert iso_to_ns(t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")) == secs * 10**9 + micros * 1000


# ------------------------------------------------------------------ Pittsburgh layout
def _pittsburgh_test(root: Path, c: float) -> tuple[Path, np.ndarray, list[int]]:
    """A test folder in the published layout: 4 sensors with audio, 2 more only in allpulses."""
    d = root / "FP9" / "test_900"
    d.mkdir(parents=True)
    src = np.array([-11450.2, 3653.5, -92.9])
    sensors = {f"SCP-00-TST-{i}": src + np.array([300 * math.cos(a), 300 * math.sin(a), -20.0])
               for i, a in enumerate(np.linspace(0, 2 * np.pi, 6, endpoint=False))}
    t_start = iso_to_ns("2018-12-19T00:49:26.000Z")
    shots = [t_start + int(2.0e9), t_start + int(3.1e9)]
    pulses, tuples = [], []
    for k, t0 in enumerate(shots):
        ids = []
        for s, p in sensors.items():
            arr = t0 + int(round(np.linalg.norm(p - src) / c * 1e9 / 1e6)) * 1_000_000  # ms precision
            uid = f"{k}-{s}"
            ids.append(uid)
            pulses.append({"pulse_uuid": uid, "serial_number": s,
                           "arrival_time_utc": datetime.fromtimestamp(arr / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                           "location": dict(zip("xyz", p.tolist(), strict=True)), "signal_to_noise_dB": 10.0,
                           "power_dB_SPL": 80.0, "location_error": 0.03})
        tuples.append({"shot_index": k, "pulse_uuids": ids + ["not-in-allpulses"]})
    (d / "test_900.allpulses.json").write_text(json.dumps(pulses))
    (d / "test_900.nlos-tuples.json").write_text(json.dumps(tuples))
    (d / "test_900.survey.json").write_text(json.dumps({
        "test_id": 900, "firing_position": "FP9", "num_rounds": 2, "firearm": "9mm Handgun",
        "approximate_time_utc": "2018-12-19T00:49:00.000Z",
        "survey_location": dict(zip("xyz", src.tolist(), strict=True)), "creator": "test"}))
    (d / "test_900.weather.json").write_text(json.dumps(
        {"fluid": "air", "temperature": 2.0, "speed": 3.0, "direction": 270.0}))
    for s in list(sensors)[:4]:
        sf.write(d / f"test_900.audio.{s}.wav", np.zeros(12000, np.int16), 12000, subtype="PCM_16")
        (d / f"test_900.audio.{s}.json").write_text(json.dumps({
            "serial_number": s, "timestamp": "2018-12-19T00:49:26.000Z",
            "location": dict(zip("xyz", sensors[s].tolist(), strict=True))}))
    return d, src, shots


def test_pittsburgh_import(tmp_path):
    c = speed_of_sound_mps(2.0)
    _, src, shots = _pittsburgh_test(tmp_path / "data", c)
    (b,) = import_pittsburgh(tmp_path / "data", tmp_path / "out")
    b = Bundle.load(b.root)  # what is on disk validates
    assert b.frame is None  # purely local
    assert len(b.node_ids) == 4 and b.node("SCP-00-TST-0").start_time_ns == iso_to_ns("2018-12-19T00:49:26Z")
    assert b.node("SCP-00-TST-0").full_scale_spl_db == 93.0
    assert b.environment.temperature_c == 2.0
    # wind FROM 270° (west) blows toward the east
    assert b.environment.wind_enu_mps == pytest.approx([3.0, 0.0], abs=1e-9)
    assert [e.event_id for e in b.events] == ["test_900-r1", "test_900-r2"]
    for e, t in zip(b.events, shots, strict=True):
        assert e.enu_m == pytest.approx(src.tolist())
        assert abs(e.time_ns - t) < 1_000_000  # ms-precision pulses -> sub-ms emission time
        assert e.properties["n_pulses"] == 6 and e.properties["firearm"] == "9mm Handgun"
    assert "CC BY 4.0" in b.manifest.provenance["licence"]


def test_pittsburgh_errors(tmp_path):
    d, _, _ = _pittsburgh_test(tmp_path / "data", 331.0)
    (d / "test_900.nlos-tuples.json").unlink()
    with pytest.raises(RecordingImportError, match="nlos-tuples"):
        import_pittsburgh(tmp_path / "data", tmp_path / "out")
    with pytest.raises(RecordingImportError, match="no Pittsburgh test"):
        import_pittsburgh(tmp_path / "empty-does-not-exist", tmp_path / "out2")


# ------------------------------------------------------------------ smj0
def test_smj0_real_file():
    meta, raw = read_smj0(CHICAGO_WAV)
    assert meta.serialNumber == "SCP-00-BNG-3866"
    assert meta.startTimeUTC == "2022-09-18T05:20:54.431Z"
    assert meta.geolocation.latitude == pytest.approx(41.694887)
    assert raw["transducers"][0]["fullScale"] == pytest.approx(93.09)


def test_smj0_import_real_and_written(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(CHICAGO_WAV, src / "a.wav")
    x = np.sin(np.arange(24000) * 0.1) * 0.1
    write_smj0_wav(src / "b.wav", x, 12000, {
        "serialNumber": "SYN-1", "startTimeUTC": "2022-09-18T05:20:54.000Z",
        "geolocation": {"latitude": 41.6960, "longitude": -87.6300, "elevation": 190.0},
        "weather": {"temperature": 25.0}, "transducers": [{"channel": 0, "fullScale": 100.0}]})
    b = import_smj0_folder(src, tmp_path / "out")
    assert b.node_ids == ["SCP-00-BNG-3866", "SYN-1"]
    n = b.node("SCP-00-BNG-3866")
    assert n.start_time_ns == iso_to_ns("2022-09-18T05:20:54.431Z") and n.sample_rate_hz == 12000
    assert n.position.lat_deg == pytest.approx(41.694887) and n.full_scale_spl_db == pytest.approx(93.09)
    assert b.node("SYN-1").full_scale_spl_db == 100.0
    assert b.environment.temperature_c == 25.0
    y, fs = Bundle.load(b.root).read_audio("SYN-1")
    assert fs == 12000 and np.allclose(y, x, atol=1 / 32768)


def test_smj0_errors(tmp_path):
    sf.write(tmp_path / "plain.wav", np.zeros(100), 12000)
    with pytest.raises(RecordingImportError, match="no smj0 chunk"):
        read_smj0(tmp_path / "plain.wav")
    (tmp_path / "x.wav").write_bytes(b"not a wav")
    with pytest.raises(RecordingImportError, match="RIFF"):
        read_smj0(tmp_path / "x.wav")
    write_smj0_wav(tmp_path / "bad.wav", np.zeros(10), 12000, {"serialNumber": "A"})
    with pytest.raises(RecordingImportError, match="startTimeUTC"):
        read_smj0(tmp_path / "bad.wav")


# ------------------------------------------------------------------ CSV
def _csv_folder(tmp_path: Path, rows: str) -> Path:
    for n in ("a", "b"):
        sf.write(tmp_path / f"{n}.flac", np.zeros(4800), 48000, subtype="PCM_24")
    p = tmp_path / "nodes.csv"
    p.write_text(rows)
    return p


def test_csv_import_local_and_wgs84(tmp_path):
    p = _csv_folder(tmp_path, "node_id,audio,start_time_utc,e_m,n_m,u_m\n"
                              "A,a.flac,2024-05-01T12:00:00.000001Z,0,0,2\n"
                              "B,b.flac,2024-05-01T12:00:00Z,100,5,\n")
    ev = tmp_path / "events.csv"
    ev.write_text("event_id,kind,time_ns,e_m,n_m\nE1,,1714564800500000000,50,50\n")
    b = import_csv(p, tmp_path / "out", events_csv=ev, temperature_c=18.0)
    assert b.frame is None and b.node_enu_m()["B"].tolist() == [100.0, 5.0, 0.0]
    assert b.node("A").start_time_ns == iso_to_ns("2024-05-01T12:00:00Z") + 1000
    assert b.events[0].kind == "gunshot" and b.speed_of_sound_mps == pytest.approx(speed_of_sound_mps(18.0))
    w = tmp_path / "w"
    w.mkdir()
    p2 = _csv_folder(w, "node_id,audio,start_time_ns,lat_deg,lon_deg,alt_m\nA,a.flac,1,41.7,-72.6,10\n")
    b2 = import_csv(p2, tmp_path / "out2", temperature_c=10.0)
    assert b2.node_wgs84()["A"] == pytest.approx((41.7, -72.6, 10.0))


@pytest.mark.parametrize("rows, match", [
    ("node_id,audio,start_time_utc,e_m,n_m,colour\nA,a.flac,2024-05-01T12:00:00Z,0,0,red\n", "colour"),
    ("node_id,audio,e_m,n_m\nA,a.flac,0,0\n", "start_time"),
    ("node_id,audio,start_time_ns,e_m,n_m\nA,a.flac,1,zero,0\n", "e_m"),
    ("node_id,audio,start_time_ns,lat_deg\nA,a.flac,1,41\n", "lon_deg"),
    ("node_id,audio,start_time_ns,e_m,n_m\nA,missing.flac,1,0,0\n", "not found"),
])
def test_csv_errors_name_the_column(tmp_path, rows, match):
    p = _csv_folder(tmp_path, rows)
    with pytest.raises(RecordingImportError, match=match) as err:
        import_csv(p, tmp_path / "out", temperature_c=10.0)
    assert "nodes.csv" in str(err.value)


def test_cli_import(tmp_path, capsys):
    _pittsburgh_test(tmp_path / "data", 331.0)
    assert main(["import", "pittsburgh", str(tmp_path / "data"), str(tmp_path / "out")]) == 0
    assert "4 nodes, 2 events" in capsys.readouterr().out
    p = _csv_folder(tmp_path, "node_id,audio,start_time_ns,e_m,n_m\nA,a.flac,1,0,0\n")
    assert main(["import", "csv", str(p), str(tmp_path / "o")]) == 2
    assert "--temperature-c" in capsys.readouterr().err
