"""A hub process killed (SIGKILL) mid-stream and started again, on Mosquitto: its persistent session, its
journal and its store give one incident with every round, each revision once (issue: hub, "Restart")."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from shotline.core import messages as m
from shotline.core import topics
from shotline.core.config import BrokerSettings
from shotline.core.timebase import now_ns
from shotline.core.transport import MqttTransport, OutMessage
from shotline.hub.geometry import LocalFrame
from shotline.hub.journal import MessageJournal
from shotline.hub.store import IncidentStore

SITE = "restart"
FRAME = LocalFrame(41.7755, -72.6805, 15.0)
C = 340.0
SOURCE = np.array([40.0, 10.0, 1.5])
S = 10**9


def _nodes():
    rng = np.random.default_rng(0)
    return {f"N{k:02d}": np.array([i * 300.0 - 450.0 + rng.uniform(-30, 30), j * 300.0 - 300.0 + rng.uniform(-30, 30),
                                   5.0])
            for k, (i, j) in enumerate((i, j) for j in range(3) for i in range(4))}


def _status(nid, enu):
    lat, lon, alt = FRAME.to_wgs84(*enu)
    msg = m.NodeStatus(site=SITE, node_id=nid, state="online", position=m.Position(lat_deg=lat, lon_deg=lon, alt_m=alt))
    return OutMessage(topics.node_topic(SITE, nid, "status"), m.encode(msg), 1, True)


def _detection(nid, t_ns):
    det = m.Detection(detection_id=f"{nid}-{t_ns // 1000}", site=SITE, node_id=nid, onset_time_ns=t_ns,
                      onset_sigma_s=20e-6, time_quality="pps", peak_dbfs=-20.0, snr_db=30.0, noise_floor_dbfs=-60.0)
    return OutMessage(topics.node_topic(SITE, nid, "detection"), m.encode(det), 1, False)


def _round(nodes, t_emit_ns, rng):
    """(node, onset ns) of one shot at SOURCE, in arrival order."""
    out = [(nid, t_emit_ns + int((np.linalg.norm(SOURCE - r) / C + rng.normal(0, 20e-6)) * 1e9))
           for nid, r in nodes.items()]
    return sorted(out, key=lambda x: x[1])


def _start_hub(cfg_path, log_path):
    log = open(log_path, "ab")  # noqa: SIM115 (the process writes to it until killed)
    proc = subprocess.Popen([sys.executable, "-m", "shotline.hub.cli", "run", "--config", str(cfg_path)],
                            stdout=log, stderr=subprocess.STDOUT)
    return proc


def _journalled_detections(db) -> int:
    """How many detection messages the hub's journal holds (it writes each before handling it)."""
    journal = MessageJournal(str(db) + ".journal", keep_s=3600.0)
    return sum(1 for topic, _, _ in journal.read_since(0) if topic.endswith("/detection"))


def _wait_for(cond, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_a_hub_killed_mid_stream_restarts_without_losing_or_duplicating_an_incident(mosquitto, tmp_path):
    port = mosquitto
    db = tmp_path / "hub.sqlite"
    cfg = tmp_path / "hub.toml"
    cfg.write_text(
        f'site = "{SITE}"\nclient_id = "hub-restart-test"\n[broker]\nport = {port}\n'
        f'[location]\nspeed_of_sound_mps = {C}\nsource_height_m = 1.5\nground_alt_m = 15.0\n'
        f'[store]\npath = "{db}"\n[web]\nenabled = false\n')
    nodes = _nodes()
    rng = np.random.default_rng(7)
    got: list[m.Incident] = []
    hub_up = threading.Event()

    def on_incident(_t, payload):
        got.append(m.decode(payload, m.Incident))

    def on_hub_status(_t, payload):
        if payload and m.decode(payload, m.HubStatus).state == "online":
            hub_up.set()

    obs = MqttTransport(BrokerSettings(port=port), "restart-observer", clean_session=True)
    obs.subscribe(topics.incident_topic(SITE), on_incident)
    obs.subscribe(topics.hub_status_topic(SITE), on_hub_status)
    obs.start()
    pub = MqttTransport(BrokerSettings(port=port), "restart-nodes", clean_session=True)
    pub.start()
    log_path = tmp_path / "hub.log"
    hub = _start_hub(cfg, log_path)
    try:
        _wait_for(hub_up.is_set, 60, "the hub to come online")
        for nid, r in nodes.items():
            pub.publish(_status(nid, r))
        time.sleep(0.5)
        t1 = now_ns() + S // 2
        for nid, t in _round(nodes, t1, rng):
            pub.publish(_detection(nid, t))
        _wait_for(lambda: any(i.rounds == 1 for i in got), 20, "round 1's incident")
        # Round 2: five nodes hear it; the hub has three of their detections when it is killed.
        round2 = _round(nodes, now_ns(), rng)[:5]
        for nid, t in round2[:3]:
            pub.publish(_detection(nid, t))
        _wait_for(lambda: _journalled_detections(db) == len(nodes) + 3, 10, "the three detections in the journal")
        time.sleep(1.0)  # (handled and acknowledged too; the set waits for the nodes still in range)
        assert not any(i.rounds == 2 for i in got)
        hub.send_signal(signal.SIGKILL)
        hub.wait(10)
        hub_up.clear()
        for nid, t in round2[3:]:  # queued by the broker in the hub's persistent session
            pub.publish(_detection(nid, t))
        time.sleep(1.0)
        hub = _start_hub(cfg, log_path)
        _wait_for(hub_up.is_set, 60, "the restarted hub to come online")
        _wait_for(lambda: any(i.rounds == 2 for i in got), 20, "round 2 after the restart")
        for nid, t in _round(nodes, now_ns() + S // 2, rng):
            pub.publish(_detection(nid, t))
        _wait_for(lambda: any(i.rounds == 3 for i in got), 20, "round 3")
        hub.send_signal(signal.SIGTERM)  # a clean stop closes the incident
        hub.wait(20)
        _wait_for(lambda: any(i.state == "closed" for i in got), 10, "the closing revision")
    finally:
        if hub.poll() is None:
            hub.kill()
        pub.stop()
        obs.stop()
    log_text = log_path.read_text(errors="replace")
    assert "restart: replayed" in log_text, log_text[-3000:]
    ids = {i.incident_id for i in got}
    assert len(ids) == 1, ids  # one burst, one incident, across the kill
    revs = [i.revision for i in got]
    assert revs == sorted(revs) and len(set(revs)) == len(revs), revs
    with IncidentStore(db) as store:
        rows = store.list_incidents()
        assert len(rows) == 1
        inc = rows[0].incident
    assert inc.state == "closed" and inc.rounds == 3
    # Round 2 has the three detections the killed hub had taken in and the two queued while it was down.
    assert sorted(s.n_nodes for s in inc.shots)[0] == 5
    assert len({s.shot_id for s in inc.shots}) == 3
    assert os.path.isdir(str(db) + ".journal")
