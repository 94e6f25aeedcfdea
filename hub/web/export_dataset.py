"""Export reviewed incidents' clips as a labelled data set for retraining the classifier.

::

    export-reviewed (--config hub.toml | --db hub.sqlite) --out DIR [--clips DIR] [--node-url N01=http://…]
                    [--since T] [--until T] [--dismissed-as other|skip] [--include-unused]

Writes ``DIR/clips/<detection_id>.flac`` (the clip as fetched, 24-bit),
``DIR/labels.csv`` (one row per clip) and ``DIR/manifest.json`` (counts,
source, version, time of export). The label of an incident is its latest
review: *confirm* keeps the system's class (``gunshot`` when it had none),
*relabel* gives the operator's class, *dismiss* gives ``--dismissed-as``
(default ``other``: a false alarm is a useful negative) or is skipped.

``labels.csv`` columns: ``file`` (relative to DIR), ``label``, ``onset_s``
(onset from the clip's first sample, s), ``sample_rate_hz``,
``detection_id``, ``node_id``, ``incident_id``, ``shot_id``, ``decision``,
``reviewer``, ``review_time_utc``, ``note``, ``system_class``, ``snr_db``,
``residual_s``, ``used``. :func:`read_dataset` reads it back; the
split unit for training is ``incident_id`` (all nodes of one event together).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shotline.core.timebase import ns_to_iso
from shotline.core.version import package_version

from .clips import ClipProvider, write_clip
from .reviews import LABELS

log = logging.getLogger(__name__)

COLUMNS = ("file", "label", "onset_s", "sample_rate_hz", "detection_id", "node_id", "incident_id", "shot_id",
           "decision", "reviewer", "review_time_utc", "note", "system_class", "snr_db", "residual_s", "used")
DEFAULT_BEFORE_S = 1.0
"""Assumed clip start before the onset when the clip does not carry its first-sample time (the node default)."""


@dataclass(frozen=True)
class LabelledClip:
    """One exported clip, read back by :func:`read_dataset`."""

    samples: np.ndarray
    sample_rate_hz: int
    onset_s: float
    label: str
    group: str
    detection_id: str
    node_id: str
    row: dict[str, str]


def label_for(decision: str, review_label: str | None, system_class: str, dismissed_as: str | None) -> str | None:
    """The training label of a reviewed incident (None: leave it out)."""
    if decision == "relabel":
        return review_label
    if decision == "confirm":
        return system_class if system_class in LABELS else "gunshot"
    return dismissed_as


def export(store: Any, clips: ClipProvider, out_dir: str | Path, *, since_ns: int | None = None,
           until_ns: int | None = None, dismissed_as: str | None = "other", include_unused: bool = False,
           source: str = "") -> dict[str, Any]:
    """Write the data set; return the manifest (also written to ``manifest.json``)."""
    out = Path(out_dir)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    rows_out: list[dict[str, Any]] = []
    missing: list[str] = []
    reviewed = store.list_incidents(since_ns=since_ns, until_ns=until_ns,
                                    review_states=["confirmed", "dismissed", "relabelled"], newest_first=False)
    for row in reviewed:
        rec = store.get_incident(row.incident.incident_id)
        if rec is None or not rec.reviews:
            continue
        rv = rec.reviews[-1]
        label = label_for(rv.decision, rv.label, rec.incident.event_class, dismissed_as)
        if label is None:
            continue
        dets = {d.detection.detection_id: d.detection for d in rec.detections}
        for shot in rec.incident.shots:
            for r in shot.residuals:
                if not r.used and not include_unused:
                    continue
                clip = clips.get(r.detection_id, r.node_id)
                if clip is None:
                    missing.append(r.detection_id)
                    continue
                det = dets.get(r.detection_id)
                if det is not None and clip.t0_ns is not None:
                    onset_s = (det.onset_time_ns - clip.t0_ns) / 1e9
                else:
                    onset_s = DEFAULT_BEFORE_S
                rel = f"clips/{r.detection_id}.flac"
                if clip.t0_ns is not None:
                    write_clip(out / rel, clip.samples, clip.sample_rate_hz, clip.t0_ns, r.detection_id)
                else:
                    import soundfile as sf

                    sf.write(out / rel, np.clip(clip.samples, -1, 1), clip.sample_rate_hz, format="FLAC",
                             subtype="PCM_24")
                rows_out.append({
                    "file": rel, "label": label, "onset_s": f"{onset_s:.6f}", "sample_rate_hz": clip.sample_rate_hz,
                    "detection_id": r.detection_id, "node_id": r.node_id, "incident_id": rec.incident.incident_id,
                    "shot_id": shot.shot_id, "decision": rv.decision, "reviewer": rv.reviewer,
                    "review_time_utc": ns_to_iso(rv.time_ns), "note": rv.note, "system_class": rec.incident.event_class,
                    "snr_db": f"{det.snr_db:.1f}" if det else "", "residual_s": f"{r.residual_s:.7f}",
                    "used": int(r.used),
                })
    with open(out / "labels.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows_out)
    counts: dict[str, int] = {}
    for r in rows_out:
        counts[r["label"]] = counts.get(r["label"], 0) + 1
    manifest = {
        "schema": "shotline.review_dataset/1",
        "shotline_version": package_version(),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": source,
        "licence": "recordings of this deployment: set by the operator of the deployment",
        "n_incidents": len({r["incident_id"] for r in rows_out}),
        "n_clips": len(rows_out),
        "labels": counts,
        "missing_clips": len(missing),
        "dismissed_as": dismissed_as,
        "group_column": "incident_id",
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    if missing:
        log.warning("%d clip(s) not found (pruned on the node or node unreachable), e.g. %s", len(missing), missing[0])
    return manifest


def read_dataset(path: str | Path) -> list[LabelledClip]:
    """Read a data set written by :func:`export` (for training and evaluation)."""
    import soundfile as sf

    root = Path(path)
    man = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    if man.get("schema") != "shotline.review_dataset/1":
        raise ValueError(f"{root}: not a review data set (schema {man.get('schema')!r})")
    out = []
    with open(root / "labels.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            x, fs = sf.read(root / row["file"], dtype="float32", always_2d=True)
            out.append(LabelledClip(x[:, 0], int(fs), float(row["onset_s"]), row["label"], row["incident_id"],
                                    row["detection_id"], row["node_id"], row))
    return out


def _parse_time(text: str | None) -> int | None:
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    from datetime import UTC, datetime

    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    t = t if t.tzinfo else t.replace(tzinfo=UTC)
    return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000


def main(argv: list[str] | None = None, prog: str = "shotline-calibrate export-reviewed") -> int:
    """CLI entry point; 0 on success, 1 when nothing could be exported, 2 on bad arguments or config."""
    from .clips import ChainClips, FolderClips, NodeHttpClips

    p = argparse.ArgumentParser(prog=prog, description="Export reviewed clips as a labelled data set.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="hub TOML config ([store] path and [web] clip settings)")
    src.add_argument("--db", help="store file (SQLite)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--clips", action="append", default=[], help="folder of clip files (repeatable)")
    p.add_argument("--node-url", action="append", default=[], metavar="NODE=URL", help="a node's clip server")
    p.add_argument("--since", help="ISO 8601 (naive = UTC) or integer ns")
    p.add_argument("--until", help="ISO 8601 (naive = UTC) or integer ns")
    p.add_argument("--dismissed-as", default="other", choices=[*LABELS, "skip"],
                   help="label of dismissed incidents (default other; skip leaves them out)")
    p.add_argument("--include-unused", action="store_true", help="also nodes whose pick the solution rejected")
    args = p.parse_args(argv)
    from shotline.hub.store import IncidentStore, StoreError

    providers: list[ClipProvider] = [FolderClips(c) for c in args.clips]
    urls: dict[str, str] = {}
    for item in args.node_url:
        node, sep, url = item.partition("=")
        if not sep or not url.startswith(("http://", "https://")):
            print(f"error: --node-url {item!r}: expected NODE=http://host:port", file=sys.stderr)
            return 2
        urls[node] = url
    db = args.db
    if args.config:
        from shotline.core.config import ConfigError, load_config

        from ..config import HubConfig
        from .server import clip_provider_for
        from .settings import resolve_paths

        try:
            cfg = load_config(args.config, HubConfig)
        except ConfigError as exc:
            print(f"config error: {exc}", file=sys.stderr)
            return 2
        db = cfg.store.path
        web = getattr(cfg, "web", None)
        if web is not None:
            providers.append(clip_provider_for(resolve_paths(web, Path(args.config).parent)))
    if urls:
        providers.append(NodeHttpClips(urls))
    if db == ":memory:":
        print("error: the hub's store is in memory (nothing to export); set [store] path", file=sys.stderr)
        return 2
    try:
        since, until = _parse_time(args.since), _parse_time(args.until)
    except ValueError as exc:
        print(f"error: --since/--until: {exc}", file=sys.stderr)
        return 2
    try:
        with IncidentStore(db, readonly=True) as store:
            man = export(store, ChainClips(providers), args.out, since_ns=since, until_ns=until,
                         dismissed_as=None if args.dismissed_as == "skip" else args.dismissed_as,
                         include_unused=args.include_unused, source=str(db))
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.out}: {man['n_clips']} clips from {man['n_incidents']} incidents "
          f"({', '.join(f'{k} {v}' for k, v in sorted(man['labels'].items())) or 'none'}); "
          f"{man['missing_clips']} clip(s) missing")
    return 0 if man["n_clips"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
