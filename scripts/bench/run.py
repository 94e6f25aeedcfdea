"""``make bench``: run every benchmark, print a table against the budgets of
DESIGN.md and write ``build/bench.json`` (a flat object of named figures).

Each ``scripts/bench/bench_*.py`` exposes ``run(quick: bool) -> dict[str, float]``.
Usage: ``python scripts/bench/run.py [--quick] [--only trigger,locate,demo]``.
"""

from __future__ import annotations

import os

# Budgets are per core: pin BLAS/OpenMP to one thread before numpy loads.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

# figure -> (comparison, budget, unit, what); from DESIGN.md "Performance budgets".
BUDGETS: dict[str, tuple[str, float, str, str]] = {
    "trigger_x_realtime": (">=", 500.0, "x", "trigger + picker speed, 48 kHz, one core"),
    "onset_sd_us": ("<=", 25.0, "us", "onset std, 20 dB SNR, 48 kHz"),
    "onset_bias_us": ("|<=|", 10.0, "us", "onset bias, 20 dB SNR, 48 kHz"),
    "sensor_rss_mb": ("<=", 150.0, "MB", "sensor resident memory (replay with outbox, clips, classifier)"),
    "onset_sigma_us_20db_48k": ("<=", 25.0, "us", "node onset std, 20 dB SNR, 48 kHz"),
    "onset_bias_us_20db_48k": ("|<=|", 10.0, "us", "node onset bias, 20 dB SNR, 48 kHz"),
    "loc_rmse_over_crlb": ("<=", 1.10, "", "location RMS error / CRLB, clean TDOA"),
    "loc_outlier_p90_m": ("<", 0.1, "m", "p90 error, one echo outlier, 50 us noise"),
    "demo_latency_p99_ms": ("<=", 100.0, "ms", "last detection -> incident published, p99"),
    "assoc_found_pct": (">=", 98.0, "%", "dense scene: sources found"),
    "assoc_false_pct": ("<=", 2.0, "%", "dense scene: false shots"),
    "assoc_cpu_s_per_scene_s": ("<=", 0.5, "s/s", "dense scene: CPU per second of scene"),
    "hub_detections_per_s": (">=", 5000.0, "/s", "hub throughput, ingest to incident, one core"),
    "hub_latency_p99_ms": ("<=", 100.0, "ms", "hub in-process latency, p99"),
    "classifier_ms_per_candidate": ("<=", 5.0, "ms", "classifier, one candidate (int8 LiteRT)"),
    "classifier_model_kb": ("<=", 1024.0, "kB", "classifier model file"),
    "clf_gunshot_recall_pct": (">=", 97.0, "%", "held-out gunshot recall at the operating point"),
    "clf_false_positive_pct": ("<=", 1.0, "%", "held-out non-gunshot impulses called gunshot"),
    "pittsburgh_audio_within15m_pct": (">=", 97.0, "%", "Pittsburgh dev split from audio: located shots within 15 m"),
    "pittsburgh_audio_median_m": ("<", 5.0, "m", "Pittsburgh dev split from audio: median 2-D error"),
}

SUITES = ("machine", "trigger", "sensor", "locate", "classifier", "association", "store", "demo", "pittsburgh_pulses",
          "pittsburgh_picks", "pittsburgh_audio")


def _load(name: str):
    path = HERE / f"bench_{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = mod  # dataclasses and pickling look the module up by name
    spec.loader.exec_module(mod)
    return mod


def _verdict(name: str, value: float) -> str:
    if name not in BUDGETS:
        return ""
    op, budget, _unit, _ = BUDGETS[name]
    ok = {
        ">=": value >= budget,
        "<=": value <= budget,
        "<": value < budget,
        "|<=|": abs(value) <= budget,
    }[op]
    return "ok" if ok else "MISSED"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer trials (for a smoke run)")
    p.add_argument("--only", default=",".join(SUITES), help="comma-separated suites: " + ", ".join(SUITES))
    p.add_argument("--out", default=str(ROOT / "build" / "bench.json"))
    args = p.parse_args(argv)

    figures: dict[str, float] = {}
    failed: list[str] = []
    for suite in [s.strip() for s in args.only.split(",") if s.strip()]:
        t = time.perf_counter()
        print(f"running {suite} ...", file=sys.stderr, flush=True)
        try:
            got = _load(suite).run(quick=args.quick)
        except Exception as exc:  # one broken suite must not hide the others' figures
            print(f"  {suite} FAILED: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            failed.append(suite)
            continue
        figures.update({k: float(v) for k, v in got.items() if v is not None})
        print(f"  {suite}: {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)

    rows = [("figure", "value", "budget", "verdict")]
    for name, value in figures.items():
        b = BUDGETS.get(name)
        budget = f"{b[0].strip('|')} {b[1]:g} {b[2]}".strip() if b else ""
        rows.append((name, f"{value:.4g}", budget, _verdict(name, value)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    line = "| " + " | ".join(f"{{:<{w}}}" for w in widths) + " |"
    print(line.format(*rows[0]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows[1:]:
        print(line.format(*r))

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, check=False).stdout.strip()
    except OSError:
        commit = ""
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    flat = dict(figures)
    flat["_commit"] = commit  # type: ignore[assignment]
    flat["_machine"] = f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpu".strip()  # type: ignore[assignment]
    flat["_python"] = platform.python_version()  # type: ignore[assignment]
    flat["_quick"] = bool(args.quick)  # type: ignore[assignment]
    out.write_text(json.dumps(flat, indent=2, sort_keys=True) + "\n")
    print(f"\nwrote {out}", file=sys.stderr)
    if failed:
        print(f"suites that failed to run: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed or any(_verdict(k, v) == "MISSED" for k, v in figures.items()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
