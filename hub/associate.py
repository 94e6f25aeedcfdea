"""Association: detections from many nodes -> shots (located origins).

Method (hypothesis and consensus; docs/association.md has the details):

1. A new detection first tries to join a recent shot: its onset must fall
   near the arrival time that shot predicts for its node. Joining is cheap
   (no solve): the shot is marked *dirty* and re-located once per flush
   (:meth:`Associator.flush`, driven by the pipeline), not once per pick.
   A pick that replaces a node's rejected pick (an early supersonic N-wave
   followed by the muzzle blast) is allowed.
2. Otherwise it waits in a pool and seeds a hypothesis search. For every
   point of a grid around the seed node, the seed's onset fixes an emission
   time; each other node's nearest pooled onset is compared with the arrival
   predicted from that point. The point explaining the most nodes wins, so
   only physically consistent detection sets are formed — a plain time window
   would merge interleaved shots.
3. The best candidate set is located robustly (:func:`shotline.hub.locate.locate`,
   consensus over subsets rejects echoes and stray picks); the shot is
   accepted when at least ``min_nodes`` nodes agree within
   ``max_rms_residual_s`` and the nodes that heard nothing do not contradict
   it (negative evidence, see :meth:`Associator._silent_nodes_agree`).
4. Echo ghosts: a wall reflection is heard as if from the mirror image of the
   source, emitted at the *same* time, and never before the direct sound at
   any node. A new set with the emission time of a recent shot whose picks
   are all later than that shot's picks at the shared nodes is therefore an
   echo: its picks are kept as the shot's echoes, not a new shot.

Detections whose time quality is not trusted (NTP, free-running) may attach
to a shot as corroboration but never enter a solution. Times inside the
associator are float seconds relative to a reference epoch (``t_ref_ns``).
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import heapq
import itertools
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from shotline.core import messages as m

from . import grid_kernels, lm_kernel
from .config import HubConfig
from .locate import LocateError, Solution, locate
from .onset_store import NodeGrid, OnsetStore, delete, doubled, insert
from .registry import NodeRegistry

log = logging.getLogger(__name__)

_NO_WIND = np.zeros(3)
_NO_POINTS = np.zeros((0, 2))
_ZEROS = np.zeros(64, dtype=np.int64)


def _zeros(n: int) -> np.ndarray:
    """(n,) int64 zeros: a view of one shared array while n <= 64. For the evidence kernels' counts of
    unheard nodes once there are none (asked thousands of times); the kernels only read them. (Not made
    read-only: numba would compile the kernels again for read-only arrays.)"""
    return _ZEROS[:n] if n <= len(_ZEROS) else np.zeros(n, dtype=np.int64)


#: :func:`grid_kernels.verdict_codes` by code.
_VERDICTS = ("reject", "wait", "accept")

#: Emission times of an echo ghost and its direct shot agree within this (s), plus their sigmas.
GHOST_T0_TOL_S = 0.002


@dataclass(eq=False, slots=True)
class Pick:
    """A detection inside the associator."""

    det: m.Detection
    t_s: float
    received_ns: int
    node_id: str = field(init=False)
    """The detection's node (read on every step of the association: a plain attribute)."""
    rejected_by: set[str] = field(default_factory=set)
    """Shots whose solution rejected this pick (it is not offered to them again)."""
    settled: bool = False
    """Searched again after its wait window (see :meth:`Associator.retry`)."""
    waiting: tuple | None = None
    """The candidate sets its last search left waiting for pending nodes (decided at retry)."""
    in_sets_of: list[Pick] | None = None
    """The seeds whose ``waiting`` sets took this pick as a member, since it arrived (some of those sets
    may have been decided or let it go since: :meth:`Associator._held_by_a_waiting_set` checks)."""
    undecided: bool = True
    """No search from this pick has been decided yet: never searched (too few partners), a
    hypothesis waited for pending nodes, or the pick came back to the pool from a shot. Only
    undecided picks are searched again at :meth:`Associator.retry`."""
    unsearched: bool = False
    """Its ``waiting`` set came from a recent shot's place (:meth:`Associator._repeat_place`), not from a
    grid search: if that set makes no shot, the pick is searched at :meth:`Associator.retry`."""
    tail: bool = False
    """Much weaker than a pick of the same node just before it: its reverberation, or a weaker
    source (``association.reverb_s`` / ``reverb_drop_db``). It joins shots; it seeds and supports
    new ones only where many nodes are in range (see :meth:`Associator._tails_take_part`)."""
    tail_lag_s: float = math.inf
    """For a tail, how long (s) after the latest pick of its node that is that much louder."""
    pooled: bool = False
    """In the associator's :class:`PickPool` (unassociated): kept by the pool, which answers ``pick in
    pool`` from it (asked on every join and retry)."""

    def __post_init__(self) -> None:
        self.node_id = self.det.node_id

    @property
    def trusted(self) -> bool:
        return self.det.time_quality in m.TRUSTED_TIME_QUALITIES


@dataclass(eq=False, slots=True)
class _WaitingSet:
    """A candidate set whose negative evidence waited for pending nodes (see :meth:`Associator._join_waiting`)."""

    seed: Pick
    members: list[Pick]
    """The seed's pick and its partners' (the same list the seed's ``waiting`` holds)."""
    xy: np.ndarray
    """Its fine grid point (m)."""
    t0_s: float
    tol_s: float
    """The fine grid's match tolerance (s)."""
    n_partners: int
    """Nodes with candidate picks besides the seed's, when it was searched."""
    joined: list[Pick] = field(default_factory=list)
    """Picks that joined it on arrival instead of seeding a search (:meth:`Associator._join_waiting`)."""
    dropped: bool = False
    """Refused (or located) after a pick joined it: it takes no more."""
    near: tuple[tuple[int, int], np.ndarray] | None = None
    """((registry version, onset-store rows), the rows near its point): what :meth:`Associator._evidence`
    would look up again at every join (:meth:`Associator._waiting_evidence`)."""


@dataclass(eq=False, slots=True)
class ShotState:
    """A located shot and the picks behind it.

    ``solution`` is aligned with ``picks`` (same order). Picks that join
    wait in ``pending`` (the shot is ``dirty``) until :meth:`Associator.flush`
    re-locates the shot with them.
    """

    shot_id: str
    picks: dict[str, Pick]
    solution: Solution
    enu_m: np.ndarray
    t0_s: float
    created_ns: int
    last_pick_received_ns: int
    revision: int = 0
    corroborating: dict[str, Pick] = field(default_factory=dict)
    echoes: list[Pick] = field(default_factory=list)
    """Picks recognised as reflections of this shot (a ghost at the image source)."""
    pending: dict[str, Pick] = field(default_factory=dict)
    dirty: bool = False
    rejected_residuals: dict[str, float] = field(default_factory=dict)
    """Residuals (s) of picks the last solve rejected, by node (kept for the node registry's statistics)."""
    slot: int = -1
    """Its row in the associator's shot table (``Associator._shot_xyt``); -1 until it is listed."""
    published: bool = False
    """Counted by the pipeline once published (a flag on the shot: a set of every id published grew for
    as long as the hub ran)."""


class PickPool:
    """Unassociated picks, indexed by node with each node's picks in onset order.

    The hypothesis search asks, for every node near the seed, for the picks in
    a time window: two bisections per node instead of a scan of the whole
    pool. Membership is O(1); adding and removing a pick keep the node's order
    (a bisection and a list insertion or deletion).
    """

    def __init__(self) -> None:
        self._by_node: dict[str, dict[int, Pick]] = {}
        self._lists: dict[str, tuple[list[float], list[Pick], list[float], list[Pick]]] = {}
        """Per node, its pooled picks' onsets (s) and the picks in onset order (in the order they were
        pooled on a tie), and the same without reverberation tails: kept in order as picks come and go
        (a node's picks mostly come in onset order, so one goes at the end)."""
        self.row: dict[str, int] = {}
        """Each node's row in :attr:`times` (:meth:`row_of`), never changed."""
        self.times = [np.zeros((8, 8)), np.zeros((8, 8))]
        """The lists' onsets (s) as padded arrays, one row per node: [0] all, [1] without tails; row r
        holds ``counts[v][r]`` of them, in the lists' order (for the compiled front of a search,
        :func:`shotline.hub.grid_kernels.seed_partners`; kept in step on every add and removal)."""
        self.counts = [np.zeros(8, dtype=np.int64), np.zeros(8, dtype=np.int64)]
        self._by_time: list[tuple[float, int, Pick]] = []
        """A heap of (onset s, entry number, pick) over the pooled picks, for :meth:`drop_older`: a pick's
        entry is the one numbered ``_entry[id(pick)]``; others are left from an earlier stay."""
        self._entry: dict[int, int] = {}
        self._n_entries = itertools.count()
        self._undecided: list[tuple[float, int, Pick]] = []
        """A heap of (onset s, entry number, pick) holding every pooled pick that is undecided and not
        settled (and others, dropped when they come up), for :meth:`due`."""

    def append(self, p: Pick) -> None:
        p.waiting = None
        p.pooled = True
        picks = self._by_node.setdefault(p.node_id, {})
        if id(p) not in picks:
            picks[id(p)] = p
            lists = self._lists.get(p.node_id)
            if lists is None:
                lists = self._lists[p.node_id] = ([], [], [], [])
            r = self.row_of(p.node_id)
            for v in (0,) if p.tail else (0, 1):
                keys, ps = lists[2 * v], lists[2 * v + 1]
                k = bisect.bisect_right(keys, p.t_s)
                keys.insert(k, p.t_s)
                ps.insert(k, p)
                self.times[v] = insert(self.times[v], self.counts[v], r, p.t_s)  # (at k: after equal onsets)
        self._push(p)
        self.undecide(p)

    def undecide(self, p: Pick) -> None:
        """Mark a pick undecided: :meth:`due` lists it once its onset is due, if it is still undecided."""
        p.undecided = True
        heapq.heappush(self._undecided, (p.t_s, next(self._n_entries), p))

    def due(self, t_s: float) -> list[Pick]:
        """The pooled picks with onsets before ``t_s`` (s) that are undecided and not settled, in onset order,
        handed over: the caller settles each (:meth:`Associator.retry`). Only picks marked undecided since they last came up are
        visited, not the whole pool at every retry. (Settled stays settled; a pick decided when it comes
        up becomes undecided again only through :meth:`undecide` or :meth:`append`, which list it anew.)"""
        heap, out, seen = self._undecided, [], set()
        while heap and heap[0][0] < t_s:
            p = heapq.heappop(heap)[2]
            if p.pooled and p.undecided and not p.settled and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
        return out

    def _push(self, p: Pick) -> None:
        k = self._entry[id(p)] = next(self._n_entries)
        heapq.heappush(self._by_time, (p.t_s, k, p))

    def remove(self, p: Pick) -> None:
        del self._by_node[p.node_id][id(p)]
        del self._entry[id(p)]
        p.pooled = False
        lists = self._lists[p.node_id]
        r = self.row[p.node_id]
        for v in (0,) if p.tail else (0, 1):
            keys, ps = lists[2 * v], lists[2 * v + 1]
            k = bisect.bisect_left(keys, p.t_s)
            while ps[k] is not p:
                k += 1
            del keys[k]
            del ps[k]
            delete(self.times[v], self.counts[v], r, k)

    def row_of(self, node_id: str) -> int:
        """The node's row in :attr:`times`, given to it now if it has none (its count 0 until it pools a pick)."""
        r = self.row.get(node_id)
        if r is None:
            r = self.row[node_id] = len(self.row)
            if r == len(self.counts[0]):
                self.times = [doubled(a) for a in self.times]
                self.counts = [doubled(a) for a in self.counts]
        return r

    def discard_many(self, picks) -> None:
        for p in picks:
            if p in self:
                self.remove(p)

    def drop_older(self, t_s: float, keep) -> int:
        """Drop the picks with onsets at or before ``t_s`` (s) unless ``keep(pick)``; return how many were
        dropped. Only those picks are visited (a heap by onset), not the whole pool at every tick."""
        heap, kept, n = self._by_time, [], 0
        while heap and heap[0][0] <= t_s:
            _, k, p = heapq.heappop(heap)
            if self._entry.get(id(p)) != k:
                continue  # left from a stay in the pool that ended
            if keep(p):
                kept.append(p)
                continue
            self.remove(p)
            n += 1
        for p in kept:
            self._push(p)
        return n

    def __contains__(self, p: Pick) -> bool:
        return p.pooled

    def __iter__(self):
        for d in self._by_node.values():
            yield from list(d.values())

    def __len__(self) -> int:
        return sum(len(d) for d in self._by_node.values())

    def has_node(self, node_id: str) -> bool:
        """Whether the node has pooled picks."""
        return bool(self._by_node.get(node_id))

    def window(self, node_id: str, t_lo: float, t_hi: float, tails: bool = True) -> tuple[np.ndarray, list[Pick]]:
        """A node's pooled picks with onsets in [t_lo, t_hi] s: (sorted times, picks); without
        reverberation tails if ``tails`` is false."""
        lists = self._lists.get(node_id)
        if lists is None:
            return _NO_TIMES, []
        keys, ps = (lists[0], lists[1]) if tails else (lists[2], lists[3])
        # bisect on the list: a numpy searchsorted call costs more than the search itself here
        i = bisect.bisect_left(keys, t_lo)
        j = bisect.bisect_right(keys, t_hi)
        if i == j:
            return _NO_TIMES, []
        return self.span(node_id, i, j, tails)

    def pick_at(self, node_id: str, k: int, tails: bool = True) -> Pick:
        """A node's ``k``-th pooled pick in onset order (counting reverberation tails if ``tails``): the pick at
        position ``k`` of its row in :attr:`times`."""
        return self._lists[node_id][1 if tails else 3][k]

    def picks_between(self, node_id: str, i: int, j: int) -> list[Pick]:
        """A node's pooled picks ``i:j`` in onset order, reverberation tails included (positions in its row of
        ``times[0]``)."""
        return self._lists[node_id][1][i:j]

    def span(self, node_id: str, i: int, j: int, tails: bool = True) -> tuple[np.ndarray, list[Pick]]:
        """A node's pooled picks ``i:j`` in onset order (with reverberation tails if ``tails``): (their
        times, a copy, as the row moves as picks come and go; the picks)."""
        lists = self._lists[node_id]
        return self.times[0 if tails else 1][self.row[node_id], i:j].copy(), (lists[1] if tails else lists[3])[i:j]


_NO_TIMES = np.zeros(0)
_NO_TIMES.flags.writeable = False


@dataclass
class _RowIndex:
    """The onset store's rows' positions and spatial index (:meth:`Associator._rows`), for one
    (registry version, max_range_m) ``key``; ``grid.xyz`` is ``buf[:rows indexed]``."""

    key: tuple
    buf: np.ndarray
    grid: NodeGrid
    n_rows: int = -1
    """The onset store's rows indexed (-1: none yet)."""


@dataclass
class _Unheard:
    """Located nodes that have not reported yet (:meth:`Associator._unheard_in_range`), for one
    registry version: each node's index, horizontal positions (N, 2) m, whether it has reported,
    how many onset-store rows have been looked at."""

    version: int
    index: dict[str, int]
    xy: np.ndarray
    heard: np.ndarray
    rows_seen: int
    n_unheard: int = -1
    """How many of them have not reported (-1: to be counted)."""


class SeedTable:
    """A seed node's coarse hypothesis grid and, per partner node (one row each), the grid points
    the node can hear with, at each, the predicted arrival minus the seed's arrival (s) and the
    coarse match tolerance (s).

    A node hears only the points within its audible range (``max_range_m``), a lens of the
    seed's disc: on a large network about a quarter of the grid for the average partner
    (1,024 nodes: 28 %), so each row holds just those points, as one interval per grid line
    (:func:`shotline.hub.grid_kernels.table_segments`) with their values packed in flat buffers.
    """

    def __init__(self, key: tuple, pts: np.ndarray, t_seed: np.ndarray, u_seed: np.ndarray) -> None:
        self.key = key
        self.pts = pts
        """(G, 2) grid points, ENU metres, in lines of constant y and increasing x."""
        self.t_seed = t_seed
        """(G,) travel time (s) from each point to the seed node."""
        self.u_seed = u_seed
        """(G, 2) horizontal unit vectors from each point towards the seed node."""
        self.line_start = np.r_[0, np.flatnonzero(np.diff(pts[:, 1]) != 0) + 1, len(pts)].astype(np.intp)
        """(J + 1,) index of the first point of each grid line (and the end)."""
        self.row: dict[str, int] = {}
        n_lines = len(self.line_start) - 1
        self.seg = np.zeros((8, n_lines, 2), dtype=np.intp)
        """(R, J, 2) per row and grid line, the (first, end) indices of the points the node hears."""
        self.off = np.zeros(8, dtype=np.intp)
        """(R,) where each row's values start in the flat buffers."""
        # float32: the coarse stage matches within milliseconds (float32 resolves ~0.5 us at
        # 6 s), and a city's tables are then half the memory.
        self.diff = np.empty(len(pts), dtype=np.float32)
        self.tol = np.empty(len(pts), dtype=np.float32)
        self.used = 0
        """Values held in the flat buffers."""

    def add_rows(self, node_ids: list[str], segments, values) -> None:
        """Add the rows of ``node_ids`` (buffers grow by doubling): ``segments(seg)`` writes their
        intervals into ``seg`` (M, J, 2) and returns their (M,) value counts, ``values(seg, offsets,
        diff, tol)`` their values from ``offsets`` in the flat buffers."""
        k, m_n = len(self.row), len(node_ids)
        while k + m_n > len(self.off):
            self.seg = np.concatenate([self.seg, np.zeros_like(self.seg)])
            self.off = np.concatenate([self.off, np.zeros_like(self.off)])
        seg = self.seg[k: k + m_n]
        counts = segments(seg)
        offsets = self.used + np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.intp)
        need = self.used + int(counts.sum())
        if need > len(self.diff):
            # In place (realloc: a large buffer is remapped, not copied; nothing else holds a view of
            # it): the copies into new buffers were 0.2 s of the clean 1,024-node stream's 20 s (line
            # profile), all of it in the first minutes, while the tables fill.
            cap = max(2 * len(self.diff), need)
            self.diff.resize(cap, refcheck=False)
            self.tol.resize(cap, refcheck=False)
        values(seg, offsets, self.diff, self.tol)
        self.off[k: k + m_n] = offsets
        self.used = need
        for i, n in enumerate(node_ids):
            self.row[n] = k + i

    def dense(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(K, G) differences and tolerances of some rows over the whole grid (NaN and 0 where the node
        cannot hear a point): the table as plain arrays, for checks."""
        diff = np.full((len(rows), len(self.pts)), np.nan)
        tol = np.zeros((len(rows), len(self.pts)))
        for i, r in enumerate(rows):
            p = self.off[r]
            for first, end in self.seg[r]:
                diff[i, first:end] = self.diff[p: p + end - first]
                tol[i, first:end] = self.tol[p: p + end - first]
                p += end - first
        return diff, tol

    @property
    def nbytes(self) -> int:
        return self.diff.nbytes + self.tol.nbytes + self.seg.nbytes + self.off.nbytes


class Associator:
    """Forms and updates shots from a stream of detections."""

    _ids = itertools.count(1)
    N_FINE = 4
    """Distinct fine-grid hypotheses located at most per search (best first; stops at a full fit)."""
    #: Coarse cells refined per search (the best by support, per-node tolerances).
    N_COARSE_KEEP = 48

    def __init__(self, cfg: HubConfig, registry: NodeRegistry) -> None:
        self.cfg = cfg
        self.registry = registry
        self.c = cfg.location.c_mps
        w = cfg.location.wind_enu_mps
        self.wind_enu_mps: np.ndarray | None = None if w is None else np.array([w[0], w[1], 0.0])
        self.t_ref_ns: int | None = None
        self.pool = PickPool()
        self._levels: dict[str, list[tuple[float, float]]] = {}
        """Recent (onset s, peak dBFS) per node, in onset order: the reverberation test."""
        self._tables: OrderedDict[str, SeedTable] = OrderedDict()
        """Per seed node: its coarse grid and cached tables (least recently used first)."""
        self._table_bytes = 0
        """Memory the cached tables hold (bytes)."""
        self._nbrs: dict[str, tuple[tuple, list[str], np.ndarray, np.ndarray]] = {}
        """Per seed node: (key, nodes within reach, their distances to it (m), their order by distance)."""
        self._front: dict[str, tuple] = {}
        """Per seed node, :meth:`_partners_nearest_first`'s arrays, with their key and the neighbours' ids."""
        self._near_seed: dict[str, tuple] = {}
        """Per seed node: (key, onset-store rows within 2 max_range_m), for :meth:`_evidence_many`."""
        self._located: tuple[int, list[str], np.ndarray] | None = None
        """(registry version, located nodes, their horizontal positions (N, 2) m)."""
        self._located_grid: tuple[int, NodeGrid] | None = None
        """(registry version, spatial index over the located nodes)."""
        self._tails_at: dict[str, tuple[tuple[int, int], bool]] = {}
        """Per node: ((registry version, onset-store rows), :meth:`_tails_take_part_at`)."""
        self._rows_cache: _RowIndex | None = None
        self._pool_row_of_store = np.zeros(0, dtype=np.int64)
        """:meth:`_pool_rows`."""
        self.shots: list[ShotState] = []
        self._final: list[tuple[ShotState, dict[str, float]]] = []
        """Shots that can no longer change, dropped by :meth:`expire`, each with its
        :meth:`nearby_residuals` (taken from :meth:`take_final`)."""
        self._shot_xyt = np.empty((0, 6))
        """Per listed shot (row ``shot.slot``, in the order of ``shots``; :meth:`_table_row`): east, north
        (m), emission time (s), up (m), picks, CEP95 (m): :meth:`_attach` compares a pick with the shots
        that can have made it, not with all, and :meth:`_repeat_place` finds the recent places to try."""
        self.onsets = OnsetStore()
        """Per node, the sorted onset times (s) of every recent trusted pick (associated or not) and of
        those that shots hold (:meth:`_evidence`)."""
        self.n_expired_unassociated = 0
        self.n_echo_ghosts = 0
        self.n_fragments = 0
        self.watermark_s = -math.inf
        self._grid_cache: np.ndarray | None = None
        """The last tick's watermark, seconds in the associator's reference."""
        self.n_searches = 0
        self.n_solves = 0
        self.n_quick_rejects = 0
        self.n_cut_sets = 0
        self.n_tail_sets = 0
        """Fitted candidate sets refused for holding reverberation tails while small (``TAIL_SET_MIN``)."""
        self.n_refined = 0
        self.n_burst_rejects = 0
        self.n_deferred = 0
        """Searches put off to the end of the wait window (no exact point from the nearest nodes)."""
        self._retrying = False
        """True while :meth:`retry` decides: nodes that never reported are no longer pending."""
        self._unheard_cache: _Unheard | None = None
        self._unheard_over: tuple[int, float] | None = None
        """The (registry version, speed of sound) for which one wait window has passed since the first pick (no node counts
        as unheard any more, :meth:`_unheard_in_range`)."""
        self._waited = False
        """Set when :meth:`_evidence` answers "wait" (the current search is not decided)."""
        self.adopt_shot_id: Callable[[list[str]], str | None] | None = None
        """Set by a restarted hub's journal replay (:mod:`shotline.hub.recovery`) and kept while the hub runs (the
        persistent session's backlog may complete a shot of replayed picks): given a new shot's detection ids, the
        id of the stored shot they made before the hub was stopped, if any (the shot keeps it)."""
        self._waiting_sets: list[_WaitingSet] = []
        """Candidate sets of recent searches that waited for pending nodes (:meth:`_join_waiting`)."""
        self._waiting_table = np.zeros((16, 4))
        """Their grid points (m, east and north), emission times (s) and tolerances (s), one row each in their
        order (the first ``len(_waiting_sets)`` rows; appended with them, rebuilt when sets are forgotten)."""
        self.n_joined_waiting = 0
        """Picks that joined a waiting candidate set instead of seeding a search."""
        self.n_repeats = 0
        """Shots made at the place of a recent shot without a grid search (:meth:`_repeat_place`)."""
        self.n_repeat_waits = 0
        """Picks left waiting in a set at the place of a recent shot instead of searching."""
        self._refused: list[tuple[float, float, float, int]] = []
        """Places where recent searches refused every candidate set: (east, north m, the latest such set's
        emission s, how many emission times), oldest first (:meth:`_at_a_refused_place`)."""
        self._refused_known: np.ndarray | None = None
        """Those tried (:attr:`REFUSED_TIMES`), the latest ``REFUSED_MAX_PLACES``, as (K, 3) (east, north m,
        the latest refusal's emission s); None: to be listed."""
        self.n_refused_places = 0
        """Picks put off or not searched: a set at a refused place holds them and is refused again."""
        self._onset_sigma_max = 0.0
        """Largest ``onset_sigma_s`` of any detection taken (s)."""
        self._horizon: tuple[tuple, float] | None = None
        """(what it depends on, :meth:`horizon_s`) when last computed."""
        self._t_first_s: float | None = None
        """Onset of the first pick taken (s): the hub's start, for :meth:`_unheard_in_range`."""
        # The kernels compile (or load from numba's cache) now, not on the first detection.
        t_k = time.monotonic()
        grid_kernels.compile_all()
        lm_kernel.compile_all()
        if time.monotonic() - t_k > 1.0:
            log.info("compiled the association kernels in %.1f s (numba caches them for the next start)",
                     time.monotonic() - t_k)

    # -- helpers -------------------------------------------------------------
    def _rel(self, t_ns: int) -> float:
        if self.t_ref_ns is None:
            self.t_ref_ns = t_ns - t_ns % 1_000_000_000
        return (t_ns - self.t_ref_ns) / 1e9

    def abs_ns(self, t_s: float) -> int:
        """Absolute UTC ns of a relative time in seconds."""
        assert self.t_ref_ns is not None
        return self.t_ref_ns + int(round(t_s * 1e9))

    def horizon_s(self) -> float:
        """The wait window: how long a pick can wait for partners (array crossing time + margin), seconds.

        Derived from the network's geometry (largest node distance, at most
        twice ``max_range_m``, over the speed of sound, plus 1 s for delivery)
        unless ``association.pending_s`` sets it.
        """
        a = self.cfg.association
        if a.pending_s is not None:
            return a.pending_s
        # Kept until a position, c or the range moves (asked ~12,000 times a dense play: on every detection).
        key = (self.registry.version, self.c, a.max_range_m)
        got = self._horizon
        if got is None or got[0] != key:
            extent = min(self.registry.extent_m(), 2 * a.max_range_m)
            got = self._horizon = (key, extent / self.c + 1.0)
        return got[1]

    @property
    def source_z_m(self) -> float:
        """The assumed source height in the hub's frame (m, its "up"): ``source_height_m`` above
        ``ground_alt_m`` (above the frame's origin when that is not set)."""
        loc = self.cfg.location
        frame = self.registry.frame
        if loc.ground_alt_m is None or frame is None:
            return loc.source_height_m
        return loc.ground_alt_m - frame.alt_m + loc.source_height_m

    def _sigma(self, pick: Pick) -> float:
        return max(self.cfg.location.timing_sigma_s, pick.det.onset_sigma_s)

    @property
    def _sigma_max(self) -> float:
        """The largest timing sigma (s) of any pick so far (bounds the attach tolerance)."""
        return max(self.cfg.location.timing_sigma_s, self._onset_sigma_max)

    def set_weather(self, temperature_c: float | None = None, wind_enu_mps=None) -> None:
        """Use a measured air temperature (°C) and/or wind (east, north m/s) from now on."""
        from .config import speed_of_sound_mps

        if temperature_c is not None and self.cfg.location.speed_of_sound_mps is None:
            self.c = speed_of_sound_mps(temperature_c)
        if wind_enu_mps is not None:
            w = np.asarray(wind_enu_mps, float).ravel()
            self.wind_enu_mps = np.array([w[0], w[1], 0.0])

    def _rows(self) -> tuple[np.ndarray, NodeGrid]:
        """Positions (R, 3) m of the onset store's rows (far away for a node without a position) and a
        spatial index over them (rebuilt when positions change; a node reporting for the first time
        is appended, so a city's first minutes cost O(nodes), not O(nodes^2))."""
        version, n = self.registry.version, len(self.onsets.ids)
        c = self._rows_cache
        if c is not None and c.n_rows == n and c.key[0] == version and c.key[1] == self.cfg.association.max_range_m:
            return c.grid.xyz, c.grid  # (asked ~14,000 times on the dense scene; rows are rarely added)
        key = (version, self.cfg.association.max_range_m)
        if c is None or c.key != key:
            c = self._rows_cache = _RowIndex(key, np.zeros((64, 3)), NodeGrid(np.zeros((0, 3)), key[1]))
        done = len(c.grid.xyz)
        if done < n:
            if n > len(c.buf):
                c.buf = np.concatenate([c.buf[:done], np.zeros((max(n, 2 * len(c.buf)) - done, 3))])
            for r in range(done, n):
                pos = self.registry.enu(self.onsets.ids[r])
                c.buf[r] = pos if pos is not None else 1e18
            c.grid.extend(c.buf[:n])
        c.n_rows = n
        return c.grid.xyz, c.grid

    def _unclaim(self, p: Pick) -> None:
        self.onsets.release(p.node_id, p.t_s)

    def _travel(self, src: np.ndarray, node: np.ndarray) -> float:
        """Travel time (s) from an ENU source to a node with the current c and wind."""
        if self.wind_enu_mps is None:
            # In floats: three numpy operations cost more than the arithmetic (a call per node and pick).
            dx, dy, dz = float(node[0]) - float(src[0]), float(node[1]) - float(src[1]), float(node[2]) - float(src[2])
            return math.sqrt(dx * dx + dy * dy + dz * dz) / self.c
        d = node - src
        w = self.wind_enu_mps
        a = self.c * self.c - float(w @ w)
        dw = float(d @ w)
        d2 = float(d @ d)
        return d2 / (dw + math.sqrt(dw * dw + a * d2)) if d2 > 0 else 0.0

    # -- public ----------------------------------------------------------------
    def add(self, det: m.Detection, received_ns: int) -> list[ShotState]:
        """Take one detection; return the shots it created (joins are reported by :meth:`flush`)."""
        if self.registry.enu(det.node_id) is None:
            raise KeyError(det.node_id)
        pick = Pick(det, self._rel(det.onset_time_ns), received_ns)
        if self._t_first_s is None:
            self._t_first_s = pick.t_s
        self._onset_sigma_max = max(self._onset_sigma_max, det.onset_sigma_s)
        if pick.trusted:
            self.onsets.add(det.node_id, pick.t_s)
            pick.tail = self._is_tail(pick)
        if self._attach(pick) is not None:
            return []
        if not pick.trusted:
            return []  # may only corroborate a shot
        self.pool.append(pick)
        if pick.tail:
            if not self._tails_take_part_at(pick.node_id):
                pick.settled = True
                return []  # may join a shot its partners make, never seeds one
            if pick.tail_lag_s <= self.ECHO_LAG_S or self._echo_of_a_shot(pick):
                return []  # an echo, likely: searched at retry, unless a shot's echo then
        joined, new = self._join_waiting(pick)
        if not joined:
            joined, new = self._repeat_place(pick)
        if not joined:
            if self._ahead_of_a_shot(pick):
                # Likely that shot's shock wave, ahead of the muzzle blast at this node: decided at
                # retry, and not searched there if the shot then holds a pick of the node just after it.
                return []
            if self._at_a_refused_place(pick):
                return []
            new = self._hypothesise(pick)
        return [new] if new is not None else []

    def _is_tail(self, pick: Pick) -> bool:
        """Whether a louder pick of the same node came less than ``reverb_s`` before this one.

        Street reverberation follows a shot at every node for up to a second
        or two, each reflection weaker than the direct sound; with few nodes,
        chance sets of such late picks fit a location as well as a real shot
        (Pittsburgh: 4-node sets with sub-millisecond residuals). Measured on
        the Pittsburgh development split (reverb 1 s, 6 dB): 53 % of the
        picks that are no direct arrival are tails, 1.5 % of direct arrivals.
        """
        a = self.cfg.association
        lv = self._levels.setdefault(pick.node_id, [])
        t, peak = pick.t_s, pick.det.peak_dbfs
        k = bisect.bisect_left(lv, (t, -math.inf))
        lv.insert(k, (t, peak))
        # Kept for the reverberation test and the burst test (:meth:`_burst_inconsistent`), around
        # any pick that may still be decided (the wait window).
        if len(lv) > 64:
            keep = max(a.reverb_s, self.BURST_WINDOW_S) + self.horizon_s()
            if lv[0][0] < t - 2 * keep - 1.0:
                del lv[: bisect.bisect_left(lv, (t - keep, -math.inf))]
                k = bisect.bisect_left(lv, (t, -math.inf))
        if a.reverb_s <= 0:
            return False
        j = k - 1
        while j >= 0 and lv[j][0] > t - a.reverb_s:
            if lv[j][1] - peak >= a.reverb_drop_db:
                pick.tail_lag_s = t - lv[j][0]
                return True
            j -= 1
        return False

    def take_final(self, everything: bool = False) -> list[tuple[ShotState, dict[str, float]]]:
        """The shots :meth:`expire` has dropped since the last call, with their :meth:`nearby_residuals`;
        with ``everything`` (end of a stream) the shots still listed too."""
        out, self._final = self._final, []
        if everything:
            out += [(s, self.nearby_residuals(s)) for s in self.shots if s.picks]
        return out

    def nearby_residuals(self, shot: ShotState, window_s: float = 0.03) -> dict[str, float]:
        """For in-range nodes without a used pick in ``shot``: residual (s) of their pick nearest the
        predicted arrival, within ``window_s`` (a clock or position error too large for the fit)."""
        out = {}
        for nid in self._nodes_within_range(shot.enu_m):
            if nid in shot.picks:
                continue
            times = self.onsets.times(nid)
            if not len(times):
                continue
            pred = shot.t0_s + self._travel(shot.enu_m, self.registry.enu(nid))
            j = int(times.searchsorted(pred))
            best = min((float(times[k]) - pred for k in (j - 1, j) if 0 <= k < len(times)), key=abs)
            if abs(best) <= window_s:
                out[nid] = best
        return out

    def dirty_shots(self) -> list[ShotState]:
        """Shots that gained picks since they were last located."""
        return [s for s in self.shots if s.dirty]

    #: A shot of at least 2 x min_nodes picks is re-located once the picks that joined it since its
    #: last solve are this fraction of its picks, or when no more can join (:meth:`_relocate_due`).
    RELOCATE_FRACTION = 0.25

    def _relocate_due(self, shot: ShotState) -> bool:
        """Whether :meth:`flush` re-locates a dirty shot now.

        Each re-location is a robust solve (~0.5 ms) and an incident update. A
        shot heard by 20-30 nodes gains its picks one by one over a second or
        two; with many picks, one more moves the fix by a fraction of its
        uncertainty. So a large shot is re-located when the joined picks are
        a quarter of its picks (12 -> 15 -> 19 -> 24: three updates instead of
        a dozen) and once more when every node in range has had its chance to
        report (the last revision holds every pick). Small shots (under twice
        ``min_nodes``) are re-decided at every flush: there one pick can change
        which picks are the shot's (:meth:`_refine_small_shot`).
        """
        n = len(shot.picks)
        if not shot.pending or n < 2 * self.cfg.association.min_nodes:
            return True
        if len(shot.pending) >= self.RELOCATE_FRACTION * n:
            return True
        last_arrival = shot.t0_s + self.cfg.association.max_range_m / self.c
        return self.watermark_s - self.DELIVERY_MARGIN_S > last_arrival

    def flush(self, shots: list[ShotState] | None = None) -> list[ShotState]:
        """Re-locate dirty shots that are due (:meth:`_relocate_due`; all of them when ``shots`` names
        them); rejected picks go back to the pool. Returns the shots that changed."""
        out = []
        for shot in self.dirty_shots() if shots is None else shots:
            if not shot.dirty or (shots is None and not self._relocate_due(shot)):
                continue
            shot.dirty = False
            pending, shot.pending = shot.pending, {}
            if not pending:
                shot.revision += 1  # corroboration joined
                out.append(shot)
                continue
            merged = dict(shot.picks)
            for nid, p in pending.items():
                old = merged.get(nid)
                if old is not None:
                    # The node's earlier pick fits worse (an N-wave before the
                    # muzzle blast, say): the new one takes its place.
                    old.rejected_by.add(shot.shot_id)
                    self.pool.append(old)
                merged[nid] = p
            trusted = list(merged.values())
            sol = self._solve(trusted, near=shot)
            if sol is None:
                # The joined picks spoil the fit: keep the last good solution.
                for p in pending.values():
                    p.rejected_by.add(shot.shot_id)
                    self.pool.append(p)
                for p in shot.picks.values():
                    if p not in self.pool:
                        continue
                    self.pool.remove(p)
                    p.rejected_by.discard(shot.shot_id)
                continue
            picks = {p.node_id: p for p in trusted}
            shot.rejected_residuals = {}
            if not sol.used.all():
                for p, u, r in zip(trusted, sol.used, sol.residuals_s, strict=True):
                    if not u:
                        shot.rejected_residuals[p.node_id] = float(r)
                        p.rejected_by.add(shot.shot_id)
                        self.pool.append(p)
                        if abs(r) <= self.cfg.association.match_tolerance_s:
                            # This shot's own arrival, off by more than the fit allows (model error:
                            # a source height or a node position off), not another source's: it
                            # stays a partner for other searches but seeds none of its own at retry.
                            p.undecided = False
                        del picks[p.node_id]
                kept = [p for p, u in zip(trusted, sol.used, strict=True) if u]
                sol2 = self._solve(kept, near=shot)
                if sol2 is not None and sol2.used.all():
                    sol = sol2
                else:
                    sol = _subset(sol, np.asarray(sol.used))
            self._set_solution(shot, picks, sol, shot.last_pick_received_ns)
            out.append(shot)
        for shot in out:
            if shot.picks:
                self._refine_small_shot(shot)
        return out

    #: Small shots (under 2 x min_nodes picks) are re-decided after joins (:meth:`_refine_small_shot`):
    #: earlier alternatives tried per node (chosen on Pittsburgh FP1: 1 gave a median of 6.48 m and 5
    #: false shots, 2 gave 6.8 m and 6), candidate sets located at most (each a full solve), and the
    #: window (s) around the predicted arrival in which a pick the shot rejected is offered again.
    REFINE_ALTS = 1
    REFINE_MAX_SETS = 16
    REFINE_WINDOW_S = 0.06

    def _refine_small_shot(self, shot: ShotState) -> bool:
        """Re-decide a small shot's picks over every node it has been offered, earliest arrivals first.

        Joins are decided one pick at a time against the shot's current solution, so with 4-6
        nodes the first set that fit (often holding an echo, which the planar model's ms errors
        let fit) rejects the direct picks of nodes reporting later. Here the shot's members, the
        pooled picks it rejected (nearest its predicted arrival) and, per node, the latest earlier
        not-weaker pooled pick (a direct arrival before an echo) are re-located together, in
        combinations ordered by the sum of onsets (one pick per node: comparable); the first with
        the most used picks (at least as many as now) that stays this shot (emission within
        FRAGMENT_T0_S, place within the fragment distance) replaces the shot's picks.
        """
        a = self.cfg.association
        n_cur = len(shot.picks)
        if n_cur >= 2 * a.min_nodes:
            return False  # many picks: the robust consensus outvotes echoes (as in _first_arrivals)
        options = {nid: [p] for nid, p in shot.picks.items()}
        for nid in self._pool_nodes_near(shot.enu_m):
            if nid in options:
                continue
            pred = shot.t0_s + self._travel(shot.enu_m, self.registry.enu(nid))
            _, ps = self.pool.window(nid, pred - self.REFINE_WINDOW_S, pred + self.REFINE_WINDOW_S)
            ps = [q for q in ps if shot.shot_id in q.rejected_by and q.trusted]
            if ps:
                options[nid] = [min(ps, key=lambda q: abs(q.t_s - pred))]
        if len(options) >= 2 * a.min_nodes:
            return False
        for ps in options.values():
            ps += self._earlier_alternatives(ps[0], self.REFINE_ALTS)
        if len(options) == n_cur and all(len(o) == 1 for o in options.values()):
            return False
        combos = sorted(itertools.product(*options.values()), key=lambda c: sum(q.t_s for q in c))
        for p in shot.picks.values():  # its own picks are no other shot's while it is re-fitted
            self._unclaim(p)
        waited, best = self._waited, None
        try:
            for combo in combos[:self.REFINE_MAX_SETS]:
                fit = self._fit(list(combo))
                if fit is None:
                    continue
                sol, used = fit
                if len(used) < max(n_cur, a.min_nodes) or (best is not None and len(used) <= len(best[1])):
                    continue
                near = 3 * (sol.cep95_m + shot.solution.cep95_m) + 10.0
                if (abs(sol.t0_s - shot.t0_s) > self.FRAGMENT_T0_S
                        or math.hypot(*(np.asarray(sol.position_m, float)[:2] - shot.enu_m[:2])) > near):
                    continue
                best = (sol, used)
        finally:
            self._waited = waited
            for p in shot.picks.values():
                self.onsets.hold(p.node_id, p.t_s)
        if best is None or {id(p) for p in best[1]} == {id(p) for p in shot.picks.values()}:
            return False
        self.n_refined += 1
        sol, used = best
        keep = {id(p) for p in used}
        for p in shot.picks.values():
            if id(p) not in keep:
                p.rejected_by.add(shot.shot_id)
                self.pool.append(p)
        for p in used:
            if p in self.pool:
                self.pool.remove(p)
            p.rejected_by.discard(shot.shot_id)
        shot.rejected_residuals = {}
        self._set_solution(shot, {p.node_id: p for p in used}, sol, shot.last_pick_received_ns)
        return True

    def retry(self, watermark_ns: int | None = None) -> list[ShotState]:
        """Search once more from pool picks whose wait window has passed (``None``: the stream ended).

        A hypothesis that waited for pending nodes is decided here once the
        watermark shows those nodes had their chance to report.
        """
        if self.t_ref_ns is None:
            return []
        self.watermark_s = math.inf if watermark_ns is None else max(
            self.watermark_s, (watermark_ns - self.t_ref_ns) / 1e9)
        due = self.watermark_s - self.DELIVERY_MARGIN_S - self.cfg.association.max_range_m / self.c
        # And at the latest when the wait window is over: :meth:`expire` then drops the pick (on a
        # network smaller than max_range_m, or with a short pending_s, that comes first; such picks
        # were dropped undecided, and the sets that waited for them with them).
        due = max(due, self.watermark_s - self.horizon_s() + 1e-9)
        out = []
        # A search that was decided (every candidate set rejected by silent nodes or by its fit)
        # gives the same answer again: partners that arrived since seeded searches of their own,
        # which find this pick if it belongs with them. Searches that waited are decided here.
        # Deciding them lets go of the picks that joined their sets on arrival: a second round
        # searches those that are due (each round settles its picks, so the loop ends).
        again = True
        while again:
            again = False
            self._prune_waiting()
            for p in self.pool.due(due):
                p.settled = True
                if p not in self.pool:
                    continue
                self._retrying = True
                try:
                    if p.waiting is None:
                        if self._shock_of_a_shot(p):
                            continue
                        if p.tail and self._echo_of_a_shot(p):
                            continue  # (only tails of a dense network are undecided)
                        if self._at_a_refused_place(p):
                            continue
                        shot = self._hypothesise(p)
                    else:
                        shot = self._decide_waiting(p)
                        again = True
                        if shot is None and p.unsearched and p in self.pool:
                            p.unsearched = False
                            if not self._at_a_refused_place(p):
                                shot = self._hypothesise(p)
                finally:
                    self._retrying = False
                if shot is not None:
                    out.append(shot)
        return out

    #: A pick at most this long (s) before one that a shot holds at the same node is taken for that
    #: shot's shock wave at :meth:`retry` (:meth:`_shock_of_a_shot`).
    SHOCK_LEAD_S = 0.025

    def _shock_of_a_shot(self, pick: Pick) -> bool:
        """Whether a pick due at :meth:`retry` comes at most ``SHOCK_LEAD_S`` before a pick that a shot holds
        at its node: the shot's early supersonic N-wave (the bullet's shock reaches the nodes near the
        line of fire milliseconds to tens of milliseconds before the muzzle blast), or an echo of an
        earlier sound that happens to precede it. It is not searched again (like a reverberation
        tail it stays a partner, and joins a shot whose arrival it fits). Most picks searched at
        retry are junk (dense scene: echoes, N-waves, the wall's ghost, strays), and there none of
        them made a shot. The window is before the held pick only, because the next round of a
        burst (30-150 ms later) comes after it (a window to 150 ms after lost sources: 100 nodes
        at 49 impulses/s 78.5 -> 74.7 %)."""
        return self._near_a_held_pick(pick, after_s=self.SHOCK_LEAD_S)

    def _ahead_of_a_shot(self, pick: Pick) -> bool:
        """Whether a listed shot predicts its arrival at ``pick``'s node at most ``SHOCK_LEAD_S`` after the pick:
        the shot's shock wave, most likely, which nodes near the line of fire pick before the muzzle
        blast. Asked on arrival, of a pick that would otherwise seed a grid search: such a pick is put
        off to :meth:`retry`, where it is not searched if the shot then holds the node's blast just
        after it (:meth:`_shock_of_a_shot`), and searched otherwise.

        Dense scene: 1,708 -> 1,430 grid searches (N-waves searched on arrival 270 -> 101), the same
        shots; the 100- and 1,024-node scenes the same share of sources found. Only shots emitted at
        most :meth:`_earliest_emission_s` before the pick are asked (as :meth:`_attach` does): with every
        listed shot, 100 nodes at 49 impulses/s lost a firecracker (88.17 -> 87.63 %).
        """
        xyt = self._shot_xyt
        if not len(xyt):
            return False
        r = self.registry.enu(pick.node_id)
        wind = self.wind_enu_mps
        return grid_kernels.ahead_of_shots(xyt, float(r[0]), float(r[1]), float(r[2]), pick.t_s,
                                           self._earliest_emission_s(pick), float(self.c), wind is not None,
                                           self._kernel_wind(), self.SHOCK_LEAD_S)

    #: A reverberation tail at most this long (s) after a pick that a shot holds at its node is taken for
    #: that shot's echo (:meth:`_echo_of_a_shot`).
    ECHO_LAG_S = 0.1

    def _echo_of_a_shot(self, pick: Pick) -> bool:
        """Whether a tail pick comes at most ``ECHO_LAG_S`` after a pick that a shot holds at its node: an
        echo of that shot (the facades of a street return a shot within tens of milliseconds). Such a
        tail is not searched, on arrival or at :meth:`retry`. On arrival, a tail at most ``ECHO_LAG_S``
        after the louder pick that makes it a tail is put off to retry too: that pick's shot is
        usually not made yet. Other tails may be a weaker source's direct sound
        (:meth:`_tails_take_part`) and are searched on arrival.

        Dense scene with levels, grid searches (counting those put off), sources found on 100 and
        1,024 nodes at 49 impulses/s: tails searched like any pick 2,309, 95.2 %, 99.5 %; a located
        shot's echoes not searched 2,120, 90.3 %, 99.5 %; and those right after their louder pick put
        off 1,706, 88.2 %, 99.5 % (1,024 nodes at 13 impulses/s: 98.3 -> 100 %). Every tail put off to
        retry: one false shot on the dense scene, or with the echo rule 85.5 % on 100 nodes.
        """
        return self._near_a_held_pick(pick, before_s=self.ECHO_LAG_S)

    def _near_a_held_pick(self, pick: Pick, before_s: float = 0.0, after_s: float = 0.0) -> bool:
        """Whether a shot holds a pick of ``pick``'s node at most ``before_s`` (s) before it or at most
        ``after_s`` after it (:meth:`_echo_of_a_shot`, :meth:`_shock_of_a_shot`)."""
        held = self.onsets.held_times(pick.node_id)
        k = int(held.searchsorted(pick.t_s, side="left"))
        if k > 0 and pick.t_s - held[k - 1] <= before_s:
            return True
        while k < len(held) and held[k] == pick.t_s:  # (the first held onset after it: one search)
            k += 1
        return k < len(held) and held[k] - pick.t_s <= after_s

    def _decide_waiting(self, seed: Pick) -> ShotState | None:
        """Decide the candidate sets a search from ``seed`` left waiting, now that the pending nodes have had
        their chance (no new grid search: partners that arrived since searched themselves)."""
        a = self.cfg.association
        waiting, n_partners = seed.waiting
        seed.waiting = None
        sets = []
        for members, xy, t0, tol_s in waiting:
            kept = [p for p in members if p in self.pool]
            if len(kept) < max(a.min_nodes, 0.75 * len(members)):
                continue  # most of it went to a shot meanwhile: what is left is that shot's leftovers
            members = kept
            if self._evidence(xy, t0, {p.node_id for p in members}, tol_s) == "accept":
                sets.append((members, xy, t0))
        return self._decide(sets, n_partners, [], 0.0) if sets else None

    def expire(self, watermark_ns: int) -> None:
        """Forget picks and shots that can no longer change (older than the wait window)."""
        if self.t_ref_ns is None:
            return
        w = (watermark_ns - self.t_ref_ns) / 1e9
        self.watermark_s = max(self.watermark_s, w)
        horizon = self.horizon_s()
        # The picks of a set that waits stay until its seed (the last of them to arrive) is decided at
        # :meth:`retry` (they would expire first: the set was then decided without them).

        def keep(p: Pick) -> bool:
            return p.t_s > w - horizon or self._held_by_a_waiting_set(p)

        self.n_expired_unassociated += self.pool.drop_older(w - horizon, keep)
        t_keep = w - horizon - self.cfg.association.max_range_m / self.c
        keep = [s.dirty or s.t0_s > t_keep for s in self.shots]
        if not all(keep):
            self._final += [(s, self.nearby_residuals(s)) for s, k in zip(self.shots, keep, strict=True) if not k]
            self.shots = [s for s, k in zip(self.shots, keep, strict=True) if k]
            self._shot_xyt = self._shot_xyt[np.asarray(keep, dtype=bool)]
            for i, s in enumerate(self.shots):
                s.slot = i
        self.onsets.trim(w - 2 * horizon)

    def _held_by_a_waiting_set(self, p: Pick) -> bool:
        """Whether ``p`` is a member of a set that waits: a set of a seed that still waits and is pooled.

        Asked of every pick old enough to expire. Only the seeds that ever took ``p`` into a set
        (``p.in_sets_of``, noted by :meth:`_mark_waiting_members` and on a join) are looked at: the
        set of every waiting member, gathered at each expiry (cProfile: 197 builds, 49 ms of a dense
        play), held none of the picks it was asked about."""
        for s in p.in_sets_of or ():
            if s.waiting is not None and s.pooled and any(q is p for w in s.waiting[0] for q in w[0]):
                return True
        return False

    @staticmethod
    def _mark_waiting_members(seed: Pick) -> None:
        """Note ``seed`` with every member of the sets it now waits with (:meth:`_held_by_a_waiting_set`)."""
        for w in seed.waiting[0]:
            for q in w[0]:
                _note_in_set_of(q, seed)

    # -- attaching to a known shot -----------------------------------------
    def _attach(self, pick: Pick, only: ShotState | None = None) -> ShotState | None:
        """Give a pick to the shot (``only``, or any listed) whose predicted arrival it fits best within
        the attach tolerance: pending until the shot's next re-location, or corroborating if its time
        is not trusted. Returns that shot, or None."""
        best = self._attach_target(pick, only)
        if best is None:
            return None
        if not pick.trusted:
            best.corroborating[pick.node_id] = pick
            best.dirty = True
            return best
        old = best.pending.get(pick.node_id)
        if old is not None:
            old.rejected_by.add(best.shot_id)
            self.pool.append(old)
        best.pending[pick.node_id] = pick
        best.last_pick_received_ns = max(best.last_pick_received_ns, pick.received_ns)
        best.dirty = True
        return best

    def _earliest_emission_s(self, pick: Pick) -> float:
        """The earliest emission time (s) of a shot that can have made ``pick``: ``max_range_m`` / c, and 0.1 s
        of slack, before its onset."""
        return pick.t_s - self.cfg.association.max_range_m / self.c - 0.1

    def _attach_target(self, pick: Pick, only: ShotState | None = None) -> ShotState | None:
        """The shot :meth:`_attach` gives ``pick`` to (no change made)."""
        r = self.registry.enu(pick.node_id)
        best, best_err = None, np.inf
        t_min = self._earliest_emission_s(pick)
        if only is None:
            # Only shots from when and where this pick can have come: emitted since t_min, and near
            # enough that the pick is within the widest attach tolerance of their arrival (sound
            # travels at most c + |wind|). The checks below decide among those.
            match_tol = self.cfg.association.match_tolerance_s
            wind = self.wind_enu_mps
            spread = 5 * self._sigma(pick)
            gust = 0.0 if wind is None else float(np.hypot(*wind[:2]))
            reach = (pick.t_s - t_min + 0.05 + spread + match_tol) * (self.c + gust)
            # In still air, automatic fire lists many shots from one place: those whose predicted arrival
            # is beyond the widest attach tolerance (:meth:`_attach_tolerance`) go at once, the
            # predictions as :meth:`_travel` makes them (dense scene: ~10 candidates per pick). One
            # compiled pass (it was a dozen numpy steps per pick).
            trusted = pick.trusted
            widest = (0.02 + spread if trusted else 0.05) + match_tol
            if wind is None and trusted:
                # The arrival and tolerance tests too, in the same pass, best first: the first shot that
                # passes the checks of the pick's node below is the best (dense scene: ~10 candidates per
                # pick, 12 us in Python).
                rows, errs, preds = grid_kernels.shots_to_attach(
                    self._shot_xyt, float(r[0]), float(r[1]), float(r[2]), pick.t_s, t_min, reach, self.c, widest,
                    spread, match_tol)
                for i, err, pred in zip(rows.tolist(), errs.tolist(), preds.tolist(), strict=True):
                    if self._node_takes(self.shots[i], pick, pred, err):
                        return self.shots[i]
                return None
            near = grid_kernels.shots_near_arrival(self._shot_xyt, float(r[0]), float(r[1]), float(r[2]), pick.t_s,
                                                   t_min, reach, self.c, widest, wind is None)
            candidates = [self.shots[i] for i in near.tolist()]
        else:
            candidates = [only]
        for shot in candidates:
            if shot.t0_s < t_min or shot.t0_s > pick.t_s:
                continue
            pred = shot.t0_s + self._travel(shot.enu_m, r)
            err = abs(pick.t_s - pred)
            if err < self._attach_tolerance(shot, pick) and err < best_err and self._node_takes(shot, pick, pred, err):
                best, best_err = shot, err
        return best

    @staticmethod
    def _node_takes(shot: ShotState, pick: Pick, pred: float, err: float) -> bool:
        """Whether ``shot`` can take ``pick`` at its node, ``err`` (s) off the arrival ``pred`` (s) it predicts
        there: the shot was not refused by the pick, does not hold the node's pick as corroborating, and holds
        no pick of the node (pending or located) as near its arrival (a pick without trusted time replaces
        none)."""
        if shot.shot_id in pick.rejected_by or pick.node_id in shot.corroborating:
            return False
        old = shot.pending.get(pick.node_id) or shot.picks.get(pick.node_id)
        return old is None or (pick.trusted and abs(old.t_s - pred) > err)

    def _near_arrivals(self, shot: ShotState) -> list[Pick]:
        """Pooled picks within the widest possible attach tolerance of the shot's predicted arrival at
        their node, for nodes within ``max_range_m`` of the shot (the picks :meth:`_attach` may give it
        from nodes that can have heard it), node by node in the onset store's row order, each node's
        in onset order: one compiled call (:func:`grid_kernels.arrival_windows`, as :meth:`_complete_set`)."""
        if not len(self.onsets):
            return []
        a = self.cfg.association
        xyz, grid = self._rows()
        pool_rows = self._pool_rows()  # (before the pool's arrays are read: it may grow them)
        e = shot.enu_m
        got, lo, hi = grid_kernels.arrival_windows(
            xyz, grid.near(float(e[0]), float(e[1]), a.max_range_m), a.max_range_m, float(e[0]), float(e[1]),
            float(e[2]), float(shot.t0_s), float(self.c), self._kernel_wind(), pool_rows, self.pool.times[0],
            self.pool.counts[0], 0.02 + 5 * self._sigma_max + a.match_tolerance_s)
        ids, out = self.onsets.ids, []
        for r, i, j in zip(got.tolist(), lo.tolist(), hi.tolist(), strict=True):
            out += self.pool.picks_between(ids[r], i, j)
        return out

    def _pool_rows(self) -> np.ndarray:
        """Each onset-store row's row in the pool's padded onsets (:meth:`PickPool.row_of`; both only ever
        grow, and a row never changes), extended as nodes first report."""
        m = self._pool_row_of_store
        n = len(self.onsets)
        if len(m) < n:
            ids = self.onsets.ids
            m = self._pool_row_of_store = np.concatenate(
                [m, np.fromiter((self.pool.row_of(ids[r]) for r in range(len(m), n)), dtype=np.int64, count=n - len(m))])
        return m

    def _pool_nodes_near(self, enu: np.ndarray) -> list[str]:
        """Located nodes with pooled picks within ``max_range_m`` (horizontal) of a point."""
        return [n for n in self._nodes_within_range(enu) if self.pool.has_node(n)]

    def _nodes_within_range(self, enu: np.ndarray) -> list[str]:
        """Located nodes that have reported onsets, within ``max_range_m`` (horizontal) of a point (those
        that can have heard a source there): through the spatial index, not by visiting every node."""
        return [self.onsets.ids[r] for r in self._rows_within_range(enu).tolist()]

    def _rows_within_range(self, enu: np.ndarray) -> np.ndarray:
        """The onset-store rows of :meth:`_nodes_within_range` (their count is all some callers need)."""
        r_max = self.cfg.association.max_range_m
        xyz, grid = self._rows()
        rows = grid.near(float(enu[0]), float(enu[1]), r_max)
        return rows[np.hypot(xyz[rows, 0] - enu[0], xyz[rows, 1] - enu[1]) <= r_max]

    def _attach_tolerance(self, shot: ShotState, pick: Pick) -> float:
        a = self.cfg.association
        if not pick.trusted:
            return 0.05 + a.match_tolerance_s
        return min(2.0 * shot.solution.cep95_m / self.c, 0.02) + 5 * self._sigma(pick) + a.match_tolerance_s

    # -- hypothesis search -------------------------------------------------------
    def _neighbours(self, node_id: str) -> tuple[list[str], np.ndarray, np.ndarray]:
        """A seed node's search partners: the nodes within ``max_range_m`` of it (horizontal), and at
        least its 2 x ``min_nodes`` - 1 nearest within 2 ``max_range_m``; their distances to it (m)
        and their order by distance (cached).

        A source the seed hears lies within ``max_range_m`` of it, so nodes out to twice that can
        hear it too. But a node far from the seed shares few of its sources, while its picks of
        others line up by chance with the coarse grid's cells: on 1,024 nodes at 49 impulses/s,
        partners out to 2 ``max_range_m`` (~200 nodes) cost 50 % more CPU and found fewer sources
        (94.6 % against 95.7 %) than those within ``max_range_m`` (~50). The far nodes that heard a
        source join its shot once it is made (:meth:`_create`), and the negative evidence still
        counts every node in range. Small arrays keep their nearest nodes whatever the distance
        (Pittsburgh from audio, 3-6 sensors up to 760 m apart with a 700 m range, lost two
        rounds without them).
        """
        a = self.cfg.association
        key = (self.registry.version, a.max_range_m, a.min_nodes)
        got = self._nbrs.get(node_id)
        if got is None or got[0] != key:
            ids, xy = self._located_nodes()
            r = self.registry.enu(node_id)
            cand = self._located_index().near(float(r[0]), float(r[1]), 2 * a.max_range_m)
            d = np.hypot(*(xy[cand] - r[:2]).T)  # only the nodes near it: a city has 10,000
            near = np.flatnonzero(d <= 2 * a.max_range_m)
            near = [k for k in near[np.argsort(d[near], kind="stable")].tolist() if ids[cand[k]] != node_id]
            keep = sorted(k for i, k in enumerate(near) if d[k] <= a.max_range_m or i < 2 * a.min_nodes - 1)
            got = self._nbrs[node_id] = (key, [ids[cand[k]] for k in keep], d[keep],
                                         np.argsort(d[keep], kind="stable"))
        return got[1], got[2], got[3]

    def _located_index(self) -> NodeGrid:
        """A spatial index over :meth:`_located_nodes` (their indices; cached until positions change)."""
        got = self._located_grid
        if got is None or got[0] != self.registry.version:
            _, xy = self._located_nodes()
            got = self._located_grid = (self.registry.version,
                                        NodeGrid(np.c_[xy, np.zeros(len(xy))], self.cfg.association.max_range_m))
        return got[1]

    def _located_nodes(self) -> tuple[list[str], np.ndarray]:
        """The located nodes and their horizontal positions (N, 2) m (cached until positions change)."""
        if self._located is None or self._located[0] != self.registry.version:
            ids = self.registry.located_ids()
            self._located = (self.registry.version, ids,
                             np.array([self.registry.enu(n)[:2] for n in ids]).reshape(-1, 2))
        return self._located[1], self._located[2]

    def _seed_table(self, seed_id: str, node_ids: list[str]) -> tuple[SeedTable, np.ndarray]:
        """The coarse grid around a seed node and its cached tables; the table rows of ``node_ids``.

        The grid around a node never moves, so the travel-time differences and
        tolerances (:class:`SeedTable`) are computed once per (seed node, node)
        and reused by every search (until positions, c or the height model change).
        """
        loc = self.cfg.location
        key = (self.registry.version, self.c, self.source_z_m, loc.mode)
        tab = self._tables.get(seed_id)
        if tab is None or tab.key != key:
            r = self.registry.enu(seed_id)
            pts = self._coarse_grid() + r[:2]
            if tab is not None:
                self._table_bytes -= self._tables.pop(seed_id).nbytes
            tab = self._tables[seed_id] = SeedTable(key, pts, self._range(pts, r) / self.c, self._unit(pts, r))
        else:
            self._tables.move_to_end(seed_id)
        row = tab.row
        missing = [n for n in node_ids if n not in row]
        if missing:
            before = tab.nbytes
            self._fill_rows(tab, missing)
            # A city's tables would not fit (1,024-node bench: 1.3 MB per seed node on average): the least
            # recently used go once they hold more than MAX_TABLE_BYTES (never the one in use).
            self._table_bytes += tab.nbytes - before
            while self._table_bytes > self.MAX_TABLE_BYTES and len(self._tables) > 1:
                self._table_bytes -= self._tables.pop(next(iter(self._tables))).nbytes
        return tab, np.array([row[n] for n in node_ids], dtype=np.intp)

    #: Memory (bytes) the cached seed tables may hold; the least recently used are dropped beyond it.
    MAX_TABLE_BYTES = 512 * 2**20
    #: Safety factor on the local gradient bound of the coarse tolerance (see :meth:`_fill_rows`).
    COARSE_TOL_FACTOR = 1.5

    def _fill_rows(self, tab: SeedTable, node_ids: list[str]) -> None:
        """Add the table rows of nodes (all at once: per-row calls cost more than the
        arithmetic): arrival difference to the seed (s) and coarse match tolerance (s) at each grid
        point each node can hear.

        A source anywhere in a cell of half-diagonal h is matched at the cell's
        centre within the change of the arrival difference across the cell:
        |grad (T_k - T_seed)| h = |u_k - u_seed| h / c (u the horizontal
        direction from the source). This is up to 2 h / c (the node opposite
        the seed) but near 0 where the node lies behind the seed, so a
        per-node tolerance (with a safety factor, capped at 2) keeps the
        coarse score discriminating in a dense scene; one common 2 h / c
        bound matched some pick at nearly every node everywhere.
        """
        a = self.cfg.association
        loc = self.cfg.location
        xyz = np.array([self.registry.enu(n) for n in node_ids], dtype=float).reshape(-1, 3)
        node_xy = np.ascontiguousarray(xyz[:, :2])
        dz2 = np.zeros(len(node_ids)) if loc.mode == "2d" else (xyz[:, 2] - self.source_z_m) ** 2
        half_diag = a.grid_step_m / np.sqrt(2)
        # Points beyond max_range_m of the node (farther than a cell's half-diagonal) are left out:
        # it cannot hear a source there, so it never supports one.
        tab.add_rows(
            node_ids,
            lambda seg: grid_kernels.table_segments(tab.pts, tab.line_start, node_xy, a.max_range_m + half_diag, seg),
            lambda seg, offsets, diff, tol: grid_kernels.table_values(
                tab.pts, tab.t_seed, tab.u_seed, node_xy, dz2, 1.0 / self.c, half_diag, self.COARSE_TOL_FACTOR,
                a.match_tolerance_s, seg, offsets, diff, tol))

    def _unit(self, pts: np.ndarray, node: np.ndarray) -> np.ndarray:
        """Horizontal part of the unit vectors (G, 2) from sources at ``pts`` to a node (range gradient)."""
        rng_m = np.maximum(self._range(pts, node), 1e-6)
        return (node[:2] - pts) / rng_m[:, None]

    def _range(self, pts: np.ndarray, node: np.ndarray) -> np.ndarray:
        """Distance (m) from sources at ``pts`` (G, 2), at the assumed source height, to a node."""
        return np.sqrt((pts[:, 0] - node[0]) ** 2 + (pts[:, 1] - node[1]) ** 2 + self._dz2_at(node))

    def _fine_tol_s(self) -> float:
        """The last refinement stage's match tolerance (s): half a fine cell's diagonal over c, plus
        ``match_tolerance_s`` (the exact points, recent places and refused places are held to it)."""
        a = self.cfg.association
        return math.sqrt(2) * (a.grid_step_m / math.prod(self.SUBDIVISIONS)) / self.c + a.match_tolerance_s

    def _dz2_at(self, node: np.ndarray) -> float:
        """Squared height (m^2) of a node above the assumed source height (0 in the 2-D mode)."""
        return 0.0 if self.cfg.location.mode == "2d" else float((node[2] - self.source_z_m) ** 2)

    #: Reverberation tails take part in new shots where at least this many times ``min_nodes`` nodes are
    #: in range (:meth:`_tails_take_part`) ...
    TAIL_PARTNER_IN_RANGE = 3
    #: ... and a new shot with any tail among its picks needs at least this many times ``min_nodes`` of
    #: them (:meth:`_decide`). Echoes are what most tails are (Pittsburgh: 2.9 onsets of ours follow
    #: each gunshot arrival within 1 s at its sensor, 58 % of them tails), and where every node hears
    #: them, sets of 5-8 echoes (53 of 55 under 8) fit and pass the silent nodes, the farthest member
    #: fixing a small audible radius. The dense scene with such echoes added (``bench_association.real_echoes``):
    #: tails in any set 55 false shots of 217 (25 %), found 87.6 %; in sets of 8 or more none, 84.9 %
    #: (tails in no new shot: 5.2 % false, 78.9 %; sets of 12 or more: none, 80.5 %, and the dense
    #: scene itself lost firecrackers, 97.3 %). A weaker source after a louder one, whose picks are
    #: tails at most of its nodes, is heard by many nodes: the dense scene's firecrackers by 10-16.
    TAIL_SET_MIN = 2

    def _tails_take_part(self, in_range: list[str]) -> bool:
        """Whether reverberation tails may seed and support new shots near a point, from the nodes that
        have reported within ``max_range_m`` of it (:meth:`_nodes_within_range`): at least
        ``TAIL_PARTNER_IN_RANGE`` x ``min_nodes``.

        A tail is a pick at least ``reverb_drop_db`` below one its node made less than ``reverb_s``
        before: an echo, or the direct sound of a weaker source (a firecracker 15 dB below the
        gunfire before it, the farther of two shooters, any source after a louder one on a busy
        night). On a small array (Pittsburgh from audio, 3-6 sensors) chance sets of echoes fit and
        nothing speaks against them, so there tails only join shots (as partners there: 57 false
        shots instead of 7). Where many nodes are in range, the silent ones refuse such sets, while
        leaving tails out lost every source whose nodes mostly heard a louder one just before: the
        dense scene with levels found 85.9 % of its sources (26 of 39 firecrackers lost), 1,024
        nodes at 49 impulses/s 80.1 %, 100 nodes 49.5 %. There a tail is searched like any pick,
        unless it is a located shot's echo (:meth:`_echo_of_a_shot`).
        """
        return len(in_range) >= self.TAIL_PARTNER_IN_RANGE * self.cfg.association.min_nodes

    def _tails_take_part_at(self, node_id: str) -> bool:
        """:meth:`_tails_take_part` around a node (a tail's own node, a seed's), cached until a node
        reports for the first time or a position changes: asked for every tail and every search. Once
        true it stays so until a position changes (nodes that have reported stay reported): on a city's
        first minutes, when new nodes report all the time, it is not counted again."""
        key = (self.registry.version, len(self.onsets))
        got = self._tails_at.get(node_id)
        if got is not None and got[1] and got[0][0] == key[0]:
            return True
        if got is None or got[0] != key:
            got = self._tails_at[node_id] = (
                key, self._tails_take_part(self._nodes_within_range(self.registry.enu(node_id))))
        return got[1]

    def _hypothesise(self, seed: Pick) -> ShotState | None:
        """Search from a pick (the seed) for the shot it belongs to, among its partners' pooled picks
        (:meth:`_search`); None if it makes none now (``seed.undecided`` says whether to try again at
        :meth:`retry`).

        Before the grid search, the *exact points*: source points (m) fixed exactly by the seed's
        pick and one pick at each of two of its ``N_TRIPLET_NODES`` nearest partner nodes that have
        picks, heard by all of those but one (at the last refinement stage's tolerance). The coarse
        grid ranks a cell by how many nodes have a pick within the cell's tolerance (up to ~100 ms for
        25 m cells). Among busy nodes (automatic fire, a firework string) chance alignments then score
        as many nodes as a quiet source's true cell, which is not refined (1,024-node bench: a
        firecracker string 400-500 m from two shooters, its true cell ranked 200th-3,700th of 5,000).
        Three arrivals fix a 2-D source with an unknown emission time exactly, so every physically
        possible triple with the nearest partners, which hear a quiet source too, gives candidate
        points that the last stage scores at its fine tolerance
        (:func:`shotline.hub.grid_kernels.triplet_points`). A source that the nearest nodes hear is
        heard by all but one of them (10 % of picks missed: 1 % of triples lose two), while a chance
        triple among busy nodes rarely is (tests: 4 % of the points of 12 random picks per node), so
        only points where all near nodes but one have a pick within the tolerance are scored. Node
        pairs with more than ``MAX_TRIPLET_PAIRS`` possible pick pairs are skipped. Where the nearest
        partners give no such point, the search is put off.
        """
        a = self.cfg.association
        r_seed = self.registry.enu(seed.node_id)
        nbr_ids, order, d_ord, rows_ord, xy_ord, dz2_ord = self._partners_nearest_first(seed.node_id)
        tails = self._tails_take_part_at(seed.node_id)
        view = 0 if tails else 1
        pool = self.pool
        # Each partner's pooled picks within its reach of the seed (physically possible partners: the
        # time difference cannot exceed the travel time between the two nodes), nearest first. Where
        # at least 2 x min_nodes - 1 partners have some, the exact points from the nearest (see the
        # docstring) decide whether a search can be decided now, before the others are
        # read (1,024-node bench: ~40 of them). One compiled call (:func:`grid_kernels.seed_partners`):
        # in Python it was most of the CPU of a city's busy night, where most picks are put off here.
        lo, hi, status, exact = grid_kernels.seed_partners(
            pool.times[view], pool.counts[view], rows_ord, d_ord, float(seed.t_s), float(self.c),
            a.match_tolerance_s, 2 * a.min_nodes - 1, self.N_TRIPLET_NODES, np.asarray(r_seed[:2], float),
            self._dz2_at(r_seed), xy_ord, dz2_ord, a.max_range_m, self.MAX_TRIPLET_PAIRS, self._fine_tol_s())
        if status == 2:
            # The nearest nodes have not heard what the seed heard, yet or at all: no search can
            # be decided now. It runs when the wait window has passed (retry), if they have then.
            self.n_searches += 1
            if not self._retrying:
                self.n_deferred += 1
            seed.undecided = not self._retrying
            return None
        # in the neighbours' own order, as the kernels were checked in
        heard = sorted((order[j], j) for j in np.flatnonzero(hi > lo).tolist())
        if len(heard) + 1 < a.min_nodes:
            # Too few partners now: every set this pick could belong to has a later-arriving
            # member, whose own search sees this pick. Nothing to search again at retry.
            seed.undecided = False
            return None
        self.n_searches += 1
        self._waited = False
        try:
            js = [j for _, j in heard]
            return self._search(seed, [nbr_ids[k] for k, _ in heard], view, rows_ord[js], lo[js], hi[js], r_seed,
                                xy_ord[js], dz2_ord[js], exact if status == 1 else None)
        finally:
            seed.undecided = self._waited

    def _partners_nearest_first(self, seed_id: str) -> tuple[list[str], list[int], np.ndarray, np.ndarray,
                                                               np.ndarray, np.ndarray]:
        """A seed node's partners (:meth:`_neighbours`) for :func:`grid_kernels.seed_partners`: their ids,
        nearest first their indices in those ids, distances (m), pool rows, horizontal positions
        (K, 2) m and squared height offsets to the assumed source height (m^2).
        Cached with the neighbours: each partner is given its pool row here, before it pools a pick,
        so the rows never change (looked up per call, they cost a city's first minutes, when nodes pool
        their first picks all the time, as much as the Python reads they replaced)."""
        nbr_ids, nbr_d, by_distance = self._neighbours(seed_id)
        key = (self.registry.version, self.source_z_m, self.cfg.location.mode)
        got = self._front.get(seed_id)
        if got is None or got[0] != key or got[1] is not nbr_ids:
            order = by_distance.tolist()
            xyz = np.array([self.registry.enu(nbr_ids[k]) for k in order], dtype=float).reshape(-1, 3)
            dz2 = (np.zeros(len(order)) if self.cfg.location.mode == "2d"
                   else (xyz[:, 2] - self.source_z_m) ** 2)
            rows = np.fromiter((self.pool.row_of(nbr_ids[k]) for k in order), dtype=np.int64, count=len(order))
            got = self._front[seed_id] = (key, nbr_ids, order, np.ascontiguousarray(nbr_d[by_distance], dtype=float),
                                          rows, np.ascontiguousarray(xyz[:, :2]), np.ascontiguousarray(dz2, dtype=float))
        return nbr_ids, got[2], got[3], got[4], got[5], got[6]

    #: Each refinement stage of the grid search splits a kept cell into n x n cells.
    SUBDIVISIONS = (5, 5)

    def _search(self, seed: Pick, node_ids: list[str], view: int, pool_rows: np.ndarray, lo: np.ndarray,
                hi: np.ndarray, r_seed: np.ndarray, node_xy: np.ndarray, dz2: np.ndarray,
                exact: np.ndarray | None) -> ShotState | None:
        """The grid search of :meth:`_hypothesise` over the seed's partner picks: those of the partners
        ``node_ids``, positions ``lo[k]:hi[k]`` of row ``pool_rows[k]`` of the pool's onsets ``view`` (0 with
        reverberation tails, 1 without; :attr:`PickPool.times`). ``node_xy`` (K, 2) m and ``dz2`` (K,) m^2:
        the partners' horizontal positions and squared height offsets to the assumed source height (node
        heights enter the predicted ranges: masts and roofs; zero in the 2-D mode), from
        :meth:`_partners_nearest_first`; ``exact``: the exact points from the nearest partners
        (:meth:`_hypothesise`; None on small arrays)."""
        a = self.cfg.association
        pool, tails = self.pool, view == 0
        # Partners hold pooled (trusted) picks, so each has a row in the onset store.
        store_rows = np.fromiter((self.onsets.row[n] for n in node_ids), dtype=np.intp, count=len(node_ids))
        seed_dz2 = self._dz2_at(r_seed)

        # Coarse grid of hypothetical sources within max_range of the seed node
        # (and of reach of the partners), refined twice around the best points.
        # A grid point is up to half a cell diagonal from the source, so the
        # predicted travel-time difference to the seed and to another node can
        # be off by that much: the match tolerance shrinks with the cell.
        # ceil(score) is the number of partner nodes explained. Where more
        # nodes than min_nodes have candidate picks, a set of exactly
        # min_nodes must also fit perfectly (score + 1 >= min_nodes): with
        # one redundant pick a chance or shifted set fits too easily, so one
        # more node is wanted. Where only min_nodes nodes could take part
        # at all (a small array, Pittsburgh's 4-sensor tests) that is all there is.
        whole = len(node_ids) + 1 <= a.min_nodes  # then the rule is ceil(score) + 1 >= min_nodes (best_points)
        step = a.grid_step_m
        (sub1, sub2), keep2 = self.SUBDIVISIONS, 24
        tab, rows = self._seed_table(seed.node_id, node_ids)
        # The last stage also scores the exact points that the seed's pick and pairs of picks at its
        # nearest partners fix (a quiet source among busy nodes ranks too low on the coarse grid to
        # be refined). Not on small arrays: there the grid has few partners to be outscored by, and
        # exact triples of echoes fit too well (Pittsburgh audio: 7 -> 9 false shots).
        exact = _NO_POINTS if exact is None else np.ascontiguousarray(exact, dtype=float)
        # Candidate detection sets from the best fine points (score order), each set once (neighbouring
        # fine points often choose the same picks); then the cheap negative evidence at their grid
        # points before any solve, all at once.
        refined, xy_top, t0s, ch, fits, first, tol_fine = grid_kernels.grid_search(
            pool.times[view], pool_rows, lo, hi, tab.diff, tab.tol, tab.off, tab.seg, rows, tab.pts,
            np.asarray(r_seed[:2], float), float(seed_dz2), node_xy, np.asarray(dz2, float), float(self.c), step,
            a.match_tolerance_s, a.max_range_m, self.N_COARSE_KEEP, sub1, _sub_cells(step, sub1), keep2, sub2,
            _sub_cells(step / sub1, sub2), exact, 8 * self.N_FINE, a.min_nodes, whole, float(seed.t_s))
        if not refined:
            return None
        sets: list[tuple[list[Pick], np.ndarray, float]] = []
        waiting: list[tuple[list[Pick], np.ndarray, float, float]] = []
        first = first.tolist()
        verdicts = self._evidence_many(xy_top[first], t0s[first], store_rows, fits[:, first], seed.node_id,
                                       tol_fine) if first else []
        for m_i, ev in zip(first, verdicts, strict=True):
            if len(sets) >= self.N_FINE:
                break
            if ev == "reject":
                continue
            if ev != "accept":
                self._waited = True
                if len(waiting) >= self.N_FINE:
                    continue  # (its members are not wanted: dense scene, half the sets that wait)
            ks = np.flatnonzero(fits[:, m_i])
            members = [seed] + [pool.pick_at(node_ids[k], int(lo[k] + ch[k, m_i]), tails) for k in ks.tolist()]
            t0 = float(t0s[m_i])
            if ev == "accept":
                sets.append((members, xy_top[m_i], t0))
            else:
                waiting.append((members, xy_top[m_i], t0, tol_fine))
        if first and not sets and not waiting:
            # Every candidate set was refused by the nodes that did not hear it: remember the best one's place.
            self._note_refused(xy_top[first[0]], float(t0s[first[0]]))
        shot = self._decide(sets, len(node_ids), waiting, tol_fine)
        if self._waited:
            seed.waiting = (waiting, len(node_ids))
            self._mark_waiting_members(seed)
            if shot is None:
                for members, xy, t0, tol in waiting:
                    self._add_waiting(_WaitingSet(seed, members, xy, t0, tol, len(node_ids)))
        return shot

    def _add_waiting(self, w: _WaitingSet) -> None:
        """List a waiting set, and its row in :attr:`_waiting_table` (doubled when full)."""
        n = len(self._waiting_sets)
        if n == len(self._waiting_table):
            self._waiting_table = np.concatenate([self._waiting_table, np.zeros_like(self._waiting_table)])
        self._waiting_table[n] = (w.xy[0], w.xy[1], w.t0_s, w.tol_s)
        self._waiting_sets.append(w)

    def _join_waiting(self, pick: Pick) -> tuple[bool, ShotState | None]:
        """Offer a new pick to the candidate sets that recent searches left waiting for pending nodes.

        A set waits while too few of the nodes in range have reported what it predicts; each of
        its source's later picks would otherwise seed a grid search of its own that finds the
        same set, one node larger, and waits again (dense scene: ~7 such searches per source,
        669 of 3,181). A pick within the set's fine tolerance of the arrival the set predicts at
        its node joins it instead, and the set's evidence is counted again: "accept" locates it
        (:meth:`_decide`), "wait" leaves the pick with it (decided with the set at :meth:`retry`),
        "reject" drops the set. Returns (joined, the shot made); a pick that joined nothing, or
        whose set was refused, searches as before.

        In a busy network a pick of another source can fall within the tolerance. So a joined
        pick that a set lets go (a closer pick at its node replaced it, or the set was refused,
        went stale or was decided without a shot) is undecided again and searched at retry.
        """
        if not self._waiting_sets:
            return False, None
        a = self.cfg.association
        r = self.registry.enu(pick.node_id)
        # the sets whose predicted arrival the pick fits, and the pick less that arrival (s)
        near, res = grid_kernels.sets_near_arrival(self._waiting_table, len(self._waiting_sets), float(r[0]),
                                                   float(r[1]), self._dz2_at(r), pick.t_s, float(self.c),
                                                   a.max_range_m**2)
        for k, res_k in zip(near.tolist(), res.tolist(), strict=True):
            err_k = abs(res_k)
            w = self._waiting_sets[k]
            if not self._waiting_live(w):
                continue  # dropped at the next retry
            # One pick per node: a closer one replaces the member there (an early N-wave, then the muzzle blast).
            at = next((i for i, p in enumerate(w.members) if p.node_id == pick.node_id), None)
            pred = pick.t_s - res_k
            if at == 0 or (at is not None and abs(w.members[at].t_s - pred) <= err_k):
                continue
            old = w.members.pop(at) if at is not None else None
            w.members.append(pick)
            _note_in_set_of(pick, w.seed)
            self._waited = False
            verdict = self._waiting_evidence(w)
            if verdict == "wait":
                self.n_joined_waiting += 1
                if old is not None:
                    self._let_go([old])
                w.joined.append(pick)
                pick.undecided = False  # decided with the set, at its seed's retry
                return True, None
            w.dropped = True
            if verdict == "accept":
                # With the picks that fit it but joined another set (or came before it waited).
                shot = self._decide([(self._complete_set(w.members, w.xy, w.t0_s, w.tol_s), w.xy, w.t0_s)],
                                    w.n_partners, [], w.tol_s)
                if shot is not None:
                    self.n_joined_waiting += 1
                    self._let_go(w.joined)  # those the shot did not take
                    return True, shot
            w.members.pop()
            if old is not None:
                w.members.insert(at, old)
            self._let_go(w.joined)
            return False, None
        return False, None

    def _repeat_candidates(self, pick: Pick, r: np.ndarray) -> tuple[list[int], np.ndarray, float]:
        """The recent places :meth:`_repeat_place` tries ``pick`` at (its node at ``r``), as shot-table rows;
        the emission times (s) that put the pick at every row's place; the hypotheses' tolerance (s).

        The shots within range emitted a round's gap before this pick's emission from their place, the
        latest first, of at least 2 x min_nodes picks, REPEAT_MAX_PLACES at most; of those one hypothesis
        per place, its latest round's (automatic fire lists every round, each a few centimetres from the
        others; dense scene: 15.0 of them per pick on average, at 4.0 places). The tolerance is the widest
        of the shots' attach windows (the largest CEP95 gives it). A place is worth trying where the
        negative evidence, the seed the only member (pending nodes with a matching onset counted as
        members), accepts, or waits with ``REPEAT_WAIT_SUPPORT`` supporters (dense scene: 357 of 5,963
        places). One compiled call (:func:`grid_kernels.repeat_candidates`): as the places, then the
        evidence's arrays and verdicts in Python, then its call, it cost 5 % more of the dense scene's CPU
        (paired rounds, ``scripts/bench/ab_hub.py``).
        """
        a, st = self.cfg.association, self.onsets
        places, t0, tol = grid_kernels.repeat_candidates(
            self._shot_xyt, float(r[0]), float(r[1]), self._dz2_at(r), pick.t_s, float(self.c), a.max_range_m**2,
            self.FRAGMENT_T0_S, self.REPEAT_MEMORY_S, 2 * a.min_nodes, self.REPEAT_MAX_PLACES, 1.0,
            self._fine_tol_s(), 5 * self._sigma_max + a.match_tolerance_s,
            self.watermark_s - self.DELIVERY_MARGIN_S, self.source_z_m, self._rows()[0],
            self._near_seed_rows(pick.node_id), st.row[pick.node_id], st.onsets, st.n, st.held, st.n_held,
            self._kernel_wind(), a.max_range_m, a.min_audible_range_m, 2 * a.min_nodes,  # (the evidence's inputs
            self._unheard_near_seed(pick.node_id), *self._evidence_rule(), self.REPEAT_WAIT_SUPPORT)  # but c, above)
        return places.tolist(), t0, tol

    #: A pick is tried as another round from the places of the shots emitted up to this long (s) before
    #: it would have been (and more than ``FRAGMENT_T0_S`` before: within that it is the same shot) ...
    REPEAT_MEMORY_S = 5.0
    #: ... the most recent of them at most.
    REPEAT_MAX_PLACES = 16
    #: A set at such a place waits for its source's later picks once the seed and one more node fit it.
    REPEAT_WAIT_SUPPORT = 2

    def _repeat_place(self, pick: Pick) -> tuple[bool, ShotState | None]:
        """Try a new pick as another round from where a recent shot was, before any grid search.

        Gunfire comes in rounds from one place (automatic fire, a shooter's
        several shots, a firework battery). The place of each recent shot,
        with the emission time that puts this pick's arrival there, is a
        hypothesis that costs one count of the nodes in range instead of a
        grid search (dense scene: ~5 searches per source, most of them before
        enough of its nodes had reported). Only shots of at least 2 x
        ``min_nodes`` picks lend their place: a smaller set can fit at a mirror
        position, which every later round would then be tried at. Rounds less
        than a metre apart (east and north) are one place, tried at its latest
        round's position (its earlier rounds' hypotheses differ by centimetres).

        The hypothesis' candidate set is the seed and, at each node in range,
        the pooled pick nearest the predicted arrival within the fine grid's
        tolerance (narrower where the shots' attach tolerance is); its
        negative evidence is counted as for a search's sets. "accept" locates
        it (:meth:`_decide`). "wait", with at least ``REPEAT_WAIT_SUPPORT``
        members, leaves it waiting for the source's later picks, which join it
        (:meth:`_join_waiting`) instead of searching; if the set makes no shot,
        the seed is searched at :meth:`retry` (it may be the first pick of a
        source elsewhere). Returns (handled, the shot made); a pick that no
        recent place explains searches as before.
        """
        a = self.cfg.association
        xyt = self._shot_xyt
        if not len(xyt):
            return False, None
        r = self.registry.enu(pick.node_id)
        tried, t0, tol = self._repeat_candidates(pick, r)
        for k in tried:
            xy = xyt[k, :2].copy()
            src = np.array((xy[0], xy[1], self.source_z_m))  # as the grid's points and the count above
            t0_k = pick.t_s - self._travel(src, r)
            members = self._complete_set([pick], xy, t0_k, tol)
            n_partners = max(len(self._rows_within_range(src)) - 1, len(members) - 1)
            self._waited = False
            ev = self._evidence(xy, t0_k, {p.node_id for p in members}, tol)
            if ev == "accept" and len(members) >= a.min_nodes:
                made = self._decide([(members, xy, t0_k)], n_partners, [], tol)
                if made is not None:
                    self.n_repeats += 1
                    return True, made
            elif ev == "wait" and len(members) >= self.REPEAT_WAIT_SUPPORT:
                pick.waiting = ([(members, xy, t0_k, tol)], n_partners)
                self._mark_waiting_members(pick)
                pick.unsearched = True
                self.pool.undecide(pick)
                self._add_waiting(_WaitingSet(pick, members, xy, t0_k, tol, n_partners))
                self.n_repeat_waits += 1
                return True, None
        return False, None

    #: A pick is tried at the places where searches refused every set less than this long (s) from the
    #: emission time it would have there ...
    REFUSED_MEMORY_S = 5.0
    #: ... the most recently refused of them at most.
    REFUSED_MAX_PLACES = 16
    #: Refused sets less than this far apart (m, east and north) are at one place.
    REFUSED_SAME_PLACE_M = 3.0
    #: A place is tried once searches refused sets there at this many emission times (more than
    #: ``FRAGMENT_T0_S`` apart). Where one refusal sufficed, 100 nodes at 49 impulses/s found 71 % of
    #: their sources instead of 88 %: a chance set's place, tried again, held back real picks.
    REFUSED_TIMES = 2

    def _note_refused(self, xy: np.ndarray, t0_s: float) -> None:
        """Count a place where a search refused every candidate set (the best one's grid point ``xy`` m,
        emission ``t0_s`` s)."""
        self._refused_known = None
        for k, (x, y, t_last, n) in enumerate(self._refused):
            if abs(x - xy[0]) < self.REFUSED_SAME_PLACE_M and abs(y - xy[1]) < self.REFUSED_SAME_PLACE_M:
                if abs(t0_s - t_last) > self.FRAGMENT_T0_S:
                    self._refused[k] = (x, y, t0_s, n + 1)
                return
        self._refused.append((float(xy[0]), float(xy[1]), t0_s, 1))
        if len(self._refused) > 4 * self.REFUSED_MAX_PLACES:
            self._refused = [q for q in self._refused if t0_s - q[2] < self.REFUSED_MEMORY_S][-2 * self.REFUSED_MAX_PLACES:]

    def _at_a_refused_place(self, pick: Pick) -> bool:
        """Whether a set at a place where searches keep refusing every candidate set holds ``pick`` and is
        refused again. Asked of a pick that would otherwise be searched: on arrival it is put off to
        :meth:`retry`, and there, asked again with every node's picks in, it is not searched.

        A wall returns each round of a shooter from one mirror place. The nodes on the shooter's side
        hear that ghost, the others do not: its picks fit a point source and the silent nodes refuse it,
        and each of its picks searched (on arrival and again at retry) to be refused the same way. Here
        the place, with the emission time that puts this pick's arrival there, costs one count of the
        nodes in range instead. The pick is held to be the ghost's when at least 2 x ``min_nodes`` nodes
        (its own among them) hold an onset that fits there and too many are silent. A pick of another
        source that falls on a ghost's arrival is left to that source's other picks, whose shot takes
        it. With ``min_nodes`` fitting nodes, 1,024 nodes with the dense scene's sources lost a
        firecracker; with 6, the dense scene with real echoes lost 2 sources; with 8, every bench scene
        makes the same shots as without the rule. Dense scene: 1,430 -> 1,194 grid searches (1,024
        nodes at 49 impulses/s: 4,093 -> 4,078; dense with real echoes: 10,533 -> 9,088).
        """
        if self._refused_known is None:
            known = [q[:3] for q in self._refused if q[3] >= self.REFUSED_TIMES][-self.REFUSED_MAX_PLACES:]
            self._refused_known = np.array(known, dtype=float).reshape(-1, 3)
        if not len(self._refused_known):
            return False
        a, st = self.cfg.association, self.onsets
        r = self.registry.enu(pick.node_id)
        # One compiled call, the places' emission times and their evidence (as the places in Python, then
        # the evidence's arrays, verdicts and call, the dense scene took ~7 % more CPU: paired rounds of
        # scripts/bench/ab_hub.py, ratios 0.906 and 0.934 in two runs of 24).
        refused = grid_kernels.refused_again(
            self._refused_known, float(r[0]), float(r[1]), self._dz2_at(r), pick.t_s, float(self.c),
            a.max_range_m**2, self.REFUSED_MEMORY_S, self._fine_tol_s(), self.watermark_s - self.DELIVERY_MARGIN_S,
            self.source_z_m, self._rows()[0], self._near_seed_rows(pick.node_id), st.row[pick.node_id], st.onsets,
            st.n, st.held, st.n_held, self._kernel_wind(), a.max_range_m, a.min_audible_range_m, 2 * a.min_nodes,  # (the evidence's
            self._unheard_near_seed(pick.node_id), *self._evidence_rule(), 2 * a.min_nodes)  # inputs but c, above)
        if refused:
            self.n_refused_places += 1
            if self._retrying:
                pick.undecided = False
        return refused

    def _complete_set(self, members: list[Pick], xy: np.ndarray, t0_s: float, tol_s: float) -> list[Pick]:
        """``members`` and, at each other node in range of a hypothesis (source ``xy`` m, emission
        ``t0_s`` s), the pooled pick nearest its predicted arrival, within ``tol_s`` of it
        (reverberation tails only where :meth:`_tails_take_part`), in the onset store's row order.

        One compiled call over the rows near the source (:func:`grid_kernels.set_completion`): as Python
        over node ids, with a travel time and a window per node, this was ~0.15 ms per set (dense scene).
        """
        out = list(members)
        if not len(self.onsets):
            return out  # (pooled picks are trusted, so their nodes are in the store)
        a, pool = self.cfg.association, self.pool
        xyz, grid = self._rows()
        pool_rows = self._pool_rows()  # (before the pool's arrays are read: it may grow them)
        row = self.onsets.row
        x, y = float(xy[0]), float(xy[1])
        tails, got, at = grid_kernels.set_completion(
            xyz, grid.near(x, y, a.max_range_m), a.max_range_m, x, y, self.source_z_m, float(t0_s), float(self.c),
            self._kernel_wind(), np.array([row[p.node_id] for p in members], dtype=np.int64), pool_rows,
            pool.times[0], pool.counts[0], pool.times[1], pool.counts[1], self.TAIL_PARTNER_IN_RANGE * a.min_nodes,
            float(tol_s))
        ids = self.onsets.ids
        out += [pool.pick_at(ids[r], k, tails) for r, k in zip(got.tolist(), at.tolist(), strict=True)]
        return out

    def _waiting_live(self, w: _WaitingSet) -> bool:
        """A waiting set can still take picks: not dropped, its seed not yet decided at retry, and
        none of its members claimed by a shot."""
        return (not w.dropped and w.seed.waiting is not None and not w.seed.settled
                and all(p.pooled for p in w.members))  # (p in self.pool: a call per member, ~7,000 sets a play)

    def _prune_waiting(self) -> None:
        """Forget waiting sets that can take no more picks (at each :meth:`retry`), letting their joined
        picks go."""
        live = []
        for w in self._waiting_sets:
            if self._waiting_live(w):
                live.append(w)
            else:
                self._let_go(w.joined)
        if len(live) != len(self._waiting_sets):
            self._waiting_sets = []
            for w in live:
                self._add_waiting(w)

    def _let_go(self, picks: list[Pick]) -> None:
        """Joined picks a waiting set no longer holds: searched at retry if still unassociated."""
        for p in picks:
            if p in self.pool and not p.settled:
                self.pool.undecide(p)

    #: Nearest partner nodes whose picks, in pairs with the seed's, fix exact candidate points
    #: (:meth:`_hypothesise`), and the most pick pairs enumerated per node pair.
    N_TRIPLET_NODES = 4
    MAX_TRIPLET_PAIRS = 128

    def _decide(self, sets: list[tuple[list[Pick], np.ndarray, float]], n_partners: int,
                waiting: list[tuple[list[Pick], np.ndarray, float, float]], tol_s: float) -> ShotState | None:
        """Locate candidate sets (best first) and make a shot of the best one that fits, if any.

        ``n_partners``: nodes with candidate picks besides the seed's. Sets whose
        fit waited for pending nodes are added to ``waiting`` (with ``tol_s``,
        their evidence window) for :meth:`retry`.
        """
        a = self.cfg.association
        # Locate candidates best first; the set that explains the most nodes
        # with the best fit wins (periodic fire makes shifted sets nearly fit
        # too). A set whose every member is used cannot be beaten by a later,
        # lower-scoring one: stop there.
        best = None
        for members, xy, t0 in sets:
            # A robust solve costs ~3 ms and most dense-scene candidate sets are chance
            # alignments it would cut to 4-5 nodes that the silent nodes then contradict:
            # decide that first with a cheap fit from the grid point.
            if len(members) >= self.QUICK_MIN_SET and not self._quick_consensus(members, xy, t0):
                self.n_quick_rejects += 1
                continue
            waited, self._waited = self._waited, False
            fit = self._fit(members, start=(xy, t0))
            if self._waited:
                waiting.append((members, xy, t0, tol_s))
            self._waited = self._waited or waited
            if fit is None:
                continue
            sol, used = fit
            if len(members) >= 2 * a.min_nodes and len(used) <= a.min_nodes and n_partners + 1 >= 2 * a.min_nodes:
                # The robust solve cut a larger candidate set down to min_nodes: with one
                # redundant pick such a remnant fits by chance (dense fire: 8 of 9 false
                # shots of the dense scene). Where twice min_nodes nodes could take part, a
                # min_nodes set must come from the grid whole. Small arrays (Pittsburgh:
                # 4-6 sensors, one often off by an echo) keep their cut-down sets.
                self.n_cut_sets += 1
                continue
            if len(used) < self.TAIL_SET_MIN * a.min_nodes and any(p.tail for p in used):
                # A set with reverberation tails must be large (see TAIL_SET_MIN).
                self.n_tail_sets += 1
                continue
            rank = (sol.n_used, -sol.chi2_reduced)
            if best is None or rank > best[0]:
                best = (rank, used, sol)
            if len(used) == len(members) and len(members) >= len(sets[0][0]):
                break
        if best is None:
            return None
        used, sol = self._first_arrivals(best[1], best[2])
        return self._create(used, sol)

    #: Earlier alternatives tried per member node, and candidate sets located at most, by
    #: :meth:`_first_arrivals` (4-6 node arrays have one or two echoes per node to try).
    FIRST_ARRIVAL_ALTS = 2
    #: Each candidate set costs a full solve (1-3 ms): 16 keep the incident latency
    #: within budget in dense scenes (64: p99 243 ms) and find the same sets on
    #: the Pittsburgh recordings as 64 (8 lose some: 87 % within 15 m instead of 90 %).
    FIRST_ARRIVAL_MAX_SETS = 16

    def _first_arrivals(self, members: list[Pick], sol: Solution) -> tuple[list[Pick], Solution]:
        """The fitted set with each node's direct arrival rather than an echo of it.

        A reflection travels a longer path than the direct sound, so it
        arrives later and (within clipping) no louder. With one or two
        redundant picks (4-6 nodes in 2-D) a set in which some nodes hold an
        echo still fits within the timing errors, only at the wrong place
        (Pittsburgh FP1: the two nodes nearest the shooter held echoes 80-110 ms
        late in most rounds off by more than 15 m). So every member node's
        pooled picks up to ``reverb_s`` earlier and no more than
        ``reverb_drop_db`` weaker are tried in its place; among the
        alternative sets that fit as well (:meth:`_fit`, every member used,
        as many nodes), the one with the earliest arrivals (smallest sum of
        onsets) is the shot. Its later picks stay in the pool, where they are
        recognised as the shot's echoes.
        """
        a = self.cfg.association
        if a.reverb_s <= 0 or len(members) >= 2 * a.min_nodes:
            # Twice min_nodes picks: the robust solve's consensus outvotes an echo (it is an outlier
            # among many direct arrivals); trading picks there only moves fits that are right.
            # Smaller sets keep the alternatives also in a busy network (dense scene: 495 of 2,494
            # solves): skipped there, a small shot's re-decision at each flush (_refine_small_shot)
            # did the work later, inside the message path (demo: p99 latency 116-127 ms in 3 of 6
            # runs; 21-56 ms in 7 runs with the alternatives here).
            return members, sol
        options = []
        for p in members:
            options.append([p] + self._earlier_alternatives(p, self.FIRST_ARRIVAL_ALTS))
        if all(len(o) == 1 for o in options):
            return members, sol
        combos = sorted(itertools.product(*options), key=lambda c: sum(q.t_s for q in c))
        best_sum = sum(p.t_s for p in members)
        tried = 0
        for combo in combos:
            s = sum(q.t_s for q in combo)
            if s >= best_sum or tried >= self.FIRST_ARRIVAL_MAX_SETS:
                break
            tried += 1
            fit = self._fit(list(combo))
            if fit is not None and len(fit[1]) == len(combo):
                log.debug("first arrivals replace %d picks", sum(q is not p for q, p in zip(combo, members, strict=True)))
                return fit[1], fit[0]
        return members, sol

    def _earlier_alternatives(self, p: Pick, n: int) -> list[Pick]:
        """The latest ``n`` pooled picks of ``p``'s node that may be the direct arrival ``p`` echoes.

        Up to ``reverb_s`` earlier, no more than ``reverb_drop_db`` weaker, trusted, not tails.
        Within the match tolerance two picks are one arrival to the association (the locator's
        weights decide between them): only clearly earlier picks qualify.
        """
        a = self.cfg.association
        _, ps = self.pool.window(p.node_id, p.t_s - a.reverb_s, p.t_s - a.match_tolerance_s, tails=False)
        alts = [q for q in ps if q is not p and q.trusted and q.det.peak_dbfs >= p.det.peak_dbfs - a.reverb_drop_db]
        return alts[-n:]

    def _coarse_grid(self) -> np.ndarray:
        """Offsets (m) of the coarse hypothesis grid: a disc of radius max_range_m (cached)."""
        if self._grid_cache is None:
            a = self.cfg.association
            n_half = int(np.ceil(a.max_range_m / a.grid_step_m))
            g = np.arange(-n_half, n_half + 1) * a.grid_step_m
            gx, gy = np.meshgrid(g, g, indexing="xy")
            inside = gx**2 + gy**2 <= a.max_range_m**2
            self._grid_cache = np.stack([gx[inside], gy[inside]], axis=1)
        return self._grid_cache

    #: Cauchy scales (s) of the quick fit's reweighted Gauss-Newton steps, wide to narrow.
    _QUICK_SCALES_S = np.array((3e-3, 1e-3, 3e-4, 1e-4, 1e-4))

    def _quick_consensus(self, members: list[Pick], xy: np.ndarray, t0_s: float) -> bool:
        """Whether a candidate set may pass :meth:`_fit`, from a cheap robust fit (no closed form, no scipy).

        Starting at the grid point (within a metre of the source), a few
        Gauss-Newton steps on (x, y, t0) with Cauchy weights of shrinking
        scale (still air, the assumed source height) find the consensus; its
        inliers (residual within twice the locator's outlier threshold) must
        number ``min_nodes`` and the nodes in range must not be silent
        (:meth:`_evidence`). Sets that fail would fail the full robust solve
        in nearly every case; the rest get it.
        """
        a = self.cfg.association
        loc = self.cfg.location
        pos = np.array([self.registry.enu(p.node_id) for p in members])
        t = np.array([p.t_s for p in members])
        sig = np.array([self._sigma(p) for p in members])
        dz2 = np.zeros(len(members)) if loc.mode == "2d" else (pos[:, 2] - self.source_z_m) ** 2
        c = self.c
        x, y, t0, solved = grid_kernels.quick_fit(np.ascontiguousarray(pos, dtype=float), t, sig, dz2, float(xy[0]),
                                                  float(xy[1]), float(t0_s), c, self._QUICK_SCALES_S)
        if not solved:
            return True  # degenerate here: leave it to the full solve
        dx = pos[:, 0] - x
        dy = pos[:, 1] - y
        res = t - t0 - np.sqrt(dx * dx + dy * dy + dz2) / c
        thr = 2.0 * np.sqrt((4.0 * sig) ** 2 + self.QUICK_FLOOR_S**2)
        inl = np.abs(res) <= thr
        if int(inl.sum()) < a.min_nodes:
            return False
        tol = self.QUICK_EVIDENCE_S + 5 * loc.timing_sigma_s + a.match_tolerance_s
        ids = {p.node_id for p, ok in zip(members, inl.tolist(), strict=True) if ok}
        return self._evidence(np.array([x, y]), t0, ids, tol) == "accept"

    #: Smallest candidate set screened by the quick fit: large sets in a dense scene are mostly
    #: chance alignments; small ones (4-6 node arrays, whose real picks are off by milliseconds
    #: from the planar model) go straight to the robust solve, which handles them better.
    QUICK_MIN_SET = 7
    #: Model floor (s) of the quick fit's inlier test (the locator's default).
    QUICK_FLOOR_S = 100e-6
    #: Position-uncertainty part (s) of the quick fit's evidence window.
    QUICK_EVIDENCE_S = 0.002

    def _fit(self, members: list[Pick], start: tuple[np.ndarray, float] | None = None
             ) -> tuple[Solution, list[Pick]] | None:
        """Locate a candidate set; return (solution, the picks it used) if it fits and silent nodes agree.

        ``start``: the grid point (ENU m, emission time s) the set was chosen at (see :meth:`_solve`).
        """
        sol = self._solve(members, start=start)
        if sol is None:
            return None
        if not sol.used.all():
            # Keep the solution aligned with the picks it holds: rejected
            # picks go back to the pool, where they may belong to another shot.
            members = [p for p, u in zip(members, sol.used, strict=True) if u]
            sol = self._solve(members, start=None if start is None else (np.asarray(sol.position_m), sol.t0_s))
            if sol is None or not sol.used.all():
                return None
        if not self._small_set_fits(sol, members):
            return None
        if self._silent_nodes_agree(sol, {p.node_id for p in members}) != "accept":
            return None
        if len(members) < 2 * self.cfg.association.min_nodes and self._burst_inconsistent(members):
            self.n_burst_rejects += 1
            return None
        return sol, members

    def _small_set_fits(self, sol: Solution, members: list[Pick]) -> bool:
        """A new shot from few nodes must fit as well as its timing errors allow.

        With one or two redundant picks (4 or 5 nodes in 2-D) a chance
        alignment of picks from different sources fits within the robust
        solver's outlier threshold easily (dense automatic fire, echoes); it
        does not pass a chi-square test at the nodes' own timing sigma. Larger
        sets are left to the robust solver: their model errors (pick lag with
        distance, wind) would fail a strict test while chance alignments of
        many nodes do not happen.
        """
        a = self.cfg.association
        dof = sol.n_used - (sol.dims + 1)
        if dof > a.strict_fit_max_dof or dof < 1:
            return True
        sig = np.array([self._sigma(p) for p in members])
        chi2 = float(np.sum((np.asarray(sol.residuals_s) / sig) ** 2))
        return float(_chi2_sf(chi2, dof)) >= a.min_fit_p

    def _explained_by(self, members: list[Pick], sol: Solution) -> tuple[ShotState, str] | None:
        """The recent shot that already explains this set, and how ("echo" or "fragment"); None if none.

        * echo: the emission time of a recent shot and, at every shared node,
          a later pick (an image-source ghost, see the module docstring);
        * fragment: most members were rejected by one recent shot, or the set
          sits where that shot is (within 3 CEP95, at least 10 m) and within
          ``FRAGMENT_T0_S`` of it: the leftovers of one shot (late picks,
          millisecond-rounded times) re-fitted with a slightly shifted
          emission time, not a second shot.
        """
        t_sig = sol.t0_sigma_s
        pos = np.asarray(sol.position_m, float)[:2]
        for shot in self.shots:
            dt0 = abs(shot.t0_s - sol.t0_s)
            if dt0 > 1.0:
                continue
            if dt0 <= GHOST_T0_TOL_S + 3 * (t_sig + shot.solution.t0_sigma_s):
                shared = [p for p in members if p.node_id in shot.picks]
                if (shared and all(p.t_s > shot.picks[p.node_id].t_s + 3 * self._sigma(p) for p in shared)
                        and self._farther_than_shot(members, pos, shot)):
                    return shot, "echo"
            if dt0 <= self.FRAGMENT_T0_S:
                n_rej = sum(1 for p in members if shot.shot_id in p.rejected_by)
                near = 3 * (sol.cep95_m + shot.solution.cep95_m) + 10.0
                if 2 * n_rej >= len(members) or math.hypot(*(shot.enu_m[:2] - pos)) <= near:
                    return shot, "fragment"
        return None

    def _farther_than_shot(self, members: list[Pick], pos: np.ndarray, shot: ShotState) -> bool:
        """Whether every member node is at least as far from ``pos`` (E, N m) as from the shot, horizontally
        (within ``GHOST_T0_TOL_S`` of travel): as from an image source, whose reflected path is never
        shorter than the direct one. A node that did not hear the shot has no pick to compare; its
        distance still tells a reflection from a second source that happened to fire at the same time
        (dense scene: a firecracker 1.6 ms after a round, sharing one node with it; six of its seven
        other nodes lie nearer the firecracker than the shooter)."""
        slack = self.c * GHOST_T0_TOL_S
        for p in members:
            r = self.registry.enu(p.node_id)
            if math.hypot(r[0] - pos[0], r[1] - pos[1]) < math.hypot(r[0] - shot.enu_m[0], r[1] - shot.enu_m[1]) - slack:
                return False
        return True

    FRAGMENT_T0_S = 0.03
    """Two sets from one place whose emission times differ by less than this (s) are one shot
    (no firearm fires faster than ~1,800 rounds/min = 33 ms)."""

    #: Burst consistency of small sets (:meth:`_burst_inconsistent`): other rounds are looked for
    #: within this many seconds of each member (semi-automatic intervals 0.4-1.8 s on Pittsburgh) ...
    BURST_WINDOW_S = 2.0
    #: ... a node with no pick at all within this (s) of another round's predicted time there
    #: contradicts that round (a round's own later arrivals and echoes at a node lie within ~35 ms) ...
    BURST_FAR_S = 0.05
    #: ... and this many member nodes must show the other round (same offset, same level).
    BURST_MIN_SUPPORT = 2

    def _burst_inconsistent(self, members: list[Pick]) -> bool:
        """Whether a small candidate set mixes picks of different rounds of one burst.

        Rounds fired from one place reach every node with the same arrival-time
        differences and, from the same gun, at about the same level: seen from
        each member node relative to its member pick, the other rounds of a burst
        sit at one common offset D at every member. A chance set made of picks
        of different rounds (Pittsburgh FP2: semi-automatic fire, the direct
        arrival of one round with echoes of another, 100-900 ms apart) does
        not: another round lines up at some members while the others have
        nothing at all within ``BURST_FAR_S`` of where it would be.

        Refused: no offset is supported by every member, and some offset is
        supported (a pick within 3 sqrt(2) timing sigmas, the difference of two
        picks, and within ``reverb_drop_db`` of the member's level) by at least
        ``BURST_MIN_SUPPORT`` members with every other member clearly silent
        there (it has other picks in the window, none within ``BURST_FAR_S``).
        A node that heard nothing else is no evidence; a set of one round with
        no other rounds near is never refused. Uses the picks the hub has when
        it decides (any state: pooled, held, tails), so a chance set formed
        before the next round arrives is not caught; fire at a perfectly
        constant rate defeats it.
        """
        tol = 3.0 * math.sqrt(2.0) * self.cfg.location.timing_sigma_s
        level_db = self.cfg.association.reverb_drop_db
        w = self.BURST_WINDOW_S
        seqs = []
        for p in members:
            lv = self._levels.get(p.node_id, [])
            lo = bisect.bisect_left(lv, (p.t_s - w, -math.inf))
            hi = bisect.bisect_right(lv, (p.t_s + w, math.inf))
            offs = [(t - p.t_s, pk) for t, pk in lv[lo:hi] if abs(t - p.t_s) >= self.FRAGMENT_T0_S]
            seqs.append((p.t_s, p.det.peak_dbfs, lv, offs))
        bad = False
        for d in sorted(d for _, pk0, _, offs in seqs for d, pk in offs if abs(pk - pk0) <= level_db):
            sup = far = 0
            for t, pk0, lv, offs in seqs:
                dt, pk = _nearest_level(lv, t + d)
                if dt <= tol and abs(pk - pk0) <= level_db:
                    sup += 1
                elif offs and dt > self.BURST_FAR_S:
                    far += 1
            if sup == len(seqs):
                return False  # another round lines up at every member node: one place, one burst
            if sup >= self.BURST_MIN_SUPPORT and far and sup + far == len(seqs):
                bad = True  # lines up at some members, clearly absent at all the others
        return bad

    def _new_shot_id(self, members: list[Pick]) -> str:
        """A new shot's id: the next of the counter, or, after a restart, the stored shot that these picks made
        before (:attr:`adopt_shot_id`)."""
        if self.adopt_shot_id is not None:
            got = self.adopt_shot_id([p.det.detection_id for p in members])
            if got is not None:
                return got
        return f"s{next(self._ids):06d}"

    def _create(self, members: list[Pick], sol: Solution) -> ShotState | None:
        """Make a shot of a fitted set, take its picks out of the pool, attach pooled picks that fit."""
        explained = self._explained_by(members, sol)
        self.pool.discard_many(members)
        if explained is not None:
            shot, how = explained
            shot.echoes.extend(members)
            if how == "echo":
                self.n_echo_ghosts += 1
            else:
                self.n_fragments += 1
            log.debug("%s of %s at %s dropped", how, shot.shot_id, np.round(sol.position_m, 1))
            return None
        picks = {p.node_id: p for p in members}
        shot = ShotState(
            shot_id=self._new_shot_id(members),
            picks={},
            solution=sol,
            enu_m=np.zeros(3),
            t0_s=sol.t0_s,
            created_ns=members[0].received_ns,
            last_pick_received_ns=0,
        )
        self._set_solution(shot, picks, sol, max(p.received_ns for p in picks.values()))
        shot.slot = len(self.shots)
        self.shots.append(shot)
        self._shot_xyt = np.vstack([self._shot_xyt, [self._table_row(shot)]])
        # Pooled picks that arrived before the shot existed may belong to it: per node, those
        # within the widest attach tolerance of the predicted arrival, offered in onset order.
        joined = False
        for p in sorted(self._near_arrivals(shot), key=lambda p: p.t_s):
            if self._attach(p, only=shot) is shot:
                self.pool.remove(p)
                joined = True
        if joined:
            self.flush([shot])
        return shot

    #: Delivery margin (s): a node is taken to be past a predicted arrival once the watermark is
    #: this much beyond it, even if it has sent nothing since (a quiet node on a quiet night).
    DELIVERY_MARGIN_S = 0.5
    #: Share of the in-range nodes whose support makes a hypothesis final while others are still pending.
    CONFIRM_FRACTION = 0.4

    def _evidence(self, xy: np.ndarray, t0_s: float, members: set[str], tol_s: float,
                  nodes: np.ndarray | None = None) -> str:
        """Negative evidence from the nodes in range that are not members: "accept", "reject" or "wait"
        (``nodes``: the onset-store rows near ``xy``, sorted, if known; see :meth:`_waiting_evidence`).

        Picks from one node arrive in time order, so a node whose latest pick
        (or the watermark, less a delivery margin) is later than a
        hypothesis' predicted arrival there, yet has no pick near it, is
        *silent* and speaks against the hypothesis. A few such nodes are
        normal (missed detections, shadowed nodes); many mean a chance
        alignment of picks from different sources. Nodes not yet past the
        predicted arrival are *pending*: while many are, a hypothesis backed
        by few nodes waits for them (the wait window) instead of becoming a
        shot that later evidence would contradict. The window is the timing
        and model tolerance: a wider one would find some pick at every node
        of a busy network.
        """
        if not len(self.onsets):
            return "accept" if len(members) >= self.cfg.association.min_nodes else "wait"
        xyz, grid = self._rows()
        x, y = float(xy[0]), float(xy[1])
        if nodes is None:
            nodes = grid.near(x, y, self.cfg.association.max_range_m)
        row = self.onsets.row
        unheard = (0 if self._retrying or self._unheard_over_now()
                   else int(self._unheard_in_range(np.array([[x, y]]))[0]))
        code = grid_kernels.evidence_of_set(
            x, y, float(t0_s), float(tol_s), self.watermark_s - self.DELIVERY_MARGIN_S, self.source_z_m, xyz, nodes,
            np.array([row[n] for n in members if n in row], dtype=np.int64), len(members), *self._evidence_inputs(),
            unheard, *self._evidence_rule())
        got = _VERDICTS[code]
        if got == "wait":
            self._waited = True
        return got

    def _waiting_evidence(self, w: _WaitingSet) -> str:
        """:meth:`_evidence` of a waiting set with its members now. The onset-store rows near its point
        are kept with the set until a node reports for the first time or a position moves: a set is
        counted again at every join (~14 times per source on a clean 1,024-node stream)."""
        key = self._near_rows_key()
        if w.near is None or w.near[0] != key:
            w.near = (key, self._rows()[1].near(float(w.xy[0]), float(w.xy[1]), self.cfg.association.max_range_m))
        return self._evidence(w.xy, w.t0_s, {p.node_id for p in w.members}, w.tol_s, nodes=w.near[1])

    def _near_rows_key(self) -> tuple[int, int]:
        """What the onset-store rows near a point depend on: positions (the registry's version) and the nodes
        that have reported (rows are only appended), so kept answers hold until a node first reports or a
        position moves."""
        return self.registry.version, len(self.onsets)

    def _evidence_many(self, xy: np.ndarray, t0_s: np.ndarray, member_idx: np.ndarray, fits: np.ndarray,
                       seed_id: str, tol_s: float, matched_join: bool = False, with_support: bool = False):
        """:meth:`_evidence` at P hypotheses at once (without setting ``_waited``): sources ``xy`` (P, 2) m,
        emission times ``t0_s`` (P,) s; the members are the seed's node and, per hypothesis, the partner
        nodes where ``fits`` (K, P) holds, ``member_idx`` (K,) their rows in the onset store (the
        hypotheses lie within ``max_range_m`` of the seed's node). ``matched_join``: pending nodes that
        already hold a matching onset count as members (the verdict once those picks join the set).
        ``with_support``: also return each hypothesis' supporting nodes (members and agreeing)."""
        if not len(self.onsets):
            n_mem = fits.sum(axis=0) + 1
            got = ["accept" if n >= self.cfg.association.min_nodes else "wait" for n in n_mem]
            return (got, n_mem.tolist()) if with_support else got
        xyz, _ = self._rows()
        nodes = self._near_seed_rows(seed_id)
        xy = np.ascontiguousarray(xy, dtype=float)
        if self._retrying or self._unheard_over_now():
            unheard = _zeros(len(xy))
        else:
            unheard = self._unheard_in_range(xy)
        code, support, found = grid_kernels.evidence_of_sets(
            xy, np.asarray(t0_s, float), float(tol_s), self.watermark_s - self.DELIVERY_MARGIN_S, self.source_z_m,
            xyz, nodes, np.asarray(member_idx, dtype=np.int64), self.onsets.row[seed_id], np.ascontiguousarray(fits),
            *self._evidence_inputs(), unheard, matched_join, *self._evidence_rule())
        # Partners lie within 2 max_range_m of the seed (_neighbours), so the index holds them all.
        assert found
        got = [_VERDICTS[c] for c in code.tolist()]
        return (got, support.tolist()) if with_support else got

    def _near_seed_rows(self, seed_id: str) -> np.ndarray:
        """The onset-store rows within 2 ``max_range_m`` of a seed's node (a hypothesis from it lies within
        ``max_range_m``, its nodes within that again), kept per seed node (as a waiting set's,
        :meth:`_waiting_evidence`)."""
        key = self._near_rows_key()
        got = self._near_seed.get(seed_id)
        if got is None or got[0] != key:
            r_seed = self.registry.enu(seed_id)
            got = self._near_seed[seed_id] = (key, self._rows()[1].near(float(r_seed[0]), float(r_seed[1]),
                                                                        2 * self.cfg.association.max_range_m))
        return got[1]

    def _evidence_inputs(self) -> tuple:
        """The evidence kernels' (:func:`grid_kernels.evidence_codes`) inputs from the onset store and the
        physics: every node's recent and held onsets with their counts, c, the wind, the audible range and
        its least reach, and the supporting nodes that make the reach the second farthest."""
        st, a = self.onsets, self.cfg.association
        return (st.onsets, st.n, st.held, st.n_held, self.c, self._kernel_wind(), a.max_range_m,
                a.min_audible_range_m, 2 * a.min_nodes)

    def _evidence_rule(self) -> tuple[float, float, int]:
        """The evidence rule's parameters (:func:`grid_kernels.verdict_codes`): the silent share that refuses,
        the supporting share that confirms while nodes are pending, the least supporting nodes."""
        a = self.cfg.association
        return a.max_silent_fraction, self.CONFIRM_FRACTION, a.min_nodes

    def _kernel_wind(self) -> np.ndarray:
        """The wind (3,) m/s for the kernels: zeros in still air."""
        return self.wind_enu_mps if self.wind_enu_mps is not None else _NO_WIND

    def _unheard_over_now(self) -> bool:
        """Whether :meth:`_unheard_in_range` counts no node anywhere now (its wait window is over, for these
        positions and this c): a check of one tuple, where a call builds arrays."""
        return self._unheard_over == (self.registry.version, self.c)

    def _unheard_in_range(self, xy: np.ndarray) -> np.ndarray:
        """Located nodes within ``max_range_m`` of each point ``xy`` (P, 2) m that have reported no pick since
        the hub started: (P,) counts.

        A hub that has just started cannot tell a quiet node from one whose
        picks are still on their way, so such nodes count as *pending* for a
        new hypothesis: it waits (dense scene: the first burst made 4-5 node
        chance sets of nodes that had reported, while most had not yet). When
        the wait window has passed (:meth:`retry`) they are left out: a node
        that never reports is not evidence. So they are counted only for one
        wait window after the hub's first pick: any pick a node made before
        then has arrived, and a node still unheard is quiet, deaf or broken
        (counted pending, it held every hypothesis near it back until retry).
        """
        if not len(xy):
            return np.zeros(0, dtype=np.int64)
        r = self.cfg.association.max_range_m
        # The points lie close together (one search's candidates): the nodes near them all, at once,
        # rather than every unheard node of a city (10,000-node bench: 7 % of the CPU).
        centre = xy.mean(axis=0)
        spread = float(np.sqrt(np.max(np.sum((xy - centre) ** 2, axis=1)))) if len(xy) > 1 else 0.0
        xy_n = self._unheard_near(float(centre[0]), float(centre[1]), r + spread)
        if not len(xy_n):
            return np.zeros(len(xy), dtype=np.int64)
        d2 = (xy_n[None, :, 0] - xy[:, 0, None]) ** 2 + (xy_n[None, :, 1] - xy[:, 1, None]) ** 2
        return np.count_nonzero(d2 <= r * r, axis=1)

    def _unheard_near(self, x: float, y: float, reach_m: float) -> np.ndarray:
        """Positions (U, 2) m of the located nodes never heard from that :meth:`_unheard_in_range` counts,
        among those within ``reach_m`` of (``x``, ``y``) m (and some farther: the index's buckets); (0, 2)
        once its wait window is over or when every node has reported."""
        if self._unheard_over_now() or self._t_first_s is None:
            return _NO_POINTS
        if self.watermark_s - self._t_first_s > self.horizon_s():
            # (the watermark only grows; a new node or another speed of sound may widen the window)
            self._unheard_over = (self.registry.version, self.c)
            return _NO_POINTS
        c = self._unheard_cache
        if c is None or c.version != self.registry.version:
            ids, xy_all = self._located_nodes()
            c = self._unheard_cache = _Unheard(self.registry.version, {n: i for i, n in enumerate(ids)}, xy_all,
                                               np.zeros(len(ids), dtype=bool), 0)
        if c.rows_seen < len(self.onsets):
            for nid in self.onsets.ids[c.rows_seen:]:
                i = c.index.get(nid)
                if i is not None:
                    c.heard[i] = True
            c.rows_seen = len(self.onsets)
            c.n_unheard = -1
        if c.n_unheard < 0:
            c.n_unheard = int(np.count_nonzero(~c.heard))
        if not c.n_unheard:
            # Every located node has reported (a small network soon after the start): none to count.
            return _NO_POINTS
        rows = self._located_index().near(x, y, reach_m)
        return np.ascontiguousarray(c.xy[rows[~c.heard[rows]]], dtype=float)

    def _unheard_near_seed(self, seed_id: str) -> np.ndarray:
        """:meth:`_unheard_near` a seed's node within 2 ``max_range_m`` (its hypotheses' nodes all are), for the
        kernels that count them (:func:`grid_kernels.repeat_candidates`, :func:`grid_kernels.refused_again`);
        none when retrying (at :meth:`retry` a node never heard from is not evidence)."""
        if self._retrying or self._unheard_over_now():
            return _NO_POINTS
        r_seed = self.registry.enu(seed_id)
        return self._unheard_near(float(r_seed[0]), float(r_seed[1]), 2 * self.cfg.association.max_range_m)

    def _silent_nodes_agree(self, sol: Solution, members: set[str]) -> str:
        """:meth:`_evidence` at a located solution."""
        tol = (min(2.0 * sol.cep95_m / self.c, 0.01) + 5 * self.cfg.location.timing_sigma_s
               + self.cfg.association.match_tolerance_s)
        return self._evidence(np.asarray(sol.position_m, float)[:2], sol.t0_s, members, tol)

    # -- location -----------------------------------------------------------
    def _dims_for(self, pos: np.ndarray) -> tuple[int, np.ndarray, float]:
        """(dims, positions to solve with, source height) for the configured mode and these nodes."""
        loc = self.cfg.location
        mode = loc.mode
        if mode == "2d":
            return 2, pos[:, :2], 0.0
        if mode == "3d" or (
            mode == "auto" and len(pos) >= 6 and float(np.std(pos[:, 2])) >= loc.min_vertical_spread_m
        ):
            return 3, pos, self.source_z_m
        return 2, pos, self.source_z_m

    def _solve(self, picks: list[Pick], near: ShotState | None = None,
               start: tuple[np.ndarray, float] | None = None) -> Solution | None:
        """Locate picks robustly; ``near``: a shot whose solution is close (started from, no consensus search;
        the consensus decides if a pick does not fit there). ``start``: (ENU position m, emission time s) of
        the grid point the picks were chosen at (within a fine cell of their source): the robust fit
        starts there, and its outcome stands."""
        a = self.cfg.association
        loc = self.cfg.location
        if len(picks) < a.min_nodes:
            return None
        self.n_solves += 1
        pos = np.array([self.registry.enu(p.node_id) for p in picks])
        # In the associator's reference: seconds since its first whole second (the locator solves relative to
        # the earliest pick, and its solution's time comes back in this reference).
        t = np.array([p.t_s for p in picks])
        floor = loc.timing_sigma_s
        sig = np.array([max(floor, p.det.onset_sigma_s) for p in picks])  # (:meth:`_sigma` of each, inline)
        dims, pos_used, height = self._dims_for(pos)
        wind = self.wind_enu_mps
        if wind is not None and pos_used.shape[1] == 2:
            wind = wind[:2]
        kw = dict(c_mps=self.c, sigma_s=sig, dims=dims, source_height_m=height, robust=True, wind_enu_mps=wind)
        try:
            sol = None
            if start is not None and not loc.solve_speed_of_sound:
                xyz = np.array([start[0][0], start[0][1], self.source_z_m])
                sol = locate(pos_used, t, start=(xyz, start[1]), **kw)
                if not sol.converged:
                    sol = None
            elif near is not None and not loc.solve_speed_of_sound:
                sol = locate(pos_used, t, start=(near.enu_m, near.t0_s), **kw)
                if not (sol.converged and (sol.n_used == len(picks) or self._stays(sol.n_used, len(picks)))):
                    # Picks do not fit where the shot was: let the consensus decide afresh
                    # (the joined picks may move the shot to where it really is).
                    sol = None
            if sol is None:
                sol = locate(pos_used, t, solve_c=loc.solve_speed_of_sound, **kw)
            if loc.solve_speed_of_sound and sol.covariance.shape[0] > dims + 1:
                c_sig = float(np.sqrt(sol.covariance[-1, -1]))
                if not (c_sig <= loc.max_speed_of_sound_sigma_mps and 300.0 <= sol.c_mps <= 380.0):
                    sol = locate(pos_used, t, **kw)  # the geometry does not determine c
        except LocateError as exc:
            log.debug("locate failed: %s", exc)
            return None
        if not sol.converged or sol.n_used < a.min_nodes or sol.rms_residual_s > a.max_rms_residual_s:
            return None
        return sol

    def _stays(self, n_used: int, n_picks: int) -> bool:
        """Whether a re-fit from a shot's last solution that used ``n_used`` of ``n_picks`` picks (rejecting
        some) stands without the consensus over subsets: at least 2 x ``min_nodes`` and three quarters
        of the picks agree where the shot was. Dense scene: of 388 such re-fits the consensus moved none
        by more than 3.4 cm (it kept one marginal pick more or less in 44); a 15-node consensus fit takes 2.8-3.3 ms.
        Fewer (a shot of 5 of 13 picks) can be in the wrong place, and the consensus moves them."""
        return n_used >= 2 * self.cfg.association.min_nodes and n_used >= 0.75 * n_picks

    @staticmethod
    def _table_row(shot: ShotState) -> tuple[float, float, float, float, int, float]:
        """A shot's row in the shot table (:attr:`_shot_xyt`)."""
        return (shot.enu_m[0], shot.enu_m[1], shot.t0_s, shot.enu_m[2], len(shot.picks), shot.solution.cep95_m)

    def _set_solution(self, shot: ShotState, picks: dict[str, Pick], sol: Solution, received_ns: int) -> None:
        for p in shot.picks.values():
            if picks.get(p.node_id) is not p:
                self._unclaim(p)
        for p in picks.values():
            if shot.picks.get(p.node_id) is not p:
                self.onsets.hold(p.node_id, p.t_s)
        shot.picks = picks
        shot.solution = sol
        pos = np.asarray(sol.position_m, dtype=float)
        z = pos[2] if (len(pos) > 2 and sol.dims == 3) else self.source_z_m
        shot.enu_m = np.array([pos[0], pos[1], z])
        shot.t0_s = sol.t0_s
        if shot.slot >= 0:
            self._shot_xyt[shot.slot] = self._table_row(shot)
        shot.last_pick_received_ns = max(shot.last_pick_received_ns, received_ns)
        shot.revision += 1


@functools.lru_cache(maxsize=16)
def _sub_cells(step: float, sub: int) -> np.ndarray:
    """Offsets (sub * sub, 2) m of the centres of a cell of side ``step`` m split into sub x sub
    (cached: the search splits cells of the same few sizes every time; do not modify)."""
    f = (np.arange(sub) - (sub - 1) / 2) * (step / sub)
    fx, fy = np.meshgrid(f, f, indexing="xy")
    return np.stack([fx.ravel(), fy.ravel()], axis=1)


def _note_in_set_of(p: Pick, seed: Pick) -> None:
    """Note that a set of ``seed`` took ``p`` as a member (``Pick.in_sets_of``, each seed once)."""
    if p.in_sets_of is None:
        p.in_sets_of = [seed]
    elif seed not in p.in_sets_of:
        p.in_sets_of.append(seed)


def _nearest_level(lv: list[tuple[float, float]], t: float) -> tuple[float, float]:
    """In a node's sorted (onset s, peak dBFS) history: |onset - t| (s) and the peak of the onset nearest ``t``."""
    j = bisect.bisect_left(lv, (t, -math.inf))
    best = (math.inf, 0.0)
    for k in (j - 1, j):
        if 0 <= k < len(lv) and abs(lv[k][0] - t) < best[0]:
            best = (abs(lv[k][0] - t), lv[k][1])
    return best


def _chi2_sf(x: float, dof: int) -> float:
    from scipy.stats import chi2

    return float(chi2.sf(x, dof))


def _subset(sol: Solution, used: np.ndarray) -> Solution:
    """The solution restricted to its used nodes (residual arrays aligned with the kept picks)."""
    return dataclasses.replace(
        sol, residuals_s=np.asarray(sol.residuals_s)[used], used=np.ones(int(used.sum()), bool)
    )
