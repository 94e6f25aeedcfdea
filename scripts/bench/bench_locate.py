"""Benchmark of the hub locator (shotline.hub.locate) against the DESIGN.md budgets.

Scenario: 8 nodes on an irregular urban layout (~0.9 x 0.9 km, microphones on
poles and roofs 4-15 m up), sources at 1.5 m height drawn uniformly inside the
array, c = 343 m/s known, Gaussian timing noise sigma = 50 us on every node.

Figures:

* ``loc_rmse_over_crlb``: RMS of the 2-D position error over all clean trials
  divided by the RMS of the Cramér-Rao bound over the same sources,
  sqrt(mean |e|^2) / sqrt(mean trace(CRLB position block)). Budget <= 1.10.
* ``loc_outlier_p90_m``: one random node gets an echo +5..+30 ms late; 90th
  percentile of the 2-D error (m). Budget < 0.1 m.
* ``loc_ms_per_solve``: mean wall time per ``locate`` call over the clean
  trials (ms). The hub needs thousands of detections per second.

Run: ``.venv/bin/python scripts/bench/bench_locate.py [--quick]``.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from shotline.hub.locate import crlb_position_rms_m, locate, travel_times_s

C_MPS = 343.0
SIGMA_S = 50e-6
SOURCE_HEIGHT_M = 1.5
NODES_M = np.array(
    [
        [0.0, 0.0, 5.0],
        [420.0, 30.0, 12.0],
        [810.0, -40.0, 8.0],
        [60.0, 390.0, 6.0],
        [450.0, 460.0, 15.0],
        [860.0, 420.0, 4.0],
        [120.0, 820.0, 9.0],
        [700.0, 850.0, 11.0],
    ]
)


def _sources(rng: np.random.Generator, n: int) -> np.ndarray:
    """Uniform sources inside the array's convex region (a margin in from the outer nodes)."""
    xy = rng.uniform([100.0, 60.0], [780.0, 800.0], (n, 2))
    return np.column_stack([xy, np.full(n, SOURCE_HEIGHT_M)])


def run(quick: bool = False) -> dict[str, float]:
    """Run the benchmark; returns the figures listed in the module docstring."""
    n_trials = 500 if quick else 5000
    rng = np.random.default_rng(20240601)

    sq_err, sq_crlb, wall = [], [], []
    for src in _sources(rng, n_trials):
        t = 3.0 + travel_times_s(NODES_M, src, c_mps=C_MPS) + rng.normal(0.0, SIGMA_S, len(NODES_M))
        t_start = time.perf_counter()
        sol = locate(NODES_M, t, c_mps=C_MPS, sigma_s=SIGMA_S, source_height_m=SOURCE_HEIGHT_M)
        wall.append(time.perf_counter() - t_start)
        sq_err.append(float(np.sum((sol.position_m[:2] - src[:2]) ** 2)))
        sq_crlb.append(crlb_position_rms_m(NODES_M, src, c_mps=C_MPS, sigma_s=SIGMA_S) ** 2)

    echo_err, echo_wall = [], []
    for src in _sources(rng, n_trials):
        t = 3.0 + travel_times_s(NODES_M, src, c_mps=C_MPS) + rng.normal(0.0, SIGMA_S, len(NODES_M))
        t[rng.integers(len(NODES_M))] += rng.uniform(5e-3, 30e-3)
        t_start = time.perf_counter()
        sol = locate(NODES_M, t, c_mps=C_MPS, sigma_s=SIGMA_S, source_height_m=SOURCE_HEIGHT_M)
        echo_wall.append(time.perf_counter() - t_start)
        echo_err.append(float(np.hypot(*(sol.position_m[:2] - src[:2]))))

    return {
        "loc_rmse_over_crlb": float(np.sqrt(np.mean(sq_err) / np.mean(sq_crlb))),
        "loc_rmse_m": float(np.sqrt(np.mean(sq_err))),
        "loc_crlb_rms_m": float(np.sqrt(np.mean(sq_crlb))),
        "loc_outlier_p90_m": float(np.percentile(echo_err, 90)),
        "loc_outlier_max_m": float(np.max(echo_err)),
        "loc_ms_per_solve": 1e3 * float(np.mean(wall)),
        "loc_ms_per_solve_outlier": 1e3 * float(np.mean(echo_wall)),
        "loc_trials": float(n_trials),
        "loc_sigma_us": SIGMA_S * 1e6,
    }


if __name__ == "__main__":
    result = run(quick="--quick" in sys.argv[1:])
    print(result)
