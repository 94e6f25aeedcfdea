"""Conveniences for building scenes: node grids, buildings and common events.

Times are true UTC integer nanoseconds; positions ENU metres (up = height
above the scene's ground); intervals in seconds.
"""

from __future__ import annotations

import numpy as np

from .scene import SceneEvent, SceneNode, Wall


def grid_nodes(
    n_east: int,
    n_north: int,
    spacing_m: float,
    *,
    origin_en_m: tuple[float, float] = (0.0, 0.0),
    height_m: float = 4.0,
    prefix: str = "N",
    jitter_m: float = 0.0,
    clock_offset_std_ns: float = 0.0,
    clock_drift_std_ppm: float = 0.0,
    seed: int = 0,
    **node_fields,
) -> list[SceneNode]:
    """``n_east`` x ``n_north`` nodes ``spacing_m`` apart, the grid centred on ``origin_en_m``.

    Nodes sit ``height_m`` above ground (pole/roof mounts). ``jitter_m`` adds a
    uniform random horizontal offset (±jitter) per node; the clock offsets and
    drifts are drawn from zero-mean normals (ns, ppm). Other ``SceneNode``
    fields (``full_scale_spl_db``, ``sample_rate_hz`` …) pass through.
    Node ids are ``{prefix}01``, ``{prefix}02`` … numbered west to east, then south to north.
    """
    rng = np.random.default_rng(seed)
    nodes = []
    e0 = origin_en_m[0] - (n_east - 1) * spacing_m / 2
    n0 = origin_en_m[1] - (n_north - 1) * spacing_m / 2
    k = 0
    for j in range(n_north):
        for i in range(n_east):
            k += 1
            de, dn = rng.uniform(-jitter_m, jitter_m, 2) if jitter_m else (0.0, 0.0)
            offset = int(round(rng.normal(0.0, clock_offset_std_ns))) if clock_offset_std_ns else 0
            drift = float(rng.normal(0.0, clock_drift_std_ppm)) if clock_drift_std_ppm else 0.0
            nodes.append(
                SceneNode(
                    node_id=f"{prefix}{k:02d}",
                    enu_m=(
                        float(e0 + i * spacing_m + de),
                        float(n0 + j * spacing_m + dn),
                        height_m,
                    ),
                    clock_offset_ns=offset,
                    clock_drift_ppm=drift,
                    **node_fields,
                )
            )
    return nodes


def building(
    building_id: str,
    corners_en_m: list[tuple[float, float]],
    height_m: float = 12.0,
    reflection_coefficient: float = 0.85,
) -> list[Wall]:
    """The walls of a building footprint (a closed polygon of east, north corners in metres)."""
    n = len(corners_en_m)
    return [
        Wall(
            wall_id=f"{building_id}.{i}",
            start_en_m=tuple(corners_en_m[i]),
            end_en_m=tuple(corners_en_m[(i + 1) % n]),
            height_m=height_m,
            reflection_coefficient=reflection_coefficient,
        )
        for i in range(n)
    ]


def _pos(enu_m) -> tuple[float, float, float]:
    e, n, *u = enu_m
    return (float(e), float(n), float(u[0]) if u else 1.5)


def gunshot(event_id: str, time_ns: int, enu_m, calibre: str = "9mm", **fields) -> SceneEvent:
    """A gunshot at true UTC ``time_ns`` from ``enu_m`` (m; height 1.5 m if only (e, n) given).

    ``fields``: other ``SceneEvent`` fields (``aim_azimuth_deg``, ``supersonic``,
    ``peak_spl_db_1m`` …).
    """
    return SceneEvent(
        event_id=event_id,
        kind="gunshot",
        time_ns=time_ns,
        enu_m=_pos(enu_m),
        calibre=calibre,
        **fields,
    )


def gunshot_string(
    prefix: str,
    time_ns: int,
    enu_m,
    n_rounds: int = 3,
    interval_s: float = 0.4,
    calibre: str = "9mm",
    interval_jitter_s: float = 0.0,
    seed: int = 0,
    **fields,
) -> list[SceneEvent]:
    """``n_rounds`` shots from one place, ``interval_s`` apart (± uniform ``interval_jitter_s``).

    Event ids are ``{prefix}.1``, ``{prefix}.2`` …
    """
    rng = np.random.default_rng(seed)
    out, t = [], time_ns
    for k in range(n_rounds):
        out.append(gunshot(f"{prefix}.{k + 1}", t, enu_m, calibre, **fields))
        dt = interval_s + (
            rng.uniform(-interval_jitter_s, interval_jitter_s) if interval_jitter_s else 0.0
        )
        t += int(round(dt * 1e9))
    return out


def event(kind: str, event_id: str, time_ns: int, enu_m, **fields) -> SceneEvent:
    """Any event kind (``firecracker``, ``door_slam``, ``hand_clap``, ``car_backfire``,
    ``hammer``, ``other``, ``gunshot``) at true UTC ``time_ns`` from ``enu_m`` (m;
    default height 1 m)."""
    e, n, *u = enu_m
    return SceneEvent(
        event_id=event_id,
        kind=kind,
        time_ns=time_ns,
        enu_m=(float(e), float(n), float(u[0]) if u else 1.0),
        **fields,
    )


def firecracker(
    event_id: str, time_ns: int, enu_m, n_bangs: int = 1, fuse_crackle: bool = False, **fields
) -> SceneEvent:
    """A firecracker (or a string of ``n_bangs``), optionally with fuse sparks before it."""
    return event(
        "firecracker",
        event_id,
        time_ns,
        enu_m,
        n_bangs=n_bangs,
        fuse_crackle=fuse_crackle,
        **fields,
    )


def door_slam(event_id: str, time_ns: int, enu_m, **fields) -> SceneEvent:
    """A slammed door: slow rise, low-frequency."""
    return event("door_slam", event_id, time_ns, enu_m, **fields)


def hand_clap(event_id: str, time_ns: int, enu_m, **fields) -> SceneEvent:
    """A hand clap: short burst around 1-2 kHz."""
    return event("hand_clap", event_id, time_ns, enu_m, **fields)


def car_backfire(event_id: str, time_ns: int, enu_m, **fields) -> SceneEvent:
    """A car backfire: longer, lower, muffled pulse with an exhaust resonance."""
    return event("car_backfire", event_id, time_ns, enu_m, **fields)


def hammer(event_id: str, time_ns: int, enu_m, **fields) -> SceneEvent:
    """A hammer blow on metal: sharp click and ringing partials."""
    return event("hammer", event_id, time_ns, enu_m, **fields)
