"""The incident store: SQLite (WAL) with versioned schema migrations.

Every incident message the hub publishes is kept: each revision verbatim
(with its provenance), the latest state of the incident, its shots and their
per-node residuals, and the detections those residuals point to. Operator
reviews and the sinks' durable delivery queue live in the same file.

Times are integer nanoseconds since the Unix epoch (UTC), positions WGS84
degrees and metres, residuals seconds. One connection serves every thread
(the MQTT callback, the clock tick, the sink worker, a review UI in the same
process) behind a lock; other processes (the ``incidents`` command, a web UI)
open the same file and, thanks to WAL, read while the hub writes.

Migrations are a numbered list applied at open (``PRAGMA user_version``
records the schema version); a database written by a newer Shotline is
refused rather than misread.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import msgspec

from shotline.core import messages as m
from shotline.core.timebase import now_ns

log = logging.getLogger(__name__)

Decision = Literal["confirm", "dismiss", "relabel"]
REVIEW_STATES = {"confirm": "confirmed", "dismiss": "dismissed", "relabel": "relabelled"}
"""Review decision -> the incident's review state (``unreviewed`` until the first review)."""

MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE incidents (
            incident_id TEXT PRIMARY KEY,
            site TEXT NOT NULL,
            state TEXT NOT NULL,
            revision INTEGER NOT NULL,
            first_published_ns INTEGER NOT NULL,
            published_ns INTEGER NOT NULL,
            closed_ns INTEGER,
            first_shot_ns INTEGER NOT NULL,
            last_shot_ns INTEGER NOT NULL,
            rounds INTEGER NOT NULL,
            lat_deg REAL NOT NULL,
            lon_deg REAL NOT NULL,
            alt_m REAL NOT NULL,
            cep95_m REAL NOT NULL,
            event_class TEXT NOT NULL,
            automatic_fire INTEGER NOT NULL,
            version TEXT,
            config_hash TEXT,
            model_sha256 TEXT,
            message TEXT NOT NULL
        );
        CREATE INDEX incidents_first_shot ON incidents(first_shot_ns);
        CREATE INDEX incidents_last_shot ON incidents(last_shot_ns);
        CREATE TABLE incident_revisions (
            incident_id TEXT NOT NULL REFERENCES incidents(incident_id) ON DELETE CASCADE,
            revision INTEGER NOT NULL,
            state TEXT NOT NULL,
            published_ns INTEGER NOT NULL,
            stored_ns INTEGER NOT NULL,
            message TEXT NOT NULL,
            PRIMARY KEY (incident_id, revision)
        );
        CREATE TABLE shots (
            shot_id TEXT PRIMARY KEY,
            incident_id TEXT NOT NULL REFERENCES incidents(incident_id) ON DELETE CASCADE,
            time_ns INTEGER NOT NULL,
            lat_deg REAL NOT NULL,
            lon_deg REAL NOT NULL,
            alt_m REAL NOT NULL,
            cep50_m REAL NOT NULL,
            cep95_m REAL NOT NULL,
            semi_major_m REAL NOT NULL,
            semi_minor_m REAL NOT NULL,
            azimuth_deg REAL NOT NULL,
            speed_of_sound_mps REAL NOT NULL,
            n_nodes INTEGER NOT NULL,
            rms_residual_s REAL NOT NULL,
            scores TEXT
        );
        CREATE INDEX shots_incident ON shots(incident_id, time_ns);
        CREATE TABLE residuals (
            shot_id TEXT NOT NULL REFERENCES shots(shot_id) ON DELETE CASCADE,
            detection_id TEXT NOT NULL,
            node_id TEXT NOT NULL,
            residual_s REAL NOT NULL,
            used INTEGER NOT NULL,
            PRIMARY KEY (shot_id, detection_id)
        );
        CREATE INDEX residuals_detection ON residuals(detection_id);
        CREATE TABLE detections (
            detection_id TEXT PRIMARY KEY,
            site TEXT NOT NULL,
            node_id TEXT NOT NULL,
            onset_time_ns INTEGER NOT NULL,
            time_quality TEXT NOT NULL,
            received_ns INTEGER NOT NULL,
            message TEXT NOT NULL
        );
        CREATE INDEX detections_onset ON detections(onset_time_ns);
        """,
    ),
    (
        2,
        """
        ALTER TABLE incidents ADD COLUMN review_state TEXT NOT NULL DEFAULT 'unreviewed';
        ALTER TABLE incidents ADD COLUMN review_label TEXT;
        CREATE INDEX incidents_review ON incidents(review_state);
        CREATE TABLE reviews (
            review_id INTEGER PRIMARY KEY AUTOINCREMENT,
            incident_id TEXT NOT NULL REFERENCES incidents(incident_id) ON DELETE CASCADE,
            reviewer TEXT NOT NULL,
            time_ns INTEGER NOT NULL,
            decision TEXT NOT NULL CHECK (decision IN ('confirm', 'dismiss', 'relabel')),
            label TEXT,
            note TEXT NOT NULL DEFAULT '',
            CHECK (decision != 'relabel' OR label IS NOT NULL)
        );
        CREATE INDEX reviews_incident ON reviews(incident_id, time_ns);
        """,
    ),
    (
        3,
        """
        CREATE TABLE sink_outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            sink TEXT NOT NULL,
            idempotency_key TEXT NOT NULL,
            incident_id TEXT,
            content_type TEXT NOT NULL,
            body BLOB NOT NULL,
            created_ns INTEGER NOT NULL,
            due_ns INTEGER NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            delivered_ns INTEGER,
            failed_ns INTEGER,
            UNIQUE (sink, idempotency_key)
        );
        CREATE INDEX sink_outbox_pending ON sink_outbox(due_ns)
            WHERE delivered_ns IS NULL AND failed_ns IS NULL;
        CREATE INDEX sink_outbox_incident ON sink_outbox(sink, incident_id);
        """,
    ),
    (
        4,
        # The largest id counters ever stored (IncidentStore.largest_ids): the shots and incidents tables
        # lose ids (a shot a later revision dropped; retention), and a restarted hub must not give one again.
        """
        CREATE TABLE id_counters (
            kind TEXT PRIMARY KEY CHECK (kind IN ('shot', 'incident')),
            value INTEGER NOT NULL
        );
        """,
    ),
]
"""(version, SQL) in order; append, never edit a migration that has shipped."""

SCHEMA_VERSION = MIGRATIONS[-1][0]


class StoreError(RuntimeError):
    """A database that cannot be opened or migrated, or a request that does not fit it."""


@dataclass(frozen=True)
class Review:
    """One operator decision on an incident."""

    review_id: int
    incident_id: str
    reviewer: str
    time_ns: int
    decision: Decision
    label: str | None
    note: str


@dataclass(frozen=True)
class StoredDetection:
    """A detection as stored, with the hub's receive time (ns)."""

    detection: m.Detection
    received_ns: int


@dataclass(frozen=True)
class IncidentRow:
    """An incident's latest message with what the store adds: first publication and review state."""

    incident: m.Incident
    first_published_ns: int
    review_state: str
    review_label: str | None


@dataclass(frozen=True)
class IncidentRecord(IncidentRow):
    """One incident in full: latest message (with shots and residuals), detections, reviews, revisions."""

    detections: list[StoredDetection] = field(default_factory=list)
    reviews: list[Review] = field(default_factory=list)
    n_revisions: int = 0


@dataclass(frozen=True)
class OutboxItem:
    """A message waiting in the sinks' durable queue."""

    id: int
    sink: str
    idempotency_key: str
    incident_id: str | None
    content_type: str
    body: bytes
    created_ns: int
    due_ns: int
    attempts: int


def _id_counter(ident: str, sep: str) -> int:
    """The counter at the end of an id after its last ``sep`` (shot ``s000123``: "s"; incident
    ``hartford-20261204T171416-0007``: "-"); 0 when there is none (an id some other tool wrote)."""
    tail = ident.rsplit(sep, 1)[-1]
    return int(tail) if tail.isdigit() else 0


def migrate(conn: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Apply the pending migrations up to ``target``, each in its own transaction; return the version."""
    (current,) = conn.execute("PRAGMA user_version").fetchone()
    if current > SCHEMA_VERSION:
        raise StoreError(
            f"database schema version {current} is newer than this Shotline's ({SCHEMA_VERSION}); upgrade Shotline"
        )
    for version, sql in MIGRATIONS:
        if current < version <= target:
            try:
                conn.execute("BEGIN IMMEDIATE")
                for stmt in _statements(sql):
                    conn.execute(stmt)
                conn.execute(f"PRAGMA user_version = {int(version)}")
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK")
                raise StoreError(f"schema migration to version {version} failed: {exc}") from exc
            log.info("store schema migrated to version %d", version)
            current = version
    return current


def _statements(sql: str) -> Iterator[str]:
    # Migrations contain no string literals with ';', so a plain split is exact.
    for stmt in sql.split(";"):
        if stmt.strip():
            yield stmt


def connect(path: str | Path, *, wal: bool = True, readonly: bool = False) -> sqlite3.Connection:
    """Open a SQLite connection configured for the store (autocommit; transactions are explicit)."""
    path = str(path)
    try:
        if readonly and path != ":memory:":
            if not Path(path).exists():
                raise StoreError(f"{path}: no such store")
            uri = Path(path).resolve().as_uri() + "?mode=ro"  # as_uri escapes '?', '#' and spaces
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        else:
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA foreign_keys = ON")
        if wal and path != ":memory:" and not readonly:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                log.warning("%s: WAL mode refused (journal_mode=%s)", path, mode)
            # WAL + NORMAL: durable across a process crash, only an OS crash may lose the last commits.
            conn.execute("PRAGMA synchronous = NORMAL")
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open store ({exc})") from exc
    return conn


_incident_dec = msgspec.json.Decoder(m.Incident)
_detection_dec = msgspec.json.Decoder(m.Detection)


class IncidentStore:
    """Incidents, shots, residuals, detections, reviews and the sinks' queue in one SQLite file.

    ``path=":memory:"`` gives a private in-memory store (nothing survives the
    process). Safe to share between threads.
    """

    def __init__(self, path: str | Path = ":memory:", *, wal: bool = True, readonly: bool = False) -> None:
        self.path = str(path)
        self._conn = connect(self.path, wal=wal, readonly=readonly)
        self._lock = threading.RLock()
        if readonly:
            (version,) = self._conn.execute("PRAGMA user_version").fetchone()
            if version != SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: schema version {version}, this Shotline reads {SCHEMA_VERSION} "
                    "(open it once read-write to migrate)"
                )
        else:
            migrate(self._conn)

    # -- plumbing ------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (a WAL checkpoint happens on the last close)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> IncidentStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def schema_version(self) -> int:
        """The database's schema version (``PRAGMA user_version``)."""
        with self._lock:
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    # -- writing -------------------------------------------------------------

    def put_incident(self, inc: m.Incident, stored_ns: int | None = None) -> bool:
        """Store one incident message; False when this (incident, revision) is already stored.

        Idempotent, so a hub that republishes after a restart, or a replayed
        MQTT message, adds nothing. A revision older than the stored one is
        kept in the history but does not replace the current state.
        """
        stored_ns = now_ns() if stored_ns is None else stored_ns
        msg = m.encode(inc).decode()
        with self._tx() as c:
            if c.execute(
                "SELECT 1 FROM incident_revisions WHERE incident_id = ? AND revision = ?",
                (inc.incident_id, inc.revision),
            ).fetchone():
                return False
            row = c.execute(
                "SELECT revision FROM incidents WHERE incident_id = ?", (inc.incident_id,)
            ).fetchone()
            prov = inc.provenance
            cols = (
                inc.site, inc.state, inc.revision, inc.published_ns,
                inc.published_ns if inc.state == "closed" else None,
                inc.first_shot_ns, inc.last_shot_ns, inc.rounds,
                inc.position.lat_deg, inc.position.lon_deg, inc.position.alt_m, inc.cep95_m,
                inc.event_class, int(inc.automatic_fire),
                prov.version if prov else None, prov.config_hash if prov else None,
                prov.model_sha256 if prov else None, msg,
            )
            if row is None:
                c.execute(
                    "INSERT INTO incidents (site, state, revision, published_ns, closed_ns, first_shot_ns,"
                    " last_shot_ns, rounds, lat_deg, lon_deg, alt_m, cep95_m, event_class, automatic_fire,"
                    " version, config_hash, model_sha256, message, incident_id, first_published_ns)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*cols, inc.incident_id, inc.published_ns),
                )
            elif inc.revision > row[0]:
                c.execute(
                    "UPDATE incidents SET site=?, state=?, revision=?, published_ns=?, closed_ns=?,"
                    " first_shot_ns=?, last_shot_ns=?, rounds=?, lat_deg=?, lon_deg=?, alt_m=?, cep95_m=?,"
                    " event_class=?, automatic_fire=?, version=?, config_hash=?, model_sha256=?, message=?"
                    " WHERE incident_id=?",
                    (*cols, inc.incident_id),
                )
            else:
                c.execute(
                    "UPDATE incidents SET first_published_ns = MIN(first_published_ns, ?) WHERE incident_id = ?",
                    (inc.published_ns, inc.incident_id),
                )
            c.execute(
                "INSERT INTO incident_revisions VALUES (?, ?, ?, ?, ?, ?)",
                (inc.incident_id, inc.revision, inc.state, inc.published_ns, stored_ns, msg),
            )
            if row is None or inc.revision > row[0]:
                self._put_shots(c, inc)
            c.executemany(
                "INSERT INTO id_counters VALUES (?, ?) ON CONFLICT (kind) DO UPDATE SET value = MAX(value, excluded.value)",
                [("shot", max((_id_counter(s.shot_id, "s") for s in inc.shots), default=0)),
                 ("incident", _id_counter(inc.incident_id, "-"))],
            )
        return True

    @staticmethod
    def _put_shots(c: sqlite3.Connection, inc: m.Incident) -> None:
        # Each revision carries the incident's whole shot list: replace it.
        c.execute("DELETE FROM shots WHERE incident_id = ?", (inc.incident_id,))
        c.executemany(
            "INSERT OR REPLACE INTO shots VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    s.shot_id, inc.incident_id, s.time_ns, s.position.lat_deg, s.position.lon_deg,
                    s.position.alt_m, s.cep50_m, s.cep95_m, s.ellipse.semi_major_m, s.ellipse.semi_minor_m,
                    s.ellipse.azimuth_deg, s.speed_of_sound_mps, s.n_nodes, s.rms_residual_s,
                    msgspec.json.encode(s.scores).decode() if s.scores is not None else None,
                )
                for s in inc.shots
            ],
        )
        c.executemany(
            "INSERT OR REPLACE INTO residuals VALUES (?, ?, ?, ?, ?)",
            [
                (s.shot_id, r.detection_id, r.node_id, r.residual_s, int(r.used))
                for s in inc.shots
                for r in s.residuals
            ],
        )

    def put_detections(self, dets: Sequence[tuple[m.Detection, int]]) -> int:
        """Store (detection, received_ns) pairs; already stored ids are skipped. Returns how many were new."""
        if not dets:
            return 0
        with self._tx() as c:
            before = c.total_changes
            c.executemany(
                "INSERT OR IGNORE INTO detections VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (d.detection_id, d.site, d.node_id, d.onset_time_ns, d.time_quality, rec, m.encode(d).decode())
                    for d, rec in dets
                ],
            )
            return c.total_changes - before

    def add_review(
        self,
        incident_id: str,
        reviewer: str,
        decision: Decision,
        *,
        note: str = "",
        label: str | None = None,
        time_ns: int | None = None,
    ) -> Review:
        """Record an operator's decision and update the incident's review state.

        ``relabel`` needs ``label`` (the event class the operator assigns, e.g.
        ``"firework"``). Raises :class:`StoreError` for an unknown incident.
        """
        if decision not in REVIEW_STATES:
            raise StoreError(f"decision must be one of {sorted(REVIEW_STATES)}, got {decision!r}")
        if decision == "relabel" and not label:
            raise StoreError("a relabel review needs a label")
        if not reviewer:
            raise StoreError("reviewer must not be empty")
        time_ns = now_ns() if time_ns is None else time_ns
        with self._tx() as c:
            if c.execute("SELECT 1 FROM incidents WHERE incident_id = ?", (incident_id,)).fetchone() is None:
                raise StoreError(f"no incident {incident_id!r}")
            cur = c.execute(
                "INSERT INTO reviews (incident_id, reviewer, time_ns, decision, label, note) VALUES (?, ?, ?, ?, ?, ?)",
                (incident_id, reviewer, time_ns, decision, label, note),
            )
            c.execute(
                "UPDATE incidents SET review_state = ?, review_label = ? WHERE incident_id = ?",
                (REVIEW_STATES[decision], label if decision == "relabel" else None, incident_id),
            )
            return Review(int(cur.lastrowid or 0), incident_id, reviewer, time_ns, decision, label, note)

    # -- reading -------------------------------------------------------------

    def list_incidents(
        self,
        *,
        since_ns: int | None = None,
        until_ns: int | None = None,
        states: Sequence[str] | None = None,
        review_states: Sequence[str] | None = None,
        event_classes: Sequence[str] | None = None,
        min_rounds: int | None = None,
        bbox: tuple[float, float, float, float] | None = None,
        limit: int | None = None,
        offset: int = 0,
        newest_first: bool = True,
    ) -> list[IncidentRow]:
        """Incidents active in [``since_ns``, ``until_ns``): last shot at or after ``since_ns`` and first
        shot before ``until_ns``, optionally filtered by state, review state, class, rounds and a
        ``(min_lon, min_lat, max_lon, max_lat)`` box (degrees), ordered by first shot time."""
        where, args = self._filters(since_ns, until_ns, states, review_states, event_classes, min_rounds, bbox)
        sql = (
            "SELECT message, first_published_ns, review_state, review_label FROM incidents"
            f"{where} ORDER BY first_shot_ns {'DESC' if newest_first else 'ASC'}, incident_id"
        )
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            args += [int(limit), int(offset)]
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [IncidentRow(_incident_dec.decode(r[0]), r[1], r[2], r[3]) for r in rows]

    def count_incidents(self, **filters: object) -> int:
        """How many incidents :meth:`list_incidents` would return without limit (same filters)."""
        where, args = self._filters(
            filters.get("since_ns"), filters.get("until_ns"), filters.get("states"),  # type: ignore[arg-type]
            filters.get("review_states"), filters.get("event_classes"),  # type: ignore[arg-type]
            filters.get("min_rounds"), filters.get("bbox"),  # type: ignore[arg-type]
        )
        with self._lock:
            return int(self._conn.execute(f"SELECT COUNT(*) FROM incidents{where}", args).fetchone()[0])

    @staticmethod
    def _filters(
        since_ns: int | None,
        until_ns: int | None,
        states: Sequence[str] | None,
        review_states: Sequence[str] | None,
        event_classes: Sequence[str] | None,
        min_rounds: int | None,
        bbox: tuple[float, float, float, float] | None,
    ) -> tuple[str, list[object]]:
        clauses: list[str] = []
        args: list[object] = []
        if since_ns is not None:
            clauses.append("last_shot_ns >= ?")
            args.append(int(since_ns))
        if until_ns is not None:
            clauses.append("first_shot_ns < ?")
            args.append(int(until_ns))
        for col, values in (("state", states), ("review_state", review_states), ("event_class", event_classes)):
            if values:
                clauses.append(f"{col} IN ({', '.join('?' * len(values))})")
                args += list(values)
        if min_rounds is not None:
            clauses.append("rounds >= ?")
            args.append(int(min_rounds))
        if bbox is not None:
            min_lon, min_lat, max_lon, max_lat = bbox
            clauses.append("lon_deg BETWEEN ? AND ? AND lat_deg BETWEEN ? AND ?")
            args += [min_lon, max_lon, min_lat, max_lat]
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), args

    def latest_incident(self, incident_id: str) -> m.Incident | None:
        """An incident's latest stored message alone (None when unknown): what :meth:`get_incident` gives as
        ``incident``, without reading its detections, reviews and revisions."""
        with self._lock:
            row = self._conn.execute("SELECT message FROM incidents WHERE incident_id = ?", (incident_id,)).fetchone()
        return None if row is None else _incident_dec.decode(row[0])

    def get_incident(self, incident_id: str) -> IncidentRecord | None:
        """One incident with its shots (in the message), the detections its shots reference, its reviews
        and the number of stored revisions; None when unknown."""
        with self._lock:
            row = self._conn.execute(
                "SELECT message, first_published_ns, review_state, review_label FROM incidents WHERE incident_id = ?",
                (incident_id,),
            ).fetchone()
            if row is None:
                return None
            dets = self._conn.execute(
                "SELECT DISTINCT d.message, d.received_ns FROM detections d"
                " JOIN residuals r ON r.detection_id = d.detection_id"
                " JOIN shots s ON s.shot_id = r.shot_id WHERE s.incident_id = ? ORDER BY d.onset_time_ns",
                (incident_id,),
            ).fetchall()
            n_rev = self._conn.execute(
                "SELECT COUNT(*) FROM incident_revisions WHERE incident_id = ?", (incident_id,)
            ).fetchone()[0]
        return IncidentRecord(
            _incident_dec.decode(row[0]), row[1], row[2], row[3],
            detections=[StoredDetection(_detection_dec.decode(d), rec) for d, rec in dets],
            reviews=self.reviews(incident_id),
            n_revisions=int(n_rev),
        )

    def shots_of_detections(self, detection_ids: Sequence[str]) -> list[tuple[str, str, str]]:
        """(detection id, shot id, incident id) of every stored shot that references one of ``detection_ids``
        (a restarted hub's replay takes the stored ids over: :mod:`shotline.hub.recovery`)."""
        out: list[tuple[str, str, str]] = []
        ids = list(detection_ids)
        with self._lock:
            for k in range(0, len(ids), 500):  # (SQLite's limit on bound parameters)
                chunk = ids[k:k + 500]
                out += self._conn.execute(
                    "SELECT r.detection_id, s.shot_id, s.incident_id FROM residuals r"
                    f" JOIN shots s ON s.shot_id = r.shot_id WHERE r.detection_id IN ({', '.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
        return out

    def largest_ids(self) -> tuple[int, int]:
        """The largest counters of the ids ever stored: shot ids ``s<counter>`` and incident ids
        ``<site>-<stamp>-<counter>`` (0 when none): a restarted hub counts on from them, so that no id of an
        earlier run is given again, not even one that only an older revision held (a shot a later revision
        dropped) or that retention deleted. The ``id_counters`` table keeps them since schema version 4; the
        stored shots and incidents count too (a store written before it)."""
        with self._lock:
            kept = dict(self._conn.execute("SELECT kind, value FROM id_counters").fetchall())
            shot_n = self._conn.execute(
                "SELECT MAX(CAST(SUBSTR(shot_id, 2) AS INTEGER)) FROM shots WHERE shot_id GLOB 's[0-9]*'").fetchone()[0]
            incidents = self._conn.execute("SELECT incident_id FROM incidents").fetchall()
        inc_n = max((_id_counter(r[0], "-") for r in incidents), default=0)
        return max(int(shot_n or 0), kept.get("shot", 0)), max(inc_n, kept.get("incident", 0))

    def revisions(self, incident_id: str) -> list[m.Incident]:
        """Every stored revision of an incident, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT message FROM incident_revisions WHERE incident_id = ? ORDER BY revision", (incident_id,)
            ).fetchall()
        return [_incident_dec.decode(r[0]) for r in rows]

    def reviews(self, incident_id: str) -> list[Review]:
        """The operator reviews of an incident, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT review_id, incident_id, reviewer, time_ns, decision, label, note FROM reviews"
                " WHERE incident_id = ? ORDER BY time_ns, review_id",
                (incident_id,),
            ).fetchall()
        return [Review(*r) for r in rows]

    def review_state(self, incident_id: str) -> str | None:
        """``unreviewed``, ``confirmed``, ``dismissed`` or ``relabelled``; None for an unknown incident."""
        with self._lock:
            row = self._conn.execute(
                "SELECT review_state FROM incidents WHERE incident_id = ?", (incident_id,)
            ).fetchone()
        return None if row is None else row[0]

    def detections(self, since_ns: int | None = None, until_ns: int | None = None) -> list[StoredDetection]:
        """Stored detections with onset in [since_ns, until_ns), by onset time."""
        sql, args = "SELECT message, received_ns FROM detections WHERE 1", []
        if since_ns is not None:
            sql += " AND onset_time_ns >= ?"
            args.append(int(since_ns))
        if until_ns is not None:
            sql += " AND onset_time_ns < ?"
            args.append(int(until_ns))
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY onset_time_ns", args).fetchall()
        return [StoredDetection(_detection_dec.decode(d), rec) for d, rec in rows]

    # -- the sinks' durable queue -------------------------------------------

    def outbox_put(
        self,
        sink: str,
        idempotency_key: str,
        body: bytes,
        content_type: str,
        due_ns: int,
        incident_id: str | None = None,
        created_ns: int | None = None,
    ) -> bool:
        """Queue a message for a sink; False when (sink, key) is already queued (or was delivered)."""
        created_ns = now_ns() if created_ns is None else created_ns
        with self._tx() as c:
            return bool(
                c.execute(
                    "INSERT OR IGNORE INTO sink_outbox (sink, idempotency_key, incident_id, content_type, body,"
                    " created_ns, due_ns) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (sink, idempotency_key, incident_id, content_type, body, created_ns, due_ns),
                ).rowcount
            )

    def outbox_has_incident(self, sink: str, incident_id: str) -> bool:
        """Whether any message of this incident was queued for this sink."""
        with self._lock:
            return (
                self._conn.execute(
                    "SELECT 1 FROM sink_outbox WHERE sink = ? AND incident_id = ? LIMIT 1", (sink, incident_id)
                ).fetchone()
                is not None
            )

    def outbox_due(self, now: int, limit: int = 16) -> list[OutboxItem]:
        """Pending messages due at ``now`` (ns), oldest due first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, sink, idempotency_key, incident_id, content_type, body, created_ns, due_ns, attempts"
                " FROM sink_outbox WHERE delivered_ns IS NULL AND failed_ns IS NULL AND due_ns <= ?"
                " ORDER BY due_ns, id LIMIT ?",
                (now, limit),
            ).fetchall()
        return [OutboxItem(*r) for r in rows]

    def outbox_next_due_ns(self) -> int | None:
        """When the next pending message falls due (ns), None when nothing is pending."""
        with self._lock:
            row = self._conn.execute(
                "SELECT MIN(due_ns) FROM sink_outbox WHERE delivered_ns IS NULL AND failed_ns IS NULL"
            ).fetchone()
        return row[0]

    def outbox_delivered(self, item_id: int, at_ns: int) -> None:
        """Mark a message delivered."""
        with self._tx() as c:
            c.execute(
                "UPDATE sink_outbox SET delivered_ns = ?, attempts = attempts + 1, last_error = NULL WHERE id = ?",
                (at_ns, item_id),
            )

    def outbox_retry(self, item_id: int, due_ns: int, error: str) -> None:
        """Count a failed attempt and reschedule the message at ``due_ns``."""
        with self._tx() as c:
            c.execute(
                "UPDATE sink_outbox SET due_ns = ?, attempts = attempts + 1, last_error = ? WHERE id = ?",
                (due_ns, error, item_id),
            )

    def outbox_failed(self, item_id: int, at_ns: int, error: str, count_attempt: bool = True) -> None:
        """Give up on a message (kept with its error for the operator)."""
        with self._tx() as c:
            c.execute(
                "UPDATE sink_outbox SET failed_ns = ?, attempts = attempts + ?, last_error = ? WHERE id = ?",
                (at_ns, int(count_attempt), error, item_id),
            )

    # -- retention -----------------------------------------------------------

    #: Incidents, and detections or deliveries, deleted per transaction by :meth:`prune`: the store's lock (which
    #: the hub takes to store each incident message it publishes) is held for one batch at a time (an incident
    #: goes with its revisions, shots and residuals: hundreds of rows).
    PRUNE_BATCH_INCIDENTS = 10
    PRUNE_BATCH_ROWS = 1000

    def prune(
        self,
        *,
        incidents_before_ns: int | None = None,
        detections_before_ns: int | None = None,
        deliveries_before_ns: int | None = None,
        dry_run: bool = False,
        stop: Callable[[], bool] | None = None,
    ) -> PruneResult:
        """Delete what a retention policy no longer keeps (``[store] keep_*_days``); None: keep that kind for ever.

        * closed incidents whose latest revision and latest review are older than ``incidents_before_ns``,
          with their revisions, shots, residuals and reviews, and the detections that only their shots
          referenced (an open incident is never deleted);
        * detections received before ``detections_before_ns`` that no stored shot references (the
          ``detections = "all"`` mode keeps them; a referenced detection goes with its incident only). By receipt,
          not onset: a replay of old recordings stores detections with old onsets today;
        * sink deliveries delivered or given up before ``deliveries_before_ns`` (pending ones stay).

        In batches (:attr:`PRUNE_BATCH_INCIDENTS`, :attr:`PRUNE_BATCH_ROWS`) of one transaction each, the store's
        lock taken for each batch only, so that the hub writing meanwhile waits for one batch at most.
        ``dry_run``: count without deleting (one transaction, rolled back). SQLite reuses the freed pages, so the
        file stops growing; it shrinks only with ``VACUUM``. ``stop()`` true between two batches ends the pruning
        there (a hub shutting down).
        """
        few, many = (None, None) if dry_run else (self.PRUNE_BATCH_INCIDENTS, self.PRUNE_BATCH_ROWS)
        counts = {"incidents": 0, "detections": 0, "deliveries": 0}
        steps = []
        if incidents_before_ns is not None:
            steps.append(lambda c: self._prune_incidents(c, int(incidents_before_ns), few, counts))
        if detections_before_ns is not None:
            at_d = [0]
            steps.append(lambda c: self._prune_detections(c, int(detections_before_ns), many, counts, at_d))
        if deliveries_before_ns is not None:
            at_o = [0]
            steps.append(lambda c: self._prune_deliveries(c, int(deliveries_before_ns), many, counts, at_o))
        if dry_run:
            with self._lock:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    for step in steps:
                        step(self._conn)
                finally:
                    self._conn.execute("ROLLBACK")
            return PruneResult(**counts)
        for step in steps:
            while True:
                with self._tx() as c:  # (the lock for one batch: the hub's writes go in between)
                    full = step(c)
                if not full or (stop is not None and stop()):
                    break
        return PruneResult(**counts)

    @staticmethod
    def _limit(batch: int | None) -> str:
        return "" if batch is None else f" LIMIT {int(batch)}"

    def _prune_incidents(self, c: sqlite3.Connection, before_ns: int, batch: int | None, counts: dict) -> bool:
        """One batch of old closed incidents (and the detections only they referenced); True if it was full."""
        ids = [r[0] for r in c.execute(
            "SELECT incident_id FROM incidents i WHERE state = 'closed' AND published_ns < ?"
            " AND NOT EXISTS (SELECT 1 FROM reviews v WHERE v.incident_id = i.incident_id AND v.time_ns >= ?)"
            + self._limit(batch), (before_ns, before_ns)).fetchall()]
        if not ids:
            return False
        c.execute("CREATE TEMP TABLE IF NOT EXISTS prune_ids (id TEXT PRIMARY KEY)")
        c.execute("DELETE FROM prune_ids")
        c.executemany("INSERT OR IGNORE INTO prune_ids VALUES (?)", [(i,) for i in ids])
        c.execute("CREATE TEMP TABLE IF NOT EXISTS prune_dets (id TEXT PRIMARY KEY)")
        c.execute("DELETE FROM prune_dets")
        c.execute("INSERT OR IGNORE INTO prune_dets SELECT r.detection_id FROM residuals r JOIN shots s"
                  " ON r.shot_id = s.shot_id WHERE s.incident_id IN (SELECT id FROM prune_ids)")
        # Revisions, shots (and their residuals) and reviews go by ON DELETE CASCADE.
        counts["incidents"] += c.execute(
            "DELETE FROM incidents WHERE incident_id IN (SELECT id FROM prune_ids)").rowcount
        counts["detections"] += c.execute(
            "DELETE FROM detections WHERE detection_id IN (SELECT id FROM prune_dets) AND NOT EXISTS"
            " (SELECT 1 FROM residuals r WHERE r.detection_id = detections.detection_id)").rowcount
        return batch is not None and len(ids) == batch

    def _prune_detections(self, c: sqlite3.Connection, before_ns: int, batch: int | None, counts: dict,
                          cursor: list[int]) -> bool:
        """One batch of detections: those received before ``before_ns`` that no shot references go
        (:meth:`_prune_in_order`; rows are inserted in receipt order, the recorder writing them as they come)."""
        return self._prune_in_order(
            c, "SELECT d.rowid, d.received_ns, CASE WHEN EXISTS (SELECT 1 FROM residuals r WHERE r.detection_id"
            " = d.detection_id) THEN NULL ELSE d.received_ns END FROM detections d WHERE d.rowid > ? ORDER BY d.rowid",
            "DELETE FROM detections WHERE rowid = ?", before_ns, batch, counts, "detections", cursor)

    def _prune_deliveries(self, c: sqlite3.Connection, before_ns: int, batch: int | None, counts: dict,
                          cursor: list[int]) -> bool:
        """One batch of the sinks' queue: deliveries finished before ``before_ns`` go, pending ones stay
        (:meth:`_prune_in_order`; a delivery finishes after it is queued)."""
        return self._prune_in_order(
            c, "SELECT id, created_ns, COALESCE(delivered_ns, failed_ns) FROM sink_outbox WHERE id > ? ORDER BY id",
            "DELETE FROM sink_outbox WHERE id = ?", before_ns, batch, counts, "deliveries", cursor)

    def _prune_in_order(self, c: sqlite3.Connection, select: str, delete: str, before_ns: int, batch: int | None,
                        counts: dict, kind: str, cursor: list[int]) -> bool:
        """One batch in insertion order from rowid ``cursor[0]`` (moved past it). ``select`` gives per row its
        rowid, the time it was inserted by (ns) and the time it may go by (ns; NULL: it stays); rows whose
        time to go is before ``before_ns`` are deleted with ``delete``. True while there may be more: the scan
        ends at the first batch inserted after the cut.

        A cursor, not "the first rows that qualify": rows that stay (detections that stored shots reference,
        pending deliveries) would be read again in every batch (100,000 lone detections behind 300,000
        referenced ones: 290 ms a batch instead of a few).
        """
        rows = c.execute(select + self._limit(batch), (cursor[0],)).fetchall()
        if not rows:
            return False
        cursor[0] = rows[-1][0]
        gone = [(key,) for key, _inserted, goes in rows if goes is not None and goes < before_ns]
        c.executemany(delete, gone)
        counts[kind] += len(gone)
        return batch is not None and len(rows) == batch and min(r[1] for r in rows) < before_ns

    def outbox_health(self, now_ns: int) -> dict[str, int | float | None]:
        """The queue as the hub's health reports it (``core.messages.HubSinkCounts``): pending deliveries, those
        retrying and since when their oldest was queued (s before ``now_ns``), and those given up."""
        with self._lock:
            pending, retrying, oldest = self._conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(attempts > 0), 0), MIN(CASE WHEN attempts > 0 THEN created_ns END)"
                " FROM sink_outbox WHERE delivered_ns IS NULL AND failed_ns IS NULL").fetchone()
            (failed,) = self._conn.execute("SELECT COUNT(*) FROM sink_outbox WHERE failed_ns IS NOT NULL").fetchone()
        return {"pending": int(pending), "retrying": int(retrying), "failed": int(failed),
                "retrying_for_s": None if oldest is None else round(max(0.0, (now_ns - oldest) / 1e9), 3)}

    def outbox_stats(self) -> dict[str, int]:
        """Counts of pending, delivered and failed messages."""
        with self._lock:
            row = self._conn.execute(
                "SELECT COALESCE(SUM(delivered_ns IS NULL AND failed_ns IS NULL), 0),"
                " COALESCE(SUM(delivered_ns IS NOT NULL), 0), COALESCE(SUM(failed_ns IS NOT NULL), 0)"
                " FROM sink_outbox"
            ).fetchone()
        return {"pending": int(row[0]), "delivered": int(row[1]), "failed": int(row[2])}


@dataclass(frozen=True)
class PruneResult:
    """What :meth:`IncidentStore.prune` deleted (or, in a dry run, would delete)."""

    incidents: int = 0
    """Closed incidents, each with its revisions, shots, residuals, reviews and the detections only it referenced."""
    detections: int = 0
    """Detections that no stored shot references, and those that went with their incidents."""
    deliveries: int = 0
    """Sink deliveries delivered or given up."""

    def __bool__(self) -> bool:
        return bool(self.incidents or self.detections or self.deliveries)


class DetectionRecorder:
    """Decides which accepted detections reach the store (``[store] detections``).

    ``associated``: detections wait in memory (at most ``cache_s`` seconds of
    receive time) and are written when a stored shot references them;
    ``all``: every detection is written, in batches; ``none``: nothing.
    """

    def __init__(self, store: IncidentStore, mode: str = "associated", cache_s: float = 300.0) -> None:
        self.store = store
        self.mode = mode
        self.cache_ns = int(cache_s * 1e9)
        self._cache: OrderedDict[str, tuple[m.Detection, int]] = OrderedDict()
        self._pending: list[tuple[m.Detection, int]] = []
        self._lock = threading.Lock()

    def add(self, det: m.Detection, received_ns: int) -> None:
        """Note one accepted detection."""
        if self.mode == "none":
            return
        with self._lock:
            if self.mode == "all":
                self._pending.append((det, received_ns))
                return
            self._cache[det.detection_id] = (det, received_ns)
            self._cache.move_to_end(det.detection_id)
            # Receive times are nearly monotonic: drop from the old end.
            while self._cache:
                _, (_, rec) = next(iter(self._cache.items()))
                if received_ns - rec <= self.cache_ns:
                    break
                self._cache.popitem(last=False)

    def flush(self, inc: m.Incident | None = None) -> int:
        """Write what is due: the batch (``all``) or the detections ``inc`` references (``associated``)."""
        with self._lock:
            if self.mode == "all":
                batch, self._pending = self._pending, []
            elif self.mode == "associated" and inc is not None:
                batch = [
                    self._cache[r.detection_id]
                    for s in inc.shots
                    for r in s.residuals
                    if r.detection_id in self._cache
                ]
            else:
                batch = []
        return self.store.put_detections(batch)
