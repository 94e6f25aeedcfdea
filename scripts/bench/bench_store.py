"""Benchmark of the hub's incident store and sink queue (shotline.hub.store, shotline.hub.sinks).

Scenario: a WAL SQLite file in a temporary folder; each incident message has
3 shots of 8 node residuals each, with its 24 referenced detections written
first, as ``HubService`` does (``[store] detections = "associated"``). Then
the same messages are queued for one GeoJSON webhook with a geofence and
block-level precision (format + geofence + queue insert, no network).

Figures:

* ``store_ms_per_incident``: wall time per stored incident message
  (detections + revision + current state + shots + residuals), ms. It sits in
  the publishing path, so it adds to the hub's latency (budget 100 ms p99).
* ``store_p99_ms_per_incident``: its 99th percentile, ms.
* ``sink_queue_ms_per_incident``: wall time to filter, coarsen, format and
  queue one message for the webhook, ms.
* retention (``IncidentStore.prune``, ``[store] keep_*_days``) on a store of
  ``PRUNE_INCIDENTS`` old closed incidents (5 shots of 30 residuals each,
  their detections stored), as many lone detections (``detections = "all"``)
  and finished sink deliveries of 2 kB, everything past its age:
  ``store_prune_s`` (wall time to prune it all), ``store_prune_batches`` and
  ``store_prune_max_batch_ms``, the longest the store's lock was held in one
  go (the hub's writes wait that long at most; from ``prune``'s ``stop``
  callback, called between batches).
* ``journal_us_per_message``: CPU us to write one detection message (~400 bytes) to the hub's journal
  (``[store] journal_keep_s``: every message on disk before it is handled; docs/hub-store-and-sinks.md,
  "Restart"), and ``journal_replay_us_per_message``: to read it back at a restart (the replay through the
  pipeline costs what the live path does).

Run: ``.venv/bin/python scripts/bench/bench_store.py [--quick]``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import msgspec
import numpy as np

from shotline.core import messages as m
from shotline.hub.config import GeofenceSettings, SinkSettings, WebhookSink
from shotline.hub.journal import MessageJournal
from shotline.hub.sinks.dispatch import SinkDispatcher
from shotline.hub.store import IncidentStore

T0 = 1_795_000_000_000_000_000
LAT, LON = 41.7755, -72.6805


def _incident(k: int, rng: np.random.Generator) -> tuple[m.Incident, list[tuple[m.Detection, int]]]:
    iid = f"bench-{k:06d}"
    t0 = T0 + k * 60 * 10**9
    shots, dets = [], []
    for j in range(3):
        t = t0 + j * 300_000_000
        res = []
        for n in range(8):
            did = f"N{n:02d}-{t + n}"
            res.append(m.NodeResidual(node_id=f"N{n:02d}", detection_id=did, residual_s=float(rng.normal(0, 5e-5)),
                                      used=True))
            dets.append((m.Detection(detection_id=did, site="bench", node_id=f"N{n:02d}", onset_time_ns=t + n * 10**6,
                                     onset_sigma_s=2e-5, time_quality="pps", peak_dbfs=-10.0, snr_db=30.0,
                                     noise_floor_dbfs=-60.0), t + 10**9))
        shots.append(m.Shot(shot_id=f"{iid}-{j}", time_ns=t,
                            position=m.Position(lat_deg=LAT + rng.normal(0, 1e-3), lon_deg=LON + rng.normal(0, 1e-3)),
                            cep50_m=2.0, cep95_m=4.0, ellipse=m.Ellipse(semi_major_m=2.0, semi_minor_m=1.0,
                                                                         azimuth_deg=10.0),
                            speed_of_sound_mps=343.0, n_nodes=8, rms_residual_s=5e-5, residuals=res))
    inc = m.Incident(site="bench", incident_id=iid, state="new", revision=1, published_ns=t0 + 10**9,
                     first_shot_ns=shots[0].time_ns, last_shot_ns=shots[-1].time_ns, rounds=3,
                     position=shots[0].position, cep95_m=4.0, shots=shots,
                     provenance=m.Provenance(version="bench", config_hash="0" * 16))
    return inc, dets


#: Old incidents (and lone detections, and finished deliveries: 10 and 1 per incident) of the retention figures.
PRUNE_INCIDENTS = 2000


def _prune_figures(tmp: Path, n: int) -> dict[str, float]:
    """Fill a store with ``n`` old incidents, ``10 n`` lone detections and ``n`` finished deliveries; prune it all."""
    store = IncidentStore(tmp / "prune.sqlite")
    det = m.Detection(detection_id="x", site="bench", node_id="N00", onset_time_ns=T0, onset_sigma_s=2e-5,
                      time_quality="pps", peak_dbfs=-10.0, snr_db=30.0, noise_floor_dbfs=-60.0)
    for k in range(n):
        t0 = T0 + k * 60 * 10**9
        shots, dets = [], []
        for j in range(5):
            t = t0 + j * 250_000_000
            res = [m.NodeResidual(node_id=f"N{q:02d}", detection_id=f"N{q:02d}-{t + q}", residual_s=1e-5, used=True)
                   for q in range(30)]
            dets += [(msgspec.structs.replace(det, detection_id=r.detection_id, node_id=r.node_id), t0) for r in res]
            shots.append(m.Shot(shot_id=f"p{k}-{j}", time_ns=t, position=m.Position(lat_deg=LAT, lon_deg=LON),
                                cep50_m=2.0, cep95_m=4.0,
                                ellipse=m.Ellipse(semi_major_m=2.0, semi_minor_m=1.0, azimuth_deg=10.0),
                                speed_of_sound_mps=343.0, n_nodes=30, rms_residual_s=5e-5, residuals=res))
        store.put_detections(dets + [(msgspec.structs.replace(det, detection_id=f"lone-{k}-{q}"), t0)
                                     for q in range(10)])
        store.put_incident(m.Incident(site="bench", incident_id=f"p{k}", state="closed", revision=1, published_ns=t0,
                                      first_shot_ns=shots[0].time_ns, last_shot_ns=shots[-1].time_ns, rounds=5,
                                      position=shots[0].position, cep95_m=4.0, shots=shots))
        store.outbox_put("w", f"p{k}.r1", b"x" * 2000, "application/json", due_ns=t0, incident_id=f"p{k}",
                         created_ns=t0)
    for item in store.outbox_due(T0 + n * 60 * 10**9, limit=n):
        store.outbox_delivered(item.id, item.due_ns)
    marks = [time.perf_counter()]

    def between_batches() -> bool:
        marks.append(time.perf_counter())
        return False

    cut = T0 + (n + 1) * 60 * 10**9
    got = store.prune(incidents_before_ns=cut, detections_before_ns=cut, deliveries_before_ns=cut,
                      stop=between_batches)
    marks.append(time.perf_counter())
    store.close()
    assert got.incidents == n and got.deliveries == n, got
    return {
        "store_prune_s": marks[-1] - marks[0],
        "store_prune_batches": float(len(marks) - 1),
        "store_prune_max_batch_ms": 1e3 * float(np.max(np.diff(marks))),
    }


def run(quick: bool = False) -> dict[str, float]:
    n = 300 if quick else 2000
    rng = np.random.default_rng(0)
    items = [_incident(k, rng) for k in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        store = IncidentStore(Path(tmp) / "bench.sqlite")
        times = []
        for inc, dets in items:
            t = time.perf_counter()
            store.put_detections(dets)
            store.put_incident(inc)
            times.append(time.perf_counter() - t)
        d = 0.01
        fence = [[LON - d, LAT - d], [LON + d, LAT - d], [LON + d, LAT + d], [LON - d, LAT + d]]
        sinks = SinkDispatcher(
            SinkSettings(geofences={"zone": GeofenceSettings(polygons=[fence])},
                         webhooks=[WebhookSink(name="partner", url="http://127.0.0.1:9/", format="geojson",
                                               geofences=["zone"], precision_m=150.0)]),
            store,
        )
        t = time.perf_counter()
        for inc, _ in items:
            sinks.submit(inc)
        sink_s = time.perf_counter() - t
        store.close()
        prune = _prune_figures(Path(tmp), PRUNE_INCIDENTS // (10 if quick else 1))
        journal = _journal_figures(Path(tmp), 20_000 if quick else 200_000)
    ms = np.array(times) * 1e3
    return {
        "store_ms_per_incident": float(ms.mean()),
        "store_p99_ms_per_incident": float(np.percentile(ms, 99)),
        "sink_queue_ms_per_incident": sink_s * 1e3 / n,
        **prune,
        **journal,
    }


def _journal_figures(tmp: Path, n: int) -> dict[str, float]:
    """:class:`MessageJournal` append and read-back cost per message (CPU us), ``n`` detection messages."""
    payload = m.encode(m.Detection(detection_id="N00001-123456789012", site="bench", node_id="N00001",
                                   onset_time_ns=1_800_000_000_000_000_000, onset_sigma_s=5e-5, time_quality="pps",
                                   peak_dbfs=-20.0, snr_db=40.0, noise_floor_dbfs=-60.0))
    topic = "shotline/v1/bench/node/N00001/detection"
    j = MessageJournal(tmp / "journal", keep_s=3600.0)
    t = time.process_time()
    for k in range(n):
        j.append(topic, payload, 1_800_000_000_000_000_000 + k * 1_000_000)  # 1,000 messages a second
    write_s = time.process_time() - t
    j.close()
    t = time.process_time()
    got = sum(1 for _ in MessageJournal(tmp / "journal", keep_s=3600.0).read_since(0))
    read_s = time.process_time() - t
    assert got == n
    return {"journal_us_per_message": write_s * 1e6 / n, "journal_replay_us_per_message": read_s * 1e6 / n}


if __name__ == "__main__":
    for k, v in run(quick="--quick" in sys.argv).items():
        print(f"{k}: {v:.3f}")
