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

import bisect
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
        self.recent: dict[str, list[float]] = {}
        """Sorted onset times (s) of every recent pick per node, associated or not."""
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
        if pick.trusted:
            bisect.insort(self.recent.setdefault(det.node_id, []), pick.t_s)
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
        for times in self.recent.values():
            del times[: bisect.bisect_left(times, w - 2 * horizon)]

    # -- attaching to a known shot -----------------------------------------
    def _attach(self, pick: Pick, only: ShotState | None = None) -> ShotState | None:
        r = self.registry.enu(pick.node_id)
        best, best_err = None, np.inf
        for shot in self.shots if only is None else [only]:
            if pick.node_id in shot.picks or pick.node_id in shot.corroborating:
                continue
            pred = shot.t0_s + float(np.linalg.norm(shot.enu_m - r)) / self.c
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
        by_node: dict[str, np.ndarray] = {}
        picks_of: dict[str, list[Pick]] = {}
        for p in self.pool:
            if p is seed or p.node_id == seed.node_id:
                continue
            r = self.registry.enu(p.node_id)
            d = float(np.linalg.norm(r[:2] - r_seed[:2]))
            if d > 2 * a.max_range_m:
                continue
            # Physically possible partner: the time difference cannot exceed
            # the travel time between the two nodes.
            if abs(p.t_s - seed.t_s) <= d / self.c + a.match_tolerance_s:
                picks_of.setdefault(p.node_id, []).append(p)
        if len(picks_of) + 1 < a.min_nodes:
            return None
        for nid, ps in picks_of.items():
            ps.sort(key=lambda p: p.t_s)
            by_node[nid] = np.array([p.t_s for p in ps])
        node_ids = list(by_node)
        node_xy = np.array([self.registry.enu(n)[:2] for n in node_ids])

        # Coarse grid of hypothetical sources within max_range of the seed node,
        # refined twice around the best points. A grid point is up to half a
        # cell diagonal from the source, so the predicted travel-time
        # difference to the seed and to another node can be off by that much:
        # the match tolerance shrinks with the cell.
        step = a.grid_step_m
        n_half = int(np.ceil(a.max_range_m / step))
        g = np.arange(-n_half, n_half + 1) * step
        gx, gy = np.meshgrid(g, g, indexing="xy")
        inside = gx**2 + gy**2 <= a.max_range_m**2
        points = np.stack([gx[inside], gy[inside]], axis=1) + r_seed[:2]
        for keep, sub in ((256, 5), (32, 5), (None, None)):
            tol = np.sqrt(2) * step / self.c + a.match_tolerance_s
            score, chosen = self._support(points, seed, r_seed, node_xy, by_node, tol)
            if keep is None:
                break
            top = np.argsort(-score)[:keep]
            top = top[score[top] + 1 >= a.min_nodes]
            if len(top) == 0:
                return None
            # Split each kept cell into sub x sub smaller cells.
            fine = step / sub
            f = (np.arange(sub) - (sub - 1) / 2) * fine
            fx, fy = np.meshgrid(f, f, indexing="xy")
            offsets = np.stack([fx.ravel(), fy.ravel()], axis=1)
            points = (points[top][:, None, :] + offsets[None, :, :]).reshape(-1, 2)
            step = fine
        fine_pts, tol_fine = points, tol
        # Candidate detection sets from the best fine points, each set once.
        sets: list[list[Pick]] = []
        seen: set[frozenset[int]] = set()
        for i in np.argsort(-score)[: 8 * self.N_FINE]:
            if score[i] + 1 < a.min_nodes or len(sets) >= self.N_FINE:
                break
            members = [seed]
            t0 = seed.t_s - np.hypot(*(fine_pts[i] - r_seed[:2])) / self.c
            for k, nid in enumerate(node_ids):
                pred = t0 + np.hypot(*(fine_pts[i] - node_xy[k])) / self.c
                j = chosen[k, i]
                if abs(by_node[nid][j] - pred) < tol_fine:
                    members.append(picks_of[nid][j])
            key = frozenset(id(p) for p in members)
            if len(members) >= a.min_nodes and key not in seen:
                seen.add(key)
                sets.append(members)
        # Locate every candidate; the set that explains the most nodes with
        # the best fit wins (periodic fire makes shifted sets nearly fit too).
        best = None
        for members in sets:
            fit = self._fit(members)
            if fit is None:
                continue
            sol, used = fit
            rank = (sol.n_used, -sol.chi2_reduced)
            if best is None or rank > best[0]:
                best = (rank, used, sol)
        if best is None:
            return None
        return self._create(best[1], best[2])

    N_FINE = 6
    """Distinct fine-grid hypotheses located and tested per search."""

    def _support(self, grid, seed, r_seed, node_xy, by_node, tol):
        """For each grid point: how many nodes have a pick near the predicted arrival (score), and which."""
        t0 = seed.t_s - np.hypot(grid[:, 0] - r_seed[0], grid[:, 1] - r_seed[1]) / self.c
        count = np.zeros(len(grid), dtype=int)
        sq = np.zeros(len(grid))
        chosen = np.empty((len(by_node), len(grid)), dtype=int)
        for k, times in enumerate(by_node.values()):
            pred = t0 + np.hypot(grid[:, 0] - node_xy[k, 0], grid[:, 1] - node_xy[k, 1]) / self.c
            j = np.clip(np.searchsorted(times, pred), 1, len(times)) - 1
            j2 = np.minimum(j + 1, len(times) - 1)
            j = np.where(np.abs(times[j2] - pred) < np.abs(times[j] - pred), j2, j)
            err = np.abs(times[j] - pred)
            ok = err < tol
            count += ok
            sq += np.where(ok, err**2, tol**2)
            chosen[k] = j
        # Most nodes explained first; among those, the smallest squared misfit.
        return count - sq / (tol**2 * (len(by_node) + 1)), chosen

    def _fit(self, members: list[Pick]) -> tuple[Solution, list[Pick]] | None:
        """Locate a candidate set; return (solution, the picks it used) if it fits and silent nodes agree."""
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
        if not self._silent_nodes_agree(sol, {p.node_id for p in members}):
            return None
        return sol, members

    def _create(self, members: list[Pick], sol: Solution) -> ShotState:
        """Make a shot of a fitted set, take its picks out of the pool, attach pooled picks that fit."""
        picks = {p.node_id: p for p in members}
        shot = ShotState(
            shot_id=f"s{next(self._ids):06d}",
            picks={},
            solution=sol,
            enu_m=np.zeros(3),
            t0_s=sol.t0_s,
            created_ns=members[0].received_ns,
            last_pick_received_ns=0,
        )
        self._set_solution(shot, picks, sol, max(p.received_ns for p in picks.values()))
        used_ids = {id(p) for p in picks.values()}
        self.pool = [p for p in self.pool if id(p) not in used_ids]
        self.shots.append(shot)
        # Pooled picks that arrived before the shot existed may belong to it.
        for p in sorted(self.pool, key=lambda p: p.t_s):
            if self._attach(p, only=shot) is shot:
                self.pool.remove(p)
        return shot

    def _silent_nodes_agree(self, sol: Solution, members: set[str]) -> bool:
        """Negative evidence: nodes in range that are already past the predicted arrival but heard nothing.

        Picks from one node arrive in time order, so a node whose latest pick
        is later than a hypothesis' predicted arrival there, yet has no pick
        near it, speaks against the hypothesis. A few such nodes are normal
        (missed detections, shadowed nodes); many mean a chance alignment of
        picks from different sources.
        """
        a = self.cfg.association
        pos = np.asarray(sol.position_m, dtype=float)
        if len(pos) == 2:
            pos = np.array([pos[0], pos[1], self.cfg.location.source_height_m])
        tol = 2.0 * sol.cep95_m / self.c + 5 * self.cfg.location.timing_sigma_s + a.match_tolerance_s
        silent = agree = 0
        for nid, times in self.recent.items():
            if nid in members:
                continue
            r = self.registry.enu(nid)
            if r is None:
                continue
            if float(np.hypot(*(r[:2] - pos[:2]))) > a.max_range_m:
                continue
            pred = sol.t0_s + float(np.linalg.norm(r - pos)) / self.c
            if times and times[-1] > pred + tol:
                j = bisect.bisect_left(times, pred - tol)
                if j < len(times) and times[j] <= pred + tol:
                    agree += 1
                else:
                    silent += 1
        return silent <= max(1, int(a.max_silent_fraction * (len(members) + agree + silent)))

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
