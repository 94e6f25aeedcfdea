"""The review page served by uvicorn beside a hub service: live events over SSE, start/stop, port errors."""

from __future__ import annotations

import json
import socket
import threading
import time
from types import SimpleNamespace

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from test_web_api import PASSWORD, cheap_hashes, make_incident  # noqa: E402, F401

from shotline.hub.store import IncidentStore  # noqa: E402
from shotline.hub.web.auth import UserDB  # noqa: E402
from shotline.hub.web.server import start_web  # noqa: E402
from shotline.hub.web.settings import WebSettings  # noqa: E402


class FakeService:
    """What start_web uses of a HubService: cfg.site, store, listeners, pipeline.registry, health."""

    def __init__(self, store):
        self.cfg = SimpleNamespace(site="test")
        self.store = store
        self.listeners = []
        self.pipeline = SimpleNamespace(registry=SimpleNamespace(nodes={}))

    def health(self):
        return {"site": "test", "busy_fraction": 0.05}


def _login(client: httpx.Client) -> str:
    r = client.get("/login")
    r = client.post("/login", data={"username": "olga", "password": PASSWORD,
                                    "csrf_token": r.cookies.get("shotline_login_csrf")})
    assert r.status_code == 303
    return client.get("/api/config").json()["csrf"]


def test_live_incidents_and_reviews_reach_the_browser(tmp_path):
    store = IncidentStore(tmp_path / "hub.sqlite")
    users = UserDB(tmp_path / "users.json")
    users.add("olga", PASSWORD, "operator")
    svc = FakeService(store)
    published = []
    web = start_web(WebSettings(users_path=str(tmp_path / "users.json")), svc, port=0, users=users,
                    on_review=lambda i, r: published.append((i, r.decision)))
    try:
        assert web.url.startswith("http://127.0.0.1:") and web.port > 0 and len(svc.listeners) == 1
        events: list[tuple[str, dict]] = []
        got = threading.Event()
        with httpx.Client(base_url=web.url, follow_redirects=False, timeout=10) as c:
            csrf = _login(c)
            assert c.get("/api/hub").json() == {"site": "test", "busy_fraction": 0.05}  # the service's health

            def listen():
                with c.stream("GET", "/api/events") as r:
                    kind = None
                    for line in r.iter_lines():
                        if line.startswith("event: "):
                            kind = line[7:]
                        elif line.startswith("data: ") and kind != "hello":
                            events.append((kind, json.loads(line[6:])))
                            if len(events) >= 2:
                                got.set()
                                return
                        elif line.startswith("data: "):
                            got.set()  # connected

            t = threading.Thread(target=listen, daemon=True)
            t.start()
            assert got.wait(5)
            got.clear()
            inc, dets = make_incident(1)
            store.put_detections([(d, d.onset_time_ns) for d in dets])
            store.put_incident(inc)
            t0 = time.monotonic()
            for fn in svc.listeners:  # what HubService does after publishing
                fn(SimpleNamespace(incident=inc), inc.published_ns)
            r = c.post(f"/api/incidents/{inc.incident_id}/review", json={"decision": "dismiss"},
                       headers={"X-CSRF-Token": csrf})
            assert r.status_code == 200
            assert got.wait(5), events
            latency = time.monotonic() - t0
            t.join(5)
        assert events[0][0] == "incident" and events[0][1]["incident_id"] == inc.incident_id
        assert events[1][0] == "review" and events[1][1]["review_state"] == "dismissed"
        assert published == [(inc.incident_id, "dismiss")]
        assert latency < 2.0
    finally:
        t_stop = time.monotonic()
        web.stop()
        store.close()
    assert time.monotonic() - t_stop < 4.0
    assert svc.listeners == []


def test_port_taken_is_a_clear_error(tmp_path):
    store = IncidentStore(":memory:")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(OSError, match="cannot listen"):
            start_web(WebSettings(users_path=str(tmp_path / "u.json")), store=store, port=port)
