"""Replay: the real sensor + hub code over bundles, in process and over MQTT, same result."""

from __future__ import annotations

import json

import msgspec
import numpy as np
import pytest

from shotline.calibration.bundle import Bundle, Manifest
from shotline.calibration.cli import main
from shotline.calibration.evaluate import evaluate, from_result
from shotline.calibration.replay import ReplayFrame, hub_config_for, replay_in_process, replay_mqtt
from shotline.calibration.simulator import (
    Scene,
    SceneEnvironment,
    Wgs84Position,
    grid_nodes,
    gunshot,
    render_scene,
)
from shotline.core.config import ConfigError

START_NS = 1_795_000_000_000_000_000


@pytest.fixture(scope="module")
def sim_bundle(tmp_path_factory):
    """6 nodes on a 250 m grid, two gunshots far apart in time, 4 s."""
    nodes = grid_nodes(3, 2, 250.0, height_m=5.0, jitter_m=20.0, seed=11)
    events = [gunshot("A", START_NS + int(0.8e9), (-120.0, 60.0)),
              gunshot("B", START_NS + int(2.4e9), (130.0, -30.0), ".45acp")]
    scene = Scene(nodes=nodes, events=events, start_time_ns=START_NS, duration_s=4.0,
                  origin=Wgs84Position(41.7755, -72.6805, 15.0), environment=SceneEnvironment(temperature_c=12.0))
    return render_scene(scene, tmp_path_factory.mktemp("replay") / "sim", seed=4)


@pytest.fixture(scope="module")
def local_bundle(sim_bundle, tmp_path_factory):
    """The same recordings as a purely local bundle (positions in an arbitrary x/y/z frame, no WGS84)."""
    shift = np.array([-11000.0, 3500.0, -100.0])  # like the Pittsburgh frames: far from the origin
    ne, ee = sim_bundle.node_enu_m(), sim_bundle.event_enu_m()
    m = sim_bundle.manifest
    nodes = [msgspec.structs.replace(n, position=None, enu_m=(ne[n.node_id] + shift).tolist()) for n in m.nodes]
    events = [msgspec.structs.replace(e, position=None, enu_m=(ee[e.event_id] + shift).tolist()) for e in m.events]
    man = Manifest(nodes=nodes, events=events, environment=m.environment, provenance=m.provenance)
    return Bundle(man, root=sim_bundle.root).write(tmp_path_factory.mktemp("replay") / "local")


def _shots(res):
    return {(s.shot.n_nodes, round(s.shot.time_ns / 1e6)): np.array(s.enu_m) for s in res.shots()}


def test_in_process_locates_both_shots(sim_bundle):
    res = replay_in_process(sim_bundle)
    ev = evaluate([from_result(res)])
    s = ev.summary()
    assert s["matched_shots"] == 2 and s["false_shots"] == 0
    assert s["error_2d_m"]["p100"] < 2.0
    # every detection went through the node's own code: one per node per shot at least
    assert {d.node_id for d in res.detections} == set(sim_bundle.node_ids)


def test_local_frame_gives_same_shots_in_bundle_frame(sim_bundle, local_bundle):
    a, b = replay_in_process(sim_bundle), replay_in_process(local_bundle)
    assert ReplayFrame(local_bundle).local and not ReplayFrame(sim_bundle).local
    shift = np.array([-11000.0, 3500.0, -100.0])
    sa, sb = a.shots(), b.shots()
    assert len(sa) == len(sb) == 2
    for x, y in zip(sa, sb, strict=True):
        # The synthetic tangent plane is a rigid transform: same shot, shifted frame.
        assert np.allclose(np.array(y.enu_m)[:2] - shift[:2], np.array(x.enu_m)[:2], atol=0.05)


def test_mqtt_equals_in_process(sim_bundle, tmp_path):
    mem = replay_in_process(sim_bundle)
    net = replay_mqtt(sim_bundle)  # embedded broker on a free port
    assert [d.detection_id for d in mem.detections] == [d.detection_id for d in net.detections]
    sm, sn = _shots(mem), _shots(net)
    assert sm.keys() == sn.keys()
    for k in sm:
        assert np.allclose(sm[k], sn[k], atol=1e-3), k
    assert len(mem.final_incidents()) == len(net.final_incidents())
    assert all(i.state == "closed" for i in net.final_incidents().values())


def test_hub_overrides_validated(sim_bundle):
    cfg = hub_config_for(sim_bundle, {"association": {"min_nodes": 5}})
    assert cfg.association.min_nodes == 5
    assert cfg.location.temperature_c == pytest.approx(12.0)  # from the bundle's environment
    with pytest.raises(ConfigError, match="colour"):
        hub_config_for(sim_bundle, {"association": {"colour": 1}})


def test_cli_replay_writes_outputs_with_provenance(sim_bundle, tmp_path, capsys):
    cfg = tmp_path / "replay.toml"
    cfg.write_text("[hub.location]\ntiming_sigma_s = 0.0002\n[trigger]\nthreshold_db = 7.0\n")
    assert main(["replay", str(sim_bundle.root), "--out", str(tmp_path / "out"), "--config", str(cfg),
                 "--no-progress"]) == 0
    out = tmp_path / "out" / "sim"
    for f in ("detections.jsonl", "incidents.jsonl", "shots.jsonl", "run.json"):
        assert (out / f).stat().st_size > 0
    run = json.loads((out / "run.json").read_text())
    assert run["hub_config"]["location"]["timing_sigma_s"] == 0.0002
    assert run["trigger_config"]["threshold_db"] == 7.0
    for key in ("shotline_version", "manifest_sha256", "hub_config_hash", "trigger_config_hash", "numpy"):
        assert run[key]
    assert run["n_shots"] == 2
    bad = tmp_path / "bad.toml"
    bad.write_text("[hubb]\n")
    assert main(["replay", str(sim_bundle.root), "--out", str(tmp_path / "o2"), "--config", str(bad)]) == 2
    assert "hubb" in capsys.readouterr().err
