"""``shotline-calibrate``: import recordings, replay them, evaluate, calibrate.

Subcommands (docs/calibration.md walks through them):

* ``import pittsburgh|smj0|csv SRC OUT``: recordings -> recording bundles;
* ``replay BUNDLE... --out DIR [--broker HOST:PORT | --mqtt] [--config replay.toml]``;
* ``evaluate REPLAY_DIR... --out DIR``: HTML report with plots;
* ``clock``, ``positions``, ``speed-of-sound``, ``threshold``, ``mic-level``,
  ``classifier-op``: calibration solvers writing ``<solver>.patch.toml`` and
  ``<solver>.report.md``;
* ``eval-classifier``: the classifier evaluation (``calibration/classifier_eval.py``).
* ``export-reviewed``: reviewed clips as a labelled data set (``hub/web/export_dataset.py``).
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
import tomllib
from pathlib import Path
from typing import Any

from shotline.core.version import package_version

log = logging.getLogger(__name__)


def _load_replay_config(path: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``replay.toml``: optional ``[hub]`` (hub TOML keys, docs/config.md) and ``[trigger]`` tables."""
    if not path:
        return {}, {}
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    unknown = set(data) - {"hub", "trigger"}
    if unknown:
        raise ValueError(f"{path}: unknown table(s) {sorted(unknown)}; allowed: [hub], [trigger]")
    return data.get("hub", {}), data.get("trigger", {})


def _cmd_import(a: argparse.Namespace) -> int:
    from .importers import import_csv, import_pittsburgh, import_smj0_folder

    if a.kind == "pittsburgh":
        bundles = import_pittsburgh(a.src, a.out)
    elif a.kind == "smj0":
        src = Path(a.src)
        wav_dirs = sorted({p.parent for p in src.rglob("*.wav")}) if src.is_dir() else [src]
        bundles = [import_smj0_folder(d, Path(a.out) / d.name.replace(" ", "_")) if len(wav_dirs) > 1
                   else import_smj0_folder(d, a.out) for d in wav_dirs]
    else:
        if a.temperature_c is None:
            raise ValueError("csv import needs --temperature-c (the speed of sound is not guessed)")
        origin = tuple(float(v) for v in a.origin.split(",")) if a.origin else None
        if origin is not None and len(origin) != 3:
            raise ValueError("--origin is LAT,LON,ALT")
        bundles = [import_csv(a.src, a.out, events_csv=a.events, temperature_c=a.temperature_c,
                              origin=origin)]  # type: ignore[arg-type]
    for b in bundles:
        print(f"{b.root}: {len(b.node_ids)} nodes, {len(b.events)} events")
    return 0


def _cmd_replay(a: argparse.Namespace) -> int:
    from .replay import parse_broker, replay_many

    hub, trigger = _load_replay_config(a.config)
    broker = parse_broker(a.broker) if a.broker else None
    results = replay_many(a.bundles, a.out, broker=broker, mqtt=a.mqtt, hub_overrides=hub, trigger=trigger,
                          show_progress=not a.no_progress)
    for r in results:
        print(f"{r.name}: {len(r.detections)} detections, {len(r.shots())} shots, "
              f"{len(r.final_incidents())} incidents ({r.mode}, {r.wall_s:.1f} s)")
    print(f"written to {a.out}")
    return 0


def _replay_dirs(paths: list[str]) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if (p / "run.json").exists():
            out.append(p)
        else:
            out += sorted(q.parent for q in p.rglob("run.json"))
    if not out:
        raise ValueError(f"no replay output (run.json) under {paths}")
    return out


def _cmd_evaluate(a: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .evaluate import EvalSettings, evaluate, load_run, write_report

    runs = [load_run(d) for d in tqdm(_replay_dirs(a.replays), desc="load", unit="replay",
                                      disable=a.no_progress)]
    ev = evaluate(runs, EvalSettings(time_gate_s=a.time_gate_s, arrival_gate_s=a.arrival_gate_s,
                                     within_m=a.within_m))
    path = write_report(ev, a.out, a.title)
    s = ev.summary()
    print(f"{s['events']} events, {s['shots']} shots ({s['matched_shots']} matched, {s['false_shots']} false); "
          f"located {s['shots_located_pct']:.1f} %; 2-D error median {s['error_2d_m']['p50']:.2f} m, "
          f"p90 {s['error_2d_m']['p90']:.2f} m")
    print(f"report: {path}")
    return 0


def _observations(replays: list[str], gate_s: float):
    from .evaluate import load_run
    from .solvers import arrivals_at_known_events

    runs = [load_run(d) for d in _replay_dirs(replays)]
    obs = []
    for r in runs:
        got = arrivals_at_known_events(r.bundle, r.detections, gate_s)
        # Bundles are independent problems: keep event ids unique across them.
        obs += [type(o)(o.node_id, f"{r.name}/{o.event_id}", o.t_ns, o.node_enu_m, o.event_enu_m, o.event_time_ns)
                for o in got]
    return runs, obs


def _cmd_clock(a: argparse.Namespace) -> int:
    from .solvers import self_calibrate_clocks, solve_clock_offsets

    if a.self_calibrate:
        from .evaluate import load_run

        runs = [load_run(d) for d in _replay_dirs(a.replays)]
        if len(runs) != 1:
            raise ValueError("self-calibration works on one deployment: give one replay folder")
        r = runs[0]
        by_id = {d.detection_id: d.onset_time_ns for d in r.detections}
        picks = {s.shot.shot_id: {x.node_id: by_id[x.detection_id] for x in s.shot.residuals
                                  if x.used and x.detection_id in by_id} for s in r.shots}
        start = {s.shot.shot_id: s.enu_m for s in r.shots}
        res = self_calibrate_clocks(picks, r.bundle.node_enu_m(), start, r.bundle.speed_of_sound_mps,
                                    source_height_m=a.source_height_m)
    else:
        runs, obs = _observations(a.replays, a.gate_s)
        res = solve_clock_offsets(obs, runs[0].bundle.speed_of_sound_mps, use_event_times=not a.unknown_times)
    return _written(res, a.out)


def _written(res, out: str) -> int:
    patch, report = res.write(out)
    print(Path(report).read_text(encoding="utf-8").split("## Provenance")[0].rstrip())
    print(f"\npatch: {patch}\nreport: {report}")
    return 0


def _cmd_positions(a: argparse.Namespace) -> int:
    from .replay import ReplayFrame
    from .solvers import refine_positions

    runs, obs = _observations(a.replays, a.gate_s)
    b = runs[0].bundle
    frame = ReplayFrame(b)
    res = refine_positions(obs, b.speed_of_sound_mps, to_wgs84=None if frame.local else frame.to_wgs84)
    return _written(res, a.out)


def _cmd_speed(a: argparse.Namespace) -> int:
    from .solvers import solve_speed_of_sound

    _, obs = _observations(a.replays, a.gate_s)
    return _written(solve_speed_of_sound(obs), a.out)


def _cmd_threshold(a: argparse.Namespace) -> int:
    from .bundle import Bundle
    from .solvers import solve_trigger_thresholds

    nodes = {}
    for p in a.bundles:
        b = Bundle.load(p)
        ee, ne, c = b.event_enu_m(), b.node_enu_m(), b.speed_of_sound_mps
        for nid in b.node_ids:
            x, fs = b.read_audio(nid)
            node = b.node(nid)
            ev = [((e.time_ns - node.start_time_ns) / 1e9 + float(((ne[nid] - ee[e.event_id]) ** 2).sum()) ** 0.5 / c)
                  * fs for e in b.events]
            key = nid if nid not in nodes else f"{nid}@{b.root.name}"
            nodes[key] = (x, fs, ev)
    res = solve_trigger_thresholds(nodes, max_false_per_min=a.max_false_per_min, guard_s=a.guard_s)
    return _written(res, a.out)


def _cmd_mic(a: argparse.Namespace) -> int:
    import soundfile as sf

    from .solvers import solve_mic_level

    x, fs = sf.read(a.recording, dtype="float64", always_2d=True)
    res = solve_mic_level(x[:, a.channel], int(fs), calibrator_spl_db=a.spl_db, calibrator_hz=a.freq_hz,
                          node_id=a.node_id)
    return _written(res, a.out)


def _cmd_classifier_op(a: argparse.Namespace) -> int:
    from .solvers import solve_classifier_operating_point

    scores, labels = [], []
    with open(a.scores, newline="", encoding="utf-8") as f:
        for i, row in enumerate(csv.DictReader(f), start=2):
            try:
                scores.append(float(row["score"]))
                labels.append(row["label"].strip().lower() in ("1", "true", "gunshot", "yes"))
            except (KeyError, ValueError) as exc:
                raise ValueError(f"{a.scores}:{i}: needs columns score (0-1) and label ({exc})") from None
    res = solve_classifier_operating_point(scores, labels, a.negative_hours, max_false_per_hour=a.max_false_per_hour)
    return _written(res, a.out)


def _cmd_eval_classifier(a: argparse.Namespace, rest: list[str]) -> int:
    try:
        from .classifier_eval import main as eval_main  # written by the classifier work; optional
    except ImportError as exc:
        print(f"shotline-calibrate eval-classifier: not available in this installation ({exc})", file=sys.stderr)
        return 2
    return int(eval_main(rest) or 0)


def _cmd_export_reviewed(a: argparse.Namespace, rest: list[str]) -> int:
    from shotline.hub.web.export_dataset import main as export_main

    return int(export_main(rest) or 0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shotline-calibrate",
                                description="Replay, evaluate and calibrate Shotline from recordings.")
    p.add_argument("--version", action="version", version=f"shotline {package_version()}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="cmd", required=True)

    im = sub.add_parser("import", help="recordings -> recording bundles")
    im.add_argument("kind", choices=["pittsburgh", "smj0", "csv"],
                    help="pittsburgh: live-fire layout; smj0: WAV with smj0 chunks; csv: nodes.csv + audio")
    im.add_argument("src", help="data folder (pittsburgh, smj0) or nodes.csv")
    im.add_argument("out", help="output folder")
    im.add_argument("--events", help="csv: events.csv with ground truth")
    im.add_argument("--temperature-c", type=float, help="csv: air temperature, °C (required)")
    im.add_argument("--origin", help="csv: LAT,LON,ALT origin of local e_m/n_m columns")

    rp = sub.add_parser("replay", help="run the sensor and hub code over bundles")
    rp.add_argument("bundles", nargs="+", help="bundle folders")
    rp.add_argument("--out", required=True, help="output folder (one subfolder per bundle)")
    rp.add_argument("--broker", help="HOST:PORT of an MQTT broker (else in process)")
    rp.add_argument("--mqtt", action="store_true", help="over MQTT through an embedded broker")
    rp.add_argument("--config", help="replay.toml with [hub] and [trigger] overrides")
    rp.add_argument("--no-progress", action="store_true")

    ev = sub.add_parser("evaluate", help="match located shots to ground truth; HTML report")
    ev.add_argument("replays", nargs="+", help="replay output folders (or a folder holding them)")
    ev.add_argument("--out", required=True)
    ev.add_argument("--time-gate-s", type=float, default=0.15, help="shot-event emission time gate, s")
    ev.add_argument("--arrival-gate-s", type=float, default=0.03, help="detection-arrival gate, s")
    ev.add_argument("--within-m", type=float, default=15.0, help="error threshold of the headline figure, m")
    ev.add_argument("--title", default="Shotline evaluation")
    ev.add_argument("--no-progress", action="store_true")

    def solver(name: str, help_: str) -> argparse.ArgumentParser:
        s = sub.add_parser(name, help=help_)
        s.add_argument("--out", required=True, help="folder for the patch and the report")
        return s

    ck = solver("clock", "per-node clock offsets (known event positions, or --self-calibrate)")
    ck.add_argument("replays", nargs="+")
    ck.add_argument("--gate-s", type=float, default=0.03)
    ck.add_argument("--unknown-times", action="store_true", help="event emission times are not known")
    ck.add_argument("--self-calibrate", action="store_true", help="event positions unknown: use the hub's shots")
    ck.add_argument("--source-height-m", type=float, default=0.0)
    ps = solver("positions", "refine node positions from events at known positions")
    ps.add_argument("replays", nargs="+")
    ps.add_argument("--gate-s", type=float, default=0.03)
    sp = solver("speed-of-sound", "speed of sound (temperature) from events at known positions")
    sp.add_argument("replays", nargs="+")
    sp.add_argument("--gate-s", type=float, default=0.03)
    th = solver("threshold", "per-node trigger threshold from background noise")
    th.add_argument("bundles", nargs="+")
    th.add_argument("--max-false-per-min", type=float, default=1.0)
    th.add_argument("--guard-s", type=float, default=0.5, help="audio after a known arrival that is not background")
    mc = solver("mic-level", "microphone calibration constant from a 94 dB SPL 1 kHz calibrator recording")
    mc.add_argument("recording")
    mc.add_argument("--spl-db", type=float, default=94.0)
    mc.add_argument("--freq-hz", type=float, default=1000.0)
    mc.add_argument("--channel", type=int, default=0)
    mc.add_argument("--node-id")
    co = solver("classifier-op", "classifier operating point from an ROC for a target false-alarm rate")
    co.add_argument("scores", help="CSV with columns score, label (gunshot/1 or 0)")
    co.add_argument("--negative-hours", type=float, required=True, help="node-hours behind the negatives")
    co.add_argument("--max-false-per-hour", type=float, default=0.1)

    sub.add_parser("eval-classifier", help="evaluate the classifier (arguments passed through)",
                   add_help=False)
    sub.add_parser("export-reviewed", help="operator-reviewed clips from the hub store -> labelled data set "
                   "for retraining (arguments passed through)", add_help=False)
    return p


_COMMANDS = {
    "import": _cmd_import, "replay": _cmd_replay, "evaluate": _cmd_evaluate, "clock": _cmd_clock,
    "positions": _cmd_positions, "speed-of-sound": _cmd_speed, "threshold": _cmd_threshold,
    "mic-level": _cmd_mic, "classifier-op": _cmd_classifier_op,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = build_parser()
    for passthrough, run in (("eval-classifier", _cmd_eval_classifier), ("export-reviewed", _cmd_export_reviewed)):
        if passthrough in argv:
            i = argv.index(passthrough)
            a = p.parse_args(argv[: i + 1])
            _logging(a)
            return run(a, argv[i + 1:])
    a = p.parse_args(argv)
    _logging(a)
    from .bundle import BundleError

    try:
        return _COMMANDS[a.cmd](a)
    except (BundleError, ValueError, FileNotFoundError) as exc:
        print(f"shotline-calibrate {a.cmd}: {exc}", file=sys.stderr)
        return 2


def _logging(a: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":
    raise SystemExit(main())
