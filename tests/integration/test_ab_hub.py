"""scripts/bench/ab_hub.py: the paired comparison's statistics, and one round of two identical trees."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench" / "ab_hub.py"


def _load():
    spec = importlib.util.spec_from_file_location("ab_hub", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


ab = _load()


def _machine(n: int, seed: int) -> np.ndarray:
    """Per-round CPU seconds of one code on a machine whose speed drifts by a fifth (shared by a pair)."""
    rng = np.random.default_rng(seed)
    return 2.0 * np.exp(rng.normal(0.0, 0.2, n))


def test_a_ten_percent_gain_is_measured_through_the_machine_drift():
    base = _machine(30, 1)
    rng = np.random.default_rng(2)
    cand = 0.9 * base * np.exp(rng.normal(0.0, 0.05, 30))  # the pair's own spread: 5 %
    got = ab.paired_summary(base, cand)
    assert got["ratio_ci_hi"] < 1.0  # measured: the interval excludes 1
    assert got["ratio_ci_lo"] <= 0.9 <= got["ratio_ci_hi"]
    assert abs(got["ratio_median"] - 0.9) < 0.03
    assert got["rounds"] == 30


def test_an_a_a_comparison_keeps_one_inside_the_interval():
    base = _machine(20, 3)
    rng = np.random.default_rng(4)
    got = ab.paired_summary(base, base * np.exp(rng.normal(0.0, 0.1, 20)))
    assert got["ratio_ci_lo"] < 1.0 < got["ratio_ci_hi"]
    assert got["ratio_min"] <= got["ratio_median"] <= got["ratio_max"]


def test_rounds_must_pair():
    with pytest.raises(ValueError, match="same number"):
        ab.paired_summary(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="same number"):
        ab.paired_summary(np.ones(0), np.ones(0))


@pytest.mark.slow
def test_one_round_of_a_revision_against_itself():
    if not (ab.REPO / ".git").exists():
        pytest.skip("not a git checkout")
    lines: list[str] = []
    got = ab.compare("HEAD", 1, "n100", cand_rev="HEAD", out=lines.append)
    assert got["same_shots"] is True and got["base_shots"] == got["cand_shots"] > 0
    assert got["detections"] > 1000 and got["ratio_median"] > 0
    assert any("published shots: identical" in ln for ln in lines)
    assert not any("WARNING" in ln for ln in lines)
