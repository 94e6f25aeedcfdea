"""Console scripts, called through their main(argv) as the tests of every role do."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from shotline.calibration import shotline_cli
from shotline.core.config import load_config
from shotline.hub import cli as hub_cli
from shotline.sensor import cli as sensor_cli

SENSOR_OK = """
[node]
site = "hartford"
node_id = "UA03"
lat_deg = 41.7835
lon_deg = -72.699

[audio]
path = "/tmp/x.flac"
start_time_ns = 1795000000000000000
"""

HUB_OK = """
site = "hartford"
[location]
temperature_c = 12.0
"""


def test_sensor_check_config(tmp_path, capsys):
    good = tmp_path / "ok.toml"
    good.write_text(SENSOR_OK)
    assert sensor_cli.main(["check-config", str(good)]) == 0
    assert "OK" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text(SENSOR_OK + '\n[trigger]\nthreshold_db = "loud"\n')
    assert sensor_cli.main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "$.trigger.threshold_db" in err and "float" in err


def test_hub_check_config(tmp_path, capsys):
    good = tmp_path / "hub.toml"
    good.write_text(HUB_OK)
    assert hub_cli.main(["check-config", str(good)]) == 0
    assert "ground_alt_m is not set" in capsys.readouterr().err  # valid, but worth a warning
    grounded = tmp_path / "hub-ground.toml"
    grounded.write_text(HUB_OK + "ground_alt_m = 12.5\n")
    assert hub_cli.main(["check-config", str(grounded)]) == 0
    assert '[store] path is ":memory:"' in capsys.readouterr().err  # nothing survives a restart
    stored = tmp_path / "hub-stored.toml"
    stored.write_text(HUB_OK + f'ground_alt_m = 12.5\n[store]\npath = "{tmp_path / "hub.sqlite"}"\n')
    assert hub_cli.main(["check-config", str(stored)]) == 0
    assert "warning" not in capsys.readouterr().err
    bad = tmp_path / "hub-bad.toml"
    bad.write_text(HUB_OK + "\n[association]\nmin_nodez = 5\n")
    assert hub_cli.main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "min_nodez" in err and "$.association" in err
    assert hub_cli.main(["check-config", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml" in capsys.readouterr().err


def test_demo_fails_clearly_when_its_port_is_taken(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert shotline_cli.main(["demo", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"port {port}" in err and "already in use" in err


@pytest.mark.slow
def test_demo_json_summary(capsys):
    """The demo ends by itself and prints its summary as JSON (fast-forwarded 4x here)."""
    assert shotline_cli.main(["demo", "--port", "0", "--web-port", "0", "--speed", "4", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    for key in ("incidents", "shots_found", "shots_fired", "median_error_m", "max_error_m", "latency_p99_ms"):
        assert key in summary
    assert summary["shots_found"] == summary["shots_fired"] == 6
    assert summary["false_shots"] == 0
    assert summary["max_error_m"] < 2.0
    # The hub's own health as it saw the scene: a few hundred detections hardly keep one core busy. (Their
    # delivery delays are receipt less onset: in a replay at 4x the onsets run ahead of the hub's clock.)
    assert 0.0 < summary["hub_busy_fraction"] < 0.5
    assert summary["delivery_delay_p95_s"] is not None


def test_example_node_config_needs_its_placeholders_filled(tmp_path, capsys):
    """scripts/sensor.example.toml (installed by install-node.sh) is valid once its CHANGE-ME values are filled."""
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "scripts" / "sensor.example.toml"
    assert sensor_cli.main(["check-config", str(example)]) == 2
    assert "CHANGE-ME" in capsys.readouterr().err
    filled = tmp_path / "node.toml"
    filled.write_text(example.read_text().replace('"CHANGE-ME"', '"ua03"'))
    assert sensor_cli.main(["check-config", str(filled)]) == 0, capsys.readouterr().err


def test_hub_health_command_reads_a_running_hub_and_says_whether_it_keeps_up(tmp_path, capsys, embedded_broker):
    """``shotline-hub health`` against a real broker: a running hub's health and exit 0; a health that says the hub
    is overloaded, exit 1; the hub stopped (its retained status offline), exit 2 at once; no hub at all, exit 2
    after the timeout."""
    import time

    from shotline.core import messages as m
    from shotline.core import topics
    from shotline.core.config import BrokerSettings
    from shotline.core.transport import MqttTransport, OutMessage
    from shotline.hub.config import HubConfig
    from shotline.hub.service import HubService

    cfg_path = tmp_path / "hub.toml"
    cfg_path.write_text(f'site = "hcheck"\nhealth_interval_s = 0.2\n[broker]\nport = {embedded_broker.port}\n'
                        f'[store]\npath = "{tmp_path / "hub.sqlite"}"\n')
    cfg = load_config(cfg_path, HubConfig)
    svc = HubService(cfg, tick_s=0.05)
    svc.start()
    running = True
    try:
        assert hub_cli.main(["health", "--config", str(cfg_path), "--timeout", "10"]) == 0
        out = capsys.readouterr().out
        assert out.startswith("hub hcheck: health of ") and "busy " in out and "no detection yet" in out
        assert "messages taken in: nothing; dropped: none" in out and out.rstrip().endswith("OK: hub keeps up")
        assert hub_cli.main(["health", "--config", str(cfg_path), "--json"]) == 0
        got = json.loads(capsys.readouterr().out)
        assert got["schema"] == "shotline.hub_health/1" and got["site"] == "hcheck"
        # Someone else's message on the topic saying the hub is overloaded (the checker believes the broker).
        pub = MqttTransport(BrokerSettings(port=embedded_broker.port, username="t"), "t-busy", clean_session=True)
        pub.start()
        busy = m.encode(m.HubHealth(site="hcheck", time_ns=time.time_ns(), busy_fraction=0.93))
        stop_spam = threading.Event()

        def spam() -> None:
            while not stop_spam.wait(0.02):
                pub.publish(OutMessage(topics.hub_health_topic("hcheck"), busy, 0, False))

        svc.stop(close_incidents=False, drain_s=0.0)  # (the hub's own messages would race the overloaded ones)
        running = False
        t = threading.Thread(target=spam)
        t.start()
        try:
            assert hub_cli.main(["health", "--config", str(cfg_path), "--timeout", "10"]) == 2  # offline wins
            assert "CRITICAL: hub offline since" in capsys.readouterr().err
        finally:
            stop_spam.set()
            t.join()
        pub.publish(OutMessage(topics.hub_status_topic("hcheck"), m.encode(
            m.HubStatus(site="hcheck", state="online", time_ns=time.time_ns())), 1, True))
        t = threading.Thread(target=spam)
        stop_spam.clear()
        t.start()
        try:
            assert hub_cli.main(["health", "--config", str(cfg_path), "--timeout", "10"]) == 1
            assert "WARNING: hub busy 93 % of the last 60 s (over 80 %)" in capsys.readouterr().err
        finally:
            stop_spam.set()
            t.join()
            pub.stop()
    finally:
        if running:
            svc.stop(close_incidents=False, drain_s=0.0)
    silent = tmp_path / "silent.toml"
    silent.write_text(f'site = "nobody"\n[broker]\nport = {embedded_broker.port}\n')
    t0 = time.monotonic()
    assert hub_cli.main(["health", "--config", str(silent), "--timeout", "1"]) == 2
    assert time.monotonic() - t0 >= 1.0
    assert "CRITICAL: no health message from the hub" in capsys.readouterr().err
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    silent.write_text(f'site = "nobody"\n[broker]\nport = {port}\n')
    assert hub_cli.main(["health", "--config", str(silent), "--timeout", "1"]) == 2
    assert "error:" in capsys.readouterr().err


def test_hub_prune_command(tmp_path, capsys):
    """``shotline-hub prune``: the config's retention on its store file, a dry run first."""
    from shotline.core import messages as m
    from shotline.core.timebase import now_ns
    from shotline.hub.store import IncidentStore

    db = tmp_path / "hub.sqlite"
    day = 86_400 * 10**9
    with IncidentStore(db) as st:
        st.put_detections([(m.Detection(detection_id=f"D{k}", site="hartford", node_id="N", onset_time_ns=1,
                                        onset_sigma_s=0.0, time_quality="pps", peak_dbfs=-10.0, snr_db=30.0,
                                        noise_floor_dbfs=-60.0), now_ns() - k * day) for k in (1, 40, 400)])
    cfg = tmp_path / "hub.toml"
    cfg.write_text(f'site = "hartford"\n[store]\npath = "{db}"\ndetections = "all"\nkeep_detections_days = 30\n')
    assert hub_cli.main(["prune", "--config", str(cfg), "--dry-run"]) == 0
    assert "would delete 0 incident(s), 2 detection(s) and 0 sink deliveries (keep_detections_days = 30, " \
           "keep_deliveries_days = 90)" in capsys.readouterr().out
    assert hub_cli.main(["prune", "--config", str(cfg)]) == 0
    assert ": deleted 0 incident(s), 2 detection(s)" in capsys.readouterr().out
    with IncidentStore(db, readonly=True) as st:
        assert [d.detection.detection_id for d in st.detections()] == ["D1"]
    cfg.write_text(f'site = "hartford"\n[store]\npath = "{db}"\nkeep_deliveries_days = 1e9\n')  # centuries
    assert hub_cli.main(["prune", "--config", str(cfg)]) == 0
    assert ": deleted 0 incident(s), 0 detection(s)" in capsys.readouterr().out
    cfg.write_text(f'site = "hartford"\n[store]\npath = "{db}"\nkeep_deliveries_days = 0\n')  # for ever
    assert hub_cli.main(["prune", "--config", str(cfg)]) == 0
    assert "keeps everything" in capsys.readouterr().out
    cfg.write_text('site = "hartford"\n[store]\nkeep_incidents_days = 30\n')  # the in-memory default store
    assert hub_cli.main(["prune", "--config", str(cfg)]) == 2
    assert "nothing is kept to prune" in capsys.readouterr().err
    cfg.write_text('site = "hartford"\n[store]\nkeep_incidents_days = -1\n')
    assert hub_cli.main(["prune", "--config", str(cfg)]) == 2
    assert "keep_incidents_days must be >= 0 days" in capsys.readouterr().err
