"""The hub's own health (hub/health.py, HubService.health): the busy fraction over a sliding window,
the delivery delays, and the counters an operator reads on GET /api/hub."""

from __future__ import annotations

import json

import msgspec
import numpy as np
import pytest
from test_pipeline import SITE, T0_NS, detection, grid, status

from shotline.core import topics
from shotline.core.transport import Transport
from shotline.hub.config import HubConfig, LocationSettings, StoreSettings
from shotline.hub.health import DelayLog, LoadMeter
from shotline.hub.service import HubService


def test_busy_fraction_is_the_work_within_the_window_over_the_window():
    meter = LoadMeter(now_s=100.0, window_s=10.0)
    assert meter.busy_fraction(100.0) == 0.0
    for k in range(20):  # 0.3 s of work every second for 20 s
        meter.add(100.0 + k, 100.3 + k)
    assert meter.busy_fraction(120.0) == pytest.approx(0.3)  # the last 10 s: ten pieces of 0.3 s
    assert meter.busy_fraction(125.0) == pytest.approx(0.15)  # five of them left in the window
    assert meter.busy_fraction(200.0) == 0.0
    young = LoadMeter(now_s=0.0, window_s=60.0)
    young.add(1.0, 2.0)
    assert young.busy_fraction(4.0) == pytest.approx(0.25)  # over its 4 s of life, not the window
    young.add(4.0, 10.0)
    assert young.busy_fraction(6.0) == 1.0  # (work that ends later, counted whole: capped)
    with pytest.raises(ValueError):
        LoadMeter(0.0, window_s=0.0)


def test_delivery_delays_keep_the_latest_and_summarise_them():
    log = DelayLog(size=100)
    assert log.summary() == {"n": 0, "p50_s": None, "p95_s": None, "max_s": None}
    for k in range(300):
        log.add(received_ns=k * 10**9 + k * 10**6, onset_ns=k * 10**9)  # k ms late: the latest 100 are 0.2-0.299 s
    got = log.summary()
    assert got["n"] == 100
    assert got["p50_s"] == pytest.approx(np.percentile(np.arange(200, 300) / 1000, 50))
    assert got["p95_s"] == pytest.approx(np.percentile(np.arange(200, 300) / 1000, 95))
    assert got["max_s"] == pytest.approx(0.299)


class _Loopback(Transport):
    """No broker: the test hands messages to the hub's handler and reads what it publishes."""

    def __init__(self) -> None:
        self.handlers = []
        self.published = []

    def start(self, timeout_s: float = 10.0) -> None:
        pass

    def stop(self) -> None:
        pass

    def publish(self, msg, on_ack=None) -> None:
        self.published.append(msg)

    def subscribe(self, topic_filter, handler, qos=1) -> None:
        self.handlers.append(handler)

    @property
    def connected(self) -> bool:
        return True


def test_the_service_counts_what_it_took_in_and_dropped_and_how_late_detections_came(tmp_path):
    nodes = grid(3, 2)
    now = [T0_NS]
    cfg = HubConfig(site=SITE, location=LocationSettings(speed_of_sound_mps=340.0, source_height_m=1.5),
                    store=StoreSettings(path=str(tmp_path / "hub.sqlite")))
    svc = HubService(cfg, _Loopback(), clock=lambda: now[0], watermark="data")
    try:
        for nid, r in nodes.items():
            svc._on_message(*status(nid, r))
        delays_s = [0.05, 0.1, 0.2, 0.4]
        for k, (nid, d) in enumerate(zip(nodes, delays_s, strict=False)):
            onset = T0_NS + k * 10**9
            now[0] = onset + int(d * 1e9)
            svc._on_message(*detection(nid, onset))
        svc._on_message(*detection(next(iter(nodes)), T0_NS))  # the first one again: a duplicate
        svc._on_message(topics.node_topic(SITE, "N00", "detection"), b'{"schema": "shotline.detection/1"}')
        svc._on_message(topics.node_topic(SITE, "N00", "detection"), b"not json")
        h = svc.health()
        json.dumps(h)  # JSON-ready, as GET /api/hub serves it
        assert h["site"] == SITE and h["time_ns"] == now[0] and h["started_ns"] == T0_NS
        assert h["messages"]["accepted"] == {"status": len(nodes), "detection": len(delays_s)}
        assert h["messages"]["dropped"] == {"duplicate": 1, "malformed": 2}
        assert h["detections"] == {"late": 0, "held_unknown_node": 0, "dropped_unknown_node": 0}
        d = h["delivery_delay"]
        assert d["n"] == len(delays_s) and d["max_s"] == pytest.approx(0.4)
        assert d["p50_s"] == pytest.approx(np.percentile(delays_s, 50))
        assert 0.0 < h["busy_fraction"] <= 1.0 and h["busy_window_s"] == HubService.LOAD_WINDOW_S
        assert h["shots"] == 0 and h["open_incidents"] == 0 and h["publish_latency_p99_ms"] is None
        assert h["nodes"] == {"online": len(nodes), "offline": 0, "no_status": 0, "timing_flagged": []}
        assert h["sinks"] == {"pending": 0, "retrying": 0, "retrying_for_s": None, "failed": 0,
                              "retry_warn_s": HubService.SINK_RETRY_WARN_S}  # (no sinks)
        svc.pipeline.registry.nodes["N00"].flags = ("clock",)
        svc.pipeline.registry.nodes["N01"].state = "offline"
        svc._on_message(*detection("X9", T0_NS))  # a node with no status yet (its detection is held)
        assert svc.health()["nodes"] == {"online": len(nodes) - 1, "offline": 1, "no_status": 1,
                                         "timing_flagged": ["N00"]}
    finally:
        svc.stop(close_incidents=False, drain_s=0.0)


def test_an_overloaded_hub_warns_at_most_every_few_minutes(tmp_path, caplog):
    cfg = HubConfig(site=SITE, store=StoreSettings(path=str(tmp_path / "hub.sqlite")))
    svc = HubService(cfg, _Loopback())
    try:
        svc._load = LoadMeter(0.0, window_s=60.0)
        svc._load.add(0.0, 55.0)
        with caplog.at_level("WARNING", logger="shotline.hub.service"):
            svc._warn_if_overloaded(60.0)
            svc._warn_if_overloaded(61.0)
        warned = [r for r in caplog.records if "may not keep up" in r.getMessage()]
        assert len(warned) == 1 and "92 %" in warned[0].getMessage()
        caplog.clear()
        later = 60.0 + HubService.OVERLOAD_LOG_S
        with caplog.at_level("WARNING", logger="shotline.hub.service"):
            svc._warn_if_overloaded(later)  # idle since: nothing to say
            svc._load.add(later, later + 50.0)
            svc._warn_if_overloaded(later + 55.0)  # busy again, minutes after the first warning
        warned = [r for r in caplog.records if "may not keep up" in r.getMessage()]
        assert len(warned) == 1
    finally:
        svc.stop(close_incidents=False, drain_s=0.0)


def test_a_health_line_in_the_log_every_ten_minutes(tmp_path, caplog):
    """Where no review page runs the log is where an operator looks: one INFO line per HEALTH_LOG_S with the
    detections taken in since the last line and what was dropped."""
    nodes = grid(2, 2)
    cfg = HubConfig(site=SITE, store=StoreSettings(path=str(tmp_path / "hub.sqlite")))
    svc = HubService(cfg, _Loopback(), clock=lambda: T0_NS + 10**8)
    try:
        for nid, r in nodes.items():
            svc._on_message(*status(nid, r))
        for k, nid in enumerate(nodes):
            svc._on_message(*detection(nid, T0_NS + k * 1000))
        svc._on_message(topics.node_topic(SITE, "N00", "detection"), b"{}")
        # A round start: (t0 + 600) - t0 of a monotonic reading may come out a hair under 600 in floating point.
        t0 = 1000.0
        svc._health_logged = (t0, svc._health_logged[1])
        with caplog.at_level("INFO", logger="shotline.hub.service"):
            svc._log_health_if_due(t0 + 10.0)  # not yet
            svc._log_health_if_due(t0 + HubService.HEALTH_LOG_S)
            svc._on_message(*detection("N00", T0_NS + 5000))
            svc._log_health_if_due(t0 + HubService.HEALTH_LOG_S + 1.0)  # too soon again
            svc._log_health_if_due(t0 + 2 * HubService.HEALTH_LOG_S)
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("hub health")]
        assert len(lines) == 2
        assert lines[0].startswith(f"hub health: {len(nodes)} detections in the last 600 s")
        assert "delivery delay p95 0.10 s" in lines[0] and "dropped so far: 1 malformed" in lines[0]
        assert lines[1].startswith("hub health: 1 detections in the last 600 s")
    finally:
        svc.stop(close_incidents=False, drain_s=0.0)


def test_the_health_goes_out_on_its_topic_every_interval_and_as_the_hub_stops(tmp_path):
    """From the running tick every ``health_interval_s`` (the tick holds the hub's lock while it works: the
    health, which takes it, goes out after), QoS 0 and not retained; once more on stop, before the offline
    status."""
    import time

    from shotline.core import messages as m

    nodes = grid(2, 2)
    cfg = HubConfig(site=SITE, store=StoreSettings(path=str(tmp_path / "hub.sqlite")), health_interval_s=0.05)
    tr = _Loopback()
    svc = HubService(cfg, tr, tick_s=0.01, clock=lambda: T0_NS + 10**8)
    svc.start()
    try:
        for nid, r in nodes.items():
            svc._on_message(*status(nid, r))
        svc._on_message(topics.node_topic(SITE, "N00", "detection"), b"{}")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len([o for o in tr.published if o.topic.endswith("/hub/health")]) < 3:
            time.sleep(0.01)
    finally:
        svc.stop(close_incidents=False, drain_s=0.0)
    health = [o for o in tr.published if o.topic == topics.hub_health_topic(SITE)]
    assert len(health) >= 4  # three from the tick, one as it stopped
    assert all(o.qos == 0 and not o.retain for o in health)
    sent = [m.decode(o.payload, m.HubHealth) for o in health]
    assert sent[-1].messages.accepted == {"status": len(nodes)} and sent[-1].messages.dropped == {"malformed": 1}
    assert tr.published[-1].topic == topics.hub_status_topic(SITE) and b'"offline"' in tr.published[-1].payload
    assert tr.published[-2] is health[-1]
    with pytest.raises(ValueError):
        HubConfig(site=SITE, health_interval_s=0.0)


def test_the_health_check_verdict_and_its_lines():
    """``shotline-hub health``'s exit code from what the broker said, and the lines it prints."""
    from shotline.core import messages as m
    from shotline.hub import health_check as hc

    now = T0_NS + 3600 * 10**9
    calm = m.HubHealth(site=SITE, time_ns=now, started_ns=T0_NS, busy_fraction=0.05,
                       messages=m.HubMessageCounts(accepted={"detection": 120, "status": 4}, dropped={"malformed": 2}),
                       delivery_delay=m.DeliveryDelay(n=120, p50_s=0.1, p95_s=0.25, max_s=0.5),
                       shots=3, incidents_published=7, open_incidents=1, publish_latency_p99_ms=12.5,
                       provenance=m.Provenance(version="0.1.0"))
    online = m.HubStatus(site=SITE, state="online", time_ns=T0_NS)
    assert hc.verdict(hc.HealthReading(calm, online)) == (hc.OK, "hub keeps up")
    assert hc.verdict(hc.HealthReading(calm, None))[0] == hc.OK  # (no retained status: the health is enough)
    busy = msgspec.structs.replace(calm, busy_fraction=0.81)
    assert hc.verdict(hc.HealthReading(busy, online))[0] == hc.WARNING
    assert hc.verdict(hc.HealthReading(msgspec.structs.replace(calm, busy_fraction=0.8), online))[0] == hc.OK
    few_late = msgspec.structs.replace(calm, detections=m.HubDetectionCounts(late=1, dropped_unknown_node=4))
    assert hc.verdict(hc.HealthReading(few_late, online))[0] == hc.OK  # 1 of 120: under 1 %
    late = msgspec.structs.replace(calm, detections=m.HubDetectionCounts(late=2))
    code, why = hc.verdict(hc.HealthReading(late, online))
    assert code == hc.WARNING and why.startswith("2 of 120 detections since the hub started came later")
    assert hc.verdict(hc.HealthReading(None, online))[0] == hc.CRITICAL
    offline = m.HubStatus(site=SITE, state="offline", time_ns=now + 1)
    code, why = hc.verdict(hc.HealthReading(calm, offline))  # its last health, then offline
    assert code == hc.CRITICAL and why.startswith("hub offline since")
    restarted = msgspec.structs.replace(calm, time_ns=now + 2)
    assert hc.verdict(hc.HealthReading(restarted, offline))[0] == hc.OK  # a health newer than the offline status
    lines = hc.describe(calm)
    assert lines[0].startswith(f"hub {SITE}: health of ") and lines[0].endswith("up 60 min, version 0.1.0")
    assert lines[1] == ("busy 5.0 % of the last 60 s; detections delivered within 0.25 s (p95 of the latest 120; "
                        "median 0.10 s, max 0.50 s)")
    assert lines[2] == "messages taken in: 120 detection, 4 status; dropped: 2 malformed"
    assert lines[4] == "shots: 3; incident messages: 7; open incidents: 1; publish latency p99: 12.5 ms"
    assert lines[5] == "nodes online: 0, offline: 0, without a status: 0; timing flagged: none"
    nodes = msgspec.structs.replace(calm, nodes=m.HubNodeCounts(online=28, offline=2, no_status=1,
                                                                timing_flagged=["UA03", "UA07"]))
    assert hc.describe(nodes)[5] == "nodes online: 28, offline: 2, without a status: 1; timing flagged: UA03, UA07"
    stuck = msgspec.structs.replace(calm, sinks=m.HubSinkCounts(pending=5, retrying=3, retrying_for_s=900.0, failed=1))
    code, why = hc.verdict(hc.HealthReading(stuck, online))
    assert code == hc.WARNING and why.startswith("3 sink deliveries retrying, the oldest queued 15 min ago")
    assert hc.describe(stuck)[5] == "sink deliveries pending: 5 (3 retrying, the oldest queued 15 min ago); given up: 1"
    brief = msgspec.structs.replace(stuck, sinks=m.HubSinkCounts(pending=1, retrying=1, retrying_for_s=60.0))
    assert hc.verdict(hc.HealthReading(brief, online))[0] == hc.OK  # a receiver's restart: not yet a warning
    strict = msgspec.structs.replace(brief, sinks=m.HubSinkCounts(retrying=1, retrying_for_s=60.0, retry_warn_s=30.0))
    assert hc.verdict(hc.HealthReading(strict, online))[0] == hc.WARNING  # the hub's own threshold
    fresh = m.HubHealth(site=SITE, time_ns=now)
    assert "no detection yet" in hc.describe(fresh)[1] and hc.describe(fresh)[4].endswith("p99: -")


def test_the_hub_applies_the_store_retention_as_it_starts(tmp_path, caplog):
    """``[store] keep_*_days``: the hub's retention thread prunes once at start (then hourly), and logs what it
    deleted; a store that keeps everything is left alone."""
    import time

    from shotline.core import messages as m
    from shotline.core.timebase import now_ns
    from shotline.hub.store import IncidentStore

    path = tmp_path / "hub.sqlite"
    day = 86_400 * 10**9
    with IncidentStore(path) as st:
        st.put_detections([(m.Detection(detection_id=f"D{k}", site=SITE, node_id="N00", onset_time_ns=T0_NS,
                                        onset_sigma_s=1e-5, time_quality="pps", peak_dbfs=-10.0, snr_db=30.0,
                                        noise_floor_dbfs=-60.0), now_ns() - (k * 10 + 1) * day) for k in range(3)])
    keep_all = HubConfig(site=SITE, store=StoreSettings(path=str(path), detections="all", keep_deliveries_days=0.0))
    svc = HubService(keep_all, _Loopback())
    try:
        assert svc.prune_store() is None
    finally:
        svc.stop(close_incidents=False, drain_s=0.0)
    cfg = HubConfig(site=SITE, store=StoreSettings(path=str(path), detections="all", keep_detections_days=15.0))
    svc = HubService(cfg, _Loopback())
    with caplog.at_level("INFO", logger="shotline.hub.service"):
        svc.start()
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and len(svc.store.detections()) != 2:
                time.sleep(0.02)
            assert sorted(d.detection.detection_id for d in svc.store.detections()) == ["D0", "D1"]  # 1 and 11 days
        finally:
            svc.stop(close_incidents=False, drain_s=0.0)
    assert any("store retention: deleted 0 incident(s), 1 detection(s)" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError):
        StoreSettings(keep_incidents_days=-1.0)
    assert StoreSettings(keep_deliveries_days=0.0).prune_before_ns(100 * day)["deliveries_before_ns"] is None
    assert StoreSettings().prune_before_ns(100 * day) == {
        "incidents_before_ns": None, "detections_before_ns": None, "deliveries_before_ns": 10 * day}
