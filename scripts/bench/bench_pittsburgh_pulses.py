"""Pittsburgh live-fire 2018 (development split FP1, FP2): published pulses through the hub.

Reads every test's ``allpulses.json`` (every sensor's reported impulses,
millisecond time precision; never ``nlos-tuples.json``), associates and
locates them with the hub's own pipeline (shotline.calibration.pulses), and
compares with the tech note (ShotSpotter TN-098, MLG algorithm, 2-D error of
the mean location of a firing position's shots: FP1 2.94 m, FP2 4.03 m).

Settings: timing sigma 2 ms (the published times are rounded to 1 ms and
their scatter about the surveyed position is several ms: non-line-of-sight
paths in hilly streets), speed of sound from each test's weather file
temperature, wind from its wind vector, 2.5-D fix with the source 1.5 m
above the surveyed ground height (a terrain model's job in a deployment;
``pittsburgh_pulses_fp_error_m_ground_median`` uses the median sensor height
instead, no survey information at all).

Figures:

* ``pittsburgh_pulses_fp_error_m``: mean over firing positions of the 2-D
  distance between the mean located position and the survey point (m).
* ``pittsburgh_pulses_shots_located_pct``: rounds located within 50 m of
  the survey point (at most ``num_rounds`` per test) over all rounds fired.
* per FP: ``..._fp1_error_m``, ``..._fp1_shot_p50_m``, ``..._fp1_shot_p90_m``,
  ``..._fp1_nodes`` (mean nodes per shot), likewise fp2; the tech note's
  figures as ``..._fp1_published_m`` for the table.

Run: ``.venv/bin/python scripts/bench/bench_pittsburgh_pulses.py [--quick]``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from shotline.calibration.pulses import evaluate  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("SHOTLINE_PITTSBURGH", ROOT.parent / "shared" / "data" / "pittsburgh-live-fire-2018"))
PUBLISHED_M = {"FP1": 2.94, "FP2": 4.03}


def run(quick: bool = False) -> dict[str, float]:
    """Run the benchmark; returns the figures listed in the module docstring (empty without the data)."""
    if not DATA.is_dir():
        print(f"bench_pittsburgh_pulses: no data at {DATA}, skipped", file=sys.stderr)
        return {}
    logging.getLogger("shotline.hub.registry").setLevel(logging.ERROR)
    out: dict[str, float] = {}
    res = evaluate(DATA, progress=not quick)
    for r in res:
        k = f"pittsburgh_pulses_{r.firing_position.lower()}"
        out[f"{k}_error_m"] = r.mean_error_m
        out[f"{k}_published_m"] = PUBLISHED_M.get(r.firing_position, float("nan"))
        out[f"{k}_shot_p50_m"] = r.shot_p50_m
        out[f"{k}_shot_p90_m"] = r.shot_p90_m
        out[f"{k}_nodes"] = r.mean_nodes
    out["pittsburgh_pulses_fp_error_m"] = sum(r.mean_error_m for r in res) / len(res)
    out["pittsburgh_pulses_shots_located_pct"] = 100.0 * sum(r.n_located for r in res) / sum(r.n_rounds for r in res)
    if not quick:
        res2 = evaluate(DATA, use_survey_ground=False)
        out["pittsburgh_pulses_fp_error_m_ground_median"] = sum(r.mean_error_m for r in res2) / len(res2)
    return out


if __name__ == "__main__":
    for name, value in run(quick="--quick" in sys.argv[1:]).items():
        print(f"{name:48s} {value:.3f}")
