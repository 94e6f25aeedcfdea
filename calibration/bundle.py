"""RecordingBundle: a folder with one audio file per node plus ``manifest.json``.

A bundle is how recordings (real or simulated) enter replay, evaluation and
calibration. The manifest is validated with msgspec (unknown keys and wrong
types are errors that name the offending key); see ``docs/recording-bundle.md``.

Units: seconds, metres, integer nanoseconds since the Unix epoch (UTC), degrees
for WGS84 latitude/longitude, metres for altitude (WGS84 ellipsoid), local ENU
metres relative to ``origin``.

Clock model (what ``start_time_ns`` and the ``*_true`` fields mean): the node's
clock reads ``C(t) = t + offset + drift * (t - t0)`` at true time ``t``, where
``t0`` is the true time of the first sample, ``offset = clock_offset_ns_true``
and ``drift = clock_drift_ppm_true * 1e-6``. The node stamps sample ``i`` with
``start_time_ns + i / sample_rate_hz`` (seconds converted to ns), so
``start_time_ns = t0 + offset``. :meth:`Bundle.true_time_ns` inverts this.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np
import soundfile as sf

from shotline.hub.config import speed_of_sound_mps
from shotline.hub.geometry import LocalFrame

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "EVENT_KINDS",
    "MANIFEST_NAME",
    "ArrivalEntry",
    "Bundle",
    "BundleError",
    "Environment",
    "EventEntry",
    "Manifest",
    "NodeEntry",
    "Wgs84Position",
    "speed_of_sound_mps",
    "write_audio",
    "write_bundle",
]

BUNDLE_FORMAT = "shotline-bundle"
BUNDLE_VERSION = 1
MANIFEST_NAME = "manifest.json"

EventKind = Literal[
    "gunshot", "firecracker", "door_slam", "hand_clap", "car_backfire", "hammer", "other"
]
EVENT_KINDS: tuple[str, ...] = EventKind.__args__  # type: ignore[attr-defined]

# When a node or event carries both WGS84 and ENU, they must agree this well (metres);
# a larger disagreement almost always means a wrong origin.
_POSITION_AGREEMENT_M = 1.0


class BundleError(ValueError):
    """A bundle cannot be read or written; the message names the offending key or file."""


class Wgs84Position(msgspec.Struct, forbid_unknown_fields=True):
    """A WGS84 position: latitude and longitude in degrees, altitude in metres (ellipsoid)."""

    lat_deg: float
    lon_deg: float
    alt_m: float = 0.0

    def __post_init__(self) -> None:
        if not -90.0 <= self.lat_deg <= 90.0:
            raise ValueError(f"lat_deg={self.lat_deg} is outside [-90, 90]")
        if not -180.0 <= self.lon_deg <= 180.0:
            raise ValueError(f"lon_deg={self.lon_deg} is outside [-180, 180]")


def _check_enu(enu_m: list[float] | None) -> None:
    if enu_m is not None and (len(enu_m) != 3 or not all(np.isfinite(enu_m))):
        raise ValueError(f"enu_m must be three finite numbers [e, n, u] in metres, got {enu_m}")


class NodeEntry(msgspec.Struct, forbid_unknown_fields=True):
    """One recording node.

    ``start_time_ns`` is the UTC time of the first sample as stamped by the node's
    own clock. ``clock_offset_ns_true`` (node clock minus true time at the first
    sample) and ``clock_drift_ppm_true`` are known only for simulated or
    reference-timed data. ``full_scale_spl_db`` is the SPL (dB re 20 µPa) of a
    sine whose peak reaches full scale (the MEMS-datasheet/AES17 convention), so
    sample value 1.0 is a peak pressure of sqrt(2) * 20 µPa * 10**(L/20).
    """

    node_id: str
    audio: str
    sample_rate_hz: int
    start_time_ns: int
    position: Wgs84Position | None = None
    enu_m: list[float] | None = None
    clock_offset_ns_true: int | None = None
    clock_drift_ppm_true: float | None = None
    full_scale_spl_db: float | None = None
    channel: int = 0

    def __post_init__(self) -> None:
        if not self.node_id:
            raise ValueError("node_id must not be empty")
        if self.position is None and self.enu_m is None:
            raise ValueError(f"node {self.node_id!r} needs `position` or `enu_m`")
        _check_enu(self.enu_m)
        if self.sample_rate_hz <= 0:
            raise ValueError(f"sample_rate_hz must be positive, got {self.sample_rate_hz}")
        if self.channel < 0:
            raise ValueError(f"channel must be >= 0, got {self.channel}")
        if not self.audio or os.path.isabs(self.audio) or ".." in Path(self.audio).parts:
            raise ValueError(
                f"audio must be a relative file name inside the bundle, got {self.audio!r}"
            )

    def full_scale_peak_pa(self) -> float | None:
        """Peak pressure (Pa) that maps to sample value 1.0, or None when not calibrated."""
        if self.full_scale_spl_db is None:
            return None
        return float(np.sqrt(2.0) * 20e-6 * 10.0 ** (self.full_scale_spl_db / 20.0))


class EventEntry(msgspec.Struct, forbid_unknown_fields=True):
    """One ground-truth source event; ``time_ns`` is the TRUE UTC emission time."""

    event_id: str
    kind: EventKind
    time_ns: int
    position: Wgs84Position | None = None
    enu_m: list[float] | None = None
    properties: dict[str, Any] = {}

    def __post_init__(self) -> None:
        if not self.event_id:
            raise ValueError("event_id must not be empty")
        if self.position is None and self.enu_m is None:
            raise ValueError(f"event {self.event_id!r} needs `position` or `enu_m`")
        _check_enu(self.enu_m)


class ArrivalEntry(msgspec.Struct, forbid_unknown_fields=True):
    """A ground-truth arrival of one propagation path at one node (simulator output).

    ``path`` names the route: ``direct``, ``ground``, ``wall:<id>``, ``diffracted``,
    ``shock`` (supersonic N-wave) and combinations joined with ``+`` (for example
    ``wall:w1+ground``). ``time_ns`` is the true UTC arrival time of the wave front,
    ``stamped_time_ns`` what the node's clock reads at that moment and
    ``sample_index`` the fractional index of the arrival in the node's audio.
    ``peak_pa`` is the peak pressure of this path alone at the microphone.
    """

    node_id: str
    event_id: str
    path: str
    time_ns: int
    stamped_time_ns: int
    sample_index: float
    path_length_m: float
    peak_pa: float


class Environment(msgspec.Struct, forbid_unknown_fields=True):
    """Propagation conditions: °C, % relative humidity, wind (east, north) m/s, m/s."""

    temperature_c: float = 20.0
    relative_humidity_pct: float = 50.0
    wind_enu_mps: list[float] | None = None
    speed_of_sound_mps: float | None = None

    def __post_init__(self) -> None:
        if self.wind_enu_mps is not None and len(self.wind_enu_mps) != 2:
            raise ValueError(f"wind_enu_mps must be [east, north] in m/s, got {self.wind_enu_mps}")
        if not 0.0 <= self.relative_humidity_pct <= 100.0:
            raise ValueError(
                f"relative_humidity_pct={self.relative_humidity_pct} is outside [0, 100]"
            )
        if self.speed_of_sound_mps is None:
            self.speed_of_sound_mps = speed_of_sound_mps(self.temperature_c)
        elif self.speed_of_sound_mps <= 0:
            raise ValueError(f"speed_of_sound_mps must be positive, got {self.speed_of_sound_mps}")


class Manifest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The whole ``manifest.json``; see docs/recording-bundle.md."""

    format: Literal["shotline-bundle"] = BUNDLE_FORMAT
    version: int = BUNDLE_VERSION
    origin: Wgs84Position | None = None
    nodes: list[NodeEntry]
    events: list[EventEntry] = []
    environment: Environment = msgspec.field(default_factory=Environment)
    provenance: dict[str, Any] = {}
    arrivals: list[ArrivalEntry] = []

    def __post_init__(self) -> None:
        if self.version != BUNDLE_VERSION:
            raise ValueError(
                f"version {self.version} is not supported (this reader knows {BUNDLE_VERSION})"
            )
        if not self.nodes:
            raise ValueError("nodes must list at least one node")
        _check_unique([n.node_id for n in self.nodes], "nodes", "node_id")
        _check_unique([e.event_id for e in self.events], "events", "event_id")
        node_ids = {n.node_id for n in self.nodes}
        for a in self.arrivals:
            if a.node_id not in node_ids:
                raise ValueError(f"arrivals: node_id {a.node_id!r} is not in nodes")
        entries = [("nodes", n.node_id, n) for n in self.nodes] + [
            ("events", e.event_id, e) for e in self.events
        ]
        if self.origin is None:
            has_wgs = any(x.position is not None for _, _, x in entries)
            local_only = [f"{k}[{i!r}]" for k, i, x in entries if x.position is None]
            if has_wgs and local_only:
                raise ValueError(
                    "origin is required when some positions are WGS84 and others only enu_m "
                    f"(local only: {', '.join(local_only[:5])})"
                )
        else:
            frame = LocalFrame(self.origin.lat_deg, self.origin.lon_deg, self.origin.alt_m)
            for key, ident, x in entries:
                if x.position is not None and x.enu_m is not None:
                    p = x.position
                    enu = np.array(frame.to_enu(p.lat_deg, p.lon_deg, p.alt_m))
                    err = float(np.linalg.norm(enu - np.asarray(x.enu_m)))
                    if err > _POSITION_AGREEMENT_M:
                        raise ValueError(
                            f"{key}[{ident!r}]: position and enu_m disagree by {err:.1f} m "
                            "(is origin right?)"
                        )


def _check_unique(ids: list[str], key: str, field: str) -> None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise ValueError(f"{key}: duplicate {field} {i!r}")
        seen.add(i)


def decode_manifest(data: bytes | str, source: str = "manifest") -> Manifest:
    """Validate manifest JSON; raises :class:`BundleError` naming the offending key."""
    try:
        return msgspec.json.decode(data, type=Manifest)
    except msgspec.ValidationError as exc:
        raise BundleError(f"{source}: invalid manifest: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise BundleError(f"{source}: not valid JSON: {exc}") from exc


def encode_manifest(manifest: Manifest) -> bytes:
    """Manifest -> pretty, key-stable JSON bytes (ends with a newline)."""
    raw = msgspec.json.decode(msgspec.json.encode(manifest))
    return (json.dumps(raw, indent=2, ensure_ascii=False) + "\n").encode()


def quantise(samples: np.ndarray, bits: int = 24) -> np.ndarray:
    """Clip to [-1, 1] full scale and round to a ``bits``-bit grid (float32 out).

    Done before writing so that the in-memory audio equals what a reader gets back.
    """
    scale = float(2 ** (bits - 1))
    q = np.clip(np.round(np.asarray(samples, dtype=np.float64) * scale), -scale, scale - 1)
    return (q / scale).astype(np.float32)


class Bundle:
    """A recording bundle: a validated :class:`Manifest` plus its audio.

    Audio lives either in files under ``root`` (after :meth:`load` or
    :meth:`write`) or in memory (``audio`` mapping node_id -> float32 samples
    in [-1, 1] full scale).
    """

    def __init__(
        self,
        manifest: Manifest,
        root: str | os.PathLike | None = None,
        audio: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        self.manifest = manifest
        self.root = Path(root) if root is not None else None
        self._audio = dict(audio or {})
        self._nodes = {n.node_id: n for n in manifest.nodes}
        self._frame = _frame_for(manifest)

    # ------------------------------------------------------------------ I/O
    @classmethod
    def load(cls, path: str | os.PathLike) -> Bundle:
        """Read and validate ``path/manifest.json`` (or a manifest file path) and check the audio files exist."""
        path = Path(path)
        mpath = path if path.is_file() else path / MANIFEST_NAME
        if not mpath.exists():
            raise BundleError(f"{mpath}: no manifest.json")
        manifest = decode_manifest(mpath.read_bytes(), str(mpath))
        root = mpath.parent
        for n in manifest.nodes:
            if not (root / n.audio).exists():
                raise BundleError(
                    f"{mpath}: nodes[{n.node_id!r}].audio: file {n.audio!r} not found"
                )
        return cls(manifest, root=root)

    def write(self, path: str | os.PathLike, subtype: str = "PCM_24") -> Bundle:
        """Write manifest and audio to folder ``path``; returns the bundle backed by those files.

        Audio goes to each node's ``audio`` file name; the container follows the
        extension (``.flac`` default, ``.wav`` …) and ``subtype`` the sample format.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for n in self.manifest.nodes:
            samples, rate = self.read_audio(n.node_id, all_channels=True)
            target = path / n.audio
            target.parent.mkdir(parents=True, exist_ok=True)
            if self.root is not None and (self.root / n.audio).resolve() == target.resolve():
                continue  # already there
            write_audio(target, samples, rate, subtype)
        (path / MANIFEST_NAME).write_bytes(encode_manifest(self.manifest))
        return Bundle(self.manifest, root=path)

    def read_audio(self, node_id: str, all_channels: bool = False) -> tuple[np.ndarray, int]:
        """Samples (float32, full scale ±1) and sample rate (Hz) of one node.

        By default the node's ``channel``; ``all_channels=True`` returns the file
        as stored (1-D mono or 2-D frames x channels).
        """
        node = self.node(node_id)
        if node_id in self._audio:
            data = np.asarray(self._audio[node_id], dtype=np.float32)
        else:
            if self.root is None:
                raise BundleError(f"nodes[{node_id!r}]: no audio in memory and no bundle folder")
            data, rate = sf.read(self.root / node.audio, dtype="float32", always_2d=True)
            if rate != node.sample_rate_hz:
                raise BundleError(
                    f"nodes[{node_id!r}].sample_rate_hz={node.sample_rate_hz} but "
                    f"{node.audio!r} is {rate} Hz"
                )
            if data.shape[1] == 1:
                data = data[:, 0]
        if all_channels:
            return data, node.sample_rate_hz
        if data.ndim == 1:
            if node.channel != 0:
                raise BundleError(f"nodes[{node_id!r}].channel={node.channel} but audio is mono")
            return data, node.sample_rate_hz
        if node.channel >= data.shape[1]:
            raise BundleError(
                f"nodes[{node_id!r}].channel={node.channel} but audio has {data.shape[1]} channels"
            )
        return np.ascontiguousarray(data[:, node.channel]), node.sample_rate_hz

    def audio_path(self, node_id: str) -> Path:
        """Absolute path of a node's audio file (the bundle must be on disk)."""
        if self.root is None:
            raise BundleError("bundle is in memory only; write() it first")
        return self.root / self.node(node_id).audio

    # ------------------------------------------------------------- accessors
    @property
    def node_ids(self) -> list[str]:
        """Node ids in manifest order."""
        return [n.node_id for n in self.manifest.nodes]

    @property
    def events(self) -> list[EventEntry]:
        """Ground-truth events (may be empty)."""
        return self.manifest.events

    @property
    def arrivals(self) -> list[ArrivalEntry]:
        """Ground-truth per-node arrivals (simulated bundles; empty otherwise)."""
        return self.manifest.arrivals

    @property
    def environment(self) -> Environment:
        return self.manifest.environment

    @property
    def speed_of_sound_mps(self) -> float:
        """Speed of sound (m/s) recorded in the manifest's environment."""
        return float(self.manifest.environment.speed_of_sound_mps)

    @property
    def frame(self) -> LocalFrame | None:
        """The local ENU frame of the bundle: ``origin`` if given, else centred on the
        WGS84 node positions, else None for purely local bundles."""
        return self._frame

    def node(self, node_id: str) -> NodeEntry:
        try:
            return self._nodes[node_id]
        except KeyError:
            raise KeyError(f"no node {node_id!r} in bundle (nodes: {self.node_ids})") from None

    def event(self, event_id: str) -> EventEntry:
        for e in self.manifest.events:
            if e.event_id == event_id:
                return e
        raise KeyError(f"no event {event_id!r} in bundle")

    # ------------------------------------------------------------- positions
    def _enu(self, x: NodeEntry | EventEntry) -> np.ndarray:
        if x.enu_m is not None:
            return np.asarray(x.enu_m, dtype=float)
        assert x.position is not None and self._frame is not None  # validated
        p = x.position
        return np.array(self._frame.to_enu(p.lat_deg, p.lon_deg, p.alt_m), dtype=float)

    def _wgs84(self, x: NodeEntry | EventEntry) -> tuple[float, float, float]:
        if x.position is not None:
            return (x.position.lat_deg, x.position.lon_deg, x.position.alt_m)
        if self._frame is None:
            raise BundleError("purely local bundle: no origin, so no WGS84 positions")
        lat, lon, alt = self._frame.to_wgs84(*x.enu_m)  # type: ignore[misc]
        return (float(lat), float(lon), float(alt))

    def node_enu_m(self) -> dict[str, np.ndarray]:
        """node_id -> ENU position (m, shape (3,)) in the bundle frame (see :attr:`frame`)."""
        return {n.node_id: self._enu(n) for n in self.manifest.nodes}

    def node_enu_array(self) -> np.ndarray:
        """ENU positions (m) as an array of shape (n_nodes, 3), rows in :attr:`node_ids` order."""
        return np.array([self._enu(n) for n in self.manifest.nodes]).reshape(-1, 3)

    def event_enu_m(self) -> dict[str, np.ndarray]:
        """event_id -> ENU position (m, shape (3,)) in the bundle frame."""
        return {e.event_id: self._enu(e) for e in self.manifest.events}

    def node_wgs84(self) -> dict[str, tuple[float, float, float]]:
        """node_id -> (lat_deg, lon_deg, alt_m); raises BundleError for purely local bundles."""
        return {n.node_id: self._wgs84(n) for n in self.manifest.nodes}

    def event_wgs84(self) -> dict[str, tuple[float, float, float]]:
        """event_id -> (lat_deg, lon_deg, alt_m); raises BundleError for purely local bundles."""
        return {e.event_id: self._wgs84(e) for e in self.manifest.events}

    # ------------------------------------------------------------------ time
    def duration_s(self, node_id: str) -> float:
        """Length of a node's recording (s, nominal sample rate)."""
        node = self.node(node_id)
        if node_id in self._audio:
            n_samples = len(self._audio[node_id])
        else:
            n_samples = sf.info(str(self.audio_path(node_id))).frames
        return n_samples / node.sample_rate_hz

    def stamped_time_ns(self, node_id: str, sample_index: float) -> int:
        """The node's own UTC stamp (ns) of a (fractional) sample index."""
        node = self.node(node_id)
        return node.start_time_ns + round(sample_index * 1e9 / node.sample_rate_hz)

    def true_time_ns(self, node_id: str, stamped_ns: int) -> int | None:
        """True UTC (ns) of a node-clock stamp, or None when the clock truth is unknown."""
        node = self.node(node_id)
        if node.clock_offset_ns_true is None:
            return None
        drift = (node.clock_drift_ppm_true or 0.0) * 1e-6
        t0 = node.start_time_ns - node.clock_offset_ns_true
        return t0 + round((stamped_ns - node.start_time_ns) / (1.0 + drift))


def _frame_for(manifest: Manifest) -> LocalFrame | None:
    if manifest.origin is not None:
        o = manifest.origin
        return LocalFrame(o.lat_deg, o.lon_deg, o.alt_m)
    wgs = [n.position for n in manifest.nodes if n.position is not None]
    if not wgs:
        return None
    return LocalFrame.centred_on(
        [p.lat_deg for p in wgs], [p.lon_deg for p in wgs], [p.alt_m for p in wgs]
    )


def write_audio(
    target: str | os.PathLike, samples: np.ndarray, rate: int, subtype: str = "PCM_24"
) -> None:
    """Write float full-scale samples (clipped to ±1) as ``target`` (format from its extension)."""
    if subtype == "PCM_24":
        # Write integers so that full scale (+1.0) does not wrap in the float->int path.
        q = np.clip(np.round(np.asarray(samples, np.float64) * 2**23), -(2**23), 2**23 - 1)
        sf.write(target, q.astype(np.int32) << 8, rate, subtype=subtype)
    else:
        sf.write(target, np.clip(samples, -1.0, 1.0), rate, subtype=subtype)


def write_bundle(
    path: str | os.PathLike,
    manifest: Manifest,
    audio: Mapping[str, np.ndarray],
    subtype: str = "PCM_24",
) -> Bundle:
    """Write ``manifest`` and ``audio`` (node_id -> float32 full-scale samples) to folder ``path``.

    Returns the bundle backed by the written files. Every node needs audio.
    """
    missing = [n.node_id for n in manifest.nodes if n.node_id not in audio]
    if missing:
        raise BundleError(f"no audio for nodes {missing}")
    return Bundle(manifest, audio=audio).write(path, subtype=subtype)
