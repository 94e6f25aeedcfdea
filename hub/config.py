"""Hub configuration (TOML), validated with msgspec. Reference: docs/config.md."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import msgspec

from shotline.core.config import BrokerSettings
from shotline.core.topics import check_id

from .web.settings import WebSettings


def speed_of_sound_mps(temperature_c: float) -> float:
    """Speed of sound in dry air, m/s, at ``temperature_c`` degrees Celsius."""
    return 331.3 * math.sqrt(1.0 + temperature_c / 273.15)


class NodeOverride(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A surveyed node position that takes precedence over the node's own status message."""

    lat_deg: float
    """Latitude, degrees WGS84."""
    lon_deg: float
    """Longitude, degrees WGS84."""
    alt_m: float = 0.0
    """Altitude, metres above the WGS84 ellipsoid."""

    def __post_init__(self) -> None:
        if not -90.0 <= self.lat_deg <= 90.0:
            raise ValueError(f"lat_deg {self.lat_deg} outside [-90, 90]")
        if not -180.0 <= self.lon_deg <= 180.0:
            raise ValueError(f"lon_deg {self.lon_deg} outside [-180, 180]")


class LocationSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Multilateration settings."""

    temperature_c: float = 15.0
    """Air temperature, °C, giving the speed of sound (331.3·sqrt(1 + T/273.15) m/s)."""
    speed_of_sound_mps: float | None = None
    """Fixed speed of sound, m/s; overrides temperature_c when set."""
    timing_sigma_s: float = 100e-6
    """Assumed 1-sigma error of one onset time, seconds (floor for the node's own estimate)."""
    source_height_m: float = 1.5
    """Assumed source height for 2.5-D solutions, metres above ground_alt_m (or, when that is not
    set, above the local frame's origin: the first node position the hub learns)."""
    ground_alt_m: float | None = None
    """Altitude of the street level, metres above the WGS84 ellipsoid (the datum of node positions),
    that source_height_m is measured from. Set it for any 2.5-D deployment: unset, the source height
    is measured from the first node learnt, a microphone several metres up a pole or a roof."""
    mode: Literal["2d", "2.5d", "3d", "auto"] = "2.5d"
    """Unknowns of a fix: "2.5d" (default) (x, y, t0) with the source at source_height_m and every
    node's height used exactly; "2d" planar, all heights ignored; "3d" (x, y, z, t0); "auto" 3-D when
    the participating nodes' vertical spread reaches min_vertical_spread_m, else 2.5-D."""
    min_vertical_spread_m: float = 20.0
    """Standard deviation of node heights (m) from which "auto" solves the source height."""
    wind_enu_mps: list[float] | None = None
    """Uniform wind (east, north) in m/s, the direction the air moves to; None for still air."""
    solve_speed_of_sound: bool = False
    """Also solve the speed of sound; kept only where the geometry determines it (its 1-sigma
    below max_speed_of_sound_sigma_mps), otherwise the configured value is used."""
    max_speed_of_sound_sigma_mps: float = 2.0
    """Largest 1-sigma (m/s) of a solved speed of sound that is kept."""

    def __post_init__(self) -> None:
        _positive(self, "timing_sigma_s", "min_vertical_spread_m", "max_speed_of_sound_sigma_mps")
        if self.wind_enu_mps is not None and (
            len(self.wind_enu_mps) != 2 or not all(math.isfinite(v) and abs(v) < 60.0 for v in self.wind_enu_mps)
        ):
            raise ValueError("wind_enu_mps must be [east, north], each finite and below 60 m/s")
        if not -60.0 <= self.temperature_c <= 60.0:
            raise ValueError(f"temperature_c {self.temperature_c} outside [-60, 60] °C")
        if self.speed_of_sound_mps is not None and not 250.0 <= self.speed_of_sound_mps <= 450.0:
            raise ValueError(f"speed_of_sound_mps {self.speed_of_sound_mps} outside [250, 450] m/s")

    @property
    def c_mps(self) -> float:
        """The speed of sound in use, m/s."""
        if self.speed_of_sound_mps is not None:
            return self.speed_of_sound_mps
        return speed_of_sound_mps(self.temperature_c)


class AssociationSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Association of detections into shots."""

    min_nodes: int = 4
    """Fewest nodes that locate a shot (4 for 2-D with unknown emission time)."""
    max_range_m: float = 1500.0
    """Farthest a shot is assumed audible from a node, metres (bounds the hypothesis search)."""
    grid_step_m: float = 25.0
    """Spacing of the coarse hypothesis grid, metres (refined 5x twice around the best points, to a 1 m step at 25 m)."""
    match_tolerance_s: float = 0.005
    """Extra tolerance when matching a detection to a predicted arrival, seconds (pick and model error)."""
    strict_fit_max_dof: int = 2
    """New shots with at most this many redundant picks (2-D: 4 or 5 nodes) must pass a chi-square test."""
    min_fit_p: float = 1e-3
    """... at this p-value, with each pick's timing sigma (``[location] timing_sigma_s`` or the node's own)."""
    max_silent_fraction: float = 0.25
    """Largest share of in-range nodes that are past a shot's predicted arrival yet heard nothing."""
    min_audible_range_m: float = 400.0
    """Silent nodes count against a hypothesis out to its farthest supporting node, and at least this
    far, metres (at most max_range_m): a quiet source is not expected at nodes beyond its reach."""
    max_rms_residual_s: float = 0.002
    """Largest RMS residual of an accepted shot, seconds."""
    pending_s: float | None = None
    """How long an unassociated detection waits for partners, seconds (default: array size / c + 1 s)."""
    reverb_s: float = 1.0
    """Reverberation window, seconds: a pick this soon after a louder pick at the same node may be
    that sound's echo (see reverb_drop_db); 0 turns the test off."""
    reverb_drop_db: float = 6.0
    """A pick at least this much weaker (peak level, dB) than a pick of the same node less than
    reverb_s before it is a *tail* pick: it never seeds or supports a new shot, it may still join one."""

    def __post_init__(self) -> None:
        if self.min_nodes < 4:
            raise ValueError("min_nodes must be at least 4 (a 2-D fix with unknown emission time)")
        _positive(self, "max_range_m", "grid_step_m", "max_rms_residual_s", "min_audible_range_m")
        if self.match_tolerance_s < 0:
            raise ValueError("match_tolerance_s must be >= 0 seconds")
        if not 0.0 <= self.max_silent_fraction <= 1.0:
            raise ValueError("max_silent_fraction must be in [0, 1]")
        if self.pending_s is not None:
            _positive(self, "pending_s")
        if self.reverb_s < 0 or self.reverb_drop_db < 0:
            raise ValueError("reverb_s and reverb_drop_db must be >= 0")


class IncidentSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Grouping of shots into incidents."""

    gap_s: float = 20.0
    """A shot within this many seconds of an incident's last shot can join it."""
    radius_m: float = 60.0
    """... and must lie within this distance of the incident's position, metres."""
    automatic_rate_hz: float = 6.0
    """A burst with a median cadence above this rate (rounds per second) is flagged automatic."""
    refine_interval_s: float = 1.0
    """An incident whose shots were only refined (re-located with more picks) is published again at most this
    often, seconds of the hub's clock (its ticks); a new round publishes it at once, with every refinement so
    far, and so does closing it. 0: publish every refinement."""

    def __post_init__(self) -> None:
        _positive(self, "gap_s", "radius_m", "automatic_rate_hz")
        if not self.refine_interval_s >= 0:
            raise ValueError(f"refine_interval_s must be >= 0 seconds, got {self.refine_interval_s}")


class StoreSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The incident store (SQLite). Reference: docs/hub-store-and-sinks.md."""

    path: str = ":memory:"
    """SQLite database file, e.g. ``/var/lib/shotline/hub.sqlite``; ``":memory:"`` keeps nothing across restarts (demo, tests)."""
    wal: bool = True
    """Open a file database in WAL mode (readers such as the review UI never block the hub)."""
    detections: Literal["associated", "all", "none"] = "associated"
    """Which detections are stored: those referenced by a stored shot, every accepted one, or none."""
    detection_cache_s: float = 300.0
    """How long an accepted detection is kept in memory waiting for a shot to reference it, seconds."""
    keep_incidents_days: float | None = None
    """Retention: closed incidents whose latest revision and review are older than this many days are deleted with
    their shots, residuals, revisions, reviews and the detections only they referenced. Unset or 0: kept for ever."""
    keep_detections_days: float | None = None
    """Retention: detections received longer ago than this many days that no stored shot references (kept by
    ``detections = "all"``). Unset or 0: kept for ever."""
    keep_deliveries_days: float | None = 90.0
    """Retention: sink deliveries delivered or given up longer ago than this many days (pending ones stay).
    0: kept for ever."""
    journal_keep_s: float = 3600.0
    """A file store keeps every message the hub takes in, on disk before it is handled, in the folder
    ``<path>.journal`` for this many seconds; a restarted hub replays it (docs/hub-store-and-sinks.md,
    "Restart"). 0: no journal (a hub killed then loses the detections it had not yet made a shot of)."""
    recover_s: float = 60.0
    """How far back (s of receive time) a restarted hub replays its journal, and at least from the first shot of
    every incident the store holds open. Longer than the association's wait window."""

    def journal_path(self) -> Path | None:
        """The journal's folder, or None (a store in memory, or ``journal_keep_s = 0``)."""
        if self.path == ":memory:" or not self.journal_keep_s:
            return None
        return Path(self.path + ".journal")

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("path must not be empty (use \":memory:\" for a store that keeps nothing)")
        _positive(self, "detection_cache_s")
        for name in ("journal_keep_s", "recover_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0 seconds, got {getattr(self, name)}")
        if self.journal_keep_s and self.journal_keep_s < self.recover_s:
            raise ValueError(f"journal_keep_s ({self.journal_keep_s}) must be at least recover_s ({self.recover_s})")
        for name in ("keep_incidents_days", "keep_detections_days", "keep_deliveries_days"):
            days = getattr(self, name)
            if days is not None and not days >= 0:
                raise ValueError(f"{name} must be >= 0 days (0: keep for ever), got {days}")

    def prune_before_ns(self, now_ns: int) -> dict[str, int | None]:
        """The cut-offs of :meth:`~shotline.hub.store.IncidentStore.prune` at ``now_ns`` (None: keep that kind)."""

        def cut(days: float | None) -> int | None:
            # (Not before the epoch: a retention of centuries keeps everything, and stays a 64-bit integer.)
            return None if not days else max(0, now_ns - int(days * 86400e9))

        return {"incidents_before_ns": cut(self.keep_incidents_days),
                "detections_before_ns": cut(self.keep_detections_days),
                "deliveries_before_ns": cut(self.keep_deliveries_days)}


class GeofenceSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A named area (WGS84) that limits a sink: inline polygons and/or a GeoJSON file."""

    polygons: list[list[list[float]]] = msgspec.field(default_factory=list)
    """Polygons, each a list of ``[lon_deg, lat_deg]`` vertices (GeoJSON order; closing vertex optional)."""
    file: str | None = None
    """GeoJSON file (geometry, Feature or FeatureCollection) whose Polygon/MultiPolygon geometries join the area."""

    def __post_init__(self) -> None:
        if not self.polygons and self.file is None:
            raise ValueError("a geofence needs polygons or a file")
        for i, poly in enumerate(self.polygons):
            if len(poly) < 3:
                raise ValueError(f"polygons[{i}] needs at least 3 vertices, got {len(poly)}")
            for v in poly:
                if len(v) != 2:
                    raise ValueError(f"polygons[{i}]: each vertex is [lon_deg, lat_deg], got {v}")
                if not (-180.0 <= v[0] <= 180.0 and -90.0 <= v[1] <= 90.0):
                    raise ValueError(f"polygons[{i}]: vertex {v} is not [lon_deg, lat_deg] within WGS84 ranges")


class WebhookSink(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One HTTP(S) receiver of incidents: JSON POST, HMAC-SHA256 signed, retried from a durable queue."""

    name: str
    """Sink id (letters, digits, ``_.-``): names the sink in logs, the queue and the ``X-Shotline-Sink`` header."""
    url: str
    """``http://`` or ``https://`` URL that receives a POST per incident message."""
    format: Literal["json", "cap", "geojson"] = "json"
    """Body: the incident message (JSON), a CAP 1.2 alert (XML) or a GeoJSON FeatureCollection."""
    secret_env: str | None = None
    """Environment variable holding the shared HMAC secret (kept out of the config hash)."""
    secret_file: str | None = None
    """File holding the shared HMAC secret (surrounding whitespace stripped)."""
    states: list[Literal["new", "updated", "closed"]] = msgspec.field(
        default_factory=lambda: ["new", "updated", "closed"]
    )
    """Incident lifecycle states sent to this sink."""
    geofences: list[str] = msgspec.field(default_factory=list)
    """Names of ``[sinks.geofences.<name>]`` areas; an incident is sent when it or one of its shots lies
    in one of them (later revisions of an incident already sent follow it). Empty: everywhere."""
    delay_s: float = 0.0
    """Hold each message this long before the first delivery attempt, seconds (an incident dismissed
    by an operator in the meantime is not sent)."""
    precision_m: float = 0.0
    """Publish positions snapped to a grid of this size, metres (0: exact; ~150: block level);
    uncertainties are widened to match and per-node residuals are left out."""
    timeout_s: float = 10.0
    """HTTP request timeout, seconds."""

    def __post_init__(self) -> None:
        check_id(self.name, "sink name")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {self.url!r}")
        if self.secret_env is not None and self.secret_file is not None:
            raise ValueError("give secret_env or secret_file, not both")
        if not self.states:
            raise ValueError("states must name at least one of new, updated, closed")
        if self.delay_s < 0 or self.precision_m < 0:
            raise ValueError("delay_s and precision_m must be >= 0")
        _positive(self, "timeout_s")


class CapSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Fields of the CAP 1.2 alerts made for ``format = "cap"`` sinks."""

    sender: str = "shotline@localhost"
    """CAP ``sender``: a globally unique id of this hub, e.g. ``shotline@hub.example.org`` (no spaces, commas, < or &)."""
    sender_name: str = "Shotline acoustic gunshot detection"
    """CAP ``senderName``: human-readable name of the issuing organisation."""
    status: Literal["Actual", "Exercise", "System", "Test", "Draft"] = "Actual"
    """CAP ``status``; ``Test`` or ``Exercise`` for drills and demos."""
    expires_s: float = 3600.0
    """CAP ``expires`` = last shot time + this many seconds."""
    web: str | None = None
    """CAP ``web``: base URL of the review page; the incident id is appended."""

    def __post_init__(self) -> None:
        if not self.sender or any(ch in self.sender for ch in " ,<&"):
            raise ValueError("sender must be non-empty, without spaces, commas, '<' or '&'")
        _positive(self, "expires_s")


class SinkSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Where incidents go besides the MQTT incident topic. Off unless webhooks are listed."""

    webhooks: list[WebhookSink] = msgspec.field(default_factory=list)
    """HTTP receivers (``[[sinks.webhooks]]``)."""
    geofences: dict[str, GeofenceSettings] = msgspec.field(default_factory=dict)
    """Named areas that webhooks may be limited to (``[sinks.geofences.<name>]``)."""
    cap: CapSettings = msgspec.field(default_factory=CapSettings)
    retry_base_s: float = 1.0
    """First retry delay, seconds; doubled on each failure, with random jitter (x0.5-1)."""
    retry_max_s: float = 300.0
    """Longest retry delay, seconds."""
    give_up_after_s: float = 86400.0
    """A message still undelivered this long after it was queued is marked failed, seconds."""

    def __post_init__(self) -> None:
        _positive(self, "retry_base_s", "retry_max_s", "give_up_after_s")
        names = [w.name for w in self.webhooks]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"webhook names must be unique, repeated: {sorted(dup)}")
        for name in self.geofences:
            check_id(name, "geofence name")
        for w in self.webhooks:
            missing = [g for g in w.geofences if g not in self.geofences]
            if missing:
                raise ValueError(f"webhook {w.name!r} names unknown geofence(s) {missing}; define [sinks.geofences.<name>]")


class NodeQualitySettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Per-node timing residual statistics (node registry)."""

    window: int = 200
    """Residuals kept per node (the most recent shots it took part in)."""
    min_shots: int = 8
    """Fewest residuals before a node can be flagged."""
    clock_bias_s: float = 0.0005
    """A node whose robust mean residual exceeds this (s, and 3 standard errors) is flagged "clock"."""
    position_offset_m: float = 3.0
    """A node whose residuals fit a position offset larger than this (m, and 3 standard errors),
    seen from sources in different directions, is flagged "position"."""
    max_rejected_fraction: float = 0.8
    """A node whose picks are rejected by the solutions more often than this is flagged "outliers"."""

    def __post_init__(self) -> None:
        if self.window < 4 or self.min_shots < 3 or self.min_shots > self.window:
            raise ValueError("node_quality needs window >= 4 and 3 <= min_shots <= window")
        _positive(self, "clock_bias_s", "position_offset_m", "max_rejected_fraction")


class HubConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The hub's whole configuration."""

    site: str
    """Site id (topic level)."""
    broker: BrokerSettings = msgspec.field(default_factory=lambda: BrokerSettings(username="hub"))
    client_id: str = "shotline-hub"
    """MQTT client id; stable so that the broker keeps the hub's persistent session."""
    location: LocationSettings = msgspec.field(default_factory=LocationSettings)
    association: AssociationSettings = msgspec.field(default_factory=AssociationSettings)
    incidents: IncidentSettings = msgspec.field(default_factory=IncidentSettings)
    node_quality: NodeQualitySettings = msgspec.field(default_factory=lambda: NodeQualitySettings())
    """Per-node timing residual statistics that flag a bad clock or position (``[node_quality]``)."""
    web: WebSettings = msgspec.field(default_factory=WebSettings)
    """Review page (``[web]``): docs/operator-guide.md."""
    nodes: dict[str, NodeOverride] = msgspec.field(default_factory=dict)
    """Surveyed positions by node id, overriding status messages."""
    unknown_node_hold_s: float = 30.0
    """How long a detection from a node without a known position is held, seconds."""
    health_interval_s: float = 10.0
    """Seconds of wall time between the hub's health messages (``hub/health``, QoS 0), as a node's."""
    store: StoreSettings = msgspec.field(default_factory=StoreSettings)
    """The incident store (``[store]``)."""
    sinks: SinkSettings = msgspec.field(default_factory=SinkSettings)
    """Webhook, CAP and GeoJSON sinks (``[sinks]``); off by default."""

    def __post_init__(self) -> None:
        check_id(self.site, "site")
        for node_id in self.nodes:
            check_id(node_id, "node id in [nodes]")
        _positive(self, "unknown_node_hold_s", "health_interval_s")

    def warnings(self) -> list[str]:
        """Settings that are valid but probably not what a deployment wants (``check-config`` prints
        them; the hub logs them when it starts)."""
        out = []
        if self.location.mode in ("2.5d", "auto") and self.location.ground_alt_m is None:
            out.append("[location] ground_alt_m is not set: the assumed source height (source_height_m) is "
                       "measured from the first node the hub learns, a microphone some metres up, and the "
                       "nodes nearest a shot will not fit it (docs/config.md)")
        return out


def _positive(obj: object, *names: str) -> None:
    for name in names:
        if not getattr(obj, name) > 0:
            raise ValueError(f"{name} must be > 0, got {getattr(obj, name)}")
