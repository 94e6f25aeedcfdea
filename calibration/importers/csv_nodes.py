"""Plain per-node audio files plus a CSV of node positions and start times.

``nodes.csv`` (header row required, one row per node; audio paths relative to the CSV):

| column | required | meaning |
| --- | --- | --- |
| ``node_id`` | yes | node id |
| ``audio`` | yes | audio file (any libsndfile format) |
| ``start_time_utc`` or ``start_time_ns`` | one of them | UTC of the first sample: ISO-8601 text, or integer ns |
| ``lat_deg``, ``lon_deg`` [, ``alt_m``] | or local | WGS84 position (degrees, metres) |
| ``e_m``, ``n_m`` [, ``u_m``] | or WGS84 | local east/north/up metres (purely local bundle) |
| ``full_scale_spl_db`` | no | microphone calibration (dB SPL at full scale) |
| ``channel`` | no | channel of the file, from 0 |

An optional ``events.csv`` of ground truth uses ``event_id``, ``kind``
(default ``gunshot``), ``time_utc`` or ``time_ns`` and the same position
columns. An empty cell means "not given".
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..bundle import Bundle, Environment, EventEntry, Manifest, NodeEntry, Wgs84Position
from .common import RecordingImportError, copy_audio, import_provenance, iso_to_ns

__all__ = ["import_csv"]

_NODE_COLS = {"node_id", "audio", "start_time_utc", "start_time_ns", "lat_deg", "lon_deg", "alt_m",
              "e_m", "n_m", "u_m", "full_scale_spl_db", "channel"}
_EVENT_COLS = {"event_id", "kind", "time_utc", "time_ns", "lat_deg", "lon_deg", "alt_m", "e_m", "n_m", "u_m"}


def _rows(path: Path, allowed: set[str], required: set[str]) -> list[tuple[int, dict[str, str]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            cols = set(reader.fieldnames or [])
            unknown = cols - allowed
            if unknown:
                raise RecordingImportError(f"{path}: unknown column(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
            missing = required - cols
            if missing:
                raise RecordingImportError(f"{path}: missing column(s) {sorted(missing)}")
            return [(i + 2, {k: (v or "").strip() for k, v in r.items()}) for i, r in enumerate(reader)]
    except OSError as exc:
        raise RecordingImportError(f"{path}: {exc}") from None


def _num(row: dict[str, str], key: str, where: str, kind=float):
    v = row.get(key, "")
    if v == "":
        return None
    try:
        return kind(v)
    except ValueError:
        raise RecordingImportError(f"{where}: column {key!r}: {v!r} is not a number") from None


def _time(row: dict[str, str], iso_key: str, ns_key: str, where: str) -> int:
    if row.get(ns_key, ""):
        return _num(row, ns_key, where, int)
    if row.get(iso_key, ""):
        return iso_to_ns(row[iso_key], f"{where}: column {iso_key!r}")
    raise RecordingImportError(f"{where}: needs {iso_key!r} or {ns_key!r}")


def _position(row: dict[str, str], where: str) -> tuple[Wgs84Position | None, list[float] | None]:
    lat, lon = _num(row, "lat_deg", where), _num(row, "lon_deg", where)
    e, n = _num(row, "e_m", where), _num(row, "n_m", where)
    pos = enu = None
    if lat is not None or lon is not None:
        if lat is None or lon is None:
            raise RecordingImportError(f"{where}: give both lat_deg and lon_deg")
        try:
            pos = Wgs84Position(lat_deg=lat, lon_deg=lon, alt_m=_num(row, "alt_m", where) or 0.0)
        except ValueError as exc:
            raise RecordingImportError(f"{where}: {exc}") from None
    if e is not None or n is not None:
        if e is None or n is None:
            raise RecordingImportError(f"{where}: give both e_m and n_m")
        enu = [e, n, _num(row, "u_m", where) or 0.0]
    if pos is None and enu is None:
        raise RecordingImportError(f"{where}: needs lat_deg/lon_deg or e_m/n_m")
    return pos, enu


def import_csv(
    nodes_csv: str | Path,
    out_dir: str | Path,
    *,
    events_csv: str | Path | None = None,
    temperature_c: float,
    origin: tuple[float, float, float] | None = None,
) -> Bundle:
    """Import ``nodes_csv`` (and optionally ``events_csv``) into a bundle at ``out_dir``.

    ``temperature_c`` is required: the speed of sound is not a default to guess.
    ``origin`` (lat_deg, lon_deg, alt_m) anchors local ``e_m``/``n_m`` columns.
    """
    nodes_csv, out_dir = Path(nodes_csv), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    nodes = []
    for line, row in _rows(nodes_csv, _NODE_COLS, {"node_id", "audio"}):
        where = f"{nodes_csv}:{line}"
        audio = nodes_csv.parent / row["audio"]
        if not audio.exists():
            raise RecordingImportError(f"{where}: audio file {row['audio']!r} not found")
        fname, rate, _ = copy_audio(audio, out_dir, f"{row['node_id']}{audio.suffix.lower()}")
        pos, enu = _position(row, where)
        try:
            nodes.append(NodeEntry(
                node_id=row["node_id"], audio=fname, sample_rate_hz=rate,
                start_time_ns=_time(row, "start_time_utc", "start_time_ns", where),
                position=pos, enu_m=enu,
                full_scale_spl_db=_num(row, "full_scale_spl_db", where),
                channel=_num(row, "channel", where, int) or 0,
            ))
        except ValueError as exc:
            raise RecordingImportError(f"{where}: {exc}") from None
    if not nodes:
        raise RecordingImportError(f"{nodes_csv}: no node rows")
    events = []
    if events_csv is not None:
        events_csv = Path(events_csv)
        for line, row in _rows(events_csv, _EVENT_COLS, {"event_id"}):
            where = f"{events_csv}:{line}"
            pos, enu = _position(row, where)
            try:
                events.append(EventEntry(
                    event_id=row["event_id"], kind=row.get("kind") or "gunshot",  # type: ignore[arg-type]
                    time_ns=_time(row, "time_utc", "time_ns", where), position=pos, enu_m=enu))
            except ValueError as exc:
                raise RecordingImportError(f"{where}: {exc}") from None
    try:
        manifest = Manifest(
            origin=Wgs84Position(lat_deg=origin[0], lon_deg=origin[1], alt_m=origin[2]) if origin else None,
            nodes=nodes, events=events, environment=Environment(temperature_c=temperature_c),
            provenance=import_provenance("csv", nodes_csv),
        )
    except ValueError as exc:
        raise RecordingImportError(f"{nodes_csv}: {exc}") from None
    return Bundle(manifest, root=out_dir).write(out_dir)
