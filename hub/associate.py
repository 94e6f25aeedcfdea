"""Association: detections from many nodes -> shots (located origins).

Method (hypothesis and consensus):

1. A new detection first tries to join a recent shot: its onset must fall
   near the arrival time that shot predicts for its node.
2. Otherwise it waits in a pool and seeds a hypothesis search. For every
   point of a grid around the seed node, the seed's onset fixes an emission
   time; each other node's nearest pooled onset is compared with the arrival
   predicted from that point. The point explaining the most nodes wins, so
   only physically consistent detection sets are formed — a plain time window
   would merge interleaved shots.
3. The winning set is located robustly (:func:`shotline.hub.locate.locate`,
   consensus over subsets rejects echoes and stray picks); the shot is
   accepted when at least ``min_nodes`` nodes agree within
   ``max_rms_residual_s``.

Detections whose time quality is not trusted (NTP, free-running) may attach
to a shot as corroboration but never enter a solution. Times inside the
associator are float seconds relative to a reference epoch (``t_ref_ns``).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field

import numpy as np
from shotline.core import messages as m

from .config import HubConfig
from .locate import LocateError, Solution, locate
from .registry import NodeRegistry

log = logging.getLogger(__name__)


@dataclass
class Pick:
    """A detection inside the associator."""

    det: m.Detection
    t_s: float
    received_ns: int

    @property
    def node_id(self) -> str:
        return self.det.node_id

    @property
    def trusted(self) -> bool:
        return self.det.time_quality in m.TRUSTED_TIME_QUALITIES


@dataclass
class ShotState:
    """A located shot and the picks behind it."""

    shot_id: str
    picks: dict[str, Pick]
    solution: Solution
    enu_m: np.ndarray
    t0_s: float
    created_ns: int
    last_pick_received_ns: int
    revision: int = 0
    corroborating: dict[str, Pick] = field(default_factory=dict)


class Associator:
    """Forms and updates shots from a stream of detections."""

    _ids = itertools.count(1)

    def __init__(self, cfg: HubConfig, registry: NodeRegistry) -> None:
        self.cfg = cfg
        self.registry = registry
        self.c = cfg.location.c_mps
        self.t_ref_ns: int | None = None
        self.pool: list[Pick] = []
        self.shots: list[ShotState] = []
        self.n_expired_unassociated = 0

    # -- helpers -------------------------------------------------------------
    def _rel(self, t_ns: int) -> float:
        if self.t_ref_ns is None:
            self.t_ref_ns = t_ns - t_ns % 1_000_000_000
        return (t_ns - self.t_ref_ns) / 1e9

    def abs_ns(self, t_s: float) -> int:
        """Absolute UTC ns of a relative time in seconds."""
        assert self.t_ref_ns is not None
        return self.t_ref_ns + int(round(t_s * 1e9))

    def _horizon_s(self) -> float:
        """How long a pick can wait for partners (array crossing time + margin), seconds."""
        if self.cfg.association.pending_s is not None:
            return self.cfg.association.pending_s
        extent = min(self.registry.extent_m(), 2 * self.cfg.association.max_range_m)
        return extent / self.c + 1.0

    def _sigma(self, pick: Pick) -> float:
        return max(self.cfg.location.timing_sigma_s, pick.det.onset_sigma_s)

    # -- public ----------------------------------------------------------------
    def add(self, det: m.Detection, received_ns: int) -> list[ShotState]:
        """Take one detection; return the shots it created or changed."""
        if self.registry.enu(det.node_id) is None:
            raise KeyError(det.node_id)
        pick = Pick(det, self._rel(det.onset_time_ns), received_ns)
        shot = self._attach(pick)
        if shot is not None:
            return [shot]
        if not pick.trusted:
            return []  # may only corroborate a shot
        self.pool.append(pick)
        new = self._hypothesise(pick)
        return [new] if new is not None else []

    def expire(self, watermark_ns: int) -> None:
        """Forget picks and shots that can no longer change (older than the horizon)."""
        if self.t_ref_ns is None:
            return
        w = (watermark_ns - self.t_ref_ns) / 1e9
        horizon = self._horizon_s()
        keep = [p for p in self.pool if p.t_s > w - horizon]
        self.n_expired_unassociated += len(self.pool) - len(keep)
        self.pool = keep
        self.shots = [s for s in self.shots if s.t0_s > w - horizon - self.cfg.association.max_range_m / self.c]

    # -- attaching to a known shot -----------------------------------------
    def _attach(self, pick: Pick) -> ShotState | None:
        r = self.registry.enu(pick.node_id)
        best, best_err = None, np.inf
        for shot in self.shots:
            if pick.node_id in shot.picks or pick.node_id in shot.corroborating:
                continue
            pred = shot.t0_s + float(np.linalg.norm(shot.enu_m[:2] - r[:2])) / self.c
            tol = self._attach_tolerance(shot, pick)
            err = abs(pick.t_s - pred)
            if err < tol and err < best_err:
                best, best_err = shot, err
        if best is None:
            return None
        if not pick.trusted:
            best.corroborating[pick.node_id] = pick
            best.revision += 1
            return best
        picks = dict(best.picks)
        picks[pick.node_id] = pick
        sol = self._solve(list(picks.values()))
        if sol is None or not sol.used[list(picks).index(pick.node_id)]:
            return None  # inconsistent after all: leave it to the pool
        self._set_solution(best, picks, sol, pick.received_ns)
        return best

    def _attach_tolerance(self, shot: ShotState, pick: Pick) -> float:
        a = self.cfg.association
        if not pick.trusted:
            return 0.05 + a.match_tolerance_s
        return 2.0 * shot.solution.cep95_m / self.c + 5 * self._sigma(pick) + a.match_tolerance_s

    # -- hypothesis search -------------------------------------------------------
    def _hypothesise(self, seed: Pick) -> ShotState | None:
        a = self.cfg.association
        r_seed = self.registry.enu(seed.node_id)
        by_node: dict[str, list[Pick]] = {}
        for p in self.pool:
            if p is seed or p.node_id == seed.node_id:
                continue
            r = self.registry.enu(p.node_id)
            d = float(np.linalg.norm(r[:2] - r_seed[:2]))
            if d > 2 * a.max_range_m:
                continue
            if abs(p.t_s - seed.t_s) <= d / self.c + a.match_tolerance_s:
                by_node.setdefault(p.node_id, []).append(p)
        if len(by_node) + 1 < a.min_nodes:
            return None

        # Grid of hypothetical sources within max_range of the seed node.
        step = a.grid_step_m
        n_half = int(np.ceil(a.max_range_m / step))
        g = np.arange(-n_half, n_half + 1) * step
        gx, gy = np.meshgrid(g, g, indexing="xy")
        inside = gx**2 + gy**2 <= a.max_range_m**2
        grid = np.stack([gx[inside] + r_seed[0], gy[inside] + r_seed[1]], axis=1)
        t0 = seed.t_s - np.hypot(grid[:, 0] - r_seed[0], grid[:, 1] - r_seed[1]) / self.c
        # A grid point can be off by half a diagonal: allow that travel-time slack twice.
        tol = np.sqrt(2) * step / self.c + a.match_tolerance_s

        node_ids = list(by_node)
        count = np.zeros(len(grid), dtype=int)
        sq = np.zeros(len(grid))
        chosen = np.empty((len(node_ids), len(grid)), dtype=int)
        for k, nid in enumerate(node_ids):
            picks = sorted(by_node[nid], key=lambda p: p.t_s)
            times = np.array([p.t_s for p in picks])
            r = self.registry.enu(nid)
            pred = t0 + np.hypot(grid[:, 0] - r[0], grid[:, 1] - r[1]) / self.c
            j = np.clip(np.searchsorted(times, pred), 1, len(times)) - 1
            j2 = np.minimum(j + 1, len(times) - 1)
            better = np.abs(times[j2] - pred) < np.abs(times[j] - pred)
            j = np.where(better, j2, j)
            err = np.abs(times[j] - pred)
            ok = err < tol
            count += ok
            sq += np.where(ok, err**2, tol**2)
            chosen[k] = j
            by_node[nid] = picks
        # Most nodes explained first; among those, the smallest squared misfit.
        score = count - sq / (tol**2 * (len(node_ids) + 1))
        best = int(np.argmax(score))
        if count[best] + 1 < a.min_nodes:
            return None
        members = [seed]
        for k, nid in enumerate(node_ids):
            pred = t0[best] + np.hypot(*(grid[best] - self.registry.enu(nid)[:2])) / self.c
            p = by_node[nid][chosen[k, best]]
            if abs(p.t_s - pred) < tol:
                members.append(p)
        sol = self._solve(members)
        if sol is None:
            return None
        if not sol.used.all():
            # Keep the solution aligned with the picks it holds: rejected
            # picks go back to the pool, where they may belong to another shot.
            members = [p for p, u in zip(members, sol.used, strict=True) if u]
            sol = self._solve(members)
            if sol is None:
                return None
        picks = {p.node_id: p for p in members}
        shot = ShotState(
            shot_id=f"s{next(self._ids):06d}",
            picks={},
            solution=sol,
            enu_m=np.zeros(3),
            t0_s=sol.t0_s,
            created_ns=seed.received_ns,
            last_pick_received_ns=seed.received_ns,
        )
        self._set_solution(shot, picks, sol, max(p.received_ns for p in picks.values()))
        used_ids = {id(p) for p in picks.values()}
        self.pool = [p for p in self.pool if id(p) not in used_ids]
        self.shots.append(shot)
        return shot

    # -- location -----------------------------------------------------------
    def _solve(self, picks: list[Pick]) -> Solution | None:
        a = self.cfg.association
        if len(picks) < a.min_nodes:
            return None
        pos = np.array([self.registry.enu(p.node_id) for p in picks])
        t = np.array([p.t_s for p in picks])
        t_base = float(t.min())
        sig = np.array([self._sigma(p) for p in picks])
        try:
            sol = locate(
                pos,
                t - t_base,
                c_mps=self.c,
                sigma_s=sig,
                dims=2,
                source_height_m=self.cfg.location.source_height_m,
                robust=True,
            )
        except LocateError as exc:
            log.debug("locate failed: %s", exc)
            return None
        if not sol.converged or sol.n_used < a.min_nodes or sol.rms_residual_s > a.max_rms_residual_s:
            return None
        # Back to the associator's time reference.
        return _shift(sol, t_base)

    def _set_solution(self, shot: ShotState, picks: dict[str, Pick], sol: Solution, received_ns: int) -> None:
        shot.picks = picks
        shot.solution = sol
        pos = np.asarray(sol.position_m, dtype=float)
        shot.enu_m = np.array([pos[0], pos[1], pos[2] if len(pos) > 2 else self.cfg.location.source_height_m])
        shot.t0_s = sol.t0_s
        shot.last_pick_received_ns = max(shot.last_pick_received_ns, received_ns)
        shot.revision += 1


def _shift(sol: Solution, dt_s: float) -> Solution:
    import dataclasses

    return dataclasses.replace(sol, t0_s=sol.t0_s + dt_s)
