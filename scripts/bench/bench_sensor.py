"""Benchmark: the whole sensor node on a long replay (memory and speed).

``run(quick)`` returns:

* ``sensor_rss_mb`` - peak resident memory (MB) of a node process replaying 10 minutes
  (quick: 2) of 48 kHz mono audio (pink noise at -40 dBFS with a Friedlander impulse
  every 2 s) as fast as it can, with the on-disk outbox and FLAC clips on, as a
  production node runs. Budget <= 150.
* ``node_x_realtime`` - that replay's audio duration over its processing time
  (trigger, picker, outbox, clips, health; not the file decoding).
* ``node_candidates`` - trigger onsets (one per impulse expected, ``node_impulses``);
  ``node_detections`` - those the classifier kept (synthetic Friedlander pulses in
  pink noise are not all gunshot-like to the shipped model).
* ``outbox_put_ms`` - mean time to write one detection to the SQLite outbox
  (WAL, synchronous=FULL) on this machine's disk.
* ``onset_sigma_us_20db_<rate>`` / ``onset_bias_us_20db_<rate>`` for 48k (budgets:
  sigma <= 25 us, |bias| <= 10 us), 16k and 12k - standard deviation and mean of
  (picked - true onset) over simulated muzzle blasts (Friedlander, period 0.3-1 ms,
  decay 1-3, sub-sample start uniform, band-limited like an anti-alias filter at
  each rate) in white noise at 20 dB peak-to-RMS SNR, 0.1 s apart in one stream;
  ``onset_detected_pct_20db_<rate>`` the share picked within 1 ms.

Run standalone: ``.venv/bin/python scripts/bench/bench_sensor.py [--quick]``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

CHILD = textwrap.dedent(
    """
    import json, sys, time

    def peak_rss_mb():
        # VmHWM: this process's peak RSS since exec. (getrusage's ru_maxrss would
        # carry over the parent's peak across fork + exec on Linux.)
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    from shotline.sensor.audio import FileSource
    from shotline.sensor.config import AudioSettings, NodeSettings, SensorConfig, StorageSettings
    from shotline.sensor.node import SensorNode

    wav, data_dir = sys.argv[1], sys.argv[2]
    cfg = SensorConfig(node=NodeSettings(site="bench", node_id="n1"),
                       audio=AudioSettings(path=wav, start_time_ns=1795000000000000000, speed=0),
                       storage=StorageSettings(data_dir=data_dir))
    src = FileSource(wav, 1795000000000000000, block_s=0.1)
    node = SensorNode(cfg, src, None, keep_detections=False)
    t = time.perf_counter()
    stats = node.run()
    node.close()
    print(json.dumps({"audio_s": stats.n_samples / src.sample_rate_hz, "processing_s": stats.processing_s,
                      "wall_s": time.perf_counter() - t, "detections": stats.n_onsets,
                      "candidates": stats.n_candidates,
                      "rss_mb": peak_rss_mb()}))
    """
)


def _render(path: Path, seconds: float, fs: int = 48000) -> int:
    import soundfile as sf

    from shotline.sensor.impulse_synth import add_friedlander, pink_noise

    rng = np.random.default_rng(11)
    n_imp = 0
    with sf.SoundFile(path, "w", samplerate=fs, channels=1, format="FLAC", subtype="PCM_24") as f:
        chunk_s = 10
        for k in range(int(seconds // chunk_s)):
            x = pink_noise(chunk_s * fs, rng, rms=0.01)
            for t in np.arange(1.0, chunk_s, 2.0):
                add_friedlander(x, fs, t + rng.uniform(0, 0.01), amplitude=0.3)
                n_imp += 1
            f.write(np.clip(x, -1, 1))
            del k
    return n_imp


def _outbox_put_ms(directory: Path, n: int = 200) -> float:
    from shotline.sensor.outbox import Outbox

    ob = Outbox(directory / "bench-outbox.sqlite")
    payload = b"x" * 450  # about one Detection
    t = time.perf_counter()
    for k in range(n):
        ob.put(f"n1-{k}", "shotline/v1/bench/node/n1/detection", payload, k)
    dt = time.perf_counter() - t
    ob.close()
    return 1e3 * dt / n


def _onset_figures(rate_hz: int, n_trials: int, seed: int = 21) -> dict[str, float]:
    from shotline.sensor.impulse_synth import add_friedlander, white_noise
    from shotline.sensor.trigger import detect

    rng = np.random.default_rng(seed)
    noise_rms = 0.003
    truth = 0.4 + 0.1 * np.arange(n_trials) + rng.uniform(0, 1 / rate_hz, n_trials)
    x = white_noise(int((truth[-1] + 0.2) * rate_hz), rng, noise_rms)
    for t in truth:
        add_friedlander(x, rate_hz, t, amplitude=10.0 * noise_rms, period_s=rng.uniform(3e-4, 1e-3),
                        decay=rng.uniform(1.0, 3.0))
    t_on = np.array([o.i_onset / rate_hz for o in detect(x.astype(np.float32), rate_hz)])
    errs = []
    for t in truth:
        near = np.flatnonzero(np.abs(t_on - t) < 1e-3)
        if near.size == 1:
            errs.append(t_on[near[0]] - t)
    e = np.array(errs) * 1e6
    tag = f"{rate_hz // 1000}k"
    return {
        f"onset_sigma_us_20db_{tag}": round(float(np.std(e)), 2),
        f"onset_bias_us_20db_{tag}": round(float(np.mean(e)), 2),
        f"onset_detected_pct_20db_{tag}": round(100.0 * len(e) / n_trials, 1),
    }


def run(quick: bool = False) -> dict[str, float]:
    onset: dict[str, float] = {}
    for rate in (48000, 16000, 12000):
        onset.update(_onset_figures(rate, 200 if quick else 1000))
    seconds = 120.0 if quick else 600.0
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        wav = tmp_path / "long.flac"
        n_imp = _render(wav, seconds)
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        proc = subprocess.run([sys.executable, "-c", CHILD, str(wav), str(tmp_path / "data")],
                              capture_output=True, text=True, env=env, check=True)
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        put_ms = _outbox_put_ms(tmp_path)
    return {
        "sensor_rss_mb": round(res["rss_mb"], 1),
        "node_x_realtime": round(res["audio_s"] / max(res["processing_s"], 1e-9), 1),
        "node_candidates": float(res["candidates"]),
        "node_detections": float(res["detections"]),
        "node_impulses": float(n_imp),
        "outbox_put_ms": round(put_ms, 3),
        **onset,
    }


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
