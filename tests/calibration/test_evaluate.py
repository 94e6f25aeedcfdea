"""Evaluation: matching, error figures, per-node statistics and the self-contained HTML report."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest

from shotline.calibration.bundle import Bundle, Environment, EventEntry, Manifest, NodeEntry
from shotline.calibration.cli import main
from shotline.calibration.evaluate import EvalSettings, ReplayRun, evaluate, write_report
from shotline.calibration.replay import ShotRecord
from shotline.core import messages as m

T0 = 1_700_000_000_000_000_000
C = 343.0
NODES = {"A": [0.0, 0.0, 0.0], "B": [400.0, 0.0, 0.0], "C": [0.0, 400.0, 0.0], "D": [400.0, 400.0, 0.0]}
EVENTS = {"e1": ([100.0, 100.0, 0.0], T0 + 1_000_000_000), "e2": ([300.0, 200.0, 0.0], T0 + 3_000_000_000),
          "e3": ([200.0, 300.0, 0.0], T0 + 5_000_000_000)}


def _bundle(tmp_path) -> Bundle:
    import soundfile as sf
    for n in NODES:
        sf.write(tmp_path / f"{n}.flac", np.zeros(100), 8000)
    man = Manifest(
        nodes=[NodeEntry(node_id=n, audio=f"{n}.flac", sample_rate_hz=8000, start_time_ns=T0, enu_m=p)
               for n, p in NODES.items()],
        events=[EventEntry(event_id=e, kind="gunshot", time_ns=t, enu_m=p) for e, (p, t) in EVENTS.items()],
        environment=Environment(temperature_c=20.0, speed_of_sound_mps=C),
    )
    return Bundle(man, root=tmp_path).write(tmp_path)


def _det(node, t_ns):
    return m.Detection(detection_id=f"{node}-{t_ns // 1000}", site="s", node_id=node, onset_time_ns=t_ns,
                       onset_sigma_s=1e-4, time_quality="replay", peak_dbfs=-3.0, snr_db=30.0,
                       noise_floor_dbfs=-60.0)


def _shot(sid, enu, t_ns, residuals):
    return ShotRecord(bundle="b", incident_id="i", enu_m=list(enu), shot=m.Shot(
        shot_id=sid, time_ns=t_ns, position=m.Position(lat_deg=0, lon_deg=0), cep50_m=1.0, cep95_m=2.0,
        ellipse=m.Ellipse(semi_major_m=1, semi_minor_m=1, azimuth_deg=0), speed_of_sound_mps=C, n_nodes=4,
        rms_residual_s=1e-4, residuals=residuals))


def _run(tmp_path):
    b = _bundle(tmp_path)
    dets, ne = [], b.node_enu_m()
    for e, (p, t) in EVENTS.items():
        for n in NODES:
            if (e, n) == ("e3", "D"):
                continue  # D misses e3
            dets.append(_det(n, t + int(np.linalg.norm(ne[n] - p) / C * 1e9) + (2_000_000 if n == "A" else 0)))
    dets.append(_det("B", T0 + 7_000_000_000))  # a false trigger on B
    res = [m.NodeResidual(node_id=n, detection_id="x", residual_s=0.001 if n == "A" else -0.0003, used=True)
           for n in NODES]
    shots = [
        _shot("s1", [103.0, 104.0, 0.0], EVENTS["e1"][1] + 5_000_000, res),   # 5 m off
        _shot("s2", [300.0, 230.0, 12.0], EVENTS["e2"][1], res),              # 30 m 2-D, 3-D larger
        _shot("s9", [0.0, 0.0, 0.0], T0 + 9_000_000_000, res),                # false: no event then
    ]
    return ReplayRun("b", b, dets, shots)


def test_matching_and_figures(tmp_path):
    ev = evaluate([_run(tmp_path)], EvalSettings(time_gate_s=0.15, arrival_gate_s=0.005))
    s = ev.summary()
    assert (s["events"], s["shots"], s["matched_shots"], s["false_shots"]) == (3, 3, 2, 1)
    assert s["shots_located_pct"] == pytest.approx(200 / 3)
    assert s["within_15m_pct_of_located"] == pytest.approx(50.0)
    e = {x.shot_id: x for x in ev.shots}
    assert e["s1"].error_2d_m == pytest.approx(5.0) and e["s1"].dt_s == pytest.approx(0.005)
    assert e["s2"].error_2d_m == pytest.approx(30.0) and e["s2"].error_3d_m == pytest.approx(np.hypot(30, 12))
    assert e["s9"].event_id is None
    nodes = {n["node_id"]: n for n in ev.nodes}
    assert nodes["D"]["recall_pct"] == pytest.approx(200 / 3) and nodes["A"]["recall_pct"] == 100.0
    assert nodes["B"]["precision_pct"] == pytest.approx(75.0)  # 3 hits of 4 detections
    assert nodes["A"]["truth_residual_median_ms"] == pytest.approx(2.0, abs=1e-3)  # the +2 ms bias on A
    assert nodes["A"]["hub_residual_mean_ms"] == pytest.approx(1.0)
    assert {x["event_id"]: x["nodes_heard"] for x in ev.events} == {"e1": 4, "e2": 4, "e3": 3}


def test_time_gate_rejects_shot_far_in_time(tmp_path):
    run = _run(tmp_path)
    run.shots[0].shot.time_ns += 400_000_000  # 0.4 s late: no longer the same event
    ev = evaluate([run], EvalSettings(time_gate_s=0.15))
    assert ev.summary()["matched_shots"] == 1


def test_report_is_self_contained_with_plots(tmp_path):
    ev = evaluate([_run(tmp_path)])
    path = write_report(ev, tmp_path / "rep")
    html = path.read_text()
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(imgs) >= 3  # error CDF, map, residual histograms
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in imgs)
    assert "http://" not in html and "https://" not in html and "<script" not in html
    for needle in ("shotline", "manifest_sha256", "numpy", "matplotlib", "Per node"):
        assert needle in html
    assert (tmp_path / "rep" / "evaluation.json").exists() and (tmp_path / "rep" / "shots.csv").exists()


def test_cli_evaluate_errors(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "run.json" in capsys.readouterr().err
