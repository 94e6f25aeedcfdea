"""Sinks: geofences and precision, CAP 1.2 against the OASIS schema, GeoJSON (RFC 7946),
signed webhooks with retries, idempotency keys, delay and a durable queue."""

from __future__ import annotations

import json
import math
import threading
import time
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import msgspec
import pytest
import xmlschema
from hypothesis import given, settings
from hypothesis import strategies as st

from shotline.core import messages as m
from shotline.core.broker import free_port
from shotline.hub.config import CapSettings, GeofenceSettings, SinkSettings, WebhookSink
from shotline.hub.sinks import cap, geojson, webhook
from shotline.hub.sinks.dispatch import SinkDispatcher
from shotline.hub.sinks.geofence import (
    Geofence,
    GeofenceError,
    coarsen_incident,
    incident_in_any,
    snap,
)
from shotline.hub.store import IncidentStore

DATA = Path(__file__).resolve().parents[1] / "data"
T0 = 1_795_000_000_123_456_789
S = 1_000_000_000
LAT, LON = 41.7755, -72.6805
SECRET = b"s3cret-shared-with-partner"
# a ~200 m square around (LAT, LON) and one far away
SQUARE = [[LON - 0.0012, LAT - 0.0009], [LON + 0.0012, LAT - 0.0009], [LON + 0.0012, LAT + 0.0009],
          [LON - 0.0012, LAT + 0.0009]]
FAR = [[-73.0, 41.0], [-72.99, 41.0], [-72.99, 41.01], [-73.0, 41.01]]


def shot(sid, t_ns, lat, lon):
    return m.Shot(shot_id=sid, time_ns=t_ns, position=m.Position(lat_deg=lat, lon_deg=lon, alt_m=20.0), cep50_m=1.5,
                  cep95_m=3.5, ellipse=m.Ellipse(semi_major_m=1.6, semi_minor_m=0.9, azimuth_deg=40.0),
                  speed_of_sound_mps=343.0, n_nodes=5, rms_residual_s=4e-5,
                  residuals=[m.NodeResidual(node_id=f"N{k}", detection_id=f"N{k}-{t_ns}", residual_s=1e-5, used=True)
                             for k in range(5)])


def incident(iid="20260704T213005Z-1", revision=1, state="new", lat=LAT, lon=LON, n_shots=1, shot_pos=None,
             event_class="gunshot"):
    shots = [shot(f"{iid}-{k}", T0 + k * S // 4, *(shot_pos or (lat, lon))) for k in range(n_shots)]
    return m.Incident(site="hartford", incident_id=iid, state=state, revision=revision,
                      published_ns=T0 + revision * S, first_shot_ns=shots[0].time_ns, last_shot_ns=shots[-1].time_ns,
                      rounds=n_shots, position=m.Position(lat_deg=lat, lon_deg=lon, alt_m=20.0), cep95_m=3.5,
                      event_class=event_class, automatic_fire=n_shots >= 3, shots=shots,
                      provenance=m.Provenance(version="0.1.0", config_hash="feedbeef"))


def metres(lat1, lon1, lat2, lon2):
    """Haversine distance, metres."""
    r = 6_371_008.8
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * r * math.asin(math.sqrt(a))


# -- geofences and precision -----------------------------------------------------------


def test_geofence_inclusion_exclusion_and_boundary():
    g = Geofence.from_settings("school", [SQUARE])
    assert g.contains(LAT, LON)
    assert g.contains(LAT + 0.0009, LON)  # on the edge counts as inside
    assert not g.contains(LAT + 0.0010, LON)
    assert not g.contains(LON, LAT)  # lat/lon swapped is far away, not silently inside
    assert incident_in_any(incident(), [g])
    assert not incident_in_any(incident(lat=41.0, lon=-73.1), [g])
    # an incident whose mean position is outside but one shot is inside
    assert incident_in_any(incident(lat=41.0, lon=-73.1, shot_pos=(LAT, LON)), [g])


def test_geofence_from_geojson_file_with_a_hole_and_bad_input(tmp_path):
    outer = [[-72.70, 41.76], [-72.66, 41.76], [-72.66, 41.79], [-72.70, 41.79], [-72.70, 41.76]]
    hole = [[-72.69, 41.77], [-72.67, 41.77], [-72.67, 41.78], [-72.69, 41.78], [-72.69, 41.77]]
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "park"}, "geometry": {"type": "Polygon", "coordinates": [outer, hole]}},
        {"type": "Feature", "properties": {}, "geometry": {"type": "MultiPolygon", "coordinates": [[FAR + [FAR[0]]]]}},
        {"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [0, 0]}},
    ]}
    f = tmp_path / "zones.geojson"
    f.write_text(json.dumps(fc))
    g = Geofence.from_settings("zones", [], "zones.geojson", base_dir=tmp_path)
    assert g.contains(41.765, -72.68)  # in the ring
    assert not g.contains(41.775, -72.68)  # in the hole
    assert g.contains(41.005, -72.995)  # second feature
    with pytest.raises(GeofenceError, match="not valid"):  # a bow tie
        Geofence.from_settings("bow", [[[0, 0], [1, 1], [1, 0], [0, 1]]])
    with pytest.raises(GeofenceError, match="cannot read"):
        Geofence.from_settings("x", [], str(tmp_path / "missing.geojson"))
    (tmp_path / "pts.json").write_text(json.dumps({"type": "Point", "coordinates": [0, 0]}))
    with pytest.raises(GeofenceError, match="no Polygon"):
        Geofence.from_settings("x", [], str(tmp_path / "pts.json"))


@settings(max_examples=300, deadline=None)
@given(st.floats(-80, 80), st.floats(-179.9, 179.9), st.sampled_from([25.0, 100.0, 150.0, 500.0]))
def test_snap_moves_at_most_half_a_cell_diagonal_and_is_a_fixed_grid(lat, lon, cell):
    la, lo = snap(lat, lon, cell)
    assert metres(lat, lon, la, lo) <= cell / math.sqrt(2) * 1.01 + 0.01
    assert snap(la, lo, cell) == pytest.approx((la, lo), abs=1e-9)  # a cell centre stays put


def test_snap_hides_position_within_a_cell():
    cell = 150.0
    la, lo = snap(LAT, LON, cell)
    # points a few metres apart inside one cell give the same published position
    near = [snap(la + d / 111_320, lo + d / 111_320 / math.cos(math.radians(la)), cell) for d in (-20, 0, 20)]
    assert len(set(near)) == 1
    assert snap(LAT, LON, 0.0) == (LAT, LON)


def test_coarsen_incident_widens_uncertainty_and_drops_residuals():
    inc = incident(n_shots=2)
    c = coarsen_incident(inc, 150.0)
    assert c.cep95_m == pytest.approx(inc.cep95_m + 150 / math.sqrt(2))
    assert all(s.residuals == [] for s in c.shots)
    assert c.shots[0].ellipse.semi_major_m > inc.shots[0].ellipse.semi_major_m
    assert (c.position.lat_deg, c.position.lon_deg) == snap(LAT, LON, 150.0)
    assert coarsen_incident(inc, 0.0) is inc


# -- CAP 1.2 ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cap_schema():
    return xmlschema.XMLSchema(DATA / "cap" / "CAP-v1.2.xsd")


NS = {"cap": cap.CAP_NS}


def test_cap_alert_update_close_validate_against_the_oasis_schema(cap_schema):
    cfg = CapSettings(sender="shotline@hub.example.org", status="Test", web="https://hub.example.org/i/")
    new = incident(n_shots=3)
    xml_new = cap.incident_to_cap(new, cfg)
    cap_schema.validate(xml_new)
    root = ET.fromstring(xml_new)
    assert root.tag == f"{{{cap.CAP_NS}}}alert"
    assert root.findtext("cap:msgType", namespaces=NS) == "Alert"
    sent = root.findtext("cap:sent", namespaces=NS)
    assert sent == "2026-11-18T11:06:41-00:00"  # published_ns = T0 + 1 s (date -u -d @1795000001), whole seconds, UTC as -00:00
    assert root.findtext("cap:info/cap:onset", namespaces=NS).endswith("-00:00")
    circle = root.find("cap:info/cap:area/cap:circle", NS).text
    assert circle == f"{LAT:.6f},{LON:.6f} 0.004"  # lat,lon then radius in km (CEP95 3.5 m)
    assert len(root.findall("cap:info/cap:area/cap:circle", NS)) == 4  # incident + 3 shots
    params = {p.findtext("cap:valueName", namespaces=NS): p.findtext("cap:value", namespaces=NS)
              for p in root.findall("cap:info/cap:parameter", NS)}
    assert params["rounds"] == "3" and params["automaticFire"] == "true"
    assert root.findtext("cap:info/cap:web", namespaces=NS) == "https://hub.example.org/i/" + new.incident_id

    upd = incident(revision=2, state="updated", n_shots=4)
    refs = [(cap.cap_identifier(new), new.published_ns)]
    xml_upd = cap.incident_to_cap(upd, cfg, references=refs, review_state="confirmed")
    cap_schema.validate(xml_upd)
    r2 = ET.fromstring(xml_upd)
    assert r2.findtext("cap:msgType", namespaces=NS) == "Update"
    assert r2.findtext("cap:references", namespaces=NS) == (
        f"shotline@hub.example.org,{cap.cap_identifier(new)},2026-11-18T11:06:41-00:00")
    assert r2.findtext("cap:info/cap:certainty", namespaces=NS) == "Observed"

    closed = incident(revision=3, state="closed", event_class="firework")
    xml_closed = cap.incident_to_cap(closed, CapSettings(), references=refs)
    cap_schema.validate(xml_closed)
    r3 = ET.fromstring(xml_closed)
    assert r3.findtext("cap:info/cap:urgency", namespaces=NS) == "Past"
    assert r3.findtext("cap:info/cap:event", namespaces=NS) == "Fireworks"


def test_cap_schema_rejects_what_cap_forbids(cap_schema):
    """The schema fixture has teeth: a 'Z' time and a bad enumeration fail."""
    good = cap.incident_to_cap(incident(), CapSettings())
    assert cap_schema.is_valid(good)
    assert not cap_schema.is_valid(good.replace(b"-00:00</sent>", b"Z</sent>"))
    assert not cap_schema.is_valid(good.replace(b"<status>Actual", b"<status>Bogus"))
    assert not cap_schema.is_valid(good.replace(b"<category>Security</category>", b""))


def test_cap_identifier_has_no_forbidden_characters():
    ident = cap.cap_identifier(incident(iid="a b,c<d&e"))
    assert not any(ch in ident for ch in " ,<&")


# -- GeoJSON --------------------------------------------------------------------------------


def _check_rfc7946(fc):
    assert fc["type"] == "FeatureCollection" and isinstance(fc["features"], list)
    assert "crs" not in fc
    for f in fc["features"]:
        assert f["type"] == "Feature" and set(f) >= {"geometry", "properties"}
        assert isinstance(f["id"], str | int)
        g = f["geometry"]
        assert g["type"] == "Point" and len(g["coordinates"]) in (2, 3)
        lon, lat = g["coordinates"][:2]
        assert -180 <= lon <= 180 and -90 <= lat <= 90
    west, south, east, north = fc["bbox"]
    assert west <= east and south <= north


def test_geojson_feature_collection_is_rfc7946_lon_lat():
    a, b = incident(n_shots=2), incident(iid="other", lat=41.70, lon=-72.70)
    fc = geojson.feature_collection([(a, "confirmed"), b], with_shots=True)
    _check_rfc7946(fc)
    fc2 = json.loads(geojson.dumps(fc))  # plain JSON
    assert fc2 == fc
    first = fc["features"][0]
    assert first["geometry"]["coordinates"] == [round(LON, 7), round(LAT, 7)]  # longitude first
    assert first["properties"]["review_state"] == "confirmed" and first["properties"]["rounds"] == 2
    assert first["properties"]["first_shot"] == "2026-11-18T11:06:40.123Z"
    kinds = [f["properties"]["kind"] for f in fc["features"]]
    assert kinds == ["incident", "shot", "shot", "incident", "shot"]
    assert fc["bbox"] == [-72.70, 41.70, round(LON, 7), round(LAT, 7)]
    assert geojson.feature_collection([]) == {"type": "FeatureCollection", "features": []}


# -- webhooks -------------------------------------------------------------------------------


class Receiver:
    """A webhook receiver on a loopback port: answers `fail_first` requests with `fail_status`, then 200."""

    def __init__(self, fail_first=0, fail_status=500, port=None):
        self.requests: list[dict] = []
        self.fail_first = fail_first
        self.fail_status = fail_status
        rec = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                rec.requests.append({"headers": dict(self.headers.items()), "body": body, "path": self.path})
                code = rec.fail_status if len(rec.requests) <= rec.fail_first else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port or 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    rs = []

    def make(**kw):
        r = Receiver(**kw)
        rs.append(r)
        return r

    yield make
    for r in rs:
        r.close()


class FakeClock:
    def __init__(self, t=T0):
        self.t = t

    def __call__(self):
        return self.t


def dispatcher(store, hooks, fences=None, clock=None, **kw):
    settings = SinkSettings(webhooks=hooks, geofences=fences or {}, retry_base_s=0.01, retry_max_s=0.05, **kw)
    return SinkDispatcher(settings, store, clock=clock or time.time_ns)


def test_webhook_signed_retried_with_one_idempotency_key(receiver, monkeypatch):
    monkeypatch.setenv("PARTNER_SECRET", SECRET.decode())
    r = receiver(fail_first=3)
    store = IncidentStore()
    d = dispatcher(store, [WebhookSink(name="partner", url=r.url, secret_env="PARTNER_SECRET")])
    inc = incident()
    assert d.submit(inc) == 1
    assert d.submit(inc) == 0  # the same message again (e.g. after a restart) is not queued twice
    d.start()
    deadline = time.monotonic() + 5
    while store.outbox_stats()["delivered"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    d.stop()
    assert len(r.requests) == 4  # three 500s, then delivered
    keys = {q["headers"]["Idempotency-Key"] for q in r.requests}
    assert keys == {f"{inc.incident_id}.r1"}
    assert [q["headers"]["X-Shotline-Attempt"] for q in r.requests] == ["1", "2", "3", "4"]
    for q in r.requests:
        assert webhook.verify(SECRET, q["body"], q["headers"]["X-Shotline-Signature"])
        assert not webhook.verify(b"wrong", q["body"], q["headers"]["X-Shotline-Signature"])
        assert q["headers"]["Content-Type"] == "application/json"
    assert m.decode(r.requests[-1]["body"], m.Incident) == inc
    assert store.outbox_stats() == {"pending": 0, "delivered": 1, "failed": 0}
    assert d.delivered == 1


def test_webhook_client_error_is_not_retried(receiver):
    r = receiver(fail_first=10, fail_status=400)
    store = IncidentStore()
    d = dispatcher(store, [WebhookSink(name="p", url=r.url)])
    d.submit(incident())
    assert d.deliver_due() == 1
    assert store.outbox_stats() == {"pending": 0, "delivered": 0, "failed": 1}
    assert "HTTP 400" in store._conn.execute("SELECT last_error FROM sink_outbox").fetchone()[0]
    assert len(r.requests) == 1


def test_backoff_is_exponential_capped_and_jittered():
    store = IncidentStore()
    d = SinkDispatcher(SinkSettings(retry_base_s=1.0, retry_max_s=30.0), store)
    for n in range(1, 12):
        vals = [d.backoff_s(n) for _ in range(200)]
        hi = min(30.0, 2.0 ** (n - 1))
        assert all(0.5 * hi <= v <= hi for v in vals)
        assert max(vals) - min(vals) > 0.2 * hi  # jitter spreads retries of many hubs/messages


def test_delay_states_and_operator_dismissal(receiver):
    r = receiver()
    clock = FakeClock()
    store = IncidentStore()
    d = dispatcher(store, [WebhookSink(name="late", url=r.url, delay_s=60.0, states=["new", "closed"])], clock=clock)
    a, b = incident("A"), incident("B")
    for inc in (a, b):
        store.put_incident(inc)
        assert d.submit(inc) == 1
    assert d.submit(incident("A", revision=2, state="updated")) == 0  # state not subscribed
    clock.t += 59 * S
    assert d.deliver_due() == 0 and r.requests == []
    store.add_review("B", "op", "dismiss", note="door slam")
    clock.t += 2 * S
    assert d.deliver_due() == 2
    assert [q["headers"]["Idempotency-Key"] for q in r.requests] == ["A.r1"]  # B was dismissed in time
    assert store.outbox_stats() == {"pending": 0, "delivered": 1, "failed": 1}


def test_geofence_filter_sticks_to_incidents_once_sent(receiver):
    r = receiver()
    store = IncidentStore()
    fences = {"school": GeofenceSettings(polygons=[SQUARE]), "far": GeofenceSettings(polygons=[FAR])}
    d = dispatcher(store, [WebhookSink(name="school", url=r.url, geofences=["school"]),
                           WebhookSink(name="far", url=r.url, geofences=["far"])], fences)
    inside = incident("IN")
    assert d.submit(inside) == 1  # only the school sink
    moved = incident("IN", revision=2, state="updated", lat=41.0, lon=-73.1)
    assert d.submit(moved) == 1  # the school sink keeps following it
    assert d.submit(incident("OUT", lat=41.5, lon=-72.0)) == 0
    while d.deliver_due():
        pass
    assert sorted(q["headers"]["Idempotency-Key"] for q in r.requests) == ["IN.r1", "IN.r2"]
    assert {q["headers"]["X-Shotline-Sink"] for q in r.requests} == {"school"}


def test_precision_and_formats_in_the_body(receiver, cap_schema):
    r = receiver()
    store = IncidentStore()
    d = dispatcher(store, [WebhookSink(name="geo", url=r.url, format="geojson", precision_m=150.0),
                           WebhookSink(name="cap", url=r.url, format="cap", precision_m=150.0)],
                   cap=CapSettings(sender="hub@example.org"))
    first = incident(n_shots=2)
    store.put_incident(first)
    d.submit(first)
    upd = incident(revision=2, state="updated", n_shots=3)
    store.put_incident(upd)
    d.submit(upd)
    while d.deliver_due():
        pass
    by = {(q["headers"]["X-Shotline-Sink"], q["headers"]["Idempotency-Key"]): q for q in r.requests}
    geo = by[("geo", first.incident_id + ".r1")]
    assert geo["headers"]["Content-Type"] == "application/geo+json"
    fc = json.loads(geo["body"])
    _check_rfc7946(fc)
    lat_c, lon_c = snap(LAT, LON, 150.0)
    assert fc["features"][0]["geometry"]["coordinates"] == [round(lon_c, 7), round(lat_c, 7)]
    assert all(f["properties"].get("residuals", []) == [] for f in fc["features"])
    capq = by[("cap", first.incident_id + ".r2")]
    assert capq["headers"]["Content-Type"] == "application/cap+xml"
    cap_schema.validate(capq["body"])
    root = ET.fromstring(capq["body"])
    assert root.findtext("cap:msgType", namespaces=NS) == "Update"
    assert cap.cap_identifier(first) in root.findtext("cap:references", namespaces=NS)
    assert f"{lat_c:.6f},{lon_c:.6f}" in root.find("cap:info/cap:area/cap:circle", NS).text
    assert str(LAT) not in capq["body"].decode()


def test_durable_queue_survives_a_restart_and_an_outage(tmp_path, receiver):
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    path = tmp_path / "hub.sqlite"
    store = IncidentStore(path)
    d = dispatcher(store, [WebhookSink(name="p", url=url, timeout_s=1.0)])
    for k in range(3):
        d.submit(incident(f"I{k}"))
    assert d.deliver_due() == 3  # receiver down: connection refused, all rescheduled
    assert store.outbox_stats()["pending"] == 3
    store.close()  # the hub goes down

    r = receiver(port=port)  # the receiver comes back, so does the hub
    store = IncidentStore(path)
    d = dispatcher(store, [WebhookSink(name="p", url=url)])
    d.submit(incident("I1"))  # republished after restart: not queued again
    time.sleep(0.06)  # past the longest backoff
    while d.deliver_due():
        time.sleep(0.01)
    assert sorted(q["headers"]["Idempotency-Key"] for q in r.requests) == ["I0.r1", "I1.r1", "I2.r1"]
    assert store.outbox_stats() == {"pending": 0, "delivered": 3, "failed": 0}
    attempts = [a for (a,) in store._conn.execute("SELECT attempts FROM sink_outbox")]
    assert attempts == [2, 2, 2]
    store.close()


def test_queued_message_of_a_removed_sink_is_dropped_and_old_ones_give_up(receiver):
    clock = FakeClock()
    store = IncidentStore()
    store.outbox_put("gone", "X.r1", b"{}", "application/json", due_ns=clock.t, incident_id="X", created_ns=clock.t)
    d = dispatcher(store, [WebhookSink(name="p", url="http://127.0.0.1:9/unreachable", timeout_s=0.5)],
                   clock=clock, give_up_after_s=10.0)
    d.submit(incident("Y"))
    clock.t += 11 * S  # the receiver stayed unreachable past give_up_after_s
    d.deliver_due()
    assert store.outbox_stats() == {"pending": 0, "delivered": 0, "failed": 2}


def test_secrets_come_from_env_or_file(tmp_path, monkeypatch):
    monkeypatch.delenv("NOPE_SECRET", raising=False)
    with pytest.raises(ValueError, match="NOPE_SECRET"):
        webhook.load_secret("p", "NOPE_SECRET", None)
    f = tmp_path / "secret"
    f.write_text("  abc \n")
    assert webhook.load_secret("p", None, str(f)) == b"abc"
    f.write_text("")
    with pytest.raises(ValueError, match="empty"):
        webhook.load_secret("p", None, str(f))
    assert webhook.load_secret("p", None, None) is None
    assert webhook.sign(b"k", b"body") == "sha256=" + __import__("hmac").new(b"k", b"body", "sha256").hexdigest()


def test_sink_settings_validation():
    from shotline.core.config import ConfigError, parse_config
    from shotline.hub.config import HubConfig

    ok = parse_config(
        'site = "s"\n[store]\npath = "x.sqlite"\n[sinks.geofences.school]\npolygons = [[[0, 0], [1, 0], [1, 1]]]\n'
        '[[sinks.webhooks]]\nname = "p"\nurl = "https://p.example/h"\ngeofences = ["school"]\nprecision_m = 150\n',
        HubConfig,
    )
    assert ok.sinks.webhooks[0].geofences == ["school"] and ok.store.path == "x.sqlite"
    bad = [
        ('[[sinks.webhooks]]\nname = "p"\nurl = "ftp://x"\n', "http"),
        ('[[sinks.webhooks]]\nname = "p"\nurl = "http://x"\ngeofences = ["nope"]\n', "unknown geofence"),
        ('[[sinks.webhooks]]\nname = "p"\nurl = "http://x"\n[[sinks.webhooks]]\nname = "p"\nurl = "http://y"\n', "unique"),
        ('[sinks.geofences.g]\npolygons = [[[0, 0], [1, 0]]]\n', "at least 3"),
        ('[sinks.geofences.g]\npolygons = [[[0, 100], [1, 0], [0, 1]]]\n', "lon_deg, lat_deg"),
        ('[[sinks.webhooks]]\nname = "p"\nurl = "http://x"\nsecret = "inline"\n', "secret"),
        ('[sinks.cap]\nsender = "a b"\n', "sender"),
        ('[store]\ndetections = "some"\n', "detections"),
    ]
    for text, msg in bad:
        with pytest.raises(ConfigError, match=msg):
            parse_config('site = "s"\n' + text, HubConfig)
    assert msgspec.to_builtins(HubConfig(site="s").sinks)["webhooks"] == []
