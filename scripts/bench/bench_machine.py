"""Benchmark: how fast this machine runs the kind of code the hub is made of (context for the CPU figures).

The dev machines differ: the unchanged sensor trigger has run at 466x to 1,012x real time in the
``make bench`` of different sessions, and the same hub code at 3,971 detections per CPU-s on one
machine and 7,307 on another. A CPU figure alone therefore cannot say whether the code or the
machine changed. These reference workloads never change, so next to each other two benches tell
the machine's part from the code's:

* ``machine_python_ref_ms``: CPU ms of a fixed pure-Python workload shaped like the hub's own
  per-detection work (small objects and their attributes, dict lookups, bisection into sorted
  lists, float arithmetic, tuples sorted). Lower is faster.
* ``machine_numpy_small_ref_ms``: CPU ms of a fixed run of small-array numpy calls (a few dozen
  elements each, as the hub makes per search and per solve): per-call overhead more than
  arithmetic. Lower is faster.

Each is the median of ``REPEATS`` runs (three standalone runs on one machine: 85.2-86.4 ms and
98.2-99.9 ms). No budget: they describe the machine, not the code.

Run standalone: ``.venv/bin/python scripts/bench/bench_machine.py [--quick]``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import bisect  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402

#: Runs per workload (their median is reported); fewer in a quick run.
REPEATS = 7


@dataclass
class _Item:
    node: str
    t_s: float
    level: float
    held: bool = False


def python_workload(n: int = 40_000) -> float:
    """The pure-Python reference: ``n`` small records filed by node in time order, looked up,
    compared and summed (the operations of a pick's way through the associator). Returns a
    checksum (so that nothing is optimised away)."""
    rng = random.Random(1)
    nodes = [f"N{k:05d}" for k in range(30)]
    by_node: dict[str, tuple[list[float], list[_Item]]] = {k: ([], []) for k in nodes}
    total = 0.0
    for i in range(n):
        it = _Item(nodes[rng.randrange(30)], i * 0.005 + rng.random() * 0.2, -60.0 * rng.random())
        times, items = by_node[it.node]
        k = bisect.bisect_left(times, it.t_s)
        times.insert(k, it.t_s)
        items.insert(k, it)
        if k > 0 and items[k - 1].level - it.level >= 6.0:
            it.held = True
        if len(times) > 64:
            del times[0], items[0]
        near = [x for x in items[max(k - 4, 0):k + 4] if abs(x.t_s - it.t_s) < 0.1]
        total += math.sqrt(sum((x.t_s - it.t_s) ** 2 for x in near)) + len(near)
        if i % 50 == 0:
            total += sorted((x.t_s, x.node) for x in near)[0][0]
    return total


def numpy_small_workload(n: int = 4_000) -> float:
    """The small-array reference: ``n`` rounds of the numpy calls one candidate set costs (arrays of
    24 positions: ranges, residuals, a weighted mean, a masked selection, an argmin). Returns a
    checksum."""
    rng = np.random.default_rng(1)
    pos = rng.uniform(-500.0, 500.0, (24, 2))
    t = rng.uniform(0.0, 2.0, 24)
    total = 0.0
    for i in range(n):
        src = np.array([i % 97 - 48.0, i % 89 - 44.0])
        rng_m = np.hypot(pos[:, 0] - src[0], pos[:, 1] - src[1])
        res = t - rng_m / 343.0
        w = 1.0 / (1.0 + np.square(res - np.median(res)))
        keep = np.flatnonzero(w > 0.5)
        total += float(np.sum(w[keep] * res[keep]) / np.sum(w)) + int(np.argmin(res))
    return total


def _cpu_ms(fn, repeats: int) -> float:
    fn()  # warm: imports, caches, the allocator
    times = []
    for _ in range(repeats):
        t = time.process_time()
        fn()
        times.append((time.process_time() - t) * 1e3)
    return float(np.median(times))


def run(quick: bool = False) -> dict[str, float]:
    """The figures listed in the module docstring."""
    repeats = 3 if quick else REPEATS
    return {
        "machine_python_ref_ms": _cpu_ms(python_workload, repeats),
        "machine_numpy_small_ref_ms": _cpu_ms(numpy_small_workload, repeats),
    }


if __name__ == "__main__":
    for k, v in run(quick="--quick" in sys.argv).items():
        print(f"{k}: {v:.4g}")
