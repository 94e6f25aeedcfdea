"""Render a :class:`Scene` into a RecordingBundle with ground truth.

Each arrival (one propagation path of one event at one node) is synthesised
in the frequency domain over a short window around it: the source's analytic
spectrum times the path gain, ISO 9613-1 absorption and diffraction loss
(made minimum phase, hence causal), the microphone response and the ADC's
anti-alias roll-off, times a phase ramp that puts the wave front at its exact,
continuous arrival time. Noise is generated in bulk per node. All sample
indices here are DSP internals; the public results are seconds, metres and
UTC nanoseconds.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import msgspec
import numpy as np
import scipy.fft as sfft

from shotline.calibration.bundle import (
    MANIFEST_NAME,
    ArrivalEntry,
    Bundle,
    Environment,
    EventEntry,
    Manifest,
    NodeEntry,
    Wgs84Position,
    encode_manifest,
    write_audio,
)
from shotline.hub.geometry import LocalFrame

from .absorption import absorption_db_per_m
from .noise import noise_pa
from .propagation import Mirror, maekawa_gain, shock_path, trace_paths
from .receiver import NodeClock, anti_alias, digitise, mic_response
from .scene import Scene, SceneEvent, SceneNode
from .sources import (
    CALIBRES,
    Atom,
    NWave,
    atoms_span_s,
    atoms_spectrum,
    lengthen,
    muzzle_directivity_gain,
    source_atoms,
    whitham_nwave,
)

__all__ = ["render_scene", "render_audio"]

_N_PRE = 64  # samples before the earliest wave front (room for anti-alias pre-ringing)
_MIN_TAIL_S = 0.02  # after the source ends: filter tails
_MAG_FLOOR = 1e-7  # -140 dB: keeps the cepstrum of steep absorption well conditioned


@dataclass
class _EventModel:
    event: SceneEvent
    enu: np.ndarray
    atoms: list[Atom]
    aim: np.ndarray | None
    directivity_db: float
    shock: tuple[float, float, float] | None  # (speed m/s, diameter m, length m)


@dataclass
class _NodeModel:
    node: SceneNode
    enu: np.ndarray
    clock: NodeClock
    n_samples: int
    audio_name: str


class _Ctx:
    """Scene-wide constants shared by all nodes."""

    def __init__(self, scene: Scene, seed: int) -> None:
        env = scene.environment
        self.scene = scene
        self.c = env.speed_of_sound_mps
        self.wind = np.array([env.wind_enu_mps[0], env.wind_enu_mps[1], 0.0])
        self.walls = [
            Mirror(
                f"wall:{w.wall_id}",
                w.reflection_coefficient,
                a_en=tuple(w.start_en_m),
                b_en=tuple(w.end_en_m),
                base_m=scene.ground.height_m if scene.ground else -1e9,
                top_m=(scene.ground.height_m if scene.ground else 0.0) + w.height_m,
            )
            for w in scene.walls
        ]
        g = scene.ground
        self.ground = (
            Mirror("ground", g.reflection_coefficient, is_ground=True, height_m=g.height_m)
            if g is not None
            else None
        )
        self.frame = (
            LocalFrame(scene.origin.lat_deg, scene.origin.lon_deg, scene.origin.alt_m)
            if scene.origin is not None
            else None
        )
        self.events = [self._event_model(i, e, seed) for i, e in enumerate(scene.events)]
        self.blocked: dict[tuple[str, str | None], float] = {
            (b.node_id, b.event_id): b.extra_path_m for b in scene.blocked
        }

    def _event_model(self, index: int, e: SceneEvent, seed: int) -> _EventModel:
        rng = np.random.default_rng([seed, 2, index])
        params = msgspec.structs.asdict(e)
        atoms = source_atoms(e.kind, params, rng)
        aim = e.aim_unit() if e.kind == "gunshot" else None
        directivity = (
            e.directivity_db if e.directivity_db is not None else (10.0 if aim is not None else 0.0)
        )
        shock = None
        if e.kind == "gunshot" and aim is not None:
            cal = CALIBRES[e.calibre_or_default()]
            supersonic = cal.supersonic if e.supersonic is None else e.supersonic
            speed = e.bullet_speed_mps or cal.bullet_speed_mps
            if supersonic and speed > self.c:
                shock = (speed, cal.bullet_diameter_m, cal.bullet_length_m)
        return _EventModel(e, np.asarray(e.enu_m, float), atoms, aim, directivity, shock)

    def node_enu(self, n: SceneNode) -> np.ndarray:
        if n.enu_m is not None:
            return np.asarray(n.enu_m, float)
        assert self.frame is not None and n.position is not None
        p = n.position
        return np.array(self.frame.to_enu(p.lat_deg, p.lon_deg, p.alt_m), float)

    def blocked_extra_m(self, node_id: str, event_id: str) -> float | None:
        return self.blocked.get((node_id, event_id), self.blocked.get((node_id, None)))


def _even_fast_len(n: int) -> int:
    m = sfft.next_fast_len(max(n, 16), real=True)
    while m % 2:
        m = sfft.next_fast_len(m + 1, real=True)
    return m


def _min_phase(mag: np.ndarray, n_fft: int) -> np.ndarray:
    """Minimum-phase response with magnitude ``mag`` on the rfft bins (homomorphic method)."""
    cep = sfft.irfft(np.log(np.maximum(mag, _MAG_FLOOR)), n_fft)
    fold = np.zeros(n_fft)
    fold[0] = 1.0
    fold[1 : n_fft // 2] = 2.0
    fold[n_fft // 2] = 1.0
    return np.exp(sfft.rfft(cep * fold))


class _Arrival:
    """One path's contribution, ready to synthesise."""

    __slots__ = ("kind", "delay_s", "gain", "length_m", "atoms", "delta_m", "absolute")

    def __init__(self, kind, delay_s, gain, length_m, atoms, delta_m=None, absolute=False):
        self.kind = kind
        self.delay_s = delay_s  # wave front after the emission time
        self.gain = gain  # amplitude factor applied to the atoms
        self.length_m = length_m  # for absorption
        self.atoms = atoms
        self.delta_m = delta_m  # diffraction path difference
        self.absolute = absolute  # atoms are already at the receiver (shock)


def _arrivals_for(ctx: _Ctx, em: _EventModel, nm: _NodeModel) -> list[_Arrival]:
    src, rcv = em.enu, nm.enu
    extra = ctx.blocked_extra_m(nm.node.node_id, em.event.event_id)
    paths = trace_paths(src, rcv, ctx.walls, ctx.ground, ctx.scene.reflection_order, extra)
    direct_m = float(np.linalg.norm(rcv - src))
    atoms = lengthen(em.atoms, direct_m)
    out = []
    for p in paths:
        c_eff = ctx.c + float(np.dot(ctx.wind, p.chord_dir))
        gain = p.gain / max(p.length_m, 0.1)
        if em.aim is not None and em.directivity_db:
            gain *= muzzle_directivity_gain(float(np.dot(p.launch_dir, em.aim)), em.directivity_db)
        out.append(
            _Arrival(p.kind, p.length_m / c_eff, gain, p.length_m, atoms, p.diffraction_delta_m)
        )
    if em.shock is not None and extra is None:
        speed, diam, length = em.shock
        images = [("shock", rcv, 1.0)]
        if ctx.ground is not None:
            images.append(("shock+ground", ctx.ground.reflect(rcv), ctx.ground.coefficient))
        for kind, r, refl in images:
            sp = shock_path(src, em.aim, speed, r, ctx.c)
            if sp is None:
                continue
            emit = src + em.aim * sp.emit_along_m
            if any(w.hit(emit, r) is not None for w in ctx.walls):
                continue
            ray_dir = (r - emit) / sp.ray_length_m
            c_eff = ctx.c + float(np.dot(ctx.wind, ray_dir))
            peak, dur = whitham_nwave(speed / ctx.c, sp.miss_distance_m, diam, length, ctx.c)
            delay = sp.emit_along_m / speed + sp.ray_length_m / c_eff
            out.append(
                _Arrival(kind, delay, refl, sp.ray_length_m, [NWave(peak, dur)], absolute=True)
            )
    return out


def _synthesise(
    ctx: _Ctx, arr: _Arrival, clock: NodeClock, i_arr: float, spectrum_cache: dict
) -> tuple[int, np.ndarray]:
    """(first sample index, samples in Pa) of one arrival whose wave front is at fractional index ``i_arr``."""
    fs = clock.effective_rate_hz
    env = ctx.scene.environment
    t_first, t_last = atoms_span_s(arr.atoms)
    tail_s = max(_MIN_TAIL_S, 5.0 / (2 * math.pi * max(ctx.scene.mic_highpass_hz, 1.0)))
    i_start = math.floor(i_arr + t_first * fs) - _N_PRE
    n_fft = _even_fast_len(math.ceil((t_last - t_first + tail_s) * fs) + 2 * _N_PRE)
    key = (id(arr.atoms), n_fft)
    if key not in spectrum_cache:
        f = np.arange(n_fft // 2 + 1) * (fs / n_fft)
        base = atoms_spectrum(arr.atoms, f) * mic_response(f, ctx.scene.mic_highpass_hz)
        spectrum_cache[key] = (f, base * anti_alias(f, fs))
    f, base = spectrum_cache[key]
    mag = np.ones(f.shape)
    if env.absorption:
        alpha = absorption_db_per_m(
            f, env.temperature_c, env.relative_humidity_pct, env.pressure_kpa
        )
        mag = 10.0 ** (-alpha * arr.length_m / 20.0)
    if arr.delta_m is not None:
        mag = mag * maekawa_gain(f, arr.delta_m, ctx.c)
    tau_s = (i_arr - i_start) / fs  # wave front position inside the window
    spec = base * np.exp(-2j * np.pi * f * tau_s) * (arr.gain * fs)
    if env.absorption or arr.delta_m is not None:
        spec *= _min_phase(mag, n_fft)  # causal: nothing arrives before the wave front
    return i_start, sfft.irfft(spec, n_fft)


def _render_node(
    ctx: _Ctx, nm: _NodeModel, index: int, seed: int, noise: bool
) -> tuple[np.ndarray, list[ArrivalEntry], int]:
    node, clock = nm.node, nm.clock
    rng = np.random.default_rng([seed, 1, index])
    if noise:
        bg = (
            node.background_noise_db
            if node.background_noise_db is not None
            else ctx.scene.background_noise_db
        )
        signal = noise_pa(nm.n_samples, clock.effective_rate_hz, bg, node.self_noise_db, rng)
    else:
        signal = np.zeros(nm.n_samples)
    truth: list[ArrivalEntry] = []
    for em in ctx.events:
        cache: dict = {}
        i_emit = clock.sample_index(em.event.time_ns)
        for arr in _arrivals_for(ctx, em, nm):
            i_arr = i_emit + arr.delay_s * clock.effective_rate_hz
            i0, x = _synthesise(ctx, arr, clock, i_arr, cache)
            a, b = max(i0, 0), min(i0 + len(x), nm.n_samples)
            if a < b:
                signal[a:b] += x[a - i0 : b - i0]
            if 0.0 <= i_arr < nm.n_samples:
                true_ns = em.event.time_ns + round(arr.delay_s * 1e9)
                truth.append(
                    ArrivalEntry(
                        node_id=node.node_id,
                        event_id=em.event.event_id,
                        path=arr.kind,
                        time_ns=true_ns,
                        stamped_time_ns=clock.stamp_ns(true_ns),
                        sample_index=float(i_arr),
                        path_length_m=float(arr.length_m),
                        peak_pa=float(np.max(np.abs(x))),
                    )
                )
    samples, n_clipped = digitise(signal, node.full_scale_spl_db)
    truth.sort(key=lambda a: (a.time_ns, a.event_id, a.path))
    return samples, truth, n_clipped


def _node_models(ctx: _Ctx, scene: Scene) -> list[_NodeModel]:
    names: set[str] = set()
    out = []
    for n in scene.nodes:
        name = re.sub(r"[^A-Za-z0-9._-]", "_", n.node_id)
        while name.lower() in names:
            name += "_"
        names.add(name.lower())
        clock = NodeClock(
            scene.start_time_ns, n.clock_offset_ns, n.clock_drift_ppm, n.sample_rate_hz
        )
        n_samples = round(scene.duration_s * n.sample_rate_hz)
        out.append(_NodeModel(n, ctx.node_enu(n), clock, n_samples, f"{name}.flac"))
    return out


def _render_all(scene, seed, noise, workers, progress, sink) -> Manifest:
    """Render every node (in threads; FFTs and FLAC encoding release the GIL), hand each
    node's samples to ``sink(node_model, samples)`` and return the manifest."""
    ctx = _Ctx(scene, seed)
    models = _node_models(ctx, scene)
    workers = workers or min(4, os.cpu_count() or 1)

    def job(i: int):
        samples, truth, n_clipped = _render_node(ctx, models[i], i, seed, noise)
        sink(models[i], samples)
        return truth, n_clipped

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results_iter = pool.map(job, range(len(models)))
        if progress is not None:
            results_iter = progress(results_iter, total=len(models), desc="render", unit="node")
        results = list(results_iter)
    arrivals = [a for r in results for a in r[0]]
    clipped = {m.node.node_id: r[1] for m, r in zip(models, results, strict=True)}
    return _manifest(ctx, scene, models, arrivals, clipped, seed)


def render_audio(
    scene: Scene,
    seed: int = 0,
    *,
    noise: bool = True,
    workers: int | None = None,
    progress: Callable | None = None,
) -> tuple[Manifest, dict[str, np.ndarray]]:
    """Render a scene in memory: (manifest with ground truth, node_id -> float32 samples).

    ``noise=False`` renders only the sources (clean, for tests); ``workers``
    threads render nodes in parallel; ``progress`` wraps an iterable (e.g.
    ``tqdm.tqdm``). Same seed, same samples.
    """
    audio: dict[str, np.ndarray] = {}

    def keep(m: _NodeModel, samples: np.ndarray) -> None:
        audio[m.node.node_id] = samples

    manifest = _render_all(scene, seed, noise, workers, progress, keep)
    return manifest, {n.node_id: audio[n.node_id] for n in manifest.nodes}


def render_scene(
    scene: Scene,
    out_dir: str | os.PathLike,
    seed: int = 0,
    *,
    noise: bool = True,
    created_utc: str | None = None,
    workers: int | None = None,
    progress: Callable | None = None,
) -> Bundle:
    """Render ``scene`` and write it as a RecordingBundle in ``out_dir``; returns the bundle.

    The manifest carries the ground-truth events and, under ``arrivals``, every
    rendered path arrival (node, event, path kind, true and stamped time, peak
    pressure). Audio is 24-bit FLAC, one file per node. Deterministic for a
    ``seed``: the same scene and seed give the same bytes (pass ``created_utc``,
    an ISO 8601 string, to pin the provenance timestamp too).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def write(m: _NodeModel, samples: np.ndarray) -> None:
        write_audio(out / m.audio_name, samples, m.node.sample_rate_hz)

    manifest = _render_all(scene, seed, noise, workers, progress, write)
    if created_utc is not None:
        manifest.provenance["created_utc"] = created_utc
    (out / MANIFEST_NAME).write_bytes(encode_manifest(manifest))
    return Bundle.load(out)


def _manifest(ctx, scene, models, arrivals, clipped, seed) -> Manifest:
    frame = ctx.frame

    def wgs(enu) -> Wgs84Position | None:
        if frame is None:
            return None
        lat, lon, alt = frame.to_wgs84(*enu)
        return Wgs84Position(float(lat), float(lon), float(alt))

    nodes = [
        NodeEntry(
            node_id=m.node.node_id,
            audio=m.audio_name,
            sample_rate_hz=m.node.sample_rate_hz,
            start_time_ns=m.clock.start_time_ns,
            position=wgs(m.enu),
            enu_m=[float(v) for v in m.enu],
            clock_offset_ns_true=m.node.clock_offset_ns,
            clock_drift_ppm_true=m.node.clock_drift_ppm,
            full_scale_spl_db=m.node.full_scale_spl_db,
        )
        for m in models
    ]
    skip = {"event_id", "kind", "time_ns", "enu_m", "fuse_crackle"}
    events = []
    for em in ctx.events:
        e = em.event
        props = {
            k: v for k, v in msgspec.structs.asdict(e).items() if k not in skip and v is not None
        }
        if e.fuse_crackle:
            props["fuse_crackle"] = True
        if e.kind == "gunshot":
            props.setdefault("calibre", e.calibre_or_default())
            props["shock_rendered"] = em.shock is not None
        events.append(
            EventEntry(
                event_id=e.event_id,
                kind=e.kind,
                time_ns=e.time_ns,
                position=wgs(em.enu),
                enu_m=[float(v) for v in em.enu],
                properties=props,
            )
        )
    env = scene.environment
    wind = list(env.wind_enu_mps) if any(env.wind_enu_mps) else None
    try:
        version = metadata.version("shotline")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        version = "unknown"
    provenance = {
        "generator": "shotline.calibration.simulator",
        "version": version,
        "seed": seed,
        "created_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "clipped_samples": clipped,
        "scene": msgspec.to_builtins(scene),
    }
    return Manifest(
        nodes=nodes,
        origin=scene.origin,
        events=events,
        environment=Environment(
            env.temperature_c, env.relative_humidity_pct, wind, env.speed_of_sound_mps
        ),
        provenance=provenance,
        arrivals=arrivals,
    )
