"""``shotline demo``: simulated gunshots in Hartford, CT, end to end over MQTT.

Renders the Hartford scene (:mod:`shotline.calibration.hartford`) into a
recording bundle, starts the embedded broker, one sensor node per recording
(each replays its file in real time through the node's own code and
publishes detections over MQTT) and the hub, prints every located shot with
its error against the ground truth, then a summary (``--json`` for JSON).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shotline.core import messages as m
from shotline.core import topics
from shotline.core.broker import BrokerError, EmbeddedBroker, port_in_use
from shotline.core.config import BrokerSettings
from shotline.core.timebase import now_ns, ns_to_iso
from shotline.core.transport import TransportError
from shotline.hub import grid_kernels, lm_kernel
from shotline.hub.geometry import LocalFrame
from shotline.hub.pipeline import Output
from shotline.sensor.config import SensorConfig

from .bundle import Bundle
from .hartford import SITE, hartford_scene
from .replay import PlayResult, ReplayFrame, hub_config_for, play_bundle, sensor_config_for

__all__ = ["DemoResult", "PlayResult", "TruthMatcher", "play_bundle", "run_demo"]
from .simulator import render_scene

log = logging.getLogger(__name__)

DEFAULT_PORT = 18830
DEFAULT_WEB_PORT = 8740


@dataclass
class TruthMatch:
    """A located shot matched to the true event it belongs to."""

    shot_id: str
    event_id: str | None
    kind: str | None
    error_m: float | None


@dataclass
class DemoResult:
    """What the demo measured."""

    incidents: dict[str, m.Incident] = field(default_factory=dict)
    matches: dict[str, TruthMatch] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    fired: int = 0
    events: int = 0
    wall_s: float = 0.0
    dropped: dict[str, int] = field(default_factory=dict)
    hub_health: dict = field(default_factory=dict)

    def summary(self) -> dict:
        gun = [x for x in self.matches.values() if x.kind == "gunshot"]
        found = {x.event_id for x in gun}
        errs = [x.error_m for x in self.matches.values() if x.error_m is not None and x.kind == "gunshot"]
        lat = np.array(self.latencies_ms) if self.latencies_ms else np.array([np.nan])
        return {
            "incidents": len(self.incidents),
            "shots_located": len(self.matches),
            "shots_fired": self.fired,
            "shots_found": len(found),
            "false_shots": sum(1 for x in self.matches.values() if x.event_id is None),
            "non_gunshot_events_located": sorted({x.event_id for x in self.matches.values() if x.kind not in (None, "gunshot")}),
            "median_error_m": round(float(np.median(errs)), 3) if errs else None,
            "max_error_m": round(float(np.max(errs)), 3) if errs else None,
            "latency_p50_ms": round(float(np.nanpercentile(lat, 50)), 2),
            "latency_p99_ms": round(float(np.nanpercentile(lat, 99)), 2),
            "latency_max_ms": round(float(np.nanmax(lat)), 2),
            "wall_s": round(self.wall_s, 1),
            "dropped_messages": self.dropped,
            "hub_busy_fraction": self.hub_health.get("busy_fraction"),
            "delivery_delay_p95_s": self.hub_health.get("delivery_delay", {}).get("p95_s"),
        }


class TruthMatcher:
    """Matches located shots to the bundle's ground-truth events (nearest in place among those near in time)."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self.frame: LocalFrame = bundle.frame  # type: ignore[assignment]
        self.events = bundle.events
        self.enu = bundle.event_enu_m()

    def match(self, shot: m.Shot) -> TruthMatch:
        e, n, _ = self.frame.to_enu(shot.position.lat_deg, shot.position.lon_deg, shot.position.alt_m)
        best, best_d = None, np.inf
        for ev in self.events:
            if abs(ev.time_ns - shot.time_ns) > 0.2e9:
                continue
            d = float(np.hypot(self.enu[ev.event_id][0] - e, self.enu[ev.event_id][1] - n))
            if d < best_d:
                best, best_d = ev, d
        if best is None or best_d > 100.0:
            return TruthMatch(shot.shot_id, None, None, None)
        return TruthMatch(shot.shot_id, best.event_id, best.kind, best_d)


def _node_config(bundle: Bundle, node_id: str, broker: BrokerSettings, site: str,
                 speed: float | None) -> SensorConfig:
    """The SensorConfig a replay gives one bundle node (kept for callers of the old helper)."""
    return sensor_config_for(bundle, node_id, ReplayFrame(bundle), site=site, broker=broker, speed=speed)


def run_demo(
    *,
    port: int = DEFAULT_PORT,
    web_port: int | None = DEFAULT_WEB_PORT,
    speed: float = 1.0,
    out_dir: str | Path | None = None,
    seed: int = 7,
    keep_running: bool = False,
    quiet: bool = False,
    printer=print,
) -> DemoResult:
    """Run the whole demo; return what it measured.

    ``web_port``: serve the review page there (0: any free port; None: no page).
    Raises BrokerError if ``port`` or ``web_port`` is taken.
    """
    result = DemoResult()
    t_wall0 = time.monotonic()
    if web_port and port_in_use("127.0.0.1", web_port):
        raise BrokerError(f"port {web_port} on 127.0.0.1 (review page) is already in use; "
                          "choose another with --web-port (0 picks a free one)")
    broker = EmbeddedBroker(port=port).start()
    web = None
    tmp = None
    try:
        if out_dir is None:
            tmp = tempfile.TemporaryDirectory(prefix="shotline-demo-")
            out_dir = tmp.name
        # The hub's compiled kernels first (loaded from numba's cache; compiled on the first run,
        # 16-17 s on the dev machine): the nodes replay against the wall clock from the scene's
        # start, and a hub still compiling then took them as late (2 of 6 gunshots found).
        if not quiet:
            printer("preparing the hub's compiled kernels (a first run compiles them: 16 s on a 2-core dev machine) ...")
        grid_kernels.compile_all()
        lm_kernel.compile_all()
        lead_s = 3.0  # time to render and connect before the scene's first sample
        start_ns = now_ns() + int(lead_s * 1e9)
        scene = hartford_scene(start_ns, seed=seed)
        bundle = render_scene(scene, Path(out_dir) / "hartford", seed=seed)
        result.fired = sum(1 for e in bundle.events if e.kind == "gunshot")
        result.events = len(bundle.events)
        matcher = TruthMatcher(bundle)
        if not quiet:
            printer(f"Shotline demo: {len(bundle.node_ids)} nodes over Hartford, CT "
                    f"(Upper Albany, Clay Arsenal, Northeast, South Green); broker on 127.0.0.1:{broker.port}")
            printer(f"scene: {result.events} events ({result.fired} gunshots), {scene.duration_s:.0f} s, "
                    f"replayed at {speed:g}x real time")
        lock = threading.Lock()

        def on_incident(out: Output, published_ns: int) -> None:
            inc = out.incident
            with lock:
                result.incidents[inc.incident_id] = inc
                for shot in inc.shots:
                    first = shot.shot_id not in result.matches
                    tm = matcher.match(shot)
                    result.matches[shot.shot_id] = tm
                    if first and not quiet:
                        truth = (f"error {tm.error_m:5.1f} m vs {tm.event_id} ({tm.kind})"
                                 if tm.event_id else "no true event nearby")
                        lat_ms = ((published_ns - out.caused_by_received_ns) / 1e6
                                  if out.caused_by_received_ns else float("nan"))
                        printer(f"{ns_to_iso(shot.time_ns)[11:23]}  {inc.incident_id}  round {inc.rounds}  "
                                f"{shot.position.lat_deg:.6f},{shot.position.lon_deg:.6f}  "
                                f"CEP95 {shot.cep95_m:5.1f} m  {shot.n_nodes:2d} nodes  {truth}  "
                                f"[{lat_ms:.0f} ms]")
                if inc.state == "closed" and not quiet:
                    final = ", ".join(
                        f"{result.matches[s.shot_id].event_id or '?'}: {s.n_nodes} nodes, "
                        f"error {result.matches[s.shot_id].error_m or float('nan'):.2f} m"
                        for s in inc.shots
                    )
                    printer(f"  closed {inc.incident_id}: {inc.rounds} round(s)"
                            f"{', automatic' if inc.automatic_fire else ''}, class {inc.event_class} [{final}]")

        def start_review_page(hub) -> None:
            nonlocal web
            if web_port is None:
                return
            web = _start_review_page(hub, Path(out_dir), web_port)
            if not quiet:
                printer(f"review page: {web.url}  (user demo, password {web.demo_password})")

        # The scene's street level: the simulator's ground plane, at its origin's altitude plus the
        # ground's height (the assumed source height is measured from it: docs/config.md).
        ground_alt_m = scene.origin.alt_m + (scene.ground.height_m if scene.ground is not None else 0.0)
        hub_cfg = hub_config_for(bundle, {"location": {"ground_alt_m": ground_alt_m}}, site=SITE,
                                 broker=BrokerSettings(port=broker.port))
        played = play_bundle(
            bundle, BrokerSettings(port=broker.port), site=SITE, speed=speed, start_ns=start_ns, hub_cfg=hub_cfg,
            on_output=on_incident, keep_running=keep_running, printer=printer,
            data_dir=Path(out_dir) / "nodes", on_hub_started=start_review_page,
        )
        result.latencies_ms = played.latencies_ms
        result.dropped = played.dropped
        result.hub_health = played.hub_health
    finally:
        if web is not None:
            web.stop()
        broker.stop()
        if tmp is not None:
            tmp.cleanup()
    result.wall_s = time.monotonic() - t_wall0
    return result


def _start_review_page(hub, out_dir: Path, web_port: int):
    """Serve the review page for the demo hub, with a fresh ``demo`` operator account.

    Clips come from the nodes' clip folders (``out_dir/nodes/<node>/clips``).
    The demo's own password file lives in ``out_dir``; the password is printed.
    """
    import secrets

    from shotline.hub.web.auth import UserDB
    from shotline.hub.web.server import start_web
    from shotline.hub.web.settings import WebSettings

    password = secrets.token_urlsafe(9)
    users_path = out_dir / "users.json"
    UserDB(users_path).add("demo", password, "operator", replace=True)
    settings = WebSettings(port=web_port, users_path=str(users_path), clip_dir=str(out_dir / "nodes"))
    web = start_web(settings, hub, site=SITE, on_review=hub.publish_review)
    web.demo_password = password
    return web


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.add_argument("--keep-running", action="store_true", help="keep the broker and hub up after the scene")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"embedded broker port on 127.0.0.1 (default {DEFAULT_PORT}; 0 picks a free one)")
    p.add_argument("--web-port", type=int, default=DEFAULT_WEB_PORT,
                   help=f"review page port on 127.0.0.1 (default {DEFAULT_WEB_PORT}; 0 picks a free one)")
    p.add_argument("--no-web", action="store_true", help="do not serve the review page")
    p.add_argument("--speed", type=float, default=1.0, help="replay pace, 1.0 = real time")
    p.add_argument("--seed", type=int, default=7, help="scene and noise seed")
    p.add_argument("--out", help="keep the rendered recording bundle in this folder")


def main_demo(args: argparse.Namespace) -> int:
    printer = (lambda s: print(s, file=sys.stderr, flush=True)) if args.json else (lambda s: print(s, flush=True))
    try:
        res = run_demo(port=args.port, speed=args.speed, seed=args.seed, out_dir=args.out,
                       keep_running=args.keep_running, printer=printer,
                       web_port=None if args.no_web else args.web_port)
    except BrokerError as exc:
        print(f"shotline demo: {exc}", file=sys.stderr)
        return 2
    except TransportError as exc:
        print(f"shotline demo: {exc}", file=sys.stderr)
        return 1
    s = res.summary()
    if args.json:
        print(json.dumps(s, indent=2))
    else:
        print(f"\nsummary: {s['incidents']} incidents; {s['shots_found']}/{s['shots_fired']} gunshots found; "
              f"{s['false_shots']} false shot(s); located non-gunshot events: "
              f"{', '.join(s['non_gunshot_events_located']) or 'none'}")
        print(f"location error (gunshots): median {s['median_error_m']} m, max {s['max_error_m']} m; "
              f"latency last detection -> incident: p50 {s['latency_p50_ms']} ms, p99 {s['latency_p99_ms']} ms; "
              f"{s['wall_s']} s wall")
        if s["hub_busy_fraction"] is not None and s["delivery_delay_p95_s"] is not None:
            print(f"hub: busy {100 * s['hub_busy_fraction']:.1f} % of the last minute, detections delivered "
                  f"within {s['delivery_delay_p95_s']:.2f} s (p95), {sum(s['dropped_messages'].values())} "
                  f"message(s) dropped (its health: shotline-hub health, the topic {topics.hub_health_topic(SITE)}, "
                  "GET /api/hub on the review page)")
    return 0
