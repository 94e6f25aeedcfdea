"""Reliability: broker outage and node kill -9 lose no detection; the hub sees each once."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from shotline.core import topics
from shotline.core.broker import EmbeddedBroker, free_port
from shotline.core.config import BrokerSettings
from shotline.core.transport import MqttTransport
from shotline.hub.ingest import Ingest
from shotline.sensor.audio import FileSource
from shotline.sensor.config import AudioSettings, NodeSettings, SensorConfig, StorageSettings
from shotline.sensor.impulse_synth import add_friedlander, white_noise
from shotline.sensor.node import SensorNode

FS = 48000
START_NS = 1_795_000_000_000_000_000
pytestmark = pytest.mark.slow
OUTAGE_S = float(os.environ.get("SHOTLINE_OUTAGE_S", "1.0"))
"""Broker outage; the issue's 60 s: ``SHOTLINE_OUTAGE_S=60 pytest tests/integration/test_sensor_outbox.py``."""


def _burst_wav(path, n_shots=40, rate_hz=10.0, seconds=None):
    """A burst of automatic fire: n_shots at rate_hz, after 0.5 s of noise."""
    seconds = seconds or 0.5 + n_shots / rate_hz + 0.5
    x = white_noise(int(seconds * FS), np.random.default_rng(7), rms=0.003)
    for k in range(n_shots):
        add_friedlander(x, FS, 0.5 + k / rate_hz, amplitude=0.5)
    sf.write(path, x, FS, subtype="FLOAT")
    return path


class Hub:
    """A hub's ingest on its own MQTT connection: counts what arrives and what is a duplicate."""

    def __init__(self, port: int) -> None:
        self.ingest = Ingest("t")
        self.ids: list[str] = []
        self.lock = threading.Lock()
        self.tr = MqttTransport(BrokerSettings(port=port), f"hub-{time.monotonic_ns()}", clean_session=True)
        self.tr.subscribe(topics.node_filter("t", "detection"), self._on)
        self.tr.start()
        time.sleep(0.3)  # SUBACK

    def _on(self, topic, payload):
        got = self.ingest.accept(topic, payload)
        with self.lock:
            if got is not None:
                self.ids.append(got.msg.detection_id)

    def wait_for(self, n, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.ids) < n:
            time.sleep(0.05)
        return list(self.ids)


class CuttableLink:
    """A TCP relay between the node and the broker that the test can cut and restore.

    Cut: every open connection is closed and new ones are refused at once, as when
    the broker goes down or the cellular link drops; the broker itself (and the
    hub's session on it) stays up.
    """

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.up = True
        self.socks: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            if not self.up:
                c.close()
                continue
            try:
                b = socket.create_connection(self.target)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.socks += [c, b]
            for src, dst in ((c, b), (b, c)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.up = False
        with self.lock:
            socks, self.socks = self.socks, []
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self.srv.close()


def test_broker_unreachable_during_a_burst_then_back_everything_arrives_once(tmp_path):
    wav = _burst_wav(tmp_path / "burst.wav")
    with EmbeddedBroker() as broker:
        link = CuttableLink(broker.port)
        hub = Hub(broker.port)
        cfg = SensorConfig(node=NodeSettings(site="t", node_id="n1"),
                           audio=AudioSettings(path=str(wav), start_time_ns=START_NS, speed=0),
                           broker=BrokerSettings(port=link.port, keepalive_s=5),
                           storage=StorageSettings(data_dir=str(tmp_path / "data")))
        node = SensorNode(cfg, FileSource(wav, START_NS), None, classifier=None)
        tr = MqttTransport(cfg.broker, "shotline-node-t-n1", will=node.status_message("offline"),
                           birth=[node.status_message("online")])
        node.transport = tr
        tr.start()
        try:
            link.cut()  # the broker becomes unreachable...
            deadline = time.monotonic() + 10
            while tr.connected and time.monotonic() < deadline:
                time.sleep(0.02)
            assert not tr.connected
            stats = node.run()  # ...while the burst is detected
            expected = sorted(d.detection_id for d in stats.detections)
            assert len(expected) == 40
            time.sleep(OUTAGE_S)
            assert node.outbox.depth == 40 and hub.ids == []  # all on disk, nothing through
            link.restore()  # ...and comes back
            assert node.wait_acked(45.0), f"outbox still holds {node.outbox.depth}"
            got = hub.wait_for(40)
            assert sorted(got) == expected  # every detection, exactly once after the hub's dedup
            assert hub.ingest.accepted["detection"] == 40
        finally:
            hub.tr.stop()
            tr.stop()
            node.close()
            link.close()


NODE_SCRIPT = textwrap.dedent(
    """
    import json, sys, threading, time
    from shotline.core.config import BrokerSettings
    from shotline.core.transport import MqttTransport
    from shotline.sensor.audio import FileSource
    from shotline.sensor.cli import _keep_connecting
    from shotline.sensor.config import AudioSettings, NodeSettings, SensorConfig, StorageSettings
    from shotline.sensor.node import SensorNode

    wav, port, data_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    cfg = SensorConfig(node=NodeSettings(site="t", node_id="n1"),
                       audio=AudioSettings(path=wav, start_time_ns=1795000000000000000, speed=0),
                       broker=BrokerSettings(port=port), storage=StorageSettings(data_dir=data_dir))
    node = SensorNode(cfg, FileSource(wav, 1795000000000000000), None, classifier=None)
    print(json.dumps({"left_from_before": node.outbox.depth}), flush=True)
    tr = MqttTransport(cfg.broker, "shotline-node-t-n1")
    node.transport = tr
    threading.Thread(target=_keep_connecting, args=(tr, threading.Event()), daemon=True).start()
    stats = node.run()
    print(json.dumps({"ids": [d.detection_id for d in stats.detections]}), flush=True)
    ok = node.wait_acked(60.0)
    print(json.dumps({"acked": ok, "depth": node.outbox.depth}), flush=True)
    """
)


def test_node_killed_with_detections_unsent_delivers_them_after_restart(tmp_path):
    port = free_port()  # no broker yet: the burst stays in the outbox
    data = tmp_path / "data"
    wav = _burst_wav(tmp_path / "burst.wav", n_shots=30)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.Popen([sys.executable, "-c", NODE_SCRIPT, str(wav), str(port), str(data)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert json.loads(p.stdout.readline())["left_from_before"] == 0
        ids = json.loads(p.stdout.readline())["ids"]
        assert len(ids) == 30
    finally:
        p.send_signal(signal.SIGKILL)  # no clean shutdown, no chance to flush anything
        p.wait(10)
    broker = EmbeddedBroker(port=port).start()
    try:
        hub = Hub(port)
        silent = tmp_path / "silent.wav"
        sf.write(silent, np.zeros(FS // 2, np.float32), FS)
        p2 = subprocess.run([sys.executable, "-c", NODE_SCRIPT, str(silent), str(port), str(data)],
                            capture_output=True, text=True, env=env, timeout=90)
        lines = [json.loads(x) for x in p2.stdout.splitlines()]
        assert lines[0]["left_from_before"] == 30, p2.stderr[-2000:]
        assert lines[1]["ids"] == [] and lines[2] == {"acked": True, "depth": 0}
        assert sorted(hub.wait_for(30)) == sorted(ids)
        hub.tr.stop()
    finally:
        broker.stop()
