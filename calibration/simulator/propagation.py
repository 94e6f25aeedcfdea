"""Propagation paths between a source and a receiver in local ENU metres.

Geometric acoustics: a direct ray, specular reflections off a flat ground and
off vertical building walls by the image-source method (Allen & Berkley 1979;
Borish 1984), occlusion of rays by walls, and, when the direct ray is blocked,
one diffracted path over the top or around an end of the blocking wall with
Maekawa's (1968) frequency-dependent attenuation. Also the Mach-cone geometry
of a supersonic bullet's shock wave.

Everything here is geometry: lengths in metres, directions as unit vectors;
:mod:`.render` turns paths into delays and filters.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

_EPS = 1e-9


@dataclass(frozen=True)
class Mirror:
    """A reflecting plane: the ground (``u = height``) or a vertical wall segment.

    Walls run from ``a_en`` to ``b_en`` (east, north metres) between the ground
    (``base_m``) and ``top_m``; ``coefficient`` is the pressure reflection
    coefficient (frequency independent).
    """

    mirror_id: str
    coefficient: float
    is_ground: bool = False
    height_m: float = 0.0  # ground only
    a_en: tuple[float, float] = (0.0, 0.0)
    b_en: tuple[float, float] = (0.0, 0.0)
    base_m: float = 0.0
    top_m: float = 0.0

    def __post_init__(self) -> None:
        # Cached as plain floats: walls are queried thousands of times per scene and
        # scalar Python arithmetic beats numpy on 2-vectors.
        de, dn = self.b_en[0] - self.a_en[0], self.b_en[1] - self.a_en[1]
        length = math.hypot(de, dn)
        de, dn = (de / length, dn / length) if length > 0 else (1.0, 0.0)
        object.__setattr__(self, "_d", (de, dn))
        object.__setattr__(self, "_n", (-dn, de))
        object.__setattr__(self, "length_m", length)

    def reflect(self, p: np.ndarray) -> np.ndarray:
        """Mirror image of point ``p`` (ENU m)."""
        e, n, u = float(p[0]), float(p[1]), float(p[2])
        if self.is_ground:
            return np.array([e, n, 2.0 * self.height_m - u])
        ne, nn = self._n
        k = 2.0 * ((e - self.a_en[0]) * ne + (n - self.a_en[1]) * nn)
        return np.array([e - k * ne, n - k * nn, u])

    def _side(self, e: float, n: float, u: float) -> float:
        if self.is_ground:
            return u - self.height_m
        return (e - self.a_en[0]) * self._n[0] + (n - self.a_en[1]) * self._n[1]

    def hit(self, x: np.ndarray, y: np.ndarray) -> np.ndarray | None:
        """Point where segment x->y crosses this plane inside its extent, else None.

        Touching at an end point does not count (rays that start or end on a
        wall are not occluded by it).
        """
        xe, xn, xu = float(x[0]), float(x[1]), float(x[2])
        ye, yn, yu = float(y[0]), float(y[1]), float(y[2])
        dx, dy = self._side(xe, xn, xu), self._side(ye, yn, yu)
        if dx * dy >= 0.0 or abs(dx - dy) < _EPS:
            return None
        t = dx / (dx - dy)
        pe, pn, pu = xe + (ye - xe) * t, xn + (yn - xn) * t, xu + (yu - xu) * t
        if not self.is_ground:
            s = (pe - self.a_en[0]) * self._d[0] + (pn - self.a_en[1]) * self._d[1]
            if not (
                -_EPS <= s <= self.length_m + _EPS and self.base_m - _EPS <= pu <= self.top_m + _EPS
            ):
                return None
        return np.array([pe, pn, pu])


@dataclass(frozen=True)
class Path:
    """One propagation path.

    ``kind``: ``direct``, ``diffracted``, or mirror ids joined by ``+`` in the
    order the ray meets them (``ground``, ``wall:w1+ground``). ``length_m``:
    travelled distance; ``gain``: product of reflection coefficients;
    ``launch_dir``: unit vector leaving the source (for directivity);
    ``chord_dir``: unit vector of the unfolded straight path (for wind);
    ``diffraction_delta_m``: path-length difference used for the Maekawa filter
    (None when not diffracted).
    """

    kind: str
    length_m: float
    gain: float
    launch_dir: np.ndarray
    chord_dir: np.ndarray
    diffraction_delta_m: float | None = None


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else np.array([0.0, 0.0, 1.0])


def _occluded(
    x: np.ndarray, y: np.ndarray, walls: list[Mirror], skip: tuple[Mirror, ...] = ()
) -> bool:
    return any(all(w is not k for k in skip) and w.hit(x, y) is not None for w in walls)


def reflected_path(
    src: np.ndarray, rcv: np.ndarray, seq: tuple[Mirror, ...], walls: list[Mirror]
) -> Path | None:
    """The specular path src -> seq[0] -> seq[1] ... -> rcv, or None if invalid or occluded."""
    # Images of the receiver, innermost last: img[k] is rcv mirrored in seq[k:], reversed.
    imgs = [np.asarray(rcv, float)]
    for m in reversed(seq):
        imgs.append(m.reflect(imgs[-1]))
    imgs = imgs[::-1]  # imgs[0]: fully mirrored receiver; imgs[-1]: the receiver
    points = [np.asarray(src, float)]
    for k, m in enumerate(seq):
        p = m.hit(points[-1], imgs[k])
        if p is None:
            return None
        points.append(p)
    points.append(imgs[-1])
    for k in range(len(points) - 1):
        skip = tuple(m for m in seq[max(k - 1, 0) : k + 1])
        if _occluded(points[k], points[k + 1], walls, skip):
            return None
    length = float(np.linalg.norm(imgs[0] - points[0]))
    gain = math.prod(m.coefficient for m in seq)
    kind = "+".join(m.mirror_id for m in seq) if seq else "direct"
    return Path(kind, length, gain, _unit(points[1] - points[0]), _unit(imgs[0] - points[0]))


def diffracted_path(src: np.ndarray, rcv: np.ndarray, walls: list[Mirror]) -> Path | None:
    """Shortest path over the top or around an end of the walls blocking src->rcv.

    One edge only (no multiple diffraction); None if every candidate is blocked too.
    """
    blockers = [w for w in walls if w.hit(src, rcv) is not None]
    direct = float(np.linalg.norm(rcv - src))
    best: tuple[float, np.ndarray] | None = None
    for w in blockers:
        p = w.hit(src, rcv)
        assert p is not None
        candidates = [np.array([p[0], p[1], w.top_m])]  # over the top
        for end in (w.a_en, w.b_en):  # around a vertical end edge
            ds = float(np.hypot(*(src[:2] - np.asarray(end))))
            dr = float(np.hypot(*(rcv[:2] - np.asarray(end))))
            z = src[2] + (rcv[2] - src[2]) * ds / max(ds + dr, _EPS)
            candidates.append(np.array([end[0], end[1], z]))
        for e in candidates:
            # Nudge the edge point outward so that the legs do not graze the blocking wall.
            e_out = e + np.r_[_unit_xy(e[:2] - np.asarray(_mid(w))) * 1e-6, 1e-6]
            if _occluded(src, e_out, walls) or _occluded(e_out, rcv, walls):
                continue
            length = float(np.linalg.norm(e - src) + np.linalg.norm(rcv - e))
            if best is None or length < best[0]:
                best = (length, e)
    if best is None:
        return None
    length, e = best
    return Path("diffracted", length, 1.0, _unit(e - src), _unit(rcv - src), length - direct)


def _mid(w: Mirror) -> tuple[float, float]:
    return ((w.a_en[0] + w.b_en[0]) / 2, (w.a_en[1] + w.b_en[1]) / 2)


def _unit_xy(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else np.zeros(2)


def trace_paths(
    src: np.ndarray,
    rcv: np.ndarray,
    walls: list[Mirror],
    ground: Mirror | None,
    max_order: int = 2,
    blocked_extra_m: float | None = None,
) -> list[Path]:
    """All paths from ``src`` to ``rcv`` (ENU m) up to ``max_order`` reflections.

    Ground and walls both count as reflections. If the direct ray crosses a
    wall, it is replaced by the diffracted path. ``blocked_extra_m`` forces the
    direct path (and its ground reflection) to be blocked: a diffracted path
    that is that many metres longer replaces them.
    """
    src = np.asarray(src, float)
    rcv = np.asarray(rcv, float)
    mirrors = ([ground] if ground is not None else []) + list(walls)
    paths: list[Path] = []
    for order in range(max_order + 1):
        for seq in itertools.product(mirrors, repeat=order):
            if any(a is b for a, b in itertools.pairwise(seq)):
                continue  # two consecutive reflections off the same plane are impossible
            if blocked_extra_m is not None and all(m.is_ground for m in seq):
                continue
            p = reflected_path(src, rcv, seq, walls)
            if p is not None:
                paths.append(p)
    direct_len = float(np.linalg.norm(rcv - src))
    if blocked_extra_m is not None:
        chord = _unit(rcv - src)
        paths.append(
            Path("diffracted", direct_len + blocked_extra_m, 1.0, chord, chord, blocked_extra_m)
        )
    elif not any(p.kind == "direct" for p in paths):
        d = diffracted_path(src, rcv, walls)
        if d is not None:
            paths.append(d)
    return paths


def maekawa_gain(
    f_hz: np.ndarray, delta_m: float, c_mps: float, max_db: float = 25.0
) -> np.ndarray:
    """Amplitude gain of single-edge diffraction (Maekawa 1968): A = 10 log10(3 + 20 N) dB.

    N = 2 δ f / c is the Fresnel number of path difference δ (m); the
    attenuation is capped at ``max_db`` as practical barriers are (ISO 9613-2).
    """
    n = 2.0 * delta_m * np.asarray(f_hz, float) / c_mps
    att_db = np.minimum(10.0 * np.log10(3.0 + 20.0 * n), max_db)
    return 10.0 ** (-att_db / 20.0)


# -------------------------------------------------------------------- shock
@dataclass(frozen=True)
class ShockPath:
    """Where and when a bullet's shock reaches a receiver.

    ``emit_along_m``: distance along the trajectory of the emitting point;
    ``time_s``: arrival time after the shot (s); ``miss_distance_m``: the
    receiver's perpendicular distance to the trajectory; ``ray_length_m``:
    emitting point to receiver.
    """

    time_s: float
    emit_along_m: float
    miss_distance_m: float
    ray_length_m: float


def shock_path(
    muzzle: np.ndarray,
    direction: np.ndarray,
    speed_mps: float,
    rcv: np.ndarray,
    c_mps: float,
    max_range_m: float = 1000.0,
) -> ShockPath | None:
    """Mach-cone arrival of a bullet at constant speed, or None if the receiver is outside the cone.

    The shock reaching the receiver leaves the trajectory at the point where the
    ray makes the Mach angle: along-track x - b / sqrt(M² - 1) (x along-track
    distance of the receiver, b miss distance). Deceleration is neglected.
    """
    mach = speed_mps / c_mps
    if mach <= 1.0:
        return None
    u = _unit(np.asarray(direction, float))
    rel = np.asarray(rcv, float) - np.asarray(muzzle, float)
    x = float(np.dot(rel, u))
    b = float(np.linalg.norm(rel - x * u))
    s = x - b / math.sqrt(mach**2 - 1.0)
    if s <= 0.0 or s > max_range_m:
        return None
    ray = b * mach / math.sqrt(mach**2 - 1.0)  # b / sin(angle between ray and trajectory)
    return ShockPath(s / speed_mps + ray / c_mps, s, b, ray)
