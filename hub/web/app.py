"""The review page's web application (FastAPI): pages, JSON API, live events, clips, tiles.

Everything except ``/login`` needs a session: pages redirect to the login
page, API calls get 401. State-changing requests (review, logout) need the
session's CSRF token and, when the browser sends one, a same-origin
``Origin``. Read-only accounts (role ``viewer``) get 403 on reviews.

Routes (all JSON unless noted)::

    GET  /login, POST /login (form), POST /logout          HTML / redirects
    GET  /                                                 the page (HTML)
    GET  /static/<file>                                    JS, CSS, vendored Leaflet
    GET  /api/config                                       user, role, CSRF token, basemap, labels
    GET  /api/incidents?since&until&state&review&cls&bbox&limit&offset
    GET  /api/incidents/points?...                         compact map points (same filters)
    GET  /api/incidents/{id}                               detail
    GET  /api/incidents/{id}/traces?shot&before&after&bins aligned waveform envelopes
    POST /api/incidents/{id}/review                        {decision, label, note}
    GET  /api/clips/{detection_id}.wav?node=               audio (WAV)
    GET  /api/clips/{detection_id}/spectrogram.png?node=   PNG
    GET  /api/nodes                                        sensor health
    GET  /api/hub                                          the hub's own health (counters, busy fraction)
    GET  /api/events                                       server-sent events
    GET  /tiles/{z}/{x}/{y}, GET /overlay                  local PMTiles tiles / overlay image
"""

from __future__ import annotations

import asyncio
import html
import logging
import mimetypes
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.exceptions import HTTPException as StarletteHTTPException

from shotline.core.timebase import now_ns
from shotline.core.version import package_version

from . import views
from .auth import Session, Sessions, UserDB, same_token
from .clips import CLIP_ID, ClipProvider, spectrogram_png, wav_bytes
from .events import CLOSE, EventBus
from .nodes import NodeMonitor
from .reviews import LABELS, ReviewError, ReviewService, review_dict
from .settings import WebSettings

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
STATIC = HERE / "static"
TEMPLATES = HERE / "templates"
SESSION_COOKIE = "shotline_session"
LOGIN_CSRF_COOKIE = "shotline_login_csrf"


class _NoClips:
    def get(self, detection_id: str, node_id: str | None = None) -> None:
        return None


@dataclass
class WebContext:
    """What the application serves from: the store, node health, clips, accounts, live events."""

    settings: WebSettings
    store: Any
    users: UserDB
    nodes: NodeMonitor
    clips: ClipProvider = field(default_factory=_NoClips)
    bus: EventBus = field(default_factory=EventBus)
    on_review: Callable[[str, Any], None] | None = None
    site: str = ""
    clock: Callable[[], int] = now_ns
    hub: Callable[[], dict[str, Any]] | None = None
    """The hub's health (:meth:`~shotline.hub.service.HubService.health`); None: no hub in this process."""
    sessions: Sessions = field(init=False)
    reviews: ReviewService = field(init=False)
    _login_failures: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sessions = Sessions(self.settings.session_ttl_s)
        self.reviews = ReviewService(self.store, on_review=self.on_review, notify=self.bus.publish, clock=self.clock)


class _SecurityHeaders:
    """ASGI middleware: security headers on every response (works with streaming responses)."""

    def __init__(self, app: Any, csp: str) -> None:
        self.app = app
        self.headers = [
            (b"content-security-policy", csp.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
            (b"cross-origin-opener-policy", b"same-origin"),
        ]

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def wrapped(message: dict) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + self.headers
            await send(message)

        await self.app(scope, receive, wrapped)


def _csp(settings: WebSettings) -> str:
    img = "'self' data: blob:"
    if settings.tile_url and settings.tile_url.startswith("http"):
        u = urlsplit(settings.tile_url.replace("{s}", "a"))
        img += f" {u.scheme}://{u.netloc.replace('a.', '*.', 1) if '{s}' in settings.tile_url else u.netloc}"
    return (f"default-src 'self'; img-src {img}; media-src 'self' blob:; style-src 'self' 'unsafe-inline'; "
            "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")


def _render(name: str, **values: str) -> str:
    # Values are HTML-escaped here; templates hold no other dynamic content.
    return Template((TEMPLATES / name).read_text(encoding="utf-8")).substitute(
        {k: html.escape(v, quote=True) for k, v in values.items()})


def _parse_time(v: str | None, name: str) -> int | None:
    """Integer ns, or ISO 8601 (naive = UTC)."""
    if v is None or v == "":
        return None
    if v.lstrip("-").isdigit():
        return int(v)
    from datetime import UTC, datetime

    try:
        t = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(400, f"{name}: not integer nanoseconds or ISO 8601: {v!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000


def _filters(since: str | None, until: str | None, state: list[str] | None, review: list[str] | None,
             cls: list[str] | None, bbox: str | None) -> dict[str, Any]:
    f: dict[str, Any] = {"since_ns": _parse_time(since, "since"), "until_ns": _parse_time(until, "until")}
    for key, vals, allowed in (("states", state, ("new", "updated", "closed")),
                               ("review_states", review, ("unreviewed", "confirmed", "dismissed", "relabelled")),
                               ("event_classes", cls, ("gunshot", "firework", "other", "unknown"))):
        vals = [x for v in (vals or []) for x in v.split(",") if x]
        bad = [v for v in vals if v not in allowed]
        if bad:
            raise HTTPException(400, f"{key}: unknown value(s) {bad}; allowed: {', '.join(allowed)}")
        f[key] = vals or None
    if bbox:
        try:
            b = tuple(float(x) for x in bbox.split(","))
        except ValueError:
            raise HTTPException(400, "bbox must be min_lon,min_lat,max_lon,max_lat (degrees)") from None
        if len(b) != 4 or not (b[0] <= b[2] and b[1] <= b[3]):
            raise HTTPException(400, "bbox must be min_lon,min_lat,max_lon,max_lat with min <= max")
        f["bbox"] = b
    return f


def _ctx(request: Request) -> WebContext:
    return request.app.state.ctx


def session_or_none(request: Request) -> Session | None:
    """The request's live session, if any."""
    return _ctx(request).sessions.get(request.cookies.get(SESSION_COOKIE))


def require_session(request: Request) -> Session:
    sess = session_or_none(request)
    if sess is None:
        raise HTTPException(401, "login required")
    return sess


def _same_origin(request: Request) -> bool:
    # Browsers send Origin on every cross-site POST; a client that sends none is not a browser.
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def require_csrf(request: Request, sess: Annotated[Session, Depends(require_session)]) -> Session:
    token = request.headers.get("x-csrf-token")
    if token is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        token = (await request.form()).get("csrf_token")  # type: ignore[assignment]
    if not same_token(token, sess.csrf) or not _same_origin(request):
        raise HTTPException(403, "CSRF check failed: reload the page")
    return sess


def require_operator(sess: Annotated[Session, Depends(require_csrf)]) -> Session:
    if sess.role != "operator":
        raise HTTPException(403, "read-only account: reviews need the operator role")
    return sess


SessionDep = Annotated[Session, Depends(require_session)]
CsrfDep = Annotated[Session, Depends(require_csrf)]
OperatorDep = Annotated[Session, Depends(require_operator)]
ListQ = Annotated[list[str] | None, Query()]


def create_app(ctx: WebContext) -> FastAPI:
    """The FastAPI application over ``ctx`` (no interactive API docs: nothing public but the login page)."""
    s = ctx.settings
    app = FastAPI(title="Shotline review", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ctx = ctx
    pmtiles_reader = _open_pmtiles(s.pmtiles) if s.pmtiles else None

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        wants_html = "text/html" in request.headers.get("accept", "") and not request.url.path.startswith("/api/")
        if exc.status_code == 401 and wants_html:
            nxt = request.url.path if request.url.path not in ("/login", "/logout") else "/"
            return RedirectResponse(f"/login?next={quote(nxt)}", status_code=303)
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    # -- login ----------------------------------------------------------------------------
    def _login_page(error: str = "", nxt: str = "/", status: int = 200) -> HTMLResponse:
        token = secrets.token_urlsafe(32)
        resp = HTMLResponse(_render("login.html", error=error, csrf=token, next=nxt, site=ctx.site or "Shotline"),
                            status_code=status)
        resp.headers["cache-control"] = "no-store"
        resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=s.secure_cookies,
                        path="/login", max_age=3600)
        return resp

    def _safe_next(nxt: str | None) -> str:
        # Only local paths: no open redirect to another site.
        return nxt if nxt and nxt.startswith("/") and not nxt.startswith("//") and "\\" not in nxt else "/"

    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request, next: str | None = None) -> Response:  # noqa: A002 (query name)
        if session_or_none(request) is not None:
            return RedirectResponse(_safe_next(next), status_code=303)
        return _login_page(nxt=_safe_next(next))

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = await request.form()
        nxt = _safe_next(str(form.get("next") or "/"))
        if not same_token(str(form.get("csrf_token") or ""), request.cookies.get(LOGIN_CSRF_COOKIE)):
            return _login_page("The form expired; please sign in again.", nxt, status=403)
        ip = request.client.host if request.client else "?"
        now = time.monotonic()
        fails = [t for t in ctx._login_failures.get(ip, []) if now - t < 300]
        if len(fails) >= 10:
            return _login_page("Too many failed attempts; wait a few minutes.", nxt, status=429)
        user = str(form.get("username") or "")
        role = await asyncio.to_thread(ctx.users.verify, user, str(form.get("password") or ""))
        if role is None:
            ctx._login_failures[ip] = [*fails, now]
            log.warning("failed login for %r from %s", user, ip)
            return _login_page("Wrong user name or password.", nxt, status=401)
        ctx._login_failures.pop(ip, None)
        token, _ = ctx.sessions.create(user, role)
        log.info("%s (%s) logged in from %s", user, role, ip)
        resp = RedirectResponse(nxt, status_code=303)
        resp.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", secure=s.secure_cookies, path="/")
        resp.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
        return resp

    @app.post("/logout")
    def logout(request: Request, sess: CsrfDep) -> Response:
        ctx.sessions.drop(request.cookies.get(SESSION_COOKIE))
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(SESSION_COOKIE, path="/")
        return resp

    # -- page and static files ----------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse)
    def index(sess: SessionDep) -> Response:
        resp = HTMLResponse(_render("index.html", site=ctx.site or "Shotline", version=package_version()))
        resp.headers["cache-control"] = "no-store"
        return resp

    static_root = STATIC.resolve()

    @app.get("/static/{path:path}")
    def static(path: str, sess: SessionDep) -> Response:
        p = (static_root / path).resolve()
        if not p.is_relative_to(static_root) or not p.is_file():
            raise HTTPException(404, "not found")
        return FileResponse(p, media_type=mimetypes.guess_type(p.name)[0] or "application/octet-stream",
                            headers={"cache-control": "private, max-age=300"})

    # -- API ------------------------------------------------------------------------------
    @app.get("/api/config")
    def config(sess: SessionDep) -> dict[str, Any]:
        tiles = None
        if s.tile_url:
            tiles = {"url": s.tile_url, "attribution": s.tile_attribution, "max_zoom": s.tile_max_zoom}
        elif pmtiles_reader is not None:
            tiles = {"url": "/tiles/{z}/{x}/{y}", "attribution": s.tile_attribution,
                     "max_zoom": pmtiles_reader[1].get("max_zoom", s.tile_max_zoom)}
        overlay = {"url": "/overlay", "bounds": s.overlay_bounds} if s.overlay_image else None
        return {"user": sess.user, "role": sess.role, "csrf": sess.csrf, "site": ctx.site,
                "tiles": tiles, "overlay": overlay, "page_size": s.page_size, "labels": list(LABELS),
                "version": package_version(), "server_time_ns": ctx.clock()}

    @app.get("/api/incidents")
    def incidents(sess: SessionDep, since: str | None = None, until: str | None = None,
                  state: ListQ = None, review: ListQ = None,
                  cls: ListQ = None, bbox: str | None = None,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                  offset: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
        f = _filters(since, until, state, review, cls, bbox)
        rows = ctx.store.list_incidents(**f, limit=limit, offset=offset)
        return {"total": ctx.store.count_incidents(**f), "offset": offset, "limit": limit,
                "items": [views.summary(r) for r in rows]}

    @app.get("/api/incidents/points")
    def points(sess: SessionDep, since: str | None = None, until: str | None = None,
               state: ListQ = None, review: ListQ = None,
               cls: ListQ = None, bbox: str | None = None,
               limit: Annotated[int, Query(ge=1, le=20000)] = 5000) -> dict[str, Any]:
        rows = ctx.store.list_incidents(**_filters(since, until, state, review, cls, bbox), limit=limit)
        return {"points": [views.point(r) for r in rows]}

    def _record(incident_id: str) -> Any:
        rec = ctx.store.get_incident(incident_id)
        if rec is None:
            raise HTTPException(404, f"no incident {incident_id!r}")
        return rec

    @app.get("/api/incidents/{incident_id}")
    def incident(incident_id: str, sess: SessionDep) -> dict[str, Any]:
        return views.detail(_record(incident_id), ctx.nodes.positions())

    @app.get("/api/incidents/{incident_id}/traces")
    def incident_traces(incident_id: str, sess: SessionDep, shot: str | None = None,
                        before: Annotated[float, Query(gt=0, le=2.0)] = 0.02,
                        after: Annotated[float, Query(gt=0, le=3.0)] = 0.1,
                        bins: Annotated[int, Query(ge=50, le=4000)] = 600) -> dict[str, Any]:
        d = views.detail(_record(incident_id), ctx.nodes.positions())
        shots = [x for x in d["shots"] if shot is None or x["shot_id"] == shot]
        if not shots:
            raise HTTPException(404, f"no shot {shot!r} in incident {incident_id!r}")
        sh = shots[0]
        return {"shot_id": sh["shot_id"], "time_ns": sh["time_ns"], "before_s": before, "after_s": after,
                "traces": views.traces(sh, ctx.clips, before_s=before, after_s=after, n_bins=bins)}

    @app.post("/api/incidents/{incident_id}/review")
    async def review(incident_id: str, request: Request, sess: OperatorDep) -> Response:
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("application/json"):
            try:
                body = await request.json()
            except ValueError:
                raise HTTPException(400, "body is not JSON") from None
            if not isinstance(body, dict):
                raise HTTPException(400, "body must be a JSON object {decision, label, note}")
        else:
            body = dict(await request.form())
        try:
            rev = await asyncio.to_thread(ctx.reviews.review, incident_id, sess.user, str(body.get("decision") or ""),
                                          label=body.get("label"), note=str(body.get("note") or ""))
        except ReviewError as exc:
            raise HTTPException(exc.status, str(exc)) from None
        if not ctype.startswith("application/json"):  # a plain HTML form post: back to the page
            return RedirectResponse(f"/#{quote(incident_id)}", status_code=303)
        return JSONResponse({"review": review_dict(rev), "review_state": ctx.store.review_state(incident_id)})

    def _clip(detection_id: str, node: str | None) -> Any:
        if not CLIP_ID.fullmatch(detection_id):
            raise HTTPException(400, "bad detection id")
        clip = ctx.clips.get(detection_id, node)
        if clip is None:
            raise HTTPException(404, f"no clip for detection {detection_id!r} (not fetched, pruned or node unreachable)")
        return clip

    @app.get("/api/clips/{detection_id}.wav")
    def clip_wav(detection_id: str, sess: SessionDep, node: str | None = None) -> Response:
        return Response(wav_bytes(_clip(detection_id, node)), media_type="audio/wav",
                        headers={"cache-control": "private, max-age=3600"})

    @app.get("/api/clips/{detection_id}/spectrogram.png")
    def clip_spectrogram(detection_id: str, sess: SessionDep, node: str | None = None) -> Response:
        clip = _clip(detection_id, node)
        return Response(spectrogram_png(clip), media_type="image/png",
                        headers={"cache-control": "private, max-age=3600",
                                 "x-clip-duration-s": f"{clip.duration_s:.4f}",
                                 "x-max-hz": f"{min(12000.0, clip.sample_rate_hz / 2):.0f}"})

    @app.get("/api/nodes")
    def nodes(sess: SessionDep) -> dict[str, Any]:
        ctx.nodes.poll()
        return {"nodes": ctx.nodes.snapshot(), "server_time_ns": ctx.clock()}

    @app.get("/api/hub")
    def hub(sess: SessionDep) -> dict[str, Any]:
        if ctx.hub is None:
            raise HTTPException(404, "no hub runs in this process")
        return ctx.hub()

    @app.get("/api/events")
    async def events(request: Request, sess: SessionDep) -> StreamingResponse:
        token = request.cookies.get(SESSION_COOKIE)
        q = ctx.bus.subscribe()

        async def stream():
            try:
                yield "retry: 3000\nevent: hello\ndata: {}\n\n"
                while True:
                    try:
                        item = await asyncio.wait_for(q.get(), timeout=15.0)
                    except TimeoutError:
                        if ctx.sessions.get(token) is None:  # logged out or expired: end the stream
                            return
                        yield ": keepalive\n\n"
                        continue
                    if item is CLOSE:
                        return
                    yield item
            finally:
                ctx.bus.unsubscribe(q)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    # -- basemap --------------------------------------------------------------------------------
    @app.get("/tiles/{z}/{x}/{y}")
    def tile(z: int, x: int, y: str, sess: SessionDep) -> Response:
        if pmtiles_reader is None:
            raise HTTPException(404, "no PMTiles archive configured")
        y_num = int(y.split(".")[0]) if y.split(".")[0].isdigit() else -1
        if not (0 <= z <= 30 and 0 <= x < 2**z and 0 <= y_num < 2**z):
            raise HTTPException(404, "tile out of range")
        reader, meta = pmtiles_reader
        data = reader.get(z, x, y_num)
        if data is None:
            return Response(status_code=204)
        headers = {"cache-control": "private, max-age=86400"}
        if meta.get("gzip"):
            headers["content-encoding"] = "gzip"
        return Response(bytes(data), media_type=meta["media_type"], headers=headers)

    @app.get("/overlay")
    def overlay(sess: SessionDep) -> Response:
        if not s.overlay_image or not Path(s.overlay_image).is_file():
            raise HTTPException(404, "no overlay image configured")
        return FileResponse(s.overlay_image, headers={"cache-control": "private, max-age=3600"})

    app.add_middleware(_SecurityHeaders, csp=_csp(s))
    return app


def _open_pmtiles(path: str) -> tuple[Any, dict[str, Any]]:
    """(reader, {media_type, gzip, max_zoom}) of a raster PMTiles archive. Raises ValueError."""
    from pmtiles.reader import MmapSource, Reader
    from pmtiles.tile import Compression, TileType

    try:
        f = open(path, "rb")  # noqa: SIM115 (kept open for the server's life, memory-mapped)
        reader = Reader(MmapSource(f))
        header = reader.header()
    except (OSError, ValueError) as exc:
        raise ValueError(f"pmtiles {path}: cannot read ({exc})") from None
    kinds = {TileType.PNG: "image/png", TileType.JPEG: "image/jpeg", TileType.WEBP: "image/webp"}
    if header["tile_type"] not in kinds:
        raise ValueError(f"pmtiles {path}: tile type {header['tile_type']!r} is not raster (PNG, JPEG or WebP)")
    return reader, {"media_type": kinds[header["tile_type"]], "max_zoom": header.get("max_zoom", 19),
                    "gzip": header.get("tile_compression") == Compression.GZIP}
