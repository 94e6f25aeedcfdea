"""The MQTT transport against the embedded broker: QoS 1 acks, persistent sessions, last will, birth."""

from __future__ import annotations

import time

import pytest

from shotline.core.broker import BrokerError, EmbeddedBroker
from shotline.core.config import BrokerSettings
from shotline.core.transport import MqttTransport, OutMessage, TransportError


def _wait(pred, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


def test_publish_acks_and_persistent_session(embedded_broker):
    port = embedded_broker.port
    got: list[bytes] = []
    sub = MqttTransport(BrokerSettings(port=port, username="hub"), "sub-1")
    sub.subscribe("t/#", lambda _t, p: got.append(p))
    sub.start()
    pub = MqttTransport(BrokerSettings(port=port, username="node"), "pub-1")
    pub.start()
    acks: list[int] = []
    for i in range(20):
        pub.publish(OutMessage("t/x", str(i).encode()), on_ack=lambda i=i: acks.append(i))
    assert _wait(lambda: len(acks) == 20 and len(got) == 20)
    assert sorted(acks) == list(range(20))
    assert got == [str(i).encode() for i in range(20)]

    # While the subscriber is away, the broker keeps its QoS 1 messages. (Let
    # amqtt finish the disconnect first: a message it is still delivering to
    # a closing connection can be lost there; Mosquitto keeps it, see below.)
    sub.stop()
    time.sleep(0.5)
    for i in range(20, 25):
        pub.publish(OutMessage("t/x", str(i).encode()))
    time.sleep(0.3)
    again: list[bytes] = []
    sub2 = MqttTransport(BrokerSettings(port=port, username="hub"), "sub-1")
    sub2.subscribe("t/#", lambda _t, p: again.append(p))
    sub2.start()
    assert _wait(lambda: len(again) >= 5)
    assert again[:5] == [str(i).encode() for i in range(20, 25)]
    pub.stop()
    sub2.stop()


def test_last_will_and_birth_on_reconnect(embedded_broker):
    port = embedded_broker.port
    status: list[bytes] = []
    watcher = MqttTransport(BrokerSettings(port=port, username="w"), "watcher")
    watcher.subscribe("s/status", lambda _t, p: status.append(p))
    watcher.start()
    node = MqttTransport(
        BrokerSettings(port=port, username="n1", keepalive_s=5), "n1",
        will=OutMessage("s/status", b"offline", 1, True),
        birth=[OutMessage("s/status", b"online", 1, True)],
    )
    node.start()
    assert _wait(lambda: status[-1:] == [b"online"])
    # An abrupt drop (no DISCONNECT): the broker publishes the will; paho reconnects and re-births.
    node._client._sock.close()  # noqa: SLF001 - simulate a dead link
    assert _wait(lambda: b"offline" in status)
    assert _wait(lambda: status[-1] == b"online", timeout_s=10)
    node.stop()
    watcher.stop()


def test_handler_errors_do_not_kill_the_transport(embedded_broker, caplog):
    port = embedded_broker.port
    got: list[bytes] = []

    def handler(_t, p):
        if p == b"boom":
            raise RuntimeError("handler bug")
        got.append(p)

    sub = MqttTransport(BrokerSettings(port=port, username="h"), "h")
    sub.subscribe("e", handler)
    sub.start()
    pub = MqttTransport(BrokerSettings(port=port, username="p"), "p")
    pub.start()
    pub.publish(OutMessage("e", b"boom"))
    pub.publish(OutMessage("e", b"fine"))
    assert _wait(lambda: got == [b"fine"])
    assert any("handler for e failed" in r.getMessage() for r in caplog.records)
    pub.stop()
    sub.stop()


def test_no_broker_is_a_clear_error():
    from shotline.core.broker import free_port

    port = free_port()
    t = MqttTransport(BrokerSettings(port=port, username="x"), "x")
    with pytest.raises(TransportError, match=f"127.0.0.1:{port}"):
        t.start(timeout_s=1.0)


def test_embedded_broker_refuses_a_taken_port(embedded_broker):
    with pytest.raises(BrokerError, match="already in use"):
        EmbeddedBroker(port=embedded_broker.port).start()


def test_a_broker_starts_again_on_the_port_of_one_that_just_stopped():
    """Stopping a broker with a client connected leaves its side of the connection in TIME_WAIT on
    the port for a minute; a new broker there (a second ``make demo`` right after the first) starts."""
    import socket

    first = EmbeddedBroker().start()
    port = first.port
    client = socket.create_connection(("127.0.0.1", port))
    try:
        time.sleep(0.2)
        first.stop()  # the broker closes the connection first: TIME_WAIT on its side, at `port`
        time.sleep(0.2)
    finally:
        client.close()
    again = EmbeddedBroker(port=port).start()
    again.stop()


@pytest.mark.mosquitto
@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_persistent_session_on_mosquitto(mosquitto, protocol):
    """Both protocol versions keep a subscriber's QoS 1 messages while it is away (MQTT 5: clean_start=False + expiry)."""
    s = BrokerSettings(port=mosquitto, protocol=protocol)
    got: list[bytes] = []
    sub = MqttTransport(s, f"sub-{protocol}")
    sub.subscribe("t/#", lambda _t, p: got.append(p))
    sub.start()
    sub.stop()
    pub = MqttTransport(s, f"pub-{protocol}")
    pub.start()
    for i in range(3):
        pub.publish(OutMessage("t/x", str(i).encode()))
    time.sleep(0.3)
    sub = MqttTransport(s, f"sub-{protocol}")
    sub.subscribe("t/#", lambda _t, p: got.append(p))
    sub.start()
    assert _wait(lambda: len(got) >= 3)
    assert got[:3] == [b"0", b"1", b"2"]
    sub.stop()
    pub.stop()
