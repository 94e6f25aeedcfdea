"""End to end: simulated scene -> sensor nodes -> MQTT broker -> hub -> incidents."""

from __future__ import annotations

import numpy as np
import pytest

from shotline.calibration.demo import TruthMatcher, play_bundle
from shotline.calibration.simulator import (
    Scene,
    SceneEnvironment,
    Wgs84Position,
    grid_nodes,
    gunshot,
    render_scene,
)
from shotline.core import messages as m
from shotline.core.config import BrokerSettings

START_NS = 1_795_000_000_000_000_000


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory):
    """8 nodes on a 300 m grid, three gunshots (two from one place), 7 s."""
    nodes = grid_nodes(4, 2, 300.0, height_m=5.0, jitter_m=30.0, seed=3)
    events = [
        gunshot("A", START_NS + int(1.0e9), (-200.0, 60.0)),
        gunshot("B1", START_NS + int(3.5e9), (150.0, -40.0), ".45acp"),
        gunshot("B2", START_NS + int(4.1e9), (150.0, -40.0), ".45acp"),
    ]
    scene = Scene(
        nodes=nodes, events=events, start_time_ns=START_NS, duration_s=7.0,
        origin=Wgs84Position(41.7755, -72.6805, 15.0), environment=SceneEnvironment(temperature_c=12.0),
    )
    return render_scene(scene, tmp_path_factory.mktemp("e2e") / "bundle", seed=5)


def _check(bundle, played):
    finals = {}
    for out, _t in played.outputs:
        finals[out.incident.incident_id] = out.incident
    assert all(i.state == "closed" for i in finals.values())
    matcher = TruthMatcher(bundle)
    matched = {}
    for inc in finals.values():
        for shot in inc.shots:
            tm = matcher.match(shot)
            assert tm.event_id is not None, f"shot {shot.shot_id} matches no true event"
            matched[tm.event_id] = tm.error_m
            assert shot.n_nodes >= 4
    assert set(matched) == {"A", "B1", "B2"}
    assert max(matched.values()) < 1.0
    # The two rounds from one place form one incident of 2 rounds.
    assert sorted(i.rounds for i in finals.values()) == [1, 2]
    assert played.dropped == {}
    assert played.latencies_ms and max(played.latencies_ms) < 1000


@pytest.mark.slow
def test_end_to_end_embedded_broker(embedded_broker, small_bundle):
    played = play_bundle(small_bundle, BrokerSettings(port=embedded_broker.port), site="e2e", speed=None)
    _check(small_bundle, played)


@pytest.mark.slow
@pytest.mark.mosquitto
def test_end_to_end_mosquitto(mosquitto, small_bundle):
    played = play_bundle(small_bundle, BrokerSettings(port=mosquitto), site="e2e", speed=None)
    _check(small_bundle, played)


def test_incident_messages_validate(embedded_broker, small_bundle):
    """Everything the hub publishes decodes as a valid Incident on the wire."""
    from shotline.core import topics
    from shotline.core.transport import MqttTransport

    got: list[bytes] = []
    listener = MqttTransport(BrokerSettings(port=embedded_broker.port, username="observer"), "observer")
    listener.subscribe(topics.incident_topic("e2e"), lambda _t, p: got.append(p))
    listener.start()
    try:
        play_bundle(small_bundle, BrokerSettings(port=embedded_broker.port), site="e2e", speed=None)
    finally:
        import time

        # The closing messages go out as the hub stops: wait for them to arrive.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(b'"closed"' in p for p in got):
            time.sleep(0.05)
        time.sleep(0.2)
        listener.stop()
    incidents = [m.decode(p, m.Incident) for p in got]
    assert incidents and incidents[-1].state == "closed"
    assert {i.state for i in incidents} >= {"new", "closed"}
    assert all(np.isfinite(i.cep95_m) for i in incidents)


@pytest.mark.parametrize("which", ["embedded", pytest.param("mosquitto", marks=pytest.mark.mosquitto)])
def test_hub_health_messages_arrive_and_count_the_play(which, request, small_bundle):
    """The hub publishes its health on hub/health (QoS 0) every health_interval_s and once more as it stops:
    each decodes as a HubHealth on the wire, and the last counts what the play sent it. On the embedded
    broker and on Mosquitto (production)."""
    import time

    import msgspec

    from shotline.calibration.replay import hub_config_for
    from shotline.core import topics
    from shotline.core.transport import MqttTransport

    port = request.getfixturevalue("embedded_broker").port if which == "embedded" else request.getfixturevalue(which)
    broker = BrokerSettings(port=port)
    cfg = msgspec.structs.replace(hub_config_for(small_bundle, site="e2e", broker=broker), health_interval_s=0.3)
    got: list[tuple[str, bytes]] = []
    listener = MqttTransport(BrokerSettings(port=port, username="observer"), "observer-health")
    listener.subscribe("shotline/v1/e2e/hub/+", lambda t, p: got.append((t, p)), qos=0)
    listener.start()
    try:
        played = play_bundle(small_bundle, broker, site="e2e", speed=None, hub_cfg=cfg)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(t.endswith("/status") and b'"state":"offline"' in p
                                                      for t, p in got):
            time.sleep(0.05)
    finally:
        listener.stop()
    healths = [m.decode(p, m.HubHealth) for t, p in got if t == topics.hub_health_topic("e2e")]
    assert len(healths) >= 2, "a periodic message during the play and the last one as the hub stops"
    assert all(h.site == "e2e" for h in healths)
    assert [h.time_ns for h in healths] == sorted(h.time_ns for h in healths)
    last = healths[-1]
    # The health goes out before the offline status, so a consumer sees the closing counts first.
    order = [t.rsplit("/", 1)[1] + (":offline" if b'"state":"offline"' in p else "") for t, p in got]
    assert order.index("status:offline") > len(order) - 1 - order[::-1].index("health")
    assert last.messages.accepted["detection"] == played.detections
    assert last.messages.dropped == {} and last.detections.late == 0
    assert last.shots == 3 and last.open_incidents == 0
    assert last.delivery_delay.n == played.detections and last.publish_latency_p99_ms is not None
    assert last.provenance is not None and last.provenance.config_hash
