"""Node registry: where each node is, what it last said, when it was last heard.

Positions come from the nodes' retained status messages unless the hub's
config gives a surveyed position, which wins. All positions are also kept in
the hub's local ENU frame (metres), fixed at the first position known (or
given; then positions can also be set in local metres with :meth:`NodeRegistry.set_enu`).

Timing residual statistics: every located shot leaves each participating
node a residual (observed minus predicted arrival, seconds) and the
direction from the source. A clock that is off shows as a residual bias seen
from every direction; a surveyed position that is off by ``dp`` shows as
``u . dp / c`` (``u`` the unit vector from the source to the node), i.e. a
residual that depends on the direction the sound came from. Fitting
``r = b + u . dp / c`` over the node's recent shots separates the two
(:meth:`NodeRegistry.diagnose`); the flags are raised only when the effect
is both larger than the configured tolerance and significant (3 standard
errors), so an honest node with noisy picks is not flagged.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from shotline.core import messages as m

from .config import NodeQualitySettings
from .geometry import LocalFrame

log = logging.getLogger(__name__)


@dataclass
class NodeInfo:
    """What the hub knows about one node."""

    node_id: str
    position: m.Position | None = None
    enu_m: np.ndarray | None = None
    surveyed: bool = False
    state: str = "unknown"
    last_seen_ns: int = 0
    status: m.NodeStatus | None = None
    health: m.NodeHealth | None = None
    n_detections: int = 0
    residuals: OrderedDict[str, tuple[float, float, float, bool]] = field(default_factory=OrderedDict)
    """Recent residuals by shot id: (residual_s, u_east, u_north, used); u points from source to node."""
    flags: tuple[str, ...] = ()
    """Last diagnosis: "clock", "position" and/or "outliers" (empty when healthy)."""


@dataclass(frozen=True)
class TimingDiagnosis:
    """A node's timing residual statistics over its recent shots.

    ``bias_s`` (s) is the clock-like part (robust mean, or the constant of the
    direction fit when directions are diverse), ``offset_m`` the position
    error (east, north, metres) the residuals imply, None when the
    directions seen do not determine it. Standard errors alongside.
    """

    node_id: str
    n: int
    n_rejected: int
    rms_s: float
    bias_s: float
    bias_se_s: float
    offset_m: tuple[float, float] | None
    offset_se_m: float | None
    flags: tuple[str, ...]


class NodeRegistry:
    """Nodes by id, with positions in WGS84 and in the local ENU frame."""

    def __init__(
        self,
        frame: LocalFrame | None = None,
        overrides: dict[str, m.Position] | None = None,
        settings: NodeQualitySettings | None = None,
    ):
        self.frame = frame
        self.settings = settings or NodeQualitySettings()
        self.nodes: dict[str, NodeInfo] = {}
        self.version = 0
        """Incremented whenever a node position changes (caches of geometry key on it)."""
        self._extent: tuple[int, float] | None = None
        for node_id, pos in (overrides or {}).items():
            self._set_position(self._get(node_id), pos, surveyed=True)

    def _get(self, node_id: str) -> NodeInfo:
        info = self.nodes.get(node_id)
        if info is None:
            info = self.nodes[node_id] = NodeInfo(node_id)
        return info

    def _set_position(self, info: NodeInfo, pos: m.Position, surveyed: bool) -> None:
        if self.frame is None:
            # Centre the frame on the first node: its heights follow the Earth's curvature
            # and its distances hold to a centimetre across a city (hub.geometry).
            self.frame = LocalFrame(pos.lat_deg, pos.lon_deg, pos.alt_m)
        e, n, u = self.frame.to_enu(pos.lat_deg, pos.lon_deg, pos.alt_m)
        enu = np.array([e, n, u], dtype=float)
        moved = info.enu_m is None or not np.array_equal(enu, info.enu_m)
        info.position = pos
        info.enu_m = enu
        info.surveyed = surveyed
        if moved:
            # Every geometry cache of the associator keys on the version (a city's seed tables, ~1 GB):
            # a node repeating its position (each retained status: birth, reconnect, clock change)
            # must not make them all be rebuilt.
            self.version += 1

    def update_status(self, status: m.NodeStatus, received_ns: int) -> bool:
        """Record a status message; True if the node now has a position it did not have."""
        info = self._get(status.node_id)
        had = info.enu_m is not None
        info.status = status
        info.state = status.state
        info.last_seen_ns = max(info.last_seen_ns, received_ns)
        if status.position is not None and not info.surveyed:
            self._set_position(info, status.position, surveyed=False)
        return not had and info.enu_m is not None

    def update_health(self, health: m.NodeHealth, received_ns: int) -> None:
        """Record a health message."""
        info = self._get(health.node_id)
        info.health = health
        info.last_seen_ns = max(info.last_seen_ns, received_ns)

    def saw_detection(self, node_id: str, received_ns: int) -> None:
        info = self._get(node_id)
        info.n_detections += 1
        info.last_seen_ns = max(info.last_seen_ns, received_ns)

    def enu(self, node_id: str) -> np.ndarray | None:
        """ENU position of a node in metres, or None when unknown."""
        info = self.nodes.get(node_id)
        return None if info is None else info.enu_m

    def located_ids(self) -> list[str]:
        """Ids of the nodes whose position is known."""
        return [k for k, v in self.nodes.items() if v.enu_m is not None]

    def extent_m(self) -> float:
        """Largest horizontal distance between two located nodes, metres (0 with fewer than two).

        Cached until a position changes; the farthest pair lies on the convex hull, so a city
        of 10,000 nodes costs a hull and a few hundred vertices, not 10^8 pairs (the hub asks
        for this on every detection: the wait window depends on it).
        """
        if self._extent is not None and self._extent[0] == self.version:
            return self._extent[1]
        pts = [v.enu_m for v in self.nodes.values() if v.enu_m is not None]
        p = np.array(pts).reshape(-1, 3)[:, :2]
        if len(p) > 16:
            from scipy.spatial import ConvexHull, QhullError

            try:
                p = p[ConvexHull(p).vertices]
            except QhullError:
                pass  # collinear or coincident: all pairs (a line of nodes is short enough)
        ext = 0.0
        if len(p) >= 2:
            ext = float(np.sqrt(((p[:, None, :] - p[None, :, :]) ** 2).sum(-1)).max())
        self._extent = (self.version, ext)
        return ext

    def set_enu(self, node_id: str, enu_m) -> None:
        """Set a surveyed node position in the local ENU frame (metres); the frame must be fixed."""
        if self.frame is None:
            raise ValueError("set_enu needs a registry with a fixed frame (give HubPipeline a LocalFrame)")
        e = np.asarray(enu_m, float).ravel()
        if e.size not in (2, 3) or not np.all(np.isfinite(e)):
            raise ValueError(f"enu_m must be 2 or 3 finite metres, got {enu_m!r}")
        e = np.r_[e, 0.0] if e.size == 2 else e
        lat, lon, alt = self.frame.to_wgs84(*e)
        info = self._get(node_id)
        info.position = m.Position(lat_deg=lat, lon_deg=lon, alt_m=alt)
        info.enu_m = e.copy()
        info.surveyed = True
        self.version += 1

    # -- timing residual statistics -------------------------------------------
    def add_shot_residuals(self, shot, rejected: dict[str, float] | None = None) -> None:
        """Record each participating node's residual of a (re-)located shot (replaces earlier revisions).

        ``rejected``: residuals (s) of other nodes' picks near the predicted
        arrival that the fit did not use (a bad clock or position is exactly that).
        """
        win = self.settings.window
        src = shot.enu_m
        entries = [(p.node_id, float(r), True) for p, r in zip(shot.picks.values(), shot.solution.residuals_s,
                                                                strict=False)]
        entries += [(nid, r, False) for nid, r in (rejected or {}).items()]
        for nid, r, used in entries:
            info = self.nodes.get(nid)
            if info is None or info.enu_m is None:
                continue
            dx, dy = info.enu_m[0] - src[0], info.enu_m[1] - src[1]
            d = math.hypot(dx, dy) or 1.0
            info.residuals[shot.shot_id] = (r, dx / d, dy / d, used)
            info.residuals.move_to_end(shot.shot_id)
            while len(info.residuals) > win:
                info.residuals.popitem(last=False)

    def diagnose(self, node_id: str, c_mps: float, sigma_s: float) -> TimingDiagnosis:
        """Fit ``r = b + u . dp / c`` to a node's recent residuals; flag clock, position, outliers.

        ``sigma_s`` is the nominal timing sigma, a floor for the residual scatter.
        """
        st = self.settings
        info = self.nodes[node_id]
        rows = np.array(list(info.residuals.values()), dtype=float).reshape(-1, 4)
        n = len(rows)
        n_rej = int(np.sum(rows[:, 3] == 0)) if n else 0
        if n == 0:
            return TimingDiagnosis(node_id, 0, 0, math.nan, math.nan, math.nan, None, None, ())
        r, u = rows[:, 0], rows[:, 1:3]
        med = float(np.median(r))
        mad = 1.4826 * float(np.median(np.abs(r - med)))
        keep = np.abs(r - med) <= 5 * max(mad, sigma_s)
        rk, uk = r[keep], u[keep]
        scatter = max(float(np.std(rk)) if len(rk) > 1 else sigma_s, sigma_s)
        bias, bias_se = med, 1.2533 * scatter / math.sqrt(max(len(rk), 1))
        offset = offset_se = None
        if len(rk) >= max(st.min_shots, 4):
            a = np.column_stack([np.ones(len(rk)), uk / c_mps])
            sv = np.linalg.svd(uk - uk.mean(0), compute_uv=False)
            # Directions must spread (a node only ever heard from one side
            # cannot tell a position error from a clock error).
            if sv[-1] / math.sqrt(len(rk)) > 0.3:
                coef, *_ = np.linalg.lstsq(a, rk, rcond=None)
                fit_res = rk - a @ coef
                s2 = max(float(fit_res @ fit_res) / max(len(rk) - 3, 1), sigma_s**2)
                cov = s2 * np.linalg.inv(a.T @ a)
                bias, bias_se = float(coef[0]), float(math.sqrt(cov[0, 0]))
                offset = (float(coef[1]), float(coef[2]))
                offset_se = float(math.sqrt(max(cov[1, 1], cov[2, 2])))
        flags = []
        if n >= st.min_shots:
            if abs(bias) > st.clock_bias_s and abs(bias) > 3 * bias_se:
                flags.append("clock")
            if offset is not None and offset_se is not None:
                mag = math.hypot(*offset)
                if mag > st.position_offset_m and mag > 3 * offset_se:
                    flags.append("position")
            if n_rej / n > st.max_rejected_fraction:
                flags.append("outliers")
        return TimingDiagnosis(
            node_id, n, n_rej, float(np.sqrt(np.mean(rk**2))) if len(rk) else math.nan,
            bias, bias_se, offset, offset_se, tuple(flags),
        )

    def check_timing(self, c_mps: float, sigma_s: float) -> list[TimingDiagnosis]:
        """Diagnose every node with residuals; log newly raised and cleared flags. Returns flagged nodes."""
        out = []
        for node_id, info in self.nodes.items():
            if not info.residuals:
                continue
            dg = self.diagnose(node_id, c_mps, sigma_s)
            if dg.flags != info.flags:
                if dg.flags:
                    log.warning(
                        "node %s flagged %s: timing bias %.2f ms, position offset %s m over %d shots",
                        node_id, "+".join(dg.flags), dg.bias_s * 1e3,
                        None if dg.offset_m is None else tuple(round(v, 1) for v in dg.offset_m), dg.n,
                    )
                else:
                    log.info("node %s timing residuals back to normal", node_id)
                info.flags = dg.flags
            if dg.flags:
                out.append(dg)
        return out
