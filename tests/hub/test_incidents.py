"""Incident messages: shooters by place and their cadence, as published on the wire."""

from __future__ import annotations

from types import SimpleNamespace

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_pipeline import FRAME, T0_NS, arrivals, grid, make_pipeline, run

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


# --------------------------------------------------------------------------- incremental rendering
# An incident is rendered from state kept in step with its shots (_ShotsView). A shot that
# moves in time, changes its picks and scores, or changes without being the shot that
# triggered the render must leave no stale trace: every render must equal the one a fresh
# builder computes from the same shots.


def _det(k, scores):
    return m.Detection(detection_id=f"d{k}", site="test", node_id=f"N{k % 9:02d}", onset_time_ns=T0_NS + k,
                       onset_sigma_s=20e-6, time_quality="pps", peak_dbfs=-20.0, snr_db=30.0,
                       noise_floor_dbfs=-60.0, scores=scores)


def _scores(rng, variant):
    g = float(rng.random())
    if variant == 0:
        return None
    if variant == 1:
        return {"gunshot": g, "firework": 1.0 - g}
    if variant == 2:
        return {"gunshot": g, "other": float(rng.random())}  # a class only some picks carry
    return {"gunshot": int(g > 0.5), "firework": 1}  # not floats: averaged as from scratch too


def _locate(shot, rng, t0, xy, k0, variant):
    """Give ``shot`` a new solution, position, time and picks (what a re-location does)."""
    from shotline.hub.associate import Pick

    n = int(rng.integers(4, 9))
    picks = {}
    for k in range(n):
        det = _det(k0 + k, _scores(rng, variant) if rng.random() < 0.8 else None)
        picks[det.node_id] = Pick(det=det, t_s=t0 + 0.1, received_ns=T0_NS)
    cep50 = float(rng.uniform(0.01, 3.0))
    shot.picks = picks
    shot.solution = SimpleNamespace(
        cep50_m=cep50, cep95_m=2.1 * cep50, ellipse_m=(2 * cep50, cep50, float(rng.uniform(0, 180))),
        c_mps=343.0, n_used=n, rms_residual_s=float(rng.uniform(0, 1e-4)),
        residuals_s=rng.normal(0, 3e-5, n), used=np.ones(n, bool),
    )
    shot.enu_m = np.array([xy[0] + rng.normal(0, 0.5), xy[1] + rng.normal(0, 0.5), 1.5])
    shot.t0_s = t0
    shot.revision += 1


def _fresh_render(builder, inc, full):
    """``inc`` rendered by a new builder that never saw it: from scratch (``full``) or a new view."""
    from shotline.hub.incidents import IncidentBuilder, IncidentState

    fresh = IncidentBuilder(builder.cfg, builder.assoc, builder.provenance)
    st = IncidentState(inc.incident_id, shots=list(inc.shots), state=inc.state, revision=inc.revision - 1,
                       n_shooters_logged=inc.n_shooters_logged, review=inc.review)
    if full:
        st.revision += 1
        return fresh._render_full(st)
    return fresh._render(st)


def _wire(msg):
    return m.encode(msgspec.structs.replace(msg, published_ns=0))


@pytest.mark.parametrize("seed", [1, 2])
def test_incremental_render_equals_a_render_from_scratch(seed):
    from shotline.hub.associate import ShotState
    from shotline.hub.config import HubConfig
    from shotline.hub.incidents import IncidentBuilder

    rng = np.random.default_rng(seed)
    assoc = SimpleNamespace(abs_ns=lambda t: T0_NS + int(round(t * 1e9)), registry=SimpleNamespace(frame=FRAME))
    builder = IncidentBuilder(HubConfig(site="test"), assoc, m.Provenance(version="test"))
    places = [(0.0, 0.0), (40.0, 0.0), (15.0, 30.0)]
    shots, home, k0 = [], {}, 0
    for step in range(300):
        r = rng.random()
        if not shots or r < 0.25:
            shot = ShotState(shot_id=f"s{len(shots):04d}", picks={}, solution=None, enu_m=np.zeros(3), t0_s=0.0,
                             created_ns=T0_NS, last_pick_received_ns=T0_NS)
            home[shot.shot_id] = places[int(rng.integers(0, 3))] if rng.random() < 0.9 else (20.0, -20.0)
            t0 = 0.1 * len(shots) + float(rng.normal(0, 0.03))
            _locate(shot, rng, t0, home[shot.shot_id], k0, int(rng.integers(0, 3)))
            shots.append(shot)
        else:
            # Re-locate a recent shot (its time may move past its neighbours); sometimes
            # another one as well, which the render of the first must pick up too.
            for _ in range(1 + (rng.random() < 0.3)):
                shot = shots[max(0, len(shots) - 1 - int(rng.integers(0, 12)))]
                if rng.random() < 0.1:
                    shot.revision += 1  # a corroborating pick joined: nothing else changed
                    continue
                variant = 3 if rng.random() < 0.02 else int(rng.integers(0, 3))
                t0 = shot.t0_s + float(rng.normal(0, 0.08))
                _locate(shot, rng, t0, home[shot.shot_id], k0, variant)
        k0 += 10
        msg = builder.on_shot(shot)
        (inc,) = builder.open
        if step % 37 == 0:
            review = m.Review(decision="relabelled", reviewer="op", time_ns=T0_NS, label="firework")
            msg = builder.on_review(inc.incident_id, review)
        assert msg.rounds == len(shots)
        got = _wire(msg)
        assert got == _wire(_fresh_render(builder, inc, full=True)), step
        assert got == _wire(_fresh_render(builder, inc, full=False)), step
    assert len(msg.shooters) >= 3
    assert msg.class_scores is not None
    closed = _wire(builder.close_all()[0])
    assert closed == _wire(_fresh_render(builder, inc, full=True))


def _builder_and_shots(rng):
    """A fresh incident builder and a maker of located shots for it: ``new_shot(k, xy, t0)`` is shot k at
    ``xy`` (E, N m) emitted at ``t0`` s (positions, picks and solution drawn from ``rng``)."""
    from shotline.hub.associate import ShotState
    from shotline.hub.config import HubConfig
    from shotline.hub.incidents import IncidentBuilder

    assoc = SimpleNamespace(abs_ns=lambda t: T0_NS + int(round(t * 1e9)), registry=SimpleNamespace(frame=FRAME))
    builder = IncidentBuilder(HubConfig(site="test"), assoc, m.Provenance(version="test"))

    def new_shot(k, xy, t0):
        shot = ShotState(shot_id=f"s{k:04d}", picks={}, solution=None, enu_m=np.zeros(3), t0_s=0.0,
                         created_ns=T0_NS, last_pick_received_ns=T0_NS)
        _locate(shot, rng, t0, xy, 10 * k, 0)
        return shot

    return builder, new_shot


def test_a_new_shot_joins_the_incident_where_its_shots_are_now():
    """The open incidents' places are kept between shots (a new shot is compared with every open
    incident): a shot that was re-located counts where it is now, whether or not its own update was
    handled first, and an incident's own shot updates it however many incidents are open."""
    rng = np.random.default_rng(3)
    builder, new_shot = _builder_and_shots(rng)
    far = [new_shot(k, (1000.0 * k, 0.0), 0.1 * k) for k in range(1, 40)]  # 39 other open incidents
    for s in far:
        builder.on_shot(s)
    a = new_shot(0, (0.0, 0.0), 5.0)
    first = builder.on_shot(a)
    builder.on_shot(new_shot(60, (-3000.0, 0.0), 5.05))  # compared with a's incident where a was
    _locate(a, rng, 5.0, (0.0, 500.0), 900, 0)  # re-located 500 m north; its update not handled yet
    b = new_shot(50, (0.0, 505.0), 5.1)
    assert builder.on_shot(b).incident_id == first.incident_id
    assert builder.on_shot(a).rounds == 2  # the update of a: the same incident, now of both
    assert len(builder.open) == 41


def test_shots_of_one_moment_publish_each_incident_they_touch_once():
    """Shots created or re-located at one moment (one detection, one tick) give one message per
    incident they touch, in the order first touched, each the render of every shot as it now is;
    a new incident's first message is "new" even when several of its shots come at once."""
    rng = np.random.default_rng(5)
    builder, new_shot = _builder_and_shots(rng)
    a, b, far = new_shot(1, (0.0, 0.0), 5.0), new_shot(2, (3.0, 0.0), 5.1), new_shot(3, (5000.0, 0.0), 5.05)
    first = builder.on_shots([a, far, b])
    assert [(msg.state, msg.revision, msg.rounds) for msg in first] == [("new", 1, 2), ("new", 1, 1)]
    assert first[0].incident_id != first[1].incident_id
    _locate(a, rng, 5.0, (1.0, 0.0), 100, 0)
    _locate(b, rng, 5.1, (2.0, 0.0), 200, 0)
    (upd,) = builder.on_shots([b, a])
    assert (upd.incident_id, upd.state, upd.revision, upd.rounds) == (first[0].incident_id, "updated", 2, 2)
    (inc,) = [i for i in builder.open if i.incident_id == upd.incident_id]
    assert _wire(upd) == _wire(msgspec.structs.replace(_fresh_render(builder, inc, full=True), revision=2,
                                                       state="updated"))
    c = new_shot(4, (1.5, 0.0), 5.2)
    (more,) = builder.on_shots([c])  # one shot alone: as on_shot gave it
    assert (more.incident_id, more.state, more.revision, more.rounds) == (upd.incident_id, "updated", 3, 3)


def _scan_find(builder, shot):
    """The incident a new shot joins, by comparing it with every open incident, each summary taken
    afresh (the rule of IncidentBuilder._find without its index): nearest within reach, the first
    opened on a tie."""
    return builder._nearest(shot, ((inc, *inc.summary()) for inc in builder.open))


def test_the_open_incidents_index_chooses_as_a_scan_of_every_incident():
    """Hundreds of open incidents, new shots near cell corners and at equal distances from two
    incidents, shots re-located across cells before their updates are handled, some with a CEP95
    that reaches everywhere, incidents closing: each new shot joins the incident a scan of every
    open incident chooses, and the same incidents close."""
    from shotline.hub.associate import ShotState
    from shotline.hub.config import HubConfig
    from shotline.hub.incidents import IncidentBuilder

    rng = np.random.default_rng(7)
    assoc = SimpleNamespace(abs_ns=lambda t: T0_NS + int(round(t * 1e9)), registry=SimpleNamespace(frame=FRAME))
    builder = IncidentBuilder(HubConfig(site="test"), assoc, m.Provenance(version="test"))
    cell = builder._index.cell_m
    spots = [(cell * i + float(rng.choice([0.0, -0.4, 0.4, 30.0])), cell * j + float(rng.choice([0.0, -0.4, 0.4])))
             for i in range(-6, 6) for j in range(-6, 6)]
    shots, n_joined, n_narrowed, n_closed, n_ties = [], 0, 0, 0, 0
    for step in range(1500):
        t0 = 0.05 * step
        r = rng.random()
        if shots and r < 0.2:
            # Re-locate an earlier shot (maybe into another cell); its update handled now or later.
            shot = shots[int(rng.integers(max(0, len(shots) - 200), len(shots)))]
            xy = spots[int(rng.integers(len(spots)))] if rng.random() < 0.3 else tuple(shot.enu_m[:2])
            _locate(shot, rng, shot.t0_s, xy, 10 * step, 0)
            if rng.random() < 0.5:
                builder.on_shot(shot)
            continue
        if r < 0.25:
            wm = T0_NS + int((t0 - 5.0) * 1e9)
            expected = [i.incident_id for i in builder.open
                        if wm - assoc.abs_ns(i.summary()[0]) > builder.cfg.incidents.gap_s * 1e9]
            got = [msg.incident_id for msg in builder.close_due(wm)]
            assert got == expected, step
            n_closed += len(got)
            continue
        shot = ShotState(shot_id=f"s{step:05d}", picks={}, solution=None, enu_m=np.zeros(3), t0_s=0.0,
                         created_ns=T0_NS, last_pick_received_ns=T0_NS)
        x, y = spots[int(rng.integers(len(spots)))]
        _locate(shot, rng, t0, (x + float(rng.normal(0, 40.0)), y + float(rng.normal(0, 40.0))), 10 * step, 0)
        if rng.random() < 0.05:
            shot.solution.cep95_m = 5000.0  # reaches every incident
        if r > 0.97:
            # Two incidents 100 m apart across a cell's edge, then a shot half-way: 50 m from both
            # (whole metres and a weight of 4: exact), so the first opened takes it.
            x, y = cell * int(rng.integers(-5, 5)), 2000.0 + 200.0 * n_ties
            for dx in (-50.0, 50.0)[:: int(rng.choice([-1, 1]))]:
                side = ShotState(shot_id=f"s{step:05d}{dx:+.0f}", picks={}, solution=None, enu_m=np.zeros(3),
                                 t0_s=0.0, created_ns=T0_NS, last_pick_received_ns=T0_NS)
                _locate(side, rng, t0, (x + dx, y), 10 * step, 0)
                side.enu_m, side.solution.cep50_m, side.solution.cep95_m = np.array([x + dx, y, 1.5]), 0.5, 1.05
                builder.on_shot(side)
                shots.append(side)
            shot.enu_m, shot.solution.cep50_m, shot.solution.cep95_m = np.array([x, y, 1.5]), 0.5, 1.05
            first_opened = next(i for i in builder.open if i.shots[0] is shots[-2])
            assert _scan_find(builder, shot) is first_opened
            n_ties += 1
        expected = _scan_find(builder, shot)
        assert builder._find(shot) is expected, step
        n_joined += expected is not None
        n_narrowed += len(builder._index.near(shot.enu_m[0], shot.enu_m[1], 60.0)) < len(builder.open)
        builder.on_shot(shot)
        shots.append(shot)
    assert n_joined > 100 and n_closed > 100 and n_narrowed > 500 and n_ties > 20
    assert max(len(builder.open), 1) < len(shots)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(0.0, 60.0, allow_nan=False), max_size=60))
def test_cadence_is_numpys_median_interval_and_extremes(times):
    """``cadence_of`` in plain floats gives numpy's numbers exactly: rounds, the median interval (the middle one,
    or the mean of the two), the shortest and longest, and the rate, from shot times in any order."""
    from shotline.hub.incidents import cadence_of

    got = cadence_of(times)
    if len(times) < 2:
        assert got is None
        return
    d = np.diff(np.sort(np.asarray(times, float)))
    med = float(np.median(d))
    assert got.rounds == len(times)
    assert (got.median_interval_s, got.min_interval_s, got.max_interval_s) == (med, float(d.min()), float(d.max()))
    assert got.rate_hz == (1.0 / med if med > 0 else float("inf"))


def test_a_closed_incident_is_reviewed_from_its_last_message_and_holds_nothing_else():
    """Reviews of a closed incident give its next revisions as a render of the closed incident with that
    review would (a relabel sets the class, a later confirm gives the scores' class back); the builder keeps
    only the closed incident's last message, not its shots and their picks."""
    from shotline.hub.incidents import IncidentState

    rng = np.random.default_rng(7)
    builder, new_shot = _builder_and_shots(rng)
    for k in range(4):
        builder.on_shot(new_shot(k, (5.0 * k, 0.0), 0.5 * k))
    (inc,) = builder.open
    relabel = m.Review(decision="relabelled", reviewer="op", time_ns=T0_NS, label="firework")
    builder.on_review(inc.incident_id, relabel)  # reviewed while open: the closing message carries it
    (closed,) = builder.close_all()
    assert closed.state == "closed" and closed.event_class == "firework"
    assert not any(isinstance(v, IncidentState) for v in builder.recent_closed.values())
    assert builder.recent_closed[inc.incident_id] is closed
    for review in (m.Review(decision="confirmed", reviewer="op2", time_ns=T0_NS + 5, note="heard it"), relabel):
        msg = builder.on_review(inc.incident_id, review)
        inc.review, inc.revision = review, inc.revision + 1  # (the closed state itself is no longer touched)
        assert _wire(msg) == _wire(_fresh_render(builder, inc, full=True))
        assert msg.revision == inc.revision and msg.review == review
    assert msg.event_class == "firework"
    assert builder.on_review("no-such-incident", relabel) is None
    builder.RECENT_CLOSED = 0
    builder.on_shot(new_shot(9, (500.0, 0.0), 60.0))
    builder.close_all()
    assert builder.on_review(inc.incident_id, relabel) is None  # beyond the closures kept
