"""Pittsburgh live-fire development split, located from audio alone.

Imports every test of ``../shared/data/pittsburgh-live-fire-2018`` (FP1, FP2;
4-6 sensors per test) into recording bundles, replays each through the real
sensor code (SensorNode over FileSource) and the hub pipeline in process, and
matches the located shots to the surveyed firing position and the round times
derived from the published pulses (see calibration/importers/pittsburgh.py).

Figures: ``pittsburgh_audio_within15m_pct`` (share of located rounds within
15 m, 2-D), ``pittsburgh_audio_median_m`` (median 2-D error of located rounds),
``pittsburgh_audio_shots_located_pct`` (rounds fired that were located),
plus p90, false shots and detection recall. Reference: ShotSpotter Tech Note
098 gives 96.3 % within 15 m with six participating sensors. Budget (DESIGN.md):
>= 97 % within 15 m, median < 5 m.

Usage: ``python scripts/bench/bench_pittsburgh_audio.py [--quick] [--report DIR]``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("SHOTLINE_PITTSBURGH", ROOT.parent / "shared" / "data" / "pittsburgh-live-fire-2018"))

# Hub settings used for these recordings (documented in docs/calibration.md):
# 12 kHz audio whose picks scatter by ~0.8 ms (sd) against the published pulse
# times, on clipped, reverberant shots, so the timing sigma and the residual
# gates are wider than the simulated defaults; the arrays span ~400-800 m, so
# sources beyond 700 m of a node are not searched. Planar ("2d") fixes: the
# survey's heights are ~30 m off the sensors' frame origin and the source
# height above the hub's frame origin is unknown, so a 2.5-D fix with the
# default height is measurably worse on FP1 (within 15 m 49 % vs 71 %);
# chosen on FP1, FP2 is the held-out check.
HUB_OVERRIDES: dict = {
    "location": {"timing_sigma_s": 0.001, "mode": "2d"},
    # No chi-square test of small sets: in 2-D on this terrain (sensor heights differ by ~30 m) the
    # planar model is off by milliseconds, far above the pick sigma, so real 4-node shots would fail it.
    "association": {"match_tolerance_s": 0.02, "max_rms_residual_s": 0.005, "max_range_m": 700.0,
                    "strict_fit_max_dof": 0},
}


def _oracle_errors(test_dir: Path, bundle, detections) -> list[tuple[float, int]]:
    """2-D errors (m) when our detections nearest to the published tuple pulses are located together."""
    from shotline.calibration.importers import iso_to_ns
    from shotline.calibration.replay import ReplayFrame
    from shotline.hub.locate import locate

    name = test_dir.name
    pulses = {p["pulse_uuid"]: p for p in json.loads((test_dir / f"{name}.allpulses.json").read_text())}
    tuples = json.loads((test_dir / f"{name}.nlos-tuples.json").read_text())
    frame, ne = ReplayFrame(bundle), bundle.node_enu_m()
    src = np.array(bundle.events[0].enu_m)
    by_node = {n: np.array([d.onset_time_ns for d in detections if d.node_id == n], np.int64) for n in bundle.node_ids}
    out = []
    for tup in tuples:
        pos, times = [], []
        for u in tup["pulse_uuids"]:
            p = pulses.get(u)
            if p is None or p["serial_number"] not in ne or not len(by_node[p["serial_number"]]):
                continue
            ts = by_node[p["serial_number"]]
            k = int(np.argmin(np.abs(ts - iso_to_ns(p["arrival_time_utc"]))))
            if abs(ts[k] - iso_to_ns(p["arrival_time_utc"])) < 5_000_000:
                pos.append(ne[p["serial_number"]] - frame.offset)
                times.append(ts[k])
        if len(pos) < 4:
            continue
        t = np.array(times)
        sol = locate(np.array(pos), (t - t.min()) / 1e9, c_mps=bundle.speed_of_sound_mps, sigma_s=1e-3, dims=2,
                     source_height_m=float(src[2] - frame.offset[2]))
        out.append((float(np.hypot(*(sol.position_m[:2] + frame.offset[:2] - src[:2]))), len(pos)))
    return out


def run(quick: bool = False, report_dir: str | None = None) -> dict[str, float]:
    from shotline.calibration.evaluate import EvalSettings, evaluate, from_result, write_report
    from shotline.calibration.importers import import_pittsburgh_test, pittsburgh_tests
    from shotline.calibration.replay import replay_in_process

    tests = pittsburgh_tests(DATA)
    if not tests:
        raise SystemExit(f"no Pittsburgh data under {DATA}")
    if quick:
        tests = tests[::6]
    runs, oracle = [], []
    with tempfile.TemporaryDirectory(prefix="shotline-pgh-") as tmp:
        for t in tests:
            b = import_pittsburgh_test(t, Path(tmp) / t.parent.name / t.name)
            res = replay_in_process(b, hub_overrides=HUB_OVERRIDES, name=f"{t.parent.name}-{t.name}")
            runs.append(from_result(res))
            oracle += _oracle_errors(t, b, res.detections)
        ev = evaluate(runs, EvalSettings())
        if report_dir:
            write_report(ev, report_dir, "Pittsburgh live-fire development split, from audio")
    s = ev.summary()
    o = np.array([e for e, _ in oracle])
    per_fp = {}
    for fp in sorted({t.parent.name for t in tests}):
        # Per firing position: association rules were chosen on FP1; FP2 is the held-out check.
        e2 = np.array([x.error_2d_m for x in ev.shots if x.bundle.startswith(f"{fp}-") and x.error_2d_m is not None])
        n_ev = sum(1 for x in ev.events if x["bundle"].startswith(f"{fp}-"))
        key = f"pittsburgh_audio_{fp.lower()}"
        per_fp[f"{key}_within15m_pct"] = round(float(np.mean(e2 <= 15.0) * 100), 2) if len(e2) else float("nan")
        per_fp[f"{key}_median_m"] = round(float(np.median(e2)), 2) if len(e2) else float("nan")
        per_fp[f"{key}_shots_located_pct"] = round(100.0 * len(e2) / n_ev, 2) if n_ev else float("nan")
        per_fp[f"{key}_false_shots"] = float(sum(1 for x in ev.shots if x.bundle.startswith(f"{fp}-")
                                                 and x.event_id is None))
    return {
        # Diagnostic: our own picks, associated as the commercial system did
        # (its nlos tuples), located by the hub's locator: the ceiling that
        # association can reach with these picks and this ground truth.
        "pittsburgh_audio_oracle_assoc_within15m_pct": round(float(np.mean(o <= 15.0) * 100), 2),
        "pittsburgh_audio_oracle_assoc_median_m": round(float(np.median(o)), 2),
        "pittsburgh_audio_oracle_assoc_rounds": float(len(o)),
        "pittsburgh_audio_within15m_pct": round(s["within_15m_pct_of_located"], 2),
        "pittsburgh_audio_median_m": round(s["error_2d_m"]["p50"], 2),
        "pittsburgh_audio_p90_m": round(s["error_2d_m"]["p90"], 2),
        "pittsburgh_audio_shots_located_pct": round(s["shots_located_pct"], 2),
        "pittsburgh_audio_within15m_of_fired_pct": round(s["within_15m_pct_of_events"], 2),
        "pittsburgh_audio_false_shots": float(s["false_shots"]),
        "pittsburgh_audio_rounds": float(s["events"]),
        "pittsburgh_audio_detection_recall_pct": round(s["detection_recall_pct"], 2),
        **per_fp,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--report", help="also write the HTML evaluation report into this folder")
    ap.add_argument("--hub", help="JSON hub overrides (docs/config.md keys)")
    a = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.ERROR)
    if a.hub:
        HUB_OVERRIDES.update(json.loads(a.hub))
    print(json.dumps(run(a.quick, a.report), indent=2))
