"""``shotline``: the demo and common verbs."""

from __future__ import annotations

import argparse
import logging

from shotline.core.version import package_version


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="shotline", description="Shotline: open acoustic gunshot detection and location.")
    p.add_argument("--version", action="version", version=f"shotline {package_version()}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="cmd", required=True)
    from .demo import add_arguments, main_demo

    demo = sub.add_parser("demo", help="simulated gunshots in Hartford, CT, end to end over MQTT")
    add_arguments(demo)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.cmd == "demo":
        return main_demo(args)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
