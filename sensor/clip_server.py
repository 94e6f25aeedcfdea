"""A small HTTP endpoint on the node: the hub fetches clips for review.

Why HTTP rather than MQTT request/response: a clip is 100-300 kB, which MQTT
brokers handle poorly on a shared cellular link, and a plain ``GET`` is easy
to fetch, cache, resume and test with curl. The node's retained status says
it is online; the hub (or a technician) then asks::

    GET /clips                      -> JSON list [{"detection_id", "bytes", "mtime_s"}], newest first
    GET /clips/<detection_id>.flac  -> audio/flac, 404 if pruned or never written
    GET /health                     -> JSON: the node's latest health snapshot

With ``token_file`` set, every request needs ``Authorization: Bearer <token>``
(401 otherwise). Serve it on a VPN or management address; see docs/sensor-node.md.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .clips import CLIP_ID, ClipStore

log = logging.getLogger(__name__)


class ClipServer:
    """Serves a :class:`ClipStore` (and a health snapshot) over HTTP in a daemon thread."""

    def __init__(
        self,
        store: ClipStore,
        *,
        host: str = "0.0.0.0",
        port: int = 8780,
        token: str | None = None,
        health: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.store = store
        self.token = token
        self.health = health
        server = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "shotline-node"

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("clip server %s: " + fmt, self.client_address[0], *args)

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server._handle(self)

            def do_HEAD(self) -> None:  # noqa: N802
                server._handle(self, head=True)

        try:
            self.httpd = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise OSError(f"clip server cannot listen on {host}:{port}: {exc.strerror}") from None
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def start(self) -> ClipServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="clip-server", daemon=True)
        self._thread.start()
        log.info("clip server on port %d", self.port)
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ClipServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- requests --------------------------------------------------------------
    def _handle(self, req: BaseHTTPRequestHandler, head: bool = False) -> None:
        if self.token is not None:
            got = req.headers.get("Authorization", "")
            if not hmac.compare_digest(got.encode(), f"Bearer {self.token}".encode()):
                return self._send(req, HTTPStatus.UNAUTHORIZED, b"token required\n", "text/plain", head)
        path = req.path.split("?", 1)[0]
        if path == "/clips":
            rows = [{"detection_id": d, "bytes": n, "mtime_s": t} for d, n, t in self.store.list()]
            return self._send(req, HTTPStatus.OK, json.dumps(rows).encode(), "application/json", head)
        if path == "/health" and self.health is not None:
            return self._send(req, HTTPStatus.OK, json.dumps(self.health()).encode(), "application/json", head)
        if path.startswith("/clips/") and path.endswith(".flac"):
            det_id = path[len("/clips/"):-len(".flac")]
            if not CLIP_ID.fullmatch(det_id):
                return self._send(req, HTTPStatus.BAD_REQUEST, b"bad detection id\n", "text/plain", head)
            try:
                data = self.store.path_for(det_id).read_bytes()
            except FileNotFoundError:
                return self._send(req, HTTPStatus.NOT_FOUND, b"no such clip (pruned or not written)\n",
                                  "text/plain", head)
            return self._send(req, HTTPStatus.OK, data, "audio/flac", head)
        return self._send(req, HTTPStatus.NOT_FOUND, b"not found\n", "text/plain", head)

    @staticmethod
    def _send(req: BaseHTTPRequestHandler, status: HTTPStatus, body: bytes, ctype: str, head: bool) -> None:
        req.send_response(status)
        req.send_header("Content-Type", ctype)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        if not head:
            req.wfile.write(body)
