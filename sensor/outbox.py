"""The outbox: detections on disk until the broker acknowledges them.

Every detection is written to an SQLite database (WAL journal) *before* it is
handed to MQTT, and deleted only when the broker's PUBACK arrives. A broker
outage or a reboot therefore loses nothing: at start the node publishes what is
left. Detection ids are stable, so a detection sent twice (sent, then the node
restarted before the PUBACK) is dropped by the hub. The queue is bounded: past
``max_rows`` the oldest rows are evicted, and the count of evicted detections
is kept in the database so that it survives restarts and shows in health.

:class:`OutboxPublisher` is the thread that moves rows to the transport.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shotline.core.transport import OutMessage, Transport, TransportError

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    detection_id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class Row:
    seq: int
    detection_id: str
    topic: str
    payload: bytes


class Outbox:
    """A bounded, durable FIFO of messages keyed by detection id.

    ``path``: the SQLite file, or ``None`` for an in-memory queue (replays, the
    demo: same behaviour, nothing survives the process). Thread-safe: the node
    thread puts, the MQTT network thread acknowledges.
    """

    def __init__(self, path: str | Path | None, *, max_rows: int = 100_000, synchronous: str = "full") -> None:
        if max_rows < 1:
            raise ValueError("max_rows must be >= 1")
        self.path = Path(path) if path is not None else None
        self.max_rows = int(max_rows)
        self._lock = threading.Lock()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(
                str(self.path) if self.path is not None else ":memory:",
                check_same_thread=False,
                isolation_level=None,  # autocommit; explicit transactions below
            )
            if self.path is not None:
                mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if mode.lower() != "wal":
                    log.warning("outbox %s: journal mode %s, not WAL", self.path, mode)
            self._db.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise OSError(f"cannot open outbox {self.path}: {exc}") from None
        self._depth = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    # -- writing ---------------------------------------------------------------
    def put(self, detection_id: str, topic: str, payload: bytes, created_ns: int) -> bool:
        """Store one message; False if this detection id is already queued. Evicts the oldest past the bound."""
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                cur.execute(
                    "INSERT OR IGNORE INTO outbox (detection_id, topic, payload, created_ns) VALUES (?, ?, ?, ?)",
                    (detection_id, topic, payload, int(created_ns)),
                )
                added = cur.rowcount == 1
                self._depth += int(added)
                excess = self._depth - self.max_rows
                if excess > 0:
                    cur.execute(
                        "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?)", (excess,)
                    )
                    n = cur.rowcount
                    self._depth -= n
                    cur.execute(
                        "INSERT INTO counters (name, value) VALUES ('evicted', ?) "
                        "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                        (n,),
                    )
                    log.warning("outbox full (%d): evicted the %d oldest detection(s)", self.max_rows, n)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return added

    def ack(self, detection_id: str) -> bool:
        """Delete an acknowledged message; False if it was not (or no longer) queued."""
        with self._lock:
            cur = self._db.execute("DELETE FROM outbox WHERE detection_id = ?", (detection_id,))
            gone = cur.rowcount == 1
            self._depth -= int(gone)
        return gone

    # -- reading ---------------------------------------------------------------
    def pending(self, limit: int = 1000, after_seq: int = 0) -> list[Row]:
        """The oldest queued messages (after ``after_seq``), oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, detection_id, topic, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [Row(int(s), d, t, bytes(p)) for s, d, t, p in rows]

    def __contains__(self, detection_id: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM outbox WHERE detection_id = ?", (detection_id,)).fetchone() is not None

    @property
    def depth(self) -> int:
        """Messages waiting for an acknowledgement."""
        return self._depth

    @property
    def evicted(self) -> int:
        """Messages evicted (queue full) over the life of the database."""
        with self._lock:
            row = self._db.execute("SELECT value FROM counters WHERE name = 'evicted'").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        with self._lock:
            self._db.close()


class OutboxPublisher:
    """Moves outbox rows to a transport; deletes each on the broker's acknowledgement.

    Each row is handed to the transport once per connection; the MQTT client
    retransmits what is in flight after a reconnect. A row still unacknowledged
    ``republish_s`` after it was sent is sent again, and every row is sent again
    after the process restarts: duplicates are harmless (stable ids), losses are not.
    """

    def __init__(
        self,
        outbox: Outbox,
        transport: Transport,
        *,
        republish_s: float = 60.0,
        max_in_flight: int = 1000,
        on_acked: Callable[[str], None] | None = None,
    ) -> None:
        self.outbox = outbox
        self.transport = transport
        self.republish_s = republish_s
        self.on_acked = on_acked
        # Bounded hand-over: a backlog of 100k rows after an outage must not
        # all sit in the MQTT client's memory at once.
        self.max_in_flight = max_in_flight
        self._sent: dict[str, float] = {}  # detection_id -> monotonic time sent
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._throttled = False
        self.n_sent = 0
        self.n_acked = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="outbox", daemon=True)
            self._thread.start()

    def kick(self) -> None:
        """Something was queued: publish now rather than at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _loop(self) -> None:
        was_connected = False
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            connected = self.transport.connected
            if connected and not was_connected:
                # New connection: the client retransmits its own in-flight
                # messages, but rows from before a restart are not among them.
                with self._lock:
                    self._sent = {k: v for k, v in self._sent.items() if k in self.outbox}
            was_connected = connected
            if connected:
                try:
                    self.publish_pending()
                except Exception:  # keep the thread alive whatever the transport does
                    log.exception("outbox: publishing failed; retrying")
                    self._stop.wait(1.0)

    def publish_pending(self) -> int:
        """Send every queued row not in flight (or in flight too long); return how many."""
        now = time.monotonic()
        n, after = 0, 0
        while True:
            rows = self.outbox.pending(limit=500, after_seq=after)
            if not rows:
                break
            for row in rows:
                after = row.seq
                with self._lock:
                    t_sent = self._sent.get(row.detection_id)
                    if t_sent is not None and now - t_sent < self.republish_s:
                        continue
                    if t_sent is None and len(self._sent) >= self.max_in_flight:
                        self._throttled = True
                        return n
                    self._sent[row.detection_id] = now
                try:
                    self.transport.publish(
                        OutMessage(row.topic, row.payload, 1, False), on_ack=self._acker(row.detection_id)
                    )
                except TransportError as exc:
                    log.warning("outbox: %s", exc)
                    with self._lock:
                        self._sent.pop(row.detection_id, None)
                    return n
                n += 1
                self.n_sent += 1
            if self._stop.is_set():
                break
        return n

    def _acker(self, detection_id: str) -> Callable[[], None]:
        def acked() -> None:
            self.outbox.ack(detection_id)
            with self._lock:
                self._sent.pop(detection_id, None)
                self.n_acked += 1
                if self._throttled and len(self._sent) < self.max_in_flight // 2:
                    self._throttled = False
                    self._wake.set()
            if self.on_acked is not None:
                self.on_acked(detection_id)

        return acked
