"""Settings of the operator review page (``[web]`` in the hub TOML), validated with msgspec.

Paths may be relative: :func:`resolve_paths` makes them relative to the
config file's folder. Reference: docs/operator-guide.md.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import msgspec

_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class WebSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The review page: where it listens, who may log in, the basemap and where clips come from."""

    enabled: bool = True
    """Serve the review page with the hub (``shotline-hub run``)."""
    host: str = "127.0.0.1"
    """Bind address. Keep the loopback default behind a TLS reverse proxy; ``0.0.0.0`` exposes it."""
    port: int = 8740
    """TCP port; 0 picks a free one (the chosen address is logged and printed)."""
    users_path: str = "users.json"
    """Operator accounts file written by ``shotline-hub users add`` (argon2id hashes, mode 0600)."""
    session_ttl_s: float = 12 * 3600.0
    """How long a login lasts without activity, seconds."""
    secure_cookies: bool = False
    """Mark the session cookie ``Secure`` (set when served over HTTPS through a proxy)."""
    tile_url: str | None = None
    """Optional XYZ raster tile URL template (``{z}/{x}/{y}``), e.g. a local tile server. None: no tiles,
    a plain background with a metric grid (works offline)."""
    tile_attribution: str = ""
    """Attribution text shown for ``tile_url`` or ``pmtiles`` tiles (required by most tile licences)."""
    tile_max_zoom: int = 19
    """Highest zoom level the tiles exist for."""
    pmtiles: str | None = None
    """Optional local PMTiles archive of raster tiles (PNG/JPEG/WebP) served by the hub at ``/tiles``."""
    overlay_image: str | None = None
    """Optional local image (PNG/JPEG, e.g. an orthophoto or a site plan) laid over ``overlay_bounds``."""
    overlay_bounds: list[float] | None = None
    """``[south_lat, west_lon, north_lat, east_lon]`` in degrees WGS84 of ``overlay_image``."""
    clip_dir: str | None = None
    """Folder of clip files named ``<detection_id>.flac`` (or ``.wav``), e.g. from replays."""
    node_clip_urls: dict[str, str] = msgspec.field(default_factory=dict)
    """Base URL of each node's clip server by node id, e.g. ``{"N01" = "http://10.8.0.11:8780"}``."""
    clip_token_file: str | None = None
    """File holding the bearer token of the nodes' clip servers (whitespace stripped)."""
    clip_timeout_s: float = 5.0
    """Timeout of one clip fetch from a node, seconds."""
    stale_after_s: float = 120.0
    """A node not heard from for this long is shown "stale", seconds."""
    offline_after_s: float = 600.0
    """... and "offline" after this long, seconds (or at once when its last will says so)."""
    clipping_per_min: float = 1.0
    """A node reporting at least this many clipped blocks per minute is shown "clipping"."""
    page_size: int = 100
    """Incidents per page of the list."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            if not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", self.host):
                raise ValueError(f"host must be an IP address or host name, got {self.host!r}") from None
        for name in ("session_ttl_s", "clip_timeout_s", "stale_after_s", "offline_after_s", "clipping_per_min"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.offline_after_s < self.stale_after_s:
            raise ValueError("offline_after_s must be >= stale_after_s")
        if not 10 <= self.page_size <= 1000:
            raise ValueError(f"page_size must be in [10, 1000], got {self.page_size}")
        if not 1 <= self.tile_max_zoom <= 24:
            raise ValueError(f"tile_max_zoom must be in [1, 24], got {self.tile_max_zoom}")
        if self.tile_url is not None:
            if not self.tile_url.startswith(("http://", "https://", "/")):
                raise ValueError(f"tile_url must start with http://, https:// or /, got {self.tile_url!r}")
            if not all(k in self.tile_url for k in ("{z}", "{x}", "{y}")):
                raise ValueError("tile_url must contain {z}, {x} and {y}")
        if self.tile_url is not None and self.pmtiles is not None:
            raise ValueError("give tile_url or pmtiles, not both")
        if (self.overlay_image is None) != (self.overlay_bounds is None):
            raise ValueError("overlay_image and overlay_bounds go together")
        if self.overlay_bounds is not None:
            b = self.overlay_bounds
            if len(b) != 4 or not (-90 <= b[0] < b[2] <= 90 and -180 <= b[1] < b[3] <= 180):
                raise ValueError("overlay_bounds must be [south_lat, west_lon, north_lat, east_lon] with south < north, "
                                 "west < east")
        for node_id, url in self.node_clip_urls.items():
            if not _NODE_ID.fullmatch(node_id):
                raise ValueError(f"node_clip_urls: {node_id!r} is not a node id")
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"node_clip_urls.{node_id} must start with http:// or https://, got {url!r}")


def resolve_paths(ws: WebSettings, base_dir: str | Path | None) -> WebSettings:
    """A copy of ``ws`` whose relative file paths are taken relative to ``base_dir`` (the config's folder)."""
    if base_dir is None:
        return ws
    base = Path(base_dir)

    def fix(p: str | None) -> str | None:
        return None if p is None else str(base / p) if not Path(p).is_absolute() else p

    return msgspec.structs.replace(
        ws, users_path=fix(ws.users_path) or ws.users_path, pmtiles=fix(ws.pmtiles),
        overlay_image=fix(ws.overlay_image), clip_dir=fix(ws.clip_dir), clip_token_file=fix(ws.clip_token_file),
    )
