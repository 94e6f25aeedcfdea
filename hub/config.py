"""Hub configuration (TOML), validated with msgspec. Reference: docs/config.md."""

from __future__ import annotations

import math

import msgspec

from shotline.core.config import BrokerSettings
from shotline.core.topics import check_id


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
    """Assumed source height above the local frame's origin plane for 2-D solutions, metres."""

    def __post_init__(self) -> None:
        _positive(self, "timing_sigma_s")
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
    """Spacing of the coarse hypothesis grid, metres (refined tenfold around the best points)."""
    match_tolerance_s: float = 0.005
    """Extra tolerance when matching a detection to a predicted arrival, seconds (pick and model error)."""
    max_silent_fraction: float = 0.25
    """Largest share of in-range nodes that are past a shot's predicted arrival yet heard nothing."""
    max_rms_residual_s: float = 0.002
    """Largest RMS residual of an accepted shot, seconds."""
    pending_s: float | None = None
    """How long an unassociated detection waits for partners, seconds (default: array size / c + 1 s)."""

    def __post_init__(self) -> None:
        if self.min_nodes < 4:
            raise ValueError("min_nodes must be at least 4 (a 2-D fix with unknown emission time)")
        _positive(self, "max_range_m", "grid_step_m", "max_rms_residual_s")
        if self.match_tolerance_s < 0:
            raise ValueError("match_tolerance_s must be >= 0 seconds")
        if not 0.0 <= self.max_silent_fraction <= 1.0:
            raise ValueError("max_silent_fraction must be in [0, 1]")
        if self.pending_s is not None:
            _positive(self, "pending_s")


class IncidentSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Grouping of shots into incidents."""

    gap_s: float = 20.0
    """A shot within this many seconds of an incident's last shot can join it."""
    radius_m: float = 60.0
    """... and must lie within this distance of the incident's position, metres."""
    automatic_rate_hz: float = 6.0
    """A burst with a median cadence above this rate (rounds per second) is flagged automatic."""

    def __post_init__(self) -> None:
        _positive(self, "gap_s", "radius_m", "automatic_rate_hz")


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
    nodes: dict[str, NodeOverride] = msgspec.field(default_factory=dict)
    """Surveyed positions by node id, overriding status messages."""
    unknown_node_hold_s: float = 30.0
    """How long a detection from a node without a known position is held, seconds."""

    def __post_init__(self) -> None:
        check_id(self.site, "site")
        for node_id in self.nodes:
            check_id(node_id, "node id in [nodes]")
        _positive(self, "unknown_node_hold_s")


def _positive(obj: object, *names: str) -> None:
    for name in names:
        if not getattr(obj, name) > 0:
            raise ValueError(f"{name} must be > 0, got {getattr(obj, name)}")
