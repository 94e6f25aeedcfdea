"""Fan-out of live events (incidents, reviews, node health) from hub threads to browsers (SSE).

The hub publishes from its own threads; each connected browser has an
asyncio queue on the web server's event loop. :meth:`EventBus.publish` hands
the event over with ``call_soon_threadsafe``. A browser that falls behind
(queue full) gets a ``resync`` event instead of the lost ones and reloads
its list: a slow client never slows the hub.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import msgspec

log = logging.getLogger(__name__)

CLOSE = object()
"""Sentinel put on every queue when the server stops."""


class EventBus:
    """Thread-safe publisher; subscribers are asyncio queues (one per SSE connection)."""

    def __init__(self, queue_size: int = 1000) -> None:
        self.queue_size = queue_size
        self._subs: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = []
        self._lock = threading.Lock()
        self.n_published = 0
        self.n_overflows = 0

    def subscribe(self) -> asyncio.Queue:
        """A new queue on the running loop (call from a coroutine)."""
        q: asyncio.Queue = asyncio.Queue(self.queue_size)
        with self._lock:
            self._subs.append((asyncio.get_running_loop(), q))
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        with self._lock:
            self._subs = [(lp, x) for lp, x in self._subs if x is not q]

    @property
    def n_subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    def publish(self, kind: str, data: Any) -> None:
        """Send ``data`` (msgspec-encodable) as an SSE event named ``kind`` to every subscriber."""
        frame = f"event: {kind}\ndata: {msgspec.json.encode(data).decode()}\n\n"
        self._send(frame)
        self.n_published += 1

    def close(self) -> None:
        """Tell every stream to end (server shutdown)."""
        self._send(CLOSE)

    def _send(self, item: object) -> None:
        with self._lock:
            subs = list(self._subs)
        for loop, q in subs:
            try:
                loop.call_soon_threadsafe(self._put, q, item)
            except RuntimeError:  # loop closed: the connection is gone
                self.unsubscribe(q)

    def _put(self, q: asyncio.Queue, item: object) -> None:
        try:
            q.put_nowait(item)
        except asyncio.QueueFull:
            self.n_overflows += 1
            while not q.empty():
                q.get_nowait()
            q.put_nowait("event: resync\ndata: {}\n\n" if item is not CLOSE else CLOSE)
