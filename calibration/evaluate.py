"""Evaluation of replays against ground truth: detection recall/precision, location error, residuals.

Inputs are replay output folders (``shotline-calibrate replay``: ``run.json``,
``detections.jsonl``, ``shots.jsonl``) or :class:`~shotline.calibration.replay.ReplayResult`
objects; ground truth comes from each replay's bundle.

Definitions (all explicit, reported with the figures):

* **Shot matching.** Within one bundle, located shots and true events are paired
  one to one (Hungarian assignment on 2-D distance) among pairs whose emission
  times differ by at most ``time_gate_s``; a true event with no pair is
  *missed*, a shot with no pair is *false*. Matching is by time only, not by
  distance, so a badly located shot counts as a large error rather than as a
  miss plus a false shot.
* **Location error**: 2-D (east/north) and 3-D distance, metres, between the
  matched shot and the event position, in the bundle's frame.
* **Detections**: a detection is a *hit* for (node, event) when its onset is
  within ``arrival_gate_s`` of the predicted arrival (the simulator's stamped
  direct arrival when the bundle has one, else event time + distance / c). Recall
  per node = events heard / events; precision per node = detections that are a
  hit of some event / all detections of that node (on real recordings other
  impulses — echoes, traffic — count against precision).
* **Timing residuals**: per node, (a) the hub's own residuals of that node in the
  shots it was used in (observed - predicted from the located position), and
  (b) detection minus the arrival predicted from the TRUE position (clock offset,
  pick bias and position/speed-of-sound errors together).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from scipy.optimize import linear_sum_assignment

from shotline.core import messages as m

from .bundle import Bundle
from .replay import ReplayFrame, ShotRecord

log = logging.getLogger(__name__)

__all__ = ["Evaluation", "EvalSettings", "ReplayRun", "evaluate", "load_run", "write_report"]


@dataclass(frozen=True)
class EvalSettings:
    """Matching gates (seconds) and the error threshold of the headline figure (metres)."""

    time_gate_s: float = 0.15
    arrival_gate_s: float = 0.03
    within_m: float = 15.0


@dataclass
class ReplayRun:
    """One replay's outputs, with its bundle."""

    name: str
    bundle: Bundle
    detections: list[m.Detection]
    shots: list[ShotRecord]
    run: dict[str, Any] = field(default_factory=dict)


def load_run(folder: str | Path, bundle: str | Path | None = None) -> ReplayRun:
    """Read a replay output folder; the bundle path comes from ``run.json`` unless given."""
    folder = Path(folder)
    run = msgspec.json.decode((folder / "run.json").read_bytes())
    bpath = bundle or run.get("bundle")
    if not bpath:
        raise ValueError(f"{folder}/run.json names no bundle; pass it explicitly")
    dets = [msgspec.json.decode(line, type=m.Detection)
            for line in (folder / "detections.jsonl").read_bytes().splitlines() if line.strip()]
    shots = [msgspec.json.decode(line, type=ShotRecord)
             for line in (folder / "shots.jsonl").read_bytes().splitlines() if line.strip()]
    return ReplayRun(run.get("bundle_name", folder.name), Bundle.load(bpath), dets, shots, run)


def from_result(res) -> ReplayRun:
    """A :class:`ReplayRun` from an in-memory ReplayResult."""
    return ReplayRun(res.name, res.bundle, list(res.detections), res.shots(), {"mode": res.mode})


@dataclass
class ShotEval:
    bundle: str
    shot_id: str
    event_id: str | None
    time_ns: int
    enu_m: list[float]
    n_nodes: int
    rms_residual_s: float
    cep95_m: float
    error_2d_m: float | None = None
    error_3d_m: float | None = None
    dt_s: float | None = None


@dataclass
class Evaluation:
    """Every figure of one evaluation (JSON-serialisable through :meth:`to_dict`)."""

    settings: EvalSettings
    shots: list[ShotEval] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    nodes: list[dict[str, Any]] = field(default_factory=list)
    hub_residuals_s: dict[str, list[float]] = field(default_factory=dict)
    truth_residuals_s: dict[str, list[float]] = field(default_factory=dict)
    maps: list[dict[str, Any]] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)

    # ----------------------------------------------------------------- figures
    def errors_2d(self) -> np.ndarray:
        return np.array([s.error_2d_m for s in self.shots if s.error_2d_m is not None])

    def errors_3d(self) -> np.ndarray:
        return np.array([s.error_3d_m for s in self.shots if s.error_3d_m is not None])

    def summary(self) -> dict[str, Any]:
        e2, e3 = self.errors_2d(), self.errors_3d()
        n_events = len(self.events)
        matched = len(e2)
        false = sum(1 for s in self.shots if s.event_id is None)
        within = float(np.mean(e2 <= self.settings.within_m) * 100) if matched else float("nan")

        def pct(a: np.ndarray, q: float) -> float:
            return float(np.percentile(a, q)) if len(a) else float("nan")

        return {
            "bundles": len({s["bundle"] for s in self.events} | {s.bundle for s in self.shots}),
            "events": n_events,
            "shots": len(self.shots),
            "matched_shots": matched,
            "false_shots": false,
            "shots_located_pct": 100.0 * matched / n_events if n_events else float("nan"),
            "shot_precision_pct": 100.0 * matched / len(self.shots) if self.shots else float("nan"),
            f"within_{self.settings.within_m:g}m_pct_of_located": within,
            f"within_{self.settings.within_m:g}m_pct_of_events":
                100.0 * float(np.sum(e2 <= self.settings.within_m)) / n_events if n_events else float("nan"),
            "error_2d_m": {f"p{q}": pct(e2, q) for q in (50, 68, 90, 95, 100)},
            "error_3d_m": {f"p{q}": pct(e3, q) for q in (50, 68, 90, 95, 100)},
            "detection_recall_pct": _mean_pct([e["nodes_heard"] for e in self.events],
                                              [e["nodes"] for e in self.events]),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings.__dict__,
            "summary": self.summary(),
            "shots": [s.__dict__ for s in self.shots],
            "events": self.events,
            "nodes": self.nodes,
            "provenance": self.provenance,
        }


def _mean_pct(num: list[int], den: list[int]) -> float:
    return 100.0 * sum(num) / sum(den) if sum(den) else float("nan")


def _predicted_arrivals(b: Bundle) -> dict[tuple[str, str], int]:
    """(node_id, event_id) -> predicted stamped arrival (ns)."""
    out: dict[tuple[str, str], int] = {}
    for a in b.arrivals:
        if a.path == "direct":
            out[(a.node_id, a.event_id)] = a.stamped_time_ns
    ne, ee, c = b.node_enu_m(), b.event_enu_m(), b.speed_of_sound_mps
    for ev in b.events:
        for nid in b.node_ids:
            out.setdefault((nid, ev.event_id), ev.time_ns + int(round(np.linalg.norm(ne[nid] - ee[ev.event_id]) / c * 1e9)))
    return out


def evaluate(runs: list[ReplayRun], settings: EvalSettings | None = None) -> Evaluation:
    """Match shots and detections of ``runs`` to their bundles' ground truth."""
    st = settings or EvalSettings()
    ev_out = Evaluation(st)
    node_stats: dict[tuple[str, str], dict[str, int]] = {}
    for run in runs:
        b = run.bundle
        ee = b.event_enu_m()
        events = list(b.events)
        # ---- shots <-> events (time-gated, 2-D distance assignment)
        shots = run.shots
        cost = np.full((len(shots), len(events)), 1e12)
        for i, s in enumerate(shots):
            for j, e in enumerate(events):
                if abs(s.shot.time_ns - e.time_ns) <= st.time_gate_s * 1e9:
                    cost[i, j] = float(np.hypot(*(np.array(s.enu_m[:2]) - ee[e.event_id][:2])))
        pairs = {}
        if shots and events:
            rows, cols = linear_sum_assignment(cost)
            pairs = {i: j for i, j in zip(rows, cols, strict=True) if cost[i, j] < 1e12}
        matched_events = set()
        for i, s in enumerate(shots):
            se = ShotEval(run.name, s.shot.shot_id, None, s.shot.time_ns, s.enu_m, s.shot.n_nodes,
                          s.shot.rms_residual_s, s.shot.cep95_m)
            if i in pairs:
                e = events[pairs[i]]
                d = np.array(s.enu_m) - ee[e.event_id]
                se.event_id = e.event_id
                se.error_2d_m = float(np.hypot(d[0], d[1]))
                se.error_3d_m = float(np.linalg.norm(d))
                se.dt_s = (s.shot.time_ns - e.time_ns) / 1e9
                matched_events.add(e.event_id)
            ev_out.shots.append(se)
            for r in s.shot.residuals:
                if r.used:
                    ev_out.hub_residuals_s.setdefault(r.node_id, []).append(r.residual_s)
        # ---- detections <-> predicted arrivals
        pred = _predicted_arrivals(b)
        by_node: dict[str, np.ndarray] = defaultdict(lambda: np.array([], dtype=np.int64))
        for nid in b.node_ids:
            by_node[nid] = np.array(sorted(d.onset_time_ns for d in run.detections if d.node_id == nid), dtype=np.int64)
        hit_dets: dict[str, set[int]] = defaultdict(set)
        gate = int(st.arrival_gate_s * 1e9)
        for e in events:
            heard = 0
            for nid in b.node_ids:
                ts = by_node[nid]
                if not len(ts):
                    continue
                t = pred[(nid, e.event_id)]
                k = int(np.argmin(np.abs(ts - t)))
                if abs(ts[k] - t) <= gate:
                    heard += 1
                    hit_dets[nid].add(k)
                    ev_out.truth_residuals_s.setdefault(nid, []).append((ts[k] - t) / 1e9)
            shot = next((s for s in ev_out.shots if s.bundle == run.name and s.event_id == e.event_id), None)
            ev_out.events.append({
                "bundle": run.name, "event_id": e.event_id, "kind": e.kind, "nodes": len(b.node_ids),
                "nodes_heard": heard, "located": e.event_id in matched_events,
                "error_2d_m": shot.error_2d_m if shot else None,
                "n_nodes_used": shot.n_nodes if shot else None,
            })
        for nid in b.node_ids:
            s = node_stats.setdefault((run.name, nid), {"events": 0, "heard": 0, "detections": 0, "hits": 0})
            s["events"] += len(events)
            s["heard"] += sum(1 for e in events if _heard(by_node[nid], pred[(nid, e.event_id)], gate))
            s["detections"] += len(by_node[nid])
            s["hits"] += len(hit_dets[nid])
        ev_out.maps.append(_map_data(run, b))
    # ---- per node (node ids are per bundle; the same serial in many bundles is aggregated)
    agg: dict[str, dict[str, int]] = defaultdict(lambda: {"events": 0, "heard": 0, "detections": 0, "hits": 0})
    for (_, nid), s in node_stats.items():
        for k, v in s.items():
            agg[nid][k] += v
    for nid, s in sorted(agg.items()):
        hub = np.array(ev_out.hub_residuals_s.get(nid, []))
        tru = np.array(ev_out.truth_residuals_s.get(nid, []))
        ev_out.nodes.append({
            "node_id": nid,
            "events": s["events"], "heard": s["heard"],
            "recall_pct": 100.0 * s["heard"] / s["events"] if s["events"] else None,
            "detections": s["detections"],
            "precision_pct": 100.0 * s["hits"] / s["detections"] if s["detections"] else None,
            "hub_residual_n": int(len(hub)),
            "hub_residual_mean_ms": float(hub.mean() * 1e3) if len(hub) else None,
            "hub_residual_sd_ms": float(hub.std() * 1e3) if len(hub) > 1 else None,
            "truth_residual_median_ms": float(np.median(tru) * 1e3) if len(tru) else None,
            "truth_residual_sd_ms": float(tru.std() * 1e3) if len(tru) > 1 else None,
        })
    ev_out.provenance = _provenance(runs, st)
    return ev_out


def _heard(ts: np.ndarray, t: int, gate: int) -> bool:
    return bool(len(ts)) and bool(np.min(np.abs(ts - t)) <= gate)


def _map_data(run: ReplayRun, b: Bundle) -> dict[str, Any]:
    return {
        "bundle": run.name,
        "nodes": {k: v.tolist() for k, v in b.node_enu_m().items()},
        "events": {k: v.tolist() for k, v in b.event_enu_m().items()},
        "shots": [s.enu_m for s in run.shots],
        "local": ReplayFrame(b).local,
    }


def _provenance(runs: list[ReplayRun], st: EvalSettings) -> dict[str, Any]:
    from .report import software_versions

    return {
        "software": software_versions(),
        "settings": st.__dict__,
        "replays": {
            r.name: {k: r.run.get(k) for k in ("mode", "manifest_sha256", "hub_config_hash",
                                               "trigger_config_hash", "model_sha256", "shotline_version")}
            for r in runs
        },
        "seed": None,  # evaluation and replay are deterministic; simulated bundles carry their seed
        "bundle_seeds": {r.name: r.bundle.manifest.provenance.get("seed") for r in runs},
    }


# --------------------------------------------------------------------------- report
def write_report(ev: Evaluation, out_dir: str | Path, title: str = "Shotline evaluation") -> Path:
    """Write ``evaluation.json``, ``shots.csv`` and the self-contained ``report.html`` into ``out_dir``."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .report import HtmlReport, provenance_block

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    d = ev.to_dict()
    (out / "evaluation.json").write_bytes(msgspec.json.format(msgspec.json.encode(_finite(d)), indent=2) + b"\n")
    with open(out / "shots.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["bundle", "shot_id", "event_id", "time_ns", "east_m", "north_m", "up_m", "n_nodes",
                    "rms_residual_s", "cep95_m", "error_2d_m", "error_3d_m", "dt_s"])
        for s in ev.shots:
            w.writerow([s.bundle, s.shot_id, s.event_id, s.time_ns, *s.enu_m, s.n_nodes, s.rms_residual_s,
                        s.cep95_m, s.error_2d_m, s.error_3d_m, s.dt_s])
    summ = ev.summary()
    rep = HtmlReport(title)
    rep.heading("Summary")
    rep.key_values(provenance_block({k: v for k, v in summ.items()}))
    rep.paragraph(
        f"Shots are matched to true events one to one within ±{ev.settings.time_gate_s:g} s of the "
        f"emission time (by time, not distance); detections to predicted arrivals within "
        f"±{ev.settings.arrival_gate_s:g} s. Errors in metres in each bundle's frame.")
    e2, e3 = ev.errors_2d(), ev.errors_3d()
    if len(e2):
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for arr, lab in ((e2, "2-D"), (e3, "3-D")):
            x = np.sort(arr)
            ax.step(x, np.arange(1, len(x) + 1) / len(x) * 100, where="post", label=f"{lab} (n={len(x)})")
        ax.axvline(ev.settings.within_m, color="grey", ls="--", lw=1)
        ax.set_xscale("log" if x.max() / max(x.min(), 1e-3) > 50 else "linear")
        ax.set_xlabel("location error (m)")
        ax.set_ylabel("shots with smaller error (%)")
        ax.grid(alpha=0.3)
        ax.legend()
        rep.figure(fig, f"Cumulative distribution of location error; dashed: {ev.settings.within_m:g} m.")
    _map_figures(rep, ev, plt)
    _residual_figure(rep, ev, plt)
    rep.heading("Per node")
    cols = ["node_id", "events", "heard", "recall_pct", "detections", "precision_pct", "hub_residual_n",
            "hub_residual_mean_ms", "hub_residual_sd_ms", "truth_residual_median_ms", "truth_residual_sd_ms"]
    rep.table(cols, [[n[c] for c in cols] for n in ev.nodes])
    rep.heading("Per event")
    cols = ["bundle", "event_id", "kind", "nodes", "nodes_heard", "located", "n_nodes_used", "error_2d_m"]
    rep.table(cols, [[e[c] for c in cols] for e in ev.events])
    rep.heading("Per shot")
    rep.table(["bundle", "shot", "event", "nodes", "rms residual (ms)", "CEP95 (m)", "2-D error (m)", "3-D error (m)"],
              [[s.bundle, s.shot_id, s.event_id or "false", s.n_nodes, s.rms_residual_s * 1e3, s.cep95_m,
                s.error_2d_m, s.error_3d_m] for s in ev.shots])
    rep.heading("Provenance")
    rep.key_values(provenance_block(ev.provenance))
    path = out / "report.html"
    path.write_text(rep.render(), encoding="utf-8")
    return path


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _map_figures(rep, ev: Evaluation, plt, max_maps: int = 8) -> None:
    """One map per group of bundles sharing the same node layout (a firing position, a site)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for mp in ev.maps:
        key = tuple(sorted((k, round(v[0]), round(v[1])) for k, v in mp["nodes"].items()))
        groups[key].append(mp)
    if not groups:
        return
    rep.heading("Maps")
    for gi, maps in enumerate(list(groups.values())[:max_maps]):
        fig, ax = plt.subplots(figsize=(6.5, 6))
        nodes = maps[0]["nodes"]
        ax.scatter([v[0] for v in nodes.values()], [v[1] for v in nodes.values()], marker="^", s=60,
                   color="tab:blue", label="nodes", zorder=3)
        for k, v in nodes.items():
            ax.annotate(k[-4:], (v[0], v[1]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        tx = [v for mp in maps for v in mp["events"].values()]
        sx = [v for mp in maps for v in mp["shots"]]
        if tx:
            ax.scatter([v[0] for v in tx], [v[1] for v in tx], marker="*", s=150, color="tab:green",
                       label="truth", zorder=4)
        if sx:
            ax.scatter([v[0] for v in sx], [v[1] for v in sx], marker="x", s=30, color="tab:red",
                       label="located shots", zorder=5)
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xlabel("east (m)")
        ax.set_ylabel("north (m)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        names = ", ".join(mp["bundle"] for mp in maps[:6]) + (" …" if len(maps) > 6 else "")
        frame = "local frame of the recordings" if maps[0]["local"] else "ENU metres around the bundle origin"
        rep.figure(fig, f"Map {gi + 1} ({frame}): {names}")


def _residual_figure(rep, ev: Evaluation, plt) -> None:
    data = [(k, np.array(v) * 1e3) for k, v in sorted(ev.hub_residuals_s.items()) if len(v)]
    truth = [(k, np.array(v) * 1e3) for k, v in sorted(ev.truth_residuals_s.items()) if len(v)]
    if not data and not truth:
        return
    rep.heading("Timing residuals")
    for title, series in (("hub residual: observed - predicted from the located shot (ms)", data),
                          ("detection - arrival predicted from the true position (ms)", truth)):
        if not series:
            continue
        n = len(series)
        cols = min(n, 4)
        rows = (n + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.2 * rows), squeeze=False)
        for ax, (k, v) in zip(axes.flat, series, strict=False):
            ax.hist(v, bins=min(30, max(5, len(v) // 2)), color="tab:purple", alpha=0.8)
            ax.set_title(f"{k} (n={len(v)}, median {np.median(v):.2f})", fontsize=8)
            ax.tick_params(labelsize=7)
        for ax in list(axes.flat)[n:]:
            ax.axis("off")
        fig.tight_layout()
        rep.figure(fig, "Per-node histogram: " + title)
