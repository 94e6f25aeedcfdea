"""``make model``: build the dataset, train the CNN, quantise to int8 LiteRT, evaluate, ship.

Usage::

    python -m shotline.models.training.train [--seed 0] [--scenes 200] [--epochs 24]
        [--out models/] [--cache build/classifier] [--fixtures tests/data/classifier]

Writes into ``--out``: ``impulse_classifier.tflite`` (int8), ``manifest.json``
(sha256, input spec, labels, operating point, data summary, held-out metrics),
``MODEL_CARD.md`` and ``training/data_manifest.json`` (every clip's source and
licence); the held-out plot goes to ``training/eval_heldout.png``; reference
patches and float outputs for the runtime test go to ``--fixtures``.
Reproducible from ``--seed`` (numpy, TensorFlow and Python seeds; deterministic
TensorFlow ops; single-threaded).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from shotline.models import CLASSIFIER_MODEL_NAME, LABELS, file_sha256
from shotline.sensor.features import FEATURE_SPEC, PATCH_SHAPE

from . import dataset as D
from . import evaluate as E

log = logging.getLogger("shotline.models.training")

REPO = Path(__file__).resolve().parents[2]
# Held-out FP target used to choose the operating point on the validation split.
VAL_MAX_FP = 0.005


def build_model(seed: int, steps: int):
    """A ~7k-parameter CNN on the (48 frames x 32 mel) patch; ``steps``: total training steps."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inp = keras.Input(shape=(*PATCH_SHAPE, 1), name="log_mel")
    x = inp
    for n, pool in ((8, 2), (16, 2), (32, 2)):
        x = layers.Conv2D(n, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.MaxPooling2D(pool)(x)
    x = layers.Conv2D(32, 1, activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.2)(x)
    out = layers.Dense(len(LABELS), activation="softmax", name="scores")(x)
    model = keras.Model(inp, out)
    # Cosine decay to zero: the last epochs settle instead of wandering, so the
    # shipped (last-epoch) weights do not depend on where an oscillation stopped.
    lr = keras.optimizers.schedules.CosineDecay(2e-3, decay_steps=max(1, steps))
    model.compile(optimizer=keras.optimizers.Adam(lr),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def to_int8_tflite(model, representative: np.ndarray) -> bytes:
    """Full-integer (int8 weights and activations) LiteRT flatbuffer; float32 in and out."""
    import tensorflow as tf

    def rep():
        for p in representative:
            yield [p[None, ..., None].astype(np.float32)]

    try:
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
    except Exception:  # Keras 3 models may need the concrete function route
        fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(
            tf.TensorSpec([1, *PATCH_SHAPE, 1], tf.float32))
        conv = tf.lite.TFLiteConverter.from_concrete_functions([fn], model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return conv.convert()


def class_weights(y: np.ndarray) -> dict[int, float]:
    counts = np.bincount(y, minlength=len(LABELS)).astype(float)
    w = counts.sum() / (len(LABELS) * np.maximum(counts, 1))
    return {k: float(v) for k, v in enumerate(w)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Train the impulse classifier and ship it as int8 LiteRT.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scenes", type=int, default=200, help="simulated scenes (6 nodes x 6 events)")
    p.add_argument("--epochs", type=int, default=24)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--out", type=Path, default=REPO / "models")
    p.add_argument("--cache", type=Path, default=REPO / "build" / "classifier")
    p.add_argument("--fixtures", type=Path, default=REPO / "tests" / "data" / "classifier")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")
    t_start = time.perf_counter()

    ds, clip_manifest = D.build(args.seed, args.scenes, args.cache, progress=not args.no_progress)
    summ = D.summary(ds)
    log.info("dataset: %s", json.dumps({k: v["by_label"] for k, v in summ.items()}))

    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.experimental.enable_op_determinism()
    tr = ds.subset(ds.split == "train")
    model = build_model(args.seed, args.epochs * -(-len(tr) // args.batch))
    va = ds.subset(ds.split == "val")
    te = ds.subset(ds.split == "test")
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(tr))
    model.fit(tr.x[order, ..., None], tr.y[order], batch_size=args.batch, epochs=args.epochs,
              validation_data=(va.x[..., None], va.y), class_weight=class_weights(tr.y),
              shuffle=True, verbose=0 if args.no_progress else 2)
    n_params = int(model.count_params())

    rep = tr.x[rng.choice(len(tr), size=min(500, len(tr)), replace=False)]
    blob = to_int8_tflite(model, rep)
    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / CLASSIFIER_MODEL_NAME
    model_path.write_bytes(blob)

    # Everything below uses the shipped int8 model through the node's own runtime.
    from shotline.sensor.classifier import Classifier, load_interpreter

    clf = Classifier(model_path, {"labels": list(LABELS)}, load_interpreter(model_path))
    p_val = clf.predict_patches(va.x)
    threshold = E.pick_threshold(p_val[:, E.GUN], va.y, VAL_MAX_FP)
    p_test = clf.predict_patches(te.x)
    m_test = E.metrics(p_test, te.y, te.source, threshold)
    m_val = E.metrics(p_val, va.y, va.source, threshold)
    f_test = model.predict(te.x[..., None], verbose=0, batch_size=256)
    diff = np.abs(f_test - p_test)
    quant = {"max_abs_diff": round(float(diff.max()), 4),
             "p99_abs_diff": round(float(np.quantile(diff, 0.99)), 4),
             "argmax_agreement_pct": round(100 * float((f_test.argmax(1) == p_test.argmax(1)).mean()), 2)}
    plot_path = E.plot(p_test, te.y, te.source, threshold, out_dir / "training" / "eval_heldout.png")

    manifest = {
        "name": "shotline impulse classifier",
        "file": CLASSIFIER_MODEL_NAME,
        "sha256": file_sha256(model_path),
        "size_bytes": model_path.stat().st_size,
        "labels": list(LABELS),
        "input": {"shape": [1, *PATCH_SHAPE, 1], "dtype": "float32",
                  "features": FEATURE_SPEC},
        "output": {"shape": [1, len(LABELS)], "dtype": "float32",
                   "meaning": "class probabilities (softmax), order of `labels`"},
        "quantisation": "int8 weights and activations (full integer), float32 I/O",
        "operating_point": {"gunshot_threshold": round(threshold, 4),
                            "chosen_on": f"validation split, <= {100 * VAL_MAX_FP:g} % of "
                                         "non-gunshot impulses called gunshot"},
        "parameters": n_params,
        "training": {"seed": args.seed, "scenes": args.scenes, "epochs": args.epochs,
                     "batch": args.batch, "tensorflow": tf.__version__,
                     "seconds": round(time.perf_counter() - t_start, 1)},
        "data_summary": summ,
        "metrics": {"test": m_test, "val": m_val, "int8_vs_float_test": quant},
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    write_data_manifest(out_dir / "training" / "data_manifest.json", clip_manifest)
    write_fixtures(args.fixtures, model, clf, te, args.seed)
    from .card import write_model_card

    write_model_card(out_dir / "MODEL_CARD.md", manifest, plot_path.name)
    log.info("shipped %s (%d bytes, %d parameters) in %.0f s; test: recall %.2f %%, FP %.2f %% "
             "at threshold %.3f", model_path, manifest["size_bytes"], n_params,
             time.perf_counter() - t_start, m_test["gunshot_recall_pct"],
             m_test["false_positive_pct"], threshold)
    return 0


def write_data_manifest(path: Path, clips: list[dict]) -> None:
    """Every clip (source, ref, label, split, group, licence id) and the licence texts by id."""
    ids: dict[str, str] = {}
    counts: dict[str, int] = {}
    rows = []
    for c in clips:
        lid = ids.setdefault(c["licence"], f"L{len(ids)}")
        counts[lid] = counts.get(lid, 0) + 1
        rows.append([c["source"], c["ref"], c["label"], c["split"], c["group"], lid])
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        f.write('{"columns": ["source", "ref", "label", "split", "group", "licence"],\n')
        f.write(' "licences": ' + json.dumps({v: k for k, v in ids.items()}, indent=1) + ",\n")
        f.write(' "clips_per_licence": ' + json.dumps(counts) + ",\n")
        f.write(' "clips": [\n' + ",\n".join(json.dumps(r) for r in rows) + "\n]}\n")


def write_fixtures(dir_: Path, model, clf, te: D.Dataset, seed: int) -> None:
    """Two test patches per class with the float (Keras) and int8 outputs, for the runtime test."""
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.choice(np.flatnonzero(te.y == k), size=2, replace=False)
                          for k in range(len(LABELS)) if (te.y == k).sum() >= 2])
    x = te.x[idx]
    dir_.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(dir_ / "reference.npz", patches=x,
                        float_probs=model.predict(x[..., None], verbose=0).astype(np.float32),
                        int8_probs=clf.predict_patches(x).astype(np.float32),
                        labels=te.y[idx], sources=te.source[idx], details=te.detail[idx])


if __name__ == "__main__":
    sys.exit(main())
