"""Benchmark: streaming impulse trigger + onset picker (sensor/trigger.py, sensor/onset.py).

``run(quick)`` returns figures for the lead's benchmark table:

* ``trigger_x_realtime`` - trigger + picker speed as a multiple of real time: 60 s of
  48 kHz mono float32 (pink noise at -40 dBFS RMS with 30 Friedlander impulses,
  some with an echo), through :func:`detect`, single thread, best of a few repeats.
  Budget >= 500.
* ``trigger_x_realtime_blocks_1024`` - the same signal streamed in 1024-sample blocks
  (the live sensor's path).
* ``onset_sd_us`` / ``onset_bias_us`` - standard deviation and mean of (picked onset -
  true onset) in microseconds, 48 kHz, white noise, 20 dB SNR. Budgets: sd <= 25 us,
  |bias| <= 10 us.
* ``onset_sd_us_pink`` / ``onset_bias_us_pink`` - the same with pink noise.
* ``onset_detect_rate`` - fraction of the white-noise trials that gave exactly one
  onset within 1 ms of the truth.
* ``onset_sigma_ratio`` - mean reported ``sigma_s`` over the measured sd (about 1 if
  the reported uncertainty is honest).
* ``false_triggers_per_min`` - triggers in 2 min (quick: 1 min) of pure pink noise.
* ``onset_sd_us_<rate>``, ``onset_bias_us_<rate>``, ``onset_detect_rate_<rate>`` for
  16k and 12k (the archive and deployment rates): the white-noise trials at that
  sample rate (band limit 0.4 samples of that rate); ``false_triggers_per_min_<rate>``
  over as much white plus pink noise at that rate (per minute of either).

Definitions for the onset trials: each trial is a Friedlander pulse
``A (1 - t/T) exp(-b t/T)``, ``T`` uniform in [0.3, 1] ms, ``b`` uniform in [1, 3],
starting at a uniformly random sub-sample time, rendered analytically and
band-limited by a Gaussian kernel of 0.4 samples standard deviation (about a
one-sample 10-90 % rise, like an anti-alias filter). SNR is peak-to-RMS-noise:
``20 log10(A / noise_rms)`` with ``A`` the ideal pulse's peak and ``noise_rms`` the
RMS of the full-band noise; 20 dB means ``A = 10 noise_rms``. The true onset is the
pulse's continuous start time. Trials are 0.1 s apart in one long stream (the
dead time and the noise floor see realistic neighbours), >= 200 trials (1000 in
the full run).

Run standalone: ``.venv/bin/python scripts/bench/bench_trigger.py [--quick]``.
"""

from __future__ import annotations

import os

# Single-thread BLAS/OpenMP before numpy is imported (budgets are per core). If a
# runner imported numpy earlier, these have no effect; the code here is not
# BLAS-bound anyway (lfilter, elementwise ufuncs).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from shotline.sensor.impulse_synth import add_friedlander, pink_noise, white_noise  # noqa: E402
from shotline.sensor.trigger import ImpulseDetector, detect  # noqa: E402

FS = 48_000
NOISE_RMS = 0.01  # -40 dBFS


def _speed_signal(rng: np.random.Generator, duration_s: float = 60.0) -> np.ndarray:
    x = pink_noise(int(duration_s * FS), rng, NOISE_RMS)
    for t in np.sort(rng.uniform(0.5, duration_s - 0.5, 30)):
        amp = NOISE_RMS * 10 ** (rng.uniform(20, 50) / 20)
        add_friedlander(x, FS, t, amplitude=amp, period_s=rng.uniform(3e-4, 1e-3))
        if rng.random() < 0.5:  # an echo 5-30 ms later
            add_friedlander(x, FS, t + rng.uniform(0.005, 0.03), amplitude=0.6 * amp)
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def _best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _stream(x: np.ndarray, block: int) -> list:
    det = ImpulseDetector(FS)
    out = []
    for i in range(0, x.size, block):
        out.extend(det.process(x[i : i + block]))
    out.extend(det.flush())
    return out


def _onset_trials(
    rng: np.random.Generator, n_trials: int, noise: str, fs: int = FS
) -> tuple[np.ndarray, np.ndarray, int]:
    """Return (errors in s, reported sigmas in s, number detected)."""
    spacing_s = 0.1
    start_s = 0.4
    n = int((start_s + spacing_s * n_trials + 0.1) * fs)
    x = (white_noise if noise == "white" else pink_noise)(n, rng, NOISE_RMS)
    truth = start_s + spacing_s * np.arange(n_trials) + rng.uniform(0, 1 / fs, n_trials)
    for t in truth:
        add_friedlander(
            x,
            fs,
            t,
            amplitude=10.0 * NOISE_RMS,  # 20 dB peak-to-RMS-noise
            period_s=rng.uniform(3e-4, 1e-3),
            decay=rng.uniform(1.0, 3.0),
        )
    onsets = detect(x.astype(np.float32), fs)
    t_on = np.array([o.i_onset / fs for o in onsets])
    sig = np.array([o.sigma_s for o in onsets])
    errs, sigmas = [], []
    for t in truth:
        near = np.flatnonzero(np.abs(t_on - t) < 1e-3)
        if near.size == 1:
            errs.append(t_on[near[0]] - t)
            sigmas.append(sig[near[0]])
    return np.array(errs), np.array(sigmas), len(errs)


def run(quick: bool = False) -> dict[str, float]:
    rng = np.random.default_rng(20240521)
    repeats = 3 if quick else 5
    x = _speed_signal(rng)
    duration_s = x.size / FS
    n_found = len(detect(x, FS))
    t_batch = _best_time(lambda: detect(x, FS), repeats)
    t_block = _best_time(lambda: _stream(x, 1024), max(2, repeats - 2))

    n_trials = 200 if quick else 1000
    err_w, sig_w, n_det = _onset_trials(rng, n_trials, "white")
    err_p, _, _ = _onset_trials(rng, n_trials, "pink")

    fa_minutes = 1 if quick else 2
    n_false = sum(len(detect(pink_noise(60 * FS, rng, NOISE_RMS), FS)) for _ in range(fa_minutes))

    low_rate: dict[str, float] = {}
    for fs in (16_000, 12_000):
        tag = f"{fs // 1000}k"
        err, _, n_det_fs = _onset_trials(rng, n_trials, "white", fs)
        n_false_fs = sum(
            len(detect(gen(60 * fs, rng, NOISE_RMS), fs))
            for gen in (white_noise, pink_noise)
            for _ in range(fa_minutes)
        )
        low_rate.update(
            {
                f"onset_sd_us_{tag}": float(np.std(err)) * 1e6,
                f"onset_bias_us_{tag}": float(np.mean(err)) * 1e6,
                f"onset_detect_rate_{tag}": n_det_fs / n_trials,
                f"false_triggers_per_min_{tag}": n_false_fs / (2 * fa_minutes),
            }
        )

    sd_w = float(np.std(err_w))
    return {
        "trigger_x_realtime": duration_s / t_batch,
        "trigger_x_realtime_blocks_1024": duration_s / t_block,
        "speed_signal_onsets": float(n_found),
        "onset_sd_us": sd_w * 1e6,
        "onset_bias_us": float(np.mean(err_w)) * 1e6,
        "onset_sd_us_pink": float(np.std(err_p)) * 1e6,
        "onset_bias_us_pink": float(np.mean(err_p)) * 1e6,
        "onset_detect_rate": n_det / n_trials,
        "onset_sigma_ratio": float(np.mean(sig_w)) / sd_w if sd_w > 0 else float("nan"),
        "false_triggers_per_min": n_false / fa_minutes,
        **low_rate,
    }


if __name__ == "__main__":
    results = run(quick="--quick" in sys.argv[1:])
    for key, value in results.items():
        print(f"{key:34s} {value:10.3f}")
