"""Streaming impulse trigger for gunshot-like sounds.

Pipeline per block (all vectorised; Python loops only run over trigger crossings):

* ``x`` (mono, full scale) -> 2nd-order high-pass (``highpass_hz``) -> ``y``;
* ``e = y**2`` -> one-pole short-term energy ``sta`` (``sta_s``) and slower energy
  ``lta`` (``lta_s``);
* every ``noise_hop_s`` two snapshots: ``lta`` (mean-square level) and the maximum
  of ``sta`` over the hop (peak level). The RMS noise floor and the *peak floor*
  are the ``noise_percentile`` of those snapshots over the last ``noise_window_s``
  (robust to impulses, which only touch a few snapshots);
* characteristic ``c = sta / max(peak floor, tail_margin * lta delayed by lta_delay_s)``;
* trigger on an up-crossing of ``threshold_db``; re-arm once ``c`` has fallen
  below ``threshold_db - hysteresis_db`` and ``min_separation_s`` has passed.

Why a peak floor: the short-term energy of low-frequency-heavy (pink, traffic)
noise fluctuates far more than that of white noise. Measuring the threshold from
the typical peaks of ``sta`` in the background (a CFAR detector, as in radar) keeps
the false-trigger rate about the same whatever the noise colour, while a
threshold over the RMS floor would have to be set for the worst colour.
Why the delayed ``lta``: it suppresses re-triggers on the reverberant tail of a
loud shot, while a new shot that stands out of that tail still triggers
(automatic fire).

Streaming equals batch: filter states are carried between blocks, floors change
only at absolute frame boundaries and use exact operations (max, selection), and a
trigger is picked (see :mod:`shotline.sensor.onset`) from a window fixed by
absolute indices once ``event_window_s`` of audio after it has arrived. Any block
sizes therefore give bit-identical onsets to :func:`detect`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import signal

from .onset import aic_pick, pick_first_arrival

__all__ = ["ImpulseDetector", "Onset", "TriggerConfig", "detect"]


@dataclass(frozen=True)
class TriggerConfig:
    """Trigger and picker parameters. Units are in each field's name or comment."""

    threshold_db: float = 6.0
    """Trigger level, dB (power ratio): short-term energy over the peak floor (the
    typical per-hop maximum of the short-term energy in the background). Roughly
    9-10 dB over the RMS floor in white noise, 12-13 dB in pink noise."""
    hysteresis_db: float = 3.0
    """The trigger re-arms only after the ratio fell this far below threshold_db, dB."""
    min_separation_s: float = 0.04
    """Dead time after a trigger, s. Must stay below 0.05 s so that automatic fire at
    20 rounds/s gives one onset per round."""
    highpass_hz: float = 200.0
    """Corner of the 2nd-order Butterworth high-pass applied before everything, Hz;
    removes wind and traffic rumble. 0 disables it."""
    sta_s: float = 0.0001
    """Time constant of the short-term energy, s (fast enough for sub-ms pulses)."""
    lta_s: float = 0.02
    """Time constant of the slower energy used for the floor snapshots and the tail
    suppression, s."""
    tail_margin_db: float = 5.0
    """Gain applied to the delayed slow energy in the trigger's denominator, dB: a
    new impulse must stand this much (plus threshold_db) above a decaying tail."""
    lta_delay_s: float = 0.002
    """Delay of the slower energy in the trigger's denominator, s, so that the
    impulse itself does not raise its own reference before it triggers."""
    noise_window_s: float = 1.5
    """Length of the history the noise floor is a percentile of, s."""
    noise_hop_s: float = 0.02
    """Interval between noise-floor snapshots (and floor updates), s."""
    noise_percentile: float = 30.0
    """Percentile (0-100) of the snapshots taken as the noise floor; below 50 so that
    sustained fire or reverberation does not lift the floor."""
    warmup_s: float = 0.1
    """Start-up time ignored by the floor while the filters settle, s."""
    min_noise_s: float = 0.1
    """Noise history needed before the first trigger, s. No onset can be found in the
    first warmup_s + min_noise_s of a stream."""
    min_floor_dbfs: float = -110.0
    """Lowest noise floor assumed, dBFS, so digital silence cannot give infinite SNR."""
    pick_before_s: float = 0.005
    """The AIC onset search starts this long before the trigger sample, s."""
    pick_after_s: float = 0.001
    """The AIC window ends this long after the trigger sample, s. Short, so that a
    louder echo a few ms later is outside it."""
    peak_window_s: float = 0.001
    """The first arrival's peak is searched this long after the coarse onset, s.
    Arrivals closer than this merge into one."""
    pick_fraction: float = 0.5
    """Fraction (0-1) of the first peak at which the rising edge is timed."""
    event_window_s: float = 0.01
    """Samples after the trigger examined for peak level and clipping, s. An onset is
    reported once this much audio after its trigger has arrived (latency)."""
    clip_level: float = 0.999
    """|x| at or above this fraction of full scale counts as clipped."""

    def __post_init__(self) -> None:
        positive = (
            "min_separation_s",
            "sta_s",
            "lta_s",
            "noise_window_s",
            "noise_hop_s",
            "min_noise_s",
            "pick_before_s",
            "pick_after_s",
            "peak_window_s",
            "event_window_s",
        )
        for name in positive:
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"TriggerConfig.{name} must be > 0, got {value!r}")
        for name in ("highpass_hz", "lta_delay_s", "warmup_s", "hysteresis_db", "tail_margin_db"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"TriggerConfig.{name} must be >= 0, got {value!r}")
        if not math.isfinite(self.threshold_db) or self.threshold_db <= 0:
            raise ValueError(f"TriggerConfig.threshold_db must be > 0, got {self.threshold_db!r}")
        if not 0.0 <= self.noise_percentile <= 100.0:
            raise ValueError("TriggerConfig.noise_percentile must be in [0, 100]")
        if not 0.0 < self.pick_fraction < 1.0:
            raise ValueError("TriggerConfig.pick_fraction must be in (0, 1)")
        if not 0.0 < self.clip_level <= 1.0:
            raise ValueError("TriggerConfig.clip_level must be in (0, 1]")
        if self.pick_after_s > self.event_window_s:
            raise ValueError("TriggerConfig.pick_after_s must not exceed event_window_s")
        if self.noise_window_s < self.noise_hop_s:
            raise ValueError("TriggerConfig.noise_window_s must be >= noise_hop_s")


@dataclass(frozen=True)
class Onset:
    """One detected impulse. Indices are absolute (from the stream's first sample)."""

    i_onset: float
    """Sub-sample onset index of the first arrival, samples."""
    sigma_s: float
    """1-sigma uncertainty of the onset time, s."""
    i_peak: int
    """Index of the largest |x| in the event window, samples."""
    peak_dbfs: float
    """Largest |x| in the event window, dBFS (1.0 = 0 dBFS)."""
    snr_db: float
    """Largest high-passed |y| in the event window over the RMS noise floor, dB."""
    noise_floor_dbfs: float
    """RMS noise floor (high-passed) before the trigger, dBFS."""
    clipped: bool
    """Any |x| in the event window at or above clip_level."""
    i_trigger: int
    """Sample at which the trigger fired, samples."""
    rise_time_s: float
    """10-90 % rise time of the first arrival, s; NaN if it could not be measured."""
    polarity: int
    """+1 if the first arrival is a positive excursion (after the high-pass), else -1."""


class ImpulseDetector:
    """Streaming impulse detector and onset picker; see the module docstring.

    Feed consecutive blocks of mono float samples (full scale [-1, 1]) to
    :meth:`process`; it returns the onsets finalised so far, each at most
    ``event_window_s`` (plus one block) after its trigger. Call :meth:`flush` at the
    end of the stream.
    """

    def __init__(self, sample_rate_hz: int, config: TriggerConfig | None = None) -> None:
        cfg = TriggerConfig() if config is None else config
        fs = float(sample_rate_hz)
        if not (math.isfinite(fs) and fs > 0):
            raise ValueError(f"sample_rate_hz must be > 0, got {sample_rate_hz!r}")
        if cfg.highpass_hz >= 0.5 * fs:
            raise ValueError("highpass_hz must be below the Nyquist frequency")
        self.sample_rate_hz = sample_rate_hz
        self.config = cfg
        self._fs = fs

        # Filters (coefficients + carried state).
        if cfg.highpass_hz > 0:
            b, a = signal.butter(2, cfg.highpass_hz, btype="highpass", fs=fs)
        else:
            b, a = np.array([1.0]), np.array([1.0])
        self._hp_b, self._hp_a = b, a
        self._hp_zi = np.zeros(max(len(a), len(b)) - 1)
        self._sta_b, self._sta_a = _one_pole(cfg.sta_s, fs)
        self._lta_b, self._lta_a = _one_pole(cfg.lta_s, fs)
        self._sta_zi = np.zeros(1)
        self._lta_zi = np.zeros(1)

        # Lengths in samples.
        self._n_delay = int(round(cfg.lta_delay_s * fs))
        self._lta_tail = np.zeros(self._n_delay)
        self._hop = max(1, int(round(cfg.noise_hop_s * fs)))
        self._n_win = max(1, int(round(cfg.noise_window_s / cfg.noise_hop_s)))
        self._j_min = max(1, math.ceil(cfg.warmup_s * fs / self._hop))
        self._min_count = max(1, int(round(cfg.min_noise_s / cfg.noise_hop_s)))
        self._n_dead = max(1, int(round(cfg.min_separation_s * fs)))
        self._n_before = max(4, int(round(cfg.pick_before_s * fs)))
        self._n_after = max(1, int(round(cfg.pick_after_s * fs)))
        self._n_peak = max(2, int(round(cfg.peak_window_s * fs)))
        self._n_event = max(self._n_after, int(round(cfg.event_window_s * fs)))
        self._thr_on = 10.0 ** (cfg.threshold_db / 10.0)
        self._thr_off = 10.0 ** ((cfg.threshold_db - cfg.hysteresis_db) / 10.0)
        self._floor_min = 10.0 ** (cfg.min_floor_dbfs / 10.0)
        self._tail_gain = 10.0 ** (cfg.tail_margin_db / 10.0)

        # History of x and y for picking windows that straddle blocks.
        self._n_hist = self._n_before + self._n_event + self._n_peak + 2
        self._hist_x = np.zeros(0)
        self._hist_y = np.zeros(0)

        # Noise floor state: snapshot values (last n_win), floor of the current frame.
        q = cfg.noise_percentile / 100.0
        self._rms_stat = _RollingOrderStat(self._n_win, q, self._min_count, self._floor_min)
        self._peak_stat = _RollingOrderStat(self._n_win, q, self._min_count, self._floor_min)
        self._floor_cur = math.inf  # RMS floor (mean-square) of the current frame
        self._peak_cur = math.inf  # peak floor (sta) of the current frame
        self._fmax_carry = 0.0  # max of sta over the incomplete current frame

        # Trigger state machine.
        self._n = 0  # samples received so far
        self._prev_on = False
        self._armed = True
        self._last_trig = -(1 << 62)
        self._rearm_from = 0
        self._pending: list[tuple[int, float]] = []  # (i_trigger, floor mean-square)

    # -- public -----------------------------------------------------------------

    @property
    def noise_floor_dbfs(self) -> float:
        """Current RMS noise floor of the high-passed signal, dBFS; NaN during warm-up."""
        if not math.isfinite(self._floor_cur):
            return math.nan
        return 10.0 * math.log10(self._floor_cur)

    @property
    def samples_seen(self) -> int:
        """Number of samples received so far."""
        return self._n

    def process(self, block: np.ndarray) -> list[Onset]:
        """Consume the next block (1-D, any length); return onsets finalised so far."""
        x = np.asarray(block)
        if x.ndim != 1:
            raise ValueError(f"block must be 1-D (mono), got shape {x.shape}")
        if x.size and not np.issubdtype(x.dtype, np.floating):
            raise TypeError("block must hold floating-point samples in full scale [-1, 1]")
        x = x.astype(np.float64, copy=False)
        if x.size == 0:
            return []
        b0 = self._n
        b1 = b0 + x.size

        if self._hp_zi.size:
            y, self._hp_zi = _lfilter(self._hp_b, self._hp_a, x, self._hp_zi)
        else:
            y = x
        e = y * y
        sta, self._sta_zi = _lfilter(self._sta_b, self._sta_a, e, self._sta_zi)
        lta, self._lta_zi = _lfilter(self._lta_b, self._lta_a, e, self._lta_zi)

        peak_floor, rms_frames = self._frame_floors(sta, lta, b0, b1)
        if self._n_delay:
            lta_all = np.concatenate((self._lta_tail, lta))
            lta_del = lta_all[: x.size]
            self._lta_tail = lta_all[-self._n_delay :]
        else:
            lta_del = lta
        # Peak floor = inf during warm-up, so c = 0 and nothing triggers.
        c = sta / np.maximum(peak_floor, self._tail_gain * lta_del)
        self._run_state_machine(c, rms_frames, b0)

        self._n = b1
        out: list[Onset] = []
        if self._pending:
            # Window buffer: history + this block, addressed by absolute index.
            buf_x = np.concatenate((self._hist_x, x))
            buf_y = np.concatenate((self._hist_y, y))
            out = self._finalise(buf_x, buf_y, b1 - buf_x.size, final=False)
        # Keep the last n_hist samples for windows that straddle blocks.
        if x.size >= self._n_hist:
            self._hist_x = x[-self._n_hist :].copy()
            self._hist_y = y[-self._n_hist :].copy()
        else:
            self._hist_x = np.concatenate((self._hist_x[x.size - self._n_hist :], x))
            self._hist_y = np.concatenate((self._hist_y[y.size - self._n_hist :], y))
        return out

    def flush(self) -> list[Onset]:
        """End of stream: finalise pending onsets with the samples available."""
        return self._finalise(self._hist_x, self._hist_y, self._n - self._hist_x.size, final=True)

    # -- internals --------------------------------------------------------------

    def _frame_floors(
        self, sta: np.ndarray, lta: np.ndarray, b0: int, b1: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-sample peak floor and per-frame RMS floor for the block [b0, b1).

        Frame j (j >= 1) covers samples [(j-1)*hop, j*hop); when it completes we take
        two snapshots: lta at its last sample (mean-square level) and the maximum of
        sta over it (peak level). The floors valid on frame j+1, i.e. on samples
        [j*hop, (j+1)*hop), are order statistics of the last W snapshots. Only
        absolute indices and exact operations (max, selection) are involved, so
        block boundaries cannot change the result.

        Returns (peak floor per sample, RMS floor per frame f0..f_last) where
        f0 = b0 // hop.
        """
        hop = self._hop
        f0 = b0 // hop
        n = b1 - b0
        # Boundaries j*hop in (b0, b1] complete frame j (its last sample is in the block).
        first_boundary = (f0 + 1) * hop
        n_new = b1 // hop - f0
        if n_new <= 0:
            # Fast path: the block stays inside one frame; floors are constant.
            self._fmax_carry = max(self._fmax_carry, float(sta.max()))
            return np.full(n, self._peak_cur), np.array([self._floor_cur])
        rel = np.arange(first_boundary - b0, n, hop)  # starts of later segments
        seg_max = np.maximum.reduceat(sta, np.concatenate(([0], rel)))
        seg_max[0] = max(seg_max[0], self._fmax_carry)
        if b1 % hop == 0:
            done_max = seg_max
            self._fmax_carry = 0.0
        else:
            done_max = seg_max[:-1]
            self._fmax_carry = float(seg_max[-1])
        # Last samples of the completed frames, block-relative.
        last_rel = np.arange(first_boundary - 1 - b0, n, hop)
        n_warm = min(n_new, max(0, self._j_min - (f0 + 1)))  # frames before warm-up ends
        peak_new = np.empty(n_new)
        rms_new = np.empty(n_new)
        peak_new[:n_warm] = math.inf
        rms_new[:n_warm] = math.inf
        if n_warm < n_new:
            # Digital silence (a muted or not yet running ADC, the zero padding
            # at the start of many recordings) is no noise floor: its frames
            # count as unknown (inf), so the onset of the noise after it cannot
            # trigger, and the detector re-arms once real noise fills the window.
            peak_new[n_warm:] = self._peak_stat.push(_silence_as_inf(done_max[n_warm:]))
            rms_new[n_warm:] = self._rms_stat.push(_silence_as_inf(lta[last_rel[n_warm:]]))
        # Frame f0 keeps the floor already in force; frames f0+1.. (those that start
        # inside this block) take the floors of the snapshots just completed.
        n_frames = (b1 - 1) // hop - f0 + 1
        peak_vals = np.empty(n_frames)
        rms_vals = np.empty(n_frames)
        peak_vals[0] = self._peak_cur
        rms_vals[0] = self._floor_cur
        peak_vals[1:] = peak_new[: n_frames - 1]
        rms_vals[1:] = rms_new[: n_frames - 1]
        self._peak_cur = float(peak_new[-1])
        self._floor_cur = float(rms_new[-1])
        lengths = np.diff(np.concatenate(([0], rel, [n])))
        return np.repeat(peak_vals, lengths), rms_vals

    def _run_state_machine(self, c: np.ndarray, rms_frames: np.ndarray, b0: int) -> None:
        on = c >= self._thr_on
        off = c < self._thr_off
        ups = np.flatnonzero(on[1:] & ~on[:-1]) + 1
        if on[0] and not self._prev_on:
            ups = np.concatenate(([0], ups))
        for u_rel in ups.tolist():
            u = b0 + u_rel
            if not self._armed:
                start = max(self._rearm_from - b0, 0)
                if start < u_rel and off[start:u_rel].any():
                    self._armed = True
                else:
                    self._rearm_from = u
            if self._armed and u - self._last_trig >= self._n_dead:
                floor_ms = float(rms_frames[u // self._hop - b0 // self._hop])
                self._pending.append((u, floor_ms))
                self._armed = False
                self._last_trig = u
                self._rearm_from = u + 1
        if not self._armed:
            start = max(self._rearm_from - b0, 0)
            if start < c.size and off[start:].any():
                self._armed = True
            self._rearm_from = b0 + c.size
        self._prev_on = bool(on[-1])

    def _finalise(
        self, buf_x: np.ndarray, buf_y: np.ndarray, buf_start: int, *, final: bool
    ) -> list[Onset]:
        out: list[Onset] = []
        keep: list[tuple[int, float]] = []
        for i_trig, floor_ms in self._pending:
            if not final and i_trig + self._n_event > self._n:
                keep.append((i_trig, floor_ms))
                continue
            out.append(self._pick(buf_x, buf_y, buf_start, i_trig, floor_ms))
        self._pending = keep
        return out

    def _pick(
        self, buf_x: np.ndarray, buf_y: np.ndarray, buf_start: int, i_trig: int, floor_ms: float
    ) -> Onset:
        fs = self._fs
        lo = max(i_trig - self._n_before, buf_start)
        hi_aic = min(i_trig + self._n_after + 1, self._n)
        hi_evt = min(i_trig + self._n_event, self._n)
        hi_win = max(hi_evt, min(i_trig + self._n_after + self._n_peak + 1, self._n))
        w = buf_y[lo - buf_start : hi_win - buf_start]
        noise_rms = math.sqrt(floor_ms)
        k0 = aic_pick(w[: hi_aic - lo])
        # The trigger fires a few samples after a first arrival starts (the short-term
        # energy reacts within about a pulse length). So an AIC pick far before the
        # trigger is noise, and one after it missed a weak first arrival's positive
        # phase: search for the first peak from a point shortly before the trigger.
        k0 = min(max(k0, i_trig - self._n_peak - lo), i_trig - self._n_peak // 4 - lo)
        k0 = max(k0, 0)
        p = pick_first_arrival(
            w,
            k0,
            noise_rms,
            fraction=self.config.pick_fraction,
            peak_window=self._n_peak,
            back_window=self._n_peak,
        )
        i_onset = lo + p.i_onset
        # Event span: from the first arrival's edge to the end of the event window.
        e_lo = max(lo, min(int(math.floor(i_onset)), i_trig))
        e_hi = max(hi_evt, e_lo + 1)
        ax = np.abs(buf_x[e_lo - buf_start : e_hi - buf_start])
        ay = np.abs(buf_y[e_lo - buf_start : e_hi - buf_start])
        k_pk = int(np.argmax(ax))
        peak = float(ax[k_pk])
        peak_y = float(ay.max())
        return Onset(
            i_onset=float(i_onset),
            sigma_s=float(p.sigma_samples) / fs,
            i_peak=e_lo + k_pk,
            peak_dbfs=_db20(peak),
            snr_db=_db20(peak_y) - _db20(noise_rms),
            noise_floor_dbfs=_db20(noise_rms),
            clipped=bool(peak >= self.config.clip_level),
            i_trigger=i_trig,
            rise_time_s=float(p.rise_samples) / fs,
            polarity=p.polarity,
        )


class _RollingOrderStat:
    """Order statistic (a percentile, by selection) of the last ``window`` values pushed.

    Selection (np.partition) involves no arithmetic, so the result depends only on
    the set of values, not on how they were pushed.
    """

    def __init__(self, window: int, q: float, min_count: int, lowest: float) -> None:
        self._w = window
        self._q = q
        self._min_count = min_count
        self._lowest = lowest
        self._hist = np.zeros(0)  # last window-1 values

    def push(self, vals: np.ndarray) -> np.ndarray:
        """Append values; return the statistic after each one (inf if too few)."""
        W = self._w
        if vals.size == 1 and self._hist.size == W - 1 and W > 1:
            # Common streaming case: one new value, full window.
            win = np.append(self._hist, vals)
            self._hist = win[1:]
            kth = int(round(self._q * (W - 1)))
            return np.array([max(float(np.partition(win, kth)[kth]), self._lowest)])
        allv = np.concatenate((self._hist, vals))
        n_old = self._hist.size
        out = np.empty(vals.size)
        i = 0
        # Windows not yet full (start of stream): one at a time.
        while i < vals.size and n_old + i + 1 < W:
            win = allv[: n_old + i + 1]
            if win.size < self._min_count:
                out[i] = math.inf
            else:
                kth = int(round(self._q * (win.size - 1)))
                out[i] = max(float(np.partition(win, kth)[kth]), self._lowest)
            i += 1
        if i < vals.size:
            # Full windows: vectorised selection over a sliding view.
            first_end = n_old + i + 1
            view = np.lib.stride_tricks.sliding_window_view(allv[first_end - W :], W)
            kth = int(round(self._q * (W - 1)))
            out[i:] = np.maximum(np.partition(view, kth, axis=1)[:, kth], self._lowest)
        # The last W - 1 values (all of them while fewer were seen: a negative start would keep
        # only the last W - 1 - size of them).
        self._hist = allv[max(0, allv.size - (W - 1)) :] if W > 1 else allv[:0]
        return out


def detect(
    samples: np.ndarray, sample_rate_hz: int, config: TriggerConfig | None = None
) -> list[Onset]:
    """Batch detection over a whole signal; identical to streaming it block by block.

    The signal is fed in fixed chunks, which bounds memory and, because streaming
    equals batch, does not change the result.
    """
    det = ImpulseDetector(sample_rate_hz, config)
    x = np.asarray(samples)
    if x.ndim != 1:
        raise ValueError(f"samples must be 1-D (mono), got shape {x.shape}")
    chunk = 1 << 16
    out: list[Onset] = []
    for start in range(0, x.size, chunk):
        out.extend(det.process(x[start : start + chunk]))
    out.extend(det.flush())
    return out


def _lfilter_public(
    b: np.ndarray, a: np.ndarray, x: np.ndarray, zi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    return signal.lfilter(b, a, x, zi=zi)


try:
    # scipy.signal.lfilter's array-API wrapper costs ~10 us per call, more than the
    # filtering of a 1024-sample block; its C core computes the identical result.
    # Only used for our float64, 1-D, len(a) > 1 case; anything odd falls back.
    from scipy.signal._sigtools import _linear_filter as _linear_filter_c

    def _lfilter(
        b: np.ndarray, a: np.ndarray, x: np.ndarray, zi: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        if len(a) < 2:
            return _lfilter_public(b, a, x, zi)
        return _linear_filter_c(b, a, x, -1, zi)

except ImportError:  # pragma: no cover - depends on scipy internals
    _lfilter = _lfilter_public


DIGITAL_SILENCE_POWER = 1e-20
"""Mean-square level (full scale 1.0, i.e. -200 dBFS) below which a frame is digital silence."""


def _silence_as_inf(power: np.ndarray) -> np.ndarray:
    return np.where(power < DIGITAL_SILENCE_POWER, math.inf, power)


def _one_pole(tau_s: float, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """Unity-DC-gain one-pole low-pass with time constant tau_s (s)."""
    a = math.exp(-1.0 / (tau_s * fs))
    return np.array([1.0 - a]), np.array([1.0, -a])


def _db20(amplitude: float) -> float:
    return 20.0 * math.log10(amplitude) if amplitude > 0 else -math.inf
