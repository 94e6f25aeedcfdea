"""GeoJSON (RFC 7946) FeatureCollections of incidents and their shots.

Coordinates are ``[longitude, latitude]`` in WGS84 degrees (RFC 7946 §3.1.1,
no ``crs`` member), rounded to 7 decimals (about 1 cm). Each incident is a
Point Feature at its position whose ``id`` is the incident id; with
``with_shots`` each shot follows as a Point Feature of ``kind = "shot"``.
Times are given both as RFC 3339 UTC text and as integer ns.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from shotline.core import messages as m

from .timefmt import iso_utc

MEDIA_TYPE = "application/geo+json"
_DIGITS = 7


def _point(p: m.Position) -> dict[str, Any]:
    return {"type": "Point", "coordinates": [round(p.lon_deg, _DIGITS), round(p.lat_deg, _DIGITS)]}


def incident_feature(inc: m.Incident, review_state: str | None = None) -> dict[str, Any]:
    """One incident as a Point Feature; properties carry its summary (no shots)."""
    props: dict[str, Any] = {
        "kind": "incident",
        "incident_id": inc.incident_id,
        "site": inc.site,
        "state": inc.state,
        "revision": inc.revision,
        "rounds": inc.rounds,
        "first_shot": iso_utc(inc.first_shot_ns),
        "last_shot": iso_utc(inc.last_shot_ns),
        "first_shot_ns": inc.first_shot_ns,
        "last_shot_ns": inc.last_shot_ns,
        "published_ns": inc.published_ns,
        "alt_m": inc.position.alt_m,
        "cep95_m": inc.cep95_m,
        "event_class": inc.event_class,
        "class_scores": inc.class_scores,
        "automatic_fire": inc.automatic_fire,
    }
    if review_state is not None:
        props["review_state"] = review_state
    if inc.provenance is not None:
        props["provenance"] = msgspec.to_builtins(inc.provenance)
    return {"type": "Feature", "id": inc.incident_id, "geometry": _point(inc.position), "properties": props}


def shot_features(inc: m.Incident) -> list[dict[str, Any]]:
    """The incident's shots as Point Features (uncertainty and per-node residuals in the properties)."""
    out = []
    for s in inc.shots:
        props = {
            "kind": "shot",
            "shot_id": s.shot_id,
            "incident_id": inc.incident_id,
            "time": iso_utc(s.time_ns, 6),
            "time_ns": s.time_ns,
            "alt_m": s.position.alt_m,
            "cep50_m": s.cep50_m,
            "cep95_m": s.cep95_m,
            "ellipse": msgspec.to_builtins(s.ellipse),
            "speed_of_sound_mps": s.speed_of_sound_mps,
            "n_nodes": s.n_nodes,
            "rms_residual_s": s.rms_residual_s,
            "scores": s.scores,
            "residuals": [msgspec.to_builtins(r) for r in s.residuals],
        }
        out.append({"type": "Feature", "id": s.shot_id, "geometry": _point(s.position), "properties": props})
    return out


def feature_collection(
    incidents: Iterable[m.Incident | tuple[m.Incident, str | None]], with_shots: bool = False
) -> dict[str, Any]:
    """A FeatureCollection of incidents (optionally each with a review state) and, if asked, their shots.

    A ``bbox`` ([west, south, east, north], degrees) is added when there is
    at least one feature.
    """
    features: list[dict[str, Any]] = []
    for item in incidents:
        inc, review = item if isinstance(item, tuple) else (item, None)
        features.append(incident_feature(inc, review))
        if with_shots:
            features += shot_features(inc)
    fc: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    if features:
        lons = [f["geometry"]["coordinates"][0] for f in features]
        lats = [f["geometry"]["coordinates"][1] for f in features]
        fc["bbox"] = [min(lons), min(lats), max(lons), max(lats)]
    return fc


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON."""
    return msgspec.json.encode(obj)
