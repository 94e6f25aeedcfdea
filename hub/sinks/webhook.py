"""Webhook delivery: one signed HTTP POST per queued message.

Headers sent with every attempt of one message:

- ``Content-Type``: ``application/json``, ``application/cap+xml`` or ``application/geo+json``;
- ``Idempotency-Key``: stable for the message across retries and hub restarts
  (``<incident_id>.r<revision>``); a receiver that saw it already should answer 2xx
  and do nothing;
- ``X-Shotline-Signature``: ``sha256=<hex HMAC-SHA256 of the exact body bytes with the shared secret>``
  (absent when the sink has no secret);
- ``X-Shotline-Sink``, ``X-Shotline-Attempt`` (1, 2, ...) and ``User-Agent``.

Outcome: 2xx delivered; 408, 425, 429 and 5xx (and network errors, timeouts)
are retried; other statuses, including redirects (not followed: a POST must
not silently become a GET), fail for good.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from shotline.core.version import package_version

SIGNATURE_HEADER = "X-Shotline-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504}) | frozenset(range(505, 600))


def sign(secret: bytes, body: bytes) -> str:
    """The signature header value: ``sha256=`` and the hex HMAC-SHA256 of ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str) -> bool:
    """Constant-time check of a signature header (for receivers and tests)."""
    return hmac.compare_digest(sign(secret, body), header)


def load_secret(name: str, secret_env: str | None, secret_file: str | None) -> bytes | None:
    """The sink's shared secret from its environment variable or file; None when neither is set."""
    if secret_env is not None:
        val = os.environ.get(secret_env)
        if not val:
            raise ValueError(f"webhook {name!r}: environment variable {secret_env} (secret_env) is not set")
        return val.encode()
    if secret_file is not None:
        try:
            val = Path(secret_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"webhook {name!r}: cannot read secret_file {secret_file} ({exc.strerror})") from None
        if not val:
            raise ValueError(f"webhook {name!r}: secret_file {secret_file} is empty")
        return val.encode()
    return None


@dataclass(frozen=True)
class Outcome:
    """Result of one attempt: delivered, or an error that may be retried (after ``retry_after_s`` if given)."""

    ok: bool
    retry: bool = False
    error: str = ""
    retry_after_s: float | None = None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def post(
    url: str,
    body: bytes,
    *,
    content_type: str,
    idempotency_key: str,
    secret: bytes | None,
    sink: str,
    attempt: int,
    timeout_s: float,
) -> Outcome:
    """POST ``body`` once; never raises for HTTP or network failures."""
    headers = {
        "Content-Type": content_type,
        IDEMPOTENCY_HEADER: idempotency_key,
        "X-Shotline-Sink": sink,
        "X-Shotline-Attempt": str(attempt),
        "User-Agent": f"shotline-hub/{package_version()}",
    }
    if secret is not None:
        headers[SIGNATURE_HEADER] = sign(secret, body)
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _opener.open(req, timeout=timeout_s) as resp:
            resp.read(65536)
            return Outcome(ok=True)
    except urllib.error.HTTPError as exc:
        code = exc.code
        after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
        exc.close()
        if code in RETRY_STATUSES:
            return Outcome(ok=False, retry=True, error=f"HTTP {code}", retry_after_s=after)
        return Outcome(ok=False, retry=False, error=f"HTTP {code} (not retried)")
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        return Outcome(ok=False, retry=True, error=f"{type(exc).__name__}: {reason}")
    except ValueError as exc:  # a URL that http.client refuses: retrying cannot help
        return Outcome(ok=False, retry=False, error=f"{type(exc).__name__}: {exc}")


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff
