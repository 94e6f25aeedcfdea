"""Simulator physics and bundle output."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shotline.calibration.bundle import Bundle
from shotline.calibration.simulator import (
    Blocked,
    Scene,
    SceneEnvironment,
    SceneNode,
    Wall,
    Wgs84Position,
    car_backfire,
    door_slam,
    firecracker,
    grid_nodes,
    gunshot,
    gunshot_string,
    hammer,
    hand_clap,
    render_audio,
    render_scene,
)
from shotline.calibration.simulator.absorption import absorption_db_per_m
from shotline.calibration.simulator.noise import noise_pa
from shotline.calibration.simulator.sources import (
    Friedlander,
    GammaTone,
    NWave,
    atoms_spectrum,
    atoms_waveform,
)

T0 = 1_700_000_000_000_000_000
SHOT_NS = T0 + 200_000_000  # 0.2 s into the recording
C20 = 331.3 * math.sqrt(1 + 20 / 273.15)


def _node(node_id, enu, **kw):
    return SceneNode(node_id=node_id, enu_m=tuple(float(v) for v in enu), **kw)


def _scene(nodes, events, **kw):
    kw.setdefault("ground", None)
    kw.setdefault("duration_s", 1.5)
    return Scene(nodes=nodes, events=events, start_time_ns=T0, **kw)


def _onset_index(x: np.ndarray) -> float:
    """Fractional index where |x| first crosses half its peak (linear interpolation)."""
    a = np.abs(x.astype(float))
    thr = 0.5 * a.max()
    i = int(np.argmax(a >= thr))
    return i - 1 + (thr - a[i - 1]) / (a[i] - a[i - 1])


def _direct(manifest, node_id, event_id="g"):
    return next(
        a
        for a in manifest.arrivals
        if a.node_id == node_id and a.event_id == event_id and a.path == "direct"
    )


# ------------------------------------------------------------------ timing
NO_ABSORPTION = SceneEnvironment(absorption=False)


@pytest.mark.parametrize("rate", [48000, 16000, 44100, 96000])
def test_arrival_time_is_distance_over_c_within_a_sample(rate):
    # Distances chosen so the arrivals fall at assorted fractions of a sample. Without
    # absorption the wave front stays a step, so its half-peak crossing marks the arrival.
    dists = [37.3, 101.17, 203.9, 333.333]
    nodes = [_node(f"n{i}", (d, 0.0, 1.5), sample_rate_hz=rate) for i, d in enumerate(dists)]
    scene = _scene(
        nodes,
        [gunshot("g", SHOT_NS, (0.0, 0.0, 1.5))],
        mic_highpass_hz=0.0,
        environment=NO_ABSORPTION,
    )
    manifest, audio = render_audio(scene, seed=0, noise=False)
    for i, d in enumerate(dists):
        expected_ns = (SHOT_NS - T0) + d / C20 * 1e9  # after T0: floats cannot hold UTC ns
        arr = _direct(manifest, f"n{i}")
        assert arr.time_ns - T0 == pytest.approx(expected_ns, abs=1)
        assert arr.sample_index == pytest.approx(expected_ns * 1e-9 * rate, abs=1e-3)
        # The audio itself: the half-peak crossing of the (clean) wave front.
        measured = _onset_index(audio[f"n{i}"])
        assert measured == pytest.approx(arr.sample_index, abs=0.2), (rate, d)


def test_absorption_rise_time_is_causal_and_grows_with_distance():
    """Absorption (minimum phase) delays the half-peak point, never the wave front."""
    dists = [30.0, 100.0, 300.0, 600.0]
    nodes = [_node(f"n{i}", (d, 0.0, 1.5)) for i, d in enumerate(dists)]
    scene = _scene(
        nodes, [gunshot("g", SHOT_NS, (0.0, 0.0, 1.5))], mic_highpass_hz=0.0, duration_s=2.5
    )
    manifest, audio = render_audio(scene, noise=False)
    lags = []
    for i in range(len(dists)):
        x, arr = audio[f"n{i}"], _direct(manifest, f"n{i}")
        i_front = int(arr.sample_index)
        assert np.abs(x[: i_front - 1]).max() < 0.01 * np.abs(x).max()  # nothing before the front
        lags.append((_onset_index(x) - arr.sample_index) / 48000)
    assert np.all(np.diff(lags) > 0) and lags[0] < 25e-6 and lags[-1] < 400e-6, lags


def test_sub_sample_placement_is_smooth():
    """Moving the source by 1/4 sample moves the rendered onset by 1/4 sample."""
    step_m = C20 / 48000 / 4
    nodes = [_node(f"n{k}", (200.0 + k * step_m, 0.0, 1.5)) for k in range(5)]
    scene = _scene(nodes, [gunshot("g", SHOT_NS, (0.0, 0.0, 1.5))], mic_highpass_hz=0.0)
    manifest, audio = render_audio(scene, seed=0, noise=False)  # with absorption: a smooth front
    onsets = np.array([_onset_index(audio[f"n{k}"]) for k in range(5)])
    truth = np.array([_direct(manifest, f"n{k}").sample_index for k in range(5)])
    np.testing.assert_allclose(np.diff(onsets), 0.25, atol=0.05)
    assert np.ptp(onsets - truth) < 0.05  # constant bias only (the absorption rise time)


def test_wind_changes_effective_speed():
    scene = _scene(
        [_node("n", (300.0, 0.0, 1.5))],
        [gunshot("g", SHOT_NS, (0.0, 0.0, 1.5))],
        environment=SceneEnvironment(wind_enu_mps=(10.0, 0.0)),
    )
    manifest, _ = render_audio(scene, noise=False)
    assert _direct(manifest, "n").time_ns - SHOT_NS == pytest.approx(
        300.0 / (C20 + 10.0) * 1e9, abs=1
    )


# ------------------------------------------------------------------ levels
def test_level_decays_six_db_per_doubling():
    dists = [25.0, 50.0, 100.0, 200.0]
    nodes = [_node(f"n{i}", (d, 0.0, 1.5)) for i, d in enumerate(dists)]
    scene = _scene(nodes, [gunshot("g", SHOT_NS, (0.0, 0.0, 1.5))])
    manifest, _ = render_audio(scene, noise=False)
    levels = [
        20 * math.log10(_direct(manifest, f"n{i}").peak_pa / 20e-6) for i in range(len(dists))
    ]
    drops = -np.diff(levels)
    assert np.all(drops > 5.5) and np.all(drops < 7.5), drops  # 6 dB plus a little absorption
    assert np.all(np.diff(drops) >= -0.05)  # absorption makes later doublings cost more
    assert 150 < levels[0] + 20 * math.log10(dists[0]) < 160  # 9 mm: ~156 dB at 1 m


def test_clipping_near_not_far(tmp_path):
    nodes = [
        _node("near", (5.0, 0.0, 1.5), full_scale_spl_db=120.0),
        _node("far", (500.0, 0.0, 1.5), full_scale_spl_db=120.0),
    ]
    scene = _scene(nodes, [gunshot("g", SHOT_NS, (0.0, 0.0, 1.5))], duration_s=2.0)
    b = render_scene(scene, tmp_path, seed=1)
    near, _ = b.read_audio("near")
    far, _ = b.read_audio("far")
    clipped = b.manifest.provenance["clipped_samples"]
    assert clipped["near"] > 0 and clipped["far"] == 0
    assert np.abs(near).max() >= 1.0 - 2.0**-22
    assert np.abs(far).max() < 0.5


def test_background_noise_level():
    x = noise_pa(48000 * 4, 48000, 55.0, None, np.random.default_rng(0))
    assert 20 * math.log10(x.std() / 20e-6) == pytest.approx(55.0, abs=0.5)
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / 48000)
    low = spec[(f > 100) & (f < 200)].mean()
    high = spec[(f > 2000) & (f < 4000)].mean()
    assert 10 * math.log10(low / high) > 15  # traffic rumble dominates


def test_gunshot_audible_at_700_m(tmp_path):
    nodes = [_node("n", (700.0, 0.0, 4.0))]
    scene = _scene(nodes, [gunshot("g", T0 + 1_000_000_000, (0.0, 0.0, 1.5))], duration_s=4.0)
    b = render_scene(scene, tmp_path, seed=2)
    x, fs = b.read_audio("n")
    i = int(_direct(b.manifest, "n").sample_index)
    noise_rms = x[: fs // 2].std()
    assert 20 * math.log10(np.abs(x[i : i + fs // 100]).max() / noise_rms) > 25


# -------------------------------------------------------------- the clock
def test_clock_offset_and_drift_in_stamps(tmp_path):
    offset_ns, drift_ppm = 1_500_000, 20.0
    node = _node("n", (150.0, 0.0, 1.5), clock_offset_ns=offset_ns, clock_drift_ppm=drift_ppm)
    shot_ns = T0 + 3 * 10**9
    scene = _scene(
        [node], [gunshot("g", shot_ns, (0.0, 0.0, 1.5))], duration_s=4.0, environment=NO_ABSORPTION
    )
    b = render_scene(scene, tmp_path, noise=False)
    n = b.node("n")
    assert n.start_time_ns == T0 + offset_ns
    assert (n.clock_offset_ns_true, n.clock_drift_ppm_true) == (offset_ns, drift_ppm)
    arr = _direct(b.manifest, "n")
    assert arr.time_ns - shot_ns == pytest.approx(150.0 / C20 * 1e9, abs=1)
    assert arr.stamped_time_ns - arr.time_ns == pytest.approx(
        offset_ns + drift_ppm * 1e-6 * (arr.time_ns - T0), abs=2
    )
    # A pipeline reading the audio and the manifest reproduces the clock error.
    x, fs = b.read_audio("n")
    stamped = b.stamped_time_ns("n", _onset_index(x))
    assert stamped == pytest.approx(arr.stamped_time_ns, abs=1e9 / fs)
    assert b.true_time_ns("n", arr.stamped_time_ns) == pytest.approx(arr.time_ns, abs=2)


# ------------------------------------------------------------- determinism
def test_deterministic_for_a_seed(tmp_path):
    scene = _scene(
        [_node("a", (50.0, 0.0, 3.0)), _node("b", (0.0, 80.0, 3.0), sample_rate_hz=16000)],
        [
            gunshot("g", SHOT_NS, (0.0, 0.0, 1.5)),
            firecracker("f", SHOT_NS + 500_000_000, (10.0, 10.0), n_bangs=3, fuse_crackle=True),
        ],
        ground=None,
    )
    stamp = "2024-01-01T00:00:00Z"
    paths = [tmp_path / d for d in ("one", "two", "three")]
    for p, seed in zip(paths, (7, 7, 8), strict=True):
        render_scene(scene, p, seed=seed, created_utc=stamp)
    names = sorted(f.name for f in paths[0].iterdir())
    assert names == ["a.flac", "b.flac", "manifest.json"]
    for name in names:
        assert (paths[0] / name).read_bytes() == (paths[1] / name).read_bytes()
    assert (paths[0] / "a.flac").read_bytes() != (paths[2] / "a.flac").read_bytes()


# ---------------------------------------------------------------- geometry
def test_wall_echo_arrives_at_image_source_delay():
    src, rcv = np.array([0.0, 0.0, 1.5]), np.array([60.0, 0.0, 3.0])
    wall = Wall(wall_id="w", start_en_m=(-50.0, 30.0), end_en_m=(150.0, 30.0), height_m=20.0)
    scene = _scene(
        [_node("n", rcv)],
        [gunshot("g", SHOT_NS, src)],
        walls=[wall],
        mic_highpass_hz=0.0,
        reflection_order=1,
    )
    manifest, audio = render_audio(scene, noise=False)
    image = src * [1, -1, 1] + [0, 60.0, 0]  # mirrored in the plane north = 30 m
    echo = next(a for a in manifest.arrivals if a.path == "wall:w")
    assert echo.path_length_m == pytest.approx(np.linalg.norm(rcv - image))
    assert echo.time_ns - SHOT_NS == pytest.approx(np.linalg.norm(rcv - image) / C20 * 1e9, abs=1)
    assert echo.peak_pa == pytest.approx(
        0.85 * _direct(manifest, "n").peak_pa * 60.0 / echo.path_length_m, rel=0.1
    )
    x = audio["n"]
    i = round(echo.sample_index)
    assert np.abs(x[i - 10 : i + 30]).max() > 10 * np.abs(x[i - 200 : i - 50]).max()


def test_ground_reflection_and_second_order():
    src, rcv = np.array([0.0, 0.0, 1.5]), np.array([60.0, 0.0, 3.0])
    wall = Wall(wall_id="w", start_en_m=(-50.0, 30.0), end_en_m=(150.0, 30.0), height_m=20.0)
    scene = Scene(
        nodes=[_node("n", rcv)],
        events=[gunshot("g", SHOT_NS, src)],
        walls=[wall],
        start_time_ns=T0,
        duration_s=1.0,
    )
    manifest, _ = render_audio(scene, noise=False)
    kinds = {a.path: a for a in manifest.arrivals}
    assert {"direct", "ground", "wall:w"} <= set(kinds)
    ground_len = np.linalg.norm(rcv - src * [1, 1, -1])
    assert kinds["ground"].path_length_m == pytest.approx(ground_len)
    both = [a for a in manifest.arrivals if "wall:w" in a.path and "ground" in a.path]
    assert len(both) == 1  # one bounce order is geometrically possible
    assert both[0].path_length_m == pytest.approx(
        np.linalg.norm(rcv - (src * [1, -1, -1] + [0, 60.0, 0]))
    )


def test_blocked_direct_path_is_late_and_weak():
    nodes = [_node("open", (0.0, 200.0, 3.0)), _node("shadow", (200.0, 0.0, 3.0))]
    events = [gunshot("g", SHOT_NS, (0.0, 0.0, 1.5))]
    scene = _scene(nodes, events, blocked=[Blocked(node_id="shadow", extra_path_m=20.0)])
    manifest, _ = render_audio(scene, noise=False)
    open_ = _direct(manifest, "open")
    shadow = [a for a in manifest.arrivals if a.node_id == "shadow"]
    assert [a.path for a in shadow] == ["diffracted"]
    assert shadow[0].time_ns - open_.time_ns == pytest.approx(20.0 / C20 * 1e9, abs=2)
    assert shadow[0].peak_pa < 0.3 * open_.peak_pa


def test_wall_between_blocks_geometrically():
    wall = Wall(wall_id="w", start_en_m=(50.0, -40.0), end_en_m=(50.0, 40.0), height_m=15.0)
    scene = _scene(
        [_node("n", (100.0, 0.0, 3.0))], [gunshot("g", SHOT_NS, (0.0, 0.0, 1.5))], walls=[wall]
    )
    manifest, _ = render_audio(scene, noise=False)
    paths = {a.path: a for a in manifest.arrivals}
    assert "direct" not in paths and "diffracted" in paths
    first = min(manifest.arrivals, key=lambda a: a.time_ns)
    assert first.path == "diffracted"
    direct_ns = np.linalg.norm([100.0, 0.0, 1.5]) / C20 * 1e9
    over_top_ns = (math.hypot(50, 13.5) + math.hypot(50, 12.0)) / C20 * 1e9
    assert first.time_ns - SHOT_NS > direct_ns
    assert first.time_ns - SHOT_NS == pytest.approx(over_top_ns, abs=2)  # over the 15 m top edge


def test_supersonic_shock_precedes_muzzle_blast():
    # Rifle fired east along the line north = 0; the node is 20 m off the trajectory, 400 m down range.
    node = _node("n", (400.0, 20.0, 1.5))
    shot = gunshot("g", SHOT_NS, (0.0, 0.0, 1.5), calibre="7.62nato", aim_azimuth_deg=90.0)
    manifest, audio = render_audio(_scene([node], [shot], mic_highpass_hz=0.0), noise=False)
    shock = next(a for a in manifest.arrivals if a.path == "shock")
    blast = _direct(manifest, "n")
    assert shock.time_ns < blast.time_ns
    mach = 840.0 / C20
    s = 400.0 - 20.0 / math.sqrt(mach**2 - 1)
    expected = s / 840.0 + 20.0 * mach / math.sqrt(mach**2 - 1) / C20
    assert shock.time_ns - SHOT_NS == pytest.approx(expected * 1e9, abs=2)
    x = audio["n"]
    i = round(shock.sample_index)
    seg = x[i - 5 : i + 40]
    # N-wave: positive peak then negative peak ~ 200-400 µs later
    i_pos, i_neg = int(np.argmax(seg)), int(np.argmin(seg))
    assert 150e-6 < (i_neg - i_pos) / 48000 < 450e-6


def test_every_kind_renders_plausibly():
    events = [
        gunshot("g", SHOT_NS, (0.0, 0.0)),
        firecracker("f", SHOT_NS + 200_000_000, (0.0, 0.0), n_bangs=3),
        door_slam("d", SHOT_NS + 400_000_000, (0.0, 0.0)),
        hand_clap("c", SHOT_NS + 600_000_000, (0.0, 0.0)),
        car_backfire("b", SHOT_NS + 800_000_000, (0.0, 0.0)),
        hammer("h", SHOT_NS + 1_000_000_000, (0.0, 0.0)),
    ]
    scene = _scene([_node("n", (10.0, 0.0, 1.5), full_scale_spl_db=160.0)], events, duration_s=2.0)
    manifest, audio = render_audio(scene, noise=False)
    peaks = {a.event_id: 20 * math.log10(a.peak_pa * 10 / 20e-6) for a in manifest.arrivals}
    assert peaks["g"] > peaks["f"] - 10 > peaks["c"] - 10
    assert 100 < peaks["c"] < 125 and 100 < peaks["d"] < 125
    assert np.isfinite(audio["n"]).all()


def test_source_spectra_match_waveforms():
    """The analytic spectra are the Fourier transforms of the waveforms."""
    atoms = [
        Friedlander(100.0, 0.4e-3, 1.2),
        NWave(50.0, 0.3e-3, 2e-3),
        GammaTone(30.0, 2, 1e-3, 800.0, 0.3, 1e-3),
        GammaTone(20.0, 0, 5e-3, 300.0, 0.0),
    ]
    fs, n = (
        2_000_000,
        200_000,
    )  # 0.1 s at a high rate: the sampled FT approximates the continuous one
    t = np.arange(n) / fs
    x = atoms_waveform(atoms, t)
    f = np.fft.rfftfreq(n, 1 / fs)[:2000]
    numeric = np.fft.rfft(x)[:2000] / fs
    analytic = atoms_spectrum(atoms, f)
    assert np.abs(numeric - analytic).max() < 0.02 * np.abs(analytic).max()


def test_absorption_iso_9613_reference_values():
    # ISO 9613-1 Table 1 excerpts (dB/km): 20 °C / 50 % and 10 °C / 70 %
    a = absorption_db_per_m(np.array([1000.0, 4000.0]), 20.0, 50.0) * 1000
    np.testing.assert_allclose(a, [4.66, 29.7], rtol=0.03)
    b = absorption_db_per_m(np.array([1000.0, 4000.0]), 10.0, 70.0) * 1000
    np.testing.assert_allclose(b, [3.66, 33.1], rtol=0.03)


def test_wgs84_scene_and_grid(tmp_path):
    origin = Wgs84Position(41.7658, -72.6734, 20.0)
    nodes = grid_nodes(
        3,
        2,
        400.0,
        clock_offset_std_ns=1000.0,
        clock_drift_std_ppm=1.0,
        seed=4,
        sample_rate_hz=16000,
    )
    assert len(nodes) == 6 and nodes[0].enu_m == (-400.0, -200.0, 4.0)
    shots = gunshot_string("s", SHOT_NS, (10.0, 20.0), n_rounds=3, interval_s=0.4)
    assert [e.time_ns - SHOT_NS for e in shots] == [0, 400_000_000, 800_000_000]
    scene = Scene(nodes=nodes, events=shots, start_time_ns=T0, duration_s=3.0, origin=origin)
    b = render_scene(scene, tmp_path, seed=0)
    loaded = Bundle.load(tmp_path)
    assert loaded.frame is not None
    lat, lon, _ = loaded.node_wgs84()["N01"]
    assert lat < origin.lat_deg and lon < origin.lon_deg
    np.testing.assert_allclose(loaded.node_enu_m()["N01"], [-400.0, -200.0, 4.0], atol=1e-6)
    assert loaded.events[0].properties["calibre"] == "9mm"
    assert len(b.arrivals) == len(loaded.arrivals) > 0
    assert Scene.from_json(scene.to_json()) == scene


@pytest.mark.slow
def test_demo_size_scene_renders(tmp_path):
    """~16 nodes x 40 s with walls, every kind of event (budget: a few seconds)."""
    import time

    nodes = grid_nodes(4, 4, 400.0, jitter_m=30.0, clock_offset_std_ns=2000.0, seed=1)
    t = lambda s: T0 + int(s * 1e9)  # noqa: E731
    events = [
        gunshot("g1", t(5), (100, 50)),
        *gunshot_string("s", t(12), (-300, 200), 3, 0.4, calibre="7.62x39", aim_azimuth_deg=90),
        firecracker("f1", t(20), (250, -300), n_bangs=4),
        door_slam("d1", t(28), (-150, -150)),
    ]
    walls = [Wall(wall_id="a", start_en_m=(50, 80), end_en_m=(90, 80), height_m=15)]
    scene = Scene(nodes=nodes, events=events, start_time_ns=T0, duration_s=40.0, walls=walls)
    start = time.perf_counter()
    b = render_scene(scene, tmp_path, seed=3)
    elapsed = time.perf_counter() - start
    assert len(b.node_ids) == 16 and b.duration_s("N01") == pytest.approx(40.0)
    assert elapsed < 30  # generous: a smoke check against pathological slowness, not a benchmark
