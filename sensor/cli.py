"""``shotline-sensor``: run a node, check its configuration, list devices, meter levels.

::

    shotline-sensor run --config /etc/shotline/sensor.toml
    shotline-sensor check-config /etc/shotline/sensor.toml
    shotline-sensor list-devices
    shotline-sensor level --config /etc/shotline/sensor.toml [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path

from shotline.core.config import ConfigError, load_config
from shotline.core.transport import MqttTransport, TransportError

from .config import SensorConfig

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shotline-sensor", description="Shotline sensor node.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run the node: detect impulses and publish detections")
    run.add_argument("--config", required=True, help="sensor TOML config file")
    chk = sub.add_parser("check-config", help="validate a config file and print what is wrong")
    chk.add_argument("config", help="sensor TOML config file")
    ls = sub.add_parser("list-devices", help="list the audio input devices PortAudio sees")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    lv = sub.add_parser("level", help="live level meter (dBFS and dB SPL) for installing the microphone")
    lv.add_argument("--config", help="sensor TOML config file (device, format, calibration constant)")
    lv.add_argument("--device", help="device index or name (overrides the config)")
    lv.add_argument("--seconds", type=float, default=None, help="stop after this long (default: until Ctrl-C)")
    lv.add_argument("--interval", type=float, default=0.1, help="seconds per reading (default 0.1)")
    return p


def _device_arg(value: str | None) -> str | int | None:
    if value is None:
        return None
    return int(value) if value.strip().isdigit() else value


def live_source(cfg: SensorConfig, *, stop_event: threading.Event | None = None, max_samples: int | None = None,
                device: str | int | None = None):
    """A :class:`~shotline.sensor.capture.LiveSource` as the config describes it."""
    from .capture import LiveSource

    a = cfg.audio
    return LiveSource(
        a.device if device is None else device,
        sample_rate_hz=a.sample_rate_hz,
        channel=a.channel,
        channels=a.channels,
        dtype=a.dtype,
        block_s=a.block_s,
        dc_cutoff_hz=a.dc_cutoff_hz,
        stall_timeout_s=a.stall_timeout_s,
        retry_max_s=a.retry_max_s,
        queue_s=a.queue_s,
        fit_window_s=cfg.clock.fit_window_s,
        step_threshold_s=cfg.clock.step_threshold_s,
        stop_event=stop_event,
        max_samples=max_samples,
    )


def _sd_notify(message: str) -> None:
    """Tell systemd (Type=notify, WatchdogSec) how we are; a no-op outside systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(message.encode(), addr)
    except OSError as exc:
        log.debug("sd_notify: %s", exc)


def _watchdog(node, stop: threading.Event) -> None:
    """Ping systemd's watchdog while audio is being processed; a hung node gets restarted."""
    usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
    if usec <= 0:
        return
    period = usec / 2e6
    last = -1
    stalled_since = None
    import time

    while not stop.wait(period):
        n = node.stats.n_samples
        now = time.monotonic()
        if n != last:
            last, stalled_since = n, None
        elif stalled_since is None:
            stalled_since = now
        # A vanished device is retried by the source itself: allow for its back-off.
        if stalled_since is None or now - stalled_since < node.cfg.audio.retry_max_s + 30:
            _sd_notify("WATCHDOG=1")


def _keep_connecting(transport: MqttTransport, stop: threading.Event) -> None:
    """Retry the first connection until it works (the client reconnects by itself after that)."""
    while not stop.is_set():
        try:
            transport.start(timeout_s=30.0)
            log.info("connected to the MQTT broker")
            return
        except TransportError as exc:
            log.warning("%s; retrying", exc)
            stop.wait(5.0)


def _cmd_list_devices(args) -> int:
    from .audio import AudioSourceError
    from .capture import format_devices, list_input_devices

    try:
        devices = list_input_devices()
    except AudioSourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(devices, indent=2))
    elif not devices:
        print(format_devices(devices))
    else:
        for d in devices:
            print(f"{d['index']:3d}  {d['name']}  ({d['channels']} ch, {d['rate_hz']:g} Hz, {d['hostapi']})")
    return 0


def _cmd_level(args) -> int:
    from .audio import AudioSourceError
    from .level import run_meter

    if args.config:
        try:
            cfg = load_config(args.config, SensorConfig)
        except ConfigError as exc:
            print(f"config error: {exc}", file=sys.stderr)
            return 2
    else:
        from .config import AudioSettings, NodeSettings

        cfg = SensorConfig(node=NodeSettings(site="level", node_id="level"), audio=AudioSettings(source="live"))
    fs = cfg.audio.sample_rate_hz
    max_samples = int(args.seconds * fs) if args.seconds else None
    try:
        src = live_source(cfg, max_samples=max_samples, device=_device_arg(args.device))
    except AudioSourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if cfg.node.full_scale_spl_db is None:
        print("(no [node] full_scale_spl_db: dB SPL unknown)", file=sys.stderr)
    try:
        run_meter(src.blocks(), fs, interval_s=args.interval, full_scale_spl_db=cfg.node.full_scale_spl_db)
    except KeyboardInterrupt:
        pass
    except AudioSourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.cmd == "list-devices":
        return _cmd_list_devices(args)
    if args.cmd == "level":
        return _cmd_level(args)
    try:
        cfg = load_config(args.config, SensorConfig)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    unfilled = _unfilled_keys(args.config)
    if unfilled:
        # The example config ships with CHANGE-ME values that are valid
        # syntax; a node must not start (or pass a check) with them.
        print(f"config error: {args.config}: fill in the CHANGE-ME values of {', '.join(unfilled)}",
              file=sys.stderr)
        return 2
    if args.cmd == "check-config":
        print(f"{args.config}: OK (node {cfg.node.site}/{cfg.node.node_id})")
        return 0
    return _run(cfg)


def _unfilled_keys(path: str) -> list[str]:
    """Keys (``table.key``) whose value still contains ``CHANGE-ME``."""
    import tomllib

    def walk(d: dict, prefix: str):
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                yield from walk(v, key + ".")
            elif "CHANGE-ME" in str(v):
                yield key

    try:
        with open(path, "rb") as f:
            return list(walk(tomllib.load(f), ""))
    except (OSError, tomllib.TOMLDecodeError):
        return []


def _run(cfg: SensorConfig) -> int:
    from .audio import AudioSourceError, FileSource
    from .node import SensorNode

    stop = threading.Event()
    live = cfg.audio.source == "live"
    try:
        if live:
            source = live_source(cfg, stop_event=stop)
        else:
            source = FileSource(
                cfg.audio.path,  # type: ignore[arg-type]
                cfg.audio.start_time_ns,  # type: ignore[arg-type]
                channel=cfg.audio.channel,
                block_s=cfg.audio.block_s,
                speed=cfg.audio.speed or None,
                stop_event=stop,
            )
    except AudioSourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    monitor = None
    if live and cfg.clock.chrony:
        from .clock import ChronyMonitor

        c = cfg.clock
        monitor = ChronyMonitor(c.chronyc, pps_refid=c.pps_refid, pps_max_offset_s=c.pps_max_offset_s,
                                ntp_max_offset_s=c.ntp_max_offset_s)
        monitor.start(c.poll_s)
    try:
        node = SensorNode(cfg, source, None, clock_monitor=monitor, keep_detections=not live)
    except OSError as exc:  # outbox or clip directory not writable
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if node.outbox.depth:
        log.info("outbox: %d detection(s) left from before; publishing them first", node.outbox.depth)
    server = None
    if node.clips is not None and cfg.clips.http_port:
        from .clip_server import ClipServer

        token = Path(cfg.clips.token_file).read_text().strip() if cfg.clips.token_file else None
        try:
            server = ClipServer(node.clips, host=cfg.clips.http_bind, port=cfg.clips.http_port, token=token,
                                health=lambda: node.last_health).start()
        except OSError as exc:
            log.error("%s; clips are saved but cannot be fetched", exc)
    transport = MqttTransport(
        cfg.broker,
        f"shotline-node-{cfg.node.site}-{cfg.node.node_id}",
        will=node.status_message("offline"),
        birth=[node.status_message("online")],
    )
    node.transport = transport
    try:
        # Live: never give up on the broker; the outbox holds detections meanwhile.
        transport.start(timeout_s=10.0)
    except TransportError as exc:
        if not live:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        log.warning("%s; running anyway, detections wait in the outbox", exc)
        threading.Thread(target=_keep_connecting, args=(transport, stop), name="mqtt-connect", daemon=True).start()

    def _terminate(signum, frame) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    _sd_notify("READY=1")
    wd = threading.Thread(target=_watchdog, args=(node, stop), name="watchdog", daemon=True)
    wd.start()
    rc = 0
    try:
        node.run()
        node.wait_acked(10.0 if not live else 5.0)
    except KeyboardInterrupt:
        pass
    except AudioSourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        rc = 1
    finally:
        stop.set()
        _sd_notify("STOPPING=1")
        if monitor is not None:
            monitor.stop()
        if server is not None:
            server.stop()
        if transport.connected:
            transport.publish(node.status_message("offline"))
            transport.flush(2.0)  # a clean disconnect sends no last will: deliver "offline" first
        transport.stop()
        node.close()
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
