"""Operator accounts, login sessions and CSRF tokens for the review page.

Accounts live in a small JSON file (``[web] users_path``) holding, per user,
a role and an argon2id hash (argon2-cffi, its recommended parameters); the
file is written atomically with mode 0600. Roles: ``operator`` (reviews)
and ``viewer`` (read-only).

Sessions are random 256-bit tokens kept in memory (a hub restart logs
everyone out, and logging out revokes at once). The cookie is HttpOnly and
SameSite=Strict; every state-changing request must also carry the session's
CSRF token (``X-CSRF-Token`` header or ``csrf_token`` form field), compared
in constant time. The login form itself is protected by a double-submit
token (cookie + hidden field) so that a third-party page cannot log a
browser into an attacker's account.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec

log = logging.getLogger(__name__)

Role = Literal["operator", "viewer"]
ROLES: tuple[str, ...] = ("operator", "viewer")
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD = 8


class AuthError(ValueError):
    """A bad user name, role or password, or an unusable users file."""


class UserRecord(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One account as stored."""

    role: Role
    password_hash: str
    created_ns: int
    disabled: bool = False


class UsersFile(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, tag_field="schema",
                tag="shotline.web_users/1"):
    users: dict[str, UserRecord] = msgspec.field(default_factory=dict)


def _hasher():
    from argon2 import PasswordHasher

    return PasswordHasher()  # argon2id, RFC 9106 low-memory profile


class UserDB:
    """The accounts file: add, remove, verify. Re-read when it changes on disk (the CLI may edit it)."""

    def __init__(self, path: str | Path, hasher: Any | None = None) -> None:
        """``hasher``: an ``argon2.PasswordHasher`` (default: argon2-cffi's recommended parameters)."""
        self.path = Path(path)
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._data = UsersFile()
        self._ph = hasher or _hasher()
        # Verifying an unknown name costs as much as a known one (no user enumeration by timing).
        self._dummy = self._ph.hash(secrets.token_hex(16))

    def _load(self) -> UsersFile:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            self._data, self._mtime = UsersFile(), None
            return self._data
        if mtime != self._mtime:
            try:
                self._data = msgspec.json.decode(self.path.read_bytes(), type=UsersFile)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                raise AuthError(f"{self.path}: not a Shotline users file ({exc})") from None
            self._mtime = mtime
        return self._data

    def _save(self, data: UsersFile) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(msgspec.json.format(msgspec.json.encode(data), indent=2) + b"\n")
        os.replace(tmp, self.path)
        self._mtime = None

    def users(self) -> dict[str, UserRecord]:
        """All accounts by name."""
        with self._lock:
            return dict(self._load().users)

    def add(self, name: str, password: str, role: str, *, replace: bool = False) -> None:
        """Create (or with ``replace``, overwrite) an account. Raises :class:`AuthError` on bad input."""
        if not USERNAME.fullmatch(name):
            raise AuthError(f"user name {name!r}: letters, digits and _.@- only, at most 64, not starting with "
                            "a symbol")
        if role not in ROLES:
            raise AuthError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        if len(password) < MIN_PASSWORD:
            raise AuthError(f"password must have at least {MIN_PASSWORD} characters")
        with self._lock:
            data = self._load()
            if name in data.users and not replace:
                raise AuthError(f"user {name!r} exists (use 'passwd' to change the password)")
            users = dict(data.users)
            users[name] = UserRecord(role=role, password_hash=self._ph.hash(password),  # type: ignore[arg-type]
                                     created_ns=time.time_ns())
            self._save(UsersFile(users=users))

    def remove(self, name: str) -> bool:
        """Delete an account; False when there was none."""
        with self._lock:
            data = self._load()
            if name not in data.users:
                return False
            users = {k: v for k, v in data.users.items() if k != name}
            self._save(UsersFile(users=users))
            return True

    def verify(self, name: str, password: str) -> str | None:
        """The user's role when name and password match an enabled account, else None."""
        from argon2.exceptions import InvalidHashError, VerificationError

        with self._lock:
            rec = self._load().users.get(name)
        try:
            self._ph.verify(rec.password_hash if rec else self._dummy, password)
        except (VerificationError, InvalidHashError):
            return None
        if rec is None or rec.disabled:
            return None
        return rec.role


@dataclass
class Session:
    """A logged-in browser."""

    user: str
    role: str
    csrf: str
    expires_s: float


class Sessions:
    """Login sessions by opaque token, expiring after ``ttl_s`` of inactivity."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self._s: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, user: str, role: str) -> tuple[str, Session]:
        token = secrets.token_urlsafe(32)
        s = Session(user, role, secrets.token_urlsafe(32), self.clock() + self.ttl_s)
        with self._lock:
            now = self.clock()
            for k in [k for k, v in self._s.items() if v.expires_s < now]:
                del self._s[k]
            self._s[token] = s
        return token, s

    def get(self, token: str | None) -> Session | None:
        """The live session of ``token`` (its expiry pushed back), or None."""
        if not token:
            return None
        with self._lock:
            s = self._s.get(token)
            if s is None:
                return None
            now = self.clock()
            if s.expires_s < now:
                del self._s[token]
                return None
            s.expires_s = now + self.ttl_s
            return s

    def drop(self, token: str | None) -> None:
        with self._lock:
            self._s.pop(token or "", None)

    def drop_user(self, user: str) -> None:
        with self._lock:
            for k in [k for k, v in self._s.items() if v.user == user]:
                del self._s[k]


def same_token(a: str | None, b: str | None) -> bool:
    """Constant-time comparison of two tokens (False when either is missing)."""
    return bool(a) and bool(b) and hmac.compare_digest(str(a).encode(), str(b).encode())
