"""TOML configuration: loading, validation and hashing.

Each role (sensor, hub) defines its configuration as msgspec Structs with
``forbid_unknown_fields=True``; :func:`load_config` reads a TOML file into one
and raises :class:`ConfigError` naming the offending key and the expected type,
e.g. ``config.toml: Expected `int`, got `str` - at `$.broker.port```.
"""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file that cannot be read or does not validate."""


class BrokerSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """How to reach the MQTT broker."""

    host: str = "127.0.0.1"
    """Broker host name or address."""
    port: int = 1883
    """Broker TCP port."""
    username: str | None = None
    """MQTT username; when unset the client id is sent (the embedded amqtt broker keeps
    persistent sessions only for clients that give a username)."""
    password: str | None = None
    """MQTT password (prefer a file readable only by the service user)."""
    keepalive_s: int = 30
    """MQTT keep-alive interval, seconds."""
    tls: bool = False
    """Connect with TLS (production Mosquitto)."""
    ca_file: str | None = None
    """CA certificate file (PEM) for TLS."""
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    """MQTT protocol version."""

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} outside 1-65535")
        if self.keepalive_s < 5:
            raise ValueError("keepalive_s must be at least 5 seconds")


def load_config(path: str | Path, kind: type[T]) -> T:
    """Read a TOML file and validate it as ``kind``."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    return parse_config(text, kind, source=str(path))


def parse_config(text: str, kind: type[T], source: str = "<config>") -> T:
    """Validate TOML text as ``kind``; errors name ``source`` and the offending key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    return convert_config(data, kind, source)


def convert_config(data: dict[str, Any], kind: type[T], source: str = "<config>") -> T:
    """Validate an already-parsed mapping as ``kind``."""
    try:
        return msgspec.convert(data, kind, strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {exc}") from None


SECRET_KEYS = frozenset({"password"})
"""Keys left out of :func:`config_hash`: the hash is published, a password must not be guessable from it."""


def config_hash(cfg: Any) -> str:
    """Short sha256 of the canonical JSON of a config (secrets left out), for provenance."""
    blob = msgspec.json.encode(_without_secrets(msgspec.to_builtins(cfg, order="sorted")))
    return hashlib.sha256(blob).hexdigest()[:16]


def _without_secrets(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _without_secrets(v) for k, v in obj.items() if k not in SECRET_KEYS}
    if isinstance(obj, list):
        return [_without_secrets(v) for v in obj]
    return obj
