"""Tests for the wire messages (shotline.core.messages).

Properties checked:

* every valid message survives ``encode`` -> ``decode`` unchanged (and re-encodes
  to the same bytes), with integer nanoseconds kept exact;
* every malformed payload -- unknown, missing or mistyped fields, another schema
  version, invalid enum values, out-of-range values, non-JSON, invalid UTF-8,
  random bytes -- raises :class:`MessageError` and nothing else, and the error
  names the offending field where msgspec reports a path.
"""

from __future__ import annotations

import copy
import json
import math
import typing

import msgspec
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from shotline.core.messages import (
    SCHEMA_VERSION,
    TRUSTED_TIME_QUALITIES,
    ClockState,
    DeliveryDelay,
    Detection,
    Ellipse,
    EventClass,
    HubDetectionCounts,
    HubHealth,
    HubMessageCounts,
    HubNodeCounts,
    HubSinkCounts,
    HubStatus,
    Incident,
    MessageError,
    NodeHealth,
    NodeResidual,
    NodeStatus,
    Position,
    Provenance,
    Shot,
    TimeQuality,
    decode,
    encode,
)

KINDS = (Detection, NodeStatus, NodeHealth, Incident, HubStatus, HubHealth)
TIME_QUALITIES = typing.get_args(TimeQuality)
EVENT_CLASSES = typing.get_args(EventClass)
NS_EXAMPLE = 1_795_303_702_123_456_789  # 2026-11-21, needs all 63 bits of precision

# --------------------------------------------------------------------------- strategies

finite = st.floats(allow_nan=False, allow_infinity=False)
non_negative = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)
text = st.text(max_size=16)
non_empty_text = st.text(min_size=1, max_size=16)
epoch_ns = st.integers(min_value=1, max_value=2**63 - 1)
int64 = st.integers(min_value=0, max_value=2**63 - 1)  # instants: ns since the epoch
score_maps = st.none() | st.dictionaries(st.text(max_size=10), finite, max_size=4)

positions = st.builds(
    Position,
    lat_deg=st.floats(min_value=-90.0, max_value=90.0),
    lon_deg=st.floats(min_value=-180.0, max_value=180.0),
    alt_m=finite,
)
provenances = st.none() | st.builds(
    Provenance,
    version=text,
    config_hash=st.text(alphabet="0123456789abcdef", max_size=16),
    model_sha256=st.none() | st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
)
clocks = st.none() | st.builds(
    ClockState,
    quality=st.sampled_from(TIME_QUALITIES),
    offset_s=st.none() | finite,
    pps_locked=st.booleans(),
)

detections = st.builds(
    Detection,
    detection_id=non_empty_text,
    site=text,
    node_id=text,
    onset_time_ns=epoch_ns,
    onset_sigma_s=non_negative,
    time_quality=st.sampled_from(TIME_QUALITIES),
    peak_dbfs=finite,
    snr_db=finite,
    noise_floor_dbfs=finite,
    clipped=st.booleans(),
    peak_db_spl=st.none() | finite,
    scores=score_maps,
    provenance=provenances,
)
node_statuses = st.builds(
    NodeStatus,
    site=text,
    node_id=text,
    state=st.sampled_from(["online", "offline"]),
    time_ns=int64,
    position=st.none() | positions,
    sample_rate_hz=st.none() | st.integers(min_value=1, max_value=768_000),
    clock=clocks,
    provenance=provenances,
)
node_healths = st.builds(
    NodeHealth,
    site=text,
    node_id=text,
    time_ns=int64,
    noise_floor_dbfs=st.none() | finite,
    clipping_per_min=finite,
    detections_per_min=finite,
    cpu_load_pct=st.none() | finite,
    temperature_c=st.none() | finite,
    disk_free_mb=st.none() | finite,
    clock=clocks,
    outbox_depth=st.integers(min_value=0, max_value=2**31),
    uptime_s=finite,
)
ellipses = st.builds(Ellipse, semi_major_m=finite, semi_minor_m=finite, azimuth_deg=finite)
residuals = st.builds(
    NodeResidual, node_id=text, detection_id=text, residual_s=finite, used=st.booleans()
)
shots = st.builds(
    Shot,
    shot_id=text,
    time_ns=epoch_ns,
    position=positions,
    cep50_m=finite,
    cep95_m=finite,
    ellipse=ellipses,
    speed_of_sound_mps=finite,
    n_nodes=st.integers(min_value=0, max_value=64),
    rms_residual_s=finite,
    residuals=st.lists(residuals, max_size=4),
    scores=score_maps,
)
incidents = st.builds(
    Incident,
    site=text,
    incident_id=text,
    state=st.sampled_from(["new", "updated", "closed"]),
    revision=st.integers(min_value=0, max_value=10_000),
    published_ns=epoch_ns,
    first_shot_ns=epoch_ns,
    last_shot_ns=epoch_ns,
    rounds=st.integers(min_value=0, max_value=10_000),
    position=positions,
    cep95_m=finite,
    event_class=st.sampled_from(EVENT_CLASSES),
    class_scores=score_maps,
    automatic_fire=st.booleans(),
    shots=st.lists(shots, max_size=3),
    provenance=provenances,
)
hub_statuses = st.builds(
    HubStatus,
    site=text,
    state=st.sampled_from(["online", "offline"]),
    time_ns=int64,
    provenance=provenances,
)
counts = st.integers(min_value=0, max_value=2**53)
count_maps = st.dictionaries(st.text(max_size=12), counts, max_size=5)
seconds = st.none() | st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
hub_healths = st.builds(
    HubHealth,
    site=text,
    time_ns=int64,
    started_ns=int64,
    busy_fraction=st.floats(min_value=0.0, max_value=1.0),
    busy_window_s=st.floats(min_value=1e-3, max_value=1e6),
    busy_warn_fraction=st.floats(min_value=0.0, max_value=1.0),
    messages=st.builds(HubMessageCounts, accepted=count_maps, dropped=count_maps),
    detections=st.builds(HubDetectionCounts, late=counts, held_unknown_node=counts, dropped_unknown_node=counts),
    nodes=st.builds(HubNodeCounts, online=counts, offline=counts, no_status=counts,
                    timing_flagged=st.lists(non_empty_text, max_size=3)),
    sinks=st.builds(HubSinkCounts, pending=counts, retrying=counts, failed=counts,
                    retrying_for_s=st.none() | st.floats(min_value=0.0, max_value=1e9)),
    delivery_delay=st.builds(DeliveryDelay, n=counts, p50_s=seconds, p95_s=seconds, max_s=seconds),
    shots=counts,
    incidents_published=counts,
    open_incidents=counts,
    publish_latency_p99_ms=st.none() | st.floats(min_value=0.0, max_value=1e9),
    provenance=provenances,
)
any_message = st.one_of(detections, node_statuses, node_healths, incidents, hub_statuses, hub_healths)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | finite | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

# --------------------------------------------------------------------------- fixed examples

_PROV = Provenance(version="0.1.0", config_hash="0123456789abcdef", model_sha256="ab" * 32)
_CLOCK = ClockState(quality="pps", offset_s=2.5e-6, pps_locked=True)
_POS = Position(lat_deg=40.4406, lon_deg=-79.9959, alt_m=250.0)

EXAMPLES: dict[type, msgspec.Struct] = {
    Detection: Detection(
        detection_id="n1-000000123456",
        site="pgh",
        node_id="n1",
        onset_time_ns=NS_EXAMPLE,
        onset_sigma_s=2.0e-5,
        time_quality="pps",
        peak_dbfs=-3.5,
        snr_db=31.0,
        noise_floor_dbfs=-52.25,
        clipped=False,
        peak_db_spl=128.0,
        scores={"gunshot": 0.93, "firework": 0.05},
        provenance=_PROV,
    ),
    NodeStatus: NodeStatus(
        site="pgh",
        node_id="n1",
        state="online",
        time_ns=NS_EXAMPLE,
        position=_POS,
        sample_rate_hz=48_000,
        clock=_CLOCK,
        provenance=_PROV,
    ),
    NodeHealth: NodeHealth(
        site="pgh",
        node_id="n1",
        time_ns=NS_EXAMPLE,
        noise_floor_dbfs=-60.0,
        clipping_per_min=0.0,
        detections_per_min=1.5,
        cpu_load_pct=12.0,
        temperature_c=41.5,
        disk_free_mb=2048.0,
        clock=_CLOCK,
        outbox_depth=3,
        uptime_s=3600.0,
    ),
    Incident: Incident(
        site="pgh",
        incident_id="inc-1",
        state="updated",
        revision=2,
        published_ns=NS_EXAMPLE + 5_000_000_000,
        first_shot_ns=NS_EXAMPLE,
        last_shot_ns=NS_EXAMPLE + 250_000_000,
        rounds=2,
        position=_POS,
        cep95_m=4.0,
        event_class="gunshot",
        class_scores={"gunshot": 0.9},
        automatic_fire=False,
        shots=[
            Shot(
                shot_id="shot-1",
                time_ns=NS_EXAMPLE,
                position=_POS,
                cep50_m=1.5,
                cep95_m=4.0,
                ellipse=Ellipse(semi_major_m=3.0, semi_minor_m=1.0, azimuth_deg=45.0),
                speed_of_sound_mps=343.2,
                n_nodes=4,
                rms_residual_s=5e-5,
                residuals=[
                    NodeResidual(node_id="n1", detection_id="d1", residual_s=1e-5, used=True),
                    NodeResidual(node_id="n2", detection_id="d2", residual_s=0.02, used=False),
                ],
                scores={"gunshot": 0.9},
            )
        ],
        provenance=_PROV,
    ),
    HubStatus: HubStatus(site="pgh", state="online", time_ns=NS_EXAMPLE, provenance=_PROV),
    HubHealth: HubHealth(
        site="pgh",
        time_ns=NS_EXAMPLE,
        started_ns=NS_EXAMPLE - 3_600_000_000_000,
        busy_fraction=0.031,
        busy_window_s=60.0,
        busy_warn_fraction=0.8,
        messages=HubMessageCounts(accepted={"status": 30, "detection": 6413}, dropped={"malformed": 2}),
        detections=HubDetectionCounts(late=4, held_unknown_node=0, dropped_unknown_node=1),
        nodes=HubNodeCounts(online=28, offline=1, no_status=1, timing_flagged=["n7"]),
        sinks=HubSinkCounts(pending=3, retrying=1, retrying_for_s=42.5, failed=0),
        delivery_delay=DeliveryDelay(n=4096, p50_s=0.12, p95_s=0.24, max_s=0.61),
        shots=183,
        incidents_published=412,
        open_incidents=2,
        publish_latency_p99_ms=8.9,
        provenance=_PROV,
    ),
}


def _example_dict(kind: type) -> dict:
    return msgspec.to_builtins(EXAMPLES[kind])


def _payload(obj: object) -> bytes:
    return json.dumps(obj).encode()


def _set_at(data: dict, path: list, value: object) -> dict:
    """``data`` with ``value`` at ``path`` (keys and list indices, outermost first)."""
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


def _decode_error(payload: bytes | str, kind: type) -> str:
    """Decode, expect a MessageError (and nothing else), return its text."""
    with pytest.raises(MessageError) as info:
        decode(payload, kind)
    assert type(info.value) is MessageError
    assert info.value.__class__.__name__ in repr(info.value)
    return str(info.value)


def _required(kind: type) -> list[str]:
    return [
        f.name
        for f in msgspec.structs.fields(kind)
        if f.default is msgspec.NODEFAULT and f.default_factory is msgspec.NODEFAULT
    ]


def _field_cases() -> list[tuple[type, str]]:
    return [(k, f.name) for k in KINDS for f in msgspec.structs.fields(k)]


# --------------------------------------------------------------------------- module constants


def test_schema_strings_are_versioned_and_distinct():
    # The schema is a msgspec tag: required on decode, written first on encode.
    configs = [k.__struct_config__ for k in KINDS]
    assert all(c.tag_field == "schema" for c in configs)
    values = [c.tag for c in configs]
    assert len(set(values)) == len(KINDS)
    for value in values:
        assert value.startswith("shotline.")
        assert value.endswith(f"/{SCHEMA_VERSION}")


def test_time_qualities_and_trusted_subset():
    assert set(TIME_QUALITIES) == {"pps", "ntp", "unsynced", "replay"}
    assert TRUSTED_TIME_QUALITIES <= set(TIME_QUALITIES)
    # ntp is milliseconds at best and unsynced is free-running: never in a TDOA solution
    assert "ntp" not in TRUSTED_TIME_QUALITIES
    assert "unsynced" not in TRUSTED_TIME_QUALITIES
    assert "pps" in TRUSTED_TIME_QUALITIES


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_fixed_examples_round_trip(kind):
    msg = EXAMPLES[kind]
    payload = encode(msg)
    assert isinstance(payload, bytes)
    back = decode(payload, kind)
    assert type(back) is kind
    assert back == msg
    assert encode(back) == payload
    # the same payload given as str decodes the same
    assert decode(payload.decode(), kind) == msg
    assert json.loads(payload)["schema"] == msg.schema


def _check_round_trip(msg) -> None:
    kind = type(msg)
    payload = encode(msg)
    back = decode(payload, kind)
    assert back == msg
    assert encode(back) == payload


@settings(max_examples=60, deadline=None)
@given(detections)
def test_detection_round_trip(msg):
    _check_round_trip(msg)
    back = decode(encode(msg), Detection)
    assert type(back.onset_time_ns) is int
    assert back.onset_time_ns == msg.onset_time_ns


@settings(max_examples=60, deadline=None)
@given(node_statuses)
def test_node_status_round_trip(msg):
    _check_round_trip(msg)


@settings(max_examples=60, deadline=None)
@given(node_healths)
def test_node_health_round_trip(msg):
    _check_round_trip(msg)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(incidents)
def test_incident_round_trip(msg):
    _check_round_trip(msg)
    back = decode(encode(msg), Incident)
    assert [s.time_ns for s in back.shots] == [s.time_ns for s in msg.shots]
    assert all(type(s.time_ns) is int for s in back.shots)


@settings(max_examples=60, deadline=None)
@given(hub_statuses)
def test_hub_status_round_trip(msg):
    _check_round_trip(msg)


@settings(max_examples=60, deadline=None)
@given(hub_healths)
def test_hub_health_round_trip(msg):
    _check_round_trip(msg)
    back = decode(encode(msg), HubHealth)
    assert back.messages.dropped == msg.messages.dropped
    assert all(type(v) is int for v in back.messages.accepted.values())


def test_hub_health_needs_only_site_and_time():
    h = decode(b'{"schema": "shotline.hub_health/1", "site": "pgh", "time_ns": 5}', HubHealth)
    assert h.messages == HubMessageCounts() and h.delivery_delay.p95_s is None
    assert h.publish_latency_p99_ms is None and h.busy_fraction == 0.0


@pytest.mark.parametrize(
    "path, value, named",
    [
        (["busy_fraction"], 1.5, "busy_fraction"),
        (["busy_fraction"], -0.01, "busy_fraction"),
        (["busy_window_s"], 0.0, "busy_window_s"),
        (["shots"], -1, "shots"),
        (["open_incidents"], -3, "open_incidents"),
        (["messages", "dropped", "malformed"], -2, "dropped counts"),
        (["messages", "accepted", "detection"], 1.5, "`$.messages.accepted[...]`"),
        (["detections", "late"], -1, "detection counts"),
        (["nodes", "offline"], -1, "node counts"),
        (["sinks", "failed"], -1, "sink counts"),
        (["sinks", "retrying_for_s"], "1m", "`$.sinks.retrying_for_s`"),
        (["nodes", "timing_flagged"], "n7", "`$.nodes.timing_flagged`"),
        (["delivery_delay", "n"], -1, "n must be"),
        (["delivery_delay", "p95_s"], "0.2", "`$.delivery_delay.p95_s`"),
    ],
)
def test_hub_health_out_of_range_values_are_rejected(path, value, named):
    data = _set_at(_example_dict(HubHealth), path, value)
    assert named in _decode_error(_payload(data), HubHealth)


def test_onset_time_ns_stays_an_exact_integer():
    msg = EXAMPLES[Detection]
    payload = encode(msg)
    # written as an integer literal, not a float (which would round to ...456768)
    assert b'"onset_time_ns":1795303702123456789' in payload
    back = decode(payload, Detection)
    assert back.onset_time_ns == NS_EXAMPLE
    assert type(back.onset_time_ns) is int
    assert float(NS_EXAMPLE) != NS_EXAMPLE  # the value is not representable as a double


@settings(max_examples=50, deadline=None)
@given(ns=epoch_ns)
def test_every_positive_int64_onset_is_exact(ns):
    msg = msgspec.structs.replace(EXAMPLES[Detection], onset_time_ns=ns)
    assert decode(encode(msg), Detection).onset_time_ns == ns


@settings(max_examples=50, deadline=None)
@given(any_message, st.sampled_from(KINDS))
def test_payload_of_one_kind_is_rejected_as_another(msg, kind):
    assume(type(msg) is not kind)
    message = _decode_error(encode(msg), kind)
    assert kind.__name__ in message


def test_defaults_fill_in_optional_fields():
    minimal = {
        "schema": "shotline.detection/1",
        "detection_id": "d",
        "site": "s",
        "node_id": "n",
        "onset_time_ns": 1,
        "onset_sigma_s": 0,
        "time_quality": "replay",
        "peak_dbfs": -1,
        "snr_db": 20,
        "noise_floor_dbfs": -40,
    }
    d = decode(_payload(minimal), Detection)
    assert d.clipped is False and d.scores is None and d.provenance is None
    assert d.schema == "shotline.detection/1"
    # ints are accepted for float fields and come back as floats
    assert type(d.onset_sigma_s) is float and type(d.peak_dbfs) is float


# --------------------------------------------------------------------------- structural rejection


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_unknown_top_level_field_is_rejected_and_named(kind):
    data = _example_dict(kind)
    data["surprise_field"] = 1
    message = _decode_error(_payload(data), kind)
    assert "unknown field" in message
    assert "surprise_field" in message


@pytest.mark.parametrize(
    "kind, path",
    [
        (Detection, ["provenance"]),
        (NodeStatus, ["position"]),
        (NodeStatus, ["clock"]),
        (NodeHealth, ["clock"]),
        (Incident, ["shots", 0]),
        (Incident, ["shots", 0, "ellipse"]),
        (Incident, ["shots", 0, "residuals", 1]),
        (HubStatus, ["provenance"]),
        (HubHealth, ["messages"]),
        (HubHealth, ["detections"]),
        (HubHealth, ["delivery_delay"]),
        (HubHealth, ["nodes"]),
        (HubHealth, ["sinks"]),
        (HubHealth, ["provenance"]),
    ],
)
def test_unknown_nested_field_is_rejected_with_its_path(kind, path):
    data = _set_at(_example_dict(kind), [*path, "extra_key"], True)
    message = _decode_error(_payload(data), kind)
    assert "extra_key" in message
    json_path = "$" + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path)
    assert f"`{json_path}`" in message


@pytest.mark.parametrize(
    "kind, name",
    [(k, n) for k in KINDS for n in _required(k)],
    ids=lambda v: v.__name__ if isinstance(v, type) else v,
)
def test_missing_required_field_is_rejected_and_named(kind, name):
    data = _example_dict(kind)
    del data[name]
    message = _decode_error(_payload(data), kind)
    assert "missing required field" in message
    assert f"`{name}`" in message


def test_required_fields_are_the_documented_ones():
    assert set(_required(Detection)) == {
        "detection_id",
        "site",
        "node_id",
        "onset_time_ns",
        "onset_sigma_s",
        "time_quality",
        "peak_dbfs",
        "snr_db",
        "noise_floor_dbfs",
    }
    assert set(_required(HubStatus)) == {"site", "state"}
    assert set(_required(HubHealth)) == {"site", "time_ns"}


def _wrong_value_for(kind: type, name: str) -> object:
    field = next(f for f in msgspec.structs.fields(kind) if f.name == name)
    # a string is wrong for every non-str field (for Literal fields it is an invalid
    # enum value); an integer is wrong for a plain str field
    return 12345 if field.type is str else "wrong-type"


@pytest.mark.parametrize(
    "kind, name", _field_cases(), ids=lambda v: v.__name__ if isinstance(v, type) else v
)
def test_wrong_type_names_the_field(kind, name):
    data = _example_dict(kind)
    data[name] = _wrong_value_for(kind, name)
    message = _decode_error(_payload(data), kind)
    assert f"`$.{name}`" in message


@pytest.mark.parametrize(
    "kind, path, value, expected",
    [
        (Detection, ["onset_time_ns"], 1.795e18, "Expected `int`, got `float`"),
        (Detection, ["onset_time_ns"], "1795303702123456789", "Expected `int`, got `str`"),
        (Detection, ["onset_time_ns"], 1000.0, "Expected `int`, got `float`"),
        (Detection, ["clipped"], 1, "Expected `bool`, got `int`"),
        (Detection, ["onset_sigma_s"], None, "Expected `float`, got `null`"),
        (Detection, ["scores", "gunshot"], "high", "`$.scores[...]`"),
        (Detection, ["provenance", "version"], 1, "`$.provenance.version`"),
        (NodeStatus, ["position", "lat_deg"], "40.4", "`$.position.lat_deg`"),
        (NodeStatus, ["sample_rate_hz"], 48000.0, "`$.sample_rate_hz`"),
        (NodeStatus, ["clock", "pps_locked"], "yes", "`$.clock.pps_locked`"),
        (NodeHealth, ["outbox_depth"], 2.5, "`$.outbox_depth`"),
        (Incident, ["shots", 0, "residuals", 1, "used"], 0, "`$.shots[0].residuals[1].used`"),
        (Incident, ["shots", 0, "ellipse", "azimuth_deg"], [], "`$.shots[0].ellipse.azimuth_deg`"),
        (Incident, ["shots"], {}, "`$.shots`"),
        (Incident, ["rounds"], True, "`$.rounds`"),
    ],
)
def test_wrong_type_deep_paths(kind, path, value, expected):
    data = _set_at(_example_dict(kind), path, value)
    assert expected in _decode_error(_payload(data), kind)


@pytest.mark.parametrize(
    "kind, wrong",
    [
        (Detection, "shotline.detection/2"),
        (Detection, "shotline.detection/0"),
        (Detection, "shotline.node_status/1"),
        (Detection, "SHOTLINE.DETECTION/1"),
        (NodeStatus, "shotline.node_status/2"),
        (NodeHealth, "shotline.node_health/2"),
        (Incident, "shotline.incident/2"),
        (HubStatus, "shotline.hub_status/2"),
        (HubHealth, "shotline.hub_health/2"),
        (HubHealth, "shotline.hub_status/1"),
    ],
)
def test_other_schema_version_is_rejected(kind, wrong):
    data = _example_dict(kind)
    data["schema"] = wrong
    message = _decode_error(_payload(data), kind)
    assert "`$.schema`" in message
    assert wrong in message


@pytest.mark.parametrize(
    "kind, path, value",
    [
        (Detection, ["time_quality"], "gps"),
        (Detection, ["time_quality"], "PPS"),
        (Detection, ["time_quality"], ""),
        (NodeStatus, ["state"], "rebooting"),
        (NodeStatus, ["clock", "quality"], "chrony"),
        (NodeHealth, ["clock", "quality"], "gps"),
        (Incident, ["state"], "open"),
        (Incident, ["event_class"], "explosion"),
        (HubStatus, ["state"], "Online"),
    ],
)
def test_invalid_enum_value_is_rejected_and_named(kind, path, value):
    data = _set_at(_example_dict(kind), path, value)
    message = _decode_error(_payload(data), kind)
    assert "Invalid enum value" in message
    assert "`$." + ".".join(path) + "`" in message


# --------------------------------------------------------------------------- value rejection

out_of_range_lat = st.floats(
    min_value=90.0, exclude_min=True, allow_nan=False, allow_infinity=False
)
out_of_range_lon = st.floats(
    min_value=180.0, exclude_min=True, allow_nan=False, allow_infinity=False
)


@settings(max_examples=30, deadline=None)
@given(lat=out_of_range_lat, sign=st.sampled_from([1.0, -1.0]))
def test_latitude_out_of_range_is_rejected(lat, sign):
    for kind, path in (
        (NodeStatus, ["position"]),
        (Incident, ["position"]),
        (Incident, ["shots", 0, "position"]),
    ):
        data = _example_dict(kind)
        target = data
        for key in path:
            target = target[key]
        target["lat_deg"] = sign * lat
        message = _decode_error(_payload(data), kind)
        assert "lat_deg" in message


@settings(max_examples=30, deadline=None)
@given(lon=out_of_range_lon, sign=st.sampled_from([1.0, -1.0]))
def test_longitude_out_of_range_is_rejected(lon, sign):
    data = _example_dict(NodeStatus)
    data["position"]["lon_deg"] = sign * lon
    message = _decode_error(_payload(data), NodeStatus)
    assert "lon_deg" in message
    assert "`$.position`" in message


@pytest.mark.parametrize("lat, lon", [(90.0, 180.0), (-90.0, -180.0), (0.0, 0.0)])
def test_position_bounds_are_inclusive(lat, lon):
    data = _example_dict(NodeStatus)
    data["position"].update(lat_deg=lat, lon_deg=lon)
    pos = decode(_payload(data), NodeStatus).position
    assert (pos.lat_deg, pos.lon_deg) == (lat, lon)


@settings(max_examples=30, deadline=None)
@given(ns=st.integers(min_value=-(2**63), max_value=0))
def test_non_positive_onset_time_is_rejected(ns):
    data = _example_dict(Detection)
    data["onset_time_ns"] = ns
    assert "onset_time_ns" in _decode_error(_payload(data), Detection)


@settings(max_examples=30, deadline=None)
@given(sigma=st.floats(max_value=0.0, exclude_max=True, allow_nan=False, allow_infinity=False))
def test_negative_onset_sigma_is_rejected(sigma):
    data = _example_dict(Detection)
    data["onset_sigma_s"] = sigma
    assert "onset_sigma_s" in _decode_error(_payload(data), Detection)


def test_zero_onset_sigma_is_accepted():
    data = _example_dict(Detection)
    data["onset_sigma_s"] = 0.0
    assert decode(_payload(data), Detection).onset_sigma_s == 0.0


def test_empty_detection_id_is_rejected():
    data = _example_dict(Detection)
    data["detection_id"] = ""
    assert "detection_id" in _decode_error(_payload(data), Detection)


def test_out_of_range_number_is_rejected():
    data = _example_dict(Detection)
    data["onset_sigma_s"] = "__placeholder__"
    payload = _payload(data).replace(b'"__placeholder__"', b"1e999")
    assert "`$.onset_sigma_s`" in _decode_error(payload, Detection)


def test_invalid_values_are_also_rejected_at_construction():
    # __post_init__ guards the producer side too, not only decode
    with pytest.raises(ValueError):
        Position(lat_deg=91.0, lon_deg=0.0)
    with pytest.raises(ValueError):
        msgspec.structs.replace(EXAMPLES[Detection], onset_time_ns=0)
    with pytest.raises(ValueError):
        msgspec.structs.replace(EXAMPLES[Detection], onset_sigma_s=-1e-9)
    with pytest.raises(ValueError):
        msgspec.structs.replace(EXAMPLES[Detection], onset_sigma_s=math.nan)


def _first_non_finite(msg) -> str | None:
    """The finite rule spelled out: the error for the first offending field (None if none)."""
    for name in msg.__struct_fields__:
        v = getattr(msg, name)
        if isinstance(v, float) and not math.isfinite(v):
            return f"{name} must be a finite number, got {v}"
        if isinstance(v, int) and not isinstance(v, bool) and name.endswith("_ns") and not 0 <= v < 2**63:
            return f"{name} must fit a signed 64-bit integer of nanoseconds"
    return None


_FINITE_EXAMPLES = [
    *(EXAMPLES[k] for k in KINDS),
    EXAMPLES[Incident].shots[0],
    EXAMPLES[Incident].position,
    NodeResidual(node_id="n", detection_id="d", residual_s=0.0, used=True),
    Ellipse(semi_major_m=1.0, semi_minor_m=0.5, azimuth_deg=10.0),
]


@pytest.mark.parametrize("example", _FINITE_EXAMPLES, ids=lambda e: type(e).__name__)
def test_finite_check_covers_every_field_whatever_its_declared_type(example):
    """Each class compiles its own finite check at first use: it refuses what the rule refuses, with
    the same words (msgspec does not type-check at construction, so a NaN in an int or bool field,
    or a float in a ``*_ns`` field, is checked too)."""
    for name in example.__struct_fields__:
        for bad in (math.nan, math.inf, -math.inf, 1e308, 2**63, 2**63 - 1, -1, 0, True):
            raw = msgspec.structs.replace(example)
            setattr(raw, name, bad)  # no __post_init__: what the rule says of it
            want = _first_non_finite(raw)
            try:
                msgspec.structs.replace(example, **{name: bad})
                got = None
            except ValueError as exc:
                got = str(exc)
            if want is None and got is not None:
                continue  # another check of the class refused it (a range, a sign)
            assert got == want, (type(example).__name__, name, bad)


def test_finite_check_of_a_subclass_sees_its_own_fields():
    NodeResidual(node_id="n", detection_id="d", residual_s=0.0, used=True)  # the parent's check first

    class Weighted(NodeResidual, kw_only=True):
        weight: float = 1.0

    with pytest.raises(ValueError, match="weight must be a finite number, got nan"):
        Weighted(node_id="n", detection_id="d", residual_s=0.0, used=True, weight=math.nan)
    with pytest.raises(ValueError, match="residual_s must be a finite number, got inf"):
        Weighted(node_id="n", detection_id="d", residual_s=math.inf, used=True)
    NodeResidual(node_id="n", detection_id="d", residual_s=0.0, used=True)


# --------------------------------------------------------------------------- garbage in


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"   ",
        b"not json",
        b"{",
        b'{"site": "s",',
        b"{'site': 's'}",
        b'{"site": "s"} trailing',
        b"[]",
        b"[1, 2, 3]",
        b"42",
        b"-1.5",
        b'"a string"',
        b"null",
        b"true",
        b"NaN",
        b"\x00\x01\x02",
        b"\xff\xfe{}",
        b'{"site": "\xff\xfe"}',
        b'{"site": "\xc3"}',
        b'{"\xed\xa0\x80": 1}',
        b"[" * 10_000,
        b'{"a":' * 10_000,
        "",
        "[]",
        "{",
    ],
)
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_garbage_payloads_raise_message_error(kind, payload):
    message = _decode_error(payload, kind)
    assert message.startswith(f"invalid {kind.__name__}: ")


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_invalid_utf8_is_reported_as_such(kind):
    data = encode(EXAMPLES[kind]).replace(b'"pgh"', b'"p\xffh"', 1)
    assert b"\xff" in data
    assert "UTF-8" in _decode_error(data, kind)


def _decode_or_message_error(payload: bytes | str, kind: type) -> None:
    try:
        result = decode(payload, kind)
    except MessageError:
        return
    assert type(result) is kind


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(KINDS))
def test_random_bytes_never_raise_anything_but_message_error(payload, kind):
    _decode_or_message_error(payload, kind)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=120), st.sampled_from(KINDS))
def test_random_bytes_inside_an_object_never_raise_anything_but_message_error(tail, kind):
    _decode_or_message_error(b'{"site":"' + tail, kind)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=100), st.sampled_from(KINDS))
def test_random_text_never_raises_anything_but_message_error(payload, kind):
    _decode_or_message_error(payload, kind)


@settings(max_examples=150, deadline=None)
@given(json_values, st.sampled_from(KINDS))
def test_random_json_never_raises_anything_but_message_error(value, kind):
    _decode_or_message_error(_payload(value), kind)


@settings(max_examples=120, deadline=None)
@given(st.sampled_from(KINDS), st.data())
def test_mutated_valid_payload_decodes_or_raises_message_error(kind, data):
    """Replace or add one field (possibly nested) with an arbitrary JSON value."""
    doc = copy.deepcopy(_example_dict(kind))
    target = doc
    # walk a random distance into nested objects / lists
    for _ in range(data.draw(st.integers(0, 3))):
        children = [
            (k, v)
            for k, v in (target.items() if isinstance(target, dict) else enumerate(target))
            if isinstance(v, dict | list) and v
        ]
        if not children:
            break
        _, target = data.draw(st.sampled_from(children))
    if isinstance(target, dict):
        key = data.draw(st.sampled_from(sorted(target)) | st.text(max_size=8))
    else:
        key = data.draw(st.integers(0, len(target) - 1))
    target[key] = data.draw(json_values)
    _decode_or_message_error(_payload(doc), kind)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_receiver_can_survive_a_stream_of_bad_payloads(kind):
    """A receiver that counts bad messages with ``except MessageError`` never crashes."""
    good = encode(EXAMPLES[kind])
    stream = [good, b"{}", b"\xff", good[:-1], good.replace(b"{", b"[", 1), good]
    decoded, bad = [], 0
    for payload in stream:
        try:
            decoded.append(decode(payload, kind))
        except MessageError:
            bad += 1
    assert bad == 4
    assert decoded == [EXAMPLES[kind], EXAMPLES[kind]]


# --------------------------------------------------------------------------- known bugs


def test_str_payload_with_lone_surrogate_raises_message_error():
    _decode_error('{"site": "\ud800"}', HubStatus)


def test_constructible_detection_with_infinite_level_round_trips_or_is_refused():
    try:
        msg = msgspec.structs.replace(
            EXAMPLES[Detection], noise_floor_dbfs=-math.inf, snr_db=math.inf
        )
    except ValueError:
        return  # refusing it at the producer is a fine fix
    decode(encode(msg), Detection)


@pytest.mark.parametrize("kind", KINDS)
def test_payload_without_schema_is_rejected(kind):
    """The schema key is required: a payload that does not say what it is gets refused."""
    data = _example_dict(kind)
    assert data["schema"] == EXAMPLES[kind].schema
    del data["schema"]
    assert "schema" in _decode_error(_payload(data), kind)
