"""Review page API: access control, incidents, aligned waveforms, clips, reviews, sensor health, export.

Incidents are built by hand from a forward model (nodes around a source,
onsets = origin + distance / c + residual) so that what the API returns can
be checked against what was put in.
"""

from __future__ import annotations

import io
import math
import os
import struct
import zlib

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("argon2")

from fastapi.testclient import TestClient  # noqa: E402

from shotline.core import messages as m  # noqa: E402
from shotline.hub.registry import NodeInfo  # noqa: E402
from shotline.hub.store import IncidentStore  # noqa: E402
from shotline.hub.web.app import WebContext, create_app  # noqa: E402
from shotline.hub.web.auth import UserDB  # noqa: E402
from shotline.hub.web.clips import FolderClips, envelope, write_clip  # noqa: E402
from shotline.hub.web.nodes import NodeMonitor  # noqa: E402
from shotline.hub.web.settings import WebSettings  # noqa: E402

T0 = 1_800_000_000_000_000_000
LAT0, LON0 = 41.7658, -72.6734
C = 343.0
FS = 48000
NODES = {"N1": (300.0, 0.0), "N2": (-250.0, 120.0), "N3": (40.0, 320.0), "N4": (-60.0, -280.0), "N5": (200.0, 210.0)}
RESID = {"N1": 0.0002, "N2": -0.0001, "N3": 0.0, "N4": 0.0031, "N5": 0.00005}
PASSWORD = "correct horse battery"


def latlon(e: float, n: float) -> tuple[float, float]:
    r = 6371008.8
    return LAT0 + math.degrees(n / r), LON0 + math.degrees(e / (r * math.cos(math.radians(LAT0))))


def make_incident(k: int, src_en=(10.0, -20.0), n_shots=1, t_ns=None, cls="gunshot", site="test"):
    """Incident ``k`` with ``n_shots`` shots 0.25 s apart, and its detections (onsets from the forward model)."""
    t_ns = T0 + k * 60 * 10**9 if t_ns is None else t_ns
    shots, dets = [], []
    lat, lon = latlon(*src_en)
    for j in range(n_shots):
        ts = t_ns + j * 250_000_000
        res = []
        for nid, (e, n) in NODES.items():
            d = math.hypot(e - src_en[0], n - src_en[1])
            det_id = f"{nid}-{k}-{j}"
            onset = ts + round((d / C + RESID[nid]) * 1e9)
            res.append(m.NodeResidual(node_id=nid, detection_id=det_id, residual_s=RESID[nid], used=nid != "N4"))
            dets.append(m.Detection(detection_id=det_id, site=site, node_id=nid, onset_time_ns=onset,
                                    onset_sigma_s=2e-5, time_quality="replay", peak_dbfs=-6.0, snr_db=30.0,
                                    noise_floor_dbfs=-60.0))
        shots.append(m.Shot(shot_id=f"S{k}-{j}", time_ns=ts, position=m.Position(lat_deg=lat, lon_deg=lon, alt_m=1.5),
                            cep50_m=2.0, cep95_m=4.0,
                            ellipse=m.Ellipse(semi_major_m=2.0, semi_minor_m=1.0, azimuth_deg=30.0),
                            speed_of_sound_mps=C, n_nodes=4, rms_residual_s=1e-4, residuals=res,
                            scores={"gunshot": 0.9, "firework": 0.1}))
    inc = m.Incident(site=site, incident_id=f"I{k:04d}", state="closed", revision=1, published_ns=t_ns + 10**9,
                     first_shot_ns=shots[0].time_ns, last_shot_ns=shots[-1].time_ns, rounds=n_shots,
                     position=m.Position(lat_deg=lat, lon_deg=lon, alt_m=1.5), cep95_m=4.0, event_class=cls,
                     class_scores={"gunshot": 0.9, "firework": 0.1}, shots=shots)
    return inc, dets


def write_clips(folder, dets, before_s=1.0, after_s=1.0):
    """A clip per detection: a decaying impulse at the onset over faint noise, first-sample time in the comment."""
    rng = np.random.default_rng(1)
    for d in dets:
        n = int((before_s + after_s) * FS)
        x = rng.normal(0, 1e-3, n).astype(np.float32)
        i = int(before_s * FS)
        x[i:i + 200] += 0.8 * np.exp(-np.arange(200) / 30.0)
        write_clip(folder / f"{d.detection_id}.flac", x, FS, d.onset_time_ns - int(before_s * 1e9), d.detection_id)


class FakeRegistry:
    def __init__(self, now_ns: int):
        self.nodes = {}
        for nid, (e, n) in NODES.items():
            lat, lon = latlon(e, n)
            self.nodes[nid] = NodeInfo(nid, position=m.Position(lat_deg=lat, lon_deg=lon, alt_m=4.0), state="online",
                                       last_seen_ns=now_ns - 5 * 10**9)


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch):
    """argon2id at test strength (the default costs ~1 s per hash on a busy 2-core machine)."""
    from argon2 import PasswordHasher

    monkeypatch.setattr("shotline.hub.web.auth._hasher",
                        lambda: PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture
def env(tmp_path):
    now = T0 + 3600 * 10**9
    store = IncidentStore(tmp_path / "hub.sqlite")
    clips_dir = tmp_path / "clips"
    clips_dir.mkdir()
    all_dets = []
    for k in range(12):
        inc, dets = make_incident(k, n_shots=3 if k == 0 else 1, cls="firework" if k % 4 == 3 else "gunshot")
        store.put_detections([(d, d.onset_time_ns) for d in dets])
        store.put_incident(inc)
        all_dets += dets
    write_clips(clips_dir, [d for d in all_dets if d.detection_id.endswith("-0-0") or "-1-" in d.detection_id])
    users = UserDB(tmp_path / "users.json")
    users.add("olga", PASSWORD, "operator")
    users.add("vic", PASSWORD, "viewer")
    settings = WebSettings(users_path=str(tmp_path / "users.json"))
    reg = FakeRegistry(now)
    reviews_seen = []
    ctx = WebContext(settings=settings, store=store, users=users,
                     nodes=NodeMonitor(reg, settings, lambda: now), clips=FolderClips(clips_dir),
                     on_review=lambda i, r: reviews_seen.append((i, r)), site="test", clock=lambda: now)
    app = create_app(ctx)
    yield {"app": app, "ctx": ctx, "store": store, "reg": reg, "reviews": reviews_seen, "now": now,
           "tmp": tmp_path, "clips": clips_dir, "dets": {d.detection_id: d for d in all_dets}}
    store.close()


def login(app, user="olga", password=PASSWORD) -> tuple[TestClient, str]:
    c = TestClient(app, follow_redirects=False)
    r = c.get("/login")
    token = r.cookies.get("shotline_login_csrf") or c.cookies.get("shotline_login_csrf")
    r = c.post("/login", data={"username": user, "password": password, "csrf_token": token, "next": "/"})
    assert r.status_code == 303, r.text
    cfg = c.get("/api/config").json()
    return c, cfg["csrf"]


# ----------------------------------------------------------------------------- access
def test_nothing_but_the_login_page_without_a_session(env):
    c = TestClient(env["app"], follow_redirects=False)
    r = c.get("/", headers={"accept": "text/html"})
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    for path in ("/api/incidents", "/api/config", "/api/nodes", "/api/hub", "/api/events", "/static/app.js",
                 "/static/vendor/leaflet/leaflet.js", "/api/incidents/I0000", "/api/clips/N1-0-0.wav", "/overlay",
                 "/docs", "/openapi.json", "/redoc"):
        r = c.get(path)
        assert r.status_code in (401, 404), path
        assert "leaflet" not in r.text.lower() and "I0000" not in r.text, path
    r = c.get("/login")
    assert r.status_code == 200 and "<form" in r.text and 'name="csrf_token"' in r.text
    assert "script" not in r.text  # the login page runs no code
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"


def test_login_needs_its_csrf_token_and_the_right_password(env):
    c = TestClient(env["app"], follow_redirects=False)
    r = c.post("/login", data={"username": "olga", "password": PASSWORD, "csrf_token": "forged"})
    assert r.status_code == 403 and "shotline_session" not in r.cookies
    token = c.get("/login").cookies.get("shotline_login_csrf")
    r = c.post("/login", data={"username": "olga", "password": "wrong password", "csrf_token": token})
    assert r.status_code == 401 and "Wrong user name or password" in r.text
    token = r.cookies.get("shotline_login_csrf")  # each form gets a fresh token
    r = c.post("/login", data={"username": "nobody", "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 401
    token = r.cookies.get("shotline_login_csrf")
    r = c.post("/login", data={"username": "olga", "password": PASSWORD, "csrf_token": token,
                               "next": "//evil.example/"})
    assert r.status_code == 303 and r.headers["location"] == "/"  # no open redirect
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert c.get("/", headers={"accept": "text/html"}).status_code == 200
    assert c.get("/static/vendor/leaflet/leaflet.js").status_code == 200
    assert c.get("/static/../app.py").status_code == 404


def test_logout_needs_csrf_and_revokes_the_session(env):
    c, csrf = login(env["app"])
    assert c.post("/logout").status_code == 403
    assert c.post("/logout", data={"csrf_token": csrf}).status_code == 303
    assert c.get("/api/config").status_code == 401


def test_repeated_failures_are_throttled(env):
    c = TestClient(env["app"], follow_redirects=False)
    token = c.get("/login").cookies.get("shotline_login_csrf")
    codes = []
    for _ in range(11):
        r = c.post("/login", data={"username": "olga", "password": "nope-nope", "csrf_token": token})
        codes.append(r.status_code)
        token = r.cookies.get("shotline_login_csrf")
    assert codes[:10] == [401] * 10 and codes[10] == 429


# ----------------------------------------------------------------------------- incidents
def test_list_filters_and_pagination(env):
    c, _ = login(env["app"])
    r = c.get("/api/incidents", params={"limit": 5}).json()
    assert r["total"] == 12 and len(r["items"]) == 5
    assert r["items"][0]["incident_id"] == "I0011"  # newest first
    page2 = c.get("/api/incidents", params={"limit": 5, "offset": 5}).json()["items"]
    assert not {i["incident_id"] for i in r["items"]} & {i["incident_id"] for i in page2}
    fw = c.get("/api/incidents", params={"cls": "firework"}).json()
    assert fw["total"] == 3 and all(i["event_class"] == "firework" for i in fw["items"])
    since = T0 + 5 * 60 * 10**9
    t = c.get("/api/incidents", params={"since": str(since)}).json()
    assert t["total"] == 7
    iso = c.get("/api/incidents", params={"since": "2027-01-15T08:05:00Z"}).json()
    assert iso["total"] == 7  # T0 is 2027-01-15T08:00:00Z
    lat, lon = latlon(10.0, -20.0)
    box = c.get("/api/incidents", params={"bbox": f"{lon - 0.001},{lat - 0.001},{lon + 0.001},{lat + 0.001}"}).json()
    assert box["total"] == 12
    away = c.get("/api/incidents", params={"bbox": f"{lon + 0.01},{lat},{lon + 0.02},{lat + 0.01}"}).json()
    assert away["total"] == 0
    assert c.get("/api/incidents", params={"review": "unreviewed"}).json()["total"] == 12
    assert c.get("/api/incidents", params={"state": "closed"}).json()["total"] == 12
    assert c.get("/api/incidents", params={"state": "new,updated"}).json()["total"] == 0
    bad = c.get("/api/incidents", params={"cls": "rocket"})
    assert bad.status_code == 400 and "rocket" in bad.json()["error"]
    assert c.get("/api/incidents", params={"bbox": "1,2,3"}).status_code == 400
    assert c.get("/api/incidents", params={"since": "yesterday"}).status_code == 400
    pts = c.get("/api/incidents/points").json()["points"]
    assert len(pts) == 12 and pts[0][0] == "I0011" and pts[0][4] == "unreviewed"


def test_detail_has_residuals_travel_times_cadence_and_scores(env):
    c, _ = login(env["app"])
    d = c.get("/api/incidents/I0000").json()
    assert d["rounds"] == 3 and len(d["shots"]) == 3
    assert d["cadence"]["median_interval_s"] == pytest.approx(0.25) and d["cadence"]["rate_hz"] == pytest.approx(4.0)
    assert d["class_scores"]["gunshot"] == pytest.approx(0.9)
    shot = d["shots"][0]
    assert shot["ellipse"]["scale95"] == pytest.approx(math.sqrt(-2 * math.log(0.05)))
    for n in shot["nodes"]:
        e, nn = NODES[n["node_id"]]
        dist = math.hypot(e - 10.0, nn + 20.0)
        # predicted arrival = onset - residual = origin + travel time
        assert n["travel_time_s"] == pytest.approx(dist / C, abs=2e-9)
        assert n["residual_s"] == pytest.approx(RESID[n["node_id"]])
        assert n["distance_m"] == pytest.approx(math.hypot(dist, 2.5), abs=0.5)  # nodes 4 m up, source 1.5 m
    assert [n["used"] for n in shot["nodes"]] == [True, True, True, False, True]
    assert c.get("/api/incidents/nope").status_code == 404


def test_waveforms_are_aligned_on_the_solved_origin(env):
    """Each node's impulse appears at its residual on the aligned axis (0 for a consistent node)."""
    c, _ = login(env["app"])
    r = c.get("/api/incidents/I0001/traces", params={"before": 0.005, "after": 0.01, "bins": 1500}).json()
    assert r["shot_id"] == "S1-0"
    bin_s = 0.015 / 1500
    for tr in r["traces"]:
        assert tr["available"], tr
        t_peak = -0.005 + (int(np.argmax(tr["max"])) + 0.5) * bin_s
        assert t_peak == pytest.approx(RESID[tr["node_id"]], abs=1.5 * bin_s), tr["node_id"]
        assert tr["onset_rel_s"] == pytest.approx(RESID[tr["node_id"]], abs=1e-8)
    # A shot without clips says why.
    r = c.get("/api/incidents/I0002/traces").json()
    assert not any(t["available"] for t in r["traces"]) and "no clip" in r["traces"][0]["reason"]
    assert c.get("/api/incidents/I0001/traces", params={"shot": "nope"}).status_code == 404


def test_envelope_matches_brute_force():
    rng = np.random.default_rng(3)
    x = rng.normal(size=10007).astype(np.float32)
    fs = 1000
    lo, hi = envelope(x, fs, t_start_s=-2.0, t0_s=-3.0, span_s=12.0, n_bins=97)
    edges = np.clip(np.round((-1.0 + np.linspace(0, 12.0, 98)) * fs).astype(int), 0, x.size)
    for b in range(97):
        seg = x[edges[b]:edges[b + 1]]
        assert lo[b] == pytest.approx(float(seg.min()) if seg.size else 0.0, abs=1e-4)
        assert hi[b] == pytest.approx(float(seg.max()) if seg.size else 0.0, abs=1e-4)


def test_clip_wav_and_spectrogram(env):
    import soundfile as sf

    c, _ = login(env["app"])
    r = c.get("/api/clips/N1-1-0.wav", params={"node": "N1"})
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    x, fs = sf.read(io.BytesIO(r.content), dtype="float32")
    assert fs == FS and x.size == 2 * FS and np.argmax(x) == pytest.approx(FS, abs=2)
    r = c.get("/api/clips/N1-1-0/spectrogram.png")
    assert r.status_code == 200 and r.content[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", r.content[16:24])
    # decode the image: the impulse column is brighter than the quiet ones
    idat = r.content[r.content.index(b"IDAT") + 4:r.content.index(b"IEND") - 8]
    img = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + 3 * w)[:, 1:].reshape(h, w, 3)
    col = img.astype(float).sum(axis=(0, 2))
    hop_s = 128 / FS
    assert abs(int(np.argmax(col)) * hop_s - 1.0) < 0.02
    assert c.get("/api/clips/N1-7-0.wav").status_code == 404
    assert c.get("/api/clips/..%2Fetc.wav").status_code in (400, 404)


# ----------------------------------------------------------------------------- reviews
def test_review_needs_csrf_and_operator_role(env):
    c, csrf = login(env["app"])
    assert c.post("/api/incidents/I0003/review", json={"decision": "confirm"}).status_code == 403
    r = c.post("/api/incidents/I0003/review", json={"decision": "confirm"},
               headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"})
    assert r.status_code == 403
    v, vcsrf = login(env["app"], "vic")
    r = v.post("/api/incidents/I0003/review", json={"decision": "confirm"}, headers={"X-CSRF-Token": vcsrf})
    assert r.status_code == 403 and "read-only" in r.json()["error"]
    assert env["store"].review_state("I0003") == "unreviewed"
    assert v.get("/api/config").json()["role"] == "viewer"


def test_confirm_dismiss_relabel_are_stored_and_published(env):
    c, csrf = login(env["app"])
    h = {"X-CSRF-Token": csrf}
    r = c.post("/api/incidents/I0003/review", json={"decision": "confirm", "note": "heard on N2 too"}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["review_state"] == "confirmed"
    rv = env["store"].reviews("I0003")[-1]
    assert (rv.reviewer, rv.decision, rv.note, rv.time_ns) == ("olga", "confirm", "heard on N2 too", env["now"])
    assert env["reviews"][-1][0] == "I0003" and env["reviews"][-1][1].decision == "confirm"
    r = c.post("/api/incidents/I0004/review", json={"decision": "relabel", "label": "firework"}, headers=h)
    assert r.json()["review_state"] == "relabelled"
    assert c.get("/api/incidents", params={"review": "relabelled"}).json()["items"][0]["review_label"] == "firework"
    # a plain HTML form post works too (CSRF token as a field) and comes back to the page
    r = c.post("/api/incidents/I0005/review", data={"decision": "dismiss", "csrf_token": csrf})
    assert r.status_code == 303 and env["store"].review_state("I0005") == "dismissed"
    bad = [
        ({"decision": "relabel"}, "needs a label"),
        ({"decision": "relabel", "label": "rocket"}, "label must be"),
        ({"decision": "approve"}, "decision must be"),
        ({"decision": "confirm", "note": "x" * 2001}, "at most 2000"),
    ]
    for body, msg in bad:
        r = c.post("/api/incidents/I0006/review", json=body, headers=h)
        assert r.status_code == 400 and msg in r.json()["error"], body
    assert c.post("/api/incidents/nope/review", json={"decision": "confirm"}, headers=h).status_code == 404
    d = c.get("/api/incidents/I0003").json()
    assert d["review_state"] == "confirmed" and d["reviews"][0]["reviewer"] == "olga"
    assert len(env["reviews"]) == 3


# ----------------------------------------------------------------------------- sensor health
def test_node_states_and_noise_trend(env):
    reg, now = env["reg"], env["now"]
    s = 10**9
    n = reg.nodes
    n["N2"].last_seen_ns = now - 200 * s  # stale (120 s)
    n["N3"].last_seen_ns = now - 700 * s  # offline (600 s)
    n["N4"].health = m.NodeHealth(site="test", node_id="N4", time_ns=now - s,
                                  clock=m.ClockState(quality="unsynced"))
    n["N5"].status = m.NodeStatus(site="test", node_id="N5", state="offline")
    c, _ = login(env["app"])
    for k, level in enumerate((-62.0, -61.0, -55.5)):
        n["N1"].health = m.NodeHealth(site="test", node_id="N1", time_ns=now - (10 - k) * s,
                                      noise_floor_dbfs=level, clipping_per_min=3.0 if k == 2 else 0.0)
        c.get("/api/nodes")
    nodes = {x["node_id"]: x for x in c.get("/api/nodes").json()["nodes"]}
    assert {k: v["state"] for k, v in nodes.items()} == {
        "N1": "clipping", "N2": "stale", "N3": "offline", "N4": "clock", "N5": "offline"}
    assert [v for _, v in nodes["N1"]["noise_trend"]] == [-62.0, -61.0, -55.5]
    assert "unsynced" in nodes["N4"]["reasons"][0]
    n["N1"].flags = ("clock",)
    assert env["ctx"].nodes.state_of(n["N1"])[0] == "clock"


# ----------------------------------------------------------------------------- export
def test_export_labelled_dataset(env):
    from shotline.hub.web.export_dataset import export, read_dataset

    c, csrf = login(env["app"])
    h = {"X-CSRF-Token": csrf}
    c.post("/api/incidents/I0001/review", json={"decision": "relabel", "label": "other", "note": "door"}, headers=h)
    c.post("/api/incidents/I0000/review", json={"decision": "confirm"}, headers=h)
    man = export(env["store"], FolderClips(env["clips"]), env["tmp"] / "ds")
    # I0000: shot 0 has clips (4 used nodes); I0001: 4 used nodes; I0000's shots 1-2 have none.
    assert man["n_clips"] == 8 and man["labels"] == {"gunshot": 4, "other": 4} and man["missing_clips"] == 8
    ds = read_dataset(env["tmp"] / "ds")
    assert {x.group for x in ds} == {"I0000", "I0001"}
    for x in ds:
        assert x.onset_s == pytest.approx(1.0, abs=1e-6)  # the clips start 1 s before the onset
        assert int(np.argmax(x.samples)) == pytest.approx(round(x.onset_s * x.sample_rate_hz), abs=2)
        assert x.row["reviewer"] == "olga"


def test_export_cli(env, capsys):
    from shotline.hub.web.export_dataset import main

    env["store"].add_review("I0002", "olga", "dismiss")
    env["store"].add_review("I0001", "olga", "confirm")
    out = env["tmp"] / "ds2"
    assert main(["--db", env["store"].path, "--clips", str(env["clips"]), "--out", str(out)]) == 0
    assert "4 clips from 1 incidents" in capsys.readouterr().out  # I0002 has no clips
    assert main(["--db", env["store"].path, "--out", str(out), "--node-url", "bad"]) == 2


# ----------------------------------------------------------------------------- basemap
def test_pmtiles_tiles_are_served_locally(tmp_path, env):
    from pmtiles.tile import Compression, TileType, zxy_to_tileid
    from pmtiles.writer import write

    from shotline.hub.web.clips import png_rgb

    png = png_rgb(np.full((256, 256, 3), 120, np.uint8))
    path = tmp_path / "city.pmtiles"
    with write(str(path)) as w:
        w.write_tile(zxy_to_tileid(14, 4823, 6107), png)
        w.finalize({"tile_type": TileType.PNG, "tile_compression": Compression.NONE, "min_zoom": 14, "max_zoom": 14},
                   {"attribution": "test"})
    s = WebSettings(users_path=str(env["tmp"] / "users.json"), pmtiles=str(path), tile_attribution="© test")
    ctx = WebContext(settings=s, store=env["store"], users=env["ctx"].users,
                     nodes=NodeMonitor(None, s, lambda: env["now"]))
    c, _ = login(create_app(ctx))
    assert c.get("/api/config").json()["tiles"]["url"] == "/tiles/{z}/{x}/{y}"
    r = c.get("/tiles/14/4823/6107")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content == png
    assert c.get("/tiles/14/4823/6108").status_code == 204
    assert c.get("/tiles/3/99/0").status_code == 404


def test_settings_validation_names_the_key():
    import msgspec

    with pytest.raises(ValueError, match="tile_url must contain"):
        WebSettings(tile_url="http://localhost/tiles")
    with pytest.raises(ValueError, match="overlay_image and overlay_bounds"):
        WebSettings(overlay_image="x.png")
    with pytest.raises(ValueError, match="offline_after_s"):
        WebSettings(stale_after_s=100, offline_after_s=50)
    with pytest.raises(msgspec.ValidationError, match="port"):
        msgspec.convert({"port": 70000}, WebSettings)
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"prot": 1}, WebSettings)


# ----------------------------------------------------------------------------- accounts
def test_users_cli(tmp_path, monkeypatch, capsys):
    from shotline.hub.web.users import main

    f = tmp_path / "users.json"
    pw = tmp_path / "pw"
    pw.write_text("s3cret-passphrase\n")
    assert main(["--file", str(f), "add", "ana", "--role", "operator", "--password-file", str(pw)]) == 0
    assert main(["--file", str(f), "add", "ben", "--role", "viewer", "--password-file", str(pw)]) == 0
    assert main(["--file", str(f), "add", "ana", "--role", "viewer", "--password-file", str(pw)]) == 1
    assert "exists" in capsys.readouterr().err
    assert os.stat(f).st_mode & 0o777 == 0o600
    text = f.read_text()
    assert "s3cret" not in text and "$argon2id$" in text
    db = UserDB(f)
    assert db.verify("ana", "s3cret-passphrase") == "operator" and db.verify("ben", "s3cret-passphrase") == "viewer"
    assert db.verify("ana", "wrong") is None
    short = tmp_path / "short"
    short.write_text("abc")
    assert main(["--file", str(f), "add", "cy", "--role", "viewer", "--password-file", str(short)]) == 1
    assert main(["--file", str(f), "add", "bad/name", "--role", "viewer", "--password-file", str(pw)]) == 1
    capsys.readouterr()
    assert main(["--file", str(f), "list"]) == 0
    assert capsys.readouterr().out.split() == ["ana", "operator", "ben", "viewer"]
    assert main(["--file", str(f), "remove", "ben"]) == 0
    assert UserDB(f).verify("ben", "s3cret-passphrase") is None
    with pytest.raises(SystemExit):
        main(["--file", str(f), "add", "dan", "--role", "admin"])


def test_the_hubs_own_health_for_any_account(env):
    """GET /api/hub: the service's health (counters, busy fraction) for viewers too; 404 when no hub runs in
    the process (a page over a store alone)."""
    c, _ = login(env["app"], "vic")
    assert c.get("/api/hub").status_code == 404
    env["ctx"].hub = lambda: {"site": "test", "busy_fraction": 0.12, "messages": {"dropped": {"malformed": 2}}}
    r = c.get("/api/hub")
    assert r.status_code == 200
    assert r.json() == {"site": "test", "busy_fraction": 0.12, "messages": {"dropped": {"malformed": 2}}}
