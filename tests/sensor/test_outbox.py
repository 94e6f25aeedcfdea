"""The outbox: durable, bounded, deleted on acknowledgement only."""

from __future__ import annotations

import threading
import time

import pytest

from shotline.core.transport import Transport
from shotline.sensor.outbox import Outbox, OutboxPublisher


def _fill(ob: Outbox, ids):
    for k in ids:
        ob.put(f"n1-{k}", "shotline/v1/s/node/n1/detection", f'{{"k":{k}}}'.encode(), 1000 + k)


def test_put_ack_and_duplicates(tmp_path):
    ob = Outbox(tmp_path / "o.sqlite")
    _fill(ob, range(5))
    assert ob.depth == 5
    assert not ob.put("n1-3", "t", b"x", 0)  # same id: not queued twice
    assert ob.ack("n1-3") and not ob.ack("n1-3")
    assert [r.detection_id for r in ob.pending()] == ["n1-0", "n1-1", "n1-2", "n1-4"]
    assert ob.depth == 4


def test_survives_reopen_and_uses_wal(tmp_path):
    path = tmp_path / "o.sqlite"
    ob = Outbox(path)
    _fill(ob, range(3))
    ob.ack("n1-1")
    ob.close()  # a clean close; the kill -9 case is in tests/integration
    ob2 = Outbox(path)
    assert [r.detection_id for r in ob2.pending()] == ["n1-0", "n1-2"] and ob2.depth == 2
    assert ob2._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert ob2.pending()[0].payload == b'{"k":0}'


def test_bounded_oldest_first_eviction_is_counted_across_restarts(tmp_path):
    path = tmp_path / "o.sqlite"
    ob = Outbox(path, max_rows=10)
    _fill(ob, range(25))
    assert ob.depth == 10 and ob.evicted == 15
    assert [r.detection_id for r in ob.pending()] == [f"n1-{k}" for k in range(15, 25)]
    ob.close()
    ob = Outbox(path, max_rows=10)
    _fill(ob, range(25, 27))
    assert ob.evicted == 17


def test_unwritable_directory_is_a_clear_error(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(OSError):
        Outbox(tmp_path / "f" / "o.sqlite")


class FakeTransport(Transport):
    """Records publishes; acknowledges them when told to."""

    def __init__(self) -> None:
        self._connected = threading.Event()
        self.sent: list[tuple[str, bytes]] = []
        self.acks = []
        self.lock = threading.Lock()

    def start(self, timeout_s=10.0):
        self._connected.set()

    def stop(self):
        self._connected.clear()

    def publish(self, msg, on_ack=None):
        with self.lock:
            self.sent.append((msg.topic, msg.payload))
            self.acks.append(on_ack)

    def subscribe(self, topic_filter, handler, qos=1):
        pass

    @property
    def connected(self):
        return self._connected.is_set()

    def ack_all(self):
        with self.lock:
            acks, self.acks = self.acks, []
        for a in acks:
            a()


def _wait(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return False


def test_publisher_waits_for_connection_and_deletes_on_ack(tmp_path):
    ob = Outbox(tmp_path / "o.sqlite")
    tr = FakeTransport()
    pub = OutboxPublisher(ob, tr)
    pub.start()
    _fill(ob, range(4))
    pub.kick()
    time.sleep(0.2)
    assert tr.sent == []  # broker down: nothing handed over, all kept
    tr.start()
    pub.kick()
    assert _wait(lambda: len(tr.sent) == 4)
    assert ob.depth == 4  # sent is not acknowledged
    tr.ack_all()
    assert ob.depth == 0 and pub.n_acked == 4
    pub.stop()


def test_unacknowledged_rows_are_sent_again_after_republish_s_and_in_flight_is_bounded(tmp_path):
    ob = Outbox(tmp_path / "o.sqlite")
    tr = FakeTransport()
    tr.start()
    _fill(ob, range(10))
    pub = OutboxPublisher(ob, tr, republish_s=1.0, max_in_flight=4)
    assert pub.publish_pending() == 4  # at most 4 in flight
    assert pub.publish_pending() == 0
    tr.ack_all()
    assert pub.publish_pending() == 4
    time.sleep(1.05)
    assert pub.publish_pending() == 4  # the same 4, again: no PUBACK within republish_s
    assert len({p for _, p in tr.sent}) == 8
