"""Sinks: where incidents go besides the MQTT incident topic.

Formats: :mod:`.cap` (CAP 1.2 XML), :mod:`.geojson` (RFC 7946) and the
incident message itself (JSON). Transport: :mod:`.webhook` (signed HTTP POST
from a durable queue). Filters and transforms: :mod:`.geofence` (areas,
position precision). :mod:`.dispatch` ties them together for the hub service.
"""
