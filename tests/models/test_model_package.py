"""The shipped model as package data: manifest, hash, size, int8, labels, data licences, card."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shotline.models import LABELS, default_model_path, file_sha256, load_manifest, model_dir
from shotline.sensor.features import FEATURE_SPEC

pytestmark = pytest.mark.skipif(not default_model_path().exists(), reason="no shipped model")


def test_manifest_describes_the_file() -> None:
    man = load_manifest()
    path = default_model_path()
    assert man["sha256"] == file_sha256(path)
    assert man["size_bytes"] == path.stat().st_size <= 1024 * 1024
    assert man["labels"] == list(LABELS)
    assert man["input"]["features"] == FEATURE_SPEC
    assert man["input"]["shape"] == [1, FEATURE_SPEC["n_frames"], FEATURE_SPEC["n_mels"], 1]
    assert 0 < man["operating_point"]["gunshot_threshold"] < 1
    for split in ("train", "val", "test"):
        assert man["data_summary"][split]["patches"] > 0
    test = man["metrics"]["test"]
    assert test["n"] == man["data_summary"]["test"]["patches"]
    assert 0 <= test["gunshot_recall_pct"] <= 100 and 0 <= test["false_positive_pct"] <= 100


def test_model_is_int8() -> None:
    from shotline.sensor.classifier import load_interpreter

    interp = load_interpreter(default_model_path())
    dtypes = {np.dtype(t["dtype"]) for t in interp.get_tensor_details()}
    assert np.dtype(np.int8) in dtypes
    assert np.dtype(np.float32) not in {np.dtype(t["dtype"]) for t in interp.get_tensor_details()
                                        if t["name"].endswith(("kernel", "weights"))}
    n_params = load_manifest()["parameters"]
    assert n_params < 50_000


def test_every_clip_has_a_source_and_licence() -> None:
    data = json.loads((model_dir() / "training" / "data_manifest.json").read_text())
    cols = data["columns"]
    clips = [dict(zip(cols, row, strict=True)) for row in data["clips"]]
    assert clips and all(c["source"] and c["ref"] for c in clips)
    assert all(data["licences"][c["licence"]] for c in clips)  # every clip's licence is known
    assert {c["source"] for c in clips} >= {"pittsburgh", "simulator", "hydrogen", "sonic-pi"}
    assert sum(data["clips_per_licence"].values()) == len(clips)
    # Split by session: no group appears in two splits.
    seen: dict[str, str] = {}
    for c in clips:
        assert seen.setdefault(c["group"], c["split"]) == c["split"], c["group"]


def test_model_card_carries_the_figures() -> None:
    card = (model_dir() / "MODEL_CARD.md").read_text()
    man = load_manifest()
    assert man["sha256"] in card
    assert str(man["metrics"]["test"]["gunshot_recall_pct"]) in card
    for heading in ("## Intended use", "## Data", "## Limits", "## Held-out results"):
        assert heading in card
    assert (model_dir() / "training" / "eval_heldout.png").stat().st_size > 10_000
