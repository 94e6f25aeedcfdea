"""The node's classifier runtime: loading rules, score contract, int8 vs float reference."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from shotline.models import default_model_path, load_manifest
from shotline.sensor import classifier as C
from shotline.sensor.features import PATCH_SHAPE

REF = Path(__file__).resolve().parents[1] / "data" / "classifier" / "reference.npz"
# int8 (full-integer) vs float Keras model, per class probability, on the 8
# reference patches. Measured on the whole held-out split (models/manifest.json,
# int8_vs_float_test): 99th percentile 0.04, max 0.12, arg max agreement 99.6 %;
# on these 8 patches the difference is about 0.01.
INT8_TOLERANCE = 0.05

pytestmark = pytest.mark.skipif(not default_model_path().exists(), reason="no shipped model")


@pytest.fixture(scope="module")
def clf() -> C.Classifier:
    c = C.load_classifier()
    assert c is not None, "shipped model did not load"
    return c


def test_missing_model_gives_none_with_reason(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        assert C.load_classifier(str(tmp_path / "nope.tflite")) is None
    assert "no model" in caplog.text


def _copy_model(tmp_path: Path) -> tuple[Path, dict]:
    dst = tmp_path / "m.tflite"
    shutil.copy(default_model_path(), dst)
    return dst, load_manifest()


def test_feature_mismatch_refused(tmp_path: Path, caplog) -> None:
    path, man = _copy_model(tmp_path)
    man["input"]["features"] = dict(man["input"]["features"], n_mels=64)
    (tmp_path / "manifest.json").write_text(json.dumps(man))
    with caplog.at_level(logging.WARNING):
        assert C.load_classifier(str(path)) is None
    assert "features" in caplog.text


def test_hash_mismatch_refused(tmp_path: Path, caplog) -> None:
    path, man = _copy_model(tmp_path)
    man["sha256"] = "0" * 64
    (tmp_path / "manifest.json").write_text(json.dumps(man))
    with caplog.at_level(logging.WARNING):
        assert C.load_classifier(str(path)) is None
    assert "sha256" in caplog.text


def test_scores_contract(clf: C.Classifier) -> None:
    pre, post = clf.window_s
    assert 0 < pre < 0.2 and 0.3 < post < 1.0
    for fs in (12_000, 16_000, 44_100, 48_000):
        rng = np.random.default_rng(fs)
        w = 1e-3 * rng.standard_normal(int((pre + post) * fs))
        s = clf.scores(w, fs, pre * fs)
        assert set(s) == {"gunshot", "firework", "other", "background"}
        assert sum(s.values()) == pytest.approx(1.0, abs=1e-6)
        assert all(0.0 <= v <= 1.0 for v in s.values())
    assert clf.sha256 == load_manifest()["sha256"]
    assert 0.0 < clf.gunshot_threshold < 1.0


def test_noise_alone_is_background(clf: C.Classifier) -> None:
    """A window of plain street-like noise (no impulse) is background, not a gunshot."""
    fs = 16_000
    rng = np.random.default_rng(7)
    w = np.cumsum(rng.standard_normal(fs)) * 1e-4  # brown noise
    w -= np.convolve(w, np.ones(200) / 200, mode="same")
    s = clf.scores(w, fs, 0.3 * fs)
    assert s["gunshot"] < clf.gunshot_threshold
    assert max(s, key=s.get) == "background"


def test_int8_matches_float_reference(clf: C.Classifier) -> None:
    """The shipped .tflite reproduces the float model's outputs saved at training time."""
    z = np.load(REF)
    assert z["patches"].shape[1:] == PATCH_SHAPE
    got = clf.predict_patches(z["patches"])
    np.testing.assert_allclose(got, z["float_probs"], atol=INT8_TOLERANCE)
    np.testing.assert_allclose(got, z["int8_probs"], atol=1e-6)  # same runtime, same bytes
    assert (got.argmax(1) == z["float_probs"].argmax(1)).mean() >= 0.85


def test_patch_shape_checked(clf: C.Classifier) -> None:
    with pytest.raises(ValueError, match="patches"):
        clf.predict_patches(np.zeros((1, 10, 10)))
