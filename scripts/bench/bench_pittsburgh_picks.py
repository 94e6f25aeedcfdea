"""Pittsburgh live-fire 2018: our onset picks against the published pulse arrival times.

For every test of the development split in ``../shared/data/pittsburgh-live-fire-2018``
(FP1, FP2) and every sensor with audio there, the 12 kHz recording goes through
:func:`shotline.sensor.trigger.detect` (the node's own trigger and picker, default
``TriggerConfig``); each onset becomes UTC from the sidecar's ``timestamp`` (the
first sample's GPS-disciplined UTC). Each published arrival in ``allpulses.json``
of that sensor (matched by serial number) that falls inside its recording is
matched to our nearest onset.

Figures (all arrivals of FP1 and FP2; ``_fp1`` / ``_fp2`` suffixes per firing
position — the trigger was tuned on FP1 only, FP2 is the held-out check):

* ``pgh_picks_matched_pct`` - share of published arrivals with one of our onsets
  within 5 ms;
* ``pgh_pick_offset_median_ms`` / ``pgh_pick_offset_sd_ms`` - median and standard
  deviation of (our onset - published arrival) over the matched ones, ms;
  ``pgh_pick_offset_iqr_ms`` their interquartile range, ``pgh_pick_offset_p05_ms`` /
  ``_p95_ms`` the 5 and 95 % points; ``pgh_arrivals`` how many arrivals were compared.

What follows a gunshot at a sensor (the hub's reverberation-tail and echo rules, and the
echoes of the association bench's dense scene, are about it): every onset of ours up to
``LATER_S`` after one matched to a used arrival (below) at the same sensor, itself matched to
none, with its lag after that arrival and how far its peak level is below it:

* ``pgh_later_onsets_per_direct`` - such onsets per matched used arrival;
* ``pgh_later_lag_p50_ms`` - their median lag, ms; ``pgh_later_within_100ms_pct`` the share
  at most 100 ms late (the hub's ``ECHO_LAG_S``);
* ``pgh_later_drop_p50_db`` - their median level drop, dB; ``pgh_later_tail_pct`` the share
  at least 6 dB down (a reverberation tail at the hub's default ``reverb_drop_db``).

The same figures with ``_used`` in the name cover only the arrivals the
commercial system used to locate a shot (``nlos-tuples.json``): those are the
gunshot arrivals proper; ``allpulses.json`` also holds weak (published SNR down
to ~2 dB) and non-gunshot impulses.

The published times are truncated or rounded to 1 ms (a uniform error of
sd ~0.29 ms by itself) and the commercial sensors' own arrival times are off by
-316 us mean, 100 us sd against GPS time pulses (Tech Note 098), so a spread of
~0.3 ms is the floor this comparison can show. A common offset cancels in TDOA.

Run standalone: ``.venv/bin/python scripts/bench/bench_pittsburgh_picks.py [--quick]
[--verbose]``. Quick mode uses the same data (it takes a few seconds).
Data folder: ``$SHOTLINE_PITTSBURGH`` or ``../shared/data/pittsburgh-live-fire-2018``
next to the repository.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import json  # noqa: E402
import sys  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy.io import wavfile  # noqa: E402

from shotline.calibration.pulses import parse_utc_ns  # noqa: E402
from shotline.sensor.trigger import TriggerConfig, detect  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(
    os.environ.get("SHOTLINE_PITTSBURGH", ROOT.parent / "shared" / "data" / "pittsburgh-live-fire-2018")
)
MATCH_S = 0.005
LATER_S = 1.0  # the hub's default reverb_s


@dataclass(frozen=True)
class Arrival:
    """One published arrival and our nearest onset."""

    fp: str
    test: str
    serial: str
    published_ns: int
    offset_s: float  # our nearest onset - published, s (inf if we have none)
    clipped: bool  # our matched onset's event window clipped
    snr_db: float  # published SNR
    in_tuple: bool  # the commercial system used this pulse to locate a shot (nlos-tuples.json)


def _read_wav(path: Path) -> tuple[int, np.ndarray]:
    fs, data = wavfile.read(path)
    if data.dtype != np.int16 or data.ndim != 1:
        raise ValueError(f"{path}: expected mono 16-bit PCM, got {data.dtype} {data.shape}")
    return int(fs), data.astype(np.float64) / 32768.0


def measure(firing_positions=("FP1", "FP2"), config: TriggerConfig | None = None,
            later: dict | None = None) -> list[Arrival]:
    """Match published arrivals to our picks for every audio file of the given firing positions.
    ``later``, if given, receives under "n_direct" how many onsets matched a used arrival and under
    "onsets" (lag s, level drop dB) of each onset that follows one of them at its sensor by at most
    ``LATER_S`` (see the module docstring)."""
    out: list[Arrival] = []
    if later is not None:
        later.update(n_direct=0, onsets=[])
    for fp in firing_positions:
        for test_dir in sorted((DATA / fp).glob("test_*")):
            name = test_dir.name
            pulses = json.loads((test_dir / f"{name}.allpulses.json").read_text())
            tuples = json.loads((test_dir / f"{name}.nlos-tuples.json").read_text())
            used = {u for shot in tuples for u in shot.get("pulse_uuids", [])}
            for meta_path in sorted(test_dir.glob(f"{name}.audio.*.json")):
                meta = json.loads(meta_path.read_text())
                serial = meta["serial_number"]
                fs, x = _read_wav(meta_path.with_suffix(".wav"))
                t0_ns = parse_utc_ns(meta["timestamp"])
                t_end_ns = t0_ns + int(round(x.size / fs * 1e9))
                onsets = detect(x, fs, config)
                t_on = np.array([o.i_onset / fs for o in onsets])
                clipped = np.array([o.clipped for o in onsets], dtype=bool)
                direct: set[int] = set()
                for p in pulses:
                    if p["serial_number"] != serial:
                        continue
                    t_pub_ns = parse_utc_ns(p["arrival_time_utc"])
                    if not t0_ns <= t_pub_ns < t_end_ns:
                        continue
                    rel = (t_pub_ns - t0_ns) * 1e-9
                    if t_on.size:
                        k = int(np.argmin(np.abs(t_on - rel)))
                        off, clip = float(t_on[k] - rel), bool(clipped[k])
                        if abs(off) <= MATCH_S and p["pulse_uuid"] in used:
                            direct.add(k)
                    else:
                        off, clip = float("inf"), False
                    out.append(Arrival(fp, name, serial, t_pub_ns, off, clip, float(p["signal_to_noise_dB"]),
                                       p["pulse_uuid"] in used))
                if later is not None:
                    later["n_direct"] += len(direct)
                    later["onsets"] += _later_onsets(t_on, np.array([o.peak_dbfs for o in onsets]), sorted(direct))
    return out


def _later_onsets(t_on: np.ndarray, peak_dbfs: np.ndarray, direct: list[int]) -> list[tuple[float, float]]:
    """(lag s, level drop dB) of each onset not in ``direct`` at most ``LATER_S`` after the latest
    ``direct`` onset before it (onset times ``t_on`` s, peak levels dBFS)."""
    if not direct:
        return []
    t_dir = t_on[direct]
    is_direct = set(direct)
    got = []
    for k in range(len(t_on)):
        j = int(np.searchsorted(t_dir, t_on[k], side="left")) - 1
        if k in is_direct or j < 0 or t_on[k] - t_dir[j] > LATER_S:
            continue
        got.append((float(t_on[k] - t_dir[j]), float(peak_dbfs[direct[j]] - peak_dbfs[k])))
    return got


def later_figures(later: dict) -> dict[str, float]:
    """The figures of what follows a gunshot at a sensor (module docstring) from :func:`measure`'s ``later``."""
    lag = np.array([x[0] for x in later["onsets"]])
    drop = np.array([x[1] for x in later["onsets"]])
    return {
        "pgh_later_onsets_per_direct": round(len(lag) / max(later["n_direct"], 1), 3),
        "pgh_later_lag_p50_ms": round(float(np.median(lag)) * 1e3, 1) if len(lag) else float("nan"),
        "pgh_later_within_100ms_pct": round(100.0 * float(np.mean(lag <= 0.1)), 1) if len(lag) else float("nan"),
        "pgh_later_drop_p50_db": round(float(np.median(drop)), 1) if len(drop) else float("nan"),
        "pgh_later_tail_pct": round(100.0 * float(np.mean(drop >= 6.0)), 1) if len(drop) else float("nan"),
    }


def figures(arrivals: list[Arrival], suffix: str = "") -> dict[str, float]:
    """Matched share and offset statistics (ms) of a set of arrivals."""
    off = np.array([a.offset_s for a in arrivals])
    hit = np.abs(off) <= MATCH_S
    m = off[hit] * 1e3
    p05, q1, med, q3, p95 = np.percentile(m, [5, 25, 50, 75, 95]) if m.size else [np.nan] * 5
    return {
        f"pgh_picks_matched_pct{suffix}": round(float(100.0 * hit.mean()), 2) if off.size else float("nan"),
        f"pgh_pick_offset_median_ms{suffix}": round(float(med), 3),
        f"pgh_pick_offset_sd_ms{suffix}": round(float(np.std(m)), 3) if m.size else float("nan"),
        f"pgh_pick_offset_iqr_ms{suffix}": round(float(q3 - q1), 3),
        f"pgh_pick_offset_p05_ms{suffix}": round(float(p05), 3),
        f"pgh_pick_offset_p95_ms{suffix}": round(float(p95), 3),
        f"pgh_arrivals{suffix}": float(off.size),
    }


def run(quick: bool = False, config: TriggerConfig | None = None) -> dict[str, float]:
    del quick  # the whole split takes a few seconds
    later: dict = {}
    arrivals = measure(("FP1", "FP2"), config, later)
    res = figures(arrivals)
    res.update(later_figures(later))
    res.update(figures([a for a in arrivals if a.in_tuple], "_used"))
    for fp in ("FP1", "FP2"):
        res.update(figures([a for a in arrivals if a.fp == fp], "_" + fp.lower()))
        res.update(figures([a for a in arrivals if a.fp == fp and a.in_tuple], "_used_" + fp.lower()))
    return res


if __name__ == "__main__":
    if not DATA.is_dir():
        sys.exit(f"no Pittsburgh data at {DATA} (set SHOTLINE_PITTSBURGH)")
    results = run(quick="--quick" in sys.argv[1:])
    for key, value in results.items():
        print(f"{key:34s} {value:10.3f}")
