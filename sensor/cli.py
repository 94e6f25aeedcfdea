"""``shotline-sensor``: run a node, check its configuration."""

from __future__ import annotations

import argparse
import logging
import sys

from shotline.core.config import ConfigError, load_config
from shotline.core.transport import MqttTransport, TransportError

from .config import SensorConfig


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shotline-sensor", description="Shotline sensor node.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run the node: detect impulses and publish detections")
    run.add_argument("--config", required=True, help="sensor TOML config file")
    chk = sub.add_parser("check-config", help="validate a config file and print what is wrong")
    chk.add_argument("config", help="sensor TOML config file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config, SensorConfig)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    if args.cmd == "check-config":
        print(f"{args.config}: OK (node {cfg.node.site}/{cfg.node.node_id})")
        return 0

    from .audio import AudioSourceError, FileSource
    from .node import SensorNode

    try:
        source = FileSource(
            cfg.audio.path,  # type: ignore[arg-type]
            cfg.audio.start_time_ns,  # type: ignore[arg-type]
            channel=cfg.audio.channel,
            block_s=cfg.audio.block_s,
            speed=cfg.audio.speed or None,
        )
    except AudioSourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    node = SensorNode(cfg, source, None)
    transport = MqttTransport(
        cfg.broker,
        f"shotline-node-{cfg.node.site}-{cfg.node.node_id}",
        will=node.status_message("offline"),
        birth=[node.status_message("online")],
    )
    node.transport = transport
    try:
        transport.start()
    except TransportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        node.run()
        node.wait_acked()
    except KeyboardInterrupt:
        pass
    transport.publish(node.status_message("offline"))
    transport.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
