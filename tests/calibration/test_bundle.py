"""RecordingBundle: manifest validation, round trips, positions, audio formats."""

from __future__ import annotations

import json

import msgspec
import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shotline.calibration.bundle import (
    EVENT_KINDS,
    MANIFEST_NAME,
    Bundle,
    BundleError,
    Environment,
    EventEntry,
    Manifest,
    NodeEntry,
    Wgs84Position,
    decode_manifest,
    encode_manifest,
    write_bundle,
)

T0 = 1_700_000_000_000_000_000
ORIGIN = Wgs84Position(41.7658, -72.6734, 20.0)


def _manifest(**kw) -> Manifest:
    nodes = kw.pop("nodes", None) or [
        NodeEntry(
            node_id="A",
            audio="A.flac",
            sample_rate_hz=48000,
            start_time_ns=T0,
            enu_m=[0.0, 0.0, 3.0],
        ),
        NodeEntry(
            node_id="B",
            audio="B.flac",
            sample_rate_hz=16000,
            start_time_ns=T0 + 5,
            enu_m=[100.0, -20.0, 4.0],
            clock_offset_ns_true=5,
            clock_drift_ppm_true=1.5,
            full_scale_spl_db=120.0,
        ),
    ]
    return Manifest(nodes=nodes, **kw)


def _audio(m: Manifest, seconds: float = 0.1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        n.node_id: rng.uniform(-1, 1, int(seconds * n.sample_rate_hz)).astype(np.float32)
        for n in m.nodes
    }


def _raw(manifest: Manifest) -> dict:
    return json.loads(encode_manifest(manifest))


def test_round_trip_audio_and_manifest(tmp_path):
    m = _manifest(
        events=[
            EventEntry(
                event_id="e1",
                kind="gunshot",
                time_ns=T0 + 10**9,
                enu_m=[5.0, 5.0, 1.5],
                properties={"calibre": "9mm"},
            )
        ]
    )
    audio = _audio(m)
    audio["A"][:3] = [1.0, -1.0, 0.5]  # full scale must not wrap round in the 24-bit writer
    b = write_bundle(tmp_path / "b", m, audio)
    assert (tmp_path / "b" / MANIFEST_NAME).exists()
    loaded = Bundle.load(tmp_path / "b")
    assert loaded.manifest == b.manifest
    for n in m.nodes:
        x, fs = loaded.read_audio(n.node_id)
        assert fs == n.sample_rate_hz and x.dtype == np.float32
        np.testing.assert_allclose(x, audio[n.node_id], atol=2.0**-23)
    x, _ = loaded.read_audio("A")
    assert x[0] == pytest.approx(1.0, abs=2.0**-22) and x[1] == -1.0
    assert loaded.event("e1").properties == {"calibre": "9mm"}
    assert loaded.speed_of_sound_mps == pytest.approx(343.2, abs=0.1)
    assert loaded.duration_s("B") == pytest.approx(0.1)


def test_wav_and_multichannel_are_readable(tmp_path):
    m = _manifest(
        nodes=[
            NodeEntry(
                node_id="W",
                audio="w.wav",
                sample_rate_hz=8000,
                start_time_ns=T0,
                enu_m=[0.0, 0.0, 0.0],
                channel=1,
            )
        ]
    )
    stereo = np.stack([np.zeros(800), np.linspace(-0.5, 0.5, 800)], axis=1)
    sf.write(tmp_path / "w.wav", stereo, 8000, subtype="PCM_16")
    (tmp_path / MANIFEST_NAME).write_bytes(encode_manifest(m))
    b = Bundle.load(tmp_path)
    x, fs = b.read_audio("W")
    assert fs == 8000 and x.shape == (800,)
    np.testing.assert_allclose(x, stereo[:, 1], atol=1e-4)
    copy = b.write(tmp_path / "copy", subtype="PCM_16")
    assert copy.read_audio("W")[0].shape == (800,)


def test_purely_local_bundle(tmp_path):
    b = write_bundle(tmp_path, _manifest(), _audio(_manifest()))
    assert b.frame is None
    np.testing.assert_allclose(b.node_enu_m()["B"], [100.0, -20.0, 4.0])
    assert b.node_enu_array().shape == (2, 3)
    with pytest.raises(BundleError, match="local"):
        b.node_wgs84()


def test_wgs84_positions_with_and_without_origin():
    frame_nodes = [
        NodeEntry(
            node_id="A",
            audio="A.flac",
            sample_rate_hz=48000,
            start_time_ns=T0,
            position=Wgs84Position(41.7658, -72.6734, 20.0),
        ),
        NodeEntry(
            node_id="B",
            audio="B.flac",
            sample_rate_hz=48000,
            start_time_ns=T0,
            position=Wgs84Position(41.7658, -72.6700, 20.0),
        ),
    ]
    with_origin = Bundle(_manifest(nodes=frame_nodes, origin=ORIGIN))
    enu = with_origin.node_enu_m()
    np.testing.assert_allclose(enu["A"], 0.0, atol=1e-6)
    assert enu["B"][0] == pytest.approx(282.2, abs=1.0)  # 0.0034 deg of longitude at 41.8 N
    no_origin = Bundle(_manifest(nodes=frame_nodes))
    enu2 = no_origin.node_enu_m()
    assert enu2["B"][0] - enu2["A"][0] == pytest.approx(enu["B"][0], abs=0.01)
    lat, lon, alt = no_origin.node_wgs84()["B"]
    assert (lat, lon) == (41.7658, -72.67)


def test_mixed_positions_need_origin_and_must_agree():
    nodes = [
        NodeEntry(
            node_id="A",
            audio="A.flac",
            sample_rate_hz=48000,
            start_time_ns=T0,
            enu_m=[0.0, 0.0, 0.0],
        ),
        NodeEntry(
            node_id="B",
            audio="B.flac",
            sample_rate_hz=48000,
            start_time_ns=T0,
            position=Wgs84Position(41.7658, -72.6700, 20.0),
        ),
    ]
    raw = _raw(_manifest(nodes=nodes, origin=ORIGIN))
    del raw["origin"]
    with pytest.raises(BundleError, match="origin"):
        decode_manifest(json.dumps(raw))
    raw = _raw(_manifest(nodes=nodes, origin=ORIGIN))
    raw["nodes"][1]["enu_m"] = [0.0, 0.0, 0.0]
    with pytest.raises(BundleError, match=r"nodes\['B'\].*disagree"):
        decode_manifest(json.dumps(raw))


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda r: r["nodes"][0].update(colour="red"),
            r"unknown field `colour` - at `\$.nodes\[0\]`",
        ),
        (lambda r: r["nodes"][1].update(sample_rate_hz="fast"), r"\$.nodes\[1\].sample_rate_hz"),
        (lambda r: r["nodes"][0].pop("start_time_ns"), r"missing required field `start_time_ns`"),
        (lambda r: r["nodes"][0].pop("enu_m"), r"`position` or `enu_m`.*\$.nodes\[0\]"),
        (lambda r: r["nodes"][0].update(enu_m=[1, 2]), r"enu_m.*\$.nodes\[0\]"),
        (lambda r: r["nodes"][1].update(node_id="A"), r"duplicate node_id 'A'"),
        (lambda r: r.update(format="wav-bundle"), r"\$.format"),
        (lambda r: r.update(version=2), r"version 2"),
        (lambda r: r["environment"].update(wind_enu_mps=[1, 2, 3]), r"wind_enu_mps"),
        (
            lambda r: r.update(
                events=[{"event_id": "x", "kind": "meteor", "time_ns": 0, "enu_m": [0, 0, 0]}]
            ),
            r"\$.events\[0\].kind",
        ),
        (lambda r: r["nodes"][0].update(audio="../etc/passwd"), r"audio.*\$.nodes\[0\]"),
        (lambda r: r.update(nodes=[]), r"at least one node"),
    ],
)
def test_malformed_manifest_names_the_key(mutate, expected):
    raw = _raw(_manifest())
    mutate(raw)
    with pytest.raises(BundleError, match=expected):
        decode_manifest(json.dumps(raw))


def test_load_reports_missing_files(tmp_path):
    with pytest.raises(BundleError, match="no manifest"):
        Bundle.load(tmp_path)
    (tmp_path / MANIFEST_NAME).write_bytes(encode_manifest(_manifest()))
    with pytest.raises(BundleError, match=r"nodes\['A'\].audio"):
        Bundle.load(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        Bundle.load(tmp_path)


def test_clock_helpers_invert():
    b = Bundle(_manifest())
    stamp = b.stamped_time_ns("B", 16000 * 10)  # ten nominal seconds in
    assert stamp == T0 + 5 + 10**10
    true = b.true_time_ns("B", stamp)
    # clock error at that moment = offset + drift * elapsed true time
    assert stamp - true == pytest.approx(5 + 1.5e-6 * (true - T0), abs=1)
    assert b.true_time_ns("A", T0) is None


def test_environment_default_speed_of_sound():
    assert Environment(temperature_c=0.0).speed_of_sound_mps == pytest.approx(331.3)


# ------------------------------------------------------------ property test
_finite = st.floats(-1e4, 1e4, allow_nan=False)
_ids = st.text(st.characters(min_codepoint=48, max_codepoint=122), min_size=1, max_size=8)
_json_leaf = (
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10) | _finite
)


@st.composite
def manifests(draw) -> Manifest:
    node_ids = draw(st.lists(_ids, min_size=1, max_size=4, unique=True))
    nodes = [
        NodeEntry(
            node_id=nid,
            audio=f"{i}.flac",
            sample_rate_hz=draw(st.integers(1, 384_000)),
            start_time_ns=draw(st.integers(0, 2**62)),
            enu_m=draw(st.lists(_finite, min_size=3, max_size=3)),
            clock_offset_ns_true=draw(st.none() | st.integers(-(10**12), 10**12)),
            clock_drift_ppm_true=draw(st.none() | st.floats(-100, 100)),
            full_scale_spl_db=draw(st.none() | st.floats(80, 160)),
            channel=draw(st.integers(0, 7)),
        )
        for i, nid in enumerate(node_ids)
    ]
    events = [
        EventEntry(
            event_id=eid,
            kind=draw(st.sampled_from(EVENT_KINDS)),
            time_ns=draw(st.integers(0, 2**62)),
            enu_m=draw(st.lists(_finite, min_size=3, max_size=3)),
            properties=draw(st.dictionaries(_ids, _json_leaf, max_size=3)),
        )
        for eid in draw(st.lists(_ids, max_size=4, unique=True))
    ]
    env = Environment(
        draw(st.floats(-30, 50)),
        draw(st.floats(0, 100)),
        draw(st.none() | st.lists(st.floats(-30, 30), min_size=2, max_size=2)),
    )
    return Manifest(
        nodes=nodes,
        events=events,
        environment=env,
        provenance=draw(st.dictionaries(_ids, _json_leaf, max_size=3)),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(manifests())
def test_manifest_round_trip_property(m):
    back = decode_manifest(encode_manifest(m))
    assert back == m
    assert msgspec.json.encode(back) == msgspec.json.encode(m)


def test_documented_example_manifest_is_valid():
    import pathlib
    import re

    doc = pathlib.Path(__file__).parents[2] / "docs" / "recording-bundle.md"
    example = re.search(r"## Example manifest\s+```json\n(.*?)```", doc.read_text(), re.S)
    assert example is not None
    m = decode_manifest(example.group(1))
    assert [n.node_id for n in m.nodes] == ["N01", "N02"] and m.events[0].kind == "gunshot"
