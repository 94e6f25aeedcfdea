"""The embedded MQTT broker: pure-Python amqtt, started in-process.

Used by the demo and the tests. It runs on its own asyncio loop in a daemon
thread and listens on loopback. Anonymous clients are refused, but any
username is accepted: amqtt keeps persistent sessions (queued QoS 1
messages while a subscriber is away) only for authenticated clients, so every
Shotline client connects with a username. Production uses Mosquitto (see
docs/mqtt.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import threading

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    """The embedded broker could not start (for example, its port is taken)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_in_use(host: str, port: int) -> bool:
    """True if something already listens on (host, port).

    The test binds as the servers will (asyncio's and uvicorn's listeners set SO_REUSEADDR):
    connections of a server that just stopped linger in TIME_WAIT for a minute, and without
    the option they made a second ``make demo`` right after the first refuse its own port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc.errno in (errno.EADDRINUSE, errno.EACCES)
    return False


class EmbeddedBroker:
    """An amqtt broker on ``host:port`` (port 0: pick a free one), in a background thread.

    Use as a context manager or call :meth:`start` / :meth:`stop`.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _config(self) -> dict:
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": False},
            },
        }

    def start(self, timeout_s: float = 10.0) -> EmbeddedBroker:
        """Start listening; raise :class:`BrokerError` with the reason if it cannot."""
        if port_in_use(self.host, self.port):
            raise BrokerError(
                f"port {self.port} on {self.host} is already in use; stop what listens there "
                "or choose another port (--port)"
            )
        # amqtt logs every connection at INFO and, at shutdown, warns about
        # acknowledgements of sessions it is tearing down; keep the demo's
        # output readable (errors still show).
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.ERROR)
        self._thread = threading.Thread(target=self._run, name="amqtt-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise BrokerError(f"embedded broker did not start within {timeout_s:g} s")
        if self._error is not None:
            raise BrokerError(f"embedded broker failed to start on {self.host}:{self.port}: {self._error}")
        return self

    def _run(self) -> None:
        from amqtt.broker import Broker

        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            self._broker = Broker(self._config(), loop=loop)
            loop.run_until_complete(self._broker.start())
        except BaseException as exc:  # report any start failure to start()
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(self._broker.shutdown())
            loop.close()

    def stop(self) -> None:
        """Shut the broker down and join its thread."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
