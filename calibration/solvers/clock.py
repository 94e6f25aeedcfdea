"""Per-node clock offsets: from events at known positions, or self-calibrated from many events.

Model (seconds): a node ``i`` stamps the arrival of event ``j`` at
``t_ij = T_j + |p_i - s_j| / c + o_i + noise``, with ``T_j`` the emission time,
``s_j`` the source, ``p_i`` the node and ``o_i`` its clock offset (node clock
minus true time; constant over the recording). A pick bias common to all
nodes is indistinguishable from ``T_j`` and drops out.

* Known positions and times (a calibration shot with a timed trigger, or a
  simulation): ``o_i`` = median over events of ``t_ij - T_j - d_ij / c``.
* Known positions, unknown times: ``T_j`` and ``o_i`` are solved together by
  iteratively reweighted least squares with the gauge sum(o) = 0 (only
  offset *differences* are observable).
* Unknown positions (self-calibration): ``s_j`` (east, north), ``T_j`` and
  ``o_i`` by non-linear least squares, started from the hub's own solutions,
  gauge sum(o) = 0. Needs many events around the array; the report gives the
  condition of the problem.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from scipy.optimize import least_squares

from .common import Observation, SolverResult

__all__ = ["solve_clock_offsets", "self_calibrate_clocks"]


def _robust_lstsq(a: np.ndarray, b: np.ndarray, n_iter: int = 10, k: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Linear least squares robust to outliers (echo picks); returns (x, inlier mask).

    A soft-L1 fit first (so one wild pick cannot drag the whole solution), then
    rows beyond ``k`` robust sigmas are dropped and the rest solved exactly.
    """
    x = np.linalg.lstsq(a, b, rcond=None)[0]
    r = b - a @ x
    scale = max(1.4826 * float(np.median(np.abs(r - np.median(r)))), 1e-7)
    x = least_squares(lambda v: a @ v - b, x, loss="soft_l1", f_scale=scale).x
    keep = np.ones(len(b), bool)
    for _ in range(n_iter):
        r = b - a @ x
        s = 1.4826 * np.median(np.abs(r[keep] - np.median(r[keep]))) + 1e-7
        new = np.abs(r) <= k * s
        if new.sum() < a.shape[1] or np.array_equal(new, keep):
            break
        keep = new
        x = np.linalg.lstsq(a[keep], b[keep], rcond=None)[0]
    return x, keep


def solve_clock_offsets(obs: list[Observation], c_mps: float, *, use_event_times: bool = True) -> SolverResult:
    """Clock offset of every node (s) from arrivals of events at known positions."""
    if not obs:
        raise ValueError("no observations: no detection near any predicted arrival")
    nodes = sorted({o.node_id for o in obs})
    events = sorted({o.event_id for o in obs})
    t_ref = min(o.t_ns for o in obs)
    r = np.array([(o.t_ns - t_ref) / 1e9 - np.linalg.norm(np.subtract(o.node_enu_m, o.event_enu_m)) / c_mps
                  for o in obs])
    ni = {n: i for i, n in enumerate(nodes)}
    absolute = use_event_times and all(o.event_time_ns is not None for o in obs)
    offsets, sd, n_used = {}, {}, defaultdict(int)
    if absolute:
        res = r - np.array([(o.event_time_ns - t_ref) / 1e9 for o in obs])
        for n in nodes:
            v = res[[o.node_id == n for o in obs]]
            med = float(np.median(v))
            offsets[n] = med
            sd[n] = float(1.4826 * np.median(np.abs(v - med)) / np.sqrt(len(v))) if len(v) > 1 else float("nan")
            n_used[n] = len(v)
        gauge = "absolute (event emission times known)"
        rms = float(np.sqrt(np.mean((res - np.array([offsets[o.node_id] for o in obs])) ** 2)))
    else:
        ej = {e: j for j, e in enumerate(events)}
        a = np.zeros((len(obs) + 1, len(nodes) + len(events)))
        for k, o in enumerate(obs):
            a[k, ni[o.node_id]] = 1.0
            a[k, len(nodes) + ej[o.event_id]] = 1.0
        a[-1, : len(nodes)] = 1.0  # gauge: offsets sum to zero
        b = np.append(r, 0.0)
        x, keep = _robust_lstsq(a, b)
        resid = (b - a @ x)[:-1]
        rms = float(np.sqrt(np.mean(resid[keep[:-1]] ** 2)))
        for n in nodes:
            sel = np.array([o.node_id == n for o in obs]) & keep[:-1]
            offsets[n] = float(x[ni[n]])
            n_used[n] = int(sel.sum())
            sd[n] = rms / np.sqrt(max(n_used[n], 1))
        gauge = "relative: offsets sum to zero (event times unknown)"
    lines = [f"Clock offsets from {len(obs)} arrivals of {len(events)} events at known positions, "
             f"c = {c_mps:.2f} m/s; gauge: {gauge}; RMS residual {rms * 1e3:.3f} ms.", "",
             "| node | offset (ms) | ± (ms) | arrivals |", "| --- | --- | --- | --- |"]
    lines += [f"| {n} | {offsets[n] * 1e3:.3f} | {sd[n] * 1e3:.3f} | {n_used[n]} |" for n in nodes]
    lines += ["", "Positive = the node's clock is ahead of true time. Apply by subtracting the offset "
              "from the node's stamps (bundle: `start_time_ns -= clock_offset_ns`)."]
    patch = {"nodes": {n: {"clock_offset_ns": int(round(offsets[n] * 1e9))} for n in nodes}}
    return SolverResult("clock_offsets", "the recording bundle (nodes[].start_time_ns); live nodes: "
                        "the node's time service", {"offsets_s": offsets, "sigma_s": sd, "rms_residual_s": rms,
                                                    "gauge": gauge}, patch, lines)


def self_calibrate_clocks(
    picks: dict[str, dict[str, int]],
    node_enu_m: dict[str, np.ndarray],
    start_enu_m: dict[str, np.ndarray],
    c_mps: float,
    *,
    source_height_m: float = 0.0,
) -> SolverResult:
    """Clock offsets (s) and source positions from many events with unknown positions.

    ``picks``: event (shot) id -> {node_id: stamped onset ns}; ``start_enu_m``: a
    first guess of each event's position (the hub's solution). Sources are
    solved in 2-D at ``source_height_m``.
    """
    events = sorted(e for e, p in picks.items() if len(p) >= 3)
    nodes = sorted({n for e in events for n in picks[e]})
    if len(events) < 2 or len(nodes) < 3:
        raise ValueError("self-calibration needs at least 2 events heard by 3 or more nodes")
    ni = {n: i for i, n in enumerate(nodes)}
    t_ref = min(t for e in events for t in picks[e].values())
    rows = [(ni[n], j, (t - t_ref) / 1e9) for j, e in enumerate(events) for n, t in picks[e].items()]
    idx_n = np.array([r[0] for r in rows])
    idx_e = np.array([r[1] for r in rows])
    t_obs = np.array([r[2] for r in rows])
    pn = np.array([node_enu_m[n] for n in nodes], float)
    ne, nn = len(events), len(nodes)

    def unpack(x):
        xy = x[: 2 * ne].reshape(ne, 2)
        t0 = x[2 * ne: 3 * ne]
        off = x[3 * ne:]
        return xy, t0, off

    def fun(x):
        xy, t0, off = unpack(x)
        src = np.column_stack([xy, np.full(ne, source_height_m)])
        d = np.linalg.norm(pn[idx_n] - src[idx_e], axis=1)
        res = t_obs - (t0[idx_e] + d / c_mps + off[idx_n])
        return np.append(res, off.sum())  # gauge

    xy0 = np.array([start_enu_m[e][:2] for e in events], float)
    d0 = np.linalg.norm(pn[idx_n][:, :2] - xy0[idx_e], axis=1)
    t00 = np.array([np.median((t_obs - d0 / c_mps)[idx_e == j]) for j in range(ne)])
    x0 = np.concatenate([xy0.ravel(), t00, np.zeros(nn)])
    sol = least_squares(fun, x0, loss="soft_l1", f_scale=1e-3, x_scale="jac")
    xy, _, off = unpack(sol.x)
    resid = sol.fun[:-1]
    rms = float(np.sqrt(np.mean(resid ** 2)))
    dof = max(len(resid) - len(sol.x) + 1, 1)
    try:
        cov = np.linalg.pinv(sol.jac.T @ sol.jac) * (np.sum(resid ** 2) / dof)
        sd = np.sqrt(np.clip(np.diag(cov)[3 * ne:], 0, None))
        cond = float(np.linalg.cond(sol.jac))
    except np.linalg.LinAlgError:
        sd, cond = np.full(nn, np.nan), float("inf")
    offsets = {n: float(off[ni[n]]) for n in nodes}
    lines = [f"Self-calibration from {ne} events with unknown positions and {len(rows)} picks; "
             f"c = {c_mps:.2f} m/s; gauge: offsets sum to zero; RMS residual {rms * 1e3:.3f} ms; "
             f"Jacobian condition number {cond:.3g} (large = poorly observable: add events around the array).",
             "", "| node | offset (ms) | ± (ms) |", "| --- | --- | --- |"]
    lines += [f"| {n} | {offsets[n] * 1e3:.3f} | {sd[ni[n]] * 1e3:.3f} |" for n in nodes]
    patch = {"nodes": {n: {"clock_offset_ns": int(round(offsets[n] * 1e9))} for n in nodes}}
    return SolverResult("clock_self_calibration", "the recording bundle (nodes[].start_time_ns)",
                        {"offsets_s": offsets, "sigma_s": {n: float(sd[ni[n]]) for n in nodes},
                         "rms_residual_s": rms, "condition": cond,
                         "sources_enu_m": {e: xy[j].tolist() for j, e in enumerate(events)}}, patch, lines)
