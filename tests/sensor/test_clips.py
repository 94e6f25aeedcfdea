"""Ring buffer, FLAC clips, pruning and the clip HTTP endpoint."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from shotline.sensor.clip_server import ClipServer
from shotline.sensor.clips import ClipStore, RingBuffer

FS = 8000


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 700), min_size=1, max_size=30), st.integers(10, 1000))
def test_ring_buffer_streaming_equals_the_tail_of_the_stream(sizes, capacity):
    x = np.arange(sum(sizes), dtype=np.float32)
    ring = RingBuffer(capacity)
    i = 0
    for n in sizes:
        ring.write(i, x[i:i + n])
        i += n
    a = max(0, i - capacity)
    np.testing.assert_array_equal(ring.read(a, i), x[a:i])
    # Outside what is held reads as zeros.
    got = ring.read(a - 5, i + 5)
    assert np.all(got[:min(5, a)] == 0) if a else True
    assert np.all(got[-5:] == 0)


def test_ring_buffer_gap_reads_zeros():
    ring = RingBuffer(100)
    ring.write(0, np.ones(10, np.float32))
    ring.write(30, np.full(10, 2, np.float32))
    np.testing.assert_array_equal(ring.read(0, 40), np.r_[np.ones(10), np.zeros(20), np.full(10, 2)])
    with pytest.raises(ValueError):
        ring.write(35, np.ones(3, np.float32))


def _store(tmp_path, **kw):
    return ClipStore(tmp_path / "clips", FS, before_s=0.5, after_s=1.0, **kw)


def test_clip_holds_the_audio_around_the_onset(tmp_path):
    store = _store(tmp_path)
    ring = RingBuffer(store.ring_samples)
    x = (np.random.default_rng(0).standard_normal(5 * FS) * 0.1).astype(np.float32)
    store.request("n1-123", 2 * FS + 0.4, t0_ns=10**18)
    ring.write(0, x[: 2 * FS])
    store.poll(ring)
    assert store._pending  # the audio after the onset has not arrived yet
    ring.write(2 * FS, x[2 * FS:])
    store.poll(ring)
    store.close()
    clip, fs = sf.read(store.path_for("n1-123"), dtype="float32")
    assert fs == FS and len(clip) == int(1.5 * FS)
    np.testing.assert_allclose(clip, x[int(1.5 * FS): int(3 * FS)], atol=2**-22)  # 24-bit FLAC
    with sf.SoundFile(store.path_for("n1-123")) as f:
        assert f.comment.endswith(f"first sample UTC ns {10**18}")


def test_prune_by_age_then_quota(tmp_path):
    store = _store(tmp_path, max_age_s=3600, quota_bytes=2500)
    now = time.time()
    for k, age in enumerate([7200, 100, 50, 10]):
        p = store.directory / f"n1-{k}.flac"
        p.write_bytes(b"x" * 1000)
        os.utime(p, (now - age, now - age))
    assert store.prune(now) == 2  # one too old, then the oldest until under 2500 bytes
    assert sorted(d for d, _, _ in store.list()) == ["n1-2", "n1-3"]
    store.close()


def test_clip_ids_cannot_escape_the_directory(tmp_path):
    store = _store(tmp_path)
    for bad in ("../etc/passwd", "a/b", ".hidden", ""):
        with pytest.raises(ValueError):
            store.path_for(bad)
    store.close()


def _get(url, token=None):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers.get("Content-Type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()


def test_clip_server_lists_serves_and_refuses(tmp_path):
    store = _store(tmp_path)
    ring = RingBuffer(store.ring_samples)
    ring.write(0, np.zeros(3 * FS, np.float32))
    store.request("n1-1795000000123456", FS, t0_ns=10**18)
    store.poll(ring)
    store.close()
    with ClipServer(store, host="127.0.0.1", port=0, token="s3cret", health=lambda: {"outbox_depth": 3}) as srv:
        base = f"http://127.0.0.1:{srv.port}"
        assert _get(base + "/clips")[0] == 401
        assert _get(base + "/clips", "wrong")[0] == 401
        status, ctype, body = _get(base + "/clips", "s3cret")
        assert status == 200 and [r["detection_id"] for r in json.loads(body)] == ["n1-1795000000123456"]
        status, ctype, body = _get(base + "/clips/n1-1795000000123456.flac", "s3cret")
        assert status == 200 and ctype == "audio/flac" and body[:4] == b"fLaC"
        assert _get(base + "/clips/n1-999.flac", "s3cret")[0] == 404
        assert _get(base + "/clips/..%2Fx.flac", "s3cret")[0] == 400
        assert json.loads(_get(base + "/health", "s3cret")[2]) == {"outbox_depth": 3}
