"""Build the classifier's dataset: clips from every source -> split -> augmentation -> patches.

Splits are by recording session, never by clip (so no echo, other sensor or
augmented copy of a test event is in training):

* Pittsburgh: firing position FP2 -> test; FP1 tests 013-018 -> validation
  (the operating point is chosen there); the rest of FP1 -> train.
* Chicago: test (background anchors only).
* Debian samples: by drum kit / sample family (crc32 of the group name).
* Simulator: by scene (scene seed mod 10: 0, 1 test; 2, 3 validation).

Augmentation works on the waveform at the clip's own sample rate, then the
node's own feature function makes the patch: onset jitter, coloured noise,
echoes, a distance low-pass, and clipping at a random overdrive (real sensors
clip on gunshots; so must negatives in training, or "clipped" would mean
"gunshot").
"""

from __future__ import annotations

import hashlib
import json
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import signal
from tqdm import tqdm

from shotline.models import LABELS
from shotline.sensor.features import FEATURE_SPEC, PATCH_SHAPE, log_mel_patch

from . import sources as S

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
DATA_VERSION = 4  # bump when sources, labelling or augmentation change (invalidates caches)


@dataclass
class Dataset:
    """Patches and their labels; one row per (clip, variant)."""

    x: np.ndarray  # (n, N_FRAMES, N_MELS) float32
    y: np.ndarray  # (n,) int, index into LABELS
    split: np.ndarray  # (n,) str
    source: np.ndarray  # (n,) str
    group: np.ndarray  # (n,) str
    detail: np.ndarray  # (n,) str
    augmented: np.ndarray  # (n,) bool

    def subset(self, mask: np.ndarray) -> Dataset:
        return Dataset(*(getattr(self, f)[mask] for f in self.__dataclass_fields__))

    def __len__(self) -> int:
        return int(self.y.size)


def split_of(clip: S.Clip) -> str:
    g = clip.group
    if clip.source == "pittsburgh":
        _, fp, test = g.split("/")
        if fp == "FP2":
            return "test"
        return "val" if int(test.split("_")[1]) >= 13 else "train"
    if clip.source == "chicago":
        return "test"
    if clip.source == "simulator":
        k = int(g.removeprefix("sim/scene")) % 10
        return "test" if k < 2 else "val" if k < 4 else "train"
    k = zlib.crc32(g.encode()) % 10
    return "test" if k < 2 else "val" if k == 2 else "train"


def coloured_noise(n: int, fs: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS Gaussian noise with a random spectral slope (white to brown), like street noise."""
    slope = rng.uniform(0.0, 2.0)  # power ~ f^-slope
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / fs)
    f[0] = f[1] if f.size > 1 else 1.0
    spec *= (f / 1000.0) ** (-slope / 2.0)
    y = np.fft.irfft(spec, n)
    return y / (np.sqrt(np.mean(y**2)) + 1e-20)


def augment(clip: S.Clip, rng: np.random.Generator, dry: bool) -> tuple[np.ndarray, float]:
    """One random variant of a clip: (samples, i_onset) at the clip's sample rate.

    ``dry`` clips (studio samples in digital silence) always get a room/street:
    echoes, distance low-pass and noise.
    """
    fs = clip.sample_rate_hz
    x = clip.samples.astype(np.float64).copy()
    i_onset = clip.i_onset + rng.uniform(-0.002, 0.002) * fs
    if clip.label != "background" and (dry or rng.random() < 0.3):
        for _ in range(int(rng.integers(0, 4))):  # echoes off walls: 5-120 ms later, weaker
            d = int(rng.uniform(0.005, 0.12) * fs)
            x[d:] += rng.uniform(0.1, 0.7) * rng.choice([-1, 1]) * x[:-d]
        if dry or rng.random() < 0.5:  # air absorption over distance: a gentle low-pass
            fc = float(np.exp(rng.uniform(np.log(1500.0), np.log(0.45 * fs))))
            sos = signal.butter(1, fc, fs=fs, output="sos")
            x = signal.sosfilt(sos, x)
    peak = np.abs(x).max() + 1e-20
    if dry or rng.random() < 0.5:
        snr_db = rng.uniform(8.0, 50.0) if clip.label != "background" else rng.uniform(-10, 10)
        x += coloured_noise(x.size, fs, rng) * peak * 10 ** (-snr_db / 20.0)
    peak = np.abs(x).max() + 1e-20
    if clip.label != "background" and rng.random() < 0.4:
        x = np.clip(x * rng.uniform(1.5, 12.0) / peak, -1.0, 1.0)  # overdriven sensor
    else:
        x = x * rng.uniform(0.01, 0.9) / peak
    return x.astype(np.float32), float(i_onset)


def n_variants(clip: S.Clip, split: str) -> int:
    """Augmented copies per clip in training (the clean clip is always kept)."""
    if split != "train":
        return 0
    if clip.source == "pittsburgh" and clip.label == "gunshot":
        return 6  # the only real gunshots: see them under many conditions
    if clip.source in ("hydrogen", "sonic-pi"):
        return 3
    return 1


def collect_clips(seed: int, n_scenes: int, progress: bool = True) -> list[S.Clip]:
    """Every clip of every source, in a fixed order (reproducible from ``seed``)."""
    rng = np.random.default_rng(seed)
    clips: list[S.Clip] = []
    steps = [
        ("pittsburgh", lambda: S.pittsburgh_clips(rng)),
        ("chicago", lambda: S.chicago_clips(rng)),
        ("debian", S.debian_clips),
    ]
    for name, fn in steps:
        before = len(clips)
        clips.extend(fn())
        log.info("%s: %d clips", name, len(clips) - before)
    seeds = [seed * 100_000 + k for k in range(n_scenes)]
    clips.extend(S.sim_clips(seeds, progress=tqdm if progress else None))
    return clips


def build(seed: int = 0, n_scenes: int = 200, cache_dir: Path | None = None,
          progress: bool = True) -> tuple[Dataset, list[dict]]:
    """The dataset and its per-clip manifest (source, licence, split, label).

    Cached in ``cache_dir`` under a key of seed, scene count, data version and
    feature spec: a second call with the same arguments loads the cache.
    """
    key = hashlib.sha256(json.dumps(
        [seed, n_scenes, DATA_VERSION, FEATURE_SPEC], sort_keys=True).encode()).hexdigest()[:12]
    if cache_dir is not None:
        npz, man = cache_dir / f"dataset-{key}.npz", cache_dir / f"dataset-{key}.json"
        if npz.exists() and man.exists():
            z = np.load(npz, allow_pickle=False)
            ds = Dataset(z["x"].astype(np.float32), z["y"], z["split"], z["source"], z["group"],
                         z["detail"], z["augmented"])
            log.info("dataset loaded from cache %s (%d patches)", npz, len(ds))
            return ds, json.loads(man.read_text())
    clips = collect_clips(seed, n_scenes, progress)
    rng = np.random.default_rng(seed + 1)
    xs, rows, manifest = [], [], []
    for c in tqdm(clips, desc="features", unit="clip", disable=not progress):
        split = split_of(c)
        dry = c.source in ("hydrogen", "sonic-pi")
        manifest.append({"source": c.source, "ref": c.ref, "licence": c.licence,
                         "label": c.label, "split": split, "group": c.group, "detail": c.detail})
        variants: list[tuple[np.ndarray, float, bool]] = []
        if dry:
            # A dry studio sample is not a field recording: every copy, test
            # ones included, is placed in a street (fixed seed per clip for test).
            r = rng if split == "train" else np.random.default_rng(zlib.crc32(c.ref.encode()))
            variants += [(*augment(c, r, True), True) for _ in range(1 + n_variants(c, split))]
        else:
            variants.append((c.samples, c.i_onset, False))
            variants += [(*augment(c, rng, False), True) for _ in range(n_variants(c, split))]
        for w, i, aug in variants:
            xs.append(log_mel_patch(w, c.sample_rate_hz, i))
            rows.append((LABELS.index(c.label), split, c.source, c.group, c.detail, aug))
    x = np.stack(xs) if xs else np.zeros((0, *PATCH_SHAPE), np.float32)
    # The cache stores float16; round a fresh build the same way so that a
    # cached and a fresh build train the very same model.
    x = x.astype(np.float16).astype(np.float32)
    cols = list(zip(*rows, strict=True))
    ds = Dataset(x, np.asarray(cols[0], dtype=np.int64), *(np.asarray(c) for c in cols[1:5]),
                 np.asarray(cols[5], dtype=bool))
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        np.savez(npz, x=ds.x.astype(np.float16), y=ds.y, split=ds.split, source=ds.source,
                 group=ds.group, detail=ds.detail, augmented=ds.augmented)
        man.write_text(json.dumps(manifest))
    return ds, manifest


def summary(ds: Dataset) -> dict:
    """Patch counts per split, label and source (for the model manifest and card)."""
    out: dict = {}
    for sp in SPLITS:
        m = ds.split == sp
        out[sp] = {
            "patches": int(m.sum()),
            "by_label": {lab: int((m & (ds.y == k)).sum()) for k, lab in enumerate(LABELS)},
            "by_source": {s: int((m & (ds.source == s)).sum()) for s in sorted(set(ds.source))},
            "clean_clips": int((m & ~ds.augmented).sum()),
        }
    return out
