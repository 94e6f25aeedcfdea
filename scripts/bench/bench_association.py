"""Benchmark of hub association on the dense scene of DESIGN.md, and hub throughput.

Scene (synthetic detections from a forward model, seeded): 30 nodes on an
irregular ~1.3 x 1.0 km urban grid (microphones 4-15 m up), c = 343 m/s, and

* two shooters 180 m apart, each firing bursts of automatic fire at
  10 rounds/s, interleaved (B fires 50 ms after A);
* fireworks: strings of firecrackers at street level, 15-25 bangs each with
  irregular 30-150 ms spacing, from two places;
* echoes: a wall 25 m from shooter A mirrors it (an image source heard by the
  nodes on A's side of the wall, each with 60 % probability: a physically
  consistent set of late picks, the classic ghost shot), plus random late
  picks 5-80 ms after 15 % of direct arrivals;
* early supersonic N-waves: nodes within 25 deg of a gunshot's line of fire
  (and more than 60 m away) pick the bullet's shock wave 3-25 ms before the
  muzzle blast, and then the muzzle blast too;
* 10 % missed detections (every direct arrival is dropped with p = 0.1);
* unrelated impulses at single nodes (car doors, dogs), 0.15 per second per node;
* pick noise N(0, 60 us), reported onset_sigma_s 50 us; audible range 900 m
  for gunshots, 650 m for firecrackers;
* peak levels (the hub compares them within a node: reverberation tails,
  earlier alternatives, bursts): 155 dB SPL at 1 m for a gunshot's muzzle
  blast, 140 dB for a firecracker, spherical spreading, 0.005 dB/m excess
  attenuation, +-1.5 dB per pick, 0 dBFS at 130 dB SPL; an echo 0-12 dB
  below its direct sound, a shock wave within +-6 dB of its blast, the wall's
  ghost 2 dB of reflection loss below its image source's level, strays -50
  to -20 dBFS. Drawn from their own generator, so the times are those of the
  scene without levels. (Real echoes are later and more: on the Pittsburgh
  recordings 2.9 onsets follow each gunshot arrival within 1 s at its
  sensor, a median 315 ms later and 8.3 dB down; see
  ``bench_pittsburgh_picks.py``.);
* delivery: each detection reaches the hub 20-250 ms after its onset (network
  and sensor latency), so arrival order differs from onset order across nodes;
  one node's detections are in order.

Figures:

* ``assoc_found_pct``: share of sources (gunshots and firecrackers
  heard by at least 4 nodes) matched by a located shot within 5 ms of the true
  emission time and 10 m of the true position. Budget >= 98 %.
* ``assoc_false_pct``: share of located shots that match no source (echo
  ghosts, chance alignments, shifted automatic-fire sets). Budget <= 2 %.
* ``assoc_cpu_s_per_scene_s``: process CPU time of the hub pipeline
  (ingest -> association -> location -> incidents, message bytes in, Incident
  messages out) per second of scene, with the heap loaded before the play
  frozen out of the collector's full passes, as ``shotline-hub run`` does
  once started. Budget <= 0.5.
* ``hub_detections_per_s``: detections processed per CPU second. Budget >= 5000.
  It and ``assoc_cpu_s_per_scene_s`` take the median CPU time of ``CPU_RUNS``
  (3; 1 with ``--quick``) plays of the scene (one play's CPU time moves by a fifth from run to run
  on a shared machine); ``hub_detections_per_s_slowest`` / ``_fastest`` give
  the spread.
* ``hub_detections_per_s_warm`` / ``assoc_found_pct_warm``: the same scene played on a hub that first
  played another draw of the same night on the same nodes (untimed, ending a minute before): a
  hub that has run a while, its per-node tables and caches filled. One play (the budget figure is
  the cold one above).
* ``hub_detections_per_s_no_levels`` / ``assoc_found_pct_no_levels``: the same scene with every
  detection at one level (-20 dBFS), as this bench had it until 2026-12: the hub's level rules
  then never apply (every pick is searched like a direct sound).
* ``assoc_found_pct_real_echoes`` / ``assoc_false_pct_real_echoes`` /
  ``hub_detections_per_s_real_echoes`` (full runs): the same scene with echoes as many and as late
  as on the Pittsburgh recordings added (:func:`real_echoes`: ~3 per direct arrival within 1 s,
  a median ~0.3 s late, most of them tails), three times the detections.
* ``hub_latency_p99_ms``: 99th percentile, over the calls that published an
  incident, of the in-process time from handing the detection to the pipeline
  to the incident message being ready (transport excluded). Budget <= 100 ms.
* ``assoc_loc_p50_m`` / ``assoc_loc_p95_m``: 2-D error of the matched shots.
* ``assoc_alert_delay_p50_s`` / ``_p95_s`` / ``_max_s``: scene seconds from a
  found source's emission to the first publication of its shot (the message
  or tick that published it; sound travel and delivery included, compute
  time not): what an operator waits for an alert.
* ``hub_kernels_start_s``: wall seconds a fresh process takes to load the hub's
  compiled kernels from numba's cache (the associator does it when it is made,
  so no detection waits for it; not part of the CPU figures above).
* scaling (full runs, or ``--scaling``): ``hub_us_per_det_n100`` / ``_n1024`` /
  ``_n10000`` and ``hub_cpu_s_per_scene_s_*``: CPU per detection and per
  second of scene on networks of 100, 1,024 and 10,000 nodes (250 m
  spacing, so the area grows with the network) on a fireworks night (the
  scene's shooters and fireworks plus 40 random gunshots/s city-wide);
  ``_n1024_rate0`` / ``_rate15``: the same 1,024 nodes with 0 and 15 random
  gunshots/s. ``hub_impulses_per_s_*`` (the impulse rate each run had) and
  ``hub_dets_per_scene_s_*`` give each run's load; ``hub_found_pct_*`` and
  ``hub_false_pct_*`` (and ``hub_alert_delay_p95_s_*``) what association made of it (scored as the dense
  scene; no budget: the dense scene's budgets are for its 30 nodes). ``hub_us_per_det_n*_warm`` /
  ``hub_cpu_s_per_scene_s_n*_warm`` / ``hub_found_pct_n*_warm``: the network-size runs on a hub
  warmed by 12 s of another draw of the same night (as ``hub_detections_per_s_warm``): a 6-s scene's cold figure is mostly first-time
  per-node work (seed tables, partners, neighbours), which a running hub has done.
* ``hub_detections_per_s_clean`` / ``hub_found_pct_clean``: detections per CPU second and sources
  found on a clean stream (:func:`clean_scene`: 1,024 nodes, 20 gunshots/s city-wide for 20 s,
  direct arrivals only): the cost of the path itself, without the junk picks that no source
  explains.

Run: ``.venv/bin/python scripts/bench/bench_association.py [--quick] [--scaling]``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import gc  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import numpy as np  # noqa: E402

from shotline.core import messages as m  # noqa: E402
from shotline.core import topics  # noqa: E402
from shotline.hub.config import AssociationSettings, HubConfig, LocationSettings  # noqa: E402
from shotline.hub.geometry import LocalFrame  # noqa: E402
from shotline.hub.pipeline import HubPipeline  # noqa: E402

SITE = "bench"
C_MPS = 343.0
FRAME = LocalFrame(40.4406, -79.9959, 250.0)
T0_NS = 1_800_000_000_000_000_000
PICK_SIGMA_S = 60e-6
SOURCE_H = 1.5
# Levels (the hub compares peak levels within one node: reverberation tails, earlier alternatives).
SOURCE_DB_SPL = {"gunshot": 155.0, "firework": 140.0}  # peak dB SPL at 1 m
FULL_SCALE_DB_SPL = 130.0  # a node's microphone clips at this SPL (0 dBFS)
NOISE_DBFS = -60.0
EXCESS_DB_PER_M = 0.005  # air absorption and ground effect beyond spreading
LEVEL_SD_DB = 1.5  # per pick: round-to-round and turbulence
ECHO_DROP_MAX_DB = 12.0  # an echo is 0-12 dB below its direct sound (Pittsburgh: 53 % of the picks that
# are no direct arrival are at least 6 dB below a pick less than 1 s before them)
NWAVE_DB = 6.0  # a shock wave is within +-6 dB of its muzzle blast
WALL_LOSS_DB = 2.0  # reflection loss at the wall
STRAY_DBFS = (-50.0, -20.0)  # car doors, dogs, near the node


@dataclass
class Source:
    """One true impulsive source of the scene."""

    kind: str  # "gunshot" | "firework"
    xyz: np.ndarray
    t_s: float
    heading_rad: float = 0.0


@dataclass
class Scene:
    """Nodes, true sources and their detections."""

    nodes: dict[str, np.ndarray]
    sources: list[Source]
    duration_s: float
    dets: list[tuple[str, int, int, str, float]] = field(default_factory=list)
    """(node, onset ns, receive ns, what made it, peak dBFS)."""


def network(n_e: int, n_n: int, spacing_m: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """An irregular grid of nodes (ENU metres, 4-15 m up), centred on the origin."""
    out = {}
    for j in range(n_n):
        for i in range(n_e):
            x = (i - (n_e - 1) / 2) * spacing_m + rng.uniform(-0.2, 0.2) * spacing_m
            y = (j - (n_n - 1) / 2) * spacing_m + rng.uniform(-0.2, 0.2) * spacing_m
            out[f"N{len(out):05d}"] = np.array([x, y, rng.uniform(4.0, 15.0)])
    return out


def dense_scene(duration_s: float = 20.0, seed: int = 1, nodes: dict[str, np.ndarray] | None = None,
                extra_rate_hz: float = 0.0) -> Scene:
    """The DESIGN.md dense scene (see the module docstring); ``extra_rate_hz`` adds city-wide random gunshots."""
    rng = np.random.default_rng(seed)
    lrng = np.random.default_rng([seed, 1])  # levels: their own draws, so the times are as without them
    nodes = nodes if nodes is not None else network(6, 5, 250.0, rng)
    srcs: list[Source] = []
    a = np.array([-120.0, 60.0, SOURCE_H])
    b = np.array([60.0, 40.0, SOURCE_H])
    t = 1.0
    while t < duration_s - 3.0:
        n_rounds = int(rng.integers(5, 12))
        ha, hb = rng.uniform(0, 2 * np.pi, 2)
        for k in range(n_rounds):
            srcs.append(Source("gunshot", a, t + 0.1 * k + rng.normal(0, 0.004), ha))
            srcs.append(Source("gunshot", b, t + 0.05 + 0.1 * k + rng.normal(0, 0.004), hb))
        t += 0.1 * n_rounds + rng.uniform(1.0, 3.0)
    for place, t_start in ((np.array([300.0, -250.0, 0.5]), 2.5), (np.array([-400.0, -150.0, 0.5]), duration_s / 2)):
        tt = t_start
        for _ in range(int(rng.integers(15, 26))):
            jitter = np.r_[rng.normal(0, 3.0, 2), 0.0]
            srcs.append(Source("firework", place + jitter, tt))
            tt += rng.uniform(0.03, 0.15)
    half = np.ptp(np.array(list(nodes.values()))[:, :2], axis=0) / 2
    for _ in range(rng.poisson(extra_rate_hz * (duration_s - 2.5))):  # at that rate over [0.5, duration - 2] s
        xy = rng.uniform(-half * 0.8, half * 0.8)
        srcs.append(Source("gunshot", np.r_[xy, SOURCE_H], rng.uniform(0.5, duration_s - 2.0), rng.uniform(0, 2 * np.pi)))
    srcs.sort(key=lambda s: s.t_s)
    scene = Scene(nodes, srcs, duration_s)

    ids = list(nodes)
    pos = np.array([nodes[k] for k in ids])
    # A wall 25 m east of shooter A (the plane x = a_x + 25): its image source.
    wall_x = a[0] + 25.0
    image = np.array([2 * wall_x - a[0], a[1], a[2]])
    on_a_side = pos[:, 0] < wall_x
    for s in srcs:
        d = np.linalg.norm(pos - s.xyz, axis=1)
        rng_m = 900.0 if s.kind == "gunshot" else 650.0
        heard = (d < rng_m) & (rng.random(len(ids)) > 0.10)
        t_arr = s.t_s + d / C_MPS + rng.normal(0, PICK_SIGMA_S, len(ids))
        lv = _peak_dbfs(s.kind, d, lrng)
        for i in np.flatnonzero(heard):
            scene.dets.append((ids[i], _ns(t_arr[i]), 0, "direct", lv[i]))
            if rng.random() < 0.15:
                scene.dets.append((ids[i], _ns(t_arr[i] + rng.uniform(0.005, 0.08)), 0, "echo",
                                   lv[i] - lrng.uniform(0.0, ECHO_DROP_MAX_DB)))
        if s.kind == "gunshot":
            bearing = np.arctan2(pos[:, 1] - s.xyz[1], pos[:, 0] - s.xyz[0])
            off = np.abs((bearing - s.heading_rad + np.pi) % (2 * np.pi) - np.pi)
            for i in np.flatnonzero((off < np.radians(25)) & (d > 60.0) & (d < rng_m)):
                scene.dets.append((ids[i], _ns(t_arr[i] - rng.uniform(0.003, 0.025)), 0, "nwave",
                                   min(0.0, lv[i] + lrng.uniform(-NWAVE_DB, NWAVE_DB))))
        if s.kind == "gunshot" and np.array_equal(s.xyz, a):
            di = np.linalg.norm(pos - image, axis=1)
            lv_wall = _peak_dbfs(s.kind, di, lrng) - WALL_LOSS_DB
            for i in np.flatnonzero(on_a_side & (di < rng_m) & (rng.random(len(ids)) < 0.6)):
                scene.dets.append((ids[i], _ns(s.t_s + di[i] / C_MPS + rng.normal(0, PICK_SIGMA_S)), 0, "wall",
                                   lv_wall[i]))
    for nid in ids:
        for tt in rng.uniform(0, duration_s, rng.poisson(0.15 * duration_s)):
            scene.dets.append((nid, _ns(tt), 0, "stray", lrng.uniform(*STRAY_DBFS)))
    scene.dets = _deliver(scene.dets, rng)
    return scene


def clean_scene(duration_s: float, rate_hz: float, nodes: dict[str, np.ndarray], seed: int = 5) -> Scene:
    """Random gunshots city-wide at ``rate_hz`` over ``nodes``, heard within 900 m, 10 % of picks missed,
    and nothing else (no echoes, N-waves, ghosts or strays): what the path costs per detection when
    every detection belongs to a source. Delivered as :func:`dense_scene`'s (:func:`_deliver`)."""
    rng = np.random.default_rng(seed)
    lrng = np.random.default_rng([seed, 1])
    ids = list(nodes)
    pos = np.array([nodes[k] for k in ids])
    half = np.ptp(pos[:, :2], axis=0) / 2
    srcs = sorted((Source("gunshot", np.r_[rng.uniform(-half * 0.8, half * 0.8), SOURCE_H],
                          rng.uniform(0.5, duration_s - 2.0)) for _ in range(rng.poisson(rate_hz * (duration_s - 2.5)))),
                  key=lambda s: s.t_s)
    dets = []
    for s in srcs:
        d = np.linalg.norm(pos - s.xyz, axis=1)
        t_arr = s.t_s + d / C_MPS + rng.normal(0, PICK_SIGMA_S, len(ids))
        lv = _peak_dbfs(s.kind, d, lrng)
        dets += [(ids[i], _ns(t_arr[i]), 0, "direct", lv[i])
                 for i in np.flatnonzero((d < 900.0) & (rng.random(len(ids)) > 0.1))]
    return Scene(nodes, srcs, duration_s, _deliver(dets, rng))


def _deliver(dets: list[tuple[str, int, int, str, float]], rng: np.random.Generator
             ) -> list[tuple[str, int, int, str, float]]:
    """The detections with their receive times, in delivery order: per node in onset order, each
    20-250 ms after its onset but never before the node's previous detection was delivered."""
    by_node: dict[str, list[tuple[str, int, int, str, float]]] = {}
    for d in dets:
        by_node.setdefault(d[0], []).append(d)
    out = []
    for nid, lst in by_node.items():
        lst.sort(key=lambda d: d[1])
        last = 0
        seen = set()
        for d in lst:
            if d[1] in seen:
                continue  # two picks within 1 ns: a node reports one
            seen.add(d[1])
            rec = max(last, d[1] + int(rng.uniform(0.02, 0.25) * 1e9))
            last = rec
            out.append((nid, d[1], rec, d[3], d[4]))
    out.sort(key=lambda d: d[2])
    return out


#: What follows a gunshot arrival at a sensor on the Pittsburgh recordings (``bench_pittsburgh_picks.py``,
#: ``pgh_later_*``): onsets per arrival within 1 s, and per lag band (s) the count of them and their
#: median level drop (dB).
REAL_ECHOES_PER_DIRECT = 2.9
REAL_ECHO_BANDS = ((0.0, 0.05, 35, 0.0), (0.05, 0.1, 42, 5.3), (0.1, 0.2, 169, 4.6), (0.2, 0.5, 349, 8.1),
                   (0.5, 1.0, 265, 13.0))
REAL_ECHO_DROP_SD_DB = 6.0


def real_echoes(scene: Scene, seed: int = 99) -> Scene:
    """``scene`` with echoes as many and as late as on the Pittsburgh recordings added to its own: per
    direct arrival a Poisson number (mean ``REAL_ECHOES_PER_DIRECT``) at that node, each in a lag band
    drawn by its share, uniform in it, its level the band's median drop below the direct sound (spread
    ``REAL_ECHO_DROP_SD_DB``, never louder). Independent at each node, as the dense scene's own echoes."""
    rng = np.random.default_rng(seed)
    share = np.array([b[2] for b in REAL_ECHO_BANDS], float)
    share /= share.sum()
    dets = [(d[0], d[1], 0, d[3], d[4]) for d in scene.dets]
    for nid, t_ns, _, what, level in scene.dets:
        if what != "direct":
            continue
        for _ in range(rng.poisson(REAL_ECHOES_PER_DIRECT)):
            lo, hi, _, drop = REAL_ECHO_BANDS[rng.choice(len(REAL_ECHO_BANDS), p=share)]
            dets.append((nid, t_ns + int(rng.uniform(lo, hi) * 1e9), 0, "echo",
                         level - max(0.0, rng.normal(drop, REAL_ECHO_DROP_SD_DB))))
    return Scene(scene.nodes, scene.sources, scene.duration_s, _deliver(dets, rng))


def _peak_dbfs(kind: str, d_m: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Peak level (dBFS) at distances ``d_m`` (m) of a source of ``kind``: its level at 1 m, spherical
    spreading, excess attenuation, a per-pick spread; a microphone clips at 0 dBFS."""
    lv = (SOURCE_DB_SPL[kind] - FULL_SCALE_DB_SPL - 20.0 * np.log10(np.maximum(d_m, 1.0))
          - EXCESS_DB_PER_M * d_m + rng.normal(0.0, LEVEL_SD_DB, np.shape(d_m)))
    return np.minimum(lv, 0.0)


def _ns(t_s: float) -> int:
    return T0_NS + int(round(t_s * 1e9))


def make_pipeline(nodes: dict[str, np.ndarray]) -> HubPipeline:
    """A hub configured as a site would be: the scene's street level is its frame's origin (sources
    ``SOURCE_H`` above it, microphones 4-15 m), given as ``ground_alt_m``; nodes from status messages."""
    cfg = HubConfig(site=SITE, location=LocationSettings(speed_of_sound_mps=C_MPS, timing_sigma_s=60e-6,
                                                         source_height_m=SOURCE_H, ground_alt_m=FRAME.alt_m),
                    association=AssociationSettings(max_range_m=1000.0))
    p = HubPipeline(cfg)
    for nid, r in nodes.items():
        lat, lon, alt = FRAME.to_wgs84(*r)
        msg = m.NodeStatus(site=SITE, node_id=nid, state="online",
                           position=m.Position(lat_deg=lat, lon_deg=lon, alt_m=alt))
        p.handle(topics.node_topic(SITE, nid, "status"), m.encode(msg), received_ns=0)
    return p


def encode_detections(scene: Scene, levels: bool = True, shift_ns: int = 0,
                      id_prefix: str = "") -> list[tuple[str, bytes, int]]:
    """(topic, payload, received_ns) for every detection, in delivery order; without ``levels``
    every detection reports the same peak level (-20 dBFS), as this bench's scenes did before.
    ``shift_ns`` moves every onset and receipt; ``id_prefix`` starts every detection id."""
    out = []
    for k, (nid, t_ns, rec, _what, peak) in enumerate(scene.dets):
        peak = float(peak) if levels else -20.0
        det = m.Detection(detection_id=f"{id_prefix}{nid}-{k}", site=SITE, node_id=nid, onset_time_ns=t_ns + shift_ns,
                          onset_sigma_s=50e-6, time_quality="pps", peak_dbfs=peak, snr_db=peak - NOISE_DBFS,
                          noise_floor_dbfs=NOISE_DBFS)
        out.append((topics.node_topic(SITE, nid, "detection"), m.encode(det), rec + shift_ns))
    return out


#: Seconds between a warm-up scene's end and the measured scene's start (:func:`play`): more than an
#: incident's gap (20 s) and the wait window, so that nothing of the warm-up is open when the play starts.
WARM_GAP_S = 60.0


def play(scene: Scene, tick_s: float = 0.1, first_ns: dict[str, int] | None = None, levels: bool = True,
         warm: Scene | None = None):
    """Feed the scene through a pipeline; returns (final shots by id, cpu_s, latencies_ms, pipeline).

    ``first_ns``, if given, receives per shot id the scene time (ns) of the message or tick that
    first published it. ``warm``: a scene on the same nodes played first, untimed, ending
    ``WARM_GAP_S`` before this one starts (its incidents closed, its picks expired): the hub as it is
    after running a while (its per-node tables and caches filled), not as it starts.
    """
    p = make_pipeline(scene.nodes)
    if warm is not None:
        shift = -int((warm.duration_s + WARM_GAP_S) * 1e9)
        next_tick = T0_NS + shift
        for topic, payload, rec in encode_detections(warm, levels, shift, "warm-"):
            if rec >= next_tick:
                p.tick(rec)
                next_tick = rec + int(tick_s * 1e9)
            p.handle(topic, payload, rec)
        p.tick(T0_NS - int(1e9))
    msgs = encode_detections(scene, levels)
    shots: dict[str, m.Shot] = {}
    first = first_ns if first_ns is not None else {}
    lat_ms = []
    next_tick = T0_NS

    def take(outs, now_ns):
        for o in outs:
            for s in o.incident.shots:
                shots[s.shot_id] = s
                first.setdefault(s.shot_id, now_ns)

    # As `shotline-hub run` does once started: what is loaded stays out of the collector's full passes
    # (undone after the play, so that the next play's pipeline can be collected).
    gc.collect()
    gc.freeze()
    cpu0 = time.process_time()
    for topic, payload, rec in msgs:
        if rec >= next_tick:
            take(p.tick(rec), rec)
            next_tick = rec + int(tick_s * 1e9)
        w0 = time.perf_counter()
        outs = p.handle(topic, payload, rec)
        if outs:
            lat_ms.append((time.perf_counter() - w0) * 1e3)
        take(outs, rec)
    take(p.finish(), msgs[-1][2] if msgs else T0_NS)
    cpu = time.process_time() - cpu0
    gc.unfreeze()
    return shots, cpu, lat_ms, p


def score(scene: Scene, shots: dict[str, m.Shot], first_ns: dict[str, int] | None = None) -> dict[str, float]:
    """Match located shots to true sources (5 ms, 10 m); count found sources and false shots; with
    ``first_ns`` (:func:`play`), the delay from each found source's emission to its first publication."""
    pos = np.array(list(scene.nodes.values()))
    audible = []
    for s in scene.sources:
        d = np.linalg.norm(pos - s.xyz, axis=1)
        audible.append(np.sum(d < (900.0 if s.kind == "gunshot" else 650.0)) >= 6)
    sh = list(shots.values())
    sh_xy = np.array([FRAME.to_enu(s.position.lat_deg, s.position.lon_deg, s.position.alt_m)[:2] for s in sh]).reshape(-1, 2)
    sh_t = np.array([(s.time_ns - T0_NS) / 1e9 for s in sh])
    matched_shot = np.zeros(len(sh), bool)
    found, errs, delays = 0, [], []
    n_src = 0
    for s, ok in zip(scene.sources, audible, strict=True):
        if not ok:
            continue
        n_src += 1
        if not len(sh):
            continue
        dist = np.hypot(*(sh_xy - s.xyz[:2]).T)
        cand = np.flatnonzero((np.abs(sh_t - s.t_s) < 0.005) & (dist < 10.0))
        if len(cand):
            found += 1
            k = cand[np.argmin(dist[cand])]
            matched_shot[k] = True
            errs.append(dist[k])
            if first_ns is not None:
                delays.append((first_ns[sh[k].shot_id] - T0_NS) / 1e9 - s.t_s)
    # A shot that matches any source (also an inaudible one) is not false.
    for k in np.flatnonzero(~matched_shot):
        for s in scene.sources:
            if abs(sh_t[k] - s.t_s) < 0.005 and np.hypot(*(sh_xy[k] - s.xyz[:2])) < 10.0:
                matched_shot[k] = True
                break
    out = {
        "assoc_sources": float(n_src),
        "assoc_shots": float(len(sh)),
        "assoc_found_pct": 100.0 * found / max(n_src, 1),
        "assoc_false_pct": 100.0 * float(np.sum(~matched_shot)) / max(len(sh), 1),
        "assoc_loc_p50_m": float(np.percentile(errs, 50)) if errs else float("nan"),
        "assoc_loc_p95_m": float(np.percentile(errs, 95)) if errs else float("nan"),
    }
    if first_ns is not None:
        out["assoc_alert_delay_p50_s"] = float(np.percentile(delays, 50)) if delays else float("nan")
        out["assoc_alert_delay_p95_s"] = float(np.percentile(delays, 95)) if delays else float("nan")
        out["assoc_alert_delay_max_s"] = float(np.max(delays)) if delays else float("nan")
    return out


def kernels_start_s() -> float:
    """Seconds a fresh process takes to make the hub's compiled kernels ready (numba's cache warm, as on
    any start after the first); the associator does this when it is made, before any detection."""
    code = ("import time; t = time.perf_counter(); from shotline.hub import grid_kernels, lm_kernel; "
            "grid_kernels.compile_all(); lm_kernel.compile_all(); print(time.perf_counter() - t)")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)  # fills the cache if empty
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(done.stdout.split()[-1])


#: Plays of the dense scene behind its CPU figures (their median; one in a quick run).
CPU_RUNS = 3


def run(quick: bool = False, scaling: bool | None = None) -> dict[str, float]:
    """Run the benchmark; returns the figures listed in the module docstring (scaling unless quick)."""
    scaling = not quick if scaling is None else scaling
    duration = 12.0 if quick else 30.0
    scene = dense_scene(duration, seed=1)
    first: dict[str, int] = {}
    shots, cpu, lat_ms, p = play(scene, first_ns=first)
    out = score(scene, shots, first)
    # The CPU figures are the median of CPU_RUNS plays of the same scene (the same shots each time):
    # on a shared 2-core machine one play's CPU time moves by a fifth from run to run.
    cpus = [cpu] + [play(scene)[1] for _ in range((1 if quick else CPU_RUNS) - 1)]
    cpu = float(np.median(cpus))
    out.update({
        "assoc_detections": float(len(scene.dets)),
        "assoc_cpu_s_per_scene_s": cpu / duration,
        "hub_detections_per_s": len(scene.dets) / cpu,
        "hub_detections_per_s_slowest": len(scene.dets) / max(cpus),
        "hub_detections_per_s_fastest": len(scene.dets) / min(cpus),
        "hub_latency_p99_ms": float(np.percentile(lat_ms, 99)) if lat_ms else float("nan"),
        "hub_kernels_start_s": kernels_start_s(),
    })
    # The same scene on a hub that has run the same night for a while (:func:`play`'s ``warm``).
    w_shots, w_cpu, _, _ = play(scene, warm=dense_scene(duration, seed=2, nodes=scene.nodes))
    out["hub_detections_per_s_warm"] = len(scene.dets) / w_cpu
    out["assoc_found_pct_warm"] = score(scene, w_shots)["assoc_found_pct"]
    flat_shots, flat_cpu, _, _ = play(scene, levels=False)
    out["hub_detections_per_s_no_levels"] = len(scene.dets) / flat_cpu
    out["assoc_found_pct_no_levels"] = score(scene, flat_shots)["assoc_found_pct"]
    if not quick:
        echoey = real_echoes(scene)
        e_shots, e_cpu, _, _ = play(echoey)
        got = score(echoey, e_shots)
        out["assoc_found_pct_real_echoes"] = got["assoc_found_pct"]
        out["assoc_false_pct_real_echoes"] = got["assoc_false_pct"]
        out["hub_detections_per_s_real_echoes"] = len(echoey.dets) / e_cpu
    if scaling:
        # Network size at a fireworks night's rate (the scene's ~7 impulses/s + 40 random gunshots/s
        # city-wide), then the impulse rate on 1,000 nodes. 6 s of scene each.
        dur = 6.0
        for n_side, extra in ((10, 40.0), (32, 40.0), (100, 40.0), (32, 0.0), (32, 15.0)):
            rng = np.random.default_rng(5)
            nodes = network(n_side, n_side, 250.0, rng)
            sc = dense_scene(dur, seed=3, nodes=nodes, extra_rate_hz=extra)
            first = {}
            sc_shots, cpu_s, _, _ = play(sc, first_ns=first)
            tag = f"n{n_side * n_side}" + ("" if extra == 40.0 else f"_rate{int(extra)}")
            got = score(sc, sc_shots, first)
            out[f"hub_found_pct_{tag}"] = got["assoc_found_pct"]
            out[f"hub_false_pct_{tag}"] = got["assoc_false_pct"]
            out[f"hub_alert_delay_p95_s_{tag}"] = got["assoc_alert_delay_p95_s"]
            out[f"hub_us_per_det_{tag}"] = 1e6 * cpu_s / max(len(sc.dets), 1)
            out[f"hub_cpu_s_per_scene_s_{tag}"] = cpu_s / dur
            out[f"hub_impulses_per_s_{tag}"] = sum(1 for s in sc.sources if 0.5 <= s.t_s <= dur - 2.0) / (dur - 2.5)
            out[f"hub_dets_per_scene_s_{tag}"] = len(sc.dets) / dur
            if extra == 40.0:
                # The same after 12 s of the same night (another draw of it) on the same hub: a hub that has
                # run a while, its per-node tables filled (in 6 s of scene much of the cold figure is that).
                warm = dense_scene(12.0, seed=4, nodes=nodes, extra_rate_hz=extra)
                w_shots, w_cpu_s, _, _ = play(sc, warm=warm)
                out[f"hub_us_per_det_{tag}_warm"] = 1e6 * w_cpu_s / max(len(sc.dets), 1)
                out[f"hub_cpu_s_per_scene_s_{tag}_warm"] = w_cpu_s / dur
                out[f"hub_found_pct_{tag}_warm"] = score(sc, w_shots)["assoc_found_pct"]
        # The path's own cost: 1,024 nodes, 20 gunshots/s city-wide for 20 s, every detection a
        # source's direct arrival (the dense scene's junk, ~40 % of its CPU, left out).
        sc = clean_scene(20.0, 20.0, network(32, 32, 250.0, np.random.default_rng(5)))
        sc_shots, cpu_s, _, _ = play(sc)
        out["hub_found_pct_clean"] = score(sc, sc_shots)["assoc_found_pct"]
        out["hub_detections_per_s_clean"] = len(sc.dets) / cpu_s
    return out


if __name__ == "__main__":
    res = run(quick="--quick" in sys.argv[1:], scaling=True if "--scaling" in sys.argv[1:] else None)
    for k, v in res.items():
        print(f"{k:32s} {v:.4g}")
