"""Start the review page beside a running hub: uvicorn in a background thread.

::

    web = start_web(cfg, service)            # cfg: HubConfig (its ``web`` table) or WebSettings
    print(f"review page: {web.url}")
    ...
    web.stop()

With a :class:`~shotline.hub.service.HubService`, the page reads the
service's store and node registry and receives every published incident
(``service.listeners``) to push to open browsers. Without one (replays,
tests), give ``store`` and optionally ``registry``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from shotline.core.timebase import now_ns

from .app import WebContext, create_app
from .auth import UserDB
from .clips import ChainClips, ClipProvider, FolderClips, NodeHttpClips
from .events import EventBus
from .nodes import NodeMonitor
from .settings import WebSettings, resolve_paths
from .views import summary

log = logging.getLogger(__name__)


@dataclass
class WebServer:
    """A running review page: ``url`` to print, ``stop()`` to end it."""

    url: str
    host: str
    port: int
    ctx: WebContext
    _server: Any
    _thread: threading.Thread
    _stop_evt: threading.Event
    _monitor: threading.Thread
    _detach: Callable[[], None]

    def stop(self, timeout_s: float = 5.0) -> None:
        """Close live streams, stop serving and join the threads (idempotent)."""
        if self._stop_evt.is_set():
            return
        self._stop_evt.set()
        self._detach()
        self.ctx.bus.close()
        self._server.should_exit = True
        self._thread.join(timeout=timeout_s)
        self._monitor.join(timeout=timeout_s)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout=timeout_s)
        log.info("review page stopped")

    def __enter__(self) -> WebServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def clip_provider_for(settings: WebSettings) -> ClipProvider:
    """Clips from ``clip_dir`` (if set), then from the nodes' clip servers (``node_clip_urls``)."""
    providers: list[ClipProvider] = []
    if settings.clip_dir:
        providers.append(FolderClips(settings.clip_dir))
    if settings.node_clip_urls:
        token = None
        if settings.clip_token_file:
            token = Path(settings.clip_token_file).read_text(encoding="utf-8").strip()
        providers.append(NodeHttpClips(settings.node_clip_urls, token=token, timeout_s=settings.clip_timeout_s))
    return ChainClips(providers)


def start_web(
    cfg: Any,
    service: Any | None = None,
    store: Any | None = None,
    host: str | None = None,
    port: int | None = None,
    *,
    registry: Any | None = None,
    clips: ClipProvider | None = None,
    on_review: Callable[[str, Any], None] | None = None,
    users: UserDB | None = None,
    base_dir: str | Path | None = None,
    site: str | None = None,
    clock: Callable[[], int] = now_ns,
    timeout_s: float = 10.0,
    hub: Callable[[], dict] | None = None,
) -> WebServer:
    """Serve the review page; return once it listens.

    ``cfg``: a HubConfig (its ``web`` table, or defaults when it has none) or
    a :class:`WebSettings`. ``service``: a HubService (store, registry and live
    incidents come from it). ``store``/``registry``: used when there is no
    service (or to override). ``host``/``port`` override the settings (port 0:
    any free port). ``on_review(incident_id, review)`` is called after each
    stored review (wire it to publish the incident update). ``base_dir``:
    folder that relative paths in the settings are relative to (the config's).
    ``hub``: what ``GET /api/hub`` serves (default: the service's ``health``; none without a service).
    Raises OSError when the address is taken, ValueError for unusable settings.
    """
    import uvicorn

    settings = cfg if isinstance(cfg, WebSettings) else getattr(cfg, "web", None) or WebSettings()
    settings = resolve_paths(settings, base_dir)
    site = site or getattr(cfg, "site", "") or (getattr(service.cfg, "site", "") if service is not None else "")
    if store is None:
        if service is None:
            raise ValueError("start_web needs a service or a store")
        store = service.store
    if registry is None and service is not None:
        registry = lambda: service.pipeline.registry  # noqa: E731 (the pipeline may be replaced)
    users = users or UserDB(settings.users_path)
    if not users.users():
        log.warning("no review-page accounts in %s: create one with 'shotline-hub users add NAME --role operator'",
                    settings.users_path)
    bus = EventBus()
    monitor = NodeMonitor(registry, settings, clock)
    ctx = WebContext(settings=settings, store=store, users=users, nodes=monitor,
                     clips=clips if clips is not None else clip_provider_for(settings),
                     bus=bus, on_review=on_review, site=site, clock=clock,
                     hub=hub if hub is not None else (service.health if service is not None else None))
    app = create_app(ctx)

    def on_incident(out: Any, published_ns: int) -> None:
        inc = out.incident
        row = SimpleNamespace(incident=inc, first_published_ns=published_ns,
                              review_state=store.review_state(inc.incident_id) or "unreviewed", review_label=None)
        bus.publish("incident", summary(row))

    detach: Callable[[], None] = lambda: None  # noqa: E731
    if service is not None:
        service.listeners.append(on_incident)

        def detach() -> None:
            try:
                service.listeners.remove(on_incident)
            except ValueError:
                pass

    config = uvicorn.Config(app, host=host or settings.host, port=settings.port if port is None else port,
                            log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2,
                            ws="none")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="web", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive():
            detach()
            raise OSError(f"review page cannot listen on {config.host}:{config.port} (address in use?)")
        if time.monotonic() > deadline:
            server.should_exit = True
            detach()
            raise OSError(f"review page did not start within {timeout_s} s")
        time.sleep(0.01)
    sock = server.servers[0].sockets[0].getsockname()
    bound_host, bound_port = sock[0], sock[1]
    shown = "127.0.0.1" if bound_host in ("0.0.0.0", "::") else bound_host
    url = f"http://{'[' + shown + ']' if ':' in shown else shown}:{bound_port}/"

    stop_evt = threading.Event()

    def watch_nodes() -> None:
        while not stop_evt.wait(2.0):
            try:
                for node_id in monitor.poll():
                    snap = monitor.snapshot(node_id)
                    if snap:
                        bus.publish("node", snap[0])
            except Exception:
                log.exception("node health poll failed")

    mon = threading.Thread(target=watch_nodes, name="web-nodes", daemon=True)
    mon.start()
    log.info("review page on %s", url)
    return WebServer(url, bound_host, bound_port, ctx, server, thread, stop_evt, mon, detach)
