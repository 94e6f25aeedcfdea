"""MQTT topic names (see docs/mqtt.md).

::

    shotline/v1/<site>/node/<node>/status     sensor, QoS 1, retained (birth + last will)
    shotline/v1/<site>/node/<node>/health     sensor, QoS 0
    shotline/v1/<site>/node/<node>/detection  sensor, QoS 1
    shotline/v1/<site>/incident               hub, QoS 1
    shotline/v1/<site>/hub/status             hub, QoS 1, retained
    shotline/v1/<site>/hub/health             hub, QoS 0
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Literal

PREFIX = "shotline/v1"
NodeKind = Literal["status", "health", "detection"]
NODE_KINDS: tuple[str, ...] = ("status", "health", "detection")

# Site and node ids become topic levels: no wildcards, separators or spaces.
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class TopicError(ValueError):
    """A topic or an id that does not fit the Shotline topic tree."""


def check_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it is a valid site or node id, else raise :class:`TopicError`."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise TopicError(
            f"{what} {value!r} must be 1-64 characters of letters, digits, '_', '.', '-' "
            "and start with a letter or digit"
        )
    return value


def node_topic(site: str, node_id: str, kind: NodeKind) -> str:
    """``shotline/v1/<site>/node/<node>/<kind>``."""
    if kind not in NODE_KINDS:
        raise TopicError(f"unknown node topic kind {kind!r}; expected one of {NODE_KINDS}")
    return f"{PREFIX}/{check_id(site, 'site')}/node/{check_id(node_id, 'node_id')}/{kind}"


def node_filter(site: str, kind: NodeKind | Literal["+"] = "+") -> str:
    """Subscription filter for one kind (or all kinds) of node topic from every node of a site."""
    if kind != "+" and kind not in NODE_KINDS:
        raise TopicError(f"unknown node topic kind {kind!r}; expected one of {NODE_KINDS} or '+'")
    return f"{PREFIX}/{check_id(site, 'site')}/node/+/{kind}"


def incident_topic(site: str) -> str:
    """``shotline/v1/<site>/incident``."""
    return f"{PREFIX}/{check_id(site, 'site')}/incident"


def hub_status_topic(site: str) -> str:
    """``shotline/v1/<site>/hub/status``."""
    return f"{PREFIX}/{check_id(site, 'site')}/hub/status"


def hub_health_topic(site: str) -> str:
    """``shotline/v1/<site>/hub/health``."""
    return f"{PREFIX}/{check_id(site, 'site')}/hub/health"


@dataclass(frozen=True)
class ParsedTopic:
    """A topic taken apart: ``kind`` is a node kind, ``"incident"``, ``"hub_status"`` or ``"hub_health"``."""

    site: str
    kind: str
    node_id: str | None = None


@functools.lru_cache(maxsize=65536)
def parse_topic(topic: str) -> ParsedTopic:
    """Split a Shotline topic into site, node and kind; raise :class:`TopicError` otherwise.

    Remembered per topic (a hub parses each node's few topics over and over; a city's nodes'
    topics fit the cache; a topic that raises is not remembered). The result is immutable.
    """
    parts = topic.split("/")
    if len(parts) < 4 or "/".join(parts[:2]) != PREFIX:
        raise TopicError(f"not a Shotline topic: {topic!r}")
    site = check_id(parts[2], "site")
    rest = parts[3:]
    if len(rest) == 3 and rest[0] == "node" and rest[2] in NODE_KINDS:
        return ParsedTopic(site, rest[2], check_id(rest[1], "node_id"))
    if rest == ["incident"]:
        return ParsedTopic(site, "incident")
    if rest == ["hub", "status"]:
        return ParsedTopic(site, "hub_status")
    if rest == ["hub", "health"]:
        return ParsedTopic(site, "hub_health")
    raise TopicError(f"unknown Shotline topic: {topic!r}")
