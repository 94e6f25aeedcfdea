"""CAP 1.2 (OASIS Common Alerting Protocol) alerts from incidents.

One ``<alert>`` per incident message: ``new`` is an ``Alert``, ``updated`` and
``closed`` are ``Update`` messages that reference every earlier message of the
incident. Times are whole seconds with an explicit offset, UTC written as
``-00:00`` (CAP 1.2 §3.3.2). The ``<area>`` is a circle (``lat,lon radius_km``)
of radius CEP95 around the incident and, for several shots, around each shot.
The output validates against the OASIS CAP 1.2 schema (tests/data/cap/).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from shotline.core import messages as m

from ..config import CapSettings
from .timefmt import cap_time, iso_utc

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
MEDIA_TYPE = "application/cap+xml"
MAX_SHOT_CIRCLES = 20

_EVENT = {
    "gunshot": "Gunfire",
    "unknown": "Possible gunfire",
    "firework": "Fireworks",
    "other": "Impulsive sound",
}


def cap_identifier(inc: m.Incident, revision: int | None = None) -> str:
    """The CAP identifier of one incident message: unique per sender, no spaces, commas, '<' or '&'."""
    rev = inc.revision if revision is None else revision
    return re.sub(r"[\s,<&]", "-", f"shotline.{inc.site}.{inc.incident_id}.r{rev}")


def _el(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    e = ET.SubElement(parent, f"{{{CAP_NS}}}{tag}")
    if text is not None:
        e.text = text
    return e


def _circle(p: m.Position, radius_m: float) -> str:
    return f"{p.lat_deg:.6f},{p.lon_deg:.6f} {max(radius_m, 0.0) / 1000.0:.3f}"


def incident_to_cap(
    inc: m.Incident,
    settings: CapSettings,
    *,
    references: Sequence[tuple[str, int]] = (),
    review_state: str | None = None,
) -> bytes:
    """A CAP 1.2 alert (UTF-8 XML bytes) for one incident message.

    ``references`` are (identifier, sent_ns) of earlier messages of the same
    incident sent by this hub (see :func:`cap_identifier`). ``review_state``
    ``confirmed`` raises the certainty to ``Observed``.
    """
    ET.register_namespace("", CAP_NS)
    alert = ET.Element(f"{{{CAP_NS}}}alert")
    _el(alert, "identifier", cap_identifier(inc))
    _el(alert, "sender", settings.sender)
    _el(alert, "sent", cap_time(inc.published_ns))
    _el(alert, "status", settings.status)
    _el(alert, "msgType", "Alert" if inc.state == "new" or not references else "Update")
    _el(alert, "source", "Shotline acoustic sensor network")
    _el(alert, "scope", "Public")
    if inc.provenance is not None:
        _el(alert, "note", f"shotline {inc.provenance.version}, config {inc.provenance.config_hash}")
    if references:
        _el(alert, "references", " ".join(f"{settings.sender},{ident},{cap_time(t)}" for ident, t in references))
    _el(alert, "incidents", re.sub(r"[\s,<&]", "-", inc.incident_id))

    info = _el(alert, "info")
    _el(info, "language", "en-US")
    _el(info, "category", "Security")
    _el(info, "event", _EVENT.get(inc.event_class, "Possible gunfire"))
    closed = inc.state == "closed"
    _el(info, "responseType", "Monitor" if closed else "Avoid")
    _el(info, "urgency", "Past" if closed else "Immediate")
    _el(info, "severity", "Severe" if inc.event_class in ("gunshot", "unknown") else "Minor")
    if review_state == "confirmed":
        certainty = "Observed"
    elif inc.event_class == "gunshot":
        certainty = "Likely"
    else:
        certainty = "Possible"
    _el(info, "certainty", certainty)
    _el(info, "onset", cap_time(inc.first_shot_ns))
    _el(info, "expires", cap_time(inc.last_shot_ns + int(settings.expires_s * 1e9)))
    _el(info, "senderName", settings.sender_name)
    rounds = f"{inc.rounds} shot{'s' if inc.rounds != 1 else ''}"
    auto = ", automatic fire" if inc.automatic_fire else ""
    _el(info, "headline", f"{_EVENT.get(inc.event_class, 'Possible gunfire')}: {rounds}{auto}"[:160])
    _el(
        info,
        "description",
        f"{rounds} located acoustically between {iso_utc(inc.first_shot_ns, 0)} and "
        f"{iso_utc(inc.last_shot_ns, 0)}{auto}; position within {inc.cep95_m:.0f} m (95 %) of "
        f"{inc.position.lat_deg:.6f}, {inc.position.lon_deg:.6f}. Incident {inc.incident_id}, "
        f"revision {inc.revision} ({inc.state}).",
    )
    if settings.web:
        _el(info, "web", settings.web + inc.incident_id)
    params = {
        "incidentId": inc.incident_id,
        "revision": str(inc.revision),
        "state": inc.state,
        "rounds": str(inc.rounds),
        "firstShot": iso_utc(inc.first_shot_ns, 6),
        "lastShot": iso_utc(inc.last_shot_ns, 6),
        "cep95M": f"{inc.cep95_m:.1f}",
        "automaticFire": "true" if inc.automatic_fire else "false",
        "eventClass": inc.event_class,
    }
    if review_state is not None:
        params["reviewState"] = review_state
    for k, v in params.items():
        p = _el(info, "parameter")
        _el(p, "valueName", k)
        _el(p, "value", v)
    area = _el(info, "area")
    _el(area, "areaDesc", f"Estimated location of {rounds} (95 % within {inc.cep95_m:.0f} m)")
    _el(area, "circle", _circle(inc.position, inc.cep95_m))
    if len(inc.shots) > 1:
        for s in inc.shots[:MAX_SHOT_CIRCLES]:
            _el(area, "circle", _circle(s.position, s.cep95_m))
    return ET.tostring(alert, encoding="utf-8", xml_declaration=True)
