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
    time_quality: TimeQuality | None = None
    """How the clock is disciplined. Unset: ``replay`` for a file source, and for live
    capture whatever chrony reports (``pps``, ``ntp`` or ``unsynced``). Set it only to
    override that (for example ``unsynced`` on a node whose GPS antenna is known bad)."""

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
    """Where the audio comes from: a recording (``file``) or a microphone (``live``)."""

    source: Literal["file", "live"] = "file"
    """``file``: replay a recording; ``live``: capture from a sound device (PortAudio)."""
    path: str | None = None
    """Audio file to replay (any format libsndfile reads). ``file`` only."""
    start_time_ns: int | None = None
    """UTC of the file's first sample, integer nanoseconds since the epoch. ``file`` only."""
    channel: int = 0
    """Channel to use, counted from 0."""
    block_s: float = 0.1
    """Processing block length, seconds (live: also the capture callback's block)."""
    speed: float = 1.0
    """Replay pace: 1.0 real time, 0 as fast as possible. ``file`` only."""
    device: str | int | None = None
    """Capture device: an index from ``shotline-sensor list-devices`` or a (part of its)
    name; unset: the system's default input. ``live`` only."""
    sample_rate_hz: int = 48000
    """Capture sample rate, Hz. ``live`` only."""
    dtype: Literal["int16", "int32", "float32"] = "int32"
    """Sample format asked of the device: ``int32`` for I2S MEMS microphones (S32_LE),
    ``int16`` for most USB sound cards. ``live`` only."""
    channels: int | None = None
    """Channels to open on the device; unset: ``channel + 1``. Some I2S drivers only
    open in stereo (set 2). ``live`` only."""
    dc_cutoff_hz: float = 5.0
    """Corner of the DC-removal high-pass applied to live audio, Hz; 0 disables it."""
    stall_timeout_s: float = 2.0
    """No audio for this long means the device is gone: capture is reopened, s."""
    retry_max_s: float = 30.0
    """Longest wait between attempts to reopen a vanished device, s (back-off from 1 s)."""
    queue_s: float = 10.0
    """Audio buffered between the capture callback and the processing thread, s.
    When processing falls this far behind, blocks are dropped and reported as a gap."""

    def __post_init__(self) -> None:
        if self.source == "file" and (self.path is None or self.start_time_ns is None):
            raise ValueError("source 'file' needs path and start_time_ns")
        if self.block_s <= 0 or self.block_s > 2:
            raise ValueError("block_s must be in (0, 2] seconds")
        if self.speed < 0:
            raise ValueError("speed must be >= 0")
        if self.channel < 0:
            raise ValueError("channel must be >= 0")
        if self.channels is not None and self.channels <= self.channel:
            raise ValueError(f"channels ({self.channels}) must be more than channel ({self.channel})")
        if not 8000 <= self.sample_rate_hz <= 384000:
            raise ValueError(f"sample_rate_hz {self.sample_rate_hz} outside 8000-384000")
        if not 0 <= self.dc_cutoff_hz < 0.05 * self.sample_rate_hz:
            raise ValueError("dc_cutoff_hz must be >= 0 and well below the sample rate")
        if self.stall_timeout_s <= 0 or self.retry_max_s < 1 or self.queue_s < 1:
            raise ValueError("stall_timeout_s must be > 0, retry_max_s and queue_s >= 1 s")


class HealthSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Periodic health reports."""

    interval_s: float = 10.0
    """Seconds of audio between health messages."""

    def __post_init__(self) -> None:
        if self.interval_s <= 0:
            raise ValueError("interval_s must be > 0 seconds")


class ClockSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Live capture time base and chrony."""

    chrony: bool = True
    """Read chrony's tracking state (offset, PPS lock) for the time quality of detections."""
    chronyc: str = "chronyc"
    """The chronyc program (name on PATH or absolute path)."""
    poll_s: float = 10.0
    """Interval between chrony readings, s."""
    pps_refid: str = "PPS"
    """chrony reference id of the PPS refclock (``refclock PPS ... refid PPS``)."""
    pps_max_offset_s: float = 0.0001
    """Largest |system clock offset| for the time quality to be ``pps``, s."""
    ntp_max_offset_s: float = 0.1
    """Largest |offset| for ``ntp``; above it the node reports ``unsynced``, s."""
    fit_window_s: float = 60.0
    """Length of the (sample index, ADC time) history the linear fit uses, s."""
    step_threshold_s: float = 0.002
    """An ADC time this far off the fit on consecutive blocks is a clock step, s."""

    def __post_init__(self) -> None:
        if self.poll_s < 1:
            raise ValueError("poll_s must be >= 1 second")
        if self.fit_window_s < 5:
            raise ValueError("fit_window_s must be >= 5 seconds")
        if self.step_threshold_s <= 0 or self.pps_max_offset_s <= 0 or self.ntp_max_offset_s <= 0:
            raise ValueError("step_threshold_s, pps_max_offset_s and ntp_max_offset_s must be > 0 s")


class StorageSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Where the node keeps its outbox and clips."""

    data_dir: str | None = None
    """Directory for ``outbox.sqlite`` and ``clips/``. Unset: the outbox is kept in
    memory and no clips are written (replays and the demo); set it on a real node
    (the install script uses ``/var/lib/shotline``)."""


class OutboxSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The on-disk queue of detections not yet acknowledged by the broker."""

    max_detections: int = 100_000
    """Most detections kept; beyond it the oldest are evicted (and counted)."""
    republish_s: float = 60.0
    """A detection sent but not acknowledged for this long is sent again, s
    (the hub drops the duplicate by its id)."""
    synchronous: Literal["full", "normal"] = "full"
    """SQLite synchronous mode: ``full`` survives a power cut, ``normal`` only a crash."""

    def __post_init__(self) -> None:
        if self.max_detections < 1:
            raise ValueError("max_detections must be >= 1")
        if self.republish_s < 1:
            raise ValueError("republish_s must be >= 1 second")


class ClipSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Audio clips saved for each detection (needs ``[storage] data_dir``)."""

    enabled: bool = True
    """Save a FLAC clip per detection."""
    before_s: float = 1.0
    """Audio kept before the onset, s."""
    after_s: float = 2.0
    """Audio kept after the onset, s."""
    max_age_days: float = 30.0
    """Clips older than this are deleted, days."""
    quota_mb: float = 1024.0
    """Most disk space the clips may take; the oldest go first, MB."""
    http_port: int = 8780
    """TCP port of the clip server the hub fetches clips from; 0 disables it."""
    http_bind: str = "0.0.0.0"
    """Address the clip server listens on."""
    token_file: str | None = None
    """File holding a bearer token the hub must send (``Authorization: Bearer ...``);
    unset: no token (bind to a VPN or loopback address then)."""

    def __post_init__(self) -> None:
        if self.before_s < 0 or self.after_s <= 0 or self.before_s + self.after_s > 30:
            raise ValueError("before_s >= 0, after_s > 0 and together at most 30 s")
        if self.max_age_days <= 0 or self.quota_mb <= 0:
            raise ValueError("max_age_days and quota_mb must be > 0")
        if not 0 <= self.http_port < 65536:
            raise ValueError(f"http_port {self.http_port} outside 0-65535")


class ClassifierSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The on-node classifier (the model shipped in ``shotline.models``)."""

    enabled: bool = True
    """Run the classifier on each candidate when a model is available."""
    model_path: str | None = None
    """A ``.tflite`` model to use instead of the shipped one."""
    min_gunshot_score: float = 0.1
    """Candidates whose ``gunshot`` score is below this are counted, not published (0-1).

    Low by default: a detection dropped at a node is lost for location, while
    a published one is classified again by the hub, which fuses the scores of
    every node of a shot (fireworks are located and labelled, not hidden)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_gunshot_score <= 1.0:
            raise ValueError("min_gunshot_score must be in [0, 1]")


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
    clock: ClockSettings = msgspec.field(default_factory=ClockSettings)
    storage: StorageSettings = msgspec.field(default_factory=StorageSettings)
    outbox: OutboxSettings = msgspec.field(default_factory=OutboxSettings)
    clips: ClipSettings = msgspec.field(default_factory=ClipSettings)
    classifier: ClassifierSettings = msgspec.field(default_factory=ClassifierSettings)

    def trigger_config(self) -> TriggerConfig:
        """The DSP trigger configuration."""
        return TriggerConfig(**msgspec.structs.asdict(self.trigger))
