"""``shotline-hub``: run the hub, check its configuration, read its health, list and prune its incidents."""

from __future__ import annotations

import argparse
import gc
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
    users = sub.add_parser(
        "users",
        help="review-page accounts: add, passwd, list, remove (see 'shotline-hub users -h')",
        add_help=False,
    )
    users.add_argument("rest", nargs=argparse.REMAINDER)
    hh = sub.add_parser(
        "health",
        help="read a running hub's health from the broker (exit 0 keeps up, 1 warning, 2 offline or silent)",
        description="Wait for the hub's next health message on shotline/v1/<site>/hub/health (its broker and site "
        "from the config) and print it. Exit code: 0 the hub keeps up; 1 it is busier than its warning fraction, "
        "a sink delivery has been retrying for over 5 minutes, or over 1 % of the detections since it started "
        "came late; 2 no health within the timeout, or the "
        "hub is offline. The MQTT account needs read access to hub/status and hub/health (docs/mqtt.md).",
    )
    hh.add_argument("--config", required=True, help="hub TOML config file (its site and [broker])")
    hh.add_argument("--timeout", type=float, help="seconds to wait (default: 3 x health_interval_s, at least 5)")
    hh.add_argument("--username", help="MQTT username instead of the config's (e.g. a read-only account)")
    hh.add_argument("--password-file", help="file holding that account's password")
    hh.add_argument("--json", action="store_true", help="print the health message as JSON")
    pr = sub.add_parser(
        "prune",
        help="apply the store's retention ([store] keep_*_days) now; the running hub also does it hourly",
        description="Delete from the hub's store what [store] keep_incidents_days, keep_detections_days and "
        "keep_deliveries_days no longer keep (docs/hub-store-and-sinks.md). Safe while the hub runs.",
    )
    pr.add_argument("--config", required=True, help="hub TOML config file (its [store])")
    pr.add_argument("--dry-run", action="store_true", help="count what would be deleted, delete nothing")
    inc = sub.add_parser(
        "incidents",
        help="list or export stored incidents",
        description="List incidents active in [--since, --until) from the hub's store. Times: ISO 8601 "
        "(2026-07-04T21:00Z; naive = UTC), a duration ago (30m, 2h, 7d), 'now', or integer ns.",
    )
    src = inc.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="hub TOML config file (its [store] path)")
    src.add_argument("--db", help="store file (SQLite)")
    inc.add_argument("--since", help="start of the window (default: everything)")
    inc.add_argument("--until", help="end of the window, exclusive (default: now and later)")
    inc.add_argument("--format", choices=["table", "json", "geojson", "csv"], default="table")
    inc.add_argument("--shots", action="store_true", help="geojson: add one Point feature per shot")
    inc.add_argument("--state", action="append", choices=["new", "updated", "closed"], help="repeatable")
    inc.add_argument(
        "--review", action="append", choices=["unreviewed", "confirmed", "dismissed", "relabelled"], help="repeatable"
    )
    inc.add_argument("--limit", type=int, help="at most this many (newest first)")
    inc.add_argument("-o", "--output", help="write to this file instead of standard output")
    return p


def _incidents(args: argparse.Namespace) -> int:
    import json

    from . import export
    from .store import IncidentStore, StoreError

    if args.config is not None:
        try:
            cfg = load_config(args.config, HubConfig)
        except ConfigError as exc:
            print(f"config error: {exc}", file=sys.stderr)
            return 2
        db = cfg.store.path
        if db == ":memory:":
            print(f"{args.config}: [store] path is \":memory:\", nothing is kept to list", file=sys.stderr)
            return 2
    else:
        db = args.db
    try:
        since = export.parse_time(args.since) if args.since else None
        until = export.parse_time(args.until) if args.until else None
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        with IncidentStore(db, readonly=True) as store:
            rows = store.list_incidents(
                since_ns=since, until_ns=until, states=args.state, review_states=args.review,
                limit=args.limit, newest_first=args.limit is not None,
            )
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.format == "table":
        text = export.format_table(rows)
    elif args.format == "json":
        text = json.dumps(export.to_json(rows), indent=1) + "\n"
    elif args.format == "geojson":
        text = json.dumps(export.to_geojson(rows, with_shots=args.shots)) + "\n"
    else:
        import io

        buf = io.StringIO()
        export.write_csv(rows, buf)
        text = buf.getvalue()
    if args.output:
        with open(args.output, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        print(f"{len(rows)} incident(s) written to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _health(args: argparse.Namespace, cfg: HubConfig) -> int:
    import json
    from pathlib import Path

    import msgspec

    from . import health_check

    broker = cfg.broker
    if args.username is not None or args.password_file is not None:
        try:
            password = Path(args.password_file).read_text(encoding="utf-8").strip() if args.password_file else None
        except OSError as exc:
            print(f"error: --password-file: {exc.strerror}: {args.password_file}", file=sys.stderr)
            return health_check.CRITICAL
        broker = msgspec.structs.replace(broker, username=args.username or broker.username, password=password)
    timeout_s = args.timeout if args.timeout is not None else max(5.0, 3 * cfg.health_interval_s)
    try:
        reading = health_check.read_health(broker, cfg.site, timeout_s)
    except TransportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return health_check.CRITICAL
    code, reason = health_check.verdict(reading)
    if reading.malformed:
        print(f"warning: {reading.malformed}", file=sys.stderr)
    if args.json:
        if reading.health is not None:
            print(json.dumps(msgspec.to_builtins(reading.health), indent=2))
    elif reading.health is not None:
        print("\n".join(health_check.describe(reading.health)))
    # (Under --json the verdict goes to standard error, so that standard output stays JSON.)
    print(("OK: " if code == health_check.OK else "WARNING: " if code == health_check.WARNING else "CRITICAL: ")
          + reason, file=sys.stdout if code == health_check.OK and not args.json else sys.stderr)
    return code


def _prune(args: argparse.Namespace, cfg: HubConfig) -> int:
    from shotline.core.timebase import now_ns

    from .store import IncidentStore, StoreError

    st = cfg.store
    cut = st.prune_before_ns(now_ns())
    if all(v is None for v in cut.values()):
        print(f"{args.config}: [store] keeps everything (no keep_*_days above 0): nothing to prune")
        return 0
    if st.path == ":memory:":
        print(f"{args.config}: [store] path is \":memory:\", nothing is kept to prune", file=sys.stderr)
        return 2
    try:
        with IncidentStore(st.path, wal=st.wal) as store:
            got = store.prune(**cut, dry_run=args.dry_run)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    rules = ", ".join(f"{k} = {v:g}" for k, v in (("keep_incidents_days", st.keep_incidents_days),
                                                   ("keep_detections_days", st.keep_detections_days),
                                                   ("keep_deliveries_days", st.keep_deliveries_days))
                      if v)
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{st.path}: {verb} {got.incidents} incident(s), {got.detections} detection(s) and {got.deliveries} sink "
          f"deliveries ({rules})")
    return 0


def _check_sinks(cfg: HubConfig, config_path: str) -> list[str]:
    """Errors in what the sinks load at start (geofence files)."""
    from pathlib import Path

    from .sinks.geofence import Geofence, GeofenceError

    errors = []
    for name, g in cfg.sinks.geofences.items():
        try:
            Geofence.from_settings(name, g.polygons, g.file, Path(config_path).parent)
        except GeofenceError as exc:
            errors.append(f"sinks.geofences.{name}: {exc}")
    return errors


def _service_warnings(cfg: HubConfig) -> list[str]:
    """What ``shotline-hub run`` warns about beyond :meth:`HubConfig.warnings` (which the demo's hub, in memory
    on purpose, logs too)."""
    if cfg.store.path == ":memory:":
        return ['[store] path is ":memory:": incidents, reviews and the restart journal are lost when the hub '
                "stops, and a restarted hub splits the incidents it had open (set a file, docs/config.md)"]
    return []


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["users"]:
        from .web.users import main as users_main

        return users_main(argv[1:])
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.cmd == "incidents":
        return _incidents(args)
    try:
        cfg = load_config(args.config, HubConfig)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    if args.cmd == "health":
        return _health(args, cfg)
    if args.cmd == "prune":
        return _prune(args, cfg)
    if args.cmd == "check-config":
        errors = _check_sinks(cfg, args.config)
        if errors:
            for e in errors:
                print(f"config error: {args.config}: {e}", file=sys.stderr)
            return 2
        for w in cfg.warnings() + _service_warnings(cfg):
            print(f"warning: {args.config}: {w}", file=sys.stderr)
        print(f"{args.config}: OK (site {cfg.site}, broker {cfg.broker.host}:{cfg.broker.port})")
        return 0
    from pathlib import Path

    from .service import HubService
    from .sinks.geofence import GeofenceError
    from .store import StoreError

    for w in _service_warnings(cfg):
        logging.getLogger("shotline.hub").warning("config: %s", w)
    # A SIGTERM (systemd's stop) while the hub is still starting (its replay, the review page) stops it
    # cleanly once started, instead of killing it half way.
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        svc = HubService(cfg, config_dir=Path(args.config).parent)
    except (StoreError, GeofenceError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
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
    web = None
    if cfg.web.enabled:
        try:
            from .web.server import start_web

            web = start_web(cfg, svc, base_dir=Path(args.config).parent, on_review=svc.publish_review)
            print(f"review page: {web.url}", flush=True)
        except ImportError as exc:
            print(f"review page disabled: {exc} (install shotline[web])", file=sys.stderr)
        except (OSError, ValueError) as exc:
            print(f"error: review page: {exc}", file=sys.stderr)
            svc.stop()
            return 1
    # What is loaded now (the interpreter's, numpy's, numba's and scipy's objects, the config) stays for
    # the hub's life: the cyclic collector's full passes leave it out from here on. A full pass over a
    # fresh hub's heap costs ~0.1 s, inside whichever detection's handling triggers it (the latency
    # budget is 100 ms); with the heap frozen it visits the hub's own objects only.
    gc.collect()
    gc.freeze()
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    if web is not None:
        web.stop()
    svc.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
