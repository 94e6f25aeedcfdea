"""Compiled inner loops of the association's hypothesis search (numba).

The search scores thousands of hypothetical source points per seed pick,
against every partner node's pooled onsets (:meth:`shotline.hub.associate.Associator._hypothesise`).
As numpy code each node cost a dozen whole-array passes and temporaries; here
each point and node costs one binary search in a handful of onsets, with no
temporaries. The arithmetic is the numpy version's, step for step, so the
scores agree to rounding (tests/hub/test_throughput.py checks it against a
plain evaluation).

Conventions: times in seconds relative to the seed pick's onset; each
partner node's onsets are sorted and concatenated in ``rel`` with node k's
slice ``rel[starts[k]:starts[k + 1]]`` (at least one onset per node).
Score of a point: the number of nodes with an onset within their tolerance,
less the mean squared misfit in units of the tolerance (misfits beyond it
count as 1), so that more nodes explained always ranks first.

Also here, compiled for the same reason (numpy's per-call cost on arrays of a
few to a few dozen elements, once per pick or candidate set): the negative
evidence and its rule (:func:`silent_counts`, :func:`verdict_codes`; both at once: :func:`evidence_codes`;
with the hypotheses' members, one call per asking: :func:`evidence_of_sets` by :func:`member_matrix`,
:func:`evidence_of_set` by :func:`member_row`), the
shot table's prefilter of a pick's attach tests (:func:`shots_near_arrival`),
its test for a shot's shock wave (:func:`ahead_of_shots`) and for recent places
(:func:`recent_places`, one per place: :func:`first_of_places`; both in :func:`repeat_places`), the waiting sets a pick may join (:func:`sets_near_arrival`),
the picks that complete a hypothesis' set (:func:`set_completion`) and those near a new shot's arrivals
(:func:`arrival_windows`), the onset store's trim at each tick (:func:`trim_rows`) and its rows' updates
(:func:`insert_row`, :func:`delete_at`),
the quick screen's robust fit (:func:`quick_fit`), the exact points of
the nearest partners (:func:`triplet_points`; with the partners' pooled onsets around a seed, the
front of a search: :func:`seed_partners`), a search's best points, refined cells and
candidate sets (:func:`best_points`, :func:`split_cells`, :func:`candidate_sets`). tests/hub/test_throughput.py
checks each against a plain computation of the same thing (the exact points
against a known source).
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba import types as nt


@njit(cache=True, inline="always")
def _nearest_error(rel: np.ndarray, lo: int, hi: int, x: float) -> float:
    """|error| (s) of the onset in ``rel[lo:hi]`` nearest ``x`` (a handful of onsets: a plain scan)."""
    err = abs(rel[lo] - x)
    for i in range(lo + 1, hi):
        err = min(err, abs(rel[i] - x))
    return err


@njit(cache=True, inline="always")
def _least_errors(rel: np.ndarray, lo: int, hi: int, d: np.ndarray, b: np.ndarray, n: int) -> None:
    """``b[q]`` = min over the onsets ``rel[lo:hi]`` (at least one) of ``|onset - d[q]|`` (s), for q < ``n``.

    Onset by onset over all points, in loops without data-dependent branches that the compiler
    vectorises; four onsets per pass, so that ``b`` and ``d`` are read and written once per four
    onsets rather than once per onset (this loop alone: 3.3x faster on the dense scene's recorded
    coarse calls). A minimum is exact in any order, so this is the same number as one onset per pass.
    """
    x = rel[lo]
    for q in range(n):
        b[q] = abs(x - d[q])
    i = lo + 1
    while i + 4 <= hi:
        x0 = rel[i]
        x1 = rel[i + 1]
        x2 = rel[i + 2]
        x3 = rel[i + 3]
        for q in range(n):
            dq = float(d[q])
            b[q] = min(min(b[q], abs(x0 - dq)), min(min(abs(x1 - dq), abs(x2 - dq)), abs(x3 - dq)))
        i += 4
    while i < hi:
        x0 = rel[i]
        for q in range(n):
            b[q] = min(b[q], abs(x0 - d[q]))
        i += 1


@njit(cache=True, error_model="numpy")
def support_table(rel, starts, diff, tol, off, seg, rows, g_n, want_chosen):
    """Score every grid point from cached arrival differences.

    Parameters
    ----------
    rel, starts
        Partner onsets (s, relative to the seed) and slice starts, (K + 1,).
    diff, tol, off, seg
        The seed table (:func:`table_segments`, :func:`table_values`): per table row r, the grid points a node can
        hear (within its audible range) as one index interval per grid line,
        ``seg[r, j] = (first, end)``, and for those points in that order, from
        ``off[r]`` in the flat buffers, the predicted arrival minus the seed's arrival
        (s) and the match tolerance (s). Every other point is a miss, not searched.
    rows
        (K,) table row of each partner node.
    g_n
        Number of grid points.
    want_chosen
        Whether to return the chosen onsets (a stage that only ranks points
        skips writing K x G indices, and takes the errors in float32). The
        search only ranks here (:func:`grid_search`); the full float64 path is
        the reference tests/hub/test_throughput.py checks the ranking against.

    Returns
    -------
    (G,) scores and (K, G) index of the chosen onset within each node's slice
    ((K, 0) without ``want_chosen``; 0 where the node cannot hear the point).
    """
    k_n = rows.shape[0]
    count = np.zeros(g_n)
    # Every node starts as a miss (1) at every point; a match replaces that by its (err / tol)^2.
    sq = np.full(g_n, float(k_n))
    chosen = np.zeros((k_n, g_n if want_chosen else 0), dtype=np.intp)
    best = np.empty(g_n)
    best32 = np.empty(0 if want_chosen else g_n, dtype=np.float32)
    rel32 = rel.astype(np.float32)
    pick = np.empty(g_n if want_chosen else 0, dtype=np.intp)
    n_seg = seg.shape[1]
    # Node by node along contiguous table rows (a point-major loop strides across rows and
    # misses the cache on every access). Each onset of the node is held against every point of
    # its row in a loop without data-dependent branches, which the compiler vectorises: the
    # dense scene's partners hold ~8 onsets each, and most points are within the coarse
    # tolerance of one (a third of the point-node pairs match), so no onset can be left out
    # cheaply; this is 1.6-1.8x faster than walking each point to its nearest onset, whose
    # branches mispredict. The error is the same number either way.
    for k in range(k_n):
        r = rows[k]
        lo = starts[k]
        hi = starts[k + 1]
        p0 = off[r]
        n_pts = 0
        for j in range(n_seg):
            n_pts += seg[r, j, 1] - seg[r, j, 0]
        d = diff[p0:p0 + n_pts]
        t = tol[p0:p0 + n_pts]
        b = best[:n_pts]
        if want_chosen:
            x = rel[lo]
            for q in range(n_pts):
                b[q] = abs(x - d[q])
            # The first of equally near onsets: the earlier.
            pick[:n_pts] = 0
            for i in range(lo + 1, hi):
                x = rel[i]
                for q in range(n_pts):
                    e = abs(x - d[q])
                    if e < b[q]:
                        b[q] = e
                        pick[q] = i - lo
        else:
            b32 = best32[:n_pts]
            _least_errors(rel32, lo, hi, d, b32, n_pts)
            for q in range(n_pts):
                b[q] = b32[q]
        # Score the row's points, grid line by grid line, through slices (a contiguous run each),
        # without data-dependent branches (a third of the points match, at random): the misfit is
        # computed at every point and added where the point matches, nothing (+0) elsewhere, which
        # is the same sum. numpy's error model lets the division go unchecked: a tolerance of 0 or
        # less (a point the node cannot hear) is never matched, the error being never negative.
        # ~30 % faster than testing each point and indexing the grid and the row in one loop.
        q0 = 0
        for j in range(n_seg):
            g0 = seg[r, j, 0]
            n = seg[r, j, 1] - g0
            t_j = t[q0:q0 + n]
            b_j = b[q0:q0 + n]
            count_j = count[g0:g0 + n]
            sq_j = sq[g0:g0 + n]
            if want_chosen:
                chosen[k, g0:g0 + n] = pick[q0:q0 + n]
            for u in range(n):
                tk = np.float64(t_j[u])
                err = b_j[u]
                e = err / tk
                hit = err < tk
                count_j[u] += 1.0 if hit else 0.0
                sq_j[u] += (e * e - 1.0) if hit else 0.0
            q0 += n
    return count - sq / (k_n + 1), chosen


@njit(cache=True, inline="always")
def _nearest_in_order(rel: np.ndarray, lo: int, hi: int, pred: np.ndarray, best: np.ndarray, idx: np.ndarray,
                      below: np.ndarray, n: int) -> None:
    """For q < ``n``: ``idx[q]`` the onset of ``rel[lo:hi]`` (in order, at least one) nearest ``pred[q]``
    (index from ``lo``), the one before it on a tie, and ``best[q]`` its |error| (s); ``below`` is
    scratch (n,).

    Among onsets before the arrival the last is nearest (of equal ones, the last), among those at
    or after it the first: the two are found from the count of onsets before the arrival.
    """
    for q in range(n):
        below[q] = 0
    for i in range(lo, hi):
        r = rel[i]
        for q in range(n):
            below[q] += 1 if r < pred[q] else 0
    m = hi - lo
    for q in range(n):
        c = below[q]
        p = pred[q]
        if c == 0:
            best[q] = abs(rel[lo] - p)
            idx[q] = 0
        elif c == m:
            best[q] = abs(rel[hi - 1] - p)
            idx[q] = m - 1
        else:
            e_before = abs(rel[lo + c - 1] - p)
            e_after = abs(rel[lo + c] - p)
            if e_after < e_before:
                best[q] = e_after
                idx[q] = c
            else:
                best[q] = e_before
                idx[q] = c - 1


@njit(cache=True)
def support_points(rel, starts, pts, seed_xy, seed_dz2, node_xy, dz2, inv_c, tol, max_range, want_chosen):
    """Score arbitrary points (the refinement stages): arrivals predicted from the geometry.

    Parameters
    ----------
    rel, starts
        As :func:`support_table`; each node's onsets in order (the pool keeps them so).
    pts
        (G, 2) hypothetical source points, ENU metres.
    seed_xy, seed_dz2
        The seed node's horizontal position (m) and squared height offset to the source (m^2).
    node_xy, dz2
        (K, 2) partner positions (m) and (K,) squared height offsets (m^2).
    inv_c
        1 / speed of sound (s/m).
    tol
        One match tolerance (s).
    max_range
        A node farther than this (m, horizontally) from a point cannot hear it: a miss.
    want_chosen
        As :func:`support_table`.

    Returns
    -------
    (G,) scores and (K, G) chosen onset indices, as :func:`support_table`.
    """
    k_n = node_xy.shape[0]
    g_n = pts.shape[0]
    count = np.zeros(g_n)
    sq = np.zeros(g_n)
    t0 = np.empty(g_n)
    pred = np.empty(g_n)
    best = np.empty(g_n)
    idx = np.empty(g_n, dtype=np.intp)
    below = np.empty(g_n if want_chosen else 0, dtype=np.intp)
    chosen = np.empty((k_n, g_n if want_chosen else 0), dtype=np.intp)
    r2 = max_range * max_range
    px = np.ascontiguousarray(pts[:, 0])
    py = np.ascontiguousarray(pts[:, 1])
    for g in range(g_n):
        dxs = px[g] - seed_xy[0]
        dys = py[g] - seed_xy[1]
        t0[g] = -np.sqrt(dxs * dxs + dys * dys + seed_dz2) * inv_c
    for k in range(k_n):
        lo = starts[k]
        hi = starts[k + 1]
        nx = node_xy[k, 0]
        ny = node_xy[k, 1]
        dzk = dz2[k]
        for g in range(g_n):
            dx = px[g] - nx
            dy = py[g] - ny
            pred[g] = t0[g] + np.sqrt(dx * dx + dy * dy + dzk) * inv_c
            best[g] = np.inf
            idx[g] = 0
        # The nearest onset to every point. The choice: the nearer of the last onset before the
        # arrival and the first at or after it, the one before on a tie (and below, of equal last
        # onsets that all come before it, the last but one, as it chooses). A node's onsets are in
        # order, so each point's count of onsets before its arrival names both candidates: the
        # counts come from loops without data-dependent branches that the compiler vectorises,
        # then two onsets per point are compared (1.6-2.0x faster on the dense scene's recorded calls
        # than comparing every onset with every point under the rule; the same choice).
        if want_chosen:
            if hi > lo:
                _nearest_in_order(rel, lo, hi, pred, best, idx, below, g_n)
            last = hi - lo - 1
            if last > 0 and rel[hi - 2] == rel[hi - 1]:
                for g in range(g_n):
                    if idx[g] == last and rel[hi - 1] < pred[g]:
                        idx[g] = last - 1
        else:
            # Only the error: a plain minimum, which the compiler vectorises (the same number).
            if hi > lo:
                _least_errors(rel, lo, hi, pred, best, g_n)
        # Without data-dependent branches (points match at random): a node out of range or a
        # miss adds the tolerance's square, a match its error's.
        for g in range(g_n):
            dx = px[g] - nx
            dy = py[g] - ny
            hit = (dx * dx + dy * dy <= r2) & (best[g] < tol)
            e = best[g] if hit else tol
            count[g] += 1.0 if hit else 0.0
            sq[g] += e * e
        if want_chosen:
            # Out of range, no onset is chosen. A loop of its own, the range computed again: writing the
            # choice in the loop above kept the compiler from vectorising it (recorded calls ~15 % slower).
            for g in range(g_n):
                dx = px[g] - nx
                dy = py[g] - ny
                chosen[k, g] = idx[g] if dx * dx + dy * dy <= r2 else 0
    return count - sq / (tol * tol * (k_n + 1)), chosen


@njit(cache=True)
def silent_counts(xs, ys, z, t0s, tol, watermark, xyz, nodes, member, onsets, n_on, held, n_held, c, wind, max_range,
                  min_range, many):
    """Negative evidence at P hypothesised sources: per source, (silent, agree, pending) counts over its
    non-member nodes.

    Parameters
    ----------
    xs, ys, z, t0s
        (P,) source positions (ENU m; z one height for all) and emission times (s, the
        associator's reference).
    tol
        Window (s) around each predicted arrival in which a pick agrees.
    watermark
        Time (s) up to which every node is taken to have reported (watermark less a delivery margin).
    xyz
        (R, 3) node positions (m), one per row of the onset store.
    nodes, member
        (K,) the rows to count (those that may be in range: a spatial-index superset) and (P, K)
        whether each is a member of each hypothesis.
    onsets, n_on
        (R, W) every node's recent onsets (s), each row sorted, and (R,) how many each row holds
        (:class:`shotline.hub.onset_store.OnsetStore`).
    held, n_held
        The same for the onsets that located shots hold (a subset of ``onsets``).
    c, wind
        Speed of sound (m/s) and uniform wind (3,) m/s (zeros for still air).
    max_range, min_range, many
        Nodes beyond ``max_range`` (horizontal, m) are never counted. A silent node counts only
        within the hypothesis' *audible radius*: the horizontal distance of its farthest
        supporting node (member or agreeing), at least ``min_range`` and at most ``max_range``;
        with at least ``many`` supporting nodes, of the second farthest (one chance agreeing pick
        far out cannot widen it alone, while a real source has several nodes out there).
        A source is heard out to a distance set by its loudness (a firecracker carries a few
        hundred metres, a rifle well over a kilometre): nodes nearer than its farthest
        supporter should have heard it, nodes farther need not. ``min_range`` keeps a tight
        cluster of chance picks (support radius ~ one node spacing) answerable to the nodes
        around it.

    A node is *decided* when its latest onset, or the watermark, is past the predicted
    arrival plus ``tol``; decided nodes agree (an onset within ``tol`` of the arrival that
    no shot holds) or are silent; the others are pending. An onset that a shot holds is
    explained by that shot (the node heard the other source, not this one): an echo ghost
    or a chance alignment near a burst must not count the burst's own arrivals as support.
    A pending node may already hold such an onset (its latest one): it is counted apart, as
    *matched*. Travel times as ``Associator._travel``. Returns (P, 4) counts: silent, agree,
    pending without a matching onset, pending with one.
    """
    out = np.zeros((xs.shape[0], 4), dtype=np.int64)
    n = nodes.shape[0]
    state = np.empty(n, dtype=np.int64)
    d2 = np.empty(n)
    for g in range(xs.shape[0]):
        # The two largest squared supporter distances (m^2) and the number of supporters.
        far1 = 0.0
        far2 = 0.0
        n_sup = 0
        for k in range(n):
            dx = xyz[nodes[k], 0] - xs[g]
            dy = xyz[nodes[k], 1] - ys[g]
            d2[k] = dx * dx + dy * dy
            if member[g, k]:
                state[k] = -1
            else:
                state[k] = _node_state(nodes[k], xs[g], ys[g], z, t0s[g], tol, watermark, xyz, onsets, n_on, held,
                                       n_held, c, wind, max_range)
            if member[g, k] or state[k] == 1:
                n_sup += 1
                if d2[k] > far1:
                    far2 = far1
                    far1 = d2[k]
                elif d2[k] > far2:
                    far2 = d2[k]
        reach2 = max(min_range * min_range, far2 if n_sup >= many else far1)
        for k in range(n):
            st = state[k]
            if st >= 1 or (st == 0 and d2[k] <= reach2):
                out[g, st] += 1
    return out


@njit(cache=True)
def verdict_codes(counts, n_members, unheard, matched_join, f_silent, f_confirm, n_min):
    """The negative-evidence rule at P hypotheses: per hypothesis 0 (reject), 1 (wait) or 2 (accept),
    and its supporting nodes (members and agreeing ones).

    ``counts`` (P, 4) from :func:`silent_counts`; ``n_members`` (P,) members; ``unheard`` (P,) nodes in
    range never heard from, pending too. With ``matched_join`` a pending node that holds a matching
    onset counts as a member (the verdict once that pick joins), otherwise as pending. A hypothesis is
    refused when more nodes are silent than max(1, floor(``f_silent`` x (supporting + silent))); it
    waits while some node is pending and fewer support it than max(``n_min``, ceil(``f_confirm`` x
    (supporting + silent + pending))); it is accepted otherwise. (One compiled call: as a Python loop
    with its lists this was a quarter of the evidence's cost, ~8 hypotheses per call.)
    """
    p_n = counts.shape[0]
    code = np.empty(p_n, dtype=np.int64)
    support = np.empty(p_n, dtype=np.int64)
    for i in range(p_n):
        s = counts[i, 0]
        if matched_join:
            n = n_members[i] + counts[i, 3]
            w = counts[i, 2] + unheard[i]
        else:
            n = n_members[i]
            w = counts[i, 2] + counts[i, 3] + unheard[i]
        n_sup = n + counts[i, 1]
        support[i] = n_sup
        if s > max(1, int(f_silent * (n_sup + s))):
            code[i] = 0
        elif w > 0 and n_sup < max(n_min, int(np.ceil(f_confirm * (n_sup + s + w)))):
            code[i] = 1
        else:
            code[i] = 2
    return code, support


@njit(cache=True)
def evidence_codes(xs, ys, z, t0s, tol, watermark, xyz, nodes, member, onsets, n_on, held, n_held, c, wind, max_range,
                   min_range, many, n_members, unheard, matched_join, f_silent, f_confirm, n_min):
    """:func:`silent_counts` and then :func:`verdict_codes` over them, in one call (the arguments are theirs,
    in their order): per hypothesis its code (0 reject, 1 wait, 2 accept) and its supporting nodes."""
    counts = silent_counts(xs, ys, z, t0s, tol, watermark, xyz, nodes, member, onsets, n_on, held, n_held, c, wind,
                           max_range, min_range, many)
    return verdict_codes(counts, n_members, unheard, matched_join, f_silent, f_confirm, n_min)


@njit(cache=True)
def evidence_of_sets(xy, t0s, tol, watermark, z, xyz, nodes, member_rows, seed_row, fits, onsets, n_on, held, n_held,
                     c, wind, max_range, min_range, many, unheard, matched_join, f_silent, f_confirm, n_min):
    """The negative evidence at P hypotheses (``Associator._evidence_many``), one call: their members by
    :func:`member_matrix` (``nodes``, ``member_rows``, ``seed_row``, ``fits`` as there), then
    :func:`evidence_codes` at the points ``xy`` (P, 2) m (the other arguments as there). Returns (codes,
    supporting nodes, whether every member row is among ``nodes``)."""
    member, n_mem, found = member_matrix(nodes, member_rows, seed_row, fits)
    code, support = evidence_codes(np.ascontiguousarray(xy[:, 0]), np.ascontiguousarray(xy[:, 1]), z, t0s, tol,
                                   watermark, xyz, nodes, member, onsets, n_on, held, n_held, c, wind, max_range,
                                   min_range, many, n_mem, unheard, matched_join, f_silent, f_confirm, n_min)
    return code, support, found


@njit(cache=True)
def evidence_of_set(x, y, t0, tol, watermark, z, xyz, nodes, rows, n_members, onsets, n_on, held, n_held, c, wind,
                    max_range, min_range, many, unheard, f_silent, f_confirm, n_min):
    """The negative evidence at one hypothesis (``Associator._evidence``), one call: its members by
    :func:`member_row` (``nodes``, ``rows``), then :func:`evidence_codes` at (``x``, ``y``) m, emission
    ``t0`` s, with ``n_members`` members and ``unheard`` nodes never heard from (without
    ``matched_join``). Returns its code (0 reject, 1 wait, 2 accept)."""
    member = member_row(nodes, rows)
    code, _ = evidence_codes(np.array([x]), np.array([y]), z, np.array([t0]), tol, watermark, xyz, nodes, member,
                             onsets, n_on, held, n_held, c, wind, max_range, min_range, many,
                             np.array([n_members]), np.array([unheard]), False, f_silent, f_confirm, n_min)
    return code[0]


@njit(cache=True)
def member_row(nodes, rows):
    """(1, N) whether each of the onset-store rows ``nodes`` (N,) (sorted) is among ``rows`` (M,) (rows not
    among ``nodes`` are left out): one hypothesis' members for :func:`silent_counts`."""
    member = np.zeros((1, nodes.shape[0]), dtype=np.bool_)
    for k in range(rows.shape[0]):
        at = np.searchsorted(nodes, rows[k])
        if at < nodes.shape[0] and nodes[at] == rows[k]:
            member[0, at] = True
    return member


@njit(cache=True, inline="always")
def _advected_s(dx, dy, dz, c, wind):
    """Travel time (s) from a source to a node ``dx``, ``dy``, ``dz`` m away (node less source) through air
    moving at ``wind`` (3,) m/s: ``locate._travel_times``' arithmetic (the path d^2 / (d.w + sqrt((d.w)^2 +
    (c^2 - w.w) d^2)), its root at least 1e-9 c)."""
    a_w = c * c - (wind[0] * wind[0] + wind[1] * wind[1] + wind[2] * wind[2])
    dw = dx * wind[0] + dy * wind[1] + dz * wind[2]
    d2 = dx * dx + dy * dy + dz * dz
    return d2 / (dw + max(np.sqrt(dw * dw + a_w * d2), 1e-9 * c))


@njit(cache=True, inline="always")
def _node_state(i, x, y, z, t0, tol, watermark, xyz, onsets, n_on, held, n_held, c, wind, max_range):
    """Row i at a hypothesis: 0 silent, 1 agrees, 2 pending, 3 pending with a matching onset, -1 out of
    range (see :func:`silent_counts`)."""
    dx = xyz[i, 0] - x
    dy = xyz[i, 1] - y
    if dx * dx + dy * dy > max_range * max_range:
        return -1
    dz = xyz[i, 2] - z
    d2 = dx * dx + dy * dy + dz * dz
    if wind[0] == 0.0 and wind[1] == 0.0 and wind[2] == 0.0:
        tt = np.sqrt(d2) / c
    elif d2 > 0.0:
        tt = _advected_s(dx, dy, dz, c, wind)
    else:
        tt = 0.0
    pred = t0 + tt
    hi = n_on[i]
    if (hi > 0 and onsets[i, hi - 1] > pred + tol) or watermark > pred + tol:
        a = _bisect(onsets[i], 0, hi, pred - tol, False)  # the first onset >= pred - tol
        while a < hi and onsets[i, a] <= pred + tol:
            if not _holds(held[i], 0, n_held[i], onsets[i, a]):
                return 1
            a += 1
        return 0
    # Pending: its onsets all come before pred + tol, so a matching one is among the last.
    a = hi - 1
    while a >= 0 and onsets[i, a] >= pred - tol:
        if not _holds(held[i], 0, n_held[i], onsets[i, a]):
            return 3
        a -= 1
    return 2


@njit(cache=True, inline="always")
def _bisect(times, lo, hi, t, right):
    """Python's ``bisect_left`` (``bisect_right`` with ``right``) of ``t`` in sorted ``times[lo:hi]``:
    the index in ``times``."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if times[mid] < t or (right and times[mid] == t):
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True)
def trim_rows(arr, counts, n_rows, t_min):
    """Drop from each of the first ``n_rows`` sorted rows of ``arr`` (``counts[r]`` values each) the values
    before ``t_min`` (s), the later ones moving up (``OnsetStore.trim``, every tick): a bisection per row
    where numpy compared every slot of every row."""
    for r in range(n_rows):
        c = counts[r]
        k = _bisect(arr[r], 0, c, t_min, False)
        if k:
            for i in range(c - k):
                arr[r, i] = arr[r, i + k]
            counts[r] = c - k


@njit(cache=True)
def insert_row(arr, counts, r, t):
    """Insert ``t`` into sorted row ``r`` of ``arr`` (``counts[r]`` values), after any equal values (as
    ``bisect.insort_right``); False, with nothing changed, when the row is full. A node's onsets mostly
    come in order, so most go at the end without a search. (``onset_store.insert``: the onset store and
    the pick pool's padded rows, ~17,000 calls a dense play, where numpy's scalar indexing cost ~3 us each.)"""
    c = counts[r]
    if c == arr.shape[1]:
        return False
    if c == 0 or t >= arr[r, c - 1]:
        arr[r, c] = t
    else:
        k = _bisect(arr[r], 0, c, t, True)
        for i in range(c, k, -1):
            arr[r, i] = arr[r, i - 1]
        arr[r, k] = t
    counts[r] = c + 1
    return True


@njit(cache=True)
def delete_at(arr, counts, r, k):
    """Remove the value at position ``k`` of row ``r`` of ``arr`` (``counts[r]`` values; the later ones
    move up): ``onset_store.delete``."""
    c = counts[r]
    for i in range(k, c - 1):
        arr[r, i] = arr[r, i + 1]
    counts[r] = c - 1


@njit(cache=True, inline="always")
def _in_range(xyz, r, sx, sy, max_range):
    """Whether onset-store row ``r`` (positions ``xyz`` (R, 3) m) lies within ``max_range`` m of (``sx``, ``sy``)
    horizontally (``Associator._rows_within_range``'s hypot)."""
    return np.hypot(xyz[r, 0] - sx, xyz[r, 1] - sy) <= max_range


@njit(cache=True, inline="always")
def _arrival(xyz, r, sx, sy, sz, t0, c, wind):
    """The arrival (s) at row ``r`` of a source at (``sx``, ``sy``, ``sz``) m emitting at ``t0`` s, through
    ``wind`` (3,) m/s (zeros: still air, d / c; otherwise :func:`_advected_s`), as :func:`_node_state`."""
    dx = xyz[r, 0] - sx
    dy = xyz[r, 1] - sy
    dz = xyz[r, 2] - sz
    d2 = dx * dx + dy * dy + dz * dz
    if wind[0] == 0.0 and wind[1] == 0.0 and wind[2] == 0.0:
        return t0 + np.sqrt(d2) / c
    if d2 > 0.0:
        return t0 + _advected_s(dx, dy, dz, c, wind)
    return t0


@njit(cache=True)
def set_completion(xyz, rows, max_range, sx, sy, sz, t0, c, wind, members, pool_row, times0, counts0, times1,
                   counts1, n_tails, tol):
    """The picks that complete a hypothesis' set (``Associator._complete_set``) in one call.

    ``rows`` (sorted): the onset-store rows near the source (a spatial-index superset), of which those
    within ``max_range`` m (horizontal) are in range; positions ``xyz`` (R, 3) m. Source (``sx``, ``sy``,
    ``sz``) m, emission ``t0`` s, speed of sound ``c`` m/s, wind ``wind`` (3,) m/s (:func:`_arrival`; in
    wind its arithmetic is the evidence kernels', which may differ from ``Associator._travel``'s numpy dot
    products in the last bit). ``members`` (M,): the store rows of the set's members, left out.
    ``pool_row`` (R,): each store row's row in the pool's padded onsets, both views: ``times0``,
    ``counts0`` with reverberation tails, ``times1``, ``counts1`` without. Tails take part where at least
    ``n_tails`` rows are in range (``Associator._tails_take_part``). At each other row in range, in row
    order, the onset nearest the arrival within ``tol`` s (the first of equally near ones).

    Returns (whether tails take part, the store rows that have one (F,), its position in their pool row (F,)).
    """
    n_in = 0
    for k in range(rows.shape[0]):
        if _in_range(xyz, rows[k], sx, sy, max_range):
            n_in += 1
    tails = n_in >= n_tails
    times = times0 if tails else times1
    counts = counts0 if tails else counts1
    out_r = np.empty(n_in, dtype=np.int64)
    out_k = np.empty(n_in, dtype=np.int64)
    n = 0
    for k in range(rows.shape[0]):
        r = rows[k]
        if not _in_range(xyz, r, sx, sy, max_range):
            continue
        member = False
        for q in range(members.shape[0]):
            if members[q] == r:
                member = True
                break
        if member:
            continue
        pr = pool_row[r]
        if counts[pr] == 0:
            continue
        pred = _arrival(xyz, r, sx, sy, sz, t0, c, wind)
        row = times[pr]
        lo, hi = _window(row, counts[pr], pred, tol)
        best = -1
        err = 0.0
        for i in range(lo, hi):
            e = abs(row[i] - pred)
            if best < 0 or e < err:
                best = i
                err = e
        if best >= 0:
            out_r[n] = r
            out_k[n] = best
            n += 1
    return tails, out_r[:n], out_k[:n]


@njit(cache=True)
def arrival_windows(xyz, rows, max_range, sx, sy, sz, t0, c, wind, pool_row, times, counts, half):
    """The pooled onsets near a new shot's arrivals (``Associator._near_arrivals``) in one call: at each
    onset-store row of ``rows`` (sorted) within ``max_range`` m of the shot (at (``sx``, ``sy``, ``sz``) m,
    emitted at ``t0`` s; ``c`` m/s, ``wind`` (3,) m/s: :func:`_arrival`), in row order, the positions [lo, hi) in
    its pool row (``pool_row``; padded ``times``, ``counts``: every pick) of the onsets within ``half`` s of the
    arrival (:func:`_window`).
    Returns (the store rows with some (F,), lo (F,), hi (F,))."""
    out_r = np.empty(rows.shape[0], dtype=np.int64)
    out_lo = np.empty(rows.shape[0], dtype=np.int64)
    out_hi = np.empty(rows.shape[0], dtype=np.int64)
    n = 0
    for k in range(rows.shape[0]):
        r = rows[k]
        if not _in_range(xyz, r, sx, sy, max_range):
            continue
        pr = pool_row[r]
        if counts[pr] == 0:
            continue
        lo, hi = _window(times[pr], counts[pr], _arrival(xyz, r, sx, sy, sz, t0, c, wind), half)
        if hi > lo:
            out_r[n] = r
            out_lo[n] = lo
            out_hi[n] = hi
            n += 1
    return out_r[:n], out_lo[:n], out_hi[:n]


@njit(cache=True, inline="always")
def _window(row, count, t, half):
    """The positions [lo, hi) of the onsets within ``half`` (s) of ``t`` (s), ends included, in a sorted
    ``row[:count]`` (``PickPool.window``'s bisections)."""
    lo = _bisect(row, 0, count, t - half, False)
    return lo, _bisect(row, lo, count, t + half, True)


@njit(cache=True, inline="always")
def _holds(times: np.ndarray, lo: int, hi: int, t: float) -> bool:
    """Whether sorted ``times[lo:hi]`` contains exactly ``t``."""
    a = _bisect(times, lo, hi, t, False)
    return a < hi and times[a] == t


@njit(cache=True, inline="always")
def _hears(pts, g, node_x, node_y, far2):
    """Whether grid point ``g`` lies within ``sqrt(far2)`` (m) of the node, horizontally."""
    dx = node_x - pts[g, 0]
    dy = node_y - pts[g, 1]
    return dx * dx + dy * dy <= far2


@njit(cache=True)
def table_segments(pts, line_start, node_xy, reach, seg_out):
    """The grid points each of M nodes hears, as one index interval per grid line; returns (M,) counts.

    ``pts`` (G, 2) grid points (m), in grid lines of constant y and increasing x, equally
    spaced, line j being ``pts[line_start[j]:line_start[j + 1]]``; ``node_xy`` (M, 2) node
    positions (m); ``reach`` (m): a node hears the points within it horizontally. A disc meets
    a line in one interval: its ends come from the chord (not from testing every point of the
    line, so a row costs the points the node hears), settled by the exact distance test
    (rounding at the boundary), and are written to ``seg_out[m, j]`` as (first, end).
    """
    reach2 = reach * reach
    counts = np.zeros(node_xy.shape[0], dtype=np.int64)
    for m in range(node_xy.shape[0]):
        node_x = node_xy[m, 0]
        node_y = node_xy[m, 1]
        for j in range(line_start.shape[0] - 1):
            lo = line_start[j]
            hi = line_start[j + 1]
            dy = node_y - pts[lo, 1]
            first = hi
            end = hi
            if reach2 - dy * dy >= 0.0:
                half = np.sqrt(reach2 - dy * dy)
                step = pts[lo + 1, 0] - pts[lo, 0] if hi - lo > 1 else 1.0
                first = lo + min(max(int(np.ceil((node_x - half - pts[lo, 0]) / step)), 0), hi - lo)
                end = lo + min(max(int(np.floor((node_x + half - pts[lo, 0]) / step)) + 1, 0), hi - lo)
                while first > lo and _hears(pts, first - 1, node_x, node_y, reach2):
                    first -= 1
                while first < end and not _hears(pts, first, node_x, node_y, reach2):
                    first += 1
                while end < hi and _hears(pts, end, node_x, node_y, reach2):
                    end += 1
                while end > first and not _hears(pts, end - 1, node_x, node_y, reach2):
                    end -= 1
            if first >= end:
                first = 0
                end = 0
            seg_out[m, j, 0] = first
            seg_out[m, j, 1] = end
            counts[m] += end - first
    return counts


@njit(cache=True)
def table_values(pts, t_seed, u_seed, node_xy, dz2, inv_c, half_diag, factor, match_tol, seg, offsets, diff_out,
                 tol_out):
    """Fill the seed-table values of M nodes' rows (:func:`table_segments`): at each point a node
    hears, in row order from ``offsets[m]`` in ``diff_out``/``tol_out``, the arrival difference
    to the seed (s) and the coarse tolerance (s).

    ``t_seed`` (G,) travel time from each point to the seed (s); ``u_seed`` (G, 2) horizontal
    unit vectors towards the seed; ``dz2`` (M,) each node's squared height offset to the source
    (m^2); ``half_diag`` the cell half-diagonal h (m); ``factor`` the safety factor on the
    gradient bound. Tolerance = min(factor |u_k - u_seed|, 2) h / c + match_tol: the formula
    of ``Associator._fill_rows``, in one pass without temporaries.
    """
    # Coordinates as contiguous columns and each grid line's run of values as its own slice: the
    # inner loop is then plain arithmetic over consecutive elements, which the compiler vectorises
    # (half the time per value of a loop over the (G, 2) arrays, the same values).
    px = np.ascontiguousarray(pts[:, 0])
    py = np.ascontiguousarray(pts[:, 1])
    ux = np.ascontiguousarray(u_seed[:, 0])
    uy = np.ascontiguousarray(u_seed[:, 1])
    for m in range(node_xy.shape[0]):
        node_x = node_xy[m, 0]
        node_y = node_xy[m, 1]
        dzm = dz2[m]
        n = offsets[m]
        for j in range(seg.shape[1]):
            first = seg[m, j, 0]
            cnt = seg[m, j, 1] - first
            d_o = diff_out[n: n + cnt]
            t_o = tol_out[n: n + cnt]
            for q in range(cnt):
                g = first + q
                dx = node_x - px[g]
                dy = node_y - py[g]
                rng = np.sqrt(dx * dx + dy * dy + dzm)
                d_o[q] = rng * inv_c - t_seed[g]
                inv = 1.0 / max(rng, 1e-6)
                ex = dx * inv - ux[g]
                ey = dy * inv - uy[g]
                grad = min(factor * np.sqrt(ex * ex + ey * ey), 2.0)
                t_o[q] = grad * half_diag * inv_c + match_tol
            n += cnt


@njit(cache=True, inline="always")
def _lorentz3(a0, a1, a2, b0, b1, b2):
    return a0 * b0 + a1 * b1 - a2 * b2


@njit(cache=True)
def triplet_points(seed_xy, seed_dz2, t_seed, near_xy, near_dz2, times, starts, c, match_tol, max_range, max_pairs,
                   tol):
    """Source points fixed exactly by the seed's pick and one pick at each of two near nodes.

    Parameters
    ----------
    seed_xy, seed_dz2, t_seed
        The seed node's horizontal position (m), squared height offset to the assumed source
        height (m^2) and pick time (s).
    near_xy, near_dz2
        (N, 2) the nearest partners' positions (m) and (N,) squared height offsets (m^2).
    times, starts
        Their picks (s, each node's sorted, concatenated; node k's are
        ``times[starts[k]:starts[k + 1]]``, at least one each).
    c, match_tol, max_range
        Speed of sound (m/s); timing slack (s) between two nodes' arrivals beyond their
        separation / c; farthest source from the seed (m).
    max_pairs
        Node pairs with more possible pick pairs than this are skipped.
    tol
        A near node hears a point if it has a pick within this (s) of the predicted arrival;
        a point is kept when all near nodes but one hear it.

    Three arrival times fix a 2-D source with an unknown emission time: Bancroft's algebra
    (as :func:`shotline.hub.closed_form.bancroft_batch`) for exactly three nodes, a 3 x 3
    linear solve and a quadratic with up to two roots; a root counts when it puts the source
    before the seed's arrival by its range, within ``max_range``. Returns (E, 2) points (m).
    """
    n_near = near_xy.shape[0]
    # Positions about the nodes' centre, times 1 s after a reference before the seed's pick and
    # everything in kilometres: a node at the origin at time zero is a zero row of the system.
    scale = 1000.0
    cx = seed_xy[0]
    cy = seed_xy[1]
    for k in range(n_near):
        cx += near_xy[k, 0]
        cy += near_xy[k, 1]
    cx /= n_near + 1
    cy /= n_near + 1
    lead = c * 1.0
    n_out = 0
    cap = 2 * max_pairs * n_near * (n_near - 1) // 2
    out = np.empty((cap, 2))
    b = np.empty((3, 3))
    al = np.empty(3)
    x0 = (seed_xy[0] - cx) / scale
    y0 = (seed_xy[1] - cy) / scale
    tau0 = lead / scale
    for i in range(n_near):
        for j in range(i + 1, n_near):
            dxn = near_xy[i, 0] - near_xy[j, 0]
            dyn = near_xy[i, 1] - near_xy[j, 1]
            reach = np.sqrt(dxn * dxn + dyn * dyn) / c + match_tol
            n_pairs = 0
            for a in range(starts[i], starts[i + 1]):
                for bb in range(starts[j], starts[j + 1]):
                    if abs(times[a] - times[bb]) <= reach:
                        n_pairs += 1
            if n_pairs == 0 or n_pairs > max_pairs:
                continue
            for a in range(starts[i], starts[i + 1]):
                for bb in range(starts[j], starts[j + 1]):
                    if abs(times[a] - times[bb]) > reach:
                        continue
                    # Rows (x, y, -tau) and right-hand sides 0.5 (|r|^2 + e - tau^2), kilometres.
                    xs = (x0, (near_xy[i, 0] - cx) / scale, (near_xy[j, 0] - cx) / scale)
                    ys = (y0, (near_xy[i, 1] - cy) / scale, (near_xy[j, 1] - cy) / scale)
                    ts = (tau0, ((times[a] - t_seed) * c + lead) / scale, ((times[bb] - t_seed) * c + lead) / scale)
                    es = (seed_dz2 / scale**2, near_dz2[i] / scale**2, near_dz2[j] / scale**2)
                    for m in range(3):
                        b[m, 0] = xs[m]
                        b[m, 1] = ys[m]
                        b[m, 2] = -ts[m]
                        al[m] = 0.5 * (xs[m] * xs[m] + ys[m] * ys[m] + es[m] - ts[m] * ts[m])
                    det = (b[0, 0] * (b[1, 1] * b[2, 2] - b[1, 2] * b[2, 1])
                           - b[0, 1] * (b[1, 0] * b[2, 2] - b[1, 2] * b[2, 0])
                           + b[0, 2] * (b[1, 0] * b[2, 1] - b[1, 1] * b[2, 0]))
                    if abs(det) < 1e-12:
                        continue
                    # Inverse by cofactors: p = B^-1 alpha, q = B^-1 1.
                    inv00 = (b[1, 1] * b[2, 2] - b[1, 2] * b[2, 1]) / det
                    inv01 = (b[0, 2] * b[2, 1] - b[0, 1] * b[2, 2]) / det
                    inv02 = (b[0, 1] * b[1, 2] - b[0, 2] * b[1, 1]) / det
                    inv10 = (b[1, 2] * b[2, 0] - b[1, 0] * b[2, 2]) / det
                    inv11 = (b[0, 0] * b[2, 2] - b[0, 2] * b[2, 0]) / det
                    inv12 = (b[0, 2] * b[1, 0] - b[0, 0] * b[1, 2]) / det
                    inv20 = (b[1, 0] * b[2, 1] - b[1, 1] * b[2, 0]) / det
                    inv21 = (b[0, 1] * b[2, 0] - b[0, 0] * b[2, 1]) / det
                    inv22 = (b[0, 0] * b[1, 1] - b[0, 1] * b[1, 0]) / det
                    p0 = inv00 * al[0] + inv01 * al[1] + inv02 * al[2]
                    p1 = inv10 * al[0] + inv11 * al[1] + inv12 * al[2]
                    p2 = inv20 * al[0] + inv21 * al[1] + inv22 * al[2]
                    q0 = inv00 + inv01 + inv02
                    q1 = inv10 + inv11 + inv12
                    q2 = inv20 + inv21 + inv22
                    # u = p + lam q with lam = <u, u> / 2: A lam^2 + 2 B lam + C = 0.
                    a_c = _lorentz3(q0, q1, q2, q0, q1, q2)
                    b_c = _lorentz3(p0, p1, p2, q0, q1, q2) - 1.0
                    c_c = _lorentz3(p0, p1, p2, p0, p1, p2)
                    disc = max(b_c * b_c - a_c * c_c, 0.0)
                    qr = -(b_c + np.sqrt(disc) * (1.0 if b_c >= 0.0 else -1.0))
                    for root in range(2):
                        if root == 0:
                            if a_c == 0.0:
                                continue
                            lam = qr / a_c
                        else:
                            if qr == 0.0:
                                continue
                            lam = c_c / qr
                        x = (p0 + lam * q0) * scale + cx
                        y = (p1 + lam * q1) * scale + cy
                        d0 = (p2 + lam * q2) * scale
                        dxs = x - seed_xy[0]
                        dys = y - seed_xy[1]
                        rng = np.sqrt(dxs * dxs + dys * dys + seed_dz2)
                        if not (abs(lead - d0 - rng) < 1.0 and rng <= max_range):
                            continue
                        t0 = t_seed - rng / c
                        hits = 0
                        for k in range(n_near):
                            dxk = x - near_xy[k, 0]
                            dyk = y - near_xy[k, 1]
                            pred = t0 + np.sqrt(dxk * dxk + dyk * dyk + near_dz2[k]) / c
                            err = _nearest_error(times, starts[k], starts[k + 1], pred)
                            if err < tol:
                                hits += 1
                        if hits + 1 >= n_near:
                            out[n_out, 0] = x
                            out[n_out, 1] = y
                            n_out += 1
    return out[:n_out]


@njit(cache=True)
def seed_partners(times, counts, rows, d, t_seed, c, match_tol, need, n_exact, seed_xy, seed_dz2, near_xy,
                  near_dz2, max_range, max_pairs, fine_tol):
    """The front of ``Associator._hypothesise``: each partner node's pooled onsets within a seed's
    reach, and the exact points of the nearest partners that have some.

    ``times``, ``counts``: the pool's padded rows of sorted onsets (s) and their counts
    (:class:`shotline.hub.associate.PickPool`, one view); ``rows`` (K,) the partners' pool rows, nearest
    first (-1: none), ``d`` (K,) their distances to the seed's node (m), ``near_xy`` (K, 2) and
    ``near_dz2`` (K,) their positions and squared height offsets. A partner's window is its onsets
    within its distance / ``c`` plus ``match_tol`` of ``t_seed`` (``PickPool.window``'s bisections).
    Partners are read nearest first until ``need`` have onsets there; if that many do, the exact points
    of the first ``n_exact`` of them (:func:`triplet_points` with the seed's ``seed_xy``, ``seed_dz2``
    and ``max_range``, ``max_pairs``, ``fine_tol``) decide: none, and the search is put off without
    reading the others. Returns (lo, hi) (K,) each partner's window in its row (lo = hi: none read or
    none there), a status (0 no exact points: fewer than ``need`` partners have onsets; 1 exact points;
    2 none, put off) and the points (E, 2) m.
    """
    k_n = rows.shape[0]
    lo = np.zeros(k_n, dtype=np.int64)
    hi = np.zeros(k_n, dtype=np.int64)
    found = np.empty(k_n, dtype=np.int64)
    n_found = 0
    i = 0
    while i < k_n and n_found < need:
        _partner_window(times, counts, rows, d, i, t_seed, c, match_tol, lo, hi)
        if hi[i] > lo[i]:
            found[n_found] = i
            n_found += 1
        i += 1
    n_read = i
    if n_found < need:
        return lo, hi, 0, np.zeros((0, 2))
    # The exact points of the nearest partners with onsets (see Associator._hypothesise).
    m = min(n_exact, n_found)
    if m < 2:
        exact = np.zeros((0, 2))
    else:
        sel = found[:m]
        cat, starts = partner_onsets(times, rows[sel], lo[sel], hi[sel], 0.0)
        sel_xy = np.empty((m, 2))
        sel_dz2 = np.empty(m)
        for q in range(m):
            j = found[q]
            sel_xy[q, 0] = near_xy[j, 0]
            sel_xy[q, 1] = near_xy[j, 1]
            sel_dz2[q] = near_dz2[j]
        exact = triplet_points(seed_xy, seed_dz2, t_seed, sel_xy, sel_dz2, cat, starts, c, match_tol, max_range,
                               max_pairs, fine_tol)
    if exact.shape[0] == 0:
        return lo, hi, 2, exact
    for j in range(n_read, k_n):
        _partner_window(times, counts, rows, d, j, t_seed, c, match_tol, lo, hi)
    return lo, hi, 1, exact


@njit(cache=True, inline="always")
def _partner_window(times, counts, rows, d, j, t_seed, c, match_tol, lo, hi):
    """:func:`seed_partners`' window of partner ``j`` (``PickPool.window``'s bisections) into ``lo[j]``,
    ``hi[j]``; left empty for a partner with no row or no onsets."""
    r = rows[j]
    if r >= 0 and counts[r] > 0:
        half = d[j] / c + match_tol
        lo[j] = _bisect(times[r], 0, counts[r], t_seed - half, False)
        hi[j] = _bisect(times[r], 0, counts[r], t_seed + half, True)


@njit(cache=True)
def shots_near_arrival(xyt, rx, ry, rz, t_pick, t_min, reach, c, widest, by_arrival):
    """Rows of the shot table that can have made a pick (``Associator._attach_target``'s prefilter).

    ``xyt`` (S, 4): per listed shot east, north (m), emission time (s), up (m); the pick's node at
    (``rx``, ``ry``, ``rz``) m and its onset ``t_pick`` s. A shot passes if emitted in
    [``t_min``, ``t_pick``] within ``reach`` m (horizontally) of the node; with ``by_arrival`` and more
    than one passing, only those whose still-air arrival at the node, emission + distance / ``c``, is
    within ``widest`` (+ 1 us) of the pick. The arithmetic is that of the numpy steps this replaced
    (kept in tests/hub/test_throughput.py, which checks that the same rows pass), operation for
    operation. Returns their indices, in table order.
    """
    n = xyt.shape[0]
    out = np.empty(n, dtype=np.int64)
    k = 0
    r2 = reach * reach
    for i in range(n):
        if xyt[i, 2] >= t_min and xyt[i, 2] <= t_pick:
            dx = xyt[i, 0] - rx
            dy = xyt[i, 1] - ry
            if dx * dx + dy * dy <= r2:
                out[k] = i
                k += 1
    if by_arrival and k > 1:
        m = 0
        for j in range(k):
            i = out[j]
            dx = xyt[i, 0] - rx
            dy = xyt[i, 1] - ry
            dz = xyt[i, 3] - rz
            pred = xyt[i, 2] + np.sqrt((dx * dx + dy * dy) + dz * dz) / c
            if abs(t_pick - pred) < widest + 1e-6:
                out[m] = i
                m += 1
        k = m
    return out[:k]


@njit(cache=True)
def shots_to_attach(xyt, rx, ry, rz, t_pick, t_min, reach, c, widest, spread_s, match_tol):
    """The shots of the table a trusted pick may attach to in still air (``Associator._attach_target``),
    best first: the rows :func:`shots_near_arrival` passes (its arguments, ``by_arrival`` set) that were
    emitted by ``t_pick`` and whose still-air arrival at the node is within the attach tolerance of the
    pick, min(2 CEP95 / ``c``, 0.02) + ``spread_s`` + ``match_tol`` (s; ``spread_s``: 5 sigma of the pick's
    onset; ``xyt`` (S, 6) holds the CEP95, m, in column 5).

    Returns (rows, |pick - arrival| (s), arrival (s)), by increasing error (table order on a tie: the
    first of equally good shots, as a scan in table order keeping strictly better ones chooses). The
    arithmetic is ``Associator._travel``'s and ``_attach_tolerance``'s, operation for operation.
    """
    near = shots_near_arrival(xyt, rx, ry, rz, t_pick, t_min, reach, c, widest, True)
    n = near.shape[0]
    rows = np.empty(n, dtype=np.int64)
    err = np.empty(n)
    pred = np.empty(n)
    k = 0
    for j in range(n):
        i = near[j]
        dx = rx - xyt[i, 0]
        dy = ry - xyt[i, 1]
        dz = rz - xyt[i, 3]
        p = xyt[i, 2] + np.sqrt(dx * dx + dy * dy + dz * dz) / c
        e = abs(t_pick - p)
        if e < min(2.0 * xyt[i, 5] / c, 0.02) + spread_s + match_tol:
            rows[k] = i
            err[k] = e
            pred[k] = p
            k += 1
    order = np.argsort(err[:k], kind="mergesort")
    return rows[:k][order], err[:k][order], pred[:k][order]


@njit(cache=True)
def sets_near_arrival(table, n, rx, ry, dz2, t_pick, c, r2):
    """Which waiting candidate sets a pick may join (``Associator._join_waiting``'s prefilter): of the first
    ``n`` rows of ``table`` (east, north m, emission time s, tolerance s per set), the sets whose predicted
    arrival at the pick's node (``rx``, ``ry`` m, ``dz2`` m^2 its squared height offset) is within the
    tolerance of ``t_pick`` s, at most sqrt(``r2``) m away. Returns their indices, in order, and the pick
    less each one's predicted arrival (s), as the numpy steps this replaced computed it."""
    out = np.empty(n, dtype=np.int64)
    res = np.empty(n)
    k = 0
    for i in range(n):
        dx = table[i, 0] - rx
        dy = table[i, 1] - ry
        d2 = dx * dx + dy * dy
        r_i = t_pick - table[i, 2] - np.sqrt(d2 + dz2) / c
        if abs(r_i) < table[i, 3] and d2 <= r2:
            out[k] = i
            res[k] = r_i
            k += 1
    return out[:k], res[:k]


@njit(cache=True)
def recent_places(xyt, rx, ry, dz2, t_pick, c, r2, gap_min, gap_max):
    """The shots whose place may have made a pick as another round (``Associator._repeat_place``): from
    the shot table ``xyt`` (S, 4) (east, north m, emission s, up m), those within sqrt(``r2``) m of the
    pick's node (``rx``, ``ry`` m, ``dz2`` m^2) whose emission is between ``gap_min`` and ``gap_max`` s
    before the emission time that puts ``t_pick`` there, the latest first (the table's order on a tie).
    Returns their indices and those emission times (S,) s for every row."""
    n = xyt.shape[0]
    t0 = np.empty(n)
    out = np.empty(n, dtype=np.int64)
    k = 0
    for i in range(n):
        dx = xyt[i, 0] - rx
        dy = xyt[i, 1] - ry
        d2 = dx * dx + dy * dy
        t0[i] = t_pick - np.sqrt(d2 + dz2) / c
        gap = t0[i] - xyt[i, 2]
        if d2 <= r2 and gap > gap_min and gap < gap_max:
            # insert by emission time, latest first, after any equal one
            j = k
            while j > 0 and xyt[out[j - 1], 2] < xyt[i, 2]:
                out[j] = out[j - 1]
                j -= 1
            out[j] = i
            k += 1
    return out[:k], t0


@njit(cache=True)
def first_of_places(xy, within):
    """Indices of the points of ``xy`` (P, 2) m that are not within ``within`` m (east and north) of an
    earlier point kept: one per place, the first listed (``Associator._repeat_place``)."""
    out = np.empty(xy.shape[0], dtype=np.int64)
    n = 0
    for i in range(xy.shape[0]):
        new = True
        for j in range(n):
            q = out[j]
            if abs(xy[i, 0] - xy[q, 0]) < within and abs(xy[i, 1] - xy[q, 1]) < within:
                new = False
                break
        if new:
            out[n] = i
            n += 1
    return out[:n]


@njit(cache=True)
def repeat_places(xyt, rx, ry, dz2, t_pick, c, r2, gap_min, gap_max, n_big, max_places, within):
    """The places a pick is tried at as another round (``Associator._repeat_place``), from the shot table
    ``xyt`` (S, 6) (east, north m, emission s, up m, picks, CEP95 m): of the shots :func:`recent_places`
    passes (latest first), those with at least ``n_big`` picks, at most ``max_places`` of them, and of
    those the first at each place (:func:`first_of_places`, within ``within`` m). Returns their indices,
    the emission times (S,) s that put ``t_pick`` at every row's place, and the largest CEP95 (m) of the
    shots before one per place was kept (0 when none)."""
    near, t0 = recent_places(xyt, rx, ry, dz2, t_pick, c, r2, gap_min, gap_max)
    cand = np.empty(min(near.shape[0], max_places), dtype=np.int64)
    n = 0
    cep = 0.0
    for k in near:
        if n == cand.shape[0]:
            break
        if xyt[k, 4] >= n_big:
            cand[n] = k
            cep = xyt[k, 5] if n == 0 else max(cep, xyt[k, 5])
            n += 1
    xy = np.empty((n, 2))
    for i in range(n):
        xy[i, 0] = xyt[cand[i], 0]
        xy[i, 1] = xyt[cand[i], 1]
    kept = first_of_places(xy, within)
    out = np.empty(kept.shape[0], dtype=np.int64)
    for i in range(kept.shape[0]):
        out[i] = cand[kept[i]]
    return out, t0, cep


@njit(cache=True, inline="always")
def _unheard_counts(xs, ys, unheard_xy, max_range):
    """Per point (``xs``, ``ys``) m, the nodes at ``unheard_xy`` (U, 2) m within ``max_range`` m of it
    (``Associator._unheard_in_range``'s count, the same arithmetic: squared differences summed, then held
    against ``max_range`` squared)."""
    r2 = max_range * max_range
    out = np.zeros(xs.shape[0], dtype=np.int64)
    for i in range(xs.shape[0]):
        for u in range(unheard_xy.shape[0]):
            dx = unheard_xy[u, 0] - xs[i]
            dy = unheard_xy[u, 1] - ys[i]
            if dx * dx + dy * dy <= r2:
                out[i] += 1
    return out


@njit(cache=True, inline="always")
def _seed_only_evidence(xs, ys, t0s, tol, watermark, z, xyz, nodes, seed_row, onsets, n_on, held, n_held, c, wind,
                        max_range, min_range, many, unheard_xy, f_silent, f_confirm, n_min):
    """:func:`evidence_codes` at hypotheses whose only member is the seed's node (``seed_row`` among
    ``nodes``), pending nodes with a matching onset counted as members, and as pending the nodes at
    ``unheard_xy`` (U, 2) m within range (never heard from; U is 0 once the hub's first wait window is
    over): a recent place's or a refused place's hypotheses (:func:`repeat_candidates`,
    :func:`refused_again`)."""
    p_n = xs.shape[0]
    member, n_mem, _ = member_matrix(nodes, np.empty(0, dtype=np.int64), seed_row, np.empty((0, p_n), dtype=np.bool_))
    return evidence_codes(xs, ys, z, t0s, tol, watermark, xyz, nodes, member, onsets, n_on, held, n_held, c, wind,
                          max_range, min_range, many, n_mem, _unheard_counts(xs, ys, unheard_xy, max_range), True,
                          f_silent, f_confirm, n_min)


@njit(cache=True)
def repeat_candidates(xyt, rx, ry, dz2, t_pick, c, r2, gap_min, gap_max, n_big, max_places, within, tol_fine,
                      tol_attach, watermark, z, xyz, nodes, seed_row, onsets, n_on, held, n_held, wind, max_range,
                      min_range, many, unheard_xy, f_silent, f_confirm, n_min, wait_support):
    """The places worth trying a pick at as another round (``Associator._repeat_place``), one call: the
    places of :func:`repeat_places` (its arguments, in its order), the tolerance (s) of their hypotheses,
    the smaller of ``tol_fine`` and ``tol_attach`` plus the shots' widest attach window (twice their
    largest CEP95 over ``c``, at most 20 ms), and the negative evidence at each (:func:`_seed_only_evidence`;
    ``nodes`` the onset-store rows near the seed's node, ``seed_row`` its row, ``unheard_xy`` the nodes
    never heard from near it, the other arguments as :func:`evidence_codes`'). Returns the places whose
    verdict is accept, or wait with at least
    ``wait_support`` supporting nodes, in order; the emission times (S,) s that put ``t_pick`` at every
    row's place; and the tolerance."""
    places, t0, cep = repeat_places(xyt, rx, ry, dz2, t_pick, c, r2, gap_min, gap_max, n_big, max_places, within)
    tol = min(tol_fine, tol_attach + min(2.0 * cep / c, 0.02))
    p_n = places.shape[0]
    xs = np.empty(p_n)
    ys = np.empty(p_n)
    t0s = np.empty(p_n)
    for i in range(p_n):
        xs[i] = xyt[places[i], 0]
        ys[i] = xyt[places[i], 1]
        t0s[i] = t0[places[i]]
    code, support = _seed_only_evidence(xs, ys, t0s, tol, watermark, z, xyz, nodes, seed_row, onsets, n_on, held,
                                        n_held, c, wind, max_range, min_range, many, unheard_xy, f_silent, f_confirm,
                                        n_min)
    keep = np.empty(p_n, dtype=np.int64)
    n = 0
    for i in range(p_n):
        if code[i] == 2 or (code[i] == 1 and support[i] >= wait_support):
            keep[n] = i
            n += 1
    return places[keep[:n]], t0, tol


@njit(cache=True)
def refused_again(places, rx, ry, dz2, t_pick, c, r2, memory_s, tol, watermark, z, xyz, nodes, seed_row, onsets, n_on,
                  held, n_held, wind, max_range, min_range, many, unheard_xy, f_silent, f_confirm, n_min, n_support):
    """Whether a pick at a node (``rx``, ``ry`` m, ``dz2`` m^2 its squared height above the source height) at
    ``t_pick`` s is refused again at a place where searches keep refusing (``Associator._at_a_refused_place``),
    one call: ``places`` (K, 3) (east, north m, last refusal's emission s); a place within sqrt(``r2``) m
    of the node whose emission time for this pick is less than ``memory_s`` s from its last refusal's is
    a hypothesis, its negative evidence counted (:func:`_seed_only_evidence` at tolerance ``tol`` s;
    ``nodes`` the onset-store rows near the seed's node, ``seed_row`` its row, ``unheard_xy`` the nodes
    never heard from near it, the other arguments as :func:`evidence_codes`'). True when one is refused
    with at least ``n_support`` supporting nodes."""
    k_n = places.shape[0]
    xs = np.empty(k_n)
    ys = np.empty(k_n)
    t0s = np.empty(k_n)
    n = 0
    for k in range(k_n):
        dx = places[k, 0] - rx
        dy = places[k, 1] - ry
        d2 = dx * dx + dy * dy
        t0 = t_pick - np.sqrt(d2 + dz2) / c
        if d2 <= r2 and abs(t0 - places[k, 2]) < memory_s:
            xs[n] = places[k, 0]
            ys[n] = places[k, 1]
            t0s[n] = t0
            n += 1
    if n == 0:
        return False
    code, support = _seed_only_evidence(xs[:n], ys[:n], t0s[:n], tol, watermark, z, xyz, nodes, seed_row, onsets, n_on,
                                        held, n_held, c, wind, max_range, min_range, many, unheard_xy, f_silent,
                                        f_confirm, n_min)
    for i in range(n):
        if code[i] == 0 and support[i] >= n_support:
            return True
    return False


@njit(cache=True)
def ahead_of_shots(xyt, rx, ry, rz, t_pick, t_min, c, has_wind, wind, lead_max):
    """Whether a listed shot emitted in [``t_min``, ``t_pick``] s predicts its arrival at a node (at
    ``rx``, ``ry``, ``rz`` m) more than 0 and at most ``lead_max`` s after ``t_pick``
    (``Associator._ahead_of_a_shot``). ``xyt`` (S, 4): the shot table (east, north m, emission s, up m);
    ``wind`` (3,) m/s, used if ``has_wind``. The travel time is ``locate._travel_times``' arithmetic:
    with wind :func:`_advected_s` (numpy's dot products there may round the last bit otherwise),
    without it d / c."""
    for i in range(xyt.shape[0]):
        t0 = xyt[i, 2]
        if t0 > t_pick or t0 < t_min:
            continue
        dx = rx - xyt[i, 0]
        dy = ry - xyt[i, 1]
        dz = rz - xyt[i, 3]
        if has_wind:
            tt = _advected_s(dx, dy, dz, c, wind)
        else:
            tt = np.sqrt((dx * dx + dz * dz) + dy * dy) / c  # locate._norm2's order: the same last bit
        lead = t0 + tt - t_pick
        if lead > 0.0 and lead <= lead_max:
            return True
    return False


@njit(cache=True)
def quick_fit(pos, t, sig, dz2, x0, y0, t0, c, scales):
    """The quick screen's robust fit of a candidate set (``Associator._quick_consensus``): from the grid
    point (``x0``, ``y0``) m and emission time ``t0`` s, one Gauss-Newton step on (x, y, t0) per scale of
    ``scales`` (s), each pick weighted 1 / (1 + (residual / max(scale, 2 sigma))^2) (Cauchy), in still
    air at the assumed source height (``dz2`` (N,) the squared height offsets, m^2; ``pos`` (N, 3) m,
    ``t`` (N,) s, ``sig`` (N,) s). Returns (x, y, t0, solved): solved is false where a step's 3 x 3
    normal matrix is singular (the caller then leaves the set to the full solve).

    The normal equations are summed pick by pick and solved by Gaussian elimination: as numpy steps
    (a stack, two matrix products and a LAPACK solve per scale) this was 0.23 ms per candidate set,
    now 0.06 ms (dense scene). The result agrees with those steps' to rounding.
    """
    x = x0
    y = y0
    tt = t0
    a = np.empty((3, 4))
    for scale in scales:
        for r_ in range(3):
            for c_ in range(4):
                a[r_, c_] = 0.0
        for i in range(pos.shape[0]):
            dx = pos[i, 0] - x
            dy = pos[i, 1] - y
            rng = max(np.sqrt(dx * dx + dy * dy + dz2[i]), 1e-6)
            res = t[i] - tt - rng / c
            q = res / max(scale, 2.0 * sig[i])
            w = 1.0 / (1.0 + q * q)
            j0 = -dx / (rng * c)
            j1 = -dy / (rng * c)
            a[0, 0] += w * j0 * j0
            a[0, 1] += w * j0 * j1
            a[0, 2] += w * j0
            a[1, 1] += w * j1 * j1
            a[1, 2] += w * j1
            a[2, 2] += w
            a[0, 3] -= w * j0 * res
            a[1, 3] -= w * j1 * res
            a[2, 3] -= w * res
        a[1, 0] = a[0, 1]
        a[2, 0] = a[0, 2]
        a[2, 1] = a[1, 2]
        for d in range(3):
            a[d, d] += 1e-12
        # Gaussian elimination on the augmented 3 x 4 matrix (symmetric positive definite: no pivoting).
        for col in range(3):
            if a[col, col] == 0.0:
                return x, y, tt, False
            for r_ in range(col + 1, 3):
                f = a[r_, col] / a[col, col]
                for c_ in range(col, 4):
                    a[r_, c_] -= f * a[col, c_]
        s2 = a[2, 3] / a[2, 2]
        s1 = (a[1, 3] - a[1, 2] * s2) / a[1, 1]
        s0 = (a[0, 3] - a[0, 1] * s1 - a[0, 2] * s2) / a[0, 0]
        x -= s0
        y -= s1
        tt -= s2
    return x, y, tt, True


@njit(cache=True)
def best_points(score, keep, n_min, whole):
    """Indices of the ``keep`` highest ``score`` values (all of them if fewer), highest first, of equal
    scores the earlier point; then only those that explain enough nodes: ``score + 1 >= n_min``, or
    with ``whole`` ``ceil(score) + 1 >= n_min`` (a search's rule, ``Associator._search``). (As numpy,
    argpartition on the negated scores and the rule took five calls and an array the size of the grid;
    only ties at the cut could differ, where any choice is as good.)"""
    n = min(keep, score.shape[0])
    top = np.empty(n, dtype=np.intp)
    m = 0
    for g in range(score.shape[0]):
        v = score[g]
        if m == n:
            if v <= score[top[n - 1]]:
                continue
            m -= 1
        # insert g after every kept point with a score at least v
        j = m
        while j > 0 and score[top[j - 1]] < v:
            top[j] = top[j - 1]
            j -= 1
        top[j] = g
        m += 1
    out = np.empty(m, dtype=np.intp)
    n_out = 0
    for i in range(m):
        v = score[top[i]]
        if (np.ceil(v) if whole else v) + 1 >= n_min:
            out[n_out] = top[i]
            n_out += 1
    return out[:n_out]


@njit(cache=True)
def member_matrix(nodes, member_rows, seed_row, fits):
    """Which of the onset-store rows ``nodes`` (N,) (sorted) are members of each of P hypotheses: the seed's
    row, and the rows ``member_rows`` (K,) where ``fits`` (K, P) holds. Returns (member (P, N), members per
    hypothesis (P,), whether every row given is among ``nodes``)."""
    p_n = fits.shape[1]
    member = np.zeros((p_n, nodes.shape[0]), dtype=np.bool_)
    n_mem = np.ones(p_n, dtype=np.int64)
    at = np.searchsorted(nodes, seed_row)
    if at >= nodes.shape[0] or nodes[at] != seed_row:
        return member, n_mem, False
    for p in range(p_n):
        member[p, at] = True
    for k in range(member_rows.shape[0]):
        at = np.searchsorted(nodes, member_rows[k])
        if at >= nodes.shape[0] or nodes[at] != member_rows[k]:
            return member, n_mem, False
        for p in range(p_n):
            if fits[k, p]:
                member[p, at] = True
                n_mem[p] += 1
    return member, n_mem, True


@njit(cache=True)
def split_cells(pts, keep, offsets):
    """The centres (len(keep) x S, 2) m of the cells ``pts[keep]`` (G, 2) m split into the S sub-cells at
    ``offsets`` (S, 2) m, cell by cell (a search's refinement stages)."""
    s_n = offsets.shape[0]
    out = np.empty((keep.shape[0] * s_n, 2))
    for i in range(keep.shape[0]):
        g = keep[i]
        for j in range(s_n):
            out[i * s_n + j, 0] = pts[g, 0] + offsets[j, 0]
            out[i * s_n + j, 1] = pts[g, 1] + offsets[j, 1]
    return out


@njit(cache=True)
def candidate_sets(order, pts, chosen, rel, starts, t_seed, seed_x, seed_y, seed_dz2, node_xy, dz2, c, tol,
                   max_range, min_nodes):
    """The candidate detection sets of a search's best fine points, each set once.

    ``order`` (M,): the fine points ``pts`` (G, 2) m to try, best first; ``chosen`` (K, G): each
    partner's chosen onset there (:func:`support_points`); ``rel``, ``starts``: the partners' onsets
    relative to the seed (s) and slice starts; ``t_seed`` (s) the seed's onset, at (``seed_x``,
    ``seed_y``) m with squared height offset ``seed_dz2`` (m^2); ``node_xy`` (K, 2) m and ``dz2`` (K,)
    m^2 the partners'; ``c`` m/s; ``tol`` the fine tolerance (s).

    Returns (xy (M, 2) m and t0 (M,) s of the points, with the emission time that puts the seed's pick
    there; ch (K, M) the chosen onsets; fits (K, M) whether that onset lies within ``tol`` of the
    predicted arrival, at a node within ``max_range`` m; first: the points whose set (the chosen onset
    of each fitting node) holds at least ``min_nodes`` picks with the seed's and differs from every
    earlier point's, in order). As numpy steps this was a dozen calls per search on arrays of a few
    dozen elements; the arithmetic is theirs, step for step.
    """
    m_n = order.shape[0]
    k_n = node_xy.shape[0]
    xy = np.empty((m_n, 2))
    t0 = np.empty(m_n)
    ch = np.empty((k_n, m_n), dtype=np.intp)
    fits = np.empty((k_n, m_n), dtype=np.bool_)
    n_fit = np.zeros(m_n, dtype=np.intp)
    r2 = max_range * max_range
    for m in range(m_n):
        g = order[m]
        x = pts[g, 0]
        y = pts[g, 1]
        xy[m, 0] = x
        xy[m, 1] = y
        dxs = x - seed_x
        dys = y - seed_y
        t0[m] = t_seed - np.sqrt(dxs * dxs + dys * dys + seed_dz2) / c
        for k in range(k_n):
            ex = x - node_xy[k, 0]
            ey = y - node_xy[k, 1]
            pred = t0[m] + np.sqrt(ex * ex + ey * ey + dz2[k]) / c
            i = chosen[k, g]
            ch[k, m] = i
            got = rel[starts[k] + i] + t_seed
            ok = abs(got - pred) < tol and ex * ex + ey * ey <= r2
            fits[k, m] = ok
            if ok:
                n_fit[m] += 1
    first = np.empty(m_n, dtype=np.intp)
    n_first = 0
    for m in range(m_n):
        if n_fit[m] + 1 < min_nodes:
            continue
        new = True
        for f in range(n_first):
            q = first[f]
            same = True
            for k in range(k_n):
                if fits[k, m] != fits[k, q] or (fits[k, m] and ch[k, m] != ch[k, q]):
                    same = False
                    break
            if same:
                new = False
                break
        if new:
            first[n_first] = m
            n_first += 1
    return xy, t0, ch, fits, first[:n_first]


@njit(cache=True)
def partner_onsets(times, pool_rows, lo, hi, t_seed):
    """The partners' onsets for the support kernels: positions ``lo[k]:hi[k]`` of row ``pool_rows[k]`` of
    ``times`` (s) less ``t_seed`` (s), concatenated, and each partner's slice starts (K + 1,). (With ``t_seed`` 0
    the onsets themselves: :func:`seed_partners` reads its nearest partners' so.)"""
    k_n = pool_rows.shape[0]
    starts = np.empty(k_n + 1, dtype=np.intp)
    starts[0] = 0
    for k in range(k_n):
        starts[k + 1] = starts[k] + hi[k] - lo[k]
    rel = np.empty(starts[k_n])
    for k in range(k_n):
        r = pool_rows[k]
        for i in range(hi[k] - lo[k]):
            rel[starts[k] + i] = times[r, lo[k] + i] - t_seed
    return rel, starts


@njit(cache=True)
def grid_search(times, pool_rows, lo, hi, diff, tol, off, seg, rows, coarse_pts, seed_xy, seed_dz2, node_xy, dz2,
                c, step, match_tol, max_range, keep1, sub1, offsets1, keep2, sub2, offsets2, exact, n_order, n_min,
                whole, t_seed):
    """A search's grid stages in one call (``Associator._search``).

    The partners' onsets relative to the seed's ``t_seed`` (s): for partner k, positions
    ``lo[k]:hi[k]`` of row ``pool_rows[k]`` of ``times`` (:func:`partner_onsets`). The coarse grid
    ``coarse_pts`` scored from the seed's table (:func:`support_table`, with ``diff`` to ``rows``); its
    ``keep1`` best cells split at ``offsets1`` (:func:`best_points`, :func:`split_cells`) and scored
    from the geometry (:func:`support_points`); their ``keep2`` best split at ``offsets2`` and, with the
    exact points ``exact`` (E, 2) m (E may be 0), scored at the fine tolerance; and the candidate sets
    of the ``n_order`` best fine points (:func:`candidate_sets`). A cell of side ``step`` m splits into
    ``sub1`` x ``sub1`` cells, those into ``sub2`` x ``sub2`` (``offsets1``, ``offsets2``: the sub-cells'
    centres), and each stage's tolerance is sqrt(2) x side / c + ``match_tol`` (s). The other
    arguments are those kernels'.

    Returns (whether every refinement kept some cell; then :func:`candidate_sets`' five arrays and the
    fine tolerance (s)). One call where the stages were nine from Python, each with its dispatch and
    arrays between them; the arithmetic is theirs, in their order.
    """
    rel, starts = partner_onsets(times, pool_rows, lo, hi, t_seed)
    inv_c = 1.0 / c
    score, _ = support_table(rel, starts, diff, tol, off, seg, rows, coarse_pts.shape[0], False)
    top = best_points(score, keep1, n_min, whole)
    k_n = node_xy.shape[0]
    if top.shape[0] == 0:
        return (False, np.empty((0, 2)), np.empty(0), np.empty((k_n, 0), dtype=np.intp),
                np.empty((k_n, 0), dtype=np.bool_), np.empty(0, dtype=np.intp), 0.0)
    points = split_cells(coarse_pts, top, offsets1)
    step = step / sub1
    tol_s = np.sqrt(2.0) * step / c + match_tol
    score, _ = support_points(rel, starts, points, seed_xy, seed_dz2, node_xy, dz2, inv_c, tol_s, max_range, False)
    top = best_points(score, keep2, n_min, whole)
    if top.shape[0] == 0:
        return (False, np.empty((0, 2)), np.empty(0), np.empty((k_n, 0), dtype=np.intp),
                np.empty((k_n, 0), dtype=np.bool_), np.empty(0, dtype=np.intp), 0.0)
    points = split_cells(points, top, offsets2)
    if exact.shape[0]:
        points = np.concatenate((points, exact))
    step = step / sub2
    tol_s = np.sqrt(2.0) * step / c + match_tol
    score, chosen = support_points(rel, starts, points, seed_xy, seed_dz2, node_xy, dz2, inv_c, tol_s, max_range,
                                   True)
    order = best_points(score, n_order, n_min, whole)
    xy, t0, ch, fits, first = candidate_sets(order, points, chosen, rel, starts, t_seed, seed_xy[0], seed_xy[1],
                                             seed_dz2, node_xy, dz2, c, tol_s, max_range, n_min)
    return True, xy, t0, ch, fits, first, tol_s


# -- compiled ahead of the first detection ------------------------------------------------
_F8, _F8_2, _F4 = nt.float64[::1], nt.float64[:, ::1], nt.float32[::1]
_I8, _I8_3 = nt.int64[::1], nt.int64[:, :, ::1]

#: The argument types the associator passes to each kernel (one specialisation each; :func:`evidence_codes` (with
#: :func:`silent_counts` and :func:`verdict_codes`) and :func:`member_matrix` or :func:`member_row` are compiled
#: inside :func:`evidence_of_sets` and :func:`evidence_of_set`, :func:`triplet_points` inside
#: :func:`seed_partners`, :func:`repeat_places` (with :func:`recent_places` and :func:`first_of_places`) and
#: :func:`evidence_codes` through :func:`_seed_only_evidence` (with :func:`_unheard_counts`) inside
#: :func:`repeat_candidates`, that evidence inside :func:`refused_again` too,
#: :func:`shots_near_arrival` inside :func:`shots_to_attach` too (and alone for picks without trusted time or
#: in wind), and
#: :func:`support_table`, :func:`support_points`, :func:`best_points`, :func:`split_cells` and :func:`candidate_sets`
#: inside :func:`grid_search`).
SIGNATURES = (
    (grid_search, (_F8_2, _I8, _I8, _I8, _F4, _F4, _I8, _I8_3, _I8, _F8_2, _F8, nt.float64, _F8_2, _F8)
     + (nt.float64,) * 4 + (nt.int64, nt.int64, _F8_2, nt.int64, nt.int64, _F8_2, _F8_2, nt.int64, nt.int64,
                            nt.boolean, nt.float64)),
    (table_segments, (_F8_2, _I8, _F8_2, nt.float64, _I8_3)),
    (table_values, (_F8_2, _F8, _F8_2, _F8_2, _F8) + (nt.float64,) * 4 + (_I8_3, _I8, _F4, _F4)),
    (seed_partners, (_F8_2, _I8, _I8, _F8, nt.float64, nt.float64, nt.float64, nt.int64, nt.int64, _F8, nt.float64,
                     _F8_2, _F8, nt.float64, nt.int64, nt.float64)),
    (shots_near_arrival, (_F8_2,) + (nt.float64,) * 8 + (nt.boolean,)),
    (shots_to_attach, (_F8_2,) + (nt.float64,) * 10),
    (evidence_of_sets, (_F8_2, _F8, nt.float64, nt.float64, nt.float64, _F8_2, _I8, _I8, nt.int64, nt.boolean[:, ::1],
                        _F8_2, _I8, _F8_2, _I8, nt.float64, _F8, nt.float64, nt.float64, nt.int64, _I8, nt.boolean,
                        nt.float64, nt.float64, nt.int64)),
    (evidence_of_set, (nt.float64,) * 6 + (_F8_2, _I8, _I8, nt.int64, _F8_2, _I8, _F8_2, _I8, nt.float64, _F8,
                                          nt.float64, nt.float64, nt.int64, nt.int64, nt.float64, nt.float64,
                                          nt.int64)),
    (quick_fit, (_F8_2, _F8, _F8, _F8) + (nt.float64,) * 4 + (_F8,)),
    (sets_near_arrival, (_F8_2, nt.int64) + (nt.float64,) * 6),
    (refused_again, (_F8_2,) + (nt.float64,) * 10 + (_F8_2, _I8, nt.int64, _F8_2, _I8, _F8_2, _I8, _F8, nt.float64,
                                                   nt.float64, nt.int64, _F8_2, nt.float64, nt.float64, nt.int64,
                                                   nt.int64)),
    (repeat_candidates, (_F8_2,) + (nt.float64,) * 8 + (nt.int64, nt.int64) + (nt.float64,) * 5
     + (_F8_2, _I8, nt.int64, _F8_2, _I8, _F8_2, _I8, _F8, nt.float64, nt.float64, nt.int64, _F8_2, nt.float64,
        nt.float64, nt.int64, nt.int64)),
    (trim_rows, (_F8_2, _I8, nt.int64, nt.float64)),
    (insert_row, (_F8_2, _I8, nt.int64, nt.float64)),
    (delete_at, (_F8_2, _I8, nt.int64, nt.int64)),
    (set_completion, (_F8_2, _I8) + (nt.float64,) * 6 + (_F8, _I8, _I8, _F8_2, _I8, _F8_2, _I8, nt.int64, nt.float64)),
    (arrival_windows, (_F8_2, _I8) + (nt.float64,) * 6 + (_F8, _I8, _F8_2, _I8, nt.float64)),
    (ahead_of_shots, (_F8_2,) + (nt.float64,) * 6 + (nt.boolean, _F8, nt.float64)),
)


def compile_all() -> None:
    """Compile every kernel for :data:`SIGNATURES`, or load it from numba's on-disk cache.

    Called when an associator is made, so that the first detection after a hub
    starts is not the one that waits: compiling on first use held the first
    search for 8.5 s with an empty cache and 0.27 s with a warm one (dev
    machine). Each later call returns at once.
    """
    for kernel, sig in SIGNATURES:
        kernel.compile(sig)
