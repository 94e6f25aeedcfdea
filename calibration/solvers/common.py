"""What every calibration solver shares: observations from replays, TOML patches, short reports.

A solver returns a :class:`SolverResult`: the values it found (with their
uncertainty), a *config patch* (nested dict that mirrors the TOML file it
targets, written with a header naming that file) and a short Markdown report
with the figures a technician checks before applying the patch.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..bundle import Bundle

__all__ = ["Observation", "SolverResult", "arrivals_at_known_events", "to_toml"]


@dataclass(frozen=True)
class Observation:
    """One onset of one event at one node: stamped time (ns) and where node and event are (m)."""

    node_id: str
    event_id: str
    t_ns: int
    node_enu_m: tuple[float, float, float]
    event_enu_m: tuple[float, float, float] | None
    event_time_ns: int | None


def arrivals_at_known_events(bundle: Bundle, detections, gate_s: float = 0.03) -> list[Observation]:
    """Pair each (node, event) of ``bundle`` with the node's detection nearest the predicted arrival.

    The prediction uses the event's position and time and the bundle's speed of
    sound; pairs farther than ``gate_s`` are left out (not heard, or masked).
    """
    ne, ee, c = bundle.node_enu_m(), bundle.event_enu_m(), bundle.speed_of_sound_mps
    by_node: dict[str, np.ndarray] = {}
    for nid in bundle.node_ids:
        by_node[nid] = np.array(sorted(d.onset_time_ns for d in detections if d.node_id == nid), np.int64)
    obs = []
    for ev in bundle.events:
        for nid in bundle.node_ids:
            ts = by_node[nid]
            if not len(ts):
                continue
            pred = ev.time_ns + np.linalg.norm(ne[nid] - ee[ev.event_id]) / c * 1e9
            k = int(np.argmin(np.abs(ts - pred)))
            if abs(ts[k] - pred) <= gate_s * 1e9:
                obs.append(Observation(nid, ev.event_id, int(ts[k]), tuple(ne[nid]), tuple(ee[ev.event_id]),
                                       ev.time_ns))
    return obs


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"cannot write {v} to TOML")
        return repr(round(v, 9))
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"unsupported TOML value {v!r}")


_BARE = re.compile(r"[A-Za-z0-9_-]+")


def _key(k: str) -> str:
    return k if _BARE.fullmatch(k) else _toml_value(k)


def to_toml(data: dict[str, Any], header: str = "") -> str:
    """Nested dict -> TOML text (tables for nested dicts), with ``header`` as leading comments."""
    lines = [f"# {h}" if h else "#" for h in header.splitlines()] if header else []

    def emit(prefix: list[str], table: dict[str, Any]) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
        subs = {k: v for k, v in table.items() if isinstance(v, dict)}
        if prefix and (scalars or not subs):
            lines.append("")
            lines.append("[" + ".".join(_key(p) for p in prefix) + "]")
        for k, v in scalars.items():
            lines.append(f"{_key(k)} = {_toml_value(v)}")
        for k, v in subs.items():
            emit([*prefix, k], v)

    emit([], data)
    return "\n".join(lines).lstrip("\n") + "\n"


@dataclass
class SolverResult:
    """The outcome of one calibration solver."""

    solver: str
    target: str
    """The file the patch applies to (``hub.toml``, ``node.toml`` of each node, the bundle manifest)."""
    values: dict[str, Any]
    patch: dict[str, Any]
    report_lines: list[str] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)

    def write(self, out_dir: str | Path) -> tuple[Path, Path]:
        """Write ``<solver>.patch.toml`` and ``<solver>.report.md``; return their paths."""
        from ..report import software_versions

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        prov = {**software_versions(), **self.provenance,
                "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        head = (f"Shotline calibration patch: {self.solver}\nApplies to: {self.target}\n"
                + "\n".join(f"{k}: {v}" for k, v in prov.items()))
        patch_p = out / f"{self.solver}.patch.toml"
        patch_p.write_text(to_toml(self.patch, head), encoding="utf-8")
        rep = [f"# Calibration: {self.solver}", "", f"Patch: `{patch_p.name}` (applies to {self.target}).", "",
               *self.report_lines, "", "## Provenance", "",
               *(f"- {k}: {v}" for k, v in prov.items()), ""]
        rep_p = out / f"{self.solver}.report.md"
        rep_p.write_text("\n".join(rep), encoding="utf-8")
        return patch_p, rep_p
