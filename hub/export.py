"""Incident listings for people and programs: time parsing, table, CSV, JSON and GeoJSON.

Used by ``shotline-hub incidents``. Times are accepted as RFC 3339 / ISO 8601
(``2026-07-04T21:00``, naive means UTC, ``Z`` or an offset allowed), as a
duration before now (``90s``, ``30m``, ``2h``, ``7d``), as ``now``, or as an
integer of nanoseconds since the epoch.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import msgspec

from shotline.core.timebase import now_ns

from .sinks import geojson
from .sinks.timefmt import iso_utc
from .store import IncidentRow

_DURATION = re.compile(r"^-?(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

CSV_COLUMNS = [
    "incident_id", "site", "state", "revision", "first_shot_utc", "last_shot_utc", "first_shot_ns",
    "last_shot_ns", "rounds", "lat_deg", "lon_deg", "alt_m", "cep95_m", "event_class", "automatic_fire",
    "review_state", "review_label", "n_shots", "version", "config_hash", "model_sha256",
]


def parse_time(text: str, now: int | None = None) -> int:
    """An instant as integer ns UTC from ISO 8601, a duration ago (``2h``), ``now`` or integer ns."""
    now = now_ns() if now is None else now
    t = text.strip()
    if t.lower() == "now":
        return now
    if re.fullmatch(r"\d{12,}", t):
        return int(t)
    mt = _DURATION.match(t.lower())
    if mt:
        return now - int(float(mt.group(1)) * _UNIT_S[mt.group(2)] * 1e9)
    try:
        dt = datetime.fromisoformat(t)
    except ValueError:
        raise ValueError(
            f"cannot read time {text!r}: give ISO 8601 (2026-07-04T21:00Z), a duration ago (30m, 2h, 7d), "
            "'now' or integer ns since the epoch"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def csv_rows(rows: Sequence[IncidentRow]) -> list[dict[str, Any]]:
    """One flat dict per incident (the :data:`CSV_COLUMNS`)."""
    out = []
    for r in rows:
        i = r.incident
        p = i.provenance
        out.append({
            "incident_id": i.incident_id, "site": i.site, "state": i.state, "revision": i.revision,
            "first_shot_utc": iso_utc(i.first_shot_ns, 6), "last_shot_utc": iso_utc(i.last_shot_ns, 6),
            "first_shot_ns": i.first_shot_ns, "last_shot_ns": i.last_shot_ns, "rounds": i.rounds,
            "lat_deg": f"{i.position.lat_deg:.7f}", "lon_deg": f"{i.position.lon_deg:.7f}",
            "alt_m": f"{i.position.alt_m:.2f}", "cep95_m": f"{i.cep95_m:.2f}", "event_class": i.event_class,
            "automatic_fire": str(i.automatic_fire).lower(), "review_state": r.review_state,
            "review_label": r.review_label or "", "n_shots": len(i.shots),
            "version": p.version if p else "", "config_hash": p.config_hash if p else "",
            "model_sha256": (p.model_sha256 or "") if p else "",
        })
    return out


def write_csv(rows: Sequence[IncidentRow], out: TextIO) -> None:
    """CSV (RFC 4180, header row) of incidents."""
    w = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\r\n")
    w.writeheader()
    w.writerows(csv_rows(rows))


def to_geojson(rows: Sequence[IncidentRow], with_shots: bool = False) -> dict[str, Any]:
    """An RFC 7946 FeatureCollection of incidents (with review state) and optionally their shots."""
    return geojson.feature_collection([(r.incident, r.review_state) for r in rows], with_shots=with_shots)


def to_json(rows: Sequence[IncidentRow]) -> list[dict[str, Any]]:
    """Each incident's latest message with the store's review state and first publication time."""
    return [
        {
            "incident": msgspec.to_builtins(r.incident),
            "first_published_ns": r.first_published_ns,
            "review_state": r.review_state,
            "review_label": r.review_label,
        }
        for r in rows
    ]


def format_table(rows: Sequence[IncidentRow]) -> str:
    """A fixed-width table for a terminal."""
    head = ["incident", "first shot (UTC)", "rounds", "lat", "lon", "CEP95 m", "class", "auto", "state", "review"]
    body = [
        [
            r.incident.incident_id, iso_utc(r.incident.first_shot_ns, 3), str(r.incident.rounds),
            f"{r.incident.position.lat_deg:.6f}", f"{r.incident.position.lon_deg:.6f}",
            f"{r.incident.cep95_m:.1f}", r.incident.event_class, "yes" if r.incident.automatic_fire else "",
            r.incident.state, r.review_state,
        ]
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=False)]
    buf = io.StringIO()
    for line in [head, *body]:
        buf.write("  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip() + "\n")
    buf.write(f"{len(rows)} incident(s)\n")
    return buf.getvalue()
