"""``shotline-calibrate eval-classifier``: the shipped classifier on the held-out split.

Rebuilds (or loads from the cache) the dataset with the seed and scene count
recorded in the model's manifest, so the test split is exactly the one held
out in training, runs the *shipped* int8 model through the node's runtime and
reports: ROC AUC, gunshot recall / false positives / precision at the
operating point, fireworks separately, the confusion matrix, a per-source
breakdown, and the scores the model gives to the (unlabelled) triggers of the
Chicago incident recordings. Writes ``eval.json`` and ``eval.png`` into
``--out``. Needs the ``train`` extra (dataset builder, matplotlib) and the
Debian packages ``hydrogen-drumkits`` and ``sonic-pi-samples``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

__all__ = ["evaluate", "evaluate_reviewed", "main"]

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]


def evaluate(model_path: str | None = None, cache_dir: Path | None = None,
             progress: bool = True) -> dict:
    """Held-out figures of a model (default: the shipped one) as a JSON-able dict."""
    from shotline.models.training import dataset as D
    from shotline.models.training import evaluate as E
    from shotline.models.training.sources import chicago_onsets
    from shotline.sensor.classifier import load_classifier

    clf = load_classifier(model_path)
    if clf is None:
        raise RuntimeError("no usable classifier (see the log for the reason)")
    tr = clf.manifest.get("training", {})
    seed, scenes = int(tr.get("seed", 0)), int(tr.get("scenes", 200))
    ds, _ = D.build(seed, scenes, cache_dir, progress=progress)
    te = ds.subset(ds.split == "test")
    prob = clf.predict_patches(te.x)
    res = E.metrics(prob, te.y, te.source, clf.gunshot_threshold)
    res["model_sha256"] = clf.sha256
    chicago = []
    for ref, w, fs, i, snr in chicago_onsets():
        s = clf.scores(w, fs, i)
        chicago.append({"ref": ref, "snr_db": round(float(snr), 1),
                        **{k: round(v, 3) for k, v in s.items()}})
    loud = [c for c in chicago if c["snr_db"] >= 20]
    res["chicago_unlabelled"] = {
        "n_triggers": len(chicago),
        "n_triggers_snr_ge_20db": len(loud),
        "called_gunshot_pct_snr_ge_20db": round(100.0 * float(np.mean(
            [c["gunshot"] >= clf.gunshot_threshold for c in loud])), 1) if loud else None,
        "triggers": chicago,
    }
    res["_plot_inputs"] = (prob, te.y, te.source)
    return res


def evaluate_reviewed(clips, clf) -> dict:
    """The classifier on operator-reviewed clips (``shotline-calibrate export-reviewed`` output).

    ``clips``: :class:`shotline.hub.web.export_dataset.LabelledClip` items. Returns
    gunshot recall and the share of non-gunshot clips called gunshot at the
    model's operating point, with counts per label, as a JSON-able dict.
    """
    thr = clf.gunshot_threshold
    per_label: dict[str, dict[str, int]] = {}
    rows = []
    for c in clips:
        i_onset = c.onset_s * c.sample_rate_hz
        score = float(clf.scores(c.samples, c.sample_rate_hz, i_onset)["gunshot"])
        called = score >= thr
        d = per_label.setdefault(c.label, {"n": 0, "called_gunshot": 0})
        d["n"] += 1
        d["called_gunshot"] += int(called)
        rows.append({"detection_id": c.detection_id, "label": c.label, "gunshot_score": round(score, 4)})
    gun = per_label.get("gunshot", {"n": 0, "called_gunshot": 0})
    neg_n = sum(v["n"] for k, v in per_label.items() if k != "gunshot")
    neg_fp = sum(v["called_gunshot"] for k, v in per_label.items() if k != "gunshot")
    return {
        "threshold": thr,
        "model_sha256": clf.sha256,
        "n": len(rows),
        "per_label": per_label,
        "gunshot_recall_pct": round(100.0 * gun["called_gunshot"] / gun["n"], 2) if gun["n"] else None,
        "false_positive_pct": round(100.0 * neg_fp / neg_n, 2) if neg_n else None,
        "clips": rows,
    }


def _main_reviewed(args) -> int:
    from shotline.hub.web.export_dataset import read_dataset
    from shotline.sensor.classifier import load_classifier

    clf = load_classifier(args.model)
    if clf is None:
        print("eval-classifier: no usable classifier (see the log for the reason)", file=sys.stderr)
        return 1
    res = evaluate_reviewed(read_dataset(args.reviewed), clf)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "eval-reviewed.json").write_text(json.dumps(res, indent=2) + "\n")
    print(f"reviewed clips: {res['n']} {dict((k, v['n']) for k, v in res['per_label'].items())}; "
          f"threshold {res['threshold']:.3f}")
    print(f"  gunshot recall {res['gunshot_recall_pct']} %   non-gunshot called gunshot {res['false_positive_pct']} %")
    print(f"wrote {args.out / 'eval-reviewed.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="shotline-calibrate eval-classifier",
                                description="Evaluate the impulse classifier on the held-out split.")
    p.add_argument("--model", default=None, help="a .tflite with manifest.json beside it "
                   "(default: the shipped model)")
    p.add_argument("--cache", type=Path, default=ROOT / "build" / "classifier",
                   help="dataset cache folder (default build/classifier)")
    p.add_argument("--out", type=Path, default=ROOT / "build" / "classifier" / "eval",
                   help="where eval.json and eval.png go")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--reviewed", type=Path, default=None,
                   help="evaluate on an operator-reviewed data set (from 'shotline-calibrate export-reviewed') "
                   "instead of the held-out split; needs no train extra")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.reviewed is not None:
        return _main_reviewed(args)
    try:
        from shotline.models.training import evaluate as E
    except ImportError as exc:
        print(f"eval-classifier needs the train extra: {exc}", file=sys.stderr)
        return 2
    try:
        res = evaluate(args.model, args.cache, progress=not args.no_progress)
    except (RuntimeError, FileNotFoundError) as exc:
        print(f"eval-classifier: {exc}", file=sys.stderr)
        return 1
    prob, y, source = res.pop("_plot_inputs")
    args.out.mkdir(parents=True, exist_ok=True)
    png = E.plot(prob, y, source, res["threshold"], args.out / "eval.png")
    (args.out / "eval.json").write_text(json.dumps(res, indent=2) + "\n")
    print(f"held-out split: {res['n']} patches {res['n_by_label']}; threshold {res['threshold']:.3f}")
    print(f"  gunshot recall {res['gunshot_recall_pct']} %   false positives "
          f"{res['false_positive_pct']} % of non-gunshot impulses   precision {res['precision_pct']} %")
    print(f"  fireworks called gunshot {res['firework_called_gunshot_pct']} %   other "
          f"{res['other_called_gunshot_pct']} %   background {res['background_called_gunshot_pct']} %")
    print(f"  ROC AUC (impulses) {res['roc_auc_impulses']}   4-class accuracy {res['accuracy_pct']} %")
    print("  per source:")
    for s, m in res["per_source"].items():
        print(f"    {s:11s} n={m['n']:5d} gunshots={m['n_gunshot']:4d} recall={m['gunshot_recall_pct']} "
              f"FP={m['false_positive_pct']} acc={m['accuracy_pct']}")
    print("  confusion (rows true, cols predicted):", res["confusion"]["labels"])
    for lab, row in zip(res["confusion"]["labels"], res["confusion"]["rows_true_cols_pred"],
                        strict=True):
        print(f"    {lab:10s} {row}")
    c = res["chicago_unlabelled"]
    print(f"  Chicago (unlabelled): {c['n_triggers']} triggers, {c['n_triggers_snr_ge_20db']} at "
          f">= 20 dB SNR, {c['called_gunshot_pct_snr_ge_20db']} % of those called gunshot")
    print(f"wrote {args.out / 'eval.json'} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
