"""JSON views of stored incidents for the review page: list rows, detail, aligned waveforms.

Waveform alignment: a node's residual is observed minus predicted arrival,
so its predicted arrival is ``onset - residual`` = origin time + travel time.
Drawing each node's clip on the axis ``t - (onset - residual)`` puts every
consistent onset at 0 and an inconsistent one at its residual: the operator
sees at a glance whether the nodes agree (an echo or a wrong association
stands out). Without the stored detection, the predicted arrival comes from
the node's position (``shot time + distance / c``).
"""

from __future__ import annotations

import math
from statistics import median
from typing import Any

from shotline.core import messages as m

from .clips import ClipProvider, envelope

CHI2_2DOF_95 = 5.991464547107979
"""95 % quantile of chi-square with 2 degrees of freedom: the 1-sigma ellipse scaled by its root holds 95 %."""
ELLIPSE95_SCALE = math.sqrt(CHI2_2DOF_95)


def _ellipse(s: m.Shot) -> dict[str, float]:
    e = s.ellipse
    return {"semi_major_m": e.semi_major_m, "semi_minor_m": e.semi_minor_m, "azimuth_deg": e.azimuth_deg,
            "scale95": ELLIPSE95_SCALE}


def cadence(inc: m.Incident) -> dict[str, Any] | None:
    """Intervals between consecutive shots (s), their median and the rate (rounds/s); None for one shot."""
    times = sorted(s.time_ns for s in inc.shots)
    if len(times) < 2:
        return None
    gaps = [(b - a) / 1e9 for a, b in zip(times, times[1:], strict=False)]
    med = median(gaps)
    return {"intervals_s": [round(g, 4) for g in gaps], "median_interval_s": round(med, 4),
            "rate_hz": round(1.0 / med, 2) if med > 0 else None, "span_s": round((times[-1] - times[0]) / 1e9, 3)}


def summary(row: Any) -> dict[str, Any]:
    """One list row from a store IncidentRow."""
    inc: m.Incident = row.incident
    last = max(inc.shots, key=lambda s: s.time_ns) if inc.shots else None
    return {
        "incident_id": inc.incident_id,
        "site": inc.site,
        "state": inc.state,
        "revision": inc.revision,
        "first_shot_ns": inc.first_shot_ns,
        "last_shot_ns": inc.last_shot_ns,
        "published_ns": inc.published_ns,
        "first_published_ns": row.first_published_ns,
        "rounds": inc.rounds,
        "lat_deg": inc.position.lat_deg,
        "lon_deg": inc.position.lon_deg,
        "cep95_m": inc.cep95_m,
        "ellipse": _ellipse(last) if last else None,
        "event_class": inc.event_class,
        "class_scores": inc.class_scores,
        "automatic_fire": inc.automatic_fire,
        "n_nodes": max((s.n_nodes for s in inc.shots), default=0),
        "review_state": row.review_state,
        "review_label": row.review_label,
    }


def point(row: Any) -> list[Any]:
    """Compact map point: [id, lat, lon, cep95_m, review_state, event_class, rounds, first_shot_ns]."""
    inc = row.incident
    return [inc.incident_id, round(inc.position.lat_deg, 7), round(inc.position.lon_deg, 7), round(inc.cep95_m, 1),
            row.review_state, inc.event_class, inc.rounds, inc.first_shot_ns]


def _distance_m(a: tuple[float, float, float], b: m.Position) -> float:
    # Local tangent plane (accurate to millimetres over a city): enough for a displayed distance.
    lat0 = math.radians((a[0] + b.lat_deg) / 2)
    dn = math.radians(a[0] - b.lat_deg) * 6371008.8
    de = math.radians(a[1] - b.lon_deg) * 6371008.8 * math.cos(lat0)
    return math.sqrt(dn * dn + de * de + (a[2] - b.alt_m) ** 2)


def detail(rec: Any, positions: dict[str, tuple[float, float, float]]) -> dict[str, Any]:
    """The whole incident for the detail pane: shots, per-node residuals with their detections, reviews."""
    inc: m.Incident = rec.incident
    dets = {d.detection.detection_id: d for d in rec.detections}
    shots = []
    for s in sorted(inc.shots, key=lambda s: s.time_ns):
        nodes = []
        for r in sorted(s.residuals, key=lambda r: r.node_id):
            sd = dets.get(r.detection_id)
            d = sd.detection if sd else None
            pos = positions.get(r.node_id)
            dist = _distance_m(pos, s.position) if pos else None
            if d is not None:
                predicted_ns = d.onset_time_ns - round(r.residual_s * 1e9)
            elif dist is not None:
                predicted_ns = s.time_ns + round(dist / s.speed_of_sound_mps * 1e9)
            else:
                predicted_ns = None
            nodes.append({
                "node_id": r.node_id, "detection_id": r.detection_id, "residual_s": r.residual_s, "used": r.used,
                "onset_time_ns": d.onset_time_ns if d else None,
                "predicted_arrival_ns": predicted_ns,
                "travel_time_s": (predicted_ns - s.time_ns) / 1e9 if predicted_ns is not None else None,
                "distance_m": round(dist, 1) if dist is not None else None,
                "snr_db": d.snr_db if d else None, "peak_dbfs": d.peak_dbfs if d else None,
                "peak_db_spl": d.peak_db_spl if d else None, "clipped": d.clipped if d else None,
                "time_quality": d.time_quality if d else None, "scores": d.scores if d else None,
                "received_ns": sd.received_ns if sd else None,
            })
        shots.append({
            "shot_id": s.shot_id, "time_ns": s.time_ns, "lat_deg": s.position.lat_deg,
            "lon_deg": s.position.lon_deg, "alt_m": s.position.alt_m, "cep50_m": s.cep50_m, "cep95_m": s.cep95_m,
            "ellipse": _ellipse(s), "speed_of_sound_mps": s.speed_of_sound_mps, "n_nodes": s.n_nodes,
            "rms_residual_s": s.rms_residual_s, "scores": s.scores, "nodes": nodes,
        })
    out = summary(rec)
    prov = inc.provenance
    out.update(
        shots=shots,
        cadence=cadence(inc),
        reviews=[{"review_id": r.review_id, "reviewer": r.reviewer, "time_ns": r.time_ns, "decision": r.decision,
                  "label": r.label, "note": r.note} for r in rec.reviews],
        n_revisions=rec.n_revisions,
        provenance={"version": prov.version, "config_hash": prov.config_hash,
                    "model_sha256": prov.model_sha256} if prov else None,
    )
    return out


def traces(shot: dict[str, Any], clips: ClipProvider, *, before_s: float, after_s: float, n_bins: int,
           default_before_s: float = 1.0) -> list[dict[str, Any]]:
    """Each contributing node's waveform envelope on the axis (time - predicted arrival), seconds.

    ``shot`` is one entry of :func:`detail`'s ``shots``. A node without a clip
    or a predicted arrival gets ``available: False`` and the reason.
    """
    out = []
    span = before_s + after_s
    for n in shot["nodes"]:
        item: dict[str, Any] = {"node_id": n["node_id"], "detection_id": n["detection_id"],
                                "residual_s": n["residual_s"], "used": n["used"], "available": False}
        pred = n["predicted_arrival_ns"]
        if pred is None:
            item["reason"] = "node position and detection unknown"
            out.append(item)
            continue
        clip = clips.get(n["detection_id"], n["node_id"])
        if clip is None:
            item["reason"] = "no clip (not fetched, pruned or node unreachable)"
            out.append(item)
            continue
        onset = n["onset_time_ns"] if n["onset_time_ns"] is not None else pred + round(n["residual_s"] * 1e9)
        t0_ns = clip.t0_ns if clip.t0_ns is not None else onset - round(default_before_s * 1e9)
        lo, hi = envelope(clip.samples, clip.sample_rate_hz, (t0_ns - pred) / 1e9, -before_s, span, n_bins)
        peak = max(max((abs(v) for v in lo), default=0.0), max(hi, default=0.0))
        item.update(available=True, t_start_s=-before_s, span_s=span, min=lo, max=hi, peak=peak,
                    onset_rel_s=(onset - pred) / 1e9, sample_rate_hz=clip.sample_rate_hz,
                    clip_start_rel_s=(t0_ns - pred) / 1e9, clip_duration_s=clip.duration_s)
        out.append(item)
    return out
