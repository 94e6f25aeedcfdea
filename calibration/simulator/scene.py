"""Scene description for the simulator (msgspec Structs, so a scene saves as JSON).

Units: metres (local ENU, relative to ``Scene.origin`` when one is given),
seconds, integer nanoseconds since the Unix epoch (UTC), dB re 20 µPa for
sound pressure levels, degrees for angles (azimuth clockwise from north,
elevation up from horizontal), m/s for speeds.
"""

from __future__ import annotations

import math

import msgspec
import numpy as np

from shotline.calibration.bundle import EventKind, Wgs84Position, speed_of_sound_mps

from .sources import CALIBRES

__all__ = [
    "Blocked",
    "Ground",
    "Scene",
    "SceneEnvironment",
    "SceneEvent",
    "SceneNode",
    "Wall",
    "Wgs84Position",
]


class _S(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


def _floats(values, n: int, what: str) -> tuple[float, ...]:
    """Plain-float tuple of length n (Python callers often pass numpy scalars)."""
    out = tuple(float(v) for v in values)
    if len(out) != n or not all(math.isfinite(v) for v in out):
        raise ValueError(f"{what} must be {n} finite numbers (m), got {values!r}")
    return out


class SceneNode(_S):
    """A sensor node.

    ``enu_m`` (east, north, up metres; up = height above the local ground plane
    of the scene) or ``position`` (WGS84; needs ``Scene.origin``).
    ``clock_offset_ns``: node clock minus true time at the first sample;
    ``clock_drift_ppm``: node clock rate error (positive: runs fast).
    ``full_scale_spl_db``: SPL of a sine whose peak is full scale (dB re 20 µPa);
    ``self_noise_db``: microphone self-noise (dB SPL, flat spectrum over the band);
    ``background_noise_db``: urban background (dB SPL, broadband), None uses
    ``Scene.background_noise_db``; ``sample_rate_hz``: any positive rate.
    """

    node_id: str
    enu_m: tuple[float, float, float] | None = None
    position: Wgs84Position | None = None
    clock_offset_ns: int = 0
    clock_drift_ppm: float = 0.0
    full_scale_spl_db: float = 130.0
    self_noise_db: float = 30.0
    background_noise_db: float | None = None
    sample_rate_hz: int = 48000

    def __post_init__(self) -> None:
        if self.enu_m is not None:
            self.enu_m = _floats(self.enu_m, 3, f"node {self.node_id!r}: enu_m")
        self.clock_offset_ns = int(self.clock_offset_ns)
        if (self.enu_m is None) == (self.position is None):
            raise ValueError(f"node {self.node_id!r}: give exactly one of enu_m or position")
        if self.sample_rate_hz <= 0:
            raise ValueError(f"node {self.node_id!r}: sample_rate_hz must be positive")


class SceneEvent(_S):
    """A sound source event at true UTC ``time_ns`` from ``enu_m`` (m; up = height above ground).

    Kind-specific fields (None means the kind's default):

    - ``calibre`` (gunshot): a key of ``sources.CALIBRES`` (default "9mm");
    - ``peak_spl_db_1m``: peak SPL at 1 m (dB re 20 µPa), overrides the default level;
    - ``positive_duration_s`` (gunshot, other): Friedlander positive phase at 1 m;
    - ``aim_azimuth_deg`` / ``aim_elevation_deg`` (gunshot): muzzle direction;
      enables the muzzle-blast directivity and the bullet's shock wave;
    - ``directivity_db`` (gunshot): muzzle blast front-to-back level difference
      (default 10 dB when aimed, 0 otherwise);
    - ``supersonic`` / ``bullet_speed_mps`` (gunshot): render the N-wave (default
      from the calibre; needs an aim) at this bullet speed;
    - ``n_bangs`` / ``fuse_crackle`` (firecracker): a string of bangs, fuse sparks first.
    """

    event_id: str
    kind: EventKind
    time_ns: int
    enu_m: tuple[float, float, float]
    calibre: str | None = None
    peak_spl_db_1m: float | None = None
    positive_duration_s: float | None = None
    aim_azimuth_deg: float | None = None
    aim_elevation_deg: float = 0.0
    directivity_db: float | None = None
    supersonic: bool | None = None
    bullet_speed_mps: float | None = None
    n_bangs: int | None = None
    fuse_crackle: bool = False

    def __post_init__(self) -> None:
        self.enu_m = _floats(self.enu_m, 3, f"event {self.event_id!r}: enu_m")
        self.time_ns = int(self.time_ns)
        if self.calibre is not None and self.calibre not in CALIBRES:
            raise ValueError(
                f"event {self.event_id!r}: unknown calibre {self.calibre!r} "
                f"(known: {', '.join(CALIBRES)})"
            )
        if self.supersonic and self.aim_azimuth_deg is None:
            raise ValueError(f"event {self.event_id!r}: supersonic needs aim_azimuth_deg")
        if self.enu_m[2] < 0:
            raise ValueError(f"event {self.event_id!r}: enu_m up must be >= 0 (above ground)")

    def aim_unit(self) -> np.ndarray | None:
        """Unit ENU vector of the muzzle direction, or None when not aimed."""
        if self.aim_azimuth_deg is None:
            return None
        az, el = math.radians(self.aim_azimuth_deg), math.radians(self.aim_elevation_deg)
        return np.array([math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), math.sin(el)])

    def calibre_or_default(self) -> str:
        return self.calibre or "9mm"


class Wall(_S):
    """A vertical reflecting wall from ``start_en_m`` to ``end_en_m`` (east, north m), ``height_m`` tall.

    Reflects on both faces with pressure coefficient ``reflection_coefficient``
    (brick/concrete/glass ~0.8-0.95) and blocks rays that cross it.
    """

    wall_id: str
    start_en_m: tuple[float, float]
    end_en_m: tuple[float, float]
    height_m: float = 10.0
    reflection_coefficient: float = 0.85

    def __post_init__(self) -> None:
        self.start_en_m = _floats(self.start_en_m, 2, f"wall {self.wall_id!r}: start_en_m")
        self.end_en_m = _floats(self.end_en_m, 2, f"wall {self.wall_id!r}: end_en_m")
        if math.dist(self.start_en_m, self.end_en_m) <= 0:
            raise ValueError(f"wall {self.wall_id!r}: start and end must differ")
        if self.height_m <= 0:
            raise ValueError(f"wall {self.wall_id!r}: height_m must be positive")


class Ground(_S):
    """Flat ground at ``height_m`` (ENU up) with pressure reflection coefficient (asphalt ~0.9-0.95)."""

    height_m: float = 0.0
    reflection_coefficient: float = 0.9


class Blocked(_S):
    """The direct path from event ``event_id`` (None: every event) to ``node_id`` is blocked.

    The direct ray and its ground reflection are removed; a diffracted path
    ``extra_path_m`` metres longer (Maekawa attenuation) arrives instead.
    """

    node_id: str
    event_id: str | None = None
    extra_path_m: float = 15.0


class SceneEnvironment(_S):
    """Air: °C, % relative humidity, kPa, wind (east, north) m/s.

    ``absorption=False`` switches atmospheric absorption off (idealised tests:
    absorption gives distant wave fronts a physical rise time of ~0.1 ms).
    """

    temperature_c: float = 20.0
    relative_humidity_pct: float = 60.0
    pressure_kpa: float = 101.325
    wind_enu_mps: tuple[float, float] = (0.0, 0.0)
    absorption: bool = True

    @property
    def speed_of_sound_mps(self) -> float:
        """c = 331.3 sqrt(1 + T/273.15) m/s (still air)."""
        return speed_of_sound_mps(self.temperature_c)


class Scene(_S):
    """Everything the renderer needs; see docs/simulator.md.

    ``start_time_ns``: true UTC of every node's first sample; ``duration_s``:
    length of every recording; ``origin``: WGS84 origin of the ENU frame
    (None: a purely local scene); ``reflection_order``: maximum number of
    reflections per path (ground and walls both count; 2 gives wall+ground
    echoes); ``mic_highpass_hz``: first-order low cut of the microphone.
    """

    nodes: list[SceneNode]
    events: list[SceneEvent] = []
    start_time_ns: int = 1_700_000_000_000_000_000
    duration_s: float = 10.0
    origin: Wgs84Position | None = None
    environment: SceneEnvironment = msgspec.field(default_factory=SceneEnvironment)
    walls: list[Wall] = []
    ground: Ground | None = msgspec.field(default_factory=Ground)
    blocked: list[Blocked] = []
    background_noise_db: float = 55.0
    reflection_order: int = 2
    mic_highpass_hz: float = 20.0
    name: str = ""

    def __post_init__(self) -> None:
        if not self.nodes:
            raise ValueError("a scene needs at least one node")
        if self.duration_s <= 0:
            raise ValueError("duration_s must be positive")
        for kind, ids in (
            ("node_id", [n.node_id for n in self.nodes]),
            ("event_id", [e.event_id for e in self.events]),
            ("wall_id", [w.wall_id for w in self.walls]),
        ):
            dup = {i for i in ids if ids.count(i) > 1}
            if dup:
                raise ValueError(f"duplicate {kind}: {sorted(dup)}")
        if self.origin is None and any(n.position is not None for n in self.nodes):
            raise ValueError("nodes with a WGS84 position need Scene.origin")
        node_ids = {n.node_id for n in self.nodes}
        event_ids = {e.event_id for e in self.events}
        for b in self.blocked:
            if b.node_id not in node_ids:
                raise ValueError(f"blocked: unknown node_id {b.node_id!r}")
            if b.event_id is not None and b.event_id not in event_ids:
                raise ValueError(f"blocked: unknown event_id {b.event_id!r}")
        if not 0 <= self.reflection_order <= 3:
            raise ValueError("reflection_order must be 0..3")

    def to_json(self) -> bytes:
        return msgspec.json.encode(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> Scene:
        return msgspec.json.decode(data, type=cls)
