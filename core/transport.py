"""The transport interface and its MQTT implementation (paho-mqtt 2.x).

Sensor and hub code talk to a :class:`Transport`; :class:`MqttTransport` is
the production one: QoS 1, persistent sessions (``clean_session=False``) so
that the broker queues QoS 1 messages for a subscriber while it is away, a
last will, a birth message re-sent on every (re)connect, and automatic
reconnection with back-off.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from .config import BrokerSettings

log = logging.getLogger(__name__)

Handler = Callable[[str, bytes], None]
"""A message handler: ``handler(topic, payload)``. Exceptions are logged, never propagated."""


@dataclass(frozen=True)
class OutMessage:
    """A message to publish: topic, payload bytes, QoS and retain flag."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


class TransportError(RuntimeError):
    """The transport could not connect or publish."""


class Transport(ABC):
    """Publish/subscribe as the sensor and the hub need it."""

    @abstractmethod
    def start(self, timeout_s: float = 10.0) -> None:
        """Connect; return once connected, raise :class:`TransportError` after ``timeout_s``."""

    @abstractmethod
    def stop(self) -> None:
        """Disconnect cleanly (the broker does not send the last will)."""

    @abstractmethod
    def publish(self, msg: OutMessage, on_ack: Callable[[], None] | None = None) -> None:
        """Queue ``msg``; ``on_ack`` runs once the broker acknowledged it (QoS >= 1) or it was sent (QoS 0)."""

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until every message handed to :meth:`publish` was acknowledged; False on timeout."""
        return True

    @abstractmethod
    def subscribe(self, topic_filter: str, handler: Handler, qos: int = 1) -> None:
        """Deliver messages matching ``topic_filter`` to ``handler`` (kept across reconnects)."""

    @property
    @abstractmethod
    def connected(self) -> bool:
        """True while connected to the broker."""


class MqttTransport(Transport):
    """:class:`Transport` over MQTT with paho-mqtt 2.x.

    ``client_id`` must be stable across restarts for the persistent session
    to be found again. ``will`` is published by the broker if the connection
    drops; ``birth`` messages are (re)published after every connect.
    """

    def __init__(
        self,
        settings: BrokerSettings,
        client_id: str,
        *,
        will: OutMessage | None = None,
        birth: list[OutMessage] | None = None,
        clean_session: bool = False,
    ) -> None:
        self.settings = settings
        self.client_id = client_id
        self._birth = list(birth or [])
        self._subs: dict[str, tuple[Handler, int]] = {}
        self._lock = threading.Lock()
        self._pending: dict[int, Callable[[], None] | None] = {}
        # mids acknowledged before publish() could register their callback
        self._early: set[int] = set()
        self._connected = threading.Event()
        self._last_error: str | None = None
        self._protocol = protocol = mqtt.MQTTv5 if settings.protocol == "5" else mqtt.MQTTv311
        self._clean_session = clean_session
        kwargs = {} if protocol == mqtt.MQTTv5 else {"clean_session": clean_session}
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=protocol,
            reconnect_on_failure=True,
            **kwargs,
        )
        # Unlimited in-flight/queued: the outbox bounds what we hand over.
        self._client.max_inflight_messages_set(100)
        self._client.max_queued_messages_set(0)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        # Always send a username: amqtt keeps sessions only for authenticated clients.
        self._client.username_pw_set(settings.username or client_id, settings.password)
        if settings.tls:
            self._client.tls_set(ca_certs=settings.ca_file, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        if will is not None:
            self._client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message

    # -- Transport -------------------------------------------------------
    def start(self, timeout_s: float = 10.0) -> None:
        s = self.settings
        kwargs: dict = {}
        if self._protocol == mqtt.MQTTv5:
            # MQTT 5 spells a persistent session as clean_start=False plus a
            # session expiry interval (seconds; here one day).
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 0 if self._clean_session else 86400
            kwargs = {"clean_start": self._clean_session, "properties": props}
        try:
            self._client.connect_async(s.host, s.port, keepalive=s.keepalive_s, **kwargs)
        except (OSError, ValueError) as exc:
            raise TransportError(f"cannot connect to MQTT broker {s.host}:{s.port}: {exc}") from None
        self._client.loop_start()
        if not self._connected.wait(timeout_s):
            self._client.loop_stop()
            detail = f" ({self._last_error})" if self._last_error else ""
            raise TransportError(
                f"no connection to MQTT broker {s.host}:{s.port} within {timeout_s:g} s{detail}"
            )

    def stop(self) -> None:
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()
            self._connected.clear()

    def publish(self, msg: OutMessage, on_ack: Callable[[], None] | None = None) -> None:
        # Never hold our lock while calling into paho: paho calls on_publish
        # with its own mutex held, so that order would deadlock.
        info = self._client.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise TransportError(f"publish to {msg.topic} failed: {mqtt.error_string(info.rc)}")
        if self._register(info.mid, on_ack) and on_ack is not None:
            _safe(on_ack)

    def flush(self, timeout_s: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if not self._pending:
                    return True
            if not self._connected.is_set():
                return False  # nothing will be acknowledged until a reconnect
            time.sleep(0.01)
        return False

    def _register(self, mid: int, on_ack: Callable[[], None] | None) -> bool:
        """Remember the callback for ``mid``; True if the broker already acknowledged it."""
        with self._lock:
            if mid in self._early:
                self._early.discard(mid)
                return True
            self._pending[mid] = on_ack
            return False

    def subscribe(self, topic_filter: str, handler: Handler, qos: int = 1) -> None:
        with self._lock:
            self._subs[topic_filter] = (handler, qos)
        self._client.message_callback_add(topic_filter, self._dispatch(handler))
        if self._connected.is_set():
            self._client.subscribe(topic_filter, qos=qos)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # -- paho callbacks (network thread) ----------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._last_error = f"broker refused: {reason_code}"
            log.warning("MQTT %s: connect refused: %s", self.client_id, reason_code)
            return
        self._last_error = None
        log.debug("MQTT %s connected (session present: %s)", self.client_id, flags.session_present)
        with self._lock:
            subs = list(self._subs.items())
        for topic_filter, (_handler, qos) in subs:
            client.subscribe(topic_filter, qos=qos)
        for b in self._birth:
            info = client.publish(b.topic, b.payload, qos=b.qos, retain=b.retain)
            self._register(info.mid, None)
        self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if reason_code != 0:
            if was_connected or self._last_error is None:
                # keep a refusal's reason ("Not authorized") rather than the
                # generic code of the disconnect that follows it
                self._last_error = str(reason_code)
            log.warning("MQTT %s disconnected: %s; reconnecting", self.client_id, reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._lock:
            if mid in self._pending:
                cb = self._pending.pop(mid)
            else:
                cb = None
                self._early.add(mid)
        if cb is not None:
            _safe(cb)

    def _on_message(self, client, userdata, message) -> None:
        log.debug("MQTT %s: unrouted message on %s", self.client_id, message.topic)

    @staticmethod
    def _dispatch(handler: Handler):
        def on_message(client, userdata, message) -> None:
            try:
                handler(message.topic, message.payload)
            except Exception:  # a handler bug must not kill the network thread
                log.exception("handler for %s failed", message.topic)

        return on_message


def _safe(cb: Callable[[], None]) -> None:
    try:
        cb()
    except Exception:
        log.exception("publish acknowledgement callback failed")
