"""Tests for TOML configuration loading, validation and hashing (shotline.core.config),
and for the two role configurations built on it (sensor and hub)."""

from __future__ import annotations

import hashlib
import os
import re
import textwrap

import msgspec
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from shotline.core.config import (
    BrokerSettings,
    ConfigError,
    config_hash,
    convert_config,
    load_config,
    parse_config,
)
from shotline.hub.config import HubConfig
from shotline.sensor.config import SensorConfig
from shotline.sensor.trigger import TriggerConfig


class Limits(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    max_rate_hz: float = 10.0
    tags: list[str] = msgspec.field(default_factory=list)


class AppConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    threshold_db: float = 6.0
    retries: int = 3
    broker: BrokerSettings = msgspec.field(default_factory=BrokerSettings)
    limits: Limits = msgspec.field(default_factory=Limits)


BROKER_FIELDS = set(BrokerSettings.__struct_fields__)
TOML_BARE_KEY = st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True)


def _error(text: str, kind: type = AppConfig, source: str = "site.toml") -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, kind, source=source)
    assert type(info.value) is ConfigError
    message = str(info.value)
    assert message.startswith(f"{source}: ")
    return message


# --------------------------------------------------------------------------- valid input


def test_minimal_and_full_configs_parse():
    cfg = parse_config('name = "x"', AppConfig)
    assert cfg == AppConfig(name="x")
    assert cfg.broker == BrokerSettings()
    assert (cfg.broker.host, cfg.broker.port, cfg.broker.protocol) == ("127.0.0.1", 1883, "3.1.1")

    full = parse_config(
        textwrap.dedent(
            """
            name = "full"
            threshold_db = 7.5
            retries = 0

            [broker]
            host = "mqtt.example.org"
            port = 8883
            username = "node-1"
            password = "s3cret"
            keepalive_s = 60
            tls = true
            ca_file = "/etc/ssl/ca.pem"
            protocol = "5"

            [limits]
            max_rate_hz = 2
            tags = ["a", "b"]
            """
        ),
        AppConfig,
    )
    assert full.broker == BrokerSettings(
        host="mqtt.example.org",
        port=8883,
        username="node-1",
        password="s3cret",
        keepalive_s=60,
        tls=True,
        ca_file="/etc/ssl/ca.pem",
        protocol="5",
    )
    assert full.limits == Limits(max_rate_hz=2.0, tags=["a", "b"])


def test_toml_integer_is_accepted_for_a_float_field():
    cfg = parse_config('name = "x"\nthreshold_db = 6', AppConfig)
    assert cfg.threshold_db == 6.0
    assert type(cfg.threshold_db) is float


def test_convert_config_validates_a_mapping():
    assert convert_config({"name": "x", "broker": {"port": 1884}}, AppConfig).broker.port == 1884
    with pytest.raises(ConfigError, match=r"\$\.broker\.port"):
        convert_config({"name": "x", "broker": {"port": "1884"}}, AppConfig, source="env")


def test_load_config_reads_a_file(tmp_path):
    path = tmp_path / "hub.toml"
    path.write_text('name = "from-file"\n[broker]\nport = 1884\n', encoding="utf-8")
    for p in (path, str(path)):
        cfg = load_config(p, AppConfig)
        assert cfg.name == "from-file" and cfg.broker.port == 1884


def test_load_config_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\n[broker]\nport = "1883"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, AppConfig)
    assert str(path) in str(info.value)
    assert "$.broker.port" in str(info.value)


# --------------------------------------------------------------------------- type errors


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("port", '"1883"', "`int`, got `str`"),
        ("port", "1883.0", "`int`, got `float`"),
        ("port", "true", "`int`, got `bool`"),
        ("port", "[1883]", "`int`, got `array`"),
        ("port", "{ n = 1 }", "`int`, got `object`"),
        ("host", "127", "`str`, got `int`"),
        ("keepalive_s", '"30"', "`int`, got `str`"),
        ("keepalive_s", "30.5", "`int`, got `float`"),
        ("tls", '"yes"', "`bool`, got `str`"),
        ("tls", "1", "`bool`, got `int`"),
        ("username", "42", "`str | null`, got `int`"),
        ("ca_file", "false", "`str | null`, got `bool`"),
        ("host", "2024-01-01", "`str`, got `date`"),
    ],
)
def test_broker_type_errors_name_key_path_and_expected_type(key, value, expected):
    message = _error(f'name = "x"\n[broker]\n{key} = {value}\n')
    assert f"`$.broker.{key}`" in message
    assert expected in message


@pytest.mark.parametrize(
    "text, path, expected",
    [
        ("name = 1", "$.name", "`str`"),
        ('name = "x"\nthreshold_db = "loud"', "$.threshold_db", "`float`"),
        ('name = "x"\nretries = 3.0', "$.retries", "`int`"),
        ('name = "x"\nbroker = 5', "$.broker", "`object`"),
        ('name = "x"\nbroker = "mqtt://x"', "$.broker", "`object`"),
        ('name = "x"\n[limits]\ntags = "a"', "$.limits.tags", "`array`"),
        ('name = "x"\n[limits]\ntags = ["a", 2]', "$.limits.tags[1]", "`str`"),
        ('name = "x"\n[limits]\nmax_rate_hz = true', "$.limits.max_rate_hz", "`float`"),
    ],
)
def test_type_errors_anywhere_name_the_path(text, path, expected):
    message = _error(text)
    assert f"`{path}`" in message
    assert expected in message


def test_invalid_enum_value_names_the_key():
    message = _error('name = "x"\n[broker]\nprotocol = "4"')
    assert "`$.broker.protocol`" in message and "'4'" in message


def test_missing_required_key_is_named():
    assert "`name`" in _error("[broker]\nport = 1883")


@settings(max_examples=40)
@given(
    value=st.text(max_size=10) | st.booleans() | st.floats(allow_nan=False, allow_infinity=False)
)
def test_any_non_int_port_is_a_config_error(value):
    data = {"name": "x", "broker": {"port": value}}
    with pytest.raises(ConfigError, match=r"\$\.broker\.port"):
        convert_config(data, AppConfig)


# --------------------------------------------------------------------------- unknown keys


@pytest.mark.parametrize(
    "text, key, where",
    [
        ('name = "x"\nnmae = "y"', "nmae", None),
        ('name = "x"\n[broker]\nprt = 1883', "prt", "$.broker"),
        ('name = "x"\n[broker]\nPort = 1883', "Port", "$.broker"),
        ('name = "x"\n[limits]\nmax_rate = 1.0', "max_rate", "$.limits"),
        ('name = "x"\n[brokr]\nport = 1883', "brokr", None),
        ('name = "x"\n[broker.tls_options]\nverify = true', "tls_options", "$.broker"),
    ],
)
def test_unknown_keys_are_rejected_and_named(text, key, where):
    message = _error(text)
    assert "unknown field" in message
    assert f"`{key}`" in message
    if where is not None:
        assert f"`{where}`" in message


@settings(max_examples=40)
@given(key=TOML_BARE_KEY)
def test_any_unknown_broker_key_is_rejected_and_named(key):
    assume(key not in BROKER_FIELDS)
    message = _error(f'name = "x"\n[broker]\n{key} = 1\n')
    assert f"`{key}`" in message
    assert "`$.broker`" in message


@settings(max_examples=40)
@given(key=TOML_BARE_KEY)
def test_any_unknown_top_level_key_is_rejected_and_named(key):
    assume(key not in AppConfig.__struct_fields__)
    message = _error(f'name = "x"\n{key} = "v"\n')
    assert f"`{key}`" in message


# --------------------------------------------------------------------------- value ranges


@settings(max_examples=80)
@given(port=st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_port_range(port):
    text = f'name = "x"\n[broker]\nport = {port}\n'
    if 1 <= port <= 65535:
        assert parse_config(text, AppConfig).broker.port == port
    else:
        message = _error(text)
        assert "port" in message and "`$.broker`" in message


@pytest.mark.parametrize("port", [0, 1, 65535, 65536, -1])
def test_port_boundaries(port):
    text = f'name = "x"\n[broker]\nport = {port}\n'
    if port in (1, 65535):
        assert parse_config(text, AppConfig).broker.port == port
    else:
        assert "outside 1-65535" in _error(text)


@pytest.mark.parametrize(
    "keepalive_s, ok", [(4, False), (0, False), (-30, False), (5, True), (600, True)]
)
def test_keepalive_minimum(keepalive_s, ok):
    text = f'name = "x"\n[broker]\nkeepalive_s = {keepalive_s}\n'
    if ok:
        assert parse_config(text, AppConfig).broker.keepalive_s == keepalive_s
    else:
        assert "keepalive_s" in _error(text)


def test_broker_settings_validate_on_construction():
    with pytest.raises(ValueError):
        BrokerSettings(port=0)
    with pytest.raises(ValueError):
        BrokerSettings(keepalive_s=1)


# --------------------------------------------------------------------------- unreadable input


@pytest.mark.parametrize(
    "text",
    [
        "name = ",
        "name = 'x",
        'name = "x"\nname = "y"',  # duplicate key
        "[broker\nport = 1",
        "= 1",
        'name = "x" extra',
        "[broker]\n[broker]",
        'name = "x"\n\x00',
    ],
)
def test_invalid_toml_is_a_config_error(text):
    message = _error(text)
    assert "not valid TOML" in message


@settings(max_examples=80)
@given(text=st.text(max_size=60))
def test_arbitrary_text_gives_a_config_or_a_config_error(text):
    try:
        cfg = parse_config(text, AppConfig)
    except ConfigError:
        return
    assert isinstance(cfg, AppConfig)


def test_missing_file_is_a_config_error_naming_the_path(tmp_path):
    path = tmp_path / "nowhere" / "sensor.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path, AppConfig)
    assert str(path) in str(info.value)
    assert "cannot read" in str(info.value)


def test_directory_is_a_config_error_naming_the_path(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, AppConfig)
    assert str(tmp_path) in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_a_config_error_naming_the_path(tmp_path):
    path = tmp_path / "secret.toml"
    path.write_text('name = "x"\n')
    path.chmod(0)
    try:
        with pytest.raises(ConfigError) as info:
            load_config(path, AppConfig)
    finally:
        path.chmod(0o600)
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------- config_hash

_A = textwrap.dedent(
    """
    name = "pgh"
    threshold_db = 6.5
    [broker]
    host = "10.0.0.2"
    port = 8883
    [limits]
    tags = ["x", "y"]
    """
)
_A_REWRITTEN = textwrap.dedent(
    """
    # the same configuration, written differently
    limits = { tags = [ "x", "y" ] }
    broker.port = 8883
    broker.host = '10.0.0.2'
    threshold_db = 6.50
    name = "pgh"
    retries = 3   # the default, spelled out
    """
)


def test_config_hash_is_stable_for_equal_configs():
    a, b = parse_config(_A, AppConfig), parse_config(_A_REWRITTEN, AppConfig)
    assert a == b
    h = config_hash(a)
    assert re.fullmatch(r"[0-9a-f]{16}", h)
    assert config_hash(b) == h
    assert config_hash(a) == h  # and repeatable


@pytest.mark.parametrize(
    "old, new",
    [
        ('name = "pgh"', 'name = "pgh2"'),
        ("threshold_db = 6.5", "threshold_db = 6.25"),
        ("threshold_db = 6.5", "threshold_db = 6.5\nretries = 4"),
        ("port = 8883", "port = 8884"),
        ('host = "10.0.0.2"', 'host = "10.0.0.3"'),
        ('["x", "y"]', '["y", "x"]'),
        ("[limits]", "[limits]\nmax_rate_hz = 10.5"),
    ],
)
def test_config_hash_changes_with_any_value(old, new):
    base = parse_config(_A, AppConfig)
    changed = parse_config(_A.replace(old, new, 1), AppConfig)
    assert changed != base
    assert config_hash(changed) != config_hash(base)


@settings(max_examples=60)
@given(
    a=st.builds(
        AppConfig,
        name=st.text(max_size=5),
        threshold_db=st.floats(-100, 100),
        retries=st.integers(0, 5),
        broker=st.builds(BrokerSettings, port=st.integers(1, 65535), tls=st.booleans()),
    ),
    b=st.builds(
        AppConfig,
        name=st.text(max_size=5),
        threshold_db=st.floats(-100, 100),
        retries=st.integers(0, 5),
        broker=st.builds(BrokerSettings, port=st.integers(1, 65535), tls=st.booleans()),
    ),
)
def test_config_hash_equal_iff_configs_equal(a, b):
    assume(not (a.threshold_db == 0.0 and b.threshold_db == 0.0))  # 0.0 == -0.0 but hashes differ
    assert (config_hash(a) == config_hash(b)) == (a == b)


def test_config_hash_is_sha256_of_sorted_compact_json():
    # pins the canonical form: provenance hashes stored with old outputs stay comparable
    cfg = {"b": 2, "a": [1.5, "x"], "c": {"z": None, "y": True}}
    expected = hashlib.sha256(b'{"a":[1.5,"x"],"b":2,"c":{"y":true,"z":null}}').hexdigest()[:16]
    assert config_hash(cfg) == expected
    assert config_hash({"c": {"y": True, "z": None}, "a": [1.5, "x"], "b": 2}) == expected


def test_config_hash_ignores_dict_insertion_order():
    one = parse_config(
        'site = "pgh"\n[nodes.n1]\nlat_deg = 1\nlon_deg = 2\n[nodes.n2]\nlat_deg = 3\nlon_deg = 4\n',
        HubConfig,
    )
    two = parse_config(
        'site = "pgh"\n[nodes.n2]\nlat_deg = 3\nlon_deg = 4\n[nodes.n1]\nlat_deg = 1\nlon_deg = 2\n',
        HubConfig,
    )
    assert list(one.nodes) != list(two.nodes)
    assert config_hash(one) == config_hash(two)


# --------------------------------------------------------------------------- role configs

SENSOR_MINIMAL = textwrap.dedent(
    """
    [node]
    site = "pgh"
    node_id = "n1"

    [audio]
    path = "recording.wav"
    start_time_ns = 1795303702123456789
    """
)


def test_minimal_sensor_config_parses():
    cfg = parse_config(SENSOR_MINIMAL, SensorConfig)
    assert cfg.node.site == "pgh" and cfg.node.node_id == "n1"
    assert cfg.audio.start_time_ns == 1_795_303_702_123_456_789
    assert type(cfg.audio.start_time_ns) is int
    assert cfg.broker == BrokerSettings()
    assert cfg.trigger_config() == TriggerConfig()


def test_sensor_trigger_section_feeds_the_dsp_config():
    cfg = parse_config(
        SENSOR_MINIMAL + "\n[trigger]\nthreshold_db = 12\nhighpass_hz = 0\n", SensorConfig
    )
    trig = cfg.trigger_config()
    assert trig.threshold_db == 12.0 and trig.highpass_hz == 0.0
    assert trig.hysteresis_db == TriggerConfig().hysteresis_db


@pytest.mark.parametrize("value", ['"loud"', "true", "[6.0]", "{ db = 6 }"])
def test_sensor_trigger_threshold_wrong_type_names_the_key(value):
    message = _error(
        SENSOR_MINIMAL + f"\n[trigger]\nthreshold_db = {value}\n", SensorConfig, "sensor.toml"
    )
    assert "`$.trigger.threshold_db`" in message
    assert "`float`" in message


def test_sensor_unknown_trigger_key_names_the_key():
    message = _error(SENSOR_MINIMAL + "\n[trigger]\nthreshold = 6.0\n", SensorConfig, "sensor.toml")
    assert "`threshold`" in message and "`$.trigger`" in message


def test_sensor_broker_port_wrong_type_names_the_key():
    message = _error(SENSOR_MINIMAL + '\n[broker]\nport = "1883"\n', SensorConfig, "sensor.toml")
    assert "`$.broker.port`" in message and "`int`" in message


@pytest.mark.parametrize(
    "text, needle",
    [
        (SENSOR_MINIMAL.replace('site = "pgh"', 'site = "p/gh"'), "site"),
        (SENSOR_MINIMAL.replace('node_id = "n1"', 'node_id = "n 1"'), "node_id"),
        (SENSOR_MINIMAL.replace('node_id = "n1"', 'node_id = "n1"\nlat_deg = 40.0'), "lon_deg"),
        (SENSOR_MINIMAL.replace("start_time_ns = 1795303702123456789\n", ""), "start_time_ns"),
        (
            SENSOR_MINIMAL.replace("[node]\n", '[node]\ntime_quality = "gps"\n'),
            "$.node.time_quality",
        ),
        (
            SENSOR_MINIMAL.replace("[node]\n", "").replace('site = "pgh"\nnode_id = "n1"\n', ""),
            "node",
        ),
    ],
)
def test_sensor_config_value_errors(text, needle):
    assert needle in _error(text, SensorConfig, "sensor.toml")


def test_minimal_hub_config_parses():
    cfg = parse_config('site = "pgh"\n', HubConfig)
    assert cfg.site == "pgh"
    assert cfg.broker.username == "hub"  # persistent sessions on amqtt need a user
    assert cfg.association.min_nodes == 4
    assert cfg.nodes == {}


def test_hub_association_unknown_key_names_the_key():
    message = _error('site = "pgh"\n[association]\nmin_node = 4\n', HubConfig, "hub.toml")
    assert "`min_node`" in message and "`$.association`" in message


def test_hub_association_wrong_type_names_the_key():
    message = _error('site = "pgh"\n[association]\nmin_nodes = "four"\n', HubConfig, "hub.toml")
    assert "`$.association.min_nodes`" in message and "`int`" in message


@pytest.mark.parametrize(
    "text, needle",
    [
        ('site = "p gh"', "site"),
        ('site = "pgh"\n[association]\nmin_nodes = 2', "min_nodes"),
        ('site = "pgh"\n[location]\ntemperature_c = "warm"', "$.location.temperature_c"),
        ('site = "pgh"\n[nodes.n1]\nlat_deg = 40.0', "lon_deg"),
        ('site = "pgh"\n[incidents]\ngap = 20', "gap"),
    ],
)
def test_hub_config_value_errors(text, needle):
    assert needle in _error(text, HubConfig, "hub.toml")


# --------------------------------------------------------------------------- known bugs


def test_non_utf8_file_is_a_config_error(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('name = "Zürich"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_config(path, AppConfig)


def test_config_hash_leaves_out_passwords():
    """The hash is published with every output: it must not let anyone test password guesses."""
    from shotline.core.config import BrokerSettings

    a = BrokerSettings(username="n1", password="secret-1")
    b = BrokerSettings(username="n1", password="secret-2")
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(BrokerSettings(username="n2", password="secret-1"))
