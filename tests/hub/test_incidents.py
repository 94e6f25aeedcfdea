"""Incident messages: shooters by place and their cadence, as published on the wire."""

from __future__ import annotations

import numpy as np
from test_pipeline import T0_NS, arrivals, grid, make_pipeline, run

from shotline.core import messages as m


def test_two_shooters_with_their_cadence_in_one_incident():
    """Shooter A: 6 rounds at 10/s (automatic); B, 40 m away: 3 rounds at 2/s, interleaved."""
    rng = np.random.default_rng(12)
    nodes = grid(5, 4, 300.0, seed=12)
    a, b = (0.0, 0.0, 1.5), (40.0, 0.0, 1.5)
    dets = []
    for k in range(6):
        dets += arrivals(nodes, a, T0_NS + int(k * 0.1e9), rng)
    for k in range(3):
        dets += arrivals(nodes, b, T0_NS + int((0.05 + 0.5 * k) * 1e9), rng)
    incs = run(make_pipeline(nodes), dets)
    assert len(incs) == 1
    inc = m.decode(m.encode(incs[0]), m.Incident)
    assert inc.rounds == 9 and len(inc.shooters) == 2
    by_rounds = {s.rounds: s for s in inc.shooters}
    fast, slow = by_rounds[6], by_rounds[3]
    assert fast.automatic_fire and not slow.automatic_fire and inc.automatic_fire
    assert abs(fast.cadence.rate_hz - 10.0) < 0.5 and abs(slow.cadence.median_interval_s - 0.5) < 0.01
    assert sorted(fast.shot_ids + slow.shot_ids) == sorted(s.shot_id for s in inc.shots)


def test_single_round_has_one_shooter_without_cadence():
    rng = np.random.default_rng(13)
    nodes = grid()
    (inc,) = run(make_pipeline(nodes), arrivals(nodes, (30.0, -20.0, 1.5), T0_NS, rng))
    assert len(inc.shooters) == 1 and inc.shooters[0].cadence is None and not inc.automatic_fire
