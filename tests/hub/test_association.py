"""Association in hard conditions, node timing statistics, local-frame input, location modes."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from test_pipeline import (
    FRAME,
    SITE,
    T0_NS,
    C,
    arrivals,
    detection,
    grid,
    make_pipeline,
    run,
    shot_enu,
    status,
)

from shotline.hub.config import AssociationSettings, HubConfig, LocationSettings
from shotline.hub.geometry import LocalFrame
from shotline.hub.locate import travel_times_s
from shotline.hub.pipeline import HubPipeline


def test_wall_echo_ghost_is_not_a_shot():
    """A wall mirrors the source: a consistent set of late picks at the image source is recognised as an echo."""
    rng = np.random.default_rng(11)
    nodes = grid(5, 4, 250.0, seed=11)
    src = np.array([-100.0, 50.0, 1.5])
    wall_x = src[0] + 30.0
    image = np.array([2 * wall_x - src[0], src[1], src[2]])
    dets = arrivals(nodes, src, T0_NS, rng)
    dets += [(nid, t) for nid, t in arrivals(nodes, image, T0_NS, rng) if nodes[nid][0] < wall_x]
    p = make_pipeline(nodes)
    incs = run(p, dets)
    shots = [s for i in incs for s in i.shots]
    assert len(shots) == 1
    assert np.linalg.norm(shot_enu(shots[0]) - src[:2]) < 0.5


def test_a_second_source_at_the_same_emission_time_is_not_taken_for_an_echo():
    """Two sources 1.3 km apart fire 1 ms apart. The second's first set holds a node both heard,
    where its pick is the later one, as an echo's would be; its other nodes lie nearer to it than
    to the first, where no reflection of the first can be heard first. It is a shot with every node
    that heard it (without the distance test its first set was dropped as an echo: 8 of 20 nodes)."""
    nodes = grid(8, 4, 300.0, seed=3)
    first, second = np.array([-800.0, 0.0, 1.5]), np.array([500.0, 0.0, 1.5])
    rng = np.random.default_rng(2)
    d1 = {n: np.linalg.norm(r - first) for n, r in nodes.items()}
    d2 = {n: np.linalg.norm(r - second) for n, r in nodes.items()}
    dets1 = [(n, t) for n, t in arrivals(nodes, first, T0_NS, rng) if d1[n] <= 700]
    dets2 = [(n, t) for n, t in arrivals(nodes, second, T0_NS + 1_000_000, rng) if d2[n] <= 950]
    shared = {n for n, _ in dets1} & {n for n, _ in dets2}
    assert any(d2[n] > d1[n] for n in shared)
    p = make_pipeline(nodes)
    outs = []
    # The first is a shot when the second's picks come, those of the shared nodes first.
    for nid, t in sorted(dets1, key=lambda d: d[1]) + sorted(dets2, key=lambda d: (d[0] not in shared, d[1])):
        outs += p.handle(*detection(nid, t), received_ns=t)
    outs += p.finish()
    shots = {s.shot_id: s for o in outs for s in o.incident.shots}.values()
    got = sorted((shot_enu(s)[0], s.n_nodes) for s in shots)
    assert len(got) == 2 and p.assoc.n_echo_ghosts == 0
    assert abs(got[0][0] - first[0]) < 0.5 and got[0][1] == len(dets1)
    assert abs(got[1][0] - second[0]) < 0.5 and got[1][1] == len(dets2)


def test_supersonic_nwave_before_the_muzzle_blast_is_replaced():
    """Nodes near the line of fire pick the bullet's shock wave first: the later muzzle blast takes its place."""
    rng = np.random.default_rng(12)
    nodes = grid(4, 3, 300.0, seed=12)
    src = np.array([20.0, -30.0, 1.5])
    dets = arrivals(nodes, src, T0_NS, rng)
    early = sorted(dets, key=lambda d: d[1])[3:6]
    dets += [(nid, t - 8_000_000) for nid, t in early]
    incs = run(make_pipeline(nodes), dets)
    shots = [s for i in incs for s in i.shots]
    assert len(shots) == 1
    shot = shots[0]
    assert np.linalg.norm(shot_enu(shot) - src[:2]) < 0.5
    assert shot.n_nodes == len(nodes)


def test_quiet_network_a_shot_heard_by_few_nodes_is_decided_when_the_wait_window_passes():
    """4 of 12 nodes hear a shot and the others say nothing at all: the hypothesis waits, then is accepted."""
    rng = np.random.default_rng(13)
    nodes = grid()
    src = np.array([-400.0, -250.0, 1.5])  # a corner: the far nodes are out of range
    near = dict(sorted(nodes.items(), key=lambda kv: np.linalg.norm(kv[1][:2] - src[:2]))[:5])
    dets = arrivals(near, src, T0_NS, rng)
    p = make_pipeline(nodes)
    out = []
    for nid, t in sorted(dets, key=lambda d: d[1]):
        out += p.handle(*detection(nid, t), received_ns=t)
    out += p.tick(T0_NS + int(10e9))
    shots = {s.shot_id: s for o in out for s in o.incident.shots}
    assert len(shots) == 1
    assert np.linalg.norm(shot_enu(next(iter(shots.values()))) - src[:2]) < 1.0


def test_random_single_node_impulses_make_no_shots():
    rng = np.random.default_rng(14)
    nodes = grid()
    dets = [(nid, T0_NS + int(rng.uniform(0, 20) * 1e9)) for nid in nodes for _ in range(6)]
    incs = run(make_pipeline(nodes), dets)
    assert sum(i.rounds for i in incs) == 0


def _many_shots(nodes, n, rng, t_step_s=3.0, skew=None):
    dets = []
    for k in range(n):
        ang = 2 * np.pi * k / n
        src = np.array([250 * np.cos(ang), 200 * np.sin(ang), 1.5])
        for nid, t in arrivals(nodes, src, T0_NS + int(k * t_step_s * 1e9), rng):
            dets.append((nid, t + (skew or {}).get(nid, 0)))
    return dets


def test_node_registry_flags_a_clock_offset(caplog):
    """One node's clock runs 1.5 ms late: its residuals show a bias from every direction; others stay clean."""
    rng = np.random.default_rng(15)
    nodes = grid()
    dets = _many_shots(nodes, 16, rng, skew={"N05": 1_500_000})
    p = make_pipeline(nodes)
    with caplog.at_level(logging.WARNING):
        run(p, dets)
        flagged = {d.node_id: d for d in p.registry.check_timing(C, p.cfg.location.timing_sigma_s)}
    assert set(flagged) == {"N05"}
    assert "clock" in flagged["N05"].flags
    assert abs(flagged["N05"].bias_s - 1.5e-3) < 0.3e-3


def test_registry_takes_each_shots_final_residuals_once_it_can_no_longer_change():
    """A live stream (ticks, no finish): a shot's residuals reach the node registry once its wait window
    has passed, and they are those of its final solution, one entry per shot and node."""
    rng = np.random.default_rng(17)
    nodes = grid()
    dets = sorted(_many_shots(nodes, 4, rng), key=lambda d: d[1])
    p = make_pipeline(nodes)
    final = {}
    for nid, t in dets:
        for o in p.handle(*detection(nid, t), received_ns=t) + p.tick(t):
            for s in o.incident.shots:
                final[s.shot_id] = s
    last = dets[-1][1]
    for t in (last, last + 30 * 10**9):
        for o in p.tick(t):
            for s in o.incident.shots:
                final[s.shot_id] = s
        if t == last:
            recorded = {sid for info in p.registry.nodes.values() for sid in info.residuals}
            assert len(recorded) < 4  # the last shot can still change
    assert len(final) == 4
    for s in final.values():
        for r in s.residuals:
            if r.used:
                got = p.registry.nodes[r.node_id].residuals[s.shot_id]
                assert got[0] == pytest.approx(r.residual_s, abs=1e-9) and got[3]


def test_node_registry_flags_a_wrong_position():
    """One node's surveyed position is 6 m off: residuals depend on the direction of the source."""
    rng = np.random.default_rng(16)
    nodes = grid()
    true_nodes = dict(nodes)
    true_nodes["N06"] = nodes["N06"] + np.array([6.0, 0.0, 0.0])
    dets = _many_shots(true_nodes, 16, rng)
    p = make_pipeline(nodes)  # the hub believes the old position
    run(p, dets)
    dg = p.registry.diagnose("N06", C, p.cfg.location.timing_sigma_s)
    assert "position" in dg.flags
    assert dg.offset_m is not None and abs(dg.offset_m[0] - 6.0) < 2.0
    healthy = p.registry.diagnose("N01", C, p.cfg.location.timing_sigma_s)
    assert healthy.flags == ()


def test_local_enu_positions_with_a_synthetic_origin():
    """Positions given in local metres (no WGS84) through HubPipeline(frame=...).set_node_enu."""
    rng = np.random.default_rng(17)
    nodes = {k: v + np.array([-11450.0, 3650.0, -90.0]) for k, v in grid().items()}
    src = np.array([-11400.0, 3600.0, -88.5])
    frame = LocalFrame(40.44, -80.0, 0.0)
    cfg = HubConfig(site=SITE, location=LocationSettings(speed_of_sound_mps=C, source_height_m=-88.5))
    p = HubPipeline(cfg, frame=frame)
    for nid, r in nodes.items():
        p.set_node_enu(nid, r)
    outs = []
    for nid, t in sorted(arrivals(nodes, src, T0_NS, rng), key=lambda d: d[1]):
        outs += p.handle(*detection(nid, t), received_ns=t)
    outs += p.finish()
    shot = outs[-1].incident.shots[0]
    e, n, _ = frame.to_enu(shot.position.lat_deg, shot.position.lon_deg, shot.position.alt_m)
    assert np.hypot(e - src[0], n - src[1]) < 0.5


def test_wind_from_config_and_weather_input():
    """Arrivals made with a 10 m/s wind: located within 0.5 m once the hub knows the wind, metres off without."""
    rng = np.random.default_rng(18)
    nodes = grid()
    src = np.array([150.0, 60.0, 1.5])
    wind = np.array([10.0, -4.0])
    ids = list(nodes)
    pos = np.array([nodes[k] for k in ids])
    tt = travel_times_s(pos, src, c_mps=C, wind_enu_mps=wind) + rng.normal(0, 20e-6, len(ids))
    dets = [(nid, T0_NS + int(round(t * 1e9))) for nid, t in zip(ids, tt, strict=True)]
    errs = {}
    for label, cfg_wind, weather in (("none", None, None), ("config", [float(v) for v in wind], None), ("weather", None, wind)):
        cfg = HubConfig(site=SITE, location=LocationSettings(speed_of_sound_mps=C, wind_enu_mps=cfg_wind))
        p = HubPipeline(cfg)
        from test_pipeline import status

        for nid, r in nodes.items():
            p.handle(*status(nid, r), received_ns=0)
        if weather is not None:
            p.set_weather(wind_enu_mps=weather)
        incs = run(p, dets)
        shots = [s for i in incs for s in i.shots]
        errs[label] = min(np.linalg.norm(shot_enu(s) - src[:2]) for s in shots) if shots else np.inf
    assert errs["config"] < 0.5 and errs["weather"] < 0.5
    assert errs["none"] > 1.0


def test_3d_mode_solves_the_source_height_with_vertical_spread():
    """Nodes on masts and towers (heights 2-90 m) and a source on a roof 30 m up: 3-D gets the height."""
    rng = np.random.default_rng(19)
    nodes = grid(4, 3, 250.0, seed=19)
    heights = rng.uniform(2.0, 90.0, len(nodes))
    nodes = {k: np.array([v[0], v[1], h]) for (k, v), h in zip(nodes.items(), heights, strict=True)}
    src = np.array([40.0, -20.0, 30.0])
    cfg = HubConfig(site=SITE, location=LocationSettings(speed_of_sound_mps=C, mode="auto",
                                                         min_vertical_spread_m=15.0))
    p = HubPipeline(cfg)
    from test_pipeline import status

    for nid, r in nodes.items():
        p.handle(*status(nid, r), received_ns=0)
    incs = run(p, arrivals(nodes, src, T0_NS, rng))
    shot = incs[0].shots[0]
    e, n, u = FRAME.to_enu(shot.position.lat_deg, shot.position.lon_deg, shot.position.alt_m)
    assert np.hypot(e - src[0], n - src[1]) < 1.0
    assert abs(u - src[2]) < 3.0


def test_incident_cadence_and_two_shooters_in_one_place():
    """Two shooters 25 m apart (one incident), each semi-automatic at 4 rounds/s, interleaved:
    two shooter groups, per-shooter cadence 0.25 s, and not flagged automatic (8 rounds/s together)."""
    rng = np.random.default_rng(20)
    nodes = grid(5, 4, 250.0, seed=20)
    a, b = np.array([-10.0, 20.0, 1.5]), np.array([15.0, 20.0, 1.5])
    dets = []
    for k in range(6):
        dets += arrivals(nodes, a, T0_NS + int(k * 0.25e9), rng)
        dets += arrivals(nodes, b, T0_NS + int((0.125 + k * 0.25) * 1e9), rng)
    p = make_pipeline(nodes)
    incs = run(p, dets)
    assert len(incs) == 1 and incs[0].rounds == 12
    assert not incs[0].automatic_fire
    # The builder's state for the (closed) incident is gone; rebuild the groups from a fresh run.
    p2 = make_pipeline(nodes)
    for nid, t in sorted(dets, key=lambda d: d[1]):
        p2.handle(*detection(nid, t), received_ns=t)
    p2.tick(T0_NS + int(3e9))
    (inc,) = p2.incidents.open
    groups = inc.shooters()
    assert [len(g) for g in groups] == [6, 6]
    cad = inc.cadence()
    assert all(abs(c.median_interval_s - 0.25) < 0.01 for c in cad)


def test_late_detection_beyond_the_wait_window_is_counted_and_still_joins_its_shot():
    rng = np.random.default_rng(21)
    nodes = grid()
    dets = sorted(arrivals(nodes, (30.0, 40.0, 1.5), T0_NS, rng), key=lambda d: d[1])
    p = make_pipeline(nodes)
    for nid, t in dets[:-1]:
        p.handle(*detection(nid, t), received_ns=t)
    p.tick(T0_NS + int(8e9))
    nid, t = dets[-1]
    p.handle(*detection(nid, t), received_ns=T0_NS + int(8e9))
    assert p.stats.late == 1
    out = p.finish()
    shot = out[-1].incident.shots[0]
    assert shot.n_nodes == len(nodes)


def test_quick_consensus_screens_chance_sets_but_passes_a_real_shot_with_outliers():
    """The cheap pre-fit from a grid point keeps a true set (two echo outliers in it) and drops a chance set."""
    from shotline.core import messages as m
    from shotline.hub.associate import Pick

    rng = np.random.default_rng(21)
    nodes = grid(5, 4, 250.0, seed=21)
    p = make_pipeline(nodes)
    a = p.assoc
    src = np.array([40.0, -60.0, 1.5])
    dets = arrivals(nodes, src, T0_NS, rng)
    a._rel(T0_NS)
    a.watermark_s = 100.0  # every node is past the arrivals: silence counts

    def picks(pairs):
        out = []
        for nid, t in pairs:
            det = m.decode(detection(nid, t)[1], m.Detection)
            out.append(Pick(det, a._rel(t), 0))
        for pk in out:
            a.onsets.add(pk.node_id, pk.t_s)
        return out

    true = picks(dets)
    true[2].t_s += 0.004  # echoes within the grid's tolerance
    true[7].t_s += 0.006
    xy0 = src[:2] + np.array([0.6, -0.5])  # a fine grid point near the source
    t0 = float(np.median([pk.t_s - np.linalg.norm(nodes[pk.node_id] - src) / C for pk in true]))
    assert a._quick_consensus(true, xy0, t0)
    # Picks 0-40 ms off at random: no consensus of min_nodes within the threshold.
    chance = [Pick(pk.det, pk.t_s + rng.uniform(0.0, 0.04), 0) for pk in true[:9]]
    assert not a._quick_consensus(chance, xy0, t0)


def _echo_set_scene(rng, model_err_s=2e-3):
    """4 nodes; a source near one corner; at the two nodes nearest to it also a late echo that, with the two
    far nodes' direct picks, fits a place 10-40 m away exactly (one redundant pick: nothing contradicts it),
    complete before the last direct pick arrives (as at Pittsburgh). The near nodes' direct picks are off
    by ``model_err_s`` (terrain, pick lag), so the echo set fits better."""
    nodes = {f"N{i:02d}": np.array([x, y, 5.0]) for i, (x, y) in enumerate([(0, 0), (400, 0), (0, 400), (420, 380)])}
    ids = list(nodes)
    far, near = ids[:2], ids[2:]  # near: hears echoes; far: direct picks only
    src = np.array([40.0, 330.0, 1.5])
    g = np.arange(-40.0, 40.0, 0.25)
    gx, gy = np.meshgrid(g, g)
    pts = np.stack([src[0] + gx.ravel(), src[1] + gy.ravel(), np.full(gx.size, src[2])], axis=1)

    def tt(p, nid):
        return np.linalg.norm(np.atleast_2d(p) - nodes[nid], axis=1) / C

    mis = np.abs((tt(pts, far[1]) - tt(pts, far[0])) - (tt(src, far[1]) - tt(src, far[0])))
    shift = tt(src, far[0]) - tt(pts, far[0])  # ghost emission time minus the true one
    delay = np.min([shift + tt(pts, n) - tt(src, n) for n in near], axis=0)
    mis[(delay < 0.03) | (np.hypot(gx.ravel(), gy.ravel()) < 10.0)] = np.inf
    k = int(np.argmin(mis))
    ghost = pts[k]
    dets = [(n, t + (int(model_err_s * 1e9) * (-1) ** j if n in near else 0))
            for j, (n, t) in enumerate(arrivals(nodes, src, T0_NS, rng))]
    dets += [(n, T0_NS + int(round(float(shift[k] + tt(ghost, n)[0]) * 1e9))) for n in near]
    return nodes, src, ghost, dets


def test_first_arrival_wins_over_an_echo_set_that_fits_elsewhere():
    """Echoes arrive after the direct sound: of two sets that fit, the one with the earlier picks is the shot."""
    rng = np.random.default_rng(21)
    nodes, src, ghost, dets = _echo_set_scene(rng)
    assert np.linalg.norm(ghost[:2] - src[:2]) >= 10.0
    # The Pittsburgh settings (bench_pittsburgh_audio.HUB_OVERRIDES): ms model errors, no strict small-set test.
    cfg = HubConfig(site=SITE, location=LocationSettings(speed_of_sound_mps=C, source_height_m=1.5, mode="2d",
                                                         timing_sigma_s=1e-3),
                    association=AssociationSettings(match_tolerance_s=0.02, strict_fit_max_dof=0))
    p = HubPipeline(cfg)
    for nid, r in nodes.items():
        p.handle(*status(nid, r), received_ns=T0_NS - int(1e9))
    shots = [s for i in run(p, dets) for s in i.shots]
    assert len(shots) == 1
    assert np.linalg.norm(shot_enu(shots[0]) - src[:2]) < 3.0
    assert shots[0].n_nodes == 4


def test_burst_check_refuses_a_set_that_mixes_rounds_of_one_burst():
    """Rounds from one place line up at every node with one offset; a set mixing two rounds does not."""
    from shotline.core import messages as m
    from shotline.hub.associate import Pick

    rng = np.random.default_rng(5)
    nodes = grid(3, 2, 200.0, seed=5)
    a = make_pipeline(nodes).assoc
    a._rel(T0_NS)
    src = np.array([60.0, 30.0, 1.5])
    rounds_s = [0.0, 0.6, 1.3]  # semi-automatic fire
    by_round = []
    for t0 in rounds_s:
        dets = arrivals(nodes, src, T0_NS + int(t0 * 1e9), rng)
        by_round.append([Pick(m.decode(detection(nid, t)[1], m.Detection), a._rel(t), 0) for nid, t in dets])
    for picks in by_round:
        for pk in picks:
            a._is_tail(pk)  # records (onset, level) per node, as add() does

    one_round = by_round[1]
    assert not a._burst_inconsistent(one_round)
    mixed = by_round[0][:2] + by_round[1][2:]  # round 1 at two nodes, round 2 at the others
    assert a._burst_inconsistent(mixed)

    # A lone shot (no other rounds near) is never refused.
    b = make_pipeline(nodes).assoc
    b._rel(T0_NS)
    for pk in by_round[0]:
        b._is_tail(pk)
    assert not b._burst_inconsistent(by_round[0])


def _quiet_source_scene(rng):
    """64 nodes 250 m apart, every one of which reports now and then (a busy network: silence
    means something), and a firecracker heard only by the nodes within 450 m of it."""
    nodes = grid(8, 8, 250.0, seed=3)
    src = np.array([100.0, -60.0, 0.5])
    near = {k: r for k, r in nodes.items() if np.linalg.norm(r[:2] - src[:2]) < 450.0}
    dets = arrivals(near, src, T0_NS, rng)
    for nid in nodes:  # unrelated impulses before and after, at every node
        dets += [(nid, T0_NS + int(rng.uniform(-8.0, -4.0) * 1e9)), (nid, T0_NS + int(rng.uniform(7.0, 9.0) * 1e9))]
    return nodes, src, near, dets


def test_a_quiet_source_is_not_refuted_by_nodes_beyond_its_reach():
    """Silent nodes count against a hypothesis only out to its farthest supporting node: a firecracker
    heard by the ~10 nodes within 450 m is a shot although ~40 more nodes within max_range_m heard
    nothing (with every in-range node counted, as before, it was refused)."""
    nodes, src, near, dets = _quiet_source_scene(np.random.default_rng(21))
    assert 8 <= len(near) and len(near) < 0.4 * sum(np.linalg.norm(r[:2] - src[:2]) < 1500 for r in nodes.values())
    for min_audible, found in ((400.0, True), (1500.0, False)):
        p = make_pipeline(nodes, association=AssociationSettings(min_audible_range_m=min_audible))
        incs = run(p, dets)
        located = [s for i in incs for s in i.shots if np.linalg.norm(shot_enu(s) - src[:2]) < 2.0]
        assert bool(located) is found, min_audible
        assert sum(i.rounds for i in incs) == len(located)  # the unrelated impulses make no shot


@pytest.mark.parametrize("pending_s", [None, 1.5])
def test_a_small_network_with_deaf_nodes_locates_every_round(pending_s):
    """Four of twelve nodes hear two rounds 30 s apart; the other eight are online but never report
    (deaf, or nothing they heard was loud enough). The first round's set waits for them; it is
    decided when its wait window has passed (at the latest ``pending_s`` after its last pick), with
    its picks: on a network smaller than ``max_range_m`` they used to expire first, and no shot was
    made. Once a wait window has passed since the hub's first pick, nodes that never reported are
    not waited for: the second round is published on the arrival of its fourth pick (before, it
    waited for them like the first, and was lost the same way)."""
    nodes = grid(4, 3, 300.0)
    src = np.array([0.0, 0.0, 1.5])
    hear = sorted(nodes, key=lambda n: np.linalg.norm(nodes[n][:2] - src[:2]))[:4]
    cfg = HubConfig(site=SITE, location=LocationSettings(speed_of_sound_mps=C, source_height_m=1.5),
                    association=AssociationSettings(pending_s=pending_s))
    p = HubPipeline(cfg)
    for nid, r in nodes.items():
        p.handle(*status(nid, r), received_ns=0)
    assert p.assoc.horizon_s() < p.assoc.cfg.association.max_range_m / C  # the premise: a small network
    rng = np.random.default_rng(5)
    published = []
    for k, t_emit in enumerate((0, 30 * 10**9)):
        dets = sorted((d for d in arrivals(nodes, src, T0_NS + t_emit, rng) if d[0] in hear), key=lambda d: d[1])
        for nid, t in dets:
            if p.handle(*detection(nid, t), received_ns=t):
                published.append((k, 0.0))
            p.tick(t)
        for dt in np.arange(0.25, 10.0, 0.25):
            if p.tick(dets[-1][1] + int(dt * 1e9)) and not any(j == k for j, _ in published):
                published.append((k, float(dt)))
    first = dict(reversed(published))
    assert set(first) == {0, 1}
    assert 0 < first[0] <= (p.assoc.horizon_s() + 0.5)
    assert first[1] == 0.0


def test_one_chance_pick_far_out_does_not_make_a_quiet_sources_outer_nodes_silent():
    """A firecracker heard out to 650 m (22 nodes), its detections delivered in one burst 3.5 s late
    (links buffered them through an outage), first of them a pick of a node 849 m away that happens
    to lie 3 ms from the arrival predicted there. Silent nodes count against a hypothesis out to its
    audible radius; with the farthest supporter setting it, that one chance pick made the 14 nodes
    between 650 and 849 m silent (they had reported, and nothing came) and the firecracker was
    refused: no shot. With at least 2 x ``min_nodes`` supporters the radius is the second farthest
    supporter's: one shot, with every node that heard it, within 1 cm."""
    nodes = grid(8, 6, 250.0, seed=2)
    src = np.array([-100.0, 40.0, 1.5])
    dist = {n: np.linalg.norm(r[:2] - src[:2]) for n, r in nodes.items()}
    rng = np.random.default_rng(3)
    t_src = T0_NS + 20 * 10**9
    dets = [(n, t) for n, t in arrivals(nodes, src, t_src, rng) if dist[n] <= 650.0]
    far = min((n for n in nodes if 800 < dist[n] < 900), key=lambda n: abs(dist[n] - 850))
    dets.sort(key=lambda d: d[1])
    dets.insert(0, (far, t_src + int((np.linalg.norm(nodes[far] - src) / C + 0.003) * 1e9)))  # its link first
    assert len(dets) == 23 and sum(1 for n in nodes if 650 < dist[n] <= dist[far]) == 14
    p = make_pipeline(nodes)
    out = []
    # Every node has reported something before (so a quiet one is silent, not unheard).
    for nid, t in sorted(((n, T0_NS + int(rng.uniform(0, 5) * 1e9)) for n in nodes), key=lambda d: d[1]):
        out += p.handle(*detection(nid, t), received_ns=t) + p.tick(t)
    burst = t_src + int(3.5e9)
    for k, (nid, t) in enumerate(dets):
        out += p.handle(*detection(nid, t), received_ns=burst + k * 10**6) + p.tick(burst + k * 10**6)
    for k in range(1, 80):
        out += p.tick(burst + k * 10**8)
    out += p.finish()
    shots = list({s.shot_id: s for o in out for s in o.incident.shots}.values())
    assert len(shots) == 1 and shots[0].n_nodes == 22
    assert np.linalg.norm(shot_enu(shots[0]) - src[:2]) < 0.01
