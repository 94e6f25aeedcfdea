"""Shared fixtures: brokers (embedded amqtt and a Mosquitto the test starts itself)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from shotline.core.broker import EmbeddedBroker, free_port

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture
def embedded_broker():
    """An amqtt broker on a free loopback port."""
    with EmbeddedBroker() as broker:
        yield broker


def _mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )


@pytest.fixture
def mosquitto(tmp_path):
    """A Mosquitto broker on a free loopback port, from a config file this fixture writes.

    Skips when Mosquitto is not installed, except with CI=true, where it fails.
    Yields the port.
    """
    exe = _mosquitto_binary()
    if exe is None:
        msg = "mosquitto is not installed (Debian: apt install mosquitto)"
        if IN_CI:
            pytest.fail(msg + "; CI=true requires it")
        pytest.skip(msg)
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        f"log_dest file {tmp_path / 'mosquitto.log'}\n"
    )
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mosquitto exited: {proc.stderr.read().decode(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("mosquitto did not start listening within 10 s")
    yield port
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
