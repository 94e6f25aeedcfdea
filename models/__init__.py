"""shotline.models: the shipped impulse classifier (package data) and where to find it.

The ``.tflite`` model, its manifest (sha256, input spec, labels, operating
point, data summary) and its model card live in this folder and are installed
as package data. Training code lives in :mod:`shotline.models.training` and
needs the ``train`` extra; nothing here imports it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

__all__ = [
    "CLASSIFIER_MODEL_NAME",
    "LABELS",
    "default_model_path",
    "file_sha256",
    "load_manifest",
    "manifest_path",
    "model_dir",
]

CLASSIFIER_MODEL_NAME = "impulse_classifier.tflite"
MANIFEST_NAME = "manifest.json"
# Output order of the model (the manifest repeats it; a loader checks both agree).
LABELS = ("gunshot", "firework", "other", "background")


def model_dir() -> Path:
    """The folder that holds the shipped model files (inside the installed package)."""
    return Path(__file__).resolve().parent


def default_model_path() -> Path:
    """Path of the shipped classifier ``.tflite`` (it may be missing in a bare checkout)."""
    return model_dir() / CLASSIFIER_MODEL_NAME


def manifest_path(model_path: str | Path | None = None) -> Path:
    """The manifest beside ``model_path`` (default: the shipped model's)."""
    base = Path(model_path).parent if model_path is not None else model_dir()
    return base / MANIFEST_NAME


def load_manifest(model_path: str | Path | None = None) -> dict:
    """The JSON manifest beside a model; raises FileNotFoundError or ValueError with the path."""
    path = manifest_path(model_path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: manifest must be a JSON object")
    return data


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()
