"""Held-out metrics of the impulse classifier: ROC, operating point, confusion, per source.

All figures are computed from the class probabilities of the shipped int8
model on the test split (see :mod:`shotline.models.training.dataset` for how
the split is made). "False positive" means a non-gunshot *impulse* (firework
or other impulsive sound) called a gunshot; background windows are reported
on their own line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shotline.models import LABELS

GUN, FIRE, OTHER, BACK = range(4)


def roc(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve: (false-positive rate, true-positive rate, thresholds), thresholds descending."""
    order = np.argsort(-scores, kind="stable")
    s, p = scores[order], positive[order].astype(bool)
    tp = np.cumsum(p)
    fp = np.cumsum(~p)
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # one point per distinct threshold
    tpr = np.r_[0.0, tp[last] / max(p.sum(), 1)]
    fpr = np.r_[0.0, fp[last] / max((~p).sum(), 1)]
    return fpr, tpr, np.r_[np.inf, s[last]]


def auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    return float(np.trapezoid(tpr, fpr))


def pick_threshold(p_gun: np.ndarray, y: np.ndarray, max_fp_rate: float = 0.005) -> float:
    """Lowest gunshot threshold whose false-positive rate on impulses stays <= ``max_fp_rate``.

    Chosen on the validation split; impulses are firework + other.
    """
    neg = np.sort(p_gun[(y == FIRE) | (y == OTHER)])[::-1]
    if neg.size == 0:
        return 0.5
    k = int(np.floor(max_fp_rate * neg.size))  # this many negatives may score above it
    t = float(neg[k]) if k < neg.size else 0.0
    return float(min(max(t + 1e-6, 0.05), 0.99))


def metrics(prob: np.ndarray, y: np.ndarray, source: np.ndarray, threshold: float) -> dict:
    """Every figure of the evaluation, as plain JSON-able values (percentages in %)."""
    p_gun = prob[:, GUN]
    called = p_gun >= threshold
    gun = y == GUN
    imp_neg = (y == FIRE) | (y == OTHER)
    fpr, tpr, _ = roc(p_gun, gun)
    imp = gun | imp_neg
    fpr_i, tpr_i, _ = roc(p_gun[imp], gun[imp])
    pred = prob.argmax(axis=1)
    conf = np.zeros((4, 4), dtype=int)
    np.add.at(conf, (y, pred), 1)

    def pct(a: np.ndarray) -> float | None:
        return round(100.0 * float(a.mean()), 2) if a.size else None

    per_source = {}
    for s in sorted(set(source.tolist())):
        m = source == s
        per_source[s] = {
            "n": int(m.sum()),
            "n_gunshot": int((m & gun).sum()),
            "gunshot_recall_pct": pct(called[m & gun]),
            "false_positive_pct": pct(called[m & imp_neg]),
            "accuracy_pct": pct(pred[m] == y[m]),
        }
    tp = int((called & gun).sum())
    n_called = int(called.sum())
    return {
        "threshold": threshold,
        "n": int(y.size),
        "n_by_label": {lab: int((y == k).sum()) for k, lab in enumerate(LABELS)},
        "gunshot_recall_pct": pct(called[gun]),
        "false_positive_pct": pct(called[imp_neg]),
        "firework_called_gunshot_pct": pct(called[y == FIRE]),
        "other_called_gunshot_pct": pct(called[y == OTHER]),
        "background_called_gunshot_pct": pct(called[y == BACK]),
        "precision_pct": round(100.0 * tp / n_called, 2) if n_called else None,
        "roc_auc_all": round(auc(fpr, tpr), 4),
        "roc_auc_impulses": round(auc(fpr_i, tpr_i), 4),
        "accuracy_pct": pct(pred == y),
        "firework_recall_pct": pct(pred[y == FIRE] == FIRE),
        "confusion": {"labels": list(LABELS), "rows_true_cols_pred": conf.tolist()},
        "per_source": per_source,
    }


def plot(prob: np.ndarray, y: np.ndarray, source: np.ndarray, threshold: float,
         path: Path, title: str = "held-out split") -> Path:
    """ROC (impulses and per source), confusion matrix and score histograms as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p_gun = prob[:, GUN]
    gun = y == GUN
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.6))
    imp = gun | (y == FIRE) | (y == OTHER)
    fpr, tpr, _ = roc(p_gun[imp], gun[imp])
    ax[0].plot(100 * fpr, 100 * tpr, "k", lw=2, label=f"all impulses (AUC {auc(fpr, tpr):.3f})")
    for s in sorted(set(source.tolist())):
        m = imp & (source == s)
        if gun[m].any() and (~gun[m]).any():
            f, t, _ = roc(p_gun[m], gun[m])
            ax[0].plot(100 * f, 100 * t, lw=1, label=s)
    fire = gun | (y == FIRE)
    if (y == FIRE).any():
        f, t, _ = roc(p_gun[fire], gun[fire])
        ax[0].plot(100 * f, 100 * t, "r--", lw=1, label="gunshot vs firework")
    called = p_gun >= threshold
    op_fp = 100 * called[imp & ~gun].mean() if (imp & ~gun).any() else 0.0
    ax[0].plot(op_fp, 100 * called[gun].mean(), "o", color="C3", label=f"operating point {threshold:.2f}")
    ax[0].set(xscale="symlog", xlim=(0, 100), ylim=(50, 100.5), xlabel="false positives (% of non-gunshot impulses)",
              ylabel="gunshot recall (%)", title=f"ROC, {title}")
    ax[0].legend(fontsize=7, loc="lower right")
    conf = np.zeros((4, 4), dtype=int)
    np.add.at(conf, (y, prob.argmax(1)), 1)
    ax[1].imshow(conf / np.maximum(conf.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
    for i in range(4):
        for j in range(4):
            ax[1].text(j, i, str(conf[i, j]), ha="center", va="center", fontsize=9)
    ax[1].set(xticks=range(4), yticks=range(4), xticklabels=LABELS, yticklabels=LABELS,
              xlabel="predicted (arg max)", ylabel="true", title="confusion matrix")
    bins = np.linspace(0, 1, 41)
    for k, lab in enumerate(LABELS):
        if (y == k).any():
            ax[2].hist(p_gun[y == k], bins=bins, histtype="step", lw=1.5, label=lab, density=True)
    ax[2].axvline(threshold, color="k", ls=":")
    ax[2].set(yscale="log", xlabel="p(gunshot)", ylabel="density", title="gunshot score by true class")
    ax[2].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
