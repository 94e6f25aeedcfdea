"""The incident store: round trip, idempotence, queries, reviews, migrations, WAL, detections."""

from __future__ import annotations

import sqlite3
import threading

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shotline.core import messages as m
from shotline.hub.export import parse_time
from shotline.hub.sinks.timefmt import iso_utc
from shotline.hub.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    DetectionRecorder,
    IncidentStore,
    PruneResult,
    StoreError,
    connect,
    migrate,
)

T0 = 1_795_000_000_000_000_000
S = 1_000_000_000
PROV = m.Provenance(version="0.1.0", config_hash="abcd1234", model_sha256=None)


def det(node: str, t_ns: int, did: str | None = None) -> m.Detection:
    return m.Detection(detection_id=did or f"{node}-{t_ns}", site="test", node_id=node, onset_time_ns=t_ns,
                       onset_sigma_s=2e-5, time_quality="pps", peak_dbfs=-12.0, snr_db=30.0,
                       noise_floor_dbfs=-60.0)


def shot(sid: str, t_ns: int, lat: float, lon: float, nodes=("A", "B", "C", "D")) -> m.Shot:
    return m.Shot(
        shot_id=sid, time_ns=t_ns, position=m.Position(lat_deg=lat, lon_deg=lon, alt_m=12.0), cep50_m=2.0,
        cep95_m=4.5, ellipse=m.Ellipse(semi_major_m=2.0, semi_minor_m=1.0, azimuth_deg=30.0),
        speed_of_sound_mps=343.0, n_nodes=len(nodes), rms_residual_s=5e-5,
        residuals=[m.NodeResidual(node_id=n, detection_id=f"{n}-{t_ns + k}", residual_s=1e-5 * k, used=k < 3)
                   for k, n in enumerate(nodes)],
        scores={"gunshot": 0.9},
    )


def incident(iid: str = "I1", revision: int = 1, state: str = "new", t0: int = T0, n_shots: int = 1,
             lat: float = 41.7755, lon: float = -72.6805) -> m.Incident:
    shots = [shot(f"{iid}-s{k}", t0 + k * S // 2, lat + 1e-5 * k, lon) for k in range(n_shots)]
    return m.Incident(site="test", incident_id=iid, state=state, revision=revision, published_ns=t0 + revision * S,
                      first_shot_ns=shots[0].time_ns, last_shot_ns=shots[-1].time_ns, rounds=n_shots,
                      position=m.Position(lat_deg=lat, lon_deg=lon, alt_m=12.0), cep95_m=4.5,
                      event_class="gunshot", class_scores={"gunshot": 0.9}, automatic_fire=n_shots > 2,
                      shots=shots, provenance=PROV)


@pytest.fixture
def store():
    with IncidentStore() as s:
        yield s


def test_round_trip_every_revision_and_the_latest_state(store):
    revs = [incident(revision=1, n_shots=1), incident(revision=2, state="updated", n_shots=3),
            incident(revision=3, state="closed", n_shots=3)]
    for r in revs:
        assert store.put_incident(r)
    rec = store.get_incident("I1")
    assert rec is not None
    assert rec.incident == revs[-1]  # the whole message, shots and residuals included, equal field by field
    assert store.latest_incident("I1") == revs[-1] and store.latest_incident("nope") is None
    assert rec.first_published_ns == revs[0].published_ns
    assert rec.n_revisions == 3 and rec.review_state == "unreviewed"
    assert store.revisions("I1") == revs
    # shots of older revisions do not linger
    n_shots = store._conn.execute("SELECT COUNT(*) FROM shots").fetchone()[0]
    n_res = store._conn.execute("SELECT COUNT(*) FROM residuals").fetchone()[0]
    assert (n_shots, n_res) == (3, 12)
    assert store.get_incident("nope") is None


def test_put_is_idempotent_and_late_old_revisions_do_not_win(store):
    r1, r2 = incident(revision=1), incident(revision=2, state="updated", n_shots=2)
    assert store.put_incident(r2)
    assert not store.put_incident(r2)  # replayed after a restart: nothing added
    assert store.put_incident(r1)  # older revision arriving late: kept in history only
    assert store.get_incident("I1").incident == r2
    assert [r.revision for r in store.revisions("I1")] == [1, 2]


def test_detections_referenced_by_shots_come_back_with_the_incident(store):
    inc = incident(n_shots=1)
    refs = [(det(r.node_id, T0, r.detection_id), T0 + 5) for r in inc.shots[0].residuals]
    other = (det("Z", T0 + 7 * S), T0 + 7 * S)
    assert store.put_detections([*refs, other]) == 5
    assert store.put_detections(refs) == 0  # duplicates ignored
    store.put_incident(inc)
    rec = store.get_incident("I1")
    assert sorted(d.detection.detection_id for d in rec.detections) == sorted(d.detection_id for d, _ in refs)
    assert rec.detections[0].received_ns == T0 + 5
    assert rec.detections[0].detection == refs[0][0]
    assert [d.detection.node_id for d in store.detections(since_ns=T0 + S)] == ["Z"]


def test_list_filters_time_window_state_review_and_box(store):
    # three incidents 10 minutes apart; the middle one lasts 2 minutes
    store.put_incident(incident("A", t0=T0))
    mid = incident("B", t0=T0 + 600 * S, n_shots=3)
    mid = m.Incident(**{**{f: getattr(mid, f) for f in mid.__struct_fields__}, "last_shot_ns": T0 + 720 * S})
    store.put_incident(mid)
    store.put_incident(incident("C", t0=T0 + 1200 * S, state="closed", lat=40.0, lon=-75.0))
    ids = lambda rows: [r.incident.incident_id for r in rows]  # noqa: E731
    assert ids(store.list_incidents(newest_first=False)) == ["A", "B", "C"]
    assert ids(store.list_incidents()) == ["C", "B", "A"]
    # active in the window: B started before `since` but its last shot is inside
    assert ids(store.list_incidents(since_ns=T0 + 700 * S, until_ns=T0 + 1200 * S)) == ["B"]
    assert ids(store.list_incidents(since_ns=T0 + 700 * S)) == ["C", "B"]
    assert ids(store.list_incidents(states=["closed"])) == ["C"]
    assert ids(store.list_incidents(min_rounds=2)) == ["B"]
    assert ids(store.list_incidents(bbox=(-76.0, 39.5, -74.0, 40.5))) == ["C"]
    assert ids(store.list_incidents(limit=1, offset=1)) == ["B"]
    assert store.count_incidents(since_ns=T0 + 700 * S) == 2
    store.add_review("A", "op1", "dismiss", note="door slam")
    assert ids(store.list_incidents(review_states=["dismissed"])) == ["A"]
    assert ids(store.list_incidents(review_states=["unreviewed"], newest_first=False)) == ["B", "C"]


def test_reviews_confirm_dismiss_relabel(store):
    store.put_incident(incident())
    store.add_review("I1", "alice", "confirm", time_ns=T0 + 10 * S)
    assert store.review_state("I1") == "confirmed"
    store.add_review("I1", "bob", "relabel", label="firework", note="New Year", time_ns=T0 + 20 * S)
    rec = store.get_incident("I1")
    assert (rec.review_state, rec.review_label) == ("relabelled", "firework")
    assert [(r.reviewer, r.decision, r.label, r.note) for r in rec.reviews] == [
        ("alice", "confirm", None, ""), ("bob", "relabel", "firework", "New Year")]
    # a newer revision of the incident keeps the operator's review
    store.put_incident(incident(revision=2, state="updated"))
    assert store.review_state("I1") == "relabelled"
    with pytest.raises(StoreError, match="needs a label"):
        store.add_review("I1", "bob", "relabel")
    with pytest.raises(StoreError, match="no incident"):
        store.add_review("I9", "bob", "confirm")
    with pytest.raises(StoreError, match="decision must be"):
        store.add_review("I1", "bob", "maybe")  # type: ignore[arg-type]
    assert store.review_state("I9") is None


def _v1_database(path):
    conn = connect(path)
    assert migrate(conn, target=1) == 1
    inc = incident()
    conn.execute(
        "INSERT INTO incidents VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)",
        (inc.incident_id, inc.site, inc.state, inc.revision, inc.published_ns, inc.published_ns,
         inc.first_shot_ns, inc.last_shot_ns, inc.rounds, inc.position.lat_deg, inc.position.lon_deg,
         inc.position.alt_m, inc.cep95_m, inc.event_class, 0, "0.0.9", "old", m.encode(inc).decode()),
    )
    conn.execute("INSERT INTO incident_revisions VALUES (?, 1, 'new', ?, ?, ?)",
                 (inc.incident_id, inc.published_ns, inc.published_ns, m.encode(inc).decode()))
    conn.close()
    return inc


def test_upgrade_from_schema_version_1_keeps_the_data(tmp_path):
    path = tmp_path / "old.sqlite"
    inc = _v1_database(path)
    with pytest.raises(StoreError, match="schema version 1"):
        IncidentStore(path, readonly=True)  # readers do not migrate
    with IncidentStore(path) as s:
        assert s.schema_version() == SCHEMA_VERSION == MIGRATIONS[-1][0]
        rows = s.list_incidents()
        assert [r.incident for r in rows] == [inc] and rows[0].review_state == "unreviewed"
        s.add_review("I1", "alice", "confirm")  # v2 table
        assert s.outbox_put("w", "I1.r1", b"{}", "application/json", due_ns=0)  # v3 table
        s.put_incident(incident(revision=2, state="updated"))
        assert s.largest_ids() == (0, 0)  # (ids "I1", "I1-s0": not the hub's own)
    with IncidentStore(path, readonly=True) as s:  # reopening does nothing more
        assert s.get_incident("I1").incident.revision == 2 and s.review_state("I1") == "confirmed"


def test_largest_ids_never_go_back_when_shots_or_incidents_leave_the_store(store):
    """A restarted hub counts on from :meth:`IncidentStore.largest_ids`: an id that only an older revision held (a
    shot the next revision dropped) or that retention deleted is not given again (downstream systems key on them)."""
    iid = "test-20261204T171400-0007"
    rev1 = incident(iid, revision=1, n_shots=2)
    rev1 = msgspec.structs.replace(rev1, shots=[msgspec.structs.replace(rev1.shots[0], shot_id="s000010"),
                                                msgspec.structs.replace(rev1.shots[1], shot_id="s000012")])
    rev2 = msgspec.structs.replace(rev1, revision=2, state="closed", shots=rev1.shots[:1], rounds=1)
    assert store.largest_ids() == (0, 0)
    store.put_incident(rev1)
    assert store.largest_ids() == (12, 7)
    store.put_incident(rev2)
    assert [s.shot_id for s in store.get_incident(iid).incident.shots] == ["s000010"]
    assert store.largest_ids() == (12, 7)  # s000012 is in no stored shot row now
    assert store.prune(incidents_before_ns=T0 + 100 * S).incidents == 1
    assert store.list_incidents() == [] and store.largest_ids() == (12, 7)
    # Ids that are not the hub's own (another tool, a test) count as 0.
    store.put_incident(incident("imported", n_shots=1))
    assert store.largest_ids() == (12, 7)


def test_newer_schema_is_refused_and_a_failed_migration_rolls_back(tmp_path, monkeypatch):
    path = tmp_path / "new.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this Shotline"):
        IncidentStore(path)
    path2 = tmp_path / "broken.sqlite"
    _v1_database(path2)
    import shotline.hub.store as store_mod
    monkeypatch.setattr(store_mod, "MIGRATIONS", [*MIGRATIONS[:1], (2, "CREATE TABLE reviews (x); CREATE TABLE bad ("),
                                                  *MIGRATIONS[2:]])
    with pytest.raises(StoreError, match="migration to version 2 failed"):
        IncidentStore(path2)
    conn = sqlite3.connect(path2)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'reviews'").fetchone()[0] == 0
    conn.close()


def test_file_store_is_wal_persistent_and_readable_while_written(tmp_path):
    path = tmp_path / "sub" / "hub.sqlite"
    writer = IncidentStore(path)
    assert writer._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    writer.put_incident(incident("A"))
    reader = IncidentStore(path, readonly=True)
    stop = threading.Event()

    def write_more():
        k = 0
        while not stop.is_set() and k < 200:
            writer.put_incident(incident(f"W{k}", t0=T0 + k * S))
            k += 1

    th = threading.Thread(target=write_more)
    th.start()
    counts = [reader.count_incidents() for _ in range(50)]
    stop.set()
    th.join()
    assert counts == sorted(counts) and counts[0] >= 1  # readers see consistent, growing snapshots
    with pytest.raises(sqlite3.OperationalError):
        reader._conn.execute("DELETE FROM incidents")
    reader.close()
    writer.close()
    with IncidentStore(path) as again:
        assert again.get_incident("A").incident == incident("A")


def test_detection_recorder_modes(store):
    inc = incident(n_shots=1)
    refs = [det(r.node_id, T0, r.detection_id) for r in inc.shots[0].residuals]
    rec = DetectionRecorder(store, "associated", cache_s=60.0)
    for d in refs:
        rec.add(d, T0)
    rec.add(det("Z", T0 + S), T0 + S)
    assert rec.flush(inc) == 4  # only the referenced ones
    assert len(store.detections()) == 4
    # the cache forgets what is older than cache_s of receive time
    rec.add(det("Y", T0), T0)
    rec.add(det("X", T0 + 120 * S), T0 + 120 * S)
    assert "Y-" + str(T0) not in rec._cache and len(rec._cache) == 1
    every = DetectionRecorder(store, "all")
    every.add(det("Q", T0 + 3 * S), T0 + 3 * S)
    assert every.flush() == 1 and every.flush() == 0
    none = DetectionRecorder(store, "none")
    none.add(det("R", T0), T0)
    assert none.flush(inc) == 0


def test_outbox_queue_lifecycle(store):
    assert store.outbox_put("w", "I1.r1", b"a", "application/json", due_ns=T0, incident_id="I1")
    assert not store.outbox_put("w", "I1.r1", b"a", "application/json", due_ns=T0, incident_id="I1")
    assert store.outbox_put("w", "I1.r2", b"b", "application/json", due_ns=T0 + S, incident_id="I1")
    assert store.outbox_has_incident("w", "I1") and not store.outbox_has_incident("v", "I1")
    assert [i.idempotency_key for i in store.outbox_due(T0)] == ["I1.r1"]
    assert store.outbox_next_due_ns() == T0
    first = store.outbox_due(T0)[0]
    store.outbox_retry(first.id, T0 + 2 * S, "HTTP 500")
    assert [i.idempotency_key for i in store.outbox_due(T0 + 2 * S)] == ["I1.r2", "I1.r1"]
    store.outbox_delivered(first.id, T0 + 2 * S)
    store.outbox_failed(store.outbox_due(T0 + 2 * S)[0].id, T0 + 3 * S, "HTTP 400")
    assert store.outbox_stats() == {"pending": 0, "delivered": 1, "failed": 1}
    assert store.outbox_next_due_ns() is None



def test_outbox_health_counts_pending_retrying_and_given_up(store):
    assert store.outbox_health(T0) == {"pending": 0, "retrying": 0, "failed": 0, "retrying_for_s": None}
    for k in range(4):
        store.outbox_put("w", f"k{k}", b"a", "application/json", due_ns=T0 + k * S, created_ns=T0 + k * S)
    items = {i.idempotency_key: i.id for i in store.outbox_due(T0 + 10 * S)}
    store.outbox_retry(items["k1"], T0 + 20 * S, "HTTP 503")
    store.outbox_retry(items["k2"], T0 + 20 * S, "timeout")
    store.outbox_failed(items["k3"], T0 + 5 * S, "HTTP 400")
    assert store.outbox_health(T0 + 61 * S) == {"pending": 3, "retrying": 2, "failed": 1, "retrying_for_s": 60.0}
    store.outbox_delivered(items["k1"], T0 + 62 * S)
    assert store.outbox_health(T0 + 62 * S)["retrying_for_s"] == 60.0  # (k2, queued at T0 + 2 s)


@given(st.integers(min_value=0, max_value=4_000_000_000 * S))
def test_parse_time_reads_back_what_iso_utc_writes(t_ns):
    assert parse_time(iso_utc(t_ns, 6)) == t_ns - t_ns % 1000


def test_parse_time_forms():
    now = T0
    assert parse_time("now", now) == now
    assert parse_time("2h", now) == now - 7200 * S
    assert parse_time("-30m", now) == now - 1800 * S
    assert parse_time("1.5d", now) == now - 129600 * S
    assert parse_time(str(T0), now) == T0
    assert parse_time("2026-07-04T21:00:00-04:00") == parse_time("2026-07-05T01:00:00Z")
    assert parse_time("2026-07-05 01:00") == parse_time("2026-07-05T01:00:00+00:00")
    with pytest.raises(ValueError, match="cannot read time"):
        parse_time("yesterday")


DAY = 86_400 * S


def _table_counts(store) -> dict[str, int]:
    tables = ("incidents", "incident_revisions", "shots", "residuals", "reviews", "detections", "sink_outbox")
    with store._lock:
        return {t: store._conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}


def _aged_store(store) -> None:
    """Incidents, detections and deliveries of various ages (published / received / delivered at T0 + k days):

    * OLD (closed, day 1) with 2 shots: its 8 detections stored, one of them also referenced by KEPT's shot;
    * REVIEWED (closed, day 1, reviewed on day 50); OPEN (new, day 1, never closed); KEPT (closed, day 50);
    * detections no shot references: LONE-old (received day 2), LONE-new (day 50);
    * deliveries: delivered day 3, failed day 3, delivered day 50, pending since day 3.
    """
    old = incident("OLD", revision=2, state="closed", t0=T0 + 1 * DAY - 2 * S, n_shots=2)
    store.put_incident(msgspec.structs.replace(old, revision=1, state="new"))
    store.put_incident(old)
    refs = [(det(r.node_id, T0, r.detection_id), T0 + 1 * DAY) for s in old.shots for r in s.residuals]
    store.put_detections(refs)
    shared = old.shots[0].residuals[0]
    kept = incident("KEPT", revision=1, state="closed", t0=T0 + 50 * DAY - S)
    kept = msgspec.structs.replace(kept, shots=[msgspec.structs.replace(
        kept.shots[0], residuals=[*kept.shots[0].residuals, shared])])
    store.put_incident(kept)
    store.put_incident(incident("REVIEWED", revision=1, state="closed", t0=T0 + 1 * DAY - S))
    store.add_review("REVIEWED", "alice", "confirm", time_ns=T0 + 50 * DAY)
    store.put_incident(incident("OPEN", revision=1, state="new", t0=T0 + 1 * DAY - S))
    store.put_detections([(det("Z", T0, "LONE-old"), T0 + 2 * DAY), (det("Z", T0 + 5, "LONE-new"), T0 + 50 * DAY)])
    for key, day in (("d-old", 3), ("f-old", 3), ("d-new", 50), ("pending", 3)):
        store.outbox_put("w", key, b"x", "application/json", due_ns=T0 + day * DAY, incident_id="OLD",
                         created_ns=T0 + day * DAY - S)
    items = {i.idempotency_key: i.id for i in store.outbox_due(T0 + 60 * DAY, limit=10)}
    store.outbox_delivered(items["d-old"], T0 + 3 * DAY)
    store.outbox_failed(items["f-old"], T0 + 3 * DAY, "HTTP 400")
    store.outbox_delivered(items["d-new"], T0 + 50 * DAY)


@pytest.mark.parametrize("batch", [1, 2, 1000])
def test_retention_deletes_exactly_what_is_past_its_age(store, batch, monkeypatch):
    """A closed incident past its age goes with its revisions, shots, residuals, reviews and the detections only it
    referenced; a reviewed one counts from its review, an open one never goes; lone detections by receipt; finished
    deliveries by when they finished. Batches of any size delete the same."""
    monkeypatch.setattr(IncidentStore, "PRUNE_BATCH_INCIDENTS", batch)
    monkeypatch.setattr(IncidentStore, "PRUNE_BATCH_ROWS", batch)
    _aged_store(store)
    before = _table_counts(store)
    cut = T0 + 10 * DAY
    dry = store.prune(incidents_before_ns=cut, detections_before_ns=cut, deliveries_before_ns=cut, dry_run=True)
    assert _table_counts(store) == before  # a dry run deletes nothing
    got = store.prune(incidents_before_ns=cut, detections_before_ns=cut, deliveries_before_ns=cut)
    assert got == dry == PruneResult(incidents=1, detections=7 + 1, deliveries=2)
    assert sorted(r.incident.incident_id for r in store.list_incidents()) == ["KEPT", "OPEN", "REVIEWED"]
    assert store.get_incident("OLD") is None and store.revisions("OLD") == []
    after = _table_counts(store)
    assert after["incident_revisions"] == before["incident_revisions"] - 2
    assert after["shots"] == before["shots"] - 2 and after["residuals"] == before["residuals"] - 8
    shared = {d.detection.detection_id for d in store.get_incident("KEPT").detections}
    assert shared == {"A-" + str(T0 + 1 * DAY - 2 * S)}  # OLD's detection that KEPT's shot references too
    assert sorted(d.detection.detection_id for d in store.detections()) == sorted([*shared, "LONE-new"])
    assert store.outbox_stats() == {"pending": 1, "delivered": 1, "failed": 0}
    assert not store.prune(incidents_before_ns=cut, detections_before_ns=cut, deliveries_before_ns=cut)
    # Reviews count: REVIEWED goes once its review is past the age too; nothing given, nothing deleted.
    assert store.prune() == PruneResult()
    assert store.prune(incidents_before_ns=T0 + 51 * DAY).incidents == 2
    assert [r.incident.incident_id for r in store.list_incidents()] == ["OPEN"]
    assert _table_counts(store)["reviews"] == 0


def test_retention_stops_between_batches_when_asked_and_lets_writers_in_between(store, monkeypatch):
    """Between two batches the store's lock is free (another thread, the hub storing an incident, gets it), and
    ``stop`` ends the pruning there."""
    monkeypatch.setattr(IncidentStore, "PRUNE_BATCH_ROWS", 1)
    store.put_detections([(det("Z", T0 + k, f"L{k}"), T0 + k) for k in range(5)])
    asked, free = [], []

    def stop() -> bool:
        t = threading.Thread(target=lambda: free.append(store._lock.acquire(timeout=2) and store._lock.release()))
        t.start()
        t.join()
        asked.append(1)
        return len(asked) >= 2

    got = store.prune(detections_before_ns=T0 + DAY, stop=stop)
    assert got.detections == 2 and len(store.detections()) == 3
    assert free == [None, None]  # (acquired, then released: release() returns None; a timeout would give False)
