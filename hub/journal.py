"""The hub's message journal: every message the hub takes in, written before it is handled.

A QoS 1 message is acknowledged to the broker once the hub's handler returns, so a detection
that waits in the associator's pool (its shot not yet made or not yet stored) lives only in the
hub's memory: a hub killed then would lose it, and the shot with it. The journal keeps each
message on disk first (one ``write`` per message, no fsync: it survives the process being killed,
as the store's WAL with ``synchronous = NORMAL`` does, not a power cut), and a restarted hub
replays its last minutes (:mod:`shotline.hub.recovery`).

Format: segment files ``<first received ns>.seg`` in the journal's folder, each a run of records
``received_ns (int64) | topic length (uint16) | payload length (uint32) | topic | payload``
(little-endian). A record cut short by a kill (the last of the last segment) is ignored. A new
segment starts every ``segment_s`` seconds of receive time; segments whose newest record is older
than ``keep_s`` are deleted.

*Sticky* topics (the nodes' retained statuses, which carry their positions) may be days older than
anything else kept: each new segment starts with the latest message of every sticky topic, and
:meth:`MessageJournal.read_since` gives those first, so that a replay knows every node's position.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<qHI")


class MessageJournal:
    """Append-only segments of (received ns, topic, payload) in ``folder``, the last ``keep_s`` seconds."""

    def __init__(self, folder: str | Path, keep_s: float, segment_s: float = 60.0,
                 sticky: Callable[[str], bool] = lambda _topic: False) -> None:
        if not keep_s > 0 or not segment_s > 0:
            raise ValueError("keep_s and segment_s must be > 0 seconds")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.keep_ns = int(keep_s * 1e9)
        self.segment_ns = int(segment_s * 1e9)
        self.sticky = sticky
        self._fd: int | None = None
        self._segment_start_ns = 0
        # The sticky topics' latest messages, from the newest segment (which starts with all of them).
        segs = self._segments()
        self._sticky: dict[str, bytes] = {
            topic: payload for topic, payload, _ in self._records(segs[-1][1]) if sticky(topic)} if segs else {}

    def _segments(self) -> list[tuple[int, Path]]:
        """The segment files, oldest first, with the receive time (ns) of their first record."""
        out = []
        for p in self.folder.glob("*.seg"):
            try:
                out.append((int(p.stem), p))
            except ValueError:
                continue  # not ours
        return sorted(out)

    def append(self, topic: str, payload: bytes, received_ns: int) -> None:
        """Write one message (before the hub handles it)."""
        if self._fd is None or received_ns - self._segment_start_ns >= self.segment_ns:
            self._rotate(received_ns)
        self._write(topic, payload, received_ns)
        if self.sticky(topic):
            self._sticky[topic] = payload

    def _write(self, topic: str, payload: bytes, received_ns: int) -> None:
        t = topic.encode()
        os.write(self._fd, _HEADER.pack(received_ns, len(t), len(payload)) + t + payload)  # type: ignore[arg-type]

    def _rotate(self, received_ns: int) -> None:
        self.close()
        path = self.folder / f"{received_ns}.seg"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._segment_start_ns = received_ns
        for topic, payload in self._sticky.items():
            self._write(topic, payload, received_ns)
        self.prune(received_ns)

    def prune(self, now_ns: int) -> int:
        """Delete the segments that hold nothing received in the last ``keep_s`` before ``now_ns``; returns how
        many. (A segment's newest record is older than the next segment's first.)"""
        segs = self._segments()
        n = 0
        for (_, path), (next_start, _) in zip(segs, segs[1:], strict=False):
            if now_ns - next_start > self.keep_ns:
                path.unlink(missing_ok=True)
                n += 1
        return n

    def read_since(self, since_ns: int) -> Iterator[tuple[str, bytes, int]]:
        """(topic, payload, received ns) of every record received at or after ``since_ns``, in the order written;
        first, the latest record of each sticky topic received before (with its receive time)."""
        segs = self._segments()
        before: dict[str, tuple[str, bytes, int]] = {}
        started = False
        for i, (_start, path) in enumerate(segs):
            if i + 1 < len(segs) and segs[i + 1][0] < since_ns:
                continue  # wholly before since_ns (the next segment starts with its sticky records)
            for topic, payload, rec in self._records(path):
                if rec < since_ns:
                    if self.sticky(topic):
                        before[topic] = (topic, payload, rec)
                    continue
                if not started:
                    started = True
                    yield from before.values()
                yield topic, payload, rec
        if not started:
            yield from before.values()

    @staticmethod
    def _records(path: Path) -> Iterator[tuple[str, bytes, int]]:
        """The complete records of one segment file."""
        data = path.read_bytes()
        k = 0
        while k + _HEADER.size <= len(data):
            rec, n_topic, n_payload = _HEADER.unpack_from(data, k)
            end = k + _HEADER.size + n_topic + n_payload
            if end > len(data):
                log.warning("journal %s: the last record is cut short (the hub was killed writing it)", path)
                return
            yield data[k + _HEADER.size:k + _HEADER.size + n_topic].decode(errors="replace"), \
                data[k + _HEADER.size + n_topic:end], rec
            k = end

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
