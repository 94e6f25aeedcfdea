"""Sensor node configuration (TOML), validated with msgspec.

See docs/config.md for the reference with units. ``shotline-sensor
check-config FILE`` prints errors naming the offending key.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Literal

import msgspec

from shotline.core.config import BrokerSettings
from shotline.core.messages import TimeQuality
from shotline.core.topics import check_id

from .trigger import TriggerConfig


class NodeSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Who and where the node is."""

    site: str
    """Site id (topic level), e.g. ``hartford``."""
    node_id: str
    """Node id (topic level), unique within the site, stable across restarts."""
    lat_deg: float | None = None
    """Surveyed latitude, degrees WGS84."""
    lon_deg: float | None = None
    """Surveyed longitude, degrees WGS84."""
    alt_m: float = 0.0
    """Microphone altitude, metres above the WGS84 ellipsoid."""
    full_scale_spl_db: float | None = None
    """Sound pressure level (dB re 20 µPa) that reaches 0 dBFS: the microphone's calibration constant."""
    time_quality: TimeQuality = "replay"
    """How the clock is disciplined; ``replay`` for recordings (live capture reads chrony, issue #3)."""

    def __post_init__(self) -> None:
        check_id(self.site, "site")
        check_id(self.node_id, "node_id")
        if (self.lat_deg is None) != (self.lon_deg is None):
            raise ValueError("give both lat_deg and lon_deg, or neither")
        if self.lat_deg is not None and not -90.0 <= self.lat_deg <= 90.0:
            raise ValueError(f"lat_deg {self.lat_deg} outside [-90, 90]")
        if self.lon_deg is not None and not -180.0 <= self.lon_deg <= 180.0:
            raise ValueError(f"lon_deg {self.lon_deg} outside [-180, 180]")


class AudioSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Where the audio comes from."""

    source: Literal["file"] = "file"
    """``file``: replay a recording (live capture arrives with issue #3)."""
    path: str | None = None
    """Audio file to replay (any format libsndfile reads)."""
    start_time_ns: int | None = None
    """UTC of the file's first sample, integer nanoseconds since the epoch."""
    channel: int = 0
    """Channel to use, counted from 0."""
    block_s: float = 0.1
    """Processing block length, seconds."""
    speed: float = 1.0
    """Replay pace: 1.0 real time, 0 as fast as possible."""

    def __post_init__(self) -> None:
        if self.source == "file" and (self.path is None or self.start_time_ns is None):
            raise ValueError("source 'file' needs path and start_time_ns")
        if self.block_s <= 0 or self.block_s > 2:
            raise ValueError("block_s must be in (0, 2] seconds")
        if self.speed < 0:
            raise ValueError("speed must be >= 0")


class HealthSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Periodic health reports."""

    interval_s: float = 10.0
    """Seconds of audio between health messages."""


def _trigger_settings_base() -> type:
    # Mirror TriggerConfig field by field so that TOML is validated with the
    # same names, types and defaults as the DSP code uses (one source of truth).
    hints = typing.get_type_hints(TriggerConfig)
    fields = [(f.name, hints[f.name], f.default) for f in dataclasses.fields(TriggerConfig)]
    return msgspec.defstruct(
        "_TriggerSettingsBase", fields, forbid_unknown_fields=True, kw_only=True, module=__name__
    )


class TriggerSettings(_trigger_settings_base()):  # type: ignore[misc]
    """The ``[trigger]`` table: the fields of :class:`~shotline.sensor.trigger.TriggerConfig`."""

    def __post_init__(self) -> None:
        # TriggerConfig checks ranges and consistency; run it at load time so
        # that check-config reports the key instead of the node failing later.
        TriggerConfig(**msgspec.structs.asdict(self))


class SensorConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A sensor node's whole configuration."""

    node: NodeSettings
    broker: BrokerSettings = msgspec.field(default_factory=BrokerSettings)
    audio: AudioSettings
    trigger: TriggerSettings = msgspec.field(default_factory=TriggerSettings)  # type: ignore[valid-type]
    health: HealthSettings = msgspec.field(default_factory=HealthSettings)

    def trigger_config(self) -> TriggerConfig:
        """The DSP trigger configuration."""
        return TriggerConfig(**msgspec.structs.asdict(self.trigger))
