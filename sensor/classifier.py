"""The node's impulse classifier: onset window -> log-mel patch -> int8 LiteRT model -> scores.

``load_classifier()`` returns a :class:`Classifier` for the model shipped in
:mod:`shotline.models` (or a given ``.tflite``), or None, with the reason
logged, when there is no model, no LiteRT runtime, or a model whose manifest
does not match this code's feature extraction. The node then publishes its
detections without class scores.

Runtime: ``ai-edge-litert`` (``ai_edge_litert.interpreter``), falling back to
``tflite-runtime`` and finally to TensorFlow's own ``tf.lite`` (present only
where the ``train`` extra is installed). One thread: a candidate is a few
hundred microseconds of work and the node has other things to do.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from shotline.models import LABELS, default_model_path, file_sha256, load_manifest

from .features import FEATURE_SPEC, PATCH_SHAPE, log_mel_patch, window_s

__all__ = ["SCORE_KEYS", "Classifier", "load_classifier", "load_interpreter"]

log = logging.getLogger(__name__)

# Keys of Classifier.scores(), in the model's output order.
SCORE_KEYS = ("gunshot", "firework", "other", "background")


def load_interpreter(model_path: str | Path):
    """A LiteRT interpreter for ``model_path``: ai-edge-litert, else tflite-runtime, else tf.lite.

    Raises ImportError naming the packages when none is installed.
    """
    errors = []
    try:
        from ai_edge_litert.interpreter import Interpreter  # type: ignore[import-not-found]
    except ImportError as exc:
        errors.append(f"ai-edge-litert: {exc}")
        try:
            from tflite_runtime.interpreter import Interpreter  # type: ignore[import-not-found]
        except ImportError as exc2:
            errors.append(f"tflite-runtime: {exc2}")
            try:
                import tensorflow as tf  # type: ignore[import-not-found]

                Interpreter = tf.lite.Interpreter  # noqa: N806
            except ImportError as exc3:
                errors.append(f"tensorflow: {exc3}")
                raise ImportError(
                    "no LiteRT runtime: install the sensor extra (ai-edge-litert); "
                    + "; ".join(errors)
                ) from None
    interp = Interpreter(model_path=str(model_path), num_threads=1)
    interp.allocate_tensors()
    return interp


class Classifier:
    """Scores one onset at a time. Not thread-safe (one interpreter); one per node thread."""

    def __init__(self, model_path: str | Path, manifest: dict, interpreter) -> None:
        self.model_path = Path(model_path)
        self.manifest = manifest
        self.sha256: str = file_sha256(self.model_path)
        self._interp = interpreter
        inp = interpreter.get_input_details()[0]
        out = interpreter.get_output_details()[0]
        self._in_index, self._out_index = inp["index"], out["index"]
        self._in_dtype = inp["dtype"]
        self._in_q = inp.get("quantization", (0.0, 0))
        self._out_dtype = out["dtype"]
        self._out_q = out.get("quantization", (0.0, 0))
        self._in_shape = tuple(int(v) for v in inp["shape"])
        labels = tuple(manifest.get("labels", LABELS))
        self._order = [labels.index(k) for k in SCORE_KEYS]
        op = manifest.get("operating_point", {})
        #: p(gunshot) at or above which the shipped operating point calls a gunshot.
        self.gunshot_threshold: float = float(op.get("gunshot_threshold", 0.5))

    @property
    def window_s(self) -> tuple[float, float]:
        """Audio needed around the onset: (seconds before, seconds after)."""
        return window_s()

    def predict_patches(self, patches: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n, 4)`` (model label order) for patches ``(n, *PATCH_SHAPE)``."""
        patches = np.asarray(patches, dtype=np.float32)
        if patches.shape[1:] != PATCH_SHAPE:
            raise ValueError(f"patches must be (n, {PATCH_SHAPE}), got {patches.shape}")
        out = np.empty((patches.shape[0], len(LABELS)), dtype=np.float64)
        for k, p in enumerate(patches):
            out[k] = self._run(p)
        return out

    def _run(self, patch: np.ndarray) -> np.ndarray:
        x = patch.reshape(self._in_shape)
        if self._in_dtype != np.float32:  # integer input: quantise with the model's scale
            scale, zero = self._in_q
            info = np.iinfo(self._in_dtype)
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        self._interp.set_tensor(self._in_index, x.astype(self._in_dtype))
        self._interp.invoke()
        y = self._interp.get_tensor(self._out_index)[0].astype(np.float64)
        if self._out_dtype != np.float32:
            scale, zero = self._out_q
            y = (y - zero) * scale
        y = np.clip(y, 0.0, None)
        total = y.sum()
        # An int8 softmax can round every class to zero only in pathological
        # cases; fall back to uniform rather than dividing by zero.
        return y / total if total > 0 else np.full(y.shape, 1.0 / y.size)

    def scores(self, window: np.ndarray, sample_rate_hz: int, i_onset: float) -> dict[str, float]:
        """Class scores (sum 1) for the onset at sample ``i_onset`` of ``window``.

        ``window``: mono samples at ``sample_rate_hz`` covering at least
        :attr:`window_s` around the onset (missing audio counts as silence);
        ``i_onset``: onset in samples from the start of ``window``.
        """
        p = self._run(log_mel_patch(window, sample_rate_hz, i_onset))
        return {k: float(p[i]) for k, i in zip(SCORE_KEYS, self._order, strict=True)}


def load_classifier(model_path: str | None = None) -> Classifier | None:
    """The classifier for ``model_path`` (default: the shipped model), or None with a logged reason."""
    path = Path(model_path) if model_path is not None else default_model_path()
    if not path.is_file():
        log.warning("classifier disabled: no model at %s", path)
        return None
    try:
        manifest = load_manifest(path)
    except (OSError, ValueError) as exc:
        log.warning("classifier disabled: manifest beside %s unreadable: %s", path, exc)
        return None
    spec = manifest.get("input", {}).get("features")
    if spec != FEATURE_SPEC:
        log.warning("classifier disabled: %s was trained with features %s, this code computes %s",
                    path, spec, FEATURE_SPEC)
        return None
    if tuple(manifest.get("labels", ())) != LABELS:
        log.warning("classifier disabled: %s has labels %s, expected %s",
                    path, manifest.get("labels"), LABELS)
        return None
    sha = file_sha256(path)
    if manifest.get("sha256") not in (None, sha):
        log.warning("classifier disabled: %s sha256 %s does not match its manifest (%s)",
                    path, sha, manifest.get("sha256"))
        return None
    try:
        interp = load_interpreter(path)
    except ImportError as exc:
        log.warning("classifier disabled: %s", exc)
        return None
    except (RuntimeError, ValueError) as exc:
        log.warning("classifier disabled: %s could not be loaded: %s", path, exc)
        return None
    clf = Classifier(path, manifest, interp)
    log.info("classifier %s (sha256 %s…) loaded, gunshot threshold %.2f",
             path.name, clf.sha256[:12], clf.gunshot_threshold)
    return clf
