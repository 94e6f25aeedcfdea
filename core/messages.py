"""Wire messages: typed, versioned, validated at the boundary with msgspec.

Every message carries a ``schema`` key naming its type and version
(``"shotline.detection/1"``; a msgspec tag, so it is required on decode and
written first on encode); a receiver decodes with :func:`decode`, which
rejects unknown fields, wrong types, missing or other schemas and non-finite
numbers with a
:class:`MessageError` that says what is wrong and where.

Units: absolute times are integer nanoseconds since the Unix epoch, UTC
(fields ending ``_ns``); durations are float seconds (``_s``); positions are
WGS84 degrees and metres; levels are dB (``_dbfs`` re digital full scale,
``_db_spl`` re 20 µPa).
"""

from __future__ import annotations

import math
from typing import Literal, TypeVar

import msgspec

SCHEMA_VERSION = 1

TimeQuality = Literal["pps", "ntp", "unsynced", "replay"]
"""How a node's clock is disciplined.

``pps``: GPS pulse-per-second (microseconds); ``ntp``: network time
(milliseconds: may corroborate a shot, never enters a TDOA solution);
``unsynced``: free-running; ``replay``: time taken from a recording's metadata.
"""

TRUSTED_TIME_QUALITIES: frozenset[str] = frozenset({"pps", "replay"})
"""Qualities whose onset times may enter a TDOA solution."""

EventClass = Literal["gunshot", "firework", "other", "unknown"]


class _Msg(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=False, kw_only=True):
    """Base: every message forbids unknown fields and non-finite numbers."""

    @property
    def schema(self) -> str | None:
        """The message's schema string (``"shotline.detection/1"``), the ``schema`` key on the wire."""
        return type(self).__struct_config__.tag  # type: ignore[return-value]

    def _check_finite(self) -> None:
        # JSON has no inf/NaN (msgspec would write null, which the receiver
        # then rejects): refuse them where the message is made. Every message
        # built or decoded runs this, so each class gets its own compiled check
        # at first use (installed on the class, replacing this method).
        cls = type(self)
        check = _compile_finite_check(cls)
        if cls is not _Msg:  # the base keeps this method, which its subclasses start from
            cls._check_finite = check  # type: ignore[method-assign]
        check(self)

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "_check_finite" not in cls.__dict__:
            # A subclass has fields of its own: not its parent's compiled check.
            cls._check_finite = _Msg._check_finite  # type: ignore[method-assign]

    def __post_init__(self) -> None:
        self._check_finite()


def _raise_if_not_finite(msg: _Msg) -> None:
    """The rule of :meth:`_Msg._check_finite`, field by field: raise for the first offending field.

    Runtime values are checked, whatever the declared type (msgspec does not
    type-check at construction): a float must be finite, an int in a field
    named ``*_ns`` must fit a signed 64-bit integer of nanoseconds.
    """
    for name in msg.__struct_fields__:
        v = getattr(msg, name)
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"{name} must be a finite number, got {v}")
        if isinstance(v, int) and not isinstance(v, bool) and name.endswith("_ns") and not 0 <= v < 2**63:
            raise ValueError(f"{name} must fit a signed 64-bit integer of nanoseconds")


def _compile_finite_check(cls: type[_Msg]):
    """:func:`_raise_if_not_finite` unrolled over ``cls``'s fields (a plain attribute read and
    an isinstance per field instead of a loop of getattr by name); an offending value is
    reported by :func:`_raise_if_not_finite` itself, so the error is the same."""
    lines = ["def _check_finite(self):"]
    for name in cls.__struct_fields__:
        assert name.isidentifier(), name
        lines.append(f"    v = self.{name}")
        lines.append("    if isinstance(v, float) and not isfinite(v): return report(self)")
        if name.endswith("_ns"):
            lines.append(
                "    if isinstance(v, int) and not isinstance(v, bool) and not 0 <= v < NS_END: return report(self)"
            )
    if len(lines) == 1:
        lines.append("    pass")
    namespace = {"isfinite": math.isfinite, "report": _raise_if_not_finite, "NS_END": 2**63}
    exec("\n".join(lines), namespace)  # the source holds the class's field names only
    check = namespace["_check_finite"]
    check.__qualname__ = f"{cls.__qualname__}._check_finite"
    return check


class Position(_Msg, kw_only=True):
    """A WGS84 position: latitude and longitude in degrees, altitude in metres (ellipsoidal)."""

    lat_deg: float
    lon_deg: float
    alt_m: float = 0.0

    def __post_init__(self) -> None:
        self._check_finite()
        if not -90.0 <= self.lat_deg <= 90.0:
            raise ValueError(f"lat_deg {self.lat_deg} outside [-90, 90]")
        if not -180.0 <= self.lon_deg <= 180.0:
            raise ValueError(f"lon_deg {self.lon_deg} outside [-180, 180]")


class Provenance(_Msg, kw_only=True):
    """Where an output came from: package version, model sha256 (if any) and config hash."""

    version: str
    config_hash: str = ""
    model_sha256: str | None = None


class ClockState(_Msg, kw_only=True):
    """A node's clock: quality, last measured offset to UTC (s) and PPS lock."""

    quality: TimeQuality
    offset_s: float | None = None
    pps_locked: bool = False
    fit_residual_s: float | None = None
    """RMS residual of the sample-index-to-UTC fit, seconds (live capture)."""
    n_steps: int = 0
    """Clock steps detected since start (each refits the time base and is flagged)."""


class Detection(_Msg, kw_only=True, tag_field="schema", tag="shotline.detection/1"):
    """One node's observation of one impulsive sound (a *pick*).

    ``detection_id`` is stable (derived from node and sample index), so a
    re-published detection is recognised as a duplicate.
    """

    detection_id: str
    site: str
    node_id: str
    onset_time_ns: int
    onset_sigma_s: float
    time_quality: TimeQuality
    peak_dbfs: float
    snr_db: float
    noise_floor_dbfs: float
    clipped: bool = False
    peak_db_spl: float | None = None
    scores: dict[str, float] | None = None
    provenance: Provenance | None = None

    def __post_init__(self) -> None:
        self._check_finite()
        if self.onset_time_ns <= 0:
            raise ValueError("onset_time_ns must be positive nanoseconds since the epoch")
        if not self.onset_sigma_s >= 0.0:
            raise ValueError("onset_sigma_s must be >= 0 seconds")
        if not self.detection_id:
            raise ValueError("detection_id must not be empty")


class NodeStatus(_Msg, kw_only=True, tag_field="schema", tag="shotline.node_status/1"):
    """Retained birth message / last will of a node."""

    site: str
    node_id: str
    state: Literal["online", "offline"]
    time_ns: int = 0
    position: Position | None = None
    sample_rate_hz: int | None = None
    clock: ClockState | None = None
    provenance: Provenance | None = None
    clip_port: int | None = None
    """TCP port of the node's clip server (``GET /clips/<detection_id>.flac``), None when off."""


class NodeHealth(_Msg, kw_only=True, tag_field="schema", tag="shotline.node_health/1"):
    """Periodic node health (not retained, QoS 0)."""

    site: str
    node_id: str
    time_ns: int
    noise_floor_dbfs: float | None = None
    clipping_per_min: float = 0.0
    detections_per_min: float = 0.0
    cpu_load_pct: float | None = None
    temperature_c: float | None = None
    disk_free_mb: float | None = None
    clock: ClockState | None = None
    outbox_depth: int = 0
    uptime_s: float = 0.0
    capture_gaps: int = 0
    """Audio gaps (device lost, buffer overflow) since start."""
    capture_gap_s: float = 0.0
    """Total length of those gaps, seconds."""
    outbox_evicted: int = 0
    """Detections evicted from the full outbox (oldest first) since the outbox was created."""
    candidates_rejected: int = 0
    """Candidates below the classifier's gunshot score, counted and not published, since start."""


class Ellipse(_Msg, kw_only=True):
    """A 1-sigma uncertainty ellipse: semi-axes in metres, azimuth of the major axis in degrees clockwise from north."""

    semi_major_m: float
    semi_minor_m: float
    azimuth_deg: float


class NodeResidual(_Msg, kw_only=True):
    """One node's contribution to a shot: observed minus predicted arrival (s) and whether it was used."""

    node_id: str
    detection_id: str
    residual_s: float
    used: bool


class Shot(_Msg, kw_only=True):
    """A located source (an *origin*) with its uncertainty and per-node residuals."""

    shot_id: str
    time_ns: int
    position: Position
    cep50_m: float
    cep95_m: float
    ellipse: Ellipse
    speed_of_sound_mps: float
    n_nodes: int
    rms_residual_s: float
    residuals: list[NodeResidual]
    scores: dict[str, float] | None = None


class Cadence(_Msg, kw_only=True):
    """Timing of one shooter's rounds: intervals between consecutive shots, seconds."""

    median_interval_s: float
    min_interval_s: float
    max_interval_s: float
    rate_hz: float
    """Rounds per second at the median interval."""


class Shooter(_Msg, kw_only=True):
    """Shots of one incident that come from one place (one shooter)."""

    position: Position
    rounds: int
    shot_ids: list[str]
    automatic_fire: bool = False
    cadence: Cadence | None = None
    """None with a single round."""


class Review(_Msg, kw_only=True):
    """An operator's decision on an incident (review page)."""

    decision: Literal["confirmed", "dismissed", "relabelled"]
    reviewer: str
    time_ns: int
    label: EventClass | None = None
    """The class the operator assigned (``relabelled``)."""
    note: str = ""


class Incident(_Msg, kw_only=True, tag_field="schema", tag="shotline.incident/1"):
    """Shots from one place within a time gap; published when new, updated and closed."""

    site: str
    incident_id: str
    state: Literal["new", "updated", "closed"]
    revision: int
    published_ns: int
    first_shot_ns: int
    last_shot_ns: int
    rounds: int
    position: Position
    cep95_m: float
    event_class: EventClass = "unknown"
    class_scores: dict[str, float] | None = None
    automatic_fire: bool = False
    """True when any shooter's cadence is that of automatic fire."""
    shots: list[Shot] = msgspec.field(default_factory=list)
    shooters: list[Shooter] = msgspec.field(default_factory=list)
    """Shots grouped by place; more than one entry when several shooters fired."""
    review: Review | None = None
    """The latest operator review; a review is published as a new revision (state unchanged)."""
    provenance: Provenance | None = None


class HubStatus(_Msg, kw_only=True, tag_field="schema", tag="shotline.hub_status/1"):
    """Retained hub availability."""

    site: str
    state: Literal["online", "offline"]
    time_ns: int = 0
    provenance: Provenance | None = None


class HubMessageCounts(_Msg, kw_only=True):
    """Messages the hub took in since it started: ``accepted`` by topic kind (``status``, ``health``,
    ``detection``) and ``dropped`` by reason (``bad_topic``, ``malformed``, ``topic_mismatch``,
    ``other_site``, ``duplicate``; docs/mqtt.md, "What the hub does with bad input")."""

    accepted: dict[str, int] = msgspec.field(default_factory=dict)
    dropped: dict[str, int] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        for what, counts in (("accepted", self.accepted), ("dropped", self.dropped)):
            if any(v < 0 for v in counts.values()):
                raise ValueError(f"{what} counts must be >= 0")


class HubDetectionCounts(_Msg, kw_only=True):
    """Detections the hub took in but could not use as they came, since it started."""

    late: int = 0
    """Older than the wait window on arrival: they could only join shots already made."""
    held_unknown_node: int = 0
    """Held now, from nodes whose position the hub does not know yet (a gauge)."""
    dropped_unknown_node: int = 0
    """Dropped after ``unknown_node_hold_s`` without their node's position."""

    def __post_init__(self) -> None:
        if min(self.late, self.held_unknown_node, self.dropped_unknown_node) < 0:
            raise ValueError("detection counts must be >= 0")


class DeliveryDelay(_Msg, kw_only=True):
    """Receipt at the hub less onset (s) over the latest detections (up to 4,096): the nodes' and the
    network's latency plus any backlog; negative where a node's clock runs ahead of the hub's. Null
    percentiles without any detection."""

    n: int = 0
    p50_s: float | None = None
    p95_s: float | None = None
    max_s: float | None = None

    def __post_init__(self) -> None:
        self._check_finite()
        if self.n < 0:
            raise ValueError("n must be >= 0")


class HubNodeCounts(_Msg, kw_only=True):
    """The nodes the hub knows (from status messages and its config) by their last status, and those whose
    timing residuals flag a clock or position error (docs/calibration.md)."""

    online: int = 0
    offline: int = 0
    """Their last status said offline (a clean shutdown, or the broker's last will when the link died)."""
    no_status: int = 0
    """Known from the config (``[nodes]``) or from their detections or health, without a status message yet."""
    timing_flagged: list[str] = msgspec.field(default_factory=list)
    """Ids of the nodes flagged ``clock``, ``position`` or ``outliers`` by their residual statistics."""

    def __post_init__(self) -> None:
        if min(self.online, self.offline, self.no_status) < 0:
            raise ValueError("node counts must be >= 0")


class HubSinkCounts(_Msg, kw_only=True):
    """The sinks' delivery queue (webhooks, CAP, GeoJSON; docs/hub-store-and-sinks.md): all zero without sinks."""

    pending: int = 0
    """Deliveries not yet made (due now, delayed by a geofence's delay, or retrying)."""
    retrying: int = 0
    """Pending deliveries that failed at least once (their receiver down or refusing them)."""
    retrying_for_s: float | None = None
    """How long ago (s) the oldest retrying delivery was queued; null when none retries."""
    failed: int = 0
    """Deliveries given up (kept with their error), within the store's ``keep_deliveries_days``."""
    retry_warn_s: float = 300.0
    """How long (s) a delivery may keep retrying before the hub's checks warn (a receiver's restart takes less)."""

    def __post_init__(self) -> None:
        self._check_finite()
        if min(self.pending, self.retrying, self.failed) < 0:
            raise ValueError("sink counts must be >= 0")


class HubHealth(_Msg, kw_only=True, tag_field="schema", tag="shotline.hub_health/1"):
    """Periodic hub health (not retained, QoS 0): what it took in and dropped, and whether it keeps up.

    The same content as the review page's ``GET /api/hub`` (``HubService.health``).
    """

    site: str
    time_ns: int
    """Hub wall clock when the message was built, ns UTC."""
    started_ns: int = 0
    """When the hub started, ns UTC (the counters count from there)."""
    busy_fraction: float = 0.0
    """Share of the last ``busy_window_s`` the hub spent handling messages and ticks, 0-1; near 1 it
    cannot keep up (detections then queue at the broker and arrive late)."""
    busy_window_s: float = 60.0
    busy_warn_fraction: float = 0.8
    """The busy fraction past which the hub logs a warning (and the review page turns orange)."""
    messages: HubMessageCounts = msgspec.field(default_factory=HubMessageCounts)
    detections: HubDetectionCounts = msgspec.field(default_factory=HubDetectionCounts)
    nodes: HubNodeCounts = msgspec.field(default_factory=HubNodeCounts)
    sinks: HubSinkCounts = msgspec.field(default_factory=HubSinkCounts)
    delivery_delay: DeliveryDelay = msgspec.field(default_factory=DeliveryDelay)
    shots: int = 0
    """Shots located since the hub started."""
    incidents_published: int = 0
    """Incident messages published since the hub started (new, updated and closed revisions)."""
    open_incidents: int = 0
    publish_latency_p99_ms: float | None = None
    """Last detection received to incident published, 99th percentile over the latest 1,000
    publications, ms (null before the first)."""
    provenance: Provenance | None = None

    def __post_init__(self) -> None:
        self._check_finite()
        if not 0.0 <= self.busy_fraction <= 1.0:
            raise ValueError(f"busy_fraction {self.busy_fraction} outside [0, 1]")
        if not self.busy_window_s > 0.0:
            raise ValueError("busy_window_s must be > 0 seconds")
        if min(self.shots, self.incidents_published, self.open_incidents) < 0:
            raise ValueError("shots, incidents_published and open_incidents must be >= 0")


Message = Detection | NodeStatus | NodeHealth | Incident | HubStatus | HubHealth
M = TypeVar("M", Detection, NodeStatus, NodeHealth, Incident, HubStatus, HubHealth)


class MessageError(ValueError):
    """A payload that is not a valid message of the expected type."""


_encoder = msgspec.json.Encoder()
_decoders: dict[type, msgspec.json.Decoder] = {}


class _NoMessage(msgspec.Struct, tag_field="schema", tag="shotline.none/0"):
    """Never sent. msgspec requires the tag only when it must choose within a
    union, so decoding into ``kind | _NoMessage`` makes ``schema`` mandatory."""


def encode(msg: Message) -> bytes:
    """Serialise a message to compact JSON bytes."""
    return _encoder.encode(msg)


def decode(payload: bytes | str, kind: type[M]) -> M:
    """Parse and validate ``payload`` as a ``kind`` message.

    Raises :class:`MessageError` naming the offending field (msgspec reports a
    JSON path such as ``$.onset_time_ns``).
    """
    dec = _decoders.get(kind)
    if dec is None:
        dec = _decoders[kind] = msgspec.json.Decoder(kind | _NoMessage)  # type: ignore[operator]
    try:
        msg = dec.decode(payload)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise MessageError(f"invalid {kind.__name__}: {exc}") from None
    except UnicodeError as exc:
        raise MessageError(f"invalid {kind.__name__}: not UTF-8 ({exc.reason})") from None
    except RecursionError:
        raise MessageError(f"invalid {kind.__name__}: JSON nested too deeply") from None
    if isinstance(msg, _NoMessage):
        raise MessageError(f"invalid {kind.__name__}: schema 'shotline.none/0' is not a message")
    return msg
