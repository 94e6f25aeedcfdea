"""``shotline-hub``: run the hub, check its configuration."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from shotline.core.config import ConfigError, load_config
from shotline.core.transport import TransportError

from .config import HubConfig


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shotline-hub", description="Shotline hub: associate, locate, publish incidents.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run the hub against an MQTT broker")
    run.add_argument("--config", required=True, help="hub TOML config file")
    chk = sub.add_parser("check-config", help="validate a config file and print what is wrong")
    chk.add_argument("config", help="hub TOML config file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config, HubConfig)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    if args.cmd == "check-config":
        print(f"{args.config}: OK (site {cfg.site}, broker {cfg.broker.host}:{cfg.broker.port})")
        return 0
    from .service import HubService

    svc = HubService(cfg)
    svc.listeners.append(
        lambda out, _t: logging.getLogger("shotline.hub").info(
            "incident %s %s: %d round(s) at %.6f, %.6f (CEP95 %.1f m)",
            out.incident.incident_id, out.incident.state, out.incident.rounds,
            out.incident.position.lat_deg, out.incident.position.lon_deg, out.incident.cep95_m,
        )
    )
    try:
        svc.start()
    except TransportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    svc.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
