"""The review page in a real browser: headless Chromium (Debian package ``chromium``) driven by Playwright.

A small simulated scene is rendered, replayed through the sensor nodes' and
the hub's own code in process, stored, and clips are cut from the bundle's
audio around each detection. The test logs in, sees the scene's incidents,
opens one, plays its clip, confirms it, reloads and finds the review kept;
a screenshot goes to build/test-artifacts/. Every request the page makes is
intercepted: anything not addressed to 127.0.0.1 fails the test.

Skips when Chromium or Playwright is missing, except with CI=true, where it fails.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

pytest.importorskip("fastapi")

IN_CI = os.environ.get("CI", "").lower() == "true"
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--mute-audio",
                 "--autoplay-policy=no-user-gesture-required"]
PASSWORD = "browser-test-pass"


def _chromium() -> str:
    exe = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        exe, why = None, "the Python package playwright is not installed (dev extra)"
    else:
        why = "chromium is not installed (Debian: apt-get install chromium)"
    if exe is None:
        if IN_CI:
            pytest.fail(why + "; CI=true requires it")
        pytest.skip(why)
    return exe


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch):
    from argon2 import PasswordHasher

    monkeypatch.setattr("shotline.hub.web.auth._hasher",
                        lambda: PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A replayed 6-node scene: store, registry and clip folder."""
    import soundfile as sf

    from shotline.calibration.replay import ReplayFrame, hub_config_for, run_node, sensor_config_for
    from shotline.calibration.simulator import (
        Scene,
        Wgs84Position,
        grid_nodes,
        gunshot,
        gunshot_string,
        render_scene,
    )
    from shotline.core import messages as msgs
    from shotline.core import topics
    from shotline.hub.pipeline import HubPipeline
    from shotline.hub.store import IncidentStore
    from shotline.hub.web.clips import write_clip

    tmp = tmp_path_factory.mktemp("webscene")
    t0 = (time.time_ns() - 120 * 10**9) // 10**9 * 10**9
    t = lambda s: t0 + int(s * 1e9)  # noqa: E731
    scene = Scene(
        nodes=grid_nodes(3, 2, 250.0, jitter_m=20.0, seed=3), start_time_ns=t0, duration_s=9.0,
        origin=Wgs84Position(41.7658, -72.6734, 20.0),
        events=[gunshot("g1", t(1.5), (120.0, 60.0)),
                *gunshot_string("burst", t(4.5), (320.0, 180.0), n_rounds=3, interval_s=0.35)],
    )
    bundle = render_scene(scene, tmp / "bundle", seed=5)
    site = "webtest"
    frame = ReplayFrame(bundle)
    pipe = HubPipeline(hub_config_for(bundle, site=site))
    store = IncidentStore(tmp / "hub.sqlite")
    clips = tmp / "clips"
    clips.mkdir()
    dets = []
    for node_id in bundle.node_ids:
        cfg = sensor_config_for(bundle, node_id, frame, site=site)
        node, nd = run_node(cfg)
        st = node.status_message("online")
        pipe.handle(st.topic, st.payload, t0)
        x, fs = sf.read(bundle.audio_path(node_id), dtype="float32", always_2d=True)
        start = bundle.node(node_id).start_time_ns
        for d in nd:
            i = round((d.onset_time_ns - start) * fs / 1e9)
            i0 = max(0, i - fs)
            write_clip(clips / f"{d.detection_id}.flac", x[i0:i + fs, 0], fs, start + round(i0 * 1e9 / fs),
                       d.detection_id)
        dets += nd
    incidents = {}
    dets.sort(key=lambda d: (d.onset_time_ns, d.node_id))
    outs = []
    for d in dets:
        outs += pipe.handle(topics.node_topic(site, d.node_id, "detection"), msgs.encode(d), d.onset_time_ns)
        outs += pipe.tick(d.onset_time_ns)
    outs += pipe.finish()
    store.put_detections([(d, d.onset_time_ns) for d in dets])
    for o in outs:
        store.put_incident(o.incident)
        incidents[o.incident.incident_id] = o.incident
    assert len(incidents) >= 2, "the scene should give at least two incidents"
    yield {"store": store, "registry": pipe.registry, "clips": clips, "incidents": incidents, "tmp": tmp,
           "site": site}
    store.close()


def _serve(store, tmp, registry=None, clip_dir=None, site="webtest", hub=None):
    from shotline.hub.web.auth import UserDB
    from shotline.hub.web.server import start_web
    from shotline.hub.web.settings import WebSettings

    users = UserDB(tmp / "users.json")
    if "olga" not in users.users():
        users.add("olga", PASSWORD, "operator")
    ws = WebSettings(users_path=str(tmp / "users.json"), clip_dir=str(clip_dir) if clip_dir else None)
    return start_web(ws, store=store, registry=registry, port=0, users=users, site=site, hub=hub)


class Browser:
    """A Playwright page on system Chromium that refuses (and records) every non-loopback request."""

    def __init__(self, exe: str):
        from playwright.sync_api import sync_playwright

        self._pw = sync_playwright().start()
        self.browser = self._pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True)
        # bypass_csp: Playwright's wait_for_function evaluates strings, which the page's CSP (script-src 'self',
        # no eval) forbids; the CSP header itself is checked by the API tests.
        self.context = self.browser.new_context(viewport={"width": 1600, "height": 1000}, bypass_csp=True)
        self.outside: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        # Poll conditions on a timer: the default (requestAnimationFrame) can
        # stall in a headless browser that paints nothing new.
        wait = self.page.wait_for_function
        self.page.wait_for_function = lambda expr, **kw: wait(expr, **{"polling": 50, **kw})
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _route(self, route):
        host = urlsplit(route.request.url).hostname
        if route.request.url.startswith(("data:", "blob:")) or host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            self.outside.append(route.request.url)
            route.abort()

    def login(self, url: str) -> None:
        p = self.page
        p.goto(url)
        p.wait_for_url("**/login**")
        p.fill("#username", "olga")
        p.fill("#password", PASSWORD)
        p.click("button[type=submit]")
        p.wait_for_selector("body[data-ready='1']", timeout=15000)

    def close(self) -> None:
        self.context.close()
        self.browser.close()
        self._pw.stop()


@pytest.mark.slow
def test_review_a_replayed_scene_in_chromium(scene):
    exe = _chromium()
    health = {"busy_fraction": 0.034, "busy_window_s": 60.0, "busy_warn_fraction": 0.8,
              "messages": {"dropped": {"malformed": 2, "duplicate": 1}},
              "detections": {"late": 0}, "delivery_delay": {"p95_s": 0.41}}
    web = _serve(scene["store"], scene["tmp"], scene["registry"], scene["clips"], scene["site"], hub=lambda: health)
    b = Browser(exe)
    try:
        p = b.page
        b.login(web.url)
        # The hub's own health in the header, and a warning colour once it is too busy to keep up.
        p.wait_for_function("!document.querySelector('#hub').hidden")
        assert p.text_content("#hub") == "hub 3 % busy · 3 dropped"
        assert "0.41 s (p95)" in p.get_attribute("#hub", "title") and "2 malformed" in p.get_attribute("#hub", "title")
        assert "warn" not in p.get_attribute("#hub", "class")
        health.update(sinks={"pending": 2, "retrying": 2, "retrying_for_s": 420.0, "failed": 0, "retry_warn_s": 300.0})
        p.wait_for_function("document.querySelector('#hub').classList.contains('warn')", timeout=8000)
        assert p.text_content("#hub") == "hub 3 % busy · 3 dropped · 2 deliveries retrying"
        assert "the oldest queued 7 min ago" in p.get_attribute("#hub", "title")
        health.update(busy_fraction=0.93, sinks={"pending": 0, "retrying": 0, "retrying_for_s": None, "failed": 0,
                                                  "retry_warn_s": 300.0})
        p.wait_for_function("document.querySelector('#hub').textContent.startsWith('hub 93 % busy')", timeout=8000)
        assert "warn" in p.get_attribute("#hub", "class")
        # The scene's incidents are listed and drawn.
        p.wait_for_function(f"document.querySelectorAll('#list li').length === {len(scene['incidents'])}")
        assert p.text_content("#total").startswith(f"{len(scene['incidents'])} incident")
        # Open the 3-round burst (the list is newest first).
        burst = max(scene["incidents"].values(), key=lambda i: i.rounds)
        p.click(f"#list li[data-id='{burst.incident_id}']")
        p.wait_for_selector("#detail:not([hidden])")
        assert p.text_content("#d-title") == burst.incident_id
        p.wait_for_function("document.querySelector('#play-node').textContent.includes('·')")
        facts = p.text_content("#d-facts")
        assert f"{burst.rounds}" in facts and "rounds/s" in facts
        # Waveforms drawn for every contributing node, all available.
        n_nodes = len(burst.shots[0].residuals)
        assert p.eval_on_selector_all("#nodes-table tbody tr", "rows => rows.length") == n_nodes
        assert p.evaluate("S.traces.traces.every(t => t.available)")
        # The spectrogram image loaded.
        p.wait_for_function("document.querySelector('#spec-img').complete && "
                            "document.querySelector('#spec-img').naturalWidth > 10")
        # Play its clip.
        p.click("#b-play")
        p.wait_for_function("document.body.dataset.played === '1'", timeout=10000)
        p.wait_for_function("document.querySelector('#audio').currentTime > 0.05", timeout=10000)
        # Confirm it from the keyboard.
        p.keyboard.press("c")
        p.wait_for_function(f"S.items.find(i => i.incident_id === '{burst.incident_id}').review_state === 'confirmed'")
        assert scene["store"].review_state(burst.incident_id) == "confirmed"
        assert scene["store"].reviews(burst.incident_id)[-1].reviewer == "olga"
        # Reload: the review is kept.
        p.goto(web.url + "?reload=1#" + burst.incident_id)  # a new document (a bare hash change is not a load)
        p.wait_for_selector("body[data-ready='1']")
        p.wait_for_selector("#rv-badge")
        assert "confirmed" in p.text_content("#rv-badge")
        assert "olga" in p.text_content("#reviews")
        # Sensors on the map, coloured by state.
        assert p.evaluate("S.nodes.size") == 6
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        p.screenshot(path=str(ARTIFACTS / "web-review.png"), full_page=True)
        assert not b.errors, b.errors
    finally:
        b.close()
        web.stop()
    assert b.outside == [], f"requests left localhost: {b.outside}"


def _many_incidents(store, n: int, t_end_ns: int) -> None:
    """``n`` one-shot incidents on a 2 km square over the last ``n`` minutes (no detections)."""
    from shotline.core import messages as m

    rng = np.random.default_rng(0)
    for k in range(n):
        t = t_end_ns - (n - k) * 60 * 10**9
        lat = 41.76 + rng.uniform(-0.009, 0.009)
        lon = -72.67 + rng.uniform(-0.012, 0.012)
        pos = m.Position(lat_deg=lat, lon_deg=lon, alt_m=1.5)
        res = [m.NodeResidual(node_id=f"N{j}", detection_id=f"d{k}-{j}", residual_s=1e-4 * j, used=True)
               for j in range(5)]
        shot = m.Shot(shot_id=f"s{k}", time_ns=t, position=pos, cep50_m=3, cep95_m=6,
                      ellipse=m.Ellipse(semi_major_m=3, semi_minor_m=2, azimuth_deg=float(k % 180)),
                      speed_of_sound_mps=343.0, n_nodes=5, rms_residual_s=1e-4, residuals=res)
        store.put_incident(m.Incident(site="bulk", incident_id=f"B{k:05d}", state="closed", revision=1,
                                      published_ns=t + 10**9, first_shot_ns=t, last_shot_ns=t, rounds=1,
                                      position=pos, cep95_m=6.0, event_class="gunshot", shots=[shot]),
                           stored_ns=t)


@pytest.mark.slow
def test_thousand_incidents_stay_smooth(tmp_path):
    """1,000 incidents: the page is ready quickly, the list is paged, keyboard review moves at once."""
    from shotline.hub.store import IncidentStore

    exe = _chromium()
    store = IncidentStore(tmp_path / "bulk.sqlite")
    _many_incidents(store, 1000, time.time_ns())
    web = _serve(store, tmp_path, site="bulk")
    b = Browser(exe)
    try:
        p = b.page
        t0 = time.monotonic()
        b.login(web.url)
        p.select_option("select[name=window]", "all")
        p.wait_for_function("document.querySelector('#total').textContent.startsWith('1000 incidents')")
        ready_s = time.monotonic() - t0
        assert p.eval_on_selector_all("#list li", "li => li.length") == 100  # one page
        assert p.evaluate("S.incLayer.getLayers().length") == 1000  # every incident on the map
        p.keyboard.press("j")
        p.wait_for_selector("#detail:not([hidden])")
        t1 = time.monotonic()
        # One step at a time: each j must select the next incident and load its detail.
        for k in range(1, 11):
            p.keyboard.press("j")
            p.wait_for_function(
                f"S.selIdx === {k} && S.detail && S.detail.incident_id === S.items[{k}].incident_id"
            )
        step_ms = (time.monotonic() - t1) / 10 * 1000
        # dismiss with the keyboard, then the next page via j at the end of the list
        p.keyboard.press("d")
        p.wait_for_function("S.selIdx === 11")
        assert store.count_incidents(review_states=["dismissed"]) == 1
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        p.screenshot(path=str(ARTIFACTS / "web-1000-incidents.png"))
        print(f"1,000 incidents: page ready in {ready_s:.2f} s, j step {step_ms:.0f} ms")
        assert ready_s < 15 and step_ms < 1500
        assert not b.errors, b.errors
    finally:
        b.close()
        web.stop()
        store.close()
    assert b.outside == []
