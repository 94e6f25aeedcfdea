"""The hub service end to end with its store and sinks: detections in, incidents stored with their
shots, residuals and detections, a geofenced signed webhook fed, then listed and exported by the CLI."""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from shotline.core import messages as m
from shotline.core import topics
from shotline.core.config import parse_config
from shotline.core.transport import OutMessage, Transport
from shotline.hub.cli import main as hub_main
from shotline.hub.config import HubConfig
from shotline.hub.geometry import LocalFrame
from shotline.hub.service import HubService
from shotline.hub.sinks import webhook
from shotline.hub.store import IncidentStore

SITE = "test"
FRAME = LocalFrame(41.7755, -72.6805, 15.0)
T0_NS = 1_795_000_000_000_000_000
C = 340.0


class LoopbackTransport(Transport):
    """In-process transport: the test calls the hub's handler; published messages are kept."""

    def __init__(self):
        self.handlers = []
        self.published: list[OutMessage] = []
        self._up = False

    def start(self, timeout_s=10.0):
        self._up = True

    def stop(self):
        self._up = False

    def publish(self, msg, on_ack=None):
        self.published.append(msg)
        if on_ack:
            on_ack()

    def subscribe(self, topic_filter, handler, qos=1):
        self.handlers.append(handler)

    @property
    def connected(self):
        return self._up

    def send(self, topic, payload):
        for h in self.handlers:
            h(topic, payload)


class Receiver:
    def __init__(self):
        self.requests = []
        rec = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                rec.requests.append((dict(self.headers.items()), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/shotline"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def nodes():
    pts = {}
    for j in range(3):
        for i in range(4):
            pts[f"N{j * 4 + i:02d}"] = np.array([(i - 1.5) * 300.0 + 7 * j, (j - 1) * 300.0 - 5 * i, 5.0])
    return pts


def status(node_id, enu):
    lat, lon, alt = FRAME.to_wgs84(*enu)
    msg = m.NodeStatus(site=SITE, node_id=node_id, state="online",
                       position=m.Position(lat_deg=lat, lon_deg=lon, alt_m=alt))
    return topics.node_topic(SITE, node_id, "status"), m.encode(msg)


def detections(net, src, t_emit_ns, rng):
    out = []
    for nid, r in net.items():
        t = t_emit_ns + int(round((float(np.linalg.norm(np.asarray(src) - r)) / C + rng.normal(0, 20e-6)) * 1e9))
        det = m.Detection(detection_id=f"{nid}-{t // 1000}", site=SITE, node_id=nid, onset_time_ns=t,
                          onset_sigma_s=20e-6, time_quality="replay", peak_dbfs=-20.0, snr_db=30.0,
                          noise_floor_dbfs=-60.0)
        out.append((t, topics.node_topic(SITE, nid, "detection"), m.encode(det)))
    return out


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_service_stores_incidents_and_feeds_a_geofenced_webhook(tmp_path, receiver, monkeypatch, caplog):
    monkeypatch.setenv("SHOTLINE_TEST_SECRET", "partner-secret")
    # a geofence around the first source only (east 100 m, north -50 m), as a GeoJSON file
    lat, lon, _ = FRAME.to_wgs84(100.0, -50.0, 1.5)
    d = 0.0015
    ring = [[lon - d, lat - d], [lon + d, lat - d], [lon + d, lat + d], [lon - d, lat + d], [lon - d, lat - d]]
    (tmp_path / "zone.geojson").write_text(json.dumps({"type": "Polygon", "coordinates": [ring]}))
    db = tmp_path / "hub.sqlite"
    toml = f"""
site = "{SITE}"
[location]
speed_of_sound_mps = {C}
[store]
path = "{db}"
[sinks]
retry_base_s = 0.05
[sinks.geofences.zone]
file = "zone.geojson"
[[sinks.webhooks]]
name = "partner"
url = "{receiver.url}"
format = "geojson"
secret_env = "SHOTLINE_TEST_SECRET"
geofences = ["zone"]
precision_m = 100
"""
    (tmp_path / "hub.toml").write_text(toml)
    cfg = parse_config(toml, HubConfig)
    assert hub_main(["check-config", str(tmp_path / "hub.toml")]) == 0

    tr = LoopbackTransport()
    svc = HubService(cfg, tr, tick_s=0.05, watermark="data", config_dir=tmp_path)
    svc.start()
    net = nodes()
    for nid, r in net.items():
        tr.send(*status(nid, r))
    rng = np.random.default_rng(3)
    dets = detections(net, (100.0, -50.0, 1.5), T0_NS, rng)  # inside the zone
    dets += detections(net, (-250.0, 200.0, 1.5), T0_NS + 120 * 10**9, rng)  # outside, 2 minutes later
    dets.sort()
    for _, topic, payload in dets:
        tr.send(topic, payload)
    svc.stop(close_incidents=True, drain_s=3.0)

    published = [m.decode(x.payload, m.Incident) for x in tr.published if x.topic == topics.incident_topic(SITE)]
    final = {i.incident_id: i for i in published}
    assert len(final) == 2

    with IncidentStore(db, readonly=True) as store:
        rows = store.list_incidents(newest_first=False)
        assert [r.incident for r in rows] == list(sorted(final.values(), key=lambda i: i.first_shot_ns))
        for r in rows:
            rec = store.get_incident(r.incident.incident_id)
            assert rec.n_revisions == len([p for p in published if p.incident_id == r.incident.incident_id])
            ref_ids = {res.detection_id for s in rec.incident.shots for res in s.residuals}
            assert {d.detection.detection_id for d in rec.detections} == ref_ids
            assert len(ref_ids) >= 4
            assert rec.incident.provenance.config_hash
        first_id = rows[0].incident.incident_id
        stats = store.outbox_stats()
    assert stats["pending"] == 0 and stats["delivered"] >= 1 and stats["failed"] == 0
    # The hub's last health (as it stopped, before the sinks drained) read the queue.
    health = [m.decode(x.payload, m.HubHealth) for x in tr.published if x.topic == topics.hub_health_topic(SITE)]
    assert health and health[-1].sinks.failed == 0 and health[-1].sinks.retrying == 0
    assert not [r for r in caplog.records if "sinks' queue" in r.getMessage()]

    # only the incident in the zone reached the partner, signed, coarsened, RFC 7946
    assert receiver.requests
    for headers, body in receiver.requests:
        assert webhook.verify(b"partner-secret", body, headers["X-Shotline-Signature"])
        assert headers["Idempotency-Key"].startswith(first_id + ".r")
        fc = json.loads(body)
        assert fc["type"] == "FeatureCollection" and fc["features"][0]["id"] == first_id
        assert all(f["properties"].get("residuals", []) == [] for f in fc["features"])

    # the CLI lists and exports what the store holds
    def cli(*args):
        out = tmp_path / "out.txt"
        assert hub_main(["incidents", *args, "-o", str(out)]) == 0
        return out.read_text()

    table = cli("--config", str(tmp_path / "hub.toml"), "--since", str(T0_NS - 10**9))
    assert first_id in table and "2 incident(s)" in table
    rows_csv = list(csv.DictReader(io.StringIO(cli("--db", str(db), "--format", "csv"))))
    assert [r["incident_id"] for r in rows_csv] == [r.incident.incident_id for r in rows]
    assert rows_csv[0]["state"] == "closed" and rows_csv[0]["review_state"] == "unreviewed"
    since_second = str(T0_NS + 60 * 10**9)
    fc = json.loads(cli("--db", str(db), "--format", "geojson", "--shots", "--since", since_second))
    assert [f["properties"]["kind"] for f in fc["features"]] == ["incident", "shot"]
    assert fc["features"][0]["id"] == rows[1].incident.incident_id
    js = json.loads(cli("--db", str(db), "--format", "json", "--until", since_second))
    assert [j["incident"]["incident_id"] for j in js] == [first_id]
    assert hub_main(["incidents", "--db", str(tmp_path / "missing.sqlite")]) == 1
    assert hub_main(["incidents", "--db", str(db), "--since", "last tuesday"]) == 2


def test_default_service_keeps_an_in_memory_store_and_no_sinks():
    tr = LoopbackTransport()
    svc = HubService(HubConfig(site=SITE), tr, tick_s=0.05)
    assert svc.store.path == ":memory:" and not svc.sinks.enabled
    svc.start()
    time.sleep(0.06)
    svc.stop()


def test_check_config_and_run_report_sink_problems(tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "hub.toml"
    cfg.write_text('site = "s"\n[sinks.geofences.zone]\nfile = "missing.geojson"\n')
    assert hub_main(["check-config", str(cfg)]) == 2
    assert "sinks.geofences.zone" in capsys.readouterr().err
    monkeypatch.delenv("SHOTLINE_UNSET_SECRET", raising=False)
    cfg.write_text('site = "s"\n[[sinks.webhooks]]\nname = "p"\nurl = "http://127.0.0.1:9/"\n'
                   'secret_env = "SHOTLINE_UNSET_SECRET"\n')
    assert hub_main(["run", "--config", str(cfg)]) == 1
    assert "SHOTLINE_UNSET_SECRET" in capsys.readouterr().err
    assert hub_main(["incidents", "--config", str(cfg)]) == 2  # ":memory:" store: nothing to list
