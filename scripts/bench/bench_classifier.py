"""Benchmark: the node's impulse classifier (sensor/features.py + sensor/classifier.py).

``run(quick)`` returns:

* ``classifier_ms_per_candidate`` - wall time of ``Classifier.scores`` for one
  candidate at 48 kHz (resampling to 12 kHz, log-mel patch, int8 LiteRT
  inference, one thread), median over repeats. Budget <= 5 ms.
* ``classifier_ms_per_candidate_44k1`` - the same at 44.1 kHz (the costliest
  resampling ratio, 40/147).
* ``classifier_model_kb`` - size of the shipped ``.tflite`` (budget <= 1024 kB).
* ``clf_gunshot_recall_pct`` / ``clf_false_positive_pct`` - held-out gunshot
  recall and share of non-gunshot impulses called gunshot at the shipped
  operating point, as measured by the int8 model at training time and stored
  in ``models/manifest.json`` (``shotline-calibrate eval-classifier``
  recomputes them). Targets >= 97 % and <= 1 %.
* ``clf_firework_called_gunshot_pct`` - fireworks called gunshot (reported
  separately, as the issue asks).

Run standalone: ``.venv/bin/python scripts/bench/bench_classifier.py [--quick]``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


def _time_scores(clf, fs: int, n: int) -> float:
    rng = np.random.default_rng(0)
    pre, post = clf.window_s
    n_samples = int((pre + post) * fs) + 2
    i_onset = pre * fs
    windows = []
    for _ in range(8):
        w = 1e-3 * rng.standard_normal(n_samples)
        t = (np.arange(n_samples) - i_onset) / fs
        w += np.where(t >= 0, 0.8 * (1 - t / 4e-4) * np.exp(-t / 4e-4), 0.0)
        windows.append(w.astype(np.float32))
    for w in windows:  # warm-up (caches, interpreter)
        clf.scores(w, fs, i_onset)
    times = []
    for k in range(n):
        t0 = time.perf_counter()
        clf.scores(windows[k % len(windows)], fs, i_onset)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def run(quick: bool = False) -> dict[str, float]:
    from shotline.models import default_model_path, load_manifest
    from shotline.sensor.classifier import load_classifier

    clf = load_classifier()
    if clf is None:
        raise RuntimeError("no classifier: ship models/impulse_classifier.tflite and install "
                           "ai-edge-litert (the sensor extra)")
    n = 200 if quick else 2000
    test = load_manifest()["metrics"]["test"]
    return {
        "classifier_ms_per_candidate": _time_scores(clf, 48_000, n),
        "classifier_ms_per_candidate_44k1": _time_scores(clf, 44_100, n),
        "classifier_model_kb": default_model_path().stat().st_size / 1024.0,
        "clf_gunshot_recall_pct": float(test["gunshot_recall_pct"]),
        "clf_false_positive_pct": float(test["false_positive_pct"]),
        "clf_firework_called_gunshot_pct": float(test["firework_called_gunshot_pct"]),
    }


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv[1:]), indent=2))
