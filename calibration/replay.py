"""Replay recording bundles through the real sensor and hub code.

Every node's audio goes through :class:`~shotline.sensor.node.SensorNode` (the
node's own trigger, picker and time base, fed by
:class:`~shotline.sensor.audio.FileSource` as fast as possible); the
detections feed :class:`~shotline.hub.pipeline.HubPipeline`:

* **in process** (default): each node runs to the end, the detections of all
  nodes are merged in onset-time order and handed to the pipeline with the
  data's own time as the receive time and the watermark;
* **over MQTT** (:func:`play_bundle`, ``--broker``): one SensorNode per
  recording publishes to a broker and a :class:`~shotline.hub.service.HubService`
  (data-time watermark) subscribes, exactly as deployed.

Purely local bundles (ENU metres, no WGS84) are replayed through a synthetic
WGS84 frame (:class:`ReplayFrame`): the nodes' status messages must carry
latitude and longitude, so local positions are placed in a local frame at
0°N 0°E (:class:`shotline.hub.geometry.LocalFrame`), centred on the nodes;
positions coming back are mapped into the bundle's own frame. Over a few
kilometres the mapping preserves distances to well under a millimetre.
"""

from __future__ import annotations

import hashlib
import logging
import platform
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from shotline.core import messages as m
from shotline.core import topics
from shotline.core.config import BrokerSettings, config_hash, convert_config
from shotline.core.timebase import now_ns
from shotline.core.transport import MqttTransport
from shotline.core.version import package_version
from shotline.hub.config import HubConfig
from shotline.hub.geometry import LocalFrame
from shotline.hub.pipeline import HubPipeline, Output
from shotline.hub.service import HubService
from shotline.sensor.audio import FileSource
from shotline.sensor.config import (
    AudioSettings,
    ClipSettings,
    NodeSettings,
    SensorConfig,
    StorageSettings,
    TriggerSettings,
)
from shotline.sensor.node import SensorNode

from .bundle import Bundle

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_SITE",
    "PlayResult",
    "ReplayFrame",
    "ReplayResult",
    "ShotRecord",
    "hub_config_for",
    "play_bundle",
    "replay_in_process",
    "replay_mqtt",
    "run_provenance",
]

DEFAULT_SITE = "replay"


# --------------------------------------------------------------------------- frame
class ReplayFrame:
    """Maps a bundle's positions to WGS84 for the wire and back (metres, degrees).

    With a WGS84 bundle this is the bundle's own frame. A purely local bundle
    gets a local frame at 0°N 0°E whose origin is the centroid of its nodes.
    """

    def __init__(self, bundle: Bundle) -> None:
        self.local = bundle.frame is None
        if self.local:
            self.offset = bundle.node_enu_array().mean(axis=0)
            self.frame = LocalFrame(0.0, 0.0, 0.0)
        else:
            self.offset = np.zeros(3)
            self.frame = bundle.frame  # type: ignore[assignment]

    def to_wgs84(self, enu_m) -> tuple[float, float, float]:
        """Bundle-frame ENU (m) -> (lat_deg, lon_deg, alt_m)."""
        e, n, u = np.asarray(enu_m, float) - self.offset
        lat, lon, alt = self.frame.to_wgs84(e, n, u)
        return float(lat), float(lon), float(alt)

    def to_enu(self, lat_deg: float, lon_deg: float, alt_m: float) -> np.ndarray:
        """(lat_deg, lon_deg, alt_m) -> bundle-frame ENU (m)."""
        return np.array(self.frame.to_enu(lat_deg, lon_deg, alt_m), float) + self.offset


# --------------------------------------------------------------------------- configs
def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def hub_config_for(
    bundle: Bundle,
    overrides: dict[str, Any] | None = None,
    *,
    site: str = DEFAULT_SITE,
    broker: BrokerSettings | None = None,
) -> HubConfig:
    """The hub configuration for replaying ``bundle``.

    The speed of sound follows the bundle's recorded environment
    (``location.temperature_c`` = ``environment.temperature_c``) unless
    ``overrides`` set it; ``overrides`` is a nested dict with the keys of the
    hub TOML (docs/config.md), e.g. ``{"association": {"min_nodes": 4}}``.
    """
    base: dict[str, Any] = {
        "site": site,
        "location": {"temperature_c": bundle.environment.temperature_c},
    }
    if broker is not None:
        base["broker"] = msgspec.to_builtins(msgspec.structs.replace(broker, username="hub"))
    return convert_config(_merge(base, overrides or {}), HubConfig, "hub overrides")


def sensor_config_for(
    bundle: Bundle,
    node_id: str,
    frame: ReplayFrame,
    *,
    site: str = DEFAULT_SITE,
    broker: BrokerSettings | None = None,
    trigger: dict[str, Any] | None = None,
    speed: float | None = None,
    data_dir: str | Path | None = None,
) -> SensorConfig:
    """The SensorConfig of one bundle node (``trigger``: overrides of the ``[trigger]`` table).

    ``data_dir``: the node's outbox and clip folder (clips are then written, as on a
    real node, without the node's own clip server); None keeps both in memory / off.
    """
    node = bundle.node(node_id)
    lat, lon, alt = frame.to_wgs84(bundle.node_enu_m()[node_id])
    return SensorConfig(
        node=NodeSettings(site=site, node_id=node_id, lat_deg=lat, lon_deg=lon, alt_m=alt,
                          full_scale_spl_db=node.full_scale_spl_db, time_quality="replay"),
        broker=msgspec.structs.replace(broker or BrokerSettings(), username=node_id),
        audio=AudioSettings(path=str(bundle.audio_path(node_id)), start_time_ns=node.start_time_ns,
                            channel=node.channel, speed=speed or 0.0),
        trigger=convert_config(trigger or {}, TriggerSettings, "trigger overrides"),
        storage=StorageSettings(data_dir=None if data_dir is None else str(data_dir)),
        clips=ClipSettings(http_port=0),
    )


# --------------------------------------------------------------------------- results
class ShotRecord(msgspec.Struct, kw_only=True):
    """A located shot as replay writes it: the hub's Shot plus its place in the bundle frame."""

    bundle: str
    incident_id: str
    shot: m.Shot
    enu_m: list[float]
    """Position in the bundle's frame, metres (local bundles: their own x/y/z)."""


@dataclass
class ReplayResult:
    """What one replay of one bundle produced (in either mode)."""

    bundle: Bundle
    name: str
    mode: str
    hub_config: HubConfig
    trigger: dict[str, Any]
    detections: list[m.Detection] = field(default_factory=list)
    outputs: list[m.Incident] = field(default_factory=list)
    wall_s: float = 0.0
    dropped: dict[str, int] = field(default_factory=dict)

    def final_incidents(self) -> dict[str, m.Incident]:
        """The last revision of every incident, by id."""
        out: dict[str, m.Incident] = {}
        for inc in self.outputs:
            prev = out.get(inc.incident_id)
            if prev is None or inc.revision >= prev.revision:
                out[inc.incident_id] = inc
        return out

    def shots(self) -> list[ShotRecord]:
        """Final shots (last revision of each incident), in time order."""
        frame = ReplayFrame(self.bundle)
        recs = []
        for inc in self.final_incidents().values():
            for s in inc.shots:
                p = s.position
                enu = frame.to_enu(p.lat_deg, p.lon_deg, p.alt_m)
                recs.append(ShotRecord(bundle=self.name, incident_id=inc.incident_id, shot=s,
                                       enu_m=[round(float(v), 4) for v in enu]))
        return sorted(recs, key=lambda r: (r.shot.time_ns, r.shot.shot_id))

    def write(self, out_dir: str | Path) -> Path:
        """Write ``detections.jsonl``, ``incidents.jsonl``, ``shots.jsonl`` and ``run.json``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        enc = msgspec.json.Encoder()
        (out / "detections.jsonl").write_bytes(b"".join(enc.encode(d) + b"\n" for d in self.detections))
        (out / "incidents.jsonl").write_bytes(b"".join(enc.encode(i) + b"\n" for i in self.outputs))
        (out / "shots.jsonl").write_bytes(b"".join(enc.encode(s) + b"\n" for s in self.shots()))
        run = run_provenance(self.bundle, self.hub_config, self.trigger)
        run.update(mode=self.mode, bundle_name=self.name, wall_s=round(self.wall_s, 3),
                   n_detections=len(self.detections), n_incident_messages=len(self.outputs),
                   n_shots=len(self.shots()), dropped=self.dropped)
        (out / "run.json").write_bytes(msgspec.json.format(msgspec.json.encode(run), indent=2) + b"\n")
        return out


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run_provenance(bundle: Bundle, hub_cfg: HubConfig, trigger: dict[str, Any]) -> dict[str, Any]:
    """Versions, hashes and settings that make a replay reproducible (no seed: replay is deterministic)."""
    import scipy

    from .bundle import encode_manifest

    trig = msgspec.to_builtins(convert_config(trigger or {}, TriggerSettings, "trigger"))
    return {
        "shotline_version": package_version(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "platform": platform.platform(),
        "bundle": str(bundle.root) if bundle.root else None,
        "manifest_sha256": _sha256(encode_manifest(bundle.manifest)),
        "hub_config_hash": config_hash(hub_cfg),
        "hub_config": msgspec.to_builtins(msgspec.structs.replace(
            hub_cfg, broker=msgspec.structs.replace(hub_cfg.broker, password=None))),
        "trigger_config_hash": config_hash(trig),
        "trigger_config": trig,
        "model_sha256": _model_sha256(),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _model_sha256() -> str | None:
    """sha256 of the classifier model the nodes load (None when none ships)."""
    from shotline.models import default_model_path, file_sha256

    path = default_model_path()
    return file_sha256(path) if path.exists() else None


# --------------------------------------------------------------------------- in process
def run_node(cfg: SensorConfig) -> tuple[SensorNode, list[m.Detection]]:
    """Run one node's own code over its file as fast as possible; return the node and its detections."""
    assert cfg.audio.path is not None and cfg.audio.start_time_ns is not None
    src = FileSource(cfg.audio.path, cfg.audio.start_time_ns, channel=cfg.audio.channel,
                     block_s=cfg.audio.block_s, speed=None)
    node = SensorNode(cfg, src, None)
    node.run()
    return node, list(node.stats.detections)


def replay_in_process(
    bundle: Bundle,
    *,
    hub_overrides: dict[str, Any] | None = None,
    trigger: dict[str, Any] | None = None,
    site: str = DEFAULT_SITE,
    name: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> ReplayResult:
    """Replay ``bundle`` through SensorNodes and a HubPipeline in this process (deterministic).

    Detections of all nodes are merged in onset-time order (ties by node id);
    each is handed to the pipeline with its onset time as the receive time and
    followed by ``tick(onset time)``: in a time-ordered merge nothing older can
    still arrive, so the data time is the watermark.
    """
    t0 = time.monotonic()
    frame = ReplayFrame(bundle)
    hub_cfg = hub_config_for(bundle, hub_overrides, site=site)
    pipe = HubPipeline(hub_cfg)
    res = ReplayResult(bundle, name or _name(bundle), "in-process", hub_cfg, dict(trigger or {}))
    statuses = []
    for node_id in bundle.node_ids:
        cfg = sensor_config_for(bundle, node_id, frame, site=site, trigger=trigger)
        node, dets = run_node(cfg)
        statuses.append(node.status_message("online"))
        res.detections += dets
        if progress is not None:
            progress(node_id)
    t_first = min((d.onset_time_ns for d in res.detections), default=0)
    for st in statuses:
        res.outputs += [o.incident for o in pipe.handle(st.topic, st.payload, t_first)]
    res.detections.sort(key=lambda d: (d.onset_time_ns, d.node_id))
    for det in res.detections:
        topic = topics.node_topic(site, det.node_id, "detection")
        res.outputs += [o.incident for o in pipe.handle(topic, m.encode(det), det.onset_time_ns)]
        res.outputs += [o.incident for o in pipe.tick(det.onset_time_ns)]
    res.outputs += [o.incident for o in pipe.finish()]
    res.dropped = dict(pipe.ingest.dropped)
    res.wall_s = time.monotonic() - t0
    return res


def _name(bundle: Bundle) -> str:
    return bundle.root.name if bundle.root is not None else "bundle"


# --------------------------------------------------------------------------- over MQTT
@dataclass
class PlayResult:
    """What one run of a bundle through nodes and hub over MQTT produced."""

    outputs: list[tuple[Output, int]] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    detections: int = 0
    detection_messages: list[m.Detection] = field(default_factory=list)
    hub_health: dict = field(default_factory=dict)
    """The hub's :meth:`~shotline.hub.service.HubService.health` once the scene was played (before it stopped)."""


def play_bundle(
    bundle: Bundle,
    broker: BrokerSettings,
    *,
    site: str = DEFAULT_SITE,
    speed: float | None = 1.0,
    start_ns: int | None = None,
    hub_cfg: HubConfig | None = None,
    trigger: dict[str, Any] | None = None,
    on_output=None,
    keep_running: bool = False,
    printer=print,
    data_dir: str | Path | None = None,
    on_hub_started: Callable[[HubService], None] | None = None,
) -> PlayResult:
    """Replay every node of ``bundle`` through its own SensorNode into a HubService over MQTT.

    ``speed`` 1.0 paces each file in real time (``start_ns``, the scene's
    first-sample UTC, is then mapped onto the wall clock), ``None`` replays as
    fast as possible. ``on_output(output, published_ns)`` sees every incident
    message the hub publishes. ``data_dir``: each node keeps its outbox and
    clips in ``data_dir/<node_id>``. ``on_hub_started(hub)`` runs once the hub
    is connected (the demo starts the review page there).
    """
    result = PlayResult()
    frame = ReplayFrame(bundle)
    hub_cfg = hub_cfg or hub_config_for(bundle, site=site, broker=broker)
    # Paced replays follow the wall clock like a live hub; fast ones follow the data.
    hub = HubService(hub_cfg, watermark="wall" if speed is not None else "data")
    hub.listeners.append(lambda out, t: result.outputs.append((out, t)))
    if on_output is not None:
        hub.listeners.append(on_output)
    hub.start()
    if on_hub_started is not None:
        on_hub_started(hub)
    wall_start = None
    if speed is not None and start_ns is not None:
        wall_start = time.monotonic() + (start_ns - now_ns()) / 1e9
    nodes, transports, threads = [], [], []
    stop = threading.Event()
    try:
        for node_id in bundle.node_ids:
            cfg = sensor_config_for(bundle, node_id, frame, site=site, broker=broker, trigger=trigger,
                                    speed=speed, data_dir=None if data_dir is None else Path(data_dir) / node_id)
            src = FileSource(cfg.audio.path, cfg.audio.start_time_ns, channel=cfg.audio.channel,
                             speed=speed, wall_start=wall_start, stop_event=stop)
            node = SensorNode(cfg, src, None)
            tr = MqttTransport(cfg.broker, f"shotline-node-{site}-{node_id}",
                               will=node.status_message("offline"), birth=[node.status_message("online")])
            node.transport = tr
            tr.start()
            nodes.append(node)
            transports.append(tr)
            threads.append(threading.Thread(target=node.run, name=f"node-{node_id}", daemon=True))
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        for node in nodes:
            node.wait_acked(5.0)
        _wait_quiet(hub, sum(n.stats.n_published for n in nodes))
        if keep_running:
            printer("scene finished; broker and hub keep running (Ctrl-C to stop)")
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
    finally:
        stop.set()
        for node, tr in zip(nodes, transports, strict=False):
            if tr.connected:
                tr.publish(node.status_message("offline"))
                tr.flush(2.0)
            tr.stop()
        result.hub_health = hub.health()
        hub.stop(close_incidents=True)
    result.latencies_ms = list(hub.latencies_ms)
    result.dropped = dict(hub.pipeline.ingest.dropped)
    result.detections = sum(n.stats.n_onsets for n in nodes)
    result.detection_messages = [d for n in nodes for d in n.stats.detections]
    return result


def _wait_quiet(hub: HubService, n_published: int, quiet_s: float = 0.5, timeout_s: float = 30.0) -> None:
    """Wait until the hub has taken in (accepted or dropped) every published detection, then one tick more.

    A loaded machine can hold messages in the broker for a while: waiting for
    a quiet spell instead would close incidents before their last detections.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ingest = hub.pipeline.ingest
        if ingest.accepted["detection"] + sum(ingest.dropped.values()) >= n_published:
            break
        time.sleep(0.05)
    else:
        log.warning("hub saw fewer detections than the nodes published after %.0f s", timeout_s)
    time.sleep(max(quiet_s, 2 * hub.tick_s))  # let the data-watermark tick see the last detection


def parse_broker(text: str) -> BrokerSettings:
    """``HOST:PORT`` (or ``HOST``, port 1883) -> BrokerSettings; a clear error otherwise."""
    host, _, port = text.rpartition(":") if ":" in text else (text, "", "1883")
    try:
        return BrokerSettings(host=host or "127.0.0.1", port=int(port))
    except (ValueError, msgspec.ValidationError) as exc:
        raise ValueError(f"--broker {text!r}: expected HOST:PORT ({exc})") from None


def replay_mqtt(
    bundle: Bundle,
    broker: BrokerSettings | None = None,
    *,
    hub_overrides: dict[str, Any] | None = None,
    trigger: dict[str, Any] | None = None,
    site: str = DEFAULT_SITE,
    name: str | None = None,
) -> ReplayResult:
    """Replay ``bundle`` over MQTT as fast as possible (embedded broker when ``broker`` is None)."""
    from shotline.core.broker import EmbeddedBroker

    t0 = time.monotonic()
    embedded = None
    if broker is None:
        embedded = EmbeddedBroker(port=0).start()
        broker = BrokerSettings(port=embedded.port)
    try:
        hub_cfg = hub_config_for(bundle, hub_overrides, site=site, broker=broker)
        played = play_bundle(bundle, broker, site=site, speed=None, hub_cfg=hub_cfg,
                             trigger=trigger, printer=log.info)
    finally:
        if embedded is not None:
            embedded.stop()
    res = ReplayResult(bundle, name or _name(bundle), "mqtt", hub_cfg, dict(trigger or {}))
    res.detections = sorted(played.detection_messages, key=lambda d: (d.onset_time_ns, d.node_id))
    res.outputs = [o.incident for o, _ in played.outputs]
    res.dropped = played.dropped
    res.wall_s = time.monotonic() - t0
    return res


def replay_many(
    paths: Iterable[str | Path],
    out_dir: str | Path,
    *,
    broker: BrokerSettings | None = None,
    mqtt: bool = False,
    hub_overrides: dict[str, Any] | None = None,
    trigger: dict[str, Any] | None = None,
    show_progress: bool = True,
) -> list[ReplayResult]:
    """Replay several bundles, each into ``out_dir/<bundle name>/`` (progress bar over nodes)."""
    from tqdm import tqdm

    bundles = [Bundle.load(p) for p in paths]
    names = _unique_names(bundles)
    results = []
    total = sum(len(b.node_ids) for b in bundles)
    with tqdm(total=total, unit="node", desc="replay", disable=not show_progress) as bar:
        for b, name in zip(bundles, names, strict=True):
            bar.set_postfix_str(name)
            if mqtt or broker is not None:
                r = replay_mqtt(b, broker, hub_overrides=hub_overrides, trigger=trigger, name=name)
                bar.update(len(b.node_ids))
            else:
                r = replay_in_process(b, hub_overrides=hub_overrides, trigger=trigger, name=name,
                                      progress=lambda _n: bar.update(1))
            r.write(Path(out_dir) / name)
            results.append(r)
    return results


def _unique_names(bundles: list[Bundle]) -> list[str]:
    names = [_name(b) for b in bundles]
    if len(set(names)) == len(names):
        return names
    # Same folder names in different parents (FP1/test_001 ...): prefix the parent.
    return [f"{b.root.parent.name}-{b.root.name}" if b.root else f"bundle{i}" for i, b in enumerate(bundles)]
