"""Node position refinement and speed of sound, from events at known positions.

* Positions: ``t_ij = T_j + |p_i - s_j| / c + noise``; the nodes' east/north
  (height kept) and the emission times are solved by non-linear least squares
  (soft-L1 loss against echo picks), started from the surveyed positions. A node
  needs arrivals from three or more well-spread events.
* Speed of sound: ``t_ij = T_j + d_ij * s`` is linear in the emission times and
  the slowness ``s = 1/c``; the temperature follows from ``c = 331.3 sqrt(1 + T/273.15)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import least_squares

from .clock import _robust_lstsq
from .common import Observation, SolverResult

__all__ = ["refine_positions", "solve_speed_of_sound"]


def refine_positions(
    obs: list[Observation],
    c_mps: float,
    *,
    to_wgs84: Callable[[np.ndarray], tuple[float, float, float]] | None = None,
) -> SolverResult:
    """Refined node east/north (m) from arrivals of events at known positions (times unknown).

    ``to_wgs84`` (bundle ENU -> lat, lon, alt) makes the patch a hub ``[nodes.<id>]``
    override; without it (purely local bundles) the patch gives ``enu_m``.
    """
    nodes = sorted({o.node_id for o in obs})
    events = sorted({o.event_id for o in obs})
    if len(events) < 3:
        raise ValueError("position refinement needs arrivals of at least 3 events at known positions")
    ni = {n: i for i, n in enumerate(nodes)}
    ej = {e: j for j, e in enumerate(events)}
    p0 = {o.node_id: np.array(o.node_enu_m, float) for o in obs}
    src = {o.event_id: np.array(o.event_enu_m, float) for o in obs}
    t_ref = min(o.t_ns for o in obs)
    i_n = np.array([ni[o.node_id] for o in obs])
    i_e = np.array([ej[o.event_id] for o in obs])
    t = np.array([(o.t_ns - t_ref) / 1e9 for o in obs])
    s = np.array([src[e] for e in events])
    up = np.array([p0[n][2] for n in nodes])
    nn, ne = len(nodes), len(events)

    def fun(x):
        xy = x[: 2 * nn].reshape(nn, 2)
        p = np.column_stack([xy, up])
        d = np.linalg.norm(p[i_n] - s[i_e], axis=1)
        return t - (x[2 * nn:][i_e] + d / c_mps)

    xy0 = np.array([p0[n][:2] for n in nodes])
    d0 = np.linalg.norm(np.column_stack([xy0, up])[i_n] - s[i_e], axis=1)
    t0 = np.array([np.median((t - d0 / c_mps)[i_e == j]) for j in range(ne)])
    sol = least_squares(fun, np.concatenate([xy0.ravel(), t0]), loss="soft_l1", f_scale=1e-3, x_scale="jac")
    xy = sol.x[: 2 * nn].reshape(nn, 2)
    rms = float(np.sqrt(np.mean(sol.fun ** 2)))
    dof = max(len(sol.fun) - len(sol.x), 1)
    cov = np.linalg.pinv(sol.jac.T @ sol.jac) * (np.sum(sol.fun ** 2) / dof)
    sd = np.sqrt(np.clip(np.diag(cov)[: 2 * nn], 0, None)).reshape(nn, 2)
    lines = [f"Node positions from {len(obs)} arrivals of {ne} events at known positions, c = {c_mps:.2f} m/s; "
             f"RMS residual {rms * 1e3:.3f} ms.", "",
             "| node | moved east (m) | moved north (m) | ± east | ± north |", "| --- | --- | --- | --- | --- |"]
    patch: dict = {"nodes": {}}
    refined = {}
    for n in nodes:
        k = ni[n]
        new = np.array([xy[k, 0], xy[k, 1], up[k]])
        refined[n] = new.tolist()
        dv = new - p0[n]
        lines.append(f"| {n} | {dv[0]:.2f} | {dv[1]:.2f} | {sd[k, 0]:.2f} | {sd[k, 1]:.2f} |")
        if to_wgs84 is not None:
            lat, lon, alt = to_wgs84(new)
            patch["nodes"][n] = {"lat_deg": round(lat, 8), "lon_deg": round(lon, 8), "alt_m": round(alt, 3)}
        else:
            patch["nodes"][n] = {"enu_m": [round(float(v), 3) for v in new]}
    target = "hub.toml ([nodes.<id>] surveyed overrides)" if to_wgs84 else "the recording bundle (nodes[].enu_m)"
    return SolverResult("node_positions", target, {"enu_m": refined, "sigma_m": sd.tolist(), "rms_residual_s": rms},
                        patch, lines)


def solve_speed_of_sound(obs: list[Observation]) -> SolverResult:
    """Speed of sound (m/s) and the equivalent air temperature (°C) from events at known positions."""
    events = sorted({o.event_id for o in obs})
    ej = {e: j for j, e in enumerate(events)}
    d = np.array([np.linalg.norm(np.subtract(o.node_enu_m, o.event_enu_m)) for o in obs])
    if len(obs) < len(events) + 2 or np.ptp(d) < 20.0:
        raise ValueError("speed of sound needs several arrivals per event over distances spread by >= 20 m")
    t_ref = min(o.t_ns for o in obs)
    a = np.zeros((len(obs), len(events) + 1))
    for k, o in enumerate(obs):
        a[k, ej[o.event_id]] = 1.0
    a[:, -1] = d
    b = np.array([(o.t_ns - t_ref) / 1e9 for o in obs])
    x, keep = _robust_lstsq(a, b)
    r = (b - a @ x)[keep]
    dof = max(int(keep.sum()) - a.shape[1], 1)
    cov = np.linalg.pinv(a[keep].T @ a[keep]) * (np.sum(r ** 2) / dof)
    slow, slow_sd = float(x[-1]), float(np.sqrt(cov[-1, -1]))
    c = 1.0 / slow
    c_sd = slow_sd / slow ** 2
    temp = 273.15 * ((c / 331.3) ** 2 - 1.0)
    temp_sd = 273.15 * 2 * c / 331.3 ** 2 * c_sd
    lines = [f"Speed of sound from {int(keep.sum())} of {len(obs)} arrivals ({len(events)} events, distances "
             f"{d.min():.0f}-{d.max():.0f} m): c = {c:.2f} ± {c_sd:.2f} m/s, i.e. {temp:.1f} ± {temp_sd:.1f} °C "
             f"(dry air); RMS residual {np.sqrt(np.mean(r ** 2)) * 1e3:.3f} ms.",
             "", "The patch sets the hub's temperature; wind and humidity shift c by a few m/s, so "
             "prefer this over a distant weather station only when the uncertainty is below ~1 m/s."]
    patch = {"location": {"temperature_c": round(float(np.clip(temp, -60, 60)), 2)}}
    return SolverResult("speed_of_sound", "hub.toml", {"c_mps": c, "c_sigma_mps": c_sd, "temperature_c": temp,
                                                       "temperature_sigma_c": temp_sd}, patch, lines)
