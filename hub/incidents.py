"""Incidents: shots from one place within a time gap, with a lifecycle.

An incident is created (``new``) by its first shot, ``updated`` whenever a
shot joins or an existing shot is refined, and ``closed`` once no shot has
joined for ``gap_s`` seconds. Each change produces an Incident message.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from shotline.core import messages as m
from shotline.core.timebase import now_ns, ns_to_iso

from .associate import Associator, ShotState
from .config import HubConfig
from .geometry import LocalFrame
from .locate import Solution

log = logging.getLogger(__name__)

CLASS_OF_SCORE = {"gunshot": "gunshot", "firework": "firework", "other": "other"}


@dataclass(frozen=True)
class Cadence:
    """Timing of the rounds of one shooter: intervals between consecutive shots, seconds."""

    rounds: int
    median_interval_s: float
    min_interval_s: float
    max_interval_s: float
    rate_hz: float
    """Rounds per second of the median interval."""


def cadence_of(t0s_s) -> Cadence | None:
    """Cadence of shot times (s, any order); None with fewer than two shots."""
    t = np.sort(np.asarray(t0s_s, float))
    if len(t) < 2:
        return None
    d = np.diff(t)
    med = float(np.median(d))
    return Cadence(len(t), med, float(d.min()), float(d.max()), 1.0 / med if med > 0 else float("inf"))


#: Shots farther apart than this (m, and 3x their combined CEP95) come from distinct shooters.
SHOOTER_SEPARATION_M = 8.0


def shooter_groups(shots: list[ShotState]) -> list[list[ShotState]]:
    """Cluster an incident's shots by place: one group per shooter (greedy, in time order).

    A shot joins the group whose weighted centre is within
    max(SHOOTER_SEPARATION_M, 3 x (its CEP95 + the group's)) of it; otherwise it starts a new one.
    """
    groups: list[list[ShotState]] = []
    # Per group: running sums of east and north (m) and the smallest CEP95 (m), so that each
    # shot costs one pass over the groups (an incident of automatic fire holds hundreds of shots).
    sums: list[list[float]] = []
    for s in sorted(shots, key=lambda s: s.t0_s):
        x, y = float(s.enu_m[0]), float(s.enu_m[1])
        cep_s = s.solution.cep95_m
        best, best_d = -1, math.inf
        for k, g in enumerate(groups):
            sx, sy, cep = sums[k]
            d = math.hypot(x - sx / len(g), y - sy / len(g))
            if d <= max(SHOOTER_SEPARATION_M, 3 * (cep_s + cep)) and d < best_d:
                best, best_d = k, d
        if best < 0:
            groups.append([s])
            sums.append([x, y, cep_s])
        else:
            groups[best].append(s)
            acc = sums[best]
            acc[0] += x
            acc[1] += y
            acc[2] = min(acc[2], cep_s)
    return groups


@dataclass
class IncidentState:
    """One incident being built."""

    incident_id: str
    shots: list[ShotState] = field(default_factory=list)
    state: str = "new"
    revision: int = 0
    closed: bool = False
    n_shooters_logged: int = 1
    review: m.Review | None = None

    @property
    def last_t0_s(self) -> float:
        return max(s.t0_s for s in self.shots)

    def shooters(self) -> list[list[ShotState]]:
        """The incident's shots grouped by shooter (place), largest group first."""
        return sorted(shooter_groups(self.shots), key=len, reverse=True)

    def cadence(self) -> list[Cadence | None]:
        """Cadence statistics per shooter (same order as :meth:`shooters`)."""
        return [cadence_of([s.t0_s for s in g]) for g in self.shooters()]

    def centre_enu(self) -> np.ndarray:
        return weighted_centre_enu(self.shots)


def weighted_centre_enu(shots: list[ShotState]) -> np.ndarray:
    """Mean ENU position (m) of shots weighted by 1/max(CEP50, 0.05 m)^2: precise shots count most."""
    w = np.array([1.0 / max(s.solution.cep50_m, 0.05) ** 2 for s in shots])
    p = np.array([s.enu_m for s in shots])
    return (p * w[:, None]).sum(0) / w.sum()


class IncidentBuilder:
    """Groups shots into incidents and renders Incident messages."""

    _ids = itertools.count(1)

    def __init__(self, cfg: HubConfig, associator: Associator, provenance: m.Provenance) -> None:
        self.cfg = cfg
        self.assoc = associator
        self.provenance = provenance
        self.open: list[IncidentState] = []
        self.n_closed = 0
        self._shot_cache: dict[str, tuple[tuple[str, int], m.Shot]] = {}
        self.recent_closed: OrderedDict[str, IncidentState] = OrderedDict()

    @property
    def frame(self) -> LocalFrame:
        frame = self.assoc.registry.frame
        assert frame is not None
        return frame

    def on_shot(self, shot: ShotState) -> m.Incident:
        """A shot was created or refined: return the incident message to publish."""
        for inc in self.open:
            if any(s is shot for s in inc.shots):
                inc.state = "updated"
                return self._render(inc)
        inc = self._find(shot)
        if inc is None:
            # Named by its first shot's UTC time: readable, and the same in a replay.
            stamp = ns_to_iso(self.assoc.abs_ns(shot.t0_s))[:19].replace("-", "").replace(":", "")
            inc = IncidentState(f"{self.cfg.site}-{stamp}-{next(self._ids):04d}")
            self.open.append(inc)
            inc.state = "new"
        else:
            inc.state = "updated"
        inc.shots.append(shot)
        return self._render(inc)

    def _find(self, shot: ShotState) -> IncidentState | None:
        c = self.cfg.incidents
        best, best_d = None, np.inf
        for inc in self.open:
            if shot.t0_s - inc.last_t0_s > c.gap_s:
                continue
            d = float(np.linalg.norm(inc.centre_enu()[:2] - shot.enu_m[:2]))
            if d <= c.radius_m + shot.solution.cep95_m and d < best_d:
                best, best_d = inc, d
        return best

    def close_due(self, watermark_ns: int) -> list[m.Incident]:
        """Close incidents whose last shot is more than ``gap_s`` before ``watermark_ns``."""
        out = []
        for inc in list(self.open):
            last_ns = self.assoc.abs_ns(inc.last_t0_s)
            if watermark_ns - last_ns > self.cfg.incidents.gap_s * 1e9:
                out.append(self._close(inc))
        return out

    def close_all(self) -> list[m.Incident]:
        """Close every open incident (end of a replay, hub shutdown)."""
        return [self._close(inc) for inc in list(self.open)]

    def on_review(self, incident_id: str, review: m.Review) -> m.Incident | None:
        """An operator reviewed an incident: its next revision, carrying the review (None if not held).

        The lifecycle state does not change; a relabel sets the event class.
        Closed incidents stay reviewable for the last ``RECENT_CLOSED`` closures.
        """
        inc = next((i for i in self.open if i.incident_id == incident_id), None)
        if inc is None:
            inc = self.recent_closed.get(incident_id)
        if inc is None:
            return None
        inc.review = review
        return self._render(inc)

    RECENT_CLOSED = 10_000

    def _close(self, inc: IncidentState) -> m.Incident:
        inc.state = "closed"
        inc.closed = True
        self.open.remove(inc)
        self.recent_closed[inc.incident_id] = inc
        while len(self.recent_closed) > self.RECENT_CLOSED:
            self.recent_closed.popitem(last=False)
        self.n_closed += 1
        msg = self._render(inc)
        for shot in inc.shots:
            self._shot_cache.pop(shot.shot_id, None)
        return msg

    # -- rendering -----------------------------------------------------------
    def _position(self, enu: np.ndarray) -> m.Position:
        lat, lon, alt = self.frame.to_wgs84(float(enu[0]), float(enu[1]), float(enu[2]))
        return m.Position(lat_deg=round(lat, 7), lon_deg=round(lon, 7), alt_m=round(alt, 2))

    def _shot_message(self, shot: ShotState) -> m.Shot:
        # Rendered once per shot revision: an incident of many rounds is
        # re-published whenever one round changes.
        key = (shot.shot_id, shot.revision)
        cached = self._shot_cache.get(shot.shot_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        msg = self._render_shot(shot)
        self._shot_cache[shot.shot_id] = (key, msg)
        return msg

    def _render_shot(self, shot: ShotState) -> m.Shot:
        sol: Solution = shot.solution
        residuals = [
            m.NodeResidual(
                node_id=p.node_id,
                detection_id=p.det.detection_id,
                residual_s=float(r),
                used=bool(u),
            )
            for p, r, u in zip(shot.picks.values(), sol.residuals_s, sol.used, strict=True)
        ]
        residuals += [
            m.NodeResidual(node_id=p.node_id, detection_id=p.det.detection_id, residual_s=0.0, used=False)
            for p in shot.corroborating.values()
        ]
        a, b, az = sol.ellipse_m
        return m.Shot(
            shot_id=shot.shot_id,
            time_ns=self.assoc.abs_ns(shot.t0_s),
            position=self._position(shot.enu_m),
            cep50_m=round(float(sol.cep50_m), 3),
            cep95_m=round(float(sol.cep95_m), 3),
            ellipse=m.Ellipse(semi_major_m=round(float(a), 3), semi_minor_m=round(float(b), 3), azimuth_deg=round(float(az), 1)),
            speed_of_sound_mps=round(float(sol.c_mps), 2),
            n_nodes=int(sol.n_used),
            rms_residual_s=float(sol.rms_residual_s),
            residuals=residuals,
            scores=_mean_scores([p.det for p in shot.picks.values()]),
        )

    def _render(self, inc: IncidentState) -> m.Incident:
        inc.revision += 1
        shots = sorted(inc.shots, key=lambda s: s.t0_s)
        shot_msgs = [self._shot_message(s) for s in shots]
        # Automatic fire is a property of one weapon: judge each shooter's own
        # cadence, so that two interleaved semi-automatic shooters are not
        # mistaken for one automatic weapon.
        rate = self.cfg.incidents.automatic_rate_hz
        groups = inc.shooters()
        cadences = [cadence_of([s.t0_s for s in g]) for g in groups]
        shooters = [self._shooter_message(g, c, rate) for g, c in zip(groups, cadences, strict=True)]
        automatic = any(sh.automatic_fire for sh in shooters)
        n_shooters = len(groups)
        if n_shooters > 1 and n_shooters != inc.n_shooters_logged:
            log.info("incident %s: %d shooters at distinct places", inc.incident_id, n_shooters)
            inc.n_shooters_logged = n_shooters
        scores = _mean_scores([p.det for s in shots for p in s.picks.values()])
        event_class = "unknown"
        if scores:
            top = max(scores, key=scores.get)
            event_class = CLASS_OF_SCORE.get(top, "other")
        if inc.review is not None and inc.review.decision == "relabelled" and inc.review.label:
            event_class = inc.review.label  # the operator's word over the machine's
        centre = inc.centre_enu()
        cep95 = min(s.solution.cep95_m for s in shots)
        return m.Incident(
            site=self.cfg.site,
            incident_id=inc.incident_id,
            state=inc.state,  # type: ignore[arg-type]
            revision=inc.revision,
            published_ns=now_ns(),
            first_shot_ns=shot_msgs[0].time_ns,
            last_shot_ns=shot_msgs[-1].time_ns,
            rounds=len(shots),
            position=self._position(centre),
            cep95_m=round(float(cep95), 3),
            event_class=event_class,  # type: ignore[arg-type]
            class_scores=scores,
            automatic_fire=automatic,
            shots=shot_msgs,
            shooters=shooters,
            review=inc.review,
            provenance=self.provenance,
        )

    def _shooter_message(self, group: list[ShotState], cad: Cadence | None, automatic_rate_hz: float) -> m.Shooter:
        return m.Shooter(
            position=self._position(weighted_centre_enu(group)),
            rounds=len(group),
            shot_ids=[s.shot_id for s in sorted(group, key=lambda s: s.t0_s)],
            automatic_fire=bool(cad is not None and cad.rounds >= 3 and cad.rate_hz > automatic_rate_hz),
            cadence=None if cad is None else m.Cadence(
                median_interval_s=round(cad.median_interval_s, 4),
                min_interval_s=round(cad.min_interval_s, 4),
                max_interval_s=round(cad.max_interval_s, 4),
                rate_hz=round(min(cad.rate_hz, 1000.0), 3),
            ),
        )


def _mean_scores(dets: list[m.Detection]) -> dict[str, float] | None:
    """Average the class scores of the detections that carry them (None when none do)."""
    scored = [d.scores for d in dets if d.scores]
    if not scored:
        return None
    keys = sorted({k for s in scored for k in s})
    return {k: round(float(np.mean([s.get(k, 0.0) for s in scored])), 4) for k in keys}
