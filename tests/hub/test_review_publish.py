"""An operator's review goes downstream as the incident's next revision."""

from __future__ import annotations

import time

import numpy as np
from test_pipeline import SITE, T0_NS, arrivals, detection, grid, status

from shotline.core import messages as m
from shotline.core import topics
from shotline.core.config import BrokerSettings
from shotline.core.transport import MqttTransport
from shotline.hub.config import HubConfig, LocationSettings, StoreSettings
from shotline.hub.service import HubService


def _service(port, db):
    cfg = HubConfig(site=SITE, broker=BrokerSettings(port=port, username="hub"),
                    location=LocationSettings(speed_of_sound_mps=340.0, source_height_m=1.5),
                    store=StoreSettings(path=str(db)))
    svc = HubService(cfg, watermark="data")
    svc.start()
    return svc


def test_review_is_published_as_next_revision(embedded_broker, tmp_path):
    got: list[m.Incident] = []
    sub = MqttTransport(BrokerSettings(port=embedded_broker.port, username="obs"), "obs")
    sub.subscribe(topics.incident_topic(SITE), lambda _t, p: got.append(m.decode(p, m.Incident)))
    sub.start()
    nodes = grid()
    svc = _service(embedded_broker.port, tmp_path / "hub.db")
    for nid, r in nodes.items():
        svc._on_message(*status(nid, r))
    rng = np.random.default_rng(1)
    for nid, t in sorted(arrivals(nodes, (40.0, 10.0, 1.5), T0_NS, rng), key=lambda x: x[1]):
        svc._on_message(*detection(nid, t))
    inc_id = svc.store.list_incidents()[0].incident.incident_id

    review = svc.store.add_review(inc_id, "alice", "relabel", label="firework", note="new year")
    msg = svc.publish_review(inc_id, review)
    assert msg.review.decision == "relabelled" and msg.review.reviewer == "alice"
    assert msg.event_class == "firework" and msg.state in ("new", "updated")
    svc.stop(close_incidents=True)  # the closing revision keeps the review
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(i.state == "closed" for i in got):
        time.sleep(0.05)
    revs = [i.revision for i in got if i.incident_id == inc_id]
    assert revs == sorted(revs) and len(set(revs)) == len(revs)
    closed = [i for i in got if i.state == "closed"][-1]
    assert closed.review is not None and closed.review.label == "firework"

    # After a restart the pipeline no longer holds it: the stored revision is re-issued.
    svc2 = _service(embedded_broker.port, tmp_path / "hub.db")
    r2 = svc2.store.add_review(inc_id, "bob", "confirm")
    msg2 = svc2.publish_review(inc_id, r2)
    assert msg2.revision == closed.revision + 1 and msg2.state == "closed"
    assert msg2.review.decision == "confirmed" and msg2.review.reviewer == "bob"
    # A confirm after the relabel: the class its scores give again, as before any review.
    first = next(i for i in got if i.incident_id == inc_id)
    assert msg2.event_class == first.event_class != "firework"
    svc2.stop()
    sub.stop()
