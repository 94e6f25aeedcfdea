"""Per-node trigger threshold from noise statistics, classifier operating point, microphone level.

* **Trigger threshold**: the node's own detector (:func:`shotline.sensor.trigger.detect`)
  is run over the node's audio at a ladder of ``threshold_db`` values; onsets
  away from every known event arrival (``guard_s`` after it covers the
  reverberant tail) are false triggers. The lowest threshold whose false-trigger
  rate is at most ``max_false_per_min`` is chosen: the most sensitive setting the
  node's background allows.
* **Classifier operating point**: from gunshot scores of labelled candidates,
  the ROC (true-positive rate against false alarms per hour) and the smallest
  ``min_gunshot_score`` whose false-alarm rate is at most the target.
* **Microphone level**: the RMS of a 94 dB SPL, 1 kHz calibrator tone gives the
  calibration constant ``full_scale_spl_db`` = SPL of a sine whose peak reaches
  full scale = 94 - 20 log10(sqrt(2) * tone RMS in full-scale units).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .common import SolverResult

__all__ = ["solve_classifier_operating_point", "solve_mic_level", "solve_trigger_thresholds"]

DEFAULT_LADDER_DB = tuple(float(x) for x in np.arange(4.0, 20.5, 1.0))


def false_trigger_rates(
    samples: np.ndarray,
    sample_rate_hz: int,
    event_indices: Sequence[float],
    ladder_db: Sequence[float] = DEFAULT_LADDER_DB,
    *,
    guard_s: float = 0.5,
    trigger: dict | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """(thresholds dB, false triggers per minute, noise-only minutes) for one node's audio."""
    from shotline.sensor.trigger import TriggerConfig, detect

    ev = np.sort(np.asarray(event_indices, float))
    guard = guard_s * sample_rate_hz
    pre = 0.05 * sample_rate_hz
    masked = 0.0
    # Audio inside the guard windows is not background: leave it out of the time base.
    last = -np.inf
    for e in ev:
        lo, hi = max(e - pre, last), min(e + guard, len(samples))
        masked += max(hi - lo, 0.0)
        last = max(last, hi)
    minutes = (len(samples) - masked) / sample_rate_hz / 60.0
    rates = []
    for th in ladder_db:
        onsets = detect(samples, sample_rate_hz, TriggerConfig(**{**(trigger or {}), "threshold_db": float(th)}))
        idx = np.array([o.i_onset for o in onsets])
        if len(ev) and len(idx):
            j = np.searchsorted(ev, idx + pre)  # first event after onset - pre
            near = np.zeros(len(idx), bool)
            prev = j - 1
            ok = prev >= 0
            near[ok] = idx[ok] - ev[prev[ok]] <= guard
            nxt = j < len(ev)
            near[nxt] |= ev[j[nxt]] - idx[nxt] <= pre
            n_false = int((~near).sum())
        else:
            n_false = len(idx)
        rates.append(n_false / minutes if minutes > 0 else np.nan)
    return np.asarray(ladder_db, float), np.asarray(rates), minutes


def solve_trigger_thresholds(
    nodes: dict[str, tuple[np.ndarray, int, Sequence[float]]],
    *,
    max_false_per_min: float = 1.0,
    ladder_db: Sequence[float] = DEFAULT_LADDER_DB,
    guard_s: float = 0.5,
) -> SolverResult:
    """Per-node ``[trigger] threshold_db`` from each node's (samples, rate Hz, event sample indices)."""
    lines = [f"Trigger threshold per node: lowest `threshold_db` with at most {max_false_per_min:g} false "
             f"trigger(s) per minute of background (onsets more than {guard_s:g} s from every known arrival).",
             "", "| node | background (min) | threshold_db | false/min there | false/min at 6 dB |",
             "| --- | --- | --- | --- | --- |"]
    patch: dict = {}
    values = {}
    for nid, (x, fs, ev) in sorted(nodes.items()):
        th, rate, minutes = false_trigger_rates(x, fs, ev, ladder_db, guard_s=guard_s)
        ok = np.nonzero(rate <= max_false_per_min)[0]
        choice = float(th[ok[0]]) if len(ok) else float(th[-1])
        at6 = rate[np.argmin(np.abs(th - 6.0))]
        values[nid] = {"threshold_db": choice, "ladder_db": th.tolist(), "false_per_min": rate.tolist(),
                       "background_min": minutes, "met": bool(len(ok))}
        flag = "" if len(ok) else " (target not met: highest tried)"
        lines.append(f"| {nid} | {minutes:.2f} | {choice:g}{flag} | {rate[ok[0]] if len(ok) else rate[-1]:.2f} "
                     f"| {at6:.2f} |")
        patch[nid] = {"trigger": {"threshold_db": choice}}
    lines += ["", "Short recordings give coarse rates (one trigger in 10 s is 6 per minute); use at least "
              "several minutes of background per node."]
    return SolverResult("trigger_thresholds", "each node's node.toml (the table under its node id)",
                        values, patch, lines)


def roc(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, true-positive rate, false-positive count) for 'score >= threshold' decisions."""
    s = np.asarray(scores, float)
    y = np.asarray(labels, bool)
    th = np.unique(np.concatenate([s, [np.inf]]))[::-1]
    tpr = np.array([(s[y] >= t).mean() if y.any() else np.nan for t in th])
    fp = np.array([int((s[~y] >= t).sum()) for t in th])
    return th, tpr, fp


def solve_classifier_operating_point(
    scores: Sequence[float],
    labels: Sequence[bool],
    negative_hours: float,
    *,
    max_false_per_hour: float = 0.1,
) -> SolverResult:
    """``[classifier] min_gunshot_score`` for at most ``max_false_per_hour`` false alarms per node-hour.

    ``labels`` True = a real gunshot; ``negative_hours`` is the audio (node-hours)
    the negative candidates came from, which turns counts into rates.
    """
    s, y = np.asarray(scores, float), np.asarray(labels, bool)
    if negative_hours <= 0:
        raise ValueError("negative_hours must be > 0 (node-hours of audio behind the negatives)")
    if not y.any() or y.all():
        raise ValueError("need both gunshot and non-gunshot candidates")
    th, tpr, fp = roc(s, y)
    far = fp / negative_hours
    ok = np.nonzero(far <= max_false_per_hour)[0]
    k = ok[-1]  # lowest threshold (most sensitive) still meeting the target
    thr = float(min(max(th[k], 0.0), 1.0)) if np.isfinite(th[k]) else 1.0
    fpr = fp / max((~y).sum(), 1)
    auc = float(np.trapezoid(np.append(tpr[np.isfinite(tpr)], 1.0), np.append(fpr, 1.0)))
    lines = [f"ROC from {int(y.sum())} gunshots and {int((~y).sum())} other candidates over "
             f"{negative_hours:g} node-hours; AUC {auc:.3f}.",
             f"Operating point: min_gunshot_score = {thr:.4f} gives {tpr[k] * 100:.1f} % of gunshots at "
             f"{far[k]:.3f} false alarms per node-hour (target <= {max_false_per_hour:g}).", "",
             "| min_gunshot_score | gunshots kept (%) | false alarms / node-hour |", "| --- | --- | --- |"]
    for j in np.unique(np.linspace(0, len(th) - 1, min(12, len(th))).astype(int)):
        if np.isfinite(th[j]):
            lines.append(f"| {th[j]:.4f} | {tpr[j] * 100:.1f} | {far[j]:.3f} |")
    return SolverResult("classifier_operating_point", "node.toml of every node",
                        {"min_gunshot_score": thr, "tpr": float(tpr[k]), "false_per_hour": float(far[k]), "auc": auc},
                        {"classifier": {"min_gunshot_score": round(thr, 4)}}, lines)


def solve_mic_level(
    samples: np.ndarray,
    sample_rate_hz: int,
    *,
    calibrator_spl_db: float = 94.0,
    calibrator_hz: float = 1000.0,
    node_id: str | None = None,
) -> SolverResult:
    """``[node] full_scale_spl_db`` from a recording of an acoustic calibrator (94 dB SPL, 1 kHz)."""
    x = np.asarray(samples, float)
    if x.ndim != 1 or len(x) < sample_rate_hz // 2:
        raise ValueError("need at least 0.5 s of mono calibrator recording")
    if np.max(np.abs(x)) >= 0.999:
        raise ValueError("the calibrator recording clips: lower the gain, the level cannot be measured")
    # Steady part: skip the first and last 10 % (calibrator being seated or removed).
    n = len(x)
    seg = x[n // 10: n - n // 10]
    seg = seg - seg.mean()
    win = np.hanning(len(seg))
    spec = np.abs(np.fft.rfft(seg * win)) ** 2
    f = np.fft.rfftfreq(len(seg), 1 / sample_rate_hz)
    k = int(np.argmax(spec[1:])) + 1
    f_peak = float(f[k])
    if abs(f_peak - calibrator_hz) > 0.03 * calibrator_hz:
        raise ValueError(f"strongest tone at {f_peak:.0f} Hz, not {calibrator_hz:g} Hz: is the calibrator on?")
    band = np.abs(f - f_peak) <= max(20.0, 4 * sample_rate_hz / len(seg))
    # Tone RMS from the band's energy (Parseval with the window's power gain).
    tone_rms = float(np.sqrt(2.0 * spec[band].sum() / (np.sum(win ** 2) * len(seg))))
    total_rms = float(np.sqrt(np.mean(seg ** 2)))
    thd_n_db = 10 * np.log10(max(total_rms ** 2 - tone_rms ** 2, 1e-30) / tone_rms ** 2)
    blocks = seg[: len(seg) // 10 * 10].reshape(10, -1)
    stab = float(np.ptp(20 * np.log10(np.sqrt(np.mean(blocks ** 2, axis=1)))))
    fs_db = calibrator_spl_db - 20 * np.log10(np.sqrt(2.0) * tone_rms)
    lines = [f"Calibrator: {calibrator_spl_db:g} dB SPL at {calibrator_hz:g} Hz; measured tone {f_peak:.1f} Hz, "
             f"RMS {20 * np.log10(tone_rms):.2f} dBFS(rms), noise+distortion {thd_n_db:.1f} dB re tone, "
             f"level stability (peak-to-peak over 10 blocks) {stab:.2f} dB.",
             f"full_scale_spl_db = {fs_db:.2f} dB SPL (SPL of a sine whose peak reaches full scale).",
             "", "Check: stability under 0.2 dB and noise+distortion under -30 dB; otherwise reseat the "
             "calibrator and record again."]
    patch = {"node": {"full_scale_spl_db": round(float(fs_db), 2)}}
    return SolverResult("mic_level", f"node.toml of {node_id or 'the recorded node'}",
                        {"full_scale_spl_db": float(fs_db), "tone_hz": f_peak, "tone_rms_fs": tone_rms,
                         "thd_n_db": float(thd_n_db), "stability_db": stab}, patch, lines)
