"""Incidents: shots from one place within a time gap, with a lifecycle.

An incident is created (``new``) by its first shot, ``updated`` whenever a
shot joins or an existing shot is refined, and ``closed`` once no shot has
joined for ``gap_s`` seconds. Each change produces an Incident message.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import operator
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
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
    # In plain floats (the same numbers: the middle one, or the mean of the two): an incident is rendered
    # at every new shot, and numpy's sort, diff and median of a few dozen intervals were 1.8 % of the
    # dense scene's profile.
    t = sorted(float(x) for x in t0s_s)
    if len(t) < 2:
        return None
    d = sorted(b - a for a, b in itertools.pairwise(t))
    h = len(d) // 2
    med = d[h] if len(d) % 2 else (d[h - 1] + d[h]) / 2
    return Cadence(len(t), med, d[0], d[-1], 1.0 / med if med > 0 else float("inf"))


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
    n_shooters_logged: int = 1
    review: m.Review | None = None
    published_ns: int = 0
    """The hub's clock (ns) at its last publication by :meth:`IncidentBuilder.on_shots` (or its refinements)."""
    _view: _ShotsView | None = field(default=None, init=False, repr=False, compare=False)
    _summary: tuple[tuple[int, int], float, np.ndarray] | None = field(default=None, init=False, repr=False,
                                                                      compare=False)
    """((shots, sum of their revisions), :attr:`last_t0_s`, :meth:`centre_enu`) when last computed."""

    def view(self) -> _ShotsView | None:
        """What rendering needs of the shots, brought up to date with them (None when a shot's
        values have no place in it, a NaN time say: then compute from the shots themselves)."""
        v = self._view
        if v is None:
            v = self._view = _ShotsView()
        if not v.sync(self.shots):
            self._view = None
            return None
        return v

    @property
    def last_t0_s(self) -> float:
        v = self.view()
        if v is not None:
            return max(v.t0)
        return max(s.t0_s for s in self.shots)

    def summary(self) -> tuple[float, np.ndarray]:
        """(:attr:`last_t0_s`, :meth:`centre_enu`), recomputed only when a shot was added or changed
        (every change bumps a shot's revision, so the sum of revisions moves): the view behind these
        two (:class:`_ShotsView`) costs far more to bring up to date than this sum. The builder
        keeps every open incident's summary (:class:`_OpenIncidents`) and asks again only when one
        of its shots changed."""
        key = (len(self.shots), sum(map(operator.attrgetter("revision"), self.shots)))
        if self._summary is None or self._summary[0] != key:
            self._summary = (key, self.last_t0_s, self.centre_enu())
        return self._summary[1], self._summary[2]

    def shooters(self) -> list[list[ShotState]]:
        """The incident's shots grouped by shooter (place), largest group first."""
        return sorted(shooter_groups(self.shots), key=len, reverse=True)

    def cadence(self) -> list[Cadence | None]:
        """Cadence statistics per shooter (same order as :meth:`shooters`)."""
        return [cadence_of([s.t0_s for s in g]) for g in self.shooters()]

    def centre_enu(self) -> np.ndarray:
        v = self.view()
        if v is not None:
            return v.centre()
        return weighted_centre_enu(self.shots)


def _weight(shot: ShotState):
    """A shot's weight in a centre: 1/max(CEP50, 0.05 m)^2."""
    return 1.0 / max(shot.solution.cep50_m, 0.05) ** 2


def _centre(p: np.ndarray, w: np.ndarray) -> np.ndarray:
    return (p * w[:, None]).sum(0) / w.sum()


def weighted_centre_enu(shots: list[ShotState]) -> np.ndarray:
    """Mean ENU position (m) of shots weighted by 1/max(CEP50, 0.05 m)^2: precise shots count most."""
    w = np.array([_weight(s) for s in shots])
    p = np.array([s.enu_m for s in shots])
    return _centre(p, w)


def _first_difference(a: list, b: list) -> int:
    """The first index at which ``a`` and ``b`` differ (``len(b)`` if ``a`` extends ``b``); a != b."""
    lo, hi = 0, min(len(a), len(b))  # a[:lo] == b[:lo]
    if a[:hi] == b[:hi]:
        return hi
    while hi - lo > 1:  # a[lo:hi] != b[lo:hi]
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


class _Group:
    """One shooter group of :class:`_ShotsView`: its members in time order (their time-order
    positions, shot indices, ids, times, positions and weights) and the greedy pass's running
    (sum east, sum north, min CEP95) after each member; its Shooter message while it holds."""

    __slots__ = ("pos", "idx", "ids", "t0", "sums", "p", "w", "msg")

    def __init__(self) -> None:
        self.pos: list[int] = []
        self.idx: list[int] = []
        self.ids: list[str] = []
        self.t0: list[float] = []
        self.sums: list[tuple] = []
        self.p = np.empty((8, 3))
        self.w = np.empty(8)
        self.msg: m.Shooter | None = None

    def add(self, pos: int, i: int, view: _ShotsView, sums: tuple) -> None:
        n = len(self.idx)
        if n == len(self.w):
            self.p = np.concatenate((self.p, np.empty((n, 3))))
            self.w = np.concatenate((self.w, np.empty(n)))
        self.p[n] = view.p[i]
        self.w[n] = view.w[i]
        self.pos.append(pos)
        self.idx.append(i)
        self.ids.append(view.ids[i])
        self.t0.append(view.t0[i])
        self.sums.append(sums)

    def cut(self, n: int) -> list[int]:
        """Keep the first ``n`` members; returns the indices of the others."""
        tail = self.idx[n:]
        for a in (self.pos, self.idx, self.ids, self.t0, self.sums):
            del a[n:]
        return tail

    def centre(self) -> np.ndarray:
        """:func:`weighted_centre_enu` of the members."""
        n = len(self.idx)
        return _centre(self.p[:n], self.w[:n])


class _ShotsView:
    """An incident's shots as rendering needs them, kept in step with the shots.

    An incident of automatic fire holds hundreds of shots and is rendered
    whenever one of them changes, so a render must not walk them all: this
    keeps, per shot, what was read from it (time, position, CEP, weight,
    class scores, its Shot message), re-read only when the shot's revision
    changes (the associator bumps it with every change of picks, solution,
    position or time), and from those

    * the shots in time order (``(t0, index)`` pairs, ``index`` the position
      in ``IncidentState.shots``: the order of a stable sort by time), with
      their Shot messages, CEP95s and counts of scored picks in that order;
    * the shooter groups of :func:`shooter_groups` with the greedy pass's
      running sums after each member, so that a change replays the pass only
      from the first position in time order that changed, and each group's
      Shooter message until its members or their revisions change;
    * per class, the scores of the scored picks in time order as one array
      (what :func:`_mean_scores` averages, in the same order).

    Everything is computed as the from-scratch code does, on the same values
    in the same order, so a render gives the same message to the bit (the
    test compares with a fresh builder). What remains per shot in a render is
    reading its revision (one list comprehension) and a few C-level passes:
    the weighted centre (numpy), the smallest CEP95, a copy of the message list.
    """

    def __init__(self) -> None:
        self.shots: list[ShotState] | None = None
        """The list this view follows (``IncidentState.shots``)."""
        self.known: list[ShotState] = []
        """Its shots as last seen (to notice a list changed behind our back)."""
        self.revs: list[int] = []
        # Per shot (by index in the list): what the render reads of it.
        self.t0: list[float] = []
        self.ids: list[str] = []
        self.xyc: list[tuple] = []
        """(east m, north m, CEP95 m) as :func:`shooter_groups` reads them."""
        self.p = np.empty((16, 3))
        self.w = np.empty(16)
        self.msg: list[m.Shot | None] = []
        self.stale: list[int] = []
        """Indices whose Shot message is to be rendered (None in ``msg``)."""
        self.scored: list[list[dict[str, float]]] = []
        self.exotic: list[bool] = []
        """A score that is not a plain float (then averaged as :func:`_mean_scores` does it)."""
        self.n_exotic = 0
        self.n_scored = 0
        self.key_count: dict[str, int] = {}
        self.flat: dict[str, np.ndarray] | None = None
        """Per class (sorted), every scored pick's score in time order; None: to rebuild."""
        # Time order.
        self.order: list[tuple[float, int]] = []
        self.s_msg: list[m.Shot | None] = []
        self.s_cep: list = []
        self.s_nsc: list[int] = []
        self.groups: list[_Group] = []
        """Shooter groups in order of creation (that of :func:`shooter_groups`)."""
        self.placed: dict[bytes, m.Position] = {}
        """The last render's positions by place (:meth:`IncidentBuilder._positions`)."""
        self._centre: np.ndarray | None = None
        """:meth:`centre` since the shots last changed (asked by a render and by the incident's summary)."""

    # -- keeping in step ---------------------------------------------------------
    def sync(self, shots: list[ShotState]) -> bool:
        """Catch up with the shots; False if a shot cannot be placed (the view is then unusable)."""
        n_old = len(self.known)
        if shots is not self.shots or len(shots) < n_old or shots[:n_old] != self.known:
            if self.shots is not None:
                self.__init__()  # type: ignore[misc]
            self.shots = shots
            n_old = 0
        revs = [s.revision for s in shots]
        if revs == self.revs:
            return True
        # The shots that changed are mostly recent ones: skip the unchanged start at C speed.
        first = _first_difference(revs, self.revs)
        diff = map(operator.ne, revs[first:n_old], self.revs[first:])
        changed = list(itertools.compress(range(first, n_old), diff))
        fresh = changed + list(range(n_old, len(shots)))
        k = len(self.order)  # the first position in time order that changed
        for i in changed:
            k = min(k, self._unplace(i))
        self._grow(len(shots))
        self.known.extend(shots[n_old:])
        for i in fresh:
            if not self._read(i, shots[i]):
                return False
        for i in fresh:
            k = min(k, self._place(i))
        self.revs = revs
        self._centre = None
        self._regroup(k, set(fresh))
        return True

    def _grow(self, n: int) -> None:
        extra = n - len(self.t0)
        if extra <= 0:
            return
        self.t0 += [0.0] * extra
        self.ids += [""] * extra
        self.xyc += [()] * extra
        self.msg += [None] * extra
        self.scored += [[]] * extra
        self.exotic += [False] * extra
        if n > len(self.w):
            cap = max(n, 2 * len(self.w))
            p, w = np.empty((cap, 3)), np.empty(cap)
            p[: len(self.w)] = self.p
            w[: len(self.w)] = self.w
            self.p, self.w = p, w

    def _read(self, i: int, shot: ShotState) -> bool:
        t0, enu, sol = shot.t0_s, shot.enu_m, shot.solution
        w = _weight(shot)
        if t0 != t0 or np.shape(enu) != (3,) or not isinstance(w, float):
            return False  # a NaN time has no place in time order; odd types: not the same sums
        self.t0[i] = t0
        self.ids[i] = shot.shot_id
        self.xyc[i] = (float(enu[0]), float(enu[1]), sol.cep95_m)
        self.p[i] = enu
        self.w[i] = w
        self.msg[i] = None
        self.stale.append(i)
        scored = [p.det.scores for p in shot.picks.values() if p.det.scores]
        self.scored[i] = scored
        self.exotic[i] = any(type(v) is not float for sc in scored for v in sc.values())
        return True

    def _unplace(self, i: int) -> int:
        """Take shot ``i`` (as last read) out of the time order; returns its position."""
        k = bisect.bisect_left(self.order, (self.t0[i], i))
        del self.order[k], self.s_msg[k], self.s_cep[k]
        n = self.s_nsc.pop(k)
        if n:
            if self.flat is not None:
                off = sum(self.s_nsc[:k])
                for key, a in self.flat.items():
                    self.flat[key] = np.concatenate((a[:off], a[off + n :]))
            self.n_scored -= n
            self.n_exotic -= self.exotic[i]
            for sc in self.scored[i]:
                for key in sc:
                    c = self.key_count[key] - 1
                    if c:
                        self.key_count[key] = c
                    else:
                        del self.key_count[key]
                        self.flat = None
        return k

    def _place(self, i: int) -> int:
        """Put shot ``i`` (as just read) into the time order; returns its position."""
        key_i = (self.t0[i], i)
        k = bisect.bisect_left(self.order, key_i)
        self.order.insert(k, key_i)
        self.s_msg.insert(k, self.msg[i])
        self.s_cep.insert(k, self.xyc[i][2])
        scored = self.scored[i]
        self.s_nsc.insert(k, len(scored))
        if scored:
            self.n_scored += len(scored)
            self.n_exotic += self.exotic[i]
            for sc in scored:
                for key in sc:
                    c = self.key_count.get(key, 0)
                    if not c:
                        self.flat = None
                    self.key_count[key] = c + 1
            if self.flat is not None:
                off = sum(self.s_nsc[:k])
                for key, a in self.flat.items():
                    seg = np.array([sc.get(key, 0.0) for sc in scored], dtype=float)
                    self.flat[key] = np.concatenate((a[:off], seg, a[off:]))
        return k

    def _regroup(self, k: int, fresh: set[int]) -> None:
        """:func:`shooter_groups`' greedy pass again from time-order position ``k`` on
        (the groups up to there are as they were)."""
        groups = self.groups
        kept = []  # per group kept: (members before k, indices of the members it had from k on)
        for g in groups:
            n = bisect.bisect_left(g.pos, k)
            if n == 0:
                break  # this group and the later ones start at k or after
            kept.append((n, g.cut(n)))
        del groups[len(kept):]
        order, xyc = self.order, self.xyc
        for pos in range(k, len(order)):
            i = order[pos][1]
            x, y, cep_s = xyc[i]
            best, best_d = -1, math.inf
            for j, g in enumerate(groups):
                sx, sy, cep = g.sums[-1]
                n = len(g.sums)
                d = math.hypot(x - sx / n, y - sy / n)
                if d <= max(SHOOTER_SEPARATION_M, 3 * (cep_s + cep)) and d < best_d:
                    best, best_d = j, d
            if best < 0:
                g = _Group()
                g.add(pos, i, self, (x, y, cep_s))
                groups.append(g)
            else:
                g = groups[best]
                sx, sy, cep = g.sums[-1]
                g.add(pos, i, self, (sx + x, sy + y, min(cep, cep_s)))
        # A group keeps its Shooter message if it has the same members as before, none of them
        # changed (the groups after those kept are new).
        for g, (n, old_tail) in zip(groups[: len(kept)], kept, strict=True):
            tail = g.idx[n:]
            if tail != old_tail or not fresh.isdisjoint(tail):
                g.msg = None

    # -- reading -------------------------------------------------------------------
    def take_stale(self) -> list[int]:
        stale, self.stale = self.stale, []
        return stale

    def set_message(self, i: int, msg: m.Shot) -> None:
        self.msg[i] = msg
        self.s_msg[bisect.bisect_left(self.order, (self.t0[i], i))] = msg

    def centre(self) -> np.ndarray:
        """:func:`weighted_centre_enu` of all the shots (read-only: it is kept until they change)."""
        if self._centre is None:
            n = len(self.known)
            self._centre = _centre(self.p[:n], self.w[:n])
            self._centre.flags.writeable = False
        return self._centre

    def mean_scores(self) -> dict[str, float] | None:
        """:func:`_mean_scores` over the picks of all the shots in time order."""
        if not self.n_scored:
            return None
        if self.n_exotic:
            assert self.shots is not None
            shots = self.shots
            return _mean_scores([p.det for _, i in self.order for p in shots[i].picks.values()])
        if self.flat is None:
            scored = [sc for _, i in self.order for sc in self.scored[i]]
            self.flat = {
                key: np.array([sc.get(key, 0.0) for sc in scored], dtype=float) for key in sorted(self.key_count)
            }
        return {key: round(float(np.mean(a)), 4) for key, a in self.flat.items()}


class _Open:
    """One open incident as :class:`_OpenIncidents` holds it: its place in the order of opening and its
    summary (last shot time s, centre ENU m) with the grid cell of that centre (None: not finite)."""

    __slots__ = ("inc", "seq", "open", "last_t0_s", "centre", "cell")

    def __init__(self, inc: IncidentState, seq: int) -> None:
        self.inc = inc
        self.seq = seq
        self.open = True
        self.last_t0_s = math.nan
        self.centre: np.ndarray | None = None
        self.cell: tuple[int, int] | None = None


class _OpenIncidents:
    """The open incidents, kept ready for :meth:`IncidentBuilder._find` and :meth:`IncidentBuilder.close_due`.

    A new shot is compared with the open incidents, hundreds of them on a
    fireworks night over a city, and every tick asks which are quiet. Asking
    each incident for its summary costs a pass over its shots and a call per
    incident. Here instead:

    * every open incident's shots are in one list with their revisions as
      last seen, so that the shots that changed (the associator re-locates a
      shot before its update is handled, and bumps its revision) are found
      with one list comprehension and one comparison at C speed, and only
      their incidents' summaries are taken again (:meth:`refresh`);
    * the summaries are kept, and their centres filed in a grid of square
      cells (``cell_m`` a side): a new shot is compared only with the
      incidents in the cells it can reach (:meth:`near`).

    The summaries are those :meth:`IncidentState.summary` gives at the same
    moment, so the incident chosen is the one a comparison with every open
    incident chooses.
    """

    MARGIN_M = 1.0
    """Added to a shot's reach (m) when choosing cells: far more than the rounding of a cell's bounds."""

    def __init__(self, cell_m: float) -> None:
        self.cell_m = cell_m
        self.entries: dict[int, _Open] = {}
        """By ``id()`` of the incident (each entry holds its incident), in the order of opening."""
        self.cells: dict[tuple[int, int], dict[int, _Open]] = {}
        """Per grid cell, the entries whose centre is in it, by ``seq``."""
        self.unplaced: dict[int, _Open] = {}
        """Entries whose centre is not finite (compared with every shot, as before)."""
        self.last_t0_s: dict[int, float] = {}
        """Each filed entry's last shot time (s), by ``seq``: the oldest at C speed."""
        self.n_nan = 0
        """Entries whose last shot time is NaN (then every incident is checked when closing)."""
        self._seq = itertools.count()
        # Per shot of the open incidents (in the order they joined): the shot, its incident's
        # entry, and its revision when that incident's summary was last taken (-1: not yet).
        self.shots: list[ShotState] = []
        self.owners: list[_Open] = []
        self.revs: list[int] = []
        self._closed_any = False

    def __len__(self) -> int:
        return len(self.entries)

    def add_shot(self, inc: IncidentState, shot: ShotState) -> None:
        """``shot`` joined ``inc`` (opened now if not yet held); its summary is retaken at :meth:`refresh`."""
        entry = self.entries.get(id(inc))
        if entry is None:
            entry = self.entries[id(inc)] = _Open(inc, next(self._seq))
        self.shots.append(shot)
        self.owners.append(entry)
        self.revs.append(-1)

    def remove(self, inc: IncidentState) -> None:
        """``inc`` closed (its shots leave the list at the next :meth:`refresh`)."""
        entry = self.entries.pop(id(inc))
        entry.open = False
        self._unfile(entry)
        self._closed_any = True

    def summary(self, inc: IncidentState) -> tuple[float, np.ndarray | None]:
        """(last shot time s, centre ENU m) of an open incident as of the last :meth:`refresh`."""
        entry = self.entries[id(inc)]
        return entry.last_t0_s, entry.centre

    def refresh(self) -> None:
        """Take again the summaries of the incidents whose shots changed or joined since the last call."""
        if self._closed_any:
            self._drop_closed()
        revs = [s.revision for s in self.shots]
        if revs == self.revs:
            return
        first = _first_difference(revs, self.revs)
        changed = itertools.compress(self.owners[first:], map(operator.ne, revs[first:], self.revs[first:]))
        for entry in {id(e): e for e in changed}.values():
            self._unfile(entry)
            entry.last_t0_s, entry.centre = entry.inc.summary()
            self._file(entry)
        self.revs = revs

    def oldest(self) -> float | None:
        """The earliest last shot time (s) of the open incidents; None when none is open or one is NaN
        (no order to go by)."""
        if not self.last_t0_s or self.n_nan:
            return None
        return min(self.last_t0_s.values())

    def near(self, x, y, reach_m) -> list[IncidentState]:
        """The open incidents, in the order of opening, whose centre may be within ``reach_m`` of
        (``x``, ``y``) m: all those not in a cell out of reach (all of them if the reach or the
        place is not finite, or takes more cells than there are incidents)."""
        r = reach_m + self.MARGIN_M
        if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(r)):
            return [e.inc for e in self.entries.values()]
        s = self.cell_m
        i0, i1 = math.floor((x - r) / s), math.floor((x + r) / s)
        j0, j1 = math.floor((y - r) / s), math.floor((y + r) / s)
        if (i1 - i0 + 1) * (j1 - j0 + 1) > len(self.entries):
            return [e.inc for e in self.entries.values()]
        found = list(self.unplaced.values())
        cells = self.cells
        for i in range(i0, i1 + 1):
            for j in range(j0, j1 + 1):
                cell = cells.get((i, j))
                if cell:
                    found += cell.values()
        found.sort(key=operator.attrgetter("seq"))
        return [e.inc for e in found]

    def _file(self, entry: _Open) -> None:
        assert entry.centre is not None
        x, y = float(entry.centre[0]), float(entry.centre[1])
        self.last_t0_s[entry.seq] = entry.last_t0_s
        if entry.last_t0_s != entry.last_t0_s:
            self.n_nan += 1
        if math.isfinite(x) and math.isfinite(y):
            entry.cell = (math.floor(x / self.cell_m), math.floor(y / self.cell_m))
            self.cells.setdefault(entry.cell, {})[entry.seq] = entry
        else:
            entry.cell = None
            self.unplaced[entry.seq] = entry

    def _unfile(self, entry: _Open) -> None:
        if entry.centre is None:
            return  # never filed
        del self.last_t0_s[entry.seq]
        if entry.last_t0_s != entry.last_t0_s:
            self.n_nan -= 1
        if entry.cell is None:
            del self.unplaced[entry.seq]
            return
        cell = self.cells[entry.cell]
        del cell[entry.seq]
        if not cell:
            del self.cells[entry.cell]

    def _drop_closed(self) -> None:
        keep = [k for k, e in enumerate(self.owners) if e.open]
        self.shots = [self.shots[k] for k in keep]
        self.owners = [self.owners[k] for k in keep]
        self.revs = [self.revs[k] for k in keep]
        self._closed_any = False


class IncidentBuilder:
    """Groups shots into incidents and renders Incident messages."""

    _ids = itertools.count(1)

    CELL_RADII = 2.0
    """Side of the cells of the open incidents' grid, in incident radii (``incidents.radius_m``): a
    shot's reach (a radius and its CEP95) mostly spans two cells each way."""

    def __init__(self, cfg: HubConfig, associator: Associator, provenance: m.Provenance) -> None:
        self.cfg = cfg
        self.assoc = associator
        self.provenance = provenance
        self.open: list[IncidentState] = []
        self._owner: dict[str, IncidentState] = {}
        """The open incident of each shot in one (by shot id)."""
        self._index = _OpenIncidents(self.CELL_RADII * cfg.incidents.radius_m)
        self.n_closed = 0
        self._shot_cache: dict[str, tuple[tuple[str, int], m.Shot]] = {}
        self.recent_closed: OrderedDict[str, m.Incident] = OrderedDict()
        """The last ``RECENT_CLOSED`` closed incidents, each as its latest message, for :meth:`on_review`."""
        self._refined: dict[int, IncidentState] = {}
        """Open incidents whose refined shots wait to be published (``incidents.refine_interval_s``), by id."""
        self.adopt_incident: Callable[[str], tuple[str, int] | None] | None = None
        """Set by a restarted hub's journal replay (:mod:`shotline.hub.recovery`), kept while the hub runs (as
        ``Associator.adopt_shot_id``): given a new shot's id, (incident id, stored revision) of the stored
        incident that holds that shot, if any."""

    @property
    def frame(self) -> LocalFrame:
        frame = self.assoc.registry.frame
        assert frame is not None
        return frame

    def on_shot(self, shot: ShotState) -> m.Incident:
        """A shot was created or refined: return the incident message to publish."""
        return self.on_shots([shot])[0]

    def on_shots(self, shots: list[ShotState], now_ns: int | None = None) -> list[m.Incident]:
        """Shots created or refined at one moment (one detection, one tick): the message of each
        incident they touched, once each, in the order the incidents were first touched; at ``now_ns``
        (the hub's clock) an incident that gained no shot waits until ``incidents.refine_interval_s`` after
        its last message (:meth:`refinements_due`; None: published now).

        A re-location pass refines several rounds of one burst at once (dense scene: 724 shot
        updates in 519 incident messages); one revision per incident then says it all, where a
        revision per shot published the incident again with only one of its rounds refined.
        """
        touched: dict[int, IncidentState] = {}
        grew: set[int] = set()
        for shot in shots:
            inc = self._owner.get(shot.shot_id)
            if inc is None:
                inc = self._stored_incident(shot) if self.adopt_incident is not None else None
                if inc is None:
                    inc = self._find(shot)
                if inc is None:
                    inc = self._new_incident(shot)
                    self.open.append(inc)
                inc.shots.append(shot)
                self._index.add_shot(inc, shot)
                self._owner[shot.shot_id] = inc
                grew.add(id(inc))
            if id(inc) not in touched:
                touched[id(inc)] = inc
                if inc.revision:  # published before: not one this call opened
                    inc.state = "updated"
        interval_ns = self.cfg.incidents.refine_interval_s * 1e9
        out = []
        for key, inc in touched.items():
            if key in grew or now_ns is None or now_ns - inc.published_ns >= interval_ns:
                out.append(self._publish(inc, now_ns))
            else:
                self._refined[key] = inc  # published with its next round, or once the interval is over
        return out

    def _stored_incident(self, shot: ShotState) -> IncidentState | None:
        """After a restart: the incident the store holds ``shot`` in
        (:attr:`adopt_incident`), opened again (from its stored revision) if the replay has not yet; the
        stored grouping wins over :meth:`_find`'s, so that no stored incident is made twice."""
        got = self.adopt_incident(shot.shot_id)  # type: ignore[misc]
        if got is None:
            return None
        inc = next((i for i in self.open if i.incident_id == got[0]), None)
        if inc is None:
            inc = IncidentState(got[0])
            inc.revision = got[1]
            inc.state = "updated"
            self.open.append(inc)
        return inc

    def _new_incident(self, shot: ShotState) -> IncidentState:
        """The incident a new ``shot`` opens: named by the shot's UTC time (readable, and the same in a replay)
        and the next of the counter."""
        stamp = ns_to_iso(self.assoc.abs_ns(shot.t0_s))[:19].replace("-", "").replace(":", "")
        inc = IncidentState(f"{self.cfg.site}-{stamp}-{next(self._ids):04d}")
        inc.state = "new"
        return inc

    def refinements_due(self, now_ns: int) -> list[m.Incident]:
        """The messages of the incidents whose shots were refined since they were last published, at least
        ``refine_interval_s`` before ``now_ns`` (the hub's clock), in the order they were first held back."""
        interval_ns = self.cfg.incidents.refine_interval_s * 1e9
        due = [inc for inc in self._refined.values() if now_ns - inc.published_ns >= interval_ns]
        return [self._publish(inc, now_ns) for inc in due]

    def _publish(self, inc: IncidentState, now_ns: int | None) -> m.Incident:
        """:meth:`_render` of an incident that is published now (``now_ns``, the hub's clock, if known): it
        holds back no refinement any more."""
        self._refined.pop(id(inc), None)
        if now_ns is not None:
            inc.published_ns = now_ns
        return self._render(inc)

    def _find(self, shot: ShotState) -> IncidentState | None:
        """The open incident the new ``shot`` joins: the nearest (first opened on a tie) of those with
        a shot within ``gap_s`` before it and their centre within ``radius_m`` + its CEP95."""
        index = self._index
        index.refresh()
        if not len(index):
            return None
        near = index.near(shot.enu_m[0], shot.enu_m[1], self.cfg.incidents.radius_m + shot.solution.cep95_m)
        return self._nearest(shot, ((inc, *index.summary(inc)) for inc in near))

    def _nearest(self, shot: ShotState, candidates) -> IncidentState | None:
        """The rule of :meth:`_find` over ``candidates``, (incident, last shot time s, centre ENU m) in
        the order the incidents were opened: the nearest with a shot within ``gap_s`` before ``shot``
        and its centre within ``radius_m`` + the shot's CEP95 (the first on a tie)."""
        c = self.cfg.incidents
        best, best_d = None, np.inf
        for inc, last_t0_s, centre in candidates:
            if shot.t0_s - last_t0_s > c.gap_s:
                continue
            d = math.hypot(centre[0] - shot.enu_m[0], centre[1] - shot.enu_m[1])
            if d <= c.radius_m + shot.solution.cep95_m and d < best_d:
                best, best_d = inc, d
        return best

    def close_due(self, watermark_ns: int) -> list[m.Incident]:
        """Close incidents whose last shot is more than ``gap_s`` before ``watermark_ns``."""
        index = self._index
        index.refresh()
        if not index:
            return []
        # The absolute time of a last shot grows with it: if the oldest is not due, none is
        # (most ticks), and the incidents need not be visited one by one.
        oldest = index.oldest()
        if oldest is not None and not self._quiet(watermark_ns, oldest):
            return []
        return [self._close(inc) for inc in list(self.open) if self._quiet(watermark_ns, index.summary(inc)[0])]

    def _quiet(self, watermark_ns: int, last_t0_s: float) -> bool:
        """Whether a last shot at ``last_t0_s`` (s) is more than ``gap_s`` before ``watermark_ns``."""
        return watermark_ns - self.assoc.abs_ns(last_t0_s) > self.cfg.incidents.gap_s * 1e9

    def close_all(self) -> list[m.Incident]:
        """Close every open incident (end of a replay, hub shutdown)."""
        return [self._close(inc) for inc in list(self.open)]

    def on_review(self, incident_id: str, review: m.Review) -> m.Incident | None:
        """An operator reviewed an incident: its next revision, carrying the review (None if not held).

        The lifecycle state does not change; a relabel sets the event class.
        Closed incidents stay reviewable for the last ``RECENT_CLOSED`` closures (from their last
        message: nothing of a closed incident changes but its review).
        """
        inc = next((i for i in self.open if i.incident_id == incident_id), None)
        if inc is not None:
            inc.review = review
            return self._publish(inc, None)  # (with the refinements held back so far)
        last = self.recent_closed.get(incident_id)
        if last is None:
            return None
        msg = self.recent_closed[incident_id] = reviewed_revision(last, review)
        return msg

    #: Closed incidents kept reviewable. Each is kept as its last message only: with its shots and picks
    #: (the detections behind them) it held ~23 kB per shot (dense scene after 270 s: 35 MB for 8
    #: incidents), which 10,000 incidents of a fireworks night would make gigabytes.
    RECENT_CLOSED = 10_000

    def _close(self, inc: IncidentState) -> m.Incident:
        inc.state = "closed"
        self._refined.pop(id(inc), None)  # (the closing message holds every refinement)
        self.open.remove(inc)
        self._index.remove(inc)
        self.n_closed += 1
        msg = self._render(inc)  # (kept as this message: the state, its view and its shots go)
        self.recent_closed[inc.incident_id] = msg
        while len(self.recent_closed) > self.RECENT_CLOSED:
            self.recent_closed.popitem(last=False)
        for shot in inc.shots:
            self._shot_cache.pop(shot.shot_id, None)
            self._owner.pop(shot.shot_id, None)
        return msg

    # -- rendering -----------------------------------------------------------
    def _position(self, enu: np.ndarray) -> m.Position:
        lat, lon, alt = self.frame.to_wgs84(float(enu[0]), float(enu[1]), float(enu[2]))
        return m.Position(lat_deg=round(lat, 7), lon_deg=round(lon, 7), alt_m=round(alt, 2))

    def _positions(self, enus: list[np.ndarray], known: dict[bytes, m.Position] | None = None,
                   ) -> tuple[list[m.Position], dict[bytes, m.Position]]:
        """:meth:`_position` of each ENU point (m, three each), the same numbers; and the Positions
        by place (the point's three float64s as bytes).

        The places not in ``known`` go through the projection in one call, each once: a closing
        incident's places are those of its last render, and one shot's place, its shooter's and
        its incident's centre often coincide; a call to the projection costs far more than a point.
        """
        xyz = np.array(enus, dtype=float)
        raw = xyz.tobytes()
        keys = [raw[k : k + 24] for k in range(0, len(raw), 24)]
        found: dict[bytes, m.Position | None] = dict.fromkeys(keys)
        if known:
            for key in found:
                found[key] = known.get(key)
        todo = [key for key, pos in found.items() if pos is None]
        if todo:
            enu = np.frombuffer(b"".join(todo)).reshape(-1, 3)
            frame = self.frame
            if len(todo) <= self.POINT_BY_POINT:
                wgs = [frame.to_wgs84(*p) for p in enu.tolist()]
            else:
                wgs = zip(*(v.tolist() for v in frame.to_wgs84(*enu.T)), strict=True)
            for key, (a, b, c) in zip(todo, wgs, strict=True):
                found[key] = m.Position(lat_deg=round(a, 7), lon_deg=round(b, 7), alt_m=round(c, 2))
        return [found[key] for key in keys], found  # type: ignore[misc]

    POINT_BY_POINT = 4
    """:meth:`_positions` projects up to this many places one by one (the projection's point path costs
    a third of its array path's per call; a render projects 2.6 places on average, dense scene)."""

    def _cached_shot_message(self, shot: ShotState) -> m.Shot | None:
        cached = self._shot_cache.get(shot.shot_id)
        if cached is not None and cached[0] == (shot.shot_id, shot.revision):
            return cached[1]
        return None

    def _shot_message(self, shot: ShotState, position: m.Position | None = None) -> m.Shot:
        # Rendered once per shot revision: an incident of many rounds is
        # re-published whenever one round changes.
        msg = self._cached_shot_message(shot)
        if msg is None:
            msg = self._render_shot(shot, position)
            self._shot_cache[shot.shot_id] = ((shot.shot_id, shot.revision), msg)
        return msg

    def _render_shot(self, shot: ShotState, position: m.Position | None = None) -> m.Shot:
        sol: Solution = shot.solution
        # As Python floats and bools in one pass each (what float() and bool() give per element).
        res_s = np.asarray(sol.residuals_s, dtype=float).tolist()
        used = np.asarray(sol.used, dtype=bool).tolist()
        residuals = [
            m.NodeResidual(node_id=p.det.node_id, detection_id=p.det.detection_id, residual_s=r, used=u)
            for p, r, u in zip(shot.picks.values(), res_s, used, strict=True)
        ]
        residuals += [
            m.NodeResidual(node_id=p.node_id, detection_id=p.det.detection_id, residual_s=0.0, used=False)
            for p in shot.corroborating.values()
        ]
        a, b, az = sol.ellipse_m
        return m.Shot(
            shot_id=shot.shot_id,
            time_ns=self.assoc.abs_ns(shot.t0_s),
            position=self._position(shot.enu_m) if position is None else position,
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
        """The incident's next revision, from its view (:class:`_ShotsView`): the cost of a
        render grows with what changed since the last one, hardly with the number of shots."""
        inc.revision += 1
        v = inc.view()
        if v is None:
            return self._render_full(inc)
        # Every position this render needs (shots re-rendered, shooters that changed, the
        # incident's centre) goes through the projection in one call.
        to_render = []
        for i in v.take_stale():
            msg = self._cached_shot_message(inc.shots[i])
            if msg is None:
                to_render.append(i)
            else:
                v.set_message(i, msg)
        groups = sorted(v.groups, key=lambda g: len(g.idx), reverse=True)
        changed = [g for g in groups if g.msg is None]
        centre = v.centre()
        # The one shooter of a one-shot incident has its centre: the same numbers from the same row.
        centres = [centre if len(v.known) == 1 else g.centre() for g in changed]
        positions, v.placed = self._positions([inc.shots[i].enu_m for i in to_render] + centres + [centre], v.placed)
        for i, pos in zip(to_render, positions, strict=False):
            v.set_message(i, self._shot_message(inc.shots[i], pos))
        rate = self.cfg.incidents.automatic_rate_hz
        for g, pos in zip(changed, positions[len(to_render) :], strict=False):
            cad = cadence_of(g.t0) if len(g.t0) > 1 else None  # (one round has none: spare numpy)
            g.msg = self._shooter_message_at(pos, list(g.ids), cad, rate)
        shot_msgs: list[m.Shot] = v.s_msg  # type: ignore[assignment]
        shooters: list[m.Shooter] = [g.msg for g in groups]  # type: ignore[misc]
        return self._incident_message(inc, shot_msgs, shooters, v.mean_scores(), positions[-1], min(v.s_cep))

    def _render_full(self, inc: IncidentState) -> m.Incident:
        """:meth:`_render` from the shots themselves (after ``inc.revision`` was counted)."""
        shots = sorted(inc.shots, key=lambda s: s.t0_s)
        shot_msgs = [self._shot_message(s) for s in shots]
        # Automatic fire is a property of one weapon: judge each shooter's own
        # cadence, so that two interleaved semi-automatic shooters are not
        # mistaken for one automatic weapon.
        rate = self.cfg.incidents.automatic_rate_hz
        groups = inc.shooters()
        cadences = [cadence_of([s.t0_s for s in g]) for g in groups]
        shooters = [self._shooter_message(g, c, rate) for g, c in zip(groups, cadences, strict=True)]
        scores = _mean_scores([p.det for s in shots for p in s.picks.values()])
        cep95 = min(s.solution.cep95_m for s in shots)
        position = self._position(weighted_centre_enu(inc.shots))
        return self._incident_message(inc, shot_msgs, shooters, scores, position, cep95)

    def _incident_message(self, inc: IncidentState, shot_msgs: list[m.Shot], shooters: list[m.Shooter],
                          scores: dict[str, float] | None, position: m.Position, cep95) -> m.Incident:
        automatic = any(sh.automatic_fire for sh in shooters)
        n_shooters = len(shooters)
        if n_shooters > 1 and n_shooters != inc.n_shooters_logged:
            log.info("incident %s: %d shooters at distinct places", inc.incident_id, n_shooters)
            inc.n_shooters_logged = n_shooters
        event_class = _reviewed_class(_machine_class(scores), inc.review)
        return m.Incident(
            site=self.cfg.site,
            incident_id=inc.incident_id,
            state=inc.state,  # type: ignore[arg-type]
            revision=inc.revision,
            published_ns=now_ns(),
            first_shot_ns=shot_msgs[0].time_ns,
            last_shot_ns=shot_msgs[-1].time_ns,
            rounds=len(shot_msgs),
            position=position,
            cep95_m=round(float(cep95), 3),
            event_class=event_class,  # type: ignore[arg-type]
            class_scores=scores,
            automatic_fire=automatic,
            shots=list(shot_msgs),
            shooters=shooters,
            review=inc.review,
            provenance=self.provenance,
        )

    def _shooter_message(self, group: list[ShotState], cad: Cadence | None, automatic_rate_hz: float) -> m.Shooter:
        ids = [s.shot_id for s in sorted(group, key=lambda s: s.t0_s)]
        return self._shooter_message_at(self._position(weighted_centre_enu(group)), ids, cad, automatic_rate_hz)

    def _shooter_message_at(self, position: m.Position, shot_ids: list[str], cad: Cadence | None,
                            automatic_rate_hz: float) -> m.Shooter:
        return m.Shooter(
            position=position,
            rounds=len(shot_ids),
            shot_ids=shot_ids,
            automatic_fire=bool(cad is not None and cad.rounds >= 3 and cad.rate_hz > automatic_rate_hz),
            cadence=None if cad is None else m.Cadence(
                median_interval_s=round(cad.median_interval_s, 4),
                min_interval_s=round(cad.min_interval_s, 4),
                max_interval_s=round(cad.max_interval_s, 4),
                rate_hz=round(min(cad.rate_hz, 1000.0), 3),
            ),
        )


def reviewed_revision(last: m.Incident, review: m.Review) -> m.Incident:
    """The next revision of an incident whose latest message is ``last``, carrying an operator's ``review``
    (a closed incident's: nothing else of it changes). Its class is the relabel, or else the one its class
    scores give (a confirm after a relabel gives the scores' class back), as a render of it would have."""
    return msgspec.structs.replace(last, revision=last.revision + 1, published_ns=now_ns(), review=review,
                                   event_class=_reviewed_class(_machine_class(last.class_scores), review))


def _machine_class(scores: dict[str, float] | None) -> str:
    """The event class of the highest of the fused class scores (``unknown`` without scores)."""
    if not scores:
        return "unknown"
    return CLASS_OF_SCORE.get(max(scores, key=scores.get), "other")  # type: ignore[arg-type]


def _reviewed_class(machine_class: str, review: m.Review | None) -> str:
    """An operator's relabel over the machine's class (the operator's word wins)."""
    if review is not None and review.decision == "relabelled" and review.label:
        return review.label
    return machine_class


def _mean_scores(dets: list[m.Detection]) -> dict[str, float] | None:
    """Average the class scores of the detections that carry them (None when none do)."""
    scored = [d.scores for d in dets if d.scores]
    if not scored:
        return None
    keys = sorted({k for s in scored for k in s})
    return {k: round(float(np.mean([s.get(k, 0.0) for s in scored])), 4) for k in keys}
