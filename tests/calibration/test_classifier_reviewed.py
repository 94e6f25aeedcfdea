"""eval-classifier --reviewed: the classifier's figures on operator-labelled clips."""

from __future__ import annotations

import numpy as np

from shotline.calibration.classifier_eval import evaluate_reviewed
from shotline.hub.web.export_dataset import LabelledClip


class _Fake:
    gunshot_threshold = 0.5
    sha256 = "0" * 64

    def scores(self, window, fs, i_onset):
        # "gunshot" when the clip is loud at its onset
        g = 0.9 if abs(window[int(i_onset)]) > 0.5 else 0.1
        return {"gunshot": g, "firework": 1 - g, "other": 0.0, "background": 0.0}


def _clip(label, loud, k):
    x = np.zeros(1200, dtype=np.float32)
    x[600] = 0.9 if loud else 0.1
    return LabelledClip(samples=x, sample_rate_hz=12000, onset_s=0.05, label=label, group=f"i{k}",
                        detection_id=f"d{k}", node_id="n", row={})


def test_recall_and_false_positives_on_reviewed_clips():
    clips = [_clip("gunshot", True, 0), _clip("gunshot", True, 1), _clip("gunshot", False, 2),
             _clip("firework", True, 3), _clip("other", False, 4), _clip("other", False, 5)]
    res = evaluate_reviewed(clips, _Fake())
    assert res["n"] == 6
    assert res["gunshot_recall_pct"] == round(100 * 2 / 3, 2)
    assert res["false_positive_pct"] == round(100 * 1 / 3, 2)
    assert res["per_label"]["firework"] == {"n": 1, "called_gunshot": 1}
