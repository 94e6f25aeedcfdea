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
        if self.min_nodes < 3:
            raise ValueError("min_nodes must be at least 3")


class IncidentSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Grouping of shots into incidents."""

    gap_s: float = 20.0
    """A shot within this many seconds of an incident's last shot can join it."""
    radius_m: float = 60.0
    """... and must lie within this distance of the incident's position, metres."""
    automatic_rate_hz: float = 6.0
    """A burst with a median cadence above this rate (rounds per second) is flagged automatic."""


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
