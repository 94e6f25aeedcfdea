"""Benchmark: the Hartford demo end to end over the embedded broker.

``run(quick)`` returns:

* ``demo_latency_p99_ms`` - 99th percentile of (incident published - receipt of
  the detection that caused it), over every incident message a detection
  caused, milliseconds; the scene replays in real time as live nodes would.
  Budget <= 100 ms.
* ``demo_latency_p50_ms``, ``demo_shots_found_pct`` (gunshots located / fired),
  ``demo_median_error_m`` and ``demo_max_error_m`` (gunshot location error).
"""

from __future__ import annotations

import sys


def run(quick: bool = False) -> dict[str, float]:
    from shotline.calibration.demo import run_demo

    res = run_demo(port=0, web_port=None, speed=1.0, quiet=True, printer=lambda *_: None)
    s = res.summary()
    return {
        "demo_latency_p99_ms": s["latency_p99_ms"],
        "demo_latency_p50_ms": s["latency_p50_ms"],
        "demo_shots_found_pct": 100.0 * s["shots_found"] / max(s["shots_fired"], 1),
        "demo_median_error_m": s["median_error_m"],
        "demo_max_error_m": s["max_error_m"],
    }


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv[1:]))
